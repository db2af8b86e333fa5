/* pt_cron: 5-field cron expressions (minute hour day-of-month month
 * day-of-week), always in UTC, and the next time one matches. Debian ships
 * no C library for this, so it is a small strict parser of its own.
 *
 * Syntax (Vixie cron's, without its extensions beyond these):
 *   field   = item *("," item)
 *   item    = "*" ["/" step] | value ["-" value] ["/" step]
 *   minute 0-59, hour 0-23, day-of-month 1-31, month 1-12 or JAN-DEC,
 *   day-of-week 0-7 or SUN-SAT (0 and 7 are Sunday); names ignore case.
 *   "a/step" means a to the field's last value every step.
 *   Macros: @yearly @annually @monthly @weekly @daily @midnight @hourly.
 * As in Vixie cron, when both day fields are restricted (neither starts with
 * "*") a day matches either; otherwise it must match both. Refused: empty
 * items, a value out of its field's range, a range whose end is below its
 * start, a step of 0 or above the field's span, anything after the fifth
 * field, and an expression that matches no date (0 0 30 2 *). */
#ifndef PT_CRON_H
#define PT_CRON_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t minutes; /* bit m: minute m matches */
    uint32_t hours;
    uint32_t days;   /* bit d, 1..31 */
    uint32_t months; /* bit m, 1..12 */
    uint32_t wdays;  /* bit d, 0..6 (Sunday 0) */
    int days_star;   /* the day-of-month field starts with "*" */
    int wdays_star;
} pt_cron_t;

/* Parses s into *out. Returns 0, or -1 with the reason in err (which field,
 * what is wrong). */
int pt_cron_parse(const char *s, pt_cron_t *out, char *err, size_t errlen);

/* The first whole minute strictly after `after` (UTC seconds since the
 * epoch) that c matches, or -1 when none comes within five years. */
int64_t pt_cron_next(const pt_cron_t *c, int64_t after);

#endif
