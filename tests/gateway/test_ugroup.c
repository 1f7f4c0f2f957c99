/* Tests for gateway/ugroup.c: the balancer (least_inflight, round_robin,
 * another host for a retry, unhealthy hosts skipped, panic mode when all
 * are down, open breakers skipped) and the registry's identity. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "gateway/ugroup.h"

#define MS 1000000ull

static const char *hosts2[] = {"10.0.0.1:1", "10.0.0.2:2"};

static struct ugroup_conf group(const char *name, enum balance_kind bal)
{
    return (struct ugroup_conf){.name = name, .hosts = hosts2, .n_hosts = 2, .balance = bal};
}

static const char *pick(const struct ugroup_conf *u, const struct ugroup_ent *avoid)
{
    struct ugroup_pick p;
    ugroup_pick(u, avoid, 1000 * MS, &p);
    assert_non_null(p.host);
    assert_ptr_equal(p.ent, ugroup_get(UG_HOST, p.host, NULL));
    return p.host;
}

static void test_registry(void **state)
{
    (void)state;
    struct ugroup_ent *a = ugroup_get(UG_HOST, "x:1", NULL);
    assert_non_null(a);
    assert_ptr_equal(ugroup_get(UG_HOST, "x:1", NULL), a);
    assert_ptr_not_equal(ugroup_get(UG_GROUP, "x:1", NULL), a);
    struct ugroup_ent *m = ugroup_get(UG_MEMBER, "g", "x:1");
    assert_ptr_not_equal(m, a);
    assert_ptr_equal(ugroup_get(UG_MEMBER, "g", "x:1"), m);
    assert_ptr_not_equal(ugroup_get(UG_MEMBER, "g", "x:2"), m);
}

static void test_round_robin_alternates(void **state)
{
    (void)state;
    struct ugroup_conf u = group("rr", BALANCE_ROUND_ROBIN);
    const char *first = pick(&u, NULL);
    for (int i = 0; i < 10; i++) {
        const char *next = pick(&u, NULL);
        assert_string_not_equal(next, first);
        first = next;
    }
}

static void test_least_inflight(void **state)
{
    (void)state;
    struct ugroup_conf u = group("li", BALANCE_LEAST_INFLIGHT);
    struct ugroup_ent *busy = ugroup_get(UG_HOST, hosts2[0], NULL);
    atomic_store(&busy->inflight, 3);
    for (int i = 0; i < 10; i++)
        assert_string_equal(pick(&u, NULL), hosts2[1]);
    atomic_store(&busy->inflight, 0);
    /* equal: both are used */
    int n0 = 0;
    for (int i = 0; i < 10; i++)
        n0 += strcmp(pick(&u, NULL), hosts2[0]) == 0;
    assert_int_equal(n0, 5);
    /* a retry avoids the host that failed even when it is idler */
    struct ugroup_ent *other = ugroup_get(UG_HOST, hosts2[1], NULL);
    atomic_store(&other->inflight, 5);
    assert_string_equal(pick(&u, busy), hosts2[1]);
    atomic_store(&other->inflight, 0);
}

static void test_health_and_panic(void **state)
{
    (void)state;
    struct ugroup_conf u = group("hc", BALANCE_ROUND_ROBIN);
    u.health.path = "/healthz";
    struct ugroup_ent *m0 = ugroup_get(UG_MEMBER, "hc", hosts2[0]);
    struct ugroup_ent *m1 = ugroup_get(UG_MEMBER, "hc", hosts2[1]);
    atomic_store(&m0->down, true);
    for (int i = 0; i < 6; i++)
        assert_string_equal(pick(&u, NULL), hosts2[1]);
    /* even a retry that avoids it: the unhealthy one is no choice */
    assert_string_equal(pick(&u, ugroup_get(UG_HOST, hosts2[1], NULL)), hosts2[1]);
    atomic_store(&m1->down, true); /* all down: panic mode uses all */
    int n0 = 0;
    for (int i = 0; i < 6; i++)
        n0 += strcmp(pick(&u, NULL), hosts2[0]) == 0;
    assert_int_equal(n0, 3);
    atomic_store(&m0->down, false);
    atomic_store(&m1->down, false);
}

static void test_open_breaker_skipped(void **state)
{
    (void)state;
    static const char *h[] = {"10.0.1.1:1", "10.0.1.2:2"};
    struct ugroup_conf u = {.name = "br", .hosts = h, .n_hosts = 2,
                              .breaker = {.consecutive_failures = 1, .open_ms = 100}};
    struct ugroup_ent *e = ugroup_get(UG_HOST, h[0], NULL);
    breaker_record(&e->br, BREAKER_FAILURE, false, 1, 950 * MS);
    for (int i = 0; i < 4; i++)
        assert_string_equal(pick(&u, NULL), h[1]);
    /* once due (at 1050 ms) it is a candidate again */
    struct ugroup_pick p;
    int n0 = 0;
    for (int i = 0; i < 4; i++) {
        ugroup_pick(&u, NULL, 1050 * MS, &p);
        n0 += p.ent == e;
    }
    assert_int_equal(n0, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_round_robin_alternates),
        cmocka_unit_test(test_least_inflight),
        cmocka_unit_test(test_health_and_panic),
        cmocka_unit_test(test_open_breaker_skipped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
