/* pt_config_cache: the `cache:` section of the config (docs/services.md,
 * "Cache"), parsed into the specs that pt_cache_set_open opens:
 *
 *   cache:
 *     default: {max_entries: 10000, max_bytes: 64MB, ttl: 0}   # optional
 *     caches:
 *       sessions: {max_entries: 100000, max_bytes: 256MB, ttl: 10m}
 *       shared:                      # in Redis, shared by the cluster's nodes
 *         backend: redis             # needs a cluster: section (pt_config checks)
 *         ttl: 10m
 *         max_value: 1MB             # default 1MB
 *         near_cache: {ttl: 1s, max_entries: 1000, max_bytes: 16MB}  # optional
 *
 * Every key of an entry is optional (max_entries 10000, max_bytes 64MB, ttl
 * none); names are pt_cache_valid_name's, "default" only under default. A
 * redis cache takes no max_entries or max_bytes (Redis's maxmemory is its
 * cap); its near cache, a node's own copy of what it read, needs a ttl
 * (1ms to 1m) and has caps of its own. */
#ifndef PT_CONFIG_CACHE_H
#define PT_CONFIG_CACHE_H

#include "pt_cache_set.h"
#include "pt_yaml.h"

#include <stddef.h>

#define PT_CACHE_REDIS_DEFAULT_MAX_VALUE (1u << 20)

typedef struct {
    pt_cache_spec_t *specs; /* [0] is "default"; names and key_prefixes owned here */
    size_t n;
} pt_config_caches_t;

/* Parses the `cache:` node (NULL or null: only the default cache, with its
 * default caps) into *out. key_prefix: cluster.key_prefix, or NULL without
 * a cluster: section (a backend: redis is refused then). Returns 0, or -1
 * with "file:line: message" in y->err. */
int pt_config_cache_parse(const pt_yaml_t *y, yaml_node_t *node, const char *key_prefix,
                          pt_config_caches_t *out);

/* Frees what parse made (not out itself). */
void pt_config_cache_free(pt_config_caches_t *c);

#endif
