/* Tests for core/loop.c. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/container_of.h"
#include "core/loop.h"

#define MS 1000000ull
/* Upper bound for "wait until X happens" loops: a broken build fails after
 * this instead of hanging. Not a timing assertion. */
#define PATIENCE_NS (20000 * MS)

/* Runs iterations until *done or PATIENCE_NS pass; returns *done. */
static bool run_until(loop_t *loop, const int *done)
{
    uint64_t give_up = mono_ns() + PATIENCE_NS;
    while (!*done && mono_ns() < give_up)
        loop_run_once(loop, 50);
    return *done;
}

static uint64_t alive(void)
{
    struct coro_stats st;
    coro_get_stats(&st);
    return st.alive;
}

/* ---- timers ---- */

struct order_timer {
    loop_timer_t t;
    int id;
    int *log;
    int *n;
};

static void order_cb(loop_t *loop, loop_timer_t *t)
{
    (void)loop;
    struct order_timer *ot = container_of(t, struct order_timer, t);
    assert_false(loop_timer_active(t)); /* disarmed before its callback */
    ot->log[(*ot->n)++] = ot->id;
}

static void test_timers_fire_in_order(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    assert_non_null(loop);
    assert_ptr_equal(loop_current(), loop);
    enum { N = 12 };
    int log[N + 4], n = 0;
    struct order_timer ts[N];
    uint64_t base = loop_now(loop);
    /* deadline offsets (µs); equal ones must fire in arming order */
    const int off[N] = {50, 10, 30, 10, 40, 20, 10, 30, 60, 5, 70, 20};
    for (int i = 0; i < N; i++) {
        ts[i] = (struct order_timer){.id = i, .log = log, .n = &n};
        loop_timer_init(&ts[i].t, order_cb);
        assert_false(loop_timer_active(&ts[i].t));
        loop_timer_start(loop, &ts[i].t, base + (uint64_t)off[i] * 1000);
        assert_true(loop_timer_active(&ts[i].t));
    }
    /* cancel 4 and 7; re-arm 0 later than everything; stop an unarmed one */
    loop_timer_stop(loop, &ts[4].t);
    loop_timer_stop(loop, &ts[7].t);
    loop_timer_stop(loop, &ts[7].t);
    assert_false(loop_timer_active(&ts[4].t));
    loop_timer_start(loop, &ts[0].t, base + 80 * 1000);

    const int want[] = {9, 1, 3, 6, 5, 11, 2, 8, 10, 0};
    int want_n = (int)(sizeof want / sizeof want[0]);
    uint64_t give_up = mono_ns() + PATIENCE_NS;
    while (n < want_n && mono_ns() < give_up)
        loop_run_once(loop, 50);
    /* one more iteration: nothing else may fire */
    loop_run_once(loop, 0);
    assert_int_equal(n, want_n);
    assert_memory_equal(log, want, sizeof want);
    loop_free(loop);
    assert_null(loop_current());
}

struct cancel_pair {
    loop_timer_t a, b;
    int fired_a, fired_b;
};

static void cancel_a(loop_t *loop, loop_timer_t *t)
{
    struct cancel_pair *cp = container_of(t, struct cancel_pair, a);
    cp->fired_a++;
    loop_timer_stop(loop, &cp->b); /* b is due in this same pass */
}

static void cancel_b(loop_t *loop, loop_timer_t *t)
{
    (void)loop;
    container_of(t, struct cancel_pair, b)->fired_b++;
}

static void test_timer_cancelled_by_due_timer(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    struct cancel_pair cp = {0};
    loop_timer_init(&cp.a, cancel_a);
    loop_timer_init(&cp.b, cancel_b);
    uint64_t d = loop_now(loop) + 1000;
    loop_timer_start(loop, &cp.a, d);
    loop_timer_start(loop, &cp.b, d);
    run_until(loop, &cp.fired_a);
    loop_run_once(loop, 0);
    assert_int_equal(cp.fired_a, 1);
    assert_int_equal(cp.fired_b, 0);
    loop_free(loop);
}

/* ---- submit ---- */

enum { THREADS = 4, PER_THREAD = 10000 };

struct submit_test {
    loop_t *loop;
    atomic_int started;
    int ran[THREADS][PER_THREAD]; /* loop thread only */
    int next[THREADS];
    int total;
    int order_ok;
};

struct submit_arg {
    struct submit_test *st;
    int id;
};

static struct submit_arg submit_args[THREADS][PER_THREAD];

static void submitted(void *p)
{
    struct submit_arg *a = p;
    struct submit_test *st = a->st;
    int i = (int)(a - submit_args[a->id]);
    st->ran[a->id][i]++;
    if (st->next[a->id] != i) st->order_ok = 0; /* one producer: FIFO */
    st->next[a->id] = i + 1;
    st->total++;
}

static void *submitter(void *p)
{
    struct submit_arg *a0 = p;
    struct submit_test *st = a0->st;
    atomic_fetch_add(&st->started, 1);
    for (int i = 0; i < PER_THREAD; i++) {
        struct submit_arg *a = &submit_args[a0->id][i];
        a->st = st;
        a->id = a0->id;
        while (loop_submit(st->loop, submitted, a) != 0) {
        }
    }
    return NULL;
}

static void test_submit_4x10000(void **state)
{
    (void)state;
    struct submit_test *st = calloc(1, sizeof *st);
    st->loop = loop_new();
    st->order_ok = 1;
    pthread_t th[THREADS];
    struct submit_arg first[THREADS];
    for (int i = 0; i < THREADS; i++) {
        first[i] = (struct submit_arg){st, i};
        assert_int_equal(pthread_create(&th[i], NULL, submitter, &first[i]), 0);
    }
    uint64_t t0 = mono_ns();
    /* Long poll timeouts: the loop really sleeps in epoll whenever it runs
     * dry, so only the eventfd hand-shake gets it going again; a lost
     * wake-up shows up as a 20 s stall and fails the check below. */
    while (st->total < THREADS * PER_THREAD && mono_ns() - t0 < PATIENCE_NS)
        loop_run_once(st->loop, 20000);
    assert_true(mono_ns() - t0 < PATIENCE_NS);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    loop_run_once(st->loop, 0);
    assert_int_equal(st->total, THREADS * PER_THREAD);
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER_THREAD; i++)
            assert_int_equal(st->ran[t][i], 1);
    assert_true(st->order_ok);
    loop_free(st->loop);
    free(st);
}

struct stopper {
    loop_t *loop;
    atomic_int phase;
};

static void mark(void *p)
{
    *(int *)p = 1;
}

static void *stop_thread(void *p)
{
    struct stopper *s = p;
    static int ran;
    /* wait until the loop thread is about to block, then poke it */
    while (atomic_load(&s->phase) == 0) {
    }
    loop_submit(s->loop, mark, &ran);
    while (atomic_load(&s->phase) == 1) {
    }
    loop_stop(s->loop);
    return NULL;
}

static void test_submit_wakes_blocked_loop_and_stop(void **state)
{
    (void)state;
    struct stopper s = {.loop = loop_new()};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, stop_thread, &s), 0);
    atomic_store(&s.phase, 1);
    /* No timers, no fds: only the eventfd can end this wait early. The
     * 20 s bound keeps a broken build from hanging. */
    uint64_t t0 = mono_ns();
    int n = loop_run_once(s.loop, 20000);
    while (n == 0 && mono_ns() - t0 < PATIENCE_NS)
        n = loop_run_once(s.loop, 20000);
    assert_true(n > 0);
    atomic_store(&s.phase, 2);
    assert_int_equal(loop_run(s.loop), 0); /* returns once loop_stop lands */
    pthread_join(th, NULL);
    loop_free(s.loop);
}

/* ---- coroutines ---- */

struct pw {
    coro_t *sleeper;
    int park_rc;
    int steps;
    int done;
};

static void parker(void *p)
{
    struct pw *pw = p;
    pw->steps = 1;
    pw->park_rc = loop_park(0);
    pw->steps = 2;
    pw->done++;
}

static void waker(void *p)
{
    struct pw *pw = p;
    assert_int_equal(pw->steps, 1); /* the parker ran first and parked */
    loop_wake(pw->sleeper);
    loop_wake(pw->sleeper);         /* already ready: a no-op, not a second entry */
    assert_int_equal(pw->steps, 1); /* runs only after we stop */
    pw->done++;
}

static void test_park_wake(void **state)
{
    (void)state;
    uint64_t alive0 = alive();
    loop_t *loop = loop_new();
    struct pw pw = {.park_rc = 99};
    pw.sleeper = loop_spawn(loop, parker, &pw);
    assert_non_null(pw.sleeper);
    assert_non_null(loop_spawn(loop, waker, &pw));
    uint64_t give_up = mono_ns() + PATIENCE_NS;
    while (pw.done < 2 && mono_ns() < give_up)
        loop_run_once(loop, 50);
    assert_int_equal(pw.done, 2);
    assert_int_equal(pw.park_rc, 0);
    assert_int_equal(pw.steps, 2);
    assert_int_equal(alive(), alive0); /* the loop freed both */
    loop_free(loop);
}

struct timeout_test {
    int rc1, rc2, rc3;
    int done;
    coro_t *co;
    loop_timer_t late;
    int late_fired;
};

static void wake_once(void *p)
{
    struct timeout_test *tt = p;
    loop_wake(tt->co);
}

static void late_waker(loop_t *loop, loop_timer_t *t)
{
    (void)loop;
    struct timeout_test *tt = container_of(t, struct timeout_test, late);
    tt->late_fired = 1;
    assert_int_equal(tt->rc3, 99); /* still parked when the late timer fires */
    loop_wake(tt->co);
}

static void timeout_parker(void *p)
{
    struct timeout_test *tt = p;
    loop_t *loop = loop_current();
    /* 1: nobody wakes us: the deadline does */
    tt->rc1 = loop_park(loop_now(loop) + 1 * MS);
    /* 2: woken before the deadline: wake_once runs in this same pass, and
     * timers only fire after the pass, so the wake deterministically wins */
    loop_spawn(loop, wake_once, tt);
    tt->rc2 = loop_park(loop_now(loop) + 1 * MS);
    /* 3: park again, no deadline. Park 2's timer (due 1 ms after park 2)
     * was cancelled by the wake: had it survived, it would fire before
     * `late` (5 ms) into this park, whose record reuses the same stack. */
    loop_timer_init(&tt->late, late_waker);
    loop_timer_start(loop, &tt->late, loop_now(loop) + 5 * MS);
    tt->rc3 = loop_park(0);
    tt->done = 1;
}

static void test_park_deadline(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    struct timeout_test tt = {.rc1 = 99, .rc2 = 99, .rc3 = 99};
    tt.co = loop_spawn(loop, timeout_parker, &tt);
    assert_true(run_until(loop, &tt.done));
    assert_int_equal(tt.rc1, -ETIMEDOUT);
    assert_int_equal(tt.rc2, 0);
    assert_int_equal(tt.late_fired, 1);
    assert_int_equal(tt.rc3, 0); /* woken by late_waker, not by a stale timer */
    loop_free(loop);
}

struct sleep_log {
    int log[3];
    int n;
    int done;
};

struct sleeper_arg {
    struct sleep_log *sl;
    int id;
    uint64_t ns;
};

static void sleeper(void *p)
{
    struct sleeper_arg *a = p;
    assert_int_equal(loop_sleep(a->ns), 0);
    a->sl->log[a->sl->n++] = a->id;
    if (a->sl->n == 3) a->sl->done = 1;
}

static void test_sleep_order(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    struct sleep_log sl = {0};
    struct sleeper_arg a[3] = {{&sl, 0, 3 * MS}, {&sl, 1, 1 * MS}, {&sl, 2, 2 * MS}};
    for (int i = 0; i < 3; i++)
        loop_spawn(loop, sleeper, &a[i]);
    assert_true(run_until(loop, &sl.done));
    assert_int_equal(sl.log[0], 1);
    assert_int_equal(sl.log[1], 2);
    assert_int_equal(sl.log[2], 0);
    loop_free(loop);
}

struct yield_log {
    int log[8];
    int n;
};

struct yielder_arg {
    struct yield_log *yl;
    int id;
};

static void yielder(void *p)
{
    struct yielder_arg *a = p;
    for (int i = 0; i < 3; i++) {
        a->yl->log[a->yl->n++] = a->id;
        loop_yield();
    }
}

static void test_yield_round_robin(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    struct yield_log yl = {0};
    struct yielder_arg a[2] = {{&yl, 1}, {&yl, 2}};
    loop_spawn(loop, yielder, &a[0]);
    loop_spawn(loop, yielder, &a[1]);
    /* each iteration runs each yielder once: yields wait for the next one */
    loop_run_once(loop, 0);
    assert_int_equal(yl.n, 2);
    for (int i = 0; i < 4; i++)
        loop_run_once(loop, 0);
    const int want[] = {1, 2, 1, 2, 1, 2};
    assert_int_equal(yl.n, 6);
    assert_memory_equal(yl.log, want, sizeof want);
    loop_free(loop);
}

struct fd_test {
    int pipe[2];
    int rc_read, rc_timeout;
    int done;
};

static void fd_reader(void *p)
{
    struct fd_test *ft = p;
    loop_t *loop = loop_current();
    ft->rc_timeout = loop_wait_fd(ft->pipe[0], EPOLLIN, loop_now(loop) + 1 * MS);
    ft->rc_read = loop_wait_fd(ft->pipe[0], EPOLLIN, loop_now(loop) + PATIENCE_NS);
    ft->done = 1;
}

static void fd_writer(void *p)
{
    struct fd_test *ft = p;
    while (ft->rc_timeout == 99)
        loop_yield();
    assert_int_equal(write(ft->pipe[1], "x", 1), 1);
}

static void test_wait_fd_pipe(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    struct fd_test ft = {.rc_read = 99, .rc_timeout = 99};
    assert_int_equal(pipe(ft.pipe), 0);
    loop_spawn(loop, fd_reader, &ft);
    loop_spawn(loop, fd_writer, &ft);
    assert_true(run_until(loop, &ft.done));
    assert_int_equal(ft.rc_timeout, -ETIMEDOUT);
    assert_true(ft.rc_read > 0);
    assert_true(ft.rc_read & EPOLLIN);
    close(ft.pipe[0]);
    close(ft.pipe[1]);
    loop_free(loop);
}

struct batch_test {
    loop_io_t io[2];
    int pipes[2][2];
    int calls[2];
};

static void batch_cb(loop_t *loop, loop_io_t *io, uint32_t revents)
{
    (void)revents;
    struct batch_test *bt = container_of(io, struct batch_test, io[0]);
    int me = io == &bt->io[0] ? 0 : 1;
    bt->calls[me]++;
    /* stop both: the other one's event may already be in this batch */
    assert_int_equal(loop_io_stop(loop, &bt->io[0]), 0);
    assert_int_equal(loop_io_stop(loop, &bt->io[1]), 0);
    memset(&bt->io[1 - me], 0xA5, sizeof bt->io[0]); /* "freed" */
}

static void test_io_stop_during_batch(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    struct batch_test *bt = calloc(1, sizeof *bt);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pipe(bt->pipes[i]), 0);
        assert_int_equal(write(bt->pipes[i][1], "x", 1), 1);
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(loop_io_start(loop, &bt->io[i], bt->pipes[i][0], EPOLLIN, batch_cb), 0);
    /* both fds are readable before the poll: one batch holds both */
    loop_run_once(loop, 1000);
    loop_run_once(loop, 0);
    assert_int_equal(bt->calls[0] + bt->calls[1], 1);
    for (int i = 0; i < 2; i++) {
        close(bt->pipes[i][0]);
        close(bt->pipes[i][1]);
    }
    free(bt);
    loop_free(loop);
}

struct hook_test {
    loop_hook_t a, b;
    int ran_a, ran_b;
};

static void hook_a(loop_t *loop, loop_hook_t *h)
{
    struct hook_test *ht = container_of(h, struct hook_test, a);
    ht->ran_a++;
    if (ht->ran_a == 2) loop_hook_remove(loop, &ht->b); /* b runs after a */
}

static void hook_b(loop_t *loop, loop_hook_t *h)
{
    (void)loop;
    container_of(h, struct hook_test, b)->ran_b++;
}

static void test_prepare_hooks(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    struct hook_test ht = {0};
    loop_hook_add(loop, &ht.b, hook_b);
    loop_hook_add(loop, &ht.a, hook_a); /* added last, runs first */
    loop_run_once(loop, 0);
    assert_int_equal(ht.ran_a, 1);
    assert_int_equal(ht.ran_b, 1);
    loop_run_once(loop, 0);
    loop_run_once(loop, 0);
    assert_int_equal(ht.ran_a, 3);
    assert_int_equal(ht.ran_b, 1); /* removed while iterating: skipped */
    loop_hook_remove(loop, &ht.a);
    loop_run_once(loop, 0);
    assert_int_equal(ht.ran_a, 3);
    loop_free(loop);
}

static void park_forever(void *p)
{
    (void)p;
    loop_park(0);
    fail_msg("resumed during loop_free");
}

static void park_deadline_forever(void *p)
{
    (void)p;
    loop_park(loop_now(loop_current()) + 3600 * 1000 * MS);
    fail_msg("resumed during loop_free");
}

static void wait_fd_forever(void *p)
{
    int *fds = p;
    loop_wait_fd(fds[0], EPOLLIN, 0);
    fail_msg("resumed during loop_free");
}

static void test_loop_free_releases_everything(void **state)
{
    (void)state;
    uint64_t alive0 = alive();
    loop_t *loop = loop_new();
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    loop_spawn(loop, park_forever, NULL);
    loop_spawn(loop, park_deadline_forever, NULL);
    loop_spawn(loop, wait_fd_forever, fds);
    loop_run_once(loop, 0);
    loop_spawn(loop, park_forever, NULL); /* never started */
    static int never;
    loop_submit(loop, mark, &never); /* never run */
    loop_timer_t t;
    loop_timer_init(&t, NULL);
    loop_timer_start(loop, &t, loop_now(loop) + 3600 * 1000 * MS);
    assert_int_equal(alive(), alive0 + 4);
    loop_free(loop);
    assert_int_equal(alive(), alive0);
    assert_false(loop_timer_active(&t));
    assert_int_equal(never, 0);
    close(fds[0]);
    close(fds[1]);
}

static void test_park_outside_coroutine(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    assert_int_equal(loop_park(0), -EPERM);
    loop_free(loop);
    coro_thread_cleanup();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_order),
        cmocka_unit_test(test_timer_cancelled_by_due_timer),
        cmocka_unit_test(test_submit_4x10000),
        cmocka_unit_test(test_submit_wakes_blocked_loop_and_stop),
        cmocka_unit_test(test_park_wake),
        cmocka_unit_test(test_park_deadline),
        cmocka_unit_test(test_sleep_order),
        cmocka_unit_test(test_yield_round_robin),
        cmocka_unit_test(test_wait_fd_pipe),
        cmocka_unit_test(test_io_stop_during_batch),
        cmocka_unit_test(test_prepare_hooks),
        cmocka_unit_test(test_loop_free_releases_everything),
        cmocka_unit_test(test_park_outside_coroutine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
