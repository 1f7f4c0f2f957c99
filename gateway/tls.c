/*
 * tls: the listener's certificate pair (see tls.h).
 *
 * libmicrohttpd 0.9.75 takes the certificate either as PEM text at start
 * (fixed for the daemon's life) or as a GnuTLS retrieve callback
 * (MHD_OPTION_HTTPS_CERT_CALLBACK), which GnuTLS calls in every handshake.
 * We use the callback: it returns the current pair, an atomic pointer that
 * SIGHUP swaps, so a reload needs no new daemon and drops no connection.
 * GnuTLS keeps the returned pointers for the rest of that handshake, on
 * any worker, so a replaced pair is never freed while the process runs:
 * it joins a list freed by tls_stop (a few KiB per certificate reload).
 */
#include "gateway/tls.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CHAIN 16

struct pair {
    gnutls_pcert_st pcert[MAX_CHAIN];
    unsigned n;
    gnutls_privkey_t key;
    struct pair *older; /* replaced pairs, kept until tls_stop */
};

static _Atomic(struct pair *) current;
static pthread_mutex_t swap_lock = PTHREAD_MUTEX_INITIALIZER;

static void pair_free(struct pair *p)
{
    for (unsigned i = 0; i < p->n; i++)
        gnutls_pcert_deinit(&p->pcert[i]);
    if (p->key) gnutls_privkey_deinit(p->key);
    free(p);
}

static int load_cert(struct pair *p, const char *path, char *why, size_t n)
{
    gnutls_datum_t d = {0};
    int rc = gnutls_load_file(path, &d);
    if (rc < 0) {
        snprintf(why, n, "cannot read %s: %s", path, gnutls_strerror(rc));
        return -1;
    }
    p->n = MAX_CHAIN;
    rc = gnutls_pcert_list_import_x509_raw(p->pcert, &p->n, &d, GNUTLS_X509_FMT_PEM, 0);
    gnutls_free(d.data);
    if (rc < 0) {
        p->n = 0;
        snprintf(why, n, "%s is not a PEM certificate (chain): %s", path, gnutls_strerror(rc));
        return -1;
    }
    return 0;
}

static int load_key(struct pair *p, const char *path, char *why, size_t n)
{
    gnutls_datum_t d = {0};
    int rc = gnutls_load_file(path, &d);
    if (rc < 0) {
        snprintf(why, n, "cannot read %s: %s", path, gnutls_strerror(rc));
        return -1;
    }
    rc = gnutls_privkey_init(&p->key);
    if (rc >= 0) rc = gnutls_privkey_import_x509_raw(p->key, &d, GNUTLS_X509_FMT_PEM, NULL, 0);
    gnutls_free(d.data);
    if (rc < 0) {
        snprintf(why, n, "%s is not a PEM private key: %s", path, gnutls_strerror(rc));
        return -1;
    }
    return 0;
}

/* The key must be the certificate's: compare the public keys. */
static int check_match(struct pair *p, const char *key, char *why, size_t n)
{
    gnutls_datum_t a = {0}, b = {0};
    gnutls_pubkey_t pk = NULL;
    int rc = gnutls_pubkey_init(&pk);
    if (rc >= 0) rc = gnutls_pubkey_import_privkey(pk, p->key, 0, 0);
    if (rc >= 0) rc = gnutls_pubkey_export2(pk, GNUTLS_X509_FMT_DER, &a);
    if (rc >= 0) rc = gnutls_pubkey_export2(p->pcert[0].pubkey, GNUTLS_X509_FMT_DER, &b);
    bool same = rc >= 0 && a.size == b.size && memcmp(a.data, b.data, a.size) == 0;
    if (pk) gnutls_pubkey_deinit(pk);
    gnutls_free(a.data);
    gnutls_free(b.data);
    if (same) return 0;
    snprintf(why, n, "%s does not match the certificate's public key", key);
    return -1;
}

/* NULL with *which set on failure. */
static struct pair *pair_load(const char *cert, const char *key, const char **which, char *why,
                              size_t n)
{
    struct pair *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(why, n, "out of memory");
        *which = "cert";
        return NULL;
    }
    *which = "cert";
    if (load_cert(p, cert, why, n) == 0) {
        *which = "key";
        if (load_key(p, key, why, n) == 0 && check_match(p, key, why, n) == 0) return p;
    }
    pair_free(p);
    return NULL;
}

const char *tls_pair_check(const char *cert, const char *key, char *why, size_t n)
{
    const char *which;
    struct pair *p = pair_load(cert, key, &which, why, n);
    if (!p) return which;
    pair_free(p);
    return NULL;
}

static int install(const struct config *cfg, bool reload)
{
    const char *which;
    char why[512];
    struct pair *p = pair_load(cfg->server.tls_cert, cfg->server.tls_key, &which, why, sizeof why);
    if (!p) {
        fprintf(stderr, "gateway: server.tls.%s: %s%s\n", which, why,
                reload ? "; keeping the previous certificate" : "");
        return -1;
    }
    pthread_mutex_lock(&swap_lock);
    p->older = atomic_load(&current);
    atomic_store(&current, p);
    pthread_mutex_unlock(&swap_lock);
    if (reload) fprintf(stderr, "gateway: TLS certificate reloaded from %s\n", cfg->server.tls_cert);
    return 0;
}

int tls_start(const struct config *cfg)
{
    return cfg->server.tls_cert ? install(cfg, false) : 0;
}

int tls_reload(const struct config *cfg)
{
    if (!cfg->server.tls_cert || !atomic_load(&current)) return 0; /* TLS on/off: restart */
    return install(cfg, true);
}

static int retrieve(gnutls_session_t s, const gnutls_datum_t *req_ca_rdn, int nreqs,
                    const gnutls_pk_algorithm_t *algos, int n_algos, gnutls_pcert_st **pcert,
                    unsigned int *pcert_length, gnutls_privkey_t *privkey)
{
    (void)s, (void)req_ca_rdn, (void)nreqs, (void)algos, (void)n_algos;
    struct pair *p = atomic_load(&current);
    if (!p) return -1;
    *pcert = p->pcert;
    *pcert_length = p->n;
    *privkey = p->key;
    return 0;
}

void *tls_cert_callback(void)
{
    return (void *)retrieve;
}

void tls_stop(void)
{
    pthread_mutex_lock(&swap_lock);
    struct pair *p = atomic_exchange(&current, NULL);
    pthread_mutex_unlock(&swap_lock);
    while (p) {
        struct pair *o = p->older;
        pair_free(p);
        p = o;
    }
}
