/*
 * ops: what the two programs on the gateway's operations share
 * (test_metrics.c: the built-ins and /metrics; test_accesslog.c: the access
 * log): their config and the request checks that print what they got.
 */
#ifndef TESTS_INTEGRATION_OPS_H
#define TESTS_INTEGRATION_OPS_H

#include <stdbool.h>

#include "harness.h"

#define WAIT_MS                                                                                    \
    10000 /* bound of every poll (times GATEWAY_TEST_TIME_SCALE); success comes in milliseconds */

/* The config template with access_log.path log_path ("off", "-" or a
 * file), with or without the endpoint "added" (GET /api/added/{id}); still
 * holding ${BACKEND} and ${PORT}. Endpoints: ok (user, recs), opt (user and
 * an optional failing flaky), stat (user and a failing st with a static
 * fallback), fail (slow 6 s and a failing required bad), to (lazy: 3 s
 * behind a 150 ms timeout), hang (sleepy: 5 s). Returns a malloc'd string. */
char *make_tmpl(const char *log_path, bool extra);

/* Asserts r's status, printing the response when it differs. */
void expect_status(const char *what, const struct h_resp *r, long status);
/* GET base+path with an optional X-Request-Id; asserts the status. */
void get_expect(const struct h_gateway *g, const char *path, const char *rid, long status,
                struct h_resp *r);
/* A response header that must be present with this value. */
void expect_header(const struct h_resp *r, const char *name, const char *value);
/* get_expect without keeping the response. */
void get_status(const struct h_gateway *g, const char *path, long status);

/* Sends GET /api/hang/1 with X-Request-Id rid on a raw connection and
 * closes it once the mock has the backend call (/slow/5000/1). */
void hang_up_during_backend_call(const struct h_env *e, const char *rid);

#endif
