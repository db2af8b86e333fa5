#include "pt_cache_set.h"
#include "pt_cache_mem.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The live caches of the process. Taken on reloads and scrapes only, never
 * on a cache op. */
static pthread_mutex_t pt__lock = PTHREAD_MUTEX_INITIALIZER;
static pt_cache_t *pt__live;
static pt_cache_new_fn pt__makers[PT_CACHE_BACKEND_REDIS + 1];

void pt_cache_set_backend(pt_cache_backend_t backend, pt_cache_new_fn make)
{
    pthread_mutex_lock(&pt__lock);
    pt__makers[backend] = make;
    pthread_mutex_unlock(&pt__lock);
}

static pt_cache_t *pt__took(pt_cache_t *c, const pt_cache_spec_t *sp)
{
    __atomic_store_n(&c->max_value, sp->max_value ? sp->max_value : PT_CACHE_VALUE_MAX,
                     __ATOMIC_RELAXED);
    c->refs++;
    return c;
}

/* Under pt__lock: the live cache of spec sp with one more reference and
 * sp's caps, made when there is none (or the live one cannot take sp). */
static pt_cache_t *pt__acquire(const pt_cache_spec_t *sp)
{
    pt_cache_t *c;
    for (c = pt__live; c; c = c->next)
        if (!c->retired && strcmp(c->name, sp->name) == 0) break;
    if (c && c->backend == sp->backend &&
        (c->ops->apply ? c->ops->apply(c, sp) == 0 : c->ops->limits(c, &sp->limits) == 0)) {
        return pt__took(c, sp);
    }
    pt_cache_t *fresh = NULL;
    if (sp->backend == PT_CACHE_BACKEND_MEMORY) {
        if (pt_cache_mem_new(sp->name, &sp->limits, &fresh) != 0) return NULL;
    } else if (!pt__makers[sp->backend] || pt__makers[sp->backend](sp, &fresh) != 0) {
        return NULL;
    }
    fresh->backend = sp->backend;
    if (c) c->retired = 1; /* the sets that hold it keep it until they go */
    fresh->next = pt__live;
    pt__live = fresh;
    return pt__took(fresh, sp);
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
    pt_cache_spec_t def = {.name = "default", .limits = PT_CACHE_DEFAULT_LIMITS};
    size_t first = 0;
    if (n && strcmp(specs[0].name, "default") == 0) def = specs[0], first = 1;
    pt_cache_set_t *set = calloc(1, sizeof *set + (n - first + 1) * sizeof set->caches[0]);
    if (!set) return -1;
    pthread_mutex_lock(&pt__lock);
    if (!(set->caches[set->n] = pt__acquire(&def))) goto fail;
    set->n++;
    for (size_t i = first; i < n; i++) {
        if (!(set->caches[set->n] = pt__acquire(&specs[i]))) goto fail;
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
        {"portico_cache_failures_total", "counter",
         "Calls that failed in the cache's backend (Redis down or too slow).",
         offsetof(pt_cache_stats_t, failures)},
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
    for (pt_cache_t *c = pt__live; c && n < MAX; c = c->next) {
        if (c->retired) continue; /* its name's series is the live one's */
        c->ops->stats(c, &st[n]);
        names[n++] = c->name; /* valid names need no escaping */
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
