#include "pt_proxy.h"
#include "pt_field.h"
#include "pt_log.h"
#include "pt_upstream.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PT__OUT_HIGH (256 * 1024) /* answer bytes queued to the client that pause the target */
#define PT__OUT_LOW (64 * 1024)   /* ... and that let it go on */

struct pt_proxy_s {
    pt_conn_t *c;
    pt_upx_t *x;
    int chunked_req;  /* the client's body came chunked: it goes chunked */
    int chunked_resp; /* the answer goes to the client chunked */
    int head_only;    /* HEAD, 204, 304: no answer body */
    int tunnel;       /* after a 101 */
    int status;
    uint64_t bytes;      /* answer body bytes passed on */
    int paused;          /* the target's answer is paused for a slow client */
    int sent;            /* a byte of the answer went to the client: a failure can only close */
    pt_buf_t head;       /* the answer's head, sent with the first body bytes (one write) */
    pt_buf_t out;        /* answer bytes behind the client's writes in flight (pt__emit) */
    uint64_t started_ns; /* the exchange started (the access log's upstream_ms) */
    pt_span_t *span;     /* the client span of the last attempt (NULL: not traced) */
    int attempt;         /* attempts that failed before this one (portico.retry) */
};

static const pt_http_sink_ops_t pt__sink_ops;
static const pt_http_owner_ops_t pt__tunnel_ops;

/* The values of a message's Connection fields: what they name is hop-by-hop
 * too. A message has one or two; more than PT__CONN_MAX is refused. */
#define PT__CONN_MAX 16
typedef struct {
    const char *v[PT__CONN_MAX];
    size_t len[PT__CONN_MAX];
    size_t n;
} pt__conn_list_t;

/* ---- headers ---- */

static int pt__is(const char *p, size_t len, const char *name)
{
    size_t n = strlen(name);
    return len == n && strncasecmp(p, name, n) == 0;
}

/* Adds a Connection field's value; returns 0, or -1 when there are too many. */
static int pt__conn_add(pt__conn_list_t *l, const char *v, size_t len)
{
    if (l->n == PT__CONN_MAX) return -1;
    l->v[l->n] = v;
    l->len[l->n++] = len;
    return 0;
}

/* Hop-by-hop: never forwarded (RFC 9110 7.6.1), nor what any Connection
 * field names. */
static int pt__hop(const char *name, size_t len, const pt__conn_list_t *conns)
{
    /* clang-format off */
#define PT__HOP(s) {s, sizeof s - 1}
    /* clang-format on */
    static const struct {
        const char *name;
        size_t len;
    } hop[] = {PT__HOP("connection"), PT__HOP("keep-alive"),        PT__HOP("proxy-connection"),
               PT__HOP("te"),         PT__HOP("transfer-encoding"), PT__HOP("trailer"),
               PT__HOP("upgrade")};
#undef PT__HOP
    /* lengths first: this runs for every header of every proxied message */
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        if (len == hop[i].len && strncasecmp(name, hop[i].name, len) == 0) return 1;
    for (size_t i = 0; i < conns->n; i++)
        if (pt_field_list_has(conns->v[i], conns->len[i], name, len)) return 1;
    return 0;
}

/* 1 when a client's field is not forwarded as it came (beside the
 * hop-by-hop ones): the gateway writes Host, the framing and the cid
 * itself, answers Expect itself, and Proxy-Authorization is for a proxy
 * that asks for it (RFC 9110 11.7.2), which none does past portico. And
 * the fields with which a client could claim another address, host or
 * scheme than the ones it came with: the gateway is the edge, so its own
 * X-Forwarded-For, -Proto and -Host are the only ones the target gets and
 * a target that believes them cannot be spoofed (docs/dispatch.md,
 * "Forwarded fields"). By length first: this runs for every field of
 * every proxied request. */
static int pt__replaced(const char *name, size_t len)
{
    switch (len) {
    case 4:
        return strncasecmp(name, "host", 4) == 0;
    case 6:
        return strncasecmp(name, "expect", 6) == 0;
    case 9:
        return strncasecmp(name, "forwarded", 9) == 0 || strncasecmp(name, "x-real-ip", 9) == 0;
    case 14:
        return strncasecmp(name, "content-length", 14) == 0;
    case 16:
        if (strncasecmp(name, "x-correlation-id", 16) == 0) return 1;
        break;
    case 19:
        if (strncasecmp(name, "proxy-authorization", 19) == 0) return 1;
        break;
    }
    return len >= 12 && (name[0] | 0x20) == 'x' && strncasecmp(name, "x-forwarded-", 12) == 0;
}

/* The Upgrade of a request that may switch protocols through the proxy:
 * a GET asking for websocket, and only websocket goes on. Any other (h2c
 * above all: once switched, the client would speak HTTP/2 to the target
 * directly, every later request past the gateway's routing and security)
 * is dropped with the rest of the hop-by-hop fields, and the request is an
 * ordinary one (Envoy allows only the upgrades it is configured for). */
static int pt__websocket(const pt_http_parser_t *r)
{
    size_t len = 0;
    const char *v;
    if (!r->parser.upgrade || r->parser.method != HTTP_GET) return 0;
    for (size_t i = 0; i < r->n_headers; i++) {
        const pt_http_header_t *h = &r->headers[i];
        if (!pt__is(r->head.data + h->name_off, h->name_len, "upgrade")) continue;
        v = r->head.data + h->value_off;
        len = h->value_len;
        if (pt_field_list_has(v, len, "websocket", 9)) return 1;
    }
    return 0;
}

/* "<hex len>\r\n" into out (at least 20 bytes); returns its length. A
 * chunk header per body piece on each side: no printf on this path. */
static size_t pt__chunk_size(char *out, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t n = 0, k = 0;
    do {
        tmp[n++] = hex[len & 15];
        len >>= 4;
    } while (len);
    while (n)
        out[k++] = tmp[--n];
    out[k++] = '\r';
    out[k++] = '\n';
    return k;
}

static void pt__line(pt_buf_t *b, const char *name, size_t nlen, const char *value, size_t vlen)
{
    pt_buf_append(b, name, nlen);
    pt_buf_append(b, ": ", 2);
    pt_buf_append(b, value, vlen);
    pt_buf_append(b, "\r\n", 2);
}

/* ---- the answer ---- */

static void pt__free(pt_proxy_t *px)
{
    if (px->span) { /* every way the exchange ends comes here */
        pt_span_int(px->span, "http.response.status_code", px->status);
        pt_span_int(px->span, "http.response.body.size", (int64_t)px->bytes);
        if (!px->status || px->status >= 500) pt_span_error(px->span, "the target failed");
        pt_span_end(px->span);
    }
    pt_buf_free(&px->head);
    pt_buf_free(&px->out);
    free(px);
}

/* Writes the held head (if any) and n more buffers in one go. Returns 0,
 * or -1 when the client connection failed: it is closing, and px is gone
 * unless it was already detached from c. */
static int pt__send(pt_proxy_t *px, uv_buf_t *more, unsigned n)
{
    uv_buf_t bufs[5];
    unsigned k = 0;
    if (px->head.len) bufs[k++] = uv_buf_init(px->head.data, (unsigned)px->head.len);
    if (px->out.len) bufs[k++] = uv_buf_init(px->out.data, (unsigned)px->out.len);
    for (unsigned i = 0; i < n && k < 5; i++)
        bufs[k++] = more[i];
    px->head.len = px->out.len = 0; /* pt_http_write copies what it cannot write at once */
    if (!k) return 0;
    px->sent = 1;
    return pt_http_write(px->c, bufs, k);
}

/* Answer bytes for the client. While its writes are in flight (it reads
 * slower than the target sends) they wait in px->out and go as one write
 * when it drains: the memory a slow client costs is its bytes, not a write
 * request (some 250 bytes) per piece, which a target sending 1-byte chunks
 * made 40 times what the high-water mark counted. Returns pt__send's. */
static int pt__emit(pt_proxy_t *px, uv_buf_t *bufs, unsigned n)
{
    if (pt_http_out_queued(px->c) == 0) return pt__send(px, bufs, n);
    for (unsigned i = 0; i < n; i++)
        if (pt_buf_append(&px->out, bufs[i].base, bufs[i].len) != 0) {
            pt_http_close(px->c); /* out of memory: the answer is cut, visibly */
            return -1;
        }
    px->sent = 1;
    return 0;
}

static void pt__on_ready(void *ud)
{
    pt_proxy_t *px = ud;
    /* the body can be read now: a failed connect before this loses nothing */
    pt_http_release(px->c);
}

static int pt__on_head(void *ud, int status, const pt_upx_header_t *hs, size_t n,
                       int64_t content_length, int chunked)
{
    pt_proxy_t *px = ud;
    pt_conn_t *c = px->c;
    pt_http_set_upstream(c, pt_upx_target(px->x), (uv_hrtime() - px->started_ns) / 1000);
    pt__conn_list_t conns = {.n = 0};
    int has_cid = 0;
    (void)chunked;
    for (size_t i = 0; i < n; i++) {
        if (pt__is(hs[i].name, hs[i].name_len, "connection") &&
            pt__conn_add(&conns, hs[i].value, hs[i].value_len) != 0) {
            static const char why[] = "the target sent too many Connection fields";
            pt_log_write(PT_LOG_WARN, pt_http_cid(c), NULL, why, sizeof why - 1);
            /* answers here: the sink's abort ends the exchange, and -1 says no more */
            pt_http_send_error(c, 502, "the target sent a malformed answer", NULL);
            return -1;
        }
        has_cid |= pt__is(hs[i].name, hs[i].name_len, "x-correlation-id");
    }
    const llhttp_t *lp = &pt_http_request(c)->parser;
    int method = lp->method;
    int http10 = lp->http_major == 1 && lp->http_minor == 0;
    px->status = status;
    px->tunnel = status == 101;
    px->head_only = method == HTTP_HEAD || status == 204 || status == 304;
    if (pt_http_worker(c)->draining || !llhttp_should_keep_alive(lp)) pt_http_set_close(c);
    if (!pt_http_request_read(c) && !px->tunnel) pt_http_set_close(c); /* answered early */

    pt_buf_t *hb = &px->head, b = {0};
    pt_buf_reserve(&b, 512);
    pt_buf_puts(&b, http10 ? "HTTP/1.0 " : "HTTP/1.1 ");
    pt_buf_put_u64(&b, (uint64_t)status);
    pt_buf_append(&b, " ", 1);
    pt_buf_puts(&b, pt_http_reason(status));
    pt_buf_append(&b, "\r\n", 2);
    for (size_t i = 0; i < n; i++) {
        if (pt__hop(hs[i].name, hs[i].name_len, &conns)) continue;
        if (pt__is(hs[i].name, hs[i].name_len, "content-length")) continue; /* framed below */
        pt__line(&b, hs[i].name, hs[i].name_len, hs[i].value, hs[i].value_len);
    }
    if (!has_cid) pt__line(&b, "X-Correlation-Id", 16, pt_http_cid(c), strlen(pt_http_cid(c)));
    if (px->tunnel) {
        for (size_t i = 0; i < n; i++)
            if (pt__is(hs[i].name, hs[i].name_len, "upgrade"))
                pt__line(&b, "Upgrade", 7, hs[i].value, hs[i].value_len);
        pt_buf_puts(&b, "Connection: upgrade\r\n");
    } else {
        if (content_length >= 0 && status != 204) { /* pt_upstream gives none for 204/304 */
            pt_buf_puts(&b, "Content-Length: ");
            pt_buf_put_u64(&b, (uint64_t)content_length);
            pt_buf_append(&b, "\r\n", 2);
        } else if (!px->head_only && !http10)
            px->chunked_resp = 1;
        else if (!px->head_only)
            pt_http_set_close(c); /* HTTP/1.0: the end of the body is the close */
        if (px->chunked_resp) pt_buf_puts(&b, "Transfer-Encoding: chunked\r\n");
        if (pt_http_close_after(c))
            pt_buf_puts(&b, "Connection: close\r\n");
        else if (http10)
            pt_buf_puts(&b, "Connection: keep-alive\r\n");
    }
    pt_buf_append(&b, "\r\n", 2);
    if (!b.data) return -1;
    pt_buf_free(hb);
    *hb = b;
    if (!px->tunnel) return 0;                 /* the head goes with the first body bytes */
    if (pt__send(px, NULL, 0) != 0) return -1; /* c is closing; pt_proxy_abort ran */
    /* from here on both sides are bytes: the connection is the tunnel's
     * (what the client sent after its handshake goes first) */
    pt_http_hand_over(c, &pt__tunnel_ops, px);
    return 0;
}

static void pt__on_body(void *ud, const char *data, size_t len)
{
    pt_proxy_t *px = ud;
    pt_conn_t *c = px->c;
    if (px->head_only && !px->tunnel) return;
    px->bytes += len;
    int rc;
    if (px->chunked_resp) {
        char size[24];
        size_t sn = pt__chunk_size(size, len);
        uv_buf_t bufs[3] = {uv_buf_init(size, (unsigned)sn),
                            uv_buf_init((char *)data, (unsigned)len), uv_buf_init("\r\n", 2)};
        rc = pt__emit(px, bufs, 3);
    } else {
        uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
        rc = pt__emit(px, &buf, 1);
    }
    if (rc != 0) return; /* closing: the exchange was aborted */
    if (pt_http_out_queued(c) + px->out.len >= PT__OUT_HIGH && !px->paused) {
        px->paused = 1;
        pt_upx_pause(px->x, 1);
    }
}

static void pt__on_drain(void *ud)
{
    pt_proxy_t *px = ud;
    pt_http_reading(px->c, 1);
}

static void pt__on_done(void *ud, pt_upx_err_t err, const char *msg, const char *safe)
{
    pt_proxy_t *px = ud;
    pt_conn_t *c = px->c;
    int status = px->status, sent = px->sent;
    uint64_t bytes = px->bytes;
    if (err != PT_UPX_OK && px->x) /* no answer: where it failed, and after how long */
        pt_http_set_upstream(c, pt_upx_target(px->x), (uv_hrtime() - px->started_ns) / 1000);
    if (px->span && px->x) {
        const char *failed, *target = pt_upx_target(px->x);
        int retries = pt_upx_retries(px->x, &failed);
        pt_span_str(px->span, "server.address", target, strlen(target));
        pt_span_int(px->span, "portico.retries", retries);
        pt_span_int(px->span, "portico.retry", px->attempt);
        if (failed) pt_span_str(px->span, "portico.failed_target", failed, strlen(failed));
    }
    px->x = NULL;
    pt_http_detach(c); /* the exchange is over: a close from here on has nothing to abort */
    int rc = 0;
    if (err == PT_UPX_OK) {
        /* the held head (an answer without body bytes) and the last chunk */
        uv_buf_t end = uv_buf_init("0\r\n\r\n", 5);
        rc = pt__send(px, &end, px->chunked_resp ? 1 : 0);
    }
    pt__free(px); /* a held head of a failed answer goes with it */
    if (rc != 0) return;
    if (err == PT_UPX_OK) {
        pt_http_response_end(c, status, bytes);
        return;
    }
    /* the log names the target; the client learns no internal address */
    if (!msg) msg = "the target failed";
    if (!sent) {
        int code = err == PT_UPX_TIMEOUT ? 504 : err == PT_UPX_NOMEM ? 500 : 502;
        pt_log_write(PT_LOG_WARN, pt_http_cid(c), NULL, msg, strlen(msg));
        pt_http_send_error(c, code, safe ? safe : "the target failed", NULL);
        return;
    }
    pt_log_write(PT_LOG_ERROR, pt_http_cid(c), NULL, msg, strlen(msg));
    pt_http_close(c); /* the answer is cut short: the client must see it */
}

/* A failed attempt has a client span of its own, beside the next one's:
 * the target it tried, its number and why it failed. The traceparent sent
 * names the span of the attempt that reaches a target (the last). */
static void pt__on_retry(void *ud, const char *target, const char *msg)
{
    pt_proxy_t *px = ud;
    pt_span_t *a = pt_span_split(px->span);
    pt_span_str(a, "server.address", target, strlen(target));
    pt_span_int(a, "portico.retry", px->attempt++);
    pt_span_error(a, msg);
    pt_span_end(a);
}

static const pt_upx_handler_t pt__handler = {
    .on_ready = pt__on_ready,
    .on_head = pt__on_head,
    .on_body = pt__on_body,
    .on_drain = pt__on_drain,
    .on_done = pt__on_done,
    .on_retry = pt__on_retry,
};

/* ---- the request ---- */

void pt_proxy_start(pt_conn_t *c, const pt_route_match_t *m, const char *hide_header)
{
    pt_worker_t *w = pt_http_worker(c);
    const pt_http_parser_t *r = pt_http_request(c);
    pt_upstream_t *u = pt_upstreams_find(w->upstreams, m->upstream, NULL);
    if (!u) {
        pt_http_send_error(c, 503, "the service's targets are not ready: try again", NULL);
        return;
    }
    pt_proxy_t *px = calloc(1, sizeof *px);
    pt_buf_t b = {0};
    if (!px) {
        pt_http_send_error(c, 500, "out of memory", NULL);
        return;
    }
    px->c = c;
    pt_buf_reserve(&b, 1024); /* one allocation for a usual head */
    int method = r->parser.method;
    const char *url = r->head.data;
    const char *q = memchr(url, '?', r->url_len);

    /* METHOD /rest?query HTTP/1.1 */
    pt_buf_puts(&b, llhttp_method_name((llhttp_method_t)method));
    pt_buf_append(&b, " ", 1);
    if (m->rest_len)
        pt_buf_append(&b, m->rest, m->rest_len);
    else
        pt_buf_append(&b, "/", 1);
    if (q) pt_buf_append(&b, q, (size_t)(url + r->url_len - q));
    pt_buf_puts(&b, " HTTP/1.1\r\n");

    size_t host_len = 0;
    const char *host = pt_http_header(c, "host", &host_len);
    int websocket = pt__websocket(r);
    pt_trace_ctx_t *tc = pt_http_trace(c), child;
    pt__conn_list_t conns = {.n = 0};
    for (size_t i = 0; i < r->n_headers; i++) {
        const pt_http_header_t *h = &r->headers[i];
        if (pt__is(r->head.data + h->name_off, h->name_len, "connection") &&
            pt__conn_add(&conns, r->head.data + h->value_off, h->value_len) != 0) {
            free(px);
            pt_buf_free(&b);
            pt_http_send_error(c, 400, "too many Connection header fields", NULL);
            return;
        }
    }
    for (size_t i = 0; i < r->n_headers; i++) {
        const pt_http_header_t *h = &r->headers[i];
        const char *name = r->head.data + h->name_off, *value = r->head.data + h->value_off;
        if (pt__hop(name, h->name_len, &conns)) continue;
        if (pt__replaced(name, h->name_len) ||
            (hide_header && pt__is(name, h->name_len, hide_header)))
            continue;
        /* traced: the target's parent is the gateway's span, not the client's */
        if (tc &&
            (pt__is(name, h->name_len, "traceparent") || pt__is(name, h->name_len, "tracestate")))
            continue;
        pt__line(&b, name, h->name_len, value, h->value_len);
    }
    pt_buf_puts(&b, "X-Forwarded-For: ");
    pt_buf_puts(&b, pt_http_peer(c));
    pt_buf_puts(&b, "\r\nX-Forwarded-Proto: http\r\n");
    if (host) pt__line(&b, "X-Forwarded-Host", 16, host, host_len);
    pt_buf_puts(&b, "X-Correlation-Id: ");
    pt_buf_puts(&b, pt_http_cid(c));
    pt_buf_puts(&b, "\r\nVia: 1.1 portico\r\n");
    if (tc) {
        char tp[PT_TRACEPARENT_LEN + 1];
        pt_trace_child(tc, &child);
        pt_trace_format(&child, tp);
        pt__line(&b, "traceparent", 11, tp, PT_TRACEPARENT_LEN);
        if (child.state_len) pt__line(&b, "tracestate", 10, child.state, child.state_len);
        const pt_upstream_cfg_t *ucfg = pt_upstream_cfg(u);
        px->span = pt_span_new(&child, PT_SPAN_CLIENT, "proxy", 5);
        pt_span_str(px->span, "http.request.method", llhttp_method_name((llhttp_method_t)method),
                    strlen(llhttp_method_name((llhttp_method_t)method)));
        if (ucfg->name) pt_span_str(px->span, "portico.upstream", ucfg->name, strlen(ucfg->name));
        pt_span_str(px->span, "url.path", m->rest_len ? m->rest : "/",
                    m->rest_len ? m->rest_len : 1);
        pt_span_str(px->span, "portico.cid", pt_http_cid(c), strlen(pt_http_cid(c)));
    }
    if (r->parser.flags & F_CHUNKED) {
        px->chunked_req = 1;
        pt_buf_puts(&b, "Transfer-Encoding: chunked\r\n");
    } else if (r->parser.flags & F_CONTENT_LENGTH) {
        pt_buf_puts(&b, "Content-Length: ");
        pt_buf_put_u64(&b, r->parser.content_length);
        pt_buf_append(&b, "\r\n", 2);
    }
    /* the 101 must switch to this (pt_upstream checks it) */
    if (websocket) pt_buf_puts(&b, "Connection: upgrade\r\nUpgrade: websocket\r\n");
    if (!b.data) {
        pt__free(px);
        pt_http_send_error(c, 500, "out of memory", NULL);
        return;
    }
    int idempotent = method == HTTP_GET || method == HTTP_HEAD || method == HTTP_PUT ||
                     method == HTTP_DELETE || method == HTTP_OPTIONS || method == HTTP_TRACE;
    pt_http_stream(c, &pt__sink_ops, px);
    pt_upx_req_t req = {.head = b.data,
                        .head_len = b.len,
                        .upgrade = websocket ? "websocket" : NULL,
                        .upgrade_len = websocket ? 9 : 0,
                        .retry = idempotent,
                        .head_only = method == HTTP_HEAD};
    px->started_ns = uv_hrtime();
    int rc = pt_upx_start(u, &req, &pt__handler, px, &px->x);
    pt_buf_free(&b);
    if (rc < 0) {
        pt_http_detach(c);
        pt__free(px);
        pt_http_send_error(c, 502, "no target of the service can be reached", NULL);
        return;
    }
    if (rc == 1) pt_http_release(c); /* a kept-alive connection took the head */
}

/* ---- the client side: the held request's sink, then the tunnel ---- */

/* A piece of the request body, as parsed. */
static int pt__sink_body(void *ud, const char *data, size_t len)
{
    pt_proxy_t *px = ud;
    int rc;
    if (!px->x) return 0;
    if (px->chunked_req) {
        char size[24];
        uv_buf_t bufs[3] = {uv_buf_init(size, (unsigned)pt__chunk_size(size, len)),
                            uv_buf_init((char *)data, (unsigned)len), uv_buf_init("\r\n", 2)};
        rc = pt_upx_writev(px->x, bufs, 3);
    } else {
        rc = pt_upx_write(px->x, data, len);
    }
    if (rc) pt_http_reading(px->c, 0); /* the target is slower than the client: wait for on_drain */
    return 0;
}

/* The whole request was parsed. */
static void pt__sink_end(void *ud)
{
    pt_proxy_t *px = ud;
    if (!px->x) return;
    if (px->chunked_req) pt_upx_write(px->x, "0\r\n\r\n", 5);
    pt_upx_end_request(px->x);
}

/* The client took what was queued for it: the answer may flow again. */
static void pt__client_drained(void *ud)
{
    pt_proxy_t *px = ud;
    pt_conn_t *c = px->c;
    if (pt_http_out_queued(c) >= PT__OUT_LOW) return;
    if (px->out.len && pt__send(px, NULL, 0) != 0) return; /* closing: px is gone */
    if (!px->x || !px->paused || pt_http_out_queued(c) >= PT__OUT_HIGH) return;
    px->paused = 0;
    pt_upx_pause(px->x, 0);
}

/* The client connection is closing or answered otherwise: the exchange with
 * the target ends now, without callbacks. */
static void pt__abort(void *ud)
{
    pt_proxy_t *px = ud;
    if (px->x) pt_upx_abort(px->x);
    px->x = NULL;
    pt__free(px);
}

/* Bytes from the client after a 101: they go to the target as they are. */
static void pt__tunnel_data(void *ud, const char *data, size_t len)
{
    pt_proxy_t *px = ud;
    if (!px->x) return;
    if (pt_upx_write(px->x, data, len)) pt_http_reading(px->c, 0);
}

static const pt_http_sink_ops_t pt__sink_ops = {
    .body = pt__sink_body,
    .end = pt__sink_end,
    .drained = pt__client_drained,
    .abort = pt__abort,
};

/* No drain op: a draining worker closes the tunnel once it ends. */
static const pt_http_owner_ops_t pt__tunnel_ops = {
    .data = pt__tunnel_data,
    .drained = pt__client_drained,
    .abort = pt__abort,
};
