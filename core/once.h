/*
 * once: run a function exactly once across threads (Go's sync.Once).
 *
 *     static once_t init = ONCE_INIT;
 *     once_do(&init, setup, NULL);
 *
 * Every once_do call returns after fn has finished, and sees everything fn
 * wrote (acquire/release). The fast path, once fn has run, is one acquire
 * load, inlined. Callers that arrive while fn runs sleep on a futex, so they
 * block their whole thread: keep fn short and never park a coroutine in it.
 * fn calling once_do on the same once_t deadlocks, as in Go.
 */
#ifndef CORE_ONCE_H
#define CORE_ONCE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct once {
    _Atomic uint32_t state; /* private: ONCE_STATE_* */
} once_t;

#define ONCE_INIT                                                                                  \
    {                                                                                              \
        0                                                                                          \
    }

enum {
    ONCE_STATE_NEW = 0,
    ONCE_STATE_RUNNING = 1, /* fn runs, nobody waits */
    ONCE_STATE_WAITED = 2,  /* fn runs, someone sleeps on the futex */
    ONCE_STATE_DONE = 3,
};

/* Runs fn(arg) if no once_do on o has run it yet; returns after it ran. */
static inline void once_do(once_t *o, void (*fn)(void *arg), void *arg);
/* True once fn has returned (acquire: its writes are visible then). */
static inline bool once_done(const once_t *o);

/* The slow path of once_do; call once_do instead. */
void once_do_slow(once_t *o, void (*fn)(void *arg), void *arg);

static inline void once_do(once_t *o, void (*fn)(void *arg), void *arg)
{
    if (__builtin_expect(atomic_load_explicit(&o->state, memory_order_acquire) == ONCE_STATE_DONE,
                         1))
        return;
    once_do_slow(o, fn, arg);
}

static inline bool once_done(const once_t *o)
{
    return atomic_load_explicit(&((once_t *)o)->state, memory_order_acquire) == ONCE_STATE_DONE;
}

#endif
