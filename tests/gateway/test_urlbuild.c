#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include <cmocka.h>

#include "gateway/urlbuild.h"

/* Templates are split by hand here (no config.c): "{name}" becomes a param
 * part whose index is the name's position in the endpoint's params. */
static struct url_part parts[16];
static struct backend_conf be;
static struct endpoint_conf ep;
static const char *ep_params[4] = {"id", "oid"};
static struct route_match rm;

static void set_template(const char *url)
{
    memset(&be, 0, sizeof be);
    be.name = "b";
    be.url = url;
    be.parts = parts;
    const char *p = url;
    while (*p) {
        struct url_part *part = &parts[be.n_parts++];
        const char *open = strchr(p, '{');
        if (open == p) {
            const char *close = strchr(p, '}');
            assert_non_null(close);
            part->literal = NULL;
            part->param = -1;
            for (int i = 0; i < 2; i++)
                if (strlen(ep_params[i]) == (size_t)(close - p - 1) &&
                    memcmp(ep_params[i], p + 1, (size_t)(close - p - 1)) == 0)
                    part->param = i;
            assert_true(part->param >= 0);
            p = close + 1;
        } else {
            part->literal = p;
            part->literal_len = open ? (size_t)(open - p) : strlen(p);
            p += part->literal_len;
        }
    }
}

static void set_params(const char *id, const char *oid)
{
    memset(&rm, 0, sizeof rm);
    rm.ep = &ep;
    rm.n_params = 2;
    rm.params[0].p = id;
    rm.params[0].len = strlen(id);
    rm.params[1].p = oid;
    rm.params[1].len = strlen(oid);
}

static int setup(void **state)
{
    (void)state;
    memset(&ep, 0, sizeof ep);
    ep.params = ep_params;
    ep.n_params = 2;
    set_params("1", "2");
    return 0;
}

/* Builds the URL and compares; also checks the split form agrees. */
static void expect_url(const char *query, const char *want)
{
    buf_t b;
    buf_init(&b, NULL);
    size_t qn = query ? strlen(query) : 0;
    assert_int_equal(urlbuild(&b, &ep, &be, &rm, query, qn), 0);
    if (strcmp(b.data, want) != 0) fail_msg("got %s, want %s", b.data, want);
    assert_int_equal(b.len, strlen(want));

    char origin[128];
    int on = urlbuild_origin(&be, origin, sizeof origin);
    assert_true(on > 0);
    buf_t path;
    buf_init(&path, NULL);
    assert_int_equal(urlbuild_path(&path, &ep, &be, &rm, query, qn), 0);
    assert_true(path.len >= 1 && path.data[0] == '/');
    assert_int_equal((size_t)on + path.len, b.len);
    assert_memory_equal(b.data, origin, (size_t)on);
    assert_memory_equal(b.data + on, path.data, path.len);
    buf_free(&path);
    buf_free(&b);
}

static void expect_error(const char *query, int err)
{
    buf_t b;
    buf_init(&b, NULL);
    assert_int_equal(buf_puts(&b, "keep"), 0);
    size_t qn = query ? strlen(query) : 0;
    assert_int_equal(urlbuild(&b, &ep, &be, &rm, query, qn), err);
    assert_string_equal(b.data, "keep"); /* unchanged on failure */
    assert_int_equal(b.len, 4);
    assert_int_equal(urlbuild_path(&b, &ep, &be, &rm, query, qn), err);
    assert_string_equal(b.data, "keep");
    buf_free(&b);
}

static void test_plain(void **state)
{
    (void)state;
    set_template("http://users.local:8081/users/{id}/orders/{oid}");
    set_params("42", "x-9_a.b~c");
    expect_url(NULL, "http://users.local:8081/users/42/orders/x-9_a.b~c");
    set_template("http://h/{id}");
    expect_url("", "http://h/42");
}

static void test_encoding(void **state)
{
    (void)state;
    set_template("http://h/u/{id}");
    set_params("a%2Fb", "");
    expect_url(NULL, "http://h/u/a%2Fb"); /* stays one segment */
    set_params("a/b", "");                /* cannot come from the router, still safe */
    expect_url(NULL, "http://h/u/a%2Fb");
    set_params("%3F%23", "");
    expect_url(NULL, "http://h/u/%3F%23");
    set_params("a?b#c", "");
    expect_url(NULL, "http://h/u/a%3Fb%23c");
    set_params("a%20b+c", "");
    expect_url(NULL, "http://h/u/a%20b%2Bc"); /* '+' is literal in a path */
    set_params("100%25", "");
    expect_url(NULL, "http://h/u/100%25");
    set_params("%25252F", ""); /* decoded once only */
    expect_url(NULL, "http://h/u/%25252F");
    set_params("%C3%A9%e2%82%ac", ""); /* é € */
    expect_url(NULL, "http://h/u/%C3%A9%E2%82%AC");
    set_params("\xc3\xa9", ""); /* raw UTF-8 bytes */
    expect_url(NULL, "http://h/u/%C3%A9");
    set_params("a;b=c,d&e", "");
    expect_url(NULL, "http://h/u/a%3Bb%3Dc%2Cd%26e");
    /* Dot segments cannot climb out. */
    set_params("..", "");
    expect_url(NULL, "http://h/u/%2E%2E");
    set_params("%2E%2e", "");
    expect_url(NULL, "http://h/u/%2E%2E");
    set_params(".", "");
    expect_url(NULL, "http://h/u/%2E");
    set_params("...", "");
    expect_url(NULL, "http://h/u/...");
}

static void test_malformed(void **state)
{
    (void)state;
    set_template("http://h/u/{id}");
    set_params("%", "");
    expect_error(NULL, -EILSEQ);
    set_params("ab%2", "");
    expect_error(NULL, -EILSEQ);
    set_params("%zz", "");
    expect_error(NULL, -EILSEQ);
    set_params("a%00", "");
    expect_error(NULL, -EILSEQ);
    /* A param index past the match: the template's fault, not the client's. */
    set_params("1", "2");
    rm.n_params = 0;
    expect_error(NULL, -EINVAL);
}

static void test_query(void **state)
{
    (void)state;
    const char *fq[] = {"lang", "page", "q w"};
    ep.forward_query = fq;
    ep.n_forward_query = 3;
    set_template("http://h/u/{id}");
    set_params("7", "");
    expect_url("lang=en&x=1", "http://h/u/7?lang=en");
    /* Config order, first occurrence, other names dropped. */
    expect_url("page=2&lang=de&lang=fr&secret=1", "http://h/u/7?lang=de&page=2");
    expect_url("x=1", "http://h/u/7");
    expect_url("langx=1&xlang=2", "http://h/u/7");
    /* Names compare after decoding; '+' is a space in a query. */
    expect_url("l%61ng=en&q+w=1", "http://h/u/7?lang=en&q%20w=1");
    /* Values re-encoded strictly: no '&', '#' or '?' can slip through. */
    expect_url("lang=a%26page%3D9", "http://h/u/7?lang=a%26page%3D9");
    expect_url("lang=a+b%2Bc", "http://h/u/7?lang=a%20b%2Bc");
    expect_url("lang=%C3%A9/?", "http://h/u/7?lang=%C3%A9%2F%3F");
    expect_url("lang=&page", "http://h/u/7?lang=&page=");
    /* A malformed name is simply not a match; a malformed value is a 400. */
    expect_url("la%ng=1", "http://h/u/7");
    expect_error("lang=%G1", -EILSEQ);
    expect_error("lang=%00", -EILSEQ);
    expect_error("lang=%zz", -EILSEQ);
    expect_error("lang=a%2", -EILSEQ);
    /* The malformed value of a name we do not forward is ignored. */
    expect_url("x=%G1&lang=en", "http://h/u/7?lang=en");
}

static void test_template_query(void **state)
{
    (void)state;
    const char *fq[] = {"lang"};
    ep.forward_query = fq;
    ep.n_forward_query = 1;
    set_template("http://h/search?v=1");
    expect_url("lang=en", "http://h/search?v=1&lang=en");
    expect_url(NULL, "http://h/search?v=1");
    set_template("http://h/search?");
    expect_url("lang=en", "http://h/search?lang=en");
    set_template("http://h/s?id={id}&x=1");
    set_params("a b&c", "");
    expect_url("lang=en", "http://h/s?id=a%20b%26c&x=1&lang=en");
    set_template("http://h:9");
    expect_url("lang=en", "http://h:9/?lang=en");
    set_template("http://h?x=1");
    expect_url(NULL, "http://h/?x=1");
}

static void test_origin(void **state)
{
    (void)state;
    char out[64];
    set_template("https://users.local:8443/users/{id}");
    assert_int_equal(urlbuild_origin(&be, out, sizeof out), 24);
    assert_string_equal(out, "https://users.local:8443");
    assert_int_equal(urlbuild_origin(&be, out, 24), -ENOSPC);
    assert_int_equal(urlbuild_origin(&be, out, 25), 24);
    set_template("http://{id}/x");
    assert_int_equal(urlbuild_origin(&be, out, sizeof out), -EINVAL);
    expect_error(NULL, -EINVAL);
    set_template("http://a{id}/x");
    assert_int_equal(urlbuild_origin(&be, out, sizeof out), -EINVAL);
    set_template("users.local/x");
    assert_int_equal(urlbuild_origin(&be, out, sizeof out), -EINVAL);
    set_template("http:///x");
    assert_int_equal(urlbuild_origin(&be, out, sizeof out), -EINVAL);
}

static void test_encode(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, NULL);
    assert_int_equal(urlbuild_encode(&b, "aZ09-._~ /?#%+\x00\xff", 16), 0);
    assert_string_equal(b.data, "aZ09-._~%20%2F%3F%23%25%2B%00%FF");
    buf_free(&b);
}

/* Issue 9 item 7: a too long param or path says so (the client gets a
 * 414), distinct from a malformed encoding (400) and from a template fault. */
static void test_too_long(void **state)
{
    (void)state;
    static char p[4096];
    set_template("http://h/u/{id}");
    memset(p, 'a', URLBUILD_PARAM_MAX);
    p[URLBUILD_PARAM_MAX] = '\0';
    set_params(p, "");
    buf_t b;
    buf_init(&b, NULL);
    assert_int_equal(urlbuild(&b, &ep, &be, &rm, NULL, 0), 0);
    buf_free(&b);
    p[URLBUILD_PARAM_MAX] = 'a';
    p[URLBUILD_PARAM_MAX + 1] = '\0';
    set_params(p, "");
    expect_error(NULL, -E2BIG);
    /* Two params of 1 KiB each that encode to 3 bytes per byte: the path is
     * over 2 KiB. */
    set_template("http://h/{id}/{oid}");
    memset(p, ' ', 700);
    p[700] = '\0';
    set_params(p, p); /* "/" + 2100 + "/" + 2100 */
    expect_error(NULL, -ENAMETOOLONG);
    /* The last byte that still fits: path length URLBUILD_PATH_MAX - 1. */
    set_template("http://h/{id}");
    memset(p, 'b', 1000);
    p[1000] = '\0';
    set_params(p, "");
    buf_init(&b, NULL);
    assert_int_equal(urlbuild_path(&b, &ep, &be, &rm, NULL, 0), 0);
    assert_int_equal(b.len, 1001);
    buf_free(&b);
    static char lit[URLBUILD_PATH_MAX + 32];
    memcpy(lit, "http://h/", 9);
    memset(lit + 9, 'c', URLBUILD_PATH_MAX - 2);
    lit[9 + URLBUILD_PATH_MAX - 2] = '\0'; /* path "/" + 2046 c = 2047 bytes */
    set_template(lit);
    buf_init(&b, NULL);
    assert_int_equal(urlbuild_path(&b, &ep, &be, &rm, "x=1", 3), 0);
    assert_int_equal(b.len, URLBUILD_PATH_MAX - 1);
    buf_free(&b);
    lit[9 + URLBUILD_PATH_MAX - 2] = 'c';
    lit[9 + URLBUILD_PATH_MAX - 1] = '\0';
    set_template(lit);
    expect_error(NULL, -ENAMETOOLONG);
    /* The query does not count against the path. */
    lit[9 + URLBUILD_PATH_MAX - 2] = '\0';
    memcpy(lit + 9 + URLBUILD_PATH_MAX - 2, "?v=", 4);
    set_template(lit);
    const char *fq[] = {"lang"};
    ep.forward_query = fq;
    ep.n_forward_query = 1;
    memset(p, 'q', 3000);
    memcpy(p, "lang=", 5);
    p[3000] = '\0';
    buf_init(&b, NULL);
    assert_int_equal(urlbuild_path(&b, &ep, &be, &rm, p, strlen(p)), 0);
    buf_free(&b);
}

#define T(f) cmocka_unit_test_setup(f, setup)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_plain),          T(test_encoding), T(test_malformed), T(test_query),
        T(test_template_query), T(test_origin),   T(test_encode),
        T(test_too_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
