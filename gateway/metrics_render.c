/*
 * metrics_render: the Prometheus text exposition (version 0.0.4) of
 * /metrics. Owns the merge of the workers' series tables
 * (gateway/metrics_series.h) into one sorted list per family, the HELP and
 * TYPE lines, the label escaping, and the process-wide families (gauges,
 * upstream connections, pools, access log, reloads, spans).
 *
 * Invariants: runs on any thread, concurrently with the workers' updates,
 * and only reads their tables (acquire loads of each table's n and arr,
 * taken once per family, then relaxed loads of values); it never writes a
 * worker's memory. Series are sorted by label values, and a histogram's
 * _count is the sum of its buckets, so +Inf always equals _count. The
 * output is a contract (tests/gateway/test_metrics.c, integration/metrics,
 * dashboards): names, label order and number formats must not change.
 */
#include "gateway/metrics.h"
#include "gateway/metrics_series.h"
#include "gateway/ugroup.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const ATTEMPT_KINDS[NATTEMPT_KINDS] = {"first", "retry", "hedge"};

/* The label text of the histogram bounds (metrics.c places observations). */
static const char *const BOUNDS_LE[METRICS_BUCKETS] = {"0.001", "0.0025", "0.005", "0.01", "0.025",
                                                       "0.05",  "0.1",    "0.25",  "0.5",  "1",
                                                       "2.5",   "5",      "10"};

/* One label combination summed over the workers; the strings belong to a
 * worker's series, valid until metrics_free. */
struct merged {
    uint64_t hash;
    const char *a, *b;
    int code;
    uint64_t *v;
};

struct merge {
    struct merged *e;
    uint64_t *vals;
    size_t n;
    uint32_t *idx;
    size_t mask;
};

static int merged_cmp(const void *x, const void *y)
{
    const struct merged *p = x, *q = y;
    int c = strcmp(p->a, q->a);
    if (c) return c;
    if (p->b && q->b && (c = strcmp(p->b, q->b))) return c;
    return (p->code > q->code) - (p->code < q->code);
}

static void merge_free(struct merge *mg)
{
    free(mg->e);
    free(mg->vals);
    free(mg->idx);
}

/* Sums family f of the workers into mg, sorted by labels. */
static int merge_family(struct merge *mg, struct metrics *const *w, size_t nw, enum family f)
{
    size_t nvals = NVALS[f];
    memset(mg, 0, sizeof *mg);
    /* Counts may grow while we read; take each table's snapshot once. */
    struct arr **arrs = calloc(nw ? nw : 1, sizeof *arrs);
    size_t *ns = calloc(nw ? nw : 1, sizeof *ns);
    size_t total = 0;
    if (!arrs || !ns) goto nomem;
    for (size_t i = 0; i < nw; i++) {
        if (!w[i]) continue;
        ns[i] = atomic_load_explicit(&w[i]->t[f].n, memory_order_acquire);
        arrs[i] = atomic_load_explicit(&w[i]->t[f].arr, memory_order_acquire);
        total += ns[i];
    }
    size_t size = 16;
    while (size < total * 2)
        size *= 2;
    mg->e = calloc(total ? total : 1, sizeof *mg->e);
    mg->vals = calloc(total ? total * nvals : 1, sizeof *mg->vals);
    mg->idx = calloc(size, sizeof *mg->idx);
    mg->mask = size - 1;
    if (!mg->e || !mg->vals || !mg->idx) goto nomem;
    for (size_t i = 0; i < nw; i++) {
        for (size_t k = 0; k < ns[i]; k++) {
            struct series *s = arrs[i]->s[k];
            size_t j = s->hash & mg->mask;
            struct merged *e = NULL;
            for (; mg->idx[j]; j = (j + 1) & mg->mask) {
                struct merged *c = &mg->e[mg->idx[j] - 1];
                if (c->hash == s->hash && series_key_eq(s, c->hash, c->a, c->b, c->code)) {
                    e = c;
                    break;
                }
            }
            if (!e) {
                e = &mg->e[mg->n];
                *e = (struct merged){.hash = s->hash,
                                     .a = s->a,
                                     .b = s->b,
                                     .code = s->code,
                                     .v = mg->vals + mg->n * nvals};
                mg->idx[j] = (uint32_t)++mg->n;
            }
            for (size_t v = 0; v < nvals; v++)
                e->v[v] += atomic_load_explicit(&s->v[v], memory_order_relaxed);
        }
    }
    /* The index is not needed after this; sorting moves entries, not vals. */
    qsort(mg->e, mg->n, sizeof *mg->e, merged_cmp);
    free(arrs);
    free(ns);
    return 0;
nomem:
    free(arrs);
    free(ns);
    merge_free(mg);
    return -ENOMEM;
}

/* Appends a label value escaped per the exposition format. */
static int put_label(buf_t *out, const char *name, const char *value, bool first)
{
    int rc = buf_printf(out, "%s%s=\"", first ? "" : ",", name);
    for (const char *p = value; !rc && *p; p++) {
        switch (*p) {
        case '\\':
            rc = buf_append(out, "\\\\", 2);
            break;
        case '"':
            rc = buf_append(out, "\\\"", 2);
            break;
        case '\n':
            rc = buf_append(out, "\\n", 2);
            break;
        default:
            rc = buf_putc(out, *p);
        }
    }
    return rc ? rc : buf_putc(out, '"');
}

static int header(buf_t *out, const char *name, const char *type, const char *help)
{
    return buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{label="a"[,label2="b"]} value for a merged counter. */
static int render_counters(buf_t *out, const struct merge *mg, enum family f)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < mg->n; i++) {
        const struct merged *e = &mg->e[i];
        if (f == T_REQ) {
            char code[16];
            snprintf(code, sizeof code, "%d", e->code);
            rc = buf_puts(out, "gateway_requests_total{");
            if (!rc) rc = put_label(out, "endpoint", e->a, true);
            if (!rc) rc = put_label(out, "code", code, false);
            if (!rc) rc = buf_printf(out, "} %" PRIu64 "\n", e->v[0]);
            continue;
        }
        if (f == T_CACHE || f == T_ATTEMPTS) { /* {backend, one more label} */
            bool cache = f == T_CACHE;
            for (size_t o = 0; !rc && o < NVALS[f]; o++) {
                const char *v = cache ? cache_result_name((enum cache_result)(CACHE_HIT + o))
                                      : ATTEMPT_KINDS[o];
                rc = buf_puts(out, cache ? "gateway_cache_requests_total{"
                                         : "gateway_backend_attempts_total{");
                if (!rc) rc = put_label(out, "backend", e->a, true);
                if (!rc) rc = put_label(out, cache ? "result" : "kind", v, false);
                if (!rc) rc = buf_printf(out, "} %" PRIu64 "\n", e->v[o]);
            }
            continue;
        }
        for (size_t o = 0; !rc && o < NOUTCOMES; o++) {
            rc = buf_puts(out, f == T_ITEMS ? "gateway_backend_items_total{"
                                            : "gateway_backend_requests_total{");
            if (!rc) rc = put_label(out, "endpoint", e->a, true);
            if (!rc) rc = put_label(out, "backend", e->b, false);
            if (!rc) rc = put_label(out, "outcome", outcome_name((enum outcome)o), false);
            if (!rc) rc = buf_printf(out, "} %" PRIu64 "\n", e->v[o]);
        }
    }
    return rc;
}

static int render_hists(buf_t *out, const struct merge *mg, const char *name, const char *label)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < mg->n; i++) {
        const struct merged *e = &mg->e[i];
        uint64_t cum = 0;
        for (size_t k = 0; !rc && k <= METRICS_BUCKETS; k++) {
            cum += e->v[k];
            rc = buf_printf(out, "%s_bucket{", name);
            if (!rc) rc = put_label(out, label, e->a, true);
            if (!rc) rc = put_label(out, "le", k < METRICS_BUCKETS ? BOUNDS_LE[k] : "+Inf", false);
            if (!rc) rc = buf_printf(out, "} %" PRIu64 "\n", cum);
        }
        uint64_t sum = e->v[HIST_SUM];
        if (!rc) rc = buf_printf(out, "%s_sum{", name);
        if (!rc) rc = put_label(out, label, e->a, true);
        if (!rc)
            rc = buf_printf(out, "} %" PRIu64 ".%09" PRIu64 "\n", sum / 1000000000,
                            sum % 1000000000);
        if (!rc) rc = buf_printf(out, "%s_count{", name);
        if (!rc) rc = put_label(out, label, e->a, true);
        if (!rc) rc = buf_printf(out, "} %" PRIu64 "\n", cum);
    }
    return rc;
}

/* gateway_upstream_connections_total and gateway_upstream_idle_connections,
 * summed over the workers. */
static int render_upstream(buf_t *out, struct metrics *const *w, size_t nw)
{
    static const char *const tn[METRICS_TRANSPORTS] = {"curl", "native"};
    static const char *const en[METRICS_UP_EVENTS] = {"connect", "reuse", "close", "stale_retry"};
    int rc = header(out, "gateway_upstream_connections_total", "counter",
                    "Backend connection events, by transport and event.");
    for (int t = 0; t < METRICS_TRANSPORTS && !rc; t++) {
        for (int e = 0; e < METRICS_UP_EVENTS && !rc; e++) {
            uint64_t v = 0;
            for (size_t i = 0; i < nw; i++)
                if (w[i]) v += atomic_load_explicit(&w[i]->up_events[t][e], memory_order_relaxed);
            rc = buf_printf(out,
                            "gateway_upstream_connections_total{transport=\"%s\",event=\"%s\"} "
                            "%" PRIu64 "\n",
                            tn[t], en[e], v);
        }
    }
    int64_t idle = 0;
    for (size_t i = 0; i < nw; i++)
        if (w[i]) idle += atomic_load_explicit(&w[i]->up_idle, memory_order_relaxed);
    if (!rc)
        rc = header(out, "gateway_upstream_idle_connections", "gauge",
                    "Idle keep-alive backend connections (native transport).");
    if (!rc) rc = buf_printf(out, "gateway_upstream_idle_connections %" PRId64 "\n", idle);
    return rc;
}

static int pool_cmp(const void *x, const void *y)
{
    const struct metrics_pool_stat *p = x, *q = y;
    return strcmp(p->name, q->name);
}

static int render_pools(buf_t *out, const struct metrics_globals *g)
{
    size_t n = 0, np = g ? g->npools : 0;
    struct metrics_pool_stat *sum = calloc(np ? np : 1, sizeof *sum);
    if (!sum) return -ENOMEM;
    for (size_t i = 0; i < np; i++) {
        const struct metrics_pool_stat *p = &g->pools[i];
        if (!p->name) continue;
        size_t k = 0;
        while (k < n && strcmp(sum[k].name, p->name) != 0)
            k++;
        if (k == n) sum[n++] = (struct metrics_pool_stat){.name = p->name};
        sum[k].hits += p->hits;
        sum[k].misses += p->misses;
    }
    qsort(sum, n, sizeof *sum, pool_cmp);
    int rc = header(out, "gateway_pool_hits_total", "counter",
                    "Objects served from a worker pool's cache.");
    for (size_t k = 0; !rc && k < n; k++) {
        rc = buf_puts(out, "gateway_pool_hits_total{");
        if (!rc) rc = put_label(out, "pool", sum[k].name, true);
        if (!rc) rc = buf_printf(out, "} %" PRIu64 "\n", sum[k].hits);
    }
    if (!rc)
        rc = header(out, "gateway_pool_misses_total", "counter",
                    "Objects a worker pool had to create.");
    for (size_t k = 0; !rc && k < n; k++) {
        rc = buf_puts(out, "gateway_pool_misses_total{");
        if (!rc) rc = put_label(out, "pool", sum[k].name, true);
        if (!rc) rc = buf_printf(out, "} %" PRIu64 "\n", sum[k].misses);
    }
    free(sum);
    return rc;
}

/* The per-worker families, in exposition order. label: the histogram's
 * label (NULL for counters). help NULL: built from the outcome names. */
static const struct family_doc {
    enum family f;
    const char *name, *type, *help, *label;
} FAMILY_DOCS[] = {
    {T_REQ, "gateway_requests_total", "counter", "Requests answered, by endpoint and status code.",
     NULL},
    {T_REQ_HIST, "gateway_request_duration_seconds", "histogram",
     "Time from a request's arrival to its response, by endpoint.", "endpoint"},
    {T_BACKEND, "gateway_backend_requests_total", "counter", NULL, NULL},
    {T_ITEMS, "gateway_backend_items_total", "counter",
     "Item calls of foreach backends by endpoint, backend and outcome.", NULL},
    {T_BACKEND_HIST, "gateway_backend_duration_seconds", "histogram",
     "Duration of backend calls, by backend.", "backend"},
    {T_CACHE, "gateway_cache_requests_total", "counter",
     "Cached backend calls by backend and result (hit, miss, coalesced).", NULL},
    {T_ATTEMPTS, "gateway_backend_attempts_total", "counter",
     "Backend attempts by backend and kind (first, retry, hedge).", NULL},
};

/* The HELP of gateway_backend_requests_total, naming every outcome. */
static void outcomes_help(char *help, size_t cap)
{
    size_t n = (size_t)snprintf(help, cap, "Backend calls by endpoint, backend and outcome (");
    for (size_t o = 0; o < NOUTCOMES && n < cap; o++)
        n += (size_t)snprintf(help + n, cap - n, "%s%s", o ? ", " : "",
                              outcome_name((enum outcome)o));
    if (n < cap) snprintf(help + n, cap - n, ").");
}

/* One per-worker family: its header, then its series summed over workers. */
static int render_family(buf_t *out, struct metrics *const *w, size_t nw,
                         const struct family_doc *d)
{
    char help[256];
    if (!d->help) outcomes_help(help, sizeof help);
    int rc = header(out, d->name, d->type, d->help ? d->help : help);
    struct merge mg;
    if (!rc && !(rc = merge_family(&mg, w, nw, d->f))) {
        rc = d->label ? render_hists(out, &mg, d->name, d->label) : render_counters(out, &mg, d->f);
        merge_free(&mg);
    }
    return rc;
}

/* The store gauges and the in-flight gauge summed over workers. */
static int render_gauges(buf_t *out, struct metrics *const *w, size_t nw,
                         const struct metrics_globals *g)
{
    int rc = header(out, "gateway_store_entries", "gauge",
                    "Answers held by the store the cache and the degraded fallback share.");
    if (!rc)
        rc = buf_printf(out, "gateway_store_entries %" PRIu64 "\n", g ? g->store_entries : 0);
    if (!rc)
        rc = header(out, "gateway_store_bytes", "gauge",
                    "Bytes held by the store's entries (headers, keys and bodies).");
    if (!rc) rc = buf_printf(out, "gateway_store_bytes %" PRIu64 "\n", g ? g->store_bytes : 0);
    if (!rc) {
        int64_t inflight = 0;
        for (size_t i = 0; i < nw; i++)
            if (w[i]) inflight += atomic_load_explicit(&w[i]->inflight, memory_order_relaxed);
        rc = header(out, "gateway_inflight_requests", "gauge", "Requests being served now.");
        if (!rc) rc = buf_printf(out, "gateway_inflight_requests %" PRId64 "\n", inflight);
    }
    return rc;
}

/* The process-wide counters of g: access log, reloads, spans. */
static int render_process(buf_t *out, const struct metrics_globals *g)
{
    int rc = header(out, "gateway_access_log_dropped_total", "counter",
                    "Access-log records dropped because the writer's queue was full.");
    if (!rc)
        rc = buf_printf(out, "gateway_access_log_dropped_total %" PRIu64 "\n",
                        g ? g->access_log_dropped : 0);
    if (!rc)
        rc = header(out, "gateway_config_reloads_total", "counter",
                    "Configuration reloads, by result.");
    if (!rc)
        rc = buf_printf(out,
                        "gateway_config_reloads_total{result=\"ok\"} %" PRIu64 "\n"
                        "gateway_config_reloads_total{result=\"error\"} %" PRIu64 "\n",
                        g ? g->reloads_ok : 0, g ? g->reloads_error : 0);
    if (!rc)
        rc = header(out, "gateway_spans_dropped_total", "counter",
                    "Trace spans dropped: exporter queue full or the collector did not take them.");
    if (!rc)
        rc = buf_printf(out, "gateway_spans_dropped_total %" PRIu64 "\n",
                        g ? g->spans_dropped : 0);
    return rc;
}

int metrics_render(buf_t *out, struct metrics *const *w, size_t nw, const struct metrics_globals *g)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < sizeof FAMILY_DOCS / sizeof FAMILY_DOCS[0]; i++)
        rc = render_family(out, w, nw, &FAMILY_DOCS[i]);
    if (!rc) rc = render_gauges(out, w, nw, g);
    if (!rc) rc = render_upstream(out, w, nw);
    if (!rc) rc = render_pools(out, g);
    if (!rc) rc = ugroup_render(out);
    if (!rc) rc = render_process(out, g);
    return rc;
}
