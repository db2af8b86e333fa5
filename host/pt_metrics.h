/* pt_metrics: per-worker counters with no locks, summed on scrape.
 *
 * Each worker writes only its own pt_metrics_t. Series (one per channel,
 * service and status) live in a fixed array that only grows: a new series is
 * filled in, then published by a release store of the count, so the scraper
 * on the main thread (acquire load) never sees a half-made one. Every counter
 * is a relaxed atomic, written by one thread and read by another. */
#ifndef PT_METRICS_H
#define PT_METRICS_H

#include "pt_util.h"

#include <stddef.h>
#include <stdint.h>

#define PT_METRICS_MAX_SERIES 1024
#define PT_METRICS_BUCKETS 14
#define PT_METRICS_NAME_MAX 128

typedef struct {
    char channel[PT_METRICS_NAME_MAX + 1];
    char service[PT_METRICS_NAME_MAX + 1];
    int status;
    uint64_t count;
    uint64_t sum_us;
    uint64_t buckets[PT_METRICS_BUCKETS]; /* not cumulative; summed on render */
} pt_metrics_series_t;

/* A table of series keyed by two names and a status. */
typedef struct {
    pt_metrics_series_t *series;
    size_t n_series; /* published with release */
    int32_t *index;  /* worker-private hash: slot -> series + 1 */
} pt_metrics_table_t;

typedef struct {
    pt_metrics_table_t requests; /* channel, service, status */
    pt_metrics_table_t targets;  /* upstream, target, 1 ok / 0 failed */
    uint64_t dropped;            /* observations past PT_METRICS_MAX_SERIES */
    /* gauges and counters of the worker */
    uint64_t in_flight;
    uint64_t connections_open;
    uint64_t connections_total;
    uint64_t websockets_open;
} pt_metrics_t;

/* Allocates the series table; returns 0 or -1. */
int pt_metrics_init(pt_metrics_t *m);
void pt_metrics_free(pt_metrics_t *m);

/* Counts one answered request (worker thread only). NULL names count as "". */
void pt_metrics_observe(pt_metrics_t *m, const char *channel, const char *service, int status,
                        uint64_t duration_us);

/* Counts one exchange with an upstream's target (worker thread only). */
void pt_metrics_target(pt_metrics_t *m, const char *upstream, const char *target, int ok,
                       uint64_t duration_us);

/* Adds delta to a gauge or counter of m (worker thread only). */
static inline void pt_metrics_add(uint64_t *counter, int64_t delta)
{
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + (uint64_t)delta,
                     __ATOMIC_RELAXED);
}

/* Process-wide figures kept by the main thread. */
typedef struct {
    uint64_t reloads;
    uint64_t reload_failures;
    uint64_t generation;
    int workers;
} pt_metrics_process_t;

/* Appends the Prometheus text exposition of all workers' metrics and the
 * process figures to out. Safe on the main thread while workers run. */
void pt_metrics_render(pt_metrics_t *const *workers, size_t n, const pt_metrics_process_t *proc,
                       pt_buf_t *out);

#endif
