/* Tests for gateway/gateway.c: gateway_start's one exit path. A start that
 * fails (the port taken, the JWKS unreadable after the access log, the
 * degraded store and the resolver's peers were made) returns a negative
 * errno and leaves nothing behind: every pointer of gw is cleared, and the
 * test then forgets gw, so in the address build LeakSanitizer reports
 * anything gateway_start did not free. A start that works stops cleanly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/config.h"
#include "gateway/gateway.h"

/* A listening socket on 127.0.0.1 (a port the kernel picks), its port in
 * *port. */
static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, len), 0);
    assert_int_equal(listen(fd, 1), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static struct config *conf(int port, const char *extra)
{
    char text[1024];
    snprintf(text, sizeof text,
             "{\"server\": {\"listen\": \"127.0.0.1:%d\", \"workers\": 2},"
             " \"access_log\": {\"path\": \"off\"}, %s"
             " \"endpoints\": [{\"name\": \"e\", \"path\": \"/api/e\","
             "   \"backends\": [{\"name\": \"b\", \"url\": \"http://127.0.0.1:1/e\"}]}]}",
             port, extra);
    struct config_errors errs;
    struct config *cfg = config_parse(text, strlen(text), &errs);
    for (size_t i = 0; i < errs.n; i++)
        print_message("%s\n", errs.lines[i]);
    config_errors_free(&errs);
    assert_non_null(cfg);
    return cfg;
}

/* Nothing of a failed start is left in gw; then gw is forgotten. */
static void assert_cleared(struct gateway *gw)
{
    assert_null(gw->log);
    assert_null(gw->degraded);
    assert_null(gw->otel);
    assert_null(gw->resolver);
    assert_null(gw->workers);
    assert_int_equal(gw->n_workers, 0);
    memset(gw, 0, sizeof *gw);
}

static void port_taken_is_eaddrinuse(void **state)
{
    (void)state;
    int port;
    int fd = listen_any(&port);
    struct gateway gw = {0};
    assert_int_equal(gateway_start(&gw, conf(port, "")), -EADDRINUSE);
    assert_cleared(&gw);
    close(fd);
}

static void failure_after_shared_parts_frees_them(void **state)
{
    (void)state;
    int port;
    close(listen_any(&port)); /* free again: the check passes */
    struct gateway gw = {0};
    int rc = gateway_start(&gw, conf(port, "\"auth\": {\"jwks_path\": \"/nonexistent-dir/jwks.json\","
                                           " \"issuer\": \"i\", \"audience\": [\"a\"]},"));
    assert_true(rc < 0);
    assert_cleared(&gw);
}

static void start_then_stop(void **state)
{
    (void)state;
    int port;
    close(listen_any(&port));
    struct gateway gw = {0};
    assert_int_equal(gateway_start(&gw, conf(port, "")), 0);
    assert_int_equal(gw.n_workers, 2);
    assert_non_null(gw.log);
    gateway_stop(&gw);
    assert_cleared(&gw);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(port_taken_is_eaddrinuse),
        cmocka_unit_test(failure_after_shared_parts_frees_them),
        cmocka_unit_test(start_then_stop),
    };
    int rc = cmocka_run_group_tests_name("gateway", tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
