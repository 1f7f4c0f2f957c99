/*
 * shape: target / allow / deny / rename on raw JSON bytes. See shape.h.
 *
 * One walk writes the result: at each level the paths still active (a
 * bit mask over the allow or deny list) are compared with the members'
 * names (or the elements' indices); a path that ends on a member decides
 * it (kept whole / dropped), a path that goes on makes the walk descend
 * into that member, and everything else is copied (deny) or left out
 * (allow). rename is applied as the top level is written.
 */
#include "gateway/shape.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "gateway/jpath.h"
#include "gateway/json.h"

struct walk {
    const struct shape_conf *sh;
    const char *const *paths; /* allow or deny list; NULL: keep everything */
    size_t n;
    bool allow;
};

/* Segment number depth of path: sets *seg, *n; *last when it is the final
 * one. False when the path is shorter. */
static bool seg_at(const char *path, size_t depth, const char **seg, size_t *n, bool *last)
{
    const char *p = path;
    for (size_t d = 0; d < depth; d++) {
        p = strchr(p, '.');
        if (!p) return false;
        p++;
    }
    const char *dot = strchr(p, '.');
    *seg = p;
    *n = dot ? (size_t)(dot - p) : strlen(p);
    *last = dot == NULL;
    return true;
}

static int put_name(buf_t *out, const struct walk *w, size_t depth, const struct json_member *m)
{
    if (depth == 0 && w->sh->n_rename) {
        for (size_t i = 0; i < w->sh->n_rename; i++) {
            const char *from = w->sh->rename_from[i];
            size_t fl = strlen(from);
            struct json_member cmp = *m;
            if (!jpath_seg_matches(from, fl, &cmp, false, 0)) continue;
            const char *to = w->sh->rename_to[i];
            int rc = json_buf_string(out, to, strlen(to));
            return rc ? rc : buf_putc(out, ':');
        }
    }
    int rc = buf_putc(out, '"');
    if (!rc) rc = buf_append(out, m->name, m->name_len);
    if (!rc) rc = buf_append(out, "\":", 2);
    return rc;
}

static bool is_container(const char *v, size_t n)
{
    return n && (v[0] == '{' || v[0] == '[');
}

static int walk(buf_t *out, const struct walk *w, const char *v, size_t vn, size_t depth,
                uint64_t active)
{
    struct jpath_iter it;
    if (!jpath_iter_start(&it, v, vn)) return buf_append(out, v, vn);
    int rc = buf_putc(out, it.array ? '[' : '{');
    bool first = true;
    struct json_member m;
    int more;
    while (!rc && (more = jpath_iter_next(&it, &m)) > 0) {
        size_t idx = it.index - 1;
        uint64_t end = 0, deeper = 0;
        for (size_t k = 0; k < w->n; k++) {
            if (!(active >> k & 1)) continue;
            const char *seg;
            size_t sn;
            bool last;
            if (seg_at(w->paths[k], depth, &seg, &sn, &last) &&
                jpath_seg_matches(seg, sn, &m, it.array, idx))
                *(last ? &end : &deeper) |= (uint64_t)1 << k;
        }
        bool descend = !end && deeper && is_container(m.value, m.value_len);
        bool keep = w->paths == NULL || (w->allow ? (end || descend) : (!end));
        if (!keep) continue;
        if (!first) rc = buf_putc(out, ',');
        first = false;
        if (!rc && !it.array) rc = put_name(out, w, depth, &m);
        if (rc) break;
        if (descend)
            rc = walk(out, w, m.value, m.value_len, depth + 1, deeper);
        else
            rc = buf_append(out, m.value, m.value_len);
    }
    if (!rc && more < 0) rc = -EINVAL;
    if (!rc) rc = buf_putc(out, it.array ? ']' : '}');
    return rc;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

int shape_apply(buf_t *out, const struct shape_conf *sh, const char *body, size_t len,
                const char **why)
{
    const char *v = body;
    size_t vn = len;
    while (vn && is_ws(v[0]))
        v++, vn--;
    while (vn && is_ws(v[vn - 1]))
        vn--;
    if (sh->target) {
        const char *t;
        size_t tn;
        if (!vn || jpath_get(v, vn, sh->target, strlen(sh->target), &t, &tn) == JSON_INVALID) {
            if (why) *why = "missing target";
            return -EINVAL;
        }
        v = t;
        vn = tn;
    }
    if (!vn) return buf_append(out, "null", 4);
    struct walk w = {.sh = sh};
    if (sh->allow) {
        w.paths = sh->allow;
        w.n = sh->n_allow;
        w.allow = true;
    } else if (sh->deny) {
        w.paths = sh->deny;
        w.n = sh->n_deny;
    }
    if (w.n > SHAPE_MAX_PATHS) w.n = SHAPE_MAX_PATHS;
    if (!w.paths && !(sh->n_rename && v[0] == '{')) return buf_append(out, v, vn);
    size_t saved = out->len;
    uint64_t all = w.n == 64 ? UINT64_MAX : (((uint64_t)1 << w.n) - 1);
    int rc = walk(out, &w, v, vn, 0, all);
    if (rc) {
        out->len = saved;
        if (out->data) out->data[saved] = '\0';
        if (why && rc == -EINVAL) *why = "invalid JSON";
    }
    return rc;
}
