/* Tests for gateway/breaker.c: the state machine on a fake clock, and many
 * threads failing and probing at once (run under TSan in the thread build):
 * one opening, exactly one probe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>

#include "gateway/breaker.h"

#define MS 1000000ull

static void test_opens_after_n_consecutive_failures(void **state)
{
    (void)state;
    struct breaker b = {0};
    uint64_t t = 1000 * MS;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(breaker_allow(&b, t, 100 * MS), BREAKER_PASS);
        breaker_record(&b, BREAKER_FAILURE, false, 3, t);
    }
    breaker_record(&b, BREAKER_SUCCESS, false, 3, t); /* a success resets the count */
    for (int i = 0; i < 2; i++)
        breaker_record(&b, BREAKER_FAILURE, false, 3, t);
    breaker_record(&b, BREAKER_NEUTRAL, false, 3, t); /* a cancellation says nothing */
    assert_int_equal(breaker_state(&b), BREAKER_CLOSED);
    breaker_record(&b, BREAKER_FAILURE, false, 3, t);
    assert_int_equal(breaker_state(&b), BREAKER_OPEN);
    assert_int_equal(breaker_allow(&b, t + 99 * MS, 100 * MS), BREAKER_REJECT);
    /* a late failure of an older call does not push the open time on */
    breaker_record(&b, BREAKER_FAILURE, false, 3, t + 50 * MS);
    assert_int_equal(breaker_allow(&b, t + 100 * MS, 100 * MS), BREAKER_PROBE);
    assert_int_equal(breaker_state(&b), BREAKER_HALF_OPEN);
    assert_int_equal(breaker_allow(&b, t + 101 * MS, 100 * MS), BREAKER_REJECT); /* one probe */
}

static void test_probe_success_closes_failure_reopens(void **state)
{
    (void)state;
    struct breaker b = {0};
    uint64_t t = 5000 * MS;
    breaker_record(&b, BREAKER_FAILURE, false, 1, t);
    assert_int_equal(breaker_allow(&b, t + 10 * MS, 10 * MS), BREAKER_PROBE);
    breaker_record(&b, BREAKER_FAILURE, true, 1, t + 20 * MS);
    assert_int_equal(breaker_state(&b), BREAKER_OPEN);
    assert_int_equal(breaker_allow(&b, t + 25 * MS, 10 * MS), BREAKER_REJECT); /* reopened at +20 */
    assert_int_equal(breaker_allow(&b, t + 30 * MS, 10 * MS), BREAKER_PROBE);
    breaker_record(&b, BREAKER_NEUTRAL, true, 1, t + 31 * MS); /* cancelled probe: due again */
    assert_int_equal(breaker_allow(&b, t + 31 * MS, 10 * MS), BREAKER_PROBE);
    breaker_record(&b, BREAKER_SUCCESS, true, 1, t + 32 * MS);
    assert_int_equal(breaker_state(&b), BREAKER_CLOSED);
    assert_int_equal(breaker_allow(&b, t + 33 * MS, 10 * MS), BREAKER_PASS);
}

static void test_zero_threshold_never_opens(void **state)
{
    (void)state;
    struct breaker b = {0};
    for (int i = 0; i < 100; i++)
        breaker_record(&b, BREAKER_FAILURE, false, 0, 1);
    assert_int_equal(breaker_state(&b), BREAKER_CLOSED);
}

#define THREADS 8
#define ROUNDS  20000

struct shared {
    struct breaker b;
    _Atomic int probes;
    _Atomic int go;
};

static void *hammer(void *arg)
{
    struct shared *s = arg;
    while (!atomic_load(&s->go)) {
    }
    for (int i = 0; i < ROUNDS; i++) {
        enum breaker_verdict v = breaker_allow(&s->b, 1000 * MS, 10 * MS);
        if (v == BREAKER_PROBE) atomic_fetch_add(&s->probes, 1);
        else if (v == BREAKER_PASS) breaker_record(&s->b, BREAKER_FAILURE, false, 5, 0);
    }
    return NULL;
}

static void test_threads_one_probe(void **state)
{
    (void)state;
    static struct shared s;
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &s), 0);
    atomic_store(&s.go, 1);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    /* opened at time 0 by failures; at 1000 ms every allow is due, one wins
     * the probe and nobody records its result: it stays half-open */
    assert_int_equal(atomic_load(&s.probes), 1);
    assert_int_equal(breaker_state(&s.b), BREAKER_HALF_OPEN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_after_n_consecutive_failures),
        cmocka_unit_test(test_probe_success_closes_failure_reopens),
        cmocka_unit_test(test_zero_threshold_never_opens),
        cmocka_unit_test(test_threads_one_probe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
