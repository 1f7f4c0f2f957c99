/* prom: the strict exposition parser of the tests (see prom.h). Parsing
 * fills p->s and p->f line by line; the checks that need every sample
 * (duplicates, histograms) run once at the end over the sorted index. */
#include "prom.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p) abort();
    return p;
}

void prom_free(struct prom *p)
{
    for (size_t i = 0; i < p->n; i++) {
        struct prom_sample *s = &p->s[i];
        free(s->name);
        free(s->family);
        free(s->key);
        free(s->group);
        for (size_t j = 0; j < s->nlabels; j++) {
            free(s->lname[j]);
            free(s->lval[j]);
        }
    }
    for (size_t i = 0; i < p->nf; i++)
        free(p->f[i].name);
    free(p->s);
    free(p->f);
    free(p->by_key);
    memset(p, 0, sizeof *p);
}

static struct prom_family *family_find(struct prom *p, const char *name)
{
    for (size_t i = 0; i < p->nf; i++)
        if (strcmp(p->f[i].name, name) == 0) return &p->f[i];
    return NULL;
}

const struct prom_family *prom_family(const struct prom *p, const char *name)
{
    return family_find((struct prom *)p, name);
}

static struct prom_family *family_add(struct prom *p, const char *name)
{
    if (p->nf == p->capf) {
        p->capf = p->capf ? 2 * p->capf : 16;
        p->f = xrealloc(p->f, p->capf * sizeof *p->f);
    }
    struct prom_family *f = &p->f[p->nf++];
    memset(f, 0, sizeof *f);
    f->name = strdup(name);
    return f;
}

static bool is_integral(double v)
{
    return v >= -9e15 && v <= 9e15 && (double)(int64_t)v == v;
}

/* Reads a metric name at *p (label names: no ':'). Returns a malloc'd copy
 * or NULL. */
static char *take_name(const char **p, bool label)
{
    const char *s = *p, *q = s;
    if (!(isalpha((unsigned char)*q) || *q == '_' || (!label && *q == ':'))) return NULL;
    while (isalnum((unsigned char)*q) || *q == '_' || (!label && *q == ':'))
        q++;
    *p = q;
    return strndup(s, (size_t)(q - s));
}

/* A float as the format allows it: [-+]digits[.digits][e[-+]digits], NaN,
 * or +Inf/-Inf (strtod alone would take hex, "inf", "nan(...)" and leading
 * blanks). */
static bool parse_value(const char *s, size_t len, double *out)
{
    char buf[64];
    if (len == 0 || len >= sizeof buf) return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (strcmp(buf, "NaN") == 0) return *out = NAN, true;
    if (strcmp(buf, "+Inf") == 0 || strcmp(buf, "-Inf") == 0)
        return *out = buf[0] == '-' ? -INFINITY : INFINITY, true;
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

/* Whether a sample called name belongs to family f. */
static bool belongs(const struct prom_family *f, const char *name)
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
 * label left out. Returns a malloc'd string. */
static char *series_key(const char *name, size_t n, char *const *lname, char *const *lval,
                        const char *skip)
{
    const char *pairs[PROM_MAX_LABELS][2];
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
    char *k = xrealloc(NULL, cap);
    size_t o = (size_t)sprintf(k, "%s{", name);
    for (size_t i = 0; i < m; i++)
        o += (size_t)sprintf(k + o, "%s%s=\"%s\"", i ? "," : "", pairs[i][0], pairs[i][1]);
    sprintf(k + o, "}");
    return k;
}

const char *prom_vkey(char *buf, size_t len, const char *name, va_list ap)
{
    char *ln[PROM_MAX_LABELS], *lv[PROM_MAX_LABELS];
    size_t n = 0;
    for (const char *k; n < PROM_MAX_LABELS && (k = va_arg(ap, const char *));) {
        ln[n] = (char *)k;
        lv[n] = va_arg(ap, char *);
        n++;
    }
    char *k = series_key(name, n, ln, lv, NULL);
    snprintf(buf, len, "%s", k);
    free(k);
    return buf;
}

const char *prom_key(char *buf, size_t len, const char *name, ...)
{
    va_list ap;
    va_start(ap, name);
    prom_vkey(buf, len, name, ap);
    va_end(ap);
    return buf;
}

/* The error of line lineno; returns false. Keeps the first error. */
static bool fail(struct prom *p, int lineno, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool fail(struct prom *p, int lineno, const char *fmt, ...)
{
    if (p->err[0]) return false;
    int o = lineno ? snprintf(p->err, sizeof p->err, "line %d: ", lineno) : 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + o, sizeof p->err - (size_t)o, fmt, ap);
    va_end(ap);
    return false;
}

/* Reads a label value after its opening quote into a malloc'd, unescaped
 * string; *q ends after the closing quote. NULL when malformed. */
static char *take_label_value(struct prom *p, int lineno, const char **q)
{
    const char *c = *q;
    char *v = xrealloc(NULL, strlen(c) + 1);
    size_t vl = 0;
    for (; *c != '"'; c++) {
        if (*c == '\0') {
            free(v);
            fail(p, lineno, "unterminated label value");
            return NULL;
        }
        if (*c == '\\') {
            c++;
            if (*c != 'n' && *c != '\\' && *c != '"') {
                free(v);
                fail(p, lineno, "bad escape \\%c in a label value", *c ? *c : '0');
                return NULL;
            }
            v[vl++] = *c == 'n' ? '\n' : *c;
            continue;
        }
        v[vl++] = *c;
    }
    v[vl] = '\0';
    *q = c + 1;
    return v;
}

/* Parses {a="1",...} at *q into s. */
static bool take_labels(struct prom *p, int lineno, const char **q, struct prom_sample *s,
                        unsigned flags)
{
    const char *c = *q + 1;
    while (*c != '}') {
        if (s->nlabels == PROM_MAX_LABELS) return fail(p, lineno, "too many labels");
        char *ln = take_name(&c, true);
        if (!ln) return fail(p, lineno, "bad label name");
        s->lname[s->nlabels] = ln;
        s->lval[s->nlabels] = NULL;
        s->nlabels++;
        if (strncmp(ln, "__", 2) == 0) return fail(p, lineno, "reserved label name %s", ln);
        for (size_t j = 0; j + 1 < s->nlabels; j++)
            if (strcmp(s->lname[j], ln) == 0) return fail(p, lineno, "label %s twice", ln);
        if (c[0] != '=' || c[1] != '"') return fail(p, lineno, "expected =\" after %s", ln);
        c += 2;
        if (!(s->lval[s->nlabels - 1] = take_label_value(p, lineno, &c))) return false;
        if (*c == ',' && c[1] == '}' && (flags & PROM_GATEWAY))
            return fail(p, lineno, "a trailing comma (the gateway writes none)");
        if (*c == ',')
            c++;
        else if (*c != '}')
            return fail(p, lineno, "expected , or } after label %s", ln);
    }
    *q = c + 1;
    return true;
}

/* Parses " value[ timestamp]" at q into s. */
static bool take_value(struct prom *p, int lineno, const char *q, struct prom_sample *s,
                       unsigned flags)
{
    if (*q++ != ' ') return fail(p, lineno, "expected one space before the value");
    const char *vend = strchr(q, ' ');
    size_t vlen = vend ? (size_t)(vend - q) : strlen(q);
    if (!parse_value(q, vlen, &s->value)) return fail(p, lineno, "bad value '%.*s'", (int)vlen, q);
    if (!vend) return true;
    if (flags & PROM_GATEWAY) return fail(p, lineno, "a timestamp (the gateway writes none)");
    const char *t = vend + 1;
    if (*t == '-') t++;
    if (!isdigit((unsigned char)*t)) return fail(p, lineno, "bad timestamp");
    while (isdigit((unsigned char)*t))
        t++;
    return *t ? fail(p, lineno, "trailing bytes after the timestamp") : true;
}

/* The checks of one sample against its family cur. */
static bool check_sample(struct prom *p, int lineno, const struct prom_family *cur,
                         struct prom_sample *s)
{
    bool bucket =
        strcmp(cur->type, "histogram") == 0 && strcmp(s->name + strlen(cur->name), "_bucket") == 0;
    bool has_le = false;
    for (size_t j = 0; j < s->nlabels; j++)
        has_le |= strcmp(s->lname[j], "le") == 0;
    if (bucket != has_le)
        return fail(p, lineno, "%s", bucket ? "bucket without le" : "le outside a bucket");
    if (strcmp(cur->type, "counter") == 0 && !(s->value >= 0 && isfinite(s->value)))
        return fail(p, lineno, "counter value %g", s->value);
    s->key = series_key(s->name, s->nlabels, s->lname, s->lval, NULL);
    if (bucket) s->group = series_key(cur->name, s->nlabels, s->lname, s->lval, "le");
    return true;
}

/* Parses one sample line; the family cur must be open. */
static bool parse_sample(struct prom *p, int lineno, struct prom_family *cur, const char *line,
                         unsigned flags)
{
    const char *q = line;
    char *name = take_name(&q, false);
    if (!name) return fail(p, lineno, "bad metric name");
    if (!cur || !cur->typed || !belongs(cur, name)) {
        fail(p, lineno, "sample %s is not in the family TYPE'd before it (%s)", name,
             cur ? cur->name : "none");
        free(name);
        return false;
    }
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 64;
        p->s = xrealloc(p->s, p->cap * sizeof *p->s);
    }
    struct prom_sample *s = &p->s[p->n++]; /* kept even on failure, so prom_free frees it */
    memset(s, 0, sizeof *s);
    s->name = name;
    s->family = strdup(cur->name);
    if (*q == '{' && !take_labels(p, lineno, &q, s, flags)) return false;
    if (!take_value(p, lineno, q, s, flags) || !check_sample(p, lineno, cur, s)) return false;
    cur->nsamples++;
    return true;
}

/* A HELP line's text: escapes \\ and \n only. */
static bool check_help(struct prom *p, int lineno, const char *text, unsigned flags)
{
    if ((flags & PROM_GATEWAY) && !*text) return fail(p, lineno, "empty HELP");
    for (const char *q = text; *q; q++) {
        if (*q != '\\') continue;
        if (q[1] != '\\' && q[1] != 'n') return fail(p, lineno, "bad escape in HELP");
        q++;
    }
    return true;
}

static bool check_type(struct prom *p, int lineno, struct prom_family *f, const char *type,
                       unsigned flags)
{
    static const char *const types[] = {"counter", "gauge", "histogram", "summary", "untyped"};
    size_t ntypes = flags & PROM_GATEWAY ? 3 : 5;
    bool known = false;
    for (size_t i = 0; i < ntypes; i++)
        known |= strcmp(type, types[i]) == 0;
    if (f->typed || !known) return fail(p, lineno, "TYPE twice or unknown type '%s'", type);
    if ((flags & PROM_GATEWAY) && !f->help) return fail(p, lineno, "TYPE without HELP before it");
    f->typed = true;
    snprintf(f->type, sizeof f->type, "%s", type);
    return true;
}

/* A "# HELP name text" or "# TYPE name type" line; *cur is the open family. */
static bool parse_meta(struct prom *p, int lineno, struct prom_family **cur, const char *l,
                       unsigned flags)
{
    bool help = l[2] == 'H';
    const char *q = l + 7;
    char *name = take_name(&q, false);
    struct prom_family *f = name ? family_find(p, name) : NULL;
    bool ok = true;
    if (!name || (*q != ' ' && !(help && *q == '\0')))
        ok = fail(p, lineno, "bad name in HELP/TYPE");
    else if (f && f != *cur)
        ok = fail(p, lineno, "family %s appears twice", name);
    else if (f && f->nsamples)
        ok = fail(p, lineno, "HELP/TYPE of %s after its samples", name);
    else if (f && help && f->help)
        ok = fail(p, lineno, "HELP twice");
    else if ((flags & PROM_GATEWAY) && help && f)
        ok = fail(p, lineno, "HELP after TYPE");
    if (ok) {
        if (!f) f = family_add(p, name);
        *cur = f;
        const char *rest = *q ? q + 1 : q;
        if (help) {
            f->help = true;
            ok = check_help(p, lineno, rest, flags);
        } else {
            ok = check_type(p, lineno, f, rest, flags);
        }
    }
    free(name);
    return ok;
}

/* One line (without its newline). */
static bool parse_line(struct prom *p, int lineno, struct prom_family **cur, const char *l,
                       unsigned flags)
{
    if (strchr(l, '\r')) return fail(p, lineno, "carriage return");
    if (l[0] == '\0') return flags & PROM_GATEWAY ? fail(p, lineno, "empty line") : true;
    if (strncmp(l, "# HELP ", 7) == 0 || strncmp(l, "# TYPE ", 7) == 0)
        return parse_meta(p, lineno, cur, l, flags);
    if (l[0] == '#')
        return flags & PROM_GATEWAY ? fail(p, lineno, "a comment that is not HELP or TYPE") : true;
    if ((flags & PROM_GATEWAY) && *cur && (*cur)->help && !(*cur)->typed)
        return fail(p, lineno, "HELP not followed by TYPE");
    return parse_sample(p, lineno, *cur, l, flags);
}

static const struct prom *g_sort_p; /* qsort has no argument */

static int cmp_by_key(const void *a, const void *b)
{
    return strcmp(g_sort_p->s[*(const size_t *)a].key, g_sort_p->s[*(const size_t *)b].key);
}

/* Sorts the index and refuses duplicate series. */
static bool index_keys(struct prom *p)
{
    p->by_key = xrealloc(NULL, (p->n ? p->n : 1) * sizeof *p->by_key);
    for (size_t i = 0; i < p->n; i++)
        p->by_key[i] = i;
    g_sort_p = p;
    qsort(p->by_key, p->n, sizeof *p->by_key, cmp_by_key);
    for (size_t i = 1; i < p->n; i++)
        if (strcmp(p->s[p->by_key[i - 1]].key, p->s[p->by_key[i]].key) == 0)
            return fail(p, 0, "duplicate series %s", p->s[p->by_key[i]].key);
    return true;
}

const struct prom_sample *prom_find(const struct prom *p, const char *key)
{
    if (!p->by_key) return NULL;
    size_t lo = 0, hi = p->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(p->s[p->by_key[mid]].key, key);
        if (c == 0) return &p->s[p->by_key[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

double prom_value(const struct prom *p, const char *key, double absent)
{
    const struct prom_sample *s = prom_find(p, key);
    return s ? s->value : absent;
}

int prom_count(const struct prom *p, const char *name)
{
    int n = 0;
    for (size_t i = 0; i < p->n; i++)
        n += strcmp(p->s[i].name, name) == 0;
    return n;
}

/* The run of buckets of one series starting at i: increasing le,
 * cumulative counts, ending with +Inf. Returns the index after the run. */
static size_t check_bucket_run(struct prom *p, size_t i, double *inf_count)
{
    const char *group = p->s[i].group;
    double prev_le = -INFINITY, prev_count = 0;
    size_t j = i;
    for (; j < p->n && p->s[j].group && strcmp(p->s[j].group, group) == 0; j++) {
        const struct prom_sample *b = &p->s[j];
        const char *lev = NULL;
        for (size_t k = 0; k < b->nlabels; k++)
            if (strcmp(b->lname[k], "le") == 0) lev = b->lval[k];
        double le;
        if (!parse_value(lev, strlen(lev), &le) || isnan(le) || le <= prev_le)
            return fail(p, 0, "%s: le %s not increasing", b->key, lev), j;
        if (b->value < prev_count || !is_integral(b->value))
            return fail(p, 0, "%s: bucket %g not cumulative", b->key, b->value), j;
        prev_le = le;
        prev_count = b->value;
    }
    if (prev_le != INFINITY) fail(p, 0, "%s: no +Inf bucket", group);
    *inf_count = prev_count;
    return j;
}

/* The _count and _sum of the bucket series group (family{labels}). */
static bool check_count_sum(struct prom *p, const char *group, double inf_count)
{
    const char *brace = strchr(group, '{');
    char key[1024];
    snprintf(key, sizeof key, "%.*s_count%s", (int)(brace - group), group, brace);
    struct prom_sample *cnt = (struct prom_sample *)prom_find(p, key);
    snprintf(key, sizeof key, "%.*s_sum%s", (int)(brace - group), group, brace);
    struct prom_sample *sum = (struct prom_sample *)prom_find(p, key);
    if (!cnt || !sum) return fail(p, 0, "%s: _count or _sum missing", group);
    cnt->owned = sum->owned = true;
    if (cnt->value != inf_count)
        return fail(p, 0, "%s: +Inf bucket %g != _count %g", group, inf_count, cnt->value);
    if (!(sum->value >= 0)) return fail(p, 0, "%s: _sum %g", group, sum->value);
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every histogram series: see prom.h. */
static bool check_histograms(struct prom *p)
{
    char **starts = xrealloc(NULL, (p->n ? p->n : 1) * sizeof *starts);
    size_t nstarts = 0;
    bool ok = true;
    for (size_t i = 0; i < p->n && ok;) {
        if (!p->s[i].group) {
            i++;
            continue;
        }
        double inf_count = 0;
        starts[nstarts++] = p->s[i].group;
        size_t next = check_bucket_run(p, i, &inf_count);
        ok = !p->err[0] && check_count_sum(p, p->s[i].group, inf_count);
        i = next;
    }
    /* a series whose buckets come in two runs is not contiguous */
    qsort(starts, nstarts, sizeof *starts, cmp_str);
    for (size_t i = 1; i < nstarts && ok; i++)
        if (strcmp(starts[i - 1], starts[i]) == 0)
            ok = fail(p, 0, "%s: buckets not contiguous", starts[i]);
    free(starts);
    for (size_t i = 0; i < p->n && ok; i++) {
        const struct prom_sample *s = &p->s[i];
        const struct prom_family *f = prom_family(p, s->family);
        if (strcmp(f->type, "histogram") == 0 && !s->group && !s->owned)
            ok = fail(p, 0, "%s without buckets", s->key);
    }
    return ok;
}

int prom_parse(struct prom *p, const char *text, size_t len, unsigned flags)
{
    memset(p, 0, sizeof *p);
    if (len == 0 || text[len - 1] != '\n')
        return fail(p, 0, "the exposition does not end with a newline"), -EINVAL;
    if (strlen(text) != len) return fail(p, 0, "NUL byte in the exposition"), -EINVAL;
    struct prom_family *cur = NULL;
    int lineno = 0;
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        char *l = strndup(line, (size_t)(nl - line));
        line = nl + 1;
        bool ok = parse_line(p, ++lineno, &cur, l, flags);
        if (!ok) {
            size_t o = strlen(p->err);
            snprintf(p->err + o, sizeof p->err - o, ": '%.100s'", l);
        }
        free(l);
        if (!ok) return -EINVAL;
    }
    for (size_t i = 0; i < p->nf; i++)
        if (!p->f[i].typed) return fail(p, 0, "family %s has no TYPE", p->f[i].name), -EINVAL;
    return index_keys(p) && check_histograms(p) ? 0 : -EINVAL;
}
