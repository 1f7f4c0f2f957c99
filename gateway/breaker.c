/* breaker: the state machine of gateway/breaker.h (lock-free, see there). */
#include "gateway/breaker.h"

enum breaker_verdict breaker_allow(struct breaker *b, uint64_t now_ns, uint64_t open_ns)
{
    int st = atomic_load_explicit(&b->state, memory_order_acquire);
    if (st == BREAKER_CLOSED) return BREAKER_PASS;
    if (st == BREAKER_HALF_OPEN) return BREAKER_REJECT;
    uint64_t since = atomic_load_explicit(&b->opened_ns, memory_order_relaxed);
    if (now_ns - since < open_ns) return BREAKER_REJECT;
    int expect = BREAKER_OPEN;
    if (atomic_compare_exchange_strong_explicit(&b->state, &expect, BREAKER_HALF_OPEN,
                                                memory_order_acq_rel, memory_order_acquire))
        return BREAKER_PROBE;
    return expect == BREAKER_CLOSED ? BREAKER_PASS : BREAKER_REJECT;
}

static void open_now(struct breaker *b, int from, uint64_t now_ns)
{
    atomic_store_explicit(&b->opened_ns, now_ns, memory_order_relaxed);
    int expect = from;
    atomic_compare_exchange_strong_explicit(&b->state, &expect, BREAKER_OPEN, memory_order_release,
                                            memory_order_relaxed);
}

void breaker_record(struct breaker *b, enum breaker_result res, bool probe, uint32_t threshold,
                    uint64_t now_ns)
{
    if (probe) {
        /* only the probe's owner leaves half-open */
        if (res == BREAKER_SUCCESS) {
            atomic_store_explicit(&b->failures, 0, memory_order_relaxed);
            atomic_store_explicit(&b->state, BREAKER_CLOSED, memory_order_release);
        } else if (res == BREAKER_FAILURE) {
            open_now(b, BREAKER_HALF_OPEN, now_ns);
        } else {
            /* a cancelled probe proves nothing: open again, already due */
            atomic_store_explicit(&b->state, BREAKER_OPEN, memory_order_release);
        }
        return;
    }
    if (res == BREAKER_SUCCESS) {
        if (atomic_load_explicit(&b->failures, memory_order_relaxed))
            atomic_store_explicit(&b->failures, 0, memory_order_relaxed);
        return;
    }
    if (res != BREAKER_FAILURE || threshold == 0) return;
    uint32_t n = atomic_fetch_add_explicit(&b->failures, 1, memory_order_relaxed) + 1;
    /* a late failure of a call started before the breaker opened must not
     * push the open time on: only a closed breaker opens here */
    if (n >= threshold && breaker_state(b) == BREAKER_CLOSED) {
        atomic_store_explicit(&b->failures, 0, memory_order_relaxed);
        open_now(b, BREAKER_CLOSED, now_ns);
    }
}

enum breaker_state breaker_state(const struct breaker *b)
{
    return (enum breaker_state)atomic_load_explicit(&b->state, memory_order_acquire);
}
