/*
 * framing: the request-framing rules applied to requests libmicrohttpd
 * parsed, and its per-connection memory (see framing.h).
 */
#include "gateway/framing.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* libmicrohttpd's memory per client connection (one pool, fixed at start):
 * the request line and headers stay in it for the whole request, with one
 * record per header, cookie and query argument (VALUE_COST), a copy of the
 * Cookie header (parsed into cookies), then the answer's headers and I/O
 * buffers (RESPONSE_ROOM). Sized 2 x server.max_header_bytes (the block and
 * its Cookie copy) + RESPONSE_ROOM + RECORD_ROOM, so a request under the
 * limit is answered and one somewhat over it still reaches the access
 * handler, which answers one clean 431 (far beyond, libmicrohttpd answers
 * itself). libmicrohttpd zeroes the whole pool after every request, so its
 * size is paid per request in CPU and per connection in resident memory:
 * keep it no larger than that. */
#define RESPONSE_ROOM (8 * 1024)
#define RECORD_ROOM   (4 * 1024)
#define VALUE_COST    64 /* struct MHD_HTTP_Header (56 bytes on LP64), aligned */

size_t framing_conn_memory(size_t max_header_bytes)
{
    return 2 * max_header_bytes + RESPONSE_ROOM + RECORD_ROOM;
}

/* RFC 9112 3.2.2: a request target in absolute form ("http://host/path")
 * is routed on its path; libmicrohttpd hands it over as it came. */
const char *framing_origin_path(const char *url)
{
    const char *p;
    if (strncasecmp(url, "http://", 7) == 0)
        p = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        p = url + 8;
    else
        return url;
    const char *slash = strchr(p, '/');
    return slash ? slash : "/";
}

static enum MHD_Result collect_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    struct httpcheck_req *r = cls;
    struct http_field *f = (struct http_field *)r->fields;
    f[r->n_fields++] = (struct http_field){key, value};
    return MHD_YES;
}

/* What this request takes of libmicrohttpd's pool (see RESPONSE_ROOM). */
static size_t pool_used(struct MHD_Connection *conn, size_t header_bytes)
{
    int n = MHD_get_connection_values(
        conn, MHD_HEADER_KIND | MHD_COOKIE_KIND | MHD_GET_ARGUMENT_KIND, NULL, NULL);
    const char *cookie = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Cookie");
    return header_bytes + (size_t)(n > 0 ? n : 0) * VALUE_COST + (cookie ? strlen(cookie) + 1 : 0);
}

/* MHD_get_connection_values gives repeated header lines separately, as
 * the rules need. A request whose headers leave too little of the pool for
 * the answer is a 431 too: it could not be answered after its backends
 * ran (libmicrohttpd would close the connection without a byte). */
int framing_check(struct MHD_Connection *conn, const char *version, size_t max_header_bytes,
                  size_t conn_memory, struct httpcheck_body *body, const char **why)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    size_t header_bytes = ci ? ci->header_size : 0;
    if (pool_used(conn, header_bytes) + RESPONSE_ROOM > conn_memory) {
        *why = "request header fields too large";
        return 431;
    }
    int n = MHD_get_connection_values(conn, MHD_HEADER_KIND, NULL, NULL);
    struct http_field *fields = malloc(sizeof *fields * (size_t)(n > 0 ? n : 1));
    if (!fields) {
        *why = "out of memory";
        return 503;
    }
    struct httpcheck_req r = {.fields = fields,
                              .version = version,
                              .header_bytes = header_bytes,
                              .max_header_bytes = max_header_bytes};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, collect_field, &r);
    int st = httpcheck_request(&r, body, why);
    free(fields);
    return st;
}
