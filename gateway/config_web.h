/*
 * config_web: parses and validates server.tls, server.gzip and "cors" (in
 * defaults or an endpoint). Internal to the loader (config.c,
 * config_endpoint.c).
 */
#ifndef GATEWAY_CONFIG_WEB_H
#define GATEWAY_CONFIG_WEB_H

#include <cJSON.h>

#include "gateway/config.h"
#include "gateway/config_load.h"

/* server.tls and server.gzip of the "server" object o. */
void cfg_parse_server_web(struct loader *L, const cJSON *o, struct server_conf *sv);
/* obj's "cors" (path names obj): NULL when absent or invalid. */
const struct cors_conf *cfg_parse_cors(struct loader *L, const cJSON *obj, const char *path);
/* true when s is "scheme://host[:port]" with scheme http or https, no path. */
bool cfg_origin_ok(const char *s);

#endif
