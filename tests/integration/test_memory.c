/*
 * The real gateway gives back the memory of a burst (issue 9 item 7): 500
 * requests in flight at once to a backend that never reads (a listening
 * socket that never accepts: the kernel completes the connections, nothing
 * answers), each ending in a 504 at its deadline; then, with no load, the
 * gateway's RSS must come back down to within 40 % of what the burst added.
 * Before the pools' sweep it stayed at the peak for good (pooled coroutine
 * stacks and curl handles, and the free heap glibc keeps).
 *
 * RSS is only meaningful for a plain build run directly: under ASan or TSan
 * the allocator and shadow memory are the sanitizer's, and under valgrind
 * the process is valgrind's; the test is skipped there, saying so. The
 * mechanism itself is unit-tested in every build (tests/core/test_pool.c,
 * test_coro.c).
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define IN_FLIGHT 500

static const char conf[] =
    "{\n"
    " \"server\": {\"listen\": \"127.0.0.1:${PORT}\", \"workers\": 2,\n"
    "            \"shutdown_timeout_ms\": 2000},\n"
    " \"defaults\": {\"timeout_ms\": 1500, \"backend_timeout_ms\": 1500},\n"
    " \"access_log\": {\"path\": \"-\"},\n"
    " \"endpoints\": [\n"
    "  {\"name\": \"hang\", \"path\": \"/api/hang/{id}\",\n"
    "   \"backends\": [{\"name\": \"h\", \"url\": \"${BACKEND}/x/{id}\", \"key\": \"h\"}]}\n"
    " ]\n"
    "}\n";

/* VmRSS of pid in KiB, or -1. */
static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
    fclose(f);
    return kib;
}

/* Why the RSS of pid says nothing about the gateway's own memory, or NULL
 * when it does: a sanitizer build, or a wrapper such as valgrind. */
static const char *rss_unmeasurable(pid_t pid)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    (void)pid;
    return "a sanitizer build";
#else
    char path[64], exe[512];
    snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(path, exe, sizeof exe - 1);
    if (n <= 0) return "cannot read /proc/PID/exe";
    exe[n] = '\0';
    const char *base = strrchr(exe, '/');
    if (strcmp(base ? base + 1 : exe, "gateway") != 0) return "the gateway runs under a wrapper";
    return NULL;
#endif
}

/* A listening socket on 127.0.0.1 that is never accepted from; *port gets
 * its port. */
static int deaf_backend(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sin;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
        listen(fd, 2 * IN_FLIGHT) != 0 || getsockname(fd, (struct sockaddr *)&sin, &sl) != 0)
        return -1;
    *port = ntohs(sin.sin_port);
    return fd;
}

/* Sends IN_FLIGHT requests at once on raw connections, then reads every
 * status; returns how many were 504. */
static int burst(const struct h_gateway *g)
{
    static int fds[IN_FLIGHT];
    char req[128];
    for (int i = 0; i < IN_FLIGHT; i++) {
        fds[i] = h_connect(g->port);
        assert_true(fds[i] >= 0);
        int n = snprintf(req, sizeof req, "GET /api/hang/%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
        assert_int_equal(h_send_all(fds[i], req, (size_t)n), 0);
    }
    int n504 = 0;
    for (int i = 0; i < IN_FLIGHT; i++) {
        if (h_read_response(fds[i], 60000, NULL) == 504) n504++;
        close(fds[i]);
    }
    return n504;
}

static void burst_memory_is_given_back(void **state)
{
    (void)state;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4 * IN_FLIGHT &&
        rl.rlim_max >= 4 * IN_FLIGHT) {
        rl.rlim_cur = 4 * IN_FLIGHT; /* the gateway inherits it */
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int port = 0;
    int lfd = deaf_backend(&port);
    assert_true(lfd >= 0);
    struct h_mock m = {0};
    snprintf(m.origin, sizeof m.origin, "http://127.0.0.1:%d", port);
    struct h_gateway g;
    assert_int_equal(h_gateway_start(&g, conf, &m), 0);

    const char *why = rss_unmeasurable(g.pid);
    if (why) {
        fprintf(stderr, "memory: RSS not measurable (%s): skipped\n", why);
        h_gateway_stop(&g, false);
        close(lfd);
        skip();
    }

    long base = rss_kib(g.pid);
    assert_int_equal(burst(&g), IN_FLIGHT);
    long peak = rss_kib(g.pid);
    fprintf(stderr, "memory: RSS %ld KiB before, %ld KiB after %d requests in flight\n", base, peak,
            IN_FLIGHT);
    /* The burst must have cost something to give back (about 50 KiB per
     * request in flight: stacks, curl handles, connection memory). */
    assert_true(peak - base > IN_FLIGHT * 20);

    /* Given back within a few sweep intervals (3 s each); polled, generous. */
    long bound = base + (peak - base) * 4 / 10, now = peak;
    (void)H_POLL_UNTIL((now = rss_kib(g.pid)) <= bound, 60000);
    fprintf(stderr, "memory: RSS %ld KiB when idle (bound %ld)\n", now, bound);
    assert_true(now <= bound);

    /* Still serving: the pools work after giving back. */
    assert_int_equal(burst(&g), IN_FLIGHT);
    assert_int_equal(h_gateway_stop(&g, false), 0);
    close(lfd);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(burst_memory_is_given_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
