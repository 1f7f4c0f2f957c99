/*
 * errgroup: golang.org/x/sync/errgroup for coroutines.
 *
 * eg_new derives a cancellable context from parent; eg_go starts fn on a new
 * coroutine of the current loop. The first task to return non-zero wins: its
 * error is kept (later ones are dropped) and the group's context is cancelled
 * at that moment with that error as cause, which wakes every sibling parked
 * on it. eg_wait parks until every task has ended, then cancels the context
 * and returns the first error (0 if none). Every coroutine a group starts is
 * joined by eg_wait; eg_free after eg_wait.
 *
 * Loop-affine like ctx: one group lives on one loop's thread.
 */
#ifndef CORE_ERRGROUP_H
#define CORE_ERRGROUP_H

#include <stdbool.h>

#include "core/ctx.h"

typedef struct errgroup errgroup_t;
/* A task: returns 0 on success or an error (> 0 by convention). */
typedef int (*eg_fn)(ctx_t *ctx, void *arg);

/* NULL on out-of-memory. The group holds its own reference on parent. */
errgroup_t *eg_new(ctx_t *parent);
/* The group's context (owned by the group; retain it to keep it longer). */
ctx_t *eg_ctx(errgroup_t *g);
/* At most n tasks run at once; n <= 0 removes the limit. Not while tasks run. */
void eg_set_limit(errgroup_t *g, int n);
/* Starts fn(eg_ctx(g), arg) on a new coroutine. With a limit, parks the
 * calling coroutine until a slot frees (from the loop's own stack, where it
 * cannot park, it returns -EAGAIN instead). Returns 0, or a negative errno
 * when no coroutine could be had (then the group records that error as if
 * the task had failed with it, and the context is cancelled). */
int eg_go(errgroup_t *g, eg_fn fn, void *arg);
/* Like eg_go but never parks: false when the limit is reached. A coroutine
 * that cannot be had is recorded as the group's error, as in eg_go (true). */
bool eg_try_go(errgroup_t *g, eg_fn fn, void *arg);
/* Parks until every task has ended; cancels the context; returns the first
 * error. Must be called from a coroutine (or with no task running); on a
 * thread's own stack, outside any loop callback, it runs loop iterations
 * until the tasks have ended. */
int eg_wait(errgroup_t *g);
/* Releases the group's context and frees g. After eg_wait; NULL is ignored. */
void eg_free(errgroup_t *g);

/* Frees the calling thread's caches of groups and task records. */
void eg_thread_cleanup(void);

#endif
