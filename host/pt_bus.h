/* pt_bus: the amqp_bus dispatch strategy. A request on an amqp_bus channel
 * (prefix P) is published without any Lua, in WASP's routing:
 *
 *   GET /P/foo/bar/baz?page=1&size=20
 *     -> exchange "foo", routing key "bar.baz", body as is, content_type
 *        the request's, headers X-WASP-METHOD: GET, X-WASP-QS: page=1&size=20,
 *        correlation_id = cid, reply_to = amq.rabbitmq.reply-to, mandatory
 *
 * The reply's body goes back with its content type and the status in its
 * X-WASP-STATUS header (200 without one). No reply within the channel's
 * reply time-out: 504; no queue took the message (Basic.Return): 502; no
 * broker: 503.
 *
 * Each amqp_bus channel has one broker connection with a thread of its own
 * (rabbitmq-c is blocking); requests from every worker are in flight on it at
 * once and replies are matched by correlation id. Results go back to the
 * worker that asked through pt_worker_call. */
#ifndef PT_BUS_H
#define PT_BUS_H

#include "pt_config.h"
#include "pt_worker.h"

#include <stddef.h>

typedef struct pt_bus_s pt_bus_t; /* every amqp_bus connection of the process */

/* What a worker asks for. Every pointer need only live during pt_bus_send. */
typedef struct {
    const pt_channel_t *channel; /* type PT_CHANNEL_AMQP_BUS */
    const char *exchange;        /* the service segment, checked by the router */
    const char *rest;            /* the raw path after it ("" or "/bar/baz") */
    size_t rest_len;
    const char *method; /* "GET" */
    const char *query;  /* raw query string without '?', may be empty */
    size_t query_len;
    const char *content_type; /* NULL: none */
    size_t content_type_len;
    const char *body;
    size_t body_len;
    const char *cid;
} pt_bus_request_t;

/* The outcome, valid only during the callback. status is the reply's (or
 * 502/503/504 with error saying why and body NULL). */
typedef struct {
    int status;
    const char *content_type; /* NULL: none */
    const char *body;
    size_t body_len;
    const char *error; /* set when the bus itself failed */
} pt_bus_result_t;

typedef void (*pt_bus_done_cb)(void *ud, const pt_bus_result_t *res);

/* Starts one connection thread per amqp_bus channel of cfg (strings are
 * copied). A broker that is down is not an error: the thread keeps retrying
 * with backoff. With no amqp_bus channel, *out is NULL. Returns 0 or -1. */
int pt_bus_start(const pt_config_t *cfg, pt_bus_t **out);

/* Stops every thread; requests still waiting are answered 503 through their
 * workers first. Call after the workers ended. NULL is fine. */
void pt_bus_stop(pt_bus_t *b);

/* Publishes req on the connection of req->channel (found by channel name)
 * and calls done(ud, result) once, on worker w's loop, never from inside
 * pt_bus_send. Returns 0, or -1 when the request cannot be queued (done is
 * then not called). Worker thread only. */
int pt_bus_send(pt_worker_t *w, const pt_bus_request_t *req, pt_bus_done_cb done, void *ud);

/* "a.b" from the raw rest "/a/b" of a path: segments percent-decoded and
 * joined with '.'. Writes at most outlen bytes including the NUL. Returns
 * the length, or -1 (malformed encoding, or too long). */
long pt_bus_routing_key(const char *rest, size_t rest_len, char *out, size_t outlen);

#endif
