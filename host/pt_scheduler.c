#include "pt_scheduler.h"
#include "pt_log.h"
#include "pt_lua.h"
#include "pt_queue.h"
#include "pt_scheduler_lease.h"

#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

typedef enum { PT__OK = 0, PT__ERROR, PT__TIMEOUT, PT__RESULTS } pt__result_t;
static const char *const pt__result_names[PT__RESULTS] = {"ok", "error", "timeout"};
/* the duration histogram's bounds, ms; the last is +Inf */
#define PT__BUCKETS 8
static const uint64_t pt__bucket_ms[PT__BUCKETS - 1] = {10,    100,    1000,   10000,
                                                        60000, 600000, 3600000};

typedef struct {
    uint64_t id;            /* unique in the process: a run's result finds its job by it */
    pt_sched_job_cfg_t cfg; /* a copy of its own (the snapshot may go) */
    int64_t next_ms;        /* -1: none */
    int64_t prev_due_ms;    /* 0: never due yet */
    int running;            /* runs in flight */
    int claiming;           /* cluster: claims of a tick waiting for Redis */
    int holds_run;          /* cluster: this node holds the job's run key */
    uint64_t elsewhere;     /* cluster: ticks another node ran */
    uint64_t redis_errors;  /* cluster: claims that failed (on_redis_error applied) */
    uint64_t runs[PT__RESULTS];
    uint64_t skipped;
    uint64_t duration_sum_ms;
    uint64_t buckets[8]; /* runs that took at most pt__bucket_ms[i] (cumulative at render) */
    int has_last;
    int64_t last_start_ms;
    uint64_t last_duration_ms;
    pt__result_t last_result;
    char last_error[256];
} pt__job_t;

/* One run: made on the main thread, run on a worker, back through s->results. */
typedef struct {
    pt_queue_node_t node;
    pt_scheduler_t *s;
    pt_worker_t *w;
    uint64_t job_id;
    char *job, *service, *input; /* copies */
    uint64_t timeout_ms;
    int64_t start_ms;
    uint64_t duration_ms;
    uint64_t run_id;
    uv_timer_t timer; /* the time-out, on the worker's loop */
    int timed_out;
    pt__result_t result;
    char error[256];
    char cid[25];
    pt_span_t *span; /* the run's span (a root: a job has no caller), NULL: not traced */
} pt__run_t;

struct pt_scheduler_s {
    uv_loop_t *loop;
    uv_timer_t timer;
    pt_queue_t results;
    int queue_started;
    pt_worker_t *workers;
    int n_workers;
    unsigned next_worker;
    uint64_t next_id;
    pt__job_t **jobs;
    size_t n_jobs;
    int stopped;
    pt_sched_lease_t *lease; /* cluster: section: ticks are claimed in Redis; NULL: none */
    uint64_t lease_ms;
    uv_timer_t renew_timer; /* renews the run keys this node holds */
};

/* A claim in flight: finds its job by id (a reload may remove it). */
typedef struct {
    pt_scheduler_t *s;
    uint64_t job_id;
    int hold_run;
    char job[PT_SCHED_JOB_NAME_MAX + 1];
} pt__claim_t;

static int64_t pt__now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

void pt_sched_format_time(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

int64_t pt_sched_next(const pt_sched_job_cfg_t *j, int64_t now_ms, int64_t prev_due_ms)
{
    switch (j->kind) {
    case PT_SCHED_EVERY: {
        int64_t every = (int64_t)j->every_ms;
        if (prev_due_ms <= 0) return now_ms + every;
        int64_t next = prev_due_ms + every;
        if (next <= now_ms) next += ((now_ms - next) / every + 1) * every;
        return next;
    }
    case PT_SCHED_CRON: {
        int64_t after = now_ms / 1000;
        if (prev_due_ms / 1000 > after) after = prev_due_ms / 1000;
        int64_t t = pt_cron_next(&j->cron, after);
        return t < 0 ? -1 : t * 1000;
    }
    case PT_SCHED_AT:
        return prev_due_ms <= 0 && j->at_ms > now_ms ? j->at_ms : -1;
    }
    return -1;
}

/* ---- jobs ---- */

static int pt__copy_cfg(pt_sched_job_cfg_t *dst, const pt_sched_job_cfg_t *src)
{
    *dst = *src;
    dst->name = strdup(src->name);
    dst->service = strdup(src->service);
    dst->spec = strdup(src->spec);
    dst->input_json = strdup(src->input_json);
    return dst->name && dst->service && dst->spec && dst->input_json ? 0 : -1;
}

static void pt__free_cfg(pt_sched_job_cfg_t *c)
{
    free(c->name);
    free(c->service);
    free(c->spec);
    free(c->input_json);
}

static void pt__job_free(pt__job_t *j)
{
    if (!j) return;
    pt__free_cfg(&j->cfg);
    free(j);
}

static pt__job_t *pt__find(pt_scheduler_t *s, uint64_t id)
{
    for (size_t i = 0; i < s->n_jobs; i++)
        if (s->jobs[i]->id == id) return s->jobs[i];
    return NULL;
}

static void pt__run_free(pt__run_t *r)
{
    free(r->job);
    free(r->service);
    free(r->input);
    free(r);
}

/* ---- on the worker ---- */

static void pt__post_back(pt__run_t *r)
{
    pt_queue_push(&r->s->results, &r->node); /* after the end: pt_scheduler_free takes it */
}

static void pt__on_timer_closed(uv_handle_t *h)
{
    pt__run_t *r = h->data;
    pt_worker_task_end(r->w);
    pt__post_back(r);
}

/* The message of an {"error": {"message": ...}} body, or the body's start. */
static void pt__error_text(pt__run_t *r, const pt_lua_result_t *res)
{
    json_t *doc = json_loadb(res->body, res->body_len, 0, NULL);
    const char *msg = json_string_value(json_object_get(json_object_get(doc, "error"), "message"));
    if (msg)
        snprintf(r->error, sizeof r->error, "%d: %s", res->status, msg);
    else
        snprintf(r->error, sizeof r->error, "%d: %.*s", res->status,
                 (int)(res->body_len > 200 ? 200 : res->body_len), res->body);
    json_decref(doc);
}

static void pt__on_run_done(void *ud, const pt_lua_result_t *res)
{
    pt__run_t *r = ud;
    r->duration_ms = (uint64_t)(pt__now_ms() - r->start_ms);
    r->run_id = 0;
    if (r->timed_out) {
        r->result = PT__TIMEOUT;
        snprintf(r->error, sizeof r->error, "timed out after %llu ms (cancelled)",
                 (unsigned long long)r->timeout_ms);
    } else if (res->status >= 400) {
        r->result = PT__ERROR;
        pt__error_text(r, res);
    } else {
        r->result = PT__OK;
    }
    if (r->span) {
        pt_span_int(r->span, "portico.status", res->status);
        if (r->result != PT__OK) pt_span_error(r->span, r->error);
        pt_span_end(r->span);
        r->span = NULL;
    }
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, pt__on_timer_closed);
}

static void pt__on_timeout(uv_timer_t *h)
{
    pt__run_t *r = h->data;
    r->timed_out = 1;
    pt_log_warn("scheduler: job '%s' ran past its timeout of %llu ms: cancelled", r->job,
                (unsigned long long)r->timeout_ms);
    pt_lua_cancel_run(r->w->lua, r->run_id);
}

/* On w's loop; on the joining thread once w ended (w->lua is NULL then). */
static void pt__run_on_worker(pt_worker_t *w, void *arg)
{
    pt__run_t *r = arg;
    r->w = w;
    r->result = PT__ERROR;
    if (!w->lua) { /* the process stops: nobody waits for the result */
        pt__run_free(r);
        return;
    }
    if (w->draining) {
        snprintf(r->error, sizeof r->error, "worker %d is stopping", w->id);
        pt__post_back(r);
        return;
    }
    if (!pt_lua_has_service(w->lua, r->service)) {
        snprintf(r->error, sizeof r->error, "service '%s' is not loaded", r->service);
        pt__post_back(r);
        return;
    }
    pt_worker_task_begin(w);
    uv_timer_init(&w->loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, pt__on_timeout, r->timeout_ms, 0);
    r->start_ms = pt__now_ms();
    pt_trace_ctx_t tc;
    if (pt_trace_enabled()) {
        pt_trace_begin(&tc, NULL, 0, NULL, 0);
        r->span = pt_span_new(&tc, PT_SPAN_INTERNAL, r->job, strlen(r->job));
        pt_span_str(r->span, "portico.job", r->job, strlen(r->job));
        pt_span_str(r->span, "portico.service", r->service, strlen(r->service));
        pt_span_str(r->span, "portico.cid", r->cid, strlen(r->cid));
    }
    pt_lua_call_t call = {
        .service = r->service,
        .cid = r->cid,
        .method = "POST",
        .path = "",
        .body = r->input[0] ? r->input : NULL,
        .body_len = strlen(r->input),
        .job = r->job,
        .run_id = &r->run_id,
        .trace = pt_trace_enabled() ? &tc : NULL,
    };
    if (pt_lua_dispatch(w->lua, &call, pt__on_run_done, r) != 0) {
        snprintf(r->error, sizeof r->error, "cannot start the service (out of memory)");
        pt_span_error(r->span, r->error);
        pt_span_end(r->span);
        r->span = NULL;
        uv_timer_stop(&r->timer);
        uv_close((uv_handle_t *)&r->timer, pt__on_timer_closed);
    }
}

/* ---- on the main thread ---- */

static void pt__arm(pt_scheduler_t *s);

static int pt__start_run(pt_scheduler_t *s, pt__job_t *j)
{
    if (s->n_workers <= 0) return -1;
    pt__run_t *r = calloc(1, sizeof *r);
    if (!r || !(r->job = strdup(j->cfg.name)) || !(r->service = strdup(j->cfg.service)) ||
        !(r->input = strdup(j->cfg.input_json)))
        goto oom;
    r->s = s;
    r->job_id = j->id;
    r->timeout_ms = j->cfg.timeout_ms;
    r->start_ms = pt__now_ms();
    pt_cid_new(r->cid);
    pt_worker_t *w = &s->workers[s->next_worker++ % (unsigned)s->n_workers];
    if (pt_worker_call(w, pt__run_on_worker, r) != 0) goto oom;
    j->running++;
    pt_log_debug("scheduler: job '%s' runs %s on worker %d (cid %s)", j->cfg.name, j->cfg.service,
                 w->id, r->cid);
    return 0;
oom:
    if (r) pt__run_free(r);
    pt_log_error("scheduler: out of memory: job '%s' skipped a tick", j->cfg.name);
    return -1;
}

/* ---- the cluster: one node runs each tick ---- */

static void pt__on_claim(void *arg, int verdict, const char *err)
{
    pt__claim_t *c = arg;
    pt_scheduler_t *s = c->s;
    pt__job_t *j = pt__find(s, c->job_id);
    int run = 0;
    if (j && j->claiming > 0) j->claiming--;
    if (s->stopped || !j) {
        /* the process stops, or a reload removed the job: nothing runs */
    } else if (verdict == PT_LEASE_RUN) {
        run = 1;
    } else if (verdict == PT_LEASE_ELSEWHERE) {
        j->elsewhere++;
    } else if (verdict == PT_LEASE_BUSY) {
        j->skipped++;
        pt_log_info("scheduler: job '%s' skipped a tick: its last run goes on on another node",
                    j->cfg.name);
    } else {
        j->redis_errors++;
        run = j->cfg.on_redis_error_run;
        pt_log_warn(
            "scheduler: job '%s': Redis failed (%s): the tick %s", j->cfg.name, err ? err : "?",
            run ? "runs on this node (on_redis_error: run)" : "is skipped (on_redis_error: skip)");
        if (!run) j->skipped++;
    }
    int held = verdict == PT_LEASE_RUN && c->hold_run;
    if (run && pt__start_run(s, j) == 0) {
        if (held) j->holds_run = 1;
    } else if (held && !s->stopped) {
        pt_sched_lease_release(s->lease, c->job);
    }
    free(c);
}

/* A claim that could not even be sent: the job's on_redis_error applies. */
static void pt__on_claim_failed(pt_scheduler_t *s, pt__job_t *j)
{
    j->redis_errors++;
    pt_log_warn("scheduler: job '%s': its tick could not be claimed in Redis: %s", j->cfg.name,
                j->cfg.on_redis_error_run ? "it runs on this node" : "skipped");
    if (!j->cfg.on_redis_error_run || pt__start_run(s, j) != 0) j->skipped++;
}

static void pt__on_renew(uv_timer_t *h)
{
    pt_scheduler_t *s = h->data;
    for (size_t i = 0; i < s->n_jobs; i++)
        if (s->jobs[i]->holds_run)
            pt_sched_lease_renew(s->lease, s->jobs[i]->cfg.name, s->lease_ms);
}

/* Asks Redis for job j's tick due (its run key too unless it may overlap). */
static void pt__claim(pt_scheduler_t *s, pt__job_t *j, int64_t due)
{
    pt__claim_t *c = calloc(1, sizeof *c);
    if (c) {
        c->s = s;
        c->job_id = j->id;
        c->hold_run = !j->cfg.overlap;
        snprintf(c->job, sizeof c->job, "%s", j->cfg.name);
        if (pt_sched_lease_claim(s->lease, j->cfg.name, due, s->lease_ms, c->hold_run, pt__on_claim,
                                 c) == 0) {
            j->claiming++;
            return;
        }
        free(c);
    }
    pt__on_claim_failed(s, j);
}

static void pt__on_tick(uv_timer_t *h)
{
    pt_scheduler_t *s = h->data;
    int64_t now = pt__now_ms();
    for (size_t i = 0; i < s->n_jobs; i++) {
        pt__job_t *j = s->jobs[i];
        if (!j->cfg.enabled || j->next_ms < 0 || j->next_ms > now + 1) continue;
        int64_t due = j->next_ms;
        if ((j->running > 0 || j->claiming > 0) && !j->cfg.overlap) {
            j->skipped++;
            pt_log_info("scheduler: job '%s' skipped a tick: its last run is still going",
                        j->cfg.name);
        } else if (s->lease) {
            pt__claim(s, j, due);
        } else {
            pt__start_run(s, j);
        }
        j->prev_due_ms = due;
        j->next_ms = pt_sched_next(&j->cfg, now > due ? now : due, due);
    }
    pt__arm(s);
}

static void pt__arm(pt_scheduler_t *s)
{
    if (s->stopped) return;
    int64_t first = -1;
    for (size_t i = 0; i < s->n_jobs; i++) {
        pt__job_t *j = s->jobs[i];
        if (j->cfg.enabled && j->next_ms >= 0 && (first < 0 || j->next_ms < first))
            first = j->next_ms;
    }
    uv_timer_stop(&s->timer);
    if (first < 0) return;
    int64_t delay = first - pt__now_ms();
    uv_timer_start(&s->timer, pt__on_tick, delay > 0 ? (uint64_t)delay : 0, 0);
}

static void pt__on_results(pt_queue_t *q)
{
    pt_scheduler_t *s = q->data;
    pt_queue_node_t *n = pt_queue_take(q, NULL);
    while (n) {
        pt__run_t *r = PT_QUEUE_ENTRY(n, pt__run_t, node);
        n = n->next;
        pt__job_t *j = pt__find(s, r->job_id);
        if (j) { /* else the job was removed by a reload meanwhile */
            if (j->running > 0) j->running--;
            if (j->holds_run && j->running == 0) {
                j->holds_run = 0;
                if (!s->stopped) pt_sched_lease_release(s->lease, j->cfg.name);
            }
            j->runs[r->result]++;
            j->duration_sum_ms += r->duration_ms;
            int b = 0;
            while (b < PT__BUCKETS - 1 && r->duration_ms > pt__bucket_ms[b])
                b++;
            j->buckets[b]++;
            j->has_last = 1;
            j->last_start_ms = r->start_ms;
            j->last_duration_ms = r->duration_ms;
            j->last_result = r->result;
            snprintf(j->last_error, sizeof j->last_error, "%s",
                     r->result == PT__OK ? "" : r->error);
            if (r->result != PT__OK)
                pt_log_warn("scheduler: job '%s' (cid %s): %s: %s", r->job, r->cid,
                            pt__result_names[r->result], r->error);
        }
        pt__run_free(r);
    }
}

/* The first due time of a job from now. In a cluster an `every` job's
 * ticks are multiples of every since the epoch, so every node computes the
 * same ones (and claims the same tick keys). */
static int64_t pt__first(const pt_scheduler_t *s, const pt_sched_job_cfg_t *c, int64_t now)
{
    if (s->lease && c->kind == PT_SCHED_EVERY) {
        int64_t every = (int64_t)c->every_ms;
        return (now / every + 1) * every;
    }
    return pt_sched_next(c, now, 0);
}

static pt__job_t *pt__job_new(pt_scheduler_t *s, const pt_sched_job_cfg_t *c, int64_t now)
{
    pt__job_t *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    if (pt__copy_cfg(&j->cfg, c) != 0) {
        pt__job_free(j);
        return NULL;
    }
    j->id = ++s->next_id;
    j->next_ms = pt__first(s, &j->cfg, now);
    return j;
}

void pt_scheduler_apply(pt_scheduler_t *s, const pt_config_t *cfg)
{
    if (!s) return;
    const pt_scheduler_cfg_t *sc = &cfg->scheduler;
    int64_t now = pt__now_ms();
    s->lease_ms = sc->lease_ms ? sc->lease_ms : PT_SCHED_DEFAULT_LEASE_MS;
    if (s->lease) {
        uint64_t every = s->lease_ms / 3 ? s->lease_ms / 3 : 1;
        uv_timer_start(&s->renew_timer, pt__on_renew, every, every);
    }
    pt__job_t **jobs = sc->n_jobs ? calloc(sc->n_jobs, sizeof *jobs) : NULL;
    if (sc->n_jobs && !jobs) {
        pt_log_error("scheduler: out of memory: the jobs stay as they were");
        return;
    }
    for (size_t i = 0; i < sc->n_jobs; i++) {
        const pt_sched_job_cfg_t *c = &sc->jobs[i];
        pt__job_t *old = NULL;
        for (size_t k = 0; k < s->n_jobs; k++)
            if (s->jobs[k] && strcmp(s->jobs[k]->cfg.name, c->name) == 0) {
                old = s->jobs[k];
                s->jobs[k] = NULL; /* taken over */
                break;
            }
        if (old) {
            pt_sched_job_cfg_t fresh;
            if (pt__copy_cfg(&fresh, c) != 0) {
                pt__free_cfg(&fresh);
                jobs[i] = old; /* keeps its old config */
                continue;
            }
            /* a schedule changed, or a job enabled again, starts from now */
            int same = strcmp(old->cfg.spec, c->spec) == 0 && (old->cfg.enabled || !c->enabled);
            pt__free_cfg(&old->cfg);
            old->cfg = fresh;
            if (!same) {
                old->prev_due_ms = 0;
                old->next_ms = pt__first(s, &old->cfg, now);
            }
            jobs[i] = old;
        } else if (!(jobs[i] = pt__job_new(s, c, now))) {
            pt_log_error("scheduler: out of memory: job '%s' does not start", c->name);
        }
    }
    for (size_t k = 0; k < s->n_jobs; k++)
        if (s->jobs[k]) {
            pt_log_info("scheduler: job '%s' removed", s->jobs[k]->cfg.name);
            pt__job_free(s->jobs[k]);
        }
    free(s->jobs);
    /* jobs that could not be made leave holes: close them up */
    size_t n = 0;
    for (size_t i = 0; i < sc->n_jobs; i++)
        if (jobs[i]) jobs[n++] = jobs[i];
    s->jobs = jobs;
    s->n_jobs = n;
    pt__arm(s);
}

pt_scheduler_t *pt_scheduler_start(uv_loop_t *loop, const pt_config_t *cfg, pt_worker_t *workers,
                                   int n_workers)
{
    pt_scheduler_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->loop = loop;
    s->workers = workers;
    s->n_workers = n_workers;
    if (pt_queue_init(&s->results) != 0) {
        free(s);
        return NULL;
    }
    if (pt_queue_start_loop(&s->results, loop, pt__on_results, s) != 0) {
        pt_queue_destroy(&s->results);
        free(s);
        return NULL;
    }
    s->queue_started = 1;
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    uv_timer_init(loop, &s->renew_timer);
    s->renew_timer.data = s;
    if (cfg->cluster.on && !(s->lease = pt_sched_lease_new(loop, &cfg->cluster)))
        pt_log_error("scheduler: out of memory: the jobs run on this node only");
    pt_scheduler_apply(s, cfg);
    if (s->n_jobs) pt_log_info("scheduler: %zu jobs", s->n_jobs);
    return s;
}

void pt_scheduler_stop(pt_scheduler_t *s)
{
    if (!s) return;
    s->stopped = 1;
    uv_timer_stop(&s->timer);
    uv_timer_stop(&s->renew_timer);
}

void pt_scheduler_close(pt_scheduler_t *s)
{
    if (!s) return;
    pt_scheduler_stop(s);
    if (!uv_is_closing((uv_handle_t *)&s->timer)) uv_close((uv_handle_t *)&s->timer, NULL);
    if (!uv_is_closing((uv_handle_t *)&s->renew_timer))
        uv_close((uv_handle_t *)&s->renew_timer, NULL);
    /* the run keys this node holds expire within a lease; claims in flight end now */
    pt_sched_lease_free(s->lease);
    s->lease = NULL;
    pt_queue_end(&s->results);
}

void pt_scheduler_free(pt_scheduler_t *s)
{
    if (!s) return;
    pt_queue_node_t *n = pt_queue_take(&s->results, NULL);
    while (n) {
        pt__run_t *r = PT_QUEUE_ENTRY(n, pt__run_t, node);
        n = n->next;
        pt__run_free(r);
    }
    pt_queue_destroy(&s->results);
    for (size_t i = 0; i < s->n_jobs; i++)
        pt__job_free(s->jobs[i]);
    free(s->jobs);
    free(s);
}

/* ---- what the admin listener shows ---- */

static void pt__json_str(pt_buf_t *b, const char *s)
{
    pt_buf_puts(b, "\"");
    pt_buf_json_escape(b, s, strlen(s));
    pt_buf_puts(b, "\"");
}

void pt_scheduler_json(pt_scheduler_t *s, pt_buf_t *out)
{
    char t[32];
    pt_buf_puts(out, "{\"jobs\":[");
    for (size_t i = 0; s && i < s->n_jobs; i++) {
        const pt__job_t *j = s->jobs[i];
        if (i) pt_buf_puts(out, ",");
        pt_buf_puts(out, "{\"name\":");
        pt__json_str(out, j->cfg.name);
        pt_buf_puts(out, ",\"service\":");
        pt__json_str(out, j->cfg.service);
        pt_buf_puts(out, ",\"schedule\":");
        pt__json_str(out, j->cfg.spec);
        pt_buf_printf(out, ",\"enabled\":%s,\"overlap\":%s,\"timeout_ms\":%llu,\"running\":%d",
                      j->cfg.enabled ? "true" : "false", j->cfg.overlap ? "true" : "false",
                      (unsigned long long)j->cfg.timeout_ms, j->running);
        if (j->cfg.enabled && j->next_ms >= 0) {
            pt_sched_format_time(j->next_ms, t);
            pt_buf_printf(out, ",\"next_run\":\"%s\"", t);
        } else {
            pt_buf_puts(out, ",\"next_run\":null");
        }
        if (j->has_last) {
            pt_sched_format_time(j->last_start_ms, t);
            pt_buf_printf(
                out, ",\"last_run\":{\"started\":\"%s\",\"duration_ms\":%llu,\"result\":\"%s\"", t,
                (unsigned long long)j->last_duration_ms, pt__result_names[j->last_result]);
            if (j->last_error[0]) {
                pt_buf_puts(out, ",\"error\":");
                pt__json_str(out, j->last_error);
            } else {
                pt_buf_puts(out, ",\"error\":null");
            }
            pt_buf_puts(out, "}");
        } else {
            pt_buf_puts(out, ",\"last_run\":null");
        }
        if (s->lease)
            pt_buf_printf(out, ",\"cluster\":{\"elsewhere\":%llu,\"redis_errors\":%llu}",
                          (unsigned long long)j->elsewhere, (unsigned long long)j->redis_errors);
        pt_buf_printf(out,
                      ",\"runs\":{\"ok\":%llu,\"error\":%llu,\"timeout\":%llu},\"skipped\":%llu}",
                      (unsigned long long)j->runs[PT__OK], (unsigned long long)j->runs[PT__ERROR],
                      (unsigned long long)j->runs[PT__TIMEOUT], (unsigned long long)j->skipped);
    }
    pt_buf_puts(out, "]}");
}

void pt_scheduler_metrics(pt_scheduler_t *s, pt_buf_t *out)
{
    if (!s || !s->n_jobs) return;
    /* job names are [A-Za-z0-9._-]: nothing to escape in a label */
    pt_buf_puts(out, "# HELP portico_scheduler_runs_total Scheduler runs by job and result.\n"
                     "# TYPE portico_scheduler_runs_total counter\n");
    for (size_t i = 0; i < s->n_jobs; i++)
        for (int r = 0; r < PT__RESULTS; r++)
            pt_buf_printf(out, "portico_scheduler_runs_total{job=\"%s\",result=\"%s\"} %llu\n",
                          s->jobs[i]->cfg.name, pt__result_names[r],
                          (unsigned long long)s->jobs[i]->runs[r]);
    pt_buf_puts(out, "# HELP portico_scheduler_skipped_total Ticks skipped because the job's last "
                     "run was still going.\n# TYPE portico_scheduler_skipped_total counter\n");
    for (size_t i = 0; i < s->n_jobs; i++)
        pt_buf_printf(out, "portico_scheduler_skipped_total{job=\"%s\"} %llu\n",
                      s->jobs[i]->cfg.name, (unsigned long long)s->jobs[i]->skipped);
    pt_buf_puts(out, "# HELP portico_scheduler_run_duration_seconds Time scheduler runs took.\n"
                     "# TYPE portico_scheduler_run_duration_seconds histogram\n");
    for (size_t i = 0; i < s->n_jobs; i++) {
        const pt__job_t *j = s->jobs[i];
        uint64_t cum = 0;
        for (int b = 0; b < PT__BUCKETS; b++) {
            cum += j->buckets[b];
            if (b < PT__BUCKETS - 1)
                pt_buf_printf(
                    out,
                    "portico_scheduler_run_duration_seconds_bucket{job=\"%s\",le=\"%g\"} %llu\n",
                    j->cfg.name, (double)pt__bucket_ms[b] / 1000.0, (unsigned long long)cum);
            else
                pt_buf_printf(
                    out,
                    "portico_scheduler_run_duration_seconds_bucket{job=\"%s\",le=\"+Inf\"} %llu\n",
                    j->cfg.name, (unsigned long long)cum);
        }
        pt_buf_printf(out,
                      "portico_scheduler_run_duration_seconds_sum{job=\"%s\"} %.3f\n"
                      "portico_scheduler_run_duration_seconds_count{job=\"%s\"} %llu\n",
                      j->cfg.name, (double)j->duration_sum_ms / 1000.0, j->cfg.name,
                      (unsigned long long)cum);
    }
    if (s->lease) {
        pt_buf_puts(out, "# HELP portico_scheduler_elsewhere_total Ticks another node of the "
                         "cluster ran.\n# TYPE portico_scheduler_elsewhere_total counter\n");
        for (size_t i = 0; i < s->n_jobs; i++)
            pt_buf_printf(out, "portico_scheduler_elsewhere_total{job=\"%s\"} %llu\n",
                          s->jobs[i]->cfg.name, (unsigned long long)s->jobs[i]->elsewhere);
        pt_buf_puts(out, "# HELP portico_scheduler_redis_errors_total Ticks whose claim in Redis "
                         "failed (on_redis_error applied).\n"
                         "# TYPE portico_scheduler_redis_errors_total counter\n");
        for (size_t i = 0; i < s->n_jobs; i++)
            pt_buf_printf(out, "portico_scheduler_redis_errors_total{job=\"%s\"} %llu\n",
                          s->jobs[i]->cfg.name, (unsigned long long)s->jobs[i]->redis_errors);
    }
    pt_buf_puts(out, "# HELP portico_scheduler_running Scheduler runs in flight by job.\n"
                     "# TYPE portico_scheduler_running gauge\n");
    for (size_t i = 0; i < s->n_jobs; i++)
        pt_buf_printf(out, "portico_scheduler_running{job=\"%s\"} %d\n", s->jobs[i]->cfg.name,
                      s->jobs[i]->running);
}
