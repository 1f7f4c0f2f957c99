/*
 * worker: what server.c (the HTTP side) and worker.c (threads, lifecycle)
 * share about a worker thread. Internal to the gateway.
 *
 * A worker owns one loop, one libmicrohttpd daemon in external-epoll mode on
 * its own SO_REUSEPORT socket, one upstream (curl multi), pools and metrics.
 * Everything in it is touched by its own thread only, except metrics and the
 * pool counters, which /metrics reads from any worker with relaxed atomics.
 */
#ifndef GATEWAY_WORKER_H
#define GATEWAY_WORKER_H

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "core/loop.h"
#include "core/pool.h"
#include "gateway/server.h"

struct request;
struct pending;

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
    loop_timer_t sweep_timer; /* worker.c: gives back what a burst left */
    bool sweeping;            /* idle objects left to free, a batch per tick */
    loop_timer_t drain_timer; /* server.drain_accept_ms after SIGTERM */
    uint64_t drain_ns;
    bool accepting;     /* in the drain window: do not stop yet */
    bool listener_open; /* the drain window has not closed the listener yet */
    unsigned n_conns;   /* client connections open on this worker */
    unsigned max_connections;
    size_t conn_memory; /* libmicrohttpd's pool per connection (server.c) */
    pool_t *buf_pool;        /* small blocks for backend bodies and answers */
    struct metrics *metrics; /* written by this worker only; scraped by any */
};

/* Builds the listen address of s; -EINVAL (reported on stderr) when s->host
 * is not a numeric address. */
int server_sockaddr(const struct server_conf *s, struct sockaddr_storage *ss, socklen_t *len);

/* server.c: starts w's daemon on its loop (0 or -errno, reported). */
int http_listen(struct worker *w, const struct config *cfg);
/* server.c: closes the listening socket; open connections go on. */
void http_stop_accepting(struct worker *w);
/* server.c: cancels every request whose fan-out runs (shutdown timeout). */
void http_cancel_running(struct worker *w);
/* server.c: stops the daemon (no request may be suspended). */
void http_close(struct worker *w);

/* listener.c: opens w's listening socket (SO_REUSEPORT) on its loop; each
 * new connection's first header block is checked there, then handed to
 * libmicrohttpd. 0 or -errno (reported on stderr). */
int listener_open(struct worker *w, const struct server_conf *s);
/* listener.c: closes the listening socket; pending connections go on. */
void listener_stop_accepting(struct worker *w);
/* listener.c: closes the listening socket and every pending connection. */
void listener_close(struct worker *w);

/* worker.c: stops w's loop once it drains and has no live request. */
void worker_maybe_stop(struct worker *w);

#endif
