/*
 * chan: a bounded channel of pointers between coroutines of ONE loop.
 *
 * Go's chan semantics, minus select: chan_send parks the calling coroutine
 * while the channel is full, chan_recv while it is empty; a value handed to
 * a parked receiver goes to it directly (no copy through the buffer), so
 * capacity 0 is a rendezvous channel as in Go. Values are delivered in send
 * order; parked senders and receivers are served first come, first served.
 *
 * chan_close wakes every parked sender and receiver. After it, sends fail
 * with -EPIPE (Go panics; we report) and receives still drain what is
 * buffered, then fail with -EPIPE.
 *
 * Loop-affine, no locks or atomics: every call on the loop's thread, and the
 * blocking ones from a coroutine running on that loop (core/loop.h). Between
 * threads use loop_submit. Deadlines are CLOCK_MONOTONIC ns (mono_ns()),
 * 0 = none. Functions return 0 or a negative errno.
 */
#ifndef CORE_CHAN_H
#define CORE_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct chan chan_t;

/* A channel buffering up to cap values (0: unbuffered). NULL on
 * out-of-memory. */
chan_t *chan_new(size_t cap);
/* Frees ch. No coroutine may be parked on it (close it and let them run
 * first); buffered values are dropped, not freed. NULL is ignored. */
void chan_free(chan_t *ch);

/* Sends v, parking while the channel is full. 0 once v is buffered or taken
 * by a receiver; -EPIPE when ch is or gets closed (v was not delivered);
 * -ETIMEDOUT when deadline_ns passed first (v was not delivered); -EAGAIN
 * when it would park but the caller is not a coroutine. */
int chan_send(chan_t *ch, void *v, uint64_t deadline_ns);
/* Receives into *out, parking while the channel is empty. 0 with a value;
 * -EPIPE when ch is closed and drained; -ETIMEDOUT when deadline_ns passed
 * first; -EAGAIN when it would park but the caller is not a coroutine. *out
 * is written only on success. */
int chan_recv(chan_t *ch, void **out, uint64_t deadline_ns);
/* Never park: -EAGAIN instead. Usable from plain loop callbacks. */
int chan_try_send(chan_t *ch, void *v);
int chan_try_recv(chan_t *ch, void **out);

/* Closes ch and wakes every parked coroutine. Idempotent. */
void chan_close(chan_t *ch);
bool chan_closed(const chan_t *ch);
/* Values buffered right now, and the capacity. */
size_t chan_len(const chan_t *ch);
size_t chan_cap(const chan_t *ch);

#endif
