/*
 * health: the active health checker, one thread per process, off the
 * request path (never a worker): for every group with a health_check, every
 * interval_ms it sends GET path to each host on its own blocking
 * connection (timeout_ms for connect, send and answer); a 2xx status line
 * is a passed probe, anything else (refused, reset, timeout, non-2xx) a
 * failed one. unhealthy_after failures in a row mark the host down,
 * healthy_after passes in a row mark it up again. The verdict is published
 * in the host's registry entry (gateway/ugroup.h, an atomic flag the
 * balancer reads without a lock); the thread is the only writer of the
 * counters. It reads the current config snapshot every round, so a reload
 * changes what is checked; hosts that stay keep their state.
 */
#ifndef GATEWAY_HEALTH_H
#define GATEWAY_HEALTH_H

#include "core/avalue.h"

struct health;

/* Starts the thread on the configs published in cfgs. NULL on failure (no
 * active checks; a message on stderr). */
struct health *health_start(avalue_t *cfgs);
/* Stops and joins the thread; NULL is fine. */
void health_stop(struct health *h);

/* One probe (exposed for tests): 0 when host:port answered GET path with a
 * 2xx status line within timeout_ms, else -1. */
int health_probe(const char *host, const char *path, uint32_t timeout_ms);

#endif
