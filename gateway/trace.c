/*
 * trace: traceparent parsing and formatting, X-Request-Id and
 * X-Request-Timeout-Ms checks, and the per-thread id generator (trace.h).
 * Pure functions apart from the generator's thread-local state.
 */
#include "gateway/trace.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static const char HEX[] = "0123456789abcdef";

/* --- per-thread generator ------------------------------------------------ */

static _Thread_local uint64_t rng[4];
static _Thread_local bool rng_ready;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rng_seed(void)
{
    uint64_t seed[4];
    ssize_t got = getrandom(seed, sizeof seed, GRND_NONBLOCK);
    if (got != (ssize_t)sizeof seed) {
        /* No entropy yet (early boot) or no getrandom: still distinct per
         * thread and per process, which is all correlation ids need. */
        static atomic_uint_fast64_t counter;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        x ^= (uint64_t)gettid() << 32 ^ (uint64_t)(uintptr_t)&rng;
        x ^= atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed) << 48;
        for (int i = 0; i < 4; i++)
            seed[i] = splitmix64(&x);
    }
    /* xoshiro's state must not be all zero; splitmix64 fixes that too. */
    uint64_t x = seed[0] ^ seed[1] ^ seed[2] ^ seed[3];
    for (int i = 0; i < 4; i++)
        rng[i] = seed[i] ^ splitmix64(&x);
    rng_ready = true;
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t trace_rand64(void)
{
    if (__builtin_expect(!rng_ready, 0)) rng_seed();
    /* xoshiro256** (Blackman and Vigna, public domain). */
    uint64_t r = rotl(rng[1] * 5, 7) * 9;
    uint64_t t = rng[1] << 17;
    rng[2] ^= rng[0];
    rng[3] ^= rng[1];
    rng[1] ^= rng[2];
    rng[0] ^= rng[3];
    rng[2] ^= t;
    rng[3] = rotl(rng[3], 45);
    return r;
}

void trace_new_trace_id(uint8_t id[TRACE_ID_BYTES])
{
    uint64_t a, b;
    do {
        a = trace_rand64();
        b = trace_rand64();
    } while ((a | b) == 0);
    memcpy(id, &a, 8);
    memcpy(id + 8, &b, 8);
}

void trace_new_span_id(uint8_t id[TRACE_SPAN_BYTES])
{
    uint64_t a;
    do
        a = trace_rand64();
    while (a == 0);
    memcpy(id, &a, 8);
}

void trace_start(struct trace_parent *tp, uint8_t flags)
{
    trace_new_trace_id(tp->trace_id);
    trace_new_span_id(tp->span_id);
    tp->flags = flags;
}

void trace_child(const struct trace_parent *parent, struct trace_parent *child)
{
    if (child != parent) *child = *parent;
    trace_new_span_id(child->span_id);
}

/* --- traceparent --------------------------------------------------------- */

/* Lower-case hex only: the spec forbids upper case. */
static inline int lowhex(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Decodes 2n hex characters into n bytes; false on a bad character or when
 * every byte is zero (and zero_ok is false). */
static bool unhex(const char *s, size_t n, uint8_t *out, bool zero_ok)
{
    uint8_t any = 0;
    for (size_t i = 0; i < n; i++) {
        int h = lowhex((unsigned char)s[2 * i]), l = lowhex((unsigned char)s[2 * i + 1]);
        if (h < 0 || l < 0) return false;
        out[i] = (uint8_t)(h << 4 | l);
        any |= out[i];
    }
    return zero_ok || any;
}

int trace_parse(const char *s, size_t n, struct trace_parent *tp)
{
    if (!s || n < TRACEPARENT_LEN) return -EINVAL;
    uint8_t version;
    if (!unhex(s, 1, &version, true) || version == 0xff) return -EINVAL;
    if (version == 0 && n != TRACEPARENT_LEN) return -EINVAL;
    if (n > TRACEPARENT_LEN && s[TRACEPARENT_LEN] != '-') return -EINVAL;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-') return -EINVAL;
    struct trace_parent t;
    if (!unhex(s + 3, TRACE_ID_BYTES, t.trace_id, false) ||
        !unhex(s + 36, TRACE_SPAN_BYTES, t.span_id, false) || !unhex(s + 53, 1, &t.flags, true))
        return -EINVAL;
    *tp = t;
    return 0;
}

void trace_hex(const uint8_t *id, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = HEX[id[i] >> 4];
        out[2 * i + 1] = HEX[id[i] & 15];
    }
    out[2 * n] = '\0';
}

void trace_format(const struct trace_parent *tp, char out[TRACEPARENT_LEN + 1])
{
    memcpy(out, "00-", 3);
    trace_hex(tp->trace_id, TRACE_ID_BYTES, out + 3);
    out[35] = '-';
    trace_hex(tp->span_id, TRACE_SPAN_BYTES, out + 36);
    out[52] = '-';
    trace_hex(&tp->flags, 1, out + 53);
}

/* --- X-Request-Id, X-Request-Timeout-Ms ---------------------------------- */

bool trace_request_id_valid(const char *s, size_t n)
{
    if (!s || n == 0 || n > TRACE_REQUEST_ID_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e) return false;
    }
    return true;
}

void trace_request_id_new(char out[TRACE_REQUEST_ID_LEN + 1])
{
    uint8_t id[TRACE_REQUEST_ID_LEN / 2];
    trace_new_trace_id(id);
    trace_hex(id, sizeof id, out);
}

int trace_parse_timeout_ms(const char *s, uint32_t *out)
{
    if (!s || !*s) return -EINVAL;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -EINVAL;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > INT32_MAX) /* checked per digit, so v never overflows */
            return -EINVAL;
    }
    if (v == 0) return -EINVAL;
    *out = (uint32_t)v;
    return 0;
}
