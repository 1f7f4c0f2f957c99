/*
 * coro: stackful, asymmetric coroutines.
 *
 * coro_resume() switches from the caller's stack to the coroutine's; the
 * coroutine runs until it calls coro_yield() or its function returns, and
 * control comes back to the resumer. Schedulers (core/loop.h) build on this;
 * application code normally uses loop_spawn / loop_park instead.
 *
 * Context switch: hand-written assembly on x86_64 and aarch64 (callee-saved
 * registers + stack pointer, no system call, ~9 ns); ucontext elsewhere.
 * The floating-point control state (x86_64 MXCSR / x87 control word,
 * aarch64 FPCR) is the thread's, shared by its coroutines as under Go: a
 * coroutine that changes the rounding mode must restore it before it
 * yields. Build with -DCORO_SAVE_FPU for per-coroutine control bits on
 * x86_64 (~2 ns more per switch). Switches are annotated for
 * AddressSanitizer, ThreadSanitizer and valgrind.
 *
 * Stacks: mmap'ed with a PROT_NONE guard page below them, so an overflow
 * faults instead of corrupting memory; reused through a per-thread pool.
 * Memory-map budget: each stack costs two mappings (stack + guard) and Linux
 * allows vm.max_map_count (65 530 by default) per process, so the number of
 * coroutines alive at once is bounded by coro_config.max_alive (default
 * 16 384 = 32 768 mappings, leaving room for the rest of the process).
 * coro_create() fails with EAGAIN beyond it and ENOMEM when mmap fails; the
 * counters in coro_stats tell an operator when that happens. Under
 * ThreadSanitizer every started, unfinished coroutine also holds a TSan fiber
 * (about 4 more mappings), so budget ~6 mappings per suspended coroutine
 * there.
 *
 * A coroutine belongs to the thread that created it.
 */
#ifndef CORE_CORO_H
#define CORE_CORO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct coro coro_t;
typedef void (*coro_fn)(void *arg);

struct coro_config {
    size_t stack_size;  /* usable bytes per stack, rounded up to pages; default 64 KiB */
    unsigned pool_max;  /* free stacks kept per thread for reuse; default 256 */
    unsigned max_alive; /* coroutines alive at once, whole process; default 16384 */
};

/* Sets process-wide settings; call before the first coroutine is created.
 * Zero fields keep their defaults. */
void coro_configure(const struct coro_config *cfg);

/* A coroutine that will run fn(arg) on its first resume. NULL with errno
 * EAGAIN (max_alive reached) or ENOMEM (no stack could be mapped). */
coro_t *coro_create(coro_fn fn, void *arg);
/* Runs co until it yields or returns. co must not be running or finished. */
void coro_resume(coro_t *co);
/* Back to whoever resumed the current coroutine. Coroutine only. */
void coro_yield(void);
/* True once the coroutine's function has returned. */
bool coro_finished(const coro_t *co);
/* Frees a finished or never-started coroutine; its stack goes to the pool.
 * A suspended coroutine may be freed too (a scheduler tearing down): it is
 * dropped without unwinding, so whatever its frames own is leaked. */
void coro_free(coro_t *co);
/* The running coroutine, or NULL on a thread's own stack. */
coro_t *coro_self(void);
/* The usable stack of co: [*lo, *lo + *len); the guard page lies just below
 * *lo. For diagnostics and tests. */
void coro_stack_bounds(const coro_t *co, void **lo, size_t *len);

/* One pointer-sized slot per coroutine for the scheduler that drives it. */
void *coro_sched_data(const coro_t *co);
void coro_set_sched_data(coro_t *co, void *data);

/* Scheduler-owned fields at the very start of every coroutine, reachable
 * without a call (the loop's run queue links through next); coro.c never
 * reads them. data is the slot coro_sched_data() returns. */
struct coro_sched {
    coro_t *next;
    void *data;
};
static inline struct coro_sched *coro_sched(coro_t *co)
{
    return (struct coro_sched *)(void *)co;
}

struct coro_stats {
    uint64_t alive;           /* process-wide */
    uint64_t created;         /* process-wide, ever */
    uint64_t create_failures; /* EAGAIN + ENOMEM, process-wide */
    uint64_t pooled_stacks;   /* calling thread's pool */
};
void coro_get_stats(struct coro_stats *st);
/* Unmaps the calling thread's pooled stacks. Also runs by itself when a
 * thread that pooled stacks exits. */
void coro_thread_cleanup(void);
/* The stack pool only grows by itself (up to pool_max). A thread gives a
 * burst's excess back in two steps, as core/pool.h's pools do: mark as idle
 * the pooled stacks that no coro_create on this thread needed since the
 * previous mark (returns how many), then unmap up to max of them per call
 * (returns how many; less than max: none is left). Unmapping thousands at
 * once would stall the thread (a munmap is a TLB flush). */
unsigned coro_mark_idle(void);
unsigned coro_free_idle(unsigned max);

#endif
