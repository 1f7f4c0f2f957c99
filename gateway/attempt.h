/*
 * attempt: one backend call as a series of attempts (README.md "Upstream
 * groups"): picks a group's host, asks the host's breaker, calls, tells
 * the breaker what happened, and retries (GET/HEAD, retry_on, backoff
 * 10 ms x 2^n with jitter, bounded by the time left, under the process's
 * retry budget) or hedges (a second attempt after hedge_after_ms; the first
 * good answer wins, the other is cancelled, which closes its connection).
 *
 * Every attempt runs under its own context: the backend's timeout_ms from
 * the attempt's start, capped by the request deadline, below the call's
 * group context (so a sibling's failure or the client leaving cancels it);
 * the caller makes none of its own. Every attempt sends
 * "X-Gateway-Attempt: N" and its own "X-Request-Timeout-Ms": the time that
 * attempt has left when it is sent (a retry after a backoff sends less).
 *
 * The fast path: a backend with no group, no breaker, no retries and no
 * hedging makes exactly one attempt with that one context and touches no
 * process-wide state (no budget, no registry entry, no shared atomic).
 */
#ifndef GATEWAY_ATTEMPT_H
#define GATEWAY_ATTEMPT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/ctx.h"
#include "gateway/config.h"
#include "gateway/metrics.h"
#include "gateway/upstream.h"

/* What the attempts of one call did (for Server-Timing). */
struct attempt_info {
    int attempts;     /* sent */
    bool open;        /* the answer is "breaker open": nothing was sent */
    bool retried;     /* the answer came from a retry */
    bool hedged;      /* the answer came from a hedge */
};

/* One exchange on the wire, as upstream_call documents it. */
typedef void (*attempt_transport_fn)(struct upstream *up, ctx_t *ctx,
                                     const struct upstream_req *req, struct upstream_resp *resp);

/* What the attempt loop needs of one call besides the request. */
struct attempt_plan {
    const struct config *cfg;     /* pinned by the caller (a shared call retains it) */
    const struct backend_conf *b; /* in cfg */
    uint64_t deadline_ns;         /* the request's */
    struct metrics *metrics;      /* the worker's (attempt counters); NULL: none */
    /* Every attempt's exchange; NULL: upstream_call. A unit test puts a
     * fake here and runs the whole policy on a loop without sockets. */
    attempt_transport_fn transport;
};

/* Performs the call req (req->origin is the backend's origin as written:
 * a group name stands for one of its hosts) with resp->body initialised by
 * the caller; fills resp as upstream_call does (an open breaker:
 * UP_ERROR, error "breaker open", info->open). gctx: the call's group
 * context, bounded by the request's deadline, never by the backend's. */
void attempt_call(struct upstream *up, ctx_t *gctx, const struct attempt_plan *plan,
                  const struct upstream_req *req, struct upstream_resp *resp,
                  struct attempt_info *info);

#endif
