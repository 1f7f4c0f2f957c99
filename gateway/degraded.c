/*
 * degraded: see degraded.h for the model, the races it accepts and the
 * snapshot format.
 */
#include "gateway/degraded.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME  0x100000001b3ull

#define SNAP_MAGIC      "GWDEGRAD"
#define SNAP_HDR        40 /* magic 8, version 4, reserved 4, count 8, payload 8, checksum 8 */
#define SNAP_HDR_SUMMED 32 /* the header bytes the checksum covers (all but itself) */
#define SNAP_REC        16 /* stored_at 8, key_len 4, body_len 4 */

/* Attempts a put makes when another put changes the way it chose. */
#define PUT_ATTEMPTS 3

struct degraded {
    size_t cap;      /* ways in all */
    size_t nbuckets; /* ceil(cap / DEGRADED_WAYS); the last may be short */
    uint64_t (*now_s)(void);
    uint64_t (*now_ms)(void); /* monotonic: freshness */
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

/* ---- hashing, clock, little-endian ---- */

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * FNV_PRIME;
    return h;
}

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

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
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

/* keep_newer: a snapshot load, which must not roll back a fresher answer.
 * fresh_until: monotonic ms, 0 = not fresh. */
static void put_at(struct degraded *d, const void *key, size_t klen, const char *body, size_t len,
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
    put_at(d, key, klen, body, len, d->now_s(), until, false);
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

/* ---- snapshot write ---- */

/* fsync of the directory holding path, so the rename itself is durable. */
static int sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return -ENOMEM;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0) return -errno;
    int rc = fsync(fd) < 0 && errno != EINVAL ? -errno : 0; /* some filesystems refuse: fine */
    close(fd);
    return rc;
}

static int write_all(FILE *f, const void *p, size_t n, uint64_t *sum)
{
    if (sum) *sum = fnv1a(*sum, p, n);
    return n == 0 || fwrite(p, 1, n, f) == n ? 0 : -(errno ? errno : EIO);
}

/* The snapshot proper: every live entry into a locked temp file, renamed
 * over path. Returns the number of entries or a negative errno. */
static int write_file(struct degraded *d, const char *path)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + sizeof ".tmp.XXXXXX");
    if (!tmp) return -ENOMEM;
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");
    int fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600: keys may hold credentials */
    if (fd < 0) {
        int rc = -errno;
        free(tmp);
        return rc;
    }
    /* Held until close: degraded_snapshot_clean leaves a locked temp file
     * (a writer at work) alone. */
    flock(fd, LOCK_EX | LOCK_NB);
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        int rc = -errno;
        close(fd);
        unlink(tmp);
        free(tmp);
        return rc;
    }
    setvbuf(f, NULL, _IOFBF, 1 << 16);

    unsigned char hdr[SNAP_HDR] = {0};
    uint64_t sum = FNV_OFFSET, count = 0, payload = 0;
    errno = 0;
    int rc = write_all(f, hdr, sizeof hdr, NULL); /* placeholder until the counts are known */
    for (size_t i = 0; rc == 0 && i < d->cap; i++) {
        /* A pin, not a read section: file I/O must not hold up grace periods. */
        struct degraded_entry *e = av_acquire(&d->slots[i]);
        if (!e) continue;
        unsigned char rec[SNAP_REC];
        put_u64(rec, degraded_entry_stored_at(e));
        put_u32(rec + 8, e->klen);
        put_u32(rec + 12, (uint32_t)e->len);
        rc = write_all(f, rec, sizeof rec, &sum);
        if (rc == 0) rc = write_all(f, e->key, e->klen, &sum);
        if (rc == 0) rc = write_all(f, e->body, e->len, &sum);
        payload += SNAP_REC + e->klen + e->len;
        count++;
        av_release(&d->slots[i], e);
    }
    if (rc == 0) {
        memcpy(hdr, SNAP_MAGIC, 8);
        put_u32(hdr + 8, DEGRADED_SNAPSHOT_VERSION);
        put_u32(hdr + 12, 0);
        put_u64(hdr + 16, count);
        put_u64(hdr + 24, payload);
        sum = fnv1a(sum, hdr, SNAP_HDR_SUMMED);
        put_u64(hdr + 32, sum);
        if (fseek(f, 0, SEEK_SET) != 0) rc = -errno;
    }
    if (rc == 0) rc = write_all(f, hdr, sizeof hdr, NULL);
    if (rc == 0 && fflush(f) != 0) rc = -(errno ? errno : EIO);
    if (rc == 0 && fsync(fileno(f)) != 0) rc = -errno;
    if (fclose(f) != 0 && rc == 0) rc = -(errno ? errno : EIO);
    if (rc == 0 && rename(tmp, path) != 0) rc = -errno;
    if (rc != 0) {
        unlink(tmp);
        free(tmp);
        return rc;
    }
    free(tmp);
    rc = sync_dir(path);
    return rc < 0 ? rc : (int)count;
}

int degraded_snapshot_write(struct degraded *d, const char *path)
{
    uint64_t changes = atomic_load_explicit(&d->changes, memory_order_acquire);
    struct stat st;
    if (d->snap_path && strcmp(d->snap_path, path) == 0 && changes == d->snap_changes &&
        stat(path, &st) == 0)
        return d->snap_count; /* the file already holds exactly this */
    int rc = write_file(d, path);
    if (rc < 0) return rc;
    if (!d->snap_path || strcmp(d->snap_path, path) != 0) {
        free(d->snap_path);
        d->snap_path = strdup(path); /* NULL: the next write is not skipped */
    }
    /* Changes during the scan count as not written: the next one writes. */
    d->snap_changes = changes;
    d->snap_count = rc;
    return rc;
}

/* A temp file of path's snapshot: path + ".tmp." + mkostemp's 6 characters. */
static bool is_snap_temp(const char *name, const char *base)
{
    size_t blen = strlen(base);
    if (strncmp(name, base, blen) != 0 || strncmp(name + blen, ".tmp.", 5) != 0) return false;
    const char *x = name + blen + 5;
    for (int i = 0; i < 6; i++)
        if (!isalnum((unsigned char)x[i])) return false;
    return x[6] == '\0';
}

int degraded_snapshot_clean(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return -ENOMEM;
    const char *base = slash ? slash + 1 : path;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dp = dfd >= 0 ? fdopendir(dfd) : NULL;
    int rc = dp ? 0 : -errno;
    if (!dp && dfd >= 0) close(dfd);
    free(dir);
    struct dirent *de;
    while (dp && (de = readdir(dp))) {
        if (!is_snap_temp(de->d_name, base)) continue;
        int fd = openat(dfd, de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0) continue;
        /* not locked: no writer holds it, its writer is gone */
        if (flock(fd, LOCK_EX | LOCK_NB) == 0 && unlinkat(dfd, de->d_name, 0) == 0) rc++;
        close(fd);
    }
    if (dp) closedir(dp);
    return rc;
}

/* ---- snapshot read ---- */

int degraded_snapshot_parse(struct degraded *d, const void *data, size_t len, char *err,
                            size_t errlen)
{
    const unsigned char *p = data;
    if (len < SNAP_HDR) {
        seterr(err, errlen, "truncated: %zu bytes, shorter than the %d-byte header", len, SNAP_HDR);
        return -EBADMSG;
    }
    if (memcmp(p, SNAP_MAGIC, 8) != 0) {
        seterr(err, errlen, "not a degraded snapshot (bad magic)");
        return -EBADMSG;
    }
    uint32_t version = get_u32(p + 8), reserved = get_u32(p + 12);
    uint64_t count = get_u64(p + 16), payload = get_u64(p + 24), sum = get_u64(p + 32);
    if (version != DEGRADED_SNAPSHOT_VERSION) {
        seterr(err, errlen, "unsupported version %u (expected %d)", version,
               DEGRADED_SNAPSHOT_VERSION);
        return -EBADMSG;
    }
    if (reserved != 0) {
        seterr(err, errlen, "corrupt header (reserved field is %u)", reserved);
        return -EBADMSG;
    }
    if (payload != len - SNAP_HDR) {
        seterr(err, errlen, "%s: header announces %llu payload bytes, file has %zu",
               payload > len - SNAP_HDR ? "truncated" : "corrupt", (unsigned long long)payload,
               len - SNAP_HDR);
        return -EBADMSG;
    }
    if (count > INT_MAX || count > payload / SNAP_REC) {
        seterr(err, errlen, "corrupt header (%llu records cannot fit %llu bytes)",
               (unsigned long long)count, (unsigned long long)payload);
        return -EBADMSG;
    }
    const unsigned char *body = p + SNAP_HDR;
    if (fnv1a(fnv1a(FNV_OFFSET, body, payload), p, SNAP_HDR_SUMMED) != sum) {
        seterr(err, errlen, "checksum mismatch (corrupt file)");
        return -EBADMSG;
    }
    /* Walk every record before storing any, so a bad one stores nothing. */
    size_t off = 0;
    for (uint64_t i = 0; i < count; i++) {
        if (payload - off < SNAP_REC) {
            seterr(err, errlen, "record %llu truncated", (unsigned long long)i);
            return -EBADMSG;
        }
        uint64_t n = (uint64_t)get_u32(body + off + 8) + get_u32(body + off + 12);
        off += SNAP_REC;
        if (payload - off < n) {
            seterr(err, errlen, "record %llu: lengths run past the end", (unsigned long long)i);
            return -EBADMSG;
        }
        off += (size_t)n;
    }
    if (off != payload) {
        seterr(err, errlen, "%zu stray bytes after the last record", (size_t)(payload - off));
        return -EBADMSG;
    }
    if (d) {
        off = 0;
        for (uint64_t i = 0; i < count; i++) {
            uint64_t at = get_u64(body + off);
            uint32_t klen = get_u32(body + off + 8), blen = get_u32(body + off + 12);
            const unsigned char *k = body + off + SNAP_REC;
            put_at(d, k, klen, (const char *)k + klen, blen, at, 0, true);
            off += SNAP_REC + (size_t)klen + blen;
        }
    }
    return (int)count;
}

int degraded_snapshot_load(struct degraded *d, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int rc = -errno;
        seterr(err, errlen, "degraded snapshot %s: %s", path, strerror(-rc));
        return rc;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = -errno;
        seterr(err, errlen, "degraded snapshot %s: stat: %s", path, strerror(-rc));
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        seterr(err, errlen, "degraded snapshot %s: not a regular file", path);
        close(fd);
        return -EINVAL;
    }
    size_t cap = (size_t)st.st_size;
    unsigned char *data = malloc(cap ? cap : 1);
    if (!data) {
        close(fd);
        seterr(err, errlen, "degraded snapshot %s: out of memory for %zu bytes", path, cap);
        return -ENOMEM;
    }
    /* A file that shrinks under us reads short and fails validation. */
    size_t got = 0;
    while (got < cap) {
        ssize_t r = read(fd, data + got, cap - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int rc = -errno;
            seterr(err, errlen, "degraded snapshot %s: read: %s", path, strerror(-rc));
            free(data);
            close(fd);
            return rc;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    char msg[200];
    int rc = degraded_snapshot_parse(d, data, got, msg, sizeof msg);
    if (rc < 0) seterr(err, errlen, "degraded snapshot %s: %s", path, msg);
    free(data);
    return rc;
}
