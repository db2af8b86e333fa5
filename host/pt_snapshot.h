/* pt_snapshot: one immutable generation of the config and what is compiled
 * from it (the router). Reference counted: each worker holds the one it
 * serves with, and a reload swaps in a new one and releases the old. */
#ifndef PT_SNAPSHOT_H
#define PT_SNAPSHOT_H

#include "pt_cache_set.h"
#include "pt_config.h"
#include "pt_router.h"

#include <stdint.h>

typedef struct {
    pt_config_t *cfg;
    pt_router_t *router;
    uint64_t generation;
    int refs;               /* atomic */
    pt_cache_set_t *caches; /* pt_snapshot_open_caches; NULL until then */
} pt_snapshot_t;

/* Loads path and compiles it. Returns a snapshot with one reference, or NULL
 * with "file:line: message" in err. */
pt_snapshot_t *pt_snapshot_load(const char *path, uint64_t generation, char *err, size_t errlen);

/* Opens the caches of s's config (pt_cache_set_open): the ones a previous
 * generation has keep their content and take the new caps now. Call once,
 * when the server takes s on (not for a config that is only checked).
 * Returns 0, or -1 with a message in err. */
int pt_snapshot_open_caches(pt_snapshot_t *s, char *err, size_t errlen);

/* Adds a reference; returns s. Thread-safe. */
pt_snapshot_t *pt_snapshot_ref(pt_snapshot_t *s);

/* Drops a reference; frees the snapshot with the last one. Thread-safe. */
void pt_snapshot_release(pt_snapshot_t *s);

#endif
