/*
 * The gateway's built-ins and /metrics, against the real binary (DESIGN.md
 * "Operations" and "Details that tests rely on"):
 *   - /healthz and /readyz answer 200 JSON, the built-ins answer GET and
 *     HEAD and give 405 with Allow to anything else;
 *   - /metrics is parsed strictly (tests/common/prom.h, in the layout the
 *     gateway writes), every family of the contract is present with its
 *     type and label names, and the counters move by exactly what the
 *     client did (successes, 404, 405, an omitted optional backend, a
 *     static fallback, a required failure that cancels a slow sibling, a
 *     backend timeout, a client that hung up, reloads).
 *
 * Metrics are written after the response is sent, so every check polls
 * (bounded) until the expected state appears; an exact check can still
 * fail, as an overshoot never converges.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "harness.h"
#include "ops.h"
#include "prom.h"

#define LOG "off" /* test_accesslog.c has the access log */

static struct h_env env;

/* Scrapes /metrics, asserts the Content-Type and parses strictly. */
static void scrape(const struct h_gateway *g, struct prom *e)
{
    struct h_resp r;
    h_get(g->base, "/metrics", NULL, &r);
    expect_status("/metrics", &r, 200);
    const char *ct = h_header(&r, "Content-Type");
    assert_non_null(ct);
    const char *want = "text/plain; version=0.0.4";
    if (strncmp(ct, want, strlen(want)) != 0 ||
        (ct[strlen(want)] && strcasecmp(ct + strlen(want), "; charset=utf-8") != 0))
        fail_msg("/metrics Content-Type '%s'", ct);
    if (prom_parse(e, r.body, r.body_len, PROM_GATEWAY) != 0) {
        fprintf(stderr, "%s\n", r.body);
        h_resp_free(&r);
        fail_msg("exposition: %s", e->err);
    }
    h_resp_free(&r);
}

static double value_or0(const struct prom *e, const char *key)
{
    return prom_value(e, key, 0);
}

/* One scrape's value of the series key (0 when absent). */
static double scrape_value(const struct h_gateway *g, const char *key)
{
    struct prom e;
    scrape(g, &e);
    double v = value_or0(&e, key);
    prom_free(&e);
    return v;
}

/* One expected change of a series between two scrapes. */
struct want {
    char key[256];
    double delta;
};

/* Whether now - base matches: every series named in w moved by its delta;
 * every other series of the families moved by 0 (skip: keys not checked);
 * no series vanished. */
static bool deltas_ok(const struct prom *base, const struct prom *now, const char *const *families,
                      const struct want *w, size_t nw, const char *const *skip, char *why,
                      size_t whylen)
{
    for (size_t i = 0; i < nw; i++) {
        double d = value_or0(now, w[i].key) - value_or0(base, w[i].key);
        if (d != w[i].delta || !prom_find(now, w[i].key)) {
            snprintf(why, whylen, "%s moved by %g, expected %g", w[i].key, d, w[i].delta);
            return false;
        }
    }
    for (size_t i = 0; i < base->n; i++)
        if (!prom_find(now, base->s[i].key)) {
            snprintf(why, whylen, "%s vanished", base->s[i].key);
            return false;
        }
    for (size_t i = 0; i < now->n; i++) {
        const struct prom_sample *s = &now->s[i];
        bool in = false;
        for (size_t f = 0; families[f] && !in; f++)
            in = strcmp(s->name, families[f]) == 0;
        for (size_t k = 0; skip && skip[k] && in; k++)
            in = strcmp(s->key, skip[k]) != 0;
        bool listed = false;
        for (size_t k = 0; k < nw && !listed; k++)
            listed = strcmp(w[k].key, s->key) == 0;
        if (!in || listed) continue;
        double d = s->value - value_or0(base, s->key);
        if (d != 0) {
            snprintf(why, whylen, "%s moved by %g, expected 0", s->key, d);
            return false;
        }
    }
    return true;
}

/* One scrape checked by deltas_ok. */
static bool scrape_deltas_ok(const struct h_gateway *g, const struct prom *base,
                             const char *const *families, const struct want *w, size_t nw,
                             const char *const *skip, char *why, size_t whylen)
{
    struct prom now;
    scrape(g, &now);
    bool ok = deltas_ok(base, &now, families, w, nw, skip, why, whylen);
    prom_free(&now);
    return ok;
}

/* Scrapes until deltas_ok holds (bounded); fails with the last mismatch. */
static void wait_deltas(const struct h_gateway *g, const struct prom *base,
                        const char *const *families, const struct want *w, size_t nw,
                        const char *const *skip)
{
    char why[512] = "";
    if (!H_POLL_UNTIL(scrape_deltas_ok(g, base, families, w, nw, skip, why, sizeof why), WAIT_MS))
        fail_msg("metrics never matched: %s", why);
}

static void health_and_readiness_answer_200_json(void **state)
{
    (void)state;
    const char *paths[] = {"/healthz", "/readyz"};
    for (size_t i = 0; i < 2; i++) {
        struct h_resp r;
        get_expect(&env.gw, paths[i], NULL, 200, &r);
        const char *ct = h_header(&r, "Content-Type");
        assert_non_null(ct);
        assert_non_null(strstr(ct, "application/json"));
        assert_true(cJSON_IsObject(r.json));
        h_resp_free(&r);

        char url[256];
        snprintf(url, sizeof url, "%s%s", env.gw.base, paths[i]);
        h_request("HEAD", url, NULL, NULL, 0, &r);
        expect_status("HEAD", &r, 200);
        assert_int_equal(r.body_len, 0);
        h_resp_free(&r);
    }
}

static void builtins_refuse_other_methods_with_405_and_allow(void **state)
{
    (void)state;
    const char *cases[][2] = {
        {"POST", "/healthz"}, {"PUT", "/readyz"}, {"DELETE", "/metrics"}, {"POST", "/metrics"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char url[256];
        snprintf(url, sizeof url, "%s%s", env.gw.base, cases[i][1]);
        struct h_resp r;
        h_request(cases[i][0], url, NULL, cases[i][0][0] == 'P' ? "{}" : NULL, 0, &r);
        expect_status(cases[i][1], &r, 405);
        const char *allow = h_header(&r, "Allow");
        if (!allow || !strstr(allow, "GET"))
            fail_msg("%s %s: Allow '%s'", cases[i][0], cases[i][1], allow ? allow : "(none)");
        h_resp_free(&r);
    }
}

/* The label names of every sample of a family (le aside) are exactly
 * names (NULL-terminated). */
static void assert_family(const struct prom *e, const char *name, const char *type,
                          const char *const *names)
{
    const struct prom_family *f = prom_family(e, name);
    if (!f) fail_msg("family %s missing", name);
    if (strcmp(f->type, type) != 0) fail_msg("%s is a %s, not a %s", name, f->type, type);
    if (f->nsamples == 0) fail_msg("%s has no samples", name);
    size_t want = 0;
    while (names[want])
        want++;
    for (size_t i = 0; i < e->n; i++) {
        const struct prom_sample *s = &e->s[i];
        if (strcmp(s->family, name) != 0) continue;
        size_t n = 0;
        for (size_t j = 0; j < s->nlabels; j++) {
            if (strcmp(s->lname[j], "le") == 0) continue;
            bool known = false;
            for (size_t k = 0; k < want && !known; k++)
                known = strcmp(names[k], s->lname[j]) == 0;
            if (!known) fail_msg("%s: unexpected label %s", s->key, s->lname[j]);
            n++;
        }
        if (n != want) fail_msg("%s: %zu labels, expected %zu", s->key, n, want);
    }
}

#define REQ(ep, code) "gateway_requests_total", "endpoint", ep, "code", code, NULL
#define BE(ep, b, out)                                                                             \
    "gateway_backend_requests_total", "endpoint", ep, "backend", b, "outcome", out, NULL
#define RDUR(ep) "gateway_request_duration_seconds_count", "endpoint", ep, NULL
#define BDUR(b)  "gateway_backend_duration_seconds_count", "backend", b, NULL

static void metrics_exposition_is_strict_and_complete(void **state)
{
    (void)state;
    /* one call through a backend, so the per-backend families have series */
    get_status(&env.gw, "/api/ok/warm", 200);
    /* its series appear once it is complete: the request's own counter is
     * the last thing the gateway updates (after the in-flight gauge) */
    char k[256], kreq[256];
    prom_key(k, sizeof k, "gateway_backend_requests_total", "endpoint", "ok", "backend", "user",
             "outcome", "ok", NULL);
    prom_key(kreq, sizeof kreq, REQ("ok", "200"));
    if (!H_POLL_UNTIL(scrape_value(&env.gw, k) == 1 && scrape_value(&env.gw, kreq) == 1, WAIT_MS))
        fail_msg("%s or %s never became 1", k, kreq);
    struct prom e;
    scrape(&env.gw, &e);
    assert_family(&e, "gateway_requests_total", "counter",
                  (const char *const[]){"endpoint", "code", NULL});
    assert_family(&e, "gateway_request_duration_seconds", "histogram",
                  (const char *const[]){"endpoint", NULL});
    assert_family(&e, "gateway_backend_requests_total", "counter",
                  (const char *const[]){"endpoint", "backend", "outcome", NULL});
    assert_family(&e, "gateway_backend_duration_seconds", "histogram",
                  (const char *const[]){"backend", NULL});
    assert_family(&e, "gateway_inflight_requests", "gauge", (const char *const[]){NULL});
    assert_family(&e, "gateway_pool_hits_total", "counter", (const char *const[]){"pool", NULL});
    assert_family(&e, "gateway_pool_misses_total", "counter", (const char *const[]){"pool", NULL});
    assert_family(&e, "gateway_access_log_dropped_total", "counter", (const char *const[]){NULL});
    assert_family(&e, "gateway_config_reloads_total", "counter",
                  (const char *const[]){"result", NULL});
    /* outcome values are the contract's; both reload results are exported */
    static const char *const outcomes[] = {"ok",   "error",    "timeout", "cancelled",
                                           "open", "degraded", "static",  "omitted"};
    for (size_t i = 0; i < e.n; i++) {
        const struct prom_sample *s = &e.s[i];
        if (strcmp(s->name, "gateway_backend_requests_total") != 0) continue;
        for (size_t j = 0; j < s->nlabels; j++) {
            if (strcmp(s->lname[j], "outcome") != 0) continue;
            bool known = false;
            for (size_t o = 0; o < 8; o++)
                known |= strcmp(s->lval[j], outcomes[o]) == 0;
            if (!known) fail_msg("%s: unknown outcome", s->key);
        }
    }
    assert_non_null(
        prom_find(&e, prom_key(k, sizeof k, "gateway_config_reloads_total", "result", "ok", NULL)));
    assert_non_null(prom_find(
        &e, prom_key(k, sizeof k, "gateway_config_reloads_total", "result", "error", NULL)));
    assert_int_equal(value_or0(&e, "gateway_access_log_dropped_total{}"), 0);
    /* the scrape itself may be in flight, nothing else is */
    double inflight = value_or0(&e, "gateway_inflight_requests{}");
    assert_true(inflight >= 0 && inflight <= 1);
    prom_free(&e);
}

static void want_add(struct want *w, size_t *n, double delta, const char *name, ...)
{
    va_list ap;
    va_start(ap, name);
    prom_vkey(w[*n].key, sizeof w[*n].key, name, ap);
    va_end(ap);
    w[*n].delta = delta;
    (*n)++;
}

static const char *const counted_families[] = {
    "gateway_requests_total", "gateway_backend_requests_total",
    "gateway_request_duration_seconds_count", "gateway_backend_duration_seconds_count", NULL};

static void metrics_count_exactly_what_the_client_did(void **state)
{
    (void)state;
    struct prom base;
    scrape(&env.gw, &base);

    enum { N = 5, M = 3, K = 2 };
    char path[128];
    for (int i = 0; i < N; i++) {
        snprintf(path, sizeof path, "/api/ok/%d", i);
        get_status(&env.gw, path, 200);
    }
    for (int i = 0; i < M; i++) {
        snprintf(path, sizeof path, "/nope/%d", i);
        get_status(&env.gw, path, 404);
    }
    struct h_resp r;
    char url[256];
    snprintf(url, sizeof url, "%s/api/ok/1", env.gw.base);
    h_request("DELETE", url, NULL, NULL, 0, &r);
    expect_status("DELETE /api/ok/1", &r, 405);
    h_resp_free(&r);
    for (int i = 0; i < K; i++) {
        snprintf(path, sizeof path, "/api/opt/%d", i);
        get_expect(&env.gw, path, NULL, 200, &r);
        expect_header(&r, "X-Gateway-Degraded", "flaky");
        h_resp_free(&r);
        snprintf(path, sizeof path, "/api/stat/%d", i);
        get_expect(&env.gw, path, NULL, 200, &r);
        expect_header(&r, "X-Gateway-Degraded", "st");
        h_resp_free(&r);
    }
    get_expect(&env.gw, "/api/fail/1", NULL, 502, &r);
    assert_string_equal(h_json_str(r.json, "backend"), "bad");
    h_resp_free(&r);
    get_expect(&env.gw, "/api/to/1", NULL, 504, &r);
    assert_string_equal(h_json_str(r.json, "backend"), "lazy");
    h_resp_free(&r);

    struct want w[40];
    size_t n = 0;
    want_add(w, &n, N, REQ("ok", "200"));
    want_add(w, &n, N, BE("ok", "user", "ok"));
    want_add(w, &n, N, BE("ok", "recs", "ok"));
    want_add(w, &n, N, RDUR("ok"));
    want_add(w, &n, N + 2 * K, BDUR("user"));
    want_add(w, &n, N, BDUR("recs"));
    want_add(w, &n, M, REQ("none", "404"));
    want_add(w, &n, 1, REQ("none", "405"));
    want_add(w, &n, K, REQ("opt", "200"));
    want_add(w, &n, K, BE("opt", "user", "ok"));
    want_add(w, &n, K, BE("opt", "flaky", "omitted"));
    want_add(w, &n, K, RDUR("opt"));
    want_add(w, &n, K, BDUR("flaky"));
    want_add(w, &n, K, REQ("stat", "200"));
    want_add(w, &n, K, BE("stat", "user", "ok"));
    want_add(w, &n, K, BE("stat", "st", "static"));
    want_add(w, &n, K, RDUR("stat"));
    want_add(w, &n, K, BDUR("st"));
    want_add(w, &n, 1, REQ("fail", "502"));
    want_add(w, &n, 1, BE("fail", "bad", "error"));
    want_add(w, &n, 1, BE("fail", "slow", "cancelled"));
    want_add(w, &n, 1, RDUR("fail"));
    want_add(w, &n, 1, BDUR("bad"));
    want_add(w, &n, 1, BDUR("slow"));
    want_add(w, &n, 1, REQ("to", "504"));
    want_add(w, &n, 1, BE("to", "lazy", "timeout"));
    want_add(w, &n, 1, RDUR("to"));
    want_add(w, &n, 1, BDUR("lazy"));
    /* the scrapes themselves count as endpoint "none", code 200, and the
     * 404 and 405 above add to none's duration histogram */
    char s1[256], s2[256];
    const char *skip[] = {prom_key(s1, sizeof s1, REQ("none", "200")),
                          prom_key(s2, sizeof s2, RDUR("none")), NULL};
    wait_deltas(&env.gw, &base, counted_families, w, n, skip);
    prom_free(&base);

    /* quiescent again: at most the scrape itself is in flight */
    double inflight = -1;
    if (!H_POLL_UNTIL((inflight = scrape_value(&env.gw, "gateway_inflight_requests{}")) == 0 ||
                          inflight == 1,
                      WAIT_MS))
        fail_msg("gateway_inflight_requests stays at %g", inflight);
}

static void reloads_are_counted_by_result(void **state)
{
    (void)state;
    char kok[128], kerr[128];
    prom_key(kok, sizeof kok, "gateway_config_reloads_total", "result", "ok", NULL);
    prom_key(kerr, sizeof kerr, "gateway_config_reloads_total", "result", "error", NULL);
    struct prom base;
    scrape(&env.gw, &base);
    get_status(&env.gw, "/api/added/1", 404);

    /* a valid file with one more endpoint */
    char *tmpl = make_tmpl(LOG, true);
    char *text = h_subst(tmpl, env.mock.origin, env.gw.port);
    free(tmpl);
    assert_int_equal(h_gateway_write_conf_raw(&env.gw, text), 0);
    free(text);
    assert_int_equal(kill(env.gw.pid, SIGHUP), 0);
    struct want w[2];
    size_t n = 0;
    want_add(w, &n, 1, "gateway_config_reloads_total", "result", "ok", NULL);
    want_add(w, &n, 0, "gateway_config_reloads_total", "result", "error", NULL);
    const char *const fam[] = {"gateway_config_reloads_total", NULL};
    wait_deltas(&env.gw, &base, fam, w, n, NULL);
    get_status(&env.gw, "/api/added/1", 200);

    /* valid JSON, invalid config (an unknown key): counted, and ignored */
    tmpl = make_tmpl(LOG, false);
    char *bad = h_replace(tmpl, "\"workers\": 2,", "\"workers\": 2, \"bogus\": 1,");
    free(tmpl);
    text = h_subst(bad, env.mock.origin, env.gw.port);
    free(bad);
    assert_int_equal(h_gateway_write_conf_raw(&env.gw, text), 0);
    free(text);
    assert_int_equal(kill(env.gw.pid, SIGHUP), 0);
    n = 0;
    want_add(w, &n, 1, "gateway_config_reloads_total", "result", "ok", NULL);
    want_add(w, &n, 1, "gateway_config_reloads_total", "result", "error", NULL);
    wait_deltas(&env.gw, &base, fam, w, n, NULL);
    get_status(&env.gw, "/api/added/2", 200);

    /* the new endpoint is counted under its own label */
    char k[256];
    prom_key(k, sizeof k, REQ("added", "200"));
    double v = -1;
    if (!H_POLL_UNTIL((v = scrape_value(&env.gw, k)) == 2, WAIT_MS))
        fail_msg("%s is %g, expected 2", k, v);
    prom_free(&base);
}

/* A client that hangs up while the backend call runs: 499, and the call
 * is cancelled (test_accesslog.c checks its log line). */
static void client_that_hangs_up_is_counted_as_499(void **state)
{
    (void)state;
    struct prom base;
    scrape(&env.gw, &base);
    hang_up_during_backend_call(&env, "ops-hangup-1");
    cJSON *aborted = h_wait_log(&env.mock, "/slow/5000/1", h_pred_hung_up, NULL, WAIT_MS);
    assert_non_null(aborted);
    cJSON_Delete(aborted);

    struct want w[4];
    size_t n = 0;
    want_add(w, &n, 1, REQ("hang", "499"));
    want_add(w, &n, 1, BE("hang", "sleepy", "cancelled"));
    want_add(w, &n, 1, RDUR("hang"));
    want_add(w, &n, 1, BDUR("sleepy"));
    char s1[256], s2[256];
    const char *skip[] = {prom_key(s1, sizeof s1, REQ("none", "200")),
                          prom_key(s2, sizeof s2, RDUR("none")), NULL};
    wait_deltas(&env.gw, &base, counted_families, w, n, skip);
    prom_free(&base);
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(health_and_readiness_answer_200_json),
        cmocka_unit_test(builtins_refuse_other_methods_with_405_and_allow),
        cmocka_unit_test(metrics_exposition_is_strict_and_complete),
        cmocka_unit_test(metrics_count_exactly_what_the_client_did),
        cmocka_unit_test(reloads_are_counted_by_result),
        cmocka_unit_test(client_that_hangs_up_is_counted_as_499),
    };
    char *tmpl = make_tmpl(LOG, false);
    int rc = H_GROUP_RUN("integration/metrics", tests, &env, tmpl);
    free(tmpl);
    return rc;
}
