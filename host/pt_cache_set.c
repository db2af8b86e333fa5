#include "pt_cache_set.h"
#include "pt_cache_mem.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The live caches of the process. Taken on reloads and scrapes only, never
 * on a cache op. */
static pthread_mutex_t pt__lock = PTHREAD_MUTEX_INITIALIZER;
static pt_cache_t *pt__live;

/* Under pt__lock: the live cache called name with one more reference and
 * caps l, made when there is none. */
static pt_cache_t *pt__acquire(const char *name, const pt_cache_limits_t *l)
{
    pt_cache_t *c;
    for (c = pt__live; c; c = c->next)
        if (strcmp(c->name, name) == 0) break;
    if (c) {
        c->ops->limits(c, l);
    } else {
        if (pt_cache_mem_new(name, l, &c) != 0) return NULL;
        c->next = pt__live;
        pt__live = c;
    }
    c->refs++;
    return c;
}

/* Under pt__lock. */
static void pt__release(pt_cache_t *c)
{
    if (--c->refs > 0) return;
    pt_cache_t **p = &pt__live;
    while (*p != c)
        p = &(*p)->next;
    *p = c->next;
    c->ops->free(c);
}

int pt_cache_set_open(const pt_cache_spec_t *specs, size_t n, pt_cache_set_t **out)
{
    pt_cache_limits_t def = PT_CACHE_DEFAULT_LIMITS;
    size_t first = 0;
    if (n && strcmp(specs[0].name, "default") == 0) def = specs[0].limits, first = 1;
    pt_cache_set_t *set = calloc(1, sizeof *set + (n - first + 1) * sizeof set->caches[0]);
    if (!set) return -1;
    pthread_mutex_lock(&pt__lock);
    if (!(set->caches[set->n] = pt__acquire("default", &def))) goto fail;
    set->n++;
    for (size_t i = first; i < n; i++) {
        if (!(set->caches[set->n] = pt__acquire(specs[i].name, &specs[i].limits))) goto fail;
        set->n++;
    }
    pthread_mutex_unlock(&pt__lock);
    *out = set;
    return 0;
fail:
    for (size_t i = 0; i < set->n; i++)
        pt__release(set->caches[i]);
    pthread_mutex_unlock(&pt__lock);
    free(set);
    return -1;
}

void pt_cache_set_free(pt_cache_set_t *set)
{
    if (!set) return;
    pthread_mutex_lock(&pt__lock);
    for (size_t i = 0; i < set->n; i++)
        pt__release(set->caches[i]);
    pthread_mutex_unlock(&pt__lock);
    free(set);
}

void pt_cache_render_metrics(pt_buf_t *out)
{
    static const struct {
        const char *metric, *type, *help;
        size_t off;
    } fams[] = {
        {"portico_cache_hits_total", "counter", "Cache lookups that found a live entry.",
         offsetof(pt_cache_stats_t, hits)},
        {"portico_cache_misses_total", "counter", "Cache lookups that found none.",
         offsetof(pt_cache_stats_t, misses)},
        {"portico_cache_sets_total", "counter", "Entries stored (set, add, incr).",
         offsetof(pt_cache_stats_t, sets)},
        {"portico_cache_evictions_total", "counter",
         "Entries evicted (least recently used first) to stay within the caps.",
         offsetof(pt_cache_stats_t, evictions)},
        {"portico_cache_expired_total", "counter", "Entries removed because their ttl passed.",
         offsetof(pt_cache_stats_t, expired)},
        {"portico_cache_entries", "gauge", "Entries held now.",
         offsetof(pt_cache_stats_t, entries)},
        {"portico_cache_bytes", "gauge", "Bytes held now (keys, values and overhead).",
         offsetof(pt_cache_stats_t, bytes)},
        {"portico_cache_max_entries", "gauge", "The cache's max_entries.",
         offsetof(pt_cache_stats_t, max_entries)},
        {"portico_cache_max_bytes", "gauge", "The cache's max_bytes.",
         offsetof(pt_cache_stats_t, max_bytes)},
    };
    enum { N_FAMS = sizeof fams / sizeof fams[0], MAX = 256 };
    pt_cache_stats_t st[MAX];
    const char *names[MAX];
    size_t n = 0;
    pthread_mutex_lock(&pt__lock);
    for (pt_cache_t *c = pt__live; c && n < MAX; c = c->next, n++) {
        c->ops->stats(c, &st[n]);
        names[n] = c->name; /* valid names need no escaping */
    }
    for (size_t f = 0; n && f < N_FAMS; f++) {
        pt_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", fams[f].metric, fams[f].help,
                      fams[f].metric, fams[f].type);
        for (size_t i = 0; i < n; i++)
            pt_buf_printf(
                out, "%s{cache=\"%s\"} %llu\n", fams[f].metric, names[i],
                (unsigned long long)*(const uint64_t *)((const char *)&st[i] + fams[f].off));
    }
    pthread_mutex_unlock(&pt__lock); /* held while names are printed: a reload may free them */
}
