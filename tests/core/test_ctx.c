/* ctx: cancel cascade, deadlines, err/cause, values, after-funcs, waiting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>

#include "core/ctx.h"
#include "core/loop.h"
#include "loop_test.h"

static bool run_until_done(loop_t *loop, const ctx_t *c)
{
    uint64_t end = mono_ns() + RUN_TIMEOUT;
    while (!ctx_done(c)) {
        if (mono_ns() > end) return false;
        loop_run_once(loop, 10);
    }
    return true;
}

static void assert_state(const ctx_t *c, int err, int cause)
{
    assert_int_equal(ctx_done(c), err != 0);
    assert_int_equal(ctx_err(c), err);
    assert_int_equal(ctx_cause(c), cause);
}

/* ---- cancellation ---- */

static void test_background(void **state)
{
    (void)state;
    ctx_t *bg = ctx_background();
    assert_false(ctx_done(bg));
    ctx_cancel(bg, 5); /* never done */
    assert_state(bg, 0, 0);
    assert_int_equal(ctx_deadline(bg), 0);
    assert_true(ctx_remaining(bg) == UINT64_MAX);
    assert_ptr_equal(ctx_retain(bg), bg);
    ctx_release(bg);
    assert_int_equal(ctx_wait(bg, 0), -EPERM); /* not a coroutine */
}

static void test_cancel_cascade(void **state)
{
    (void)state;
    static int key;
    ctx_t *root = ctx_with_cancel(ctx_background());
    ctx_t *a = ctx_with_cancel(root);
    ctx_t *b = ctx_with_value(root, &key, "v");
    ctx_t *a1 = ctx_with_cancel(a);
    ctx_t *a2 = ctx_with_timeout(a, 10000 * MS);
    ctx_t *b1 = ctx_with_cancel(b);
    ctx_t *all[] = {root, a, b, a1, a2, b1};
    for (size_t i = 0; i < 6; i++)
        assert_state(all[i], 0, 0);

    /* cancelling an inner node leaves its parent and siblings alone */
    ctx_cancel(a1, 11);
    assert_state(a1, CTX_CANCELED, 11);
    assert_state(a, 0, 0);
    assert_state(a2, 0, 0);

    ctx_cancel(root, 77);
    assert_state(a1, CTX_CANCELED, 11); /* stable */
    assert_state(root, CTX_CANCELED, 77);
    assert_state(a, CTX_CANCELED, 77);
    assert_state(b, CTX_CANCELED, 77);
    assert_state(a2, CTX_CANCELED, 77);
    assert_state(b1, CTX_CANCELED, 77);

    /* idempotent: err and cause do not change */
    ctx_cancel(root, 3);
    ctx_cancel(b1, 4);
    assert_state(root, CTX_CANCELED, 77);
    assert_state(b1, CTX_CANCELED, 77);

    /* a child of a done parent is done at once */
    ctx_t *late = ctx_with_cancel(a);
    ctx_t *late_dl = ctx_with_timeout(b, 10000 * MS);
    assert_state(late, CTX_CANCELED, 77);
    assert_state(late_dl, CTX_CANCELED, 77);
    ctx_release(late);
    ctx_release(late_dl);

    /* release parents first: children keep them alive */
    for (size_t i = 0; i < 6; i++)
        ctx_release(all[i]);
}

static void test_cancel_default_cause(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_cancel(ctx_background());
    ctx_t *k = ctx_with_cancel(c);
    ctx_cancel(c, 0);
    assert_state(c, CTX_CANCELED, CTX_CANCELED);
    assert_state(k, CTX_CANCELED, CTX_CANCELED);
    ctx_release(k);
    ctx_release(c);
}

static void test_release_detaches(void **state)
{
    (void)state;
    ctx_t *p = ctx_with_cancel(ctx_background());
    for (int i = 0; i < 100; i++) {
        ctx_t *c = ctx_with_cancel(p);
        ctx_t *d = ctx_with_cancel(c);
        /* releasing in either order unlinks them from p: the cancel below
         * must not touch them (ASan catches it if it does) */
        if (i & 1) {
            ctx_release(c);
            ctx_release(d);
        } else {
            ctx_release(d);
            ctx_release(c);
        }
    }
    ctx_t *kept = ctx_retain(ctx_with_cancel(p));
    ctx_release(kept); /* one reference left */
    ctx_cancel(p, 9);
    assert_state(kept, CTX_CANCELED, 9);
    ctx_release(kept);
    ctx_release(p);
}

/* ---- deadlines ---- */

static void test_deadline_min_rule(void **state)
{
    (void)state;
    uint64_t now = mono_ns();
    ctx_t *p = ctx_with_deadline(ctx_background(), now + 1000 * MS);
    assert_int_equal(ctx_deadline(p), now + 1000 * MS);
    ctx_t *later = ctx_with_deadline(p, now + 2000 * MS);
    assert_int_equal(ctx_deadline(later), now + 1000 * MS);
    ctx_t *sooner = ctx_with_deadline(p, now + 500 * MS);
    assert_int_equal(ctx_deadline(sooner), now + 500 * MS);
    /* cancel and value children inherit the deadline */
    ctx_t *c = ctx_with_cancel(sooner);
    assert_int_equal(ctx_deadline(c), now + 500 * MS);
    ctx_t *gc = ctx_with_timeout(c, 3000 * MS);
    assert_int_equal(ctx_deadline(gc), now + 500 * MS);
    assert_true(ctx_remaining(gc) <= 500 * MS);
    assert_true(ctx_remaining(gc) > 0);
    ctx_t *nodl = ctx_with_cancel(ctx_background());
    assert_int_equal(ctx_deadline(nodl), 0);
    assert_true(ctx_remaining(nodl) == UINT64_MAX);
    ctx_release(nodl);
    ctx_release(gc);
    ctx_release(c);
    ctx_release(sooner);
    ctx_release(later);
    ctx_release(p);
}

static void test_deadline_passed(void **state)
{
    (void)state;
    ctx_t *c = ctx_with_deadline(ctx_background(), mono_ns() - 1);
    assert_state(c, CTX_DEADLINE_EXCEEDED, CTX_DEADLINE_EXCEEDED);
    assert_int_equal(ctx_remaining(c), 0);
    ctx_release(c);
}

static void test_deadline_fires(void **state)
{
    loop_t *loop = *state;
    ctx_t *p = ctx_with_timeout(ctx_background(), 20 * MS);
    ctx_t *c = ctx_with_timeout(p, 10000 * MS); /* gets the parent's deadline */
    ctx_t *v = ctx_with_value(c, &loop, NULL);
    ctx_t *gone = ctx_with_timeout(ctx_background(), 1 * MS);
    ctx_release(gone); /* its timer must be stopped: it must never fire */
    assert_false(ctx_done(p));
    assert_true(run_until_done(loop, v));
    assert_true(mono_ns() >= ctx_deadline(p));
    assert_state(p, CTX_DEADLINE_EXCEEDED, CTX_DEADLINE_EXCEEDED);
    assert_state(c, CTX_DEADLINE_EXCEEDED, CTX_DEADLINE_EXCEEDED);
    assert_state(v, CTX_DEADLINE_EXCEEDED, CTX_DEADLINE_EXCEEDED);
    /* stable after the fact */
    ctx_cancel(c, 5);
    assert_state(c, CTX_DEADLINE_EXCEEDED, CTX_DEADLINE_EXCEEDED);
    ctx_release(v);
    ctx_release(c);
    ctx_release(p);
}

static void test_deadline_child_only(void **state)
{
    loop_t *loop = *state;
    ctx_t *p = ctx_with_timeout(ctx_background(), 10000 * MS);
    ctx_t *c = ctx_with_timeout(p, 10 * MS);
    assert_true(run_until_done(loop, c));
    assert_state(c, CTX_DEADLINE_EXCEEDED, CTX_DEADLINE_EXCEEDED);
    assert_state(p, 0, 0);
    ctx_release(c);
    ctx_release(p);
}

static void test_cancel_stops_timer(void **state)
{
    loop_t *loop = *state;
    ctx_t *c = ctx_with_timeout(ctx_background(), 1 * MS);
    ctx_cancel(c, 0);
    ctx_t *sentinel = ctx_with_timeout(ctx_background(), 20 * MS);
    assert_true(run_until_done(loop, sentinel));
    assert_state(c, CTX_CANCELED, CTX_CANCELED);
    ctx_release(sentinel);
    ctx_release(c);
}

/* ---- values ---- */

static void test_values(void **state)
{
    (void)state;
    static int k1, k2, k3;
    char a[] = "a", b[] = "b", c[] = "c";
    ctx_t *v1 = ctx_with_value(ctx_background(), &k1, a);
    ctx_t *mid = ctx_with_cancel(v1);
    ctx_t *v2 = ctx_with_value(mid, &k2, b);
    ctx_t *v3 = ctx_with_value(v2, &k1, c);
    ctx_t *v4 = ctx_with_value(v3, &k2, NULL);
    assert_ptr_equal(ctx_value(v1, &k1), a);
    assert_null(ctx_value(v1, &k2));
    assert_ptr_equal(ctx_value(mid, &k1), a);
    assert_ptr_equal(ctx_value(v2, &k1), a);
    assert_ptr_equal(ctx_value(v2, &k2), b);
    assert_ptr_equal(ctx_value(v3, &k1), c); /* shadows v1 */
    assert_ptr_equal(ctx_value(v3, &k2), b);
    assert_null(ctx_value(v4, &k2)); /* shadowed with NULL */
    assert_ptr_equal(ctx_value(v4, &k1), c);
    assert_null(ctx_value(v4, &k3));
    assert_null(ctx_value(v4, NULL));
    assert_null(ctx_value(ctx_background(), &k1));
    /* a cancelled context still answers values */
    ctx_cancel(mid, 0);
    assert_ptr_equal(ctx_value(v3, &k1), c);
    ctx_release(v4);
    ctx_release(v3);
    ctx_release(v2);
    ctx_release(mid);
    ctx_release(v1);
}

/* ---- after-funcs ---- */

struct rec_hook {
    ctx_hook_t hook;
    int id;
    int *log; /* ids in call order */
    int *nlog;
    ctx_t *seen_ctx;
    int seen_err, seen_cause;
    /* reentrancy actions */
    ctx_t *cancel_other;
    ctx_t *release_ctx;
    struct rec_hook *remove_other;
    ctx_t *check_done; /* must be done when the hook runs */
    int check_ok;
};

static void rec_fn(ctx_t *ctx, ctx_hook_t *h)
{
    struct rec_hook *r = (struct rec_hook *)h;
    r->log[(*r->nlog)++] = r->id;
    r->seen_ctx = ctx;
    r->seen_err = ctx_err(ctx);
    r->seen_cause = ctx_cause(ctx);
    if (r->check_done) r->check_ok = ctx_done(r->check_done);
    if (r->remove_other) ctx_hook_remove(ctx, &r->remove_other->hook);
    if (r->cancel_other) ctx_cancel(r->cancel_other, 55);
    if (r->release_ctx) ctx_release(r->release_ctx);
}

static void test_after_func(void **state)
{
    (void)state;
    int log[16], n = 0;
    ctx_t *p = ctx_with_cancel(ctx_background());
    ctx_t *c = ctx_with_cancel(p);
    struct rec_hook h[4];
    for (int i = 0; i < 4; i++)
        h[i] = (struct rec_hook){.id = i + 1, .log = log, .nlog = &n};
    assert_true(ctx_after_func(c, &h[0].hook, rec_fn));
    assert_true(ctx_after_func(c, &h[1].hook, rec_fn));
    assert_true(ctx_after_func(c, &h[2].hook, rec_fn));
    assert_true(ctx_after_func(p, &h[3].hook, rec_fn));
    ctx_hook_remove(c, &h[1].hook);
    h[3].check_done = c; /* the whole subtree is done before hooks run */

    ctx_cancel(p, 21); /* via the parent */
    /* parent's hooks first, then the child's, each in registration order */
    assert_int_equal(n, 3);
    assert_int_equal(log[0], 4);
    assert_int_equal(log[1], 1);
    assert_int_equal(log[2], 3);
    assert_int_equal(h[3].check_ok, 1);
    assert_ptr_equal(h[0].seen_ctx, c);
    assert_int_equal(h[0].seen_err, CTX_CANCELED);
    assert_int_equal(h[0].seen_cause, 21);

    /* exactly once */
    ctx_cancel(c, 1);
    ctx_cancel(p, 1);
    assert_int_equal(n, 3);
    /* removing after it ran is safe */
    ctx_hook_remove(c, &h[0].hook);
    /* registering on a done ctx: false, never runs */
    struct rec_hook late = {.id = 9, .log = log, .nlog = &n};
    assert_false(ctx_after_func(c, &late.hook, rec_fn));
    ctx_hook_remove(c, &late.hook);
    assert_int_equal(n, 3);
    /* background never runs hooks; removal is fine */
    struct rec_hook bgh = {.id = 10, .log = log, .nlog = &n};
    assert_true(ctx_after_func(ctx_background(), &bgh.hook, rec_fn));
    ctx_hook_remove(ctx_background(), &bgh.hook);
    ctx_release(c);
    ctx_release(p);
}

static void test_after_func_reentrant(void **state)
{
    (void)state;
    int log[16], n = 0;
    ctx_t *a = ctx_with_cancel(ctx_background());
    ctx_t *other = ctx_with_cancel(ctx_background());
    ctx_t *other_child = ctx_with_cancel(other);
    struct rec_hook h[4];
    for (int i = 0; i < 4; i++)
        h[i] = (struct rec_hook){.id = i + 1, .log = log, .nlog = &n};
    /* 1: removes 2 (not yet run); cancels another tree; releases the last
     * user reference to the very ctx it runs for */
    h[0].remove_other = &h[1];
    h[0].cancel_other = other;
    h[0].release_ctx = a;
    assert_true(ctx_after_func(a, &h[0].hook, rec_fn));
    assert_true(ctx_after_func(a, &h[1].hook, rec_fn));
    assert_true(ctx_after_func(a, &h[2].hook, rec_fn));
    assert_true(ctx_after_func(other_child, &h[3].hook, rec_fn));
    ctx_cancel(a, 0);
    /* 1 runs, its nested cancel runs 4, then 3; 2 was removed */
    assert_int_equal(n, 3);
    assert_int_equal(log[0], 1);
    assert_int_equal(log[1], 4);
    assert_int_equal(log[2], 3);
    assert_int_equal(h[3].seen_cause, 55);
    assert_state(other, CTX_CANCELED, 55);
    ctx_release(other_child);
    ctx_release(other);
}

static void test_after_func_deadline(void **state)
{
    loop_t *loop = *state;
    int log[4], n = 0;
    ctx_t *p = ctx_with_timeout(ctx_background(), 5 * MS);
    ctx_t *c = ctx_with_cancel(p);
    struct rec_hook h = {.id = 1, .log = log, .nlog = &n};
    assert_true(ctx_after_func(c, &h.hook, rec_fn));
    assert_true(run_until_flag(loop, &n));
    assert_int_equal(n, 1);
    assert_int_equal(h.seen_err, CTX_DEADLINE_EXCEEDED);
    ctx_release(c);
    ctx_release(p);
}

/* ---- waiting ---- */

struct waiter_arg {
    ctx_t *ctx;
    uint64_t deadline;
    int rc;
    int finished;
};

static void waiter_main(void *arg)
{
    struct waiter_arg *w = arg;
    w->rc = ctx_wait(w->ctx, w->deadline);
    w->finished = 1;
}

struct poke_arg {
    coro_t *target;
    int done;
};

static void poke_main(void *arg)
{
    struct poke_arg *p = arg;
    loop_wake(p->target); /* a spurious wake must not end ctx_wait */
    p->done = 1;
}

static void test_wait(void **state)
{
    loop_t *loop = *state;
    ctx_t *c = ctx_with_cancel(ctx_background());
    struct waiter_arg w[3];
    coro_t *co[3];
    for (int i = 0; i < 3; i++) {
        w[i] = (struct waiter_arg){.ctx = c};
        co[i] = loop_spawn(loop, waiter_main, &w[i]);
        assert_non_null(co[i]);
    }
    w[2].deadline = mono_ns() + 10 * MS;
    loop_run_once(loop, 0); /* all three park */
    struct poke_arg pk = {.target = co[0]};
    assert_non_null(loop_spawn(loop, poke_main, &pk));
    assert_true(run_until_flag(loop, &w[2].finished)); /* the timeout */
    assert_int_equal(w[2].rc, 0);
    assert_true(pk.done);
    assert_false(w[0].finished);
    assert_false(w[1].finished);
    ctx_cancel(c, 0);
    assert_true(run_until_flag(loop, &w[0].finished));
    assert_true(run_until_flag(loop, &w[1].finished));
    assert_int_equal(w[0].rc, CTX_CANCELED);
    assert_int_equal(w[1].rc, CTX_CANCELED);

    /* a done ctx returns at once */
    struct waiter_arg d = {.ctx = c};
    assert_non_null(loop_spawn(loop, waiter_main, &d));
    assert_true(run_until_flag(loop, &d.finished));
    assert_int_equal(d.rc, CTX_CANCELED);
    ctx_release(c);
}

static void test_wait_deadline(void **state)
{
    loop_t *loop = *state;
    ctx_t *c = ctx_with_timeout(ctx_background(), 5 * MS);
    struct waiter_arg w = {.ctx = c};
    assert_non_null(loop_spawn(loop, waiter_main, &w));
    assert_true(run_until_flag(loop, &w.finished));
    assert_int_equal(w.rc, CTX_DEADLINE_EXCEEDED);
    ctx_release(c);

    /* waiting on the background only ends by timeout */
    struct waiter_arg b = {.ctx = ctx_background(), .deadline = mono_ns() + 2 * MS, .rc = -1};
    assert_non_null(loop_spawn(loop, waiter_main, &b));
    assert_true(run_until_flag(loop, &b.finished));
    assert_int_equal(b.rc, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_background, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_cascade, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_default_cause, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_release_detaches, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_min_rule, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_passed, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_fires, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_child_only, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_stops_timer, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_values, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_after_func, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_after_func_reentrant, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_after_func_deadline, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_wait, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_wait_deadline, loop_setup, loop_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
