/* harness: processes and HTTP helpers for the integration tests. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>

#include <cmocka.h>
#include <curl/curl.h>

extern char **environ;

#ifndef GATEWAY_BIN
#define GATEWAY_BIN "gateway"
#endif
#ifndef MOCK_BIN
#define MOCK_BIN "mock_backend"
#endif

#define STOP_WAIT_MS    10000
#define HEALTHY_WAIT_MS 10000
#define POLL_STEP_MS    10

static const char *g_gateway_bin = GATEWAY_BIN;
static const char *g_mock_bin = MOCK_BIN;

void h_init(int argc, char **argv)
{
    if (argc > 1 && argv[1][0]) g_gateway_bin = argv[1];
    if (argc > 2 && argv[2][0]) g_mock_bin = argv[2];
    curl_global_init(CURL_GLOBAL_ALL);
    signal(SIGPIPE, SIG_IGN);
}

const char *h_gateway_bin(void)
{
    return g_gateway_bin;
}

double h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

double h_time_scale(void)
{
    const char *v = getenv("GATEWAY_TEST_TIME_SCALE");
    char *end;
    double x = v ? strtod(v, &end) : 1;
    return v && end != v && !*end && x >= 1 && x <= 1000 ? x : 1;
}

double h_bound_ms(double ms)
{
    return ms * h_time_scale();
}

void h_pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The short wait between two checks of a condition. */
static void poll_pause(void)
{
    h_pause_ms(POLL_STEP_MS);
}

bool h_poll_step(double end)
{
    if (h_now_ms() >= end) return false;
    poll_pause();
    return true;
}

bool h_poll_until(bool (*pred)(void *arg), void *arg, int ms)
{
    return H_POLL_UNTIL(pred(arg), ms);
}

/* ---- processes ---- */

/* In the child of spawn: asks for SIGKILL when the parent dies, and gives
 * up if it already has (then getppid() is no longer parent); stdin from
 * /dev/null, stdout and stderr on out and err (-1: inherited); execs argv.
 * On failure writes errno to errfd. Async-signal-safe calls only (the
 * parent may have threads). */
__attribute__((noreturn)) static void child_exec(char *const argv[], int out, int err,
                                                pid_t parent, int errfd)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0 && dup2(null, STDIN_FILENO) >= 0 && (out < 0 || dup2(out, STDOUT_FILENO) >= 0) &&
        (err < 0 || dup2(err, STDERR_FILENO) >= 0))
        execve(argv[0], argv, environ);
    int e = errno;
    ssize_t n = write(errfd, &e, sizeof e);
    (void)n;
    _exit(127);
}

pid_t h_spawn(char *const argv[], int out, int err)
{
    pid_t parent = getpid();
    int ep[2]; /* the child's errno if exec fails; EOF when it succeeded */
    if (pipe2(ep, O_CLOEXEC) != 0) return -errno;
    pid_t pid = fork();
    if (pid == 0) child_exec(argv, out, err, parent, ep[1]);
    int fork_errno = errno;
    close(ep[1]);
    if (pid < 0) {
        close(ep[0]);
        return -fork_errno;
    }
    int child_errno = 0;
    ssize_t n;
    while ((n = read(ep[0], &child_errno, sizeof child_errno)) < 0 && errno == EINTR) {
    }
    close(ep[0]);
    if (n > 0) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        return -(child_errno ? child_errno : EIO);
    }
    return pid;
}

/* Waits for pid at most ms; returns the wait status or -1 when still
 * running. */
static int wait_bounded(pid_t pid, int ms)
{
    double end = h_now_ms() + ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return st;
        if (r < 0 && errno != EINTR) return -1;
        if (h_now_ms() >= end) return -1;
        poll_pause();
    }
}

static int stop_pid(pid_t pid, const char *what)
{
    if (pid <= 0) return -1;
    kill(pid, SIGTERM);
    int st = wait_bounded(pid, (int)h_bound_ms(STOP_WAIT_MS));
    if (st == -1) {
        fprintf(stderr, "harness: %s (pid %d) ignored SIGTERM for %d ms, killing it\n", what,
                (int)pid, STOP_WAIT_MS);
        kill(pid, SIGKILL);
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        return -1;
    }
    return st;
}

int h_mock_start(struct h_mock *m)
{
    return h_mock_start_port(m, 0);
}

int h_mock_start_port(struct h_mock *m, int port)
{
    memset(m, 0, sizeof *m);
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", port);
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return -errno;
    char *argv[] = {(char *)g_mock_bin, "--port", port_s, NULL};
    pid_t pid = h_spawn(argv, p[1], -1);
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        fprintf(stderr, "harness: cannot start %s: %s\n", g_mock_bin, strerror(-pid));
        return pid;
    }
    m->pid = pid;

    /* Read "port N\n", bounded. */
    char line[64] = "";
    size_t len = 0;
    double end = h_now_ms() + h_bound_ms(HEALTHY_WAIT_MS);
    while (!memchr(line, '\n', len) && len < sizeof line - 1) {
        int left = (int)(end - h_now_ms());
        struct pollfd pf = {.fd = p[0], .events = POLLIN};
        if (left <= 0 || poll(&pf, 1, left) <= 0) break;
        ssize_t n = read(p[0], line + len, sizeof line - 1 - len);
        if (n <= 0) break;
        len += (size_t)n;
        line[len] = '\0';
    }
    close(p[0]);
    if (sscanf(line, "port %d", &m->port) != 1 || m->port <= 0) {
        fprintf(stderr, "harness: mock backend did not report its port (got '%s')\n", line);
        h_mock_stop(m);
        return -EIO;
    }
    snprintf(m->origin, sizeof m->origin, "http://127.0.0.1:%d", m->port);
    return 0;
}

int h_mock_stop(struct h_mock *m)
{
    int st = stop_pid(m->pid, "mock backend");
    m->pid = 0;
    return st;
}

/* Binds 127.0.0.1:0 and returns the port the kernel chose (see the race
 * note in harness.h). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sin;
    int port = -EADDRNOTAVAIL;
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0 &&
        getsockname(fd, (struct sockaddr *)&sin, &sl) == 0)
        port = ntohs(sin.sin_port);
    close(fd);
    return port;
}

/* GATEWAY_TEST_CLIENT=curl|native|auto runs the whole suite against one
 * upstream transport: every config written from a template gets that
 * defaults.client, unless it names a client itself (a test about the
 * transports) or is not a JSON object. Textual, so the file is otherwise as
 * the test wrote it. */
static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
        p++;
    return p;
}

static char *with_client(char *text)
{
    const char *client = getenv("GATEWAY_TEST_CLIENT");
    if (!client || !*client || strstr(text, "\"client\"")) return text;
    char ins[64];
    const char *at = NULL;
    for (const char *d = strstr(text, "\"defaults\""); d && !at;
         d = strstr(d + 1, "\"defaults\"")) {
        const char *p = skip_ws(d + 10);
        if (*p++ != ':') continue;
        p = skip_ws(p);
        if (*p == '{') at = p + 1;
    }
    if (at) {
        snprintf(ins, sizeof ins, "\"client\": \"%s\"%s", client, *skip_ws(at) == '}' ? "" : ", ");
    } else {
        at = strchr(text, '{');
        if (!at) return text;
        at++;
        snprintf(ins, sizeof ins, "\"defaults\": {\"client\": \"%s\"}%s", client,
                 *skip_ws(at) == '}' ? "" : ", ");
    }
    size_t off = (size_t)(at - text), il = strlen(ins), tl = strlen(text);
    char *out = malloc(tl + il + 1);
    if (!out) abort();
    memcpy(out, text, off);
    memcpy(out + off, ins, il);
    memcpy(out + off + il, text + off, tl - off + 1);
    free(text);
    return out;
}

char *h_subst(const char *tmpl, const char *backend, int port)
{
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    size_t cap = strlen(tmpl) + 1;
    for (const char *p = tmpl; (p = strstr(p, "${")); p++)
        cap += strlen(backend) + 16;
    char *out = malloc(cap);
    if (!out) abort();
    size_t o = 0;
    for (const char *p = tmpl; *p;) {
        if (strncmp(p, "${BACKEND}", 10) == 0) {
            o += (size_t)sprintf(out + o, "%s", backend);
            p += 10;
        } else if (strncmp(p, "${PORT}", 7) == 0) {
            o += (size_t)sprintf(out + o, "%s", portstr);
            p += 7;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    return with_client(out);
}

int h_write_temp(char *path, size_t pathlen, const char *text)
{
    snprintf(path, pathlen, "/tmp/gw-itest-XXXXXX.json");
    int fd = mkstemps(path, 5);
    if (fd < 0) return -errno;
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    close(fd);
    return w == (ssize_t)len ? 0 : -EIO;
}

void h_gateway_dump(const struct h_gateway *g)
{
    if (!g->stderr_path[0]) return;
    FILE *f = fopen(g->stderr_path, "r");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long from = size > 8192 ? size - 8192 : 0;
    fseek(f, from, SEEK_SET);
    fprintf(stderr, "---- gateway output (%s, last %ld bytes) ----\n", g->stderr_path, size - from);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, n, stderr);
    fprintf(stderr, "---- end of gateway output ----\n");
    fclose(f);
}

static int spawn_gateway(struct h_gateway *g)
{
    int fd = open(g->stderr_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return -errno;
    char *argv[] = {(char *)g_gateway_bin, "-c", g->conf_path, NULL};
    pid_t pid = h_spawn(argv, fd, fd);
    close(fd);
    if (pid < 0) {
        fprintf(stderr, "harness: cannot start %s: %s\n", g_gateway_bin, strerror(-pid));
        g->pid = 0;
        return pid;
    }
    g->pid = pid;
    return 0;
}

/* Polls /healthz until 200. Returns 0, -ECHILD when the gateway exited, or
 * -ETIMEDOUT. */
static int wait_healthy(struct h_gateway *g)
{
    double end = h_now_ms() + h_bound_ms(HEALTHY_WAIT_MS);
    char url[128];
    snprintf(url, sizeof url, "%s/healthz", g->base);
    for (;;) {
        int st;
        if (waitpid(g->pid, &st, WNOHANG) == g->pid) {
            fprintf(stderr, "harness: gateway exited before it was healthy (status 0x%x)\n", st);
            g->pid = 0;
            return -ECHILD;
        }
        struct h_resp r;
        h_request("GET", url, NULL, NULL, 1000, &r);
        long status = r.status;
        h_resp_free(&r);
        if (status == 200) return 0;
        if (h_now_ms() >= end) return -ETIMEDOUT;
        poll_pause();
    }
}

int h_gateway_start(struct h_gateway *g, const char *tmpl, const struct h_mock *m)
{
    memset(g, 0, sizeof *g);
    snprintf(g->stderr_path, sizeof g->stderr_path, "/tmp/gw-itest-XXXXXX.log");
    int fd = mkstemps(g->stderr_path, 4);
    if (fd < 0) return -errno;
    close(fd);
    int rc = -EIO;
    for (int attempt = 0; attempt < 3; attempt++) {
        g->port = free_port();
        if (g->port < 0) return g->port;
        snprintf(g->base, sizeof g->base, "http://127.0.0.1:%d", g->port);
        char *text = h_subst(tmpl, m ? m->origin : "http://127.0.0.1:1", g->port);
        if (g->conf_path[0]) unlink(g->conf_path);
        rc = h_write_temp(g->conf_path, sizeof g->conf_path, text);
        free(text);
        if (rc) return rc;
        rc = spawn_gateway(g);
        if (rc) return rc;
        rc = wait_healthy(g);
        if (rc == 0) return 0;
        if (rc != -ECHILD) break; /* running but never healthy: do not retry */
    }
    h_gateway_dump(g);
    if (g->pid) stop_pid(g->pid, "gateway");
    g->pid = 0;
    return rc;
}

int h_gateway_stop(struct h_gateway *g, bool keep_log)
{
    int st = stop_pid(g->pid, "gateway");
    g->pid = 0;
    if (g->conf_path[0]) unlink(g->conf_path);
    if (!keep_log && g->stderr_path[0]) unlink(g->stderr_path);
    return st;
}

/* Set by h_env_stop when a gateway did not stop cleanly (h_stop_failed). */
static bool g_stop_failed;

bool h_stop_failed(void)
{
    return g_stop_failed;
}

int h_env_start(struct h_env *e, const char *tmpl)
{
    memset(e, 0, sizeof *e);
    int rc = h_mock_start(&e->mock);
    if (rc) return rc;
    rc = h_gateway_start(&e->gw, tmpl, &e->mock);
    if (rc) h_mock_stop(&e->mock);
    return rc;
}

/* Stops a gateway for good: a crash or a non-zero exit is reported and
 * recorded for h_stop_failed. Returns 0 or -1. */
static int gateway_stop_checked(struct h_gateway *g)
{
    if (!g->pid) return 0;
    int rc = 0;
    int st = stop_pid(g->pid, "gateway");
    g->pid = 0;
    bool ok = st != -1 && ((WIFEXITED(st) && WEXITSTATUS(st) == 0) ||
                           (WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM));
    if (!ok) {
        fprintf(stderr, "harness: gateway did not stop cleanly (wait status 0x%x)\n", st);
        rc = -1;
        g_stop_failed = true;
    }
    h_gateway_dump(g);
    h_gateway_stop(g, false);
    return rc;
}

int h_env_stop(struct h_env *e)
{
    int rc = gateway_stop_checked(&e->gw);
    if (e->mock.pid) h_mock_stop(&e->mock);
    return rc;
}

int h_env_start_mocks(struct h_gateway *g, struct h_mock *const *mocks, size_t n,
                      const char *tmpl)
{
    if (n == 0 || n > 8) return -EINVAL;
    memset(g, 0, sizeof *g);
    for (size_t i = 0; i < n; i++)
        memset(mocks[i], 0, sizeof *mocks[i]);
    char *conf = strdup(tmpl);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = h_mock_start(mocks[i]);
        char name[8], port[16];
        snprintf(name, sizeof name, "@%c@", (char)('A' + i));
        snprintf(port, sizeof port, "%d", mocks[i]->port);
        char *next = h_replace(conf, name, port);
        free(conf);
        conf = next;
    }
    if (rc == 0) rc = h_gateway_start(g, conf, mocks[0]);
    free(conf);
    if (rc) h_env_stop_mocks(g, mocks, n);
    return rc;
}

int h_env_stop_mocks(struct h_gateway *g, struct h_mock *const *mocks, size_t n)
{
    int rc = gateway_stop_checked(g);
    for (size_t i = 0; i < n; i++)
        if (mocks[i]->pid) h_mock_stop(mocks[i]);
    return rc;
}

/* The env and template of the group h_group_run is running. */
static struct h_env *g_group_env;
static const char *g_group_tmpl;

static int group_setup(void **state)
{
    (void)state;
    return h_env_start(g_group_env, g_group_tmpl) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return h_env_stop(g_group_env);
}

int h_group_run(const char *name, const struct CMUnitTest *tests, size_t n, struct h_env *env,
                const char *tmpl)
{
    g_group_env = env;
    g_group_tmpl = tmpl;
    int rc = _cmocka_run_group_tests(name, tests, n, group_setup, group_teardown);
    return rc ? rc : h_stop_failed();
}

int h_run(char *const argv[], int timeout_ms, char **output)
{
    char path[] = "/tmp/gw-itest-run-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    pid_t pid = h_spawn(argv, fd, fd);
    int code = -1;
    if (pid > 0) {
        int st = wait_bounded(pid, timeout_ms);
        if (st == -1) {
            fprintf(stderr, "harness: %s did not exit within %d ms\n", argv[0], timeout_ms);
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        } else if (WIFEXITED(st)) {
            code = WEXITSTATUS(st);
        }
    } else {
        fprintf(stderr, "harness: cannot run %s: %s\n", argv[0], strerror(-pid));
    }
    if (output) {
        struct stat sb;
        fstat(fd, &sb);
        *output = calloc(1, (size_t)sb.st_size + 1);
        if (!*output) abort();
        ssize_t n = pread(fd, *output, (size_t)sb.st_size, 0);
        (*output)[n > 0 ? n : 0] = '\0';
    }
    close(fd);
    unlink(path);
    return code;
}

/* ---- HTTP ---- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct h_resp *r = arg;
    size_t n = size * nmemb;
    char *p = realloc(r->body, r->body_len + n + 1);
    if (!p) return 0;
    memcpy(p + r->body_len, data, n);
    r->body = p;
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    struct h_resp *r = arg;
    size_t n = size * nmemb;
    size_t len = n;
    while (len && (data[len - 1] == '\r' || data[len - 1] == '\n'))
        len--;
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* a new response (after a 100 Continue, say): forget the old headers */
        for (size_t i = 0; i < r->n_headers; i++)
            free(r->headers[i]);
        r->n_headers = 0;
        return n;
    }
    if (!len) return n;
    char **h = realloc(r->headers, (r->n_headers + 1) * sizeof *h);
    if (!h) return 0;
    r->headers = h;
    r->headers[r->n_headers++] = strndup(data, len);
    return n;
}

int h_request(const char *method, const char *url, const char *const *headers, const char *body,
              long timeout_ms, struct h_resp *out)
{
    memset(out, 0, sizeof *out);
    CURL *c = curl_easy_init();
    if (!c) abort();
    struct curl_slist *hl = NULL;
    for (size_t i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    if (body) hl = curl_slist_append(hl, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 30000L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    CURLcode rc = curl_easy_perform(c);
    out->curl_code = (int)rc;
    if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    curl_off_t us = 0;
    curl_easy_getinfo(c, CURLINFO_TOTAL_TIME_T, &us);
    out->total_ms = (double)us / 1000.0;
    if (!out->body) {
        out->body = calloc(1, 1);
        if (!out->body) abort();
    }
    out->json = cJSON_ParseWithLength(out->body, out->body_len);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    return (int)rc;
}

int h_get(const char *base, const char *path, const char *const *headers, struct h_resp *out)
{
    char url[4096];
    snprintf(url, sizeof url, "%s%s", base, path);
    return h_request("GET", url, headers, NULL, 0, out);
}

const char *h_header(const struct h_resp *r, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < r->n_headers; i++) {
        const char *h = r->headers[i];
        if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
            const char *v = h + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            return v;
        }
    }
    return NULL;
}

void h_resp_free(struct h_resp *r)
{
    free(r->body);
    for (size_t i = 0; i < r->n_headers; i++)
        free(r->headers[i]);
    free(r->headers);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof *r);
}

/* ---- the mock's control routes ---- */

cJSON *h_mock_log(const struct h_mock *m, const char *prefix)
{
    char url[1024];
    snprintf(url, sizeof url, "%s/_log%s%s", m->origin, prefix ? "?prefix=" : "",
             prefix ? prefix : "");
    struct h_resp r;
    h_request("GET", url, NULL, NULL, 5000, &r);
    cJSON *log = NULL;
    if (r.status == 200 && cJSON_IsArray(r.json)) {
        log = r.json;
        r.json = NULL;
    }
    h_resp_free(&r);
    return log;
}

int h_mock_count(const struct h_mock *m, const char *prefix)
{
    cJSON *log = h_mock_log(m, prefix);
    int n = cJSON_IsArray(log) ? cJSON_GetArraySize(log) : -1;
    cJSON_Delete(log);
    return n;
}

static int mock_post(const struct h_mock *m, const char *path_query)
{
    char url[1024];
    snprintf(url, sizeof url, "%s%s", m->origin, path_query);
    struct h_resp r;
    h_request("POST", url, NULL, "", 5000, &r);
    int rc = r.status == 200 ? 0 : -1;
    h_resp_free(&r);
    return rc;
}

int h_mock_reset(const struct h_mock *m)
{
    return mock_post(m, "/_mode?clear=1") | mock_post(m, "/_log/clear");
}

int h_mock_mode(const struct h_mock *m, const char *query)
{
    char pq[900];
    snprintf(pq, sizeof pq, "/_mode?%s", query);
    return mock_post(m, pq);
}

cJSON *h_wait_log(const struct h_mock *m, const char *prefix, h_log_pred pred, void *arg,
                  int timeout_ms)
{
    double end = h_now_ms() + h_bound_ms(timeout_ms);
    for (;;) {
        cJSON *log = h_mock_log(m, prefix);
        const cJSON *e;
        cJSON_ArrayForEach(e, log)
        {
            if (!pred || pred(e, arg)) {
                cJSON *copy = cJSON_Duplicate(e, 1);
                cJSON_Delete(log);
                return copy;
            }
        }
        cJSON_Delete(log);
        if (h_now_ms() >= end) return NULL;
        poll_pause();
    }
}

bool h_pred_hung_up(const cJSON *entry, void *arg)
{
    (void)arg;
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(entry, "finished")) &&
           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(entry, "client_hung_up"));
}

const char *h_log_header(const cJSON *entry, const char *lname)
{
    return h_json_str(cJSON_GetObjectItemCaseSensitive(entry, "headers"), lname);
}

const char *h_json_str(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- the test configuration ---- */

const char h_conf_standard[] =
    "{\n"
    " \"server\": {\"listen\": \"127.0.0.1:${PORT}\", \"workers\": 2,\n"
    "            \"shutdown_timeout_ms\": 2000},\n"
    " \"defaults\": {\"timeout_ms\": 3000, \"max_timeout_ms\": 10000,\n"
    "              \"backend_timeout_ms\": 3000, \"max_response_bytes\": 65536,\n"
    "              \"concurrency\": 16},\n"
    " \"access_log\": {\"path\": \"-\"},\n"
    " \"endpoints\": [\n"
    "  {\"name\": \"dashboard\", \"method\": \"GET\", \"path\": \"/api/dashboard/{id}\",\n"
    "   \"forward_headers\": [\"Authorization\", \"Accept-Language\"],\n"
    "   \"forward_query\": [\"lang\"],\n"
    "   \"backends\": [\n"
    "    {\"name\": \"user\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"user\"},\n"
    "    {\"name\": \"orders\", \"url\": \"${BACKEND}/orders/{id}\"},\n"
    "    {\"name\": \"recs\", \"url\": \"${BACKEND}/recs/{id}\", \"key\": \"recs\",\n"
    "     \"allow\": [\"items\"]},\n"
    "    {\"name\": \"nothing\", \"url\": \"${BACKEND}/empty\", \"key\": \"nothing\"}]},\n"
    "  {\"name\": \"echo\", \"method\": \"GET\", \"path\": \"/api/echo/{id}\",\n"
    "   \"timeout_ms\": 2000,\n"
    "   \"forward_headers\": [\"Authorization\", \"Accept-Language\"],\n"
    "   \"forward_query\": [\"lang\"],\n"
    "   \"backends\": [\n"
    "    {\"name\": \"a\", \"url\": \"${BACKEND}/echo/a/{id}\", \"key\": \"a\",\n"
    "     \"timeout_ms\": 1500},\n"
    "    {\"name\": \"b\", \"url\": \"${BACKEND}/echo/b/{id}\", \"key\": \"b\"}]},\n"
    "  {\"name\": \"echo-post\", \"method\": \"POST\", \"path\": \"/api/echo/{id}\",\n"
    "   \"backends\": [{\"name\": \"a\", \"url\": \"${BACKEND}/echo/p/{id}\", \"key\": \"a\"}]},\n"
    "  {\"name\": \"failfast\", \"method\": \"GET\", \"path\": \"/api/failfast/{code}\",\n"
    "   \"timeout_ms\": 8000,\n"
    "   \"backends\": [\n"
    "    {\"name\": \"slow\", \"url\": \"${BACKEND}/slow/6000/{code}\", \"key\": \"slow\",\n"
    "     \"timeout_ms\": 8000},\n"
    "    {\"name\": \"bad\", \"url\": \"${BACKEND}/fail/{code}\", \"key\": \"bad\"}]},\n"
    "  {\"name\": \"status\", \"method\": \"GET\", \"path\": \"/api/status/{code}\",\n"
    "   \"backends\": [{\"name\": \"st\", \"url\": \"${BACKEND}/fail/{code}\", \"key\": "
    "\"st\"}]},\n"
    "  {\"name\": \"reset\", \"method\": \"GET\", \"path\": \"/api/reset\",\n"
    "   \"backends\": [\n"
    "    {\"name\": \"user\", \"url\": \"${BACKEND}/users/1\", \"key\": \"user\"},\n"
    "    {\"name\": \"reset\", \"url\": \"${BACKEND}/reset\", \"key\": \"reset\"}]},\n"
    "  {\"name\": \"invalid\", \"method\": \"GET\", \"path\": \"/api/invalid\",\n"
    "   \"backends\": [\n"
    "    {\"name\": \"user\", \"url\": \"${BACKEND}/users/1\", \"key\": \"user\"},\n"
    "    {\"name\": \"invalid\", \"url\": \"${BACKEND}/invalid\", \"key\": \"invalid\"}]},\n"
    "  {\"name\": \"huge\", \"method\": \"GET\", \"path\": \"/api/huge/{n}\",\n"
    "   \"backends\": [{\"name\": \"huge\", \"url\": \"${BACKEND}/huge/{n}\", \"key\": "
    "\"huge\"}]},\n"
    "  {\"name\": \"slow-backend\", \"method\": \"GET\", \"path\": \"/api/slow/{ms}\",\n"
    "   \"timeout_ms\": 5000,\n"
    "   \"backends\": [{\"name\": \"slow\", \"url\": \"${BACKEND}/slow/{ms}/t\", \"key\": "
    "\"slow\",\n"
    "                 \"timeout_ms\": 200}]},\n"
    "  {\"name\": \"deadline\", \"method\": \"GET\", \"path\": \"/api/deadline/{ms}\",\n"
    "   \"timeout_ms\": 8000,\n"
    "   \"backends\": [{\"name\": \"slow\", \"url\": \"${BACKEND}/slow/{ms}/d\", \"key\": "
    "\"slow\",\n"
    "                 \"timeout_ms\": 8000}]},\n"
    "  {\"name\": \"load\", \"method\": \"GET\", \"path\": \"/api/load/{id}\",\n"
    "   \"backends\": [\n"
    "    {\"name\": \"user\", \"url\": \"${BACKEND}/users/{id}\", \"key\": \"user\"},\n"
    "    {\"name\": \"recs\", \"url\": \"${BACKEND}/recs/{id}\", \"key\": \"recs\"},\n"
    "    {\"name\": \"n\", \"url\": \"${BACKEND}/b/{id}\", \"key\": \"n\"}]}\n"
    " ]\n"
    "}\n";

/* ---- added for the resilience, limits and lifecycle tests ---- */

char *h_replace(const char *s, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), n = 0;
    for (const char *p = s; (p = strstr(p, from)); p += fl)
        n++;
    char *out = malloc(strlen(s) + n * tl + 1);
    if (!out) abort();
    char *o = out;
    for (const char *p = s;;) {
        const char *q = strstr(p, from);
        if (!q) {
            strcpy(o, p);
            break;
        }
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, to, tl);
        o += tl;
        p = q + fl;
    }
    return out;
}

int h_gateway_write_conf_raw(const struct h_gateway *g, const char *text)
{
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.new", g->conf_path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -errno;
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    close(fd);
    if (w != (ssize_t)len) {
        unlink(tmp);
        return -EIO;
    }
    return rename(tmp, g->conf_path) == 0 ? 0 : -errno;
}

int h_gateway_write_conf(const struct h_gateway *g, const char *tmpl, const struct h_mock *m)
{
    char *text = h_subst(tmpl, m ? m->origin : "http://127.0.0.1:1", g->port);
    int rc = h_gateway_write_conf_raw(g, text);
    free(text);
    return rc;
}

int h_gateway_wait_exit(struct h_gateway *g, int timeout_ms)
{
    if (g->pid <= 0) return -1;
    int st = wait_bounded(g->pid, (int)h_bound_ms(timeout_ms));
    if (st != -1) g->pid = 0;
    return st;
}

char *h_read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return NULL;
    }
    char *p = malloc((size_t)sb.st_size + 1);
    if (!p) abort();
    ssize_t n = pread(fd, p, (size_t)sb.st_size, 0);
    close(fd);
    if (n < 0) n = 0;
    p[n] = '\0';
    if (len) *len = (size_t)n;
    return p;
}

int h_gateway_log_count(const struct h_gateway *g, const char *needle)
{
    char *text = h_read_file(g->stderr_path, NULL);
    int n = 0;
    for (const char *p = text; p && (p = strstr(p, needle)); p += strlen(needle))
        n++;
    free(text);
    return n;
}

bool h_gateway_log_wait(const struct h_gateway *g, const char *needle, int timeout_ms)
{
    double end = h_now_ms() + h_bound_ms(timeout_ms);
    for (;;) {
        if (h_gateway_log_count(g, needle) > 0) return true;
        if (h_now_ms() >= end) return false;
        poll_pause();
    }
}

int h_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

int h_send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Whether raw (headers complete at hdr_end) holds a whole response. */
static bool response_complete(const char *raw, size_t len, size_t hdr_end)
{
    char v[64];
    if (h_raw_header(raw, "Content-Length", v, sizeof v))
        return len >= hdr_end + strtoull(v, NULL, 10);
    if (h_raw_header(raw, "Transfer-Encoding", v, sizeof v) && strcasestr(v, "chunked"))
        return strstr(raw + hdr_end, "0\r\n\r\n") != NULL;
    return false; /* up to EOF */
}

long h_read_response(int fd, int timeout_ms, char **raw)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) abort();
    buf[0] = '\0';
    double end = h_now_ms() + h_bound_ms(timeout_ms);
    for (;;) {
        const char *he = strstr(buf, "\r\n\r\n");
        if (he && response_complete(buf, len, (size_t)(he + 4 - buf))) break;
        int left = (int)(end - h_now_ms());
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pf, 1, left) <= 0) break;
        if (cap - len < 2048) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) abort();
            buf = nb;
        }
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
        buf[len] = '\0';
    }
    long status = 0;
    int minor;
    if (sscanf(buf, "HTTP/1.%d %ld", &minor, &status) != 2) status = 0;
    if (raw)
        *raw = buf;
    else
        free(buf);
    return status;
}

bool h_raw_header(const char *raw, const char *name, char *val, size_t vlen)
{
    const char *end = strstr(raw, "\r\n\r\n");
    size_t nl = strlen(name);
    const char *p = strstr(raw, "\r\n");
    while (p && (!end || p < end)) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t n = e ? (size_t)(e - v) : strlen(v);
            if (n >= vlen) n = vlen - 1;
            memcpy(val, v, n);
            val[n] = '\0';
            return true;
        }
        p = strstr(p, "\r\n");
    }
    return false;
}

int h_wait_closed(int fd, int timeout_ms)
{
    double end = h_now_ms() + h_bound_ms(timeout_ms);
    char buf[4096];
    for (;;) {
        int left = (int)(end - h_now_ms());
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pf, 1, left) <= 0) return -ETIMEDOUT;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) return 0;
    }
}
