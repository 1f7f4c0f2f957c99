/*
 * The mock backend on its own: the integration tests trust its fault modes
 * and its log, so they are checked here first (no gateway involved).
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
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static struct h_mock g_mock;

static int group_setup(void **state)
{
    (void)state;
    return h_mock_start(&g_mock) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    int st = h_mock_stop(&g_mock); /* it must exit 0 on SIGTERM */
    return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int reset(void **state)
{
    (void)state;
    return h_mock_reset(&g_mock);
}

static void get(const char *path, struct h_resp *r)
{
    h_get(g_mock.origin, path, NULL, r);
}

static void mock_routes_answer_json(void **state)
{
    (void)state;
    struct h_resp r;
    get("/users/7", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(r.json);
    assert_string_equal(h_json_str(r.json, "id"), "7");
    assert_string_equal(h_json_str(r.json, "name"), "User 7");
    assert_string_equal(h_header(&r, "Content-Type"), "application/json");
    h_resp_free(&r);

    get("/orders/7", &r);
    assert_int_equal(r.status, 200);
    assert_true(cJSON_IsArray(cJSON_GetObjectItem(r.json, "orders")));
    h_resp_free(&r);

    get("/b/12", &r);
    assert_int_equal(cJSON_GetObjectItem(r.json, "n")->valueint, 12);
    h_resp_free(&r);

    get("/empty", &r);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.body_len, 0);
    h_resp_free(&r);

    get("/huge/5000", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 5000);
    assert_non_null(r.json);
    h_resp_free(&r);

    get("/drip/1", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(r.json);
    h_resp_free(&r);
}

static void mock_faults(void **state)
{
    (void)state;
    struct h_resp r;
    get("/fail/503", &r);
    assert_int_equal(r.status, 503);
    h_resp_free(&r);

    get("/invalid", &r);
    assert_int_equal(r.status, 200);
    assert_null(r.json);
    h_resp_free(&r);

    get("/reset", &r);
    assert_int_equal(r.status, 0);
    assert_int_not_equal(r.curl_code, 0);
    h_resp_free(&r);

    assert_int_equal(h_mock_mode(&g_mock, "prefix=/users&status=500"), 0);
    get("/users/1", &r);
    assert_int_equal(r.status, 500);
    h_resp_free(&r);
    get("/recs/1", &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(h_mock_mode(&g_mock, "prefix=/users&action=invalid"), 0);
    get("/users/1", &r);
    assert_null(r.json);
    h_resp_free(&r);
    assert_int_equal(h_mock_mode(&g_mock, "prefix=/users&clear=1"), 0);
    get("/users/1", &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
}

/* times=N: the next N matching requests misbehave, then the mode is gone. */
static void mock_fails_n_times_then_succeeds(void **state)
{
    (void)state;
    assert_int_equal(h_mock_mode(&g_mock, "prefix=/users&status=503&times=2"), 0);
    long want[] = {503, 503, 200, 200};
    for (int i = 0; i < 4; i++) {
        struct h_resp r;
        get("/users/1", &r);
        assert_int_equal(r.status, want[i]);
        h_resp_free(&r);
    }
}

static void mock_echo_reports_the_request(void **state)
{
    (void)state;
    const char *hdrs[] = {"X-Thing: one", "Authorization: Bearer t", NULL};
    struct h_resp r;
    char url[256];
    snprintf(url, sizeof url, "%s/echo/a%%2Fb?q=1&r=2", g_mock.origin);
    h_request("POST", url, hdrs, "{\"k\":1}", 0, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(h_json_str(r.json, "method"), "POST");
    assert_string_equal(h_json_str(r.json, "path"), "/echo/a%2Fb");
    assert_string_equal(h_json_str(r.json, "query"), "q=1&r=2");
    assert_string_equal(h_json_str(r.json, "body"), "{\"k\":1}");
    const cJSON *h = cJSON_GetObjectItem(r.json, "headers");
    assert_string_equal(h_json_str(h, "x-thing"), "one");
    assert_string_equal(h_json_str(h, "authorization"), "Bearer t");
    h_resp_free(&r);
}

static bool entry_finished(const cJSON *e, void *arg)
{
    (void)arg;
    return cJSON_IsTrue(cJSON_GetObjectItem(e, "finished"));
}

static void mock_log_records_raw_paths_not_control(void **state)
{
    (void)state;
    const char *hdrs[] = {"X-Request-Id: abc", NULL};
    struct h_resp r;
    h_get(g_mock.origin, "/users/x%2Fy", hdrs, &r);
    h_resp_free(&r);
    /* The mock marks an entry finished just after its answer is written, so
     * the client can read the log a moment before that: wait for it. */
    cJSON *fin = h_wait_log(&g_mock, "/users/", entry_finished, NULL, 5000);
    assert_non_null(fin);
    cJSON_Delete(fin);
    cJSON *log = h_mock_log(&g_mock, NULL);
    assert_non_null(log);
    assert_int_equal(cJSON_GetArraySize(log), 1); /* /_log itself is not logged */
    const cJSON *e = cJSON_GetArrayItem(log, 0);
    assert_string_equal(h_json_str(e, "path"), "/users/x%2Fy");
    assert_string_equal(h_log_header(e, "x-request-id"), "abc");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(e, "finished")));
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(e, "client_hung_up")));
    cJSON_Delete(log);

    log = h_mock_log(&g_mock, "/orders");
    assert_int_equal(cJSON_GetArraySize(log), 0);
    cJSON_Delete(log);
}

/* GET /_healthz (the gateway's health checks in the demo and the soak):
 * 200 unless a mode on its prefix sets a status, never in the log. */
static void mock_healthz_answers_and_is_not_logged(void **state)
{
    (void)state;
    struct h_resp r;
    get("/_healthz", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(r.json);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(r.json, "ok")));
    h_resp_free(&r);

    assert_int_equal(h_mock_mode(&g_mock, "prefix=/_healthz&status=503"), 0);
    get("/_healthz", &r);
    assert_int_equal(r.status, 503);
    h_resp_free(&r);
    assert_int_equal(h_mock_mode(&g_mock, "prefix=/users&status=500"), 0);
    assert_int_equal(h_mock_mode(&g_mock, "prefix=/_healthz&clear=1"), 0);
    get("/_healthz", &r); /* a mode on another prefix leaves it alone */
    assert_int_equal(r.status, 200);
    h_resp_free(&r);

    cJSON *log = h_mock_log(&g_mock, NULL);
    assert_non_null(log);
    assert_int_equal(cJSON_GetArraySize(log), 0);
    cJSON_Delete(log);
}

/* A client that leaves while /slow sleeps: the mock notices at once, and the
 * log says so. */
static void mock_notices_client_hang_up(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_mock.port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    static const char req[] = "GET /slow/20000/h HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(send(fd, req, sizeof req - 1, 0), (ssize_t)(sizeof req - 1));
    cJSON *started = h_wait_log(&g_mock, "/slow/20000/h", NULL, NULL, 5000);
    assert_non_null(started);
    cJSON_Delete(started);
    close(fd);
    cJSON *e = h_wait_log(&g_mock, "/slow/20000/h", h_pred_hung_up, NULL, 5000);
    assert_non_null(e);
    cJSON_Delete(e);
}

/* A client that has the whole answer finds its request finished in /_log
 * at once: the mock records the answer before it sends it (a test that read
 * /_log right after the gateway answered used to see finished:false now
 * and then on a busy machine). Many rounds, since the old window was short. */
static void mock_log_has_the_answer_before_the_client_does(void **state)
{
    (void)state;
    for (int i = 0; i < 300; i++) {
        char path[64];
        snprintf(path, sizeof path, i % 10 ? "/users/%d" : "/drip/0?n=%d", i);
        struct h_resp r;
        get(path, &r);
        assert_int_equal(r.status, 200);
        h_resp_free(&r);
        *strchrnul(path, '?') = 0;
        cJSON *log = h_mock_log(&g_mock, path);
        assert_non_null(log);
        assert_int_equal(cJSON_GetArraySize(log), i % 10 ? 1 : i / 10 + 1);
        cJSON *e = cJSON_GetArrayItem(log, cJSON_GetArraySize(log) - 1);
        assert_true(cJSON_IsTrue(cJSON_GetObjectItem(e, "finished")));
        assert_int_equal(cJSON_GetObjectItem(e, "status")->valueint, 200);
        cJSON_Delete(log);
    }
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(mock_routes_answer_json, reset),
        cmocka_unit_test_setup(mock_faults, reset),
        cmocka_unit_test_setup(mock_fails_n_times_then_succeeds, reset),
        cmocka_unit_test_setup(mock_echo_reports_the_request, reset),
        cmocka_unit_test_setup(mock_log_records_raw_paths_not_control, reset),
        cmocka_unit_test_setup(mock_notices_client_hang_up, reset),
        cmocka_unit_test_setup(mock_healthz_answers_and_is_not_logged, reset),
        cmocka_unit_test_setup(mock_log_has_the_answer_before_the_client_does, reset),
    };
    return cmocka_run_group_tests_name("integration/mock_backend", tests, group_setup,
                                       group_teardown);
}
