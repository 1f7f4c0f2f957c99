#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "core/chan.h"
#include "core/loop.h"
#include "loop_test.h"

/* Runs the loop until *done reaches want; fails rather than hanging. */
static void run_until(loop_t *loop, const int *done, int want)
{
    uint64_t give_up = mono_ns() + 10000 * MS;
    while (*done < want) {
        assert_true(mono_ns() < give_up);
        loop_run_once(loop, 10);
    }
}

/* ---- ping-pong ---- */

#define ROUNDS 1000

struct pingpong {
    chan_t *ping, *pong;
    int done;
    int errors;
};

static void pinger(void *arg)
{
    struct pingpong *pp = arg;
    for (uintptr_t i = 1; i <= ROUNDS; i++) {
        void *v;
        if (chan_send(pp->ping, (void *)i, 0) || chan_recv(pp->pong, &v, 0) ||
            (uintptr_t)v != i + 1)
            pp->errors++;
    }
    pp->done++;
}

static void ponger(void *arg)
{
    struct pingpong *pp = arg;
    for (int i = 0; i < ROUNDS; i++) {
        void *v;
        if (chan_recv(pp->ping, &v, 0) || chan_send(pp->pong, (void *)((uintptr_t)v + 1), 0))
            pp->errors++;
    }
    pp->done++;
}

static void pingpong_with_cap(loop_t *loop, size_t cap)
{
    struct pingpong pp = {chan_new(cap), chan_new(cap), 0, 0};
    assert_non_null(pp.ping);
    assert_non_null(pp.pong);
    assert_non_null(loop_spawn(loop, ponger, &pp));
    assert_non_null(loop_spawn(loop, pinger, &pp));
    run_until(loop, &pp.done, 2);
    assert_int_equal(pp.errors, 0);
    assert_int_equal(chan_len(pp.ping), 0);
    chan_free(pp.ping);
    chan_free(pp.pong);
}

static void test_pingpong_cap1(void **state)
{
    pingpong_with_cap(*state, 1);
}

static void test_pingpong_unbuffered(void **state)
{
    pingpong_with_cap(*state, 0);
}

/* ---- blocking when full / empty ---- */

struct prodcons {
    chan_t *ch;
    int sent, received, done;
    uintptr_t got[8];
    int rc;
};

static void producer(void *arg)
{
    struct prodcons *pc = arg;
    for (uintptr_t i = 0; i < 5; i++) {
        if (chan_send(pc->ch, (void *)i, 0)) pc->rc = -1;
        pc->sent++;
    }
    pc->done++;
}

static void consumer(void *arg)
{
    struct prodcons *pc = arg;
    for (int i = 0; i < 5; i++) {
        void *v;
        if (chan_recv(pc->ch, &v, 0)) pc->rc = -1;
        pc->got[pc->received++] = (uintptr_t)v;
    }
    pc->done++;
}

static void test_send_blocks_when_full(void **state)
{
    loop_t *loop = *state;
    struct prodcons pc = {.ch = chan_new(2)};
    assert_non_null(pc.ch);
    assert_non_null(loop_spawn(loop, producer, &pc));
    loop_run_once(loop, 0);
    /* two fit, the third send parks */
    assert_int_equal(pc.sent, 2);
    assert_int_equal(chan_len(pc.ch), 2);
    assert_int_equal(chan_try_send(pc.ch, (void *)99), -EAGAIN);
    loop_run_once(loop, 0);
    assert_int_equal(pc.sent, 2); /* still parked */

    assert_non_null(loop_spawn(loop, consumer, &pc));
    run_until(loop, &pc.done, 2);
    assert_int_equal(pc.rc, 0);
    assert_int_equal(pc.sent, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(pc.got[i], i); /* in send order */
    chan_free(pc.ch);
}

static void test_recv_blocks_when_empty(void **state)
{
    loop_t *loop = *state;
    struct prodcons pc = {.ch = chan_new(4)};
    assert_non_null(pc.ch);
    assert_non_null(loop_spawn(loop, consumer, &pc));
    loop_run_once(loop, 0);
    assert_int_equal(pc.received, 0); /* parked */
    void *v;
    assert_int_equal(chan_try_recv(pc.ch, &v), -EAGAIN);
    /* not a coroutine: blocking calls refuse to park */
    assert_int_equal(chan_recv(pc.ch, &v, 0), -EAGAIN);

    /* a plain callback can feed it */
    for (uintptr_t i = 0; i < 5; i++) {
        assert_int_equal(chan_try_send(pc.ch, (void *)i), 0);
        loop_run_once(loop, 0);
        assert_int_equal(pc.received, (int)i + 1);
    }
    run_until(loop, &pc.done, 1);
    for (int i = 0; i < 5; i++)
        assert_int_equal(pc.got[i], i);
    chan_free(pc.ch);
}

/* ---- close ---- */

struct closer {
    chan_t *empty, *full;
    int done;
    int rcs[8];
    int n;
};

static void recv_until_closed(void *arg)
{
    struct closer *c = arg;
    void *v;
    int rc = chan_recv(c->empty, &v, 0);
    c->rcs[c->n++] = rc;
    c->done++;
}

static void send_until_closed(void *arg)
{
    struct closer *c = arg;
    int rc = chan_send(c->full, (void *)1, 0);
    c->rcs[c->n++] = rc;
    c->done++;
}

static void test_close_wakes_all(void **state)
{
    loop_t *loop = *state;
    struct closer c = {.empty = chan_new(1), .full = chan_new(1)};
    assert_non_null(c.empty);
    assert_non_null(c.full);
    assert_int_equal(chan_try_send(c.full, (void *)7), 0);
    for (int i = 0; i < 3; i++)
        assert_non_null(loop_spawn(loop, recv_until_closed, &c));
    for (int i = 0; i < 2; i++)
        assert_non_null(loop_spawn(loop, send_until_closed, &c));
    loop_run_once(loop, 0);
    assert_int_equal(c.done, 0); /* all five parked */

    chan_close(c.empty);
    chan_close(c.full);
    chan_close(c.full); /* idempotent */
    assert_true(chan_closed(c.full));
    run_until(loop, &c.done, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(c.rcs[i], -EPIPE);

    /* a closed channel still drains, then says closed; sends fail at once */
    assert_int_equal(chan_send(c.full, (void *)8, 0), -EPIPE);
    void *v = NULL;
    assert_int_equal(chan_try_recv(c.full, &v), 0);
    assert_ptr_equal(v, (void *)7);
    assert_int_equal(chan_recv(c.full, &v, 0), -EPIPE);
    assert_int_equal(chan_try_recv(c.full, &v), -EPIPE);
    chan_free(c.empty);
    chan_free(c.full);
}

/* ---- deadlines ---- */

struct timed {
    chan_t *ch;
    uint64_t deadline;
    int rc;
    uint64_t woke_at;
    void *v;
    int done;
};

static void timed_recv(void *arg)
{
    struct timed *t = arg;
    t->rc = chan_recv(t->ch, &t->v, t->deadline);
    t->woke_at = mono_ns();
    t->done++;
}

static void timed_send(void *arg)
{
    struct timed *t = arg;
    t->rc = chan_send(t->ch, (void *)42, t->deadline);
    t->woke_at = mono_ns();
    t->done++;
}

static void test_deadlines(void **state)
{
    loop_t *loop = *state;
    chan_t *ch = chan_new(1);
    assert_non_null(ch);

    /* recv on empty */
    struct timed r = {.ch = ch, .deadline = mono_ns() + 5 * MS};
    assert_non_null(loop_spawn(loop, timed_recv, &r));
    run_until(loop, &r.done, 1);
    assert_int_equal(r.rc, -ETIMEDOUT);
    assert_true(r.woke_at >= r.deadline);

    /* send on full: the value is not delivered */
    assert_int_equal(chan_try_send(ch, (void *)1), 0);
    struct timed s = {.ch = ch, .deadline = mono_ns() + 5 * MS};
    assert_non_null(loop_spawn(loop, timed_send, &s));
    run_until(loop, &s.done, 1);
    assert_int_equal(s.rc, -ETIMEDOUT);
    assert_true(s.woke_at >= s.deadline);
    void *v;
    assert_int_equal(chan_try_recv(ch, &v), 0);
    assert_ptr_equal(v, (void *)1);
    assert_int_equal(chan_try_recv(ch, &v), -EAGAIN);

    /* a receiver that timed out leaves the queue: the next one gets the value */
    struct timed a = {.ch = ch, .deadline = mono_ns() + 5 * MS};
    struct timed b = {.ch = ch, .deadline = 0};
    assert_non_null(loop_spawn(loop, timed_recv, &a));
    assert_non_null(loop_spawn(loop, timed_recv, &b));
    run_until(loop, &a.done, 1);
    assert_int_equal(a.rc, -ETIMEDOUT);
    assert_int_equal(b.done, 0);
    assert_int_equal(chan_try_send(ch, (void *)5), 0);
    run_until(loop, &b.done, 1);
    assert_int_equal(b.rc, 0);
    assert_ptr_equal(b.v, (void *)5);
    assert_int_equal(chan_len(ch), 0);
    chan_free(ch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pingpong_cap1, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_pingpong_unbuffered, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_send_blocks_when_full, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_recv_blocks_when_empty, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_close_wakes_all, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_deadlines, loop_setup, loop_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
