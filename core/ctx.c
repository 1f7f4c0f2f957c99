/*
 * ctx: the context tree.
 *
 * Invariants that keep the code short:
 *   - a context is linked in its parent's child list exactly while it is not
 *     done (and its parent is not the background): cancelling unlinks it, a
 *     child born under a done parent is never linked. The list therefore
 *     only ever holds live children, and cascading a cancel pops them.
 *   - a child holds a reference on its parent, so a parent outlives its
 *     children; the background is static and takes no references, and it is
 *     never written to after startup, so every thread may derive from it.
 *   - a deadline timer is armed only when the context's own deadline is
 *     earlier than its parent's: otherwise the parent's timer cascades.
 *
 * Cancelling runs in two phases: first the whole subtree is marked done
 * (err, cause, timer stopped, waiters made ready), then the after-funcs run.
 * So a hook sees its whole subtree done, and whatever a hook does (cancel
 * another context, release contexts, remove hooks, wake coroutines) happens
 * on a consistent tree. Contexts with hooks are retained until their hooks
 * have run, so a hook may drop the last user reference to its own context.
 *
 * Objects come from a small per-thread cache (contexts are loop-affine, so a
 * context is freed on the thread that allocated it): creating and releasing
 * a context costs no malloc in steady state. AddressSanitizer builds skip
 * the cache so use-after-free stays visible.
 */
#include "core/ctx.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>

#include "core/container_of.h"
#include "core/coro.h"
#include "core/loop.h"

/* A coroutine parked in ctx_wait; lives on that coroutine's stack. */
struct waiter {
    coro_t *co;
    struct waiter *next;
    struct waiter **pprev; /* NULL once unlinked */
};

struct ctx {
    uint32_t refs;
    int err;
    int cause;
    uint64_t deadline; /* effective: min(own, parent's); 0 = none */
    ctx_t *parent;     /* NULL only for the background */

    ctx_t *children; /* live (not done) children */
    ctx_t *sib_next;
    ctx_t **sib_pprev; /* NULL when not linked in parent->children */

    const void *key; /* with_value; NULL otherwise */
    void *value;

    struct waiter *waiters;
    ctx_hook_t hooks;    /* circular list sentinel, registration order */
    ctx_t *pending_next; /* cancel phase 2 list */

    loop_t *loop; /* non-NULL when timer was initialised */
    loop_timer_t timer;
};

static ctx_t background = {
    .refs = 1,
};

/* ---- per-thread object cache ---- */

#include "core/sanitizer.h"
#ifdef CORE_ASAN
#define CACHE_MAX 0u /* no reuse: ASan sees every use after free */
#else
#define CACHE_MAX 256
#endif

static __thread ctx_t *cache;
static __thread unsigned ncached;

static ctx_t *node_alloc(void)
{
    ctx_t *c = cache;
    if (c) {
        cache = c->parent;
        ncached--;
        return c;
    }
    return malloc(sizeof(*c));
}

static void node_free(ctx_t *c)
{
    if (ncached + 1 <= CACHE_MAX) {
        c->parent = cache;
        cache = c;
        ncached++;
        return;
    }
    free(c);
}

void ctx_thread_cleanup(void)
{
    while (cache) {
        ctx_t *c = cache;
        cache = c->parent;
        free(c);
    }
    ncached = 0;
}

/* ---- tree ---- */

static void unlink_child(ctx_t *c)
{
    *c->sib_pprev = c->sib_next;
    if (c->sib_next) c->sib_next->sib_pprev = c->sib_pprev;
    c->sib_pprev = NULL;
}

static inline bool has_hooks(const ctx_t *c)
{
    return c->hooks.next != &c->hooks;
}

/* Phase 1: marks c and its live descendants done, appending those that have
 * hooks (retained) to *tail. No user code runs here. */
static void mark_done(ctx_t *c, int err, int cause, ctx_t ***tail)
{
    c->err = err;
    c->cause = cause;
    if (c->sib_pprev) unlink_child(c);
    if (c->loop) loop_timer_stop(c->loop, &c->timer);
    while (c->waiters) {
        struct waiter *w = c->waiters;
        c->waiters = w->next;
        w->pprev = NULL;
        loop_wake(w->co);
    }
    if (has_hooks(c)) {
        c->refs++;
        c->pending_next = NULL;
        **tail = c;
        *tail = &c->pending_next;
    }
    /* mark_done unlinks each child, so this pops the list */
    while (c->children)
        mark_done(c->children, err, cause, tail);
}

/* Phase 2: runs the hooks of every pending context, in registration order. */
static void run_hooks(ctx_t *pending)
{
    while (pending) {
        ctx_t *c = pending;
        /* pop one at a time: a hook may remove hooks that have not run yet */
        while (has_hooks(c)) {
            ctx_hook_t *h = c->hooks.next;
            h->prev->next = h->next;
            h->next->prev = h->prev;
            h->next = h->prev = NULL;
            h->fn(c, h);
        }
        pending = c->pending_next;
        ctx_release(c);
    }
}

static void cancel_with(ctx_t *c, int err, int cause)
{
    if (c->err || c == &background) return;
    ctx_t *pending = NULL, **tail = &pending;
    mark_done(c, err, cause, &tail);
    if (pending) run_hooks(pending);
}

static void deadline_fired(loop_t *loop, loop_timer_t *t)
{
    (void)loop;
    ctx_t *c = container_of(t, ctx_t, timer);
    cancel_with(c, CTX_DEADLINE_EXCEEDED, CTX_DEADLINE_EXCEEDED);
}

static ctx_t *new_child(ctx_t *parent)
{
    ctx_t *c = node_alloc();
    if (!c) return NULL;
    c->refs = 1;
    c->err = parent->err;
    c->cause = parent->cause;
    c->deadline = parent->deadline;
    c->parent = parent;
    c->children = NULL;
    c->sib_next = NULL;
    c->sib_pprev = NULL;
    c->key = NULL;
    c->value = NULL;
    c->waiters = NULL;
    c->hooks.next = c->hooks.prev = &c->hooks;
    c->hooks.fn = NULL;
    c->loop = NULL;
    if (parent != &background) {
        parent->refs++;
        if (!parent->err) {
            c->sib_next = parent->children;
            if (c->sib_next) c->sib_next->sib_pprev = &c->sib_next;
            c->sib_pprev = &parent->children;
            parent->children = c;
        }
    }
    return c;
}

/* ---- public ---- */

ctx_t *ctx_background(void)
{
    return &background;
}

ctx_t *ctx_with_cancel(ctx_t *parent)
{
    return new_child(parent);
}

ctx_t *ctx_with_deadline(ctx_t *parent, uint64_t deadline_ns)
{
    ctx_t *c = new_child(parent);
    if (!c || c->err) return c;
    if (c->deadline && c->deadline <= deadline_ns) return c; /* parent's fires first */
    c->deadline = deadline_ns;
    if (deadline_ns <= mono_ns()) {
        cancel_with(c, CTX_DEADLINE_EXCEEDED, CTX_DEADLINE_EXCEEDED);
        return c;
    }
    loop_t *loop = loop_current();
    if (loop) {
        c->loop = loop;
        loop_timer_init(&c->timer, deadline_fired);
        loop_timer_start(loop, &c->timer, deadline_ns);
    }
    return c;
}

ctx_t *ctx_with_timeout(ctx_t *parent, uint64_t timeout_ns)
{
    uint64_t now = mono_ns();
    uint64_t d = timeout_ns > UINT64_MAX - now ? UINT64_MAX : now + timeout_ns;
    return ctx_with_deadline(parent, d);
}

ctx_t *ctx_with_value(ctx_t *parent, const void *key, void *value)
{
    ctx_t *c = new_child(parent);
    if (c) {
        c->key = key;
        c->value = value;
    }
    return c;
}

ctx_t *ctx_retain(ctx_t *ctx)
{
    if (ctx != &background) ctx->refs++;
    return ctx;
}

void ctx_release(ctx_t *ctx)
{
    /* iterative: dropping a chain of last references walks up the tree */
    while (ctx && ctx != &background) {
        if (--ctx->refs) return;
        ctx_t *parent = ctx->parent;
        if (ctx->sib_pprev) unlink_child(ctx);
        if (ctx->loop) loop_timer_stop(ctx->loop, &ctx->timer);
        node_free(ctx);
        ctx = parent;
    }
}

void ctx_cancel(ctx_t *ctx, int cause)
{
    cancel_with(ctx, CTX_CANCELED, cause ? cause : CTX_CANCELED);
}

bool ctx_done(const ctx_t *ctx)
{
    return ctx->err != 0;
}

int ctx_err(const ctx_t *ctx)
{
    return ctx->err;
}

int ctx_cause(const ctx_t *ctx)
{
    return ctx->cause;
}

uint64_t ctx_deadline(const ctx_t *ctx)
{
    return ctx->deadline;
}

uint64_t ctx_remaining(const ctx_t *ctx)
{
    if (!ctx->deadline) return UINT64_MAX;
    uint64_t now = mono_ns();
    return ctx->deadline > now ? ctx->deadline - now : 0;
}

void *ctx_value(const ctx_t *ctx, const void *key)
{
    if (!key) return NULL;
    for (; ctx; ctx = ctx->parent)
        if (ctx->key == key) return ctx->value;
    return NULL;
}

int ctx_wait(ctx_t *ctx, uint64_t deadline_ns)
{
    if (ctx->err) return ctx->err;
    coro_t *self = coro_self();
    if (!self) return -EPERM; /* a thread's own stack cannot park */
    if (ctx == &background) {
        /* never done, and shared between threads: do not link a waiter */
        while (loop_park(deadline_ns) != -ETIMEDOUT) {
        }
        return 0;
    }
    struct waiter w = {.co = self, .next = ctx->waiters, .pprev = &ctx->waiters};
    if (w.next) w.next->pprev = &w.next;
        /* w lives on this stack while parked and is unlinked before we return */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif
    ctx->waiters = &w;
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic pop
#endif
    /* other wake-ups are spurious here: keep waiting for done or timeout */
    while (!ctx->err && loop_park(deadline_ns) != -ETIMEDOUT) {
    }
    if (w.pprev) {
        *w.pprev = w.next;
        if (w.next) w.next->pprev = w.pprev;
    }
    return ctx->err;
}

bool ctx_after_func(ctx_t *ctx, ctx_hook_t *h, ctx_hook_fn fn)
{
    h->fn = fn;
    h->next = h->prev = NULL;
    if (ctx->err) return false;
    if (ctx == &background) return true; /* never done: nothing to run, nothing to link */
    h->prev = ctx->hooks.prev;
    h->next = &ctx->hooks;
    ctx->hooks.prev->next = h;
    ctx->hooks.prev = h;
    return true;
}

void ctx_hook_remove(ctx_t *ctx, ctx_hook_t *h)
{
    (void)ctx;
    if (!h->next) return; /* already ran, or never linked */
    h->prev->next = h->next;
    h->next->prev = h->prev;
    h->next = h->prev = NULL;
}
