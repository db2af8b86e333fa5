#include "pt_metrics.h"
#include "pt_metrics_ratelimit.h"
#include "pt_metrics_redis.h"
#include "pt_trace.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PT__MAX_TARGET_SERIES 256

/* Upper bounds of the latency buckets, in microseconds. */
static const uint64_t pt__bounds_us[PT_METRICS_BUCKETS] = {
    500,    1000,   2500,   5000,    10000,   25000,   50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};
static const char *const pt__bounds_text[PT_METRICS_BUCKETS] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1",    "0.25",  "0.5",    "1",     "2.5",  "5",     "10"};

static int pt__table_init(pt_metrics_table_t *t, size_t max)
{
    t->series = calloc(max, sizeof *t->series);
    t->index = calloc(max * 2, sizeof *t->index);
    return t->series && t->index ? 0 : -1;
}

static void pt__table_free(pt_metrics_table_t *t)
{
    free(t->series);
    free(t->index);
    t->series = NULL;
    t->index = NULL;
}

int pt_metrics_init(pt_metrics_t *m)
{
    memset(m, 0, sizeof *m);
    if (pt__table_init(&m->requests, PT_METRICS_MAX_SERIES) != 0 ||
        pt__table_init(&m->targets, PT__MAX_TARGET_SERIES) != 0) {
        pt_metrics_free(m);
        return -1;
    }
    return 0;
}

void pt_metrics_free(pt_metrics_t *m)
{
    pt__table_free(&m->requests);
    pt__table_free(&m->targets);
}

static uint32_t pt__hash(const char *a, const char *b, int status)
{
    uint32_t h = 2166136261u;
    for (; *a; a++)
        h = (h ^ (uint8_t)*a) * 16777619u;
    h = (h ^ 0xff) * 16777619u;
    for (; *b; b++)
        h = (h ^ (uint8_t)*b) * 16777619u;
    return (h ^ (uint32_t)status) * 16777619u;
}

static void pt__observe(pt_metrics_t *m, pt_metrics_table_t *t, size_t max, const char *channel,
                        const char *service, int status, uint64_t duration_us)
{
    channel = channel ? channel : "";
    service = service ? service : "";
    size_t slots = max * 2;
    uint32_t slot = pt__hash(channel, service, status) % slots;
    pt_metrics_series_t *s = NULL;
    for (;;) {
        int32_t i = t->index[slot];
        if (i == 0) break;
        pt_metrics_series_t *c = &t->series[i - 1];
        if (c->status == status && strcmp(c->service, service) == 0 &&
            strcmp(c->channel, channel) == 0) {
            s = c;
            break;
        }
        slot = (slot + 1) % slots;
    }
    if (!s) {
        size_t n = t->n_series;
        if (n == max) {
            pt_metrics_add(&m->dropped, 1);
            return;
        }
        s = &t->series[n];
        snprintf(s->channel, sizeof s->channel, "%s", channel);
        snprintf(s->service, sizeof s->service, "%s", service);
        s->status = status;
        t->index[slot] = (int32_t)n + 1;
        __atomic_store_n(&t->n_series, n + 1, __ATOMIC_RELEASE);
    }
    int b = 0;
    while (b < PT_METRICS_BUCKETS && duration_us > pt__bounds_us[b])
        b++;
    pt_metrics_add(&s->count, 1);
    pt_metrics_add(&s->sum_us, (int64_t)duration_us);
    if (b < PT_METRICS_BUCKETS) pt_metrics_add(&s->buckets[b], 1);
}

void pt_metrics_observe(pt_metrics_t *m, const char *channel, const char *service, int status,
                        uint64_t duration_us)
{
    pt__observe(m, &m->requests, PT_METRICS_MAX_SERIES, channel, service, status, duration_us);
}

void pt_metrics_target(pt_metrics_t *m, const char *upstream, const char *target, int ok,
                       uint64_t duration_us)
{
    pt__observe(m, &m->targets, PT__MAX_TARGET_SERIES, upstream, target, ok ? 1 : 0, duration_us);
}

#define PT__MAX_AMQP 64

static pt_metrics_amqp_t pt__amqp[PT__MAX_AMQP];
static size_t pt__n_amqp; /* published with release */
static pthread_mutex_t pt__amqp_lock = PTHREAD_MUTEX_INITIALIZER;
static pt_metrics_amqp_t pt__amqp_spill; /* counts what a full table has no room for */

pt_metrics_amqp_t *pt_metrics_amqp(const char *kind, const char *name)
{
    pt_metrics_amqp_t *e = NULL;
    pthread_mutex_lock(&pt__amqp_lock);
    for (size_t i = 0; i < pt__n_amqp && !e; i++)
        if (!strcmp(pt__amqp[i].kind, kind) && !strcmp(pt__amqp[i].name, name)) e = &pt__amqp[i];
    if (!e && pt__n_amqp < PT__MAX_AMQP) {
        e = &pt__amqp[pt__n_amqp];
        snprintf(e->kind, sizeof e->kind, "%s", kind);
        snprintf(e->name, sizeof e->name, "%s", name);
        __atomic_store_n(&pt__n_amqp, pt__n_amqp + 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&pt__amqp_lock);
    return e ? e : &pt__amqp_spill;
}

const pt_metrics_amqp_t *pt_metrics_amqp_all(size_t *n)
{
    *n = __atomic_load_n(&pt__n_amqp, __ATOMIC_ACQUIRE);
    return pt__amqp;
}

uint64_t pt_metrics_auth_throttled[PT_METRICS_AUTH_REASONS];
uint64_t pt_metrics_auth_hash_checks;

uint64_t pt_metrics_connections_refused;
uint64_t pt_metrics_audit[PT_METRICS_AUDIT_N];
uint64_t pt_metrics_tls_handshakes[2];
uint64_t pt_metrics_tls_open[2];
uint64_t pt_metrics_tls_resumed;
uint64_t pt_metrics_tls_failures[PT_METRICS_TLS_REASONS];

/* TLS figures: their own block, after the connection counters. */
static void pt__render_tls(pt_buf_t *out)
{
    static const char *const versions[] = {"TLSv1.2", "TLSv1.3"};
    static const char *const reasons[PT_METRICS_TLS_REASONS] = {
        "plaintext", "version", "cipher", "certificate", "alert", "protocol", "eof", "timeout"};
    pt_buf_printf(out, "# HELP portico_tls_handshakes_total TLS handshakes done, by version.\n"
                       "# TYPE portico_tls_handshakes_total counter\n");
    for (int v = 0; v < 2; v++)
        pt_buf_printf(
            out, "portico_tls_handshakes_total{version=\"%s\"} %llu\n", versions[v],
            (unsigned long long)__atomic_load_n(&pt_metrics_tls_handshakes[v], __ATOMIC_RELAXED));
    pt_buf_printf(out, "# HELP portico_tls_connections_open TLS connections open now, by "
                       "version.\n# TYPE portico_tls_connections_open gauge\n");
    for (int v = 0; v < 2; v++)
        pt_buf_printf(
            out, "portico_tls_connections_open{version=\"%s\"} %llu\n", versions[v],
            (unsigned long long)__atomic_load_n(&pt_metrics_tls_open[v], __ATOMIC_RELAXED));
    pt_buf_printf(out,
                  "# HELP portico_tls_resumed_total TLS handshakes that resumed a session.\n"
                  "# TYPE portico_tls_resumed_total counter\nportico_tls_resumed_total %llu\n",
                  (unsigned long long)__atomic_load_n(&pt_metrics_tls_resumed, __ATOMIC_RELAXED));
    pt_buf_printf(out, "# HELP portico_tls_handshake_failures_total TLS handshakes that failed, "
                       "by reason.\n# TYPE portico_tls_handshake_failures_total counter\n");
    for (int r = 0; r < PT_METRICS_TLS_REASONS; r++)
        pt_buf_printf(
            out, "portico_tls_handshake_failures_total{reason=\"%s\"} %llu\n", reasons[r],
            (unsigned long long)__atomic_load_n(&pt_metrics_tls_failures[r], __ATOMIC_RELAXED));
}

uint64_t pt_metrics_upstream_tls[PT_METRICS_UPTLS_N];

static void pt__render_upstream_tls(pt_buf_t *out)
{
    static const char *const names[PT_METRICS_UPTLS_N][2] = {
        {"handshakes", "TLS handshakes with https targets done"},
        {"resumed", "TLS handshakes with https targets that resumed a session"},
        {"handshake_failures", "TLS handshakes with https targets that failed"}};
    for (int i = 0; i < PT_METRICS_UPTLS_N; i++)
        pt_buf_printf(
            out,
            "# HELP portico_upstream_tls_%s_total %s.\n"
            "# TYPE portico_upstream_tls_%s_total counter\n"
            "portico_upstream_tls_%s_total %llu\n",
            names[i][0], names[i][1], names[i][0], names[i][0],
            (unsigned long long)__atomic_load_n(&pt_metrics_upstream_tls[i], __ATOMIC_RELAXED));
}

static uint64_t pt__load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void pt__label(pt_buf_t *out, const char *name, const char *value, int first)
{
    pt_buf_printf(out, "%s%s=\"", first ? "" : ",", name);
    for (const char *p = value; *p; p++) {
        if (*p == '\\' || *p == '"') pt_buf_append(out, "\\", 1);
        if (*p == '\n')
            pt_buf_puts(out, "\\n");
        else
            pt_buf_append(out, p, 1);
    }
    pt_buf_append(out, "\"", 1);
}

/* The merged view: series of all workers summed by (channel, service, status). */
typedef struct {
    const char *channel, *service;
    int status;
    uint64_t count, sum_us, buckets[PT_METRICS_BUCKETS];
} pt__merged_t;

static int pt__cmp(const void *a, const void *b)
{
    const pt__merged_t *x = a, *y = b;
    int c = strcmp(x->channel, y->channel);
    if (!c) c = strcmp(x->service, y->service);
    return c ? c : x->status - y->status;
}

/* The series of one table in every worker, summed by key and sorted. */
static pt__merged_t *pt__merge(pt_metrics_t *const *workers, size_t n, size_t table_off,
                               size_t *out_n)
{
    size_t total = 0, k = 0;
    for (size_t w = 0; w < n; w++) {
        const pt_metrics_table_t *t = (const void *)((const char *)workers[w] + table_off);
        total += __atomic_load_n(&t->n_series, __ATOMIC_ACQUIRE);
    }
    pt__merged_t *all = calloc(total ? total : 1, sizeof *all);
    if (!all) return NULL;
    for (size_t w = 0; w < n; w++) {
        const pt_metrics_table_t *t = (const void *)((const char *)workers[w] + table_off);
        size_t ns = __atomic_load_n(&t->n_series, __ATOMIC_ACQUIRE);
        for (size_t i = 0; i < ns && k < total; i++) {
            const pt_metrics_series_t *s = &t->series[i];
            pt__merged_t *d = &all[k++];
            d->channel = s->channel;
            d->service = s->service;
            d->status = s->status;
            d->count = pt__load(&s->count);
            d->sum_us = pt__load(&s->sum_us);
            for (int b = 0; b < PT_METRICS_BUCKETS; b++)
                d->buckets[b] = pt__load(&s->buckets[b]);
        }
    }
    qsort(all, k, sizeof *all, pt__cmp);
    /* fold equal keys into the first of each run */
    size_t m = 0;
    for (size_t i = 0; i < k; i++) {
        if (m && pt__cmp(&all[m - 1], &all[i]) == 0) {
            all[m - 1].count += all[i].count;
            all[m - 1].sum_us += all[i].sum_us;
            for (int b = 0; b < PT_METRICS_BUCKETS; b++)
                all[m - 1].buckets[b] += all[i].buckets[b];
        } else {
            all[m++] = all[i];
        }
    }
    *out_n = m;
    return all;
}

/* A latency histogram per (first, second) key of merged series. */
static void pt__histogram(pt_buf_t *out, const char *metric, const char *help, const char *l1,
                          const char *l2, const pt__merged_t *all, size_t m)
{
    pt_buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", metric, help, metric);
    for (size_t i = 0; i < m;) {
        uint64_t buckets[PT_METRICS_BUCKETS] = {0}, count = 0, sum_us = 0;
        size_t j = i;
        for (; j < m && strcmp(all[j].channel, all[i].channel) == 0 &&
               strcmp(all[j].service, all[i].service) == 0;
             j++) {
            count += all[j].count;
            sum_us += all[j].sum_us;
            for (int b = 0; b < PT_METRICS_BUCKETS; b++)
                buckets[b] += all[j].buckets[b];
        }
        uint64_t cumulative = 0;
        for (int b = 0; b <= PT_METRICS_BUCKETS; b++) {
            cumulative = b < PT_METRICS_BUCKETS ? cumulative + buckets[b] : count;
            pt_buf_printf(out, "%s_bucket{", metric);
            pt__label(out, l1, all[i].channel, 1);
            pt__label(out, l2, all[i].service, 0);
            pt__label(out, "le", b < PT_METRICS_BUCKETS ? pt__bounds_text[b] : "+Inf", 0);
            pt_buf_printf(out, "} %llu\n", (unsigned long long)cumulative);
        }
        const char *suffix[2] = {"_sum", "_count"};
        for (int x = 0; x < 2; x++) {
            pt_buf_printf(out, "%s%s{", metric, suffix[x]);
            pt__label(out, l1, all[i].channel, 1);
            pt__label(out, l2, all[i].service, 0);
            if (x == 0)
                pt_buf_printf(out, "} %.6f\n", (double)sum_us / 1e6);
            else
                pt_buf_printf(out, "} %llu\n", (unsigned long long)count);
        }
        i = j;
    }
}

void pt_metrics_render(pt_metrics_t *const *workers, size_t n, const pt_metrics_process_t *proc,
                       pt_buf_t *out)
{
    size_t m = 0;
    pt__merged_t *all = pt__merge(workers, n, offsetof(pt_metrics_t, requests), &m);
    if (!all) return;
    pt_buf_puts(out, "# HELP portico_requests_total Requests answered, by channel, service and "
                     "status.\n# TYPE portico_requests_total counter\n");
    for (size_t i = 0; i < m; i++) {
        pt_buf_puts(out, "portico_requests_total{");
        pt__label(out, "channel", all[i].channel, 1);
        pt__label(out, "service", all[i].service, 0);
        pt_buf_printf(out, ",status=\"%d\"} %llu\n", all[i].status,
                      (unsigned long long)all[i].count);
    }
    pt__histogram(out, "portico_request_duration_seconds",
                  "Time from the end of the request to the response, by channel and service.",
                  "channel", "service", all, m);
    free(all);

    all = pt__merge(workers, n, offsetof(pt_metrics_t, targets), &m);
    if (!all) return;
    pt_buf_puts(out, "# HELP portico_upstream_requests_total Exchanges with upstream targets "
                     "(proxied services and outgoing.http), by result.\n"
                     "# TYPE portico_upstream_requests_total counter\n");
    for (size_t i = 0; i < m; i++) {
        pt_buf_puts(out, "portico_upstream_requests_total{");
        pt__label(out, "upstream", all[i].channel, 1);
        pt__label(out, "target", all[i].service, 0);
        pt_buf_printf(out, ",result=\"%s\"} %llu\n", all[i].status ? "ok" : "error",
                      (unsigned long long)all[i].count);
    }
    pt__histogram(out, "portico_upstream_request_duration_seconds",
                  "Time from the start of an exchange with an upstream target to its end.",
                  "upstream", "target", all, m);
    free(all);

    size_t na = __atomic_load_n(&pt__n_amqp, __ATOMIC_ACQUIRE);
    static const struct {
        const char *metric, *type, *help;
        size_t off;
    } fams[] = {
        {"portico_amqp_published_total", "counter", "Messages handed to the broker.",
         offsetof(pt_metrics_amqp_t, published)},
        {"portico_amqp_confirmed_total", "counter",
         "Publisher confirms (outgoing) and replies matched (bus).",
         offsetof(pt_metrics_amqp_t, confirmed)},
        {"portico_amqp_failed_total", "counter",
         "Sends that failed (nack, return, time-out, no connection) and deliveries rejected.",
         offsetof(pt_metrics_amqp_t, failed)},
        {"portico_amqp_delivered_total", "counter", "Deliveries received by AMQP channels.",
         offsetof(pt_metrics_amqp_t, delivered)},
        {"portico_amqp_reconnects_total", "counter", "Connections made again after a loss.",
         offsetof(pt_metrics_amqp_t, reconnects)},
        {"portico_amqp_connections_up", "gauge", "AMQP connections up now.",
         offsetof(pt_metrics_amqp_t, up)},
    };
    for (size_t f = 0; na && f < sizeof fams / sizeof fams[0]; f++) {
        pt_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", fams[f].metric, fams[f].help,
                      fams[f].metric, fams[f].type);
        for (size_t i = 0; i < na; i++) {
            pt_buf_printf(out, "%s{", fams[f].metric);
            pt__label(out, "kind", pt__amqp[i].kind, 1);
            pt__label(out, "name", pt__amqp[i].name, 0);
            pt_buf_printf(
                out, "} %lld\n",
                (long long)pt__load((const uint64_t *)((const char *)&pt__amqp[i] + fams[f].off)));
        }
    }

    static const char *const auth_reasons[PT_METRICS_AUTH_REASONS] = {"address", "user", "total",
                                                                      "failures"};
    pt_buf_puts(out, "# HELP portico_auth_throttled_total Uncached password checks refused "
                     "with 429 before any hashing, by the bound that refused them.\n"
                     "# TYPE portico_auth_throttled_total counter\n");
    for (int r = 0; r < PT_METRICS_AUTH_REASONS; r++)
        pt_buf_printf(out, "portico_auth_throttled_total{reason=\"%s\"} %llu\n", auth_reasons[r],
                      (unsigned long long)pt__load(&pt_metrics_auth_throttled[r]));
    pt_buf_printf(out,
                  "# HELP portico_auth_hash_checks_total Password hash (argon2id) checks run.\n"
                  "# TYPE portico_auth_hash_checks_total counter\n"
                  "portico_auth_hash_checks_total %llu\n",
                  (unsigned long long)pt__load(&pt_metrics_auth_hash_checks));

    uint64_t in_flight = 0, open = 0, accepted = 0, dropped = 0, ws = 0, slow = 0;
    for (size_t w = 0; w < n; w++) {
        in_flight += pt__load(&workers[w]->in_flight);
        open += pt__load(&workers[w]->connections_open);
        accepted += pt__load(&workers[w]->connections_total);
        dropped += pt__load(&workers[w]->dropped);
        ws += pt__load(&workers[w]->websockets_open);
        slow += pt__load(&workers[w]->ws_slow_consumers);
    }
    pt_buf_printf(out,
                  "# HELP portico_connections_refused_total Client connections refused because "
                  "max_connections were open.\n"
                  "# TYPE portico_connections_refused_total counter\n"
                  "portico_connections_refused_total %llu\n",
                  (unsigned long long)pt__load(&pt_metrics_connections_refused));
    pt__render_tls(out);
    pt__render_upstream_tls(out);
    pt_metrics_redis_render(out);
    pt_metrics_ratelimit_render(out);
    pt_trace_render_metrics(out);
    pt_buf_printf(out,
                  "# HELP portico_websockets_open WebSocket connections open now.\n"
                  "# TYPE portico_websockets_open gauge\nportico_websockets_open %llu\n",
                  (unsigned long long)ws);
    pt_buf_printf(out,
                  "# HELP portico_ws_slow_consumers_total WebSocket connections closed because "
                  "their output passed max_output on a push or did not drain in send_timeout.\n"
                  "# TYPE portico_ws_slow_consumers_total counter\n"
                  "portico_ws_slow_consumers_total %llu\n",
                  (unsigned long long)slow);
    pt_buf_printf(out,
                  "# HELP portico_audit_lines_total Audit lines, by result (written; dropped: "
                  "the queue to a slow sink was full; failed: the sink refused them).\n"
                  "# TYPE portico_audit_lines_total counter\n"
                  "portico_audit_lines_total{result=\"written\"} %llu\n"
                  "portico_audit_lines_total{result=\"dropped\"} %llu\n"
                  "portico_audit_lines_total{result=\"failed\"} %llu\n",
                  (unsigned long long)pt__load(&pt_metrics_audit[PT_METRICS_AUDIT_WRITTEN]),
                  (unsigned long long)pt__load(&pt_metrics_audit[PT_METRICS_AUDIT_DROPPED]),
                  (unsigned long long)pt__load(&pt_metrics_audit[PT_METRICS_AUDIT_FAILED]));
    pt_buf_printf(out,
                  "# HELP portico_requests_in_flight Requests being handled now.\n"
                  "# TYPE portico_requests_in_flight gauge\nportico_requests_in_flight %llu\n"
                  "# HELP portico_connections_open Client connections open now.\n"
                  "# TYPE portico_connections_open gauge\nportico_connections_open %llu\n"
                  "# HELP portico_connections_total Client connections accepted.\n"
                  "# TYPE portico_connections_total counter\nportico_connections_total %llu\n"
                  "# HELP portico_metrics_series_dropped_total Observations past the series "
                  "limit.\n# TYPE portico_metrics_series_dropped_total counter\n"
                  "portico_metrics_series_dropped_total %llu\n"
                  "# HELP portico_reloads_total Accepted reloads of the config or a service file.\n"
                  "# TYPE portico_reloads_total counter\nportico_reloads_total %llu\n"
                  "# HELP portico_reload_failures_total Refused reloads.\n"
                  "# TYPE portico_reload_failures_total counter\n"
                  "portico_reload_failures_total %llu\n"
                  "# HELP portico_config_generation The config generation being served.\n"
                  "# TYPE portico_config_generation gauge\nportico_config_generation %llu\n"
                  "# HELP portico_workers Worker threads.\n"
                  "# TYPE portico_workers gauge\nportico_workers %d\n",
                  (unsigned long long)in_flight, (unsigned long long)open,
                  (unsigned long long)accepted, (unsigned long long)dropped,
                  (unsigned long long)proc->reloads, (unsigned long long)proc->reload_failures,
                  (unsigned long long)proc->generation, proc->workers);
}
