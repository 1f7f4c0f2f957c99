/*
 * h1resp: an incremental, strict HTTP/1.1 response parser for the native
 * upstream transport. Pure: no I/O, no allocation, no global state; one
 * struct h1resp per response, fed whatever the socket returned.
 *
 * Owns: framing (status line, header block, Content-Length, chunked with
 * extensions and trailers, read-to-close, 1xx skipped, no body for
 * HEAD/204/304), the keep-alive decision, and the strictness rules that keep
 * a response from being read differently by two parsers (RFC 9112). Every
 * rule broken is an H1_ERROR with a static message in p->error.
 *
 * Decisions (where RFC 9112 leaves a choice):
 *   - a bare LF ends a line like CRLF (RFC 9112 §2.2 MAY; curl and nginx do
 *     the same); a CR anywhere but right before LF is an error;
 *   - the status line is "HTTP/1.0" or "HTTP/1.1", SP, three digits in
 *     100..599, then SP and a reason phrase (no CTLs but HTAB) or the end of
 *     the line (a missing reason's SP is tolerated);
 *   - Content-Length repeated with the same value, or as a list of equal
 *     values ("5, 5"), counts as one (RFC 9110 §8.6); anything but digits,
 *     an empty element or a value over INT64_MAX is an error;
 *   - Transfer-Encoding must be exactly "chunked" (case-insensitive, once);
 *     any other coding, a list, or Transfer-Encoding in an HTTP/1.0
 *     response is an error (no read-to-close fallback);
 *   - 101 is an error (no upgrades); other 1xx are skipped whole (their
 *     bytes count against the 64 KiB header budget);
 *   - a line (status, field, chunk size, trailer) holds at most
 *     H1_MAX_LINE bytes with its line ending; the status line, all header
 *     lines of every 1xx and of the final response, and the trailers share
 *     one budget of H1_MAX_HEADER_BLOCK bytes;
 *   - chunk extensions must be ";name[=value]" with token names and token or
 *     quoted-string values; they are skipped.
 *
 * Split reads: lines that arrive whole are parsed where they lie; a line cut
 * by the end of a feed is copied into the struct's line buffer (that is why
 * the struct is ~8.3 KiB: keep it in the connection or call object rather
 * than on a small coroutine stack). Results and error messages do not depend
 * on how the bytes were split.
 *
 * Thread safety: none needed (one parser, one caller).
 */
#ifndef GATEWAY_H1RESP_H
#define GATEWAY_H1RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define H1_MAX_HEADER_BLOCK (64 * 1024)
#define H1_MAX_LINE         (8 * 1024)

enum h1_status { H1_MORE = 0, H1_DONE = 1, H1_ERROR = -1 };

/* Body bytes (already de-chunked), in order, possibly in many pieces.
 * Return 0 to go on, non-zero to abort: feed then returns H1_ERROR with
 * error "aborted by body callback". */
typedef int (*h1_body_fn)(void *arg, const char *data, size_t len);

/* One header field of the final response (never of a 1xx, never a
 * trailer), called as soon as its line is complete, before headers_done.
 * name is as received (compare case-insensitively); value has its leading
 * and trailing SP/HTAB removed. Neither is NUL-terminated and both are valid
 * only during the call: copy what you keep. Return 0 to go on, non-zero to
 * abort (H1_ERROR "aborted by header callback"). The extension point for
 * expose_headers, Cache-Control and the like. */
typedef int (*h1_header_fn)(void *arg, const char *name, size_t name_len, const char *value,
                            size_t value_len);

struct h1resp {
    /* read-only results, valid once headers_done */
    int status;             /* final status (1xx are skipped) */
    bool headers_done;      /* the final response's header block is complete */
    bool keep_alive;        /* valid at H1_DONE: the connection may be reused (HTTP/1.1 without
                               Connection: close, or HTTP/1.0 with Connection: keep-alive; never
                               after a read-to-close body) */
    int64_t content_length; /* -1 when absent */
    bool chunked;
    const char *error; /* static text at H1_ERROR, e.g. "two different Content-Length" */
    size_t bytes_seen; /* total bytes fed so far, consumed or not (0 vs > 0 decides the
                          transport's stale-connection retry) */

    /* private */
    h1_body_fn on_body_;
    void *body_arg_;
    h1_header_fn on_header_;
    void *header_arg_;
    uint64_t remaining_;  /* body bytes left: Content-Length or current chunk */
    size_t header_bytes_; /* header budget used (all 1xx blocks + final + trailers) */
    size_t line_len_;     /* bytes of a cut line held in line_ */
    uint8_t state_;
    uint8_t minor_;        /* HTTP/1.<minor_> */
    bool no_body_;         /* the request was HEAD */
    bool conn_close_;      /* Connection: close seen */
    bool conn_keep_alive_; /* Connection: keep-alive seen */
    bool te_seen_;         /* a Transfer-Encoding header seen */
    char line_[H1_MAX_LINE];
};

/* Prepares p for one response. no_body: the request was HEAD (no body
 * whatever the headers say). on_body may be NULL (body bytes are dropped).
 * Never fails. */
void h1resp_init(struct h1resp *p, bool no_body, h1_body_fn on_body, void *arg);

/* Optional, after h1resp_init and before the first feed: on_header is called
 * for every field of the final response (see h1_header_fn). */
void h1resp_on_header(struct h1resp *p, h1_header_fn on_header, void *arg);

/* Feeds bytes read from the socket. *used = bytes consumed.
 *   H1_MORE:  all len bytes consumed, the response needs more;
 *   H1_DONE:  the response ended; bytes after its end are not consumed
 *             (*used < len: the transport must not reuse the connection);
 *   H1_ERROR: p->error says why; *used is where parsing stopped.
 * Once DONE or ERROR, later calls return the same with *used = 0 (bytes are
 * still counted in bytes_seen). len may be 0. */
enum h1_status h1resp_feed(struct h1resp *p, const char *data, size_t len, size_t *used);

/* The peer closed the connection (EOF): H1_DONE for a read-to-close body
 * (or a response already DONE), else H1_ERROR "connection closed before the
 * response ended" (also when no byte came at all: see bytes_seen). */
enum h1_status h1resp_eof(struct h1resp *p);

#endif
