/* errgroup: first error wins and wakes siblings, limits, try_go, joining. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>

#include "core/errgroup.h"
#include "core/loop.h"
#include "loop_test.h"

/* Runs body(arg) on a coroutine and the loop until it returned. */
struct driver {
    void (*body)(void *arg);
    void *arg;
    int finished;
};

static void driver_main(void *arg)
{
    struct driver *d = arg;
    d->body(d->arg);
    d->finished = 1;
}

static void run_on_coro(loop_t *loop, void (*body)(void *), void *arg)
{
    struct driver d = {body, arg, 0};
    assert_non_null(loop_spawn(loop, driver_main, &d));
    assert_true(run_until_flag(loop, &d.finished));
}

/* ---- first error ---- */

struct fe {
    errgroup_t *g;
    int wait_rc;
    int done_waiter_err; /* what ctx_wait returned in the sibling */
    int sleeper_woken;   /* the sleeping sibling was woken by the cancel */
    int sleeper_cause;
    int late_ran;
};

static int fail_7(ctx_t *ctx, void *arg)
{
    (void)ctx;
    (void)arg;
    loop_yield(); /* let the siblings park first */
    loop_yield();
    return 7;
}

static int park_on_done(ctx_t *ctx, void *arg)
{
    struct fe *f = arg;
    f->done_waiter_err = ctx_wait(ctx, 0);
    return 0;
}

struct wake_hook {
    ctx_hook_t hook;
    coro_t *co;
};

static void wake_fn(ctx_t *ctx, ctx_hook_t *h)
{
    (void)ctx;
    loop_wake(((struct wake_hook *)h)->co);
}

/* A sleep that the context cuts short: the after-func wakes the coroutine. */
static int sleep_on_ctx(ctx_t *ctx, void *arg)
{
    struct fe *f = arg;
    struct wake_hook wh = {.co = coro_self()};
    if (ctx_after_func(ctx, &wh.hook, wake_fn)) {
        int rc = loop_park(mono_ns() + 10000 * MS);
        ctx_hook_remove(ctx, &wh.hook);
        f->sleeper_woken = rc == 0 && ctx_done(ctx);
    }
    f->sleeper_cause = ctx_cause(ctx);
    return 0;
}

static int fail_9_after_done(ctx_t *ctx, void *arg)
{
    struct fe *f = arg;
    ctx_wait(ctx, 0);
    f->late_ran = 1;
    return 9; /* dropped: 7 came first */
}

static void first_error_body(void *arg)
{
    struct fe *f = arg;
    assert_int_equal(eg_go(f->g, park_on_done, f), 0);
    assert_int_equal(eg_go(f->g, sleep_on_ctx, f), 0);
    assert_int_equal(eg_go(f->g, fail_9_after_done, f), 0);
    assert_int_equal(eg_go(f->g, fail_7, f), 0);
    f->wait_rc = eg_wait(f->g);
}

static void test_first_error(void **state)
{
    loop_t *loop = *state;
    ctx_t *parent = ctx_with_cancel(ctx_background());
    struct fe f = {.g = eg_new(parent)};
    assert_non_null(f.g);
    run_on_coro(loop, first_error_body, &f);
    assert_int_equal(f.wait_rc, 7);
    assert_int_equal(f.done_waiter_err, CTX_CANCELED);
    assert_true(f.sleeper_woken);
    assert_int_equal(f.sleeper_cause, 7);
    assert_true(f.late_ran);
    assert_int_equal(ctx_err(eg_ctx(f.g)), CTX_CANCELED);
    assert_int_equal(ctx_cause(eg_ctx(f.g)), 7);
    assert_false(ctx_done(parent)); /* the group's ctx is a child */
    eg_free(f.g);
    ctx_release(parent);
}

static int succeed(ctx_t *ctx, void *arg)
{
    (void)ctx;
    ++*(int *)arg;
    loop_yield();
    return 0;
}

static void test_wait_no_error(void **state)
{
    (void)state;
    errgroup_t *g = eg_new(ctx_background());
    assert_int_equal(eg_wait(g), 0); /* nothing started */
    eg_free(g);

    int n = 0;
    g = eg_new(ctx_background());
    for (int i = 0; i < 3; i++)
        assert_int_equal(eg_go(g, succeed, &n), 0);
    assert_false(ctx_done(eg_ctx(g)));
    assert_int_equal(eg_wait(g), 0); /* from the thread's stack: drives the loop */
    assert_int_equal(n, 3);
    /* wait cancels the context once everything ended */
    assert_int_equal(ctx_err(eg_ctx(g)), CTX_CANCELED);
    assert_int_equal(ctx_cause(eg_ctx(g)), CTX_CANCELED);
    eg_free(g);
}

static int wait_ctx(ctx_t *ctx, void *arg)
{
    (void)arg;
    return ctx_wait(ctx, 0) == CTX_CANCELED ? 0 : 1;
}

static void test_parent_cancel(void **state)
{
    loop_t *loop = *state;
    ctx_t *parent = ctx_with_cancel(ctx_background());
    errgroup_t *g = eg_new(parent);
    assert_int_equal(eg_go(g, wait_ctx, NULL), 0);
    assert_int_equal(eg_go(g, wait_ctx, NULL), 0);
    loop_run_once(loop, 0);
    ctx_cancel(parent, 42);
    assert_int_equal(eg_wait(g), 0);
    assert_int_equal(ctx_cause(eg_ctx(g)), 42);
    eg_free(g);
    ctx_release(parent);
}

/* ---- limits ---- */

struct lim {
    errgroup_t *g;
    int running, max_running, finished, started;
    int wait_rc;
};

static int limited_task(ctx_t *ctx, void *arg)
{
    (void)ctx;
    struct lim *l = arg;
    l->started++;
    if (++l->running > l->max_running) l->max_running = l->running;
    for (int i = 0; i < 3; i++)
        loop_yield();
    l->running--;
    l->finished++;
    return 0;
}

static void limit_body(void *arg)
{
    struct lim *l = arg;
    for (int i = 0; i < 10; i++)
        assert_int_equal(eg_go(l->g, limited_task, l), 0);
    l->wait_rc = eg_wait(l->g);
}

static void test_limit(void **state)
{
    loop_t *loop = *state;
    struct lim l = {.g = eg_new(ctx_background())};
    eg_set_limit(l.g, 2);
    run_on_coro(loop, limit_body, &l);
    assert_int_equal(l.wait_rc, 0);
    assert_int_equal(l.started, 10);
    assert_int_equal(l.finished, 10);
    assert_int_equal(l.max_running, 2);
    eg_free(l.g);
}

static void test_limit_off_coroutine(void **state)
{
    (void)state;
    struct lim l = {.g = eg_new(ctx_background())};
    eg_set_limit(l.g, 1);
    assert_int_equal(eg_go(l.g, limited_task, &l), 0);
    /* full, and the thread's own stack cannot park */
    assert_int_equal(eg_go(l.g, limited_task, &l), -EAGAIN);
    assert_int_equal(eg_wait(l.g), 0);
    assert_int_equal(l.finished, 1);
    eg_free(l.g);
}

static void test_try_go(void **state)
{
    (void)state;
    struct lim l = {.g = eg_new(ctx_background())};
    eg_set_limit(l.g, 2);
    assert_true(eg_try_go(l.g, limited_task, &l));
    assert_true(eg_try_go(l.g, limited_task, &l));
    assert_false(eg_try_go(l.g, limited_task, &l));
    assert_int_equal(eg_wait(l.g), 0);
    assert_int_equal(l.finished, 2);
    assert_int_equal(l.max_running, 2);
    /* slots are free again */
    assert_true(eg_try_go(l.g, limited_task, &l));
    assert_int_equal(eg_wait(l.g), 0);
    assert_int_equal(l.finished, 3);
    /* no limit: never full */
    eg_set_limit(l.g, 0);
    for (int i = 0; i < 5; i++)
        assert_true(eg_try_go(l.g, limited_task, &l));
    assert_int_equal(eg_wait(l.g), 0);
    assert_int_equal(l.finished, 8);
    eg_free(l.g);
}

/* ---- joining ---- */

struct join {
    errgroup_t *g;
    int started, finished;
};

static int yield_some(ctx_t *ctx, void *arg)
{
    (void)ctx;
    struct join *j = arg;
    int n = j->started++ % 7;
    for (int i = 0; i < n; i++)
        loop_yield();
    j->finished++;
    return 0;
}

static void join_body(void *arg)
{
    struct join *j = arg;
    for (int i = 0; i < 100; i++)
        assert_int_equal(eg_go(j->g, yield_some, j), 0);
    eg_wait(j->g);
    /* checked here, before anything else could run */
    assert_int_equal(j->finished, 100);
}

static void test_wait_joins(void **state)
{
    loop_t *loop = *state;
    struct join j = {.g = eg_new(ctx_background())};
    run_on_coro(loop, join_body, &j);
    assert_int_equal(j.started, 100);
    assert_int_equal(j.finished, 100);
    eg_free(j.g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_first_error, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_wait_no_error, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_parent_cancel, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_limit, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_limit_off_coroutine, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_try_go, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_wait_joins, loop_setup, loop_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
