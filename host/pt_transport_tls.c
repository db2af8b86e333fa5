#include "pt_transport_tls.h"
#include "pt_log.h"
#include "pt_metrics.h"

#include <openssl/err.h>

#include <stdlib.h>
#include <string.h>

/* A queued write of plaintext that waits for the handshake (client mode). */
struct pt__tls_pending_s {
    pt__tls_pending_t *next;
    pt_transport_write_t *req;
    unsigned n;
    uv_buf_t bufs[];
};

/* A chunk of ciphertext in the inner transport's queue. */
typedef struct {
    pt_transport_write_t w; /* first */
    pt_transport_tls_t *t;
    pt_transport_write_t *outer; /* the owner's write it ends, or NULL */
    size_t len;
    char data[];
} pt__chunk_t;

static const char *const pt__versions[] = {"TLSv1.2", "TLSv1.3"};

/* ---- metrics ---- */

static int pt__reason(void)
{
    unsigned long e = ERR_peek_error();
    int r = ERR_GET_REASON(e);
    ERR_clear_error();
    switch (r) {
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
        return PT_METRICS_TLS_PLAINTEXT;
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
        return PT_METRICS_TLS_VERSION;
    case SSL_R_NO_SHARED_CIPHER:
        return PT_METRICS_TLS_CIPHER;
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
        return PT_METRICS_TLS_CERTIFICATE;
    default:
        /* the peer refused us (an alert: our certificate, say) */
        if (r >= SSL_AD_REASON_OFFSET && r < SSL_AD_REASON_OFFSET + 256)
            return PT_METRICS_TLS_ALERT;
        return PT_METRICS_TLS_PROTOCOL;
    }
}

static const char *const pt__reasons[PT_METRICS_TLS_REASONS] = {
    "plaintext", "version", "cipher", "certificate", "alert", "protocol", "eof", "timeout"};

static void pt__fail(pt_transport_tls_t *t, int reason)
{
    if (t->failed || t->handshake_done) return;
    t->failed = 1;
    if (t->client) return; /* the figures are the listeners' */
    pt_metrics_inc(&pt_metrics_tls_failures[reason], 1);
    /* a client's mistake, not the server's: debug only (a scan would flood the log) */
    if (pt_log_enabled(PT_LOG_DEBUG)) {
        struct sockaddr_storage ss;
        char host[64] = "?";
        if (pt_transport_peer(t->inner, &ss) == 0) {
            if (ss.ss_family == AF_INET6)
                uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof host);
            else
                uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof host);
        }
        pt_log_debug("TLS handshake from %s failed: %s", host, pt__reasons[reason]);
    }
}

static void pt__handshake_done(pt_transport_tls_t *t)
{
    t->handshake_done = 1;
    if (t->client) return; /* the figures are the listeners' */
    int v = SSL_version(t->ssl);
    t->version = v == TLS1_3_VERSION ? 2 : v == TLS1_2_VERSION ? 1 : 0;
    if (t->version) {
        pt_metrics_inc(&pt_metrics_tls_handshakes[t->version - 1], 1);
        pt_metrics_inc(&pt_metrics_tls_open[t->version - 1], 1);
    }
    if (SSL_session_reused(t->ssl)) pt_metrics_inc(&pt_metrics_tls_resumed, 1);
    if (t->on_handshake) t->on_handshake(t);
}

/* ---- ciphertext out ---- */

static void pt__chunk_written(pt_transport_write_t *w, int status)
{
    pt__chunk_t *ch = (pt__chunk_t *)w;
    pt_transport_write_t *outer = ch->outer;
    ch->t->queued--;
    free(ch);
    if (outer) outer->cb(outer, status);
}

/* Sends what the SSL wrote into its write BIO: straight to the socket when
 * nothing is queued before it, else (and what the socket did not take) as
 * a queued copy. outer: the owner's write that ends with these bytes (its
 * callback runs once they are out). Returns 0 or a libuv error (outer's
 * callback is then not called). */
static int pt__flush(pt_transport_tls_t *t, pt_transport_write_t *outer)
{
    char *p;
    long len = BIO_get_mem_data(t->wbio, &p);
    if (len < 0) len = 0;
    if (len == 0 && !outer) return 0;
    if (len > 0 && !outer && t->queued == 0 && !t->closing) {
        uv_buf_t b = uv_buf_init(p, (unsigned)len);
        int k = pt_transport_try_write(t->inner, &b, 1);
        if (k == len) {
            (void)BIO_reset(t->wbio);
            return 0;
        }
        if (k < 0 && k != UV_EAGAIN) return k;
        if (k > 0) p += k, len -= k;
    }
    pt__chunk_t *ch = malloc(sizeof *ch + (size_t)len);
    if (!ch) return UV_ENOMEM;
    ch->t = t;
    ch->outer = outer;
    ch->len = (size_t)len;
    memcpy(ch->data, p, (size_t)len);
    (void)BIO_reset(t->wbio);
    uv_buf_t b = uv_buf_init(ch->data, (unsigned)len);
    int rc = pt_transport_write(t->inner, &ch->w, &b, 1, pt__chunk_written);
    if (rc != 0) {
        free(ch);
        return rc;
    }
    t->queued++;
    return 0;
}

/* Encrypts bufs into the write BIO (memory BIOs take every byte). Returns
 * the plaintext bytes taken, or UV_EPROTO. */
static int pt__encrypt(pt_transport_tls_t *t, const uv_buf_t *bufs, unsigned n)
{
    int total = 0;
    for (unsigned i = 0; i < n; i++) {
        if (bufs[i].len == 0) continue;
        int k = SSL_write(t->ssl, bufs[i].base, (int)bufs[i].len);
        if (k <= 0) {
            ERR_clear_error();
            return UV_EPROTO;
        }
        total += k;
    }
    return total;
}

/* The handshake is done: plaintext that waited goes out in order. */
static void pt__send_pending(pt_transport_tls_t *t)
{
    while (t->pending && !t->closing) {
        pt__tls_pending_t *p = t->pending;
        t->pending = p->next;
        if (!t->pending) t->pending_tail = &t->pending;
        pt_transport_write_t *req = p->req;
        int rc = pt__encrypt(t, p->bufs, p->n);
        free(p);
        if (rc >= 0) rc = pt__flush(t, req);
        if (rc < 0) req->cb(req, rc);
    }
}

/* ---- plaintext in ---- */

static void pt__deliver(pt_transport_tls_t *t, ssize_t nread, const char *data)
{
    if (nread < 0) {
        if (t->eof_delivered) return;
        t->eof_delivered = 1;
    }
    t->base.on_read(&t->base, nread, data);
}

/* Runs the handshake on what was read, then decrypts into the read buffer
 * and hands each piece to the owner while it reads. */
static void pt__run(pt_transport_tls_t *t)
{
    if (t->pumping || t->closing) return;
    t->pumping = 1;
    if (!t->handshake_done && !t->failed) {
        int r = SSL_do_handshake(t->ssl);
        int fr = pt__flush(t, NULL);
        if (r == 1) {
            pt__handshake_done(t);
            pt__send_pending(t);
        } else {
            int e = SSL_get_error(t->ssl, r);
            if (e != SSL_ERROR_WANT_READ || fr < 0) {
                pt__fail(t, e == SSL_ERROR_WANT_READ ? PT_METRICS_TLS_EOF : pt__reason());
                /* nothing more is read (or kept) from this peer; the owner
                 * hears of it now, or at its next read_start */
                pt_transport_read_stop(t->inner);
                if (!t->eof) t->eof = UV_EPROTO;
                if (t->reading) pt__deliver(t, UV_EPROTO, NULL);
                t->pumping = 0;
                return;
            }
        }
    }
    while (t->handshake_done && t->reading && !t->closing && !t->eof_delivered) {
        int n = SSL_read(t->ssl, t->base.read_buf, (int)t->base.read_size);
        if (n > 0) {
            pt__deliver(t, n, t->base.read_buf);
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        if (e == SSL_ERROR_WANT_READ) break;
        ERR_clear_error();
        /* close_notify: the end of the input; anything else is broken */
        pt__deliver(t, e == SSL_ERROR_ZERO_RETURN ? UV_EOF : UV_EPROTO, NULL);
    }
    if (!t->closing && pt__flush(t, NULL) < 0 && t->reading) pt__deliver(t, UV_EPROTO, NULL);
    if (t->eof && t->reading && !t->closing && !t->eof_delivered &&
        (!t->handshake_done || (SSL_pending(t->ssl) == 0 && BIO_ctrl_pending(t->rbio) == 0))) {
        if (!t->handshake_done) pt__fail(t, PT_METRICS_TLS_EOF);
        pt__deliver(t, t->eof, NULL);
    }
    t->pumping = 0;
}

static void pt__inner_read(pt_transport_t *inner, ssize_t nread, const char *data)
{
    pt_transport_tls_t *t = inner->data;
    if (nread < 0) {
        t->eof = (int)nread;
        pt_transport_read_stop(inner);
    } else if (BIO_write(t->rbio, data, (int)nread) != (int)nread) {
        t->eof = UV_ENOMEM;
        pt_transport_read_stop(inner);
    }
    pt__run(t);
}

static void pt__on_pump(uv_idle_t *h)
{
    pt_transport_tls_t *t = h->data;
    uv_idle_stop(h);
    pt__run(t);
}

/* ---- the ops ---- */

static int pt__read_start(pt_transport_t *base)
{
    pt_transport_tls_t *t = (pt_transport_tls_t *)base;
    if (t->reading) return 0;
    t->reading = 1;
    if (!t->eof) {
        int rc = pt_transport_read_start(t->inner);
        if (rc != 0) return rc;
    }
    /* what was read (or decrypted) while reading was off, a client's first
     * flight, or an end of input not told yet: on the next loop turn, not
     * inside the owner's call */
    if (BIO_ctrl_pending(t->rbio) > 0 || SSL_pending(t->ssl) > 0 || t->eof ||
        (t->client && !t->handshake_done))
        uv_idle_start(&t->pump, pt__on_pump);
    return 0;
}

static void pt__read_stop(pt_transport_t *base)
{
    pt_transport_tls_t *t = (pt_transport_tls_t *)base;
    t->reading = 0;
    uv_idle_stop(&t->pump);
    pt_transport_read_stop(t->inner);
}

static int pt__try_write(pt_transport_t *base, const uv_buf_t *bufs, unsigned n)
{
    pt_transport_tls_t *t = (pt_transport_tls_t *)base;
    if (!t->handshake_done || t->queued > 0 || t->pending || t->closing || t->shut)
        return UV_EAGAIN;
    int total = pt__encrypt(t, bufs, n);
    if (total < 0) return total;
    int rc = pt__flush(t, NULL);
    return rc < 0 ? rc : total;
}

static int pt__write(pt_transport_t *base, pt_transport_write_t *req, const uv_buf_t *bufs,
                     unsigned n, pt_transport_write_cb cb)
{
    pt_transport_tls_t *t = (pt_transport_tls_t *)base;
    req->t = base;
    req->cb = cb;
    if (t->closing || t->shut) return UV_EPIPE;
    if (!t->handshake_done || t->pending) {
        pt__tls_pending_t *p = malloc(sizeof *p + n * sizeof(uv_buf_t));
        if (!p) return UV_ENOMEM;
        p->next = NULL;
        p->req = req;
        p->n = n;
        memcpy(p->bufs, bufs, n * sizeof(uv_buf_t));
        *t->pending_tail = p;
        t->pending_tail = &p->next;
        return 0;
    }
    int rc = pt__encrypt(t, bufs, n);
    return rc < 0 ? rc : pt__flush(t, req);
}

static void pt__inner_shut(pt_transport_t *inner, int status)
{
    pt_transport_tls_t *t = inner->data;
    t->base.on_shutdown(&t->base, status);
}

static int pt__shutdown(pt_transport_t *base, pt_transport_cb cb)
{
    pt_transport_tls_t *t = (pt_transport_tls_t *)base;
    base->on_shutdown = cb;
    if (t->handshake_done && !t->shut) {
        t->shut = 1;
        (void)SSL_shutdown(t->ssl); /* close_notify into the write BIO */
        ERR_clear_error();
        int rc = pt__flush(t, NULL);
        if (rc < 0) return rc;
    }
    t->shut = 1;
    return pt_transport_shutdown(t->inner, pt__inner_shut);
}

static void pt__closed_one(pt_transport_tls_t *t)
{
    if (--t->handles > 0) return;
    /* queued writes hear of the end before the close callback */
    while (t->pending) {
        pt__tls_pending_t *p = t->pending;
        t->pending = p->next;
        p->req->cb(p->req, UV_ECANCELED);
        free(p);
    }
    t->pending_tail = &t->pending;
    if (!t->handshake_done) pt__fail(t, PT_METRICS_TLS_TIMEOUT);
    if (t->version) pt_metrics_inc(&pt_metrics_tls_open[t->version - 1], -1);
    /* SSL_free drops a session from the server's cache when no
     * close_notify went out, so a client that simply closed (or one closed
     * at idle_timeout) could never resume by session id; a fatal error
     * dropped it already (OpenSSL does on every fatal alert). */
    if (t->handshake_done && !t->client)
        SSL_set_shutdown(t->ssl, SSL_get_shutdown(t->ssl) | SSL_SENT_SHUTDOWN);
    SSL_free(t->ssl);
    t->ssl = NULL;
    pt_tls_ctx_unref(t->ctx);
    t->ctx = NULL;
    /* read before the close callback: the owner may free t in it (the
     * contract allows it), and on_free is then gone with t */
    void (*on_free)(pt_transport_tls_t *) = t->on_free;
    if (t->base.on_close) t->base.on_close(&t->base, 0);
    if (on_free) on_free(t);
}

static void pt__inner_closed(pt_transport_t *inner, int status)
{
    pt__closed_one(inner->data);
}

static void pt__pump_closed(uv_handle_t *h)
{
    pt__closed_one(h->data);
}

static void pt__close(pt_transport_t *base, pt_transport_cb cb)
{
    pt_transport_tls_t *t = (pt_transport_tls_t *)base;
    if (t->closing) return;
    /* A close_notify when the socket takes it now (nothing is queued before
     * it): the peer sees an orderly end rather than a truncation, as after
     * shutdown. Never waited for: the owner is done with the connection. */
    if (t->handshake_done && !t->shut && !t->failed && t->queued == 0) {
        t->shut = 1;
        (void)SSL_shutdown(t->ssl);
        ERR_clear_error();
        char *p;
        long len = BIO_get_mem_data(t->wbio, &p);
        if (len > 0) {
            uv_buf_t b = uv_buf_init(p, (unsigned)len);
            (void)pt_transport_try_write(t->inner, &b, 1);
        }
        (void)BIO_reset(t->wbio);
    }
    t->closing = 1;
    t->reading = 0;
    base->on_close = cb;
    uv_close((uv_handle_t *)&t->pump, pt__pump_closed);
    pt_transport_close(t->inner, pt__inner_closed);
}

static int pt__peer(pt_transport_t *base, struct sockaddr_storage *ss)
{
    pt_transport_tls_t *t = (pt_transport_tls_t *)base;
    return pt_transport_peer(t->inner, ss);
}

static const pt_transport_ops_t pt__tls_ops = {
    .read_start = pt__read_start,
    .read_stop = pt__read_stop,
    .try_write = pt__try_write,
    .write = pt__write,
    .shutdown = pt__shutdown,
    .close = pt__close,
    .peer = pt__peer,
};

int pt_transport_tls_init(pt_transport_tls_t *t, uv_loop_t *loop, pt_transport_t *inner, SSL *ssl,
                          pt_tls_ctx_t *ctx)
{
    memset(t, 0, sizeof *t);
    BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
    if (!rbio || !wbio) {
        BIO_free(rbio);
        BIO_free(wbio);
        SSL_free(ssl);
        return UV_ENOMEM;
    }
    int rc = uv_idle_init(loop, &t->pump); /* cannot fail on Unix */
    if (rc != 0) {
        BIO_free(rbio);
        BIO_free(wbio);
        SSL_free(ssl);
        return rc;
    }
    /* an end of the input reads as "no more yet" until the inner one says so */
    BIO_set_mem_eof_return(rbio, -1);
    SSL_set_bio(ssl, rbio, wbio);
    t->base.ops = &pt__tls_ops;
    t->base.read_buf = inner->read_buf;
    t->base.read_size = inner->read_size;
    t->base.tcp = inner->tcp;
    t->inner = inner;
    t->ssl = ssl;
    t->rbio = rbio;
    t->wbio = wbio;
    t->ctx = ctx;
    t->client = !SSL_is_server(ssl);
    t->pending_tail = &t->pending;
    t->handles = 2;
    t->pump.data = t;
    inner->on_read = pt__inner_read;
    inner->data = t;
    return 0;
}

/* ---- accepted over TCP ---- */

typedef struct {
    pt_transport_tls_t tls; /* first */
    pt_transport_tcp_t tcp;
} pt__accepted_t;

static void pt__free_accepted(pt_transport_tls_t *t)
{
    free(t);
}

static void pt__refused_closed(pt_transport_t *tcp, int status)
{
    free(tcp->data);
}

pt_transport_t *pt_transport_tls_accept(uv_loop_t *loop, uv_stream_t *listener, pt_tls_ctx_t *ctx,
                                        char *read_buf, size_t read_size)
{
    pt__accepted_t *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    if (pt_transport_tcp_init(&a->tcp, loop, read_buf, read_size) != 0) {
        free(a);
        return NULL;
    }
    a->tcp.base.data = a;
    SSL *ssl = NULL;
    if (pt_transport_tcp_accept(&a->tcp, listener) != 0 || !ctx || !(ssl = pt_tls_ctx_ssl(ctx)) ||
        pt_transport_tls_init(&a->tls, loop, &a->tcp.base, ssl, pt_tls_ctx_ref(ctx)) != 0) {
        if (ssl) pt_tls_ctx_unref(ctx); /* init failed: the reference it was given */
        a->tcp.base.data = a;
        pt_transport_close(&a->tcp.base, pt__refused_closed);
        return NULL;
    }
    a->tls.on_free = pt__free_accepted;
    return &a->tls.base;
}

const char *pt_transport_tls_version(const pt_transport_tls_t *t)
{
    return t->version ? pt__versions[t->version - 1] : NULL;
}

pt_transport_tls_t *pt_transport_tls_of(pt_transport_t *base)
{
    return base && base->ops == &pt__tls_ops ? (pt_transport_tls_t *)base : NULL;
}
