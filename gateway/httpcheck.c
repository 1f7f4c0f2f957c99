/*
 * httpcheck: request-framing rules over a parsed header list (see
 * httpcheck.h). No I/O, no allocation.
 */
#include "gateway/httpcheck.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CL_MAX 9223372036854775807ull /* 2^63 - 1 */

bool httpcheck_is_token(const char *s, size_t n)
{
    /* tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
     *         "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA */
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool alnum = (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
        if (!alnum && (c == '\0' || !strchr(extra, c))) return false;
    }
    return true;
}

/* 1*DIGIT up to 2^63-1; false for anything else ("+5", "5, 5", "", too big). */
static bool parse_length(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s) return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return false;
        unsigned d = (unsigned)(*s - '0');
        if (v > (CL_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* Counts of the framing fields, and the ones seen first. */
struct framing {
    size_t host, te, cl;
    const char *te_value;
    const char *cl_value;
    bool cl_differ;
};

static int scan_fields(const struct httpcheck_req *r, struct framing *f, const char **why)
{
    memset(f, 0, sizeof *f);
    for (size_t i = 0; i < r->n_fields; i++) {
        const char *name = r->fields[i].name;
        const char *value = r->fields[i].value ? r->fields[i].value : "";
        if (!httpcheck_is_token(name, strlen(name))) {
            *why = "invalid header field name";
            return 400;
        }
        if (strcasecmp(name, "Host") == 0) {
            f->host++;
        } else if (strcasecmp(name, "Transfer-Encoding") == 0) {
            if (f->te++ == 0) f->te_value = value;
        } else if (strcasecmp(name, "Content-Length") == 0) {
            if (f->cl++ == 0)
                f->cl_value = value;
            else if (strcmp(value, f->cl_value) != 0)
                f->cl_differ = true;
        }
    }
    return 0;
}

static int check_transfer_encoding(const struct framing *f, bool http10, const char **why)
{
    if (f->te > 1) {
        *why = "repeated Transfer-Encoding header";
        return 400;
    }
    if (f->cl) {
        *why = "both Content-Length and Transfer-Encoding";
        return 400;
    }
    if (http10) {
        *why = "Transfer-Encoding on an HTTP/1.0 request";
        return 400;
    }
    if (strcasecmp(f->te_value, "chunked") != 0) {
        *why = "unsupported transfer coding (only chunked)";
        return 501;
    }
    return 0;
}

int httpcheck_request(const struct httpcheck_req *r, struct httpcheck_body *body, const char **why)
{
    memset(body, 0, sizeof *body);
    if (r->header_bytes > r->max_header_bytes) {
        *why = "request header fields too large";
        return 431;
    }
    struct framing f;
    int st = scan_fields(r, &f, why);
    if (st) return st;
    bool http10 = r->version && strcmp(r->version, "HTTP/1.0") == 0;
    if (f.host > 1 || (f.host == 0 && !http10)) {
        *why = f.host ? "repeated Host header" : "missing Host header";
        return 400;
    }
    if (f.te) {
        st = check_transfer_encoding(&f, http10, why);
        body->chunked = st == 0;
        return st;
    }
    if (f.cl) {
        if (f.cl_differ || !parse_length(f.cl_value, &body->content_length)) {
            *why = f.cl_differ ? "conflicting Content-Length headers" : "invalid Content-Length";
            return 400;
        }
        body->has_length = true;
    }
    return 0;
}

/* ---- raw header blocks ---- */

/* Length of the header block in buf (through its blank line), or 0. */
static size_t block_end(const char *buf, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (buf[i] != '\n') continue;
        if (buf[i + 1] == '\n') return i + 2;
        if (buf[i + 1] == '\r' && i + 2 < len && buf[i + 2] == '\n') return i + 3;
    }
    return 0;
}

/* Copies s[0..n) into out (size cap), cut, NUL-terminated. */
static void copy_cut(char *out, size_t cap, const char *s, size_t n)
{
    if (!out || cap == 0) return;
    if (n >= cap) n = cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

/* The block split into lines, each NUL-terminated in place (CR LF or LF
 * removed). Returns the number of lines. */
static size_t split_lines(char *b, size_t n, char **lines, size_t max)
{
    size_t count = 0;
    char *p = b, *end = b + n;
    while (p < end && count < max) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) break;
        char *e = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
        *e = '\0';
        lines[count++] = p;
        p = nl + 1;
    }
    return count;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Splits "name: value" in place into f; false without a colon. */
static bool split_field(char *line, struct http_field *f)
{
    char *colon = strchr(line, ':');
    if (!colon) return false;
    *colon = '\0';
    char *v = colon + 1;
    while (is_ows(*v))
        v++;
    char *e = v + strlen(v);
    while (e > v && is_ows(e[-1]))
        *--e = '\0';
    f->name = line;
    f->value = v;
    return true;
}

/* Checks "method SP target SP version"; fills the out parameters. */
static bool request_line(const char *line, char *method, size_t msize, char *target, size_t tsize,
                         const char **version)
{
    const char *sp1 = strchr(line, ' ');
    const char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || sp2 == sp1 + 1 || strchr(sp2 + 1, ' ')) return false;
    if (!httpcheck_is_token(line, (size_t)(sp1 - line))) return false;
    copy_cut(method, msize, line, (size_t)(sp1 - line));
    const char *q = memchr(sp1 + 1, '?', (size_t)(sp2 - sp1 - 1));
    copy_cut(target, tsize, sp1 + 1, (size_t)((q ? q : sp2) - sp1 - 1));
    *version = sp2 + 1;
    return true;
}

/* The lines of one header block and room for its fields. */
struct block {
    char **lines;
    size_t n;
    struct http_field *fields;
};

static int check_lines(struct block *b, size_t header_bytes, size_t max_header_bytes, char *method,
                       size_t msize, char *target, size_t tsize, const char **why)
{
    size_t i = 0;
    while (i < b->n && b->lines[i][0] == '\0')
        i++; /* leading empty lines are allowed */
    const char *version = NULL;
    if (i == b->n || !request_line(b->lines[i], method, msize, target, tsize, &version)) {
        *why = "malformed request line";
        return 400;
    }
    size_t nf = 0;
    for (i++; i < b->n && b->lines[i][0]; i++) {
        if (is_ows(b->lines[i][0])) {
            *why = "folded header line (obs-fold)";
            return 400;
        }
        if (!split_field(b->lines[i], &b->fields[nf++])) {
            *why = "header line without a colon";
            return 400;
        }
    }
    struct httpcheck_req r = {.fields = b->fields,
                              .n_fields = nf,
                              .version = version,
                              .header_bytes = header_bytes,
                              .max_header_bytes = max_header_bytes};
    struct httpcheck_body body;
    return httpcheck_request(&r, &body, why);
}

int httpcheck_raw(const char *buf, size_t len, size_t max_header_bytes, char *method,
                  size_t method_size, char *target, size_t target_size, const char **why)
{
    size_t n = block_end(buf, len);
    if (n == 0) return -1;
    size_t max_lines = n; /* every line ends with a LF */
    char *copy = malloc(n + 1);
    struct block b = {.lines = malloc(max_lines * sizeof *b.lines),
                      .fields = malloc(max_lines * sizeof *b.fields)};
    int st = 503;
    *why = "out of memory";
    if (copy && b.lines && b.fields) {
        memcpy(copy, buf, n);
        copy[n] = '\0';
        b.n = split_lines(copy, n, b.lines, max_lines);
        st = check_lines(&b, n, max_header_bytes, method, method_size, target, target_size, why);
    }
    free(copy);
    free(b.lines);
    free(b.fields);
    return st;
}
