/*
 * errgroup: one counter does both jobs of Go's semaphore and WaitGroup.
 *
 * g->active counts slots in use: a slot is taken before a task is spawned
 * and given back when its function returns. With a limit, a task that ends
 * while callers are parked in eg_go hands its slot straight to the oldest of
 * them (the counter stays put), so a slot freed for a parked caller cannot be
 * taken by an eg_try_go that runs first. eg_wait waits for active == 0,
 * which also covers a caller that was granted a slot and has not spawned yet.
 *
 * The task coroutine touches the group last when it gives its slot back, and
 * then returns straight to the loop, which frees it before the coroutine in
 * eg_wait runs again: once eg_wait returns, nothing of the group's is still
 * running and eg_free is safe.
 *
 * Groups and task records come from per-thread caches (groups are
 * loop-affine), so a group costs no malloc in steady state.
 */
#include "core/errgroup.h"

#include <errno.h>
#include <stdlib.h>

#include "core/coro.h"
#include "core/loop.h"

/* A coroutine parked in eg_go for a slot; lives on its stack. */
struct slot_waiter {
    coro_t *co;
    bool granted;
    struct slot_waiter *next;
};

struct errgroup {
    ctx_t *ctx;
    int err;
    int limit;
    int active;
    coro_t *waiter; /* in eg_wait */
    struct slot_waiter *sw_head, **sw_tail;
    /* eg_wait off a coroutine: the loop it drives, and a timer armed when
     * the last task ends so that iteration does not block in epoll */
    loop_t *drive_loop;
    loop_timer_t kick;
};

struct task {
    errgroup_t *g;
    eg_fn fn;
    void *arg;
};

/* ---- per-thread caches ---- */

#include "core/sanitizer.h"
#ifdef CORE_ASAN
#define CACHE_MAX 0u /* no reuse: ASan sees every use after free */
#else
#define CACHE_MAX 256
#endif

struct cache {
    void *head; /* free objects, linked through their first word */
    unsigned n;
};
static __thread struct cache group_cache, task_cache;

static void *cache_get(struct cache *c, size_t size)
{
    void *o = c->head;
    if (o) {
        c->head = *(void **)o;
        c->n--;
        return o;
    }
    return malloc(size);
}

static void cache_put(struct cache *c, void *o)
{
    if (c->n + 1 <= CACHE_MAX) {
        *(void **)o = c->head;
        c->head = o;
        c->n++;
        return;
    }
    free(o);
}

static void cache_drain(struct cache *c)
{
    while (c->head) {
        void *o = c->head;
        c->head = *(void **)o;
        free(o);
    }
    c->n = 0;
}

void eg_thread_cleanup(void)
{
    cache_drain(&group_cache);
    cache_drain(&task_cache);
}

/* ---- group ---- */

static void record_error(errgroup_t *g, int err)
{
    if (g->err) return;
    g->err = err;
    ctx_cancel(g->ctx, err);
}

static void release_slot(errgroup_t *g)
{
    struct slot_waiter *w = g->sw_head;
    if (w) {
        g->sw_head = w->next;
        if (!g->sw_head) g->sw_tail = &g->sw_head;
        w->granted = true;
        loop_wake(w->co);
        return;
    }
    if (--g->active) return;
    if (g->waiter)
        loop_wake(g->waiter);
    else if (g->drive_loop)
        loop_timer_start(g->drive_loop, &g->kick, 0);
}

static void kick_fn(loop_t *loop, loop_timer_t *t)
{
    (void)loop;
    (void)t;
}

static void task_main(void *arg)
{
    struct task *t = arg;
    errgroup_t *g = t->g;
    eg_fn fn = t->fn;
    void *fn_arg = t->arg;
    cache_put(&task_cache, t);
    int rc = fn(g->ctx, fn_arg);
    if (rc) record_error(g, rc);
    release_slot(g);
}

errgroup_t *eg_new(ctx_t *parent)
{
    errgroup_t *g = cache_get(&group_cache, sizeof(*g));
    if (!g) return NULL;
    g->ctx = ctx_with_cancel(parent);
    if (!g->ctx) {
        cache_put(&group_cache, g);
        return NULL;
    }
    g->err = 0;
    g->limit = 0;
    g->active = 0;
    g->waiter = NULL;
    g->drive_loop = NULL;
    g->sw_head = NULL;
    g->sw_tail = &g->sw_head;
    return g;
}

ctx_t *eg_ctx(errgroup_t *g)
{
    return g->ctx;
}

void eg_set_limit(errgroup_t *g, int n)
{
    g->limit = n > 0 ? n : 0;
}

/* Starts a task in a slot the caller already holds. */
static int start(errgroup_t *g, eg_fn fn, void *arg)
{
    int rc;
    loop_t *loop = loop_current();
    struct task *t = cache_get(&task_cache, sizeof(*t));
    if (!loop || !t) {
        rc = !loop ? -EINVAL : -ENOMEM;
        goto fail;
    }
    t->g = g;
    t->fn = fn;
    t->arg = arg;
    if (loop_spawn(loop, task_main, t)) return 0;
    rc = errno ? -errno : -ENOMEM;
fail:
    if (t) cache_put(&task_cache, t);
    record_error(g, rc);
    release_slot(g);
    return rc;
}

int eg_go(errgroup_t *g, eg_fn fn, void *arg)
{
    if (g->limit && g->active >= g->limit) {
        coro_t *self = coro_self();
        if (!self) return -EAGAIN;
        struct slot_waiter w = {.co = self, .granted = false, .next = NULL};
        *g->sw_tail = &w;
        g->sw_tail = &w.next;
        /* the slot is handed over by release_slot, active already counts it */
        while (!w.granted)
            loop_park(0);
    } else {
        g->active++;
    }
    return start(g, fn, arg);
}

bool eg_try_go(errgroup_t *g, eg_fn fn, void *arg)
{
    if (g->limit && g->active >= g->limit) return false;
    g->active++;
    start(g, fn, arg);
    /* a spawn failure is recorded as the group's error, like Go's task error */
    return true;
}

int eg_wait(errgroup_t *g)
{
    if (g->active) {
        coro_t *self = coro_self();
        if (self) {
            g->waiter = self;
            while (g->active)
                loop_park(0);
            g->waiter = NULL;
        } else {
            /* Off a coroutine (a test's or a benchmark's main), drive the
             * loop until the tasks are done. Never from inside a loop
             * callback: the header forbids it. */
            loop_t *loop = loop_current();
            if (loop) {
                loop_timer_init(&g->kick, kick_fn);
                g->drive_loop = loop;
                while (g->active)
                    loop_run_once(loop, -1);
                loop_timer_stop(loop, &g->kick);
                g->drive_loop = NULL;
            }
        }
    }
    ctx_cancel(g->ctx, 0);
    return g->err;
}

void eg_free(errgroup_t *g)
{
    if (!g) return;
    ctx_release(g->ctx);
    cache_put(&group_cache, g);
}
