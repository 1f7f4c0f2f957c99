/*
 * native: the gateway's own HTTP/1.1 client for http:// backends (DESIGN.md
 * "The upstream transport"), one per worker, behind upstream_call().
 *
 * Owns the backend connections of its worker: a per-origin keep-alive pool
 * of non-blocking sockets, each registered once with the worker's epoll for
 * IN|OUT|RDHUP, edge-triggered, for its whole life (reused without any
 * epoll_ctl; a backend closing an idle one is seen by the event, without a
 * probe), the idle sweep (one timer for all origins), the request writer
 * (one writev: request line, Host, the given headers, Content-Length) and
 * the read loop feeding gateway/h1resp. A call parks its coroutine on the
 * connection's readiness; nothing else stands between it and the kernel.
 *
 * Host names go through gateway/resolver (a thread; never blocks a worker).
 * Cancellation (ctx done) closes the call's connection at once.
 *
 * Everything here runs on the owning worker's thread, except
 * native_counts(), which any thread may call (relaxed atomics).
 */
#ifndef GATEWAY_NATIVE_H
#define GATEWAY_NATIVE_H

#include <stdatomic.h>
#include <stdint.h>

#include "core/ctx.h"
#include "core/loop.h"
#include "gateway/upstream.h"

struct native;
struct resolver;
struct metrics;

/* A worker's transport on loop. res may be NULL: then only numeric hosts
 * and "localhost" (127.0.0.1) resolve. m may be NULL (no metrics). NULL on
 * out-of-memory. */
struct native *native_new(loop_t *loop, struct resolver *res, struct metrics *m);
/* Closes every connection (idle or not); no call may be running. */
void native_free(struct native *n);

/* One exchange from a coroutine, as upstream_call() documents it; the pool
 * limits come from req->conf (defaults when NULL). */
void native_call(struct native *n, ctx_t *ctx, const struct upstream_req *req,
                 struct upstream_resp *resp);

/* Counters of this transport (tests and metrics). Any thread. */
struct native_counts {
    uint64_t connect, reuse, close, stale_retry;
    uint64_t idle; /* idle connections now */
};
void native_counts(const struct native *n, struct native_counts *out);

/* The sweep of gateway/gateway.c for the pool of connection objects (kept
 * after a close for the next connect): pool_mark_idle / pool_free_idle of
 * core/pool.h. Owner thread. */
size_t native_mark_idle(struct native *n);
size_t native_free_idle(struct native *n, size_t max);

/* Calls in flight. Owner thread. */
unsigned native_inflight(const struct native *n);

#endif
