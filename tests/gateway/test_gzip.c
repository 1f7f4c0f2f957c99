/*
 * test_gzip: the Accept-Encoding decision (gzip.c) and the pooled deflate
 * stream: round trips through zlib's inflate, level changes on the same
 * stream; prints the CPU cost per KiB at level 1.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include <cmocka.h>

#include "gateway/gzip.h"

static void test_accept_encoding(void **state)
{
    (void)state;
    assert_false(gzip_accepts(NULL));
    assert_false(gzip_accepts(""));
    assert_true(gzip_accepts("gzip"));
    assert_true(gzip_accepts("GZip"));
    assert_true(gzip_accepts("x-gzip"));
    assert_true(gzip_accepts("deflate, gzip, br"));
    assert_true(gzip_accepts("br;q=1.0, gzip;q=0.8, *;q=0.1"));
    assert_true(gzip_accepts("gzip ; q=0.001"));
    assert_false(gzip_accepts("gzip;q=0"));
    assert_false(gzip_accepts("gzip;q=0.000"));
    assert_false(gzip_accepts("gzip;q=0, *"));    /* explicit no beats * */
    assert_false(gzip_accepts("*, gzip;q=0"));    /* in any order */
    assert_true(gzip_accepts("*"));               /* * counts */
    assert_true(gzip_accepts("br, *;q=0.5"));
    assert_false(gzip_accepts("*;q=0"));
    assert_false(gzip_accepts("br, deflate"));
    assert_false(gzip_accepts("identity"));
    assert_false(gzip_accepts("gzipx, xgzip"));
    assert_false(gzip_accepts("gzip;q=2"));       /* malformed: skipped */
    assert_false(gzip_accepts("gzip;q=abc"));
    assert_true(gzip_accepts("gzip;q=abc, *"));   /* the malformed member is skipped */
    assert_true(gzip_accepts(",,gzip,"));
    assert_true(gzip_accepts("gzip;level=1;q=0.5"));
    assert_true(gzip_accepts("identity;q=0, gzip;q=1"));
}

static size_t gunzip(const void *in, size_t n, char *out, size_t cap)
{
    z_stream s = {0};
    assert_int_equal(inflateInit2(&s, 15 + 16), Z_OK);
    s.next_in = (Bytef *)in;
    s.avail_in = (uInt)n;
    s.next_out = (Bytef *)out;
    s.avail_out = (uInt)cap;
    assert_int_equal(inflate(&s, Z_FINISH), Z_STREAM_END);
    size_t got = cap - s.avail_out;
    inflateEnd(&s);
    return got;
}

/* JSON-like: repeated keys, varying numbers (compresses about 4:1 at level 1). */
static char *sample(size_t n)
{
    char *b = malloc(n + 64);
    size_t len = 0;
    unsigned x = 12345;
    while (len < n) {
        x = x * 1103515245u + 12345u;
        len += (size_t)sprintf(b + len, "{\"id\":%u,\"score\":%u,\"name\":\"u%x\"},", x >> 8,
                               (x >> 4) % 1000, x >> 20);
    }
    return b;
}

static void test_round_trip(void **state)
{
    (void)state;
    size_t sizes[] = {0, 1, 1024, 65536, 3 << 20, 100};
    char *out = malloc(4 << 20);
    for (int level = 1; level <= 9; level += 4) {
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            char *in = sample(sizes[i]);
            const void *z;
            size_t zn;
            assert_int_equal(gzip_compress(level, in, sizes[i], &z, &zn), 0);
            if (sizes[i] >= 1024) assert_true(zn < sizes[i]);
            assert_int_equal(gunzip(z, zn, out, 4 << 20), sizes[i]);
            assert_memory_equal(out, in, sizes[i]);
            free(in);
        }
    }
    free(out);
    gzip_thread_free();
    gzip_thread_free(); /* twice is harmless */
}

static void test_cost_per_kib(void **state)
{
    (void)state;
    size_t n = 16384;
    char *in = sample(n);
    const void *z;
    size_t zn = 0;
    int rounds = 2000;
    struct timespec a, b;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    for (int i = 0; i < rounds; i++)
        assert_int_equal(gzip_compress(1, in, n, &z, &zn), 0);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    double us = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / 1e3;
    print_message("gzip level 1: %.2f CPU us per KiB (16 KiB JSON-like body -> %zu bytes)\n",
                  us / rounds / (double)(n / 1024), zn);
    free(in);
    gzip_thread_free();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_encoding),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_cost_per_kib),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
