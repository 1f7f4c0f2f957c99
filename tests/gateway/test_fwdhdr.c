#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/fwdhdr.h"

static const char *const NAMES[] = {"X-Fwd", "Authorization", "Cookie", "Host",
                                    "Content-Length", "Proxy-Authorization"};
#define N_NAMES (sizeof NAMES / sizeof NAMES[0])

static int add(struct fwd *f, const char *name, const char *value)
{
    return fwd_add(f, name, value, strlen(value), false);
}

static void test_value_ok(void **state)
{
    (void)state;
    assert_true(fwd_value_ok("Bearer abc", 10));
    assert_true(fwd_value_ok("a\tb", 3));
    assert_true(fwd_value_ok("caf\xc3\xa9", 5)); /* obs-text */
    assert_true(fwd_value_ok("", 0));
    for (int c = 0; c < 0x20; c++) {
        char v[3] = {'a', (char)c, 'b'};
        assert_int_equal(fwd_value_ok(v, 3), c == '\t');
    }
    assert_false(fwd_value_ok("a\x7f", 2));
    assert_false(fwd_value_ok("a\0b", 3)); /* a NUL the parser kept */
}

static void test_refused(void **state)
{
    (void)state;
    struct fwd f;
    static const char *const bad[] = {"a\rInjected: yes", "a\nb", "a\vb", "a\fb", "a\x7f"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fwd_init(&f, NAMES, N_NAMES);
        assert_int_equal(add(&f, "x-fwd", bad[i]), 400);
        assert_string_equal(f.why, "header X-Fwd: value contains a control character");
        fwd_free(&f);
    }
    fwd_init(&f, NAMES, N_NAMES);
    assert_int_equal(fwd_add(&f, "Authorization", "Bearer a", 8, true), 400);
    assert_string_equal(f.why, "header Authorization: value contains a NUL character");
    fwd_free(&f);
    /* a header not forwarded is not checked */
    fwd_init(&f, NAMES, N_NAMES);
    assert_int_equal(add(&f, "X-Other", "a\rb"), 0);
    assert_int_equal(fwd_add(&f, "X-Other", "a", 1, true), 0);
    assert_int_equal(fwd_finish(&f), 0);
    assert_int_equal(f.n_lines, 0);
    fwd_free(&f);
}

static void test_single_valued(void **state)
{
    (void)state;
    static const char *const single[] = {"Authorization", "Host", "Content-Length",
                                         "proxy-authorization"};
    for (size_t i = 0; i < sizeof single / sizeof single[0]; i++) {
        struct fwd f;
        fwd_init(&f, NAMES, N_NAMES);
        assert_int_equal(add(&f, single[i], "1"), 0);
        assert_int_equal(add(&f, "X-Fwd", "x"), 0);
        assert_int_equal(add(&f, single[i], "1"), 400); /* even the same value */
        assert_non_null(strstr(f.why, "sent more than once"));
        fwd_free(&f);
    }
}

static void test_join(void **state)
{
    (void)state;
    struct fwd f;
    fwd_init(&f, NAMES, N_NAMES);
    assert_int_equal(add(&f, "Cookie", "a=1"), 0);
    assert_int_equal(add(&f, "x-fwd", "one"), 0);
    assert_int_equal(add(&f, "Accept", "*/*"), 0);
    assert_int_equal(add(&f, "X-FWD", "two \t"), 0); /* trailing OWS dropped */
    assert_int_equal(add(&f, "X-Fwd", ""), 0);       /* empty: left out */
    assert_int_equal(add(&f, "cookie", "b=2"), 0);
    assert_int_equal(add(&f, "Authorization", "Bearer t"), 0);
    assert_int_equal(fwd_finish(&f), 0);
    /* config order, configured spelling */
    assert_int_equal(f.n_lines, 3);
    assert_string_equal(fwd_line(&f, 0), "X-Fwd: one, two");
    assert_string_equal(fwd_line(&f, 1), "Authorization: Bearer t");
    assert_string_equal(fwd_line(&f, 2), "Cookie: a=1; b=2");
    assert_int_equal(f.value_len[0], 8);
    assert_memory_equal(f.value[0], "one, two", 8);
    assert_memory_equal(f.value[2], "a=1; b=2", 8);
    assert_null(f.value[3]); /* Host: absent */
    fwd_free(&f);
    /* only empty values: absent */
    fwd_init(&f, NAMES, N_NAMES);
    assert_int_equal(add(&f, "X-Fwd", ""), 0);
    assert_int_equal(add(&f, "X-Fwd", "  "), 0);
    assert_int_equal(fwd_finish(&f), 0);
    assert_int_equal(f.n_lines, 0);
    assert_null(f.value[0]);
    fwd_free(&f);
}

/* Many repeats: one line, every value, the buffer growing on the way. */
static void test_many_values(void **state)
{
    (void)state;
    struct fwd f;
    fwd_init(&f, NAMES, N_NAMES);
    char v[8][16];
    for (int i = 0; i < 2000; i++) {
        snprintf(v[i % 8], sizeof v[0], "v%d", i % 8);
        assert_int_equal(add(&f, "X-Fwd", v[i % 8]), 0);
    }
    assert_int_equal(add(&f, "Host", "h"), 0);
    assert_int_equal(fwd_finish(&f), 0);
    assert_int_equal(f.n_lines, 2);
    const char *l = fwd_line(&f, 0);
    assert_int_equal(strncmp(l, "X-Fwd: v0, v1, ", 15), 0);
    assert_int_equal(strlen(l), 7 + 2000 * 2 + 1999 * 2);
    assert_string_equal(fwd_line(&f, 1), "Host: h");
    fwd_free(&f);
}

/* Only the first FWD_MAX configured names are looked at. */
static void test_limit(void **state)
{
    (void)state;
    const char *names[FWD_MAX + 1];
    char buf[FWD_MAX + 1][8];
    for (int i = 0; i <= FWD_MAX; i++) {
        snprintf(buf[i], sizeof buf[i], "H%d", i);
        names[i] = buf[i];
    }
    struct fwd f;
    fwd_init(&f, names, FWD_MAX + 1);
    for (int i = 0; i <= FWD_MAX; i++)
        assert_int_equal(add(&f, names[i], "x"), 0);
    assert_int_equal(fwd_finish(&f), 0);
    assert_int_equal(f.n_lines, FWD_MAX);
    fwd_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value_ok),      cmocka_unit_test(test_refused),
        cmocka_unit_test(test_single_valued), cmocka_unit_test(test_join),
        cmocka_unit_test(test_many_values),   cmocka_unit_test(test_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
