/*
 * harness: runs the real gateway binary against a real mock backend process
 * (tests/mock/mock_backend.c) for the integration tests, and talks to both
 * with libcurl.
 *
 * Processes are started with h_spawn and stopped by PID (SIGTERM, a
 * bounded wait, then SIGKILL). Each one is killed by the kernel when the
 * test program dies (PR_SET_PDEATHSIG), so a crashed or killed test leaves
 * no mock or gateway behind; the signal comes when the *thread* that
 * started the process ends, so start processes from the main thread. Each test program starts its own processes on
 * ephemeral ports, so programs can run in parallel. Every wait is a poll on
 * a condition with a bounded total time, never a fixed sleep.
 *
 * Failures in the harness itself (cannot spawn, gateway never healthy) are
 * reported on stderr and returned as negative errno values; the tests turn
 * them into assertion failures.
 *
 * What every program shares is here once: the group that runs the tests
 * around one gateway and mock (H_GROUP_RUN), a gateway in front of several
 * mocks (h_env_start_mocks), polling (h_poll_until, H_POLL_UNTIL), pacing
 * (h_pause_ms) and counting the mock's log (h_mock_count).
 *
 * Every timeout a harness function takes (h_wait_log, h_gateway_log_wait,
 * h_gateway_wait_exit, h_read_response, h_wait_closed, and the harness's own
 * waits for a healthy gateway and for a process to stop) is multiplied by
 * h_time_scale(): a gateway under valgrind is slow but not wrong.
 */
#ifndef TESTS_INTEGRATION_HARNESS_H
#define TESTS_INTEGRATION_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <cJSON.h>

/* A started mock backend. */
struct h_mock {
    pid_t pid;
    int port;
    char origin[64]; /* "http://127.0.0.1:<port>" */
};

/* A started gateway. */
struct h_gateway {
    pid_t pid;
    int port;
    char base[64];         /* "http://127.0.0.1:<port>" */
    char conf_path[256];   /* the written config (removed by h_gateway_stop) */
    char stderr_path[256]; /* its stderr and stdout, kept for debugging */
};

/* The result of one request. */
struct h_resp {
    long status;   /* 0 when the transfer failed (see curl_code) */
    int curl_code; /* CURLcode */
    char *body;    /* NUL-terminated, owned */
    size_t body_len;
    char **headers; /* "Name: value" lines of the final response, owned */
    size_t n_headers;
    double total_ms; /* time from start to the last byte */
    cJSON *json;     /* body parsed, or NULL when not valid JSON; owned */
};

/* Sets the paths of the binaries from argv[1] (gateway) and argv[2] (mock)
 * when given, else from the compile definitions GATEWAY_BIN and MOCK_BIN.
 * Initialises libcurl. Call once from main. */
void h_init(int argc, char **argv);
const char *h_gateway_bin(void);

/* Starts argv[0] (a path) with argv, stdin from /dev/null, stdout and
 * stderr on the fds out and err (-1: the test's own), as a child that gets
 * SIGKILL when the calling thread ends (see the top). Returns its pid, or a
 * negative errno value (exec failures included). */
pid_t h_spawn(char *const argv[], int out, int err);

/* Starts a mock backend on an ephemeral port and reads the port it prints.
 * Returns 0 or a negative errno value. */
int h_mock_start(struct h_mock *m);
/* Like h_mock_start on a given port (a stopped mock started again where
 * it was). */
int h_mock_start_port(struct h_mock *m, int port);
/* SIGTERM, bounded wait, SIGKILL. Returns the wait status, or -1. */
int h_mock_stop(struct h_mock *m);

/* Writes a config from template, replacing every "${BACKEND}" by the mock's
 * origin and every "${PORT}" by a free port, starts `gateway -c FILE` with
 * stdout and stderr going to a temp file, and waits (at most ~10 s) until
 * GET /healthz answers 200.
 *
 * The free port is found by binding port 0 on 127.0.0.1, reading it and
 * closing the socket: another process may take it before the gateway binds
 * it. That race is small on a test machine; when the gateway exits before it
 * becomes healthy, the start is retried with a new port (3 attempts).
 * Returns 0, or a negative errno value after printing the gateway's stderr. */
int h_gateway_start(struct h_gateway *g, const char *tmpl, const struct h_mock *m);
/* Stops the gateway (SIGTERM, bounded wait, SIGKILL), removes the config and,
 * unless keep_log, the stderr file. Returns the wait status, or -1. */
int h_gateway_stop(struct h_gateway *g, bool keep_log);
/* Prints the last bytes of the gateway's stderr/stdout to stderr. */
void h_gateway_dump(const struct h_gateway *g);

/* A mock backend and a gateway in front of it: what most test programs run. */
struct h_env {
    struct h_mock mock;
    struct h_gateway gw;
};
/* Starts the mock, then the gateway with tmpl. Returns 0 or a negative
 * errno value (everything started is stopped again). */
int h_env_start(struct h_env *e, const char *tmpl);
/* Stops both; prints the gateway's output (ctest shows it only when a test
 * failed). Returns 0, or -1 when the gateway crashed or exited non-zero
 * (ASan/LSan reports at exit included); a gateway that ignores SIGTERM's
 * drain and dies of it counts as fine here, shutdown has its own tests. */
int h_env_stop(struct h_env *e);

/* Writes text to a new temp file; path receives its name. Returns 0 or a
 * negative errno value. */
int h_write_temp(char *path, size_t pathlen, const char *text);

/* Substitutes ${BACKEND} and ${PORT} in tmpl. Returns a malloc'd string. */
char *h_subst(const char *tmpl, const char *backend, int port);

/* Runs a program to completion (bounded by timeout_ms, then SIGKILL) with
 * stdout and stderr captured together into *output (malloc'd).
 * Returns the exit code, or -1 when it did not exit normally. */
int h_run(char *const argv[], int timeout_ms, char **output);

/* Does one request. url is complete ("http://..."); it is sent as given
 * (no path normalisation). headers is a NULL-terminated list of
 * "Name: value" lines, or NULL; body may be NULL. timeout_ms 0 = 30 s.
 * Returns 0 when an HTTP response was received, else the CURLcode (the
 * response then has status 0). */
int h_request(const char *method, const char *url, const char *const *headers, const char *body,
              long timeout_ms, struct h_resp *out);
/* GET base + path. */
int h_get(const char *base, const char *path, const char *const *headers, struct h_resp *out);
/* The value of a response header (case-insensitive name), or NULL. */
const char *h_header(const struct h_resp *r, const char *name);
void h_resp_free(struct h_resp *r);

/* Fetches the mock's request log (GET /_log[?prefix=P]); the caller owns
 * the returned array; NULL on failure. */
cJSON *h_mock_log(const struct h_mock *m, const char *prefix);
/* POST /_log/clear and POST /_mode?clear=1. Returns 0 or -1. */
int h_mock_reset(const struct h_mock *m);
/* POST /_mode?<query>, e.g. "prefix=/users&status=500". Returns 0 or -1. */
int h_mock_mode(const struct h_mock *m, const char *query);

/* A condition on one log entry. */
typedef bool (*h_log_pred)(const cJSON *entry, void *arg);
/* Polls the mock's log until an entry with a path starting with prefix
 * satisfies pred (pred NULL: any entry), at most timeout_ms. Returns a
 * copy of the entry (caller owns) or NULL on timeout. */
cJSON *h_wait_log(const struct h_mock *m, const char *prefix, h_log_pred pred, void *arg,
                  int timeout_ms);
/* Predicate: the entry is finished and client_hung_up is true. */
bool h_pred_hung_up(const cJSON *entry, void *arg);

/* Header value of a logged request (name lowercased), or NULL. */
const char *h_log_header(const cJSON *entry, const char *lname);
/* String member of a JSON object, or NULL. */
const char *h_json_str(const cJSON *obj, const char *name);

/* The config every gateway test program runs with (a template for
 * h_gateway_start). Endpoints, all GET unless said:
 *   /api/dashboard/{id}   user (key), orders (top level), recs (key, allow
 *                         items), nothing (/empty, key); forwards
 *                         Authorization, Accept-Language and ?lang
 *   /api/echo/{id}        a (/echo/a/{id}, timeout 1500), b (/echo/b/{id});
 *                         endpoint timeout 2000; same forwarding; POST too
 *   /api/failfast/{code}  slow (/slow/6000/{code}) and bad (/fail/{code})
 *   /api/status/{code}    st (/fail/{code})
 *   /api/reset, /api/invalid   user and a misbehaving backend
 *   /api/huge/{n}         huge (/huge/{n}); max_response_bytes is 65536
 *   /api/slow/{ms}        slow (/slow/{ms}/t) with backend timeout 200
 *   /api/deadline/{ms}    slow (/slow/{ms}/d), endpoint and backend 8000
 *   /api/load/{id}        user, recs, n (/b/{id})
 * Default timeouts 3000, max_timeout_ms 10000, 2 workers. */
extern const char h_conf_standard[];

/* Monotonic milliseconds. */
double h_now_ms(void);

/* The factor upper wall-clock bounds are multiplied by: the environment
 * variable GATEWAY_TEST_TIME_SCALE (a number >= 1; tests/valgrind.sh sets
 * it, a gateway under valgrind is many times slower), else 1. Lower bounds
 * ("not before the deadline") are never scaled. */
double h_time_scale(void);
/* ms * h_time_scale(): an upper bound on a wall-clock time. */
double h_bound_ms(double ms);

/* ---- added for the resilience, limits and lifecycle tests ---- */

/* Whether any h_env_stop so far found the gateway not stopping cleanly.
 * cmocka 1.1.5 prints a failed group teardown but still returns 0 from
 * cmocka_run_group_tests, so a program whose teardown calls h_env_stop
 * should end with: return rc ? rc : h_stop_failed(); */
bool h_stop_failed(void);

/* Returns a malloc'd copy of s with every occurrence of from replaced by
 * to. */
char *h_replace(const char *s, const char *from, const char *to);

/* Rewrites the gateway's config file from tmpl (same ${BACKEND} and the
 * gateway's own ${PORT}) atomically (temp file + rename), so a SIGHUP never
 * reads half a file. Returns 0 or a negative errno value. */
int h_gateway_write_conf(const struct h_gateway *g, const char *tmpl, const struct h_mock *m);
/* Writes text as the gateway's config file verbatim (no substitution),
 * atomically. Returns 0 or a negative errno value. */
int h_gateway_write_conf_raw(const struct h_gateway *g, const char *text);
/* Waits at most timeout_ms for the gateway to exit by itself (after a signal
 * the test sent). Returns the wait status (and sets g->pid to 0), or -1 when
 * it is still running. */
int h_gateway_wait_exit(struct h_gateway *g, int timeout_ms);
/* Polls the gateway's stderr/stdout file until it contains needle, at most
 * timeout_ms. Returns true when found. */
bool h_gateway_log_wait(const struct h_gateway *g, const char *needle, int timeout_ms);
/* Counts the occurrences of needle in the gateway's stderr/stdout file. */
int h_gateway_log_count(const struct h_gateway *g, const char *needle);

/* Reads a whole file; *len receives its size. Returns a malloc'd,
 * NUL-terminated buffer or NULL. */
char *h_read_file(const char *path, size_t *len);

/* ---- raw sockets (for what curl will not send) ---- */

/* Connects a blocking TCP socket to 127.0.0.1:port. Returns the fd or a
 * negative errno value (-ECONNREFUSED when nothing listens). */
int h_connect(int port);
/* Sends all of data (MSG_NOSIGNAL). Returns 0 or a negative errno value. */
int h_send_all(int fd, const void *data, size_t len);
/* Reads one HTTP/1.1 response from fd: the headers, then a body of
 * Content-Length bytes or a chunked body, or up to EOF when neither is
 * given; at most timeout_ms in total. Returns the status code, 0 when no
 * complete status line arrived (closed, reset or timed out). *raw (when not
 * NULL) receives everything read, malloc'd and NUL-terminated. */
long h_read_response(int fd, int timeout_ms, char **raw);
/* Copies the value of a header of a raw response (case-insensitive name)
 * into val. Returns true when present. */
bool h_raw_header(const char *raw, const char *name, char *val, size_t vlen);
/* Waits at most timeout_ms for the peer to close fd (EOF or reset),
 * discarding anything it sends. Returns 0 when closed, -ETIMEDOUT else. */
int h_wait_closed(int fd, int timeout_ms);

/* ---- the shapes every test program shares ---- */

/* Sleeps ms (not scaled). Only for pacing (a slow client, a load's rhythm)
 * or for time that is itself the point; a wait for an outcome is a poll:
 * h_poll_until or H_POLL_UNTIL. */
void h_pause_ms(int ms);

/* Polls pred(arg) every 10 ms until it returns true, at most
 * h_bound_ms(ms). Returns whether it did (it is checked once more at the
 * bound). */
bool h_poll_until(bool (*pred)(void *arg), void *arg, int ms);
/* The same for an expression (evaluated in the caller, so it may use
 * locals): a bool, true when expr became true within h_bound_ms(ms). */
#define H_POLL_UNTIL(expr, ms)                                                                     \
    ({                                                                                             \
        double h_end_ = h_now_ms() + h_bound_ms(ms);                                               \
        bool h_ok_;                                                                                \
        while (!(h_ok_ = (expr)) && h_poll_step(h_end_)) {                                         \
        }                                                                                          \
        h_ok_;                                                                                     \
    })
/* One step of a poll: false when h_now_ms() reached end, else pauses 10 ms
 * and returns true. */
bool h_poll_step(double end);

/* The number of /_log entries whose path starts with prefix (NULL: all),
 * or -1 when the log cannot be read. */
int h_mock_count(const struct h_mock *m, const char *prefix);

/* Starts n mocks (n <= 8), then a gateway from tmpl in which "@A@", "@B@",
 * ... are replaced by the ports of mocks[0], mocks[1], ... (and ${BACKEND}
 * by mocks[0]'s origin). Returns 0 or a negative errno value (everything
 * started is stopped again). */
int h_env_start_mocks(struct h_gateway *g, struct h_mock *const *mocks, size_t n,
                      const char *tmpl);
/* Stops the gateway like h_env_stop (a crash or a non-zero exit is
 * reported, counted in h_stop_failed and returned as -1), then every mock
 * still running. */
int h_env_stop_mocks(struct h_gateway *g, struct h_mock *const *mocks, size_t n);

/* Runs tests as one cmocka group named name around *env: the group setup
 * starts it from tmpl (h_env_start), the teardown stops it (h_env_stop).
 * Returns cmocka's count of failures, or 1 when there were none but a
 * gateway did not stop cleanly (h_stop_failed): main returns it. */
struct CMUnitTest;
int h_group_run(const char *name, const struct CMUnitTest *tests, size_t n, struct h_env *env,
                const char *tmpl);
#define H_GROUP_RUN(name, tests, env, tmpl)                                                        \
    h_group_run(name, tests, sizeof(tests) / sizeof((tests)[0]), env, tmpl)

#endif
