/*
 * config_endpoint: parses and validates the "endpoints" array, each
 * endpoint and its backends, and the "client" key. Internal to the loader
 * (config.c).
 */
#ifndef GATEWAY_CONFIG_ENDPOINT_H
#define GATEWAY_CONFIG_ENDPOINT_H

#include <cJSON.h>

#include "gateway/config.h"
#include "gateway/config_load.h"

/* Optional "client": "auto" | "curl" | "native" of obj (path names obj);
 * *out unchanged when absent or wrong (reported). */
void cfg_get_client(struct loader *L, const cJSON *obj, const char *path,
                    enum upstream_client *out);
/* root's "endpoints" into cfg->endpoints; needs cfg's defaults, auth and
 * upstreams parsed first. */
void cfg_parse_endpoints(struct loader *L, const cJSON *root, struct config *cfg);

#endif
