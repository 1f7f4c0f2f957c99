/*
 * degraded_store: the answer store's struct, private to degraded.c (the
 * store: ways, lookups, puts, eviction, freshness) and degraded_snapshot.c
 * (its file: format, write, clean, load). Nothing else includes this
 * header; the public contract is degraded.h.
 *
 * Invariants both sides rely on: slots[0..cap) are published with av_cas
 * only (degraded_put_at), read under av_read_lock or pinned with
 * av_acquire; changes is bumped after every change a snapshot would show;
 * snap_path, snap_changes and snap_count belong to the one snapshot writer.
 */
#ifndef GATEWAY_DEGRADED_STORE_H
#define GATEWAY_DEGRADED_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/avalue.h"
#include "gateway/degraded.h"

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME  0x100000001b3ull

struct degraded {
    size_t cap;      /* ways in all */
    size_t nbuckets; /* ceil(cap / DEGRADED_WAYS); the last may be short */
    uint64_t (*now_s)(void);
    uint64_t (*now_ms)(void);                       /* monotonic: freshness */
    uint64_t (*hash)(const void *key, size_t klen); /* test hook; NULL: FNV-1a */
    /* Bumped by every change a snapshot would show (an entry published, a
     * stored_at moved: at most once a second per key). */
    _Atomic uint64_t changes;
    /* The last snapshot written (the one snapshot writer's own): its path,
     * its `changes` when the scan began and its record count. */
    char *snap_path;
    uint64_t snap_changes;
    int snap_count;
    avalue_t slots[];
};

/* FNV-1a 64 of p[0..n), continuing from h (FNV_OFFSET to start): the key
 * hash and the snapshot checksum. */
static inline uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * FNV_PRIME;
    return h;
}

/* Stores body under key with the given stored_at (wall-clock seconds).
 * keep_newer: a snapshot load, which must not roll back a fresher answer.
 * fresh_until: monotonic ms, 0 = not fresh. Silent on failure (out of
 * memory, lost races: see degraded.h). Any thread. */
void degraded_put_at(struct degraded *d, const void *key, size_t klen, const char *body, size_t len,
                     uint64_t stored_at, uint64_t fresh_until, bool keep_newer);

#endif
