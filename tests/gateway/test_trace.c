#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <pthread.h>

#include <cmocka.h>

#include "gateway/trace.h"

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define PID "00f067aa0ba902b7"

static int parse(const char *s, struct trace_parent *tp)
{
    return trace_parse(s, strlen(s), tp);
}

static void test_parse_valid(void **state)
{
    (void)state;
    struct trace_parent tp;
    assert_int_equal(parse("00-" TID "-" PID "-01", &tp), 0);
    assert_int_equal(tp.trace_id[0], 0x4b);
    assert_int_equal(tp.trace_id[15], 0x36);
    assert_int_equal(tp.span_id[0], 0x00);
    assert_int_equal(tp.span_id[7], 0xb7);
    assert_int_equal(tp.flags, 0x01);
    char out[TRACEPARENT_LEN + 1];
    trace_format(&tp, out);
    assert_string_equal(out, "00-" TID "-" PID "-01");

    assert_int_equal(parse("00-" TID "-" PID "-00", &tp), 0);
    assert_int_equal(tp.flags, 0);
    assert_int_equal(parse("00-" TID "-" PID "-ff", &tp), 0);
    assert_int_equal(tp.flags, 0xff);
    /* A later version: same layout, may carry more fields after a '-'. */
    assert_int_equal(parse("01-" TID "-" PID "-01", &tp), 0);
    assert_int_equal(parse("cc-" TID "-" PID "-01-what-the-future-holds", &tp), 0);
    assert_int_equal(tp.flags, 0x01);
    trace_format(&tp, out); /* always written as version 00 */
    assert_string_equal(out, "00-" TID "-" PID "-01");
    /* Not NUL-terminated at n. */
    assert_int_equal(trace_parse("00-" TID "-" PID "-01xyz", TRACEPARENT_LEN, &tp), 0);
}

static void test_parse_invalid(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "00",
        "00-" TID "-" PID "-0",   /* short */
        "00-" TID "-" PID "-011", /* version 00 is exactly 55 */
        "00-" TID "-" PID "-01-", /* same */
        "00-" TID "-" PID "-01 ",
        " 00-" TID "-" PID "-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-" PID "-01", /* upper-case hex */
        "00-" TID "-00F067AA0BA902B7-01",
        "00-" TID "-" PID "-0A",
        "0A-" TID "-" PID "-01",
        "00-00000000000000000000000000000000-" PID "-01", /* zero trace id */
        "00-" TID "-0000000000000000-01",                 /* zero parent id */
        "ff-" TID "-" PID "-01",                          /* version ff */
        "01-" TID "-" PID "-01x",                         /* longer needs '-' at 55 */
        "00_" TID "-" PID "-01",
        "00-" TID "_" PID "-01",
        "00-" TID "-" PID "_01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-" PID "-01x", /* misplaced dash */
        "00-" TID "-"
        "00f067aa0ba902bg"
        "-01",
        "00-" TID "-" PID "-g1",
        "0g-" TID "-" PID "-01",
    };
    struct trace_parent tp, before;
    memset(&tp, 0x5a, sizeof tp);
    before = tp;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(bad[i], &tp) != -EINVAL) fail_msg("accepted %s", bad[i]);
        assert_memory_equal(&tp, &before, sizeof tp); /* untouched */
    }
    assert_int_equal(trace_parse(NULL, 0, &tp), -EINVAL);
}

static int popcount128(const uint8_t *p, size_t n)
{
    int c = 0;
    for (size_t i = 0; i < n; i++)
        c += __builtin_popcount(p[i]);
    return c;
}

static void test_new_ids(void **state)
{
    (void)state;
    enum { N = 2000 };
    static uint8_t ids[N][TRACE_ID_BYTES];
    long bits = 0;
    for (int i = 0; i < N; i++) {
        trace_new_trace_id(ids[i]);
        uint8_t zero[TRACE_ID_BYTES] = {0};
        assert_memory_not_equal(ids[i], zero, TRACE_ID_BYTES);
        bits += popcount128(ids[i], TRACE_ID_BYTES);
        for (int k = 0; k < i; k++)
            assert_memory_not_equal(ids[i], ids[k], TRACE_ID_BYTES);
    }
    /* Random-looking: about half the bits set (expected 128000, sd ~253). */
    assert_true(bits > 128000 - 3000 && bits < 128000 + 3000);

    struct trace_parent tp, child;
    trace_start(&tp, TRACE_FLAG_SAMPLED);
    uint8_t zspan[TRACE_SPAN_BYTES] = {0};
    assert_memory_not_equal(tp.span_id, zspan, TRACE_SPAN_BYTES);
    assert_int_equal(tp.flags, TRACE_FLAG_SAMPLED);
    trace_child(&tp, &child);
    assert_memory_equal(child.trace_id, tp.trace_id, TRACE_ID_BYTES);
    assert_memory_not_equal(child.span_id, tp.span_id, TRACE_SPAN_BYTES);
    assert_int_equal(child.flags, tp.flags);
    /* What we format, we parse back. */
    char out[TRACEPARENT_LEN + 1];
    trace_format(&child, out);
    assert_int_equal(strlen(out), TRACEPARENT_LEN);
    struct trace_parent back;
    assert_int_equal(parse(out, &back), 0);
    assert_memory_equal(&back, &child, sizeof back);
    trace_child(&child, &child); /* in place */
    assert_memory_equal(child.trace_id, tp.trace_id, TRACE_ID_BYTES);
    assert_memory_not_equal(child.span_id, back.span_id, TRACE_SPAN_BYTES);

    char hex[33];
    trace_hex(tp.trace_id, TRACE_ID_BYTES, hex);
    assert_int_equal(strlen(hex), 32);
    assert_memory_equal(hex, out + 3, 32);
}

static void *thread_ids(void *arg)
{
    uint8_t *id = arg;
    trace_new_trace_id(id);
    return NULL;
}

static void test_threads_differ(void **state)
{
    (void)state;
    /* Each thread seeds its own generator: no two start the same. */
    enum { T = 8 };
    uint8_t ids[T][TRACE_ID_BYTES];
    pthread_t th[T];
    for (int i = 0; i < T; i++)
        assert_int_equal(pthread_create(&th[i], NULL, thread_ids, ids[i]), 0);
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < T; i++)
        for (int k = 0; k < i; k++)
            assert_memory_not_equal(ids[i], ids[k], TRACE_ID_BYTES);
}

static void test_request_id(void **state)
{
    (void)state;
    char s[200];
    memset(s, 'a', sizeof s);
    assert_false(trace_request_id_valid(s, 0));
    assert_true(trace_request_id_valid(s, 1));
    assert_true(trace_request_id_valid(s, 128));
    assert_false(trace_request_id_valid(s, 129));
    assert_false(trace_request_id_valid(NULL, 0));
    assert_true(trace_request_id_valid("!~", 2));
    assert_true(trace_request_id_valid("req-1:abc/def=", 14));
    assert_false(trace_request_id_valid("a b", 3));
    assert_false(trace_request_id_valid("ab\x7f", 3));
    assert_false(trace_request_id_valid("a\tb", 3));
    assert_false(trace_request_id_valid("a\nb", 3));
    assert_false(trace_request_id_valid("a\0b", 3));
    assert_false(trace_request_id_valid("\xc3\xa9", 2));

    char id[TRACE_REQUEST_ID_LEN + 1], id2[TRACE_REQUEST_ID_LEN + 1];
    trace_request_id_new(id);
    trace_request_id_new(id2);
    assert_int_equal(strlen(id), 32);
    assert_true(trace_request_id_valid(id, strlen(id)));
    assert_int_equal(strspn(id, "0123456789abcdef"), 32);
    assert_string_not_equal(id, id2);
}

static void test_timeout(void **state)
{
    (void)state;
    uint32_t v = 77;
    assert_int_equal(trace_parse_timeout_ms("1", &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(trace_parse_timeout_ms("250", &v), 0);
    assert_int_equal(v, 250);
    assert_int_equal(trace_parse_timeout_ms("0007", &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(trace_parse_timeout_ms("2147483647", &v), 0);
    assert_int_equal(v, 2147483647u);

    static const char *bad[] = {
        "",
        "0",
        "000",
        "-1",
        "+5",
        " 5",
        "5 ",
        "5ms",
        "1.5",
        "0x10",
        "1e3",
        "99999999999",
        "2147483648",
        "4294967296",
        "18446744073709551617",
        "99999999999999999999999999999999999",
    };
    v = 77;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (trace_parse_timeout_ms(bad[i], &v) != -EINVAL) fail_msg("accepted '%s'", bad[i]);
        assert_int_equal(v, 77);
    }
    assert_int_equal(trace_parse_timeout_ms(NULL, &v), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid), cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_new_ids),     cmocka_unit_test(test_threads_differ),
        cmocka_unit_test(test_request_id),  cmocka_unit_test(test_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
