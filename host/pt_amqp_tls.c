#include "pt_amqp_tls.h"

#include "pt_log.h"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <stdio.h>
#include <string.h>

/* What the callbacks found, on the stack of pt_amqp_socket_open for the
 * length of the handshake (the SSL_CTX's app data points to it then). */
typedef struct {
    char reason[256]; /* the verify callback's first refusal */
    int hello;        /* the handshake started: the TCP connection was up */
    int alert;        /* the first alert the broker sent (its code), or -1 */
} pt__check_t;

/* Alerts by which a server says no to the client's certificate (RFC 8446
 * 6.2): bad, unsupported, revoked, expired or unknown certificate, unknown
 * CA, access denied, certificate required. */
static int pt__cert_alert(int code)
{
    return (code >= SSL_AD_BAD_CERTIFICATE && code <= SSL_AD_CERTIFICATE_UNKNOWN) ||
           code == SSL_AD_UNKNOWN_CA || code == SSL_AD_ACCESS_DENIED ||
           code == SSL_AD_CERTIFICATE_REQUIRED;
}

/* Why the broker's alert code ended the connection, for the log. */
static void pt__alert_text(int code, const pt_amqp_endpoint_t *ep, char *buf, size_t len)
{
    const char *hint = "";
    if (code == SSL_AD_CERTIFICATE_REQUIRED && !ep->tls_cert)
        hint = ": it wants a client certificate (tls.cert and tls.key)";
    else if (pt__cert_alert(code))
        hint = ": it refused portico's client certificate";
    const char *name = SSL_alert_desc_string_long(code);
    if (code == SSL_AD_CERTIFICATE_REQUIRED) name = "certificate required"; /* 3.0: "unknown" */
    snprintf(buf, len, "the broker sent the alert '%s'%s", name, hint);
}

/* Notes the start of the handshake and the first alert the broker sends. */
static void pt__info_cb(const SSL *ssl, int where, int ret)
{
    pt__check_t *chk = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (!chk) return;
    if (where & SSL_CB_HANDSHAKE_START) chk->hello = 1;
    if ((where & SSL_CB_ALERT) && (where & SSL_CB_READ) && chk->alert < 0) chk->alert = ret & 0xff;
}

/* Keeps OpenSSL's verdict on each certificate and remembers the first
 * refusal with the certificate it was about, so the log can say more than
 * rabbitmq-c's "SSL handshake failed". */
static int pt__verify_cb(int ok, X509_STORE_CTX *x)
{
    if (ok) return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    pt__check_t *chk = ssl ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
    if (!chk || chk->reason[0]) return ok;
    int e = X509_STORE_CTX_get_error(x);
    X509 *cert = X509_STORE_CTX_get_current_cert(x);
    char subject[160] = "?";
    if (cert) X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
    snprintf(chk->reason, sizeof chk->reason, "%s (certificate %s)",
             X509_verify_cert_error_string(e), subject);
    return ok;
}

/* The last OpenSSL error of this thread, then clears the queue. */
static const char *pt__ssl_error(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, len, "%s", r ? r : "the connection closed during the handshake");
    ERR_clear_error();
    return buf;
}

/* An encrypted key is refused (pt_config says so), never prompted for. */
static int pt__no_password(char *buf, int size, int rwflag, void *ud)
{
    return 0;
}

static int pt__tls_setup(amqp_socket_t *sock, const pt_amqp_endpoint_t *ep, pt__check_t *chk,
                         char *err, size_t errlen)
{
    char why[160];
    SSL_CTX *ctx = amqp_ssl_socket_get_context(sock);
    /* OpenSSL checks chain and name during the handshake (rabbitmq-c's own
     * name check after it knows no IP addresses), so its checks are off. */
    amqp_ssl_socket_set_verify_peer(sock, 0);
    amqp_ssl_socket_set_verify_hostname(sock, 0);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_default_passwd_cb(ctx, pt__no_password);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_app_data(ctx, chk);
    SSL_CTX_set_info_callback(ctx, pt__info_cb);
    if (ep->tls_verify) {
        X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
        unsigned char addr[16];
        int is_ip =
            inet_pton(AF_INET, ep->host, addr) == 1 || inet_pton(AF_INET6, ep->host, addr) == 1;
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, ep->host)
                       : X509_VERIFY_PARAM_set1_host(param, ep->host, 0);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (ok != 1 || SSL_CTX_set_default_verify_paths(ctx) != 1) {
            snprintf(err, errlen, "cannot set up TLS for %s: %s", ep->display,
                     pt__ssl_error(why, sizeof why));
            return -1;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, pt__verify_cb);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (ep->tls_ca_file && amqp_ssl_socket_set_cacert(sock, ep->tls_ca_file) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "cannot load tls.ca_file %s: %s", ep->tls_ca_file,
                 pt__ssl_error(why, sizeof why));
        return -1;
    }
    if (ep->tls_cert &&
        amqp_ssl_socket_set_key(sock, ep->tls_cert, ep->tls_key) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "cannot load the client certificate %s: %s", ep->tls_cert,
                 pt__ssl_error(why, sizeof why));
        return -1;
    }
    return 0;
}

int pt_amqp_socket_open(amqp_connection_state_t conn, const pt_amqp_endpoint_t *ep,
                        const struct timeval *tv, char *err, size_t errlen)
{
    pt__check_t chk = {.alert = -1};
    char why[160];
    amqp_socket_t *sock = ep->tls ? amqp_ssl_socket_new(conn) : amqp_tcp_socket_new(conn);
    if (!sock) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (ep->tls && pt__tls_setup(sock, ep, &chk, err, errlen) != 0) {
        SSL_CTX_set_app_data(amqp_ssl_socket_get_context(sock), NULL); /* chk is ours */
        return -1;
    }
    ERR_clear_error();
    int rc = amqp_socket_open_noblock(sock, ep->host, ep->port, tv);
    if (ep->tls) SSL_CTX_set_app_data(amqp_ssl_socket_get_context(sock), NULL);
    if (rc == AMQP_STATUS_OK) {
        ERR_clear_error();
        return 0;
    }
    if (ep->tls && chk.hello && rc == AMQP_STATUS_TIMEOUT) {
        /* TCP was up, the broker never finished its half of the handshake */
        snprintf(err, errlen,
                 "TLS handshake with %s:%d timed out: no answer from the broker within %.1f s",
                 ep->host, ep->port, (double)tv->tv_sec + (double)tv->tv_usec / 1e6);
    } else if (!ep->tls ||
               (rc != AMQP_STATUS_SSL_CONNECTION_FAILED && rc != AMQP_STATUS_SSL_ERROR)) {
        /* the TCP connection (or rabbitmq-c's own checks) failed */
        snprintf(err, errlen, "cannot connect to %s:%d: %s", ep->host, ep->port,
                 amqp_error_string2(rc));
    } else if (chk.reason[0]) {
        snprintf(err, errlen,
                 "TLS handshake with %s:%d failed: the broker's certificate was refused: %s",
                 ep->host, ep->port, chk.reason);
    } else if (chk.alert >= 0) {
        pt__alert_text(chk.alert, ep, why, sizeof why);
        snprintf(err, errlen, "TLS handshake with %s:%d failed: %s", ep->host, ep->port, why);
    } else {
        snprintf(err, errlen, "TLS handshake with %s:%d failed: %s", ep->host, ep->port,
                 pt__ssl_error(why, sizeof why));
    }
    ERR_clear_error();
    return -1;
}

void pt_amqp_tls_warn(const char *what, const pt_amqp_endpoint_t *ep)
{
    if (!ep->tls || ep->tls_verify) return;
    pt_log_warn("%s: tls.verify is false: the certificate of %s is not checked, so anyone on "
                "the path can pose as the broker",
                what, ep->display);
}

int pt_amqp_tls_late_error(const pt_amqp_endpoint_t *ep, int status, char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    int reason = ERR_GET_REASON(e);
    if (!ep->tls || status != AMQP_STATUS_SSL_ERROR) return 0;
    if (e && ERR_GET_LIB(e) == ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET &&
        reason <= SSL_AD_REASON_OFFSET + 255) {
        pt__alert_text(reason - SSL_AD_REASON_OFFSET, ep, buf, len);
    } else {
        /* the broker's reset went ahead of its alert, which was dropped */
        snprintf(buf, len,
                 "the broker closed the connection right after the TLS handshake (as one that "
                 "refuses the client certificate does under TLS 1.3)");
    }
    ERR_clear_error();
    return 1;
}
