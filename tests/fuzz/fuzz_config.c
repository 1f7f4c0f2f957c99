/*
 * Fuzz target: the config loader (gateway/config.h).
 *
 * Input: arbitrary bytes as the config file, copied into a buffer of its
 * exact size (config_parse does not need NUL termination).
 *
 * Oracles beyond the sanitizers and the leak checker: a refused config has
 * at least one "path: message" line, an accepted one none; an accepted
 * config is usable as the server would use it: every endpoint's own route,
 * with each param filled in, routes (200) for its method, and every backend
 * URL of the endpoint matched builds (urlbuild 0) with its origin splittable.
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

static void check_endpoint(const struct config *cfg, const struct endpoint_conf *ep)
{
    if (!ep->name || !ep->method || !ep->path || ep->path[0] != '/') abort();
    if (ep->n_params > ROUTE_MAX_PARAMS || ep->n_segs > ROUTE_MAX_SEGS) abort();
    for (size_t i = 0; i < ep->n_backends; i++) {
        const struct backend_conf *b = &ep->backends[i];
        if (!b->name || !b->url || !b->method) abort();
        if (b->allow == NULL && b->n_allow) abort();
        if (b->fallback == FALLBACK_STATIC && (!b->static_json || !b->static_len)) abort();
        for (size_t k = 0; k < b->n_parts; k++)
            if (!b->parts[k].literal &&
                (b->parts[k].param < 0 || (size_t)b->parts[k].param >= ep->n_params))
                abort();
    }

    /* the route itself, params filled with "p<i>" */
    buf_t path;
    buf_init(&path, NULL);
    for (size_t s = 0; s < ep->n_segs; s++) {
        const struct route_seg *rs = &ep->segs[s];
        if (rs->literal) {
            if (buf_putc(&path, '/') || buf_append(&path, rs->literal, rs->literal_len)) abort();
        } else {
            if (rs->param < 0 || (size_t)rs->param >= ep->n_params) abort();
            if (buf_printf(&path, "/p%d", rs->param)) abort();
        }
    }
    if (ep->n_segs == 0 && buf_putc(&path, '/')) abort();

    struct route_match m;
    int st = router_match(cfg, ep->method, path.data, path.len, &m);
    if (st != 200) {
        fprintf(stderr, "own route %s %s (as %s) -> %d\n", ep->method, ep->path, path.data, st);
        abort();
    }
    /* a more specific endpoint may win; its backends must build too */
    for (size_t i = 0; i < m.ep->n_backends; i++) {
        const struct backend_conf *b = &m.ep->backends[i];
        buf_t url;
        buf_init(&url, NULL);
        static const char query[] = "a=1&b=x+y&c=%2F";
        int rc = urlbuild(&url, m.ep, b, &m, query, sizeof query - 1);
        /* a template whose own path is 2 KiB or more never builds */
        if (rc == -ENAMETOOLONG && strlen(b->url) >= URLBUILD_PATH_MAX) {
            buf_free(&url);
            continue;
        }
        if (rc != 0) {
            fprintf(stderr, "backend %s url %s does not build\n", b->name, b->url);
            abort();
        }
        char origin[512];
        int on = urlbuild_origin(b, origin, sizeof origin);
        if (on < 0 && on != -ENOSPC) abort();
        if (on >= 0 && (size_t)on > url.len) abort();
        buf_free(&url);
    }
    buf_free(&path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* exact size: a read past the text is an ASan report */
    char *json = malloc(size ? size : 1);
    if (!json) abort();
    memcpy(json, data, size);

    struct config_errors errs;
    memset(&errs, 0xa5, sizeof errs);
    struct config *cfg = config_parse(json, size, &errs);
    if (cfg) {
        if (errs.n != 0) abort();
        if (cfg->server.port == 0 && cfg->server.listen) {
            /* port 0 is refused by the loader */
            abort();
        }
        for (size_t i = 0; i < cfg->n_endpoints; i++)
            check_endpoint(cfg, &cfg->endpoints[i]);
        config_free(cfg);
    } else {
        if (errs.n == 0 || !errs.lines) abort();
        for (size_t i = 0; i < errs.n; i++)
            if (!errs.lines[i] || !strstr(errs.lines[i], ": ")) abort();
    }
    config_errors_free(&errs);
    /* NULL errs is allowed too */
    config_free(config_parse(json, size, NULL));
    free(json);
    return 0;
}
