/*
 * otel: span records, the bounded queue and the exporter thread. See otel.h.
 */
#include "gateway/otel.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/container_of.h"
#include "core/loop.h"
#include "gateway/fanout.h"
#include "gateway/json.h"

struct otel {
    struct mpsc_queue q;
    _Atomic uint64_t queued; /* pushed, not yet popped: the bound */
    _Atomic uint64_t dropped, exported;
    char *endpoint, *service;
    pthread_t thread;
    pthread_mutex_t mu; /* only between otel_stop and the exporter */
    pthread_cond_t cv;
    bool stop;
    bool last_failed; /* exporter thread only */
    CURL *curl;
    struct curl_slist *hdrs;
};

/* ---- sampling ---- */

uint8_t otel_sample_flags(const struct tracing_conf *t)
{
    if (!t->enabled || t->sample_ratio >= 1.0) return TRACE_FLAG_SAMPLED;
    if (t->sample_ratio <= 0.0) return 0;
    /* top 53 bits as a double in [0, 1) */
    double u = (double)(trace_rand64() >> 11) / 9007199254740992.0;
    return u < t->sample_ratio ? TRACE_FLAG_SAMPLED : 0;
}

/* ---- rendering ---- */

static int put_str(buf_t *out, const char *s)
{
    return json_buf_string(out, s, strlen(s));
}

static int put_hex(buf_t *out, const uint8_t *id, size_t n)
{
    char hex[2 * TRACE_ID_BYTES + 1];
    trace_hex(id, n, hex);
    return buf_printf(out, "\"%s\"", hex);
}

static int attr_str(buf_t *out, bool *first, const char *key, const char *v)
{
    if (!v[0]) return 0;
    int rc = buf_printf(out, "%s{\"key\":\"%s\",\"value\":{\"stringValue\":", *first ? "" : ",",
                        key);
    *first = false;
    rc = rc ? rc : put_str(out, v);
    return rc ? rc : buf_puts(out, "}}");
}

static int attr_int(buf_t *out, bool *first, const char *key, long v)
{
    int rc = buf_printf(out, "%s{\"key\":\"%s\",\"value\":{\"intValue\":\"%ld\"}}",
                        *first ? "" : ",", key, v);
    *first = false;
    return rc;
}

static int render_span(buf_t *out, const struct otel_span *s)
{
    int rc = buf_puts(out, "{\"traceId\":");
    rc = rc ? rc : put_hex(out, s->trace_id, TRACE_ID_BYTES);
    rc = rc ? rc : buf_puts(out, ",\"spanId\":");
    rc = rc ? rc : put_hex(out, s->span_id, TRACE_SPAN_BYTES);
    if (s->has_parent) {
        rc = rc ? rc : buf_puts(out, ",\"parentSpanId\":");
        rc = rc ? rc : put_hex(out, s->parent_id, TRACE_SPAN_BYTES);
    }
    rc = rc ? rc : buf_puts(out, ",\"name\":");
    rc = rc ? rc : put_str(out, s->name);
    rc = rc ? rc
            : buf_printf(out,
                         ",\"kind\":%u,\"startTimeUnixNano\":\"%" PRIu64
                         "\",\"endTimeUnixNano\":\"%" PRIu64 "\",\"attributes\":[",
                         s->kind, s->start_unix_ns, s->end_unix_ns);
    bool first = true;
    rc = rc ? rc : attr_str(out, &first, "gateway.endpoint", s->endpoint);
    rc = rc ? rc : attr_str(out, &first, "gateway.backend", s->backend);
    rc = rc ? rc : attr_str(out, &first, "http.request.method", s->method);
    rc = rc ? rc : attr_str(out, &first, "http.route", s->route);
    if (s->http_status) rc = rc ? rc : attr_int(out, &first, "http.response.status_code", s->http_status);
    rc = rc ? rc : attr_str(out, &first, "gateway.outcome", s->outcome);
    rc = rc ? rc : buf_puts(out, "],\"status\":{");
    if (s->error) {
        rc = rc ? rc : buf_puts(out, "\"code\":2,\"message\":");
        rc = rc ? rc : put_str(out, s->message);
    }
    return rc ? rc : buf_puts(out, "}}");
}

int otel_render(buf_t *out, const char *service_name, struct otel_span *const *spans, size_t n)
{
    int rc = buf_puts(out, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":"
                           "\"service.name\",\"value\":{\"stringValue\":");
    rc = rc ? rc : put_str(out, service_name);
    rc = rc ? rc
            : buf_puts(out, "}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"gateway\",\"version\":"
                            "\"" GATEWAY_VERSION "\"},\"spans\":[");
    for (size_t i = 0; i < n && !rc; i++) {
        if (i) rc = buf_putc(out, ',');
        rc = rc ? rc : render_span(out, spans[i]);
    }
    return rc ? rc : buf_puts(out, "]}]}]}");
}

/* ---- the queue ---- */

int otel_submit(struct otel *o, const struct otel_span *s)
{
    if (atomic_fetch_add_explicit(&o->queued, 1, memory_order_relaxed) >= OTEL_QUEUE_MAX) {
        atomic_fetch_sub_explicit(&o->queued, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&o->dropped, 1, memory_order_relaxed);
        return -ENOSPC;
    }
    struct otel_span *c = malloc(sizeof *c);
    if (!c) {
        atomic_fetch_sub_explicit(&o->queued, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&o->dropped, 1, memory_order_relaxed);
        return -ENOMEM;
    }
    *c = *s;
    mpsc_push(&o->q, &c->node);
    return 0;
}

uint64_t otel_dropped(const struct otel *o)
{
    return o ? atomic_load_explicit(&o->dropped, memory_order_relaxed) : 0;
}

uint64_t otel_exported(const struct otel *o)
{
    return o ? atomic_load_explicit(&o->exported, memory_order_relaxed) : 0;
}

/* ---- request spans ---- */

void otel_tracestate(buf_t *line, const char *v)
{
    if (!v || !*v || strlen(v) > OTEL_TRACESTATE_MAX) return;
    for (const char *c = v; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) return;
    if (buf_printf(line, "tracestate: %s", v)) buf_clear(line);
}

static const char *server_outcome(const struct request *r, int status)
{
    if (status >= 400 || status == 0) return "error";
    return r->degraded_names.len ? "degraded" : "ok";
}

void otel_request(struct otel *o, const struct request *r, const char *method, int status)
{
    if (!o || !(r->trace.flags & TRACE_FLAG_SAMPLED)) return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t mono = mono_ns();
    uint64_t real = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    uint64_t off = real - mono; /* unix = mono + off */
    const char *ep = r->ep ? r->ep->name : "none";

    struct otel_span s = {.kind = OTEL_KIND_SERVER, .http_status = status};
    memcpy(s.trace_id, r->trace.trace_id, sizeof s.trace_id);
    memcpy(s.span_id, r->trace.span_id, sizeof s.span_id);
    memcpy(s.parent_id, r->parent_span, sizeof s.parent_id);
    s.has_parent = r->has_parent;
    s.start_unix_ns = r->start_ns + off;
    s.end_unix_ns = real;
    snprintf(s.name, sizeof s.name, "%s %s", method, r->ep ? r->ep->path : "unmatched");
    snprintf(s.method, sizeof s.method, "%s", method);
    snprintf(s.endpoint, sizeof s.endpoint, "%s", ep);
    snprintf(s.route, sizeof s.route, "%s", r->ep ? r->ep->path : "");
    snprintf(s.outcome, sizeof s.outcome, "%s", server_outcome(r, status));
    s.error = status >= 500 || status == 0;
    if (s.error) snprintf(s.message, sizeof s.message, "status %d", status);
    otel_submit(o, &s);

    for (size_t i = 0; i < r->n_calls; i++) {
        const struct backend_call *c = &r->calls[i];
        static const uint8_t zero[TRACE_SPAN_BYTES];
        if (memcmp(c->span_id, zero, sizeof zero) == 0) continue; /* never sent */
        struct otel_span k = {.kind = OTEL_KIND_CLIENT, .has_parent = true,
                              .http_status = (int)c->status};
        memcpy(k.trace_id, r->trace.trace_id, sizeof k.trace_id);
        memcpy(k.span_id, c->span_id, sizeof k.span_id);
        memcpy(k.parent_id, r->trace.span_id, sizeof k.parent_id);
        k.start_unix_ns = c->start_ns + off;
        k.end_unix_ns = k.start_unix_ns + c->dur_ns;
        snprintf(k.name, sizeof k.name, "%s %s", c->b->method, c->b->name);
        snprintf(k.method, sizeof k.method, "%s", c->b->method);
        snprintf(k.endpoint, sizeof k.endpoint, "%s", ep);
        snprintf(k.backend, sizeof k.backend, "%s", c->b->name);
        snprintf(k.outcome, sizeof k.outcome, "%s", outcome_name(c->outcome));
        k.error = c->outcome != OUT_OK;
        if (k.error) snprintf(k.message, sizeof k.message, "%s", c->why ? c->why : "failed");
        otel_submit(o, &k);
    }
}

/* ---- the exporter thread ---- */

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/* POSTs one batch; true when the collector took it (2xx). */
static bool post(struct otel *o, const buf_t *body)
{
    curl_easy_setopt(o->curl, CURLOPT_POSTFIELDS, body->data);
    curl_easy_setopt(o->curl, CURLOPT_POSTFIELDSIZE, (long)body->len);
    long code = 0;
    if (curl_easy_perform(o->curl) != CURLE_OK) return false;
    curl_easy_getinfo(o->curl, CURLINFO_RESPONSE_CODE, &code);
    return code >= 200 && code <= 299;
}

/* Pops up to a batch and exports it. Returns how many were popped. */
static size_t export_batch(struct otel *o)
{
    struct otel_span *batch[OTEL_BATCH_MAX];
    size_t n = 0;
    struct mpsc_node *node;
    while (n < OTEL_BATCH_MAX && (node = mpsc_pop(&o->q)))
        batch[n++] = container_of(node, struct otel_span, node);
    if (!n) return 0;
    atomic_fetch_sub_explicit(&o->queued, n, memory_order_relaxed);
    buf_t body;
    buf_init(&body, NULL);
    bool ok = otel_render(&body, o->service, batch, n) == 0 && post(o, &body);
    atomic_fetch_add_explicit(ok ? &o->exported : &o->dropped, n, memory_order_relaxed);
    o->last_failed = !ok;
    buf_free(&body);
    for (size_t i = 0; i < n; i++)
        free(batch[i]);
    return n;
}

static void *exporter_main(void *arg)
{
    struct otel *o = arg;
    pthread_mutex_lock(&o->mu);
    while (!o->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += OTEL_FLUSH_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&o->cv, &o->mu, &ts);
        if (o->stop) break;
        pthread_mutex_unlock(&o->mu);
        while (export_batch(o) == OTEL_BATCH_MAX) {
        }
        pthread_mutex_lock(&o->mu);
    }
    pthread_mutex_unlock(&o->mu);
    /* last flush (the workers are gone), bounded: once the collector fails
     * or OTEL_TIMEOUT_MS have passed, the rest is dropped rather than waited
     * for batch after batch */
    uint64_t until = mono_ns() + (uint64_t)OTEL_TIMEOUT_MS * 1000000u;
    while (mono_ns() < until && export_batch(o) && !o->last_failed) {
    }
    struct mpsc_node *node;
    while ((node = mpsc_pop(&o->q))) {
        free(container_of(node, struct otel_span, node));
        atomic_fetch_add_explicit(&o->dropped, 1, memory_order_relaxed);
    }
    return NULL;
}

static void otel_free(struct otel *o)
{
    curl_slist_free_all(o->hdrs);
    if (o->curl) curl_easy_cleanup(o->curl);
    free(o->endpoint);
    free(o->service);
    free(o);
}

struct otel *otel_start(const struct tracing_conf *t)
{
    struct otel *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    mpsc_init(&o->q);
    o->endpoint = strdup(t->otlp_endpoint);
    o->service = strdup(t->service_name);
    o->curl = curl_easy_init();
    o->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (!o->endpoint || !o->service || !o->curl || !o->hdrs) {
        otel_free(o);
        fprintf(stderr, "gateway: tracing: out of memory\n");
        return NULL;
    }
    curl_easy_setopt(o->curl, CURLOPT_URL, o->endpoint);
    curl_easy_setopt(o->curl, CURLOPT_HTTPHEADER, o->hdrs);
    curl_easy_setopt(o->curl, CURLOPT_TIMEOUT_MS, (long)OTEL_TIMEOUT_MS);
    curl_easy_setopt(o->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)OTEL_TIMEOUT_MS / 2);
    curl_easy_setopt(o->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(o->curl, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(o->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&o->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&o->mu, NULL);
    if (pthread_create(&o->thread, NULL, exporter_main, o) != 0) {
        pthread_cond_destroy(&o->cv);
        pthread_mutex_destroy(&o->mu);
        otel_free(o);
        fprintf(stderr, "gateway: tracing: cannot start the exporter thread\n");
        return NULL;
    }
    return o;
}

void otel_stop(struct otel *o)
{
    if (!o) return;
    pthread_mutex_lock(&o->mu);
    o->stop = true;
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
    pthread_join(o->thread, NULL);
    pthread_cond_destroy(&o->cv);
    pthread_mutex_destroy(&o->mu);
    otel_free(o);
}
