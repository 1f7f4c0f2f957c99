/*
 * breaker: one host's circuit breaker (closed -> open -> half-open), per
 * process, shared by every worker.
 *
 * The state is three atomics and no lock: state, the count of consecutive
 * failures, and the time the breaker opened. Race-freedom: every transition
 * is a compare-and-swap on state, so exactly one thread opens a breaker,
 * exactly one thread (the one whose CAS open -> half-open wins) sends the
 * probe, and only the probe's owner moves half-open to closed or open.
 * opened_ns is written before state is published with release order and
 * read after an acquire load of state, so a reader that sees "open" sees
 * the time it opened. The failure counter is a relaxed counter: two workers
 * failing at once both count, and whichever reaches the threshold first
 * opens it (the other's CAS fails harmlessly).
 *
 * Times come from the caller (monotonic ns), so the unit tests drive a fake
 * clock.
 */
#ifndef GATEWAY_BREAKER_H
#define GATEWAY_BREAKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum breaker_state { BREAKER_CLOSED = 0, BREAKER_OPEN = 1, BREAKER_HALF_OPEN = 2 };

/* What breaker_allow decided for one call. */
enum breaker_verdict {
    BREAKER_PASS,  /* closed: call */
    BREAKER_PROBE, /* the one probe after open_ms: call, then record with probe = true */
    BREAKER_REJECT /* open (or a probe is out): fail at once with outcome "open" */
};

/* What one call taught the breaker. */
enum breaker_result {
    BREAKER_SUCCESS, /* any answer that is not a 5xx (4xx included) */
    BREAKER_FAILURE, /* transport error, 5xx, timeout */
    BREAKER_NEUTRAL  /* cancelled by the client: says nothing about the host */
};

struct breaker {
    _Atomic int state;           /* enum breaker_state */
    _Atomic uint32_t failures;   /* consecutive failures while closed */
    _Atomic uint64_t opened_ns;  /* when it last opened */
};

/* threshold == 0: no breaker (always BREAKER_PASS). */
enum breaker_verdict breaker_allow(struct breaker *b, uint64_t now_ns, uint64_t open_ns);
/* Records a call's result; probe: its verdict was BREAKER_PROBE. */
void breaker_record(struct breaker *b, enum breaker_result res, bool probe, uint32_t threshold,
                    uint64_t now_ns);
enum breaker_state breaker_state(const struct breaker *b);

#endif
