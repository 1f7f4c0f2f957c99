/*
 * graph: dependency resolution and cycle checks at config time, placeholder
 * rendering and the ready queue at run time. See graph.h.
 */
#include "gateway/graph.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/config_load.h"
#include "gateway/jpath.h"
#include "gateway/json.h"
#include "gateway/urlbuild.h"

/* ---- config time ---- */

/* The backend whose name followed by '.' starts s (the longest such name),
 * or -1. */
static int backend_prefix(const struct endpoint_conf *ep, const char *s)
{
    int best = -1;
    size_t best_len = 0;
    for (size_t i = 0; i < ep->n_backends; i++) {
        const char *n = ep->backends[i].name;
        size_t nl = n ? strlen(n) : 0;
        if (nl && nl > best_len && strncmp(s, n, nl) == 0 && s[nl] == '.') {
            best = (int)i;
            best_len = nl;
        }
    }
    return best;
}

static void add_dep(struct loader *L, struct backend_conf *b, int d, size_t n_max)
{
    for (size_t i = 0; i < b->n_deps; i++)
        if (b->deps[i] == d) return;
    if (!b->deps) b->deps = cfg_alloc(L, n_max * sizeof *b->deps);
    b->deps[b->n_deps++] = d;
}

static bool is_item(const char *f)
{
    return strncmp(f, "item", 4) == 0 && (f[4] == '\0' || f[4] == '.');
}

/* One backend's placeholders and foreach source. */
static void resolve_backend(struct loader *L, struct endpoint_conf *ep, size_t i, const char *bpath)
{
    struct backend_conf *b = &ep->backends[i];
    char p[PATH_MAX_LEN];
    cfg_key_path(p, bpath, "url");
    for (size_t k = 0; k < b->n_parts; k++) {
        struct url_part *part = &b->parts[k];
        if (!part->field) continue;
        if (is_item(part->field)) {
            part->backend = URL_PART_ITEM;
            part->field_off = part->field[4] ? 5 : 4;
            if (!b->foreach_path)
                cfg_err(L, p, "{%s} is only allowed in a backend with \"foreach\"", part->field);
            continue;
        }
        int d = backend_prefix(ep, part->field);
        if (d < 0) {
            size_t nl = strcspn(part->field, ".");
            cfg_err(L, p, "{%s} names no backend (\"%.*s\" is not a backend of this endpoint)",
                    part->field, (int)nl, part->field);
            continue;
        }
        part->backend = d;
        part->field_off = strlen(ep->backends[d].name) + 1;
        if ((size_t)d == i)
            cfg_err(L, p, "{%s}: backend %s refers to itself", part->field, b->name);
        else
            add_dep(L, b, d, ep->n_backends);
    }
    if (!b->foreach_path) return;
    cfg_key_path(p, bpath, "foreach");
    const char *f = b->foreach_path;
    if (!jpath_valid(f, strlen(f))) return; /* reported by config_endpoint.c */
    int d = -1;
    for (size_t j = 0; j < ep->n_backends; j++) /* "orders" alone: the body is the array */
        if (ep->backends[j].name && strcmp(ep->backends[j].name, f) == 0) d = (int)j;
    size_t off = d >= 0 ? strlen(f) : 0;
    if (d < 0 && (d = backend_prefix(ep, f)) >= 0) off = strlen(ep->backends[d].name) + 1;
    if (d < 0) {
        size_t nl = strcspn(f, ".");
        cfg_err(L, p, "\"%s\" names no backend (\"%.*s\" is not a backend of this endpoint)", f,
                (int)nl, f);
        return;
    }
    if ((size_t)d == i) {
        cfg_err(L, p, "\"%s\": backend %s refers to itself", f, b->name);
        return;
    }
    b->foreach_backend = d;
    b->foreach_path = f + off;
    add_dep(L, b, d, ep->n_backends);
}

/* Does b read d through a URL placeholder (else through foreach)? */
static bool dep_in_url(const struct backend_conf *b, int d)
{
    for (size_t k = 0; k < b->n_parts; k++)
        if (b->parts[k].field && b->parts[k].backend == d) return true;
    return false;
}

enum { WHITE, GRAY, BLACK };

/* Depth-first search from v; reports the first cycle met (once). Iterative
 * with explicit stacks: an endpoint may have many backends. */
static void find_cycle(struct loader *L, const struct endpoint_conf *ep, const char *path,
                       size_t root, unsigned char *color, size_t *stack, size_t *next)
{
    size_t top = 0;
    stack[top] = root;
    next[top] = 0;
    color[root] = GRAY;
    while (1) {
        size_t v = stack[top];
        const struct backend_conf *b = &ep->backends[v];
        if (next[top] == b->n_deps) {
            color[v] = BLACK;
            if (top == 0) return;
            top--;
            continue;
        }
        size_t d = (size_t)b->deps[next[top]++];
        if (color[d] == BLACK) continue;
        if (color[d] == WHITE) {
            color[d] = GRAY;
            stack[++top] = d;
            next[top] = 0;
            continue;
        }
        /* back edge v -> d: the cycle is d ... v on the stack; spell it from
         * its first backend in config order, in the direction "reads". */
        size_t from = 0;
        while (stack[from] != d)
            from++;
        size_t len = top - from + 1, start = from;
        for (size_t k = from; k <= top; k++)
            if (stack[k] < stack[start]) start = k;
        char msg[PATH_MAX_LEN] = "cycle ";
        size_t used = strlen(msg);
        for (size_t k = 0; k <= len; k++) {
            size_t idx = from + (start - from + k) % len;
            used += (size_t)snprintf(msg + used, used < sizeof msg ? sizeof msg - used : 0, "%s%s",
                                     k ? " -> " : "", ep->backends[stack[idx]].name);
            if (used >= sizeof msg) break;
        }
        size_t first = stack[start];
        size_t second = stack[from + (start - from + 1) % len];
        char bp[PATH_MAX_LEN], kp[PATH_MAX_LEN], fp[PATH_MAX_LEN];
        cfg_index_path(bp, cfg_key_path(kp, path, "backends"), first);
        cfg_key_path(fp, bp, dep_in_url(&ep->backends[first], (int)second) ? "url" : "foreach");
        cfg_err(L, fp, "%s", msg);
        for (size_t k = 0; k <= top; k++)
            color[stack[k]] = BLACK;
        return;
    }
}

void graph_resolve(struct loader *L, struct endpoint_conf *ep, const char *path)
{
    size_t n = ep->n_backends;
    char bs[PATH_MAX_LEN], bp[PATH_MAX_LEN];
    cfg_key_path(bs, path, "backends");
    for (size_t i = 0; i < n; i++)
        resolve_backend(L, ep, i, cfg_index_path(bp, bs, i));
    bool any = false;
    for (size_t i = 0; i < n; i++)
        any |= ep->backends[i].n_deps > 0;
    if (!any) return;
    ep->graph = true;
    unsigned char *color = cfg_alloc(L, n);
    size_t *stack = cfg_alloc(L, n * sizeof *stack);
    size_t *next = cfg_alloc(L, n * sizeof *next);
    for (size_t i = 0; i < n; i++)
        if (color[i] == WHITE) find_cycle(L, ep, path, i, color, stack, next);
    for (size_t i = 0; i < n; i++) { /* children, in config order */
        struct backend_conf *b = &ep->backends[i];
        for (size_t k = 0; k < b->n_deps; k++) {
            struct backend_conf *p = &ep->backends[b->deps[k]];
            if (!p->children) p->children = cfg_alloc(L, n * sizeof *p->children);
            p->children[p->n_children++] = (int)i;
        }
    }
}

bool graph_url_has_fields(const struct backend_conf *b)
{
    for (size_t k = 0; k < b->n_parts; k++)
        if (b->parts[k].field) return true;
    return false;
}

const char *graph_part_name(const struct url_part *part)
{
    return part->field ? part->field : "?";
}

/* ---- run time ---- */

int graph_render(buf_t *out, const struct url_part *part, const char *src, size_t len)
{
    const char *path = part->field + part->field_off;
    const char *v;
    size_t vn;
    enum json_type t = len ? jpath_get(src, len, path, strlen(path), &v, &vn) : JSON_NULL;
    if (t != JSON_STRING && t != JSON_NUMBER && t != JSON_TRUE && t != JSON_FALSE) return -ENOENT;
    if (t != JSON_STRING) return urlbuild_encode(out, v, vn);
    /* a string: decoded (never longer than its raw form), then encoded */
    char small[256];
    char *d = vn - 2 <= sizeof small ? small : malloc(vn);
    if (!d) return -ENOMEM;
    size_t dn = json_string_decode(v + 1, vn - 2, d);
    int rc = 0;
    if (dn == (size_t)-1 || memchr(d, '\0', dn))
        rc = -ENOENT;
    else if ((dn == 1 || dn == 2) && memcmp(d, "..", dn) == 0)
        rc = buf_puts(out, dn == 1 ? "%2E" : "%2E%2E") ? -ENOMEM : 0;
    else
        rc = urlbuild_encode(out, d, dn);
    if (d != small) free(d);
    return rc;
}

int graph_sched_init(struct graph_sched *s, const struct endpoint_conf *ep)
{
    size_t n = ep->n_backends;
    s->pending = n <= 16 ? s->pending_small : malloc(n * sizeof *s->pending);
    s->q = s->q_small;
    s->cap = sizeof s->q_small / sizeof s->q_small[0];
    s->head = s->tail = 0;
    if (!s->pending) return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        s->pending[i] = (uint32_t)ep->backends[i].n_deps;
        if (!s->pending[i] && graph_sched_push(s, (struct graph_task){(uint32_t)i, GRAPH_WHOLE}))
            return -ENOMEM;
    }
    return 0;
}

void graph_sched_free(struct graph_sched *s)
{
    if (s->pending != s->pending_small) free(s->pending);
    if (s->q != s->q_small) free(s->q);
    s->pending = NULL;
    s->q = NULL;
}

int graph_sched_push(struct graph_sched *s, struct graph_task t)
{
    if (s->tail == s->cap) {
        size_t live = s->tail - s->head;
        if (s->head && live < s->cap / 2) { /* slide down instead of growing */
            memmove(s->q, s->q + s->head, live * sizeof *s->q);
        } else {
            size_t cap = s->cap * 2;
            struct graph_task *q = malloc(cap * sizeof *q);
            if (!q) return -ENOMEM;
            memcpy(q, s->q + s->head, live * sizeof *q);
            if (s->q != s->q_small) free(s->q);
            s->q = q;
            s->cap = cap;
        }
        s->head = 0;
        s->tail = live;
    }
    s->q[s->tail++] = t;
    return 0;
}

bool graph_sched_pop(struct graph_sched *s, struct graph_task *t)
{
    if (s->head == s->tail) return false;
    *t = s->q[s->head++];
    if (s->head == s->tail) s->head = s->tail = 0;
    return true;
}

int graph_sched_ended(struct graph_sched *s, const struct endpoint_conf *ep, size_t i)
{
    const struct backend_conf *b = &ep->backends[i];
    for (size_t k = 0; k < b->n_children; k++) {
        uint32_t c = (uint32_t)b->children[k];
        if (--s->pending[c] == 0 && graph_sched_push(s, (struct graph_task){c, GRAPH_WHOLE}))
            return -ENOMEM;
    }
    return 0;
}
