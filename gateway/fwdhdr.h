/*
 * fwdhdr: the client request headers an endpoint forwards to its backends
 * (forward_headers), checked and joined once per request.
 *
 * Every request header goes through fwd_add in arrival order; those the
 * endpoint does not forward are ignored. A forwarded value is refused (the
 * client gets a 400 and no backend is called) when it holds a control
 * character other than HTAB (CR, LF, VT, FF, DEL, NUL...: a bare CR would
 * reach the backend byte for byte and start a header line of its own there),
 * or when the HTTP layer reports that it cut the value short (libmicrohttpd
 * ends a value at a NUL and drops the rest of the line; http.c tells).
 *
 * A header the client sends more than once is forwarded as one line with
 * all of its values, in order, joined with ", " (RFC 9110 5.3), Cookie with
 * "; " (RFC 6265 5.4). Where a list makes no sense and a recipient would pick
 * one of them (Authorization, Proxy-Authorization, Host, Content-Length),
 * a repeat is a 400 instead. Trailing spaces and tabs of a value are dropped;
 * empty values are left out of the list (libcurl would drop a header with an
 * empty value anyway).
 *
 * The result is the "Name: value" lines in forward_headers order, with the
 * configured spelling of each name, and each header's joined value (the
 * degraded-store key uses those). Cost: one case-insensitive compare per
 * request header and configured name, one copy of the forwarded values.
 */
#ifndef GATEWAY_FWDHDR_H
#define GATEWAY_FWDHDR_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

/* Most forward_headers one endpoint may have (config_endpoint.c enforces it):
 * with the gateway's own headers a call sends at most 36 lines. */
#define FWD_MAX 32

struct fwd {
    /* read-only after fwd_finish */
    buf_t lines;                /* "Name: value\0" lines, back to back */
    size_t n_lines;             /* lines in it */
    size_t line_off[FWD_MAX];   /* where each line starts, forward_headers order */
    const char *value[FWD_MAX]; /* per forward_headers[i]: joined value, NULL when absent */
    size_t value_len[FWD_MAX];
    char why[192]; /* the reason of a refusal: "header X-Fwd: control character in value" */
    /* private */
    const char *const *names;
    size_t n_names;
    buf_t vals; /* struct fwd_val records in arrival order */
    bool seen[FWD_MAX];
};

/* Starts an empty set for the configured names (the first FWD_MAX count).
 * Allocates nothing yet. */
void fwd_init(struct fwd *f, const char *const *names, size_t n_names);
/* One request header (value[0..len), need not be NUL-terminated) in arrival
 * order; cut: the HTTP layer dropped bytes of its line after the value.
 * Returns 0, 400 with f->why set when it must not be forwarded, or 503 when
 * out of memory. value must stay valid until fwd_finish. */
int fwd_add(struct fwd *f, const char *name, const char *value, size_t len, bool cut);
/* Builds lines and values. Returns 0 or 503 (out of memory, why set). */
int fwd_finish(struct fwd *f);
/* Line i of the n_lines built. */
static inline const char *fwd_line(const struct fwd *f, size_t i)
{
    return f->lines.data + f->line_off[i];
}
void fwd_free(struct fwd *f);

/* Is the value acceptable in a forwarded header? No byte below 0x20 but
 * HTAB, no DEL (bytes >= 0x80 are obs-text and pass). */
bool fwd_value_ok(const char *value, size_t len);

#endif
