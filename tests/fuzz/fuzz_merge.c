/*
 * Fuzz target: the merge of backend bodies (gateway/merge.h).
 *
 * Input: arbitrary bytes as one backend's body, copied into a buffer of its
 * exact size. For each of a set of backend shapes (with and without key,
 * with and without allow, an empty allow list), the body goes through
 * merge_check and, when accepted, through merge_build alone and between two
 * fixed siblings, and once more as a null and an omitted part.
 *
 * Oracles beyond the sanitizers: an accepted body always merges (rc 0); the
 * output is one valid JSON object (json_valid, and cJSON agrees); with allow,
 * every member kept is one of the allowed names; no two top-level members
 * of the output have the same name (decoded; issue 9 item 7); merge_check
 * accepts exactly the empty body and the json_check-valid ones of the right
 * shape.
 */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "gateway/json.h"
#include "gateway/merge.h"

/* Allowed names include ones that need escapes, so matching has to decode
 * the body's member names. */
static const char *ALLOW[] = {"id", "name", "a\"b", "\xc3\xa9t\xc3\xa9", "", "x/y", "\n"};
#define N_ALLOW (sizeof ALLOW / sizeof ALLOW[0])
static const char *NO_NAMES[1];

static const struct backend_conf SHAPES[] = {
    {.name = "keyed", .key = "data"},
    {.name = "top"},
    {.name = "keyed-allow", .key = "user", .allow = ALLOW, .n_allow = N_ALLOW},
    {.name = "top-allow", .allow = ALLOW, .n_allow = N_ALLOW},
    {.name = "keyed-none", .key = "k\"\\\x01\xc3\xa9", .allow = NO_NAMES, .n_allow = 0},
    {.name = "top-none", .allow = NO_NAMES, .n_allow = 0},
};
#define N_SHAPES (sizeof SHAPES / sizeof SHAPES[0])

static const struct backend_conf SIB_KEYED = {.name = "sib1", .key = "sib"};
static const struct backend_conf SIB_TOP = {.name = "sib2"};

static int cmp_names(const void *a, const void *b)
{
    const buf_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->data, y->data, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* No two top-level members of the object share a decoded name. */
static void check_unique(const buf_t *out)
{
    struct json_iter it;
    struct json_member m;
    size_t n = 0, cap = 64;
    buf_t *names = malloc(cap * sizeof *names);
    if (!names || !json_iter_object(&it, out->data, out->len)) abort();
    while (json_iter_next(&it, &m)) {
        if (n == cap && !(names = realloc(names, (cap *= 2) * sizeof *names))) abort();
        buf_init(&names[n], NULL);
        if (buf_reserve(&names[n], m.name_len + 1)) abort();
        names[n].len = json_string_decode(m.name, m.name_len, names[n].data);
        if (names[n].len == (size_t)-1) abort();
        n++;
    }
    qsort(names, n, sizeof *names, cmp_names);
    for (size_t i = 1; i < n; i++)
        if (cmp_names(&names[i - 1], &names[i]) == 0) abort();
    for (size_t i = 0; i < n; i++)
        buf_free(&names[i]);
    free(names);
}

static void check_output(const buf_t *out)
{
    if (out->data[out->len] != '\0') abort();
    if (json_check(out->data, out->len) != JSON_OBJECT) abort();
    check_unique(out);
    cJSON *j = cJSON_ParseWithLength(out->data, out->len);
    if (!j || !cJSON_IsObject(j)) abort();
    cJSON_Delete(j);
}

static bool is_allowed(const struct backend_conf *b, const struct json_member *m)
{
    for (size_t i = 0; i < b->n_allow; i++)
        if (json_string_equals(m->name, m->name_len, b->allow[i], strlen(b->allow[i]))) return true;
    return false;
}

/* Every member of the object p[0..n) is allowed by b. */
static void check_filtered(const struct backend_conf *b, const char *p, size_t n)
{
    struct json_iter it;
    struct json_member m;
    if (!json_iter_object(&it, p, n)) abort();
    while (json_iter_next(&it, &m))
        if (!is_allowed(b, &m)) abort();
}

static void build(const struct merge_part *parts, size_t n, buf_t *out)
{
    buf_clear(out);
    if (merge_build(out, parts, n) != 0) abort();
    check_output(out);
}

static void one_shape(const struct backend_conf *b, const char *body, size_t len)
{
    const char *why = NULL;
    int rc = merge_check(b, body, len, &why);
    enum json_type t = len ? json_check(body, len) : JSON_NULL;
    bool want = len == 0 || (t != JSON_INVALID && ((b->key && !b->allow) || t == JSON_OBJECT));
    if ((rc == 0) != want || (rc != 0 && rc != -1) || (rc != 0 && !why)) abort();
    if (rc != 0) return;

    buf_t out;
    buf_init(&out, NULL);
    struct merge_part alone = {.b = b, .body = body, .len = len, .kind = MERGE_PART_BODY};
    build(&alone, 1, &out);
    if (b->allow && len) {
        if (b->key) {
            cJSON *j = cJSON_ParseWithLength(out.data, out.len);
            const cJSON *v = j ? cJSON_GetObjectItemCaseSensitive(j, b->key) : NULL;
            if (!v || !cJSON_IsObject(v)) abort();
            cJSON_Delete(j);
            /* {"<key>":{...}}: the inner object starts after the first ':' */
            const char *colon = memchr(out.data, ':', out.len);
            const char *inner = colon + 1;
            check_filtered(b, inner, (size_t)(out.data + out.len - 1 - inner));
        } else {
            check_filtered(b, out.data, out.len);
        }
    }

    static const char sib_body[] = " {\"z\": [1, 2.50, \"s\"], \"id\": 1, \"sib\": 0} ";
    struct merge_part parts[3] = {
        {.b = &SIB_KEYED, .body = "\t[]\n", .len = 4, .kind = MERGE_PART_BODY},
        alone,
        {.b = &SIB_TOP, .body = sib_body, .len = sizeof sib_body - 1, .kind = MERGE_PART_BODY},
    };
    build(parts, 3, &out);
    parts[1].kind = MERGE_PART_NULL;
    build(parts, 3, &out);
    parts[1].kind = MERGE_PART_OMIT;
    build(parts, 3, &out);
    /* the fuzzed body first, so a separator follows it */
    struct merge_part rev[2] = {alone, parts[2]};
    build(rev, 2, &out);
    buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* exact size: a read past the body is an ASan report */
    char *body = malloc(size ? size : 1);
    if (!body) abort();
    memcpy(body, data, size);
    for (size_t i = 0; i < N_SHAPES; i++)
        one_shape(&SHAPES[i], body, size);
    free(body);
    return 0;
}
