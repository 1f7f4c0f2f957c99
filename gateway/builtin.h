/*
 * builtin: the gateway's own endpoints (/healthz, /readyz, /metrics); see
 * builtin.c.
 */
#ifndef GATEWAY_BUILTIN_H
#define GATEWAY_BUILTIN_H

#include <stdbool.h>

#include "core/buf.h"
#include "gateway/gateway.h"

/* Is path (raw, without the query) a built-in endpoint? */
bool is_builtin(const char *path);
/* Writes the answer of built-in path (GET or HEAD) into out and returns
 * its HTTP status; sets *content_type when it is not JSON (/metrics). */
int builtin_answer(struct gateway *gw, const char *path, buf_t *out, const char **content_type);

#endif
