/*
 * gateway: the process and its worker threads (see gateway.h): start (the
 * shared parts, then one loop, libmicrohttpd daemon, upstream, cache and
 * pools per worker), the pools' sweep, drain and stop, the degraded
 * snapshot.
 *
 * Invariants: gateway_start either starts everything or frees everything
 * it made (one exit path, gateway_free); the workers array is immutable
 * while any worker runs; a stopping worker's loop stops only once its live
 * requests, connections and shared calls are all gone (stop_check runs
 * before every poll while it stops). A request's own life is request.c's.
 */
#include "gateway/gateway.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/container_of.h"
#include "core/coro.h"
#include "core/ctx.h"
#include "core/errgroup.h"
#include "gateway/accesslog.h"
#include "gateway/attempt.h"
#include "gateway/auth.h"
#include "gateway/cache.h"
#include "gateway/degraded.h"
#include "gateway/http.h"
#include "gateway/metrics.h"
#include "gateway/otel.h"
#include "gateway/request.h"
#include "gateway/resolver.h"
#include "gateway/ugroup.h"
#include "gateway/tls.h"
#include "gateway/upstream.h"
#include "gateway/urlbuild.h"

/* After the shutdown timeout cancels what runs, how long the answers get to
 * go out before the worker stops anyway. */
#define STOP_GRACE_NS 1000000000ull

/* Per-worker buffer blocks: a typical backend body fits one (a larger one
 * moves to malloc as it grows). */
#define BUF_BLOCK    2048
#define BUF_POOL_MAX 1024

/* Coroutine stacks kept per thread: enough for a busy worker's requests and
 * calls, so a burst never maps and unmaps stacks. */
#define CORO_POOL_MAX 2048

/* The pools' sweep: every SWEEP_NS the objects no request needed during
 * the interval are marked idle, then freed SWEEP_BATCH per pool every
 * SWEEP_BATCH_NS (a munmap or free costs up to ~200 us here: thousands at
 * once would stall the loop). */
#define SWEEP_NS       (3 * 1000000000ull)
#define SWEEP_BATCH_NS (20 * 1000000ull)
#define SWEEP_BATCH    32
/* Heap objects (buffer blocks, curl handles) freed by the sweeps that make
 * it worth handing the free heap back to the kernel. */
#define SWEEP_TRIM_OBJS 256

/* Heap objects the workers' sweeps freed since the last malloc_trim, and
 * that count when an interval last started. */
static _Atomic size_t sweep_freed, sweep_seen;

/* glibc keeps the free pages inside its heaps (only a heap's top is given
 * back on free); malloc_trim returns them, for every arena at once, at a
 * cost (80-180 ms for 60 MB on this VM; the arena being trimmed is locked).
 * So it runs once per burst: when the sweeps freed a burst's worth and then
 * nothing more during a whole interval (every worker is done freeing). */
static void maybe_trim(void)
{
    size_t n = atomic_load(&sweep_freed);
    if (n >= SWEEP_TRIM_OBJS && atomic_exchange(&sweep_seen, n) == n &&
        atomic_compare_exchange_strong(&sweep_freed, &n, 0))
        malloc_trim(0);
}

/* A burst grows the pools (coroutine stacks, curl handles, buffer blocks)
 * and, through libmicrohttpd's per-connection memory and curl's connection
 * state, the malloc heap; none of it shrank by itself (2,000 requests in
 * flight to a backend that never answers: 13 -> 110 MB for good). The
 * sweep frees what the pools held beyond the last interval's need, then
 * maybe_trim gives the heap back. */
static void on_sweep(loop_t *loop, loop_timer_t *t)
{
    struct worker *w = container_of(t, struct worker, sweep_timer);
    if (!w->sweeping) {
        maybe_trim();
        pool_mark_idle(w->buf_pool);
        upstream_mark_idle(w->up);
        coro_mark_idle();
    }
    size_t blocks = pool_free_idle(w->buf_pool, SWEEP_BATCH);
    size_t handles = upstream_free_idle(w->up, SWEEP_BATCH);
    unsigned stacks = coro_free_idle(SWEEP_BATCH);
    atomic_fetch_add(&sweep_freed, blocks + handles);
    w->sweeping = blocks == SWEEP_BATCH || handles == SWEEP_BATCH || stacks == SWEEP_BATCH;
    loop_timer_start(loop, t, loop_now(loop) + (w->sweeping ? SWEEP_BATCH_NS : SWEEP_NS));
}

/* Stops w's loop once it drains and has no live request. */
static void worker_maybe_stop(struct worker *w)
{
    if (!w->stopping || w->n_live != 0) return;
    /* A shared call whose callers all left ends by itself, soon after. */
    if (w->cache && cache_flights(w->cache) != 0) return;
    if (!w->accepting || (!w->listener_open && w->n_conns == 0)) loop_stop(w->loop);
}

/* While w stops, before every poll: whatever ended in the last iteration
 * (a request, a connection, a pending connection) may have been the last. */
static void on_stop_check(loop_t *loop, loop_hook_t *h)
{
    (void)loop;
    worker_maybe_stop(container_of(h, struct worker, stop_check));
}

/* The drain window is over: close the listener. Connections accepted in the
 * window whose request has not arrived yet get the same window again to
 * send it (each is answered 503 with Connection: close); the worker stops
 * as soon as none is open. */
static void on_drain_timer(loop_t *loop, loop_timer_t *t)
{
    struct worker *w = container_of(t, struct worker, drain_timer);
    if (w->listener_open) {
        http_stop_accepting(w);
        w->listener_open = false;
        loop_timer_start(loop, t, loop_now(loop) + w->drain_ns);
        worker_maybe_stop(w);
        return;
    }
    w->accepting = false;
    worker_maybe_stop(w);
}

/* The shutdown timeout passed: cancel what still runs; each answers at once. */
static void on_stop_timer(loop_t *loop, loop_timer_t *t)
{
    struct worker *w = container_of(t, struct worker, stop_timer);
    if (w->stop_forced) {
        /* What is left is not ours to finish (a client still sending its
         * body, an answer the client does not read): MHD_stop_daemon
         * closes those connections. */
        loop_stop(loop);
        return;
    }
    request_cancel_running(w);
    w->stop_forced = true;
    loop_timer_start(loop, t, loop_now(loop) + STOP_GRACE_NS);
}

/* SIGTERM: readiness is off already (gw->draining). The listener keeps
 * accepting for server.drain_accept_ms, so what is in its backlog is
 * answered 503 with Connection: close instead of being reset, then closes;
 * in-flight requests get shutdown_timeout_ms from now. */
static void worker_begin_stop(void *arg)
{
    struct worker *w = arg;
    w->stopping = true;
    const struct config *cfg = av_acquire(&w->gw->config);
    uint64_t now = loop_now(w->loop);
    w->drain_ns = (uint64_t)cfg->server.drain_accept_ms * 1000000ull;
    loop_timer_start(w->loop, &w->stop_timer,
                     now + (uint64_t)cfg->server.shutdown_timeout_ms * 1000000ull);
    av_release(&w->gw->config, (void *)cfg);
    w->accepting = true;
    w->listener_open = true;
    loop_timer_start(w->loop, &w->drain_timer, now + w->drain_ns);
    loop_hook_add(w->loop, &w->stop_check, on_stop_check);
}

static void call_upstream(void *up, ctx_t *ctx, const struct attempt_plan *plan,
                          const struct upstream_req *req, struct upstream_resp *resp,
                          struct attempt_info *info)
{
    attempt_call(up, ctx, plan, req, resp, info);
}

static void on_cache_idle(void *w)
{
    worker_maybe_stop(w);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    int err = -ENOMEM;
    w->loop = loop_new();
    if (w->loop) {
        loop_timer_init(&w->stop_timer, on_stop_timer);
        loop_timer_init(&w->drain_timer, on_drain_timer);
        w->buf_pool = pool_new("buffer", BUF_BLOCK, BUF_POOL_MAX, NULL);
        w->up = w->buf_pool ? upstream_new(w->loop, w->gw->resolver, w->metrics) : NULL;
        w->handle_pool = w->up ? upstream_handle_pool(w->up) : NULL;
        w->cache = w->up ? cache_new(w->loop, w->gw->degraded, call_upstream, w->up) : NULL;
        if (w->cache) cache_on_idle(w->cache, on_cache_idle, w);
        const struct config *cfg = av_acquire(&w->gw->config);
        err = w->cache ? http_listen(w, cfg, &request_http) : -ENOMEM;
        av_release(&w->gw->config, (void *)cfg);
    }
    if (!w->cache) fprintf(stderr, "gateway: worker %d: out of memory at start\n", w->id);
    w->start_err = err;
    atomic_store_explicit(&w->ready, err == 0, memory_order_release);
    sem_post(&w->started);
    if (err == 0) {
        loop_timer_init(&w->sweep_timer, on_sweep);
        loop_timer_start(w->loop, &w->sweep_timer, loop_now(w->loop) + SWEEP_NS);
        loop_run(w->loop);
        loop_timer_stop(w->loop, &w->sweep_timer);
    }
    if (!w->loop) return NULL;

    loop_timer_stop(w->loop, &w->stop_timer);
    loop_timer_stop(w->loop, &w->drain_timer);
    if (w->stopping) loop_hook_remove(w->loop, &w->stop_check);
    /* Another worker's /metrics scrape may be reading our pools. */
    pthread_mutex_lock(&w->gw->scrape_lock);
    atomic_store_explicit(&w->ready, false, memory_order_relaxed);
    pthread_mutex_unlock(&w->gw->scrape_lock);
    http_close(w);
    upstream_free(w->up);
    cache_free(w->cache); /* after the loop stopped: no shared call is left */
    /* The loop itself is freed by gateway_stop after the join: a
     * loop_submit from the main thread may still be touching it. */
    if (w->buf_pool) pool_free(w->buf_pool);
    eg_thread_cleanup();
    ctx_thread_cleanup();
    coro_thread_cleanup();
    return NULL;
}

static void config_free_snap(void *p)
{
    ugroup_detach(p);
    config_free(p);
}

/* The workers bind with SO_REUSEPORT, which would let a second gateway
 * share a port that is in use: bind once without it first, so a taken port
 * is an error. */
static int check_port_free(const struct server_conf *s)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (server_sockaddr(s, &ss, &len) != 0) return -EINVAL;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = bind(fd, (struct sockaddr *)&ss, len) == 0 ? 0 : -errno;
    close(fd);
    if (rc) fprintf(stderr, "gateway: cannot listen on %s: %s\n", s->listen, strerror(-rc));
    return rc;
}

int gateway_snapshot(struct gateway *gw)
{
    const struct config *cfg = av_acquire(&gw->config);
    const char *path = cfg->degraded.snapshot_path;
    int rc = 0;
    if (path && gw->degraded) {
        rc = degraded_snapshot_write(gw->degraded, path);
        if (rc < 0)
            fprintf(stderr, "gateway: cannot write the degraded snapshot %s: %s\n", path,
                    strerror(-rc));
    }
    av_release(&gw->config, (void *)cfg);
    return rc < 0 ? rc : 0;
}

static void load_snapshot(struct gateway *gw, const struct config *cfg)
{
    const char *path = cfg->degraded.snapshot_path;
    if (!path) return;
    int removed = degraded_snapshot_clean(path); /* left by a crash mid-write */
    if (removed > 0)
        fprintf(stderr, "gateway: removed %d stale temp file%s of the degraded snapshot %s\n",
                removed, removed == 1 ? "" : "s", path);
    char err[256] = "";
    int rc = degraded_snapshot_load(gw->degraded, path, err, sizeof err);
    if (rc >= 0)
        fprintf(stderr, "gateway: loaded %d degraded entries from %s\n", rc, path);
    else if (rc != -ENOENT)
        fprintf(stderr, "gateway: ignoring the degraded snapshot: %s\n",
                err[0] ? err : strerror(-rc));
}

static void prefetch_hosts(struct resolver *res, const struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_endpoints; i++) {
        const struct endpoint_conf *ep = &cfg->endpoints[i];
        for (size_t j = 0; j < ep->n_backends; j++) {
            const struct backend_conf *b = &ep->backends[j];
            char origin[256], host[256];
            if (b->client != CLIENT_NATIVE || urlbuild_origin(b, origin, sizeof origin) < 0)
                continue;
            const char *a = strstr(origin, "://");
            if (!a || a[3] == '[') continue;
            a += 3;
            size_t n = strcspn(a, ":");
            if (n >= sizeof host) continue;
            memcpy(host, a, n);
            host[n] = '\0';
            resolver_prefetch(res, host);
        }
    }
}

void gateway_resolver_config(struct gateway *gw, const struct config *cfg)
{
    resolver_set_refresh(gw->resolver, cfg->upstream.dns_refresh_s);
    prefetch_hosts(gw->resolver, cfg);
}

/* The parts every worker shares: access log, degraded store (and its
 * snapshot), JWKS, span exporter, resolver. 0 or -errno (reported); what
 * was made stays in gw for gateway_free. */
static int start_shared(struct gateway *gw, const struct config *cfg)
{
    char why[256] = "";
    gw->log = accesslog_open(cfg->access_log_path, why, sizeof why);
    if (!gw->log) {
        fprintf(stderr, "gateway: access_log.path: %s\n", why);
        return -EINVAL;
    }
    gw->degraded = degraded_new(cfg->degraded.max_entries);
    if (!gw->degraded) {
        fprintf(stderr, "gateway: cannot make the degraded store: out of memory\n");
        return -ENOMEM;
    }
    load_snapshot(gw, cfg);
    if (auth_start(&gw->jwks, cfg) != 0) return -EINVAL; /* reported */
    if (cfg->tracing.enabled && !(gw->otel = otel_start(&cfg->tracing))) return -EINVAL;
    gw->resolver = resolver_new(cfg->upstream.dns_refresh_s ? cfg->upstream.dns_refresh_s : 30);
    if (!gw->resolver) {
        fprintf(stderr, "gateway: cannot start the resolver: %s\n", strerror(errno));
        return -ENOMEM;
    }
    gateway_resolver_config(gw, cfg);
    return 0;
}

/* Makes n workers, then starts their threads one after the other, each
 * once the previous one listens. 0 or the first error (reported). */
static int start_workers(struct gateway *gw, int n)
{
    gw->workers = calloc((size_t)n, sizeof *gw->workers);
    if (!gw->workers) {
        fprintf(stderr, "gateway: cannot make %d workers: out of memory\n", n);
        return -ENOMEM;
    }
    gw->n_workers = n;
    /* Workers take no signals: the main thread waits for them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    /* Every worker struct exists before any thread starts, so the array is
     * immutable while workers read it (a /metrics scrape walks it). */
    int err = 0;
    for (int i = 0; i < n && !err; i++) {
        struct worker *w = calloc(1, sizeof *w);
        if (!w || !(w->metrics = metrics_new())) {
            free(w);
            fprintf(stderr, "gateway: cannot make worker %d: out of memory\n", i);
            err = -ENOMEM;
            break;
        }
        w->gw = gw;
        w->id = i;
        w->start_err = -ECANCELED; /* until its thread says otherwise */
        sem_init(&w->started, 0, 0);
        gw->workers[i] = w;
    }
    for (int i = 0; i < n && !err; i++) {
        struct worker *w = gw->workers[i];
        if ((err = -pthread_create(&w->thread, NULL, worker_main, w)) != 0) {
            fprintf(stderr, "gateway: cannot start worker %d: %s\n", i, strerror(-err));
            break;
        }
        w->running = true;
        sem_wait(&w->started);
        err = w->start_err; /* reported by the worker */
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return err;
}

/* Lets the running workers stop (they drain first) and joins them. */
static void stop_workers(struct gateway *gw)
{
    atomic_store(&gw->draining, true);
    for (int i = 0; i < gw->n_workers; i++) {
        struct worker *w = gw->workers[i];
        if (w && w->running && w->start_err == 0)
            loop_submit(w->loop, worker_begin_stop, w);
    }
    /* Join them all before freeing any: a running worker's scrape reads
     * the others' metrics. */
    for (int i = 0; i < gw->n_workers; i++) {
        struct worker *w = gw->workers[i];
        if (w && w->running)
            pthread_join(w->thread, NULL);
    }
}

/* Frees whatever gateway_start made, workers joined (each part may be
 * missing). */
static void gateway_free(struct gateway *gw)
{
    /* Before the loops go: the resolver thread may still hand a waiter's
     * done to one of them (loop_submit) until it is stopped. */
    resolver_free(gw->resolver);
    gw->resolver = NULL;
    for (int i = 0; i < gw->n_workers; i++) {
        struct worker *w = gw->workers[i];
        if (!w)
            continue;
        if (w->loop)
            loop_free(w->loop);
        sem_destroy(&w->started);
        metrics_free(w->metrics);
        free(w);
    }
    free(gw->workers);
    gw->workers = NULL;
    gw->n_workers = 0;
    tls_stop(); /* no handshake left */
    otel_stop(gw->otel); /* exports what the workers queued */
    gw->otel = NULL;
    auth_stop(&gw->jwks);
    av_destroy(&gw->config);
    degraded_free(gw->degraded);
    gw->degraded = NULL;
    accesslog_close(gw->log); /* flushes what the workers queued */
    gw->log = NULL;
    pthread_mutex_destroy(&gw->scrape_lock);
}

int gateway_start(struct gateway *gw, struct config *cfg)
{
    pthread_mutex_init(&gw->scrape_lock, NULL);
    coro_configure(&(struct coro_config){.pool_max = CORO_POOL_MAX});
    av_init(&gw->jwks, NULL); /* auth_start sets it up; gateway_free destroys it */
    av_init(&gw->config, config_free_snap);
    if (ugroup_attach(cfg))
        fprintf(stderr, "gateway: out of memory for upstream state; some hosts go without\n");
    av_store(&gw->config, cfg); /* gw owns cfg from here on */
    atomic_store(&gw->draining, false);
    int n = cfg->server.workers > 0 ? cfg->server.workers : 1;
    int rc = check_port_free(&cfg->server);
    if (!rc && tls_start(cfg)) rc = -EINVAL;
    if (!rc) rc = start_shared(gw, cfg);
    if (!rc) rc = start_workers(gw, n);
    if (rc) {
        stop_workers(gw);
        gateway_free(gw);
    }
    return rc;
}

void gateway_stop(struct gateway *gw)
{
    stop_workers(gw);
    /* The final state, written while the store is still there (every
     * worker is gone). */
    gateway_snapshot(gw);
    gateway_free(gw);
}
