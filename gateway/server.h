/*
 * server: the process (shared state, worker threads) and the HTTP side of a
 * request (libmicrohttpd glue).
 *
 * Shared-nothing workers: each thread owns a loop, a libmicrohttpd daemon
 * in external-epoll mode on its own SO_REUSEPORT listening socket, an
 * upstream (curl multi) and pools. A request never leaves its worker. The
 * only shared state is the config snapshot (an atomic value, pinned by each
 * request for its whole life) and a few flags.
 */
#ifndef GATEWAY_SERVER_H
#define GATEWAY_SERVER_H

#include <stdatomic.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/avalue.h"
#include "gateway/config.h"

struct worker;

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
 * cfg). Returns 0, or -errno with a message on stderr (e.g. the port is
 * taken). */
int server_start(struct gateway *gw, struct config *cfg);
/* Writes the degraded snapshot (degraded.snapshot_path) while the workers
 * run. Returns 0 or -errno (reported on stderr). */
int server_snapshot(struct gateway *gw);
/* Stops accepting, lets in-flight requests finish within the configured
 * shutdown timeout (then cancels them), joins the workers, frees all. */
void server_stop(struct gateway *gw);

#endif
