/*
 * native: one HTTP/1.1 exchange of the native transport (native.h) on a
 * connection from native_pool.c: the request writer, the read loop feeding
 * gateway/h1resp, the stale retry, and native_call.
 *
 * Reads: the request is written with one writev, then the call parks until
 * IN; a read shorter than the buffer drained the socket, so the call parks
 * again instead of reading once more for an EAGAIN (edge-triggered epoll
 * reports every new arrival). Reads go into one per-worker buffer: feed
 * consumes all of it (h1resp keeps a cut line itself) before the call can
 * park again, so no call owns a buffer. The parser lives in the connection.
 *
 * Invariants: a call holds at most one connection, and gives it back (idle
 * or closed) before native_call returns; only a reused connection that
 * closed before any byte of an answer is retried, once, on a fresh one, and
 * only for an idempotent method.
 */
#include "gateway/native.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "gateway/cachectl.h"
#include "gateway/h1resp.h"
#include "gateway/native_pool.h"

#include "core/container_of.h"

/* iovecs of one request: line (3) + Host (3) + 2 per header + CL + body. */
#define MAX_IOV  (8 + 2 * UPSTREAM_MAX_HEADERS)
#define MAX_HDRS UPSTREAM_MAX_HEADERS

static void on_ctx_done(ctx_t *ctx, ctx_hook_t *h)
{
    (void)ctx;
    struct call *k = container_of(h, struct call, on_done);
    k->aborted = true;
    loop_wake(k->co);
}

/* ---- the request ---- */

/* RFC 9110 tchar: what a header name is made of. */
static const bool TCHAR[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1,         ['&'] = 1,         ['\''] = 1,
    ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1,         ['^'] = 1,         ['_'] = 1,
    ['`'] = 1, ['|'] = 1, ['~'] = 1, ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
};

enum hdr_kind { HDR_BAD, HDR_PLAIN, HDR_HOST, HDR_FRAMING };

/* One pass over "Name: value": a token name, and no CR or LF anywhere (a
 * client must not smuggle a header line into a backend request). *len
 * receives the line's length. Host replaces the transport's own; framing
 * headers (Content-Length, Transfer-Encoding, Connection, Expect) are the
 * transport's alone and dropped. */
static enum hdr_kind header_kind(const char *h, size_t *len)
{
    const char *p = h;
    while (TCHAR[(unsigned char)*p])
        p++;
    size_t name = (size_t)(p - h);
    if (!name || *p != ':') return HDR_BAD;
    for (p++; *p; p++)
        if (*p == '\r' || *p == '\n') return HDR_BAD;
    *len = (size_t)(p - h);
    switch (name) {
    case 4:
        return strncasecmp(h, "Host", 4) == 0 ? HDR_HOST : HDR_PLAIN;
    case 6:
        return strncasecmp(h, "Expect", 6) == 0 ? HDR_FRAMING : HDR_PLAIN;
    case 10:
        return strncasecmp(h, "Connection", 10) == 0 ? HDR_FRAMING : HDR_PLAIN;
    case 14:
        return strncasecmp(h, "Content-Length", 14) == 0 ? HDR_FRAMING : HDR_PLAIN;
    case 17:
        return strncasecmp(h, "Transfer-Encoding", 17) == 0 ? HDR_FRAMING : HDR_PLAIN;
    default:
        return HDR_PLAIN;
    }
}

/* The request target's length: printable ASCII from '/', no spaces; 0 when
 * not fit to be sent. */
static size_t target_len(const char *s)
{
    if (*s != '/') return 0;
    const char *p = s;
    for (; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) return 0;
    return (size_t)(p - s);
}

#define IOV(p, l) ((struct iovec){.iov_base = (void *)(p), .iov_len = (l)})

/* Fills iov with the whole request; returns the count, or 0 with *why when
 * a header or the target is not fit to be sent. cl holds the Content-Length
 * line. */
static int build_request(const struct upstream_req *req, const struct origin *o, char cl[48],
                         struct iovec *iov, const char **why)
{
    size_t plen = target_len(req->path);
    if (!plen) {
        *why = "bad URL";
        return 0;
    }
    if (req->n_headers > MAX_HDRS) {
        *why = "too many headers";
        return 0;
    }
    uint8_t kind[MAX_HDRS];
    size_t len[MAX_HDRS];
    bool own_host = true;
    for (size_t i = 0; i < req->n_headers; i++) {
        kind[i] = (uint8_t)header_kind(req->headers[i], &len[i]);
        if (kind[i] == HDR_BAD) {
            *why = "invalid header";
            return 0;
        }
        if (kind[i] == HDR_HOST) own_host = false;
    }
    int n = 0;
    iov[n++] = IOV(req->method, strlen(req->method));
    iov[n++] = IOV(" ", 1);
    iov[n++] = IOV(req->path, plen);
    if (own_host) {
        iov[n++] = IOV(" HTTP/1.1\r\nHost: ", 17);
        iov[n++] = IOV(o->authority, o->authority_len);
        iov[n++] = IOV("\r\n", 2);
    } else {
        iov[n++] = IOV(" HTTP/1.1\r\n", 11);
    }
    for (size_t i = 0; i < req->n_headers; i++) {
        if (kind[i] == HDR_FRAMING) continue;
        iov[n++] = IOV(req->headers[i], len[i]);
        iov[n++] = IOV("\r\n", 2);
    }
    if (req->body) {
        int l = snprintf(cl, 48, "Content-Length: %zu\r\n\r\n", req->body_len);
        iov[n++] = IOV(cl, (size_t)l);
        if (req->body_len) iov[n++] = IOV(req->body, req->body_len);
    } else {
        iov[n++] = IOV("\r\n", 2);
    }
    return n;
}

/* ---- one exchange on one connection ---- */

enum xres { X_DONE, X_STALE, X_ERROR, X_TOO_BIG, X_ABORT };

static int on_body(void *arg, const char *data, size_t len)
{
    struct call *k = arg;
    if (k->body->len + len > k->max_bytes) {
        k->too_big = true;
        return 1;
    }
    return buf_append(k->body, data, len) != 0;
}

/* Drops the first w bytes of iov[0..*niov). */
static struct iovec *iov_advance(struct iovec *iov, int *niov, size_t w)
{
    while (*niov > 0 && w >= iov->iov_len) {
        w -= iov->iov_len;
        iov++;
        (*niov)--;
    }
    if (*niov > 0) {
        iov->iov_base = (char *)iov->iov_base + w;
        iov->iov_len -= w;
    }
    return iov;
}

/* The first write: a request that fits the worker's read buffer is copied
 * there and written as one segment (the kernel then imports one segment
 * instead of a dozen, a measurable part of writev's cost). The buffer is
 * shared by the worker's calls, so it is used only up to the first park:
 * what this write leaves is sent from iov. Returns the bytes written, or
 * -1 with errno. */
static ssize_t write_flat(struct native *n, int fd, const struct iovec *iov, int niov)
{
    size_t total = 0;
    for (int i = 0; i < niov; i++)
        total += iov[i].iov_len;
    if (total > READ_BUF) return writev(fd, iov, niov > IOV_MAX ? IOV_MAX : niov);
    char *p = n->rbuf;
    for (int i = 0; i < niov; i++) {
        memcpy(p, iov[i].iov_base, iov[i].iov_len);
        p += iov[i].iov_len;
    }
    return write(fd, n->rbuf, total);
}

/* Writes all of iov (modified). */
static enum xres send_all(struct call *k, struct conn *c, struct iovec *iov, int niov,
                          const char **why)
{
    bool first = true;
    while (niov > 0) {
        c->revents &= ~(uint32_t)EPOLLOUT;
        ssize_t w = first ? write_flat(k->n, c->io.fd, iov, niov)
                          : writev(c->io.fd, iov, niov > IOV_MAX ? IOV_MAX : niov);
        first = false;
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                if (wait_conn(k, c, EV_ANY_OUT, 0)) return X_ABORT;
                continue;
            }
            *why = "send failed";
            return c->reused ? X_STALE : X_ERROR;
        }
        iov = iov_advance(iov, &niov, (size_t)w);
    }
    return X_DONE;
}

static enum xres on_eof(struct conn *c, const char **why, bool *keep)
{
    struct h1resp *p = &c->parser;
    if (p->bytes_seen == 0 && c->reused) return X_STALE;
    *keep = false;
    if (h1resp_eof(p) == H1_DONE) return X_DONE;
    *why = p->bytes_seen ? p->error : "empty reply from backend";
    return X_ERROR;
}

/* Every field of the final response: Cache-Control and expose_headers. */
static int on_header(void *arg, const char *name, size_t name_len, const char *value,
                     size_t value_len)
{
    struct call *k = arg;
    cachectl_header(k->cc, name, name_len, value, value_len);
    expose_header(k->exp, name, name_len, value, value_len);
    return 0;
}

static enum xres exchange(struct call *k, struct conn *c, struct iovec *iov, int niov, bool no_body,
                          const char **why, bool *keep)
{
    struct native *n = k->n;
    struct h1resp *p = &c->parser;
    c->revents &= ~(uint32_t)EPOLLIN;
    h1resp_init(p, no_body, on_body, k);
    cachectl_init(k->cc); /* a stale retry starts over */
    expose_reset(k->exp);
    h1resp_on_header(p, on_header, k);
    enum xres x = send_all(k, c, iov, niov, why);
    if (x != X_DONE) return x;
    /* The answer cannot be there yet: wait for it rather than read EAGAIN. */
    if (wait_conn(k, c, EV_ANY_IN, 0)) return X_ABORT;
    for (;;) {
        c->revents &= ~(uint32_t)EPOLLIN;
        ssize_t r = recv(c->io.fd, n->rbuf, READ_BUF, 0);
        if (r > 0) {
            size_t used = 0;
            enum h1_status st = h1resp_feed(p, n->rbuf, (size_t)r, &used);
            if (st == H1_DONE) {
                *keep = p->keep_alive && used == (size_t)r &&
                        !(c->revents & (EPOLLRDHUP | EPOLLHUP | EPOLLERR));
                return X_DONE;
            }
            if (st == H1_ERROR) {
                if (k->too_big) return X_TOO_BIG;
                *why = p->error ? p->error : "malformed response";
                return X_ERROR;
            }
            if (r == READ_BUF) continue; /* maybe more queued */
        } else if (r == 0) {
            return on_eof(c, why, keep);
        } else if (errno == EINTR) {
            continue;
        } else if (errno != EAGAIN) {
            if (errno == ECONNRESET && p->bytes_seen == 0 && c->reused) return X_STALE;
            *why = "receive failed";
            return X_ERROR;
        }
        if (wait_conn(k, c, EV_ANY_IN, 0)) return X_ABORT;
    }
}

/* ---- the call ---- */

static bool retryable(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 || strcmp(m, "PUT") == 0 ||
           strcmp(m, "DELETE") == 0 || strcmp(m, "OPTIONS") == 0;
}

static enum upstream_result ctx_result(const ctx_t *ctx)
{
    return ctx_err(ctx) == CTX_DEADLINE_EXCEEDED ? UP_TIMEOUT : UP_CANCELED;
}

static void fail(struct upstream_resp *resp, enum upstream_result r, const char *why)
{
    resp->result = r;
    resp->error = why;
}

/* The exchange with retries, once the call is set up. */
static void run_call(struct call *k, ctx_t *ctx, const struct upstream_req *req, struct origin *o,
                     const struct upstream_conf *conf, struct upstream_resp *resp)
{
    struct native *n = k->n;
    struct iovec iov[MAX_IOV];
    char cl[48];
    const char *why = NULL;
    if (!build_request(req, o, cl, iov, &why)) {
        fail(resp, UP_ERROR, why);
        return;
    }
    bool no_body = strcmp(req->method, "HEAD") == 0;
    bool fresh = false;
    for (;;) {
        bool timed_out = false;
        struct conn *c = native_conn_get(k, o, conf, fresh, ctx_deadline(ctx), &why, &timed_out);
        if (!c) {
            if (k->aborted)
                fail(resp, ctx_result(ctx), NULL);
            else
                fail(resp, timed_out ? UP_TIMEOUT : UP_ERROR, why);
            return;
        }
        int niov = build_request(req, o, cl, iov, &why); /* send_all consumes iov */
        bool keep = false;
        switch (exchange(k, c, iov, niov, no_body, &why, &keep)) {
        case X_DONE:
            resp->result = UP_OK;
            resp->status = c->parser.status;
            if (keep)
                native_conn_release(n, c, conf);
            else
                native_conn_close(n, c);
            return;
        case X_STALE:
            native_conn_close(n, c);
            if (!fresh && retryable(req->method)) {
                count(n, &n->c_stale, METRICS_UP_STALE_RETRY);
                fresh = true;
                continue;
            }
            /* Only a reused connection is stale, and a retry is a fresh one. */
            fail(resp, UP_ERROR,
                 "connection closed before the answer (a non-idempotent request is not re-sent)");
            return;
        case X_ABORT:
            native_conn_close(n, c);
            fail(resp, ctx_result(ctx), NULL);
            return;
        case X_TOO_BIG:
            native_conn_close(n, c);
            fail(resp, UP_TOO_BIG, "response too large");
            return;
        case X_ERROR:
            native_conn_close(n, c);
            fail(resp, UP_ERROR, why);
            return;
        }
    }
}

void native_call(struct native *n, ctx_t *ctx, const struct upstream_req *req,
                 struct upstream_resp *resp)
{
    resp->status = 0;
    resp->error = NULL;
    if (ctx_done(ctx)) {
        resp->result = ctx_result(ctx);
        return;
    }
    const struct upstream_conf *conf = req->conf ? req->conf : &DEFAULT_CONF;
    struct origin *o = origin_get(n, req->origin);
    if (!o) {
        fail(resp, UP_ERROR, "bad URL");
        return;
    }
    struct call k = {.n = n, .co = coro_self(), .body = resp->body, .max_bytes = req->max_bytes,
                     .cc = &resp->cc, .exp = resp->exp};
    if (!ctx_after_func(ctx, &k.on_done, on_ctx_done)) {
        resp->result = ctx_result(ctx);
        return;
    }
    n->inflight++;
    run_call(&k, ctx, req, o, conf, resp);
    n->inflight--;
    ctx_hook_remove(ctx, &k.on_done);
}

