#include "pt_config_scheduler.h"
#include "pt_route.h"
#include "pt_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int pt__digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int pt_sched_parse_time(const char *s, int64_t *ms)
{
    int y, mo, d, h, mi, sec, frac = 0, off = 0;
    size_t n = strlen(s);
    if (n < 20 || pt__digits(s, 4, &y) || s[4] != '-' || pt__digits(s + 5, 2, &mo) || s[7] != '-' ||
        pt__digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || pt__digits(s + 11, 2, &h) ||
        s[13] != ':' || pt__digits(s + 14, 2, &mi) || s[16] != ':' || pt__digits(s + 17, 2, &sec))
        return -1;
    const char *p = s + 19;
    if (*p == '.') {
        int k = 0;
        p++;
        while (*p >= '0' && *p <= '9') {
            if (k < 3) frac = frac * 10 + (*p - '0');
            k++, p++;
        }
        if (k == 0 || k > 9) return -1;
        for (; k < 3; k++)
            frac *= 10;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (pt__digits(p + 1, 2, &oh) || p[3] != ':' || pt__digits(p + 4, 2, &om) || oh > 23 ||
            om > 59)
            return -1;
        off = (oh * 60 + om) * 60 * (*p == '+' ? 1 : -1);
        p += 6;
    } else {
        return -1;
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 59) return -1;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    if (tm.tm_mday != d || tm.tm_mon != mo - 1) return -1; /* 2026-02-30 */
    *ms = ((int64_t)t - off) * 1000 + frac;
    return 0;
}

/* ---- input: YAML to JSON ---- */

/* The JSON number grammar (RFC 8259), for plain scalars. */
static int pt__json_number(const char *s)
{
    const char *p = s;
    if (*p == '-') p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (*p >= '0' && *p <= '9')
            p++;
    else
        return 0;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9') return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (*p < '0' || *p > '9') return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return *p == '\0';
}

static int pt__to_json(const pt_yaml_t *y, yaml_node_t *n, pt_buf_t *b, int depth)
{
    if (depth > 32) return pt_yaml_fail(y, n, "scheduler: input is nested too deeply");
    if (n->type == YAML_SCALAR_NODE) {
        const char *s = (const char *)n->data.scalar.value;
        size_t len = n->data.scalar.length;
        if (memchr(s, '\0', len)) return pt_yaml_fail(y, n, "scheduler: input holds a NUL byte");
        if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
            if (pt_yaml_is_null(n)) return pt_buf_puts(b, "null");
            if (!strcmp(s, "true") || !strcmp(s, "false") || pt__json_number(s))
                return pt_buf_puts(b, s);
        }
        return pt_buf_puts(b, "\"") || pt_buf_json_escape(b, s, len) || pt_buf_puts(b, "\"");
    }
    if (n->type == YAML_SEQUENCE_NODE) {
        if (pt_buf_puts(b, "[")) return -1;
        for (size_t i = 0; i < pt_yaml_len(n); i++) {
            if ((i && pt_buf_puts(b, ",")) || pt__to_json(y, pt_yaml_item(y, n, i), b, depth + 1))
                return -1;
        }
        return pt_buf_puts(b, "]");
    }
    if (n->type == YAML_MAPPING_NODE) {
        if (pt_buf_puts(b, "{")) return -1;
        int first = 1;
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
             p++) {
            yaml_node_t *k = yaml_document_get_node(y->doc, p->key);
            yaml_node_t *v = yaml_document_get_node(y->doc, p->value);
            const char *ks = pt_yaml_scalar(k);
            if (!ks) return pt_yaml_fail(y, k, "scheduler: input keys must be strings");
            if ((!first && pt_buf_puts(b, ",")) || pt_buf_puts(b, "\"") ||
                pt_buf_json_escape(b, ks, k->data.scalar.length) || pt_buf_puts(b, "\":") ||
                pt__to_json(y, v, b, depth + 1))
                return -1;
            first = 0;
        }
        return pt_buf_puts(b, "}");
    }
    return pt_yaml_fail(y, n, "scheduler: input: unexpected node");
}

/* ---- a job ---- */

static int pt__name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > PT_SCHED_JOB_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int pt__job(const pt_yaml_t *y, yaml_node_t *n, size_t idx, pt_sched_job_cfg_t *j)
{
    static const char *const keys[] = {"name",    "service",        "every",   "cron",
                                       "at",      "input",          "timeout", "overlap",
                                       "enabled", "on_redis_error", NULL};
    char what[96], err[256];
    snprintf(what, sizeof what, "scheduler.jobs[%zu]", idx);
    j->line = (int)n->start_mark.line + 1;
    j->timeout_ms = PT_SCHED_DEFAULT_TIMEOUT_MS;
    j->enabled = 1;
    if (pt_yaml_check_keys(y, n, what, keys) != 0) return -1;
    yaml_node_t *v = pt_yaml_get(y, n, "name");
    if (!v) return pt_yaml_fail(y, n, "%s: name is required", what);
    if (pt_yaml_string(y, v, "name", &j->name) != 0) return -1;
    if (!pt__name_ok(j->name))
        return pt_yaml_fail(y, v, "%s: name must be 1 to %d of A-Z a-z 0-9 . _ -", what,
                            PT_SCHED_JOB_NAME_MAX);
    snprintf(what, sizeof what, "scheduler job '%s'", j->name);
    if (!(v = pt_yaml_get(y, n, "service")))
        return pt_yaml_fail(y, n, "%s: service is required", what);
    if (pt_yaml_string(y, v, "service", &j->service) != 0) return -1;
    if (!pt_route_valid_service_name(j->service, strlen(j->service)))
        return pt_yaml_fail(y, v, "%s: malformed service name '%s'", what, j->service);

    yaml_node_t *every = pt_yaml_get(y, n, "every"), *cron = pt_yaml_get(y, n, "cron"),
                *at = pt_yaml_get(y, n, "at");
    if (!!every + !!cron + !!at != 1)
        return pt_yaml_fail(y, n, "%s: give exactly one of every, cron and at", what);
    pt_buf_t spec = {0};
    if (every) {
        const char *s = pt_yaml_value(every);
        j->kind = PT_SCHED_EVERY;
        if (!s || pt_parse_duration_ms(s, &j->every_ms) != 0 ||
            j->every_ms < PT_SCHED_MIN_EVERY_MS || j->every_ms > 366ull * 86400000)
            return pt_yaml_fail(y, every,
                                "%s: every: expected a duration from 100ms to 366 days, such "
                                "as \"30s\" or \"5m\"",
                                what);
        pt_buf_printf(&spec, "every %s", s);
    } else if (cron) {
        const char *s = pt_yaml_value(cron);
        j->kind = PT_SCHED_CRON;
        if (!s) return pt_yaml_fail(y, cron, "%s: cron: expected a string", what);
        if (pt_cron_parse(s, &j->cron, err, sizeof err) != 0)
            return pt_yaml_fail(y, cron, "%s: cron \"%s\": %s", what, s, err);
        pt_buf_printf(&spec, "cron %s", s);
    } else {
        const char *s = pt_yaml_value(at);
        j->kind = PT_SCHED_AT;
        if (!s || pt_sched_parse_time(s, &j->at_ms) != 0)
            return pt_yaml_fail(y, at,
                                "%s: at: expected an RFC 3339 time such as "
                                "\"2026-12-24T18:00:00Z\"",
                                what);
        pt_buf_printf(&spec, "at %s", s);
    }
    if (!spec.data) return pt_yaml_fail(y, n, "out of memory");
    j->spec = spec.data;

    pt_buf_t in = {0};
    if ((v = pt_yaml_get(y, n, "input")) && !pt_yaml_is_null(v)) {
        if (v->type != YAML_MAPPING_NODE)
            return pt_yaml_fail(y, v, "%s: input: expected a mapping", what);
        if (pt__to_json(y, v, &in, 0) != 0) {
            pt_buf_free(&in);
            return -1;
        }
        if (in.len > PT_SCHED_MAX_INPUT) {
            pt_buf_free(&in);
            return pt_yaml_fail(y, v, "%s: input: more than %d bytes as JSON", what,
                                PT_SCHED_MAX_INPUT);
        }
    }
    if (pt_buf_append(&in, "", 1) != 0) return pt_yaml_fail(y, n, "out of memory");
    j->input_json = in.data;
    if ((v = pt_yaml_get(y, n, "timeout"))) {
        const char *s = pt_yaml_value(v);
        if (!s || pt_parse_duration_ms(s, &j->timeout_ms) != 0 || j->timeout_ms < 1 ||
            j->timeout_ms > 86400000)
            return pt_yaml_fail(y, v, "%s: timeout: expected a duration from 1ms to 24h", what);
    }
    if ((v = pt_yaml_get(y, n, "overlap")) && pt_yaml_bool(y, v, "overlap", &j->overlap) != 0)
        return -1;
    if ((v = pt_yaml_get(y, n, "enabled")) && pt_yaml_bool(y, v, "enabled", &j->enabled) != 0)
        return -1;
    if ((v = pt_yaml_get(y, n, "on_redis_error"))) {
        const char *s = pt_yaml_value(v);
        if (!s || (strcmp(s, "skip") != 0 && strcmp(s, "run") != 0))
            return pt_yaml_fail(y, v,
                                "%s: on_redis_error: expected skip (no node runs the tick) or "
                                "run (every node runs it)",
                                what);
        j->on_redis_error_run = strcmp(s, "run") == 0;
    }
    return 0;
}

int pt_config_scheduler_parse(const pt_yaml_t *y, yaml_node_t *n, pt_scheduler_cfg_t *out)
{
    static const char *const keys[] = {"jobs", "lease", NULL};
    out->lease_ms = PT_SCHED_DEFAULT_LEASE_MS;
    if (pt_yaml_is_null(n)) return 0;
    if (pt_yaml_check_keys(y, n, "scheduler", keys) != 0) return -1;
    yaml_node_t *v = pt_yaml_get(y, n, "lease");
    if (v) {
        const char *s = pt_yaml_value(v);
        if (!s || pt_parse_duration_ms(s, &out->lease_ms) != 0 || out->lease_ms < 1000 ||
            out->lease_ms > 3600000)
            return pt_yaml_fail(y, v, "scheduler.lease: expected a duration from 1s to 1h");
    }
    yaml_node_t *list = pt_yaml_get(y, n, "jobs");
    if (!list || pt_yaml_is_null(list)) return 0;
    if (list->type != YAML_SEQUENCE_NODE)
        return pt_yaml_fail(y, list, "scheduler.jobs: expected a list of jobs");
    size_t count = pt_yaml_len(list);
    if (count > PT_SCHED_MAX_JOBS)
        return pt_yaml_fail(y, list, "scheduler.jobs: more than %d jobs", PT_SCHED_MAX_JOBS);
    if (count == 0) return 0;
    if (!(out->jobs = calloc(count, sizeof *out->jobs)))
        return pt_yaml_fail(y, list, "out of memory");
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = pt_yaml_item(y, list, i);
        out->n_jobs = i + 1;
        if (pt__job(y, item, i, &out->jobs[i]) != 0) return -1;
        for (size_t k = 0; k < i; k++)
            if (strcmp(out->jobs[k].name, out->jobs[i].name) == 0)
                return pt_yaml_fail(y, item, "scheduler job '%s' is defined twice (line %d too)",
                                    out->jobs[i].name, out->jobs[k].line);
    }
    return 0;
}

void pt_config_scheduler_free(pt_scheduler_cfg_t *out)
{
    for (size_t i = 0; i < out->n_jobs; i++) {
        pt_sched_job_cfg_t *j = &out->jobs[i];
        free(j->name);
        free(j->service);
        free(j->spec);
        free(j->input_json);
    }
    free(out->jobs);
    out->jobs = NULL;
    out->n_jobs = 0;
}
