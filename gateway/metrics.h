/*
 * metrics: per-worker counters and histograms (recorded by metrics.c),
 * rendered in the Prometheus text exposition format (version 0.0.4) when
 * /metrics is scraped (metrics_render.c).
 *
 * Each worker thread owns one struct metrics and is its only writer; a
 * scrape may run on any thread at any time. The request path takes no lock
 * and writes no shared cache line: an update is a hash lookup in the
 * worker's own table plus a few relaxed atomic load+store pairs (a single
 * writer needs no locked read-modify-write). The scraper reads with relaxed
 * loads and sums the workers, so a scrape is a consistent-enough snapshot:
 * each value is one the writer stored, but values of different series may be
 * a few updates apart (a histogram's _count is rendered as the sum of its
 * buckets, so +Inf always equals _count).
 *
 * Labels are strings from the config (endpoint and backend names), and a
 * reload may bring new ones at any time, so each worker keeps append-only
 * tables of series keyed by label values. A series is never moved or freed
 * until metrics_free; the table's count is published with a release store
 * after the series is complete, and a grown table is a new array published
 * before the count (old arrays are kept until metrics_free, as a scraper may
 * still read them). The hash index used for lookups is private to the
 * writer. Label strings are copied on first use, so a config that is freed
 * after a reload leaves no dangling label. After warm-up (every label
 * combination seen once) an update allocates nothing.
 *
 * Families (names that tests and dashboards rely on):
 *   gateway_requests_total{endpoint,code}                    counter
 *   gateway_request_duration_seconds{endpoint}               histogram
 *   gateway_backend_requests_total{endpoint,backend,outcome} counter
 *   gateway_backend_duration_seconds{backend}                histogram
 *   gateway_inflight_requests                                gauge
 *   gateway_upstream_connections_total{transport,event}      counter
 *   gateway_upstream_idle_connections                        gauge
 *   gateway_pool_hits_total{pool}, gateway_pool_misses_total{pool} counter
 *   gateway_access_log_dropped_total                         counter
 *   gateway_config_reloads_total{result="ok"|"error"}        counter
 *   gateway_spans_dropped_total                              counter
 *   gateway_cache_requests_total{backend,result}             counter
 *   gateway_backend_attempts_total{backend,kind}             counter
 *   gateway_store_entries, gateway_store_bytes               gauge
 * A request that matched no endpoint is labelled endpoint="none".
 */
#ifndef GATEWAY_METRICS_H
#define GATEWAY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "gateway/cache_result.h"
#include "gateway/outcome.h"

/* The Content-Type of metrics_render's output. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* The endpoint label of a request that matched no endpoint. */
#define METRICS_NO_ENDPOINT "none"

/* Histogram upper bounds, in seconds (+Inf is implied). */
#define METRICS_BUCKETS 13

struct metrics;

/* One pool's counters as a worker sees them (pool_name, pool_hits,
 * pool_misses); entries with the same name are summed. */
struct metrics_pool_stat {
    const char *name;
    uint64_t hits, misses;
};

/* Process-wide values that are not per worker. */
struct metrics_globals {
    const struct metrics_pool_stat *pools;
    size_t npools;
    uint64_t access_log_dropped;
    uint64_t reloads_ok, reloads_error;
    uint64_t spans_dropped; /* otel.c: queue full or export failed */
    uint64_t store_entries, store_bytes; /* the answer store (gateway/degraded.h) */
};

/* A worker's metrics, all zero. NULL on out-of-memory. Any thread; then only
 * the owning worker updates it. */
struct metrics *metrics_new(void);
/* Frees m and every series. No update or scrape of m may run or follow. */
void metrics_free(struct metrics *m);

/* Counts one finished request: requests_total{endpoint,code} and
 * request_duration_seconds{endpoint}. endpoint NULL or "" means no endpoint
 * matched. seconds < 0 or NaN skips the histogram. Owner thread only.
 * Returns 0, or -ENOMEM / -ENOSPC (a table is full: more than
 * METRICS_MAX_SERIES label combinations) when the sample was not counted. */
int metrics_request(struct metrics *m, const char *endpoint, int code, double seconds);

/* Counts one backend call: backend_requests_total{endpoint,backend,outcome}
 * and backend_duration_seconds{backend}. The outcome is the index of its
 * counter (gateway/outcome.h; no name lookup). seconds < 0 or NaN skips the
 * histogram (e.g. a call that never started). Owner thread only. Returns 0,
 * -EINVAL for an outcome out of range or a NULL name, -ENOMEM or -ENOSPC. */
int metrics_backend(struct metrics *m, const char *endpoint, const char *backend,
                    enum outcome outcome, double seconds);

/* Counts one call of a cached backend: cache_requests_total{backend,result}.
 * The result is the index of its counter (gateway/cache_result.h; no name
 * lookup). Owner thread only. Returns 0, -EINVAL for CACHE_NONE, a result
 * out of range or a NULL name, -ENOMEM or -ENOSPC. */
int metrics_cache(struct metrics *m, const char *backend, enum cache_result result);

/* Counts the attempts of one backend call (gateway/attempt.h):
 * backend_attempts_total{backend,kind}, kind first, retry, hedge. Owner
 * thread only. Returns 0, -EINVAL for a NULL name, -ENOMEM or -ENOSPC. */
int metrics_attempts(struct metrics *m, const char *backend, unsigned first, unsigned retry,
                     unsigned hedge);

/* Counts one item call of a foreach backend:
 * backend_items_total{endpoint,backend,outcome} (the backend itself is
 * counted once by metrics_backend). Same returns as metrics_backend. */
int metrics_item(struct metrics *m, const char *endpoint, const char *backend,
                 enum outcome outcome);

/* Adds delta to the in-flight gauge (+1 when a request starts, -1 when it
 * ends, on the same worker). Owner thread only. */
void metrics_inflight_add(struct metrics *m, int delta);

/* Backend connection events (gateway_upstream_connections_total), by
 * transport; and the idle-connection gauge. Owner thread only. */
enum metrics_transport { METRICS_TRANSPORT_CURL, METRICS_TRANSPORT_NATIVE, METRICS_TRANSPORTS };
enum metrics_up_event {
    METRICS_UP_CONNECT,
    METRICS_UP_REUSE,
    METRICS_UP_CLOSE,
    METRICS_UP_STALE_RETRY,
    METRICS_UP_EVENTS
};
void metrics_upstream_event(struct metrics *m, enum metrics_transport t, enum metrics_up_event e);
void metrics_upstream_idle_add(struct metrics *m, int delta);

/* Most distinct label combinations per table and worker; beyond it updates
 * of new combinations fail with -ENOSPC (a guard against a label explosion,
 * e.g. arbitrary status codes). */
#define METRICS_MAX_SERIES 65536

/* Appends the exposition of the n workers' metrics (NULL entries skipped),
 * summed, and of g (may be NULL) to out. Any thread, concurrently with the
 * workers' updates; allocates scratch memory. Series are sorted by label
 * values. Returns 0 or -ENOMEM (out may then hold a partial exposition). */
int metrics_render(buf_t *out, struct metrics *const *per_worker, size_t n,
                   const struct metrics_globals *g);

#endif
