/*
 * config_load: the loader's machinery (config_load.h): the arena that owns a
 * whole config snapshot, the string sets for duplicate checks, the error
 * lines with their JSON paths and the typed getters, and the pass over the
 * raw text that finds strings cJSON would accept but the gateway refuses
 * (invalid UTF-8, \u0000). Everything it allocates lives in the arena.
 */
#include "gateway/config_load.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/json.h"

/* ---- arena ---- */

_Noreturn void cfg_oom(struct loader *L)
{
    longjmp(L->oom, 1);
}

static void *arena_alloc(struct loader *L, struct block **arena, size_t n)
{
    const size_t align = sizeof(max_align_t);
    n = (n + align - 1) / align * align;
    struct block *b = *arena;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 4096 ? n : 4096;
        b = calloc(1, sizeof(*b) + cap);
        if (!b) cfg_oom(L);
        b->cap = cap;
        b->next = *arena;
        *arena = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

/* Zeroed storage that lives as long as the snapshot. */
void *cfg_alloc(struct loader *L, size_t n)
{
    return arena_alloc(L, &L->arena, n);
}

void *cfg_temp_alloc(struct loader *L, size_t n)
{
    return arena_alloc(L, &L->scratch, n);
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

/* ---- string sets (open addressing, never more than half full) ---- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

void cfg_seen_init(struct loader *L, struct cfg_seen *s, size_t n)
{
    size_t cap = 8;
    while (cap < 2 * n)
        cap *= 2;
    s->slots = cfg_temp_alloc(L, cap * sizeof(*s->slots));
    s->mask = cap - 1;
}

size_t cfg_seen_add(struct cfg_seen *s, const char *key, size_t idx)
{
    for (size_t i = hash_str(key) & s->mask;; i = (i + 1) & s->mask) {
        struct cfg_seen_slot *slot = &s->slots[i];
        if (!slot->key) {
            slot->key = key;
            slot->idx = idx;
            return SIZE_MAX;
        }
        if (strcmp(slot->key, key) == 0) return slot->idx;
    }
}

/* ---- errors and JSON paths ---- */

/* Appends one line to L->errs (which must be set). */
static void add_line(struct loader *L, char *line)
{
    if (!line) cfg_oom(L);
    char **lines = realloc(L->errs->lines, (L->errs->n + 1) * sizeof(*lines));
    if (!lines) {
        free(line);
        cfg_oom(L);
    }
    lines[L->errs->n++] = line;
    L->errs->lines = lines;
}

__attribute__((format(printf, 3, 4))) void cfg_err(struct loader *L, const char *path,
                                                   const char *fmt, ...)
{
    L->n_errors++;
    if (!L->errs || L->errs->n >= CFG_MAX_ERROR_LINES) return;
    char *msg = NULL, *line = NULL;
    va_list ap;
    va_start(ap, fmt);
    int rc = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (rc < 0) cfg_oom(L);
    rc = asprintf(&line, "%s: %s", path, msg);
    free(msg);
    add_line(L, rc < 0 ? NULL : line);
}

/* 3998 -> "3,998" */
static void group_thousands(char *out, size_t n)
{
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%zu", n);
    for (int i = 0; i < len; i++) {
        *out++ = digits[i];
        if (i < len - 1 && (len - 1 - i) % 3 == 0) *out++ = ',';
    }
    *out = '\0';
}

void cfg_err_summary(struct loader *L, const char *source)
{
    if (!L->errs || L->n_errors <= L->errs->n) return;
    size_t more = L->n_errors - L->errs->n;
    char num[48];
    group_thousands(num, more);
    char *line = NULL;
    if (asprintf(&line, "%s: and %s more problem%s (only the first %zu are listed)", source, num,
                 more == 1 ? "" : "s", L->errs->n) < 0)
        line = NULL;
    add_line(L, line);
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

/* ---- strings in the raw text: UTF-8 and \u0000 ---- */

enum { STR_BAD_UTF8 = 1, STR_NUL = 2 };

/* The JSON string whose opening quote is at p: sets *flags (STR_*), writes
 * a printable form of it to name when not NULL (for the path of a key: '?'
 * for escapes, control characters and bad bytes) and returns the position
 * after the closing quote. */
static const char *scan_string(const char *p, const char *end, int *flags, char *name,
                               size_t name_cap)
{
    const unsigned char *s = (const unsigned char *)p + 1, *e = (const unsigned char *)end;
    size_t nlen = 0;
    *flags = 0;
    while (s < e && *s != '"') {
        size_t n = 1;
        bool plain = *s >= 0x20 && *s < 0x80;
        if (*s == '\\') {
            n = s + 1 < e && s[1] == 'u' ? 6 : 2;
            if (n == 6 && e - s >= 6 && memcmp(s + 2, "0000", 4) == 0) *flags |= STR_NUL;
            plain = false;
        } else if (*s >= 0x80) {
            plain = (n = json_utf8_len((const char *)s, (size_t)(e - s))) != 0;
            if (!plain) {
                *flags |= STR_BAD_UTF8;
                n = 1;
            }
        }
        if (name && plain && nlen + n < name_cap) {
            memcpy(name + nlen, s, n);
            nlen += n;
        } else if (name && nlen + 1 < name_cap) {
            name[nlen++] = '?';
        }
        s += n < (size_t)(e - s) ? n : (size_t)(e - s);
    }
    if (name) name[nlen] = '\0';
    return s < e ? (const char *)s + 1 : end;
}

static void report_string(struct loader *L, const char *path, int flags, const char *what)
{
    if (!path[0]) return; /* a top level that is not an object: reported elsewhere */
    if (flags & STR_BAD_UTF8) cfg_err(L, path, "%s is not valid UTF-8", what);
    if (flags & STR_NUL)
        cfg_err(L, path, "%s contains \\u0000 (a NUL character), which is not allowed", what);
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* path[0..plen) + ".key" or "[i]", cut like cfg_key_path; returns the new
 * length. */
static size_t path_push(char *path, size_t plen, const char *key, size_t i)
{
    int n = key ? snprintf(path + plen, PATH_MAX_LEN - plen, "%s%s", plen ? "." : "", key)
                : snprintf(path + plen, PATH_MAX_LEN - plen, "[%zu]", i);
    if (n < 0) n = 0;
    if (plen + (size_t)n < PATH_MAX_LEN) return plen + (size_t)n;
    memcpy(path + PATH_MAX_LEN - 4, "...", 4);
    return PATH_MAX_LEN - 1;
}

/* Scans the value at p (valid JSON: cJSON accepted the text) whose path is
 * path[0..plen); returns the position after it. path is one buffer shared
 * by every level, restored before returning. Nesting is bounded by cJSON's
 * limit (1000 levels). */
static const char *scan_value(struct loader *L, const char *p, const char *end, char *path,
                              size_t plen)
{
    int flags;
    p = skip_ws(p, end);
    if (p >= end) return end;
    if (*p == '"') {
        p = scan_string(p, end, &flags, NULL, 0);
        report_string(L, path, flags, "the value");
        return p;
    }
    if (*p != '{' && *p != '[') { /* number, true, false, null */
        while (p < end && *p != ',' && *p != ']' && *p != '}' && *p != ' ' && *p != '\t' &&
               *p != '\n' && *p != '\r')
            p++;
        return p;
    }
    const char close = *p == '{' ? '}' : ']';
    size_t i = 0;
    p = skip_ws(p + 1, end);
    while (p < end && *p != close) {
        const char *start = p;
        size_t n;
        if (close == '}') {
            char key[PATH_MAX_LEN];
            p = scan_string(p, end, &flags, key, sizeof key);
            n = path_push(path, plen, key, 0);
            report_string(L, path, flags, "the key");
            p = skip_ws(p, end);
            if (p < end) p++; /* ':' */
        } else {
            n = path_push(path, plen, NULL, i++);
        }
        p = scan_value(L, p, end, path, n);
        path[plen] = '\0';
        p = skip_ws(p, end);
        if (p < end && *p == ',') p = skip_ws(p + 1, end);
        if (p == start) return end; /* not JSON after all: stop */
    }
    return p < end ? p + 1 : end;
}

void cfg_check_strings(struct loader *L, const char *json, size_t len)
{
    char path[PATH_MAX_LEN] = "";
    scan_value(L, json, json + len, path, 0);
}
