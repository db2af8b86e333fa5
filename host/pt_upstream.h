/* pt_upstream: HTTP/1.1 exchanges with the targets of an upstream (a proxied
 * service or an outgoing.http connection), on a worker's loop.
 *
 * Per worker and upstream it keeps: round-robin over the targets; passive
 * health (max_fails failures in a row take a target out for fail_timeout,
 * after which it is tried again); names resolved off the loop and reused for
 * resolve_ttl; idle keep-alive connections (at most keepalive per target).
 *
 * One exchange is one request and its response. The caller gives the request
 * line and headers; pt_upstream adds Host and the blank line, connects (or
 * takes an idle connection), and streams both ways through callbacks with
 * flow control on each side. A connection that fails before any request body
 * was sent is retried once on another target when the caller allows it
 * (idempotent requests); a malformed or refused answer is not. Time-outs: connect_timeout per
 * attempt, read_timeout between two reads of the response; the head must be complete within one
 * read_timeout of the request's end or of the last whole 1xx answer,
 * however it trickles in.
 *
 * https:// targets: TLS (pt_transport_tls, client mode) over the TCP
 * connection, with the upstream's SSL_CTX from the config; connect_timeout
 * covers the handshake and on_ready comes after it. A refused certificate
 * or a broken handshake fails the attempt as PT_UPX_CONNECT, its message
 * naming the target and OpenSSL's reason. New connections resume the
 * target's last session (per worker and target).
 *
 * Pool integrity: a connection goes back to the idle list only when its
 * exchange ended exactly at the end of a message, with nothing read beyond
 * it, the request fully written, and keep-alive agreed (not HTTP/1.0 without
 * keep-alive, no Connection: close, not delimited by the close, no 101).
 * Idle connections are read: any byte, or the close, on one closes it, and
 * one is checked for unread bytes again when it is taken (over TLS also
 * records buffered in the TLS layer). So an answer of one exchange never
 * reaches the caller of another.
 *
 * The set of all upstreams of a config is built per worker and swapped on
 * reload; exchanges in flight keep the old set alive until they end. */
#ifndef PT_UPSTREAM_H
#define PT_UPSTREAM_H

#include "pt_config.h"
#include "pt_metrics.h"
#include "pt_snapshot.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct pt_upstreams_s pt_upstreams_t; /* every upstream of one config, one worker */
typedef struct pt_upstream_s pt_upstream_t;   /* one upstream in that set */
typedef struct pt_upx_s pt_upx_t;             /* one exchange */

/* Why an exchange failed. */
typedef enum {
    PT_UPX_OK = 0,
    PT_UPX_CONNECT = -1, /* no target could be reached (502) */
    PT_UPX_TIMEOUT = -2, /* connect or read time-out (504) */
    PT_UPX_BROKEN = -3,  /* the target closed early or sent an answer refused (502) */
    PT_UPX_NOMEM = -4,   /* out of memory (500) */
} pt_upx_err_t;

/* A response header: pointers valid during on_head only. */
typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} pt_upx_header_t;

typedef struct {
    /* Connected, the head is written: the caller may send body bytes. */
    void (*on_ready)(void *ud);
    /* The response head, checked: status 100..599, token names, values
     * without control bytes, at most one Content-Length, no Transfer-Encoding
     * but "chunked", at most 64 KB, a 101 only with the Upgrade asked for
     * (anything else fails the exchange as PT_UPX_BROKEN, without a retry).
     * 1xx other than 101 are skipped; trailers are read and dropped. chunked
     * / content_length say how the target framed the body (content_length
     * -1: none given; a HEAD, 204 or 304 answer has no body whatever it
     * says). Return 0 to go on, -1 to abort (no more callbacks). */
    int (*on_head)(void *ud, int status, const pt_upx_header_t *headers, size_t n_headers,
                   int64_t content_length, int chunked);
    /* A piece of the response body (decoded from chunked framing), or after
     * a 101 the raw bytes of the tunnel. Valid during the call only. */
    void (*on_body)(void *ud, const char *data, size_t len);
    /* The request bytes queued with pt_upx_write went out: more may come. */
    void (*on_drain)(void *ud);
    /* The exchange is over (err PT_UPX_OK: the whole response arrived, or a
     * tunnel was closed by the target). On a failure msg says why and names
     * the target (for the log and a Lua service), safe says the same of "the
     * target" (for an error answer to a client: no internal address). The
     * exchange is freed after this returns. */
    void (*on_done)(void *ud, pt_upx_err_t err, const char *msg, const char *safe);
    /* Optional (NULL: none): the attempt on target failed (msg says why,
     * naming it) and the exchange tries another target now; the same head
     * goes there. For a span per attempt: it must not call pt_upx_*. */
    void (*on_retry)(void *ud, const char *target, const char *msg);
} pt_upx_handler_t;

/* Builds the runtime of every upstream in snap's config (channels.http_proxy
 * services and outgoing.http) for a worker's loop. The set holds a reference
 * to snap until it is freed. Returns NULL when out of memory. */
pt_upstreams_t *pt_upstreams_new(uv_loop_t *loop, pt_snapshot_t *snap, pt_metrics_t *metrics);

/* Retires a set: idle connections are closed now, the rest when their
 * exchanges end; then it is freed. NULL is fine. */
void pt_upstreams_retire(pt_upstreams_t *set);

/* The runtime of cfg (a pointer into the config the set was built from), or
 * of the outgoing.http connection called name when cfg is NULL. NULL: none. */
pt_upstream_t *pt_upstreams_find(pt_upstreams_t *set, const pt_upstream_cfg_t *cfg,
                                 const char *name);

/* The upstream's config. */
const pt_upstream_cfg_t *pt_upstream_cfg(const pt_upstream_t *u);

/* One request to send. */
typedef struct {
    const char *head; /* "METHOD /path HTTP/1.1\r\n" and header lines (no Host, no blank line) */
    size_t head_len;
    const char *upgrade; /* the Upgrade the client asked for (its tokens), or NULL: a 101
                          * is then refused, as is one naming a protocol not asked for */
    size_t upgrade_len;
    int retry;           /* a failed connection may be retried once on another target */
    int head_only;       /* a HEAD request (no response body) */
    uint64_t timeout_ms; /* overrides read_timeout when > 0 */
} pt_upx_req_t;

/* Starts an exchange; req and what it points to are copied. Callbacks come
 * later, never from inside this call. Returns the exchange in *out and 1 (an
 * idle keep-alive connection took the head: body bytes may follow at once
 * and on_ready will not come) or 0 (connecting: wait for on_ready); or -1
 * when out of memory or no target can be reached at once (no callbacks then:
 * the caller answers itself). */
int pt_upx_start(pt_upstream_t *u, const pt_upx_req_t *req, const pt_upx_handler_t *h, void *ud,
                 pt_upx_t **out);

/* Queues request body bytes (copied; chunk framing is the caller's). Only
 * after on_ready. Returns 0, or 1 when enough is queued that the caller
 * should stop until on_drain. Never calls back: a failed write is reported
 * through on_done from the loop. */
int pt_upx_write(pt_upx_t *x, const char *data, size_t len);

/* pt_upx_write of bufs[0..n) in order, in one system call when the target
 * keeps up. While it does not, what is queued costs its bytes only (one
 * write request in flight, the rest coalesced behind it), however small
 * the pieces. */
int pt_upx_writev(pt_upx_t *x, const uv_buf_t *bufs, unsigned n);

/* The request is complete: the read time-out starts counting. Never calls
 * back. */
void pt_upx_end_request(pt_upx_t *x);

/* Stops (1) or resumes (0) reading the response: the caller's own peer is
 * slow. The read time-out does not run while paused. */
void pt_upx_pause(pt_upx_t *x, int paused);

/* Ends the exchange now without callbacks (the client went away). The
 * connection is closed. */
void pt_upx_abort(pt_upx_t *x);

/* "host:port" of the target the exchange is with ("" before one is chosen). */
const char *pt_upx_target(const pt_upx_t *x);

/* How often the exchange was retried on another target (0 or 1), and the
 * target of the failed first try in *failed (NULL: none); for the trace. */
int pt_upx_retries(const pt_upx_t *x, const char **failed);

#endif
