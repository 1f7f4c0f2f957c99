/*
 * cachectl: Cache-Control parsing and the freshness rule (see cachectl.h).
 */
#include "gateway/cachectl.h"

#include <string.h>
#include <strings.h>

/* delta-seconds beyond this (RFC 9111 §1.2.2 caps at 2^31) are treated as
 * an overflow: CC_INVALID. */
#define MAX_DELTA_SECONDS 2147483648ll

void cachectl_init(struct cache_control *cc)
{
    *cc = (struct cache_control){0};
}

static bool is_tchar(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

static bool name_is(const char *p, size_t n, const char *name)
{
    return strlen(name) == n && strncasecmp(p, name, n) == 0;
}

/* delta-seconds: 1*DIGIT, no sign, no quotes. -1 when malformed or over
 * MAX_DELTA_SECONDS. */
static int64_t parse_delta(const char *p, size_t n)
{
    if (n == 0 || n > 10) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v > MAX_DELTA_SECONDS ? -1 : v;
}

/* One directive: name[=value], the value a token or a quoted string (raw,
 * quotes included). Returns false when it cannot be relied on. */
static bool directive(struct cache_control *cc, const char *name, size_t nn, const char *val,
                      size_t vn, bool has_val)
{
    bool smax = name_is(name, nn, "s-maxage");
    if (smax || name_is(name, nn, "max-age")) {
        uint32_t bit = smax ? CC_S_MAXAGE : CC_MAX_AGE;
        int64_t v = has_val ? parse_delta(val, vn) : -1;
        if (v < 0 || (cc->flags & bit)) return false; /* malformed, overflow or repeated */
        *(smax ? &cc->s_maxage : &cc->max_age) = (uint32_t)v;
        cc->flags |= bit;
    } else if (name_is(name, nn, "no-store")) {
        cc->flags |= CC_NO_STORE;
    } else if (name_is(name, nn, "private")) {
        cc->flags |= CC_PRIVATE;
    } else if (name_is(name, nn, "no-cache")) {
        cc->flags |= CC_NO_CACHE;
    }
    return true;
}

/* Parses a comma-separated list of directives; false on a syntax error. */
static bool parse_list(struct cache_control *cc, const char *p, size_t n)
{
    size_t i = 0;
    for (;;) {
        while (i < n && (is_ows(p[i]) || p[i] == ','))
            i++;
        if (i == n) return true;
        size_t ns = i;
        while (i < n && is_tchar((unsigned char)p[i]))
            i++;
        if (i == ns) return false;
        size_t nn = i - ns, vs = i, vn = 0;
        bool has_val = i < n && p[i] == '=';
        if (has_val) {
            vs = ++i;
            if (i < n && p[i] == '"') {
                for (i++; i < n && p[i] != '"'; i++)
                    if (p[i] == '\\' && ++i == n) return false;
                if (i++ == n) return false; /* no closing quote */
            } else {
                while (i < n && is_tchar((unsigned char)p[i]))
                    i++;
            }
            vn = i - vs;
            if (vn == 0) return false;
        }
        while (i < n && is_ows(p[i]))
            i++;
        if (i < n && p[i] != ',') return false;
        if (!directive(cc, p + ns, nn, p + vs, vn, has_val)) return false;
    }
}

void cachectl_header(struct cache_control *cc, const char *name, size_t name_len, const char *value,
                     size_t value_len)
{
    if (!name_is(name, name_len, "Cache-Control")) return;
    if (value_len > CACHECTL_MAX_VALUE || cc->bytes + value_len > CACHECTL_MAX_VALUE) {
        cc->flags |= CC_INVALID;
        return;
    }
    cc->bytes += (uint32_t)value_len;
    if (!parse_list(cc, value, value_len)) cc->flags |= CC_INVALID;
}

int cachectl_h1_header(void *arg, const char *name, size_t name_len, const char *value,
                       size_t value_len)
{
    cachectl_header(arg, name, name_len, value, value_len);
    return 0;
}

void cachectl_line(struct cache_control *cc, const char *line, size_t len)
{
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        cachectl_init(cc);
        return;
    }
    const char *colon = memchr(line, ':', len);
    if (!colon) return;
    const char *v = colon + 1, *end = line + len;
    while (end > v && (end[-1] == '\n' || end[-1] == '\r' || is_ows(end[-1])))
        end--;
    while (v < end && is_ows(*v))
        v++;
    cachectl_header(cc, line, (size_t)(colon - line), v, (size_t)(end - v));
}

uint32_t cachectl_fresh_ms(const struct cache_control *cc, bool honor, uint32_t ttl_ms)
{
    uint64_t ms = ttl_ms;
    if (cc->flags & (CC_INVALID | CC_NO_STORE)) return 0;
    if (honor) {
        if (cc->flags & (CC_PRIVATE | CC_NO_CACHE)) return 0;
        if (cc->flags & CC_S_MAXAGE)
            ms = (uint64_t)cc->s_maxage * 1000u;
        else if (cc->flags & CC_MAX_AGE)
            ms = (uint64_t)cc->max_age * 1000u;
    }
    return ms > CACHECTL_MAX_FRESH_MS ? CACHECTL_MAX_FRESH_MS : (uint32_t)ms;
}
