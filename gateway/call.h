/*
 * call: one backend exchange as the fan-out sends it (internal to fanout.c
 * and compose.c): the call's header lines, its degraded-store key, and the
 * exchange itself through the worker's cache or the attempt loop.
 */
#ifndef GATEWAY_CALL_H
#define GATEWAY_CALL_H

#include "core/buf.h"
#include "core/ctx.h"
#include "gateway/fanout.h"
#include "gateway/upstream.h"

/* Appends the degraded-store key of one URL of backend b to k: backend
 * name, origin, path and the forwarded header values (and the claims),
 * NUL-separated. Out of memory clears k (no key: neither stored nor
 * served). */
void degraded_key(buf_t *k, struct request *r, const struct backend_conf *b,
                  const char *origin, const buf_t *path);
/* One HTTP exchange of c's backend (the whole backend or one foreach item)
 * to path under gctx, bounded by the request's deadline. path_rc != 0: the
 * path could not be built and no call is made. key (NULL: none) receives
 * the degraded key once the URL is known, and goes through the cache.
 * Fills resp (and c->att, c->cache, c->stale, c->span_id); never fails
 * otherwise. */
void do_call(struct backend_call *c, ctx_t *gctx, const buf_t *path, int path_rc, buf_t *key,
             struct upstream_resp *resp);

#endif
