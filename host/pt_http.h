/* pt_http: HTTP/1.1 connections. One request at a time per connection:
 * parsing (pt_http_parser: llhttp and the gate's rules on the request's
 * syntax) pauses at the end of each request and resumes after its response
 * is written, so pipelined requests are answered in order. Limits: header
 * bytes (431), body bytes (413), the head and the body each within a
 * deadline and the body's reads within body_timeout of each other (408),
 * idle keep-alive time-out (close), an answer the client does not read
 * within idle_timeout (close), max_connections for the process. Every
 * error is a JSON body with the cid; every response header a service or a
 * bus hands over is checked before it is written (500/502 when bad). */
#ifndef PT_HTTP_H
#define PT_HTTP_H

#include "pt_worker.h"
#include "pt_http_parser.h"
#include "pt_util.h"

#include <llhttp.h>
#include <uv.h>

typedef struct pt_conn_s pt_conn_t;

typedef enum {
    PT_CONN_WAIT = 0, /* no byte of the next request yet */
    PT_CONN_HEAD,     /* reading the request line and headers */
    PT_CONN_BODY,     /* reading the body */
    PT_CONN_HANDLE,   /* the request is with a service or being written */
    PT_CONN_LINGER,   /* response sent, write side shut: drain input, then close */
    PT_CONN_WS,       /* upgraded: bytes go to pt_ws */
    PT_CONN_HELD,     /* proxied: parsing waits at the end of the headers for the target */
    PT_CONN_TUNNEL,   /* proxied upgrade: bytes go to the target as they are */
} pt_conn_state_t;

struct pt_conn_s {
    uv_tcp_t tcp;
    uv_timer_t timer;
    int handles_open;
    pt_worker_t *w;
    pt_worker_conn_t wc; /* in w's list of connections */
    /* The request parser; its public fields are named here too (c->parser,
     * c->head, c->url_len, c->headers, c->n_headers: see pt_http_parser.h). */
    union {
        pt_http_parser_t req;
        struct {
            PT_HTTP_PARSER_FIELDS
        };
    };
    pt_conn_state_t state;
    unsigned served;    /* requests answered on this connection */
    int closing;        /* uv_close called */
    int reading;        /* uv_read_start is in effect */
    int write_depth;    /* responses written synchronously on this stack */
    uint64_t deadline;  /* loop time the current time-out ends; 0: none */
    uint64_t body_due;  /* loop time the whole body must be in by; 0: no limit */
    uint64_t timer_due; /* loop time the libuv timer fires; 0: not armed */
    int in_service;     /* a service holds this request (done callback pending) */
    int dead;           /* handles closed while in_service: freed by the callback */
    int close_after;    /* close once the current response is written */
    pt_buf_t body;
    pt_buf_t pending; /* bytes read but not parsed (pipelined requests) */
    size_t pending_off;
    char cid[65];
    uint64_t started_ns;      /* the request was complete (uv_hrtime) */
    const char *channel_name; /* the matched channel, for metrics and the access log */
    char service[PT_SERVICE_NAME_MAX + 1];
    char username[256];       /* the authenticated user, "" when none */
    struct pt_ws_s *ws;       /* set once upgraded to a WebSocket */
    struct pt_proxy_s *proxy; /* the request is being proxied (pt_proxy) */
    int proxied;              /* this request goes to an http_proxy channel */
    char peer[48];            /* the client's address, found on first use ("" before) */
    int hold_reads;           /* pt_http_reading(c, 0): the target is slow */
    size_t out_queued;        /* bytes of pt_http_write still in uv_write */
    int end_pending;          /* pt_http_response_end waits for out_queued to reach 0 */
    int write_wait;           /* an answer waits in uv_write: idle_timeout to get out */
};

/* Accepts a connection from the worker's listener. */
void pt_http_accept(pt_worker_t *w, uv_stream_t *listener);

/* The value of the first request header called name (any case), its length
 * in *len; NULL when there is none. Valid while the request is. */
const char *pt_http_header(pt_conn_t *c, const char *name, size_t *len);

/* Answers with a JSON error body {"error": {status, message, cid}}; extra
 * holds more "Name: value\r\n" lines or is NULL. */
void pt_http_send_error(pt_conn_t *c, int status, const char *msg, const char *extra);

/* The reason phrase of status ("Unknown" for codes it does not know). */
const char *pt_http_reason(int status);

/* Writes n buffers to the client as they are (copied when they cannot go at
 * once). Returns 0, or -1 after closing the connection. c->out_queued says
 * how much waits; pt_proxy_client_drained is called when it falls low. */
int pt_http_write(pt_conn_t *c, const uv_buf_t *bufs, unsigned n);

/* A streamed response is complete (status and body bytes for the metrics and
 * the access log): once the queued bytes are out, the connection goes on to
 * the next request, or closes when c->close_after is set. */
void pt_http_response_end(pt_conn_t *c, int status, uint64_t bytes);

/* Stops (0) or resumes (1) reading from the client; the body time-out does
 * not run while stopped. */
void pt_http_reading(pt_conn_t *c, int on);

/* A held request goes on: its body is parsed (pt_proxy_body) as it comes. */
void pt_http_release(pt_conn_t *c);

/* Closes a connection now (no response). */
void pt_http_close(pt_conn_t *c);

/* Draining: closes c if it waits for a request, else marks it to close after
 * the response in progress. */
void pt_http_drain(pt_conn_t *c);

#endif
