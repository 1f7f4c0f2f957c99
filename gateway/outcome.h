/*
 * outcome: what became of one backend or item call, and its name.
 *
 * The one list of outcomes: fanout.c decides them, metrics.c counts them (the
 * enum is the index of the counter in a series, so counting costs no string
 * compare), otel.c and Server-Timing print their names. Adding an outcome
 * here adds its counter and its label everywhere; the values are dense from
 * 0 to OUTCOME_COUNT - 1.
 */
#ifndef GATEWAY_OUTCOME_H
#define GATEWAY_OUTCOME_H

enum outcome {
    OUT_OK,
    OUT_ERROR,
    OUT_TIMEOUT,
    OUT_CANCELLED,
    OUT_OPEN, /* the host's breaker is open: nothing was sent */
    OUT_DEGRADED,
    OUT_STATIC,
    OUT_OMITTED,
    OUTCOME_COUNT /* not an outcome: the number of them */
};

/* The outcome's label ("ok", "error", "timeout", "cancelled", "open",
 * "degraded", "static", "omitted"); "?" for a value out of range. */
static inline const char *outcome_name(enum outcome o)
{
    static const char *const names[OUTCOME_COUNT] = {
        [OUT_OK] = "ok",           [OUT_ERROR] = "error",
        [OUT_TIMEOUT] = "timeout", [OUT_CANCELLED] = "cancelled",
        [OUT_OPEN] = "open",       [OUT_DEGRADED] = "degraded",
        [OUT_STATIC] = "static",   [OUT_OMITTED] = "omitted",
    };
    return (unsigned)o < OUTCOME_COUNT ? names[o] : "?";
}

#endif
