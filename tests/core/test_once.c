/* once: fn runs exactly once, and every caller sees what it wrote; callers
 * that arrive while fn runs sleep and are woken (checked to happen in every
 * round of the race). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include "core/once.h"

#define NTHREADS 4
#define ROUNDS   50

struct shared {
    once_t once;
    int calls;       /* plain on purpose: TSan checks the happens-before */
    int payload;     /* written by fn, read by every thread after once_do */
    bool saw_waiter; /* fn saw ONCE_STATE_WAITED: a caller took the sleeping path */
    pthread_barrier_t start;
    int seen[NTHREADS];
};

struct worker {
    struct shared *sh;
    int idx;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void init_fn(void *arg)
{
    struct shared *sh = arg;
    /* Hold the once until a caller announced it sleeps (state WAITED), so
     * the sleeping path and the wake-up run in every round; bounded so a
     * broken once_do cannot hang the test, and then the round fails. */
    uint64_t until = now_ns() + 30000000000u;
    while (atomic_load(&sh->once.state) != ONCE_STATE_WAITED && now_ns() < until)
        sched_yield();
    sh->saw_waiter = atomic_load(&sh->once.state) == ONCE_STATE_WAITED;
    sh->calls++;
    sh->payload = 42;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct shared *sh = w->sh;
    pthread_barrier_wait(&sh->start);
    once_do(&sh->once, init_fn, sh);
    sh->seen[w->idx] = sh->payload;
    return NULL;
}

static void test_race(void **state)
{
    (void)state;
    for (int round = 0; round < ROUNDS; round++) {
        struct shared sh = {.once = ONCE_INIT};
        pthread_barrier_init(&sh.start, NULL, NTHREADS);
        pthread_t th[NTHREADS];
        struct worker w[NTHREADS];
        for (int i = 0; i < NTHREADS; i++) {
            w[i] = (struct worker){&sh, i};
            assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
        }
        for (int i = 0; i < NTHREADS; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&sh.start);
        assert_int_equal(sh.calls, 1);
        assert_true(sh.saw_waiter); /* the path under test was taken */
        assert_true(once_done(&sh.once));
        for (int i = 0; i < NTHREADS; i++)
            assert_int_equal(sh.seen[i], 42);
    }
}

static void count_fn(void *arg)
{
    (*(int *)arg)++;
}

static void test_sequential(void **state)
{
    (void)state;
    once_t o = ONCE_INIT;
    int n = 0;
    assert_false(once_done(&o));
    once_do(&o, count_fn, &n);
    assert_int_equal(n, 1);
    assert_true(once_done(&o));
    once_do(&o, count_fn, &n);
    once_do(&o, count_fn, &n);
    assert_int_equal(n, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequential),
        cmocka_unit_test(test_race),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
