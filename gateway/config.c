/*
 * config: JSON -> validated, immutable snapshot. See config.h and
 * conf/README.md for the schema.
 *
 * The loader walks the cJSON tree once, filling the snapshot and collecting
 * every problem as it goes, so one run of `gateway --check` shows them all.
 * Checks that need the whole file (duplicate routes and names) run after the
 * walk. Everything the snapshot points to lives in one chain of arena
 * blocks; an out-of-memory anywhere unwinds with longjmp to config_parse,
 * which frees the arena and the cJSON tree in one place.
 */
#include "gateway/config.h"
#include "gateway/router.h"

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
#include <unistd.h>

#define PATH_MAX_LEN 512
#define INT_LIMIT    INT32_MAX /* keeps every value exact in a double and in an int */

/* ---- arena ---- */

struct block {
    struct block *next;
    size_t used, cap;
    max_align_t data[];
};

struct loader {
    jmp_buf oom;
    struct block *arena;
    cJSON *root;
    struct config_errors *errs; /* NULL: only count */
    size_t n_errors;
};

static _Noreturn void out_of_memory(struct loader *L)
{
    longjmp(L->oom, 1);
}

/* Zeroed storage that lives as long as the snapshot. */
static void *arena_alloc(struct loader *L, size_t n)
{
    const size_t align = sizeof(max_align_t);
    n = (n + align - 1) / align * align;
    struct block *b = L->arena;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 4096 ? n : 4096;
        b = calloc(1, sizeof(*b) + cap);
        if (!b) out_of_memory(L);
        b->cap = cap;
        b->next = L->arena;
        L->arena = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

static char *arena_strndup(struct loader *L, const char *s, size_t n)
{
    char *p = arena_alloc(L, n + 1);
    memcpy(p, s, n);
    return p;
}

static void arena_free(struct block *b)
{
    while (b) {
        struct block *next = b->next;
        free(b);
        b = next;
    }
}

/* ---- errors and JSON paths ---- */

static __attribute__((format(printf, 3, 4))) void err(struct loader *L, const char *path,
                                                      const char *fmt, ...)
{
    L->n_errors++;
    if (!L->errs) return;
    char *msg = NULL, *line = NULL;
    va_list ap;
    va_start(ap, fmt);
    int rc = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (rc < 0) out_of_memory(L);
    rc = asprintf(&line, "%s: %s", path, msg);
    free(msg);
    if (rc < 0) out_of_memory(L);
    char **lines = realloc(L->errs->lines, (L->errs->n + 1) * sizeof(*lines));
    if (!lines) {
        free(line);
        out_of_memory(L);
    }
    lines[L->errs->n++] = line;
    L->errs->lines = lines;
}

/* A path too long for the buffer (only a huge unknown key can make one) is
 * cut and ends in "...". */
static const char *mark_cut(char *out, int n)
{
    if (n >= PATH_MAX_LEN) memcpy(out + PATH_MAX_LEN - 4, "...", 4);
    return out;
}

static const char *jkey(char *out, const char *path, const char *key)
{
    return mark_cut(out, snprintf(out, PATH_MAX_LEN, "%s%s%s", path, path[0] ? "." : "", key));
}

static const char *jidx(char *out, const char *path, size_t i)
{
    return mark_cut(out, snprintf(out, PATH_MAX_LEN, "%s[%zu]", path, i));
}

static const char *type_name(const cJSON *v)
{
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an invalid value";
}

/* Reports unknown and repeated keys of obj. cJSON keeps both copies of a
 * repeated key and lookups see only the first, so a repeat is an error
 * rather than a silent override. */
static void check_keys(struct loader *L, const cJSON *obj, const char *path,
                       const char *const *allowed)
{
    char p[PATH_MAX_LEN];
    for (const cJSON *c = obj->child; c; c = c->next) {
        bool known = false;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(c->string, *a) == 0) known = true;
        if (!known) {
            char list[PATH_MAX_LEN] = "";
            for (const char *const *a = allowed; *a; a++)
                snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
                         a == allowed ? "" : ", ", *a);
            err(L, jkey(p, path, c->string), "unknown key (expected one of: %s)", list);
            continue;
        }
        for (const cJSON *d = obj->child; d != c; d = d->next)
            if (strcmp(c->string, d->string) == 0) {
                err(L, jkey(p, path, c->string), "duplicate key");
                break;
            }
    }
}

/* An optional object member: NULL when absent, else checked to be an object. */
static const cJSON *section(struct loader *L, const cJSON *obj, const char *path, const char *key,
                            const char *const *allowed)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return NULL;
    char p[PATH_MAX_LEN];
    jkey(p, path, key);
    if (!cJSON_IsObject(v)) {
        err(L, p, "expected an object, got %s", type_name(v));
        return NULL;
    }
    check_keys(L, v, p, allowed);
    return v;
}

/* Optional integer member in [min, max]. Returns true and sets *out only
 * when present and valid; absent leaves *out (the default) alone. */
static bool get_int(struct loader *L, const cJSON *obj, const char *path, const char *key,
                    long long min, long long max, long long *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return false;
    char p[PATH_MAX_LEN];
    jkey(p, path, key);
    if (!cJSON_IsNumber(v)) {
        err(L, p, "expected an integer, got %s", type_name(v));
        return false;
    }
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d)) {
        err(L, p, "must be an integer, got %g", d);
        return false;
    }
    if (d < (double)min || d > (double)max) {
        if (max == INT_LIMIT)
            err(L, p, "must be >= %lld, got %.0f", min, d);
        else
            err(L, p, "must be between %lld and %lld, got %.0f", min, max, d);
        return false;
    }
    *out = (long long)d;
    return true;
}

#define GET_INT(L, obj, path, key, min, max, field)                                                \
    do {                                                                                           \
        long long v_ = (long long)(field);                                                         \
        if (get_int(L, obj, path, key, min, max, &v_)) (field) = v_;                               \
    } while (0)

/* Optional string member, copied into the arena. A JSON null counts as
 * absent when null_ok. Returns the copy, or NULL when absent or invalid. */
static const char *get_str(struct loader *L, const cJSON *obj, const char *path, const char *key,
                           bool null_ok)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || (null_ok && cJSON_IsNull(v))) return NULL;
    char p[PATH_MAX_LEN];
    jkey(p, path, key);
    if (!cJSON_IsString(v)) {
        err(L, p, "expected a string, got %s", type_name(v));
        return NULL;
    }
    if (!v->valuestring[0]) {
        err(L, p, "must not be empty");
        return NULL;
    }
    return arena_strndup(L, v->valuestring, strlen(v->valuestring));
}

static void get_bool(struct loader *L, const cJSON *obj, const char *path, const char *key,
                     bool *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return;
    char p[PATH_MAX_LEN];
    if (!cJSON_IsBool(v))
        err(L, jkey(p, path, key), "expected a boolean, got %s", type_name(v));
    else
        *out = cJSON_IsTrue(v);
}

/* Optional array of non-empty strings; valid_char (may be NULL) vets every
 * character. Duplicates (case-insensitive when fold) are errors. */
static const char **get_str_array(struct loader *L, const cJSON *obj, const char *path,
                                  const char *key, bool null_ok, bool fold, bool (*valid_char)(int),
                                  const char *what, size_t *n_out)
{
    *n_out = 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || (null_ok && cJSON_IsNull(v))) return NULL;
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
    jkey(p, path, key);
    if (!cJSON_IsArray(v)) {
        err(L, p, "expected an array of strings, got %s", type_name(v));
        return NULL;
    }
    size_t n = (size_t)cJSON_GetArraySize(v), i = 0, k = 0;
    const char **out = arena_alloc(L, (n ? n : 1) * sizeof(*out));
    for (const cJSON *c = v->child; c; c = c->next, i++) {
        jidx(q, p, i);
        if (!cJSON_IsString(c)) {
            err(L, q, "expected a string, got %s", type_name(c));
            continue;
        }
        const char *s = c->valuestring;
        if (!s[0]) {
            err(L, q, "must not be empty");
            continue;
        }
        const char *bad = s;
        while (*bad && (!valid_char || valid_char((unsigned char)*bad)))
            bad++;
        if (*bad) {
            err(L, q, "\"%s\" is not a valid %s", s, what);
            continue;
        }
        bool dup = false;
        for (size_t j = 0; j < k; j++)
            if (fold ? strcasecmp(out[j], s) == 0 : strcmp(out[j], s) == 0) dup = true;
        if (dup) {
            err(L, q, "duplicate %s \"%s\"", what, s);
            continue;
        }
        out[k++] = arena_strndup(L, s, strlen(s));
    }
    *n_out = k;
    return out;
}

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
    jkey(p, path, "method");
    if (!cJSON_IsString(v)) {
        err(L, p, "expected a string, got %s", type_name(v));
        return "GET";
    }
    for (const char *const *m = METHODS; *m; m++)
        if (strcmp(v->valuestring, *m) == 0) return *m;
    err(L, p,
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
        err(L, path, "port must be an integer between 1 and 65535 in \"%s\"", s);
        return;
    }
    strcpy(sv->host, h);
    return;
bad:
    err(L, path,
        "\"%s\" is not a numeric address and port (expected \"a.b.c.d:port\" or \"[v6]:port\")", s);
}

static const char *const SERVER_KEYS[] = {"listen",
                                          "workers",
                                          "max_connections",
                                          "connection_timeout_s",
                                          "max_request_body_bytes",
                                          "shutdown_timeout_ms",
                                          NULL};
static const char *const DEFAULTS_KEYS[] = {"timeout_ms",         "max_timeout_ms",
                                            "backend_timeout_ms", "max_response_bytes",
                                            "concurrency",        NULL};
static const char *const DEGRADED_KEYS[] = {"max_entries", "max_stale_s", "snapshot_path",
                                            "snapshot_interval_s", NULL};
static const char *const ACCESS_LOG_KEYS[] = {"path", NULL};

static void parse_globals(struct loader *L, const cJSON *root, struct config *cfg)
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
    const cJSON *o = section(L, root, "", "server", SERVER_KEYS);
    if (o) {
        const char *listen = get_str(L, o, "server", "listen", false);
        if (listen) {
            sv->listen = listen;
            parse_listen(L, "server.listen", listen, sv);
        }
        GET_INT(L, o, "server", "workers", 0, 1024, sv->workers);
        GET_INT(L, o, "server", "max_connections", 1, INT_LIMIT, sv->max_connections);
        GET_INT(L, o, "server", "connection_timeout_s", 0, INT_LIMIT, sv->connection_timeout_s);
        GET_INT(L, o, "server", "max_request_body_bytes", 0, INT_LIMIT, sv->max_request_body_bytes);
        GET_INT(L, o, "server", "shutdown_timeout_ms", 0, INT_LIMIT, sv->shutdown_timeout_ms);
    }
    if (sv->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        sv->workers = n > 0 ? (int)n : 1;
    }

    struct defaults_conf *d = &cfg->defaults;
    d->timeout_ms = 1000;
    d->max_timeout_ms = 10000;
    d->backend_timeout_ms = 1000;
    d->max_response_bytes = 8388608;
    d->concurrency = 16;
    o = section(L, root, "", "defaults", DEFAULTS_KEYS);
    if (o) {
        GET_INT(L, o, "defaults", "timeout_ms", 1, INT_LIMIT, d->timeout_ms);
        GET_INT(L, o, "defaults", "max_timeout_ms", 1, INT_LIMIT, d->max_timeout_ms);
        GET_INT(L, o, "defaults", "backend_timeout_ms", 1, INT_LIMIT, d->backend_timeout_ms);
        GET_INT(L, o, "defaults", "max_response_bytes", 1, INT_LIMIT, d->max_response_bytes);
        GET_INT(L, o, "defaults", "concurrency", 1, 65535, d->concurrency);
    }

    struct degraded_conf *g = &cfg->degraded;
    g->max_entries = 100000;
    g->max_stale_s = 3600;
    g->snapshot_path = NULL;
    g->snapshot_interval_s = 30;
    o = section(L, root, "", "degraded", DEGRADED_KEYS);
    if (o) {
        GET_INT(L, o, "degraded", "max_entries", 0, INT_LIMIT, g->max_entries);
        GET_INT(L, o, "degraded", "max_stale_s", 0, INT_LIMIT, g->max_stale_s);
        g->snapshot_path = get_str(L, o, "degraded", "snapshot_path", true);
        GET_INT(L, o, "degraded", "snapshot_interval_s", 1, INT_LIMIT, g->snapshot_interval_s);
    }

    cfg->access_log_path = "-";
    o = section(L, root, "", "access_log", ACCESS_LOG_KEYS);
    if (o) {
        const char *p = get_str(L, o, "access_log", "path", false);
        if (p) cfg->access_log_path = p;
    }
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
        err(L, path, "must start with '/', got \"%s\"", s);
        return false;
    }
    if (strcmp(s, "/healthz") == 0 || strcmp(s, "/readyz") == 0 || strcmp(s, "/metrics") == 0) {
        err(L, path, "%s is a built-in path", s);
        return false;
    }
    if (strcmp(s, "/") == 0) return true;
    size_t n = 0;
    for (const char *c = s; *c; c++)
        n += *c == '/';
    if (n > ROUTE_MAX_SEGS) {
        err(L, path, "more than %d segments in \"%s\"", ROUTE_MAX_SEGS, s);
        return false;
    }
    ep->segs = arena_alloc(L, n * sizeof(*ep->segs));
    ep->params = arena_alloc(L, n * sizeof(*ep->params));
    const char *seg = s + 1;
    for (;;) {
        const char *end = strchrnul(seg, '/');
        size_t len = (size_t)(end - seg);
        struct route_seg *rs = &ep->segs[ep->n_segs];
        if (len == 0) {
            err(L, path, "empty segment in \"%s\" (no \"//\" and no trailing '/')", s);
            return false;
        }
        if (seg[0] == '{' && seg[len - 1] == '}') {
            if (!is_ident(seg + 1, len - 2)) {
                err(L, path,
                    "bad parameter \"%.*s\" in \"%s\" (expected {name}, name a letter or "
                    "'_' then letters, digits or '_')",
                    (int)len, seg, s);
                return false;
            }
            if (param_index(ep, seg + 1, len - 2) >= 0) {
                err(L, path, "duplicate parameter {%.*s} in \"%s\"", (int)len - 2, seg + 1, s);
                return false;
            }
            if (ep->n_params == ROUTE_MAX_PARAMS) {
                err(L, path, "more than %d parameters in \"%s\"", ROUTE_MAX_PARAMS, s);
                return false;
            }
            rs->literal = NULL;
            rs->param = (int)ep->n_params;
            ep->params[ep->n_params++] = arena_strndup(L, seg + 1, len - 2);
        } else {
            for (size_t i = 0; i < len; i++) {
                if (seg[i] == '{' || seg[i] == '}') {
                    err(L, path, "a parameter must be a whole segment, as in /a/{id}, in \"%s\"",
                        s);
                    return false;
                }
                if (!is_route_char((unsigned char)seg[i])) {
                    err(L, path, "character '%c' (0x%02x) not allowed in \"%s\"",
                        isprint((unsigned char)seg[i]) ? seg[i] : '?', (unsigned char)seg[i], s);
                    return false;
                }
            }
            rs->literal = arena_strndup(L, seg, len);
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

/* Validates a backend URL template and splits it into be->parts. Placeholder
 * names are checked against the endpoint's params only when its route was
 * valid (route_ok), so one bad path does not cascade. */
static void parse_url(struct loader *L, const char *path, const char *u,
                      const struct endpoint_conf *ep, bool route_ok, struct backend_conf *be)
{
    for (const char *c = u; *c; c++) {
        if ((unsigned char)*c <= 0x20 || *c == 0x7f) {
            err(L, path, "must not contain whitespace or control characters");
            return;
        }
        if (*c == '#') {
            err(L, path, "must not contain a fragment ('#')");
            return;
        }
    }
    const char *a;
    if (strncmp(u, "http://", 7) == 0)
        a = u + 7;
    else if (strncmp(u, "https://", 8) == 0)
        a = u + 8;
    else {
        err(L, path, "must start with http:// or https://, got \"%s\"", u);
        return;
    }
    size_t alen = strcspn(a, "/?");
    if (memchr(a, '{', alen) || memchr(a, '}', alen)) {
        err(L, path, "placeholders are only allowed in the path and query of \"%s\"", u);
        return;
    }
    if (!valid_authority(a, alen)) {
        err(L, path, "bad host or port in \"%s\"", u);
        return;
    }
    if (a[alen] != '/') {
        err(L, path, "needs a path starting with '/' after the host in \"%s\"", u);
        return;
    }
    /* at most one param part and one literal part per '{', plus a tail */
    size_t n_open = 0;
    for (const char *c = u; *c; c++)
        n_open += *c == '{';
    be->parts = arena_alloc(L, (2 * n_open + 1) * sizeof(*be->parts));
    const char *lit = u, *c = a + alen;
    while (*c) {
        if (*c == '}') {
            err(L, path, "unbalanced '}' in \"%s\"", u);
            return;
        }
        if (*c != '{') {
            c++;
            continue;
        }
        const char *close = strchr(c, '}');
        const char *reopen = strchr(c + 1, '{');
        if (!close || (reopen && reopen < close)) {
            err(L, path, "unbalanced '{' in \"%s\"", u);
            return;
        }
        const char *name = c + 1;
        size_t nlen = (size_t)(close - name);
        int idx = -1;
        if (!is_ident(name, nlen)) {
            err(L, path, "bad placeholder {%.*s} (expected {name} of a path parameter)", (int)nlen,
                name);
        } else if (route_ok && (idx = param_index(ep, name, nlen)) < 0) {
            err(L, path, "{%.*s} is not a parameter of %s", (int)nlen, name, ep->path);
        }
        if (c > lit) {
            be->parts[be->n_parts].literal = lit;
            be->parts[be->n_parts].literal_len = (size_t)(c - lit);
            be->parts[be->n_parts++].param = -1;
        }
        be->parts[be->n_parts].literal = NULL;
        be->parts[be->n_parts++].param = idx;
        c = lit = close + 1;
    }
    if (c > lit) {
        be->parts[be->n_parts].literal = lit;
        be->parts[be->n_parts].literal_len = (size_t)(c - lit);
        be->parts[be->n_parts++].param = -1;
    }
}

/* ---- endpoints and backends ---- */

static const char *const BACKEND_KEYS[] = {"name",  "url",          "method",   "timeout_ms",
                                           "key",   "required",     "fallback", "static",
                                           "allow", "forward_body", NULL};
static const char *const ENDPOINT_KEYS[] = {"name",          "method",      "path",
                                            "timeout_ms",    "concurrency", "forward_headers",
                                            "forward_query", "backends",    NULL};

/* Required non-empty name made of is_name_char. */
static const char *get_name(struct loader *L, const cJSON *obj, const char *path)
{
    char p[PATH_MAX_LEN];
    jkey(p, path, "name");
    if (!cJSON_GetObjectItemCaseSensitive(obj, "name")) {
        err(L, p, "is required");
        return NULL;
    }
    const char *s = get_str(L, obj, path, "name", false);
    if (!s) return NULL;
    for (const char *c = s; *c; c++)
        if (!is_name_char((unsigned char)*c)) {
            err(L, p, "\"%s\" is not a valid name (letters, digits, '_', '-' and '.')", s);
            return NULL;
        }
    return s;
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
    if (!cJSON_IsObject(b)) {
        err(L, path, "expected an object, got %s", type_name(b));
        return;
    }
    check_keys(L, b, path, BACKEND_KEYS);
    be->name = get_name(L, b, path);
    if (!cJSON_GetObjectItemCaseSensitive(b, "url")) err(L, jkey(p, path, "url"), "is required");
    be->url = get_str(L, b, path, "url", false);
    if (be->url) parse_url(L, jkey(p, path, "url"), be->url, ep, route_ok, be);
    be->method = get_method(L, b, path);
    GET_INT(L, b, path, "timeout_ms", 1, INT_LIMIT, be->timeout_ms);
    be->key = get_str(L, b, path, "key", true);
    get_bool(L, b, path, "required", &be->required);

    const cJSON *fb = cJSON_GetObjectItemCaseSensitive(b, "fallback");
    bool fb_bad = false; /* already reported: say nothing more about static */
    jkey(p, path, "fallback");
    if (!fb || cJSON_IsNull(fb)) {
        be->fallback = FALLBACK_NONE;
    } else if (cJSON_IsString(fb) && strcmp(fb->valuestring, "degraded") == 0) {
        be->fallback = FALLBACK_DEGRADED;
    } else if (cJSON_IsString(fb) && strcmp(fb->valuestring, "static") == 0) {
        be->fallback = FALLBACK_STATIC;
    } else if (cJSON_IsString(fb)) {
        err(L, p, "must be \"degraded\" or \"static\", got \"%s\"", fb->valuestring);
        fb_bad = true;
    } else {
        err(L, p, "expected \"degraded\", \"static\" or null, got %s", type_name(fb));
        fb_bad = true;
    }

    const cJSON *st = cJSON_GetObjectItemCaseSensitive(b, "static");
    jkey(p, path, "static");
    if (st && be->fallback != FALLBACK_STATIC && !fb_bad) {
        err(L, p, "only used with \"fallback\": \"static\"");
    } else if (st && be->fallback == FALLBACK_STATIC) {
        char *json = cJSON_PrintUnformatted(st);
        if (!json) out_of_memory(L);
        be->static_len = strlen(json);
        be->static_json = arena_strndup(L, json, be->static_len);
        cJSON_free(json);
    } else if (!st && be->fallback == FALLBACK_STATIC) {
        err(L, p, "is required when fallback is \"static\"");
    }

    be->allow = get_str_array(L, b, path, "allow", true, false, NULL, "field", &be->n_allow);

    get_bool(L, b, path, "forward_body", &be->forward_body);
    if (be->forward_body && !method_has_body(ep->method))
        err(L, jkey(p, path, "forward_body"),
            "endpoint method %s has no body to forward (only POST, PUT and PATCH do)", ep->method);
    else if (be->forward_body && !method_has_body(be->method))
        err(L, jkey(p, path, "forward_body"),
            "backend method %s cannot carry a body (use POST, PUT or PATCH)", be->method);
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
        err(L, path, "expected an object, got %s", type_name(e));
        return;
    }
    check_keys(L, e, path, ENDPOINT_KEYS);
    ep->name = get_name(L, e, path);
    ep->method = get_method(L, e, path);
    jkey(p, path, "path");
    if (!cJSON_GetObjectItemCaseSensitive(e, "path")) err(L, p, "is required");
    ep->path = get_str(L, e, path, "path", false);
    if (ep->path) *route_ok = parse_route(L, p, ep->path, ep);
    GET_INT(L, e, path, "timeout_ms", 1, INT_LIMIT, ep->timeout_ms);
    GET_INT(L, e, path, "concurrency", 1, 65535, ep->concurrency);
    ep->forward_headers = get_str_array(L, e, path, "forward_headers", false, true, is_tchar,
                                        "header name", &ep->n_forward_headers);
    ep->forward_query = get_str_array(L, e, path, "forward_query", false, false, is_query_char,
                                      "query parameter name", &ep->n_forward_query);

    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(e, "backends");
    jkey(p, path, "backends");
    if (!bs) {
        err(L, p, "is required");
        return;
    }
    if (!cJSON_IsArray(bs)) {
        err(L, p, "expected an array of backends, got %s", type_name(bs));
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(bs);
    if (n == 0) {
        err(L, p, "must not be empty");
        return;
    }
    ep->backends = arena_alloc(L, n * sizeof(*ep->backends));
    ep->n_backends = n;
    size_t i = 0;
    for (const cJSON *b = bs->child; b; b = b->next, i++) {
        struct backend_conf *be = &ep->backends[i];
        jidx(q, p, i);
        parse_backend(L, b, q, cfg, ep, *route_ok, be);
        for (size_t j = 0; j < i; j++) {
            const struct backend_conf *o = &ep->backends[j];
            char r[PATH_MAX_LEN];
            if (be->name && o->name && strcmp(be->name, o->name) == 0)
                err(L, jkey(r, q, "name"), "duplicate backend name \"%s\" (also %s[%zu])", be->name,
                    p, j);
            if (be->key && o->key && strcmp(be->key, o->key) == 0)
                err(L, jkey(r, q, "key"), "key \"%s\" is already used by %s[%zu]", be->key, p, j);
        }
    }
}

static bool same_route(const struct endpoint_conf *a, const struct endpoint_conf *b)
{
    if (strcmp(a->method, b->method) != 0 || a->n_segs != b->n_segs) return false;
    for (size_t i = 0; i < a->n_segs; i++) {
        const struct route_seg *x = &a->segs[i], *y = &b->segs[i];
        if (!x->literal != !y->literal) return false;
        if (x->literal && strcmp(x->literal, y->literal) != 0) return false;
    }
    return true;
}

static void parse_endpoints(struct loader *L, const cJSON *root, struct config *cfg)
{
    const cJSON *es = cJSON_GetObjectItemCaseSensitive(root, "endpoints");
    if (!es) {
        err(L, "endpoints", "is required");
        return;
    }
    if (!cJSON_IsArray(es)) {
        err(L, "endpoints", "expected an array of endpoints, got %s", type_name(es));
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(es);
    if (n == 0) {
        err(L, "endpoints", "must not be empty");
        return;
    }
    cfg->endpoints = arena_alloc(L, n * sizeof(*cfg->endpoints));
    cfg->n_endpoints = n;
    bool *route_ok = arena_alloc(L, n * sizeof(*route_ok));
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
    size_t i = 0;
    for (const cJSON *e = es->child; e; e = e->next, i++) {
        struct endpoint_conf *ep = &cfg->endpoints[i];
        parse_endpoint(L, e, jidx(p, "endpoints", i), cfg, ep, &route_ok[i]);
        for (size_t j = 0; j < i; j++) {
            const struct endpoint_conf *o = &cfg->endpoints[j];
            if (ep->name && o->name && strcmp(ep->name, o->name) == 0)
                err(L, jkey(q, p, "name"), "duplicate endpoint name \"%s\" (also endpoints[%zu])",
                    ep->name, j);
            if (route_ok[i] && route_ok[j] && same_route(ep, o))
                err(L, jkey(q, p, "path"),
                    "duplicate route %s %s: endpoints[%zu] already routes %s %s", ep->method,
                    ep->path, j, o->method, o->path);
        }
    }
}

/* ---- entry points ---- */

static const char *const TOP_KEYS[] = {"server",     "defaults",  "degraded",
                                       "access_log", "endpoints", NULL};

/* source names the input in a syntax error ("<input>" for a string). */
static struct config *parse(const char *json, size_t len, const char *source,
                            struct config_errors *errs)
{
    struct loader L = {.errs = errs};
    if (errs) *errs = (struct config_errors){0};
    if (setjmp(L.oom)) {
        cJSON_Delete(L.root);
        arena_free(L.arena);
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
        err(&L, source, "invalid JSON near line %zu, column %zu (byte %zu)", line, col,
            (size_t)(end - json));
        return NULL;
    }

    struct config *cfg = arena_alloc(&L, sizeof(*cfg));
    if (!cJSON_IsObject(L.root)) {
        err(&L, source, "expected a JSON object at the top level, got %s", type_name(L.root));
    } else {
        check_keys(&L, L.root, "", TOP_KEYS);
        parse_globals(&L, L.root, cfg);
        parse_endpoints(&L, L.root, cfg);
    }
    cJSON_Delete(L.root);
    if (L.n_errors) {
        arena_free(L.arena);
        return NULL;
    }
    cfg->arena = L.arena;
    return cfg;
}

struct config *config_parse(const char *json, size_t len, struct config_errors *errs)
{
    return parse(json, len, "<input>", errs);
}

struct config *config_load(const char *path, struct config_errors *errs)
{
    if (errs) *errs = (struct config_errors){0};
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    size_t len = 0, cap = 0;
    int e = 0;
    if (!f) e = errno;
    while (f) {
        if (cap - len < 4096) {
            char *d = realloc(data, cap = cap ? cap * 2 : 65536);
            if (!d) {
                e = ENOMEM;
                break;
            }
            data = d;
        }
        size_t got = fread(data + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) e = errno ? errno : EIO;
            break;
        }
    }
    if (f) fclose(f);
    if (e) {
        free(data);
        struct loader L = {.errs = errs};
        if (setjmp(L.oom)) return NULL;
        err(&L, path, "%s", strerror(e));
        return NULL;
    }
    struct config *cfg = parse(data ? data : "", len, path, errs);
    free(data);
    return cfg;
}

void config_free(struct config *cfg)
{
    if (cfg) arena_free(cfg->arena);
}

void config_errors_free(struct config_errors *errs)
{
    if (!errs) return;
    for (size_t i = 0; i < errs->n; i++)
        free(errs->lines[i]);
    free(errs->lines);
    *errs = (struct config_errors){0};
}
