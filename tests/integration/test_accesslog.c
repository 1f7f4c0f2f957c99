/*
 * The access log, against the real binary (DESIGN.md "Operations"): one
 * JSON line per request with exactly the contract's fields, matching the
 * response's X-Request-Id and traceparent, 499 for a client that hung up;
 * "off" writes nothing, "-" writes to stdout; after SIGTERM the file holds
 * every line.
 *
 * Lines are written after the response is sent, so every check polls
 * (bounded) until the expected lines appear.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "ops.h"

/* The shared gateway writes its access log here. */
static struct h_env env;
static char log_dir[64];
static char log_path[128];

/* SIGTERM; the gateway must exit 0 within WAIT_MS. */
static void term_and_wait(struct h_gateway *g)
{
    assert_true(g->pid > 0);
    assert_int_equal(kill(g->pid, SIGTERM), 0);
    int st = h_gateway_wait_exit(g, WAIT_MS);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "gateway did not exit 0 within %d ms of SIGTERM (wait status 0x%x)\n",
                WAIT_MS, st);
        h_gateway_dump(g);
    }
    assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* A whole number in the range counts reach. */
static bool is_integral(double v)
{
    return v >= -9e15 && v <= 9e15 && (double)(int64_t)v == v;
}

static bool is_hex32(const char *s)
{
    if (!s || strlen(s) != 32) return false;
    bool nonzero = false;
    for (const char *p = s; *p; p++) {
        if (!isxdigit((unsigned char)*p) || isupper((unsigned char)*p)) return false;
        nonzero |= *p != '0';
    }
    return nonzero;
}

/* ISO-8601 UTC "YYYY-MM-DDTHH:MM:SS[.fff]Z"; *t receives the seconds. */
static bool parse_ts(const char *s, time_t *t)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    for (size_t i = 0; shape[i]; i++)
        if (shape[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != shape[i]) return false;
    const char *p = s + strlen(shape);
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p)) return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (strcmp(p, "Z") != 0) return false;
    struct tm tm = {0};
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec) != 6)
        return false;
    if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
        tm.tm_min > 59 || tm.tm_sec > 60)
        return false;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *t = timegm(&tm);
    return true;
}

static time_t test_started; /* wall clock when the program started, minus slack */

/* Exactly the contract's fields, each of its type. Returns NULL or what is
 * wrong. */
static const char *log_line_problem(const cJSON *o)
{
    static const char *const fields[] = {"ts",         "method",   "path",
                                         "endpoint",   "status",   "duration_ms",
                                         "request_id", "trace_id", "degraded"};
    if (!cJSON_IsObject(o)) return "not an object";
    if (cJSON_GetArraySize(o) != 9) return "not exactly 9 fields";
    for (size_t i = 0; i < 9; i++)
        if (!cJSON_GetObjectItemCaseSensitive(o, fields[i])) return "a field is missing";
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(o, "ts");
    time_t t;
    if (!cJSON_IsString(ts) || !parse_ts(ts->valuestring, &t)) return "ts is not ISO-8601 UTC";
    if (t < test_started || t > time(NULL) + 5) return "ts is not now";
    if (!h_json_str(o, "method") || !h_json_str(o, "method")[0]) return "method";
    if (!h_json_str(o, "path") || h_json_str(o, "path")[0] != '/') return "path";
    const cJSON *ep = cJSON_GetObjectItemCaseSensitive(o, "endpoint");
    if (!cJSON_IsNull(ep) && !cJSON_IsString(ep)) return "endpoint is neither string nor null";
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "status");
    if (!cJSON_IsNumber(st) || !is_integral(st->valuedouble) || st->valuedouble < 100 ||
        st->valuedouble > 599)
        return "status";
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(o, "duration_ms");
    if (!cJSON_IsNumber(d) || !(d->valuedouble >= 0)) return "duration_ms";
    const char *rid = h_json_str(o, "request_id");
    if (!rid || !rid[0] || strlen(rid) > 128) return "request_id";
    if (!is_hex32(h_json_str(o, "trace_id"))) return "trace_id is not 32 lowercase hex";
    const cJSON *deg = cJSON_GetObjectItemCaseSensitive(o, "degraded");
    if (!cJSON_IsArray(deg)) return "degraded is not an array";
    const cJSON *x;
    cJSON_ArrayForEach(x, deg) if (!cJSON_IsString(x)) return "degraded holds a non-string";
    return NULL;
}

/* Parses every complete line of the log file strictly. When final, the
 * file must end with a newline. Returns an array of the lines. */
static cJSON *read_log(const char *path, bool final)
{
    size_t len = 0;
    char *text = h_read_file(path, &len);
    cJSON *all = cJSON_CreateArray();
    if (!text) return all;
    if (final && len && text[len - 1] != '\n') fail_msg("%s does not end with a newline", path);
    int lineno = 0;
    for (char *line = text, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        *nl = '\0';
        lineno++;
        const char *end = NULL;
        cJSON *o = cJSON_ParseWithOpts(line, &end, 1);
        const char *problem = o ? log_line_problem(o) : "not JSON";
        if (problem) {
            fprintf(stderr, "%s line %d: %s\n", path, lineno, line);
            fail_msg("access log line %d: %s", lineno, problem);
        }
        cJSON_AddItemToArray(all, o);
    }
    free(text);
    return all;
}

static const cJSON *log_find(const cJSON *lines, const char *rid)
{
    const cJSON *o;
    cJSON_ArrayForEach(o, lines)
    {
        const char *r = h_json_str(o, "request_id");
        if (r && strcmp(r, rid) == 0) return o;
    }
    return NULL;
}

/* Polls the log until every id in rids has a line. Returns all lines. */
static cJSON *wait_log(const char *path, const char *const *rids, size_t n)
{
    double end = h_now_ms() + h_bound_ms(WAIT_MS);
    for (;;) {
        cJSON *lines = read_log(path, false);
        size_t found = 0;
        for (size_t i = 0; i < n; i++)
            found += log_find(lines, rids[i]) != NULL;
        if (found == n) return lines;
        cJSON_Delete(lines);
        if (!h_poll_step(end)) fail_msg("only %zu of %zu access-log lines appeared", found, n);
    }
}

/* The trace id of a traceparent "00-<32 hex>-<16 hex>-<2 hex>". */
static void trace_of(const char *tp, char out[33])
{
    assert_non_null(tp);
    assert_true(strlen(tp) == 55 && strncmp(tp, "00-", 3) == 0 && tp[35] == '-');
    memcpy(out, tp + 3, 32);
    out[32] = '\0';
    assert_true(is_hex32(out));
}

/* The line of response r: request_id is the response's X-Request-Id,
 * trace_id the trace of its traceparent, and the given fields. */
static void check_line(const cJSON *lines, const struct h_resp *r, const char *method,
                       const char *path, const char *endpoint, long status,
                       const char *const *degraded)
{
    const char *rid = h_header(r, "X-Request-Id");
    assert_non_null(rid);
    const cJSON *o = log_find(lines, rid);
    if (!o) fail_msg("no access-log line for %s", rid);
    char trace[33];
    trace_of(h_header(r, "traceparent"), trace);
    assert_string_equal(h_json_str(o, "trace_id"), trace);
    assert_string_equal(h_json_str(o, "method"), method);
    assert_string_equal(h_json_str(o, "path"), path);
    const cJSON *ep = cJSON_GetObjectItemCaseSensitive(o, "endpoint");
    if (endpoint)
        assert_string_equal(h_json_str(o, "endpoint"), endpoint);
    else
        assert_true(cJSON_IsNull(ep));
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(o, "status")->valueint, status);
    const cJSON *deg = cJSON_GetObjectItemCaseSensitive(o, "degraded");
    size_t n = 0;
    while (degraded && degraded[n])
        n++;
    assert_int_equal(cJSON_GetArraySize(deg), (int)n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(cJSON_GetArrayItem(deg, (int)i)->valuestring, degraded[i]);
}

static void access_log_has_one_strict_line_per_request(void **state)
{
    (void)state;
    struct h_resp r[6];
    /* a client trace is continued; %2F stays as sent */
    const char *h0[] = {"X-Request-Id: ops-log-1",
                        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                        NULL};
    h_get(env.gw.base, "/api/ok/a%2Fb", h0, &r[0]);
    expect_status("ok", &r[0], 200);
    get_expect(&env.gw, "/nope/x", NULL, 404, &r[1]);
    get_expect(&env.gw, "/api/opt/7", "ops-log-3", 200, &r[2]);
    get_expect(&env.gw, "/api/stat/8", NULL, 200, &r[3]);
    char url[256];
    snprintf(url, sizeof url, "%s/healthz", env.gw.base);
    h_request("POST", url, NULL, "{}", 0, &r[4]);
    expect_status("POST /healthz", &r[4], 405);
    get_expect(&env.gw, "/api/fail/9", NULL, 502, &r[5]);

    expect_header(&r[0], "X-Request-Id", "ops-log-1");
    char trace[33];
    trace_of(h_header(&r[0], "traceparent"), trace);
    assert_string_equal(trace, "0af7651916cd43dd8448eb211c80319c");

    const char *rids[6];
    for (size_t i = 0; i < 6; i++) {
        rids[i] = h_header(&r[i], "X-Request-Id");
        assert_non_null(rids[i]);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(rids[i], rids[j]);
    }
    cJSON *lines = wait_log(log_path, rids, 6);
    check_line(lines, &r[0], "GET", "/api/ok/a%2Fb", "ok", 200, NULL);
    check_line(lines, &r[1], "GET", "/nope/x", NULL, 404, NULL);
    check_line(lines, &r[2], "GET", "/api/opt/7", "opt", 200, (const char *const[]){"flaky", NULL});
    check_line(lines, &r[3], "GET", "/api/stat/8", "stat", 200, (const char *const[]){"st", NULL});
    check_line(lines, &r[4], "POST", "/healthz", NULL, 405, NULL);
    check_line(lines, &r[5], "GET", "/api/fail/9", "fail", 502, NULL);
    /* one line per request */
    for (size_t i = 0; i < 6; i++) {
        int count = 0;
        const cJSON *o;
        cJSON_ArrayForEach(o, lines) count += strcmp(h_json_str(o, "request_id"), rids[i]) == 0;
        assert_int_equal(count, 1);
    }
    cJSON_Delete(lines);
    for (size_t i = 0; i < 6; i++)
        h_resp_free(&r[i]);
}

static bool has_499(const cJSON *lines, const char *rid, double *dur)
{
    const cJSON *o = log_find(lines, rid);
    if (!o) return false;
    *dur = cJSON_GetObjectItemCaseSensitive(o, "duration_ms")->valuedouble;
    return cJSON_GetObjectItemCaseSensitive(o, "status")->valueint == 499;
}

/* A client that hangs up while the backend call runs is logged as 499,
 * noticed while the call still runs (test_metrics.c checks its counters). */
static void client_that_hangs_up_is_logged_as_499(void **state)
{
    (void)state;
    hang_up_during_backend_call(&env, "ops-hangup-1");
    double end = h_now_ms() + h_bound_ms(WAIT_MS), dur = 0;
    for (;;) {
        cJSON *lines = read_log(log_path, false);
        bool found = log_find(lines, "ops-hangup-1") != NULL;
        bool is499 = has_499(lines, "ops-hangup-1", &dur);
        if (found && !is499) {
            fprintf(stderr, "%s\n", cJSON_PrintUnformatted(log_find(lines, "ops-hangup-1")));
            cJSON_Delete(lines);
            fail_msg("the hung-up request is not logged as 499");
        }
        cJSON_Delete(lines);
        if (found) break;
        if (!h_poll_step(end)) fail_msg("no access-log line for the hung-up request");
    }
    /* noticed while the backend (5 s) was still working */
    if (dur >= 4000) fail_msg("499 logged after %.0f ms: the hang-up was not noticed", dur);
    /* and the backend call was aborted */
    cJSON *aborted = h_wait_log(&env.mock, "/slow/5000/1", h_pred_hung_up, NULL, WAIT_MS);
    assert_non_null(aborted);
    cJSON_Delete(aborted);
}

/* ---- gateways of their own ---- */

static struct h_env own_env;
static char own_dir[64], own_log[128];

/* Stops whatever a test left running (also after a failed assertion). */
static int own_teardown(void **state)
{
    (void)state;
    if (own_env.gw.pid) kill(own_env.gw.pid, SIGKILL), waitpid(own_env.gw.pid, NULL, 0);
    own_env.gw.pid = 0;
    if (own_env.gw.conf_path[0]) h_gateway_stop(&own_env.gw, false);
    if (own_env.mock.pid) h_mock_stop(&own_env.mock);
    memset(&own_env, 0, sizeof own_env);
    if (own_log[0]) unlink(own_log);
    if (own_dir[0]) rmdir(own_dir);
    own_log[0] = own_dir[0] = '\0';
    return 0;
}

/* Starts a gateway with access_log path, makes two requests (ids
 * prefix-1, prefix-2), SIGTERMs it and returns its stdout+stderr. */
static char *run_and_stop(const char *log, const char *prefix)
{
    struct h_env *e = &own_env;
    char *tmpl = make_tmpl(log, false);
    int rc = h_env_start(e, tmpl);
    free(tmpl);
    assert_int_equal(rc, 0);
    char rid[64];
    struct h_resp r;
    snprintf(rid, sizeof rid, "%s-1", prefix);
    get_expect(&e->gw, "/api/ok/1", rid, 200, &r);
    h_resp_free(&r);
    snprintf(rid, sizeof rid, "%s-2", prefix);
    get_expect(&e->gw, "/nope", rid, 404, &r);
    h_resp_free(&r);
    term_and_wait(&e->gw);
    char *out = h_read_file(e->gw.stderr_path, NULL);
    assert_non_null(out);
    own_teardown(NULL); /* removes the config and output files */
    return out;
}

static void access_log_off_writes_nothing_and_dash_writes_stdout(void **state)
{
    (void)state;
    char *out = run_and_stop("off", "ops-off");
    if (strstr(out, "request_id") || strstr(out, "ops-off")) {
        fprintf(stderr, "%s\n", out);
        fail_msg("access_log \"off\" wrote a record");
    }
    free(out);

    /* the same with "-": the lines are on stdout (the check above can fail) */
    out = run_and_stop("-", "ops-dash");
    int found = 0;
    for (char *line = out, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        *nl = '\0';
        if (line[0] != '{') continue;
        cJSON *o = cJSON_Parse(line);
        const char *problem = o ? log_line_problem(o) : "not JSON";
        if (problem) fail_msg("stdout access-log line: %s: %s", problem, line);
        const char *rid = h_json_str(o, "request_id");
        found += strcmp(rid, "ops-dash-1") == 0 || strcmp(rid, "ops-dash-2") == 0;
        cJSON_Delete(o);
    }
    free(out);
    assert_int_equal(found, 2);
}

static void sigterm_flushes_every_line(void **state)
{
    (void)state;
    snprintf(own_dir, sizeof own_dir, "/tmp/gw-ops-XXXXXX");
    if (!mkdtemp(own_dir)) {
        own_dir[0] = '\0';
        fail_msg("mkdtemp: %s", strerror(errno));
    }
    snprintf(own_log, sizeof own_log, "%s/access.log", own_dir);
    const char *path = own_log;
    char *tmpl = make_tmpl(path, false);
    struct h_env *e = &own_env;
    int rc = h_env_start(e, tmpl);
    free(tmpl);
    assert_int_equal(rc, 0);

    enum { R = 200 };
    for (int i = 0; i < R; i++) {
        char rid[64], p[64];
        snprintf(rid, sizeof rid, "ops-flush-%d", i);
        snprintf(p, sizeof p, i % 10 ? "/api/ok/%d" : "/nope/%d", i);
        struct h_resp r;
        get_expect(&e->gw, p, rid, i % 10 ? 200 : 404, &r);
        h_resp_free(&r);
    }
    /* no wait for the writer: shutdown must flush what is queued */
    term_and_wait(&e->gw);
    cJSON *lines = read_log(path, true);
    bool seen[R] = {false};
    const cJSON *o;
    cJSON_ArrayForEach(o, lines)
    {
        int i;
        char tail;
        if (sscanf(h_json_str(o, "request_id"), "ops-flush-%d%c", &i, &tail) != 1) continue;
        assert_true(i >= 0 && i < R && !seen[i]);
        seen[i] = true;
        assert_int_equal(cJSON_GetObjectItemCaseSensitive(o, "status")->valueint,
                         i % 10 ? 200 : 404);
    }
    cJSON_Delete(lines);
    int missing = 0;
    for (int i = 0; i < R; i++)
        missing += !seen[i];
    if (missing) fail_msg("%d of %d lines missing after SIGTERM", missing, R);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    test_started = time(NULL) - 5;
    const struct CMUnitTest shared[] = {
        cmocka_unit_test(access_log_has_one_strict_line_per_request),
        cmocka_unit_test(client_that_hangs_up_is_logged_as_499),
    };
    const struct CMUnitTest own[] = {
        cmocka_unit_test_teardown(access_log_off_writes_nothing_and_dash_writes_stdout,
                                  own_teardown),
        cmocka_unit_test_teardown(sigterm_flushes_every_line, own_teardown),
    };
    snprintf(log_dir, sizeof log_dir, "/tmp/gw-ops-XXXXXX");
    if (!mkdtemp(log_dir)) return 1;
    snprintf(log_path, sizeof log_path, "%s/access.log", log_dir);
    char *tmpl = make_tmpl(log_path, false);
    int failed = H_GROUP_RUN("integration/accesslog (shared gateway)", shared, &env, tmpl);
    free(tmpl);
    unlink(log_path);
    rmdir(log_dir);
    failed += cmocka_run_group_tests_name("integration/accesslog (own gateways)", own, NULL, NULL);
    return failed ? 1 : 0;
}
