/* mpsc: Vyukov's intrusive MPSC queue. Memory orders: see core/mpsc.h. */
#include "core/mpsc.h"

void mpsc_init(struct mpsc_queue *q)
{
    atomic_store_explicit(&q->stub.next, NULL, memory_order_relaxed);
    atomic_store_explicit(&q->head, &q->stub, memory_order_relaxed);
    q->tail = &q->stub;
}

void mpsc_push(struct mpsc_queue *q, struct mpsc_node *n)
{
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    /* seq_cst rather than acq_rel: loop.c's sleep handshake needs this
     * exchange and the producer's next load to be totally ordered with the
     * consumer's flag store (on x86 and aarch64 it costs the same). */
    struct mpsc_node *prev = atomic_exchange_explicit(&q->head, n, memory_order_seq_cst);
    atomic_store_explicit(&prev->next, n, memory_order_release);
}

struct mpsc_node *mpsc_pop(struct mpsc_queue *q)
{
    struct mpsc_node *tail = q->tail;
    struct mpsc_node *next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (tail == &q->stub) {
        if (!next) return NULL;
        /* Skip the stub: it is only there so head is never NULL. */
        q->tail = next;
        tail = next;
        next = atomic_load_explicit(&next->next, memory_order_acquire);
    }
    if (next) {
        q->tail = next;
        return tail;
    }
    /* tail is the last linked node. If head moved past it, a producer is
     * between its exchange and its link: come back later. */
    struct mpsc_node *head = atomic_load_explicit(&q->head, memory_order_acquire);
    if (tail != head) return NULL;
    /* tail is the very last node: re-insert the stub behind it so tail can
     * be handed out while the queue stays non-empty. */
    mpsc_push(q, &q->stub);
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next) {
        q->tail = next;
        return tail;
    }
    return NULL;
}

bool mpsc_empty(struct mpsc_queue *q)
{
    /* When drained, tail and head both point at the stub (pop leaves tail on
     * a real node only while head is ahead of it). */
    return atomic_load_explicit(&q->head, memory_order_seq_cst) == q->tail;
}
