/*
 * buf: the growable byte buffer (buf.h): growth from a pool block to
 * malloc, always NUL-terminated; a failed call leaves the buffer unchanged.
 */
#include "core/buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/pool.h"

void buf_init(buf_t *b, struct pool *pool)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->pool = pool;
    b->pooled = 0;
}

void buf_free(buf_t *b)
{
    if (b->pooled)
        pool_put(b->pool, b->data);
    else
        free(b->data);
    buf_init(b, b->pool);
}

int buf_reserve(buf_t *b, size_t extra)
{
    if (extra > SIZE_MAX / 2 - b->len)
        return -ENOMEM;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    if (!b->data && b->pool && need <= pool_obj_size(b->pool)) {
        char *p = pool_get(b->pool);
        if (p) {
            b->data = p;
            b->cap = pool_obj_size(b->pool);
            b->pooled = 1;
            b->data[0] = '\0';
            return 0;
        }
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p;
    if (b->pooled) {
        p = malloc(cap);
        if (p)
            memcpy(p, b->data, b->len + 1);
    } else {
        p = realloc(b->data, cap);
    }
    if (!p)
        return -ENOMEM;
    if (b->pooled)
        pool_put(b->pool, b->data);
    b->pooled = 0;
    if (!b->data)
        p[0] = '\0';
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append(buf_t *b, const void *p, size_t n)
{
    int rc = buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int buf_puts(buf_t *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_putc(buf_t *b, char c)
{
    return buf_append(b, &c, 1);
}

int buf_printf(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n < sizeof tmp)
        return buf_append(b, tmp, (size_t)n);
    int rc = buf_reserve(b, (size_t)n);
    if (rc)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

size_t fmt_u64(char *out, uint64_t v)
{
    char tmp[FMT_U64_MAX];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

int buf_put_u64(buf_t *b, uint64_t v)
{
    char d[FMT_U64_MAX];
    return buf_append(b, d, fmt_u64(d, v));
}

char *buf_detach(buf_t *b, size_t *len)
{
    if (b->pooled || !b->data) {
        char *p = malloc(b->len + 1);
        if (!p)
            return NULL;
        if (b->data)
            memcpy(p, b->data, b->len);
        p[b->len] = '\0';
        if (len)
            *len = b->len;
        buf_free(b);
        return p;
    }
    char *p = b->data;
    if (len)
        *len = b->len;
    buf_init(b, b->pool);
    return p;
}
