/*
 * Fuzz target: Cache-Control parsing and the freshness rule
 * (gateway/cachectl.h).
 *
 * Input: one or more Cache-Control values separated by '\n', each fed as
 * its own field (a copy of its exact size, no NUL terminator), then the
 * whole input once more as a raw curl header line.
 *
 * Oracles beyond the sanitizers: an age is present only with its flag and
 * never over 2^31 s; freshness is never over CACHECTL_MAX_FRESH_MS, is 0
 * for a malformed or no-store answer whatever the settings, and is 0 with
 * honor_headers for private and no-cache; feeding the same fields twice
 * from a fresh state gives the same result.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/cachectl.h"

static void feed_all(struct cache_control *cc, const uint8_t *data, size_t size)
{
    cachectl_init(cc);
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i < size && data[i] != '\n') continue;
        size_t n = i - start;
        char *v = malloc(n ? n : 1);
        if (!v) abort();
        memcpy(v, data + start, n);
        cachectl_header(cc, "Cache-Control", 13, v, n);
        free(v);
        start = i + 1;
    }
}

static void check(const struct cache_control *cc)
{
    if (!(cc->flags & CC_MAX_AGE) && cc->max_age) abort();
    if (!(cc->flags & CC_S_MAXAGE) && cc->s_maxage) abort();
    if (cc->max_age > 2147483648u || cc->s_maxage > 2147483648u) abort();
    static const uint32_t ttls[] = {0, 1, 5000, CACHECTL_MAX_FRESH_MS};
    for (size_t t = 0; t < sizeof ttls / sizeof ttls[0]; t++) {
        for (int honor = 0; honor < 2; honor++) {
            uint32_t ms = cachectl_fresh_ms(cc, honor, ttls[t]);
            if (ms > CACHECTL_MAX_FRESH_MS) abort();
            if ((cc->flags & (CC_INVALID | CC_NO_STORE)) && ms) abort();
            if (honor && (cc->flags & (CC_PRIVATE | CC_NO_CACHE)) && ms) abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cache_control a, b;
    feed_all(&a, data, size);
    check(&a);
    feed_all(&b, data, size);
    if (memcmp(&a, &b, sizeof a) != 0) abort();

    char *line = malloc(size + 17);
    if (!line) abort();
    memcpy(line, "Cache-Control: ", 15);
    memcpy(line + 15, data, size);
    memcpy(line + 15 + size, "\r\n", 2);
    cachectl_init(&a);
    cachectl_line(&a, line, size + 17);
    check(&a);
    free(line);
    return 0;
}
