/*
 * The real gateway on the hard-failure path: a required backend that fails
 * (status, reset, invalid JSON, body too large, timeout) gives 502/504 at
 * once, its slow siblings are cancelled (the mock sees the connection close
 * early), the client's deadline is kept, and a client that hangs up aborts
 * the backend calls. One mock backend and one gateway (h_conf_standard).
 *
 * The slow backends here sleep for seconds; every bound below is far from
 * both the expected time and the slow answer, so sanitizer builds on a busy
 * machine still pass, and a gateway that waits for a sibling still fails.
 * Upper bounds are multiplied by GATEWAY_TEST_TIME_SCALE (h_bound_ms; set by
 * tests/valgrind.sh), lower ones never.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static struct h_env env;

static int reset_mock(void **state)
{
    (void)state;
    return h_mock_reset(&env.mock);
}

static void get(const char *path, const char *const *hdrs, struct h_resp *r)
{
    h_get(env.gw.base, path, hdrs, r);
}

/* A 502 (or 504) with the JSON body {"error","backend","request_id"}. */
static void assert_gateway_error(const struct h_resp *r, long status, const char *backend)
{
    if (r->status != status)
        fprintf(stderr, "expected %ld, got %ld: %s\n", status, r->status, r->body);
    assert_int_equal(r->status, status);
    const char *ct = h_header(r, "Content-Type");
    assert_non_null(ct);
    assert_non_null(strstr(ct, "application/json"));
    assert_non_null(r->json);
    assert_non_null(h_json_str(r->json, "error"));
    if (backend) assert_string_equal(h_json_str(r->json, "backend"), backend);
    const char *id = h_header(r, "X-Request-Id");
    assert_non_null(id);
    assert_string_equal(h_json_str(r->json, "request_id"), id);
}

static void failing_backend_gives_502_at_once_and_cancels_the_slow_sibling(void **state)
{
    (void)state;
    const char *hdrs[] = {"X-Request-Id: failfast-1", NULL};
    struct h_resp r;
    get("/api/failfast/500", hdrs, &r);
    assert_gateway_error(&r, 502, "bad");
    assert_string_equal(h_json_str(r.json, "request_id"), "failfast-1");
    /* the sibling sleeps 6000 ms: the client must not wait for it */
    if (r.total_ms >= h_bound_ms(2000)) fprintf(stderr, "502 took %.0f ms\n", r.total_ms);
    assert_true(r.total_ms < h_bound_ms(2000));
    h_resp_free(&r);
    /* and its connection was closed long before it would have answered */
    cJSON *e = h_wait_log(&env.mock, "/slow/6000/500", h_pred_hung_up, NULL, 4000);
    assert_non_null(e);
    cJSON_Delete(e);
}

static void non_2xx_from_a_required_backend_gives_502(void **state)
{
    (void)state;
    const char *codes[] = {"/api/status/404", "/api/status/503", "/api/status/302"};
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
        struct h_resp r;
        get(codes[i], NULL, &r);
        assert_gateway_error(&r, 502, "st");
        h_resp_free(&r);
    }
}

static void reset_connection_gives_502(void **state)
{
    (void)state;
    struct h_resp r;
    get("/api/reset", NULL, &r);
    assert_gateway_error(&r, 502, "reset");
    h_resp_free(&r);
}

static void invalid_json_gives_502(void **state)
{
    (void)state;
    struct h_resp r;
    get("/api/invalid", NULL, &r);
    assert_gateway_error(&r, 502, "invalid");
    h_resp_free(&r);

    /* the same through a fault mode on a healthy route */
    assert_int_equal(h_mock_mode(&env.mock, "prefix=/users&action=invalid"), 0);
    get("/api/dashboard/1", NULL, &r);
    assert_gateway_error(&r, 502, "user");
    h_resp_free(&r);
}

static void body_over_max_response_bytes_gives_502(void **state)
{
    (void)state;
    struct h_resp r;
    get("/api/huge/60000", NULL, &r); /* under the 65536 limit */
    assert_int_equal(r.status, 200);
    assert_int_equal(strlen(h_json_str(cJSON_GetObjectItem(r.json, "huge"), "data")), 60000 - 11);
    h_resp_free(&r);

    get("/api/huge/200000", NULL, &r);
    assert_gateway_error(&r, 502, "huge");
    h_resp_free(&r);
}

static void backend_timeout_gives_504(void **state)
{
    (void)state;
    struct h_resp r;
    get("/api/slow/10", NULL, &r); /* within the backend's 200 ms */
    assert_int_equal(r.status, 200);
    h_resp_free(&r);

    get("/api/slow/5000", NULL, &r);
    assert_gateway_error(&r, 504, "slow");
    assert_true(r.total_ms >= 150 && r.total_ms < h_bound_ms(2500));
    h_resp_free(&r);
    cJSON *e = h_wait_log(&env.mock, "/slow/5000/t", h_pred_hung_up, NULL, 3000);
    assert_non_null(e);
    cJSON_Delete(e);
}

static void client_deadline_gives_504_in_about_that_time(void **state)
{
    (void)state;
    const char *hdrs[] = {"X-Request-Timeout-Ms: 100", NULL};
    struct h_resp r;
    get("/api/deadline/5000", hdrs, &r);
    assert_gateway_error(&r, 504, NULL);
    if (r.total_ms < 90 || r.total_ms >= h_bound_ms(1500))
        fprintf(stderr, "504 took %.0f ms\n", r.total_ms);
    assert_true(r.total_ms >= 90 && r.total_ms < h_bound_ms(1500));
    h_resp_free(&r);
    cJSON *e = h_wait_log(&env.mock, "/slow/5000/d", h_pred_hung_up, NULL, 3000);
    assert_non_null(e);
    cJSON_Delete(e);
}

static bool started_not_finished(const cJSON *e, void *arg)
{
    (void)arg;
    return !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "finished"));
}

static void client_hang_up_aborts_the_backend_calls(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)env.gw.port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    static const char req[] = "GET /api/deadline/6000 HTTP/1.1\r\nHost: gw\r\n\r\n";
    assert_int_equal(send(fd, req, sizeof req - 1, 0), (ssize_t)(sizeof req - 1));
    /* wait until the backend call is in flight, then leave */
    cJSON *e = h_wait_log(&env.mock, "/slow/6000/d", started_not_finished, NULL, 3000);
    assert_non_null(e);
    cJSON_Delete(e);
    close(fd);
    e = h_wait_log(&env.mock, "/slow/6000/d", h_pred_hung_up, NULL, 4000);
    assert_non_null(e);
    cJSON_Delete(e);

    /* the gateway is still fine */
    struct h_resp r;
    get("/api/dashboard/1", NULL, &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
#define T(f) cmocka_unit_test_setup(f, reset_mock)
    const struct CMUnitTest tests[] = {
        T(failing_backend_gives_502_at_once_and_cancels_the_slow_sibling),
        T(non_2xx_from_a_required_backend_gives_502),
        T(reset_connection_gives_502),
        T(invalid_json_gives_502),
        T(body_over_max_response_bytes_gives_502),
        T(backend_timeout_gives_504),
        T(client_deadline_gives_504_in_about_that_time),
        T(client_hang_up_aborts_the_backend_calls),
    };
#undef T
    return H_GROUP_RUN("integration/failures", tests, &env, h_conf_standard);
}
