/* pt_http: HTTP/1.1 connections. One request at a time per connection:
 * parsing (pt_http_parser: llhttp and the gate's rules on the request's
 * syntax) pauses at the end of each request and resumes after its response
 * is written, so pipelined requests are answered in order. Limits: header
 * bytes (431), body bytes (413), the head and the body each within a
 * deadline and the body's reads within body_timeout of each other (408),
 * idle keep-alive time-out (close), an answer the client does not read
 * within idle_timeout (close), max_connections for the process (through
 * pt_worker_conn_add). Every error is a JSON body with the cid; every
 * response header a handler hands over is checked before it is written
 * (500/502 when bad).
 *
 * pt_http knows no channel type: what a request is for is decided by the
 * handler it was accepted with (pt_dispatch), through three ways to go on:
 * a response (pt_http_respond, pt_http_send_error), a streamed exchange (the
 * request held at its head, its body handed to a sink: pt_http_stream), or
 * a hand-over of the connection to a new owner (pt_http_hand_over: a
 * WebSocket, a tunnel). The connection's state, timers and buffers are
 * private to pt_http.c; the functions below are the only way to them. */
#ifndef PT_HTTP_H
#define PT_HTTP_H

#include "pt_http_parser.h"
#include "pt_trace.h"
#include "pt_transport.h"
#include "pt_util.h"
#include "pt_worker.h"

#include <llhttp.h>
#include <uv.h>

typedef struct pt_conn_s pt_conn_t;

/* What a connection's requests are for (pt_dispatch's table). */
typedef struct {
    /* The head of a request is parsed (its cid known). Returns 1 to stream
     * its body: the request is held at its head and handed to request() at
     * once, its body goes to the sink that request() sets (pt_http_stream)
     * once pt_http_release is called; 0 to read the body whole first. */
    int (*head)(pt_conn_t *c);
    /* A request is complete (or held at its head): answer it, start an
     * exchange or hand the connection over. */
    void (*request)(pt_conn_t *c);
} pt_http_handler_t;

/* Accepts a connection from w's listener over plain TCP; its requests go
 * to h. */
void pt_http_accept(pt_worker_t *w, uv_stream_t *listener, const pt_http_handler_t *h);

/* Serves HTTP/1.1 over t, a transport set up by the caller (connected, its
 * read buffer set), which must outlive the connection: it is closed through
 * its ops, and may be freed once its close callback ran. Returns the
 * connection, or NULL when it was refused or failed (it is closing). */
pt_conn_t *pt_http_start(pt_worker_t *w, pt_transport_t *t, const pt_http_handler_t *h);

/* ---- the request (valid from head() until the response is written) ---- */

/* The request as parsed: llhttp's state (method, version, flags,
 * content_length, upgrade), the target and the headers (pt_http_parser.h).
 * Read only. */
const pt_http_parser_t *pt_http_request(const pt_conn_t *c);

/* The request's method (llhttp_method_t). */
int pt_http_method(const pt_conn_t *c);

/* The target split at '?': the path (not decoded) and the query without
 * its '?' ("" and 0 when none). */
void pt_http_target(const pt_conn_t *c, const char **path, size_t *path_len, const char **query,
                    size_t *query_len);

/* The value of the first request header called name (any case), its length
 * in *len; NULL when there is none. */
const char *pt_http_header(const pt_conn_t *c, const char *name, size_t *len);

/* The body read whole ("" and 0 for none, or when it is streamed). */
const char *pt_http_body(const pt_conn_t *c, size_t *len);

/* The request's correlation id (taken from X-Correlation-Id or made). */
const char *pt_http_cid(const pt_conn_t *c);

/* The request's trace context (pt_trace.h; its span_id is the server
 * span, the parent of every call made for it), or NULL when tracing is off. */
pt_trace_ctx_t *pt_http_trace(pt_conn_t *c);

/* The worker c runs on. */
pt_worker_t *pt_http_worker(const pt_conn_t *c);

/* The client's address as text, looked up once per connection ("" when
 * it cannot be known). */
const char *pt_http_peer(pt_conn_t *c);

/* The TCP handle under the connection, for a peer lookup made only when
 * needed (pt_security); NULL when there is none. */
const uv_tcp_t *pt_http_tcp(const pt_conn_t *c);

/* The transport the connection reads and writes through (its TLS state,
 * for pt_security's client certificates). */
pt_transport_t *pt_http_transport(const pt_conn_t *c);

/* The connection's current time-out ends ms from now (the TLS handshake's
 * and then the first head's, set by the acceptor). */
void pt_http_set_timeout(pt_conn_t *c, uint64_t ms);

/* 1 when the request is held at its head (its body is streamed). */
int pt_http_held(const pt_conn_t *c);

/* 1 once the whole request is read. */
int pt_http_request_read(const pt_conn_t *c);

/* 1 once the connection is closing (its handles are being closed). */
int pt_http_closing(const pt_conn_t *c);

/* ---- what the handler found out, for the metrics and the access log ---- */

/* The matched channel (a name that lives as long as the config snapshot
 * the worker serves with) and the service (copied; NULL: none). */
void pt_http_set_route(pt_conn_t *c, const char *channel_name, const char *service);

/* Where the request went (a proxy's target "host:port", "amqp:EXCHANGE")
 * and how long the answer took from there, for the access log. */
void pt_http_set_upstream(pt_conn_t *c, const char *where, uint64_t us);

/* The service is resolved (it exists) and allowed: the metrics label it by
 * name from now on; before, a matched channel's requests count under
 * service="unknown", so names a client makes up make no series. */
void pt_http_service_known(pt_conn_t *c);

/* The authenticated user (copied; NULL or "": none), and back. */
void pt_http_set_username(pt_conn_t *c, const char *username);
const char *pt_http_username(const pt_conn_t *c); /* "" when none */

/* ---- answers that come later ---- */

/* The request waits for a callback (a service, a bus reply, a password
 * check): c is not freed before pt_http_unhold, even if it closes. */
void pt_http_hold(pt_conn_t *c);

/* The callback came: returns 1 when c can take the answer, 0 when it is
 * closing or gone (then it is freed here and must not be used again). */
int pt_http_unhold(pt_conn_t *c);

/* ---- responses ---- */

/* Writes a whole response: the one place response headers are made. What a
 * handler hands over (the content type, the extra "Name: value\r\n" lines)
 * is checked first: a CR, LF or NUL there would add headers or split the
 * response. A bad one is answered with status `refused` and a JSON error
 * saying why_refused instead (500 for a service's answer, 502 for a
 * backend's); refused 0: the headers are our own, and are dropped if bad. */
void pt_http_respond(pt_conn_t *c, int status, const char *ctype, size_t ctype_len,
                     const char *extra, size_t extra_len, const char *body, size_t body_len,
                     int refused, const char *why_refused);

/* Answers with a JSON error body {"error": {status, message, cid}}; extra
 * holds more "Name: value\r\n" lines or is NULL. Ends a streamed exchange
 * first (its sink's abort). */
void pt_http_send_error(pt_conn_t *c, int status, const char *msg, const char *extra);

/* The reason phrase of status ("Unknown" for codes it does not know). */
const char *pt_http_reason(int status);

/* The connection closes after the response being made now (set when the
 * handler writes its own head). */
void pt_http_set_close(pt_conn_t *c);

/* 1 when the connection closes after this response (the head must say
 * Connection: close). */
int pt_http_close_after(const pt_conn_t *c);

/* Writes n buffers to the client as they are (copied when they cannot go at
 * once). Returns 0, or -1 after closing the connection. */
int pt_http_write(pt_conn_t *c, const uv_buf_t *bufs, unsigned n);

/* Bytes of pt_http_write still waiting to reach the client. */
size_t pt_http_out_queued(const pt_conn_t *c);

/* A streamed response is complete (status and body bytes for the metrics
 * and the access log): once the queued bytes are out, the connection goes
 * on to the next request, or closes when it must (the request was not read
 * whole, or pt_http_set_close). Ends a hand-over too. */
void pt_http_response_end(pt_conn_t *c, int status, uint64_t bytes);

/* Stops (0) or resumes (1) reading from the client; the body time-out does
 * not run while stopped. */
void pt_http_reading(pt_conn_t *c, int on);

/* Closes a connection now (no response). */
void pt_http_close(pt_conn_t *c);

/* ---- a streamed request (held at its head) ---- */

typedef struct {
    /* A piece of the body, as parsed. Returns 0 (or a status to refuse it). */
    int (*body)(void *ud, const char *data, size_t len);
    /* The whole request was parsed. */
    void (*end)(void *ud);
    /* A write to the client completed: pt_http_out_queued says what waits. */
    void (*drained)(void *ud);
    /* The connection closes or is answered otherwise: the exchange ends now;
     * no callback comes after this one. */
    void (*abort)(void *ud);
} pt_http_sink_ops_t;

/* Sets the sink of c's held request (the request's time starts now). */
void pt_http_stream(pt_conn_t *c, const pt_http_sink_ops_t *ops, void *ud);

/* The sink (or the owner) lets go: no more callbacks reach it. */
void pt_http_detach(pt_conn_t *c);

/* A held request goes on: its body goes to the sink as it comes. */
void pt_http_release(pt_conn_t *c);

/* ---- hand-over: the connection gets a new owner (WebSocket, tunnel) ---- */

typedef struct {
    /* Bytes read (those read past the request come first). */
    void (*data)(void *owner, const char *data, size_t len);
    /* A write to the client completed: pt_http_out_queued says what waits. */
    void (*drained)(void *owner);
    /* The connection is closing: stop using it (only closed comes next). */
    void (*abort)(void *owner);
    /* The handles are closed: free your state. */
    void (*closed)(void *owner);
    /* The worker drains: finish, then pt_http_shutdown or pt_http_close.
     * NULL: the connection closes once the owner ends it. */
    void (*drain)(void *owner);
} pt_http_owner_ops_t;

/* Hands c over to owner: from now on HTTP parses nothing, runs no timer and
 * passes every byte read to ops->data (first the bytes already read past the
 * request); any NULL op is skipped. Returns 0, or -1 when c is closing (the
 * owner gets no callback). */
int pt_http_hand_over(pt_conn_t *c, const pt_http_owner_ops_t *ops, void *owner);

/* The owner of a handed-over connection has copied what it needs of the
 * request (headers, cid, user): the request's state (parser, header arrays,
 * buffers) goes back to the worker's pool, and from now on the request's
 * accessors return empty values (pt_http_cid ""). A tunnel that reports its
 * end with pt_http_response_end keeps the state and does not call it. */
void pt_http_request_done(pt_conn_t *c);

/* The worker's loop has ended: frees the request states of its pool. */
void pt_http_worker_end(pt_worker_t *w);

/* The owner is done: queued output goes out, the write side is shut, then
 * the connection closes; bytes read meanwhile are dropped. */
void pt_http_shutdown(pt_conn_t *c);

#endif
