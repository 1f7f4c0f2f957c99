/*
 * OpenTelemetry export against the real gateway binary, with a tiny OTLP
 * collector in this process (a raw HTTP listener on 127.0.0.1 that records
 * every POST body):
 *   - one server span per request and one client span per backend call,
 *     in OTLP/HTTP JSON with the schema's fields (resourceSpans/scopeSpans/
 *     spans, hex ids, nanosecond strings, kind 2/3, status); the server span
 *     is the child of the client's traceparent and carries the span id the
 *     gateway answered with, each client span is the server span's child
 *     with exactly the span id its backend received in traceparent; the
 *     endpoint, backend, status and outcome attributes; a failed call's span
 *     has status ERROR;
 *   - tracestate reaches the backends unchanged;
 *   - an incoming traceparent that is not sampled exports nothing, and
 *     sample_ratio 0 exports nothing for new traces (but honours a sampled
 *     incoming traceparent);
 *   - a collector that is down: every request still succeeds and the spans
 *     are counted in gateway_spans_dropped_total; a collector that accepts
 *     and never answers: requests are served while the exporter waits, and
 *     the batch it waited for is dropped and counted after its timeout.
 * "Nothing was exported" is proven by order: the exporter keeps the order
 * in which spans were queued, so once a later sampled trace has arrived,
 * an earlier one would have too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define WAIT_MS 15000

static const char conf_tmpl[] =
    "{\n"
    " \"server\": {\"listen\": \"127.0.0.1:${PORT}\", \"workers\": ${WORKERS}},\n"
    " \"defaults\": {\"timeout_ms\": 3000, \"backend_timeout_ms\": 3000},\n"
    " \"access_log\": {\"path\": \"off\"},\n"
    " \"tracing\": {\"otlp_endpoint\": \"http://127.0.0.1:${CPORT}/v1/traces\",\n"
    "             \"service_name\": \"gw-test\", \"sample_ratio\": ${RATIO}},\n"
    " \"endpoints\": [\n"
    "  {\"name\": \"t\", \"path\": \"/api/t/{id}\", \"backends\": [\n"
    "    {\"name\": \"a\", \"url\": \"${BACKEND}/echo/a/{id}\", \"key\": \"a\"},\n"
    "    {\"name\": \"b\", \"url\": \"${BACKEND}/echo/b/{id}\", \"key\": \"b\"},\n"
    "    {\"name\": \"c\", \"url\": \"${BACKEND}/fail/500\", \"key\": \"c\", \"required\": false}\n"
    "  ]}\n"
    " ]\n"
    "}\n";

/* ---- the collector ---- */

static struct {
    int fd, port;
    pthread_t thread;
    pthread_mutex_t mu;
    cJSON *spans; /* every span received, each with "_service" added */
    int posts;
} col = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Reads one request (headers + Content-Length body); malloc'd body or NULL
 * at EOF. */
static char *read_request(int fd)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        char *end = len ? memmem(buf, len, "\r\n\r\n", 4) : NULL;
        if (end) {
            size_t hl = (size_t)(end + 4 - buf);
            buf[hl - 1] = '\0';
            const char *cl = strcasestr(buf, "\r\ncontent-length:");
            size_t want = cl ? strtoul(cl + 17, NULL, 10) : 0;
            while (len < hl + want) {
                if (cap < hl + want + 1) buf = realloc(buf, cap = hl + want + 1);
                ssize_t n = read(fd, buf + len, cap - len);
                if (n <= 0) goto eof;
                len += (size_t)n;
            }
            memmove(buf, buf + hl, want);
            buf[want] = '\0';
            return buf;
        }
        if (len + 1 >= cap) buf = realloc(buf, cap *= 2);
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n <= 0) goto eof;
        len += (size_t)n;
    }
eof:
    free(buf);
    return NULL;
}

static void record(const char *body)
{
    cJSON *j = cJSON_Parse(body);
    pthread_mutex_lock(&col.mu);
    col.posts++;
    const cJSON *rs;
    cJSON_ArrayForEach(rs, cJSON_GetObjectItem(j, "resourceSpans"))
    {
        const char *svc = NULL;
        const cJSON *a;
        cJSON_ArrayForEach(a, cJSON_GetObjectItem(cJSON_GetObjectItem(rs, "resource"), "attributes"))
        if (strcmp(h_json_str(a, "key"), "service.name") == 0)
            svc = h_json_str(cJSON_GetObjectItem(a, "value"), "stringValue");
        const cJSON *ss;
        cJSON_ArrayForEach(ss, cJSON_GetObjectItem(rs, "scopeSpans"))
        {
            const cJSON *s;
            cJSON_ArrayForEach(s, cJSON_GetObjectItem(ss, "spans"))
            {
                cJSON *c = cJSON_Duplicate(s, 1);
                cJSON_AddStringToObject(c, "_service", svc ? svc : "");
                cJSON_AddStringToObject(
                    c, "_scope", h_json_str(cJSON_GetObjectItem(ss, "scope"), "name") ?: "");
                cJSON_AddItemToArray(col.spans, c);
            }
        }
    }
    pthread_mutex_unlock(&col.mu);
    cJSON_Delete(j);
}

static void *serve_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char *body;
    while ((body = read_request(fd))) {
        record(body);
        free(body);
        static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 "Content-Length: 2\r\n\r\n{}";
        if (write(fd, ok, sizeof ok - 1) < 0) break;
    }
    close(fd);
    return NULL;
}

static void *accept_loop(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(col.fd, NULL, NULL);
        if (c < 0) return NULL; /* closed by the teardown */
        pthread_t t;
        pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)c);
        pthread_detach(t);
    }
}

static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 16) ||
        getsockname(fd, (struct sockaddr *)&a, &l))
        return -1;
    *port = ntohs(a.sin_port);
    return fd;
}

/* Copies of the spans of trace (hex) received so far. */
static cJSON *spans_of(const char *trace)
{
    cJSON *out = cJSON_CreateArray();
    pthread_mutex_lock(&col.mu);
    const cJSON *s;
    cJSON_ArrayForEach(s, col.spans)
    if (strcmp(h_json_str(s, "traceId"), trace) == 0)
        cJSON_AddItemToArray(out, cJSON_Duplicate(s, 1));
    pthread_mutex_unlock(&col.mu);
    return out;
}

/* Copies of the received spans of trace, once at least n arrived (or what
 * arrived within WAIT_MS). */
static cJSON *wait_spans(const char *trace, int n)
{
    cJSON *out = spans_of(trace);
    double end = h_now_ms() + h_bound_ms(WAIT_MS);
    while (cJSON_GetArraySize(out) < n && h_poll_step(end)) {
        cJSON_Delete(out);
        out = spans_of(trace);
    }
    return out;
}

static int count_spans(const char *trace)
{
    cJSON *s = wait_spans(trace, 0);
    int n = cJSON_GetArraySize(s);
    cJSON_Delete(s);
    return n;
}

/* ---- gateways ---- */

static struct h_env env; /* sample_ratio 1 */
static struct h_env own;  /* a test's own gateway, stopped by own_teardown */

static int own_teardown(void **state)
{
    (void)state;
    int rc = own.gw.pid || own.mock.pid ? h_env_stop(&own) : 0;
    memset(&own, 0, sizeof own);
    return rc;
}

/* The tests that scrape /metrics run one worker: a scrape reads every
 * worker's pools, and a worker frees its own as it stops, unsynchronised
 * with a scrape another worker did earlier (ThreadSanitizer reports it;
 * a known issue of builtin.c and gateway.c, not of tracing). */
static char *conf_for(int cport, const char *ratio, const char *workers)
{
    char p[16];
    snprintf(p, sizeof p, "%d", cport);
    char *a = h_replace(conf_tmpl, "${CPORT}", p);
    char *b = h_replace(a, "${RATIO}", ratio);
    char *c = h_replace(b, "${WORKERS}", workers);
    free(a);
    free(b);
    return c;
}

static int group_setup(void **state)
{
    (void)state;
    col.spans = cJSON_CreateArray();
    col.fd = listen_any(&col.port);
    if (col.fd < 0 || pthread_create(&col.thread, NULL, accept_loop, NULL)) return -1;
    char *conf = conf_for(col.port, "1.0", "2");
    int rc = h_env_start(&env, conf);
    free(conf);
    return rc;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = h_env_stop(&env);
    shutdown(col.fd, SHUT_RDWR);
    close(col.fd);
    pthread_join(col.thread, NULL);
    pthread_mutex_lock(&col.mu);
    cJSON_Delete(col.spans);
    pthread_mutex_unlock(&col.mu);
    return rc;
}

/* ---- helpers ---- */

static bool is_hex(const char *s, size_t n)
{
    if (!s || strlen(s) != n) return false;
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s) || isupper((unsigned char)*s)) return false;
    return true;
}

static bool is_digits(const char *s)
{
    if (!s || !*s) return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return false;
    return true;
}

static const cJSON *attr(const cJSON *span, const char *key)
{
    const cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(span, "attributes"))
    if (strcmp(h_json_str(a, "key"), key) == 0) return cJSON_GetObjectItem(a, "value");
    return NULL;
}

static const char *attr_str(const cJSON *span, const char *key)
{
    return h_json_str(attr(span, key), "stringValue");
}

/* The schema fields every span must have. */
static void check_span_schema(const cJSON *s)
{
    assert_true(is_hex(h_json_str(s, "traceId"), 32));
    assert_true(is_hex(h_json_str(s, "spanId"), 16));
    const char *parent = h_json_str(s, "parentSpanId");
    if (parent) assert_true(is_hex(parent, 16));
    assert_non_null(h_json_str(s, "name"));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(s, "kind")));
    const char *st = h_json_str(s, "startTimeUnixNano"), *en = h_json_str(s, "endTimeUnixNano");
    assert_true(is_digits(st) && is_digits(en));
    assert_true(strtoull(en, NULL, 10) >= strtoull(st, NULL, 10));
    assert_true(strtoull(st, NULL, 10) > 1600000000ull * 1000000000ull); /* unix, not monotonic */
    assert_true(cJSON_IsArray(cJSON_GetObjectItem(s, "attributes")));
    const cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(s, "attributes"))
    {
        assert_non_null(h_json_str(a, "key"));
        const cJSON *v = cJSON_GetObjectItem(a, "value");
        assert_true(h_json_str(v, "stringValue") || is_digits(h_json_str(v, "intValue")));
    }
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(s, "status")));
    assert_string_equal(h_json_str(s, "_service"), "gw-test");
    assert_string_equal(h_json_str(s, "_scope"), "gateway");
}

/* The span id of a traceparent value "00-<trace>-<span>-<flags>". */
static void tp_span(const char *tp, char out[17])
{
    assert_non_null(tp);
    assert_int_equal(strlen(tp), 55);
    memcpy(out, tp + 36, 16);
    out[16] = '\0';
}

static void request(const struct h_env *e, const char *tp, const char *ts, struct h_resp *r)
{
    char h1[128], h2[256];
    const char *hdrs[3] = {NULL, NULL, NULL};
    size_t n = 0;
    if (tp) snprintf(h1, sizeof h1, "traceparent: %s", tp), hdrs[n++] = h1;
    if (ts) snprintf(h2, sizeof h2, "tracestate: %s", ts), hdrs[n++] = h2;
    assert_int_equal(h_get(e->gw.base, "/api/t/1", hdrs, r), 0);
    assert_int_equal(r->status, 200);
}

/* ---- tests ---- */

static void spans_form_the_tree_the_backends_saw(void **state)
{
    (void)state;
    const char *trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    const char *tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    struct h_resp r;
    request(&env, tp, "vendor=abc,x=y", &r);
    char server_span[17], seen_a[17], seen_b[17];
    tp_span(h_header(&r, "traceparent"), server_span);
    const cJSON *ha = cJSON_GetObjectItem(cJSON_GetObjectItem(r.json, "a"), "headers");
    const cJSON *hb = cJSON_GetObjectItem(cJSON_GetObjectItem(r.json, "b"), "headers");
    tp_span(h_json_str(ha, "traceparent"), seen_a);
    tp_span(h_json_str(hb, "traceparent"), seen_b);
    assert_string_equal(h_json_str(ha, "tracestate"), "vendor=abc,x=y"); /* unchanged */
    assert_string_equal(h_json_str(hb, "tracestate"), "vendor=abc,x=y");
    h_resp_free(&r);

    cJSON *spans = wait_spans(trace, 4);
    assert_int_equal(cJSON_GetArraySize(spans), 4);
    const cJSON *s, *server = NULL;
    cJSON_ArrayForEach(s, spans)
    {
        check_span_schema(s);
        if (cJSON_GetObjectItem(s, "kind")->valueint == 2) server = s;
    }
    assert_non_null(server);
    assert_string_equal(h_json_str(server, "spanId"), server_span);
    assert_string_equal(h_json_str(server, "parentSpanId"), "00f067aa0ba902b7");
    assert_string_equal(attr_str(server, "gateway.endpoint"), "t");
    assert_string_equal(h_json_str(attr(server, "http.response.status_code"), "intValue"), "200");
    assert_string_equal(attr_str(server, "gateway.outcome"), "degraded"); /* c left out */
    int clients = 0;
    cJSON_ArrayForEach(s, spans)
    {
        if (s == server) continue;
        clients++;
        assert_int_equal(cJSON_GetObjectItem(s, "kind")->valueint, 3);
        assert_string_equal(h_json_str(s, "parentSpanId"), server_span);
        assert_string_equal(attr_str(s, "gateway.endpoint"), "t");
        const char *b = attr_str(s, "gateway.backend");
        const cJSON *status = cJSON_GetObjectItem(s, "status");
        if (strcmp(b, "a") == 0 || strcmp(b, "b") == 0) {
            assert_string_equal(h_json_str(s, "spanId"), b[0] == 'a' ? seen_a : seen_b);
            assert_string_equal(h_json_str(attr(s, "http.response.status_code"), "intValue"),
                                "200");
            assert_string_equal(attr_str(s, "gateway.outcome"), "ok");
            assert_null(cJSON_GetObjectItem(status, "code"));
        } else {
            assert_string_equal(b, "c");
            assert_string_equal(h_json_str(attr(s, "http.response.status_code"), "intValue"),
                                "500");
            assert_string_equal(attr_str(s, "gateway.outcome"), "omitted");
            assert_int_equal(cJSON_GetObjectItem(status, "code")->valueint, 2);
        }
    }
    assert_int_equal(clients, 3);
    cJSON_Delete(spans);

    /* no traceparent: a new trace, the server span has no parent */
    request(&env, NULL, "ignored=1", &r);
    char t2[33];
    memcpy(t2, h_header(&r, "traceparent") + 3, 32);
    t2[32] = '\0';
    assert_null(h_json_str(cJSON_GetObjectItem(cJSON_GetObjectItem(r.json, "a"), "headers"),
                           "tracestate")); /* tracestate without traceparent is dropped */
    h_resp_free(&r);
    spans = wait_spans(t2, 4);
    assert_int_equal(cJSON_GetArraySize(spans), 4);
    cJSON_ArrayForEach(s, spans)
    if (cJSON_GetObjectItem(s, "kind")->valueint == 2)
        assert_null(cJSON_GetObjectItem(s, "parentSpanId"));
    cJSON_Delete(spans);
}

static void unsampled_traces_export_nothing(void **state)
{
    (void)state;
    struct h_resp r;
    request(&env, "00-11111111111111111111111111111111-00f067aa0ba902b7-00", NULL, &r);
    assert_string_equal(h_header(&r, "traceparent") + 53, "00"); /* the flag goes on */
    h_resp_free(&r);
    request(&env, "00-22222222222222222222222222222222-00f067aa0ba902b7-01", NULL, &r);
    h_resp_free(&r);
    cJSON *later = wait_spans("22222222222222222222222222222222", 4);
    assert_int_equal(cJSON_GetArraySize(later), 4);
    cJSON_Delete(later);
    assert_int_equal(count_spans("11111111111111111111111111111111"), 0);
}

static void sample_ratio_zero_exports_only_sampled_parents(void **state)
{
    (void)state;
    struct h_env *e0p = &own;
#define e0 (*e0p)
    assert_int_equal(h_mock_start(&e0.mock), 0);
    char *conf = conf_for(col.port, "0", "2");
    assert_int_equal(h_gateway_start(&e0.gw, conf, &e0.mock), 0);
    free(conf);
    char traces[5][33];
    for (int i = 0; i < 5; i++) {
        struct h_resp r;
        request(&e0, NULL, NULL, &r);
        const char *tp = h_header(&r, "traceparent");
        assert_string_equal(tp + 53, "00"); /* not sampled, and says so downstream */
        memcpy(traces[i], tp + 3, 32);
        traces[i][32] = '\0';
        h_resp_free(&r);
    }
    struct h_resp r;
    request(&e0, "00-33333333333333333333333333333333-00f067aa0ba902b7-01", NULL, &r);
    h_resp_free(&r);
    cJSON *later = wait_spans("33333333333333333333333333333333", 4);
    assert_int_equal(cJSON_GetArraySize(later), 4);
    cJSON_Delete(later);
    for (int i = 0; i < 5; i++)
        assert_int_equal(count_spans(traces[i]), 0);
#undef e0
}

/* gateway_spans_dropped_total from /metrics. */
static long dropped(const struct h_env *e)
{
    struct h_resp r;
    if (h_get(e->gw.base, "/metrics", NULL, &r) != 0 || !r.body) return -1;
    static const char name[] = "\ngateway_spans_dropped_total ";
    const char *p = strstr(r.body, name);
    long v = p ? strtol(p + sizeof name - 1, NULL, 10) : -1;
    h_resp_free(&r);
    return v;
}

static void collector_down_costs_requests_nothing(void **state)
{
    (void)state;
    int port;
    int fd = listen_any(&port);
    assert_true(fd >= 0);
    close(fd); /* nothing listens there now */
    struct h_env *e1p = &own;
#define e1 (*e1p)
    assert_int_equal(h_mock_start(&e1.mock), 0);
    char *conf = conf_for(port, "1", "1");
    assert_int_equal(h_gateway_start(&e1.gw, conf, &e1.mock), 0);
    free(conf);
    assert_int_equal(dropped(&e1), 0);
    enum { N = 20 };
    for (int i = 0; i < N; i++) {
        struct h_resp r;
        request(&e1, NULL, NULL, &r); /* asserts 200 */
        h_resp_free(&r);
    }
    (void)H_POLL_UNTIL(dropped(&e1) >= 4 * N, WAIT_MS);
    assert_int_equal(dropped(&e1), 4 * N); /* 1 server + 3 client spans each */
#undef e1
}

static void slow_collector_costs_requests_nothing(void **state)
{
    (void)state;
    int port;
    int lfd = listen_any(&port); /* accepts, reads, never answers */
    assert_true(lfd >= 0);
    struct h_env *e2p = &own;
#define e2 (*e2p)
    assert_int_equal(h_mock_start(&e2.mock), 0);
    char *conf = conf_for(port, "1", "1");
    assert_int_equal(h_gateway_start(&e2.gw, conf, &e2.mock), 0);
    free(conf);
    struct h_resp r;
    request(&e2, NULL, NULL, &r);
    h_resp_free(&r);
    /* the exporter connects and POSTs: from here it waits for an answer */
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, WAIT_MS), 1);
    int c = accept(lfd, NULL, NULL);
    assert_true(c >= 0);
    p = (struct pollfd){.fd = c, .events = POLLIN};
    assert_int_equal(poll(&p, 1, WAIT_MS), 1);
    enum { N = 20 };
    for (int i = 0; i < N; i++) { /* served while the exporter is stuck */
        request(&e2, NULL, NULL, &r);
        h_resp_free(&r);
    }
    /* the stuck batch times out on the exporter thread and is counted */
    (void)H_POLL_UNTIL(dropped(&e2) >= 4, WAIT_MS);
    assert_true(dropped(&e2) >= 4);
    close(c);
    close(lfd);
#undef e2
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spans_form_the_tree_the_backends_saw),
        cmocka_unit_test(unsampled_traces_export_nothing),
        cmocka_unit_test_teardown(sample_ratio_zero_exports_only_sampled_parents, own_teardown),
        cmocka_unit_test_teardown(collector_down_costs_requests_nothing, own_teardown),
        cmocka_unit_test_teardown(slow_collector_costs_requests_nothing, own_teardown),
    };
    int rc = cmocka_run_group_tests_name("otel", tests, group_setup, group_teardown);
    return rc ? rc : h_stop_failed();
}
