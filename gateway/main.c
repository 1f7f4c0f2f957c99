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

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *path = DEFAULT_CONFIG;
    bool check = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'k':
            check = true;
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

    struct config *cfg = reload_load(path);
    if (!cfg) return 1;
    if (check) {
        int bad = auth_check_config(cfg);
        config_free(cfg);
        if (bad) return 1;
        printf("%s: ok\n", path);
        return 0;
    }

    signal(SIGPIPE, SIG_IGN);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

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

    for (;;) {
        struct config *cur = av_acquire(&gw.config);
        uint32_t every = cur->degraded.snapshot_path ? cur->degraded.snapshot_interval_s : 0;
        av_release(&gw.config, cur);
        struct timespec ts = {.tv_sec = every ? every : 3600};
        int sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig < 0) {
            if (errno == EAGAIN && every) gateway_snapshot(&gw);
            continue;
        }
        if (sig == SIGHUP) {
            if (!reloader || reloader_request(reloader) != 0)
                atomic_fetch_add(&gw.reloads_error, 1);
            int rc = accesslog_reopen(gw.log); /* after logrotate */
            if (rc < 0)
                fprintf(stderr, "gateway: cannot reopen the access log: %s\n", strerror(-rc));
            continue;
        }
        fprintf(stderr, "gateway: %s, draining\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    }
    reloader_stop(reloader); /* a reload still running no longer touches gw */
    health_stop(health);
    gateway_stop(&gw);
    curl_global_cleanup();
    fprintf(stderr, "gateway: stopped\n");
    return 0;
}
