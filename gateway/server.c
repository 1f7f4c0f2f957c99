/*
 * server: the HTTP side of a request (server.h): libmicrohttpd on the
 * worker's loop, request setup and routing, the built-in endpoints, header
 * and body deadlines, suspend/resume around the fan-out, and the access-log
 * record. Everything here runs on the worker's thread.
 */
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
#include "gateway/expose.h"
#include "gateway/auth.h"
#include "gateway/cors.h"
#include "gateway/degraded.h"
#include "gateway/fanout.h"
#include "gateway/framing.h"
#include "gateway/gzip.h"
#include "gateway/metrics.h"
#include "gateway/otel.h"
#include "gateway/router.h"
#include "gateway/tls.h"
#include "gateway/upstream.h"

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
    /* Header (then body) deadline: armed when the connection opens and
     * after each answer, stopped when the headers are in; re-armed for the
     * body (see arm_body_deadline). On expiry: 408 and close. */
    loop_timer_t deadline;
    struct worker *w;
    int fd;
    struct conn_state *reading; /* the request whose body is being read */
    bool request_started;       /* its request line is in (on_uri) */
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
 * counts resumed connections in MHD_get_timeout (docs/perf.md K4): run it
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
    pthread_mutex_lock(&gw->scrape_lock);
    for (int i = 0; i < gw->n_workers; i++) {
        struct worker *w = gw->workers[i];
        /* A worker still starting has no pools yet; ready is released
         * after they are made. One that stops turns unready under
         * scrape_lock before it frees them. */
        if (!w || !atomic_load_explicit(&w->ready, memory_order_acquire)) continue;
        per[n++] = w->metrics;
        const pool_t *ps[2] = {w->buf_pool, w->up ? upstream_handle_pool(w->up) : NULL};
        for (int j = 0; j < 2; j++)
            if (ps[j])
                pools[np++] = (struct metrics_pool_stat){pool_name(ps[j]), pool_hits(ps[j]),
                                                         pool_misses(ps[j])};
    }
    pthread_mutex_unlock(&gw->scrape_lock);
    size_t store_entries = 0, store_bytes = 0;
    if (gw->degraded) degraded_stats(gw->degraded, &store_entries, &store_bytes);
    struct metrics_globals g = {
        .store_entries = store_entries,
        .store_bytes = store_bytes,
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
    const char *want = header_lookup(cs->conn, "Access-Control-Request-Method");
    struct route_match pm;
    if (!want || route(cfg, want, url, &pm) != 200 || !pm.ep->cors) return false;
    cs->preflight = pm.ep->cors;
    cs->preflight_methods = strdup(allow ? allow : want);
    cs->req.status = 204;
    cs->state = RS_READY;
    return true;
}

static void request_done(struct request *r);

/* First call for a request: headers are in. Check its framing, route it and
 * make its state. */
static struct conn_state *begin(struct worker *w, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version)
{
    const struct config *cfg = av_acquire(&w->gw->config);
    struct route_match m;
    int rc = is_builtin(url) ? 0 : route(cfg, method, url, &m);
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
    r->done = request_done;
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
    r->cache = w->cache;
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
    const char *why;
    int bad =
        framing_check(conn, version, cfg->server.max_header_bytes, w->conn_memory, &cs->body, &why);
    if (bad) {
        cs->close = true;
        json_answer(cs, bad, why);
        return cs;
    }
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
    if (preflight(cfg, cs, method, url, rc == 405 ? m.allow : NULL)) return cs;
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

static struct conn_watch *watch_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* ---- header and body deadlines (server.header_timeout_ms) ---- */

static uint32_t header_timeout_ms(struct worker *w)
{
    const struct config *cfg = av_acquire(&w->gw->config);
    uint32_t ms = cfg->server.header_timeout_ms;
    av_release(&w->gw->config, (void *)cfg);
    return ms;
}

/* The whole header block must arrive within header_timeout_ms of the
 * connection opening or of the previous answer (so a byte every few seconds
 * cannot hold a connection, and a kept-alive connection idles at most that
 * long between requests). */
static void arm_header_deadline(struct conn_watch *cw)
{
    if (!cw) return;
    cw->reading = NULL;
    cw->request_started = false;
    loop_timer_start(cw->w->loop, &cw->deadline,
                     loop_now(cw->w->loop) + (uint64_t)header_timeout_ms(cw->w) * 1000000ull);
}

/* The minimum body rate: a body must be in within header_timeout_ms of its
 * headers plus one second per KiB (its Content-Length, or for a chunked
 * body what has arrived so far): 1 KiB/s on average after that grace. */
static void arm_body_deadline(struct conn_watch *cw, struct conn_state *cs)
{
    uint64_t bytes = cs->body.has_length ? cs->body.content_length : cs->body_received;
    uint64_t ms = cs->req.cfg->server.header_timeout_ms + bytes * 1000 / 1024;
    cw->reading = cs;
    loop_timer_start(cw->w->loop, &cw->deadline, cs->body_started + ms * 1000000ull);
}

static void stop_deadline(struct conn_watch *cw)
{
    if (!cw) return;
    cw->reading = NULL;
    loop_timer_stop(cw->w->loop, &cw->deadline);
}

/* The deadline passed while libmicrohttpd reads headers or a body: nothing
 * was written on this request yet, so we answer 408 on the socket
 * ourselves (libmicrohttpd cannot queue an answer before the request is
 * in) and shut the socket down; libmicrohttpd then reads EOF and closes
 * the connection (the request, if it began, ends logged as 408). A
 * kept-alive connection on which no request line arrived is closed without
 * an answer: a client that sends its next request just then would take an
 * unsolicited 408 for its answer, while a plain close lets it retry. */
static void on_deadline(loop_t *loop, loop_timer_t *t)
{
    (void)loop;
    static const char answer[] =
        "HTTP/1.1 408 Request Timeout\r\n"
        "Content-Type: application/json\r\n"
        "Connection: close\r\n"
        "Content-Length: 62\r\n\r\n"
        "{\"error\":\"request timeout\",\"backend\":null,\"request_id\":null}";
    struct conn_watch *cw = container_of(t, struct conn_watch, deadline);
    cw->w->mhd_run_needed = true;
    if (cw->reading) { /* logged as 408, not as a hang-up */
        cw->reading->req.status = 408;
        cw->reading = NULL;
    } else if (!cw->request_started) {
        shutdown(cw->fd, SHUT_RDWR);
        return;
    }
    if (cw->w->tls) { /* the 408 cannot go in clear text into a TLS stream */
        shutdown(cw->fd, SHUT_RDWR);
        return;
    }
    char sink[4096]; /* unread input would turn the close into a reset */
    while (recv(cw->fd, sink, sizeof sink, MSG_DONTWAIT) > 0)
        continue;
    ssize_t n = send(cw->fd, answer, sizeof answer - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n; /* a client that does not read gets the close alone */
    shutdown(cw->fd, SHUT_RDWR);
}

/* libmicrohttpd has a request line: a request began on this connection.
 * Returns the request's initial context: none (begin() makes it). */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)uri;
    struct conn_watch *cw = watch_of(conn);
    if (cw) cw->request_started = true;
    return NULL;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct worker *w = cls;
    struct conn_watch *cw = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        cw = calloc(1, sizeof *cw);
        *socket_context = cw;
        unsigned n = atomic_fetch_add_explicit(&w->gw->connections, 1, memory_order_relaxed);
        w->n_conns++;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!cw) return;
        cw->over_limit = n >= w->max_connections;
        cw->w = w;
        cw->fd = ci ? ci->connect_fd : -1;
        loop_timer_init(&cw->deadline, on_deadline);
        if (cw->fd >= 0) arm_header_deadline(cw);
        return;
    }
    atomic_fetch_sub_explicit(&w->gw->connections, 1, memory_order_relaxed);
    w->n_conns--;
    if (cw) {
        if (cw->registered) loop_io_stop(w->loop, &cw->io);
        loop_timer_stop(w->loop, &cw->deadline);
        free(cw);
        *socket_context = NULL;
    }
    worker_maybe_stop(w);
}

/* Watches the client's fd while its request is suspended. */
static void watch_client(struct worker *w, struct conn_state *cs)
{
    struct conn_watch *cw = watch_of(cs->conn);
    if (!cw) return;
    if (!cw->registered) {
        if (loop_io_start(w->loop, &cw->io, cw->fd, EPOLLRDHUP | EPOLLET, on_client_event) < 0)
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

/* r->done: the answer is ready (or the client is gone). */
static void request_done(struct request *r)
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
        gzip_accepts(header_lookup(cs->conn, MHD_HTTP_HEADER_ACCEPT_ENCODING)) &&
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
        cors_headers(resp, cors, header_lookup(cs->conn, "Origin"), cs->preflight_methods);
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
    struct conn_watch *cw = watch_of(cs->conn);
    stop_deadline(cw);
    if (cs->state == RS_FANOUT && cs->body.has_length &&
        cs->body.content_length > cs->req.cfg->server.max_request_body_bytes) {
        cs->too_large = true;
        json_answer(cs, 413, "request body too large");
    }
    if (cs->state == RS_READY && (cs->close || cs->too_large || expects_body(cs))) {
        cs->close = true;
        return queue_answer(w, cs);
    }
    if (cs->state == RS_FANOUT && expects_body(cs) && cw) {
        cs->body_started = loop_now(w->loop);
        arm_body_deadline(cw, cs);
    }
    return MHD_YES;
}

/* A piece of the body arrived. */
static void take_upload(struct conn_state *cs, const char *upload, size_t n)
{
    struct request *r = &cs->req;
    cs->body_received += n;
    if (cs->body.chunked) { /* the allowance grows with what arrived */
        struct conn_watch *cw = watch_of(cs->conn);
        if (cw && cw->reading == cs) arm_body_deadline(cw, cs);
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
    stop_deadline(watch_of(conn)); /* the body is in (or there was none) */
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
    /* A client that hung up (or half-closed: RFC 9112 9.6 allows it, but we
     * cannot tell it from a hang-up, so it is one) is a 499, and the
     * backends whose calls it cancelled are not named as degraded. */
    for (size_t i = 0; i < r->n_calls && !cs->hung_up; i++)
        if (r->calls[i].outcome >= OUT_DEGRADED) names[nd++] = r->calls[i].b->name;
    const char *cnames[r->n_calls + 1], *cres[r->n_calls + 1];
    size_t nc = 0;
    for (size_t i = 0; i < r->n_calls; i++)
        if (r->calls[i].cache != CACHE_NONE) {
            cnames[nc] = r->calls[i].b->name;
            cres[nc++] = cache_result_name(r->calls[i].cache);
        }
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
                                     .cache_backends = cnames,
                                     .cache_results = cres,
                                     .ncache = nc,
                                 });
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct worker *w = cls;
    struct conn_state *cs = *con_cls;
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) arm_header_deadline(watch_of(conn));
    if (!cs) return;
    *con_cls = NULL;
    struct request *r = &cs->req;
    finish_request(w, cs, toe);
    fanout_cleanup(r);
    av_release(&w->gw->config, (void *)r->cfg);
    live_remove(w, r);
    free(cs->path);
    free(cs->preflight_methods);
    free(cs);
}

/* As in http_listen, plus libmicrohttpd's TLS: the certificate comes from
 * tls.c's callback (reloadable), TLS 1.2 and 1.3 only. */
static struct MHD_Daemon *start_tls_daemon(struct worker *w, unsigned flags,
                                           const struct server_conf *s)
{
    unsigned per_worker = s->max_connections + 256;
    return MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, w, MHD_OPTION_UNESCAPE_CALLBACK, unescape_none, NULL,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, w, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)s->connection_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, w->conn_memory,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, w, MHD_OPTION_URI_LOG_CALLBACK, on_uri, w,
        MHD_OPTION_CONNECTION_LIMIT, per_worker, MHD_OPTION_HTTPS_PRIORITIES, TLS_PRIORITIES,
        MHD_OPTION_HTTPS_CERT_CALLBACK, tls_cert_callback(), MHD_OPTION_END);
}

int http_listen(struct worker *w, const struct config *cfg)
{
    const struct server_conf *s = &cfg->server;
    /* Connections come from listener.c (MHD_add_connection). */
    unsigned flags =
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET;
    /* server.max_connections is per process and counted by on_connection,
     * which answers 503 beyond it; libmicrohttpd's own per-daemon limit only
     * backs that up (beyond it connections are refused without an answer). */
    w->max_connections = s->max_connections;
    unsigned per_worker = s->max_connections + 256;
    w->max_pending = per_worker;
    w->listen_fd = -1;
    w->conn_memory = framing_conn_memory(s->max_header_bytes);
    w->tls = s->tls_cert != NULL;
    if (w->tls) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            fprintf(stderr, "gateway: server.tls: libmicrohttpd was built without TLS\n");
            return -ENOTSUP;
        }
        flags |= MHD_USE_TLS;
    }
    w->mhd = w->tls ? start_tls_daemon(w, flags, s) : MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, w, MHD_OPTION_UNESCAPE_CALLBACK, unescape_none, NULL,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, w, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)s->connection_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, w->conn_memory,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, w, MHD_OPTION_URI_LOG_CALLBACK, on_uri, w,
        MHD_OPTION_CONNECTION_LIMIT, per_worker, MHD_OPTION_END);
    if (!w->mhd) {
        fprintf(stderr, "gateway: cannot start the HTTP server for %s\n", s->listen);
        return -EIO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(w->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di || loop_io_start(w->loop, &w->mhd_io, di->epoll_fd, EPOLLIN, on_mhd_io) < 0)
        return -EIO;
    loop_timer_init(&w->mhd_timer, on_mhd_timer);
    loop_hook_add(w->loop, &w->mhd_prepare, on_mhd_prepare);
    int rc = listener_open(w, s);
    if (rc) return rc;
    mhd_run(w);
    return 0;
}

void http_stop_accepting(struct worker *w)
{
    listener_stop_accepting(w);
}

void http_close(struct worker *w)
{
    if (!w->mhd) return;
    listener_close(w);
    loop_io_stop(w->loop, &w->mhd_io);
    loop_timer_stop(w->loop, &w->mhd_timer);
    loop_hook_remove(w->loop, &w->mhd_prepare);
    MHD_stop_daemon(w->mhd);
    w->mhd = NULL;
    gzip_thread_free();
}

void http_cancel_running(struct worker *w)
{
    for (struct request *r = w->live; r; r = r->next)
        if (r->ctx && state_of(r)->state == RS_RUNNING) ctx_cancel(r->ctx, CAUSE_SHUTDOWN);
}
