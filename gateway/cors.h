/*
 * cors: the CORS answer headers (the decisions are in request.c: a preflight
 * OPTIONS with Access-Control-Request-Method for a route with "cors" is
 * answered 204 by the gateway, no backend called).
 */
#ifndef GATEWAY_CORS_H
#define GATEWAY_CORS_H

#include <microhttpd.h>
#include <stdbool.h>

#include "gateway/config.h"

/* Whether origin (the request's Origin, may be NULL) is allowed by c. */
bool cors_allowed(const struct cors_conf *c, const char *origin);
/* Adds Vary: Origin and, for an allowed origin, Access-Control-Allow-Origin
 * (the origin itself) and -Credentials; for a preflight (methods not NULL)
 * also -Allow-Methods, -Allow-Headers and -Max-Age. A disallowed origin
 * gets Vary alone. */
void cors_headers(struct MHD_Response *resp, const struct cors_conf *c, const char *origin,
                  const char *methods);

#endif
