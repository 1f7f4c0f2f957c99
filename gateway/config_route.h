/*
 * config_route: parses and validates route patterns and backend URL
 * templates, the strings with {placeholders}. Internal to the loader
 * (config.c, config_endpoint.c).
 */
#ifndef GATEWAY_CONFIG_ROUTE_H
#define GATEWAY_CONFIG_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/config.h"
#include "gateway/config_load.h"

/* s[0..n) as a decimal port 1..65535 into *port; false when it is not one. */
bool cfg_parse_port(const char *s, size_t n, uint16_t *port);
/* Splits the route pattern s into ep->segs and ep->params. Reports the
 * first problem only, at path; false then. */
bool cfg_parse_route(struct loader *L, const char *path, const char *s, struct endpoint_conf *ep);
/* Validates the backend URL template u (reported at path) and splits it
 * into be->parts; placeholders are checked against ep's params only when
 * its route was valid (route_ok). */
void cfg_parse_url(struct loader *L, const char *path, const char *u,
                   const struct endpoint_conf *ep, bool route_ok, struct backend_conf *be);

#endif
