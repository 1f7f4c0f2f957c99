/*
 * The real gateway on the success path: merge, routing, forwarding, trace
 * and request-id handling, deadlines passed on, response headers.
 * One mock backend and one gateway (h_conf_standard) for the whole program.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

static void request(const char *method, const char *path, struct h_resp *r)
{
    char url[1024];
    snprintf(url, sizeof url, "%s%s", env.gw.base, path);
    h_request(method, url, NULL, NULL, 0, r);
}

static void assert_json_content_type(const struct h_resp *r)
{
    const char *ct = h_header(r, "Content-Type");
    assert_non_null(ct);
    assert_true(strncasecmp(ct, "application/json", 16) == 0);
}

/* A W3C traceparent: 00-<32 lowercase hex>-<16 lowercase hex>-<2 hex>, ids
 * not all zero. Copies the ids out. */
static bool parse_traceparent(const char *tp, char trace[33], char span[17])
{
    if (!tp || strlen(tp) != 55 || strncmp(tp, "00-", 3) != 0 || tp[35] != '-' || tp[52] != '-')
        return false;
    for (int i = 3; i < 55; i++) {
        if (i == 35 || i == 52) continue;
        if (!isxdigit((unsigned char)tp[i]) || isupper((unsigned char)tp[i])) return false;
    }
    memcpy(trace, tp + 3, 32);
    trace[32] = '\0';
    memcpy(span, tp + 36, 16);
    span[16] = '\0';
    return strspn(trace, "0") != 32 && strspn(span, "0") != 16;
}

/* 1 to 128 printable ASCII characters, no spaces. */
static bool valid_request_id(const char *id)
{
    if (!id) return false;
    size_t n = strlen(id);
    if (n < 1 || n > 128) return false;
    for (size_t i = 0; i < n; i++)
        if (id[i] <= 0x20 || id[i] >= 0x7f) return false;
    return true;
}

/* The headers one echo backend ("a" or "b") received, from the response. */
static const cJSON *echo_headers(const struct h_resp *r, const char *key)
{
    const cJSON *be = cJSON_GetObjectItemCaseSensitive(r->json, key);
    assert_non_null(be);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(be, "headers");
    assert_non_null(h);
    return h;
}

static void merged_response_has_keys_top_level_fields_allow_and_null(void **state)
{
    (void)state;
    struct h_resp r;
    get("/api/dashboard/42", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_json_content_type(&r);
    assert_non_null(r.json);
    assert_true(cJSON_IsObject(r.json));
    /* key "user": the whole body */
    const cJSON *user = cJSON_GetObjectItemCaseSensitive(r.json, "user");
    assert_string_equal(h_json_str(user, "id"), "42");
    assert_string_equal(h_json_str(user, "name"), "User 42");
    /* no key: the fields of orders at the top level */
    assert_string_equal(h_json_str(r.json, "user_id"), "42");
    const cJSON *orders = cJSON_GetObjectItemCaseSensitive(r.json, "orders");
    assert_true(cJSON_IsArray(orders));
    assert_int_equal(cJSON_GetArraySize(orders), 2);
    assert_true(cJSON_GetObjectItem(cJSON_GetArrayItem(orders, 0), "total")->valuedouble == 9.5);
    /* allow ["items"]: "for" is filtered out */
    const cJSON *recs = cJSON_GetObjectItemCaseSensitive(r.json, "recs");
    assert_true(cJSON_IsObject(recs));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(recs, "items")), 2);
    assert_null(cJSON_GetObjectItemCaseSensitive(recs, "for"));
    /* a 204 merges as null */
    const cJSON *nothing = cJSON_GetObjectItemCaseSensitive(r.json, "nothing");
    assert_non_null(nothing);
    assert_true(cJSON_IsNull(nothing));
    assert_int_equal(cJSON_GetArraySize(r.json), 5); /* user, user_id, orders, recs, nothing */
    h_resp_free(&r);
}

static void any_2xx_from_a_backend_is_success(void **state)
{
    (void)state;
    struct h_resp r;
    get("/api/status/201", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(h_json_str(cJSON_GetObjectItem(r.json, "st"), "error"), "fail");
    h_resp_free(&r);
}

static void unknown_path_is_404_json(void **state)
{
    (void)state;
    const char *paths[] = {"/nope", "/api/dashboard", "/api/dashboard/1/extra"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        struct h_resp r;
        get(paths[i], NULL, &r);
        if (r.status != 404) fprintf(stderr, "path %s: status %ld\n", paths[i], r.status);
        assert_int_equal(r.status, 404);
        assert_json_content_type(&r);
        assert_true(cJSON_IsObject(r.json));
        h_resp_free(&r);
    }
    cJSON *log = h_mock_log(&env.mock, NULL);
    assert_int_equal(cJSON_GetArraySize(log), 0); /* no backend was called */
    cJSON_Delete(log);
}

static void wrong_method_is_405_with_allow(void **state)
{
    (void)state;
    struct h_resp r;
    request("DELETE", "/api/echo/1", &r);
    assert_int_equal(r.status, 405);
    assert_json_content_type(&r);
    assert_true(cJSON_IsObject(r.json));
    const char *allow = h_header(&r, "Allow");
    assert_non_null(allow);
    assert_non_null(strstr(allow, "GET"));
    assert_non_null(strstr(allow, "POST"));
    h_resp_free(&r);

    request("POST", "/api/dashboard/1", &r);
    assert_int_equal(r.status, 405);
    assert_non_null(h_header(&r, "Allow"));
    assert_non_null(strstr(h_header(&r, "Allow"), "GET"));
    assert_null(strstr(h_header(&r, "Allow"), "POST"));
    h_resp_free(&r);
}

/* Decodes %XX escapes; false on a malformed one or when out is too small. */
static bool percent_decode(const char *in, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; in[i]; i++) {
        if (o + 1 >= outlen) return false;
        if (in[i] == '%') {
            if (!isxdigit((unsigned char)in[i + 1]) || !isxdigit((unsigned char)in[i + 2]))
                return false;
            char hex[3] = {in[i + 1], in[i + 2], 0};
            out[o++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    out[o] = '\0';
    return true;
}

static bool path_is(const cJSON *e, void *arg)
{
    const char *p = h_json_str(e, "path");
    return p && strcasecmp(p, arg) == 0; /* %2F and %2f are the same */
}

static void encoded_slash_stays_inside_its_param(void **state)
{
    (void)state;
    struct h_resp r;
    get("/api/dashboard/a%2Fb", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(strcasecmp(h_json_str(cJSON_GetObjectItem(r.json, "user"), "id"), "a%2Fb") == 0);
    h_resp_free(&r);
    cJSON *e = h_wait_log(&env.mock, "/users/", path_is, "/users/a%2Fb", 2000);
    assert_non_null(e);
    cJSON_Delete(e);
    cJSON *log = h_mock_log(&env.mock, "/users/a/");
    assert_int_equal(cJSON_GetArraySize(log), 0);
    cJSON_Delete(log);

    /* a param can neither add a segment nor start a query string */
    get("/api/echo/x%3Fy=1%2Fz", NULL, &r);
    assert_int_equal(r.status, 200);
    const cJSON *a = cJSON_GetObjectItem(r.json, "a");
    const char *path = h_json_str(a, "path");
    assert_non_null(path);
    assert_true(strncmp(path, "/echo/a/", 8) == 0);
    assert_null(strpbrk(path + 8, "/?")); /* one segment, no query */
    char decoded[64];
    assert_true(percent_decode(path + 8, decoded, sizeof decoded));
    assert_string_equal(decoded, "x?y=1/z"); /* whichever safe bytes were escaped */
    assert_string_equal(h_json_str(a, "query"), "");
    h_resp_free(&r);
}

static void forwards_only_configured_headers_and_query(void **state)
{
    (void)state;
    const char *hdrs[] = {"Authorization: Bearer tok", "Accept-Language: de", "X-Private: secret",
                          "Cookie: session=1", NULL};
    struct h_resp r;
    get("/api/echo/7?lang=de&secret=s", hdrs, &r);
    assert_int_equal(r.status, 200);
    const char *keys[] = {"a", "b"};
    for (int i = 0; i < 2; i++) {
        const cJSON *h = echo_headers(&r, keys[i]);
        assert_string_equal(h_json_str(h, "authorization"), "Bearer tok");
        assert_string_equal(h_json_str(h, "accept-language"), "de");
        assert_null(h_json_str(h, "x-private"));
        assert_null(h_json_str(h, "cookie"));
        assert_string_equal(h_json_str(cJSON_GetObjectItem(r.json, keys[i]), "query"), "lang=de");
    }
    h_resp_free(&r);

    /* absent ones are not invented */
    get("/api/echo/7?other=1", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_null(h_json_str(echo_headers(&r, "a"), "authorization"));
    assert_string_equal(h_json_str(cJSON_GetObjectItem(r.json, "a"), "query"), "");
    h_resp_free(&r);
}

static void valid_traceparent_keeps_its_trace_id_with_a_new_span_per_call(void **state)
{
    (void)state;
    static const char trace_in[] = "0af7651916cd43dd8448eb211c80319c";
    static const char span_in[] = "b7ad6b7169203331";
    char tp_hdr[128];
    snprintf(tp_hdr, sizeof tp_hdr, "traceparent: 00-%s-%s-01", trace_in, span_in);
    const char *hdrs[] = {tp_hdr, NULL};
    struct h_resp r;
    get("/api/echo/1", hdrs, &r);
    assert_int_equal(r.status, 200);

    char trace[33], span_gw[17], span_a[17], span_b[17];
    assert_true(parse_traceparent(h_header(&r, "traceparent"), trace, span_gw));
    assert_string_equal(trace, trace_in);
    assert_string_not_equal(span_gw, span_in);

    assert_true(parse_traceparent(h_json_str(echo_headers(&r, "a"), "traceparent"), trace, span_a));
    assert_string_equal(trace, trace_in);
    assert_true(parse_traceparent(h_json_str(echo_headers(&r, "b"), "traceparent"), trace, span_b));
    assert_string_equal(trace, trace_in);
    assert_string_not_equal(span_a, span_b);
    assert_string_not_equal(span_a, span_in);
    assert_string_not_equal(span_b, span_in);
    h_resp_free(&r);
}

static void invalid_traceparent_starts_a_new_trace(void **state)
{
    (void)state;
    const char *bad[] = {
        "traceparent: garbage",
        "traceparent: 00-00000000000000000000000000000000-b7ad6b7169203331-01", /* zero id */
        "traceparent: 00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", /* uppercase */
        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", /* zero span */
        "traceparent: ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", /* version ff */
        NULL,                                                                   /* none at all */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *hdrs[] = {bad[i], NULL};
        struct h_resp r;
        get("/api/echo/1", hdrs, &r);
        assert_int_equal(r.status, 200);
        char trace[33], span[17], trace_a[33], span_a[17];
        assert_true(parse_traceparent(h_header(&r, "traceparent"), trace, span));
        assert_string_not_equal(trace, "0af7651916cd43dd8448eb211c80319c");
        /* the backends are in the new trace */
        assert_true(
            parse_traceparent(h_json_str(echo_headers(&r, "a"), "traceparent"), trace_a, span_a));
        assert_string_equal(trace_a, trace);
        h_resp_free(&r);
    }
}

static void valid_request_id_is_echoed_and_forwarded(void **state)
{
    (void)state;
    char longest[128 + 32] = "X-Request-Id: ";
    memset(longest + strlen(longest), 'r', 128); /* 128 characters: still valid */
    const char *ids[] = {"X-Request-Id: req-123_abc.DEF~!", longest};
    for (int i = 0; i < 2; i++) {
        const char *hdrs[] = {ids[i], NULL};
        const char *want = ids[i] + strlen("X-Request-Id: ");
        struct h_resp r;
        get("/api/echo/1", hdrs, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(h_header(&r, "X-Request-Id"), want);
        assert_string_equal(h_json_str(echo_headers(&r, "a"), "x-request-id"), want);
        assert_string_equal(h_json_str(echo_headers(&r, "b"), "x-request-id"), want);
        h_resp_free(&r);
    }
}

static void invalid_request_id_is_replaced(void **state)
{
    (void)state;
    char too_long[129 + 32] = "X-Request-Id: ";
    memset(too_long + strlen(too_long), 'r', 129);
    const char *bad[] = {too_long, "X-Request-Id: has space", "X-Request-Id: tab\there", NULL};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *hdrs[] = {bad[i], NULL};
        struct h_resp r;
        get("/api/echo/1", hdrs, &r);
        assert_int_equal(r.status, 200);
        const char *id = h_header(&r, "X-Request-Id");
        assert_true(valid_request_id(id));
        if (bad[i]) assert_string_not_equal(id, bad[i] + strlen("X-Request-Id: "));
        assert_string_equal(h_json_str(echo_headers(&r, "a"), "x-request-id"), id);
        h_resp_free(&r);
    }
    /* generated ids differ between requests */
    struct h_resp r1, r2;
    get("/api/echo/1", NULL, &r1);
    get("/api/echo/1", NULL, &r2);
    assert_string_not_equal(h_header(&r1, "X-Request-Id"), h_header(&r2, "X-Request-Id"));
    h_resp_free(&r1);
    h_resp_free(&r2);
}

static long timeout_header(const struct h_resp *r, const char *key)
{
    const char *v = h_json_str(echo_headers(r, key), "x-request-timeout-ms");
    assert_non_null(v);
    char *end;
    long ms = strtol(v, &end, 10);
    assert_true(*v && *end == '\0');
    return ms;
}

static void backends_get_the_time_left_on_their_own_deadline(void **state)
{
    (void)state;
    struct h_resp r;
    get("/api/echo/1", NULL, &r);
    assert_int_equal(r.status, 200);
    long a = timeout_header(&r, "a"), b = timeout_header(&r, "b");
    assert_true(a > 0 && a <= 1500); /* backend a's own timeout_ms */
    assert_true(b > 0 && b <= 2000); /* the endpoint's timeout_ms */
    h_resp_free(&r);

    const char *hdrs[] = {"X-Request-Timeout-Ms: 700", NULL};
    get("/api/echo/1", hdrs, &r);
    assert_int_equal(r.status, 200);
    a = timeout_header(&r, "a");
    b = timeout_header(&r, "b");
    assert_true(a > 0 && a <= 700);
    assert_true(b > 0 && b <= 700);
    h_resp_free(&r);
}

static void malformed_timeout_header_is_400(void **state)
{
    (void)state;
    const char *bad[] = {"abc", "0", "-5", "12x", "1.5", "5 ms"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char h[128];
        snprintf(h, sizeof h, "X-Request-Timeout-Ms: %s", bad[i]);
        const char *hdrs[] = {h, NULL};
        struct h_resp r;
        get("/api/dashboard/1", hdrs, &r);
        if (r.status != 400) fprintf(stderr, "X-Request-Timeout-Ms: %s -> %ld\n", bad[i], r.status);
        assert_int_equal(r.status, 400);
        assert_true(valid_request_id(h_header(&r, "X-Request-Id")));
        h_resp_free(&r);
    }
    cJSON *log = h_mock_log(&env.mock, NULL);
    assert_int_equal(cJSON_GetArraySize(log), 0);
    cJSON_Delete(log);
}

static void response_carries_request_id_traceparent_and_server_timing(void **state)
{
    (void)state;
    struct h_resp r;
    get("/api/dashboard/5", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(valid_request_id(h_header(&r, "X-Request-Id")));
    char trace[33], span[17];
    assert_true(parse_traceparent(h_header(&r, "traceparent"), trace, span));

    const char *st = h_header(&r, "Server-Timing");
    assert_non_null(st);
    /* one entry per backend: "name;dur=1.2" separated by commas */
    char *copy = strdup(st), *save = NULL;
    const char *want[] = {"user", "orders", "recs", "nothing"};
    int seen[4] = {0}, entries = 0;
    for (char *e = strtok_r(copy, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        while (*e == ' ')
            e++;
        entries++;
        size_t n = strcspn(e, ";");
        for (int i = 0; i < 4; i++)
            if (strlen(want[i]) == n && strncmp(e, want[i], n) == 0) seen[i]++;
        /* the duration in ms with exactly one decimal: "dur=12.3" */
        const char *d = strstr(e, "dur=");
        assert_non_null(d);
        d += 4;
        size_t digits = strspn(d, "0123456789");
        assert_true(digits >= 1 && d[digits] == '.');
        assert_true(strspn(d + digits + 1, "0123456789") == 1);
        assert_true(d[digits + 2] == ';' || d[digits + 2] == '\0');
    }
    free(copy);
    assert_int_equal(entries, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(seen[i], 1);
    h_resp_free(&r);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
#define T(f) cmocka_unit_test_setup(f, reset_mock)
    const struct CMUnitTest tests[] = {
        T(merged_response_has_keys_top_level_fields_allow_and_null),
        T(any_2xx_from_a_backend_is_success),
        T(unknown_path_is_404_json),
        T(wrong_method_is_405_with_allow),
        T(encoded_slash_stays_inside_its_param),
        T(forwards_only_configured_headers_and_query),
        T(valid_traceparent_keeps_its_trace_id_with_a_new_span_per_call),
        T(invalid_traceparent_starts_a_new_trace),
        T(valid_request_id_is_echoed_and_forwarded),
        T(invalid_request_id_is_replaced),
        T(backends_get_the_time_left_on_their_own_deadline),
        T(malformed_timeout_header_is_400),
        T(response_carries_request_id_traceparent_and_server_timing),
    };
#undef T
    return H_GROUP_RUN("integration/gateway", tests, &env, h_conf_standard);
}
