/*
 * The real gateway on the soft-failure path (DESIGN.md "Failure semantics"):
 * a backend with fallback "degraded" serves its last good body for the same
 * resolved request (and never another credential's), a static fallback
 * serves its value, an optional backend is left out without cancelling its
 * siblings, and at the endpoint deadline a slow degraded-capable backend
 * still yields a 200 with its stored body. Each such response carries
 * X-Gateway-Completed: false, X-Gateway-Degraded and a Server-Timing desc.
 *
 * One mock backend and one gateway. The mock's fault modes are keyed by a
 * path prefix, so every test uses its own ids.
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

static const char conf[] =
    "{\n"
    " \"server\": {\"listen\": \"127.0.0.1:${PORT}\", \"workers\": 2,\n"
    "            \"shutdown_timeout_ms\": 2000},\n"
    " \"defaults\": {\"timeout_ms\": 3000, \"backend_timeout_ms\": 3000},\n"
    " \"degraded\": {\"max_entries\": 1000, \"max_stale_s\": 3600},\n"
    " \"access_log\": {\"path\": \"-\"},\n"
    " \"endpoints\": [\n"
    "  {\"name\": \"deg\", \"path\": \"/api/deg/{id}\",\n"
    "   \"forward_headers\": [\"Authorization\"],\n"
    "   \"backends\": [\n"
    "    {\"name\": \"user\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"user\",\n"
    "     \"fallback\": \"degraded\", \"timeout_ms\": 300},\n"
    "    {\"name\": \"recs\", \"url\": \"${BACKEND}/recs/{id}\", \"key\": \"recs\"}]},\n"
    "  {\"name\": \"static\", \"path\": \"/api/static/{id}\",\n"
    "   \"backends\": [\n"
    "    {\"name\": \"user\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"user\"},\n"
    "    {\"name\": \"recs\", \"url\": \"${BACKEND}/recs/{id}\", \"key\": \"recs\",\n"
    "     \"fallback\": \"static\", \"static\": {\"items\": [], \"fallback\": true}}]},\n"
    "  {\"name\": \"optional\", \"path\": \"/api/opt/{id}\",\n"
    "   \"backends\": [\n"
    "    {\"name\": \"user\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"user\"},\n"
    "    {\"name\": \"recs\", \"url\": \"${BACKEND}/recs/{id}\", \"key\": \"recs\",\n"
    "     \"required\": false}]},\n"
    "  {\"name\": \"optslow\", \"path\": \"/api/optslow/{id}\", \"timeout_ms\": 6000,\n"
    "   \"backends\": [\n"
    "    {\"name\": \"slow\", \"url\": \"${BACKEND}/slow/700/{id}\", \"key\": \"slow\",\n"
    "     \"timeout_ms\": 6000},\n"
    "    {\"name\": \"opt\", \"url\": \"${BACKEND}/fail/500\", \"key\": \"opt\",\n"
    "     \"required\": false}]},\n"
    "  {\"name\": \"dl\", \"path\": \"/api/dl/{id}\", \"timeout_ms\": 400,\n"
    "   \"backends\": [\n"
    "    {\"name\": \"user\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"user\",\n"
    "     \"fallback\": \"degraded\", \"timeout_ms\": 8000},\n"
    "    {\"name\": \"recs\", \"url\": \"${BACKEND}/recs/{id}\", \"key\": \"recs\"}]}\n"
    " ]\n"
    "}\n";

static struct h_env env;

static int reset_mock(void **state)
{
    (void)state;
    return h_mock_reset(&env.mock);
}

static void get(const char *path, const char *auth, struct h_resp *r)
{
    char h[256];
    snprintf(h, sizeof h, "Authorization: %s", auth ? auth : "");
    const char *hdrs[] = {h, NULL};
    h_get(env.gw.base, path, auth ? hdrs : NULL, r);
}

static void mode(const char *query)
{
    assert_int_equal(h_mock_mode(&env.mock, query), 0);
}

static void expect_status(const char *what, const struct h_resp *r, long status)
{
    if (r->status != status)
        fprintf(stderr,
                "%s: expected %ld, got %ld (curl %d)\n  body: %s\n  X-Gateway-Degraded: %s\n", what,
                status, r->status, r->curl_code, r->body,
                h_header(r, "X-Gateway-Degraded") ? h_header(r, "X-Gateway-Degraded") : "(none)");
    assert_int_equal(r->status, status);
}

/* A complete answer: no fallback headers. */
static void expect_complete(const struct h_resp *r)
{
    const char *c = h_header(r, "X-Gateway-Completed");
    if (c) fprintf(stderr, "unexpected X-Gateway-Completed: %s on a complete answer\n", c);
    assert_null(c);
    assert_null(h_header(r, "X-Gateway-Degraded"));
}

/* X-Gateway-Completed: false, X-Gateway-Degraded is exactly names, and the
 * Server-Timing entry of backend says desc="<desc>". */
static void expect_fallback(const struct h_resp *r, const char *names, const char *backend,
                            const char *desc)
{
    const char *c = h_header(r, "X-Gateway-Completed");
    const char *d = h_header(r, "X-Gateway-Degraded");
    const char *st = h_header(r, "Server-Timing");
    fprintf(stderr, "X-Gateway-Completed: %s; X-Gateway-Degraded: %s; Server-Timing: %s\n",
            c ? c : "(none)", d ? d : "(none)", st ? st : "(none)");
    assert_non_null(c);
    assert_string_equal(c, "false");
    assert_non_null(d);
    assert_string_equal(d, names);
    assert_non_null(st);
    /* the backend's own entry: "<name>;dur=...;desc="<desc>"" up to the next ", " */
    char want[64];
    snprintf(want, sizeof want, "%s;dur=", backend);
    const char *e = strstr(st, want);
    while (e && e != st && e[-1] != ' ' && e[-1] != ',')
        e = strstr(e + 1, want);
    assert_non_null(e);
    const char *end = strchr(e, ',');
    char entry[256];
    size_t n = end ? (size_t)(end - e) : strlen(e);
    if (n >= sizeof entry) n = sizeof entry - 1;
    memcpy(entry, e, n);
    entry[n] = '\0';
    char wdesc[64];
    snprintf(wdesc, sizeof wdesc, ";desc=\"%s\"", desc);
    if (!strstr(entry, wdesc)) fprintf(stderr, "entry '%s' lacks %s\n", entry, wdesc);
    assert_non_null(strstr(entry, wdesc));
}

static char *member_json(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return v ? cJSON_PrintUnformatted(v) : NULL;
}

static void expect_error_naming(const struct h_resp *r, long status, const char *backend)
{
    expect_status("error", r, status);
    assert_non_null(r->json);
    const char *b = h_json_str(r->json, "backend");
    assert_non_null(b);
    assert_string_equal(b, backend);
}

static void degraded_body_served_after_a_failure(void **state)
{
    (void)state;
    /* three ways to fail: a 500, a reset, and a delay past the 300 ms
     * backend timeout; each on its own id stored just before */
    static const struct {
        const char *id, *fault;
    } cases[] = {
        {"dg-status", "status=500"},
        {"dg-reset", "action=reset"},
        {"dg-delay", "delay_ms=2000"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char path[128], q[256];
        snprintf(path, sizeof path, "/api/deg/%s", cases[i].id);
        fprintf(stderr, "case %s\n", cases[i].id);

        struct h_resp ok;
        get(path, "Bearer alice", &ok);
        expect_status("first call", &ok, 200);
        expect_complete(&ok);
        char *good_user = member_json(ok.json, "user");
        assert_non_null(good_user);
        assert_non_null(strstr(good_user, cases[i].id));

        snprintf(q, sizeof q, "prefix=/users/%s&%s", cases[i].id, cases[i].fault);
        mode(q);

        struct h_resp r;
        get(path, "Bearer alice", &r);
        expect_status("after the failure", &r, 200);
        expect_fallback(&r, "user", "user", "degraded");
        char *user = member_json(r.json, "user");
        assert_non_null(user);
        assert_string_equal(user, good_user);
        /* the healthy sibling is still fresh */
        assert_non_null(cJSON_GetObjectItemCaseSensitive(r.json, "recs"));
        free(user);
        h_resp_free(&r);

        /* the failing call was really made (the body is stored, not cached
         * in front of the backend) */
        snprintf(q, sizeof q, "/users/%s", cases[i].id);
        cJSON *log = h_mock_log(&env.mock, q);
        assert_true(cJSON_GetArraySize(log) >= 2);
        cJSON_Delete(log);

        free(good_user);
        h_resp_free(&ok);
    }
}

static void never_seen_id_gets_502_naming_the_backend(void **state)
{
    (void)state;
    struct h_resp ok;
    get("/api/deg/ns-known", "Bearer alice", &ok);
    expect_status("first call", &ok, 200);
    h_resp_free(&ok);

    mode("prefix=/users/ns-&status=500");
    struct h_resp r;
    get("/api/deg/ns-never", "Bearer alice", &r);
    expect_error_naming(&r, 502, "user");
    h_resp_free(&r);
    /* a param that only shares a prefix with a stored one */
    get("/api/deg/ns-know", "Bearer alice", &r);
    expect_error_naming(&r, 502, "user");
    h_resp_free(&r);
    /* and the stored one is still served */
    get("/api/deg/ns-known", "Bearer alice", &r);
    expect_status("stored id", &r, 200);
    expect_fallback(&r, "user", "user", "degraded");
    h_resp_free(&r);
}

static void degraded_body_never_crosses_credentials(void **state)
{
    (void)state;
    struct h_resp ok;
    get("/api/deg/cr-1", "Bearer alice", &ok);
    expect_status("alice's call", &ok, 200);
    h_resp_free(&ok);

    mode("prefix=/users/cr-1&status=500");
    struct h_resp r;
    get("/api/deg/cr-1", "Bearer mallory", &r);
    if (r.status == 200) fprintf(stderr, "another credential was served alice's stored body\n");
    expect_error_naming(&r, 502, "user");
    h_resp_free(&r);
    /* no Authorization at all is a different credential too */
    get("/api/deg/cr-1", NULL, &r);
    expect_error_naming(&r, 502, "user");
    h_resp_free(&r);
    /* alice still gets hers */
    get("/api/deg/cr-1", "Bearer alice", &r);
    expect_status("alice again", &r, 200);
    expect_fallback(&r, "user", "user", "degraded");
    h_resp_free(&r);
}

static void static_fallback_serves_the_configured_value(void **state)
{
    (void)state;
    mode("prefix=/recs/st-1&status=503");
    struct h_resp r;
    get("/api/static/st-1", NULL, &r);
    expect_status("static", &r, 200);
    expect_fallback(&r, "recs", "recs", "static");
    char *recs = member_json(r.json, "recs");
    assert_non_null(recs);
    assert_string_equal(recs, "{\"items\":[],\"fallback\":true}");
    free(recs);
    assert_string_equal(h_json_str(cJSON_GetObjectItemCaseSensitive(r.json, "user"), "id"), "st-1");
    h_resp_free(&r);

    /* healthy: the backend's own body, no fallback headers */
    get("/api/static/st-2", NULL, &r);
    expect_status("healthy", &r, 200);
    expect_complete(&r);
    assert_string_equal(h_json_str(cJSON_GetObjectItemCaseSensitive(r.json, "recs"), "for"),
                        "st-2");
    h_resp_free(&r);
}

static void optional_backend_failing_is_left_out(void **state)
{
    (void)state;
    mode("prefix=/recs/op-1&status=500");
    struct h_resp r;
    get("/api/opt/op-1", NULL, &r);
    expect_status("optional", &r, 200);
    expect_fallback(&r, "recs", "recs", "omitted");
    assert_null(cJSON_GetObjectItemCaseSensitive(r.json, "recs"));
    assert_string_equal(h_json_str(cJSON_GetObjectItemCaseSensitive(r.json, "user"), "id"), "op-1");
    h_resp_free(&r);

    mode("prefix=/recs/op-2&action=reset");
    get("/api/opt/op-2", NULL, &r);
    expect_status("optional, reset", &r, 200);
    expect_fallback(&r, "recs", "recs", "omitted");
    assert_null(cJSON_GetObjectItemCaseSensitive(r.json, "recs"));
    h_resp_free(&r);
}

static bool finished(const cJSON *e, void *arg)
{
    (void)arg;
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "finished"));
}

static void optional_failure_never_cancels_a_slow_sibling(void **state)
{
    (void)state;
    struct h_resp r;
    get("/api/optslow/os-1", NULL, &r);
    expect_status("optional failed fast, required slow", &r, 200);
    expect_fallback(&r, "opt", "opt", "omitted");
    const cJSON *slow = cJSON_GetObjectItemCaseSensitive(r.json, "slow");
    assert_non_null(slow);
    assert_string_equal(h_json_str(slow, "x"), "os-1");
    assert_null(cJSON_GetObjectItemCaseSensitive(r.json, "opt"));
    /* it waited for the slow one (700 ms) instead of answering early */
    assert_true(r.total_ms >= 600);
    h_resp_free(&r);
    cJSON *e = h_wait_log(&env.mock, "/slow/700/os-1", finished, NULL, 3000);
    assert_non_null(e);
    assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "client_hung_up")));
    cJSON_Delete(e);
}

static void deadline_with_a_slow_degraded_backend_serves_the_stored_body(void **state)
{
    (void)state;
    struct h_resp ok;
    get("/api/dl/dl-1", NULL, &ok);
    expect_status("first call", &ok, 200);
    expect_complete(&ok);
    char *good_user = member_json(ok.json, "user");
    h_resp_free(&ok);

    /* slower than the 400 ms endpoint deadline, faster than its own 8 s */
    mode("prefix=/users/dl-1&delay_ms=6000");
    struct h_resp r;
    get("/api/dl/dl-1", NULL, &r);
    fprintf(stderr, "deadline answer after %.0f ms\n", r.total_ms);
    expect_status("at the deadline", &r, 200);
    expect_fallback(&r, "user", "user", "degraded");
    char *user = member_json(r.json, "user");
    assert_non_null(user);
    assert_string_equal(user, good_user);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(r.json, "recs"));
    /* about the deadline: not before it, far from the 6 s answer */
    assert_true(r.total_ms >= 350);
    assert_true(r.total_ms < h_bound_ms(3000));
    free(user);
    free(good_user);
    h_resp_free(&r);

    /* a never-seen id at the deadline: 504 naming the backend */
    mode("prefix=/users/dl-2&delay_ms=6000");
    get("/api/dl/dl-2", NULL, &r);
    expect_error_naming(&r, 504, "user");
    assert_true(r.total_ms < h_bound_ms(3000));
    h_resp_free(&r);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
#define T(f) cmocka_unit_test_setup(f, reset_mock)
    const struct CMUnitTest tests[] = {
        T(degraded_body_served_after_a_failure),
        T(never_seen_id_gets_502_naming_the_backend),
        T(degraded_body_never_crosses_credentials),
        T(static_fallback_serves_the_configured_value),
        T(optional_backend_failing_is_left_out),
        T(optional_failure_never_cancels_a_slow_sibling),
        T(deadline_with_a_slow_degraded_backend_serves_the_stored_body),
    };
#undef T
    return H_GROUP_RUN("integration/resilience", tests, &env, conf);
}
