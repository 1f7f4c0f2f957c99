/*
 * fanout: one request's backend calls and its answer (fanout.h).
 *
 * Owns the checks of what the client sent before any call, the request's
 * errgroup (fanout_run), the failure table of DESIGN.md (call_finish: a
 * failed call gets its backend's fallback, degraded, static or omitted, or
 * fails the group, which cancels its siblings at once), the merge into the
 * response and the error body. The call graph's workers live in compose.c,
 * the request one call sends in call.c. Invariants: every call ends in
 * call_finish or cache_hit; the call that failed the group is r->failed and
 * is the one the answer names; r->done runs exactly once; never touches
 * libmicrohttpd.
 */
#include "gateway/fanout.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/errgroup.h"
#include "core/loop.h"
#include "gateway/auth.h"
#include "gateway/compose.h"
#include "gateway/degraded.h"
#include "gateway/expose.h"
#include "gateway/graph.h"
#include "gateway/jpath.h"
#include "gateway/json.h"
#include "gateway/merge.h"
#include "gateway/metrics.h"
#include "gateway/otel.h"
#include "gateway/router.h"
#include "gateway/shape.h"
#include "gateway/upstream.h"
#include "gateway/urlbuild.h"

const char fanout_key_trace[] = "trace";
const char fanout_key_request_id[] = "request_id";

/* errgroup error for "a required backend failed": the call is r->failed. */
#define ECALL_FAILED EREMOTEIO

static int json_escape(buf_t *out, const char *s)
{
    return json_buf_string(out, s, strlen(s));
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

/* The client's request is refused before any call: status (400, 414, or
 * 503 when out of memory) and the JSON error go into r; returns the
 * matching negative errno. */
static int refuse(struct request *r, int status, const char *msg)
{
    fanout_error_body(&r->out, msg, NULL, r->request_id);
    r->status = status;
    return status == 414 ? -ENAMETOOLONG : status == 503 ? -ENOMEM : -EINVAL;
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
        if (trace_parse_timeout_ms(timeout_hdr, &client_ms) != 0)
            return refuse(r, 400, "invalid X-Request-Timeout-Ms");
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
        r->status = 503;
        return -ENOMEM;
    }
    return 0;
}

/* ---- what the client sent, checked before any call ---- */

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
    int err = check_params(r);
    if (!err) err = check_headers(r);
    if (!err) err = build_paths(r);
    return err;
}

/* The body the merge gets from a good answer body[0..len): the raw bytes,
 * or the backend's shaping of them in c->shaped. Returns 0 with c->part
 * set, or -1 with c->why. */
static int accept_body(struct backend_call *c, const char *body, size_t len)
{
    const struct backend_conf *b = c->b;
    if (!b->shape || b->foreach_path) {
        if (merge_check(b, body, len, &c->why) != 0) return -1;
        c->part = len ? body : NULL;
        c->part_len = len;
        return 0;
    }
    if (len && json_check(body, len) == JSON_INVALID) {
        c->why = "invalid JSON";
        return -1;
    }
    buf_clear(&c->shaped);
    if (shape_apply(&c->shaped, b->shape, body, len, &c->why) != 0) return -1;
    if (!b->key && jpath_type(c->shaped.data, c->shaped.len) != JSON_OBJECT) {
        c->why = "not an object";
        return -1;
    }
    c->part = c->shaped.data;
    c->part_len = c->shaped.len;
    return 0;
}

/* Required call c has nothing to fall back on: it fails the group. The
 * first such call is the one the answer names; the errgroup keeps the
 * first error, and nothing yields between here and the task's return, so
 * both agree. */
static int fail_group(struct backend_call *c)
{
    if (!c->req->failed) c->req->failed = c;
    return -ECALL_FAILED;
}

/* The one place every call ends: classifies what happened and applies the
 * backend's fallback. Returns 0, or -ECALL_FAILED to fail the group. */
int call_finish(struct backend_call *c, const struct upstream_resp *resp)
{
    const struct backend_conf *b = c->b;
    switch (resp->result) {
    case UP_OK:
        if (resp->status < 200 || resp->status > 299) {
            c->outcome = OUT_ERROR;
            c->why = "bad status";
        } else if (resp->status == 204 || c->body.len == 0) {
            c->outcome = accept_body(c, NULL, 0) ? OUT_ERROR : OUT_OK; /* null */
        } else if (accept_body(c, c->body.data, c->body.len) != 0) {
            c->outcome = OUT_ERROR;
        } else {
            c->outcome = OUT_OK;
            c->feed = c->body.data;
            c->feed_len = c->body.len;
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
        /* One store, two ages: fresh for the cache, stale for the fallback.
         * The raw body: children read it, and shaping runs again when served. */
        uint32_t fresh = store && c->key.len ? cache_fresh_ms(&b->cache, resp) : 0;
        if (keyed || fresh)
            degraded_put_fresh(store, c->key.data, c->key.len, c->feed ? c->feed : "",
                               c->feed_len, fresh);
        return 0;
    }
    c->feed = NULL;
    c->feed_len = 0;
    if (keyed) {
        c->stale = degraded_get(store, c->key.data, c->key.len, c->req->cfg->degraded.max_stale_s);
        const char *keep = c->why;
        if (c->stale && accept_body(c, c->stale->body, c->stale->len) == 0) {
            c->outcome = OUT_DEGRADED;
            c->feed = c->stale->len ? c->stale->body : NULL;
            c->feed_len = c->stale->len;
            return 0;
        }
        c->why = keep;
    }
    if (b->fallback == FALLBACK_STATIC) {
        c->outcome = OUT_STATIC;
        c->part = c->feed = b->static_json;
        c->part_len = c->feed_len = b->static_len;
        return 0;
    }
    if (!b->required) {
        c->outcome = OUT_OMITTED;
        c->omit = true;
        return 0;
    }
    return fail_group(c);
}

/* A fresh answer from the store (pinned in c->stale): the raw body, stored
 * only after call_finish found it good; shaped again here and fed to the
 * children like a fresh one. */
int cache_hit(struct backend_call *c)
{
    c->outcome = OUT_OK;
    c->status = 200;
    if (accept_body(c, c->stale->body, c->stale->len) != 0) c->outcome = OUT_ERROR;
    c->feed = c->stale->len ? c->stale->body : NULL;
    c->feed_len = c->stale->len;
    return c->outcome == OUT_OK || !c->b->required ? 0 : fail_group(c);
}


/* Appends "NAME;dur=MS" with MS in milliseconds to one decimal (rounded). */
static int timing_dur(buf_t *t, const char *sep, const char *name, uint64_t dur_ns)
{
    uint64_t tenths = (dur_ns + 50000) / 100000;
    char num[FMT_U64_MAX + 2];
    size_t n = fmt_u64(num, tenths / 10);
    num[n++] = '.';
    num[n++] = (char)('0' + tenths % 10);
    int rc = buf_puts(t, sep);
    rc = rc ? rc : buf_puts(t, name);
    rc = rc ? rc : buf_append(t, ";dur=", 5);
    return rc ? rc : buf_append(t, num, n);
}

/* Appends ;desc="A B items=N" from the parts that are set (a, b may be
 * NULL; items < 0 leaves it out). */
static int timing_desc(buf_t *t, const char *a, const char *b, int64_t items)
{
    const char *part[2] = {a, b};
    const char *sep = "";
    int rc = buf_append(t, ";desc=\"", 7);
    for (int i = 0; i < 2 && !rc; i++) {
        if (!part[i]) continue;
        rc = buf_puts(t, sep);
        rc = rc ? rc : buf_puts(t, part[i]);
        sep = " ";
    }
    if (!rc && items >= 0) {
        rc = buf_puts(t, sep);
        rc = rc ? rc : buf_puts(t, "items=");
        rc = rc ? rc : buf_put_u64(t, (uint64_t)items);
    }
    return rc ? rc : buf_putc(t, '"');
}

/* One Server-Timing entry per backend, and the list of degraded ones. */
static void write_timing(struct request *r)
{
    for (size_t i = 0; i < r->n_calls; i++) {
        const struct backend_call *c = &r->calls[i];
        int rc = timing_dur(&r->timing, i ? ", " : "", c->b->name, c->dur_ns);
        const char *tag = c->att.open      ? "open"
                          : c->att.hedged  ? "hedged"
                          : c->att.retried ? "retried"
                                           : NULL;
        const char *out = c->outcome != OUT_OK ? outcome_name(c->outcome) : NULL;
        if (!rc && c->b->foreach_path)
            rc = timing_desc(&r->timing, out, NULL, c->n_items);
        else if (!rc && out && c->outcome != OUT_OPEN && tag)
            rc = timing_desc(&r->timing, out, tag, -1);
        else if (!rc && out)
            rc = timing_desc(&r->timing, out, NULL, -1);
        else if (!rc && (c->cache == CACHE_HIT || c->cache == CACHE_COALESCED))
            rc = timing_desc(&r->timing, cache_result_name(c->cache), NULL, -1);
        else if (!rc && tag)
            rc = timing_desc(&r->timing, tag, NULL, -1);
        if (rc) return;
        if (c->outcome >= OUT_DEGRADED)
            if (buf_puts(&r->degraded_names, r->degraded_names.len ? "," : "") ||
                buf_puts(&r->degraded_names, c->b->name))
                return;
    }
}

static void answer(struct request *r, int err)
{
    write_timing(r);
    if (err == -ECALL_FAILED && r->failed) {
        const struct backend_call *c = r->failed;
        r->status = c->outcome == OUT_TIMEOUT ? 504 : 502;
        char msg[200];
        snprintf(msg, sizeof msg, "backend %s failed: %s", c->b->name, c->why ? c->why : "error");
        if (c->outcome == OUT_ERROR && c->status && (c->status < 200 || c->status > 299))
            snprintf(msg, sizeof msg, "backend %s failed: status %ld", c->b->name, c->status);
        fanout_error_body(&r->out, msg, c->b->name, r->request_id);
        return;
    }
    if (err != 0) {
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
    struct merge_conflict cf = {0};
    int rc = merge_build_policy(&r->out, parts, r->n_calls, r->ep->on_conflict, &cf);
    if (rc == -EEXIST) {
        r->status = 502;
        char msg[300];
        snprintf(msg, sizeof msg, "conflicting member %s from %s and %s", cf.name,
                 r->calls[cf.a].b->name, r->calls[cf.b].b->name);
        fanout_error_body(&r->out, msg, NULL, r->request_id);
        return;
    }
    if (rc != 0) {
        r->status = 502;
        fanout_error_body(&r->out, "cannot merge backend responses", NULL, r->request_id);
        return;
    }
    r->status = 200;
}

/* Calls that never ended (the request was cancelled first). */
static void mark_unended(struct request *r)
{
    for (size_t i = 0; i < r->n_calls; i++) {
        struct backend_call *c = &r->calls[i];
        if (c->ended) continue;
        if (c->items_ctx) ctx_release(c->items_ctx);
        c->items_ctx = NULL;
        c->outcome = OUT_CANCELLED;
        c->why = "cancelled";
        if (c->started) c->dur_ns = loop_now(loop_current()) - c->t0;
        metrics_backend(r->metrics, r->ep->name, c->b->name, OUT_CANCELLED,
                        c->started ? (double)c->dur_ns / 1e9 : -1);
    }
}

void fanout_run(void *arg)
{
    struct request *r = arg;
    errgroup_t *g = eg_new(r->ctx);
    int err = -ENOMEM;
    /* out of memory here only loses the exposed headers */
    r->expose = expose_new(r->ep->expose_headers, r->ep->n_expose_headers, r->n_calls);
    if (g && graph_sched_init(&r->sched, r->ep) == 0) {
        eg_set_limit(g, r->ep->concurrency);
        r->group = g;
        spawn_workers(r);
        err = eg_wait(g);
        r->group = NULL;
    }
    if (g) eg_free(g);
    mark_unended(r);
    answer(r, err);
    r->done(r);
}
