/*
 * test_auth: gateway/auth.c on a request built by hand: the 401s and their
 * WWW-Authenticate values, claim headers (strings, numbers, refused control
 * characters), the client headers they hide, and the per-thread cache of
 * verified tokens (a repeated token is a hit; a key-set reload or another
 * config makes it verify again; a rejected token is never cached). Prints
 * the cost of a cached check next to a full one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "../common/jwt_testkeys.h"
#include "core/loop.h"
#include "gateway/auth.h"
#include "gateway/fanout.h"
#include "gateway/jwt.h"

static EVP_PKEY *rsa, *ec;
static avalue_t jwks;
static struct config *cfg;

static struct config *make_config(void)
{
    static const char text[] =
        "{\"auth\":{\"jwks_path\":\"unused\",\"issuer\":\"idp\",\"audience\":[\"api\"],"
        "\"claims_to_headers\":{\"sub\":\"X-User-Id\",\"n\":\"X-N\",\"f\":\"X-F\"}},"
        "\"endpoints\":[{\"name\":\"e\",\"path\":\"/a\",\"auth\":\"required\","
        "\"backends\":[{\"name\":\"b\",\"url\":\"http://h/\"}]},"
        "{\"name\":\"o\",\"path\":\"/o\",\"auth\":\"optional\","
        "\"backends\":[{\"name\":\"b\",\"url\":\"http://h/\"}]}]}";
    struct config_errors errs;
    struct config *c = config_parse(text, strlen(text), &errs);
    config_errors_free(&errs);
    return c;
}

static void store_keys(EVP_PKEY *r, EVP_PKEY *e)
{
    char *j = tk_jwks(r, "r1", e, "e1");
    char err[256];
    av_store(&jwks, jwks_parse(j, strlen(j), err, sizeof err));
    free(j);
}

static void free_keys(void *ks)
{
    jwks_free(ks);
}

static int setup(void **state)
{
    (void)state;
    rsa = tk_rsa(2048);
    ec = tk_ec();
    av_init(&jwks, free_keys);
    store_keys(rsa, ec);
    cfg = make_config();
    return cfg ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    av_destroy(&jwks);
    config_free(cfg);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    return 0;
}

/* A request on endpoint i of c. */
static struct request *req(const struct config *c, size_t i)
{
    struct request *r = calloc(1, sizeof *r);
    r->cfg = c;
    r->ep = &c->endpoints[i];
    strcpy(r->request_id, "rid");
    return r;
}

static void req_free(struct request *r)
{
    buf_free(&r->out);
    buf_free(&r->auth_hdrs);
    free(r);
}

static char *bearer(EVP_PKEY *k, const char *alg, const char *kid, const char *more)
{
    char payload[512];
    snprintf(payload, sizeof payload, "{\"sub\":\"alice\",\"iss\":\"idp\",\"aud\":\"api\",\"exp\":%lld%s}",
             (long long)time(NULL) + 600, more);
    char *t = tk_token(k, alg, kid, payload);
    char *h = malloc(strlen(t) + 16);
    sprintf(h, "Bearer %s", t);
    free(t);
    return h;
}

/* The claim header lines of r joined with '|'. */
static const char *lines(const struct request *r)
{
    static char out[1024];
    const char *h[AUTH_MAX_CLAIM_HDRS];
    size_t n = auth_call_headers(r, h, AUTH_MAX_CLAIM_HDRS);
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        snprintf(out + strlen(out), sizeof out - strlen(out), "%s%s", i ? "|" : "", h[i]);
    return out;
}

static void test_answers_and_claim_headers(void **state)
{
    (void)state;
    struct request *r = req(cfg, 0);
    assert_int_equal(auth_request(r, &jwks, NULL), -EACCES);
    assert_int_equal(r->status, 401);
    assert_string_equal(r->www_auth, "Bearer");
    assert_non_null(strstr(r->out.data, "\"missing bearer token\""));
    req_free(r);

    r = req(cfg, 0);
    assert_int_equal(auth_request(r, &jwks, "Basic dXNlcjpwdw=="), -EACCES); /* another scheme */
    assert_string_equal(r->www_auth, "Bearer");
    req_free(r);

    r = req(cfg, 0);
    assert_int_equal(auth_request(r, &jwks, "Bearer x.y.z"), -EACCES);
    assert_string_equal(r->www_auth, "Bearer error=\"invalid_token\"");
    assert_non_null(strstr(r->out.data, "\"invalid token: malformed token\""));
    assert_non_null(strstr(r->out.data, "\"request_id\":\"rid\""));
    req_free(r);

    r = req(cfg, 1); /* optional: no token is fine, a bad one is not */
    assert_int_equal(auth_request(r, &jwks, NULL), 0);
    assert_int_equal(r->auth_hdrs.len, 0);
    assert_int_equal(auth_request(r, &jwks, "Bearer nope"), -EACCES);
    req_free(r);

    char *h = bearer(ec, "ES256", "e1", ",\"n\":12345678901,\"f\":1.5,\"x\":true");
    r = req(cfg, 0);
    assert_int_equal(auth_request(r, &jwks, h), 0);
    assert_string_equal(lines(r), "X-User-Id: alice|X-N: 12345678901|X-F: 1.5");
    assert_true(auth_hides_header(r, "x-user-id"));
    assert_true(auth_hides_header(r, "X-N"));
    assert_false(auth_hides_header(r, "X-Other"));
    req_free(r);
    free(h);

    /* a claim that would smuggle a header line refuses the token */
    char *bad = bearer(rsa, "RS256", "r1", ",\"n\":\"1\\r\\nX-Admin: 1\"");
    r = req(cfg, 0);
    assert_int_equal(auth_request(r, &jwks, bad), -EACCES);
    req_free(r);
    free(bad);
}

static void test_cache(void **state)
{
    (void)state;
    char *h = bearer(rsa, "RS256", "r1", ",\"n\":7");
    uint64_t hits = auth_cache_hits();
    struct request *r = req(cfg, 0);
    uint64_t t0 = mono_ns();
    assert_int_equal(auth_request(r, &jwks, h), 0);
    uint64_t t1 = mono_ns();
    assert_int_equal(auth_cache_hits(), hits); /* first time: verified */
    req_free(r);
    r = req(cfg, 0);
    uint64_t t2 = mono_ns();
    assert_int_equal(auth_request(r, &jwks, h), 0);
    uint64_t t3 = mono_ns();
    assert_int_equal(auth_cache_hits(), hits + 1);
    assert_string_equal(lines(r), "X-User-Id: alice|X-N: 7"); /* the same headers */
    print_message("auth_request RS256: %.1f us verified, %.1f us from the cache\n",
                  (double)(t1 - t0) / 1e3, (double)(t3 - t2) / 1e3);
    req_free(r);

    /* another config (a reload): verified again */
    struct config *c2 = make_config();
    r = req(c2, 0);
    assert_int_equal(auth_request(r, &jwks, h), 0);
    assert_int_equal(auth_cache_hits(), hits + 1);
    req_free(r);
    config_free(c2);

    /* the keys rotate and r1 is gone: the cached acceptance does not count */
    EVP_PKEY *other = tk_rsa(2048);
    store_keys(other, ec);
    r = req(cfg, 0);
    assert_int_equal(auth_request(r, &jwks, h), -EACCES);
    assert_int_equal(auth_cache_hits(), hits + 1);
    req_free(r);
    r = req(cfg, 0); /* and a rejection is not cached either */
    assert_int_equal(auth_request(r, &jwks, h), -EACCES);
    req_free(r);
    store_keys(rsa, ec);
    EVP_PKEY_free(other);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answers_and_claim_headers),
        cmocka_unit_test(test_cache),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
