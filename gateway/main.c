/*
 * gateway: command line, signals, and the process lifecycle.
 */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/accesslog.h"
#include "gateway/auth.h"
#include "gateway/config.h"
#include "gateway/health.h"
#include "gateway/reload.h"
#include "gateway/gateway.h"

#define DEFAULT_CONFIG "conf/gateway.json"

static void usage(FILE *f)
{
    fprintf(f, "usage: gateway [-c FILE] [--check]\n"
               "\n"
               "A fan-out HTTP gateway: one client request, several backend calls at once,\n"
               "merged JSON within a deadline.\n"
               "\n"
               "  -c, --config FILE  configuration (default " DEFAULT_CONFIG ")\n"
               "      --check        validate the configuration, print every problem, exit\n"
               "  -h, --help         this text\n"
               "  -V, --version      print the version\n"
               "\n"
               "Signals: SIGHUP reloads the configuration and the JWKS, reopens the access log;\n"
               "SIGTERM and SIGINT drain and exit.\n");
}

/* Parses the command line into *path and *check. Returns -1 to go on, or
 * the exit code (0 after --help or --version, 2 on a usage error). */
static int parse_args(int argc, char **argv, const char **path, bool *check)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            *path = optarg;
            break;
        case 'k':
            *check = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("gateway %s\n", GATEWAY_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    return -1;
}

/* --check after the config loaded: the checks that need more than the
 * config itself (the JWKS file). Frees cfg; returns the exit code. */
static int check_only(const char *path, struct config *cfg)
{
    int bad = auth_check_config(cfg);
    config_free(cfg);
    if (bad) return 1;
    printf("%s: ok\n", path);
    return 0;
}

/* Ignores SIGPIPE and blocks the signals main waits for, before any thread
 * starts, so that every thread inherits the mask. */
static void block_signals(sigset_t *sigs)
{
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(sigs);
    sigaddset(sigs, SIGTERM);
    sigaddset(sigs, SIGINT);
    sigaddset(sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, sigs, NULL);
}

/* Waits for signals until SIGTERM or SIGINT: SIGHUP asks for a reload and
 * reopens the access log; a wait that times out writes the degraded
 * store's snapshot when one is configured. */
static void wait_for_stop(struct gateway *gw, struct reloader *reloader, const sigset_t *sigs)
{
    for (;;) {
        struct config *cur = av_acquire(&gw->config);
        uint32_t every = cur->degraded.snapshot_path ? cur->degraded.snapshot_interval_s : 0;
        av_release(&gw->config, cur);
        struct timespec ts = {.tv_sec = every ? every : 3600};
        int sig = sigtimedwait(sigs, NULL, &ts);
        if (sig < 0) {
            if (errno == EAGAIN && every) gateway_snapshot(gw);
            continue;
        }
        if (sig == SIGHUP) {
            if (!reloader || reloader_request(reloader) != 0)
                atomic_fetch_add(&gw->reloads_error, 1);
            int rc = accesslog_reopen(gw->log); /* after logrotate */
            if (rc < 0)
                fprintf(stderr, "gateway: cannot reopen the access log: %s\n", strerror(-rc));
            continue;
        }
        fprintf(stderr, "gateway: %s, draining\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        return;
    }
}

int main(int argc, char **argv)
{
    const char *path = DEFAULT_CONFIG;
    bool check = false;
    int rc = parse_args(argc, argv, &path, &check);
    if (rc >= 0) return rc;

    struct config *cfg = reload_load(path);
    if (!cfg) return 1;
    if (check) return check_only(path, cfg);

    sigset_t sigs;
    block_signals(&sigs);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "gateway: curl_global_init failed\n");
        config_free(cfg);
        return 1;
    }
    static struct gateway gw;
    const char *listen = cfg->server.listen;
    int workers = cfg->server.workers;
    if (gateway_start(&gw, cfg) != 0) {
        curl_global_cleanup();
        return 1;
    }
    fprintf(stderr, "gateway %s: listening on %s with %d workers\n", GATEWAY_VERSION, listen,
            workers);
    struct health *health = health_start(&gw.config); /* active checks, off the workers */
    /* Reloads run on their own thread: this one only waits for signals, so
     * a SIGTERM during a slow reload is acted on at once. */
    struct reloader *reloader = reloader_new(&gw, path);
    wait_for_stop(&gw, reloader, &sigs);
    reloader_stop(reloader); /* a reload still running no longer touches gw */
    health_stop(health);
    gateway_stop(&gw);
    curl_global_cleanup();
    fprintf(stderr, "gateway: stopped\n");
    return 0;
}
