/*
 * Fuzz target: shaping (gateway/shape.h), dot-path lookups
 * (gateway/jpath.h) and placeholder rendering (gateway/graph.h).
 *
 * Input: arbitrary bytes as a backend body, copied into a buffer of its
 * exact size. jpath_get runs on it whatever it is (it must stay inside the
 * bytes on invalid input too); when json_check accepts it, it goes through
 * a set of shapes (target, allow and deny with dot paths into objects and
 * arrays, rename) and every placeholder below is rendered from it.
 *
 * Oracles beyond the sanitizers: a shape either fails with -EINVAL only
 * when it has a target the body lacks, or writes one valid JSON text; an
 * allow result never holds a top-level member outside the allow list's
 * first segments; a deny of a top-level name removes it; a rendered value is
 * made only of unreserved bytes and %XX escapes (one segment: never '/',
 * '?', '#', '&'), and rendering fails exactly when the value is missing,
 * null, an object or an array.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "gateway/graph.h"
#include "gateway/jpath.h"
#include "gateway/json.h"
#include "gateway/shape.h"

static const char *ALLOW[] = {"id", "a.b", "list.0", "list.1.x", "\xc3\xa9"};
static const char *DENY[] = {"secret", "a.b.c", "list.2", "n"};
static const char *FROM[] = {"id", "a"};
static const char *TO[] = {"a", "id\"x"};

static const struct shape_conf SHAPES[] = {
    {.target = "data"},
    {.target = "data.0.user"},
    {.allow = ALLOW, .n_allow = 5},
    {.deny = DENY, .n_deny = 4},
    {.rename_from = FROM, .rename_to = TO, .n_rename = 2},
    {.target = "a",
     .allow = ALLOW,
     .n_allow = 5,
     .rename_from = FROM,
     .rename_to = TO,
     .n_rename = 2},
    {.allow = ALLOW, .n_allow = 0},
};
#define N_SHAPES (sizeof SHAPES / sizeof SHAPES[0])

static const char *PATHS[] = {"id", "a.b", "list.0", "list.1.x", "data.0.user.id", "0", "n"};
#define N_PATHS (sizeof PATHS / sizeof PATHS[0])

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static void check_segment(const buf_t *b)
{
    for (size_t i = 0; i < b->len; i++) {
        unsigned char c = (unsigned char)b->data[i];
        if (c == '%') {
            if (i + 2 >= b->len) abort();
            i += 2;
            continue;
        }
        if (!unreserved(c)) abort();
    }
}

static void check_allow(const buf_t *out)
{
    struct jpath_iter it;
    struct json_member m;
    if (!jpath_iter_start(&it, out->data, out->len) || it.array) return;
    while (jpath_iter_next(&it, &m) > 0) {
        bool ok = false;
        for (size_t k = 0; k < 5; k++) {
            size_t sn = strcspn(ALLOW[k], ".");
            ok |= json_string_equals(m.name, m.name_len, ALLOW[k], sn);
        }
        if (!ok) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = malloc(size ? size : 1);
    if (!body) return 0;
    memcpy(body, data, size);
    const char *v;
    size_t vn;
    for (size_t p = 0; p < N_PATHS; p++) /* safe on anything */
        (void)jpath_get(body, size, PATHS[p], strlen(PATHS[p]), &v, &vn);
    if (json_check(body, size) == JSON_INVALID) {
        free(body);
        return 0;
    }
    buf_t out;
    buf_init(&out, NULL);
    for (size_t s = 0; s < N_SHAPES; s++) {
        buf_clear(&out);
        const char *why = NULL;
        int rc = shape_apply(&out, &SHAPES[s], body, size, &why);
        if (rc == -ENOMEM) continue;
        if (rc != 0) {
            if (rc != -EINVAL || !SHAPES[s].target || strcmp(why, "missing target") != 0) abort();
            continue;
        }
        if (!json_valid(out.data, out.len)) abort();
        if (s == 2) check_allow(&out);
        if (s == 3 && jpath_get(out.data, out.len, "secret", 6, &v, &vn) != JSON_INVALID &&
            jpath_type(out.data, out.len) == JSON_OBJECT)
            abort();
    }
    for (size_t p = 0; p < N_PATHS; p++) {
        char field[64] = "x.";
        strcat(field, PATHS[p]);
        struct url_part part = {.param = -1, .backend = 0, .field = field, .field_off = 2};
        buf_clear(&out);
        int rc = graph_render(&out, &part, body, size);
        enum json_type t = jpath_get(body, size, PATHS[p], strlen(PATHS[p]), &v, &vn);
        bool scalar = t == JSON_STRING || t == JSON_NUMBER || t == JSON_TRUE || t == JSON_FALSE;
        if (rc == -ENOMEM) continue;
        if (rc == 0) {
            if (!scalar) abort();
            check_segment(&out);
        } else if (rc != -ENOENT || (scalar && t != JSON_STRING)) {
            abort();
        }
    }
    buf_free(&out);
    free(body);
    return 0;
}
