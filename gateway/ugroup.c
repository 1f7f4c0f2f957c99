/* ugroup: the host registry and the balancer of gateway/ugroup.h. */
#include "gateway/ugroup.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/budget.h"

#include "gateway/urlbuild.h"

#define BUCKETS   1024
#define MAX_HOSTS 64

/* All under g_mu: hash chains, and the entries in insertion order (for
 * the scrape). */
static struct ugroup_ent *g_buckets[BUCKETS];
static struct ugroup_ent *g_first, *g_last;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

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

/* Under g_mu. */
static struct ugroup_ent *ref_locked(char kind, const char *key, const char *key2)
{
    struct ugroup_ent **slot = &g_buckets[hash(kind, key, key2) & (BUCKETS - 1)];
    for (struct ugroup_ent *e = *slot; e; e = e->chain)
        if (same(e, kind, key, key2)) {
            e->refs++;
            return e;
        }
    struct ugroup_ent *e = make(kind, key, key2);
    if (!e) return NULL;
    e->refs = 1;
    e->chain = *slot;
    *slot = e;
    e->prev = g_last;
    if (g_last) g_last->next = e;
    else g_first = e;
    g_last = e;
    return e;
}

/* Under g_mu. */
static void unref_locked(struct ugroup_ent *e)
{
    if (!e || --e->refs) return;
    struct ugroup_ent **pp = &g_buckets[hash(e->kind, e->key, e->key2) & (BUCKETS - 1)];
    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    if (e->prev) e->prev->next = e->next;
    else g_first = e->next;
    if (e->next) e->next->prev = e->prev;
    else g_last = e->prev;
    free(e);
}

struct ugroup_ent *ugroup_ref(char kind, const char *key, const char *key2)
{
    pthread_mutex_lock(&g_mu);
    struct ugroup_ent *e = ref_locked(kind, key, key2);
    pthread_mutex_unlock(&g_mu);
    return e;
}

void ugroup_unref(struct ugroup_ent *e)
{
    pthread_mutex_lock(&g_mu);
    unref_locked(e);
    pthread_mutex_unlock(&g_mu);
}

/* Under g_mu. */
static int attach_group_locked(struct ugroup_conf *u)
{
    u->ent = ref_locked(UG_GROUP, u->name, NULL);
    u->host_ents = calloc(u->n_hosts ? u->n_hosts : 1, sizeof(*u->host_ents));
    u->member_ents = calloc(u->n_hosts ? u->n_hosts : 1, sizeof(*u->member_ents));
    int rc = u->ent && u->host_ents && u->member_ents ? 0 : -ENOMEM;
    for (size_t i = 0; u->host_ents && i < u->n_hosts; i++)
        if (!(u->host_ents[i] = ref_locked(UG_HOST, u->hosts[i], NULL))) rc = -ENOMEM;
    for (size_t i = 0; u->member_ents && u->health.path && i < u->n_hosts; i++)
        if (!(u->member_ents[i] = ref_locked(UG_MEMBER, u->name, u->hosts[i]))) rc = -ENOMEM;
    return rc;
}

/* Under g_mu. */
static void detach_group_locked(struct ugroup_conf *u)
{
    for (size_t i = 0; i < u->n_hosts; i++) {
        if (u->host_ents) unref_locked(u->host_ents[i]);
        if (u->member_ents) unref_locked(u->member_ents[i]);
    }
    free(u->host_ents);
    free(u->member_ents);
    unref_locked(u->ent);
    u->ent = NULL;
    u->host_ents = u->member_ents = NULL;
}

int ugroup_attach_group(struct ugroup_conf *u)
{
    pthread_mutex_lock(&g_mu);
    int rc = attach_group_locked(u);
    pthread_mutex_unlock(&g_mu);
    return rc;
}

void ugroup_detach_group(struct ugroup_conf *u)
{
    pthread_mutex_lock(&g_mu);
    detach_group_locked(u);
    pthread_mutex_unlock(&g_mu);
}

/* Under g_mu. */
static int attach_backend_locked(const struct config *cfg, struct backend_conf *b)
{
    int rc = 0;
    if (!b->group && cfg->defaults.breaker.consecutive_failures) {
        char origin[256];
        if (urlbuild_origin(b, origin, sizeof origin) >= 0 &&
            !(b->origin_ent = ref_locked(UG_HOST, origin, NULL)))
            rc = -ENOMEM;
    }
    return rc;
}

int ugroup_attach(struct config *cfg)
{
    int rc = 0;
    pthread_mutex_lock(&g_mu);
    for (size_t g = 0; g < cfg->n_upstreams; g++)
        if (attach_group_locked(&cfg->upstreams[g])) rc = -ENOMEM;
    for (size_t i = 0; i < cfg->n_endpoints; i++)
        for (size_t j = 0; j < cfg->endpoints[i].n_backends; j++)
            if (attach_backend_locked(cfg, &cfg->endpoints[i].backends[j])) rc = -ENOMEM;
    pthread_mutex_unlock(&g_mu);
    return rc;
}

void ugroup_detach(struct config *cfg)
{
    pthread_mutex_lock(&g_mu);
    for (size_t g = 0; g < cfg->n_upstreams; g++)
        detach_group_locked(&cfg->upstreams[g]);
    for (size_t i = 0; i < cfg->n_endpoints; i++)
        for (size_t j = 0; j < cfg->endpoints[i].n_backends; j++) {
            struct backend_conf *b = &cfg->endpoints[i].backends[j];
            unref_locked(b->origin_ent);
            b->origin_ent = NULL;
        }
    pthread_mutex_unlock(&g_mu);
}

static bool host_down(const struct ugroup_conf *u, size_t i)
{
    const struct ugroup_ent *m = u->member_ents ? u->member_ents[i] : NULL;
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
        any_up |= !(down[i] = host_down(u, i));
    struct ugroup_ent *g = u->ent;
    /* only a first attempt moves the rotation: a retry or hedge (avoid set)
     * looks from where it stands, so retries do not skew round_robin */
    uint32_t at = !g      ? 0
                  : avoid ? atomic_load_explicit(&g->rr, memory_order_relaxed)
                          : atomic_fetch_add_explicit(&g->rr, 1, memory_order_relaxed);
    size_t start = at % n;
    uint64_t best = UINT64_MAX;
    for (size_t k = 0; k < n; k++) {
        size_t i = (start + k) % n;
        if (any_up && down[i]) continue; /* none up: panic mode, all of them */
        struct ugroup_ent *h = u->host_ents ? u->host_ents[i] : NULL;
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
    }
    return 0;
}

static int family(buf_t *out, char kind, const char *name, const char *type, const char *help)
{
    int rc = buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    pthread_mutex_lock(&g_mu);
    for (const struct ugroup_ent *e = g_first; e && !rc; e = e->next)
        rc = put_ent(out, e, kind);
    pthread_mutex_unlock(&g_mu);
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
        rc = buf_printf(out,
                        "# HELP gateway_retry_budget_exhausted_total Retries and hedges not sent "
                        "for want of budget.\n# TYPE gateway_retry_budget_exhausted_total "
                        "counter\ngateway_retry_budget_exhausted_total %" PRIu64 "\n",
                        budget_exhausted(budget_process()));
    return rc;
}
