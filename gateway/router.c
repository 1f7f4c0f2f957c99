/*
 * router: the route table of one config snapshot and the match of a raw
 * path against it (router.h), plus percent-decoding helpers. The table is
 * immutable once built and read by every worker without a lock.
 */
#include "gateway/router.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>

int router_pct_decode(const char *in, size_t n, char *out, size_t cap)
{
    if (n > INT_MAX) return -EINVAL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        int c = router_pct_next(in, n, &i, false);
        if (c <= 0) return -EINVAL; /* malformed, or a NUL */
        if (o == cap) return -ENOSPC;
        out[o++] = (char)c;
    }
    return (int)o;
}

/* Does the raw segment, percent-decoded, equal the literal? */
static bool literal_equals(const char *raw, size_t rn, const char *lit, size_t ln)
{
    if (rn == ln && memcmp(raw, lit, ln) == 0) return true;
    if (rn < ln || !memchr(raw, '%', rn)) return false;
    size_t j = 0;
    for (size_t i = 0; i < rn; j++) {
        int c = router_pct_next(raw, rn, &i, false);
        if (c < 0 || j >= ln || (unsigned char)lit[j] != c) return false;
    }
    return j == ln;
}

struct seg {
    const char *p;
    size_t len;
};

/* Does ep's pattern match the split path? Fills params when it does. */
static bool path_matches(const struct endpoint_conf *ep, const struct seg *segs, size_t nseg,
                         struct route_param *params)
{
    if (ep->n_segs == 0) /* the pattern "/" split to nothing */
        return nseg == 1 && segs[0].len == 0;
    if (ep->n_segs != nseg || ep->n_params > ROUTE_MAX_PARAMS) return false;
    for (size_t i = 0; i < nseg; i++) {
        const struct route_seg *rs = &ep->segs[i];
        if (rs->literal) {
            if (!literal_equals(segs[i].p, segs[i].len, rs->literal, rs->literal_len)) return false;
        } else {
            if (segs[i].len == 0 || rs->param < 0 || (size_t)rs->param >= ep->n_params)
                return false;
            params[rs->param].p = segs[i].p;
            params[rs->param].len = segs[i].len;
        }
    }
    return true;
}

/* True when a is more specific than b (same segment count, both matched):
 * at the first segment where they differ, a has the literal. */
static bool more_specific(const struct endpoint_conf *a, const struct endpoint_conf *b)
{
    if (a->n_segs != b->n_segs) return false;
    for (size_t i = 0; i < a->n_segs; i++) {
        bool la = a->segs[i].literal != NULL, lb = b->segs[i].literal != NULL;
        if (la != lb) return la;
    }
    return false;
}

/* Adds method to the ", "-separated list unless it is there or would not
 * fit. */
static void allow_add(char *allow, size_t *len, const char *method)
{
    size_t ml = strlen(method);
    for (const char *p = allow; p < allow + *len;) {
        const char *comma = memchr(p, ',', (size_t)(allow + *len - p));
        size_t tl = comma ? (size_t)(comma - p) : (size_t)(allow + *len - p);
        if (tl == ml && memcmp(p, method, ml) == 0) return;
        p = comma ? comma + 2 : allow + *len;
    }
    size_t need = (*len ? 2 : 0) + ml;
    if (*len + need >= ROUTE_ALLOW_MAX) return;
    if (*len) {
        memcpy(allow + *len, ", ", 2);
        *len += 2;
    }
    memcpy(allow + *len, method, ml);
    *len += ml;
    allow[*len] = '\0';
}

int router_match(const struct config *cfg, const char *method, const char *raw_path,
                 size_t path_len, struct route_match *m)
{
    m->ep = NULL;
    m->n_params = 0;
    m->allow[0] = '\0';
    if (path_len == 0 || raw_path[0] != '/') return 404;

    struct seg segs[ROUTE_MAX_SEGS];
    size_t nseg = 0;
    const char *p = raw_path + 1, *end = raw_path + path_len;
    for (;;) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *se = slash ? slash : end;
        if (nseg == ROUTE_MAX_SEGS) return 404;
        segs[nseg].p = p;
        segs[nseg].len = (size_t)(se - p);
        nseg++;
        if (!slash) break;
        p = slash + 1;
    }

    struct route_param params[ROUTE_MAX_PARAMS];
    bool path_seen = false;
    for (size_t i = 0; i < cfg->n_endpoints; i++) {
        const struct endpoint_conf *ep = &cfg->endpoints[i];
        if (!path_matches(ep, segs, nseg, params)) continue;
        path_seen = true;
        if (strcmp(ep->method, method) != 0) continue;
        if (m->ep && !more_specific(ep, m->ep)) continue;
        m->ep = ep;
        m->n_params = ep->n_params;
        memcpy(m->params, params, ep->n_params * sizeof params[0]);
    }
    if (m->ep) return 200;
    if (!path_seen) return 404;

    /* Rare path: list the methods of every endpoint with this path. */
    size_t alen = 0;
    for (size_t i = 0; i < cfg->n_endpoints; i++) {
        const struct endpoint_conf *ep = &cfg->endpoints[i];
        if (path_matches(ep, segs, nseg, params)) allow_add(m->allow, &alen, ep->method);
    }
    return 405;
}
