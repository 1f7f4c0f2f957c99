/* tests/gateway/test_cachectl: Cache-Control parsing and the freshness rule
 * (gateway/cachectl.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/cachectl.h"
#include "gateway/h1resp.h"

static struct cache_control parse(const char *value)
{
    struct cache_control cc;
    cachectl_init(&cc);
    cachectl_header(&cc, "cache-control", 13, value, strlen(value));
    return cc;
}

static uint32_t honored(const char *value, uint32_t ttl_ms)
{
    struct cache_control cc = parse(value);
    return cachectl_fresh_ms(&cc, true, ttl_ms);
}

static uint32_t ignored(const char *value, uint32_t ttl_ms)
{
    struct cache_control cc = parse(value);
    return cachectl_fresh_ms(&cc, false, ttl_ms);
}

static void test_directives(void **state)
{
    (void)state;
    struct cache_control cc = parse("public, max-age=60, s-maxage=5");
    assert_int_equal(cc.flags, CC_MAX_AGE | CC_S_MAXAGE);
    assert_int_equal(cc.max_age, 60);
    assert_int_equal(cc.s_maxage, 5);
    cc = parse("No-Store");
    assert_int_equal(cc.flags, CC_NO_STORE);
    cc = parse("private=\"Set-Cookie, X-A\", no-cache");
    assert_int_equal(cc.flags, CC_PRIVATE | CC_NO_CACHE);
    cc = parse("  max-age=0 ,, must-revalidate, ext=\"a\\\"b\"");
    assert_int_equal(cc.flags, CC_MAX_AGE);
    assert_int_equal(cc.max_age, 0);
    /* other fields are ignored, several Cache-Control fields add up */
    cachectl_init(&cc);
    cachectl_header(&cc, "Content-Type", 12, "no-store", 8);
    assert_int_equal(cc.flags, 0);
    cachectl_header(&cc, "Cache-Control", 13, "max-age=3", 9);
    cachectl_header(&cc, "CACHE-CONTROL", 13, "private", 7);
    assert_int_equal(cc.flags, CC_MAX_AGE | CC_PRIVATE);
    /* a raw line as curl hands it; a status line starts over (after a 1xx) */
    cachectl_init(&cc);
    cachectl_line(&cc, "HTTP/1.1 103 Early Hints\r\n", 26);
    cachectl_line(&cc, "Cache-Control: no-store\r\n", 25);
    cachectl_line(&cc, "HTTP/1.1 200 OK\r\n", 17);
    cachectl_line(&cc, "Cache-Control:\tmax-age=7 \r\n", 27);
    cachectl_line(&cc, "\r\n", 2);
    assert_int_equal(cc.flags, CC_MAX_AGE);
    assert_int_equal(cc.max_age, 7);
}

/* The native transport's parser hands fields over through the h1resp hook. */
static void test_h1resp_hook(void **state)
{
    (void)state;
    static struct h1resp p;
    struct cache_control cc;
    cachectl_init(&cc);
    h1resp_init(&p, false, NULL, NULL);
    h1resp_on_header(&p, cachectl_h1_header, &cc);
    static const char r[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                            "Cache-Control:  s-maxage=30 , private\r\n\r\n{}";
    size_t used = 0;
    assert_int_equal(h1resp_feed(&p, r, sizeof r - 1, &used), H1_DONE);
    assert_int_equal(cc.flags, CC_S_MAXAGE | CC_PRIVATE);
    assert_int_equal(cc.s_maxage, 30);
}

/* Malformed, huge or overflowing: never a long TTL, not served at all. */
static void test_bad_input(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "max-age=99999999999", /* overflows */
        "max-age=2147483649",  /* over 2^31 */
        "max-age=-1",
        "max-age=1e3",
        "max-age=\"60\"",
        "max-age",
        "max-age=",
        "max-age=5, max-age=6", /* repeated */
        "s-maxage=0x10",
        "=5",
        "max-age=5 6",
        "ext=\"unterminated",
        "max-age=5;x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct cache_control cc = parse(bad[i]);
        assert_true(cc.flags & CC_INVALID);
        assert_int_equal(honored(bad[i], 5000), 0);
        assert_int_equal(ignored(bad[i], 5000), 0);
    }
    char huge[CACHECTL_MAX_VALUE + 2];
    memset(huge, 'a', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    assert_int_equal(honored(huge, 5000), 0);
    /* many small fields add up to the same bound */
    struct cache_control cc;
    cachectl_init(&cc);
    for (int i = 0; i < CACHECTL_MAX_VALUE / 8 + 1; i++)
        cachectl_header(&cc, "Cache-Control", 13, "public, ", 8);
    assert_true(cc.flags & CC_INVALID);
    assert_int_equal(cachectl_fresh_ms(&cc, true, 5000), 0);
}

static void test_freshness(void **state)
{
    (void)state;
    /* honor_headers: s-maxage, else max-age, else ttl_ms */
    assert_int_equal(honored("max-age=1", 5000), 1000);
    assert_int_equal(honored("max-age=60, s-maxage=2", 5000), 2000);
    assert_int_equal(honored("public", 5000), 5000);
    assert_int_equal(honored("", 0), 0);
    assert_int_equal(honored("max-age=0", 5000), 0);
    /* never more than 24 h */
    assert_int_equal(honored("max-age=2147483648", 5000), CACHECTL_MAX_FRESH_MS);
    /* never served from the cache */
    assert_int_equal(honored("no-store, max-age=60", 5000), 0);
    assert_int_equal(honored("private, max-age=60", 5000), 0);
    assert_int_equal(honored("no-cache", 5000), 0);
    /* without honor_headers: ttl_ms, but no-store is still obeyed */
    assert_int_equal(ignored("max-age=1", 5000), 5000);
    assert_int_equal(ignored("private", 5000), 5000);
    assert_int_equal(ignored("no-store", 5000), 0);
    assert_int_equal(ignored("", 0), 0);
    struct cache_control none;
    cachectl_init(&none);
    assert_int_equal(cachectl_fresh_ms(&none, false, 250), 250);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_directives),
        cmocka_unit_test(test_h1resp_hook),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_freshness),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
