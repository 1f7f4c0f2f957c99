/*
 * cache: the response cache and request coalescing, as a wrapper around one
 * backend call (DESIGN.md, "Cache and request coalescing"). Every call path
 * (the fan-out, chained and foreach calls) goes through cache_call, so the
 * fan-out policy knows nothing of it.
 *
 * The cache is the answer store of gateway/degraded.h, shared by all
 * workers: an entry younger than its freshness (ttl_ms, or the backend's
 * Cache-Control with honor_headers: gateway/cachectl.h) is served without a
 * call. The caller stores answers (cache_fresh_ms says for how long), since
 * only it knows whether an answer is good enough to keep.
 *
 * The wrapped call is the attempt loop (gateway/attempt.h): a hit is served
 * before it (no attempt is made), and coalesced callers share the leader's
 * whole loop, retries and hedges included (and its attempt_info).
 *
 * Coalescing is per worker (one struct cache per worker, loop-affine, no
 * locks): identical calls (same key) in flight at once share one backend
 * call. The shared call runs on its own coroutine under its own context, so
 * no caller owns it: every caller -- the first one included -- waits on it
 * under its own context and leaves alone when that context ends (its
 * deadline, or its client hanging up); the shared call is cancelled only
 * when no caller is left, so it is bounded by the longest waiter's deadline.
 * The request the call is built from is copied, so the first caller may go.
 */
#ifndef GATEWAY_CACHE_H
#define GATEWAY_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "core/ctx.h"
#include "core/loop.h"
#include "gateway/attempt.h"
#include "gateway/cache_result.h" /* enum cache_result, cache_result_name */
#include "gateway/config.h"
#include "gateway/upstream.h"

struct cache;
struct degraded;
struct degraded_entry;

/* The backend call the cache wraps: attempt_call in the gateway, a fake in
 * tests. Must fill resp and info whatever happens and return once ctx is
 * done. */
typedef void (*cache_backend_fn)(void *arg, ctx_t *ctx, const struct attempt_plan *plan,
                                 const struct upstream_req *req, struct upstream_resp *resp,
                                 struct attempt_info *info);

/* A worker's cache on loop over store (may be NULL: nothing is fresh).
 * NULL on out-of-memory. Loop thread only, like everything below. */
struct cache *cache_new(loop_t *loop, struct degraded *store, cache_backend_fn call, void *arg);

/* Frees c. No shared call may be running (cache_flights() == 0). NULL is
 * fine. */
void cache_free(struct cache *c);

/* Shared calls alive (running, or ending after their last caller left). */
unsigned cache_flights(const struct cache *c);

/* fn(arg) runs whenever the last shared call ends (a worker's shutdown
 * waits for it). */
void cache_on_idle(struct cache *c, void (*fn)(void *arg), void *arg);

/* Performs req with plan under ctx through the cache of a backend
 * configured with conf, for key[0..klen) (klen 0: no key, a plain call).
 * From a coroutine. A shared call copies plan and retains plan->cfg while
 * it runs (av_retain; NULL is fine).
 *   CACHE_HIT: *hit is a fresh stored answer, pinned (give it back with
 *     degraded_release); resp is not touched, info is zero;
 *   CACHE_COALESCED: resp and info are copies of a shared call's (the body
 *     appended to resp->body);
 *   CACHE_MISS / CACHE_NONE: resp is this call's own answer.
 * resp->result is UP_TIMEOUT / UP_CANCELED when ctx ended first, as for
 * upstream_call. */
enum cache_result cache_call(struct cache *c, const struct cache_conf *conf, const void *key,
                             size_t klen, ctx_t *ctx, const struct attempt_plan *plan,
                             const struct upstream_req *req, struct upstream_resp *resp,
                             struct attempt_info *info, const struct degraded_entry **hit);

/* How long an answer resp of a backend configured with conf may be served
 * fresh, in ms (0: not at all). */
uint32_t cache_fresh_ms(const struct cache_conf *conf, const struct upstream_resp *resp);

#endif
