/* attempt: the attempt loop of gateway/attempt.h. */
#include "gateway/attempt.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "core/errgroup.h"
#include "core/loop.h"
#include "gateway/budget.h"
#include "gateway/ugroup.h"

#define MAX_CALL_HEADERS 64
#define BACKOFF_BASE_NS  10000000ull /* 10 ms */

enum attempt_kind { ATTEMPT_FIRST, ATTEMPT_RETRY, ATTEMPT_HEDGE };

/* Why an attempt failed, for retry_on and the breaker. */
enum fail { F_NONE, F_CONNECT, F_RESET, F_5XX, F_TIMEOUT, F_CANCEL, F_OTHER };

/* One call: what every attempt shares. */
struct run {
    struct upstream *up;
    attempt_transport_fn transport; /* never NULL */
    const struct config *cfg;
    const struct backend_conf *b;
    const struct upstream_req *req;
    uint64_t deadline_ns;
    unsigned sent[3];           /* attempts by enum attempt_kind, for the metrics */
    struct attempt *winner;     /* hedging: the first good answer */
};

struct attempt {
    struct run *run;
    int no;                   /* 1 for the first */
    enum attempt_kind kind;
    const struct ugroup_ent *avoid;
    const struct attempt *sibling; /* hedge: the first attempt, whose host it avoids */
    struct ugroup_ent *host;  /* breaker and in-flight count; NULL: none */
    struct upstream_resp resp;
    enum fail f;
    uint64_t start_ns; /* hedge: not before */
    bool sent;
};

/* "cannot connect", "connect timeout", "Couldn't connect to server", but
 * not "connection closed before the answer" (a reset). */
static bool connect_error(const char *e)
{
    for (const char *p = e; p && (p = strcasestr(p, "connect")); p += 7)
        if (p[7] != 'i' && p[7] != 'I') return true;
    return false;
}

static enum fail classify(const struct upstream_resp *r)
{
    switch (r->result) {
    case UP_OK:
        return r->status >= 500 ? F_5XX : F_NONE;
    case UP_ERROR:
        if (r->error && strcmp(r->error, "breaker open") == 0) return F_OTHER;
        return connect_error(r->error) ? F_CONNECT : F_RESET;
    case UP_TIMEOUT:
        return F_TIMEOUT;
    case UP_CANCELED:
        return F_CANCEL;
    case UP_TOO_BIG:
        break;
    }
    return F_OTHER;
}

static bool retryable(unsigned on, enum fail f)
{
    switch (f) {
    case F_CONNECT: return on & RETRY_ON_CONNECT;
    case F_RESET: return on & RETRY_ON_RESET;
    case F_5XX: return on & RETRY_ON_5XX;
    case F_TIMEOUT: return on & RETRY_ON_TIMEOUT;
    default: return false;
    }
}

static const struct breaker_conf *breaker_of(const struct run *run)
{
    return run->b->group ? &run->b->group->breaker : &run->cfg->defaults.breaker;
}

static uint64_t now(void)
{
    return loop_now(loop_current());
}

static void count(struct run *run, enum attempt_kind k)
{
    run->sent[k]++;
}

/* "Name: V" into out (48 bytes hold every name below and a u64), without
 * printf's cost on the hot path. */
static void header_u64(char out[48], const char *name_colon_sp, uint64_t v)
{
    size_t n = strlen(name_colon_sp);
    memcpy(out, name_colon_sp, n);
    out[n + fmt_u64(out + n, v)] = '\0';
}

/* The call's headers, then this attempt's own: its number and the time it
 * has left (left_ns, its context's, sent in ms rounded up, at least 1). */
static size_t attempt_headers(const struct attempt *a, uint64_t left_ns, char own[2][48],
                              const char **hdrs)
{
    const struct upstream_req *req = a->run->req;
    size_t nh = req->n_headers < MAX_CALL_HEADERS ? req->n_headers : MAX_CALL_HEADERS;
    memcpy(hdrs, req->headers, nh * sizeof(*hdrs));
    uint64_t left_ms = (left_ns + 999999) / 1000000;
    header_u64(own[0], "X-Gateway-Attempt: ", (uint64_t)a->no);
    header_u64(own[1], "X-Request-Timeout-Ms: ", left_ms ? left_ms : 1);
    hdrs[nh++] = own[0];
    hdrs[nh++] = own[1];
    return nh;
}

/* One attempt under parent; fills a->resp and a->f. */
static void attempt_once(ctx_t *parent, struct attempt *a)
{
    struct run *run = a->run;
    const struct upstream_req *req = run->req;
    const struct breaker_conf *bc = breaker_of(run);
    char origin[320];
    const char *org = req->origin;
    a->host = NULL;
    if (run->b->group) {
        struct ugroup_pick p;
        ugroup_pick(run->b->group, a->avoid, now(), &p);
        if (p.host) {
            const char *sep = strstr(req->origin, "://");
            snprintf(origin, sizeof origin, "%.*s://%s",
                     sep ? (int)(sep - req->origin) : 4, sep ? req->origin : "http", p.host);
            org = origin;
        }
        a->host = p.ent;
    } else if (bc->consecutive_failures) {
        a->host = run->b->origin_ent;
    }
    bool probe = false;
    if (a->host && bc->consecutive_failures) {
        enum breaker_verdict v = breaker_allow(&a->host->br, now(), (uint64_t)bc->open_ms * 1000000u);
        if (v == BREAKER_REJECT) {
            a->resp.result = UP_ERROR;
            a->resp.error = "breaker open";
            a->f = F_OTHER;
            return;
        }
        probe = v == BREAKER_PROBE;
    }

    uint64_t dl = now() + (uint64_t)run->b->timeout_ms * 1000000u;
    /* a timeout counts against the host only when it had its own
     * timeout_ms: a client asking for 1 ms must not open breakers */
    bool own_deadline = dl <= run->deadline_ns;
    if (!own_deadline) dl = run->deadline_ns;
    char own[2][48];
    const char *hdrs[MAX_CALL_HEADERS + 2];
    struct upstream_req r = *req;
    r.origin = org;
    r.headers = hdrs;
    ctx_t *ctx = ctx_with_deadline(parent, dl);
    a->sent = true;
    if (!ctx) {
        a->resp.result = UP_ERROR;
        a->resp.error = "out of memory";
    } else {
        r.n_headers = attempt_headers(a, ctx_remaining(ctx), own, hdrs);
        if (a->host) atomic_fetch_add_explicit(&a->host->inflight, 1, memory_order_relaxed);
        buf_clear(a->resp.body);
        run->transport(run->up, ctx, &r, &a->resp);
        if (a->host) atomic_fetch_sub_explicit(&a->host->inflight, 1, memory_order_relaxed);
        /* the parent's cancellation is the caller's, not the host's fault */
        if (a->resp.result == UP_TIMEOUT && ctx_err(parent) && ctx_deadline(parent) > now())
            a->resp.result = UP_CANCELED;
        ctx_release(ctx);
    }
    a->f = classify(&a->resp);
    if (a->host && bc->consecutive_failures) {
        enum breaker_result br = a->f == F_NONE || a->f == F_OTHER ? BREAKER_SUCCESS
                                 : a->f == F_CANCEL                 ? BREAKER_NEUTRAL
                                 : a->f == F_TIMEOUT && !own_deadline ? BREAKER_NEUTRAL
                                                                    : BREAKER_FAILURE;
        breaker_record(&a->host->br, br, probe, bc->consecutive_failures, now());
    }
}

static _Thread_local uint64_t g_rand;

static uint64_t jitter(uint64_t n)
{
    if (!g_rand) g_rand = mono_ns() | 1;
    g_rand ^= g_rand << 13;
    g_rand ^= g_rand >> 7;
    g_rand ^= g_rand << 17;
    return n ? g_rand % n : 0;
}

/* Waits the backoff before retry n (1-based) when the time left allows it
 * and the budget has a token. */
static bool may_retry(struct run *run, ctx_t *gctx, int n)
{
    uint64_t base = BACKOFF_BASE_NS << (n - 1);
    uint64_t wait = base / 2 + jitter(base / 2 + 1);
    uint64_t t = now();
    if (ctx_err(gctx) || t + wait >= run->deadline_ns) return false;
    if (!budget_take(budget_process(), t)) return false;
    ctx_wait(gctx, t + wait);
    return !ctx_err(gctx);
}

static bool idempotent(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
}

static int hedge_arm(ctx_t *ctx, void *arg)
{
    struct attempt *a = arg;
    if (a->kind == ATTEMPT_HEDGE) {
        ctx_wait(ctx, a->start_ns);
        if (ctx_err(ctx) || a->run->winner) return 0;
        a->avoid = a->sibling->host;
        if (!budget_take(budget_process(), now())) return 0;
        count(a->run, ATTEMPT_HEDGE);
    }
    attempt_once(ctx, a);
    if (a->f == F_NONE || (a->f == F_OTHER && a->resp.result != UP_ERROR)) {
        if (!a->run->winner) a->run->winner = a;
        return 1; /* cancels the other arm */
    }
    return 0;
}

/* The first attempt and, when it has not answered after hedge_after_ms, a
 * second one; *out ends up as the answer (the winner's, else the first's). */
static void hedged(struct run *run, ctx_t *gctx, struct attempt *first, struct attempt_info *info)
{
    buf_t body2;
    buf_init(&body2, NULL);
    struct attempt second = *first;
    second.no = 2;
    second.kind = ATTEMPT_HEDGE;
    second.resp = (struct upstream_resp){.body = &body2};
    second.start_ns = now() + (uint64_t)run->b->retry.hedge_after_ms * 1000000u;
    errgroup_t *g = eg_new(gctx);
    if (!g) {
        attempt_once(gctx, first);
    } else {
        eg_go(g, hedge_arm, first);
        second.sibling = first;
        eg_go(g, hedge_arm, &second);
        eg_wait(g);
        eg_free(g);
    }
    info->attempts = 1 + second.sent;
    if (run->winner == &second) {
        buf_t t = *first->resp.body;
        *first->resp.body = body2;
        body2 = t;
        struct upstream_resp keep = second.resp;
        keep.body = first->resp.body;
        first->resp = keep;
        first->f = second.f;
        info->hedged = true;
    }
    buf_free(&body2);
}

void attempt_call(struct upstream *up, ctx_t *gctx, const struct attempt_plan *plan,
                  const struct upstream_req *req, struct upstream_resp *resp,
                  struct attempt_info *info)
{
    *info = (struct attempt_info){0};
    const struct config *cfg = plan->cfg;
    const struct backend_conf *b = plan->b;
    struct run run = {.up = up,
                      .transport = plan->transport ? plan->transport : upstream_call,
                      .cfg = cfg,
                      .b = b,
                      .req = req,
                      .deadline_ns = plan->deadline_ns};
    count(&run, ATTEMPT_FIRST);
    bool again = idempotent(req->method);
    /* only calls that may retry or hedge fund the budget: a plain call
     * touches no process-wide state */
    if (again && (b->retry.retries || b->retry.hedge_after_ms))
        budget_first(budget_process(), cfg->defaults.retry_budget_percent, now());
    struct attempt a = {.run = &run, .no = 1, .kind = ATTEMPT_FIRST, .resp = *resp};
    if (again && b->retry.hedge_after_ms) {
        hedged(&run, gctx, &a, info);
    } else {
        attempt_once(gctx, &a);
        info->attempts = 1;
    }
    for (int n = 1; again && n <= b->retry.retries && retryable(b->retry.retry_on, a.f); n++) {
        if (!may_retry(&run, gctx, n)) break;
        count(&run, ATTEMPT_RETRY);
        a.avoid = a.host;
        a.no = ++info->attempts;
        a.kind = ATTEMPT_RETRY;
        attempt_once(gctx, &a);
        info->retried = true;
    }
    info->open = a.resp.result == UP_ERROR && a.resp.error && !strcmp(a.resp.error, "breaker open");
    *resp = a.resp;
    if (plan->metrics) /* the worker's own table: no shared cache line */
        metrics_attempts(plan->metrics, b->name, run.sent[ATTEMPT_FIRST], run.sent[ATTEMPT_RETRY],
                         run.sent[ATTEMPT_HEDGE]);
}
