/*
 * native: HTTP/1.1 client on the worker's loop. See native.h.
 *
 * A connection (struct conn) lives from connect to close: registered once
 * with epoll for IN|OUT|RDHUP|ET, it records the events that arrive
 * (c->revents) and wakes the coroutine using it when one it waits for comes.
 * While idle in its origin's list, any event but OUT means the backend
 * closed it (or sent bytes nobody asked for): it is closed at once.
 *
 * Reads: the request is written with one writev, then the call parks until
 * IN; a read shorter than the buffer drained the socket, so the call parks
 * again instead of reading once more for an EAGAIN (edge-triggered epoll
 * reports every new arrival). Reads go into one per-worker buffer: feed
 * consumes all of it (h1resp keeps a cut line itself) before the call can
 * park again, so no call owns a buffer. The parser lives in the connection.
 */
#include "gateway/native.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/pool.h"
#include "gateway/cachectl.h"
#include "gateway/h1resp.h"
#include "gateway/metrics.h"
#include "gateway/resolver.h"

#include "core/container_of.h"

/* One read: a typical JSON answer arrives in one. */
#define READ_BUF 16384
/* iovecs of one request: line (3) + Host (3) + 2 per header + CL + body. */
#define MAX_IOV  (8 + 2 * UPSTREAM_MAX_HEADERS)
#define MAX_HDRS UPSTREAM_MAX_HEADERS
/* Connection objects kept for reuse after a close. */
#define CONN_POOL_MAX 256
/* How often the idle sweep runs while any connection is idle. */
#define SWEEP_NS 1000000000ull

#define EV_ANY_IN  (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)
#define EV_ANY_OUT (EPOLLOUT | EPOLLHUP | EPOLLERR)

static const struct upstream_conf DEFAULT_CONF = {
    .max_idle_per_origin = 256, .idle_timeout_s = 60, .connect_timeout_ms = 1000};

struct native;

/* A call parked until the resolver knows its origin's name. */
struct dns_wait {
    coro_t *co;
    struct dns_wait *prev, *next;
};

struct conn {
    loop_io_t io;
    struct native *n;
    struct origin *o;
    struct conn *prev, *next;         /* the origin's idle list while idle */
    struct conn *all_prev, *all_next; /* every open connection (native_free) */
    coro_t *waiter;                   /* the call parked on it */
    uint32_t want;                    /* events that wake the waiter */
    uint32_t revents;                 /* events seen since the bits were cleared */
    uint64_t idle_since;
    bool idle;
    bool reused; /* served a response before */
    struct h1resp parser;
};

struct origin {
    char key[UPSTREAM_ORIGIN_MAX + 1]; /* "http://host:port" as the call gives it */
    char host[256];        /* without brackets */
    const char *authority; /* into key: the Host header value */
    size_t authority_len;
    uint16_t port;
    struct sockaddr_storage addr; /* a numeric host: parsed once */
    socklen_t addr_len;
    struct conn *idle_head, *idle_tail; /* head: most recently used */
    unsigned n_idle;
    struct dns_wait *dns_waiters; /* calls parked on this name's first lookup */
    struct origin *next;
};

struct native {
    loop_t *loop;
    struct resolver *res;
    struct metrics *metrics;
    struct origin *origins;
    struct origin *last; /* the origin of the last call: most calls repeat it */
    struct conn *all;    /* every open connection, idle or in use */
    pool_t *conns;
    char *rbuf;
    loop_timer_t sweep;
    uint64_t idle_timeout_ns;
    unsigned inflight;
    unsigned n_idle;
    _Atomic uint64_t c_connect, c_reuse, c_close, c_stale, c_idle;
};

/* One call, on the calling coroutine's stack. */
struct call {
    struct native *n;
    coro_t *co;
    ctx_hook_t on_done;
    bool aborted;
    bool too_big;
    buf_t *body;
    size_t max_bytes;
    struct cache_control *cc; /* the answer's Cache-Control, for the cache */
    struct expose_cap *exp;   /* expose_headers capture; NULL: none */
};

static inline void bump(_Atomic uint64_t *c, uint64_t v)
{
    atomic_store_explicit(c, v, memory_order_relaxed);
}

static void count(struct native *n, _Atomic uint64_t *c, enum metrics_up_event ev)
{
    bump(c, atomic_load_explicit(c, memory_order_relaxed) + 1);
    if (n->metrics) metrics_upstream_event(n->metrics, METRICS_TRANSPORT_NATIVE, ev);
}

static void idle_count(struct native *n, int delta)
{
    n->n_idle += (unsigned)delta;
    bump(&n->c_idle, n->n_idle);
    if (n->metrics) metrics_upstream_idle_add(n->metrics, delta);
}

/* ---- connections ---- */

static void idle_unlink(struct native *n, struct conn *c)
{
    struct origin *o = c->o;
    if (c->prev)
        c->prev->next = c->next;
    else
        o->idle_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        o->idle_tail = c->prev;
    c->prev = c->next = NULL;
    c->idle = false;
    o->n_idle--;
    idle_count(n, -1);
}

static void all_link(struct native *n, struct conn *c)
{
    c->all_prev = NULL;
    c->all_next = n->all;
    if (n->all) n->all->all_prev = c;
    n->all = c;
}

static void all_unlink(struct native *n, struct conn *c)
{
    if (c->all_prev)
        c->all_prev->all_next = c->all_next;
    else
        n->all = c->all_next;
    if (c->all_next) c->all_next->all_prev = c->all_prev;
}

static void conn_close(struct native *n, struct conn *c)
{
    if (c->idle) idle_unlink(n, c);
    all_unlink(n, c);
    loop_io_stop(n->loop, &c->io); /* also drops its events still in this batch */
    close(c->io.fd);
    count(n, &n->c_close, METRICS_UP_CLOSE);
    pool_put(n->conns, c);
}

static void on_conn_event(loop_t *loop, loop_io_t *io, uint32_t revents)
{
    (void)loop;
    struct conn *c = container_of(io, struct conn, io);
    c->revents |= revents;
    if (c->idle) {
        /* Nothing may arrive on an idle connection but its close. An IN
         * alone may still be the edge of the last response's bytes, read
         * before this event was dispatched: look before closing. */
        if (!(revents & EV_ANY_IN)) return;
        if (!(revents & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
            char b;
            if (recv(io->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) < 0 && errno == EAGAIN) {
                c->revents &= ~(uint32_t)EPOLLIN;
                return;
            }
        }
        conn_close(c->n, c);
        return;
    }
    if (c->waiter && (revents & c->want)) loop_wake(c->waiter);
}

static void on_sweep(loop_t *loop, loop_timer_t *t)
{
    struct native *n = container_of(t, struct native, sweep);
    uint64_t now = loop_now(loop);
    for (struct origin *o = n->origins; o; o = o->next) {
        while (o->idle_tail && now - o->idle_tail->idle_since >= n->idle_timeout_ns)
            conn_close(n, o->idle_tail);
    }
    if (n->n_idle) loop_timer_start(loop, t, now + SWEEP_NS);
}

/* Files c as idle (most recent first), or closes it when the origin has
 * enough idle ones. */
static void conn_release(struct native *n, struct conn *c, const struct upstream_conf *conf)
{
    struct origin *o = c->o;
    if (o->n_idle >= conf->max_idle_per_origin) {
        conn_close(n, c);
        return;
    }
    c->idle = true;
    c->reused = true;
    c->waiter = NULL;
    c->idle_since = loop_now(n->loop);
    c->prev = NULL;
    c->next = o->idle_head;
    if (o->idle_head)
        o->idle_head->prev = c;
    else
        o->idle_tail = c;
    o->idle_head = c;
    o->n_idle++;
    idle_count(n, +1);
    n->idle_timeout_ns = (uint64_t)conf->idle_timeout_s * 1000000000ull;
    if (!loop_timer_active(&n->sweep))
        loop_timer_start(n->loop, &n->sweep, c->idle_since + SWEEP_NS);
}

static void *conn_new(void *ud)
{
    (void)ud;
    return malloc(sizeof(struct conn));
}

/* ---- origins ---- */

/* Splits "http://host[:port]" (host may be "[v6]"); false when malformed. */
static bool origin_parse(struct origin *o, const char *key)
{
    size_t kl = strlen(key);
    if (kl >= sizeof o->key || strncmp(key, "http://", 7) != 0) return false;
    memcpy(o->key, key, kl + 1);
    const char *a = o->key + 7;
    o->authority = a;
    o->authority_len = strlen(a);
    if (!*a || strpbrk(a, "@/?# ")) return false;
    const char *hs = a, *he, *port = NULL;
    if (*a == '[') {
        hs = a + 1;
        he = strchr(hs, ']');
        if (!he) return false;
        if (he[1] == ':')
            port = he + 2;
        else if (he[1])
            return false;
    } else {
        he = strchr(a, ':');
        if (he)
            port = he + 1;
        else
            he = a + strlen(a);
    }
    size_t hl = (size_t)(he - hs);
    if (!hl || hl >= sizeof o->host) return false;
    memcpy(o->host, hs, hl);
    o->host[hl] = '\0';
    o->port = 80;
    if (port) {
        char *end;
        long p = strtol(port, &end, 10);
        if (*end || end == port || p < 1 || p > 65535) return false;
        o->port = (uint16_t)p;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)&o->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&o->addr;
    if (inet_pton(AF_INET, o->host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(o->port);
        o->addr_len = sizeof *a4;
    } else if (inet_pton(AF_INET6, o->host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(o->port);
        o->addr_len = sizeof *a6;
    }
    return true;
}

static struct origin *origin_get(struct native *n, const char *key)
{
    if (n->last && strcmp(n->last->key, key) == 0) return n->last;
    for (struct origin *o = n->origins; o; o = o->next)
        if (strcmp(o->key, key) == 0) return n->last = o;
    struct origin *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    if (!origin_parse(o, key)) {
        free(o);
        return NULL;
    }
    o->next = n->origins;
    n->origins = o;
    return n->last = o;
}

/* ---- waiting ---- */

static void on_ctx_done(ctx_t *ctx, ctx_hook_t *h)
{
    (void)ctx;
    struct call *k = container_of(h, struct call, on_done);
    k->aborted = true;
    loop_wake(k->co);
}

/* Parks until c has one of want (0), the call is aborted (-ECANCELED) or
 * deadline_ns passes (-ETIMEDOUT; 0 = none). */
static int wait_conn(struct call *k, struct conn *c, uint32_t want, uint64_t deadline_ns)
{
    while (!(c->revents & want)) {
        if (k->aborted) return -ECANCELED;
        c->want = want;
        c->waiter = k->co;
        int rc = loop_park(deadline_ns);
        c->waiter = NULL;
        if (k->aborted) return -ECANCELED;
        if (rc == -ETIMEDOUT) return -ETIMEDOUT;
    }
    return 0;
}

static void dns_done(void *arg)
{
    struct origin *o = arg;
    for (struct dns_wait *w = o->dns_waiters; w; w = w->next)
        loop_wake(w->co);
}

/* The addresses of o: 0, -ENOENT (does not resolve), -ECANCELED, or
 * another negative errno. */
static int origin_addrs(struct call *k, struct origin *o, struct resolver_addrs *out)
{
    struct native *n = k->n;
    if (o->addr_len) {
        out->n = 1;
        memcpy(&out->addr[0], &o->addr, o->addr_len);
        out->len[0] = o->addr_len;
        return 0;
    }
    if (!n->res) {
        if (strcmp(o->host, "localhost") != 0) return -ENOENT;
        struct sockaddr_in *a4 = (struct sockaddr_in *)&out->addr[0];
        memset(a4, 0, sizeof *a4);
        a4->sin_family = AF_INET;
        a4->sin_port = htons(o->port);
        a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        out->len[0] = sizeof *a4;
        out->n = 1;
        return 0;
    }
    for (;;) {
        int rc = resolver_lookup(n->res, o->host, o->port, out, n->loop, dns_done, o);
        if (rc != -EAGAIN) return rc;
        struct dns_wait w = {.co = k->co, .next = o->dns_waiters};
        if (w.next) w.next->prev = &w;
        o->dns_waiters = &w;
        loop_park(0);
        if (w.prev)
            w.prev->next = w.next;
        else
            o->dns_waiters = w.next;
        if (w.next) w.next->prev = w.prev;
        if (k->aborted) return -ECANCELED;
    }
}

/* ---- connect ---- */

/* A new connection to one address, registered with the loop. NULL with
 * *err set (negative errno; -ETIMEDOUT for the connect timeout). */
static struct conn *conn_open(struct call *k, struct origin *o, const struct sockaddr *sa,
                              socklen_t len, uint64_t deadline_ns, int *err)
{
    struct native *n = k->n;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = -errno;
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = pool_get(n->conns);
    if (!c) {
        close(fd);
        *err = -ENOMEM;
        return NULL;
    }
    c->n = n;
    c->o = o;
    c->prev = c->next = NULL;
    c->waiter = NULL;
    c->want = 0;
    c->revents = 0;
    c->idle = false;
    c->reused = false;
    int rc = connect(fd, sa, len) == 0 ? 0 : -errno;
    if (rc == 0 || rc == -EINPROGRESS)
        rc = loop_io_start(n->loop, &c->io, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                           on_conn_event);
    if (rc != 0) {
        close(fd);
        pool_put(n->conns, c);
        *err = rc;
        return NULL;
    }
    all_link(n, c);
    rc = wait_conn(k, c, EV_ANY_OUT, deadline_ns);
    if (rc == 0) {
        int so = 0;
        socklen_t sl = sizeof so;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) != 0) so = errno;
        rc = -so;
    }
    if (rc != 0) { /* never connected: counted neither as connect nor close */
        all_unlink(n, c);
        loop_io_stop(n->loop, &c->io);
        close(fd);
        pool_put(n->conns, c);
        *err = rc;
        return NULL;
    }
    count(n, &n->c_connect, METRICS_UP_CONNECT);
    c->revents = 0;
    return c;
}

/* A connection to o: an idle one (reuse), else a new one. NULL with *why
 * (static text) or with k->aborted / *timed_out. */
static struct conn *conn_get(struct call *k, struct origin *o, const struct upstream_conf *conf,
                             bool fresh, uint64_t ctx_deadline, const char **why, bool *timed_out)
{
    struct native *n = k->n;
    if (!fresh && o->idle_head) {
        struct conn *c = o->idle_head;
        idle_unlink(n, c);
        count(n, &n->c_reuse, METRICS_UP_REUSE);
        return c;
    }
    struct resolver_addrs addrs;
    int rc = origin_addrs(k, o, &addrs);
    if (rc != 0) {
        *why = rc == -ENOENT || rc == -EINVAL ? "cannot resolve host" : "resolver error";
        return NULL;
    }
    uint64_t deadline = loop_now(n->loop) + (uint64_t)conf->connect_timeout_ms * 1000000ull;
    if (ctx_deadline && ctx_deadline < deadline) deadline = ctx_deadline;
    *why = "cannot connect";
    for (unsigned i = 0; i < addrs.n; i++) {
        struct conn *c =
            conn_open(k, o, (const struct sockaddr *)&addrs.addr[i], addrs.len[i], deadline, &rc);
        if (c) return c;
        if (rc == -ECANCELED) return NULL;
        if (rc == -ETIMEDOUT) {
            /* The ctx's own deadline is the call's timeout; the connect
             * timeout alone is a transport error. */
            if (deadline == ctx_deadline) *timed_out = true;
            *why = "connect timeout";
            return NULL;
        }
    }
    return NULL;
}

/* ---- the request ---- */

/* RFC 9110 tchar: what a header name is made of. */
static const bool TCHAR[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1,         ['&'] = 1,         ['\''] = 1,
    ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1,         ['^'] = 1,         ['_'] = 1,
    ['`'] = 1, ['|'] = 1, ['~'] = 1, ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
};

enum hdr_kind { HDR_BAD, HDR_PLAIN, HDR_HOST, HDR_FRAMING };

/* One pass over "Name: value": a token name, and no CR or LF anywhere (a
 * client must not smuggle a header line into a backend request). *len
 * receives the line's length. Host replaces the transport's own; framing
 * headers (Content-Length, Transfer-Encoding, Connection, Expect) are the
 * transport's alone and dropped. */
static enum hdr_kind header_kind(const char *h, size_t *len)
{
    const char *p = h;
    while (TCHAR[(unsigned char)*p])
        p++;
    size_t name = (size_t)(p - h);
    if (!name || *p != ':') return HDR_BAD;
    for (p++; *p; p++)
        if (*p == '\r' || *p == '\n') return HDR_BAD;
    *len = (size_t)(p - h);
    switch (name) {
    case 4:
        return strncasecmp(h, "Host", 4) == 0 ? HDR_HOST : HDR_PLAIN;
    case 6:
        return strncasecmp(h, "Expect", 6) == 0 ? HDR_FRAMING : HDR_PLAIN;
    case 10:
        return strncasecmp(h, "Connection", 10) == 0 ? HDR_FRAMING : HDR_PLAIN;
    case 14:
        return strncasecmp(h, "Content-Length", 14) == 0 ? HDR_FRAMING : HDR_PLAIN;
    case 17:
        return strncasecmp(h, "Transfer-Encoding", 17) == 0 ? HDR_FRAMING : HDR_PLAIN;
    default:
        return HDR_PLAIN;
    }
}

/* The request target's length: printable ASCII from '/', no spaces; 0 when
 * not fit to be sent. */
static size_t target_len(const char *s)
{
    if (*s != '/') return 0;
    const char *p = s;
    for (; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) return 0;
    return (size_t)(p - s);
}

#define IOV(p, l) ((struct iovec){.iov_base = (void *)(p), .iov_len = (l)})

/* Fills iov with the whole request; returns the count, or 0 with *why when
 * a header or the target is not fit to be sent. cl holds the Content-Length
 * line. */
static int build_request(const struct upstream_req *req, const struct origin *o, char cl[48],
                         struct iovec *iov, const char **why)
{
    size_t plen = target_len(req->path);
    if (!plen) {
        *why = "bad URL";
        return 0;
    }
    if (req->n_headers > MAX_HDRS) {
        *why = "too many headers";
        return 0;
    }
    uint8_t kind[MAX_HDRS];
    size_t len[MAX_HDRS];
    bool own_host = true;
    for (size_t i = 0; i < req->n_headers; i++) {
        kind[i] = (uint8_t)header_kind(req->headers[i], &len[i]);
        if (kind[i] == HDR_BAD) {
            *why = "invalid header";
            return 0;
        }
        if (kind[i] == HDR_HOST) own_host = false;
    }
    int n = 0;
    iov[n++] = IOV(req->method, strlen(req->method));
    iov[n++] = IOV(" ", 1);
    iov[n++] = IOV(req->path, plen);
    if (own_host) {
        iov[n++] = IOV(" HTTP/1.1\r\nHost: ", 17);
        iov[n++] = IOV(o->authority, o->authority_len);
        iov[n++] = IOV("\r\n", 2);
    } else {
        iov[n++] = IOV(" HTTP/1.1\r\n", 11);
    }
    for (size_t i = 0; i < req->n_headers; i++) {
        if (kind[i] == HDR_FRAMING) continue;
        iov[n++] = IOV(req->headers[i], len[i]);
        iov[n++] = IOV("\r\n", 2);
    }
    if (req->body) {
        int l = snprintf(cl, 48, "Content-Length: %zu\r\n\r\n", req->body_len);
        iov[n++] = IOV(cl, (size_t)l);
        if (req->body_len) iov[n++] = IOV(req->body, req->body_len);
    } else {
        iov[n++] = IOV("\r\n", 2);
    }
    return n;
}

/* ---- one exchange on one connection ---- */

enum xres { X_DONE, X_STALE, X_ERROR, X_TOO_BIG, X_ABORT };

static int on_body(void *arg, const char *data, size_t len)
{
    struct call *k = arg;
    if (k->body->len + len > k->max_bytes) {
        k->too_big = true;
        return 1;
    }
    return buf_append(k->body, data, len) != 0;
}

/* Drops the first w bytes of iov[0..*niov). */
static struct iovec *iov_advance(struct iovec *iov, int *niov, size_t w)
{
    while (*niov > 0 && w >= iov->iov_len) {
        w -= iov->iov_len;
        iov++;
        (*niov)--;
    }
    if (*niov > 0) {
        iov->iov_base = (char *)iov->iov_base + w;
        iov->iov_len -= w;
    }
    return iov;
}

/* The first write: a request that fits the worker's read buffer is copied
 * there and written as one segment (the kernel then imports one segment
 * instead of a dozen, a measurable part of writev's cost). The buffer is
 * shared by the worker's calls, so it is used only up to the first park:
 * what this write leaves is sent from iov. Returns the bytes written, or
 * -1 with errno. */
static ssize_t write_flat(struct native *n, int fd, const struct iovec *iov, int niov)
{
    size_t total = 0;
    for (int i = 0; i < niov; i++)
        total += iov[i].iov_len;
    if (total > READ_BUF) return writev(fd, iov, niov > IOV_MAX ? IOV_MAX : niov);
    char *p = n->rbuf;
    for (int i = 0; i < niov; i++) {
        memcpy(p, iov[i].iov_base, iov[i].iov_len);
        p += iov[i].iov_len;
    }
    return write(fd, n->rbuf, total);
}

/* Writes all of iov (modified). */
static enum xres send_all(struct call *k, struct conn *c, struct iovec *iov, int niov,
                          const char **why)
{
    bool first = true;
    while (niov > 0) {
        c->revents &= ~(uint32_t)EPOLLOUT;
        ssize_t w = first ? write_flat(k->n, c->io.fd, iov, niov)
                          : writev(c->io.fd, iov, niov > IOV_MAX ? IOV_MAX : niov);
        first = false;
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                if (wait_conn(k, c, EV_ANY_OUT, 0)) return X_ABORT;
                continue;
            }
            *why = "send failed";
            return c->reused ? X_STALE : X_ERROR;
        }
        iov = iov_advance(iov, &niov, (size_t)w);
    }
    return X_DONE;
}

static enum xres on_eof(struct conn *c, const char **why, bool *keep)
{
    struct h1resp *p = &c->parser;
    if (p->bytes_seen == 0 && c->reused) return X_STALE;
    *keep = false;
    if (h1resp_eof(p) == H1_DONE) return X_DONE;
    *why = p->bytes_seen ? p->error : "empty reply from backend";
    return X_ERROR;
}

/* Every field of the final response: Cache-Control and expose_headers. */
static int on_header(void *arg, const char *name, size_t name_len, const char *value,
                     size_t value_len)
{
    struct call *k = arg;
    cachectl_header(k->cc, name, name_len, value, value_len);
    expose_header(k->exp, name, name_len, value, value_len);
    return 0;
}

static enum xres exchange(struct call *k, struct conn *c, struct iovec *iov, int niov, bool no_body,
                          const char **why, bool *keep)
{
    struct native *n = k->n;
    struct h1resp *p = &c->parser;
    c->revents &= ~(uint32_t)EPOLLIN;
    h1resp_init(p, no_body, on_body, k);
    cachectl_init(k->cc); /* a stale retry starts over */
    expose_reset(k->exp);
    h1resp_on_header(p, on_header, k);
    enum xres x = send_all(k, c, iov, niov, why);
    if (x != X_DONE) return x;
    /* The answer cannot be there yet: wait for it rather than read EAGAIN. */
    if (wait_conn(k, c, EV_ANY_IN, 0)) return X_ABORT;
    for (;;) {
        c->revents &= ~(uint32_t)EPOLLIN;
        ssize_t r = recv(c->io.fd, n->rbuf, READ_BUF, 0);
        if (r > 0) {
            size_t used = 0;
            enum h1_status st = h1resp_feed(p, n->rbuf, (size_t)r, &used);
            if (st == H1_DONE) {
                *keep = p->keep_alive && used == (size_t)r &&
                        !(c->revents & (EPOLLRDHUP | EPOLLHUP | EPOLLERR));
                return X_DONE;
            }
            if (st == H1_ERROR) {
                if (k->too_big) return X_TOO_BIG;
                *why = p->error ? p->error : "malformed response";
                return X_ERROR;
            }
            if (r == READ_BUF) continue; /* maybe more queued */
        } else if (r == 0) {
            return on_eof(c, why, keep);
        } else if (errno == EINTR) {
            continue;
        } else if (errno != EAGAIN) {
            if (errno == ECONNRESET && p->bytes_seen == 0 && c->reused) return X_STALE;
            *why = "receive failed";
            return X_ERROR;
        }
        if (wait_conn(k, c, EV_ANY_IN, 0)) return X_ABORT;
    }
}

/* ---- the call ---- */

static bool retryable(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 || strcmp(m, "PUT") == 0 ||
           strcmp(m, "DELETE") == 0 || strcmp(m, "OPTIONS") == 0;
}

static enum upstream_result ctx_result(const ctx_t *ctx)
{
    return ctx_err(ctx) == CTX_DEADLINE_EXCEEDED ? UP_TIMEOUT : UP_CANCELED;
}

static void fail(struct upstream_resp *resp, enum upstream_result r, const char *why)
{
    resp->result = r;
    resp->error = why;
}

/* The exchange with retries, once the call is set up. */
static void run_call(struct call *k, ctx_t *ctx, const struct upstream_req *req, struct origin *o,
                     const struct upstream_conf *conf, struct upstream_resp *resp)
{
    struct native *n = k->n;
    struct iovec iov[MAX_IOV];
    char cl[48];
    const char *why = NULL;
    if (!build_request(req, o, cl, iov, &why)) {
        fail(resp, UP_ERROR, why);
        return;
    }
    bool no_body = strcmp(req->method, "HEAD") == 0;
    bool fresh = false;
    for (;;) {
        bool timed_out = false;
        struct conn *c = conn_get(k, o, conf, fresh, ctx_deadline(ctx), &why, &timed_out);
        if (!c) {
            if (k->aborted)
                fail(resp, ctx_result(ctx), NULL);
            else
                fail(resp, timed_out ? UP_TIMEOUT : UP_ERROR, why);
            return;
        }
        int niov = build_request(req, o, cl, iov, &why); /* send_all consumes iov */
        bool keep = false;
        switch (exchange(k, c, iov, niov, no_body, &why, &keep)) {
        case X_DONE:
            resp->result = UP_OK;
            resp->status = c->parser.status;
            if (keep)
                conn_release(n, c, conf);
            else
                conn_close(n, c);
            return;
        case X_STALE:
            conn_close(n, c);
            if (!fresh && retryable(req->method)) {
                count(n, &n->c_stale, METRICS_UP_STALE_RETRY);
                fresh = true;
                continue;
            }
            /* Only a reused connection is stale, and a retry is a fresh one. */
            fail(resp, UP_ERROR,
                 "connection closed before the answer (a non-idempotent request is not re-sent)");
            return;
        case X_ABORT:
            conn_close(n, c);
            fail(resp, ctx_result(ctx), NULL);
            return;
        case X_TOO_BIG:
            conn_close(n, c);
            fail(resp, UP_TOO_BIG, "response too large");
            return;
        case X_ERROR:
            conn_close(n, c);
            fail(resp, UP_ERROR, why);
            return;
        }
    }
}

void native_call(struct native *n, ctx_t *ctx, const struct upstream_req *req,
                 struct upstream_resp *resp)
{
    resp->status = 0;
    resp->error = NULL;
    if (ctx_done(ctx)) {
        resp->result = ctx_result(ctx);
        return;
    }
    const struct upstream_conf *conf = req->conf ? req->conf : &DEFAULT_CONF;
    struct origin *o = origin_get(n, req->origin);
    if (!o) {
        fail(resp, UP_ERROR, "bad URL");
        return;
    }
    struct call k = {.n = n, .co = coro_self(), .body = resp->body, .max_bytes = req->max_bytes,
                     .cc = &resp->cc, .exp = resp->exp};
    if (!ctx_after_func(ctx, &k.on_done, on_ctx_done)) {
        resp->result = ctx_result(ctx);
        return;
    }
    n->inflight++;
    run_call(&k, ctx, req, o, conf, resp);
    n->inflight--;
    ctx_hook_remove(ctx, &k.on_done);
}

/* ---- lifecycle ---- */

struct native *native_new(loop_t *loop, struct resolver *res, struct metrics *m)
{
    struct native *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->loop = loop;
    n->res = res;
    n->metrics = m;
    n->idle_timeout_ns = (uint64_t)DEFAULT_CONF.idle_timeout_s * 1000000000ull;
    struct pool_ops ops = {.new_fn = conn_new};
    n->conns = pool_new("native_conn", sizeof(struct conn), CONN_POOL_MAX, &ops);
    n->rbuf = malloc(READ_BUF);
    if (!n->conns || !n->rbuf) {
        native_free(n);
        return NULL;
    }
    loop_timer_init(&n->sweep, on_sweep);
    return n;
}

void native_free(struct native *n)
{
    if (!n) return;
    /* Idle ones, and those of calls whose coroutines will never run again
     * (a forced stop frees them parked). */
    while (n->all)
        conn_close(n, n->all);
    struct origin *o = n->origins;
    while (o) {
        struct origin *next = o->next;
        free(o);
        o = next;
    }
    if (n->loop) loop_timer_stop(n->loop, &n->sweep);
    if (n->conns) pool_free(n->conns);
    free(n->rbuf);
    free(n);
}

void native_counts(const struct native *n, struct native_counts *out)
{
    out->connect = atomic_load_explicit(&n->c_connect, memory_order_relaxed);
    out->reuse = atomic_load_explicit(&n->c_reuse, memory_order_relaxed);
    out->close = atomic_load_explicit(&n->c_close, memory_order_relaxed);
    out->stale_retry = atomic_load_explicit(&n->c_stale, memory_order_relaxed);
    out->idle = atomic_load_explicit(&n->c_idle, memory_order_relaxed);
}

size_t native_mark_idle(struct native *n)
{
    return pool_mark_idle(n->conns);
}

size_t native_free_idle(struct native *n, size_t max)
{
    return pool_free_idle(n->conns, max);
}

unsigned native_inflight(const struct native *n)
{
    return n->inflight;
}
