/* pt_transport_tls: TLS over an inner transport (plain TCP), with OpenSSL
 * on memory BIOs, so it never blocks the loop and needs no socket of its own.
 *
 * It implements pt_transport_ops_t: HTTP, WebSocket and proxy code read and
 * write plaintext through it unchanged. Ciphertext the inner transport read
 * lands in the shared read buffer and is copied into the read BIO at once;
 * the plaintext is then decrypted into the same buffer and handed to
 * on_read (zero-copy for the owner, valid during on_read only). Writes are
 * encrypted at once; the ciphertext goes through the inner transport's
 * try_write first and only what is left is queued (a copy), whose inner
 * write callback then calls the owner's. try_write says UV_EAGAIN while
 * ciphertext is queued, so an owner that streams waits for its callbacks as
 * it would over TCP. Plaintext written before the handshake is done waits
 * for it (client mode).
 *
 * The handshake runs on the first reads (a client's starts at read_start).
 * A failed one (server mode: the figures are the listeners') is counted in
 * pt_metrics_tls by reason and ends the input
 * with UV_EPROTO (the owner closes); one that has not finished when the
 * owner closes counts as "timeout" (HTTP closes it at
 * server.tls.handshake_timeout) and an end of input during it as "eof".
 * shutdown sends close_notify first.
 *
 * The SSL (t->ssl) is the owner's to read, not to drive: the security
 * checks take the client certificate from it (SSL_get0_peer_certificate
 * reads what the handshake kept; nothing blocks) and keep what they found
 * in t->cert_memo for the connection's later requests. */
#ifndef PT_TRANSPORT_TLS_H
#define PT_TRANSPORT_TLS_H

#include "pt_security.h"
#include "pt_tls.h"
#include "pt_transport.h"

#include <openssl/ssl.h>

typedef struct pt__tls_pending_s pt__tls_pending_t;

typedef struct pt_transport_tls_s {
    pt_transport_t base; /* first: a pt_transport_tls_t * is a pt_transport_t * */
    pt_transport_t *inner;
    pt_tls_ctx_t *ctx; /* a reference (server mode), NULL in client mode */
    SSL *ssl;
    BIO *rbio, *wbio; /* ciphertext in and out (memory BIOs the SSL owns) */
    uv_idle_t pump;   /* delivers what was buffered while reading was off */
    int client;
    int reading, handshake_done, failed, closing, pumping, shut;
    int eof;           /* the inner input ended with this (0: not yet) */
    int eof_delivered; /* the owner heard of the end */
    int version;       /* counted in pt_metrics_tls_open (index + 1; 0: none) */
    int handles;       /* open: the inner transport's and the pump */
    size_t queued;     /* ciphertext writes in the inner transport's queue */
    pt__tls_pending_t *pending, **pending_tail;    /* plaintext waiting for the handshake */
    void (*on_free)(struct pt_transport_tls_s *t); /* after the close callback; NULL: none */
    /* The handshake is done (server mode), before any plaintext is
     * delivered; NULL: none. Set by the owner. */
    void (*on_handshake)(struct pt_transport_tls_s *t);
    pt_security_cert_memo_t cert_memo; /* the client_cert check of this connection */
} pt_transport_tls_t;

/* Sets t up over inner (connected or accepted, not reading yet; t takes
 * over its on_read and data) with ssl (which t owns from now on, freed
 * with t, even on failure). Server mode when SSL_is_server(ssl), else
 * client (the caller set SNI and host name checks). ctx: a reference t
 * takes over and drops when closed (NULL: none). Reads land in inner's
 * read buffer. Returns 0 or a libuv error (then inner and ssl are the
 * caller's to close and t has nothing to close). */
int pt_transport_tls_init(pt_transport_tls_t *t, uv_loop_t *loop, pt_transport_t *inner, SSL *ssl,
                          pt_tls_ctx_t *ctx);

/* Accepts a client of listener into a new TLS transport over TCP on ctx's
 * certificates (t takes a reference on ctx), with read_buf as the buffer
 * reads land in (ctx NULL: the client is accepted and closed). The memory
 * is freed by the transport itself once its close callback returned. Returns the transport, or NULL
 * (nothing left open: the client was accepted and closed, or not accepted). */
pt_transport_t *pt_transport_tls_accept(uv_loop_t *loop, uv_stream_t *listener, pt_tls_ctx_t *ctx,
                                        char *read_buf, size_t read_size);

/* base as a TLS transport, or NULL when it is not one (plain TCP). */
pt_transport_tls_t *pt_transport_tls_of(pt_transport_t *base);

/* The negotiated version ("TLSv1.3"), or NULL before the handshake ended. */
const char *pt_transport_tls_version(const pt_transport_tls_t *t);

#endif
