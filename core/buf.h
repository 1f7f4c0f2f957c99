/*
 * buf: a growable byte buffer.
 *
 * Storage comes from malloc, or from a pool of fixed-size blocks (core/pool.h)
 * while the content fits one block, so the common small response costs no
 * allocation. The content is always NUL-terminated past len (not counted).
 * Functions returning int return 0 or -ENOMEM; on failure the buffer is
 * unchanged.
 */
#ifndef CORE_BUF_H
#define CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct pool;

typedef struct buf {
    char *data; /* read-only for users; NULL until the first append */
    size_t len; /* read-only */
    size_t cap; /* private */
    struct pool *pool; /* private: where a pooled block came from, or NULL */
    int pooled;        /* private: data is a pool block */
} buf_t;

/* An empty buffer; pool may be NULL (plain malloc). */
void buf_init(buf_t *b, struct pool *pool);
/* Frees the storage (a pool block goes back to its pool). */
void buf_free(buf_t *b);
/* Empties the buffer, keeping its storage. */
static inline void buf_clear(buf_t *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}
/* Makes room for extra more bytes (+ the terminating NUL). */
__attribute__((warn_unused_result)) int buf_reserve(buf_t *b, size_t extra);
int buf_append(buf_t *b, const void *p, size_t n);
int buf_puts(buf_t *b, const char *s);
int buf_putc(buf_t *b, char c);
int buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends v in decimal: the hot path's numbers without printf's cost. */
int buf_put_u64(buf_t *b, uint64_t v);

/* Writes v in decimal to out (no NUL) and returns the number of digits,
 * at most FMT_U64_MAX. */
#define FMT_U64_MAX 20
size_t fmt_u64(char *out, uint64_t v);
/* Hands the storage to the caller (malloc'ed, NUL-terminated; the caller
 * frees it) and empties b. NULL on out-of-memory. */
char *buf_detach(buf_t *b, size_t *len);

#endif
