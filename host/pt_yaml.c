#include "pt_yaml.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int pt_yaml_fail(const pt_yaml_t *y, yaml_node_t *node, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(y->err, y->errlen, "%s:%lu: %s", y->file,
             node ? (unsigned long)node->start_mark.line + 1 : 1ul, msg);
    return -1;
}

const char *pt_yaml_scalar(yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

int pt_yaml_is_null(yaml_node_t *n)
{
    const char *s = pt_yaml_scalar(n);
    return n == NULL || (s && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                         (strcmp(s, "") == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0));
}

const char *pt_yaml_value(yaml_node_t *n)
{
    return pt_yaml_is_null(n) ? NULL : pt_yaml_scalar(n);
}

yaml_node_t *pt_yaml_get(const pt_yaml_t *y, yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE) return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const char *ks = pt_yaml_scalar(yaml_document_get_node(y->doc, p->key));
        if (ks && strcmp(ks, key) == 0) return yaml_document_get_node(y->doc, p->value);
    }
    return NULL;
}

int pt_yaml_check_keys(const pt_yaml_t *y, yaml_node_t *map, const char *what,
                       const char *const *allowed)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return pt_yaml_fail(y, map, "%s: expected a mapping", what);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(y->doc, p->key);
        const char *ks = pt_yaml_scalar(k);
        int ok = 0;
        for (const char *const *a = allowed; ks && *a; a++)
            ok |= strcmp(ks, *a) == 0;
        if (!ok) return pt_yaml_fail(y, k, "%s: unknown key '%s'", what, ks ? ks : "?");
    }
    return 0;
}

int pt_yaml_string(const pt_yaml_t *y, yaml_node_t *n, const char *what, char **out)
{
    const char *s = pt_yaml_value(n);
    if (!s) return pt_yaml_fail(y, n, "%s: expected a string", what);
    if (!(*out = strdup(s))) return pt_yaml_fail(y, n, "out of memory");
    return 0;
}

int pt_yaml_bool(const pt_yaml_t *y, yaml_node_t *n, const char *what, int *out)
{
    const char *s = pt_yaml_value(n);
    if (s && (!strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on")))
        *out = 1;
    else if (s && (!strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcasecmp(s, "off")))
        *out = 0;
    else
        return pt_yaml_fail(y, n, "%s: expected true or false", what);
    return 0;
}

size_t pt_yaml_len(yaml_node_t *seq)
{
    return (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
}

yaml_node_t *pt_yaml_item(const pt_yaml_t *y, yaml_node_t *seq, size_t i)
{
    return yaml_document_get_node(y->doc, seq->data.sequence.items.start[i]);
}

char *pt_yaml_path(const pt_yaml_t *y, const char *p)
{
    char buf[PATH_MAX];
    if (p[0] == '/' || !y->dir) return strdup(p);
    snprintf(buf, sizeof buf, "%s/%s", y->dir, p);
    return strdup(buf);
}
