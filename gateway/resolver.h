/*
 * resolver: host names resolved off the workers.
 *
 * Owns: one thread that runs getaddrinfo (AF_UNSPEC, SOCK_STREAM: IPv4 and
 * IPv6), the table of answers it publishes, and the waiters of names not
 * known yet. A worker never blocks on DNS: resolver_lookup reads an
 * immutable snapshot of the table through core/avalue.h (lock-free, no
 * allocation); only a miss takes the mutex, queues the name and registers a
 * waiter that the thread hands back to the waiter's loop (loop_submit) once
 * an answer is published. Every known name, resolved or not, is resolved
 * again every refresh_s seconds (negative answers are cached and refreshed
 * like positive ones); a refresh that fails for a transient reason
 * (EAI_AGAIN, EAI_MEMORY, EAI_SYSTEM) keeps the previous answer.
 *
 * Names are kept for the life of the resolver (they are the backend hosts of
 * the config, a small set). A name is looked up as given (case-sensitive
 * key; at most RESOLVER_MAX_NAME bytes); "[::1]" (URL form) and "::1" are
 * both IPv6 literals.
 *
 * Error convention: 0 or a negative errno value.
 */
#ifndef GATEWAY_RESOLVER_H
#define GATEWAY_RESOLVER_H

#include <stdint.h>
#include <sys/socket.h>

#include "core/loop.h"

#define RESOLVER_MAX_ADDRS 8
#define RESOLVER_MAX_NAME  253

struct resolver_addrs {
    unsigned n;
    struct sockaddr_storage addr[RESOLVER_MAX_ADDRS];
    socklen_t len[RESOLVER_MAX_ADDRS];
};

struct resolver;

/* Starts the resolver thread; refresh_s (>= 1): every known name is
 * resolved again this often. NULL on failure (errno set). */
struct resolver *resolver_new(unsigned refresh_s);

/* Stops and joins the thread and frees everything. Pending waiters are
 * dropped (their done is never called); a done already handed to its loop
 * still runs there, so its arg must outlive that loop's next iteration.
 * NULL is ignored. */
void resolver_free(struct resolver *r);

/* Any thread, never blocks (no DNS, no waiting on the thread: a hit is
 * lock-free; a miss takes a mutex that is never held across getaddrinfo).
 * Numeric IPv4 and IPv6 literals are answered at once without the thread.
 *   0:       *out filled, in getaddrinfo's order, port (host byte order)
 *            set in each address;
 *   -EAGAIN: not known yet: the name is queued for the thread and done(arg)
 *            will run ON loop (via loop_submit) once an answer, positive or
 *            negative, is published; then look up again;
 *   -ENOENT: the name does not resolve (cached negative answer);
 *   -EINVAL: host empty or longer than RESOLVER_MAX_NAME;
 *   -ENOMEM: no memory to queue the name or the waiter (done is not called).
 * loop and done may be NULL: the name is queued and nobody is told.
 * A registered waiter holds loop: before loop is freed, every waiter on it
 * must have run, been cancelled (resolver_cancel) or been dropped
 * (resolver_free). Addresses come in getaddrinfo's order (RFC 6724): try
 * them in turn. */
int resolver_lookup(struct resolver *r, const char *host, uint16_t port, struct resolver_addrs *out,
                    loop_t *loop, void (*done)(void *arg), void *arg);

/* Removes waiters registered with exactly (loop, done, arg) that have not
 * been handed to their loop yet, and returns how many it removed. Call it
 * on loop's thread when the waiting call gives up (deadline, cancel): when it
 * returns 0 after a -EAGAIN lookup that registered such a waiter, done(arg)
 * is already queued on loop and will still run there, so arg must live
 * until it has. (An addition to the interface of issue 11.) */
unsigned resolver_cancel(struct resolver *r, loop_t *loop, void (*done)(void *arg), void *arg);

/* Counters, for tests and metrics. Any thread (takes the mutex). */
struct resolver_stats {
    uint64_t resolutions; /* getaddrinfo calls finished (first ones and refreshes) */
    uint64_t failures;    /* of those, the ones that found no address */
    uint64_t published;   /* resolutions whose outcome is in the table and whose waiters were
                             handed to their loops (counted after the hand-over) */
    unsigned names;       /* names known */
};
void resolver_stats(struct resolver *r, struct resolver_stats *out);

/* A reload's upstream.dns_refresh_s: names are resolved again at most
 * refresh_s seconds from now, then every refresh_s. */
void resolver_set_refresh(struct resolver *r, unsigned refresh_s);

/* Queues host for resolution without a waiter (at start or reload), unless
 * it is a literal or already known. */
void resolver_prefetch(struct resolver *r, const char *host);

#endif
