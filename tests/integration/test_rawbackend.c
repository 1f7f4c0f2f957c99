/*
 * The real gateway against a hostile or unusual backend written here as a
 * raw socket (issue 9 item 8): a listener thread on 127.0.0.1 that reads
 * each request and answers with exactly crafted bytes, so the libcurl path
 * is shown what curl-based mocks cannot send:
 *   - a backend called with method HEAD answers headers only (a
 *     Content-Length but no body): the call completes with a 200;
 *   - a POST sent on a kept-alive connection that the backend closes
 *     without answering is never re-sent (RFC 9110 §9.2.2): 502; a GET in
 *     the same situation may still be retried on a new connection (200);
 *   - Content-Length with chunked, two different Content-Length values, a
 *     header block over 64 KiB, a signed Content-Length, a space before a
 *     colon and a transfer coding other than chunked are transport errors
 *     (502), while the same Content-Length twice and a large but allowed
 *     header block pass.
 *
 * One gateway with one worker (so a second request finds the connection the
 * first one left in curl's cache) and one raw backend for all tests. The
 * config pins "client": "curl" (the expected texts are the libcurl path's;
 * the native transport's own cases are integration/transport and
 * gateway/test_native, its parser's gateway/test_h1resp).
 */
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
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

/* ---- the raw backend ---- */

/* Requests seen, by method, since the last reset. */
static struct {
    int lfd;
    int port;
    pthread_t thread;
    atomic_bool stop;
    atomic_int posts, gets, heads;
    atomic_int conns; /* connection threads still running */
    pthread_mutex_t mu;
    int open_fds[64]; /* connections being served; -1: free slot */
} raw = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Files fd among the open connections (or forgets it): reset_backend shuts
 * them all down, so every test starts with no idle connection in the
 * gateway's cache. */
static void track_fd(int fd, bool add)
{
    pthread_mutex_lock(&raw.mu);
    for (size_t i = 0; i < sizeof raw.open_fds / sizeof raw.open_fds[0]; i++) {
        if (raw.open_fds[i] == (add ? -1 : fd)) {
            raw.open_fds[i] = add ? fd : -1;
            break;
        }
    }
    pthread_mutex_unlock(&raw.mu);
}

/* Reads one request (headers and a Content-Length body) into buf; its
 * length, 0 on EOF before a full request, -1 on error or stop. */
static ssize_t read_request(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            size_t need = (size_t)(end + 4 - buf);
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            if (cl && cl < end) need += (size_t)strtoul(cl + 17, NULL, 10);
            if (len >= need) return (ssize_t)len;
        }
        if (len + 1 >= cap) return -1;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int pr = poll(&pf, 1, 100);
        if (atomic_load(&raw.stop)) return -1;
        if (pr <= 0) continue;
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n == 0) return 0;
        if (n < 0) return errno == EINTR ? 0 : -1;
        len += (size_t)n;
    }
}

static void send_str(int fd, const char *s)
{
    (void)h_send_all(fd, s, strlen(s));
}

/* 200 with a JSON body; keep says whether the connection stays open. */
static void send_json(int fd, const char *json, bool keep)
{
    char head[256];
    snprintf(head, sizeof head,
             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n",
             strlen(json), keep ? "" : "Connection: close\r\n");
    send_str(fd, head);
    send_str(fd, json);
}

/* Headers of about total bytes in lines of 1 000, then a small body. */
static void send_big_headers(int fd, size_t total)
{
    send_str(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n"
                 "Connection: close\r\n");
    char line[1024];
    memset(line, 'a', sizeof line);
    for (size_t i = 0, sent = 0; sent < total; i++) {
        int n = snprintf(line, sizeof line, "X-Pad-%zu: ", i);
        memset(line + n, 'a', 1000 - (size_t)n - 2);
        memcpy(line + 998, "\r\n", 2);
        (void)h_send_all(fd, line, 1000);
        sent += 1000;
    }
    send_str(fd, "\r\n{\"a\":1}");
}

/* Answers one request; false closes the connection. *kept is the
 * connection's state for the /keep/ paths. */
static bool respond(int fd, const char *req, bool *kept)
{
    if (!strncmp(req, "POST ", 5)) atomic_fetch_add(&raw.posts, 1);
    if (!strncmp(req, "GET ", 4)) atomic_fetch_add(&raw.gets, 1);
    if (!strncmp(req, "HEAD ", 5)) atomic_fetch_add(&raw.heads, 1);
    const char *path = strchr(req, ' ');
    path = path ? path + 1 : "";
    if (!strncmp(path, "/keep/", 6)) {
        /* The first /keep/ request on a connection is answered and the
         * connection kept; a second one on it is read, then the connection
         * is closed unanswered (a backend closing an idle connection just as
         * a request arrives). A retry on a new connection is answered. */
        if (*kept) return false;
        send_json(fd, "{\"n\":1}", true);
        *kept = true;
        return true;
    }
    if (!strncmp(path, "/head/", 6)) {
        /* The headers a GET would get; no body, connection kept. */
        send_str(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     "Content-Length: 20\r\n\r\n");
        return true;
    }
    if (!strncmp(path, "/cl-te/", 7))
        send_str(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n"
                     "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     "7\r\n{\"a\":1}\r\n0\r\n\r\n");
    else if (!strncmp(path, "/cl-cl/", 7))
        send_str(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n"
                     "Content-Length: 9\r\nConnection: close\r\n\r\n{\"a\":1}  ");
    else if (!strncmp(path, "/cl-same/", 9))
        send_str(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n"
                     "Content-Length: 7\r\nConnection: close\r\n\r\n{\"a\":1}");
    else if (!strncmp(path, "/cl-plus/", 9))
        send_str(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: +7\r\n"
                     "Connection: close\r\n\r\n{\"a\":1}");
    else if (!strncmp(path, "/cl-space/", 10))
        send_str(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length : 7\r\n"
                     "Connection: close\r\n\r\n{\"a\":1}");
    else if (!strncmp(path, "/te-gzip/", 9))
        send_str(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n"
                     "7\r\n{\"a\":1}\r\n0\r\n\r\n");
    else if (!strncmp(path, "/hdr-big/", 9))
        send_big_headers(fd, 70 * 1024);
    else if (!strncmp(path, "/hdr-ok/", 8))
        send_big_headers(fd, 60 * 1024);
    else
        send_json(fd, "{\"a\":1}", false);
    return false;
}

/* One thread per connection: a connection the gateway keeps idle must not
 * block the next one. */
static void *serve_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    size_t cap = 256 * 1024;
    char *buf = malloc(cap);
    bool kept = false;
    track_fd(fd, true);
    while (buf && read_request(fd, buf, cap) > 0 && respond(fd, buf, &kept)) {
    }
    free(buf);
    track_fd(fd, false);
    close(fd);
    atomic_fetch_sub(&raw.conns, 1);
    return NULL;
}

static void *raw_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&raw.stop)) {
        struct pollfd pf = {.fd = raw.lfd, .events = POLLIN};
        if (poll(&pf, 1, 100) <= 0) continue;
        int fd = accept4(raw.lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue;
        pthread_t t;
        atomic_fetch_add(&raw.conns, 1);
        if (pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)fd) == 0) {
            pthread_detach(t);
        } else {
            atomic_fetch_sub(&raw.conns, 1);
            close(fd);
        }
    }
    return NULL;
}

static int raw_start(void)
{
    for (size_t i = 0; i < sizeof raw.open_fds / sizeof raw.open_fds[0]; i++)
        raw.open_fds[i] = -1;
    raw.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sin;
    if (raw.lfd < 0 || bind(raw.lfd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
        listen(raw.lfd, 64) != 0 || getsockname(raw.lfd, (struct sockaddr *)&sin, &sl) != 0)
        return -1;
    raw.port = ntohs(sin.sin_port);
    return pthread_create(&raw.thread, NULL, raw_main, NULL) == 0 ? 0 : -1;
}

static void raw_stop(void)
{
    atomic_store(&raw.stop, true);
    pthread_join(raw.thread, NULL);
    close(raw.lfd);
    /* Each connection thread sees stop within one 100 ms poll. */
    for (int i = 0; i < 600 && atomic_load(&raw.conns) > 0; i++)
        poll(NULL, 0, 50);
}

/* ---- the gateway ---- */

static const char conf[] =
    "{\n"
    " \"server\": {\"listen\": \"127.0.0.1:${PORT}\", \"workers\": 1,\n"
    "            \"shutdown_timeout_ms\": 2000},\n"
    " \"defaults\": {\"timeout_ms\": 8000, \"backend_timeout_ms\": 8000,\n"
    "              \"client\": \"curl\"},\n"
    " \"access_log\": {\"path\": \"-\"},\n"
    " \"endpoints\": [\n"
    "  {\"name\": \"head\", \"path\": \"/api/head/{id}\",\n"
    "   \"backends\": [{\"name\": \"h\", \"method\": \"HEAD\", \"url\": \"${BACKEND}/head/{id}\",\n"
    "                 \"key\": \"h\"}]},\n"
    "  {\"name\": \"post\", \"method\": \"POST\", \"path\": \"/api/post/{id}\",\n"
    "   \"backends\": [{\"name\": \"p\", \"method\": \"POST\", \"url\": \"${BACKEND}/keep/{id}\",\n"
    "                 \"key\": \"p\", \"forward_body\": true}]},\n"
    "  {\"name\": \"get\", \"path\": \"/api/get/{what}/{id}\",\n"
    "   \"backends\": [{\"name\": \"g\", \"url\": \"${BACKEND}/{what}/{id}\", \"key\": \"g\"}]}\n"
    " ]\n"
    "}\n";

static struct h_gateway gw;

static int group_setup(void **state)
{
    (void)state;
    if (raw_start() != 0) return -1;
    struct h_mock m = {0};
    snprintf(m.origin, sizeof m.origin, "http://127.0.0.1:%d", raw.port);
    return h_gateway_start(&gw, conf, &m) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    h_gateway_dump(&gw);
    int st = h_gateway_stop(&gw, false);
    raw_stop();
    return st == 0 ? 0 : -1;
}

/* Closes every open backend connection (the FIN reaches the gateway at
 * once on loopback, so curl finds them dead before reuse) and zeroes the
 * counters. */
static int reset_backend(void **state)
{
    (void)state;
    pthread_mutex_lock(&raw.mu);
    for (size_t i = 0; i < sizeof raw.open_fds / sizeof raw.open_fds[0]; i++)
        if (raw.open_fds[i] >= 0) shutdown(raw.open_fds[i], SHUT_RDWR);
    pthread_mutex_unlock(&raw.mu);
    atomic_store(&raw.posts, 0);
    atomic_store(&raw.gets, 0);
    atomic_store(&raw.heads, 0);
    return 0;
}

static void request(const char *method, const char *path, const char *body, struct h_resp *r)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", gw.base, path);
    const char *hdrs[] = {"Content-Type: application/json", NULL};
    h_request(method, url, body ? hdrs : NULL, body, 20000, r);
}

static void expect(const struct h_resp *r, long status, const char *body_part)
{
    if (r->status != status || (body_part && (!r->body || !strstr(r->body, body_part))))
        fprintf(stderr, "expected %ld with \"%s\", got %ld: %s\n", status,
                body_part ? body_part : "", r->status, r->body ? r->body : "");
    assert_int_equal(r->status, status);
    if (body_part) assert_non_null(strstr(r->body, body_part));
}

/* HEAD answers carry no body, whatever their Content-Length says: the call
 * completes at once (it used to wait for 20 bytes until its timeout). */
static void head_backend_completes(void **state)
{
    (void)state;
    struct h_resp r;
    double t0 = h_now_ms();
    request("GET", "/api/head/1", NULL, &r);
    expect(&r, 200, "{\"h\":null}");
    /* Far below the 8 s timeout the unfixed gateway waits for. */
    assert_true(h_now_ms() - t0 < 6000);
    assert_int_equal(atomic_load(&raw.heads), 1);
    h_resp_free(&r);
}

/* The second POST goes out on the connection the first one left open; the
 * backend reads it and closes. It must fail, not be sent again. */
static void post_on_closed_keepalive_is_not_resent(void **state)
{
    (void)state;
    struct h_resp r;
    request("POST", "/api/post/1", "{\"x\":1}", &r);
    expect(&r, 200, "{\"p\":{\"n\":1}}");
    h_resp_free(&r);
    request("POST", "/api/post/2", "{\"x\":2}", &r);
    expect(&r, 502, "not re-sent");
    h_resp_free(&r);
    assert_int_equal(atomic_load(&raw.posts), 2);
}

/* The same race for a GET: idempotent, so curl's retry on a new connection
 * is allowed and the client gets its answer. */
static void get_on_closed_keepalive_is_retried(void **state)
{
    (void)state;
    struct h_resp r;
    request("GET", "/api/get/keep/1", NULL, &r);
    expect(&r, 200, "{\"g\":{\"n\":1}}");
    h_resp_free(&r);
    request("GET", "/api/get/keep/2", NULL, &r);
    expect(&r, 200, "{\"g\":{\"n\":1}}");
    h_resp_free(&r);
    assert_int_equal(atomic_load(&raw.gets), 3);
}

static void content_length_with_chunked_is_502(void **state)
{
    (void)state;
    struct h_resp r;
    request("GET", "/api/get/cl-te/1", NULL, &r);
    expect(&r, 502, "Content-Length with Transfer-Encoding");
    h_resp_free(&r);
}

static void two_different_content_lengths_are_502(void **state)
{
    (void)state;
    struct h_resp r;
    request("GET", "/api/get/cl-cl/1", NULL, &r);
    expect(&r, 502, "two different Content-Length values");
    h_resp_free(&r);
}

static void the_same_content_length_twice_passes(void **state)
{
    (void)state;
    struct h_resp r;
    request("GET", "/api/get/cl-same/1", NULL, &r);
    expect(&r, 200, "{\"g\":{\"a\":1}}");
    h_resp_free(&r);
}

/* What would let the gateway and the backend disagree on where the body
 * ends: a signed length, a name with a space before its colon (curl would
 * not see the length), a transfer coding curl would pass through. */
static void other_framing_ambiguities_are_502(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"/api/get/cl-plus/1", "invalid Content-Length"},
        {"/api/get/cl-space/1", "whitespace before a colon"},
        {"/api/get/te-gzip/1", "unsupported Transfer-Encoding"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct h_resp r;
        request("GET", cases[i][0], NULL, &r);
        expect(&r, 502, cases[i][1]);
        h_resp_free(&r);
    }
}

static void header_block_over_64k_is_502(void **state)
{
    (void)state;
    struct h_resp r;
    request("GET", "/api/get/hdr-big/1", NULL, &r);
    expect(&r, 502, "header block over 64 KiB");
    h_resp_free(&r);
}

static void header_block_under_64k_passes(void **state)
{
    (void)state;
    struct h_resp r;
    request("GET", "/api/get/hdr-ok/1", NULL, &r);
    expect(&r, 200, "{\"g\":{\"a\":1}}");
    h_resp_free(&r);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(head_backend_completes, reset_backend),
        cmocka_unit_test_setup(post_on_closed_keepalive_is_not_resent, reset_backend),
        cmocka_unit_test_setup(get_on_closed_keepalive_is_retried, reset_backend),
        cmocka_unit_test_setup(content_length_with_chunked_is_502, reset_backend),
        cmocka_unit_test_setup(two_different_content_lengths_are_502, reset_backend),
        cmocka_unit_test_setup(the_same_content_length_twice_passes, reset_backend),
        cmocka_unit_test_setup(other_framing_ambiguities_are_502, reset_backend),
        cmocka_unit_test_setup(header_block_over_64k_is_502, reset_backend),
        cmocka_unit_test_setup(header_block_under_64k_passes, reset_backend),
    };
    int rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
    return rc ? rc : h_stop_failed();
}
