/*
 * graph: the call graph of an endpoint whose backends read each other's
 * bodies ({user.id} placeholders, foreach sources), and the per-request
 * scheduling state that starts a backend once every backend it reads has
 * ended.
 *
 * Config time (config_endpoint.c calls graph_resolve once an endpoint's backends are
 * parsed): placeholders and foreach sources are resolved to backend
 * indices (the longest backend name followed by '.' wins, so a backend may
 * be called "a.b"), dependencies and children are listed once each, and
 * unknown names, self references, {item} outside a foreach backend and
 * cycles are reported with the JSON path of the URL (or of the foreach):
 *     endpoints[0].backends[2].url: cycle a -> b -> a
 *
 * Run time: graph_render writes one placeholder's value, percent-encoded
 * as one segment; struct graph_sched is a FIFO of ready tasks (a backend,
 * or one item of a foreach backend) plus a count of unfinished
 * dependencies per backend. Config order is kept among tasks that become
 * ready together, so items start in input order. Loop-affine, no locks.
 */
#ifndef GATEWAY_GRAPH_H
#define GATEWAY_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "gateway/config.h"

struct loader;

/* Resolves the placeholders and foreach sources of ep's backends and builds
 * their deps / children; reports problems under path ("endpoints[0]").
 * Sets ep->graph when any backend depends on another. */
void graph_resolve(struct loader *L, struct endpoint_conf *ep, const char *path);

/* Does the backend's URL read another body or a foreach element? */
bool graph_url_has_fields(const struct backend_conf *b);

/* Appends the value of placeholder part (a {backend.path} or {item...}
 * one) read from src[0..len) (the parent's body, or the foreach element),
 * a valid JSON text; len 0 is null. A string is used decoded, a number or
 * boolean as written; every byte but the unreserved ones becomes %XX, and
 * "." / ".." become %2E / %2E%2E, so the value stays one segment.
 * Returns 0; -ENOENT when the field is missing, null, an object or an
 * array (or a string holding a NUL); -ENOMEM. out is unchanged on error. */
int graph_render(buf_t *out, const struct url_part *part, const char *src, size_t len);

/* "user.id" / "item.sku" of a placeholder, for messages. */
const char *graph_part_name(const struct url_part *part);

#define GRAPH_WHOLE UINT32_MAX /* graph_task.item of a backend (not an item) */

struct graph_task {
    uint32_t call; /* backend index */
    uint32_t item; /* item index, or GRAPH_WHOLE */
};

struct graph_sched {
    uint32_t *pending; /* per backend: dependencies that have not ended */
    struct graph_task *q;
    size_t head, tail, cap;
    uint32_t pending_small[16];
    struct graph_task q_small[32];
};

/* Sets s up for ep with every backend without dependencies queued, in
 * config order. Returns 0 or -ENOMEM. */
int graph_sched_init(struct graph_sched *s, const struct endpoint_conf *ep);
void graph_sched_free(struct graph_sched *s);
/* Queues a task. 0 or -ENOMEM. */
int graph_sched_push(struct graph_sched *s, struct graph_task t);
/* Takes the oldest ready task; false when none. */
bool graph_sched_pop(struct graph_sched *s, struct graph_task *t);
/* Ready tasks queued. */
static inline size_t graph_sched_ready(const struct graph_sched *s)
{
    return s->tail - s->head;
}
/* Backend i of ep has ended: queues each child whose last dependency it was.
 * Returns 0 or -ENOMEM. */
int graph_sched_ended(struct graph_sched *s, const struct endpoint_conf *ep, size_t i);

#endif
