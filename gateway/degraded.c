/*
 * degraded: the answer store shared by all workers (its ways, lookups,
 * puts, eviction and freshness); the snapshot file is degraded_snapshot.c.
 * See degraded.h for the model, the races it accepts and the snapshot
 * format.
 *
 * Invariants: an entry is immutable once published but for stored_at (only
 * moved forward) and fresh_until; a way changes only by av_cas, and a
 * replaced entry is freed by avalue's reclamation, never here; every
 * publish or stored_at move bumps d->changes (the snapshot's skip test).
 */
#include "gateway/degraded.h"
#include "gateway/degraded_store.h"

#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Attempts a put makes when another put changes the way it chose. */
#define PUT_ATTEMPTS 3

/* ---- hashing, clock ---- */

/* FNV's low bits are weak for short keys differing at the end; the bucket
 * index comes from the high bits of a mixed hash. */
static size_t bucket_of(const struct degraded *d, uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return (size_t)(((unsigned __int128)h * d->nbuckets) >> 64);
}

static uint64_t realtime_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec < 0 ? 0 : (uint64_t)ts.tv_sec;
}

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- store ---- */

struct degraded *degraded_new(size_t max_entries)
{
    if (max_entries > INT_MAX) return NULL; /* counts travel as int */
    struct degraded *d = calloc(1, sizeof *d + max_entries * sizeof(avalue_t));
    if (!d) return NULL;
    d->cap = max_entries;
    d->nbuckets = (max_entries + DEGRADED_WAYS - 1) / DEGRADED_WAYS;
    d->now_s = realtime_s;
    atomic_init(&d->changes, 0);
    d->now_ms = monotonic_ms;
    for (size_t i = 0; i < max_entries; i++)
        av_init(&d->slots[i], NULL); /* an entry is one malloc: free() */
    return d;
}

void degraded_free(struct degraded *d)
{
    if (!d) return;
    /* Queue every drop first, then wait: av_destroy slot by slot would wait
     * a grace period per live entry; this way the waits overlap. */
    for (size_t i = 0; i < d->cap; i++)
        av_store(&d->slots[i], NULL);
    for (size_t i = 0; i < d->cap; i++)
        av_destroy(&d->slots[i]);
    free(d->snap_path);
    free(d);
}

void degraded_set_clock(struct degraded *d, uint64_t (*now_s)(void))
{
    d->now_s = now_s ? now_s : realtime_s;
}

void degraded_set_fresh_clock(struct degraded *d, uint64_t (*now_ms)(void))
{
    d->now_ms = now_ms ? now_ms : monotonic_ms;
}

void degraded_set_hash(struct degraded *d, uint64_t (*hash)(const void *key, size_t klen))
{
    d->hash = hash;
}

static uint64_t key_hash(const struct degraded *d, const void *key, size_t klen)
{
    return d->hash ? d->hash(key, klen) : fnv1a(FNV_OFFSET, key, klen);
}

size_t degraded_capacity(const struct degraded *d)
{
    return d->cap;
}

static bool key_eq(const struct degraded_entry *e, uint64_t h, const void *key, size_t klen)
{
    return e->hash_ == h && e->klen == klen && (klen == 0 || memcmp(e->key, key, klen) == 0);
}

/* A bucket as one read section saw it. Valid only inside that section. */
struct view {
    size_t first, n;              /* its ways: slots[first .. first + n) */
    struct degraded_entry *match; /* the newest entry for the key, or NULL */
    size_t match_way;
    struct degraded_entry *cur[DEGRADED_WAYS];
};

/* Inside av_read_lock. */
static void scan(struct degraded *d, uint64_t h, const void *key, size_t klen, struct view *v)
{
    v->first = bucket_of(d, h) * DEGRADED_WAYS;
    v->n = d->cap - v->first < DEGRADED_WAYS ? d->cap - v->first : DEGRADED_WAYS;
    v->match = NULL;
    v->match_way = 0;
    for (size_t w = 0; w < v->n; w++) {
        struct degraded_entry *e = av_load(&d->slots[v->first + w]);
        v->cur[w] = e;
        if (!e || !key_eq(e, h, key, klen)) continue;
        if (!v->match || degraded_entry_stored_at(e) > degraded_entry_stored_at(v->match)) {
            v->match = e;
            v->match_way = w;
        }
    }
}

/* The way a new body for the key goes to: its current entry, else an empty
 * way, else the one stored longest ago. */
static size_t victim(const struct view *v)
{
    if (v->match) return v->match_way;
    size_t oldest = 0;
    for (size_t w = 0; w < v->n; w++) {
        if (!v->cur[w]) return w;
        if (degraded_entry_stored_at(v->cur[w]) < degraded_entry_stored_at(v->cur[oldest]))
            oldest = w;
    }
    return oldest;
}

/* After a change is visible to readers: the next snapshot is not skipped. */
static void changed(struct degraded *d)
{
    atomic_fetch_add_explicit(&d->changes, 1, memory_order_release);
}

/* Moves stored_at forward to t (never back, whoever wins a race). */
static void touch(struct degraded *d, struct degraded_entry *e, uint64_t t)
{
    uint64_t cur = atomic_load_explicit(&e->stored_at_, memory_order_relaxed);
    while (t > cur) {
        if (atomic_compare_exchange_weak_explicit(&e->stored_at_, &cur, t, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            changed(d);
            return;
        }
    }
}

static struct degraded_entry *entry_new(uint64_t h, const void *key, size_t klen, const char *body,
                                        size_t len, uint64_t stored_at, uint64_t fresh_until)
{
    struct degraded_entry *e = malloc(sizeof *e + klen + len + 1);
    if (!e) return NULL;
    memset(e, 0, sizeof *e);
    e->hash_ = h;
    e->klen = (uint32_t)klen;
    e->len = len;
    atomic_init(&e->stored_at_, stored_at);
    atomic_init(&e->fresh_until_, fresh_until);
    if (klen) memcpy(e->data_, key, klen);
    if (len) memcpy(e->data_ + klen, body, len);
    e->data_[klen + len] = '\0';
    e->key = e->data_;
    e->body = e->data_ + klen;
    return e;
}

/* Sets the freshness of an unchanged body (a store only when it changes). */
static void set_fresh(struct degraded_entry *e, uint64_t fresh_until)
{
    if (atomic_load_explicit(&e->fresh_until_, memory_order_relaxed) != fresh_until)
        atomic_store_explicit(&e->fresh_until_, fresh_until, memory_order_relaxed);
}

/* The one put (degraded_store.h): keep_newer for a snapshot load. */
void degraded_put_at(struct degraded *d, const void *key, size_t klen, const char *body, size_t len,
                     uint64_t stored_at, uint64_t fresh_until, bool keep_newer)
{
    if (d->cap == 0 || klen > UINT32_MAX || len > UINT32_MAX) return;
    uint64_t h = key_hash(d, key, klen);
    struct degraded_entry *ne = NULL;
    for (int attempt = 0; attempt < PUT_ATTEMPTS; attempt++) {
        struct view v;
        /* The section keeps every entry the scan saw alive, so the av_cas
         * below cannot mistake a new entry at a reused address for the one
         * it expects. */
        av_read_lock();
        scan(d, h, key, klen, &v);
        struct degraded_entry *m = v.match;
        if (m && keep_newer && degraded_entry_stored_at(m) >= stored_at) {
            av_read_unlock();
            break;
        }
        if (m && m->len == len && (len == 0 || memcmp(m->body, body, len) == 0)) {
            touch(d, m, stored_at);
            if (!keep_newer) set_fresh(m, fresh_until);
            av_read_unlock();
            break;
        }
        if (!ne) ne = entry_new(h, key, klen, body, len, stored_at, fresh_until);
        if (!ne) {
            av_read_unlock();
            return;
        }
        size_t w = victim(&v);
        ne->slot_ = (uint32_t)(v.first + w);
        bool ok = av_cas(&d->slots[v.first + w], v.cur[w], ne);
        av_read_unlock();
        if (ok) {
            changed(d);
            return;
        }
    }
    free(ne); /* never published (or NULL) */
}

void degraded_put(struct degraded *d, const void *key, size_t klen, const char *body, size_t len)
{
    degraded_put_fresh(d, key, klen, body, len, 0);
}

void degraded_put_fresh(struct degraded *d, const void *key, size_t klen, const char *body,
                        size_t len, uint32_t fresh_ms)
{
    if (d->cap == 0) return;
    uint64_t until = fresh_ms ? d->now_ms() + fresh_ms : 0;
    degraded_put_at(d, key, klen, body, len, d->now_s(), until, false);
}

const struct degraded_entry *degraded_get_fresh(struct degraded *d, const void *key, size_t klen)
{
    if (d->cap == 0 || klen > UINT32_MAX) return NULL;
    uint64_t h = key_hash(d, key, klen);
    uint64_t now = d->now_ms();
    struct view v;
    av_read_lock();
    scan(d, h, key, klen, &v);
    struct degraded_entry *e = v.match;
    if (e && now < atomic_load_explicit(&e->fresh_until_, memory_order_relaxed))
        e = av_retain(e); /* see degraded_get */
    else
        e = NULL;
    av_read_unlock();
    return e;
}

const struct degraded_entry *degraded_get(struct degraded *d, const void *key, size_t klen,
                                          uint32_t max_stale_s)
{
    if (d->cap == 0 || klen > UINT32_MAX) return NULL;
    uint64_t h = key_hash(d, key, klen);
    uint64_t now = d->now_s();
    struct view v;
    av_read_lock();
    scan(d, h, key, klen, &v);
    struct degraded_entry *e = v.match;
    if (e) {
        uint64_t at = degraded_entry_stored_at(e);
        uint64_t age = now > at ? now - at : 0;
        /* Inside the section the entry's owner reference cannot have been
         * dropped yet (that waits for a grace period), so taking a pin here
         * is what av_acquire does. */
        e = age <= max_stale_s ? av_retain(e) : NULL;
    }
    av_read_unlock();
    return e;
}

void degraded_release(struct degraded *d, const struct degraded_entry *e)
{
    if (e) av_release(&d->slots[e->slot_], (void *)e);
}

size_t degraded_count(struct degraded *d)
{
    size_t n = 0;
    av_read_lock();
    for (size_t i = 0; i < d->cap; i++)
        n += av_load(&d->slots[i]) != NULL;
    av_read_unlock();
    return n;
}

void degraded_stats(struct degraded *d, size_t *entries, size_t *bytes)
{
    size_t n = 0, b = 0;
    av_read_lock();
    for (size_t i = 0; i < d->cap; i++) {
        const struct degraded_entry *e = av_load(&d->slots[i]);
        if (!e) continue;
        n++;
        b += sizeof *e + e->klen + e->len + 1;
    }
    av_read_unlock();
    *entries = n;
    *bytes = b;
}
