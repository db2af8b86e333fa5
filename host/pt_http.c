#include "pt_http.h"
#include "pt_accesslog.h"
#include "pt_audit.h"
#include "pt_client_addr.h"
#include "pt_field.h"
#include "pt_log.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PT__LINGER_MS 2000

typedef enum {
    PT_CONN_WAIT = 0, /* no byte of the next request yet */
    PT_CONN_HEAD,     /* reading the request line and headers */
    PT_CONN_BODY,     /* reading the body */
    PT_CONN_HANDLE,   /* the request is with a handler or being written */
    PT_CONN_LINGER,   /* response sent, write side shut: drain input, then close */
    PT_CONN_HELD,     /* streamed: parsing waits at the end of the headers (pt_http_release) */
    PT_CONN_OWNED,    /* handed over: bytes go to the owner */
} pt_conn_state_t;

/* What one request needs while it is read and answered (the parser, its
 * header arrays and buffers, the body, the bytes read ahead, the names the
 * handler found): taken from the worker's pool on the request's first byte,
 * given back once its response is out and the connection is idle (issue
 * 22: an idle keep-alive connection holds none of it). */
typedef struct pt__req_s pt__req_t;
struct pt__req_s {
    pt__req_t *next_free; /* in the worker's pool */
    /* The request parser; its public fields are named here too (rq->parser,
     * rq->head, rq->url_len, rq->headers, rq->n_headers: see pt_http_parser.h). */
    union {
        pt_http_parser_t req;
        struct {
            PT_HTTP_PARSER_FIELDS
        };
    };
    pt_buf_t body;
    pt_buf_t pending; /* bytes read but not parsed (pipelined requests) */
    size_t pending_off;
    uint64_t body_due;        /* loop time the whole body must be in by; 0: no limit */
    uint64_t started_ns;      /* the request was complete (uv_hrtime) */
    const char *channel_name; /* the matched channel, for metrics and the access log */
    int service_known;        /* the service is resolved and allowed: its own metrics label */
    int streamed;             /* the request's body streams to a sink (the head hook said so) */
    const pt_http_sink_ops_t *sink;
    void *sink_ud;
    uint64_t upstream_us;
    char cid[65];
    char service[PT_SERVICE_NAME_MAX + 1];
    char username[256];   /* the authenticated user, "" when none */
    char upstream[80];    /* where the request went (pt_http_set_upstream), "" when nowhere */
    pt_trace_ctx_t trace; /* the server span's context (trace.on 0: tracing is off) */
};

/* Free request states a worker keeps (each about 1.5 KB and its buffers);
 * and the capacity each of its buffers keeps (a larger one is freed when
 * the state goes back): at most some 1 MB a worker after a burst of large
 * requests. */
#define PT__POOL_MAX 64
#define PT__POOL_KEEP 4096

/* A connection: what lives as long as the socket. About 520 bytes; the
 * request's state is in rq only while a request is in progress. */
struct pt_conn_s {
    pt_transport_tcp_t tcp; /* the storage of the transport below */
    pt_transport_t *t;      /* what the connection reads and writes through */
    pt_worker_t *w;
    pt_worker_conn_t wc; /* in the worker's list of connections */
    const pt_http_handler_t *handler;
    pt__req_t *rq;                        /* the request in progress; NULL while idle */
    pt_worker_timer_t timer;              /* in the worker's heap; fires at timer.due */
    uint64_t deadline;                    /* loop time the current time-out ends; 0: none */
    const pt_http_owner_ops_t *owner_ops; /* set once handed over */
    void *owner;
    size_t out_queued;          /* bytes of pt_http_write still queued */
    unsigned served;            /* requests answered on this connection */
    unsigned char state;        /* pt_conn_state_t */
    unsigned char handles_open; /* the transport's handles, until closed */
    unsigned char write_depth;  /* responses written synchronously on this stack */
    unsigned closing : 1;       /* the handles are being closed */
    unsigned reading : 1;       /* the transport reads */
    unsigned in_service : 1;    /* a callback holds this request (pt_http_hold) */
    unsigned dead : 1;          /* handles closed while in_service: freed by pt_http_unhold */
    unsigned close_after : 1;   /* close once the current response is written */
    unsigned linger_close : 1;  /* pt_http_shutdown: close once the write side is shut */
    unsigned hold_reads : 1;    /* pt_http_reading(c, 0): the other side is slow */
    unsigned end_pending : 1;   /* pt_http_response_end waits for out_queued to reach 0 */
    unsigned write_wait : 1;    /* an answer waits in the transport: idle_timeout to get out */
    char peer[48];              /* the client's address, found on first use ("" before) */
};

typedef struct {
    pt_transport_write_t req;
    pt_conn_t *c;
    size_t len;
    char data[];
} pt__write_t;

static void pt__read_off(pt_conn_t *c);
static void pt__send_error(pt_conn_t *c, int status, const char *msg, const char *extra);
static void pt__written(pt_conn_t *c, int status);

const char *pt_http_reason(int status)
{
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 206:
        return "Partial Content";
    case 303:
        return "See Other";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 406:
        return "Not Acceptable";
    case 410:
        return "Gone";
    case 412:
        return "Precondition Failed";
    case 417:
        return "Expectation Failed";
    case 426:
        return "Upgrade Required";
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

/* ---- lifetime ---- */

static const pt_http_parser_ops_t pt__parser_ops;

/* ---- the request states' pool ---- */

static void pt__req_free(pt__req_t *rq)
{
    pt_http_parser_free(&rq->req);
    pt_buf_free(&rq->body);
    pt_buf_free(&rq->pending);
    free(rq);
}

/* A request state for c: from the worker's pool, or new. NULL: out of memory. */
static pt__req_t *pt__req_take(pt_conn_t *c)
{
    pt_worker_t *w = c->w;
    pt__req_t *rq = w->http_pool;
    if (rq) {
        w->http_pool = rq->next_free;
        w->n_http_pool--;
        rq->next_free = NULL;
    } else if (!(rq = calloc(1, sizeof *rq))) {
        return NULL;
    }
    pt_http_parser_init(&rq->req, &pt__parser_ops, c, w->cfg->max_header_bytes);
    return rq;
}

/* Gives rq back to w's pool, emptied: its buffers keep their memory (up to
 * PT__POOL_KEEP) for the next request, everything else starts from zero. */
static void pt__req_put(pt_worker_t *w, pt__req_t *rq)
{
    if (w->n_http_pool >= PT__POOL_MAX) {
        pt__req_free(rq);
        return;
    }
    pt_buf_t head = rq->head, body = rq->body, pending = rq->pending;
    pt_http_header_t *headers = rq->headers;
    size_t cap_headers = rq->req.cap_headers;
    if (head.cap > PT__POOL_KEEP) pt_buf_free(&head);
    if (body.cap > PT__POOL_KEEP) pt_buf_free(&body);
    if (pending.cap > PT__POOL_KEEP) pt_buf_free(&pending);
    memset(rq, 0, sizeof *rq);
    rq->head = head;
    rq->head.len = 0;
    rq->headers = headers;
    rq->req.cap_headers = cap_headers;
    rq->body = body;
    rq->body.len = 0;
    rq->pending = pending;
    rq->pending.len = 0;
    rq->next_free = w->http_pool;
    w->http_pool = rq;
    w->n_http_pool++;
}

/* The request is over and the connection idle: its state goes back. */
static void pt__req_done(pt_conn_t *c)
{
    if (!c->rq) return;
    pt__req_put(c->w, c->rq);
    c->rq = NULL;
}

void pt_http_request_done(pt_conn_t *c)
{
    if (c->rq && !c->rq->sink && c->state == PT_CONN_OWNED) pt__req_done(c);
}

void pt_http_worker_end(pt_worker_t *w)
{
    for (pt__req_t *rq = w->http_pool, *next; rq; rq = next) {
        next = rq->next_free;
        pt__req_free(rq);
    }
    w->http_pool = NULL;
    w->n_http_pool = 0;
}

/* ---- lifetime ---- */

static void pt__free(pt_conn_t *c)
{
    pt__req_done(c);
    free(c);
}

static void pt__on_handles_closed(pt_conn_t *c)
{
    if (--c->handles_open > 0) return;
    pt_metrics_add(&c->w->metrics.connections_open, -1);
    const pt_http_owner_ops_t *ops = c->owner_ops;
    c->owner_ops = NULL;
    if (ops && ops->closed) ops->closed(c->owner);
    pt_worker_conn_remove(c->w, &c->wc);
    if (c->in_service)
        c->dead = 1; /* pt_http_unhold frees it */
    else
        pt__free(c);
}

static void pt__on_transport_closed(pt_transport_t *t, int status)
{
    (void)status;
    pt__on_handles_closed(t->data);
}

/* Ends a streamed exchange: its sink hears of it once, and no more. */
static void pt__sink_abort(pt_conn_t *c)
{
    const pt_http_sink_ops_t *ops = c->rq ? c->rq->sink : NULL;
    if (!ops) return;
    c->rq->sink = NULL;
    if (ops->abort) ops->abort(c->rq->sink_ud);
}

void pt_http_close(pt_conn_t *c)
{
    if (c->closing) return;
    c->closing = 1;
    c->reading = 0;
    pt__sink_abort(c);
    if (c->owner_ops && c->owner_ops->abort) c->owner_ops->abort(c->owner);
    pt_transport_read_stop(c->t);
    pt_worker_timer_stop(c->w, &c->timer);
    pt_transport_close(c->t, pt__on_transport_closed);
}

/* The worker's ops on its list of connections. */
static pt_conn_t *pt__of(pt_worker_conn_t *wc)
{
    return (pt_conn_t *)((char *)wc - offsetof(pt_conn_t, wc));
}

/* Draining: closes c if it waits for a request, else marks it to close after
 * the response in progress; an owner says goodbye its own way. */
static void pt__wc_drain(pt_worker_conn_t *wc)
{
    pt_conn_t *c = pt__of(wc);
    if (c->state == PT_CONN_OWNED && c->owner_ops && c->owner_ops->drain) {
        c->owner_ops->drain(c->owner);
        return;
    }
    if (c->state == PT_CONN_WAIT && (!c->rq || c->rq->pending.len == c->rq->pending_off))
        pt_http_close(c);
    else
        c->close_after = 1;
}

static void pt__wc_close(pt_worker_conn_t *wc)
{
    pt_http_close(pt__of(wc));
}

static const pt_worker_conn_ops_t pt__wc_ops = {.drain = pt__wc_drain, .close = pt__wc_close};

/* ---- timers ---- */

/* Timers are lazy: a connection keeps one deadline, and its node in the
 * worker's timer heap is moved again only when the deadline comes before the
 * time it is armed for. Moving a deadline later, or clearing it, costs no
 * heap operation; a timer that fires early re-arms for what is left. A
 * keep-alive request then costs about no timer work instead of four heap
 * updates. */
static void pt__on_timer(pt_worker_timer_t *t)
{
    pt_conn_t *c = (pt_conn_t *)((char *)t - offsetof(pt_conn_t, timer));
    uint64_t now = uv_now(&c->w->loop);
    if (!c->deadline || c->closing) return;
    if (now < c->deadline) {
        if (pt_worker_timer_start(c->w, &c->timer, c->deadline - now) != 0) pt_http_close(c);
        return;
    }
    c->deadline = 0;
    switch ((pt_conn_state_t)c->state) {
    case PT_CONN_WAIT:
    case PT_CONN_LINGER:
        pt_http_close(c);
        break;
    case PT_CONN_HEAD:
    case PT_CONN_BODY:
        pt__read_off(c);
        c->state = PT_CONN_HANDLE;
        c->close_after = 1;
        if (!c->rq->cid[0]) pt_cid_new(c->rq->cid);
        pt__send_error(c, 408, "the request took too long to arrive", NULL);
        break;
    case PT_CONN_HANDLE:
        /* a client that reads no answer while it pipelines more would
         * otherwise hold the connection, its answer and 256 KiB of its
         * requests for ever */
        if (c->write_wait) pt_http_close(c);
        break;
    case PT_CONN_HELD:
    case PT_CONN_OWNED:
        break;
    }
}

static void pt__timer(pt_conn_t *c, uint64_t ms)
{
    if (c->closing) return;
    c->deadline = uv_now(&c->w->loop) + ms;
    if (c->timer.idx && c->timer.due <= c->deadline)
        return; /* fires no later than needed and re-arms then */
    if (pt_worker_timer_start(c->w, &c->timer, ms) != 0) pt_http_close(c);
}

static void pt__timer_off(pt_conn_t *c)
{
    c->deadline = 0;
}

/* ---- the request, as pt_http_parser hands it over ---- */

/* The body's time-out: body_timeout between two reads, and the whole body
 * by c->rq->body_due (server.body_deadline), so a body dribbled a byte at a time
 * cannot hold a connection for ever. */
static void pt__body_timer(pt_conn_t *c)
{
    uint64_t ms = c->w->cfg->body_timeout_ms;
    if (c->rq->body_due) {
        uint64_t now = uv_now(&c->w->loop);
        uint64_t left = c->rq->body_due > now ? c->rq->body_due - now : 0;
        if (left < ms) ms = left;
    }
    pt__timer(c, ms);
}

/* The body is being read from now on. */
static void pt__body_begins(pt_conn_t *c)
{
    uint64_t d = c->w->cfg->body_deadline_ms;
    c->state = PT_CONN_BODY;
    c->rq->body_due = d ? uv_now(&c->w->loop) + d : 0;
    pt__body_timer(c);
}

static void pt__on_begin(pt_http_parser_t *p)
{
    pt_conn_t *c = p->ud;
    c->state = PT_CONN_HEAD;
    c->rq->body.len = 0;
    c->rq->body_due = 0;
    c->rq->cid[0] = '\0';
    c->rq->trace.on = 0;
    c->rq->channel_name = NULL;
    c->rq->service[0] = '\0';
    c->rq->service_known = 0;
    c->rq->upstream[0] = '\0';
    c->rq->upstream_us = 0;
    c->rq->username[0] = '\0';
    c->rq->started_ns = 0;
    c->rq->streamed = 0;
    /* the head has one deadline from its first byte; the first request's
     * runs from the accept (no idle time before it) */
    if (c->served) pt__timer(c, c->w->cfg->header_timeout_ms);
}

static void pt__on_continue_written(pt_transport_write_t *req, int status)
{
    (void)status;
    free(req);
}

/* The value of header name when it comes exactly once (NULL otherwise:
 * two traceparents are no valid one). */
static const char *pt__only_header(const pt_conn_t *c, const char *name, size_t *len)
{
    const pt_http_parser_t *p = &c->rq->req;
    const char *v = NULL;
    size_t nlen = strlen(name);
    for (size_t i = 0; i < p->n_headers; i++) {
        if (!pt_http_parser_header_is(p, &p->headers[i], name, nlen)) continue;
        if (v) return NULL;
        v = p->head.data + p->headers[i].value_off;
        *len = p->headers[i].value_len;
    }
    return v;
}

static void pt__trace_begin(pt_conn_t *c)
{
    size_t tl = 0, sl = 0;
    const char *tp = pt__only_header(c, "traceparent", &tl);
    const char *ts = tp ? pt__only_header(c, "tracestate", &sl) : NULL;
    pt_trace_begin(&c->rq->trace, tp, tl, ts, sl);
}

/* The server span of the request answered now. */
static void pt__trace_end(pt_conn_t *c, int status, size_t body_len, const char *method,
                          const char *path, size_t path_len)
{
    const char *name = c->rq->channel_name ? c->rq->channel_name : (method ? method : "HTTP");
    pt_span_t *s = pt_span_new(&c->rq->trace, PT_SPAN_SERVER, name, strlen(name));
    if (!s) return;
    if (method) pt_span_plain(s, "http.request.method", method, strlen(method));
    pt_span_str(s, "url.path", path, path_len);
    pt_span_int(s, "http.response.status_code", status);
    pt_span_int(s, "http.response.body.size", (int64_t)body_len);
    if (c->rq->channel_name)
        pt_span_str(s, "portico.channel", c->rq->channel_name, strlen(c->rq->channel_name));
    if (c->rq->service[0])
        pt_span_str(s, "portico.service", c->rq->service, strlen(c->rq->service));
    if (c->rq->username[0]) pt_span_str(s, "enduser.id", c->rq->username, strlen(c->rq->username));
    pt_span_plain(s, "portico.cid", c->rq->cid, strlen(c->rq->cid));
    pt_span_int(s, "portico.security_us", (int64_t)(c->rq->trace.security_ns / 1000));
    if (status >= 500) pt_span_error(s, pt_http_reason(status));
    pt_span_end(s);
}

static int pt__on_head(pt_http_parser_t *p)
{
    pt_conn_t *c = p->ud;
    llhttp_t *lp = &p->parser;
    const pt_config_t *cfg = c->w->cfg;
    size_t len = 0;
    const char *v = NULL;
    if (p->h_cid >= 0) {
        v = p->head.data + p->headers[p->h_cid].value_off;
        len = p->headers[p->h_cid].value_len;
    }
    if (v && pt_cid_valid(v, len)) {
        memcpy(c->rq->cid, v, len);
        c->rq->cid[len] = '\0';
    } else {
        pt_cid_new(c->rq->cid);
    }
    if (pt_trace_enabled()) pt__trace_begin(c);
    if (p->close_after) c->close_after = 1;
    /* the handler decides: a body streamed on (it has no size limit here) or
     * read whole */
    c->rq->streamed = c->handler->head(c);
    if (!c->rq->streamed && (lp->flags & F_CONTENT_LENGTH) &&
        lp->content_length > cfg->max_body_bytes) {
        p->error_msg = "the request body is larger than the limit";
        return 413;
    }
    /* no protocol switch here (one that streams goes on elsewhere): answer, then close */
    if (lp->upgrade) c->close_after = 1;
    int has_body =
        (lp->flags & F_CHUNKED) || ((lp->flags & F_CONTENT_LENGTH) && lp->content_length);
    if (p->h_expect >= 0) {
        v = p->head.data + p->headers[p->h_expect].value_off;
        len = p->headers[p->h_expect].value_len;
        if (len != 12 || strncasecmp(v, "100-continue", 12)) {
            p->error_msg = "only 'Expect: 100-continue' is supported";
            return 417;
        }
        if (has_body && lp->http_major == 1 && lp->http_minor == 1) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            pt_transport_write_t *req = malloc(sizeof *req);
            uv_buf_t buf = uv_buf_init((char *)cont, sizeof cont - 1);
            if (req && pt_transport_write(c->t, req, &buf, 1, pt__on_continue_written)) free(req);
        }
    }
    if (c->rq->streamed) {
        /* parsing waits here until the handler can take the body (pt_http_release) */
        pt__timer_off(c);
        c->state = PT_CONN_HELD;
        return PT_HTTP_PARSER_HOLD;
    }
    pt__body_begins(c);
    return 0;
}

static int pt__on_body(pt_http_parser_t *p, const char *at, size_t len)
{
    pt_conn_t *c = p->ud;
    if (c->rq->streamed) return c->rq->sink ? c->rq->sink->body(c->rq->sink_ud, at, len) : 0;
    if (c->rq->body.len + len > c->w->cfg->max_body_bytes) {
        p->error_msg = "the request body is larger than the limit";
        return 413;
    }
    if (pt_buf_append(&c->rq->body, at, len) != 0) {
        p->error_msg = "out of memory";
        return 500;
    }
    return 0;
}

static void pt__on_done(pt_http_parser_t *p)
{
    pt_conn_t *c = p->ud;
    pt__timer_off(c);
    c->state = PT_CONN_HANDLE;
    if (c->rq->streamed) {
        if (c->rq->sink && c->rq->sink->end) c->rq->sink->end(c->rq->sink_ud);
    } else {
        c->rq->started_ns = uv_hrtime();
    }
}

static const pt_http_parser_ops_t pt__parser_ops = {
    .on_begin = pt__on_begin,
    .on_head = pt__on_head,
    .on_body = pt__on_body,
    .on_done = pt__on_done,
};

/* ---- reading ---- */

static void pt__on_read(pt_transport_t *t, ssize_t nread, const char *data);

/* Reading stays on while a request is handled: bytes of the next pipelined
 * request are kept in c->rq->pending, so a keep-alive request costs no epoll_ctl.
 * Reading stops only when pending grows past this. */
#define PT__PENDING_MAX (256 * 1024)

static int pt__read_on(pt_conn_t *c)
{
    if (c->reading || c->hold_reads) return 0;
    c->reading = 1;
    return pt_transport_read_start(c->t);
}

static void pt__read_off(pt_conn_t *c)
{
    if (c->reading) pt_transport_read_stop(c->t);
    c->reading = 0;
}

/* Parses data. from_pending: data lies in c->rq->pending at pending_off. */
static void pt__feed(pt_conn_t *c, const char *data, size_t len, int from_pending)
{
    size_t used = 0;
    c->rq->req.max_header_bytes = c->w->cfg->max_header_bytes; /* a reload may change it */
    int rc = pt_http_parser_execute(&c->rq->req, data, len, &used);
    if (rc == PT_HTTP_PARSER_MORE) {
        if (from_pending) c->rq->pending.len = c->rq->pending_off = 0;
        return;
    }
    if (rc == PT_HTTP_PARSER_DONE || rc == PT_HTTP_PARSER_HELD) {
        if (from_pending) {
            c->rq->pending_off += used;
        } else if (used < len) {
            c->rq->pending.len = c->rq->pending_off = 0;
            pt_buf_append(&c->rq->pending, data + used, len - used);
        }
        /* a streamed request's end: its sink was told by the parser callback */
        if (!c->rq->streamed || c->state == PT_CONN_HELD) c->handler->request(c);
        return;
    }
    pt__read_off(c);
    pt__timer_off(c);
    int status = c->rq->req.error_status ? c->rq->req.error_status : 400;
    const char *msg = c->rq->req.error_msg ? c->rq->req.error_msg : "malformed HTTP request";
    char why[160];
    if (status == 400) {
        snprintf(why, sizeof why, "malformed HTTP request: %s", msg);
        msg = why;
    }
    if (!c->rq->cid[0]) pt_cid_new(c->rq->cid);
    c->state = PT_CONN_HANDLE;
    c->close_after = 1;
    pt__send_error(c, status, msg, NULL);
}

static void pt__on_read(pt_transport_t *t, ssize_t nread, const char *data)
{
    pt_conn_t *c = t->data;
    if (nread < 0) {
        if (nread == UV_EOF && c->state == PT_CONN_HANDLE) {
            /* The client sent its request and shut its side: answer, then close. */
            pt__read_off(c);
            c->close_after = 1;
            return;
        }
        pt_http_close(c);
        return;
    }
    if (c->state == PT_CONN_OWNED) {
        if (c->owner_ops && c->owner_ops->data) c->owner_ops->data(c->owner, data, (size_t)nread);
        return;
    }
    if (c->state == PT_CONN_LINGER)
        return; /* discarded: the response is out, the socket is closing */
    if (c->state == PT_CONN_HANDLE || c->state == PT_CONN_HELD) {
        if (c->rq->pending_off == c->rq->pending.len) c->rq->pending.len = c->rq->pending_off = 0;
        pt_buf_append(&c->rq->pending, data, (size_t)nread);
        if (c->rq->pending.len - c->rq->pending_off > PT__PENDING_MAX) pt__read_off(c);
        return;
    }
    if (c->state == PT_CONN_BODY) pt__body_timer(c);
    if (!c->rq && !(c->rq = pt__req_take(c))) { /* a request's first byte */
        pt_http_close(c);
        return;
    }
    pt__feed(c, data, (size_t)nread, 0);
}

/* The response is out: shut the write side and drain what the client still
 * sends, so a close never turns into a reset that eats the response. */
static void pt__on_shutdown(pt_transport_t *t, int status)
{
    pt_conn_t *c = t->data;
    if (c->closing) return;
    if (status < 0 || c->linger_close) {
        pt_http_close(c);
        return;
    }
    c->state = PT_CONN_LINGER;
    pt__timer(c, PT__LINGER_MS);
    if (pt__read_on(c) != 0) pt_http_close(c);
}

static void pt__next_request(pt_conn_t *c)
{
    c->served++;
    c->state = PT_CONN_WAIT;
    pt_http_parser_resume(&c->rq->req);
    if (c->rq->pending.len > c->rq->pending_off) {
        pt__feed(c, c->rq->pending.data + c->rq->pending_off,
                 c->rq->pending.len - c->rq->pending_off, 1);
        if (c->state == PT_CONN_HANDLE || c->closing) return;
    }
    if (c->state == PT_CONN_WAIT) {
        /* idle: no byte of the next request yet, so its state goes back */
        pt__req_done(c);
        pt__timer(c, c->w->cfg->idle_timeout_ms);
    }
    if (pt__read_on(c) != 0) pt_http_close(c);
}

/* The response is out (status < 0: it could not be written). */
static void pt__written(pt_conn_t *c, int status)
{
    if (c->closing) return;
    if (status < 0) {
        pt_http_close(c);
        return;
    }
    if (c->close_after || c->w->draining) {
        if (pt_transport_shutdown(c->t, pt__on_shutdown) != 0) pt_http_close(c);
        return;
    }
    pt__next_request(c);
}

static void pt__on_written(pt_transport_write_t *req, int status)
{
    pt__write_t *wr = (pt__write_t *)req;
    pt_conn_t *c = wr->c;
    free(wr);
    c->write_wait = 0;
    pt__written(c, status);
}

/* ---- writing ---- */

/* Counts the answer in the worker's metrics and access log. */
static void pt__observe(pt_conn_t *c, int status, size_t body_len)
{
    pt_worker_t *w = c->w;
    if (!c->rq) return; /* no request (a WebSocket gave its state back) */
    uint64_t now = uv_hrtime();
    uint64_t us = c->rq->started_ns ? (now - c->rq->started_ns) / 1000 : 0;
    /* a client picks the name in the path: it is a label only once known */
    const char *label = !c->rq->channel_name   ? ""
                        : c->rq->service_known ? c->rq->service
                                               : "unknown";
    pt_metrics_observe(&w->metrics, c->rq->channel_name, label, status, us);
    const char *url = c->rq->head.data ? c->rq->head.data : "";
    const char *q = memchr(url, '?', c->rq->url_len);
    if (c->rq->trace.on)
        pt__trace_end(c, status, body_len,
                      c->rq->url_len ? llhttp_method_name(llhttp_get_method(&c->rq->parser)) : NULL,
                      url, q ? (size_t)(q - url) : c->rq->url_len);
    if (!pt_accesslog_enabled()) return;
    char trace_id[33];
    if (c->rq->trace.on) pt_trace_hex(c->rq->trace.trace_id, 16, trace_id);
    char client[PT_HTTP_CLIENT_MAX];
    const char *xff;
    size_t xff_len, ua_len = 0;
    const pt_config_obs_t *obs = &w->cfg->obs;
    pt_client_addr(obs, pt_http_peer(c), &c->rq->req, client, &xff, &xff_len);
    const char *ua = c->rq->url_len ? pt_http_header(c, "user-agent", &ua_len) : NULL;
    pt_accesslog_entry_t e = {
        .cid = c->rq->cid,
        .channel = c->rq->channel_name,
        .service = c->rq->service[0] ? c->rq->service : NULL,
        .method = c->rq->url_len ? llhttp_method_name(llhttp_get_method(&c->rq->parser)) : NULL,
        .path = url,
        .path_len = q ? (size_t)(q - url) : c->rq->url_len,
        .status = status,
        .bytes = body_len,
        .duration_us = us,
        .username = c->rq->username[0] ? c->rq->username : NULL,
        .client = client[0] ? client : NULL,
        .peer = c->peer[0] ? c->peer : NULL,
        .xff = xff,
        .xff_len = xff_len,
        .user_agent = ua,
        .user_agent_len = ua_len,
        .query = q ? q + 1 : NULL,
        .query_len = q ? c->rq->url_len - (size_t)(q + 1 - url) : 0,
        .upstream = c->rq->upstream[0] ? c->rq->upstream : NULL,
        .upstream_us = c->rq->upstream_us,
        .redact = obs->redact_query,
        .n_redact = obs->n_redact_query,
        .trace_id = c->rq->trace.on ? trace_id : NULL,
    };
    pt_accesslog_append(&w->access_buf, &e);
}

/* The audit line of an answer on an audited channel (body NULL: streamed). */
static void pt__audit(pt_conn_t *c, int status, const char *ctype, size_t ctype_len,
                      const char *body, size_t body_len)
{
    const pt_config_obs_t *obs = &c->w->cfg->obs;
    if (!c->rq || !c->rq->channel_name || !pt_audit_running() ||
        !pt_config_obs_audited(obs, c->rq->channel_name))
        return;
    pt_audit_header_t stack[32];
    size_t n = c->rq->req.n_headers;
    pt_audit_header_t *hs = n <= 32 ? stack : malloc(n * sizeof *hs);
    if (!hs) n = 0, hs = stack;
    for (size_t i = 0; i < n; i++) {
        const pt_http_header_t *h = &c->rq->req.headers[i];
        hs[i] = (pt_audit_header_t){.name = c->rq->req.head.data + h->name_off,
                                    .name_len = h->name_len,
                                    .value = c->rq->req.head.data + h->value_off,
                                    .value_len = h->value_len};
    }
    const char *path, *query;
    size_t path_len, query_len, tp_len = 0;
    pt_http_target(c, &path, &path_len, &query, &query_len);
    const char *tp = pt_http_header(c, "traceparent", &tp_len);
    pt_audit_record_t r = {
        .cid = c->rq->cid,
        .channel = c->rq->channel_name,
        .service = c->rq->service[0] ? c->rq->service : NULL,
        .username = c->rq->username[0] ? c->rq->username : NULL,
        .method = llhttp_method_name(llhttp_get_method(&c->rq->parser)),
        .path = path,
        .path_len = path_len,
        .query = query,
        .query_len = query_len,
        .traceparent = tp,
        .traceparent_len = tp_len,
        .status = status,
        .headers = hs,
        .n_headers = n,
        .req_body = c->rq->streamed ? NULL : (c->rq->body.data ? c->rq->body.data : ""),
        .req_body_len = c->rq->streamed ? 0 : c->rq->body.len,
        .resp_ctype = ctype,
        .resp_ctype_len = ctype_len,
        .resp_body = body,
        .resp_body_len = body_len,
        .resp_bytes = body_len,
    };
    pt_audit_submit(obs, &r);
    if (hs != stack) free(hs);
}

/* Copies s to o; returns the end. */
static char *pt__put(char *o, const char *s)
{
    size_t n = strlen(s);
    memcpy(o, s, n);
    return o + n;
}

/* Writes the decimal digits of v at o; returns the end. */
static char *pt__put_uint(char *o, uint64_t v)
{
    return o + pt_u64_digits(v, o);
}

void pt_http_respond(pt_conn_t *c, int status, const char *ctype, size_t ctype_len,
                     const char *extra, size_t extra_len, const char *body, size_t body_len,
                     int refused, const char *why_refused)
{
    /* ctype_len, not strlen: a NUL inside is refused, not a silent cut */
    if ((ctype && !pt_field_value(ctype, ctype_len)) ||
        (extra_len && !pt_field_lines(extra, extra_len))) {
        if (refused) {
            /* the log line names no byte of it: pt__send_error logs the cid */
            pt__send_error(c, refused, why_refused, NULL);
            return;
        }
        extra = NULL; /* our own answers: never sent with a bad header */
        extra_len = 0;
        ctype = "application/json";
        ctype_len = sizeof "application/json" - 1;
    }
    pt__observe(c, status, body_len);
    pt__audit(c, status, ctype, ctype ? ctype_len : 0, body ? body : "", body_len);
    if (c->w->draining || !llhttp_should_keep_alive(&c->rq->parser)) c->close_after = 1;
    /* answered before the whole request was read: the rest cannot be parsed */
    if (c->state == PT_CONN_HELD || c->state == PT_CONN_BODY) c->close_after = 1;
    int head_only = llhttp_get_method(&c->rq->parser) == HTTP_HEAD;
    if (status == 204 || status == 304) body_len = 0; /* these never carry a body */
    int http10 = c->rq->parser.http_major == 1 && c->rq->parser.http_minor == 0;
    size_t cap =
        512 + extra_len + strlen(c->rq->cid) + (ctype ? ctype_len : 0) + (head_only ? 0 : body_len);
    pt__write_t *wr = malloc(sizeof *wr + cap);
    if (!wr) {
        pt_http_close(c);
        return;
    }
    /* no printf here: it was a few per cent of a small JSON answer */
    char *o = wr->data;
    o = pt__put(o, http10 ? "HTTP/1.0 " : "HTTP/1.1 ");
    o = pt__put_uint(o, (uint64_t)status);
    *o++ = ' ';
    o = pt__put(o, pt_http_reason(status));
    o = pt__put(o, "\r\n");
    o = pt__put(o, pt_worker_date(c->w));
    if (status != 204) {
        o = pt__put(o, "Content-Length: ");
        o = pt__put_uint(o, body_len);
        o = pt__put(o, "\r\n");
    }
    o = pt__put(o, "X-Correlation-Id: ");
    o = pt__put(o, c->rq->cid);
    o = pt__put(o, "\r\n");
    if (ctype && body_len) {
        o = pt__put(o, "Content-Type: ");
        memcpy(o, ctype, ctype_len);
        o += ctype_len;
        o = pt__put(o, "\r\n");
    }
    if (c->close_after)
        o = pt__put(o, "Connection: close\r\n");
    else if (http10)
        o = pt__put(o, "Connection: keep-alive\r\n");
    if (extra_len) {
        memcpy(o, extra, extra_len);
        o += extra_len;
    }
    *o++ = '\r';
    *o++ = '\n';
    if (!head_only && body_len) {
        memcpy(o, body, body_len);
        o += body_len;
    }
    wr->c = c;
    wr->len = (size_t)(o - wr->data);
    uv_buf_t buf = uv_buf_init(wr->data, (unsigned)wr->len);
    /* Most answers fit the socket buffer: writing them at once saves the
     * epoll re-arm a queued write costs (libuv 1.44), and the next pipelined
     * request goes on here. depth bounds that recursion; past it the queued
     * write breaks it. */
    if (c->write_depth < 8) {
        int n = pt_transport_try_write(c->t, &buf, 1);
        if (n == (int)wr->len) {
            free(wr);
            c->write_depth++;
            pt__written(c, 0);
            c->write_depth--;
            return;
        }
        if (n > 0)
            buf = uv_buf_init(wr->data + n, (unsigned)(wr->len - (size_t)n));
        else if (n != UV_EAGAIN && n != UV_ENOSYS) {
            free(wr);
            pt_http_close(c);
            return;
        }
    }
    if (pt_transport_write(c->t, &wr->req, &buf, 1, pt__on_written) != 0) {
        free(wr);
        pt_http_close(c);
        return;
    }
    if (c->state == PT_CONN_HANDLE) { /* other states keep their own deadline */
        c->write_wait = 1;
        pt__timer(c, c->w->cfg->idle_timeout_ms);
    }
}

void pt_http_send_error(pt_conn_t *c, int status, const char *msg, const char *extra)
{
    pt__send_error(c, status, msg, extra);
}

static void pt__send_error(pt_conn_t *c, int status, const char *msg, const char *extra)
{
    pt_buf_t b = {0};
    /* an answer of our own ends any streamed exchange (408, a parse error) */
    pt__sink_abort(c);
    pt_buf_printf(&b, "{\"error\":{\"status\":%d,\"message\":\"", status);
    pt_buf_json_escape(&b, msg, strlen(msg));
    pt_buf_printf(&b, "\",\"cid\":\"%s\"}}", c->rq->cid);
    /* 501 and 505 answer what the client sent (a transfer coding, a
     * version): not the gateway's failure */
    if (status >= 500 && status != 501 && status != 505)
        pt_log_write(PT_LOG_ERROR, c->rq->cid, NULL, msg, strlen(msg));
    else
        pt_log_write(PT_LOG_DEBUG, c->rq->cid, NULL, msg, strlen(msg));
    if (b.data)
        pt_http_respond(c, status, "application/json", 16, extra, extra ? strlen(extra) : 0, b.data,
                        b.len, 0, NULL);
    else
        pt_http_close(c);
    pt_buf_free(&b);
}

void pt_http_set_close(pt_conn_t *c)
{
    c->close_after = 1;
}

int pt_http_close_after(const pt_conn_t *c)
{
    return c->close_after;
}

/* ---- streamed responses ---- */

static void pt__on_stream_written(pt_transport_write_t *req, int status)
{
    pt__write_t *wr = (pt__write_t *)req;
    pt_conn_t *c = wr->c; /* write callbacks come before the close callback */
    c->out_queued -= wr->len;
    free(wr);
    if (c->closing) return;
    if (status < 0) {
        pt_http_close(c);
        return;
    }
    if (c->end_pending && c->out_queued == 0) {
        c->end_pending = 0;
        pt__written(c, 0);
        return;
    }
    if (c->rq->sink) {
        if (c->rq->sink->drained) c->rq->sink->drained(c->rq->sink_ud);
    } else if (c->owner_ops && c->owner_ops->drained) {
        c->owner_ops->drained(c->owner);
    }
}

int pt_http_write(pt_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    if (c->closing) return -1;
    size_t total = 0, done = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0) return 0;
    if (c->out_queued == 0) {
        int r = pt_transport_try_write(c->t, bufs, n);
        if (r == (int)total) return 0;
        if (r < 0 && r != UV_EAGAIN && r != UV_ENOSYS) {
            pt_http_close(c);
            return -1;
        }
        done = r > 0 ? (size_t)r : 0;
    }
    pt__write_t *wr = malloc(sizeof *wr + total - done);
    if (!wr) {
        pt_http_close(c);
        return -1;
    }
    size_t skip = done, o = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t len = bufs[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        memcpy(wr->data + o, bufs[i].base + skip, len - skip);
        o += len - skip;
        skip = 0;
    }
    wr->c = c;
    wr->len = o;
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)o);
    if (pt_transport_write(c->t, &wr->req, &b, 1, pt__on_stream_written) != 0) {
        free(wr);
        pt_http_close(c);
        return -1;
    }
    c->out_queued += o;
    return 0;
}

size_t pt_http_out_queued(const pt_conn_t *c)
{
    return c->out_queued;
}

void pt_http_response_end(pt_conn_t *c, int status, uint64_t bytes)
{
    if (c->rq && !c->rq->started_ns) c->rq->started_ns = uv_hrtime();
    pt__observe(c, status, (size_t)bytes);
    pt__audit(c, status, NULL, 0, NULL, (size_t)bytes);
    c->hold_reads = 0;
    if (c->rq) c->rq->sink = NULL;
    if (c->closing) return;
    if (c->state != PT_CONN_HANDLE) c->close_after = 1; /* the request was not read whole */
    if (c->state == PT_CONN_OWNED) {                    /* a tunnel ended: its owner let go */
        c->owner_ops = NULL;
        c->state = PT_CONN_HANDLE;
    }
    if (c->out_queued == 0)
        pt__written(c, 0);
    else
        c->end_pending = 1;
}

void pt_http_reading(pt_conn_t *c, int on)
{
    if (c->closing) return;
    if (!on) {
        c->hold_reads = 1;
        pt__read_off(c);
        if (c->state == PT_CONN_BODY) pt__timer_off(c);
        return;
    }
    c->hold_reads = 0;
    if (c->state == PT_CONN_BODY) pt__body_timer(c);
    if (pt__read_on(c) != 0) pt_http_close(c);
}

void pt_http_stream(pt_conn_t *c, const pt_http_sink_ops_t *ops, void *ud)
{
    c->rq->sink = ops;
    c->rq->sink_ud = ud;
    c->rq->started_ns = uv_hrtime();
}

void pt_http_detach(pt_conn_t *c)
{
    if (c->rq) c->rq->sink = NULL;
    c->owner_ops = NULL;
}

void pt_http_release(pt_conn_t *c)
{
    if (c->closing || c->state != PT_CONN_HELD) return;
    pt__body_begins(c);
    pt_http_parser_resume(&c->rq->req);
    /* fed even when nothing is pending: a request without a body ends here */
    if (c->rq->pending.len > c->rq->pending_off)
        pt__feed(c, c->rq->pending.data + c->rq->pending_off,
                 c->rq->pending.len - c->rq->pending_off, 1);
    else
        pt__feed(c, "", 0, 0);
    if (!c->closing && c->state != PT_CONN_LINGER && pt__read_on(c) != 0) pt_http_close(c);
}

/* ---- hand-over ---- */

int pt_http_hand_over(pt_conn_t *c, const pt_http_owner_ops_t *ops, void *owner)
{
    if (c->closing || !c->rq) return -1;
    c->rq->sink = NULL; /* an exchange that switched protocols goes on as the owner */
    c->owner_ops = ops;
    c->owner = owner;
    c->state = PT_CONN_OWNED;
    c->close_after = 0;
    c->hold_reads = 0;
    pt_worker_timer_stop(c->w, &c->timer);
    c->deadline = 0;
    /* what the client sent right behind its request goes first; pending is
     * not written to again, so its bytes stay valid through the call */
    if (c->rq->pending.len > c->rq->pending_off) {
        const char *data = c->rq->pending.data + c->rq->pending_off;
        size_t len = c->rq->pending.len - c->rq->pending_off;
        c->rq->pending.len = c->rq->pending_off = 0;
        if (ops->data) ops->data(owner, data, len);
    }
    if (!c->closing && c->state == PT_CONN_OWNED && pt__read_on(c) != 0) pt_http_close(c);
    return 0;
}

void pt_http_shutdown(pt_conn_t *c)
{
    if (c->closing) return;
    c->state = PT_CONN_LINGER;
    c->linger_close = 1;
    pt_http_reading(c, 1);
    if (!c->closing && pt_transport_shutdown(c->t, pt__on_shutdown) != 0) pt_http_close(c);
}

/* ---- accessors ---- */

/* What the accessors read while no request is in progress. */
static const pt__req_t pt__no_req;

static const pt__req_t *pt__rq(const pt_conn_t *c)
{
    return c->rq ? c->rq : &pt__no_req;
}

const pt_http_parser_t *pt_http_request(const pt_conn_t *c)
{
    return &pt__rq(c)->req;
}

int pt_http_method(const pt_conn_t *c)
{
    return pt__rq(c)->parser.method;
}

void pt_http_target(const pt_conn_t *c, const char **path, size_t *path_len, const char **query,
                    size_t *query_len)
{
    const pt__req_t *rq = pt__rq(c);
    const char *url = rq->head.data ? rq->head.data : "";
    const char *q = memchr(url, '?', rq->url_len);
    *path = url;
    *path_len = q ? (size_t)(q - url) : rq->url_len;
    *query = q ? q + 1 : "";
    *query_len = q ? rq->url_len - *path_len - 1 : 0;
}

const char *pt_http_header(const pt_conn_t *c, const char *name, size_t *len)
{
    return pt_http_parser_header(&pt__rq(c)->req, name, len);
}

const char *pt_http_body(const pt_conn_t *c, size_t *len)
{
    const pt__req_t *rq = pt__rq(c);
    *len = rq->body.len;
    return rq->body.data ? rq->body.data : "";
}

pt_trace_ctx_t *pt_http_trace(pt_conn_t *c)
{
    return c->rq && c->rq->trace.on ? &c->rq->trace : NULL;
}

const char *pt_http_cid(const pt_conn_t *c)
{
    return pt__rq(c)->cid;
}

pt_worker_t *pt_http_worker(const pt_conn_t *c)
{
    return c->w;
}

const char *pt_http_peer(pt_conn_t *c)
{
    struct sockaddr_storage ss;
    if (c->peer[0] || pt_transport_peer(c->t, &ss) != 0) return c->peer;
    if (ss.ss_family == AF_INET)
        uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof c->peer);
    else if (ss.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof c->peer);
    return c->peer;
}

const uv_tcp_t *pt_http_tcp(const pt_conn_t *c)
{
    return c->t->tcp;
}

pt_transport_t *pt_http_transport(const pt_conn_t *c)
{
    return c->t;
}

void pt_http_set_timeout(pt_conn_t *c, uint64_t ms)
{
    pt__timer(c, ms);
}

int pt_http_held(const pt_conn_t *c)
{
    return c->state == PT_CONN_HELD;
}

int pt_http_request_read(const pt_conn_t *c)
{
    return c->state == PT_CONN_HANDLE;
}

int pt_http_closing(const pt_conn_t *c)
{
    return c->closing;
}

void pt_http_set_route(pt_conn_t *c, const char *channel_name, const char *service)
{
    if (!c->rq) return;
    c->rq->channel_name = channel_name;
    pt_strcpy_cap(c->rq->service, service ? service : "", sizeof c->rq->service);
}

void pt_http_set_upstream(pt_conn_t *c, const char *where, uint64_t us)
{
    if (!c->rq) return;
    pt_strcpy_cap(c->rq->upstream, where ? where : "", sizeof c->rq->upstream);
    c->rq->upstream_us = us;
}

void pt_http_service_known(pt_conn_t *c)
{
    if (!c->rq) return;
    c->rq->service_known = 1;
}

void pt_http_set_username(pt_conn_t *c, const char *username)
{
    if (!c->rq) return;
    pt_strcpy_cap(c->rq->username, username ? username : "", sizeof c->rq->username);
}

const char *pt_http_username(const pt_conn_t *c)
{
    return pt__rq(c)->username;
}

void pt_http_hold(pt_conn_t *c)
{
    c->in_service = 1;
}

int pt_http_unhold(pt_conn_t *c)
{
    c->in_service = 0;
    if (c->dead) {
        pt__free(c);
        return 0;
    }
    return !c->closing;
}

/* ---- accepting ---- */

/* Sets c up over c->t and links it into w's list; returns what
 * pt_worker_conn_add said (c must be closed when it is not 0). */
static int pt__setup(pt_conn_t *c, pt_worker_t *w, const pt_http_handler_t *h)
{
    c->w = w;
    c->handler = h;
    c->t->on_read = pt__on_read;
    c->t->data = c;
    c->timer.cb = pt__on_timer;
    c->handles_open = 1;
    pt_metrics_add(&w->metrics.connections_open, 1);
    pt_metrics_add(&w->metrics.connections_total, 1);
    return pt_worker_conn_add(w, &c->wc, &pt__wc_ops);
}

/* The connection waits for its first request. */
static void pt__begin(pt_conn_t *c)
{
    c->state = PT_CONN_WAIT; /* the request's state is taken with its first byte */
    pt__timer(c, c->w->cfg->header_timeout_ms);
    if (pt__read_on(c) != 0) pt_http_close(c);
}

void pt_http_accept(pt_worker_t *w, uv_stream_t *listener, const pt_http_handler_t *h)
{
    pt_conn_t *c = calloc(1, sizeof *c);
    if (!c) return;
    if (pt_transport_tcp_init(&c->tcp, &w->loop, w->read_buf, sizeof w->read_buf) != 0) {
        free(c);
        return;
    }
    c->t = &c->tcp.base;
    int admitted = pt__setup(c, w, h);
    if (pt_transport_tcp_accept(&c->tcp, listener) != 0 || admitted != 0) {
        pt_http_close(c);
        return;
    }
    pt__begin(c);
}

pt_conn_t *pt_http_start(pt_worker_t *w, pt_transport_t *t, const pt_http_handler_t *h)
{
    pt_conn_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->t = t;
    if (pt__setup(c, w, h) != 0) {
        pt_http_close(c);
        return NULL;
    }
    pt__begin(c);
    return c->closing ? NULL : c;
}
