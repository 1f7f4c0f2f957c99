/*
 * upstream_curl: one libcurl transfer of the curl transport (upstream.h):
 * the pooled easy handles and their URL handles, the callbacks of a
 * transfer (body, header lines, re-send check), the framing checks on the
 * response header block, and upstream_curl_call, which runs one transfer
 * on the worker's multi handle (upstream.c) and parks until it ends.
 *
 * Invariants: a pooled easy handle carries no per-call option between
 * calls (upstream_curl_call clears each one it set: private data, header
 * list, body, method); a struct call lives on its coroutine's stack, and
 * its transfer is removed from the multi handle before the call returns.
 * Everything runs on the worker's thread.
 */
#include "gateway/upstream_curl.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/container_of.h"

/* Easy handles kept per worker: enough for the transfers of a busy worker. */
#define EASY_POOL_MAX 1024
/* curl's receive buffer per easy handle. */
#define RECV_BUFFER 4096
/* Most header lines one call sends (upstream.h). */
#define MAX_HEADERS UPSTREAM_MAX_HEADERS
/* A backend's response header block (status line, fields, and trailers)
 * beyond this is refused: JSON services send a few hundred bytes. */
#define MAX_RESPONSE_HEADER_BYTES (64 * 1024)

/* A pooled easy handle and its URL handle. The URL is given to curl as a
 * prebuilt CURLU whose origin is set only when it changes and whose path and
 * query are set per call (docs/perf.md K6: cheaper than CURLOPT_URL). */
struct easy {
    CURL *e;
    CURLU *u;
    char origin[UPSTREAM_ORIGIN_MAX + 1];
};

/* What on_header has seen of the current response's header block. */
struct framing {
    size_t bytes;         /* header block so far (with its status line) */
    curl_off_t length;    /* the Content-Length value; -1: none yet */
    bool transfer_coding; /* a Transfer-Encoding line was seen */
};

/* One transfer, on the calling coroutine's stack. */
struct call {
    struct upstream *up;
    CURL *easy;
    coro_t *co;
    struct upstream_resp *resp;
    size_t max_bytes;
    CURLcode code;
    bool done;
    bool aborted;
    bool too_big;
    bool idempotent;     /* curl may re-send it on a fresh connection */
    unsigned attempts;   /* requests curl was about to send (on_prereq) */
    const char *refused; /* why on_header or on_prereq ended the exchange */
    struct framing fr;
    ctx_hook_t on_done;
};

static size_t on_write(char *p, size_t size, size_t n, void *userdata)
{
    struct call *c = userdata;
    size_t len = size * n;
    buf_t *b = c->resp->body;
    if (b->len + len > c->max_bytes) {
        c->too_big = true;
        return 0; /* CURLE_WRITE_ERROR ends the transfer */
    }
    return buf_append(b, p, len) == 0 ? len : 0;
}

/* RFC 9110 §9.2.2: the methods a client may re-send after a connection
 * failure (TRACE too, which no backend is configured with). */
static bool method_idempotent(const char *m)
{
    return !strcmp(m, "GET") || !strcmp(m, "HEAD") || !strcmp(m, "PUT") || !strcmp(m, "DELETE") ||
           !strcmp(m, "OPTIONS");
}

/* Called by curl each time it is about to send the request on a connection.
 * A second time for one call means curl is retrying it: the request went out
 * on a reused connection that closed before any byte of an answer came back
 * (curl's Curl_retry_request, up to 5 times). The backend may have acted on
 * it, so a non-idempotent request is failed here instead (RFC 9110 §9.2.2);
 * curl ends the transfer with CURLE_ABORTED_BY_CALLBACK. */
static int on_prereq(void *clientp, char *remote_ip, char *local_ip, int remote_port,
                     int local_port)
{
    (void)remote_ip;
    (void)local_ip;
    (void)remote_port;
    (void)local_port;
    struct call *c = clientp;
    if (c->attempts++ == 0 || c->idempotent) return CURL_PREREQFUNC_OK;
    c->refused = "connection closed before the answer (a non-idempotent request is not re-sent)";
    return CURL_PREREQFUNC_ABORT;
}

/* Case-insensitive: the header line p[0..len) is field name: (no space
 * before the colon). */
static bool field_is(const char *p, size_t len, const char *name)
{
    size_t n = strlen(name);
    return len > n && p[n] == ':' && strncasecmp(p, name, n) == 0;
}

/* Parses a Content-Length value (after the colon, up to CRLF): 1*DIGIT, or
 * a list of identical ones ("7, 7", which RFC 9110 §8.6 lets a recipient
 * accept). -1 when malformed or too large. */
static curl_off_t parse_length(const char *p, const char *end)
{
    curl_off_t value = -1;
    for (;;) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        curl_off_t v = 0;
        const char *d = p;
        while (p < end && *p >= '0' && *p <= '9' && p - d < 18)
            v = v * 10 + (*p++ - '0');
        if (p == d || (value >= 0 && v != value)) return -1;
        value = v;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p == end) return value;
        if (*p++ != ',') return -1;
    }
}

/* The Transfer-Encoding value (after the colon, up to CRLF) is exactly
 * "chunked", with optional whitespace around it. */
static bool is_chunked(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    return end - p == 7 && strncasecmp(p, "chunked", 7) == 0;
}

/* Checks one line of a response header block for what would let the
 * gateway and the backend disagree on where the answer ends (RFC 9112
 * §6.3): Content-Length with Transfer-Encoding, Content-Length values that
 * differ or are not numbers, a transfer coding other than chunked (none is
 * asked for), whitespace before a colon; and the block's size. NULL when
 * the line is fine, else why not. */
static const char *check_header_line(struct framing *fr, const char *p, size_t len)
{
    bool status_line = len >= 5 && memcmp(p, "HTTP/", 5) == 0;
    if (status_line) /* a new block: the answer after a 1xx */
        *fr = (struct framing){.length = -1};
    fr->bytes += len;
    if (fr->bytes > MAX_RESPONSE_HEADER_BYTES) return "response header block over 64 KiB";
    if (status_line) return NULL;
    const char *end = p + len;
    while (end > p && (end[-1] == '\n' || end[-1] == '\r'))
        end--;
    const char *colon = memchr(p, ':', (size_t)(end - p));
    if (colon && colon > p && (colon[-1] == ' ' || colon[-1] == '\t'))
        return "malformed response header (whitespace before a colon)";
    if (field_is(p, len, "Content-Length")) {
        curl_off_t v = parse_length(colon + 1, end);
        if (v < 0) return "malformed response: invalid Content-Length";
        if (fr->length >= 0 && v != fr->length)
            return "malformed response: two different Content-Length values";
        fr->length = v;
    } else if (field_is(p, len, "Transfer-Encoding")) {
        if (fr->transfer_coding || !is_chunked(colon + 1, end))
            return "malformed response: unsupported Transfer-Encoding";
        fr->transfer_coding = true;
    }
    if (fr->transfer_coding && fr->length >= 0)
        return "malformed response: Content-Length with Transfer-Encoding";
    return NULL;
}

/* Header lines of the answer (and of any 1xx before it, and trailers). */
static size_t on_header(char *p, size_t size, size_t n, void *userdata)
{
    struct call *c = userdata;
    size_t len = size * n;
    cachectl_line(&c->resp->cc, p, len);
    expose_line(c->resp->exp, p, len);
    const char *why = check_header_line(&c->fr, p, len);
    if (!why) return len;
    c->refused = why;
    return 0; /* CURLE_WRITE_ERROR ends the transfer */
}

static void *easy_new(void *ud)
{
    struct upstream *up = ud;
    struct easy *h = calloc(1, sizeof *h);
    CURL *e = h ? curl_easy_init() : NULL;
    CURLU *u = e ? curl_url() : NULL;
    if (!u) {
        if (e) curl_easy_cleanup(e);
        free(h);
        return NULL;
    }
    h->e = e;
    h->u = u;
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, upstream_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, up);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, upstream_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, up);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L); /* urlbuild already encoded it */
    /* Each handle keeps a receive buffer of this size for its life; JSON
     * answers are small, and 16 KiB (the default) x hundreds of pooled
     * handles is most of the gateway's memory. */
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)RECV_BUFFER);
    return h;
}

static void easy_free(void *obj, void *ud)
{
    (void)ud;
    struct easy *h = obj;
    curl_easy_cleanup(h->e);
    curl_url_cleanup(h->u);
    free(h);
}

/* Points h's URL handle at origin + path; false when curl rejects it. */
static bool easy_set_url(struct easy *h, const char *origin, const char *path)
{
    if (strcmp(h->origin, origin) != 0) {
        size_t n = strlen(origin);
        if (n >= sizeof h->origin || curl_url_set(h->u, CURLUPART_URL, origin, 0) != CURLUE_OK)
            return false;
        memcpy(h->origin, origin, n + 1);
    }
    const char *q = strchr(path, '?');
    char pbuf[2048];
    const char *p = path;
    if (q) {
        size_t n = (size_t)(q - path);
        if (n >= sizeof pbuf) return false;
        memcpy(pbuf, path, n);
        pbuf[n] = '\0';
        p = pbuf;
    }
    return curl_url_set(h->u, CURLUPART_PATH, p, 0) == CURLUE_OK &&
           curl_url_set(h->u, CURLUPART_QUERY, q ? q + 1 : NULL, 0) == CURLUE_OK;
}

static void on_ctx_done(ctx_t *ctx, ctx_hook_t *h)
{
    (void)ctx;
    struct call *c = container_of(h, struct call, on_done);
    if (c->done) return;
    /* Removing an unfinished transfer closes its connection at once: the
     * backend sees the abort, and nothing waits for its answer. */
    curl_multi_remove_handle(c->up->multi, c->easy);
    c->up->inflight--;
    c->done = true;
    c->aborted = true;
    loop_wake(c->co);
}

static enum upstream_result ctx_result(const ctx_t *ctx)
{
    return ctx_err(ctx) == CTX_DEADLINE_EXCEEDED ? UP_TIMEOUT : UP_CANCELED;
}

pool_t *upstream_easy_pool_new(struct upstream *up)
{
    struct pool_ops ops = {.new_fn = easy_new, .free_fn = easy_free, .ud = up};
    return pool_new("curl_easy", sizeof(struct easy), EASY_POOL_MAX, &ops);
}

void upstream_curl_done(struct call *c, CURLcode code)
{
    c->code = code;
    c->done = true;
    loop_wake(c->co);
}

/* Sets the per-call options of e: c's callbacks data, the header list
 * (built in hdr, which curl only reads during the transfer), the body and
 * the method. easy_clear undoes each. */
static void easy_prepare(CURL *e, CURLU *u, const struct upstream_req *req, struct call *c,
                         struct curl_slist hdr[MAX_HEADERS + 1])
{
    size_t nh = 0;
    for (size_t i = 0; i < req->n_headers && nh < MAX_HEADERS; i++)
        hdr[nh++].data = (char *)req->headers[i];
    if (req->body) hdr[nh++].data = (char *)"Expect:";
    for (size_t i = 0; i < nh; i++)
        hdr[i].next = i + 1 < nh ? &hdr[i + 1] : NULL;

    curl_easy_setopt(e, CURLOPT_CURLU, u);
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, c);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, nh ? hdr : NULL);
    if (req->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    /* A HEAD answer has no body whatever its Content-Length says: only
     * NOBODY tells curl so (a custom "HEAD" would wait for the body). */
    if (strcmp(req->method, "HEAD") == 0)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else if (strcmp(req->method, "GET") != 0)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
}

/* Back to the state easy_new left: the pooled handle keeps nothing of req. */
static void easy_clear(CURL *e, const struct upstream_req *req)
{
    curl_easy_setopt(e, CURLOPT_PRIVATE, NULL);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, NULL);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, NULL);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    if (req->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    }
    if (strcmp(req->method, "HEAD") == 0)
        curl_easy_setopt(e, CURLOPT_NOBODY, 0L); /* back to GET */
    else if (strcmp(req->method, "GET") != 0)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
}

/* Adds c's transfer to the multi handle and parks until it ends or ctx is
 * done. 0, or -1 with resp filled in (the transfer never started). */
static int transfer(struct upstream *up, ctx_t *ctx, struct call *c, struct upstream_resp *resp)
{
    if (!ctx_after_func(ctx, &c->on_done, on_ctx_done)) {
        resp->result = ctx_result(ctx);
        return -1;
    }
    if (curl_multi_add_handle(up->multi, c->easy) != CURLM_OK) {
        ctx_hook_remove(ctx, &c->on_done);
        resp->result = UP_ERROR;
        resp->error = "cannot start transfer";
        return -1;
    }
    up->inflight++;
    while (!c->done)
        loop_park(0);
    ctx_hook_remove(ctx, &c->on_done);
    return 0;
}

/* What became of a transfer that ran. */
static void call_result(const struct call *c, const ctx_t *ctx, struct upstream_resp *resp)
{
    if (c->aborted) {
        resp->result = ctx_result(ctx);
    } else if (c->code == CURLE_OK) {
        resp->result = UP_OK;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &resp->status);
    } else if (c->too_big) {
        resp->result = UP_TOO_BIG;
        resp->error = "response too large";
    } else if (c->refused) {
        resp->result = UP_ERROR;
        resp->error = c->refused;
    } else {
        resp->result = UP_ERROR;
        resp->error = curl_easy_strerror(c->code);
    }
}

/* The libcurl exchange. Kept out of line: its frame (the header list on
 * the stack) would otherwise sit on every native call's coroutine stack
 * (upstream_call calls it; it is in another file, but an LTO build could
 * still inline it). */
__attribute__((noinline)) void upstream_curl_call(struct upstream *up, ctx_t *ctx,
                                                  const struct upstream_req *req,
                                                  struct upstream_resp *resp)
{
    resp->status = 0;
    resp->error = NULL;
    if (ctx_done(ctx)) {
        resp->result = ctx_result(ctx);
        return;
    }
    struct easy *h = pool_get(up->easy_pool);
    if (!h) {
        resp->result = UP_ERROR;
        resp->error = "out of memory";
        return;
    }
    if (!easy_set_url(h, req->origin, req->path)) {
        h->origin[0] = '\0';
        pool_put(up->easy_pool, h);
        resp->result = UP_ERROR;
        resp->error = "bad URL";
        return;
    }
    struct call c = {.up = up,
                     .easy = h->e,
                     .co = coro_self(),
                     .resp = resp,
                     .max_bytes = req->max_bytes,
                     .idempotent = method_idempotent(req->method),
                     .fr = {.length = -1}};
    struct curl_slist hdr[MAX_HEADERS + 1];
    easy_prepare(h->e, h->u, req, &c, hdr);
    if (transfer(up, ctx, &c, resp) == 0) call_result(&c, ctx, resp);
    easy_clear(h->e, req);
    pool_put(up->easy_pool, h);
}
