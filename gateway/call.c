/*
 * call: one backend exchange as the fan-out sends it (gateway/call.h).
 *
 * Owns the request a backend call carries: its header lines (traceparent
 * with a new span, X-Request-Id, the forwarded lines fanout_check joined,
 * tracestate, claim headers), its degraded-store key, and the choice of
 * path: the worker's cache (which may hit or coalesce) or, without one,
 * the attempt loop. Invariants: no call is made once the group is done or
 * the request's deadline has passed; every header line a call sends fits
 * the transports (the _Static_assert below); nothing here allocates per
 * call beyond the key buffer the caller owns.
 */
#include "gateway/call.h"

#include <errno.h>
#include <string.h>

#include "core/loop.h"
#include "gateway/attempt.h"
#include "gateway/auth.h"
#include "gateway/cache.h"
#include "gateway/urlbuild.h"

/* Headers one backend call sends beyond the forwarded ones. */
#define OWN_HEADERS 2
/* ... and after the forwarded ones: tracestate, claim headers (auth.c) */
#define EDGE_HEADERS (1 + AUTH_MAX_CLAIM_HDRS)
/* + 1: attempt.c adds X-Gateway-Attempt; none may be dropped or refused. */
_Static_assert(OWN_HEADERS + FWD_MAX + EDGE_HEADERS + 1 <= UPSTREAM_MAX_HEADERS,
               "a backend call's header lines must fit the transports");
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
void degraded_key(buf_t *k, struct request *r, const struct backend_conf *b,
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

/* One HTTP exchange of backend b (a whole backend or one foreach item)
 * under the group's context (bounded by the request's deadline): through
 * the cache (a whole backend: key, which may hit or coalesce), then the
 * attempt loop, which bounds every attempt by the backend's timeout. The
 * degraded key is written into key (NULL: none) once the URL is known. */
void do_call(struct backend_call *c, ctx_t *gctx, const buf_t *path, int path_rc, buf_t *key,
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
            .cfg = r->cfg,
            .b = b,
            .deadline_ns = r->deadline_ns,
            .metrics = r->metrics,
            .transport = r->transport,
        };
        if (r->cache)
            c->cache = cache_call(r->cache, &b->cache, key ? key->data : NULL,
                                  key ? key->len : 0, gctx, &plan, &req, resp, &c->att, &c->stale);
        else /* a request without a worker's cache (unit tests) */
            attempt_call(r->up, gctx, &plan, &req, resp, &c->att);
    }
}