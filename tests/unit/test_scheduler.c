/* The schedule computation: cron expressions (pt_cron), RFC 3339 times and
 * the next due time of every / cron / at jobs (pt_sched_next), and the
 * scheduler: section of the config. */
#include "pt_cron.h"
#include "pt_scheduler.h"
#include "pt_test.h"
#include "pt_test_config.h"

#include <time.h>

/* UTC seconds of "YYYY-MM-DDTHH:MM:SSZ" (through the parser under test too) */
static int64_t T(const char *s)
{
    int64_t ms = -1;
    if (pt_sched_parse_time(s, &ms) != 0) {
        fprintf(stderr, "bad time in a test: %s\n", s);
        return -1;
    }
    return ms / 1000;
}

static int64_t next_of(const char *expr, const char *after)
{
    pt_cron_t c;
    char err[256];
    if (pt_cron_parse(expr, &c, err, sizeof err) != 0) {
        fprintf(stderr, "  %s: %s\n", expr, err);
        return -2;
    }
    return pt_cron_next(&c, T(after));
}

static int refused(const char *expr, const char *needle)
{
    pt_cron_t c;
    char err[256] = "";
    if (pt_cron_parse(expr, &c, err, sizeof err) == 0 || !strstr(err, needle)) {
        fprintf(stderr, "  \"%s\": err=\"%s\" (wanted \"%s\")\n", expr, err, needle);
        return 0;
    }
    return 1;
}

PT_CASE(cron_fields_and_sets)
{
    pt_cron_t c;
    char err[256];
    PT_CHECK_INT(pt_cron_parse("*/15 0-6/2 1,15 JAN-mar sun,6", &c, err, sizeof err), 0);
    PT_CHECK(c.minutes == ((1ull << 0) | (1ull << 15) | (1ull << 30) | (1ull << 45)));
    PT_CHECK_INT(c.hours, (1 << 0) | (1 << 2) | (1 << 4) | (1 << 6));
    PT_CHECK_INT(c.days, (1 << 1) | (1 << 15));
    PT_CHECK_INT(c.months, (1 << 1) | (1 << 2) | (1 << 3));
    PT_CHECK_INT(c.wdays, (1 << 0) | (1 << 6));
    PT_CHECK(!c.days_star && !c.wdays_star);
    PT_CHECK_INT(pt_cron_parse("5/20 * * * 7", &c, err, sizeof err), 0); /* 5,25,45; 7 = Sunday */
    PT_CHECK(c.minutes == ((1ull << 5) | (1ull << 25) | (1ull << 45)));
    PT_CHECK_INT(c.wdays, 1);
    PT_CHECK(c.days_star && !c.wdays_star);
    PT_CHECK_INT(pt_cron_parse("  0\t2 * * *  ", &c, err, sizeof err), 0); /* blanks around */
    PT_CHECK_INT(pt_cron_parse("@hourly", &c, err, sizeof err), 0);
    PT_CHECK(c.minutes == 1 && c.hours == 0xffffff);
}

PT_CASE(cron_refusals)
{
    PT_CHECK(refused("", "expected 5 fields"));
    PT_CHECK(refused("* * * *", "expected 5 fields"));
    PT_CHECK(refused("* * * * * *", "got more"));
    PT_CHECK(refused("60 * * * *", "the minute field '60' is not valid"));
    PT_CHECK(refused("* 24 * * *", "the hour field"));
    PT_CHECK(refused("* * 0 * *", "the day-of-month field"));
    PT_CHECK(refused("* * 32 * *", "the day-of-month field"));
    PT_CHECK(refused("* * * 13 * ", "the month field"));
    PT_CHECK(refused("* * * * 8", "the day-of-week field"));
    PT_CHECK(refused("5-1 * * * *", "end is below its start"));
    PT_CHECK(refused("*/0 * * * *", "step that is not from 1 to 60"));
    PT_CHECK(refused("*/61 * * * *", "step that is not from 1 to 60"));
    PT_CHECK(refused("1,,2 * * * *", "is not valid"));
    PT_CHECK(refused("1, * * * *", "is not valid"));
    PT_CHECK(refused("-1 * * * *", "is not valid"));
    PT_CHECK(refused("1- * * * *", "is not valid"));
    PT_CHECK(refused("*/ * * * *", "is not valid"));
    PT_CHECK(refused("** * * * *", "is not valid"));
    PT_CHECK(refused("a * * * *", "is not valid"));
    PT_CHECK(refused("* * * JANUARY *", "is not valid"));
    PT_CHECK(refused("* * * * MON-", "is not valid"));
    PT_CHECK(refused("007 * * * *", "is not valid"));
    PT_CHECK(refused("1.5 * * * *", "is not valid"));
    PT_CHECK(refused("0 0 30 2 *", "matches no date"));
    PT_CHECK(refused("0 0 31 4,6,9,11 *", "matches no date"));
    PT_CHECK(refused("@reboot", "unknown macro"));
    PT_CHECK(refused("@daily x", "unknown macro"));
}

PT_CASE(cron_next_runs)
{
    /* every minute: the next whole minute, strictly after */
    PT_CHECK_INT(next_of("* * * * *", "2026-12-02T03:40:00Z"), T("2026-12-02T03:41:00Z"));
    PT_CHECK_INT(next_of("* * * * *", "2026-12-02T03:40:59Z"), T("2026-12-02T03:41:00Z"));
    /* the daily job: later today, or tomorrow */
    PT_CHECK_INT(next_of("0 2 * * *", "2026-12-02T01:59:59Z"), T("2026-12-02T02:00:00Z"));
    PT_CHECK_INT(next_of("0 2 * * *", "2026-12-02T02:00:00Z"), T("2026-12-03T02:00:00Z"));
    /* carries across month and year ends */
    PT_CHECK_INT(next_of("30 23 31 12 *", "2026-12-31T23:30:00Z"), T("2027-12-31T23:30:00Z"));
    PT_CHECK_INT(next_of("0 0 1 * *", "2026-12-15T00:00:00Z"), T("2027-01-01T00:00:00Z"));
    /* Feb 29: only in a leap year */
    PT_CHECK_INT(next_of("0 12 29 2 *", "2026-03-01T00:00:00Z"), T("2028-02-29T12:00:00Z"));
    /* day 31 skips the months without one */
    PT_CHECK_INT(next_of("0 0 31 * *", "2026-04-01T00:00:00Z"), T("2026-05-31T00:00:00Z"));
    /* steps, ranges, lists */
    PT_CHECK_INT(next_of("*/15 * * * *", "2026-12-02T03:44:00Z"), T("2026-12-02T03:45:00Z"));
    PT_CHECK_INT(next_of("0 9-17/4 * * *", "2026-12-02T13:00:00Z"), T("2026-12-02T17:00:00Z"));
    PT_CHECK_INT(next_of("0 9-17/4 * * *", "2026-12-02T17:00:00Z"), T("2026-12-03T09:00:00Z"));
    /* day of week: 2026-12-02 is a Wednesday */
    PT_CHECK_INT(next_of("0 8 * * MON", "2026-12-02T00:00:00Z"), T("2026-12-07T08:00:00Z"));
    PT_CHECK_INT(next_of("0 8 * * 0", "2026-12-02T00:00:00Z"), T("2026-12-06T08:00:00Z"));
    PT_CHECK_INT(next_of("0 8 * * 7", "2026-12-02T00:00:00Z"), T("2026-12-06T08:00:00Z"));
    /* both day fields restricted: either matches (the 13th, or a Friday) */
    PT_CHECK_INT(next_of("0 0 13 * FRI", "2026-12-02T00:00:00Z"), T("2026-12-04T00:00:00Z"));
    PT_CHECK_INT(next_of("0 0 13 * FRI", "2026-12-11T00:00:00Z"), T("2026-12-13T00:00:00Z"));
    /* one restricted: both must match (a Friday the 13th) */
    PT_CHECK_INT(next_of("0 0 13 * *", "2026-12-02T00:00:00Z"), T("2026-12-13T00:00:00Z"));
    PT_CHECK_INT(next_of("0 0 */1 * FRI", "2026-12-02T00:00:00Z"), T("2026-12-04T00:00:00Z"));
    /* macros */
    PT_CHECK_INT(next_of("@weekly", "2026-12-02T00:00:00Z"), T("2026-12-06T00:00:00Z"));
    PT_CHECK_INT(next_of("@yearly", "2026-12-02T00:00:00Z"), T("2027-01-01T00:00:00Z"));
}

PT_CASE(rfc3339_times)
{
    int64_t ms;
    PT_CHECK_INT(pt_sched_parse_time("1970-01-01T00:00:00Z", &ms), 0);
    PT_CHECK_INT(ms, 0);
    PT_CHECK_INT(pt_sched_parse_time("2026-12-24T18:00:00.250Z", &ms), 0);
    PT_CHECK_INT(ms % 1000, 250);
    int64_t utc = ms;
    PT_CHECK_INT(pt_sched_parse_time("2026-12-24T19:00:00.25+01:00", &ms), 0);
    PT_CHECK_INT(ms, utc);
    PT_CHECK_INT(pt_sched_parse_time("2026-12-24T12:30:00.250-05:30", &ms), 0);
    PT_CHECK_INT(ms, utc);
    const char *bad[] = {"2026-12-24T18:00:00",
                         "2026-12-24 18:00:00Z",
                         "2026-13-01T00:00:00Z",
                         "2026-02-29T00:00:00Z",
                         "2026-04-31T00:00:00Z",
                         "2026-12-24T24:00:00Z",
                         "2026-12-24T18:60:00Z",
                         "2026-12-24T18:00:60Z",
                         "2026-12-24T18:00:00.Z",
                         "2026-12-24T18:00:00Zx",
                         "2026-12-24T18:00:00+1",
                         "26-12-24T18:00:00Z",
                         "",
                         "tomorrow"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (pt_sched_parse_time(bad[i], &ms) == 0) fprintf(stderr, "  accepted %s\n", bad[i]);
        PT_CHECK(pt_sched_parse_time(bad[i], &ms) != 0);
    }
    char out[32];
    pt_sched_format_time(utc, out);
    PT_CHECK_STR(out, "2026-12-24T18:00:00.250Z");
}

PT_CASE(next_run_of_intervals)
{
    pt_sched_job_cfg_t j = {.kind = PT_SCHED_EVERY, .every_ms = 1000};
    /* the first tick one interval after the start */
    PT_CHECK_INT(pt_sched_next(&j, 5000, 0), 6000);
    /* then the cadence of the previous due time, whenever the tick ran */
    PT_CHECK_INT(pt_sched_next(&j, 6003, 6000), 7000);
    PT_CHECK_INT(pt_sched_next(&j, 6999, 6000), 7000);
    /* ticks missed (a stopped clock, a busy loop) are not caught up */
    PT_CHECK_INT(pt_sched_next(&j, 9500, 6000), 10000);
    PT_CHECK_INT(pt_sched_next(&j, 10000, 6000), 11000);
    j.every_ms = 30000;
    PT_CHECK_INT(pt_sched_next(&j, 0 + 1, 1), 30001);
}

PT_CASE(next_run_of_cron_and_at)
{
    pt_sched_job_cfg_t j = {.kind = PT_SCHED_CRON};
    char err[256];
    PT_CHECK_INT(pt_cron_parse("0 2 * * *", &j.cron, err, sizeof err), 0);
    int64_t now = T("2026-12-02T03:40:10Z") * 1000 + 123;
    PT_CHECK_INT(pt_sched_next(&j, now, 0), T("2026-12-03T02:00:00Z") * 1000);
    /* fired a little early by the loop's timer: never the same minute twice */
    int64_t due = T("2026-12-03T02:00:00Z") * 1000;
    PT_CHECK_INT(pt_sched_next(&j, due - 3, due), T("2026-12-04T02:00:00Z") * 1000);

    pt_sched_job_cfg_t at = {.kind = PT_SCHED_AT, .at_ms = T("2026-12-24T18:00:00Z") * 1000};
    PT_CHECK_INT(pt_sched_next(&at, now, 0), at.at_ms);
    PT_CHECK_INT(pt_sched_next(&at, at.at_ms, at.at_ms), -1); /* once only */
    PT_CHECK_INT(pt_sched_next(&at, at.at_ms + 1, 0), -1);    /* already past at the load */
}

PT_CASE(config_section)
{
    pt_config_t *cfg;
    char err[512] = "";
    int rc =
        pt_test_load("scheduler:\n"
                     "  jobs:\n"
                     "    - {name: cleanup, service: demo.cleanup, every: 30s, input: {max: 10, "
                     "tag: 'x', on: true, none: ~, list: [1, \"two\", 3.5e2], q: \"1\"}}\n"
                     "    - {name: nightly, service: reports.build, cron: \"0 2 * * *\", "
                     "timeout: 5m, overlap: true}\n"
                     "    - {name: once, service: demo.ping, at: \"2026-12-24T18:00:00Z\", "
                     "enabled: false}\n",
                     &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc != 0) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    const pt_scheduler_cfg_t *s = &cfg->scheduler;
    PT_CHECK_INT(s->n_jobs, 3);
    PT_CHECK_STR(s->jobs[0].name, "cleanup");
    PT_CHECK_STR(s->jobs[0].service, "demo.cleanup");
    PT_CHECK_INT(s->jobs[0].kind, PT_SCHED_EVERY);
    PT_CHECK_INT(s->jobs[0].every_ms, 30000);
    PT_CHECK_INT(s->jobs[0].timeout_ms, 60000);
    PT_CHECK_INT(s->jobs[0].overlap, 0);
    PT_CHECK_INT(s->jobs[0].enabled, 1);
    PT_CHECK_INT(s->jobs[0].line, 3);
    PT_CHECK_STR(s->jobs[0].input_json,
                 "{\"max\":10,\"tag\":\"x\",\"on\":true,\"none\":null,\"list\":[1,\"two\",3.5e2],"
                 "\"q\":\"1\"}");
    PT_CHECK_STR(s->jobs[0].spec, "every 30s");
    PT_CHECK_INT(s->jobs[1].kind, PT_SCHED_CRON);
    PT_CHECK_INT(s->jobs[1].timeout_ms, 300000);
    PT_CHECK_INT(s->jobs[1].overlap, 1);
    PT_CHECK_STR(s->jobs[1].input_json, "");
    PT_CHECK_STR(s->jobs[1].spec, "cron 0 2 * * *");
    PT_CHECK_INT(s->jobs[2].kind, PT_SCHED_AT);
    PT_CHECK_INT(s->jobs[2].at_ms, T("2026-12-24T18:00:00Z") * 1000);
    PT_CHECK_INT(s->jobs[2].enabled, 0);
    pt_config_free(cfg);

    PT_CHECK_INT(pt_test_load("scheduler:\n", &cfg, err, sizeof err), 0);
    PT_CHECK_INT(cfg->scheduler.n_jobs, 0);
    pt_config_free(cfg);
}

PT_CASE(config_refusals)
{
    PT_CHECK(pt_test_fails_with("scheduler:\n  jobs:\n    - {service: a, every: 1s}\n",
                                ":3: scheduler.jobs[0]: name is required"));
    PT_CHECK(pt_test_fails_with("scheduler:\n  jobs:\n    - {name: a, every: 1s}\n",
                                ":3: scheduler job 'a': service is required"));
    PT_CHECK(pt_test_fails_with("scheduler:\n  jobs:\n    - {name: a, service: 'b c', every: 1s}\n",
                                "malformed service name 'b c'"));
    PT_CHECK(pt_test_fails_with("scheduler:\n  jobs:\n    - {name: a, service: b, cron: '* * *'}\n",
                                ":3: scheduler job 'a': cron \"* * *\": expected 5 fields"));
    PT_CHECK(pt_test_fails_with("scheduler:\n  jobs:\n    - {name: a, service: b, every: soon}\n",
                                "every: expected a duration"));
    PT_CHECK(pt_test_fails_with("scheduler:\n  jobs:\n    - {name: a, service: b, every: 400d}\n",
                                "every: expected a duration"));
    PT_CHECK(pt_test_fails_with("scheduler:\n  jobs:\n    - {name: a, service: b, every: 1s, "
                                "overlap: maybe}\n",
                                "overlap: expected true or false"));
    PT_CHECK(pt_test_fails_with("scheduler:\n  jobs:\n    - {name: a, service: b, every: 1s, "
                                "timeout: 25h}\n",
                                "timeout: expected a duration from 1ms to 24h"));
    PT_CHECK(pt_test_fails_with("scheduler:\n  jobs:\n    - {name: a, service: b, every: 1s, "
                                "input: {[1]: 2}}\n",
                                "input keys must be strings"));
    PT_CHECK(
        pt_test_fails_with("scheduler:\n  jobs: {a: 1}\n", ":2: scheduler.jobs: expected a list"));
    PT_CHECK(pt_test_fails_with("scheduler:\n  tasks: []\n", "scheduler: unknown key 'tasks'"));
    PT_CHECK(pt_test_fails_with("scheduler:\n  jobs:\n    - {name: a, service: b, every: 1s}\n"
                                "    - {name: a, service: b, every: 2s}\n",
                                ":4: scheduler job 'a' is defined twice (line 3 too)"));
}

int main(void)
{
    PT_RUN(cron_fields_and_sets);
    PT_RUN(cron_refusals);
    PT_RUN(cron_next_runs);
    PT_RUN(rfc3339_times);
    PT_RUN(next_run_of_intervals);
    PT_RUN(next_run_of_cron_and_at);
    PT_RUN(config_section);
    PT_RUN(config_refusals);
    return PT_TEST_DONE();
}
