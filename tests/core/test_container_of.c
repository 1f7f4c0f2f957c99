/* core/container_of.h: the one container_of recovers the embedding struct
 * from a pointer to any of its members. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/container_of.h"

struct inner {
    int x;
};

struct outer {
    char c;
    struct inner first_inner;
    double d;
    struct inner last;
};

static void test_members(void **state)
{
    (void)state;
    struct outer o;
    assert_ptr_equal(container_of(&o.c, struct outer, c), &o);
    assert_ptr_equal(container_of(&o.first_inner, struct outer, first_inner), &o);
    assert_ptr_equal(container_of(&o.d, struct outer, d), &o);
    assert_ptr_equal(container_of(&o.last, struct outer, last), &o);
    /* through a pointer of the member's type, as callbacks get it */
    struct inner *in = &o.last;
    struct outer *back = container_of(in, struct outer, last);
    back->d = 2.5;
    assert_true(o.d == 2.5);
}

/* The argument is evaluated once, so an expression with a side effect is
 * safe. */
static void test_evaluates_once(void **state)
{
    (void)state;
    struct outer arr[2];
    struct inner *p = &arr[0].last;
    struct outer *o = container_of(p++, struct outer, last);
    assert_ptr_equal(o, &arr[0]);
    assert_ptr_equal(p, &arr[0].last + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_members),
        cmocka_unit_test(test_evaluates_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
