/*
 * urlbuild: a backend call's URL from its template, the route params and
 * the client's query (urlbuild.h): decode once, re-encode as one segment,
 * forward the configured query names. Allocates only the output's growth.
 */
#include "gateway/urlbuild.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static const char HEX[] = "0123456789ABCDEF";

/* RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~". */
static const uint8_t unreserved[256] = {
    ['-'] = 1,         ['.'] = 1,         ['_'] = 1,         ['~'] = 1,
    ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
};

/*
 * Decodes in[0..n) once (with '+' as a space when form is set) and appends it
 * strictly encoded. Decoding and encoding happen in one pass straight into the
 * buffer, which is reserved for the worst case (3 bytes out per byte in) up
 * front. Returns 0, -EILSEQ (malformed escape, NUL) or -ENOMEM.
 */
static int recode(buf_t *out, const char *in, size_t n, bool form)
{
    if (n > (SIZE_MAX / 2 - out->len) / 3) return -ENOMEM;
    if (buf_reserve(out, 3 * n)) return -ENOMEM;
    char *o = out->data + out->len;
    for (size_t i = 0; i < n;) {
        int c = router_pct_next(in, n, &i, form);
        if (c <= 0) return -EILSEQ; /* malformed, or a NUL */
        if (unreserved[c]) {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = HEX[c >> 4];
            *o++ = HEX[c & 15];
        }
    }
    size_t start = out->len;
    out->len = (size_t)(o - out->data);
    /* "." and ".." are the only encodings that could still move the path. */
    size_t w = out->len - start;
    if ((w == 1 || w == 2) && memcmp(out->data + start, "..", w) == 0) {
        out->len = start;
        for (size_t k = 0; k < w; k++) {
            memcpy(out->data + out->len, "%2E", 3);
            out->len += 3;
        }
    }
    out->data[out->len] = '\0';
    return 0;
}

int urlbuild_encode(buf_t *out, const char *s, size_t n)
{
    if (n > (SIZE_MAX / 2 - out->len) / 3) return -ENOMEM;
    if (buf_reserve(out, 3 * n)) return -ENOMEM;
    char *o = out->data + out->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved[c]) {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = HEX[c >> 4];
            *o++ = HEX[c & 15];
        }
    }
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
    return 0;
}

/* Length of the "scheme://authority" prefix of the template's first part, or
 * -EINVAL when there is none or a param interrupts it. */
static int origin_len(const struct backend_conf *b)
{
    if (b->n_parts == 0 || !b->parts[0].literal) return -EINVAL;
    const char *p = b->parts[0].literal;
    size_t n = b->parts[0].literal_len;
    const char *sep = memmem(p, n, "://", 3);
    if (!sep || sep == p) return -EINVAL;
    size_t i = (size_t)(sep - p) + 3;
    while (i < n && p[i] != '/' && p[i] != '?' && p[i] != '#')
        i++;
    if (i == n && b->n_parts > 1) return -EINVAL; /* a param inside the authority */
    if (i == (size_t)(sep - p) + 3 || i > INT32_MAX) return -EINVAL; /* no host */
    return (int)i;
}

int urlbuild_origin(const struct backend_conf *b, char *out, size_t cap)
{
    int n = origin_len(b);
    if (n < 0) return n;
    if ((size_t)n >= cap) return -ENOSPC;
    memcpy(out, b->parts[0].literal, (size_t)n);
    out[n] = '\0';
    return n;
}

/* Does the decoded query name raw[0..n) (form semantics) equal name? A
 * malformed name equals nothing. */
static bool qname_equals(const char *raw, size_t n, const char *name, size_t nl)
{
    size_t j = 0;
    for (size_t i = 0; i < n; j++) {
        int c = router_pct_next(raw, n, &i, true);
        if (c < 0 || j >= nl || (unsigned char)name[j] != c) return false;
    }
    return j == nl;
}

/* Appends "?name=value" / "&name=value" for the first occurrence of name in
 * the raw query, if any. */
static int forward_one(buf_t *out, const char *name, const char *q, size_t qn, bool *has_query)
{
    size_t nl = strlen(name);
    const char *p = q, *end = q + qn;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *ke = eq ? eq : pe;
        if (qname_equals(p, (size_t)(ke - p), name, nl)) {
            char last = out->len ? out->data[out->len - 1] : '\0';
            int rc = 0;
            if (!*has_query)
                rc = buf_putc(out, '?');
            else if (last != '?' && last != '&')
                rc = buf_putc(out, '&');
            *has_query = true;
            if (!rc) rc = urlbuild_encode(out, name, nl);
            if (!rc) rc = buf_putc(out, '=');
            if (!rc && eq) rc = recode(out, eq + 1, (size_t)(pe - eq - 1), true);
            return rc;
        }
        p = pe + 1;
    }
    return 0;
}

/* Length of the path written since start, up to its '?' if any. */
static size_t path_len(const buf_t *out, size_t start)
{
    const char *p = out->data + start;
    const char *q = memchr(p, '?', out->len - start);
    return q ? (size_t)(q - p) : out->len - start;
}

static int build_path(buf_t *out, size_t skip, const struct endpoint_conf *ep,
                      const struct backend_conf *b, const struct route_match *m,
                      const char *raw_query, size_t query_len, urlbuild_field_fn field,
                      void *arg)
{
    size_t start = out->len;
    bool has_query = false, in_query = false;
    int rc = 0;
    for (size_t i = 0; i < b->n_parts && !rc; i++) {
        const struct url_part *part = &b->parts[i];
        if (part->literal) {
            const char *p = part->literal + (i == 0 ? skip : 0);
            size_t n = part->literal_len - (i == 0 ? skip : 0);
            if (i == 0 && (n == 0 || p[0] != '/'))
                rc = buf_putc(out, '/'); /* "http://h" or "http://h?x" */
            if (!rc) rc = buf_append(out, p, n);
            if (memchr(p, '?', n)) has_query = in_query = true;
        } else if (part->field) {
            if (field) rc = field(arg, out, part); /* no renderer: left empty (checks) */
        } else {
            if (part->param < 0 || (size_t)part->param >= m->n_params) return -EINVAL;
            const struct route_param *rp = &m->params[part->param];
            if (rp->len > URLBUILD_PARAM_MAX) return -E2BIG;
            /* In the template's query a param is a value: form semantics. */
            rc = recode(out, rp->p, rp->len, in_query);
        }
    }
    if (!rc && path_len(out, start) >= URLBUILD_PATH_MAX) rc = -ENAMETOOLONG;
    for (size_t i = 0; i < ep->n_forward_query && query_len && !rc; i++)
        rc = forward_one(out, ep->forward_query[i], raw_query, query_len, &has_query);
    return rc;
}

int urlbuild_path(buf_t *out, const struct endpoint_conf *ep, const struct backend_conf *b,
                  const struct route_match *m, const char *raw_query, size_t query_len)
{
    return urlbuild_path_fields(out, ep, b, m, raw_query, query_len, NULL, NULL);
}

int urlbuild_path_fields(buf_t *out, const struct endpoint_conf *ep, const struct backend_conf *b,
                         const struct route_match *m, const char *raw_query, size_t query_len,
                         urlbuild_field_fn field, void *arg)
{
    int olen = origin_len(b);
    if (olen < 0) return olen;
    size_t saved = out->len;
    int rc = build_path(out, (size_t)olen, ep, b, m, raw_query, query_len, field, arg);
    if (rc) {
        out->len = saved;
        if (out->data) out->data[saved] = '\0';
    }
    return rc;
}

int urlbuild(buf_t *out, const struct endpoint_conf *ep, const struct backend_conf *b,
             const struct route_match *m, const char *raw_query, size_t query_len)
{
    int olen = origin_len(b);
    if (olen < 0) return olen;
    size_t saved = out->len;
    int rc = buf_append(out, b->parts[0].literal, (size_t)olen);
    if (!rc) rc = build_path(out, (size_t)olen, ep, b, m, raw_query, query_len, NULL, NULL);
    if (rc) {
        out->len = saved;
        if (out->data) out->data[saved] = '\0';
    }
    return rc;
}
