/*
 * test_jwt: gateway/jwt.c with keys generated at test time: JWKS loading
 * (RSA, EC, the limits) and every acceptance and rejection rule of
 * jwt_verify. Also prints the cost of one verification per algorithm.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "../common/jwt_testkeys.h"
#include "core/loop.h"
#include "gateway/jwt.h"

static EVP_PKEY *rsa, *ec, *rsa2;
static struct jwks *ks;
static int64_t now;

static const struct jwt_policy any = {.algorithms = JWT_ALG_RS256 | JWT_ALG_ES256, .leeway_s = 30};

static int setup(void **state)
{
    (void)state;
    rsa = tk_rsa(2048);
    rsa2 = tk_rsa(2048);
    ec = tk_ec();
    char *j = tk_jwks(rsa, "r1", ec, "e1");
    char err[256] = "";
    ks = jwks_parse(j, strlen(j), err, sizeof err);
    if (!ks) print_message("jwks: %s\n", err);
    free(j);
    now = (int64_t)time(NULL);
    return rsa && rsa2 && ec && ks ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    jwks_free(ks);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(rsa2);
    EVP_PKEY_free(ec);
    return 0;
}

/* Verifies a token made of (key, alg, kid, payload) under p. */
static int verify_with(const struct jwt_policy *p, EVP_PKEY *k, const char *alg, const char *kid,
                       const char *payload)
{
    char *t = tk_token(k, alg, kid, payload);
    cJSON *claims = NULL;
    int rc = jwt_verify(ks, p, t, strlen(t), now, &claims);
    if (rc == 0) assert_non_null(claims);
    cJSON_Delete(claims);
    free(t);
    return rc;
}

static int verify(EVP_PKEY *k, const char *alg, const char *kid, const char *payload)
{
    return verify_with(&any, k, alg, kid, payload);
}

/* A payload with exp = now + dt and more members. */
static const char *exp_in(long dt, const char *more)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "{\"sub\":\"u1\",\"exp\":%lld%s}", (long long)(now + dt), more);
    return buf;
}

static void test_valid_tokens(void **state)
{
    (void)state;
    assert_int_equal(jwks_size(ks), 2);
    assert_int_equal(verify(rsa, "RS256", "r1", exp_in(60, "")), 0);
    assert_int_equal(verify(ec, "ES256", "e1", exp_in(60, "")), 0);
    /* no kid: the first key of the algorithm's type */
    assert_int_equal(verify(rsa, "RS256", NULL, exp_in(60, "")), 0);
    assert_int_equal(verify(ec, "ES256", NULL, exp_in(60, "")), 0);
    /* the claims come back */
    char *t = tk_token(rsa, "RS256", "r1", exp_in(60, ",\"n\":42"));
    cJSON *c = NULL;
    assert_int_equal(jwt_verify(ks, &any, t, strlen(t), now, &c), 0);
    assert_string_equal(cJSON_GetObjectItem(c, "sub")->valuestring, "u1");
    assert_int_equal(cJSON_GetObjectItem(c, "n")->valueint, 42);
    cJSON_Delete(c);
    free(t);
}

static void test_algorithm_and_key_rejections(void **state)
{
    (void)state;
    assert_int_equal(verify(NULL, "none", "r1", exp_in(60, "")), JWT_EALG_NONE);
    assert_int_equal(verify(NULL, "HS256", "r1", exp_in(60, "")), JWT_EALG); /* HMAC vs RSA key */
    assert_int_equal(verify(rsa, "RS512", "r1", exp_in(60, "")), JWT_EALG);
    struct jwt_policy rs_only = any;
    rs_only.algorithms = JWT_ALG_RS256;
    assert_int_equal(verify_with(&rs_only, ec, "ES256", "e1", exp_in(60, "")), JWT_EALG);
    assert_int_equal(verify(rsa, "RS256", "nope", exp_in(60, "")), JWT_EKID);
    /* a kid naming the EC key on an RS256 token */
    assert_int_equal(verify(rsa, "RS256", "e1", exp_in(60, "")), JWT_ENOKEY);
    /* signed by another key */
    assert_int_equal(verify(rsa2, "RS256", "r1", exp_in(60, "")), JWT_ESIG);
    assert_int_equal(verify(ec, "ES256", "r1", exp_in(60, "")), JWT_ENOKEY);
    /* no key set at all */
    char *t = tk_token(rsa, "RS256", "r1", exp_in(60, ""));
    assert_int_equal(jwt_verify(NULL, &any, t, strlen(t), now, NULL), JWT_ENOKEY);
    /* a payload changed after signing */
    char *d1 = strchr(t, '.');
    d1[3] = d1[3] == 'A' ? 'B' : 'A';
    assert_int_equal(jwt_verify(ks, &any, t, strlen(t), now, NULL), JWT_ESIG);
    free(t);
    /* an ES256 signature that is not 64 bytes */
    t = tk_token(ec, "ES256", "e1", exp_in(60, ""));
    size_t n = strlen(t);
    t[n - 4] = '\0';
    assert_int_equal(jwt_verify(ks, &any, t, strlen(t), now, NULL), JWT_ESIG);
    free(t);
}

static void test_claim_rejections(void **state)
{
    (void)state;
    assert_int_equal(verify(rsa, "RS256", "r1", exp_in(-100, "")), JWT_EEXP);
    assert_int_equal(verify(rsa, "RS256", "r1", exp_in(-10, "")), 0); /* within the leeway */
    assert_int_equal(verify(rsa, "RS256", "r1", "{\"sub\":\"u\"}"), JWT_EEXP); /* no exp */
    assert_int_equal(verify(rsa, "RS256", "r1", "{\"exp\":\"soon\"}"), JWT_EMALFORMED);
    char more[128];
    snprintf(more, sizeof more, ",\"nbf\":%lld", (long long)now + 100);
    assert_int_equal(verify(rsa, "RS256", "r1", exp_in(600, more)), JWT_ENBF);
    snprintf(more, sizeof more, ",\"nbf\":%lld", (long long)now + 10);
    assert_int_equal(verify(rsa, "RS256", "r1", exp_in(600, more)), 0);

    const char *auds[] = {"api", "web"};
    struct jwt_policy p = any;
    p.issuer = "https://idp";
    p.audience = auds;
    p.n_audience = 2;
    assert_int_equal(verify_with(&p, rsa, "RS256", "r1",
                                 exp_in(60, ",\"iss\":\"https://idp\",\"aud\":\"web\"")),
                     0);
    assert_int_equal(verify_with(&p, ec, "ES256", "e1",
                                 exp_in(60, ",\"iss\":\"https://idp\",\"aud\":[\"x\",\"api\"]")),
                     0);
    assert_int_equal(verify_with(&p, rsa, "RS256", "r1",
                                 exp_in(60, ",\"iss\":\"https://evil\",\"aud\":\"web\"")),
                     JWT_EISS);
    assert_int_equal(verify_with(&p, rsa, "RS256", "r1", exp_in(60, ",\"aud\":\"web\"")),
                     JWT_EISS);
    assert_int_equal(verify_with(&p, rsa, "RS256", "r1",
                                 exp_in(60, ",\"iss\":\"https://idp\",\"aud\":[\"x\",\"y\"]")),
                     JWT_EAUD);
    assert_int_equal(verify_with(&p, rsa, "RS256", "r1", exp_in(60, ",\"iss\":\"https://idp\"")),
                     JWT_EAUD);
}

static void test_malformed_tokens(void **state)
{
    (void)state;
    const char *bad[] = {"", "a", "a.b", "a.b.c.d", "!!.e30.sig", "e30.e30.", "bm90IGpzb24.e30.YQ"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = jwt_verify(ks, &any, bad[i], strlen(bad[i]), now, NULL);
        assert_true(rc == JWT_EMALFORMED || rc == JWT_ESIG || rc == JWT_EALG);
    }
    /* 10,000 segments and a 100 KiB token: refused before any crypto */
    char *many = malloc(20001);
    for (int i = 0; i < 10000; i++)
        many[2 * i] = 'a', many[2 * i + 1] = '.';
    many[20000] = '\0';
    assert_int_equal(jwt_verify(ks, &any, many, 20000, now, NULL), JWT_EMALFORMED);
    free(many);
    char *big = malloc(100 * 1024);
    memset(big, 'a', 100 * 1024);
    assert_int_equal(jwt_verify(ks, &any, big, 100 * 1024, now, NULL), JWT_EMALFORMED);
    free(big);
    /* a header with crit, a header that is an array */
    char *h = tk_b64url_str("{\"alg\":\"RS256\",\"crit\":[\"x\"],\"x\":1}");
    char tok[256];
    snprintf(tok, sizeof tok, "%s.e30.YWJj", h);
    assert_int_equal(jwt_verify(ks, &any, tok, strlen(tok), now, NULL), JWT_EMALFORMED);
    free(h);
    h = tk_b64url_str("[1]");
    snprintf(tok, sizeof tok, "%s.e30.YWJj", h);
    assert_int_equal(jwt_verify(ks, &any, tok, strlen(tok), now, NULL), JWT_EMALFORMED);
    free(h);
}

static void expect_jwks_error(const char *json, const char *text)
{
    char err[256] = "";
    struct jwks *k = jwks_parse(json, strlen(json), err, sizeof err);
    if (k || !strstr(err, text)) print_message("expected \"%s\", got \"%s\"\n", text, err);
    assert_null(k);
    assert_non_null(strstr(err, text));
}

static void test_jwks_errors(void **state)
{
    (void)state;
    expect_jwks_error("{\"keys\":", "invalid JSON");
    expect_jwks_error("[]", "\"keys\" array");
    expect_jwks_error("{\"keys\":[]}", "no usable key");
    expect_jwks_error("{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}", "no usable key");
    expect_jwks_error("{\"keys\":[{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
                      "no usable key");
    expect_jwks_error("{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\"}]}", "keys[0]: \"n\" missing");
    expect_jwks_error("{\"keys\":[{\"kty\":\"RSA\",\"n\":\"A*B\",\"e\":\"AQAB\"}]}",
                      "keys[0]: \"n\" is not base64url");
    expect_jwks_error("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"}]}",
                      "crv other than P-256");
    /* a point that is not on the curve */
    unsigned char xy[32];
    memset(xy, 7, sizeof xy);
    char *x = tk_b64url(xy, 32);
    char doc[512];
    snprintf(doc, sizeof doc, "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}]}",
             x, x);
    expect_jwks_error(doc, "keys[0]: not a usable P-256 public key");
    free(x);
    /* a 1024-bit and a 16,384-bit modulus: refused by size, in no time */
    unsigned char *n = malloc(2048);
    memset(n, 0xff, 2048);
    char *b = tk_b64url(n, 128);
    char *big = malloc(8192);
    snprintf(big, 8192, "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AQAB\"}]}", b);
    expect_jwks_error(big, "RSA modulus of 1024 bits");
    free(b);
    b = tk_b64url(n, 2048);
    snprintf(big, 8192, "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AQAB\"}]}", b);
    expect_jwks_error(big, "keys[0]: \"n\" is not base64url (or too long)");
    free(b);
    free(big);
    free(n);
    /* a usable key next to skipped ones loads */
    char *one = tk_jwk(ec, "e9");
    char *set = malloc(strlen(one) + 128);
    sprintf(set, "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\"},%s]}", one);
    char err[256];
    struct jwks *k = jwks_parse(set, strlen(set), err, sizeof err);
    assert_non_null(k);
    assert_int_equal(jwks_size(k), 1);
    jwks_free(k);
    free(set);
    free(one);
    k = jwks_load("/nonexistent/jwks.json", err, sizeof err);
    assert_null(k);
    assert_non_null(strstr(err, "No such file"));
}

static void test_b64url(void **state)
{
    (void)state;
    unsigned char out[16];
    assert_int_equal(jwt_b64url_decode("", 0, out, sizeof out), 0);
    assert_int_equal(jwt_b64url_decode("YQ", 2, out, sizeof out), 1);
    assert_int_equal(out[0], 'a');
    assert_int_equal(jwt_b64url_decode("YWI", 3, out, sizeof out), 2);
    assert_int_equal(jwt_b64url_decode("YWJj", 4, out, sizeof out), 3);
    assert_int_equal(jwt_b64url_decode("-_8", 3, out, sizeof out), 2);
    assert_int_equal(jwt_b64url_decode("YWJj=", 5, out, sizeof out), -1); /* no padding */
    assert_int_equal(jwt_b64url_decode("Y", 1, out, sizeof out), -1);
    assert_int_equal(jwt_b64url_decode("YR", 2, out, sizeof out), -1); /* stray low bits */
    assert_int_equal(jwt_b64url_decode("YWJj", 4, out, 2), -1);         /* no room */
}

/* Not a pass/fail test: the cost of one verification, for the report. */
static void test_verify_cost(void **state)
{
    (void)state;
    const char *algs[] = {"RS256", "ES256"};
    EVP_PKEY *keys[] = {rsa, ec};
    for (int a = 0; a < 2; a++) {
        char *t = tk_token(keys[a], algs[a], a ? "e1" : "r1", exp_in(600, ",\"aud\":\"x\""));
        enum { N = 300 };
        uint64_t t0 = mono_ns();
        for (int i = 0; i < N; i++)
            assert_int_equal(jwt_verify(ks, &any, t, strlen(t), now, NULL), 0);
        print_message("jwt_verify %s: %.1f us per token\n", algs[a],
                      (double)(mono_ns() - t0) / N / 1e3);
        free(t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_tokens),
        cmocka_unit_test(test_algorithm_and_key_rejections),
        cmocka_unit_test(test_claim_rejections),
        cmocka_unit_test(test_malformed_tokens),
        cmocka_unit_test(test_jwks_errors),
        cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_verify_cost),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
