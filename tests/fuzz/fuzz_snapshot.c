/*
 * Fuzz target: the degraded store's snapshot loader
 * (degraded_snapshot_parse in gateway/degraded.h).
 *
 * Input: arbitrary bytes as a snapshot file. Each input is parsed twice:
 *   - as it is, validate-only (d == NULL), which mostly exercises the header
 *     checks;
 *   - with the header's payload length and checksum fixed up to match the
 *     bytes (when there is a header), loaded into a small fresh store, so the
 *     fuzzer gets past the checksum into the record walk and the puts.
 * Each copy is in a buffer of its exact size: a read past it is an ASan
 * report.
 *
 * Oracles beyond the sanitizers and the leak checker: the result agrees with
 * an independent walk of the documented format (header fields, records that
 * exactly fill the payload); a refusal is -EBADMSG with a message; loading
 * into a store returns what validation returns; the store never holds more
 * than its capacity, and every key it serves comes back with the body of one
 * of that key's records.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/degraded.h"

#define HDR 40
#define REC 16
#define CAP 8

static uint64_t get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* The format as documented: -1 when invalid, else the record count. */
static long long reference(const unsigned char *p, size_t len)
{
    if (len < HDR || memcmp(p, "GWDEGRAD", 8) != 0) return -1;
    if (get_le(p + 8, 4) != 1 || get_le(p + 12, 4) != 0) return -1;
    uint64_t count = get_le(p + 16, 8), payload = get_le(p + 24, 8);
    if (payload != len - HDR || count > INT_MAX) return -1;
    if (fnv1a(fnv1a(0xcbf29ce484222325ull, p + HDR, payload), p, 32) != get_le(p + 32, 8))
        return -1;
    size_t off = HDR;
    for (uint64_t i = 0; i < count; i++) {
        if (len - off < REC) return -1;
        uint64_t n = get_le(p + off + 8, 4) + get_le(p + off + 12, 4);
        off += REC;
        if (len - off < n) return -1;
        off += n;
    }
    return off == len ? (long long)count : -1;
}

static int parse(struct degraded *d, const unsigned char *p, size_t len)
{
    char err[256];
    err[0] = '\0';
    int rc = degraded_snapshot_parse(d, p, len, err, sizeof err);
    if (rc < 0 && (rc != -EBADMSG || err[0] == '\0' || !memchr(err, '\0', sizeof err))) abort();
    if (rc != reference(p, len) && !(rc < 0 && reference(p, len) < 0)) abort();
    return rc;
}

/* Every key the store serves has the body of one of its records. */
static void check_store(struct degraded *d, const unsigned char *p, int count)
{
    if (degraded_count(d) > CAP || degraded_count(d) > (size_t)count) abort();
    size_t off = HDR;
    for (int i = 0; i < count; i++) {
        size_t klen = get_le(p + off + 8, 4), blen = get_le(p + off + 12, 4);
        const unsigned char *key = p + off + REC;
        off += REC + klen + blen;
        const struct degraded_entry *e = degraded_get(d, key, klen, UINT32_MAX);
        if (!e) continue; /* evicted: a small store */
        if (e->klen != klen || memcmp(e->key, key, klen) != 0 || e->body[e->len] != '\0') abort();
        bool found = false;
        size_t o2 = HDR;
        for (int j = 0; j < count && !found; j++) {
            size_t k2 = get_le(p + o2 + 8, 4), b2 = get_le(p + o2 + 12, 4);
            const unsigned char *r = p + o2 + REC;
            found = k2 == klen && memcmp(r, key, klen) == 0 && b2 == e->len &&
                    memcmp(r + k2, e->body, b2) == 0;
            o2 += REC + k2 + b2;
        }
        degraded_release(d, e);
        if (!found) abort();
    }
}

static struct degraded *refused;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    refused = degraded_new(CAP);
    if (!refused) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *p = malloc(size ? size : 1);
    if (!p) abort();
    memcpy(p, data, size);
    parse(NULL, p, size);

    if (size >= HDR) {
        put_le(p + 24, size - HDR, 8);
        put_le(p + 32, fnv1a(fnv1a(0xcbf29ce484222325ull, p + HDR, size - HDR), p, 32), 8);
        int validated = parse(NULL, p, size);
        if (validated < 0) {
            /* a refused file stores nothing: one long-lived store stays empty */
            if (parse(refused, p, size) >= 0 || degraded_count(refused) != 0) abort();
        } else {
            /* a fresh store per accepted file (freeing it waits a grace period) */
            struct degraded *d = degraded_new(CAP);
            if (!d) abort();
            if (parse(d, p, size) != validated) abort();
            check_store(d, p, validated);
            degraded_free(d);
        }
    }
    free(p);
    return 0;
}
