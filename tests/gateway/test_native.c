/* Tests for gateway/native.c and native_pool.c, the native transport:
 * reuse, the idle timeout, a backend closing an idle connection (seen
 * without a probe), the keep-alive race (stale retry only for GET, HEAD,
 * PUT, DELETE, OPTIONS), cancellation closing the connection, header
 * injection refused, an unresolvable name. Backends are raw listeners on
 * 127.0.0.1 in threads of this program (one thread per connection). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../core/loop_test.h"
#include "core/coro.h"
#include "gateway/native.h"

enum mode {
    M_KEEP,        /* answer every request, keep the connection */
    M_CLOSE_IDLE,  /* answer one request, then close */
    M_DROP_SECOND, /* answer the first request, close on the second unanswered */
    M_SILENT,      /* read the request, never answer; note the EOF */
};

#define MAX_CONNS 16

struct srv {
    int lfd;
    int port;
    enum mode mode;
    pthread_t acceptor;
    pthread_t conns[MAX_CONNS];
    atomic_int n_conns;
    atomic_int requests; /* complete requests read */
    atomic_int eofs;     /* connections the gateway closed */
    char last[65536];    /* the last request head read (acceptor-owned until joined) */
    atomic_long body_ok; /* bytes of the last body read that matched body_byte(i) */
    pthread_mutex_t mu;
};

struct conn_arg {
    struct srv *s;
    int fd;
};

static char body_byte(size_t i)
{
    return (char)('a' + i % 23);
}

/* Reads one request head (up to the blank line) and a Content-Length body
 * (counting the bytes that match body_byte); 
 * 1 when one was read (2 for a HEAD), 0 on EOF. */
static int read_request(struct srv *s, int fd)
{
    static _Thread_local char buf[65536];
    size_t n = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (r <= 0) return 0;
        n += (size_t)r;
        buf[n] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (!end) continue;
        size_t head = (size_t)(end + 4 - buf);
        const char *cl = strcasestr(buf, "\r\nContent-Length: ");
        size_t body = cl && cl < end ? strtoul(cl + 18, NULL, 10) : 0;
        size_t got = n - head, ok = 0;
        for (size_t i = 0; i < got; i++)
            ok += buf[head + i] == body_byte(i);
        while (got < body) {
            char chunk[4096];
            r = recv(fd, chunk, body - got < sizeof chunk ? body - got : sizeof chunk, 0);
            if (r <= 0) return 0;
            for (ssize_t i = 0; i < r; i++)
                ok += chunk[i] == body_byte(got + (size_t)i);
            got += (size_t)r;
        }
        atomic_store(&s->body_ok, (long)ok);
        pthread_mutex_lock(&s->mu);
        snprintf(s->last, sizeof s->last, "%.*s", (int)head, buf);
        pthread_mutex_unlock(&s->mu);
        atomic_fetch_add(&s->requests, 1);
        return strncmp(buf, "HEAD ", 5) == 0 ? 2 : 1;
    }
}

static void *conn_main(void *arg)
{
    struct conn_arg *a = arg;
    struct srv *s = a->s;
    int fd = a->fd;
    free(a);
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}";
    for (int i = 0;; i++) {
        int rq = read_request(s, fd);
        if (!rq) {
            atomic_fetch_add(&s->eofs, 1);
            break;
        }
        if (s->mode == M_SILENT) continue;
        if (s->mode == M_DROP_SECOND && i == 1) break;            /* the race: closed, no answer */
        size_t len = rq == 2 ? sizeof ok - 1 - 7 : sizeof ok - 1; /* HEAD: no body */
        if (send(fd, ok, len, MSG_NOSIGNAL) < 0) break;
        if (s->mode == M_CLOSE_IDLE) break;
    }
    close(fd);
    return NULL;
}

static void *acceptor_main(void *arg)
{
    struct srv *s = arg;
    for (;;) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0) break; /* shut down */
        int i = atomic_load(&s->n_conns);
        struct conn_arg *a = malloc(sizeof *a);
        if (i >= MAX_CONNS || !a) {
            free(a);
            close(fd);
            continue;
        }
        a->s = s;
        a->fd = fd;
        if (pthread_create(&s->conns[i], NULL, conn_main, a) != 0) {
            free(a);
            close(fd);
            continue;
        }
        atomic_store(&s->n_conns, i + 1);
    }
    return NULL;
}

/* A listener on 127.0.0.1 (v6: ::1; NULL when the machine has no IPv6). */
static struct srv *srv_start_af(enum mode mode, int af)
{
    struct srv *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->mode = mode;
    pthread_mutex_init(&s->mu, NULL);
    s->lfd = socket(af, SOCK_STREAM, 0);
    struct sockaddr_storage ss = {0};
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    socklen_t len = af == AF_INET ? sizeof *a4 : sizeof *a6;
    ss.ss_family = (sa_family_t)af;
    if (af == AF_INET)
        a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else
        a6->sin6_addr = in6addr_loopback;
    if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&ss, len) != 0) {
        assert_int_equal(af, AF_INET6); /* only IPv6 may be missing */
        if (s->lfd >= 0) close(s->lfd);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    assert_int_equal(listen(s->lfd, 16), 0);
    getsockname(s->lfd, (struct sockaddr *)&ss, &len);
    s->port = ntohs(af == AF_INET ? a4->sin_port : a6->sin6_port);
    assert_int_equal(pthread_create(&s->acceptor, NULL, acceptor_main, s), 0);
    return s;
}

static struct srv *srv_start(enum mode mode)
{
    return srv_start_af(mode, AF_INET);
}

/* Stops accepting, waits for every connection thread (the transport must
 * have closed its sockets by then: native_free first). */
static void srv_stop(struct srv *s)
{
    shutdown(s->lfd, SHUT_RDWR);
    pthread_join(s->acceptor, NULL);
    close(s->lfd);
    for (int i = 0; i < atomic_load(&s->n_conns); i++)
        pthread_join(s->conns[i], NULL);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- running calls on the test's loop ---- */

struct job {
    struct native *n;
    const char *origin;
    const char *method;
    const char *const *headers;
    size_t n_headers;
    const struct upstream_conf *conf;
    uint64_t timeout_ns;
    size_t max_bytes;
    const char *body_data; /* a POST body other than "{}" */
    size_t body_len;
    struct upstream_resp resp;
    buf_t body;
    int done;
};

static void job_main(void *arg)
{
    struct job *j = arg;
    ctx_t *ctx = ctx_with_timeout(ctx_background(), j->timeout_ns ? j->timeout_ns : 5000 * MS);
    struct upstream_req req = {
        .method = j->method ? j->method : "GET",
        .origin = j->origin,
        .path = "/x?y=1",
        .headers = j->headers,
        .n_headers = j->n_headers,
        .body = j->body_data ? j->body_data
                : j->method && strcmp(j->method, "POST") == 0 ? "{}"
                                                                : NULL,
        .body_len = j->body_data ? j->body_len : 2,
        .max_bytes = j->max_bytes ? j->max_bytes : 1024,
        .native = true,
        .conf = j->conf,
    };
    j->resp.body = &j->body;
    native_call(j->n, ctx, &req, &j->resp);
    ctx_release(ctx);
    j->done = 1;
}

static void run_call(loop_t *loop, struct job *j)
{
    buf_init(&j->body, NULL);
    j->done = 0;
    assert_non_null(loop_spawn(loop, job_main, j));
    assert_true(run_until_flag(loop, &j->done));
}

/* Compares the last request head the backend read with want. */
static void assert_last(struct srv *s, const char *want)
{
    pthread_mutex_lock(&s->mu);
    char got[sizeof s->last];
    memcpy(got, s->last, sizeof got);
    pthread_mutex_unlock(&s->mu);
    assert_string_equal(got, want);
}

static char origin_buf[64];
static const char *origin_of(const struct srv *s)
{
    snprintf(origin_buf, sizeof origin_buf, "http://127.0.0.1:%d", s->port);
    return origin_buf;
}

static struct native_counts counts(const struct native *n)
{
    struct native_counts c;
    native_counts(n, &c);
    return c;
}

/* Runs the loop until pred(n) holds; false after RUN_TIMEOUT. */
static bool run_until(loop_t *loop, struct native *n, bool (*pred)(struct native *))
{
    uint64_t end = mono_ns() + RUN_TIMEOUT;
    while (!pred(n)) {
        if (mono_ns() > end) return false;
        loop_run_once(loop, 10);
    }
    return true;
}

static bool no_idle(struct native *n)
{
    return counts(n).idle == 0;
}

/* ---- tests ---- */

static void test_reuse(void **state)
{
    loop_t *loop = *state;
    struct srv *s = srv_start(M_KEEP);
    struct native *n = native_new(loop, NULL, NULL);
    struct job j = {.n = n, .origin = origin_of(s)};
    for (int i = 0; i < 3; i++) {
        run_call(loop, &j);
        assert_int_equal(j.resp.result, UP_OK);
        assert_int_equal(j.resp.status, 200);
        assert_string_equal(j.body.data, "{\"a\":1}");
        buf_free(&j.body);
    }
    struct native_counts c = counts(n);
    assert_int_equal(c.connect, 1);
    assert_int_equal(c.reuse, 2);
    assert_int_equal(c.idle, 1);
    assert_int_equal(atomic_load(&s->n_conns), 1);
    assert_int_equal(atomic_load(&s->requests), 3);
    /* One writev: request line, Host, no Expect, nothing the caller did not ask. */
    char want[128];
    snprintf(want, sizeof want, "GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", s->port);
    assert_last(s, want);
    native_free(n);
    srv_stop(s);
}

static void test_max_idle_zero_closes(void **state)
{
    loop_t *loop = *state;
    struct srv *s = srv_start(M_KEEP);
    struct native *n = native_new(loop, NULL, NULL);
    struct upstream_conf conf = {
        .max_idle_per_origin = 0, .idle_timeout_s = 60, .connect_timeout_ms = 1000};
    struct job j = {.n = n, .origin = origin_of(s), .conf = &conf};
    run_call(loop, &j);
    assert_int_equal(j.resp.result, UP_OK);
    buf_free(&j.body);
    run_call(loop, &j);
    buf_free(&j.body);
    struct native_counts c = counts(n);
    assert_int_equal(c.connect, 2);
    assert_int_equal(c.reuse, 0);
    assert_int_equal(c.close, 2);
    assert_int_equal(c.idle, 0);
    native_free(n);
    srv_stop(s);
}

static void test_idle_timeout(void **state)
{
    loop_t *loop = *state;
    struct srv *s = srv_start(M_KEEP);
    struct native *n = native_new(loop, NULL, NULL);
    struct upstream_conf conf = {
        .max_idle_per_origin = 8, .idle_timeout_s = 1, .connect_timeout_ms = 1000};
    struct job j = {.n = n, .origin = origin_of(s), .conf = &conf};
    run_call(loop, &j);
    assert_int_equal(j.resp.result, UP_OK);
    buf_free(&j.body);
    assert_int_equal(counts(n).idle, 1);
    uint64_t t0 = mono_ns();
    assert_true(run_until(loop, n, no_idle)); /* the sweep closed it */
    assert_true(mono_ns() - t0 >= 500 * MS);  /* not at once */
    assert_int_equal(counts(n).close, 1);
    native_free(n);
    srv_stop(s);
    /* The backend saw the close (its thread ended on EOF). */
}

static void test_backend_close_seen_while_idle(void **state)
{
    loop_t *loop = *state;
    struct srv *s = srv_start(M_CLOSE_IDLE);
    struct native *n = native_new(loop, NULL, NULL);
    struct job j = {.n = n, .origin = origin_of(s)};
    run_call(loop, &j);
    assert_int_equal(j.resp.result, UP_OK);
    buf_free(&j.body);
    /* No call is made: the loop alone notices the backend's FIN. */
    assert_true(run_until(loop, n, no_idle));
    assert_int_equal(counts(n).close, 1);
    run_call(loop, &j);
    assert_int_equal(j.resp.result, UP_OK);
    buf_free(&j.body);
    struct native_counts c = counts(n);
    assert_int_equal(c.connect, 2);
    assert_int_equal(c.reuse, 0);
    assert_int_equal(c.stale_retry, 0);
    native_free(n);
    srv_stop(s);
}

/* The keep-alive race: the backend closes a reused connection on the next
 * request without answering. */
static void stale_case(loop_t *loop, const char *method, bool retried)
{
    struct srv *s = srv_start(M_DROP_SECOND);
    struct native *n = native_new(loop, NULL, NULL);
    struct job j = {.n = n, .origin = origin_of(s), .method = method};
    run_call(loop, &j);
    assert_int_equal(j.resp.result, UP_OK);
    buf_free(&j.body);
    run_call(loop, &j);
    struct native_counts c = counts(n);
    assert_int_equal(c.reuse, 1);
    if (retried) {
        assert_int_equal(j.resp.result, UP_OK);
        assert_int_equal(j.resp.status, 200);
        assert_int_equal(c.stale_retry, 1);
        assert_int_equal(c.connect, 2);
        assert_int_equal(atomic_load(&s->requests), 3);
    } else {
        assert_int_equal(j.resp.result, UP_ERROR);
        assert_non_null(j.resp.error);
        assert_int_equal(c.stale_retry, 0);
        assert_int_equal(c.connect, 1);
        assert_int_equal(atomic_load(&s->requests), 2); /* never sent twice */
    }
    buf_free(&j.body);
    native_free(n);
    srv_stop(s);
}

static void test_stale_retry_methods(void **state)
{
    const char *yes[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        stale_case(*state, yes[i], true);
    stale_case(*state, "POST", false);
    stale_case(*state, "PATCH", false);
}

static void test_cancel_closes_connection(void **state)
{
    loop_t *loop = *state;
    struct srv *s = srv_start(M_SILENT);
    struct native *n = native_new(loop, NULL, NULL);
    struct job j = {.n = n, .origin = origin_of(s), .timeout_ns = 100 * MS};
    run_call(loop, &j);
    assert_int_equal(j.resp.result, UP_TIMEOUT);
    buf_free(&j.body);
    struct native_counts c = counts(n);
    assert_int_equal(c.close, 1);
    assert_int_equal(c.idle, 0);
    /* The backend sees the abort before anything else happens. */
    uint64_t end = mono_ns() + RUN_TIMEOUT;
    while (atomic_load(&s->eofs) == 0 && mono_ns() < end)
        usleep(1000);
    assert_int_equal(atomic_load(&s->eofs), 1);
    native_free(n);
    srv_stop(s);
}

static void test_too_big(void **state)
{
    loop_t *loop = *state;
    struct srv *s = srv_start(M_KEEP);
    struct native *n = native_new(loop, NULL, NULL);
    struct job j = {.n = n, .origin = origin_of(s), .max_bytes = 3};
    run_call(loop, &j);
    assert_int_equal(j.resp.result, UP_TOO_BIG);
    assert_int_equal(counts(n).idle, 0);
    buf_free(&j.body);
    native_free(n);
    srv_stop(s);
}

static void test_header_injection_refused(void **state)
{
    loop_t *loop = *state;
    struct srv *s = srv_start(M_KEEP);
    struct native *n = native_new(loop, NULL, NULL);
    const char *bad[][1] = {{"X-A: 1\r\nX-Evil: 1"},
                            {"X-A: 1\nX-Evil: 1"},
                            {"X-A: 1\r"},
                            {"Bad Name: 1"},
                            {": empty name"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct job j = {.n = n, .origin = origin_of(s), .headers = bad[i], .n_headers = 1};
        run_call(loop, &j);
        assert_int_equal(j.resp.result, UP_ERROR);
        buf_free(&j.body);
    }
    assert_int_equal(counts(n).connect, 0);
    assert_int_equal(atomic_load(&s->requests), 0);
    /* A good one goes through as written; framing headers are the transport's. */
    const char *good[] = {"X-A: 1", "Content-Length: 99", "Expect: 100-continue"};
    struct job j = {
        .n = n, .origin = origin_of(s), .headers = good, .n_headers = 3, .method = "POST"};
    run_call(loop, &j);
    assert_int_equal(j.resp.result, UP_OK);
    buf_free(&j.body);
    char want[160];
    snprintf(want, sizeof want,
             "POST /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n",
             s->port);
    assert_last(s, want);
    native_free(n);
    srv_stop(s);
}

/* A call carries up to UPSTREAM_MAX_HEADERS header lines (all that the
 * configuration allows, upstream.h); one more is refused before connecting,
 * never cut silently. */
static void test_max_headers(void **state)
{
    loop_t *loop = *state;
    struct srv *s = srv_start(M_KEEP);
    struct native *n = native_new(loop, NULL, NULL);
    static char lines[UPSTREAM_MAX_HEADERS + 1][24];
    const char *h[UPSTREAM_MAX_HEADERS + 1];
    for (int i = 0; i <= UPSTREAM_MAX_HEADERS; i++) {
        snprintf(lines[i], sizeof lines[i], "X-H%d: %d", i, i);
        h[i] = lines[i];
    }
    struct job j = {
        .n = n, .origin = origin_of(s), .headers = h, .n_headers = UPSTREAM_MAX_HEADERS};
    run_call(loop, &j);
    assert_int_equal(j.resp.result, UP_OK);
    buf_free(&j.body);
    pthread_mutex_lock(&s->mu);
    char last_line[32];
    snprintf(last_line, sizeof last_line, "\r\nX-H%d: %d\r\n\r\n", UPSTREAM_MAX_HEADERS - 1,
             UPSTREAM_MAX_HEADERS - 1);
    assert_non_null(strstr(s->last, last_line));
    pthread_mutex_unlock(&s->mu);
    int before = atomic_load(&s->requests);
    j.n_headers = UPSTREAM_MAX_HEADERS + 1;
    run_call(loop, &j);
    assert_int_equal(j.resp.result, UP_ERROR);
    buf_free(&j.body);
    assert_int_equal(atomic_load(&s->requests), before);
    native_free(n);
    srv_stop(s);
}

static void test_unresolvable_and_refused(void **state)
{
    loop_t *loop = *state;
    struct native *n = native_new(loop, NULL, NULL);
    struct job j = {.n = n, .origin = "http://nonexistent.invalid:80"};
    run_call(loop, &j);
    assert_int_equal(j.resp.result, UP_ERROR);
    assert_string_equal(j.resp.error, "cannot resolve host");
    buf_free(&j.body);
    /* A port nobody listens on: refused, a transport error. */
    struct srv *s = srv_start(M_KEEP);
    char origin[64];
    snprintf(origin, sizeof origin, "%s", origin_of(s));
    srv_stop(s);
    j.origin = origin;
    run_call(loop, &j);
    assert_int_equal(j.resp.result, UP_ERROR);
    assert_string_equal(j.resp.error, "cannot connect");
    buf_free(&j.body);
    j.origin = "https://127.0.0.1:1";
    run_call(loop, &j);
    assert_int_equal(j.resp.result, UP_ERROR);
    assert_string_equal(j.resp.error, "bad URL");
    buf_free(&j.body);
    native_free(n);
}

/* A request is written whole: copied into one buffer when it fits the
 * worker's read buffer (16 KiB), else as iovecs (here 40000 bytes, more
 * than one write takes on loopback, so the rest follows from the iovecs). */
static void large_request(loop_t *loop, size_t size)
{
    struct srv *s = srv_start(M_KEEP);
    struct native *n = native_new(loop, NULL, NULL);
    char *big = malloc(size);
    memcpy(big, "X-Big: ", 7);
    memset(big + 7, 'b', size - 8);
    big[size - 1] = '\0';
    const char *h[] = {big};
    struct job j = {.n = n, .origin = origin_of(s), .headers = h, .n_headers = 1};
    run_call(loop, &j);
    assert_int_equal(j.resp.result, UP_OK);
    buf_free(&j.body);
    char *want = malloc(size + 200);
    snprintf(want, size + 200, "GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n\r\n", s->port,
             big);
    assert_last(s, want);
    free(want);
    free(big);
    native_free(n);
    srv_stop(s);
}

/* A body of 8 MiB: more than the socket takes at once, so the write parks
 * and goes on from where the kernel stopped, every byte in order. */
static void large_body(loop_t *loop)
{
    struct srv *s = srv_start(M_KEEP);
    struct native *n = native_new(loop, NULL, NULL);
    size_t len = 8u << 20;
    char *body = malloc(len);
    for (size_t i = 0; i < len; i++)
        body[i] = body_byte(i);
    struct job j = {.n = n, .origin = origin_of(s), .method = "POST", .body_data = body,
                    .body_len = len, .timeout_ns = 30000 * MS};
    run_call(loop, &j);
    assert_int_equal(j.resp.result, UP_OK);
    assert_int_equal(atomic_load(&s->body_ok), (long)len);
    buf_free(&j.body);
    free(body);
    native_free(n);
    srv_stop(s);
}

static void test_large_request(void **state)
{
    large_request(*state, 3000);
    large_request(*state, 40000);
    large_body(*state);
}

/* A backend that never completes the handshake (its accept queue is full,
 * so the SYN is dropped): the call fails after connect_timeout_ms, well
 * before its own deadline, as a transport error. */
static void test_connect_timeout(void **state)
{
    loop_t *loop = *state;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 0), 0);
    getsockname(lfd, (struct sockaddr *)&a, &len);
    /* Fill the accept queue with connections nobody accepts. */
    int fill[4];
    for (int i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fill[i], (struct sockaddr *)&a, sizeof a);
    }
    struct native *n = native_new(loop, NULL, NULL);
    struct upstream_conf conf = {
        .max_idle_per_origin = 8, .idle_timeout_s = 60, .connect_timeout_ms = 200};
    char origin[64];
    snprintf(origin, sizeof origin, "http://127.0.0.1:%d", ntohs(a.sin_port));
    struct job j = {.n = n, .origin = origin, .conf = &conf, .timeout_ns = 20000 * MS};
    uint64_t t0 = mono_ns();
    run_call(loop, &j);
    uint64_t took = mono_ns() - t0;
    assert_int_equal(j.resp.result, UP_ERROR);
    assert_string_equal(j.resp.error, "connect timeout");
    assert_true(took >= 150 * MS);
    assert_true(took < 10000 * MS);
    assert_int_equal(counts(n).connect, 0);
    buf_free(&j.body);
    native_free(n);
    for (int i = 0; i < 4; i++)
        close(fill[i]);
    close(lfd);
}

/* An IPv6 literal origin: connected by address, Host keeps the brackets. */
static void test_ipv6_literal(void **state)
{
    loop_t *loop = *state;
    struct srv *s = srv_start_af(M_KEEP, AF_INET6);
    if (!s) skip();
    struct native *n = native_new(loop, NULL, NULL);
    char origin[64], want[128];
    snprintf(origin, sizeof origin, "http://[::1]:%d", s->port);
    struct job j = {.n = n, .origin = origin};
    run_call(loop, &j);
    assert_int_equal(j.resp.result, UP_OK);
    buf_free(&j.body);
    snprintf(want, sizeof want, "GET /x?y=1 HTTP/1.1\r\nHost: [::1]:%d\r\n\r\n", s->port);
    assert_last(s, want);
    native_free(n);
    srv_stop(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reuse, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_max_idle_zero_closes, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_idle_timeout, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_backend_close_seen_while_idle, loop_setup,
                                        loop_teardown),
        cmocka_unit_test_setup_teardown(test_stale_retry_methods, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_closes_connection, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_too_big, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_max_headers, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_header_injection_refused, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_unresolvable_and_refused, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_ipv6_literal, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_connect_timeout, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_large_request, loop_setup, loop_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
