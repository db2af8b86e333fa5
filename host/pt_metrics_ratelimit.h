/* pt_metrics_ratelimit: the counters of cluster-scope rate limits
 * (pt_ratelimit_cluster), process-wide relaxed atomics that any worker adds
 * to with pt_metrics_inc and the scrape reads. */
#ifndef PT_METRICS_RATELIMIT_H
#define PT_METRICS_RATELIMIT_H

#include "pt_util.h"

#include <stdint.h>

/* How each cluster-scope decision was made. */
enum {
    PT_METRICS_RL_ALLOWED = 0, /* Redis let it through */
    PT_METRICS_RL_LIMITED,     /* Redis refused it (429) */
    PT_METRICS_RL_BATCH,       /* let through from the node's batch (batch: N) */
    PT_METRICS_RL_LOCAL_OK,    /* Redis unreachable, fail_open: the local limit let it through */
    PT_METRICS_RL_LOCAL_NO,    /* ... fail_open: the local limit refused it (429) */
    PT_METRICS_RL_CLOSED,      /* ... fail_closed: answered 503 */
    PT_METRICS_RL_RESULTS
};
extern uint64_t pt_metrics_rl_decisions[PT_METRICS_RL_RESULTS];
/* Decisions whose Redis call failed (down, time-out, an error reply). */
extern uint64_t pt_metrics_rl_redis_errors;
/* Outages: a failed call after a good one (or the first call failing). */
extern uint64_t pt_metrics_rl_outages;

/* Appends the counters to a /metrics page (Prometheus text). */
void pt_metrics_ratelimit_render(pt_buf_t *out);

#endif
