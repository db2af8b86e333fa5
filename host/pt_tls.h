/* pt_tls: the TLS contexts of one config generation (server.tls).
 *
 * A pt_tls_ctx_t holds one OpenSSL SSL_CTX per certificate of
 * server.tls.certificates: the first is the default, the others are chosen
 * by the SNI name a client sends, matched against their certificates' DNS
 * names (subjectAltName, or the CN when there is none; "*.example.com"
 * matches one label). It is built and checked on the main thread while a
 * config loads, so a broken pair refuses the load (or the reload, and the
 * running generation keeps serving).
 *
 * It is reference counted (atomic): the config holds one reference, and
 * every TLS connection takes one for its life (and the SSL takes one on its
 * SSL_CTX), so connections in flight keep the certificates they started
 * with after a reload swapped in new ones.
 *
 * Defaults that are not configurable: TLS 1.2 cipher suites with forward
 * secrecy and AEAD only (TLS 1.3: OpenSSL's), server cipher preference, no
 * compression, no renegotiation, session tickets and a server-side
 * session cache (session IDs), ALPN "http/1.1".
 *
 * Ticket keys belong to the context (every certificate's SSL_CTX and every
 * worker share them) and rotate every server.tls.ticket_rotation: the key
 * before the current one still opens tickets for one more period (and the
 * session gets a new ticket), so sessions resume across a rotation; a
 * reload makes new keys. */
#ifndef PT_TLS_H
#define PT_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

#define PT_TLS_TICKET_ROTATION_MS (3600u * 1000u) /* server.tls.ticket_rotation's default */

typedef struct pt_tls_ctx_s pt_tls_ctx_t;

/* Parses a min_version value: "TLSv1.2" or "TLSv1.3" into *out (an OpenSSL
 * TLS1_x_VERSION). Returns 0, or -1 with why (older versions are never
 * allowed) in err. */
int pt_tls_parse_version(const char *s, int *out, char *err, size_t errlen);

/* A context with no certificate yet: TLS from min_version on; client_ca
 * (NULL: none) is a PEM file of CAs whose client certificates are asked
 * for (and verified when sent). Returns 0, or -1 with the reason in err. */
int pt_tls_ctx_new(int min_version, const char *client_ca, pt_tls_ctx_t **out, char *err,
                   size_t errlen);

/* Adds the certificate chain cert (PEM) and its private key key (PEM).
 * Returns 0, or -1 with the reason in err (a file that cannot be read, not
 * PEM, or a key that does not match the certificate). */
int pt_tls_ctx_add(pt_tls_ctx_t *c, const char *cert, const char *key, char *err, size_t errlen);

/* Asks clients for certificates of cas too (their names join the list of
 * acceptable CAs the server sends), and lets every handshake go on with
 * whatever certificate comes, verified or not: the client_cert security
 * definitions judge it per channel, each against its own CAs. Takes its own
 * references on cas. Returns 0, or -1 with the reason in err. */
int pt_tls_ctx_client_cas(pt_tls_ctx_t *c, STACK_OF(X509) * cas, char *err, size_t errlen);

/* How long a session ticket key makes tickets (default
 * PT_TLS_TICKET_ROTATION_MS); set before the context serves. */
void pt_tls_ctx_set_ticket_rotation(pt_tls_ctx_t *c, uint64_t ms);

/* The number of certificates added. */
size_t pt_tls_ctx_count(const pt_tls_ctx_t *c);

/* Adds a reference (any thread); returns c. */
pt_tls_ctx_t *pt_tls_ctx_ref(pt_tls_ctx_t *c);

/* Drops a reference (any thread); the last one frees c. NULL is fine. */
void pt_tls_ctx_unref(pt_tls_ctx_t *c);

/* A new server-side SSL on c's default certificate (SNI may switch it).
 * Returns NULL when out of memory. The caller keeps a reference on c while
 * the SSL lives (the SNI callback reads c). */
SSL *pt_tls_ctx_ssl(pt_tls_ctx_t *c);

/* The subject names (DNS) of certificate i, for logs and tests: a
 * comma-separated list written into out. */
void pt_tls_ctx_names(const pt_tls_ctx_t *c, size_t i, char *out, size_t outlen);

/* ---- client side (https backends) ---- */

/* A client context: TLS 1.2 and up, the chain verified against the system
 * CA store (its file, SSL_CERT_FILE or OpenSSL's default, Debian's
 * /etc/ssl/certs/ca-certificates.crt, read here once) and ca_file (a PEM file of more CAs; NULL:
 * none), unless verify is 0 (no partial wildcards in names). ALPN http/1.1. Sessions go to
 * pt_tls_client_watch's on_session (no cache of OpenSSL's). Returns it (SSL_CTX_free it; every SSL
 * holds its own reference), or NULL with the reason in err. */
SSL_CTX *pt_tls_client_ctx_new(const char *ca_file, int verify, char *err, size_t errlen);

/* A client SSL on ctx for host: SNI sent (for a name, not an IP literal)
 * and, when ctx verifies, the certificate must name host. NULL when out of
 * memory. */
SSL *pt_tls_client_ssl(SSL_CTX *ctx, const char *host);

/* Adds a client certificate (PEM chain cert, PEM key without a password:
 * an encrypted one is refused, never prompted for). Returns 0; -1 (cert is
 * at fault) or -2 (key: not PEM, encrypted, or not cert's) with the reason
 * in err. */
int pt_tls_client_ctx_cert(SSL_CTX *ctx, const char *cert, const char *key, char *err,
                           size_t errlen);

/* What one client SSL tells its owner, from OpenSSL's callbacks (contexts
 * of pt_tls_client_ctx_new only): sessions to resume with (TLS 1.2 in the
 * handshake, TLS 1.3 tickets after it) and why a handshake failed, which
 * the transport cannot say (it clears OpenSSL's error queue). The owner
 * keeps w alive as long as the SSL. */
typedef struct {
    /* A resumable session for the next connection to the same peer; return
     * 1 when keeping it (the reference is the callee's), 0 to let it go.
     * NULL: sessions are not kept. */
    int (*on_session)(void *ud, SSL_SESSION *s);
    void *ud;
    char error[96]; /* the first OpenSSL error of a failed handshake step */
    char alert[96]; /* the last fatal alert the peer sent */
    int cert_asked; /* the peer asked for a client certificate */
} pt_tls_client_watch_t;

/* Watches ssl through w (cleared first). */
void pt_tls_client_watch(SSL *ssl, pt_tls_client_watch_t *w);

/* Why ssl's handshake (or the connection after it) failed, into out: the
 * verify result when the certificate was refused ("certificate has
 * expired", "self-signed certificate", "hostname mismatch"...), else the
 * alert or OpenSSL's error, else that the peer closed. */
void pt_tls_client_why(SSL *ssl, const pt_tls_client_watch_t *w, char *out, size_t outlen);

#endif
