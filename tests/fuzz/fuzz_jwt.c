/*
 * Fuzz target: the JWKS loader and the JWT verifier (gateway/jwt.h).
 *
 * Input: the first byte picks the target, the rest is the document:
 *   even: a JWKS document for jwks_parse (a set that loads must have at
 *         least one key and free cleanly);
 *   odd:  a compact token for jwt_verify against a key set made once at
 *         start (an RSA and an EC key generated with libcrypto); a random
 *         token must never verify, and a result is always a known code.
 * Both must stay bounded in time and memory for any input (token length,
 * segment count, key sizes).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../common/jwt_testkeys.h"
#include "gateway/jwt.h"

static struct jwks *ks;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    EVP_PKEY *rsa = tk_rsa(2048), *ec = tk_ec();
    char *j = tk_jwks(rsa, "r1", ec, "e1");
    char err[256];
    ks = jwks_parse(j, strlen(j), err, sizeof err);
    free(j);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    if (!ks) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const char *doc = (const char *)data + 1;
    size_t n = size - 1;
    char *copy = malloc(n ? n : 1); /* exact size: ASan sees any overread */
    memcpy(copy, doc, n);
    if (!(data[0] & 1)) {
        char err[256];
        struct jwks *k = jwks_parse(copy, n, err, sizeof err);
        if (k && jwks_size(k) == 0) abort();
        jwks_free(k);
    } else {
        const char *auds[] = {"api"};
        struct jwt_policy p = {.algorithms = JWT_ALG_RS256 | JWT_ALG_ES256,
                               .issuer = "https://idp",
                               .audience = auds,
                               .n_audience = 1,
                               .leeway_s = 30};
        cJSON *claims = NULL;
        int rc = jwt_verify(ks, &p, copy, n, 1700000000, &claims);
        if (rc == 0) abort(); /* nobody can forge a signature by chance */
        if (rc < JWT_ENOMEM || rc > 0 || claims) abort();
    }
    free(copy);
    return 0;
}
