/*
 * Active health checks (README.md "Upstream groups") against two
 * real mock backends: a stopped instance is marked unhealthy within
 * interval_ms x unhealthy_after plus an interval (gateway_upstream_host_healthy
 * drops to 0) and gets no calls after that (every call answers 200 with no
 * retries configured); started again on its port it is healthy after
 * healthy_after probes and gets calls again; with every host down the
 * gateway is in panic mode and still calls all of them (hosts that fail
 * their checks but serve real calls answer them).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

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
    " \"defaults\": {\"timeout_ms\": 3000, \"backend_timeout_ms\": 2000},\n"
    " \"access_log\": {\"path\": \"off\"},\n"
    " \"upstreams\": {\n"
    "  \"g\": {\"hosts\": [\"127.0.0.1:@A@\", \"127.0.0.1:@B@\"], \"balance\": \"round_robin\",\n"
    "         \"health_check\": {\"path\": \"/b/1\", \"interval_ms\": 100, \"timeout_ms\": 200,\n"
    "                          \"unhealthy_after\": 2, \"healthy_after\": 2}}},\n"
    " \"endpoints\": [\n"
    "  {\"name\": \"g\", \"path\": \"/api/g/{id}\",\n"
    "   \"backends\": [{\"name\": \"u\", \"url\": \"http://g/users/{id}\"}]}\n"
    " ]\n"
    "}\n";

static struct h_mock A, B;
static struct h_gateway gw;
static int port_b;

static int setup(void **state)
{
    (void)state;
    if (h_mock_start(&A) || h_mock_start(&B)) return -1;
    port_b = B.port;
    char pa[16], pb[16];
    snprintf(pa, sizeof pa, "%d", A.port);
    snprintf(pb, sizeof pb, "%d", B.port);
    char *t1 = h_replace(conf, "@A@", pa);
    char *t2 = h_replace(t1, "@B@", pb);
    int rc = h_gateway_start(&gw, t2, &A);
    free(t1);
    free(t2);
    return rc == 0 ? 0 : -1;
}

/* cmocka 1.1.5 returns 0 despite a failed group teardown: main checks this */
static bool stop_failed;

static int teardown(void **state)
{
    (void)state;
    int st = h_gateway_stop(&gw, true);
    if (st != 0) {
        fprintf(stderr, "gateway exit status %d (a sanitizer report?)\n", st);
        h_gateway_dump(&gw);
        stop_failed = true;
    }
    unlink(gw.stderr_path);
    if (A.pid) h_mock_stop(&A);
    if (B.pid) h_mock_stop(&B);
    return st == 0 ? 0 : -1;
}

/* gateway_upstream_host_healthy of host 127.0.0.1:port: 1, 0, or -1 absent. */
static int healthy(int port)
{
    struct h_resp m;
    if (h_get(gw.base, "/metrics", NULL, &m) != 0) return -1;
    char key[160];
    snprintf(key, sizeof key,
             "gateway_upstream_host_healthy{upstream=\"g\",host=\"127.0.0.1:%d\"} ", port);
    const char *p = m.body ? strstr(m.body, key) : NULL;
    int v = p ? atoi(p + strlen(key)) : -1;
    h_resp_free(&m);
    return v;
}

/* Polls until healthy(port) == want; returns the ms it took, or -1. */
static double wait_healthy(int port, int want, double bound_ms)
{
    double t0 = h_now_ms(), end = t0 + h_bound_ms(bound_ms);
    while (h_now_ms() < end) {
        if (healthy(port) == want) return h_now_ms() - t0;
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static int count(const struct h_mock *m)
{
    cJSON *log = h_mock_log(m, "/users/");
    assert_non_null(log);
    int n = cJSON_GetArraySize(log);
    cJSON_Delete(log);
    return n;
}

static void calls(int n, long want_status)
{
    char path[64];
    for (int i = 0; i < n; i++) {
        struct h_resp r;
        snprintf(path, sizeof path, "/api/g/%d", i);
        assert_int_equal(h_get(gw.base, path, NULL, &r), 0);
        assert_int_equal(r.status, want_status);
        h_resp_free(&r);
    }
}

static void stopped_host_is_ejected_and_comes_back(void **state)
{
    (void)state;
    assert_true(wait_healthy(A.port, 1, 3000) >= 0);
    assert_true(wait_healthy(port_b, 1, 3000) >= 0);
    calls(4, 200);
    assert_int_equal(count(&A), 2);
    assert_int_equal(count(&B), 2);

    h_mock_stop(&B);
    B.pid = 0;
    /* interval x unhealthy_after + one interval, generously bounded */
    double took = wait_healthy(port_b, 0, 100 * 2 + 100 + 1000);
    fprintf(stderr, "down detected in %.0f ms\n", took);
    assert_true(took >= 0);
    h_mock_reset(&A);
    calls(10, 200); /* none went to B: no retries are configured */
    assert_int_equal(count(&A), 10);

    assert_int_equal(h_mock_start_port(&B, port_b), 0);
    took = wait_healthy(port_b, 1, 3000);
    fprintf(stderr, "up again in %.0f ms\n", took);
    assert_true(took >= 0);
    h_mock_reset(&A);
    calls(4, 200);
    assert_int_equal(count(&A), 2);
    assert_int_equal(count(&B), 2);
}

static void all_down_is_panic_mode(void **state)
{
    (void)state;
    /* both fail their health checks but serve real calls */
    assert_int_equal(h_mock_mode(&A, "prefix=/b/&status=500"), 0);
    assert_int_equal(h_mock_mode(&B, "prefix=/b/&status=500"), 0);
    assert_true(wait_healthy(A.port, 0, 3000) >= 0);
    assert_true(wait_healthy(port_b, 0, 3000) >= 0);
    h_mock_reset(&A);
    h_mock_reset(&B);
    assert_int_equal(h_mock_mode(&A, "prefix=/b/&status=500"), 0);
    assert_int_equal(h_mock_mode(&B, "prefix=/b/&status=500"), 0);
    calls(4, 200); /* panic mode: all of them are used */
    assert_int_equal(count(&A), 2);
    assert_int_equal(count(&B), 2);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stopped_host_is_ejected_and_comes_back),
        cmocka_unit_test(all_down_is_panic_mode),
    };
    int rc = cmocka_run_group_tests_name("integration/health", tests, setup, teardown);
    return rc ? rc : stop_failed;
}
