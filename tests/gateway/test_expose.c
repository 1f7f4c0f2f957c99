/* tests/gateway/test_expose: expose_headers names, capture from both
 * transports' header shapes, caps, control characters and the choice of
 * the value (gateway/expose.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/expose.h"
#include "gateway/h1resp.h"

static const char *const NAMES[] = {"X-Rate-Limit", "X-Region"};

static void hdr(struct expose_cap *c, const char *name, const char *value)
{
    expose_header(c, name, strlen(name), value, strlen(value));
}

static void line(struct expose_cap *c, const char *l)
{
    expose_line(c, l, strlen(l));
}

static void test_refused(void **state)
{
    (void)state;
    const char *bad[] = {"Cache-Control",
                         "expires",
                         "AGE",
                         "Pragma",
                         "ETag",
                         "Connection",
                         "Keep-Alive",
                         "TE",
                         "Trailer",
                         "transfer-encoding",
                         "Upgrade",
                         "Proxy-Authenticate",
                         "Content-Length",
                         "Content-Type",
                         "Content-Encoding",
                         "Set-Cookie",
                         "Server-Timing",
                         "x-request-id",
                         "traceparent",
                         "X-Gateway-Degraded",
                         "X-Gateway-Anything",
                         "Access-Control-Allow-Origin",
                         "Vary",
                         "Date"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (!expose_refused(bad[i])) fail_msg("%s should be refused", bad[i]);
    }
    assert_null(expose_refused("X-Rate-Limit"));
    assert_null(expose_refused("X-Gateway")); /* only the X-Gateway- prefix */
    assert_null(expose_refused("Ages"));
    assert_null(expose_refused("Server"));
    assert_string_equal(expose_refused("cache-control"), "the gateway computes caching itself");
}

static void test_new_bounds(void **state)
{
    (void)state;
    assert_null(expose_new(NAMES, 0, 3)); /* nothing listed: no allocation */
    assert_null(expose_new(NAMES, 2, 0));
    assert_null(expose_new(NAMES, EXPOSE_MAX_NAMES + 1, 1));
    assert_null(expose_cap(NULL, 0));
    assert_null(expose_value(NULL, 0));
    assert_int_equal(expose_n_names(NULL), 0);
    struct expose_set *s = expose_new(NAMES, 2, 3);
    assert_non_null(s);
    assert_non_null(expose_cap(s, 2));
    assert_null(expose_cap(s, 3));
    assert_int_equal(expose_n_names(s), 2);
    assert_string_equal(expose_name(s, 1), "X-Region");
    /* NULL captures are no-ops (endpoints without expose_headers) */
    expose_reset(NULL);
    hdr(NULL, "X-Region", "eu");
    line(NULL, "X-Region: eu\r\n");
    expose_free(s);
}

static void test_capture_native(void **state)
{
    (void)state;
    struct expose_set *s = expose_new(NAMES, 2, 1);
    struct expose_cap *c = expose_cap(s, 0);
    hdr(c, "x-rate-limit", "100");
    hdr(c, "X-Other", "nope");
    assert_string_equal(expose_cap_value(c, 0), "100");
    assert_null(expose_cap_value(c, 1));
    hdr(c, "X-RATE-LIMIT", "200"); /* repeated: joined */
    assert_string_equal(expose_cap_value(c, 0), "100, 200");
    hdr(c, "X-Region", ""); /* empty adds nothing */
    assert_null(expose_cap_value(c, 1));
    expose_reset(c);
    assert_null(expose_cap_value(c, 0));
    expose_free(s);
}

/* Through the real parser's header callback, as native.c wires it. */
static int feed_cap(void *arg, const char *name, size_t nl, const char *value, size_t vl)
{
    expose_header(arg, name, nl, value, vl);
    return 0;
}

static void test_capture_h1resp(void **state)
{
    (void)state;
    struct expose_set *s = expose_new(NAMES, 2, 1);
    struct expose_cap *c = expose_cap(s, 0);
    static struct h1resp p;
    h1resp_init(&p, false, NULL, NULL);
    h1resp_on_header(&p, feed_cap, c);
    const char *resp = "HTTP/1.1 103 Early Hints\r\nX-Region: early\r\n\r\n"
                       "HTTP/1.1 200 OK\r\nX-Region:  eu-1 \r\nTransfer-Encoding: chunked\r\n\r\n"
                       "2\r\n{}\r\n0\r\nX-Rate-Limit: trailer\r\n\r\n";
    size_t used;
    assert_int_equal(h1resp_feed(&p, resp, strlen(resp), &used), H1_DONE);
    assert_string_equal(expose_cap_value(c, 1), "eu-1");
    assert_null(expose_cap_value(c, 0)); /* a trailer does not count */
    expose_free(s);
}

static void test_capture_curl_lines(void **state)
{
    (void)state;
    struct expose_set *s = expose_new(NAMES, 2, 1);
    struct expose_cap *c = expose_cap(s, 0);
    line(c, "HTTP/1.1 100 Continue\r\n");
    line(c, "X-Region: early\r\n");
    line(c, "\r\n");
    line(c, "HTTP/1.1 200 OK\r\n"); /* a new block forgets the 1xx */
    assert_null(expose_cap_value(c, 1));
    line(c, "X-Region:\t eu-2 \t\r\n");
    line(c, "x-rate-limit:7\n");
    line(c, " folded: line\r\n");
    line(c, "no colon here\r\n");
    line(c, "\r\n");
    line(c, "X-Rate-Limit: trailer\r\n"); /* after the block: a trailer */
    assert_string_equal(expose_cap_value(c, 1), "eu-2");
    assert_string_equal(expose_cap_value(c, 0), "7");
    expose_free(s);
}

static void test_caps_and_control(void **state)
{
    (void)state;
    struct expose_set *s = expose_new(NAMES, 2, 1);
    struct expose_cap *c = expose_cap(s, 0);
    char v[EXPOSE_MAX_VALUE + 2];
    memset(v, 'a', sizeof v - 1);
    v[EXPOSE_MAX_VALUE] = '\0'; /* exactly the cap: kept */
    hdr(c, "X-Region", v);
    assert_int_equal(strlen(expose_cap_value(c, 1)), EXPOSE_MAX_VALUE);
    expose_reset(c);
    v[EXPOSE_MAX_VALUE] = 'a'; /* one over: dropped, not cut */
    v[EXPOSE_MAX_VALUE + 1] = '\0';
    hdr(c, "X-Region", v);
    assert_null(expose_cap_value(c, 1));
    hdr(c, "X-Region", "short"); /* a dropped name stays dropped */
    assert_null(expose_cap_value(c, 1));

    expose_reset(c);
    v[EXPOSE_MAX_VALUE - 2] = '\0'; /* 509 + ", " + 1 = 512: the join is over */
    hdr(c, "X-Region", v);
    hdr(c, "X-Region", "b");
    assert_null(expose_cap_value(c, 1));

    expose_reset(c);
    hdr(c, "X-Rate-Limit", "a\tb"); /* HTAB is fine */
    assert_string_equal(expose_cap_value(c, 0), "a\tb");
    const char *ctl[] = {"a\rb", "a\nb", "a\x01", "\x7f", "x\x1b[31m"};
    for (size_t i = 0; i < sizeof ctl / sizeof *ctl; i++) {
        expose_reset(c);
        hdr(c, "X-Rate-Limit", ctl[i]);
        if (expose_cap_value(c, 0)) fail_msg("control value %zu kept", i);
    }
    expose_reset(c);
    hdr(c, "X-Rate-Limit", "ok");
    expose_header(c, "X-Rate-Limit", 12, "a\0b", 3); /* a NUL poisons the joined value */
    assert_null(expose_cap_value(c, 0));
    expose_reset(c);
    hdr(c, "X-Rate-Limit", "caf\xc3\xa9"); /* obs-text passes */
    assert_string_equal(expose_cap_value(c, 0), "caf\xc3\xa9");
    expose_free(s);
}

static void test_first_in_config_order(void **state)
{
    (void)state;
    struct expose_set *s = expose_new(NAMES, 2, 3);
    hdr(expose_cap(s, 2), "X-Region", "third");
    hdr(expose_cap(s, 2), "X-Rate-Limit", "3");
    hdr(expose_cap(s, 1), "X-Region", "second");
    assert_string_equal(expose_value(s, 1), "second");
    assert_string_equal(expose_value(s, 0), "3"); /* the only one that has it */
    hdr(expose_cap(s, 0), "X-Region", "first");
    assert_string_equal(expose_value(s, 1), "first");
    expose_reset(expose_cap(s, 0)); /* e.g. that call ended degraded */
    assert_string_equal(expose_value(s, 1), "second");
    expose_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_new_bounds),
        cmocka_unit_test(test_capture_native),
        cmocka_unit_test(test_capture_h1resp),
        cmocka_unit_test(test_capture_curl_lines),
        cmocka_unit_test(test_caps_and_control),
        cmocka_unit_test(test_first_in_config_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
