/* tests/gateway/test_cache: gateway/cache.c with a fake backend call --
 * fresh hits, coalescing, and the shared call under cancellation (leader
 * cancelled, all cancelled, a joiner timed out). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../core/loop_test.h"
#include "gateway/cache.h"
#include "gateway/degraded.h"

/* The fake backend: answers {"n":<call number>} once released, or
 * UP_CANCELED when its ctx ends first. */
struct caller;
struct fake {
    int calls, cancelled, answered;
    bool release;
    struct caller *late; /* started just as the answer arrives */
};

static void caller_run(void *arg);

static void fake_call(void *arg, ctx_t *ctx, const struct attempt_plan *plan,
                      const struct upstream_req *req, struct upstream_resp *resp,
                      struct attempt_info *info)
{
    struct fake *f = arg;
    int n = ++f->calls;
    assert_int_equal(plan->deadline_ns, 42); /* the copy the flight made */
    *info = (struct attempt_info){.attempts = 2, .retried = true};
    assert_string_equal(req->path, "/x?y=1"); /* the copy the flight made */
    assert_int_equal(req->n_headers, 1);
    assert_string_equal(req->headers[0], "X-A: 1");
    while (!f->release && !ctx_done(ctx))
        ctx_wait(ctx, loop_now(loop_current()) + MS);
    if (ctx_done(ctx)) {
        f->cancelled++;
        resp->result = UP_CANCELED;
        return;
    }
    f->answered++;
    /* queued before the waiters the answer wakes: it runs first */
    if (f->late) assert_non_null(loop_spawn(loop_current(), caller_run, f->late));
    f->late = NULL;
    resp->result = UP_OK;
    resp->status = 200;
    resp->cc.flags = CC_MAX_AGE;
    resp->cc.max_age = 9;
    (void)buf_printf(resp->body, "{\"n\":%d}", n);
}

struct caller {
    struct cache *c;
    struct degraded *d; /* the store, when there is one */
    struct cache_conf conf;
    ctx_t *ctx;
    enum cache_result res;
    struct upstream_resp resp;
    struct attempt_info info;
    buf_t body;
    uint64_t ended_ns;
    int done;
};

static void caller_run(void *arg)
{
    struct caller *k = arg;
    /* the request lives on this stack: the flight must copy it */
    char path[] = "/x?y=1", origin[] = "http://127.0.0.1:1", hdr[] = "X-A: 1";
    const char *hdrs[] = {hdr};
    struct upstream_req req = {
        .method = "GET", .origin = origin, .path = path, .headers = hdrs, .n_headers = 1};
    const struct degraded_entry *hit = NULL;
    k->resp.body = &k->body;
    struct attempt_plan plan = {.deadline_ns = 42};
    k->res = cache_call(k->c, &k->conf, "key", 3, k->ctx, &plan, &req, &k->resp, &k->info, &hit);
    if (hit) {
        (void)buf_append(&k->body, hit->body, hit->len);
        degraded_release(k->d, hit);
    }
    memset(path, 0, sizeof path); /* the caller's copy is gone */
    memset(hdr, 0, sizeof hdr);
    k->ended_ns = mono_ns();
    k->done = 1;
}

#define N 5

struct world {
    loop_t *loop;
    struct fake fake;
    struct cache *c;
    struct caller k[N];
    int idle;
};

static void on_idle(void *arg)
{
    ((struct world *)arg)->idle++;
}

static void start(struct world *w, loop_t *loop, bool coalesce, size_t n, uint64_t deadline_ms)
{
    memset(w, 0, sizeof *w);
    w->loop = loop;
    w->c = cache_new(loop, NULL, fake_call, &w->fake);
    assert_non_null(w->c);
    cache_on_idle(w->c, on_idle, w);
    for (size_t i = 0; i < n; i++) {
        struct caller *k = &w->k[i];
        k->c = w->c;
        k->conf = (struct cache_conf){.enabled = true, .ttl_ms = 1000, .coalesce = coalesce};
        buf_init(&k->body, NULL);
        k->ctx = deadline_ms && i == n - 1 ? ctx_with_timeout(ctx_background(), deadline_ms * MS)
                                           : ctx_with_cancel(ctx_background());
        assert_non_null(loop_spawn(loop, caller_run, k));
    }
}

static void finish(struct world *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ctx_release(w->k[i].ctx);
        buf_free(&w->k[i].body);
    }
    /* every shared call has ended and been freed */
    assert_int_equal(cache_flights(w->c), 0);
    cache_free(w->c);
}

/* Bounded: runs the loop until cond(w) or 5 s. */
static bool run_until(struct world *w, bool (*cond)(struct world *))
{
    uint64_t end = mono_ns() + RUN_TIMEOUT;
    while (!cond(w)) {
        if (mono_ns() > end) return false;
        loop_run_once(w->loop, 5);
    }
    return true;
}

static bool one_call(struct world *w)
{
    return w->fake.calls >= 1;
}

static int n_done(struct world *w)
{
    int n = 0;
    for (size_t i = 0; i < N; i++)
        n += w->k[i].done;
    return n;
}

static bool all_done(struct world *w)
{
    return n_done(w) == N && cache_flights(w->c) == 0;
}

static bool first_done(struct world *w)
{
    return w->k[0].done;
}

static bool last_done(struct world *w)
{
    return w->k[N - 1].done;
}

static void test_coalesced(void **state)
{
    struct world w;
    start(&w, *state, true, N, 0);
    assert_true(run_until(&w, one_call));
    for (int i = 0; i < 10; i++)
        loop_run_once(w.loop, 1); /* everyone has joined */
    assert_int_equal(cache_flights(w.c), 1);
    w.fake.release = true;
    assert_true(run_until(&w, all_done));
    assert_int_equal(w.fake.calls, 1);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(w.k[i].res, i == 0 ? CACHE_MISS : CACHE_COALESCED);
        assert_int_equal(w.k[i].resp.result, UP_OK);
        assert_int_equal(w.k[i].resp.status, 200);
        assert_string_equal(w.k[i].body.data, "{\"n\":1}");
        assert_int_equal(w.k[i].resp.cc.max_age, 9); /* the headers travel too */
        assert_int_equal(w.k[i].info.attempts, 2);    /* and the attempt loop's info */
        assert_true(w.k[i].info.retried);
    }
    assert_int_equal(w.idle, 1);
    finish(&w, N);
}

/* A call that arrives once the answer is in, before the waiters have run
 * (and stored it), takes that answer: no second backend call. */
static void test_late_joiner(void **state)
{
    struct world w;
    start(&w, *state, true, 2, 0);
    struct caller late = {.c = w.c, .conf = w.k[0].conf};
    buf_init(&late.body, NULL);
    late.ctx = ctx_with_cancel(ctx_background());
    w.fake.late = &late;
    assert_true(run_until(&w, one_call));
    w.fake.release = true;
    uint64_t end = mono_ns() + RUN_TIMEOUT;
    while (!(w.k[0].done && w.k[1].done && late.done) && mono_ns() < end)
        loop_run_once(w.loop, 5);
    assert_int_equal(w.fake.calls, 1);
    assert_int_equal(late.res, CACHE_COALESCED);
    assert_string_equal(late.body.data, "{\"n\":1}");
    ctx_release(late.ctx);
    buf_free(&late.body);
    finish(&w, 2);
}

static void test_not_coalesced(void **state)
{
    struct world w;
    start(&w, *state, false, 2, 0);
    w.fake.release = true;
    uint64_t end = mono_ns() + RUN_TIMEOUT;
    while (!(w.k[0].done && w.k[1].done) && mono_ns() < end)
        loop_run_once(w.loop, 5);
    assert_int_equal(w.fake.calls, 2);
    assert_int_equal(w.k[0].res, CACHE_MISS);
    assert_int_equal(w.k[1].res, CACHE_MISS);
    finish(&w, 2);
}

/* The first caller's client hangs up: it leaves at once, the shared call
 * goes on for the others. */
static void test_leader_cancelled(void **state)
{
    struct world w;
    start(&w, *state, true, N, 0);
    assert_true(run_until(&w, one_call));
    ctx_cancel(w.k[0].ctx, 0);
    assert_true(run_until(&w, first_done));
    assert_int_equal(w.k[0].resp.result, UP_CANCELED);
    assert_int_equal(w.fake.cancelled, 0);
    w.fake.release = true;
    assert_true(run_until(&w, all_done));
    assert_int_equal(w.fake.calls, 1);
    assert_int_equal(w.fake.answered, 1);
    for (size_t i = 1; i < N; i++) {
        assert_int_equal(w.k[i].resp.result, UP_OK);
        assert_string_equal(w.k[i].body.data, "{\"n\":1}");
    }
    finish(&w, N);
}

/* Everyone leaves: the shared call is cancelled, and ends. */
static void test_all_cancelled(void **state)
{
    struct world w;
    start(&w, *state, true, N, 0);
    assert_true(run_until(&w, one_call));
    for (size_t i = 0; i + 1 < N; i++)
        ctx_cancel(w.k[i].ctx, 0);
    for (int i = 0; i < 10; i++)
        loop_run_once(w.loop, 1);
    assert_int_equal(w.fake.cancelled, 0); /* one waiter is left */
    ctx_cancel(w.k[N - 1].ctx, 0);
    assert_true(run_until(&w, all_done));
    assert_int_equal(w.fake.cancelled, 1);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(w.k[i].resp.result, UP_CANCELED);
    assert_int_equal(w.idle, 1);
    finish(&w, N);
}

/* A joiner with a short deadline times out alone, at its deadline. */
static void test_joiner_timeout(void **state)
{
    struct world w;
    uint64_t t0 = mono_ns();
    start(&w, *state, true, N, 50);
    assert_true(run_until(&w, last_done));
    uint64_t took = w.k[N - 1].ended_ns - t0;
    assert_int_equal(w.k[N - 1].resp.result, UP_TIMEOUT);
    assert_true(took >= 45 * MS && took < 2000 * MS);
    assert_int_equal(n_done(&w), 1);
    w.fake.release = true;
    assert_true(run_until(&w, all_done));
    assert_int_equal(w.fake.calls, 1);
    for (size_t i = 0; i + 1 < N; i++)
        assert_int_equal(w.k[i].resp.result, UP_OK);
    finish(&w, N);
}

/* A fresh answer in the store is served without a call; stale is not. */
static void test_fresh_hit(void **state)
{
    loop_t *loop = *state;
    struct degraded *d = degraded_new(16);
    assert_non_null(d);
    struct fake fake = {.release = true};
    struct cache *c = cache_new(loop, d, fake_call, &fake);
    struct caller k = {.c = c, .d = d, .conf = {.enabled = true, .ttl_ms = 1000}};
    buf_init(&k.body, NULL);
    k.ctx = ctx_with_cancel(ctx_background());
    degraded_put_fresh(d, "key", 3, "{\"cached\":1}", 12, 60000);
    assert_non_null(loop_spawn(loop, caller_run, &k));
    assert_true(run_until_flag(loop, &k.done));
    assert_int_equal(k.res, CACHE_HIT);
    assert_string_equal(k.body.data, "{\"cached\":1}");
    assert_int_equal(fake.calls, 0);
    /* only stale: a call */
    degraded_put_fresh(d, "key", 3, "{\"cached\":1}", 12, 0);
    k.done = 0;
    buf_clear(&k.body);
    assert_non_null(loop_spawn(loop, caller_run, &k));
    assert_true(run_until_flag(loop, &k.done));
    assert_int_equal(k.res, CACHE_MISS);
    assert_int_equal(fake.calls, 1);
    /* what an answer of this backend gets: ttl_ms, or the header */
    assert_int_equal(cache_fresh_ms(&k.conf, &k.resp), 1000);
    k.conf.honor_headers = true;
    assert_int_equal(cache_fresh_ms(&k.conf, &k.resp), 9000);
    k.conf.enabled = false;
    assert_int_equal(cache_fresh_ms(&k.conf, &k.resp), 0);
    ctx_release(k.ctx);
    buf_free(&k.body);
    cache_free(c);
    degraded_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_coalesced, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_late_joiner, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_not_coalesced, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_leader_cancelled, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_all_cancelled, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_joiner_timeout, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_fresh_hit, loop_setup, loop_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
