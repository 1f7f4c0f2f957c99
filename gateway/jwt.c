/*
 * jwt: JWKS loading and JWS/JWT verification with libcrypto. See jwt.h.
 */
#include "gateway/jwt.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

enum kty { KTY_RSA = JWT_ALG_RS256, KTY_EC = JWT_ALG_ES256 };

struct jwk {
    char *kid; /* NULL when the key has none */
    enum kty kty;
    EVP_PKEY *pkey;
};

struct jwks {
    av_snap_t snap; /* first: publishable through core/avalue.h */
    uint64_t serial;
    size_t n;
    struct jwk keys[];
};

/* ---- base64url ---- */

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

long jwt_b64url_decode(const char *in, size_t n, unsigned char *out, size_t outcap)
{
    if (n % 4 == 1) return -1;
    size_t need = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    if (need > outcap) return -1;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_val((unsigned char)in[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (bits && (acc & ((1u << bits) - 1))) return -1; /* non-canonical trailing bits */
    return (long)o;
}

/* ---- JWKS ---- */

/* Decodes member name of key k (a base64url string) into out; length or -1
 * with err set. */
static long member_b64(const cJSON *k, const char *name, unsigned char *out, size_t cap,
                       char *err, size_t errlen, const char *where)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(k, name);
    if (!cJSON_IsString(v)) {
        snprintf(err, errlen, "%s: \"%s\" missing or not a string", where, name);
        return -1;
    }
    long n = jwt_b64url_decode(v->valuestring, strlen(v->valuestring), out, cap);
    if (n <= 0) snprintf(err, errlen, "%s: \"%s\" is not base64url (or too long)", where, name);
    return n;
}

static EVP_PKEY *from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (params && ctx && EVP_PKEY_fromdata_init(ctx) == 1)
        if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    if (pkey) { /* the point is on the curve, the modulus odd, ... */
        EVP_PKEY_CTX *chk = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
        if (!chk || EVP_PKEY_public_check(chk) != 1) {
            EVP_PKEY_free(pkey);
            pkey = NULL;
        }
        EVP_PKEY_CTX_free(chk);
    }
    return pkey;
}

static EVP_PKEY *rsa_key(const cJSON *k, char *err, size_t errlen, const char *where)
{
    unsigned char n[JWT_RSA_MAX_BITS / 8 + 1], e[8];
    long nl = member_b64(k, "n", n, sizeof n, err, errlen, where);
    if (nl < 0) return NULL;
    long el = member_b64(k, "e", e, sizeof e, err, errlen, where);
    if (el < 0) return NULL;
    BIGNUM *bn = BN_bin2bn(n, (int)nl, NULL), *be = BN_bin2bn(e, (int)el, NULL);
    EVP_PKEY *pkey = NULL;
    int bits = bn ? BN_num_bits(bn) : 0;
    if (bn && (bits < JWT_RSA_MIN_BITS || bits > JWT_RSA_MAX_BITS)) {
        snprintf(err, errlen, "%s: RSA modulus of %d bits (%d..%d allowed)", where, bits,
                 JWT_RSA_MIN_BITS, JWT_RSA_MAX_BITS);
    } else if (bn && be) {
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        if (bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
            pkey = from_params("RSA", bld);
        OSSL_PARAM_BLD_free(bld);
        if (!pkey) snprintf(err, errlen, "%s: not a usable RSA public key", where);
    } else {
        snprintf(err, errlen, "out of memory");
    }
    BN_free(bn);
    BN_free(be);
    return pkey;
}

static EVP_PKEY *ec_key(const cJSON *k, char *err, size_t errlen, const char *where)
{
    const cJSON *crv = cJSON_GetObjectItemCaseSensitive(k, "crv");
    if (!cJSON_IsString(crv) || strcmp(crv->valuestring, "P-256") != 0) {
        snprintf(err, errlen, "%s: EC key with a crv other than P-256", where);
        return NULL;
    }
    unsigned char pub[65], tmp[33];
    pub[0] = 0x04; /* uncompressed point */
    long xl = member_b64(k, "x", tmp, sizeof tmp, err, errlen, where);
    if (xl < 0) return NULL;
    if (xl != 32) goto bad;
    memcpy(pub + 1, tmp, 32);
    long yl = member_b64(k, "y", tmp, sizeof tmp, err, errlen, where);
    if (yl < 0) return NULL;
    if (yl != 32) goto bad;
    memcpy(pub + 33, tmp, 32);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub))
        pkey = from_params("EC", bld);
    OSSL_PARAM_BLD_free(bld);
    if (pkey) return pkey;
bad:
    snprintf(err, errlen, "%s: not a usable P-256 public key", where);
    return NULL;
}

/* One entry of "keys": 1 and *out filled, 0 skipped (not for us), -1 error. */
static int parse_key(const cJSON *k, size_t i, struct jwk *out, char *err, size_t errlen)
{
    char where[32];
    snprintf(where, sizeof where, "keys[%zu]", i);
    if (!cJSON_IsObject(k)) {
        snprintf(err, errlen, "%s: expected an object", where);
        return -1;
    }
    const cJSON *kty = cJSON_GetObjectItemCaseSensitive(k, "kty");
    const cJSON *use = cJSON_GetObjectItemCaseSensitive(k, "use");
    const cJSON *alg = cJSON_GetObjectItemCaseSensitive(k, "alg");
    const cJSON *kid = cJSON_GetObjectItemCaseSensitive(k, "kid");
    if (!cJSON_IsString(kty)) {
        snprintf(err, errlen, "%s: \"kty\" missing or not a string", where);
        return -1;
    }
    if (use && (!cJSON_IsString(use) || strcmp(use->valuestring, "sig") != 0)) return 0;
    if (kid && !cJSON_IsString(kid)) {
        snprintf(err, errlen, "%s: \"kid\" is not a string", where);
        return -1;
    }
    bool rsa = strcmp(kty->valuestring, "RSA") == 0, ec = strcmp(kty->valuestring, "EC") == 0;
    if (!rsa && !ec) return 0;
    if (alg && (!cJSON_IsString(alg) || strcmp(alg->valuestring, rsa ? "RS256" : "ES256") != 0))
        return 0;
    out->kty = rsa ? KTY_RSA : KTY_EC;
    out->pkey = rsa ? rsa_key(k, err, errlen, where) : ec_key(k, err, errlen, where);
    if (!out->pkey) return -1;
    out->kid = kid ? strdup(kid->valuestring) : NULL;
    if (kid && !out->kid) {
        EVP_PKEY_free(out->pkey);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 1;
}

void jwks_free(struct jwks *ks)
{
    if (!ks) return;
    for (size_t i = 0; i < ks->n; i++) {
        EVP_PKEY_free(ks->keys[i].pkey);
        free(ks->keys[i].kid);
    }
    free(ks);
}

size_t jwks_size(const struct jwks *ks)
{
    return ks ? ks->n : 0;
}

uint64_t jwks_serial(const struct jwks *ks)
{
    return ks ? ks->serial : 0;
}

struct jwks *jwks_parse(const char *json, size_t len, char *err, size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        snprintf(err, errlen, "invalid JSON");
        return NULL;
    }
    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(root, "keys");
    struct jwks *ks = NULL;
    if (!cJSON_IsArray(keys)) {
        snprintf(err, errlen, "expected an object with a \"keys\" array");
        goto out;
    }
    size_t n = (size_t)cJSON_GetArraySize(keys);
    if (n > JWKS_MAX_KEYS) {
        snprintf(err, errlen, "%zu keys (at most %d)", n, JWKS_MAX_KEYS);
        goto out;
    }
    ks = calloc(1, sizeof *ks + n * sizeof(struct jwk));
    if (!ks) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    size_t i = 0;
    for (const cJSON *k = keys->child; k; k = k->next, i++) {
        int rc = parse_key(k, i, &ks->keys[ks->n], err, errlen);
        if (rc < 0) {
            jwks_free(ks);
            ks = NULL;
            goto out;
        }
        ks->n += (size_t)rc;
    }
    static _Atomic uint64_t serials;
    ks->serial = atomic_fetch_add_explicit(&serials, 1, memory_order_relaxed) + 1;
    if (ks->n == 0) {
        snprintf(err, errlen, "no usable key (RSA or EC P-256 signing keys)");
        jwks_free(ks);
        ks = NULL;
    }
out:
    cJSON_Delete(root);
    return ks;
}

struct jwks *jwks_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s", strerror(errno));
        return NULL;
    }
    char *data = malloc(JWKS_MAX_BYTES + 1);
    size_t n = data ? fread(data, 1, JWKS_MAX_BYTES + 1, f) : 0;
    bool bad = data && ferror(f);
    fclose(f);
    struct jwks *ks = NULL;
    if (!data)
        snprintf(err, errlen, "out of memory");
    else if (bad)
        snprintf(err, errlen, "read error");
    else if (n > JWKS_MAX_BYTES)
        snprintf(err, errlen, "larger than %d bytes", JWKS_MAX_BYTES);
    else
        ks = jwks_parse(data, n, err, errlen);
    free(data);
    return ks;
}

/* ---- verification ---- */

const char *jwt_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "ok";
    case JWT_EMALFORMED:
        return "malformed token";
    case JWT_EALG_NONE:
        return "unsigned token (alg none)";
    case JWT_EALG:
        return "algorithm not allowed";
    case JWT_EKID:
        return "unknown key id";
    case JWT_ENOKEY:
        return "no key for the algorithm";
    case JWT_ESIG:
        return "bad signature";
    case JWT_EEXP:
        return "token expired";
    case JWT_ENBF:
        return "token not yet valid";
    case JWT_EISS:
        return "wrong issuer";
    case JWT_EAUD:
        return "wrong audience";
    case JWT_ENOMEM:
        return "out of memory";
    }
    return "invalid token";
}

/* Decodes a segment and parses it as a JSON object. */
static int segment_json(const char *s, size_t n, cJSON **out)
{
    unsigned char buf[JWT_MAX_TOKEN];
    long len = jwt_b64url_decode(s, n, buf, sizeof buf);
    if (len <= 0) return JWT_EMALFORMED;
    cJSON *j = cJSON_ParseWithLength((const char *)buf, (size_t)len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return JWT_EMALFORMED;
    }
    *out = j;
    return 0;
}

/* The header's algorithm and key: 0 and *key, or an error. */
static int pick_key(const struct jwks *ks, const struct jwt_policy *p, const cJSON *hdr,
                    const struct jwk **key)
{
    const cJSON *alg = cJSON_GetObjectItemCaseSensitive(hdr, "alg");
    const cJSON *kid = cJSON_GetObjectItemCaseSensitive(hdr, "kid");
    if (!cJSON_IsString(alg)) return JWT_EMALFORMED;
    if (cJSON_GetObjectItemCaseSensitive(hdr, "crit")) return JWT_EMALFORMED; /* none understood */
    if (kid && !cJSON_IsString(kid)) return JWT_EMALFORMED;
    unsigned a = strcmp(alg->valuestring, "RS256") == 0   ? JWT_ALG_RS256
                 : strcmp(alg->valuestring, "ES256") == 0 ? JWT_ALG_ES256
                                                          : 0;
    if (strcmp(alg->valuestring, "none") == 0) return JWT_EALG_NONE;
    if (!a || !(p->algorithms & a)) return JWT_EALG;
    if (!ks) return JWT_ENOKEY;
    bool kid_seen = false;
    for (size_t i = 0; i < ks->n; i++) {
        const struct jwk *k = &ks->keys[i];
        if (kid) {
            if (!k->kid || strcmp(k->kid, kid->valuestring) != 0) continue;
            kid_seen = true;
        }
        if ((unsigned)k->kty != a) continue;
        *key = k;
        return 0;
    }
    /* a kid naming an RSA key on an ES256 token is a wrong key, not an
     * unknown one; without a kid the first key of the type is used */
    return kid && !kid_seen ? JWT_EKID : JWT_ENOKEY;
}

/* ES256 signatures are r || s (32 bytes each); libcrypto wants DER. */
static int es256_der(const unsigned char *sig, size_t n, unsigned char *der, size_t cap)
{
    if (n != 64) return -1;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
    if (!es || !r || !s || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return -1;
    }
    int len = i2d_ECDSA_SIG(es, NULL);
    unsigned char *p = der;
    if (len <= 0 || (size_t)len > cap || i2d_ECDSA_SIG(es, &p) != len) len = -1;
    ECDSA_SIG_free(es);
    return len;
}

static int check_sig(const struct jwk *k, const char *input, size_t in_len, const char *s64,
                     size_t s64_len)
{
    unsigned char sig[JWT_RSA_MAX_BITS / 8 + 8], der[80];
    long n = jwt_b64url_decode(s64, s64_len, sig, sizeof sig);
    if (n <= 0) return JWT_ESIG;
    const unsigned char *sp = sig;
    size_t sl = (size_t)n;
    if (k->kty == KTY_EC) {
        int dl = es256_der(sig, sl, der, sizeof der);
        if (dl < 0) return JWT_ESIG;
        sp = der;
        sl = (size_t)dl;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md) return JWT_ENOMEM;
    int ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
             EVP_DigestVerify(md, sp, sl, (const unsigned char *)input, in_len) == 1;
    EVP_MD_CTX_free(md);
    return ok ? 0 : JWT_ESIG;
}

static bool aud_matches(const cJSON *aud, const struct jwt_policy *p)
{
    const cJSON *one = aud;
    bool arr = cJSON_IsArray(aud);
    for (one = arr ? aud->child : aud; one; one = arr ? one->next : NULL) {
        if (!cJSON_IsString(one)) continue;
        for (size_t i = 0; i < p->n_audience; i++)
            if (strcmp(one->valuestring, p->audience[i]) == 0) return true;
    }
    return false;
}

static int check_claims(const cJSON *c, const struct jwt_policy *p, int64_t now)
{
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(c, "exp");
    const cJSON *nbf = cJSON_GetObjectItemCaseSensitive(c, "nbf");
    const cJSON *iss = cJSON_GetObjectItemCaseSensitive(c, "iss");
    const cJSON *aud = cJSON_GetObjectItemCaseSensitive(c, "aud");
    if ((exp && !cJSON_IsNumber(exp)) || (nbf && !cJSON_IsNumber(nbf))) return JWT_EMALFORMED;
    double t = (double)now, leeway = (double)p->leeway_s;
    if (!exp || !isfinite(exp->valuedouble) || t > exp->valuedouble + leeway) return JWT_EEXP;
    if (nbf && !(t + leeway >= nbf->valuedouble)) return JWT_ENBF;
    if (p->issuer && (!cJSON_IsString(iss) || strcmp(iss->valuestring, p->issuer) != 0))
        return JWT_EISS;
    if (p->n_audience && (!aud || !aud_matches(aud, p))) return JWT_EAUD;
    return 0;
}

int jwt_verify(const struct jwks *ks, const struct jwt_policy *p, const char *tok, size_t len,
               int64_t now_s, cJSON **claims)
{
    if (len == 0 || len > JWT_MAX_TOKEN) return JWT_EMALFORMED;
    const char *d1 = memchr(tok, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok))) return JWT_EMALFORMED;
    cJSON *hdr = NULL, *body = NULL;
    int rc = segment_json(tok, (size_t)(d1 - tok), &hdr);
    const struct jwk *key = NULL;
    if (!rc) rc = pick_key(ks, p, hdr, &key);
    cJSON_Delete(hdr);
    if (!rc && d2 + 1 == tok + len) rc = JWT_ESIG; /* no signature */
    if (!rc) rc = check_sig(key, tok, (size_t)(d2 - tok), d2 + 1, len - (size_t)(d2 + 1 - tok));
    if (!rc) rc = segment_json(d1 + 1, (size_t)(d2 - d1 - 1), &body);
    if (!rc) rc = check_claims(body, p, now_s);
    if (!rc && claims)
        *claims = body;
    else
        cJSON_Delete(body);
    return rc;
}
