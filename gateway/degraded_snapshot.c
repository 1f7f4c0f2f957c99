/*
 * degraded_snapshot: the answer store's file (format in degraded.h):
 * writing every live entry to a locked temp file renamed over the path,
 * removing the temp files a crashed writer left, and validating and
 * loading a file back into the store.
 *
 * Invariants: one snapshot writer at a time (it owns d->snap_*); the writer
 * pins each entry with av_acquire, never holds a read section across file
 * I/O, and creates files mode 0600 (keys may hold credentials); a file is
 * fully validated (lengths, then checksum, then every record) before the
 * first record is stored, so a bad file stores nothing; every byte of a
 * file is hostile.
 */
#include "gateway/degraded.h"
#include "gateway/degraded_store.h"

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
#include <unistd.h>

#define SNAP_MAGIC      "GWDEGRAD"
#define SNAP_HDR        40 /* magic 8, version 4, reserved 4, count 8, payload 8, checksum 8 */
#define SNAP_HDR_SUMMED 32 /* the header bytes the checksum covers (all but itself) */
#define SNAP_REC        16 /* stored_at 8, key_len 4, body_len 4 */

/* ---- little-endian, errors ---- */

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
            degraded_put_at(d, k, klen, (const char *)k + klen, blen, at, 0, true);
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
