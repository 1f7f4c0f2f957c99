/*
 * Fuzz target: the HTTP/1.1 response parser (gateway/h1resp.h).
 *
 * Input: a flags byte, then the bytes a backend sends. flags & 1: the request
 * was HEAD; flags & 2: the peer closes after the last byte (h1resp_eof);
 * flags >> 2 seeds the cut points of the second run.
 *
 * Oracles beyond the sanitizers:
 *   - *used <= len, and == len on H1_MORE; a finished parser consumes nothing;
 *   - the body never exceeds Content-Length, equals it at DONE for a
 *     Content-Length body, and is empty for HEAD/204/304;
 *   - Content-Length and chunked are never both accepted, a read-to-close
 *     body is never keep-alive, an accepted status is 200..599;
 *   - every field the header callback gets has a token name and a value
 *     without CR, LF, NUL or edge whitespace (nothing can be injected
 *     downstream through it);
 *   - the outcome (status, error text, fields, body bytes, bytes consumed)
 *     is the same fed whole, in random pieces, and (short inputs) one byte at
 *     a time.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/h1resp.h"

struct run {
    enum h1_status st;
    int status;
    bool keep_alive, headers_done, chunked;
    int64_t content_length;
    const char *error;
    size_t consumed;
    char *body; /* capacity: the input's size (a body is never longer) */
    size_t body_len, cap;
    unsigned fields;
};

static int on_body(void *arg, const char *data, size_t len)
{
    struct run *r = arg;
    if (len == 0 || r->body_len + len > r->cap) abort();
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    return 0;
}

static bool tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int on_header(void *arg, const char *name, size_t nl, const char *value, size_t vl)
{
    struct run *r = arg;
    if (nl == 0) abort();
    for (size_t i = 0; i < nl; i++)
        if (!tchar((unsigned char)name[i])) abort();
    for (size_t i = 0; i < vl; i++)
        if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0') abort();
    if (vl &&
        (value[0] == ' ' || value[0] == '\t' || value[vl - 1] == ' ' || value[vl - 1] == '\t'))
        abort();
    r->fields++;
    return 0;
}

/* Feeds data[0..len) in pieces ending at cuts[0..ncuts) then len. */
static void run(struct run *r, struct h1resp *p, const char *data, size_t len, bool head, bool eof,
                const size_t *cuts, size_t ncuts)
{
    h1resp_init(p, head, on_body, r);
    h1resp_on_header(p, on_header, r);
    r->body_len = r->consumed = 0;
    r->fields = 0;
    size_t at = 0;
    r->st = H1_MORE;
    for (size_t i = 0; i <= ncuts && r->st == H1_MORE; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        size_t used = (size_t)-1;
        r->st = h1resp_feed(p, data + at, end - at, &used);
        if (used > end - at) abort();
        if (r->st == H1_MORE && used != end - at) abort();
        r->consumed += used;
        at = end;
    }
    if (r->st == H1_MORE && eof) r->st = h1resp_eof(p);
    if (p->bytes_seen != at) abort();
    r->status = p->status;
    r->keep_alive = p->keep_alive;
    r->headers_done = p->headers_done;
    r->chunked = p->chunked;
    r->content_length = p->content_length;
    r->error = p->error;
    if (r->st != H1_MORE) { /* finished: stays so */
        size_t used = 1;
        if (h1resp_feed(p, "x", 1, &used) != r->st || used != 0) abort();
    }
}

static void check(const struct run *r, bool head)
{
    if (r->st == H1_ERROR && !r->error) abort();
    if (r->st != H1_ERROR && r->error) abort();
    if (r->content_length >= 0 && !r->chunked &&
        (uint64_t)r->body_len > (uint64_t)r->content_length)
        abort();
    if (r->body_len && !r->headers_done) abort();
    if (r->st != H1_DONE) return;
    if (!r->headers_done || r->status < 200 || r->status > 599) abort();
    if (r->chunked && r->content_length >= 0) abort();
    bool no_body = head || r->status == 204 || r->status == 304;
    if (no_body && r->body_len) abort();
    if (!no_body && !r->chunked && r->content_length >= 0 &&
        r->body_len != (uint64_t)r->content_length)
        abort();
    if (!no_body && !r->chunked && r->content_length < 0 && r->keep_alive) abort();
}

static void same(const struct run *a, const struct run *b)
{
    if (a->st != b->st || a->status != b->status || a->keep_alive != b->keep_alive ||
        a->headers_done != b->headers_done || a->chunked != b->chunked ||
        a->content_length != b->content_length || a->consumed != b->consumed ||
        a->fields != b->fields || a->body_len != b->body_len ||
        memcmp(a->body, b->body, a->body_len) != 0)
        abort();
    if ((a->error == NULL) != (b->error == NULL)) abort();
    if (a->error && strcmp(a->error, b->error) != 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    if (size < 1) return 0;
    bool head = in[0] & 1, eof = in[0] & 2;
    uint32_t seed = in[0] >> 2;
    size_t n = size - 1;
    /* exact size: a read past the response is an ASan report */
    char *data = malloc(n ? n : 1);
    size_t *cuts = malloc((n ? n : 1) * sizeof *cuts);
    struct h1resp *p = malloc(sizeof *p);
    struct run a = {.cap = n}, b = {.cap = n};
    a.body = malloc(n ? n : 1);
    b.body = malloc(n ? n : 1);
    if (!data || !cuts || !p || !a.body || !b.body) abort();
    memcpy(data, in + 1, n);

    run(&a, p, data, n, head, eof, NULL, 0);
    check(&a, head);

    /* random pieces (a small LCG: deterministic per input) */
    size_t ncuts = 0;
    uint32_t x = seed * 2654435761u + 1;
    for (size_t at = 0;;) {
        x = x * 1103515245u + 12345u;
        size_t step = 1 + (x >> 16) % 97;
        if (at + step >= n) break;
        at += step;
        cuts[ncuts++] = at;
    }
    run(&b, p, data, n, head, eof, cuts, ncuts);
    check(&b, head);
    same(&a, &b);

    if (n <= 4096) { /* one byte at a time */
        for (size_t i = 0; i + 1 < n; i++)
            cuts[i] = i + 1;
        run(&b, p, data, n, head, eof, cuts, n ? n - 1 : 0);
        check(&b, head);
        same(&a, &b);
    }

    free(a.body);
    free(b.body);
    free(p);
    free(cuts);
    free(data);
    return 0;
}
