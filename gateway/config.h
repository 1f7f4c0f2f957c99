/*
 * config: the gateway's configuration (schema in ../shared/DESIGN.md and
 * conf/README.md), loaded from JSON into one immutable snapshot.
 *
 * A snapshot is built once by config_load / config_parse, never changed
 * afterwards, and shared read-only by every worker through an atomic value
 * (core/avalue.h); config_free releases it and everything it owns.
 *
 * Validation collects every problem at once, each as one line
 * "<json path>: <message>", e.g.
 *     endpoints[1].backends[0].url: {uid} is not a parameter of /api/x/{id}
 */
#ifndef GATEWAY_CONFIG_H
#define GATEWAY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One segment of a route pattern: a literal or a {param}. */
struct route_seg {
    const char *literal; /* NULL for a param segment */
    size_t literal_len;
    int param;           /* index into endpoint->params when literal == NULL */
};

/* A piece of a backend URL template: literal bytes, or a param reference. */
struct url_part {
    const char *literal; /* NULL for a param */
    size_t literal_len;
    int param;           /* index into endpoint->params when literal == NULL */
};

enum fallback_kind { FALLBACK_NONE, FALLBACK_DEGRADED, FALLBACK_STATIC };

struct backend_conf {
    const char *name;
    const char *url;       /* the template as written */
    struct url_part *parts; /* the template split at {param}s */
    size_t n_parts;
    const char *method;    /* "GET" unless configured */
    uint32_t timeout_ms;   /* own or defaults.backend_timeout_ms */
    const char *key;       /* NULL: merge the object's fields at top level */
    bool required;         /* default true */
    enum fallback_kind fallback;
    const char *static_json; /* fallback "static": the value, printed compactly */
    size_t static_len;
    const char **allow;    /* NULL: keep every field */
    size_t n_allow;
    bool forward_body;
    size_t max_response_bytes; /* defaults.max_response_bytes */
};

struct endpoint_conf {
    const char *name;
    const char *method;    /* "GET", "POST", ... */
    const char *path;      /* pattern as written, "/api/dashboard/{id}" */
    struct route_seg *segs; /* path split at '/', leading '/' dropped */
    size_t n_segs;
    const char **params;   /* param names in path order */
    size_t n_params;
    uint32_t timeout_ms;   /* own or defaults.timeout_ms (not clamped) */
    int concurrency;       /* own or defaults.concurrency */
    const char **forward_headers;
    size_t n_forward_headers;
    const char **forward_query;
    size_t n_forward_query;
    struct backend_conf *backends;
    size_t n_backends;
};

struct server_conf {
    const char *listen;    /* "host:port" as written */
    char host[64];         /* parsed numeric host, "0.0.0.0" */
    uint16_t port;
    int workers;           /* 0 in the file = number of CPUs, resolved here */
    unsigned max_connections;
    unsigned connection_timeout_s;
    size_t max_request_body_bytes;
    uint32_t shutdown_timeout_ms;
};

struct defaults_conf {
    uint32_t timeout_ms;
    uint32_t max_timeout_ms;
    uint32_t backend_timeout_ms;
    size_t max_response_bytes;
    int concurrency;
};

struct degraded_conf {
    size_t max_entries;
    uint32_t max_stale_s;
    const char *snapshot_path; /* NULL: no snapshot */
    uint32_t snapshot_interval_s;
};

struct config {
    struct server_conf server;
    struct defaults_conf defaults;
    struct degraded_conf degraded;
    const char *access_log_path; /* "-" stdout, "off", or a file */
    struct endpoint_conf *endpoints;
    size_t n_endpoints;
    /* private: one arena owns every string and array above */
    void *arena;
};

/* Problems found while loading: one "path: message" line each. */
struct config_errors {
    char **lines;
    size_t n;
};
void config_errors_free(struct config_errors *errs);

/* Parses and validates a JSON text. Returns the snapshot, or NULL when there
 * was any problem (then errs lists all of them; errs may be NULL). */
struct config *config_parse(const char *json, size_t len, struct config_errors *errs);
/* Reads path and calls config_parse; an unreadable file is one error line. */
struct config *config_load(const char *path, struct config_errors *errs);
void config_free(struct config *cfg);

#endif
