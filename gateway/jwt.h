/*
 * jwt: JSON Web Key Sets and JSON Web Token verification (RFC 7515/7517/
 * 7518/7519), RS256 and ES256 only, with OpenSSL's libcrypto.
 *
 * A key set is an immutable snapshot (it embeds av_snap_t first, so it can
 * be published through core/avalue.h): its EVP_PKEYs are only read after
 * loading, which OpenSSL 3 allows from any number of threads at once.
 *
 * jwt_verify is synchronous and allocates only for the cJSON trees of the
 * token's header and payload. Its cost is bounded: a token is at most
 * JWT_MAX_TOKEN bytes and exactly three segments; RSA keys are limited to
 * 2048..8192 bits at load time, EC keys to P-256. The signature is checked
 * before the payload is parsed.
 */
#ifndef GATEWAY_JWT_H
#define GATEWAY_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "core/avalue.h"

#define JWT_MAX_TOKEN     8192
#define JWKS_MAX_KEYS     64
#define JWKS_MAX_BYTES    (1 << 20)
#define JWT_RSA_MIN_BITS  2048
#define JWT_RSA_MAX_BITS  8192

/* Algorithms (the same bits as AUTH_ALG_* in config.h). */
#define JWT_ALG_RS256 0x1u
#define JWT_ALG_ES256 0x2u

/* jwt_verify results: 0 or one of these (jwt_strerror names them). */
enum jwt_error {
    JWT_EMALFORMED = -1, /* not three base64url segments of JSON, too long, bad claim types */
    JWT_EALG_NONE = -2,  /* "alg": "none" */
    JWT_EALG = -3,       /* an algorithm not supported or not in the policy (HS256, ...) */
    JWT_EKID = -4,       /* a kid not in the key set */
    JWT_ENOKEY = -5,     /* no key of the algorithm's type (or no key set) */
    JWT_ESIG = -6,       /* the signature does not verify */
    JWT_EEXP = -7,       /* exp passed (beyond the leeway), or no exp */
    JWT_ENBF = -8,       /* nbf in the future (beyond the leeway) */
    JWT_EISS = -9,       /* iss missing or not the configured issuer */
    JWT_EAUD = -10,      /* aud missing or matching none of the configured audiences */
    JWT_ENOMEM = -11,
};

struct jwks; /* opaque snapshot */

/* What a token must satisfy. Strings are borrowed. */
struct jwt_policy {
    unsigned algorithms;   /* JWT_ALG_* bits */
    const char *issuer;    /* NULL: not checked */
    const char **audience; /* n_audience 0: not checked */
    size_t n_audience;
    uint32_t leeway_s; /* allowed clock skew for exp and nbf */
};

/* Parses a JWKS document ({"keys":[...]}). RSA keys need n and e, EC keys
 * crv "P-256", x and y (base64url). Keys with "use" other than "sig", an
 * "alg" other than RS256/ES256, or another kty are skipped; a malformed
 * supported key is an error. Returns the set (free with jwks_free), or NULL
 * with a message in err ("keys[1]: RSA modulus of 16384 bits (2048..8192)",
 * "no usable key", "invalid JSON", ...). */
struct jwks *jwks_parse(const char *json, size_t len, char *err, size_t errlen);
/* Reads path (at most JWKS_MAX_BYTES) and parses it; errors name the file's
 * problem without the path. */
struct jwks *jwks_load(const char *path, char *err, size_t errlen);
void jwks_free(struct jwks *ks);
/* Number of usable keys. */
size_t jwks_size(const struct jwks *ks);
/* A number no other key set of this process has (0 for NULL): what a cache
 * of verified tokens compares to notice a reload. */
uint64_t jwks_serial(const struct jwks *ks);

/* Verifies the compact JWS tok[0..len) against ks and p at time now_s (Unix
 * seconds). Returns 0 and, when claims is not NULL, the payload object in
 * *claims (cJSON_Delete it); or a negative enum jwt_error (*claims
 * untouched). */
int jwt_verify(const struct jwks *ks, const struct jwt_policy *p, const char *tok, size_t len,
               int64_t now_s, cJSON **claims);
/* A short English reason for a jwt_verify result. */
const char *jwt_strerror(int rc);

/* base64url without padding into out (outcap bytes). Returns the decoded
 * length, or -1 for a bad character, a bad length or no room. Exposed for
 * the tests. */
long jwt_b64url_decode(const char *in, size_t n, unsigned char *out, size_t outcap);

#endif
