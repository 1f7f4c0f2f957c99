/*
 * expose: exposed backend response headers (see expose.h).
 */
#include "gateway/expose.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SLOT (EXPOSE_MAX_VALUE + 1)

struct expose_set {
    size_t n_caps;
    struct expose_cap caps[];
    /* then n_caps * n_names slots of SLOT bytes */
};

struct refusal {
    const char *name;
    bool prefix; /* name is a prefix ("Content-") */
    const char *why;
};

static const char CACHING[] = "the gateway computes caching itself";
static const char HOP[] = "a hop-by-hop header";
static const char OWN[] = "the gateway sets it itself";

static const struct refusal REFUSED[] = {
    {"Cache-Control", false, CACHING},
    {"Expires", false, CACHING},
    {"Age", false, CACHING},
    {"Pragma", false, CACHING},
    {"ETag", false, CACHING},
    {"Last-Modified", false, CACHING},
    {"Vary", false, CACHING},
    {"Connection", false, HOP},
    {"Keep-Alive", false, HOP},
    {"TE", false, HOP},
    {"Trailer", false, HOP},
    {"Transfer-Encoding", false, HOP},
    {"Upgrade", false, HOP},
    {"Proxy-", true, HOP},
    {"Content-", true, "it describes the backend's body, not the answer"},
    {"Set-Cookie", false, "cookies are never passed through"},
    {"Set-Cookie2", false, "cookies are never passed through"},
    {"Date", false, OWN},
    {"Server-Timing", false, OWN},
    {"X-Request-Id", false, OWN},
    {"traceparent", false, OWN},
    {"tracestate", false, OWN},
    {"X-Gateway-", true, OWN},
    {"Access-Control-", true, OWN},
    {"Allow", false, OWN},
    {"WWW-Authenticate", false, OWN},
    {"Retry-After", false, OWN},
};

const char *expose_refused(const char *name)
{
    for (size_t i = 0; i < sizeof REFUSED / sizeof *REFUSED; i++) {
        const struct refusal *r = &REFUSED[i];
        bool hit = r->prefix ? strncasecmp(name, r->name, strlen(r->name)) == 0
                             : strcasecmp(name, r->name) == 0;
        if (hit) return r->why;
    }
    return NULL;
}

struct expose_set *expose_new(const char *const *names, size_t n_names, size_t n_calls)
{
    if (n_names == 0 || n_names > EXPOSE_MAX_NAMES || n_calls == 0) return NULL;
    size_t head = sizeof(struct expose_set) + n_calls * sizeof(struct expose_cap);
    struct expose_set *s = calloc(1, head + n_calls * n_names * SLOT);
    if (!s) return NULL;
    s->n_caps = n_calls;
    char *vals = (char *)s + head;
    for (size_t i = 0; i < n_calls; i++) {
        s->caps[i].names_ = names;
        s->caps[i].n_names_ = n_names;
        s->caps[i].vals_ = vals + i * n_names * SLOT;
    }
    return s;
}

void expose_free(struct expose_set *s)
{
    free(s);
}

struct expose_cap *expose_cap(struct expose_set *s, size_t i)
{
    return s && i < s->n_caps ? &s->caps[i] : NULL;
}

void expose_reset(struct expose_cap *c)
{
    if (!c) return;
    c->have_ = 0;
    c->bad_ = 0;
    c->trailers_ = false;
}

/* A value byte that may reach the client: no CTL but HTAB, no DEL. */
static bool clean(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return false;
    }
    return true;
}

static void keep(struct expose_cap *c, size_t j, const char *value, size_t n)
{
    uint32_t bit = 1u << j;
    if ((c->bad_ & bit) || n == 0) return; /* an empty field adds nothing */
    char *slot = c->vals_ + j * SLOT;
    size_t at = (c->have_ & bit) ? c->len_[j] : 0;
    size_t sep = at ? 2 : 0;
    if (!clean(value, n) || at + sep + n > EXPOSE_MAX_VALUE) {
        c->bad_ |= bit; /* dropped, also for later fields of the same name */
        c->have_ &= ~bit;
        return;
    }
    if (sep) memcpy(slot + at, ", ", 2);
    memcpy(slot + at + sep, value, n);
    slot[at + sep + n] = '\0';
    c->len_[j] = (uint16_t)(at + sep + n);
    c->have_ |= bit;
}

void expose_header(struct expose_cap *c, const char *name, size_t name_len, const char *value,
                   size_t value_len)
{
    if (!c) return;
    for (size_t j = 0; j < c->n_names_; j++) {
        const char *want = c->names_[j];
        if (strlen(want) == name_len && strncasecmp(want, name, name_len) == 0) {
            keep(c, j, value, value_len);
            return;
        }
    }
}

static bool ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

void expose_line(struct expose_cap *c, const char *line, size_t len)
{
    if (!c) return;
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) { /* a new block (after a 1xx) */
        expose_reset(c);
        return;
    }
    const char *end = line + len;
    while (end > line && (end[-1] == '\n' || end[-1] == '\r'))
        end--;
    if (end == line) {
        c->trailers_ = true;
        return;
    }
    if (c->trailers_ || ows(line[0])) return; /* a trailer, or an obs-fold line */
    const char *colon = memchr(line, ':', (size_t)(end - line));
    if (!colon) return;
    const char *v = colon + 1;
    while (end > v && ows(end[-1]))
        end--;
    while (v < end && ows(*v))
        v++;
    expose_header(c, line, (size_t)(colon - line), v, (size_t)(end - v));
}

const char *expose_cap_value(const struct expose_cap *c, size_t j)
{
    if (!c || j >= c->n_names_ || !(c->have_ & (1u << j))) return NULL;
    return c->vals_ + j * SLOT;
}

const char *expose_value(const struct expose_set *s, size_t j)
{
    for (size_t i = 0; s && i < s->n_caps; i++) {
        const char *v = expose_cap_value(&s->caps[i], j);
        if (v) return v;
    }
    return NULL;
}

size_t expose_n_names(const struct expose_set *s)
{
    return s ? s->caps[0].n_names_ : 0;
}

const char *expose_name(const struct expose_set *s, size_t j)
{
    return s && j < s->caps[0].n_names_ ? s->caps[0].names_[j] : NULL;
}
