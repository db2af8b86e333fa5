/* pt_config_scheduler: the scheduler: section of the config, its jobs as
 * the snapshot keeps them (pt_scheduler runs them).
 *
 *   scheduler:
 *     jobs:
 *       - name: cleanup          # [A-Za-z0-9._-], 1..64, unique
 *         service: demo.cleanup  # must be loaded (checked by pt_server)
 *         every: 30s             # or cron: "0 2 * * *" (UTC, pt_cron.h)
 *                                # or at: "2026-12-24T18:00:00Z" (once)
 *         input: {max: 10}       # optional mapping, the service's payload
 *         timeout: 60s           # default 60s: the run is cancelled past it
 *         overlap: false         # default: a tick while a run goes on is skipped
 *         enabled: true          # default
 *         on_redis_error: skip   # cluster: skip (default) or run when Redis fails
 *     lease: 10s                 # cluster: how long a node's claim on a run holds
 *                                # without renewal (1s to 1h; pt_scheduler_lease.h) */
#ifndef PT_CONFIG_SCHEDULER_H
#define PT_CONFIG_SCHEDULER_H

#include "pt_cron.h"
#include "pt_yaml.h"

#include <stddef.h>
#include <stdint.h>

#define PT_SCHED_JOB_NAME_MAX 64
#define PT_SCHED_MAX_JOBS 256
#define PT_SCHED_MAX_INPUT (64 * 1024) /* bytes of the input's JSON */
#define PT_SCHED_MIN_EVERY_MS 100
#define PT_SCHED_DEFAULT_TIMEOUT_MS 60000
#define PT_SCHED_DEFAULT_LEASE_MS 10000

typedef enum { PT_SCHED_EVERY = 0, PT_SCHED_CRON, PT_SCHED_AT } pt_sched_kind_t;

typedef struct {
    char *name;
    char *service;
    pt_sched_kind_t kind;
    uint64_t every_ms; /* PT_SCHED_EVERY */
    pt_cron_t cron;    /* PT_SCHED_CRON */
    int64_t at_ms;     /* PT_SCHED_AT: UTC milliseconds since the epoch */
    char *spec;        /* the schedule as written ("every 30s", "cron 0 2 * * *", "at ...") */
    char *input_json;  /* the input as JSON text; "" when none */
    uint64_t timeout_ms;
    int overlap;
    int enabled;
    int on_redis_error_run; /* cluster: Redis failed: run the tick here (else skip it) */
    int line;
} pt_sched_job_cfg_t;

typedef struct {
    pt_sched_job_cfg_t *jobs;
    size_t n_jobs;
    uint64_t lease_ms; /* scheduler.lease (default 10s) */
} pt_scheduler_cfg_t;

/* Parses the scheduler: mapping n into *out (which must be zeroed). Returns
 * 0, or -1 with "file:line: message" written through y (what *out holds
 * then is freed by pt_config_scheduler_free). */
int pt_config_scheduler_parse(const pt_yaml_t *y, yaml_node_t *n, pt_scheduler_cfg_t *out);

/* Frees what out holds (not out). */
void pt_config_scheduler_free(pt_scheduler_cfg_t *out);

/* Parses an RFC 3339 UTC time "YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM|-HH:MM)"
 * into milliseconds since the epoch. Returns 0 or -1. */
int pt_sched_parse_time(const char *s, int64_t *ms);

#endif
