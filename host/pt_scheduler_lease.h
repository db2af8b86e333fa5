/* pt_scheduler_lease: once-per-tick jobs across the nodes of a cluster
 * (docs/cluster-scheduler.md), under leases in the cluster's Redis. Every
 * node's scheduler computes the same due times (an `every` job's ticks are
 * aligned to the epoch, cron and at are absolute), and at each one asks
 * Redis, in one script:
 *
 *   SET <prefix>job:<name>:<due_ms> <me> NX PX <lease>   the tick: one node wins it
 *   SET <prefix>job:<name>:run <me> NX PX <lease>        overlap: false only: no run
 *                                                        of the job goes on anywhere
 *
 * The winner of both runs the tick; the others count it as run elsewhere
 * (or, when the run key is held, as skipped). The holder of a run key
 * renews it while its run goes on (pt_sched_lease_renew, every third of a
 * lease) and deletes it when the run ends; a node that dies stops renewing,
 * so its run key expires within one lease and the next tick runs on
 * another node. <me> is the node name and a random instance id, so only
 * the holder renews or deletes. Main thread only, on the main loop's
 * pt_redis connection (pt_redis_main). */
#ifndef PT_SCHEDULER_LEASE_H
#define PT_SCHEDULER_LEASE_H

#include "pt_config.h"

#include <stdint.h>
#include <uv.h>

typedef struct pt_sched_lease_s pt_sched_lease_t;

/* What a claim found. */
enum {
    PT_LEASE_RUN = 0,   /* this node won the tick (and the run key): run it */
    PT_LEASE_ELSEWHERE, /* another node won the tick */
    PT_LEASE_BUSY,      /* the tick is this node's but a run goes on elsewhere: skip it */
    PT_LEASE_ERROR      /* Redis failed (err says why): the job's on_redis_error applies */
};

typedef void (*pt_sched_lease_cb)(void *arg, int verdict, const char *err);

/* A lease client on loop for the cluster cc: on pt_redis_main's
 * connection, or one of its own when there is none. NULL when out of
 * memory. */
pt_sched_lease_t *pt_sched_lease_new(uv_loop_t *loop, const pt_cluster_cfg_t *cc);

/* Claims job's tick due_ms (and its run key when hold_run) for lease_ms.
 * cb(arg, verdict, err) is called exactly once, later, on the loop (also
 * when the client is freed first: PT_LEASE_ERROR). Returns 0, or -1 (out
 * of memory, or the command could not be queued: cb is not called). */
int pt_sched_lease_claim(pt_sched_lease_t *l, const char *job, int64_t due_ms, uint64_t lease_ms,
                         int hold_run, pt_sched_lease_cb cb, void *arg);

/* Extends job's run key by lease_ms if this node holds it (a failure only
 * logs: the next renewal tries again). */
void pt_sched_lease_renew(pt_sched_lease_t *l, const char *job, uint64_t lease_ms);

/* Deletes job's run key if this node holds it. */
void pt_sched_lease_release(pt_sched_lease_t *l, const char *job);

/* Frees the client (its own connection: claims still waiting get
 * PT_LEASE_ERROR first; on the main one they get it when that one is
 * freed). NULL is fine. */
void pt_sched_lease_free(pt_sched_lease_t *l);

#endif
