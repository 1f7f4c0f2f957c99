/*
 * jpath: dot paths into JSON documents that were already validated
 * (json_check), for the composition features: placeholder values
 * ({user.id}), foreach sources and shaping (gateway/shape.h).
 *
 * A dot path is member names separated by '.'; an all-digit segment (no
 * leading zero) indexes an array ("orders.items.0.sku"). Members are found
 * by skipping, without validating again and without allocating: the input
 * must have passed json_check, otherwise the functions stay inside the bytes
 * and report "absent" or -EINVAL, never more (fuzzed with shape.c).
 */
#ifndef GATEWAY_JPATH_H
#define GATEWAY_JPATH_H

#include <stdbool.h>
#include <stddef.h>

#include "gateway/json.h"

/* Syntax of a dot path: non-empty, no empty segment (no leading, trailing or
 * doubled '.'). */
bool jpath_valid(const char *path, size_t n);

/* The type of the value starting at v (its first byte), JSON_INVALID when
 * vlen is 0 or it starts with nothing JSON. */
enum json_type jpath_type(const char *v, size_t vlen);

/* The value at path[0..plen) in doc[0..n) (plen 0: the whole document,
 * whitespace trimmed). Returns its type and sets *v, *vlen to its raw bytes;
 * JSON_INVALID when the path names nothing (a member absent, an index past
 * the end, a segment into a scalar). */
enum json_type jpath_get(const char *doc, size_t n, const char *path, size_t plen, const char **v,
                         size_t *vlen);

/* Iterates the members of an object or the elements of an array. */
struct jpath_iter {
    const char *p, *e; /* private */
    bool array;        /* read-only */
    size_t index;      /* read-only: index of the next element */
};
/* v[0..vlen) must be one object or array (raw, no surrounding whitespace
 * needed). False when it is neither. */
bool jpath_iter_start(struct jpath_iter *it, const char *v, size_t vlen);
/* The next member (for an array: name NULL, name_len 0). Returns 1, 0 at the
 * end, -EINVAL on bytes that are not valid JSON. */
int jpath_iter_next(struct jpath_iter *it, struct json_member *m);

/* Does segment seg[0..n) (a dot path's, not decoded) name member m of an
 * object (decoded name equal) or, when in_array, element index? */
bool jpath_seg_matches(const char *seg, size_t n, const struct json_member *m, bool in_array,
                       size_t index);

#endif
