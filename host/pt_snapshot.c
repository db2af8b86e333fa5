#include "pt_snapshot.h"

#include <stdio.h>
#include <stdlib.h>

pt_snapshot_t *pt_snapshot_load(const char *path, uint64_t generation, char *err, size_t errlen)
{
    pt_snapshot_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    if (pt_config_load(path, &s->cfg, err, errlen) != 0 ||
        pt_router_new(s->cfg, &s->router, err, errlen) != 0) {
        pt_config_free(s->cfg);
        free(s);
        return NULL;
    }
    s->generation = generation;
    s->refs = 1;
    return s;
}

int pt_snapshot_open_caches(pt_snapshot_t *s, char *err, size_t errlen)
{
    if (pt_cache_set_open(s->cfg->caches.specs, s->cfg->caches.n, &s->caches) == 0) return 0;
    snprintf(err, errlen, "%s: out of memory opening the caches", s->cfg->path);
    return -1;
}

pt_snapshot_t *pt_snapshot_ref(pt_snapshot_t *s)
{
    __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
    return s;
}

void pt_snapshot_release(pt_snapshot_t *s)
{
    if (s && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        pt_cache_set_free(s->caches);
        pt_router_free(s->router);
        pt_config_free(s->cfg);
        free(s);
    }
}
