/* Tests for gateway/fanout.c's call graph without a network: this program
 * defines upstream_call (a fake backend answering from the path at once)
 * and server_request_done, so the static gwlib links them instead of
 * upstream.c and server.c. It checks a chain and a foreach end to end
 * (order, values, failures through the fallback table), and measures the
 * whole fan-out's CPU cost per backend call for a flat endpoint and a
 * chained one (the difference is what the graph costs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/loop.h"
#include "core/sanitizer.h"
#include "gateway/config.h"
#include "gateway/fanout.h"
#include "gateway/metrics.h"
#include "gateway/upstream.h"

static unsigned calls_made;

/* The fake backend: /a is the parent, /i/N an item (N = 13 fails), /x/V
 * echoes V. */
void upstream_call(struct upstream *up, ctx_t *ctx, const struct upstream_req *req,
                   struct upstream_resp *resp)
{
    (void)up;
    (void)ctx;
    calls_made++;
    const char *p = req->path;
    resp->result = UP_OK;
    resp->status = 200;
    int rc;
    if (strcmp(p, "/a") == 0)
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

void server_request_done(struct request *r)
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
    "\"item_failure\":\"null\"}]}]}";

struct run {
    const struct config *cfg;
    const struct endpoint_conf *ep;
    struct metrics *metrics;
    int rounds;
    char out[1024];
    char timing[512];
    int status;
    uint64_t ns;
};

static void driver(void *arg)
{
    struct run *run = arg;
    uint64_t t0 = mono_ns();
    for (int k = 0; k < run->rounds; k++) {
        size_t n = run->ep->n_backends;
        struct request *r = calloc(1, sizeof *r + n * sizeof(struct backend_call));
        assert_non_null(r);
        r->cfg = run->cfg;
        r->ep = run->ep;
        r->metrics = run->metrics;
        r->n_calls = n;
        r->start_ns = mono_ns();
        for (size_t i = 0; i < n; i++) {
            r->calls[i].req = r;
            r->calls[i].b = &run->ep->backends[i];
        }
        assert_int_equal(fanout_prepare(r, NULL, NULL, NULL), 0);
        assert_int_equal(fanout_check(r), 0);
        fanout_run(r);
        run->status = r->status;
        snprintf(run->out, sizeof run->out, "%s", r->out.data ? r->out.data : "");
        snprintf(run->timing, sizeof run->timing, "%s", r->timing.data ? r->timing.data : "");
        fanout_cleanup(r);
        free(r);
    }
    run->ns = mono_ns() - t0;
    loop_stop(loop_current());
}

static struct run go(const struct config *cfg, size_t ep, int rounds)
{
    struct run run = {.cfg = cfg, .ep = &cfg->endpoints[ep], .rounds = rounds};
    run.metrics = metrics_new();
    loop_t *loop = loop_new();
    assert_non_null(loop);
    assert_non_null(loop_spawn(loop, driver, &run));
    loop_run(loop);
    loop_free(loop);
    metrics_free(run.metrics);
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

static void test_chain_and_foreach(void **state)
{
    (void)state;
    struct config *cfg = load();
    calls_made = 0;
    struct run run = go(cfg, 1, 1);
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
    struct run run = go(cfg, 2, 1);
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
    go(cfg, 0, rounds / 20); /* warm the caches and pools */
    struct run flat = go(cfg, 0, rounds);
    struct run chain = go(cfg, 1, rounds);
    double f = (double)flat.ns / rounds / 7 / 1000, c = (double)chain.ns / rounds / 7 / 1000;
    print_message("fan-out per backend call: flat %.2f us, chained %.2f us (+%.2f us)\n", f, c,
                  c - f);
#if !defined(CORE_TSAN) && !defined(CORE_ASAN)
    assert_true(c < 200); /* sanitizers: a coroutine costs milliseconds, no bound */
#endif
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chain_and_foreach),
        cmocka_unit_test(test_failures_through_fallbacks),
        cmocka_unit_test(test_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
