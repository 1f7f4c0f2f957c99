/*
 * Tests for gateway/h1resp.c: every framing and strictness rule of h1resp.h,
 * each sample fed whole, in two pieces cut at every byte boundary, and one
 * byte at a time (the outcome, the error text, the body and the bytes
 * consumed must not depend on the cut).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/h1resp.h"

#define BODY_MAX (256 * 1024)

struct outcome {
    enum h1_status st;
    int status;
    bool keep_alive;
    bool headers_done;
    int64_t content_length;
    bool chunked;
    const char *error;
    size_t consumed; /* sum of *used */
    size_t body_len;
    char *body;
    int body_calls;
    int abort_after; /* body callback returns 1 on this call (1-based); 0 never */
};

static int on_body(void *arg, const char *data, size_t len)
{
    struct outcome *o = arg;
    assert_true(len > 0);
    assert_true(o->body_len + len <= BODY_MAX);
    memcpy(o->body + o->body_len, data, len);
    o->body_len += len;
    return ++o->body_calls == o->abort_after;
}

/* Feeds the pieces cut at cuts[0..ncuts) (increasing offsets) and stops at
 * the first DONE or ERROR; calls h1resp_eof at the end when eof and still
 * MORE. */
static void run_cuts(struct outcome *o, const char *in, size_t len, bool head, bool eof,
                     const size_t *cuts, size_t ncuts)
{
    static struct h1resp p; /* ~8 KiB: not on the stack of every test */
    static char body[BODY_MAX];
    int abort_after = o->abort_after;
    memset(o, 0, sizeof *o);
    o->body = body;
    o->abort_after = abort_after;
    h1resp_init(&p, head, on_body, o);
    size_t at = 0;
    o->st = H1_MORE;
    for (size_t i = 0; i <= ncuts && o->st == H1_MORE; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        size_t used = (size_t)-1;
        o->st = h1resp_feed(&p, in + at, end - at, &used);
        assert_true(used <= end - at);
        if (o->st == H1_MORE) assert_int_equal(used, end - at);
        o->consumed += used;
        at = end;
    }
    if (o->st == H1_MORE && eof) o->st = h1resp_eof(&p);
    o->status = p.status;
    o->keep_alive = p.keep_alive;
    o->headers_done = p.headers_done;
    o->content_length = p.content_length;
    o->chunked = p.chunked;
    o->error = p.error;
    if (o->st == H1_ERROR) assert_non_null(o->error);
    /* a finished parser stays finished and consumes nothing more */
    size_t used = 1;
    enum h1_status again = h1resp_feed(&p, "x", 1, &used);
    if (o->st != H1_MORE) {
        assert_int_equal(again, o->st);
        assert_int_equal(used, 0);
    }
}

static void run_whole(struct outcome *o, const char *in, size_t len, bool head, bool eof)
{
    run_cuts(o, in, len, head, eof, NULL, 0);
}

static void assert_same(const struct outcome *a, const struct outcome *b, const char *how)
{
    if (a->st != b->st || a->status != b->status || a->keep_alive != b->keep_alive ||
        a->content_length != b->content_length || a->chunked != b->chunked ||
        a->consumed != b->consumed || a->headers_done != b->headers_done ||
        (a->error != b->error && (!a->error || !b->error || strcmp(a->error, b->error) != 0)))
        fail_msg("%s: st %d/%d status %d/%d ka %d/%d consumed %zu/%zu error %s/%s", how, a->st,
                 b->st, a->status, b->status, a->keep_alive, b->keep_alive, a->consumed,
                 b->consumed, a->error ? a->error : "-", b->error ? b->error : "-");
}

/* Runs in every split and returns the whole-feed outcome in *o (its body
 * copied to body_out). */
static void run_all_splits(struct outcome *o, const char *in, size_t len, bool head, bool eof,
                           char *body_out)
{
    static char whole_body[BODY_MAX];
    run_whole(o, in, len, head, eof);
    memcpy(whole_body, o->body, o->body_len);
    struct outcome s;
    for (size_t k = 0; k <= len; k++) {
        s.abort_after = o->abort_after;
        run_cuts(&s, in, len, head, eof, &k, 1);
        char how[64];
        snprintf(how, sizeof how, "split at %zu", k);
        assert_same(o, &s, how);
        assert_int_equal(s.body_len, o->body_len);
        assert_memory_equal(s.body, whole_body, o->body_len);
    }
    static size_t cuts[BODY_MAX];
    assert_true(len <= BODY_MAX);
    for (size_t k = 0; k < len; k++)
        cuts[k] = k + 1;
    s.abort_after = o->abort_after;
    run_cuts(&s, in, len, head, eof, cuts, len ? len - 1 : 0);
    assert_same(o, &s, "byte at a time");
    assert_int_equal(s.body_len, o->body_len);
    assert_memory_equal(s.body, whole_body, o->body_len);
    if (body_out) memcpy(body_out, whole_body, o->body_len);
}

/* ---- valid responses ---- */

struct good {
    const char *in;
    size_t len;
    bool head, eof;
    int status;
    bool keep_alive;
    int64_t cl;
    bool chunked;
    const char *body;
    size_t consumed; /* 0: all of it */
};

#define S(lit) lit, sizeof(lit) - 1

static const struct good goods[] = {
    /* a typical response, six headers */
    {S("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n"
       "Date: Fri, 04 Dec 2026 16:00:00 GMT\r\nServer: mock\r\nX-Request-Id: abc-123\r\n"
       "Cache-Control: max-age=5\r\n\r\n{\"ok\": true }"),
     false, false, 200, true, 13, false, "{\"ok\": true }", 0},
    /* chunked: extensions, upper-case hex and leading zeros, trailers */
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
       "5;name=value\r\nhello\r\n"
       "0006 ; a=\"q\\\"uoted\" ;b\r\n world\r\n"
       "A\r\n0123456789\r\n"
       "0;last\r\nX-Trailer: t\r\nOther: u\r\n\r\n"),
     false, false, 200, true, -1, true, "hello world0123456789", 0},
    /* Transfer-Encoding is case-insensitive, chunked with no trailer */
    {S("HTTP/1.1 201 Created\r\ntransfer-encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), false,
     false, 201, true, -1, true, "abc", 0},
    /* 100 and 103 skipped, their headers (CL, Connection) do not leak */
    {S("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n"
       "Connection: close\r\nContent-Length: 99\r\n\r\n"
       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
     false, false, 200, true, 2, false, "ok", 0},
    /* HEAD: no body whatever Content-Length says */
    {S("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"), true, false, 200, true, 100, false, "",
     0},
    /* HEAD with chunked: no body either */
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), true, false, 200, true, -1, true,
     "", 0},
    /* 204 and 304 have no body */
    {S("HTTP/1.1 204 No Content\r\n\r\n"), false, false, 204, true, -1, false, "", 0},
    {S("HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"), false, false, 304, true, 50,
     false, "", 0},
    /* read-to-close: body until EOF, never reusable */
    {S("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"), false, true, 200, false,
     -1, false, "until the end", 0},
    {S("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nclose"), false, true, 200, false, -1,
     false, "close", 0},
    /* HTTP/1.0: close unless keep-alive */
    {S("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx"), false, false, 200, false, 1, false, "x",
     0},
    {S("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nx"), false, false,
     200, true, 1, false, "x", 0},
    {S("HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n"), false,
     false, 200, false, 0, false, "", 0},
    /* Connection: close in a token list, any case */
    {S("HTTP/1.1 200 OK\r\nConnection: upgrade ,  CLOSE\r\nContent-Length: 0\r\n\r\n"), false,
     false, 200, false, 0, false, "", 0},
    {S("HTTP/1.1 200 OK\r\nConnection: closed, keep-alive\r\nContent-Length: 0\r\n\r\n"), false,
     false, 200, true, 0, false, "", 0},
    /* bare LF line endings */
    {S("HTTP/1.1 200 OK\nContent-Length: 3\n\nabc"), false, false, 200, true, 3, false, "abc", 0},
    {S("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n"), false, false, 200, true, -1,
     true, "abc", 0},
    /* identical Content-Length repeated, and as a list */
    {S("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 02\r\n\r\nab"), false, false, 200,
     true, 2, false, "ab", 0},
    {S("HTTP/1.1 200 OK\r\nContent-Length: 2 ,2,\t2\r\n\r\nab"), false, false, 200, true, 2, false,
     "ab", 0},
    /* no reason phrase (with and without its SP); obs-text and HTAB in values */
    {S("HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n"), false, false, 404, true, 0, false, "", 0},
    {S("HTTP/1.1 503 \r\nContent-Length: 0\r\n\r\n"), false, false, 503, true, 0, false, "", 0},
    {S("HTTP/1.1 200 \xc3\xa9t\xc3\xa9\tok\r\nX-A: \xff\tb \r\nX-E:\r\nContent-Length: 0\r\n\r\n"),
     false, false, 200, true, 0, false, "", 0},
    /* pipelined bytes after the end are left unconsumed */
    {S("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"), false, false, 200,
     true, 2, false, "ok", 40},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\nextra"), false,
     false, 200, true, -1, true, "a", 58},
    {S("HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"), false, false, 204, true, -1,
     false, "", 27},
    {S("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nX"), true, false, 200, true, 0, false, "", 38},
    /* EOF right after a complete message changes nothing */
    {S("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz"), false, true, 200, true, 1, false, "z", 0},
};

static void test_valid_samples(void **state)
{
    (void)state;
    static char body[BODY_MAX];
    for (size_t i = 0; i < sizeof goods / sizeof goods[0]; i++) {
        const struct good *g = &goods[i];
        struct outcome o = {0};
        run_all_splits(&o, g->in, g->len, g->head, g->eof, body);
        if (o.st != H1_DONE)
            fail_msg("sample %zu: st %d error %s", i, o.st, o.error ? o.error : "-");
        assert_int_equal(o.status, g->status);
        assert_true(o.headers_done);
        if (o.keep_alive != g->keep_alive) fail_msg("sample %zu: keep_alive %d", i, o.keep_alive);
        assert_int_equal(o.content_length, g->cl);
        assert_int_equal(o.chunked, g->chunked);
        assert_int_equal(o.body_len, strlen(g->body));
        assert_memory_equal(body, g->body, o.body_len);
        assert_int_equal(o.consumed, g->consumed ? g->consumed : g->len);
    }
}

/* ---- rule violations ---- */

struct bad {
    const char *in;
    size_t len;
    bool eof;
    const char *error;
};

static const struct bad bads[] = {
    /* status line */
    {S("HTTP/2 200 OK\r\n\r\n"), false, "bad status line"},
    {S("HTTP/1.2 200 OK\r\n\r\n"), false, "unsupported HTTP version"},
    {S("http/1.1 200 OK\r\n\r\n"), false, "bad status line"},
    {S("HTTP/1.1  200 OK\r\n\r\n"), false, "bad status code"},
    {S("HTTP/1.1 20 OK\r\n\r\n"), false, "bad status code"},
    {S("HTTP/1.1 2000 OK\r\n\r\n"), false, "bad status line"},
    {S("HTTP/1.1 099 X\r\n\r\n"), false, "bad status code"},
    {S("HTTP/1.1 600 X\r\n\r\n"), false, "bad status code"},
    {S("HTTP/1.1 200 O\rK\r\n\r\n"), false, "bare CR in status line"},
    {S("HTTP/1.1 200 O\x01K\r\n\r\n"), false, "bad character in reason phrase"},
    {S("\r\nHTTP/1.1 200 OK\r\n\r\n"), false, "bad status line"},
    {S("ICY 200 OK\r\n\r\n"), false, "bad status line"},
    {S("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"), false,
     "101 Switching Protocols is not supported"},
    /* header fields */
    {S("HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n"), false,
     "obs-fold (header line starting with whitespace)"},
    {S("HTTP/1.1 200 OK\r\n\tA: b\r\n\r\n"), false,
     "obs-fold (header line starting with whitespace)"},
    {S("HTTP/1.1 200 OK\r\nA: b\0c\r\n\r\n"), false, "NUL in header"},
    {S("HTTP/1.1 200 OK\r\nA\0: b\r\n\r\n"), false, "NUL in header"},
    {S("HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n"), false, "bare CR in header"},
    {S("HTTP/1.1 200 OK\r\nA: b\r\r\n\r\n"), false, "bare CR in header"},
    {S("HTTP/1.1 200 OK\r\nA\r: b\r\n\r\n"), false, "bare CR in header"},
    {S("HTTP/1.1 200 OK\r\n\r\r\n\r\n"), false, "bare CR in header"},
    {S("HTTP/1.1 200 OK\r\nA: b\x01\r\n\r\n"), false, "control character in header value"},
    {S("HTTP/1.1 200 OK\r\nA: b\x7f\r\n\r\n"), false, "control character in header value"},
    {S("HTTP/1.1 200 OK\r\nA: b\x1b[0m\r\n\r\n"), false, "control character in header value"},
    {S("HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello"), false,
     "whitespace between header name and colon"},
    {S("HTTP/1.1 200 OK\r\nContent-Length\t: 5\r\n\r\nhello"), false,
     "whitespace between header name and colon"},
    {S("HTTP/1.1 200 OK\r\nA(b): c\r\n\r\n"), false, "bad header field name"},
    {S("HTTP/1.1 200 OK\r\n: c\r\n\r\n"), false, "empty header field name"},
    {S("HTTP/1.1 200 OK\r\nNoColon\r\n\r\n"), false, "header line without colon"},
    /* Content-Length */
    {S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"), false,
     "two different Content-Length"},
    {S("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!"), false,
     "two different Content-Length"},
    {S("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"), false, "bad Content-Length"},
    {S("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), false, "bad Content-Length"},
    {S("HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello"), false, "bad Content-Length"},
    {S("HTTP/1.1 200 OK\r\nContent-Length: 5 5\r\n\r\nhello"), false, "bad Content-Length"},
    {S("HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n"), false, "bad Content-Length"},
    {S("HTTP/1.1 200 OK\r\nContent-Length: 5,\r\n\r\nhello"), false, "bad Content-Length"},
    {S("HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\n"), false,
     "Content-Length too large"},
    {S("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n"), false,
     "Content-Length too large"},
    /* Transfer-Encoding */
    {S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
       "5\r\nhello\r\n0\r\n\r\n"),
     false, "Content-Length together with Transfer-Encoding"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), false,
     "Content-Length together with Transfer-Encoding"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), false,
     "unsupported Transfer-Encoding (only chunked)"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), false,
     "unsupported Transfer-Encoding (only chunked)"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
     false, "unsupported Transfer-Encoding (only chunked)"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, \r\n\r\n"), false,
     "unsupported Transfer-Encoding (only chunked)"},
    {S("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), false,
     "Transfer-Encoding in an HTTP/1.0 response"},
    /* chunked framing */
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nx\r\n"), false, "bad chunk size"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n"), false, "bad chunk size"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n -1\r\n"), false, "bad chunk size"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n"), false,
     "bad chunk extension"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;=v\r\nhello\r\n"), false,
     "bad chunk extension"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"open\r\nhello\r\n"), false,
     "bad chunk extension"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\r\nhello\r\n"), false,
     "bad chunk extension"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r;a\r\nhello\r\n"), false,
     "bare CR in chunk size line"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8000000000000000\r\n"), false,
     "chunk size too large"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
       "000000000000000000000000000000000000000010000000000000000\r\n"),
     false, "chunk size too large"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n"), false,
     "missing CRLF after chunk data"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\rX0\r\n\r\n"), false,
     "missing CRLF after chunk data"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: b\0\r\n\r\n"), false,
     "NUL in header"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n folded\r\n\r\n"), false,
     "obs-fold (header line starting with whitespace)"},
    /* EOF before the end */
    {S(""), true, "connection closed before the response ended"},
    {S("HTTP/1.1 200 OK\r\nContent-Le"), true, "connection closed before the response ended"},
    {S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhell"), true,
     "connection closed before the response ended"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"), true,
     "connection closed before the response ended"},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nTrailer: x\r\n"), true,
     "connection closed before the response ended"},
    {S("HTTP/1.1 100 Continue\r\n\r\n"), true, "connection closed before the response ended"},
};

static void test_rule_violations(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        const struct bad *b = &bads[i];
        struct outcome o = {0};
        run_all_splits(&o, b->in, b->len, false, b->eof, NULL);
        if (o.st != H1_ERROR || strcmp(o.error, b->error) != 0)
            fail_msg("bad sample %zu: st %d error '%s', want '%s'", i, o.st,
                     o.error ? o.error : "-", b->error);
    }
}

/* ---- limits: built at run time ---- */

static char big[200 * 1024];

static size_t put(size_t at, const char *s)
{
    size_t n = strlen(s);
    assert_true(at + n <= sizeof big);
    memcpy(big + at, s, n);
    return at + n;
}

/* a field line "X-F: aaa...\r\n" of exactly total bytes */
static size_t put_field(size_t at, size_t total)
{
    at = put(at, "X-F: ");
    assert_true(total >= 7);
    memset(big + at, 'a', total - 7);
    at += total - 7;
    return put(at, "\r\n");
}

static void expect(const char *in, size_t len, enum h1_status st, const char *error)
{
    struct outcome o = {0};
    run_whole(&o, in, len, false, false);
    if (o.st != st || (error && strcmp(o.error, error) != 0))
        fail_msg("st %d error '%s', want %d '%s'", o.st, o.error ? o.error : "-", st,
                 error ? error : "-");
    /* and fed a byte at a time */
    static size_t cuts[sizeof big];
    for (size_t k = 0; k + 1 < len; k++)
        cuts[k] = k + 1;
    struct outcome s = {0};
    run_cuts(&s, in, len, false, false, cuts, len ? len - 1 : 0);
    assert_same(&o, &s, "byte at a time");
}

static void test_line_limit(void **state)
{
    (void)state;
    const char *status = "HTTP/1.1 200 OK\r\n";
    size_t at = put(0, status);
    at = put_field(at, H1_MAX_LINE); /* exactly at the limit: fine */
    size_t end = put(at, "Content-Length: 0\r\n\r\n");
    expect(big, end, H1_DONE, NULL);
    at = put(0, status);
    at = put_field(at, H1_MAX_LINE + 1);
    end = put(at, "Content-Length: 0\r\n\r\n");
    expect(big, end, H1_ERROR, "header line too long");
    /* an unterminated line fails as soon as it is too long, without EOF */
    at = put(0, status);
    memset(big + at, 'a', H1_MAX_LINE + 1);
    expect(big, at + H1_MAX_LINE, H1_ERROR, "header line too long");
    expect(big, at + H1_MAX_LINE - 1, H1_MORE, NULL);
    /* a chunk size line has the same bound */
    at = put(0, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;a=");
    memset(big + at, 'b', H1_MAX_LINE);
    at = put(at + H1_MAX_LINE, "\r\n");
    expect(big, at, H1_ERROR, "chunk size line too long");
}

static void test_header_block_limit(void **state)
{
    (void)state;
    /* status line + fields + final empty line = exactly 64 KiB: accepted */
    const char *status = "HTTP/1.1 200 OK\r\n";
    const char *cl = "Content-Length: 0\r\n";
    size_t fixed = strlen(status) + strlen(cl) + 2;
    size_t at = put(0, status);
    size_t left = H1_MAX_HEADER_BLOCK - fixed;
    while (left > 0) {
        size_t n = left > 4000 ? 4000 : left;
        if (left - n > 0 && left - n < 7) n -= 7; /* keep the last line >= 7 bytes */
        at = put_field(at, n);
        left -= n;
    }
    at = put(at, cl);
    size_t end = put(at, "\r\n");
    assert_int_equal(end, H1_MAX_HEADER_BLOCK);
    expect(big, end, H1_DONE, NULL);
    /* one byte more */
    memmove(big + strlen(status) + 1, big + strlen(status), end - strlen(status));
    big[strlen(status)] = 'Y';
    expect(big, end + 1, H1_ERROR, "header block too large");

    /* 1xx blocks count against the same budget */
    at = 0;
    while (at < H1_MAX_HEADER_BLOCK)
        at = put(at, "HTTP/1.1 100 Continue\r\n\r\n");
    end = put(at, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    expect(big, end, H1_ERROR, "header block too large");

    /* and so do trailers */
    at = put(0, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n");
    for (int i = 0; i < 20; i++)
        at = put_field(at, 4000);
    end = put(at, "\r\n");
    expect(big, end, H1_ERROR, "header block too large");
}

/* ---- bodies ---- */

static void test_large_bodies(void **state)
{
    (void)state;
    /* a Content-Length body of 100 KiB and a chunked one in 1000-byte chunks */
    size_t at = put(0, "HTTP/1.1 200 OK\r\nContent-Length: 102400\r\n\r\n");
    for (size_t i = 0; i < 102400; i++)
        big[at + i] = (char)('a' + i % 26);
    size_t end = at + 102400;
    struct outcome o = {0};
    run_whole(&o, big, end, false, false);
    assert_int_equal(o.st, H1_DONE);
    assert_int_equal(o.body_len, 102400);
    assert_memory_equal(o.body, big + at, 102400);

    at = put(0, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int c = 0; c < 50; c++) {
        at = put(at, "3e8\r\n");
        memset(big + at, 'a' + c % 26, 1000);
        at = put(at + 1000, "\r\n");
    }
    end = put(at, "0\r\n\r\n");
    static size_t cuts[sizeof big];
    for (size_t k = 0; k + 7 < end; k += 7)
        cuts[k / 7] = k + 7;
    run_cuts(&o, big, end, false, false, cuts, (end - 1) / 7);
    assert_int_equal(o.st, H1_DONE);
    assert_int_equal(o.consumed, end);
    assert_int_equal(o.body_len, 50000);
    for (int c = 0; c < 50; c++)
        assert_int_equal(o.body[c * 1000 + 999], 'a' + c % 26);
}

static void test_body_callback_abort(void **state)
{
    (void)state;
    struct outcome o = {.abort_after = 2};
    const char in[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n";
    run_whole(&o, in, sizeof in - 1, false, false);
    assert_int_equal(o.st, H1_ERROR);
    assert_string_equal(o.error, "aborted by body callback");
    assert_int_equal(o.body_calls, 2);
    assert_true(o.headers_done);
}

struct hdrs {
    int n;
    char seen[512];
    int abort_on;
};

static int on_header(void *arg, const char *name, size_t nl, const char *value, size_t vl)
{
    struct hdrs *h = arg;
    size_t at = strlen(h->seen);
    snprintf(h->seen + at, sizeof h->seen - at, "%.*s=[%.*s];", (int)nl, name, (int)vl, value);
    return ++h->n == h->abort_on;
}

static void test_header_callback(void **state)
{
    (void)state;
    static struct h1resp p;
    struct hdrs h = {0};
    const char in[] = "HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
                      "HTTP/1.1 200 OK\r\nCache-Control:  max-age=5 \t\r\nX-Empty:\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n0\r\nTrailer: no\r\n\r\n";
    size_t used;
    /* fed in two pieces to see values of a cut line arrive whole */
    h1resp_init(&p, false, NULL, NULL);
    h1resp_on_header(&p, on_header, &h);
    assert_int_equal(h1resp_feed(&p, in, 60, &used), H1_MORE);
    assert_int_equal(h1resp_feed(&p, in + 60, sizeof in - 61, &used), H1_DONE);
    assert_string_equal(h.seen,
                        "Cache-Control=[max-age=5];X-Empty=[];Transfer-Encoding=[chunked];");

    memset(&h, 0, sizeof h);
    h.abort_on = 2;
    h1resp_init(&p, false, NULL, NULL);
    h1resp_on_header(&p, on_header, &h);
    assert_int_equal(h1resp_feed(&p, in, sizeof in - 1, &used), H1_ERROR);
    assert_string_equal(p.error, "aborted by header callback");
    assert_false(p.headers_done);
}

static void test_bytes_seen_and_eof(void **state)
{
    (void)state;
    static struct h1resp p;
    size_t used;
    h1resp_init(&p, false, NULL, NULL);
    assert_int_equal(p.bytes_seen, 0);
    assert_int_equal(p.content_length, -1);
    /* EOF with nothing read: an error, and bytes_seen tells the transport */
    assert_int_equal(h1resp_eof(&p), H1_ERROR);
    assert_int_equal(p.bytes_seen, 0);

    h1resp_init(&p, false, NULL, NULL);
    assert_int_equal(h1resp_feed(&p, "", 0, &used), H1_MORE);
    assert_int_equal(used, 0);
    assert_int_equal(h1resp_feed(&p, "HTTP/1.1 200 OK\r\n\r\nab", 21, &used), H1_MORE);
    assert_int_equal(used, 21);
    assert_int_equal(p.bytes_seen, 21);
    assert_true(p.headers_done);
    assert_int_equal(h1resp_eof(&p), H1_DONE);
    assert_false(p.keep_alive);
    assert_int_equal(h1resp_eof(&p), H1_DONE);
    /* bytes after DONE are counted but not consumed */
    assert_int_equal(h1resp_feed(&p, "xyz", 3, &used), H1_DONE);
    assert_int_equal(used, 0);
    assert_int_equal(p.bytes_seen, 24);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_samples),   cmocka_unit_test(test_rule_violations),
        cmocka_unit_test(test_line_limit),      cmocka_unit_test(test_header_block_limit),
        cmocka_unit_test(test_large_bodies),    cmocka_unit_test(test_body_callback_abort),
        cmocka_unit_test(test_header_callback), cmocka_unit_test(test_bytes_seen_and_eof),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
