/*
 * upstream_curl: private to upstream.c and upstream_curl.c (not a public
 * header). upstream.c owns the worker's curl multi handle, its sockets and
 * timer; upstream_curl.c owns one transfer on a pooled easy handle. This is
 * what each calls of the other, and the worker's transport they share.
 *
 * Invariant: up->inflight counts the easy handles added to up->multi and
 * not yet removed (by drain in upstream.c or an abort in upstream_curl.c).
 */
#ifndef GATEWAY_UPSTREAM_CURL_H
#define GATEWAY_UPSTREAM_CURL_H

#include <curl/curl.h>

#include "gateway/upstream.h"

struct upstream {
    loop_t *loop;
    CURLM *multi;
    loop_timer_t timer;
    loop_hook_t prepare;
    bool timeout_now; /* curl asked for a 0 ms timeout */
    unsigned inflight;
    pool_t *easy_pool;
    struct usock **socks; /* indexed by fd */
    size_t n_socks;
    struct native *native; /* the native transport (http:// by default) */
    struct metrics *metrics;
};

/* One transfer (upstream_curl.c), on the calling coroutine's stack. */
struct call;

/* The pool of easy handles of up, each set up with the callbacks of
 * upstream_curl.c and the socket callbacks below. NULL on out-of-memory. */
pool_t *upstream_easy_pool_new(struct upstream *up);

/* The libcurl exchange of upstream_call(). Never inlined (see its
 * definition). */
void upstream_curl_call(struct upstream *up, ctx_t *ctx, const struct upstream_req *req,
                        struct upstream_resp *resp);

/* Ends c's wait: its transfer finished with code and was removed from the
 * multi handle. */
void upstream_curl_done(struct call *c, CURLcode code);

/* curl opens and closes its sockets through these (upstream.c):
 * CURLOPT_OPENSOCKETFUNCTION and CURLOPT_CLOSESOCKETFUNCTION, data up. */
curl_socket_t upstream_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a);
int upstream_close_socket(void *clientp, curl_socket_t s);

#endif
