/*
 * jwt_testkeys: what the JWT tests need to play identity provider: RSA and
 * EC P-256 keys generated at test time with libcrypto, their JWKS, and
 * compact JWS tokens signed with them (RS256, ES256 as raw r||s, HS256 and
 * "none" for the rejection cases). Header-only, for the unit and the
 * integration tests; everything returned is malloc'd (free it).
 */
#ifndef TESTS_COMMON_JWT_TESTKEYS_H
#define TESTS_COMMON_JWT_TESTKEYS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

static inline char *tk_b64url(const unsigned char *p, size_t n)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = malloc(n / 3 * 4 + 5), *o = out;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        *o++ = al[v >> 18], *o++ = al[(v >> 12) & 63], *o++ = al[(v >> 6) & 63], *o++ = al[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)p[i] << 16;
        *o++ = al[v >> 18], *o++ = al[(v >> 12) & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;
        *o++ = al[v >> 18], *o++ = al[(v >> 12) & 63], *o++ = al[(v >> 6) & 63];
    }
    *o = '\0';
    return out;
}

static inline char *tk_b64url_str(const char *s)
{
    return tk_b64url((const unsigned char *)s, strlen(s));
}

static inline EVP_PKEY *tk_rsa(int bits)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
}

static inline EVP_PKEY *tk_ec(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

/* A bignum parameter of k, base64url, left-padded to pad bytes (0: none). */
static inline char *tk_param(EVP_PKEY *k, const char *name, int pad)
{
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(k, name, &bn) != 1) return NULL;
    int n = pad ? pad : BN_num_bytes(bn);
    unsigned char *b = malloc((size_t)n);
    BN_bn2binpad(bn, b, n);
    char *s = tk_b64url(b, (size_t)n);
    free(b);
    BN_free(bn);
    return s;
}

/* One JWK object (no braces around the set). */
static inline char *tk_jwk(EVP_PKEY *k, const char *kid)
{
    char *out = malloc(4096 + 2048);
    if (EVP_PKEY_is_a(k, "RSA")) {
        char *n = tk_param(k, OSSL_PKEY_PARAM_RSA_N, 0), *e = tk_param(k, OSSL_PKEY_PARAM_RSA_E, 0);
        snprintf(out, 6144, "{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\",\"n\":\"%s\",\"e\":\"%s\"}",
                 kid, n, e);
        free(n);
        free(e);
    } else {
        char *x = tk_param(k, OSSL_PKEY_PARAM_EC_PUB_X, 32);
        char *y = tk_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
        snprintf(out, 6144, "{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}",
                 kid, x, y);
        free(x);
        free(y);
    }
    return out;
}

/* {"keys":[rsa as kid rkid, ec as kid ekid]} (either may be NULL). */
static inline char *tk_jwks(EVP_PKEY *rsa, const char *rkid, EVP_PKEY *ec, const char *ekid)
{
    char *a = rsa ? tk_jwk(rsa, rkid) : strdup(""), *b = ec ? tk_jwk(ec, ekid) : strdup("");
    size_t n = strlen(a) + strlen(b) + 32;
    char *out = malloc(n);
    snprintf(out, n, "{\"keys\":[%s%s%s]}", a, rsa && ec ? "," : "", b);
    free(a);
    free(b);
    return out;
}

/* A token: header {"alg":alg,"typ":"JWT"[,"kid":kid]}, payload as given,
 * signed with k (RS256/ES256), with the HMAC secret "secret" (HS256), or
 * not at all ("none"). */
static inline char *tk_token(EVP_PKEY *k, const char *alg, const char *kid, const char *payload)
{
    char hdr[256];
    if (kid)
        snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg, kid);
    else
        snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    char *h = tk_b64url_str(hdr), *p = tk_b64url_str(payload);
    size_t in_len = strlen(h) + 1 + strlen(p);
    char *input = malloc(in_len + 2048);
    snprintf(input, in_len + 1, "%s.%s", h, p);
    free(h);
    free(p);
    unsigned char sig[1024];
    size_t sl = sizeof sig;
    if (strcmp(alg, "none") == 0) {
        sl = 0;
    } else if (strcmp(alg, "HS256") == 0) {
        unsigned int hl = 0;
        HMAC(EVP_sha256(), "secret", 6, (unsigned char *)input, in_len, sig, &hl);
        sl = hl;
    } else {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k);
        EVP_DigestSign(md, sig, &sl, (unsigned char *)input, in_len);
        EVP_MD_CTX_free(md);
        if (strcmp(alg, "ES256") == 0) { /* DER -> r || s */
            const unsigned char *d = sig;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &d, (long)sl);
            BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
            BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
            ECDSA_SIG_free(es);
            sl = 64;
        }
    }
    char *s = tk_b64url(sig, sl);
    snprintf(input + in_len, 2048, ".%s", s);
    free(s);
    return input;
}

#endif
