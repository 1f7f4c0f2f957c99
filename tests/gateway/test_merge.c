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

/* Top-level members of the object doc whose decoded name an earlier member
 * already had (pairwise: small outputs only). */
static size_t count_duplicates(const char *doc, size_t n)
{
    struct json_iter it;
    struct json_member m, seen[256];
    size_t ns = 0, dups = 0;
    assert_true(json_iter_object(&it, doc, n));
    while (json_iter_next(&it, &m)) {
        char name[256];
        assert_true(m.name_len < sizeof name);
        size_t dn = json_string_decode(m.name, m.name_len, name);
        assert_true(dn != (size_t)-1);
        for (size_t i = 0; i < ns; i++)
            if (json_string_equals(seen[i].name, seen[i].name_len, name, dn)) dups++;
        assert_true(ns < 256);
        seen[ns++] = m;
    }
    return dups;
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
    assert_int_equal(count_duplicates(out.data, out.len), 0);
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
    expect(p, 1, "{\"we\\\"ird\\\\key\\n\":1}", "{\"we\\\"ird\\\\key\\n\":1}");
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

/* Issue 9 item 7: two key-less backends with the same member name. The later
 * backend wins, at the first one's position; never twice. */
static void test_duplicate_members(void **state)
{
    (void)state;
    struct backend_conf a = backend("a", NULL, NULL, 0);
    struct backend_conf b = backend("b", NULL, NULL, 0);
    struct merge_part p[] = {
        body(&a, "{\"id\":1,\"admin\":false}"),
        body(&b, "{\"id\":\"attacker\",\"admin\":true}"),
    };
    expect(p, 2, "{\"id\":\"attacker\",\"admin\":true}", "{\"id\":\"attacker\",\"admin\":true}");
    /* Partial overlap: the others keep their place and raw bytes. */
    struct merge_part q[] = {
        body(&a, "{\"x\":1.50,\"id\":1,\"y\":[1, 2]}"),
        body(&b, " {\"z\":0, \"id\" : 2} "),
    };
    expect(q, 2, "{\"x\":1.5,\"id\":2,\"y\":[1,2],\"z\":0}",
           "{\"x\":1.50,\"id\":2,\"y\":[1, 2],\"z\":0}");
    /* Three backends: the last one wins. */
    struct backend_conf c = backend("c", NULL, NULL, 0);
    struct merge_part r[] = {body(&a, "{\"v\":1}"), body(&b, "{\"v\":2}"),
                             body(&c, "{\"v\":3,\"w\":4}")};
    expect(r, 3, "{\"v\":3,\"w\":4}", "{\"v\":3,\"w\":4}");
    /* A name repeated inside one body: its last value. */
    struct merge_part s1[] = {body(&a, "{\"k\":1,\"k\":2,\"j\":0}")};
    expect(s1, 1, "{\"k\":2,\"j\":0}", "{\"k\":2,\"j\":0}");
    /* Names are compared decoded: \u0061dmin is admin; the later raw name is
     * written. */
    struct merge_part t[] = {body(&a, "{\"admin\":false}"), body(&b, "{\"\\u0061dmin\":true}")};
    expect(t, 2, "{\"admin\":true}", "{\"\\u0061dmin\":true}");
    /* Values the member scan must skip whole: strings with escaped quotes,
     * backslashes and brackets, nested containers holding the same names. */
    struct merge_part v[] = {
        body(&a, "{\"s\":\"x\\\"},{\\\\\",\"n\":[{\"s\":1},\"]\"],\"o\":{\"s\":{\"s\":[]}},"
                 "\"e\":\"\\u0022\"}"),
        body(&b, "{ \"s\" : true , \"t\" : -1.5e3 }"),
    };
    expect(v, 2, "{\"s\":true,\"n\":[{\"s\":1},\"]\"],\"o\":{\"s\":{\"s\":[]}},\"e\":\"\\\"\",\"t\":-1500}",
           "{\"s\":true,\"n\":[{\"s\":1},\"]\"],\"o\":{\"s\":{\"s\":[]}},\"e\":\"\\u0022\",\"t\":-1.5e3}");
    /* null and omitted parts take no part. */
    struct merge_part u[] = {body(&a, "{\"v\":1}"), kind(&b, MERGE_PART_NULL),
                             kind(&c, MERGE_PART_OMIT)};
    expect(u, 3, "{\"v\":1}", "{\"v\":1}");
}

/* A key and a key-less backend's member share the namespace too. */
static void test_duplicate_key_and_member(void **state)
{
    (void)state;
    struct backend_conf k = backend("user", "user", NULL, 0);
    struct backend_conf t = backend("t", NULL, NULL, 0);
    struct merge_part p[] = {body(&k, "{\"id\":1}"), body(&t, "{\"user\":\"forged\",\"n\":1}")};
    expect(p, 2, "{\"user\":\"forged\",\"n\":1}", "{\"user\":\"forged\",\"n\":1}");
    struct merge_part q[] = {body(&t, "{\"n\":1,\"user\":\"x\"}"), body(&k, "{\"id\":1}")};
    expect(q, 2, "{\"n\":1,\"user\":{\"id\":1}}", "{\"n\":1,\"user\":{\"id\":1}}");
    /* with allow: only the kept members count */
    const char *allow[] = {"n"};
    struct backend_conf ta = backend("ta", NULL, allow, 1);
    struct merge_part r[] = {body(&k, "{\"id\":1}"), body(&ta, "{\"user\":\"x\",\"n\":2}"),
                             body(&t, "{\"n\":3}")};
    expect(r, 3, "{\"user\":{\"id\":1},\"n\":3}", "{\"user\":{\"id\":1},\"n\":3}");
    /* a null keyed part that is replaced */
    struct merge_part s1[] = {kind(&k, MERGE_PART_NULL), body(&t, "{\"user\":2}")};
    expect(s1, 2, "{\"user\":2}", "{\"user\":2}");
    struct merge_part s2[] = {body(&t, "{\"user\":2}"), kind(&k, MERGE_PART_NULL)};
    expect(s2, 2, "{\"user\":null}", "{\"user\":null}");
}

/* Many members, all repeated: the sort keeps it O(m log m) (a pairwise
 * check would be 10^10 comparisons here and time out). */
static void test_duplicate_many(void **state)
{
    (void)state;
    enum { M = 100000 };
    struct backend_conf a = backend("a", NULL, NULL, 0);
    struct backend_conf b = backend("b", NULL, NULL, 0);
    buf_t x, y, out;
    buf_init(&x, NULL);
    buf_init(&y, NULL);
    buf_init(&out, NULL);
    assert_int_equal(buf_putc(&x, '{'), 0);
    assert_int_equal(buf_putc(&y, '{'), 0);
    for (int i = 0; i < M; i++) {
        assert_int_equal(buf_printf(&x, "%s\"m%d\":%d", i ? "," : "", i, i), 0);
        assert_int_equal(buf_printf(&y, "%s\"m%d\":%d", i ? "," : "", M - 1 - i, -i), 0);
    }
    assert_int_equal(buf_putc(&x, '}'), 0);
    assert_int_equal(buf_putc(&y, '}'), 0);
    struct merge_part p[] = {
        {.b = &a, .body = x.data, .len = x.len, .kind = MERGE_PART_BODY},
        {.b = &b, .body = y.data, .len = y.len, .kind = MERGE_PART_BODY},
    };
    assert_int_equal(merge_check(&a, x.data, x.len, NULL), 0);
    assert_int_equal(merge_build(&out, p, 2), 0);
    cJSON *j = cJSON_ParseWithLength(out.data, out.len);
    assert_non_null(j);
    assert_int_equal(cJSON_GetArraySize(j), M);
    /* b's value, at a's position: m0 first, holding -(M-1) */
    assert_string_equal(j->child->string, "m0");
    assert_int_equal(j->child->valueint, -(M - 1));
    cJSON_Delete(j);
    buf_free(&x);
    buf_free(&y);
    buf_free(&out);
}

/* The same cases through the sort (the fallback for colliding names). */
/* Merges with a policy; returns merge_build_policy's rc, out in *got. */
static int merge_policy(const struct merge_part *p, size_t n, enum on_conflict pol, char *got,
                        size_t cap, struct merge_conflict *cf)
{
    buf_t out;
    buf_init(&out, NULL);
    int rc = merge_build_policy(&out, p, n, pol, cf);
    snprintf(got, cap, "%s", out.data ? out.data : "");
    buf_free(&out);
    return rc;
}

/* on_conflict: last (merge_build), first, error naming member and parts. */
static void test_conflict_policies(void **state)
{
    (void)state;
    struct backend_conf a = backend("a", NULL, NULL, 0);
    struct backend_conf b = backend("b", NULL, NULL, 0);
    struct backend_conf k = backend("k", "x", NULL, 0);
    struct merge_part p[] = {body(&a, "{\"id\":1,\"x\":0,\"n\":1}"), body(&b, "{\"id\":2,\"m\":2}"),
                             body(&k, "[7]")};
    char got[256];
    struct merge_conflict cf = {0};
    assert_int_equal(merge_policy(p, 3, CONFLICT_LAST, got, sizeof got, &cf), 0);
    assert_string_equal(got, "{\"id\":2,\"x\":[7],\"n\":1,\"m\":2}");
    assert_int_equal(merge_policy(p, 3, CONFLICT_FIRST, got, sizeof got, &cf), 0);
    assert_string_equal(got, "{\"id\":1,\"x\":0,\"n\":1,\"m\":2}");
    assert_int_equal(merge_policy(p, 3, CONFLICT_ERROR, got, sizeof got, &cf), -EEXIST);
    assert_string_equal(got, ""); /* out unchanged */
    assert_string_equal(cf.name, "id");
    assert_int_equal(cf.a, 0);
    assert_int_equal(cf.b, 1);
    /* a key against a member; escaped names are reported decoded */
    struct merge_part q[] = {body(&a, "{\"\\u0078\":0}"), body(&k, "1")};
    assert_int_equal(merge_policy(q, 2, CONFLICT_ERROR, got, sizeof got, &cf), -EEXIST);
    assert_string_equal(cf.name, "x");
    assert_int_equal(cf.a, 0);
    assert_int_equal(cf.b, 1);
    /* a repeat inside one body is no conflict: last wins ("first": first) */
    struct merge_part r[] = {body(&a, "{\"v\":1,\"v\":2}"), body(&b, "{\"w\":3}")};
    assert_int_equal(merge_policy(r, 2, CONFLICT_ERROR, got, sizeof got, &cf), 0);
    assert_string_equal(got, "{\"v\":2,\"w\":3}");
    assert_int_equal(merge_policy(r, 2, CONFLICT_FIRST, got, sizeof got, &cf), 0);
    assert_string_equal(got, "{\"v\":1,\"w\":3}");
    /* no repeated name: every policy splices as before */
    struct merge_part s1[] = {body(&a, "{\"v\":1}"), body(&b, "{\"w\":2}")};
    assert_int_equal(merge_policy(s1, 2, CONFLICT_ERROR, got, sizeof got, &cf), 0);
    assert_string_equal(got, "{\"v\":1,\"w\":2}");
    /* many members (the hash), first and error */
    buf_t x, y;
    buf_init(&x, NULL);
    buf_init(&y, NULL);
    assert_int_equal(buf_putc(&x, '{'), 0);
    assert_int_equal(buf_putc(&y, '{'), 0);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(buf_printf(&x, "%s\"m%d\":%d", i ? "," : "", i, i), 0);
        assert_int_equal(buf_printf(&y, "%s\"n%d\":%d", i ? "," : "", i, i), 0);
    }
    assert_int_equal(buf_puts(&y, ",\"m42\":-1}"), 0);
    assert_int_equal(buf_putc(&x, '}'), 0);
    struct merge_part t[] = {body(&a, x.data), body(&b, y.data)};
    assert_int_equal(merge_policy(t, 2, CONFLICT_ERROR, got, sizeof got, &cf), -EEXIST);
    assert_string_equal(cf.name, "m42");
    buf_t out;
    buf_init(&out, NULL);
    assert_int_equal(merge_build_policy(&out, t, 2, CONFLICT_FIRST, NULL), 0);
    assert_non_null(strstr(out.data, "\"m42\":42"));
    assert_null(strstr(out.data, "-1"));
    buf_free(&out);
    buf_free(&x);
    buf_free(&y);
}

static void test_duplicate_sorted(void **state)
{
    merge_test_force_sort(true);
    test_duplicate_members(state);
    test_duplicate_key_and_member(state);
    test_duplicate_many(state);
    test_conflict_policies(state);
    merge_test_force_sort(false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key),          cmocka_unit_test(test_no_key),
        cmocka_unit_test(test_null_omit),    cmocka_unit_test(test_allow),
        cmocka_unit_test(test_key_escaping), cmocka_unit_test(test_shape_errors),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_duplicate_members),
        cmocka_unit_test(test_duplicate_key_and_member),
        cmocka_unit_test(test_duplicate_many),
        cmocka_unit_test(test_conflict_policies),
        cmocka_unit_test(test_duplicate_sorted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
