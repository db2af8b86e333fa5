/* pt_metrics_json: the figures of /metrics as JSON for the admin console
 * (GET /console/api/stats): the same per-worker counters and histograms,
 * read the same way (acquire load of the series count, relaxed loads of the
 * counters), summed over workers by key. The page takes two of them and
 * computes rates and quantiles from the differences. */
#ifndef PT_METRICS_JSON_H
#define PT_METRICS_JSON_H

#include "pt_metrics.h"

/* Appends {"time_ms", "bounds_us":[...], "requests":[{channel, service,
 * status, count, sum_us, buckets:[...]}], "targets":[{upstream, target, ok,
 * count, sum_us, buckets}], "amqp":[{kind, name, up, published, confirmed,
 * failed, delivered, reconnects}], "in_flight", "connections_open",
 * "websockets_open", "ws_slow_consumers"} to out. */
void pt_metrics_json(pt_metrics_t *const *workers, size_t n, uint64_t time_ms, pt_buf_t *out);

#endif
