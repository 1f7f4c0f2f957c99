/*
 * config: the gateway's configuration (schema in README.md "Configuration"
 * and conf/README.md), loaded from JSON into one immutable snapshot.
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

#include "core/avalue.h"

/* One segment of a route pattern: a literal or a {param}. */
struct route_seg {
    const char *literal; /* NULL for a param segment */
    size_t literal_len;
    int param; /* index into endpoint->params when literal == NULL */
};

/* url_part.backend of an {item} / {item.a.b} placeholder. */
#define URL_PART_ITEM (-2)

/* A piece of a backend URL template: literal bytes, a param reference, or a
 * placeholder reading another backend's body ({user.id}) or the foreach
 * element ({item}, {item.sku}); see gateway/graph.h. */
struct url_part {
    const char *literal; /* NULL for a param; else points into backend->url, not NUL-terminated */
    size_t literal_len;
    int param;         /* index into endpoint->params when literal == NULL, else -1 */
    int backend;       /* -1; a backend index ({user.id}); URL_PART_ITEM ({item...}) */
    const char *field; /* the placeholder's text without braces, NUL-terminated */
    size_t field_off;  /* where the dot path starts in field ("" for {item}) */
};

enum item_failure { ITEM_FAIL, ITEM_NULL, ITEM_OMIT };

/* Shaping of one backend's body (gateway/shape.h), applied in this order. */
struct shape_conf {
    const char *target; /* dot path, or NULL */
    const char **allow; /* dot paths; NULL: keep all */
    size_t n_allow;
    const char **deny; /* dot paths; NULL: drop none */
    size_t n_deny;
    const char **rename_from; /* top-level member names ... */
    const char **rename_to;   /* ... and their new names */
    size_t n_rename;
};

enum fallback_kind { FALLBACK_NONE, FALLBACK_DEGRADED, FALLBACK_STATIC };

/* endpoint "auth" (config_edge.c): no token check, or a JWT (auth_conf). */
enum auth_mode { AUTH_NONE, AUTH_OPTIONAL, AUTH_REQUIRED };

/* Which upstream transport a backend uses ("client"): auto = native for
 * http://, curl for https://. */
enum upstream_client { CLIENT_AUTO, CLIENT_CURL, CLIENT_NATIVE };

/* The top-level "upstream" section: the native transport's pool. */
struct upstream_conf {
    uint32_t max_idle_per_origin; /* idle keep-alive connections per origin and worker */
    uint32_t idle_timeout_s;      /* an idle connection older than this is closed */
    uint32_t connect_timeout_ms;
    uint32_t dns_refresh_s; /* how often the resolver thread re-resolves a name */
};

/* A backend's response cache (gateway/cache.h); all zero: none. */
struct cache_conf {
    bool enabled;       /* a "cache" object was given */
    uint32_t ttl_ms;    /* freshness when the backend does not say (0..24 h) */
    bool honor_headers; /* the backend's Cache-Control decides */
    bool coalesce;      /* identical calls in flight on a worker share one */
};

/* Resilience (README.md "Upstream groups"; parsed by config_resil.c). */
struct breaker_conf {
    uint32_t consecutive_failures; /* 0: no breaker */
    uint32_t open_ms;
};

struct health_conf {
    const char *path; /* NULL: no active health checks */
    uint32_t interval_ms, timeout_ms, unhealthy_after, healthy_after;
};

enum balance_kind { BALANCE_LEAST_INFLIGHT, BALANCE_ROUND_ROBIN };

/* retry_on bits */
#define RETRY_ON_CONNECT 1u
#define RETRY_ON_RESET   2u
#define RETRY_ON_5XX     4u
#define RETRY_ON_TIMEOUT 8u
#define RETRY_ON_ALL     15u

struct ugroup_ent; /* gateway/ugroup.h */

struct ugroup_conf {
    const char *name;
    const char **hosts; /* "host:port" */
    size_t n_hosts;
    enum balance_kind balance;
    struct health_conf health;
    struct breaker_conf breaker; /* own, or defaults.breaker */
    /* resolved by ugroup_attach (gateway/ugroup.h) once the config is to be
     * published; NULL before, and wherever out of memory */
    struct ugroup_ent *ent;          /* the group's round-robin state */
    struct ugroup_ent **host_ents;   /* [n_hosts]: breaker, in-flight count */
    struct ugroup_ent **member_ents; /* [n_hosts]: health (with health.path) */
};

/* What a backend does when a call fails (own or defaults). */
struct retry_conf {
    int retries;             /* 0..5 */
    unsigned retry_on;       /* RETRY_ON_* bits */
    uint32_t hedge_after_ms; /* 0: no hedging */
};

struct backend_conf {
    const char *name;
    const char *url;        /* the template as written */
    struct url_part *parts; /* the template split at {param}s */
    size_t n_parts;
    const char *method;  /* "GET" unless configured */
    uint32_t timeout_ms; /* own or defaults.backend_timeout_ms */
    const char *key;     /* NULL: merge the object's fields at top level */
    bool required;       /* default true */
    enum fallback_kind fallback;
    const char *static_json; /* fallback "static": the value, printed compactly, NUL-terminated */
    size_t static_len;
    const char **allow; /* NULL: keep every field (an empty list keeps none) */
    size_t n_allow;
    bool forward_body;
    size_t max_response_bytes;   /* defaults.max_response_bytes */
    enum upstream_client client; /* resolved: CLIENT_CURL or CLIENT_NATIVE, never AUTO */
    struct cache_conf cache;
    /* composition (gateway/graph.h) */
    const struct shape_conf *shape; /* NULL: no shaping beyond a top-level allow */
    int *deps;                      /* backends this one reads ({x.y}, foreach), each once */
    size_t n_deps;
    int *children; /* backends that depend on this one */
    size_t n_children;
    int foreach_backend;      /* -1, or the backend whose body holds the array */
    const char *foreach_path; /* dot path into it ("" = the body itself) */
    uint32_t max_items;       /* default 100 */
    enum item_failure item_failure;
    const struct ugroup_conf *group; /* the URL's host names a group, else NULL */
    struct retry_conf retry;
    /* resolved by ugroup_attach, NULL before (see struct ugroup_conf) */
    struct ugroup_ent *origin_ent; /* a plain origin's breaker (defaults.breaker) */
};

/* "cors" in defaults or an endpoint (config_web.c). */
struct cors_conf {
    const char **origins; /* exact "scheme://host[:port]" values */
    size_t n_origins;
    bool any_origin;           /* "*" among them */
    const char *allow_headers; /* joined with ", "; NULL: none */
    bool allow_credentials;    /* default false */
    uint32_t max_age_s;        /* default 600 */
};
enum on_conflict { CONFLICT_LAST, CONFLICT_FIRST, CONFLICT_ERROR };

struct endpoint_conf {
    const char *name;
    const char *method;     /* "GET", "POST", ... (default "GET") */
    const char *path;       /* pattern as written, "/api/dashboard/{id}" */
    struct route_seg *segs; /* path split at '/', leading '/' dropped; "/" has none */
    size_t n_segs;
    const char **params; /* param names in path order */
    size_t n_params;
    uint32_t timeout_ms; /* own or defaults.timeout_ms (not clamped) */
    int concurrency;     /* own or defaults.concurrency */
    const char **forward_headers;
    size_t n_forward_headers;
    const char **forward_query;
    size_t n_forward_query;
    const char **expose_headers; /* backend response headers for the client (gateway/expose.h) */
    size_t n_expose_headers;
    struct backend_conf *backends;
    size_t n_backends;
    enum auth_mode auth; /* AUTH_NONE unless configured */
    const struct cors_conf *cors; /* own, else defaults.cors; NULL: no CORS */
    enum on_conflict on_conflict; /* key-less members with one name */
    bool graph;                   /* some backend depends on another */
};

struct server_conf {
    const char *listen; /* "host:port" as written */
    char host[64];      /* numeric, no brackets: "0.0.0.0", "::1"; "localhost" -> "127.0.0.1" */
    int family;         /* AF_INET or AF_INET6 */
    uint16_t port;
    int workers; /* 0 in the file = number of CPUs, resolved here */
    unsigned max_connections;
    unsigned connection_timeout_s; /* 0: idle connections never time out */
    size_t max_request_body_bytes;
    uint32_t shutdown_timeout_ms;
    size_t max_header_bytes;    /* request line + headers; more is a 431 */
    uint32_t header_timeout_ms; /* to receive a request's headers (and its body's grace) */
    uint32_t drain_accept_ms;   /* after SIGTERM, keep accepting (answering 503) this long */
    /* server.tls (config_web.c): NULL cert: plain HTTP. Both files load at
     * parse time (so --check and a reload see a bad pair); tls.c loads them
     * again for the listener at start and on SIGHUP. */
    const char *tls_cert, *tls_key;
    /* server.gzip (config_web.c): off unless the object is present. */
    bool gzip;
    size_t gzip_min_bytes; /* default 1024 */
    int gzip_level;        /* 1..9, default 1 */
};

struct defaults_conf {
    uint32_t timeout_ms;
    uint32_t max_timeout_ms;
    uint32_t backend_timeout_ms;
    size_t max_response_bytes;
    int concurrency;
    const struct cors_conf *cors; /* defaults.cors; NULL: none */
    enum upstream_client client; /* as written (default CLIENT_AUTO) */
    struct breaker_conf breaker; /* for plain origins; consecutive_failures 0 = off */
    struct retry_conf retry;
    uint32_t retry_budget_percent;
};

struct degraded_conf {
    size_t max_entries; /* 0: store nothing */
    uint32_t max_stale_s;
    const char *snapshot_path; /* NULL: no snapshot */
    uint32_t snapshot_interval_s;
};

/* Top-level "auth" (config_edge.c): how JWTs are checked. */
#define AUTH_ALG_RS256      0x1u
#define AUTH_ALG_ES256      0x2u
#define AUTH_MAX_CLAIM_HDRS 16
struct auth_claim_header {
    const char *claim;  /* top-level claim name, e.g. "sub" */
    const char *header; /* header sent to backends, e.g. "X-User-Id" */
};
struct auth_conf {
    bool enabled;          /* the "auth" object is present */
    uint64_t serial;       /* unique per parsed config (auth.c's token cache) */
    const char *jwks_path; /* required when enabled */
    const char *issuer;    /* NULL: iss not checked */
    const char **audience; /* n_audience 0: aud not checked */
    size_t n_audience;
    unsigned algorithms; /* AUTH_ALG_* bits; default RS256|ES256 */
    uint32_t leeway_s;   /* default 30 */
    struct auth_claim_header *claims;
    size_t n_claims;
};

/* Top-level "tracing" (config_edge.c): OTLP/HTTP JSON span export. */
struct tracing_conf {
    bool enabled;              /* the "tracing" object is present */
    const char *otlp_endpoint; /* http(s) URL, required when enabled */
    const char *service_name;  /* default "gateway" */
    double sample_ratio;       /* 0..1, default 1 */
};

struct config {
    av_snap_t snap; /* first: the snapshot header of core/avalue.h (zeroed) */
    struct server_conf server;
    struct defaults_conf defaults;
    struct degraded_conf degraded;
    struct upstream_conf upstream;
    const char *access_log_path; /* "-" stdout, "off", or a file */
    struct auth_conf auth;
    struct tracing_conf tracing;
    struct endpoint_conf *endpoints;
    size_t n_endpoints;
    struct ugroup_conf *upstreams; /* the "upstreams" groups */
    size_t n_upstreams;
    /* private: one arena owns every string and array above */
    void *arena;
};

/* The largest config text accepted (16 MiB, about 40,000 endpoints of the
 * demo's size): a bigger file is one error line, and is never parsed. It
 * bounds the time and memory a reload takes inside the running process. */
#define CONFIG_MAX_BYTES (16 << 20)

/* Problems found while loading: one "path: message" line each, in document
 * order (checks across endpoints, such as duplicate routes, come where the
 * second occurrence is). At most CFG_MAX_ERROR_LINES (100) lines are kept;
 * when there were more, a last line "<source>: and 3,998 more problems (only
 * the first 100 are listed)" says how many. Lines are malloc'd and owned by
 * the struct. */
struct config_errors {
    char **lines;
    size_t n;
};
/* Frees every line and empties errs; NULL is fine. */
void config_errors_free(struct config_errors *errs);

/* Parses and validates a JSON text (need not be NUL-terminated). Returns the
 * snapshot, owned by the caller (config_free), or NULL when there was any
 * problem: then errs (which may be NULL) is set to all of them and must be
 * freed with config_errors_free. errs is emptied first; on success it stays
 * empty. A JSON syntax error is a single line "<input>: invalid JSON near line
 * L, column C (byte B)". Out of memory: NULL, with an "out of memory" line
 * when even that fits. Not thread-safe against another concurrent parse
 * (cJSON keeps its last error in a global). */
struct config *config_parse(const char *json, size_t len, struct config_errors *errs);
/* Reads path and parses it like config_parse; a syntax error line starts
 * with the path instead of "<input>", and an unreadable file is the single
 * line "<path>: <strerror>". */
struct config *config_load(const char *path, struct config_errors *errs);
/* Frees the snapshot and everything it points to; NULL is fine. */
void config_free(struct config *cfg);

#endif
