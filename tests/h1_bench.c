/*
 * h1_bench: the cost of the native transport's pure parts: parsing a
 * response (gateway/h1resp.c) and looking up a backend address
 * (gateway/resolver.c).
 *
 * Prints one line per case, "<name> <nanoseconds per op>", each measured
 * for about 0.2 s of the thread's CPU time (not wall time: the numbers hold
 * on a busy machine) after a calibration run. Meaningful in a Release build:
 *
 *     cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release
 *     cmake --build build-bench --target h1_bench && build-bench/tests/h1_bench
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/loop.h"
#include "gateway/h1resp.h"
#include "gateway/resolver.h"

#define TARGET_NS 200000000ull

static volatile uintptr_t g_sink;

/* thread CPU time: the machine is shared, descheduled time is not ours */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static _Noreturn void die(const char *what)
{
    fprintf(stderr, "h1_bench: %s failed\n", what);
    exit(1);
}

/* a typical backend answer: six headers, a small JSON body */
static const char typical[] = "HTTP/1.1 200 OK\r\n"
                              "Content-Type: application/json\r\n"
                              "Content-Length: 27\r\n"
                              "Date: Fri, 04 Dec 2026 16:00:00 GMT\r\n"
                              "Server: mock-backend/1.0\r\n"
                              "X-Request-Id: 4bf92f3577b34da6a3ce929d0e0e4736\r\n"
                              "Cache-Control: no-cache\r\n"
                              "\r\n"
                              "{\"id\": 42, \"name\": \"thing\"}";

static const char chunked[] = "HTTP/1.1 200 OK\r\n"
                              "Content-Type: application/json\r\n"
                              "Transfer-Encoding: chunked\r\n"
                              "Date: Fri, 04 Dec 2026 16:00:00 GMT\r\n"
                              "Server: mock-backend/1.0\r\n"
                              "X-Request-Id: 4bf92f3577b34da6a3ce929d0e0e4736\r\n"
                              "Cache-Control: no-cache\r\n"
                              "\r\n"
                              "1b\r\n{\"id\": 42, \"name\": \"thing\"}\r\n0\r\n\r\n";

static int sink_body(void *arg, const char *data, size_t len)
{
    (void)arg;
    g_sink += (uintptr_t)data[0] + len;
    return 0;
}

static struct h1resp g_p;

static void parse(const char *in, size_t len, size_t cut)
{
    size_t used;
    h1resp_init(&g_p, false, sink_body, NULL);
    enum h1_status st = H1_MORE;
    if (cut) st = h1resp_feed(&g_p, in, cut, &used);
    if (st == H1_MORE) st = h1resp_feed(&g_p, in + cut, len - cut, &used);
    if (st != H1_DONE) die("parse");
    g_sink += (uintptr_t)g_p.status;
}

static void bench_typical(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        parse(typical, sizeof typical - 1, 0);
}

static void bench_typical_split(uint64_t n)
{
    /* cut inside the X-Request-Id line: one line goes through the buffer */
    for (uint64_t i = 0; i < n; i++)
        parse(typical, sizeof typical - 1, 150);
}

static void bench_chunked(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        parse(chunked, sizeof chunked - 1, 0);
}

static struct resolver *g_r;

static void bench_lookup_literal(uint64_t n)
{
    struct resolver_addrs a;
    for (uint64_t i = 0; i < n; i++)
        if (resolver_lookup(g_r, "127.0.0.1", 8080, &a, NULL, NULL, NULL) != 0) die("literal");
    g_sink += a.n;
}

static void bench_lookup_cached(uint64_t n)
{
    struct resolver_addrs a;
    for (uint64_t i = 0; i < n; i++)
        if (resolver_lookup(g_r, "localhost", 8080, &a, NULL, NULL, NULL) != 0) die("cached");
    g_sink += a.n;
}

struct bench {
    const char *name;
    void (*run)(uint64_t n);
};

static uint64_t timed(const struct bench *b, uint64_t n)
{
    uint64_t t0 = cpu_ns();
    b->run(n);
    return cpu_ns() - t0;
}

static void measure(const struct bench *b)
{
    uint64_t n = 1000, t;
    while ((t = timed(b, n)) < TARGET_NS / 20)
        n *= 2;
    n = (uint64_t)((double)n * (double)TARGET_NS / (double)t) + 1;
    t = timed(b, n);
    printf("%s %.1f\n", b->name, (double)t / (double)n);
    fflush(stdout);
}

int main(void)
{
    static const struct bench parsers[] = {
        {"h1resp_typical_200", bench_typical},
        {"h1resp_typical_200_split", bench_typical_split},
        {"h1resp_chunked_200", bench_chunked},
    };
    printf("# typical response: %zu bytes, 6 headers\n", sizeof typical - 1);
    for (size_t i = 0; i < sizeof parsers / sizeof parsers[0]; i++)
        measure(&parsers[i]);

    g_r = resolver_new(60);
    if (!g_r) die("resolver_new");
    struct resolver_addrs a;
    resolver_prefetch(g_r, "localhost");
    uint64_t end = now_ns() + 30000000000ull;
    while (resolver_lookup(g_r, "localhost", 80, &a, NULL, NULL, NULL) == -EAGAIN) {
        if (now_ns() > end) die("resolving localhost");
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    static const struct bench lookups[] = {
        {"resolver_lookup_literal", bench_lookup_literal},
        {"resolver_lookup_cached", bench_lookup_cached},
    };
    for (size_t i = 0; i < sizeof lookups / sizeof lookups[0]; i++)
        measure(&lookups[i]);
    resolver_free(g_r);
    return 0;
}
