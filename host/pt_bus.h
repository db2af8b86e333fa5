/* pt_bus: the amqp_bus dispatch strategy. A request on an amqp_bus channel
 * (prefix P) is published without any Lua, in WASP's routing:
 *
 *   GET /P/foo/bar/baz?page=1&size=20
 *     -> exchange "foo", routing key "bar.baz", body as is, content_type
 *        the request's, headers (longstr) X-WASP-METHOD: GET and
 *        X-WASP-QS: page=1&size=20 (always both; "" without a query),
 *        correlation_id "<cid>.<n>", reply_to amq.rabbitmq.reply-to,
 *        mandatory
 *
 * The correlation id is the request's cid, a dot and a process-wide
 * counter: unique even when clients send the same x-correlation-id twice,
 * and still carrying the cid for whoever reads the broker's side. A reply
 * with an unknown or late correlation id is dropped (logged at debug).
 *
 * The reply's body goes back with its content type and the status in its
 * X-WASP-STATUS header (any case; an integer, or a string of digits;
 * clamped to 200..599; 200 without one or with anything else). A reply
 * body over server.max_body_bytes (as the worker had it when it sent the
 * request) is a 502, read and dropped frame by frame, never held whole. No
 * reply within the channel's reply time-out: 504; no queue took the message
 * (Basic.Return) or the exchange does not exist: 502; no broker, or the
 * connection dropped while waiting: 503; a path that makes no routing key:
 * 400.
 *
 * Each amqp_bus channel has one broker connection with a thread of its own
 * (rabbitmq-c is blocking), set up at start: a reload changes the reply
 * time-out but not the broker. Requests from every worker are in flight on
 * its channel at once, which consumes amq.rabbitmq.reply-to (direct
 * reply-to, no-ack). Results go back to the worker that asked through
 * pt_worker_call. */
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
    const char *traceparent; /* sent as the message's traceparent header; NULL: none */
    const char *tracestate;  /* and its tracestate (with a traceparent only); NULL: none */
} pt_bus_request_t;

/* The outcome, valid only during the callback. status is the reply's (body
 * and content_type set, error NULL), or 400/502/503/504 with error saying
 * why and body and content_type NULL. */
typedef struct {
    int status;
    const char *content_type; /* NULL: none; any byte the broker had: pt_http checks it */
    size_t content_type_len;
    const char *body;
    size_t body_len;
    const char *error; /* set when the bus itself failed */
} pt_bus_result_t;

typedef void (*pt_bus_done_cb)(void *ud, const pt_bus_result_t *res);

/* Starts one connection thread per amqp_bus channel of cfg (name and
 * endpoint copied). Call before the workers start: pt_bus_send finds the
 * connections without a lock. A broker that is down is not an error: the
 * thread keeps retrying (0.1 s doubling up to 5 s) and requests get 503
 * meanwhile. With no amqp_bus channel, *out is NULL. Returns 0, or -1 (out
 * of memory, or a thread cannot start; nothing is left running). */
int pt_bus_start(const pt_config_t *cfg, pt_bus_t **out);

/* Stops every thread; requests still waiting are answered 503 ("portico is
 * shutting down") through their workers first. Call after the workers'
 * loops ended and before pt_worker_join, which runs those answers (as it
 * does for pt_amqp_stop). Frees b; NULL is fine. */
void pt_bus_stop(pt_bus_t *b);

/* Publishes req on the connection of req->channel (found by channel name;
 * the reply time-out is req->channel's now) and calls done(ud, result)
 * exactly once, on worker w's loop, never from inside pt_bus_send: also the
 * 503 of a broker that is down and the 400 of a bad path. Every byte of req
 * is copied. If w's loop has ended by then (a shutdown past the drain
 * time-out), done still runs once, on the thread that joins w, where
 * pt_worker_self() is NULL: it must then only free what ud holds. Returns
 * 0, or -1 when out of memory (done is then not called). Worker thread
 * only. */
int pt_bus_send(pt_worker_t *w, const pt_bus_request_t *req, pt_bus_done_cb done, void *ud);

/* "a.b" from the raw rest "/a/b" of a path: segments percent-decoded on
 * their own ('+' stays), empty ones skipped, joined with '.'; "" and "/"
 * give "". Writes at most outlen bytes including the NUL. Returns the
 * length, or -1 (malformed encoding, a NUL byte, or too long) with out "". */
long pt_bus_routing_key(const char *rest, size_t rest_len, char *out, size_t outlen);

#endif
