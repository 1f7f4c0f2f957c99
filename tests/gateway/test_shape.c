/* Tests for gateway/shape.c: target, allow, deny (dot paths, into arrays,
 * absent members), rename, their order, raw bytes kept as sent, and the
 * cost against cJSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/loop.h"
#include "gateway/json.h"
#include "gateway/shape.h"

static char *q(const char *s)
{
    char *out = strdup(s);
    for (char *c = out; *c; c++)
        if (*c == '\'') *c = '"';
    return out;
}

/* Shapes body (quotes as ') with sh; expects want (quotes as '), or NULL
 * for a failure with why. */
static void expect(const struct shape_conf *sh, const char *body, const char *want,
                   const char *want_why)
{
    char *b = q(body);
    assert_true(json_valid(b, strlen(b)));
    buf_t out;
    buf_init(&out, NULL);
    assert_int_equal(buf_puts(&out, "<"), 0);
    const char *why = NULL;
    int rc = shape_apply(&out, sh, b, strlen(b), &why);
    if (want) {
        char *w = q(want);
        if (rc != 0 || strcmp(out.data + 1, w) != 0)
            print_message("body %s\nwant %s\ngot  %s (rc %d)\n", b, w, out.data + 1, rc);
        assert_int_equal(rc, 0);
        assert_string_equal(out.data + 1, w);
        assert_true(json_valid(out.data + 1, out.len - 1));
        free(w);
    } else {
        assert_int_equal(rc, -EINVAL);
        assert_string_equal(why, want_why);
        assert_string_equal(out.data, "<"); /* unchanged */
    }
    buf_free(&out);
    free(b);
}

static const char *const *L(const char *a, const char *b, const char *c)
{
    static const char *v[4];
    v[0] = a;
    v[1] = b;
    v[2] = c;
    v[3] = NULL;
    return v;
}

static size_t count(const char *const *v)
{
    size_t n = 0;
    while (v[n])
        n++;
    return n;
}

static void test_target(void **state)
{
    (void)state;
    struct shape_conf sh = {.target = "data.user"};
    expect(&sh, "{'data':{'user':{'id':1, 'n':64.0}},'x':2}", "{'id':1, 'n':64.0}", NULL);
    expect(&sh, "{'data':{'other':1}}", NULL, "missing target");
    expect(&sh, "{'data':[1]}", NULL, "missing target");
    expect(&sh, "[1]", NULL, "missing target");
    sh.target = "list.1";
    expect(&sh, " {'list':[ 'a' , 'b\\u0041' ]} ", "'b\\u0041'", NULL); /* raw, escapes kept */
    sh.target = "v";
    expect(&sh, "{'v':null}", "null", NULL);
    buf_t out;
    buf_init(&out, NULL);
    const char *why = NULL;
    assert_int_equal(shape_apply(&out, &sh, "", 0, &why), -EINVAL); /* an empty body */
    assert_string_equal(why, "missing target");
    buf_free(&out);
}

static void test_allow(void **state)
{
    (void)state;
    struct shape_conf sh = {0};
    sh.allow = (const char **)L("a", "c.d", "e.1.f");
    sh.n_allow = count(sh.allow);
    /* order of the body kept, numbers and strings as written */
    expect(&sh, "{'z':1,'c':{'d':1.50,'x':2},'a':'\\u00e9','e':[{'f':1,'g':2},{'f':3,'g':4}]}",
           "{'c':{'d':1.50},'a':'\\u00e9','e':[{'f':3}]}", NULL);
    /* absent members, a path into a scalar, into the wrong type */
    expect(&sh, "{'c':5,'e':{'1':{'f':0}},'q':1}", "{'e':{'1':{'f':0}}}", NULL);
    expect(&sh, "{'c':{},'e':[]}", "{'c':{},'e':[]}", NULL);
    expect(&sh, "{}", "{}", NULL);
    /* a whole member wins over a deeper path to it */
    sh.allow = (const char **)L("c", "c.d", NULL);
    sh.n_allow = 2;
    expect(&sh, "{'c':{'d':1,'x':2}}", "{'c':{'d':1,'x':2}}", NULL);
    /* an empty list keeps nothing */
    sh.allow = (const char **)L(NULL, NULL, NULL);
    sh.n_allow = 0;
    expect(&sh, "{'a':1}", "{}", NULL);
    /* escaped member names match their decoded form */
    sh.allow = (const char **)L("ab", NULL, NULL);
    sh.n_allow = 1;
    expect(&sh, "{'a\\u0062':1,'ab':2,'x':3}", "{'a\\u0062':1,'ab':2}", NULL);
    /* a scalar body passes through */
    expect(&sh, "42", "42", NULL);
}

static void test_deny(void **state)
{
    (void)state;
    struct shape_conf sh = {0};
    sh.deny = (const char **)L("secret", "user.address.zip", "list.0");
    sh.n_deny = count(sh.deny);
    expect(&sh,
           "{'secret':1,'user':{'name':'x','address':{'zip':'123','city':'y'}},"
           "'list':[1,2,3],'n':1e5}",
           "{'user':{'name':'x','address':{'city':'y'}},'list':[2,3],'n':1e5}", NULL);
    /* absent members: nothing happens */
    expect(&sh, "{'user':{'address':7},'other':[]}", "{'user':{'address':7},'other':[]}", NULL);
    sh.deny = (const char **)L("items.1.price", NULL, NULL);
    sh.n_deny = 1;
    expect(&sh, "[{'items':1}]", "[{'items':1}]", NULL);
    expect(&sh, "{'items':[{'price':1,'a':1},{'price':2,'a':2}]}",
           "{'items':[{'price':1,'a':1},{'a':2}]}", NULL);
}

static void test_rename_and_order(void **state)
{
    (void)state;
    struct shape_conf sh = {0};
    const char *from[] = {"a", "b"}, *to[] = {"x", "q\"uote"};
    sh.rename_from = from;
    sh.rename_to = to;
    sh.n_rename = 2;
    expect(&sh, "{'a':1,'c':{'a':2},'b':true}", "{'x':1,'c':{'a':2},'q\\\"uote':true}", NULL);
    expect(&sh, "[1]", "[1]", NULL); /* not an object: nothing to rename */
    /* target, then allow, then rename */
    sh.target = "data";
    sh.allow = (const char **)L("a", "b.k", NULL);
    sh.n_allow = 2;
    expect(&sh, "{'data':{'a':1,'b':{'k':2,'j':3},'c':4},'a':9}", "{'x':1,'q\\\"uote':{'k':2}}",
           NULL);
}

/* Shaping cost next to cJSON (parse, delete the denied member, print) on a
 * ~6 KB body; printed, loosely bounded. */
static void test_cost(void **state)
{
    (void)state;
    buf_t body;
    buf_init(&body, NULL);
    assert_int_equal(buf_puts(&body, "{\"data\":{\"items\":["), 0);
    for (int i = 0; i < 60; i++)
        assert_int_equal(buf_printf(&body,
                                    "%s{\"id\":%d,\"name\":\"item %d\",\"price\":%d.50,"
                                    "\"secret\":\"s\"}",
                                    i ? "," : "", i, i, i),
                         0);
    assert_int_equal(buf_puts(&body, "],\"total\":60,\"secret\":\"x\"}}"), 0);
    struct shape_conf sh = {.target = "data"};
    sh.deny = (const char **)L("secret", NULL, NULL);
    sh.n_deny = 1;
    buf_t out;
    buf_init(&out, NULL);
    const int rounds = 2000;
    uint64_t t0 = mono_ns();
    for (int r = 0; r < rounds; r++) {
        buf_clear(&out);
        assert_int_equal(shape_apply(&out, &sh, body.data, body.len, NULL), 0);
    }
    double ours = (double)(mono_ns() - t0) / rounds / 1000;
    t0 = mono_ns();
    for (int r = 0; r < rounds; r++) {
        cJSON *root = cJSON_ParseWithLength(body.data, body.len);
        cJSON *data = cJSON_DetachItemFromObject(root, "data");
        cJSON_DeleteItemFromObject(data, "secret");
        char *s = cJSON_PrintUnformatted(data);
        assert_non_null(s);
        free(s);
        cJSON_Delete(data);
        cJSON_Delete(root);
    }
    double cj = (double)(mono_ns() - t0) / rounds / 1000;
    print_message("shaping %zu bytes: %.1f us here, %.1f us with cJSON\n", body.len, ours, cj);
    buf_free(&out);
    buf_free(&body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_target), cmocka_unit_test(test_allow),
        cmocka_unit_test(test_deny),   cmocka_unit_test(test_rename_and_order),
        cmocka_unit_test(test_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
