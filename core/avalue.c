/*
 * avalue: the atomic snapshot pointer (avalue.h): publication, pinned and
 * quick reads, and the deferred free of replaced snapshots once no reader
 * can still hold them.
 */
#include "core/avalue.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>

#include <urcu-bp.h>

#include "core/container_of.h"
#include "core/sanitizer.h"
#ifdef CORE_TSAN
#define AV_TSAN 1
#endif

#ifdef AV_TSAN
#include <sanitizer/tsan_interface.h>
#define tsan_acquire(p) __tsan_acquire((void *)(p))
#define tsan_release(p) __tsan_release((void *)(p))
#else
#define tsan_acquire(p) ((void)(p))
#define tsan_release(p) ((void)(p))
#endif

_Static_assert(sizeof(((av_snap_t *)0)->rcu_) >= sizeof(struct rcu_head),
               "av_snap_t.rcu_ too small for struct rcu_head");
_Static_assert(alignof(av_snap_t) >= alignof(struct rcu_head), "av_snap_t misaligned");

/* Stands for "a grace period has elapsed since every read section that has
 * ended": read sections release it, call_rcu callbacks acquire it. TSan only. */
static char grace_period;

/* Owner references handed to call_rcu and not yet dropped, per avalue and in
 * all. av_destroy / av_barrier wait on these rather than calling
 * rcu_barrier(): liburcu's barrier hands its own allocations to the call_rcu
 * thread through paths TSan cannot see, and a wait on a pthread condition
 * also gives the waiter a happens-before edge TSan understands. Writes are
 * rare (config reloads), so one mutex is plenty. */
static pthread_mutex_t pending_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pending_cv = PTHREAD_COND_INITIALIZER;
static uint64_t pending_all;

static inline struct rcu_head *snap_rcu(av_snap_t *s)
{
    return (struct rcu_head *)(void *)s->rcu_;
}

static void snap_free(avalue_t *v, av_snap_t *s)
{
    if (v->free_fn)
        v->free_fn(s);
    else
        free(s);
}

/* Drops one reference; the last one frees. acq_rel rather than release + an
 * acquire fence: TSan does not model fences. */
static inline void snap_put(avalue_t *v, av_snap_t *s)
{
    if (atomic_fetch_sub_explicit(&s->refs_, 1, memory_order_acq_rel) == 1) snap_free(v, s);
}

static void owner_drop_cb(struct rcu_head *h)
{
    av_snap_t *s = container_of(h, av_snap_t, rcu_);
    tsan_acquire(s);             /* the call_rcu hand-off */
    tsan_acquire(&grace_period); /* every reader that could see s has left */
    avalue_t *v = s->owner_;
    snap_put(v, s);
    pthread_mutex_lock(&pending_mu);
    v->pending_--;
    pending_all--;
    if (v->pending_ == 0 || pending_all == 0) pthread_cond_broadcast(&pending_cv);
    pthread_mutex_unlock(&pending_mu); /* v may be gone from here on */
}

/* The avalue's reference on a snapshot it no longer publishes: an av_load
 * reader may still use it, and an av_acquire reader may be about to count
 * itself in, so it goes only after a grace period. */
static void owner_drop_later(av_snap_t *s)
{
    pthread_mutex_lock(&pending_mu);
    s->owner_->pending_++;
    pending_all++;
    pthread_mutex_unlock(&pending_mu);
    tsan_release(s);
    call_rcu(snap_rcu(s), owner_drop_cb);
}

static void snap_init(avalue_t *v, av_snap_t *s)
{
    atomic_init(&s->refs_, 1);
    s->owner_ = v;
}

void av_init(avalue_t *v, av_free_fn free_fn)
{
    atomic_init(&v->cur_, NULL);
    v->free_fn = free_fn;
    v->pending_ = 0;
}

void av_destroy(avalue_t *v)
{
    av_snap_t *old = atomic_exchange_explicit(&v->cur_, NULL, memory_order_acq_rel);
    if (old) owner_drop_later(old);
    pthread_mutex_lock(&pending_mu);
    while (v->pending_)
        pthread_cond_wait(&pending_cv, &pending_mu);
    pthread_mutex_unlock(&pending_mu);
}

void av_barrier(void)
{
    pthread_mutex_lock(&pending_mu);
    while (pending_all)
        pthread_cond_wait(&pending_cv, &pending_mu);
    pthread_mutex_unlock(&pending_mu);
}

void av_store(avalue_t *v, void *snap)
{
    av_snap_t *s = snap;
    if (s) snap_init(v, s);
    av_snap_t *old = atomic_exchange_explicit(&v->cur_, s, memory_order_acq_rel);
    if (old) owner_drop_later(old);
}

void *av_swap(avalue_t *v, void *snap)
{
    av_snap_t *s = snap;
    if (s) snap_init(v, s);
    av_snap_t *old = atomic_exchange_explicit(&v->cur_, s, memory_order_acq_rel);
    if (old) {
        /* Safe without a read section: the owner reference is ours until
         * owner_drop_later, so the count is >= 1 here. */
        atomic_fetch_add_explicit(&old->refs_, 1, memory_order_relaxed);
        owner_drop_later(old);
    }
    return old;
}

bool av_cas(avalue_t *v, void *expected, void *snap)
{
    av_snap_t *exp = expected;
    av_snap_t *s = snap;
    if (s == exp) /* re-initialising a published header would corrupt its count */
        return atomic_load_explicit(&v->cur_, memory_order_acquire) == exp;
    if (s) snap_init(v, s);
    if (!atomic_compare_exchange_strong_explicit(&v->cur_, &exp, s, memory_order_acq_rel,
                                                 memory_order_acquire))
        return false;
    if (exp) owner_drop_later(exp);
    return true;
}

void *av_acquire(avalue_t *v)
{
    rcu_read_lock();
    av_snap_t *s = atomic_load_explicit(&v->cur_, memory_order_acquire);
    /* The owner reference of s is dropped only after a grace period that
     * starts after s stopped being current, i.e. after this section: the
     * count cannot be zero here. */
    if (s) atomic_fetch_add_explicit(&s->refs_, 1, memory_order_relaxed);
    tsan_release(&grace_period);
    rcu_read_unlock();
    return s;
}

void av_release(avalue_t *v, void *snap)
{
    (void)v; /* the snapshot knows its owner; v keeps call sites symmetric */
    if (snap) snap_put(((av_snap_t *)snap)->owner_, snap);
}

void *av_retain(void *snap)
{
    av_snap_t *s = snap;
    if (s) atomic_fetch_add_explicit(&s->refs_, 1, memory_order_relaxed);
    return snap;
}

void av_read_lock(void)
{
    rcu_read_lock();
}

void av_read_unlock(void)
{
    tsan_release(&grace_period);
    rcu_read_unlock();
}

void *av_load(avalue_t *v)
{
    return atomic_load_explicit(&v->cur_, memory_order_acquire);
}
