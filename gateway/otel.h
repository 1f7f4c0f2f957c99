/*
 * otel: OpenTelemetry span export (OTLP/HTTP with JSON bodies) for
 * "tracing": one server span per request, one client span per backend call,
 * with the ids the gateway sends in traceparent.
 *
 * Workers never block on it: a finished request turns into fixed-size span
 * records pushed onto a bounded MPSC queue (core/mpsc.h: one atomic
 * exchange; the bound is an atomic counter). A full queue drops the span and
 * counts it (gateway_spans_dropped_total). One exporter thread wakes every
 * OTEL_FLUSH_MS, drains up to OTEL_BATCH_MAX spans, renders them and POSTs
 * them with libcurl (easy interface, keep-alive, bounded timeouts); a batch
 * the collector does not take (down, slow, non-2xx) is dropped and counted
 * too. A collector that is down therefore costs the workers nothing but the
 * enqueue.
 *
 * The exporter is started at process start from the config then; a reload
 * that changes tracing.otlp_endpoint or service_name takes effect at the
 * next restart, while sample_ratio is read per request.
 */
#ifndef GATEWAY_OTEL_H
#define GATEWAY_OTEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/mpsc.h"
#include "gateway/config.h"
#include "gateway/trace.h"

#define OTEL_QUEUE_MAX      16384 /* spans waiting for the exporter */
#define OTEL_BATCH_MAX      1024  /* spans per POST */
#define OTEL_FLUSH_MS       100
#define OTEL_TIMEOUT_MS     2000 /* one POST, connect included */
#define OTEL_TRACESTATE_MAX 4096 /* longer tracestate headers are not forwarded */

struct request;
struct otel;

enum otel_kind { OTEL_KIND_SERVER = 2, OTEL_KIND_CLIENT = 3 };

/* One finished span (a copy: nothing in it points elsewhere). */
struct otel_span {
    struct mpsc_node node; /* private */
    uint8_t trace_id[TRACE_ID_BYTES];
    uint8_t span_id[TRACE_SPAN_BYTES];
    uint8_t parent_id[TRACE_SPAN_BYTES];
    bool has_parent;
    bool error; /* status code ERROR, else UNSET */
    uint8_t kind;
    uint64_t start_unix_ns, end_unix_ns;
    int http_status; /* 0: no attribute */
    char name[96];
    char method[8];
    char endpoint[64];
    char backend[64]; /* "" on server spans */
    char route[128];  /* "" on client spans */
    char outcome[16];
    char message[48]; /* status message of an error */
};

/* The flags of a new trace (no valid incoming traceparent): sampled unless
 * tracing is on and the draw against sample_ratio says no. */
uint8_t otel_sample_flags(const struct tracing_conf *t);

/* Starts the exporter thread for t (t->enabled). Strings are copied.
 * Returns NULL (reported on stderr) on failure. */
struct otel *otel_start(const struct tracing_conf *t);
/* Stops the thread after a last export of what is queued (it may first
 * finish a POST in progress: at most OTEL_TIMEOUT_MS, then the last flush
 * takes at most about as long again; what is left is dropped and counted),
 * frees everything. NULL is fine. */
void otel_stop(struct otel *o);
/* Spans dropped (queue full or export failed) and exported, so far. */
uint64_t otel_dropped(const struct otel *o);
uint64_t otel_exported(const struct otel *o);

/* Queues a copy of s. Any thread, never blocks. Returns 0, or -ENOSPC /
 * -ENOMEM when it was dropped (and counted). */
int otel_submit(struct otel *o, const struct otel_span *s);

/* The request is over with status: queues its server span and one client
 * span per backend call that started, when r's trace is sampled. method is
 * the client's. Worker thread; never blocks. o NULL: nothing. */
void otel_request(struct otel *o, const struct request *r, const char *method, int status);

/* The client's tracestate value (may be NULL) as the line forwarded to
 * backends ("tracestate: v", unchanged) into line; left empty when absent,
 * longer than OTEL_TRACESTATE_MAX or holding control characters. */
void otel_tracestate(buf_t *line, const char *value);

/* Renders an OTLP/JSON ExportTraceServiceRequest of spans[0..n) into out.
 * 0 or -ENOMEM. */
int otel_render(buf_t *out, const char *service_name, struct otel_span *const *spans, size_t n);

#endif
