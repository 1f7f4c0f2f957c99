/*
 * h1resp: the HTTP/1.1 response parser (see h1resp.h for the rules).
 *
 * Structure: h1resp_feed runs a small state machine. Line states (status
 * line, header fields, chunk size, trailers) take one complete line at a
 * time from take_line(), which returns it in place when the feed holds it
 * whole and otherwise gathers it in p->line_; either way the line is then
 * handled by the same function, so how the bytes were split never changes
 * the outcome. Body states hand bytes to the callback straight from the
 * feed. Byte states check the CRLF after chunk data.
 */
#include "gateway/h1resp.h"

#include <string.h>
#include <strings.h>

enum {
    ST_STATUS,     /* expecting a status line */
    ST_HEADER,     /* header field lines until the empty line */
    ST_BODY_CL,    /* remaining_ bytes of a Content-Length body */
    ST_BODY_CLOSE, /* body until EOF */
    ST_CHUNK_SIZE, /* chunk-size [ext] line */
    ST_CHUNK_DATA, /* remaining_ bytes of chunk data */
    ST_CHUNK_CR,   /* the CR (or bare LF) after chunk data */
    ST_CHUNK_LF,   /* the LF after chunk data */
    ST_TRAILER,    /* trailer field lines until the empty line */
    ST_DONE,
    ST_ERROR,
};

/* character classes */
#define C_TOKEN 1 /* tchar (RFC 9110 §5.6.2) */
#define C_VALUE 2 /* field-vchar, SP, HTAB (RFC 9110 §5.5) */
#define C_HEX   4

static const unsigned char cls[256] = {
    ['\t'] = C_VALUE,
    [' '] = C_VALUE,
    ['!'] = C_VALUE | C_TOKEN,
    ['"'] = C_VALUE,
    ['#'] = C_VALUE | C_TOKEN,
    ['$'] = C_VALUE | C_TOKEN,
    ['%'] = C_VALUE | C_TOKEN,
    ['&'] = C_VALUE | C_TOKEN,
    ['\''] = C_VALUE | C_TOKEN,
    ['('] = C_VALUE,
    [')'] = C_VALUE,
    ['*'] = C_VALUE | C_TOKEN,
    ['+'] = C_VALUE | C_TOKEN,
    [','] = C_VALUE,
    ['-'] = C_VALUE | C_TOKEN,
    ['.'] = C_VALUE | C_TOKEN,
    ['/'] = C_VALUE,
    ['0' ... '9'] = C_VALUE | C_TOKEN | C_HEX,
    [':'] = C_VALUE,
    [';'] = C_VALUE,
    ['<'] = C_VALUE,
    ['='] = C_VALUE,
    ['>'] = C_VALUE,
    ['?'] = C_VALUE,
    ['@'] = C_VALUE,
    ['A' ... 'F'] = C_VALUE | C_TOKEN | C_HEX,
    ['G' ... 'Z'] = C_VALUE | C_TOKEN,
    ['['] = C_VALUE,
    ['\\'] = C_VALUE,
    [']'] = C_VALUE,
    ['^'] = C_VALUE | C_TOKEN,
    ['_'] = C_VALUE | C_TOKEN,
    ['`'] = C_VALUE | C_TOKEN,
    ['a' ... 'f'] = C_VALUE | C_TOKEN | C_HEX,
    ['g' ... 'z'] = C_VALUE | C_TOKEN,
    ['{'] = C_VALUE,
    ['|'] = C_VALUE | C_TOKEN,
    ['}'] = C_VALUE,
    ['~'] = C_VALUE | C_TOKEN,
    [0x80 ... 0xff] = C_VALUE, /* obs-text */
};

static inline bool is(unsigned char c, unsigned char k)
{
    return (cls[c] & k) != 0;
}

static inline bool ows(char c)
{
    return c == ' ' || c == '\t';
}

static int fail(struct h1resp *p, const char *msg)
{
    p->error = msg;
    p->state_ = ST_ERROR;
    return -1;
}

void h1resp_init(struct h1resp *p, bool no_body, h1_body_fn on_body, void *arg)
{
    /* the line buffer is not cleared: only line_len_ bytes of it are read */
    memset(p, 0, offsetof(struct h1resp, line_));
    p->content_length = -1;
    p->no_body_ = no_body;
    p->on_body_ = on_body;
    p->body_arg_ = arg;
    p->state_ = ST_STATUS;
}

void h1resp_on_header(struct h1resp *p, h1_header_fn on_header, void *arg)
{
    p->on_header_ = on_header;
    p->header_arg_ = arg;
}

/* ---- lines ---- */

static bool header_state(int st)
{
    return st == ST_STATUS || st == ST_HEADER || st == ST_TRAILER;
}

/* How many bytes (line ending included) the current line may still have. */
static size_t line_allowance(const struct h1resp *p, bool *by_budget)
{
    size_t allow = H1_MAX_LINE;
    *by_budget = false;
    if (header_state(p->state_)) {
        size_t budget = H1_MAX_HEADER_BLOCK - p->header_bytes_;
        if (budget < allow) {
            allow = budget;
            *by_budget = true;
        }
    }
    return allow - p->line_len_;
}

static const char *too_long(const struct h1resp *p, bool by_budget)
{
    if (by_budget) return "header block too large";
    return p->state_ == ST_CHUNK_SIZE ? "chunk size line too long" : "header line too long";
}

/* Takes the next complete line from data[*pos..len). Returns 1 with
 * *line and *n set to its content without the line ending (in place or in
 * line_), 0 when the feed ended inside the line (kept in line_, all
 * consumed), -1 on error (too long, or a CR not before LF at the end). */
static int take_line(struct h1resp *p, const char *data, size_t len, size_t *pos, const char **line,
                     size_t *n)
{
    bool by_budget;
    size_t allow = line_allowance(p, &by_budget);
    size_t avail = len - *pos;
    size_t scan = avail < allow ? avail : allow;
    const char *start = data + *pos;
    const char *lf = memchr(start, '\n', scan);
    if (!lf) {
        if (avail >= allow) { /* consume up to the limit, as a byte-wise reader would */
            *pos += allow;
            return fail(p, too_long(p, by_budget));
        }
        memcpy(p->line_ + p->line_len_, start, avail);
        p->line_len_ += avail;
        *pos = len;
        return 0;
    }
    size_t take = (size_t)(lf - start) + 1;
    *pos += take;
    if (header_state(p->state_)) p->header_bytes_ += p->line_len_ + take;
    if (p->line_len_ == 0) {
        *line = start;
        *n = take - 1;
    } else {
        memcpy(p->line_ + p->line_len_, start, take - 1);
        *line = p->line_;
        *n = p->line_len_ + take - 1;
        p->line_len_ = 0;
    }
    if (*n > 0 && (*line)[*n - 1] == '\r') (*n)--;
    return 1;
}

/* ---- status line ---- */

static int parse_status_line(struct h1resp *p, const char *s, size_t n)
{
    if (n < 12 || memcmp(s, "HTTP/1.", 7) != 0 || s[8] != ' ') return fail(p, "bad status line");
    if (s[7] != '0' && s[7] != '1') return fail(p, "unsupported HTTP version");
    for (int i = 9; i < 12; i++)
        if (s[i] < '0' || s[i] > '9') return fail(p, "bad status code");
    int code = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    if (code < 100 || code > 599) return fail(p, "bad status code");
    if (n > 12 && s[12] != ' ') return fail(p, "bad status line");
    for (size_t i = 13; i < n; i++)
        if (!is((unsigned char)s[i], C_VALUE))
            return fail(p,
                        s[i] == '\r' ? "bare CR in status line" : "bad character in reason phrase");
    if (code == 101) return fail(p, "101 Switching Protocols is not supported");
    p->status = code;
    p->minor_ = (uint8_t)(s[7] - '0');
    p->content_length = -1;
    p->chunked = false;
    p->te_seen_ = false;
    p->conn_close_ = false;
    p->conn_keep_alive_ = false;
    p->state_ = ST_HEADER;
    return 0;
}

/* ---- header fields ---- */

/* Next element of a comma-separated list in [*s, end): trims OWS, may be
 * empty. Returns false when the list is exhausted (*s == NULL). */
static bool list_next(const char **s, const char *end, const char **el, size_t *n)
{
    if (!*s) return false;
    const char *c = memchr(*s, ',', (size_t)(end - *s));
    const char *a = *s, *b = c ? c : end;
    while (a < b && ows(*a))
        a++;
    while (b > a && ows(b[-1]))
        b--;
    *el = a;
    *n = (size_t)(b - a);
    *s = c ? c + 1 : NULL;
    return true;
}

static int content_length(struct h1resp *p, const char *v, size_t n)
{
    const char *s = v, *el;
    size_t len;
    while (list_next(&s, v + n, &el, &len)) {
        if (len == 0) return fail(p, "bad Content-Length");
        int64_t x = 0;
        for (size_t i = 0; i < len; i++) {
            if (el[i] < '0' || el[i] > '9') return fail(p, "bad Content-Length");
            if (x > (INT64_MAX - (el[i] - '0')) / 10) return fail(p, "Content-Length too large");
            x = x * 10 + (el[i] - '0');
        }
        if (p->content_length >= 0 && p->content_length != x)
            return fail(p, "two different Content-Length");
        p->content_length = x;
    }
    return 0;
}

static int transfer_encoding(struct h1resp *p, const char *v, size_t n)
{
    if (p->te_seen_ || n != 7 || strncasecmp(v, "chunked", 7) != 0)
        return fail(p, "unsupported Transfer-Encoding (only chunked)");
    p->te_seen_ = true;
    p->chunked = true;
    return 0;
}

static void connection(struct h1resp *p, const char *v, size_t n)
{
    const char *s = v, *el;
    size_t len;
    while (list_next(&s, v + n, &el, &len)) {
        if (len == 5 && strncasecmp(el, "close", 5) == 0) p->conn_close_ = true;
        if (len == 10 && strncasecmp(el, "keep-alive", 10) == 0) p->conn_keep_alive_ = true;
    }
}

/* Splits and checks one field line: name is a token right before ':',
 * the value has no CTL but HTAB. */
static int split_field(struct h1resp *p, const char *s, size_t n, size_t *name_len,
                       const char **value, size_t *value_len)
{
    if (ows(s[0])) return fail(p, "obs-fold (header line starting with whitespace)");
    size_t i = 0;
    while (i < n && is((unsigned char)s[i], C_TOKEN))
        i++;
    if (i == n) return fail(p, "header line without colon");
    if (s[i] != ':') {
        if (s[i] == '\0') return fail(p, "NUL in header");
        if (s[i] == '\r') return fail(p, "bare CR in header");
        if (ows(s[i])) return fail(p, "whitespace between header name and colon");
        return fail(p, "bad header field name");
    }
    if (i == 0) return fail(p, "empty header field name");
    *name_len = i;
    size_t a = i + 1;
    for (size_t j = a; j < n; j++) {
        if (!is((unsigned char)s[j], C_VALUE)) {
            if (s[j] == '\0') return fail(p, "NUL in header");
            if (s[j] == '\r') return fail(p, "bare CR in header");
            return fail(p, "control character in header value");
        }
    }
    size_t b = n;
    while (a < b && ows(s[a]))
        a++;
    while (b > a && ows(s[b - 1]))
        b--;
    *value = s + a;
    *value_len = b - a;
    return 0;
}

static int parse_field(struct h1resp *p, const char *s, size_t n)
{
    size_t nl, vl;
    const char *v;
    if (split_field(p, s, n, &nl, &v, &vl) < 0) return -1;
    if (p->state_ == ST_TRAILER) return 0; /* trailers: checked, not used */
    int r = 0;
    if (nl == 14 && strncasecmp(s, "content-length", 14) == 0)
        r = content_length(p, v, vl);
    else if (nl == 17 && strncasecmp(s, "transfer-encoding", 17) == 0)
        r = transfer_encoding(p, v, vl);
    else if (nl == 10 && strncasecmp(s, "connection", 10) == 0)
        connection(p, v, vl);
    if (r < 0) return r;
    if (p->on_header_ && p->status >= 200 && p->on_header_(p->header_arg_, s, nl, v, vl) != 0)
        return fail(p, "aborted by header callback");
    return 0;
}

/* The empty line after the final response's fields: decide the framing. */
static int end_of_headers(struct h1resp *p)
{
    if (p->status < 200) { /* 1xx: skipped, the real response follows */
        p->state_ = ST_STATUS;
        return 0;
    }
    p->headers_done = true;
    if (p->chunked && p->content_length >= 0)
        return fail(p, "Content-Length together with Transfer-Encoding");
    if (p->chunked && p->minor_ == 0) return fail(p, "Transfer-Encoding in an HTTP/1.0 response");
    p->keep_alive = p->minor_ == 1 ? !p->conn_close_ : p->conn_keep_alive_ && !p->conn_close_;
    if (p->no_body_ || p->status == 204 || p->status == 304) {
        p->state_ = ST_DONE;
    } else if (p->chunked) {
        p->state_ = ST_CHUNK_SIZE;
    } else if (p->content_length >= 0) {
        p->remaining_ = (uint64_t)p->content_length;
        p->state_ = p->remaining_ ? ST_BODY_CL : ST_DONE;
    } else {
        p->keep_alive = false;
        p->state_ = ST_BODY_CLOSE;
    }
    return 0;
}

/* ---- chunk size line ---- */

/* token, or quoted-string (RFC 9110 §5.6.4) for a chunk-ext value */
static size_t skip_token(const char *s, size_t i, size_t n)
{
    while (i < n && is((unsigned char)s[i], C_TOKEN))
        i++;
    return i;
}

static size_t skip_quoted(const char *s, size_t i, size_t n)
{
    /* s[i] == '"'; returns the index after the closing quote, or 0 */
    for (i++; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') return i + 1;
        if (c == '\\') {
            if (++i == n) return 0;
            c = (unsigned char)s[i];
        }
        if (!is(c, C_VALUE)) return 0;
    }
    return 0;
}

static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && ows(s[i]))
        i++;
    return i;
}

/* chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ) */
static bool chunk_ext_ok(const char *s, size_t i, size_t n)
{
    for (;;) {
        i = skip_ws(s, i, n);
        if (i == n) return true;
        if (s[i] != ';') return false;
        i = skip_ws(s, i + 1, n);
        size_t e = skip_token(s, i, n);
        if (e == i) return false;
        i = skip_ws(s, e, n);
        if (i == n || s[i] != '=') continue;
        i = skip_ws(s, i + 1, n);
        if (i == n) return false;
        e = s[i] == '"' ? skip_quoted(s, i, n) : skip_token(s, i, n);
        if (e <= i) return false;
        i = e;
    }
}

static int parse_chunk_size(struct h1resp *p, const char *s, size_t n)
{
    uint64_t size = 0;
    size_t i = 0;
    for (; i < n && is((unsigned char)s[i], C_HEX); i++) {
        if (size > (uint64_t)INT64_MAX >> 4) return fail(p, "chunk size too large");
        unsigned char c = (unsigned char)s[i];
        size = size << 4 | (uint64_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    if (i == 0) return fail(p, "bad chunk size");
    if (!chunk_ext_ok(s, i, n)) {
        if (memchr(s, '\r', n)) return fail(p, "bare CR in chunk size line");
        return fail(p, "bad chunk extension");
    }
    p->remaining_ = size;
    p->state_ = size ? ST_CHUNK_DATA : ST_TRAILER;
    return 0;
}

/* ---- the machine ---- */

static int handle_line(struct h1resp *p, const char *s, size_t n)
{
    switch (p->state_) {
    case ST_STATUS:
        return parse_status_line(p, s, n);
    case ST_HEADER:
        return n == 0 ? end_of_headers(p) : parse_field(p, s, n);
    case ST_TRAILER:
        if (n == 0) {
            p->state_ = ST_DONE;
            return 0;
        }
        return parse_field(p, s, n);
    default: /* ST_CHUNK_SIZE */
        return parse_chunk_size(p, s, n);
    }
}

static int body(struct h1resp *p, const char *data, size_t len, size_t *pos)
{
    size_t n = len - *pos;
    if (p->state_ != ST_BODY_CLOSE && n > p->remaining_) n = (size_t)p->remaining_;
    if (n && p->on_body_ && p->on_body_(p->body_arg_, data + *pos, n) != 0)
        return fail(p, "aborted by body callback");
    *pos += n;
    if (p->state_ == ST_BODY_CLOSE) return 0;
    p->remaining_ -= n;
    if (p->remaining_ == 0) p->state_ = p->state_ == ST_BODY_CL ? ST_DONE : ST_CHUNK_CR;
    return 0;
}

static int chunk_crlf(struct h1resp *p, char c)
{
    if (p->state_ == ST_CHUNK_CR && c == '\r') {
        p->state_ = ST_CHUNK_LF;
        return 0;
    }
    if (c == '\n') {
        p->state_ = ST_CHUNK_SIZE;
        return 0;
    }
    return fail(p, "missing CRLF after chunk data");
}

enum h1_status h1resp_feed(struct h1resp *p, const char *data, size_t len, size_t *used)
{
    size_t pos = 0;
    p->bytes_seen += len;
    while (pos < len && p->state_ != ST_DONE && p->state_ != ST_ERROR) {
        int r = 0;
        switch (p->state_) {
        case ST_BODY_CL:
        case ST_BODY_CLOSE:
        case ST_CHUNK_DATA:
            r = body(p, data, len, &pos);
            break;
        case ST_CHUNK_CR:
        case ST_CHUNK_LF:
            r = chunk_crlf(p, data[pos++]);
            break;
        default: {
            const char *line;
            size_t n;
            r = take_line(p, data, len, &pos, &line, &n);
            if (r > 0) r = handle_line(p, line, n);
        }
        }
        if (r < 0) break;
    }
    *used = p->state_ == ST_DONE || p->state_ == ST_ERROR ? pos : len;
    if (p->state_ == ST_DONE) return H1_DONE;
    if (p->state_ == ST_ERROR) return H1_ERROR;
    return H1_MORE;
}

enum h1_status h1resp_eof(struct h1resp *p)
{
    if (p->state_ == ST_BODY_CLOSE || p->state_ == ST_DONE) {
        p->state_ = ST_DONE;
        return H1_DONE;
    }
    if (p->state_ == ST_ERROR) return H1_ERROR;
    fail(p, "connection closed before the response ended");
    return H1_ERROR;
}
