#include "pt_metrics_ratelimit.h"

uint64_t pt_metrics_rl_decisions[PT_METRICS_RL_RESULTS];
uint64_t pt_metrics_rl_redis_errors;
uint64_t pt_metrics_rl_outages;

static unsigned long long pt__load(const uint64_t *p)
{
    return (unsigned long long)__atomic_load_n(p, __ATOMIC_RELAXED);
}

void pt_metrics_ratelimit_render(pt_buf_t *out)
{
    static const char *const results[PT_METRICS_RL_RESULTS] = {
        [PT_METRICS_RL_ALLOWED] = "allowed",        [PT_METRICS_RL_LIMITED] = "limited",
        [PT_METRICS_RL_BATCH] = "allowed_batch",    [PT_METRICS_RL_LOCAL_OK] = "local_allowed",
        [PT_METRICS_RL_LOCAL_NO] = "local_limited", [PT_METRICS_RL_CLOSED] = "unavailable",
    };
    pt_buf_puts(out, "# HELP portico_ratelimit_cluster_decisions_total Cluster-scope rate "
                     "limit decisions, by how they were made (local_*: Redis unreachable, "
                     "fail_open; unavailable: fail_closed, 503).\n"
                     "# TYPE portico_ratelimit_cluster_decisions_total counter\n");
    for (int i = 0; i < PT_METRICS_RL_RESULTS; i++)
        pt_buf_printf(out, "portico_ratelimit_cluster_decisions_total{result=\"%s\"} %llu\n",
                      results[i], pt__load(&pt_metrics_rl_decisions[i]));
    pt_buf_printf(out,
                  "# HELP portico_ratelimit_redis_errors_total Cluster-scope rate limit "
                  "decisions whose Redis call failed (down, time-out, error reply).\n"
                  "# TYPE portico_ratelimit_redis_errors_total counter\n"
                  "portico_ratelimit_redis_errors_total %llu\n"
                  "# HELP portico_ratelimit_redis_outages_total Times the rate limits' Redis "
                  "became unreachable (each logged once).\n"
                  "# TYPE portico_ratelimit_redis_outages_total counter\n"
                  "portico_ratelimit_redis_outages_total %llu\n",
                  pt__load(&pt_metrics_rl_redis_errors), pt__load(&pt_metrics_rl_outages));
}
