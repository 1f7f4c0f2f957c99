/*
 * config_edge: parses and validates "auth", "tracing" and endpoint "auth"
 * (see config_edge.h and README's reference). The JWKS file itself is read
 * by jwt.c (at start, on SIGHUP and by --check), not here: a snapshot stays a
 * pure function of the config text.
 */
#include "gateway/config_edge.h"

#include <ctype.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>

static const char *const AUTH_KEYS[] = {"jwks_path",  "issuer",   "audience",         "algorithms",
                                        "leeway_s",   "claims_to_headers", NULL};
static const char *const TRACING_KEYS[] = {"otlp_endpoint", "service_name", "sample_ratio", NULL};

/* RFC 9110 tchar. */
static bool is_tchar(int c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s)) return false;
    return true;
}

/* Headers the gateway writes itself on every backend call: a claim must not
 * replace them. */
static bool reserved_header(const char *h)
{
    static const char *const own[] = {"traceparent", "tracestate", "X-Request-Id",
                                      "X-Request-Timeout-Ms", "Host", "Content-Length",
                                      "Transfer-Encoding", "Connection", NULL};
    for (const char *const *o = own; *o; o++)
        if (strcasecmp(h, *o) == 0) return true;
    return false;
}

static void parse_algorithms(struct loader *L, const cJSON *o, struct auth_conf *a)
{
    size_t n;
    const char **algs =
        cfg_get_str_array(L, o, "auth", "algorithms", false, false, NULL, "algorithm", &n);
    if (!algs) return;
    a->algorithms = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(algs[i], "RS256") == 0)
            a->algorithms |= AUTH_ALG_RS256;
        else if (strcmp(algs[i], "ES256") == 0)
            a->algorithms |= AUTH_ALG_ES256;
        else
            cfg_err(L, "auth.algorithms", "unsupported algorithm \"%s\" (expected RS256 or ES256)",
                    algs[i]);
    }
    if (n == 0) cfg_err(L, "auth.algorithms", "must not be empty");
}

static void parse_claims(struct loader *L, const cJSON *o, struct auth_conf *a)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "claims_to_headers");
    if (!m) return;
    const char *p = "auth.claims_to_headers";
    if (!cJSON_IsObject(m)) {
        cfg_err(L, p, "expected an object of claim: header name, got %s", cfg_type_name(m));
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(m);
    if (n > AUTH_MAX_CLAIM_HDRS) {
        cfg_err(L, p, "at most %d claims", AUTH_MAX_CLAIM_HDRS);
        return;
    }
    a->claims = cfg_alloc(L, (n ? n : 1) * sizeof(*a->claims));
    char q[PATH_MAX_LEN];
    for (const cJSON *c = m->child; c; c = c->next) {
        cfg_key_path(q, p, c->string);
        if (!cJSON_IsString(c)) {
            cfg_err(L, q, "expected a header name, got %s", cfg_type_name(c));
            continue;
        }
        const char *h = c->valuestring;
        if (!c->string[0]) {
            cfg_err(L, q, "claim name must not be empty");
            continue;
        }
        if (!is_token(h)) {
            cfg_err(L, q, "\"%s\" is not a valid header name", h);
            continue;
        }
        if (reserved_header(h)) {
            cfg_err(L, q, "\"%s\" is set by the gateway itself", h);
            continue;
        }
        bool dup = false;
        for (size_t j = 0; j < a->n_claims; j++)
            if (strcmp(a->claims[j].claim, c->string) == 0 ||
                strcasecmp(a->claims[j].header, h) == 0)
                dup = true;
        if (dup) {
            cfg_err(L, q, "duplicate claim or header \"%s\"", h);
            continue;
        }
        a->claims[a->n_claims].claim = cfg_strndup(L, c->string, strlen(c->string));
        a->claims[a->n_claims++].header = cfg_strndup(L, h, strlen(h));
    }
}

static void parse_auth(struct loader *L, const cJSON *root, struct auth_conf *a)
{
    a->algorithms = AUTH_ALG_RS256 | AUTH_ALG_ES256;
    a->leeway_s = 30;
    const cJSON *o = cfg_section(L, root, "", "auth", AUTH_KEYS);
    if (!o) return;
    a->enabled = true;
    static _Atomic uint64_t serials;
    a->serial = atomic_fetch_add_explicit(&serials, 1, memory_order_relaxed) + 1;
    if (!cJSON_GetObjectItemCaseSensitive(o, "jwks_path"))
        cfg_err(L, "auth.jwks_path", "is required");
    a->jwks_path = cfg_get_str(L, o, "auth", "jwks_path", false);
    if (a->jwks_path && !a->jwks_path[0]) cfg_err(L, "auth.jwks_path", "must not be empty");
    a->issuer = cfg_get_str(L, o, "auth", "issuer", true);
    a->audience =
        cfg_get_str_array(L, o, "auth", "audience", true, false, NULL, "audience", &a->n_audience);
    parse_algorithms(L, o, a);
    CFG_GET_INT(L, o, "auth", "leeway_s", 0, 3600, a->leeway_s);
    parse_claims(L, o, a);
}

static void parse_tracing(struct loader *L, const cJSON *root, struct tracing_conf *t)
{
    t->service_name = "gateway";
    t->sample_ratio = 1.0;
    const cJSON *o = cfg_section(L, root, "", "tracing", TRACING_KEYS);
    if (!o) return;
    t->enabled = true;
    if (!cJSON_GetObjectItemCaseSensitive(o, "otlp_endpoint"))
        cfg_err(L, "tracing.otlp_endpoint", "is required");
    t->otlp_endpoint = cfg_get_str(L, o, "tracing", "otlp_endpoint", false);
    const char *u = t->otlp_endpoint;
    if (u && ((strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) ||
              strlen(u) < 9 || strpbrk(u, " \t\r\n#")))
        cfg_err(L, "tracing.otlp_endpoint", "must be an http:// or https:// URL, got \"%s\"", u);
    const char *sn = cfg_get_str(L, o, "tracing", "service_name", false);
    if (sn && !sn[0]) cfg_err(L, "tracing.service_name", "must not be empty");
    if (sn) t->service_name = sn;
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "sample_ratio");
    if (r && (!cJSON_IsNumber(r) || !(r->valuedouble >= 0.0 && r->valuedouble <= 1.0)))
        cfg_err(L, "tracing.sample_ratio", "expected a number from 0 to 1");
    else if (r)
        t->sample_ratio = r->valuedouble;
}

void cfg_parse_edge(struct loader *L, const cJSON *root, struct config *cfg)
{
    parse_auth(L, root, &cfg->auth);
    parse_tracing(L, root, &cfg->tracing);
}

void cfg_parse_endpoint_auth(struct loader *L, const cJSON *e, const char *path,
                             const struct config *cfg, struct endpoint_conf *ep)
{
    ep->auth = AUTH_NONE;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, "auth");
    if (!v || cJSON_IsNull(v)) return;
    char p[PATH_MAX_LEN];
    cfg_key_path(p, path, "auth");
    if (cJSON_IsString(v) && strcmp(v->valuestring, "required") == 0)
        ep->auth = AUTH_REQUIRED;
    else if (cJSON_IsString(v) && strcmp(v->valuestring, "optional") == 0)
        ep->auth = AUTH_OPTIONAL;
    else {
        cfg_err(L, p, "expected \"required\", \"optional\" or null");
        return;
    }
    if (!cfg->auth.enabled) cfg_err(L, p, "needs a top-level \"auth\" object (the JWKS)");
}
