#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/pool.h"

/* ---- pool ---- */

static void test_blocks_reuse_and_counters(void **state)
{
    (void)state;
    pool_t *p = pool_new("blocks", 64, 2, NULL);
    assert_non_null(p);
    assert_string_equal(pool_name(p), "blocks");
    assert_int_equal(pool_obj_size(p), 64);

    char *a = pool_get(p);
    assert_non_null(a);
    memset(a, 'x', 64); /* the whole block is usable */
    assert_int_equal(pool_misses(p), 1);
    assert_int_equal(pool_hits(p), 0);

    pool_put(p, a);
    assert_int_equal(pool_cached(p), 1);
    char *b = pool_get(p);
    assert_ptr_equal(b, a); /* reused */
    assert_int_equal(pool_hits(p), 1);
    assert_int_equal(pool_cached(p), 0);
    pool_put(p, b);
    pool_put(p, NULL); /* ignored */
    assert_int_equal(pool_cached(p), 1);
    pool_free(p);
}

struct hooks {
    int news, resets, frees;
};

struct obj {
    int live;
    int dirty;
};

static void *obj_new(void *ud)
{
    struct hooks *h = ud;
    struct obj *o = calloc(1, sizeof *o);
    if (o) {
        o->live = 1;
        h->news++;
    }
    return o;
}

static void obj_reset(void *obj, void *ud)
{
    struct hooks *h = ud;
    ((struct obj *)obj)->dirty = 0;
    h->resets++;
}

static void obj_free(void *obj, void *ud)
{
    struct hooks *h = ud;
    h->frees++;
    free(obj);
}

static void test_hooks_and_bounds(void **state)
{
    (void)state;
    struct hooks h = {0};
    struct pool_ops ops = {obj_new, obj_reset, obj_free, &h};
    pool_t *p = pool_new("objs", sizeof(struct obj), 3, &ops);
    assert_non_null(p);

    struct obj *o[5];
    for (int i = 0; i < 5; i++) {
        o[i] = pool_get(p);
        assert_non_null(o[i]);
        assert_int_equal(o[i]->live, 1);
        o[i]->dirty = 1;
    }
    assert_int_equal(h.news, 5);
    assert_int_equal(pool_misses(p), 5);

    /* 3 fit; the 4th and 5th put beyond max_cached are freed, not reset */
    for (int i = 0; i < 5; i++)
        pool_put(p, o[i]);
    assert_int_equal(pool_cached(p), 3);
    assert_int_equal(h.resets, 3);
    assert_int_equal(h.frees, 2);

    /* cached ones come back reset, without new */
    for (int i = 0; i < 3; i++) {
        struct obj *x = pool_get(p);
        assert_int_equal(x->dirty, 0);
        x->dirty = 1;
        pool_put(p, x);
    }
    assert_int_equal(h.news, 5);
    assert_int_equal(pool_hits(p), 3);

    /* pool_free frees what is cached */
    pool_free(p);
    assert_int_equal(h.frees, 5);
}

static void test_max_cached_zero(void **state)
{
    (void)state;
    pool_t *p = pool_new("nocache", 32, 0, NULL);
    assert_non_null(p);
    void *a = pool_get(p);
    assert_non_null(a);
    pool_put(p, a); /* freed at once (ASan/LSan check it) */
    assert_int_equal(pool_cached(p), 0);
    pool_free(p);
}

/* A burst's excess goes back in two steps (mark, then free in batches);
 * what a steady load uses stays; an object taken after the mark is not
 * freed. */
static void test_idle_objects_are_freed_in_batches(void **state)
{
    (void)state;
    struct hooks h = {0};
    struct pool_ops ops = {obj_new, obj_reset, obj_free, &h};
    pool_t *p = pool_new("objs", sizeof(struct obj), 100, &ops);
    assert_non_null(p);

    /* A burst of 100 at once, then a steady load of 10 at a time. */
    void *o[100];
    for (int i = 0; i < 100; i++)
        o[i] = pool_get(p);
    for (int i = 0; i < 100; i++)
        pool_put(p, o[i]);
    assert_int_equal(pool_mark_idle(p), 0); /* the burst's interval needed all */
    for (int i = 0; i < 10; i++)
        o[i] = pool_get(p);
    for (int i = 0; i < 10; i++)
        pool_put(p, o[i]);
    assert_int_equal(pool_mark_idle(p), 90); /* never fewer than 90 cached */

    /* Freed at most max per call; fewer than max means done. */
    assert_int_equal(pool_free_idle(p, 32), 32);
    assert_int_equal(h.frees, 32);
    assert_int_equal(pool_cached(p), 68);
    /* The steady load takes 10 between two batches: still 58 idle. */
    for (int i = 0; i < 10; i++)
        o[i] = pool_get(p);
    for (int i = 0; i < 10; i++)
        pool_put(p, o[i]);
    assert_int_equal(pool_free_idle(p, 32), 32);
    assert_int_equal(pool_free_idle(p, 32), 26);
    assert_int_equal(pool_free_idle(p, 32), 0);
    assert_int_equal(pool_cached(p), 10);
    assert_int_equal(h.frees, 90);

    /* A get that dips into the idle ones after the mark keeps them. */
    assert_int_equal(pool_mark_idle(p), 0); /* the last interval took all 10 */
    assert_int_equal(pool_mark_idle(p), 10);
    for (int i = 0; i < 4; i++)
        o[i] = pool_get(p);
    assert_int_equal(pool_free_idle(p, 32), 6);
    for (int i = 0; i < 4; i++)
        pool_put(p, o[i]);
    assert_int_equal(pool_cached(p), 4);
    assert_int_equal(h.news, 100);
    pool_free(p);
    assert_int_equal(h.frees, 100);
}

/* Plain blocks (poisoned while cached in ASan builds) are freed cleanly. */
static void test_idle_plain_blocks(void **state)
{
    (void)state;
    pool_t *p = pool_new("blocks", 64, 8, NULL);
    void *b[8];
    for (int i = 0; i < 8; i++)
        b[i] = pool_get(p);
    for (int i = 0; i < 8; i++)
        pool_put(p, b[i]);
    pool_mark_idle(p);
    assert_int_equal(pool_mark_idle(p), 8);
    assert_int_equal(pool_free_idle(p, 100), 8);
    assert_int_equal(pool_cached(p), 0);
    char *x = pool_get(p); /* a new block */
    assert_non_null(x);
    memset(x, 'x', 64);
    pool_put(p, x);
    pool_free(p);
}

/* ---- buf ---- */

/* fmt_u64 against printf over the edges: 0, each power of ten and its
 * predecessor, and UINT64_MAX. */
static void test_fmt_u64(void **state)
{
    (void)state;
    uint64_t v[64];
    size_t n = 0;
    v[n++] = 0;
    v[n++] = UINT64_MAX;
    for (uint64_t p = 1; n < 60; p *= 10) {
        v[n++] = p;
        v[n++] = p - 1 + (p == 1);
        if (p > UINT64_MAX / 10) break;
    }
    buf_t b;
    buf_init(&b, NULL);
    for (size_t i = 0; i < n; i++) {
        char want[32], got[FMT_U64_MAX + 1];
        snprintf(want, sizeof want, "%" PRIu64, v[i]);
        got[fmt_u64(got, v[i])] = '\0';
        assert_string_equal(got, want);
        buf_clear(&b);
        assert_int_equal(buf_put_u64(&b, v[i]), 0);
        assert_string_equal(b.data, want);
    }
    buf_free(&b);
}

static void test_buf_plain(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, NULL);
    assert_null(b.data);
    assert_int_equal(buf_puts(&b, "hello"), 0);
    assert_int_equal(buf_putc(&b, ' '), 0);
    assert_int_equal(buf_printf(&b, "%d-%s", 42, "x"), 0);
    assert_string_equal(b.data, "hello 42-x");
    assert_int_equal(b.len, 10);

    /* a printf longer than its stack scratch */
    char big[600];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(buf_printf(&b, "[%s]", big), 0);
    assert_int_equal(b.len, 10 + 601);
    assert_int_equal(b.data[b.len], '\0');
    assert_int_equal(b.data[10], '[');
    assert_int_equal(b.data[b.len - 1], ']');

    buf_clear(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(buf_reserve(&b, SIZE_MAX - 4), -ENOMEM);
    assert_int_equal(b.len, 0);
    buf_free(&b);
    assert_null(b.data);
}

static void test_buf_from_pool_block(void **state)
{
    (void)state;
    pool_t *p = pool_new("bufs", 64, 4, NULL);
    assert_non_null(p);

    buf_t b;
    buf_init(&b, p);
    assert_int_equal(buf_puts(&b, "small"), 0);
    assert_true(b.pooled);
    assert_int_equal(b.cap, 64);
    assert_int_equal(pool_misses(p), 1);
    char *block = b.data;
    buf_free(&b);
    assert_int_equal(pool_cached(p), 1);

    /* the next buffer gets the same block */
    assert_int_equal(buf_puts(&b, "again"), 0);
    assert_ptr_equal(b.data, block);
    assert_int_equal(pool_hits(p), 1);

    /* growing out of the block: content kept, block back in the pool */
    char line[40];
    memset(line, 'a', sizeof line - 1);
    line[sizeof line - 1] = '\0';
    assert_int_equal(buf_puts(&b, line), 0);
    assert_true(b.pooled); /* 5 + 39 + 1 still fits 64 */
    assert_int_equal(buf_puts(&b, line), 0);
    assert_false(b.pooled);
    assert_true(b.cap >= b.len + 1);
    assert_int_equal(b.len, 5 + 2 * 39);
    assert_memory_equal(b.data, "again", 5);
    assert_int_equal(b.data[5 + 39], 'a');
    assert_int_equal(b.data[b.len], '\0');
    assert_int_equal(pool_cached(p), 1);
    buf_free(&b);

    /* too big for a block from the start: plain malloc, pool untouched */
    uint64_t gets = pool_hits(p) + pool_misses(p);
    char large[100];
    memset(large, 'L', sizeof large);
    assert_int_equal(buf_append(&b, large, sizeof large), 0);
    assert_false(b.pooled);
    assert_int_equal(pool_hits(p) + pool_misses(p), gets);
    buf_free(&b);

    pool_free(p);
}

static void test_buf_detach(void **state)
{
    (void)state;
    pool_t *p = pool_new("bufs", 64, 4, NULL);
    assert_non_null(p);

    /* pooled: detach copies out and returns the block */
    buf_t b;
    buf_init(&b, p);
    assert_int_equal(buf_puts(&b, "pooled"), 0);
    size_t len = 0;
    char *s = buf_detach(&b, &len);
    assert_non_null(s);
    assert_string_equal(s, "pooled");
    assert_int_equal(len, 6);
    assert_int_equal(pool_cached(p), 1);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    free(s);

    /* malloc'ed: detach hands over the storage itself */
    char large[100];
    memset(large, 'L', sizeof large);
    assert_int_equal(buf_append(&b, large, sizeof large), 0);
    char *storage = b.data;
    s = buf_detach(&b, NULL);
    assert_ptr_equal(s, storage);
    assert_int_equal(s[100], '\0');
    free(s);

    /* empty: an empty string, still the caller's to free */
    s = buf_detach(&b, &len);
    assert_non_null(s);
    assert_string_equal(s, "");
    assert_int_equal(len, 0);
    free(s);

    /* the buffer is usable after a detach and keeps its pool */
    assert_int_equal(buf_puts(&b, "x"), 0);
    assert_true(b.pooled);
    buf_free(&b);
    pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks_reuse_and_counters),
        cmocka_unit_test(test_hooks_and_bounds),
        cmocka_unit_test(test_max_cached_zero),
        cmocka_unit_test(test_buf_plain),
        cmocka_unit_test(test_fmt_u64),
        cmocka_unit_test(test_idle_objects_are_freed_in_batches),
        cmocka_unit_test(test_idle_plain_blocks),
        cmocka_unit_test(test_buf_from_pool_block),
        cmocka_unit_test(test_buf_detach),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
