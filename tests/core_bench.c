/*
 * core_bench: the cost of the core runtime's basic operations.
 *
 * Prints one line per operation, "<name> <nanoseconds per op>". Each one runs
 * for about 0.2 s of CLOCK_MONOTONIC time after a calibration run. Meaningful
 * in a Release build only:
 *
 *     cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release
 *     cmake --build build-rel --target core_bench && build-rel/tests/core_bench
 *
 * Go on the reference machine: spawn+join 312 ns, channel ping-pong 254 ns,
 * errgroup3 893 ns, first error 940 ns, cancel chain 388 ns, pool get/put
 * 18 ns. Goal: 5x faster each, a switch under 10 ns.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/avalue.h"
#include "core/chan.h"
#include "core/coro.h"
#include "core/ctx.h"
#include "core/errgroup.h"
#include "core/loop.h"
#include "core/pool.h"

#define TARGET_NS 200000000ull /* per operation */

static loop_t *g_loop;
static volatile uintptr_t g_sink; /* keeps results alive */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static _Noreturn void die(const char *what)
{
    fprintf(stderr, "core_bench: %s failed\n", what);
    exit(1);
}

/* ---- running a body of n operations inside a coroutine of g_loop ---- */

struct in_coro {
    void (*body)(uint64_t n);
    uint64_t n;
    int done;
};

static void in_coro_main(void *arg)
{
    struct in_coro *ic = arg;
    ic->body(ic->n);
    ic->done = 1;
    loop_stop(g_loop);
}

static void run_in_coro(void (*body)(uint64_t n), uint64_t n)
{
    struct in_coro ic = {body, n, 0};
    if (!loop_spawn(g_loop, in_coro_main, &ic)) die("loop_spawn");
    loop_run(g_loop);
    if (!ic.done) die("benchmark coroutine");
}

/* ---- measuring ---- */

struct bench {
    const char *name;
    void (*run)(uint64_t n); /* n operations */
    unsigned ops_per_unit;   /* divide by this too (e.g. 2 switches per round) */
    bool in_coro;            /* run inside a coroutine of g_loop */
};

static uint64_t timed(const struct bench *b, uint64_t n)
{
    uint64_t t0 = now_ns();
    if (b->in_coro)
        run_in_coro(b->run, n);
    else
        b->run(n);
    return now_ns() - t0;
}

static void measure(const struct bench *b)
{
    uint64_t n = 1000, t;
    while ((t = timed(b, n)) < TARGET_NS / 20)
        n *= 2;
    n = (uint64_t)((double)n * (double)TARGET_NS / (double)t) + 1;
    t = timed(b, n);
    printf("%s %.1f\n", b->name, (double)t / (double)n / (double)b->ops_per_unit);
    fflush(stdout);
}

/* ---- coro_switch: resume + yield = two switches ---- */

static void yielder(void *arg)
{
    const int *stop = arg;
    while (!*stop)
        coro_yield();
}

static void bench_coro_switch(uint64_t n)
{
    int stop = 0;
    coro_t *co = coro_create(yielder, &stop);
    if (!co) die("coro_create");
    for (uint64_t i = 0; i < n; i++)
        coro_resume(co);
    stop = 1;
    coro_resume(co);
    if (!coro_finished(co)) die("yielder");
    coro_free(co);
}

/* ---- spawn_join: spawn a coroutine that returns at once, run it, reclaim ---- */

struct joiner {
    coro_t *parent;
    int ended;
};

static void noop_coro(void *arg)
{
    struct joiner *j = arg;
    j->ended = 1;
    loop_wake(j->parent);
}

/* From inside a coroutine: spawn a child and park until it has run to its
 * end (the loop reclaims it as it returns): Go's go f() + WaitGroup.Wait. */
static void bench_spawn_join(uint64_t n)
{
    struct joiner j = {coro_self(), 0};
    for (uint64_t i = 0; i < n; i++) {
        j.ended = 0;
        if (!loop_spawn(g_loop, noop_coro, &j)) die("loop_spawn");
        while (!j.ended)
            loop_park(0);
    }
}

/* ---- errgroup3 and errgroup_first_error ---- */

static int task_ok(ctx_t *ctx, void *arg)
{
    (void)ctx;
    (void)arg;
    return 0;
}

static int task_fail(ctx_t *ctx, void *arg)
{
    (void)ctx;
    (void)arg;
    return 1;
}

static int task_wait_done(ctx_t *ctx, void *arg)
{
    (void)arg;
    return ctx_wait(ctx, 0) ? 0 : -1;
}

static void bench_errgroup3(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        errgroup_t *g = eg_new(ctx_background());
        if (!g) die("eg_new");
        for (int k = 0; k < 3; k++)
            if (eg_go(g, task_ok, NULL)) die("eg_go");
        if (eg_wait(g) != 0) die("eg_wait");
        eg_free(g);
    }
}

static void bench_errgroup_first_error(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        errgroup_t *g = eg_new(ctx_background());
        if (!g) die("eg_new");
        if (eg_go(g, task_wait_done, NULL) || eg_go(g, task_fail, NULL)) die("eg_go");
        if (eg_wait(g) != 1) die("eg_wait (first error)");
        eg_free(g);
    }
}

/* ---- ctx_cancel_chain ---- */

static void bench_ctx_cancel_chain(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        ctx_t *parent = ctx_with_cancel(ctx_background());
        ctx_t *child = parent ? ctx_with_cancel(parent) : NULL;
        if (!child) die("ctx_with_cancel");
        ctx_cancel(parent, 0);
        if (!ctx_done(child)) die("ctx cascade");
        ctx_release(child);
        ctx_release(parent);
    }
}

/* ---- chan_pingpong: one round trip, two switches ---- */

struct pp {
    chan_t *ping, *pong;
    uint64_t n;
};

static void ponger(void *arg)
{
    struct pp *pp = arg;
    void *v;
    while (chan_recv(pp->ping, &v, 0) == 0)
        if (chan_send(pp->pong, v, 0)) break;
}

static void bench_chan_pingpong(uint64_t n)
{
    struct pp pp = {chan_new(1), chan_new(1), n};
    if (!pp.ping || !pp.pong) die("chan_new");
    if (!loop_spawn(g_loop, ponger, &pp)) die("loop_spawn");
    for (uint64_t i = 0; i < n; i++) {
        void *v;
        if (chan_send(pp.ping, (void *)(uintptr_t)i, 0) || chan_recv(pp.pong, &v, 0))
            die("chan ping-pong");
        g_sink = (uintptr_t)v;
    }
    chan_close(pp.ping);
    /* let the ponger see the close and end before the channels go */
    loop_yield();
    chan_free(pp.ping);
    chan_free(pp.pong);
}

/* ---- avalue_load ---- */

struct snap {
    av_snap_t hdr;
    int value;
};

static avalue_t g_av;

static void bench_avalue_load(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        struct snap *s = av_acquire(&g_av);
        g_sink = (uintptr_t)s->value;
        av_release(&g_av, s);
    }
}

static void bench_avalue_read_section(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        av_read_lock();
        struct snap *s = av_load(&g_av);
        g_sink = (uintptr_t)s->value;
        av_read_unlock();
    }
}

/* ---- pool_get_put ---- */

static pool_t *g_pool;

static void bench_pool_get_put(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        void *p = pool_get(g_pool);
        g_sink = (uintptr_t)p;
        pool_put(g_pool, p);
    }
}

int main(void)
{
    g_loop = loop_new();
    if (!g_loop) die("loop_new");
    av_init(&g_av, NULL);
    struct snap *s = calloc(1, sizeof *s);
    if (!s) die("calloc");
    s->value = 1;
    av_store(&g_av, s);
    g_pool = pool_new("bench", 4096, 64, NULL);
    if (!g_pool) die("pool_new");

    const struct bench benches[] = {
        {"coro_switch", bench_coro_switch, 2, false},
        {"spawn_join", bench_spawn_join, 1, true},
        {"chan_pingpong", bench_chan_pingpong, 1, true},
        {"errgroup3", bench_errgroup3, 1, true},
        {"errgroup_first_error", bench_errgroup_first_error, 1, true},
        {"ctx_cancel_chain", bench_ctx_cancel_chain, 1, false},
        {"avalue_load", bench_avalue_load, 1, false},
        {"avalue_read_section", bench_avalue_read_section, 1, false},
        {"pool_get_put", bench_pool_get_put, 1, false},
    };
    for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++)
        measure(&benches[i]);

    pool_free(g_pool);
    av_destroy(&g_av);
    loop_free(g_loop);
    return 0;
}
