/*
 * ugroup: per-process state of upstream hosts and groups, and the choice of
 * a group's host for one attempt.
 *
 * A registry maps a key (a host "127.0.0.1:9001" or a plain origin, a group
 * name, a (group, host) pair, a backend name) to an entry that lives until
 * the process ends. Lookups take no lock: the table is a fixed array of
 * atomic pointers filled by linear probing; a slot goes from NULL to an
 * entry once (release-published under a mutex that only inserts take), and
 * an entry's key never changes, so a reader that acquire-loads a non-NULL
 * slot sees a complete entry. Everything mutable in an entry is an atomic
 * (breaker: see breaker.h; in-flight count, round-robin counter, health
 * flag, attempt counters). State therefore survives a SIGHUP reload for
 * every key the new config still uses.
 */
#ifndef GATEWAY_UGROUP_H
#define GATEWAY_UGROUP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "gateway/breaker.h"
#include "gateway/config.h"

enum ugroup_kind { UG_HOST = 'H', UG_GROUP = 'G', UG_MEMBER = 'M', UG_BACKEND = 'B' };
enum attempt_kind { ATTEMPT_FIRST, ATTEMPT_RETRY, ATTEMPT_HEDGE };

struct ugroup_ent {
    /* read-only once published */
    const char *key; /* the name, NUL-terminated */
    char kind;       /* enum ugroup_kind */
    const char *key2; /* UG_MEMBER: the host (key is the group) */
    /* UG_HOST */
    struct breaker br;
    _Atomic uint32_t inflight; /* calls in flight from any worker */
    /* UG_GROUP */
    _Atomic uint32_t rr;
    /* UG_MEMBER: active health checks */
    _Atomic bool down;
    _Atomic bool checked;
    /* UG_MEMBER, health thread only (gateway/health.c): never read elsewhere */
    uint64_t next_ns;
    uint32_t ok_run, fail_run;
    /* UG_BACKEND */
    _Atomic uint64_t attempts[3]; /* enum attempt_kind */
};

/* The entry for (kind, key[, key2]), created on first use; NULL only when
 * out of memory or the table is full (then the caller goes without). */
struct ugroup_ent *ugroup_get(char kind, const char *key, const char *key2);

/* One attempt's host. */
struct ugroup_pick {
    const char *host;        /* "host:port" of the group, NULL when the group is empty */
    struct ugroup_ent *ent;  /* its UG_HOST entry (may be NULL) */
};
/* Chooses a host of u for an attempt: healthy ones only (all when none is:
 * panic mode), another than avoid when there is one, not one whose breaker
 * is open and not yet due, then by balance. */
void ugroup_pick(const struct ugroup_conf *u, const struct ugroup_ent *avoid, uint64_t now_ns,
                 struct ugroup_pick *out);

/* Appends gateway_breaker_state, gateway_upstream_host_healthy,
 * gateway_backend_attempts_total and gateway_retry_budget_exhausted_total
 * in the Prometheus text format. Returns 0 or a buf error. */
int ugroup_render(buf_t *out);

#endif
