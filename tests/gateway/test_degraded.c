#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/degraded.h"

static _Atomic uint64_t fake_now = 1000000;

static uint64_t fake_clock(void)
{
    return atomic_load(&fake_now);
}

static struct degraded *store(size_t max)
{
    struct degraded *d = degraded_new(max);
    assert_non_null(d);
    atomic_store(&fake_now, 1000000);
    degraded_set_clock(d, fake_clock);
    return d;
}

static void put_s(struct degraded *d, const char *key, const char *body)
{
    degraded_put(d, key, strlen(key), body, strlen(body));
}

/* The body stored for key (no age limit that matters here), or NULL. */
static const struct degraded_entry *get_s(struct degraded *d, const char *key)
{
    return degraded_get(d, key, strlen(key), UINT32_MAX);
}

static void assert_body(struct degraded *d, const char *key, const char *body)
{
    const struct degraded_entry *e = get_s(d, key);
    assert_non_null(e);
    assert_int_equal(e->len, strlen(body));
    assert_memory_equal(e->body, body, e->len);
    assert_int_equal(e->body[e->len], '\0');
    assert_int_equal(e->klen, strlen(key));
    assert_memory_equal(e->key, key, e->klen);
    degraded_release(d, e);
}

/* A temp directory for snapshot files; removed with everything in it. */
static char *tmpdir_new(void)
{
    char *dir = strdup("/tmp/test_degraded.XXXXXX");
    assert_non_null(dir);
    assert_non_null(mkdtemp(dir));
    return dir;
}

static int dir_entries(const char *dir)
{
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dp)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    closedir(dp);
    return n;
}

static void tmpdir_free(char *dir)
{
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    struct dirent *de;
    char path[512];
    while ((de = readdir(dp))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(dp);
    assert_int_equal(rmdir(dir), 0);
    free(dir);
}

static unsigned char *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    unsigned char *p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

static void write_whole(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* ---- store ---- */

static void test_put_get(void **state)
{
    (void)state;
    struct degraded *d = store(16);
    assert_int_equal(degraded_capacity(d), 16);
    assert_null(get_s(d, "user\0/u/1"));
    put_s(d, "k1", "{\"a\":1}");
    assert_body(d, "k1", "{\"a\":1}");
    const struct degraded_entry *e = get_s(d, "k1");
    assert_int_equal(degraded_entry_stored_at(e), 1000000);
    degraded_release(d, e);
    put_s(d, "k1", "{\"a\":2}"); /* a new body replaces */
    assert_body(d, "k1", "{\"a\":2}");
    assert_int_equal(degraded_count(d), 1);
    put_s(d, "k2", ""); /* an empty body is a body */
    assert_body(d, "k2", "");
    assert_int_equal(degraded_count(d), 2);
    degraded_release(d, NULL);
    degraded_free(d);
    degraded_free(NULL);
}

static void test_keys_never_mix(void **state)
{
    (void)state;
    /* 4 ways, one bucket: every key shares it, so only the key bytes tell
     * them apart. */
    struct degraded *d = store(4);
    static const char k1[] = "user\0http://u/1\0Bearer a";
    static const char k2[] = "user\0http://u/1\0Bearer b"; /* other credentials */
    static const char k3[] = "user\0http://u/1";           /* a prefix of both */
    static const char k4[] = "user\0http://u/2\0Bearer a"; /* other params */
    degraded_put(d, k1, sizeof k1 - 1, "A", 1);
    degraded_put(d, k2, sizeof k2 - 1, "B", 1);
    degraded_put(d, k3, sizeof k3 - 1, "C", 1);
    const struct degraded_entry *e;
    e = degraded_get(d, k1, sizeof k1 - 1, 10);
    assert_non_null(e);
    assert_string_equal(e->body, "A");
    degraded_release(d, e);
    e = degraded_get(d, k2, sizeof k2 - 1, 10);
    assert_non_null(e);
    assert_string_equal(e->body, "B");
    degraded_release(d, e);
    e = degraded_get(d, k3, sizeof k3 - 1, 10);
    assert_non_null(e);
    assert_string_equal(e->body, "C");
    degraded_release(d, e);
    assert_null(degraded_get(d, k4, sizeof k4 - 1, 10));
    assert_null(degraded_get(d, k1, sizeof k1 - 2, 10)); /* shorter, same bytes */
    assert_null(degraded_get(d, "", 0, 10));
    degraded_free(d);
}

static uint64_t same_hash(const void *key, size_t klen)
{
    (void)key;
    (void)klen;
    return 42;
}

/* Even when every hash collides, a key only ever finds its own body. */
static void test_hash_collisions(void **state)
{
    (void)state;
    struct degraded *d = store(64);
    degraded_set_hash(d, same_hash); /* one bucket, 4 ways, for all keys */
    put_s(d, "a", "A");
    put_s(d, "b", "B");
    put_s(d, "c", "C");
    assert_body(d, "a", "A");
    assert_body(d, "b", "B");
    assert_body(d, "c", "C");
    assert_null(get_s(d, "d"));
    put_s(d, "b", "B2");
    assert_body(d, "b", "B2");
    assert_body(d, "a", "A");
    assert_int_equal(degraded_count(d), 3);
    for (int i = 0; i < 20; i++) { /* all in the one bucket: at most 4 kept */
        char k[16];
        atomic_fetch_add(&fake_now, 1);
        snprintf(k, sizeof k, "k%d", i);
        put_s(d, k, k);
        assert_body(d, k, k);
    }
    assert_int_equal(degraded_count(d), 4);
    degraded_free(d);
}

static void test_eviction_bound(void **state)
{
    (void)state;
    static const size_t caps[] = {1, 3, 4, 6, 64, 1000};
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
        struct degraded *d = store(caps[c]);
        char key[32], body[32];
        for (size_t i = 0; i < 10 * caps[c]; i++) {
            atomic_fetch_add(&fake_now, 1); /* the oldest way is the one evicted */
            snprintf(key, sizeof key, "key-%zu", i);
            snprintf(body, sizeof body, "body-%zu", i);
            put_s(d, key, body);
            if (caps[c] < 100 || i % 97 == 0) assert_true(degraded_count(d) <= caps[c]);
            assert_body(d, key, body); /* the newest is always there */
        }
        /* every bucket filled up: the store is full, not merely bounded */
        if (caps[c] >= 64) assert_true(degraded_count(d) >= caps[c] * 9 / 10);
        degraded_free(d);
    }
}

static void test_empty_store(void **state)
{
    (void)state;
    struct degraded *d = store(0);
    put_s(d, "k", "v");
    assert_null(get_s(d, "k"));
    assert_int_equal(degraded_count(d), 0);
    assert_int_equal(degraded_capacity(d), 0);
    degraded_free(d);
}

static void test_staleness(void **state)
{
    (void)state;
    struct degraded *d = store(8);
    put_s(d, "k", "v");
    const struct degraded_entry *e = degraded_get(d, "k", 1, 0);
    assert_non_null(e); /* age 0 <= 0 */
    degraded_release(d, e);
    atomic_store(&fake_now, 1000000 + 60);
    assert_null(degraded_get(d, "k", 1, 0));
    assert_null(degraded_get(d, "k", 1, 59));
    e = degraded_get(d, "k", 1, 60);
    assert_non_null(e);
    degraded_release(d, e);
    /* a stamp from the future (the clock stepped back) counts as fresh */
    atomic_store(&fake_now, 1000000 - 3600);
    e = degraded_get(d, "k", 1, 0);
    assert_non_null(e);
    degraded_release(d, e);
    degraded_free(d);
}

static _Atomic uint64_t fake_ms = 5000;

static uint64_t fake_clock_ms(void)
{
    return atomic_load(&fake_ms);
}

static const struct degraded_entry *fresh_s(struct degraded *d, const char *key)
{
    return degraded_get_fresh(d, key, strlen(key));
}

/* One entry, two ages: fresh for fresh_ms (served without a call), then
 * stale but allowed for max_stale_s (served on failure only). */
static void test_two_ages(void **state)
{
    (void)state;
    struct degraded *d = store(8);
    atomic_store(&fake_ms, 5000);
    degraded_set_fresh_clock(d, fake_clock_ms);
    degraded_put_fresh(d, "k", 1, "v1", 2, 300);
    const struct degraded_entry *e = fresh_s(d, "k");
    assert_non_null(e);
    assert_memory_equal(e->body, "v1", 2);
    degraded_release(d, e);
    atomic_store(&fake_ms, 5299);
    e = fresh_s(d, "k");
    assert_non_null(e);
    degraded_release(d, e);
    atomic_store(&fake_ms, 5300); /* fresh_until is exclusive */
    assert_null(fresh_s(d, "k"));
    e = degraded_get(d, "k", 1, 3600); /* still there for the fallback */
    assert_non_null(e);
    degraded_release(d, e);
    assert_int_equal(degraded_count(d), 1);

    /* the same body again makes it fresh again, without a new entry */
    degraded_put_fresh(d, "k", 1, "v1", 2, 100);
    e = fresh_s(d, "k");
    assert_non_null(e);
    const struct degraded_entry *e2 = get_s(d, "k");
    assert_ptr_equal(e, e2);
    degraded_release(d, e2);
    degraded_release(d, e);
    /* a put that must not be cached (no-store) ends the freshness */
    degraded_put(d, "k", 1, "v1", 2);
    assert_null(fresh_s(d, "k"));
    degraded_put_fresh(d, "k", 1, "v2", 2, 100);
    e = fresh_s(d, "k");
    assert_non_null(e);
    assert_memory_equal(e->body, "v2", 2);
    degraded_release(d, e);
    /* a fresh answer for one key is never another key's */
    assert_null(fresh_s(d, "K"));
    degraded_put_fresh(d, "other", 5, "x", 1, 0);
    assert_null(fresh_s(d, "other"));

    size_t n = 0, bytes = 0;
    degraded_stats(d, &n, &bytes);
    assert_int_equal(n, 2);
    assert_true(bytes >= 2 * sizeof(struct degraded_entry) + 1 + 2 + 5 + 1);
    degraded_free(d);
}

/* max_entries bounds fresh and stale entries together: fresh answers are
 * evicted like any other (oldest stored first). */
static void test_fresh_eviction_bound(void **state)
{
    (void)state;
    struct degraded *d = store(16);
    degraded_set_fresh_clock(d, fake_clock_ms);
    atomic_store(&fake_ms, 5000);
    char key[32];
    for (int i = 0; i < 200; i++) {
        atomic_fetch_add(&fake_now, 1);
        snprintf(key, sizeof key, "key-%d", i);
        degraded_put_fresh(d, key, strlen(key), key, strlen(key), i % 2 ? 60000 : 0);
        assert_true(degraded_count(d) <= 16);
        if (i % 2) {
            const struct degraded_entry *e = fresh_s(d, key);
            assert_non_null(e);
            degraded_release(d, e);
        }
    }
    size_t n = 0, bytes = 0;
    degraded_stats(d, &n, &bytes);
    assert_true(n <= 16);
    degraded_free(d);
}

static void test_unchanged_body_keeps_entry(void **state)
{
    (void)state;
    struct degraded *d = store(8);
    put_s(d, "k", "same");
    const struct degraded_entry *first = get_s(d, "k");
    assert_non_null(first);

    atomic_store(&fake_now, 1000000 + 100);
    put_s(d, "k", "same");
    const struct degraded_entry *again = degraded_get(d, "k", 1, 0);  /* fresh again */
    assert_ptr_equal(again, first);                                   /* not replaced ... */
    assert_int_equal(degraded_entry_stored_at(again), 1000000 + 100); /* ... but refreshed */
    degraded_release(d, again);

    /* an older stamp never moves stored_at back */
    atomic_store(&fake_now, 1000000 + 50);
    put_s(d, "k", "same");
    assert_int_equal(degraded_entry_stored_at(first), 1000000 + 100);

    /* a changed body replaces; the old pin stays readable */
    put_s(d, "k", "different");
    const struct degraded_entry *now = get_s(d, "k");
    assert_ptr_not_equal(now, first);
    assert_string_equal(now->body, "different");
    assert_string_equal(first->body, "same");
    degraded_release(d, now);
    degraded_release(d, first);
    degraded_free(d);
}

static void test_pin_outlives_eviction(void **state)
{
    (void)state;
    struct degraded *d = store(1);
    put_s(d, "a", "body-a");
    const struct degraded_entry *a = get_s(d, "a");
    assert_non_null(a);
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        put_s(d, k, "other");
    }
    assert_null(get_s(d, "a"));
    assert_string_equal(a->body, "body-a"); /* ASan would flag a freed entry */
    degraded_release(d, a);
    degraded_free(d);
}

/* ---- concurrency ---- */

#define NTHREADS 4
#define NOPS     50000
#define NKEYS    64

/* cmocka's asserts longjmp and are not for other threads: workers count what
 * is wrong and the main thread asserts. */
struct worker {
    struct degraded *d;
    unsigned seed;
    long gets, hits, bad;
    const char *snap_path; /* non-NULL: also write snapshots now and then */
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char key[32], body[64];
    for (int i = 0; i < NOPS; i++) {
        w->seed = w->seed * 1103515245u + 12345u;
        unsigned r = w->seed >> 8;
        int k = (int)(r % NKEYS);
        memcpy(key, "backend", 8); /* with its NUL, as the gateway separates fields */
        int klen = 8 + snprintf(key + 8, sizeof key - 8, "/item/%d", k);
        if (r & 0x10000) {
            /* few distinct bodies per key: both the replace and the
             * unchanged fast path run */
            int blen = snprintf(body, sizeof body, "{\"item\":%d,\"v\":%u}", k, (r >> 17) % 3);
            /* half of them fresh for the cache: both ages in one store */
            degraded_put_fresh(w->d, key, (size_t)klen, body, (size_t)blen,
                               (r & 0x20000) ? 1000 : 0);
        } else {
            const struct degraded_entry *e =
                (r & 0x40000) ? degraded_get_fresh(w->d, key, (size_t)klen)
                              : degraded_get(w->d, key, (size_t)klen, UINT32_MAX);
            w->gets++;
            if (e) {
                w->hits++;
                char want[32];
                int n = snprintf(want, sizeof want, "{\"item\":%d,", k);
                if (e->klen != (uint32_t)klen || memcmp(e->key, key, (size_t)klen) != 0 ||
                    e->len <= (size_t)n || memcmp(e->body, want, (size_t)n) != 0 ||
                    e->body[e->len] != '\0')
                    w->bad++;
                degraded_release(w->d, e);
            }
        }
        if (w->snap_path && i % 5000 == 0 && degraded_snapshot_write(w->d, w->snap_path) < 0)
            w->bad++;
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char path[256];
    snprintf(path, sizeof path, "%s/snap", dir);
    struct degraded *d = degraded_new(NKEYS / 2); /* smaller than the key set: evictions */
    assert_non_null(d);
    pthread_t th[NTHREADS];
    struct worker w[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (struct worker){.d = d, .seed = 17u * (unsigned)i + 1, .snap_path = NULL};
        if (i == 0) w[i].snap_path = path;
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    long hits = 0;
    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        hits += w[i].hits;
        assert_int_equal(w[i].bad, 0);
    }
    assert_true(hits > 0);
    assert_true(degraded_count(d) <= NKEYS / 2);

    /* the snapshots taken under load are valid */
    struct degraded *d2 = degraded_new(NKEYS);
    assert_non_null(d2);
    char err[256] = "";
    assert_true(degraded_snapshot_load(d2, path, err, sizeof err) >= 0);
    degraded_free(d2);
    degraded_free(d);
    tmpdir_free(dir);
}

/* ---- snapshot ---- */

struct kv {
    const char *key;
    size_t klen;
    const char *body;
    size_t blen;
    uint64_t at;
};

static const struct kv KVS[] = {
    {"user\0http://u/1\0tok", 19, "{\"name\":\"a\"}", 12, 1000000},
    {"user\0http://u/2", 15, "{\"name\":\"b\"}", 12, 1000005},
    {"recs\0http://r/1", 15, "", 0, 1000010},
    {"bin", 3, "\0\1\2\xff", 4, 1000020},
};
#define NKVS (sizeof KVS / sizeof KVS[0])

static struct degraded *filled(void)
{
    struct degraded *d = store(64);
    for (size_t i = 0; i < NKVS; i++) {
        atomic_store(&fake_now, KVS[i].at);
        degraded_put(d, KVS[i].key, KVS[i].klen, KVS[i].body, KVS[i].blen);
    }
    return d;
}

static void assert_filled(struct degraded *d)
{
    assert_int_equal(degraded_count(d), NKVS);
    for (size_t i = 0; i < NKVS; i++) {
        const struct degraded_entry *e = degraded_get(d, KVS[i].key, KVS[i].klen, UINT32_MAX);
        assert_non_null(e);
        assert_int_equal(e->len, KVS[i].blen);
        assert_memory_equal(e->body, KVS[i].body, e->len);
        assert_int_equal(degraded_entry_stored_at(e), KVS[i].at);
        degraded_release(d, e);
    }
}

static void test_snapshot_round_trip(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char path[256];
    snprintf(path, sizeof path, "%s/degraded.snap", dir);
    struct degraded *d = filled();
    assert_int_equal(degraded_snapshot_write(d, path), (int)NKVS);
    assert_int_equal(dir_entries(dir), 1); /* no temp file left */
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600); /* keys may carry credentials */

    struct degraded *d2 = store(64);
    char err[256] = "";
    assert_int_equal(degraded_snapshot_load(d2, path, err, sizeof err), (int)NKVS);
    assert_filled(d2);

    /* rewriting replaces the file in place */
    put_s(d, "extra", "x");
    assert_int_equal(degraded_snapshot_write(d, path), (int)NKVS + 1);
    assert_int_equal(dir_entries(dir), 1);
    struct degraded *d3 = store(64);
    assert_int_equal(degraded_snapshot_load(d3, path, err, sizeof err), (int)NKVS + 1);
    assert_body(d3, "extra", "x");

    /* an empty store writes a valid empty snapshot */
    struct degraded *e = store(0);
    assert_int_equal(degraded_snapshot_write(e, path), 0);
    assert_int_equal(degraded_snapshot_load(d3, path, err, sizeof err), 0);

    degraded_free(e);
    degraded_free(d3);
    degraded_free(d2);
    degraded_free(d);
    tmpdir_free(dir);
}

/* Nothing changed since the last write of the same path: the file is left
 * as it is (same inode; a write always renames a new file in). */
static void test_snapshot_skipped_when_unchanged(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char path[256], other[256];
    snprintf(path, sizeof path, "%s/snap.bin", dir);
    snprintf(other, sizeof other, "%s/other.bin", dir);
    struct degraded *d = filled();
    struct stat a, b;
    assert_int_equal(degraded_snapshot_write(d, path), (int)NKVS);
    assert_int_equal(stat(path, &a), 0);
    assert_int_equal(degraded_snapshot_write(d, path), (int)NKVS);
    assert_int_equal(stat(path, &b), 0);
    assert_int_equal(a.st_ino, b.st_ino); /* skipped */

    /* an unchanged body in the same second changes nothing either */
    atomic_store(&fake_now, KVS[NKVS - 1].at);
    degraded_put(d, KVS[NKVS - 1].key, KVS[NKVS - 1].klen, KVS[NKVS - 1].body, KVS[NKVS - 1].blen);
    assert_int_equal(degraded_snapshot_write(d, path), (int)NKVS);
    assert_int_equal(stat(path, &b), 0);
    assert_int_equal(a.st_ino, b.st_ino);

    /* a confirmation a second later moves stored_at: written */
    atomic_store(&fake_now, KVS[NKVS - 1].at + 1);
    degraded_put(d, KVS[NKVS - 1].key, KVS[NKVS - 1].klen, KVS[NKVS - 1].body, KVS[NKVS - 1].blen);
    assert_int_equal(degraded_snapshot_write(d, path), (int)NKVS);
    assert_int_equal(stat(path, &b), 0);
    assert_int_not_equal(a.st_ino, b.st_ino);
    a = b;

    /* a new entry: written */
    put_s(d, "extra", "x");
    assert_int_equal(degraded_snapshot_write(d, path), (int)NKVS + 1);
    assert_int_equal(stat(path, &b), 0);
    assert_int_not_equal(a.st_ino, b.st_ino);
    a = b;

    /* another path, or the file gone: written */
    assert_int_equal(degraded_snapshot_write(d, other), (int)NKVS + 1);
    assert_int_equal(access(other, F_OK), 0);
    assert_int_equal(unlink(other), 0);
    assert_int_equal(degraded_snapshot_write(d, other), (int)NKVS + 1);
    assert_int_equal(access(other, F_OK), 0);
    assert_int_equal(dir_entries(dir), 2);

    struct degraded *d2 = store(64);
    char err[256] = "";
    assert_int_equal(degraded_snapshot_load(d2, path, err, sizeof err), (int)NKVS + 1);
    assert_body(d2, "extra", "x");
    degraded_free(d2);
    degraded_free(d);
    tmpdir_free(dir);
}

/* Temp files of a crashed write are removed at start; a temp file a live
 * writer holds (locked), and everything else, stays. */
static void test_snapshot_clean_removes_stale_temp_files(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char path[256], p[320];
    snprintf(path, sizeof path, "%s/snap.bin", dir);
    static const char *const stale[] = {"snap.bin.tmp.a1B2c3", "snap.bin.tmp.XXXXXX",
                                        "snap.bin.tmp.000000"};
    static const char *const keep[] = {"snap.bin", "snap.bin.tmp.abc", "snap.bin.tmp.abcdefg",
                                       "other.bin.tmp.a1B2c3", "snap.bin.tmp.ab-de_"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, stale[i]);
        write_whole(p, "partial", 7);
    }
    for (size_t i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, keep[i]);
        write_whole(p, "x", 1);
    }
    snprintf(p, sizeof p, "%s/snap.bin.tmp.LIVE01", dir); /* a writer at work */
    int live = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    assert_true(live >= 0);
    assert_int_equal(flock(live, LOCK_EX), 0);

    assert_int_equal(degraded_snapshot_clean(path), 3);
    assert_int_equal(dir_entries(dir), 6);
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, stale[i]);
        assert_int_equal(access(p, F_OK), -1);
    }
    for (size_t i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, keep[i]);
        assert_int_equal(access(p, F_OK), 0);
    }
    close(live); /* its writer died: now it goes */
    assert_int_equal(degraded_snapshot_clean(path), 1);
    assert_int_equal(dir_entries(dir), 5);
    assert_int_equal(degraded_snapshot_clean(path), 0);
    assert_true(degraded_snapshot_clean("/nonexistent-dir-for-test/snap.bin") < 0);
    tmpdir_free(dir);
}

static void test_snapshot_load_keeps_newer(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char path[256];
    snprintf(path, sizeof path, "%s/s", dir);
    struct degraded *d = filled(); /* "user\0http://u/2" stored at 1000005 */
    assert_int_equal(degraded_snapshot_write(d, path), (int)NKVS);

    struct degraded *d2 = store(64);
    atomic_store(&fake_now, 2000000);
    degraded_put(d2, "user\0http://u/2", 15, "newer", 5);
    atomic_store(&fake_now, 1);
    degraded_put(d2, "bin", 3, "older", 5);
    char err[256];
    assert_int_equal(degraded_snapshot_load(d2, path, err, sizeof err), (int)NKVS);
    const struct degraded_entry *e = degraded_get(d2, "user\0http://u/2", 15, UINT32_MAX);
    assert_non_null(e);
    assert_string_equal(e->body, "newer");
    degraded_release(d2, e);
    e = degraded_get(d2, "bin", 3, UINT32_MAX);
    assert_non_null(e);
    assert_memory_equal(e->body, "\0\1\2\xff", 4);
    degraded_release(d2, e);
    degraded_free(d2);
    degraded_free(d);
    tmpdir_free(dir);
}

static void test_snapshot_missing(void **state)
{
    (void)state;
    struct degraded *d = store(8);
    char err[256] = "";
    assert_int_equal(
        degraded_snapshot_load(d, "/nonexistent-dir-for-test/degraded.snap", err, sizeof err),
        -ENOENT);
    assert_int_equal(degraded_count(d), 0);
    /* a directory that does not exist: write fails, nothing created */
    assert_true(degraded_snapshot_write(d, "/nonexistent-dir-for-test/degraded.snap") < 0);
    degraded_free(d);
}

static void test_snapshot_truncated(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char path[256], cut[256];
    snprintf(path, sizeof path, "%s/s", dir);
    snprintf(cut, sizeof cut, "%s/cut", dir);
    struct degraded *d = filled();
    assert_int_equal(degraded_snapshot_write(d, path), (int)NKVS);
    size_t len;
    unsigned char *data = read_whole(path, &len);
    assert_int_equal(degraded_snapshot_parse(NULL, data, len, NULL, 0), (int)NKVS);

    struct degraded *d2 = store(64);
    char err[256];
    for (size_t n = 0; n < len; n++) {
        err[0] = '\0';
        /* exact-size copies, so ASan catches a read past the end */
        unsigned char *p = malloc(n ? n : 1);
        assert_non_null(p);
        memcpy(p, data, n);
        assert_int_equal(degraded_snapshot_parse(d2, p, n, err, sizeof err), -EBADMSG);
        assert_true(strlen(err) > 0);
        free(p);
        assert_int_equal(degraded_count(d2), 0);
    }
    /* and through a file, with a message naming it */
    write_whole(cut, data, len - 1);
    assert_int_equal(degraded_snapshot_load(d2, cut, err, sizeof err), -EBADMSG);
    assert_non_null(strstr(err, cut));
    assert_non_null(strstr(err, "truncated"));
    assert_int_equal(degraded_count(d2), 0);
    /* trailing garbage is corruption too */
    unsigned char *longer = malloc(len + 1);
    assert_non_null(longer);
    memcpy(longer, data, len);
    longer[len] = 0;
    assert_int_equal(degraded_snapshot_parse(d2, longer, len + 1, err, sizeof err), -EBADMSG);
    assert_int_equal(degraded_count(d2), 0);
    free(longer);

    free(data);
    degraded_free(d2);
    degraded_free(d);
    tmpdir_free(dir);
}

static void test_snapshot_flipped_byte(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char path[256];
    snprintf(path, sizeof path, "%s/s", dir);
    struct degraded *d = filled();
    assert_int_equal(degraded_snapshot_write(d, path), (int)NKVS);
    size_t len;
    unsigned char *data = read_whole(path, &len);
    struct degraded *d2 = store(64);
    char err[256];
    static const unsigned char flips[] = {0x01, 0x80, 0xff};
    for (size_t i = 0; i < len; i++) {
        for (size_t f = 0; f < sizeof flips; f++) {
            data[i] ^= flips[f];
            err[0] = '\0';
            assert_int_equal(degraded_snapshot_parse(d2, data, len, err, sizeof err), -EBADMSG);
            assert_true(strlen(err) > 0);
            assert_int_equal(degraded_count(d2), 0);
            data[i] ^= flips[f];
        }
    }
    write_whole(path, "garbage", 7);
    assert_int_equal(degraded_snapshot_load(d2, path, err, sizeof err), -EBADMSG);
    assert_int_equal(degraded_count(d2), 0);
    free(data);
    degraded_free(d2);
    degraded_free(d);
    tmpdir_free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get),
        cmocka_unit_test(test_keys_never_mix),
        cmocka_unit_test(test_hash_collisions),
        cmocka_unit_test(test_eviction_bound),
        cmocka_unit_test(test_empty_store),
        cmocka_unit_test(test_staleness),
        cmocka_unit_test(test_two_ages),
        cmocka_unit_test(test_fresh_eviction_bound),
        cmocka_unit_test(test_unchanged_body_keeps_entry),
        cmocka_unit_test(test_pin_outlives_eviction),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_snapshot_round_trip),
        cmocka_unit_test(test_snapshot_skipped_when_unchanged),
        cmocka_unit_test(test_snapshot_clean_removes_stale_temp_files),
        cmocka_unit_test(test_snapshot_load_keeps_newer),
        cmocka_unit_test(test_snapshot_missing),
        cmocka_unit_test(test_snapshot_truncated),
        cmocka_unit_test(test_snapshot_flipped_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
