#include "gateway/server.h"
#include "gateway/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/coro.h"
#include "core/errgroup.h"
#include "core/loop.h"
#include "gateway/accesslog.h"
#include "gateway/auth.h"
#include "gateway/degraded.h"
#include "gateway/fanout.h"
#include "gateway/metrics.h"
#include "gateway/otel.h"
#include "gateway/router.h"
#include "gateway/upstream.h"

#define container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

/* ctx_cancel causes: the client hung up (logged as 499), shutdown. */
#define CAUSE_CLIENT_GONE 499
#define CAUSE_SHUTDOWN    503

/* libmicrohttpd's memory per client connection: the request line and
 * headers must fit (a larger header block gets 431), plus its I/O buffers.
 * Its default, 32 KiB, costs 8 MiB resident at 256 connections. */
#define CONN_MEMORY (16 * 1024)

/* Where a request is, seen from libmicrohttpd. */
enum req_state {
    RS_READY,   /* answer known (built-in, error): queue it */
    RS_FANOUT,  /* headers and body read: start the fan-out */
    RS_RUNNING, /* suspended while the fan-out runs */
    RS_DONE,    /* resumed with the answer */
};

/* Per client connection: libmicrohttpd does not watch a suspended
 * connection, so we do. The fd is registered edge-triggered for hang-ups
 * once per connection (not per request: no epoll_ctl on the request path)
 * and unregistered when libmicrohttpd closes it. */
struct conn_watch {
    loop_io_t io;
    struct conn_state *active; /* the request suspended on it, or NULL */
    bool registered;
    bool peer_closed;
    bool over_limit; /* beyond server.max_connections: answer 503, close */
};

/* What server.c keeps beside struct request. */
struct conn_state {
    enum req_state state;
    struct MHD_Connection *conn;
    struct conn_watch *watch;
    bool hung_up;
    bool too_large;
    bool builtin;
    bool close; /* answer with Connection: close */
    char allow[ROUTE_ALLOW_MAX];
    const char *content_type;
    struct timespec arrived; /* wall clock, for the access log */
    char method[16];
    const char *block;  /* libmicrohttpd's header block (the method starts it) */
    char *path;         /* copy of the raw path, for the access log */
    struct request req; /* last: ends with the calls */
};

static struct conn_state *state_of(struct request *r)
{
    return container_of(r, struct conn_state, req);
}

/* ---- libmicrohttpd in the worker's loop ---- */

static void mhd_run(struct worker *w)
{
    w->mhd_run_needed = false;
    MHD_run(w->mhd);
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(w->mhd, &ms) == MHD_YES)
        loop_timer_start(w->loop, &w->mhd_timer, loop_now(w->loop) + ms * 1000000ull);
    else
        loop_timer_stop(w->loop, &w->mhd_timer);
}

static void on_mhd_io(loop_t *loop, loop_io_t *io, uint32_t revents)
{
    (void)loop;
    (void)revents;
    mhd_run(container_of(io, struct worker, mhd_io));
}

static void on_mhd_timer(loop_t *loop, loop_timer_t *t)
{
    (void)loop;
    mhd_run(container_of(t, struct worker, mhd_timer));
}

/* libmicrohttpd neither wakes its epoll fd on MHD_resume_connection nor
 * counts resumed connections in MHD_get_timeout (PERF-NOTES knob 4): run it
 * in the same iteration, once for every connection resumed in it. */
static void on_mhd_prepare(loop_t *loop, loop_hook_t *h)
{
    (void)loop;
    struct worker *w = container_of(h, struct worker, mhd_prepare);
    if (w->mhd_run_needed) mhd_run(w);
}

/* Keep the URL raw: routing works on the still-encoded path, so a %2F stays
 * inside its segment, and query values are forwarded as the client sent
 * them (re-encoded strictly by urlbuild). */
static size_t unescape_none(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

/* ---- requests ---- */

static const char *header_lookup(void *conn, const char *name)
{
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

/* Walking the request headers for fanout (gateway/fwdhdr.h).
 *
 * libmicrohttpd 0.9.75 ends a header value at a NUL byte and silently drops
 * the rest of the line ("X-Fwd: a\0b" arrives as "a"). It parses the header
 * block in place: the block starts with the method, is
 * MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE bytes long, and keeps every line
 * where it arrived, with the ':' and the line ends overwritten by NULs. So
 * between the end of a value and the next header's name there may only be
 * its line end (at most 2 bytes, "\r\n"; the last line also has the empty
 * line after it) and whitespace; any other byte, or a third NUL, is the rest
 * of a line that was cut. When the pointers are not laid out like that
 * (another libmicrohttpd), every value counts as cut: a forwarded header
 * then gets a 400, never a truncated value. */
struct hdr_walk {
    const char *start, *end; /* the header block */
    header_visit_fn visit;
    void *arg;
    const char *name, *value; /* the previous header, visited once its line end is known */
    size_t len;
    int rc;
};

/* Were bytes of the line dropped between the value's end and bound (the
 * next header's name, or the end of the block when last)? */
static bool line_cut(const struct hdr_walk *hw, const char *bound, bool last)
{
    const char *p = hw->value + hw->len;
    /* as integers: the pointers may not all point into the block */
    uintptr_t v = (uintptr_t)hw->value, e = (uintptr_t)hw->end, b = (uintptr_t)bound;
    if (!hw->start || !bound || v < (uintptr_t)hw->start || v + hw->len > b || b > e) return true;
    int nuls = 0;
    for (; p < bound; p++) {
        if (*p == '\0')
            nuls++;
        else if (*p != '\r' && *p != '\n' && *p != ' ' && *p != '\t')
            return true;
    }
    return nuls > (last ? 4 : 2);
}

static void walk_flush(struct hdr_walk *hw, const char *bound, bool last)
{
    if (!hw->name || hw->rc) return;
    hw->rc = hw->visit(hw->arg, hw->name, hw->value, hw->len, line_cut(hw, bound, last));
    hw->name = NULL;
}

static enum MHD_Result walk_one(void *cls, enum MHD_ValueKind kind, const char *key,
                                size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    (void)key_size;
    struct hdr_walk *hw = cls;
    walk_flush(hw, key, false);
    hw->name = key;
    hw->value = value ? value : "";
    hw->len = value ? value_size : 0;
    return hw->rc ? MHD_NO : MHD_YES;
}

static int header_each(struct request *r, header_visit_fn visit, void *arg)
{
    struct conn_state *cs = container_of(r, struct conn_state, req);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(cs->conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    struct hdr_walk hw = {.start = cs->block, .visit = visit, .arg = arg};
    hw.end = ci && cs->block ? cs->block + ci->header_size : NULL;
    MHD_get_connection_values_n(cs->conn, MHD_HEADER_KIND, walk_one, &hw);
    walk_flush(&hw, hw.end, true);
    return hw.rc;
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
    worker_maybe_stop(w);
}

static void json_answer(struct conn_state *cs, int status, const char *msg)
{
    cs->req.status = status;
    fanout_error_body(&cs->req.out, msg, NULL, cs->req.request_id);
    cs->state = RS_READY;
}

static enum MHD_Result append_query(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    (void)kind;
    buf_t *q = cls;
    if (q->len && buf_putc(q, '&')) return MHD_NO;
    if (buf_puts(q, key) || (value && (buf_putc(q, '=') || buf_puts(q, value)))) return MHD_NO;
    return MHD_YES;
}

/* Sums every worker's counters; runs on the worker that got the scrape,
 * reading the others' with relaxed atomics (pool counters likewise). */
static void render_metrics(struct gateway *gw, buf_t *out)
{
    struct metrics *per[gw->n_workers];
    struct metrics_pool_stat pools[2 * gw->n_workers];
    size_t np = 0;
    size_t n = 0;
    for (int i = 0; i < gw->n_workers; i++) {
        struct worker *w = gw->workers[i];
        /* A worker still starting has no pools yet; ready is released
         * after they are made. */
        if (!w || !atomic_load_explicit(&w->ready, memory_order_acquire)) continue;
        per[n++] = w->metrics;
        const pool_t *ps[2] = {w->buf_pool, w->up ? upstream_handle_pool(w->up) : NULL};
        for (int j = 0; j < 2; j++)
            if (ps[j])
                pools[np++] = (struct metrics_pool_stat){pool_name(ps[j]), pool_hits(ps[j]),
                                                         pool_misses(ps[j])};
    }
    struct metrics_globals g = {
        .pools = pools,
        .npools = np,
        .access_log_dropped = accesslog_dropped(gw->log),
        .reloads_ok = atomic_load_explicit(&gw->reloads_ok, memory_order_relaxed),
        .reloads_error = atomic_load_explicit(&gw->reloads_error, memory_order_relaxed),
        .spans_dropped = otel_dropped(gw->otel),
    };
    if (metrics_render(out, per, n, &g) != 0) buf_clear(out);
}

static void builtin(struct worker *w, struct conn_state *cs, const char *path)
{
    struct request *r = &cs->req;
    bool draining = atomic_load_explicit(&w->gw->draining, memory_order_relaxed);
    cs->state = RS_READY;
    if (strcmp(path, "/healthz") == 0) {
        r->status = 200;
        (void)buf_puts(&r->out, "{\"status\":\"ok\"}");
    } else if (strcmp(path, "/readyz") == 0) {
        r->status = draining ? 503 : 200;
        (void)buf_puts(&r->out, draining ? "{\"status\":\"draining\"}" : "{\"status\":\"ready\"}");
    } else {
        r->status = 200;
        cs->content_type = METRICS_CONTENT_TYPE;
        render_metrics(w->gw, &r->out);
    }
}

static bool is_builtin(const char *path)
{
    return strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0 ||
           strcmp(path, "/metrics") == 0;
}

/* First call for a request: headers are in. Route it and make its state;
 * nothing is queued yet (queueing in the first call makes libmicrohttpd
 * close the connection: PERF-NOTES knob 3). */
static struct conn_state *begin(struct worker *w, struct MHD_Connection *conn, const char *url,
                                const char *method)
{
    const struct config *cfg = av_acquire(&w->gw->config);
    struct route_match m;
    size_t path_len = strlen(url);
    int rc = is_builtin(url) ? 0 : router_match(cfg, method, url, path_len, &m);
    size_t n_calls = rc == 200 ? m.ep->n_backends : 0;
    struct conn_state *cs = calloc(1, sizeof *cs + n_calls * sizeof(struct backend_call));
    if (!cs) {
        av_release(&w->gw->config, (void *)cfg);
        return NULL;
    }
    struct request *r = &cs->req;
    cs->conn = conn;
    cs->content_type = "application/json";
    clock_gettime(CLOCK_REALTIME, &cs->arrived);
    snprintf(cs->method, sizeof cs->method, "%s", method);
    cs->path = strdup(url);
    metrics_inflight_add(w->metrics, 1);
    r->metrics = w->metrics;
    r->w = w;
    r->up = w->up;
    r->cfg = cfg;
    r->conn = conn;
    r->header = header_lookup;
    r->header_each = header_each;
    cs->block = method; /* in place: libmicrohttpd parsed the block where it arrived */
    r->start_ns = mono_ns();
    buf_init(&r->out, w->buf_pool);
    buf_init(&r->timing, NULL);
    buf_init(&r->degraded_names, NULL);
    buf_init(&r->body_in, NULL);
    buf_init(&r->query_in, NULL);
    r->buf_pool = w->buf_pool;
    r->degraded = w->gw->degraded;
    live_add(w, r);

    if (rc == 200) {
        r->ep = m.ep;
        r->match = m;
        r->n_calls = n_calls;
        for (size_t i = 0; i < n_calls; i++) {
            r->calls[i].req = r;
            r->calls[i].b = &m.ep->backends[i];
            buf_init(&r->calls[i].body, w->buf_pool);
            buf_init(&r->calls[i].key, NULL);
        }
    }
    int st =
        fanout_prepare(r, header_lookup(conn, "X-Request-Timeout-Ms"),
                       header_lookup(conn, "traceparent"), header_lookup(conn, "X-Request-Id"));
    if (atomic_load_explicit(&w->gw->draining, memory_order_relaxed) && !is_builtin(url)) {
        json_answer(cs, 503, "draining");
        return cs;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    const struct conn_watch *cw = ci ? ci->socket_context : NULL;
    if (cw && cw->over_limit) {
        cs->close = true;
        if (!is_builtin(url)) { /* probes still answer: an overload is not death */
            json_answer(cs, 503, "too many connections");
            return cs;
        }
    }
    if (is_builtin(url)) {
        cs->builtin = true;
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
            snprintf(cs->allow, sizeof cs->allow, "GET, HEAD");
            json_answer(cs, 405, "method not allowed");
        } else {
            builtin(w, cs, url);
        }
        return cs;
    }
    if (rc == 404) {
        json_answer(cs, 404, "not found");
        return cs;
    }
    if (rc == 405) {
        snprintf(cs->allow, sizeof cs->allow, "%s", m.allow);
        json_answer(cs, 405, "method not allowed");
        return cs;
    }
    if (rc != 200) {
        json_answer(cs, 400, "bad request path");
        return cs;
    }
    if (st) {
        r->status = st;
        cs->state = RS_READY;
        return cs;
    }
    if (r->ep->auth != AUTH_NONE && /* JWT: 401 before any backend call */
        (st = auth_request(r, &w->gw->jwks, header_lookup(conn, "Authorization")))) {
        r->status = st;
        cs->state = RS_READY;
        return cs;
    }
    if (r->ep->n_forward_query) {
        MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, append_query, &r->query_in);
        r->query = r->query_in.data;
        r->query_len = r->query_in.len;
    }
    st = fanout_check(r); /* params, forwarded headers and query: 400/414 before any call */
    if (st) {
        r->status = st;
        cs->state = RS_READY;
        return cs;
    }
    cs->state = RS_FANOUT;
    return cs;
}

static void client_gone(struct conn_state *cs)
{
    cs->hung_up = true;
    ctx_cancel(cs->req.ctx, CAUSE_CLIENT_GONE);
}

static void on_client_event(loop_t *loop, loop_io_t *io, uint32_t revents)
{
    (void)loop;
    (void)revents;
    struct conn_watch *cw = container_of(io, struct conn_watch, io);
    cw->peer_closed = true;
    if (cw->active) {
        struct conn_state *cs = cw->active;
        cw->active = NULL;
        client_gone(cs);
    }
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    (void)conn;
    struct worker *w = cls;
    struct conn_watch *cw = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        cw = calloc(1, sizeof *cw);
        *socket_context = cw;
        unsigned n = atomic_fetch_add_explicit(&w->gw->connections, 1, memory_order_relaxed);
        if (cw) cw->over_limit = n >= w->max_connections;
        return;
    }
    atomic_fetch_sub_explicit(&w->gw->connections, 1, memory_order_relaxed);
    if (!cw) return;
    if (cw->registered) loop_io_stop(w->loop, &cw->io);
    free(cw);
    *socket_context = NULL;
}

/* Watches the client's fd while its request is suspended. */
static void watch_client(struct worker *w, struct conn_state *cs)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(cs->conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct conn_watch *cw = ci ? ci->socket_context : NULL;
    if (!cw) return;
    if (!cw->registered) {
        ci = MHD_get_connection_info(cs->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci || loop_io_start(w->loop, &cw->io, ci->connect_fd, EPOLLRDHUP | EPOLLET,
                                 on_client_event) < 0)
            return;
        cw->registered = true;
    }
    if (cw->peer_closed) { /* hung up before we looked */
        client_gone(cs);
        return;
    }
    cw->active = cs;
    cs->watch = cw;
}

static void start_fanout(struct worker *w, struct conn_state *cs)
{
    struct request *r = &cs->req;
    cs->state = RS_RUNNING;
    if (!loop_spawn(w->loop, fanout_run, r)) {
        json_answer(cs, 503, "overloaded: no coroutine available");
        return;
    }
    MHD_suspend_connection(cs->conn);
    watch_client(w, cs);
}

void server_request_done(struct request *r)
{
    struct conn_state *cs = state_of(r);
    struct worker *w = r->w;
    if (cs->watch) {
        cs->watch->active = NULL;
        cs->watch = NULL;
    }
    if (cs->state != RS_RUNNING) /* spawn failed path answered already */
        return;
    cs->state = RS_DONE;
    MHD_resume_connection(cs->conn);
    w->mhd_run_needed = true;
}

static void add_header(struct MHD_Response *resp, const char *name, const char *value)
{
    if (value && *value) MHD_add_response_header(resp, name, value);
}

static enum MHD_Result queue_answer(struct worker *w, struct conn_state *cs)
{
    struct request *r = &cs->req;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(r->out.len, r->out.data, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    char tp[TRACEPARENT_LEN + 1];
    trace_format(&r->trace, tp);
    add_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, cs->content_type);
    add_header(resp, "X-Request-Id", r->request_id);
    add_header(resp, "traceparent", tp);
    if (r->n_calls) add_header(resp, "Server-Timing", r->timing.data);
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

struct cl_check {
    const char *first;
    bool differ;
};

static enum MHD_Result check_cl(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    (void)kind;
    struct cl_check *c = cls;
    if (strcasecmp(key, "Content-Length") == 0 && value && strcmp(value, c->first) != 0)
        c->differ = true;
    return MHD_YES;
}

/* True when every Content-Length header says the same as the first. */
static bool content_length_single(struct MHD_Connection *conn, const char *first)
{
    struct cl_check c = {first, false};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, check_cl, &c);
    return !c.differ;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    struct worker *w = cls;
    struct conn_state *cs = *con_cls;
    if (!cs) {
        cs = begin(w, conn, url, method);
        *con_cls = cs;
        if (!cs) return MHD_NO;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && cs->state == RS_FANOUT && !content_length_single(conn, cl)) {
            /* RFC 9112 6.3: differing lengths are a 400 (and a smuggling
             * risk behind another proxy); libmicrohttpd takes the first. */
            cs->close = true;
            json_answer(cs, 400, "conflicting Content-Length headers");
            return queue_answer(w, cs);
        }
        if (cl && cs->state == RS_FANOUT &&
            strtoull(cl, NULL, 10) > cs->req.cfg->server.max_request_body_bytes) {
            /* Refuse before reading the body; queueing in this first call
             * makes libmicrohttpd close the connection, as it should. */
            cs->too_large = true;
            json_answer(cs, 413, "request body too large");
            return queue_answer(w, cs);
        }
        return MHD_YES;
    }
    struct request *r = &cs->req;
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (cs->state != RS_FANOUT) return MHD_YES; /* answer known already: discard the body */
        if (r->body_in.len + n > r->cfg->server.max_request_body_bytes) {
            cs->too_large = true; /* chunked, no Content-Length: answered at the end */
            json_answer(cs, 413, "request body too large");
        } else if (buf_append(&r->body_in, upload, n)) {
            cs->close = true;
            json_answer(cs, 503, "out of memory");
        }
        return MHD_YES;
    }
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

/* A request is over (answered, or its client gone): metrics and the
 * access-log record. */
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
    const char *names[r->n_calls + 1];
    size_t nd = 0;
    for (size_t i = 0; i < r->n_calls; i++)
        if (r->calls[i].outcome >= OUT_DEGRADED) names[nd++] = r->calls[i].b->name;
    char trace_id[2 * TRACE_ID_BYTES + 1];
    trace_hex(r->trace.trace_id, TRACE_ID_BYTES, trace_id);
    accesslog_record(w->gw->log, &(struct access_record){
                                     .ts = cs->arrived,
                                     .method = cs->method,
                                     .path = cs->path,
                                     .endpoint = ep,
                                     .status = status,
                                     .duration_ms = ms,
                                     .request_id = r->request_id,
                                     .trace_id = trace_id,
                                     .degraded = names,
                                     .ndegraded = nd,
                                 });
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    struct worker *w = cls;
    struct conn_state *cs = *con_cls;
    if (!cs) return;
    *con_cls = NULL;
    struct request *r = &cs->req;
    finish_request(w, cs, toe);
    fanout_cleanup(r);
    av_release(&w->gw->config, (void *)r->cfg);
    live_remove(w, r);
    free(cs->path);
    free(cs);
}

int http_listen(struct worker *w, const struct config *cfg)
{
    const struct server_conf *s = &cfg->server;
    struct sockaddr_storage ss;
    socklen_t len;
    if (server_sockaddr(s, &ss, &len) != 0) return -EINVAL;
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    /* server.max_connections is per process and counted by on_connection,
     * which answers 503 beyond it; libmicrohttpd's own per-daemon limit only
     * backs that up (beyond it connections are refused without an answer). */
    w->max_connections = s->max_connections;
    unsigned per_worker = s->max_connections + 256;
    w->mhd = MHD_start_daemon(
        flags, s->port, NULL, NULL, on_request, w, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_UNESCAPE_CALLBACK,
        unescape_none, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, w,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->connection_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, w, MHD_OPTION_CONNECTION_LIMIT, per_worker, MHD_OPTION_LISTEN_BACKLOG_SIZE,
        1024u, MHD_OPTION_END);
    if (!w->mhd) {
        fprintf(stderr, "gateway: cannot listen on %s (address in use or not allowed)\n",
                s->listen);
        return -EADDRINUSE;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(w->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di || loop_io_start(w->loop, &w->mhd_io, di->epoll_fd, EPOLLIN, on_mhd_io) < 0)
        return -EIO;
    loop_timer_init(&w->mhd_timer, on_mhd_timer);
    loop_hook_add(w->loop, &w->mhd_prepare, on_mhd_prepare);
    mhd_run(w);
    return 0;
}

void http_stop_accepting(struct worker *w)
{
    MHD_socket ls = MHD_quiesce_daemon(w->mhd);
    if (ls != MHD_INVALID_SOCKET) close(ls);
}

void http_close(struct worker *w)
{
    if (!w->mhd) return;
    loop_io_stop(w->loop, &w->mhd_io);
    loop_timer_stop(w->loop, &w->mhd_timer);
    loop_hook_remove(w->loop, &w->mhd_prepare);
    MHD_stop_daemon(w->mhd);
    w->mhd = NULL;
}

void http_cancel_running(struct worker *w)
{
    for (struct request *r = w->live; r; r = r->next)
        if (r->ctx && state_of(r)->state == RS_RUNNING) ctx_cancel(r->ctx, CAUSE_SHUTDOWN);
}
