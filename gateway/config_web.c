/*
 * config_web: server.tls, server.gzip and "cors" (see config_web.h and
 * README's reference). The TLS pair is loaded here once to check it
 * (tls_pair_check): a missing, unreadable or mismatched pair is a --check
 * error, and a reload with one keeps the running config (and certificate).
 */
#include "gateway/config_web.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "gateway/tls.h"

static const char *const TLS_KEYS[] = {"cert", "key", NULL};
static const char *const GZIP_KEYS[] = {"min_bytes", "level", NULL};
static const char *const CORS_KEYS[] = {"allow_origins", "allow_headers", "allow_credentials",
                                        "max_age_s", NULL};

static void parse_tls(struct loader *L, const cJSON *o, struct server_conf *sv)
{
    const cJSON *t = cfg_section(L, o, "server", "tls", TLS_KEYS);
    if (!t) return;
    const char *cert = cfg_get_str(L, t, "server.tls", "cert", false);
    const char *key = cfg_get_str(L, t, "server.tls", "key", false);
    if (!cJSON_GetObjectItemCaseSensitive(t, "cert")) cfg_err(L, "server.tls.cert", "is required");
    if (!cJSON_GetObjectItemCaseSensitive(t, "key")) cfg_err(L, "server.tls.key", "is required");
    if (!cert || !key) return;
    char why[256];
    const char *which = tls_pair_check(cert, key, why, sizeof why);
    if (which) {
        cfg_err(L, strcmp(which, "key") == 0 ? "server.tls.key" : "server.tls.cert", "%s", why);
        return;
    }
    sv->tls_cert = cert;
    sv->tls_key = key;
}

static void parse_gzip(struct loader *L, const cJSON *o, struct server_conf *sv)
{
    sv->gzip_min_bytes = 1024;
    sv->gzip_level = 1;
    const cJSON *g = cfg_section(L, o, "server", "gzip", GZIP_KEYS);
    if (!g) return;
    sv->gzip = true;
    CFG_GET_INT(L, g, "server.gzip", "min_bytes", 0, 1 << 30, sv->gzip_min_bytes);
    CFG_GET_INT(L, g, "server.gzip", "level", 1, 9, sv->gzip_level);
}

void cfg_parse_server_web(struct loader *L, const cJSON *o, struct server_conf *sv)
{
    parse_tls(L, o, sv);
    parse_gzip(L, o, sv);
}

static bool host_char(int c)
{
    return isalnum(c) || c == '-' || c == '.';
}

bool cfg_origin_ok(const char *s)
{
    const char *h;
    if (strncmp(s, "http://", 7) == 0)
        h = s + 7;
    else if (strncmp(s, "https://", 8) == 0)
        h = s + 8;
    else
        return false;
    const char *e = h;
    if (*e == '[') { /* [v6] */
        e++;
        while (isxdigit((unsigned char)*e) || *e == ':' || *e == '.')
            e++;
        if (*e++ != ']' || e - h < 4) return false;
    } else {
        while (host_char((unsigned char)*e))
            e++;
        if (e == h || *h == '.' || *h == '-' || e[-1] == '.') return false;
    }
    if (!*e) return true;
    if (*e++ != ':') return false;
    unsigned port = 0;
    size_t n = 0;
    for (; isdigit((unsigned char)*e) && n < 6; e++, n++)
        port = port * 10 + (unsigned)(*e - '0');
    return !*e && n && port >= 1 && port <= 65535;
}

static bool header_char(int c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static const char *join(struct loader *L, const char **v, size_t n)
{
    if (!n) return NULL;
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += strlen(v[i]) + 2;
    char *s = cfg_alloc(L, len + 1), *p = s;
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "%s%s", i ? ", " : "", v[i]);
    return s;
}

static void parse_origins(struct loader *L, const cJSON *c, const char *path, struct cors_conf *cc)
{
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
    cfg_key_path(p, path, "allow_origins");
    if (!cJSON_GetObjectItemCaseSensitive(c, "allow_origins")) {
        cfg_err(L, p, "is required");
        return;
    }
    cc->origins =
        cfg_get_str_array(L, c, path, "allow_origins", false, false, NULL, "origin", &cc->n_origins);
    for (size_t i = 0; cc->origins && i < cc->n_origins; i++) {
        if (strcmp(cc->origins[i], "*") == 0)
            cc->any_origin = true;
        else if (!cfg_origin_ok(cc->origins[i]))
            cfg_err(L, cfg_index_path(q, p, i),
                    "\"%s\" is not an origin (expected \"*\" or scheme://host[:port] with scheme "
                    "http or https, no path)",
                    cc->origins[i]);
    }
}

const struct cors_conf *cfg_parse_cors(struct loader *L, const cJSON *obj, const char *path)
{
    const cJSON *c = cfg_section(L, obj, path, "cors", CORS_KEYS);
    if (!c) return NULL;
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
    cfg_key_path(p, path, "cors");
    size_t before = L->n_errors;
    struct cors_conf *cc = cfg_alloc(L, sizeof *cc);
    cc->max_age_s = 600;
    parse_origins(L, c, p, cc);
    size_t nh = 0;
    const char **hs =
        cfg_get_str_array(L, c, p, "allow_headers", false, true, header_char, "header name", &nh);
    cc->allow_headers = hs ? join(L, hs, nh) : NULL;
    cfg_get_bool(L, c, p, "allow_credentials", &cc->allow_credentials);
    CFG_GET_INT(L, c, p, "max_age_s", 0, 86400, cc->max_age_s);
    if (cc->any_origin && cc->allow_credentials)
        cfg_err(L, cfg_key_path(q, p, "allow_origins"),
                "\"*\" cannot be used with \"allow_credentials\": true (list the origins)");
    return L->n_errors == before ? cc : NULL;
}
