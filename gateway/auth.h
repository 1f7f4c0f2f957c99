/*
 * auth: JWT checks of a request (endpoint "auth": "required" | "optional")
 * and the claim headers that follow from them; the JWKS snapshot's life
 * (loaded at start, reloaded on SIGHUP, checked by --check).
 *
 * The key set lives in an avalue (core/avalue.h) of its own, beside the
 * config: a SIGHUP reloads it even when the config did not change (key
 * rotation), and a bad new file keeps the keys in use. A request reads it
 * only inside jwt_verify (an RCU read section, no pin).
 *
 * Claim headers (auth.claims_to_headers) are rendered once per request into
 * r->auth_hdrs as "Name: value\0" lines; every backend call sends them and a
 * client header of the same name is never forwarded (on any endpoint, so a
 * client cannot inject X-User-Id where auth is off). They are part of the
 * degraded-store key.
 *
 * Accepted tokens are cached per worker thread (keyed by their SHA-256,
 * valid only under the same auth config and key set and within the token's
 * exp/nbf window), so a client's repeated token costs a hash, not a
 * signature check.
 */
#ifndef GATEWAY_AUTH_H
#define GATEWAY_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "core/avalue.h"
#include "core/buf.h"
#include "gateway/config.h"

struct request;

/* Sets up jwks and, when cfg has "auth", loads cfg->auth.jwks_path into it.
 * Returns 0, or -1 after printing "gateway: auth.jwks_path: <file>: <why>". */
int auth_start(avalue_t *jwks, const struct config *cfg);
/* SIGHUP: reloads cfg's JWKS. A file that fails keeps the current keys and
 * says so on stderr. No "auth": the keys are dropped. */
void auth_reload(avalue_t *jwks, const struct config *cfg);
/* Frees the key set (no request may run). */
void auth_stop(avalue_t *jwks);
/* --check: loads the JWKS once; prints "auth.jwks_path: ..." and returns -1
 * when it is unusable, else 0. */
int auth_check_config(const struct config *cfg);

/* Checks r's Authorization header against r->ep->auth. Returns 0 (go on;
 * r->auth_hdrs holds the claim headers), or -EACCES with r->status 401,
 * r->out (JSON error) and r->www_auth set. Runs on the worker,
 * synchronously. */
int auth_request(struct request *r, avalue_t *jwks, const char *authorization);

/* Tokens accepted from this thread's cache of verified tokens so far (for
 * the tests; see auth.c). */
uint64_t auth_cache_hits(void);

/* True when name is a claims_to_headers header: not forwarded from the
 * client. */
bool auth_hides_header(const struct request *r, const char *name);
/* Points hdrs[0..] (at most room) at r's claim header lines. Returns how
 * many. */
size_t auth_call_headers(const struct request *r, const char **hdrs, size_t room);
/* Appends r's claim header lines to a degraded key. 0 or -ENOMEM. */
int auth_key_append(const struct request *r, buf_t *key);

#endif
