#include "gateway/fanout.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/errgroup.h"
#include "core/loop.h"
#include "gateway/auth.h"
#include "gateway/degraded.h"
#include "gateway/merge.h"
#include "gateway/metrics.h"
#include "gateway/otel.h"
#include "gateway/router.h"
#include "gateway/upstream.h"
#include "gateway/urlbuild.h"

/* Headers one backend call sends beyond the forwarded ones. */
#define OWN_HEADERS 3
/* ... and after the forwarded ones: tracestate, claim headers (auth.c) */
#define EDGE_HEADERS (1 + AUTH_MAX_CLAIM_HDRS)

const char fanout_key_trace[] = "trace";
const char fanout_key_request_id[] = "request_id";

/* errgroup error for "backend i failed": i + 1, so 0 stays success. */
#define CALL_FAILED(i) ((int)(i) + 1)

const char *outcome_name(enum outcome o)
{
    static const char *const names[] = {"ok",       "error",  "timeout", "cancelled", "open",
                                        "degraded", "static", "omitted"};
    return names[o];
}

static int json_escape(buf_t *out, const char *s)
{
    int rc = buf_putc(out, '"');
    for (; *s && !rc; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            rc = buf_putc(out, '\\') || buf_putc(out, (char)ch);
        else if (ch < 0x20)
            rc = buf_printf(out, "\\u%04x", ch);
        else
            rc = buf_putc(out, (char)ch);
    }
    return rc ? rc : buf_putc(out, '"');
}

void fanout_error_body(buf_t *out, const char *msg, const char *backend, const char *request_id)
{
    buf_clear(out);
    int rc = buf_puts(out, "{\"error\":");
    rc = rc ? rc : json_escape(out, msg);
    rc = rc ? rc : buf_puts(out, ",\"backend\":");
    rc = rc ? rc : (backend ? json_escape(out, backend) : buf_puts(out, "null"));
    rc = rc ? rc : buf_puts(out, ",\"request_id\":");
    rc = rc ? rc : json_escape(out, request_id);
    rc = rc ? rc : buf_putc(out, '}');
    (void)rc; /* out of memory leaves a short body; the status still tells */
}

int fanout_prepare(struct request *r, const char *timeout_hdr, const char *traceparent_hdr,
                   const char *request_id_hdr)
{
    if (request_id_hdr && trace_request_id_valid(request_id_hdr, strlen(request_id_hdr)))
        snprintf(r->request_id, sizeof r->request_id, "%s", request_id_hdr);
    else
        trace_request_id_new(r->request_id);

    struct trace_parent client;
    if (traceparent_hdr && trace_parse(traceparent_hdr, strlen(traceparent_hdr), &client) == 0) {
        trace_child(&client, &r->trace);
        memcpy(r->parent_span, client.span_id, sizeof r->parent_span);
        r->has_parent = true;
        otel_tracestate(&r->tracestate, r->header ? r->header(r->conn, "tracestate") : NULL);
    } else {
        trace_start(&r->trace, otel_sample_flags(&r->cfg->tracing));
    }
    if (!r->ep) return 0;

    const struct defaults_conf *d = &r->cfg->defaults;
    uint64_t ms = r->ep->timeout_ms;
    if (timeout_hdr) {
        uint32_t client_ms;
        if (trace_parse_timeout_ms(timeout_hdr, &client_ms) != 0) {
            fanout_error_body(&r->out, "invalid X-Request-Timeout-Ms", NULL, r->request_id);
            return 400;
        }
        if (client_ms < ms) ms = client_ms;
    }
    if (ms > d->max_timeout_ms) ms = d->max_timeout_ms;
    r->deadline_ns = r->start_ns + ms * 1000000u;

    ctx_t *dl = ctx_with_deadline(ctx_background(), r->deadline_ns);
    ctx_t *tr = dl ? ctx_with_value(dl, fanout_key_trace, &r->trace) : NULL;
    r->ctx = tr ? ctx_with_value(tr, fanout_key_request_id, r->request_id) : NULL;
    if (tr) ctx_release(tr); /* the child holds its parents */
    if (dl) ctx_release(dl);
    if (!r->ctx) {
        fanout_error_body(&r->out, "out of memory", NULL, r->request_id);
        return 503;
    }
    return 0;
}

/* ---- what the client sent, checked before any call ---- */

static int refuse(struct request *r, int status, const char *msg)
{
    fanout_error_body(&r->out, msg, NULL, r->request_id);
    return status;
}

/* Route params: each must decode (once, when it is put into a backend URL)
 * and be at most URLBUILD_PARAM_MAX bytes as sent. */
static int check_params(struct request *r)
{
    const struct route_match *m = &r->match;
    for (size_t i = 0; i < m->n_params; i++) {
        const struct route_param *p = &m->params[i];
        if (p->len > URLBUILD_PARAM_MAX) return refuse(r, 414, "path parameter too long");
        for (size_t k = 0; k < p->len;)
            if (router_pct_next(p->p, p->len, &k, false) <= 0)
                return refuse(r, 400, "malformed percent-encoding in the path");
    }
    return 0;
}

static int visit_header(void *arg, const char *name, const char *value, size_t len, bool cut)
{
    const struct request *r = (const void *)((char *)arg - offsetof(struct request, fwd));
    if (auth_hides_header(r, name)) return 0; /* claim headers come from the token only */
    return fwd_add(arg, name, value, len, cut);
}

static int check_headers(struct request *r)
{
    fwd_init(&r->fwd, r->ep->forward_headers, r->ep->n_forward_headers);
    int st = 0;
    if (r->ep->n_forward_headers && r->header_each)
        st = r->header_each(r, visit_header, &r->fwd);
    if (!st) st = fwd_finish(&r->fwd);
    return st ? refuse(r, st, r->fwd.why) : 0;
}

/* Every call's path, built now so that a bad query value or a path too
 * long is the client's 400/414 before anything is sent. A template that
 * cannot build (a config bug) fails only its own call, as before. */
static int build_paths(struct request *r)
{
    for (size_t i = 0; i < r->n_calls; i++) {
        struct backend_call *c = &r->calls[i];
        buf_init(&c->path, NULL); /* a short path: no need for a pool block */
        int rc = urlbuild_path(&c->path, r->ep, c->b, &r->match, r->query, r->query_len);
        if (rc == -EILSEQ)
            return refuse(r, 400, "malformed percent-encoding in a forwarded query parameter");
        if (rc == -E2BIG) return refuse(r, 414, "path parameter too long");
        if (rc == -ENAMETOOLONG) {
            char msg[160];
            snprintf(msg, sizeof msg, "backend %s: URL path too long (limit %d bytes)",
                     c->b->name, URLBUILD_PATH_MAX - 1);
            return refuse(r, 414, msg);
        }
        c->path_rc = rc;
    }
    return 0;
}

int fanout_check(struct request *r)
{
    if (!r->ep) return 0;
    int st = check_params(r);
    if (!st) st = check_headers(r);
    if (!st) st = build_paths(r);
    return st;
}

/* The headers of one backend call, as "Name: value" lines in hdrs: its
 * own, then the forwarded ones (checked and joined once per request). */
static size_t call_headers(struct backend_call *c, ctx_t *ctx, char own[OWN_HEADERS][192],
                           const char **hdrs)
{
    struct request *r = c->req;
    size_t n = 0;
    struct trace_parent span;
    trace_child(&r->trace, &span);
    memcpy(c->span_id, span.span_id, sizeof c->span_id);
    char tp[TRACEPARENT_LEN + 1];
    trace_format(&span, tp);
    snprintf(own[0], sizeof own[0], "traceparent: %s", tp);
    uint64_t left = ctx_remaining(ctx);
    uint64_t left_ms = left == UINT64_MAX ? 0 : (left + 999999) / 1000000;
    snprintf(own[1], sizeof own[1], "X-Request-Timeout-Ms: %" PRIu64, left_ms ? left_ms : 1);
    snprintf(own[2], sizeof own[2], "X-Request-Id: %s", r->request_id);
    for (; n < OWN_HEADERS; n++)
        hdrs[n] = own[n];
    for (size_t i = 0; i < r->fwd.n_lines; i++)
        hdrs[n++] = fwd_line(&r->fwd, i);
    if (r->tracestate.len) hdrs[n++] = r->tracestate.data;
    return n + auth_call_headers(r, hdrs + n, AUTH_MAX_CLAIM_HDRS);
}

/* The degraded-store key of a call: backend name, resolved URL and the
 * forwarded header values, NUL-separated, so an answer is never served
 * across different params or credentials. */
static void degraded_key(struct backend_call *c, const char *origin, const buf_t *path)
{
    struct request *r = c->req;
    buf_t *k = &c->key;
    int rc = buf_append(k, c->b->name, strlen(c->b->name) + 1);
    rc = rc ? rc : buf_puts(k, origin);
    rc = rc ? rc : buf_append(k, path->data, path->len + 1);
    for (size_t i = 0; i < r->ep->n_forward_headers && i < FWD_MAX && !rc; i++) {
        const char *v = r->fwd.value[i];
        rc = v ? buf_append(k, v, r->fwd.value_len[i]) : 0;
        rc = rc ? rc : buf_putc(k, '\0');
    }
    rc = rc ? rc : auth_key_append(r, k); /* the claims: never served across users */
    if (rc) buf_clear(k); /* no key: neither stored nor served */
}

/* The one place every call ends: classifies what happened and applies the
 * backend's fallback. Returns 0, or CALL_FAILED(i) to fail the group. */
static int call_finish(struct backend_call *c, const struct upstream_resp *resp)
{
    const struct backend_conf *b = c->b;
    switch (resp->result) {
    case UP_OK:
        if (resp->status < 200 || resp->status > 299) {
            c->outcome = OUT_ERROR;
            c->why = "bad status";
        } else if (resp->status == 204 || c->body.len == 0) {
            c->outcome = OUT_OK;
            c->part = NULL; /* merges as null */
        } else if (merge_check(b, c->body.data, c->body.len, &c->why) != 0) {
            c->outcome = OUT_ERROR;
        } else {
            c->outcome = OUT_OK;
            c->part = c->body.data;
            c->part_len = c->body.len;
        }
        break;
    case UP_TIMEOUT:
        c->outcome = OUT_TIMEOUT;
        c->why = "timeout";
        break;
    case UP_CANCELED:
        c->outcome = OUT_CANCELLED;
        c->why = "cancelled";
        break;
    case UP_TOO_BIG:
    case UP_ERROR:
        c->outcome = c->att.open ? OUT_OPEN : OUT_ERROR;
        c->why = resp->error;
        break;
    }
    struct degraded *store = c->req->degraded;
    bool keyed = b->fallback == FALLBACK_DEGRADED && store && c->key.len;
    if (c->outcome == OUT_OK) {
        /* One store, two ages: fresh for the cache, stale for the fallback. */
        uint32_t fresh = store && c->key.len ? cache_fresh_ms(&b->cache, resp) : 0;
        if (keyed || fresh)
            degraded_put_fresh(store, c->key.data, c->key.len, c->part ? c->part : "",
                               c->part ? c->part_len : 0, fresh);
        return 0;
    }
    if (keyed) {
        c->stale = degraded_get(store, c->key.data, c->key.len, c->req->cfg->degraded.max_stale_s);
        if (c->stale) {
            c->outcome = OUT_DEGRADED;
            c->part = c->stale->len ? c->stale->body : NULL;
            c->part_len = c->stale->len;
            return 0;
        }
    }
    if (b->fallback == FALLBACK_STATIC) {
        c->outcome = OUT_STATIC;
        c->part = b->static_json;
        c->part_len = b->static_len;
        return 0;
    }
    if (!b->required) {
        c->outcome = OUT_OMITTED;
        c->omit = true;
        return 0;
    }
    return CALL_FAILED(c - c->req->calls);
}

/* A fresh answer from the store (pinned in c->stale): stored only after
 * call_finish found it good, so it is served as it is. */
static int cache_hit(struct backend_call *c)
{
    c->outcome = OUT_OK;
    c->status = 200;
    c->part = c->stale->len ? c->stale->body : NULL;
    c->part_len = c->stale->len;
    return 0;
}

static int call_backend(ctx_t *gctx, void *arg)
{
    struct backend_call *c = arg;
    struct request *r = c->req;
    const struct backend_conf *b = c->b;
    uint64_t t0 = loop_now(loop_current());
    c->start_ns = t0;
    uint64_t deadline = t0 + (uint64_t)b->timeout_ms * 1000000u;
    if (deadline > r->deadline_ns) deadline = r->deadline_ns;
    struct upstream_resp resp = {.body = &c->body};

    ctx_t *ctx = ctx_with_deadline(gctx, deadline);
    char origin[256];
    if (!ctx) {
        resp.result = UP_ERROR;
        resp.error = "out of memory";
    } else if (urlbuild_origin(b, origin, sizeof origin) < 0 || c->path_rc) {
        resp.result = UP_ERROR;
        resp.error = c->path_rc == -ENOMEM ? "out of memory" : "cannot build URL";
    } else {
        if (b->fallback == FALLBACK_DEGRADED || b->cache.enabled)
            degraded_key(c, origin, &c->path);
        char own[OWN_HEADERS][192];
        const char *hdrs[OWN_HEADERS + FWD_MAX + EDGE_HEADERS];
        struct upstream_req req = {
            .method = b->method,
            .origin = origin,
            .path = c->path.data,
            .headers = hdrs,
            .n_headers = call_headers(c, ctx, own, hdrs),
            .body = b->forward_body ? r->body : NULL,
            .body_len = b->forward_body ? r->body_len : 0,
            .max_bytes = b->max_response_bytes,
            .native = b->client == CLIENT_NATIVE,
            .conf = &r->cfg->upstream,
        };
        if (req.body == NULL && b->forward_body) req.body = "";
        /* a cached backend without resilience keys goes through the cache;
         * every other call through the attempt loop (a cache in front of
         * retries and hedges is not built yet) */
        if (b->cache.enabled && !attempt_wanted(r->cfg, b))
            c->cache = cache_call(r->cache, &b->cache, c->key.data, c->key.len, ctx, &req, &resp,
                                  &c->stale);
        else
            attempt_call(r->up, gctx, r->deadline_ns, r->cfg, b, &req, &resp, &c->att);
    }
    c->status = resp.status;
    int rc = c->cache == CACHE_HIT ? cache_hit(c) : call_finish(c, &resp);
    if (c->cache != CACHE_NONE)
        metrics_cache(r->metrics, b->name, cache_result_name(c->cache));
    c->dur_ns = loop_now(loop_current()) - t0;
    metrics_backend(r->metrics, r->ep->name, b->name, outcome_name(c->outcome),
                    (double)c->dur_ns / 1e9);
    if (ctx) ctx_release(ctx);
    return rc;
}

static void write_timing(struct request *r)
{
    for (size_t i = 0; i < r->n_calls; i++) {
        const struct backend_call *c = &r->calls[i];
        int rc = buf_printf(&r->timing, "%s%s;dur=%.1f", i ? ", " : "", c->b->name,
                            (double)c->dur_ns / 1e6);
        const char *tag = c->att.open      ? "open"
                          : c->att.hedged  ? "hedged"
                          : c->att.retried ? "retried"
                                           : NULL;
        if (!rc && c->outcome != OUT_OK && c->outcome != OUT_OPEN && tag)
            rc = buf_printf(&r->timing, ";desc=\"%s %s\"", outcome_name(c->outcome), tag);
        else if (!rc && c->outcome != OUT_OK)
            rc = buf_printf(&r->timing, ";desc=\"%s\"", outcome_name(c->outcome));
        else if (!rc && (c->cache == CACHE_HIT || c->cache == CACHE_COALESCED))
            rc = buf_printf(&r->timing, ";desc=\"%s\"", cache_result_name(c->cache));
        else if (!rc && tag)
            rc = buf_printf(&r->timing, ";desc=\"%s\"", tag);
        if (rc) return;
        if (c->outcome >= OUT_DEGRADED)
            if (buf_printf(&r->degraded_names, "%s%s", r->degraded_names.len ? "," : "",
                           c->b->name))
                return;
    }
}

static void answer(struct request *r, int err)
{
    write_timing(r);
    if (err > 0) {
        const struct backend_call *c = &r->calls[err - 1];
        r->status = c->outcome == OUT_TIMEOUT ? 504 : 502;
        char msg[160];
        snprintf(msg, sizeof msg, "backend %s failed: %s", c->b->name, c->why ? c->why : "error");
        if (c->outcome == OUT_ERROR && c->status && (c->status < 200 || c->status > 299))
            snprintf(msg, sizeof msg, "backend %s failed: status %ld", c->b->name, c->status);
        fanout_error_body(&r->out, msg, c->b->name, r->request_id);
        return;
    }
    if (err < 0) {
        r->status = 503;
        fanout_error_body(&r->out, "overloaded", NULL, r->request_id);
        return;
    }
    struct merge_part parts[r->n_calls];
    for (size_t i = 0; i < r->n_calls; i++) {
        const struct backend_call *c = &r->calls[i];
        parts[i] = (struct merge_part){
            .b = c->b,
            .body = c->part,
            .len = c->part_len,
            .kind = c->omit   ? MERGE_PART_OMIT
                    : c->part ? MERGE_PART_BODY
                              : MERGE_PART_NULL,
        };
    }
    if (merge_build(&r->out, parts, r->n_calls) != 0) {
        r->status = 502;
        fanout_error_body(&r->out, "cannot merge backend responses", NULL, r->request_id);
        return;
    }
    r->status = 200;
}

void fanout_run(void *arg)
{
    struct request *r = arg;
    errgroup_t *g = eg_new(r->ctx);
    int err = -ENOMEM;
    if (g) {
        eg_set_limit(g, r->ep->concurrency);
        for (size_t i = 0; i < r->n_calls; i++)
            if (eg_go(g, call_backend, &r->calls[i]) != 0) break;
        err = eg_wait(g);
        eg_free(g);
    }
    answer(r, err);
    server_request_done(r);
}

void fanout_cleanup(struct request *r)
{
    for (size_t i = 0; i < r->n_calls; i++) {
        struct backend_call *c = &r->calls[i];
        buf_free(&c->body);
        buf_free(&c->key);
        buf_free(&c->path);
        if (c->stale) degraded_release(r->degraded, c->stale);
        c->stale = NULL;
    }
    fwd_free(&r->fwd);
    buf_free(&r->out);
    buf_free(&r->timing);
    buf_free(&r->degraded_names);
    buf_free(&r->body_in);
    buf_free(&r->query_in);
    buf_free(&r->auth_hdrs);
    buf_free(&r->tracestate);
    if (r->ctx) {
        ctx_release(r->ctx);
        r->ctx = NULL;
    }
}
