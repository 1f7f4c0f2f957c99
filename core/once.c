/*
 * once: a three-state futex word. The winner of the NEW -> RUNNING
 * compare-and-swap runs fn, then publishes DONE with a release exchange and
 * wakes sleepers only when one announced itself (state WAITED), so the
 * uncontended first call costs no system call.
 */
#include "core/once.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

static void futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
    /* EAGAIN (value changed) and EINTR just send us back to re-check */
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

void once_do_slow(once_t *o, void (*fn)(void *arg), void *arg)
{
    uint32_t s = ONCE_STATE_NEW;
    if (atomic_compare_exchange_strong_explicit(&o->state, &s, ONCE_STATE_RUNNING,
                                                memory_order_acquire, memory_order_acquire)) {
        fn(arg);
        if (atomic_exchange_explicit(&o->state, ONCE_STATE_DONE, memory_order_release) ==
            ONCE_STATE_WAITED)
            futex_wake_all(&o->state);
        return;
    }
    for (;;) {
        if (s == ONCE_STATE_DONE) return; /* loaded with acquire: fn's writes are visible */
        if (s == ONCE_STATE_RUNNING &&
            !atomic_compare_exchange_strong_explicit(&o->state, &s, ONCE_STATE_WAITED,
                                                     memory_order_acquire, memory_order_acquire))
            continue; /* s now holds the fresh state */
        futex_wait(&o->state, ONCE_STATE_WAITED);
        s = atomic_load_explicit(&o->state, memory_order_acquire);
    }
}
