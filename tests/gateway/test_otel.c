/*
 * test_otel: gateway/otel.c without the gateway: the OTLP/JSON rendering,
 * the sampling draw, tracestate lines, and the bounded queue (a collector
 * that accepts and never answers holds the exporter in its POST while the
 * queue fills: spans beyond OTEL_QUEUE_MAX are dropped and counted, and
 * submitting never blocks). Prints the cost per span of submitting and of
 * rendering, for the report.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cJSON.h>

#include "core/loop.h"
#include "gateway/otel.h"

static struct otel_span sample_span(int i)
{
    struct otel_span s = {.kind = OTEL_KIND_CLIENT, .has_parent = true, .http_status = 503,
                          .error = true, .start_unix_ns = 1700000000000000000ull,
                          .end_unix_ns = 1700000000001000000ull};
    for (int k = 0; k < TRACE_ID_BYTES; k++)
        s.trace_id[k] = (uint8_t)(0xa0 + k);
    for (int k = 0; k < TRACE_SPAN_BYTES; k++)
        s.span_id[k] = (uint8_t)(i + k + 1), s.parent_id[k] = (uint8_t)(0x10 + k);
    snprintf(s.name, sizeof s.name, "GET user");
    snprintf(s.method, sizeof s.method, "GET");
    snprintf(s.endpoint, sizeof s.endpoint, "dash\"board");
    snprintf(s.backend, sizeof s.backend, "user");
    snprintf(s.outcome, sizeof s.outcome, "error");
    snprintf(s.message, sizeof s.message, "bad status");
    return s;
}

static const cJSON *attr(const cJSON *span, const char *key)
{
    const cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(span, "attributes"))
    if (strcmp(cJSON_GetObjectItem(a, "key")->valuestring, key) == 0)
        return cJSON_GetObjectItem(a, "value");
    return NULL;
}

static void test_render(void **state)
{
    (void)state;
    struct otel_span a = sample_span(0), b = sample_span(1);
    b.kind = OTEL_KIND_SERVER;
    b.has_parent = false;
    b.error = false;
    b.backend[0] = '\0';
    snprintf(b.route, sizeof b.route, "/api/{id}");
    struct otel_span *spans[] = {&a, &b};
    buf_t out;
    buf_init(&out, NULL);
    assert_int_equal(otel_render(&out, "svc", spans, 2), 0);
    cJSON *j = cJSON_Parse(out.data);
    assert_non_null(j);
    const cJSON *rs = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "resourceSpans"), 0);
    const cJSON *ra = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(rs, "resource"), "attributes"), 0);
    assert_string_equal(cJSON_GetObjectItem(ra, "key")->valuestring, "service.name");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(ra, "value"), "stringValue")
                            ->valuestring,
                        "svc");
    const cJSON *ss = cJSON_GetArrayItem(cJSON_GetObjectItem(rs, "scopeSpans"), 0);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(ss, "scope"), "name")->valuestring,
                        "gateway");
    const cJSON *sp = cJSON_GetObjectItem(ss, "spans");
    assert_int_equal(cJSON_GetArraySize(sp), 2);
    const cJSON *s0 = cJSON_GetArrayItem(sp, 0), *s1 = cJSON_GetArrayItem(sp, 1);
    assert_string_equal(cJSON_GetObjectItem(s0, "traceId")->valuestring,
                        "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
    assert_string_equal(cJSON_GetObjectItem(s0, "spanId")->valuestring, "0102030405060708");
    assert_string_equal(cJSON_GetObjectItem(s0, "parentSpanId")->valuestring, "1011121314151617");
    assert_int_equal(cJSON_GetObjectItem(s0, "kind")->valueint, 3);
    assert_string_equal(cJSON_GetObjectItem(s0, "startTimeUnixNano")->valuestring,
                        "1700000000000000000");
    assert_string_equal(cJSON_GetObjectItem(s0, "endTimeUnixNano")->valuestring,
                        "1700000000001000000");
    assert_string_equal(cJSON_GetObjectItem(attr(s0, "gateway.endpoint"), "stringValue")->valuestring,
                        "dash\"board"); /* escaped on the way */
    assert_string_equal(cJSON_GetObjectItem(attr(s0, "http.response.status_code"), "intValue")
                            ->valuestring,
                        "503");
    const cJSON *st = cJSON_GetObjectItem(s0, "status");
    assert_int_equal(cJSON_GetObjectItem(st, "code")->valueint, 2);
    assert_string_equal(cJSON_GetObjectItem(st, "message")->valuestring, "bad status");
    assert_null(cJSON_GetObjectItem(s1, "parentSpanId"));
    assert_int_equal(cJSON_GetObjectItem(s1, "kind")->valueint, 2);
    assert_null(attr(s1, "gateway.backend")); /* empty strings are left out */
    assert_non_null(attr(s1, "http.route"));
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(s1, "status"), "code"));
    cJSON_Delete(j);
    buf_free(&out);
}

static void test_sampling_and_tracestate(void **state)
{
    (void)state;
    struct tracing_conf t = {.enabled = false, .sample_ratio = 0};
    assert_int_equal(otel_sample_flags(&t), TRACE_FLAG_SAMPLED); /* tracing off: as before */
    t.enabled = true;
    assert_int_equal(otel_sample_flags(&t), 0);
    t.sample_ratio = 1;
    assert_int_equal(otel_sample_flags(&t), TRACE_FLAG_SAMPLED);
    t.sample_ratio = 0.5;
    int n = 0;
    for (int i = 0; i < 10000; i++)
        n += otel_sample_flags(&t);
    assert_true(n > 4000 && n < 6000);

    buf_t l;
    buf_init(&l, NULL);
    otel_tracestate(&l, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
    assert_string_equal(l.data, "tracestate: congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
    buf_clear(&l);
    otel_tracestate(&l, "a=b\r\nX-Evil: 1");
    assert_int_equal(l.len, 0);
    otel_tracestate(&l, NULL);
    assert_int_equal(l.len, 0);
    char *big = malloc(OTEL_TRACESTATE_MAX + 2);
    memset(big, 'a', OTEL_TRACESTATE_MAX + 1);
    big[OTEL_TRACESTATE_MAX + 1] = '\0';
    otel_tracestate(&l, big);
    assert_int_equal(l.len, 0);
    free(big);
    buf_free(&l);
}

/* A collector that accepts one connection and never answers. */
static int mute_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void test_full_queue_drops_and_counts(void **state)
{
    (void)state;
    int port;
    int lfd = mute_listener(&port);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", port);
    struct tracing_conf t = {.enabled = true, .otlp_endpoint = url, .service_name = "t",
                             .sample_ratio = 1};
    struct otel *o = otel_start(&t);
    assert_non_null(o);
    struct otel_span s = sample_span(0);
    assert_int_equal(otel_submit(o, &s), 0);
    /* the exporter connects and sends: it is now waiting for an answer */
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 10000), 1);
    int c = accept(lfd, NULL, NULL);
    assert_true(c >= 0);
    p = (struct pollfd){.fd = c, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 10000), 1);

    enum { EXTRA = 500 };
    uint64_t t0 = mono_ns();
    int refused = 0;
    for (int i = 0; i < OTEL_QUEUE_MAX + EXTRA; i++)
        refused += otel_submit(o, &s) != 0;
    double us = (double)(mono_ns() - t0) / (OTEL_QUEUE_MAX + EXTRA) / 1e3;
    print_message("otel_submit: %.3f us per span (queue filling, incl. drops)\n", us);
    assert_int_equal(refused, EXTRA);
    assert_int_equal(otel_dropped(o), EXTRA);
    close(c); /* the POST fails: that batch is dropped too */
    close(lfd);
    otel_stop(o); /* bounded: the collector is gone, the rest is dropped */
}

/* Warm: the exporter drains (to a closed port) between rounds, so malloc
 * reuses what it freed. */
static void test_submit_cost(void **state)
{
    (void)state;
    int port;
    int lfd = mute_listener(&port);
    close(lfd); /* nothing listens: every POST fails at once */
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", port);
    struct tracing_conf t = {.enabled = true, .otlp_endpoint = url, .service_name = "t",
                             .sample_ratio = 1};
    struct otel *o = otel_start(&t);
    assert_non_null(o);
    struct otel_span s = sample_span(0);
    enum { ROUNDS = 20, PER = 500 };
    double best = 1e9;
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t t0 = mono_ns();
        for (int i = 0; i < PER; i++)
            assert_int_equal(otel_submit(o, &s), 0);
        double us = (double)(mono_ns() - t0) / PER / 1e3;
        if (us < best) best = us;
        uint64_t until = mono_ns() + 10000000000ull;
        while (otel_dropped(o) < (uint64_t)(r + 1) * PER && mono_ns() < until)
            usleep(1000);
        assert_int_equal(otel_dropped(o), (uint64_t)(r + 1) * PER);
    }
    print_message("otel_submit: %.3f us per span (warm, best of %d rounds)\n", best, ROUNDS);
    otel_stop(o);
}

static void test_render_cost(void **state)
{
    (void)state;
    enum { N = OTEL_BATCH_MAX };
    struct otel_span *spans[N];
    for (int i = 0; i < N; i++) {
        spans[i] = malloc(sizeof *spans[i]);
        *spans[i] = sample_span(i);
    }
    buf_t out;
    buf_init(&out, NULL);
    uint64_t t0 = mono_ns();
    enum { R = 20 };
    for (int r = 0; r < R; r++) {
        buf_clear(&out);
        assert_int_equal(otel_render(&out, "gateway", spans, N), 0);
    }
    print_message("otel_render: %.3f us and %zu bytes per span\n",
                  (double)(mono_ns() - t0) / R / N / 1e3, out.len / N);
    buf_free(&out);
    for (int i = 0; i < N; i++)
        free(spans[i]);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_sampling_and_tracestate),
        cmocka_unit_test(test_full_queue_drops_and_counts),
        cmocka_unit_test(test_submit_cost),
        cmocka_unit_test(test_render_cost),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
