/*
 * cache_result: how the cache answered one call, and its name.
 *
 * The one list of cache results: cache.c decides them, metrics.c counts them
 * (the enum, less CACHE_HIT, is the index of the counter in a series, so
 * counting costs no string compare), the access log and Server-Timing print
 * their names. Kept apart from cache.h so that metrics.h can name it
 * without including the cache (which includes metrics.h through attempt.h).
 * The values are dense; the order of the results is the order of
 * gateway_cache_requests_total's series.
 */
#ifndef GATEWAY_CACHE_RESULT_H
#define GATEWAY_CACHE_RESULT_H

/* How a call was answered (CACHE_NONE: the backend has no cache). */
enum cache_result {
    CACHE_NONE,
    CACHE_HIT,
    CACHE_MISS,
    CACHE_COALESCED,
    CACHE_RESULT_COUNT /* not a result: one past the last */
};

/* "hit", "miss", "coalesced"; NULL for CACHE_NONE, "?" for a value out of
 * range. */
static inline const char *cache_result_name(enum cache_result r)
{
    static const char *const names[CACHE_RESULT_COUNT] = {
        [CACHE_NONE] = NULL,
        [CACHE_HIT] = "hit",
        [CACHE_MISS] = "miss",
        [CACHE_COALESCED] = "coalesced",
    };
    return (unsigned)r < CACHE_RESULT_COUNT ? names[r] : "?";
}

#endif
