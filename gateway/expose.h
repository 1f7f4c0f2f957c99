/*
 * expose: an endpoint's "expose_headers" -- backend response headers copied
 * onto the client's answer (README.md, "Endpoint" reference).
 *
 * Owns: which names may be exposed (expose_refused, for the config check),
 * the capture of their values from a backend's response header block (both
 * transports feed it: native through h1resp's header callback, libcurl
 * through its raw header lines), and the choice of the value the client
 * gets.
 *
 * Rules (README, endpoint reference):
 *   - a value over EXPOSE_MAX_VALUE bytes, or holding a control character
 *     other than HTAB (or DEL), is dropped: that backend does not have the
 *     header. A header sent several times is joined with ", " (RFC 9110
 *     §5.3); the joined value obeys the same cap;
 *   - only the final response's header block counts (not a 1xx, not
 *     trailers);
 *   - the value a client gets is the one of the first backend in config
 *     order that has it among the captures fanout kept: fanout resets the
 *     capture of every call that did not end with a fresh 2xx answer
 *     (degraded, static, omitted, failed, a cache hit), and foreach items,
 *     coalesced calls and hedges are never captured.
 *
 * Memory: one calloc per request (expose_new), only for endpoints that list
 * names: n_calls x n_names x (EXPOSE_MAX_VALUE + 1) bytes of values. A
 * struct expose_cap belongs to one call; every function here takes NULL for
 * "no capture" and does nothing, so the transports call them unconditionally.
 *
 * Thread safety: none needed (one request lives on one worker's loop).
 */
#ifndef GATEWAY_EXPOSE_H
#define GATEWAY_EXPOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EXPOSE_MAX_NAMES 16
#define EXPOSE_MAX_VALUE 511

/* The captured values of one backend response. */
struct expose_cap {
    /* private */
    const char *const *names_;
    size_t n_names_;
    uint32_t have_; /* bit j: names_[j] seen (with a value kept so far) */
    uint32_t bad_;  /* bit j: dropped (too long, control character) */
    bool trailers_; /* curl: the header block ended, lines now are trailers */
    uint16_t len_[EXPOSE_MAX_NAMES];
    char *vals_; /* n_names_ slots of EXPOSE_MAX_VALUE + 1 bytes, NUL-terminated */
};

struct expose_set;

/* NULL when name may be exposed, else why not (static text): a header the
 * gateway sets or computes itself, hop-by-hop, framing, caching or
 * cookies. Case-insensitive. */
const char *expose_refused(const char *name);

/* The captures of one request: one per call, for names[0..n_names)
 * (n_names <= EXPOSE_MAX_NAMES; names must outlive the set). NULL when
 * n_names is 0 (nothing to do) or out of memory. */
struct expose_set *expose_new(const char *const *names, size_t n_names, size_t n_calls);
void expose_free(struct expose_set *s);

/* Call i's capture; NULL when s is NULL or i is out of range. */
struct expose_cap *expose_cap(struct expose_set *s, size_t i);

/* Forgets what c captured (a new attempt, or an answer that does not
 * count). */
void expose_reset(struct expose_cap *c);

/* One header field of the final response: name[0..name_len) as received,
 * value[0..value_len) without surrounding SP/HTAB. */
void expose_header(struct expose_cap *c, const char *name, size_t name_len, const char *value,
                   size_t value_len);

/* One raw header line as libcurl hands it ("Name: value\r\n"): a status
 * line starts a new block (after a 1xx), the empty line ends it (what
 * follows is trailers, ignored). */
void expose_line(struct expose_cap *c, const char *line, size_t len);

/* What call c captured for names[j] (NUL-terminated), or NULL. */
const char *expose_cap_value(const struct expose_cap *c, size_t j);

/* The value the client gets for names[j]: the first call in index (config)
 * order that has it. NULL when none does or s is NULL. */
const char *expose_value(const struct expose_set *s, size_t j);

/* names[j] of s (for the caller that copies the values). */
size_t expose_n_names(const struct expose_set *s);
const char *expose_name(const struct expose_set *s, size_t j);

#endif
