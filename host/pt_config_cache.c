#include "pt_config_cache.h"
#include "pt_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PT__MAX_ENTRIES 100000000ull
#define PT__MIN_BYTES 1024ull
#define PT__MAX_BYTES (64ull << 30)
#define PT__MAX_CACHES 64
#define PT__NEAR_TTL_MAX_MS 60000ull

static int pt__caps(const pt_yaml_t *y, yaml_node_t *n, const char *what, pt_cache_limits_t *l);

/* A redis cache's extra keys: backend, max_value, near_cache (its ttl is
 * the entry's, its caps are Redis's own maxmemory). */
static int pt__redis(const pt_yaml_t *y, yaml_node_t *n, const char *what, const char *prefix,
                     pt_cache_spec_t *sp)
{
    static const char *const keys[] = {"backend", "ttl", "max_value", "near_cache", NULL};
    static const char *const near_keys[] = {"ttl", "max_entries", "max_bytes", NULL};
    char nwhat[PT_CACHE_NAME_MAX + 64];
    yaml_node_t *v;
    uint64_t x;
    const char *s;
    if (pt_yaml_check_keys(y, n, what, keys) != 0) return -1;
    if (!prefix)
        return pt_yaml_fail(y, pt_yaml_get(y, n, "backend"),
                            "%s.backend: redis needs a cluster: section (its Redis holds the "
                            "values)",
                            what);
    if (!(sp->key_prefix = strdup(prefix))) return pt_yaml_fail(y, n, "out of memory");
    sp->backend = PT_CACHE_BACKEND_REDIS;
    sp->line = (int)n->start_mark.line + 1;
    sp->max_value = PT_CACHE_REDIS_DEFAULT_MAX_VALUE;
    if (pt__caps(y, n, what, &sp->limits) != 0) return -1;
    if ((v = pt_yaml_get(y, n, "max_value"))) {
        if (!(s = pt_yaml_scalar(v)) || pt_parse_size(s, &x) != 0 || x < 1 ||
            x > PT_CACHE_VALUE_MAX)
            return pt_yaml_fail(y, v, "%s.max_value: expected a size from 1 byte to 64MB", what);
        sp->max_value = x;
    }
    sp->near = (pt_cache_limits_t){1000, 16ull << 20, 0};
    v = pt_yaml_get(y, n, "near_cache");
    if (pt_yaml_is_null(v)) return 0;
    snprintf(nwhat, sizeof nwhat, "%s.near_cache", what);
    if (v->type != YAML_MAPPING_NODE)
        return pt_yaml_fail(y, v, "%s: expected a mapping (ttl, max_entries, max_bytes)", nwhat);
    if (pt_yaml_check_keys(y, v, nwhat, near_keys) != 0 || pt__caps(y, v, nwhat, &sp->near) != 0)
        return -1;
    yaml_node_t *t = pt_yaml_get(y, v, "ttl");
    if (!t || sp->near.ttl_ms == 0 || sp->near.ttl_ms > PT__NEAR_TTL_MAX_MS)
        return pt_yaml_fail(y, t ? t : v,
                            "%s.ttl: expected how long a node may serve a value it read "
                            "(from 1ms to 1m, such as \"1s\")",
                            nwhat);
    return 0;
}

/* The entry n of a cache: memory caps, or backend: redis and its keys. */
static int pt__entry(const pt_yaml_t *y, yaml_node_t *n, const char *what, const char *prefix,
                     pt_cache_spec_t *sp)
{
    yaml_node_t *b = pt_yaml_is_null(n) ? NULL : pt_yaml_get(y, n, "backend");
    const char *s = b ? pt_yaml_scalar(b) : NULL;
    if (b && !(s && (strcmp(s, "memory") == 0 || strcmp(s, "redis") == 0)))
        return pt_yaml_fail(y, b, "%s.backend: expected memory or redis", what);
    if (s && strcmp(s, "redis") == 0) return pt__redis(y, n, what, prefix, sp);
    static const char *const keys[] = {"backend", "max_entries", "max_bytes", "ttl", NULL};
    if (pt_yaml_is_null(n)) return 0;
    if (pt_yaml_check_keys(y, n, what, keys) != 0) return -1;
    return pt__caps(y, n, what, &sp->limits);
}

/* max_entries, max_bytes and ttl of n (the keys were checked), into l. */
static int pt__caps(const pt_yaml_t *y, yaml_node_t *n, const char *what, pt_cache_limits_t *l)
{
    yaml_node_t *v;
    uint64_t x;
    const char *s;
    if ((v = pt_yaml_get(y, n, "max_entries"))) {
        if (!(s = pt_yaml_scalar(v)) || pt_parse_size(s, &x) != 0 || x < 1 || x > PT__MAX_ENTRIES)
            return pt_yaml_fail(y, v, "%s.max_entries: expected a count from 1 to 100000000", what);
        l->max_entries = x;
    }
    if ((v = pt_yaml_get(y, n, "max_bytes"))) {
        if (!(s = pt_yaml_scalar(v)) || pt_parse_size(s, &x) != 0 || x < PT__MIN_BYTES ||
            x > PT__MAX_BYTES)
            return pt_yaml_fail(y, v, "%s.max_bytes: expected a size from 1KB to 64GB", what);
        l->max_bytes = x;
    }
    if ((v = pt_yaml_get(y, n, "ttl"))) {
        if (!(s = pt_yaml_scalar(v)) || pt_parse_duration_ms(s, &x) != 0 || x > PT_CACHE_TTL_MAX_MS)
            return pt_yaml_fail(y, v,
                                "%s.ttl: expected a duration such as 30, \"500ms\" or \"10m\" "
                                "(0: none) of at most a year",
                                what);
        l->ttl_ms = x;
    }
    return 0;
}

static int pt__add(const pt_yaml_t *y, yaml_node_t *at, pt_config_caches_t *out, const char *name)
{
    pt_cache_spec_t *sp = &out->specs[out->n];
    sp->limits = PT_CACHE_DEFAULT_LIMITS;
    if (!(sp->name = strdup(name))) return pt_yaml_fail(y, at, "out of memory");
    out->n++;
    return 0;
}

int pt_config_cache_parse(const pt_yaml_t *y, yaml_node_t *node, const char *key_prefix,
                          pt_config_caches_t *out)
{
    static const char *const keys[] = {"default", "caches", NULL};
    memset(out, 0, sizeof *out);
    if (!(out->specs = calloc(PT__MAX_CACHES + 1, sizeof *out->specs)))
        return pt_yaml_fail(y, node, "out of memory");
    if (pt__add(y, node, out, "default") != 0) return -1;
    if (pt_yaml_is_null(node)) return 0;
    if (pt_yaml_check_keys(y, node, "cache", keys) != 0) return -1;
    if (pt__entry(y, pt_yaml_get(y, node, "default"), "cache.default", key_prefix,
                  &out->specs[0]) != 0)
        return -1;
    yaml_node_t *list = pt_yaml_get(y, node, "caches");
    if (pt_yaml_is_null(list)) return 0;
    if (list->type != YAML_MAPPING_NODE)
        return pt_yaml_fail(y, list, "cache.caches: expected a mapping of names to caps");
    for (yaml_node_pair_t *p = list->data.mapping.pairs.start; p < list->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(y->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(y->doc, p->value);
        const char *name = pt_yaml_scalar(k);
        char what[PT_CACHE_NAME_MAX + 32];
        if (!name || !pt_cache_valid_name(name, strlen(name)))
            return pt_yaml_fail(y, k, "cache.caches: a name must be 1 to 64 of A-Z a-z 0-9 _ . -");
        if (strcmp(name, "default") == 0)
            return pt_yaml_fail(y, k, "cache.caches: 'default' is set under cache.default");
        if (out->n > PT__MAX_CACHES)
            return pt_yaml_fail(y, k, "cache.caches: at most %d caches", PT__MAX_CACHES);
        snprintf(what, sizeof what, "cache.caches.%s", name);
        if (v->type != YAML_MAPPING_NODE && !pt_yaml_is_null(v))
            return pt_yaml_fail(
                y, v, "%s: expected a mapping (max_entries, max_bytes, ttl, or backend: redis)",
                what);
        if (pt__add(y, k, out, name) != 0 ||
            pt__entry(y, v, what, key_prefix, &out->specs[out->n - 1]) != 0)
            return -1;
    }
    return 0;
}

void pt_config_cache_free(pt_config_caches_t *c)
{
    for (size_t i = 0; c->specs && i < c->n; i++) {
        free((char *)c->specs[i].name);
        free((char *)c->specs[i].key_prefix);
    }
    free(c->specs);
    c->specs = NULL;
    c->n = 0;
}
