/*
 * expose_headers on the real gateway against the real mock backend (on
 * both transports: integration/expose and integration/expose_curl). The mock
 * sends extra response headers with ?hdr=Name:Value (percent-encoded here,
 * %3A for the colon).
 *
 * What is proved: the first backend in config order that answered 2xx wins
 * even when it answers last; names not listed are not copied; a failed,
 * degraded or left-out backend contributes nothing (the next one in order
 * does); an error answer carries none; a cache hit contributes nothing; a
 * value over 511 bytes is dropped whole (not cut) while one of exactly 511
 * passes; a value with a bare CR never reaches the client.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define RL "hdr=X-Rate-Limit%3A"

static const char conf_head[] =
    "{\"server\": {\"listen\": \"127.0.0.1:${PORT}\", \"workers\": 1, \"shutdown_timeout_ms\": "
    "2000},"
    " \"defaults\": {\"timeout_ms\": 5000, \"backend_timeout_ms\": 5000},"
    " \"access_log\": {\"path\": \"off\"},"
    " \"degraded\": {\"max_entries\": 1000},"
    " \"endpoints\": ["
    /* a answers last but is first in config order; b alone has X-Region */
    "  {\"name\": \"two\", \"path\": \"/two\", \"expose_headers\": [\"X-Rate-Limit\", "
    "\"x-region\"],"
    "   \"backends\": ["
    "    {\"name\": \"a\", \"url\": \"${BACKEND}/slow/300/a?" RL "from-a&hdr=X-Secret%3Ahidden\","
    "     \"key\": \"a\"},"
    "    {\"name\": \"b\", \"url\": \"${BACKEND}/users/1?" RL "from-b&hdr=X-Region%3Aeu-1\","
    "     \"key\": \"b\"}]},"
    /* a is degraded once /users fails: b's value then */
    "  {\"name\": \"deg\", \"path\": \"/deg/{id}\", \"expose_headers\": [\"X-Rate-Limit\"],"
    "   \"backends\": ["
    "    {\"name\": \"a\", \"url\": \"${BACKEND}/users/{id}?" RL "from-a\", \"key\": \"a\","
    "     \"fallback\": \"degraded\"},"
    "    {\"name\": \"b\", \"url\": \"${BACKEND}/recs/{id}?" RL "from-b\", \"key\": \"b\"}]},"
    /* the only backend with the header fails and is left out */
    "  {\"name\": \"omit\", \"path\": \"/omit\", \"expose_headers\": [\"X-Rate-Limit\"],"
    "   \"backends\": ["
    "    {\"name\": \"a\", \"url\": \"${BACKEND}/fail/500?" RL "failed\", \"key\": \"a\","
    "     \"required\": false},"
    "    {\"name\": \"b\", \"url\": \"${BACKEND}/b/1\", \"key\": \"b\"}]},"
    /* a required backend fails: a 502 carries nothing */
    "  {\"name\": \"err\", \"path\": \"/err\", \"expose_headers\": [\"X-Rate-Limit\"],"
    "   \"backends\": ["
    "    {\"name\": \"a\", \"url\": \"${BACKEND}/b/1?" RL "ok\", \"key\": \"a\"},"
    "    {\"name\": \"b\", \"url\": \"${BACKEND}/fail/500\", \"key\": \"b\"}]},"
    /* cached: the hit contributes nothing */
    "  {\"name\": \"cached\", \"path\": \"/cached\", \"expose_headers\": [\"X-Rate-Limit\"],"
    "   \"backends\": ["
    "    {\"name\": \"a\", \"url\": \"${BACKEND}/b/7?" RL "fresh\", \"key\": \"a\","
    "     \"cache\": {\"ttl_ms\": 60000}}]},"
    /* a bare CR and a ^A in a value (a and c fail on native; curl takes the
     * lines, the values are dropped), then the caps: X-Long one byte over,
     * X-Rate-Limit exactly at the cap */
    "  {\"name\": \"bad\", \"path\": \"/bad\", \"expose_headers\": [\"X-Inj\", \"X-Long\", "
    "\"X-Rate-Limit\", \"X-Ctl\"],"
    "   \"backends\": ["
    "    {\"name\": \"a\", \"url\": \"${BACKEND}/b/1?hdr=X-Inj%3Aa%0Db\", \"key\": \"a\","
    "     \"required\": false},"
    "    {\"name\": \"c\", \"url\": \"${BACKEND}/b/3?hdr=X-Ctl%3Aa%01b\", \"key\": \"c\","
    "     \"required\": false},"
    "    {\"name\": \"b\", \"url\": \"${BACKEND}/b/2?hdr=X-Long%3A@LONG@&" RL "@CAP@\","
    "     \"key\": \"b\"}]}"
    " ]}";

static struct h_env env;

static char *make_conf(void)
{
    char longv[513], capv[512];
    memset(longv, 'L', 512);
    longv[512] = '\0';
    memset(capv, 'c', 511);
    capv[511] = '\0';
    char *a = h_replace(conf_head, "@LONG@", longv);
    char *b = h_replace(a, "@CAP@", capv);
    free(a);
    return b;
}

static int group_setup(void **state)
{
    (void)state;
    char *conf = make_conf();
    int rc = h_env_start(&env, conf);
    free(conf);
    return rc == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return h_env_stop(&env);
}

static int reset_mock(void **state)
{
    (void)state;
    return h_mock_reset(&env.mock);
}

static void get(const char *path, long status, struct h_resp *r)
{
    h_get(env.gw.base, path, NULL, r);
    if (r->status != status) fprintf(stderr, "%s: %ld %s\n", path, r->status, r->body);
    assert_int_equal(r->status, status);
}

/* The response has header name with exactly value. */
static void expect_hdr(const struct h_resp *r, const char *name, const char *value)
{
    const char *v = h_header(r, name);
    if (!v || strcmp(v, value) != 0) fail_msg("%s: got %s, want %s", name, v ? v : "none", value);
}

static void first_in_config_order_wins(void **state)
{
    (void)state;
    struct h_resp r;
    get("/two", 200, &r);
    expect_hdr(&r, "X-Rate-Limit", "from-a");
    expect_hdr(&r, "X-Region", "eu-1");
    assert_null(h_header(&r, "X-Secret")); /* not listed */
    h_resp_free(&r);
    /* a really answered last: the order is config order, not arrival */
    cJSON *log = h_mock_log(&env.mock, NULL);
    double a_end = -1, b_end = -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, log)
    {
        const char *p = h_json_str(e, "path");
        double f = cJSON_GetNumberValue(cJSON_GetObjectItem(e, "finished_ms"));
        if (p && strncmp(p, "/slow/300/a", 11) == 0) a_end = f;
        if (p && strncmp(p, "/users/1", 8) == 0) b_end = f;
    }
    cJSON_Delete(log);
    assert_true(a_end > b_end && b_end >= 0);
}

static void degraded_contributes_nothing(void **state)
{
    (void)state;
    struct h_resp r;
    get("/deg/7", 200, &r);
    expect_hdr(&r, "X-Rate-Limit", "from-a");
    h_resp_free(&r);
    assert_int_equal(h_mock_mode(&env.mock, "prefix=/users&status=500"), 0);
    get("/deg/7", 200, &r);
    expect_hdr(&r, "X-Gateway-Degraded", "a");
    /* a's 500 carried X-Rate-Limit: from-a too (the mock adds it to every
     * answer): it must not show */
    expect_hdr(&r, "X-Rate-Limit", "from-b");
    h_resp_free(&r);
}

static void failed_backend_contributes_nothing(void **state)
{
    (void)state;
    struct h_resp r;
    get("/omit", 200, &r);
    assert_non_null(h_header(&r, "X-Gateway-Degraded"));
    assert_null(h_header(&r, "X-Rate-Limit"));
    h_resp_free(&r);
    get("/err", 502, &r);
    assert_null(h_header(&r, "X-Rate-Limit"));
    h_resp_free(&r);
}

static void cache_hit_contributes_nothing(void **state)
{
    (void)state;
    struct h_resp r;
    get("/cached", 200, &r);
    expect_hdr(&r, "X-Rate-Limit", "fresh");
    h_resp_free(&r);
    get("/cached", 200, &r);
    const char *st = h_header(&r, "Server-Timing");
    assert_true(st && strstr(st, "desc=\"hit\""));
    assert_null(h_header(&r, "X-Rate-Limit"));
    h_resp_free(&r);
}

static void bad_values_never_reach_the_client(void **state)
{
    (void)state;
    struct h_resp r;
    get("/bad", 200, &r);
    assert_null(h_header(&r, "X-Inj"));
    assert_null(h_header(&r, "X-Ctl"));
    assert_null(h_header(&r, "b"));
    assert_null(h_header(&r, "X-Long")); /* 512 bytes: dropped, not cut */
    const char *cap = h_header(&r, "X-Rate-Limit");
    assert_non_null(cap);
    assert_int_equal(strlen(cap), 511);
    h_resp_free(&r);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
#define T(f) cmocka_unit_test_setup(f, reset_mock)
    const struct CMUnitTest tests[] = {
        T(first_in_config_order_wins),         T(degraded_contributes_nothing),
        T(failed_backend_contributes_nothing), T(cache_hit_contributes_nothing),
        T(bad_values_never_reach_the_client),
    };
#undef T
    int rc = cmocka_run_group_tests_name("integration/expose", tests, group_setup, group_teardown);
    return rc ? rc : h_stop_failed();
}
