/*
 * tls: the listener's certificate (libmicrohttpd's GnuTLS). One process-wide
 * current pair, handed to GnuTLS by a certificate callback, so SIGHUP can
 * swap it without restarting the daemons.
 */
#ifndef GATEWAY_TLS_H
#define GATEWAY_TLS_H

#include <stddef.h>

#include "gateway/config.h"

/* TLS 1.2 and 1.3 only. */
#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

/* Loads the PEM pair to check it. NULL when it is good; otherwise "cert" or
 * "key" (the file to blame) with the reason in why. */
const char *tls_pair_check(const char *cert, const char *key, char *why, size_t n);
/* Loads cfg's pair as the current one (at start). 0 or -1 (message on
 * stderr). Without server.tls does nothing. */
int tls_start(const struct config *cfg);
/* SIGHUP: loads cfg's pair again; on failure keeps the current one and
 * says so on stderr. Returns 0 or -1. */
int tls_reload(const struct config *cfg);
/* The gnutls_certificate_retrieve_function2 for MHD_OPTION_HTTPS_CERT_CALLBACK. */
void *tls_cert_callback(void);
/* Frees every pair (after the daemons stopped). */
void tls_stop(void);

#endif
