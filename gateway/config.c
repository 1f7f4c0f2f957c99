/*
 * config: JSON -> validated, immutable snapshot. See config.h and
 * conf/README.md for the schema. This file owns the entry points
 * (config_parse, config_load, config_free), the syntax check, the
 * top-level keys and the global sections (server, defaults, upstream,
 * degraded, access_log); endpoints and backends are config_endpoint's,
 * routes and URL templates config_route's, auth and tracing config_edge's,
 * tls, gzip and cors config_web's, resilience config_resil's, and the
 * shared machinery (arena, errors, getters) config_load's.
 *
 * The loader walks the cJSON tree once, filling the snapshot and collecting
 * every problem as it goes, so one run of `gateway --check` shows them all.
 * Before the walk, one pass over the raw text checks that every string is
 * UTF-8 without \u0000 (cJSON would cut it there). The text is at most
 * CONFIG_MAX_BYTES. Everything the snapshot points to lives in one chain of
 * arena blocks (scratch, such as the hash sets, in a second chain freed when
 * the parse ends); an out-of-memory anywhere unwinds with longjmp to
 * config_parse, which frees the arenas and the cJSON tree in one place.
 */
#include "gateway/config.h"
#include "gateway/config_edge.h"
#include "gateway/config_endpoint.h"
#include "gateway/config_load.h"
#include "gateway/config_resil.h"
#include "gateway/config_route.h"
#include "gateway/config_web.h"

#include <arpa/inet.h>
#include <cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- upstream transport: the "upstream" section ---- */

static const char *const UPSTREAM_KEYS[] = {"max_idle_per_origin", "idle_timeout_s",
                                            "connect_timeout_ms", "dns_refresh_s", NULL};

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
    if (!cfg_parse_port(colon + 1, strlen(colon + 1), &sv->port)) {
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
        cfg_get_client(L, o, "defaults", &d->client);
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

/* json[0..len) into L->root: one JSON value and only whitespace after it;
 * else reports where the syntax breaks (false). */
static bool parse_json(struct loader *L, const char *json, size_t len, const char *source)
{
    const char *end = NULL;
    L->root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (L->root) {
        /* cJSON stops after the first value; anything but whitespace after it
         * is a syntax error too. (cJSON's error position can be one byte past
         * the culprit, hence "near".) */
        while (end < json + len && isspace((unsigned char)*end))
            end++;
        if (end < json + len) {
            cJSON_Delete(L->root);
            L->root = NULL;
        }
    }
    if (!L->root) {
        if (!end || end < json || end > json + len) end = json + len;
        size_t line = 1, col = 1;
        for (const char *c = json; c < end; c++, col++)
            if (*c == '\n') line++, col = 0;
        cfg_err(L, source, "invalid JSON near line %zu, column %zu (byte %zu)", line, col,
                (size_t)(end - json));
        return false;
    }
    return true;
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
    if (!parse_json(&L, json, len, source)) return NULL;
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
        cfg_parse_endpoints(&L, L.root, cfg);
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
