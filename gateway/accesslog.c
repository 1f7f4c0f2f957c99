/* accesslog: JSON lines through an MPSC queue to one writer thread, and
 * the record of a request (accesslog_request). The design (bounding,
 * waking the writer) is in accesslog.h. */
#include "gateway/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/container_of.h"
#include "core/mpsc.h"
#include "gateway/json.h"
#include "gateway/cache.h"
#include "gateway/fanout.h"
#include "gateway/trace.h"

#define BATCH_BYTES  65536
#define BUSY_WAIT_MS 10

/* A formatted line on its way to the writer. */
struct rec {
    struct mpsc_node node;
    size_t len;
    char line[];
};

struct accesslog {
    struct mpsc_queue q;
    /* Producers touch these (count on every record): apart from the
     * writer's fields. */
    _Alignas(64) _Atomic size_t count; /* queued, not yet taken by the writer */
    _Atomic uint64_t dropped;
    _Atomic int sleeping; /* the writer is (about to be) blocked without timeout */
    _Atomic bool stop;
    _Atomic bool paused;
    _Atomic unsigned pause_gen, pause_ack;   /* set_paused(true) waits for the writer */
    _Atomic unsigned reopen_gen, reopen_ack; /* accesslog_reopen waits for the writer */
    _Atomic int reopen_err;                  /* 0 or -errno of the last reopen */
    _Alignas(64) size_t cap;
    bool off;
    bool close_fd;
    char *path; /* the file, for reopening; NULL for stdout */
    int fd;
    int efd;
    char *batch; /* BATCH_BYTES, the writer's */
    pthread_t thread;
};

/* ---- formatting: one pass to measure, one to write ---- */

/* out.p NULL: only count bytes. */
struct out {
    char *p;
    size_t n;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->p) memcpy(o->p + o->n, s, n);
    o->n += n;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

/* A JSON string (gateway/json.h's rules), or null for NULL. */
static void str(struct out *o, const char *s)
{
    if (!s) {
        puts_(o, "null");
        return;
    }
    size_t n = strlen(s);
    if (o->p)
        o->n += json_put_string(o->p + o->n, s, n);
    else
        o->n += json_escape_len(s, n);
}

/* The scalar fields, formatted once into fixed buffers before measuring. */
struct scalars {
    char ts[64];
    char status[16];
    char dur[64];
};

static void scalars(struct scalars *sc, const struct access_record *r)
{
    struct tm tm;
    time_t t = r->ts.tv_sec;
    if (!gmtime_r(&t, &tm)) memset(&tm, 0, sizeof tm);
    snprintf(sc->ts, sizeof sc->ts, "\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\"", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(r->ts.tv_nsec / 1000000) % 1000);
    snprintf(sc->status, sizeof sc->status, "%d", r->status);
    double d = r->duration_ms;
    if (!(d == d) || d > 1e300 || d < -1e300) /* NaN or infinite: not JSON */
        snprintf(sc->dur, sizeof sc->dur, "null");
    else if (d < 1e15 && d > -1e15)
        snprintf(sc->dur, sizeof sc->dur, "%.3f", d);
    else
        snprintf(sc->dur, sizeof sc->dur, "%.17g", d);
}

static void line(struct out *o, const struct access_record *r, const struct scalars *sc)
{
    puts_(o, "{\"ts\":");
    puts_(o, sc->ts);
    puts_(o, ",\"method\":");
    str(o, r->method);
    puts_(o, ",\"path\":");
    str(o, r->path);
    puts_(o, ",\"endpoint\":");
    str(o, r->endpoint);
    puts_(o, ",\"status\":");
    puts_(o, sc->status);
    puts_(o, ",\"duration_ms\":");
    puts_(o, sc->dur);
    puts_(o, ",\"request_id\":");
    str(o, r->request_id);
    puts_(o, ",\"trace_id\":");
    str(o, r->trace_id);
    puts_(o, ",\"degraded\":[");
    for (size_t i = 0; i < r->ndegraded; i++) {
        if (i) put(o, ",", 1);
        str(o, r->degraded[i]);
    }
    put(o, "]", 1);
    for (size_t i = 0; i < r->ncache; i++) {
        puts_(o, i ? "," : ",\"cache\":{");
        str(o, r->cache_backends[i]);
        put(o, ":", 1);
        str(o, r->cache_results[i]);
    }
    puts_(o, r->ncache ? "}}\n" : "}\n");
}

int accesslog_format(buf_t *out, const struct access_record *r)
{
    struct scalars sc;
    scalars(&sc, r);
    struct out o = {0};
    line(&o, r, &sc);
    int rc = buf_reserve(out, o.n);
    if (rc) return rc;
    o = (struct out){.p = out->data + out->len};
    line(&o, r, &sc);
    out->len += o.n;
    out->data[out->len] = '\0';
    return 0;
}

/* ---- producers ---- */

static void wake(struct accesslog *a)
{
    uint64_t one = 1;
    /* Non-blocking eventfd: fails only if the counter would overflow, and
     * then the writer is awake anyway. */
    ssize_t rc = write(a->efd, &one, sizeof one);
    (void)rc;
}

void accesslog_record(struct accesslog *a, const struct access_record *r)
{
    if (!a || a->off) return;
    /* Reserve a slot first: a full queue costs no formatting. The plain
     * load spares the shared line a locked add while the queue is full. */
    if (atomic_load_explicit(&a->count, memory_order_relaxed) >= a->cap) goto drop;
    if (atomic_fetch_add_explicit(&a->count, 1, memory_order_relaxed) >= a->cap) {
        atomic_fetch_sub_explicit(&a->count, 1, memory_order_relaxed);
        goto drop;
    }
    struct scalars sc;
    scalars(&sc, r);
    struct out o = {0};
    line(&o, r, &sc);
    struct rec *rec = malloc(sizeof *rec + o.n);
    if (!rec) {
        atomic_fetch_sub_explicit(&a->count, 1, memory_order_relaxed);
        goto drop;
    }
    o = (struct out){.p = rec->line};
    line(&o, r, &sc);
    rec->len = o.n;
    mpsc_push(&a->q, &rec->node); /* seq_cst exchange: the Dekker half */
    if (atomic_load_explicit(&a->sleeping, memory_order_seq_cst) &&
        atomic_exchange_explicit(&a->sleeping, 0, memory_order_seq_cst))
        wake(a);
    return;
drop:
    atomic_fetch_add_explicit(&a->dropped, 1, memory_order_relaxed);
}

uint64_t accesslog_dropped(const struct accesslog *a)
{
    return a ? atomic_load_explicit(&a->dropped, memory_order_relaxed) : 0;
}

void accesslog_set_paused(struct accesslog *a, bool paused)
{
    if (!a || a->off) return;
    unsigned gen = atomic_fetch_add_explicit(&a->pause_gen, 1, memory_order_seq_cst) + 1;
    atomic_store_explicit(&a->paused, paused, memory_order_seq_cst);
    wake(a);
    /* Until the writer acknowledges, it may still be draining: wait, so a
     * test knows that nothing is taken from the queue from now on. */
    while (paused && (int)(atomic_load_explicit(&a->pause_ack, memory_order_seq_cst) - gen) < 0)
        sched_yield();
}

int accesslog_reopen(struct accesslog *a)
{
    if (!a || a->off || !a->path) return 0;
    unsigned gen = atomic_fetch_add_explicit(&a->reopen_gen, 1, memory_order_seq_cst) + 1;
    wake(a);
    /* The writer looks at the request at the top of each pass, at most a
     * batch write away; a paused writer (a test hook) still passes there. */
    while ((int)(atomic_load_explicit(&a->reopen_ack, memory_order_seq_cst) - gen) < 0)
        sched_yield();
    return atomic_load_explicit(&a->reopen_err, memory_order_relaxed);
}

bool accesslog_idle(const struct accesslog *a)
{
    return a && !a->off && atomic_load_explicit(&a->sleeping, memory_order_seq_cst);
}

/* ---- the writer ---- */

/* Writes p[0..n) entirely; false on an error other than EINTR. A
 * non-blocking stdout is waited for. */
static bool write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            poll(&pfd, 1, -1);
        } else {
            return false;
        }
    }
    return true;
}

/* Waits on the eventfd up to ms (-1: forever) and consumes its count. */
static void wait_event(struct accesslog *a, int ms)
{
    struct pollfd pfd = {.fd = a->efd, .events = POLLIN};
    if (poll(&pfd, 1, ms) > 0) {
        uint64_t v;
        ssize_t rc = read(a->efd, &v, sizeof v);
        (void)rc;
    }
}

/* Takes every record available, writing in batches; returns how many. */
static size_t drain(struct accesslog *a, char *batch)
{
    size_t total = 0, used = 0, lines = 0;
    struct mpsc_node *n;
    while ((n = mpsc_pop(&a->q))) {
        struct rec *r = container_of(n, struct rec, node);
        if (used + r->len > BATCH_BYTES && used) {
            if (!write_all(a->fd, batch, used))
                atomic_fetch_add_explicit(&a->dropped, lines, memory_order_relaxed);
            used = lines = 0;
        }
        if (r->len > BATCH_BYTES) {
            /* A huge line (a long path) goes out on its own. */
            if (!write_all(a->fd, r->line, r->len))
                atomic_fetch_add_explicit(&a->dropped, 1, memory_order_relaxed);
        } else {
            memcpy(batch + used, r->line, r->len);
            used += r->len;
            lines++;
        }
        free(r);
        atomic_fetch_sub_explicit(&a->count, 1, memory_order_relaxed);
        total++;
    }
    if (used && !write_all(a->fd, batch, used))
        atomic_fetch_add_explicit(&a->dropped, lines, memory_order_relaxed);
    return total;
}

/* Writer side of accesslog_reopen. */
static void reopen_file(struct accesslog *a)
{
    int fd = open(a->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        atomic_store_explicit(&a->reopen_err, -errno, memory_order_relaxed);
        return;
    }
    close(a->fd);
    a->fd = fd;
    atomic_store_explicit(&a->reopen_err, 0, memory_order_relaxed);
}

static void *writer_main(void *arg)
{
    struct accesslog *a = arg;
    bool busy = false;
    for (;;) {
        unsigned rg = atomic_load_explicit(&a->reopen_gen, memory_order_seq_cst);
        if (rg != atomic_load_explicit(&a->reopen_ack, memory_order_relaxed)) {
            if (a->path) reopen_file(a);
            atomic_store_explicit(&a->reopen_ack, rg, memory_order_seq_cst);
        }
        bool stop = atomic_load_explicit(&a->stop, memory_order_seq_cst);
        if (!stop && atomic_load_explicit(&a->paused, memory_order_seq_cst)) {
            atomic_store_explicit(&a->pause_ack,
                                  atomic_load_explicit(&a->pause_gen, memory_order_seq_cst),
                                  memory_order_seq_cst);
            wait_event(a, -1);
            continue;
        }
        if (drain(a, a->batch)) {
            busy = true;
            continue;
        }
        if (!mpsc_empty(&a->q)) {
            /* A producer is between its exchange and its link: it finishes
             * within a few instructions. */
            sched_yield();
            continue;
        }
        if (stop) break;
        if (busy) {
            busy = false;
            wait_event(a, BUSY_WAIT_MS);
            continue;
        }
        atomic_store_explicit(&a->sleeping, 1, memory_order_seq_cst);
        if (!mpsc_empty(&a->q) || atomic_load_explicit(&a->stop, memory_order_seq_cst)) {
            atomic_store_explicit(&a->sleeping, 0, memory_order_seq_cst);
            continue;
        }
        wait_event(a, -1);
        atomic_store_explicit(&a->sleeping, 0, memory_order_seq_cst);
    }
    return NULL;
}

/* ---- lifecycle ---- */

struct accesslog *accesslog_open(const char *path, char *err, size_t errlen)
{
    return accesslog_open_ex(path, NULL, err, errlen);
}

struct accesslog *accesslog_open_ex(const char *path, const struct accesslog_opts *opts, char *err,
                                    size_t errlen)
{
    struct accesslog *a = aligned_alloc(64, (sizeof *a + 63) & ~(size_t)63);
    if (!a) {
        snprintf(err, errlen, "access log: out of memory");
        return NULL;
    }
    memset(a, 0, sizeof *a);
    mpsc_init(&a->q);
    atomic_init(&a->count, 0);
    atomic_init(&a->dropped, 0);
    atomic_init(&a->sleeping, 0);
    atomic_init(&a->stop, false);
    atomic_init(&a->paused, opts && opts->paused);
    atomic_init(&a->pause_gen, 0);
    atomic_init(&a->pause_ack, 0);
    a->cap = opts && opts->capacity ? opts->capacity : ACCESSLOG_CAPACITY;
    a->fd = a->efd = -1;
    if (!path || strcmp(path, "off") == 0) {
        a->off = true;
        return a;
    }
    if (strcmp(path, "-") == 0) {
        a->fd = STDOUT_FILENO;
    } else {
        a->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (a->fd < 0) {
            snprintf(err, errlen, "access log %s: %s", path, strerror(errno));
            goto fail;
        }
        a->close_fd = true;
        if (!(a->path = strdup(path))) {
            snprintf(err, errlen, "access log: out of memory");
            goto fail;
        }
    }
    a->batch = malloc(BATCH_BYTES);
    if (!a->batch) {
        snprintf(err, errlen, "access log: out of memory");
        goto fail;
    }
    a->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (a->efd < 0) {
        snprintf(err, errlen, "access log: eventfd: %s", strerror(errno));
        goto fail;
    }
    int rc = pthread_create(&a->thread, NULL, writer_main, a);
    if (rc) {
        snprintf(err, errlen, "access log: thread: %s", strerror(rc));
        goto fail;
    }
    return a;
fail:
    if (a->efd >= 0) close(a->efd);
    if (a->close_fd) close(a->fd);
    free(a->path);
    free(a->batch);
    free(a);
    return NULL;
}

void accesslog_close(struct accesslog *a)
{
    if (!a) return;
    if (!a->off) {
        atomic_store_explicit(&a->stop, true, memory_order_seq_cst);
        wake(a);
        pthread_join(a->thread, NULL);
        close(a->efd);
        if (a->close_fd) close(a->fd);
        free(a->batch);
    }
    free(a->path);
    free(a);
}

void accesslog_request(struct accesslog *a, const struct request *r, bool hung_up,
                       struct access_record *rec)
{
    const char *names[r->n_calls + 1];
    size_t nd = 0;
    /* A client that hung up (or half-closed: RFC 9112 9.6 allows it, but we
     * cannot tell it from a hang-up, so it is one) is a 499, and the
     * backends whose calls it cancelled are not named as degraded. */
    for (size_t i = 0; i < r->n_calls && !hung_up; i++)
        if (r->calls[i].outcome >= OUT_DEGRADED) names[nd++] = r->calls[i].b->name;
    const char *cnames[r->n_calls + 1], *cres[r->n_calls + 1];
    size_t nc = 0;
    for (size_t i = 0; i < r->n_calls; i++)
        if (r->calls[i].cache != CACHE_NONE) {
            cnames[nc] = r->calls[i].b->name;
            cres[nc++] = cache_result_name(r->calls[i].cache);
        }
    char trace_id[2 * TRACE_ID_BYTES + 1];
    trace_hex(r->trace.trace_id, TRACE_ID_BYTES, trace_id);
    rec->trace_id = trace_id;
    rec->degraded = names;
    rec->ndegraded = nd;
    rec->cache_backends = cnames;
    rec->cache_results = cres;
    rec->ncache = nc;
    accesslog_record(a, rec);
}
