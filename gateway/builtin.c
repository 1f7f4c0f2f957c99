/*
 * builtin: the gateway's own endpoints, answered on the worker that got the
 * request with no backend called: /healthz (alive), /readyz (503 while
 * draining) and /metrics (every worker's counters summed, the pools, the
 * store, the access log and span exporter's drops, the reloads).
 *
 * Invariant: a scrape reads another worker's metrics and pools only while
 * that worker is ready, under gw->scrape_lock (a stopping worker turns
 * unready under it before it frees them).
 */
#include "gateway/builtin.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "core/pool.h"
#include "gateway/accesslog.h"
#include "gateway/degraded.h"
#include "gateway/metrics.h"
#include "gateway/otel.h"

bool is_builtin(const char *path)
{
    return strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0 ||
           strcmp(path, "/metrics") == 0;
}

/* Sums every worker's counters; runs on the worker that got the scrape,
 * reading the others' with relaxed atomics (pool counters likewise). */
static void render_metrics(struct gateway *gw, buf_t *out)
{
    struct metrics *per[gw->n_workers];
    struct metrics_pool_stat pools[2 * gw->n_workers];
    size_t np = 0;
    size_t n = 0;
    pthread_mutex_lock(&gw->scrape_lock);
    for (int i = 0; i < gw->n_workers; i++) {
        struct worker *w = gw->workers[i];
        /* A worker still starting has no pools yet; ready is released
         * after they are made. One that stops turns unready under
         * scrape_lock before it frees them. */
        if (!w || !atomic_load_explicit(&w->ready, memory_order_acquire)) continue;
        per[n++] = w->metrics;
        const pool_t *ps[2] = {w->buf_pool, w->handle_pool};
        for (int j = 0; j < 2; j++)
            if (ps[j])
                pools[np++] = (struct metrics_pool_stat){pool_name(ps[j]), pool_hits(ps[j]),
                                                         pool_misses(ps[j])};
    }
    pthread_mutex_unlock(&gw->scrape_lock);
    size_t store_entries = 0, store_bytes = 0;
    if (gw->degraded) degraded_stats(gw->degraded, &store_entries, &store_bytes);
    struct metrics_globals g = {
        .store_entries = store_entries,
        .store_bytes = store_bytes,
        .pools = pools,
        .npools = np,
        .access_log_dropped = accesslog_dropped(gw->log),
        .reloads_ok = atomic_load_explicit(&gw->reloads_ok, memory_order_relaxed),
        .reloads_error = atomic_load_explicit(&gw->reloads_error, memory_order_relaxed),
        .spans_dropped = otel_dropped(gw->otel),
    };
    if (metrics_render(out, per, n, &g) != 0) buf_clear(out);
}

int builtin_answer(struct gateway *gw, const char *path, buf_t *out, const char **content_type)
{
    bool draining = atomic_load_explicit(&gw->draining, memory_order_relaxed);
    if (strcmp(path, "/healthz") == 0) {
        (void)buf_puts(out, "{\"status\":\"ok\"}");
        return 200;
    }
    if (strcmp(path, "/readyz") == 0) {
        (void)buf_puts(out, draining ? "{\"status\":\"draining\"}" : "{\"status\":\"ready\"}");
        return draining ? 503 : 200;
    }
    *content_type = METRICS_CONTENT_TYPE;
    render_metrics(gw, out);
    return 200;
}
