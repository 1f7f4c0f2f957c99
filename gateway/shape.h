/*
 * shape: one backend's body reshaped before the merge, on the bytes.
 *
 * In this order: "target" (the sub-value at a dot path replaces the body;
 * absent = the body is invalid), "allow" or "deny" (dot paths to keep or to
 * drop, at any depth; an all-digit segment is an array index, so
 * "items.0.sku" keeps or drops that field of the first element only),
 * "rename" (top-level member names). A path into a member that is absent or
 * into a scalar matches nothing.
 *
 * The input must have passed json_check. Members are found by skipping
 * (gateway/jpath.h) and copied as raw bytes: no parse tree, and numbers and
 * strings that are not changed are never re-encoded (a renamed member's new
 * name is the only thing written that the backend did not send). Measured
 * against cJSON (parse, detach, print) in tests/gateway/test_shape.c's
 * timing: see the README. Recursion is bounded by the number of segments of
 * the longest path (SHAPE_MAX_SEGS).
 */
#ifndef GATEWAY_SHAPE_H
#define GATEWAY_SHAPE_H

#include <stddef.h>

#include "core/buf.h"
#include "gateway/config.h"

/* Config limits: paths per allow/deny list, segments per path. */
#define SHAPE_MAX_PATHS 64
#define SHAPE_MAX_SEGS  32

/* Appends body[0..len) (valid JSON; len 0 is null) shaped by sh to out.
 * Returns 0; -EINVAL with *why = "missing target" when the target is
 * absent; -ENOMEM. out is unchanged on error. */
int shape_apply(buf_t *out, const struct shape_conf *sh, const char *body, size_t len,
                const char **why);

#endif
