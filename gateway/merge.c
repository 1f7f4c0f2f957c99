#include "gateway/merge.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "gateway/json.h"

static bool is_ws(char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* A ',' before every member but the first. */
static int sep(buf_t *out, bool *first)
{
    if (*first) {
        *first = false;
        return 0;
    }
    return buf_putc(out, ',');
}

static int put_key(buf_t *out, const char *key)
{
    size_t n = strlen(key);
    if (n > (SIZE_MAX / 2 - out->len) / 6 - 2) return -ENOMEM;
    if (buf_reserve(out, 6 * n + 3)) return -ENOMEM;
    out->len += json_escape_string(out->data + out->len, key, n);
    out->data[out->len++] = ':';
    out->data[out->len] = '\0';
    return 0;
}

static bool allowed(const struct backend_conf *b, const struct json_member *m)
{
    for (size_t i = 0; i < b->n_allow; i++)
        if (json_string_equals(m->name, m->name_len, b->allow[i], strlen(b->allow[i]))) return true;
    return false;
}

/* Appends the allowed members of the object body, raw, each preceded by a
 * separator as *first says. */
static int filter_members(buf_t *out, const struct backend_conf *b, const char *body, size_t len,
                          bool *first)
{
    struct json_iter it;
    struct json_member m;
    if (!json_iter_object(&it, body, len)) return -EINVAL;
    while (json_iter_next(&it, &m)) {
        if (!allowed(b, &m)) continue;
        int rc = sep(out, first);
        if (!rc) rc = buf_putc(out, '"');
        if (!rc) rc = buf_append(out, m.name, m.name_len);
        if (!rc) rc = buf_append(out, "\":", 2);
        if (!rc) rc = buf_append(out, m.value, m.value_len);
        if (rc) return rc;
    }
    return 0;
}

static int add_part(buf_t *out, const struct merge_part *p, bool *first)
{
    const struct backend_conf *b = p->b;
    const char *body = p->body;
    size_t len = p->len;
    while (len && is_ws(body[0]))
        body++, len--;
    while (len && is_ws(body[len - 1]))
        len--;
    bool null = p->kind == MERGE_PART_NULL || len == 0;
    int rc;

    if (b->key) {
        rc = sep(out, first);
        if (!rc) rc = put_key(out, b->key);
        if (rc) return rc;
        if (null) return buf_append(out, "null", 4);
        if (!b->allow) return buf_append(out, body, len);
        bool inner_first = true;
        rc = buf_putc(out, '{');
        if (!rc) rc = filter_members(out, b, body, len, &inner_first);
        if (!rc) rc = buf_putc(out, '}');
        return rc;
    }

    if (null) return 0;
    if (b->allow) return filter_members(out, b, body, len, first);
    const char *members;
    size_t mlen;
    if (!json_object_members(body, len, &members, &mlen)) return -EINVAL;
    if (mlen == 0) return 0;
    rc = sep(out, first);
    if (!rc) rc = buf_append(out, members, mlen);
    return rc;
}

int merge_build(buf_t *out, const struct merge_part *parts, size_t n)
{
    size_t saved = out->len;
    bool first = true;
    int rc = buf_putc(out, '{');
    for (size_t i = 0; i < n && !rc; i++)
        if (parts[i].kind != MERGE_PART_OMIT) rc = add_part(out, &parts[i], &first);
    if (!rc) rc = buf_putc(out, '}');
    if (rc) {
        out->len = saved;
        if (out->data) out->data[saved] = '\0';
    }
    return rc;
}

int merge_check(const struct backend_conf *b, const char *body, size_t len, const char **why)
{
    if (len == 0) return 0;
    enum json_type t = json_check(body, len);
    const char *reason = NULL;
    if (t == JSON_INVALID)
        reason = "invalid JSON";
    else if ((!b->key || b->allow) && t != JSON_OBJECT)
        reason = "not an object";
    if (!reason) return 0;
    if (why) *why = reason;
    return -1;
}
