/*
 * pool: sync.Pool-like caches of objects or fixed-size buffers.
 *
 * A pool is owned by one thread (a worker makes its own), so get and put take
 * no lock and touch no shared cache line. It keeps at most max_cached free
 * objects; beyond that put frees. new_fn / reset_fn hooks make and recycle
 * objects; with both NULL the pool hands out obj_size-byte blocks.
 * Hits and misses are counted for the metrics.
 */
#ifndef CORE_POOL_H
#define CORE_POOL_H

#include <stddef.h>
#include <stdint.h>

typedef struct pool pool_t;

struct pool_ops {
    void *(*new_fn)(void *ud);             /* NULL: malloc(obj_size) */
    void (*reset_fn)(void *obj, void *ud); /* on put; NULL: nothing */
    void (*free_fn)(void *obj, void *ud);  /* NULL: free() */
    void *ud;
};

/* NULL on out-of-memory. ops may be NULL. */
pool_t *pool_new(const char *name, size_t obj_size, size_t max_cached, const struct pool_ops *ops);
/* Frees the cached objects and the pool; objects still out are the caller's. */
void pool_free(pool_t *p);
/* A cached object, or a new one (NULL when new fails). */
void *pool_get(pool_t *p);
/* Returns obj (reset first); frees it (free_fn, without reset) when the cache
 * is full. NULL is ignored. In ASan builds a cached plain block is poisoned,
 * so a use after put is reported. */
void pool_put(pool_t *p, void *obj);
size_t pool_obj_size(const pool_t *p);
const char *pool_name(const pool_t *p);
/* Objects cached right now. Owner thread. */
size_t pool_cached(const pool_t *p);
/* Counters (a get served from the cache / by new): safe from any thread, for
 * a metrics scrape. */
uint64_t pool_hits(const pool_t *p);
uint64_t pool_misses(const pool_t *p);

#endif
