/*
 * Fuzz target: the forwarded-header check and join (gateway/fwdhdr.h).
 *
 * Input: a list of headers, each "<selector byte><cut byte><value>\n"; the
 * selector picks a name (configured ones in various cases, and others), the
 * low bit of the cut byte says whether the HTTP layer cut the value. Each
 * value is copied into a buffer of its exact size (no NUL terminator).
 *
 * Oracles beyond the sanitizers: the first refusal happens exactly at the
 * first configured header whose value is cut, has a control character other
 * than HTAB, or repeats a single-valued header; otherwise every line built is
 * "Name: value" with a configured name, holds no control character but HTAB,
 * does not end in whitespace, and its value is exactly the non-empty
 * trimmed values of that header joined in arrival order.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/fwdhdr.h"

static const char *const CONFIGURED[] = {"X-Fwd", "Authorization", "Cookie", "Host"};
#define N_CONF (sizeof CONFIGURED / sizeof CONFIGURED[0])
static const char *const SEEN_AS[] = {"X-Fwd", "x-fwd",  "AUTHORIZATION", "Authorization",
                                      "cookie", "Host",  "X-Other",       "X-Fwdx"};
#define N_SEEN (sizeof SEEN_AS / sizeof SEEN_AS[0])

struct hdr {
    const char *name;
    char *value;
    size_t len;
    bool cut;
};

static int conf_index(const char *name)
{
    for (size_t i = 0; i < N_CONF; i++)
        if (strcasecmp(name, CONFIGURED[i]) == 0) return (int)i;
    return -1;
}

static size_t trim(const char *v, size_t n)
{
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return n;
}

/* The joined value of configured header i, built the slow way. */
static void expected(const struct hdr *h, size_t n, size_t i, char *out, size_t *len, bool *any)
{
    const char *sep = i == 2 ? "; " : ", ";
    *len = 0;
    *any = false;
    for (size_t k = 0; k < n; k++) {
        if (conf_index(h[k].name) != (int)i) continue;
        size_t t = trim(h[k].value, h[k].len);
        if (!t) continue;
        if (*any) {
            memcpy(out + *len, sep, 2);
            *len += 2;
        }
        memcpy(out + *len, h[k].value, t);
        *len += t;
        *any = true;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct hdr h[64];
    size_t n = 0;
    const uint8_t *p = data, *end = data + size;
    while (p + 2 <= end && n < 64) {
        const uint8_t *nl = memchr(p + 2, '\n', (size_t)(end - p - 2));
        const uint8_t *ve = nl ? nl : end;
        h[n].name = SEEN_AS[p[0] % N_SEEN];
        h[n].cut = p[1] & 1;
        h[n].len = (size_t)(ve - p - 2);
        h[n].value = malloc(h[n].len ? h[n].len : 1);
        if (!h[n].value) abort();
        memcpy(h[n].value, p + 2, h[n].len);
        n++;
        p = nl ? nl + 1 : end;
    }

    /* where the first refusal must be */
    size_t want_fail = n;
    bool seen[N_CONF] = {false};
    for (size_t k = 0; k < n && want_fail == n; k++) {
        int i = conf_index(h[k].name);
        if (i < 0) continue;
        bool single = i == 1 || i == 3;
        if (h[k].cut || !fwd_value_ok(h[k].value, h[k].len) || (seen[i] && single)) want_fail = k;
        seen[i] = true;
    }

    struct fwd f;
    fwd_init(&f, CONFIGURED, N_CONF);
    size_t k = 0;
    int st = 0;
    for (; k < n && !st; k++)
        st = fwd_add(&f, h[k].name, h[k].value, h[k].len, h[k].cut);
    if (want_fail < n) {
        if (st != 400 || k - 1 != want_fail || strncmp(f.why, "header ", 7) != 0) abort();
    } else {
        if (st != 0 || fwd_finish(&f) != 0) abort();
        size_t line = 0;
        static char want[64 * 4096];
        for (size_t i = 0; i < N_CONF; i++) {
            size_t wl;
            bool any;
            expected(h, n, i, want, &wl, &any);
            if (!any) {
                if (f.value[i]) abort();
                continue;
            }
            const char *l = fwd_line(&f, line++);
            size_t nl = strlen(CONFIGURED[i]);
            if (strncmp(l, CONFIGURED[i], nl) != 0 || l[nl] != ':' || l[nl + 1] != ' ') abort();
            if (strlen(l) != nl + 2 + wl || memcmp(l + nl + 2, want, wl) != 0) abort();
            if (f.value[i] != l + nl + 2 || f.value_len[i] != wl) abort();
            if (!fwd_value_ok(l, strlen(l)) || trim(l, strlen(l)) != strlen(l)) abort();
        }
        if (line != f.n_lines) abort();
    }
    fwd_free(&f);
    for (size_t i = 0; i < n; i++)
        free(h[i].value);
    return 0;
}
