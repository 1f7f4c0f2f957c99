/* health: the active health checker of gateway/health.h. */
#include "gateway/health.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/loop.h"
#include "gateway/config.h"
#include "gateway/ugroup.h"

/* The thread looks at the config at least this often (a reload's new groups). */
#define MAX_NAP_NS 100000000ull

struct health {
    pthread_t th;
    avalue_t *cfgs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
};

static int wait_fd(int fd, short ev, uint64_t deadline)
{
    uint64_t now = mono_ns();
    if (now >= deadline) return -1;
    struct pollfd p = {.fd = fd, .events = ev};
    int ms = (int)((deadline - now + 999999) / 1000000);
    int rc = poll(&p, 1, ms);
    return rc == 1 && !(p.revents & (POLLERR | POLLNVAL)) ? 0 : -1;
}

static int connect_to(const char *host, uint64_t deadline)
{
    char name[256];
    const char *colon = strrchr(host, ':');
    size_t n = (size_t)(colon - host);
    if (n >= sizeof name) return -1;
    memcpy(name, host[0] == '[' ? host + 1 : host, host[0] == '[' ? n - 2 : n);
    name[host[0] == '[' ? n - 2 : n] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(name, colon + 1, &hints, &ai) != 0 || !ai) return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc = fd < 0 ? -1 : connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (fd >= 0 && rc != 0 && errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline) == 0) {
        int err = 0;
        socklen_t len = sizeof err;
        rc = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0 ? 0 : -1;
    }
    if (rc != 0 && fd >= 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

int health_probe(const char *host, const char *path, uint32_t timeout_ms)
{
    uint64_t deadline = mono_ns() + (uint64_t)timeout_ms * 1000000u;
    int fd = connect_to(host, deadline);
    if (fd < 0) return -1;
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: gateway-health\r\n"
                     "Connection: close\r\n\r\n",
                     path, host);
    int rc = -1;
    if (n > 0 && (size_t)n < sizeof req && wait_fd(fd, POLLOUT, deadline) == 0 &&
        send(fd, req, (size_t)n, MSG_NOSIGNAL) == n) {
        char line[16];
        size_t got = 0;
        while (got < 12 && wait_fd(fd, POLLIN, deadline) == 0) {
            ssize_t k = recv(fd, line + got, 12 - got, 0);
            if (k <= 0) break;
            got += (size_t)k;
        }
        /* "HTTP/1.x 2xx" */
        if (got >= 12 && memcmp(line, "HTTP/1.", 7) == 0 && line[9] == '2') rc = 0;
    }
    close(fd);
    return rc;
}

static void record(struct ugroup_ent *m, const struct health_conf *hc, bool ok)
{
    if (ok) {
        m->fail_run = 0;
        if (m->ok_run < UINT32_MAX) m->ok_run++;
        if (m->ok_run >= hc->healthy_after)
            atomic_store_explicit(&m->down, false, memory_order_relaxed);
    } else {
        m->ok_run = 0;
        if (m->fail_run < UINT32_MAX) m->fail_run++;
        if (m->fail_run >= hc->unhealthy_after)
            atomic_store_explicit(&m->down, true, memory_order_relaxed);
    }
    atomic_store_explicit(&m->checked, true, memory_order_relaxed);
}

/* Probes every host that is due; returns when the next one is. */
static uint64_t round_once(const struct config *cfg, uint64_t now)
{
    uint64_t next = now + MAX_NAP_NS;
    for (size_t g = 0; cfg && g < cfg->n_upstreams; g++) {
        const struct ugroup_conf *u = &cfg->upstreams[g];
        if (!u->health.path) continue;
        for (size_t i = 0; i < u->n_hosts; i++) {
            struct ugroup_ent *m = u->member_ents ? u->member_ents[i] : NULL;
            if (!m) continue;
            if (m->next_ns <= now) {
                bool ok = health_probe(u->hosts[i], u->health.path, u->health.timeout_ms) == 0;
                record(m, &u->health, ok);
                now = mono_ns();
                m->next_ns = now + (uint64_t)u->health.interval_ms * 1000000u;
            }
            if (m->next_ns < next) next = m->next_ns;
        }
    }
    return next;
}

static void *run(void *arg)
{
    struct health *h = arg;
    pthread_mutex_lock(&h->mu);
    while (!h->stop) {
        pthread_mutex_unlock(&h->mu);
        struct config *cfg = av_acquire(h->cfgs);
        uint64_t next = round_once(cfg, mono_ns());
        if (cfg) av_release(h->cfgs, cfg);
        pthread_mutex_lock(&h->mu);
        uint64_t now = mono_ns();
        if (h->stop || next <= now) continue;
        /* mono_ns is CLOCK_MONOTONIC, the condition's clock */
        struct timespec ts = {.tv_sec = (time_t)(next / 1000000000u),
                              .tv_nsec = (long)(next % 1000000000u)};
        pthread_cond_timedwait(&h->cv, &h->mu, &ts);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

struct health *health_start(avalue_t *cfgs)
{
    struct health *h = calloc(1, sizeof(*h));
    if (!h) return NULL;
    h->cfgs = cfgs;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&h->mu, NULL);
    if (pthread_create(&h->th, NULL, run, h) != 0) {
        fprintf(stderr, "gateway: cannot start the health checker\n");
        pthread_cond_destroy(&h->cv);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    return h;
}

void health_stop(struct health *h)
{
    if (!h) return;
    pthread_mutex_lock(&h->mu);
    h->stop = true;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->th, NULL);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
