/* Tests for gateway/accesslog.c: line format and escaping, file and stdout
 * sinks, many producers, a full queue that drops and counts without
 * blocking, "off". Run under ASan and TSan as well. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "gateway/accesslog.h"
#include "gateway/json.h"

#define TRACE "4bf92f3577b34da6a3ce929d0e0e4736"

static struct access_record base(void)
{
    struct tm tm = {
        .tm_year = 2026 - 1900, .tm_mon = 10, .tm_mday = 27, .tm_hour = 6, .tm_min = 40};
    struct access_record r = {
        .ts = {.tv_sec = timegm(&tm), .tv_nsec = 123456789},
        .method = "GET",
        .path = "/api/dashboard/42?lang=en",
        .endpoint = "dashboard",
        .status = 200,
        .duration_ms = 12.3456,
        .request_id = "req-1",
        .trace_id = TRACE,
    };
    return r;
}

/* Formats r and parses the line with cJSON; the line must be exactly one
 * strict JSON text (gateway/json.c also checks UTF-8) plus '\n'. */
static cJSON *format_parse(const struct access_record *r)
{
    buf_t b;
    buf_init(&b, NULL);
    assert_int_equal(accesslog_format(&b, r), 0);
    assert_true(b.len > 1);
    assert_int_equal(b.data[b.len - 1], '\n');
    assert_null(memchr(b.data, '\n', b.len - 1));
    for (size_t i = 0; i < b.len - 1; i++)
        assert_true((unsigned char)b.data[i] >= 0x20);
    assert_true(json_valid(b.data, b.len - 1));
    cJSON *j = cJSON_ParseWithLength(b.data, b.len);
    assert_non_null(j);
    buf_free(&b);
    return j;
}

static const char *jstr(const cJSON *j, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    assert_non_null(v);
    assert_true(cJSON_IsString(v));
    return v->valuestring;
}

static void test_format_fields(void **state)
{
    (void)state;
    const char *deg[] = {"recs", "user"};
    struct access_record r = base();
    r.degraded = deg;
    r.ndegraded = 2;
    cJSON *j = format_parse(&r);
    assert_int_equal(cJSON_GetArraySize(j), 9);
    assert_string_equal(jstr(j, "ts"), "2026-11-27T06:40:00.123Z");
    assert_string_equal(jstr(j, "method"), "GET");
    assert_string_equal(jstr(j, "path"), "/api/dashboard/42?lang=en");
    assert_string_equal(jstr(j, "endpoint"), "dashboard");
    assert_int_equal(cJSON_GetObjectItem(j, "status")->valueint, 200);
    double d = cJSON_GetObjectItem(j, "duration_ms")->valuedouble;
    assert_true(d > 12.3455 && d < 12.3465);
    assert_string_equal(jstr(j, "request_id"), "req-1");
    assert_string_equal(jstr(j, "trace_id"), TRACE);
    cJSON *a = cJSON_GetObjectItem(j, "degraded");
    assert_true(cJSON_IsArray(a));
    assert_int_equal(cJSON_GetArraySize(a), 2);
    assert_string_equal(cJSON_GetArrayItem(a, 0)->valuestring, "recs");
    assert_string_equal(cJSON_GetArrayItem(a, 1)->valuestring, "user");
    cJSON_Delete(j);

    /* No endpoint, a client that hung up, no degraded backends, NULLs. */
    r = base();
    r.endpoint = NULL;
    r.status = 499;
    r.trace_id = NULL;
    r.duration_ms = 0.0 / 0.0;
    r.ts.tv_nsec = 999999999;
    j = format_parse(&r);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "endpoint")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "trace_id")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "duration_ms")));
    assert_int_equal(cJSON_GetObjectItem(j, "status")->valueint, 499);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "degraded")), 0);
    assert_string_equal(jstr(j, "ts"), "2026-11-27T06:40:00.999Z");
    /* "cache" only when a cached backend was called: one member each */
    assert_null(cJSON_GetObjectItem(j, "cache"));
    cJSON_Delete(j);

    const char *cb[] = {"user", "recs"}, *cr[] = {"hit", "coalesced"};
    r = base();
    r.cache_backends = cb;
    r.cache_results = cr;
    r.ncache = 2;
    j = format_parse(&r);
    assert_int_equal(cJSON_GetArraySize(j), 10);
    cJSON *c = cJSON_GetObjectItem(j, "cache");
    assert_true(cJSON_IsObject(c));
    assert_int_equal(cJSON_GetArraySize(c), 2);
    assert_string_equal(jstr(c, "user"), "hit");
    assert_string_equal(jstr(c, "recs"), "coalesced");
    cJSON_Delete(j);

    r = base();
    r.duration_ms = 1e200;
    j = format_parse(&r);
    assert_true(cJSON_GetObjectItem(j, "duration_ms")->valuedouble == 1e200);
    cJSON_Delete(j);
}

static void test_escaping(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"/a\"b\\c", "/a\"b\\c"},
        {"/\n\r\t\b\f\x01\x1f\x7f", "/\n\r\t\b\f\x01\x1f\x7f"},
        {"/caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80",
         "/caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80"},
        {"/\xff", "/\xef\xbf\xbd"},
        {"/\xc3(", "/\xef\xbf\xbd("},
        {"/\xc0\xaf", "/\xef\xbf\xbd\xef\xbf\xbd"},                                 /* overlong */
        {"/\xed\xa0\x80", "/\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},                 /* surrogate */
        {"/\xf4\x90\x80\x80", "/\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* > U+10FFFF */
        {"/\xe2\x82", "/\xef\xbf\xbd\xef\xbf\xbd"},                                 /* truncated */
        {"\"},\"status\":1,\"x\":{\"", "\"},\"status\":1,\"x\":{\""},               /* injection */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct access_record r = base();
        r.path = cases[i].in;
        r.method = cases[i].in;
        r.request_id = cases[i].in;
        const char *deg[] = {cases[i].in};
        r.degraded = deg;
        r.ndegraded = 1;
        cJSON *j = format_parse(&r);
        assert_string_equal(jstr(j, "path"), cases[i].want);
        assert_string_equal(jstr(j, "method"), cases[i].want);
        assert_string_equal(jstr(j, "request_id"), cases[i].want);
        assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "degraded"), 0)->valuestring,
                            cases[i].want);
        assert_int_equal(cJSON_GetObjectItem(j, "status")->valueint, 200);
        cJSON_Delete(j);
    }
    /* Every byte value once. */
    char all[256];
    for (int i = 1; i < 256; i++)
        all[i - 1] = (char)i;
    all[255] = '\0';
    struct access_record r = base();
    r.path = all;
    cJSON_Delete(format_parse(&r));
}

/* ---- sinks ---- */

static char *temp_path(void)
{
    char *p = strdup("/tmp/test_accesslog_XXXXXX");
    int fd = mkstemp(p);
    assert_true(fd >= 0);
    close(fd);
    return p;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    buf_t b;
    buf_init(&b, NULL);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        assert_int_equal(buf_append(&b, chunk, n), 0);
    fclose(f);
    *len = b.len;
    return b.data ? b.data : strdup("");
}

/* Checks every line is valid JSON and returns how many there are; seq[p] is
 * the last request number seen from producer p ("p-n" request ids), which
 * must increase. */
static size_t check_lines(const char *text, size_t len, int producers)
{
    size_t n = 0;
    long last[8];
    for (int i = 0; i < 8; i++)
        last[i] = -1;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        assert_non_null(nl);
        assert_true(json_valid(p, (size_t)(nl - p)));
        if (producers) {
            cJSON *j = cJSON_ParseWithLength(p, (size_t)(nl - p));
            assert_non_null(j);
            int prod;
            long seq;
            assert_int_equal(sscanf(jstr(j, "request_id"), "%d-%ld", &prod, &seq), 2);
            assert_true(prod >= 0 && prod < producers);
            assert_true(seq > last[prod]);
            last[prod] = seq;
            cJSON_Delete(j);
        }
        n++;
        p = nl + 1;
    }
    return n;
}

static size_t count_file_lines(const char *path)
{
    size_t len;
    char *t = slurp(path, &len);
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += t[i] == '\n';
    free(t);
    return n;
}

static void record_seq(struct accesslog *a, int prod, long seq)
{
    char id[32];
    snprintf(id, sizeof id, "%d-%ld", prod, seq);
    struct access_record r = base();
    r.request_id = id;
    accesslog_record(a, &r);
}

static void test_file_sink(void **state)
{
    (void)state;
    char *path = temp_path();
    char err[256] = "";
    enum { N = 1000 };
    struct accesslog *a = accesslog_open(path, err, sizeof err);
    assert_non_null(a);
    for (long i = 0; i < N; i++)
        record_seq(a, 0, i);
    /* One line larger than the writer's 64 KiB batch. */
    char *huge = malloc(100001);
    memset(huge, 'x', 100000);
    huge[0] = '/';
    huge[100000] = '\0';
    struct access_record r = base();
    r.path = huge;
    r.request_id = "0-1000000";
    accesslog_record(a, &r);
    accesslog_close(a);
    assert_int_equal(accesslog_dropped(NULL), 0);

    size_t len;
    char *text = slurp(path, &len);
    assert_int_equal(check_lines(text, len, 1), N + 1);
    free(text);

    /* Opened for append: a second run adds to the file. */
    a = accesslog_open(path, err, sizeof err);
    assert_non_null(a);
    for (long i = 0; i < 5; i++)
        record_seq(a, 0, i);
    assert_int_equal(accesslog_dropped(a), 0);
    accesslog_close(a);
    assert_int_equal(count_file_lines(path), N + 6);
    free(huge);
    unlink(path);
    free(path);
}

static void test_open_errors(void **state)
{
    (void)state;
    char err[256] = "";
    assert_null(accesslog_open("/nonexistent-dir/x/access.log", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent-dir/x/access.log"));
}

static void test_off(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_accesslog_off_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(dir), 0);
    char err[256] = "";
    struct accesslog *a = accesslog_open("off", err, sizeof err);
    assert_non_null(a);
    for (long i = 0; i < 20000; i++) /* more than the capacity: nothing is dropped */
        record_seq(a, 0, i);
    assert_int_equal(accesslog_dropped(a), 0);
    accesslog_close(a);
    DIR *d = opendir(".");
    assert_non_null(d);
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d)))
        files += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    assert_int_equal(files, 0);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(rmdir(dir), 0);
}

static void test_stdout(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(p[1], STDOUT_FILENO) >= 0);
    close(p[1]);
    char err[256] = "";
    struct accesslog *a = accesslog_open("-", err, sizeof err);
    for (long i = 0; a && i < 3; i++)
        record_seq(a, 0, i);
    accesslog_close(a);
    assert_true(dup2(saved, STDOUT_FILENO) >= 0); /* also closes the pipe's write end */
    close(saved);
    assert_non_null(a);
    char text[8192];
    size_t len = 0;
    ssize_t n;
    while ((n = read(p[0], text + len, sizeof text - len)) > 0)
        len += (size_t)n;
    close(p[0]);
    assert_int_equal(check_lines(text, len, 1), 3);
}

/* ---- producers ---- */

enum { PRODUCERS = 4 };

struct prod_arg {
    struct accesslog *a;
    int id;
    long n;
    pthread_barrier_t *start;
};

static void *producer(void *p)
{
    struct prod_arg *a = p;
    pthread_barrier_wait(a->start);
    for (long i = 0; i < a->n; i++)
        record_seq(a->a, a->id, i);
    return NULL;
}

/* Runs PRODUCERS threads of n records each; fails (instead of hanging) if
 * they do not all finish within 60 s: a producer must never block. */
static void run_producers(struct accesslog *a, long n)
{
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, PRODUCERS);
    pthread_t th[PRODUCERS];
    struct prod_arg args[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        args[i] = (struct prod_arg){a, i, n, &start};
        assert_int_equal(pthread_create(&th[i], NULL, producer, &args[i]), 0);
    }
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 60;
    for (int i = 0; i < PRODUCERS; i++)
        assert_int_equal(pthread_timedjoin_np(th[i], NULL, &dl), 0);
    pthread_barrier_destroy(&start);
}

static void test_many_producers(void **state)
{
    (void)state;
    char *path = temp_path();
    char err[256] = "";
    struct accesslog *a = accesslog_open(path, err, sizeof err);
    assert_non_null(a);
    /* Fewer records than the capacity: none may be dropped. */
    enum { N = ACCESSLOG_CAPACITY / PRODUCERS };
    run_producers(a, N);
    accesslog_close(a);
    size_t len;
    char *text = slurp(path, &len);
    assert_int_equal(check_lines(text, len, PRODUCERS), PRODUCERS * N);
    free(text);
    unlink(path);
    free(path);
}

/* Waits (bounded) until the file holds want lines. */
static void wait_lines(const char *path, size_t want)
{
    struct timespec t0, now, tick = {0, 1000000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        size_t n = count_file_lines(path);
        assert_true(n <= want);
        if (n == want) return;
        clock_gettime(CLOCK_MONOTONIC, &now);
        assert_true(now.tv_sec - t0.tv_sec < 30);
        nanosleep(&tick, NULL);
    }
}

/* logrotate: rename the file, reopen, and new lines go to a new file at the
 * configured path while the renamed one keeps the old lines. */
static void test_reopen(void **state)
{
    (void)state;
    char *path = temp_path();
    char rotated[512];
    snprintf(rotated, sizeof rotated, "%s.1", path);
    char err[256] = "";
    struct accesslog *a = accesslog_open(path, err, sizeof err);
    assert_non_null(a);
    for (long i = 0; i < 10; i++)
        record_seq(a, 0, i);
    wait_lines(path, 10);
    assert_int_equal(rename(path, rotated), 0);
    assert_int_equal(accesslog_reopen(a), 0);
    for (long i = 10; i < 13; i++)
        record_seq(a, 0, i);
    accesslog_close(a);
    assert_int_equal(count_file_lines(rotated), 10);
    assert_int_equal(count_file_lines(path), 3);

    /* A path that cannot be opened any more: an error, the old file kept. */
    char dir[512];
    snprintf(dir, sizeof dir, "%s.d", path);
    assert_int_equal(mkdir(dir, 0700), 0);
    char inner[600];
    snprintf(inner, sizeof inner, "%s/log", dir);
    a = accesslog_open(inner, err, sizeof err);
    assert_non_null(a);
    record_seq(a, 0, 0);
    wait_lines(inner, 1);
    assert_int_equal(rename(inner, rotated), 0);
    assert_int_equal(rmdir(dir), 0);
    assert_true(accesslog_reopen(a) < 0);
    record_seq(a, 0, 1);
    accesslog_close(a);
    assert_int_equal(count_file_lines(rotated), 2); /* still written to */
    assert_int_equal(accesslog_reopen(NULL), 0);
    unlink(rotated);
    unlink(path);
    free(path);
}

static void test_full_queue_drops(void **state)
{
    (void)state;
    char *path = temp_path();
    char err[256] = "";
    enum { CAP = 256, N = 1000 };
    struct accesslog_opts o = {.capacity = CAP, .paused = true};
    struct accesslog *a = accesslog_open_ex(path, &o, err, sizeof err);
    assert_non_null(a);
    /* The writer takes nothing: exactly CAP records fit, the rest are
     * dropped and counted, and no producer waits for room. */
    run_producers(a, N);
    assert_int_equal(accesslog_dropped(a), PRODUCERS * N - CAP);
    assert_int_equal(count_file_lines(path), 0);

    /* Once the writer catches up there is room again. */
    accesslog_set_paused(a, false);
    wait_lines(path, CAP);
    accesslog_set_paused(a, true);
    for (long i = 0; i < CAP; i++)
        record_seq(a, 0, N + i);
    assert_int_equal(accesslog_dropped(a), PRODUCERS * N - CAP);
    record_seq(a, 0, 2 * N);
    assert_int_equal(accesslog_dropped(a), PRODUCERS * N - CAP + 1);

    /* close flushes a paused writer's queue. */
    accesslog_close(a);
    size_t len;
    char *text = slurp(path, &len);
    assert_int_equal(check_lines(text, len, PRODUCERS), 2 * CAP);
    free(text);
    unlink(path);
    free(path);
}

/* The writer goes idle (blocked without timeout) and must be woken by the
 * next record: each round waits until that record is on disk. */
static void test_wake_from_idle(void **state)
{
    (void)state;
    char *path = temp_path();
    char err[256] = "";
    struct accesslog *a = accesslog_open(path, err, sizeof err);
    assert_non_null(a);
    for (long i = 0; i < 20; i++) {
        struct timespec t0, now, tick = {0, 1000000};
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (!accesslog_idle(a)) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            assert_true(now.tv_sec - t0.tv_sec < 30);
            nanosleep(&tick, NULL);
        }
        record_seq(a, 0, i);
        wait_lines(path, (size_t)i + 1);
    }
    accesslog_close(a);
    unlink(path);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_fields),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_file_sink),
        cmocka_unit_test(test_reopen),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_off),
        cmocka_unit_test(test_stdout),
        cmocka_unit_test(test_many_producers),
        cmocka_unit_test(test_full_queue_drops),
        cmocka_unit_test(test_wake_from_idle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
