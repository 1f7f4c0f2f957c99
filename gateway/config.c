/*
 * config: JSON -> validated, immutable snapshot. See config.h and
 * conf/README.md for the schema.
 *
 * The loader walks the cJSON tree once, filling the snapshot and collecting
 * every problem as it goes, so one run of `gateway --check` shows them all.
 * Duplicate routes and names are found with hash sets of what came before
 * (linear: configs with tens of thousands of endpoints are checked on every
 * SIGHUP), one error per duplicate, naming the first. Before the walk, one
 * pass over the raw text checks that every string is UTF-8 without \u0000
 * (cJSON would cut it there). The text is at most CONFIG_MAX_BYTES.
 * Everything the snapshot points to lives in one chain of arena blocks
 * (scratch, such as the hash sets, in a second chain freed when the parse
 * ends); an out-of-memory anywhere unwinds with longjmp to config_parse,
 * which frees the arenas and the cJSON tree in one place.
 */
#include "gateway/config.h"
#include "gateway/cachectl.h"
#include "gateway/config_edge.h"
#include "gateway/config_load.h"
#include "gateway/config_web.h"
#include "gateway/expose.h"
#include "gateway/config_resil.h"
#include "gateway/fwdhdr.h"
#include "gateway/graph.h"
#include "gateway/jpath.h"
#include "gateway/shape.h"
#include "gateway/router.h"
#include "gateway/upstream.h"
#include "gateway/urlbuild.h"

#include <arpa/inet.h>
#include <cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* RFC 3986 pchar minus '%': route literals are matched against the raw
 * path, so an encoded form here could never match what clients send. */
static bool is_route_char(int c)
{
    return isalnum(c) || (c && strchr("-._~!$&'()*+,;=:@", c));
}

static bool is_ident(const char *s, size_t n)
{
    if (!n || !(isalpha((unsigned char)s[0]) || s[0] == '_')) return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_')) return false;
    return true;
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

static bool parse_port(const char *s, size_t n, uint16_t *port)
{
    if (!n || n > 5) return false;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < 1 || v > 65535) return false;
    *port = (uint16_t)v;
    return true;
}

/* ---- server, defaults, degraded, access_log ---- */

/* ---- upstream transport: "client" and the "upstream" section ---- */

static const char *const UPSTREAM_KEYS[] = {"max_idle_per_origin", "idle_timeout_s",
                                            "connect_timeout_ms", "dns_refresh_s", NULL};

/* Optional "client": "auto" | "curl" | "native" of obj; *out unchanged when
 * absent or wrong (reported). */
static void get_client(struct loader *L, const cJSON *obj, const char *path,
                       enum upstream_client *out)
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
    get_client(L, b, path, &c);
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

static void parse_upstream(struct loader *L, const cJSON *root, struct upstream_conf *u)
{
    u->max_idle_per_origin = 256;
    u->idle_timeout_s = 60;
    u->connect_timeout_ms = 1000;
    u->dns_refresh_s = 30;
    const cJSON *o = cfg_section(L, root, "", "upstream", UPSTREAM_KEYS);
    if (!o) return;
    CFG_GET_INT(L, o, "upstream", "max_idle_per_origin", 0, 65535, u->max_idle_per_origin);
    CFG_GET_INT(L, o, "upstream", "idle_timeout_s", 1, 86400, u->idle_timeout_s);
    CFG_GET_INT(L, o, "upstream", "connect_timeout_ms", 1, INT_LIMIT, u->connect_timeout_ms);
    CFG_GET_INT(L, o, "upstream", "dns_refresh_s", 1, 86400, u->dns_refresh_s);
}

static void parse_listen(struct loader *L, const char *path, const char *s, struct server_conf *sv)
{
    const char *host, *colon;
    size_t host_len;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':') goto bad;
        host = s + 1;
        host_len = (size_t)(end - host);
        colon = end + 1;
        sv->family = AF_INET6;
    } else {
        colon = strrchr(s, ':');
        if (!colon) goto bad;
        host = s;
        host_len = (size_t)(colon - s);
        sv->family = AF_INET;
    }
    if (host_len == 0 || host_len >= sizeof(sv->host)) goto bad;
    char h[sizeof(sv->host)];
    memcpy(h, host, host_len);
    h[host_len] = '\0';
    if (sv->family == AF_INET && strcmp(h, "localhost") == 0) strcpy(h, "127.0.0.1");
    unsigned char addr[sizeof(struct in6_addr)];
    if (inet_pton(sv->family, h, addr) != 1) goto bad;
    if (!parse_port(colon + 1, strlen(colon + 1), &sv->port)) {
        cfg_err(L, path, "port must be an integer between 1 and 65535 in \"%s\"", s);
        return;
    }
    strcpy(sv->host, h);
    return;
bad:
    cfg_err(L, path,
            "\"%s\" is not a numeric address and port (expected \"a.b.c.d:port\" or \"[v6]:port\")",
            s);
}

static const char *const SERVER_KEYS[] = {"listen",
                                          "workers",
                                          "max_connections",
                                          "connection_timeout_s",
                                          "max_request_body_bytes",
                                          "shutdown_timeout_ms",
                                          "max_header_bytes",
                                          "header_timeout_ms",
                                          "drain_accept_ms",
                                          "tls",
                                          "gzip",
                                          NULL};
static const char *const DEFAULTS_KEYS[] = {"timeout_ms",         "max_timeout_ms",
                                            "backend_timeout_ms", "max_response_bytes",
                                            "concurrency",        "cors",
                                            "client",             CFG_RESIL_DEFAULTS_KEYS,
                                            NULL};
static const char *const DEGRADED_KEYS[] = {"max_entries", "max_stale_s", "snapshot_path",
                                            "snapshot_interval_s", NULL};
static const char *const ACCESS_LOG_KEYS[] = {"path", NULL};

/* "server": the listener and connection limits, with their defaults. */
static void parse_server(struct loader *L, const cJSON *root, struct config *cfg)
{
    struct server_conf *sv = &cfg->server;
    sv->listen = "0.0.0.0:8080";
    strcpy(sv->host, "0.0.0.0");
    sv->family = AF_INET;
    sv->port = 8080;
    sv->workers = 0;
    sv->max_connections = 10000;
    sv->connection_timeout_s = 30;
    sv->max_request_body_bytes = 1048576;
    sv->shutdown_timeout_ms = 10000;
    sv->max_header_bytes = 16384;
    sv->header_timeout_ms = 10000;
    sv->drain_accept_ms = 500;
    const cJSON *o = cfg_section(L, root, "", "server", SERVER_KEYS);
    if (o) {
        const char *listen = cfg_get_str(L, o, "server", "listen", false);
        if (listen) {
            sv->listen = listen;
            parse_listen(L, "server.listen", listen, sv);
        }
        CFG_GET_INT(L, o, "server", "workers", 0, 1024, sv->workers);
        CFG_GET_INT(L, o, "server", "max_connections", 1, INT_LIMIT, sv->max_connections);
        CFG_GET_INT(L, o, "server", "connection_timeout_s", 0, INT_LIMIT, sv->connection_timeout_s);
        CFG_GET_INT(L, o, "server", "max_request_body_bytes", 0, INT_LIMIT,
                    sv->max_request_body_bytes);
        CFG_GET_INT(L, o, "server", "shutdown_timeout_ms", 0, INT_LIMIT, sv->shutdown_timeout_ms);
        CFG_GET_INT(L, o, "server", "max_header_bytes", 1024, 1048576, sv->max_header_bytes);
        CFG_GET_INT(L, o, "server", "header_timeout_ms", 100, 3600000, sv->header_timeout_ms);
        CFG_GET_INT(L, o, "server", "drain_accept_ms", 0, 60000, sv->drain_accept_ms);
        cfg_parse_server_web(L, o, sv);
    }
    if (sv->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        sv->workers = n > 0 ? (int)n : 1;
    }
}

/* "defaults" (with the resilience defaults) and "upstream". */
static void parse_defaults(struct loader *L, const cJSON *root, struct config *cfg)
{
    struct defaults_conf *d = &cfg->defaults;
    d->timeout_ms = 1000;
    d->max_timeout_ms = 10000;
    d->backend_timeout_ms = 1000;
    d->max_response_bytes = 8388608;
    d->concurrency = 16;
    const cJSON *o = cfg_section(L, root, "", "defaults", DEFAULTS_KEYS);
    if (o) {
        CFG_GET_INT(L, o, "defaults", "timeout_ms", 1, INT_LIMIT, d->timeout_ms);
        CFG_GET_INT(L, o, "defaults", "max_timeout_ms", 1, INT_LIMIT, d->max_timeout_ms);
        CFG_GET_INT(L, o, "defaults", "backend_timeout_ms", 1, INT_LIMIT, d->backend_timeout_ms);
        CFG_GET_INT(L, o, "defaults", "max_response_bytes", 1, INT_LIMIT, d->max_response_bytes);
        CFG_GET_INT(L, o, "defaults", "concurrency", 1, 65535, d->concurrency);
        d->cors = cfg_parse_cors(L, o, "defaults");
        get_client(L, o, "defaults", &d->client);
    }
    parse_upstream(L, root, &cfg->upstream);
    cfg_resil_defaults(L, o, d);
}

/* "degraded" and "access_log". */
static void parse_store_and_log(struct loader *L, const cJSON *root, struct config *cfg)
{
    struct degraded_conf *g = &cfg->degraded;
    g->max_entries = 100000;
    g->max_stale_s = 3600;
    g->snapshot_path = NULL;
    g->snapshot_interval_s = 30;
    const cJSON *o = cfg_section(L, root, "", "degraded", DEGRADED_KEYS);
    if (o) {
        CFG_GET_INT(L, o, "degraded", "max_entries", 0, INT_LIMIT, g->max_entries);
        CFG_GET_INT(L, o, "degraded", "max_stale_s", 0, INT_LIMIT, g->max_stale_s);
        g->snapshot_path = cfg_get_str(L, o, "degraded", "snapshot_path", true);
        CFG_GET_INT(L, o, "degraded", "snapshot_interval_s", 1, INT_LIMIT, g->snapshot_interval_s);
    }

    cfg->access_log_path = "-";
    o = cfg_section(L, root, "", "access_log", ACCESS_LOG_KEYS);
    if (o) {
        const char *p = cfg_get_str(L, o, "access_log", "path", false);
        if (p) cfg->access_log_path = p;
    }
}

/* The top-level sections other than endpoints, auth, tracing and upstreams,
 * in the order their errors are reported. */
static void parse_globals(struct loader *L, const cJSON *root, struct config *cfg)
{
    parse_server(L, root, cfg);
    parse_defaults(L, root, cfg);
    parse_store_and_log(L, root, cfg);
}

/* ---- routes and URL templates ---- */

static int param_index(const struct endpoint_conf *ep, const char *name, size_t n)
{
    for (size_t i = 0; i < ep->n_params; i++)
        if (strlen(ep->params[i]) == n && memcmp(ep->params[i], name, n) == 0) return (int)i;
    return -1;
}

/* Splits the route pattern into ep->segs and ep->params. Reports the first
 * problem only: later ones in the same path are usually consequences. */
static bool parse_route(struct loader *L, const char *path, const char *s, struct endpoint_conf *ep)
{
    if (s[0] != '/') {
        cfg_err(L, path, "must start with '/', got \"%s\"", s);
        return false;
    }
    if (strcmp(s, "/healthz") == 0 || strcmp(s, "/readyz") == 0 || strcmp(s, "/metrics") == 0) {
        cfg_err(L, path, "%s is a built-in path", s);
        return false;
    }
    if (strcmp(s, "/") == 0) return true;
    size_t n = 0;
    for (const char *c = s; *c; c++)
        n += *c == '/';
    if (n > ROUTE_MAX_SEGS) {
        cfg_err(L, path, "more than %d segments in \"%s\"", ROUTE_MAX_SEGS, s);
        return false;
    }
    ep->segs = cfg_alloc(L, n * sizeof(*ep->segs));
    ep->params = cfg_alloc(L, n * sizeof(*ep->params));
    const char *seg = s + 1;
    for (;;) {
        const char *end = strchrnul(seg, '/');
        size_t len = (size_t)(end - seg);
        struct route_seg *rs = &ep->segs[ep->n_segs];
        if (len == 0) {
            cfg_err(L, path, "empty segment in \"%s\" (no \"//\" and no trailing '/')", s);
            return false;
        }
        if (seg[0] == '{' && seg[len - 1] == '}') {
            if (!is_ident(seg + 1, len - 2)) {
                cfg_err(L, path,
                        "bad parameter \"%.*s\" in \"%s\" (expected {name}, name a letter or "
                        "'_' then letters, digits or '_')",
                        (int)len, seg, s);
                return false;
            }
            if (param_index(ep, seg + 1, len - 2) >= 0) {
                cfg_err(L, path, "duplicate parameter {%.*s} in \"%s\"", (int)len - 2, seg + 1, s);
                return false;
            }
            if (ep->n_params == ROUTE_MAX_PARAMS) {
                cfg_err(L, path, "more than %d parameters in \"%s\"", ROUTE_MAX_PARAMS, s);
                return false;
            }
            rs->literal = NULL;
            rs->param = (int)ep->n_params;
            ep->params[ep->n_params++] = cfg_strndup(L, seg + 1, len - 2);
        } else {
            for (size_t i = 0; i < len; i++) {
                if (seg[i] == '{' || seg[i] == '}') {
                    cfg_err(L, path,
                            "a parameter must be a whole segment, as in /a/{id}, in \"%s\"", s);
                    return false;
                }
                if (!is_route_char((unsigned char)seg[i])) {
                    cfg_err(L, path, "character '%c' (0x%02x) not allowed in \"%s\"",
                            isprint((unsigned char)seg[i]) ? seg[i] : '?', (unsigned char)seg[i],
                            s);
                    return false;
                }
            }
            rs->literal = cfg_strndup(L, seg, len);
            rs->literal_len = len;
            rs->param = -1;
        }
        ep->n_segs++;
        if (!*end) return true;
        seg = end + 1;
    }
}

/* Checks host[:port] of a backend URL. */
static bool valid_authority(const char *a, size_t n)
{
    size_t host_end;
    if (n && a[0] == '[') {
        const char *rb = memchr(a, ']', n);
        if (!rb || rb - a < 2) return false;
        for (const char *c = a + 1; c < rb; c++)
            if (!isxdigit((unsigned char)*c) && *c != ':' && *c != '.') return false;
        host_end = (size_t)(rb - a) + 1;
    } else {
        host_end = 0;
        while (host_end < n && a[host_end] != ':') {
            char c = a[host_end++];
            if (!isalnum((unsigned char)c) && c != '-' && c != '.' && c != '_') return false;
        }
        if (host_end == 0) return false;
    }
    if (host_end == n) return true;
    uint16_t port;
    return a[host_end] == ':' && parse_port(a + host_end + 1, n - host_end - 1, &port);
}

/* {item}, {item.x} or a dotted {backend.path} with a well-formed path:
 * not a route param (those are plain identifiers other than "item"). */
static bool placeholder_field(const char *name, size_t n)
{
    if (n == 4 && memcmp(name, "item", 4) == 0) return true;
    return memchr(name, '.', n) && jpath_valid(name, n);
}

/* The lengths the transports take (upstream.h, urlbuild.h): an origin u[0..
 * p) of at most UPSTREAM_ORIGIN_MAX bytes, and a path (p up to the query)
 * under URLBUILD_PATH_MAX bytes even with every placeholder empty, else
 * every call would fail ("bad URL") or be the client's 414. */
static bool url_lengths_ok(struct loader *L, const char *path, const char *u, const char *p)
{
    size_t olen = (size_t)(p - u), plen = 0;
    if (olen > UPSTREAM_ORIGIN_MAX) {
        cfg_err(L, path, "the origin (scheme://host:port) is %zu bytes, at most %d", olen,
                UPSTREAM_ORIGIN_MAX);
        return false;
    }
    for (; *p && *p != '?'; p++) {
        const char *close = *p == '{' ? strchr(p, '}') : NULL;
        if (close)
            p = close;
        else
            plen++;
    }
    if (plen >= URLBUILD_PATH_MAX) {
        cfg_err(L, path, "the path is %zu bytes without its placeholders, at most %d", plen,
                URLBUILD_PATH_MAX - 1);
        return false;
    }
    return true;
}

/* The origin part of a backend URL template u: no whitespace, control
 * characters or fragment anywhere, http:// or https://, a valid host and
 * port without placeholders, then a '/'. Returns where the path starts, or
 * NULL after reporting what is wrong. */
static const char *url_origin(struct loader *L, const char *path, const char *u)
{
    for (const char *c = u; *c; c++) {
        if ((unsigned char)*c <= 0x20 || *c == 0x7f) {
            cfg_err(L, path, "must not contain whitespace or control characters");
            return NULL;
        }
        if (*c == '#') {
            cfg_err(L, path, "must not contain a fragment ('#')");
            return NULL;
        }
    }
    const char *a;
    if (strncmp(u, "http://", 7) == 0)
        a = u + 7;
    else if (strncmp(u, "https://", 8) == 0)
        a = u + 8;
    else {
        cfg_err(L, path, "must start with http:// or https://, got \"%s\"", u);
        return NULL;
    }
    size_t alen = strcspn(a, "/?");
    if (memchr(a, '{', alen) || memchr(a, '}', alen)) {
        cfg_err(L, path, "placeholders are only allowed in the path and query of \"%s\"", u);
        return NULL;
    }
    if (!valid_authority(a, alen)) {
        cfg_err(L, path, "bad host or port in \"%s\"", u);
        return NULL;
    }
    if (a[alen] != '/') {
        cfg_err(L, path, "needs a path starting with '/' after the host in \"%s\"", u);
        return NULL;
    }
    return a + alen;
}

/* Appends the literal part lit[0..end) to be->parts (nothing when empty). */
static void add_literal(struct backend_conf *be, const char *lit, const char *end)
{
    if (end <= lit) return;
    be->parts[be->n_parts].literal = lit;
    be->parts[be->n_parts].literal_len = (size_t)(end - lit);
    be->parts[be->n_parts].backend = -1;
    be->parts[be->n_parts++].param = -1;
}

/* Appends the placeholder {name[0..nlen)} to be->parts: a route param, or a
 * field resolved later by graph_resolve ({backend.path}, {item...}). */
static void add_placeholder(struct loader *L, const char *path, const char *name, size_t nlen,
                            const struct endpoint_conf *ep, bool route_ok, struct backend_conf *be)
{
    int idx = -1;
    const char *field = NULL;
    if (placeholder_field(name, nlen)) {
        /* {backend.path} or {item...}: resolved by graph_resolve */
        if (!is_ident(name, nlen) || !route_ok || param_index(ep, name, nlen) < 0)
            field = cfg_strndup(L, name, nlen);
        else
            idx = param_index(ep, name, nlen);
    } else if (!is_ident(name, nlen)) {
        cfg_err(L, path, "bad placeholder {%.*s} (expected {param}, {backend.field} or {item.field})",
                (int)nlen, name);
    } else if (route_ok && (idx = param_index(ep, name, nlen)) < 0) {
        cfg_err(L, path, "{%.*s} is not a parameter of %s", (int)nlen, name, ep->path);
    }
    be->parts[be->n_parts].literal = NULL;
    be->parts[be->n_parts].backend = -1;
    be->parts[be->n_parts].field = field;
    be->parts[be->n_parts++].param = idx;
}

/* Validates a backend URL template and splits it into be->parts. Placeholder
 * names are checked against the endpoint's params only when its route was
 * valid (route_ok), so one bad path does not cascade. */
static void parse_url(struct loader *L, const char *path, const char *u,
                      const struct endpoint_conf *ep, bool route_ok, struct backend_conf *be)
{
    const char *c = url_origin(L, path, u);
    if (!c || !url_lengths_ok(L, path, u, c)) return;
    /* at most one param part and one literal part per '{', plus a tail */
    size_t n_open = 0;
    for (const char *k = u; *k; k++)
        n_open += *k == '{';
    be->parts = cfg_alloc(L, (2 * n_open + 1) * sizeof(*be->parts));
    const char *lit = u;
    while (*c) {
        if (*c == '}') {
            cfg_err(L, path, "unbalanced '}' in \"%s\"", u);
            return;
        }
        if (*c != '{') {
            c++;
            continue;
        }
        const char *close = strchr(c, '}');
        const char *reopen = strchr(c + 1, '{');
        if (!close || (reopen && reopen < close)) {
            cfg_err(L, path, "unbalanced '{' in \"%s\"", u);
            return;
        }
        add_literal(be, lit, c);
        add_placeholder(L, path, c + 1, (size_t)(close - c - 1), ep, route_ok, be);
        c = lit = close + 1;
    }
    add_literal(be, lit, c);
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
    if (be->url) parse_url(L, cfg_key_path(p, path, "url"), be->url, ep, route_ok, be);
    backend_client(L, b, path, cfg, be);
    be->method = get_method(L, b, path);
    CFG_GET_INT(L, b, path, "timeout_ms", 1, INT_LIMIT, be->timeout_ms);
    cfg_resil_backend(L, b, path, cfg, be);
    be->key = cfg_get_str(L, b, path, "key", true);
    cfg_get_bool(L, b, path, "required", &be->required);

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

static void parse_endpoint(struct loader *L, const cJSON *e, const char *path,
                           const struct config *cfg, struct endpoint_conf *ep, bool *route_ok)
{
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
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
    if (ep->path) *route_ok = parse_route(L, p, ep->path, ep);
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

    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(e, "backends");
    cfg_key_path(p, path, "backends");
    if (!bs) {
        cfg_err(L, p, "is required");
        return;
    }
    if (!cJSON_IsArray(bs)) {
        cfg_err(L, p, "expected an array of backends, got %s", cfg_type_name(bs));
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(bs);
    if (n == 0) {
        cfg_err(L, p, "must not be empty");
        return;
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
        parse_backend(L, b, q, cfg, ep, *route_ok, be);
        if (be->name && (j = cfg_seen_add(&names, be->name, i)) != SIZE_MAX)
            cfg_err(L, cfg_key_path(r, q, "name"), "duplicate backend name \"%s\" (also %s[%zu])",
                    be->name, p, j);
        if (be->key && (j = cfg_seen_add(&keys, be->key, i)) != SIZE_MAX)
            cfg_err(L, cfg_key_path(r, q, "key"), "key \"%s\" is already used by %s[%zu]", be->key,
                    p, j);
    }
    graph_resolve(L, ep, path);
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

static void parse_endpoints(struct loader *L, const cJSON *root, struct config *cfg)
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

/* ---- entry points ---- */

static const char *const TOP_KEYS[] = {"server",    "defaults", "degraded", "access_log",
                                       "endpoints", "auth",     "tracing",  "upstream",
                                       "upstreams",
                                       NULL};

/* len == 0: the size is unknown (a pipe), only that it is over. */
static void too_big(struct loader *L, const char *source, size_t len)
{
    char size[48] = "more than the limit";
    if (len) snprintf(size, sizeof size, "%zu bytes", len);
    cfg_err(L, source, "too big: %s; a config file may have at most %d MiB (%d bytes)", size,
            CONFIG_MAX_BYTES >> 20, CONFIG_MAX_BYTES);
}

/* source names the input in a syntax error ("<input>" for a string). */
static struct config *parse(const char *json, size_t len, const char *source,
                            struct config_errors *errs)
{
    struct loader L = {.errs = errs};
    if (errs) *errs = (struct config_errors){0};
    if (setjmp(L.oom)) {
        cJSON_Delete(L.root);
        cfg_arena_free(L.arena);
        cfg_arena_free(L.scratch);
        if (errs) {
            /* best effort: the line itself needs memory */
            char *line = strdup("config: out of memory");
            char **lines = line ? realloc(errs->lines, (errs->n + 1) * sizeof(*lines)) : NULL;
            if (lines) {
                lines[errs->n++] = line;
                errs->lines = lines;
            } else {
                free(line);
            }
        }
        return NULL;
    }

    if (len > CONFIG_MAX_BYTES) {
        too_big(&L, source, len);
        return NULL;
    }
    const char *end = NULL;
    L.root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (L.root) {
        /* cJSON stops after the first value; anything but whitespace after it
         * is a syntax error too. (cJSON's error position can be one byte past
         * the culprit, hence "near".) */
        while (end < json + len && isspace((unsigned char)*end))
            end++;
        if (end < json + len) {
            cJSON_Delete(L.root);
            L.root = NULL;
        }
    }
    if (!L.root) {
        if (!end || end < json || end > json + len) end = json + len;
        size_t line = 1, col = 1;
        for (const char *c = json; c < end; c++, col++)
            if (*c == '\n') line++, col = 0;
        cfg_err(&L, source, "invalid JSON near line %zu, column %zu (byte %zu)", line, col,
                (size_t)(end - json));
        return NULL;
    }

    cfg_check_strings(&L, json, len);
    struct config *cfg = cfg_alloc(&L, sizeof(*cfg));
    if (!cJSON_IsObject(L.root)) {
        cfg_err(&L, source, "expected a JSON object at the top level, got %s",
                cfg_type_name(L.root));
    } else {
        cfg_check_keys(&L, L.root, "", TOP_KEYS);
        parse_globals(&L, L.root, cfg);
        cfg_parse_edge(&L, L.root, cfg);
        cfg_resil_upstreams(&L, L.root, cfg);
        parse_endpoints(&L, L.root, cfg);
    }
    cJSON_Delete(L.root);
    L.root = NULL;
    cfg_arena_free(L.scratch);
    L.scratch = NULL;
    if (L.n_errors) {
        cfg_err_summary(&L, source);
        cfg_arena_free(L.arena);
        return NULL;
    }
    cfg->arena = L.arena;
    return cfg;
}

struct config *config_parse(const char *json, size_t len, struct config_errors *errs)
{
    return parse(json, len, "<input>", errs);
}

/* Reads the whole file into *data (malloc'd). Returns 0 or an errno value;
 * EFBIG when it is over CONFIG_MAX_BYTES (*len is then its size, or 0 when
 * that is unknown: a pipe is read only up to the limit). */
static int read_file(const char *path, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return errno;
    struct stat st;
    size_t cap = 0;
    int e = 0;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > CONFIG_MAX_BYTES) {
        *len = (size_t)st.st_size;
        e = EFBIG;
    }
    while (!e) {
        if (*len > CONFIG_MAX_BYTES) {
            *len = 0; /* not the size: only as much as was read */
            e = EFBIG;
            break;
        }
        if (cap - *len < 4096) {
            char *d = realloc(*data, cap = cap ? cap * 2 : 65536);
            if (!d) {
                e = ENOMEM;
                break;
            }
            *data = d;
        }
        size_t got = fread(*data + *len, 1, cap - *len, f);
        *len += got;
        if (got == 0) {
            if (ferror(f)) e = errno ? errno : EIO;
            break;
        }
    }
    fclose(f);
    return e;
}

static void read_error(const char *path, int e, size_t len, struct config_errors *errs)
{
    struct loader L = {.errs = errs};
    if (setjmp(L.oom)) return;
    if (e == EFBIG)
        too_big(&L, path, len);
    else
        cfg_err(&L, path, "%s", strerror(e));
}

struct config *config_load(const char *path, struct config_errors *errs)
{
    if (errs) *errs = (struct config_errors){0};
    char *data;
    size_t len;
    int e = read_file(path, &data, &len);
    if (e) {
        free(data);
        read_error(path, e, len, errs);
        return NULL;
    }
    struct config *cfg = parse(data ? data : "", len, path, errs);
    free(data);
    return cfg;
}

void config_free(struct config *cfg)
{
    if (cfg) cfg_arena_free(cfg->arena);
}

void config_errors_free(struct config_errors *errs)
{
    if (!errs) return;
    for (size_t i = 0; i < errs->n; i++)
        free(errs->lines[i]);
    free(errs->lines);
    *errs = (struct config_errors){0};
}
