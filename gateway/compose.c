/*
 * compose: the call graph of one request (gateway/compose.h).
 *
 * Owns how the calls of fanout_run's errgroup are scheduled: workers take
 * ready tasks (a whole backend or one foreach item) from r->sched
 * (gateway/graph.h), render the placeholders of a path that reads other
 * bodies ({backend.path}, {item...}), open a foreach backend into one task
 * per element and join its items into an array. Invariants: every whole
 * backend ends exactly once, through call_finish (fanout.c), then
 * call_ended, which releases its children; a child of an omitted parent
 * fails without a call; a cancelled request starts nothing more.
 */
#include "gateway/compose.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errgroup.h"
#include "core/loop.h"
#include "gateway/call.h"
#include "gateway/expose.h"
#include "gateway/graph.h"
#include "gateway/jpath.h"
#include "gateway/json.h"
#include "gateway/metrics.h"
#include "gateway/shape.h"
#include "gateway/upstream.h"
#include "gateway/urlbuild.h"

/* ---- the call graph: workers take ready tasks (gateway/graph.h) ---- */

/* Renders {backend.path} from that backend's feed and {item...} from the
 * element; remembers which placeholder failed. */
struct render_arg {
    struct request *r;
    const char *elem;
    size_t elem_len;
    const struct url_part *failed;
};

static int render_field(void *arg, buf_t *out, const struct url_part *part)
{
    struct render_arg *ra = arg;
    int rc;
    if (part->backend == URL_PART_ITEM) {
        rc = graph_render(out, part, ra->elem, ra->elem_len);
    } else {
        const struct backend_call *p = &ra->r->calls[part->backend];
        rc = graph_render(out, part, p->feed, p->feed_len);
    }
    if (rc) ra->failed = part;
    return rc;
}

/* Builds the path of a call whose URL reads bodies. Returns 0, or -1 with
 * why_buf set. */
static int render_path(struct backend_call *c, buf_t *path, const char *elem, size_t elem_len)
{
    struct request *r = c->req;
    struct render_arg ra = {.r = r, .elem = elem, .elem_len = elem_len};
    buf_clear(path);
    int rc = urlbuild_path_fields(path, r->ep, c->b, &r->match, r->query, r->query_len,
                                  render_field, &ra);
    if (!rc) return 0;
    if (rc == -ENOENT && ra.failed)
        snprintf(c->why_buf, sizeof c->why_buf, "missing field %s", graph_part_name(ra.failed));
    else if (rc == -ENAMETOOLONG)
        snprintf(c->why_buf, sizeof c->why_buf, "URL path too long (limit %d bytes)",
                 URLBUILD_PATH_MAX - 1);
    else
        snprintf(c->why_buf, sizeof c->why_buf, "%s",
                 rc == -ENOMEM ? "out of memory" : "cannot build URL");
    return -1;
}

/* A dependency left out (optional and failed): its children fail. */
static const struct backend_call *failed_dep(const struct backend_call *c)
{
    for (size_t k = 0; k < c->b->n_deps; k++) {
        const struct backend_call *p = &c->req->calls[c->b->deps[k]];
        if (p->omit) return p;
    }
    return NULL;
}

static int worker(ctx_t *gctx, void *arg);

static int out_of_memory(ctx_t *gctx, void *arg)
{
    (void)gctx;
    (void)arg;
    return -ENOMEM;
}

/* More workers while tasks wait and slots are free (never parks). */
void spawn_workers(struct request *r)
{
    while (graph_sched_ready(&r->sched) > r->starting && eg_try_go(r->group, worker, r))
        r->starting++;
}

/* Backend c has ended (any outcome): timing, metrics, children. */
static void call_ended(struct backend_call *c)
{
    struct request *r = c->req;
    c->ended = true;
    c->dur_ns = loop_now(loop_current()) - c->t0;
    metrics_backend(r->metrics, r->ep->name, c->b->name, c->outcome,
                    (double)c->dur_ns / 1e9);
    if (c->b->n_children) {
        if (graph_sched_ended(&r->sched, r->ep, (size_t)(c - r->calls)) != 0)
            eg_try_go(r->group, out_of_memory, NULL); /* fails the group: 503 */
        spawn_workers(r);
    }
}

/* Ends c with a failure that happened before any call. */
static int fail_early(struct backend_call *c, const char *why)
{
    if (why != c->why_buf) snprintf(c->why_buf, sizeof c->why_buf, "%s", why);
    struct upstream_resp resp = {.result = UP_ERROR, .error = c->why_buf, .body = &c->body};
    int rc = call_finish(c, &resp);
    call_ended(c);
    return rc;
}

static int call_backend(ctx_t *gctx, struct backend_call *c)
{
    const struct backend_conf *b = c->b;
    const struct backend_call *dep = failed_dep(c);
    if (dep) {
        snprintf(c->why_buf, sizeof c->why_buf, "dependency %s failed", dep->b->name);
        return fail_early(c, c->why_buf);
    }
    if (b->n_deps) {
        if (render_path(c, &c->path, NULL, 0) != 0) return fail_early(c, c->why_buf);
        c->path_rc = 0; /* the check's build had the values left empty */
    }
    struct expose_cap *exp = expose_cap(c->req->expose, (size_t)(c - c->req->calls));
    struct upstream_resp resp = {.body = &c->body, .exp = exp};
    do_call(c, gctx, &c->path, c->path_rc,
            b->fallback == FALLBACK_DEGRADED || b->cache.enabled ? &c->key : NULL, &resp);
    c->status = resp.status;
    int rc = c->cache == CACHE_HIT ? cache_hit(c) : call_finish(c, &resp);
    /* only a fresh 2xx answer's headers count; a hedge's were not captured */
    if (c->outcome != OUT_OK || c->cache == CACHE_HIT || resp.exp != exp) expose_reset(exp);
    if (c->cache != CACHE_NONE) metrics_cache(c->req->metrics, b->name, c->cache);
    call_ended(c);
    return rc;
}

/* ---- foreach ---- */

/* The last item has ended: the array (or the failure) is the backend's. */
static int foreach_finish(struct backend_call *c)
{
    struct request *r = c->req;
    const struct backend_conf *b = c->b;
    struct upstream_resp resp = {.result = UP_OK, .status = 200, .body = &c->body};
    if (c->items_ctx) ctx_release(c->items_ctx); /* every item has ended */
    c->items_ctx = NULL;
    const struct item_call *bad = c->items_failed ? &c->items[c->first_bad] : NULL;
    if (bad) {
        resp.result = bad->outcome == OUT_TIMEOUT     ? UP_TIMEOUT
                      : bad->outcome == OUT_CANCELLED ? UP_CANCELED
                                                      : UP_ERROR;
        char why[120]; /* bad->why may be c->why_buf itself */
        snprintf(why, sizeof why, "%s", bad->why ? bad->why : "error");
        snprintf(c->why_buf, sizeof c->why_buf, "item %zu failed: %s", (size_t)(bad - c->items),
                 why);
        resp.error = c->why_buf;
    } else {
        buf_clear(&c->body);
        int rc = buf_putc(&c->body, '[');
        bool first = true;
        for (uint32_t k = 0; k < c->n_items && !rc; k++) {
            const struct item_call *it = &c->items[k];
            if (it->outcome != OUT_OK && b->item_failure == ITEM_OMIT) continue;
            if (!first) rc = buf_putc(&c->body, ',');
            first = false;
            if (!rc)
                rc = it->outcome == OUT_OK && it->part ? buf_append(&c->body, it->part, it->part_len)
                                                       : buf_puts(&c->body, "null");
        }
        if (!rc) rc = buf_putc(&c->body, ']');
        if (rc) {
            resp.result = UP_ERROR;
            resp.error = "out of memory";
        }
    }
    /* degraded key: name, every item URL, forwarded header values */
    buf_clear(&c->key);
    if (b->fallback == FALLBACK_DEGRADED) {
        char origin[256];
        if (urlbuild_origin(b, origin, sizeof origin) >= 0)
            for (uint32_t k = 0; k < c->n_items; k++) {
                if (!c->items[k].path.len) { /* an item never resolved: no key */
                    buf_clear(&c->key);
                    break;
                }
                degraded_key(&c->key, r, b, origin, &c->items[k].path);
            }
    }
    int rc = call_finish(c, &resp);
    call_ended(c);
    return rc;
}

/* Out of memory while the items were being set up. */
static int foreach_abort(struct backend_call *c)
{
    if (c->items_ctx) ctx_release(c->items_ctx);
    c->items_ctx = NULL;
    c->n_items = 0; /* none was started; the ones queued find c ended */
    return fail_early(c, "out of memory");
}

/* Reads the source array and queues one task per element. */
static int foreach_open(ctx_t *gctx, struct backend_call *c)
{
    struct request *r = c->req;
    const struct backend_conf *b = c->b;
    const struct backend_call *dep = failed_dep(c);
    if (dep) {
        snprintf(c->why_buf, sizeof c->why_buf, "dependency %s failed", dep->b->name);
        return fail_early(c, c->why_buf);
    }
    const struct backend_call *src = &r->calls[b->foreach_backend];
    const char *v;
    size_t vn;
    enum json_type t = src->feed ? jpath_get(src->feed, src->feed_len, b->foreach_path,
                                             strlen(b->foreach_path), &v, &vn)
                                 : JSON_NULL;
    if (t != JSON_ARRAY) {
        snprintf(c->why_buf, sizeof c->why_buf, "%s %s%s%s",
                 t == JSON_INVALID || t == JSON_NULL ? "missing field" : "not an array:",
                 src->b->name, *b->foreach_path ? "." : "", b->foreach_path);
        return fail_early(c, c->why_buf);
    }
    struct jpath_iter it;
    struct json_member m;
    size_t n = 0;
    jpath_iter_start(&it, v, vn);
    while (jpath_iter_next(&it, &m) > 0)
        n++;
    if (n > b->max_items) {
        snprintf(c->why_buf, sizeof c->why_buf, "too many items (%zu, max_items %u)", n,
                 b->max_items);
        return fail_early(c, c->why_buf);
    }
    if (n == 0) return foreach_finish(c);
    c->items = calloc(n, sizeof *c->items);
    c->items_ctx = ctx_with_cancel(gctx);
    if (!c->items || !c->items_ctx) return foreach_abort(c);
    c->n_items = c->items_left = (uint32_t)n;
    jpath_iter_start(&it, v, vn);
    for (size_t k = 0; k < n && jpath_iter_next(&it, &m) > 0; k++) {
        c->items[k].elem = m.value;
        c->items[k].elem_len = m.value_len;
        buf_init(&c->items[k].body, r->buf_pool);
        if (graph_sched_push(&r->sched, (struct graph_task){(uint32_t)(c - r->calls), (uint32_t)k}))
            return foreach_abort(c); /* queued items find it ended */
    }
    spawn_workers(r);
    return 0;
}

static void item_classify(struct backend_call *c, struct item_call *it,
                          const struct upstream_resp *resp)
{
    it->status = resp->status;
    it->outcome = OUT_ERROR;
    switch (resp->result) {
    case UP_OK:
        if (resp->status < 200 || resp->status > 299) {
            it->why = "bad status";
        } else if (it->body.len && json_check(it->body.data, it->body.len) == JSON_INVALID) {
            it->why = "invalid JSON";
        } else if (c->b->shape) {
            if (shape_apply(&it->shaped, c->b->shape, it->body.data, it->body.len, &it->why) == 0) {
                it->outcome = OUT_OK;
                it->part = it->shaped.data;
                it->part_len = it->shaped.len;
            }
        } else {
            it->outcome = OUT_OK;
            it->part = it->body.len ? it->body.data : NULL;
            it->part_len = it->body.len;
        }
        break;
    case UP_TIMEOUT:
        it->outcome = OUT_TIMEOUT;
        it->why = "timeout";
        break;
    case UP_CANCELED:
        it->outcome = OUT_CANCELLED;
        it->why = "cancelled";
        break;
    case UP_TOO_BIG:
    case UP_ERROR:
        it->why = resp->error;
        break;
    }
}

static int run_item(struct backend_call *c, uint32_t k)
{
    struct request *r = c->req;
    struct item_call *it = &c->items[k];
    if (c->ended) return 0; /* the backend already failed */
    if (c->items_failed) {
        it->outcome = OUT_CANCELLED;
        it->why = "cancelled";
    } else {
        struct upstream_resp resp = {.body = &it->body};
        buf_init(&it->path, NULL);
        if (render_path(c, &it->path, it->elem, it->elem_len) != 0) {
            it->outcome = OUT_ERROR;
            it->why = c->why_buf;
        } else {
            do_call(c, c->items_ctx, &it->path, 0, NULL, &resp);
            item_classify(c, it, &resp);
        }
        metrics_item(r->metrics, r->ep->name, c->b->name, it->outcome);
        if (it->outcome != OUT_OK && c->b->item_failure == ITEM_FAIL && !c->items_failed) {
            /* the backend has failed: its other items in flight stop now */
            c->items_failed = true;
            c->first_bad = k;
            ctx_cancel(c->items_ctx, 0);
        }
    }
    if (--c->items_left) return 0;
    return foreach_finish(c);
}

/* Runs one ready task. A request cancelled (first error, client gone)
 * starts nothing more; after the deadline tasks still end, at once,
 * through their fallback tables (degraded parts). */
static int run_task(ctx_t *gctx, struct request *r, struct graph_task t)
{
    struct backend_call *c = &r->calls[t.call];
    if (ctx_err(gctx) == CTX_CANCELED) return 0;
    if (t.item != GRAPH_WHOLE) return run_item(c, t.item);
    c->started = true;
    c->t0 = c->start_ns = loop_now(loop_current());
    if (c->b->foreach_path) return foreach_open(gctx, c);
    return call_backend(gctx, c);
}

static int worker(ctx_t *gctx, void *arg)
{
    struct request *r = arg;
    r->starting--;
    struct graph_task t;
    while (graph_sched_pop(&r->sched, &t)) {
        spawn_workers(r);
        int rc = run_task(gctx, r, t);
        if (rc) return rc;
    }
    return 0;
}