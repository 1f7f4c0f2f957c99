/*
 * pool: sync.Pool-like caches of objects or fixed-size buffers.
 *
 * A pool is owned by one thread (a worker makes its own), so get and put take
 * no lock and touch no shared cache line. It keeps at most max_cached free
 * objects; beyond that put frees. new_fn / reset_fn hooks make and recycle
 * objects; with both NULL the pool hands out obj_size-byte blocks.
 * Hits and misses are counted for the metrics.
 *
 * A pool only grows by itself: a burst leaves its objects cached. The owner
 * gives them back in two steps (a worker does every few seconds):
 * pool_mark_idle counts as idle the objects no pool_get needed since its
 * previous call (the fewest cached in between: a low-water mark), and
 * pool_free_idle frees them a batch at a time, so freeing thousands never
 * stalls the owner's loop. A steady load keeps what it uses; a burst's
 * excess goes back within two intervals (sync.Pool's clean-up at each GC,
 * with a low-water mark instead of a victim cache).
 *
 * pool_get / pool_put are inline for the common case (a hit, a put that
 * fits): ~1.5 ns a pair instead of ~3.5 through two calls. The struct is
 * therefore visible here, but every field is private. ASan builds take the
 * out-of-line path always, where cached plain blocks are poisoned.
 */
#ifndef CORE_POOL_H
#define CORE_POOL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/sanitizer.h"
#ifdef CORE_ASAN
#define POOL_OUT_OF_LINE 1
#endif

typedef struct pool pool_t;

struct pool_ops {
    void *(*new_fn)(void *ud);             /* NULL: malloc(obj_size) */
    void (*reset_fn)(void *obj, void *ud); /* on put; NULL: nothing */
    void (*free_fn)(void *obj, void *ud);  /* NULL: free() */
    void *ud;
};

/* All private. */
struct pool {
    void **items; /* a stack of cached objects: LIFO hands back the warmest */
    size_t n;
    size_t low;  /* the fewest cached since the last pool_mark_idle */
    size_t idle; /* marked idle, not freed yet (at most low) */
    size_t max;
    size_t obj_size;
    struct pool_ops ops;
    /* Written only by the owner thread, read by a metrics scrape from any
     * thread: relaxed atomics, plain load + store (no locked RMW). */
    _Atomic uint64_t hits, misses;
    char name[32];
};

/* NULL on out-of-memory. ops may be NULL. */
pool_t *pool_new(const char *name, size_t obj_size, size_t max_cached, const struct pool_ops *ops);
/* Frees the cached objects and the pool; objects still out are the caller's. */
void pool_free(pool_t *p);
/* A cached object, or a new one (NULL when new fails). */
static inline void *pool_get(pool_t *p);
/* Returns obj (reset first); frees it (free_fn, without reset) when the cache
 * is full. NULL is ignored. In ASan builds a cached plain block is poisoned,
 * so a use after put is reported. */
static inline void pool_put(pool_t *p, void *obj);
size_t pool_obj_size(const pool_t *p);
const char *pool_name(const pool_t *p);
/* Objects cached right now. Owner thread. */
size_t pool_cached(const pool_t *p);
/* Marks as idle the cached objects that no pool_get needed since the
 * previous call; returns how many are idle. Owner thread. */
size_t pool_mark_idle(pool_t *p);
/* Frees up to max idle objects (free_fn, without reset); an object that a
 * get needed since the mark is no longer idle. Returns how many it freed
 * (less than max: none is left). Owner thread. */
size_t pool_free_idle(pool_t *p, size_t max);
/* Counters (a get served from the cache / by new): safe from any thread, for
 * a metrics scrape. */
uint64_t pool_hits(const pool_t *p);
uint64_t pool_misses(const pool_t *p);

/* The out-of-line paths of pool_get / pool_put; call those instead. */
void *pool_get_slow(pool_t *p);
void pool_put_slow(pool_t *p, void *obj);

static inline void *pool_get(pool_t *p)
{
#ifndef POOL_OUT_OF_LINE
    if (p->n) {
        atomic_store_explicit(&p->hits, atomic_load_explicit(&p->hits, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        void *obj = p->items[--p->n];
        if (p->n < p->low) p->low = p->n;
        return obj;
    }
#endif
    return pool_get_slow(p);
}

static inline void pool_put(pool_t *p, void *obj)
{
#ifndef POOL_OUT_OF_LINE
    if (obj && p->n < p->max) {
        if (p->ops.reset_fn) p->ops.reset_fn(obj, p->ops.ud);
        p->items[p->n++] = obj;
        return;
    }
#endif
    pool_put_slow(p, obj);
}

#endif
