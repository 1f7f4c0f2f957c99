/*
 * Fuzz target: the strict JSON validator and iterator (gateway/json.h),
 * against cJSON as a reference.
 *
 * Input: arbitrary bytes as a document, copied into a buffer of its exact
 * size. cJSON is more lenient (it accepts invalid UTF-8, any byte <= 0x20 as
 * whitespace, trailing bytes), so the agreement checked is one-way: whatever
 * json_check accepts, cJSON_ParseWithLength accepts too, with the same
 * top-level type and nothing left over. For an accepted object, the member
 * iterator yields exactly cJSON's members, in order, with names that decode
 * to cJSON's and values that are themselves valid JSON of cJSON's type. The
 * input is also written as a string with json_put_string, which must stay
 * within its documented bound, agree with json_escape_len, be one valid JSON
 * string, and decode back to the input when the input is valid UTF-8.
 */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/json.h"

static enum json_type type_of(const cJSON *j)
{
    if (cJSON_IsNull(j)) return JSON_NULL;
    if (cJSON_IsFalse(j)) return JSON_FALSE;
    if (cJSON_IsTrue(j)) return JSON_TRUE;
    if (cJSON_IsNumber(j)) return JSON_NUMBER;
    if (cJSON_IsString(j)) return JSON_STRING;
    if (cJSON_IsArray(j)) return JSON_ARRAY;
    if (cJSON_IsObject(j)) return JSON_OBJECT;
    return JSON_INVALID;
}

static void check_members(const char *p, size_t n, const cJSON *root)
{
    const char *members;
    size_t mlen;
    if (!json_object_members(p, n, &members, &mlen)) abort();
    if (members < p || members + mlen > p + n) abort();

    struct json_iter it;
    struct json_member m;
    if (!json_iter_object(&it, p, n)) abort();
    const cJSON *c = root->child;
    while (json_iter_next(&it, &m)) {
        if (!c) abort(); /* more members than cJSON saw */
        if (m.name < p || m.name + m.name_len > p + n) abort();
        if (m.value < p || m.value + m.value_len > p + n) abort();
        /* cJSON's name is a C string: a "\u0000" in it cuts it short */
        if (!json_string_equals(m.name, m.name_len, c->string, strlen(c->string)) &&
            !memmem(m.name, m.name_len, "\\u0000", 6))
            abort();
        if (json_check(m.value, m.value_len) != type_of(c)) abort();
        c = c->next;
    }
    if (c) abort(); /* fewer */
}

static void check_escape(const char *s, size_t n)
{
    char *out = malloc(JSON_STRING_MAX(n));
    if (!out) abort();
    size_t k = json_put_string(out, s, n);
    if (k > JSON_STRING_MAX(n) || k != json_escape_len(s, n)) abort();
    if (json_check(out, k) != JSON_STRING) abort();
    bool utf8 = true;
    for (size_t i = 0, u; i < n && utf8; i += u)
        utf8 = (u = json_utf8_len(s + i, n - i)) != 0;
    if (utf8 && !json_string_equals(out + 1, k - 2, s, n)) abort();
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* exact size: a read past the document is an ASan report */
    char *p = malloc(size ? size : 1);
    if (!p) abort();
    memcpy(p, data, size);

    enum json_type t = json_check(p, size);
    if (json_valid(p, size) != (t != JSON_INVALID)) abort();
    if (t != JSON_INVALID) {
        const char *end = NULL;
        cJSON *j = cJSON_ParseWithLengthOpts(p, size, &end, false);
        if (!j) abort(); /* valid for us, refused by cJSON */
        if (type_of(j) != t) abort();
        /* only whitespace may follow the value */
        for (const char *q = end; q < p + size; q++)
            if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') abort();
        if (t == JSON_OBJECT) check_members(p, size, j);
        cJSON_Delete(j);
    }
    /* the iterator must be safe on anything, valid or not */
    struct json_iter it;
    struct json_member m;
    if (json_iter_object(&it, p, size))
        while (json_iter_next(&it, &m))
            if (m.value < p || m.value + m.value_len > p + size) abort();

    check_escape(p, size);
    free(p);
    return 0;
}
