/*
 * What the client sends that reaches the backends (issue 9, items 4 and 7):
 * forwarded headers with control characters or cut at a NUL are a 400 with
 * no backend called, repeated headers are joined, malformed forwarded query
 * values are a 400 (not a 502), over-long params and backend paths are a
 * 414, and two key-less backends never produce a member twice.
 *
 * Requests go over raw sockets (curl will not send a bare CR or a NUL in a
 * header); the mock's log proves what a backend received, or that nothing
 * was called: every refused request uses its own path, and a clean request
 * sent after it (same connection order, same gateway) is waited for first,
 * so a call the gateway had made would already be in the log.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static const char conf[] =
    "{\n"
    " \"server\": {\"listen\": \"127.0.0.1:${PORT}\", \"workers\": 2,\n"
    "            \"shutdown_timeout_ms\": 2000},\n"
    " \"defaults\": {\"timeout_ms\": 3000, \"backend_timeout_ms\": 3000},\n"
    " \"access_log\": {\"path\": \"off\"},\n"
    " \"endpoints\": [\n"
    "  {\"name\": \"fwd\", \"path\": \"/api/fwd/{id}\",\n"
    "   \"forward_headers\": [\"X-Fwd\", \"Authorization\", \"Proxy-Authorization\",\n"
    "                         \"Cookie\", \"Accept-Language\"],\n"
    "   \"forward_query\": [\"lang\"],\n"
    "   \"backends\": [{\"name\": \"e\", \"url\": \"${BACKEND}/echo/fwd/{id}\", \"key\": \"e\"}]},\n"
    "  {\"name\": \"dup\", \"path\": \"/api/dup/{id}\",\n"
    "   \"backends\": [\n"
    "    {\"name\": \"first\", \"url\": \"${BACKEND}/users/1\"},\n"
    "    {\"name\": \"second\", \"url\": \"${BACKEND}/users/{id}\"},\n"
    "    {\"name\": \"third\", \"url\": \"${BACKEND}/b/7\"}]}\n"
    " ]\n"
    "}\n";

static struct h_env env;
static int seq; /* a fresh path per request */

/* Sends GET path with extra raw header bytes (may hold NUL, CR...) and
 * reads the answer. Returns the status; *raw gets the whole response. */
static long raw_get(const char *path, const char *hdrs, size_t hdrs_len, char **raw)
{
    char head[4096];
    int n = snprintf(head, sizeof head, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", path);
    assert_true(n > 0 && (size_t)n + hdrs_len + 32 < sizeof head);
    memcpy(head + n, hdrs, hdrs_len);
    n += (int)hdrs_len;
    memcpy(head + n, "Connection: close\r\n\r\n", 21);
    n += 21;
    int fd = h_connect(env.gw.port);
    assert_true(fd >= 0);
    assert_int_equal(h_send_all(fd, head, (size_t)n), 0);
    long st = h_read_response(fd, 10000, raw);
    close(fd);
    return st;
}

/* The JSON body of a raw response, parsed (caller deletes). */
static cJSON *raw_json(const char *raw)
{
    const char *body = strstr(raw, "\r\n\r\n");
    assert_non_null(body);
    cJSON *j = cJSON_Parse(body + 4);
    assert_non_null(j);
    return j;
}

/* After a refused request to prefix: a clean one to a new path reaches
 * the mock, and the refused one never did. */
static void assert_never_called(const char *refused_prefix)
{
    char path[64], mock_path[64];
    snprintf(path, sizeof path, "/api/fwd/clean%d", ++seq);
    snprintf(mock_path, sizeof mock_path, "/echo/fwd/clean%d", seq);
    char *raw = NULL;
    assert_int_equal(raw_get(path, "", 0, &raw), 200);
    free(raw);
    cJSON *e = h_wait_log(&env.mock, mock_path, NULL, NULL, 10000);
    assert_non_null(e);
    cJSON_Delete(e);
    cJSON *log = h_mock_log(&env.mock, refused_prefix);
    assert_non_null(log);
    if (cJSON_GetArraySize(log) != 0) fail_msg("the backend was called for %s", refused_prefix);
    cJSON_Delete(log);
}

/* A forwarded header with these value bytes is refused with a 400 naming
 * it, and no backend sees it. */
static void expect_refused(const char *name, const char *value, size_t vlen, const char *why)
{
    char path[64], mock_prefix[64], hdr[512];
    int id = ++seq;
    snprintf(path, sizeof path, "/api/fwd/bad%d", id);
    snprintf(mock_prefix, sizeof mock_prefix, "/echo/fwd/bad%d", id);
    int n = snprintf(hdr, sizeof hdr, "%s: ", name);
    memcpy(hdr + n, value, vlen);
    memcpy(hdr + n + vlen, "\r\n", 2);
    char *raw = NULL;
    long st = raw_get(path, hdr, (size_t)n + vlen + 2, &raw);
    if (st != 400) fail_msg("%s with %zu value bytes: got %ld\n%s", name, vlen, st, raw);
    cJSON *j = raw_json(raw);
    const char *err = h_json_str(j, "error");
    assert_non_null(err);
    if (!strcasestr(err, name) || !strstr(err, why)) fail_msg("error \"%s\"", err);
    assert_non_null(h_json_str(j, "request_id"));
    cJSON_Delete(j);
    free(raw);
    assert_never_called(mock_prefix);
}

#define REFUSED(name, lit, why) expect_refused(name, lit, sizeof lit - 1, why)

static void test_control_characters_refused(void **state)
{
    (void)state;
    REFUSED("X-Fwd", "a\rInjected: yes", "control character");
    REFUSED("Authorization", "Bearer a\rX-Admin: 1", "control character");
    REFUSED("X-Fwd", "a\vb", "control character");
    REFUSED("X-Fwd", "a\fb", "control character");
    REFUSED("X-Fwd", "a\x7f" "b", "control character");
    REFUSED("X-Fwd", "a\x01", "control character");
    REFUSED("x-fwd", "a\x1b[31m", "control character"); /* names match in any case */
}

/* libmicrohttpd ends a value at a NUL and drops the rest of the line; the
 * gateway notices and refuses instead of forwarding "a". */
static void test_nul_refused(void **state)
{
    (void)state;
    REFUSED("X-Fwd", "a\0b", "NUL");
    REFUSED("X-Fwd", "a\0\rInjected: yes", "NUL");
    REFUSED("Authorization", "Bearer good\0evil", "NUL");
    REFUSED("X-Fwd", "\0hidden", "NUL");
    REFUSED("X-Fwd", "a\0", "NUL"); /* even when nothing follows: "a\0\r\n" */
}

/* The NUL check also holds when the header is the last one before the empty
 * line (no next header name to measure against). */
static void test_nul_in_last_header(void **state)
{
    (void)state;
    int id = ++seq;
    char req[256], mock_prefix[64];
    int n = snprintf(req, sizeof req,
                     "GET /api/fwd/last%d HTTP/1.1\r\nHost: h\r\nConnection: close\r\nX-Fwd: a", id);
    memcpy(req + n, "\0b\r\n\r\n", 6);
    n += 6;
    snprintf(mock_prefix, sizeof mock_prefix, "/echo/fwd/last%d", id);
    int fd = h_connect(env.gw.port);
    assert_true(fd >= 0);
    assert_int_equal(h_send_all(fd, req, (size_t)n), 0);
    char *raw = NULL;
    long st = h_read_response(fd, 10000, &raw);
    close(fd);
    if (st != 400) fail_msg("got %ld\n%s", st, raw);
    free(raw);
    assert_never_called(mock_prefix);
}

/* The echo backend's view of one header (lowercase name) for a request
 * with these raw header lines; NULL when it got none. Caller frees. */
static char *echoed(const char *hdrs, const char *lname)
{
    char path[64];
    snprintf(path, sizeof path, "/api/fwd/ok%d", ++seq);
    char *raw = NULL;
    long st = raw_get(path, hdrs, strlen(hdrs), &raw);
    if (st != 200) fail_msg("got %ld\n%s", st, raw);
    cJSON *j = raw_json(raw);
    free(raw);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "e"), "headers"),
        lname);
    char *v = cJSON_IsString(h) ? strdup(h->valuestring) : NULL;
    cJSON_Delete(j);
    return v;
}

static void expect_echoed(const char *hdrs, const char *lname, const char *want)
{
    char *got = echoed(hdrs, lname);
    if (!want && got) fail_msg("%s: got \"%s\", want none", lname, got);
    if (want && (!got || strcmp(got, want) != 0))
        fail_msg("%s: got \"%s\", want \"%s\"", lname, got ? got : "(none)", want);
    free(got);
}

static void test_repeated_joined(void **state)
{
    (void)state;
    expect_echoed("X-Fwd: a\r\nX-Fwd: b\r\n", "x-fwd", "a, b");
    /* other headers in between, any case, order kept */
    expect_echoed("x-fwd: 1\r\nAccept: */*\r\nX-FWD: 2\r\nX-Fwd: 3\r\n", "x-fwd", "1, 2, 3");
    expect_echoed("Accept-Language: en\r\nAccept-Language: de;q=0.5\r\n", "accept-language",
                  "en, de;q=0.5");
    /* Cookie pairs are joined with "; " (RFC 6265 5.4) */
    expect_echoed("Cookie: a=1\r\nCookie: b=2\r\n", "cookie", "a=1; b=2");
    /* a single one is forwarded as it is; HTAB inside is allowed */
    expect_echoed("X-Fwd: a\tb\r\n", "x-fwd", "a\tb");
    /* trailing whitespace is not part of the value; obs-text passes */
    expect_echoed("X-Fwd: v \t\r\n", "x-fwd", "v");
    expect_echoed("X-Fwd: caf\xc3\xa9\r\n", "x-fwd", "caf\xc3\xa9");
    /* an empty one adds nothing to the list */
    expect_echoed("X-Fwd:\r\nX-Fwd: x\r\n", "x-fwd", "x");
    /* not configured: never forwarded */
    expect_echoed("X-Other: 1\r\n", "x-other", NULL);
}

static void test_repeated_credentials_refused(void **state)
{
    (void)state;
    REFUSED("Authorization", "Bearer a\r\nAuthorization: Bearer b", "more than once");
    REFUSED("Proxy-Authorization", "Basic a\r\nProxy-Authorization: Basic b", "more than once");
}

static void test_query_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {"lang=%zz", "lang=%00", "lang=a%2", "x=1&lang=%G1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[96], mock_prefix[64];
        int id = ++seq;
        snprintf(path, sizeof path, "/api/fwd/q%d?%s", id, bad[i]);
        snprintf(mock_prefix, sizeof mock_prefix, "/echo/fwd/q%d", id);
        char *raw = NULL;
        long st = raw_get(path, "", 0, &raw);
        if (st != 400) fail_msg("%s: got %ld\n%s", bad[i], st, raw);
        cJSON *j = raw_json(raw);
        assert_non_null(strstr(h_json_str(j, "error"), "percent-encoding"));
        cJSON_Delete(j);
        free(raw);
        assert_never_called(mock_prefix);
    }
    /* a malformed value of a name not forwarded is nobody's business */
    char *raw = NULL;
    char path[64];
    snprintf(path, sizeof path, "/api/fwd/q%d?other=%%zz&lang=en", ++seq);
    assert_int_equal(raw_get(path, "", 0, &raw), 200);
    free(raw);
}

static void test_too_long(void **state)
{
    (void)state;
    char path[4096], *raw = NULL;
    /* a param of 1 KiB + 1 */
    int n = snprintf(path, sizeof path, "/api/fwd/");
    memset(path + n, 'a', 1025);
    path[n + 1025] = '\0';
    long st = raw_get(path, "", 0, &raw);
    if (st != 414) fail_msg("got %ld\n%.300s", st, raw);
    cJSON *j = raw_json(raw);
    assert_string_equal(h_json_str(j, "error"), "path parameter too long");
    cJSON_Delete(j);
    free(raw);
    /* 1 KiB exactly is fine */
    path[n + 1024] = '\0';
    assert_int_equal(raw_get(path, "", 0, &raw), 200);
    free(raw);
    /* 1000 '!' encode to 3000 bytes: the backend path is over 2 KiB */
    memset(path + n, '!', 1000);
    path[n + 1000] = '\0';
    st = raw_get(path, "", 0, &raw);
    if (st != 414) fail_msg("got %ld\n%.300s", st, raw);
    j = raw_json(raw);
    assert_non_null(strstr(h_json_str(j, "error"), "URL path too long"));
    cJSON_Delete(j);
    free(raw);
    assert_never_called("/echo/fwd/%21");
}

/* Two key-less backends with the same members: each member once, the later
 * backend's value. */
static void test_duplicate_members(void **state)
{
    (void)state;
    struct h_resp r;
    h_get(env.gw.base, "/api/dup/attacker", NULL, &r);
    assert_int_equal(r.status, 200);
    /* {"id":"attacker","name":"User attacker","n":7}, each name once */
    const char *want = "{\"id\":\"attacker\",\"name\":\"User attacker\",\"n\":7}";
    if (strcmp(r.body, want) != 0) fail_msg("got %s, want %s", r.body, want);
    h_resp_free(&r);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_control_characters_refused),
        cmocka_unit_test(test_nul_refused),
        cmocka_unit_test(test_nul_in_last_header),
        cmocka_unit_test(test_repeated_joined),
        cmocka_unit_test(test_repeated_credentials_refused),
        cmocka_unit_test(test_query_malformed),
        cmocka_unit_test(test_too_long),
        cmocka_unit_test(test_duplicate_members),
    };
    return H_GROUP_RUN("integration/forward", tests, &env, conf);
}
