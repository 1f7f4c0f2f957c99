/* ugroup: the host registry and the balancer of gateway/ugroup.h. */
#include "gateway/ugroup.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/budget.h"

/* Keys a process can have: hosts, groups, members, backends of a config
 * (a full table sends new keys without state, never a failure). */
#define SLOTS     8192
#define MAX_HOSTS 64

static _Atomic(struct ugroup_ent *) g_slots[SLOTS];
/* The entries in insertion order, for the scrape: g_list[0..g_count). */
static struct ugroup_ent *g_list[SLOTS];
static _Atomic size_t g_count;
static pthread_mutex_t g_insert = PTHREAD_MUTEX_INITIALIZER;

static uint64_t hash(char kind, const char *a, const char *b)
{
    uint64_t h = 1469598103934665603ull ^ (unsigned char)kind;
    for (; *a; a++)
        h = (h ^ (unsigned char)*a) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (; b && *b; b++)
        h = (h ^ (unsigned char)*b) * 1099511628211ull;
    return h;
}

static bool same(const struct ugroup_ent *e, char kind, const char *a, const char *b)
{
    return e->kind == kind && strcmp(e->key, a) == 0 &&
           (e->key2 ? b && strcmp(e->key2, b) == 0 : !b);
}

static struct ugroup_ent *make(char kind, const char *a, const char *b)
{
    size_t la = strlen(a) + 1, lb = b ? strlen(b) + 1 : 0;
    struct ugroup_ent *e = calloc(1, sizeof(*e) + la + lb);
    if (!e) return NULL;
    char *k = (char *)(e + 1);
    memcpy(k, a, la);
    e->key = k;
    if (b) {
        memcpy(k + la, b, lb);
        e->key2 = k + la;
    }
    e->kind = kind;
    return e;
}

struct ugroup_ent *ugroup_get(char kind, const char *key, const char *key2)
{
    size_t i = hash(kind, key, key2) & (SLOTS - 1);
    for (size_t n = 0; n < SLOTS; n++, i = (i + 1) & (SLOTS - 1)) {
        struct ugroup_ent *e = atomic_load_explicit(&g_slots[i], memory_order_acquire);
        if (e && same(e, kind, key, key2)) return e;
        if (e) continue;
        /* a miss: insert under the lock, re-checking this slot and on */
        pthread_mutex_lock(&g_insert);
        for (; n < SLOTS; n++, i = (i + 1) & (SLOTS - 1)) {
            e = atomic_load_explicit(&g_slots[i], memory_order_acquire);
            if (e && same(e, kind, key, key2)) break;
            if (e) continue;
            e = make(kind, key, key2);
            if (e) {
                size_t c = atomic_load_explicit(&g_count, memory_order_relaxed);
                g_list[c] = e;
                atomic_store_explicit(&g_count, c + 1, memory_order_release);
                atomic_store_explicit(&g_slots[i], e, memory_order_release);
            }
            break;
        }
        pthread_mutex_unlock(&g_insert);
        return n < SLOTS ? e : NULL;
    }
    return NULL;
}

static bool host_down(const struct ugroup_conf *u, const char *host)
{
    if (!u->health.path) return false;
    struct ugroup_ent *m = ugroup_get(UG_MEMBER, u->name, host);
    return m && atomic_load_explicit(&m->down, memory_order_relaxed);
}

/* Lower is better: avoided host, open breaker, then in-flight calls. */
static uint64_t score(const struct ugroup_conf *u, const struct ugroup_ent *h,
                      const struct ugroup_ent *avoid, uint64_t now_ns)
{
    if (!h) return 0;
    uint64_t s = 0;
    if (h == avoid) s += 1ull << 40;
    if (u->breaker.consecutive_failures && breaker_state(&h->br) != BREAKER_CLOSED) {
        uint64_t since = atomic_load_explicit(&h->br.opened_ns, memory_order_relaxed);
        if (breaker_state(&h->br) == BREAKER_HALF_OPEN ||
            now_ns - since < (uint64_t)u->breaker.open_ms * 1000000u)
            s += 1ull << 41;
    }
    if (u->balance == BALANCE_LEAST_INFLIGHT)
        s += atomic_load_explicit(&h->inflight, memory_order_relaxed);
    return s;
}

void ugroup_pick(const struct ugroup_conf *u, const struct ugroup_ent *avoid, uint64_t now_ns,
                 struct ugroup_pick *out)
{
    *out = (struct ugroup_pick){0};
    size_t n = u->n_hosts < MAX_HOSTS ? u->n_hosts : MAX_HOSTS;
    if (!n) return;
    bool down[MAX_HOSTS], any_up = false;
    for (size_t i = 0; i < n; i++)
        any_up |= !(down[i] = host_down(u, u->hosts[i]));
    struct ugroup_ent *g = ugroup_get(UG_GROUP, u->name, NULL);
    size_t start = g ? atomic_fetch_add_explicit(&g->rr, 1, memory_order_relaxed) % n : 0;
    uint64_t best = UINT64_MAX;
    for (size_t k = 0; k < n; k++) {
        size_t i = (start + k) % n;
        if (any_up && down[i]) continue; /* none up: panic mode, all of them */
        struct ugroup_ent *h = ugroup_get(UG_HOST, u->hosts[i], NULL);
        uint64_t s = score(u, h, avoid, now_ns);
        if (s < best) {
            best = s;
            out->host = u->hosts[i];
            out->ent = h;
        }
    }
}

static int put_ent(buf_t *out, const struct ugroup_ent *e, char kind)
{
    if (e->kind != kind) return 0;
    switch (kind) {
    case UG_HOST:
        return buf_printf(out, "gateway_breaker_state{host=\"%s\"} %d\n", e->key,
                          (int)breaker_state(&e->br));
    case UG_MEMBER:
        if (!atomic_load_explicit(&e->checked, memory_order_relaxed)) return 0;
        return buf_printf(out, "gateway_upstream_host_healthy{upstream=\"%s\",host=\"%s\"} %d\n",
                          e->key, e->key2, !atomic_load_explicit(&e->down, memory_order_relaxed));
    case UG_BACKEND: {
        static const char *const kinds[] = {"first", "retry", "hedge"};
        int rc = 0;
        for (int k = 0; k < 3 && !rc; k++)
            rc = buf_printf(out,
                            "gateway_backend_attempts_total{backend=\"%s\",kind=\"%s\"} %" PRIu64
                            "\n",
                            e->key, kinds[k],
                            atomic_load_explicit(&e->attempts[k], memory_order_relaxed));
        return rc;
    }
    }
    return 0;
}

static int family(buf_t *out, char kind, const char *name, const char *type, const char *help)
{
    int rc = buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    size_t n = atomic_load_explicit(&g_count, memory_order_acquire);
    for (size_t i = 0; i < n && !rc; i++)
        rc = put_ent(out, g_list[i], kind);
    return rc;
}

int ugroup_render(buf_t *out)
{
    int rc = family(out, UG_HOST, "gateway_breaker_state", "gauge",
                    "Breaker state per host (0 closed, 1 open, 2 half-open).");
    if (!rc)
        rc = family(out, UG_MEMBER, "gateway_upstream_host_healthy", "gauge",
                    "Active health check verdict per group host (1 healthy, 0 not).");
    if (!rc)
        rc = family(out, UG_BACKEND, "gateway_backend_attempts_total", "counter",
                    "Backend attempts by backend and kind (first, retry, hedge).");
    if (!rc)
        rc = buf_printf(out,
                        "# HELP gateway_retry_budget_exhausted_total Retries and hedges not sent "
                        "for want of budget.\n# TYPE gateway_retry_budget_exhausted_total "
                        "counter\ngateway_retry_budget_exhausted_total %" PRIu64 "\n",
                        budget_exhausted(budget_process()));
    return rc;
}
