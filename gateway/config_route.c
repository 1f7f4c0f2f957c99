/*
 * config_route: route patterns ("path" of an endpoint) and backend URL
 * templates ("url"), the two strings with {placeholders} in them (see
 * config_route.h). Internal to the loader. A route becomes ep->segs and
 * ep->params; a URL becomes be->parts, literal parts pointing into the
 * arena copy of the template, placeholders naming a route param by index
 * or a field that graph_resolve binds once all backends are parsed.
 */
#include "gateway/config_route.h"

#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include "gateway/jpath.h"
#include "gateway/router.h"
#include "gateway/upstream.h"
#include "gateway/urlbuild.h"

/* ---- lexical checks ---- */

/* RFC 3986 pchar minus '%': route literals are matched against the raw
 * path, so an encoded form here could never match what clients send. */
static bool is_route_char(int c)
{
    return isalnum(c) || (c && strchr("-._~!$&'()*+,;=:@", c));
}

static bool is_ident(const char *s, size_t n)
{
    if (!n || !(isalpha((unsigned char)s[0]) || s[0] == '_')) return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_')) return false;
    return true;
}

bool cfg_parse_port(const char *s, size_t n, uint16_t *port)
{
    if (!n || n > 5) return false;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < 1 || v > 65535) return false;
    *port = (uint16_t)v;
    return true;
}

/* ---- routes and URL templates ---- */

static int param_index(const struct endpoint_conf *ep, const char *name, size_t n)
{
    for (size_t i = 0; i < ep->n_params; i++)
        if (strlen(ep->params[i]) == n && memcmp(ep->params[i], name, n) == 0) return (int)i;
    return -1;
}

/* The segment seg[0..len) = "{name}" of route s into rs and ep->params. */
static bool route_param(struct loader *L, const char *path, const char *s, const char *seg,
                        size_t len, struct endpoint_conf *ep, struct route_seg *rs)
{
    if (!is_ident(seg + 1, len - 2)) {
        cfg_err(L, path,
                "bad parameter \"%.*s\" in \"%s\" (expected {name}, name a letter or "
                "'_' then letters, digits or '_')",
                (int)len, seg, s);
        return false;
    }
    if (param_index(ep, seg + 1, len - 2) >= 0) {
        cfg_err(L, path, "duplicate parameter {%.*s} in \"%s\"", (int)len - 2, seg + 1, s);
        return false;
    }
    if (ep->n_params == ROUTE_MAX_PARAMS) {
        cfg_err(L, path, "more than %d parameters in \"%s\"", ROUTE_MAX_PARAMS, s);
        return false;
    }
    rs->literal = NULL;
    rs->param = (int)ep->n_params;
    ep->params[ep->n_params++] = cfg_strndup(L, seg + 1, len - 2);
    return true;
}

/* The literal segment seg[0..len) of route s into rs. */
static bool route_literal(struct loader *L, const char *path, const char *s, const char *seg,
                          size_t len, struct route_seg *rs)
{
    for (size_t i = 0; i < len; i++) {
        if (seg[i] == '{' || seg[i] == '}') {
            cfg_err(L, path, "a parameter must be a whole segment, as in /a/{id}, in \"%s\"", s);
            return false;
        }
        if (!is_route_char((unsigned char)seg[i])) {
            cfg_err(L, path, "character '%c' (0x%02x) not allowed in \"%s\"",
                    isprint((unsigned char)seg[i]) ? seg[i] : '?', (unsigned char)seg[i], s);
            return false;
        }
    }
    rs->literal = cfg_strndup(L, seg, len);
    rs->literal_len = len;
    rs->param = -1;
    return true;
}

/* Splits the route pattern into ep->segs and ep->params. Reports the first
 * problem only: later ones in the same path are usually consequences. */
bool cfg_parse_route(struct loader *L, const char *path, const char *s, struct endpoint_conf *ep)
{
    if (s[0] != '/') {
        cfg_err(L, path, "must start with '/', got \"%s\"", s);
        return false;
    }
    if (strcmp(s, "/healthz") == 0 || strcmp(s, "/readyz") == 0 || strcmp(s, "/metrics") == 0) {
        cfg_err(L, path, "%s is a built-in path", s);
        return false;
    }
    if (strcmp(s, "/") == 0) return true;
    size_t n = 0;
    for (const char *c = s; *c; c++)
        n += *c == '/';
    if (n > ROUTE_MAX_SEGS) {
        cfg_err(L, path, "more than %d segments in \"%s\"", ROUTE_MAX_SEGS, s);
        return false;
    }
    ep->segs = cfg_alloc(L, n * sizeof(*ep->segs));
    ep->params = cfg_alloc(L, n * sizeof(*ep->params));
    const char *seg = s + 1;
    for (;;) {
        const char *end = strchrnul(seg, '/');
        size_t len = (size_t)(end - seg);
        struct route_seg *rs = &ep->segs[ep->n_segs];
        if (len == 0) {
            cfg_err(L, path, "empty segment in \"%s\" (no \"//\" and no trailing '/')", s);
            return false;
        }
        bool ok = seg[0] == '{' && seg[len - 1] == '}' ? route_param(L, path, s, seg, len, ep, rs)
                                                       : route_literal(L, path, s, seg, len, rs);
        if (!ok) return false;
        ep->n_segs++;
        if (!*end) return true;
        seg = end + 1;
    }
}

/* Checks host[:port] of a backend URL. */
static bool valid_authority(const char *a, size_t n)
{
    size_t host_end;
    if (n && a[0] == '[') {
        const char *rb = memchr(a, ']', n);
        if (!rb || rb - a < 2) return false;
        for (const char *c = a + 1; c < rb; c++)
            if (!isxdigit((unsigned char)*c) && *c != ':' && *c != '.') return false;
        host_end = (size_t)(rb - a) + 1;
    } else {
        host_end = 0;
        while (host_end < n && a[host_end] != ':') {
            char c = a[host_end++];
            if (!isalnum((unsigned char)c) && c != '-' && c != '.' && c != '_') return false;
        }
        if (host_end == 0) return false;
    }
    if (host_end == n) return true;
    uint16_t port;
    return a[host_end] == ':' && cfg_parse_port(a + host_end + 1, n - host_end - 1, &port);
}

/* {item}, {item.x} or a dotted {backend.path} with a well-formed path:
 * not a route param (those are plain identifiers other than "item"). */
static bool placeholder_field(const char *name, size_t n)
{
    if (n == 4 && memcmp(name, "item", 4) == 0) return true;
    return memchr(name, '.', n) && jpath_valid(name, n);
}

/* The lengths the transports take (upstream.h, urlbuild.h): an origin u[0..
 * p) of at most UPSTREAM_ORIGIN_MAX bytes, and a path (p up to the query)
 * under URLBUILD_PATH_MAX bytes even with every placeholder empty, else
 * every call would fail ("bad URL") or be the client's 414. */
static bool url_lengths_ok(struct loader *L, const char *path, const char *u, const char *p)
{
    size_t olen = (size_t)(p - u), plen = 0;
    if (olen > UPSTREAM_ORIGIN_MAX) {
        cfg_err(L, path, "the origin (scheme://host:port) is %zu bytes, at most %d", olen,
                UPSTREAM_ORIGIN_MAX);
        return false;
    }
    for (; *p && *p != '?'; p++) {
        const char *close = *p == '{' ? strchr(p, '}') : NULL;
        if (close)
            p = close;
        else
            plen++;
    }
    if (plen >= URLBUILD_PATH_MAX) {
        cfg_err(L, path, "the path is %zu bytes without its placeholders, at most %d", plen,
                URLBUILD_PATH_MAX - 1);
        return false;
    }
    return true;
}

/* The origin part of a backend URL template u: no whitespace, control
 * characters or fragment anywhere, http:// or https://, a valid host and
 * port without placeholders, then a '/'. Returns where the path starts, or
 * NULL after reporting what is wrong. */
static const char *url_origin(struct loader *L, const char *path, const char *u)
{
    for (const char *c = u; *c; c++) {
        if ((unsigned char)*c <= 0x20 || *c == 0x7f) {
            cfg_err(L, path, "must not contain whitespace or control characters");
            return NULL;
        }
        if (*c == '#') {
            cfg_err(L, path, "must not contain a fragment ('#')");
            return NULL;
        }
    }
    const char *a;
    if (strncmp(u, "http://", 7) == 0)
        a = u + 7;
    else if (strncmp(u, "https://", 8) == 0)
        a = u + 8;
    else {
        cfg_err(L, path, "must start with http:// or https://, got \"%s\"", u);
        return NULL;
    }
    size_t alen = strcspn(a, "/?");
    if (memchr(a, '{', alen) || memchr(a, '}', alen)) {
        cfg_err(L, path, "placeholders are only allowed in the path and query of \"%s\"", u);
        return NULL;
    }
    if (!valid_authority(a, alen)) {
        cfg_err(L, path, "bad host or port in \"%s\"", u);
        return NULL;
    }
    if (a[alen] != '/') {
        cfg_err(L, path, "needs a path starting with '/' after the host in \"%s\"", u);
        return NULL;
    }
    return a + alen;
}

/* Appends the literal part lit[0..end) to be->parts (nothing when empty). */
static void add_literal(struct backend_conf *be, const char *lit, const char *end)
{
    if (end <= lit) return;
    be->parts[be->n_parts].literal = lit;
    be->parts[be->n_parts].literal_len = (size_t)(end - lit);
    be->parts[be->n_parts].backend = -1;
    be->parts[be->n_parts++].param = -1;
}

/* Appends the placeholder {name[0..nlen)} to be->parts: a route param, or a
 * field resolved later by graph_resolve ({backend.path}, {item...}). */
static void add_placeholder(struct loader *L, const char *path, const char *name, size_t nlen,
                            const struct endpoint_conf *ep, bool route_ok, struct backend_conf *be)
{
    int idx = -1;
    const char *field = NULL;
    if (placeholder_field(name, nlen)) {
        /* {backend.path} or {item...}: resolved by graph_resolve */
        if (!is_ident(name, nlen) || !route_ok || param_index(ep, name, nlen) < 0)
            field = cfg_strndup(L, name, nlen);
        else
            idx = param_index(ep, name, nlen);
    } else if (!is_ident(name, nlen)) {
        cfg_err(L, path,
                "bad placeholder {%.*s} (expected {param}, {backend.field} or {item.field})",
                (int)nlen, name);
    } else if (route_ok && (idx = param_index(ep, name, nlen)) < 0) {
        cfg_err(L, path, "{%.*s} is not a parameter of %s", (int)nlen, name, ep->path);
    }
    be->parts[be->n_parts].literal = NULL;
    be->parts[be->n_parts].backend = -1;
    be->parts[be->n_parts].field = field;
    be->parts[be->n_parts++].param = idx;
}

/* Validates a backend URL template and splits it into be->parts. Placeholder
 * names are checked against the endpoint's params only when its route was
 * valid (route_ok), so one bad path does not cascade. */
void cfg_parse_url(struct loader *L, const char *path, const char *u,
                   const struct endpoint_conf *ep, bool route_ok, struct backend_conf *be)
{
    const char *c = url_origin(L, path, u);
    if (!c || !url_lengths_ok(L, path, u, c)) return;
    /* at most one param part and one literal part per '{', plus a tail */
    size_t n_open = 0;
    for (const char *k = u; *k; k++)
        n_open += *k == '{';
    be->parts = cfg_alloc(L, (2 * n_open + 1) * sizeof(*be->parts));
    const char *lit = u;
    while (*c) {
        if (*c == '}') {
            cfg_err(L, path, "unbalanced '}' in \"%s\"", u);
            return;
        }
        if (*c != '{') {
            c++;
            continue;
        }
        const char *close = strchr(c, '}');
        const char *reopen = strchr(c + 1, '{');
        if (!close || (reopen && reopen < close)) {
            cfg_err(L, path, "unbalanced '{' in \"%s\"", u);
            return;
        }
        add_literal(be, lit, c);
        add_placeholder(L, path, c + 1, (size_t)(close - c - 1), ep, route_ok, be);
        c = lit = close + 1;
    }
    add_literal(be, lit, c);
}
