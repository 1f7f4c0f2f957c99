/*
 * metrics_series: the per-worker series tables, private to metrics.c (which
 * records into them on the request path) and metrics_render.c (which reads
 * and sums them on a scrape). Nothing else includes this header; the public
 * contract, the concurrency one included, is in metrics.h.
 *
 * Invariants both sides rely on: a table's n is release-published after
 * arr->s[n-1] is complete and after arr itself; a series' hash, labels and
 * code never change once published, only its values v (relaxed atomics
 * with a single writer); no series or array is freed before metrics_free.
 */
#ifndef GATEWAY_METRICS_SERIES_H
#define GATEWAY_METRICS_SERIES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gateway/metrics.h"

/* The per-worker families, each one table of series. */
enum family { T_REQ, T_REQ_HIST, T_BACKEND, T_BACKEND_HIST, T_CACHE, T_ITEMS, T_ATTEMPTS, T_COUNT };

#define NOUTCOMES      ((size_t)OUTCOME_COUNT) /* gateway/outcome.h */
/* Value k of a T_CACHE series counts result CACHE_HIT + k (gateway/cache_result.h). */
#define NCACHE_RESULTS ((size_t)(CACHE_RESULT_COUNT - CACHE_HIT))
#define NATTEMPT_KINDS ((size_t)3)             /* first, retry, hedge */

/* Histogram values: METRICS_BUCKETS + 1 (+Inf) non-cumulative bucket counts,
 * then the sum in ns. */
#define HIST_VALS (METRICS_BUCKETS + 2)
#define HIST_SUM  (METRICS_BUCKETS + 1)

/* The number of values in a series of each family. */
static const size_t NVALS[T_COUNT] = {
    [T_REQ] = 1,
    [T_REQ_HIST] = HIST_VALS,
    [T_BACKEND] = NOUTCOMES,
    [T_BACKEND_HIST] = HIST_VALS,
    [T_CACHE] = NCACHE_RESULTS,
    [T_ITEMS] = NOUTCOMES,
    [T_ATTEMPTS] = NATTEMPT_KINDS,
};

/* One label combination. Everything but v is immutable once published. */
struct series {
    uint64_t hash;
    char *a;  /* endpoint (backend for T_BACKEND_HIST, T_CACHE and T_ATTEMPTS) */
    char *b;  /* backend for T_BACKEND, else NULL */
    int code; /* T_REQ, else 0 */
    _Atomic uint64_t v[];
};

/* A published array of series pointers. Grown by copying into a bigger one;
 * the old one stays reachable through prev until metrics_free, because a
 * scraper that loaded it may still be reading it. */
struct arr {
    struct arr *prev;
    struct series *s[];
};

struct table {
    _Atomic(struct arr *) arr; /* release-published by the writer */
    _Atomic size_t n;          /* release-published after arr->s[n-1] */
    size_t cap;                /* writer only */
    uint32_t *idx;             /* writer only: open addressing, series index + 1 */
    size_t idx_mask;           /* writer only */
};

struct metrics {
    _Atomic int64_t inflight;
    _Atomic uint64_t up_events[METRICS_TRANSPORTS][METRICS_UP_EVENTS];
    _Atomic int64_t up_idle;
    struct table t[T_COUNT];
};

/* Whether s is the series of labels (a, b, code) with hash h. */
static inline bool series_key_eq(const struct series *s, uint64_t h, const char *a, const char *b,
                                 int code)
{
    return s->hash == h && s->code == code && strcmp(s->a, a) == 0 &&
           (s->b == NULL ? b == NULL : b != NULL && strcmp(s->b, b) == 0);
}

#endif
