#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "core/buf.h"
#include "gateway/json.h"

struct doc {
    const char *text;
    size_t len;          /* 0: strlen(text) */
    enum json_type type; /* JSON_INVALID for an invalid document */
};

#define D(t, ty)                                                                                   \
    {                                                                                              \
        t, sizeof(t) - 1, ty                                                                       \
    }
#define BAD(t)                                                                                     \
    {                                                                                              \
        t, sizeof(t) - 1, JSON_INVALID                                                             \
    }

static const struct doc docs[] = {
    D("{}", JSON_OBJECT),
    D(" { } ", JSON_OBJECT),
    D("[]", JSON_ARRAY),
    D("null", JSON_NULL),
    D("true", JSON_TRUE),
    D("false", JSON_FALSE),
    D("0", JSON_NUMBER),
    D("-0", JSON_NUMBER),
    D("-0.0e+0", JSON_NUMBER),
    D("123.456E-7", JSON_NUMBER),
    D("1e5", JSON_NUMBER),
    D("\"\"", JSON_STRING),
    D("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"", JSON_STRING),
    D("\"\\u0041\\u00e9\\u20AC\"", JSON_STRING),
    D("\"\\ud83d\\ude00\"", JSON_STRING),                          /* surrogate pair */
    D("\"\\u0000\"", JSON_STRING),                                 /* an escaped NUL is fine */
    D("\"h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"", JSON_STRING), /* é € 😀 */
    D("\"\xef\xbf\xbf\xf4\x8f\xbf\xbf\"", JSON_STRING),            /* U+FFFF, U+10FFFF */
    D("\"\x7f\"", JSON_STRING),                                    /* DEL needs no escape */
    D("{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\"}}", JSON_OBJECT),
    D(" \t\r\n{ \"a\" : [ 1 , 2 ] } \n", JSON_OBJECT),
    D("[[[[[[[[[[]]]]]]]]]]", JSON_ARRAY),
    D("{\"\":{}}", JSON_OBJECT),
    D("[1,\"x\",{},[],-1.5e-3]", JSON_ARRAY),

    BAD(""),
    BAD("   "),
    BAD("{"),
    BAD("}"),
    BAD("[1,]"),
    BAD("[,1]"),
    BAD("{\"a\":1,}"),
    BAD("{\"a\" 1}"),
    BAD("{\"a\":}"),
    BAD("{a:1}"),
    BAD("{1:1}"),
    BAD("{\"a\":1 \"b\":2}"),
    BAD("[1 2]"),
    BAD("[1]]"),
    BAD("{}}"),
    BAD("{} x"),
    BAD("{}{}"),
    BAD("nul"),
    BAD("nulll"),
    BAD("True"),
    BAD("01"),
    BAD("-01"),
    BAD("00"),
    BAD("+1"),
    BAD("1."),
    BAD(".5"),
    BAD("1.e5"),
    BAD("1e"),
    BAD("1e+"),
    BAD("-"),
    BAD("0x10"),
    BAD("NaN"),
    BAD("Infinity"),
    BAD("\"abc"),
    BAD("\"\\\""),
    BAD("\"\\x\""),
    BAD("\"\\u12\""),
    BAD("\"\\u12G4\""),
    BAD("\"\\ud83d\""), /* lone high surrogate */
    BAD("\"\\ud83dx\""),
    BAD("\"\\ud83d\\u0041\""), /* high followed by a non-low */
    BAD("\"\\ude00\""),        /* lone low surrogate */
    BAD("\"\\ude00\\ud83d\""), /* reversed pair */
    BAD("\"a\tb\""),           /* raw control characters */
    BAD("\"a\nb\""),
    BAD("\"\x01\""),
    BAD("\"\x1f\""),
    BAD("\"\x80\""),     /* stray continuation byte */
    BAD("\"\xc0\xaf\""), /* overlong '/' */
    BAD("\"\xc1\xbf\""),
    BAD("\"\xe0\x80\xaf\""),     /* overlong */
    BAD("\"\xed\xa0\x80\""),     /* encoded surrogate */
    BAD("\"\xf0\x80\x80\xaf\""), /* overlong */
    BAD("\"\xf4\x90\x80\x80\""), /* above U+10FFFF */
    BAD("\"\xf5\x80\x80\x80\""),
    BAD("\"\xff\""),
    BAD("\"\xc3\""), /* truncated sequence */
    BAD("\"\xe2\x82\""),
    BAD("\"\xc3\x28\""), /* bad continuation */
    BAD("'a'"),
    BAD("[1]\x00"), /* trailing NUL */
    BAD("\x00"),
    BAD("\xef\xbb\xbf{}"), /* a BOM is not JSON */
    BAD("{\"a\":1}\v"),    /* \v is not JSON whitespace */
    BAD("[\f]"),
};

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        const struct doc *d = &docs[i];
        enum json_type t = json_check(d->text, d->len);
        if (t != d->type)
            fail_msg("doc %zu (%.*s): got type %d, want %d", i, (int)d->len, d->text, t, d->type);
        assert_int_equal(json_valid(d->text, d->len), d->type != JSON_INVALID);
        if (d->type != JSON_INVALID) {
            cJSON *c = cJSON_ParseWithLength(d->text, d->len);
            if (!c) fail_msg("cJSON rejects valid doc %zu (%.*s)", i, (int)d->len, d->text);
            cJSON_Delete(c);
        }
    }
}

static void test_reads_only_n_bytes(void **state)
{
    (void)state;
    /* The validator must not look past n (no NUL termination assumed). */
    char *p = malloc(2);
    memcpy(p, "[]", 2);
    assert_true(json_valid(p, 2));
    assert_false(json_valid(p, 1));
    memcpy(p, "12", 2);
    assert_true(json_valid(p, 2));
    memcpy(p, "\"a", 2);
    assert_false(json_valid(p, 2));
    free(p);
    assert_false(json_valid(NULL, 0));
}

static char *nested(int depth, char open, char close, size_t *len)
{
    char *p = malloc((size_t)depth * 2 + 1);
    for (int i = 0; i < depth; i++) {
        p[i] = open;
        p[depth + i] = close;
    }
    *len = (size_t)depth * 2;
    p[*len] = '\0';
    return p;
}

static void test_depth(void **state)
{
    (void)state;
    size_t len;
    char *p = nested(JSON_MAX_DEPTH, '[', ']', &len);
    assert_int_equal(json_check(p, len), JSON_ARRAY);
    cJSON *c = cJSON_ParseWithLength(p, len);
    assert_non_null(c);
    cJSON_Delete(c);
    free(p);
    p = nested(JSON_MAX_DEPTH + 1, '[', ']', &len);
    assert_false(json_valid(p, len));
    free(p);
    /* Hostile depth costs no stack: a million opening brackets. */
    p = nested(1000000, '[', ']', &len);
    assert_false(json_valid(p, len));
    free(p);

    /* Objects count toward the same limit. */
    char buf[16 * (JSON_MAX_DEPTH + 2)];
    for (int depth = JSON_MAX_DEPTH; depth <= JSON_MAX_DEPTH + 1; depth++) {
        size_t n = 0;
        for (int i = 0; i < depth; i++)
            n += (size_t)sprintf(buf + n, "{\"k\":");
        n += (size_t)sprintf(buf + n, "1");
        for (int i = 0; i < depth; i++)
            buf[n++] = '}';
        assert_int_equal(json_valid(buf, n), depth <= JSON_MAX_DEPTH);
    }
}

static void test_object_members(void **state)
{
    (void)state;
    const char *m = NULL;
    size_t len = 99;
    const char *doc = " { \"a\" : 1 , \"b\":2 } \n";
    assert_true(json_object_members(doc, strlen(doc), &m, &len));
    assert_int_equal(len, strlen("\"a\" : 1 , \"b\":2"));
    assert_memory_equal(m, "\"a\" : 1 , \"b\":2", len);

    assert_true(json_object_members("{}", 2, &m, &len));
    assert_int_equal(len, 0);
    assert_true(json_object_members("{ \n }", 5, &m, &len));
    assert_int_equal(len, 0);

    m = NULL;
    assert_false(json_object_members("[1]", 3, &m, &len));
    assert_false(json_object_members("\"{}\"", 4, &m, &len));
    assert_false(json_object_members("", 0, &m, &len));
    assert_false(json_object_members("{", 1, &m, &len));
    assert_null(m);
}

static void test_iter(void **state)
{
    (void)state;
    const char *doc = "{ \"a\" : 1, \"b\\u0022\":{\"x\":[1,2]} ,\"c\":\"s\" }";
    struct json_iter it;
    struct json_member m;
    assert_true(json_iter_object(&it, doc, strlen(doc)));
    assert_true(json_iter_next(&it, &m));
    assert_int_equal(m.name_len, 1);
    assert_memory_equal(m.name, "a", 1);
    assert_int_equal(m.value_len, 1);
    assert_memory_equal(m.value, "1", 1);
    assert_true(json_iter_next(&it, &m));
    assert_true(json_string_equals(m.name, m.name_len, "b\"", 2));
    assert_int_equal(m.value_len, strlen("{\"x\":[1,2]}"));
    assert_memory_equal(m.value, "{\"x\":[1,2]}", m.value_len);
    assert_true(json_iter_next(&it, &m));
    assert_memory_equal(m.value, "\"s\"", 3);
    assert_false(json_iter_next(&it, &m));
    assert_false(json_iter_next(&it, &m));

    assert_true(json_iter_object(&it, "{}", 2));
    assert_false(json_iter_next(&it, &m));
    assert_false(json_iter_object(&it, "[]", 2));

    /* Syntax errors stop the iteration; nothing is read out of bounds. */
    const char *bad[] = {
        "{,\"a\":1}", "{\"a\":1 \"b\":2}", "{\"a\" 1}", "{\"a\":", "{\"a", "{\"a\":[1,}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_true(json_iter_object(&it, bad[i], strlen(bad[i])));
        int n = 0;
        while (json_iter_next(&it, &m))
            n++;
        assert_true(n <= 1);
    }
}

static void test_string_equals(void **state)
{
    (void)state;
    assert_true(json_string_equals("abc", 3, "abc", 3));
    assert_false(json_string_equals("abc", 3, "ab", 2));
    assert_false(json_string_equals("ab", 2, "abc", 3));
    assert_true(json_string_equals("", 0, "", 0));
    assert_true(json_string_equals("\\u0061\\n", 8, "a\n", 2));
    assert_true(json_string_equals("\\u00e9", 6, "\xc3\xa9", 2));
    assert_true(json_string_equals("\\ud83d\\ude00", 12, "\xf0\x9f\x98\x80", 4));
    assert_false(json_string_equals("\\ud83d", 6, "\xed\xa0\xbd", 3));
    assert_false(json_string_equals("a\\", 2, "a\\", 2));
}

/* json_put_string writes want for in[0..n), json_escape_len agrees, and the
 * result is one valid JSON string. */
static void check_put(const char *in, size_t n, const char *want)
{
    char out[256];
    assert_true(JSON_STRING_MAX(n) <= sizeof out);
    size_t k = json_put_string(out, in, n);
    assert_int_equal(k, strlen(want));
    assert_memory_equal(out, want, k);
    assert_int_equal(json_escape_len(in, n), k);
    assert_true(k <= JSON_STRING_MAX(n));
    assert_int_equal(json_check(out, k), JSON_STRING);
}

static void test_escape(void **state)
{
    (void)state;
    check_put("", 0, "\"\"");
    check_put("plain text", 10, "\"plain text\"");
    check_put("a\"b\\c/", 6, "\"a\\\"b\\\\c/\"");
    /* short escapes for the five that have one, \u00XX for the rest and DEL */
    check_put("\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\"");
    check_put("\x01\x1f\x7f", 3, "\"\\u0001\\u001f\\u007f\"");
    check_put("a\0b", 3, "\"a\\u0000b\"");
    /* well-formed UTF-8 is copied */
    check_put("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14,
              "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
}

/* Every byte that does not start a well-formed sequence becomes one \ufffd. */
static void test_escape_bad_utf8(void **state)
{
    (void)state;
    check_put("\xff", 1, "\"\\ufffd\"");
    check_put("\xc3(", 2, "\"\\ufffd(\"");
    check_put("\xc0\xaf", 2, "\"\\ufffd\\ufffd\"");                       /* overlong */
    check_put("\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\"");            /* surrogate */
    check_put("\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); /* > U+10FFFF */
    check_put("\xe2\x82", 2, "\"\\ufffd\\ufffd\"");                       /* cut short */
    check_put("\xc3\xa9\xc3", 3, "\"\xc3\xa9\\ufffd\"");                  /* cut by n */
    /* the worst case reaches the bound */
    check_put("\x80\x80", 2, "\"\\ufffd\\ufffd\"");
    assert_int_equal(json_escape_len("\x80\x80", 2), JSON_STRING_MAX(2));
}

static void test_utf8_len(void **state)
{
    (void)state;
    assert_int_equal(json_utf8_len("a", 1), 1);
    assert_int_equal(json_utf8_len("\x00", 1), 1);
    assert_int_equal(json_utf8_len("a", 0), 0);
    assert_int_equal(json_utf8_len("\xc2\x80", 2), 2);
    assert_int_equal(json_utf8_len("\xdf\xbf", 2), 2);
    assert_int_equal(json_utf8_len("\xe0\xa0\x80", 3), 3);
    assert_int_equal(json_utf8_len("\xed\x9f\xbf", 3), 3);     /* U+D7FF */
    assert_int_equal(json_utf8_len("\xf0\x90\x80\x80", 4), 4); /* U+10000 */
    assert_int_equal(json_utf8_len("\xf4\x8f\xbf\xbf", 4), 4); /* U+10FFFF */
    assert_int_equal(json_utf8_len("\x80", 1), 0);             /* continuation */
    assert_int_equal(json_utf8_len("\xc1\xbf", 2), 0);         /* overlong */
    assert_int_equal(json_utf8_len("\xe0\x9f\xbf", 3), 0);     /* overlong */
    assert_int_equal(json_utf8_len("\xf0\x8f\xbf\xbf", 4), 0); /* overlong */
    assert_int_equal(json_utf8_len("\xed\xa0\x80", 3), 0);     /* surrogate */
    assert_int_equal(json_utf8_len("\xf4\x90\x80\x80", 4), 0); /* > U+10FFFF */
    assert_int_equal(json_utf8_len("\xf5\x80\x80\x80", 4), 0);
    assert_int_equal(json_utf8_len("\xc3(", 2), 0);
    assert_int_equal(json_utf8_len("\xe2\x82\xac", 2), 0); /* cut by n */
    assert_int_equal(json_utf8_len("\xf0\x9f\x98\x80", 3), 0);
}

/* json_buf_string appends, keeps the NUL, and agrees with json_put_string. */
static void test_buf_string(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, NULL);
    assert_int_equal(buf_puts(&b, "x="), 0);
    assert_int_equal(json_buf_string(&b, "a\n\xff", 3), 0);
    assert_string_equal(b.data, "x=\"a\\n\\ufffd\"");
    assert_int_equal(b.len, strlen(b.data));
    buf_free(&b);
}

/* Deterministic mutation fuzzing: whatever we accept, cJSON must accept too,
 * and no input may crash (ASan build). */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void test_mutations(void **state)
{
    (void)state;
    static const char alphabet[] =
        "{}[],:\"\\u0123456789abcdefABCDEF-+.eEtrufalsn \t\n\x80\xc3\xed\xf4\x00";
    char buf[128];
    size_t accepted = 0;
    for (int round = 0; round < 200000; round++) {
        const struct doc *d = &docs[next() % (sizeof docs / sizeof docs[0])];
        size_t n = d->len < sizeof buf ? d->len : sizeof buf;
        memcpy(buf, d->text, n);
        int edits = 1 + (int)(next() % 3);
        for (int k = 0; k < edits; k++) {
            size_t pos = n ? next() % (n + 1) : 0;
            char c = alphabet[next() % (sizeof alphabet - 1)];
            switch (next() % 3) {
            case 0: /* replace */
                if (pos < n) buf[pos] = c;
                break;
            case 1: /* insert */
                if (n < sizeof buf) {
                    memmove(buf + pos + 1, buf + pos, n - pos);
                    buf[pos] = c;
                    n++;
                }
                break;
            default: /* delete */
                if (pos < n) {
                    memmove(buf + pos, buf + pos + 1, n - pos - 1);
                    n--;
                }
            }
        }
        /* An exact-size heap copy so ASan catches any read past n. */
        char *h = malloc(n ? n : 1);
        memcpy(h, buf, n);
        if (json_valid(h, n)) {
            accepted++;
            cJSON *c = cJSON_ParseWithLength(h, n);
            if (!c) fail_msg("accepted but cJSON rejects: %.*s", (int)n, h);
            cJSON_Delete(c);
        }
        const char *m;
        size_t ml;
        (void)json_object_members(h, n, &m, &ml);
        struct json_iter it;
        struct json_member mem;
        if (json_iter_object(&it, h, n))
            while (json_iter_next(&it, &mem))
                ;
        free(h);
    }
    assert_true(accepted > 1000); /* the mutations do reach valid documents */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),     cmocka_unit_test(test_reads_only_n_bytes),
        cmocka_unit_test(test_depth),     cmocka_unit_test(test_object_members),
        cmocka_unit_test(test_iter),      cmocka_unit_test(test_string_equals),
        cmocka_unit_test(test_escape),    cmocka_unit_test(test_escape_bad_utf8),
        cmocka_unit_test(test_utf8_len),  cmocka_unit_test(test_buf_string),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
