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

static void attach(struct ugroup_conf *u)
{
    assert_int_equal(ugroup_attach_group(u), 0);
}

static const char *pick(const struct ugroup_conf *u, const struct ugroup_ent *avoid)
{
    struct ugroup_pick p;
    ugroup_pick(u, avoid, 1000 * MS, &p);
    assert_non_null(p.host);
    assert_non_null(p.ent);
    assert_ptr_equal(p.ent, u->host_ents[p.host == u->hosts[0] ? 0 : 1]);
    return p.host;
}

static void test_registry(void **state)
{
    (void)state;
    struct ugroup_ent *a = ugroup_ref(UG_HOST, "x:1", NULL);
    assert_non_null(a);
    assert_ptr_equal(ugroup_ref(UG_HOST, "x:1", NULL), a);
    assert_ptr_not_equal(ugroup_ref(UG_GROUP, "x:1", NULL), a);
    struct ugroup_ent *m = ugroup_ref(UG_MEMBER, "g", "x:1");
    assert_ptr_not_equal(m, a);
    assert_ptr_equal(ugroup_ref(UG_MEMBER, "g", "x:1"), m);
    assert_ptr_not_equal(ugroup_ref(UG_MEMBER, "g", "x:2"), m);
}

/* A reload: the new config's group is attached before the old one is
 * detached; a kept host keeps its state, a dropped one is freed (a later
 * use starts afresh). */
static void test_detach_keeps_shared_entries_only(void **state)
{
    (void)state;
    static const char *old_hosts[] = {"10.0.2.1:1", "10.0.2.2:2"};
    static const char *new_hosts[] = {"10.0.2.1:1"};
    struct ugroup_conf old = {.name = "rl", .hosts = old_hosts, .n_hosts = 2,
                              .health = {.path = "/h"}};
    struct ugroup_conf next = {.name = "rl", .hosts = new_hosts, .n_hosts = 1,
                               .health = {.path = "/h"}};
    attach(&old);
    breaker_record(&old.host_ents[0]->br, BREAKER_FAILURE, false, 1, 1);
    breaker_record(&old.host_ents[1]->br, BREAKER_FAILURE, false, 1, 1);
    atomic_store(&old.member_ents[0]->down, true);
    attach(&next);
    ugroup_detach_group(&old);
    assert_null(old.host_ents);
    assert_int_equal(breaker_state(&next.host_ents[0]->br), BREAKER_OPEN);
    assert_true(atomic_load(&next.member_ents[0]->down));
    assert_int_equal(next.host_ents[0]->refs, 1);
    /* the dropped host is gone: a new reference is a fresh entry */
    struct ugroup_ent *again = ugroup_ref(UG_HOST, old_hosts[1], NULL);
    assert_int_equal(again->refs, 1);
    assert_int_equal(breaker_state(&again->br), BREAKER_CLOSED);
    ugroup_unref(again);
    ugroup_detach_group(&next);
}

static void test_round_robin_alternates(void **state)
{
    (void)state;
    struct ugroup_conf u = group("rr", BALANCE_ROUND_ROBIN);
    attach(&u);
    const char *first = pick(&u, NULL);
    for (int i = 0; i < 10; i++) {
        const char *next = pick(&u, NULL);
        assert_string_not_equal(next, first);
        first = next;
    }
    ugroup_detach_group(&u);
}

/* Retries (and hedges) pick another host without moving the rotation: the
 * first attempts still go h0, h1, h2, h0, ... */
static void test_second_attempts_keep_the_rotation(void **state)
{
    (void)state;
    static const char *h[] = {"10.0.3.1:1", "10.0.3.2:2", "10.0.3.3:3"};
    struct ugroup_conf u = {.name = "rot", .hosts = h, .n_hosts = 3,
                            .balance = BALANCE_ROUND_ROBIN};
    attach(&u);
    struct ugroup_pick p;
    ugroup_pick(&u, NULL, 1000 * MS, &p);
    size_t i = (size_t)(p.ent == u.host_ents[0] ? 0 : p.ent == u.host_ents[1] ? 1 : 2);
    for (int k = 0; k < 6; k++) {
        ugroup_pick(&u, NULL, 1000 * MS, &p);
        i = (i + 1) % 3;
        assert_ptr_equal(p.host, h[i]);
        struct ugroup_ent *first = p.ent;
        for (int r = 0; r < k % 3 + 1; r++) { /* one to three retries */
            struct ugroup_pick q;
            ugroup_pick(&u, first, 1000 * MS, &q);
            assert_ptr_not_equal(q.ent, first);
        }
    }
    ugroup_detach_group(&u);
}

static void test_least_inflight(void **state)
{
    (void)state;
    struct ugroup_conf u = group("li", BALANCE_LEAST_INFLIGHT);
    attach(&u);
    struct ugroup_ent *busy = ugroup_ref(UG_HOST, hosts2[0], NULL);
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
    struct ugroup_ent *other = ugroup_ref(UG_HOST, hosts2[1], NULL);
    atomic_store(&other->inflight, 5);
    assert_string_equal(pick(&u, busy), hosts2[1]);
    atomic_store(&other->inflight, 0);
    ugroup_detach_group(&u);
}

static void test_health_and_panic(void **state)
{
    (void)state;
    struct ugroup_conf u = group("hc", BALANCE_ROUND_ROBIN);
    u.health.path = "/healthz";
    attach(&u);
    struct ugroup_ent *m0 = ugroup_ref(UG_MEMBER, "hc", hosts2[0]);
    struct ugroup_ent *m1 = ugroup_ref(UG_MEMBER, "hc", hosts2[1]);
    atomic_store(&m0->down, true);
    for (int i = 0; i < 6; i++)
        assert_string_equal(pick(&u, NULL), hosts2[1]);
    /* even a retry that avoids it: the unhealthy one is no choice */
    assert_string_equal(pick(&u, ugroup_ref(UG_HOST, hosts2[1], NULL)), hosts2[1]);
    atomic_store(&m1->down, true); /* all down: panic mode uses all */
    int n0 = 0;
    for (int i = 0; i < 6; i++)
        n0 += strcmp(pick(&u, NULL), hosts2[0]) == 0;
    assert_int_equal(n0, 3);
    atomic_store(&m0->down, false);
    atomic_store(&m1->down, false);
    ugroup_detach_group(&u);
}

static void test_open_breaker_skipped(void **state)
{
    (void)state;
    static const char *h[] = {"10.0.1.1:1", "10.0.1.2:2"};
    struct ugroup_conf u = {.name = "br", .hosts = h, .n_hosts = 2,
                              .breaker = {.consecutive_failures = 1, .open_ms = 100}};
    attach(&u);
    struct ugroup_ent *e = ugroup_ref(UG_HOST, h[0], NULL);
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
    ugroup_detach_group(&u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_detach_keeps_shared_entries_only),
        cmocka_unit_test(test_round_robin_alternates),
        cmocka_unit_test(test_second_attempts_keep_the_rotation),
        cmocka_unit_test(test_least_inflight),
        cmocka_unit_test(test_health_and_panic),
        cmocka_unit_test(test_open_breaker_skipped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
