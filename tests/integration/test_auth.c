/*
 * JWT at the edge, against the real gateway binary and the mock backend,
 * with RSA and EC keys generated here and a JWKS file written here:
 *   - RS256 and ES256 tokens reach the backend with the claim headers
 *     (sub -> X-User-Id, a numeric claim -> X-Tier), and a client-sent
 *     X-User-Id never does (not on the auth endpoint, not on an endpoint
 *     without auth that forwards X-User-Id);
 *   - every rejection (missing, malformed, alg none, HS256 against the RSA
 *     key, unknown kid, bad signature, expired, not yet valid, wrong issuer,
 *     wrong audience, an oversized token) is a 401 with WWW-Authenticate and
 *     a JSON body, and the backend is never called;
 *   - "optional": no token goes on without claims, a bad one is a 401;
 *   - degraded answers are not shared across different subs;
 *   - SIGHUP reloads the JWKS (a new key works), a broken JWKS keeps the
 *     keys in use; --check reports an unusable JWKS with its JSON path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/jwt_testkeys.h"
#include "harness.h"

#define WAIT_MS 10000

static const char conf_tmpl[] =
    "{\n"
    " \"server\": {\"listen\": \"127.0.0.1:${PORT}\", \"workers\": 2},\n"
    " \"defaults\": {\"timeout_ms\": 3000, \"backend_timeout_ms\": 3000},\n"
    " \"access_log\": {\"path\": \"off\"},\n"
    " \"auth\": {\"jwks_path\": \"${JWKS}\", \"issuer\": \"https://idp.test\",\n"
    "          \"audience\": [\"api\", \"web\"], \"algorithms\": [\"RS256\", \"ES256\"],\n"
    "          \"leeway_s\": 30,\n"
    "          \"claims_to_headers\": {\"sub\": \"X-User-Id\", \"tier\": \"X-Tier\"}},\n"
    " \"endpoints\": [\n"
    "  {\"name\": \"req\", \"path\": \"/api/req/{id}\", \"auth\": \"required\",\n"
    "   \"forward_headers\": [\"X-User-Id\", \"X-Other\"],\n"
    "   \"backends\": [{\"name\": \"e\", \"url\": \"${BACKEND}/echo/req/{id}\", \"key\": \"e\"}]},\n"
    "  {\"name\": \"opt\", \"path\": \"/api/opt/{id}\", \"auth\": \"optional\",\n"
    "   \"forward_headers\": [\"X-User-Id\"],\n"
    "   \"backends\": [{\"name\": \"e\", \"url\": \"${BACKEND}/echo/opt/{id}\", \"key\": \"e\"}]},\n"
    "  {\"name\": \"open\", \"path\": \"/api/open/{id}\", \"forward_headers\": [\"X-User-Id\"],\n"
    "   \"backends\": [{\"name\": \"e\", \"url\": \"${BACKEND}/echo/open/{id}\", \"key\": \"e\"}]},\n"
    "  {\"name\": \"dg\", \"path\": \"/api/dg/{id}\", \"auth\": \"required\",\n"
    "   \"backends\": [{\"name\": \"u\", \"url\": \"${BACKEND}/echo/dg/{id}\", \"key\": \"u\",\n"
    "                  \"fallback\": \"degraded\"}]}\n"
    " ]\n"
    "}\n";

static struct h_env env;
static EVP_PKEY *rsa, *ec, *rsa_new;
static char jwks_path[256];

static int write_jwks(const char *text)
{
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", jwks_path);
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    fputs(text, f);
    fclose(f);
    return rename(tmp, jwks_path);
}

/* The keys and the JWKS file the group's gateway reads: made before the
 * group runs, removed after it. */
static int keys_make(void)
{
    rsa = tk_rsa(2048);
    rsa_new = tk_rsa(2048);
    ec = tk_ec();
    char *jwks = tk_jwks(rsa, "r1", ec, "e1");
    int rc = h_write_temp(jwks_path, sizeof jwks_path, jwks);
    free(jwks);
    return rc;
}

static void keys_free(void)
{
    unlink(jwks_path);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(rsa_new);
    EVP_PKEY_free(ec);
}

/* Claims valid now, with extra members. */
static char *claims(const char *sub, const char *more)
{
    char *out = malloc(512);
    long long now = (long long)time(NULL);
    snprintf(out, 512,
             "{\"sub\":\"%s\",\"iss\":\"https://idp.test\",\"aud\":\"api\",\"tier\":3,"
             "\"iat\":%lld,\"exp\":%lld%s}",
             sub, now, now + 600, more);
    return out;
}

static char *token(EVP_PKEY *k, const char *alg, const char *kid, const char *sub)
{
    char *c = claims(sub, "");
    char *t = tk_token(k, alg, kid, c);
    free(c);
    return t;
}

/* GET path with "Authorization: Bearer tok" (tok NULL: none) and one more
 * header line (may be NULL). */
static void get(const char *path, const char *tok, const char *extra, struct h_resp *r)
{
    char *auth = NULL;
    const char *hdrs[3] = {NULL, NULL, NULL};
    size_t n = 0;
    if (tok) {
        auth = malloc(strlen(tok) + 32);
        sprintf(auth, "Authorization: Bearer %s", tok);
        hdrs[n++] = auth;
    }
    if (extra) hdrs[n++] = extra;
    assert_int_equal(h_get(env.gw.base, path, hdrs, r), 0);
    free(auth);
}

/* The header the backend saw (through the echo body), or NULL. */
static const char *echoed(const struct h_resp *r, const char *lname)
{
    const cJSON *e = cJSON_GetObjectItem(r->json, "e");
    if (!e) e = cJSON_GetObjectItem(r->json, "u");
    return h_json_str(cJSON_GetObjectItem(e, "headers"), lname);
}

static void valid_tokens_reach_the_backend_with_claim_headers(void **state)
{
    (void)state;
    const char *algs[] = {"RS256", "ES256"};
    EVP_PKEY *keys[] = {rsa, ec};
    const char *kids[] = {"r1", "e1"};
    for (int i = 0; i < 2; i++) {
        char *t = token(keys[i], algs[i], kids[i], "alice");
        struct h_resp r;
        get("/api/req/1", t, "X-User-Id: mallory", &r);
        assert_int_equal(r.status, 200);
        assert_non_null(r.json);
        assert_string_equal(echoed(&r, "x-user-id"), "alice"); /* the client's is gone */
        assert_string_equal(echoed(&r, "x-tier"), "3");
        h_resp_free(&r);
        free(t);
    }
    /* an endpoint without auth that forwards X-User-Id still drops the client's */
    struct h_resp r;
    get("/api/open/1", NULL, "X-User-Id: mallory", &r);
    assert_int_equal(r.status, 200);
    assert_null(echoed(&r, "x-user-id"));
    h_resp_free(&r);
}

struct bad_case {
    const char *what;
    char *tok; /* NULL: no Authorization header */
    const char *www;
};

static void rejections_are_401_before_any_backend_call(void **state)
{
    (void)state;
    long long now = (long long)time(NULL);
    char more[160];
    struct bad_case cases[16];
    size_t n = 0;
    cases[n++] = (struct bad_case){"missing", NULL, "Bearer"};
    cases[n++] = (struct bad_case){"malformed", strdup("abc.def"), "Bearer error=\"invalid_token\""};
    char *c = claims("alice", "");
    cases[n++] = (struct bad_case){"alg none", tk_token(NULL, "none", "r1", c), NULL};
    cases[n++] = (struct bad_case){"HS256 vs RSA", tk_token(NULL, "HS256", "r1", c), NULL};
    cases[n++] = (struct bad_case){"unknown kid", tk_token(rsa, "RS256", "zz", c), NULL};
    cases[n++] = (struct bad_case){"bad signature", tk_token(rsa_new, "RS256", "r1", c), NULL};
    free(c);
    snprintf(more, sizeof more,
             "{\"sub\":\"a\",\"iss\":\"https://idp.test\",\"aud\":\"api\",\"exp\":%lld}", now - 120);
    cases[n++] = (struct bad_case){"expired", tk_token(ec, "ES256", "e1", more), NULL};
    snprintf(more, sizeof more,
             "{\"sub\":\"a\",\"iss\":\"https://idp.test\",\"aud\":\"api\",\"exp\":%lld,"
             "\"nbf\":%lld}",
             now + 600, now + 300);
    cases[n++] = (struct bad_case){"not yet valid", tk_token(rsa, "RS256", "r1", more), NULL};
    snprintf(more, sizeof more,
             "{\"sub\":\"a\",\"iss\":\"https://evil.test\",\"aud\":\"api\",\"exp\":%lld}",
             now + 600);
    cases[n++] = (struct bad_case){"wrong issuer", tk_token(rsa, "RS256", "r1", more), NULL};
    snprintf(more, sizeof more,
             "{\"sub\":\"a\",\"iss\":\"https://idp.test\",\"aud\":[\"x\",\"y\"],\"exp\":%lld}",
             now + 600);
    cases[n++] = (struct bad_case){"wrong audience", tk_token(ec, "ES256", "e1", more), NULL};
    char *big = malloc(10001);
    memset(big, 'a', 10000);
    big[10000] = '\0';
    big[10] = '.';
    big[20] = '.';
    cases[n++] = (struct bad_case){"10 KB token", big, NULL};

    assert_int_equal(h_mock_reset(&env.mock), 0);
    for (size_t i = 0; i < n; i++) {
        struct h_resp r;
        get("/api/req/1", cases[i].tok, NULL, &r);
        if (r.status != 401) print_message("case %s: status %ld\n", cases[i].what, r.status);
        assert_int_equal(r.status, 401);
        const char *www = h_header(&r, "WWW-Authenticate");
        assert_non_null(www);
        assert_string_equal(www, cases[i].www ? cases[i].www : "Bearer error=\"invalid_token\"");
        assert_non_null(r.json);
        assert_non_null(h_json_str(r.json, "error"));
        assert_non_null(h_json_str(r.json, "request_id"));
        h_resp_free(&r);
        free(cases[i].tok);
    }
    /* a 100 KiB token does not fit the header block: refused, no call either */
    char *huge = malloc(100 * 1024 + 1);
    memset(huge, 'a', 100 * 1024);
    huge[100 * 1024] = '\0';
    struct h_resp r;
    get("/api/req/1", huge, NULL, &r);
    assert_true(r.status == 401 || r.status == 431 || r.status == 400);
    h_resp_free(&r);
    free(huge);
    /* the answers were written before any call could start: none happened */
    assert_int_equal(h_mock_count(&env.mock, "/echo/req"), 0);
}

static void optional_auth_goes_on_without_claims(void **state)
{
    (void)state;
    struct h_resp r;
    get("/api/opt/1", NULL, "X-User-Id: mallory", &r);
    assert_int_equal(r.status, 200);
    assert_null(echoed(&r, "x-user-id"));
    h_resp_free(&r);

    char *t = token(ec, "ES256", "e1", "bob");
    get("/api/opt/1", t, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(echoed(&r, "x-user-id"), "bob");
    h_resp_free(&r);
    free(t);

    t = token(rsa_new, "RS256", "r1", "bob"); /* bad signature */
    assert_int_equal(h_mock_reset(&env.mock), 0);
    get("/api/opt/1", t, NULL, &r);
    assert_int_equal(r.status, 401);
    assert_string_equal(h_header(&r, "WWW-Authenticate"), "Bearer error=\"invalid_token\"");
    h_resp_free(&r);
    free(t);
    assert_int_equal(h_mock_count(&env.mock, "/echo/opt"), 0);
}

static void degraded_answers_are_not_shared_across_subs(void **state)
{
    (void)state;
    char *alice = token(rsa, "RS256", "r1", "alice"), *bob = token(rsa, "RS256", "r1", "bob");
    struct h_resp r;
    get("/api/dg/7", alice, NULL, &r); /* stored under alice's key */
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(h_mock_mode(&env.mock, "prefix=/echo/dg&status=500"), 0);
    get("/api/dg/7", bob, NULL, &r); /* same URL, another user: nothing to serve */
    assert_int_equal(r.status, 502);
    h_resp_free(&r);
    get("/api/dg/7", alice, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(h_header(&r, "X-Gateway-Degraded"));
    assert_string_equal(echoed(&r, "x-user-id"), "alice");
    h_resp_free(&r);
    assert_int_equal(h_mock_reset(&env.mock), 0);
    free(alice);
    free(bob);
}

static void sighup_reloads_the_jwks_and_a_bad_one_keeps_the_keys(void **state)
{
    (void)state;
    char *jwks = tk_jwks(rsa_new, "r2", ec, "e1");
    assert_int_equal(write_jwks(jwks), 0);
    free(jwks);
    int before = h_gateway_log_count(&env.gw, "JWKS reloaded");
    assert_int_equal(kill(env.gw.pid, SIGHUP), 0);
    (void)H_POLL_UNTIL(h_gateway_log_count(&env.gw, "JWKS reloaded") != before, WAIT_MS);
    assert_int_equal(h_gateway_log_count(&env.gw, "JWKS reloaded"), before + 1);
    char *t = token(rsa_new, "RS256", "r2", "carol"), *old = token(rsa, "RS256", "r1", "carol");
    struct h_resp r;
    get("/api/req/1", t, NULL, &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    get("/api/req/1", old, NULL, &r); /* r1 was rotated out */
    assert_int_equal(r.status, 401);
    h_resp_free(&r);

    assert_int_equal(write_jwks("{\"keys\": [ broken"), 0);
    assert_int_equal(kill(env.gw.pid, SIGHUP), 0);
    assert_true(h_gateway_log_wait(&env.gw, "keeping the keys in use", WAIT_MS));
    get("/api/req/1", t, NULL, &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    free(t);
    free(old);
}

static void check_reports_an_unusable_jwks(void **state)
{
    (void)state;
    char bad[256], conf_path[256];
    assert_int_equal(h_write_temp(bad, sizeof bad, "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\"}]}"),
                     0);
    char *conf = h_replace(conf_tmpl, "${JWKS}", bad);
    char *text = h_subst(conf, "http://127.0.0.1:1", 8080);
    assert_int_equal(h_write_temp(conf_path, sizeof conf_path, text), 0);
    char *argv[] = {(char *)h_gateway_bin(), "--check", "-c", conf_path, NULL};
    char *out = NULL;
    int rc = h_run(argv, WAIT_MS, &out);
    assert_int_equal(rc, 1);
    assert_non_null(out);
    assert_non_null(strstr(out, "auth.jwks_path: "));
    assert_non_null(strstr(out, "no usable key"));
    free(out);
    free(text);
    free(conf);
    unlink(bad);
    unlink(conf_path);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_tokens_reach_the_backend_with_claim_headers),
        cmocka_unit_test(rejections_are_401_before_any_backend_call),
        cmocka_unit_test(optional_auth_goes_on_without_claims),
        cmocka_unit_test(degraded_answers_are_not_shared_across_subs),
        cmocka_unit_test(sighup_reloads_the_jwks_and_a_bad_one_keeps_the_keys),
        cmocka_unit_test(check_reports_an_unusable_jwks),
    };
    if (keys_make()) return 1;
    char *conf = h_replace(conf_tmpl, "${JWKS}", jwks_path);
    int rc = H_GROUP_RUN("integration/auth", tests, &env, conf);
    free(conf);
    keys_free();
    return rc;
}
