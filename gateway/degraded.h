/*
 * degraded: the last good body of each resolved backend request -- the
 * gateway's one store of answers, with two ages (DESIGN.md, "Failure
 * semantics" and "Cache and request coalescing"):
 *   - fresh: until fresh_until (monotonic ms, set by degraded_put_fresh from
 *     the backend's cache settings), degraded_get_fresh serves it without a
 *     backend call (the response cache, gateway/cache.h);
 *   - stale but allowed: while no older than max_stale_s, degraded_get serves
 *     it when the backend fails (fallback "degraded").
 * One entry, one key, one eviction policy: a cached answer is the same entry
 * the fallback serves, and max_entries bounds both.
 *
 * Keys are opaque byte strings built by the caller (backend name, resolved
 * URL, forwarded header values, NUL-separated). Two keys match only when all
 * their bytes match; the hash only picks the bucket and skips most
 * comparisons. So an answer is never served across params or credentials.
 *
 * Layout: a fixed table of max_entries atomic values (core/avalue.h), grouped
 * into buckets of 4 ways (set-associative); a key lives in one bucket. Each
 * way holds one immutable entry (key, body, one malloc). put replaces the
 * key's entry, else fills an empty way, else evicts the way stored longest
 * ago; memory is therefore bounded by max_entries entries, never more.
 *
 * Concurrency: every function but degraded_new / degraded_free /
 * degraded_set_clock / degraded_set_hash may be called from any thread at once, without a lock.
 * Readers take a short RCU read section to scan a bucket and pin the entry
 * they return; writers publish with a compare-and-swap on one way, and a
 * replaced entry is freed once no reader can see it (avalue's reclamation).
 * What a race can lose, by design (a cache may forget; it never mixes keys,
 * corrupts or leaks):
 *   - two puts racing on the same way: one wins; the loser retries twice,
 *     then drops its body;
 *   - two puts of one new key racing into different ways of its bucket can
 *     leave two entries for the key. get serves the newer; the older one is
 *     still a correct body for that key and is the first to be evicted.
 *
 * Time: stored_at is wall-clock seconds (CLOCK_REALTIME), so ages survive a
 * restart through the snapshot. It is the one mutable field of an entry: a
 * put of an unchanged body only moves stored_at forward (at most one store per
 * second per key, to keep the cache line quiet), so the common case -- a
 * healthy backend answering the same thing -- allocates nothing, and eviction
 * takes the answer confirmed longest ago.
 *
 * Snapshot file (gateway/degraded_snapshot.c; little-endian throughout):
 *     header, 40 bytes:
 *       "GWDEGRAD"          magic, 8 bytes
 *       u32 version = 1, u32 reserved = 0
 *       u64 count           number of records
 *       u64 payload_len     bytes after the header
 *       u64 checksum        FNV-1a 64 over the payload, then header bytes
 *                           [0, 32) (the writer learns the counts last)
 *     count records:
 *       u64 stored_at, u32 key_len, u32 body_len, key bytes, body bytes
 * FNV-1a changes its state bijectively for a fixed suffix, so any single
 * changed byte changes the checksum; lengths are checked against the file
 * size, so truncation is caught before the checksum is even computed.
 */
#ifndef GATEWAY_DEGRADED_H
#define GATEWAY_DEGRADED_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/avalue.h"

#define DEGRADED_SNAPSHOT_VERSION 1
#define DEGRADED_WAYS             4

struct degraded;

/* One stored answer. Immutable once published except stored_at. */
struct degraded_entry {
    av_snap_t snap_;             /* private: first, the avalue header */
    uint64_t hash_;              /* private: of the key */
    uint32_t slot_;              /* private: the way it was published in */
    uint32_t klen;               /* read-only */
    size_t len;                  /* read-only: body length */
    _Atomic uint64_t stored_at_; /* private: read it with degraded_entry_stored_at */
    _Atomic uint64_t fresh_until_; /* private: monotonic ms; 0 = never fresh */
    const char *key;             /* read-only: klen bytes */
    const char *body;            /* read-only: len bytes and a NUL */
    char data_[];                /* private: key, body, NUL */
};

/* Wall-clock second the body was last confirmed by a successful call. */
static inline uint64_t degraded_entry_stored_at(const struct degraded_entry *e)
{
    return atomic_load_explicit(&((struct degraded_entry *)e)->stored_at_, memory_order_relaxed);
}

/* A store holding at most max_entries answers; 0 makes a store that keeps
 * nothing (put does nothing, get finds nothing). NULL on out-of-memory or
 * when max_entries > INT_MAX (counts are returned as int). The table costs
 * ~24 bytes per entry up front. */
struct degraded *degraded_new(size_t max_entries);

/* Frees the store and every entry. No pin may be outstanding and no other
 * call may run; waits for pending reclamations (a grace period or two).
 * NULL is fine. */
void degraded_free(struct degraded *d);

/* Test hook: the clock put and get use (wall-clock seconds). NULL restores
 * CLOCK_REALTIME. Only before the store is shared with other threads. */
void degraded_set_clock(struct degraded *d, uint64_t (*now_s)(void));

/* Test hook: the monotonic clock (ms) freshness is measured on. NULL
 * restores CLOCK_MONOTONIC. Only before the store is shared. */
void degraded_set_fresh_clock(struct degraded *d, uint64_t (*now_ms)(void));

/* Test hook: the key hash (every key colliding shows that keys are told
 * apart by their bytes). NULL restores FNV-1a 64. Only on an empty store not
 * yet shared with other threads. */
void degraded_set_hash(struct degraded *d, uint64_t (*hash)(const void *key, size_t klen));

/* Remembers body[0..len) as the answer for key[0..klen), stored now. Copies
 * both; the caller keeps its buffers. When the key's current body is
 * identical, only its stored_at moves (no allocation, no publish). Silent
 * no-op on out-of-memory, on a lost race (see above), or when klen or len
 * exceeds UINT32_MAX. */
void degraded_put(struct degraded *d, const void *key, size_t klen, const char *body, size_t len);

/* degraded_put, and the answer is fresh for fresh_ms from now (0: not fresh;
 * a put always sets the freshness, so a later answer that must not be
 * cached ends an earlier one's). */
void degraded_put_fresh(struct degraded *d, const void *key, size_t klen, const char *body,
                        size_t len, uint32_t fresh_ms);

/* The answer stored for key, pinned, only while it is fresh (see
 * degraded_put_fresh); NULL otherwise. Give it back with degraded_release. */
const struct degraded_entry *degraded_get_fresh(struct degraded *d, const void *key,
                                                size_t klen);

/* The answer stored for key, pinned, or NULL when there is none or it is
 * older than max_stale_s seconds (served iff now - stored_at <= max_stale_s;
 * an entry stamped in the future counts as age 0; 0 therefore serves only
 * answers confirmed within the current second). The pin stays valid across
 * yields and later puts or evictions; give it back with degraded_release. */
const struct degraded_entry *degraded_get(struct degraded *d, const void *key, size_t klen,
                                          uint32_t max_stale_s);

/* Drops a pin from degraded_get (NULL is ignored). */
void degraded_release(struct degraded *d, const struct degraded_entry *e);

/* Entries currently held. O(capacity) scan, for tests and metrics; a moment's
 * view under concurrent puts. */
size_t degraded_count(struct degraded *d);

/* Entries and the bytes they hold (entry header, key and body), for the
 * gateway_store_* gauges. O(capacity) scan, a moment's view. */
void degraded_stats(struct degraded *d, size_t *entries, size_t *bytes);

/* The most entries the store holds (max_entries given to degraded_new). */
size_t degraded_capacity(const struct degraded *d);

/* Writes every live entry to path atomically: a temp file in the same
 * directory (path + ".tmp.XXXXXX", locked with flock while written), write,
 * fsync, rename over path, fsync of the directory. Workers keep reading and
 * writing meanwhile (each entry is pinned while it is written, so the
 * snapshot is per-entry consistent, not a point in time). Returns the number
 * of entries written (>= 0), or a negative errno. A failure before the
 * rename leaves path untouched; no failure leaves a temp file behind (a
 * crash can: see degraded_snapshot_clean). (Only the final directory fsync
 * can fail after the rename: the new file is then in place but maybe not
 * yet durable.)
 *
 * Skipped when nothing changed since this store last wrote path and path
 * still exists: no entry published and no stored_at moved (a healthy
 * backend confirming its answer moves it at most once a second per key).
 * It then returns the count it wrote last time. One writer at a time. */
int degraded_snapshot_write(struct degraded *d, const char *path);

/* Removes the temp files a crashed degraded_snapshot_write left next to
 * path (path + ".tmp." + 6 characters) that no live writer holds locked.
 * For the start of the process. Returns how many were removed, or a
 * negative errno when the directory cannot be read. */
int degraded_snapshot_clean(const char *path);

/* Loads the snapshot at path into the store (put with the file's stored_at;
 * a key the store already holds with a newer stored_at is kept). The whole
 * file is validated before anything is stored: a corrupt or truncated file
 * loads nothing. Returns the number of records read (>= 0), -ENOENT when
 * the file does not exist (nothing to load: not an error for the caller),
 * -EBADMSG when the file is corrupt, another negative errno on I/O errors.
 * Every failure writes a message naming path into err (err may be NULL when
 * errlen is 0). Entries beyond the store's capacity evict the oldest;
 * stale entries are loaded and left to get's max_stale_s. */
int degraded_snapshot_load(struct degraded *d, const char *path, char *err, size_t errlen);

/* degraded_snapshot_load's parser, on memory: validates data[0..len) and
 * then stores its entries. Safe on any bytes (a fuzz target). Returns the
 * number of records in the file (all offered to the store), or -EBADMSG with a message in err and
 * nothing stored. d may be NULL: validate only (returns the record count). */
int degraded_snapshot_parse(struct degraded *d, const void *data, size_t len, char *err,
                            size_t errlen);

#endif
