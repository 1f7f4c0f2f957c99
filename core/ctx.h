/*
 * ctx: request-scoped contexts in the manner of Go's context.Context.
 *
 * A context is cancelled explicitly (ctx_cancel), by its deadline (a timer on
 * the loop's heap fires it by itself), or when its parent is. Cancellation
 * flows down the tree with the same err and cause; it is idempotent, and it
 * wakes every coroutine waiting in ctx_wait and runs every after-func once.
 *
 * Contexts are loop-affine: create, cancel and wait on the thread of the loop
 * they were created on (cross-thread cancel goes through loop_submit).
 * Reference counted: a child holds its parent; ctx_release drops the
 * caller's reference, and a context whose last reference goes is detached
 * from its parent (its timer stopped) and freed. ctx_background() is static
 * and never released.
 */
#ifndef CORE_CTX_H
#define CORE_CTX_H

#include <stdbool.h>
#include <stdint.h>

typedef struct ctx ctx_t;

/* err values (positive, so they can double as errgroup errors) */
enum {
    CTX_CANCELED = 1,          /* Go: context.Canceled */
    CTX_DEADLINE_EXCEEDED = 2, /* Go: context.DeadlineExceeded */
};

/* after-func: embed in your struct; fn runs once when the ctx is done. */
typedef struct ctx_hook ctx_hook_t;
typedef void (*ctx_hook_fn)(ctx_t *ctx, ctx_hook_t *h);
struct ctx_hook {
    /* private */
    ctx_hook_fn fn;
    ctx_hook_t *prev, *next;
};

ctx_t *ctx_background(void);
/* New children; NULL only on out-of-memory. A child of a done parent is
 * done at once, with the parent's err and cause. */
ctx_t *ctx_with_cancel(ctx_t *parent);
/* deadline = min(deadline_ns, parent's deadline). Needs loop_current(). */
ctx_t *ctx_with_deadline(ctx_t *parent, uint64_t deadline_ns);
ctx_t *ctx_with_timeout(ctx_t *parent, uint64_t timeout_ns);
/* key compares by address; a child's value shadows its parents'. */
ctx_t *ctx_with_value(ctx_t *parent, const void *key, void *value);

ctx_t *ctx_retain(ctx_t *ctx);
void ctx_release(ctx_t *ctx);

/* Cancels ctx and its descendants with err CTX_CANCELED and this cause
 * (0: cause = CTX_CANCELED). No-op when already done. */
void ctx_cancel(ctx_t *ctx, int cause);

bool ctx_done(const ctx_t *ctx);
/* 0 while not done, then CTX_CANCELED or CTX_DEADLINE_EXCEEDED, stable. */
int ctx_err(const ctx_t *ctx);
/* The cause given to the ctx_cancel that ended ctx (or its ancestor), or
 * err when none was given / the deadline fired. 0 while not done. */
int ctx_cause(const ctx_t *ctx);
/* The deadline in mono ns, or 0 when none. */
uint64_t ctx_deadline(const ctx_t *ctx);
/* Nanoseconds left before the deadline (0 when passed), UINT64_MAX if none. */
uint64_t ctx_remaining(const ctx_t *ctx);
void *ctx_value(const ctx_t *ctx, const void *key);

/* Parks the calling coroutine until ctx is done or deadline_ns (0 = none)
 * passes. Returns ctx_err(ctx), or 0 on timeout. Other wake-ups of the
 * coroutine do not end the wait. Off a coroutine it cannot park: it returns
 * ctx_err(ctx) when done, else -EPERM. */
int ctx_wait(ctx_t *ctx, uint64_t deadline_ns);

/* Registers fn to run once, on the loop thread, when ctx becomes done.
 * Returns false without registering (and without running fn) when ctx is
 * already done. ctx_hook_remove unregisters (safe if it already ran). */
bool ctx_after_func(ctx_t *ctx, ctx_hook_t *h, ctx_hook_fn fn);
void ctx_hook_remove(ctx_t *ctx, ctx_hook_t *h);

/* Frees the calling thread's cache of released contexts (at thread exit). */
void ctx_thread_cleanup(void);

#endif
