/*
 * avalue: an atomic pointer to an immutable snapshot (Go's atomic.Value).
 *
 * A writer publishes a new snapshot with av_store / av_swap / av_cas; readers
 * on any thread get the current one without a lock. A replaced snapshot is
 * freed (with the free_fn given to av_init) only when no reader can still
 * hold it. Two ways to read:
 *
 *   - av_acquire / av_release: a pinned reference. It may be held for as long
 *     as the caller likes, across coroutine yields (a request pins the config
 *     for its whole life). Cost: an RCU read section + two atomic RMWs on the
 *     snapshot's count.
 *   - av_read_lock / av_load / av_read_unlock: no reference, only valid until
 *     av_read_unlock, and the section must not yield or block.
 *
 * Cost, Release build on the 2-core VM: ~14 ns for either, nearly all of it
 * liburcu-bp's out-of-line read lock/unlock and its TLS lookup. Building
 * avalue.c with _LGPL_SOURCE inlines them (~4 ns), but liburcu allows that
 * only for LGPL-compatible code, so it is left off.
 *
 * Snapshots embed an av_snap_t as their FIRST member (like struct rcu_head in
 * liburcu), so the reference count travels with the snapshot and pinning
 * costs no allocation:
 *
 *     struct config { av_snap_t snap; int port; ... };
 *     struct config *c = av_acquire(&g_config);   // pinned
 *     ...                                         // may yield
 *     av_release(&g_config, c);
 *
 * Reclamation scheme, and why. A plain reference count is not enough on its
 * own: between loading the pointer and incrementing the count the snapshot
 * could be freed. RCU alone is not enough either: a pin that lasts a request
 * would keep a worker's read section open and stall every grace period. So
 * both, each for what it is good at (liburcu-bp, a well-kept Debian library:
 * no thread registration, reader = a TLS counter update):
 *
 *   - every snapshot carries a count; the avalue itself owns one reference;
 *   - av_acquire = short RCU read section { load pointer (acquire);
 *     count++ } -- the owner's reference cannot have been dropped yet, since
 *     it is dropped only after a grace period that follows the replacement;
 *   - replacing a snapshot hands its owner reference to call_rcu, which
 *     drops it after a grace period (so av_load readers are safe too);
 *   - whoever drops the count to zero calls free_fn.
 *
 * ThreadSanitizer cannot see liburcu's grace periods or its call_rcu queue
 * (the library is not instrumented), so the code tells it what they imply:
 * the pointer is published with C11 release/acquire atomics (visible to TSan
 * anyway), a replaced snapshot is __tsan_release'd before call_rcu and
 * __tsan_acquire'd in the callback (queue hand-off), and av_read_unlock
 * releases a process-wide "grace period" address that the callback acquires
 * before it may free (a read section ends before the grace period that
 * follows it). These only add happens-before edges RCU guarantees; no
 * suppressions are needed. For the same reason av_destroy waits on its own
 * count of pending drops (a pthread condition) instead of rcu_barrier(),
 * whose internal hand-offs TSan reports.
 *
 * Thread safety: every function may be called from any thread. v must
 * outlive every pin taken from it and every pending free (av_destroy waits
 * for the latter).
 */
#ifndef CORE_AVALUE_H
#define CORE_AVALUE_H

#include <stdbool.h>
#include <stdint.h>

/* Embedded as the first member of every snapshot; private. */
typedef struct av_snap {
    _Atomic uint64_t refs_; /* pins, + 1 until a grace period after replacement */
    struct avalue *owner_;
    /* a struct rcu_head (checked in avalue.c), kept opaque so that this header
     * does not pull liburcu into every user */
    _Alignas(void *) unsigned char rcu_[2 * sizeof(void *)];
} av_snap_t;

typedef void (*av_free_fn)(void *snap);

typedef struct avalue {
    av_snap_t *_Atomic cur_; /* private: the current snapshot or NULL */
    av_free_fn free_fn;      /* read-only */
    uint64_t pending_;       /* private: replaced snapshots whose grace period runs */
} avalue_t;

/* Initialises v empty (av_acquire returns NULL until a store). free_fn frees
 * a snapshot (the pointer to the whole struct); NULL means free(). */
void av_init(avalue_t *v, av_free_fn free_fn);
/* Drops the current snapshot and waits until every snapshot v replaced has
 * passed its grace period (and is freed unless pinned). No pin may be
 * outstanding. Must not be called inside a read
 * section or from a free_fn. */
void av_destroy(avalue_t *v);

/* Waits until no replaced snapshot (of any avalue) is waiting for its grace
 * period; those not pinned are freed by then. Not inside a read section or a
 * free_fn. Under constant stores elsewhere it may wait for those too. */
void av_barrier(void);

/* Publishes snap (may be NULL) and takes ownership of it; snap must be new
 * (never published before) and must not be modified afterwards. The previous snapshot is freed once
 * unreachable. */
void av_store(avalue_t *v, void *snap);
/* Publishes snap (like av_store) and returns the previous one pinned (release
 * it with av_release), or NULL when there was none. */
void *av_swap(avalue_t *v, void *snap);
/* Publishes snap only if the current snapshot is expected (compared by
 * address; pin expected while deciding, so it cannot be freed and its address
 * reused). True: v owns snap. False: nothing changed, snap is still the
 * caller's. */
bool av_cas(avalue_t *v, void *expected, void *snap);

/* The current snapshot, pinned (NULL when empty). The pin survives yields and
 * later stores; give it back with av_release. Lock-free, any thread. */
void *av_acquire(avalue_t *v);
/* Drops a pin (NULL is ignored); the last one frees a replaced snapshot.
 * v is the value the pin came from. */
void av_release(avalue_t *v, void *snap);
/* Takes one more pin on a snapshot the caller already holds pinned. */
void *av_retain(void *snap);

/* Short, unpinned reads: av_load is valid only between av_read_lock and
 * av_read_unlock, and nothing in between may yield, block or call
 * av_destroy. Sections nest. */
void av_read_lock(void);
void av_read_unlock(void);
void *av_load(avalue_t *v);

#endif
