/*
 * json: a strict, non-allocating JSON validator and a member iterator for
 * the response path, and the gateway's one JSON string writer and UTF-8
 * check (below).
 *
 * Backend bodies are validated here and then spliced into the response as raw
 * bytes (docs/perf.md K8: cJSON validation costs ~4 ns per byte plus a
 * malloc per node; this costs no allocation and touches each byte once).
 *
 * Strict RFC 8259: one value with optional surrounding whitespace; numbers per
 * the grammar (no leading zeros, no '+', no bare '.'); strings with valid
 * escapes, \uXXXX surrogates paired, no raw control characters, and valid
 * UTF-8 (no overlongs, no encoded surrogates, nothing above U+10FFFF).
 * Nesting deeper than JSON_MAX_DEPTH is invalid. Every function is safe on
 * any bytes (no NUL termination needed; fuzzed); the stack use is bounded
 * (no recursion).
 */
#ifndef GATEWAY_JSON_H
#define GATEWAY_JSON_H

#include <stdbool.h>
#include <stddef.h>

/* Arrays and objects nested deeper than this make a document invalid. */
#define JSON_MAX_DEPTH 128

enum json_type {
    JSON_INVALID = 0,
    JSON_NULL,
    JSON_FALSE,
    JSON_TRUE,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
};

/* The type of the document's top-level value, or JSON_INVALID when p[0..n)
 * is not exactly one valid JSON text. */
enum json_type json_check(const char *p, size_t n);

/* True when p[0..n) is one valid JSON text. */
static inline bool json_valid(const char *p, size_t n)
{
    return json_check(p, n) != JSON_INVALID;
}

/* For a valid document whose top-level value is an object: sets *members /
 * *len to the bytes between its braces with surrounding whitespace trimmed
 * (len 0 for {}), ready to splice into another object. Returns false (and
 * leaves the outputs alone) when the document is not an object. Cost: only
 * the leading and trailing whitespace is read; it does not re-validate, so
 * call it on a document json_check accepted. */
bool json_object_members(const char *p, size_t n, const char **members, size_t *len);

/* One member of an object, as slices of the document. */
struct json_member {
    const char *name; /* the name's raw bytes between the quotes (escapes kept) */
    size_t name_len;
    const char *value; /* the value's raw bytes */
    size_t value_len;
};

/* Iterator over the members of a top-level object. */
struct json_iter {
    const char *p, *end; /* private */
    bool started;        /* private: a member was read, so a ',' comes next */
};

/* Starts iterating the top-level object of p[0..n). Returns false when the
 * document does not start with an object. */
bool json_iter_object(struct json_iter *it, const char *p, size_t n);
/* Stores the next member in *m. Returns false at the end of the object or on
 * any syntax error (each member is validated as it is read, so this is safe
 * on untrusted input; validate the whole document first to tell the two
 * apart). */
bool json_iter_next(struct json_iter *it, struct json_member *m);

/* True when the raw JSON string contents raw[0..raw_len) (as between the
 * quotes, escapes included) decode to exactly s[0..n). False on a malformed
 * escape. */
bool json_string_equals(const char *raw, size_t raw_len, const char *s, size_t n);

/* Decodes the raw JSON string contents raw[0..raw_len) (as between the
 * quotes) into out, which needs room for raw_len bytes (no escape decodes to
 * more bytes than it takes). Returns the decoded length, or (size_t)-1 on a
 * malformed escape. Not NUL-terminated. */
size_t json_string_decode(const char *raw, size_t raw_len, char *out);

/* ---- the one JSON string writer and the one UTF-8 check ----
 *
 * Every JSON string the gateway writes (error bodies, access-log lines,
 * renamed or merged keys, trace exports) goes through these, with one set of
 * rules:
 *   - '"' and '\\' are escaped with a backslash; \b \f \n \r \t use their
 *     short escapes; every other byte below 0x20, and 0x7f, becomes \u00XX
 *     (lowercase hex);
 *   - well-formed UTF-8 (json_utf8_len) is copied as it is;
 *   - every byte that does not start a well-formed sequence becomes \ufffd
 *     (U+FFFD REPLACEMENT CHARACTER), one per byte, so the output is always
 *     valid JSON whatever the input.
 * The output is at most JSON_STRING_MAX(n) bytes, quotes included.
 */

/* Bytes json_put_string may write for n input bytes: 6 per byte plus the
 * quotes. */
#define JSON_STRING_MAX(n) (6 * (n) + 2)

/* Length of the well-formed UTF-8 sequence at s[0..n): 1 for any byte below
 * 0x80, 2..4 for a multi-byte sequence, 0 when s does not start one (Unicode
 * Table 3-7: no overlong forms, no encoded surrogates, nothing above
 * U+10FFFF, not cut short by n) or n is 0. */
size_t json_utf8_len(const char *s, size_t n);

/* The exact number of bytes json_put_string writes for s[0..n). */
size_t json_escape_len(const char *s, size_t n);

/* Writes s[0..n) to out as a JSON string, quotes included, by the rules
 * above. out needs json_escape_len(s, n) bytes (JSON_STRING_MAX(n) is always
 * enough). Returns the number of bytes written. Not NUL-terminated. */
size_t json_put_string(char *out, const char *s, size_t n);

struct buf;
/* Appends s[0..n) to b as a JSON string (json_put_string). Returns 0 or
 * -ENOMEM (b unchanged). */
int json_buf_string(struct buf *b, const char *s, size_t n);

#endif
