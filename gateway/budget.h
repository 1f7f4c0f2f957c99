/*
 * budget: the per-process retry budget, a token bucket that retries and
 * hedges draw on (README.md, defaults.retry_budget_percent).
 *
 * Every first attempt adds percent/100 of a token, BUDGET_REFILL_PER_S
 * tokens are added per second, the bucket holds at most BUDGET_CAP tokens
 * and starts full; a retry or hedge takes one token and is not sent when
 * none is left. So N first attempts over D seconds allow at most
 * BUDGET_CAP + N * percent/100 + BUDGET_REFILL_PER_S * D retries.
 *
 * Lock-free, shared by every worker: tokens are kept in thousandths in one
 * atomic, changed only by compare-and-swap loops that never let it go below
 * 0 or above the cap; the refill clock is advanced by a CAS on last_ns, so
 * of two threads refilling at once exactly one adds the elapsed time's
 * tokens (the clock moves by the whole milli-tokens added, so no remainder
 * is lost). Times come from the caller (monotonic ns) for the unit tests.
 */
#ifndef GATEWAY_BUDGET_H
#define GATEWAY_BUDGET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define BUDGET_CAP          10
#define BUDGET_REFILL_PER_S 10

struct budget {
    _Atomic int64_t milli;    /* tokens * 1000 */
    _Atomic uint64_t last_ns; /* refilled up to here */
    _Atomic uint64_t exhausted;
};

/* A full bucket, refill clock at now_ns. */
void budget_init(struct budget *b, uint64_t now_ns);
/* A first attempt: adds percent/100 of a token. */
void budget_first(struct budget *b, uint32_t percent, uint64_t now_ns);
/* A retry or hedge wants to go: true when it took a token; false (counted
 * in exhausted) when none was left. */
bool budget_take(struct budget *b, uint64_t now_ns);
/* Tokens left, in thousandths (tests, metrics). */
int64_t budget_milli(struct budget *b, uint64_t now_ns);
uint64_t budget_exhausted(const struct budget *b);

/* The process's bucket, started full on first use. */
struct budget *budget_process(void);

#endif
