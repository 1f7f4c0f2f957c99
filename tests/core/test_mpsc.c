/* Tests for core/mpsc.c. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "core/container_of.h"
#include "core/mpsc.h"

struct item {
    struct mpsc_node node;
    int producer;
    int seq;
};

static struct item *item_of(struct mpsc_node *n)
{
    return container_of(n, struct item, node);
}

static void test_fifo_single_thread(void **state)
{
    (void)state;
    struct mpsc_queue q;
    mpsc_init(&q);
    assert_true(mpsc_empty(&q));
    assert_null(mpsc_pop(&q));
    struct item it[5];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 5; i++) {
            it[i].seq = i;
            mpsc_push(&q, &it[i].node);
            assert_false(mpsc_empty(&q));
        }
        for (int i = 0; i < 5; i++) {
            struct mpsc_node *n = mpsc_pop(&q);
            assert_non_null(n);
            assert_int_equal(item_of(n)->seq, i);
        }
        assert_null(mpsc_pop(&q));
        assert_true(mpsc_empty(&q));
    }
    /* interleaved push/pop, one item at a time (the stub re-insert path) */
    for (int i = 0; i < 5; i++) {
        mpsc_push(&q, &it[i].node);
        assert_ptr_equal(mpsc_pop(&q), &it[i].node);
        assert_true(mpsc_empty(&q));
    }
}

enum { PRODUCERS = 4, PER_PRODUCER = 100000 };

struct stress {
    struct mpsc_queue q;
    struct item *items; /* PRODUCERS * PER_PRODUCER */
    pthread_barrier_t start;
};

struct producer_arg {
    struct stress *s;
    int id;
};

static void *producer(void *p)
{
    struct producer_arg *a = p;
    pthread_barrier_wait(&a->s->start);
    for (int i = 0; i < PER_PRODUCER; i++) {
        struct item *it = &a->s->items[a->id * PER_PRODUCER + i];
        it->producer = a->id;
        it->seq = i;
        mpsc_push(&a->s->q, &it->node);
    }
    return NULL;
}

static void test_multi_producer_stress(void **state)
{
    (void)state;
    struct stress s;
    mpsc_init(&s.q);
    s.items = calloc(PRODUCERS * PER_PRODUCER, sizeof *s.items);
    assert_non_null(s.items);
    pthread_barrier_init(&s.start, NULL, PRODUCERS + 1);
    pthread_t th[PRODUCERS];
    struct producer_arg args[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        args[i] = (struct producer_arg){&s, i};
        assert_int_equal(pthread_create(&th[i], NULL, producer, &args[i]), 0);
    }
    pthread_barrier_wait(&s.start);

    int next[PRODUCERS] = {0};
    long total = 0;
    while (total < (long)PRODUCERS * PER_PRODUCER) {
        struct mpsc_node *n = mpsc_pop(&s.q);
        if (!n) continue; /* empty, or a producer between exchange and link */
        struct item *it = item_of(n);
        assert_true(it->producer >= 0 && it->producer < PRODUCERS);
        /* per-producer order, and with the count: each item exactly once */
        assert_int_equal(it->seq, next[it->producer]);
        next[it->producer]++;
        total++;
    }
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(next[i], PER_PRODUCER);
    }
    assert_null(mpsc_pop(&s.q));
    assert_true(mpsc_empty(&s.q));
    pthread_barrier_destroy(&s.start);
    free(s.items);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_single_thread),
        cmocka_unit_test(test_multi_producer_stress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
