/*
 * config_resil: the loader's part for resilience keys (internal to
 * config.c and config_endpoint.c): `upstreams`, `defaults.breaker`, `retries`, `retry_on`,
 * `hedge_after_ms`, `defaults.retry_budget_percent`. Same conventions as
 * config_load.h: problems are "<json path>: <message>" lines.
 */
#ifndef GATEWAY_CONFIG_RESIL_H
#define GATEWAY_CONFIG_RESIL_H

#include "gateway/config.h"
#include "gateway/config_load.h"

#define CFG_RESIL_DEFAULTS_KEYS "breaker", "retries", "retry_on", "hedge_after_ms", \
                                "retry_budget_percent"
#define CFG_RESIL_BACKEND_KEYS  "retries", "retry_on", "hedge_after_ms"

/* defaults (o may be NULL: all defaults). */
void cfg_resil_defaults(struct loader *L, const cJSON *o, struct defaults_conf *d);
/* The top-level `upstreams` object; call before the endpoints. */
void cfg_resil_upstreams(struct loader *L, const cJSON *root, struct config *cfg);
/* A backend's retry keys and its group (after url and timeout_ms). */
void cfg_resil_backend(struct loader *L, const cJSON *b, const char *path,
                       const struct config *cfg, struct backend_conf *be);

#endif
