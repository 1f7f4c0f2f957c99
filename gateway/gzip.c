/*
 * gzip: see gzip.h. The stream and buffer are thread-local: a worker is
 * one thread and a request never leaves it, so no locking; a level change
 * (config reload) is a deflateParams on the next use, not a new stream.
 */
#include "gateway/gzip.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

/* A buffer grown beyond this is given back after use. */
#define KEEP_BYTES (1u << 20)

static __thread z_stream zs;
static __thread bool zs_ready;
static __thread int zs_level;
static __thread unsigned char *obuf;
static __thread size_t ocap;

static const char *skip_ows(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* q of one member's parameters (";q=0.5"), 1000ths; 1000 without q; -1 when malformed. */
static int member_q(const char *p, const char *end)
{
    int q = 1000;
    while (p < end) {
        p = skip_ows(p);
        if (p >= end) break;
        if (*p != ';') return -1;
        p = skip_ows(p + 1);
        if (end - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
            p += 2;
            if (p >= end || (*p != '0' && *p != '1')) return -1;
            q = (*p++ - '0') * 1000;
            if (p < end && *p == '.') {
                p++;
                for (int scale = 100; p < end && isdigit((unsigned char)*p); p++, scale /= 10)
                    q += (*p - '0') * scale;
            }
            if (q > 1000) return -1;
        }
        while (p < end && *p != ';')
            p++;
    }
    return q;
}

bool gzip_accepts(const char *ae)
{
    if (!ae) return false;
    int gzip_q = -1, star_q = -1;
    for (const char *p = ae; *p;) {
        p = skip_ows(p);
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        const char *t = p;
        while (t < end && *t != ';' && *t != ' ' && *t != '\t')
            t++;
        size_t n = (size_t)(t - p);
        int q = member_q(t, end);
        if (q >= 0) {
            if ((n == 4 && strncasecmp(p, "gzip", 4) == 0) ||
                (n == 6 && strncasecmp(p, "x-gzip", 6) == 0))
                gzip_q = q > gzip_q ? q : gzip_q;
            else if (n == 1 && *p == '*')
                star_q = q;
        }
        p = *end ? end + 1 : end;
    }
    return gzip_q >= 0 ? gzip_q > 0 : star_q > 0;
}

static int stream_ready(int level)
{
    if (!zs_ready) {
        /* 15 + 16: a gzip header and trailer, not zlib's */
        if (deflateInit2(&zs, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return -1;
        zs_ready = true;
        zs_level = level;
        return 0;
    }
    if (deflateReset(&zs) != Z_OK) return -1;
    if (level != zs_level) {
        if (deflateParams(&zs, level, Z_DEFAULT_STRATEGY) != Z_OK) return -1;
        zs_level = level;
    }
    return 0;
}

int gzip_compress(int level, const void *in, size_t n, const void **out, size_t *out_len)
{
    if (n > UINT32_MAX / 2 || stream_ready(level)) return -1;
    size_t bound = deflateBound(&zs, (uLong)n);
    if (ocap > KEEP_BYTES && bound <= KEEP_BYTES) { /* a huge answer's buffer is not kept */
        free(obuf);
        obuf = NULL;
        ocap = 0;
    }
    if (bound > ocap) {
        unsigned char *b = realloc(obuf, bound);
        if (!b) return -1;
        obuf = b;
        ocap = bound;
    }
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)n;
    zs.next_out = obuf;
    zs.avail_out = (uInt)ocap;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) return -1;
    *out = obuf;
    *out_len = ocap - zs.avail_out;
    return 0;
}

void gzip_thread_free(void)
{
    if (zs_ready) deflateEnd(&zs);
    zs_ready = false;
    free(obuf);
    obuf = NULL;
    ocap = 0;
}
