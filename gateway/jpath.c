/*
 * jpath: dot-path lookups and a skipping iterator over validated JSON.
 * See jpath.h. Every step is bounded by the end pointer; skipping a nested
 * value counts brackets without recursion.
 */
#include "gateway/jpath.h"

#include <errno.h>
#include <string.h>

static bool is_ws(char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static const char *skip_ws(const char *p, const char *e)
{
    while (p < e && is_ws(*p))
        p++;
    return p;
}

/* p at the opening quote; returns past the closing one, NULL at the end. */
static const char *skip_string(const char *p, const char *e)
{
    for (p++; p < e; p++) {
        if (*p == '"') return p + 1;
        if (*p == '\\' && ++p == e) break;
    }
    return NULL;
}

static const char *skip_value(const char *p, const char *e)
{
    if (p >= e) return NULL;
    if (*p == '"') return skip_string(p, e);
    if (*p != '{' && *p != '[') {
        const char *s = p;
        while (p < e && *p != ',' && *p != '}' && *p != ']' && !is_ws(*p))
            p++;
        return p > s ? p : NULL;
    }
    size_t depth = 0;
    while (p < e) {
        char c = *p;
        if (c == '"') {
            if (!(p = skip_string(p, e))) return NULL;
            continue;
        }
        if (c == '{' || c == '[')
            depth++;
        else if ((c == '}' || c == ']') && --depth == 0)
            return p + 1;
        p++;
    }
    return NULL;
}

bool jpath_valid(const char *path, size_t n)
{
    if (n == 0 || path[0] == '.' || path[n - 1] == '.') return false;
    for (size_t i = 1; i < n; i++)
        if (path[i] == '.' && path[i - 1] == '.') return false;
    return memchr(path, '\0', n) == NULL;
}

enum json_type jpath_type(const char *v, size_t vlen)
{
    if (vlen == 0) return JSON_INVALID;
    switch (v[0]) {
    case '{':
        return JSON_OBJECT;
    case '[':
        return JSON_ARRAY;
    case '"':
        return JSON_STRING;
    case 't':
        return JSON_TRUE;
    case 'f':
        return JSON_FALSE;
    case 'n':
        return JSON_NULL;
    default:
        return (v[0] == '-' || (v[0] >= '0' && v[0] <= '9')) ? JSON_NUMBER : JSON_INVALID;
    }
}

bool jpath_iter_start(struct jpath_iter *it, const char *v, size_t vlen)
{
    if (vlen < 2 || (v[0] != '{' && v[0] != '[')) return false;
    it->array = v[0] == '[';
    it->p = v + 1;
    it->e = v + vlen;
    it->index = 0;
    return true;
}

int jpath_iter_next(struct jpath_iter *it, struct json_member *m)
{
    const char *p = skip_ws(it->p, it->e), *e = it->e;
    char close = it->array ? ']' : '}';
    if (p < e && *p == close) return 0;
    if (p >= e) return -EINVAL;
    m->name = NULL;
    m->name_len = 0;
    if (!it->array) {
        if (*p != '"') return -EINVAL;
        const char *ne = skip_string(p, e);
        if (!ne) return -EINVAL;
        m->name = p + 1;
        m->name_len = (size_t)(ne - 1 - m->name);
        p = skip_ws(ne, e);
        if (p >= e || *p != ':') return -EINVAL;
        p = skip_ws(p + 1, e);
    }
    const char *ve = skip_value(p, e);
    if (!ve) return -EINVAL;
    m->value = p;
    m->value_len = (size_t)(ve - p);
    p = skip_ws(ve, e);
    if (p < e && *p == ',')
        p++;
    else if (p >= e || *p != close)
        return -EINVAL;
    it->p = p;
    it->index++;
    return 1;
}

/* An array index segment: digits, no leading zero. */
static bool seg_index(const char *seg, size_t n, size_t *out)
{
    if (n == 0 || n > 18 || (n > 1 && seg[0] == '0')) return false;
    size_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (seg[i] < '0' || seg[i] > '9') return false;
        v = v * 10 + (size_t)(seg[i] - '0');
    }
    *out = v;
    return true;
}

bool jpath_seg_matches(const char *seg, size_t n, const struct json_member *m, bool in_array,
                       size_t index)
{
    if (in_array) {
        size_t want;
        return seg_index(seg, n, &want) && want == index;
    }
    if (m->name_len == n && memcmp(m->name, seg, n) == 0) return true; /* no escapes: fast */
    return memchr(m->name, '\\', m->name_len) && json_string_equals(m->name, m->name_len, seg, n);
}

enum json_type jpath_get(const char *doc, size_t n, const char *path, size_t plen, const char **v,
                         size_t *vlen)
{
    const char *p = skip_ws(doc, doc + n), *e = doc + n;
    while (e > p && is_ws(e[-1]))
        e--;
    const char *cur = p;
    size_t cur_len = (size_t)(e - p);
    size_t i = 0;
    while (i < plen) {
        const char *seg = path + i;
        const char *dot = memchr(seg, '.', plen - i);
        size_t sn = dot ? (size_t)(dot - seg) : plen - i;
        i += sn + (dot ? 1 : 0);
        struct jpath_iter it;
        if (!jpath_iter_start(&it, cur, cur_len)) return JSON_INVALID;
        struct json_member m;
        int rc;
        size_t idx = 0;
        while ((rc = jpath_iter_next(&it, &m)) > 0) {
            if (jpath_seg_matches(seg, sn, &m, it.array, idx)) break;
            idx++;
        }
        if (rc <= 0) return JSON_INVALID;
        cur = m.value;
        cur_len = m.value_len;
        if (dot && i == plen) return JSON_INVALID; /* trailing '.' */
    }
    enum json_type t = jpath_type(cur, cur_len);
    if (t != JSON_INVALID) {
        *v = cur;
        *vlen = cur_len;
    }
    return t;
}
