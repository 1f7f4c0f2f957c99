/*
 * mock_backend: a fault-injecting HTTP/1.1 backend for the integration tests
 * and the demo (tests/demo.sh). Deliberately simple: one thread per
 * connection, keep-alive, Content-Length (or chunked) request bodies, every
 * response with a Content-Length. Only libc and pthreads.
 *
 *     mock_backend [--listen ADDR] --port N
 *                               listen on ADDR:N (IPv4, default 127.0.0.1;
 *                               0 = ephemeral port); prints "port <N>" on
 *                               stdout once listening
 *
 * Routes (GET unless said; ids are the raw, still-encoded path segments):
 *   /users/{id}      {"id":"<id>","name":"User <id>"}
 *   /orders/{id}     {"user_id":"<id>","orders":[{"id":1,"sku":"p-1",...},...]}
 *   /recs/{id}       {"items":["a","b"],"for":"<id>"}
 *   /products/{sku}  {"sku":"<sku>","name":"Product <sku>","price":12.50}
 *   /json?body=B[&delay_ms=D]  waits D ms (watching for a hang-up), then
 *                    answers B (percent-decoded, up to 8 KiB) as the body
 *   /b/{n}           {"n":<n>}
 *   /slow/{ms}/{x}   waits ms (watching for a client hang-up), then
 *                    {"slow":<ms>,"x":"<x>"}
 *   /fail/{code}     status code, {"error":"fail"}
 *   /reset           closes the connection with an RST, no answer
 *   /invalid         200 "{not json"
 *   /huge/{bytes}    200, a valid JSON object of exactly max(bytes, 12) bytes
 *   /drip/{ms}       headers at once, then the JSON body one byte every ms
 *   /empty           204
 *   /echo[/...]      any method: {"method","path","query","headers","body"}
 *   any route, ?cc=V the answer carries "Cache-Control: V" (V percent-decoded)
 *   any route, ?hdr=N:V (repeatable) the answer carries "N: V" (percent-
 *                    decoded, up to 8 KiB; a decoded CR or LF is sent as is,
 *                    which breaks the response on purpose)
 * Control (never logged):
 *   GET  /_healthz   200 {"ok":true}: the gateway's active health checks
 *                    (tests/demo.sh, the soak), kept out of /_log; a mode
 *                    whose prefix matches it with a status answers that
 *                    status instead (prefix=/_healthz&status=503)
 *   POST /_mode?prefix=P&status=S|delay_ms=D|action=reset|invalid
 *                    requests whose path starts with P misbehave: first the
 *                    delay, then the action or status (a status alone answers
 *                    {"error":"mode"}); several may be combined;
 *                    &times=N: only the next N such requests misbehave,
 *                    then the mode clears itself (a "fail N times, then
 *                    succeed" backend)
 *   POST /_mode?prefix=P&clear=1   back to normal (no prefix: clear all)
 *   GET  /_log[?prefix=P]          JSON array of the last 10 000 requests:
 *        {"seq","method","path","query","headers":{lowercased: value},
 *         "started_ms","finished_ms","status","finished","client_hung_up"}
 *        started_ms/finished_ms are milliseconds since the mock started;
 *        finished: the mock is done with the request (answered, reset, or
 *        gave up); an answer is recorded just before its last bytes are
 *        sent, so a client that has read the answer finds the entry
 *        finished (finished_ms is then the time the send began);
 *        client_hung_up: the client closed its connection before the whole
 *        response was sent (may turn true after finished did)
 *   POST /_log/clear
 * SIGTERM / SIGINT: exit 0.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LOG_CAP         10000
#define MAX_HEADERS     100
#define MAX_HEADER_SIZE (1 << 20)
#define MAX_BODY_SIZE   (64 << 20)
#define MAX_MODES       64

/* ---- small growable string ---- */

struct sb {
    char *p;
    size_t len, cap;
};

static void sb_reserve(struct sb *s, size_t extra)
{
    if (s->len + extra + 1 <= s->cap) return;
    size_t cap = s->cap ? s->cap : 256;
    while (cap < s->len + extra + 1)
        cap *= 2;
    char *p = realloc(s->p, cap);
    if (!p) abort(); /* a test tool: out of memory is fatal */
    s->p = p;
    s->cap = cap;
}

static void sb_add(struct sb *s, const char *data, size_t n)
{
    sb_reserve(s, n);
    memcpy(s->p + s->len, data, n);
    s->len += n;
    s->p[s->len] = '\0';
}

static void sb_str(struct sb *s, const char *str)
{
    sb_add(s, str, strlen(str));
}

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sb *s, const char *fmt, ...)
{
    sb_reserve(s, 128);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(s->p + s->len, s->cap - s->len, fmt, ap);
    va_end(ap);
    if ((size_t)n >= s->cap - s->len) {
        sb_reserve(s, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(s->p + s->len, s->cap - s->len, fmt, ap);
        va_end(ap);
    }
    s->len += (size_t)n;
}

/* Appends data as a quoted JSON string; bytes >= 0x80 pass through, which is
 * valid when the input is UTF-8 (tests send ASCII). */
static void sb_json(struct sb *s, const char *data, size_t n)
{
    sb_add(s, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_add(s, e, 2);
        } else if (c < 0x20) {
            sb_printf(s, "\\u%04x", c);
        } else {
            sb_add(s, (const char *)&c, 1);
        }
    }
    sb_add(s, "\"", 1);
}

static void sb_jsonz(struct sb *s, const char *str)
{
    sb_json(s, str, strlen(str));
}

/* ---- time ---- */

static int64_t g_start_ms;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t since_start_ms(void)
{
    return mono_ms() - g_start_ms;
}

/* ---- request log ---- */

struct log_entry {
    uint64_t seq;    /* 0: empty slot */
    char *json_head; /* "method","path","query","headers" members, pre-rendered */
    int64_t started_ms, finished_ms;
    int status;
    bool finished, hung_up;
};

static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;
static struct log_entry g_log[LOG_CAP];
static uint64_t g_next_seq = 1;

static uint64_t log_start(char *json_head)
{
    pthread_mutex_lock(&g_log_mu);
    uint64_t seq = g_next_seq++;
    struct log_entry *e = &g_log[seq % LOG_CAP];
    free(e->json_head);
    *e = (struct log_entry){.seq = seq, .json_head = json_head, .started_ms = since_start_ms()};
    pthread_mutex_unlock(&g_log_mu);
    return seq;
}

/* Marks entry seq finished (0: a control request, not logged). A second
 * call keeps the first status and time and only adds a hang-up: the answer
 * is recorded before it is sent, a failed send is recorded after. */
static void log_finish(uint64_t seq, int status, bool hung_up)
{
    if (!seq) return;
    pthread_mutex_lock(&g_log_mu);
    struct log_entry *e = &g_log[seq % LOG_CAP];
    if (e->seq == seq) { /* not yet overwritten by a newer entry */
        if (!e->finished) {
            e->finished = true;
            e->finished_ms = since_start_ms();
            e->status = status;
        }
        e->hung_up = e->hung_up || hung_up;
    }
    pthread_mutex_unlock(&g_log_mu);
}

static void log_clear(void)
{
    pthread_mutex_lock(&g_log_mu);
    for (size_t i = 0; i < LOG_CAP; i++) {
        free(g_log[i].json_head);
        g_log[i] = (struct log_entry){0};
    }
    pthread_mutex_unlock(&g_log_mu);
}

/* Renders the log in seq order, keeping entries whose path starts with
 * prefix (NULL: all). */
static void log_render(struct sb *out, const char *prefix)
{
    sb_add(out, "[", 1);
    bool first = true;
    pthread_mutex_lock(&g_log_mu);
    uint64_t lo = g_next_seq > LOG_CAP ? g_next_seq - LOG_CAP : 1;
    for (uint64_t seq = lo; seq < g_next_seq; seq++) {
        struct log_entry *e = &g_log[seq % LOG_CAP];
        if (e->seq != seq) continue;
        if (prefix) {
            /* json_head starts with "method":"...","path":"<path>" */
            const char *p = strstr(e->json_head, "\"path\":\"");
            if (!p || strncmp(p + 8, prefix, strlen(prefix)) != 0) continue;
        }
        if (!first) sb_add(out, ",\n", 2);
        first = false;
        sb_printf(out, "{\"seq\":%" PRIu64 ",%s,\"started_ms\":%" PRId64 ",", e->seq, e->json_head,
                  e->started_ms);
        if (e->finished)
            sb_printf(out, "\"finished_ms\":%" PRId64 ",\"status\":%d,", e->finished_ms, e->status);
        else
            sb_str(out, "\"finished_ms\":null,\"status\":null,");
        sb_printf(out, "\"finished\":%s,\"client_hung_up\":%s}", e->finished ? "true" : "false",
                  e->hung_up ? "true" : "false");
    }
    pthread_mutex_unlock(&g_log_mu);
    sb_add(out, "]", 1);
}

/* ---- fault modes ---- */

enum action { ACT_NONE, ACT_RESET, ACT_INVALID };

struct mode {
    char prefix[256]; /* "" = free slot */
    int status;
    int delay_ms;
    enum action action;
    int times; /* > 0: requests left before the mode clears itself; 0: forever */
};

static pthread_mutex_t g_mode_mu = PTHREAD_MUTEX_INITIALIZER;
static struct mode g_modes[MAX_MODES];

/* Copies the mode of the longest matching prefix into *out; false if none. */
static bool mode_find(const char *path, struct mode *out)
{
    struct mode *found = NULL;
    size_t best = 0;
    pthread_mutex_lock(&g_mode_mu);
    for (size_t i = 0; i < MAX_MODES; i++) {
        size_t n = strlen(g_modes[i].prefix);
        if (n && n >= best && strncmp(path, g_modes[i].prefix, n) == 0) {
            found = &g_modes[i];
            best = n;
        }
    }
    if (found) {
        *out = *found;
        if (found->times > 0 && --found->times == 0) found->prefix[0] = '\0';
    }
    pthread_mutex_unlock(&g_mode_mu);
    return found != NULL;
}

/* Sets (or with clear, removes) the mode for prefix; clear without a prefix
 * removes every mode. Returns false when the table is full. */
static bool mode_set(const char *prefix, bool clear, const struct mode *m)
{
    bool ok = true;
    pthread_mutex_lock(&g_mode_mu);
    if (clear) {
        for (size_t i = 0; i < MAX_MODES; i++)
            if (!*prefix || strcmp(g_modes[i].prefix, prefix) == 0) g_modes[i].prefix[0] = '\0';
    } else {
        struct mode *slot = NULL;
        for (size_t i = 0; i < MAX_MODES && !slot; i++)
            if (strcmp(g_modes[i].prefix, prefix) == 0) slot = &g_modes[i];
        for (size_t i = 0; i < MAX_MODES && !slot; i++)
            if (!g_modes[i].prefix[0]) slot = &g_modes[i];
        if (slot) {
            *slot = *m;
            snprintf(slot->prefix, sizeof slot->prefix, "%s", prefix);
        } else {
            ok = false;
        }
    }
    pthread_mutex_unlock(&g_mode_mu);
    return ok;
}

/* ---- connection and request parsing ---- */

struct conn {
    int fd;
    char *buf;
    size_t len, cap;
};

struct header {
    char *name; /* lowercased */
    char *value;
};

struct req {
    char *head; /* owned copy of the request head; the pointers below point into it */
    char *method, *target, *version;
    char path[8192];  /* raw path, before '?' */
    char query[8192]; /* raw query, after '?', or "" */
    struct header hdrs[MAX_HEADERS];
    int n_hdrs;
    char *body;
    size_t body_len;
    bool keep_alive;
};

/* Reads more bytes into c->buf. Returns >0, 0 on EOF, -1 on error. */
static ssize_t conn_fill(struct conn *c)
{
    if (c->len == c->cap) {
        size_t cap = c->cap * 2;
        char *p = realloc(c->buf, cap);
        if (!p) abort();
        c->buf = p;
        c->cap = cap;
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n > 0) c->len += (size_t)n;
        return n;
    }
}

static void conn_consume(struct conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Ensures at least n buffered bytes; false on EOF or error. */
static bool conn_need(struct conn *c, size_t n)
{
    while (c->len < n)
        if (conn_fill(c) <= 0) return false;
    return true;
}

static const char *req_header(const struct req *r, const char *lname)
{
    for (int i = 0; i < r->n_hdrs; i++)
        if (strcmp(r->hdrs[i].name, lname) == 0) return r->hdrs[i].value;
    return NULL;
}

static void req_free(struct req *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

static bool send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Reads a chunked body into r->body. */
static bool read_chunked(struct conn *c, struct req *r)
{
    struct sb body = {0};
    for (;;) {
        char *eol;
        while (!(eol = memmem(c->buf, c->len, "\r\n", 2)))
            if (c->len > 4096 || conn_fill(c) <= 0) goto fail;
        size_t size = strtoul(c->buf, NULL, 16);
        size_t line = (size_t)(eol - c->buf) + 2;
        if (size > MAX_BODY_SIZE || body.len + size > MAX_BODY_SIZE) goto fail;
        if (!conn_need(c, line + size + 2)) goto fail;
        if (size == 0) {
            /* no trailers expected: the last chunk is "0\r\n\r\n" */
            conn_consume(c, line + 2);
            break;
        }
        sb_add(&body, c->buf + line, size);
        conn_consume(c, line + size + 2);
    }
    r->body = body.p;
    r->body_len = body.len;
    return true;
fail:
    free(body.p);
    return false;
}

/* Reads one request. Returns 1 on success, 0 when the client closed the
 * connection between requests, -1 on a malformed request or error. */
static int read_request(struct conn *c, struct req *r)
{
    memset(r, 0, sizeof *r);
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4))) {
        if (c->len >= MAX_HEADER_SIZE) return -1;
        ssize_t n = conn_fill(c);
        if (n == 0 && c->len == 0) return 0;
        if (n <= 0) return -1;
    }
    size_t head_len = (size_t)(end - c->buf) + 4;
    r->head = strndup(c->buf, head_len - 4);
    if (!r->head) abort();
    conn_consume(c, head_len);

    char *save = NULL;
    char *line = strtok_r(r->head, "\r\n", &save);
    if (!line) return -1;
    char *lsave = NULL;
    r->method = strtok_r(line, " ", &lsave);
    r->target = strtok_r(NULL, " ", &lsave);
    r->version = strtok_r(NULL, " ", &lsave);
    if (!r->method || !r->target || !r->version) return -1;
    const char *q = strchr(r->target, '?');
    size_t plen = q ? (size_t)(q - r->target) : strlen(r->target);
    if (plen >= sizeof r->path || (q && strlen(q + 1) >= sizeof r->query)) return -1;
    memcpy(r->path, r->target, plen);
    r->path[plen] = '\0';
    snprintf(r->query, sizeof r->query, "%s", q ? q + 1 : "");

    while ((line = strtok_r(NULL, "\r\n", &save))) {
        char *colon = strchr(line, ':');
        if (!colon || r->n_hdrs == MAX_HEADERS) continue;
        *colon = '\0';
        for (char *p = line; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t vl = strlen(v);
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            v[--vl] = '\0';
        r->hdrs[r->n_hdrs++] = (struct header){line, v};
    }

    const char *conn_hdr = req_header(r, "connection");
    bool http11 = strcmp(r->version, "HTTP/1.1") == 0;
    r->keep_alive = http11 ? !(conn_hdr && strcasecmp(conn_hdr, "close") == 0)
                           : (conn_hdr && strcasecmp(conn_hdr, "keep-alive") == 0);

    const char *expect = req_header(r, "expect");
    const char *te = req_header(r, "transfer-encoding");
    const char *cl = req_header(r, "content-length");
    bool has_body = (te && strcasecmp(te, "chunked") == 0) || (cl && strtoull(cl, NULL, 10) > 0);
    if (has_body && expect && strcasecmp(expect, "100-continue") == 0 && c->len == 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (!send_all(c->fd, cont, sizeof cont - 1)) return -1;
    }
    if (te && strcasecmp(te, "chunked") == 0) return read_chunked(c, r) ? 1 : -1;
    if (cl) {
        unsigned long long n = strtoull(cl, NULL, 10);
        if (n > MAX_BODY_SIZE) return -1;
        if (!conn_need(c, (size_t)n)) return -1;
        r->body = malloc((size_t)n + 1);
        if (!r->body) abort();
        memcpy(r->body, c->buf, (size_t)n);
        r->body[n] = '\0';
        r->body_len = (size_t)n;
        conn_consume(c, (size_t)n);
    }
    return 1;
}

/* Finds name=value in a raw query and percent-decodes the value into out.
 * Returns false when absent. */
static bool query_param(const char *query, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    for (const char *p = query; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            size_t o = 0;
            for (size_t i = nl + 1; i < len && o + 1 < outlen; i++) {
                if (p[i] == '%' && i + 2 < len && isxdigit((unsigned char)p[i + 1]) &&
                    isxdigit((unsigned char)p[i + 2])) {
                    char hex[3] = {p[i + 1], p[i + 2], 0};
                    out[o++] = (char)strtol(hex, NULL, 16);
                    i += 2;
                } else {
                    out[o++] = p[i] == '+' ? ' ' : p[i];
                }
            }
            out[o] = '\0';
            return true;
        }
        p = amp ? amp + 1 : NULL;
    }
    return false;
}

/* Every hdr=N:V parameter of a raw query as a "N: V" line in s. */
static void extra_headers(struct sb *s, const char *query)
{
    enum { VMAX = 8192 };
    for (const char *p = query; p && *p;) {
        const char *amp = strchr(p, '&');
        if (strncmp(p, "hdr=", 4) == 0) {
            char *v = malloc(VMAX);
            if (v && query_param(p, "hdr", v, VMAX)) {
                char *colon = strchr(v, ':');
                if (colon) {
                    *colon = '\0';
                    sb_printf(s, "%s: %s\r\n", v, colon + 1);
                }
            }
            free(v);
        }
        p = amp ? amp + 1 : NULL;
    }
}

/* ---- responses ---- */

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}

/* True when the peer has closed (or reset) its side of the connection. */
static bool client_gone(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    int r;
    while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
    }
    return r > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* Waits ms milliseconds; returns true as soon as the client hangs up. */
static bool wait_or_hangup(int fd, int ms)
{
    int64_t deadline = mono_ms() + ms;
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0) return false;
        if (client_gone(fd, (int)left)) return true;
    }
}

struct outcome {
    uint64_t seq; /* the request's log entry, 0 for a control request */
    int status;
    bool hung_up;
    bool close; /* close the connection after this request */
};

/* Sends a complete response. Records it in the log before sending it (see
 * log_finish), and a hang-up when the client left before (or while) it was
 * sent. */
static void respond(int fd, const struct req *r, int status, const char *body, size_t len,
                    struct outcome *out)
{
    out->status = status;
    if (client_gone(fd, 0)) {
        out->hung_up = true;
        out->close = true;
        return;
    }
    struct sb s = {0};
    sb_printf(&s, "HTTP/1.1 %d %s\r\nServer: mock_backend\r\n", status, reason(status));
    if (status != 204 && status != 304)
        sb_printf(&s, "Content-Type: application/json\r\nContent-Length: %zu\r\n", len);
    char cc[512];
    if (query_param(r->query, "cc", cc, sizeof cc)) sb_printf(&s, "Cache-Control: %s\r\n", cc);
    extra_headers(&s, r->query);
    sb_printf(&s, "Connection: %s\r\n\r\n", r->keep_alive ? "keep-alive" : "close");
    if (status != 204 && status != 304) sb_add(&s, body, len);
    log_finish(out->seq, status, false); /* before the client can have it */
    if (!send_all(fd, s.p, s.len)) {
        out->hung_up = true;
        out->close = true;
    }
    free(s.p);
}

static void respond_sb(int fd, const struct req *r, int status, struct sb *body,
                       struct outcome *out)
{
    respond(fd, r, status, body->p ? body->p : "", body->len, out);
    free(body->p);
    *body = (struct sb){0};
}

static void reset_connection(int fd, struct outcome *out)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    out->status = 0;
    out->close = true;
}

/* Splits a raw path into at most max segments (without the leading '/');
 * returns the count, or -1 when there are more. Segments point into copy. */
static int split_path(const char *path, char *copy, size_t copylen, char **segs, int max)
{
    const char *src = path[0] == '/' ? path + 1 : path;
    size_t len = strnlen(src, copylen - 1);
    memcpy(copy, src, len);
    copy[len] = '\0';
    int n = 0;
    char *save = NULL;
    for (char *s = strtok_r(copy, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
        if (n == max) return -1;
        segs[n++] = s;
    }
    return n;
}

static bool all_digits(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return false;
    return true;
}

static void route_echo(int fd, const struct req *r, struct outcome *out)
{
    struct sb b = {0};
    sb_str(&b, "{\"method\":");
    sb_jsonz(&b, r->method);
    sb_str(&b, ",\"path\":");
    sb_jsonz(&b, r->path);
    sb_str(&b, ",\"query\":");
    sb_jsonz(&b, r->query);
    sb_str(&b, ",\"headers\":{");
    /* repeated headers are joined with ", " */
    bool first = true;
    for (int i = 0; i < r->n_hdrs; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++)
            seen = strcmp(r->hdrs[j].name, r->hdrs[i].name) == 0;
        if (seen) continue;
        if (!first) sb_add(&b, ",", 1);
        first = false;
        sb_jsonz(&b, r->hdrs[i].name);
        sb_add(&b, ":", 1);
        struct sb v = {0};
        for (int j = i; j < r->n_hdrs; j++) {
            if (strcmp(r->hdrs[j].name, r->hdrs[i].name) != 0) continue;
            if (v.len) sb_add(&v, ", ", 2);
            sb_str(&v, r->hdrs[j].value);
        }
        sb_json(&b, v.p, v.len);
        free(v.p);
    }
    sb_str(&b, "},\"body\":");
    sb_json(&b, r->body ? r->body : "", r->body_len);
    sb_add(&b, "}", 1);
    respond_sb(fd, r, 200, &b, out);
}

static void route_drip(int fd, const struct req *r, int ms, struct outcome *out)
{
    static const char body[] = "{\"drip\":\"0123456789\"}";
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nServer: mock_backend\r\nContent-Type: "
                     "application/json\r\nContent-Length: %zu\r\nConnection: %s\r\n\r\n",
                     sizeof body - 1, r->keep_alive ? "keep-alive" : "close");
    out->status = 200;
    if (!send_all(fd, head, (size_t)n)) goto hung_up;
    for (size_t i = 0; i < sizeof body - 1; i++) {
        if (wait_or_hangup(fd, ms)) goto hung_up;
        if (i == sizeof body - 2) log_finish(out->seq, 200, false); /* see respond */
        if (!send_all(fd, body + i, 1)) goto hung_up;
    }
    return;
hung_up:
    out->hung_up = true;
    out->close = true;
}

/* Serves one data (non-control) request. */
static void route(int fd, const struct req *r, struct outcome *out)
{
    struct mode m = {0}; /* gcc -O3 cannot see mode_find fills it */
    if (mode_find(r->path, &m)) {
        if (m.delay_ms > 0 && wait_or_hangup(fd, m.delay_ms)) {
            out->hung_up = true;
            out->close = true;
            return;
        }
        if (m.action == ACT_RESET) {
            reset_connection(fd, out);
            return;
        }
        if (m.action == ACT_INVALID) {
            respond(fd, r, 200, "{not json", 9, out);
            return;
        }
        if (m.status) {
            static const char e[] = "{\"error\":\"mode\"}";
            {
                respond(fd, r, m.status, e, sizeof e - 1, out);
                return;
            }
        }
    }

    char copy[sizeof r->path];
    char *seg[8];
    int n = split_path(r->path, copy, sizeof copy, seg, 8);
    struct sb b = {0};

    if (n >= 1 && strcmp(seg[0], "echo") == 0) {
        route_echo(fd, r, out);
        return;
    }
    if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0) {
        static const char e[] = "{\"error\":\"method\"}";
        {
            respond(fd, r, 405, e, sizeof e - 1, out);
            return;
        }
    }
    if (n == 2 && strcmp(seg[0], "users") == 0) {
        sb_str(&b, "{\"id\":");
        sb_jsonz(&b, seg[1]);
        sb_str(&b, ",\"name\":");
        char name[sizeof r->path + 8];
        snprintf(name, sizeof name, "User %s", seg[1]);
        sb_jsonz(&b, name);
        sb_add(&b, "}", 1);
        {
            respond_sb(fd, r, 200, &b, out);
            return;
        }
    }
    if (n == 2 && strcmp(seg[0], "orders") == 0) {
        sb_str(&b, "{\"user_id\":");
        sb_jsonz(&b, seg[1]);
        sb_str(&b, ",\"orders\":[{\"id\":1,\"sku\":\"p-1\",\"total\":9.5},"
                   "{\"id\":2,\"sku\":\"p-2\",\"total\":20}]}");
        {
            respond_sb(fd, r, 200, &b, out);
            return;
        }
    }
    if (n == 2 && strcmp(seg[0], "products") == 0) {
        sb_str(&b, "{\"sku\":");
        sb_jsonz(&b, seg[1]);
        sb_str(&b, ",\"name\":");
        char name[sizeof r->path + 16];
        snprintf(name, sizeof name, "Product %s", seg[1]);
        sb_jsonz(&b, name);
        sb_str(&b, ",\"price\":12.50}");
        respond_sb(fd, r, 200, &b, out);
        return;
    }
    if (n == 1 && strcmp(seg[0], "json") == 0) {
        char body[8192], delay[32];
        if (!query_param(r->query, "body", body, sizeof body)) strcpy(body, "{}");
        if (query_param(r->query, "delay_ms", delay, sizeof delay) && wait_or_hangup(fd, atoi(delay))) {
            out->hung_up = true;
            out->close = true;
            return;
        }
        sb_str(&b, body);
        respond_sb(fd, r, 200, &b, out);
        return;
    }
    if (n == 2 && strcmp(seg[0], "recs") == 0) {
        sb_str(&b, "{\"items\":[\"a\",\"b\"],\"for\":");
        sb_jsonz(&b, seg[1]);
        sb_add(&b, "}", 1);
        {
            respond_sb(fd, r, 200, &b, out);
            return;
        }
    }
    if (n == 2 && strcmp(seg[0], "b") == 0 && all_digits(seg[1])) {
        sb_printf(&b, "{\"n\":%s}", seg[1]);
        {
            respond_sb(fd, r, 200, &b, out);
            return;
        }
    }
    if (n == 3 && strcmp(seg[0], "slow") == 0 && all_digits(seg[1])) {
        int ms = atoi(seg[1]);
        if (wait_or_hangup(fd, ms)) {
            out->hung_up = true;
            out->close = true;
            return;
        }
        sb_printf(&b, "{\"slow\":%d,\"x\":", ms);
        sb_jsonz(&b, seg[2]);
        sb_add(&b, "}", 1);
        {
            respond_sb(fd, r, 200, &b, out);
            return;
        }
    }
    if (n == 2 && strcmp(seg[0], "fail") == 0 && all_digits(seg[1])) {
        int code = atoi(seg[1]);
        if (code < 100 || code > 999) code = 500;
        static const char e[] = "{\"error\":\"fail\"}";
        {
            respond(fd, r, code, e, sizeof e - 1, out);
            return;
        }
    }
    if (n == 1 && strcmp(seg[0], "reset") == 0) {
        reset_connection(fd, out);
        return;
    }
    if (n == 1 && strcmp(seg[0], "invalid") == 0) {
        respond(fd, r, 200, "{not json", 9, out);
        return;
    }
    if (n == 2 && strcmp(seg[0], "huge") == 0 && all_digits(seg[1])) {
        size_t want = strtoull(seg[1], NULL, 10);
        if (want > 256u << 20) want = 256u << 20;
        size_t pad = want > 11 ? want - 11 : 1; /* {"data":"<pad>"} */
        sb_reserve(&b, pad + 16);
        sb_str(&b, "{\"data\":\"");
        memset(b.p + b.len, 'x', pad);
        b.len += pad;
        sb_str(&b, "\"}");
        {
            respond_sb(fd, r, 200, &b, out);
            return;
        }
    }
    if (n == 2 && strcmp(seg[0], "drip") == 0 && all_digits(seg[1])) {
        route_drip(fd, r, atoi(seg[1]), out);
        return;
    }
    if (n == 1 && strcmp(seg[0], "empty") == 0) {
        respond(fd, r, 204, "", 0, out);
        return;
    }

    static const char nf[] = "{\"error\":\"not found\"}";
    respond(fd, r, 404, nf, sizeof nf - 1, out);
}

/* Serves a /_ control request (not logged). */
static void control(int fd, const struct req *r, struct outcome *out)
{
    struct sb b = {0};
    bool post = strcmp(r->method, "POST") == 0;
    if (strcmp(r->path, "/_log") == 0 && !post) {
        char prefix[1024];
        bool has = query_param(r->query, "prefix", prefix, sizeof prefix);
        log_render(&b, has ? prefix : NULL);
        {
            respond_sb(fd, r, 200, &b, out);
            return;
        }
    }
    if (strcmp(r->path, "/_healthz") == 0 && !post) {
        struct mode m = {0};
        if (mode_find(r->path, &m) && m.status) {
            respond(fd, r, m.status, "{\"ok\":false}", 12, out);
            return;
        }
        respond(fd, r, 200, "{\"ok\":true}", 11, out);
        return;
    }
    if (strcmp(r->path, "/_log/clear") == 0 && post) {
        log_clear();
        {
            respond(fd, r, 200, "{\"ok\":true}", 11, out);
            return;
        }
    }
    if (strcmp(r->path, "/_mode") == 0 && post) {
        char prefix[256] = "", val[64];
        query_param(r->query, "prefix", prefix, sizeof prefix);
        struct mode m = {0};
        bool clear = query_param(r->query, "clear", val, sizeof val) && strcmp(val, "0") != 0;
        if (query_param(r->query, "status", val, sizeof val)) m.status = atoi(val);
        if (query_param(r->query, "delay_ms", val, sizeof val)) m.delay_ms = atoi(val);
        if (query_param(r->query, "times", val, sizeof val)) m.times = atoi(val);
        if (query_param(r->query, "action", val, sizeof val)) {
            if (strcmp(val, "reset") == 0)
                m.action = ACT_RESET;
            else if (strcmp(val, "invalid") == 0)
                m.action = ACT_INVALID;
            else {
                respond(fd, r, 400, "{\"error\":\"action\"}", 18, out);
                return;
            }
        }
        if (!clear && !prefix[0]) {
            respond(fd, r, 400, "{\"error\":\"prefix\"}", 18, out);
            return;
        }
        if (!mode_set(prefix, clear, &m)) {
            respond(fd, r, 503, "{\"error\":\"full\"}", 16, out);
            return;
        }
        {
            respond(fd, r, 200, "{\"ok\":true}", 11, out);
            return;
        }
    }
    respond(fd, r, 404, "{\"error\":\"not found\"}", 21, out);
}

static char *render_head(const struct req *r)
{
    struct sb s = {0};
    sb_str(&s, "\"method\":");
    sb_jsonz(&s, r->method);
    sb_str(&s, ",\"path\":");
    sb_jsonz(&s, r->path);
    sb_str(&s, ",\"query\":");
    sb_jsonz(&s, r->query);
    sb_str(&s, ",\"headers\":{");
    for (int i = 0; i < r->n_hdrs; i++) {
        if (i) sb_add(&s, ",", 1);
        sb_jsonz(&s, r->hdrs[i].name);
        sb_add(&s, ":", 1);
        sb_jsonz(&s, r->hdrs[i].value);
    }
    sb_add(&s, "}", 1);
    return s.p;
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    for (;;) {
        struct req r;
        int rc = read_request(c, &r);
        if (rc <= 0) {
            req_free(&r);
            break;
        }
        struct outcome out = {0};
        if (strncmp(r.path, "/_", 2) == 0) {
            control(c->fd, &r, &out);
        } else {
            out.seq = log_start(render_head(&r));
            route(c->fd, &r, &out);
            log_finish(out.seq, out.status, out.hung_up);
        }
        bool keep = r.keep_alive && !out.close;
        req_free(&r);
        if (!keep) break;
    }
    close(c->fd);
    free(c->buf);
    free(c);
    return NULL;
}

/* ---- main ---- */

static int g_sig_pipe[2] = {-1, -1};
static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
    int saved = errno;
    ssize_t rc = write(g_sig_pipe[1], "x", 1);
    (void)rc;
    errno = saved;
}

static int usage(void)
{
    fprintf(stderr, "usage: mock_backend [--listen ADDR] [--port N]   (ADDR: IPv4, default "
                    "127.0.0.1; N 0 = ephemeral; prints \"port N\")\n");
    return 2;
}

int main(int argc, char **argv)
{
    int port = 9001;
    const char *host = "127.0.0.1";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            host = argv[++i];
        else
            return usage();
    }
    g_start_ms = mono_ms();
    signal(SIGPIPE, SIG_IGN);
    if (pipe(g_sig_pipe) != 0) return perror("pipe"), 1;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) return usage();
    if (bind(lfd, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(lfd, 1024) != 0) {
        fprintf(stderr, "mock_backend: cannot listen on %s:%d: %s\n", host, port, strerror(errno));
        return 1;
    }
    socklen_t sl = sizeof sin;
    getsockname(lfd, (struct sockaddr *)&sin, &sl);
    printf("port %d\n", ntohs(sin.sin_port));
    fflush(stdout);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 1 << 20);
    for (;;) {
        struct pollfd p[2] = {{.fd = lfd, .events = POLLIN},
                              {.fd = g_sig_pipe[0], .events = POLLIN}};
        /* A bounded wait: under TSan a signal can be held back until an
         * intercepted call returns, so the flag is checked each second too. */
        int n = poll(p, 2, 1000);
        if (g_stop) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (p[1].revents) break;
        if (!(p[0].revents & POLLIN)) continue;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) abort();
        c->fd = fd;
        c->cap = 16384; /* never NULL: memmem on a NULL buffer is undefined */
        c->buf = malloc(c->cap);
        if (!c->buf) abort();
        pthread_t t;
        if (pthread_create(&t, &attr, conn_main, c) != 0) {
            close(fd);
            free(c);
        }
    }
    close(lfd);
    /* Connection threads are detached and may be mid-request; exiting the
     * process ends them, which is all a test tool needs. */
    return 0;
}
