/*
 * loop: one event loop per thread, and the coroutine scheduler that runs on it.
 *
 * A loop owns an epoll fd, a timer min-heap ordered by (deadline, sequence)
 * with intrusive nodes, an eventfd for wake-ups, a run queue of ready
 * coroutines and an MPSC queue of functions submitted from other threads.
 *
 * One iteration (loop_run_once) does, in this order:
 *   1. run every ready coroutine (each until it parks, yields or ends);
 *   2. run the prepare hooks (e.g. "curl asked for a 0 ms timeout");
 *   3. epoll_wait with the earliest timer deadline as timeout (0 when
 *      coroutines became ready in step 2);
 *   4. refresh loop_now(), run due timers, dispatch fd events, drain the
 *      submit queue.
 *
 * Everything here except loop_submit() and loop_stop() must be called on the
 * loop's own thread. Times are CLOCK_MONOTONIC nanoseconds.
 * Functions returning int return 0 or a negative errno value.
 */
#ifndef CORE_LOOP_H
#define CORE_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/coro.h"

typedef struct loop loop_t;

/* ---- timers: embed a loop_timer_t in your struct, no allocation to arm ---- */
typedef struct loop_timer loop_timer_t;
typedef void (*loop_timer_fn)(loop_t *loop, loop_timer_t *t);
struct loop_timer {
    /* private */
    uint64_t deadline;
    uint64_t seq;
    uint32_t heap_index; /* UINT32_MAX when not armed */
    loop_timer_fn cb;
};

/* ---- fd watchers: embed a loop_io_t, level-triggered epoll ---- */
typedef struct loop_io loop_io_t;
typedef void (*loop_io_fn)(loop_t *loop, loop_io_t *io, uint32_t revents);
struct loop_io {
    int fd;          /* read-only */
    uint32_t events; /* read-only: EPOLLIN | EPOLLOUT | EPOLLRDHUP ... */
    loop_io_fn cb;   /* private */
};

/* ---- prepare hooks: run once per iteration before the loop polls ---- */
typedef struct loop_hook loop_hook_t;
typedef void (*loop_hook_fn)(loop_t *loop, loop_hook_t *h);
struct loop_hook {
    loop_hook_fn cb;   /* private */
    loop_hook_t *next; /* private */
};

/* Monotonic clock, fresh (a syscall-free vDSO read). */
uint64_t mono_ns(void);

/* Creates a loop bound to the calling thread (loop_current() returns it on
 * that thread from now on). NULL with errno set on failure. */
loop_t *loop_new(void);
/* Frees the loop. Coroutines still parked or queued on it are destroyed
 * without being resumed (their stacks are returned); callers should have
 * joined them. Functions submitted but not yet run are dropped. Armed
 * timers are disarmed without firing. */
void loop_free(loop_t *loop);
/* The loop of the calling thread, or NULL. */
loop_t *loop_current(void);

/* Cached time of the current iteration (refreshed after every poll). */
uint64_t loop_now(const loop_t *loop);

/* Runs iterations until loop_stop(). Returns 0. */
int loop_run(loop_t *loop);
/* One iteration; blocks in epoll at most timeout_ms (-1: until an event or
 * the next timer). Returns the number of callbacks + coroutines run. */
int loop_run_once(loop_t *loop, int timeout_ms);
/* Makes loop_run return after the current iteration. Thread-safe. */
void loop_stop(loop_t *loop);

void loop_timer_init(loop_timer_t *t, loop_timer_fn cb);
/* Arms (or re-arms) t to fire at deadline_ns. Equal deadlines fire in the
 * order they were armed. O(log n), no allocation. */
void loop_timer_start(loop_t *loop, loop_timer_t *t, uint64_t deadline_ns);
/* Disarms t; a stopped timer never fires. Safe on an unarmed timer. */
void loop_timer_stop(loop_t *loop, loop_timer_t *t);
static inline bool loop_timer_active(const loop_timer_t *t)
{
    return t->heap_index != UINT32_MAX;
}

/* Registers fd with events (EPOLL* flags); cb runs on the loop thread. */
int loop_io_start(loop_t *loop, loop_io_t *io, int fd, uint32_t events, loop_io_fn cb);
int loop_io_modify(loop_t *loop, loop_io_t *io, uint32_t events);
/* Unregisters; after it returns cb is not called again for io, even for
 * events already fetched in this iteration. */
int loop_io_stop(loop_t *loop, loop_io_t *io);

void loop_hook_add(loop_t *loop, loop_hook_t *h, loop_hook_fn cb);
void loop_hook_remove(loop_t *loop, loop_hook_t *h);

/* ---- coroutines ---- */

/* Creates a coroutine running fn(arg) and queues it to run on this loop.
 * When fn returns the loop frees the coroutine. NULL (errno set) when no
 * stack can be had; nothing is queued then. */
coro_t *loop_spawn(loop_t *loop, coro_fn fn, void *arg);

/* Parks the calling coroutine until loop_wake() or until deadline_ns
 * (0 = no deadline). Returns 0 when woken, -ETIMEDOUT when the deadline
 * passed. Callers re-check their condition: a wake carries no payload.
 * Only for coroutines loop_spawn'ed on the calling thread's loop (-EPERM
 * elsewhere). Costs no allocation: the park record lives on the caller's
 * stack. */
int loop_park(uint64_t deadline_ns);
/* Makes a parked coroutine ready. A no-op when co is not parked (already
 * ready or running), so waking twice is harmless. Loop thread only. */
void loop_wake(coro_t *co);
/* Puts the calling coroutine at the back of the run queue. */
void loop_yield(void);
/* Parks the calling coroutine for ns nanoseconds (from loop_now()).
 * Returns 0. A loop_wake() ends the sleep early (how a cancellation reaches
 * a sleeper). */
int loop_sleep(uint64_t ns);
/* Parks until fd has one of events or deadline_ns passes. Returns the
 * revents (> 0) or -ETIMEDOUT. Also: -EINTR when loop_wake()'d before any
 * event; -EEXIST (or another epoll_ctl error) when fd is already watched
 * on this loop (a one-shot registration is added and removed per call). */
int loop_wait_fd(int fd, uint32_t events, uint64_t deadline_ns);

/* ---- other threads ---- */

/* Runs fn(arg) on loop's thread during one of its next iterations. Safe from
 * any thread; lock-free (MPSC queue + eventfd). Returns 0 or -ENOMEM. */
int loop_submit(loop_t *loop, void (*fn)(void *arg), void *arg);

#endif
