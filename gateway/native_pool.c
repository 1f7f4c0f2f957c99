/*
 * native_pool: the connections of the native transport (native.h), per
 * worker: the per-origin keep-alive pool, connect, the idle sweep, and the
 * counters and metrics of connection events. native.c runs one exchange on
 * what native_conn_get() hands it and gives it back with
 * native_conn_release() or native_conn_close().
 *
 * A connection (struct conn) lives from connect to close: registered once
 * with epoll for IN|OUT|RDHUP|ET, it records the events that arrive
 * (c->revents) and wakes the coroutine using it when one it waits for comes.
 * While idle in its origin's list, any event but OUT means the backend
 * closed it (or sent bytes nobody asked for): it is closed at once.
 *
 * Invariants: an idle connection has no waiter and sits in exactly one
 * origin's idle list, most recently used first (the sweep closes from the
 * tail); n->n_idle is the sum of the origins' n_idle; the sweep timer runs
 * while any connection is idle. A connect that fails is counted neither as
 * connect nor close. Everything runs on the worker's thread but
 * native_counts().
 */
#include "gateway/native_pool.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/resolver.h"

#include "core/container_of.h"

/* Connection objects kept for reuse after a close. */
#define CONN_POOL_MAX 256
/* How often the idle sweep runs while any connection is idle. */
#define SWEEP_NS 1000000000ull

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

void native_conn_close(struct native *n, struct conn *c)
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
        native_conn_close(c->n, c);
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
            native_conn_close(n, o->idle_tail);
    }
    if (n->n_idle) loop_timer_start(loop, t, now + SWEEP_NS);
}

/* native_pool.h */
void native_conn_release(struct native *n, struct conn *c, const struct upstream_conf *conf)
{
    struct origin *o = c->o;
    if (o->n_idle >= conf->max_idle_per_origin) {
        native_conn_close(n, c);
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

struct origin *native_origin_find(struct native *n, const char *key)
{
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
struct conn *native_conn_get(struct call *k, struct origin *o, const struct upstream_conf *conf,
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
        native_conn_close(n, n->all);
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
