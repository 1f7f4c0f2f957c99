/*
 * Fuzz target: the request identity headers (gateway/trace.h).
 *
 * Input: a selector byte, then a header value. selector % 4: 0 traceparent,
 * 1 X-Request-Id, 2 X-Request-Timeout-Ms, 3 all three on the same value. The
 * value is copied into a buffer of its exact size (NUL-terminated only for
 * the timeout parser, whose contract wants a C string).
 *
 * Oracles beyond the sanitizers: an accepted traceparent formats back to the
 * same ids (and to the input itself for version 00) and re-parses equal; the
 * request id check and the timeout parser agree with straightforward
 * reference implementations of their documented rules.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/trace.h"

static void check_traceparent(const char *s, size_t n)
{
    struct trace_parent tp;
    if (trace_parse(s, n, &tp) != 0) return;
    if (n < TRACEPARENT_LEN) abort();
    /* version 00 is exactly 55 characters; a later one continues with '-' */
    if (memcmp(s, "00", 2) == 0 ? n != TRACEPARENT_LEN : (n > TRACEPARENT_LEN && s[55] != '-'))
        abort();
    if (memcmp(s, "ff", 2) == 0) abort();
    char out[TRACEPARENT_LEN + 1];
    memset(out, 'x', sizeof out);
    trace_format(&tp, out);
    if (out[TRACEPARENT_LEN] != '\0' || strlen(out) != TRACEPARENT_LEN) abort();
    if (memcmp(out, "00", 2) != 0 || memcmp(out + 2, s + 2, TRACEPARENT_LEN - 2) != 0) abort();
    struct trace_parent again;
    if (trace_parse(out, TRACEPARENT_LEN, &again) != 0) abort();
    if (memcmp(&again, &tp, sizeof tp) != 0) abort();
    static const uint8_t zero[TRACE_ID_BYTES];
    if (memcmp(tp.trace_id, zero, TRACE_ID_BYTES) == 0) abort();
    if (memcmp(tp.span_id, zero, TRACE_SPAN_BYTES) == 0) abort();
}

static void check_request_id(const char *s, size_t n)
{
    bool want = n >= 1 && n <= TRACE_REQUEST_ID_MAX;
    for (size_t i = 0; want && i < n; i++)
        want = (unsigned char)s[i] >= 0x21 && (unsigned char)s[i] <= 0x7e;
    if (trace_request_id_valid(s, n) != want) abort();
}

static void check_timeout(const char *s, size_t n)
{
    /* the parser reads a C string: stop at the first NUL like it must */
    char *z = malloc(n + 1);
    if (!z) abort();
    memcpy(z, s, n);
    z[n] = '\0';
    size_t len = strlen(z);
    bool want = len > 0;
    uint64_t v = 0;
    for (size_t i = 0; want && i < len; i++) {
        want = z[i] >= '0' && z[i] <= '9';
        if (want && v <= INT32_MAX) v = v * 10 + (uint64_t)(z[i] - '0');
    }
    want = want && v >= 1 && v <= INT32_MAX;
    uint32_t got = 0xdeadbeef;
    int r = trace_parse_timeout_ms(z, &got);
    if ((r == 0) != want) abort();
    if (r == 0 && got != v) abort();
    free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t n = size - 1;
    /* exact size: a read past the value is an ASan report */
    char *s = malloc(n ? n : 1);
    if (!s) abort();
    memcpy(s, data + 1, n);
    switch (data[0] % 4) {
    case 0:
        check_traceparent(s, n);
        break;
    case 1:
        check_request_id(s, n);
        break;
    case 2:
        check_timeout(s, n);
        break;
    default:
        check_traceparent(s, n);
        check_request_id(s, n);
        check_timeout(s, n);
    }
    free(s);
    return 0;
}
