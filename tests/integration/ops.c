/* ops: the config and request checks of the metrics and access-log
 * programs (see ops.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ops.h"

/* ${LOG} is replaced by the access-log path before the harness substitutes
 * ${BACKEND} and ${PORT}. ${EXTRA} is where the reload test adds an
 * endpoint. */
static const char conf_tmpl[] =
    "{\n"
    " \"server\": {\"listen\": \"127.0.0.1:${PORT}\", \"workers\": 2,\n"
    "            \"shutdown_timeout_ms\": 3000},\n"
    " \"defaults\": {\"timeout_ms\": 3000, \"max_timeout_ms\": 10000,\n"
    "              \"backend_timeout_ms\": 3000},\n"
    " \"access_log\": {\"path\": \"${LOG}\"},\n"
    " \"endpoints\": [${EXTRA}\n"
    "  {\"name\": \"ok\", \"method\": \"GET\", \"path\": \"/api/ok/{id}\", \"backends\": [\n"
    "    {\"name\": \"user\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"user\"},\n"
    "    {\"name\": \"recs\", \"url\": \"${BACKEND}/recs/{id}\", \"key\": \"recs\"}]},\n"
    "  {\"name\": \"opt\", \"method\": \"GET\", \"path\": \"/api/opt/{id}\", \"backends\": [\n"
    "    {\"name\": \"user\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"user\"},\n"
    "    {\"name\": \"flaky\", \"url\": \"${BACKEND}/fail/500\", \"key\": \"flaky\",\n"
    "     \"required\": false}]},\n"
    "  {\"name\": \"stat\", \"method\": \"GET\", \"path\": \"/api/stat/{id}\", \"backends\": [\n"
    "    {\"name\": \"user\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"user\"},\n"
    "    {\"name\": \"st\", \"url\": \"${BACKEND}/fail/503\", \"key\": \"st\",\n"
    "     \"fallback\": \"static\", \"static\": {\"items\": []}}]},\n"
    "  {\"name\": \"fail\", \"method\": \"GET\", \"path\": \"/api/fail/{id}\",\n"
    "   \"timeout_ms\": 8000, \"backends\": [\n"
    "    {\"name\": \"slow\", \"url\": \"${BACKEND}/slow/6000/{id}\", \"key\": \"slow\",\n"
    "     \"timeout_ms\": 8000},\n"
    "    {\"name\": \"bad\", \"url\": \"${BACKEND}/fail/500\", \"key\": \"bad\"}]},\n"
    "  {\"name\": \"to\", \"method\": \"GET\", \"path\": \"/api/to/{id}\", \"backends\": [\n"
    "    {\"name\": \"lazy\", \"url\": \"${BACKEND}/slow/3000/{id}\", \"key\": \"lazy\",\n"
    "     \"timeout_ms\": 150}]},\n"
    "  {\"name\": \"hang\", \"method\": \"GET\", \"path\": \"/api/hang/{id}\",\n"
    "   \"timeout_ms\": 8000, \"backends\": [\n"
    "    {\"name\": \"sleepy\", \"url\": \"${BACKEND}/slow/5000/{id}\", \"key\": \"sleepy\",\n"
    "     \"timeout_ms\": 8000}]}\n"
    " ]\n"
    "}\n";

static const char extra_endpoint[] =
    "\n  {\"name\": \"added\", \"method\": \"GET\", \"path\": \"/api/added/{id}\", \"backends\": "
    "[\n"
    "    {\"name\": \"user2\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"user\"}]},";

char *make_tmpl(const char *log_path, bool extra)
{
    char *a = h_replace(conf_tmpl, "${LOG}", log_path);
    char *b = h_replace(a, "${EXTRA}", extra ? extra_endpoint : "");
    free(a);
    return b;
}

void expect_status(const char *what, const struct h_resp *r, long status)
{
    if (r->status != status)
        fprintf(stderr, "%s: expected %ld, got %ld (curl %d): %s\n", what, status, r->status,
                r->curl_code, r->body ? r->body : "");
    assert_int_equal(r->status, status);
}

void get_expect(const struct h_gateway *g, const char *path, const char *rid, long status,
                struct h_resp *r)
{
    char hdr[200];
    snprintf(hdr, sizeof hdr, "X-Request-Id: %s", rid ? rid : "");
    const char *hdrs[] = {hdr, NULL};
    h_get(g->base, path, rid ? hdrs : NULL, r);
    expect_status(path, r, status);
}

void expect_header(const struct h_resp *r, const char *name, const char *value)
{
    const char *v = h_header(r, name);
    if (!v || strcmp(v, value) != 0)
        fail_msg("%s: '%s', expected '%s'", name, v ? v : "(none)", value);
}

void get_status(const struct h_gateway *g, const char *path, long status)
{
    struct h_resp r;
    get_expect(g, path, NULL, status, &r);
    h_resp_free(&r);
}

void hang_up_during_backend_call(const struct h_env *e, const char *rid)
{
    int fd = h_connect(e->gw.port);
    assert_true(fd >= 0);
    char req[256];
    int n = snprintf(req, sizeof req,
                     "GET /api/hang/1 HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\n\r\n", rid);
    assert_int_equal(h_send_all(fd, req, (size_t)n), 0);
    cJSON *started = h_wait_log(&e->mock, "/slow/5000/1", NULL, NULL, WAIT_MS);
    close(fd);
    assert_non_null(started);
    cJSON_Delete(started);
}
