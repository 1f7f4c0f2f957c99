/*
 * cors: see cors.h. Access-Control-Allow-Origin always echoes the request's
 * origin (never "*"), so the same answer is right with credentials; Vary:
 * Origin tells caches it differs per origin.
 */
#include "gateway/cors.h"

#include <stdio.h>
#include <string.h>

bool cors_allowed(const struct cors_conf *c, const char *origin)
{
    if (!c || !origin || !*origin) return false;
    if (c->any_origin) return true;
    for (size_t i = 0; i < c->n_origins; i++)
        if (strcmp(c->origins[i], origin) == 0) return true;
    return false;
}

void cors_headers(struct MHD_Response *resp, const struct cors_conf *c, const char *origin,
                  const char *methods)
{
    MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
    if (!cors_allowed(c, origin)) return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
    if (c->allow_credentials)
        MHD_add_response_header(resp, "Access-Control-Allow-Credentials", "true");
    if (!methods) return;
    MHD_add_response_header(resp, "Access-Control-Allow-Methods", methods);
    if (c->allow_headers)
        MHD_add_response_header(resp, "Access-Control-Allow-Headers", c->allow_headers);
    char age[16];
    snprintf(age, sizeof age, "%u", (unsigned)c->max_age_s);
    MHD_add_response_header(resp, "Access-Control-Max-Age", age);
}
