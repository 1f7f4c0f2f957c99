/*
 * router: matches a request's method and raw path against the endpoints of a
 * config snapshot.
 *
 * Matching works on the raw, still percent-encoded path, so an encoded
 * "%2F" stays inside its segment (and its param) and never acts as a
 * separator. Params come back as raw slices of the path; they are decoded
 * once where they are used (gateway/urlbuild.h re-encodes them as one path
 * segment each).
 *
 * Rules: a pattern segment is a literal or a {param}; a literal matches the
 * segment it equals (compared after percent-decoding, so "/a%62c" matches a
 * literal "abc"); a param matches any non-empty segment. The segment counts
 * must agree, so "/a/b/" does not match "/a/b" and "/a//b" does not match
 * "/a/{x}/b". The method must match exactly (HEAD does not match GET). When
 * several endpoints with the request's method match, the most specific wins: at the first segment
 * where they differ a literal beats a param ("/a/new" beats "/a/{id}"); among equals, config order.
 *
 * Cost: O(endpoints x segments) per request, a linear scan with no
 * allocation; fine for the tens of endpoints a gateway has. The path is split
 * once into at most ROUTE_MAX_SEGS segments (a longer path is a 404).
 */
#ifndef GATEWAY_ROUTER_H
#define GATEWAY_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include "gateway/config.h"

/* An endpoint with more params than this never matches (config should reject
 * it). */
#define ROUTE_MAX_PARAMS 16
/* A path with more segments than this matches nothing. */
#define ROUTE_MAX_SEGS 32
/* Room for the Allow list of a 405, "GET, POST, ...". */
#define ROUTE_ALLOW_MAX 128

/* A param's raw bytes: a slice of the request path, still percent-encoded. */
struct route_param {
    const char *p;
    size_t len;
};

struct route_match {
    const struct endpoint_conf *ep;              /* set on 200 */
    size_t n_params;                             /* ep->n_params on 200 */
    struct route_param params[ROUTE_MAX_PARAMS]; /* in ep->params order */
    char allow[ROUTE_ALLOW_MAX]; /* on 405: "GET, POST", deduplicated, config order */
};

/* Matches method and raw_path[0..path_len) (no query string) against cfg.
 * Returns 200 with m->ep and m->params set (slices into raw_path, which must
 * outlive their use), 404 when no endpoint has this path, 405 when some do but
 * not with this method (m->allow lists theirs; a list that would not fit is
 * cut at a method boundary). */
int router_match(const struct config *cfg, const char *method, const char *raw_path,
                 size_t path_len, struct route_match *m);

/* Percent-decodes in[0..n) into out (room for cap bytes; the result is not
 * NUL-terminated). '+' is kept as '+' (path semantics). Returns the decoded
 * length, -EINVAL for a malformed escape ('%' not followed by two hex
 * digits), a decoded or raw NUL byte, or n > INT_MAX, and -ENOSPC when out is
 * too small (decoded length <= n, so cap >= n always suffices). */
int router_pct_decode(const char *in, size_t n, char *out, size_t cap);

/* The next byte of in[0..n) from *i, percent-decoded ("%XY"; with form, '+'
 * is a space), *i advanced past it. -1 for a malformed escape. The one
 * decoder behind router_pct_decode, route matching and urlbuild. */
static inline int router_pct_next(const char *in, size_t n, size_t *i, bool form)
{
    unsigned char c = (unsigned char)in[(*i)++];
    if (c == '+' && form) return ' ';
    if (c != '%') return c;
    int v = 0;
    for (int k = 0; k < 2; k++) {
        if (*i >= n) return -1;
        unsigned char d = (unsigned char)in[(*i)++];
        int x = d >= '0' && d <= '9'                     ? d - '0'
                : (d | 0x20) >= 'a' && (d | 0x20) <= 'f' ? (d | 0x20) - 'a' + 10
                                                         : -1;
        if (x < 0) return -1;
        v = v << 4 | x;
    }
    return v;
}

#endif
