/*
 * request: a client request's life on its worker (see request.c): routing,
 * the built-in endpoints, the checks before any backend call, the
 * fan-out's start and end, the answer and its headers, the access log.
 */
#ifndef GATEWAY_REQUEST_H
#define GATEWAY_REQUEST_H

#include "core/pool.h"
#include "gateway/config.h"
#include "gateway/router.h"

struct request;
struct worker;
struct http_handler;

/* The access handlers to give http_listen: each request of the daemon
 * lives through them. */
extern const struct http_handler request_http;

/* A request under cfg for route m (its endpoint and params; NULL: no
 * endpoint, e.g. a built-in or a 404) with every field set up: one call per
 * backend, the answer and backend bodies on pool (NULL: malloc). NULL when
 * out of memory. */
struct request *request_new(const struct config *cfg, const struct route_match *m, pool_t *pool);
/* Frees r and everything it holds (not its config). NULL is a no-op. */
void request_free(struct request *r);

/* Cancels every request of w whose fan-out runs (the shutdown timeout):
 * each is answered at once. */
void request_cancel_running(struct worker *w);

#endif
