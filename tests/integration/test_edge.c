/*
 * test_edge: gzip (server.gzip) and CORS ("cors") through the real gateway
 * and mock backend: compressed bodies decompress to the uncompressed
 * answer, Accept-Encoding q-values, small and error bodies not compressed,
 * Vary; CORS preflight answered by the gateway with no backend call,
 * allowed and disallowed origins, the credentials rule.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include <cmocka.h>

#include "harness.h"

static const char conf[] =
    "{\"server\": {\"listen\": \"127.0.0.1:${PORT}\", \"workers\": 2,"
    "  \"gzip\": {\"min_bytes\": 1024, \"level\": 1}},"
    " \"defaults\": {\"timeout_ms\": 3000, \"cors\": {\"allow_origins\": [\"https://app.example\","
    "   \"http://localhost:3000\"], \"allow_headers\": [\"Authorization\", \"X-Trace\"],"
    "   \"allow_credentials\": true, \"max_age_s\": 120}},"
    " \"endpoints\": ["
    "  {\"name\": \"huge\", \"path\": \"/api/huge/{n}\","
    "   \"backends\": [{\"name\": \"h\", \"url\": \"${BACKEND}/huge/{n}\"}]},"
    "  {\"name\": \"st\", \"path\": \"/api/status/{code}\","
    "   \"backends\": [{\"name\": \"st\", \"url\": \"${BACKEND}/fail/{code}\"}]},"
    "  {\"name\": \"post\", \"method\": \"POST\", \"path\": \"/api/echo/{id}\","
    "   \"backends\": [{\"name\": \"a\", \"url\": \"${BACKEND}/echo/a/{id}\"}]},"
    "  {\"name\": \"open\", \"path\": \"/api/open/{n}\","
    "   \"cors\": {\"allow_origins\": [\"*\"]},"
    "   \"backends\": [{\"name\": \"h\", \"url\": \"${BACKEND}/huge/{n}\"}]}"
    " ]}";

static struct h_env env;

static void get(const char *path, const char *const *hdrs, struct h_resp *r)
{
    assert_int_equal(h_get(env.gw.base, path, hdrs, r), 0);
}

/* Whether the response has a header name: value (value compared without case). */
static bool has(const struct h_resp *r, const char *name, const char *value)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < r->n_headers; i++) {
        const char *h = r->headers[i];
        if (strncasecmp(h, name, n) == 0 && h[n] == ':') {
            const char *v = h + n + 1;
            while (*v == ' ')
                v++;
            if (!value || strncasecmp(v, value, strlen(value)) == 0) return true;
        }
    }
    return false;
}

static char *gunzip(const char *in, size_t n, size_t *out_len)
{
    size_t cap = 8 << 20;
    char *out = malloc(cap);
    z_stream s = {0};
    assert_int_equal(inflateInit2(&s, 15 + 16), Z_OK);
    s.next_in = (Bytef *)in;
    s.avail_in = (uInt)n;
    s.next_out = (Bytef *)out;
    s.avail_out = (uInt)cap;
    assert_int_equal(inflate(&s, Z_FINISH), Z_STREAM_END);
    *out_len = cap - s.avail_out;
    inflateEnd(&s);
    return out;
}

/* gzip round trip: the decompressed body is the uncompressed answer. */
static void test_gzip_round_trip(void **state)
{
    (void)state;
    const char *gz[] = {"Accept-Encoding: gzip, deflate", NULL};
    size_t sizes[] = {5000, 300000};
    for (size_t i = 0; i < 2; i++) {
        char path[64];
        snprintf(path, sizeof path, "/api/huge/%zu", sizes[i]);
        struct h_resp plain, zipped;
        get(path, NULL, &plain);
        get(path, gz, &zipped);
        assert_int_equal(plain.status, 200);
        assert_int_equal(zipped.status, 200);
        assert_false(has(&plain, "Content-Encoding", NULL));
        assert_true(has(&plain, "Vary", "Accept-Encoding"));
        assert_true(has(&zipped, "Content-Encoding", "gzip"));
        assert_true(has(&zipped, "Vary", "Accept-Encoding"));
        assert_true(zipped.body_len < plain.body_len / 4);
        size_t n;
        char *body = gunzip(zipped.body, zipped.body_len, &n);
        assert_int_equal(n, plain.body_len);
        assert_memory_equal(body, plain.body, n);
        free(body);
        h_resp_free(&plain);
        h_resp_free(&zipped);
    }
}

/* q=0 refuses, * accepts, gzip;q=0 beats *; no header: identity. */
static void test_gzip_negotiation(void **state)
{
    (void)state;
    struct {
        const char *ae;
        bool gz;
    } cases[] = {
        {"Accept-Encoding: gzip;q=0", false},      {"Accept-Encoding: *", true},
        {"Accept-Encoding: gzip;q=0, *", false},   {"Accept-Encoding: br;q=1, gzip;q=0.1", true},
        {"Accept-Encoding: identity", false},      {"Accept-Encoding: *;q=0", false},
        {NULL, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *h[] = {cases[i].ae, NULL};
        struct h_resp r;
        get("/api/huge/4000", h, &r);
        assert_int_equal(r.status, 200);
        if (has(&r, "Content-Encoding", "gzip") != cases[i].gz) {
            print_message("case %s\n", cases[i].ae ? cases[i].ae : "(none)");
            fail();
        }
        assert_true(has(&r, "Vary", "Accept-Encoding"));
        assert_int_equal(r.body_len, cases[i].gz ? r.body_len : 4000);
        h_resp_free(&r);
    }
}

/* Under min_bytes (1024), answers and error bodies go as they are, with
 * Vary still there; built-ins are not gzip-eligible. */
static void test_gzip_small_and_errors(void **state)
{
    (void)state;
    const char *gz[] = {"Accept-Encoding: gzip", NULL};
    struct h_resp r;
    get("/api/huge/1023", gz, &r);
    assert_int_equal(r.status, 200);
    assert_false(has(&r, "Content-Encoding", NULL));
    assert_true(has(&r, "Vary", "Accept-Encoding"));
    assert_int_equal(r.body_len, 1023);
    h_resp_free(&r);
    get("/api/huge/1024", gz, &r);
    assert_true(has(&r, "Content-Encoding", "gzip"));
    h_resp_free(&r);
    get("/api/status/500", gz, &r);
    assert_true(r.status >= 500);
    assert_false(has(&r, "Content-Encoding", NULL));
    assert_true(has(&r, "Vary", "Accept-Encoding"));
    assert_non_null(r.json); /* readable as it is */
    h_resp_free(&r);
    get("/healthz", gz, &r);
    assert_false(has(&r, "Content-Encoding", NULL));
    h_resp_free(&r);
}

static void preflight(const char *path, const char *origin, const char *method,
                      struct h_resp *r)
{
    char o[128], m[128];
    snprintf(o, sizeof o, "Origin: %s", origin);
    snprintf(m, sizeof m, "Access-Control-Request-Method: %s", method);
    const char *h[] = {o, m, "Access-Control-Request-Headers: authorization", NULL};
    char url[256];
    snprintf(url, sizeof url, "%s%s", env.gw.base, path);
    assert_int_equal(h_request("OPTIONS", url, h, NULL, 0, r), 0);
}

/* Preflight for GET and POST routes: 204 with the CORS headers, no backend
 * called; a disallowed origin: 204 without them; no such route or method,
 * or no Access-Control-Request-Method: today's 404/405. */
static void test_cors_preflight(void **state)
{
    (void)state;
    assert_int_equal(h_mock_reset(&env.mock), 0);
    struct h_resp r;
    preflight("/api/huge/10", "https://app.example", "GET", &r);
    assert_int_equal(r.status, 204);
    assert_true(has(&r, "Access-Control-Allow-Origin", "https://app.example"));
    assert_true(has(&r, "Access-Control-Allow-Methods", "GET, HEAD"));
    assert_true(has(&r, "Access-Control-Allow-Headers", "Authorization, X-Trace"));
    assert_true(has(&r, "Access-Control-Max-Age", "120"));
    assert_true(has(&r, "Access-Control-Allow-Credentials", "true"));
    assert_true(has(&r, "Vary", "Origin"));
    h_resp_free(&r);
    preflight("/api/echo/1", "http://localhost:3000", "POST", &r);
    assert_int_equal(r.status, 204);
    assert_true(has(&r, "Access-Control-Allow-Origin", "http://localhost:3000"));
    assert_true(has(&r, "Access-Control-Allow-Methods", "POST"));
    h_resp_free(&r);
    preflight("/api/huge/10", "https://evil.example", "GET", &r);
    assert_int_equal(r.status, 204);
    assert_false(has(&r, "Access-Control-Allow-Origin", NULL));
    assert_false(has(&r, "Access-Control-Allow-Methods", NULL));
    assert_true(has(&r, "Vary", "Origin"));
    h_resp_free(&r);
    assert_int_equal(h_mock_count(&env.mock, "/"), 0); /* no backend called */
    preflight("/api/echo/1", "https://app.example", "GET", &r); /* no GET route there */
    assert_int_equal(r.status, 405);
    h_resp_free(&r);
    preflight("/nowhere", "https://app.example", "GET", &r);
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    char url[256];
    snprintf(url, sizeof url, "%s/api/huge/10", env.gw.base);
    const char *h[] = {"Origin: https://app.example", NULL};
    assert_int_equal(h_request("OPTIONS", url, h, NULL, 0, &r), 0);
    assert_int_equal(r.status, 405);
    h_resp_free(&r);
    assert_int_equal(h_mock_count(&env.mock, "/"), 0);
}

/* Actual requests: an allowed origin is echoed with credentials; a
 * disallowed one gets no CORS headers and the normal answer; "*" still
 * echoes the origin. */
static void test_cors_actual(void **state)
{
    (void)state;
    struct h_resp r;
    const char *ok[] = {"Origin: https://app.example", NULL};
    get("/api/huge/100", ok, &r);
    assert_int_equal(r.status, 200);
    assert_true(has(&r, "Access-Control-Allow-Origin", "https://app.example"));
    assert_true(has(&r, "Access-Control-Allow-Credentials", "true"));
    assert_false(has(&r, "Access-Control-Allow-Methods", NULL));
    assert_true(has(&r, "Vary", "Origin"));
    h_resp_free(&r);
    const char *bad[] = {"Origin: https://app.example.evil", NULL};
    get("/api/huge/100", bad, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 100);
    assert_false(has(&r, "Access-Control-Allow-Origin", NULL));
    assert_false(has(&r, "Access-Control-Allow-Credentials", NULL));
    assert_true(has(&r, "Vary", "Origin"));
    h_resp_free(&r);
    const char *any[] = {"Origin: https://whoever.example", NULL};
    get("/api/open/100", any, &r);
    assert_true(has(&r, "Access-Control-Allow-Origin", "https://whoever.example"));
    assert_false(has(&r, "Access-Control-Allow-Origin", "*"));
    assert_false(has(&r, "Access-Control-Allow-Credentials", NULL));
    h_resp_free(&r);
    get("/api/huge/100", NULL, &r); /* no Origin: not a CORS request */
    assert_false(has(&r, "Access-Control-Allow-Origin", NULL));
    h_resp_free(&r);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gzip_round_trip),   cmocka_unit_test(test_gzip_negotiation),
        cmocka_unit_test(test_gzip_small_and_errors), cmocka_unit_test(test_cors_preflight),
        cmocka_unit_test(test_cors_actual),
    };
    return H_GROUP_RUN("integration/edge", tests, &env, conf);
}
