/*
 * config_edge: the loader's part for the edge features owned by jwt/auth and
 * otel: the top-level "auth" and "tracing" objects and the endpoint "auth"
 * member. Internal to the config loader (config.c and config_endpoint.c
 * call these during the walk); errors are reported with their JSON paths like every other key.
 */
#ifndef GATEWAY_CONFIG_EDGE_H
#define GATEWAY_CONFIG_EDGE_H

#include "gateway/config_load.h"

/* Top-level "auth" and "tracing" into cfg->auth / cfg->tracing. */
void cfg_parse_edge(struct loader *L, const cJSON *root, struct config *cfg);
/* Endpoint member "auth" into ep->auth; path is "endpoints[i]". Needs
 * cfg->auth parsed first (an endpoint auth without a top-level auth is an
 * error). */
void cfg_parse_endpoint_auth(struct loader *L, const cJSON *e, const char *path,
                             const struct config *cfg, struct endpoint_conf *ep);

#endif
