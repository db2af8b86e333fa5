#include "pt_amqp_declare.h"
#include "pt_log.h"

#include <amqp_framing.h>
#include <stdio.h>
#include <string.h>

/* The text of a failed reply (a close is answered, so the peer can go on).
 * Below pt_amqp on purpose: pt_amqp_connect calls this file. */
static void pt__why(amqp_connection_state_t conn, amqp_channel_t ch, amqp_rpc_reply_t r,
                    char *why, size_t len)
{
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_t *m = r.reply.decoded;
        amqp_channel_close_ok_t ok = {0};
        snprintf(why, len, "%u %.*s", m->reply_code, (int)m->reply_text.len,
                 (const char *)m->reply_text.bytes);
        amqp_send_method(conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
               r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_t *m = r.reply.decoded;
        amqp_connection_close_ok_t ok = {0};
        snprintf(why, len, "%u %.*s", m->reply_code, (int)m->reply_text.len,
                 (const char *)m->reply_text.bytes);
        amqp_send_method(conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    } else if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        snprintf(why, len, "%s", amqp_error_string2(r.library_error));
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION) {
        snprintf(why, len, "unexpected %s from the broker", amqp_method_name(r.reply.id));
    } else {
        snprintf(why, len, "no reply from the broker");
    }
}

/* After one declaration: 0 declared, 1 refused (logged; the channel is open
 * again), -1 the connection failed. */
static int pt__result(amqp_connection_state_t conn, const pt_amqp_endpoint_t *ep,
                      const char *what, char *err, size_t errlen)
{
    char why[200];
    amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) return 0;
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        pt__why(conn, PT_AMQP_CH_DECLARE, r, why, sizeof why);
        pt_log_error("AMQP %s: the broker refused to declare %s: %s", ep->display, what, why);
        amqp_channel_open(conn, PT_AMQP_CH_DECLARE);
        r = amqp_get_rpc_reply(conn);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) return 1;
    }
    pt__why(conn, PT_AMQP_CH_DECLARE, r, why, sizeof why);
    snprintf(err, errlen, "declaring %s on %s: %s", what, ep->display, why);
    return -1;
}

int pt_amqp_declare_apply(amqp_connection_state_t conn, const pt_amqp_endpoint_t *ep, char *err,
                          size_t errlen)
{
    const pt_amqp_declare_t *d = &ep->declare;
    char what[600];
    int refused = 0, rc;
    if (!d->n_exchanges && !d->n_queues && !d->n_bindings) return 0;
    amqp_channel_open(conn, PT_AMQP_CH_DECLARE);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        pt__why(conn, PT_AMQP_CH_DECLARE, r, what, sizeof what);
        snprintf(err, errlen, "cannot open a channel on %s: %s", ep->display, what);
        return -1;
    }
    for (size_t i = 0; i < d->n_exchanges; i++) {
        const pt_amqp_decl_entity_t *e = &d->exchanges[i];
        snprintf(what, sizeof what, "exchange '%s' (%s%s%s)", e->name, e->type,
                 e->durable ? ", durable" : "", e->auto_delete ? ", auto_delete" : "");
        amqp_exchange_declare(conn, PT_AMQP_CH_DECLARE, amqp_cstring_bytes(e->name),
                              amqp_cstring_bytes(e->type), 0, e->durable, e->auto_delete, 0,
                              amqp_empty_table);
        if ((rc = pt__result(conn, ep, what, err, errlen)) < 0) return -1;
        refused += rc;
    }
    for (size_t i = 0; i < d->n_queues; i++) {
        const pt_amqp_decl_entity_t *q = &d->queues[i];
        snprintf(what, sizeof what, "queue '%s' (%s%s%s)", q->name,
                 q->durable ? "durable" : "transient", q->exclusive ? ", exclusive" : "",
                 q->auto_delete ? ", auto_delete" : "");
        amqp_queue_declare(conn, PT_AMQP_CH_DECLARE, amqp_cstring_bytes(q->name), 0, q->durable,
                           q->exclusive, q->auto_delete, amqp_empty_table);
        if ((rc = pt__result(conn, ep, what, err, errlen)) < 0) return -1;
        refused += rc;
    }
    for (size_t i = 0; i < d->n_bindings; i++) {
        const pt_amqp_decl_binding_t *b = &d->bindings[i];
        snprintf(what, sizeof what, "binding of queue '%s' to exchange '%s' with key '%s'",
                 b->queue, b->exchange, b->routing_key);
        amqp_queue_bind(conn, PT_AMQP_CH_DECLARE, amqp_cstring_bytes(b->queue),
                        amqp_cstring_bytes(b->exchange), amqp_cstring_bytes(b->routing_key),
                        amqp_empty_table);
        if ((rc = pt__result(conn, ep, what, err, errlen)) < 0) return -1;
        refused += rc;
    }
    r = amqp_channel_close(conn, PT_AMQP_CH_DECLARE, AMQP_REPLY_SUCCESS);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        pt__why(conn, PT_AMQP_CH_DECLARE, r, what, sizeof what);
        snprintf(err, errlen, "closing the declare channel on %s: %s", ep->display, what);
        return -1;
    }
    return refused;
}
