/*
 * The harness itself: what every integration program relies on and no
 * other test would notice failing. A test program that crashes leaves no
 * mock or gateway running (h_spawn's PR_SET_PDEATHSIG), and polling returns
 * as soon as its condition holds and gives up at its bound.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* Whether pid is gone: no such process, or a zombie (its parent died, and
 * whoever adopted it may not reap it at once). */
static bool gone(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    char *stat = h_read_file(path, NULL);
    if (!stat) return kill(pid, 0) != 0 && errno == ESRCH;
    const char *paren = strrchr(stat, ')'); /* "pid (comm) S ..." */
    bool dead = paren && (paren[2] == 'Z' || paren[2] == 'X');
    free(stat);
    return dead;
}

static bool refused(int port)
{
    int fd = h_connect(port);
    if (fd >= 0) close(fd);
    return fd == -ECONNREFUSED;
}

/* Forks a "test program" that starts a mock and a gateway (with_gateway)
 * or a mock alone, reports them on a pipe and dies of SIGKILL without
 * stopping anything. Returns what it started. */
static struct h_env crashed_program(bool with_gateway)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t prog = fork();
    assert_true(prog >= 0);
    if (prog == 0) {
        close(p[0]);
        struct h_env e = {0};
        int rc = with_gateway ? h_env_start(&e, h_conf_standard) : h_mock_start(&e.mock);
        if (rc == 0 && write(p[1], &e, sizeof e) == (ssize_t)sizeof e) raise(SIGKILL);
        _exit(1);
    }
    close(p[1]);
    struct h_env e;
    ssize_t n = read(p[0], &e, sizeof e);
    close(p[0]);
    int st;
    assert_int_equal(waitpid(prog, &st, 0), prog);
    assert_int_equal(n, (ssize_t)sizeof e);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    return e;
}

/* Waits for the processes of the crashed program to die with it; kills
 * them when they do not, so a failing run leaks nothing either. */
static void assert_all_die(const struct h_env *e)
{
    bool mock_died = H_POLL_UNTIL(gone(e->mock.pid) && refused(e->mock.port), 5000);
    bool gw_died = !e->gw.pid || H_POLL_UNTIL(gone(e->gw.pid) && refused(e->gw.port), 5000);
    if (mock_died && gw_died) return;
    if (e->gw.pid) kill(e->gw.pid, SIGKILL);
    kill(e->mock.pid, SIGKILL);
    fail_msg("%s outlived the test program", mock_died ? "the gateway" : "the mock");
}

static void a_crashed_test_leaves_no_mock(void **state)
{
    (void)state;
    struct h_env e = crashed_program(false);
    assert_true(e.mock.pid > 0);
    assert_all_die(&e);
}

static void a_crashed_test_leaves_no_gateway(void **state)
{
    (void)state;
    struct h_env e = crashed_program(true);
    assert_true(e.gw.pid > 0 && e.mock.pid > 0);
    unlink(e.gw.conf_path); /* the files the program did not remove */
    unlink(e.gw.stderr_path);
    assert_all_die(&e);
}

static void a_spawn_that_cannot_exec_says_why(void **state)
{
    (void)state;
    char *argv[] = {"/nonexistent/program", NULL};
    assert_int_equal(h_spawn(argv, -1, -1), -ENOENT);
}

static bool reached(void *arg)
{
    int *calls = arg;
    return ++*calls >= 3;
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

static void polling_stops_when_true_and_gives_up_at_the_bound(void **state)
{
    (void)state;
    int calls = 0;
    double t0 = h_now_ms();
    assert_true(h_poll_until(reached, &calls, 10000));
    assert_int_equal(calls, 3);
    assert_true(h_now_ms() - t0 < h_bound_ms(5000)); /* two 10 ms pauses */

    t0 = h_now_ms();
    assert_false(h_poll_until(never, NULL, 100));
    double took = h_now_ms() - t0;
    assert_true(took >= 100 && took < h_bound_ms(100) + 5000);

    int n = 0;
    assert_true(H_POLL_UNTIL(++n == 2, 1000));
    assert_int_equal(n, 2);
    assert_false(H_POLL_UNTIL(false, 0)); /* a bound of 0: checked once */
}

int main(int argc, char **argv)
{
    h_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_crashed_test_leaves_no_mock),
        cmocka_unit_test(a_crashed_test_leaves_no_gateway),
        cmocka_unit_test(a_spawn_that_cannot_exec_says_why),
        cmocka_unit_test(polling_stops_when_true_and_gives_up_at_the_bound),
    };
    return cmocka_run_group_tests_name("integration/harness", tests, NULL, NULL);
}
