#include "gateway/config_load.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---- */

_Noreturn void cfg_oom(struct loader *L)
{
    longjmp(L->oom, 1);
}

/* Zeroed storage that lives as long as the snapshot. */
void *cfg_alloc(struct loader *L, size_t n)
{
    const size_t align = sizeof(max_align_t);
    n = (n + align - 1) / align * align;
    struct block *b = L->arena;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 4096 ? n : 4096;
        b = calloc(1, sizeof(*b) + cap);
        if (!b) cfg_oom(L);
        b->cap = cap;
        b->next = L->arena;
        L->arena = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

char *cfg_strndup(struct loader *L, const char *s, size_t n)
{
    char *p = cfg_alloc(L, n + 1);
    memcpy(p, s, n);
    return p;
}

void cfg_arena_free(struct block *b)
{
    while (b) {
        struct block *next = b->next;
        free(b);
        b = next;
    }
}

/* ---- errors and JSON paths ---- */

__attribute__((format(printf, 3, 4))) void cfg_err(struct loader *L, const char *path,
                                                   const char *fmt, ...)
{
    L->n_errors++;
    if (!L->errs) return;
    char *msg = NULL, *line = NULL;
    va_list ap;
    va_start(ap, fmt);
    int rc = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (rc < 0) cfg_oom(L);
    rc = asprintf(&line, "%s: %s", path, msg);
    free(msg);
    if (rc < 0) cfg_oom(L);
    char **lines = realloc(L->errs->lines, (L->errs->n + 1) * sizeof(*lines));
    if (!lines) {
        free(line);
        cfg_oom(L);
    }
    lines[L->errs->n++] = line;
    L->errs->lines = lines;
}

/* A path too long for the buffer (only a huge unknown key can make one) is
 * cut and ends in "...". */
static const char *mark_cut(char *out, int n)
{
    if (n >= PATH_MAX_LEN) memcpy(out + PATH_MAX_LEN - 4, "...", 4);
    return out;
}

const char *cfg_key_path(char *out, const char *path, const char *key)
{
    return mark_cut(out, snprintf(out, PATH_MAX_LEN, "%s%s%s", path, path[0] ? "." : "", key));
}

const char *cfg_index_path(char *out, const char *path, size_t i)
{
    return mark_cut(out, snprintf(out, PATH_MAX_LEN, "%s[%zu]", path, i));
}

const char *cfg_type_name(const cJSON *v)
{
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an invalid value";
}

/* Reports unknown and repeated keys of obj. cJSON keeps both copies of a
 * repeated key and lookups see only the first, so a repeat is an error
 * rather than a silent override. */
void cfg_check_keys(struct loader *L, const cJSON *obj, const char *path,
                    const char *const *allowed)
{
    char p[PATH_MAX_LEN];
    for (const cJSON *c = obj->child; c; c = c->next) {
        bool known = false;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(c->string, *a) == 0) known = true;
        if (!known) {
            char list[PATH_MAX_LEN] = "";
            for (const char *const *a = allowed; *a; a++)
                snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
                         a == allowed ? "" : ", ", *a);
            cfg_err(L, cfg_key_path(p, path, c->string), "unknown key (expected one of: %s)", list);
            continue;
        }
        for (const cJSON *d = obj->child; d != c; d = d->next)
            if (strcmp(c->string, d->string) == 0) {
                cfg_err(L, cfg_key_path(p, path, c->string), "duplicate key");
                break;
            }
    }
}

/* An optional object member: NULL when absent, else checked to be an object. */
const cJSON *cfg_section(struct loader *L, const cJSON *obj, const char *path, const char *key,
                         const char *const *allowed)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return NULL;
    char p[PATH_MAX_LEN];
    cfg_key_path(p, path, key);
    if (!cJSON_IsObject(v)) {
        cfg_err(L, p, "expected an object, got %s", cfg_type_name(v));
        return NULL;
    }
    cfg_check_keys(L, v, p, allowed);
    return v;
}

/* Optional integer member in [min, max]. Returns true and sets *out only
 * when present and valid; absent leaves *out (the default) alone. */
bool cfg_get_int(struct loader *L, const cJSON *obj, const char *path, const char *key,
                 long long min, long long max, long long *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return false;
    char p[PATH_MAX_LEN];
    cfg_key_path(p, path, key);
    if (!cJSON_IsNumber(v)) {
        cfg_err(L, p, "expected an integer, got %s", cfg_type_name(v));
        return false;
    }
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d)) {
        cfg_err(L, p, "must be an integer, got %g", d);
        return false;
    }
    if (d < (double)min || d > (double)max) {
        if (max == INT_LIMIT)
            cfg_err(L, p, "must be >= %lld, got %.0f", min, d);
        else
            cfg_err(L, p, "must be between %lld and %lld, got %.0f", min, max, d);
        return false;
    }
    *out = (long long)d;
    return true;
}

/* Optional string member, copied into the arena. A JSON null counts as
 * absent when null_ok. Returns the copy, or NULL when absent or invalid. */
const char *cfg_get_str(struct loader *L, const cJSON *obj, const char *path, const char *key,
                        bool null_ok)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || (null_ok && cJSON_IsNull(v))) return NULL;
    char p[PATH_MAX_LEN];
    cfg_key_path(p, path, key);
    if (!cJSON_IsString(v)) {
        cfg_err(L, p, "expected a string, got %s", cfg_type_name(v));
        return NULL;
    }
    if (!v->valuestring[0]) {
        cfg_err(L, p, "must not be empty");
        return NULL;
    }
    return cfg_strndup(L, v->valuestring, strlen(v->valuestring));
}

void cfg_get_bool(struct loader *L, const cJSON *obj, const char *path, const char *key, bool *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return;
    char p[PATH_MAX_LEN];
    if (!cJSON_IsBool(v))
        cfg_err(L, cfg_key_path(p, path, key), "expected a boolean, got %s", cfg_type_name(v));
    else
        *out = cJSON_IsTrue(v);
}

/* Optional array of non-empty strings; valid_char (may be NULL) vets every
 * character. Duplicates (case-insensitive when fold) are errors. */
const char **cfg_get_str_array(struct loader *L, const cJSON *obj, const char *path,
                               const char *key, bool null_ok, bool fold, bool (*valid_char)(int),
                               const char *what, size_t *n_out)
{
    *n_out = 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || (null_ok && cJSON_IsNull(v))) return NULL;
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
    cfg_key_path(p, path, key);
    if (!cJSON_IsArray(v)) {
        cfg_err(L, p, "expected an array of strings, got %s", cfg_type_name(v));
        return NULL;
    }
    size_t n = (size_t)cJSON_GetArraySize(v), i = 0, k = 0;
    const char **out = cfg_alloc(L, (n ? n : 1) * sizeof(*out));
    for (const cJSON *c = v->child; c; c = c->next, i++) {
        cfg_index_path(q, p, i);
        if (!cJSON_IsString(c)) {
            cfg_err(L, q, "expected a string, got %s", cfg_type_name(c));
            continue;
        }
        const char *s = c->valuestring;
        if (!s[0]) {
            cfg_err(L, q, "must not be empty");
            continue;
        }
        const char *bad = s;
        while (*bad && (!valid_char || valid_char((unsigned char)*bad)))
            bad++;
        if (*bad) {
            cfg_err(L, q, "\"%s\" is not a valid %s", s, what);
            continue;
        }
        bool dup = false;
        for (size_t j = 0; j < k; j++)
            if (fold ? strcasecmp(out[j], s) == 0 : strcmp(out[j], s) == 0) dup = true;
        if (dup) {
            cfg_err(L, q, "duplicate %s \"%s\"", what, s);
            continue;
        }
        out[k++] = cfg_strndup(L, s, strlen(s));
    }
    *n_out = k;
    return out;
}
