/*
 * metrics: recording on the request path. Owns the per-worker series tables
 * (gateway/metrics_series.h): their creation on first use of a label
 * combination, the writer's private hash index, and the counter and
 * histogram updates. The exposition is metrics_render.c.
 *
 * Invariants: only the owning worker calls anything here but metrics_new
 * and metrics_free; an update takes no lock and, after warm-up, allocates
 * nothing; a series or array, once published, is neither moved nor freed
 * before metrics_free (a scraper may hold it). The concurrency contract is
 * in metrics.h.
 */
#include "gateway/metrics.h"
#include "gateway/metrics_series.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Bucket bounds in ns, so that an observation is placed by integer compare
 * (0.001 s is not exact in binary); their label text is in metrics_render.c. */
static const uint64_t BOUNDS_NS[METRICS_BUCKETS] = {
    1000000,   2500000,   5000000,    10000000,   25000000,   50000000,   100000000,
    250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000};

/* Series and the metrics struct are cache-line aligned and padded so that
 * two workers' counters never share a line. */
static void *alloc_lines(size_t size)
{
    size = (size + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, size);
    if (p) memset(p, 0, size);
    return p;
}

/* A single writer needs no locked RMW: load, add, store. */
static inline void add(_Atomic uint64_t *v, uint64_t d)
{
    atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

static uint64_t hash_key(const char *a, const char *b, int code)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)a; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull; /* separator: never in a C string */
    if (b)
        for (const unsigned char *p = (const unsigned char *)b; *p; p++)
            h = (h ^ *p) * 1099511628211ull;
    h = (h ^ (uint32_t)code) * 1099511628211ull;
    return h ^ (h >> 29);
}

struct metrics *metrics_new(void)
{
    struct metrics *m = alloc_lines(sizeof *m);
    if (!m) return NULL;
    atomic_init(&m->inflight, 0);
    for (int f = 0; f < T_COUNT; f++) {
        atomic_init(&m->t[f].arr, NULL);
        atomic_init(&m->t[f].n, 0);
    }
    return m;
}

void metrics_free(struct metrics *m)
{
    if (!m) return;
    for (int f = 0; f < T_COUNT; f++) {
        struct table *t = &m->t[f];
        struct arr *arr = atomic_load_explicit(&t->arr, memory_order_relaxed);
        size_t n = atomic_load_explicit(&t->n, memory_order_relaxed);
        for (size_t i = 0; i < n; i++) {
            free(arr->s[i]->a);
            free(arr->s[i]->b);
            free(arr->s[i]);
        }
        while (arr) {
            struct arr *prev = arr->prev;
            free(arr);
            arr = prev;
        }
        free(t->idx);
    }
    free(m);
}

/* Writer only. Rebuilds the private index at twice the size. */
static int grow_index(struct table *t, struct arr *arr, size_t n)
{
    size_t size = t->idx ? (t->idx_mask + 1) * 2 : 64;
    uint32_t *idx = calloc(size, sizeof *idx);
    if (!idx) return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        size_t j = arr->s[i]->hash & (size - 1);
        while (idx[j])
            j = (j + 1) & (size - 1);
        idx[j] = (uint32_t)(i + 1);
    }
    free(t->idx);
    t->idx = idx;
    t->idx_mask = size - 1;
    return 0;
}

/* Writer only. The series for (a, b, code), created on first use. */
static struct series *lookup(struct table *t, size_t nvals, const char *a, const char *b, int code,
                             int *err)
{
    uint64_t h = hash_key(a, b, code);
    struct arr *arr = atomic_load_explicit(&t->arr, memory_order_relaxed);
    size_t n = atomic_load_explicit(&t->n, memory_order_relaxed);
    size_t j = 0;
    if (t->idx) {
        for (j = h & t->idx_mask; t->idx[j]; j = (j + 1) & t->idx_mask) {
            struct series *s = arr->s[t->idx[j] - 1];
            if (series_key_eq(s, h, a, b, code)) return s;
        }
    }
    if (n >= METRICS_MAX_SERIES) {
        *err = -ENOSPC;
        return NULL;
    }
    /* Keep the index at most half full, so probes stay short. */
    if (!t->idx || (n + 1) * 2 > t->idx_mask + 1) {
        if (grow_index(t, arr, n)) goto nomem;
        for (j = h & t->idx_mask; t->idx[j]; j = (j + 1) & t->idx_mask)
            ;
    }
    struct series *s = alloc_lines(sizeof *s + nvals * sizeof s->v[0]);
    if (!s) goto nomem;
    s->hash = h;
    s->code = code;
    s->a = strdup(a);
    s->b = b ? strdup(b) : NULL;
    if (!s->a || (b && !s->b)) {
        free(s->a);
        free(s->b);
        free(s);
        goto nomem;
    }
    for (size_t i = 0; i < nvals; i++)
        atomic_init(&s->v[i], 0);
    if (n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        struct arr *bigger = malloc(sizeof *bigger + cap * sizeof bigger->s[0]);
        if (!bigger) {
            free(s->a);
            free(s->b);
            free(s);
            goto nomem;
        }
        bigger->prev = arr;
        if (n) memcpy(bigger->s, arr->s, n * sizeof arr->s[0]);
        /* Published before n grows, so a scraper that sees the new n sees
         * this array (or a later one) holding the new series. */
        atomic_store_explicit(&t->arr, bigger, memory_order_release);
        t->cap = cap;
        arr = bigger;
    }
    arr->s[n] = s;
    atomic_store_explicit(&t->n, n + 1, memory_order_release);
    t->idx[j] = (uint32_t)(n + 1);
    return s;
nomem:
    *err = -ENOMEM;
    return NULL;
}

static void observe(struct series *s, double seconds)
{
    if (!(seconds >= 0)) return; /* negative or NaN */
    uint64_t ns = seconds >= 1e9 ? (uint64_t)1e18 : (uint64_t)(seconds * 1e9 + 0.5);
    size_t i = 0;
    while (i < METRICS_BUCKETS && ns > BOUNDS_NS[i])
        i++;
    add(&s->v[i], 1);
    add(&s->v[HIST_SUM], ns);
}

/* Adds 1 to value o of table t's series (a, b). */
static int count(struct metrics *m, int t, const char *a, const char *b, size_t o)
{
    int err = 0;
    struct series *s = lookup(&m->t[t], NVALS[t], a, b, 0, &err);
    if (!s) return err;
    add(&s->v[o], 1);
    return 0;
}

int metrics_request(struct metrics *m, const char *endpoint, int code, double seconds)
{
    if (!endpoint || !*endpoint) endpoint = METRICS_NO_ENDPOINT;
    int err = 0;
    struct series *s = lookup(&m->t[T_REQ], NVALS[T_REQ], endpoint, NULL, code, &err);
    if (!s) return err;
    add(&s->v[0], 1);
    if (!(seconds >= 0)) return 0;
    s = lookup(&m->t[T_REQ_HIST], NVALS[T_REQ_HIST], endpoint, NULL, 0, &err);
    if (!s) return err;
    observe(s, seconds);
    return 0;
}

int metrics_backend(struct metrics *m, const char *endpoint, const char *backend,
                    enum outcome outcome, double seconds)
{
    size_t o = (size_t)outcome;
    if (!backend || o >= NOUTCOMES) return -EINVAL;
    if (!endpoint || !*endpoint) endpoint = METRICS_NO_ENDPOINT;
    int err = count(m, T_BACKEND, endpoint, backend, o);
    if (err || !(seconds >= 0)) return err;
    struct series *s = lookup(&m->t[T_BACKEND_HIST], NVALS[T_BACKEND_HIST], backend, NULL, 0, &err);
    if (!s) return err;
    observe(s, seconds);
    return 0;
}

void metrics_upstream_event(struct metrics *m, enum metrics_transport t, enum metrics_up_event e)
{
    add(&m->up_events[t][e], 1);
}

void metrics_upstream_idle_add(struct metrics *m, int delta)
{
    atomic_store_explicit(&m->up_idle,
                          atomic_load_explicit(&m->up_idle, memory_order_relaxed) + delta,
                          memory_order_relaxed);
}

int metrics_cache(struct metrics *m, const char *backend, enum cache_result result)
{
    size_t o = (size_t)result - CACHE_HIT; /* CACHE_NONE wraps to out of range */
    if (!backend || o >= NCACHE_RESULTS) return -EINVAL;
    return count(m, T_CACHE, backend, NULL, o);
}

int metrics_attempts(struct metrics *m, const char *backend, unsigned first, unsigned retry,
                     unsigned hedge)
{
    if (!backend) return -EINVAL;
    int err = 0;
    struct series *s = lookup(&m->t[T_ATTEMPTS], NVALS[T_ATTEMPTS], backend, NULL, 0, &err);
    if (!s) return err;
    const unsigned n[NATTEMPT_KINDS] = {first, retry, hedge};
    for (size_t k = 0; k < NATTEMPT_KINDS; k++)
        if (n[k]) add(&s->v[k], n[k]);
    return 0;
}

int metrics_item(struct metrics *m, const char *endpoint, const char *backend,
                 enum outcome outcome)
{
    size_t o = (size_t)outcome;
    if (!backend || o >= NOUTCOMES) return -EINVAL;
    if (!endpoint || !*endpoint) endpoint = METRICS_NO_ENDPOINT;
    return count(m, T_ITEMS, endpoint, backend, o);
}

void metrics_inflight_add(struct metrics *m, int delta)
{
    atomic_store_explicit(&m->inflight,
                          atomic_load_explicit(&m->inflight, memory_order_relaxed) + delta,
                          memory_order_relaxed);
}
