/* pt_scheduler: the jobs of scheduler: (pt_config_scheduler.h), run once per
 * tick for the whole process. The scheduler lives on the main thread: one
 * timer on its loop for the earliest due job; a due job's run goes to one
 * worker (round-robin) through pt_worker_call, where it runs the service
 * like an internal call (no HTTP; channel type "scheduler", named after the
 * job, no security) and comes back through the scheduler's own queue.
 *
 * A job never overlaps itself unless overlap: true: a tick while its last
 * run goes on is skipped and counted. A run past its timeout is cancelled
 * through the yield protocol (pt_lua_cancel_run: its wait ends "cancelled",
 * no later wait starts) and counted as a timeout. A reload keeps the state
 * (counts, last run, next run) of a job it keeps under the same name and
 * schedule; one whose schedule changed starts its schedule again; removed
 * jobs stop (a run in flight finishes, and its result is dropped). Every
 * function here runs on the main thread. */
#ifndef PT_SCHEDULER_H
#define PT_SCHEDULER_H

#include "pt_config.h"
#include "pt_util.h"
#include "pt_worker.h"

#include <stdint.h>
#include <uv.h>

typedef struct pt_scheduler_s pt_scheduler_t;

/* The next due time of job j (UTC milliseconds) after now_ms, or -1 for
 * none. prev_due_ms: its previous due time (0: none yet). every: the first
 * tick is now + every, later ones keep the cadence of prev_due (ticks
 * missed meanwhile are not caught up); cron: the first matching minute
 * after now; at: the time itself while it is still ahead and the job has
 * not been due yet, else none. Pure: for the unit tests too. */
int64_t pt_sched_next(const pt_sched_job_cfg_t *j, int64_t now_ms, int64_t prev_due_ms);

/* Writes ms (UTC milliseconds since the epoch) as "YYYY-MM-DDTHH:MM:SS.mmmZ". */
void pt_sched_format_time(int64_t ms, char out[32]);

/* Starts the jobs of cfg on loop, running them on workers[0..n). Returns
 * NULL when out of memory. */
pt_scheduler_t *pt_scheduler_start(uv_loop_t *loop, const pt_config_t *cfg, pt_worker_t *workers,
                                   int n_workers);

/* A reload was accepted: the jobs become cfg's (see the top). */
void pt_scheduler_apply(pt_scheduler_t *s, const pt_config_t *cfg);

/* The process stops: no tick from now on (runs in flight may still end). */
void pt_scheduler_stop(pt_scheduler_t *s);

/* Closes the scheduler's handles (before the loop's last run); then, once
 * that run is over and the workers are joined, pt_scheduler_free frees the
 * rest, results that came too late included. NULL is fine for both. */
void pt_scheduler_close(pt_scheduler_t *s);
void pt_scheduler_free(pt_scheduler_t *s);

/* Appends the JSON of every job (admin GET /scheduler):
 * {"jobs":[{"name","service","schedule","enabled","overlap","timeout_ms",
 *   "running","next_run","last_run":{"started","duration_ms","result",
 *   "error"}|null,"runs":{"ok","error","timeout"},"skipped"}]} */
void pt_scheduler_json(pt_scheduler_t *s, pt_buf_t *out);

/* Appends the Prometheus text of the jobs' figures: runs by job and result,
 * skipped overlaps, run durations (a sum and a count). */
void pt_scheduler_metrics(pt_scheduler_t *s, pt_buf_t *out);

#endif
