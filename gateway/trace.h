/*
 * trace: the request identity headers a gateway reads and writes.
 *
 * - W3C Trace Context `traceparent` (https://www.w3.org/TR/trace-context/):
 *   strict parsing, formatting, new trace and span ids.
 * - `X-Request-Id`: validity check and new ids.
 * - `X-Request-Timeout-Ms`: the client's deadline request.
 *
 * Ids come from a per-thread xoshiro256** generator seeded once per thread
 * from getrandom(2): a few ns per id, no lock, no syscall on the hot path.
 * They are unpredictable enough for correlation, not for secrets.
 */
#ifndef GATEWAY_TRACE_H
#define GATEWAY_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRACE_ID_BYTES       16
#define TRACE_SPAN_BYTES     8
#define TRACEPARENT_LEN      55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define TRACE_FLAG_SAMPLED   0x01
#define TRACE_REQUEST_ID_MAX 128
#define TRACE_REQUEST_ID_LEN 32 /* of a generated id, hex */

struct trace_parent {
    uint8_t trace_id[TRACE_ID_BYTES];
    uint8_t span_id[TRACE_SPAN_BYTES]; /* "parent-id" in the header */
    uint8_t flags;
};

/* Parses a traceparent header value s[0..n). Version 00 must be exactly 55
 * characters; a later version (01..fe) may be longer when character 55 is
 * '-' (its extra fields are ignored, as the spec asks). Hex must be lower
 * case; version ff, an all-zero trace id or an all-zero parent id are
 * invalid. Returns 0 and fills *tp, or -EINVAL (then the caller starts a new
 * trace). */
int trace_parse(const char *s, size_t n, struct trace_parent *tp);

/* Writes tp as a version-00 header value: 55 characters and a NUL. */
void trace_format(const struct trace_parent *tp, char out[TRACEPARENT_LEN + 1]);

/* Writes n bytes of id as 2n lower-case hex characters and a NUL (for the
 * access log's trace id: n = TRACE_ID_BYTES, out[33]). */
void trace_hex(const uint8_t *id, size_t n, char *out);

/* A new trace: random non-zero trace and span ids, the given flags. */
void trace_start(struct trace_parent *tp, uint8_t flags);

/* A child span of parent: same trace id and flags, a new random non-zero
 * span id. child may be parent. */
void trace_child(const struct trace_parent *parent, struct trace_parent *child);

/* Random ids, never all zero. */
void trace_new_trace_id(uint8_t id[TRACE_ID_BYTES]);
void trace_new_span_id(uint8_t id[TRACE_SPAN_BYTES]);

/* 64 random bits from this thread's generator. */
uint64_t trace_rand64(void);

/* True when s[0..n) is a usable X-Request-Id: 1 to 128 characters, each
 * printable ASCII other than space (0x21..0x7e). */
bool trace_request_id_valid(const char *s, size_t n);

/* Writes a new request id: 32 lower-case hex characters and a NUL. */
void trace_request_id_new(char out[TRACE_REQUEST_ID_LEN + 1]);

/* Parses an X-Request-Timeout-Ms value (NUL-terminated): decimal digits
 * only (no sign, no spaces, leading zeros allowed), value 1..INT32_MAX
 * milliseconds (~24.8 days; anything larger is not a plausible deadline and
 * is refused rather than clamped). Returns 0 and sets *out, or -EINVAL (the
 * client gets a 400). */
int trace_parse_timeout_ms(const char *s, uint32_t *out);

#endif
