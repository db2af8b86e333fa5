/* pt_amqp_channel: AMQP channels (channels.amqp): queues whose deliveries
 * run a service.
 *
 * Each channel has a thread with its own broker connection that consumes
 * the queue (basic.qos prefetch bounds what the broker sends ahead) and
 * hands each delivery to a worker with pt_worker_call, round-robin, at most
 * `concurrency` at a time. The worker runs the service with the body as the
 * payload and the properties and headers as self.request.amqp, then passes
 * the answer back; the thread publishes a reply to reply_to (with the same
 * correlation_id) and acks, or, when the service raised or the input failed
 * its schema (status 400 or 5xx), rejects: to the queue's dead-letter
 * exchange, or back to the queue with on_error: requeue. Each delivery is
 * acked or rejected once, never both. A lost connection is re-established
 * with backoff; the broker requeues what was not acked, so a delivery is
 * never lost (it may be handled again). */
#ifndef PT_AMQP_CHANNEL_H
#define PT_AMQP_CHANNEL_H

#include "pt_config.h"
#include "pt_worker.h"

typedef struct pt_amqp_channels_s pt_amqp_channels_t;

/* Starts a consumer thread per entry of cfg->amqp_channels (settings are
 * copied), dispatching to workers[0..n_workers), which must be running. A
 * broker that is down is not an error. Returns 0 (with *out NULL when there
 * are no AMQP channels), or -1 when out of memory or a thread cannot start. */
int pt_amqp_channels_start(const pt_config_t *cfg, pt_worker_t *workers, int n_workers,
                           pt_amqp_channels_t **out);

/* Stops handing out deliveries (a drain has begun); what is being handled
 * still gets its ack. Any thread. NULL is fine. */
void pt_amqp_channels_quiesce(pt_amqp_channels_t *chs);

/* Acks or rejects the answers that came back, closes the connections (the
 * broker requeues every delivery not answered) and joins the threads. Call
 * once the workers ended. NULL is fine. */
void pt_amqp_channels_stop(pt_amqp_channels_t *chs);

/* Frees everything, including deliveries a worker never answered. Call
 * after pt_worker_join of every worker. NULL is fine. */
void pt_amqp_channels_free(pt_amqp_channels_t *chs);

#endif
