/* Tests for gateway/graph.c: dependency resolution (longest backend name,
 * deps and children once each), placeholder rendering and encoding, and
 * the ready queue's order. Cycle and name errors are in test_config.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/loop.h"
#include "gateway/config.h"
#include "gateway/graph.h"

static char *q(const char *s)
{
    char *out = strdup(s);
    for (char *c = out; *c; c++)
        if (*c == '\'') *c = '"';
    return out;
}

static struct config *parse(const char *json)
{
    char *j = q(json);
    struct config_errors errs;
    struct config *cfg = config_parse(j, strlen(j), &errs);
    for (size_t i = 0; i < errs.n; i++)
        print_message("  | %s\n", errs.lines[i]);
    config_errors_free(&errs);
    free(j);
    assert_non_null(cfg);
    return cfg;
}

#define EP(backends) "{'endpoints':[{'name':'e','path':'/a/{id}','backends':[" backends "]}]}"

static void test_resolution(void **state)
{
    (void)state;
    struct config *cfg = parse(EP("{'name':'a','url':'http://h/a/{id}'},"
                                  "{'name':'a.b','url':'http://h/ab/{id}'},"
                                  "{'name':'c','url':'http://h/c/{a.b.x}/{a.y}?z={a.b.x}'},"
                                  "{'name':'d','url':'http://h/d/{item.k}','foreach':'c.list',"
                                  "'key':'d'},"
                                  "{'name':'e','url':'http://h/e/{id}'}"));
    const struct endpoint_conf *ep = &cfg->endpoints[0];
    const struct backend_conf *c = &ep->backends[2], *d = &ep->backends[3];
    assert_true(ep->graph);
    /* {a.b.x} reads backend "a.b" (the longest name), {a.y} backend "a" */
    assert_int_equal(c->n_deps, 2);
    assert_int_equal(c->deps[0], 1);
    assert_int_equal(c->deps[1], 0);
    int seen = 0;
    for (size_t k = 0; k < c->n_parts; k++) {
        const struct url_part *p = &c->parts[k];
        if (!p->field) continue;
        if (strcmp(p->field, "a.b.x") == 0) {
            assert_int_equal(p->backend, 1);
            assert_string_equal(p->field + p->field_off, "x");
        } else {
            assert_string_equal(p->field, "a.y");
            assert_int_equal(p->backend, 0);
            assert_string_equal(p->field + p->field_off, "y");
        }
        seen++;
    }
    assert_int_equal(seen, 3);
    assert_int_equal(d->foreach_backend, 2);
    assert_string_equal(d->foreach_path, "list");
    assert_int_equal(d->n_deps, 1);
    assert_int_equal(d->max_items, 100);
    assert_int_equal(d->item_failure, ITEM_FAIL);
    assert_true(graph_url_has_fields(d));
    assert_false(graph_url_has_fields(&ep->backends[4]));
    assert_int_equal(ep->backends[0].n_children, 1);
    assert_int_equal(ep->backends[1].n_children, 1);
    assert_int_equal(ep->backends[2].n_children, 1);
    assert_int_equal(ep->backends[2].children[0], 3);
    config_free(cfg);

    /* no dependency: no graph */
    cfg = parse(EP("{'name':'a','url':'http://h/a/{id}'}"));
    assert_false(cfg->endpoints[0].graph);
    config_free(cfg);
}

static struct url_part part_of(const char *field, size_t off, int backend)
{
    return (struct url_part){.param = -1, .backend = backend, .field = field, .field_off = off};
}

/* Renders {user.<path>} against body; returns the rc and the text in out. */
static int render(const char *path, const char *body, char *out, size_t cap)
{
    char field[128];
    snprintf(field, sizeof field, "user.%s", path);
    struct url_part p = part_of(field, 5, 0);
    buf_t b;
    buf_init(&b, NULL);
    int rc = buf_puts(&b, "/x/");
    assert_int_equal(rc, 0);
    rc = graph_render(&b, &p, body, body ? strlen(body) : 0);
    snprintf(out, cap, "%s", b.data);
    buf_free(&b);
    return rc;
}

static void test_render_values(void **state)
{
    (void)state;
    char out[256];
    const char *body = "{\"id\":\"u 1/2?#\\u00e9\",\"n\":-12.5e3,\"t\":true,\"f\":false,"
                       "\"z\":null,\"o\":{\"a\":[10,{\"b\":\"x\"}]},\"arr\":[1],\"dot\":\".\","
                       "\"dd\":\"..\",\"nul\":\"a\\u0000b\",\"esc\":\"q\\\"\\\\\"}";
    assert_int_equal(render("id", body, out, sizeof out), 0);
    assert_string_equal(out, "/x/u%201%2F2%3F%23%C3%A9"); /* one segment, UTF-8 encoded */
    assert_int_equal(render("n", body, out, sizeof out), 0);
    assert_string_equal(out, "/x/-12.5e3"); /* a number as written */
    assert_int_equal(render("t", body, out, sizeof out), 0);
    assert_string_equal(out, "/x/true");
    assert_int_equal(render("f", body, out, sizeof out), 0);
    assert_string_equal(out, "/x/false");
    assert_int_equal(render("o.a.0", body, out, sizeof out), 0); /* into an array */
    assert_string_equal(out, "/x/10");
    assert_int_equal(render("o.a.1.b", body, out, sizeof out), 0);
    assert_string_equal(out, "/x/x");
    assert_int_equal(render("dot", body, out, sizeof out), 0);
    assert_string_equal(out, "/x/%2E");
    assert_int_equal(render("dd", body, out, sizeof out), 0);
    assert_string_equal(out, "/x/%2E%2E");
    assert_int_equal(render("esc", body, out, sizeof out), 0);
    assert_string_equal(out, "/x/q%22%5C");
    /* what fails this backend: missing, null, object, array, NUL, no body */
    static const char *const bad[] = {"nope", "z", "o", "arr", "o.a.2", "o.a.01", "id.x", "nul"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(render(bad[i], body, out, sizeof out), -ENOENT);
        assert_string_equal(out, "/x/"); /* out unchanged */
    }
    assert_int_equal(render("id", NULL, out, sizeof out), -ENOENT);
    /* {item} is the element itself; {item.sku} a field of it */
    struct url_part whole = part_of("item", 4, URL_PART_ITEM);
    struct url_part sku = part_of("item.sku", 5, URL_PART_ITEM);
    buf_t b;
    buf_init(&b, NULL);
    assert_int_equal(graph_render(&b, &whole, "\"a b\"", 5), 0);
    assert_string_equal(b.data, "a%20b");
    buf_clear(&b);
    assert_int_equal(graph_render(&b, &whole, " 42 ", 4), 0);
    assert_string_equal(b.data, "42");
    buf_clear(&b);
    assert_int_equal(graph_render(&b, &sku, "{\"sku\":\"p-1\"}", 13), 0);
    assert_string_equal(b.data, "p-1");
    assert_int_equal(graph_render(&b, &sku, "{\"x\":1}", 7), -ENOENT);
    assert_int_equal(graph_render(&b, &whole, "{\"x\":1}", 7), -ENOENT);
    buf_free(&b);
    /* a long string value goes through the heap */
    char big[2000];
    memset(big, 'a', sizeof big);
    big[0] = '"';
    big[sizeof big - 1] = '"';
    buf_init(&b, NULL);
    assert_int_equal(graph_render(&b, &whole, big, sizeof big), 0);
    assert_int_equal(b.len, sizeof big - 2);
    buf_free(&b);
}

static void test_sched_order(void **state)
{
    (void)state;
    /* a, b roots; c reads a and b; d reads c; e root */
    struct config *cfg = parse(EP("{'name':'a','url':'http://h/a'},"
                                  "{'name':'b','url':'http://h/b'},"
                                  "{'name':'c','url':'http://h/c/{a.x}/{b.y}'},"
                                  "{'name':'d','url':'http://h/d/{c.z}'},"
                                  "{'name':'e','url':'http://h/e'}"));
    const struct endpoint_conf *ep = &cfg->endpoints[0];
    struct graph_sched s;
    assert_int_equal(graph_sched_init(&s, ep), 0);
    struct graph_task t;
    assert_int_equal(graph_sched_ready(&s), 3);
    assert_true(graph_sched_pop(&s, &t));
    assert_int_equal(t.call, 0);
    assert_int_equal(t.item, GRAPH_WHOLE);
    assert_true(graph_sched_pop(&s, &t));
    assert_int_equal(t.call, 1);
    assert_true(graph_sched_pop(&s, &t));
    assert_int_equal(t.call, 4);
    assert_false(graph_sched_pop(&s, &t));
    assert_int_equal(graph_sched_ended(&s, ep, 0), 0);
    assert_false(graph_sched_pop(&s, &t)); /* c still waits for b */
    assert_int_equal(graph_sched_ended(&s, ep, 1), 0);
    assert_true(graph_sched_pop(&s, &t));
    assert_int_equal(t.call, 2);
    /* many items: the queue grows and keeps FIFO order */
    for (uint32_t k = 0; k < 1000; k++)
        assert_int_equal(graph_sched_push(&s, (struct graph_task){3, k}), 0);
    for (uint32_t k = 0; k < 1000; k++) {
        assert_true(graph_sched_pop(&s, &t));
        assert_int_equal(t.item, k);
        if (k % 7 == 0) assert_int_equal(graph_sched_push(&s, (struct graph_task){9, k}), 0);
    }
    for (uint32_t k = 0; k < 1000; k += 7) {
        assert_true(graph_sched_pop(&s, &t));
        assert_int_equal(t.call, 9);
        assert_int_equal(t.item, k);
    }
    assert_false(graph_sched_pop(&s, &t));
    graph_sched_free(&s);
    config_free(cfg);
}

/* The scheduling cost: init, pop every backend, mark each ended (children
 * queued), for a chain of 8 backends with fan-in. Printed as ns per
 * backend; the bound is loose (sanitizers, a busy machine). */
static void test_sched_cost(void **state)
{
    (void)state;
    struct config *cfg = parse(EP("{'name':'a','url':'http://h/a'},"
                                  "{'name':'b','url':'http://h/b/{a.x}'},"
                                  "{'name':'c','url':'http://h/c/{a.x}'},"
                                  "{'name':'d','url':'http://h/d/{b.x}/{c.x}'},"
                                  "{'name':'e','url':'http://h/e/{d.x}'},"
                                  "{'name':'f','url':'http://h/f/{d.x}'},"
                                  "{'name':'g','url':'http://h/g'},"
                                  "{'name':'h','url':'http://h/h/{e.x}/{f.x}/{g.x}'}"));
    const struct endpoint_conf *ep = &cfg->endpoints[0];
    const int rounds = 200000;
    uint64_t t0 = mono_ns();
    for (int r = 0; r < rounds; r++) {
        struct graph_sched s;
        assert_int_equal(graph_sched_init(&s, ep), 0);
        struct graph_task t;
        size_t done = 0;
        while (graph_sched_pop(&s, &t)) {
            graph_sched_ended(&s, ep, t.call);
            done++;
        }
        if (done != 8) fail();
        graph_sched_free(&s);
    }
    double ns = (double)(mono_ns() - t0) / rounds / 8;
    print_message("graph scheduling: %.1f ns per backend\n", ns);
    assert_true(ns < 20000);
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolution),
        cmocka_unit_test(test_render_values),
        cmocka_unit_test(test_sched_order),
        cmocka_unit_test(test_sched_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
