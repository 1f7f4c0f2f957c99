/*
 * http: libmicrohttpd on a worker's loop. Owns the daemon (driven from the
 * loop: its epoll fd, its timeout, a run after every resume), each client
 * connection's watch (the hang-up watch of a suspended request, the header
 * and body deadlines, the connection count and limit), and the request
 * header access (lookups, the walk that tells cut values, the raw query).
 *
 * Knows nothing of routes, endpoints or backends: what a request means is
 * the access handler's (gateway/request.c), given to http_listen. Every
 * function runs on the worker's thread.
 */
#ifndef GATEWAY_HTTP_H
#define GATEWAY_HTTP_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "gateway/config.h"
#include "gateway/gateway.h"

/* The access handlers; cls is the worker. completed runs after the
 * connection's header deadline is re-armed for the next request. */
struct http_handler {
    MHD_AccessHandlerCallback access;
    MHD_RequestCompletedCallback completed;
};

/* Starts w's daemon on its loop, calling h (which outlives it) for each
 * request, and opens its listening socket. 0 or -errno, what failed
 * reported on stderr. */
int http_listen(struct worker *w, const struct config *cfg, const struct http_handler *h);
/* Closes the listening socket; open connections go on. */
void http_stop_accepting(struct worker *w);
/* Stops the daemon (no request may be suspended). */
void http_close(struct worker *w);

/* A request header (case-insensitive name) of connection conn; NULL when
 * absent. */
const char *http_header(void *conn, const char *name);
/* Called for one request header: value[0..len) as libmicrohttpd parsed it;
 * cut: bytes of its line after the value were dropped (a NUL in it).
 * Returns 0 to go on, anything else to stop (the walk returns it). */
typedef int (*http_header_visit_fn)(void *arg, const char *name, const char *value, size_t len,
                                    bool cut);
/* Visits every request header of conn in arrival order; block is
 * libmicrohttpd's header block (the method string starts it). */
int http_header_each(struct MHD_Connection *conn, const char *block, http_header_visit_fn visit,
                     void *arg);
/* Appends the raw query string ("a=1&b") of conn's request to q. */
void http_query(struct MHD_Connection *conn, buf_t *q);

/* Beyond server.max_connections: answer 503 and close. */
bool http_over_limit(struct MHD_Connection *conn);

/* The header deadline is met (headers in) or the body is in: stop it. */
void http_stop_deadline(struct MHD_Connection *conn);
/* The body must be in by at_ns (loop time); if not, *status becomes 408
 * and the connection closes. */
void http_arm_body_deadline(struct MHD_Connection *conn, uint64_t at_ns, int *status);
/* Is the body deadline armed for status (http_arm_body_deadline)? */
bool http_body_deadline_armed(struct MHD_Connection *conn, const int *status);

/* Suspends conn's request and watches the client: a hang-up calls
 * gone(arg) once (at once when it hung up before). */
void http_suspend(struct worker *w, struct MHD_Connection *conn, void (*gone)(void *arg),
                  void *arg);
/* Stops watching for the hang-up (the answer is known). */
void http_unwatch(struct MHD_Connection *conn);
/* Resumes a suspended request; libmicrohttpd runs in this iteration. */
void http_resume(struct worker *w, struct MHD_Connection *conn);

/* listener.c: opens w's listening socket (SO_REUSEPORT) on its loop; each
 * new connection's first header block is checked there, then handed to
 * libmicrohttpd. 0 or -errno (reported on stderr). */
int listener_open(struct worker *w, const struct server_conf *s);
/* listener.c: closes the listening socket; pending connections go on. */
void listener_stop_accepting(struct worker *w);
/* listener.c: closes the listening socket and every pending connection. */
void listener_close(struct worker *w);
/* listener.c: builds the listen address of s; -EINVAL (reported on
 * stderr) when s->host is not a numeric address. */
int server_sockaddr(const struct server_conf *s, struct sockaddr_storage *ss, socklen_t *len);

#endif
