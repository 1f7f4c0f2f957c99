/*
 * cachectl: a backend's Cache-Control response header, reduced to what the
 * response cache needs (RFC 9111 §5.2.2), and the freshness rule built on it.
 * Pure: no I/O, no allocation, no global state. Both transports feed every
 * response header line they see through cachectl_header (other names are
 * ignored), so struct upstream_resp carries the result to gateway/cache.c.
 *
 * Conservative by design: anything the parser does not fully understand in
 * a directive it relies on -- a malformed list, a value over
 * CACHECTL_MAX_VALUE bytes, a max-age that is not plain digits, overflows
 * or is repeated -- marks the answer CC_INVALID, which means "do not serve
 * from the cache", never "cache for long". Unknown directives are ignored.
 * private="..." and no-cache="..." (the field-name forms) count as the
 * whole directive.
 */
#ifndef GATEWAY_CACHECTL_H
#define GATEWAY_CACHECTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The Cache-Control bytes (all its fields together) one answer may carry. */
#define CACHECTL_MAX_VALUE 1024
/* The longest freshness honoured: what ttl_ms may be (24 h). */
#define CACHECTL_MAX_FRESH_MS (24u * 3600u * 1000u)

enum {
    CC_NO_STORE = 1 << 0,
    CC_PRIVATE = 1 << 1,
    CC_NO_CACHE = 1 << 2,
    CC_INVALID = 1 << 3,  /* malformed, huge, or an overflowing age */
    CC_MAX_AGE = 1 << 4,  /* max_age is set */
    CC_S_MAXAGE = 1 << 5, /* s_maxage is set */
};

/* All zero (as in a zero-initialised struct upstream_resp): no Cache-Control. */
struct cache_control {
    uint32_t max_age;  /* seconds, with CC_MAX_AGE */
    uint32_t s_maxage; /* seconds, with CC_S_MAXAGE */
    uint32_t flags;    /* CC_* */
    uint32_t bytes;    /* Cache-Control value bytes seen (the size bound) */
};

/* A response with no Cache-Control (all zero). */
void cachectl_init(struct cache_control *cc);

/* Feeds one response header field; only Cache-Control (case-insensitive
 * name) is looked at, and several such fields add up as one list. */
void cachectl_header(struct cache_control *cc, const char *name, size_t name_len, const char *value,
                     size_t value_len);

/* cachectl_header in the shape of h1resp's h1_header_fn (gateway/h1resp.h),
 * for the native transport: h1resp_on_header(p, cachectl_h1_header,
 * &resp->cc). arg is a struct cache_control *; returns 0 (never aborts). */
int cachectl_h1_header(void *arg, const char *name, size_t name_len, const char *value,
                       size_t value_len);

/* Feeds one raw header line as libcurl hands it ("Name: value\r\n"); a
 * status line ("HTTP/...") starts a new header block (after a 1xx). */
void cachectl_line(struct cache_control *cc, const char *line, size_t len);

/* How long an answer with cc stays fresh, in ms (0: never served from the
 * cache). honor: the backend's directives decide (s-maxage, else max-age,
 * else ttl_ms; no-store, private, no-cache: 0); otherwise ttl_ms, except
 * that no-store is still obeyed. CC_INVALID is 0 either way. Never more than
 * CACHECTL_MAX_FRESH_MS. */
uint32_t cachectl_fresh_ms(const struct cache_control *cc, bool honor, uint32_t ttl_ms);

#endif
