/*
 * coro: stackful coroutines. See core/coro.h for the contract.
 *
 * Memory layout of one coroutine, a single mmap:
 *
 *   low                                                         high
 *   [ guard page, PROT_NONE ][ stack, grows down ...... ][ struct coro ]
 *
 * The struct lives at the top of its own mapping, so a pooled coroutine is
 * one object (struct + stack) and spawning with a warm pool costs no
 * allocation and no system call.
 *
 * Switching is asymmetric: coro_resume saves the resumer's sp in
 * co->caller_sp and loads co->sp; coro_yield does the reverse. The
 * sanitizer/valgrind annotations compile to nothing in plain builds.
 */
#include "core/coro.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- which switch ---- */
#if (defined(__x86_64__) || defined(__aarch64__)) && !defined(CORO_FORCE_UCONTEXT)
#define CORO_ASM 1
#else
#define CORO_ASM 0
#include <ucontext.h>
#endif

/* ---- which sanitizers ---- */
#include "core/sanitizer.h"
#ifdef CORE_ASAN
#define CORO_ASAN 1
#endif
#ifdef CORE_TSAN
#define CORO_TSAN 1
#endif

#if defined(CORO_ASAN)
/* Declared here rather than via <sanitizer/common_interface_defs.h> so the
 * file builds with any compiler version that has the runtime. */
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                     size_t *size_old);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#endif
#if defined(CORO_TSAN)
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define CORO_VALGRIND 1
#endif
#endif

enum coro_state { CORO_NEW, CORO_RUNNING, CORO_SUSPENDED, CORO_FINISHED };

struct coro {
    struct coro_sched sched; /* must stay first: coro_sched() casts */
    void *sp;                /* the coroutine's saved stack pointer */
    void *caller_sp;         /* the resumer's, while the coroutine runs */
    coro_fn fn;
    void *arg;
    coro_t *resumer; /* coro_self() to restore on yield */
    coro_t *pool_next;
    char *stack_lo; /* lowest usable byte, just above the guard page */
    size_t stack_len;
    void *map_base;
    size_t map_len;
    enum coro_state state;
#if defined(CORO_VALGRIND)
    unsigned vg_stack_id;
#endif
#if defined(CORO_ASAN)
    void *asan_fake;           /* our fake stack while switched out */
    const void *caller_bottom; /* the resumer's stack, to switch back to */
    size_t caller_size;
#endif
#if defined(CORO_TSAN)
    void *tsan_fiber;
    void *tsan_caller;
#endif
#if !CORO_ASM
    ucontext_t uc;
    ucontext_t caller_uc;
#endif
};

#if CORO_ASM
void coro_switch_ctx(void **save_sp, void *load_sp);
void coro_trampoline(void);
#endif

/* ---- process-wide settings and counters ---- */
static size_t cfg_stack_size = 64 * 1024;
static unsigned cfg_pool_max = 256;
static unsigned cfg_max_alive = 16384;
static _Atomic uint64_t n_alive;
static _Atomic uint64_t n_created;
static _Atomic uint64_t n_failures;

/* ---- per-thread state ---- */
struct coro_tls {
    coro_t *current;
    coro_t *pool;
    unsigned pooled;
    unsigned low;  /* the fewest pooled since the last coro_mark_idle */
    unsigned idle; /* marked idle, not unmapped yet (at most low) */
    bool key_set;
};
static __thread struct coro_tls tls;
static pthread_key_t pool_key;
static pthread_once_t pool_key_once = PTHREAD_ONCE_INIT;

static size_t page_size(void)
{
    /* Filled in by whichever thread asks first; every thread computes the
     * same value, so relaxed ordering is enough. */
    static _Atomic size_t ps;
    size_t v = atomic_load_explicit(&ps, memory_order_relaxed);
    if (!v) {
        v = (size_t)sysconf(_SC_PAGESIZE);
        atomic_store_explicit(&ps, v, memory_order_relaxed);
    }
    return v;
}

void coro_configure(const struct coro_config *cfg)
{
    if (cfg->stack_size) cfg_stack_size = cfg->stack_size;
    if (cfg->pool_max) cfg_pool_max = cfg->pool_max;
    if (cfg->max_alive) cfg_max_alive = cfg->max_alive;
}

static void unmap_coro(coro_t *co)
{
#if defined(CORO_VALGRIND)
    VALGRIND_STACK_DEREGISTER(co->vg_stack_id);
#endif
    munmap(co->map_base, co->map_len);
}

static void pool_destructor(void *unused)
{
    (void)unused;
    coro_thread_cleanup();
}

static void make_pool_key(void)
{
    pthread_key_create(&pool_key, pool_destructor);
}

void coro_thread_cleanup(void)
{
    while (tls.pool) {
        coro_t *co = tls.pool;
        tls.pool = co->pool_next;
        unmap_coro(co);
    }
    tls.pooled = 0;
    tls.low = 0;
    tls.idle = 0;
}

/* The pool's idle accounting is pool_mark_idle / pool_free_idle's (core/pool.c). */
unsigned coro_mark_idle(void)
{
    tls.idle = tls.low;
    tls.low = tls.pooled;
    return tls.idle;
}

unsigned coro_free_idle(unsigned max)
{
    if (tls.idle > tls.low) tls.idle = tls.low;
    unsigned k = tls.idle < max ? tls.idle : max;
    for (unsigned i = 0; i < k; i++) {
        coro_t *co = tls.pool;
        tls.pool = co->pool_next;
        unmap_coro(co);
    }
    tls.pooled -= k;
    tls.idle -= k;
    tls.low -= k;
    return k;
}

/* A fresh mapping with the struct at its top; NULL when the kernel says no
 * (address space, vm.max_map_count) or the size overflows. */
static coro_t *map_coro(size_t stack_size)
{
    size_t ps = page_size();
    size_t want = stack_size + sizeof(struct coro) + 64;
    if (want < stack_size || want > SIZE_MAX / 2) return NULL;
    size_t len = ((want + ps - 1) & ~(ps - 1)) + ps;
    char *base = mmap(NULL, len, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (base == MAP_FAILED) return NULL;
    /* The guard splits the mapping in two: that is the second map entry
     * each stack costs against vm.max_map_count. */
    if (mprotect(base, ps, PROT_NONE) != 0) {
        munmap(base, len);
        return NULL;
    }
    uintptr_t top = (uintptr_t)base + len - sizeof(struct coro);
    top &= ~(uintptr_t)63;
    coro_t *co = (coro_t *)top;
    memset(co, 0, sizeof *co);
    co->map_base = base;
    co->map_len = len;
    co->stack_lo = base + ps;
    co->stack_len = (size_t)((char *)co - co->stack_lo);
#if defined(CORO_VALGRIND)
    co->vg_stack_id = VALGRIND_STACK_REGISTER(co->stack_lo, (char *)co);
#endif
    return co;
}

static void switch_out_and_finish(coro_t *co) __attribute__((noreturn));

#if CORO_ASM
__attribute__((noreturn, used)) static void coro_main(coro_t *co)
#else
static void coro_main_uc(void);
__attribute__((noreturn)) static void coro_main(coro_t *co)
#endif
{
#if defined(CORO_ASAN)
    /* First entry: no fake stack of ours to restore yet; learn the
     * resumer's stack so coro_yield can tell ASan where it goes back to. */
    __sanitizer_finish_switch_fiber(NULL, &co->caller_bottom, &co->caller_size);
#endif
    co->fn(co->arg);
    switch_out_and_finish(co);
}

#if !CORO_ASM
static void coro_main_uc(void)
{
    coro_main(tls.current);
}
#endif

static void prepare_start(coro_t *co)
{
#if CORO_ASM
    uintptr_t top = (uintptr_t)co & ~(uintptr_t)15;
    void **slot;
#if defined(__x86_64__)
    /* Frame popped by coro_switch_ctx: ([mxcsr|fcw] with CORO_SAVE_FPU)
     * [r15][r14][r13][r12][rbx][rbp][ret]. The return slot sits at 8 mod 16
     * so the trampoline starts with rsp 16-aligned, as after a call. Above
     * it a zero return address ends backtraces. */
    slot = (void **)(top - 24);
    slot[1] = NULL;
    slot[2] = NULL;
    slot[0] = (void *)coro_trampoline; /* ret */
    slot[-1] = NULL;                   /* rbp */
    slot[-2] = NULL;                   /* rbx */
    slot[-3] = co;                     /* r12 */
    slot[-4] = (void *)coro_main;      /* r13 */
    slot[-5] = NULL;                   /* r14 */
    slot[-6] = NULL;                   /* r15 */
#if defined(CORO_SAVE_FPU)
    /* The new coroutine starts with its creator's control bits. */
    uint32_t *fp = (uint32_t *)&slot[-7];
    uint16_t cw;
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    fp[0] = __builtin_ia32_stmxcsr();
    fp[1] = cw;
    co->sp = &slot[-7];
#else
    co->sp = &slot[-6];
#endif
#else
    /* 160-byte frame: d8-d15, x19-x28, x29, x30. */
    slot = (void **)(top - 160);
    memset(slot, 0, 160);
    slot[8] = co;                       /* x19 */
    slot[9] = (void *)coro_main;        /* x20 */
    slot[19] = (void *)coro_trampoline; /* x30 */
    co->sp = slot;
#endif
#else
    getcontext(&co->uc);
    co->uc.uc_stack.ss_sp = co->stack_lo;
    co->uc.uc_stack.ss_size = co->stack_len;
    co->uc.uc_link = NULL;
    makecontext(&co->uc, coro_main_uc, 0);
#endif
}

coro_t *coro_create(coro_fn fn, void *arg)
{
    uint64_t alive = atomic_fetch_add_explicit(&n_alive, 1, memory_order_relaxed);
    if (alive >= cfg_max_alive) {
        atomic_fetch_sub_explicit(&n_alive, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&n_failures, 1, memory_order_relaxed);
        errno = EAGAIN;
        return NULL;
    }
    coro_t *co = tls.pool;
    if (co && co->stack_len >= cfg_stack_size) {
        tls.pool = co->pool_next;
        if (--tls.pooled < tls.low) tls.low = tls.pooled;
    } else {
        co = map_coro(cfg_stack_size);
        if (!co) {
            atomic_fetch_sub_explicit(&n_alive, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&n_failures, 1, memory_order_relaxed);
            errno = ENOMEM;
            return NULL;
        }
    }
    atomic_fetch_add_explicit(&n_created, 1, memory_order_relaxed);
    co->sched.next = NULL;
    co->sched.data = NULL;
    co->fn = fn;
    co->arg = arg;
    co->resumer = NULL;
    co->state = CORO_NEW;
#if defined(CORO_TSAN)
    co->tsan_fiber = NULL; /* made on first resume, see coro_resume */
#endif
    prepare_start(co);
    return co;
}

/* The switch proper, from the side that leaves. to_bottom/to_size describe
 * the stack being entered (for ASan); fake_save is where ASan keeps the
 * leaving side's fake stack, NULL when the leaving side is finished. */
static inline void do_switch(void **save_sp, void *load_sp, void **fake_save, const void *to_bottom,
                             size_t to_size)
{
#if defined(CORO_ASAN)
    __sanitizer_start_switch_fiber(fake_save, to_bottom, to_size);
#else
    (void)fake_save;
    (void)to_bottom;
    (void)to_size;
#endif
#if CORO_ASM
    coro_switch_ctx(save_sp, load_sp);
#else
    (void)save_sp;
    (void)load_sp;
#endif
}

void coro_resume(coro_t *co)
{
    co->resumer = tls.current;
    tls.current = co;
    co->state = CORO_RUNNING;
#if defined(CORO_TSAN)
    /* A TSan fiber costs ~4 memory mappings and 1.2 MB of trace: hold one
     * only between the first resume and the end, not while pooled. */
    if (!co->tsan_fiber) co->tsan_fiber = __tsan_create_fiber(0);
    co->tsan_caller = __tsan_get_current_fiber();
    __tsan_switch_to_fiber(co->tsan_fiber, 0);
#endif
#if defined(CORO_ASAN)
    void *fake = NULL;
    do_switch(&co->caller_sp, co->sp, &fake, co->stack_lo, co->stack_len);
#else
    do_switch(&co->caller_sp, co->sp, NULL, NULL, 0);
#endif
#if !CORO_ASM
    swapcontext(&co->caller_uc, &co->uc);
#endif
#if defined(CORO_ASAN)
    /* Back on the resumer's stack; the coroutine's bounds are known. */
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
#if defined(CORO_TSAN)
    if (co->state == CORO_FINISHED) {
        __tsan_destroy_fiber(co->tsan_fiber);
        co->tsan_fiber = NULL;
    }
#endif
}

void coro_yield(void)
{
    coro_t *co = tls.current;
    co->state = CORO_SUSPENDED;
    tls.current = co->resumer;
#if defined(CORO_TSAN)
    __tsan_switch_to_fiber(co->tsan_caller, 0);
#endif
#if defined(CORO_ASAN)
    do_switch(&co->sp, co->caller_sp, &co->asan_fake, co->caller_bottom, co->caller_size);
#else
    do_switch(&co->sp, co->caller_sp, NULL, NULL, 0);
#endif
#if !CORO_ASM
    swapcontext(&co->uc, &co->caller_uc);
#endif
#if defined(CORO_ASAN)
    /* Resumed, possibly by someone else than last time: remember who. */
    __sanitizer_finish_switch_fiber(co->asan_fake, &co->caller_bottom, &co->caller_size);
#endif
}

static void switch_out_and_finish(coro_t *co)
{
    co->state = CORO_FINISHED;
    tls.current = co->resumer;
#if defined(CORO_TSAN)
    __tsan_switch_to_fiber(co->tsan_caller, 0);
#endif
#if defined(CORO_ASAN)
    /* NULL: this stack is done, ASan may drop its fake frames. */
    do_switch(&co->sp, co->caller_sp, NULL, co->caller_bottom, co->caller_size);
#else
    do_switch(&co->sp, co->caller_sp, NULL, NULL, 0);
#endif
#if !CORO_ASM
    setcontext(&co->caller_uc);
#endif
    __builtin_unreachable();
}

bool coro_finished(const coro_t *co)
{
    return co->state == CORO_FINISHED;
}

void coro_free(coro_t *co)
{
    if (!co) return;
#if defined(CORO_TSAN)
    if (co->tsan_fiber) __tsan_destroy_fiber(co->tsan_fiber);
    co->tsan_fiber = NULL;
#endif
#if defined(CORO_ASAN)
    /* A coroutine dropped while suspended leaves its frames' redzones
     * poisoned; the next user of the stack must not trip over them. */
    if (co->state == CORO_SUSPENDED) __asan_unpoison_memory_region(co->stack_lo, co->stack_len);
#endif
    atomic_fetch_sub_explicit(&n_alive, 1, memory_order_relaxed);
    if (tls.pooled >= cfg_pool_max || co->stack_len < cfg_stack_size) {
        unmap_coro(co);
        return;
    }
    if (!tls.key_set) {
        pthread_once(&pool_key_once, make_pool_key);
        pthread_setspecific(pool_key, &tls);
        tls.key_set = true;
    }
    co->pool_next = tls.pool;
    tls.pool = co;
    tls.pooled++;
}

coro_t *coro_self(void)
{
    return tls.current;
}

void coro_stack_bounds(const coro_t *co, void **lo, size_t *len)
{
    *lo = co->stack_lo;
    *len = co->stack_len;
}

void *coro_sched_data(const coro_t *co)
{
    return co->sched.data;
}

void coro_set_sched_data(coro_t *co, void *data)
{
    co->sched.data = data;
}

void coro_get_stats(struct coro_stats *st)
{
    st->alive = atomic_load_explicit(&n_alive, memory_order_relaxed);
    st->created = atomic_load_explicit(&n_created, memory_order_relaxed);
    st->create_failures = atomic_load_explicit(&n_failures, memory_order_relaxed);
    st->pooled_stacks = tls.pooled;
}
