/*
 * http: libmicrohttpd on the worker's loop (see http.h): the daemon driven
 * from the loop, suspend and resume, each connection's watch (hang-up of a
 * suspended request, header and body deadlines, the connection limit) and
 * the request header access.
 *
 * Invariants: a connection's watch lives from libmicrohttpd's
 * NOTIFY_STARTED to its close; its fd is registered for hang-ups at most
 * once (edge-triggered, not per request); at most one request per
 * connection is watched or has its body deadline armed. Nothing here knows
 * a route or a backend: the access handlers (w->handler) do.
 */
#include "gateway/http.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "gateway/framing.h"
#include "gateway/gzip.h"
#include "gateway/tls.h"

#include "core/container_of.h"

/* Per client connection: libmicrohttpd does not watch a suspended
 * connection, so we do. The fd is registered edge-triggered for hang-ups
 * once per connection (not per request: no epoll_ctl on the request path)
 * and unregistered when libmicrohttpd closes it. */
struct conn_watch {
    loop_io_t io;
    void (*gone)(void *arg); /* called on a hang-up while active */
    void *active;            /* gone's argument: the request suspended on it, or NULL */
    bool registered;
    bool peer_closed;
    bool over_limit; /* beyond server.max_connections: answer 503, close */
    /* Header (then body) deadline: armed when the connection opens and
     * after each answer, stopped when the headers are in; re-armed for the
     * body (see arm_body_deadline). On expiry: 408 and close. */
    loop_timer_t deadline;
    struct worker *w;
    int fd;
    int *reading;         /* the status of the request whose body is being read */
    bool request_started; /* its request line is in (on_uri) */
};

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

/* ---- request headers ---- */

const char *http_header(void *conn, const char *name)
{
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

/* Walking the request headers for the forwarded ones (gateway/fwdhdr.h).
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
    http_header_visit_fn visit;
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

int http_header_each(struct MHD_Connection *conn, const char *block, http_header_visit_fn visit,
                     void *arg)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    struct hdr_walk hw = {.start = block, .visit = visit, .arg = arg};
    hw.end = ci && block ? block + ci->header_size : NULL;
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, walk_one, &hw);
    walk_flush(&hw, hw.end, true);
    return hw.rc;
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

void http_query(struct MHD_Connection *conn, buf_t *q)
{
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, append_query, q);
}

/* ---- the hang-up watch ---- */

static void on_client_event(loop_t *loop, loop_io_t *io, uint32_t revents)
{
    (void)loop;
    (void)revents;
    struct conn_watch *cw = container_of(io, struct conn_watch, io);
    cw->peer_closed = true;
    if (cw->active) {
        void *arg = cw->active;
        cw->active = NULL;
        cw->gone(arg);
    }
}

static struct conn_watch *watch_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

bool http_over_limit(struct MHD_Connection *conn)
{
    const struct conn_watch *cw = watch_of(conn);
    return cw && cw->over_limit;
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

/* The body deadline (request.c computes it: arm_body_deadline). */
void http_arm_body_deadline(struct MHD_Connection *conn, uint64_t at_ns, int *status)
{
    struct conn_watch *cw = watch_of(conn);
    if (!cw) return;
    cw->reading = status;
    loop_timer_start(cw->w->loop, &cw->deadline, at_ns);
}

bool http_body_deadline_armed(struct MHD_Connection *conn, const int *status)
{
    const struct conn_watch *cw = watch_of(conn);
    return cw && cw->reading == status;
}

static void stop_deadline(struct conn_watch *cw)
{
    if (!cw) return;
    cw->reading = NULL;
    loop_timer_stop(cw->w->loop, &cw->deadline);
}

void http_stop_deadline(struct MHD_Connection *conn)
{
    stop_deadline(watch_of(conn));
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
        *cw->reading = 408;
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
 * Returns the request's initial context: none (the access handler makes it). */
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
}

/* Watches the client's fd while its request is suspended. */
static void watch_client(struct worker *w, struct MHD_Connection *conn, void (*gone)(void *arg),
                         void *arg)
{
    struct conn_watch *cw = watch_of(conn);
    if (!cw) return;
    if (!cw->registered) {
        if (loop_io_start(w->loop, &cw->io, cw->fd, EPOLLRDHUP | EPOLLET, on_client_event) < 0)
            return;
        cw->registered = true;
    }
    if (cw->peer_closed) { /* hung up before we looked */
        gone(arg);
        return;
    }
    cw->gone = gone;
    cw->active = arg;
}

void http_suspend(struct worker *w, struct MHD_Connection *conn, void (*gone)(void *arg),
                  void *arg)
{
    MHD_suspend_connection(conn);
    watch_client(w, conn, gone, arg);
}

void http_unwatch(struct MHD_Connection *conn)
{
    struct conn_watch *cw = watch_of(conn);
    if (cw) cw->active = NULL;
}

void http_resume(struct worker *w, struct MHD_Connection *conn)
{
    MHD_resume_connection(conn);
    w->mhd_run_needed = true;
}

/* The request is over: the next one's header deadline starts now. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct worker *w = cls;
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) arm_header_deadline(watch_of(conn));
    w->handler->completed(cls, conn, con_cls, toe);
}

/* As in http_listen, plus libmicrohttpd's TLS: the certificate comes from
 * tls.c's callback (reloadable), TLS 1.2 and 1.3 only. */
static struct MHD_Daemon *start_tls_daemon(struct worker *w, unsigned flags,
                                           const struct server_conf *s)
{
    unsigned per_worker = s->max_connections + 256;
    return MHD_start_daemon(
        flags, 0, NULL, NULL, w->handler->access, w, MHD_OPTION_UNESCAPE_CALLBACK, unescape_none,
        NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, w, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)s->connection_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, w->conn_memory,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, w, MHD_OPTION_URI_LOG_CALLBACK, on_uri, w,
        MHD_OPTION_CONNECTION_LIMIT, per_worker, MHD_OPTION_HTTPS_PRIORITIES, TLS_PRIORITIES,
        MHD_OPTION_HTTPS_CERT_CALLBACK, tls_cert_callback(), MHD_OPTION_END);
}

int http_listen(struct worker *w, const struct config *cfg, const struct http_handler *h)
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
    w->handler = h;
    if (w->tls) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            fprintf(stderr, "gateway: server.tls: libmicrohttpd was built without TLS\n");
            return -ENOTSUP;
        }
        flags |= MHD_USE_TLS;
    }
    w->mhd = w->tls ? start_tls_daemon(w, flags, s) : MHD_start_daemon(
        flags, 0, NULL, NULL, w->handler->access, w, MHD_OPTION_UNESCAPE_CALLBACK, unescape_none,
        NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, w, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)s->connection_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, w->conn_memory,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, w, MHD_OPTION_URI_LOG_CALLBACK, on_uri, w,
        MHD_OPTION_CONNECTION_LIMIT, per_worker, MHD_OPTION_END);
    if (!w->mhd) { /* libmicrohttpd printed why (MHD_USE_ERROR_LOG) */
        fprintf(stderr, "gateway: worker %d: libmicrohttpd could not start its daemon for %s%s\n",
                w->id, s->listen, w->tls ? " (TLS)" : "");
        return -EIO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(w->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di) {
        fprintf(stderr, "gateway: worker %d: libmicrohttpd gave no epoll fd\n", w->id);
        return -EIO;
    }
    int rc = loop_io_start(w->loop, &w->mhd_io, di->epoll_fd, EPOLLIN, on_mhd_io);
    if (rc < 0) {
        fprintf(stderr, "gateway: worker %d: cannot watch libmicrohttpd's epoll fd: %s\n", w->id,
                strerror(-rc));
        return rc;
    }
    loop_timer_init(&w->mhd_timer, on_mhd_timer);
    loop_hook_add(w->loop, &w->mhd_prepare, on_mhd_prepare);
    rc = listener_open(w, s);
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
