/*
 * loop: epoll + timer heap + run queue + cross-thread submit. See loop.h.
 *
 * Scheduler state lives in the coroutines themselves (struct coro_sched):
 * sched.next links the run queue, sched.data points at the park record of a
 * parked coroutine (NULL when it is running or ready). The park record is a
 * local of loop_park(), on the parked coroutine's own stack, and carries the
 * deadline timer: parking allocates nothing.
 *
 * Wake-ups from other threads: loop_submit pushes on an MPSC queue and
 * writes the eventfd only when the loop is (about to be) blocked in
 * epoll_wait, told by the `sleeping` flag (a Dekker handshake, see
 * poll_timeout() and wake_if_sleeping()). A busy loop costs submitters no
 * system call.
 */
#include "core/loop.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/container_of.h"
#include "core/mpsc.h"

#define MAX_EVENTS 256
/* Resumes per run-queue pass: coroutines that keep waking each other must
 * not starve I/O forever. */
#define RUN_BUDGET 65536
/* Submitted functions run per iteration, for the same reason. */
#define SUBMIT_BUDGET 4096

struct park {
    coro_t *co;
    loop_timer_t timer;
    struct park *prev, *next; /* loop->parked */
    int result;
};

struct submit_item {
    struct mpsc_node node; /* first: the pop result is the item */
    void (*fn)(void *arg);
    void *arg;
};

struct runq {
    coro_t *head, *tail;
};

struct loop {
    int epfd;
    int evfd;
    uint64_t now;

    loop_timer_t **heap;
    uint32_t heap_len, heap_cap;
    uint64_t timer_seq;

    struct runq ready;   /* run in this pass */
    struct runq yielded; /* loop_yield: run in the next iteration */
    struct park parked;  /* sentinel of the circular list of parks */

    loop_hook_t *hooks;
    loop_hook_t *hook_next; /* iteration cursor, fixed up by hook_remove */

    /* the epoll batch being dispatched, for loop_io_stop */
    struct epoll_event *batch;
    int batch_pos, batch_len;

    atomic_bool stop;
    atomic_int sleeping;
    struct mpsc_queue submits;
};

static __thread loop_t *tls_loop;

/* Marks the eventfd in epoll; loop_io_t pointers are never equal to it. */
#define EVFD_TAG ((void *)1)

uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

loop_t *loop_current(void)
{
    return tls_loop;
}

uint64_t loop_now(const loop_t *loop)
{
    return loop->now;
}

/* ---- run queue ---- */

static inline void runq_push(struct runq *q, coro_t *co)
{
    coro_sched(co)->next = NULL;
    if (q->tail)
        coro_sched(q->tail)->next = co;
    else
        q->head = co;
    q->tail = co;
}

static inline coro_t *runq_pop(struct runq *q)
{
    coro_t *co = q->head;
    if (co) {
        q->head = coro_sched(co)->next;
        if (!q->head) q->tail = NULL;
    }
    return co;
}

/* ---- timer heap: binary min-heap of pointers, ordered by (deadline, seq) ---- */

static inline bool timer_less(const loop_timer_t *a, const loop_timer_t *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static inline void heap_set(loop_t *loop, uint32_t i, loop_timer_t *t)
{
    loop->heap[i] = t;
    t->heap_index = i;
}

static void heap_up(loop_t *loop, uint32_t i)
{
    loop_timer_t *t = loop->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!timer_less(t, loop->heap[parent])) break;
        heap_set(loop, i, loop->heap[parent]);
        i = parent;
    }
    heap_set(loop, i, t);
}

static void heap_down(loop_t *loop, uint32_t i)
{
    loop_timer_t *t = loop->heap[i];
    uint32_t n = loop->heap_len;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && timer_less(loop->heap[c + 1], loop->heap[c])) c++;
        if (!timer_less(loop->heap[c], t)) break;
        heap_set(loop, i, loop->heap[c]);
        i = c;
    }
    heap_set(loop, i, t);
}

static void heap_remove(loop_t *loop, loop_timer_t *t)
{
    uint32_t i = t->heap_index;
    loop_timer_t *last = loop->heap[--loop->heap_len];
    t->heap_index = UINT32_MAX;
    if (last == t) return;
    heap_set(loop, i, last);
    if (i > 0 && timer_less(last, loop->heap[(i - 1) / 2]))
        heap_up(loop, i);
    else
        heap_down(loop, i);
}

void loop_timer_init(loop_timer_t *t, loop_timer_fn cb)
{
    t->deadline = 0;
    t->seq = 0;
    t->heap_index = UINT32_MAX;
    t->cb = cb;
}

void loop_timer_start(loop_t *loop, loop_timer_t *t, uint64_t deadline_ns)
{
    if (loop_timer_active(t)) heap_remove(loop, t);
    if (loop->heap_len == loop->heap_cap) {
        /* The only allocation on this path, amortised; the heap never
         * shrinks. Out of memory here has no sane recovery for a caller
         * that is arming a timeout, so it aborts. */
        uint32_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
        loop_timer_t **h = realloc(loop->heap, cap * sizeof *h);
        if (!h) abort();
        loop->heap = h;
        loop->heap_cap = cap;
    }
    t->deadline = deadline_ns;
    t->seq = loop->timer_seq++;
    heap_set(loop, loop->heap_len++, t);
    heap_up(loop, t->heap_index);
}

void loop_timer_stop(loop_t *loop, loop_timer_t *t)
{
    if (loop_timer_active(t)) heap_remove(loop, t);
}

/* Runs due timers. Timers armed while this runs (seq >= first_new) wait for
 * the next iteration, so a callback that re-arms at `now` cannot spin. */
static int run_timers(loop_t *loop)
{
    int n = 0;
    uint64_t first_new = loop->timer_seq;
    while (loop->heap_len) {
        loop_timer_t *t = loop->heap[0];
        if (t->deadline > loop->now || t->seq >= first_new) break;
        heap_remove(loop, t);
        t->cb(loop, t);
        n++;
    }
    return n;
}

/* ---- lifecycle ---- */

loop_t *loop_new(void)
{
    loop_t *loop = calloc(1, sizeof *loop);
    if (!loop) return NULL;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    loop->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (loop->epfd < 0 || loop->evfd < 0) goto fail;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = EVFD_TAG};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->evfd, &ev) != 0) goto fail;
    loop->parked.next = loop->parked.prev = &loop->parked;
    mpsc_init(&loop->submits);
    atomic_init(&loop->stop, false);
    atomic_init(&loop->sleeping, 0);
    loop->now = mono_ns();
    tls_loop = loop;
    return loop;
fail:;
    int err = errno;
    if (loop->epfd >= 0) close(loop->epfd);
    if (loop->evfd >= 0) close(loop->evfd);
    free(loop);
    errno = err;
    return NULL;
}

void loop_free(loop_t *loop)
{
    if (!loop) return;
    coro_t *co;
    while ((co = runq_pop(&loop->ready)))
        coro_free(co);
    while ((co = runq_pop(&loop->yielded)))
        coro_free(co);
    /* Park records live on the parked coroutines' stacks: read the link
     * before the stack goes. Their timers are dropped with the heap. */
    struct park *p = loop->parked.next;
    while (p != &loop->parked) {
        struct park *next = p->next;
        coro_sched(p->co)->data = NULL;
        coro_free(p->co);
        p = next;
    }
    struct mpsc_node *n;
    while (!mpsc_empty(&loop->submits)) {
        if ((n = mpsc_pop(&loop->submits))) free(n);
    }
    for (uint32_t i = 0; i < loop->heap_len; i++)
        loop->heap[i]->heap_index = UINT32_MAX;
    free(loop->heap);
    close(loop->epfd);
    close(loop->evfd);
    if (tls_loop == loop) tls_loop = NULL;
    free(loop);
}

/* ---- fd watchers ---- */

int loop_io_start(loop_t *loop, loop_io_t *io, int fd, uint32_t events, loop_io_fn cb)
{
    io->fd = fd;
    io->events = events;
    io->cb = cb;
    struct epoll_event ev = {.events = events, .data.ptr = io};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) return -errno;
    return 0;
}

int loop_io_modify(loop_t *loop, loop_io_t *io, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = io};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) != 0) return -errno;
    io->events = events;
    return 0;
}

int loop_io_stop(loop_t *loop, loop_io_t *io)
{
    /* Events for io later in the batch being dispatched are dropped here,
     * before the caller can free io. The scan is bounded by MAX_EVENTS and
     * happens only when stopping from inside a callback. */
    for (int i = loop->batch_pos; i < loop->batch_len; i++)
        if (loop->batch[i].data.ptr == io) loop->batch[i].data.ptr = NULL;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL) != 0) return -errno;
    return 0;
}

/* ---- prepare hooks ---- */

void loop_hook_add(loop_t *loop, loop_hook_t *h, loop_hook_fn cb)
{
    h->cb = cb;
    h->next = loop->hooks;
    loop->hooks = h;
}

void loop_hook_remove(loop_t *loop, loop_hook_t *h)
{
    if (loop->hook_next == h) loop->hook_next = h->next;
    for (loop_hook_t **pp = &loop->hooks; *pp; pp = &(*pp)->next) {
        if (*pp == h) {
            *pp = h->next;
            break;
        }
    }
    h->next = NULL;
}

static int run_hooks(loop_t *loop)
{
    int n = 0;
    for (loop_hook_t *h = loop->hooks; h; h = loop->hook_next) {
        loop->hook_next = h->next;
        h->cb(loop, h);
        n++;
    }
    loop->hook_next = NULL;
    return n;
}

/* ---- coroutines ---- */

coro_t *loop_spawn(loop_t *loop, coro_fn fn, void *arg)
{
    coro_t *co = coro_create(fn, arg);
    if (co) runq_push(&loop->ready, co);
    return co;
}

static void park_unlink(struct park *p)
{
    p->prev->next = p->next;
    p->next->prev = p->prev;
}

static void make_ready(loop_t *loop, struct park *p, int result)
{
    coro_sched(p->co)->data = NULL;
    park_unlink(p);
    p->result = result;
    runq_push(&loop->ready, p->co);
}

static void park_timeout(loop_t *loop, loop_timer_t *t)
{
    struct park *p = container_of(t, struct park, timer);
    make_ready(loop, p, -ETIMEDOUT);
}

int loop_park(uint64_t deadline_ns)
{
    loop_t *loop = tls_loop;
    coro_t *co = coro_self();
    if (!loop || !co) return -EPERM;
    struct park p = {.co = co, .result = 0};
    loop_timer_init(&p.timer, park_timeout);
    if (deadline_ns) loop_timer_start(loop, &p.timer, deadline_ns);
    p.next = &loop->parked;
    p.prev = loop->parked.prev;
    p.prev->next = &p;
    loop->parked.prev = &p;
    coro_sched(co)->data = &p;
    coro_yield();
    return p.result;
}

void loop_wake(coro_t *co)
{
    struct park *p = coro_sched(co)->data;
    if (!p) return; /* running or already ready */
    /* The deadline must not fire into a coroutine that moved on. */
    loop_timer_stop(tls_loop, &p->timer);
    make_ready(tls_loop, p, 0);
}

void loop_yield(void)
{
    runq_push(&tls_loop->yielded, coro_self());
    coro_yield();
}

int loop_sleep(uint64_t ns)
{
    /* A loop_wake ends the sleep early (that is how cancellation reaches a
     * sleeper); either way the result is 0. */
    loop_park(tls_loop->now + ns);
    return 0;
}

struct fd_wait {
    loop_io_t io;
    coro_t *co;
    uint32_t revents;
};

static void fd_ready(loop_t *loop, loop_io_t *io, uint32_t revents)
{
    (void)loop;
    struct fd_wait *w = (struct fd_wait *)io;
    w->revents |= revents;
    loop_wake(w->co);
}

int loop_wait_fd(int fd, uint32_t events, uint64_t deadline_ns)
{
    loop_t *loop = tls_loop;
    struct fd_wait w = {.co = coro_self()};
    int rc = loop_io_start(loop, &w.io, fd, events, fd_ready);
    if (rc) return rc;
    rc = loop_park(deadline_ns);
    loop_io_stop(loop, &w.io);
    if (w.revents) return (int)w.revents;
    return rc ? rc : -EINTR;
}

/* Step 1: every ready coroutine, including the ones they wake (so a chain
 * of hand-offs completes in one pass), up to RUN_BUDGET. */
static int run_ready(loop_t *loop)
{
    int n = 0;
    coro_t *co;
    while (n < RUN_BUDGET && (co = runq_pop(&loop->ready))) {
        coro_resume(co);
        if (coro_finished(co)) coro_free(co);
        n++;
    }
    if (loop->yielded.head) {
        /* Yielded coroutines go behind whatever is still ready. */
        if (loop->ready.tail)
            coro_sched(loop->ready.tail)->next = loop->yielded.head;
        else
            loop->ready.head = loop->yielded.head;
        loop->ready.tail = loop->yielded.tail;
        loop->yielded.head = loop->yielded.tail = NULL;
    }
    return n;
}

/* ---- other threads ---- */

/* Writes the eventfd if the loop sleeps (or is about to), once per sleep:
 * the exchange lets only the first of many submitters pay the write. */
static void wake_if_sleeping(loop_t *loop)
{
    if (atomic_load_explicit(&loop->sleeping, memory_order_seq_cst) &&
        atomic_exchange_explicit(&loop->sleeping, 0, memory_order_seq_cst)) {
        uint64_t one = 1;
        ssize_t r = write(loop->evfd, &one, sizeof one);
        (void)r; /* EAGAIN: the counter is already non-zero, so it wakes */
    }
}

int loop_submit(loop_t *loop, void (*fn)(void *arg), void *arg)
{
    struct submit_item *it = malloc(sizeof *it);
    if (!it) return -ENOMEM;
    it->fn = fn;
    it->arg = arg;
    mpsc_push(&loop->submits, &it->node);
    wake_if_sleeping(loop);
    return 0;
}

void loop_stop(loop_t *loop)
{
    atomic_store_explicit(&loop->stop, true, memory_order_seq_cst);
    if (tls_loop != loop) wake_if_sleeping(loop);
}

static int run_submits(loop_t *loop)
{
    int n = 0;
    struct mpsc_node *node;
    while (n < SUBMIT_BUDGET && (node = mpsc_pop(&loop->submits))) {
        struct submit_item *it = (struct submit_item *)node;
        void (*fn)(void *) = it->fn;
        void *arg = it->arg;
        free(it);
        fn(arg);
        n++;
    }
    return n;
}

/* ---- one iteration ---- */

static int ms_until(uint64_t now, uint64_t deadline)
{
    if (deadline <= now) return 0;
    uint64_t ms = (deadline - now + 999999) / 1000000; /* round up: never early */
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* The epoll timeout; when it is not 0, also raises `sleeping`, then checks
 * the submit queue once more. Pairs with wake_if_sleeping(): the submitter
 * pushes then reads the flag, we set the flag then read the queue, all
 * seq_cst, so at least one side sees the other. */
static int poll_timeout(loop_t *loop, int timeout_ms)
{
    if (loop->ready.head || atomic_load_explicit(&loop->stop, memory_order_relaxed)) return 0;
    int t = timeout_ms;
    if (loop->heap_len) {
        int tt = ms_until(mono_ns(), loop->heap[0]->deadline);
        if (t < 0 || tt < t) t = tt;
    }
    if (t == 0) return 0;
    atomic_store_explicit(&loop->sleeping, 1, memory_order_seq_cst);
    if (!mpsc_empty(&loop->submits) || atomic_load_explicit(&loop->stop, memory_order_seq_cst)) {
        atomic_store_explicit(&loop->sleeping, 0, memory_order_relaxed);
        return 0;
    }
    return t;
}

int loop_run_once(loop_t *loop, int timeout_ms)
{
    int n = run_ready(loop);
    n += run_hooks(loop);

    struct epoll_event events[MAX_EVENTS];
    int t = poll_timeout(loop, timeout_ms);
    int got = epoll_wait(loop->epfd, events, MAX_EVENTS, t);
    if (t) atomic_store_explicit(&loop->sleeping, 0, memory_order_relaxed);
    loop->now = mono_ns();

    /* The batch is published before the timers run: a timer callback may
     * stop (and free) a watcher whose event is already in it. */
    loop->batch = events;
    loop->batch_len = got > 0 ? got : 0;
    loop->batch_pos = 0;
    n += run_timers(loop);

    while (loop->batch_pos < loop->batch_len) {
        struct epoll_event *ev = &events[loop->batch_pos++];
        void *ptr = ev->data.ptr;
        if (!ptr) continue; /* stopped earlier in this batch */
        if (ptr == EVFD_TAG) {
            uint64_t v;
            ssize_t r = read(loop->evfd, &v, sizeof v);
            (void)r;
            continue;
        }
        loop_io_t *io = ptr;
        io->cb(loop, io, ev->events);
        n++;
    }
    loop->batch = NULL;
    loop->batch_len = loop->batch_pos = 0;

    n += run_submits(loop);
    return n;
}

int loop_run(loop_t *loop)
{
    while (!atomic_exchange_explicit(&loop->stop, false, memory_order_seq_cst))
        loop_run_once(loop, -1);
    return 0;
}
