/*
 * fwdhdr: the forwarded client headers of one request (fwdhdr.h): checks
 * each value, joins repeated headers and builds the "Name: value" lines.
 * Owns f->lines and f->vals until fwd_free.
 */
#include "gateway/fwdhdr.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* One value of a forwarded header, as it arrived. */
struct fwd_val {
    size_t idx; /* into names */
    const char *v;
    size_t len;
};

void fwd_init(struct fwd *f, const char *const *names, size_t n_names)
{
    memset(f, 0, sizeof *f);
    buf_init(&f->lines, NULL);
    buf_init(&f->vals, NULL);
    f->names = names;
    f->n_names = n_names < FWD_MAX ? n_names : FWD_MAX;
}

void fwd_free(struct fwd *f)
{
    buf_free(&f->lines);
    buf_free(&f->vals);
}

bool fwd_value_ok(const char *value, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
    }
    return true;
}

/* Headers a recipient takes one value of: a list would be read differently
 * by different parsers, or carry a second credential. */
static bool single_valued(const char *name)
{
    static const char *const single[] = {"Authorization", "Proxy-Authorization", "Host",
                                         "Content-Length"};
    for (size_t i = 0; i < sizeof single / sizeof single[0]; i++)
        if (strcasecmp(name, single[i]) == 0) return true;
    return false;
}

static int refuse(struct fwd *f, const char *name, const char *what)
{
    snprintf(f->why, sizeof f->why, "header %s: %s", name, what);
    return 400;
}

int fwd_add(struct fwd *f, const char *name, const char *value, size_t len, bool cut)
{
    size_t i = 0;
    while (i < f->n_names && strcasecmp(name, f->names[i]) != 0)
        i++;
    if (i == f->n_names) return 0; /* not forwarded: not our business */
    const char *cfg = f->names[i];
    if (cut) return refuse(f, cfg, "value contains a NUL character");
    if (!fwd_value_ok(value, len)) return refuse(f, cfg, "value contains a control character");
    if (f->seen[i] && single_valued(cfg)) return refuse(f, cfg, "sent more than once");
    f->seen[i] = true;
    while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (len == 0) return 0;
    struct fwd_val v = {.idx = i, .v = value, .len = len};
    if (buf_append(&f->vals, &v, sizeof v)) {
        snprintf(f->why, sizeof f->why, "out of memory");
        return 503;
    }
    return 0;
}

/* Appends "Name: v1, v2" for names[i] (nothing when it has no value). */
static int join(struct fwd *f, size_t i, size_t *value_off)
{
    const struct fwd_val *vals = (const struct fwd_val *)(void *)f->vals.data;
    size_t n = f->vals.len / sizeof *vals;
    const char *sep = strcasecmp(f->names[i], "Cookie") == 0 ? "; " : ", ";
    bool any = false;
    int rc = 0;
    for (size_t k = 0; k < n && !rc; k++) {
        if (vals[k].idx != i) continue;
        if (!any) {
            f->line_off[f->n_lines] = f->lines.len;
            rc = buf_printf(&f->lines, "%s: ", f->names[i]);
            *value_off = f->lines.len;
        } else {
            rc = buf_puts(&f->lines, sep);
        }
        any = true;
        if (!rc) rc = buf_append(&f->lines, vals[k].v, vals[k].len);
    }
    if (!rc && any) {
        f->value_len[i] = f->lines.len - *value_off;
        rc = buf_putc(&f->lines, '\0');
        f->n_lines++;
    }
    return rc ? rc : any;
}

int fwd_finish(struct fwd *f)
{
    size_t off[FWD_MAX];
    for (size_t i = 0; i < f->n_names; i++) {
        int rc = join(f, i, &off[i]);
        if (rc < 0) {
            snprintf(f->why, sizeof f->why, "out of memory");
            return 503;
        }
        if (rc == 0) off[i] = SIZE_MAX;
    }
    /* Pointers only now: the buffer may have moved while it grew. */
    for (size_t i = 0; i < f->n_names; i++)
        f->value[i] = off[i] == SIZE_MAX ? NULL : f->lines.data + off[i];
    return 0;
}
