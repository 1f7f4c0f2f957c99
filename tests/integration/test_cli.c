/*
 * The gateway's command line: --check on good and bad configs (exit codes,
 * one "json.path: message" line per problem, all at once), -c with a bad
 * config, a start that fails (it says what failed and exits 1; that it
 * frees what it made is tests/gateway/test_gateway's), --help and
 * --version. No server is left running here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define RUN_TIMEOUT_MS 10000

/* Problems, each expected on a line of its own, by endpoint index:
 *   0  unknown key "bogus"
 *   1  {uid} is not a parameter of /api/x/{id}
 *   2  same method and shape as endpoint 0: duplicate route
 *   3  a route on a built-in path
 *   4  a bad backend URL
 *   5  timeout_ms of the wrong type
 *   6  no path */
static const char bad_conf[] =
    "{\"server\": {\"listen\": \"127.0.0.1:18080\"},\n"
    " \"endpoints\": [\n"
    "  {\"name\": \"e0\", \"method\": \"GET\", \"path\": \"/api/a/{id}\", \"bogus\": 1,\n"
    "   \"backends\": [{\"name\": \"b\", \"url\": \"http://127.0.0.1:1/a/{id}\"}]},\n"
    "  {\"name\": \"e1\", \"method\": \"GET\", \"path\": \"/api/x/{id}\",\n"
    "   \"backends\": [{\"name\": \"b\", \"url\": \"http://127.0.0.1:1/x/{uid}\"}]},\n"
    "  {\"name\": \"e2\", \"method\": \"GET\", \"path\": \"/api/a/{other}\",\n"
    "   \"backends\": [{\"name\": \"b\", \"url\": \"http://127.0.0.1:1/a\"}]},\n"
    "  {\"name\": \"e3\", \"method\": \"GET\", \"path\": \"/healthz\",\n"
    "   \"backends\": [{\"name\": \"b\", \"url\": \"http://127.0.0.1:1/h\"}]},\n"
    "  {\"name\": \"e4\", \"method\": \"GET\", \"path\": \"/api/u\",\n"
    "   \"backends\": [{\"name\": \"b\", \"url\": \"ftp:/nowhere\"}]},\n"
    "  {\"name\": \"e5\", \"method\": \"GET\", \"path\": \"/api/t\", \"timeout_ms\": \"fast\",\n"
    "   \"backends\": [{\"name\": \"b\", \"url\": \"http://127.0.0.1:1/t\"}]},\n"
    "  {\"name\": \"e6\", \"method\": \"GET\",\n"
    "   \"backends\": [{\"name\": \"b\", \"url\": \"http://127.0.0.1:1/n\"}]}\n"
    " ]}\n";

static const char uid_line[] =
    "endpoints[1].backends[0].url: {uid} is not a parameter of /api/x/{id}";

/* True when output has a line equal to line. */
static bool has_line(const char *output, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = output; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0' || p[n] == '\r')) return true;
    return false;
}

/* True when output has a line starting with prefix. */
static bool has_line_starting(const char *output, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = output; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, prefix, n) == 0) return true;
    return false;
}

static int run_gateway(const char *a1, const char *a2, const char *a3, char **out)
{
    char *argv[] = {(char *)h_gateway_bin(), (char *)a1, (char *)a2, (char *)a3, NULL};
    return h_run(argv, RUN_TIMEOUT_MS, out);
}

static void check_accepts_a_good_config(void **state)
{
    (void)state;
    char *text = h_subst(h_conf_standard, "http://127.0.0.1:1", 18080);
    char path[256];
    assert_int_equal(h_write_temp(path, sizeof path, text), 0);
    free(text);
    char *out;
    int code = run_gateway("--check", "-c", path, &out);
    if (code != 0) fprintf(stderr, "%s", out);
    assert_int_equal(code, 0);
    free(out);
    unlink(path);
}

static void check_reports_every_problem_with_its_json_path(void **state)
{
    (void)state;
    char path[256];
    assert_int_equal(h_write_temp(path, sizeof path, bad_conf), 0);
    char *out;
    int code = run_gateway("--check", "-c", path, &out);
    fprintf(stderr, "--check output:\n%s", out);
    assert_int_equal(code, 1);
    assert_true(has_line(out, uid_line));
    assert_true(has_line_starting(out, "endpoints[0].bogus: "));
    assert_true(has_line_starting(out, "endpoints[2]"));
    assert_true(has_line_starting(out, "endpoints[3].path: "));
    assert_true(has_line_starting(out, "endpoints[4].backends[0].url: "));
    assert_true(has_line_starting(out, "endpoints[5].timeout_ms: "));
    assert_true(has_line_starting(out, "endpoints[6]"));
    free(out);
    unlink(path);
}

static void run_with_a_bad_config_prints_the_problems_and_exits_1(void **state)
{
    (void)state;
    char path[256];
    assert_int_equal(h_write_temp(path, sizeof path, bad_conf), 0);
    char *out;
    int code = run_gateway("-c", path, NULL, &out);
    if (code != 1) fprintf(stderr, "%s", out);
    assert_int_equal(code, 1);
    assert_true(has_line(out, uid_line));
    free(out);
    unlink(path);
}

/* A listening socket on 127.0.0.1 (a port the kernel picks), its port in
 * *port; -1 on failure. */
static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, len) != 0 || listen(fd, 1) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* Runs the gateway (not --check) on a config listening on port with extra
 * top-level keys; returns its exit code, its output in *out. */
static int run_config(int port, const char *extra, char **out)
{
    char text[1024], path[256];
    snprintf(text, sizeof text,
             "{\"server\": {\"listen\": \"127.0.0.1:%d\", \"workers\": 2}, %s\n"
             " \"endpoints\": [{\"name\": \"e\", \"path\": \"/api/e\",\n"
             "   \"backends\": [{\"name\": \"b\", \"url\": \"http://127.0.0.1:1/e\"}]}]}\n",
             port, extra);
    assert_int_equal(h_write_temp(path, sizeof path, text), 0);
    int code = run_gateway("-c", path, NULL, out);
    if (code != 1) fprintf(stderr, "%s", *out);
    unlink(path);
    return code;
}

/* Each failure at start names what failed and exits 1. */
static void start_failures_say_what_failed(void **state)
{
    (void)state;
    int port = 0;
    int fd = listen_any(&port);
    assert_true(fd >= 0);
    char *out, want[128];
    /* the port is taken */
    assert_int_equal(run_config(port, "", &out), 1);
    snprintf(want, sizeof want, "gateway: cannot listen on 127.0.0.1:%d: ", port);
    assert_true(has_line_starting(out, want));
    free(out);
    close(fd); /* free now: what follows fails after the port check */
    /* the access log cannot be opened */
    assert_int_equal(
        run_config(port, "\"access_log\": {\"path\": \"/nonexistent-dir/a/access.log\"},", &out),
        1);
    assert_true(has_line_starting(out, "gateway: access_log.path: "));
    free(out);
    /* the JWKS cannot be read: after the access log and the degraded store */
    assert_int_equal(run_config(port,
                                "\"auth\": {\"jwks_path\": \"/nonexistent-dir/jwks.json\","
                                " \"issuer\": \"i\", \"audience\": [\"a\"]},",
                                &out),
                     1);
    assert_true(has_line_starting(out, "gateway: auth.jwks_path: "));
    free(out);
}

static void check_on_unreadable_or_broken_files_exits_1(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(run_gateway("--check", "-c", "/nonexistent/gateway.json", &out), 1);
    assert_non_null(strstr(out, "/nonexistent/gateway.json"));
    free(out);

    char path[256];
    assert_int_equal(h_write_temp(path, sizeof path, "{\"endpoints\": [ }"), 0);
    assert_int_equal(run_gateway("--check", "-c", path, &out), 1);
    assert_true(strlen(out) > 0);
    free(out);
    unlink(path);
}

/* A key that is not UTF-8 and a URL with \u0000 (cJSON would cut it at the
 * NUL and the gateway call http://127.0.0.1:1/a): both errors with their
 * paths. */
static void check_rejects_bad_utf8_and_nul_with_their_paths(void **state)
{
    (void)state;
    static const char conf[] =
        "{\"endpoints\": [{\"name\": \"e\", \"path\": \"/a\", \"backends\": [\n"
        "  {\"name\": \"b\", \"url\": \"http://127.0.0.1:1/a\\u0000/admin\"},\n"
        "  {\"name\": \"c\", \"url\": \"http://127.0.0.1:1/c\", \"key\": \"k\xc3\x28\"}]}]}\n";
    char path[256];
    assert_int_equal(h_write_temp(path, sizeof path, conf), 0);
    char *out;
    int code = run_gateway("--check", "-c", path, &out);
    fprintf(stderr, "--check output:\n%s", out);
    assert_int_equal(code, 1);
    assert_true(has_line(out, "endpoints[0].backends[0].url: the value contains \\u0000 (a NUL "
                              "character), which is not allowed"));
    assert_true(has_line(out, "endpoints[0].backends[1].key: the value is not valid UTF-8"));
    free(out);
    unlink(path);
}

/* 4,000 endpoints on one route: one line per duplicate would be 3,999
 * lines (and one per pair, as before, 8 million); the report is 100 lines
 * and a count, at once. */
static void check_on_thousands_of_duplicates_is_short(void **state)
{
    (void)state;
    enum { N = 4000 };
    size_t cap = 64 + N * 128, len = 0;
    char *conf = malloc(cap);
    len += (size_t)snprintf(conf + len, cap - len, "{\"endpoints\":[");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(conf + len, cap - len,
                                "%s\n{\"name\":\"e%d\",\"path\":\"/a/{id}\",\"backends\":"
                                "[{\"name\":\"b\",\"url\":\"http://127.0.0.1:1/\"}]}",
                                i ? "," : "", i);
    snprintf(conf + len, cap - len, "]}\n");
    char path[256];
    assert_int_equal(h_write_temp(path, sizeof path, conf), 0);
    free(conf);
    char *out;
    int code = run_gateway("--check", "-c", path, &out);
    assert_int_equal(code, 1);
    size_t lines = 0;
    for (const char *c = out; *c; c++)
        lines += *c == '\n';
    if (lines != 101) fprintf(stderr, "%zu lines, the first:\n%.2000s\n", lines, out);
    assert_int_equal(lines, 101);
    assert_true(has_line(out, "endpoints[1].path: duplicate route GET /a/{id}: endpoints[0] "
                              "already routes GET /a/{id}"));
    char last[400];
    snprintf(last, sizeof last, "%s: and 3,899 more problems (only the first 100 are listed)",
             path);
    assert_true(has_line(out, last));
    free(out);
    unlink(path);
}

static void help_and_version(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(run_gateway("--help", NULL, NULL, &out), 0);
    assert_non_null(strstr(out, "--check"));
    assert_non_null(strstr(out, "-c"));
    free(out);

    assert_int_equal(run_gateway("--version", NULL, NULL, &out), 0);
    assert_non_null(strstr(out, GATEWAY_VERSION_EXPECTED));
    free(out);

    /* an unknown option is a usage error, not a run */
    assert_int_not_equal(run_gateway("--no-such-option", NULL, NULL, &out), 0);
    free(out);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(check_accepts_a_good_config),
        cmocka_unit_test(check_reports_every_problem_with_its_json_path),
        cmocka_unit_test(run_with_a_bad_config_prints_the_problems_and_exits_1),
        cmocka_unit_test(check_on_unreadable_or_broken_files_exits_1),
        cmocka_unit_test(start_failures_say_what_failed),
        cmocka_unit_test(check_rejects_bad_utf8_and_nul_with_their_paths),
        cmocka_unit_test(check_on_thousands_of_duplicates_is_short),
        cmocka_unit_test(help_and_version),
    };
    return cmocka_run_group_tests_name("integration/cli", tests, NULL, NULL);
}
