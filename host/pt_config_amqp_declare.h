/* pt_config_amqp_declare: the `declare:` option of an AMQP connection
 * (outgoing.amqp[], channels.amqp[], channels.amqp_bus[]): exchanges, queues
 * and bindings that portico declares on every connect and reconnect, so a
 * fresh broker needs no separate setup step (docs/amqp.md, "Declare"):
 *
 *   declare:
 *     exchanges: [{name: /incoming, type: topic, durable: true, auto_delete: false}]
 *     queues:    [{name: incoming.api, durable: true, exclusive: false, auto_delete: false}]
 *     bindings:  [{exchange: /incoming, queue: incoming.api, routing_key: api}]
 *
 * Checked strictly here (names 1..255 bytes and not amq.*, exchange types
 * direct|fanout|topic|headers or x-*, each name once, every key known); the
 * broker's refusal at connect time is pt_amqp_declare's business. */
#ifndef PT_CONFIG_AMQP_DECLARE_H
#define PT_CONFIG_AMQP_DECLARE_H

#include "pt_yaml.h"

#include <stddef.h>

typedef struct {
    char *name;
    char *type; /* exchanges only: direct (default), fanout, topic, headers, x-... */
    int durable, auto_delete, exclusive; /* exclusive: queues only */
} pt_amqp_decl_entity_t;

typedef struct {
    char *exchange, *queue, *routing_key; /* routing_key "" by default */
} pt_amqp_decl_binding_t;

typedef struct {
    pt_amqp_decl_entity_t *exchanges;
    size_t n_exchanges;
    pt_amqp_decl_entity_t *queues;
    size_t n_queues;
    pt_amqp_decl_binding_t *bindings;
    size_t n_bindings;
} pt_amqp_declare_t;

/* Parses the node under `what`.declare (null: nothing to declare) into *out
 * (zeroed first). Returns 0, or -1 with "file:line: message" in y->err. */
int pt_amqp_declare_parse(const pt_yaml_t *y, yaml_node_t *node, const char *what,
                          pt_amqp_declare_t *out);

/* Copies src into dst (zeroed first). Returns 0 or -1 (out of memory; free dst). */
int pt_amqp_declare_copy(pt_amqp_declare_t *dst, const pt_amqp_declare_t *src);

/* Non-zero when a and b declare the same things the same way. */
int pt_amqp_declare_same(const pt_amqp_declare_t *a, const pt_amqp_declare_t *b);

/* Frees what parse or copy made (not d itself). */
void pt_amqp_declare_free(pt_amqp_declare_t *d);

#endif
