#include "pt_cron.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

typedef struct {
    const char *name;
    int lo, hi;
    const char *const *names; /* names[i] is value lo + i, or NULL */
} pt__field_t;

static const char *const pt__months[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
                                         "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const pt__wdays[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

static const pt__field_t pt__fields[5] = {
    {"minute", 0, 59, NULL},          {"hour", 0, 23, NULL},
    {"day-of-month", 1, 31, NULL},    {"month", 1, 12, pt__months},
    {"day-of-week", 0, 7, pt__wdays},
};

/* A number or (for fields with names) a three-letter name at *p. */
static int pt__value(const pt__field_t *f, const char **p, int *out)
{
    const char *s = *p;
    if (*s >= '0' && *s <= '9') {
        int v = 0, n = 0;
        while (*s >= '0' && *s <= '9') {
            if (++n > 2) return -1;
            v = v * 10 + (*s++ - '0');
        }
        if (v < f->lo || v > f->hi) return -1;
        *out = v;
        *p = s;
        return 0;
    }
    for (int i = 0; f->names && f->names[i]; i++)
        if (strncasecmp(s, f->names[i], 3) == 0) {
            char next = s[3];
            if ((next >= 'a' && next <= 'z') || (next >= 'A' && next <= 'Z')) return -1;
            *out = f->lo + i;
            *p = s + 3;
            return 0;
        }
    return -1;
}

/* One field, text s[0..n), into bits. */
static int pt__field(const pt__field_t *f, const char *s, size_t n, uint64_t *bits, int *star,
                     char *err, size_t errlen)
{
    char buf[128];
    if (n >= sizeof buf) {
        snprintf(err, errlen, "the %s field is too long", f->name);
        return -1;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    *bits = 0;
    *star = buf[0] == '*';
    const char *p = buf;
    for (;;) {
        int lo, hi, step = 1;
        if (*p == '*') {
            lo = f->lo;
            hi = f->hi;
            p++;
        } else {
            if (pt__value(f, &p, &lo) != 0) goto bad;
            hi = lo;
            if (*p == '-') {
                p++;
                if (pt__value(f, &p, &hi) != 0) goto bad;
                if (hi < lo) {
                    snprintf(err, errlen, "the %s field has a range whose end is below its start",
                             f->name);
                    return -1;
                }
            } else if (*p == '/') {
                hi = f->hi;
            }
        }
        if (*p == '/') {
            p++;
            if (*p < '0' || *p > '9') goto bad;
            step = 0;
            for (int k = 0; *p >= '0' && *p <= '9'; k++) {
                if (k >= 2) goto badstep;
                step = step * 10 + (*p++ - '0');
            }
            if (step < 1 || step > f->hi - f->lo + 1) goto badstep;
        }
        for (int v = lo; v <= hi; v += step)
            *bits |= (uint64_t)1 << v;
        if (*p == '\0') break;
        if (*p != ',') goto bad;
        p++;
    }
    return 0;
badstep:
    snprintf(err, errlen, "the %s field has a step that is not from 1 to %d", f->name,
             f->hi - f->lo + 1);
    return -1;
bad:
    snprintf(err, errlen, "the %s field '%s' is not valid (values %d-%d%s)", f->name, buf, f->lo,
             f->hi, f->names ? " or names" : "");
    return -1;
}

static const struct {
    const char *name, *expr;
} pt__macros[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

int pt_cron_parse(const char *s, pt_cron_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (s[0] == '@') {
        for (size_t i = 0; i < sizeof pt__macros / sizeof pt__macros[0]; i++)
            if (strcmp(s, pt__macros[i].name) == 0)
                return pt_cron_parse(pt__macros[i].expr, out, err, errlen);
        snprintf(err, errlen, "unknown macro '%s' (@yearly, @monthly, @weekly, @daily, @hourly)",
                 s);
        return -1;
    }
    const char *p = s;
    uint64_t bits[5];
    int stars[5];
    for (int i = 0; i < 5; i++) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *start = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        if (p == start) {
            snprintf(err, errlen,
                     "expected 5 fields (minute hour day-of-month month "
                     "day-of-week), got %d",
                     i);
            return -1;
        }
        if (pt__field(&pt__fields[i], start, (size_t)(p - start), &bits[i], &stars[i], err,
                      errlen) != 0)
            return -1;
    }
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p) {
        snprintf(err, errlen, "expected 5 fields, got more ('%s')", p);
        return -1;
    }
    out->minutes = bits[0];
    out->hours = (uint32_t)bits[1];
    out->days = (uint32_t)bits[2];
    out->months = (uint32_t)bits[3];
    out->wdays = (uint32_t)(bits[4] & 0x7f) | (uint32_t)((bits[4] >> 7) & 1); /* 7 is Sunday */
    out->days_star = stars[2];
    out->wdays_star = stars[4];
    if (pt_cron_next(out, 946684800 /* 2000-01-01 */) < 0) {
        snprintf(err, errlen, "the expression matches no date");
        return -1;
    }
    return 0;
}

static int pt__day_matches(const pt_cron_t *c, const struct tm *tm)
{
    int dom = (c->days >> tm->tm_mday) & 1, dow = (c->wdays >> tm->tm_wday) & 1;
    if (!c->days_star && !c->wdays_star) return dom || dow;
    return dom && dow;
}

int64_t pt_cron_next(const pt_cron_t *c, int64_t after)
{
    int64_t limit = after + (int64_t)5 * 366 * 86400;
    time_t t = (time_t)(after - ((after % 60) + 60) % 60 + 60); /* the next whole minute */
    struct tm tm;
    while ((int64_t)t <= limit) {
        if (!gmtime_r(&t, &tm)) return -1;
        if (!((c->months >> (tm.tm_mon + 1)) & 1)) {
            tm.tm_mon++;
            tm.tm_mday = 1;
            tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        } else if (!pt__day_matches(c, &tm)) {
            tm.tm_mday++;
            tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        } else if (!((c->hours >> tm.tm_hour) & 1)) {
            tm.tm_hour++;
            tm.tm_min = tm.tm_sec = 0;
        } else if (!((c->minutes >> tm.tm_min) & 1)) {
            tm.tm_min++;
            tm.tm_sec = 0;
        } else {
            return (int64_t)t;
        }
        t = timegm(&tm); /* normalises the carried field */
    }
    return -1;
}
