/*
 * resolver: the DNS thread and the lock-free answer table (see resolver.h).
 *
 * Two sides:
 *   - the published table (struct table), immutable, read by every worker
 *     through av_read_lock/av_load: a linear scan over a few backend hosts
 *     with a hash compared first (O(N), N = backend hosts, a handful);
 *   - the mutable side under r->mu: every known name with its current
 *     answer, next refresh and waiters. Only the miss path and the thread
 *     take the mutex.
 *
 * No lost wake-up: the thread publishes a table and hands the name's waiters
 * to their loops in one critical section, and a lookup that missed checks
 * the table again under the mutex before it registers a waiter.
 */
#include "gateway/resolver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/avalue.h"

struct answer {
    int rc; /* 0 or -ENOENT */
    unsigned n;
    struct sockaddr_storage addr[RESOLVER_MAX_ADDRS]; /* port 0 */
    socklen_t len[RESOLVER_MAX_ADDRS];
};

/* ---- the published table ---- */

struct entry {
    uint32_t hash;
    char name[RESOLVER_MAX_NAME + 1];
    struct answer a;
};

struct table {
    av_snap_t snap; /* first */
    unsigned n;
    struct entry e[];
};

/* ---- the thread's side ---- */

struct waiter {
    loop_t *loop;
    void (*done)(void *arg);
    void *arg;
    struct waiter *next;
};

struct name {
    uint32_t hash;
    char host[RESOLVER_MAX_NAME + 1];
    bool answered;   /* a has been published at least once */
    uint64_t due_ns; /* next resolution (monotonic) */
    struct answer a;
    struct waiter *waiters;
    struct name *next;
};

struct resolver {
    avalue_t table; /* struct table */
    uint64_t refresh_ns; /* under mu */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* CLOCK_MONOTONIC */
    bool stop;                   /* under mu */
    struct name *names;          /* under mu */
    struct resolver_stats stats; /* under mu */
};

#define RETRY_NS (1000000000ull) /* a transient failure is retried this soon */

static uint32_t hash_name(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

static void copy_answer(const struct answer *a, uint16_t port, struct resolver_addrs *out)
{
    out->n = a->n;
    for (unsigned i = 0; i < a->n; i++) {
        memcpy(&out->addr[i], &a->addr[i], a->len[i]);
        out->len[i] = a->len[i];
        set_port(&out->addr[i], port);
    }
}

/* host without URL brackets: "[::1]" -> "::1". -EINVAL when empty/too long. */
static int bare_host(const char *host, const char **s, size_t *n)
{
    size_t len = host ? strlen(host) : 0;
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        host++;
        len -= 2;
    }
    if (len == 0 || len > RESOLVER_MAX_NAME) return -EINVAL;
    *s = host;
    *n = len;
    return 0;
}

/* Numeric IPv4/IPv6: 0 with *out filled, -ENOENT when not a literal. */
static int literal(const char *s, size_t n, uint16_t port, struct resolver_addrs *out)
{
    char buf[INET6_ADDRSTRLEN];
    if (n >= sizeof buf) return -ENOENT;
    memcpy(buf, s, n);
    buf[n] = '\0';
    memset(&out->addr[0], 0, sizeof out->addr[0]);
    if (memchr(s, ':', n)) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&out->addr[0];
        if (inet_pton(AF_INET6, buf, &a6->sin6_addr) != 1) return -ENOENT;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        out->len[0] = sizeof *a6;
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&out->addr[0];
        if (inet_pton(AF_INET, buf, &a4->sin_addr) != 1) return -ENOENT;
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        out->len[0] = sizeof *a4;
    }
    out->n = 1;
    return 0;
}

static const struct entry *table_find(const struct table *t, const char *s, size_t n, uint32_t h)
{
    if (!t) return NULL;
    for (unsigned i = 0; i < t->n; i++)
        if (t->e[i].hash == h && strncmp(t->e[i].name, s, n) == 0 && t->e[i].name[n] == '\0')
            return &t->e[i];
    return NULL;
}

/* The answer from the current table: 0, -ENOENT, or -EAGAIN (unknown). */
static int lookup_table(struct resolver *r, const char *s, size_t n, uint32_t h, uint16_t port,
                        struct resolver_addrs *out)
{
    int rc = -EAGAIN;
    av_read_lock();
    const struct entry *e = table_find(av_load(&r->table), s, n, h);
    if (e) {
        rc = e->a.rc;
        if (rc == 0) copy_answer(&e->a, port, out);
    }
    av_read_unlock();
    return rc;
}

static struct name *find_name(struct resolver *r, const char *s, size_t n, uint32_t h)
{
    for (struct name *nm = r->names; nm; nm = nm->next)
        if (nm->hash == h && strncmp(nm->host, s, n) == 0 && nm->host[n] == '\0') return nm;
    return NULL;
}

/* Under mu: the name's record, created (due now) when new; NULL on ENOMEM. */
static struct name *get_name(struct resolver *r, const char *s, size_t n, uint32_t h)
{
    struct name *nm = find_name(r, s, n, h);
    if (nm) return nm;
    nm = calloc(1, sizeof *nm);
    if (!nm) return NULL;
    nm->hash = h;
    memcpy(nm->host, s, n);
    nm->host[n] = '\0';
    nm->next = r->names;
    r->names = nm;
    r->stats.names++;
    pthread_cond_signal(&r->cv);
    return nm;
}

int resolver_lookup(struct resolver *r, const char *host, uint16_t port, struct resolver_addrs *out,
                    loop_t *loop, void (*done)(void *arg), void *arg)
{
    const char *s;
    size_t n;
    if (bare_host(host, &s, &n) < 0) return -EINVAL;
    if (literal(s, n, port, out) == 0) return 0;
    uint32_t h = hash_name(s, n);
    int rc = lookup_table(r, s, n, h, port, out);
    if (rc != -EAGAIN) return rc;

    /* miss: again under the mutex (the thread publishes under it), then wait */
    pthread_mutex_lock(&r->mu);
    rc = lookup_table(r, s, n, h, port, out);
    if (rc == -EAGAIN) {
        struct name *nm = get_name(r, s, n, h);
        struct waiter *w = nm && loop && done ? malloc(sizeof *w) : NULL;
        if (!nm || (loop && done && !w)) {
            rc = -ENOMEM;
        } else if (w) {
            *w = (struct waiter){loop, done, arg, nm->waiters};
            nm->waiters = w;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void resolver_set_refresh(struct resolver *r, unsigned refresh_s)
{
    uint64_t ns = (uint64_t)(refresh_s ? refresh_s : 1) * 1000000000ull;
    pthread_mutex_lock(&r->mu);
    if (ns != r->refresh_ns) {
        uint64_t due = now_ns() + ns;
        r->refresh_ns = ns;
        for (struct name *nm = r->names; nm; nm = nm->next)
            if (nm->answered && nm->due_ns > due) nm->due_ns = due;
        pthread_cond_signal(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
}

void resolver_prefetch(struct resolver *r, const char *host)
{
    resolver_lookup(r, host, 0, &(struct resolver_addrs){0}, NULL, NULL, NULL);
}

unsigned resolver_cancel(struct resolver *r, loop_t *loop, void (*done)(void *arg), void *arg)
{
    unsigned removed = 0;
    pthread_mutex_lock(&r->mu);
    for (struct name *nm = r->names; nm; nm = nm->next) {
        for (struct waiter **wp = &nm->waiters; *wp;) {
            struct waiter *w = *wp;
            if (w->loop == loop && w->done == done && w->arg == arg) {
                *wp = w->next;
                free(w);
                removed++;
            } else {
                wp = &w->next;
            }
        }
    }
    pthread_mutex_unlock(&r->mu);
    return removed;
}

void resolver_stats(struct resolver *r, struct resolver_stats *out)
{
    pthread_mutex_lock(&r->mu);
    *out = r->stats;
    pthread_mutex_unlock(&r->mu);
}

/* ---- the thread ---- */

/* getaddrinfo into a. Returns false for a transient failure (a kept). */
static bool resolve(const char *host, struct answer *a)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int e = getaddrinfo(host, NULL, &hints, &res);
    if (e == EAI_AGAIN || e == EAI_MEMORY || e == EAI_SYSTEM) return false;
    memset(a, 0, sizeof *a);
    a->rc = -ENOENT;
    if (e != 0) return true;
    for (struct addrinfo *ai = res; ai && a->n < RESOLVER_MAX_ADDRS; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof a->addr[0])
            continue;
        memcpy(&a->addr[a->n], ai->ai_addr, ai->ai_addrlen);
        a->len[a->n] = ai->ai_addrlen;
        set_port(&a->addr[a->n], 0);
        a->n++;
    }
    freeaddrinfo(res);
    if (a->n) a->rc = 0;
    return true;
}

/* Under mu: a new table from every answered name. NULL on ENOMEM. */
static struct table *build_table(struct resolver *r)
{
    unsigned n = 0;
    for (struct name *nm = r->names; nm; nm = nm->next)
        n += nm->answered;
    struct table *t = calloc(1, sizeof *t + n * sizeof t->e[0]);
    if (!t) return NULL;
    for (struct name *nm = r->names; nm; nm = nm->next) {
        if (!nm->answered) continue;
        struct entry *e = &t->e[t->n++];
        e->hash = nm->hash;
        memcpy(e->name, nm->host, sizeof e->name);
        e->a = nm->a;
    }
    return t;
}

/* Under mu: the name to resolve now (never answered first), or NULL and
 * *wait_ns = time to the next due one (UINT64_MAX: none). */
static struct name *next_due(struct resolver *r, uint64_t now, uint64_t *wait_ns)
{
    struct name *best = NULL;
    for (struct name *nm = r->names; nm; nm = nm->next) {
        if (!nm->answered) return nm;
        if (!best || nm->due_ns < best->due_ns) best = nm;
    }
    *wait_ns = UINT64_MAX;
    if (best && best->due_ns <= now) return best;
    if (best) *wait_ns = best->due_ns - now;
    return NULL;
}

static void wait_for(struct resolver *r, uint64_t wait_ns)
{
    if (wait_ns == UINT64_MAX) {
        pthread_cond_wait(&r->cv, &r->mu);
        return;
    }
    uint64_t until = now_ns() + wait_ns;
    struct timespec ts = {.tv_sec = (time_t)(until / 1000000000ull),
                          .tv_nsec = (long)(until % 1000000000ull)};
    pthread_cond_timedwait(&r->cv, &r->mu, &ts);
}

/* Under mu: the answer for nm is in; publish, then hand its waiters over. */
static void publish(struct resolver *r, struct name *nm, const struct answer *a, bool fresh)
{
    r->stats.resolutions++;
    if (!fresh || a->rc != 0) r->stats.failures++;
    if (fresh || !nm->answered) {
        nm->a = fresh ? *a : (struct answer){.rc = -ENOENT};
        nm->answered = true;
        struct table *t = build_table(r);
        if (t) av_store(&r->table, t);
        /* else: the old table stays; waiters retry and queue again */
    }
    uint64_t next = fresh ? r->refresh_ns : (RETRY_NS < r->refresh_ns ? RETRY_NS : r->refresh_ns);
    nm->due_ns = now_ns() + next;
    struct waiter *w = nm->waiters;
    nm->waiters = NULL;
    while (w) {
        struct waiter *next_w = w->next;
        loop_submit(w->loop, w->done, w->arg); /* -ENOMEM only: nothing better to do */
        free(w);
        w = next_w;
    }
    r->stats.published++;
}

static void *resolver_main(void *arg)
{
    struct resolver *r = arg;
    char host[RESOLVER_MAX_NAME + 1];
    struct answer a;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        uint64_t wait_ns;
        struct name *nm = next_due(r, now_ns(), &wait_ns);
        if (!nm) {
            wait_for(r, wait_ns);
            continue;
        }
        memcpy(host, nm->host, sizeof host);
        pthread_mutex_unlock(&r->mu);
        bool fresh = resolve(host, &a);
        pthread_mutex_lock(&r->mu);
        /* names are never removed while the thread runs: nm is still valid */
        publish(r, nm, &a, fresh);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

struct resolver *resolver_new(unsigned refresh_s)
{
    struct resolver *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->refresh_ns = (uint64_t)(refresh_s ? refresh_s : 1) * 1000000000ull;
    av_init(&r->table, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int e = pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (e != 0) goto fail_cv;
    if ((e = pthread_mutex_init(&r->mu, NULL)) != 0) goto fail_mu;
    if ((e = pthread_create(&r->thread, NULL, resolver_main, r)) != 0) goto fail_thread;
    return r;
fail_thread:
    pthread_mutex_destroy(&r->mu);
fail_mu:
    pthread_cond_destroy(&r->cv);
fail_cv:
    av_destroy(&r->table);
    free(r);
    errno = e;
    return NULL;
}

void resolver_free(struct resolver *r)
{
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    while (r->names) {
        struct name *nm = r->names;
        r->names = nm->next;
        while (nm->waiters) {
            struct waiter *w = nm->waiters;
            nm->waiters = w->next;
            free(w);
        }
        free(nm);
    }
    av_destroy(&r->table);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
