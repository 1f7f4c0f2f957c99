/* Tests gateway/framing.c's pure parts: the absolute-form target and the
 * per-connection memory (framing_check needs a live connection: see
 * tests/integration/test_http.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gateway/framing.h"

static void origin_path(void **state)
{
    (void)state;
    assert_string_equal(framing_origin_path("/api/x"), "/api/x");
    assert_string_equal(framing_origin_path("http://x/api/x"), "/api/x");
    assert_string_equal(framing_origin_path("HTTPS://h:8080/a/b"), "/a/b");
    assert_string_equal(framing_origin_path("http://x"), "/");
    assert_string_equal(framing_origin_path("*"), "*");
    assert_string_equal(framing_origin_path("ftp://x/a"), "ftp://x/a");
}

static void conn_memory_leaves_room(void **state)
{
    (void)state;
    /* a full header block, a Cookie copy of the same size and the answer */
    assert_true(framing_conn_memory(16384) >= 2 * 16384 + 8192);
    assert_true(framing_conn_memory(1024) > framing_conn_memory(1023));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(origin_path),
        cmocka_unit_test(conn_memory_leaves_room),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
