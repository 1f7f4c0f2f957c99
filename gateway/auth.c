/*
 * auth: the request side of JWT checks and the JWKS lifecycle. See auth.h.
 */
#include "gateway/auth.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/sha.h>

#include "gateway/fanout.h"
#include "gateway/jwt.h"

#define CLAIM_VALUE_MAX 1024

/* ---- verified tokens, per thread ----
 *
 * A verification costs tens of µs (RS256) to over a hundred (ES256), and a
 * client sends the same token with every request: each worker thread keeps
 * the last CACHE_SLOTS tokens it accepted, direct-mapped by their SHA-256
 * (one hash, ~1-2 µs, instead of parsing and verifying). An entry is only
 * used with the auth config and the key set it was verified under (their
 * serials: a reload or a key rotation empties it in effect) and only within
 * the token's own exp / nbf window (with the leeway). Rejections are never
 * cached. Thread-local and fixed-size: no lock, no allocation, nothing to
 * free (~30 KiB per thread). */
#define CACHE_SLOTS    64
#define CACHE_HDRS_MAX 400

struct cached {
    uint8_t digest[SHA256_DIGEST_LENGTH];
    uint64_t auth_serial, jwks_serial; /* 0: empty */
    double not_before, not_after;      /* accepted while not_before <= now <= not_after */
    uint16_t hdrs_len;
    char hdrs[CACHE_HDRS_MAX]; /* r->auth_hdrs as it was built */
};

static __thread struct cached cache[CACHE_SLOTS];
static __thread uint64_t cache_hits;

uint64_t auth_cache_hits(void)
{
    return cache_hits;
}

static struct cached *cache_slot(const uint8_t *digest)
{
    return &cache[digest[0] % CACHE_SLOTS];
}

/* Fills r->auth_hdrs from the cache; true on a hit. */
static bool cache_get(struct request *r, const uint8_t *digest, uint64_t jwks_serial, double now)
{
    const struct cached *c = cache_slot(digest);
    if (!c->auth_serial || c->auth_serial != r->cfg->auth.serial ||
        c->jwks_serial != jwks_serial || memcmp(c->digest, digest, sizeof c->digest) != 0 ||
        now < c->not_before || now > c->not_after)
        return false;
    if (c->hdrs_len && buf_append(&r->auth_hdrs, c->hdrs, c->hdrs_len)) return false;
    cache_hits++;
    return true;
}

static void cache_put(const struct request *r, const uint8_t *digest, uint64_t jwks_serial,
                      const cJSON *claims)
{
    if (r->auth_hdrs.len > CACHE_HDRS_MAX) return;
    const struct auth_conf *a = &r->cfg->auth;
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(claims, "exp");
    const cJSON *nbf = cJSON_GetObjectItemCaseSensitive(claims, "nbf");
    struct cached *c = cache_slot(digest);
    memcpy(c->digest, digest, sizeof c->digest);
    c->auth_serial = a->serial;
    c->jwks_serial = jwks_serial;
    c->not_after = exp->valuedouble + a->leeway_s; /* jwt_verify checked exp is a number */
    c->not_before = cJSON_IsNumber(nbf) ? nbf->valuedouble - a->leeway_s : -INFINITY;
    c->hdrs_len = (uint16_t)r->auth_hdrs.len;
    if (c->hdrs_len) memcpy(c->hdrs, r->auth_hdrs.data, c->hdrs_len);
}

static void jwks_free_snap(void *p)
{
    jwks_free(p);
}

int auth_start(avalue_t *jwks, const struct config *cfg)
{
    av_init(jwks, jwks_free_snap);
    if (!cfg->auth.enabled) return 0;
    char err[256];
    struct jwks *ks = jwks_load(cfg->auth.jwks_path, err, sizeof err);
    if (!ks) {
        fprintf(stderr, "gateway: auth.jwks_path: %s: %s\n", cfg->auth.jwks_path, err);
        return -1;
    }
    av_store(jwks, ks);
    fprintf(stderr, "gateway: loaded %zu keys from %s\n", jwks_size(ks), cfg->auth.jwks_path);
    return 0;
}

void auth_reload(avalue_t *jwks, const struct config *cfg)
{
    if (!cfg->auth.enabled) {
        av_store(jwks, NULL);
        return;
    }
    char err[256];
    struct jwks *ks = jwks_load(cfg->auth.jwks_path, err, sizeof err);
    if (!ks) {
        fprintf(stderr, "gateway: reload of the JWKS %s failed: %s; keeping the keys in use\n",
                cfg->auth.jwks_path, err);
        return;
    }
    av_store(jwks, ks);
    fprintf(stderr, "gateway: JWKS reloaded from %s (%zu keys)\n", cfg->auth.jwks_path,
            jwks_size(ks));
}

void auth_stop(avalue_t *jwks)
{
    av_destroy(jwks);
}

int auth_check_config(const struct config *cfg)
{
    if (!cfg->auth.enabled) return 0;
    char err[256];
    struct jwks *ks = jwks_load(cfg->auth.jwks_path, err, sizeof err);
    if (!ks) {
        fprintf(stderr, "auth.jwks_path: %s: %s\n", cfg->auth.jwks_path, err);
        return -1;
    }
    jwks_free(ks);
    return 0;
}

/* The token of "Bearer <token>" (scheme case-insensitive), or NULL. */
static const char *bearer(const char *h, size_t *len)
{
    if (!h || strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\0')) return NULL;
    const char *t = h + 6;
    while (*t == ' ')
        t++;
    size_t n = strlen(t);
    while (n && t[n - 1] == ' ')
        n--;
    *len = n;
    return t;
}

static int unauthorized(struct request *r, const char *www, const char *msg)
{
    r->www_auth = www;
    fanout_error_body(&r->out, msg, NULL, r->request_id);
    r->status = 401;
    return -EACCES;
}

/* The claim as a header value into out; false when it is absent, not a
 * string or number, or not printable. */
static bool claim_value(const cJSON *c, char *out, size_t cap)
{
    if (cJSON_IsString(c)) {
        size_t n = strlen(c->valuestring);
        if (n == 0 || n >= cap) return false;
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)c->valuestring[i] < 0x20 || c->valuestring[i] == 0x7f) return false;
        memcpy(out, c->valuestring, n + 1);
        return true;
    }
    if (cJSON_IsNumber(c) && isfinite(c->valuedouble)) {
        double v = c->valuedouble;
        snprintf(out, cap, v == floor(v) && fabs(v) < 9007199254740992.0 ? "%.0f" : "%.17g", v);
        return true;
    }
    return false;
}

/* Renders the configured claims of a verified token into r->auth_hdrs. */
static int claim_headers(struct request *r, const cJSON *claims)
{
    const struct auth_conf *a = &r->cfg->auth;
    char v[CLAIM_VALUE_MAX];
    for (size_t i = 0; i < a->n_claims; i++) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(claims, a->claims[i].claim);
        if (!c) continue;
        if (!claim_value(c, v, sizeof v)) {
            if (cJSON_IsString(c)) return -1; /* control characters: refuse the token */
            continue;
        }
        if (buf_printf(&r->auth_hdrs, "%s: %s", a->claims[i].header, v) ||
            buf_putc(&r->auth_hdrs, '\0'))
            return -1;
    }
    return 0;
}

int auth_request(struct request *r, avalue_t *jwks, const char *authorization)
{
    const struct auth_conf *a = &r->cfg->auth;
    size_t len = 0;
    const char *tok = bearer(authorization, &len);
    if (!tok) {
        if (r->ep->auth == AUTH_OPTIONAL) return 0;
        return unauthorized(r, "Bearer", "missing bearer token");
    }
    struct jwt_policy p = {
        .algorithms = a->algorithms,
        .issuer = a->issuer,
        .audience = a->audience,
        .n_audience = a->n_audience,
        .leeway_s = a->leeway_s,
    };
    cJSON *claims = NULL;
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)tok, len, digest);
    time_t now = time(NULL);
    av_read_lock();
    const struct jwks *ks = av_load(jwks);
    uint64_t serial = jwks_serial(ks);
    int rc = 0;
    bool hit = len <= JWT_MAX_TOKEN && cache_get(r, digest, serial, (double)now);
    if (!hit) rc = jwt_verify(ks, &p, tok, len, (int64_t)now, &claims);
    av_read_unlock();
    if (hit) return 0;
    if (rc == 0 && claim_headers(r, claims) != 0) rc = JWT_EMALFORMED;
    if (rc == 0) cache_put(r, digest, serial, claims);
    cJSON_Delete(claims);
    if (rc == 0) return 0;
    char msg[96];
    snprintf(msg, sizeof msg, "invalid token: %s", jwt_strerror(rc));
    return unauthorized(r, "Bearer error=\"invalid_token\"", msg);
}

bool auth_hides_header(const struct request *r, const char *name)
{
    const struct auth_conf *a = &r->cfg->auth;
    for (size_t i = 0; i < a->n_claims; i++)
        if (strcasecmp(a->claims[i].header, name) == 0) return true;
    return false;
}

size_t auth_call_headers(const struct request *r, const char **hdrs, size_t room)
{
    size_t n = 0;
    for (size_t off = 0; off < r->auth_hdrs.len && n < room; n++) {
        hdrs[n] = r->auth_hdrs.data + off;
        off += strlen(hdrs[n]) + 1;
    }
    return n;
}

int auth_key_append(const struct request *r, buf_t *key)
{
    return r->auth_hdrs.len ? buf_append(key, r->auth_hdrs.data, r->auth_hdrs.len) : 0;
}
