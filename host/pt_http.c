#include "pt_http.h"
#include "pt_accesslog.h"
#include "pt_log.h"
#include "pt_bus.h"
#include "pt_field.h"
#include "pt_lua.h"
#include "pt_proxy.h"
#include "pt_ratelimit.h"
#include "pt_security.h"
#include "pt_ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PT__LINGER_MS 2000
#define PT__STACK_HEADERS 64

typedef struct {
    uv_write_t req;
    pt_conn_t *c;
    size_t len;
    char data[];
} pt__write_t;

static void pt__dispatch(pt_conn_t *c);
static void pt__read_off(pt_conn_t *c);
static void pt__send_error(pt_conn_t *c, int status, const char *msg, const char *extra);

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

static void pt__free(pt_conn_t *c)
{
    pt_http_parser_free(&c->req);
    pt_buf_free(&c->body);
    pt_buf_free(&c->pending);
    free(c);
}

static void pt__on_handle_closed(uv_handle_t *h)
{
    pt_conn_t *c = h->data;
    if (--c->handles_open > 0) return;
    pt_metrics_add(&c->w->metrics.connections_open, -1);
    if (c->ws) pt_ws_detach(c->ws);
    c->ws = NULL;
    pt_worker_conn_remove(c->w, &c->wc);
    if (c->in_service)
        c->dead = 1; /* the service's done callback frees it */
    else
        pt__free(c);
}

void pt_http_close(pt_conn_t *c)
{
    if (c->closing) return;
    c->closing = 1;
    c->reading = 0;
    if (c->proxy) pt_proxy_abort(c);
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, pt__on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, pt__on_handle_closed);
}

void pt_http_drain(pt_conn_t *c)
{
    if (c->state == PT_CONN_WS) return; /* pt_ws_close_all says goodbye to these */
    if (c->state == PT_CONN_WAIT && c->pending.len == c->pending_off)
        pt_http_close(c);
    else
        c->close_after = 1;
}

/* ---- timers ---- */

/* Timers are lazy: a connection keeps one deadline, and its libuv timer is
 * started again only when the deadline comes before the time it is armed
 * for. Moving a deadline later, or clearing it, costs no timer operation; a
 * timer that fires early re-arms for what is left. A keep-alive request then
 * costs about no timer work instead of four heap updates. */
static void pt__on_timer(uv_timer_t *t)
{
    pt_conn_t *c = t->data;
    uint64_t now = uv_now(t->loop);
    c->timer_due = 0;
    if (!c->deadline) return;
    if (now < c->deadline) {
        c->timer_due = c->deadline;
        uv_timer_start(&c->timer, pt__on_timer, c->deadline - now, 0);
        return;
    }
    c->deadline = 0;
    switch (c->state) {
    case PT_CONN_WAIT:
    case PT_CONN_LINGER:
        pt_http_close(c);
        break;
    case PT_CONN_HEAD:
    case PT_CONN_BODY:
        pt__read_off(c);
        c->state = PT_CONN_HANDLE;
        c->close_after = 1;
        if (!c->cid[0]) pt_cid_new(c->cid);
        pt__send_error(c, 408, "the request took too long to arrive", NULL);
        break;
    case PT_CONN_HANDLE:
        /* a client that reads no answer while it pipelines more would
         * otherwise hold the connection, its answer and 256 KiB of its
         * requests for ever */
        if (c->write_wait) pt_http_close(c);
        break;
    case PT_CONN_WS:
    case PT_CONN_HELD:
    case PT_CONN_TUNNEL:
        break;
    }
}

static void pt__timer(pt_conn_t *c, uint64_t ms)
{
    if (c->closing) return;
    c->deadline = uv_now(&c->w->loop) + ms;
    if (c->timer_due && c->timer_due <= c->deadline)
        return; /* fires no later than needed and re-arms then */
    c->timer_due = c->deadline;
    uv_timer_start(&c->timer, pt__on_timer, ms, 0);
}

static void pt__timer_off(pt_conn_t *c)
{
    c->deadline = 0;
}

/* ---- the request, as pt_http_parser hands it over ---- */

/* The body's time-out: body_timeout between two reads, and the whole body
 * by c->body_due (server.body_deadline), so a body dribbled a byte at a time
 * cannot hold a connection for ever. */
static void pt__body_timer(pt_conn_t *c)
{
    uint64_t ms = c->w->cfg->body_timeout_ms;
    if (c->body_due) {
        uint64_t now = uv_now(&c->w->loop);
        uint64_t left = c->body_due > now ? c->body_due - now : 0;
        if (left < ms) ms = left;
    }
    pt__timer(c, ms);
}

/* The body is being read from now on. */
static void pt__body_begins(pt_conn_t *c)
{
    uint64_t d = c->w->cfg->body_deadline_ms;
    c->state = PT_CONN_BODY;
    c->body_due = d ? uv_now(&c->w->loop) + d : 0;
    pt__body_timer(c);
}

static void pt__on_begin(pt_http_parser_t *p)
{
    pt_conn_t *c = p->ud;
    c->state = PT_CONN_HEAD;
    c->body.len = 0;
    c->body_due = 0;
    c->cid[0] = '\0';
    c->channel_name = NULL;
    c->service[0] = '\0';
    c->username[0] = '\0';
    c->started_ns = 0;
    c->proxied = 0;
    /* the head has one deadline from its first byte; the first request's
     * runs from the accept (no idle time before it) */
    if (c->served) pt__timer(c, c->w->cfg->header_timeout_ms);
}

const char *pt_http_header(pt_conn_t *c, const char *name, size_t *len)
{
    return pt_http_parser_header(&c->req, name, len);
}

static void pt__on_continue_written(uv_write_t *req, int status)
{
    free(req);
}

/* Non-zero when the request goes to an http_proxy channel: its body then
 * streams to the target instead of being read whole first. */
static int pt__proxied(pt_conn_t *c)
{
    const pt_router_t *r = c->w->router;
    const char *url = c->head.data ? c->head.data : "";
    const char *q = memchr(url, '?', c->url_len);
    size_t path_len = q ? (size_t)(q - url) : c->url_len;
    if (!pt_router_may_proxy(r, url, path_len)) return 0;
    char stackbuf[2048];
    char *buf = path_len < sizeof stackbuf ? stackbuf : malloc(path_len + 1);
    pt_route_match_t m;
    if (!buf) return 0;
    int rc = pt_router_match(r, llhttp_get_method(&c->parser), url, path_len, "", 0, buf, &m);
    if (buf != stackbuf) free(buf);
    return rc == 0 && m.channel->type == PT_CHANNEL_HTTP_PROXY;
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
        memcpy(c->cid, v, len);
        c->cid[len] = '\0';
    } else {
        pt_cid_new(c->cid);
    }
    if (p->close_after) c->close_after = 1;
    c->proxied = pt__proxied(c);
    if (!c->proxied && (lp->flags & F_CONTENT_LENGTH) && lp->content_length > cfg->max_body_bytes) {
        p->error_msg = "the request body is larger than the limit";
        return 413;
    }
    /* no protocol switch here (a proxied one goes to the target): answer, then close */
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
            uv_write_t *req = malloc(sizeof *req);
            uv_buf_t buf = uv_buf_init((char *)cont, sizeof cont - 1);
            if (req && uv_write(req, (uv_stream_t *)&c->tcp, &buf, 1, pt__on_continue_written))
                free(req);
        }
    }
    if (c->proxied) {
        /* parsing waits here until a target is connected (pt_http_release) */
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
    if (c->proxied) return c->proxy ? pt_proxy_body(c, at, len) : 0;
    if (c->body.len + len > c->w->cfg->max_body_bytes) {
        p->error_msg = "the request body is larger than the limit";
        return 413;
    }
    if (pt_buf_append(&c->body, at, len) != 0) {
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
    if (c->proxied) {
        if (c->proxy) pt_proxy_request_end(c);
    } else {
        c->started_ns = uv_hrtime();
    }
}

static const pt_http_parser_ops_t pt__parser_ops = {
    .on_begin = pt__on_begin,
    .on_head = pt__on_head,
    .on_body = pt__on_body,
    .on_done = pt__on_done,
};

/* ---- reading ---- */

static void pt__on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    pt_conn_t *c = h->data;
    *buf = uv_buf_init(c->w->read_buf, sizeof c->w->read_buf);
}

static void pt__on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Reading stays on while a request is handled: bytes of the next pipelined
 * request are kept in c->pending, so a keep-alive request costs no epoll_ctl.
 * Reading stops only when pending grows past this. */
#define PT__PENDING_MAX (256 * 1024)

static int pt__read_on(pt_conn_t *c)
{
    if (c->reading || c->hold_reads) return 0;
    c->reading = 1;
    return uv_read_start((uv_stream_t *)&c->tcp, pt__on_alloc, pt__on_read);
}

static void pt__read_off(pt_conn_t *c)
{
    if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
}

/* Parses data. from_pending: data lies in c->pending at pending_off. */
static void pt__feed(pt_conn_t *c, const char *data, size_t len, int from_pending)
{
    size_t used = 0;
    c->req.max_header_bytes = c->w->cfg->max_header_bytes; /* a reload may change it */
    int rc = pt_http_parser_execute(&c->req, data, len, &used);
    if (rc == PT_HTTP_PARSER_MORE) {
        if (from_pending) c->pending.len = c->pending_off = 0;
        return;
    }
    if (rc == PT_HTTP_PARSER_DONE || rc == PT_HTTP_PARSER_HELD) {
        if (from_pending) {
            c->pending_off += used;
        } else if (used < len) {
            c->pending.len = c->pending_off = 0;
            pt_buf_append(&c->pending, data + used, len - used);
        }
        /* a proxied request's end: pt_proxy was told by the parser callback */
        if (!c->proxied || c->state == PT_CONN_HELD) pt__dispatch(c);
        return;
    }
    pt__read_off(c);
    pt__timer_off(c);
    int status = c->req.error_status ? c->req.error_status : 400;
    const char *msg = c->req.error_msg ? c->req.error_msg : "malformed HTTP request";
    char why[160];
    if (status == 400) {
        snprintf(why, sizeof why, "malformed HTTP request: %s", msg);
        msg = why;
    }
    if (!c->cid[0]) pt_cid_new(c->cid);
    c->state = PT_CONN_HANDLE;
    c->close_after = 1;
    pt__send_error(c, status, msg, NULL);
}

static void pt__on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    pt_conn_t *c = s->data;
    if (nread < 0) {
        if (c->state == PT_CONN_WS && c->ws && nread == UV_EOF) {
            pt_http_close(c);
            return;
        }
        if (nread == UV_EOF && c->state == PT_CONN_HANDLE) {
            /* The client sent its request and shut its side: answer, then close. */
            pt__read_off(c);
            c->close_after = 1;
            return;
        }
        pt_http_close(c);
        return;
    }
    if (nread == 0) return;
    if (c->state == PT_CONN_WS) {
        pt_ws_on_read(c->ws, buf->base, (size_t)nread);
        return;
    }
    if (c->state == PT_CONN_LINGER)
        return; /* discarded: the response is out, the socket is closing */
    if (c->state == PT_CONN_TUNNEL) {
        pt_proxy_tunnel_data(c, buf->base, (size_t)nread);
        return;
    }
    if (c->state == PT_CONN_HANDLE || c->state == PT_CONN_HELD) {
        if (c->pending_off == c->pending.len) c->pending.len = c->pending_off = 0;
        pt_buf_append(&c->pending, buf->base, (size_t)nread);
        if (c->pending.len - c->pending_off > PT__PENDING_MAX) pt__read_off(c);
        return;
    }
    if (c->state == PT_CONN_BODY) pt__body_timer(c);
    pt__feed(c, buf->base, (size_t)nread, 0);
}

/* The response is out: shut the write side and drain what the client still
 * sends, so a close never turns into a reset that eats the response. */
static void pt__on_shutdown(uv_shutdown_t *req, int status)
{
    pt_conn_t *c = req->data;
    free(req);
    if (c->closing) return;
    if (status < 0) {
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
    pt_http_parser_resume(&c->req);
    if (c->pending.len > c->pending_off) {
        pt__feed(c, c->pending.data + c->pending_off, c->pending.len - c->pending_off, 1);
        if (c->state == PT_CONN_HANDLE || c->closing) return;
    }
    if (c->state == PT_CONN_WAIT) pt__timer(c, c->w->cfg->idle_timeout_ms);
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
        uv_shutdown_t *sd = malloc(sizeof *sd);
        if (!sd) {
            pt_http_close(c);
            return;
        }
        sd->data = c;
        if (uv_shutdown(sd, (uv_stream_t *)&c->tcp, pt__on_shutdown) != 0) {
            free(sd);
            pt_http_close(c);
        }
        return;
    }
    pt__next_request(c);
}

static void pt__on_written(uv_write_t *req, int status)
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
    uint64_t now = uv_hrtime();
    uint64_t us = c->started_ns ? (now - c->started_ns) / 1000 : 0;
    pt_metrics_observe(&w->metrics, c->channel_name, c->service, status, us);
    if (!pt_accesslog_enabled()) return;
    const char *url = c->head.data ? c->head.data : "";
    const char *q = memchr(url, '?', c->url_len);
    pt_accesslog_entry_t e = {
        .cid = c->cid,
        .channel = c->channel_name,
        .service = c->service[0] ? c->service : NULL,
        .method = c->url_len ? llhttp_method_name(llhttp_get_method(&c->parser)) : NULL,
        .path = url,
        .path_len = q ? (size_t)(q - url) : c->url_len,
        .status = status,
        .bytes = body_len,
        .duration_us = us,
        .username = c->username[0] ? c->username : NULL,
    };
    pt_accesslog_append(&w->access_buf, &e);
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

/* Writes the response: the one place response headers are made. What a
 * service or a bus reply hands over (the content type, the extra
 * "Name: value\r\n" lines) is checked first: a CR, LF or NUL there would
 * add headers or split the response. A bad one is answered with refused (500
 * for a service, 502 for a bus reply) and a JSON error instead; refused 0:
 * the headers are our own (an error answer), and are dropped if bad. */
/* The refusal of a service's answer whose headers are not valid HTTP. */
#define PT__BAD_SERVICE_HEADERS                                                                    \
    "the service's response headers are not valid (a control character or a bad name)"

static void pt__respond(pt_conn_t *c, int status, const char *ctype, size_t ctype_len,
                        const char *extra, size_t extra_len, const char *body, size_t body_len,
                        int refused)
{
    /* ctype_len, not strlen: a NUL inside is refused, not a silent cut */
    if ((ctype && !pt_field_value(ctype, ctype_len)) ||
        (extra_len && !pt_field_lines(extra, extra_len))) {
        if (refused) {
            /* the log line names no byte of it: pt__send_error logs the cid */
            pt__send_error(c, refused,
                           refused == 502 ? "the bus reply's content type is not a valid header"
                                          : PT__BAD_SERVICE_HEADERS,
                           NULL);
            return;
        }
        extra = NULL; /* our own answers: never sent with a bad header */
        extra_len = 0;
        ctype = "application/json";
        ctype_len = sizeof "application/json" - 1;
    }
    pt__observe(c, status, body_len);
    if (c->w->draining || !llhttp_should_keep_alive(&c->parser)) c->close_after = 1;
    /* answered before the whole request was read: the rest cannot be parsed */
    if (c->state == PT_CONN_HELD || c->state == PT_CONN_BODY) c->close_after = 1;
    int head_only = llhttp_get_method(&c->parser) == HTTP_HEAD;
    if (status == 204 || status == 304) body_len = 0; /* these never carry a body */
    int http10 = c->parser.http_major == 1 && c->parser.http_minor == 0;
    size_t cap =
        512 + extra_len + strlen(c->cid) + (ctype ? ctype_len : 0) + (head_only ? 0 : body_len);
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
    o = pt__put(o, c->cid);
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
     * epoll re-arm uv_write does (libuv 1.44), and the next pipelined request
     * goes on here. depth bounds that recursion; past it uv_write breaks it. */
    if (c->write_depth < 8) {
        int n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
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
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &buf, 1, pt__on_written) != 0) {
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
    /* an answer of our own ends any exchange with a target (408, a parse error) */
    if (c->proxy) pt_proxy_abort(c);
    pt_buf_printf(&b, "{\"error\":{\"status\":%d,\"message\":\"", status);
    pt_buf_json_escape(&b, msg, strlen(msg));
    pt_buf_printf(&b, "\",\"cid\":\"%s\"}}", c->cid);
    /* 501 and 505 answer what the client sent (a transfer coding, a
     * version): not the gateway's failure */
    if (status >= 500 && status != 501 && status != 505)
        pt_log_write(PT_LOG_ERROR, c->cid, NULL, msg, strlen(msg));
    else
        pt_log_write(PT_LOG_DEBUG, c->cid, NULL, msg, strlen(msg));
    if (b.data)
        pt__respond(c, status, "application/json", 16, extra, extra ? strlen(extra) : 0, b.data,
                    b.len, 0);
    else
        pt_http_close(c);
    pt_buf_free(&b);
}

/* ---- streamed responses (pt_proxy) ---- */

#define PT__OUT_LOW (64 * 1024)

static void pt__on_stream_written(uv_write_t *req, int status)
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
    if (c->proxy && c->out_queued < PT__OUT_LOW) pt_proxy_client_drained(c);
}

int pt_http_write(pt_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    if (c->closing) return -1;
    size_t total = 0, done = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0) return 0;
    if (c->out_queued == 0) {
        int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
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
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, pt__on_stream_written) != 0) {
        free(wr);
        pt_http_close(c);
        return -1;
    }
    c->out_queued += o;
    return 0;
}

void pt_http_response_end(pt_conn_t *c, int status, uint64_t bytes)
{
    if (!c->started_ns) c->started_ns = uv_hrtime();
    pt__observe(c, status, (size_t)bytes);
    c->hold_reads = 0;
    if (c->closing) return;
    if (c->state != PT_CONN_HANDLE) c->close_after = 1; /* the request was not read whole */
    if (c->state == PT_CONN_TUNNEL) c->state = PT_CONN_HANDLE;
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

void pt_http_release(pt_conn_t *c)
{
    if (c->closing || c->state != PT_CONN_HELD) return;
    pt__body_begins(c);
    pt_http_parser_resume(&c->req);
    /* fed even when nothing is pending: a request without a body ends here */
    if (c->pending.len > c->pending_off)
        pt__feed(c, c->pending.data + c->pending_off, c->pending.len - c->pending_off, 1);
    else
        pt__feed(c, "", 0, 0);
    if (!c->closing && c->state != PT_CONN_LINGER && pt__read_on(c) != 0) pt_http_close(c);
}

/* ---- dispatch ---- */

/* A service or the bus answered: whether c can still take the answer (it
 * may have closed meanwhile, or be gone: then it is freed here). */
static int pt__answer_due(pt_conn_t *c)
{
    c->in_service = 0;
    pt_metrics_add(&c->w->metrics.in_flight, -1);
    if (c->dead) {
        pt__free(c);
        return 0;
    }
    return !c->closing;
}

static void pt__on_service_done(void *ud, const pt_lua_result_t *res)
{
    pt_conn_t *c = ud;
    if (!pt__answer_due(c)) return;
    if (res->headers_invalid) { /* never half of what the service meant to send */
        pt__send_error(c, 500, PT__BAD_SERVICE_HEADERS, NULL);
        return;
    }
    pt__respond(c, res->status, res->content_type, res->content_type_len, res->headers,
                res->headers_len, res->body, res->body_len, 500);
}

static void pt__on_bus_done(void *ud, const pt_bus_result_t *res)
{
    pt_conn_t *c = ud;
    if (!pt__answer_due(c)) return;
    if (res->error)
        pt__send_error(c, res->status, res->error, NULL);
    else
        pt__respond(c, res->status, res->content_type, res->content_type_len, NULL, 0, res->body,
                    res->body_len, 502);
}

/* An amqp_bus request: published without Lua, answered from the reply. */
static void pt__bus(pt_conn_t *c, const pt_route_match_t *m, const char *path, size_t path_len,
                    const char *query, size_t query_len)
{
    size_t ct_len = 0;
    const char *ct = pt_http_header(c, "content-type", &ct_len);
    pt_bus_request_t req = {
        .channel = m->channel,
        .exchange = m->service,
        .rest = m->rest,
        .rest_len = m->rest_len,
        .method = llhttp_method_name(llhttp_get_method(&c->parser)),
        .query = query,
        .query_len = query_len,
        .content_type = ct,
        .content_type_len = ct_len,
        .body = c->body.data ? c->body.data : "",
        .body_len = c->body.len,
        .cid = c->cid,
    };
    (void)path;
    (void)path_len;
    c->in_service = 1;
    pt_metrics_add(&c->w->metrics.in_flight, 1);
    if (pt_bus_send(c->w, &req, pt__on_bus_done, c) != 0) {
        c->in_service = 0;
        pt_metrics_add(&c->w->metrics.in_flight, -1);
        pt__send_error(c, 500, "cannot queue the message", NULL);
    }
}

/* ---- security and rate limits, before any Lua ---- */

static int pt__sec_header(void *ud, const char *name, const char **value, size_t *len)
{
    pt_conn_t *c = ud;
    int n = 0;
    size_t name_len = strlen(name); /* once, not once a header */
    for (size_t i = 0; i < c->n_headers; i++) {
        const pt_http_header_t *h = &c->headers[i];
        if (!pt_http_parser_header_is(&c->req, h, name, name_len)) continue;
        if (n++ == 0) {
            *value = c->head.data + h->value_off;
            *len = h->value_len;
        }
    }
    return n;
}

/* A password check ran on the thread pool; its outcome is in this thread's
 * cache now, so dispatching the request again answers at once. */
static void pt__on_verified(void *ud)
{
    pt_conn_t *c = ud;
    c->in_service = 0;
    if (c->dead) {
        pt__free(c);
        return;
    }
    if (!c->closing) pt__dispatch(c);
}

/* Runs the channel's security and rate limit. Returns 0 to go on (res
 * filled, c->username set), or 1 when the request is answered or waits for
 * a password check. */
static int pt__secure(pt_conn_t *c, const pt_channel_t *ch, const char *query, size_t query_len,
                      pt_security_result_t *res)
{
    char token[2048];
    pt_security_request_t req = {.header = pt__sec_header, .ud = c, .tcp = &c->tcp};
    if (ch->ws_token_param) {
        long n = pt_query_param(query, query_len, ch->ws_token_param, token, sizeof token);
        if (n == -3) { /* which one would be the credential is not ours to guess */
            pt__send_error(c, 400, "the token parameter is given more than once", NULL);
            return 1;
        }
        if (n > 0 && !memchr(token, '\0', (size_t)n)) {
            req.token = token;
            req.token_len = (size_t)n;
        }
    }
    int rc = pt_security_check(c->w->cfg->security, ch->security, &req, res);
    if (rc == PT_SECURITY_VERIFY) {
        c->in_service = 1;
        rc = pt_security_verify(&c->w->loop, res->verify, pt__on_verified, c);
        if (rc == 0) return 1;
        c->in_service = 0;
        pt__send_error(c, 500, "cannot check the password", NULL);
        return 1;
    }
    if (rc == PT_SECURITY_REFUSE) {
        pt__send_error(c, res->status, res->message, res->extra[0] ? res->extra : NULL);
        return 1;
    }
    pt_strcpy_cap(c->username, res->username, sizeof c->username);

    const pt_ratelimit_cfg_t *rl = &ch->rate_limit;
    pt_ratelimit_t *limiter = rl->rate > 0 ? pt_ratelimit_global() : NULL;
    if (limiter) {
        /* one bucket per channel name (and user): it outlives a reload */
        const char *user = rl->per_user ? c->username : "";
        size_t nlen = strlen(ch->name), ulen = strlen(user);
        char kbuf[512];
        char *key = nlen + ulen + 1 <= sizeof kbuf ? kbuf : malloc(nlen + ulen + 1);
        uint32_t retry = 1;
        if (!key) {
            pt__send_error(c, 500, "out of memory", NULL);
            return 1;
        }
        memcpy(key, ch->name, nlen);
        key[nlen] = '\0';
        memcpy(key + nlen + 1, user, ulen);
        rc = pt_ratelimit_take(limiter, key, nlen + 1 + ulen, rl->rate, rl->burst, uv_hrtime(),
                               &retry);
        if (key != kbuf) free(key);
        if (rc == 1) {
            char extra[48];
            snprintf(extra, sizeof extra, "Retry-After: %u\r\n", retry);
            pt__send_error(c, 429, "rate limit exceeded", extra);
            return 1;
        }
    }
    return 0;
}

static void pt__dispatch(pt_conn_t *c)
{
    pt_worker_t *w = c->w;
    const char *url = c->head.data ? c->head.data : "";
    size_t url_len = c->url_len;
    const char *q = memchr(url, '?', url_len);
    size_t path_len = q ? (size_t)(q - url) : url_len;
    const char *query = q ? q + 1 : "";
    size_t query_len = q ? url_len - path_len - 1 : 0;
    int method = llhttp_get_method(&c->parser);
    char stackbuf[2048];
    char *buf = path_len < sizeof stackbuf ? stackbuf : malloc(path_len + 1);
    pt_route_match_t m;
    pt_security_result_t sec;
    char msg[256];

    if (!buf) {
        pt__send_error(c, 500, "out of memory", NULL);
        return;
    }
    int rc = pt_router_match(w->router, method, url, path_len, query, query_len, buf, &m);
    if (rc == 0) {
        c->channel_name = m.channel->name;
        pt_strcpy_cap(c->service, m.service, sizeof c->service);
    }
    if (rc == 400) {
        pt__send_error(c, 400, m.error, NULL);
    } else if (rc == 404) {
        pt__send_error(c, 404, "no channel at this path", NULL);
    } else if (rc == 405) {
        char allow[160], extra[200];
        snprintf(extra, sizeof extra, "Allow: %s\r\n",
                 pt_router_allow_header(m.allow, allow, sizeof allow));
        pt__send_error(c, 405, "method not allowed on this channel", extra);
    } else if ((m.channel->type == PT_CHANNEL_HTTP_PROXY) != (c->state == PT_CONN_HELD)) {
        /* a reload changed the channels between the headers and the body */
        c->close_after = 1;
        pt__send_error(c, 503, "the configuration changed during the request: try again", NULL);
    } else if (pt__secure(c, m.channel, query, query_len, &sec) != 0) {
        /* refused, or dispatched again once a password check is done */
    } else if (m.channel->type == PT_CHANNEL_HTTP_PROXY) {
        if (!m.listed) {
            snprintf(msg, sizeof msg, "unknown service '%s'", m.service);
            pt__send_error(c, 404, msg, NULL);
        } else {
            pt_proxy_start(c, &m, sec.hide_header);
        }
    } else if (m.channel->type == PT_CHANNEL_AMQP_BUS) {
        if (!m.listed) {
            snprintf(msg, sizeof msg, "service '%s' is not on this channel's service_list",
                     m.service);
            pt__send_error(c, 403, msg, NULL);
        } else {
            pt__bus(c, &m, url, path_len, query, query_len);
        }
    } else if (m.channel->type == PT_CHANNEL_WEBSOCKET) {
        /* answers the handshake itself: 101, or the refusal RFC 6455 asks for */
        (void)pt_ws_upgrade(c, m.channel, c->username[0] ? c->username : NULL);
    } else if (!pt_lua_has_service(w->lua, m.service)) {
        snprintf(msg, sizeof msg, "unknown service '%s'", m.service);
        pt__send_error(c, 404, msg, NULL);
    } else if (!m.listed) {
        snprintf(msg, sizeof msg, "service '%s' is not on this channel's allowlist", m.service);
        pt__send_error(c, 403, msg, NULL);
    } else {
        pt_lua_header_t hstack[PT__STACK_HEADERS];
        pt_lua_header_t *hs =
            c->n_headers <= PT__STACK_HEADERS ? hstack : malloc(c->n_headers * sizeof *hs);
        size_t n_hs = 0, hide_len = sec.hide_header ? strlen(sec.hide_header) : 0;
        for (size_t i = 0; hs && i < c->n_headers; i++) {
            /* the credential that let the request in stays here */
            if (hide_len &&
                pt_http_parser_header_is(&c->req, &c->headers[i], sec.hide_header, hide_len))
                continue;
            hs[n_hs].name = c->head.data + c->headers[i].name_off;
            hs[n_hs].name_len = c->headers[i].name_len;
            hs[n_hs].value = c->head.data + c->headers[i].value_off;
            hs[n_hs].value_len = c->headers[i].value_len;
            n_hs++;
        }
        pt_lua_call_t call = {
            .service = m.service,
            .cid = c->cid,
            .method = llhttp_method_name((llhttp_method_t)method),
            .path = url,
            .path_len = path_len,
            .query = query,
            .query_len = query_len,
            .headers = hs,
            .n_headers = n_hs,
            .body = c->body.data,
            .body_len = c->body.len,
            .channel = m.channel,
            .username = c->username[0] ? c->username : NULL,
            .gateway = sec.gateway[0] ? sec.gateway : NULL,
            .params = m.params,
            .n_params = m.n_params,
        };
        c->in_service = 1;
        pt_metrics_add(&w->metrics.in_flight, 1);
        if (pt_lua_dispatch(w->lua, &call, pt__on_service_done, c) != 0) {
            c->in_service = 0;
            pt_metrics_add(&w->metrics.in_flight, -1);
            pt__send_error(c, 500, "cannot start the service", NULL);
        }
        if (hs != hstack) free(hs);
    }
    if (buf != stackbuf) free(buf);
}

/* ---- accepting ---- */

static void pt__wc_drain(pt_worker_conn_t *wc)
{
    pt_http_drain((pt_conn_t *)((char *)wc - offsetof(pt_conn_t, wc)));
}

static void pt__wc_close(pt_worker_conn_t *wc)
{
    pt_http_close((pt_conn_t *)((char *)wc - offsetof(pt_conn_t, wc)));
}

static const pt_worker_conn_ops_t pt__wc_ops = {pt__wc_drain, pt__wc_close};

void pt_http_accept(pt_worker_t *w, uv_stream_t *listener)
{
    pt_conn_t *c = calloc(1, sizeof *c);
    if (!c) return;
    c->w = w;
    uv_tcp_init(&w->loop, &c->tcp);
    uv_timer_init(&w->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    pt_metrics_add(&w->metrics.connections_open, 1);
    pt_metrics_add(&w->metrics.connections_total, 1);
    int refused = pt_worker_conn_add(w, &c->wc, &pt__wc_ops) != 0;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 || refused) {
        pt_http_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    pt_http_parser_init(&c->req, &pt__parser_ops, c, w->cfg->max_header_bytes);
    c->state = PT_CONN_WAIT;
    pt__timer(c, w->cfg->header_timeout_ms);
    if (pt__read_on(c) != 0) pt_http_close(c);
}
