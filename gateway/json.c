/*
 * json: the strict validator, the member iterator, string decoding and the
 * one JSON string writer and UTF-8 check of the gateway (json.h). Reads only
 * the bytes it is given and allocates nothing (json_buf_string excepted).
 */
#include "gateway/json.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "core/buf.h"

typedef const unsigned char *ptr;

/* 1 for bytes a string may hold as they are and that need no further look:
 * printable ASCII except '"' and '\\'. Everything else takes the slow path
 * (escapes, control characters, UTF-8 sequences). */
static const uint8_t plain[256] = {
    ['\x20'] = 1,
    [0x21] = 1,
    [0x23 ... 0x5b] = 1,
    [0x5d ... 0x7f] = 1,
};

static inline ptr skip_ws(ptr s, ptr e)
{
    while (s < e && (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t'))
        s++;
    return s;
}

static inline int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Four hex digits at s (bounds checked by the caller), or -1. */
static int hex4(ptr s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(s[i]);
        if (h < 0) return -1;
        v = v << 4 | h;
    }
    return v;
}

/* Decodes one escape after the backslash at s[-1]. Returns the end of the
 * escape (a surrogate pair counts as one) and the code point in *cp, or NULL
 * when it is malformed. */
static ptr escape(ptr s, ptr e, uint32_t *cp)
{
    if (s >= e) return NULL;
    switch (*s) {
    case '"':
    case '\\':
    case '/':
        *cp = *s;
        return s + 1;
    case 'b':
        *cp = '\b';
        return s + 1;
    case 'f':
        *cp = '\f';
        return s + 1;
    case 'n':
        *cp = '\n';
        return s + 1;
    case 'r':
        *cp = '\r';
        return s + 1;
    case 't':
        *cp = '\t';
        return s + 1;
    case 'u':
        break;
    default:
        return NULL;
    }
    if (e - s < 5) return NULL;
    int hi = hex4(s + 1);
    if (hi < 0) return NULL;
    s += 5;
    if (hi >= 0xDC00 && hi <= 0xDFFF) return NULL; /* a low surrogate on its own */
    if (hi < 0xD800 || hi > 0xDBFF) {
        *cp = (uint32_t)hi;
        return s;
    }
    if (e - s < 6 || s[0] != '\\' || s[1] != 'u') return NULL;
    int lo = hex4(s + 2);
    if (lo < 0xDC00 || lo > 0xDFFF) return NULL;
    *cp = 0x10000 + (((uint32_t)hi - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
    return s + 6;
}

size_t json_utf8_len(const char *str, size_t n)
{
    ptr s = (ptr)str;
    if (n == 0) return 0;
    unsigned char c = *s;
    unsigned char lo = 0x80, hi = 0xBF;
    size_t len;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

/* s at the opening quote; returns the byte after the closing quote. */
static ptr scan_string(ptr s, ptr e)
{
    s++;
    for (;;) {
        while (s < e && plain[*s])
            s++;
        if (s >= e) return NULL;
        unsigned char c = *s;
        if (c == '"') return s + 1;
        if (c == '\\') {
            uint32_t cp;
            s = escape(s + 1, e, &cp);
            if (!s) return NULL;
        } else if (c < 0x20) {
            return NULL;
        } else {
            size_t k = json_utf8_len((const char *)s, (size_t)(e - s));
            if (!k) return NULL;
            s += k;
        }
    }
}

static inline bool digit(ptr s, ptr e)
{
    return s < e && *s >= '0' && *s <= '9';
}

static ptr scan_number(ptr s, ptr e)
{
    if (*s == '-') s++;
    if (!digit(s, e)) return NULL;
    if (*s == '0') {
        s++;
    } else {
        while (digit(s, e))
            s++;
    }
    if (s < e && *s == '.') {
        s++;
        if (!digit(s, e)) return NULL;
        while (digit(s, e))
            s++;
    }
    if (s < e && (*s == 'e' || *s == 'E')) {
        s++;
        if (s < e && (*s == '+' || *s == '-')) s++;
        if (!digit(s, e)) return NULL;
        while (digit(s, e))
            s++;
    }
    return s;
}

static ptr scan_word(ptr s, ptr e, const char *w, size_t n)
{
    if ((size_t)(e - s) < n || memcmp(s, w, n) != 0) return NULL;
    return s + n;
}

/* Validates one string, literal or number at s (s < e). Returns the byte
 * after it and its type in *type, or NULL. */
static ptr scan_scalar(ptr s, ptr e, enum json_type *type)
{
    switch (*s) {
    case '"':
        *type = JSON_STRING;
        return scan_string(s, e);
    case 't':
        *type = JSON_TRUE;
        return scan_word(s, e, "true", 4);
    case 'f':
        *type = JSON_FALSE;
        return scan_word(s, e, "false", 5);
    case 'n':
        *type = JSON_NULL;
        return scan_word(s, e, "null", 4);
    default:
        *type = JSON_NUMBER;
        if (*s != '-' && (*s < '0' || *s > '9')) return NULL;
        return scan_number(s, e);
    }
}

/*
 * Validates one value starting at s (no leading whitespace skipped). Returns
 * the byte after it and its type in *type, or NULL. Iterative: the open
 * containers are a byte stack, so hostile nesting costs no C stack.
 */
static ptr scan_value(ptr s, ptr e, enum json_type *type)
{
    unsigned char stack[JSON_MAX_DEPTH]; /* '}' or ']': what closes each level */
    int depth = 0;
    bool first = true;

value:
    s = skip_ws(s, e);
    if (s >= e) return NULL;
    switch (*s) {
    case '{':
    case '[':
        if (first) *type = *s == '{' ? JSON_OBJECT : JSON_ARRAY;
        first = false;
        if (depth == JSON_MAX_DEPTH) return NULL;
        stack[depth++] = *s == '{' ? '}' : ']';
        s = skip_ws(s + 1, e);
        if (s < e && *s == stack[depth - 1]) {
            s++;
            depth--;
            goto after_value;
        }
        if (stack[depth - 1] == '}') goto member;
        goto value;
    default: {
        enum json_type t;
        s = scan_scalar(s, e, &t);
        if (first) *type = t;
        break;
    }
    }
    first = false;
    if (!s) return NULL;

after_value:
    if (depth == 0) return s;
    s = skip_ws(s, e);
    if (s >= e) return NULL;
    if (*s == ',') {
        s++;
        if (stack[depth - 1] == '}') goto member;
        goto value;
    }
    if (*s != stack[depth - 1]) return NULL;
    s++;
    depth--;
    goto after_value;

member:
    s = skip_ws(s, e);
    if (s >= e || *s != '"') return NULL;
    s = scan_string(s, e);
    if (!s) return NULL;
    s = skip_ws(s, e);
    if (s >= e || *s != ':') return NULL;
    s++;
    goto value;
}

enum json_type json_check(const char *p, size_t n)
{
    if (!p) return JSON_INVALID;
    ptr s = (ptr)p, e = s + n;
    enum json_type type = JSON_INVALID;
    s = scan_value(s, e, &type);
    if (!s) return JSON_INVALID;
    s = skip_ws(s, e);
    return s == e ? type : JSON_INVALID;
}

bool json_object_members(const char *p, size_t n, const char **members, size_t *len)
{
    ptr s = (ptr)p, e = s + n;
    s = skip_ws(s, e);
    while (e > s && (e[-1] == ' ' || e[-1] == '\n' || e[-1] == '\r' || e[-1] == '\t'))
        e--;
    if (e - s < 2 || *s != '{' || e[-1] != '}') return false;
    s = skip_ws(s + 1, e - 1);
    e--;
    while (e > s && (e[-1] == ' ' || e[-1] == '\n' || e[-1] == '\r' || e[-1] == '\t'))
        e--;
    *members = (const char *)s;
    *len = (size_t)(e - s);
    return true;
}

bool json_iter_object(struct json_iter *it, const char *p, size_t n)
{
    ptr s = (ptr)p, e = s + n;
    s = skip_ws(s, e);
    if (s >= e || *s != '{') return false;
    it->p = (const char *)s + 1;
    it->end = (const char *)e;
    it->started = false;
    return true;
}

bool json_iter_next(struct json_iter *it, struct json_member *m)
{
    ptr s = (ptr)it->p, e = (ptr)it->end;
    if (!s) return false;
    s = skip_ws(s, e);
    if (it->started) {
        if (s >= e || *s != ',') goto done; /* '}' (the end) or a syntax error */
        s = skip_ws(s + 1, e);
    }
    if (s >= e || *s != '"') goto done; /* '}' (the end) or a syntax error */
    ptr name = s + 1;
    s = scan_string(s, e);
    if (!s) goto done;
    m->name = (const char *)name;
    m->name_len = (size_t)(s - 1 - name);
    s = skip_ws(s, e);
    if (s >= e || *s != ':') goto done;
    s = skip_ws(s + 1, e);
    enum json_type type;
    ptr v = s;
    s = scan_value(s, e, &type);
    if (!s) goto done;
    m->value = (const char *)v;
    m->value_len = (size_t)(s - v);
    it->p = (const char *)s;
    it->started = true;
    return true;
done:
    it->p = NULL;
    return false;
}

/* Writes cp as UTF-8 into out (4 bytes room); returns the length. */
static size_t utf8_put(uint32_t cp, unsigned char *out)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

bool json_string_equals(const char *raw, size_t raw_len, const char *str, size_t n)
{
    ptr s = (ptr)raw, e = s + raw_len;
    ptr t = (ptr)str, te = t + n;
    while (s < e) {
        if (*s != '\\') {
            if (t >= te || *t != *s) return false;
            s++;
            t++;
            continue;
        }
        uint32_t cp;
        s = escape(s + 1, e, &cp);
        if (!s) return false;
        unsigned char u[4];
        size_t k = utf8_put(cp, u);
        if ((size_t)(te - t) < k || memcmp(t, u, k) != 0) return false;
        t += k;
    }
    return t == te;
}

size_t json_string_decode(const char *raw, size_t raw_len, char *out)
{
    ptr s = (ptr)raw, e = s + raw_len;
    unsigned char *o = (unsigned char *)out;
    while (s < e) {
        if (*s != '\\') {
            *o++ = *s++;
            continue;
        }
        uint32_t cp;
        s = escape(s + 1, e, &cp);
        if (!s) return (size_t)-1;
        o += utf8_put(cp, o);
    }
    return (size_t)(o - (unsigned char *)out);
}

/* ---- the string writer (rules in json.h) ---- */

/* For bytes below 0x80 that json_put_string escapes: the letter after the
 * backslash, or 'u' for \u00XX. 0 for bytes copied as they are. */
static const char ascii_escape[128] = {
    [0x00 ... 0x07] = 'u', ['\b'] = 'b',  ['\t'] = 't', ['\n'] = 'n',
    [0x0b] = 'u',          ['\f'] = 'f',  ['\r'] = 'r', [0x0e ... 0x1f] = 'u',
    ['"'] = '"',           ['\\'] = '\\', [0x7f] = 'u',
};

/* The escape for the byte at s (s < e) that is not copied as it is: writes
 * it to esc (6 bytes room) and returns its length, or 0 when s starts a
 * well-formed UTF-8 sequence, whose length goes to *copy. */
static size_t escape_one(ptr s, ptr e, char *esc, size_t *copy)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char c = *s;
    if (c >= 0x80) {
        *copy = json_utf8_len((const char *)s, (size_t)(e - s));
        if (*copy) return 0;
        memcpy(esc, "\\ufffd", 6);
        return 6;
    }
    esc[0] = '\\';
    if (ascii_escape[c] != 'u') {
        esc[1] = ascii_escape[c];
        return 2;
    }
    memcpy(esc + 1, "u00", 3);
    esc[4] = hex[c >> 4];
    esc[5] = hex[c & 15];
    return 6;
}

/* The string's contents, without the quotes, to out (NULL: only counted).
 * Returns the length. */
static size_t put_contents(char *out, const char *str, size_t n)
{
    ptr s = (ptr)str, e = s + n;
    size_t k = 0;
    while (s < e) {
        ptr run = s; /* the run copied as it is */
        while (s < e && *s < 0x80 && !ascii_escape[*s])
            s++;
        if (out && s > run) memcpy(out + k, run, (size_t)(s - run));
        k += (size_t)(s - run);
        if (s >= e) break;
        char esc[6];
        size_t copy = 0, m = escape_one(s, e, esc, &copy);
        if (m) {
            if (out) memcpy(out + k, esc, m);
            k += m;
            s++;
        } else {
            if (out) memcpy(out + k, s, copy);
            k += copy;
            s += copy;
        }
    }
    return k;
}

size_t json_escape_len(const char *s, size_t n)
{
    return put_contents(NULL, s, n) + 2;
}

size_t json_put_string(char *out, const char *s, size_t n)
{
    out[0] = '"';
    size_t k = 1 + put_contents(out + 1, s, n);
    out[k++] = '"';
    return k;
}

int json_buf_string(struct buf *b, const char *s, size_t n)
{
    size_t len = json_escape_len(s, n);
    if (buf_reserve(b, len)) return -ENOMEM;
    b->len += json_put_string(b->data + b->len, s, n);
    b->data[b->len] = '\0';
    return 0;
}
