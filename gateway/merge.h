/*
 * merge: one JSON object out of the backends' bodies.
 *
 * Parts are written in config order. A backend with a "key" becomes
 * "key": <its body>; one without a key has its object's members spliced at
 * the top level (an empty {} adds nothing). "allow" keeps only the listed
 * top-level members of the body, in the body's order.
 *
 * Nothing is re-encoded: the bodies' raw bytes (validated by merge_check) are
 * copied, so numbers and strings arrive exactly as the backend wrote them
 * (docs/perf.md K8: a cJSON print costs ~12 us and rewrites 64.0 as
 * 64). allow filtering walks the members with gateway/json.h's iterator and
 * copies the kept ones raw, also without a parse tree or an allocation.
 *
 * The answer never holds two top-level members with the same name (names
 * compared after decoding escapes, so "\u0061" is "a"): when two key-less
 * backends, a key and a backend's member, or one body itself repeat a name,
 * the later one in config (and body) order wins and is written at the
 * first one's position, as a dict update would. The members of key-less
 * bodies are found by skipping (the bodies were validated by merge_check)
 * and their names compared: pairwise for up to 16 members, else in a table
 * with a per-process random hash seed; when names collide too often (an
 * input built against the hash) the table gives way to a sort, so the cost
 * is O(m) expected and O(m log m) at worst for m members, never quadratic.
 * When no name repeats, the bodies are spliced as before; a repeat costs
 * one rewrite of the members as "name":value (still raw bytes). Measured
 * on a 1 MB body of 20,000 members: about 2x the cost of validating it.
 * Names inside a keyed value are the backend's own business and left alone.
 */
#ifndef GATEWAY_MERGE_H
#define GATEWAY_MERGE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "gateway/config.h"

enum merge_part_kind {
    MERGE_PART_BODY, /* body[0..len) is the backend's answer (len 0: null) */
    MERGE_PART_NULL, /* null: "key": null, or nothing without a key */
    MERGE_PART_OMIT, /* leave this backend out */
};

struct merge_part {
    const struct backend_conf *b;
    const char *body; /* accepted by merge_check(b, ...) */
    size_t len;
    enum merge_part_kind kind;
};

/* Appends the merged object for parts[0..n) to out. The bodies must have
 * passed merge_check for their backend. Returns 0; -EINVAL when a body does
 * not have the shape its backend needs (not an object where one is needed:
 * merge_check was skipped); -ENOMEM. On failure out is left as it was. */
int merge_build(buf_t *out, const struct merge_part *parts, size_t n);

/* Two parts gave a member the same name (on_conflict "error"). */
struct merge_conflict {
    const char *name; /* decoded, NUL-terminated (cut to fit buf) */
    size_t name_len;
    size_t a, b; /* the parts: the first and the last that have it */
    char buf[128];
};

/* merge_build with the endpoint's on_conflict for names repeated across
 * parts: CONFLICT_LAST as merge_build; CONFLICT_FIRST keeps the first value
 * (at the first position); CONFLICT_ERROR returns -EEXIST with *cf (may be
 * NULL) naming the member and the two parts. A name repeated inside one
 * body is not a conflict: its last value wins under every policy but
 * "first". */
int merge_build_policy(buf_t *out, const struct merge_part *parts, size_t n,
                       enum on_conflict policy, struct merge_conflict *cf);

/* Is body[0..len) acceptable from backend b? Returns 0 when it is valid JSON
 * of the right shape: an object when b has no key or has allow; anything
 * with a key. An empty body is accepted as null (a 204 or an empty 2xx is a
 * success; without a key it adds nothing). Otherwise -1 with *why set to a
 * static reason ("invalid JSON", "not an object"); why may be NULL. */
int merge_check(const struct backend_conf *b, const char *body, size_t len, const char **why);

/* Tests only: find repeated names by the sort that is otherwise the
 * fallback for colliding names (so that path is tested too). */
void merge_test_force_sort(bool on);

#endif
