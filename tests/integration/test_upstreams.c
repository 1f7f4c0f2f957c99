/*
 * Upstream groups, breakers, retries and hedging (README.md "Upstream
 * groups") against three real mock backends A, B and C:
 * round_robin alternates, least_inflight sends to the idle host, a 503 is
 * retried on the other host, POST is never retried, the retry budget bounds
 * the retries of 100 always-failing calls, a breaker opens after N failures
 * (the backend's log stops growing, degraded answers in under 1 ms of
 * gateway time), then lets exactly one probe through after open_ms, and a
 * hedge cuts a 1 s answer (the first attempt's connection is closed).
 *
 * The mocks' logs are the witness of what was sent; every wait is a bounded
 * poll.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static const char conf[] =
    "{\n"
    " \"server\": {\"listen\": \"127.0.0.1:${PORT}\", \"workers\": 2,\n"
    "            \"shutdown_timeout_ms\": 2000},\n"
    " \"defaults\": {\"timeout_ms\": 5000, \"backend_timeout_ms\": 3000,\n"
    "              \"breaker\": {\"consecutive_failures\": 3, \"open_ms\": 1000}},\n"
    " \"access_log\": {\"path\": \"off\"},\n"
    " \"upstreams\": {\n"
    "  \"rr\": {\"hosts\": [\"127.0.0.1:@A@\", \"127.0.0.1:@B@\"], \"balance\": \"round_robin\",\n"
    "          \"breaker\": null},\n"
    "  \"li\": {\"hosts\": [\"127.0.0.1:@A@\", \"127.0.0.1:@B@\"], \"breaker\": null},\n"
    "  \"pair\": {\"hosts\": [\"127.0.0.1:@A@\", \"127.0.0.1:@B@\"], \"breaker\": null},\n"
    "  \"flaky\": {\"hosts\": [\"127.0.0.1:@C@\"], \"breaker\": null}},\n"
    " \"endpoints\": [\n"
    "  {\"name\": \"rr\", \"path\": \"/api/rr/{id}\",\n"
    "   \"backends\": [{\"name\": \"u\", \"url\": \"http://rr/users/{id}\"}]},\n"
    "  {\"name\": \"li\", \"path\": \"/api/li/{id}\",\n"
    "   \"backends\": [{\"name\": \"u\", \"url\": \"http://li/users/{id}\"}]},\n"
    "  {\"name\": \"lislow\", \"path\": \"/api/lislow/{id}\",\n"
    "   \"backends\": [{\"name\": \"s\", \"url\": \"http://li/slow/1500/{id}\"}]},\n"
    "  {\"name\": \"retry\", \"path\": \"/api/retry/{id}\",\n"
    "   \"backends\": [{\"name\": \"u\", \"url\": \"http://pair/users/{id}\", \"retries\": 1}]},\n"
    "  {\"name\": \"tl\", \"path\": \"/api/tl/{id}\", \"timeout_ms\": 2500,\n"
    "   \"backends\": [{\"name\": \"t\", \"url\": \"http://flaky/users/{id}\", \"retries\": 1}]},\n"
    "  {\"name\": \"post\", \"path\": \"/api/post/{id}\",\n"
    "   \"backends\": [{\"name\": \"p\", \"url\": \"http://pair/fail/503\", \"method\": \"POST\",\n"
    "                 \"retries\": 3}]},\n"
    "  {\"name\": \"budget\", \"path\": \"/api/budget/{id}\",\n"
    "   \"backends\": [{\"name\": \"f\", \"url\": \"http://flaky/fail/503\", \"retries\": 5}]},\n"
    "  {\"name\": \"brk\", \"path\": \"/api/brk/{id}\",\n"
    "   \"backends\": [{\"name\": \"b\", \"url\": \"http://127.0.0.1:@C@/fail/500\",\n"
    "                 \"fallback\": \"static\", \"static\": {\"stale\": true}}]},\n"
    "  {\"name\": \"brkslow\", \"path\": \"/api/brkslow/{id}\",\n"
    "   \"backends\": [{\"name\": \"s\", \"url\": \"http://127.0.0.1:@B@/slow/400/{id}\",\n"
    "                 \"fallback\": \"static\", \"static\": {\"stale\": true}}]},\n"
    "  {\"name\": \"hedge\", \"path\": \"/api/hedge/{id}\",\n"
    "   \"backends\": [{\"name\": \"h\", \"url\": \"http://pair/users/{id}\",\n"
    "                 \"hedge_after_ms\": 50}]}\n"
    " ]\n"
    "}\n";

static struct h_mock A, B, C;
static struct h_gateway gw;

static struct h_mock *const mocks[] = {&A, &B, &C};

static int group_setup(void **state)
{
    (void)state;
    return h_env_start_mocks(&gw, mocks, 3, conf) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return h_env_stop_mocks(&gw, mocks, 3);
}

static int reset_mocks(void **state)
{
    (void)state;
    return h_mock_reset(&A) || h_mock_reset(&B) || h_mock_reset(&C) ? -1 : 0;
}

static int log_count(const struct h_mock *m, const char *prefix)
{
    return h_mock_count(m, prefix);
}

static void get_ok(const char *path, struct h_resp *r)
{
    assert_int_equal(h_get(gw.base, path, NULL, r), 0);
    if (r->status != 200) fprintf(stderr, "%s: %ld %s\n", path, r->status, r->body);
    assert_int_equal(r->status, 200);
}

static void round_robin_alternates(void **state)
{
    (void)state;
    char path[64];
    for (int i = 0; i < 10; i++) {
        struct h_resp r;
        snprintf(path, sizeof path, "/api/rr/%d", i);
        get_ok(path, &r);
        h_resp_free(&r);
    }
    assert_int_equal(log_count(&A, "/users/"), 5);
    assert_int_equal(log_count(&B, "/users/"), 5);
}

struct bg {
    pthread_t th;
    char path[64];
    long status;
};

static void *bg_get(void *arg)
{
    struct bg *b = arg;
    struct h_resp r;
    h_get(gw.base, b->path, NULL, &r);
    b->status = r.status;
    h_resp_free(&r);
    return NULL;
}

static void least_inflight_sends_to_the_idle_one(void **state)
{
    (void)state;
    struct bg slow = {.path = "/api/lislow/x"};
    assert_int_equal(pthread_create(&slow.th, NULL, bg_get, &slow), 0);
    const struct h_mock *busy = NULL, *idle = NULL;
    double end = h_now_ms() + h_bound_ms(5000);
    while (!busy && h_now_ms() < end) {
        if (log_count(&A, "/slow/")) busy = &A, idle = &B;
        else if (log_count(&B, "/slow/")) busy = &B, idle = &A;
    }
    assert_non_null(busy);
    char path[64];
    for (int i = 0; i < 6; i++) {
        struct h_resp r;
        snprintf(path, sizeof path, "/api/li/%d", i);
        get_ok(path, &r);
        h_resp_free(&r);
    }
    int on_idle = log_count(idle, "/users/"), on_busy = log_count(busy, "/users/");
    pthread_join(slow.th, NULL);
    assert_int_equal(slow.status, 200);
    /* the slow call may have ended before the last fast one on a slow machine */
    assert_int_equal(on_idle + on_busy, 6);
    assert_true(on_idle >= 5);
}

/* Every request logged on m has X-Gateway-Attempt: want. */
static int count_attempt(const struct h_mock *m, const char *prefix, const char *want)
{
    cJSON *log = h_mock_log(m, prefix);
    assert_non_null(log);
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, log)
    {
        const char *v = h_log_header(e, "x-gateway-attempt");
        n += v && strcmp(v, want) == 0;
    }
    cJSON_Delete(log);
    return n;
}

static void a_503_is_retried_on_the_other_host(void **state)
{
    (void)state;
    assert_int_equal(h_mock_mode(&A, "prefix=/users/r&status=503"), 0);
    char path[64];
    int retried = 0;
    for (int i = 0; i < 6; i++) {
        struct h_resp r;
        snprintf(path, sizeof path, "/api/retry/r%d", i);
        get_ok(path, &r);
        const char *st = h_header(&r, "Server-Timing");
        retried += st && strstr(st, "desc=\"retried\"") != NULL;
        h_resp_free(&r);
    }
    int on_a = log_count(&A, "/users/r");
    /* A failed every call it got, each the first attempt, each retried on B */
    assert_true(on_a >= 1);
    assert_int_equal(count_attempt(&A, "/users/r", "1"), on_a);
    assert_int_equal(count_attempt(&B, "/users/r", "2"), on_a);
    assert_int_equal(log_count(&B, "/users/r"), 6);
    assert_int_equal(retried, on_a);
}

/* The request deadline (2.5 s) is below the backend's timeout (3 s), so
 * each attempt's X-Request-Timeout-Ms is the request's time left when that
 * attempt is sent: the retry, sent after a 503 that took 300 ms and a
 * backoff, says at least 300 ms less than the first attempt. */
static void each_attempt_sends_its_own_time_left(void **state)
{
    (void)state;
    assert_int_equal(h_mock_mode(&C, "prefix=/users/tl&delay_ms=300&status=503&times=1"), 0);
    struct h_resp r;
    get_ok("/api/tl/tl1", &r);
    h_resp_free(&r);
    cJSON *log = h_mock_log(&C, "/users/tl");
    assert_non_null(log);
    assert_int_equal(cJSON_GetArraySize(log), 2);
    long left[2];
    for (int i = 0; i < 2; i++) {
        const cJSON *e = cJSON_GetArrayItem(log, i);
        char want[2] = {(char)('1' + i), 0};
        assert_string_equal(h_log_header(e, "x-gateway-attempt"), want);
        const char *v = h_log_header(e, "x-request-timeout-ms");
        assert_non_null(v);
        left[i] = atol(v);
    }
    cJSON_Delete(log);
    fprintf(stderr, "time left sent: %ld ms, then %ld ms\n", left[0], left[1]);
    assert_true(left[0] <= 2500 && left[0] > 300);
    assert_true(left[1] >= 1);
    assert_true(left[0] - left[1] >= 299);
}

static void post_is_never_retried(void **state)
{
    (void)state;
    char path[64];
    for (int i = 0; i < 4; i++) {
        struct h_resp r;
        snprintf(path, sizeof path, "/api/post/%d", i);
        assert_int_equal(h_get(gw.base, path, NULL, &r), 0); /* the backend call is a POST */
        assert_int_equal(r.status, 502);
        h_resp_free(&r);
    }
    assert_int_equal(log_count(&A, "/fail/") + log_count(&B, "/fail/"), 4);
}

static void retries_stay_within_the_budget(void **state)
{
    (void)state;
    double t0 = h_now_ms();
    char path[64];
    for (int i = 0; i < 100; i++) {
        struct h_resp r;
        snprintf(path, sizeof path, "/api/budget/%d", i);
        assert_int_equal(h_get(gw.base, path, NULL, &r), 0);
        assert_int_equal(r.status, 502);
        h_resp_free(&r);
    }
    double secs = (h_now_ms() - t0) / 1000.0;
    int sent = log_count(&C, "/fail/503");
    int retries = sent - 100;
    /* the bucket holds at most 10 at the start, 0.2 per first attempt, 10/s */
    double bound = 10 + 0.2 * 100 + 10 * secs;
    fprintf(stderr, "budget: %d retries for 100 calls in %.2f s (bound %.1f)\n", retries, secs,
            bound);
    assert_true(retries >= 10);
    assert_true(retries <= bound + 1);
    struct h_resp m;
    assert_int_equal(h_get(gw.base, "/metrics", NULL, &m), 0);
    assert_non_null(strstr(m.body, "gateway_retry_budget_exhausted_total "));
    assert_null(strstr(m.body, "gateway_retry_budget_exhausted_total 0\n"));
    assert_non_null(strstr(m.body, "gateway_backend_attempts_total{backend=\"f\",kind=\"retry\"}"));
    h_resp_free(&m);
}

/* The dur of the Server-Timing entry, in ms. */
static double timing_dur(const struct h_resp *r)
{
    const char *st = h_header(r, "Server-Timing");
    const char *d = st ? strstr(st, "dur=") : NULL;
    return d ? strtod(d + 4, NULL) : 1e9;
}

static void breaker_opens_then_lets_one_probe_through(void **state)
{
    (void)state;
    char path[64];
    double opened = 0; /* no later than the breaker opened: before the third call */
    for (int i = 0; i < 10; i++) {
        struct h_resp r;
        if (i == 2) opened = h_now_ms();
        snprintf(path, sizeof path, "/api/brk/%d", i);
        get_ok(path, &r); /* static fallback */
        const char *st = h_header(&r, "Server-Timing");
        assert_non_null(st);
        if (i >= 3) {
            assert_non_null(strstr(st, "desc=\"static open\""));
            assert_true(timing_dur(&r) < 1.0);
        }
        h_resp_free(&r);
    }
    assert_int_equal(log_count(&C, "/fail/500"), 3);
    /* after open_ms exactly one probe goes through (and fails: reopened) */
    double end = h_now_ms() + h_bound_ms(10000);
    int k = 0;
    while (log_count(&C, "/fail/500") < 4 && h_now_ms() < end) {
        struct h_resp r;
        snprintf(path, sizeof path, "/api/brk/w%d", k++);
        get_ok(path, &r);
        h_resp_free(&r);
        h_pause_ms(20); /* the rhythm of the requests, not a wait */
    }
    assert_int_equal(log_count(&C, "/fail/500"), 4);
    assert_true(h_now_ms() - opened >= 1000); /* not before open_ms */
    for (int i = 0; i < 5; i++) {
        struct h_resp r;
        snprintf(path, sizeof path, "/api/brk/p%d", i);
        get_ok(path, &r);
        h_resp_free(&r);
    }
    assert_int_equal(log_count(&C, "/fail/500"), 4);
    struct h_resp m;
    assert_int_equal(h_get(gw.base, "/metrics", NULL, &m), 0);
    char want[128];
    snprintf(want, sizeof want, "gateway_breaker_state{host=\"http://127.0.0.1:%d\"} 1", C.port);
    assert_non_null(strstr(m.body, want));
    h_resp_free(&m);
}

/* A client asking for less time than the backend's timeout_ms makes calls
 * time out on the request's deadline: that is not the host's fault. */
static void a_clients_short_deadline_never_opens_a_breaker(void **state)
{
    (void)state;
    const char *hdrs[] = {"X-Request-Timeout-Ms: 30", NULL};
    char path[64];
    for (int i = 0; i < 5; i++) {
        struct h_resp r;
        snprintf(path, sizeof path, "/api/brkslow/%d", i);
        assert_int_equal(h_get(gw.base, path, hdrs, &r), 0);
        assert_int_equal(r.status, 200); /* static fallback */
        h_resp_free(&r);
    }
    assert_int_equal(log_count(&B, "/slow/400/"), 5);
}

static void a_hedge_cuts_a_slow_answer(void **state)
{
    (void)state;
    assert_int_equal(h_mock_mode(&A, "prefix=/users/h&delay_ms=1000"), 0);
    char path[64];
    bool hedged = false;
    for (int i = 0; i < 6 && !hedged; i++) {
        struct h_resp r;
        snprintf(path, sizeof path, "/api/hedge/h%d", i);
        get_ok(path, &r);
        const char *st = h_header(&r, "Server-Timing");
        if (st && strstr(st, "desc=\"hedged\"")) {
            hedged = true;
            fprintf(stderr, "hedged answer in %.1f ms\n", r.total_ms);
            assert_true(r.total_ms >= 50);
            assert_true(r.total_ms < h_bound_ms(700));
            char pre[64];
            snprintf(pre, sizeof pre, "/users/h%d", i);
            cJSON *e = h_wait_log(&A, pre, h_pred_hung_up, NULL, (int)h_bound_ms(3000));
            assert_non_null(e); /* the first attempt's connection was closed */
            cJSON_Delete(e);
            assert_int_equal(count_attempt(&B, pre, "2"), 1);
        }
        h_resp_free(&r);
    }
    assert_true(hedged);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
#define T(f) cmocka_unit_test_setup(f, reset_mocks)
    const struct CMUnitTest tests[] = {
        T(round_robin_alternates),
        T(least_inflight_sends_to_the_idle_one),
        T(a_503_is_retried_on_the_other_host),
        T(post_is_never_retried),
        T(each_attempt_sends_its_own_time_left),
        T(retries_stay_within_the_budget),
        T(breaker_opens_then_lets_one_probe_through),
        T(a_clients_short_deadline_never_opens_a_breaker),
        T(a_hedge_cuts_a_slow_answer),
    };
#undef T
    int rc = cmocka_run_group_tests_name("integration/upstreams", tests, group_setup,
                                         group_teardown);
    return rc ? rc : h_stop_failed();
}
