/*
 * fanout: one client request's backend calls and its answer.
 *
 * fanout_run is the request's coroutine: an errgroup under the request's
 * context runs one coroutine per backend (bounded by the endpoint's
 * concurrency); every call ends in call_finish, the one place where a
 * failure becomes a fallback (degraded, static, omitted) or fails the group,
 * which cancels the siblings at once. The bodies are then merged into the
 * response. It fills the fields of a request that request.c set up (and
 * frees: request_free) and calls nothing of request.c, http.c or gateway.c:
 * the HTTP side comes in through r->header, r->header_each and r->done.
 */
#ifndef GATEWAY_FANOUT_H
#define GATEWAY_FANOUT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/ctx.h"
#include "gateway/cache.h"
#include "gateway/attempt.h"
#include "gateway/config.h"
#include "gateway/fwdhdr.h"
#include "gateway/graph.h"
#include "gateway/outcome.h"
#include "gateway/router.h"
#include "gateway/trace.h"

struct worker;
struct upstream;
struct degraded;
struct degraded_entry;


/* One element's call of a foreach backend. */
struct item_call {
    const char *elem; /* the element's raw bytes, in the source body */
    size_t elem_len;
    buf_t path;   /* its resolved "/path?query" */
    buf_t body;   /* its response */
    buf_t shaped; /* body after the backend's shaping */
    const char *part; /* what goes into the array; NULL: null */
    size_t part_len;
    enum outcome outcome;
    const char *why;
    long status;
};

struct backend_call {
    struct request *req;
    const struct backend_conf *b;
    enum outcome outcome;
    long status;      /* backend HTTP status, 0 when none */
    const char *why;  /* failure reason, static text */
    buf_t body;       /* the response body */
    const char *part; /* what is merged: body, static or degraded bytes; NULL = null */
    size_t part_len;
    const struct degraded_entry *stale; /* pinned while merged: a degraded or cached answer */
    enum cache_result cache;            /* how the cache answered (CACHE_NONE: no cache) */
    buf_t key;                          /* degraded-store key: name, URL, forwarded header values */
    buf_t path;                         /* "/path?query" for this call, built by fanout_check */
    int path_rc;                        /* urlbuild_path's result when it could not be built */
    bool omit;                          /* leave the key out */
    uint64_t dur_ns;
    uint64_t start_ns;                  /* mono_ns when the call began (otel) */
    uint8_t span_id[TRACE_SPAN_BYTES];  /* sent in its traceparent; zero: never started */
    /* composition (gateway/graph.h) */
    const char *feed; /* what children read: raw body, stale or static bytes; NULL = null */
    size_t feed_len;
    buf_t shaped;            /* the body after target/allow/deny/rename */
    struct item_call *items; /* foreach: one per element */
    uint32_t n_items, items_left;
    bool items_failed; /* an item failed under item_failure "fail" */
    uint32_t first_bad; /* that item */
    ctx_t *items_ctx;   /* the items' parent: cancelled by that failure */
    bool started, ended;
    uint64_t t0;
    char why_buf[160]; /* why, when it is not static text */
    struct attempt_info att; /* retries, hedges, breaker */
};

/* Looks up a request header (case-insensitive name); NULL when absent.
 * Provided by the HTTP side (http_header). */
typedef const char *(*header_fn)(void *conn, const char *name);

struct request;
/* Called for one request header: value[0..len) as the HTTP layer parsed it;
 * cut: bytes of its line after the value were dropped (a NUL in it).
 * Returns 0 to go on, anything else to stop (the walk returns it). */
typedef int (*header_visit_fn)(void *arg, const char *name, const char *value, size_t len,
                               bool cut);
/* Visits every request header in arrival order. Provided by request.c. */
typedef int (*header_each_fn)(struct request *r, header_visit_fn visit, void *arg);

struct request {
    struct request *prev, *next; /* the worker's live requests */
    struct worker *w;
    struct upstream *up;
    attempt_transport_fn transport; /* every call's exchange; NULL: upstream_call */
    struct pool *buf_pool;     /* the worker's buffer blocks */
    struct degraded *degraded; /* last good bodies, shared by all workers */
    struct cache *cache;       /* the worker's cache and coalescing table */
    struct metrics *metrics;   /* the worker's counters */
    const struct config *cfg;  /* pinned for the request's life */
    const struct endpoint_conf *ep;
    struct route_match match; /* params point into the raw URL */
    const char *query;        /* raw query string (no '?'), or NULL */
    size_t query_len;
    void *conn; /* for header lookups */
    /* Called once by fanout_run when the answer is ready (or the client is
     * gone): the HTTP side's hook, so this file calls nothing of it. */
    void (*done)(struct request *r);
    header_fn header;
    header_each_fn header_each;
    struct fwd fwd; /* the forwarded headers, checked and joined by fanout_check */
    const char *body; /* client body (forward_body) */
    size_t body_len;
    buf_t body_in;  /* where body points */
    buf_t query_in; /* where query points */

    ctx_t *ctx; /* deadline, trace values; owned */
    uint64_t start_ns;
    uint64_t deadline_ns;
    struct trace_parent trace; /* the gateway's span: the client's trace id or a new one */
    char request_id[TRACE_REQUEST_ID_MAX + 1];
    uint8_t parent_span[TRACE_SPAN_BYTES]; /* the client's span (has_parent) */
    bool has_parent;                       /* the client sent a valid traceparent */

    /* auth.c: claim headers for every backend call, "Name: value\0" lines */
    buf_t auth_hdrs;
    const char *www_auth; /* WWW-Authenticate of a 401, static */
    buf_t tracestate;     /* otel.c: "tracestate: ..." line to forward, or empty */

    /* the answer, filled by fanout_run */
    int status;
    buf_t out;            /* JSON body */
    buf_t timing;         /* Server-Timing value */
    buf_t degraded_names; /* X-Gateway-Degraded value ("" when complete) */
    struct expose_set *expose; /* expose_headers captures, one per call; NULL: none */

    /* the call graph of this request (fanout_run) */
    struct graph_sched sched;
    struct errgroup *group;
    const struct backend_call *failed; /* the required call that failed the group, or NULL */
    unsigned starting; /* workers spawned that have not taken a task yet */

    size_t n_calls;
    struct backend_call calls[]; /* one per backend */
};

/* ctx_value keys of the request context. */
extern const char fanout_key_trace[];      /* struct trace_parent * */
extern const char fanout_key_request_id[]; /* const char * */

/* Sets up r's ids from the client's headers and, when r->ep is set, its
 * context (deadline, trace values). Returns 0, or a negative errno with
 * r->status (400: -EINVAL, a bad X-Request-Timeout-Ms; 503: -ENOMEM) and
 * r->out holding the JSON error. */
int fanout_prepare(struct request *r, const char *timeout_hdr, const char *traceparent_hdr,
                   const char *request_id_hdr);
/* Checks what the client sent that the calls will carry, before any call:
 * route params (400 malformed percent-encoding, 414 over
 * URLBUILD_PARAM_MAX), forwarded headers (gateway/fwdhdr.h: 400), the
 * forwarded query values (400) and the length of each backend path (414);
 * builds every call's path and the forwarded header lines. Call once r->ep,
 * r->match, r->query and r->header_each are set. Returns 0, or a negative
 * errno (-ENAMETOOLONG for a 414, -ENOMEM for a 503, else -EINVAL) with
 * r->status and r->out holding the JSON error. */
int fanout_check(struct request *r);
/* The request coroutine: runs the calls, then fills status, out, timing,
 * degraded. Calls r->done(r) at the end. */
void fanout_run(void *r);

/* private: the failure table, for compose.c */
struct upstream_resp;
/* The one place every call ends: classifies resp and applies the backend's
 * fallback. Returns 0, or -EREMOTEIO (r->failed set) to fail the group. */
int call_finish(struct backend_call *c, const struct upstream_resp *resp);
/* c answered from the cache (c->stale pinned): shaped and fed like a fresh
 * answer. Returns 0, or -EREMOTEIO as call_finish. */
int cache_hit(struct backend_call *c);

/* Writes {"error":msg,"backend":backend|null,"request_id":id} into out. */
void fanout_error_body(buf_t *out, const char *msg, const char *backend, const char *request_id);

#endif
