#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include <cmocka.h>

#include "gateway/router.h"

/* Builds endpoints by hand (no config.c): the pattern is split at '/' after
 * the leading one, "{name}" segments become params. */
#define MAX_EP 16
static struct endpoint_conf eps[MAX_EP];
static struct route_seg seg_store[MAX_EP][40];
static const char *param_store[MAX_EP][40];
static struct config cfg;

static void add_ep(const char *method, const char *path)
{
    size_t i = cfg.n_endpoints++;
    assert_true(i < MAX_EP);
    struct endpoint_conf *ep = &eps[i];
    memset(ep, 0, sizeof *ep);
    ep->name = path;
    ep->method = method;
    ep->path = path;
    ep->segs = seg_store[i];
    ep->params = param_store[i];
    const char *p = path + 1;
    if (strcmp(path, "/") == 0) return; /* no segments */
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        struct route_seg *s = &ep->segs[ep->n_segs++];
        if (len >= 2 && p[0] == '{' && p[len - 1] == '}') {
            s->literal = NULL;
            s->param = (int)ep->n_params;
            ep->params[ep->n_params++] = strndup(p + 1, len - 2);
        } else {
            s->literal = p;
            s->literal_len = len;
        }
        if (!slash) break;
        p = slash + 1;
    }
}

static int setup(void **state)
{
    (void)state;
    memset(&cfg, 0, sizeof cfg);
    cfg.endpoints = eps;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < cfg.n_endpoints; i++)
        for (size_t k = 0; k < eps[i].n_params; k++)
            free((char *)eps[i].params[k]);
    return 0;
}

static int match(const char *method, const char *path, struct route_match *m)
{
    return router_match(&cfg, method, path, strlen(path), m);
}

static void assert_param(const struct route_match *m, size_t i, const char *want)
{
    assert_true(i < m->n_params);
    assert_int_equal(m->params[i].len, strlen(want));
    assert_memory_equal(m->params[i].p, want, strlen(want));
}

static void test_literal(void **state)
{
    (void)state;
    add_ep("GET", "/healthy/check");
    add_ep("GET", "/");
    struct route_match m;
    assert_int_equal(match("GET", "/healthy/check", &m), 200);
    assert_ptr_equal(m.ep, &eps[0]);
    assert_int_equal(m.n_params, 0);
    assert_int_equal(match("GET", "/", &m), 200);
    assert_ptr_equal(m.ep, &eps[1]);
    assert_int_equal(match("GET", "/healthy", &m), 404);
    assert_null(m.ep);
    assert_int_equal(match("GET", "/healthy/check/more", &m), 404);
    assert_int_equal(match("GET", "/healthy/checks", &m), 404);
    assert_int_equal(match("GET", "/Healthy/check", &m), 404);
    assert_int_equal(match("GET", "", &m), 404);
    assert_int_equal(match("GET", "healthy/check", &m), 404);
    /* Literals compare after decoding: %63 is 'c'. */
    assert_int_equal(match("GET", "/healthy/%63heck", &m), 200);
    assert_int_equal(match("GET", "/healthy/%6", &m), 404);
    assert_int_equal(match("GET", "/healthy/che%2Fck", &m), 404);
}

static void test_params(void **state)
{
    (void)state;
    add_ep("GET", "/api/users/{id}/orders/{oid}");
    struct route_match m;
    assert_int_equal(match("GET", "/api/users/42/orders/x-9", &m), 200);
    assert_ptr_equal(m.ep, &eps[0]);
    assert_int_equal(m.n_params, 2);
    assert_param(&m, 0, "42");
    assert_param(&m, 1, "x-9");
    /* Params are raw, still-encoded slices; %2F stays inside its param. */
    assert_int_equal(match("GET", "/api/users/a%2Fb/orders/%3F%23", &m), 200);
    assert_param(&m, 0, "a%2Fb");
    assert_param(&m, 1, "%3F%23");
    assert_int_equal(match("GET", "/api/users/a/b/orders/1", &m), 404);
    /* An empty segment never matches a param. */
    assert_int_equal(match("GET", "/api/users//orders/1", &m), 404);
    assert_int_equal(match("GET", "/api/users/1/orders/", &m), 404);
}

static void test_trailing_slash(void **state)
{
    (void)state;
    add_ep("GET", "/a/b");
    add_ep("GET", "/c/{x}");
    struct route_match m;
    assert_int_equal(match("GET", "/a/b", &m), 200);
    assert_int_equal(match("GET", "/a/b/", &m), 404);
    assert_int_equal(match("GET", "/a//b", &m), 404);
    assert_int_equal(match("GET", "//a/b", &m), 404);
    assert_int_equal(match("GET", "/c/1/", &m), 404);
    assert_int_equal(match("GET", "/c/", &m), 404);
}

static void test_method(void **state)
{
    (void)state;
    add_ep("GET", "/items/{id}");
    add_ep("POST", "/items/{id}");
    add_ep("DELETE", "/items/{id}");
    add_ep("GET", "/items/{x}"); /* same shape, same method: config order wins */
    struct route_match m;
    assert_int_equal(match("POST", "/items/1", &m), 200);
    assert_ptr_equal(m.ep, &eps[1]);
    assert_int_equal(match("GET", "/items/1", &m), 200);
    assert_ptr_equal(m.ep, &eps[0]);
    /* Exact match only: no HEAD for GET, methods are case-sensitive. */
    assert_int_equal(match("HEAD", "/items/1", &m), 405);
    assert_int_equal(match("get", "/items/1", &m), 405);
}

static void test_405_allow(void **state)
{
    (void)state;
    add_ep("POST", "/x/{id}");
    add_ep("GET", "/x/{id}");
    add_ep("POST", "/x/{other}"); /* deduplicated */
    add_ep("PUT", "/x/new");      /* a different path for /x/1 */
    add_ep("DELETE", "/y");
    struct route_match m;
    assert_int_equal(match("PATCH", "/x/1", &m), 405);
    assert_null(m.ep);
    assert_string_equal(m.allow, "POST, GET");
    assert_int_equal(match("PATCH", "/x/new", &m), 405);
    assert_string_equal(m.allow, "POST, GET, PUT");
    assert_int_equal(match("GET", "/y", &m), 405);
    assert_string_equal(m.allow, "DELETE");
    assert_int_equal(match("GET", "/z", &m), 404);
    assert_string_equal(m.allow, "");
}

static void test_specificity(void **state)
{
    (void)state;
    add_ep("GET", "/a/{id}");
    add_ep("GET", "/a/new");
    add_ep("GET", "/{p}/b/{q}");
    add_ep("GET", "/{p}/{q}/c");
    struct route_match m;
    assert_int_equal(match("GET", "/a/new", &m), 200);
    assert_ptr_equal(m.ep, &eps[1]);
    assert_int_equal(match("GET", "/a/old", &m), 200);
    assert_ptr_equal(m.ep, &eps[0]);
    assert_param(&m, 0, "old");
    /* Both match; the first differing segment (second) decides. */
    assert_int_equal(match("GET", "/z/b/c", &m), 200);
    assert_ptr_equal(m.ep, &eps[2]);
    assert_param(&m, 0, "z");
    assert_param(&m, 1, "c");
}

static void test_max_params(void **state)
{
    (void)state;
    char pat[512], path[512];
    size_t pn = 0, qn = 0;
    for (int i = 0; i < ROUTE_MAX_PARAMS; i++) {
        pn += (size_t)sprintf(pat + pn, "/{p%d}", i);
        qn += (size_t)sprintf(path + qn, "/v%d", i);
    }
    add_ep("GET", pat);
    struct route_match m;
    assert_int_equal(match("GET", path, &m), 200);
    assert_int_equal(m.n_params, ROUTE_MAX_PARAMS);
    assert_param(&m, ROUTE_MAX_PARAMS - 1, "v15");

    /* One param too many: the endpoint never matches. */
    sprintf(pat + pn, "/{p%d}", ROUTE_MAX_PARAMS);
    sprintf(path + qn, "/v%d", ROUTE_MAX_PARAMS);
    add_ep("GET", pat);
    assert_int_equal(eps[1].n_params, ROUTE_MAX_PARAMS + 1);
    assert_int_equal(match("GET", path, &m), 404);

    /* A path with more than ROUTE_MAX_SEGS segments matches nothing. */
    qn = 0;
    for (int i = 0; i <= ROUTE_MAX_SEGS; i++)
        qn += (size_t)sprintf(path + qn, "/s");
    assert_int_equal(match("GET", path, &m), 404);
}

static void test_pct_decode(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(router_pct_decode("a%2Fb%3f+c", 10, out, sizeof out), 6);
    assert_memory_equal(out, "a/b?+c", 6);
    assert_int_equal(router_pct_decode("%e2%82%AC", 9, out, sizeof out), 3);
    assert_memory_equal(out, "\xe2\x82\xac", 3);
    assert_int_equal(router_pct_decode("", 0, out, sizeof out), 0);
    assert_int_equal(router_pct_decode("%", 1, out, sizeof out), -EINVAL);
    assert_int_equal(router_pct_decode("%2", 2, out, sizeof out), -EINVAL);
    assert_int_equal(router_pct_decode("%zz", 3, out, sizeof out), -EINVAL);
    assert_int_equal(router_pct_decode("%2G", 3, out, sizeof out), -EINVAL);
    assert_int_equal(router_pct_decode("a%00", 4, out, sizeof out), -EINVAL);
    assert_int_equal(router_pct_decode("a\0b", 3, out, sizeof out), -EINVAL);
    assert_int_equal(router_pct_decode("abcd", 4, out, 3), -ENOSPC);
    assert_int_equal(router_pct_decode("%41%42", 6, out, 2), 2);
    assert_int_equal(router_pct_decode("%41%42", 6, out, 1), -ENOSPC);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_literal),   T(test_params),      T(test_trailing_slash), T(test_method),
        T(test_405_allow), T(test_specificity), T(test_max_params),     T(test_pct_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
