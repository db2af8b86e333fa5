/* pt_amqp_declare: applies an endpoint's `declare:` (pt_config_amqp_declare.h)
 * on a fresh broker connection: exchanges, then queues, then bindings, each
 * on a channel of its own so that a refusal (a mismatching existing exchange:
 * 406 PRECONDITION_FAILED, a vhost without the right: 403) closes only that
 * channel. A refusal is logged at error level with the declaration and the
 * broker's text; the rest are still declared and the connection stays up
 * (what exists keeps working). Called by pt_amqp_connect on every connect. */
#ifndef PT_AMQP_DECLARE_H
#define PT_AMQP_DECLARE_H

#include "pt_config.h"

#include <amqp.h>

/* The channel the declarations use; opened and closed again here. */
#define PT_AMQP_CH_DECLARE 100

/* Declares everything of ep->declare on conn. Returns the number the broker
 * refused (0: all declared), or -1 when the connection itself failed (err
 * says why; the caller drops the connection). */
int pt_amqp_declare_apply(amqp_connection_state_t conn, const pt_amqp_endpoint_t *ep, char *err,
                          size_t errlen);

#endif
