/* pt_snapshot: one immutable generation of the config and what is compiled
 * from it (the router). Reference counted: each worker holds the one it
 * serves with, and a reload swaps in a new one and releases the old. */
#ifndef PT_SNAPSHOT_H
#define PT_SNAPSHOT_H

#include "pt_config.h"
#include "pt_router.h"

#include <stdint.h>

typedef struct {
    pt_config_t *cfg;
    pt_router_t *router;
    uint64_t generation;
    int refs; /* atomic */
} pt_snapshot_t;

/* Loads path and compiles it. Returns a snapshot with one reference, or NULL
 * with "file:line: message" in err. */
pt_snapshot_t *pt_snapshot_load(const char *path, uint64_t generation, char *err, size_t errlen);

/* Adds a reference; returns s. Thread-safe. */
pt_snapshot_t *pt_snapshot_ref(pt_snapshot_t *s);

/* Drops a reference; frees the snapshot with the last one. Thread-safe. */
void pt_snapshot_release(pt_snapshot_t *s);

#endif
