/*
 * framing: the request-framing rules (httpcheck.h) applied to what
 * libmicrohttpd parsed, in the access handler's first call, and the sizing
 * of libmicrohttpd's per-connection memory they rely on. Internal to the
 * HTTP side (request.c); listener.c checks a connection's first request on
 * its raw bytes before libmicrohttpd reads it, this checks every request.
 */
#ifndef GATEWAY_FRAMING_H
#define GATEWAY_FRAMING_H

#include <microhttpd.h>
#include <stddef.h>

#include "gateway/httpcheck.h"

/* libmicrohttpd's memory per connection for a header limit of
 * max_header_bytes (MHD_OPTION_CONNECTION_MEMORY_LIMIT). */
size_t framing_conn_memory(size_t max_header_bytes);

/* The path of a request target: an absolute-form target
 * ("http://host/path", RFC 9112 3.2.2) gives its path ("/" when it has
 * none); any other target is returned as it is. Points into url or to a
 * static "/". */
const char *framing_origin_path(const char *url);

/* Checks the request on conn (headers in, body not read): the rules of
 * httpcheck_request over every header line as received, and a 431 when the
 * headers leave less than the answer needs of conn_memory. Returns 0 with
 * *body filled, or the status to refuse with (*why set, static). */
int framing_check(struct MHD_Connection *conn, const char *version, size_t max_header_bytes,
                  size_t conn_memory, struct httpcheck_body *body, const char **why);

#endif
