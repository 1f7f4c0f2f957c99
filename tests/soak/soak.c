/*
 * Chaos soak: the real gateway (2 workers) in front of the real mock
 * backend, under a load of concurrent keep-alive clients for SOAK_SECONDS
 * (default 60), while a chaos thread keeps switching the mock's fault modes
 * (slow, failing status, reset, invalid JSON, combinations) on path prefixes
 * and the clients themselves ask for huge bodies, dripped bodies, short
 * deadlines, bad headers, unknown paths, wrong methods and oversized
 * request bodies, and hang up early on a fraction of their requests.
 * Resilience (issue 13): an upstream group "pool" of two more mock
 * instances, one stable (now and then slow on /users, or failing its
 * health check while its calls succeed) and one that flaps: a flap thread
 * stops it and starts it again on the same port every 0.3 to 1.5 s. The
 * group's backends retry (pool), hedge (hedge), have a breaker, a degraded
 * or static fallback; a plain-origin backend hedges too (its /b/ path gets
 * the chaos thread's delays).
 *
 * What must hold (issue 6):
 *   - every answer a client received is a well-formed HTTP response (curl
 *     parsed it) with a status in {200, 400, 404, 405, 413, 502, 503, 504},
 *     Content-Type application/json and a JSON body: an object, with a
 *     string "error" unless it is a 200; the only transfers without an
 *     answer are the ones the client abandoned itself;
 *   - /metrics agrees with the clients, once the gateway is idle: see
 *     check_metrics() for exactly what is asserted and why;
 *   - gateway_inflight_requests drops back to the scrape itself, and the
 *     curl handle pool did not grow with the number of requests;
 *   - resident memory and open descriptors after the load are within a
 *     margin of the figures after the warm-up (RSS_MARGIN, FD_MARGIN);
 *   - the gateway still serves a normal request, then exits 0 on SIGTERM;
 *   - retries and hedges stay within the retry budget however often the
 *     flapping host fails: gateway_backend_attempts_total{kind=retry|hedge}
 *     <= BUDGET_CAP + first attempts * percent/100 + BUDGET_REFILL_PER_S *
 *     seconds since the gateway started (gateway/budget.h), and no request
 *     the stable host logged carries an X-Gateway-Attempt above MAX_ATTEMPT.
 *
 * Environment: SOAK_SECONDS (load duration, warm-up included), SOAK_SEED
 * (the chaos and clients' random seed; printed), SOAK_CLIENTS.
 * argv[1] and argv[2]: the gateway and mock_backend binaries (harness.h).
 *
 * This is a soak, not a unit test: ctest runs it only with the "soak" label
 * (tests/all.sh leaves it out of the default run; CI runs it on its own).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "gateway/budget.h"
#include "harness.h"

#define DEFAULT_SECONDS 60
#define DEFAULT_CLIENTS 32
#define WARMUP_MS       5000
#define SETTLE_MS       20000
/* RSS after the load may exceed RSS after the warm-up by 25 % + 4 MiB:
 * malloc keeps freed arenas, and the degraded store and pools fill up. */
#define RSS_FACTOR   1.25
#define RSS_SLACK_KB 4096
/* Descriptors: the warm-up figure includes the clients' connections (closed
 * before the second sample), the second one the backend connections curl
 * keeps idle in its cache; the chaos may leave that cache somewhat larger
 * than at warm-up (more calls in flight at its peak), hence a margin. A leak
 * of one descriptor per failed call would be thousands. */
#define FD_MARGIN 32
/* Under ASan freed memory sits in a quarantine of up to 256 MiB before it is
 * reused, and TSan keeps shadow and history memory: RSS says nothing about
 * leaks there. Those builds check leaks at exit instead (LeakSanitizer makes
 * the gateway exit non-zero, which the SIGTERM check below catches). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RSS_CHECKED false
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define RSS_CHECKED false
#endif
#endif
#ifndef RSS_CHECKED
#define RSS_CHECKED true
#endif
#define MAX_CODE 1000
/* Statuses the contract allows a client to see. */
static const int allowed[] = {200, 400, 404, 405, 413, 502, 503, 504};
/* Largest body a client keeps (the gateway answers at most a few KiB here). */
#define MAX_BODY (1 << 20)
/* The config's defaults.retry_budget_percent: 0, so that only the bucket's
 * start and its refill (BUDGET_REFILL_PER_S) pay for retries and hedges,
 * fewer than the flapping host and the slow paths ask for: the budget binds
 * (gateway_retry_budget_exhausted_total grows) and the bound is checked
 * while it does. */
#define BUDGET_PERCENT 0
#define STR_(x)        #x
#define STR(x)         STR_(x)
/* The most attempts one call to the group makes: the first, a hedge, and
 * one retry (hu), or the first and two retries (pu). */
#define MAX_ATTEMPT 3

/* Endpoints: required with a degraded fallback, optional, static, fan-out
 * 3..8 with bounded concurrency, short deadlines, huge and dripped bodies
 * (the client picks the backend path), a POST with a tiny body limit. */
static const char conf[] =
    "{\n"
    " \"server\": {\"listen\": \"127.0.0.1:${PORT}\", \"workers\": 2,\n"
    "            \"max_request_body_bytes\": 1024, \"shutdown_timeout_ms\": 3000},\n"
    " \"defaults\": {\"timeout_ms\": 1000, \"max_timeout_ms\": 5000,\n"
    "              \"backend_timeout_ms\": 800, \"max_response_bytes\": 65536,\n"
    "              \"concurrency\": 16,\n"
    "              \"retry_budget_percent\": " STR(BUDGET_PERCENT) "},\n"
    " \"degraded\": {\"max_entries\": 1000, \"max_stale_s\": 3600},\n"
    " \"upstreams\": {\"pool\": {\"hosts\": [\"${STABLE}\", \"${FLAPPY}\"],\n"
    "   \"health_check\": {\"path\": \"/_healthz\", \"interval_ms\": 100, \"timeout_ms\": 100,\n"
    "                    \"unhealthy_after\": 2, \"healthy_after\": 2},\n"
    "   \"breaker\": {\"consecutive_failures\": 3, \"open_ms\": 300}}},\n"
    " \"access_log\": {\"path\": \"/dev/null\"},\n"
    " \"endpoints\": [\n"
    "  {\"name\": \"dash\", \"path\": \"/api/dash/{id}\",\n"
    "   \"forward_headers\": [\"Authorization\"],\n"
    "   \"backends\": [\n"
    "    {\"name\": \"user\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"user\",\n"
    "     \"fallback\": \"degraded\", \"timeout_ms\": 400},\n"
    "    {\"name\": \"orders\", \"url\": \"${BACKEND}/orders/{id}\"},\n"
    "    {\"name\": \"recs\", \"url\": \"${BACKEND}/recs/{id}\", \"key\": \"recs\",\n"
    "     \"required\": false, \"fallback\": \"static\", \"static\": {\"items\": []},\n"
    "     \"allow\": [\"items\"]},\n"
    "    {\"name\": \"nothing\", \"url\": \"${BACKEND}/empty\", \"key\": \"nothing\",\n"
    "     \"required\": false}]},\n"
    "  {\"name\": \"fan\", \"path\": \"/api/fan/{id}\", \"timeout_ms\": 700,\n"
    "   \"concurrency\": 4,\n"
    "   \"backends\": [\n"
    "    {\"name\": \"b1\", \"url\": \"${BACKEND}/b/{id}\", \"key\": \"b1\"},\n"
    "    {\"name\": \"b2\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"b2\",\n"
    "     \"fallback\": \"degraded\"},\n"
    "    {\"name\": \"b3\", \"url\": \"${BACKEND}/recs/{id}\", \"key\": \"b3\",\n"
    "     \"required\": false},\n"
    "    {\"name\": \"b4\", \"url\": \"${BACKEND}/orders/{id}\", \"key\": \"b4\",\n"
    "     \"required\": false, \"fallback\": \"static\", \"static\": null},\n"
    "    {\"name\": \"b5\", \"url\": \"${BACKEND}/echo/f5/{id}\", \"key\": \"b5\",\n"
    "     \"required\": false, \"allow\": [\"path\"]},\n"
    "    {\"name\": \"b6\", \"url\": \"${BACKEND}/slow/5/{id}\", \"key\": \"b6\",\n"
    "     \"required\": false},\n"
    "    {\"name\": \"b7\", \"url\": \"${BACKEND}/empty\", \"key\": \"b7\"},\n"
    "    {\"name\": \"b8\", \"url\": \"${BACKEND}/echo/f8/{id}\",\n"
    "     \"required\": false, \"allow\": [\"method\"]}]},\n"
    "  {\"name\": \"fan3\", \"path\": \"/api/fan3/{id}\",\n"
    "   \"backends\": [\n"
    "    {\"name\": \"u\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"u\"},\n"
    "    {\"name\": \"r\", \"url\": \"${BACKEND}/recs/{id}\", \"key\": \"r\"},\n"
    "    {\"name\": \"n\", \"url\": \"${BACKEND}/b/{id}\", \"key\": \"n\"}]},\n"
    "  {\"name\": \"short\", \"path\": \"/api/short/{ms}\", \"timeout_ms\": 150,\n"
    "   \"backends\": [\n"
    "    {\"name\": \"slow\", \"url\": \"${BACKEND}/slow/{ms}/s\", \"key\": \"slow\"},\n"
    "    {\"name\": \"u\", \"url\": \"${BACKEND}/users/s\", \"key\": \"u\",\n"
    "     \"required\": false}]},\n"
    "  {\"name\": \"var\", \"path\": \"/api/var/{kind}/{arg}\", \"timeout_ms\": 300,\n"
    "   \"backends\": [\n"
    "    {\"name\": \"v\", \"url\": \"${BACKEND}/{kind}/{arg}\", \"key\": \"v\"}]},\n"
    "  {\"name\": \"opt\", \"path\": \"/api/opt/{id}\",\n"
    "   \"backends\": [\n"
    "    {\"name\": \"a\", \"url\": \"${BACKEND}/recs/{id}\", \"key\": \"a\",\n"
    "     \"required\": false},\n"
    "    {\"name\": \"b\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"b\",\n"
    "     \"fallback\": \"static\", \"static\": {\"id\": \"?\"}}]},\n"
    "  {\"name\": \"post\", \"method\": \"POST\", \"path\": \"/api/post/{id}\",\n"
    "   \"backends\": [\n"
    "    {\"name\": \"e\", \"url\": \"${BACKEND}/echo/p/{id}\", \"key\": \"e\",\n"
    "     \"method\": \"POST\", \"forward_body\": true, \"allow\": [\"body\"]}]},\n"
    "  {\"name\": \"pool\", \"path\": \"/api/pool/{id}\", \"timeout_ms\": 800,\n"
    "   \"backends\": [\n"
    "    {\"name\": \"pu\", \"url\": \"http://pool/users/{id}\", \"key\": \"u\",\n"
    "     \"timeout_ms\": 250, \"retries\": 2, \"fallback\": \"degraded\"},\n"
    "    {\"name\": \"pr\", \"url\": \"http://pool/recs/{id}\", \"key\": \"r\",\n"
    "     \"retries\": 1, \"required\": false}]},\n"
    "  {\"name\": \"hedge\", \"path\": \"/api/hedge/{id}\", \"timeout_ms\": 800,\n"
    "   \"backends\": [\n"
    "    {\"name\": \"hu\", \"url\": \"http://pool/users/{id}\", \"key\": \"u\",\n"
    "     \"timeout_ms\": 500, \"hedge_after_ms\": 30, \"retries\": 1,\n"
    "     \"fallback\": \"static\", \"static\": {\"id\": \"?\"}},\n"
    "    {\"name\": \"hb\", \"url\": \"${BACKEND}/b/{id}\", \"key\": \"b\",\n"
    "     \"timeout_ms\": 400, \"hedge_after_ms\": 20, \"required\": false}]}\n"
    " ]\n"
    "}\n";

static struct h_env env;
static atomic_bool g_stop;
static struct client *g_clients; /* freed by teardown: a failed check jumps out */

/* ---- small helpers ---- */

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : dflt;
}

/* xorshift64*: a seeded generator per thread, so a seed replays the mix. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static int rnd_in(uint64_t *s, int lo, int hi)
{
    return lo + (int)(rnd(s) % (uint64_t)(hi - lo + 1));
}

static bool status_allowed(long code)
{
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        if (allowed[i] == code) return true;
    return false;
}

/* ---- the gateway process as the kernel sees it ---- */

static long proc_rss_kb(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    /* not h_read_file: /proc files report a size of 0 */
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    while (kb < 0 && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

static int proc_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* ---- /metrics ---- */

struct scrape {
    bool ok;
    long codes[MAX_CODE]; /* gateway_requests_total summed over endpoints */
    long total;
    long inflight;
    long curl_misses, curl_hits;
    long bad_codes; /* requests_total series with a code outside [0, MAX_CODE) */
    long first, retry, hedge; /* gateway_backend_attempts_total, summed over backends */
    long exhausted;           /* gateway_retry_budget_exhausted_total */
};

/* Adds an attempts_total line's value to its kind. */
static void scrape_attempts(struct scrape *s, const char *line, long v)
{
    if (strstr(line, "kind=\"first\""))
        s->first += v;
    else if (strstr(line, "kind=\"retry\""))
        s->retry += v;
    else if (strstr(line, "kind=\"hedge\""))
        s->hedge += v;
}

static long g_scrapes; /* scrapes done by this program (all answered 200) */

static void scrape(struct scrape *s)
{
    memset(s, 0, sizeof *s);
    s->inflight = -1;
    struct h_resp r;
    h_get(env.gw.base, "/metrics", NULL, &r);
    g_scrapes++;
    if (r.status != 200) {
        fprintf(stderr, "soak: /metrics answered %ld (curl %d)\n", r.status, r.curl_code);
        h_resp_free(&r);
        return;
    }
    s->ok = true;
    for (char *line = r.body; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        const char *sp = strrchr(line, ' ');
        long v = sp ? strtol(sp + 1, NULL, 10) : 0;
        if (strncmp(line, "gateway_requests_total{", 23) == 0) {
            const char *c = strstr(line, "code=\"");
            long code = c ? strtol(c + 6, NULL, 10) : -1;
            if (code >= 0 && code < MAX_CODE)
                s->codes[code] += v;
            else
                s->bad_codes++;
            s->total += v;
        } else if (strncmp(line, "gateway_backend_attempts_total{", 31) == 0) {
            scrape_attempts(s, line, v);
        } else if (strncmp(line, "gateway_retry_budget_exhausted_total ", 37) == 0) {
            s->exhausted = v;
        } else if (strncmp(line, "gateway_inflight_requests ", 26) == 0) {
            s->inflight = v;
        } else if (strncmp(line, "gateway_pool_misses_total{pool=\"curl_easy\"}", 42) == 0) {
            s->curl_misses = v;
        } else if (strncmp(line, "gateway_pool_hits_total{pool=\"curl_easy\"}", 40) == 0) {
            s->curl_hits = v;
        }
        line = nl ? nl + 1 : NULL;
    }
    h_resp_free(&r);
}

/* ---- clients ---- */

struct client {
    pthread_t thread;
    uint64_t seed;
    long attempts;
    long codes[MAX_CODE]; /* answers received, by status */
    long aborts;          /* transfers this client cut short on purpose */
    long invalid;         /* answers that broke the contract */
    long transport;       /* transfers that failed without an abort */
    char first_bad[512];
};

struct answer {
    char *body;
    size_t len;
    bool truncated;
    char content_type[128];
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct answer *a = arg;
    size_t n = size * nmemb;
    if (a->len + n > MAX_BODY) {
        a->truncated = true;
        return n;
    }
    char *p = realloc(a->body, a->len + n + 1);
    if (!p) abort();
    memcpy(p + a->len, data, n);
    a->body = p;
    a->len += n;
    a->body[a->len] = '\0';
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    struct answer *a = arg;
    size_t n = size * nmemb;
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) a->content_type[0] = '\0';
    if (n > 13 && strncasecmp(data, "Content-Type:", 13) == 0) {
        const char *v = data + 13;
        size_t vl = n - 13;
        while (vl && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
            vl--;
        if (vl >= sizeof a->content_type) vl = sizeof a->content_type - 1;
        memcpy(a->content_type, v, vl);
        a->content_type[vl] = '\0';
    }
    return n;
}

/* One request of the mix: fills url (path part), method, headers, body. */
struct plan {
    char path[128];
    const char *method;
    const char *hdr; /* one extra header line or NULL */
    char hdrbuf[64];
    const char *body;
    long timeout_ms; /* 0: none of our own (the gateway answers first) */
};

static char g_big_body[4096];
static const char g_small_body[] = "{\"hello\":\"soak\"}";

static void make_plan(uint64_t *s, struct plan *p)
{
    memset(p, 0, sizeof *p);
    p->method = "GET";
    int id = rnd_in(s, 1, 40); /* few ids: degraded answers get stored and reused */
    int pick = rnd_in(s, 0, 99);
    int group = rnd_in(s, 0, 9); /* a fifth of the requests: the upstream group */
    if (group < 2) {
        snprintf(p->path, sizeof p->path, group ? "/api/hedge/%d" : "/api/pool/%d", id);
    } else if (pick < 22) {
        snprintf(p->path, sizeof p->path, "/api/dash/%d", id);
    } else if (pick < 40) {
        snprintf(p->path, sizeof p->path, "/api/fan/%d", id);
    } else if (pick < 48) {
        snprintf(p->path, sizeof p->path, "/api/fan3/%d", id);
    } else if (pick < 56) {
        static const int ms[] = {1, 20, 100, 140, 160, 400};
        snprintf(p->path, sizeof p->path, "/api/short/%d", ms[rnd_in(s, 0, 5)]);
    } else if (pick < 72) {
        static const char *const var[] = {
            "huge/1000", "huge/65000", "huge/70000", "huge/2000000", "drip/1",     "drip/5",
            "drip/40",   "fail/500",   "fail/404",   "fail/204",     "users/v%d",  "b/%d",
            "reset/x",   "invalid/x",  "empty/x",    "slow/250/x",   "slow/350/x", "echo/%d"};
        char arg[64];
        snprintf(arg, sizeof arg, var[rnd_in(s, 0, (int)(sizeof var / sizeof var[0]) - 1)], id);
        snprintf(p->path, sizeof p->path, "/api/var/%s", arg);
    } else if (pick < 82) {
        snprintf(p->path, sizeof p->path, "/api/opt/%d", id);
    } else if (pick < 88) {
        snprintf(p->path, sizeof p->path, "/api/post/%d", id);
        p->method = "POST";
        p->body = rnd_in(s, 0, 2) == 0 ? g_big_body : g_small_body;
    } else if (pick < 91) {
        snprintf(p->path, sizeof p->path, "/api/nowhere/%d", id); /* 404 */
    } else if (pick < 94) {
        snprintf(p->path, sizeof p->path, "/api/dash/%d", id); /* 405 */
        p->method = rnd_in(s, 0, 1) ? "DELETE" : "PUT";
    } else {
        snprintf(p->path, sizeof p->path, "/api/fan3/%d", id);
        static const char *const bad[] = {"abc", "0", "-5", "1e3", ""};
        int b = rnd_in(s, 0, 5);
        if (b < 5)
            snprintf(p->hdrbuf, sizeof p->hdrbuf, "X-Request-Timeout-Ms: %s", bad[b]);
        else
            snprintf(p->hdrbuf, sizeof p->hdrbuf, "X-Request-Timeout-Ms: %d", rnd_in(s, 1, 60));
        p->hdr = p->hdrbuf;
    }
    /* A tenth of the requests: the client gives up early (often before the
     * gateway answers, sometimes after it did). */
    if (rnd_in(s, 0, 9) == 0) p->timeout_ms = rnd_in(s, 5, 400);
}

/* Checks one answer; returns NULL when it keeps the contract, else why. */
static const char *check_answer(long code, const struct answer *a)
{
    if (!status_allowed(code)) return "status not allowed";
    if (strncasecmp(a->content_type, "application/json", 16) != 0) return "Content-Type";
    if (a->truncated) return "body over 1 MiB";
    cJSON *j = cJSON_ParseWithLength(a->body ? a->body : "", a->len);
    const char *why = NULL;
    if (!j)
        why = "body is not JSON";
    else if (!cJSON_IsObject(j))
        why = "body is not an object";
    else if (code != 200 && !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "error")))
        why = "error body without \"error\"";
    cJSON_Delete(j);
    return why;
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    CURL *e = curl_easy_init();
    if (!e) abort();
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    while (!atomic_load(&g_stop)) {
        struct plan p;
        make_plan(&c->seed, &p);
        struct answer a = {0};
        char url[256];
        snprintf(url, sizeof url, "%s%s", env.gw.base, p.path);
        struct curl_slist *hl = NULL;
        if (p.hdr) hl = curl_slist_append(hl, p.hdr);
        /* Ask for 100-continue so a 413 refused before the body is read
         * reaches us instead of a reset from unread data. */
        if (p.body) hl = curl_slist_append(hl, "Expect: 100-continue");
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &a);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, &a);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, hl);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, p.timeout_ms ? p.timeout_ms : 20000L);
        if (p.body) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, p.body);
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(p.body));
        } else {
            curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        }
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, strcmp(p.method, "GET") ? p.method : NULL);
        c->attempts++;
        CURLcode rc = curl_easy_perform(e);
        long code = 0;
        if (rc == CURLE_OK) curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        const char *why = NULL;
        if (rc == CURLE_OPERATION_TIMEDOUT && p.timeout_ms) {
            c->aborts++;
        } else if (rc != CURLE_OK) {
            c->transport++;
            why = curl_easy_strerror(rc);
        } else if ((why = check_answer(code, &a))) {
            c->invalid++;
        }
        if (rc == CURLE_OK && code > 0 && code < MAX_CODE) c->codes[code]++;
        if (why && !c->first_bad[0])
            snprintf(c->first_bad, sizeof c->first_bad, "%s %s: %s (status %ld, type '%s'): %.200s",
                     p.method, p.path, why, code, a.content_type, a.body ? a.body : "");
        curl_slist_free_all(hl);
        free(a.body);
    }
    /* Closes this client's connection before the gateway is measured. */
    curl_easy_cleanup(e);
    return NULL;
}

/* ---- chaos ---- */

static long g_chaos_actions;

#define CHAOS_MAX_ACTIVE 2

/* Keeps at most CHAOS_MAX_ACTIVE faults switched on at once, each on its
 * own prefix for 0.2 to 2 s, so the load sees calm stretches, single
 * faults and overlapping ones, and most requests still reach a backend. */
static void *chaos_main(void *arg)
{
    uint64_t s = *(uint64_t *)arg;
    static const char *const prefixes[] = {"/users", "/orders", "/recs", "/b/",   "/echo/f",
                                           "/slow",  "/empty",  "/huge", "/drip", "/echo/p"};
    enum { NPREFIX = sizeof prefixes / sizeof prefixes[0] };
    static const int statuses[] = {500, 503, 404, 429, 302, 204, 201};
    double until[NPREFIX] = {0}; /* 0: no fault on that prefix */
    while (!atomic_load(&g_stop)) {
        h_pause_ms(rnd_in(&s, 30, 300));
        char q[256];
        int active = 0;
        for (int i = 0; i < NPREFIX; i++) {
            if (until[i] && h_now_ms() >= until[i]) {
                snprintf(q, sizeof q, "prefix=%s&clear=1", prefixes[i]);
                if (h_mock_mode(&env.mock, q) == 0) g_chaos_actions++;
                until[i] = 0;
            }
            active += until[i] != 0;
        }
        if (rnd_in(&s, 0, 39) == 0) { /* now and then, a calm moment */
            if (h_mock_mode(&env.mock, "clear=1") == 0) g_chaos_actions++;
            memset(until, 0, sizeof until);
            continue;
        }
        if (active >= CHAOS_MAX_ACTIVE) continue;
        int i = rnd_in(&s, 0, NPREFIX - 1);
        const char *prefix = prefixes[i];
        switch (rnd_in(&s, 0, 7)) {
        case 0:
            snprintf(q, sizeof q, "prefix=%s&delay_ms=%d", prefix, rnd_in(&s, 20, 1200));
            break;
        case 1:
            snprintf(q, sizeof q, "prefix=%s&status=%d", prefix,
                     statuses[rnd_in(&s, 0, (int)(sizeof statuses / sizeof *statuses) - 1)]);
            break;
        case 2:
            snprintf(q, sizeof q, "prefix=%s&action=reset", prefix);
            break;
        case 3:
            snprintf(q, sizeof q, "prefix=%s&action=invalid", prefix);
            break;
        case 4:
            snprintf(q, sizeof q, "prefix=%s&delay_ms=%d&action=reset", prefix,
                     rnd_in(&s, 10, 600));
            break;
        case 5:
            snprintf(q, sizeof q, "prefix=%s&delay_ms=%d&status=500", prefix, rnd_in(&s, 10, 600));
            break;
        case 6:
            snprintf(q, sizeof q, "prefix=%s&delay_ms=%d&action=invalid", prefix,
                     rnd_in(&s, 10, 600));
            break;
        default:
            snprintf(q, sizeof q, "prefix=%s&delay_ms=%d", prefix, rnd_in(&s, 100, 400));
            break;
        }
        if (h_mock_mode(&env.mock, q) == 0) g_chaos_actions++;
        until[i] = h_now_ms() + rnd_in(&s, 200, 2000);
    }
    h_mock_mode(&env.mock, "clear=1");
    return NULL;
}

/* ---- the upstream group: a stable host and a flapping one ---- */

struct flap {
    pthread_t thread;
    uint64_t seed;
    struct h_mock stable, flappy;
    int flappy_port; /* kept: a failed start clears flappy */
    bool running;    /* the thread is to be joined */
    long stops, starts, failed_starts;
};

static struct flap g_flap;

/* The stable host's faults: slow /users (the hedges' case), a failing
 * health check while its calls succeed, or none. */
static void flap_stable(struct flap *f)
{
    static const char *const modes[] = {"prefix=/users&delay_ms=200",
                                        "prefix=/_healthz&status=503", "clear=1", "clear=1"};
    h_mock_mode(&f->stable, modes[rnd_in(&f->seed, 0, 3)]);
}

/* Every 0.3 to 1.5 s: stop the flapping host, or start it again on its
 * port (another process may have taken it: then it stays down a round). */
static void *flap_main(void *arg)
{
    struct flap *f = arg;
    while (!atomic_load(&g_stop)) {
        h_pause_ms(rnd_in(&f->seed, 300, 1500));
        if (f->flappy.pid) {
            h_mock_stop(&f->flappy);
            f->stops++;
        } else if (h_mock_start_port(&f->flappy, f->flappy_port) == 0) {
            f->starts++;
        } else {
            f->failed_starts++;
        }
        flap_stable(f);
    }
    h_mock_mode(&f->stable, "clear=1");
    return NULL;
}

/* Replaces every "${NAME}" in text by value; returns a malloc'd string. */
static char *subst(const char *text, const char *name, const char *value)
{
    char key[32];
    snprintf(key, sizeof key, "${%s}", name);
    size_t kl = strlen(key), vl = strlen(value), n = 0;
    for (const char *p = text; (p = strstr(p, key)); p += kl)
        n++;
    char *out = malloc(strlen(text) + n * vl + 1), *o = out;
    if (!out) abort();
    for (const char *p = text, *q; *p; p = q + kl) {
        if (!(q = strstr(p, key))) {
            strcpy(o, p);
            return out;
        }
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, value, vl);
        o += vl;
    }
    *o = '\0';
    return out;
}

/* Starts the group's two hosts and returns the config with their
 * addresses (malloc'd), or NULL. */
static char *group_start(struct flap *f, uint64_t seed)
{
    memset(f, 0, sizeof *f);
    f->seed = seed ? seed : 1;
    if (h_mock_start(&f->stable) != 0 || h_mock_start(&f->flappy) != 0) return NULL;
    f->flappy_port = f->flappy.port;
    char a[64], b[64];
    snprintf(a, sizeof a, "127.0.0.1:%d", f->stable.port);
    snprintf(b, sizeof b, "127.0.0.1:%d", f->flappy.port);
    char *t = subst(conf, "STABLE", a);
    char *text = subst(t, "FLAPPY", b);
    free(t);
    return text;
}

/* ---- checks ---- */

/*
 * What /metrics must say, once the gateway is idle. Every attempt a client
 * made either got an answer (counted in codes[]) or was abandoned by the
 * client (aborts). The gateway counts each request it saw exactly once, when
 * it is over: with the status it answered, or 499 when it noticed the
 * client leave first. An abandoned request may therefore appear under any
 * status (the gateway answered before it saw the hang-up; the client never
 * read it), under 499, or nowhere (the client closed before the gateway had
 * read the request). Our own scrapes are 200s. So, exactly:
 *   gateway[c] >= clients[c] for every c, and
 *   sum over c of (gateway[c] - clients[c]) <= aborts,
 *   gateway[499] <= aborts, and no other code outside the contract.
 * In particular the totals satisfy answered <= gateway <= attempts.
 */
static void check_metrics(const long *gw, long gw_total, const long *seen, long aborts,
                          long attempts)
{
    long extra = 0;
    for (int c = 0; c < MAX_CODE; c++) {
        if (gw[c] < seen[c])
            fail_msg("status %d: the gateway counted %ld, clients received %ld", c, gw[c], seen[c]);
        if (gw[c] > 0 && c != 499 && !status_allowed(c))
            fail_msg("the gateway counted %ld requests with status %d", gw[c], c);
        extra += gw[c] - seen[c];
    }
    if (gw[499] > aborts)
        fail_msg("%ld requests counted as 499, clients abandoned only %ld", gw[499], aborts);
    if (extra > aborts)
        fail_msg("the gateway counted %ld requests nobody received, clients abandoned %ld", extra,
                 aborts);
    if (gw_total > attempts)
        fail_msg("the gateway counted %ld requests, clients attempted %ld", gw_total, attempts);
}

/* Retries and hedges within the budget (gateway/budget.h: at most
 * BUDGET_CAP + first * percent/100 + BUDGET_REFILL_PER_S * seconds), and
 * no call to the stable host beyond its MAX_ATTEMPT-th attempt. */
static void check_retries(const struct scrape *s, double seconds)
{
    double bound = BUDGET_CAP + (double)s->first * BUDGET_PERCENT / 100 +
                   BUDGET_REFILL_PER_S * seconds + 1; /* + 1: the thousandths rounding */
    printf("soak: group: %ld first attempts, %ld retries, %ld hedges (budget bound %.0f, %ld "
           "refused for want of it); flapping host stopped %ld, started %ld times (%ld failed)\n",
           s->first, s->retry, s->hedge, bound, s->exhausted, g_flap.stops, g_flap.starts,
           g_flap.failed_starts);
    fflush(stdout);
    if ((double)(s->retry + s->hedge) > bound)
        fail_msg("%ld retries and hedges, the budget allows %.0f", s->retry + s->hedge, bound);
    if (s->first == 0) fail_msg("no call went through the attempt loop");
    cJSON *log = h_mock_log(&g_flap.stable, NULL);
    if (!log) fail_msg("cannot read the stable host's log");
    long n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, log) {
        const char *a = h_log_header(e, "x-gateway-attempt");
        int no = a ? atoi(a) : 0;
        if (no < 1 || no > MAX_ATTEMPT) {
            char why[128];
            snprintf(why, sizeof why, "the stable host got %s with X-Gateway-Attempt %s",
                     h_json_str(e, "path"), a ? a : "(none)");
            cJSON_Delete(log);
            fail_msg("%s", why);
        }
        n++;
    }
    cJSON_Delete(log);
    printf("soak: the stable host's last %ld calls all had X-Gateway-Attempt 1..%d\n", n,
           MAX_ATTEMPT);
}

/* Waits for the gateway to be idle: only the scrape itself in flight, twice
 * in a row with the same totals. Returns true when it settled. */
static bool settle(struct scrape *s)
{
    double end = h_now_ms() + SETTLE_MS;
    long prev_total = -1;
    while (h_now_ms() < end) {
        long before = g_scrapes;
        scrape(s);
        /* the scrape counts itself in flight; the previous one is in total */
        if (s->ok && s->inflight == 1 && s->total - before == prev_total) return true;
        prev_total = s->ok && s->inflight == 1 ? s->total - before : -1;
        h_pause_ms(100);
    }
    return false;
}

static void soak(void **state)
{
    (void)state;
    long seconds = env_long("SOAK_SECONDS", DEFAULT_SECONDS);
    long nclients = env_long("SOAK_CLIENTS", DEFAULT_CLIENTS);
    uint64_t seed = (uint64_t)env_long("SOAK_SEED", (long)time(NULL));
    if (seconds * 1000 < 2 * WARMUP_MS) seconds = 2 * WARMUP_MS / 1000;
    if (nclients < 1) nclients = 1;
    printf("soak: seed %" PRIu64 " (SOAK_SEED to replay), %ld s, %ld clients\n", seed, seconds,
           nclients);
    fflush(stdout);
    memset(g_big_body, 'x', sizeof g_big_body - 1);

    double t_start = h_now_ms();
    char *text = group_start(&g_flap, seed ^ 0xF1A9ULL);
    assert_non_null(text);
    int started = h_env_start(&env, text);
    free(text);
    assert_int_equal(started, 0);
    pid_t pid = env.gw.pid;
    /* What the gateway counted before the load (the harness's health
     * checks), once idle: a request is counted after its answer is sent, so
     * a single scrape right after the harness's last /healthz could miss it
     * and later count it against the load (one extra 200, seen in about one
     * run in eight). */
    struct scrape base;
    assert_true(settle(&base));

    struct client *cl = g_clients = calloc((size_t)nclients, sizeof *cl);
    assert_non_null(cl);
    for (long i = 0; i < nclients; i++) {
        cl[i].seed = seed * 0x9E3779B97F4A7C15ULL + (uint64_t)i + 1;
        assert_int_equal(pthread_create(&cl[i].thread, NULL, client_main, &cl[i]), 0);
    }
    uint64_t chaos_seed = seed ^ 0xC0FFEEULL;
    if (!chaos_seed) chaos_seed = 1;
    pthread_t chaos;
    assert_int_equal(pthread_create(&chaos, NULL, chaos_main, &chaos_seed), 0);
    assert_int_equal(pthread_create(&g_flap.thread, NULL, flap_main, &g_flap), 0);
    g_flap.running = true;

    double start = h_now_ms();
    h_pause_ms(WARMUP_MS);
    long rss_warm = proc_rss_kb(pid);
    int fds_warm = proc_fds(pid);
    struct scrape warm;
    scrape(&warm);
    printf("soak: after warm-up: RSS %ld KiB, %d fds, %ld requests, %ld in flight\n", rss_warm,
           fds_warm, warm.total, warm.inflight);
    fflush(stdout);
    double left = (double)seconds * 1000 - (h_now_ms() - start);
    if (left > 0) h_pause_ms((int)left);
    atomic_store(&g_stop, true);
    for (long i = 0; i < nclients; i++)
        pthread_join(cl[i].thread, NULL);
    pthread_join(chaos, NULL);
    pthread_join(g_flap.thread, NULL);
    g_flap.running = false;

    long seen[MAX_CODE] = {0}, aborts = 0, attempts = 0, invalid = 0, transport = 0;
    for (long i = 0; i < nclients; i++) {
        for (int c = 0; c < MAX_CODE; c++)
            seen[c] += cl[i].codes[c];
        aborts += cl[i].aborts;
        attempts += cl[i].attempts;
        invalid += cl[i].invalid;
        transport += cl[i].transport;
        if (cl[i].first_bad[0]) fprintf(stderr, "soak: client %ld: %s\n", i, cl[i].first_bad);
    }

    struct scrape after;
    bool settled = settle(&after);
    long rss_after = proc_rss_kb(pid);
    int fds_after = proc_fds(pid);
    /* The load's share of the counters: minus what was there before and
     * minus our own scrapes (each 200; the last one does not count itself). */
    long gw[MAX_CODE], gw_total = 0;
    for (int c = 0; c < MAX_CODE; c++) {
        gw[c] = after.codes[c] - base.codes[c] - (c == 200 ? g_scrapes - 1 : 0);
        gw_total += gw[c];
    }
    assert_int_equal(after.bad_codes, 0);

    printf("soak: %ld requests in %.1f s (%ld answered, %ld abandoned by the client, %ld chaos "
           "actions); statuses:",
           attempts, (h_now_ms() - start) / 1000, attempts - aborts - transport, aborts,
           g_chaos_actions);
    for (int c = 0; c < MAX_CODE; c++)
        if (seen[c]) printf(" %d=%ld", c, seen[c]);
    printf("\nsoak: gateway counted:");
    for (int c = 0; c < MAX_CODE; c++)
        if (gw[c]) printf(" %d=%ld", c, gw[c]);
    printf(" (abandoned requests it never saw: %ld)\n", attempts - gw_total);
    printf("soak: RSS %ld -> %ld KiB, fds %d -> %d, curl handles created %ld -> %ld (reused "
           "%ld), in flight after %ld\n",
           rss_warm, rss_after, fds_warm, fds_after, warm.curl_misses, after.curl_misses,
           after.curl_hits, after.inflight);
    fflush(stdout);

    if (transport || invalid)
        fail_msg("%ld transfers failed without an abort, %ld answers broke the contract", transport,
                 invalid);
    if (!settled)
        fail_msg("the gateway did not settle within %d ms (in flight %ld)", SETTLE_MS,
                 after.inflight);
    check_metrics(gw, gw_total, seen, aborts, attempts);
    check_retries(&after, (h_now_ms() - t_start) / 1000);
    if (!RSS_CHECKED)
        printf("soak: sanitizer build: RSS not compared (leaks are checked at exit)\n");
    else if ((double)rss_after > (double)rss_warm * RSS_FACTOR + RSS_SLACK_KB)
        fail_msg("RSS grew from %ld to %ld KiB", rss_warm, rss_after);
    if (fds_after > fds_warm + FD_MARGIN)
        fail_msg("open descriptors grew from %d to %d", fds_warm, fds_after);
    /* Each concurrent backend call needs one handle; 8 backends per request
     * at most. Handles not returned to the pool would grow with requests. */
    long handle_bound = 2 * nclients * 8;
    if (after.curl_misses > handle_bound)
        fail_msg("%ld curl handles created for at most %ld concurrent calls", after.curl_misses,
                 handle_bound);

    /* Still serving, then a clean exit. */
    assert_int_equal(h_mock_reset(&env.mock), 0);
    struct h_resp r;
    h_get(env.gw.base, "/api/fan3/7", NULL, &r);
    if (r.status != 200) fail_msg("after the soak: status %ld, body %s", r.status, r.body);
    h_resp_free(&r);
    kill(pid, SIGTERM);
    int st = h_gateway_wait_exit(&env.gw, 10000);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        h_gateway_dump(&env.gw);
        fail_msg("the gateway did not exit 0 on SIGTERM (wait status 0x%x)", st);
    }
}

static int teardown(void **state)
{
    (void)state;
    free(g_clients);
    g_clients = NULL;
    atomic_store(&g_stop, true); /* a failed check may have left the flap thread running */
    if (g_flap.running) pthread_join(g_flap.thread, NULL);
    g_flap.running = false;
    if (env.gw.pid)
        h_env_stop(&env);
    else {
        h_gateway_stop(&env.gw, false);
        h_mock_stop(&env.mock);
    }
    h_mock_stop(&g_flap.stable);
    h_mock_stop(&g_flap.flappy);
    return 0;
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(soak, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
