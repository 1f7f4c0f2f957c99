/* Tests gateway/httpcheck.c: every framing rule, one case each, plus the
 * requests that must pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/httpcheck.h"

#define F(n, v) ((struct http_field){n, v})

static int check_v(const char *version, const struct http_field *f, size_t n,
                   struct httpcheck_body *b, const char **why)
{
    struct httpcheck_req r = {.fields = f,
                              .n_fields = n,
                              .version = version,
                              .header_bytes = 100,
                              .max_header_bytes = 16384};
    *why = NULL;
    return httpcheck_request(&r, b, why);
}

#define CHECK(version, ...)                                                                        \
    ({                                                                                             \
        const struct http_field fs_[] = {__VA_ARGS__};                                             \
        check_v(version, fs_, sizeof fs_ / sizeof fs_[0], &b, &why);                               \
    })

static void plain_requests_pass(void **state)
{
    (void)state;
    struct httpcheck_body b;
    const char *why;
    assert_int_equal(CHECK("HTTP/1.1", F("Host", "x"), F("Accept", "*/*")), 0);
    assert_false(b.chunked);
    assert_false(b.has_length);
    assert_int_equal(CHECK("HTTP/1.1", F("Host", "x"), F("Content-Length", "5")), 0);
    assert_true(b.has_length);
    assert_int_equal(b.content_length, 5);
    assert_int_equal(CHECK("HTTP/1.1", F("Host", "x"), F("transfer-encoding", "Chunked")), 0);
    assert_true(b.chunked);
    /* two identical Content-Length lines: RFC 9112 6.3 lets us accept */
    assert_int_equal(
        CHECK("HTTP/1.1", F("Host", "x"), F("Content-Length", "7"), F("content-length", "7")), 0);
    assert_int_equal(b.content_length, 7);
    /* HTTP/1.0 needs no Host */
    assert_int_equal(CHECK("HTTP/1.0", F("Accept", "*/*")), 0);
    assert_int_equal(CHECK("HTTP/1.1", F("Host", "x"), F("Content-Length", "9223372036854775807")),
                     0);
    assert_int_equal(CHECK("HTTP/1.1", F("Host", "x"), F("X-Odd!#$%&'*+-.^_`|~9", "1")), 0);
}

static void host_rules(void **state)
{
    (void)state;
    struct httpcheck_body b;
    const char *why;
    assert_int_equal(CHECK("HTTP/1.1", F("Accept", "*/*")), 400);
    assert_string_equal(why, "missing Host header");
    assert_int_equal(CHECK("HTTP/1.1", F("Host", "a"), F("host", "b")), 400);
    assert_string_equal(why, "repeated Host header");
    assert_int_equal(CHECK("HTTP/1.0", F("Host", "a"), F("Host", "a")), 400);
}

static void transfer_encoding_rules(void **state)
{
    (void)state;
    struct httpcheck_body b;
    const char *why;
    assert_int_equal(CHECK("HTTP/1.1", F("Host", "x"), F("Content-Length", "5"),
                           F("Transfer-Encoding", "chunked")),
                     400);
    assert_string_equal(why, "both Content-Length and Transfer-Encoding");
    assert_int_equal(CHECK("HTTP/1.1", F("Host", "x"), F("Transfer-Encoding", "chunked"),
                           F("Transfer-Encoding", "identity")),
                     400);
    assert_string_equal(why, "repeated Transfer-Encoding header");
    assert_int_equal(CHECK("HTTP/1.0", F("Transfer-Encoding", "chunked")), 400);
    assert_string_equal(why, "Transfer-Encoding on an HTTP/1.0 request");
    const char *bad[] = {"xchunked", "gzip, chunked", "chunked, identity", "identity",
                         "",         "chunked;x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(CHECK("HTTP/1.1", F("Host", "x"), F("Transfer-Encoding", bad[i])), 501);
        assert_string_equal(why, "unsupported transfer coding (only chunked)");
    }
}

static void content_length_rules(void **state)
{
    (void)state;
    struct httpcheck_body b;
    const char *why;
    const char *bad[] = {"5, 5",
                         "+5",
                         "-1",
                         "",
                         " 5",
                         "5a",
                         "0x5",
                         "9223372036854775808",
                         "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(CHECK("HTTP/1.1", F("Host", "x"), F("Content-Length", bad[i])), 400);
        assert_string_equal(why, "invalid Content-Length");
    }
    assert_int_equal(
        CHECK("HTTP/1.1", F("Host", "x"), F("Content-Length", "5"), F("Content-Length", "6")), 400);
    assert_string_equal(why, "conflicting Content-Length headers");
}

static void field_names_are_tokens(void **state)
{
    (void)state;
    struct httpcheck_body b;
    const char *why;
    const char *bad[] = {"Content-Length ", " Host", "Foo Bar", "Foo\tBar",   "",
                         "Fo\"o",           "a(b)",  "x:y",     "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(CHECK("HTTP/1.1", F("Host", "x"), F(bad[i], "5")), 400);
        assert_string_equal(why, "invalid header field name");
    }
    assert_true(httpcheck_is_token("Content-Length", 14));
    assert_false(httpcheck_is_token("Content-Length", 0));
}

static void header_size_limit(void **state)
{
    (void)state;
    struct httpcheck_body b;
    const char *why;
    const struct http_field f[] = {F("Host", "x")};
    struct httpcheck_req r = {.fields = f,
                              .n_fields = 1,
                              .version = "HTTP/1.1",
                              .header_bytes = 16384,
                              .max_header_bytes = 16384};
    assert_int_equal(httpcheck_request(&r, &b, &why), 0);
    r.header_bytes = 16385;
    assert_int_equal(httpcheck_request(&r, &b, &why), 431);
    assert_string_equal(why, "request header fields too large");
}

static int raw(const char *s, const char **why)
{
    *why = NULL;
    return httpcheck_raw(s, strlen(s), 16384, NULL, 0, NULL, 0, why);
}

static void raw_blocks(void **state)
{
    (void)state;
    const char *why;
    char method[8], target[16];
    const char *ok = "\r\nPOST /api/x?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length:  5 \r\n\r\nhello";
    assert_int_equal(
        httpcheck_raw(ok, strlen(ok), 16384, method, sizeof method, target, sizeof target, &why),
        0);
    assert_string_equal(method, "POST");
    assert_string_equal(target, "/api/x");
    assert_int_equal(raw("GET / HTTP/1.1\nHost: x\n\n", &why), 0); /* bare LF */
    /* incomplete: no blank line yet */
    assert_int_equal(raw("GET / HTTP/1.1\r\nHost: x\r\n", &why), -1);
    assert_int_equal(raw("", &why), -1);
    /* what libmicrohttpd would reject itself, answering twice */
    assert_int_equal(raw("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n", &why), 400);
    assert_string_equal(why, "invalid Content-Length");
    assert_int_equal(raw("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", &why), 400);
    assert_int_equal(
        raw("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", &why),
        400);
    assert_int_equal(raw("POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\n", &why), 400);
    assert_string_equal(why, "invalid header field name");
    assert_int_equal(raw("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", &why), 400);
    assert_string_equal(why, "folded header line (obs-fold)");
    assert_int_equal(raw("GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", &why), 400);
    assert_string_equal(why, "header line without a colon");
    assert_int_equal(raw("GET  / HTTP/1.1\r\nHost: x\r\n\r\n", &why), 400);
    assert_string_equal(why, "malformed request line");
    assert_int_equal(raw("GET /\r\nHost: x\r\n\r\n", &why), 400);
    assert_int_equal(raw("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", &why),
                     501);
    assert_int_equal(raw("GET / HTTP/1.1\r\n\r\n", &why), 400);
    assert_string_equal(why, "missing Host header");
    /* the size rule counts the whole block */
    char big[200];
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: x\r\nX: %0100d\r\n\r\n", 0);
    assert_int_equal(httpcheck_raw(big, strlen(big), strlen(big), NULL, 0, NULL, 0, &why), 0);
    assert_int_equal(httpcheck_raw(big, strlen(big), strlen(big) - 1, NULL, 0, NULL, 0, &why), 431);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_requests_pass),
        cmocka_unit_test(host_rules),
        cmocka_unit_test(transfer_encoding_rules),
        cmocka_unit_test(content_length_rules),
        cmocka_unit_test(field_names_are_tokens),
        cmocka_unit_test(header_size_limit),
        cmocka_unit_test(raw_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
