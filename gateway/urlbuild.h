/*
 * urlbuild: the backend URL of one call, from the backend's URL template,
 * the route params and the client's query string.
 *
 * Each param is percent-decoded once and re-encoded as exactly one path
 * segment: every byte but the RFC 3986 unreserved ones (ALPHA DIGIT - . _ ~)
 * becomes %XX, so a param can never add a segment, a query or a fragment; a
 * param that decodes to "." or ".." is written "%2E" / "%2E%2E" so that no
 * dot-segment removal (curl's, a proxy's) can climb out of its segment.
 *
 * Then the endpoint's forward_query names, in config order: the first
 * occurrence of each in the client's raw query (names compared after
 * decoding) is appended as name=value with '?' or '&' as the template needs.
 * Query names and values are decoded with form semantics ('+' is a space)
 * and re-encoded with the same strict set (a space becomes %20, a literal
 * '+' arrives as %2B), so what a form decoder reads is unchanged.
 *
 * Two forms: urlbuild() writes the whole URL; urlbuild_origin() and
 * urlbuild_path() write the fixed "scheme://host:port" and the per-request
 * "/path?query" apart, for a prebuilt CURLU whose path alone is set per
 * request (docs/perf.md K6). No allocation beyond the
 * output buffer's growth.
 */
#ifndef GATEWAY_URLBUILD_H
#define GATEWAY_URLBUILD_H

#include <stddef.h>

#include "core/buf.h"
#include "gateway/config.h"
#include "gateway/router.h"

/* A route param longer than this (raw, still encoded) is refused. */
#define URLBUILD_PARAM_MAX 1024
/* A built path ("/a/b", without the query) must be shorter than this: the
 * longest the transports take (upstream_curl.c copies it into 2 KiB). */
#define URLBUILD_PATH_MAX 2048

/* Appends the backend URL for this request to out: origin, path with params
 * substituted, forwarded query. raw_query is the client's query string
 * without the '?' (may be NULL when query_len is 0). Returns 0, or:
 *   -EILSEQ        a param or a forwarded query value has malformed
 *                  percent-encoding or decodes to a NUL byte (the client's
 *                  error: 400);
 *   -E2BIG         a param is longer than URLBUILD_PARAM_MAX (414);
 *   -ENAMETOOLONG  the path is URLBUILD_PATH_MAX or longer (414);
 *   -EINVAL        the template is not usable (a param refers past
 *                  m->n_params, a param inside the origin): a config bug;
 *   -ENOMEM.
 * On failure out is left as it was. */
int urlbuild(buf_t *out, const struct endpoint_conf *ep, const struct backend_conf *b,
             const struct route_match *m, const char *raw_query, size_t query_len);

/* Like urlbuild() without the origin: appends "/path?query" (at least "/").
 */
int urlbuild_path(buf_t *out, const struct endpoint_conf *ep, const struct backend_conf *b,
                  const struct route_match *m, const char *raw_query, size_t query_len);

/* Writes the value of a placeholder that is not a route param
 * ({user.id}, {item.sku}: part->field set) at the end of out. Returns 0
 * or a negative errno, which urlbuild_path_fields returns. */
typedef int (*urlbuild_field_fn)(void *arg, buf_t *out, const struct url_part *part);

/* urlbuild_path with the body placeholders rendered by field(arg, ...);
 * with field NULL they are left empty (urlbuild_path: what the client sent
 * can be checked before the bodies the values come from exist). */
int urlbuild_path_fields(buf_t *out, const struct endpoint_conf *ep, const struct backend_conf *b,
                         const struct route_match *m, const char *raw_query, size_t query_len,
                         urlbuild_field_fn field, void *arg);

/* Writes the template's "scheme://authority" into out[0..cap) with a NUL.
 * Returns its length, -EINVAL when the template has no "://" or a param
 * inside the origin, -ENOSPC when it does not fit. Fixed per backend: call it
 * once per config snapshot. */
int urlbuild_origin(const struct backend_conf *b, char *out, size_t cap);

/* Appends s[0..n) with every byte but the unreserved ones as %XX (upper-case
 * hex). Returns 0 or -ENOMEM. */
int urlbuild_encode(buf_t *out, const char *s, size_t n);

#endif
