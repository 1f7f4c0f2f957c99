/*
 * Tests for gateway/resolver.c: literals answered at once, a name answered
 * through -EAGAIN + done on the waiter's loop, negative answers, refresh,
 * cancel, and free with waiters still pending (clean under ASan and TSan).
 * Only loopback names and the reserved ".invalid" TLD (RFC 6761) are
 * resolved; waits are bounded and generous (a resolver may be slow).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <time.h>

#include <cmocka.h>

#include "core/loop.h"
#include "gateway/resolver.h"

#define WAIT_NS (60ull * 1000000000ull)

struct waiter {
    int calls;
    pthread_t thread;
};

static void on_done(void *arg)
{
    struct waiter *w = arg;
    w->calls++;
    w->thread = pthread_self();
}

static bool run_until(loop_t *loop, const int *flag)
{
    uint64_t end = mono_ns() + WAIT_NS;
    while (!*flag) {
        if (mono_ns() > end) return false;
        loop_run_once(loop, 50);
    }
    return true;
}

static int setup(void **state)
{
    loop_t *loop = loop_new();
    *state = loop;
    return loop ? 0 : -1;
}

static int teardown(void **state)
{
    loop_free(*state);
    return 0;
}

static void assert_loopback(const struct resolver_addrs *a, unsigned i, uint16_t port)
{
    const struct sockaddr_storage *ss = &a->addr[i];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const void *)ss;
        assert_int_equal(a->len[i], sizeof *s4);
        assert_int_equal(ntohs(s4->sin_port), port);
        assert_int_equal(ntohl(s4->sin_addr.s_addr) >> 24, 127);
    } else {
        assert_int_equal(ss->ss_family, AF_INET6);
        const struct sockaddr_in6 *s6 = (const void *)ss;
        assert_int_equal(a->len[i], sizeof *s6);
        assert_int_equal(ntohs(s6->sin6_port), port);
        assert_true(IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr));
    }
}

static void test_literals_at_once(void **state)
{
    loop_t *loop = *state;
    struct resolver *r = resolver_new(60);
    assert_non_null(r);
    struct resolver_addrs a;
    struct waiter w = {0};
    assert_int_equal(resolver_lookup(r, "127.0.0.1", 8080, &a, loop, on_done, &w), 0);
    assert_int_equal(a.n, 1);
    assert_int_equal(a.addr[0].ss_family, AF_INET);
    assert_loopback(&a, 0, 8080);
    assert_int_equal(resolver_lookup(r, "::1", 443, &a, loop, on_done, &w), 0);
    assert_int_equal(a.n, 1);
    assert_int_equal(a.addr[0].ss_family, AF_INET6);
    assert_loopback(&a, 0, 443);
    assert_int_equal(resolver_lookup(r, "[::1]", 1, &a, loop, on_done, &w), 0);
    assert_loopback(&a, 0, 1);
    /* not literals: bad input */
    assert_int_equal(resolver_lookup(r, "", 1, &a, loop, on_done, &w), -EINVAL);
    assert_int_equal(resolver_lookup(r, "[]", 1, &a, loop, on_done, &w), -EINVAL);
    char longname[RESOLVER_MAX_NAME + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(resolver_lookup(r, longname, 1, &a, loop, on_done, &w), -EINVAL);
    /* the thread never heard of any of them */
    struct resolver_stats st;
    resolver_stats(r, &st);
    assert_int_equal(st.names, 0);
    resolver_free(r);
    assert_int_equal(w.calls, 0);
}

static void test_localhost_via_thread(void **state)
{
    loop_t *loop = *state;
    struct resolver *r = resolver_new(60);
    assert_non_null(r);
    struct resolver_addrs a;
    struct waiter w1 = {0}, w2 = {0};
    assert_int_equal(resolver_lookup(r, "localhost", 9000, &a, loop, on_done, &w1), -EAGAIN);
    /* a second caller of the same name waits on the same resolution */
    int rc = resolver_lookup(r, "localhost", 9001, &a, loop, on_done, &w2);
    assert_true(rc == -EAGAIN || rc == 0);
    assert_true(run_until(loop, &w1.calls));
    assert_true(pthread_equal(w1.thread, pthread_self())); /* ran on the loop's thread */
    if (rc == -EAGAIN) assert_true(run_until(loop, &w2.calls));
    assert_int_equal(resolver_lookup(r, "localhost", 9002, &a, loop, on_done, &w1), 0);
    assert_true(a.n >= 1 && a.n <= RESOLVER_MAX_ADDRS);
    for (unsigned i = 0; i < a.n; i++)
        assert_loopback(&a, i, 9002);
    struct resolver_stats st;
    resolver_stats(r, &st);
    assert_int_equal(st.names, 1);
    assert_int_equal(st.resolutions, 1);
    assert_int_equal(w1.calls, 1);
    resolver_free(r);
}

static void test_negative_answer(void **state)
{
    loop_t *loop = *state;
    struct resolver *r = resolver_new(60);
    assert_non_null(r);
    struct resolver_addrs a;
    struct waiter w = {0};
    assert_int_equal(resolver_lookup(r, "nonexistent.invalid", 80, &a, loop, on_done, &w), -EAGAIN);
    assert_true(run_until(loop, &w.calls));
    assert_int_equal(resolver_lookup(r, "nonexistent.invalid", 80, &a, loop, on_done, &w), -ENOENT);
    struct resolver_stats st;
    resolver_stats(r, &st);
    assert_true(st.failures >= 1);
    resolver_free(r);
    assert_int_equal(w.calls, 1);
}

static void test_refresh(void **state)
{
    loop_t *loop = *state;
    struct resolver *r = resolver_new(1);
    assert_non_null(r);
    struct resolver_addrs a;
    struct waiter w = {0};
    assert_int_equal(resolver_lookup(r, "localhost", 80, &a, loop, on_done, &w), -EAGAIN);
    resolver_prefetch(r, "nonexistent.invalid");
    assert_true(run_until(loop, &w.calls));
    /* both names are resolved again, about once a second each */
    uint64_t end = mono_ns() + WAIT_NS;
    struct resolver_stats st;
    do {
        loop_run_once(loop, 100);
        resolver_stats(r, &st);
    } while (st.resolutions < 6 && mono_ns() < end);
    assert_true(st.resolutions >= 6);
    assert_int_equal(st.names, 2);
    /* answers stay valid across refreshes, lock-free */
    assert_int_equal(resolver_lookup(r, "localhost", 80, &a, NULL, NULL, NULL), 0);
    assert_int_equal(resolver_lookup(r, "nonexistent.invalid", 80, &a, NULL, NULL, NULL), -ENOENT);
    resolver_free(r);
    assert_int_equal(w.calls, 1);
}

/* A reload's shorter refresh applies to names already known: with an hour
 * nothing is resolved again; after resolver_set_refresh(1) it is. */
static void test_set_refresh(void **state)
{
    loop_t *loop = *state;
    struct resolver *r = resolver_new(3600);
    assert_non_null(r);
    struct resolver_addrs a;
    struct waiter w = {0};
    assert_int_equal(resolver_lookup(r, "localhost", 80, &a, loop, on_done, &w), -EAGAIN);
    assert_true(run_until(loop, &w.calls));
    struct resolver_stats st;
    resolver_stats(r, &st);
    unsigned first = st.resolutions;
    resolver_set_refresh(r, 1);
    uint64_t end = mono_ns() + WAIT_NS;
    do {
        loop_run_once(loop, 100);
        resolver_stats(r, &st);
    } while (st.resolutions < first + 2 && mono_ns() < end);
    assert_true(st.resolutions >= first + 2);
    assert_int_equal(resolver_lookup(r, "localhost", 80, &a, NULL, NULL, NULL), 0);
    resolver_free(r);
}

static void wait_published(struct resolver *r)
{
    uint64_t end = mono_ns() + WAIT_NS;
    struct resolver_stats st;
    do {
        resolver_stats(r, &st);
        if (st.published >= 1) return;
        nanosleep(&(struct timespec){0, 1000000}, NULL); /* poll, 1 ms */
    } while (mono_ns() < end);
    fail_msg("nothing published");
}

static void test_cancel(void **state)
{
    loop_t *loop = *state;
    for (int round = 0; round < 5; round++) {
        struct resolver *r = resolver_new(60);
        assert_non_null(r);
        struct resolver_addrs a;
        struct waiter w = {0};
        /* a new resolver knows nothing: the first lookup always waits */
        assert_int_equal(resolver_lookup(r, "localhost", 80, &a, loop, on_done, &w), -EAGAIN);
        unsigned removed = resolver_cancel(r, loop, on_done, &w);
        assert_true(removed <= 1);
        /* published counts after the waiters were handed over */
        wait_published(r);
        if (!removed) {
            /* not removed: it was already on its way to the loop */
            assert_true(run_until(loop, &w.calls));
        } else {
            /* removed: never called, even once everything handed over has run */
            for (int i = 0; i < 5; i++) loop_run_once(loop, 0);
            assert_int_equal(w.calls, 0);
        }
        assert_int_equal(resolver_cancel(r, loop, on_done, &w), 0);
        assert_int_equal(resolver_lookup(r, "localhost", 80, &a, loop, on_done, &w), 0);
        resolver_free(r);
    }
}

/* Waiters from another thread's loop and names still in flight when the
 * resolver goes away: nothing leaks, nothing runs after free but what was
 * already handed to a loop. */
static void test_free_with_pending_waiters(void **state)
{
    loop_t *loop = *state;
    for (int round = 0; round < 3; round++) {
        struct resolver *r = resolver_new(60);
        assert_non_null(r);
        static struct waiter w[6];
        memset(w, 0, sizeof w);
        struct resolver_addrs a;
        const char *names[] = {"localhost", "a.invalid", "b.invalid",
                               "localhost", "c.invalid", "ip6-localhost"};
        for (int i = 0; i < 6; i++) {
            int rc = resolver_lookup(r, names[i], 80, &a, loop, on_done, &w[i]);
            assert_true(rc == -EAGAIN || rc == 0 || rc == -ENOENT);
        }
        resolver_free(r);
        /* whatever was handed over runs once; the rest never */
        for (int i = 0; i < 5; i++)
            loop_run_once(loop, 0);
        for (int i = 0; i < 6; i++)
            assert_true(w[i].calls <= 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_literals_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_localhost_via_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_negative_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_refresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_pending_waiters, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
