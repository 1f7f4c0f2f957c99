/*
 * chan: bounded channels between the coroutines of one loop (chan.h): the
 * ring buffer and the FIFO queues of parked senders and receivers.
 */
#include "core/chan.h"

#include <errno.h>
#include <stdlib.h>

#include "core/loop.h"

/* A parked sender or receiver; lives on the parked coroutine's stack. */
struct waiter {
    coro_t *co;
    void *val; /* sender: the value to deliver; receiver: the value delivered */
    int state; /* PENDING until a peer or close completes it */
    struct waiter *prev, *next;
};

enum { PENDING = 1, DONE = 0, CLOSED = -EPIPE };

struct waitq {
    struct waiter *head, *tail;
};

struct chan {
    size_t cap, len, head; /* ring: len values from buf[head] on */
    bool closed;
    struct waitq senders, receivers;
    void *buf[];
};

static void q_push(struct waitq *q, struct waiter *w)
{
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
}

static void q_remove(struct waitq *q, struct waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->prev = w->next = NULL;
}

static struct waiter *q_pop(struct waitq *q)
{
    struct waiter *w = q->head;
    if (w) q_remove(q, w);
    return w;
}

/* Completes a popped waiter and makes its coroutine ready. */
static void complete(struct waiter *w, int state)
{
    w->state = state;
    loop_wake(w->co);
}

chan_t *chan_new(size_t cap)
{
    if (cap > (SIZE_MAX - sizeof(chan_t)) / sizeof(void *)) return NULL;
    chan_t *ch = calloc(1, sizeof *ch + cap * sizeof(void *));
    if (ch) ch->cap = cap;
    return ch;
}

void chan_free(chan_t *ch)
{
    free(ch);
}

int chan_try_send(chan_t *ch, void *v)
{
    if (ch->closed) return -EPIPE;
    /* receivers wait only while the buffer is empty: hand over directly */
    struct waiter *r = q_pop(&ch->receivers);
    if (r) {
        r->val = v;
        complete(r, DONE);
        return 0;
    }
    if (ch->len < ch->cap) {
        ch->buf[(ch->head + ch->len++) % ch->cap] = v;
        return 0;
    }
    return -EAGAIN;
}

int chan_try_recv(chan_t *ch, void **out)
{
    if (ch->len) {
        *out = ch->buf[ch->head];
        ch->head = (ch->head + 1) % ch->cap;
        ch->len--;
        /* senders wait only while the buffer is full: the first one's value
         * takes the freed slot, behind everything sent before it */
        struct waiter *s = q_pop(&ch->senders);
        if (s) {
            ch->buf[(ch->head + ch->len++) % ch->cap] = s->val;
            complete(s, DONE);
        }
        return 0;
    }
    struct waiter *s = q_pop(&ch->senders); /* unbuffered: straight from a sender */
    if (s) {
        *out = s->val;
        complete(s, DONE);
        return 0;
    }
    return ch->closed ? -EPIPE : -EAGAIN;
}

/* Parks on q until a peer or chan_close completes w, or the deadline. */
static int park(struct waitq *q, struct waiter *w, uint64_t deadline_ns)
{
    q_push(q, w);
    for (;;) {
        int rc = loop_park(deadline_ns);
        /* completion wins over a timeout that raced with it: the peer has
         * already counted on us */
        if (w->state != PENDING) return w->state;
        if (rc == -ETIMEDOUT) {
            q_remove(q, w);
            return -ETIMEDOUT;
        }
        /* woken by someone else: not for us, park again */
    }
}

int chan_send(chan_t *ch, void *v, uint64_t deadline_ns)
{
    int rc = chan_try_send(ch, v);
    if (rc != -EAGAIN) return rc;
    struct waiter w = {.co = coro_self(), .val = v, .state = PENDING};
    if (!w.co) return -EAGAIN;
    return park(&ch->senders, &w, deadline_ns);
}

int chan_recv(chan_t *ch, void **out, uint64_t deadline_ns)
{
    int rc = chan_try_recv(ch, out);
    if (rc != -EAGAIN) return rc;
    struct waiter w = {.co = coro_self(), .state = PENDING};
    if (!w.co) return -EAGAIN;
    rc = park(&ch->receivers, &w, deadline_ns);
    if (rc == 0) *out = w.val;
    return rc;
}

void chan_close(chan_t *ch)
{
    if (ch->closed) return;
    ch->closed = true;
    struct waiter *w;
    while ((w = q_pop(&ch->receivers)))
        complete(w, CLOSED);
    while ((w = q_pop(&ch->senders)))
        complete(w, CLOSED);
}

bool chan_closed(const chan_t *ch)
{
    return ch->closed;
}

size_t chan_len(const chan_t *ch)
{
    return ch->len;
}

size_t chan_cap(const chan_t *ch)
{
    return ch->cap;
}
