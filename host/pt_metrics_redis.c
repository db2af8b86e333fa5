#include "pt_metrics_redis.h"

#define PT__BUCKETS 13

/* seconds: from a tenth of a millisecond (loopback) to a second (the default timeout) */
static const double pt__bounds[PT__BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                               0.025,  0.05,    0.1,    0.25,  0.5,    1.0};
static int pt__enabled;
static uint64_t pt__commands, pt__failures[PT_METRICS_REDIS_REASONS];
static uint64_t pt__buckets[PT__BUCKETS + 1], pt__sum_ns, pt__count;
static int64_t pt__up;

void pt_metrics_redis_enable(void)
{
    __atomic_store_n(&pt__enabled, 1, __ATOMIC_RELAXED);
}

void pt_metrics_redis_command(void)
{
    __atomic_fetch_add(&pt__commands, 1, __ATOMIC_RELAXED);
}

void pt_metrics_redis_fail(int reason)
{
    if (reason >= 0 && reason < PT_METRICS_REDIS_REASONS)
        __atomic_fetch_add(&pt__failures[reason], 1, __ATOMIC_RELAXED);
}

void pt_metrics_redis_roundtrip(uint64_t ns)
{
    double s = (double)ns / 1e9;
    int i = 0;
    while (i < PT__BUCKETS && s > pt__bounds[i])
        i++;
    __atomic_fetch_add(&pt__buckets[i], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&pt__sum_ns, ns, __ATOMIC_RELAXED);
    __atomic_fetch_add(&pt__count, 1, __ATOMIC_RELAXED);
}

void pt_metrics_redis_up(int delta)
{
    __atomic_fetch_add(&pt__up, delta, __ATOMIC_RELAXED);
}

static unsigned long long pt__get(const uint64_t *p)
{
    return (unsigned long long)__atomic_load_n(p, __ATOMIC_RELAXED);
}

void pt_metrics_redis_render(pt_buf_t *out)
{
    static const char *const reasons[PT_METRICS_REDIS_REASONS] = {"down",    "timeout", "lost",
                                                                  "connect", "auth",    "protocol"};
    if (!__atomic_load_n(&pt__enabled, __ATOMIC_RELAXED)) return;
    pt_buf_printf(out,
                  "# HELP portico_redis_commands_total Commands sent to the cluster's Redis.\n"
                  "# TYPE portico_redis_commands_total counter\n"
                  "portico_redis_commands_total %llu\n",
                  pt__get(&pt__commands));
    pt_buf_printf(out, "# HELP portico_redis_failures_total Redis commands and connects that "
                       "failed, by reason.\n# TYPE portico_redis_failures_total counter\n");
    for (int r = 0; r < PT_METRICS_REDIS_REASONS; r++)
        pt_buf_printf(out, "portico_redis_failures_total{reason=\"%s\"} %llu\n", reasons[r],
                      pt__get(&pt__failures[r]));
    pt_buf_printf(out, "# HELP portico_redis_roundtrip_seconds From a Redis command queued to "
                       "its reply read.\n# TYPE portico_redis_roundtrip_seconds histogram\n");
    unsigned long long cum = 0;
    for (int i = 0; i < PT__BUCKETS; i++) {
        cum += pt__get(&pt__buckets[i]);
        pt_buf_printf(out, "portico_redis_roundtrip_seconds_bucket{le=\"%g\"} %llu\n",
                      pt__bounds[i], cum);
    }
    cum += pt__get(&pt__buckets[PT__BUCKETS]);
    pt_buf_printf(out,
                  "portico_redis_roundtrip_seconds_bucket{le=\"+Inf\"} %llu\n"
                  "portico_redis_roundtrip_seconds_sum %.6f\n"
                  "portico_redis_roundtrip_seconds_count %llu\n",
                  cum, (double)pt__get(&pt__sum_ns) / 1e9, pt__get(&pt__count));
    pt_buf_printf(out,
                  "# HELP portico_redis_up Connections to the cluster's Redis up now.\n"
                  "# TYPE portico_redis_up gauge\nportico_redis_up %lld\n",
                  (long long)__atomic_load_n(&pt__up, __ATOMIC_RELAXED));
}
