/* Tests for gateway/fanout.c without a network: every request's calls go
 * through r->transport to fake_upstream (a fake backend answering from the
 * path, at once or after a wait on the loop that a cancellation ends), so
 * the whole policy (cache, attempt loop, failure table) runs on a loop with
 * no socket and no link-order trick. It checks every row of the failure table (one case
 * each), a chain and a foreach end to end (order, values, failures through
 * the fallback table), and measures the whole fan-out's CPU cost per
 * backend call for a flat endpoint and a chained one (the difference is
 * what the graph costs). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ctx.h"
#include "core/loop.h"
#include "core/sanitizer.h"
#include "gateway/config.h"
#include "gateway/degraded.h"
#include "gateway/fanout.h"
#include "gateway/metrics.h"
#include "gateway/request.h"
#include "gateway/upstream.h"

static unsigned calls_made;
static bool flip_fails; /* /flip answers 500 while set */

/* How the last /slow call ended: when (mono ns) and whether cancelled. */
static uint64_t slow_end_ns;
static bool slow_cancelled;

/* /slow/MS waits MS ms on the loop or until ctx is done. */
static void slow_call(ctx_t *ctx, const char *ms, struct upstream_resp *resp)
{
    int err = ctx_wait(ctx, mono_ns() + strtoull(ms, NULL, 10) * 1000000ull);
    slow_end_ns = mono_ns();
    slow_cancelled = err != 0;
    if (err) resp->result = err == CTX_DEADLINE_EXCEEDED ? UP_TIMEOUT : UP_CANCELED;
    else assert_int_equal(buf_puts(resp->body, "{\"slow\":true}"), 0);
}

/* The fake backend: /a is the parent, /i/N an item (N = 13 fails), /x/V
 * echoes V, /fail answers 500, /flip {"v":1} or 500 (flip_fails), /slow/MS
 * waits. */
static void fake_upstream(struct upstream *up, ctx_t *ctx, const struct upstream_req *req,
                          struct upstream_resp *resp)
{
    (void)up;
    calls_made++;
    const char *p = req->path;
    resp->result = UP_OK;
    resp->status = 200;
    int rc;
    if (strncmp(p, "/slow/", 6) == 0) {
        slow_call(ctx, p + 6, resp);
        return;
    }
    if (strcmp(p, "/fail") == 0 || (strcmp(p, "/flip") == 0 && flip_fails))
        rc = (resp->status = 500, buf_puts(resp->body, "{}"));
    else if (strcmp(p, "/flip") == 0)
        rc = buf_puts(resp->body, "{\"v\":1}");
    else if (strcmp(p, "/a") == 0)
        rc = buf_puts(resp->body,
                      "{\"id\":\"u 1\",\"list\":[{\"n\":1},{\"n\":2},{\"n\":3},{\"n\":4},"
                      "{\"n\":5}],\"bad\":[{\"n\":1},{\"n\":13}]}");
    else if (strncmp(p, "/i/13", 5) == 0)
        rc = (resp->status = 500, buf_puts(resp->body, "{}"));
    else if (strncmp(p, "/i/", 3) == 0)
        rc = buf_printf(resp->body, "{\"item\":%s}", p + 3);
    else
        rc = buf_printf(resp->body, "{\"path\":\"%s\"}", p);
    assert_int_equal(rc, 0);
}

static unsigned done;

static void request_done(struct request *r)
{
    (void)r;
    done++;
}

static const char CONF[] =
    "{\"endpoints\":["
    "{\"name\":\"flat\",\"path\":\"/flat\",\"backends\":["
    "{\"name\":\"a\",\"url\":\"http://h/x/1\",\"key\":\"a\"},"
    "{\"name\":\"b\",\"url\":\"http://h/x/2\",\"key\":\"b\"},"
    "{\"name\":\"c\",\"url\":\"http://h/x/3\",\"key\":\"c\"},"
    "{\"name\":\"d\",\"url\":\"http://h/x/4\",\"key\":\"d\"},"
    "{\"name\":\"e\",\"url\":\"http://h/x/5\",\"key\":\"e\"},"
    "{\"name\":\"f\",\"url\":\"http://h/x/6\",\"key\":\"f\"},"
    "{\"name\":\"g\",\"url\":\"http://h/x/7\",\"key\":\"g\"}]},"
    "{\"name\":\"chain\",\"path\":\"/chain\",\"concurrency\":4,\"backends\":["
    "{\"name\":\"a\",\"url\":\"http://h/a\",\"key\":\"a\",\"allow\":[\"id\"]},"
    "{\"name\":\"b\",\"url\":\"http://h/x/{a.id}\",\"key\":\"b\"},"
    "{\"name\":\"items\",\"foreach\":\"a.list\",\"url\":\"http://h/i/{item.n}\",\"key\":\"items\","
    "\"target\":\"item\"}]},"
    "{\"name\":\"fail\",\"path\":\"/fail\",\"backends\":["
    "{\"name\":\"a\",\"url\":\"http://h/a\",\"key\":\"a\"},"
    "{\"name\":\"m\",\"url\":\"http://h/x/{a.nope}\",\"key\":\"m\",\"required\":false},"
    "{\"name\":\"s\",\"url\":\"http://h/x/{m.v}\",\"key\":\"s\",\"fallback\":\"static\","
    "\"static\":{\"v\":0}},"
    "{\"name\":\"t\",\"url\":\"http://h/x/{s.v}\",\"key\":\"t\"},"
    "{\"name\":\"items\",\"foreach\":\"a.bad\",\"url\":\"http://h/i/{item.n}\",\"key\":\"items\","
    "\"item_failure\":\"null\"}]},"
    /* the failure table, one endpoint per row (indexes from TABLE) */
    "{\"name\":\"degraded\",\"path\":\"/t1\",\"backends\":["
    "{\"name\":\"d\",\"url\":\"http://h/flip\",\"key\":\"d\",\"fallback\":\"degraded\"}]},"
    "{\"name\":\"static\",\"path\":\"/t2\",\"backends\":["
    "{\"name\":\"s\",\"url\":\"http://h/fail\",\"key\":\"s\",\"fallback\":\"static\","
    "\"static\":[]}]},"
    "{\"name\":\"optional\",\"path\":\"/t3\",\"backends\":["
    "{\"name\":\"o\",\"url\":\"http://h/fail\",\"key\":\"o\",\"required\":false},"
    "{\"name\":\"w\",\"url\":\"http://h/slow/30\",\"key\":\"w\"}]},"
    "{\"name\":\"required\",\"path\":\"/t4\",\"backends\":["
    "{\"name\":\"w\",\"url\":\"http://h/slow/10000\",\"key\":\"w\"},"
    "{\"name\":\"r\",\"url\":\"http://h/fail\",\"key\":\"r\"}]},"
    "{\"name\":\"timeout\",\"path\":\"/t5\",\"timeout_ms\":50,\"backends\":["
    "{\"name\":\"w\",\"url\":\"http://h/slow/10000\",\"key\":\"w\"}]},"
    "{\"name\":\"deadline-degraded\",\"path\":\"/t6\",\"timeout_ms\":50,\"backends\":["
    "{\"name\":\"x\",\"url\":\"http://h/x/1\",\"key\":\"x\"},"
    "{\"name\":\"w\",\"url\":\"http://h/slow/10000\",\"key\":\"w\",\"fallback\":\"static\","
    "\"static\":{\"late\":true}}]}]}";

/* Endpoint indexes in CONF. */
enum { EP_FLAT, EP_CHAIN, EP_FAIL, EP_DEGRADED, EP_STATIC, EP_OPTIONAL, EP_REQUIRED, EP_TIMEOUT,
       EP_DEADLINE_DEGRADED };

struct run {
    const struct config *cfg;
    const struct endpoint_conf *ep;
    struct metrics *metrics;
    struct degraded *store;
    struct cache *cache;
    int rounds;
    char out[1024];
    char timing[512];
    char degraded[128]; /* X-Gateway-Degraded */
    int status;
    uint64_t ns;
};

static void driver(void *arg)
{
    struct run *run = arg;
    uint64_t t0 = mono_ns();
    for (int k = 0; k < run->rounds; k++) {
        struct route_match m = {.ep = run->ep};
        struct request *r = request_new(run->cfg, &m, NULL);
        assert_non_null(r);
        r->metrics = run->metrics;
        r->degraded = run->store;
        r->cache = run->cache;
        r->done = request_done;
        r->transport = fake_upstream;
        r->start_ns = mono_ns();
        assert_int_equal(fanout_prepare(r, NULL, NULL, NULL), 0);
        assert_int_equal(fanout_check(r), 0);
        fanout_run(r);
        run->status = r->status;
        snprintf(run->out, sizeof run->out, "%s", r->out.data ? r->out.data : "");
        snprintf(run->timing, sizeof run->timing, "%s", r->timing.data ? r->timing.data : "");
        snprintf(run->degraded, sizeof run->degraded, "%s",
                 r->degraded_names.data ? r->degraded_names.data : "");
        request_free(r);
    }
    run->ns = mono_ns() - t0;
    loop_stop(loop_current());
}

static struct degraded *store; /* last good answers, shared by runs */

/* The cache's backend, as gateway.c wires it: the attempt loop, which
 * reaches fake_upstream through the plan's transport. */
static void cache_backend(void *up, ctx_t *ctx, const struct attempt_plan *plan,
                          const struct upstream_req *req, struct upstream_resp *resp,
                          struct attempt_info *info)
{
    attempt_call(up, ctx, plan, req, resp, info);
}

static struct run go(const struct config *cfg, size_t ep, int rounds)
{
    struct run run = {.cfg = cfg, .ep = &cfg->endpoints[ep], .rounds = rounds, .store = store};
    run.metrics = metrics_new();
    loop_t *loop = loop_new();
    assert_non_null(loop);
    run.cache = cache_new(loop, store, cache_backend, NULL);
    assert_non_null(run.cache);
    unsigned done_before = done;
    assert_non_null(loop_spawn(loop, driver, &run));
    loop_run(loop);
    cache_free(run.cache);
    loop_free(loop);
    metrics_free(run.metrics);
    assert_int_equal(done - done_before, (unsigned)rounds); /* r->done once per request */
    return run;
}

static struct config *load(void)
{
    struct config_errors errs;
    struct config *cfg = config_parse(CONF, strlen(CONF), &errs);
    for (size_t i = 0; i < errs.n; i++)
        print_message("%s\n", errs.lines[i]);
    config_errors_free(&errs);
    assert_non_null(cfg);
    return cfg;
}

/* ---- the failure table of DESIGN.md, one case per row ---- */

/* A bound far below the slow backend's 10 s: "at once" on a busy machine. */
#define AT_ONCE_NS 5000000000ull

/* degraded: a failed call serves the last good answer (200, listed in
 * X-Gateway-Degraded); with nothing stored it fails like a required call. */
static void test_row_degraded_served(void **state)
{
    (void)state;
    struct config *cfg = load();
    flip_fails = true;
    struct run none = go(cfg, EP_DEGRADED, 1);
    assert_int_equal(none.status, 502);
    flip_fails = false;
    struct run good = go(cfg, EP_DEGRADED, 1);
    assert_int_equal(good.status, 200);
    assert_string_equal(good.degraded, "");
    flip_fails = true;
    struct run bad = go(cfg, EP_DEGRADED, 1);
    flip_fails = false;
    assert_int_equal(bad.status, 200);
    assert_string_equal(bad.out, "{\"d\":{\"v\":1}}");
    assert_string_equal(bad.degraded, "d");
    assert_non_null(strstr(bad.timing, "desc=\"degraded\""));
    config_free(cfg);
}

/* static: the configured value, 200. */
static void test_row_static_served(void **state)
{
    (void)state;
    struct config *cfg = load();
    struct run run = go(cfg, EP_STATIC, 1);
    assert_int_equal(run.status, 200);
    assert_string_equal(run.out, "{\"s\":[]}");
    assert_string_equal(run.degraded, "s");
    assert_non_null(strstr(run.timing, "desc=\"static\""));
    config_free(cfg);
}

/* optional without fallback: the key is left out and nothing is
 * cancelled: the slow sibling runs to its end. */
static void test_row_optional_omitted_cancels_nothing(void **state)
{
    (void)state;
    struct config *cfg = load();
    slow_cancelled = true;
    struct run run = go(cfg, EP_OPTIONAL, 1);
    assert_int_equal(run.status, 200);
    assert_string_equal(run.out, "{\"w\":{\"slow\":true}}");
    assert_false(slow_cancelled);
    assert_non_null(strstr(run.timing, "desc=\"omitted\""));
    config_free(cfg);
}

/* required without fallback: 502 naming the backend, and the sibling is
 * cancelled at once instead of running its 10 s. */
static void test_row_required_fails_and_cancels_siblings(void **state)
{
    (void)state;
    struct config *cfg = load();
    slow_cancelled = false;
    struct run run = go(cfg, EP_REQUIRED, 1);
    assert_int_equal(run.status, 502);
    assert_non_null(strstr(run.out, "\"backend\":\"r\""));
    assert_true(slow_cancelled);
    assert_true(run.ns < AT_ONCE_NS);
    config_free(cfg);
}

/* the request deadline with a required call in flight: 504, the call
 * cancelled. */
static void test_row_timeout_is_504(void **state)
{
    (void)state;
    struct config *cfg = load();
    slow_cancelled = false;
    struct run run = go(cfg, EP_TIMEOUT, 1);
    assert_int_equal(run.status, 504);
    assert_true(slow_cancelled);
    assert_true(run.ns < AT_ONCE_NS);
    config_free(cfg);
}

/* the deadline with a fallback: the finished part and the fallback, 200. */
static void test_row_deadline_with_fallback_is_200(void **state)
{
    (void)state;
    struct config *cfg = load();
    slow_cancelled = false;
    struct run run = go(cfg, EP_DEADLINE_DEGRADED, 1);
    assert_int_equal(run.status, 200);
    assert_string_equal(run.out, "{\"x\":{\"path\":\"/x/1\"},\"w\":{\"late\":true}}");
    assert_string_equal(run.degraded, "w");
    assert_true(slow_cancelled);
    assert_true(run.ns < AT_ONCE_NS);
    config_free(cfg);
}

static void test_chain_and_foreach(void **state)
{
    (void)state;
    struct config *cfg = load();
    calls_made = 0;
    struct run run = go(cfg, EP_CHAIN, 1);
    assert_int_equal(run.status, 200);
    assert_string_equal(run.out, "{\"a\":{\"id\":\"u 1\"},\"b\":{\"path\":\"/x/u%201\"},"
                                 "\"items\":[1,2,3,4,5]}");
    assert_int_equal(calls_made, 7);
    assert_non_null(strstr(run.timing, "items;dur="));
    assert_non_null(strstr(run.timing, ";desc=\"items=5\""));
    config_free(cfg);
}

/* m: missing field, optional -> omitted; s: its dependency failed, static
 * -> served and feeds t; items: item 1 fails -> null. */
static void test_failures_through_fallbacks(void **state)
{
    (void)state;
    struct config *cfg = load();
    calls_made = 0;
    struct run run = go(cfg, EP_FAIL, 1);
    assert_int_equal(run.status, 200);
    assert_non_null(strstr(run.out, "\"s\":{\"v\":0}"));
    assert_non_null(strstr(run.out, "\"t\":{\"path\":\"/x/0\"}"));
    assert_non_null(strstr(run.out, "\"items\":[{\"item\":1},null]"));
    assert_null(strstr(run.out, "\"m\":"));
    assert_int_equal(calls_made, 4); /* a, t, two items: m and s never called */
    assert_non_null(strstr(run.timing, "m;dur="));
    assert_non_null(strstr(run.timing, "desc=\"omitted\""));
    assert_non_null(strstr(run.timing, "desc=\"static\""));
    config_free(cfg);
}

/* CPU per backend call of the whole fan-out (check, schedule, call
 * bookkeeping, merge), flat (7 independent calls) against chained (7
 * calls: 1, then 1 + 5 items). Printed; loosely bounded. */
static void test_cost(void **state)
{
    (void)state;
    struct config *cfg = load();
#if defined(CORE_TSAN) || defined(CORE_ASAN)
    const int rounds = 200; /* a fiber switch costs microseconds there */
#else
    const int rounds = 20000;
#endif
    go(cfg, EP_FLAT, rounds / 20); /* warm the caches and pools */
    struct run flat = go(cfg, EP_FLAT, rounds);
    struct run chain = go(cfg, EP_CHAIN, rounds);
    double f = (double)flat.ns / rounds / 7 / 1000, c = (double)chain.ns / rounds / 7 / 1000;
    print_message("fan-out per backend call: flat %.2f us, chained %.2f us (+%.2f us)\n", f, c,
                  c - f);
#if !defined(CORE_TSAN) && !defined(CORE_ASAN)
    assert_true(c < 200); /* sanitizers: a coroutine costs milliseconds, no bound */
#endif
    config_free(cfg);
}

static int setup(void **state)
{
    (void)state;
    store = degraded_new(64);
    return store ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    degraded_free(store);
    return 0;
}

/* A refusal before any call: a negative errno, the status in r->status
 * and the JSON error in r->out. */
static void test_refusal_convention(void **state)
{
    (void)state;
    struct config *cfg = load();
    struct route_match m = {.ep = &cfg->endpoints[EP_FLAT]};
    struct request *r = request_new(cfg, &m, NULL);
    assert_non_null(r);
    r->start_ns = mono_ns();
    assert_int_equal(fanout_prepare(r, "soon", NULL, "rid-1"), -EINVAL);
    assert_int_equal(r->status, 400);
    assert_string_equal(r->out.data, "{\"error\":\"invalid X-Request-Timeout-Ms\","
                                     "\"backend\":null,\"request_id\":\"rid-1\"}");
    request_free(r);
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_degraded_served),
        cmocka_unit_test(test_row_static_served),
        cmocka_unit_test(test_row_optional_omitted_cancels_nothing),
        cmocka_unit_test(test_row_required_fails_and_cancels_siblings),
        cmocka_unit_test(test_row_timeout_is_504),
        cmocka_unit_test(test_row_deadline_with_fallback_is_200),
        cmocka_unit_test(test_chain_and_foreach),
        cmocka_unit_test(test_failures_through_fallbacks),
        cmocka_unit_test(test_refusal_convention),
        cmocka_unit_test(test_cost),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
