/*
 * accesslog: one JSON line per request, written by one writer thread.
 *
 *   {"ts":"2026-11-27T06:40:00.123Z","method":"GET","path":"/api/x",
 *    "endpoint":"dash","status":200,"duration_ms":12.345,
 *    "request_id":"...","trace_id":"<32 hex>","degraded":["recs"],
 *    "cache":{"user":"hit"}}
 * "cache" is there only when a backend with a cache was called: how each
 * such backend was answered (hit, miss, coalesced). One member per
 * configured backend at most, so the line stays one line of bounded size.
 *
 * A worker formats its record into one malloc'ed node (exact size, one
 * allocation) and pushes it on an MPSC queue (core/mpsc.h): wait-free, no
 * lock, no syscall in the common case. The queue is bounded by an atomic
 * count of records not yet taken by the writer; when it is full the record
 * is dropped and counted (accesslog_dropped, exported as
 * gateway_access_log_dropped_total), so a slow disk or a stuck stdout can
 * never block a worker or grow memory without bound.
 *
 * Waking the writer: it sleeps on an eventfd in two ways.
 *  - Busy (the last drain found records): a 10 ms timed wait WITHOUT
 *    announcing it, so under load producers never make a syscall and the
 *    writer writes one batch per 10 ms (a line reaches the file at most
 *    ~10 ms late; 8192 records per 10 ms is far above what a worker
 *    serves).
 *  - Idle (a timed wait found nothing): it raises a `sleeping` flag and
 *    blocks without a timeout, so an idle gateway costs no wake-ups. The
 *    first producer that sees the flag clears it and writes the eventfd
 *    (one non-blocking write, once per idle period). The flag and the queue
 *    form a Dekker handshake with seq_cst accesses (as in core/loop.c):
 *    the producer pushes then reads the flag, the writer raises the flag then
 *    checks the queue, so one of them always sees the other.
 * A timed wait alone would cost producers nothing but wake an idle process
 * 100 times a second; an eventfd write per record would put a syscall on
 * the request path under load. This hybrid avoids both.
 *
 * JSON strings are escaped: '"', '\\' and control characters, and every
 * byte that is not part of well-formed UTF-8 becomes \ufffd (a client's raw
 * path may hold any bytes; the log stays valid UTF-8 JSON). Lines are
 * written with write(2) in batches of up to 64 KiB; a line is never split
 * between two writes unless it is larger than that.
 */
#ifndef GATEWAY_ACCESSLOG_H
#define GATEWAY_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/buf.h"

/* Default bound on records queued and not yet taken by the writer. */
#define ACCESSLOG_CAPACITY 8192

struct accesslog;

/* One request, as the worker saw it. Strings are NUL-terminated and only
 * read during accesslog_record. */
struct access_record {
    struct timespec ts;          /* wall clock (CLOCK_REALTIME) at arrival */
    const char *method;          /* NULL: null */
    const char *path;            /* raw, as the client sent it; NULL: null */
    const char *endpoint;        /* NULL: null (no endpoint matched) */
    int status;                  /* 499 for a client that hung up */
    double duration_ms;          /* not finite: null */
    const char *request_id;      /* NULL: null */
    const char *trace_id;        /* 32 hex characters; NULL: null */
    const char *const *degraded; /* backends served by a fallback or left out */
    size_t ndegraded;
    const char *const *cache_backends; /* backends with a cache, and for each */
    const char *const *cache_results;  /* "hit", "miss" or "coalesced" */
    size_t ncache;
};

/* Options for accesslog_open_ex (tests use them). */
struct accesslog_opts {
    size_t capacity; /* 0: ACCESSLOG_CAPACITY */
    bool paused;     /* start with the writer paused (see accesslog_set_paused) */
};

/* Opens the log: path "-" is stdout, "off" disables it (a valid handle that
 * writes and drops nothing), anything else a file opened for append (created
 * 0644). Starts the writer thread. Returns NULL with a message in err on
 * failure (file, eventfd or thread). */
struct accesslog *accesslog_open(const char *path, char *err, size_t errlen);
/* Same, with options; opts may be NULL. */
struct accesslog *accesslog_open_ex(const char *path, const struct accesslog_opts *opts, char *err,
                                    size_t errlen);

/* Formats r and queues it for the writer. Any thread, never blocks: when the
 * queue is full (or the node cannot be allocated) the record is dropped and
 * counted. Must not race with accesslog_close. */
void accesslog_record(struct accesslog *a, const struct access_record *r);

/* Logs request r (gateway/fanout.h): rec holds what the HTTP side knows
 * (arrival, method, path, endpoint, status, duration, request id); the
 * trace id, the degraded backends and the cache results come from r. A
 * client that hung up (hung_up) cancelled the calls it left: they are not
 * named as degraded. */
struct request;
void accesslog_request(struct accesslog *a, const struct request *r, bool hung_up,
                       struct access_record *rec);

/* Records dropped so far: queue full, out of memory, or lost to a failed
 * write(2). Any thread. 0 for NULL. */
uint64_t accesslog_dropped(const struct accesslog *a);

/* Test hook: a paused writer takes nothing from the queue (so it fills up);
 * unpausing wakes it. Pausing waits (spinning) until the writer has stopped
 * taking records. Any thread but the writer; not concurrently with close. */
void accesslog_set_paused(struct accesslog *a, bool paused);

/* Test hook: true while the writer is blocked without a timeout, waiting
 * for a producer to wake it. Any thread. */
bool accesslog_idle(const struct accesslog *a);

/* Reopens the log file (after logrotate renamed it: new lines go to a new
 * file at the configured path). Waits until the writer has done it; the
 * records queued before may land in either file. Returns 0, or -errno when
 * the file cannot be opened (the writer keeps the old one). A no-op for "-"
 * and "off". Any thread but the writer; not concurrently with close. */
int accesslog_reopen(struct accesslog *a);

/* Writes every queued record, stops and joins the writer thread, closes the
 * file and frees a. No accesslog_record may run concurrently or later.
 * NULL is ignored. */
void accesslog_close(struct accesslog *a);

/* Appends r's line (with the trailing '\n') to out, exactly as the log
 * would write it. Returns 0 or -ENOMEM. */
int accesslog_format(buf_t *out, const struct access_record *r);

#endif
