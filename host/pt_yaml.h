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

/* Limits of pt_yaml_load. A config is a few hundred nodes; these stop a
 * file made to exhaust the parser ("[[[[..." costs libyaml the square of its
 * depth) or the memory of whoever walks the tree (an alias bomb). */
#define PT_YAML_MAX_DEPTH 64
#define PT_YAML_MAX_NODES 100000 /* an alias counts as a copy of what it names */
#define PT_YAML_MAX_ANCHORS 1000

/* Parses text[0..len) into *doc (free it with yaml_document_delete), first
 * checking the event stream for what a config never needs and a hostile file
 * uses: a second document, a key given twice in one mapping, nesting deeper
 * than PT_YAML_MAX_DEPTH, more than PT_YAML_MAX_NODES nodes or
 * PT_YAML_MAX_ANCHORS anchors, an alias of no finished anchor (its own
 * node: a cycle). Returns 0, or -1 with "file:line: message" in err (doc then
 * holds nothing). */
int pt_yaml_load(const char *file, const char *text, size_t len, yaml_document_t *doc, char *err,
                 size_t errlen);

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
