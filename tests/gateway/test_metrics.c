/* Tests for gateway/metrics.c: the exposition is checked by a strict parser
 * of the Prometheus text format 0.0.4, values are checked after summing
 * workers, and writers race a scraper (run under TSan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <cmocka.h>

#include "gateway/metrics.h"

/* ---- a strict parser of the exposition format ---- */

enum { MAX_LABELS = 8 };

struct sample {
    char *name;
    int nlabels;
    char *lname[MAX_LABELS];
    char *lvalue[MAX_LABELS]; /* unescaped */
    char *key;                /* name + labels sorted by name: for lookups and duplicates */
    char *group;              /* key without "le" (histograms) */
    double value;
    int family;
};

struct family {
    char *name;
    char type[16];
    bool help;
};

struct expo {
    struct sample *s;
    int ns;
    struct family *f;
    int nf;
    char err[256];
};

static bool name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}

static bool name_char(char c)
{
    return name_start(c) || (c >= '0' && c <= '9');
}

/* Reads a metric name (colons allowed when metric) at *p. */
static char *read_name(const char **p, bool metric)
{
    const char *s = *p;
    if (!name_start(*s) || (!metric && *s == ':')) return NULL;
    while (name_char(*s) && (metric || *s != ':'))
        s++;
    char *r = strndup(*p, (size_t)(s - *p));
    *p = s;
    return r;
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool perr(struct expo *e, int line, const char *what)
{
    if (!e->err[0]) snprintf(e->err, sizeof e->err, "line %d: %s", line, what);
    return false;
}

static int find_family(const struct expo *e, const char *name)
{
    for (int i = 0; i < e->nf; i++)
        if (strcmp(e->f[i].name, name) == 0) return i;
    return -1;
}

static bool has_suffix(const char *s, const char *fam, const char *suffix)
{
    size_t n = strlen(fam);
    return strncmp(s, fam, n) == 0 && strcmp(s + n, suffix) == 0;
}

static char *make_key(const struct sample *s, bool skip_le)
{
    int order[MAX_LABELS];
    for (int i = 0; i < s->nlabels; i++)
        order[i] = i;
    for (int i = 1; i < s->nlabels; i++)
        for (int j = i; j > 0 && strcmp(s->lname[order[j - 1]], s->lname[order[j]]) > 0; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    size_t len = strlen(s->name) + 2;
    for (int i = 0; i < s->nlabels; i++)
        len += strlen(s->lname[i]) + strlen(s->lvalue[i]) + 3;
    char *k = malloc(len);
    strcpy(k, skip_le ? "" : s->name);
    for (int i = 0; i < s->nlabels; i++) {
        int j = order[i];
        if (skip_le && strcmp(s->lname[j], "le") == 0) continue;
        strcat(k, "|");
        strcat(k, s->lname[j]);
        strcat(k, "=");
        strcat(k, s->lvalue[j]);
    }
    return k;
}

/* Parses one sample line; returns false with e->err set. */
static bool parse_sample(struct expo *e, int line, const char *p, struct sample *s)
{
    memset(s, 0, sizeof *s);
    if (!(s->name = read_name(&p, true))) return perr(e, line, "bad metric name");
    if (*p == '{') {
        p++;
        while (*p != '}') {
            if (s->nlabels == MAX_LABELS) return perr(e, line, "too many labels");
            char *ln = read_name(&p, false);
            if (!ln) return perr(e, line, "bad label name");
            s->lname[s->nlabels] = ln;
            if (*p++ != '=' || *p++ != '"') return perr(e, line, "expected =\"");
            char *v = malloc(strlen(p) + 1), *o = v;
            s->lvalue[s->nlabels++] = v;
            for (;;) {
                if (*p == '\0' || *p == '\n') return perr(e, line, "unterminated value");
                if (*p == '"') break;
                if (*p == '\\') {
                    p++;
                    if (*p == '\\' || *p == '"')
                        *o++ = *p++;
                    else if (*p == 'n')
                        *o++ = '\n', p++;
                    else
                        return perr(e, line, "bad escape in label value");
                } else {
                    *o++ = *p++;
                }
            }
            *o = '\0';
            p++; /* closing quote */
            for (int i = 0; i < s->nlabels - 1; i++)
                if (strcmp(s->lname[i], ln) == 0) return perr(e, line, "repeated label");
            if (*p == ',') {
                p++;
                if (*p == '}') return perr(e, line, "trailing comma");
            } else if (*p != '}') {
                return perr(e, line, "expected , or }");
            }
        }
        p++;
    }
    if (*p++ != ' ') return perr(e, line, "expected one space before the value");
    if (strcmp(p, "+Inf") == 0)
        s->value = INFINITY;
    else if (strcmp(p, "-Inf") == 0)
        s->value = -INFINITY;
    else if (strcmp(p, "NaN") == 0)
        s->value = NAN;
    else {
        char *end;
        errno = 0;
        if (!*p || *p == ' ') return perr(e, line, "no value");
        s->value = strtod(p, &end);
        if (*end || errno) return perr(e, line, "bad value (or a timestamp)");
        if (strchr(p, 'x') || strchr(p, 'X')) return perr(e, line, "hex value");
    }
    return true;
}

static void expo_free(struct expo *e)
{
    for (int i = 0; i < e->ns; i++) {
        struct sample *s = &e->s[i];
        free(s->name);
        for (int j = 0; j < s->nlabels; j++) {
            free(s->lname[j]);
            free(s->lvalue[j]);
        }
        free(s->key);
        free(s->group);
    }
    for (int i = 0; i < e->nf; i++)
        free(e->f[i].name);
    free(e->s);
    free(e->f);
    memset(e, 0, sizeof *e);
}

/* Checks a histogram family: per label set, buckets with ascending le,
 * cumulative counts, the last one +Inf equal to _count, and one _sum. */
static bool check_histogram(struct expo *e, int fam)
{
    const char *fname = e->f[fam].name;
    int matched = 0;
    for (int i = 0; i < e->ns; i++) {
        struct sample *c = &e->s[i];
        if (c->family != fam || !has_suffix(c->name, fname, "_count")) continue;
        double last_le = -INFINITY, last = 0;
        int buckets = 0, sums = 0;
        bool inf = false;
        for (int j = 0; j < e->ns; j++) {
            struct sample *s = &e->s[j];
            if (s->family != fam || strcmp(s->group, c->group) != 0) continue;
            if (has_suffix(s->name, fname, "_sum")) sums++;
            if (!has_suffix(s->name, fname, "_bucket")) continue;
            const char *le = NULL;
            for (int k = 0; k < s->nlabels; k++)
                if (strcmp(s->lname[k], "le") == 0) le = s->lvalue[k];
            double b = strcmp(le, "+Inf") == 0 ? INFINITY : strtod(le, NULL);
            if (!(b > last_le)) return perr(e, 0, "histogram buckets not ascending");
            if (s->value < last) return perr(e, 0, "histogram buckets not cumulative");
            if (inf) return perr(e, 0, "bucket after +Inf");
            inf = isinf(b);
            last_le = b;
            last = s->value;
            buckets++;
            matched++;
        }
        if (!buckets || !inf) return perr(e, 0, "histogram without a +Inf bucket");
        if (last != c->value) return perr(e, 0, "+Inf bucket != _count");
        if (sums != 1) return perr(e, 0, "histogram without exactly one _sum");
    }
    /* Every bucket belongs to a label set that has a _count. */
    int all = 0;
    for (int i = 0; i < e->ns; i++)
        all += e->s[i].family == fam && has_suffix(e->s[i].name, fname, "_bucket");
    if (all != matched) return perr(e, 0, "buckets without _count");
    return true;
}

/* Parses text strictly. Returns true, or false with e->err. */
static bool expo_parse(struct expo *e, const char *text)
{
    memset(e, 0, sizeof *e);
    int cur = -1, line = 0;
    const char *p = text;
    while (*p) {
        line++;
        const char *nl = strchr(p, '\n');
        if (!nl) return perr(e, line, "last line without newline");
        char *l = strndup(p, (size_t)(nl - p));
        p = nl + 1;
        if (!*l) {
            free(l);
            return perr(e, line, "empty line");
        }
        if (l[0] == '#') {
            bool help = strncmp(l, "# HELP ", 7) == 0, type = strncmp(l, "# TYPE ", 7) == 0;
            if (!help && !type) {
                free(l);
                return perr(e, line, "a comment that is neither HELP nor TYPE");
            }
            const char *q = l + 7;
            char *name = read_name(&q, true);
            if (!name || *q != ' ') {
                free(name);
                free(l);
                return perr(e, line, "bad HELP/TYPE name");
            }
            q++;
            int fam = find_family(e, name);
            if (help) {
                /* HELP opens a family; it must be new. */
                if (fam >= 0 || !*q) {
                    free(name);
                    free(l);
                    return perr(e, line, "family declared twice or empty HELP");
                }
                for (const char *h = q; *h; h++)
                    if (*h == '\\' && h[1] != '\\' && h[1] != 'n') {
                        free(name);
                        free(l);
                        return perr(e, line, "bad escape in HELP");
                    }
                e->f = realloc(e->f, (size_t)(e->nf + 1) * sizeof *e->f);
                e->f[e->nf] = (struct family){.name = name, .help = true};
                cur = e->nf++;
            } else {
                if (fam < 0 || fam != cur || e->f[fam].type[0]) {
                    free(name);
                    free(l);
                    return perr(e, line, "TYPE not right after its HELP, or twice");
                }
                free(name);
                if (strcmp(q, "counter") && strcmp(q, "gauge") && strcmp(q, "histogram")) {
                    free(l);
                    return perr(e, line, "unknown TYPE");
                }
                snprintf(e->f[fam].type, sizeof e->f[fam].type, "%s", q);
                for (int i = 0; i < e->ns; i++)
                    if (e->s[i].family == fam) {
                        free(l);
                        return perr(e, line, "TYPE after samples");
                    }
            }
            free(l);
            continue;
        }
        /* capacity doubles at powers of two: one realloc per sample was
         * quadratic copying under ASan (minutes for thousands of series) */
        if (e->ns < 16 ? e->ns == 0 : (e->ns & (e->ns - 1)) == 0)
            e->s = realloc(e->s, (size_t)(e->ns < 16 ? 16 : 2 * e->ns) * sizeof *e->s);
        struct sample *s = &e->s[e->ns++];
        bool ok = parse_sample(e, line, l, s);
        free(l);
        s->family = cur;
        if (!ok) return false;
        s->key = make_key(s, false);
        s->group = make_key(s, true);
        if (cur < 0 || !e->f[cur].type[0]) return perr(e, line, "sample before its family's TYPE");
        const struct family *f = &e->f[cur];
        bool le = false;
        for (int i = 0; i < s->nlabels; i++)
            le |= strcmp(s->lname[i], "le") == 0;
        if (strcmp(f->type, "histogram") == 0) {
            bool bucket = has_suffix(s->name, f->name, "_bucket");
            if (!bucket && !has_suffix(s->name, f->name, "_sum") &&
                !has_suffix(s->name, f->name, "_count"))
                return perr(e, line, "sample outside its histogram family");
            if (bucket != le) return perr(e, line, "le on a non-bucket or missing");
        } else {
            if (strcmp(s->name, f->name) != 0)
                return perr(e, line, "sample outside its family (not contiguous?)");
            if (le) return perr(e, line, "le outside a histogram");
            if (strcmp(f->type, "counter") == 0 && !(s->value >= 0))
                return perr(e, line, "negative or NaN counter");
        }
    }
    /* duplicates: sorted keys, adjacent compare (a quadratic scan took
     * minutes on thousands of series under the sanitizers) */
    const char **keys = malloc((size_t)(e->ns ? e->ns : 1) * sizeof(*keys));
    assert_non_null(keys);
    for (int i = 0; i < e->ns; i++)
        keys[i] = e->s[i].key;
    qsort(keys, (size_t)e->ns, sizeof(*keys), key_cmp);
    for (int i = 1; i < e->ns; i++)
        if (strcmp(keys[i - 1], keys[i]) == 0) {
            free(keys);
            return perr(e, 0, "duplicate series");
        }
    free(keys);
    for (int i = 0; i < e->nf; i++) {
        if (!e->f[i].type[0]) return perr(e, 0, "family without TYPE");
        if (strcmp(e->f[i].type, "histogram") == 0) check_histogram(e, i);
    }
    return !e->err[0];
}

/* The value of name{labels...} (pairs, NULL-terminated); NAN when absent. */
static double get(const struct expo *e, const char *name, ...)
{
    struct sample s = {.name = (char *)name};
    va_list ap;
    va_start(ap, name);
    const char *k;
    while ((k = va_arg(ap, const char *))) {
        s.lname[s.nlabels] = (char *)k;
        s.lvalue[s.nlabels++] = va_arg(ap, char *);
    }
    va_end(ap);
    char *key = make_key(&s, false);
    double v = NAN;
    for (int i = 0; i < e->ns; i++)
        if (strcmp(e->s[i].key, key) == 0) v = e->s[i].value;
    free(key);
    return v;
}

static int count_samples(const struct expo *e, const char *name)
{
    int n = 0;
    for (int i = 0; i < e->ns; i++)
        n += strcmp(e->s[i].name, name) == 0;
    return n;
}

static void render_parse(struct expo *e, struct metrics *const *w, size_t n,
                         const struct metrics_globals *g)
{
    buf_t out;
    buf_init(&out, NULL);
    assert_int_equal(metrics_render(&out, w, n, g), 0);
    bool ok = expo_parse(e, out.data);
    if (!ok) fprintf(stderr, "%s\n--- exposition ---\n%s", e->err, out.data);
    buf_free(&out);
    assert_true(ok);
}

/* ---- the parser rejects what it must ---- */

static void test_parser_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "a 1\n",                                      /* no TYPE */
        "# HELP a x\n# TYPE a counter\na 1",          /* no final newline */
        "# HELP a x\n# TYPE a counter\nb 1\n",        /* other family */
        "# HELP a x\n# TYPE a counter\na{l=\"v} 1\n", /* unterminated */
        "# HELP a x\n# TYPE a counter\na{l=\"\\t\"} 1\n",
        "# HELP a x\n# TYPE a counter\na{l=\"v\",l=\"w\"} 1\n",
        "# HELP a x\n# TYPE a counter\na 1\na 2\n", /* duplicate */
        "# HELP a x\n# TYPE a counter\na 1 123\n",  /* timestamp: we never emit one */
        "# HELP a x\n# TYPE a summary\n",
        "# HELP a x\n# TYPE a counter\na{1l=\"v\"} 1\n",
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
        "h_sum 1\nh_count 1\n",
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\n"
        "h_sum 1\nh_count 2\n",
        "# HELP a x\n# TYPE a counter\n# HELP b x\n# TYPE b counter\na 1\n",
        "# HELP a x\n# TYPE a counter\n\na 1\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct expo e;
        bool ok = expo_parse(&e, bad[i]);
        if (ok) fprintf(stderr, "accepted: %s\n", bad[i]);
        assert_false(ok);
        expo_free(&e);
    }
    struct expo e;
    assert_true(expo_parse(&e,
                           "# HELP h x\n# TYPE h histogram\nh_bucket{a=\"\\\"\\n\\\\\",le=\"1\"} "
                           "1\nh_bucket{a=\"\\\"\\n\\\\\",le=\"+Inf\"} 1\n"
                           "h_sum{a=\"\\\"\\n\\\\\"} 0.5\nh_count{a=\"\\\"\\n\\\\\"} 1\n"));
    assert_true(get(&e, "h_count", "a", "\"\n\\", NULL) == 1);
    expo_free(&e);
}

/* ---- the renderer ---- */

static void test_empty(void **state)
{
    (void)state;
    struct expo e;
    render_parse(&e, NULL, 0, NULL);
    static const char *const families[] = {
        "gateway_requests_total",         "gateway_request_duration_seconds",
        "gateway_backend_requests_total", "gateway_backend_duration_seconds",
        "gateway_inflight_requests",      "gateway_pool_hits_total",
        "gateway_pool_misses_total",      "gateway_access_log_dropped_total",
        "gateway_config_reloads_total",   "gateway_spans_dropped_total",
        "gateway_upstream_connections_total", "gateway_upstream_idle_connections",
        "gateway_cache_requests_total",   "gateway_store_entries",
        "gateway_store_bytes",            "gateway_backend_items_total",
        "gateway_breaker_state",          "gateway_upstream_host_healthy",
        "gateway_backend_attempts_total", "gateway_retry_budget_exhausted_total"};
    assert_int_equal(e.nf, 20);
    for (size_t i = 0; i < 20; i++)
        assert_true(find_family(&e, families[i]) >= 0);
    assert_true(get(&e, "gateway_upstream_connections_total", "transport", "native", "event",
                    "stale_retry", NULL) == 0);
    assert_true(get(&e, "gateway_upstream_idle_connections", NULL) == 0);
    assert_true(get(&e, "gateway_inflight_requests", NULL) == 0);
    assert_true(get(&e, "gateway_access_log_dropped_total", NULL) == 0);
    assert_true(get(&e, "gateway_config_reloads_total", "result", "ok", NULL) == 0);
    assert_true(get(&e, "gateway_config_reloads_total", "result", "error", NULL) == 0);
    assert_true(get(&e, "gateway_spans_dropped_total", NULL) == 0);
    assert_true(get(&e, "gateway_store_entries", NULL) == 0);
    expo_free(&e);
}

/* gateway_cache_requests_total sums the workers per backend and result;
 * the store gauges come from the globals. */
static void test_cache_counters(void **state)
{
    (void)state;
    struct metrics *w[2] = {metrics_new(), metrics_new()};
    assert_int_equal(metrics_cache(w[0], "users", "hit"), 0);
    assert_int_equal(metrics_cache(w[1], "users", "hit"), 0);
    assert_int_equal(metrics_cache(w[1], "users", "coalesced"), 0);
    assert_int_equal(metrics_cache(w[0], "users", "miss"), 0);
    assert_int_equal(metrics_cache(w[0], "users", "stale"), -EINVAL);
    struct metrics_globals g = {.store_entries = 7, .store_bytes = 1234};
    struct expo e;
    render_parse(&e, w, 2, &g);
    assert_true(get(&e, "gateway_cache_requests_total", "backend", "users", "result", "hit",
                    NULL) == 2);
    assert_true(get(&e, "gateway_cache_requests_total", "backend", "users", "result", "miss",
                    NULL) == 1);
    assert_true(get(&e, "gateway_cache_requests_total", "backend", "users", "result",
                    "coalesced", NULL) == 1);
    assert_true(get(&e, "gateway_store_entries", NULL) == 7);
    assert_true(get(&e, "gateway_store_bytes", NULL) == 1234);
    expo_free(&e);
    metrics_free(w[0]);
    metrics_free(w[1]);
}

/* Each outcome is counted in its own counter and rendered with its own label,
 * for backend calls and item calls alike; a value out of range is refused. */
static void test_outcomes_by_index(void **state)
{
    (void)state;
    struct metrics *m = metrics_new();
    assert_non_null(m);
    for (int o = 0; o < OUTCOME_COUNT; o++)
        for (int k = 0; k <= o; k++) {
            assert_int_equal(metrics_backend(m, "ep", "b", (enum outcome)o, -1), 0);
            assert_int_equal(metrics_item(m, "ep", "b", (enum outcome)o), 0);
        }
    assert_int_equal(metrics_backend(m, "ep", "b", OUTCOME_COUNT, -1), -EINVAL);
    assert_int_equal(metrics_item(m, "ep", "b", (enum outcome)-1), -EINVAL);
    struct expo e;
    render_parse(&e, &m, 1, NULL);
    const char *names[] = {"ok", "error", "timeout", "cancelled", "open", "degraded", "static",
                           "omitted"};
    assert_int_equal(sizeof names / sizeof names[0], OUTCOME_COUNT);
    for (int o = 0; o < OUTCOME_COUNT; o++) {
        assert_string_equal(outcome_name((enum outcome)o), names[o]);
        assert_true(get(&e, "gateway_backend_requests_total", "endpoint", "ep", "backend", "b",
                        "outcome", names[o], NULL) == o + 1);
        assert_true(get(&e, "gateway_backend_items_total", "endpoint", "ep", "backend", "b",
                        "outcome", names[o], NULL) == o + 1);
    }
    assert_int_equal(count_samples(&e, "gateway_backend_requests_total"), OUTCOME_COUNT);
    assert_string_equal(outcome_name(OUTCOME_COUNT), "?");
    expo_free(&e);
    metrics_free(m);
}

static void test_sum_three_workers(void **state)
{
    (void)state;
    struct metrics *w[3];
    for (int i = 0; i < 3; i++)
        assert_non_null(w[i] = metrics_new());
    /* dash: 2 + 3 + 4 OK requests, one per worker on the 1 ms boundary */
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 2 + i; k++)
            assert_int_equal(metrics_request(w[i], "dash", 200, k == 0 ? 0.001 : 0.0011), 0);
    }
    assert_int_equal(metrics_request(w[1], "dash", 504, 20.0), 0); /* beyond 10 s: +Inf */
    assert_int_equal(metrics_request(w[2], NULL, 404, 0.0), 0);
    assert_int_equal(metrics_request(w[0], "", 404, -1), 0); /* no duration */
    assert_int_equal(metrics_request(w[0], "dash", 200, NAN), 0);

    assert_int_equal(metrics_backend(w[0], "dash", "user", OUT_OK, 0.2), 0);
    assert_int_equal(metrics_backend(w[1], "dash", "user", OUT_OK, 0.3), 0);
    assert_int_equal(metrics_backend(w[2], "dash", "user", OUT_TIMEOUT, 0.3), 0);
    assert_int_equal(metrics_backend(w[2], "dash", "recs", OUT_STATIC, -1), 0);
    assert_int_equal(metrics_backend(w[0], "dash", "recs", OUT_OMITTED, -1), 0);
    assert_int_equal(metrics_backend(w[0], "dash", "recs", OUTCOME_COUNT, 1), -EINVAL);
    assert_int_equal(metrics_backend(w[0], "dash", NULL, OUT_OK, 1), -EINVAL);

    metrics_inflight_add(w[0], 3);
    metrics_inflight_add(w[1], 2);
    metrics_inflight_add(w[1], -1);

    metrics_upstream_event(w[0], METRICS_TRANSPORT_NATIVE, METRICS_UP_CONNECT);
    metrics_upstream_event(w[2], METRICS_TRANSPORT_NATIVE, METRICS_UP_CONNECT);
    metrics_upstream_event(w[1], METRICS_TRANSPORT_NATIVE, METRICS_UP_REUSE);
    metrics_upstream_event(w[1], METRICS_TRANSPORT_NATIVE, METRICS_UP_STALE_RETRY);
    metrics_upstream_event(w[2], METRICS_TRANSPORT_CURL, METRICS_UP_CLOSE);
    metrics_upstream_idle_add(w[0], 2);
    metrics_upstream_idle_add(w[2], 1);
    metrics_upstream_idle_add(w[2], -1);

    struct metrics_pool_stat pools[] = {
        {"buf", 10, 2}, {"curl", 5, 1}, {"buf", 7, 3}, {"stack", 0, 4}};
    struct metrics_globals g = {
        .pools = pools, .npools = 4, .access_log_dropped = 17, .reloads_ok = 2, .reloads_error = 1,
        .spans_dropped = 5};
    struct expo e;
    render_parse(&e, w, 3, &g);

    assert_true(get(&e, "gateway_requests_total", "endpoint", "dash", "code", "200", NULL) == 10);
    assert_true(get(&e, "gateway_requests_total", "endpoint", "dash", "code", "504", NULL) == 1);
    assert_true(get(&e, "gateway_requests_total", "endpoint", "none", "code", "404", NULL) == 2);
    assert_int_equal(count_samples(&e, "gateway_requests_total"), 3);

    const char *u = "gateway_upstream_connections_total";
    assert_true(get(&e, u, "transport", "native", "event", "connect", NULL) == 2);
    assert_true(get(&e, u, "transport", "native", "event", "reuse", NULL) == 1);
    assert_true(get(&e, u, "transport", "native", "event", "stale_retry", NULL) == 1);
    assert_true(get(&e, u, "transport", "native", "event", "close", NULL) == 0);
    assert_true(get(&e, u, "transport", "curl", "event", "close", NULL) == 1);
    assert_int_equal(count_samples(&e, u), 8);
    assert_true(get(&e, "gateway_upstream_idle_connections", NULL) == 2);

    const char *h = "gateway_request_duration_seconds";
    char name[128];
    snprintf(name, sizeof name, "%s_bucket", h);
    assert_true(get(&e, name, "endpoint", "dash", "le", "0.001", NULL) == 3);
    assert_true(get(&e, name, "endpoint", "dash", "le", "0.0025", NULL) == 9);
    assert_true(get(&e, name, "endpoint", "dash", "le", "10", NULL) == 9);
    assert_true(get(&e, name, "endpoint", "dash", "le", "+Inf", NULL) == 10);
    assert_true(get(&e, name, "endpoint", "none", "le", "0.001", NULL) == 1);
    snprintf(name, sizeof name, "%s_count", h);
    assert_true(get(&e, name, "endpoint", "dash", NULL) == 10);
    assert_true(get(&e, name, "endpoint", "none", NULL) == 1);
    snprintf(name, sizeof name, "%s_sum", h);
    assert_true(fabs(get(&e, name, "endpoint", "dash", NULL) - (3 * 0.001 + 6 * 0.0011 + 20)) <
                1e-9);

    const char *b = "gateway_backend_requests_total";
    assert_true(get(&e, b, "endpoint", "dash", "backend", "user", "outcome", "ok", NULL) == 2);
    assert_true(get(&e, b, "endpoint", "dash", "backend", "user", "outcome", "timeout", NULL) == 1);
    assert_true(get(&e, b, "endpoint", "dash", "backend", "user", "outcome", "error", NULL) == 0);
    assert_true(get(&e, b, "endpoint", "dash", "backend", "recs", "outcome", "static", NULL) == 1);
    assert_true(get(&e, b, "endpoint", "dash", "backend", "recs", "outcome", "omitted", NULL) == 1);
    assert_int_equal(count_samples(&e, b), 16); /* 2 pairs x 8 outcomes */
    assert_true(get(&e, "gateway_backend_duration_seconds_count", "backend", "user", NULL) == 3);
    assert_true(get(&e, "gateway_backend_duration_seconds_bucket", "backend", "user", "le", "0.25",
                    NULL) == 1);
    assert_true(isnan(get(&e, "gateway_backend_duration_seconds_count", "backend", "recs", NULL)));

    assert_true(get(&e, "gateway_inflight_requests", NULL) == 4);
    assert_true(get(&e, "gateway_pool_hits_total", "pool", "buf", NULL) == 17);
    assert_true(get(&e, "gateway_pool_misses_total", "pool", "buf", NULL) == 5);
    assert_true(get(&e, "gateway_pool_hits_total", "pool", "curl", NULL) == 5);
    assert_true(get(&e, "gateway_pool_misses_total", "pool", "stack", NULL) == 4);
    assert_int_equal(count_samples(&e, "gateway_pool_hits_total"), 3);
    assert_true(get(&e, "gateway_access_log_dropped_total", NULL) == 17);
    assert_true(get(&e, "gateway_spans_dropped_total", NULL) == 5);
    assert_true(get(&e, "gateway_config_reloads_total", "result", "ok", NULL) == 2);
    assert_true(get(&e, "gateway_config_reloads_total", "result", "error", NULL) == 1);
    expo_free(&e);

    /* A NULL worker slot is skipped. */
    struct metrics *some[] = {NULL, w[1]};
    render_parse(&e, some, 2, NULL);
    assert_true(get(&e, "gateway_requests_total", "endpoint", "dash", "code", "200", NULL) == 3);
    expo_free(&e);
    for (int i = 0; i < 3; i++)
        metrics_free(w[i]);
}

static void test_labels_copied_and_escaped(void **state)
{
    (void)state;
    struct metrics *m = metrics_new();
    assert_non_null(m);
    char ep[32] = "a\"b\\c\nd";
    assert_int_equal(metrics_request(m, ep, 200, 0.01), 0);
    strcpy(ep, "other"); /* the label was copied: a reload may free the config */
    assert_int_equal(metrics_request(m, ep, 200, 0.01), 0);
    struct expo e;
    render_parse(&e, &m, 1, NULL);
    assert_true(get(&e, "gateway_requests_total", "endpoint", "a\"b\\c\nd", "code", "200", NULL) ==
                1);
    assert_true(get(&e, "gateway_requests_total", "endpoint", "other", "code", "200", NULL) == 1);
    expo_free(&e);
    metrics_free(m);
}

static void test_many_series(void **state)
{
    (void)state;
    struct metrics *m = metrics_new();
    assert_non_null(m);
    enum { N = 300 };
    char name[32];
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < N; i++) {
            snprintf(name, sizeof name, "ep%d", i);
            assert_int_equal(metrics_request(m, name, 200 + i % 3, 0.001 * (i % 50)), 0);
            assert_int_equal(metrics_backend(m, name, "b", OUT_OK, 0.01), 0);
        }
    struct expo e;
    render_parse(&e, &m, 1, NULL);
    assert_int_equal(count_samples(&e, "gateway_requests_total"), N);
    assert_int_equal(count_samples(&e, "gateway_request_duration_seconds_count"), N);
    for (int i = 0; i < N; i += 97) {
        char code[8];
        snprintf(name, sizeof name, "ep%d", i);
        snprintf(code, sizeof code, "%d", 200 + i % 3);
        assert_true(get(&e, "gateway_requests_total", "endpoint", name, "code", code, NULL) == 2);
    }
    assert_true(get(&e, "gateway_backend_duration_seconds_count", "backend", "b", NULL) == 2 * N);
    expo_free(&e);
    metrics_free(m);
}

static void test_series_limit(void **state)
{
    (void)state;
    struct metrics *m = metrics_new();
    assert_non_null(m);
    for (int code = 0; code < METRICS_MAX_SERIES; code++)
        assert_int_equal(metrics_request(m, "x", code, -1), 0);
    assert_int_equal(metrics_request(m, "x", METRICS_MAX_SERIES, -1), -ENOSPC);
    assert_int_equal(metrics_request(m, "x", 7, -1), 0); /* existing series still count */
    metrics_free(m);
}

/* ---- writers race a scraper ---- */

enum { WRITERS = 2, ITERS = 20000, NAMES_EVERY = 500 };

struct race {
    struct metrics *w[WRITERS];
    atomic_int done;
    atomic_int scrapes;
    pthread_barrier_t start;
};

struct writer_arg {
    struct race *r;
    int id;
};

static void *writer(void *p)
{
    struct writer_arg *a = p;
    struct metrics *m = a->r->w[a->id];
    char ep[32];
    pthread_barrier_wait(&a->r->start);
    for (int i = 0; i < ITERS; i++) {
        /* New endpoint names keep appearing while the scraper runs. */
        snprintf(ep, sizeof ep, "ep%d", i / NAMES_EVERY);
        /* Interleave for sure: before each new name, wait for a scrape. */
        if (i % NAMES_EVERY == 0)
            while (atomic_load(&a->r->scrapes) < i / NAMES_EVERY)
                sched_yield();
        metrics_inflight_add(m, 1);
        if (metrics_request(m, ep, 200, 0.0005 * (i % 40))) abort();
        if (metrics_backend(m, ep, a->id ? "b1" : "b0", OUT_OK, 0.001)) abort();
        metrics_inflight_add(m, -1);
    }
    atomic_fetch_add(&a->r->done, 1);
    return NULL;
}

static double total(const struct expo *e, const char *name)
{
    double t = 0;
    for (int i = 0; i < e->ns; i++)
        if (strcmp(e->s[i].name, name) == 0) t += e->s[i].value;
    return t;
}

static void test_concurrent_scrape(void **state)
{
    (void)state;
    struct race r = {0};
    pthread_barrier_init(&r.start, NULL, WRITERS + 1);
    struct writer_arg args[WRITERS];
    pthread_t th[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        assert_non_null(r.w[i] = metrics_new());
        args[i] = (struct writer_arg){&r, i};
        assert_int_equal(pthread_create(&th[i], NULL, writer, &args[i]), 0);
    }
    pthread_barrier_wait(&r.start);
    double last = 0;
    int scrapes = 0;
    /* At least a few scrapes, and keep scraping until both writers finish. */
    while (atomic_load(&r.done) < WRITERS || scrapes < 3) {
        struct expo e;
        render_parse(&e, r.w, WRITERS, NULL);
        double t = total(&e, "gateway_requests_total");
        assert_true(t >= last);
        assert_true(t <= WRITERS * ITERS);
        double inflight = get(&e, "gateway_inflight_requests", NULL);
        assert_true(inflight >= 0 && inflight <= WRITERS);
        last = t;
        scrapes++;
        atomic_store(&r.scrapes, scrapes);
        expo_free(&e);
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    struct expo e;
    render_parse(&e, r.w, WRITERS, NULL);
    assert_true(total(&e, "gateway_requests_total") == WRITERS * ITERS);
    assert_true(total(&e, "gateway_request_duration_seconds_count") == WRITERS * ITERS);
    assert_int_equal(count_samples(&e, "gateway_requests_total"), ITERS / NAMES_EVERY);
    assert_true(get(&e, "gateway_backend_duration_seconds_count", "backend", "b0", NULL) == ITERS);
    assert_true(get(&e, "gateway_inflight_requests", NULL) == 0);
    expo_free(&e);
    for (int i = 0; i < WRITERS; i++)
        metrics_free(r.w[i]);
    pthread_barrier_destroy(&r.start);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parser_rejects),    cmocka_unit_test(test_empty),
        cmocka_unit_test(test_cache_counters),    cmocka_unit_test(test_outcomes_by_index),
        cmocka_unit_test(test_sum_three_workers), cmocka_unit_test(test_labels_copied_and_escaped),
        cmocka_unit_test(test_many_series),       cmocka_unit_test(test_series_limit),
        cmocka_unit_test(test_concurrent_scrape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
