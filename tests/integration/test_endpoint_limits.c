/*
 * Two per-request limits, proven from the backend's side (the mock's log),
 * which no other test would notice if the gateway ignored them:
 *   - defaults.max_timeout_ms caps every request deadline: an endpoint
 *     timeout_ms above it (or a client asking for more) still gives 504 at
 *     about the cap, and the backend is told at most the cap in
 *     X-Request-Timeout-Ms;
 *   - an endpoint's concurrency: 1 runs its backend calls one after the
 *     other: no call starts before the previous one finished (and with a
 *     higher limit they do overlap, so the check can see an overlap).
 *
 * One mock backend and one gateway for the program. Lower time bounds are
 * exact (a deadline is never early); upper ones are far from the expected
 * time and scaled by GATEWAY_TEST_TIME_SCALE (h_bound_ms).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define CAP_MS  2000
#define SLOW_MS 5000 /* the capped backend's sleep: an uncapped call answers 200 then */
#define STEP_MS 300  /* each serial call's sleep */

static const char conf[] =
    "{\n"
    " \"server\": {\"listen\": \"127.0.0.1:${PORT}\", \"workers\": 1,\n"
    "            \"shutdown_timeout_ms\": 2000},\n"
    " \"defaults\": {\"timeout_ms\": 3000, \"max_timeout_ms\": 2000,\n"
    "              \"backend_timeout_ms\": 8000},\n"
    " \"access_log\": {\"path\": \"-\"},\n"
    " \"endpoints\": [\n"
    "  {\"name\": \"capped\", \"path\": \"/api/capped/{x}\", \"timeout_ms\": 8000,\n"
    "   \"backends\": [{\"name\": \"slow\", \"url\": \"${BACKEND}/slow/5000/{x}\", \"key\": "
    "\"slow\"}]},\n"
    "  {\"name\": \"serial\", \"path\": \"/api/serial/{x}\", \"concurrency\": 1,\n"
    "   \"backends\": [\n"
    "    {\"name\": \"s1\", \"url\": \"${BACKEND}/slow/300/s{x}1\", \"key\": \"s1\"},\n"
    "    {\"name\": \"s2\", \"url\": \"${BACKEND}/slow/300/s{x}2\", \"key\": \"s2\"},\n"
    "    {\"name\": \"s3\", \"url\": \"${BACKEND}/slow/300/s{x}3\", \"key\": \"s3\"}]},\n"
    "  {\"name\": \"parallel\", \"path\": \"/api/parallel/{x}\", \"concurrency\": 3,\n"
    "   \"backends\": [\n"
    "    {\"name\": \"p1\", \"url\": \"${BACKEND}/slow/500/p{x}1\", \"key\": \"p1\"},\n"
    "    {\"name\": \"p2\", \"url\": \"${BACKEND}/slow/500/p{x}2\", \"key\": \"p2\"},\n"
    "    {\"name\": \"p3\", \"url\": \"${BACKEND}/slow/500/p{x}3\", \"key\": \"p3\"}]}\n"
    " ]\n"
    "}\n";

static struct h_env env;

/* The capped request: 504 not before the cap and well before the backend
 * would answer; the backend was told at most the cap. */
static void expect_capped(const char *id, const char *const *hdrs)
{
    char path[64], prefix[64];
    snprintf(path, sizeof path, "/api/capped/%s", id);
    snprintf(prefix, sizeof prefix, "/slow/%d/%s", SLOW_MS, id);
    struct h_resp r;
    h_get(env.gw.base, path, hdrs, &r);
    fprintf(stderr, "%s: %ld after %.0f ms: %s\n", path, r.status, r.total_ms, r.body);
    assert_int_equal(r.status, 504);
    assert_true(r.total_ms >= CAP_MS - 20); /* curl's and the gateway's clocks differ a little */
    assert_true(r.total_ms < h_bound_ms(SLOW_MS - 500));
    h_resp_free(&r);

    cJSON *e = h_wait_log(&env.mock, prefix, NULL, NULL, (int)h_bound_ms(5000));
    assert_non_null(e);
    const char *told = h_log_header(e, "x-request-timeout-ms");
    fprintf(stderr, "the backend was told X-Request-Timeout-Ms: %s\n", told ? told : "(none)");
    assert_non_null(told);
    long ms = strtol(told, NULL, 10);
    assert_true(ms > 0 && ms <= CAP_MS);
    cJSON_Delete(e);
}

static void endpoint_timeout_above_max_timeout_ms_is_capped(void **state)
{
    (void)state;
    expect_capped("a", NULL);
    /* a client asking for more than the cap does not lift it either */
    const char *hdrs[] = {"X-Request-Timeout-Ms: 60000", NULL};
    expect_capped("b", hdrs);
}

/* The log entries of one request's calls (paths starting with prefix),
 * in the order they started. n receives their number (at most 8). */
static size_t calls(const char *prefix, double started[8], double finished[8])
{
    cJSON *log = h_mock_log(&env.mock, prefix);
    assert_non_null(log);
    size_t n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, log)
    {
        assert_true(n < 8);
        assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "finished")));
        started[n] = cJSON_GetObjectItemCaseSensitive(e, "started_ms")->valuedouble;
        finished[n] = cJSON_GetObjectItemCaseSensitive(e, "finished_ms")->valuedouble;
        for (size_t i = n; i > 0 && started[i] < started[i - 1]; i--) {
            double s = started[i], f = finished[i];
            started[i] = started[i - 1], finished[i] = finished[i - 1];
            started[i - 1] = s, finished[i - 1] = f;
        }
        n++;
    }
    cJSON_Delete(log);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, "  %s call %zu: %.0f..%.0f ms\n", prefix, i, started[i], finished[i]);
    return n;
}

static void concurrency_1_runs_the_calls_one_after_the_other(void **state)
{
    (void)state;
    struct h_resp r;
    h_get(env.gw.base, "/api/serial/q", NULL, &r);
    fprintf(stderr, "/api/serial/q: %ld after %.0f ms\n", r.status, r.total_ms);
    assert_int_equal(r.status, 200);
    double started[8], finished[8];
    assert_int_equal(calls("/slow/300/sq", started, finished), 3);
    for (size_t i = 1; i < 3; i++)
        assert_true(started[i] >= finished[i - 1]); /* the mock's own clock */
    assert_true(r.total_ms >= 3 * STEP_MS - 20);
    h_resp_free(&r);

    /* the check sees an overlap when there is one */
    h_get(env.gw.base, "/api/parallel/q", NULL, &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(calls("/slow/500/pq", started, finished), 3);
    assert_true(started[2] < finished[0]);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(endpoint_timeout_above_max_timeout_ms_is_capped),
        cmocka_unit_test(concurrency_1_runs_the_calls_one_after_the_other),
    };
    return H_GROUP_RUN("integration/endpoint_limits", tests, &env, conf);
}
