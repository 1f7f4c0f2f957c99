/*
 * reload: the config reload thread (see reload.h). The signal thread
 * (main.c) only sets flags under r->lock; the reload thread reads and
 * parses the file with no lock held and takes the lock to swap the snapshot
 * in, so reloader_stop orders every swap before the gateway is torn down.
 */
#include "gateway/reload.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/auth.h"
#include "gateway/tls.h"
#include "gateway/ugroup.h"

struct reloader {
    struct gateway *gw;
    const char *path;
    pthread_mutex_t lock;
    bool running; /* a thread is reloading */
    bool again;   /* a SIGHUP came during the running reload */
    bool stopped; /* reloader_stop was called: gw is going away */
};

struct config *reload_load(const char *path)
{
    struct config_errors errs = {0};
    struct config *cfg = config_load(path, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "%s\n", errs.lines[i]);
    config_errors_free(&errs);
    return cfg;
}

/* Swaps next in (or keeps the running config when next is NULL). Called
 * with r->lock held and r->stopped false. */
static void apply(struct reloader *r, struct config *next)
{
    struct gateway *gw = r->gw;
    if (!next) {
        fprintf(stderr, "gateway: reload of %s failed; keeping the running configuration\n",
                r->path);
        atomic_fetch_add(&gw->reloads_error, 1);
        return;
    }
    struct config *cur = av_acquire(&gw->config);
    if (strcmp(cur->server.listen, next->server.listen) != 0 ||
        cur->server.workers != next->server.workers)
        fprintf(stderr, "gateway: server.listen / server.workers changed: takes effect after a "
                        "restart\n");
    if (strcmp(cur->access_log_path, next->access_log_path) != 0 ||
        cur->degraded.max_entries != next->degraded.max_entries)
        fprintf(stderr, "gateway: access_log.path / degraded.max_entries changed: takes effect "
                        "after a restart\n");
    av_release(&gw->config, cur);
    gateway_resolver_config(gw, next);
    /* before the old config is detached: kept hosts keep their state */
    if (ugroup_attach(next))
        fprintf(stderr, "gateway: out of memory for upstream state; some hosts go without\n");
    av_store(&gw->config, next);
    atomic_fetch_add(&gw->reloads_ok, 1);
    fprintf(stderr, "gateway: configuration reloaded from %s\n", r->path);
    tls_reload(next); /* the files may have changed under the same paths */
}

/* The JWKS (auth.c) on every SIGHUP, also when the config did not change
 * (key rotation). Called with r->lock held and r->stopped false. */
static void apply_jwks(struct reloader *r)
{
    struct config *now = av_acquire(&r->gw->config);
    auth_reload(&r->gw->jwks, now);
    av_release(&r->gw->config, now);
}

static void reloader_free(struct reloader *r)
{
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static void *reload_main(void *arg)
{
    struct reloader *r = arg;
    bool stopped;
    for (;;) {
        struct config *next = reload_load(r->path); /* the slow part: no lock */
        pthread_mutex_lock(&r->lock);
        stopped = r->stopped;
        if (stopped) {
            config_free(next);
        } else {
            apply(r, next);
            apply_jwks(r);
            if (r->again) {
                r->again = false;
                pthread_mutex_unlock(&r->lock);
                continue;
            }
        }
        r->running = false;
        pthread_mutex_unlock(&r->lock);
        break;
    }
    if (stopped) reloader_free(r);
    return NULL;
}

struct reloader *reloader_new(struct gateway *gw, const char *path)
{
    struct reloader *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->gw = gw;
    r->path = path;
    pthread_mutex_init(&r->lock, NULL);
    return r;
}

/* A detached thread with every signal blocked (the main thread takes them). */
static int start_thread(struct reloader *r)
{
    pthread_attr_t attr;
    pthread_t t;
    sigset_t all, old;
    sigfillset(&all);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&t, &attr, reload_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return -rc;
}

int reloader_request(struct reloader *r)
{
    pthread_mutex_lock(&r->lock);
    int rc = 0;
    if (r->running) {
        r->again = true;
        fprintf(stderr, "gateway: a reload is still running; %s is read again after it\n", r->path);
    } else if ((rc = start_thread(r)) == 0) {
        r->running = true;
        fprintf(stderr, "gateway: reloading %s\n", r->path);
    } else {
        fprintf(stderr, "gateway: cannot start a reload: %s\n", strerror(-rc));
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

void reloader_stop(struct reloader *r)
{
    if (!r) return;
    pthread_mutex_lock(&r->lock);
    r->stopped = true;
    bool running = r->running;
    pthread_mutex_unlock(&r->lock);
    if (running)
        fprintf(stderr, "gateway: a reload of %s is still running; its result is dropped\n",
                r->path);
    else
        reloader_free(r);
}
