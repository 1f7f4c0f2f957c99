/* Tests for core/coro.c. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/coro.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

static void steps_fn(void *arg)
{
    int *steps = arg;
    assert_non_null(coro_self());
    (*steps)++;
    coro_yield();
    (*steps)++;
    coro_yield();
    (*steps)++;
}

static void test_create_resume_yield_finish(void **state)
{
    (void)state;
    int steps = 0;
    assert_null(coro_self());
    coro_t *co = coro_create(steps_fn, &steps);
    assert_non_null(co);
    assert_int_equal(steps, 0); /* nothing runs before the first resume */
    assert_false(coro_finished(co));
    coro_resume(co);
    assert_int_equal(steps, 1);
    assert_null(coro_self());
    coro_resume(co);
    assert_int_equal(steps, 2);
    assert_false(coro_finished(co));
    coro_resume(co);
    assert_int_equal(steps, 3);
    assert_true(coro_finished(co));
    coro_free(co);
}

static void never_runs(void *arg)
{
    (void)arg;
    fail_msg("a never-started coroutine ran");
}

static void test_free_unstarted(void **state)
{
    (void)state;
    struct coro_stats before, after;
    coro_get_stats(&before);
    coro_t *co = coro_create(never_runs, NULL);
    assert_non_null(co);
    coro_free(co);
    coro_get_stats(&after);
    assert_int_equal(after.alive, before.alive);
}

struct nest {
    coro_t *inner;
    int log[8];
    int n;
};

static void inner_fn(void *arg)
{
    struct nest *ns = arg;
    ns->log[ns->n++] = 2;
    coro_yield();
    ns->log[ns->n++] = 4;
}

static void outer_fn(void *arg)
{
    struct nest *ns = arg;
    coro_t *self = coro_self();
    ns->log[ns->n++] = 1;
    coro_resume(ns->inner);
    assert_ptr_equal(coro_self(), self);
    ns->log[ns->n++] = 3;
    coro_yield();
    coro_resume(ns->inner);
    ns->log[ns->n++] = 5;
}

static void test_nested_resume(void **state)
{
    (void)state;
    struct nest ns = {0};
    ns.inner = coro_create(inner_fn, &ns);
    coro_t *outer = coro_create(outer_fn, &ns);
    assert_non_null(ns.inner);
    assert_non_null(outer);
    coro_resume(outer);
    coro_resume(outer);
    assert_true(coro_finished(outer));
    assert_true(coro_finished(ns.inner));
    int want[] = {1, 2, 3, 4, 5};
    assert_int_equal(ns.n, 5);
    assert_memory_equal(ns.log, want, sizeof want);
    coro_free(outer);
    coro_free(ns.inner);
}

static void count_fn(void *arg)
{
    int *counter = arg;
    volatile char scratch[512]; /* touch some stack */
    scratch[0] = 1;
    scratch[511] = scratch[0];
    coro_yield();
    (*counter)++;
}

/*
 * 10 000 coroutines alive at once, each suspended mid-function. Under TSan
 * a suspended coroutine also holds a TSan fiber (~4 mappings each), which
 * would exceed vm.max_map_count; there all 10 000 are alive (created, with
 * their stacks) but run one at a time, and SUSPENDED_AT_ONCE of them suspended at once.
 */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#if defined(UNDER_TSAN)
#define SUSPENDED_AT_ONCE 2000
#else
#define SUSPENDED_AT_ONCE 10000
#endif

static void test_10000_alive(void **state)
{
    (void)state;
    enum { N = 10000 };
    coro_t **cos = calloc(N, sizeof *cos);
    assert_non_null(cos);
    int counter = 0;
    struct coro_stats st;
    for (int i = 0; i < N; i++) {
        cos[i] = coro_create(count_fn, &counter);
        assert_non_null(cos[i]);
    }
    coro_get_stats(&st);
    assert_true(st.alive >= N);
    for (int i = 0; i < SUSPENDED_AT_ONCE; i++)
        coro_resume(cos[i]);
    for (int i = 0; i < N; i++) {
        if (i >= SUSPENDED_AT_ONCE) coro_resume(cos[i]);
        coro_resume(cos[i]);
        assert_true(coro_finished(cos[i]));
        coro_free(cos[i]);
    }
    assert_int_equal(counter, N);
    free(cos);
    coro_thread_cleanup();
    coro_get_stats(&st);
    assert_int_equal(st.pooled_stacks, 0);
}

static void noop_fn(void *arg)
{
    (void)arg;
}

static void test_stacks_reused(void **state)
{
    (void)state;
    struct coro_stats st0, st;
    coro_thread_cleanup();
    coro_get_stats(&st0);
    assert_int_equal(st0.pooled_stacks, 0);

    coro_t *a = coro_create(noop_fn, NULL);
    coro_t *b = coro_create(noop_fn, NULL);
    coro_resume(a);
    coro_resume(b);
    coro_free(a);
    coro_free(b);
    coro_get_stats(&st);
    assert_int_equal(st.pooled_stacks, 2);

    /* The pool is LIFO: the next two creations hand back b then a. */
    coro_t *c = coro_create(noop_fn, NULL);
    assert_ptr_equal(c, b);
    coro_get_stats(&st);
    assert_int_equal(st.pooled_stacks, 1);
    coro_t *d = coro_create(noop_fn, NULL);
    assert_ptr_equal(d, a);
    coro_get_stats(&st);
    assert_int_equal(st.pooled_stacks, 0);

    for (int i = 0; i < 1000; i++) {
        coro_t *e = coro_create(noop_fn, NULL);
        coro_resume(e);
        assert_true(coro_finished(e));
        coro_free(e);
    }
    coro_get_stats(&st);
    assert_int_equal(st.pooled_stacks, 1);
    assert_int_equal(st.created - st0.created, 1004);
    coro_free(c);
    coro_free(d);
    coro_thread_cleanup();
}

/* The stacks a burst left in the pool go back (mark, then unmap in
 * batches); a stack reused after the mark stays. */
static void test_idle_stacks_are_unmapped(void **state)
{
    (void)state;
    struct coro_stats st;
    coro_thread_cleanup();
    coro_t *co[40];
    for (int i = 0; i < 40; i++)
        co[i] = coro_create(noop_fn, NULL);
    for (int i = 0; i < 40; i++)
        coro_free(co[i]);
    coro_get_stats(&st);
    assert_int_equal(st.pooled_stacks, 40);
    assert_int_equal(coro_mark_idle(), 0); /* the burst needed them all */
    for (int i = 0; i < 5; i++)
        co[i] = coro_create(noop_fn, NULL);
    for (int i = 0; i < 5; i++)
        coro_free(co[i]);
    assert_int_equal(coro_mark_idle(), 35);
    assert_int_equal(coro_free_idle(16), 16);
    /* 3 reused between batches: 19 still idle, 5 + 16 kept overall. */
    for (int i = 0; i < 3; i++)
        co[i] = coro_create(noop_fn, NULL);
    for (int i = 0; i < 3; i++)
        coro_free(co[i]);
    assert_int_equal(coro_free_idle(16), 16);
    assert_int_equal(coro_free_idle(16), 3);
    assert_int_equal(coro_free_idle(16), 0);
    coro_get_stats(&st);
    assert_int_equal(st.pooled_stacks, 5);
    /* The pool still works: a stack comes from it, then a new one. */
    for (int i = 0; i < 6; i++) {
        co[i] = coro_create(noop_fn, NULL);
        assert_non_null(co[i]);
        coro_resume(co[i]);
        assert_true(coro_finished(co[i]));
    }
    for (int i = 0; i < 6; i++)
        coro_free(co[i]);
    coro_thread_cleanup();
}

#if defined(__x86_64__)
/* MXCSR rounding-control bits: 11 = toward zero. */
#define RC_MASK 0x6000u

static void fp_fn(void *arg)
{
    unsigned *seen = arg;
    seen[0] = __builtin_ia32_stmxcsr() & RC_MASK; /* starts with its creator's */
    __builtin_ia32_ldmxcsr(__builtin_ia32_stmxcsr() | RC_MASK);
    coro_yield();
    seen[1] = __builtin_ia32_stmxcsr() & RC_MASK;
    __builtin_ia32_ldmxcsr(__builtin_ia32_stmxcsr() & ~RC_MASK);
}

/*
 * The FP control state: plain builds share the thread's (see
 * core/coro_switch_x86_64.S); -DCORO_SAVE_FPU builds give each coroutine
 * its own. Either way a new coroutine starts with its creator's.
 */
static void test_fp_control_state(void **state)
{
    (void)state;
    unsigned seen[2] = {99, 99};
    unsigned saved = __builtin_ia32_stmxcsr();
    coro_t *co = coro_create(fp_fn, seen);
    coro_resume(co);
    assert_int_equal(seen[0], saved & RC_MASK);
#if defined(CORO_SAVE_FPU)
    assert_int_equal(__builtin_ia32_stmxcsr() & RC_MASK, saved & RC_MASK);
#else
    assert_int_equal(__builtin_ia32_stmxcsr() & RC_MASK, RC_MASK);
    __builtin_ia32_ldmxcsr(saved);              /* the thread's state: ours to restore */
#endif
    coro_resume(co);
#if defined(CORO_SAVE_FPU)
    assert_int_equal(seen[1], RC_MASK); /* kept its own across the yield */
#else
    assert_int_equal(seen[1], saved & RC_MASK); /* sees the thread's */
#endif
    assert_true(coro_finished(co));
    assert_int_equal(__builtin_ia32_stmxcsr() & RC_MASK, saved & RC_MASK);
    coro_free(co);
}
#endif

/* ---- forked children ---- */

/* Runs child() in a fork; returns its wait status and puts what it wrote on
 * stderr in out (NUL-terminated, truncated). */
static int run_child(void (*child)(void), char *out, size_t outsz)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        child();
        _exit(0);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t r;
    while ((r = read(fds[0], out + n, outsz - 1 - n)) > 0) {
        n += (size_t)r;
        if (n == outsz - 1) n = 0; /* keep reading, keep the tail */
    }
    out[n] = 0;
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static void *guard_lo;
static size_t guard_len;

__attribute__((noinline)) static int recurse(int n)
{
    volatile char buf[256];
    buf[0] = (char)n;
    __asm__ volatile("" : : "r"(buf) : "memory");
    if (n == 0) return buf[0];
    return recurse(n - 1) + buf[0];
}

static void recurse_fn(void *arg)
{
    (void)arg;
    recurse(1 << 28);
}

#if !defined(UNDER_ASAN)
static void on_segv(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    uintptr_t a = (uintptr_t)si->si_addr, lo = (uintptr_t)guard_lo;
    if (a < lo || a >= lo + guard_len) _exit(3); /* faulted, but not on the guard */
    signal(sig, SIG_DFL);                        /* returning re-faults and dies */
}
#endif

static void overflow_child(void)
{
    coro_t *co = coro_create(recurse_fn, NULL);
    if (!co) _exit(2);
    void *lo;
    size_t len;
    coro_stack_bounds(co, &lo, &len);
    guard_len = (size_t)sysconf(_SC_PAGESIZE);
    guard_lo = (char *)lo - guard_len;
#if !defined(UNDER_ASAN)
    static char altstack[64 * 1024];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
    sigaltstack(&ss, NULL);
    struct sigaction sa = {.sa_sigaction = on_segv, .sa_flags = SA_SIGINFO | SA_ONSTACK};
    sigaction(SIGSEGV, &sa, NULL);
#endif
    coro_resume(co);
    _exit(0); /* unreachable unless the recursion got optimised away */
}

/*
 * Plain and TSan builds: the child must die of SIGSEGV, and its handler
 * checks the fault address lies in the guard page (exit 3 otherwise).
 * ASan installs its own SIGSEGV handler, which reports a stack-overflow
 * and exits non-zero instead of dying by the signal; there we accept any
 * abnormal end as long as ASan did not report memory corruption.
 */
static void test_overflow_hits_guard(void **state)
{
    (void)state;
    char out[8192];
    int status = run_child(overflow_child, out, sizeof out);
#if defined(UNDER_ASAN)
    assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_null(strstr(out, "buffer-overflow"));
    assert_null(strstr(out, "use-after"));
    assert_null(strstr(out, "corrupt"));
#else
    if (!WIFSIGNALED(status)) print_message("child: %s\n", out);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGSEGV);
#endif
}

static void nomem_child(void)
{
    coro_thread_cleanup();
    struct coro_config cfg = {.stack_size = (size_t)1 << 52}; /* 4 PiB */
    coro_configure(&cfg);
    errno = 0;
    coro_t *co = coro_create(noop_fn, NULL);
    if (co) _exit(10);
    if (errno != ENOMEM) _exit(11);
    struct coro_stats st;
    coro_get_stats(&st);
    if (st.create_failures < 1) _exit(12);
    cfg.stack_size = (size_t)-1 - 100; /* overflows when rounded */
    coro_configure(&cfg);
    co = coro_create(noop_fn, NULL);
    if (co || errno != ENOMEM) _exit(13);
    _exit(0);
}

static void test_no_stack_enomem(void **state)
{
    (void)state;
    char out[4096];
    int status = run_child(nomem_child, out, sizeof out);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) print_message("child: %s\n", out);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void max_alive_child(void)
{
    struct coro_stats st;
    coro_get_stats(&st);
    struct coro_config cfg = {.max_alive = (unsigned)st.alive + 3};
    coro_configure(&cfg);
    coro_t *c[3];
    for (int i = 0; i < 3; i++)
        if (!(c[i] = coro_create(noop_fn, NULL))) _exit(20);
    errno = 0;
    if (coro_create(noop_fn, NULL) || errno != EAGAIN) _exit(21);
    coro_free(c[0]);
    if (!(c[0] = coro_create(noop_fn, NULL))) _exit(22);
    _exit(0);
}

static void test_max_alive_eagain(void **state)
{
    (void)state;
    char out[4096];
    int status = run_child(max_alive_child, out, sizeof out);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) print_message("child: %s\n", out);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_resume_yield_finish),
        cmocka_unit_test(test_free_unstarted),
        cmocka_unit_test(test_nested_resume),
        cmocka_unit_test(test_10000_alive),
        cmocka_unit_test(test_stacks_reused),
        cmocka_unit_test(test_idle_stacks_are_unmapped),
#if defined(__x86_64__)
        cmocka_unit_test(test_fp_control_state),
#endif
        cmocka_unit_test(test_overflow_hits_guard),
        cmocka_unit_test(test_no_stack_enomem),
        cmocka_unit_test(test_max_alive_eagain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
