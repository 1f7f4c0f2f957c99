/* Tests for gateway/config.c: the demo config, every validation error with
 * its JSON path, several errors at once, and every config shipped in conf/. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/config.h"
#include "gateway/expose.h"
#include "gateway/fwdhdr.h"

/* The repo root, from this file's path (CMake compiles it by absolute path). */
static const char *src_root(void)
{
    static char root[4096];
    snprintf(root, sizeof(root), "%s", __FILE__);
    for (int i = 0; i < 3; i++) {
        char *slash = strrchr(root, '/');
        if (!slash) return "."; /* compiled by relative path: run from the root */
        *slash = '\0';
    }
    return root[0] ? root : "/";
}

/* JSON in tests is written with ' for " to stay readable. */
static char *q(const char *s)
{
    char *out = strdup(s);
    for (char *c = out; *c; c++)
        if (*c == '\'') *c = '"';
    return out;
}

static struct config *parse_q(const char *json, struct config_errors *errs)
{
    char *j = q(json);
    struct config *cfg = config_parse(j, strlen(j), errs);
    free(j);
    return cfg;
}

static void dump(const struct config_errors *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        print_message("  | %s\n", errs->lines[i]);
}

/* Expects json to fail with exactly one line equal to line. */
static void expect_line(const char *json, const char *line)
{
    struct config_errors errs;
    struct config *cfg = parse_q(json, &errs);
    assert_null(cfg);
    if (errs.n != 1 || strcmp(errs.lines[0], line) != 0) {
        print_message("expected exactly: %s\ngot:\n", line);
        dump(&errs);
        fail();
    }
    config_errors_free(&errs);
}

/* Like expect_line for a text of len bytes, as is (no ' to " rewriting). */
static void expect_line_len(const char *json, size_t len, const char *line)
{
    struct config_errors errs;
    assert_null(config_parse(json, len, &errs));
    if (errs.n != 1 || strcmp(errs.lines[0], line) != 0) {
        print_message("expected exactly: %s\ngot:\n", line);
        dump(&errs);
        fail();
    }
    config_errors_free(&errs);
}

/* Expects json to fail with exactly one line, for path, containing text. */
static void expect_err(const char *json, const char *path, const char *text)
{
    struct config_errors errs;
    struct config *cfg = parse_q(json, &errs);
    assert_null(cfg);
    size_t plen = strlen(path);
    if (errs.n != 1 || strncmp(errs.lines[0], path, plen) != 0 ||
        strncmp(errs.lines[0] + plen, ": ", 2) != 0 || !strstr(errs.lines[0] + plen, text)) {
        print_message("expected one line \"%s: ...%s...\", got:\n", path, text);
        dump(&errs);
        fail();
    }
    config_errors_free(&errs);
}

static void expect_ok(const char *json)
{
    struct config_errors errs;
    struct config *cfg = parse_q(json, &errs);
    if (!cfg) {
        print_message("expected a valid config, got:\n");
        dump(&errs);
        fail();
    }
    assert_int_equal(errs.n, 0);
    config_free(cfg);
}

/* One endpoint "e" on GET /a/{id} with the given backends. */
#define EPS(backends) "'endpoints':[{'name':'e','path':'/a/{id}','backends':[" backends "]}]"
#define EP1(backends) "{" EPS(backends) "}"
#define BE            "{'name':'b','url':'http://h/x/{id}'}"
#define BE0           "{'name':'b','url':'http://h/'}" /* for paths without {id} */
/* A valid config with one more top-level member. */
#define WITH(member) "{" member "," EPS(BE) "}"
/* One endpoint with extra fields before "backends". */
#define EPF(fields) "{'endpoints':[{'name':'e','path':'/a/{id}'," fields ",'backends':[" BE "]}]}"
/* One backend with extra fields. */
#define BEF(fields) EP1("{'name':'b','url':'http://h/x/{id}'," fields "}")

/* The demo's upstream group (README "Upstream groups" walk-through): two
 * mock instances that tests/demo.sh starts, and the endpoints that use it. */
static void test_demo_group(const struct config *cfg)
{
    assert_int_equal(cfg->n_upstreams, 1);
    const struct ugroup_conf *g = &cfg->upstreams[0];
    assert_string_equal(g->name, "users");
    assert_int_equal(g->n_hosts, 2);
    assert_string_equal(g->hosts[0], "127.0.0.1:9001");
    assert_string_equal(g->hosts[1], "127.0.0.1:9002");
    assert_int_equal(g->balance, BALANCE_LEAST_INFLIGHT);
    assert_non_null(g->health.path);
    assert_string_equal(g->health.path, "/_healthz"); /* the mock answers it, unlogged */
    assert_int_equal(g->health.interval_ms, 500);
    assert_int_equal(g->breaker.consecutive_failures, 3);
    assert_int_equal(g->breaker.open_ms, 5000);

    const struct endpoint_conf *p = &cfg->endpoints[5];
    assert_string_equal(p->path, "/api/pool/{id}");
    assert_ptr_equal(p->backends[0].group, g);
    assert_int_equal(p->backends[0].fallback, FALLBACK_DEGRADED);
    assert_int_equal(p->backends[0].retry.retries, 1);
    assert_int_equal(p->backends[0].retry.hedge_after_ms, 0);

    const struct endpoint_conf *h = &cfg->endpoints[6];
    assert_string_equal(h->path, "/api/hedged/{id}");
    assert_ptr_equal(h->backends[0].group, g);
    assert_int_equal(h->backends[0].retry.hedge_after_ms, 50);
    assert_true(h->backends[0].retry.hedge_after_ms < h->backends[0].timeout_ms);
    /* plain origins stay plain */
    assert_null(cfg->endpoints[0].backends[0].group);
}

static void test_demo_config(void **state)
{
    (void)state;
    char path[4200];
    snprintf(path, sizeof(path), "%s/conf/gateway.json", src_root());
    struct config_errors errs;
    struct config *cfg = config_load(path, &errs);
    if (!cfg) dump(&errs);
    assert_non_null(cfg);
    assert_int_equal(errs.n, 0);

    assert_string_equal(cfg->server.listen, "0.0.0.0:8080");
    assert_string_equal(cfg->server.host, "0.0.0.0");
    assert_int_equal(cfg->server.family, AF_INET);
    assert_int_equal(cfg->server.port, 8080);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(cfg->server.workers, ncpu > 0 ? ncpu : 1);
    assert_int_equal(cfg->server.max_connections, 10000);
    assert_int_equal(cfg->server.connection_timeout_s, 30);
    assert_int_equal(cfg->server.max_request_body_bytes, 1048576);
    assert_int_equal(cfg->server.shutdown_timeout_ms, 10000);
    assert_int_equal(cfg->server.max_header_bytes, 16384);
    assert_int_equal(cfg->server.header_timeout_ms, 10000);
    assert_int_equal(cfg->server.drain_accept_ms, 500);
    assert_int_equal(cfg->defaults.timeout_ms, 1000);
    assert_int_equal(cfg->defaults.max_timeout_ms, 10000);
    assert_int_equal(cfg->defaults.backend_timeout_ms, 1000);
    assert_int_equal(cfg->defaults.max_response_bytes, 8388608);
    assert_int_equal(cfg->defaults.concurrency, 16);
    assert_int_equal(cfg->degraded.max_entries, 100000);
    assert_int_equal(cfg->degraded.max_stale_s, 3600);
    assert_null(cfg->degraded.snapshot_path);
    assert_int_equal(cfg->degraded.snapshot_interval_s, 30);
    assert_string_equal(cfg->access_log_path, "-");

    assert_int_equal(cfg->n_endpoints, 7);
    const struct endpoint_conf *d = &cfg->endpoints[0];
    assert_string_equal(d->name, "dashboard");
    assert_string_equal(d->method, "GET");
    assert_string_equal(d->path, "/api/dashboard/{id}");
    assert_int_equal(d->n_segs, 3);
    assert_string_equal(d->segs[0].literal, "api");
    assert_int_equal(d->segs[0].literal_len, 3);
    assert_string_equal(d->segs[1].literal, "dashboard");
    assert_null(d->segs[2].literal);
    assert_int_equal(d->segs[2].param, 0);
    assert_int_equal(d->n_params, 1);
    assert_string_equal(d->params[0], "id");
    assert_int_equal(d->timeout_ms, 800);
    assert_int_equal(d->concurrency, 16);
    assert_int_equal(d->n_forward_headers, 2);
    assert_string_equal(d->forward_headers[0], "Authorization");
    assert_string_equal(d->forward_headers[1], "Accept-Language");
    assert_int_equal(d->n_forward_query, 1);
    assert_string_equal(d->forward_query[0], "lang");
    assert_int_equal(d->n_backends, 3);

    const struct backend_conf *u = &d->backends[0];
    assert_string_equal(u->name, "user");
    assert_string_equal(u->url, "http://127.0.0.1:9001/users/{id}");
    assert_int_equal(u->n_parts, 2);
    assert_int_equal(u->parts[0].literal_len, strlen("http://127.0.0.1:9001/users/"));
    assert_memory_equal(u->parts[0].literal, "http://127.0.0.1:9001/users/",
                        u->parts[0].literal_len);
    assert_null(u->parts[1].literal);
    assert_int_equal(u->parts[1].param, 0);
    assert_string_equal(u->method, "GET");
    assert_int_equal(u->timeout_ms, 300);
    assert_string_equal(u->key, "user");
    assert_true(u->required);
    assert_int_equal(u->fallback, FALLBACK_DEGRADED);
    assert_null(u->static_json);
    assert_null(u->allow);
    assert_false(u->forward_body);
    assert_int_equal(u->max_response_bytes, 8388608);

    const struct backend_conf *o = &d->backends[1];
    assert_string_equal(o->key, "orders");
    assert_int_equal(o->timeout_ms, 1000); /* defaults.backend_timeout_ms */
    assert_true(o->required);
    assert_int_equal(o->fallback, FALLBACK_NONE);

    const struct backend_conf *r = &d->backends[2];
    assert_false(r->required);
    assert_int_equal(r->fallback, FALLBACK_STATIC);
    assert_string_equal(r->static_json, "{\"items\":[]}");
    assert_int_equal(r->static_len, strlen("{\"items\":[]}"));
    assert_int_equal(r->n_allow, 1);
    assert_string_equal(r->allow[0], "items");

    const struct endpoint_conf *us = &cfg->endpoints[1];
    assert_string_equal(us->name, "user");
    assert_int_equal(us->timeout_ms, 1000); /* defaults.timeout_ms */
    assert_null(us->backends[0].key);
    assert_int_equal(us->n_forward_headers, 0);

    const struct endpoint_conf *s = &cfg->endpoints[2];
    assert_string_equal(s->name, "slow-dashboard");
    assert_int_equal(s->timeout_ms, 500);
    assert_int_equal(s->backends[1].timeout_ms, 3000);

    const struct endpoint_conf *oe = &cfg->endpoints[4]; /* the composition demo */
    assert_string_equal(oe->path, "/api/orders/{id}");
    assert_true(oe->graph);
    assert_int_equal(oe->backends[1].n_deps, 1);
    assert_int_equal(oe->backends[2].foreach_backend, 1);
    assert_string_equal(oe->backends[2].foreach_path, "orders");
    assert_non_null(oe->backends[2].shape);
    const struct endpoint_conf *f = &cfg->endpoints[3];
    assert_string_equal(f->name, "flaky");
    assert_false(f->backends[1].required);
    assert_int_equal(f->backends[1].n_parts, 1); /* no placeholder: one literal */
    test_demo_group(cfg);
    config_free(cfg);
}

static void test_defaults_and_parsed_forms(void **state)
{
    (void)state;
    struct config_errors errs;
    struct config *cfg =
        parse_q("{'server':{'listen':'[::1]:9090','workers':3},'defaults':{'timeout_ms':50,"
                "'backend_timeout_ms':40,'concurrency':2,'max_response_bytes':100},"
                "'degraded':{'snapshot_path':'/tmp/snap'},'access_log':{'path':'off'},"
                "'endpoints':[{'name':'e','method':'POST','path':'/u/{uid}/o/{oid}','timeout_ms':"
                "99999,'backends':[{'name':'b','method':'PUT','forward_body':true,"
                "'url':'https://h:8443/o/{oid}?u={uid}&x=1','static':null,'fallback':'static'}]},"
                "{'name':'root','path':'/','backends':[{'name':'b','url':'http://[::1]:1/'}]}]}",
                &errs);
    if (!cfg) dump(&errs);
    assert_non_null(cfg);
    assert_string_equal(cfg->server.host, "::1");
    assert_int_equal(cfg->server.family, AF_INET6);
    assert_int_equal(cfg->server.port, 9090);
    assert_int_equal(cfg->server.workers, 3);
    assert_int_equal(cfg->server.max_connections, 10000);
    assert_string_equal(cfg->degraded.snapshot_path, "/tmp/snap");
    assert_int_equal(cfg->degraded.max_entries, 100000);
    assert_string_equal(cfg->access_log_path, "off");

    const struct endpoint_conf *e = &cfg->endpoints[0];
    assert_int_equal(e->timeout_ms, 99999); /* above max_timeout_ms: valid, clamped later */
    assert_int_equal(e->concurrency, 2);
    assert_int_equal(e->n_params, 2);
    assert_string_equal(e->params[1], "oid");
    assert_int_equal(e->segs[3].param, 1);
    const struct backend_conf *b = &e->backends[0];
    assert_int_equal(b->timeout_ms, 40);
    assert_int_equal(b->max_response_bytes, 100);
    assert_true(b->forward_body);
    assert_string_equal(b->method, "PUT");
    assert_string_equal(b->static_json, "null");
    /* "https://h:8443/o/" {oid} "?u=" {uid} "&x=1" */
    assert_int_equal(b->n_parts, 5);
    assert_memory_equal(b->parts[0].literal, "https://h:8443/o/", b->parts[0].literal_len);
    assert_int_equal(b->parts[1].param, 1);
    assert_memory_equal(b->parts[2].literal, "?u=", 3);
    assert_int_equal(b->parts[2].literal_len, 3);
    assert_int_equal(b->parts[3].param, 0);
    assert_memory_equal(b->parts[4].literal, "&x=1", 4);
    assert_int_equal(b->parts[4].literal_len, 4);

    assert_int_equal(cfg->endpoints[1].n_segs, 0);
    assert_string_equal(cfg->endpoints[1].method, "GET");
    config_free(cfg);

    cfg = parse_q(WITH("'server':{'listen':'localhost:81'}"), &errs);
    assert_non_null(cfg);
    assert_string_equal(cfg->server.host, "127.0.0.1");
    config_free(cfg);
}

static void test_syntax_and_file_errors(void **state)
{
    (void)state;
    expect_line("{'endpoints': [\n  {'name': 'e',,}]}",
                "<input>: invalid JSON near line 2, column 17 (byte 32)");
    expect_err("{'endpoints': []} x", "<input>", "invalid JSON near line 1");
    expect_err("", "<input>", "invalid JSON");
    expect_line("[1]", "<input>: expected a JSON object at the top level, got an array");

    struct config_errors errs;
    assert_null(config_load("/nonexistent/gw.json", &errs));
    assert_int_equal(errs.n, 1);
    assert_string_equal(errs.lines[0], "/nonexistent/gw.json: No such file or directory");
    config_errors_free(&errs);

    char tmpl[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{\n\"endpoints\": x}", 17), 17);
    close(fd);
    assert_null(config_load(tmpl, &errs));
    assert_int_equal(errs.n, 1);
    char want[200];
    snprintf(want, sizeof(want), "%s: invalid JSON near line 2, column 14 (byte 15)", tmpl);
    assert_string_equal(errs.lines[0], want);
    config_errors_free(&errs);
    unlink(tmpl);

    /* errs may be NULL */
    assert_null(config_parse("{", 1, NULL));
}

static void test_structure_errors(void **state)
{
    (void)state;
    expect_err("{}", "endpoints", "is required");
    expect_line("{'endpoints':[]}", "endpoints: must not be empty");
    expect_line("{'endpoints':{}}", "endpoints: expected an array of endpoints, got an object");
    expect_line("{'endpoints':[3]}", "endpoints[0]: expected an object, got a number");
    expect_err("{'endpoints':[{'name':'e','path':'/a'}]}", "endpoints[0].backends", "is required");
    expect_err("{'endpoints':[{'name':'e','path':'/a','backends':[]}]}", "endpoints[0].backends",
               "must not be empty");
    expect_err("{'endpoints':[{'path':'/a','backends':[" BE0 "]}]}", "endpoints[0].name",
               "is required");
    expect_err("{'endpoints':[{'name':'e','backends':[" BE "]}]}", "endpoints[0].path",
               "is required");
    expect_err(EP1("{'url':'http://h/'}"), "endpoints[0].backends[0].name", "is required");
    expect_err(EP1("{'name':'b'}"), "endpoints[0].backends[0].url", "is required");
    expect_err(EP1("'x'"), "endpoints[0].backends[0]", "expected an object, got a string");
    expect_err(EPF("'name':'f'"), "endpoints[0].name", "duplicate key");
    expect_err(WITH("'server':[]"), "server", "expected an object, got an array");
}

static void test_unknown_keys(void **state)
{
    (void)state;
    expect_err(WITH("'extra':1"), "extra",
               "unknown key (expected one of: server, defaults, degraded, access_log, endpoints, auth, "
               "tracing, upstream, upstreams)");
    expect_err(WITH("'server':{'lisen':'0.0.0.0:1'}"), "server.lisen",
               "unknown key (expected one of: listen, workers,");
    expect_err(WITH("'defaults':{'timeout':1}"), "defaults.timeout", "unknown key");
    expect_err(WITH("'degraded':{'max':1}"), "degraded.max", "unknown key");
    expect_err(WITH("'access_log':{'file':'x'}"), "access_log.file", "unknown key");
    expect_err(EPF("'timeout':1"), "endpoints[0].timeout", "unknown key");
    expect_err(BEF("'Key':'k'"), "endpoints[0].backends[0].Key", "unknown key");

    /* a key too long for a path buffer: the path is cut, marked, still one line */
    char json[2000], key[1001];
    memset(key, 'k', 1000);
    key[1000] = '\0';
    snprintf(json, sizeof(json), WITH("'server':{'%s':1}"), key);
    struct config_errors errs;
    assert_null(parse_q(json, &errs));
    assert_int_equal(errs.n, 1);
    assert_true(strncmp(errs.lines[0], "server.kkk", 10) == 0);
    assert_non_null(strstr(errs.lines[0], "k...: unknown key"));
    config_errors_free(&errs);
}

static void test_types_and_ranges(void **state)
{
    (void)state;
    expect_line(WITH("'server':{'workers':'4'}"),
                "server.workers: expected an integer, got a string");
    expect_line(WITH("'server':{'workers':1.5}"), "server.workers: must be an integer, got 1.5");
    expect_line(WITH("'server':{'workers':-1}"),
                "server.workers: must be between 0 and 1024, got -1");
    expect_err(WITH("'server':{'max_connections':0}"), "server.max_connections",
               "must be >= 1, got 0");
    expect_line(WITH("'server':{'max_header_bytes':1023}"),
                "server.max_header_bytes: must be between 1024 and 1048576, got 1023");
    expect_err(WITH("'server':{'max_header_bytes':1048577}"), "server.max_header_bytes",
               "between 1024 and 1048576");
    expect_err(WITH("'server':{'max_header_bytes':'16k'}"), "server.max_header_bytes",
               "expected an integer, got a string");
    expect_line(WITH("'server':{'header_timeout_ms':99}"),
                "server.header_timeout_ms: must be between 100 and 3600000, got 99");
    expect_err(WITH("'server':{'header_timeout_ms':3600001}"), "server.header_timeout_ms",
               "between 100 and 3600000");
    expect_line(WITH("'server':{'drain_accept_ms':-1}"),
                "server.drain_accept_ms: must be between 0 and 60000, got -1");
    expect_err(WITH("'server':{'drain_accept_ms':60001}"), "server.drain_accept_ms",
               "between 0 and 60000");
    expect_ok(WITH("'server':{'max_header_bytes':1024,'header_timeout_ms':100,"
                   "'drain_accept_ms':0}"));
    expect_err(WITH("'server':{'listen':8080}"), "server.listen",
               "expected a string, got a number");
    expect_err(WITH("'defaults':{'timeout_ms':0}"), "defaults.timeout_ms", ">= 1");
    expect_err(WITH("'defaults':{'max_timeout_ms':null}"), "defaults.max_timeout_ms",
               "expected an integer, got null");
    expect_err(WITH("'defaults':{'concurrency':0}"), "defaults.concurrency", "between 1 and 65535");
    expect_err(WITH("'defaults':{'max_response_bytes':1e300}"), "defaults.max_response_bytes",
               ">= 1");
    expect_err(WITH("'degraded':{'snapshot_interval_s':0}"), "degraded.snapshot_interval_s",
               ">= 1");
    expect_err(WITH("'degraded':{'snapshot_path':''}"), "degraded.snapshot_path",
               "must not be empty");
    expect_err(WITH("'access_log':{'path':true}"), "access_log.path",
               "expected a string, got a boolean");
    expect_err(EPF("'timeout_ms':0"), "endpoints[0].timeout_ms", ">= 1");
    expect_err(EPF("'concurrency':0"), "endpoints[0].concurrency", "between 1 and 65535");
    expect_err(BEF("'timeout_ms':'1'"), "endpoints[0].backends[0].timeout_ms",
               "expected an integer");
    expect_err(BEF("'required':'yes'"), "endpoints[0].backends[0].required",
               "expected a boolean, got a string");
    expect_err(BEF("'key':''"), "endpoints[0].backends[0].key", "must not be empty");
    expect_err(BEF("'key':1"), "endpoints[0].backends[0].key", "expected a string");
    expect_ok(BEF("'key':null,'allow':null,'fallback':null"));
    expect_err(BEF("'allow':'items'"), "endpoints[0].backends[0].allow",
               "expected an array of strings, got a string");
    expect_err(BEF("'allow':['a',2]"), "endpoints[0].backends[0].allow[1]",
               "expected a string, got a number");
    expect_err("{'endpoints':[{'name':'a b','path':'/a','backends':[" BE0 "]}]}",
               "endpoints[0].name", "not a valid name");
}

static void test_listen(void **state)
{
    (void)state;
    expect_line(WITH("'server':{'listen':'example.com:80'}"),
                "server.listen: \"example.com:80\" is not a numeric address and port (expected "
                "\"a.b.c.d:port\" or \"[v6]:port\")");
    expect_err(WITH("'server':{'listen':'8080'}"), "server.listen", "not a numeric");
    expect_err(WITH("'server':{'listen':'::1:80'}"), "server.listen", "not a numeric");
    expect_err(WITH("'server':{'listen':'[::1:80'}"), "server.listen", "not a numeric");
    expect_err(WITH("'server':{'listen':'1.2.3.4:0'}"), "server.listen",
               "port must be an integer between 1 and 65535");
    expect_err(WITH("'server':{'listen':'1.2.3.4:65536'}"), "server.listen", "port");
    expect_err(WITH("'server':{'listen':'1.2.3.4:'}"), "server.listen", "port");
    expect_err(WITH("'server':{'listen':'1.2.3.4:8x'}"), "server.listen", "port");
    expect_ok(WITH("'server':{'listen':'[::]:65535'}"));
}

static void test_methods_and_paths(void **state)
{
    (void)state;
    expect_line("{'endpoints':[{'name':'e','method':'get','path':'/a','backends':[" BE0 "]}]}",
                "endpoints[0].method: unsupported method \"get\" (expected one of: GET, POST, "
                "PUT, PATCH, DELETE, HEAD, OPTIONS)");
    expect_err(BEF("'method':'FETCH'"), "endpoints[0].backends[0].method", "unsupported method");
#define P(path)                                                                                    \
    "{'endpoints':[{'name':'e','path':'" path "','backends':[{'name':'b','url':'http://h/'}]}]}"
    expect_line(P("a/b"), "endpoints[0].path: must start with '/', got \"a/b\"");
    expect_err(P("/a//b"), "endpoints[0].path", "empty segment");
    expect_err(P("/a/"), "endpoints[0].path", "empty segment");
    expect_err(P(""), "endpoints[0].path", "must not be empty");
    expect_err(P("/a/x{id}"), "endpoints[0].path", "must be a whole segment");
    expect_err(P("/a/{id}x"), "endpoints[0].path", "must be a whole segment");
    expect_err(P("/a/{1d}"), "endpoints[0].path", "bad parameter \"{1d}\"");
    expect_err(P("/a/{}"), "endpoints[0].path", "bad parameter");
    expect_err(P("/a/{i-d}"), "endpoints[0].path", "bad parameter");
    expect_line(P("/a/{id}/b/{id}"),
                "endpoints[0].path: duplicate parameter {id} in \"/a/{id}/b/{id}\"");
    expect_err(P("/a b"), "endpoints[0].path", "not allowed");
    expect_err(P("/a?x=1"), "endpoints[0].path", "'?'");
    expect_err(P("/a%2Fb"), "endpoints[0].path", "'%'");
    expect_line(P("/healthz"), "endpoints[0].path: /healthz is a built-in path");
    expect_err(P("/readyz"), "endpoints[0].path", "built-in");
    expect_err(P("/metrics"), "endpoints[0].path", "built-in");
    expect_ok(P("/metrics/x"));
    expect_ok(P("/"));
    expect_ok(P("/v1/a-b_c.d~e:f@g/{_x1}"));
#undef P
}

/* n copies of c, NUL-terminated, in a static buffer (one at a time). */
static const char *rep(char c, size_t n)
{
    static char b[4096];
    assert_true(n < sizeof b);
    memset(b, c, n);
    b[n] = '\0';
    return b;
}

/* The limits the code has, each a --check error with its JSON path and its
 * number, one past the largest value that works. */
static void test_limits(void **state)
{
    (void)state;
    char *j = malloc(16384);
    assert_non_null(j);
    /* forward_headers: FWD_MAX names (what one call carries) */
    char names[1024] = "";
    for (int i = 0; i < FWD_MAX; i++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s'X-H%d'", i ? "," : "", i);
    snprintf(j, 16384, EPF("'forward_headers':[%s]"), names);
    expect_ok(j);
    snprintf(j, 16384, EPF("'forward_headers':[%s,'X-One-More']"), names);
    expect_line(j, "endpoints[0].forward_headers: at most 32 header names, got 33");
    /* the origin: UPSTREAM_ORIGIN_MAX bytes ("http://" + host) */
    snprintf(j, 16384, EP1("{'name':'b','url':'http://%s/x/{id}'}"), rep('h', 248));
    expect_ok(j);
    snprintf(j, 16384, EP1("{'name':'b','url':'http://%s/x/{id}'}"), rep('h', 249));
    expect_line(j, "endpoints[0].backends[0].url: the origin (scheme://host:port) is 256 bytes, at "
                   "most 255");
    snprintf(j, 16384, EP1("{'name':'b','url':'http://%s:65535/x'}"), rep('h', 243));
    expect_line(j, "endpoints[0].backends[0].url: the origin (scheme://host:port) is 256 bytes, at "
                   "most 255");
    /* the path: under URLBUILD_PATH_MAX bytes with the placeholders empty;
     * the query is not counted */
    snprintf(j, 16384, EP1("{'name':'b','url':'http://h/%s/{id}?q=%s'}"), rep('p', 2045),
             "long-query-not-counted");
    expect_ok(j);
    snprintf(j, 16384, EP1("{'name':'b','url':'http://h/%s{id}'}"), rep('p', 2047));
    expect_line(j, "endpoints[0].backends[0].url: the path is 2048 bytes without its placeholders, "
                   "at most 2047");
    /* a group host: "https://" + it must fit the origin */
    snprintf(j, 16384, "{'upstreams':{'g':{'hosts':['%s:9001']}}," EPS(BE) "}", rep('g', 242));
    expect_ok(j);
    snprintf(j, 16384, "{'upstreams':{'g':{'hosts':['%s:9001']}}," EPS(BE) "}", rep('g', 243));
    expect_line(j, "upstreams.g.hosts[0]: is 248 bytes, at most 247");
    free(j);
}

static void test_urls(void **state)
{
    (void)state;
    /* the exact line from DESIGN.md / the issue */
    expect_line("{'endpoints':[{'name':'a','path':'/api/a/{id}','backends':[" BE "]},"
                "{'name':'x','path':'/api/x/{id}','backends':["
                "{'name':'b','url':'http://h/u/{uid}'}]}]}",
                "endpoints[1].backends[0].url: {uid} is not a parameter of /api/x/{id}");
#define U(url) EP1("{'name':'b','url':'" url "'}")
    expect_err(U("ftp://h/x"), "endpoints[0].backends[0].url",
               "must start with http:// or https://");
    expect_err(U("h/x"), "endpoints[0].backends[0].url", "must start with http://");
    expect_err(U("http://h"), "endpoints[0].backends[0].url", "needs a path starting with '/'");
    expect_err(U("http://h?x=1"), "endpoints[0].backends[0].url", "needs a path");
    expect_err(U("http:///x"), "endpoints[0].backends[0].url", "bad host or port");
    expect_err(U("http://h:0/x"), "endpoints[0].backends[0].url", "bad host or port");
    expect_err(U("http://h:99999/x"), "endpoints[0].backends[0].url", "bad host or port");
    expect_err(U("http://u@h/x"), "endpoints[0].backends[0].url", "bad host or port");
    expect_err(U("http://{id}/x"), "endpoints[0].backends[0].url",
               "placeholders are only allowed in the path and query");
    expect_err(U("http://h/x y"), "endpoints[0].backends[0].url", "whitespace");
    expect_err(U("http://h/x\\t"), "endpoints[0].backends[0].url", "whitespace");
    expect_err(U("http://h/x#f"), "endpoints[0].backends[0].url", "fragment");
    expect_err(U("http://h/x/{id"), "endpoints[0].backends[0].url", "unbalanced '{'");
    expect_err(U("http://h/x/{a{id}"), "endpoints[0].backends[0].url", "unbalanced '{'");
    expect_err(U("http://h/x/id}"), "endpoints[0].backends[0].url", "unbalanced '}'");
    expect_err(U("http://h/x/{}"), "endpoints[0].backends[0].url", "bad placeholder {}");
    expect_line(U("http://h/x?q={nope}"),
                "endpoints[0].backends[0].url: {nope} is not a parameter of /a/{id}");
    expect_ok(U("https://h.example-1.org:8443/x/{id}?a={id}&b=c"));
    expect_ok(U("http://[fe80::1]:80/x/{id}{id}"));
#undef U
}

static void test_fallback_and_body(void **state)
{
    (void)state;
    expect_line(BEF("'fallback':'cache'"),
                "endpoints[0].backends[0].fallback: must be \"degraded\" or \"static\", got "
                "\"cache\"");
    expect_err(BEF("'fallback':1"), "endpoints[0].backends[0].fallback", "got a number");
    expect_line(BEF("'fallback':'static'"),
                "endpoints[0].backends[0].static: is required when fallback is \"static\"");
    expect_err(BEF("'static':{}"), "endpoints[0].backends[0].static",
               "only used with \"fallback\": \"static\"");
    expect_err(BEF("'fallback':'degraded','static':[]"), "endpoints[0].backends[0].static",
               "only used with");
    expect_ok(BEF("'fallback':'static','static':[1,{'a':'b'}]"));
    expect_ok(BEF("'fallback':'degraded','required':false"));

    expect_line(BEF("'forward_body':true"),
                "endpoints[0].backends[0].forward_body: endpoint method GET has no body to "
                "forward (only POST, PUT and PATCH do)");
    expect_err(BEF("'forward_body':1"), "endpoints[0].backends[0].forward_body",
               "expected a boolean");
    expect_err("{'endpoints':[{'name':'e','method':'PATCH','path':'/a','backends':["
               "{'name':'b','url':'http://h/','forward_body':true}]}]}",
               "endpoints[0].backends[0].forward_body", "backend method GET cannot carry a body");
    expect_ok("{'endpoints':[{'name':'e','method':'POST','path':'/a','backends':["
              "{'name':'b','method':'POST','url':'http://h/','forward_body':true}]}]}");
}

static void test_cache(void **state)
{
    (void)state;
    expect_line(BEF("'cache':{'ttl_ms':-1}"),
                "endpoints[0].backends[0].cache.ttl_ms: must be between 0 and 86400000, got -1");
    expect_line(BEF("'cache':{'ttl_ms':86400001}"),
                "endpoints[0].backends[0].cache.ttl_ms: must be between 0 and 86400000, got "
                "86400001");
    expect_err(BEF("'cache':{'ttl_ms':1.5}"), "endpoints[0].backends[0].cache.ttl_ms",
               "must be an integer");
    expect_err(BEF("'cache':{'honor_headers':'yes'}"),
               "endpoints[0].backends[0].cache.honor_headers", "expected a boolean");
    expect_err(BEF("'cache':{'coalesce':1}"), "endpoints[0].backends[0].cache.coalesce",
               "expected a boolean");
    expect_err(BEF("'cache':{'ttl':5}"), "endpoints[0].backends[0].cache.ttl", "unknown key");
    expect_err(BEF("'cache':5000"), "endpoints[0].backends[0].cache", "expected an object");
    expect_line(BEF("'method':'POST','cache':{'ttl_ms':5}"),
                "endpoints[0].backends[0].cache: only GET and HEAD backends can be cached, not "
                "POST");
    expect_ok(BEF("'method':'HEAD','cache':{'ttl_ms':5}"));
    expect_ok(BEF("'cache':{}"));

    struct config_errors errs;
    struct config *cfg =
        parse_q(BEF("'cache':{'ttl_ms':86400000,'honor_headers':true,'coalesce':true}"), &errs);
    assert_non_null(cfg);
    const struct cache_conf *c = &cfg->endpoints[0].backends[0].cache;
    assert_true(c->enabled && c->honor_headers && c->coalesce);
    assert_int_equal(c->ttl_ms, 86400000);
    config_free(cfg);
    cfg = parse_q(BEF("'key':'k'"), &errs);
    assert_non_null(cfg);
    assert_false(cfg->endpoints[0].backends[0].cache.enabled);
    config_free(cfg);
}

static void test_forwarding_lists(void **state)
{
    (void)state;
    expect_line(EPF("'forward_headers':['Accept','X Bad']"),
                "endpoints[0].forward_headers[1]: \"X Bad\" is not a valid header name");
    expect_err(EPF("'forward_headers':['A:b']"), "endpoints[0].forward_headers[0]",
               "not a valid header name");
    expect_err(EPF("'forward_headers':['']"), "endpoints[0].forward_headers[0]",
               "must not be empty");
    expect_err(EPF("'forward_headers':['Accept','accept']"), "endpoints[0].forward_headers[1]",
               "duplicate header name");
    expect_err(EPF("'forward_headers':'Accept'"), "endpoints[0].forward_headers",
               "expected an array of strings");
    /* at most FWD_MAX (32): what one backend call carries */
    char many[2048] = "'forward_headers':[";
    for (int i = 0; i <= FWD_MAX; i++) {
        char h[16];
        snprintf(h, sizeof h, "%s'H%d'", i ? "," : "", i);
        strcat(many, h);
        if (i == FWD_MAX - 1) {
            char ok[2200];
            snprintf(ok, sizeof ok, EPF("%s]"), many);
            expect_ok(ok);
        }
    }
    strcat(many, "]");
    char over[2200];
    snprintf(over, sizeof over, EPF("%s"), many);
    expect_line(over, "endpoints[0].forward_headers: at most 32 header names, got 33");
    expect_err(EPF("'forward_query':['']"), "endpoints[0].forward_query[0]", "must not be empty");
    expect_err(EPF("'forward_query':['a','a']"), "endpoints[0].forward_query[1]", "duplicate");
    expect_err(EPF("'forward_query':['a=b']"), "endpoints[0].forward_query[0]", "not a valid");
    expect_err(EPF("'forward_query':[null]"), "endpoints[0].forward_query[0]",
               "expected a string, got null");
}

/* "auth", "tracing" and endpoint "auth" (config_edge.c). */
static void test_auth_and_tracing(void **state)
{
    (void)state;
    struct config_errors errs;
    struct config *cfg = parse_q(
        "{'auth':{'jwks_path':'/k.json','issuer':'https://idp','audience':['a','b'],"
        "'algorithms':['ES256'],'leeway_s':5,'claims_to_headers':{'sub':'X-User-Id','tid':'X-T'}},"
        "'tracing':{'otlp_endpoint':'http://127.0.0.1:4318/v1/traces','sample_ratio':0.25},"
        "'endpoints':[{'name':'e','path':'/a/{id}','auth':'required','backends':[" BE "]},"
        "{'name':'f','path':'/b','auth':'optional','backends':[" BE0 "]},"
        "{'name':'g','path':'/c','backends':[" BE0 "]}]}",
        &errs);
    if (!cfg) dump(&errs);
    assert_non_null(cfg);
    assert_true(cfg->auth.enabled);
    assert_string_equal(cfg->auth.jwks_path, "/k.json");
    assert_string_equal(cfg->auth.issuer, "https://idp");
    assert_int_equal(cfg->auth.n_audience, 2);
    assert_int_equal(cfg->auth.algorithms, AUTH_ALG_ES256);
    assert_int_equal(cfg->auth.leeway_s, 5);
    assert_int_equal(cfg->auth.n_claims, 2);
    assert_string_equal(cfg->auth.claims[0].claim, "sub");
    assert_string_equal(cfg->auth.claims[0].header, "X-User-Id");
    assert_true(cfg->tracing.enabled);
    assert_string_equal(cfg->tracing.service_name, "gateway");
    assert_true(cfg->tracing.sample_ratio == 0.25);
    assert_int_equal(cfg->endpoints[0].auth, AUTH_REQUIRED);
    assert_int_equal(cfg->endpoints[1].auth, AUTH_OPTIONAL);
    assert_int_equal(cfg->endpoints[2].auth, AUTH_NONE);
    config_free(cfg);

    cfg = parse_q(EP1(BE), &errs); /* defaults: both off */
    assert_non_null(cfg);
    assert_false(cfg->auth.enabled);
    assert_false(cfg->tracing.enabled);
    config_free(cfg);
    expect_ok(WITH("'auth':{'jwks_path':'k'}"));

    expect_err(WITH("'auth':{}"), "auth.jwks_path", "is required");
    expect_err(WITH("'auth':{'jwks_path':'k','algorithms':['HS256']}"), "auth.algorithms",
               "unsupported algorithm \"HS256\"");
    expect_err(WITH("'auth':{'jwks_path':'k','algorithms':[]}"), "auth.algorithms",
               "must not be empty");
    expect_err(WITH("'auth':{'jwks_path':'k','leeway_s':-1}"), "auth.leeway_s", "");
    expect_err(WITH("'auth':{'jwks_path':'k','audience':'a'}"), "auth.audience",
               "expected an array of strings");
    expect_err(WITH("'auth':{'jwks_path':'k','claims_to_headers':{'sub':'X Bad'}}"),
               "auth.claims_to_headers.sub", "not a valid header name");
    expect_err(WITH("'auth':{'jwks_path':'k','claims_to_headers':{'sub':'traceparent'}}"),
               "auth.claims_to_headers.sub", "set by the gateway itself");
    expect_err(WITH("'auth':{'jwks_path':'k','claims_to_headers':{'sub':'X-U','oid':'x-u'}}"),
               "auth.claims_to_headers.oid", "duplicate");
    expect_err(WITH("'auth':{'jwks_path':'k','claims_to_headers':['sub']}"),
               "auth.claims_to_headers", "expected an object");
    expect_err(WITH("'auth':{'jwks_path':'k','bogus':1}"), "auth.bogus", "unknown");
    expect_err(EPF("'auth':'required'"), "endpoints[0].auth", "needs a top-level");
    expect_err("{'auth':{'jwks_path':'k'},'endpoints':[{'name':'e','path':'/a/{id}','auth':"
               "'always','backends':[" BE "]}]}",
               "endpoints[0].auth", "expected \"required\", \"optional\" or null");

    expect_err(WITH("'tracing':{}"), "tracing.otlp_endpoint", "is required");
    expect_err(WITH("'tracing':{'otlp_endpoint':'grpc://c:4317'}"), "tracing.otlp_endpoint",
               "must be an http:// or https:// URL");
    expect_err(WITH("'tracing':{'otlp_endpoint':'http://c/v1/traces','sample_ratio':1.5}"),
               "tracing.sample_ratio", "from 0 to 1");
    expect_err(WITH("'tracing':{'otlp_endpoint':'http://c/v1/traces','sample_ratio':'all'}"),
               "tracing.sample_ratio", "from 0 to 1");
    expect_err(WITH("'tracing':{'otlp_endpoint':'http://c/v1/traces','service_name':''}"),
               "tracing.service_name", "must not be empty");
}

static void test_duplicates(void **state)
{
    (void)state;
    expect_line(EP1(BE "," BE), "endpoints[0].backends[1].name: duplicate backend name \"b\" (also "
                                "endpoints[0].backends[0])");
    expect_line(EP1("{'name':'a','url':'http://h/','key':'k'},{'name':'b','url':'http://h/',"
                    "'key':'k'}"),
                "endpoints[0].backends[1].key: key \"k\" is already used by "
                "endpoints[0].backends[0]");
    expect_line("{'endpoints':[{'name':'e','path':'/a','backends':[" BE0 "]},"
                "{'name':'e','path':'/b','backends':[" BE0 "]}]}",
                "endpoints[1].name: duplicate endpoint name \"e\" (also endpoints[0])");
    expect_line("{'endpoints':[{'name':'a','path':'/a/{id}/c','backends':[" BE "]},"
                "{'name':'b','path':'/a/{x}/c','backends':[{'name':'b','url':'http://h/'}]}]}",
                "endpoints[1].path: duplicate route GET /a/{x}/c: endpoints[0] already routes "
                "GET /a/{id}/c");
    /* a different method, or a literal against a param, is a different route */
    expect_ok("{'endpoints':[{'name':'a','path':'/a/{id}','backends':[" BE "]},"
              "{'name':'b','method':'POST','path':'/a/{x}','backends':[{'name':'b','url':"
              "'http://h/'}]},{'name':'c','path':'/a/me','backends':[{'name':'b','url':"
              "'http://h/'}]},{'name':'d','path':'/a/{id}/x','backends':[{'name':'b','url':"
              "'http://h/'}]}]}");
}

/* n endpoints, all GET /a/{id} under different names: every one after the
 * first is one duplicate of endpoints[0] (not of every earlier one), and the
 * report stops at 100 lines plus a count. */
static void test_duplicate_routes_one_error_each_capped(void **state)
{
    (void)state;
    enum { N = 250 };
    size_t cap = 64 + N * 128, len = 0;
    char *json = malloc(cap);
    len += (size_t)snprintf(json + len, cap - len, "{\"endpoints\":[");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(json + len, cap - len,
                                "%s{\"name\":\"e%d\",\"path\":\"/a/{p%d}\",\"backends\":"
                                "[{\"name\":\"b\",\"url\":\"http://h/\"}]}",
                                i ? "," : "", i, i);
    len += (size_t)snprintf(json + len, cap - len, "]}");
    struct config_errors errs;
    assert_null(config_parse(json, len, &errs));
    free(json);
    if (errs.n != 101) dump(&errs);
    assert_int_equal(errs.n, 101);
    assert_string_equal(errs.lines[0], "endpoints[1].path: duplicate route GET /a/{p1}: "
                                       "endpoints[0] already routes GET /a/{p0}");
    assert_string_equal(errs.lines[99], "endpoints[100].path: duplicate route GET /a/{p100}: "
                                        "endpoints[0] already routes GET /a/{p0}");
    assert_string_equal(errs.lines[100],
                        "<input>: and 149 more problems (only the first 100 are listed)");
    config_errors_free(&errs);

    /* the count is grouped in thousands; names are checked the same way */
    enum { M = 4100 };
    cap = 64 + M * 128, len = 0;
    json = malloc(cap);
    len += (size_t)snprintf(json + len, cap - len, "{\"endpoints\":[");
    for (int i = 0; i < M; i++)
        len += (size_t)snprintf(json + len, cap - len,
                                "%s{\"name\":\"e\",\"path\":\"/a/%d\",\"backends\":"
                                "[{\"name\":\"b\",\"url\":\"http://h/\"}]}",
                                i ? "," : "", i);
    len += (size_t)snprintf(json + len, cap - len, "]}");
    assert_null(config_parse(json, len, &errs));
    free(json);
    assert_int_equal(errs.n, 101);
    assert_string_equal(errs.lines[0],
                        "endpoints[1].name: duplicate endpoint name \"e\" (also endpoints[0])");
    assert_string_equal(errs.lines[100],
                        "<input>: and 3,999 more problems (only the first 100 are listed)");
    config_errors_free(&errs);

    /* backends: one error per duplicate, naming the first */
    assert_null(parse_q(EP1(BE "," BE "," BE "," BE), &errs));
    assert_int_equal(errs.n, 3);
    for (size_t i = 0; i < 3; i++) {
        char want[200];
        snprintf(want, sizeof want,
                 "endpoints[0].backends[%zu].name: duplicate backend name \"b\" (also "
                 "endpoints[0].backends[0])",
                 i + 1);
        assert_string_equal(errs.lines[i], want);
    }
    config_errors_free(&errs);
}

/* Bigger than CONFIG_MAX_BYTES: one clear line, never parsed. */
static void test_size_limit(void **state)
{
    (void)state;
    size_t len = CONFIG_MAX_BYTES + 1;
    char *big = malloc(len);
    memset(big, ' ', len);
    big[0] = '{';
    big[len - 1] = '}';
    struct config_errors errs;
    assert_null(config_parse(big, len, &errs));
    assert_int_equal(errs.n, 1);
    assert_string_equal(errs.lines[0], "<input>: too big: 16777217 bytes; a config file may "
                                       "have at most 16 MiB (16777216 bytes)");
    config_errors_free(&errs);
    /* exactly at the limit is read and parsed (and then lacks endpoints) */
    big[1] = '{';
    expect_line_len(big + 1, len - 1, "endpoints: is required");
    free(big);

    char tmpl[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 50 << 20), 0); /* sparse: costs no disk */
    close(fd);
    assert_null(config_load(tmpl, &errs));
    assert_int_equal(errs.n, 1);
    char want[300];
    snprintf(want, sizeof want,
             "%s: too big: 52428800 bytes; a config file may have at most 16 MiB (16777216 "
             "bytes)",
             tmpl);
    assert_string_equal(errs.lines[0], want);
    config_errors_free(&errs);
    unlink(tmpl);
}

/* JSON text must be UTF-8 (RFC 8259), and cJSON cuts a string at \u0000
 * without a word: both are errors with the string's path. */
static void test_utf8_and_nul(void **state)
{
    (void)state;
    expect_line(BEF("'key':'ab\xff'"),
                "endpoints[0].backends[0].key: the value is not valid UTF-8");
    expect_line(BEF("'key':'\xc0\xaf'"), /* overlong '/' */
                "endpoints[0].backends[0].key: the value is not valid UTF-8");
    expect_line(BEF("'key':'\xed\xa0\x80'"), /* a surrogate */
                "endpoints[0].backends[0].key: the value is not valid UTF-8");
    expect_line(BEF("'key':'\xe2\x82'"), /* cut short */
                "endpoints[0].backends[0].key: the value is not valid UTF-8");
    expect_line(EP1("{'name':'b','url':'http://h/x/{id}\\u0000/admin'}"),
                "endpoints[0].backends[0].url: the value contains \\u0000 (a NUL character), "
                "which is not allowed");
    expect_line("{'access_log':{'path':'/tmp/x\\u0000y'}," EPS(BE) "}",
                "access_log.path: the value contains \\u0000 (a NUL character), which is not "
                "allowed");
    expect_line(BEF("'allow':['a','b\\u0000']"),
                "endpoints[0].backends[0].allow[1]: the value contains \\u0000 (a NUL "
                "character), which is not allowed");
    /* in a static value too, and in a key (which is also unknown) */
    expect_line(BEF("'fallback':'static','static':{'x':['\xff']}"),
                "endpoints[0].backends[0].static.x[0]: the value is not valid UTF-8");
    struct config_errors errs;
    assert_null(parse_q(EPF("'na\xffme':1"), &errs));
    assert_int_equal(errs.n, 2);
    assert_string_equal(errs.lines[0], "endpoints[0].na?me: the key is not valid UTF-8");
    config_errors_free(&errs);

    /* valid UTF-8, other escapes and an escaped backslash before u0000 are fine */
    expect_ok(BEF("'key':'gr\xc3\xbc\xc3\x9f\xe2\x82\xac\xf0\x9f\x98\x80',"
                  "'fallback':'static','static':'\\\\u0000 \\u00e9 \\ud83d\\ude00'"));
}

static void test_many_errors_at_once(void **state)
{
    (void)state;
    struct config_errors errs;
    struct config *cfg =
        parse_q("{'server':{'listen':'nowhere','workers':'x'},'bogus':1,"
                "'endpoints':[{'name':'a','path':'/api/a/{id}','backends':[" BE "]},"
                "{'name':'x','path':'/api/x/{id}','backends':["
                "{'name':'b','url':'http://h/u/{uid}'},{'url':'gopher://h/'}]},"
                "{'name':'a','path':'/metrics','backends':[" BE "]}]}",
                &errs);
    assert_null(cfg);
    static const char *const want[] = {
        "bogus: unknown key",
        "server.listen: \"nowhere\" is not a numeric address",
        "server.workers: expected an integer, got a string",
        "endpoints[1].backends[0].url: {uid} is not a parameter of /api/x/{id}",
        "endpoints[1].backends[1].name: is required",
        "endpoints[1].backends[1].url: must start with http:// or https://",
        "endpoints[2].path: /metrics is a built-in path",
        "endpoints[2].name: duplicate endpoint name \"a\" (also endpoints[0])",
    };
    size_t n_want = sizeof(want) / sizeof(want[0]);
    if (errs.n != n_want) dump(&errs);
    assert_int_equal(errs.n, n_want);
    for (size_t i = 0; i < n_want; i++) {
        bool found = false;
        for (size_t j = 0; j < errs.n; j++)
            if (strncmp(errs.lines[j], want[i], strlen(want[i])) == 0) found = true;
        if (!found) {
            print_message("missing: %s\n", want[i]);
            dump(&errs);
            fail();
        }
    }
    config_errors_free(&errs);
    assert_int_equal(errs.n, 0);
    assert_null(errs.lines);
}

/* "client" (defaults and per backend) and the "upstream" section. */
static void test_upstream_transport(void **state)
{
    (void)state;
    char *j = q("{'endpoints':[{'name':'e','path':'/a','backends':["
                "{'name':'p','url':'http://h/'},{'name':'s','url':'https://h/'},"
                "{'name':'c','url':'http://h/','client':'curl'},"
                "{'name':'n','url':'http://h/','client':'native'}]}]}");
    struct config_errors errs;
    struct config *cfg = config_parse(j, strlen(j), &errs);
    free(j);
    assert_non_null(cfg);
    assert_int_equal(cfg->defaults.client, CLIENT_AUTO);
    const struct backend_conf *b = cfg->endpoints[0].backends;
    assert_int_equal(b[0].client, CLIENT_NATIVE); /* auto + http */
    assert_int_equal(b[1].client, CLIENT_CURL);   /* auto + https */
    assert_int_equal(b[2].client, CLIENT_CURL);
    assert_int_equal(b[3].client, CLIENT_NATIVE);
    assert_int_equal(cfg->upstream.max_idle_per_origin, 256);
    assert_int_equal(cfg->upstream.idle_timeout_s, 60);
    assert_int_equal(cfg->upstream.connect_timeout_ms, 1000);
    assert_int_equal(cfg->upstream.dns_refresh_s, 30);
    config_free(cfg);

    j = q("{'defaults':{'client':'curl'},'upstream':{'max_idle_per_origin':0,'idle_timeout_s':5,"
          "'connect_timeout_ms':250,'dns_refresh_s':7}," EPS(BE) "}");
    cfg = config_parse(j, strlen(j), &errs);
    free(j);
    assert_non_null(cfg);
    assert_int_equal(cfg->endpoints[0].backends[0].client, CLIENT_CURL);
    assert_int_equal(cfg->upstream.max_idle_per_origin, 0);
    assert_int_equal(cfg->upstream.idle_timeout_s, 5);
    assert_int_equal(cfg->upstream.connect_timeout_ms, 250);
    assert_int_equal(cfg->upstream.dns_refresh_s, 7);
    config_free(cfg);

    expect_ok(WITH("'defaults':{'client':'native'}"));
    expect_err(EP1("{'name':'b','url':'https://h/x/{id}','client':'native'}"),
               "endpoints[0].backends[0].client", "\"native\" speaks plain http only");
    expect_err("{'defaults':{'client':'native'}," EPS("{'name':'b','url':'https://h/x/{id}'}") "}",
               "defaults.client", "endpoints[0].backends[0] is https");
    expect_err(BEF("'client':'http2'"), "endpoints[0].backends[0].client",
               "must be \"auto\", \"curl\" or \"native\", got \"http2\"");
    expect_err(WITH("'defaults':{'client':1}"), "defaults.client", "expected \"auto\"");
    expect_err(WITH("'upstream':{'idle_timeout_s':0}"), "upstream.idle_timeout_s", "");
    expect_err(WITH("'upstream':{'connect_timeout_ms':0}"), "upstream.connect_timeout_ms", "");
    expect_err(WITH("'upstream':{'dns_refresh_s':0}"), "upstream.dns_refresh_s", "");
    expect_err(WITH("'upstream':{'max_idle_per_origin':-1}"), "upstream.max_idle_per_origin", "");
    expect_err(WITH("'upstream':{'keepalive':1}"), "upstream.keepalive", "unknown key");
    expect_err(WITH("'upstream':[]"), "upstream", "");
}

/* Composition keys: placeholders naming backends, foreach, shaping,
 * on_conflict; each problem with its JSON path. */
static void test_composition(void **state)
{
    (void)state;
#define U0 "{'name':'user','url':'http://h/u/{id}','key':'user'}"
    expect_ok(EP1(U0 ",{'name':'orders','url':'http://h/o/{user.id}?c={user.a.b.0}'}"));
    expect_ok(EP1(U0 ",{'name':'p','foreach':'user.items','key':'p','url':'http://h/p/{item.sku}',"
                     "'max_items':5,'item_failure':'omit'}"));
    expect_ok(EP1(U0 ",{'name':'p','foreach':'user','key':'p','url':'http://h/p/{item}'}"));
    expect_line(EP1(U0 ",{'name':'o','url':'http://h/o/{nobody.id}'}"),
                "endpoints[0].backends[1].url: {nobody.id} names no backend (\"nobody\" is not a "
                "backend of this endpoint)");
    expect_err(EP1("{'name':'a','url':'http://h/a/{a.id}'}"), "endpoints[0].backends[0].url",
               "refers to itself");
    expect_line(EP1("{'name':'a','url':'http://h/a/{b.x}'},{'name':'b','url':'http://h/b/{a.y}'}"),
                "endpoints[0].backends[0].url: cycle a -> b -> a");
    expect_line(EP1(U0 ",{'name':'a','url':'http://h/a/{c.x}'},{'name':'b','url':'http://h/b/{a.y}'},"
                       "{'name':'c','url':'http://h/c/{b.z}'}"),
                "endpoints[0].backends[1].url: cycle a -> c -> b -> a");
    expect_line(EP1("{'name':'a','url':'http://h/a/{item}','foreach':'b.l','key':'a'},"
                    "{'name':'b','url':'http://h/b/{a.0.x}'}"),
                "endpoints[0].backends[0].foreach: cycle a -> b -> a");
    expect_err(EP1(U0 ",{'name':'o','url':'http://h/o/{item.id}'}"),
               "endpoints[0].backends[1].url", "{item.id} is only allowed in a backend with");
    expect_err(EP1(U0 ",{'name':'p','foreach':'nope.items','key':'p','url':'http://h/p/{item}'}"),
               "endpoints[0].backends[1].foreach", "\"nope.items\" names no backend");
    expect_err(EP1(U0 ",{'name':'p','foreach':'user.items','url':'http://h/p/{item}'}"),
               "endpoints[0].backends[1].key", "is required with \"foreach\"");
    expect_err(EP1(U0 ",{'name':'p','foreach':'user..x','key':'p','url':'http://h/p/{item}'}"),
               "endpoints[0].backends[1].foreach", "is not a dot path");
    expect_err(EP1(U0 ",{'name':'p','foreach':'user.x','key':'p','url':'http://h/{item}',"
                      "'max_items':0}"),
               "endpoints[0].backends[1].max_items", "");
    expect_err(EP1(U0 ",{'name':'p','foreach':'user.x','key':'p','url':'http://h/{item}',"
                      "'item_failure':'skip'}"),
               "endpoints[0].backends[1].item_failure", "must be \"fail\", \"null\" or \"omit\"");
    expect_err(BEF("'max_items':3"), "endpoints[0].backends[0].max_items", "only used with");
    /* shaping */
    expect_ok(BEF("'target':'data.user','allow':['a.b','c'],'rename':{'c':'d'}"));
    expect_ok(BEF("'deny':['a.0.b']"));
    expect_err(BEF("'allow':['a'],'deny':['b']"), "endpoints[0].backends[0].deny",
               "cannot both be set");
    expect_err(BEF("'target':''"), "endpoints[0].backends[0].target", "must not be empty");
    expect_err(BEF("'target':'a.'"), "endpoints[0].backends[0].target", "is not a dot path");
    expect_err(BEF("'allow':['.a']"), "endpoints[0].backends[0].allow[0]", "is not a dot path");
    expect_err(BEF("'deny':['a..b']"), "endpoints[0].backends[0].deny[0]", "is not a dot path");
    expect_err(BEF("'deny':['']"), "endpoints[0].backends[0].deny[0]", "must not be empty");
    expect_err(BEF("'rename':{'a':1}"), "endpoints[0].backends[0].rename.a", "non-empty string");
    expect_err(BEF("'rename':['a']"), "endpoints[0].backends[0].rename", "expected an object");
    /* on_conflict */
    expect_ok(EPF("'on_conflict':'first'"));
    expect_ok(EPF("'on_conflict':'error'"));
    expect_err(EPF("'on_conflict':'merge'"), "endpoints[0].on_conflict",
               "must be \"last\", \"first\" or \"error\"");
    /* a top-level allow stays on the merge's fast path; dotted ones shape */
    struct config_errors errs;
    struct config *cfg = parse_q(EP1(U0 ",{'name':'o','url':'http://h/o/{user.id}','allow':['a'],"
                                        "'key':'o'},{'name':'s','url':'http://h/s','allow':['a.b']}"),
                                 &errs);
    assert_non_null(cfg);
    const struct endpoint_conf *ep = &cfg->endpoints[0];
    assert_true(ep->graph);
    assert_non_null(ep->backends[1].allow);
    assert_null(ep->backends[1].shape);
    assert_null(ep->backends[2].allow);
    assert_non_null(ep->backends[2].shape);
    assert_int_equal(ep->backends[1].n_deps, 1);
    assert_int_equal(ep->backends[1].deps[0], 0);
    assert_int_equal(ep->backends[0].n_children, 1);
    config_free(cfg);
#undef U0
}

/* expose_headers: token names, at most 16, no duplicates, none the
 * gateway owns; each refusal with its JSON path. */
static void test_expose_headers(void **state)
{
    (void)state;
    struct config_errors errs;
    struct config *cfg = parse_q(EPF("'expose_headers':['X-Rate-Limit','x-region']"), &errs);
    assert_non_null(cfg);
    assert_int_equal(cfg->endpoints[0].n_expose_headers, 2);
    assert_string_equal(cfg->endpoints[0].expose_headers[1], "x-region");
    config_free(cfg);
    expect_ok(EPF("'expose_headers':[]"));
    expect_line(EPF("'expose_headers':['X-A','Cache-Control']"),
                "endpoints[0].expose_headers[1]: \"Cache-Control\" cannot be exposed: the gateway "
                "computes caching itself");
    const char *refused[] = {"Expires", "Age", "Pragma", "ETag", "Connection", "Keep-Alive", "TE",
                             "Trailer", "Transfer-Encoding", "Upgrade", "Proxy-Authorization",
                             "Content-Length", "Set-Cookie", "content-type", "Content-Encoding",
                             "Server-Timing", "X-Request-Id", "traceparent", "X-Gateway-Completed",
                             "X-Gateway-Degraded", "Vary", "Access-Control-Allow-Origin", "Date"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        char json[256];
        snprintf(json, sizeof json, EPF("'expose_headers':['X-Ok','%s']"), refused[i]);
        expect_err(json, "endpoints[0].expose_headers[1]", "cannot be exposed");
    }
    expect_err(EPF("'expose_headers':['X-A','x-a']"), "endpoints[0].expose_headers[1]",
               "duplicate header name \"x-a\"");
    expect_err(EPF("'expose_headers':['X A']"), "endpoints[0].expose_headers[0]",
               "is not a valid header name");
    expect_err(EPF("'expose_headers':['X:A']"), "endpoints[0].expose_headers[0]",
               "is not a valid header name");
    expect_err(EPF("'expose_headers':['']"), "endpoints[0].expose_headers[0]", "must not be empty");
    expect_err(EPF("'expose_headers':[1]"), "endpoints[0].expose_headers[0]", "expected a string");
    expect_err(EPF("'expose_headers':'X-A'"), "endpoints[0].expose_headers",
               "expected an array of strings");
    char many[512] = "'expose_headers':[";
    for (int i = 0; i <= EXPOSE_MAX_NAMES; i++) {
        char h[16];
        snprintf(h, sizeof h, "%s'H%d'", i ? "," : "", i);
        strcat(many, h);
        if (i == EXPOSE_MAX_NAMES - 1) {
            char ok[700];
            snprintf(ok, sizeof ok, EPF("%s]"), many);
            expect_ok(ok);
        }
    }
    strcat(many, "]");
    char over[700];
    snprintf(over, sizeof over, EPF("%s"), many);
    expect_line(over, "endpoints[0].expose_headers: at most 16 header names, got 17");
}

static void test_shipped_configs_load(void **state)
{
    (void)state;
    char pat[4200];
    size_t total = 0;
    static const char *const globs[] = {"conf/*.json", "conf/examples/*.json"};
    for (size_t g = 0; g < 2; g++) {
        snprintf(pat, sizeof(pat), "%s/%s", src_root(), globs[g]);
        glob_t gl;
        int rc = glob(pat, 0, NULL, &gl);
        assert_true(rc == 0 || rc == GLOB_NOMATCH);
        for (size_t i = 0; rc == 0 && i < gl.gl_pathc; i++) {
            struct config_errors errs;
            struct config *cfg = config_load(gl.gl_pathv[i], &errs);
            if (!cfg) {
                print_message("%s:\n", gl.gl_pathv[i]);
                dump(&errs);
                fail();
            }
            config_free(cfg);
            total++;
        }
        if (rc == 0) globfree(&gl);
    }
    assert_true(total >= 2); /* at least conf/gateway.json and one example */
}


/* upstreams, breakers, retries, hedging: the parsed forms and every error
 * with its JSON path (README.md "Upstream groups"). */
#define UPS(groups) "'upstreams':{" groups "}"
static void test_resilience(void **state)
{
    (void)state;
    struct config_errors errs;
    struct config *cfg = parse_q(
        "{'defaults':{'breaker':{'consecutive_failures':3,'open_ms':500},'retries':1,"
        "'retry_on':['5xx'],'retry_budget_percent':50},"
        UPS("'users':{'hosts':['127.0.0.1:9001','127.0.0.1:9002'],'balance':'round_robin',"
            "'health_check':{'path':'/hz','interval_ms':100}}") ","
        "'endpoints':[{'name':'e','path':'/a/{id}','backends':["
        "{'name':'u','url':'http://users/x/{id}','timeout_ms':300,'hedge_after_ms':50},"
        "{'name':'p','url':'http://users:80/x','retries':5,'retry_on':['connect','timeout']},"
        "{'name':'d','url':'http://other/x','hedge_after_ms':null}]}]}",
        &errs);
    if (!cfg) dump(&errs);
    assert_non_null(cfg);
    assert_int_equal(cfg->n_upstreams, 1);
    const struct ugroup_conf *u = &cfg->upstreams[0];
    assert_string_equal(u->name, "users");
    assert_int_equal(u->n_hosts, 2);
    assert_int_equal(u->balance, BALANCE_ROUND_ROBIN);
    assert_string_equal(u->health.path, "/hz");
    assert_int_equal(u->health.interval_ms, 100);
    assert_int_equal(u->health.unhealthy_after, 2);
    assert_int_equal(u->breaker.consecutive_failures, 3); /* from defaults */
    assert_int_equal(cfg->defaults.retry_budget_percent, 50);
    const struct backend_conf *b = cfg->endpoints[0].backends;
    assert_ptr_equal(b[0].group, u);
    assert_int_equal(b[0].retry.hedge_after_ms, 50);
    assert_int_equal(b[0].retry.retries, 1);
    assert_int_equal(b[0].retry.retry_on, RETRY_ON_5XX);
    assert_null(b[1].group); /* a port: a plain host */
    assert_int_equal(b[1].retry.retries, 5);
    assert_int_equal(b[1].retry.retry_on, RETRY_ON_CONNECT | RETRY_ON_TIMEOUT);
    assert_null(b[2].group); /* unknown group name: a DNS name */
    assert_int_equal(b[2].retry.hedge_after_ms, 0);
    config_free(cfg);

    cfg = parse_q(EP1(BE), &errs);
    assert_non_null(cfg);
    assert_int_equal(cfg->defaults.breaker.consecutive_failures, 0);
    assert_int_equal(cfg->defaults.retry.retries, 0);
    assert_int_equal(cfg->defaults.retry.retry_on, RETRY_ON_ALL);
    assert_int_equal(cfg->defaults.retry_budget_percent, 20);
    assert_int_equal(cfg->n_upstreams, 0);
    config_free(cfg);

    expect_err(WITH(UPS("'g':{'hosts':[]}")), "upstreams.g.hosts", "must not be empty");
    expect_err(WITH(UPS("'g':{}")), "upstreams.g.hosts", "is required");
    expect_err(WITH(UPS("'g':{'hosts':['h']}")), "upstreams.g.hosts[0]", "is not host:port");
    expect_err(WITH(UPS("'g':{'hosts':['h:0']}")), "upstreams.g.hosts[0]", "is not host:port");
    expect_err(WITH(UPS("'g':{'hosts':['h:1','h:1']}")), "upstreams.g.hosts[1]", "duplicate host");
    expect_err(WITH(UPS("'g':{'hosts':['h:1'],'balance':'random'}")), "upstreams.g.balance",
               "least_inflight");
    expect_err(WITH(UPS("'g':{'hosts':['h:1'],'health_check':{'path':'hz'}}")),
               "upstreams.g.health_check.path", "must start with '/'");
    expect_err(WITH(UPS("'g':{'hosts':['h:1'],'breaker':{'open_ms':0}}")),
               "upstreams.g.breaker.open_ms", "");
    expect_err(WITH(UPS("'g':{'hosts':['h:1'],'x':1}")), "upstreams.g.x", "unknown key");
    expect_err(WITH(UPS("'g h':{'hosts':['h:1']}")), "upstreams.g h", "not a valid group name");
    expect_err(EP1("{'name':'b','url':'http://h/','retries':6}"),
               "endpoints[0].backends[0].retries", "");
    expect_err(EP1("{'name':'b','url':'http://h/','retry_on':['5xx','gateway']}"),
               "endpoints[0].backends[0].retry_on[1]", "unknown word \"gateway\"");
    expect_err(EP1("{'name':'b','url':'http://h/','timeout_ms':100,'hedge_after_ms':100}"),
               "endpoints[0].backends[0].hedge_after_ms", "must be below the backend's timeout_ms");
    expect_err("{'defaults':{'backend_timeout_ms':50,'hedge_after_ms':60}," EPS(BE) "}",
               "endpoints[0].backends[0].hedge_after_ms", "must be below");
    expect_err("{'defaults':{'retries':9}," EPS(BE) "}", "defaults.retries", "");
    expect_err("{'defaults':{'breaker':{'consecutive_failures':0}}," EPS(BE) "}",
               "defaults.breaker.consecutive_failures", "");
    expect_err("{'defaults':{'retry_budget_percent':101}," EPS(BE) "}",
               "defaults.retry_budget_percent", "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo_config),
        cmocka_unit_test(test_defaults_and_parsed_forms),
        cmocka_unit_test(test_syntax_and_file_errors),
        cmocka_unit_test(test_structure_errors),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_types_and_ranges),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_methods_and_paths),
        cmocka_unit_test(test_urls), cmocka_unit_test(test_limits),
        cmocka_unit_test(test_fallback_and_body),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_forwarding_lists),
        cmocka_unit_test(test_auth_and_tracing),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_duplicate_routes_one_error_each_capped),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_utf8_and_nul),
        cmocka_unit_test(test_many_errors_at_once),
        cmocka_unit_test(test_upstream_transport),
        cmocka_unit_test(test_composition),
        cmocka_unit_test(test_expose_headers),
        cmocka_unit_test(test_shipped_configs_load),
        cmocka_unit_test(test_resilience),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
