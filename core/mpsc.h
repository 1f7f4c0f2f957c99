/*
 * mpsc: an intrusive multi-producer single-consumer queue (Dmitry Vyukov's
 * "non-intrusive MPSC node-based queue", in its intrusive form).
 *
 * Producers on any thread push with one atomic exchange and one store: no
 * lock, no CAS loop, wait-free. One consumer thread pops. Items come out in
 * the order their exchanges happened, so each producer's items keep their
 * order.
 *
 * Memory orders:
 *   push:  n->next = NULL (relaxed; published by the release below)
 *          prev = exchange(&head, n, acq_rel)   -- orders the producer's
 *                 writes to the item before it; the acquire half pairs with
 *                 other producers' exchanges so prev is a valid node
 *          store(&prev->next, n, release)       -- publishes n and its
 *                 payload to the consumer
 *   pop:   load(&tail->next, acquire)           -- pairs with that release:
 *                 after it the consumer sees the item's payload
 *          load(&head, acquire) to tell "empty" from "a producer is between
 *                 its exchange and its link"
 *   mpsc_empty loads head with seq_cst so a consumer can pair it with a
 *   seq_cst "I am going to sleep" flag (see loop.c) in a Dekker handshake.
 *
 * The in-between window: after a producer's exchange and before its link
 * store, pop returns NULL although the queue is not empty (mpsc_empty says
 * false). The producer finishes within a few instructions; the consumer
 * just tries again later. The queue never loses or duplicates an item.
 *
 * A pushed node must stay valid until the consumer has popped it. The queue
 * holds no memory of its own: mpsc_init only, no destroy.
 */
#ifndef CORE_MPSC_H
#define CORE_MPSC_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* Embed in your item; recover the item with container_of (core/container_of.h). */
struct mpsc_node {
    _Atomic(struct mpsc_node *) next; /* private */
};

struct mpsc_queue {
    /* private; producers write head, the consumer owns tail: keep them on
     * separate cache lines so the consumer does not steal the producers'. */
    alignas(64) _Atomic(struct mpsc_node *) head;
    alignas(64) struct mpsc_node *tail;
    struct mpsc_node stub;
};

/* Makes q empty. Not thread-safe: before any producer or consumer uses q. */
void mpsc_init(struct mpsc_queue *q);
/* Appends n. Any thread; wait-free. n must not already be queued. */
void mpsc_push(struct mpsc_queue *q, struct mpsc_node *n);
/* Removes the oldest item, or returns NULL when the queue is empty or the
 * newest producer has not finished linking (retry later). Consumer only. */
struct mpsc_node *mpsc_pop(struct mpsc_queue *q);
/* True when nothing is queued or in flight. Consumer only. */
bool mpsc_empty(struct mpsc_queue *q);

#endif
