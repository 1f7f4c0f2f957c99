/* Tests for gateway/metrics.c and metrics_render.c: the exposition is
 * checked by a strict parser of the Prometheus text format 0.0.4, values are
 * checked after summing workers, and writers race a scraper (run under
 * TSan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <cmocka.h>

#include "gateway/metrics.h"
#include "prom.h"

/* The value of name{labels...} (pairs, NULL-terminated); NAN when absent. */
static double get(const struct prom *e, const char *name, ...)
{
    char key[1024];
    va_list ap;
    va_start(ap, name);
    prom_vkey(key, sizeof key, name, ap);
    va_end(ap);
    return prom_value(e, key, NAN);
}

static void render_parse(struct prom *e, struct metrics *const *w, size_t n,
                         const struct metrics_globals *g)
{
    buf_t out;
    buf_init(&out, NULL);
    assert_int_equal(metrics_render(&out, w, n, g), 0);
    bool ok = prom_parse(e, out.data, out.len, PROM_GATEWAY) == 0;
    if (!ok) fprintf(stderr, "%s\n--- exposition ---\n%s", e->err, out.data);
    buf_free(&out);
    assert_true(ok);
}

/* ---- the parser rejects what it must ---- */

static void test_parser_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "a 1\n",                                      /* no TYPE */
        "# HELP a x\n# TYPE a counter\na 1",          /* no final newline */
        "# HELP a x\n# TYPE a counter\nb 1\n",        /* other family */
        "# HELP a x\n# TYPE a counter\na{l=\"v} 1\n", /* unterminated */
        "# HELP a x\n# TYPE a counter\na{l=\"\\t\"} 1\n",
        "# HELP a x\n# TYPE a counter\na{l=\"v\",l=\"w\"} 1\n",
        "# HELP a x\n# TYPE a counter\na 1\na 2\n", /* duplicate */
        "# HELP a x\n# TYPE a counter\na 1 123\n",  /* timestamp: we never emit one */
        "# HELP a x\n# TYPE a summary\n",
        "# HELP a x\n# TYPE a counter\na{1l=\"v\"} 1\n",
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
        "h_sum 1\nh_count 1\n",
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\n"
        "h_sum 1\nh_count 2\n",
        "# HELP a x\n# TYPE a counter\n# HELP b x\n# TYPE b counter\na 1\n",
        "# HELP a x\n# TYPE a counter\n\na 1\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct prom e;
        bool ok = prom_parse(&e, bad[i], strlen(bad[i]), PROM_GATEWAY) == 0;
        if (ok) fprintf(stderr, "accepted: %s\n", bad[i]);
        assert_false(ok);
        prom_free(&e);
    }
    struct prom e;
    static const char good[] =
        "# HELP h x\n# TYPE h histogram\nh_bucket{a=\"\\\"\\n\\\\\",le=\"1\"} "
        "1\nh_bucket{a=\"\\\"\\n\\\\\",le=\"+Inf\"} 1\n"
        "h_sum{a=\"\\\"\\n\\\\\"} 0.5\nh_count{a=\"\\\"\\n\\\\\"} 1\n";
    assert_int_equal(prom_parse(&e, good, strlen(good), PROM_GATEWAY), 0);
    assert_true(get(&e, "h_count", "a", "\"\n\\", NULL) == 1);
    prom_free(&e);
}

/* The format as anyone may write it (PROM_GATEWAY off). */
static void test_parser_follows_the_format(void **state)
{
    (void)state;
#define H "# TYPE h histogram\n"
    static const char good[] =
        "# HELP c_total A \\\\ counter\\n.\n# TYPE c_total counter\n"
        "c_total{a=\"x\\\"y\\n\",b=\"\"} 1\nc_total{a=\"z\",} 2.5e3 1700000000000\n\n"
        "# comment\n# TYPE g gauge\ng -Inf\ng{x=\"1\"} NaN\n" H
        "h_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
    static const char *const bad[] = {
        "# TYPE c_total counter\nc_total 1",                    /* no final newline */
        "c_total 1\n",                                          /* no TYPE */
        "# TYPE c_total counter\nd_total 1\n",                  /* another family */
        "# TYPE c_total counter\nc_total 1\nc_total 2\n",       /* duplicate series */
        "# TYPE c_total counter\nc_total{a=\"1\",a=\"2\"} 1\n", /* label twice */
        "# TYPE c_total counter\nc_total{a=\"\\x\"} 1\n",       /* bad escape */
        "# TYPE c_total counter\nc_total{a=\"1} 1\n",           /* unterminated */
        "# TYPE c_total counter\nc_total{1a=\"1\"} 1\n",        /* label name */
        "# TYPE c_total counter\nc_total{__a=\"1\"} 1\n",       /* reserved */
        "# TYPE c_total counter\nc_total 0x10\n",               /* hex value */
        "# TYPE c_total counter\nc_total  1\n",                 /* two spaces */
        "# TYPE c_total counter\nc_total -1\n",                 /* negative counter */
        "# TYPE c_total counter\nc_total 1 x\n",                /* timestamp */
        "# TYPE c_total counter\nc_total 1\r\n",                /* CR */
        "# TYPE c_total counter\n# TYPE c_total counter\nc_total 1\n",
        "# TYPE c_total counter\nc_total 1\n# TYPE g gauge\ng 1\nc_total{a=\"1\"} 1\n",
        "# TYPE c_total counter\nc_total 1\n# HELP c_total late\n",
        "# TYPE c_total countr\nc_total 1\n", /* unknown type */
        "# HELP c_total x\\q\n# TYPE c_total counter\nc_total 1\n",
        "# TYPE 9c counter\n",
        H "h 1\n",                                      /* bare histogram name */
        H "h_bucket 1\nh_sum 1\nh_count 1\n",           /* no le */
        H "h_sum{le=\"1\"} 1\n",                        /* le off a bucket */
        H "h_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", /* no +Inf */
        H "h_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        H "h_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\n"
          "h_sum 1\nh_count 1\n",
        H "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n", /* +Inf != _count */
        H "h_bucket{le=\"+Inf\"} 2\nh_count 2\n",          /* no _sum */
        H "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\nh_count{a=\"1\"} 0\n",
    };
#undef H
    struct prom e;
    if (prom_parse(&e, good, strlen(good), 0) != 0) fail_msg("good text: %s", e.err);
    assert_int_equal(e.n, 8);
    assert_non_null(prom_find(&e, "c_total{a=\"x\"y\n\",b=\"\"}"));
    assert_true(prom_value(&e, "c_total{a=\"z\"}", 0) == 2500);
    prom_free(&e);
    /* blank line, comment, timestamp, trailing comma, no HELP: not the
     * gateway's layout */
    assert_int_equal(prom_parse(&e, good, strlen(good), PROM_GATEWAY), -EINVAL);
    prom_free(&e);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        bool ok = prom_parse(&e, bad[i], strlen(bad[i]), 0) == 0;
        prom_free(&e);
        if (ok) fail_msg("accepted bad text %zu: %s", i, bad[i]);
    }
}

/* ---- the renderer ---- */

static void test_empty(void **state)
{
    (void)state;
    struct prom e;
    render_parse(&e, NULL, 0, NULL);
    static const char *const families[] = {
        "gateway_requests_total",         "gateway_request_duration_seconds",
        "gateway_backend_requests_total", "gateway_backend_duration_seconds",
        "gateway_inflight_requests",      "gateway_pool_hits_total",
        "gateway_pool_misses_total",      "gateway_access_log_dropped_total",
        "gateway_config_reloads_total",   "gateway_spans_dropped_total",
        "gateway_upstream_connections_total", "gateway_upstream_idle_connections",
        "gateway_cache_requests_total",   "gateway_store_entries",
        "gateway_store_bytes",            "gateway_backend_items_total",
        "gateway_breaker_state",          "gateway_upstream_host_healthy",
        "gateway_backend_attempts_total", "gateway_retry_budget_exhausted_total"};
    assert_int_equal(e.nf, 20);
    for (size_t i = 0; i < 20; i++)
        assert_non_null(prom_family(&e, families[i]));
    assert_true(get(&e, "gateway_upstream_connections_total", "transport", "native", "event",
                    "stale_retry", NULL) == 0);
    assert_true(get(&e, "gateway_upstream_idle_connections", NULL) == 0);
    assert_true(get(&e, "gateway_inflight_requests", NULL) == 0);
    assert_true(get(&e, "gateway_access_log_dropped_total", NULL) == 0);
    assert_true(get(&e, "gateway_config_reloads_total", "result", "ok", NULL) == 0);
    assert_true(get(&e, "gateway_config_reloads_total", "result", "error", NULL) == 0);
    assert_true(get(&e, "gateway_spans_dropped_total", NULL) == 0);
    assert_true(get(&e, "gateway_store_entries", NULL) == 0);
    prom_free(&e);
}

/* gateway_cache_requests_total sums the workers per backend and result;
 * the store gauges come from the globals. */
static void test_cache_counters(void **state)
{
    (void)state;
    struct metrics *w[2] = {metrics_new(), metrics_new()};
    assert_int_equal(metrics_cache(w[0], "users", CACHE_HIT), 0);
    assert_int_equal(metrics_cache(w[1], "users", CACHE_HIT), 0);
    assert_int_equal(metrics_cache(w[1], "users", CACHE_COALESCED), 0);
    assert_int_equal(metrics_cache(w[0], "users", CACHE_MISS), 0);
    assert_int_equal(metrics_cache(w[0], "users", CACHE_NONE), -EINVAL);
    assert_int_equal(metrics_cache(w[0], "users", CACHE_RESULT_COUNT), -EINVAL);
    assert_int_equal(metrics_cache(w[0], "users", (enum cache_result)-1), -EINVAL);
    assert_int_equal(metrics_cache(w[0], NULL, CACHE_HIT), -EINVAL);
    struct metrics_globals g = {.store_entries = 7, .store_bytes = 1234};
    struct prom e;
    render_parse(&e, w, 2, &g);
    assert_true(get(&e, "gateway_cache_requests_total", "backend", "users", "result", "hit",
                    NULL) == 2);
    assert_true(get(&e, "gateway_cache_requests_total", "backend", "users", "result", "miss",
                    NULL) == 1);
    assert_true(get(&e, "gateway_cache_requests_total", "backend", "users", "result",
                    "coalesced", NULL) == 1);
    assert_true(get(&e, "gateway_store_entries", NULL) == 7);
    assert_true(get(&e, "gateway_store_bytes", NULL) == 1234);
    prom_free(&e);
    metrics_free(w[0]);
    metrics_free(w[1]);
}

/* Attempt counters are per worker (no shared atomic on the request path)
 * and summed by the scrape. */
static void test_attempts_summed(void **state)
{
    (void)state;
    struct metrics *w[2] = {metrics_new(), metrics_new()};
    assert_int_equal(metrics_attempts(w[0], "users", 1, 2, 0), 0);
    assert_int_equal(metrics_attempts(w[1], "users", 1, 0, 1), 0);
    assert_int_equal(metrics_attempts(w[1], "users", 1, 0, 0), 0);
    assert_int_equal(metrics_attempts(w[1], NULL, 1, 0, 0), -EINVAL);
    struct prom e;
    render_parse(&e, w, 2, NULL);
    assert_true(get(&e, "gateway_backend_attempts_total", "backend", "users", "kind", "first",
                    NULL) == 3);
    assert_true(get(&e, "gateway_backend_attempts_total", "backend", "users", "kind", "retry",
                    NULL) == 2);
    assert_true(get(&e, "gateway_backend_attempts_total", "backend", "users", "kind", "hedge",
                    NULL) == 1);
    prom_free(&e);
    metrics_free(w[0]);
    metrics_free(w[1]);
}

/* Each outcome is counted in its own counter and rendered with its own label,
 * for backend calls and item calls alike; a value out of range is refused. */
static void test_outcomes_by_index(void **state)
{
    (void)state;
    struct metrics *m = metrics_new();
    assert_non_null(m);
    for (int o = 0; o < OUTCOME_COUNT; o++)
        for (int k = 0; k <= o; k++) {
            assert_int_equal(metrics_backend(m, "ep", "b", (enum outcome)o, -1), 0);
            assert_int_equal(metrics_item(m, "ep", "b", (enum outcome)o), 0);
        }
    assert_int_equal(metrics_backend(m, "ep", "b", OUTCOME_COUNT, -1), -EINVAL);
    assert_int_equal(metrics_item(m, "ep", "b", (enum outcome)-1), -EINVAL);
    struct prom e;
    render_parse(&e, &m, 1, NULL);
    const char *names[] = {"ok", "error", "timeout", "cancelled", "open", "degraded", "static",
                           "omitted"};
    assert_int_equal(sizeof names / sizeof names[0], OUTCOME_COUNT);
    for (int o = 0; o < OUTCOME_COUNT; o++) {
        assert_string_equal(outcome_name((enum outcome)o), names[o]);
        assert_true(get(&e, "gateway_backend_requests_total", "endpoint", "ep", "backend", "b",
                        "outcome", names[o], NULL) == o + 1);
        assert_true(get(&e, "gateway_backend_items_total", "endpoint", "ep", "backend", "b",
                        "outcome", names[o], NULL) == o + 1);
    }
    assert_int_equal(prom_count(&e, "gateway_backend_requests_total"), OUTCOME_COUNT);
    assert_string_equal(outcome_name(OUTCOME_COUNT), "?");
    prom_free(&e);
    metrics_free(m);
}

static void test_sum_three_workers(void **state)
{
    (void)state;
    struct metrics *w[3];
    for (int i = 0; i < 3; i++)
        assert_non_null(w[i] = metrics_new());
    /* dash: 2 + 3 + 4 OK requests, one per worker on the 1 ms boundary */
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 2 + i; k++)
            assert_int_equal(metrics_request(w[i], "dash", 200, k == 0 ? 0.001 : 0.0011), 0);
    }
    assert_int_equal(metrics_request(w[1], "dash", 504, 20.0), 0); /* beyond 10 s: +Inf */
    assert_int_equal(metrics_request(w[2], NULL, 404, 0.0), 0);
    assert_int_equal(metrics_request(w[0], "", 404, -1), 0); /* no duration */
    assert_int_equal(metrics_request(w[0], "dash", 200, NAN), 0);

    assert_int_equal(metrics_backend(w[0], "dash", "user", OUT_OK, 0.2), 0);
    assert_int_equal(metrics_backend(w[1], "dash", "user", OUT_OK, 0.3), 0);
    assert_int_equal(metrics_backend(w[2], "dash", "user", OUT_TIMEOUT, 0.3), 0);
    assert_int_equal(metrics_backend(w[2], "dash", "recs", OUT_STATIC, -1), 0);
    assert_int_equal(metrics_backend(w[0], "dash", "recs", OUT_OMITTED, -1), 0);
    assert_int_equal(metrics_backend(w[0], "dash", "recs", OUTCOME_COUNT, 1), -EINVAL);
    assert_int_equal(metrics_backend(w[0], "dash", NULL, OUT_OK, 1), -EINVAL);

    metrics_inflight_add(w[0], 3);
    metrics_inflight_add(w[1], 2);
    metrics_inflight_add(w[1], -1);

    metrics_upstream_event(w[0], METRICS_TRANSPORT_NATIVE, METRICS_UP_CONNECT);
    metrics_upstream_event(w[2], METRICS_TRANSPORT_NATIVE, METRICS_UP_CONNECT);
    metrics_upstream_event(w[1], METRICS_TRANSPORT_NATIVE, METRICS_UP_REUSE);
    metrics_upstream_event(w[1], METRICS_TRANSPORT_NATIVE, METRICS_UP_STALE_RETRY);
    metrics_upstream_event(w[2], METRICS_TRANSPORT_CURL, METRICS_UP_CLOSE);
    metrics_upstream_idle_add(w[0], 2);
    metrics_upstream_idle_add(w[2], 1);
    metrics_upstream_idle_add(w[2], -1);

    struct metrics_pool_stat pools[] = {
        {"buf", 10, 2}, {"curl", 5, 1}, {"buf", 7, 3}, {"stack", 0, 4}};
    struct metrics_globals g = {
        .pools = pools, .npools = 4, .access_log_dropped = 17, .reloads_ok = 2, .reloads_error = 1,
        .spans_dropped = 5};
    struct prom e;
    render_parse(&e, w, 3, &g);

    assert_true(get(&e, "gateway_requests_total", "endpoint", "dash", "code", "200", NULL) == 10);
    assert_true(get(&e, "gateway_requests_total", "endpoint", "dash", "code", "504", NULL) == 1);
    assert_true(get(&e, "gateway_requests_total", "endpoint", "none", "code", "404", NULL) == 2);
    assert_int_equal(prom_count(&e, "gateway_requests_total"), 3);

    const char *u = "gateway_upstream_connections_total";
    assert_true(get(&e, u, "transport", "native", "event", "connect", NULL) == 2);
    assert_true(get(&e, u, "transport", "native", "event", "reuse", NULL) == 1);
    assert_true(get(&e, u, "transport", "native", "event", "stale_retry", NULL) == 1);
    assert_true(get(&e, u, "transport", "native", "event", "close", NULL) == 0);
    assert_true(get(&e, u, "transport", "curl", "event", "close", NULL) == 1);
    assert_int_equal(prom_count(&e, u), 8);
    assert_true(get(&e, "gateway_upstream_idle_connections", NULL) == 2);

    const char *h = "gateway_request_duration_seconds";
    char name[128];
    snprintf(name, sizeof name, "%s_bucket", h);
    assert_true(get(&e, name, "endpoint", "dash", "le", "0.001", NULL) == 3);
    assert_true(get(&e, name, "endpoint", "dash", "le", "0.0025", NULL) == 9);
    assert_true(get(&e, name, "endpoint", "dash", "le", "10", NULL) == 9);
    assert_true(get(&e, name, "endpoint", "dash", "le", "+Inf", NULL) == 10);
    assert_true(get(&e, name, "endpoint", "none", "le", "0.001", NULL) == 1);
    snprintf(name, sizeof name, "%s_count", h);
    assert_true(get(&e, name, "endpoint", "dash", NULL) == 10);
    assert_true(get(&e, name, "endpoint", "none", NULL) == 1);
    snprintf(name, sizeof name, "%s_sum", h);
    assert_true(fabs(get(&e, name, "endpoint", "dash", NULL) - (3 * 0.001 + 6 * 0.0011 + 20)) <
                1e-9);

    const char *b = "gateway_backend_requests_total";
    assert_true(get(&e, b, "endpoint", "dash", "backend", "user", "outcome", "ok", NULL) == 2);
    assert_true(get(&e, b, "endpoint", "dash", "backend", "user", "outcome", "timeout", NULL) == 1);
    assert_true(get(&e, b, "endpoint", "dash", "backend", "user", "outcome", "error", NULL) == 0);
    assert_true(get(&e, b, "endpoint", "dash", "backend", "recs", "outcome", "static", NULL) == 1);
    assert_true(get(&e, b, "endpoint", "dash", "backend", "recs", "outcome", "omitted", NULL) == 1);
    assert_int_equal(prom_count(&e, b), 16); /* 2 pairs x 8 outcomes */
    assert_true(get(&e, "gateway_backend_duration_seconds_count", "backend", "user", NULL) == 3);
    assert_true(get(&e, "gateway_backend_duration_seconds_bucket", "backend", "user", "le", "0.25",
                    NULL) == 1);
    assert_true(isnan(get(&e, "gateway_backend_duration_seconds_count", "backend", "recs", NULL)));

    assert_true(get(&e, "gateway_inflight_requests", NULL) == 4);
    assert_true(get(&e, "gateway_pool_hits_total", "pool", "buf", NULL) == 17);
    assert_true(get(&e, "gateway_pool_misses_total", "pool", "buf", NULL) == 5);
    assert_true(get(&e, "gateway_pool_hits_total", "pool", "curl", NULL) == 5);
    assert_true(get(&e, "gateway_pool_misses_total", "pool", "stack", NULL) == 4);
    assert_int_equal(prom_count(&e, "gateway_pool_hits_total"), 3);
    assert_true(get(&e, "gateway_access_log_dropped_total", NULL) == 17);
    assert_true(get(&e, "gateway_spans_dropped_total", NULL) == 5);
    assert_true(get(&e, "gateway_config_reloads_total", "result", "ok", NULL) == 2);
    assert_true(get(&e, "gateway_config_reloads_total", "result", "error", NULL) == 1);
    prom_free(&e);

    /* A NULL worker slot is skipped. */
    struct metrics *some[] = {NULL, w[1]};
    render_parse(&e, some, 2, NULL);
    assert_true(get(&e, "gateway_requests_total", "endpoint", "dash", "code", "200", NULL) == 3);
    prom_free(&e);
    for (int i = 0; i < 3; i++)
        metrics_free(w[i]);
}

static void test_labels_copied_and_escaped(void **state)
{
    (void)state;
    struct metrics *m = metrics_new();
    assert_non_null(m);
    char ep[32] = "a\"b\\c\nd";
    assert_int_equal(metrics_request(m, ep, 200, 0.01), 0);
    strcpy(ep, "other"); /* the label was copied: a reload may free the config */
    assert_int_equal(metrics_request(m, ep, 200, 0.01), 0);
    struct prom e;
    render_parse(&e, &m, 1, NULL);
    assert_true(get(&e, "gateway_requests_total", "endpoint", "a\"b\\c\nd", "code", "200", NULL) ==
                1);
    assert_true(get(&e, "gateway_requests_total", "endpoint", "other", "code", "200", NULL) == 1);
    prom_free(&e);
    metrics_free(m);
}

static void test_many_series(void **state)
{
    (void)state;
    struct metrics *m = metrics_new();
    assert_non_null(m);
    enum { N = 300 };
    char name[32];
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < N; i++) {
            snprintf(name, sizeof name, "ep%d", i);
            assert_int_equal(metrics_request(m, name, 200 + i % 3, 0.001 * (i % 50)), 0);
            assert_int_equal(metrics_backend(m, name, "b", OUT_OK, 0.01), 0);
        }
    struct prom e;
    render_parse(&e, &m, 1, NULL);
    assert_int_equal(prom_count(&e, "gateway_requests_total"), N);
    assert_int_equal(prom_count(&e, "gateway_request_duration_seconds_count"), N);
    for (int i = 0; i < N; i += 97) {
        char code[8];
        snprintf(name, sizeof name, "ep%d", i);
        snprintf(code, sizeof code, "%d", 200 + i % 3);
        assert_true(get(&e, "gateway_requests_total", "endpoint", name, "code", code, NULL) == 2);
    }
    assert_true(get(&e, "gateway_backend_duration_seconds_count", "backend", "b", NULL) == 2 * N);
    prom_free(&e);
    metrics_free(m);
}

static void test_series_limit(void **state)
{
    (void)state;
    struct metrics *m = metrics_new();
    assert_non_null(m);
    for (int code = 0; code < METRICS_MAX_SERIES; code++)
        assert_int_equal(metrics_request(m, "x", code, -1), 0);
    assert_int_equal(metrics_request(m, "x", METRICS_MAX_SERIES, -1), -ENOSPC);
    assert_int_equal(metrics_request(m, "x", 7, -1), 0); /* existing series still count */
    metrics_free(m);
}

/* ---- writers race a scraper ---- */

enum { WRITERS = 2, ITERS = 20000, NAMES_EVERY = 500 };

struct race {
    struct metrics *w[WRITERS];
    atomic_int done;
    atomic_int scrapes;
    pthread_barrier_t start;
};

struct writer_arg {
    struct race *r;
    int id;
};

static void *writer(void *p)
{
    struct writer_arg *a = p;
    struct metrics *m = a->r->w[a->id];
    char ep[32];
    pthread_barrier_wait(&a->r->start);
    for (int i = 0; i < ITERS; i++) {
        /* New endpoint names keep appearing while the scraper runs. */
        snprintf(ep, sizeof ep, "ep%d", i / NAMES_EVERY);
        /* Interleave for sure: before each new name, wait for a scrape. */
        if (i % NAMES_EVERY == 0)
            while (atomic_load(&a->r->scrapes) < i / NAMES_EVERY)
                sched_yield();
        metrics_inflight_add(m, 1);
        if (metrics_request(m, ep, 200, 0.0005 * (i % 40))) abort();
        if (metrics_backend(m, ep, a->id ? "b1" : "b0", OUT_OK, 0.001)) abort();
        metrics_inflight_add(m, -1);
    }
    atomic_fetch_add(&a->r->done, 1);
    return NULL;
}

static double total(const struct prom *e, const char *name)
{
    double t = 0;
    for (size_t i = 0; i < e->n; i++)
        if (strcmp(e->s[i].name, name) == 0) t += e->s[i].value;
    return t;
}

static void test_concurrent_scrape(void **state)
{
    (void)state;
    struct race r = {0};
    pthread_barrier_init(&r.start, NULL, WRITERS + 1);
    struct writer_arg args[WRITERS];
    pthread_t th[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        assert_non_null(r.w[i] = metrics_new());
        args[i] = (struct writer_arg){&r, i};
        assert_int_equal(pthread_create(&th[i], NULL, writer, &args[i]), 0);
    }
    pthread_barrier_wait(&r.start);
    double last = 0;
    int scrapes = 0;
    /* At least a few scrapes, and keep scraping until both writers finish. */
    while (atomic_load(&r.done) < WRITERS || scrapes < 3) {
        struct prom e;
        render_parse(&e, r.w, WRITERS, NULL);
        double t = total(&e, "gateway_requests_total");
        assert_true(t >= last);
        assert_true(t <= WRITERS * ITERS);
        double inflight = get(&e, "gateway_inflight_requests", NULL);
        assert_true(inflight >= 0 && inflight <= WRITERS);
        last = t;
        scrapes++;
        atomic_store(&r.scrapes, scrapes);
        prom_free(&e);
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    struct prom e;
    render_parse(&e, r.w, WRITERS, NULL);
    assert_true(total(&e, "gateway_requests_total") == WRITERS * ITERS);
    assert_true(total(&e, "gateway_request_duration_seconds_count") == WRITERS * ITERS);
    assert_int_equal(prom_count(&e, "gateway_requests_total"), ITERS / NAMES_EVERY);
    assert_true(get(&e, "gateway_backend_duration_seconds_count", "backend", "b0", NULL) == ITERS);
    assert_true(get(&e, "gateway_inflight_requests", NULL) == 0);
    prom_free(&e);
    for (int i = 0; i < WRITERS; i++)
        metrics_free(r.w[i]);
    pthread_barrier_destroy(&r.start);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parser_rejects),
        cmocka_unit_test(test_parser_follows_the_format),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_cache_counters),
        cmocka_unit_test(test_attempts_summed),
        cmocka_unit_test(test_outcomes_by_index),
        cmocka_unit_test(test_sum_three_workers), cmocka_unit_test(test_labels_copied_and_escaped),
        cmocka_unit_test(test_many_series),       cmocka_unit_test(test_series_limit),
        cmocka_unit_test(test_concurrent_scrape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
