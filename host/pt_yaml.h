/* pt_yaml: reading a libyaml document with "file:line: message" errors.
 * Shared by the config and the security definitions, so every part of a
 * config speaks of its mistakes the same way. */
#ifndef PT_YAML_H
#define PT_YAML_H

#include <stddef.h>
#include <yaml.h>

typedef struct {
    yaml_document_t *doc;
    const char *file; /* for messages */
    const char *dir;  /* the file's directory, for relative paths */
    char *err;        /* where a failure is written */
    size_t errlen;
} pt_yaml_t;

/* Writes "file:line: message" (node's line, 1 without a node); returns -1. */
int pt_yaml_fail(const pt_yaml_t *y, yaml_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The text of a scalar node, or NULL for anything else. */
const char *pt_yaml_scalar(yaml_node_t *n);

/* Non-zero for a missing node or a plain null ("", "~", "null"). */
int pt_yaml_is_null(yaml_node_t *n);

/* The text of a scalar that is not null, or NULL. */
const char *pt_yaml_value(yaml_node_t *n);

/* The value under key in a mapping, or NULL. */
yaml_node_t *pt_yaml_get(const pt_yaml_t *y, yaml_node_t *map, const char *key);

/* Requires map to be a mapping whose keys are all in allowed (NULL-ended).
 * Returns 0 or -1 ("what: unknown key 'x'"). */
int pt_yaml_check_keys(const pt_yaml_t *y, yaml_node_t *map, const char *what,
                       const char *const *allowed);

/* A non-null scalar, copied into *out (malloc). Returns 0 or -1. */
int pt_yaml_string(const pt_yaml_t *y, yaml_node_t *n, const char *what, char **out);

/* true/yes/on or false/no/off into *out. Returns 0 or -1. */
int pt_yaml_bool(const pt_yaml_t *y, yaml_node_t *n, const char *what, int *out);

/* p made absolute against the config file's directory (y->dir); an absolute
 * p is copied as it is. Returns a malloc'd string, or NULL. */
char *pt_yaml_path(const pt_yaml_t *y, const char *p);

/* Items of a sequence node. */
size_t pt_yaml_len(yaml_node_t *seq);
yaml_node_t *pt_yaml_item(const pt_yaml_t *y, yaml_node_t *seq, size_t i);

#endif
