/* Integration tests of the native upstream transport (gateway/native*.c):
 * the real gateway against a raw-socket backend in this program that sends
 * exactly the bytes each case needs (chunked with extensions and trailers,
 * 1xx before the answer, Connection: close, a keep-alive connection closed
 * while idle, a response in one-byte writes, CL + TE), header injection
 * through a forwarded header, host names (localhost, an unresolvable one),
 * and the GATEWAY_TEST_CLIENT switch of the harness.
 *
 * Under GATEWAY_TEST_CLIENT=curl (the integration/transport_curl run) only
 * the switch is checked: the other cases are about the native transport. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

/* ---- the raw backend: one thread per connection ---- */

#define MAX_CONNS 256

static int raw_lfd = -1;
static int raw_port;
static pthread_t raw_acceptor;
static pthread_t raw_conns[MAX_CONNS];
static atomic_int raw_n_conns;
static pthread_mutex_t raw_mu = PTHREAD_MUTEX_INITIALIZER;
static char raw_log[65536]; /* every request head received, concatenated */
static size_t raw_log_len;

static void raw_log_add(const char *p, size_t n)
{
    pthread_mutex_lock(&raw_mu);
    if (raw_log_len + n < sizeof raw_log) {
        memcpy(raw_log + raw_log_len, p, n);
        raw_log_len += n;
        raw_log[raw_log_len] = '\0';
    }
    pthread_mutex_unlock(&raw_mu);
}

static bool raw_log_has(const char *needle)
{
    pthread_mutex_lock(&raw_mu);
    bool has = strstr(raw_log, needle) != NULL;
    pthread_mutex_unlock(&raw_mu);
    return has;
}

static void raw_log_clear(void)
{
    pthread_mutex_lock(&raw_mu);
    raw_log_len = 0;
    raw_log[0] = '\0';
    pthread_mutex_unlock(&raw_mu);
}

static void send_str(int fd, const char *s)
{
    (void)!send(fd, s, strlen(s), MSG_NOSIGNAL);
}

#define JSON_OK "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n"

/* Answers one request for path; false when the connection must close. */
static bool answer(int fd, const char *path)
{
    if (strncmp(path, "/chunked", 8) == 0) {
        send_str(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5;ext=1\r\n{\"a\":\r\n2;x=\"q v\";y\r\n1}\r\n0\r\nX-Trailer: t\r\n\r\n");
    } else if (strncmp(path, "/info", 5) == 0) {
        send_str(fd,
                 "HTTP/1.1 100 Continue\r\n\r\n"
                 "HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n" JSON_OK "{\"b\":2}");
    } else if (strncmp(path, "/close", 6) == 0) {
        send_str(fd, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"c\":3}");
        return false;
    } else if (strncmp(path, "/idleclose", 10) == 0) {
        send_str(fd, JSON_OK "{\"d\":4}");
        return false; /* no Connection: close: the gateway keeps it idle */
    } else if (strncmp(path, "/bytes", 6) == 0) {
        static const char r[] = JSON_OK "{\"e\":5}";
        for (size_t i = 0; i < sizeof r - 1; i++) {
            if (send(fd, r + i, 1, MSG_NOSIGNAL) != 1) return false;
            usleep(500);
        }
    } else if (strncmp(path, "/clte", 5) == 0) {
        send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "7\r\n{\"f\":6}\r\n0\r\n\r\n");
    } else {
        send_str(fd, JSON_OK "{\"z\":0}");
    }
    return true;
}

static void *raw_conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[8192];
    size_t n = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (r <= 0) break;
        n += (size_t)r;
        buf[n] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (!end) {
            if (n == sizeof buf - 1) break;
            continue;
        }
        size_t head = (size_t)(end + 4 - buf);
        raw_log_add(buf, head);
        char path[256] = "";
        sscanf(buf, "%*s %255s", path);
        memmove(buf, buf + head, n - head); /* no bodies in these cases */
        n -= head;
        if (!answer(fd, path)) break;
    }
    close(fd);
    return NULL;
}

static void *raw_acceptor_main(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(raw_lfd, NULL, NULL);
        if (fd < 0) break;
        int i = atomic_load(&raw_n_conns);
        if (i >= MAX_CONNS ||
            pthread_create(&raw_conns[i], NULL, raw_conn_main, (void *)(intptr_t)fd) != 0) {
            close(fd);
            continue;
        }
        atomic_store(&raw_n_conns, i + 1);
    }
    return NULL;
}

static int raw_start(void)
{
    raw_lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (raw_lfd < 0 || bind(raw_lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(raw_lfd, 64) != 0 || getsockname(raw_lfd, (struct sockaddr *)&a, &len) != 0)
        return -errno;
    raw_port = ntohs(a.sin_port);
    return -pthread_create(&raw_acceptor, NULL, raw_acceptor_main, NULL);
}

/* After the gateway stopped (so every connection ends). */
static void raw_stop(void)
{
    shutdown(raw_lfd, SHUT_RDWR);
    pthread_join(raw_acceptor, NULL);
    close(raw_lfd);
    for (int i = 0; i < atomic_load(&raw_n_conns); i++)
        pthread_join(raw_conns[i], NULL);
}

/* ---- the gateway ---- */

static const char conf[] =
    "{\"server\": {\"listen\": \"127.0.0.1:${PORT}\", \"workers\": 1},\n"
    " \"defaults\": {\"timeout_ms\": 3000, \"backend_timeout_ms\": 3000},\n"
    " \"access_log\": {\"path\": \"off\"},\n"
    " \"endpoints\": [\n"
    "  {\"name\": \"t\", \"path\": \"/t/{case}\", \"forward_headers\": [\"X-Fwd\"],\n"
    "   \"backends\": [{\"name\": \"r\", \"url\": \"${BACKEND}/{case}\", \"key\": \"r\",\n"
    "                  \"client\": \"native\"}]},\n"
    "  {\"name\": \"lh\", \"path\": \"/localhost\",\n"
    "   \"backends\": [{\"name\": \"l\", \"url\": \"LOCALHOST/chunked\", \"key\": \"l\"}]},\n"
    "  {\"name\": \"nx\", \"path\": \"/nx\",\n"
    "   \"backends\": [{\"name\": \"nx\", \"url\": \"http://nonexistent.invalid/x\",\n"
    "                   \"key\": \"nx\"}]}]}\n";

static struct h_gateway gw;

static int group_setup(void **state)
{
    (void)state;
    if (raw_start() != 0) return -1;
    struct h_mock fake = {.pid = 0, .port = raw_port};
    snprintf(fake.origin, sizeof fake.origin, "http://127.0.0.1:%d", raw_port);
    char lh[64];
    snprintf(lh, sizeof lh, "http://localhost:%d", raw_port);
    char *tmpl = h_replace(conf, "LOCALHOST", lh);
    int rc = h_gateway_start(&gw, tmpl, &fake);
    free(tmpl);
    return rc == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    int st = h_gateway_stop(&gw, false);
    raw_stop();
    return st == 0 ? 0 : -1;
}

static void get_ok(const char *path, const char *want_body)
{
    struct h_resp r;
    h_get(gw.base, path, NULL, &r);
    if (r.status != 200) fprintf(stderr, "%s: %ld %s\n", path, r.status, r.body ? r.body : "");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, want_body);
    h_resp_free(&r);
}

static void get_502(const char *path, const char *why)
{
    struct h_resp r;
    h_get(gw.base, path, NULL, &r);
    if (r.status != 502 || !strstr(r.body, why))
        fprintf(stderr, "%s: %ld %s\n", path, r.status, r.body ? r.body : "");
    assert_int_equal(r.status, 502);
    assert_non_null(strstr(r.body, why));
    h_resp_free(&r);
}

/* The sum of a gateway_upstream_connections_total series. */
static long metric(const char *transport, const char *event)
{
    struct h_resp r;
    h_get(gw.base, "/metrics", NULL, &r);
    char needle[160];
    snprintf(needle, sizeof needle,
             "gateway_upstream_connections_total{transport=\"%s\",event=\"%s\"} ", transport,
             event);
    const char *p = r.body ? strstr(r.body, needle) : NULL;
    long v = p ? strtol(p + strlen(needle), NULL, 10) : -1;
    h_resp_free(&r);
    return v;
}

static void chunked_with_extensions_and_trailers(void **state)
{
    (void)state;
    get_ok("/t/chunked", "{\"r\":{\"a\":1}}");
    get_ok("/t/chunked", "{\"r\":{\"a\":1}}"); /* the trailers left the connection clean */
}

static void informational_then_200(void **state)
{
    (void)state;
    get_ok("/t/info", "{\"r\":{\"b\":2}}");
}

static void connection_close_read_to_close(void **state)
{
    (void)state;
    get_ok("/t/close", "{\"r\":{\"c\":3}}");
    get_ok("/t/close", "{\"r\":{\"c\":3}}");
}

static void backend_closes_idle_keepalive_connection(void **state)
{
    (void)state;
    long closes = metric("native", "close");
    get_ok("/t/idleclose", "{\"r\":{\"d\":4}}");
    /* Seen while idle (or retried as stale): the next call succeeds either way. */
    (void)H_POLL_UNTIL(metric("native", "close") != closes, 1000);
    get_ok("/t/idleclose", "{\"r\":{\"d\":4}}");
    get_ok("/t/other", "{\"r\":{\"z\":0}}");
}

static void response_in_one_byte_writes(void **state)
{
    (void)state;
    get_ok("/t/bytes", "{\"r\":{\"e\":5}}");
}

static void content_length_with_chunked_fails(void **state)
{
    (void)state;
    get_502("/t/clte", "backend r failed");
}

static void keepalive_reused(void **state)
{
    (void)state;
    long reuse = metric("native", "reuse");
    for (int i = 0; i < 5; i++)
        get_ok("/t/other", "{\"r\":{\"z\":0}}");
    assert_true(metric("native", "reuse") >= reuse + 4);
}

/* A client cannot add a header line to a backend request through a
 * forwarded header, whatever the HTTP server side lets through. */
static void header_injection_never_reaches_the_backend(void **state)
{
    (void)state;
    raw_log_clear();
    static const char *const attempts[] = {
        "GET /t/other HTTP/1.1\r\nHost: x\r\nX-Fwd: a\rX-Injected: 1\r\nConnection: close\r\n\r\n",
        "GET /t/other HTTP/1.1\r\nHost: x\r\nX-Fwd: a\r\n X-Injected: 2\r\nConnection: "
        "close\r\n\r\n",
        "GET /t/other HTTP/1.1\r\nHost: x\r\nX-Fwd: a\nX-Injected: 3\r\nConnection: close\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof attempts / sizeof *attempts; i++) {
        int fd = h_connect(gw.port);
        assert_true(fd >= 0);
        assert_int_equal(h_send_all(fd, attempts[i], strlen(attempts[i])), 0);
        char *raw = NULL;
        h_read_response(fd, 5000, &raw); /* any answer: 200, 400 or 502 */
        free(raw);
        close(fd);
    }
    assert_false(raw_log_has("\nX-Injected"));
    assert_false(raw_log_has("\rX-Injected"));
    /* A normal forwarded header does arrive. */
    static const char *const h[] = {"X-Fwd: fine", NULL};
    struct h_resp r;
    h_get(gw.base, "/t/other", h, &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_true(raw_log_has("\r\nX-Fwd: fine\r\n"));
}

static void localhost_resolves(void **state)
{
    (void)state;
    get_ok("/localhost", "{\"l\":{\"a\":1}}");
}

static void unresolvable_name_gives_502(void **state)
{
    (void)state;
    get_502("/nx", "cannot resolve host");
}

/* The harness's switch reached the gateway: under curl no native
 * connection is made for the standard config, else they are native. */
static void env_client_switch(void **state)
{
    (void)state;
    const char *client = getenv("GATEWAY_TEST_CLIENT");
    struct h_env e;
    /* One worker: a scrape served by one worker racing another's exit is
     * a known TSan report of builtin.c, not what this test is about. */
    char *conf1 = h_replace(h_conf_standard, "\"workers\": 2", "\"workers\": 1");
    assert_int_equal(h_env_start(&e, conf1), 0);
    free(conf1);
    struct h_resp r;
    h_get(e.gw.base, "/api/dashboard/1", NULL, &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    h_get(e.gw.base, "/metrics", NULL, &r);
    const char *p = strstr(r.body, "transport=\"native\",event=\"connect\"} ");
    assert_non_null(p);
    long native = strtol(p + strlen("transport=\"native\",event=\"connect\"} "), NULL, 10);
    if (client && strcmp(client, "curl") == 0)
        assert_int_equal(native, 0);
    else
        assert_true(native > 0);
    h_resp_free(&r);
    assert_int_equal(h_env_stop(&e), 0);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const char *client = getenv("GATEWAY_TEST_CLIENT");
    const struct CMUnitTest only_switch[] = {cmocka_unit_test(env_client_switch)};
    if (client && strcmp(client, "curl") == 0)
        return cmocka_run_group_tests_name("integration/transport (curl)", only_switch, NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(chunked_with_extensions_and_trailers),
        cmocka_unit_test(informational_then_200),
        cmocka_unit_test(connection_close_read_to_close),
        cmocka_unit_test(backend_closes_idle_keepalive_connection),
        cmocka_unit_test(response_in_one_byte_writes),
        cmocka_unit_test(content_length_with_chunked_fails),
        cmocka_unit_test(keepalive_reused),
        cmocka_unit_test(header_injection_never_reaches_the_backend),
        cmocka_unit_test(localhost_resolves),
        cmocka_unit_test(unresolvable_name_gives_502),
    };
    int rc =
        cmocka_run_group_tests_name("integration/transport", tests, group_setup, group_teardown);
    if (!rc)
        rc = cmocka_run_group_tests_name("integration/transport switch", only_switch, NULL, NULL);
    return rc ? rc : h_stop_failed();
}
