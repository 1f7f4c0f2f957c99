/*
 * gateway: the process and its workers: shared state, worker threads and
 * their lifecycle (start, drain, stop), the degraded snapshot.
 *
 * Shared-nothing workers: each thread owns a loop, a libmicrohttpd daemon
 * in external-epoll mode fed by its own SO_REUSEPORT listening socket
 * (gateway/http.c, gateway/listener.c), an upstream (curl multi), a cache
 * table, pools and metrics, and the list of its live requests
 * (gateway/request.c links and unlinks them; the worker stops only once
 * the list is empty). A request never leaves its worker. The only shared
 * state is the config snapshot (an atomic value, pinned by each request for
 * its whole life) and a few flags.
 *
 * Who calls whom (no cycle): main -> gateway.c -> request.c -> fanout.c;
 * gateway.c and request.c -> http.c -> listener.c. What goes back up does
 * so through pointers: http.c calls the access handlers gateway.c gave it
 * (request.c's), fanout.c calls r->done. This file's struct worker is the
 * data they share; everything in it is touched by its own thread only,
 * except metrics and the pool counters, which /metrics reads from any
 * worker with relaxed atomics.
 */
#ifndef GATEWAY_GATEWAY_H
#define GATEWAY_GATEWAY_H

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/avalue.h"
#include "core/loop.h"
#include "core/pool.h"
#include "gateway/config.h"

struct worker;
struct request;
struct pending;
struct http_handler;

struct gateway {
    avalue_t config;           /* struct config snapshots */
    struct degraded *degraded; /* last good bodies (sized at start) */
    struct worker **workers;   /* read-only after start */
    int n_workers;
    atomic_bool draining;    /* readiness off, new requests get 503 */
    atomic_uint connections; /* open client connections, all workers */
    struct accesslog *log;   /* access_log.path at start */
    atomic_uint_fast64_t reloads_ok, reloads_error;
    avalue_t jwks;      /* struct jwks snapshots (auth.c); empty without "auth" */
    struct otel *otel;  /* span exporter (otel.c); NULL without "tracing" */
    /* Held by a /metrics scrape while it reads the other workers' pools,
     * and by a stopping worker while it turns unready (before it frees
     * them). Cold paths only. */
    pthread_mutex_t scrape_lock;
    struct resolver *resolver; /* backend host names, for every worker */
};

/* Applies cfg's upstream.dns_refresh_s to the resolver and starts
 * resolving its backends' host names, so that the first calls find them
 * known (at start and on every reload, before cfg is published). */
void gateway_resolver_config(struct gateway *gw, const struct config *cfg);

/* Starts cfg->server.workers threads serving cfg (gw takes ownership of
 * cfg). Returns 0, or -errno with a message on stderr saying what failed
 * (e.g. the port is taken); on failure everything it made is freed. */
int gateway_start(struct gateway *gw, struct config *cfg);
/* Writes the degraded snapshot (degraded.snapshot_path) while the workers
 * run. Returns 0 or -errno (reported on stderr). */
int gateway_snapshot(struct gateway *gw);
/* Stops accepting, lets in-flight requests finish within the configured
 * shutdown timeout (then cancels them), joins the workers, frees all. */
void gateway_stop(struct gateway *gw);

struct worker {
    struct gateway *gw;
    int id;
    pthread_t thread;
    sem_t started;
    int start_err;
    bool running;      /* its thread was started (main thread only) */
    atomic_bool ready; /* release: loop, pools, upstream set up (for scrapes) */

    loop_t *loop;
    struct MHD_Daemon *mhd; /* no listening socket of its own: see listener.c */
    const struct http_handler *handler; /* the access handlers (http.c calls them) */
    bool tls;               /* server.tls at start: connections skip the peek */
    int listen_fd;          /* -1 once closed */
    loop_io_t listen_io;
    struct pending *pending; /* accepted, first header block not checked yet */
    char *peek;              /* server.max_header_bytes + 1 */
    size_t peek_cap;
    unsigned max_pending; /* connections (pending or not) beyond which accept closes */
    loop_io_t mhd_io;
    loop_timer_t mhd_timer;
    loop_hook_t mhd_prepare;
    bool mhd_run_needed;
    struct upstream *up;
    struct cache *cache; /* coalescing table over the shared store (gateway/cache.h) */

    struct request *live; /* every request from its first byte to its last */
    unsigned n_live;
    bool stopping;
    bool stop_forced; /* the shutdown timeout passed, calls cancelled */
    loop_timer_t stop_timer;
    loop_hook_t stop_check;   /* while stopping: stops the loop once idle */
    loop_timer_t sweep_timer; /* gateway.c: gives back what a burst left */
    bool sweeping;            /* idle objects left to free, a batch per tick */
    loop_timer_t drain_timer; /* server.drain_accept_ms after SIGTERM */
    uint64_t drain_ns;
    bool accepting;     /* in the drain window: do not stop yet */
    bool listener_open; /* the drain window has not closed the listener yet */
    unsigned n_conns;   /* client connections open on this worker */
    unsigned max_connections;
    size_t conn_memory; /* libmicrohttpd's pool per connection (http.c) */
    pool_t *buf_pool;        /* small blocks for backend bodies and answers */
    const pool_t *handle_pool; /* the upstream's curl handles (for /metrics) */
    struct metrics *metrics; /* written by this worker only; scraped by any */
};

#endif
