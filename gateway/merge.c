/*
 * merge: the response object out of the backends' parts (merge.h): checks a
 * body once, then copies raw members and keys, resolving duplicate names by
 * the endpoint's on_conflict. Writes only to the output buffer it is given.
 */
#include "gateway/merge.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>
#include <time.h>

#include "gateway/jpath.h"
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
    int rc = json_buf_string(out, key, strlen(key));
    return rc ? rc : buf_putc(out, ':');
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

/* "key": value of a keyed part (null, raw, or its allowed members). */
static int add_keyed(buf_t *out, const struct merge_part *p, const char *body, size_t len,
                     bool *first)
{
    const struct backend_conf *b = p->b;
    int rc = sep(out, first);
    if (!rc) rc = put_key(out, b->key);
    if (rc) return rc;
    if (p->kind == MERGE_PART_NULL || len == 0) return buf_append(out, "null", 4);
    if (!b->allow) return buf_append(out, body, len);
    bool inner_first = true;
    rc = buf_putc(out, '{');
    if (!rc) rc = filter_members(out, b, body, len, &inner_first);
    if (!rc) rc = buf_putc(out, '}');
    return rc;
}

/* body[0..len) of p with the surrounding whitespace trimmed. */
static void trimmed(const struct merge_part *p, const char **body, size_t *len)
{
    *body = p->body;
    *len = p->kind == MERGE_PART_BODY ? p->len : 0;
    while (*len && is_ws((*body)[0]))
        (*body)++, (*len)--;
    while (*len && is_ws((*body)[*len - 1]))
        (*len)--;
}

/* The part as it was written before names were deduplicated: one memcpy of
 * a key-less body's members. */
static int add_part(buf_t *out, const struct merge_part *p, bool *first)
{
    const struct backend_conf *b = p->b;
    const char *body;
    size_t len;
    trimmed(p, &body, &len);
    if (b->key) return add_keyed(out, p, body, len, first);
    if (len == 0) return 0;
    if (b->allow) return filter_members(out, b, body, len, first);
    const char *members;
    size_t mlen;
    if (!json_object_members(body, len, &members, &mlen)) return -EINVAL;
    if (mlen == 0) return 0;
    int rc = sep(out, first);
    if (!rc) rc = buf_append(out, members, mlen);
    return rc;
}

/* One top-level member of the answer: a keyed part (raw NULL) or a member
 * of a key-less body. */
struct ent {
    const char *name; /* decoded: compared byte for byte */
    size_t name_len;
    const char *raw; /* the name as the body wrote it; NULL for a keyed part */
    size_t raw_len;
    const char *value;
    size_t value_len;
    size_t part; /* index in parts */
    size_t src;  /* the entry whose value goes at this position */
    bool dead;   /* its name appeared earlier: written there */
};

struct ents {
    struct ent *v;
    size_t n, cap;
    buf_t names;        /* decoded names that had escapes; reserved once */
    size_t names_room;  /* bound on what names will need */
    struct ent small[16]; /* no allocation for the usual handful */
};

static int ent_push(struct ents *es, const struct ent *e)
{
    if (es->n == es->cap) {
        size_t cap = es->cap * 2;
        struct ent *v = es->v == es->small ? malloc(cap * sizeof *v)
                                           : realloc(es->v, cap * sizeof *v);
        if (!v) return -ENOMEM;
        if (es->v == es->small) memcpy(v, es->small, sizeof es->small);
        es->v = v;
        es->cap = cap;
    }
    es->v[es->n] = *e;
    es->v[es->n].src = es->n;
    es->n++;
    return 0;
}

/* Members of a validated object are found by skipping (gateway/jpath.h):
 * merge_check validated the bodies, and json_iter_next would check every
 * byte again, UTF-8 included, at the cost of the rest of the merge. */

/* Adds the members of a key-less object body (allowed ones only). */
static int collect_members(struct ents *es, const struct merge_part *p, size_t part,
                           const char *body, size_t len)
{
    struct jpath_iter it;
    struct json_member m;
    if (len < 2 || body[0] != '{' || !jpath_iter_start(&it, body, len)) return -EINVAL;
    int more;
    while ((more = jpath_iter_next(&it, &m)) > 0) {
        if (p->b->allow && !allowed(p->b, &m)) continue;
        struct ent en = {.name = m.name, .name_len = m.name_len, .raw = m.name,
                         .raw_len = m.name_len, .value = m.value, .value_len = m.value_len,
                         .part = part};
        if (memchr(m.name, '\\', m.name_len)) {
            /* Reserved once for every body's bytes, so earlier names stay put. */
            if (!es->names.data && buf_reserve(&es->names, es->names_room)) return -ENOMEM;
            char *d = es->names.data + es->names.len;
            size_t dn = json_string_decode(m.name, m.name_len, d);
            if (dn == (size_t)-1) return -EINVAL;
            es->names.len += dn;
            en.name = d;
            en.name_len = dn;
        }
        int rc = ent_push(es, &en);
        if (rc) return rc;
    }
    return more;
}

static int collect(struct ents *es, const struct merge_part *parts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (parts[i].kind == MERGE_PART_BODY) es->names_room += parts[i].len;
    for (size_t i = 0; i < n; i++) {
        const struct merge_part *p = &parts[i];
        if (p->kind == MERGE_PART_OMIT) continue;
        int rc = 0;
        if (p->b->key) {
            struct ent e = {.name = p->b->key, .name_len = strlen(p->b->key), .part = i};
            rc = ent_push(es, &e);
        } else {
            const char *body;
            size_t len;
            trimmed(p, &body, &len);
            if (len) rc = collect_members(es, p, i, body, len);
        }
        if (rc) return rc;
    }
    return 0;
}

static bool same_name(const struct ent *x, const struct ent *y)
{
    return x->name_len == y->name_len && memcmp(x->name, y->name, x->name_len) == 0;
}

static int ent_cmp(const void *a, const void *b)
{
    const struct ent *x = *(const struct ent *const *)a, *y = *(const struct ent *const *)b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    if (c) return c;
    if (x->name_len != y->name_len) return x->name_len < y->name_len ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* The usual handful: pairwise is cheaper than any table. */
static long dedupe_pairs(struct ents *es)
{
    long dead = 0;
    for (size_t i = 1; i < es->n; i++)
        for (size_t j = 0; j < i; j++)
            if (!es->v[j].dead && same_name(&es->v[j], &es->v[i])) {
                es->v[j].src = i;
                es->v[i].dead = true;
                dead++;
                break;
            }
    return dead;
}

/* Marks every repeated name by sorting: O(m log m) whatever the names. */
static long dedupe_sort(struct ents *es)
{
    struct ent *small[16];
    struct ent **ord = es->n <= 16 ? small : malloc(es->n * sizeof *ord);
    if (!ord) return -ENOMEM;
    for (size_t i = 0; i < es->n; i++)
        ord[i] = &es->v[i];
    qsort(ord, es->n, sizeof *ord, ent_cmp);
    long dead = 0;
    for (size_t i = 0, j; i < es->n; i = j) {
        for (j = i + 1; j < es->n && same_name(ord[i], ord[j]); j++) {
            ord[j]->dead = true;
            dead++;
        }
        ord[i]->src = (size_t)(ord[j - 1] - es->v);
    }
    if (ord != small) free(ord);
    return dead;
}

/* A per-process random seed, so the probe sequences of a set of names
 * cannot be known in advance. */
static uint64_t hash_seed(void)
{
    static _Atomic uint64_t seed;
    uint64_t s = atomic_load_explicit(&seed, memory_order_relaxed);
    if (s) return s;
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s)
        s = (uint64_t)(uintptr_t)&seed ^ (uint64_t)time(NULL);
    s |= 1;
    atomic_store_explicit(&seed, s, memory_order_relaxed); /* any winner will do */
    return s;
}

static uint64_t hash_name(const char *p, size_t n, uint64_t seed)
{
    uint64_t h = seed ^ (n * 0x9E3779B97F4A7C15ull);
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    return h ^ h >> 29;
}

/* Marks every repeated name with an open-addressing table. Returns the
 * number of dead entries, -ENOMEM, or -EAGAIN (entries untouched) when the
 * probes pass 4 per name: names built to collide fall back to the sort, so
 * the worst case stays O(m log m). */
static long dedupe_hash(struct ents *es)
{
    size_t cap = 64;
    while (cap < 2 * es->n)
        cap *= 2;
    uint32_t small[64];
    uint32_t *slot = cap == 64 ? small : calloc(cap, sizeof *slot);
    if (!slot) return -ENOMEM;
    if (slot == small) memset(small, 0, sizeof small);
    uint64_t seed = hash_seed();
    size_t probes = 0, budget = 4 * es->n + 16;
    long dead = 0;
    for (size_t i = 0; i < es->n && dead >= 0; i++) {
        struct ent *e = &es->v[i];
        size_t k = (size_t)hash_name(e->name, e->name_len, seed) & (cap - 1);
        for (; slot[k]; k = (k + 1) & (cap - 1)) {
            struct ent *f = &es->v[slot[k] - 1];
            if (same_name(f, e)) {
                f->src = i; /* the first position, the last value */
                e->dead = true;
                dead++;
                break;
            }
            if (++probes > budget) {
                dead = -EAGAIN;
                break;
            }
        }
        if (dead >= 0 && !e->dead) slot[k] = (uint32_t)(i + 1);
    }
    if (slot != small) free(slot);
    if (dead == -EAGAIN)
        for (size_t i = 0; i < es->n; i++) {
            es->v[i].src = i;
            es->v[i].dead = false;
        }
    return dead;
}

static _Atomic int force_sort; /* merge_test_force_sort */

void merge_test_force_sort(bool on)
{
    atomic_store(&force_sort, on);
}

/* Marks every repeated name: the first position takes the last value, the
 * others are dead. Returns the number of dead entries, or -ENOMEM. */
static long dedupe(struct ents *es)
{
    if (es->n < 2) return 0;
    if (atomic_load_explicit(&force_sort, memory_order_relaxed)) return dedupe_sort(es);
    if (es->n <= 16) return dedupe_pairs(es);
    if (es->n >= UINT32_MAX / 2) return dedupe_sort(es);
    long dead = dedupe_hash(es);
    return dead == -EAGAIN ? dedupe_sort(es) : dead;
}

/* Writes the surviving entries, each with the value of the last one of its
 * name. */
static int write_deduped(buf_t *out, const struct ents *es, const struct merge_part *parts,
                         bool *first)
{
    int rc = 0;
    for (size_t i = 0; i < es->n && !rc; i++) {
        if (es->v[i].dead) continue;
        const struct ent *s = &es->v[es->v[i].src];
        if (!s->raw) {
            const char *body;
            size_t len;
            trimmed(&parts[s->part], &body, &len);
            rc = add_keyed(out, &parts[s->part], body, len, first);
            continue;
        }
        rc = sep(out, first);
        if (!rc) rc = buf_putc(out, '"');
        if (!rc) rc = buf_append(out, s->raw, s->raw_len);
        if (!rc) rc = buf_append(out, "\":", 2);
        if (!rc) rc = buf_append(out, s->value, s->value_len);
    }
    return rc;
}

/* Applies the endpoint's on_conflict to the marked entries: "first" keeps
 * the first value of each name, "error" reports the first name that two
 * parts share (a repeat inside one body is not a conflict: last wins). */
static int apply_policy(struct ents *es, enum on_conflict policy, struct merge_conflict *cf)
{
    for (size_t i = 0; i < es->n; i++) {
        struct ent *e = &es->v[i];
        if (e->dead || e->src == i) continue;
        if (policy == CONFLICT_FIRST) {
            e->src = i;
        } else if (policy == CONFLICT_ERROR && es->v[e->src].part != e->part) {
            if (cf) {
                cf->name = e->name;
                cf->name_len = e->name_len;
                cf->a = e->part;
                cf->b = es->v[e->src].part;
            }
            return -EEXIST;
        }
    }
    return 0;
}

static int build(buf_t *out, const struct merge_part *parts, size_t n, enum on_conflict policy,
                 struct merge_conflict *cf)
{
    struct ents es = {.cap = 16};
    es.v = es.small;
    buf_init(&es.names, NULL);
    int rc = collect(&es, parts, n);
    long dead = rc ? 0 : dedupe(&es);
    if (dead < 0) rc = (int)dead;
    if (!rc && dead > 0 && policy != CONFLICT_LAST) rc = apply_policy(&es, policy, cf);
    if (rc == -EEXIST && cf && cf->name) { /* the name may live in es.names: copy it out */
        size_t k = cf->name_len < sizeof cf->buf - 1 ? cf->name_len : sizeof cf->buf - 1;
        memcpy(cf->buf, cf->name, k);
        cf->buf[k] = '\0';
        cf->name = cf->buf;
        cf->name_len = k;
    }
    bool first = true;
    if (!rc) rc = buf_putc(out, '{');
    if (!rc && dead > 0) rc = write_deduped(out, &es, parts, &first);
    for (size_t i = 0; i < n && !rc && dead == 0; i++)
        if (parts[i].kind != MERGE_PART_OMIT) rc = add_part(out, &parts[i], &first);
    if (!rc) rc = buf_putc(out, '}');
    if (es.v != es.small) free(es.v);
    buf_free(&es.names);
    return rc;
}

int merge_build(buf_t *out, const struct merge_part *parts, size_t n)
{
    return merge_build_policy(out, parts, n, CONFLICT_LAST, NULL);
}

int merge_build_policy(buf_t *out, const struct merge_part *parts, size_t n,
                       enum on_conflict policy, struct merge_conflict *cf)
{
    size_t saved = out->len;
    int rc = build(out, parts, n, policy, cf);
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
