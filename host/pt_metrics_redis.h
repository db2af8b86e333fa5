/* pt_metrics_redis: the figures of the cluster's Redis connections
 * (pt_redis), process-wide atomics that any loop thread bumps and the scrape
 * reads. Rendered (by pt_metrics_render) only once a Redis client was made,
 * so a node without cluster: shows none of them.
 *
 *   portico_redis_commands_total            commands sent
 *   portico_redis_failures_total{reason}    down (refused at once: not connected),
 *                                           timeout (no reply in cluster.timeout),
 *                                           lost (pending when the connection broke),
 *                                           connect (a connect attempt failed),
 *                                           auth (AUTH or SELECT refused),
 *                                           protocol (a reply that did not parse)
 *   portico_redis_roundtrip_seconds         histogram: command sent to reply read
 *   portico_redis_up                        connections up now (workers + main loop) */
#ifndef PT_METRICS_REDIS_H
#define PT_METRICS_REDIS_H

#include "pt_util.h"

#include <stdint.h>

enum {
    PT_METRICS_REDIS_DOWN = 0,
    PT_METRICS_REDIS_TIMEOUT,
    PT_METRICS_REDIS_LOST,
    PT_METRICS_REDIS_CONNECT,
    PT_METRICS_REDIS_AUTH,
    PT_METRICS_REDIS_PROTOCOL,
    PT_METRICS_REDIS_REASONS
};

/* A Redis client exists: the figures are rendered from now on. */
void pt_metrics_redis_enable(void);

void pt_metrics_redis_command(void);
void pt_metrics_redis_fail(int reason);
/* One reply read ns nanoseconds after its command was queued. */
void pt_metrics_redis_roundtrip(uint64_t ns);
void pt_metrics_redis_up(int delta);

/* Appends the Prometheus text of the figures to out (nothing before
 * pt_metrics_redis_enable). */
void pt_metrics_redis_render(pt_buf_t *out);

#endif
