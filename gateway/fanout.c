/*
 * fanout: one request's backend calls and its answer (fanout.h): the checks
 * of what the client sent before any call, the call graph and its errgroup,
 * call_finish (the failure table: fallback or fail the group), foreach
 * items, the merge into the response and the error body. Owns the request's
 * calls from fanout_check to the answer; never touches libmicrohttpd.
 */
#include "gateway/fanout.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errgroup.h"
#include "core/loop.h"
#include "gateway/auth.h"
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

/* Headers one backend call sends beyond the forwarded ones. */
#define OWN_HEADERS 2
/* ... and after the forwarded ones: tracestate, claim headers (auth.c) */
#define EDGE_HEADERS (1 + AUTH_MAX_CLAIM_HDRS)
/* + 1: attempt.c adds X-Gateway-Attempt; none may be dropped or refused. */
_Static_assert(OWN_HEADERS + FWD_MAX + EDGE_HEADERS + 1 <= UPSTREAM_MAX_HEADERS,
               "a backend call's header lines must fit the transports");

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
 * own, then the forwarded ones (checked and joined once per request). The
 * attempt loop adds each attempt's X-Gateway-Attempt and
 * X-Request-Timeout-Ms (gateway/attempt.h). */
_Static_assert(14 + TRACE_REQUEST_ID_MAX < 192 && 13 + TRACEPARENT_LEN < 192,
               "call_headers' own lines fit");
static size_t call_headers(struct backend_call *c, char own[OWN_HEADERS][192],
                           const char **hdrs)
{
    struct request *r = c->req;
    size_t n = 0;
    struct trace_parent span;
    trace_child(&r->trace, &span);
    memcpy(c->span_id, span.span_id, sizeof c->span_id);
    char tp[TRACEPARENT_LEN + 1];
    trace_format(&span, tp);
    /* by hand: this runs for every call */
    memcpy(own[0], "traceparent: ", 13);
    memcpy(own[0] + 13, tp, sizeof tp);
    size_t idl = strnlen(r->request_id, TRACE_REQUEST_ID_MAX);
    memcpy(own[1], "X-Request-Id: ", 14);
    memcpy(own[1] + 14, r->request_id, idl);
    own[1][14 + idl] = '\0';
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
static void degraded_key(buf_t *k, struct request *r, const struct backend_conf *b,
                         const char *origin, const buf_t *path)
{
    int rc = buf_append(k, b->name, strlen(b->name) + 1);
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
static int call_finish(struct backend_call *c, const struct upstream_resp *resp)
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
static int cache_hit(struct backend_call *c)
{
    c->outcome = OUT_OK;
    c->status = 200;
    if (accept_body(c, c->stale->body, c->stale->len) != 0) c->outcome = OUT_ERROR;
    c->feed = c->stale->len ? c->stale->body : NULL;
    c->feed_len = c->stale->len;
    return c->outcome == OUT_OK || !c->b->required ? 0 : fail_group(c);
}

/* One HTTP exchange of backend b (a whole backend or one foreach item)
 * under the group's context (bounded by the request's deadline): through
 * the cache (a whole backend: key, which may hit or coalesce), then the
 * attempt loop, which bounds every attempt by the backend's timeout. The
 * degraded key is written into key (NULL: none) once the URL is known. */
static void do_call(struct backend_call *c, ctx_t *gctx, const buf_t *path, int path_rc, buf_t *key,
                    struct upstream_resp *resp)
{
    struct request *r = c->req;
    const struct backend_conf *b = c->b;
    char origin[256];
    if (urlbuild_origin(b, origin, sizeof origin) < 0 || path_rc) {
        resp->result = UP_ERROR;
        resp->error = path_rc == -ENOMEM ? "out of memory" : "cannot build URL";
    } else if (ctx_done(gctx) || loop_now(loop_current()) >= r->deadline_ns) {
        /* the deadline passed while it waited: no call */
        resp->result = !ctx_done(gctx) || ctx_err(gctx) == CTX_DEADLINE_EXCEEDED ? UP_TIMEOUT
                                                                               : UP_CANCELED;
    } else {
        if (key) degraded_key(key, r, b, origin, path);
        char own[OWN_HEADERS][192];
        const char *hdrs[OWN_HEADERS + FWD_MAX + EDGE_HEADERS];
        struct upstream_req req = {
            .method = b->method,
            .origin = origin,
            .path = path->data,
            .headers = hdrs,
            .n_headers = call_headers(c, own, hdrs),
            .body = b->forward_body ? r->body : NULL,
            .body_len = b->forward_body ? r->body_len : 0,
            .max_bytes = b->max_response_bytes,
            .native = b->client == CLIENT_NATIVE,
            .conf = &r->cfg->upstream,
        };
        if (req.body == NULL && b->forward_body) req.body = "";
        struct attempt_plan plan = {
            .cfg = r->cfg, .b = b, .deadline_ns = r->deadline_ns, .metrics = r->metrics};
        if (r->cache)
            c->cache = cache_call(r->cache, &b->cache, key ? key->data : NULL,
                                  key ? key->len : 0, gctx, &plan, &req, resp, &c->att, &c->stale);
        else /* a request without a worker's cache (unit tests) */
            attempt_call(r->up, gctx, &plan, &req, resp, &c->att);
    }
}

/* ---- the call graph: workers take ready tasks (gateway/graph.h) ---- */

/* Renders {backend.path} from that backend's feed and {item...} from the
 * element; remembers which placeholder failed. */
struct render_arg {
    struct request *r;
    const char *elem;
    size_t elem_len;
    const struct url_part *failed;
};

static int render_field(void *arg, buf_t *out, const struct url_part *part)
{
    struct render_arg *ra = arg;
    int rc;
    if (part->backend == URL_PART_ITEM) {
        rc = graph_render(out, part, ra->elem, ra->elem_len);
    } else {
        const struct backend_call *p = &ra->r->calls[part->backend];
        rc = graph_render(out, part, p->feed, p->feed_len);
    }
    if (rc) ra->failed = part;
    return rc;
}

/* Builds the path of a call whose URL reads bodies. Returns 0, or -1 with
 * why_buf set. */
static int render_path(struct backend_call *c, buf_t *path, const char *elem, size_t elem_len)
{
    struct request *r = c->req;
    struct render_arg ra = {.r = r, .elem = elem, .elem_len = elem_len};
    buf_clear(path);
    int rc = urlbuild_path_fields(path, r->ep, c->b, &r->match, r->query, r->query_len,
                                  render_field, &ra);
    if (!rc) return 0;
    if (rc == -ENOENT && ra.failed)
        snprintf(c->why_buf, sizeof c->why_buf, "missing field %s", graph_part_name(ra.failed));
    else if (rc == -ENAMETOOLONG)
        snprintf(c->why_buf, sizeof c->why_buf, "URL path too long (limit %d bytes)",
                 URLBUILD_PATH_MAX - 1);
    else
        snprintf(c->why_buf, sizeof c->why_buf, "%s",
                 rc == -ENOMEM ? "out of memory" : "cannot build URL");
    return -1;
}

/* A dependency left out (optional and failed): its children fail. */
static const struct backend_call *failed_dep(const struct backend_call *c)
{
    for (size_t k = 0; k < c->b->n_deps; k++) {
        const struct backend_call *p = &c->req->calls[c->b->deps[k]];
        if (p->omit) return p;
    }
    return NULL;
}

static int worker(ctx_t *gctx, void *arg);

static int out_of_memory(ctx_t *gctx, void *arg)
{
    (void)gctx;
    (void)arg;
    return -ENOMEM;
}

/* More workers while tasks wait and slots are free (never parks). */
static void spawn_workers(struct request *r)
{
    while (graph_sched_ready(&r->sched) > r->starting && eg_try_go(r->group, worker, r))
        r->starting++;
}

/* Backend c has ended (any outcome): timing, metrics, children. */
static void call_ended(struct backend_call *c)
{
    struct request *r = c->req;
    c->ended = true;
    c->dur_ns = loop_now(loop_current()) - c->t0;
    metrics_backend(r->metrics, r->ep->name, c->b->name, c->outcome,
                    (double)c->dur_ns / 1e9);
    if (c->b->n_children) {
        if (graph_sched_ended(&r->sched, r->ep, (size_t)(c - r->calls)) != 0)
            eg_try_go(r->group, out_of_memory, NULL); /* fails the group: 503 */
        spawn_workers(r);
    }
}

/* Ends c with a failure that happened before any call. */
static int fail_early(struct backend_call *c, const char *why)
{
    if (why != c->why_buf) snprintf(c->why_buf, sizeof c->why_buf, "%s", why);
    struct upstream_resp resp = {.result = UP_ERROR, .error = c->why_buf, .body = &c->body};
    int rc = call_finish(c, &resp);
    call_ended(c);
    return rc;
}

static int call_backend(ctx_t *gctx, struct backend_call *c)
{
    const struct backend_conf *b = c->b;
    const struct backend_call *dep = failed_dep(c);
    if (dep) {
        snprintf(c->why_buf, sizeof c->why_buf, "dependency %s failed", dep->b->name);
        return fail_early(c, c->why_buf);
    }
    if (b->n_deps) {
        if (render_path(c, &c->path, NULL, 0) != 0) return fail_early(c, c->why_buf);
        c->path_rc = 0; /* the check's build had the values left empty */
    }
    struct expose_cap *exp = expose_cap(c->req->expose, (size_t)(c - c->req->calls));
    struct upstream_resp resp = {.body = &c->body, .exp = exp};
    do_call(c, gctx, &c->path, c->path_rc,
            b->fallback == FALLBACK_DEGRADED || b->cache.enabled ? &c->key : NULL, &resp);
    c->status = resp.status;
    int rc = c->cache == CACHE_HIT ? cache_hit(c) : call_finish(c, &resp);
    /* only a fresh 2xx answer's headers count; a hedge's were not captured */
    if (c->outcome != OUT_OK || c->cache == CACHE_HIT || resp.exp != exp) expose_reset(exp);
    if (c->cache != CACHE_NONE) metrics_cache(c->req->metrics, b->name, c->cache);
    call_ended(c);
    return rc;
}

/* ---- foreach ---- */

/* The last item has ended: the array (or the failure) is the backend's. */
static int foreach_finish(struct backend_call *c)
{
    struct request *r = c->req;
    const struct backend_conf *b = c->b;
    struct upstream_resp resp = {.result = UP_OK, .status = 200, .body = &c->body};
    if (c->items_ctx) ctx_release(c->items_ctx); /* every item has ended */
    c->items_ctx = NULL;
    const struct item_call *bad = c->items_failed ? &c->items[c->first_bad] : NULL;
    if (bad) {
        resp.result = bad->outcome == OUT_TIMEOUT     ? UP_TIMEOUT
                      : bad->outcome == OUT_CANCELLED ? UP_CANCELED
                                                      : UP_ERROR;
        char why[120]; /* bad->why may be c->why_buf itself */
        snprintf(why, sizeof why, "%s", bad->why ? bad->why : "error");
        snprintf(c->why_buf, sizeof c->why_buf, "item %zu failed: %s", (size_t)(bad - c->items),
                 why);
        resp.error = c->why_buf;
    } else {
        buf_clear(&c->body);
        int rc = buf_putc(&c->body, '[');
        bool first = true;
        for (uint32_t k = 0; k < c->n_items && !rc; k++) {
            const struct item_call *it = &c->items[k];
            if (it->outcome != OUT_OK && b->item_failure == ITEM_OMIT) continue;
            if (!first) rc = buf_putc(&c->body, ',');
            first = false;
            if (!rc)
                rc = it->outcome == OUT_OK && it->part ? buf_append(&c->body, it->part, it->part_len)
                                                       : buf_puts(&c->body, "null");
        }
        if (!rc) rc = buf_putc(&c->body, ']');
        if (rc) {
            resp.result = UP_ERROR;
            resp.error = "out of memory";
        }
    }
    /* degraded key: name, every item URL, forwarded header values */
    buf_clear(&c->key);
    if (b->fallback == FALLBACK_DEGRADED) {
        char origin[256];
        if (urlbuild_origin(b, origin, sizeof origin) >= 0)
            for (uint32_t k = 0; k < c->n_items; k++) {
                if (!c->items[k].path.len) { /* an item never resolved: no key */
                    buf_clear(&c->key);
                    break;
                }
                degraded_key(&c->key, r, b, origin, &c->items[k].path);
            }
    }
    int rc = call_finish(c, &resp);
    call_ended(c);
    return rc;
}

/* Out of memory while the items were being set up. */
static int foreach_abort(struct backend_call *c)
{
    if (c->items_ctx) ctx_release(c->items_ctx);
    c->items_ctx = NULL;
    c->n_items = 0; /* none was started; the ones queued find c ended */
    return fail_early(c, "out of memory");
}

/* Reads the source array and queues one task per element. */
static int foreach_open(ctx_t *gctx, struct backend_call *c)
{
    struct request *r = c->req;
    const struct backend_conf *b = c->b;
    const struct backend_call *dep = failed_dep(c);
    if (dep) {
        snprintf(c->why_buf, sizeof c->why_buf, "dependency %s failed", dep->b->name);
        return fail_early(c, c->why_buf);
    }
    const struct backend_call *src = &r->calls[b->foreach_backend];
    const char *v;
    size_t vn;
    enum json_type t = src->feed ? jpath_get(src->feed, src->feed_len, b->foreach_path,
                                             strlen(b->foreach_path), &v, &vn)
                                 : JSON_NULL;
    if (t != JSON_ARRAY) {
        snprintf(c->why_buf, sizeof c->why_buf, "%s %s%s%s",
                 t == JSON_INVALID || t == JSON_NULL ? "missing field" : "not an array:",
                 src->b->name, *b->foreach_path ? "." : "", b->foreach_path);
        return fail_early(c, c->why_buf);
    }
    struct jpath_iter it;
    struct json_member m;
    size_t n = 0;
    jpath_iter_start(&it, v, vn);
    while (jpath_iter_next(&it, &m) > 0)
        n++;
    if (n > b->max_items) {
        snprintf(c->why_buf, sizeof c->why_buf, "too many items (%zu, max_items %u)", n,
                 b->max_items);
        return fail_early(c, c->why_buf);
    }
    if (n == 0) return foreach_finish(c);
    c->items = calloc(n, sizeof *c->items);
    c->items_ctx = ctx_with_cancel(gctx);
    if (!c->items || !c->items_ctx) return foreach_abort(c);
    c->n_items = c->items_left = (uint32_t)n;
    jpath_iter_start(&it, v, vn);
    for (size_t k = 0; k < n && jpath_iter_next(&it, &m) > 0; k++) {
        c->items[k].elem = m.value;
        c->items[k].elem_len = m.value_len;
        buf_init(&c->items[k].body, r->buf_pool);
        if (graph_sched_push(&r->sched, (struct graph_task){(uint32_t)(c - r->calls), (uint32_t)k}))
            return foreach_abort(c); /* queued items find it ended */
    }
    spawn_workers(r);
    return 0;
}

static void item_classify(struct backend_call *c, struct item_call *it,
                          const struct upstream_resp *resp)
{
    it->status = resp->status;
    it->outcome = OUT_ERROR;
    switch (resp->result) {
    case UP_OK:
        if (resp->status < 200 || resp->status > 299) {
            it->why = "bad status";
        } else if (it->body.len && json_check(it->body.data, it->body.len) == JSON_INVALID) {
            it->why = "invalid JSON";
        } else if (c->b->shape) {
            if (shape_apply(&it->shaped, c->b->shape, it->body.data, it->body.len, &it->why) == 0) {
                it->outcome = OUT_OK;
                it->part = it->shaped.data;
                it->part_len = it->shaped.len;
            }
        } else {
            it->outcome = OUT_OK;
            it->part = it->body.len ? it->body.data : NULL;
            it->part_len = it->body.len;
        }
        break;
    case UP_TIMEOUT:
        it->outcome = OUT_TIMEOUT;
        it->why = "timeout";
        break;
    case UP_CANCELED:
        it->outcome = OUT_CANCELLED;
        it->why = "cancelled";
        break;
    case UP_TOO_BIG:
    case UP_ERROR:
        it->why = resp->error;
        break;
    }
}

static int run_item(struct backend_call *c, uint32_t k)
{
    struct request *r = c->req;
    struct item_call *it = &c->items[k];
    if (c->ended) return 0; /* the backend already failed */
    if (c->items_failed) {
        it->outcome = OUT_CANCELLED;
        it->why = "cancelled";
    } else {
        struct upstream_resp resp = {.body = &it->body};
        buf_init(&it->path, NULL);
        if (render_path(c, &it->path, it->elem, it->elem_len) != 0) {
            it->outcome = OUT_ERROR;
            it->why = c->why_buf;
        } else {
            do_call(c, c->items_ctx, &it->path, 0, NULL, &resp);
            item_classify(c, it, &resp);
        }
        metrics_item(r->metrics, r->ep->name, c->b->name, it->outcome);
        if (it->outcome != OUT_OK && c->b->item_failure == ITEM_FAIL && !c->items_failed) {
            /* the backend has failed: its other items in flight stop now */
            c->items_failed = true;
            c->first_bad = k;
            ctx_cancel(c->items_ctx, 0);
        }
    }
    if (--c->items_left) return 0;
    return foreach_finish(c);
}

/* Runs one ready task. A request cancelled (first error, client gone)
 * starts nothing more; after the deadline tasks still end, at once,
 * through their fallback tables (degraded parts). */
static int run_task(ctx_t *gctx, struct request *r, struct graph_task t)
{
    struct backend_call *c = &r->calls[t.call];
    if (ctx_err(gctx) == CTX_CANCELED) return 0;
    if (t.item != GRAPH_WHOLE) return run_item(c, t.item);
    c->started = true;
    c->t0 = c->start_ns = loop_now(loop_current());
    if (c->b->foreach_path) return foreach_open(gctx, c);
    return call_backend(gctx, c);
}

static int worker(ctx_t *gctx, void *arg)
{
    struct request *r = arg;
    r->starting--;
    struct graph_task t;
    while (graph_sched_pop(&r->sched, &t)) {
        spawn_workers(r);
        int rc = run_task(gctx, r, t);
        if (rc) return rc;
    }
    return 0;
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
