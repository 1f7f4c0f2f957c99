/*
 * httpcheck: the request-framing rules the gateway enforces on a request's
 * header block before it reads a body or calls a backend (RFC 9112 §3.2,
 * §6.1, §6.3; RFC 9110 §5.1). A pure function over the header list, so it is
 * unit-tested without a server; framing.c feeds it what libmicrohttpd parsed.
 *
 * Why: libmicrohttpd 0.9.75 is lenient (it takes the first of two
 * Transfer-Encoding or Host lines, reads a body as chunked next to a
 * Content-Length, keeps "Content-Length " with a space as an unknown header,
 * accepts Transfer-Encoding on HTTP/1.0). Each of those lets a proxy in front
 * frame the request differently from us and hide a second request in the
 * body (request smuggling). Every failure here is answered with
 * Connection: close and the body is never read.
 */
#ifndef GATEWAY_HTTPCHECK_H
#define GATEWAY_HTTPCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One header field line as received (several lines of one name stay
 * separate). value has the surrounding whitespace removed. */
struct http_field {
    const char *name;
    const char *value;
};

struct httpcheck_req {
    const struct http_field *fields;
    size_t n_fields;
    const char *version;     /* "HTTP/1.1", "HTTP/1.0" */
    size_t header_bytes;     /* request line + header block, as received */
    size_t max_header_bytes; /* server.max_header_bytes */
};

/* What the header block says about the body (valid when the check passed). */
struct httpcheck_body {
    bool chunked;            /* Transfer-Encoding: chunked */
    bool has_length;         /* a Content-Length was given */
    uint64_t content_length; /* its value */
};

/* Checks r. Returns 0 when the request may go on (body filled in), else the
 * status to answer (400, 431 or 501) with *why set to a short static
 * message for the client. Rules, in order:
 *   431  header_bytes > max_header_bytes
 *   400  a field name that is not an RFC 9110 token (e.g. "Content-Length "
 *        with whitespace before the colon)
 *   400  HTTP/1.1 (or later) without Host; any request with two Host lines
 *   400  two Transfer-Encoding lines; Transfer-Encoding with Content-Length;
 *        Transfer-Encoding on HTTP/1.0
 *   501  a Transfer-Encoding other than exactly "chunked" (any case)
 *   400  a Content-Length that is not 1*DIGIT (no sign, no list "5, 5"),
 *        above 2^63-1, or two Content-Length lines that differ */
int httpcheck_request(const struct httpcheck_req *r, struct httpcheck_body *body, const char **why);

/* The raw bytes of a connection's first request, as peeked from its socket
 * before libmicrohttpd reads them: finds the end of the header block
 * (CRLF CRLF, or bare LF LF as libmicrohttpd accepts), splits the lines
 * (a field name ends at the first colon) and applies httpcheck_request to
 * them, plus: a request line that is not "method SP target SP version", or
 * a folded line (obs-fold, RFC 9112 5.2) is a 400.
 * Returns -1 when the block is not complete within buf[0..len) (the caller
 * answers 431 once len exceeds max_header_bytes), 0 when it passes, else
 * the status (*why set). method and target (either may be NULL) receive
 * the request line's, cut to their sizes, for the access log. */
int httpcheck_raw(const char *buf, size_t len, size_t max_header_bytes, char *method,
                  size_t method_size, char *target, size_t target_size, const char **why);

/* True when s[0..n) is a non-empty RFC 9110 token. */
bool httpcheck_is_token(const char *s, size_t n);

#endif
