/*
 * upstream: backend HTTP calls from coroutines, on one curl multi handle per
 * worker driven by the worker's loop; a request with req->native set goes
 * to the native transport instead (gateway/native.h, http:// only).
 *
 * curl's sockets are watched by the loop (socket callback -> loop_io) and its
 * single timer lives on the loop's heap; a 0 ms timer request, which curl
 * makes about once per transfer, is served by a prepare hook in the same
 * iteration instead of a timer syscall (docs/perf.md K2). A socket curl
 * stops watching (CURL_POLL_REMOVE) is unregistered at once, not lazily:
 * this libcurl may close a socket without telling, and a kept registration
 * would act on the next fd with that number (docs/perf.md K5), so a keep-
 * alive connection pays its epoll_ctl pair per transfer.
 *
 * upstream_call() reads as blocking code: it adds the transfer and parks the
 * calling coroutine until the transfer ends or ctx is done; in the latter
 * case the transfer is removed from the multi handle at once, which closes
 * its connection, so the backend sees the abort.
 */
#ifndef GATEWAY_UPSTREAM_H
#define GATEWAY_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/ctx.h"
#include "core/loop.h"
#include "core/pool.h"
#include "gateway/config.h"
#include "gateway/cachectl.h"
#include "gateway/expose.h"

struct upstream;
struct resolver;
struct metrics;

/* Most header lines one call may carry (upstream_req.n_headers); both
 * transports send this many. Every call the configuration allows fits: the
 * gateway's own lines (traceparent, X-Request-Timeout-Ms, X-Request-Id,
 * tracestate, X-Gateway-Attempt), at most FWD_MAX forward_headers lines and
 * at most AUTH_MAX_CLAIM_HDRS claim headers (call.c asserts the sum at
 * compile time). */
#define UPSTREAM_MAX_HEADERS 56
/* Longest origin ("scheme://host[:port]", NUL excluded) a call may name:
 * both transports keep it in a field of this + 1 bytes. config_route.c and
 * config_resil.c refuse longer ones with --check. */
#define UPSTREAM_ORIGIN_MAX 255

enum upstream_result {
    UP_OK,       /* a response arrived (any status) */
    UP_ERROR,    /* transport error: connect, reset, malformed HTTP */
    UP_TOO_BIG,  /* body over max_bytes */
    UP_CANCELED, /* ctx cancelled before the response ended */
    UP_TIMEOUT,  /* ctx deadline passed before the response ended */
};

struct upstream_req {
    const char *method;         /* "GET" ... */
    const char *origin;         /* "scheme://host:port", NUL-terminated */
    const char *path;           /* "/path?query", NUL-terminated */
    const char *const *headers; /* "Name: value" lines */
    size_t n_headers;
    const char *body; /* NULL: none */
    size_t body_len;
    size_t max_bytes;                 /* response body limit */
    bool native;                      /* the native transport (gateway/native.h), else curl */
    const struct upstream_conf *conf; /* native pool settings; NULL: defaults */
};

struct upstream_resp {
    enum upstream_result result;
    long status;       /* HTTP status when result == UP_OK */
    buf_t *body;       /* filled by the call; initialised by the caller */
    const char *error; /* static text for UP_ERROR */
    struct cache_control cc; /* the answer's Cache-Control (gateway/cachectl.h) */
    struct expose_cap *exp;  /* set by the caller: capture of expose_headers (gateway/expose.h);
                                NULL: none. Reset at every attempt's start */
};

/* A worker's upstream on loop: the curl multi handle and the native
 * transport (gateway/native.h), which resolves names through res (may be
 * NULL) and counts connection events in m (may be NULL). NULL on failure.
 * Call on the loop's thread. */
struct upstream *upstream_new(loop_t *loop, struct resolver *res, struct metrics *m);
/* Aborts every transfer still running, frees handles and sockets. */
void upstream_free(struct upstream *up);

/* Performs one request from a coroutine under ctx (its deadline bounds the
 * whole exchange). Returns when the transfer ended or ctx is done; fills
 * resp. */
void upstream_call(struct upstream *up, ctx_t *ctx, const struct upstream_req *req,
                   struct upstream_resp *resp);

/* Transfers in flight, and easy-handle pool counters (metrics). */
unsigned upstream_inflight(const struct upstream *up);
const pool_t *upstream_handle_pool(const struct upstream *up);
/* pool_mark_idle / pool_free_idle on the easy-handle pool (core/pool.h); a
 * handle is about 8 KiB of heap. */
size_t upstream_mark_idle(struct upstream *up);
size_t upstream_free_idle(struct upstream *up, size_t max);

#endif
