/*
 * prom: a strict parser of the Prometheus text exposition format 0.0.4, the
 * one the unit test of gateway/metrics.c (tests/gateway/test_metrics.c) and
 * the integration test of /metrics (tests/integration/test_metrics.c) check
 * the gateway's output with.
 *
 * What it refuses (each with a line number in err): a last line without a
 * newline, a NUL or a carriage return; a sample before its family's TYPE or
 * outside it (a family's samples are contiguous and follow its TYPE); HELP
 * or TYPE twice, after the samples, or of a family seen before; an unknown
 * type; bad metric or label names, reserved "__" labels, a label twice, bad
 * escapes (only \\ \" \n), unterminated values, anything but one space
 * before the value; values that are not decimal/exponent numbers, NaN,
 * +Inf or -Inf (so no hex); negative or NaN counters; duplicate series;
 * histograms whose buckets are not contiguous, not in increasing le order,
 * not cumulative, without +Inf, whose +Inf is not _count, without _sum, or
 * a _count/_sum without buckets.
 *
 * PROM_GATEWAY adds the layout the gateway always writes: every family
 * opens with a non-empty HELP followed at once by TYPE, no blank lines or
 * other comments, no timestamps, and only counter, gauge and histogram.
 *
 * A series is looked up by its key: name{a="1",b="2"}, labels sorted by
 * name, values unescaped (prom_key builds one). Lookups are a binary
 * search, so thousands of series parse and check in O(n log n).
 */
#ifndef TESTS_COMMON_PROM_H
#define TESTS_COMMON_PROM_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#define PROM_MAX_LABELS 16

struct prom_sample {
    char *name;   /* as written, e.g. x_bucket */
    char *family; /* the family it belongs to, e.g. x */
    char *key;    /* name{a="1",b="2"}, labels sorted by name */
    char *group;  /* a histogram bucket's key without le (family{...}), else NULL */
    size_t nlabels;
    char *lname[PROM_MAX_LABELS], *lval[PROM_MAX_LABELS]; /* lval unescaped */
    double value;
    bool owned; /* a histogram _count/_sum that has buckets (set by the check) */
};

struct prom_family {
    char *name;
    char type[16];
    bool help, typed;
    size_t nsamples;
};

struct prom {
    struct prom_sample *s; /* in the order of the text */
    size_t n, cap;
    struct prom_family *f;
    size_t nf, capf;
    size_t *by_key; /* indexes into s sorted by key (after a successful parse) */
    char err[512];  /* why the parse failed */
};

enum { PROM_GATEWAY = 1 };

/* Parses text (len bytes) into p (which it initialises). Returns 0, or
 * -EINVAL with p->err naming the line and the problem; prom_free p either
 * way. */
int prom_parse(struct prom *p, const char *text, size_t len, unsigned flags);
void prom_free(struct prom *p);

/* The family called name, or NULL. */
const struct prom_family *prom_family(const struct prom *p, const char *name);
/* The sample with this key, or NULL. */
const struct prom_sample *prom_find(const struct prom *p, const char *key);
/* Its value, or absent when there is no such series. */
double prom_value(const struct prom *p, const char *key, double absent);
/* The number of samples called name (a family's series, or its _count). */
int prom_count(const struct prom *p, const char *name);

/* Writes the key of name with NULL-terminated label name/value pairs into
 * buf, e.g. prom_key(b, n, "gateway_requests_total", "endpoint", "ok",
 * "code", "200", NULL). Returns buf. */
const char *prom_key(char *buf, size_t len, const char *name, ...);
const char *prom_vkey(char *buf, size_t len, const char *name, va_list ap);

#endif
