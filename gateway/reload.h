/*
 * reload: SIGHUP's config reload, run on a thread of its own so that the
 * thread that waits for signals is never busy reading or parsing a file: a
 * SIGTERM that arrives during a slow reload (a 16 MiB file, a config on a
 * stalled network mount) is acted on at once.
 *
 * One reload runs at a time; a SIGHUP during one queues exactly one more
 * (the file may have changed again since the running one opened it).
 */
#ifndef GATEWAY_RELOAD_H
#define GATEWAY_RELOAD_H

#include "gateway/config.h"
#include "gateway/gateway.h"

struct reloader;

/* Loads path, printing every problem on stderr. NULL when it is not valid. */
struct config *reload_load(const char *path);

/* A reloader of gw's config from path (both must outlive it, except as
 * reloader_stop says). NULL when out of memory. */
struct reloader *reloader_new(struct gateway *gw, const char *path);
/* Starts a reload, or queues one after the running one. Returns 0 or
 * -errno (reported on stderr) when no thread could be started. */
int reloader_request(struct reloader *r);
/* Never touches gw again after this returns, and does not wait for a
 * reload in progress: its result is dropped by its thread, which frees r
 * when it ends (else r is freed here). */
void reloader_stop(struct reloader *r);

#endif
