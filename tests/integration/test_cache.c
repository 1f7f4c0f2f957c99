/*
 * The real gateway's response cache and request coalescing (DESIGN.md
 * "Cache and request coalescing") against the real mock backend, counting
 * backend calls in the mock's request log: ttl_ms, Cache-Control max-age,
 * no-store, private across credentials, 20 identical concurrent requests on
 * one worker, a leader whose client hangs up, a joiner that times out alone;
 * with retries, the cache is in front of the attempt loop: a hit makes no
 * attempt, and coalesced callers share the leader's retry.
 *
 * One worker, so that concurrent identical requests meet in one coalescing
 * table. Every test uses its own ids, so the store never carries an answer
 * from one test into another.
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
#include <unistd.h>

#include "harness.h"

static const char conf[] =
    "{\n"
    " \"server\": {\"listen\": \"127.0.0.1:${PORT}\", \"workers\": 1,\n"
    "            \"shutdown_timeout_ms\": 2000},\n"
    " \"defaults\": {\"timeout_ms\": 30000, \"backend_timeout_ms\": 30000, \"max_timeout_ms\": 60000},\n"
    " \"access_log\": {\"path\": \"-\"},\n"
    " \"endpoints\": [\n"
    "  {\"name\": \"ttl\", \"path\": \"/api/ttl/{id}\", \"backends\": [\n"
    "    {\"name\": \"c\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"u\",\n"
    "     \"cache\": {\"ttl_ms\": 400}}]},\n"
    "  {\"name\": \"hdr\", \"path\": \"/api/hdr/{id}\", \"backends\": [\n"
    "    {\"name\": \"h\", \"url\": \"${BACKEND}/users/{id}?cc=max-age%3D1\", \"key\": \"u\",\n"
    "     \"cache\": {\"ttl_ms\": 0, \"honor_headers\": true}}]},\n"
    "  {\"name\": \"nostore\", \"path\": \"/api/nostore/{id}\", \"backends\": [\n"
    "    {\"name\": \"n\", \"url\": \"${BACKEND}/users/{id}?cc=no-store\", \"key\": \"u\",\n"
    "     \"cache\": {\"ttl_ms\": 60000}}]},\n"
    "  {\"name\": \"priv\", \"path\": \"/api/priv/{id}\",\n"
    "   \"forward_headers\": [\"Authorization\"], \"backends\": [\n"
    "    {\"name\": \"p\", \"url\": \"${BACKEND}/users/{id}?cc=private\", \"key\": \"u\",\n"
    "     \"cache\": {\"ttl_ms\": 60000}}]},\n"
    "  {\"name\": \"privh\", \"path\": \"/api/privh/{id}\",\n"
    "   \"forward_headers\": [\"Authorization\"], \"backends\": [\n"
    "    {\"name\": \"ph\", \"url\": \"${BACKEND}/users/{id}?cc=private%2C%20max-age%3D60\",\n"
    "     \"key\": \"u\", \"cache\": {\"ttl_ms\": 60000, \"honor_headers\": true}}]},\n"
    "  {\"name\": \"co\", \"path\": \"/api/co/{ms}/{id}\", \"backends\": [\n"
    "    {\"name\": \"s\", \"url\": \"${BACKEND}/slow/{ms}/{id}\", \"key\": \"s\",\n"
    "     \"cache\": {\"ttl_ms\": 0, \"coalesce\": true}}]},\n"
    "  {\"name\": \"cot\", \"path\": \"/api/cot/{id}\", \"backends\": [\n"
    "    {\"name\": \"st\", \"url\": \"${BACKEND}/slow/300/{id}\", \"key\": \"s\",\n"
    "     \"cache\": {\"ttl_ms\": 60000, \"coalesce\": true}}]},\n"
    "  {\"name\": \"rt\", \"path\": \"/api/rt/{id}\", \"backends\": [\n"
    "    {\"name\": \"r\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"u\", \"retries\": 1,\n"
    "     \"cache\": {\"ttl_ms\": 60000, \"coalesce\": true}}]}\n"
    " ]\n"
    "}\n";

static struct h_env env;

/* Backend calls the mock has seen whose path starts with prefix. */
static int calls(const char *prefix)
{
    return h_mock_count(&env.mock, prefix);
}

static void get_ok(const char *path, const char *auth, struct h_resp *r)
{
    char h[256];
    snprintf(h, sizeof h, "Authorization: %s", auth ? auth : "");
    const char *hdrs[] = {h, NULL};
    h_get(env.gw.base, path, auth ? hdrs : NULL, r);
    if (r->status != 200) fprintf(stderr, "%s: %ld %s\n", path, r->status, r->body);
    assert_int_equal(r->status, 200);
}

/* The Server-Timing value contains desc. */
static bool timing_says(const struct h_resp *r, const char *desc)
{
    const char *st = h_header(r, "Server-Timing");
    return st && strstr(st, desc);
}

/* Requests path until the backend has been called twice; returns how long
 * after t0 the request that made the second call started (bounded: 8 s). */
static double second_call_after(const char *path, const char *prefix, double t0)
{
    double end = h_now_ms() + h_bound_ms(8000);
    while (h_now_ms() < end) {
        double at = h_now_ms();
        struct h_resp r;
        get_ok(path, NULL, &r);
        h_resp_free(&r);
        int n = calls(prefix);
        assert_true(n <= 2);
        if (n == 2) return at - t0;
        h_pause_ms(20); /* a polling interval, not a wait for an outcome */
    }
    fail_msg("no second backend call for %s within 8 s", path);
    return 0;
}

/* Two requests within ttl_ms make one backend call; once ttl_ms has passed
 * the next request calls again. */
static void test_ttl(void **state)
{
    (void)state;
    struct h_resp r1, r2;
    double t0 = h_now_ms();
    get_ok("/api/ttl/t1", NULL, &r1);
    get_ok("/api/ttl/t1", NULL, &r2);
    double t2 = h_now_ms();
    if (t2 - t0 < 350) { /* both surely within the 400 ms */
        assert_int_equal(calls("/users/t1"), 1);
        assert_true(timing_says(&r2, "c;dur=") && timing_says(&r2, "desc=\"hit\""));
        assert_string_equal(r1.body, r2.body);
    }
    assert_false(timing_says(&r1, "desc="));
    h_resp_free(&r1);
    h_resp_free(&r2);
    /* the access log says how the cached backend was answered */
    assert_true(h_gateway_log_wait(&env.gw, "\"cache\":{\"c\":\"miss\"}}", (int)h_bound_ms(5000)));
    double after = second_call_after("/api/ttl/t1", "/users/t1", t0);
    fprintf(stderr, "second call %.0f ms after the first request\n", after);
    assert_true(after >= 395);

    struct h_resp m;
    h_get(env.gw.base, "/metrics", NULL, &m);
    assert_non_null(strstr(m.body, "gateway_cache_requests_total{backend=\"c\",result=\"hit\"}"));
    assert_non_null(
        strstr(m.body, "gateway_cache_requests_total{backend=\"c\",result=\"miss\"} 2"));
    assert_non_null(strstr(m.body, "gateway_store_entries "));
    assert_null(strstr(m.body, "gateway_store_entries 0\n"));
    h_resp_free(&m);
}

/* honor_headers: the backend's max-age=1 is the freshness (ttl_ms is 0). */
static void test_max_age(void **state)
{
    (void)state;
    struct h_resp r1, r2;
    double t0 = h_now_ms();
    get_ok("/api/hdr/m1", NULL, &r1);
    get_ok("/api/hdr/m1", NULL, &r2);
    if (h_now_ms() - t0 < 900) assert_int_equal(calls("/users/m1"), 1);
    h_resp_free(&r1);
    h_resp_free(&r2);
    double after = second_call_after("/api/hdr/m1", "/users/m1", t0);
    fprintf(stderr, "max-age=1: second call %.0f ms after the first request\n", after);
    assert_true(after >= 995);
}

/* no-store is obeyed even without honor_headers: every request calls. */
static void test_no_store(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        struct h_resp r;
        get_ok("/api/nostore/n1", NULL, &r);
        assert_false(timing_says(&r, "desc=\"hit\""));
        h_resp_free(&r);
    }
    assert_int_equal(calls("/users/n1"), 3);
}

/* Logged calls under prefix that carried this Authorization. */
static int calls_with_auth(const char *prefix, const char *auth)
{
    cJSON *log = h_mock_log(&env.mock, prefix);
    assert_non_null(log);
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, log)
    {
        const char *a = h_log_header(e, "authorization");
        n += a && strcmp(a, auth) == 0;
    }
    cJSON_Delete(log);
    return n;
}

/* A private answer is never served to a client whose forwarded
 * Authorization differs (the key holds it); with honor_headers it is not
 * served from the cache at all. */
static void test_private(void **state)
{
    (void)state;
    struct h_resp r;
    get_ok("/api/priv/p1", "Bearer alice", &r);
    h_resp_free(&r);
    get_ok("/api/priv/p1", "Bearer bob", &r);
    assert_false(timing_says(&r, "desc=\"hit\""));
    h_resp_free(&r);
    assert_true(h_gateway_log_wait(&env.gw, "\"cache\":{\"p\":\"miss\"}}", (int)h_bound_ms(5000)));
    assert_int_equal(calls_with_auth("/users/p1", "Bearer alice"), 1);
    assert_int_equal(calls_with_auth("/users/p1", "Bearer bob"), 1);
    /* without honor_headers, the same credentials may get the cached copy */
    get_ok("/api/priv/p1", "Bearer alice", &r);
    assert_true(timing_says(&r, "desc=\"hit\""));
    h_resp_free(&r);
    assert_int_equal(calls("/users/p1"), 2);

    for (int i = 0; i < 2; i++) {
        get_ok("/api/privh/p2", "Bearer alice", &r);
        assert_false(timing_says(&r, "desc=\"hit\""));
        h_resp_free(&r);
    }
    assert_int_equal(calls("/users/p2"), 2);
}

/* ---- concurrent clients ---- */

struct client {
    pthread_t thread;
    const char *path;
    const char *timeout_ms; /* X-Request-Timeout-Ms, or NULL */
    pthread_barrier_t *go;
    struct h_resp r;
};

static void *run_client(void *arg)
{
    struct client *c = arg;
    char h[64];
    snprintf(h, sizeof h, "X-Request-Timeout-Ms: %s", c->timeout_ms ? c->timeout_ms : "");
    const char *hdrs[] = {h, NULL};
    if (c->go) pthread_barrier_wait(c->go);
    h_get(env.gw.base, c->path, c->timeout_ms ? hdrs : NULL, &c->r);
    return NULL;
}

static void start_client(struct client *c, const char *path, pthread_barrier_t *go)
{
    memset(c, 0, sizeof *c);
    c->path = path;
    c->go = go;
    assert_int_equal(pthread_create(&c->thread, NULL, run_client, c), 0);
}

/* 20 identical requests at once, a backend that takes 300 ms: one call.
 * ttl_ms is set too, so that a client the machine delays past the call's
 * end gets the stored answer instead of making a second call: the count
 * holds however busy the machine is, and without coalescing the requests
 * that meet the call in flight would each call. */
static void test_twenty_coalesced(void **state)
{
    (void)state;
    enum { N = 20 };
    struct client c[N];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, N);
    for (int i = 0; i < N; i++)
        start_client(&c[i], "/api/cot/c20", &go);
    int coalesced = 0, hits = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(c[i].thread, NULL);
        assert_int_equal(c[i].r.status, 200);
        assert_string_equal(c[i].r.body, c[0].r.body);
        coalesced += timing_says(&c[i].r, "desc=\"coalesced\"");
        hits += timing_says(&c[i].r, "desc=\"hit\"");
    }
    pthread_barrier_destroy(&go);
    int n = calls("/slow/300/c20");
    fprintf(stderr, "20 requests: %d backend call(s), %d coalesced, %d hits\n", n, coalesced, hits);
    assert_int_equal(n, 1);
    assert_int_equal(coalesced + hits, N - 1);
    assert_true(coalesced >= 1);
    for (int i = 0; i < N; i++)
        h_resp_free(&c[i].r);
}

/* A backend with a cache and retries: the second request is a hit, which
 * makes no attempt (the mock sees one call). */
static void hit_before_the_attempt_loop(void **state)
{
    (void)state;
    struct h_resp r1, r2;
    get_ok("/api/rt/h1", NULL, &r1);
    get_ok("/api/rt/h1", NULL, &r2);
    assert_false(timing_says(&r1, "desc="));
    assert_true(timing_says(&r2, "r;dur=") && timing_says(&r2, "desc=\"hit\""));
    assert_string_equal(r1.body, r2.body);
    assert_int_equal(calls("/users/h1"), 1);
    h_resp_free(&r1);
    h_resp_free(&r2);
}

/* Two identical requests at once to a backend that answers 503 once, after
 * 300 ms: the second joins the first's call and shares its retry, so the
 * mock sees exactly two calls (a joiner running its own attempt loop would
 * make a third). */
static void coalesced_calls_share_the_retry(void **state)
{
    (void)state;
    assert_int_equal(h_mock_mode(&env.mock, "prefix=/users/k2&delay_ms=300&status=503&times=1"), 0);
    struct client c[2];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 2);
    for (int i = 0; i < 2; i++)
        start_client(&c[i], "/api/rt/k2", &go);
    for (int i = 0; i < 2; i++) {
        pthread_join(c[i].thread, NULL);
        assert_int_equal(c[i].r.status, 200);
        assert_true(timing_says(&c[i].r, "desc=\"coalesced\"") ||
                    timing_says(&c[i].r, "desc=\"hit\"") || timing_says(&c[i].r, "r;dur="));
    }
    pthread_barrier_destroy(&go);
    assert_string_equal(c[0].r.body, c[1].r.body);
    cJSON *log = h_mock_log(&env.mock, "/users/k2");
    assert_non_null(log);
    assert_int_equal(cJSON_GetArraySize(log), 2);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(log, 0), "status")->valueint, 503);
    assert_string_equal(h_log_header(cJSON_GetArrayItem(log, 1), "x-gateway-attempt"), "2");
    cJSON_Delete(log);
    for (int i = 0; i < 2; i++)
        h_resp_free(&c[i].r);
}

/* The gauge gateway_inflight_requests (the scrape counts itself). */
static long inflight(void)
{
    struct h_resp m;
    h_get(env.gw.base, "/metrics", NULL, &m);
    const char *p = m.body ? strstr(m.body, "\ngateway_inflight_requests ") : NULL;
    long v = p ? strtol(p + 27, NULL, 10) : -1;
    h_resp_free(&m);
    return v;
}

static bool started(const cJSON *e, void *arg)
{
    (void)e;
    (void)arg;
    return true;
}

/* The first client hangs up while the shared call runs: the others still get
 * the answer, and the backend call is not aborted. */
static void test_leader_hangs_up(void **state)
{
    (void)state;
    /* long enough for the joiners to arrive, however slow the machine */
    int ms = (int)h_bound_ms(1500);
    char path[64], prefix[64], req[128];
    snprintf(path, sizeof path, "/api/co/%d/lh", ms);
    snprintf(prefix, sizeof prefix, "/slow/%d/lh", ms);
    int fd = h_connect(env.gw.port);
    assert_true(fd >= 0);
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    assert_int_equal(h_send_all(fd, req, (size_t)n), 0);
    cJSON *e = h_wait_log(&env.mock, prefix, started, NULL, (int)h_bound_ms(5000));
    assert_non_null(e);
    cJSON_Delete(e);
    enum { N = 5 };
    struct client c[N];
    for (int i = 0; i < N; i++)
        start_client(&c[i], path, NULL);
    /* all five parked on the shared call (1 + 5 + the scrape) */
    (void)H_POLL_UNTIL(inflight() >= 1 + N + 1, 5000);
    assert_true(inflight() >= 1 + N + 1);
    close(fd); /* the leader's client hangs up */
    for (int i = 0; i < N; i++) {
        pthread_join(c[i].thread, NULL);
        if (c[i].r.status != 200)
            fprintf(stderr, "joiner %d: %ld %s\n", i, c[i].r.status, c[i].r.body);
        assert_int_equal(c[i].r.status, 200);
        h_resp_free(&c[i].r);
    }
    cJSON *log = h_mock_log(&env.mock, prefix);
    assert_int_equal(cJSON_GetArraySize(log), 1);
    const cJSON *l = cJSON_GetArrayItem(log, 0);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(l, "client_hung_up")));
    cJSON_Delete(log);
}

/* A joiner whose own deadline is 50 ms times out at about 50 ms; the others
 * get the answer of the one call. */
static void test_joiner_deadline(void **state)
{
    (void)state;
    enum { N = 3 };
    struct client c[N];
    int ms = (int)h_bound_ms(800);
    char path[64], prefix[64];
    snprintf(path, sizeof path, "/api/co/%d/jd", ms);
    snprintf(prefix, sizeof prefix, "/slow/%d/jd", ms);
    start_client(&c[0], path, NULL);
    cJSON *e = h_wait_log(&env.mock, prefix, started, NULL, (int)h_bound_ms(5000));
    assert_non_null(e);
    cJSON_Delete(e);
    for (int i = 1; i < N; i++)
        start_client(&c[i], path, NULL);
    struct h_resp r;
    const char *hdrs[] = {"X-Request-Timeout-Ms: 50", NULL};
    h_get(env.gw.base, path, hdrs, &r);
    fprintf(stderr, "joiner with 50 ms: %ld after %.0f ms\n", r.status, r.total_ms);
    assert_int_equal(r.status, 504);
    assert_true(r.total_ms >= 45 && r.total_ms < h_bound_ms(700));
    h_resp_free(&r);
    for (int i = 0; i < N; i++) {
        pthread_join(c[i].thread, NULL);
        assert_int_equal(c[i].r.status, 200);
        h_resp_free(&c[i].r);
    }
    assert_int_equal(calls(prefix), 1);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_max_age),
        cmocka_unit_test(test_no_store),
        cmocka_unit_test(test_private),
        cmocka_unit_test(test_twenty_coalesced),
        cmocka_unit_test(test_leader_hangs_up),
        cmocka_unit_test(test_joiner_deadline),
        cmocka_unit_test(hit_before_the_attempt_loop),
        cmocka_unit_test(coalesced_calls_share_the_retry),
    };
    return H_GROUP_RUN("integration/cache", tests, &env, conf);
}
