/*
 * listener: a worker's listening socket and the first look at each new
 * connection before libmicrohttpd gets it.
 *
 * Why not let libmicrohttpd accept: 0.9.75 parses Content-Length itself
 * before the access handler runs, and when the value is not a plain number
 * ("5, 5", "+5", over 2^64) it answers 400/413 from inside
 * parse_connection_headers (transmit_error_response builds the header and
 * sets HEADERS_SENDING), after which MHD_connection_handle_idle overwrites
 * the state with HEADERS_PROCESSED; the request then runs through
 * FULL_REQ_RECEIVED and START_REPLY and build_header_response appends the
 * status line and headers a second time. Nothing of ours runs in between.
 * So we accept ourselves, peek (MSG_PEEK: nothing is consumed) at the
 * first request's header block, check its raw lines (httpcheck_raw), and
 * only a request that passes is handed to libmicrohttpd
 * (MHD_add_connection, which reads the same bytes again). A refused
 * request gets one answer and Connection: close from here; so does a
 * header block that is not complete within server.header_timeout_ms (408)
 * or grows over server.max_header_bytes (431).
 *
 * With server.tls the bytes are encrypted: a connection goes to
 * libmicrohttpd (which does the handshake) at once, and every request on
 * it, the first too, is checked by the access handler only, as later
 * requests are below (http.c's header deadline covers the handshake).
 *
 * Later requests on a kept-alive connection are read by libmicrohttpd
 * directly: the access handler checks them (request.c) and only the few
 * Content-Length values libmicrohttpd cannot parse still get its doubled
 * answer there (the connection is closed either way; nothing runs).
 *
 * Everything here runs on the worker's thread.
 */
#include "gateway/http.h"

#include <arpa/inet.h>

#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/container_of.h"
#include "gateway/accesslog.h"
#include "gateway/httpcheck.h"
#include "gateway/metrics.h"

/* Accepts per wake-up, so one busy listener cannot starve the loop. */
#define ACCEPT_BATCH 64
/* After a refusal, how long the client gets to read it before we close
 * (its unread request is discarded meanwhile, so the close is not a reset). */
#define LINGER_NS 2000000000ull

/* A connection between accept and libmicrohttpd. */
struct pending {
    loop_io_t io;
    loop_timer_t timer; /* header deadline, then the linger */
    struct worker *w;
    int fd;
    bool answered;  /* refused: discarding input until EOF or the linger ends */
    bool got_bytes; /* some of its request arrived */
    uint64_t header_deadline;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    struct timespec arrived;
    uint64_t start_ns;
    struct pending *prev, *next;
};

static void pending_free(struct pending *p)
{
    struct worker *w = p->w;
    loop_io_stop(w->loop, &p->io);
    loop_timer_stop(w->loop, &p->timer);
    if (p->prev)
        p->prev->next = p->next;
    else
        w->pending = p->next;
    if (p->next) p->next->prev = p->prev;
    w->n_conns--;
    free(p);
}

/* Unregisters before closing: once closed, the fd number may already be
 * another worker's new connection. */
static void pending_close(struct pending *p)
{
    int fd = p->fd;
    pending_free(p);
    close(fd);
}

/* The access-log record and metrics of a request refused here. */
static void record(struct pending *p, int status, const char *method, const char *target)
{
    struct worker *w = p->w;
    double ms = (double)(loop_now(w->loop) - p->start_ns) / 1e6;
    metrics_request(w->metrics, NULL, status, ms / 1e3);
    if (!w->gw->log) return;
    accesslog_record(w->gw->log, &(struct access_record){
                                     .ts = p->arrived,
                                     .method = method && *method ? method : NULL,
                                     .path = target && *target ? target : NULL,
                                     .status = status,
                                     .duration_ms = ms,
                                 });
}

static const char *reason(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 408:
        return "Request Timeout";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
    default:
        return "Service Unavailable";
    }
}

/* Answers status once, with Connection: close, then lingers: reads and
 * drops what the client still sends until it closes or LINGER_NS pass. */
static void refuse(struct pending *p, int status, const char *why, const char *method,
                   const char *target)
{
    char body[160], head[512];
    int bl =
        snprintf(body, sizeof body, "{\"error\":\"%s\",\"backend\":null,\"request_id\":null}", why);
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nConnection: close\r\n"
                      "Content-Length: %d\r\n\r\n%s",
                      status, reason(status), bl, body);
    ssize_t n = send(p->fd, head, (size_t)hl, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n; /* a fresh socket's buffer takes it; else the client gets the close */
    shutdown(p->fd, SHUT_WR);
    record(p, status, method, target);
    p->answered = true;
    loop_timer_start(p->w->loop, &p->timer, loop_now(p->w->loop) + LINGER_NS);
}

static void hand_over(struct pending *p)
{
    struct worker *w = p->w;
    int fd = p->fd;
    struct sockaddr_storage addr = p->addr;
    socklen_t len = p->addr_len;
    w->n_conns++; /* held across the hand-over, so a draining worker never sees 0 in between */
    pending_free(p);
    /* On failure libmicrohttpd closes fd itself (its connection limit). */
    MHD_add_connection(w->mhd, fd, (struct sockaddr *)&addr, len);
    w->mhd_run_needed = true;
    w->n_conns--;
}

static void drain_input(struct pending *p)
{
    char sink[4096];
    ssize_t n;
    while ((n = recv(p->fd, sink, sizeof sink, MSG_DONTWAIT)) > 0)
        continue;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) pending_close(p);
}

static void on_pending_io(loop_t *loop, loop_io_t *io, uint32_t revents)
{
    (void)loop;
    struct pending *p = container_of(io, struct pending, io);
    struct worker *w = p->w;
    if (p->answered) {
        drain_input(p);
        return;
    }
    ssize_t n = recv(p->fd, w->peek, w->peek_cap, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        pending_close(p); /* gone before its request was complete: nothing to log */
        return;
    }
    if (n < 0) return;
    if (!p->got_bytes) { /* from the idle timeout to the header deadline */
        p->got_bytes = true;
        loop_timer_start(w->loop, &p->timer, p->header_deadline);
    }
    char method[16] = "", target[256] = ""; /* filled as far as the request line parsed */
    const char *why = NULL;
    int st = httpcheck_raw(w->peek, (size_t)n, w->peek_cap - 1, method, sizeof method, target,
                           sizeof target, &why);
    if (st == 0) {
        hand_over(p);
    } else if (st > 0) {
        refuse(p, st, why, method, target);
    } else if ((size_t)n >= w->peek_cap) {
        refuse(p, 431, "request header fields too large", NULL, NULL);
    } else if (revents & (EPOLLRDHUP | EPOLLHUP)) {
        pending_close(p); /* half a request, then the end: nothing to answer */
    }
}

static void on_pending_timer(loop_t *loop, loop_timer_t *t)
{
    (void)loop;
    struct pending *p = container_of(t, struct pending, timer);
    if (p->answered || !p->got_bytes) { /* lingered, or silent for connection_timeout_s */
        pending_close(p);
        return;
    }
    drain_input(p); /* unread input would turn the close into a reset */
    refuse(p, 408, "request timeout", NULL, NULL);
}

static void start_pending(struct worker *w, int fd, const struct sockaddr_storage *addr,
                          socklen_t len)
{
    if (w->tls) { /* encrypted: nothing to peek at (see the top comment) */
        MHD_add_connection(w->mhd, fd, (const struct sockaddr *)addr, len);
        w->mhd_run_needed = true;
        return;
    }
    struct pending *p = calloc(1, sizeof *p);
    if (!p) {
        close(fd);
        return;
    }
    p->w = w;
    p->fd = fd;
    p->addr = *addr;
    p->addr_len = len;
    clock_gettime(CLOCK_REALTIME, &p->arrived);
    p->start_ns = loop_now(w->loop);
    loop_timer_init(&p->timer, on_pending_timer);
    /* Edge-triggered: every arrival wakes us, the peeked bytes stay. */
    if (loop_io_start(w->loop, &p->io, fd, EPOLLIN | EPOLLRDHUP | EPOLLET, on_pending_io) < 0) {
        close(fd);
        free(p);
        return;
    }
    p->next = w->pending;
    if (w->pending) w->pending->prev = p;
    w->pending = p;
    w->n_conns++;
    /* Silent until connection_timeout_s (when shorter): closed without a
     * word, as an idle connection; once a byte came, header_timeout_ms. */
    const struct config *cfg = av_acquire(&w->gw->config);
    uint64_t ms = cfg->server.header_timeout_ms;
    uint64_t idle_ms = (uint64_t)cfg->server.connection_timeout_s * 1000;
    av_release(&w->gw->config, (void *)cfg);
    p->header_deadline = p->start_ns + ms * 1000000ull;
    if (idle_ms && idle_ms < ms) ms = idle_ms;
    loop_timer_start(w->loop, &p->timer, p->start_ns + ms * 1000000ull);
    /* The request often comes with the handshake: look now rather than
     * after the next epoll_wait (edge-triggered: nothing is missed). */
    on_pending_io(w->loop, &p->io, 0);
}

static void on_listen_io(loop_t *loop, loop_io_t *io, uint32_t revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(io, struct worker, listen_io);
    for (int i = 0; i < ACCEPT_BATCH && w->listen_fd >= 0; i++) {
        struct sockaddr_storage addr;
        socklen_t len = sizeof addr;
        int fd =
            accept4(w->listen_fd, (struct sockaddr *)&addr, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; /* EAGAIN, or EMFILE and the like: retried on the next wake */
        if (w->n_conns >= w->max_pending) {
            close(fd); /* far beyond max_connections: as libmicrohttpd's own limit did */
            continue;
        }
        start_pending(w, fd, &addr, len);
    }
}

int server_sockaddr(const struct server_conf *s, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, s->host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(s->port);
        *len = sizeof *a4;
    } else if (inet_pton(AF_INET6, s->host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(s->port);
        *len = sizeof *a6;
    } else {
        fprintf(stderr, "gateway: cannot listen on %s\n", s->listen);
        return -EINVAL;
    }
    return 0;
}


int listener_open(struct worker *w, const struct server_conf *s)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (server_sockaddr(s, &ss, &len) != 0) return -EINVAL;
    w->peek_cap = s->max_header_bytes + 1;
    w->peek = malloc(w->peek_cap);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (!w->peek || fd < 0) goto fail;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 1024) != 0) goto fail;
    w->listen_fd = fd;
    if (loop_io_start(w->loop, &w->listen_io, fd, EPOLLIN, on_listen_io) < 0) goto fail;
    return 0;
fail:
    fprintf(stderr, "gateway: cannot listen on %s: %s\n", s->listen, strerror(errno));
    if (fd >= 0) close(fd);
    w->listen_fd = -1;
    return -EADDRINUSE;
}

void listener_stop_accepting(struct worker *w)
{
    if (w->listen_fd < 0) return;
    loop_io_stop(w->loop, &w->listen_io);
    close(w->listen_fd);
    w->listen_fd = -1;
}

void listener_close(struct worker *w)
{
    listener_stop_accepting(w);
    while (w->pending)
        pending_close(w->pending);
    free(w->peek);
    w->peek = NULL;
}
