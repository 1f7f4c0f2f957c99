/*
 * cache: fresh answers from the store, and the per-worker table of shared
 * calls (see cache.h for the model).
 *
 * A flight is one shared call: its key, a private copy of the request, its
 * context (a child of the background, cancelled when its last waiter
 * leaves), the answer, and the waiters parked on it (each a struct waiter
 * on its caller's stack). It is reference counted: its coroutine holds one
 * reference until the call returns, every waiter one until it has copied
 * the answer or left. It is in the table while it can still be joined: from
 * its start until the last reference goes, so that a call arriving after the
 * answer but before the waiters have run (and stored it) takes the same
 * answer instead of starting a second call; a flight whose waiters all left
 * before its answer is taken out of the table at once (it is being
 * cancelled).
 */
#include "gateway/cache.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/avalue.h"
#include "core/container_of.h"
#include "gateway/cachectl.h"
#include "gateway/degraded.h"

/* Buckets of the flight table: flights in progress on one worker are few
 * (one per distinct key being fetched), so a fixed table keeps chains short
 * without ever resizing. */
#define FLIGHT_BUCKETS 256

struct waiter {
    struct waiter *prev, *next;
    coro_t *co;
    ctx_hook_t hook;
};

struct flight {
    struct flight *next; /* bucket chain */
    struct cache *c;
    uint64_t hash;
    size_t klen;
    char *key;
    ctx_t *ctx;
    struct upstream_req req; /* its strings live in copy */
    struct attempt_plan plan; /* plan.cfg retained */
    struct upstream_resp resp;
    struct attempt_info info;
    buf_t body;
    struct waiter *waiters; /* parked callers */
    unsigned n_waiters;
    unsigned refs;
    bool listed; /* in the table */
    bool done;   /* resp is final */
    char *copy;  /* one allocation: key, method, origin, path, body, headers */
};

struct cache {
    loop_t *loop;
    struct degraded *store;
    cache_backend_fn call;
    void *call_arg;
    unsigned n_flights;
    void (*idle_fn)(void *arg);
    void *idle_arg;
    struct flight *table[FLIGHT_BUCKETS];
};

struct cache *cache_new(loop_t *loop, struct degraded *store, cache_backend_fn call, void *arg)
{
    struct cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->loop = loop;
    c->store = store;
    c->call = call;
    c->call_arg = arg;
    return c;
}

void cache_free(struct cache *c)
{
    free(c);
}

unsigned cache_flights(const struct cache *c)
{
    return c->n_flights;
}

void cache_on_idle(struct cache *c, void (*fn)(void *arg), void *arg)
{
    c->idle_fn = fn;
    c->idle_arg = arg;
}

uint32_t cache_fresh_ms(const struct cache_conf *conf, const struct upstream_resp *resp)
{
    if (!conf->enabled || resp->result != UP_OK) return 0;
    return cachectl_fresh_ms(&resp->cc, conf->honor_headers, conf->ttl_ms);
}

/* ---- the flight table ---- */

static uint64_t hash_key(const void *key, size_t klen)
{
    const unsigned char *p = key;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < klen; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h ^ (h >> 32);
}

static struct flight **bucket(struct cache *c, uint64_t h)
{
    return &c->table[h % FLIGHT_BUCKETS];
}

static struct flight *find(struct cache *c, uint64_t h, const void *key, size_t klen)
{
    for (struct flight *f = *bucket(c, h); f; f = f->next)
        if (f->hash == h && f->klen == klen && memcmp(f->key, key, klen) == 0) return f;
    return NULL;
}

static void unlist(struct flight *f)
{
    if (!f->listed) return;
    struct flight **pp = bucket(f->c, f->hash);
    while (*pp != f)
        pp = &(*pp)->next;
    *pp = f->next;
    f->listed = false;
}

static void unref(struct flight *f)
{
    if (--f->refs) return;
    struct cache *c = f->c;
    unlist(f);
    ctx_release(f->ctx);
    buf_free(&f->body);
    free(f->copy);
    av_release(NULL, (void *)f->plan.cfg); /* the snapshot knows its owner */
    free(f);
    if (--c->n_flights == 0 && c->idle_fn) c->idle_fn(c->idle_arg);
}

/* Copies what the call reads of req into f->copy, so that it outlives the
 * caller that started it. Returns false on out-of-memory. */
static bool copy_request(struct flight *f, const void *key, size_t klen,
                         const struct upstream_req *req)
{
    size_t lens[3] = {strlen(req->method) + 1, strlen(req->origin) + 1, strlen(req->path) + 1};
    size_t size = klen + lens[0] + lens[1] + lens[2] + req->body_len + 1;
    size_t hdr_off = (size + sizeof(char *) - 1) / sizeof(char *) * sizeof(char *);
    size = hdr_off + req->n_headers * sizeof(char *);
    for (size_t i = 0; i < req->n_headers; i++)
        size += strlen(req->headers[i]) + 1;
    char *p = malloc(size);
    if (!p) return false;
    f->copy = p;
    const char **hdrs = (const char **)(void *)(p + hdr_off);
    char *s = p + hdr_off + req->n_headers * sizeof(char *);
    f->req = *req; /* scalars, and any field this file does not know of */
    f->key = memcpy(p, key, klen);
    p += klen;
    f->req.method = memcpy(p, req->method, lens[0]);
    p += lens[0];
    f->req.origin = memcpy(p, req->origin, lens[1]);
    p += lens[1];
    f->req.path = memcpy(p, req->path, lens[2]);
    p += lens[2];
    if (req->body) {
        if (req->body_len) memcpy(p, req->body, req->body_len);
        p[req->body_len] = '\0';
        f->req.body = p;
    }
    for (size_t i = 0; i < req->n_headers; i++) {
        size_t n = strlen(req->headers[i]) + 1;
        hdrs[i] = memcpy(s, req->headers[i], n);
        s += n;
    }
    f->req.headers = hdrs;
    return true;
}

/* The shared call's coroutine. */
static void flight_run(void *arg)
{
    struct flight *f = arg;
    f->c->call(f->c->call_arg, f->ctx, &f->plan, &f->req, &f->resp, &f->info);
    f->done = true;
    for (struct waiter *w = f->waiters; w; w = w->next)
        loop_wake(w->co);
    unref(f);
}

static struct flight *flight_start(struct cache *c, uint64_t h, const void *key, size_t klen,
                                   const struct attempt_plan *plan, const struct upstream_req *req)
{
    struct flight *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->c = c;
    f->hash = h;
    f->klen = klen;
    buf_init(&f->body, NULL);
    f->resp.body = &f->body;
    f->ctx = ctx_with_cancel(ctx_background());
    if (!f->ctx || !copy_request(f, key, klen, req) || !loop_spawn(c->loop, flight_run, f)) {
        if (f->ctx) ctx_release(f->ctx);
        free(f->copy);
        free(f);
        return NULL;
    }
    f->plan = *plan;
    av_retain((void *)plan->cfg);
    f->refs = 1; /* the coroutine's */
    c->n_flights++;
    f->next = *bucket(c, h);
    *bucket(c, h) = f;
    f->listed = true;
    return f;
}

/* ---- waiting on a flight ---- */

static void on_waiter_ctx_done(ctx_t *ctx, ctx_hook_t *h)
{
    (void)ctx;
    loop_wake(container_of(h, struct waiter, hook)->co);
}

static enum upstream_result ctx_result(const ctx_t *ctx)
{
    return ctx_err(ctx) == CTX_DEADLINE_EXCEEDED ? UP_TIMEOUT : UP_CANCELED;
}

static void copy_answer(const struct flight *f, struct upstream_resp *resp,
                        struct attempt_info *info)
{
    *info = f->info;
    resp->result = f->resp.result;
    resp->status = f->resp.status;
    resp->error = f->resp.error;
    resp->cc = f->resp.cc;
    if (f->body.len && buf_append(resp->body, f->body.data, f->body.len) != 0) {
        resp->result = UP_ERROR;
        resp->error = "out of memory";
    }
}

/* Parks until f's answer arrives or ctx ends, whichever is first. */
static void wait_flight(struct flight *f, ctx_t *ctx, struct upstream_resp *resp,
                        struct attempt_info *info)
{
    *info = (struct attempt_info){0};
    struct waiter w = {.co = coro_self()};
    resp->status = 0;
    resp->error = NULL;
    cachectl_init(&resp->cc);
    if (!ctx_after_func(ctx, &w.hook, on_waiter_ctx_done)) {
        resp->result = ctx_result(ctx);
        if (f->n_waiters == 0 && !f->done) { /* a call nobody waits for */
            unlist(f);
            ctx_cancel(f->ctx, 0);
        }
        return;
    }
    f->refs++;
    f->n_waiters++;
    w.next = f->waiters;
    if (w.next) w.next->prev = &w;
    f->waiters = &w;
    while (!f->done && !ctx_done(ctx))
        loop_park(0);
    ctx_hook_remove(ctx, &w.hook);
    if (w.prev)
        w.prev->next = w.next;
    else
        f->waiters = w.next;
    if (w.next) w.next->prev = w.prev;
    f->n_waiters--;
    if (f->done) {
        copy_answer(f, resp, info);
    } else {
        resp->result = ctx_result(ctx);
        if (f->n_waiters == 0) {
            unlist(f); /* nobody may join a call being cancelled */
            ctx_cancel(f->ctx, 0);
        }
    }
    unref(f);
}

/* ---- the call ---- */

enum cache_result cache_call(struct cache *c, const struct cache_conf *conf, const void *key,
                             size_t klen, ctx_t *ctx, const struct attempt_plan *plan,
                             const struct upstream_req *req, struct upstream_resp *resp,
                             struct attempt_info *info, const struct degraded_entry **hit)
{
    *hit = NULL;
    if (!conf->enabled || klen == 0) {
        c->call(c->call_arg, ctx, plan, req, resp, info);
        return CACHE_NONE;
    }
    if (c->store && (*hit = degraded_get_fresh(c->store, key, klen)) != NULL) {
        *info = (struct attempt_info){0};
        return CACHE_HIT;
    }
    if (conf->coalesce) {
        uint64_t h = hash_key(key, klen);
        struct flight *f = find(c, h, key, klen);
        enum cache_result res = f ? CACHE_COALESCED : CACHE_MISS;
        if (!f) f = flight_start(c, h, key, klen, plan, req);
        if (f) {
            wait_flight(f, ctx, resp, info);
            return res;
        }
        /* out of memory: a call of its own */
    }
    c->call(c->call_arg, ctx, plan, req, resp, info);
    return CACHE_MISS;
}
