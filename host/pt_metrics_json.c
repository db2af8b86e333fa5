#include "pt_metrics_json.h"

#include <stdlib.h>
#include <string.h>

static const uint64_t pt__bounds_us[PT_METRICS_BUCKETS] = {
    500,    1000,   2500,   5000,    10000,   25000,   50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};

static uint64_t pt__load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

typedef struct {
    const char *a, *b;
    int status;
    uint64_t count, sum_us, buckets[PT_METRICS_BUCKETS];
} pt__row_t;

static int pt__cmp(const void *x, const void *y)
{
    const pt__row_t *p = x, *q = y;
    int c = strcmp(p->a, q->a);
    if (!c) c = strcmp(p->b, q->b);
    return c ? c : p->status - q->status;
}

static void pt__str(pt_buf_t *out, const char *s)
{
    pt_buf_puts(out, "\"");
    pt_buf_json_escape(out, s, strlen(s));
    pt_buf_puts(out, "\"");
}

/* One table of every worker, summed by key, as a JSON array. */
static void pt__table(pt_buf_t *out, pt_metrics_t *const *workers, size_t n, int targets)
{
    size_t total = 0, k = 0;
    for (size_t w = 0; w < n; w++) {
        const pt_metrics_table_t *t = targets ? &workers[w]->targets : &workers[w]->requests;
        total += __atomic_load_n(&t->n_series, __ATOMIC_ACQUIRE);
    }
    pt__row_t *rows = calloc(total ? total : 1, sizeof *rows);
    pt_buf_puts(out, "[");
    if (!rows) {
        pt_buf_puts(out, "]");
        return;
    }
    for (size_t w = 0; w < n; w++) {
        const pt_metrics_table_t *t = targets ? &workers[w]->targets : &workers[w]->requests;
        size_t ns = __atomic_load_n(&t->n_series, __ATOMIC_ACQUIRE);
        for (size_t i = 0; i < ns && k < total; i++) {
            const pt_metrics_series_t *s = &t->series[i];
            pt__row_t *r = &rows[k++];
            r->a = s->channel;
            r->b = s->service;
            r->status = s->status;
            r->count = pt__load(&s->count);
            r->sum_us = pt__load(&s->sum_us);
            for (int b = 0; b < PT_METRICS_BUCKETS; b++)
                r->buckets[b] = pt__load(&s->buckets[b]);
        }
    }
    qsort(rows, k, sizeof *rows, pt__cmp);
    size_t m = 0;
    for (size_t i = 0; i < k; i++) {
        if (m && pt__cmp(&rows[m - 1], &rows[i]) == 0) {
            rows[m - 1].count += rows[i].count;
            rows[m - 1].sum_us += rows[i].sum_us;
            for (int b = 0; b < PT_METRICS_BUCKETS; b++)
                rows[m - 1].buckets[b] += rows[i].buckets[b];
        } else {
            rows[m++] = rows[i];
        }
    }
    for (size_t i = 0; i < m; i++) {
        pt_buf_puts(out, i ? ",{" : "{");
        pt_buf_puts(out, targets ? "\"upstream\":" : "\"channel\":");
        pt__str(out, rows[i].a);
        pt_buf_puts(out, targets ? ",\"target\":" : ",\"service\":");
        pt__str(out, rows[i].b);
        if (targets)
            pt_buf_printf(out, ",\"ok\":%s", rows[i].status ? "true" : "false");
        else
            pt_buf_printf(out, ",\"status\":%d", rows[i].status);
        pt_buf_printf(out, ",\"count\":%llu,\"sum_us\":%llu,\"buckets\":[",
                      (unsigned long long)rows[i].count, (unsigned long long)rows[i].sum_us);
        for (int b = 0; b < PT_METRICS_BUCKETS; b++)
            pt_buf_printf(out, "%s%llu", b ? "," : "", (unsigned long long)rows[i].buckets[b]);
        pt_buf_puts(out, "]}");
    }
    pt_buf_puts(out, "]");
    free(rows);
}

void pt_metrics_json(pt_metrics_t *const *workers, size_t n, uint64_t time_ms, pt_buf_t *out)
{
    pt_buf_printf(out, "{\"time_ms\":%llu,\"bounds_us\":[", (unsigned long long)time_ms);
    for (int b = 0; b < PT_METRICS_BUCKETS; b++)
        pt_buf_printf(out, "%s%llu", b ? "," : "", (unsigned long long)pt__bounds_us[b]);
    pt_buf_puts(out, "],\"requests\":");
    pt__table(out, workers, n, 0);
    pt_buf_puts(out, ",\"targets\":");
    pt__table(out, workers, n, 1);
    pt_buf_puts(out, ",\"amqp\":[");
    size_t na = 0;
    const pt_metrics_amqp_t *a = pt_metrics_amqp_all(&na);
    for (size_t i = 0; i < na; i++) {
        pt_buf_puts(out, i ? ",{\"kind\":" : "{\"kind\":");
        pt__str(out, a[i].kind);
        pt_buf_puts(out, ",\"name\":");
        pt__str(out, a[i].name);
        pt_buf_printf(out,
                      ",\"up\":%lld,\"published\":%llu,\"confirmed\":%llu,\"failed\":%llu,"
                      "\"delivered\":%llu,\"reconnects\":%llu}",
                      (long long)pt__load((const uint64_t *)&a[i].up),
                      (unsigned long long)pt__load(&a[i].published),
                      (unsigned long long)pt__load(&a[i].confirmed),
                      (unsigned long long)pt__load(&a[i].failed),
                      (unsigned long long)pt__load(&a[i].delivered),
                      (unsigned long long)pt__load(&a[i].reconnects));
    }
    uint64_t in_flight = 0, open = 0, ws = 0, slow = 0;
    for (size_t w = 0; w < n; w++) {
        in_flight += pt__load(&workers[w]->in_flight);
        open += pt__load(&workers[w]->connections_open);
        ws += pt__load(&workers[w]->websockets_open);
        slow += pt__load(&workers[w]->ws_slow_consumers);
    }
    pt_buf_printf(out,
                  "],\"in_flight\":%llu,\"connections_open\":%llu,\"websockets_open\":%llu,"
                  "\"ws_slow_consumers\":%llu}",
                  (unsigned long long)in_flight, (unsigned long long)open, (unsigned long long)ws,
                  (unsigned long long)slow);
}
