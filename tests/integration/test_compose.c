/*
 * Composition on the real gateway against the real mock backend: chained
 * calls ({p.id} placeholders), per-item fan-out (foreach), shaping and
 * on_conflict. Timing claims are read from the mock's request log
 * (started_ms / finished_ms), never from sleeps: a child starts after its
 * parent ended, an independent sibling starts at once, items overlap no
 * more than the endpoint's concurrency.
 *
 * Parents answer with /json?body=...&delay_ms=... (the mock answers the
 * body it is given); in the template below a body is written between << and
 * >> with ' for ", and percent-encoded when the config is written.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static const char conf_tmpl[] =
    "{'server': {'listen': '127.0.0.1:${PORT}', 'workers': 1, 'shutdown_timeout_ms': 2000},"
    " 'defaults': {'timeout_ms': 5000, 'backend_timeout_ms': 5000, 'concurrency': 16},"
    " 'access_log': {'path': 'off'},"
    " 'degraded': {'max_entries': 1000},"
    " 'endpoints': ["
    /* a chain p -> c, with an independent sibling s; shaping on both */
    "  {'name': 'chain', 'path': '/chain',"
    "   'backends': ["
    "    {'name': 'p', 'url': '${BACKEND}/json?delay_ms=600&body=<<{'id':'u 1/x','n':7}>>',"
    "     'key': 'p', 'allow': ['n']},"
    "    {'name': 'c', 'url': '${BACKEND}/users/{p.id}?n={p.n}', 'key': 'c',"
    "     'deny': ['name']},"
    "    {'name': 's', 'url': '${BACKEND}/slow/100/sib', 'key': 's'}]},"
    /* a failing parent: required, then optional */
    "  {'name': 'failreq', 'path': '/failreq',"
    "   'backends': ["
    "    {'name': 'p', 'url': '${BACKEND}/fail/500', 'key': 'p'},"
    "    {'name': 'c', 'url': '${BACKEND}/users/never-{p.id}', 'key': 'c'}]},"
    "  {'name': 'failopt', 'path': '/failopt',"
    "   'backends': ["
    "    {'name': 'p', 'url': '${BACKEND}/fail/500', 'key': 'p', 'required': false},"
    "    {'name': 'c', 'url': '${BACKEND}/users/never-{p.id}', 'key': 'c'},"
    "    {'name': 'd', 'url': '${BACKEND}/users/never-{p.id}', 'key': 'd', 'required': false}]},"
    /* a degraded parent feeds its child */
    "  {'name': 'deg', 'path': '/deg/{id}',"
    "   'backends': ["
    "    {'name': 'p', 'url': '${BACKEND}/users/{id}', 'key': 'p', 'fallback': 'degraded'},"
    "    {'name': 'c', 'url': '${BACKEND}/orders/{p.id}', 'key': 'c', 'target': 'user_id'}]},"
    /* foreach: the first item is the slowest */
    "  {'name': 'each', 'path': '/each',"
    "   'backends': ["
    "    {'name': 'src', 'url': '${BACKEND}/json?body=<<{'list':[{'ms':400,'x':'a'},"
    "{'ms':10,'x':'b'},{'ms':10,'x':'c'}]}>>', 'key': 'src'},"
    "    {'name': 'items', 'foreach': 'src.list', 'url': '${BACKEND}/slow/{item.ms}/{item.x}',"
    "     'key': 'items', 'target': 'x'}]},"
    /* concurrency 2 over 5 items */
    "  {'name': 'conc', 'path': '/conc', 'concurrency': 2,"
    "   'backends': ["
    "    {'name': 'src', 'url': '${BACKEND}/json?body=<<[1,2,3,4,5]>>', 'key': 'src'},"
    "    {'name': 'items', 'foreach': 'src', 'url': '${BACKEND}/slow/150/conc-{item}',"
    "     'key': 'items'}]},"
    /* item_failure each way; item 1 fails (status 500), item 3 has no c */
    "  {'name': 'if-fail', 'path': '/if/fail',"
    "   'backends': ["
    "    {'name': 'src', 'url': '${BACKEND}/json?body=<<{'l':[{'c':200},{'c':500},{'c':200}]}>>',"
    "     'key': 'src'},"
    "    {'name': 'items', 'foreach': 'src.l', 'url': '${BACKEND}/fail/{item.c}', 'key': "
    "'items'}]},"
    "  {'name': 'if-fast', 'path': '/if/fast',"
    "   'backends': ["
    "    {'name': 'src', 'url': '${BACKEND}/json?body=<<{'l':[{'ms':4000,'x':'a'},{'y':1}]}>>',"
    "     'key': 'src'},"
    "    {'name': 'items', 'foreach': 'src.l', 'url': '${BACKEND}/slow/{item.ms}/fast-{item.x}',"
    "     'key': 'items'}]},"
    "  {'name': 'if-null', 'path': '/if/null',"
    "   'backends': ["
    "    {'name': 'src', 'url': '${BACKEND}/json?body=<<{'l':[{'c':200},{'c':500},{'c':200},"
    "{'x':1}]}>>', 'key': 'src'},"
    "    {'name': 'items', 'foreach': 'src.l', 'url': '${BACKEND}/fail/{item.c}', 'key': 'items',"
    "     'item_failure': 'null'}]},"
    "  {'name': 'if-omit', 'path': '/if/omit',"
    "   'backends': ["
    "    {'name': 'src', 'url': '${BACKEND}/json?body=<<{'l':[{'c':200},{'c':500},{'c':200},"
    "{'x':1}]}>>', 'key': 'src'},"
    "    {'name': 'items', 'foreach': 'src.l', 'url': '${BACKEND}/fail/{item.c}', 'key': 'items',"
    "     'item_failure': 'omit'}]},"
    /* max_items, an empty array, a source that is not an array */
    "  {'name': 'max', 'path': '/max',"
    "   'backends': ["
    "    {'name': 'src', 'url': '${BACKEND}/json?body=<<[1,2,3]>>', 'key': 'src'},"
    "    {'name': 'items', 'foreach': 'src', 'url': '${BACKEND}/b/{item}', 'key': 'items',"
    "     'max_items': 2}]},"
    "  {'name': 'empty', 'path': '/empty-each',"
    "   'backends': ["
    "    {'name': 'src', 'url': '${BACKEND}/json?body=<<{'l':[]}>>', 'key': 'src'},"
    "    {'name': 'items', 'foreach': 'src.l', 'url': '${BACKEND}/b/{item}', 'key': 'items'},"
    "    {'name': 'bad', 'foreach': 'src', 'url': '${BACKEND}/b/{item}', 'key': 'bad',"
    "     'required': false}]},"
    /* the deadline in the middle of a chain */
    "  {'name': 'dl', 'path': '/dl', 'timeout_ms': 600,"
    "   'backends': ["
    "    {'name': 'p', 'url': '${BACKEND}/json?delay_ms=100&body=<<{'x':'a'}>>', 'key': 'p'},"
    "    {'name': 'c', 'url': '${BACKEND}/slow/4000/dl-{p.x}', 'key': 'c'}]},"
    /* the client leaves in the middle of a chain */
    "  {'name': 'hang', 'path': '/hang',"
    "   'backends': ["
    "    {'name': 'p', 'url': '${BACKEND}/slow/3000/hang-p', 'key': 'p'},"
    "    {'name': 'c', 'url': '${BACKEND}/slow/10/hang-child-{p.x}', 'key': 'c'},"
    "    {'name': 's', 'url': '${BACKEND}/slow/3000/hang-s', 'key': 's'}]},"
    /* on_conflict error between two key-less backends */
    "  {'name': 'conflict', 'path': '/conflict/{id}', 'on_conflict': 'error',"
    "   'backends': ["
    "    {'name': 'a', 'url': '${BACKEND}/users/{id}'},"
    "    {'name': 'b', 'url': '${BACKEND}/recs/{id}', 'rename': {'for': 'name'}}]}"
    " ]}";

static struct h_env env;

/* ' -> ", and <<...>> percent-encoded. */
static char *make_conf(void)
{
    size_t n = strlen(conf_tmpl);
    char *out = malloc(3 * n + 1), *o = out;
    bool enc = false;
    for (size_t i = 0; i < n; i++) {
        char c = conf_tmpl[i];
        if (!enc && c == '<' && conf_tmpl[i + 1] == '<') {
            enc = true;
            i++;
            continue;
        }
        if (enc && c == '>' && conf_tmpl[i + 1] == '>') {
            enc = false;
            i++;
            continue;
        }
        if (c == '\'') c = '"';
        if (enc && !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) {
            o += sprintf(o, "%%%02X", (unsigned char)c);
            continue;
        }
        *o++ = c;
    }
    *o = '\0';
    return out;
}

static int reset_mock(void **state)
{
    (void)state;
    return h_mock_reset(&env.mock);
}

static void get(const char *path, struct h_resp *r)
{
    h_get(env.gw.base, path, NULL, r);
    if (r->status != 200) fprintf(stderr, "%s: %ld %s\n", path, r->status, r->body);
}

/* The only logged request with this path prefix. */
static const cJSON *only(cJSON *log, const char *prefix)
{
    const cJSON *found = NULL, *e;
    int n = 0;
    cJSON_ArrayForEach(e, log)
    {
        const char *p = h_json_str(e, "path");
        if (p && strncmp(p, prefix, strlen(prefix)) == 0) {
            found = e;
            n++;
        }
    }
    if (n != 1) fprintf(stderr, "%d requests for %s\n", n, prefix);
    assert_int_equal(n, 1);
    return found;
}

static double num(const cJSON *e, const char *name)
{
    const cJSON *v = cJSON_GetObjectItem(e, name);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static void child_starts_after_parent_sibling_at_once(void **state)
{
    (void)state;
    struct h_resp r;
    get("/chain", &r);
    assert_int_equal(r.status, 200);
    /* p shaped (allow n) for the client; the child read p's raw id */
    char *ps = cJSON_PrintUnformatted(cJSON_GetObjectItem(r.json, "p"));
    assert_string_equal(ps, "{\"n\":7}");
    free(ps);
    const cJSON *c = cJSON_GetObjectItem(r.json, "c");
    assert_non_null(h_json_str(c, "id")); /* the mock echoes the raw segment */
    assert_int_equal(strcasecmp(h_json_str(c, "id"), "u%201%2Fx"), 0);
    assert_null(cJSON_GetObjectItem(c, "name")); /* denied */
    cJSON *log = h_mock_log(&env.mock, NULL);
    const cJSON *p = only(log, "/json"), *ch = only(log, "/users/"),
                *s = only(log, "/slow/100/sib");
    assert_int_equal(strcasecmp(h_json_str(ch, "path"), "/users/u%201%2Fx"), 0);
    assert_string_equal(h_json_str(ch, "query"), "n=7");
    /* the child started once the parent ended; the sibling did not wait */
    assert_true(num(ch, "started_ms") >= num(p, "finished_ms"));
    assert_true(num(s, "started_ms") < num(p, "finished_ms"));
    cJSON_Delete(log);
    const char *st = h_header(&r, "Server-Timing");
    assert_non_null(st);
    assert_non_null(strstr(st, "p;dur="));
    assert_non_null(strstr(st, "c;dur="));
    h_resp_free(&r);
}

static void failing_parent_fails_its_children(void **state)
{
    (void)state;
    struct h_resp r;
    get("/failreq", &r);
    assert_int_equal(r.status, 502);
    assert_string_equal(h_json_str(r.json, "backend"), "p");
    h_resp_free(&r);
    /* optional parent left out: the required child fails, naming it */
    get("/failopt", &r);
    assert_int_equal(r.status, 502);
    assert_string_equal(h_json_str(r.json, "backend"), "c");
    assert_non_null(strstr(h_json_str(r.json, "error"), "dependency p failed"));
    h_resp_free(&r);
    assert_int_equal(h_mock_count(&env.mock, "/users/never"), 0); /* never called */
}

static void degraded_parent_feeds_its_child(void **state)
{
    (void)state;
    struct h_resp r;
    get("/deg/7", &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(h_mock_mode(&env.mock, "prefix=/users&status=500"), 0);
    get("/deg/7", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(h_header(&r, "X-Gateway-Degraded"), "p");
    assert_string_equal(h_json_str(r.json, "c"), "7"); /* target: orders/7's user_id */
    h_resp_free(&r);
    assert_int_equal(h_mock_count(&env.mock, "/orders/7"), 2);
}

static void foreach_keeps_input_order(void **state)
{
    (void)state;
    struct h_resp r;
    get("/each", &r);
    assert_int_equal(r.status, 200);
    const cJSON *items = cJSON_GetObjectItem(r.json, "items");
    assert_int_equal(cJSON_GetArraySize(items), 3);
    assert_string_equal(cJSON_GetArrayItem(items, 0)->valuestring, "a");
    assert_string_equal(cJSON_GetArrayItem(items, 1)->valuestring, "b");
    assert_string_equal(cJSON_GetArrayItem(items, 2)->valuestring, "c");
    assert_non_null(strstr(h_header(&r, "Server-Timing"), "items;dur="));
    assert_non_null(strstr(h_header(&r, "Server-Timing"), "desc=\"items=3\""));
    h_resp_free(&r);
    cJSON *log = h_mock_log(&env.mock, "/slow/");
    assert_int_equal(cJSON_GetArraySize(log), 3);
    const cJSON *a = only(log, "/slow/400/a"), *b = only(log, "/slow/10/b");
    assert_true(num(b, "finished_ms") < num(a, "finished_ms")); /* a was the slowest */
    cJSON_Delete(log);
    /* metrics: the backend once, its items apart */
    struct h_resp m;
    h_get(env.gw.base, "/metrics", NULL, &m);
    assert_non_null(strstr(m.body,
                           "gateway_backend_items_total{endpoint=\"each\",backend=\"items\","
                           "outcome=\"ok\"} 3"));
    assert_non_null(strstr(m.body, "gateway_backend_requests_total{endpoint=\"each\","
                                   "backend=\"items\",outcome=\"ok\"} 1"));
    h_resp_free(&m);
}

static void concurrency_bounds_the_items(void **state)
{
    (void)state;
    struct h_resp r;
    get("/conc", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r.json, "items")), 5);
    h_resp_free(&r);
    cJSON *log = h_mock_log(&env.mock, "/slow/150/conc-");
    assert_int_equal(cJSON_GetArraySize(log), 5);
    /* the most calls in flight at any start: exactly 2 */
    int most = 0;
    const cJSON *x, *y;
    cJSON_ArrayForEach(x, log)
    {
        int n = 0;
        double t = num(x, "started_ms");
        cJSON_ArrayForEach(y, log) if (num(y, "started_ms") <= t && num(y, "finished_ms") > t) n++;
        if (n > most) most = n;
    }
    cJSON_Delete(log);
    assert_int_equal(most, 2);
}

static void item_failure_each_way(void **state)
{
    (void)state;
    struct h_resp r;
    get("/if/fail", &r);
    assert_int_equal(r.status, 502);
    assert_string_equal(h_json_str(r.json, "backend"), "items");
    assert_non_null(strstr(h_json_str(r.json, "error"), "item 1 failed"));
    h_resp_free(&r);

    get("/if/null", &r);
    assert_int_equal(r.status, 200);
    char *s = cJSON_PrintUnformatted(cJSON_GetObjectItem(r.json, "items"));
    assert_string_equal(s, "[{\"error\":\"fail\"},null,{\"error\":\"fail\"},null]");
    free(s);
    h_resp_free(&r);

    get("/if/omit", &r);
    assert_int_equal(r.status, 200);
    s = cJSON_PrintUnformatted(cJSON_GetObjectItem(r.json, "items"));
    assert_string_equal(s, "[{\"error\":\"fail\"},{\"error\":\"fail\"}]");
    free(s);
    h_resp_free(&r);
}

/* item_failure "fail": the first failed item fails the backend at once;
 * the item still in flight is cancelled, not waited for. */
static void failed_item_cancels_its_siblings(void **state)
{
    (void)state;
    struct h_resp r;
    get("/if/fast", &r);
    assert_int_equal(r.status, 502);
    assert_non_null(strstr(h_json_str(r.json, "error"), "item 1 failed: missing field item.ms"));
    if (r.total_ms >= 2500) fprintf(stderr, "502 after %.0f ms\n", r.total_ms);
    assert_true(r.total_ms < 2500); /* not the 4 s of item 0 */
    h_resp_free(&r);
    /* item 0 was cancelled in flight (the mock saw the hang-up) or before
     * it was sent (the mock never saw it) */
    cJSON *e = h_wait_log(&env.mock, "/slow/4000/fast-a", h_pred_hung_up, NULL, 3000);
    if (!e) assert_int_equal(h_mock_count(&env.mock, "/slow/4000/fast-a"), 0);
    cJSON_Delete(e);
}

static void max_items_and_empty(void **state)
{
    (void)state;
    struct h_resp r;
    get("/max", &r);
    assert_int_equal(r.status, 502);
    assert_non_null(strstr(h_json_str(r.json, "error"), "too many items"));
    h_resp_free(&r);
    get("/empty-each", &r);
    assert_int_equal(r.status, 200);
    const cJSON *items = cJSON_GetObjectItem(r.json, "items");
    assert_true(cJSON_IsArray(items));
    assert_int_equal(cJSON_GetArraySize(items), 0);
    assert_null(cJSON_GetObjectItem(r.json, "bad")); /* {"l":[]} is not an array: omitted */
    h_resp_free(&r);
    assert_int_equal(h_mock_count(&env.mock, "/b/"), 0);
}

static void deadline_mid_chain_gives_504(void **state)
{
    (void)state;
    struct h_resp r;
    get("/dl", &r);
    assert_int_equal(r.status, 504);
    assert_string_equal(h_json_str(r.json, "backend"), "c");
    if (r.total_ms < 500 || r.total_ms > 3000) fprintf(stderr, "504 after %.0f ms\n", r.total_ms);
    assert_true(r.total_ms >= 500 && r.total_ms < 3000); /* the 600 ms deadline, not 4 s */
    h_resp_free(&r);
}

static bool started_not_finished(const cJSON *e, void *arg)
{
    (void)arg;
    return !cJSON_IsTrue(cJSON_GetObjectItem(e, "finished"));
}

static void hang_up_mid_chain_aborts_all(void **state)
{
    (void)state;
    int fd = h_connect(env.gw.port);
    assert_true(fd >= 0);
    static const char req[] = "GET /hang HTTP/1.1\r\nHost: gw\r\n\r\n";
    assert_int_equal(h_send_all(fd, req, sizeof req - 1), 0);
    cJSON *e = h_wait_log(&env.mock, "/slow/3000/hang-p", started_not_finished, NULL, 3000);
    assert_non_null(e);
    cJSON_Delete(e);
    e = h_wait_log(&env.mock, "/slow/3000/hang-s", started_not_finished, NULL, 3000);
    assert_non_null(e);
    cJSON_Delete(e);
    close(fd);
    e = h_wait_log(&env.mock, "/slow/3000/hang-p", h_pred_hung_up, NULL, 2500);
    assert_non_null(e);
    cJSON_Delete(e);
    e = h_wait_log(&env.mock, "/slow/3000/hang-s", h_pred_hung_up, NULL, 2500);
    assert_non_null(e);
    cJSON_Delete(e);
    /* one more request through the same (single) worker: by then a child
     * would have been started */
    struct h_resp r;
    get("/each", &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(h_mock_count(&env.mock, "/slow/10/hang-child"), 0);
}

static void conflict_error_names_member_and_backends(void **state)
{
    (void)state;
    struct h_resp r;
    get("/conflict/5", &r);
    assert_int_equal(r.status, 502);
    assert_string_equal(h_json_str(r.json, "error"), "conflicting member name from a and b");
    h_resp_free(&r);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
#define T(f) cmocka_unit_test_setup(f, reset_mock)
    const struct CMUnitTest tests[] = {
        T(child_starts_after_parent_sibling_at_once),
        T(failing_parent_fails_its_children),
        T(degraded_parent_feeds_its_child),
        T(foreach_keeps_input_order),
        T(concurrency_bounds_the_items),
        T(item_failure_each_way),
        T(failed_item_cancels_its_siblings),
        T(max_items_and_empty),
        T(deadline_mid_chain_gives_504),
        T(hang_up_mid_chain_aborts_all),
        T(conflict_error_names_member_and_backends),
    };
#undef T
    char *conf = make_conf();
    int rc = H_GROUP_RUN("integration/compose", tests, &env, conf);
    free(conf);
    return rc;
}
