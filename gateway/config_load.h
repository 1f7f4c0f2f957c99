/*
 * config_load: the config loader's machinery, shared by the files of the
 * loader (config*.c): one arena that owns the whole snapshot, problems
 * collected as "<json path>: <message>" lines, and typed getters that report
 * a wrong type or a missing key with its path. Internal to the loader.
 *
 * Out of memory anywhere longjmps to the loader's entry point, which frees
 * the arena and the cJSON tree in one place.
 */
#ifndef GATEWAY_CONFIG_LOAD_H
#define GATEWAY_CONFIG_LOAD_H

#include <cJSON.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/config.h"

#define PATH_MAX_LEN 512
#define INT_LIMIT    INT32_MAX /* keeps every value exact in a double and in an int */
/* Problems kept as lines; beyond this many only a count is kept, reported
 * as one last line ("and 3,998 more problems"). A file with one mistake
 * repeated thousands of times still gives a readable report. */
#define CFG_MAX_ERROR_LINES 100

struct block {
    struct block *next;
    size_t used, cap;
    max_align_t data[];
};

struct loader {
    jmp_buf oom;
    struct block *arena;   /* owned by the snapshot */
    struct block *scratch; /* freed when the parse ends (hash tables, keys) */
    cJSON *root;
    struct config_errors *errs; /* NULL: only count */
    size_t n_errors;
};

/* Out of memory: unwinds to the loader's entry point (never returns). */
_Noreturn void cfg_oom(struct loader *L);
/* Zeroed storage that lives as long as the snapshot. */
void *cfg_alloc(struct loader *L, size_t n);
char *cfg_strndup(struct loader *L, const char *s, size_t n);
/* Zeroed storage that lives until the parse ends (L->scratch). */
void *cfg_temp_alloc(struct loader *L, size_t n);
void cfg_arena_free(struct block *b);

/* A set of strings, each with the index of the item that added it first:
 * the duplicate checks across endpoints stay linear. Lives in scratch; the
 * keys are not copied (they must outlive the set). */
struct cfg_seen_slot {
    const char *key; /* NULL: empty */
    size_t idx;
};
struct cfg_seen {
    size_t mask;
    struct cfg_seen_slot *slots;
};
/* A set for at most n keys. */
void cfg_seen_init(struct loader *L, struct cfg_seen *s, size_t n);
/* Adds key for item idx. Returns SIZE_MAX when it is new, else the idx of
 * the item that added it first (key is then not added again). */
size_t cfg_seen_add(struct cfg_seen *s, const char *key, size_t idx);

/* Records one problem as "path: message" (only the first
 * CFG_MAX_ERROR_LINES are kept as lines; all are counted in n_errors). */
__attribute__((format(printf, 3, 4))) void cfg_err(struct loader *L, const char *path,
                                                   const char *fmt, ...);
/* path + ".key" / path + "[i]" into out (PATH_MAX_LEN bytes; a path too
 * long is cut and ends in "..."). Returns out. */
const char *cfg_key_path(char *out, const char *path, const char *key);
const char *cfg_index_path(char *out, const char *path, size_t i);
/* Adds the "and N more problems" line when lines were left out. */
void cfg_err_summary(struct loader *L, const char *source);
/* "a string", "a number", ... for messages. */
const char *cfg_type_name(const cJSON *v);

/* One pass over the raw JSON text (already accepted by cJSON): every
 * string and key must be valid UTF-8 and must not contain \u0000, which
 * cJSON would silently cut the string at. Reported with the JSON path. */
void cfg_check_strings(struct loader *L, const char *json, size_t len);

/* Reports unknown and repeated keys of obj (a repeat would silently hide
 * all but the first copy). allowed ends with NULL. */
void cfg_check_keys(struct loader *L, const cJSON *obj, const char *path,
                    const char *const *allowed);
/* An optional object member: NULL when absent, else checked to be an
 * object with only the allowed keys. */
const cJSON *cfg_section(struct loader *L, const cJSON *obj, const char *path, const char *key,
                         const char *const *allowed);

/* Optional members, each problem reported with its path. cfg_get_int sets
 * *out only when present and in [min, max]; absent leaves the default. */
bool cfg_get_int(struct loader *L, const cJSON *obj, const char *path, const char *key,
                 long long min, long long max, long long *out);
/* A string copied into the arena; NULL when absent (or null with null_ok)
 * or invalid. */
const char *cfg_get_str(struct loader *L, const cJSON *obj, const char *path, const char *key,
                        bool null_ok);
void cfg_get_bool(struct loader *L, const cJSON *obj, const char *path, const char *key, bool *out);
/* An array of non-empty strings; valid_char (may be NULL) vets every
 * character; duplicates (case-insensitive when fold) are errors. */
const char **cfg_get_str_array(struct loader *L, const cJSON *obj, const char *path,
                               const char *key, bool null_ok, bool fold, bool (*valid_char)(int),
                               const char *what, size_t *n_out);

/* cfg_get_int into a field of any integer type. */
#define CFG_GET_INT(L, obj, path, key, min, max, field)                                            \
    do {                                                                                           \
        long long v_ = (long long)(field);                                                         \
        if (cfg_get_int(L, obj, path, key, min, max, &v_)) (field) = v_;                           \
    } while (0)

#endif
