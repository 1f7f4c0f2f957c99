/*
 * ugroup: per-process state of upstream hosts and groups, and the choice of
 * a group's host for one attempt.
 *
 * A registry maps a key (a host "127.0.0.1:9001" or a plain origin, a group
 * name, a (group, host) pair) to an entry. Every published
 * config holds a reference on each entry it uses (ugroup_attach, before it
 * is published; ugroup_detach when the config is freed), and its
 * ugroup_conf / backend_conf carry the resolved pointers, so the request
 * path and the health thread never look a key up: they reach entries
 * through the config snapshot they pinned, which keeps them alive. The
 * table itself is touched only under a mutex (attach, detach, the scrape).
 * An entry no live config uses any more is unlinked and freed, so it leaves
 * /metrics; one the new config still uses keeps its state across a SIGHUP
 * reload (the new config is attached before the old one is detached).
 * Everything mutable in an entry is an atomic (breaker: see breaker.h;
 * in-flight count, round-robin counter, health flag). Attempt counters are
 * per worker (gateway/metrics.h), not here.
 */
#ifndef GATEWAY_UGROUP_H
#define GATEWAY_UGROUP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "gateway/breaker.h"
#include "gateway/config.h"

enum ugroup_kind { UG_HOST = 'H', UG_GROUP = 'G', UG_MEMBER = 'M' };

struct ugroup_ent {
    /* registry links and the count of configs using it: under the mutex */
    struct ugroup_ent *chain, *prev, *next;
    uint32_t refs;
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
};

/* A reference on the entry for (kind, key[, key2]), created on first use;
 * NULL only when out of memory (then the caller goes without). */
struct ugroup_ent *ugroup_ref(char kind, const char *key, const char *key2);
/* Drops a reference; the last one unlinks and frees the entry. NULL is fine. */
void ugroup_unref(struct ugroup_ent *e);

/* Takes cfg's references and stores the entries in its groups (ent,
 * host_ents, member_ents) and backends (origin_ent). Call before
 * cfg is published. Returns 0 or -ENOMEM (cfg is still usable: a missing
 * entry means no state for that key). */
int ugroup_attach(struct config *cfg);
/* Drops what ugroup_attach took; when cfg is freed. */
void ugroup_detach(struct config *cfg);
/* Both for one group (exposed for tests). */
int ugroup_attach_group(struct ugroup_conf *u);
void ugroup_detach_group(struct ugroup_conf *u);

/* One attempt's host. */
struct ugroup_pick {
    const char *host;        /* "host:port" of the group, NULL when the group is empty */
    struct ugroup_ent *ent;  /* its UG_HOST entry (may be NULL) */
};
/* Chooses a host of u for an attempt: healthy ones only (all when none is:
 * panic mode), another than avoid when there is one, not one whose breaker
 * is open and not yet due, then by balance. avoid is set for a retry or a
 * hedge (the host the first attempt went to), NULL for a first attempt;
 * only first attempts advance the round-robin rotation. */
void ugroup_pick(const struct ugroup_conf *u, const struct ugroup_ent *avoid, uint64_t now_ns,
                 struct ugroup_pick *out);

/* Appends gateway_breaker_state, gateway_upstream_host_healthy and
 * gateway_retry_budget_exhausted_total
 * in the Prometheus text format. Returns 0 or a buf error. */
int ugroup_render(buf_t *out);

#endif
