#include "pt_snapshot.h"

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

pt_snapshot_t *pt_snapshot_ref(pt_snapshot_t *s)
{
    __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
    return s;
}

void pt_snapshot_release(pt_snapshot_t *s)
{
    if (s && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        pt_router_free(s->router);
        pt_config_free(s->cfg);
        free(s);
    }
}
