/*
 * upstream: the curl transport (upstream.h): one curl multi handle per
 * worker on the worker's loop, its sockets and timer, and upstream_call,
 * which hands native calls to native.c and curl calls to upstream_curl.c
 * (one transfer on a pooled easy handle). Owns every curl object of its
 * worker; nothing here is shared across threads.
 *
 * Invariants: up->socks[fd] is the state of a socket curl opened, from
 * upstream_open_socket to upstream_close_socket; it is in the loop's epoll
 * set (registered) only between curl's CURL_POLL_IN/OUT and its
 * CURL_POLL_REMOVE.
 */
#include "gateway/upstream_curl.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/metrics.h"
#include "gateway/native.h"

#include "core/container_of.h"

/* Idle backend connections curl keeps per worker. */
#define MAX_IDLE_CONNECTIONS 1024

/* One socket curl uses; found by fd in up->socks. */
struct usock {
    loop_io_t io;
    struct upstream *up;
    bool registered; /* in the loop's epoll set */
};

static void drain(struct upstream *up)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(up->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        struct call *c = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        CURLcode code = msg->data.result;
        curl_multi_remove_handle(up->multi, msg->easy_handle);
        up->inflight--;
        upstream_curl_done(c, code);
    }
}

static void socket_action(struct upstream *up, curl_socket_t s, int flags)
{
    int running;
    curl_multi_socket_action(up->multi, s, flags, &running);
    drain(up);
}

static void on_sock_event(loop_t *loop, loop_io_t *io, uint32_t revents)
{
    (void)loop;
    struct usock *us = container_of(io, struct usock, io);
    int flags = 0;
    if (revents & (EPOLLIN | EPOLLRDHUP)) flags |= CURL_CSELECT_IN;
    if (revents & EPOLLOUT) flags |= CURL_CSELECT_OUT;
    if (revents & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
    /* us may be freed inside (curl closing the socket): do not touch it after. */
    socket_action(us->up, io->fd, flags);
}

static struct usock *sock_lookup(struct upstream *up, curl_socket_t s)
{
    return (size_t)s < up->n_socks ? up->socks[s] : NULL;
}

static struct usock *sock_make(struct upstream *up, curl_socket_t s)
{
    if ((size_t)s >= up->n_socks) {
        size_t n = up->n_socks ? up->n_socks : 64;
        while (n <= (size_t)s)
            n *= 2;
        struct usock **t = realloc(up->socks, n * sizeof *t);
        if (!t) return NULL;
        memset(t + up->n_socks, 0, (n - up->n_socks) * sizeof *t);
        up->socks = t;
        up->n_socks = n;
    }
    struct usock *us = calloc(1, sizeof *us);
    if (!us) return NULL;
    us->up = up;
    us->io.fd = -1;
    up->socks[s] = us;
    return us;
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    struct upstream *up = userp;
    struct usock *us = sock_lookup(up, s);
    if (what == CURL_POLL_REMOVE) {
        /* Unregistered at once, not lazily (docs/perf.md K5 saves two
         * epoll_ctl per transfer by keeping idle sockets registered): this
         * libcurl closes some sockets without calling CLOSESOCKETFUNCTION
         * (seen for transfers aborted while connecting), and a registration
         * kept past that would act on whatever fd number is opened next.
         * The same libcurl may send this REMOVE only after such a close: the
         * DEL then names an fd number that may be another worker's socket,
         * which is not in this epoll set, so it fails with ENOENT and
         * changes nothing (TSan still reports it: tests/tsan.supp). */
        if (us && us->registered) {
            loop_io_stop(up->loop, &us->io);
            us->registered = false;
        }
        return 0;
    }
    if (!us && !(us = sock_make(up, s))) return -1;
    uint32_t ev = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
    if (!us->registered) {
        if (loop_io_start(up->loop, &us->io, s, ev, on_sock_event) < 0) return -1;
        us->registered = true;
    } else if (us->io.events != ev && loop_io_modify(up->loop, &us->io, ev) < 0) {
        /* The old fd was closed behind our back (see above) and this is a
         * new socket with its number: register it afresh. */
        if (loop_io_start(up->loop, &us->io, s, ev, on_sock_event) < 0) return -1;
    }
    return 0;
}

/* curl opens its sockets through here. A socket state already filed under
 * the new fd number means curl closed the old socket without telling us:
 * the kernel dropped that registration with the fd, so forget it too (and
 * any of its events still in this loop iteration's batch). */
curl_socket_t upstream_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)purpose;
    struct upstream *up = clientp;
    curl_socket_t s = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (s >= 0 && up->metrics)
        metrics_upstream_event(up->metrics, METRICS_TRANSPORT_CURL, METRICS_UP_CONNECT);
    struct usock *us = s >= 0 ? sock_lookup(up, s) : NULL;
    if (us && us->registered) {
        loop_io_stop(up->loop, &us->io);
        us->registered = false;
    }
    return s;
}

/* curl closes its sockets through here (most of the time: see on_socket),
 * so a socket's state lives as long as the fd. */
int upstream_close_socket(void *clientp, curl_socket_t s)
{
    struct upstream *up = clientp;
    struct usock *us = sock_lookup(up, s);
    if (up->metrics) metrics_upstream_event(up->metrics, METRICS_TRANSPORT_CURL, METRICS_UP_CLOSE);
    if (us) {
        if (us->registered) loop_io_stop(up->loop, &us->io);
        up->socks[s] = NULL;
        free(us);
    }
    return close(s);
}

static int on_timer(CURLM *multi, long ms, void *userp)
{
    (void)multi;
    struct upstream *up = userp;
    if (ms < 0) {
        loop_timer_stop(up->loop, &up->timer);
        up->timeout_now = false;
    } else if (ms == 0) {
        /* Served by the prepare hook in this iteration: no timer syscall,
         * and every transfer added by this batch of coroutines starts in
         * one socket_action call. */
        loop_timer_stop(up->loop, &up->timer);
        up->timeout_now = true;
    } else {
        loop_timer_start(up->loop, &up->timer, loop_now(up->loop) + (uint64_t)ms * 1000000u);
    }
    return 0;
}

static void on_timer_fire(loop_t *loop, loop_timer_t *t)
{
    (void)loop;
    socket_action(container_of(t, struct upstream, timer), CURL_SOCKET_TIMEOUT, 0);
}

static void on_prepare(loop_t *loop, loop_hook_t *h)
{
    struct upstream *up = container_of(h, struct upstream, prepare);
    for (int i = 0; up->timeout_now && i < 4; i++) {
        up->timeout_now = false;
        socket_action(up, CURL_SOCKET_TIMEOUT, 0);
    }
    if (up->timeout_now) { /* still asking: let the poll return at once */
        up->timeout_now = false;
        loop_timer_start(loop, &up->timer, loop_now(loop));
    }
}

struct upstream *upstream_new(loop_t *loop, struct resolver *res, struct metrics *m)
{
    struct upstream *up = calloc(1, sizeof *up);
    if (!up) return NULL;
    up->loop = loop;
    up->native = native_new(loop, res, m);
    up->metrics = m;
    up->easy_pool = upstream_easy_pool_new(up);
    up->multi = curl_multi_init();
    if (!up->easy_pool || !up->multi || !up->native) {
        upstream_free(up);
        return NULL;
    }
    curl_multi_setopt(up->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(up->multi, CURLMOPT_SOCKETDATA, up);
    curl_multi_setopt(up->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(up->multi, CURLMOPT_TIMERDATA, up);
    curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS, (long)MAX_IDLE_CONNECTIONS);
    loop_timer_init(&up->timer, on_timer_fire);
    loop_hook_add(loop, &up->prepare, on_prepare);
    return up;
}

void upstream_free(struct upstream *up)
{
    if (!up) return;
    /* Transfers still added belong to parked coroutines that the caller
     * has already given up on; closing the multi handle aborts them. */
    if (up->multi) curl_multi_cleanup(up->multi);
    loop_timer_stop(up->loop, &up->timer);
    loop_hook_remove(up->loop, &up->prepare);
    if (up->easy_pool) pool_free(up->easy_pool);
    native_free(up->native);
    for (size_t i = 0; i < up->n_socks; i++) {
        if (up->socks[i]) {
            if (up->socks[i]->registered) loop_io_stop(up->loop, &up->socks[i]->io);
            free(up->socks[i]);
        }
    }
    free(up->socks);
    free(up);
}

void upstream_call(struct upstream *up, ctx_t *ctx, const struct upstream_req *req,
                   struct upstream_resp *resp)
{
    cachectl_init(&resp->cc);
    expose_reset(resp->exp);
    if (req->native)
        native_call(up->native, ctx, req, resp);
    else
        upstream_curl_call(up, ctx, req, resp);
}

unsigned upstream_inflight(const struct upstream *up)
{
    return up->inflight + native_inflight(up->native);
}

const pool_t *upstream_handle_pool(const struct upstream *up)
{
    return up->easy_pool;
}

size_t upstream_mark_idle(struct upstream *up)
{
    return pool_mark_idle(up->easy_pool) + native_mark_idle(up->native);
}

size_t upstream_free_idle(struct upstream *up, size_t max)
{
    size_t n = pool_free_idle(up->easy_pool, max);
    return n + native_free_idle(up->native, max > n ? max - n : 0);
}
