/*
 * native_pool: private to native.c and native_pool.c (not a public header).
 *
 * The types both share: a connection (struct conn), an origin and its idle
 * list, the per-worker transport (struct native) and one call (on the
 * calling coroutine's stack); the pool's entry points that native.c calls
 * once per exchange (direct calls, no allocation on reuse); and the small
 * helpers both use, inline so that the exchange pays no call for them.
 *
 * Invariants: a connection is either idle (in its origin's idle list,
 * c->idle, no waiter) or owned by exactly one call; every open connection
 * is in n->all until native_conn_close(). All of it is owned by the
 * worker's thread; only the c_* counters are read elsewhere (relaxed).
 */
#ifndef GATEWAY_NATIVE_POOL_H
#define GATEWAY_NATIVE_POOL_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "core/pool.h"
#include "gateway/h1resp.h"
#include "gateway/metrics.h"
#include "gateway/native.h"

/* One read: a typical JSON answer arrives in one. */
#define READ_BUF 16384

#define EV_ANY_IN  (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)
#define EV_ANY_OUT (EPOLLOUT | EPOLLHUP | EPOLLERR)

/* The pool limits of a call without req->conf. */
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
    char host[256];                    /* without brackets */
    const char *authority;             /* into key: the Host header value */
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

/* One connection event: the transport's counter and the metrics. */
static inline void count(struct native *n, _Atomic uint64_t *c, enum metrics_up_event ev)
{
    bump(c, atomic_load_explicit(c, memory_order_relaxed) + 1);
    if (n->metrics) metrics_upstream_event(n->metrics, METRICS_TRANSPORT_NATIVE, ev);
}

/* Parks until c has one of want (0), the call is aborted (-ECANCELED) or
 * deadline_ns passes (-ETIMEDOUT; 0 = none). */
static inline int wait_conn(struct call *k, struct conn *c, uint32_t want, uint64_t deadline_ns)
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

/* The origin of key ("http://host[:port]"), made on first use; NULL when
 * key is malformed or out of memory. */
struct origin *native_origin_find(struct native *n, const char *key);

/* native_origin_find with the common case first: the last call's origin. */
static inline struct origin *origin_get(struct native *n, const char *key)
{
    if (n->last && strcmp(n->last->key, key) == 0) return n->last;
    return native_origin_find(n, key);
}

/* A connection to o: an idle one (reuse, unless fresh), else a new one
 * (connect_timeout_ms of conf, capped by ctx_deadline). NULL with *why
 * (static text) or with k->aborted / *timed_out. */
struct conn *native_conn_get(struct call *k, struct origin *o, const struct upstream_conf *conf,
                             bool fresh, uint64_t ctx_deadline, const char **why, bool *timed_out);
/* Files c as idle (most recent first), or closes it when the origin has
 * enough idle ones. */
void native_conn_release(struct native *n, struct conn *c, const struct upstream_conf *conf);
/* Closes c (idle or not) and keeps its object for the next connect. */
void native_conn_close(struct native *n, struct conn *c);

#endif
