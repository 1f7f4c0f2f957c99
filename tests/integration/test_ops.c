/*
 * Operations against the real gateway binary (DESIGN.md "Operations" and
 * "Details that tests rely on"):
 *   - /healthz and /readyz answer 200 JSON, the built-ins answer GET and
 *     HEAD and give 405 with Allow to anything else;
 *   - /metrics is parsed strictly here (the text exposition format 0.0.4:
 *     HELP/TYPE lines, name and label grammar, escapes, every sample in a
 *     family TYPE'd before it, families contiguous, no duplicate series,
 *     histograms cumulative with +Inf == _count), every family of the
 *     contract is present with its type and label names, and the counters
 *     move by exactly what the client did (successes, 404, 405, an omitted
 *     optional backend, a static fallback, a required failure that cancels
 *     a slow sibling, a backend timeout, a client that hung up, reloads);
 *   - the access log (a file) gets one JSON line per request with exactly
 *     the contract's fields, matching the response's X-Request-Id and
 *     traceparent, 499 for a client that hung up; "off" writes nothing, "-"
 *     writes to stdout; after SIGTERM the file holds every line.
 *
 * Metrics and log lines are written after the response is sent, so every
 * check polls (bounded) until the expected state appears; an exact check
 * can still fail, as an overshoot never converges.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define WAIT_MS                                                                                    \
    10000 /* bound of every poll (times GATEWAY_TEST_TIME_SCALE); success comes in milliseconds */

/* ${LOG} is replaced by the access-log path before the harness substitutes
 * ${BACKEND} and ${PORT}. ${EXTRA} is where the reload test adds an
 * endpoint. */
static const char conf_tmpl[] =
    "{\n"
    " \"server\": {\"listen\": \"127.0.0.1:${PORT}\", \"workers\": 2,\n"
    "            \"shutdown_timeout_ms\": 3000},\n"
    " \"defaults\": {\"timeout_ms\": 3000, \"max_timeout_ms\": 10000,\n"
    "              \"backend_timeout_ms\": 3000},\n"
    " \"access_log\": {\"path\": \"${LOG}\"},\n"
    " \"endpoints\": [${EXTRA}\n"
    "  {\"name\": \"ok\", \"method\": \"GET\", \"path\": \"/api/ok/{id}\", \"backends\": [\n"
    "    {\"name\": \"user\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"user\"},\n"
    "    {\"name\": \"recs\", \"url\": \"${BACKEND}/recs/{id}\", \"key\": \"recs\"}]},\n"
    "  {\"name\": \"opt\", \"method\": \"GET\", \"path\": \"/api/opt/{id}\", \"backends\": [\n"
    "    {\"name\": \"user\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"user\"},\n"
    "    {\"name\": \"flaky\", \"url\": \"${BACKEND}/fail/500\", \"key\": \"flaky\",\n"
    "     \"required\": false}]},\n"
    "  {\"name\": \"stat\", \"method\": \"GET\", \"path\": \"/api/stat/{id}\", \"backends\": [\n"
    "    {\"name\": \"user\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"user\"},\n"
    "    {\"name\": \"st\", \"url\": \"${BACKEND}/fail/503\", \"key\": \"st\",\n"
    "     \"fallback\": \"static\", \"static\": {\"items\": []}}]},\n"
    "  {\"name\": \"fail\", \"method\": \"GET\", \"path\": \"/api/fail/{id}\",\n"
    "   \"timeout_ms\": 8000, \"backends\": [\n"
    "    {\"name\": \"slow\", \"url\": \"${BACKEND}/slow/6000/{id}\", \"key\": \"slow\",\n"
    "     \"timeout_ms\": 8000},\n"
    "    {\"name\": \"bad\", \"url\": \"${BACKEND}/fail/500\", \"key\": \"bad\"}]},\n"
    "  {\"name\": \"to\", \"method\": \"GET\", \"path\": \"/api/to/{id}\", \"backends\": [\n"
    "    {\"name\": \"lazy\", \"url\": \"${BACKEND}/slow/3000/{id}\", \"key\": \"lazy\",\n"
    "     \"timeout_ms\": 150}]},\n"
    "  {\"name\": \"hang\", \"method\": \"GET\", \"path\": \"/api/hang/{id}\",\n"
    "   \"timeout_ms\": 8000, \"backends\": [\n"
    "    {\"name\": \"sleepy\", \"url\": \"${BACKEND}/slow/5000/{id}\", \"key\": \"sleepy\",\n"
    "     \"timeout_ms\": 8000}]}\n"
    " ]\n"
    "}\n";

static const char extra_endpoint[] =
    "\n  {\"name\": \"added\", \"method\": \"GET\", \"path\": \"/api/added/{id}\", \"backends\": "
    "[\n"
    "    {\"name\": \"user2\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"user\"}]},";

/* ---- small helpers ---- */

/* The config template for a log path, with or without the added endpoint
 * (still holding ${BACKEND} and ${PORT}). */
static char *make_tmpl(const char *log_path, bool extra)
{
    char *a = h_replace(conf_tmpl, "${LOG}", log_path);
    char *b = h_replace(a, "${EXTRA}", extra ? extra_endpoint : "");
    free(a);
    return b;
}

/* SIGTERM; the gateway must exit 0 within WAIT_MS. */
static void term_and_wait(struct h_gateway *g)
{
    assert_true(g->pid > 0);
    assert_int_equal(kill(g->pid, SIGTERM), 0);
    int st = h_gateway_wait_exit(g, WAIT_MS);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "gateway did not exit 0 within %d ms of SIGTERM (wait status 0x%x)\n",
                WAIT_MS, st);
        h_gateway_dump(g);
    }
    assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void expect_status(const char *what, const struct h_resp *r, long status)
{
    if (r->status != status)
        fprintf(stderr, "%s: expected %ld, got %ld (curl %d): %s\n", what, status, r->status,
                r->curl_code, r->body ? r->body : "");
    assert_int_equal(r->status, status);
}

/* GET base+path with an optional X-Request-Id; asserts the status. */
static void get_expect(const struct h_gateway *g, const char *path, const char *rid, long status,
                       struct h_resp *r)
{
    char hdr[200];
    snprintf(hdr, sizeof hdr, "X-Request-Id: %s", rid ? rid : "");
    const char *hdrs[] = {hdr, NULL};
    h_get(g->base, path, rid ? hdrs : NULL, r);
    expect_status(path, r, status);
}

/* A response header that must be present with this value. */
static void expect_header(const struct h_resp *r, const char *name, const char *value)
{
    const char *v = h_header(r, name);
    if (!v || strcmp(v, value) != 0)
        fail_msg("%s: '%s', expected '%s'", name, v ? v : "(none)", value);
}

static void get_status(const struct h_gateway *g, const char *path, long status)
{
    struct h_resp r;
    get_expect(g, path, NULL, status, &r);
    h_resp_free(&r);
}

/* ---- a strict parser of the Prometheus text format 0.0.4 ---- */

#define MAX_LABELS 16

struct sample {
    char *name;   /* as written, e.g. x_bucket */
    char *family; /* the family it belongs to, e.g. x */
    char *key;    /* name{a="1",b="2"}, labels sorted by name */
    char *group;  /* key without le (histogram series), or NULL */
    size_t nlabels;
    char *lname[MAX_LABELS], *lval[MAX_LABELS];
    double value;
};

struct family {
    char *name;
    char type[16];
    bool help, typed, closed;
    size_t nsamples;
};

struct expo {
    struct sample *s;
    size_t n, cap;
    struct family *f;
    size_t nf, capf;
};

static void expo_free(struct expo *e)
{
    for (size_t i = 0; i < e->n; i++) {
        struct sample *s = &e->s[i];
        free(s->name);
        free(s->family);
        free(s->key);
        free(s->group);
        for (size_t j = 0; j < s->nlabels; j++) {
            free(s->lname[j]);
            free(s->lval[j]);
        }
    }
    for (size_t i = 0; i < e->nf; i++)
        free(e->f[i].name);
    free(e->s);
    free(e->f);
    memset(e, 0, sizeof *e);
}

static struct family *family_find(struct expo *e, const char *name)
{
    for (size_t i = 0; i < e->nf; i++)
        if (strcmp(e->f[i].name, name) == 0) return &e->f[i];
    return NULL;
}

static const struct family *family_get(const struct expo *e, const char *name)
{
    return family_find((struct expo *)e, name);
}

static struct family *family_add(struct expo *e, const char *name)
{
    if (e->nf == e->capf) {
        e->capf = e->capf ? 2 * e->capf : 16;
        e->f = realloc(e->f, e->capf * sizeof *e->f);
        if (!e->f) abort();
    }
    struct family *f = &e->f[e->nf++];
    memset(f, 0, sizeof *f);
    f->name = strdup(name);
    return f;
}

/* Without libm: a whole number in the range counts ever reach. */
static bool is_integral(double v)
{
    return v >= -9e15 && v <= 9e15 && (double)(int64_t)v == v;
}

static bool is_name_start(int c)
{
    return isalpha(c) || c == '_' || c == ':';
}

static bool is_name_char(int c)
{
    return isalnum(c) || c == '_' || c == ':';
}

/* Reads a metric name at *p (label names: no ':'). Returns a malloc'd copy
 * or NULL. */
static char *take_name(const char **p, bool label)
{
    const char *s = *p;
    if (!(label ? (isalpha((unsigned char)*s) || *s == '_') : is_name_start((unsigned char)*s)))
        return NULL;
    const char *q = s + 1;
    while (label ? (isalnum((unsigned char)*q) || *q == '_') : is_name_char((unsigned char)*q))
        q++;
    *p = q;
    return strndup(s, (size_t)(q - s));
}

/* A float as the format allows it: decimal or exponent notation, NaN, or
 * +Inf/-Inf. */
static bool parse_value(const char *s, size_t len, double *out)
{
    char buf[64];
    if (len == 0 || len >= sizeof buf) return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (strcmp(buf, "NaN") == 0) {
        *out = NAN;
        return true;
    }
    if (strcmp(buf, "+Inf") == 0 || strcmp(buf, "-Inf") == 0) {
        *out = buf[0] == '-' ? -INFINITY : INFINITY;
        return true;
    }
    /* only [-+]digits[.digits][e[-+]digits]: strtod alone would take hex,
     * "inf", "nan(...)" and leading blanks */
    const char *q = buf;
    if (*q == '+' || *q == '-') q++;
    bool digits = false;
    while (isdigit((unsigned char)*q))
        q++, digits = true;
    if (*q == '.') {
        q++;
        while (isdigit((unsigned char)*q))
            q++, digits = true;
    }
    if (!digits) return false;
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-') q++;
        if (!isdigit((unsigned char)*q)) return false;
        while (isdigit((unsigned char)*q))
            q++;
    }
    if (*q) return false;
    char *end;
    errno = 0;
    *out = strtod(buf, &end);
    return *end == '\0' && errno == 0;
}

/* The family a sample name belongs to, given the current family. */
static bool belongs(const struct family *f, const char *name)
{
    size_t fl = strlen(f->name);
    if (strcmp(name, f->name) == 0) return strcmp(f->type, "histogram") != 0;
    if (strncmp(name, f->name, fl) != 0) return false;
    const char *suffix = name + fl;
    if (strcmp(f->type, "histogram") == 0)
        return !strcmp(suffix, "_bucket") || !strcmp(suffix, "_sum") || !strcmp(suffix, "_count");
    if (strcmp(f->type, "summary") == 0)
        return !strcmp(suffix, "_sum") || !strcmp(suffix, "_count");
    return false;
}

static int cmp_label(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    return strcmp(x[0], y[0]);
}

/* name{k="v",...} over the labels sorted by name; skip (may be NULL) is a
 * label left out. */
static char *series_key(const char *name, size_t n, char *const *lname, char *const *lval,
                        const char *skip)
{
    const char *pairs[MAX_LABELS][2];
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (skip && strcmp(lname[i], skip) == 0) continue;
        pairs[m][0] = lname[i];
        pairs[m][1] = lval[i];
        m++;
    }
    qsort(pairs, m, sizeof pairs[0], cmp_label);
    size_t cap = strlen(name) + 3;
    for (size_t i = 0; i < m; i++)
        cap += strlen(pairs[i][0]) + strlen(pairs[i][1]) + 4;
    char *k = malloc(cap);
    if (!k) abort();
    size_t o = (size_t)sprintf(k, "%s{", name);
    for (size_t i = 0; i < m; i++)
        o += (size_t)sprintf(k + o, "%s%s=\"%s\"", i ? "," : "", pairs[i][0], pairs[i][1]);
    sprintf(k + o, "}");
    return k;
}

/* A key from NULL-terminated name/value pairs, e.g.
 * key_of(buf, n, "gateway_requests_total", "endpoint", "ok", "code", "200", NULL). */
static const char *key_of(char *buf, size_t len, const char *name, ...)
{
    char *ln[MAX_LABELS], *lv[MAX_LABELS];
    size_t n = 0;
    va_list ap;
    va_start(ap, name);
    for (const char *k; n < MAX_LABELS && (k = va_arg(ap, const char *));) {
        ln[n] = (char *)k;
        lv[n] = va_arg(ap, char *);
        n++;
    }
    va_end(ap);
    char *k = series_key(name, n, ln, lv, NULL);
    snprintf(buf, len, "%s", k);
    free(k);
    return buf;
}

static const struct sample *expo_find(const struct expo *e, const char *key)
{
    for (size_t i = 0; i < e->n; i++)
        if (strcmp(e->s[i].key, key) == 0) return &e->s[i];
    return NULL;
}

/* Parses one sample line into e; the family must be open. */
static bool parse_sample(struct expo *e, struct family *cur, const char *line, char *err,
                         size_t errlen)
{
    const char *p = line;
    char *name = take_name(&p, false);
    if (!name) {
        snprintf(err, errlen, "bad metric name");
        return false;
    }
    if (!cur || !cur->typed || !belongs(cur, name)) {
        snprintf(err, errlen, "sample %s is not in the family TYPE'd before it (%s)", name,
                 cur ? cur->name : "none");
        free(name);
        return false;
    }
    if (e->n == e->cap) {
        e->cap = e->cap ? 2 * e->cap : 64;
        e->s = realloc(e->s, e->cap * sizeof *e->s);
        if (!e->s) abort();
    }
    struct sample *s = &e->s[e->n];
    memset(s, 0, sizeof *s);
    s->name = name;
    s->family = strdup(cur->name);
    bool ok = false;
    if (*p == '{') {
        p++;
        while (*p != '}') {
            if (s->nlabels == MAX_LABELS) {
                snprintf(err, errlen, "too many labels");
                goto out;
            }
            char *ln = take_name(&p, true);
            if (!ln) {
                snprintf(err, errlen, "bad label name");
                goto out;
            }
            s->lname[s->nlabels] = ln;
            s->lval[s->nlabels] = NULL;
            s->nlabels++;
            if (strncmp(ln, "__", 2) == 0) {
                snprintf(err, errlen, "reserved label name %s", ln);
                goto out;
            }
            for (size_t j = 0; j + 1 < s->nlabels; j++)
                if (strcmp(s->lname[j], ln) == 0) {
                    snprintf(err, errlen, "label %s twice", ln);
                    goto out;
                }
            if (p[0] != '=' || p[1] != '"') {
                snprintf(err, errlen, "expected =\" after label %s", ln);
                goto out;
            }
            p += 2;
            char *v = malloc(strlen(p) + 1);
            if (!v) abort();
            size_t vl = 0;
            for (;;) {
                if (*p == '\0') {
                    free(v);
                    snprintf(err, errlen, "unterminated label value");
                    goto out;
                }
                if (*p == '"') break;
                if (*p == '\\') {
                    p++;
                    if (*p == 'n')
                        v[vl++] = '\n';
                    else if (*p == '\\' || *p == '"')
                        v[vl++] = *p;
                    else {
                        free(v);
                        snprintf(err, errlen, "bad escape \\%c in label value", *p ? *p : '0');
                        goto out;
                    }
                    p++;
                    continue;
                }
                v[vl++] = *p++;
            }
            v[vl] = '\0';
            s->lval[s->nlabels - 1] = v;
            p++; /* closing quote */
            if (*p == ',')
                p++;
            else if (*p != '}') {
                snprintf(err, errlen, "expected , or } after label %s", ln);
                goto out;
            }
        }
        p++;
    }
    if (*p != ' ') {
        snprintf(err, errlen, "expected one space before the value");
        goto out;
    }
    p++;
    const char *vend = strchr(p, ' ');
    size_t vlen = vend ? (size_t)(vend - p) : strlen(p);
    if (!parse_value(p, vlen, &s->value)) {
        snprintf(err, errlen, "bad value '%.*s'", (int)vlen, p);
        goto out;
    }
    if (vend) { /* a timestamp: an integer of milliseconds */
        const char *t = vend + 1;
        if (*t == '-') t++;
        if (!isdigit((unsigned char)*t)) {
            snprintf(err, errlen, "bad timestamp");
            goto out;
        }
        while (isdigit((unsigned char)*t))
            t++;
        if (*t) {
            snprintf(err, errlen, "trailing bytes after the timestamp");
            goto out;
        }
    }
    bool bucket =
        strcmp(cur->type, "histogram") == 0 && strcmp(name + strlen(cur->name), "_bucket") == 0;
    bool has_le = false;
    for (size_t j = 0; j < s->nlabels; j++)
        if (strcmp(s->lname[j], "le") == 0) has_le = true;
    if (bucket != has_le) {
        snprintf(err, errlen, "%s", bucket ? "bucket without le" : "le outside a bucket");
        goto out;
    }
    if (strcmp(cur->type, "counter") == 0 && !(s->value >= 0 && isfinite(s->value))) {
        snprintf(err, errlen, "counter value %g", s->value);
        goto out;
    }
    s->key = series_key(name, s->nlabels, s->lname, s->lval, NULL);
    if (bucket) s->group = series_key(cur->name, s->nlabels, s->lname, s->lval, "le");
    if (expo_find(e, s->key)) {
        snprintf(err, errlen, "duplicate series %s", s->key);
        goto out;
    }
    ok = true;
out:
    e->n++; /* kept even on failure, so expo_free frees it */
    if (ok) cur->nsamples++;
    return ok;
}

/* Checks every histogram: per series, buckets in increasing le order with
 * non-decreasing counts, the last one +Inf and equal to _count, _sum and
 * _count present. */
static bool check_histograms(const struct expo *e, char *err, size_t errlen)
{
    for (size_t i = 0; i < e->n; i++) {
        const struct sample *s = &e->s[i];
        if (!s->group) continue;
        if (i > 0 && e->s[i - 1].group && strcmp(e->s[i - 1].group, s->group) == 0)
            continue; /* not the first bucket of its series */
        double prev_le = -INFINITY, prev_count = 0;
        size_t j = i;
        for (; j < e->n && e->s[j].group && strcmp(e->s[j].group, s->group) == 0; j++) {
            const struct sample *b = &e->s[j];
            const char *lev = NULL;
            for (size_t k = 0; k < b->nlabels; k++)
                if (strcmp(b->lname[k], "le") == 0) lev = b->lval[k];
            double le;
            if (!parse_value(lev, strlen(lev), &le) || isnan(le) || le <= prev_le) {
                snprintf(err, errlen, "%s: le %s not increasing", b->key, lev);
                return false;
            }
            if (b->value < prev_count || !is_integral(b->value)) {
                snprintf(err, errlen, "%s: bucket %g not cumulative", b->key, b->value);
                return false;
            }
            prev_le = le;
            prev_count = b->value;
        }
        /* the buckets of one series must be contiguous */
        for (size_t k = j; k < e->n; k++)
            if (e->s[k].group && strcmp(e->s[k].group, s->group) == 0) {
                snprintf(err, errlen, "%s: buckets not contiguous", s->group);
                return false;
            }
        if (prev_le != INFINITY) {
            snprintf(err, errlen, "%s: no +Inf bucket", s->group);
            return false;
        }
        /* group is family{labels}: _count and _sum are family_count{labels} */
        const char *brace = strchr(s->group, '{');
        char key[1024];
        snprintf(key, sizeof key, "%.*s_count%s", (int)(brace - s->group), s->group, brace);
        const struct sample *cnt = expo_find(e, key);
        snprintf(key, sizeof key, "%.*s_sum%s", (int)(brace - s->group), s->group, brace);
        const struct sample *sum = expo_find(e, key);
        if (!cnt || !sum) {
            snprintf(err, errlen, "%s: _count or _sum missing", s->group);
            return false;
        }
        if (cnt->value != prev_count) {
            snprintf(err, errlen, "%s: +Inf bucket %g != _count %g", s->group, prev_count,
                     cnt->value);
            return false;
        }
        if (!(sum->value >= 0)) {
            snprintf(err, errlen, "%s: _sum %g", s->group, sum->value);
            return false;
        }
    }
    /* every _count / _sum of a histogram has buckets */
    for (size_t i = 0; i < e->n; i++) {
        const struct sample *s = &e->s[i];
        const struct family *f = family_get(e, s->family);
        if (strcmp(f->type, "histogram") != 0 || s->group) continue;
        const char *suffix = s->name + strlen(f->name);
        char *g = series_key(f->name, s->nlabels, s->lname, s->lval, NULL);
        bool found = false;
        for (size_t j = 0; j < e->n && !found; j++)
            found = e->s[j].group && strcmp(e->s[j].group, g) == 0;
        free(g);
        if (!found) {
            snprintf(err, errlen, "%s without buckets (%s)", s->key, suffix);
            return false;
        }
    }
    return true;
}

/* Parses a whole exposition. On failure err names the line and problem. */
static bool expo_parse(struct expo *e, const char *text, size_t len, char *err, size_t errlen)
{
    memset(e, 0, sizeof *e);
    if (len == 0 || text[len - 1] != '\n') {
        snprintf(err, errlen, "the exposition does not end with a newline");
        return false;
    }
    if (strlen(text) != len) {
        snprintf(err, errlen, "NUL byte in the exposition");
        return false;
    }
    struct family *cur = NULL;
    char msg[256];
    int lineno = 0;
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        char *l = strndup(line, (size_t)(nl - line));
        line = nl + 1;
        lineno++;
        bool ok = true;
        msg[0] = '\0';
        if (strchr(l, '\r')) {
            ok = false;
            snprintf(msg, sizeof msg, "carriage return");
        } else if (l[0] == '\0') {
            /* empty lines are allowed and ignored */
        } else if (strncmp(l, "# HELP ", 7) == 0 || strncmp(l, "# TYPE ", 7) == 0) {
            bool help = l[2] == 'H';
            const char *p = l + 7;
            char *name = take_name(&p, false);
            if (!name || (*p != ' ' && !(help && *p == '\0'))) {
                ok = false;
                snprintf(msg, sizeof msg, "bad name in HELP/TYPE");
            } else {
                struct family *f = family_find(e, name);
                if (f && f != cur) {
                    ok = false;
                    snprintf(msg, sizeof msg, "family %s appears twice", name);
                } else if (f && f->nsamples) {
                    ok = false;
                    snprintf(msg, sizeof msg, "HELP/TYPE of %s after its samples", name);
                } else {
                    if (!f) f = family_add(e, name);
                    cur = f;
                    const char *rest = *p ? p + 1 : p;
                    if (help) {
                        if (f->help) ok = false, snprintf(msg, sizeof msg, "HELP twice");
                        f->help = true;
                        for (const char *q = rest; ok && *q; q++)
                            if (*q == '\\' && (q[1] == '\\' || q[1] == 'n'))
                                q++;
                            else if (*q == '\\')
                                ok = false, snprintf(msg, sizeof msg, "bad escape in HELP");
                    } else {
                        static const char *const types[] = {"counter", "gauge", "histogram",
                                                            "summary", "untyped"};
                        bool known = false;
                        for (size_t i = 0; i < 5; i++)
                            known |= strcmp(rest, types[i]) == 0;
                        if (f->typed || !known) {
                            ok = false;
                            snprintf(msg, sizeof msg, "TYPE twice or unknown type '%s'", rest);
                        }
                        f->typed = true;
                        snprintf(f->type, sizeof f->type, "%s", rest);
                    }
                }
            }
            free(name);
        } else if (l[0] == '#') {
            /* other comments are allowed */
        } else {
            ok = parse_sample(e, cur, l, msg, sizeof msg);
        }
        if (!ok) {
            snprintf(err, errlen, "line %d: %s: '%s'", lineno, msg, l);
            free(l);
            return false;
        }
        free(l);
    }
    for (size_t i = 0; i < e->nf; i++)
        if (!e->f[i].typed) {
            snprintf(err, errlen, "family %s has HELP but no TYPE", e->f[i].name);
            return false;
        }
    return check_histograms(e, err, errlen);
}

/* Scrapes /metrics, asserts the Content-Type and parses strictly. */
static void scrape(const struct h_gateway *g, struct expo *e)
{
    struct h_resp r;
    h_get(g->base, "/metrics", NULL, &r);
    expect_status("/metrics", &r, 200);
    const char *ct = h_header(&r, "Content-Type");
    assert_non_null(ct);
    const char *want = "text/plain; version=0.0.4";
    if (strncmp(ct, want, strlen(want)) != 0 ||
        (ct[strlen(want)] && strcasecmp(ct + strlen(want), "; charset=utf-8") != 0))
        fail_msg("/metrics Content-Type '%s'", ct);
    char err[512];
    if (!expo_parse(e, r.body, r.body_len, err, sizeof err)) {
        fprintf(stderr, "%s\n", r.body);
        h_resp_free(&r);
        fail_msg("exposition: %s", err);
    }
    h_resp_free(&r);
}

static double value_or0(const struct expo *e, const char *key)
{
    const struct sample *s = expo_find(e, key);
    return s ? s->value : 0;
}

/* One expected change of a series between two scrapes. */
struct want {
    char key[256];
    double delta;
};

/* Whether now - base matches: every series named in w moved by its delta;
 * every other series of the families moved by 0 (skip: keys not checked);
 * no series vanished. */
static bool deltas_ok(const struct expo *base, const struct expo *now, const char *const *families,
                      const struct want *w, size_t nw, const char *const *skip, char *why,
                      size_t whylen)
{
    for (size_t i = 0; i < nw; i++) {
        double d = value_or0(now, w[i].key) - value_or0(base, w[i].key);
        if (d != w[i].delta || !expo_find(now, w[i].key)) {
            snprintf(why, whylen, "%s moved by %g, expected %g", w[i].key, d, w[i].delta);
            return false;
        }
    }
    for (size_t i = 0; i < base->n; i++)
        if (!expo_find(now, base->s[i].key)) {
            snprintf(why, whylen, "%s vanished", base->s[i].key);
            return false;
        }
    for (size_t i = 0; i < now->n; i++) {
        const struct sample *s = &now->s[i];
        bool in = false;
        for (size_t f = 0; families[f] && !in; f++)
            in = strcmp(s->name, families[f]) == 0;
        for (size_t k = 0; skip && skip[k] && in; k++)
            in = strcmp(s->key, skip[k]) != 0;
        bool listed = false;
        for (size_t k = 0; k < nw && !listed; k++)
            listed = strcmp(w[k].key, s->key) == 0;
        if (!in || listed) continue;
        double d = s->value - value_or0(base, s->key);
        if (d != 0) {
            snprintf(why, whylen, "%s moved by %g, expected 0", s->key, d);
            return false;
        }
    }
    return true;
}

/* Scrapes until deltas_ok holds (bounded); fails with the last mismatch. */
static void wait_deltas(const struct h_gateway *g, const struct expo *base,
                        const char *const *families, const struct want *w, size_t nw,
                        const char *const *skip)
{
    double end = h_now_ms() + h_bound_ms(WAIT_MS);
    char why[512] = "";
    for (;;) {
        struct expo now;
        scrape(g, &now);
        bool ok = deltas_ok(base, &now, families, w, nw, skip, why, sizeof why);
        expo_free(&now);
        if (ok) return;
        if (h_now_ms() >= end) fail_msg("metrics never matched: %s", why);
        h_pause_ms(10);
    }
}

/* ---- the access log ---- */

static bool is_hex32(const char *s)
{
    if (!s || strlen(s) != 32) return false;
    bool nonzero = false;
    for (const char *p = s; *p; p++) {
        if (!isxdigit((unsigned char)*p) || isupper((unsigned char)*p)) return false;
        nonzero |= *p != '0';
    }
    return nonzero;
}

/* ISO-8601 UTC "YYYY-MM-DDTHH:MM:SS[.fff]Z"; *t receives the seconds. */
static bool parse_ts(const char *s, time_t *t)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    for (size_t i = 0; shape[i]; i++)
        if (shape[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != shape[i]) return false;
    const char *p = s + strlen(shape);
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p)) return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (strcmp(p, "Z") != 0) return false;
    struct tm tm = {0};
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec) != 6)
        return false;
    if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
        tm.tm_min > 59 || tm.tm_sec > 60)
        return false;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *t = timegm(&tm);
    return true;
}

static time_t test_started; /* wall clock when the program started, minus slack */

/* Exactly the contract's fields, each of its type. Returns NULL or what is
 * wrong. */
static const char *log_line_problem(const cJSON *o)
{
    static const char *const fields[] = {"ts",         "method",   "path",
                                         "endpoint",   "status",   "duration_ms",
                                         "request_id", "trace_id", "degraded"};
    if (!cJSON_IsObject(o)) return "not an object";
    if (cJSON_GetArraySize(o) != 9) return "not exactly 9 fields";
    for (size_t i = 0; i < 9; i++)
        if (!cJSON_GetObjectItemCaseSensitive(o, fields[i])) return "a field is missing";
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(o, "ts");
    time_t t;
    if (!cJSON_IsString(ts) || !parse_ts(ts->valuestring, &t)) return "ts is not ISO-8601 UTC";
    if (t < test_started || t > time(NULL) + 5) return "ts is not now";
    if (!h_json_str(o, "method") || !h_json_str(o, "method")[0]) return "method";
    if (!h_json_str(o, "path") || h_json_str(o, "path")[0] != '/') return "path";
    const cJSON *ep = cJSON_GetObjectItemCaseSensitive(o, "endpoint");
    if (!cJSON_IsNull(ep) && !cJSON_IsString(ep)) return "endpoint is neither string nor null";
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "status");
    if (!cJSON_IsNumber(st) || !is_integral(st->valuedouble) || st->valuedouble < 100 ||
        st->valuedouble > 599)
        return "status";
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(o, "duration_ms");
    if (!cJSON_IsNumber(d) || !(d->valuedouble >= 0)) return "duration_ms";
    const char *rid = h_json_str(o, "request_id");
    if (!rid || !rid[0] || strlen(rid) > 128) return "request_id";
    if (!is_hex32(h_json_str(o, "trace_id"))) return "trace_id is not 32 lowercase hex";
    const cJSON *deg = cJSON_GetObjectItemCaseSensitive(o, "degraded");
    if (!cJSON_IsArray(deg)) return "degraded is not an array";
    const cJSON *x;
    cJSON_ArrayForEach(x, deg) if (!cJSON_IsString(x)) return "degraded holds a non-string";
    return NULL;
}

/* Parses every complete line of the log file strictly. When final, the
 * file must end with a newline. Returns an array of the lines. */
static cJSON *read_log(const char *path, bool final)
{
    size_t len = 0;
    char *text = h_read_file(path, &len);
    cJSON *all = cJSON_CreateArray();
    if (!text) return all;
    if (final && len && text[len - 1] != '\n') fail_msg("%s does not end with a newline", path);
    int lineno = 0;
    for (char *line = text, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        *nl = '\0';
        lineno++;
        const char *end = NULL;
        cJSON *o = cJSON_ParseWithOpts(line, &end, 1);
        const char *problem = o ? log_line_problem(o) : "not JSON";
        if (problem) {
            fprintf(stderr, "%s line %d: %s\n", path, lineno, line);
            fail_msg("access log line %d: %s", lineno, problem);
        }
        cJSON_AddItemToArray(all, o);
    }
    free(text);
    return all;
}

static const cJSON *log_find(const cJSON *lines, const char *rid)
{
    const cJSON *o;
    cJSON_ArrayForEach(o, lines)
    {
        const char *r = h_json_str(o, "request_id");
        if (r && strcmp(r, rid) == 0) return o;
    }
    return NULL;
}

/* Polls the log until every id in rids has a line. Returns all lines. */
static cJSON *wait_log(const char *path, const char *const *rids, size_t n)
{
    double end = h_now_ms() + h_bound_ms(WAIT_MS);
    for (;;) {
        cJSON *lines = read_log(path, false);
        size_t found = 0;
        for (size_t i = 0; i < n; i++)
            found += log_find(lines, rids[i]) != NULL;
        if (found == n) return lines;
        cJSON_Delete(lines);
        if (h_now_ms() >= end) fail_msg("only %zu of %zu access-log lines appeared", found, n);
        h_pause_ms(10);
    }
}

/* The trace id of a traceparent "00-<32 hex>-<16 hex>-<2 hex>". */
static void trace_of(const char *tp, char out[33])
{
    assert_non_null(tp);
    assert_true(strlen(tp) == 55 && strncmp(tp, "00-", 3) == 0 && tp[35] == '-');
    memcpy(out, tp + 3, 32);
    out[32] = '\0';
    assert_true(is_hex32(out));
}

/* The line of response r: request_id is the response's X-Request-Id,
 * trace_id the trace of its traceparent, and the given fields. */
static void check_line(const cJSON *lines, const struct h_resp *r, const char *method,
                       const char *path, const char *endpoint, long status,
                       const char *const *degraded)
{
    const char *rid = h_header(r, "X-Request-Id");
    assert_non_null(rid);
    const cJSON *o = log_find(lines, rid);
    if (!o) fail_msg("no access-log line for %s", rid);
    char trace[33];
    trace_of(h_header(r, "traceparent"), trace);
    assert_string_equal(h_json_str(o, "trace_id"), trace);
    assert_string_equal(h_json_str(o, "method"), method);
    assert_string_equal(h_json_str(o, "path"), path);
    const cJSON *ep = cJSON_GetObjectItemCaseSensitive(o, "endpoint");
    if (endpoint)
        assert_string_equal(h_json_str(o, "endpoint"), endpoint);
    else
        assert_true(cJSON_IsNull(ep));
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(o, "status")->valueint, status);
    const cJSON *deg = cJSON_GetObjectItemCaseSensitive(o, "degraded");
    size_t n = 0;
    while (degraded && degraded[n])
        n++;
    assert_int_equal(cJSON_GetArraySize(deg), (int)n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(cJSON_GetArrayItem(deg, (int)i)->valuestring, degraded[i]);
}

/* The parser is the judge of the gateway's output: it must accept the
 * format and refuse each kind of mistake. */
static void exposition_parser_refuses_malformed_text(void **state)
{
    (void)state;
#define H "# TYPE h histogram\n"
    static const char good[] =
        "# HELP c_total A \\\\ counter\\n.\n# TYPE c_total counter\n"
        "c_total{a=\"x\\\"y\\n\",b=\"\"} 1\nc_total{a=\"z\",} 2.5e3 1700000000000\n\n"
        "# comment\n# TYPE g gauge\ng -Inf\ng{x=\"1\"} NaN\n" H
        "h_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
    static const char *const bad[] = {
        "# TYPE c_total counter\nc_total 1",                    /* no final newline */
        "c_total 1\n",                                          /* no TYPE */
        "# TYPE c_total counter\nd_total 1\n",                  /* another family */
        "# TYPE c_total counter\nc_total 1\nc_total 2\n",       /* duplicate series */
        "# TYPE c_total counter\nc_total{a=\"1\",a=\"2\"} 1\n", /* label twice */
        "# TYPE c_total counter\nc_total{a=\"\\x\"} 1\n",       /* bad escape */
        "# TYPE c_total counter\nc_total{a=\"1} 1\n",           /* unterminated */
        "# TYPE c_total counter\nc_total{1a=\"1\"} 1\n",        /* label name */
        "# TYPE c_total counter\nc_total{__a=\"1\"} 1\n",       /* reserved */
        "# TYPE c_total counter\nc_total 0x10\n",               /* hex value */
        "# TYPE c_total counter\nc_total  1\n",                 /* two spaces */
        "# TYPE c_total counter\nc_total -1\n",                 /* negative counter */
        "# TYPE c_total counter\nc_total 1 x\n",                /* timestamp */
        "# TYPE c_total counter\nc_total 1\r\n",                /* CR */
        "# TYPE c_total counter\n# TYPE c_total counter\nc_total 1\n",
        "# TYPE c_total counter\nc_total 1\n# TYPE g gauge\ng 1\nc_total{a=\"1\"} 1\n",
        "# TYPE c_total counter\nc_total 1\n# HELP c_total late\n",
        "# TYPE c_total countr\nc_total 1\n", /* unknown type */
        "# HELP c_total x\\q\n# TYPE c_total counter\nc_total 1\n",
        "# TYPE 9c counter\n",
        H "h 1\n",                                      /* bare histogram name */
        H "h_bucket 1\nh_sum 1\nh_count 1\n",           /* no le */
        H "h_sum{le=\"1\"} 1\n",                        /* le off a bucket */
        H "h_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", /* no +Inf */
        H "h_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        H "h_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\n"
          "h_sum 1\nh_count 1\n",
        H "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n", /* +Inf != _count */
        H "h_bucket{le=\"+Inf\"} 2\nh_count 2\n",          /* no _sum */
        H "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\nh_count{a=\"1\"} 0\n",
    };
#undef H
    char err[512];
    struct expo e;
    if (!expo_parse(&e, good, strlen(good), err, sizeof err)) fail_msg("good text: %s", err);
    assert_int_equal(e.n, 8);
    assert_non_null(expo_find(&e, "c_total{a=\"x\"y\n\",b=\"\"}"));
    assert_true(value_or0(&e, "c_total{a=\"z\"}") == 2500);
    expo_free(&e);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        bool ok = expo_parse(&e, bad[i], strlen(bad[i]), err, sizeof err);
        expo_free(&e);
        if (ok) fail_msg("accepted bad text %zu: %s", i, bad[i]);
    }
}

/* ---- the shared gateway (access log to a file) ---- */

static struct h_env env;
static char log_dir[64];
static char log_path[128];

static int group_setup(void **state)
{
    (void)state;
    snprintf(log_dir, sizeof log_dir, "/tmp/gw-ops-XXXXXX");
    if (!mkdtemp(log_dir)) return -1;
    snprintf(log_path, sizeof log_path, "%s/access.log", log_dir);
    char *tmpl = make_tmpl(log_path, false);
    int rc = h_env_start(&env, tmpl);
    free(tmpl);
    return rc == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = h_env_stop(&env);
    unlink(log_path);
    rmdir(log_dir);
    return rc;
}

static void health_and_readiness_answer_200_json(void **state)
{
    (void)state;
    const char *paths[] = {"/healthz", "/readyz"};
    for (size_t i = 0; i < 2; i++) {
        struct h_resp r;
        get_expect(&env.gw, paths[i], NULL, 200, &r);
        const char *ct = h_header(&r, "Content-Type");
        assert_non_null(ct);
        assert_non_null(strstr(ct, "application/json"));
        assert_true(cJSON_IsObject(r.json));
        h_resp_free(&r);

        char url[256];
        snprintf(url, sizeof url, "%s%s", env.gw.base, paths[i]);
        h_request("HEAD", url, NULL, NULL, 0, &r);
        expect_status("HEAD", &r, 200);
        assert_int_equal(r.body_len, 0);
        h_resp_free(&r);
    }
}

static void builtins_refuse_other_methods_with_405_and_allow(void **state)
{
    (void)state;
    const char *cases[][2] = {
        {"POST", "/healthz"}, {"PUT", "/readyz"}, {"DELETE", "/metrics"}, {"POST", "/metrics"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char url[256];
        snprintf(url, sizeof url, "%s%s", env.gw.base, cases[i][1]);
        struct h_resp r;
        h_request(cases[i][0], url, NULL, cases[i][0][0] == 'P' ? "{}" : NULL, 0, &r);
        expect_status(cases[i][1], &r, 405);
        const char *allow = h_header(&r, "Allow");
        if (!allow || !strstr(allow, "GET"))
            fail_msg("%s %s: Allow '%s'", cases[i][0], cases[i][1], allow ? allow : "(none)");
        h_resp_free(&r);
    }
}

/* The label names of every sample of a family (le aside) are exactly
 * names (NULL-terminated). */
static void assert_family(const struct expo *e, const char *name, const char *type,
                          const char *const *names)
{
    const struct family *f = family_get(e, name);
    if (!f) fail_msg("family %s missing", name);
    if (strcmp(f->type, type) != 0) fail_msg("%s is a %s, not a %s", name, f->type, type);
    if (f->nsamples == 0) fail_msg("%s has no samples", name);
    size_t want = 0;
    while (names[want])
        want++;
    for (size_t i = 0; i < e->n; i++) {
        const struct sample *s = &e->s[i];
        if (strcmp(s->family, name) != 0) continue;
        size_t n = 0;
        for (size_t j = 0; j < s->nlabels; j++) {
            if (strcmp(s->lname[j], "le") == 0) continue;
            bool known = false;
            for (size_t k = 0; k < want && !known; k++)
                known = strcmp(names[k], s->lname[j]) == 0;
            if (!known) fail_msg("%s: unexpected label %s", s->key, s->lname[j]);
            n++;
        }
        if (n != want) fail_msg("%s: %zu labels, expected %zu", s->key, n, want);
    }
}

#define REQ(ep, code) "gateway_requests_total", "endpoint", ep, "code", code, NULL
#define BE(ep, b, out)                                                                             \
    "gateway_backend_requests_total", "endpoint", ep, "backend", b, "outcome", out, NULL
#define RDUR(ep) "gateway_request_duration_seconds_count", "endpoint", ep, NULL
#define BDUR(b)  "gateway_backend_duration_seconds_count", "backend", b, NULL

static void metrics_exposition_is_strict_and_complete(void **state)
{
    (void)state;
    /* one call through a backend, so the per-backend families have series */
    get_status(&env.gw, "/api/ok/warm", 200);
    /* its series appear once it is complete: the request's own counter is
     * the last thing the gateway updates (after the in-flight gauge) */
    char k[256], kreq[256];
    key_of(k, sizeof k, "gateway_backend_requests_total", "endpoint", "ok", "backend", "user",
           "outcome", "ok", NULL);
    key_of(kreq, sizeof kreq, REQ("ok", "200"));
    double end = h_now_ms() + h_bound_ms(WAIT_MS);
    struct expo e;
    for (;;) {
        scrape(&env.gw, &e);
        if (value_or0(&e, k) == 1 && value_or0(&e, kreq) == 1) break;
        expo_free(&e);
        if (h_now_ms() >= end) fail_msg("%s or %s never became 1", k, kreq);
        h_pause_ms(10);
    }
    assert_family(&e, "gateway_requests_total", "counter",
                  (const char *const[]){"endpoint", "code", NULL});
    assert_family(&e, "gateway_request_duration_seconds", "histogram",
                  (const char *const[]){"endpoint", NULL});
    assert_family(&e, "gateway_backend_requests_total", "counter",
                  (const char *const[]){"endpoint", "backend", "outcome", NULL});
    assert_family(&e, "gateway_backend_duration_seconds", "histogram",
                  (const char *const[]){"backend", NULL});
    assert_family(&e, "gateway_inflight_requests", "gauge", (const char *const[]){NULL});
    assert_family(&e, "gateway_pool_hits_total", "counter", (const char *const[]){"pool", NULL});
    assert_family(&e, "gateway_pool_misses_total", "counter", (const char *const[]){"pool", NULL});
    assert_family(&e, "gateway_access_log_dropped_total", "counter", (const char *const[]){NULL});
    assert_family(&e, "gateway_config_reloads_total", "counter",
                  (const char *const[]){"result", NULL});
    /* outcome values are the contract's; both reload results are exported */
    static const char *const outcomes[] = {"ok",   "error",    "timeout", "cancelled",
                                           "open", "degraded", "static",  "omitted"};
    for (size_t i = 0; i < e.n; i++) {
        const struct sample *s = &e.s[i];
        if (strcmp(s->name, "gateway_backend_requests_total") != 0) continue;
        for (size_t j = 0; j < s->nlabels; j++) {
            if (strcmp(s->lname[j], "outcome") != 0) continue;
            bool known = false;
            for (size_t o = 0; o < 8; o++)
                known |= strcmp(s->lval[j], outcomes[o]) == 0;
            if (!known) fail_msg("%s: unknown outcome", s->key);
        }
    }
    assert_non_null(
        expo_find(&e, key_of(k, sizeof k, "gateway_config_reloads_total", "result", "ok", NULL)));
    assert_non_null(expo_find(
        &e, key_of(k, sizeof k, "gateway_config_reloads_total", "result", "error", NULL)));
    assert_int_equal(value_or0(&e, "gateway_access_log_dropped_total{}"), 0);
    /* the scrape itself may be in flight, nothing else is */
    double inflight = value_or0(&e, "gateway_inflight_requests{}");
    assert_true(inflight >= 0 && inflight <= 1);
    expo_free(&e);
}

static void want_add(struct want *w, size_t *n, double delta, const char *name, ...)
{
    char *ln[MAX_LABELS], *lv[MAX_LABELS];
    size_t nl = 0;
    va_list ap;
    va_start(ap, name);
    for (const char *k; (k = va_arg(ap, const char *));) {
        ln[nl] = (char *)k;
        lv[nl] = va_arg(ap, char *);
        nl++;
    }
    va_end(ap);
    char *k = series_key(name, nl, ln, lv, NULL);
    snprintf(w[*n].key, sizeof w[*n].key, "%s", k);
    free(k);
    w[*n].delta = delta;
    (*n)++;
}

static const char *const counted_families[] = {
    "gateway_requests_total", "gateway_backend_requests_total",
    "gateway_request_duration_seconds_count", "gateway_backend_duration_seconds_count", NULL};

static void metrics_count_exactly_what_the_client_did(void **state)
{
    (void)state;
    struct expo base;
    scrape(&env.gw, &base);

    enum { N = 5, M = 3, K = 2 };
    char path[128];
    for (int i = 0; i < N; i++) {
        snprintf(path, sizeof path, "/api/ok/%d", i);
        get_status(&env.gw, path, 200);
    }
    for (int i = 0; i < M; i++) {
        snprintf(path, sizeof path, "/nope/%d", i);
        get_status(&env.gw, path, 404);
    }
    struct h_resp r;
    char url[256];
    snprintf(url, sizeof url, "%s/api/ok/1", env.gw.base);
    h_request("DELETE", url, NULL, NULL, 0, &r);
    expect_status("DELETE /api/ok/1", &r, 405);
    h_resp_free(&r);
    for (int i = 0; i < K; i++) {
        snprintf(path, sizeof path, "/api/opt/%d", i);
        get_expect(&env.gw, path, NULL, 200, &r);
        expect_header(&r, "X-Gateway-Degraded", "flaky");
        h_resp_free(&r);
        snprintf(path, sizeof path, "/api/stat/%d", i);
        get_expect(&env.gw, path, NULL, 200, &r);
        expect_header(&r, "X-Gateway-Degraded", "st");
        h_resp_free(&r);
    }
    get_expect(&env.gw, "/api/fail/1", NULL, 502, &r);
    assert_string_equal(h_json_str(r.json, "backend"), "bad");
    h_resp_free(&r);
    get_expect(&env.gw, "/api/to/1", NULL, 504, &r);
    assert_string_equal(h_json_str(r.json, "backend"), "lazy");
    h_resp_free(&r);

    struct want w[40];
    size_t n = 0;
    want_add(w, &n, N, REQ("ok", "200"));
    want_add(w, &n, N, BE("ok", "user", "ok"));
    want_add(w, &n, N, BE("ok", "recs", "ok"));
    want_add(w, &n, N, RDUR("ok"));
    want_add(w, &n, N + 2 * K, BDUR("user"));
    want_add(w, &n, N, BDUR("recs"));
    want_add(w, &n, M, REQ("none", "404"));
    want_add(w, &n, 1, REQ("none", "405"));
    want_add(w, &n, K, REQ("opt", "200"));
    want_add(w, &n, K, BE("opt", "user", "ok"));
    want_add(w, &n, K, BE("opt", "flaky", "omitted"));
    want_add(w, &n, K, RDUR("opt"));
    want_add(w, &n, K, BDUR("flaky"));
    want_add(w, &n, K, REQ("stat", "200"));
    want_add(w, &n, K, BE("stat", "user", "ok"));
    want_add(w, &n, K, BE("stat", "st", "static"));
    want_add(w, &n, K, RDUR("stat"));
    want_add(w, &n, K, BDUR("st"));
    want_add(w, &n, 1, REQ("fail", "502"));
    want_add(w, &n, 1, BE("fail", "bad", "error"));
    want_add(w, &n, 1, BE("fail", "slow", "cancelled"));
    want_add(w, &n, 1, RDUR("fail"));
    want_add(w, &n, 1, BDUR("bad"));
    want_add(w, &n, 1, BDUR("slow"));
    want_add(w, &n, 1, REQ("to", "504"));
    want_add(w, &n, 1, BE("to", "lazy", "timeout"));
    want_add(w, &n, 1, RDUR("to"));
    want_add(w, &n, 1, BDUR("lazy"));
    /* the scrapes themselves count as endpoint "none", code 200, and the
     * 404 and 405 above add to none's duration histogram */
    char s1[256], s2[256];
    const char *skip[] = {key_of(s1, sizeof s1, REQ("none", "200")),
                          key_of(s2, sizeof s2, RDUR("none")), NULL};
    wait_deltas(&env.gw, &base, counted_families, w, n, skip);
    expo_free(&base);

    /* quiescent again: at most the scrape itself is in flight */
    double end = h_now_ms() + h_bound_ms(WAIT_MS);
    for (;;) {
        struct expo e;
        scrape(&env.gw, &e);
        double inflight = value_or0(&e, "gateway_inflight_requests{}");
        expo_free(&e);
        if (inflight == 0 || inflight == 1) break;
        if (h_now_ms() >= end) fail_msg("gateway_inflight_requests stays at %g", inflight);
        h_pause_ms(10);
    }
}

static void reloads_are_counted_by_result(void **state)
{
    (void)state;
    char kok[128], kerr[128];
    key_of(kok, sizeof kok, "gateway_config_reloads_total", "result", "ok", NULL);
    key_of(kerr, sizeof kerr, "gateway_config_reloads_total", "result", "error", NULL);
    struct expo base;
    scrape(&env.gw, &base);
    get_status(&env.gw, "/api/added/1", 404);

    /* a valid file with one more endpoint */
    char *tmpl = make_tmpl(log_path, true);
    char *text = h_subst(tmpl, env.mock.origin, env.gw.port);
    free(tmpl);
    assert_int_equal(h_gateway_write_conf_raw(&env.gw, text), 0);
    free(text);
    assert_int_equal(kill(env.gw.pid, SIGHUP), 0);
    struct want w[2];
    size_t n = 0;
    want_add(w, &n, 1, "gateway_config_reloads_total", "result", "ok", NULL);
    want_add(w, &n, 0, "gateway_config_reloads_total", "result", "error", NULL);
    const char *const fam[] = {"gateway_config_reloads_total", NULL};
    wait_deltas(&env.gw, &base, fam, w, n, NULL);
    get_status(&env.gw, "/api/added/1", 200);

    /* valid JSON, invalid config (an unknown key): counted, and ignored */
    tmpl = make_tmpl(log_path, false);
    char *bad = h_replace(tmpl, "\"workers\": 2,", "\"workers\": 2, \"bogus\": 1,");
    free(tmpl);
    text = h_subst(bad, env.mock.origin, env.gw.port);
    free(bad);
    assert_int_equal(h_gateway_write_conf_raw(&env.gw, text), 0);
    free(text);
    assert_int_equal(kill(env.gw.pid, SIGHUP), 0);
    n = 0;
    want_add(w, &n, 1, "gateway_config_reloads_total", "result", "ok", NULL);
    want_add(w, &n, 1, "gateway_config_reloads_total", "result", "error", NULL);
    wait_deltas(&env.gw, &base, fam, w, n, NULL);
    get_status(&env.gw, "/api/added/2", 200);

    /* the new endpoint is counted under its own label */
    struct expo now;
    char k[256];
    key_of(k, sizeof k, REQ("added", "200"));
    double end = h_now_ms() + h_bound_ms(WAIT_MS);
    for (;;) {
        scrape(&env.gw, &now);
        double v = value_or0(&now, k);
        expo_free(&now);
        if (v == 2) break;
        if (h_now_ms() >= end) fail_msg("%s is %g, expected 2", k, v);
        h_pause_ms(10);
    }
    expo_free(&base);
}

static void access_log_has_one_strict_line_per_request(void **state)
{
    (void)state;
    struct h_resp r[6];
    /* a client trace is continued; %2F stays as sent */
    const char *h0[] = {"X-Request-Id: ops-log-1",
                        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                        NULL};
    h_get(env.gw.base, "/api/ok/a%2Fb", h0, &r[0]);
    expect_status("ok", &r[0], 200);
    get_expect(&env.gw, "/nope/x", NULL, 404, &r[1]);
    get_expect(&env.gw, "/api/opt/7", "ops-log-3", 200, &r[2]);
    get_expect(&env.gw, "/api/stat/8", NULL, 200, &r[3]);
    char url[256];
    snprintf(url, sizeof url, "%s/healthz", env.gw.base);
    h_request("POST", url, NULL, "{}", 0, &r[4]);
    expect_status("POST /healthz", &r[4], 405);
    get_expect(&env.gw, "/api/fail/9", NULL, 502, &r[5]);

    expect_header(&r[0], "X-Request-Id", "ops-log-1");
    char trace[33];
    trace_of(h_header(&r[0], "traceparent"), trace);
    assert_string_equal(trace, "0af7651916cd43dd8448eb211c80319c");

    const char *rids[6];
    for (size_t i = 0; i < 6; i++) {
        rids[i] = h_header(&r[i], "X-Request-Id");
        assert_non_null(rids[i]);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(rids[i], rids[j]);
    }
    cJSON *lines = wait_log(log_path, rids, 6);
    check_line(lines, &r[0], "GET", "/api/ok/a%2Fb", "ok", 200, NULL);
    check_line(lines, &r[1], "GET", "/nope/x", NULL, 404, NULL);
    check_line(lines, &r[2], "GET", "/api/opt/7", "opt", 200, (const char *const[]){"flaky", NULL});
    check_line(lines, &r[3], "GET", "/api/stat/8", "stat", 200, (const char *const[]){"st", NULL});
    check_line(lines, &r[4], "POST", "/healthz", NULL, 405, NULL);
    check_line(lines, &r[5], "GET", "/api/fail/9", "fail", 502, NULL);
    /* one line per request */
    for (size_t i = 0; i < 6; i++) {
        int count = 0;
        const cJSON *o;
        cJSON_ArrayForEach(o, lines) count += strcmp(h_json_str(o, "request_id"), rids[i]) == 0;
        assert_int_equal(count, 1);
    }
    cJSON_Delete(lines);
    for (size_t i = 0; i < 6; i++)
        h_resp_free(&r[i]);
}

static bool has_499(const cJSON *lines, const char *rid, double *dur)
{
    const cJSON *o = log_find(lines, rid);
    if (!o) return false;
    *dur = cJSON_GetObjectItemCaseSensitive(o, "duration_ms")->valuedouble;
    return cJSON_GetObjectItemCaseSensitive(o, "status")->valueint == 499;
}

static void client_that_hangs_up_is_logged_and_counted_as_499(void **state)
{
    (void)state;
    struct expo base;
    scrape(&env.gw, &base);
    /* a raw client, so it hangs up exactly while the backend call runs */
    int fd = h_connect(env.gw.port);
    assert_true(fd >= 0);
    static const char req[] = "GET /api/hang/1 HTTP/1.1\r\nHost: x\r\n"
                              "X-Request-Id: ops-hangup-1\r\n\r\n";
    assert_int_equal(h_send_all(fd, req, sizeof req - 1), 0);
    cJSON *started = h_wait_log(&env.mock, "/slow/5000/1", NULL, NULL, WAIT_MS);
    if (!started) close(fd);
    assert_non_null(started);
    cJSON_Delete(started);
    close(fd);

    double end = h_now_ms() + h_bound_ms(WAIT_MS), dur = 0;
    for (;;) {
        cJSON *lines = read_log(log_path, false);
        bool found = log_find(lines, "ops-hangup-1") != NULL;
        bool is499 = has_499(lines, "ops-hangup-1", &dur);
        if (found && !is499) {
            fprintf(stderr, "%s\n", cJSON_PrintUnformatted(log_find(lines, "ops-hangup-1")));
            cJSON_Delete(lines);
            fail_msg("the hung-up request is not logged as 499");
        }
        cJSON_Delete(lines);
        if (found) break;
        if (h_now_ms() >= end) fail_msg("no access-log line for the hung-up request");
        h_pause_ms(10);
    }
    /* noticed while the backend (5 s) was still working */
    if (dur >= 4000) fail_msg("499 logged after %.0f ms: the hang-up was not noticed", dur);
    /* and the backend call was aborted */
    cJSON *aborted = h_wait_log(&env.mock, "/slow/5000/1", h_pred_hung_up, NULL, WAIT_MS);
    assert_non_null(aborted);
    cJSON_Delete(aborted);

    struct want w[4];
    size_t n = 0;
    want_add(w, &n, 1, REQ("hang", "499"));
    want_add(w, &n, 1, BE("hang", "sleepy", "cancelled"));
    want_add(w, &n, 1, RDUR("hang"));
    want_add(w, &n, 1, BDUR("sleepy"));
    char s1[256], s2[256];
    const char *skip[] = {key_of(s1, sizeof s1, REQ("none", "200")),
                          key_of(s2, sizeof s2, RDUR("none")), NULL};
    wait_deltas(&env.gw, &base, counted_families, w, n, skip);
    expo_free(&base);
}

/* ---- gateways of their own ---- */

static struct h_env own_env;
static char own_dir[64], own_log[128];

/* Stops whatever a test left running (also after a failed assertion). */
static int own_teardown(void **state)
{
    (void)state;
    if (own_env.gw.pid) kill(own_env.gw.pid, SIGKILL), waitpid(own_env.gw.pid, NULL, 0);
    own_env.gw.pid = 0;
    if (own_env.gw.conf_path[0]) h_gateway_stop(&own_env.gw, false);
    if (own_env.mock.pid) h_mock_stop(&own_env.mock);
    memset(&own_env, 0, sizeof own_env);
    if (own_log[0]) unlink(own_log);
    if (own_dir[0]) rmdir(own_dir);
    own_log[0] = own_dir[0] = '\0';
    return 0;
}

/* Starts a gateway with access_log path, makes two requests (ids
 * prefix-1, prefix-2), SIGTERMs it and returns its stdout+stderr. */
static char *run_and_stop(const char *log, const char *prefix)
{
    struct h_env *e = &own_env;
    char *tmpl = make_tmpl(log, false);
    int rc = h_env_start(e, tmpl);
    free(tmpl);
    assert_int_equal(rc, 0);
    char rid[64];
    struct h_resp r;
    snprintf(rid, sizeof rid, "%s-1", prefix);
    get_expect(&e->gw, "/api/ok/1", rid, 200, &r);
    h_resp_free(&r);
    snprintf(rid, sizeof rid, "%s-2", prefix);
    get_expect(&e->gw, "/nope", rid, 404, &r);
    h_resp_free(&r);
    term_and_wait(&e->gw);
    char *out = h_read_file(e->gw.stderr_path, NULL);
    assert_non_null(out);
    own_teardown(NULL); /* removes the config and output files */
    return out;
}

static void access_log_off_writes_nothing_and_dash_writes_stdout(void **state)
{
    (void)state;
    char *out = run_and_stop("off", "ops-off");
    if (strstr(out, "request_id") || strstr(out, "ops-off")) {
        fprintf(stderr, "%s\n", out);
        fail_msg("access_log \"off\" wrote a record");
    }
    free(out);

    /* the same with "-": the lines are on stdout (the check above can fail) */
    out = run_and_stop("-", "ops-dash");
    int found = 0;
    for (char *line = out, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        *nl = '\0';
        if (line[0] != '{') continue;
        cJSON *o = cJSON_Parse(line);
        const char *problem = o ? log_line_problem(o) : "not JSON";
        if (problem) fail_msg("stdout access-log line: %s: %s", problem, line);
        const char *rid = h_json_str(o, "request_id");
        found += strcmp(rid, "ops-dash-1") == 0 || strcmp(rid, "ops-dash-2") == 0;
        cJSON_Delete(o);
    }
    free(out);
    assert_int_equal(found, 2);
}

static void sigterm_flushes_every_line(void **state)
{
    (void)state;
    snprintf(own_dir, sizeof own_dir, "/tmp/gw-ops-XXXXXX");
    if (!mkdtemp(own_dir)) {
        own_dir[0] = '\0';
        fail_msg("mkdtemp: %s", strerror(errno));
    }
    snprintf(own_log, sizeof own_log, "%s/access.log", own_dir);
    const char *path = own_log;
    char *tmpl = make_tmpl(path, false);
    struct h_env *e = &own_env;
    int rc = h_env_start(e, tmpl);
    free(tmpl);
    assert_int_equal(rc, 0);

    enum { R = 200 };
    for (int i = 0; i < R; i++) {
        char rid[64], p[64];
        snprintf(rid, sizeof rid, "ops-flush-%d", i);
        snprintf(p, sizeof p, i % 10 ? "/api/ok/%d" : "/nope/%d", i);
        struct h_resp r;
        get_expect(&e->gw, p, rid, i % 10 ? 200 : 404, &r);
        h_resp_free(&r);
    }
    /* no wait for the writer: shutdown must flush what is queued */
    term_and_wait(&e->gw);
    cJSON *lines = read_log(path, true);
    bool seen[R] = {false};
    const cJSON *o;
    cJSON_ArrayForEach(o, lines)
    {
        int i;
        char tail;
        if (sscanf(h_json_str(o, "request_id"), "ops-flush-%d%c", &i, &tail) != 1) continue;
        assert_true(i >= 0 && i < R && !seen[i]);
        seen[i] = true;
        assert_int_equal(cJSON_GetObjectItemCaseSensitive(o, "status")->valueint,
                         i % 10 ? 200 : 404);
    }
    cJSON_Delete(lines);
    int missing = 0;
    for (int i = 0; i < R; i++)
        missing += !seen[i];
    if (missing) fail_msg("%d of %d lines missing after SIGTERM", missing, R);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    test_started = time(NULL) - 5;
    const struct CMUnitTest shared[] = {
        cmocka_unit_test(health_and_readiness_answer_200_json),
        cmocka_unit_test(builtins_refuse_other_methods_with_405_and_allow),
        cmocka_unit_test(metrics_exposition_is_strict_and_complete),
        cmocka_unit_test(metrics_count_exactly_what_the_client_did),
        cmocka_unit_test(reloads_are_counted_by_result),
        cmocka_unit_test(access_log_has_one_strict_line_per_request),
        cmocka_unit_test(client_that_hangs_up_is_logged_and_counted_as_499),
    };
    const struct CMUnitTest own[] = {
        cmocka_unit_test_teardown(access_log_off_writes_nothing_and_dash_writes_stdout,
                                  own_teardown),
        cmocka_unit_test_teardown(sigterm_flushes_every_line, own_teardown),
    };
    const struct CMUnitTest parser[] = {
        cmocka_unit_test(exposition_parser_refuses_malformed_text),
    };
    int failed = cmocka_run_group_tests_name("ops (parser)", parser, NULL, NULL);
    failed +=
        cmocka_run_group_tests_name("ops (shared gateway)", shared, group_setup, group_teardown);
    failed += cmocka_run_group_tests_name("ops (own gateways)", own, NULL, NULL);
    return failed ? 1 : 0;
}
