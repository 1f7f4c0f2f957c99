/* config_resil: parsing and validation of the resilience keys; see
 * config_resil.h and README.md "Upstream groups". */
#include "gateway/config_resil.h"

#include <cJSON.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/upstream.h"

#define RETRIES_MAX 5

static const char *const BREAKER_KEYS[] = {"consecutive_failures", "open_ms", NULL};
static const char *const HEALTH_KEYS[] = {"path",          "interval_ms",   "timeout_ms",
                                          "unhealthy_after", "healthy_after", NULL};
static const char *const GROUP_KEYS[] = {"hosts", "balance", "health_check", "breaker", NULL};

/* A breaker object, or null (off). */
static void parse_breaker(struct loader *L, const cJSON *parent, const char *path,
                          struct breaker_conf *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(parent, "breaker");
    if (!v) return;
    if (cJSON_IsNull(v)) {
        *out = (struct breaker_conf){0};
        return;
    }
    const cJSON *o = cfg_section(L, parent, path, "breaker", BREAKER_KEYS);
    if (!o) return;
    char p[PATH_MAX_LEN];
    cfg_key_path(p, path, "breaker");
    out->consecutive_failures = 5;
    out->open_ms = 10000;
    CFG_GET_INT(L, o, p, "consecutive_failures", 1, 1000000, out->consecutive_failures);
    CFG_GET_INT(L, o, p, "open_ms", 1, INT_LIMIT, out->open_ms);
}

static void parse_retry_on(struct loader *L, const cJSON *o, const char *path, unsigned *out)
{
    size_t n = 0;
    const char **w = cfg_get_str_array(L, o, path, "retry_on", false, false, NULL, "word", &n);
    if (!w) return;
    static const char *const words[] = {"connect", "reset", "5xx", "timeout"};
    unsigned bits = 0;
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
    cfg_key_path(p, path, "retry_on");
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < 4 && strcmp(w[i], words[k]) != 0)
            k++;
        if (k == 4)
            cfg_err(L, cfg_index_path(q, p, i),
                    "unknown word \"%s\" (connect, reset, 5xx or timeout)", w[i]);
        else
            bits |= 1u << k;
    }
    *out = bits;
}

/* retries, retry_on, hedge_after_ms of a backend or of defaults. */
static void parse_retry(struct loader *L, const cJSON *o, const char *path, struct retry_conf *r)
{
    CFG_GET_INT(L, o, path, "retries", 0, RETRIES_MAX, r->retries);
    if (cJSON_GetObjectItemCaseSensitive(o, "retry_on")) parse_retry_on(L, o, path, &r->retry_on);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "hedge_after_ms");
    if (h && cJSON_IsNull(h))
        r->hedge_after_ms = 0;
    else if (h)
        CFG_GET_INT(L, o, path, "hedge_after_ms", 1, INT_LIMIT, r->hedge_after_ms);
}

void cfg_resil_defaults(struct loader *L, const cJSON *o, struct defaults_conf *d)
{
    d->breaker = (struct breaker_conf){0};
    d->retry = (struct retry_conf){.retries = 0, .retry_on = RETRY_ON_ALL, .hedge_after_ms = 0};
    d->retry_budget_percent = 20;
    if (!o) return;
    parse_breaker(L, o, "defaults", &d->breaker);
    parse_retry(L, o, "defaults", &d->retry);
    CFG_GET_INT(L, o, "defaults", "retry_budget_percent", 0, 100, d->retry_budget_percent);
}

/* "host:port" with a non-empty host of hostname characters (or [v6]). */
static bool valid_host_port(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || !colon[1] || strlen(colon + 1) > 5) return false;
    for (const char *c = colon + 1; *c; c++)
        if (!isdigit((unsigned char)*c)) return false;
    long port = strtol(colon + 1, NULL, 10);
    if (port < 1 || port > 65535) return false;
    if (s[0] == '[') return colon[-1] == ']' && colon - s > 2;
    for (const char *c = s; c < colon; c++)
        if (!isalnum((unsigned char)*c) && *c != '-' && *c != '.' && *c != '_') return false;
    return true;
}

static bool host_char(int c)
{
    return c > 0x20 && c < 0x7f;
}

static void parse_health(struct loader *L, const cJSON *g, const char *path, struct health_conf *h)
{
    const cJSON *o = cfg_section(L, g, path, "health_check", HEALTH_KEYS);
    if (!o) return;
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
    cfg_key_path(p, path, "health_check");
    h->path = "/healthz";
    h->interval_ms = 1000;
    h->timeout_ms = 500;
    h->unhealthy_after = 2;
    h->healthy_after = 2;
    const char *hp = cfg_get_str(L, o, p, "path", false);
    if (hp && hp[0] != '/')
        cfg_err(L, cfg_key_path(q, p, "path"), "must start with '/', got \"%s\"", hp);
    else if (hp)
        h->path = hp;
    CFG_GET_INT(L, o, p, "interval_ms", 10, INT_LIMIT, h->interval_ms);
    CFG_GET_INT(L, o, p, "timeout_ms", 1, INT_LIMIT, h->timeout_ms);
    CFG_GET_INT(L, o, p, "unhealthy_after", 1, 1000, h->unhealthy_after);
    CFG_GET_INT(L, o, p, "healthy_after", 1, 1000, h->healthy_after);
}

static void parse_group(struct loader *L, const cJSON *g, const char *path,
                        const struct config *cfg, struct ugroup_conf *u)
{
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
    u->breaker = cfg->defaults.breaker;
    if (!cJSON_IsObject(g)) {
        cfg_err(L, path, "expected an object, got %s", cfg_type_name(g));
        return;
    }
    cfg_check_keys(L, g, path, GROUP_KEYS);
    cfg_key_path(p, path, "hosts");
    if (!cJSON_GetObjectItemCaseSensitive(g, "hosts")) cfg_err(L, p, "is required");
    u->hosts = cfg_get_str_array(L, g, path, "hosts", false, true, host_char, "host", &u->n_hosts);
    if (u->hosts && u->n_hosts == 0) cfg_err(L, p, "must not be empty");
    for (size_t i = 0; u->hosts && i < u->n_hosts; i++)
        if (!valid_host_port(u->hosts[i]))
            cfg_err(L, cfg_index_path(q, p, i), "\"%s\" is not host:port", u->hosts[i]);
        else if (strlen(u->hosts[i]) > UPSTREAM_ORIGIN_MAX - 8) /* "https://" + it: upstream.h */
            cfg_err(L, cfg_index_path(q, p, i), "is %zu bytes, at most %d", strlen(u->hosts[i]),
                    UPSTREAM_ORIGIN_MAX - 8);
    const char *bal = cfg_get_str(L, g, path, "balance", false);
    if (bal && strcmp(bal, "round_robin") == 0)
        u->balance = BALANCE_ROUND_ROBIN;
    else if (bal && strcmp(bal, "least_inflight") != 0)
        cfg_err(L, cfg_key_path(q, path, "balance"),
                "must be \"least_inflight\" or \"round_robin\", got \"%s\"", bal);
    parse_health(L, g, path, &u->health);
    parse_breaker(L, g, path, &u->breaker);
}

static bool valid_group_name(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '.' && *s != '_') return false;
    return true;
}

void cfg_resil_upstreams(struct loader *L, const cJSON *root, struct config *cfg)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(root, "upstreams");
    if (!o || cJSON_IsNull(o)) return;
    if (!cJSON_IsObject(o)) {
        cfg_err(L, "upstreams", "expected an object of groups, got %s", cfg_type_name(o));
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(o);
    cfg->upstreams = cfg_alloc(L, (n ? n : 1) * sizeof(*cfg->upstreams));
    char p[PATH_MAX_LEN];
    for (const cJSON *g = o->child; g; g = g->next) {
        struct ugroup_conf *u = &cfg->upstreams[cfg->n_upstreams++];
        cfg_key_path(p, "upstreams", g->string);
        if (!valid_group_name(g->string))
            cfg_err(L, p, "\"%s\" is not a valid group name (a host name)", g->string);
        u->name = cfg_strndup(L, g->string, strlen(g->string));
        parse_group(L, g, p, cfg, u);
    }
}

/* The group the URL's host names: "http://NAME/..." with no port. */
static const struct ugroup_conf *url_group(const struct config *cfg, const char *url)
{
    const char *a = strstr(url, "://");
    if (!a) return NULL;
    a += 3;
    size_t n = strcspn(a, "/?:");
    if (a[n] == ':') return NULL;
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        if (strlen(cfg->upstreams[i].name) == n && memcmp(cfg->upstreams[i].name, a, n) == 0)
            return &cfg->upstreams[i];
    return NULL;
}

void cfg_resil_backend(struct loader *L, const cJSON *b, const char *path,
                       const struct config *cfg, struct backend_conf *be)
{
    be->retry = cfg->defaults.retry;
    parse_retry(L, b, path, &be->retry);
    if (be->url) be->group = url_group(cfg, be->url);
    if (be->retry.hedge_after_ms && be->retry.hedge_after_ms >= be->timeout_ms) {
        char p[PATH_MAX_LEN];
        cfg_err(L, cfg_key_path(p, path, "hedge_after_ms"),
                "%u must be below the backend's timeout_ms (%u)", be->retry.hedge_after_ms,
                be->timeout_ms);
    }
}
