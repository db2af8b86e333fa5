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

/* ---- pt_yaml_load: one checking pass over the events, then libyaml's loader ---- */

typedef struct {
    const char *value; /* a key's text (owned by the event pass), or NULL */
    size_t len;
    unsigned long line;
    size_t order;
} pt__key_t;

typedef struct {
    int is_map;
    size_t children; /* nodes so far; in a mapping even ones are keys */
    size_t size;     /* nodes below, aliases counted as copies */
    char *anchor;    /* &name of this collection, or NULL */
    pt__key_t *keys;
    size_t n_keys, cap_keys;
} pt__frame_t;

typedef struct {
    char *name;
    char *text; /* a scalar's value (for a key given as an alias), or NULL */
    size_t len;
    size_t size; /* nodes, aliases counted as copies */
} pt__anchor_t;

typedef struct {
    const char *file;
    char *err;
    size_t errlen;
    pt__frame_t stack[PT_YAML_MAX_DEPTH + 1];
    int depth;
    pt__anchor_t *anchors;
    size_t n_anchors, cap_anchors;
    size_t total; /* nodes of the document, aliases counted as copies */
    char **texts; /* key texts kept until the pass ends */
    size_t n_texts, cap_texts;
} pt__pass_t;

static int pt__pass_fail(pt__pass_t *p, const yaml_mark_t *mark, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int pt__pass_fail(pt__pass_t *p, const yaml_mark_t *mark, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->errlen, "%s:%lu: %s", p->file, (unsigned long)mark->line + 1, msg);
    return -1;
}

static const pt__anchor_t *pt__anchor_find(const pt__pass_t *p, const char *name)
{
    /* the latest definition wins, as in libyaml's loader */
    for (size_t i = p->n_anchors; i-- > 0;)
        if (strcmp(p->anchors[i].name, name) == 0) return &p->anchors[i];
    return NULL;
}

static int pt__anchor_add(pt__pass_t *p, const yaml_mark_t *mark, const char *name,
                          const char *text, size_t len, size_t size)
{
    if (p->n_anchors == PT_YAML_MAX_ANCHORS)
        return pt__pass_fail(p, mark, "YAML: more than %d anchors", PT_YAML_MAX_ANCHORS);
    if (p->n_anchors == p->cap_anchors) {
        size_t cap = p->cap_anchors ? p->cap_anchors * 2 : 16;
        pt__anchor_t *a = realloc(p->anchors, cap * sizeof *a);
        if (!a) return pt__pass_fail(p, mark, "out of memory");
        p->anchors = a;
        p->cap_anchors = cap;
    }
    pt__anchor_t *a = &p->anchors[p->n_anchors];
    a->name = strdup(name);
    a->text = text ? strndup(text, len) : NULL;
    a->len = len;
    a->size = size;
    if (!a->name || (text && !a->text)) {
        free(a->name);
        free(a->text);
        return pt__pass_fail(p, mark, "out of memory");
    }
    p->n_anchors++;
    return 0;
}

/* One more node (size of them, counting an alias's copy) inside the open
 * collection, text being its value when it is a scalar. */
static int pt__node(pt__pass_t *p, const yaml_mark_t *mark, size_t size, const char *text,
                    size_t len)
{
    if (size > PT_YAML_MAX_NODES - p->total)
        return pt__pass_fail(p, mark,
                             "YAML: more than %d nodes (counting each alias as a copy: an alias "
                             "bomb?)",
                             PT_YAML_MAX_NODES);
    p->total += size;
    if (p->depth == 0) return 0;
    pt__frame_t *f = &p->stack[p->depth - 1];
    f->size += size;
    if (f->is_map && f->children % 2 == 0) {
        if (f->n_keys == f->cap_keys) {
            size_t cap = f->cap_keys ? f->cap_keys * 2 : 8;
            pt__key_t *k = realloc(f->keys, cap * sizeof *k);
            if (!k) return pt__pass_fail(p, mark, "out of memory");
            f->keys = k;
            f->cap_keys = cap;
        }
        char *copy = NULL;
        if (text) {
            if (p->n_texts == p->cap_texts) {
                size_t cap = p->cap_texts ? p->cap_texts * 2 : 64;
                char **t = realloc(p->texts, cap * sizeof *t);
                if (!t) return pt__pass_fail(p, mark, "out of memory");
                p->texts = t;
                p->cap_texts = cap;
            }
            if (!(copy = strndup(text, len))) return pt__pass_fail(p, mark, "out of memory");
            p->texts[p->n_texts++] = copy;
        }
        f->keys[f->n_keys] = (pt__key_t){copy, len, (unsigned long)mark->line + 1, f->n_keys};
        f->n_keys++;
    }
    f->children++;
    return 0;
}

static int pt__key_cmp(const void *a, const void *b)
{
    const pt__key_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->value, y->value, n);
    if (c == 0 && x->len != y->len) c = x->len < y->len ? -1 : 1;
    if (c == 0) c = x->order < y->order ? -1 : 1;
    return c;
}

/* At the end of a mapping: the first key that is given twice. Sorting keeps
 * a mapping of many keys from costing their square. */
static int pt__check_dups(pt__pass_t *p, pt__frame_t *f)
{
    size_t n = 0;
    for (size_t i = 0; i < f->n_keys; i++)
        if (f->keys[i].value) f->keys[n++] = f->keys[i];
    if (n < 2) return 0;
    qsort(f->keys, n, sizeof *f->keys, pt__key_cmp);
    const pt__key_t *dup = NULL;
    for (size_t i = 1; i < n; i++) {
        const pt__key_t *a = &f->keys[i - 1], *b = &f->keys[i];
        if (a->len == b->len && memcmp(a->value, b->value, a->len) == 0 &&
            (!dup || b->order < dup->order))
            dup = b;
    }
    if (!dup) return 0;
    unsigned long first = 0;
    for (size_t i = 0; i < n; i++)
        if (f->keys[i].len == dup->len && memcmp(f->keys[i].value, dup->value, dup->len) == 0 &&
            f->keys[i].order < dup->order && (!first || f->keys[i].line < first))
            first = f->keys[i].line;
    snprintf(p->err, p->errlen, "%s:%lu: duplicate key '%.*s' (first at line %lu)", p->file,
             dup->line, (int)(dup->len > 64 ? 64 : dup->len), dup->value, first);
    return -1;
}

static void pt__frame_free(pt__frame_t *f)
{
    free(f->keys);
    free(f->anchor);
    memset(f, 0, sizeof *f);
}

static int pt__event(pt__pass_t *p, yaml_event_t *e, int *docs)
{
    const yaml_mark_t *mark = &e->start_mark;
    switch (e->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++*docs > 1) return pt__pass_fail(p, mark, "YAML: more than one document in the file");
        return 0;
    case YAML_ALIAS_EVENT: {
        const pt__anchor_t *a = pt__anchor_find(p, (const char *)e->data.alias.anchor);
        if (!a)
            return pt__pass_fail(p, mark,
                                 "YAML: alias *%s names no anchor before it (or its own "
                                 "unfinished node)",
                                 (const char *)e->data.alias.anchor);
        return pt__node(p, mark, a->size, a->text, a->len);
    }
    case YAML_SCALAR_EVENT: {
        const char *text = (const char *)e->data.scalar.value;
        size_t len = e->data.scalar.length;
        if (pt__node(p, mark, 1, text, len) != 0) return -1;
        if (e->data.scalar.anchor &&
            pt__anchor_add(p, mark, (const char *)e->data.scalar.anchor, text, len, 1) != 0)
            return -1;
        return 0;
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        if (p->depth == PT_YAML_MAX_DEPTH)
            return pt__pass_fail(p, mark, "YAML: nested deeper than %d levels", PT_YAML_MAX_DEPTH);
        /* the collection counts as a key of its parent (no text: never a duplicate) */
        if (pt__node(p, mark, 1, NULL, 0) != 0) return -1;
        pt__frame_t *f = &p->stack[p->depth++];
        memset(f, 0, sizeof *f);
        f->is_map = e->type == YAML_MAPPING_START_EVENT;
        const yaml_char_t *anchor =
            f->is_map ? e->data.mapping_start.anchor : e->data.sequence_start.anchor;
        if (anchor && !(f->anchor = strdup((const char *)anchor)))
            return pt__pass_fail(p, mark, "out of memory");
        return 0;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        pt__frame_t *f = &p->stack[p->depth - 1];
        int rc = f->is_map ? pt__check_dups(p, f) : 0;
        size_t size = f->size + 1;
        if (rc == 0 && f->anchor) rc = pt__anchor_add(p, mark, f->anchor, NULL, 0, size);
        pt__frame_free(f);
        p->depth--;
        /* the parent counted this node as 1 at its start: add what it held */
        if (rc == 0 && p->depth > 0) p->stack[p->depth - 1].size += size - 1;
        return rc;
    }
    default:
        return 0;
    }
}

int pt_yaml_load(const char *file, const char *text, size_t len, yaml_document_t *doc, char *err,
                 size_t errlen)
{
    pt__pass_t p = {.file = file, .err = err, .errlen = errlen};
    yaml_parser_t parser;
    int rc = 0, docs = 0, done = 0;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    while (rc == 0 && !done) {
        yaml_event_t e;
        if (!yaml_parser_parse(&parser, &e)) {
            snprintf(err, errlen, "%s:%lu: YAML error: %s %s", file,
                     (unsigned long)parser.problem_mark.line + 1,
                     parser.problem ? parser.problem : "?", parser.context ? parser.context : "");
            rc = -1;
            break;
        }
        done = e.type == YAML_STREAM_END_EVENT;
        rc = pt__event(&p, &e, &docs);
        yaml_event_delete(&e);
    }
    yaml_parser_delete(&parser);
    while (p.depth > 0)
        pt__frame_free(&p.stack[--p.depth]);
    for (size_t i = 0; i < p.n_anchors; i++) {
        free(p.anchors[i].name);
        free(p.anchors[i].text);
    }
    free(p.anchors);
    for (size_t i = 0; i < p.n_texts; i++)
        free(p.texts[i]);
    free(p.texts);
    if (rc != 0) return -1;

    /* the text is known to be bounded now: libyaml builds the document */
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, doc)) {
        snprintf(err, errlen, "%s:%lu: YAML error: %s %s", file,
                 (unsigned long)parser.problem_mark.line + 1, parser.problem ? parser.problem : "?",
                 parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return -1;
    }
    yaml_parser_delete(&parser);
    return 0;
}
