/*
 * Fuzz target: the router and URL templating.
 *
 * Input: one selector byte for the method (byte % 8: GET POST PUT DELETE
 * HEAD PATCH OPTIONS, or 7 = the bytes up to the first space are the
 * method), then the raw path, then '?' and the raw query. Path and query are
 * copied into buffers of their exact size so that any read past them is an
 * ASan report. A fixed config with a few routes and templates is matched
 * against; on a match every backend URL is built in both forms.
 *
 * Oracles beyond the sanitizers: params are slices of the path; a built URL
 * is printable ASCII, has exactly the '/' of its template (a param never adds
 * a segment), no fragment and no "." or ".." segment; urlbuild agrees with
 * urlbuild_origin + urlbuild_path; router_pct_decode never overflows its
 * output nor answers -ENOSPC when cap >= n.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "gateway/config.h"
#include "gateway/router.h"
#include "gateway/urlbuild.h"

static const char CONFIG[] =
    "{\"server\": {\"listen\": \"127.0.0.1:8080\", \"workers\": 1},"
    " \"endpoints\": ["
    "  {\"name\": \"dashboard\", \"path\": \"/api/dashboard/{id}\","
    "   \"forward_query\": [\"lang\", \"q\"],"
    "   \"backends\": ["
    "    {\"name\": \"user\", \"url\": \"http://127.0.0.1:9001/users/{id}\", \"key\": \"user\"},"
    "    {\"name\": \"orders\", \"url\": \"http://127.0.0.1:9001/orders/{id}?x=1\", \"key\": "
    "\"orders\"}]},"
    "  {\"name\": \"new\", \"path\": \"/api/users/new\","
    "   \"backends\": [{\"name\": \"n\", \"url\": \"http://127.0.0.1:9001/new\"}]},"
    "  {\"name\": \"user\", \"path\": \"/api/users/{id}\","
    "   \"backends\": [{\"name\": \"u\", \"url\": \"https://users.local:8443/v1/{id}.json\"}]},"
    "  {\"name\": \"upd\", \"method\": \"POST\", \"path\": \"/api/users/{id}\","
    "   \"backends\": [{\"name\": \"u\", \"url\": \"http://127.0.0.1:9001/users/{id}\","
    "    \"method\": \"POST\"}]},"
    "  {\"name\": \"pair\", \"path\": \"/a/{x}/b/{y}\", \"forward_query\": [\"page\"],"
    "   \"backends\": ["
    "    {\"name\": \"p\", \"url\": \"http://127.0.0.1:9001/{y}/{x}/{y}{x}\", \"key\": \"p\"},"
    "    {\"name\": \"s\", \"url\": \"http://127.0.0.1:9001/s?q={x}&r={y}\", \"key\": \"s\"}]},"
    "  {\"name\": \"del\", \"method\": \"DELETE\", \"path\": \"/a/{x}/b/{y}\","
    "   \"backends\": [{\"name\": \"d\", \"url\": \"http://127.0.0.1:9001/d/{x}\"}]},"
    "  {\"name\": \"root\", \"path\": \"/\","
    "   \"backends\": [{\"name\": \"r\", \"url\": \"http://127.0.0.1:9001/\"}]}"
    " ]}";

static const char *const METHODS[] = {"GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"};

static struct config *cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    struct config_errors errs;
    cfg = config_parse(CONFIG, sizeof CONFIG - 1, &errs);
    if (!cfg) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "fuzz_router config: %s\n", errs.lines[i]);
        abort();
    }
    return 0;
}

static size_t count(const char *s, size_t n, char c)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += s[i] == c;
    return k;
}

static void check_url(const struct backend_conf *b, const char *u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)u[i] <= 0x20 || (unsigned char)u[i] >= 0x7f || u[i] == '#') abort();
    if (count(u, n, '/') != count(b->url, strlen(b->url), '/')) abort();
    /* the path part: no "." or ".." segment */
    const char *q = memchr(u, '?', n);
    size_t pn = q ? (size_t)(q - u) : n;
    const char *p = strstr(u, "://");
    if (!p) abort();
    p = memchr(p + 3, '/', pn - (size_t)(p + 3 - u));
    if (!p) abort();
    while (p < u + pn) {
        const char *s = p + 1;
        const char *e = memchr(s, '/', (size_t)(u + pn - s));
        if (!e) e = u + pn;
        size_t sl = (size_t)(e - s);
        if ((sl == 1 && s[0] == '.') || (sl == 2 && s[0] == '.' && s[1] == '.')) abort();
        p = e;
    }
}

static void check_decode(const char *in, size_t n)
{
    char *out = malloc(n ? n : 1);
    if (!out) return;
    int r = router_pct_decode(in, n, out, n);
    if (r == -ENOSPC || r > (int)n || (r < 0 && r != -EINVAL)) abort();
    if (n > 1) {
        int r2 = router_pct_decode(in, n, out, n / 2);
        if (r2 > (int)(n / 2) || (r2 < 0 && r2 != -EINVAL && r2 != -ENOSPC)) abort();
        if (r >= 0 && r <= (int)(n / 2) && r2 != r) abort();
    }
    free(out);
}

static void build_all(const struct route_match *m, const char *query, size_t qn)
{
    const struct endpoint_conf *ep = m->ep;
    for (size_t i = 0; i < ep->n_backends; i++) {
        const struct backend_conf *b = &ep->backends[i];
        buf_t whole, path;
        buf_init(&whole, NULL);
        buf_init(&path, NULL);
        int r1 = urlbuild(&whole, ep, b, m, query, qn);
        int r2 = urlbuild_path(&path, ep, b, m, query, qn);
        if (r1 != r2 || (r1 != 0 && r1 != -EINVAL && r1 != -EILSEQ && r1 != -E2BIG &&
                         r1 != -ENAMETOOLONG))
            abort();
        if (r1 == 0) {
            char origin[256];
            int on = urlbuild_origin(b, origin, sizeof origin);
            if (on < 0) abort();
            if (whole.len != (size_t)on + path.len) abort();
            if (memcmp(whole.data, origin, (size_t)on) != 0) abort();
            if (memcmp(whole.data + on, path.data, path.len) != 0) abort();
            if (whole.data[whole.len] != '\0') abort();
            check_url(b, whole.data, whole.len);
        } else if (whole.len != 0 || path.len != 0) {
            abort(); /* failure leaves out as it was */
        }
        buf_free(&whole);
        buf_free(&path);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    char method[16];
    const char *rest = (const char *)data + 1;
    size_t rn = size - 1;
    unsigned sel = data[0] % 8;
    if (sel < 7) {
        snprintf(method, sizeof method, "%s", METHODS[sel]);
    } else {
        const char *sp = memchr(rest, ' ', rn);
        size_t mn = sp ? (size_t)(sp - rest) : 0;
        if (mn >= sizeof method) mn = sizeof method - 1;
        memcpy(method, rest, mn);
        method[mn] = '\0';
        if (sp) {
            rn -= (size_t)(sp + 1 - rest);
            rest = sp + 1;
        }
    }
    const char *qm = memchr(rest, '?', rn);
    size_t pn = qm ? (size_t)(qm - rest) : rn;
    size_t qn = qm ? rn - pn - 1 : 0;
    /* exact-size copies: a read past either end is an ASan report */
    char *path = malloc(pn ? pn : 1);
    char *query = malloc(qn ? qn : 1);
    if (!path || !query) abort();
    memcpy(path, rest, pn);
    if (qn) memcpy(query, qm + 1, qn);

    check_decode(path, pn);
    check_decode(query, qn);

    struct route_match m;
    memset(&m, 0xa5, sizeof m);
    int st = router_match(cfg, method, path, pn, &m);
    if (st == 200) {
        if (!m.ep || m.n_params != m.ep->n_params || m.n_params > ROUTE_MAX_PARAMS) abort();
        if (strcmp(m.ep->method, method) != 0) abort();
        for (size_t i = 0; i < m.n_params; i++)
            if (m.params[i].len == 0 || m.params[i].p < path ||
                m.params[i].p + m.params[i].len > path + pn)
                abort();
        build_all(&m, qn ? query : NULL, qn); /* NULL is allowed when empty */
    } else if (st == 405) {
        if (memchr(m.allow, '\0', sizeof m.allow) == NULL || m.allow[0] == '\0') abort();
    } else if (st != 404) {
        abort();
    }
    free(path);
    free(query);
    return 0;
}
