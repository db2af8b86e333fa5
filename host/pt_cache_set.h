/* pt_cache_set: the process's registry of live caches (pt_cache.h) by
 * name. A config generation opens its caches as a pt_cache_set_t
 * (references): a cache that the next generation keeps is the same object
 * (its content stays, its caps follow the new config); one it drops is
 * freed when the last set holding it is (no worker serves that generation
 * any more). */
#ifndef PT_CACHE_SET_H
#define PT_CACHE_SET_H

#include "pt_cache.h"
#include "pt_util.h"

#include <stddef.h>
#include <string.h>

/* Makes a cache of a backend other than memory from its spec (name
 * copied). Returns 0 and the cache (refs 0) in *out, or < 0. */
typedef int (*pt_cache_new_fn)(const pt_cache_spec_t *spec, pt_cache_t **out);

/* Hands the registry the maker of backend's caches (pt_cache_redis_install
 * does it for redis, from the process layer, before any set opens). A spec
 * of a backend without a maker fails to open. */
void pt_cache_set_backend(pt_cache_backend_t backend, pt_cache_new_fn make);

/* The caches of one config generation; caches[0] is "default". */
typedef struct {
    size_t n;
    pt_cache_t *caches[];
} pt_cache_set_t;

/* Opens the caches of a generation: the default one with its caps (given
 * first in specs or not at all), then each spec. A cache already live under
 * that name and backend is taken as it is and gets the spec's caps
 * (evicting now what is past them; a backend's apply op may refuse, then
 * it is replaced); another is made empty (the one it replaces is retired:
 * the older sets keep it until they go). Main thread (reloads). Returns 0
 * and the set in *out, or -1 (out of memory: nothing changed but caps). */
int pt_cache_set_open(const pt_cache_spec_t *specs, size_t n, pt_cache_set_t **out);

/* Lets go of a set: a cache no other set holds is freed. NULL is fine. */
void pt_cache_set_free(pt_cache_set_t *set);

/* The cache of set called name[0..len), or NULL. Any thread. */
static inline pt_cache_t *pt_cache_set_find(const pt_cache_set_t *set, const char *name, size_t len)
{
    for (size_t i = 0; set && i < set->n; i++) {
        pt_cache_t *c = set->caches[i];
        if (c->name_len == len && memcmp(c->name, name, len) == 0) return c;
    }
    return NULL;
}

/* Appends the Prometheus text of every live cache (portico_cache_*{cache=}). */
void pt_cache_render_metrics(pt_buf_t *out);

#endif
