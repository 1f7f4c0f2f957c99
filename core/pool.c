/*
 * pool: per-thread object and block caches (pool.h): get/put without a
 * lock, the hit and miss counts, and the idle trimming a worker runs.
 */
#include "core/pool.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sanitizer.h"
#ifdef CORE_ASAN
#define POOL_ASAN 1
#endif

#ifdef POOL_ASAN
#include <sanitizer/asan_interface.h>
#define poison(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define unpoison(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define poison(p, n)   ((void)(p), (void)(n))
#define unpoison(p, n) ((void)(p), (void)(n))
#endif

/* Plain blocks (no new_fn) have a size we know, so ASan can poison them while
 * cached and catch a use after pool_put. Objects from new_fn may be larger or
 * smaller than obj_size: left alone. */
static inline bool plain_blocks(const pool_t *p)
{
    return p->ops.new_fn == NULL;
}

static inline void counter_inc(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void destroy_obj(pool_t *p, void *obj)
{
    if (p->ops.free_fn)
        p->ops.free_fn(obj, p->ops.ud);
    else
        free(obj);
}

pool_t *pool_new(const char *name, size_t obj_size, size_t max_cached, const struct pool_ops *ops)
{
    pool_t *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    if (max_cached) {
        p->items = malloc(max_cached * sizeof *p->items);
        if (!p->items) {
            free(p);
            return NULL;
        }
    }
    p->max = max_cached;
    p->obj_size = obj_size;
    if (ops) p->ops = *ops;
    atomic_init(&p->hits, 0);
    atomic_init(&p->misses, 0);
    snprintf(p->name, sizeof p->name, "%s", name ? name : "");
    return p;
}

void pool_free(pool_t *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) {
        if (plain_blocks(p)) unpoison(p->items[i], p->obj_size);
        destroy_obj(p, p->items[i]);
    }
    free(p->items);
    free(p);
}

void *pool_get_slow(pool_t *p)
{
    if (p->n) {
        counter_inc(&p->hits);
        void *obj = p->items[--p->n];
        if (p->n < p->low) p->low = p->n;
        if (plain_blocks(p)) unpoison(obj, p->obj_size);
        return obj;
    }
    counter_inc(&p->misses);
    return p->ops.new_fn ? p->ops.new_fn(p->ops.ud) : malloc(p->obj_size ? p->obj_size : 1);
}

void pool_put_slow(pool_t *p, void *obj)
{
    if (!obj) return;
    if (p->n == p->max) {
        destroy_obj(p, obj);
        return;
    }
    if (p->ops.reset_fn) p->ops.reset_fn(obj, p->ops.ud);
    if (plain_blocks(p)) poison(obj, p->obj_size);
    p->items[p->n++] = obj;
}

size_t pool_mark_idle(pool_t *p)
{
    /* The cache never held fewer than low objects since the last mark: low
     * of them were not needed. Which ones does not matter, only how many. */
    p->idle = p->low;
    p->low = p->n;
    return p->idle;
}

size_t pool_free_idle(pool_t *p, size_t max)
{
    /* A get since the mark that took the cache below idle used some of them. */
    if (p->idle > p->low) p->idle = p->low;
    size_t k = p->idle < max ? p->idle : max;
    for (size_t i = 0; i < k; i++) {
        void *obj = p->items[--p->n];
        if (plain_blocks(p)) unpoison(obj, p->obj_size);
        destroy_obj(p, obj);
    }
    /* As if the freed ones had never been cached. */
    p->idle -= k;
    p->low -= k;
    return k;
}

size_t pool_obj_size(const pool_t *p)
{
    return p->obj_size;
}

const char *pool_name(const pool_t *p)
{
    return p->name;
}

size_t pool_cached(const pool_t *p)
{
    return p->n;
}

uint64_t pool_hits(const pool_t *p)
{
    return atomic_load_explicit(&p->hits, memory_order_relaxed);
}

uint64_t pool_misses(const pool_t *p)
{
    return atomic_load_explicit(&p->misses, memory_order_relaxed);
}
