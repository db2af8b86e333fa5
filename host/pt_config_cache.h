/* pt_config_cache: the `cache:` section of the config (docs/services.md,
 * "Cache"), parsed into the specs that pt_cache_set_open opens:
 *
 *   cache:
 *     default: {max_entries: 10000, max_bytes: 64MB, ttl: 0}   # optional
 *     caches:
 *       sessions: {max_entries: 100000, max_bytes: 256MB, ttl: 10m}
 *
 * Every key of an entry is optional (max_entries 10000, max_bytes 64MB, ttl
 * none); names are pt_cache_valid_name's, "default" only under default. */
#ifndef PT_CONFIG_CACHE_H
#define PT_CONFIG_CACHE_H

#include "pt_cache_set.h"
#include "pt_yaml.h"

#include <stddef.h>

typedef struct {
    pt_cache_spec_t *specs; /* [0] is "default"; names owned here */
    size_t n;
} pt_config_caches_t;

/* Parses the `cache:` node (NULL or null: only the default cache, with its
 * default caps) into *out. Returns 0, or -1 with "file:line: message" in
 * y->err. */
int pt_config_cache_parse(const pt_yaml_t *y, yaml_node_t *node, pt_config_caches_t *out);

/* Frees what parse made (not out itself). */
void pt_config_cache_free(pt_config_caches_t *c);

#endif
