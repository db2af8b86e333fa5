/* pt_audit_amqp: the audit log's AMQP sink (audit.amqp: {outgoing,
 * exchange, routing_key}). Each line is published as a persistent
 * application/json message through the outgoing.amqp pool named
 * `outgoing` (pt_amqp: its threads publish and wait for the confirm). At
 * most PT_AUDIT_AMQP_INFLIGHT lines are unconfirmed at once: the audit
 * writer waits for room (it is its own thread), so its queue fills and
 * further lines are dropped and counted while the broker is slow. A pool
 * with no live connection fails the line at once (counted as failed). */
#ifndef PT_AUDIT_AMQP_H
#define PT_AUDIT_AMQP_H

#include "pt_audit.h"

#define PT_AUDIT_AMQP_INFLIGHT 256

/* Finds the pool o names (pt_amqp_start ran) and gives the sink to pass to
 * pt_audit_start. Returns 0 (with *fn NULL when o has no audit.amqp), or -1
 * with a message in err. */
int pt_audit_amqp_sink(const pt_config_obs_t *o, pt_audit_sink_fn *fn, void **ud, char *err,
                       size_t errlen);

#endif
