/*
 * Active health checks (README.md "Upstream groups") against two
 * real mock backends: a stopped instance is marked unhealthy within
 * interval_ms x unhealthy_after plus an interval (gateway_upstream_host_healthy
 * drops to 0) and gets no calls after that (every call answers 200 with no
 * retries configured); started again on its port it is healthy after
 * healthy_after probes and gets calls again; with every host down the
 * gateway is in panic mode and still calls all of them (hosts that fail
 * their checks but serve real calls answer them). A SIGHUP reload keeps the
 * breaker and health state of the hosts the new config still has (an open
 * breaker stays open, an unhealthy host stays unhealthy even though the new
 * config probes it far less often) and drops the others' (their lines leave
 * /metrics).
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
#include <signal.h>
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
    "                          \"unhealthy_after\": 2, \"healthy_after\": 2},\n"
    "         \"breaker\": {\"consecutive_failures\": 2, \"open_ms\": 60000}}@X@},\n"
    " \"endpoints\": [\n"
    "  {\"name\": \"g\", \"path\": \"/api/g/{id}\",\n"
    "   \"backends\": [{\"name\": \"u\", \"url\": \"http://g/users/{id}\"}]}\n"
    " ]\n"
    "}\n";

/* A group no endpoint uses, dropped by the reload: nothing listens on port 1 */
static const char group_x[] =
    ",\n  \"x\": {\"hosts\": [\"127.0.0.1:1\"],\n"
    "         \"health_check\": {\"path\": \"/b/1\", \"interval_ms\": 100, \"timeout_ms\": 200,\n"
    "                          \"unhealthy_after\": 1, \"healthy_after\": 1},\n"
    "         \"breaker\": {\"consecutive_failures\": 2, \"open_ms\": 60000}}";

static struct h_mock A, B;
static struct h_gateway gw;
static int port_b;

/* conf with the mocks' ports, group x or not, and g's interval_ms. */
static char *conf_text(bool with_x, const char *interval_ms)
{
    char pa[16], pb[16];
    snprintf(pa, sizeof pa, "%d", A.port);
    snprintf(pb, sizeof pb, "%d", port_b);
    char *t1 = h_replace(conf, "@A@", pa);
    char *t2 = h_replace(t1, "@B@", pb);
    char *t3 = h_replace(t2, "@X@", with_x ? group_x : "");
    char *t4 = h_replace(t3, "\"interval_ms\": 100, \"timeout_ms\": 200,\n"
                             "                          \"unhealthy_after\": 2",
                         interval_ms);
    free(t1);
    free(t2);
    free(t3);
    return t4;
}

static struct h_mock *const mocks[] = {&A, &B};

static int setup(void **state)
{
    (void)state;
    if (h_mock_start(&A) || h_mock_start(&B)) return -1;
    port_b = B.port;
    char *t = conf_text(true, "\"interval_ms\": 100, \"timeout_ms\": 200,\n"
                              "                          \"unhealthy_after\": 2");
    int rc = h_gateway_start(&gw, t, &A);
    free(t);
    return rc == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return h_env_stop_mocks(&gw, mocks, 2);
}

/* The value of the /metrics line that starts with key (labels included,
 * then a space), or -1 when there is none. */
static int metric(const char *key)
{
    struct h_resp m;
    if (h_get(gw.base, "/metrics", NULL, &m) != 0) return -1;
    const char *p = m.body ? strstr(m.body, key) : NULL;
    int v = p ? atoi(p + strlen(key)) : -1;
    h_resp_free(&m);
    return v;
}

/* gateway_upstream_host_healthy of group g's host 127.0.0.1:port. */
static int healthy(int port)
{
    char key[160];
    snprintf(key, sizeof key,
             "gateway_upstream_host_healthy{upstream=\"g\",host=\"127.0.0.1:%d\"} ", port);
    return metric(key);
}

static int breaker(int port)
{
    char key[160];
    snprintf(key, sizeof key, "gateway_breaker_state{host=\"127.0.0.1:%d\"} ", port);
    return metric(key);
}

/* Polls until metric(key) == want within bound_ms. */
static bool wait_metric(const char *key, int want, double bound_ms)
{
    double end = h_now_ms() + h_bound_ms(bound_ms);
    while (h_now_ms() < end) {
        if (metric(key) == want) return true;
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    return false;
}

/* Polls until healthy(port) == want; returns the ms it took, or -1. */
static double wait_healthy(int port, int want, double bound_ms)
{
    double t0 = h_now_ms();
    return H_POLL_UNTIL(healthy(port) == want, bound_ms) ? h_now_ms() - t0 : -1;
}

static int count(const struct h_mock *m)
{
    return h_mock_count(m, "/users/");
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

static const char X_HEALTHY[] = "gateway_upstream_host_healthy{upstream=\"x\",host=\"127.0.0.1:1\"} ";
static const char X_BREAKER[] = "gateway_breaker_state{host=\"127.0.0.1:1\"} ";

static void reload_keeps_the_state_of_kept_hosts_only(void **state)
{
    (void)state;
    h_mock_reset(&A);
    h_mock_reset(&B);
    assert_true(wait_healthy(A.port, 1, 3000) >= 0);
    assert_true(wait_healthy(port_b, 1, 3000) >= 0);
    assert_true(wait_metric(X_HEALTHY, 0, 3000)); /* group x's host is there, down */
    assert_int_equal(metric(X_BREAKER), 0);
    /* A fails real calls (not its checks) until its breaker opens */
    assert_int_equal(h_mock_mode(&A, "prefix=/users/&status=500"), 0);
    for (int i = 0; i < 20 && breaker(A.port) != 1; i++) {
        struct h_resp r;
        assert_int_equal(h_get(gw.base, "/api/g/1", NULL, &r), 0);
        h_resp_free(&r);
    }
    assert_int_equal(breaker(A.port), 1);
    h_mock_stop(&B);
    B.pid = 0;
    assert_true(wait_healthy(port_b, 0, 3000) >= 0);

    /* the new config drops group x and probes g every 10 s: a B whose state
     * were reset would show healthy (one failed probe is not enough) */
    char *t = conf_text(false, "\"interval_ms\": 10000, \"timeout_ms\": 200,\n"
                               "                          \"unhealthy_after\": 2");
    int before = h_gateway_log_count(&gw, "configuration reloaded");
    assert_int_equal(h_gateway_write_conf(&gw, t, &A), 0);
    free(t);
    assert_int_equal(kill(gw.pid, SIGHUP), 0);
    double end = h_now_ms() + h_bound_ms(5000);
    while (h_gateway_log_count(&gw, "configuration reloaded") == before && h_now_ms() < end)
        usleep(10000);
    assert_int_equal(h_gateway_log_count(&gw, "configuration reloaded"), before + 1);
    /* the old config is freed once no request pins it */
    assert_true(wait_metric(X_HEALTHY, -1, 3000));
    assert_int_equal(metric(X_BREAKER), -1);
    assert_int_equal(breaker(A.port), 1);
    assert_int_equal(breaker(port_b), 0);
    assert_int_equal(healthy(port_b), 0);
    assert_int_equal(healthy(A.port), 1);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stopped_host_is_ejected_and_comes_back),
        cmocka_unit_test(all_down_is_panic_mode),
        cmocka_unit_test(reload_keeps_the_state_of_kept_hosts_only),
    };
    int rc = cmocka_run_group_tests_name("integration/health", tests, setup, teardown);
    return rc ? rc : h_stop_failed();
}
