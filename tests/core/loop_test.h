/*
 * Helpers for the core tests that drive a loop: a cmocka setup/teardown
 * pair that gives each test its own loop (in *state), and bounded ways to
 * run it until something happened. Header-only, one copy per test program.
 */
#ifndef TESTS_CORE_LOOP_TEST_H
#define TESTS_CORE_LOOP_TEST_H

#include <stdbool.h>
#include <stdint.h>

#include "core/ctx.h"
#include "core/errgroup.h"
#include "core/loop.h"

#define MS          1000000ull
#define RUN_TIMEOUT (5000 * MS)

static inline int loop_setup(void **state)
{
    loop_t *loop = loop_new();
    if (!loop) return -1;
    *state = loop;
    return 0;
}

/* Frees the loop and the per-thread caches, so ASan sees no leak. */
static inline int loop_teardown(void **state)
{
    loop_free(*state);
    eg_thread_cleanup();
    ctx_thread_cleanup();
    return 0;
}

/* Runs loop iterations until *flag is set; false after RUN_TIMEOUT. */
static inline bool run_until_flag(loop_t *loop, const int *flag)
{
    uint64_t end = mono_ns() + RUN_TIMEOUT;
    while (!*flag) {
        if (mono_ns() > end) return false;
        loop_run_once(loop, 10);
    }
    return true;
}

#endif
