/*
 * config_endpoint: the "endpoints" array, each endpoint and its backends
 * (see config_endpoint.h). Internal to the loader. Names, keys and routes
 * must be unique: duplicates are found with hash sets of what came before
 * (cfg_seen, linear in the number of endpoints), one error per duplicate,
 * naming the first. Route and URL syntax is config_route's; the fields a
 * backend reads from another are bound by graph_resolve per endpoint.
 */
#include "gateway/config_endpoint.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "gateway/cachectl.h"
#include "gateway/config_edge.h"
#include "gateway/config_resil.h"
#include "gateway/config_route.h"
#include "gateway/config_web.h"
#include "gateway/expose.h"
#include "gateway/fwdhdr.h"
#include "gateway/graph.h"
#include "gateway/jpath.h"
#include "gateway/shape.h"

/* ---- lexical checks ---- */

/* RFC 9110 tchar: what a header name is made of. */
static bool is_tchar(int c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_query_char(int c)
{
    return c > 0x20 && c < 0x7f && c != '&' && c != '=' && c != '#';
}

/* Names end up in Server-Timing entries and metric labels unescaped. */
static bool is_name_char(int c)
{
    return isalnum(c) || c == '_' || c == '-' || c == '.';
}

static const char *const METHODS[] = {"GET",    "POST", "PUT",     "PATCH",
                                      "DELETE", "HEAD", "OPTIONS", NULL};

static bool method_has_body(const char *m)
{
    return strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0;
}

/* Optional method member, default GET; the result is a static string. */
static const char *get_method(struct loader *L, const cJSON *obj, const char *path)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "method");
    if (!v) return "GET";
    char p[PATH_MAX_LEN];
    cfg_key_path(p, path, "method");
    if (!cJSON_IsString(v)) {
        cfg_err(L, p, "expected a string, got %s", cfg_type_name(v));
        return "GET";
    }
    for (const char *const *m = METHODS; *m; m++)
        if (strcmp(v->valuestring, *m) == 0) return *m;
    cfg_err(L, p,
            "unsupported method \"%s\" (expected one of: GET, POST, PUT, PATCH, DELETE, HEAD, "
            "OPTIONS)",
            v->valuestring);
    return "GET";
}

/* ---- the "client" key (defaults and backends) ---- */

/* Optional "client": "auto" | "curl" | "native" of obj; *out unchanged when
 * absent or wrong (reported). */
void cfg_get_client(struct loader *L, const cJSON *obj, const char *path, enum upstream_client *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "client");
    if (!v) return;
    char p[PATH_MAX_LEN];
    cfg_key_path(p, path, "client");
    if (!cJSON_IsString(v)) {
        cfg_err(L, p, "expected \"auto\", \"curl\" or \"native\", got %s", cfg_type_name(v));
    } else if (strcmp(v->valuestring, "auto") == 0) {
        *out = CLIENT_AUTO;
    } else if (strcmp(v->valuestring, "curl") == 0) {
        *out = CLIENT_CURL;
    } else if (strcmp(v->valuestring, "native") == 0) {
        *out = CLIENT_NATIVE;
    } else {
        cfg_err(L, p, "must be \"auto\", \"curl\" or \"native\", got \"%s\"", v->valuestring);
    }
}

/* A backend's transport: its own "client" or the default; auto picks native
 * for http:// and curl for https://, where native is an error. */
static void backend_client(struct loader *L, const cJSON *b, const char *path,
                           const struct config *cfg, struct backend_conf *be)
{
    enum upstream_client c = cfg->defaults.client;
    cfg_get_client(L, b, path, &c);
    bool https = be->url && strncmp(be->url, "https://", 8) == 0;
    if (c == CLIENT_NATIVE && https) {
        char p[PATH_MAX_LEN];
        const bool own = cJSON_GetObjectItemCaseSensitive(b, "client") != NULL;
        cfg_err(L, own ? cfg_key_path(p, path, "client") : "defaults.client",
                "\"native\" speaks plain http only; %s is https (use \"auto\" or \"curl\")",
                own ? "the url" : path);
    }
    be->client = c == CLIENT_AUTO ? (https ? CLIENT_CURL : CLIENT_NATIVE) : c;
}

/* ---- endpoints and backends ---- */

static const char *const BACKEND_KEYS[] = {
    "name",   "url",      "method",    "timeout_ms",   "key",    "required",     "fallback",
    "static", "allow",    "forward_body", "client",    "cache",  "target",       "deny",
    "rename", "foreach",  "max_items", "item_failure", CFG_RESIL_BACKEND_KEYS,   NULL};
static const char *const CACHE_KEYS[] = {"ttl_ms", "honor_headers", "coalesce", NULL};
static const char *const ENDPOINT_KEYS[] = {"name",          "method",      "path",
                                            "timeout_ms",    "concurrency", "forward_headers",
                                            "forward_query", "backends",    "auth",
                                            "cors",
                                            "on_conflict", "expose_headers",
                                            NULL};

/* Required non-empty name made of is_name_char. */
static const char *get_name(struct loader *L, const cJSON *obj, const char *path)
{
    char p[PATH_MAX_LEN];
    cfg_key_path(p, path, "name");
    if (!cJSON_GetObjectItemCaseSensitive(obj, "name")) {
        cfg_err(L, p, "is required");
        return NULL;
    }
    const char *s = cfg_get_str(L, obj, path, "name", false);
    if (!s) return NULL;
    for (const char *c = s; *c; c++)
        if (!is_name_char((unsigned char)*c)) {
            cfg_err(L, p, "\"%s\" is not a valid name (letters, digits, '_', '-' and '.')", s);
            return NULL;
        }
    return s;
}

/* "cache": {ttl_ms, honor_headers, coalesce}, only on GET and HEAD backends
 * (the answers that may be reused, RFC 9110 §9.2.1). */
static void parse_cache(struct loader *L, const cJSON *b, const char *path,
                        struct backend_conf *be)
{
    char p[PATH_MAX_LEN];
    const cJSON *o = cfg_section(L, b, path, "cache", CACHE_KEYS);
    if (!o) return;
    cfg_key_path(p, path, "cache");
    be->cache.enabled = true;
    CFG_GET_INT(L, o, p, "ttl_ms", 0, CACHECTL_MAX_FRESH_MS, be->cache.ttl_ms);
    cfg_get_bool(L, o, p, "honor_headers", &be->cache.honor_headers);
    cfg_get_bool(L, o, p, "coalesce", &be->cache.coalesce);
    if (strcmp(be->method, "GET") != 0 && strcmp(be->method, "HEAD") != 0)
        cfg_err(L, p, "only GET and HEAD backends can be cached, not %s", be->method);
}

/* A list of dot paths (allow, deny), each checked with jpath_valid. */
static const char **get_paths(struct loader *L, const cJSON *b, const char *path, const char *key,
                              size_t *n)
{
    const char **v = cfg_get_str_array(L, b, path, key, true, false, NULL, "field", n);
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
    cfg_key_path(p, path, key);
    for (size_t i = 0; i < *n; i++) {
        size_t segs = 1;
        for (const char *c = v[i]; *c; c++)
            segs += *c == '.';
        if (!jpath_valid(v[i], strlen(v[i])))
            cfg_err(L, cfg_index_path(q, p, i),
                    "\"%s\" is not a dot path (names separated by single '.')", v[i]);
        else if (segs > SHAPE_MAX_SEGS)
            cfg_err(L, cfg_index_path(q, p, i), "more than %d segments", SHAPE_MAX_SEGS);
    }
    if (*n > SHAPE_MAX_PATHS)
        cfg_err(L, p, "at most %d paths, got %zu", SHAPE_MAX_PATHS, *n);
    return v;
}

static void parse_rename(struct loader *L, const cJSON *b, const char *path, struct shape_conf *sh)
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(b, "rename");
    if (!r || cJSON_IsNull(r)) return;
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
    cfg_key_path(p, path, "rename");
    if (!cJSON_IsObject(r)) {
        cfg_err(L, p, "expected an object of \"old\": \"new\" names, got %s", cfg_type_name(r));
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(r);
    sh->rename_from = cfg_alloc(L, (n ? n : 1) * sizeof(char *));
    sh->rename_to = cfg_alloc(L, (n ? n : 1) * sizeof(char *));
    for (const cJSON *m = r->child; m; m = m->next) {
        cfg_key_path(q, p, m->string);
        if (!cJSON_IsString(m) || !m->valuestring[0]) {
            cfg_err(L, q, "expected a non-empty string, got %s", cfg_type_name(m));
            continue;
        }
        bool dup = false;
        for (size_t i = 0; i < sh->n_rename; i++)
            dup |= strcmp(sh->rename_from[i], m->string) == 0;
        if (dup) {
            cfg_err(L, q, "duplicate key");
            continue;
        }
        sh->rename_from[sh->n_rename] = cfg_strndup(L, m->string, strlen(m->string));
        sh->rename_to[sh->n_rename++] = cfg_strndup(L, m->valuestring, strlen(m->valuestring));
    }
}

/* target, allow, deny, rename. A top-level allow alone stays on be->allow,
 * which the merge applies on the raw bytes (no shaping pass). */
static void parse_shape(struct loader *L, const cJSON *b, const char *path,
                        struct backend_conf *be)
{
    char p[PATH_MAX_LEN];
    struct shape_conf sh = {0};
    sh.target = cfg_get_str(L, b, path, "target", true);
    if (sh.target && !jpath_valid(sh.target, strlen(sh.target)))
        cfg_err(L, cfg_key_path(p, path, "target"),
                "\"%s\" is not a dot path (names separated by single '.')", sh.target);
    sh.allow = get_paths(L, b, path, "allow", &sh.n_allow);
    sh.deny = get_paths(L, b, path, "deny", &sh.n_deny);
    if (sh.allow && sh.deny)
        cfg_err(L, cfg_key_path(p, path, "deny"), "\"allow\" and \"deny\" cannot both be set");
    parse_rename(L, b, path, &sh);
    bool dotted = false;
    for (size_t i = 0; i < sh.n_allow; i++)
        dotted |= strchr(sh.allow[i], '.') != NULL;
    bool foreach = cJSON_GetObjectItemCaseSensitive(b, "foreach") != NULL;
    if (!sh.target && !sh.deny && !sh.n_rename && !dotted && !foreach) {
        be->allow = sh.allow;
        be->n_allow = sh.n_allow;
        return;
    }
    if (!sh.target && !sh.allow && !sh.deny && !sh.n_rename) return;
    struct shape_conf *s = cfg_alloc(L, sizeof *s);
    *s = sh;
    be->shape = s;
}

static void parse_foreach(struct loader *L, const cJSON *b, const char *path,
                          struct backend_conf *be)
{
    char p[PATH_MAX_LEN];
    const char *f = cfg_get_str(L, b, path, "foreach", true);
    cfg_key_path(p, path, "foreach");
    if (f && !jpath_valid(f, strlen(f)))
        cfg_err(L, p, "\"%s\" is not a dot path (backend.field...)", f);
    be->foreach_path = f; /* resolved by graph_resolve */
    if (f && !cJSON_GetObjectItemCaseSensitive(b, "key"))
        cfg_err(L, cfg_key_path(p, path, "key"), "is required with \"foreach\"");
    bool has_max = cJSON_GetObjectItemCaseSensitive(b, "max_items") != NULL;
    const cJSON *itf = cJSON_GetObjectItemCaseSensitive(b, "item_failure");
    if (!f && (has_max || itf)) {
        cfg_err(L, cfg_key_path(p, path, has_max ? "max_items" : "item_failure"),
                "only used with \"foreach\"");
        return;
    }
    CFG_GET_INT(L, b, path, "max_items", 1, 100000, be->max_items);
    const char *s = cfg_get_str(L, b, path, "item_failure", true);
    if (!s || strcmp(s, "fail") == 0)
        be->item_failure = ITEM_FAIL;
    else if (strcmp(s, "null") == 0)
        be->item_failure = ITEM_NULL;
    else if (strcmp(s, "omit") == 0)
        be->item_failure = ITEM_OMIT;
    else
        cfg_err(L, cfg_key_path(p, path, "item_failure"),
                "must be \"fail\", \"null\" or \"omit\", got \"%s\"", s);
}

/* "fallback" and the "static" value it may need. */
static void parse_fallback(struct loader *L, const cJSON *b, const char *path,
                           struct backend_conf *be)
{
    char p[PATH_MAX_LEN];
    const cJSON *fb = cJSON_GetObjectItemCaseSensitive(b, "fallback");
    bool fb_bad = false; /* already reported: say nothing more about static */
    cfg_key_path(p, path, "fallback");
    if (!fb || cJSON_IsNull(fb)) {
        be->fallback = FALLBACK_NONE;
    } else if (cJSON_IsString(fb) && strcmp(fb->valuestring, "degraded") == 0) {
        be->fallback = FALLBACK_DEGRADED;
    } else if (cJSON_IsString(fb) && strcmp(fb->valuestring, "static") == 0) {
        be->fallback = FALLBACK_STATIC;
    } else if (cJSON_IsString(fb)) {
        cfg_err(L, p, "must be \"degraded\" or \"static\", got \"%s\"", fb->valuestring);
        fb_bad = true;
    } else {
        cfg_err(L, p, "expected \"degraded\", \"static\" or null, got %s", cfg_type_name(fb));
        fb_bad = true;
    }

    const cJSON *st = cJSON_GetObjectItemCaseSensitive(b, "static");
    cfg_key_path(p, path, "static");
    if (st && be->fallback != FALLBACK_STATIC && !fb_bad) {
        cfg_err(L, p, "only used with \"fallback\": \"static\"");
    } else if (st && be->fallback == FALLBACK_STATIC) {
        char *json = cJSON_PrintUnformatted(st);
        if (!json) cfg_oom(L);
        be->static_len = strlen(json);
        be->static_json = cfg_strndup(L, json, be->static_len);
        cJSON_free(json);
    } else if (!st && be->fallback == FALLBACK_STATIC) {
        cfg_err(L, p, "is required when fallback is \"static\"");
    }
}

static void parse_backend(struct loader *L, const cJSON *b, const char *path,
                          const struct config *cfg, const struct endpoint_conf *ep, bool route_ok,
                          struct backend_conf *be)
{
    char p[PATH_MAX_LEN];
    be->method = "GET";
    be->timeout_ms = cfg->defaults.backend_timeout_ms;
    be->required = true;
    be->max_response_bytes = cfg->defaults.max_response_bytes;
    be->foreach_backend = -1;
    be->max_items = 100;
    if (!cJSON_IsObject(b)) {
        cfg_err(L, path, "expected an object, got %s", cfg_type_name(b));
        return;
    }
    cfg_check_keys(L, b, path, BACKEND_KEYS);
    be->name = get_name(L, b, path);
    if (!cJSON_GetObjectItemCaseSensitive(b, "url"))
        cfg_err(L, cfg_key_path(p, path, "url"), "is required");
    be->url = cfg_get_str(L, b, path, "url", false);
    if (be->url) cfg_parse_url(L, cfg_key_path(p, path, "url"), be->url, ep, route_ok, be);
    backend_client(L, b, path, cfg, be);
    be->method = get_method(L, b, path);
    CFG_GET_INT(L, b, path, "timeout_ms", 1, INT_LIMIT, be->timeout_ms);
    cfg_resil_backend(L, b, path, cfg, be);
    be->key = cfg_get_str(L, b, path, "key", true);
    cfg_get_bool(L, b, path, "required", &be->required);

    parse_fallback(L, b, path, be);
    parse_shape(L, b, path, be);
    parse_foreach(L, b, path, be);

    cfg_get_bool(L, b, path, "forward_body", &be->forward_body);
    if (be->forward_body && !method_has_body(ep->method))
        cfg_err(L, cfg_key_path(p, path, "forward_body"),
                "endpoint method %s has no body to forward (only POST, PUT and PATCH do)",
                ep->method);
    else if (be->forward_body && !method_has_body(be->method))
        cfg_err(L, cfg_key_path(p, path, "forward_body"),
                "backend method %s cannot carry a body (use POST, PUT or PATCH)", be->method);
    parse_cache(L, b, path, be);
}

static void parse_on_conflict(struct loader *L, const cJSON *e, const char *path,
                              struct endpoint_conf *ep)
{
    char p[PATH_MAX_LEN];
    const char *s = cfg_get_str(L, e, path, "on_conflict", true);
    if (!s || strcmp(s, "last") == 0)
        ep->on_conflict = CONFLICT_LAST;
    else if (strcmp(s, "first") == 0)
        ep->on_conflict = CONFLICT_FIRST;
    else if (strcmp(s, "error") == 0)
        ep->on_conflict = CONFLICT_ERROR;
    else
        cfg_err(L, cfg_key_path(p, path, "on_conflict"),
                "must be \"last\", \"first\" or \"error\", got \"%s\"", s);
}

/* expose_headers: token names, no duplicates, none the gateway owns. */
static void parse_expose(struct loader *L, const cJSON *e, const char *path,
                         struct endpoint_conf *ep)
{
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
    ep->expose_headers = cfg_get_str_array(L, e, path, "expose_headers", false, true, is_tchar,
                                           "header name", &ep->n_expose_headers);
    cfg_key_path(p, path, "expose_headers");
    if (ep->n_expose_headers > EXPOSE_MAX_NAMES)
        cfg_err(L, p, "at most %d header names, got %zu", EXPOSE_MAX_NAMES, ep->n_expose_headers);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, "expose_headers");
    size_t i = 0;
    for (const cJSON *c = cJSON_IsArray(v) ? v->child : NULL; c; c = c->next, i++) {
        const char *why = cJSON_IsString(c) ? expose_refused(c->valuestring) : NULL;
        if (why)
            cfg_err(L, cfg_index_path(q, p, i), "\"%s\" cannot be exposed: %s", c->valuestring,
                    why);
    }
}

/* e's "backends" into ep->backends: names and keys unique. false when
 * the array is missing, not an array or empty (reported). */
static bool parse_backends(struct loader *L, const cJSON *e, const char *path,
                           const struct config *cfg, struct endpoint_conf *ep, bool route_ok)
{
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(e, "backends");
    cfg_key_path(p, path, "backends");
    if (!bs) {
        cfg_err(L, p, "is required");
        return false;
    }
    if (!cJSON_IsArray(bs)) {
        cfg_err(L, p, "expected an array of backends, got %s", cfg_type_name(bs));
        return false;
    }
    size_t n = (size_t)cJSON_GetArraySize(bs);
    if (n == 0) {
        cfg_err(L, p, "must not be empty");
        return false;
    }
    ep->backends = cfg_alloc(L, n * sizeof(*ep->backends));
    ep->n_backends = n;
    struct cfg_seen names, keys;
    cfg_seen_init(L, &names, n);
    cfg_seen_init(L, &keys, n);
    parse_on_conflict(L, e, path, ep);
    size_t i = 0;
    for (const cJSON *b = bs->child; b; b = b->next, i++) {
        struct backend_conf *be = &ep->backends[i];
        char r[PATH_MAX_LEN];
        size_t j;
        cfg_index_path(q, p, i);
        parse_backend(L, b, q, cfg, ep, route_ok, be);
        if (be->name && (j = cfg_seen_add(&names, be->name, i)) != SIZE_MAX)
            cfg_err(L, cfg_key_path(r, q, "name"), "duplicate backend name \"%s\" (also %s[%zu])",
                    be->name, p, j);
        if (be->key && (j = cfg_seen_add(&keys, be->key, i)) != SIZE_MAX)
            cfg_err(L, cfg_key_path(r, q, "key"), "key \"%s\" is already used by %s[%zu]", be->key,
                    p, j);
    }
    return true;
}

static void parse_endpoint(struct loader *L, const cJSON *e, const char *path,
                           const struct config *cfg, struct endpoint_conf *ep, bool *route_ok)
{
    char p[PATH_MAX_LEN];
    ep->method = "GET";
    ep->timeout_ms = cfg->defaults.timeout_ms;
    ep->concurrency = cfg->defaults.concurrency;
    *route_ok = false;
    if (!cJSON_IsObject(e)) {
        cfg_err(L, path, "expected an object, got %s", cfg_type_name(e));
        return;
    }
    cfg_check_keys(L, e, path, ENDPOINT_KEYS);
    ep->name = get_name(L, e, path);
    ep->method = get_method(L, e, path);
    cfg_key_path(p, path, "path");
    if (!cJSON_GetObjectItemCaseSensitive(e, "path")) cfg_err(L, p, "is required");
    ep->path = cfg_get_str(L, e, path, "path", false);
    if (ep->path) *route_ok = cfg_parse_route(L, p, ep->path, ep);
    CFG_GET_INT(L, e, path, "timeout_ms", 1, INT_LIMIT, ep->timeout_ms);
    CFG_GET_INT(L, e, path, "concurrency", 1, 65535, ep->concurrency);
    ep->forward_headers = cfg_get_str_array(L, e, path, "forward_headers", false, true, is_tchar,
                                            "header name", &ep->n_forward_headers);
    if (ep->n_forward_headers > FWD_MAX) /* what one backend call carries: fwdhdr.h */
        cfg_err(L, cfg_key_path(p, path, "forward_headers"), "at most %d header names, got %zu",
                FWD_MAX, ep->n_forward_headers);
    ep->forward_query = cfg_get_str_array(L, e, path, "forward_query", false, false, is_query_char,
                                          "query parameter name", &ep->n_forward_query);
    parse_expose(L, e, path, ep);
    cfg_parse_endpoint_auth(L, e, path, cfg, ep);
    const struct cors_conf *cors = cfg_parse_cors(L, e, path);
    ep->cors = cors ? cors : cfg->defaults.cors;

    if (parse_backends(L, e, path, cfg, ep, *route_ok)) graph_resolve(L, ep, path);
}

/* The route's shape as a string: method, then the path with every
 * parameter as {} ("GET /a/{}/c"). Literals hold neither '{' nor '/', so
 * two routes are duplicates exactly when their shapes are equal. */
static const char *route_shape(struct loader *L, const struct endpoint_conf *ep)
{
    size_t n = strlen(ep->method) + 2;
    for (size_t i = 0; i < ep->n_segs; i++)
        n += 1 + (ep->segs[i].literal ? ep->segs[i].literal_len : 2);
    char *shape = cfg_temp_alloc(L, n + 1), *o = shape;
    o += sprintf(o, "%s ", ep->method);
    if (!ep->n_segs) *o++ = '/';
    for (size_t i = 0; i < ep->n_segs; i++) {
        const struct route_seg *sg = &ep->segs[i];
        *o++ = '/';
        memcpy(o, sg->literal ? sg->literal : "{}", sg->literal ? sg->literal_len : 2);
        o += sg->literal ? sg->literal_len : 2;
    }
    *o = '\0';
    return shape;
}

void cfg_parse_endpoints(struct loader *L, const cJSON *root, struct config *cfg)
{
    const cJSON *es = cJSON_GetObjectItemCaseSensitive(root, "endpoints");
    if (!es) {
        cfg_err(L, "endpoints", "is required");
        return;
    }
    if (!cJSON_IsArray(es)) {
        cfg_err(L, "endpoints", "expected an array of endpoints, got %s", cfg_type_name(es));
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(es);
    if (n == 0) {
        cfg_err(L, "endpoints", "must not be empty");
        return;
    }
    cfg->endpoints = cfg_alloc(L, n * sizeof(*cfg->endpoints));
    cfg->n_endpoints = n;
    struct cfg_seen names, shapes; /* linear checks: 20,000 endpoints are common enough */
    cfg_seen_init(L, &names, n);
    cfg_seen_init(L, &shapes, n);
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
    size_t i = 0, j;
    for (const cJSON *e = es->child; e; e = e->next, i++) {
        struct endpoint_conf *ep = &cfg->endpoints[i];
        bool route_ok;
        parse_endpoint(L, e, cfg_index_path(p, "endpoints", i), cfg, ep, &route_ok);
        if (ep->name && (j = cfg_seen_add(&names, ep->name, i)) != SIZE_MAX)
            cfg_err(L, cfg_key_path(q, p, "name"),
                    "duplicate endpoint name \"%s\" (also endpoints[%zu])", ep->name, j);
        if (route_ok && (j = cfg_seen_add(&shapes, route_shape(L, ep), i)) != SIZE_MAX)
            cfg_err(L, cfg_key_path(q, p, "path"),
                    "duplicate route %s %s: endpoints[%zu] already routes %s %s", ep->method,
                    ep->path, j, cfg->endpoints[j].method, cfg->endpoints[j].path);
    }
}
