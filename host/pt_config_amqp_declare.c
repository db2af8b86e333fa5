#include "pt_config_amqp_declare.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PT__MAX_DECLS 256

/* An AMQP short string a client may declare: 1..255 bytes, not amq.* (the
 * broker reserves those and refuses them with 403). */
static int pt__name(const pt_yaml_t *y, yaml_node_t *n, const char *key, char **out)
{
    const char *s = pt_yaml_value(n);
    if (!s || !*s || strlen(s) > 255)
        return pt_yaml_fail(y, n ? n : NULL, "%s: expected a name of 1 to 255 bytes", key);
    if (strncmp(s, "amq.", 4) == 0)
        return pt_yaml_fail(y, n, "%s: '%s': names starting with amq. are the broker's own", key,
                            s);
    return (*out = strdup(s)) ? 0 : pt_yaml_fail(y, n, "out of memory");
}

static int pt__flag(const pt_yaml_t *y, yaml_node_t *map, const char *what, const char *k,
                    int *out)
{
    char key[320];
    yaml_node_t *v = pt_yaml_get(y, map, k);
    snprintf(key, sizeof key, "%s.%s", what, k);
    return v ? pt_yaml_bool(y, v, key, out) : 0;
}

static yaml_node_t *pt__list(const pt_yaml_t *y, yaml_node_t *n, const char *key, size_t *len,
                             int *bad)
{
    *len = 0;
    *bad = 0;
    if (pt_yaml_is_null(n)) return NULL;
    if (n->type != YAML_SEQUENCE_NODE || (*len = pt_yaml_len(n)) > PT__MAX_DECLS) {
        *bad = pt_yaml_fail(y, n, "%s: expected a list of at most %d entries", key, PT__MAX_DECLS);
        return NULL;
    }
    return n;
}

static int pt__entity(const pt_yaml_t *y, yaml_node_t *n, const char *what, int exchange,
                      pt_amqp_decl_entity_t *e)
{
    static const char *const ex_keys[] = {"name", "type", "durable", "auto_delete", NULL};
    static const char *const q_keys[] = {"name", "durable", "exclusive", "auto_delete", NULL};
    char key[320];
    if (n->type != YAML_MAPPING_NODE)
        return pt_yaml_fail(y, n, "%s: expected a mapping such as {name: x}", what);
    if (pt_yaml_check_keys(y, n, what, exchange ? ex_keys : q_keys) != 0) return -1;
    snprintf(key, sizeof key, "%s.name", what);
    yaml_node_t *name = pt_yaml_get(y, n, "name");
    if (!name) return pt_yaml_fail(y, n, "%s: missing", key);
    if (pt__name(y, name, key, &e->name) != 0) return -1;
    e->durable = 1;
    if (pt__flag(y, n, what, "durable", &e->durable) != 0 ||
        pt__flag(y, n, what, "auto_delete", &e->auto_delete) != 0 ||
        (!exchange && pt__flag(y, n, what, "exclusive", &e->exclusive) != 0))
        return -1;
    if (!exchange) return 0;
    yaml_node_t *t = pt_yaml_get(y, n, "type");
    const char *s = t ? pt_yaml_value(t) : "direct";
    if (!s || !(strcmp(s, "direct") == 0 || strcmp(s, "fanout") == 0 ||
                strcmp(s, "topic") == 0 || strcmp(s, "headers") == 0 ||
                (strncmp(s, "x-", 2) == 0 && s[2] && strlen(s) <= 255)))
        return pt_yaml_fail(y, t, "%s.type: expected direct, fanout, topic, headers or x-<plugin>",
                            what);
    return (e->type = strdup(s)) ? 0 : pt_yaml_fail(y, t ? t : n, "out of memory");
}

static int pt__binding(const pt_yaml_t *y, yaml_node_t *n, const char *what,
                       pt_amqp_decl_binding_t *b)
{
    static const char *const keys[] = {"exchange", "queue", "routing_key", NULL};
    char key[320];
    if (n->type != YAML_MAPPING_NODE)
        return pt_yaml_fail(y, n, "%s: expected a mapping {exchange, queue, routing_key}", what);
    if (pt_yaml_check_keys(y, n, what, keys) != 0) return -1;
    const char *fields[] = {"exchange", "queue"};
    char **outs[] = {&b->exchange, &b->queue};
    for (int i = 0; i < 2; i++) {
        yaml_node_t *v = pt_yaml_get(y, n, fields[i]);
        snprintf(key, sizeof key, "%s.%s", what, fields[i]);
        if (!v) return pt_yaml_fail(y, n, "%s: missing", key);
        if (pt__name(y, v, key, outs[i]) != 0) return -1;
    }
    yaml_node_t *rk = pt_yaml_get(y, n, "routing_key");
    const char *s = rk ? pt_yaml_scalar(rk) : "";
    if (!s || strlen(s) > 255)
        return pt_yaml_fail(y, rk, "%s.routing_key: expected a string of at most 255 bytes", what);
    return (b->routing_key = strdup(pt_yaml_is_null(rk) ? "" : s)) ? 0
                                                                   : pt_yaml_fail(y, n, "out of memory");
}

int pt_amqp_declare_parse(const pt_yaml_t *y, yaml_node_t *node, const char *what,
                          pt_amqp_declare_t *out)
{
    static const char *const keys[] = {"exchanges", "queues", "bindings", NULL};
    char where[96], key[128];
    memset(out, 0, sizeof *out);
    if (pt_yaml_is_null(node)) return 0;
    snprintf(where, sizeof where, "%s.declare", what);
    if (pt_yaml_check_keys(y, node, where, keys) != 0) return -1;
    size_t n;
    int bad;
    for (int kind = 0; kind < 2; kind++) {
        snprintf(key, sizeof key, "%s.%s", where, keys[kind]);
        yaml_node_t *list = pt__list(y, pt_yaml_get(y, node, keys[kind]), key, &n, &bad);
        if (bad) return -1;
        pt_amqp_decl_entity_t **arr = kind == 0 ? &out->exchanges : &out->queues;
        size_t *cnt = kind == 0 ? &out->n_exchanges : &out->n_queues;
        if (!list) continue;
        if (!(*arr = calloc(n ? n : 1, sizeof **arr))) return pt_yaml_fail(y, list, "out of memory");
        for (size_t i = 0; i < n; i++) {
            char item[160];
            yaml_node_t *it = pt_yaml_item(y, list, i);
            snprintf(item, sizeof item, "%s[%zu]", key, i);
            pt_amqp_decl_entity_t *e = &(*arr)[(*cnt)++];
            if (pt__entity(y, it, item, kind == 0, e) != 0) return -1;
            for (size_t j = 0; j + 1 < *cnt; j++)
                if (strcmp((*arr)[j].name, e->name) == 0)
                    return pt_yaml_fail(y, it, "%s: '%s' is declared twice", key, e->name);
        }
    }
    snprintf(key, sizeof key, "%s.bindings", where);
    yaml_node_t *list = pt__list(y, pt_yaml_get(y, node, "bindings"), key, &n, &bad);
    if (bad) return -1;
    if (!list) return 0;
    if (!(out->bindings = calloc(n ? n : 1, sizeof *out->bindings)))
        return pt_yaml_fail(y, list, "out of memory");
    for (size_t i = 0; i < n; i++) {
        char item[160];
        snprintf(item, sizeof item, "%s[%zu]", key, i);
        if (pt__binding(y, pt_yaml_item(y, list, i), item, &out->bindings[out->n_bindings++]) != 0)
            return -1;
    }
    return 0;
}

static char *pt__dup(const char *s, int *oom)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d) *oom = 1;
    return d;
}

int pt_amqp_declare_copy(pt_amqp_declare_t *dst, const pt_amqp_declare_t *src)
{
    int oom = 0;
    memset(dst, 0, sizeof *dst);
    for (int kind = 0; kind < 2; kind++) {
        const pt_amqp_decl_entity_t *s = kind == 0 ? src->exchanges : src->queues;
        size_t n = kind == 0 ? src->n_exchanges : src->n_queues;
        pt_amqp_decl_entity_t **d = kind == 0 ? &dst->exchanges : &dst->queues;
        if (!n) continue;
        if (!(*d = calloc(n, sizeof **d))) return -1;
        for (size_t i = 0; i < n; i++) {
            (*d)[i] = s[i];
            (*d)[i].name = pt__dup(s[i].name, &oom);
            (*d)[i].type = pt__dup(s[i].type, &oom);
        }
        *(kind == 0 ? &dst->n_exchanges : &dst->n_queues) = n;
    }
    if (src->n_bindings) {
        if (!(dst->bindings = calloc(src->n_bindings, sizeof *dst->bindings))) return -1;
        dst->n_bindings = src->n_bindings;
        for (size_t i = 0; i < src->n_bindings; i++) {
            dst->bindings[i].exchange = pt__dup(src->bindings[i].exchange, &oom);
            dst->bindings[i].queue = pt__dup(src->bindings[i].queue, &oom);
            dst->bindings[i].routing_key = pt__dup(src->bindings[i].routing_key, &oom);
        }
    }
    return oom ? -1 : 0;
}

static int pt__eq(const char *a, const char *b)
{
    return a && b ? strcmp(a, b) == 0 : a == b;
}

static int pt__entities_same(const pt_amqp_decl_entity_t *a, const pt_amqp_decl_entity_t *b,
                             size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!pt__eq(a[i].name, b[i].name) || !pt__eq(a[i].type, b[i].type) ||
            a[i].durable != b[i].durable || a[i].auto_delete != b[i].auto_delete ||
            a[i].exclusive != b[i].exclusive)
            return 0;
    return 1;
}

int pt_amqp_declare_same(const pt_amqp_declare_t *a, const pt_amqp_declare_t *b)
{
    if (a->n_exchanges != b->n_exchanges || a->n_queues != b->n_queues ||
        a->n_bindings != b->n_bindings)
        return 0;
    if (!pt__entities_same(a->exchanges, b->exchanges, a->n_exchanges) ||
        !pt__entities_same(a->queues, b->queues, a->n_queues))
        return 0;
    for (size_t i = 0; i < a->n_bindings; i++)
        if (!pt__eq(a->bindings[i].exchange, b->bindings[i].exchange) ||
            !pt__eq(a->bindings[i].queue, b->bindings[i].queue) ||
            !pt__eq(a->bindings[i].routing_key, b->bindings[i].routing_key))
            return 0;
    return 1;
}

void pt_amqp_declare_free(pt_amqp_declare_t *d)
{
    for (size_t i = 0; i < d->n_exchanges; i++) {
        free(d->exchanges[i].name);
        free(d->exchanges[i].type);
    }
    for (size_t i = 0; i < d->n_queues; i++)
        free(d->queues[i].name);
    for (size_t i = 0; i < d->n_bindings; i++) {
        free(d->bindings[i].exchange);
        free(d->bindings[i].queue);
        free(d->bindings[i].routing_key);
    }
    free(d->exchanges);
    free(d->queues);
    free(d->bindings);
    memset(d, 0, sizeof *d);
}
