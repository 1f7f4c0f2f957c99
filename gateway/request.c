/*
 * request: a client request's life on its worker, from its headers to its
 * access-log record: route match, the built-in endpoints (/healthz,
 * /readyz, /metrics summed over the workers), CORS preflights, context and
 * ids, the checks before any backend call, the fan-out's start and end,
 * the body, the answer and its headers, metrics and the access log.
 *
 * Invariants: request_new sets up every field of a request and
 * request_free frees every one (fanout.c only fills them); a request is on
 * its worker's live list (w->live) from request_new's caller until
 * on_completed, and pins its config snapshot for that whole time; it is
 * suspended (RS_RUNNING) exactly while its fan-out coroutine runs. The
 * libmicrohttpd daemon and the connection watch are http.c's.
 */
#include "gateway/request.h"

#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ctx.h"
#include "core/loop.h"
#include "gateway/accesslog.h"
#include "gateway/auth.h"
#include "gateway/builtin.h"
#include "gateway/cors.h"
#include "gateway/expose.h"
#include "gateway/degraded.h"
#include "gateway/fanout.h"
#include "gateway/framing.h"
#include "gateway/gateway.h"
#include "gateway/gzip.h"
#include "gateway/http.h"
#include "gateway/metrics.h"
#include "gateway/otel.h"
#include "gateway/router.h"

#include "core/container_of.h"

/* ctx_cancel causes: the client hung up (logged as 499), shutdown. */
#define CAUSE_CLIENT_GONE 499
#define CAUSE_SHUTDOWN    503

/* Where a request is, seen from libmicrohttpd. */
enum req_state {
    RS_READY,   /* answer known (built-in, error): queue it */
    RS_FANOUT,  /* headers and body read: start the fan-out */
    RS_RUNNING, /* suspended while the fan-out runs */
    RS_DONE,    /* resumed with the answer */
};

/* What the HTTP side of a request keeps beside struct request. */
struct conn_state {
    enum req_state state;
    struct MHD_Connection *conn;
    bool hung_up;
    bool too_large;
    bool builtin;
    bool close; /* answer with Connection: close */
    char allow[ROUTE_ALLOW_MAX];
    struct httpcheck_body body; /* what the headers say of the body */
    uint64_t body_started;      /* loop_now() when the headers were in */
    uint64_t body_received;
    const char *content_type;
    struct timespec arrived; /* wall clock, for the access log */
    char method[16];
    const struct cors_conf *preflight; /* a CORS preflight the gateway answers */
    char *preflight_methods;           /* its Access-Control-Allow-Methods */
    const char *block;  /* libmicrohttpd's header block (the method starts it) */
    char *path;         /* copy of the raw path, for the access log */
    struct request req; /* last: ends with the calls */
};

static struct conn_state *state_of(struct request *r)
{
    return container_of(r, struct conn_state, req);
}

static void live_add(struct worker *w, struct request *r)
{
    r->prev = NULL;
    r->next = w->live;
    if (w->live) w->live->prev = r;
    w->live = r;
    w->n_live++;
}

static void live_remove(struct worker *w, struct request *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        w->live = r->next;
    if (r->next) r->next->prev = r->prev;
    w->n_live--;
}

static void json_answer(struct conn_state *cs, int status, const char *msg)
{
    cs->req.status = status;
    fanout_error_body(&cs->req.out, msg, NULL, cs->req.request_id);
    cs->state = RS_READY;
}

static void builtin(struct worker *w, struct conn_state *cs, const char *path)
{
    cs->state = RS_READY;
    cs->req.status = builtin_answer(w->gw, path, &cs->req.out, &cs->content_type);
}

/* Routes method and path; HEAD is answered like GET (RFC 9110 9.3.2): the
 * GET endpoint runs, its backends are called with their own method, and
 * libmicrohttpd sends the headers without the body. */
static int route(const struct config *cfg, const char *method, const char *url,
                 struct route_match *m)
{
    size_t len = strlen(url);
    int rc = router_match(cfg, method, url, len, m);
    if (rc != 405 || strcmp(method, "HEAD") != 0) {
        if (rc == 405 && strstr(m->allow, "GET") && strlen(m->allow) + 6 < sizeof m->allow)
            strcat(m->allow, ", HEAD");
        return rc;
    }
    return router_match(cfg, "GET", url, len, m);
}

/* A CORS preflight (OPTIONS with Access-Control-Request-Method) for a route
 * whose endpoint has "cors": answered 204 here, no backend called. Other
 * OPTIONS requests go on as before (405 unless an endpoint routes them).
 * allow: the path's methods (router's 405 list), or NULL. */
static bool preflight(const struct config *cfg, struct conn_state *cs, const char *method,
                      const char *url, const char *allow)
{
    if (strcmp(method, "OPTIONS") != 0) return false;
    const char *want = http_header(cs->conn, "Access-Control-Request-Method");
    struct route_match pm;
    if (!want || route(cfg, want, url, &pm) != 200 || !pm.ep->cors) return false;
    cs->preflight = pm.ep->cors;
    cs->preflight_methods = strdup(allow ? allow : want);
    cs->req.status = 204;
    cs->state = RS_READY;
    return true;
}

static void request_done(struct request *r);

static int header_each(struct request *r, header_visit_fn visit, void *arg)
{
    struct conn_state *cs = state_of(r);
    return http_header_each(cs->conn, cs->block, visit, arg);
}

struct request *request_new(const struct config *cfg, const struct route_match *m, pool_t *pool)
{
    size_t n_calls = m ? m->ep->n_backends : 0;
    struct conn_state *cs = calloc(1, sizeof *cs + n_calls * sizeof(struct backend_call));
    if (!cs) return NULL;
    struct request *r = &cs->req;
    cs->content_type = "application/json";
    r->cfg = cfg;
    r->buf_pool = pool;
    buf_init(&r->out, pool);
    buf_init(&r->timing, NULL);
    buf_init(&r->degraded_names, NULL);
    buf_init(&r->body_in, NULL);
    buf_init(&r->query_in, NULL);
    buf_init(&r->auth_hdrs, NULL);
    buf_init(&r->tracestate, NULL);
    if (m) {
        r->ep = m->ep;
        r->match = *m;
        r->n_calls = n_calls;
        for (size_t i = 0; i < n_calls; i++) {
            r->calls[i].req = r;
            r->calls[i].b = &m->ep->backends[i];
            buf_init(&r->calls[i].body, pool);
            buf_init(&r->calls[i].key, NULL);
            buf_init(&r->calls[i].path, NULL);
            buf_init(&r->calls[i].shaped, NULL);
        }
    }
    return r;
}

void request_free(struct request *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_calls; i++) {
        struct backend_call *c = &r->calls[i];
        for (uint32_t k = 0; k < c->n_items; k++) {
            buf_free(&c->items[k].path);
            buf_free(&c->items[k].body);
            buf_free(&c->items[k].shaped);
        }
        free(c->items);
        buf_free(&c->shaped);
        buf_free(&c->body);
        buf_free(&c->key);
        buf_free(&c->path);
        if (c->stale) degraded_release(r->degraded, c->stale);
    }
    fwd_free(&r->fwd);
    buf_free(&r->out);
    buf_free(&r->timing);
    buf_free(&r->degraded_names);
    buf_free(&r->body_in);
    buf_free(&r->query_in);
    buf_free(&r->auth_hdrs);
    buf_free(&r->tracestate);
    graph_sched_free(&r->sched);
    expose_free(r->expose);
    if (r->ctx) ctx_release(r->ctx);
    struct conn_state *cs = state_of(r);
    free(cs->path);
    free(cs->preflight_methods);
    free(cs);
}

/* Ties a new request to its worker and its connection: what the access
 * log needs, the hooks fanout.c calls, the live list. */
static void attach(struct worker *w, struct conn_state *cs, struct MHD_Connection *conn,
                   const char *url, const char *method)
{
    struct request *r = &cs->req;
    cs->conn = conn;
    clock_gettime(CLOCK_REALTIME, &cs->arrived);
    snprintf(cs->method, sizeof cs->method, "%s", method);
    cs->path = strdup(url);
    metrics_inflight_add(w->metrics, 1);
    r->metrics = w->metrics;
    r->w = w;
    r->up = w->up;
    r->conn = conn;
    r->header = http_header;
    r->done = request_done;
    r->header_each = header_each;
    cs->block = method; /* in place: libmicrohttpd parsed the block where it arrived */
    r->start_ns = mono_ns();
    r->degraded = w->gw->degraded;
    r->cache = w->cache;
    live_add(w, r);
}

/* Answers known from the connection alone: bad framing, draining, too
 * many connections. Returns whether the answer is known. */
static bool refused(struct worker *w, struct conn_state *cs, const char *url, const char *version)
{
    const char *why;
    int bad = framing_check(cs->conn, version, cs->req.cfg->server.max_header_bytes,
                            w->conn_memory, &cs->body, &why);
    if (bad) {
        cs->close = true;
        json_answer(cs, bad, why);
        return true;
    }
    if (atomic_load_explicit(&w->gw->draining, memory_order_relaxed) && !is_builtin(url)) {
        json_answer(cs, 503, "draining");
        return true;
    }
    if (http_over_limit(cs->conn)) {
        cs->close = true;
        if (!is_builtin(url)) { /* probes still answer: an overload is not death */
            json_answer(cs, 503, "too many connections");
            return true;
        }
    }
    return false;
}

/* A built-in endpoint: GET and HEAD only. */
static void answer_builtin(struct worker *w, struct conn_state *cs, const char *method,
                           const char *url)
{
    cs->builtin = true;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        snprintf(cs->allow, sizeof cs->allow, "GET, HEAD");
        json_answer(cs, 405, "method not allowed");
    } else {
        builtin(w, cs, url);
    }
}

/* No endpoint for this method and path (the router's 404 or 405). */
static void unrouted(struct conn_state *cs, int rc, const char *allow)
{
    if (rc == 404) {
        json_answer(cs, 404, "not found");
        return;
    }
    snprintf(cs->allow, sizeof cs->allow, "%s", allow);
    json_answer(cs, 405, "method not allowed");
}

/* An endpoint's request: what fanout_prepare found (err), then JWT (401),
 * params, forwarded headers and query (400/414), all before any backend
 * call; a refusal has set r->status and r->out. The fan-out starts once the
 * body is in. */
static void admit(struct worker *w, struct conn_state *cs, int err)
{
    struct request *r = &cs->req;
    if (!err && r->ep->auth != AUTH_NONE)
        err = auth_request(r, &w->gw->jwks, http_header(cs->conn, "Authorization"));
    if (!err && r->ep->n_forward_query) {
        http_query(cs->conn, &r->query_in);
        r->query = r->query_in.data;
        r->query_len = r->query_in.len;
    }
    if (!err) err = fanout_check(r);
    if (err) {
        cs->state = RS_READY;
        return;
    }
    cs->state = RS_FANOUT;
}

/* First call for a request: headers are in. Route it, make its state and
 * decide what can be decided before its body. */
static struct conn_state *begin(struct worker *w, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version)
{
    const struct config *cfg = av_acquire(&w->gw->config);
    struct route_match m;
    int rc = is_builtin(url) ? 0 : route(cfg, method, url, &m); /* else 200, 404 or 405 */
    struct request *r = request_new(cfg, rc == 200 ? &m : NULL, w->buf_pool);
    if (!r) {
        av_release(&w->gw->config, (void *)cfg);
        return NULL;
    }
    struct conn_state *cs = state_of(r);
    attach(w, cs, conn, url, method);
    int err =
        fanout_prepare(r, http_header(conn, "X-Request-Timeout-Ms"),
                       http_header(conn, "traceparent"), http_header(conn, "X-Request-Id"));
    if (refused(w, cs, url, version)) return cs;
    if (is_builtin(url)) {
        answer_builtin(w, cs, method, url);
        return cs;
    }
    if (preflight(cfg, cs, method, url, rc == 405 ? m.allow : NULL)) return cs;
    if (rc != 200)
        unrouted(cs, rc, m.allow);
    else
        admit(w, cs, err);
    return cs;
}

static void client_gone(void *arg)
{
    struct conn_state *cs = arg;
    cs->hung_up = true;
    ctx_cancel(cs->req.ctx, CAUSE_CLIENT_GONE);
}

static void start_fanout(struct worker *w, struct conn_state *cs)
{
    struct request *r = &cs->req;
    cs->state = RS_RUNNING;
    if (!loop_spawn(w->loop, fanout_run, r)) {
        json_answer(cs, 503, "overloaded: no coroutine available");
        return;
    }
    http_suspend(w, cs->conn, client_gone, cs);
}

/* r->done: the answer is ready (or the client is gone). */
static void request_done(struct request *r)
{
    struct conn_state *cs = state_of(r);
    struct worker *w = r->w;
    http_unwatch(cs->conn);
    if (cs->state != RS_RUNNING) /* spawn failed path answered already */
        return;
    cs->state = RS_DONE;
    http_resume(w, cs->conn);
}

static void add_header(struct MHD_Response *resp, const char *name, const char *value)
{
    if (value && *value) MHD_add_response_header(resp, name, value);
}

/* server.gzip: an endpoint's answer (not a built-in's, not a preflight) is
 * gzip-eligible; it is compressed when the client accepts gzip and the body
 * has at least min_bytes. *vary: add Vary: Accept-Encoding. */
static struct MHD_Response *make_response(struct conn_state *cs, bool *vary, bool *gz)
{
    struct request *r = &cs->req;
    const struct server_conf *s = &r->cfg->server;
    *vary = s->gzip && r->ep && !cs->builtin && !cs->preflight;
    *gz = false;
    const void *out;
    size_t n;
    if (*vary && r->out.len >= s->gzip_min_bytes && r->out.len &&
        gzip_accepts(http_header(cs->conn, MHD_HTTP_HEADER_ACCEPT_ENCODING)) &&
        gzip_compress(s->gzip_level, r->out.data, r->out.len, &out, &n) == 0) {
        *gz = true;
        return MHD_create_response_from_buffer(n, (void *)out, MHD_RESPMEM_MUST_COPY);
    }
    return MHD_create_response_from_buffer(r->out.len, r->out.data, MHD_RESPMEM_MUST_COPY);
}

static enum MHD_Result queue_answer(struct worker *w, struct conn_state *cs)
{
    struct request *r = &cs->req;
    bool vary, gz;
    struct MHD_Response *resp = make_response(cs, &vary, &gz);
    if (!resp) return MHD_NO;
    if (vary) add_header(resp, MHD_HTTP_HEADER_VARY, MHD_HTTP_HEADER_ACCEPT_ENCODING);
    if (gz) add_header(resp, MHD_HTTP_HEADER_CONTENT_ENCODING, "gzip");
    const struct cors_conf *cors = cs->preflight ? cs->preflight : r->ep ? r->ep->cors : NULL;
    if (cors)
        cors_headers(resp, cors, http_header(cs->conn, "Origin"), cs->preflight_methods);
    char tp[TRACEPARENT_LEN + 1];
    trace_format(&r->trace, tp);
    add_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->status == 204 ? NULL : cs->content_type);
    add_header(resp, "X-Request-Id", r->request_id);
    add_header(resp, "traceparent", tp);
    if (r->n_calls) add_header(resp, "Server-Timing", r->timing.data);
    for (size_t j = 0; r->status >= 200 && r->status <= 299 && j < expose_n_names(r->expose); j++)
        add_header(resp, expose_name(r->expose, j), expose_value(r->expose, j));
    if (r->degraded_names.len) {
        add_header(resp, "X-Gateway-Completed", "false");
        add_header(resp, "X-Gateway-Degraded", r->degraded_names.data);
    }
    if (r->status == 405) add_header(resp, MHD_HTTP_HEADER_ALLOW, cs->allow);
    if (r->status == 401) add_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, r->www_auth);
    if (r->status == 503 && !cs->builtin) add_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (atomic_load_explicit(&w->gw->draining, memory_order_relaxed) || cs->too_large || cs->close)
        add_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(cs->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* The minimum body rate: a body must be in within header_timeout_ms of its
 * headers plus one second per KiB (its Content-Length, or for a chunked
 * body what has arrived so far): 1 KiB/s on average after that grace. */
static void arm_body_deadline(struct conn_state *cs)
{
    uint64_t bytes = cs->body.has_length ? cs->body.content_length : cs->body_received;
    uint64_t ms = cs->req.cfg->server.header_timeout_ms + bytes * 1000 / 1024;
    http_arm_body_deadline(cs->conn, cs->body_started + ms * 1000000ull, &cs->req.status);
}

static bool expects_body(const struct conn_state *cs)
{
    return cs->body.chunked || (cs->body.has_length && cs->body.content_length > 0);
}

/* The first call's decisions, before any body byte is read. An answer
 * known already (an error, 404, 405, a built-in, draining) goes out at once
 * when a body follows: queued in this first call, libmicrohttpd sends no
 * 100 Continue, never reads the body and closes the connection after the
 * answer. Without a body it waits for the next call, which keeps the
 * connection alive (docs/perf.md K3). */
static enum MHD_Result first_call(struct worker *w, struct conn_state *cs)
{
    http_stop_deadline(cs->conn);
    if (cs->state == RS_FANOUT && cs->body.has_length &&
        cs->body.content_length > cs->req.cfg->server.max_request_body_bytes) {
        cs->too_large = true;
        json_answer(cs, 413, "request body too large");
    }
    if (cs->state == RS_READY && (cs->close || cs->too_large || expects_body(cs))) {
        cs->close = true;
        return queue_answer(w, cs);
    }
    if (cs->state == RS_FANOUT && expects_body(cs)) {
        cs->body_started = loop_now(w->loop);
        arm_body_deadline(cs);
    }
    return MHD_YES;
}

/* A piece of the body arrived. */
static void take_upload(struct conn_state *cs, const char *upload, size_t n)
{
    struct request *r = &cs->req;
    cs->body_received += n;
    if (cs->body.chunked) { /* the allowance grows with what arrived */
        if (http_body_deadline_armed(cs->conn, &r->status)) arm_body_deadline(cs);
    }
    if (cs->state != RS_FANOUT) return; /* answer known already: discard the body */
    if (r->body_in.len + n > r->cfg->server.max_request_body_bytes) {
        cs->too_large = true; /* chunked, no Content-Length: answered at the end */
        json_answer(cs, 413, "request body too large");
    } else if (buf_append(&r->body_in, upload, n)) {
        cs->close = true;
        json_answer(cs, 503, "out of memory");
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct worker *w = cls;
    struct conn_state *cs = *con_cls;
    if (!cs) {
        cs = begin(w, conn, framing_origin_path(url), method, version);
        *con_cls = cs;
        return cs ? first_call(w, cs) : MHD_NO;
    }
    struct request *r = &cs->req;
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        take_upload(cs, upload, n);
        return MHD_YES;
    }
    http_stop_deadline(conn); /* the body is in (or there was none) */
    switch (cs->state) {
    case RS_FANOUT:
        r->body = r->body_in.data;
        r->body_len = r->body_in.len;
        start_fanout(w, cs);
        if (cs->state == RS_READY) return queue_answer(w, cs);
        return MHD_YES;
    case RS_RUNNING: /* spurious call while suspended: nothing to do */
        return MHD_YES;
    case RS_DONE: /* a hung-up client's answer fails to send and closes it */
    case RS_READY:
        return queue_answer(w, cs);
    }
    return MHD_NO;
}

/* A request is over (answered, or its client gone): metrics, its span and
 * the access-log record. */
static void finish_request(struct worker *w, struct conn_state *cs,
                           enum MHD_RequestTerminationCode toe)
{
    struct request *r = &cs->req;
    int status = cs->hung_up || (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && r->status == 0)
                     ? 499
                     : r->status;
    double ms = (double)(mono_ns() - r->start_ns) / 1e6;
    const char *ep = r->ep ? r->ep->name : NULL;
    metrics_inflight_add(w->metrics, -1);
    metrics_request(w->metrics, ep, status, ms / 1e3);
    if (!cs->builtin) otel_request(w->gw->otel, r, cs->method, status);
    if (!w->gw->log) return;
    accesslog_request(w->gw->log, r, cs->hung_up,
                      &(struct access_record){
                          .ts = cs->arrived,
                          .method = cs->method,
                          .path = cs->path,
                          .endpoint = ep,
                          .status = status,
                          .duration_ms = ms,
                          .request_id = r->request_id,
                      });
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    struct worker *w = cls;
    struct conn_state *cs = *con_cls;
    if (!cs) return;
    *con_cls = NULL;
    struct request *r = &cs->req;
    const struct config *cfg = r->cfg;
    finish_request(w, cs, toe);
    live_remove(w, r);
    request_free(r); /* before the release: the calls point into cfg */
    av_release(&w->gw->config, (void *)cfg);
}

const struct http_handler request_http = {on_request, on_completed};

void request_cancel_running(struct worker *w)
{
    for (struct request *r = w->live; r; r = r->next)
        if (r->ctx && state_of(r)->state == RS_RUNNING) ctx_cancel(r->ctx, CAUSE_SHUTDOWN);
}
