/*
 * gzip: response compression (zlib) and the Accept-Encoding decision.
 * Each worker thread has one deflate stream and one output buffer, made on
 * its first compressed answer and reused (deflateReset) for every later
 * one; gzip_thread_free releases them when the worker ends.
 */
#ifndef GATEWAY_GZIP_H
#define GATEWAY_GZIP_H

#include <stdbool.h>
#include <stddef.h>

/* Whether an Accept-Encoding value allows gzip: "gzip" (or "x-gzip") with
 * q > 0, or else "*" with q > 0; an explicit gzip;q=0 refuses it even when
 * "*" is there. NULL or "" is false. Malformed members are skipped. */
bool gzip_accepts(const char *accept_encoding);
/* Compresses in into this thread's output buffer at level 1 to 9.
 * 0 with *out and *out_len valid until the thread's next call, or -1. */
int gzip_compress(int level, const void *in, size_t n, const void **out, size_t *out_len);
/* Frees this thread's stream and buffer. */
void gzip_thread_free(void);

#endif
