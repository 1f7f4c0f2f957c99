#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/avalue.h"

#define NFIELDS 8
#define MAGIC   0x5a5a5a5a5a5a5a5aull

struct snap {
    av_snap_t hdr;
    uint64_t seq;
    uint64_t f[NFIELDS];
    uint64_t magic;
};

static atomic_ulong n_frees;

static void snap_free(void *p)
{
    struct snap *s = p;
    s->magic = 0; /* a reader that still used it would see this (plain build) */
    free(s);
    atomic_fetch_add(&n_frees, 1);
}

static struct snap *snap_new(uint64_t seq)
{
    struct snap *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->seq = seq;
    for (int i = 0; i < NFIELDS; i++)
        s->f[i] = seq * (uint64_t)(i + 1) + 7;
    s->magic = MAGIC;
    return s;
}

/* false if the snapshot is torn or freed */
static bool snap_ok(const struct snap *s)
{
    if (s->magic != MAGIC) return false;
    for (int i = 0; i < NFIELDS; i++)
        if (s->f[i] != s->seq * (uint64_t)(i + 1) + 7) return false;
    return true;
}

static void test_basic(void **state)
{
    (void)state;
    avalue_t v;
    av_init(&v, snap_free);
    atomic_store(&n_frees, 0);

    assert_null(av_acquire(&v));
    av_read_lock();
    assert_null(av_load(&v));
    av_read_unlock();

    struct snap *a = snap_new(1);
    av_store(&v, a);
    struct snap *p = av_acquire(&v);
    assert_ptr_equal(p, a);
    av_release(&v, p);

    av_read_lock();
    assert_ptr_equal(av_load(&v), a);
    av_read_unlock();

    /* swap hands back the old one pinned */
    struct snap *b = snap_new(2);
    struct snap *old = av_swap(&v, b);
    assert_ptr_equal(old, a);
    av_barrier();
    assert_int_equal(atomic_load(&n_frees), 0);
    assert_true(snap_ok(old));
    av_release(&v, old);
    av_barrier();
    assert_int_equal(atomic_load(&n_frees), 1);

    /* cas: wrong expected fails and leaves new with the caller */
    struct snap *c = snap_new(3);
    assert_false(av_cas(&v, a, c));
    p = av_acquire(&v);
    assert_ptr_equal(p, b);
    assert_true(av_cas(&v, p, c));
    av_release(&v, p);
    /* cas with new == expected changes nothing */
    assert_true(av_cas(&v, c, c));
    assert_false(av_cas(&v, b, b));

    /* retain adds a pin */
    p = av_acquire(&v);
    assert_ptr_equal(av_retain(p), c);
    av_release(&v, p);
    av_release(&v, p);

    av_store(&v, NULL);
    assert_null(av_acquire(&v));
    av_destroy(&v);
    assert_int_equal(atomic_load(&n_frees), 3);
}

static void test_destroy_frees_current(void **state)
{
    (void)state;
    avalue_t v;
    av_init(&v, snap_free);
    atomic_store(&n_frees, 0);
    av_store(&v, snap_new(1));
    av_destroy(&v);
    assert_int_equal(atomic_load(&n_frees), 1);

    /* free_fn NULL: free() (ASan/LSan would report a leak or a bad free) */
    av_init(&v, NULL);
    av_store(&v, snap_new(1));
    av_store(&v, snap_new(2));
    av_destroy(&v);
}

static void test_pin_across_many_swaps(void **state)
{
    (void)state;
    avalue_t v;
    av_init(&v, snap_free);
    atomic_store(&n_frees, 0);

    av_store(&v, snap_new(0));
    struct snap *pinned = av_acquire(&v);
    const unsigned n = 1000;
    for (unsigned i = 1; i <= n; i++)
        av_store(&v, snap_new(i));
    av_barrier();
    /* every replaced snapshot but the pinned one is gone */
    assert_int_equal(atomic_load(&n_frees), n - 1);
    assert_int_equal(pinned->seq, 0);
    assert_true(snap_ok(pinned));
    /* its owner reference went long ago: the last pin frees it at once */
    av_release(&v, pinned);
    assert_int_equal(atomic_load(&n_frees), n);

    av_destroy(&v);
    assert_int_equal(atomic_load(&n_frees), n + 1);
}

#define READERS 4
#define SWAPS   100000

struct stress {
    avalue_t v;
    atomic_bool stop;
    atomic_ulong reads;
    atomic_ulong bad;
    atomic_ulong stores;
};

static void *reader(void *arg)
{
    struct stress *st = arg;
    uint64_t last = 0, n = 0, bad = 0;
    while (!atomic_load_explicit(&st->stop, memory_order_acquire)) {
        const struct snap *s;
        if (n % 4 == 3) {
            /* the unpinned path */
            av_read_lock();
            s = av_load(&st->v);
            if (!s || !snap_ok(s) || s->seq < last)
                bad++;
            else
                last = s->seq;
            av_read_unlock();
        } else {
            s = av_acquire(&st->v);
            /* a pinned snapshot stays whole while the writer moves on */
            for (int k = 0; k < 2; k++)
                if (!s || !snap_ok(s) || s->seq < last) bad++;
            if (s) last = s->seq;
            av_release(&st->v, (void *)s);
        }
        n++;
    }
    atomic_fetch_add(&st->reads, n);
    atomic_fetch_add(&st->bad, bad);
    return NULL;
}

static void test_stress_readers_writer(void **state)
{
    (void)state;
    struct stress *st = calloc(1, sizeof *st);
    assert_non_null(st);
    av_init(&st->v, snap_free);
    atomic_store(&n_frees, 0);
    av_store(&st->v, snap_new(0));
    unsigned long stores = 1;

    pthread_t th[READERS];
    for (int i = 0; i < READERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, reader, st), 0);

    uint64_t seq = 1;
    for (unsigned i = 0; i < SWAPS; i++, seq++) {
        switch (i % 3) {
        case 0:
            av_store(&st->v, snap_new(seq));
            break;
        case 1: {
            struct snap *old = av_swap(&st->v, snap_new(seq));
            assert_true(old && snap_ok(old) && old->seq == seq - 1);
            av_release(&st->v, old);
            break;
        }
        default: {
            struct snap *cur = av_acquire(&st->v);
            assert_true(av_cas(&st->v, cur, snap_new(seq)));
            av_release(&st->v, cur);
            break;
        }
        }
        stores++;
    }
    atomic_store_explicit(&st->stop, true, memory_order_release);
    for (int i = 0; i < READERS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);

    assert_int_equal(atomic_load(&st->bad), 0);
    assert_true(atomic_load(&st->reads) >= READERS);
    av_destroy(&st->v);
    assert_int_equal(atomic_load(&n_frees), stores);
    free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_destroy_frees_current),
        cmocka_unit_test(test_pin_across_many_swaps),
        cmocka_unit_test(test_stress_readers_writer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
