/* Tests for gateway/budget.c: the token bucket's arithmetic on a fake clock
 * (starts full, 0.2 token per first attempt, 10 per second, cap 10), and
 * threads taking tokens at once never take more than there are. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>

#include "gateway/budget.h"

#define MS 1000000ull

static void test_arithmetic(void **state)
{
    (void)state;
    struct budget b;
    uint64_t t = 1000 * MS;
    budget_init(&b, t);
    assert_int_equal(budget_milli(&b, t), 10000);
    int took = 0;
    while (budget_take(&b, t))
        took++;
    assert_int_equal(took, 10); /* starts full */
    assert_int_equal(budget_exhausted(&b), 1);
    for (int i = 0; i < 4; i++)
        budget_first(&b, 20, t);
    assert_int_equal(budget_milli(&b, t), 800);
    assert_false(budget_take(&b, t));
    budget_first(&b, 20, t);
    assert_true(budget_take(&b, t)); /* 5 first attempts = 1 token */
    assert_int_equal(budget_milli(&b, t), 0);
    /* 10 per second: 50 ms is half a token, 100 ms one */
    assert_int_equal(budget_milli(&b, t + 50 * MS), 500);
    assert_int_equal(budget_milli(&b, t + 100 * MS), 1000);
    assert_true(budget_take(&b, t + 100 * MS));
    /* the cap: an hour later there are 10 */
    assert_int_equal(budget_milli(&b, t + 3600000 * MS), 10000);
    for (int i = 0; i < 100; i++)
        budget_first(&b, 20, t + 3600000 * MS);
    assert_int_equal(budget_milli(&b, t + 3600000 * MS), 10000);
    /* small steps add up exactly: 100 x 0.1 ms = 10 ms = 0.1 token */
    budget_init(&b, 0);
    while (budget_take(&b, 0)) {
    }
    for (uint64_t k = 1; k <= 100; k++)
        budget_milli(&b, k * 100000);
    assert_int_equal(budget_milli(&b, 10 * MS), 100);
}

/* N first attempts over D seconds allow at most 10 + 0.2 N + 10 D. */
static void test_bound(void **state)
{
    (void)state;
    struct budget b;
    budget_init(&b, 0);
    int retries = 0;
    for (int i = 0; i < 1000; i++) { /* 1000 calls over 1 s, each wants a retry */
        uint64_t t = (uint64_t)i * MS;
        budget_first(&b, 20, t);
        retries += budget_take(&b, t);
    }
    assert_true(retries <= 10 + 200 + 10);
    assert_true(retries >= 200);
}

#define THREADS 8
static struct budget g_b;
static _Atomic int g_took;

static void *taker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++)
        if (budget_take(&g_b, 0)) atomic_fetch_add(&g_took, 1);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    budget_init(&g_b, 0);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, taker, NULL), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&g_took), 10);
    assert_int_equal(budget_exhausted(&g_b), THREADS * 1000 - 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arithmetic),
        cmocka_unit_test(test_bound),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
