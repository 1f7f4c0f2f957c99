#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "gateway/json.h"
#include "gateway/merge.h"

static struct backend_conf backend(const char *name, const char *key, const char **allow,
                                   size_t n_allow)
{
    struct backend_conf b;
    memset(&b, 0, sizeof b);
    b.name = name;
    b.key = key;
    b.allow = allow;
    b.n_allow = n_allow;
    b.required = true;
    return b;
}

static struct merge_part body(const struct backend_conf *b, const char *s)
{
    return (struct merge_part){.b = b, .body = s, .len = strlen(s), .kind = MERGE_PART_BODY};
}

static struct merge_part kind(const struct backend_conf *b, enum merge_part_kind k)
{
    return (struct merge_part){.b = b, .body = NULL, .len = 0, .kind = k};
}

/* Merges, checks the output is one valid JSON object equal to want (as
 * cJSON sees it) and, when exact is set, byte for byte. */
static void expect(const struct merge_part *parts, size_t n, const char *want, const char *exact)
{
    buf_t out;
    buf_init(&out, NULL);
    for (size_t i = 0; i < n; i++)
        if (parts[i].kind == MERGE_PART_BODY)
            assert_int_equal(merge_check(parts[i].b, parts[i].body, parts[i].len, NULL), 0);
    assert_int_equal(merge_build(&out, parts, n), 0);
    assert_int_equal(json_check(out.data, out.len), JSON_OBJECT);
    cJSON *got = cJSON_ParseWithLength(out.data, out.len);
    cJSON *exp = cJSON_Parse(want);
    assert_non_null(got);
    assert_non_null(exp);
    if (!cJSON_Compare(got, exp, true)) fail_msg("got %s, want %s", out.data, want);
    if (exact && strcmp(out.data, exact) != 0) fail_msg("got %s, want exactly %s", out.data, exact);
    cJSON_Delete(got);
    cJSON_Delete(exp);
    buf_free(&out);
}

static void test_key(void **state)
{
    (void)state;
    struct backend_conf u = backend("user", "user", NULL, 0);
    struct backend_conf r = backend("recs", "recs", NULL, 0);
    struct merge_part p[] = {
        body(&u, "{\"id\":42,\"score\":64.0}"),
        body(&r, " [1, 2 ,3]\n"),
    };
    /* Raw bytes spliced: 64.0 stays 64.0, inner spacing stays. */
    expect(p, 2, "{\"user\":{\"id\":42,\"score\":64},\"recs\":[1,2,3]}",
           "{\"user\":{\"id\":42,\"score\":64.0},\"recs\":[1, 2 ,3]}");
    /* Any JSON value goes under a key. */
    struct merge_part q[] = {body(&u, "\"s\""), body(&r, "7")};
    expect(q, 2, "{\"user\":\"s\",\"recs\":7}", "{\"user\":\"s\",\"recs\":7}");
}

static void test_no_key(void **state)
{
    (void)state;
    struct backend_conf a = backend("a", NULL, NULL, 0);
    struct backend_conf b = backend("b", NULL, NULL, 0);
    struct backend_conf c = backend("c", "c", NULL, 0);
    struct merge_part p[] = {
        body(&a, " { \"x\" : 1 , \"y\":[{}] } "),
        body(&b, "{}"),
        body(&c, "null"),
        body(&b, "{\"z\":\"\\u00e9\"}"),
    };
    expect(p, 4, "{\"x\":1,\"y\":[{}],\"c\":null,\"z\":\"\xc3\xa9\"}",
           "{\"x\" : 1 , \"y\":[{}],\"c\":null,\"z\":\"\\u00e9\"}");
    /* Only empty objects: an empty object. */
    struct merge_part e[] = {body(&a, "{}"), body(&b, " { } ")};
    expect(e, 2, "{}", "{}");
    expect(e, 0, "{}", "{}");
}

static void test_null_omit(void **state)
{
    (void)state;
    struct backend_conf k = backend("k", "k", NULL, 0);
    struct backend_conf t = backend("t", NULL, NULL, 0);
    struct backend_conf o = backend("o", "o", NULL, 0);
    struct merge_part p[] = {
        kind(&k, MERGE_PART_NULL),
        kind(&t, MERGE_PART_NULL),
        kind(&o, MERGE_PART_OMIT),
        body(&t, "{\"a\":true}"),
    };
    expect(p, 4, "{\"k\":null,\"a\":true}", "{\"k\":null,\"a\":true}");
    /* An empty body (a 204) is null: under a key, or nothing at top level. */
    struct merge_part q[] = {body(&k, ""), body(&t, ""), body(&o, "1")};
    expect(q, 3, "{\"k\":null,\"o\":1}", "{\"k\":null,\"o\":1}");
}

static void test_allow(void **state)
{
    (void)state;
    const char *allow[] = {"items", "n", "é\"q"};
    struct backend_conf top = backend("recs", NULL, allow, 3);
    struct backend_conf keyed = backend("recs2", "r", allow, 3);
    const char *doc = "{\"secret\":1,\"n\":2.50,\"items\":[{\"secret\":1}],"
                      "\"\\u00e9\\\"q\":\"x\",\"itemsx\":0}";
    struct merge_part p[] = {body(&top, doc)};
    /* Body order, raw values, nested members untouched. */
    expect(p, 1, "{\"n\":2.5,\"items\":[{\"secret\":1}],\"é\\\"q\":\"x\"}",
           "{\"n\":2.50,\"items\":[{\"secret\":1}],\"\\u00e9\\\"q\":\"x\"}");
    struct merge_part q[] = {body(&keyed, doc), body(&top, "{\"n\":1}")};
    expect(q, 2, "{\"r\":{\"n\":2.5,\"items\":[{\"secret\":1}],\"é\\\"q\":\"x\"},\"n\":1}", NULL);
    /* Nothing allowed survives: an empty object under the key, nothing at top. */
    struct merge_part r[] = {body(&keyed, "{\"a\":1}"), body(&top, "{\"a\":1}")};
    expect(r, 2, "{\"r\":{}}", "{\"r\":{}}");
    /* allow: [] keeps nothing. */
    struct backend_conf none = backend("none", "none", allow, 0);
    struct merge_part s[] = {body(&none, "{\"items\":1}")};
    expect(s, 1, "{\"none\":{}}", "{\"none\":{}}");
    /* Empty body with allow and a key: null. */
    struct merge_part t[] = {body(&keyed, "")};
    expect(t, 1, "{\"r\":null}", "{\"r\":null}");
}

static void test_key_escaping(void **state)
{
    (void)state;
    struct backend_conf b = backend("b", "we\"ird\\key\n", NULL, 0);
    struct merge_part p[] = {body(&b, "1")};
    expect(p, 1, "{\"we\\\"ird\\\\key\\n\":1}", "{\"we\\\"ird\\\\key\\u000a\":1}");
}

static void test_shape_errors(void **state)
{
    (void)state;
    struct backend_conf top = backend("t", NULL, NULL, 0);
    const char *allow[] = {"a"};
    struct backend_conf keyed_allow = backend("ka", "k", allow, 1);
    buf_t out;
    buf_init(&out, NULL);
    assert_int_equal(buf_puts(&out, "x"), 0);
    struct merge_part p[] = {body(&top, "{\"a\":1}"), body(&top, "[1]")};
    assert_int_equal(merge_build(&out, p, 2), -EINVAL);
    assert_string_equal(out.data, "x"); /* unchanged */
    struct merge_part q[] = {body(&keyed_allow, "[1]")};
    assert_int_equal(merge_build(&out, q, 1), -EINVAL);
    assert_string_equal(out.data, "x");
    buf_free(&out);
}

static void test_check(void **state)
{
    (void)state;
    const char *allow[] = {"a"};
    struct backend_conf keyed = backend("k", "k", NULL, 0);
    struct backend_conf top = backend("t", NULL, NULL, 0);
    struct backend_conf keyed_allow = backend("ka", "k", allow, 1);
    const char *why = NULL;
#define CHECK(b, s, want_rc, want_why)                                                             \
    do {                                                                                           \
        why = NULL;                                                                                \
        assert_int_equal(merge_check(b, s, strlen(s), &why), want_rc);                             \
        if (want_why) assert_string_equal(why, want_why);                                          \
    } while (0)
    CHECK(&keyed, "{\"a\":1}", 0, NULL);
    CHECK(&keyed, "[1]", 0, NULL);
    CHECK(&keyed, "null", 0, NULL);
    CHECK(&keyed, "", 0, NULL);
    CHECK(&keyed, "{\"a\":}", -1, "invalid JSON");
    CHECK(&keyed, "{} x", -1, "invalid JSON");
    CHECK(&keyed, "\"\\ud800\"", -1, "invalid JSON");
    CHECK(&top, "{\"a\":1}", 0, NULL);
    CHECK(&top, "", 0, NULL);
    CHECK(&top, "[1]", -1, "not an object");
    CHECK(&top, "null", -1, "not an object");
    CHECK(&top, "{", -1, "invalid JSON");
    CHECK(&keyed_allow, "{\"a\":1}", 0, NULL);
    CHECK(&keyed_allow, "[1]", -1, "not an object");
    CHECK(&keyed_allow, "", 0, NULL);
    assert_int_equal(merge_check(&top, "[]", 2, NULL), -1); /* why may be NULL */
#undef CHECK
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key),          cmocka_unit_test(test_no_key),
        cmocka_unit_test(test_null_omit),    cmocka_unit_test(test_allow),
        cmocka_unit_test(test_key_escaping), cmocka_unit_test(test_shape_errors),
        cmocka_unit_test(test_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
