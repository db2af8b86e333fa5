#include "pt_tls.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* TLS 1.2: forward secrecy and AEAD only (Mozilla's "intermediate" list). */
#define PT__CIPHERS                                                                                \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

typedef struct {
    SSL_CTX *ctx;
    char **names; /* lower-case DNS names of its certificate */
    size_t n_names;
} pt__cert_t;

/* A session ticket key: its name (sent in the ticket), AES-256-CBC and
 * HMAC-SHA256 keys (RFC 5077's layout), and when it was made. */
typedef struct {
    unsigned char name[16], aes[32], hmac[32];
    uint64_t born_ms; /* CLOCK_MONOTONIC; 0: no key */
} pt__ticket_key_t;

struct pt_tls_ctx_s {
    int refs; /* atomic */
    int min_version;
    char *client_ca;
    pt__cert_t *certs;
    size_t n_certs;
    STACK_OF(X509) * client_cas; /* of client_cert definitions (references) */
    int any_client_cert;         /* the handshake takes any certificate (pt_security judges) */
    /* Ticket keys, shared by every SSL_CTX here and so by every worker:
     * [0] makes tickets, [1] (the one before) still opens them for one more
     * period, so a session resumes across a rotation. */
    pthread_mutex_t ticket_lock;
    pt__ticket_key_t tickets[2];
    uint64_t ticket_rotation_ms;
};

/* The first OpenSSL error of this thread's queue, which is then cleared. */
static const char *pt__ssl_err(void)
{
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "unknown OpenSSL error";
}

int pt_tls_parse_version(const char *s, int *out, char *err, size_t errlen)
{
    if (s && strcmp(s, "TLSv1.2") == 0) {
        *out = TLS1_2_VERSION;
        return 0;
    }
    if (s && strcmp(s, "TLSv1.3") == 0) {
        *out = TLS1_3_VERSION;
        return 0;
    }
    if (s && (strcasecmp(s, "TLSv1") == 0 || strcasecmp(s, "TLSv1.0") == 0 ||
              strcasecmp(s, "TLSv1.1") == 0 || strncasecmp(s, "SSL", 3) == 0))
        snprintf(err, errlen, "%s is not allowed (broken): use TLSv1.2 or TLSv1.3", s);
    else
        snprintf(err, errlen, "expected TLSv1.2 or TLSv1.3");
    return -1;
}

/* A readable regular file, or why not. */
static int pt__readable(const char *path, const char *what, char *err, size_t errlen)
{
    if (access(path, R_OK) == 0) return 0;
    snprintf(err, errlen, "%s %s: cannot read: %s", what, path, strerror(errno));
    return -1;
}

static int pt__alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                    const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x08http/1.1";
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof ours - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no ALPN rather than a refusal: HTTP/1.1 is spoken anyway */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* "*.example.com" matches one label; names are compared case-insensitively. */
static int pt__name_match(const char *pattern, const char *name)
{
    if (strcasecmp(pattern, name) == 0) return 1;
    if (pattern[0] != '*' || pattern[1] != '.') return 0;
    const char *dot = strchr(name, '.');
    return dot && dot != name && strcasecmp(pattern + 1, dot) == 0;
}

static int pt__sni(SSL *ssl, int *alert, void *arg)
{
    pt_tls_ctx_t *c = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name) return SSL_TLSEXT_ERR_OK; /* the default */
    for (size_t i = 0; i < c->n_certs; i++)
        for (size_t j = 0; j < c->certs[i].n_names; j++)
            if (pt__name_match(c->certs[i].names[j], name)) {
                if (i > 0) SSL_set_SSL_CTX(ssl, c->certs[i].ctx);
                return SSL_TLSEXT_ERR_OK;
            }
    return SSL_TLSEXT_ERR_OK; /* an unknown name gets the default certificate */
}

static int pt__add_name(pt__cert_t *pc, const char *s, size_t len)
{
    char **grown = realloc(pc->names, (pc->n_names + 1) * sizeof *grown);
    if (!grown) return -1;
    pc->names = grown;
    if (!(grown[pc->n_names] = strndup(s, len))) return -1;
    pc->n_names++;
    return 0;
}

/* The DNS names of x: subjectAltName, else the subject's CN. */
static int pt__names(pt__cert_t *pc, X509 *x)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int rc = 0;
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_DNS) continue;
        const unsigned char *s = ASN1_STRING_get0_data(g->d.dNSName);
        if (pt__add_name(pc, (const char *)s, (size_t)ASN1_STRING_length(g->d.dNSName)) != 0)
            rc = -1;
    }
    if (sans) GENERAL_NAMES_free(sans);
    if (rc == 0 && pc->n_names == 0) {
        char cn[256];
        int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
        if (n > 0) rc = pt__add_name(pc, cn, (size_t)n);
    }
    return rc;
}

/* With client_cert definitions the handshake goes on whatever certificate
 * comes, verified or not (nginx's ssl_verify_client optional_no_ca):
 * each definition verifies it against its own CAs, so the answer is a 401
 * that says why, on the channels that want one, not a failed handshake. */
static int pt__verify_any(int ok, X509_STORE_CTX *xc)
{
    (void)ok;
    (void)xc;
    return 1;
}

static uint64_t pt__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int pt__ticket_key_new(pt__ticket_key_t *k, uint64_t now)
{
    if (RAND_bytes(k->name, sizeof k->name) != 1 || RAND_bytes(k->aes, sizeof k->aes) != 1 ||
        RAND_bytes(k->hmac, sizeof k->hmac) != 1)
        return -1;
    k->born_ms = now ? now : 1;
    return 0;
}

/* Under ticket_lock: the current key made a period ago gives way to a new
 * one and becomes the previous. Checked at each use, so an idle server
 * rotates at its next handshake (and a key older than two periods never
 * opens a ticket). */
static void pt__ticket_rotate(pt_tls_ctx_t *c, uint64_t now)
{
    pt__ticket_key_t fresh;
    if (now - c->tickets[0].born_ms < c->ticket_rotation_ms) return;
    if (pt__ticket_key_new(&fresh, now) != 0) return; /* keep the old one a while */
    c->tickets[1] = c->tickets[0];
    c->tickets[0] = fresh;
    OPENSSL_cleanse(&fresh, sizeof fresh);
}

/* OpenSSL's ticket key callback (SSL_CTX_set_tlsext_ticket_key_evp_cb):
 * enc: a new ticket under the current key; else the key named, when it is
 * the current one (1) or the previous one still in its period (2: the
 * session resumes and gets a new ticket), or 0: a full handshake. */
static int pt__ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                         EVP_MAC_CTX *hctx, int enc)
{
    pt_tls_ctx_t *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    pt__ticket_key_t k;
    int rc = 1;
    uint64_t now = pt__now_ms();
    pthread_mutex_lock(&c->ticket_lock);
    pt__ticket_rotate(c, now);
    if (enc) {
        k = c->tickets[0];
    } else if (!memcmp(name, c->tickets[0].name, 16)) {
        k = c->tickets[0];
    } else if (c->tickets[1].born_ms && !memcmp(name, c->tickets[1].name, 16) &&
               now - c->tickets[1].born_ms < 2 * c->ticket_rotation_ms) {
        k = c->tickets[1];
        rc = 2;
    } else {
        rc = 0;
    }
    pthread_mutex_unlock(&c->ticket_lock);
    if (rc == 0) return 0;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof k.hmac),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end()};
    const EVP_CIPHER *aes = EVP_aes_256_cbc();
    if (enc) {
        memcpy(name, k.name, 16);
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(aes)) != 1 ||
            EVP_EncryptInit_ex(cctx, aes, NULL, k.aes, iv) != 1)
            rc = -1;
    } else if (EVP_DecryptInit_ex(cctx, aes, NULL, k.aes, iv) != 1) {
        rc = -1;
    }
    if (rc > 0 && EVP_MAC_CTX_set_params(hctx, params) != 1) rc = -1;
    OPENSSL_cleanse(&k, sizeof k);
    return rc;
}

/* Asks for client certificates of the client_cert definitions' CAs. */
static int pt__ask_client_cas(pt_tls_ctx_t *c, SSL_CTX *ctx)
{
    for (int i = 0; c->client_cas && i < sk_X509_num(c->client_cas); i++)
        if (SSL_CTX_add_client_CA(ctx, sk_X509_value(c->client_cas, i)) != 1) return -1;
    if (c->any_client_cert) SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, pt__verify_any);
    return 0;
}

/* A session lives two rotation periods: as long as the key that sealed its
 * ticket opens tickets (the period it made them and the next one). OpenSSL's
 * own default is 2 h whatever the keys do, which the default rotation of 1 h
 * gives too; a session ID in the cache lives as long. */
static void pt__session_lifetime(SSL_CTX *ctx, uint64_t rotation_ms)
{
    long s = (long)(2 * rotation_ms / 1000);
    SSL_CTX_set_timeout(ctx, s > 0 ? s : 1);
}

static SSL_CTX *pt__ssl_ctx(pt_tls_ctx_t *c, char *err, size_t errlen)
{
    static const unsigned char sid_ctx[] = "portico";
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) goto fail;
    SSL_CTX_set_min_proto_version(ctx, c->min_version);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_SINGLE_ECDH_USE);
    /* a write hands over all its bytes (memory BIOs take them all), and a
     * buffer that moved between two tries is fine */
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(ctx, PT__CIPHERS) != 1) goto fail;
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    pt__session_lifetime(ctx, c->ticket_rotation_ms);
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_alpn_select_cb(ctx, pt__alpn, NULL);
    SSL_CTX_set_tlsext_servername_callback(ctx, pt__sni);
    SSL_CTX_set_tlsext_servername_arg(ctx, c);
    SSL_CTX_set_app_data(ctx, c);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, pt__ticket_cb);
    if (c->client_ca) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->client_ca);
        if (!names || SSL_CTX_load_verify_locations(ctx, c->client_ca, NULL) != 1) {
            if (names) sk_X509_NAME_pop_free(names, X509_NAME_free);
            snprintf(err, errlen, "client_ca %s: not a PEM file of certificates (%s)", c->client_ca,
                     pt__ssl_err());
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        /* asked for, verified when sent; whether one is required is the
         * channel's security definition's business */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    if (pt__ask_client_cas(c, ctx) != 0) goto fail;
    return ctx;
fail:
    snprintf(err, errlen, "cannot make a TLS context: %s", pt__ssl_err());
    if (ctx) SSL_CTX_free(ctx);
    return NULL;
}

int pt_tls_ctx_new(int min_version, const char *client_ca, pt_tls_ctx_t **out, char *err,
                   size_t errlen)
{
    pt_tls_ctx_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->refs = 1;
    c->min_version = min_version;
    pthread_mutex_init(&c->ticket_lock, NULL);
    c->ticket_rotation_ms = PT_TLS_TICKET_ROTATION_MS;
    if (pt__ticket_key_new(&c->tickets[0], pt__now_ms()) != 0) {
        snprintf(err, errlen, "cannot make a session ticket key: %s", pt__ssl_err());
        pt_tls_ctx_unref(c);
        return -1;
    }
    if (client_ca) {
        if (pt__readable(client_ca, "client_ca", err, errlen) != 0) {
            free(c);
            return -1;
        }
        if (!(c->client_ca = strdup(client_ca))) {
            snprintf(err, errlen, "out of memory");
            free(c);
            return -1;
        }
        /* checked now, not at the first certificate */
        SSL_CTX *probe = pt__ssl_ctx(c, err, errlen);
        if (!probe) {
            pt_tls_ctx_unref(c);
            return -1;
        }
        SSL_CTX_free(probe);
    }
    *out = c;
    return 0;
}

/* An encrypted key is refused, never prompted for. */
static int pt__no_password(char *buf, int size, int rwflag, void *ud)
{
    return 0;
}

/* Puts the certificate chain cert and its private key key (PEM files, the
 * key without a password) on ctx, for a server certificate or a client one.
 * Returns 0, -1 (the certificate is at fault) or -2 (the key is), with the
 * reason in err. */
static int pt__use_pair(SSL_CTX *ctx, const char *cert, const char *key, char *err, size_t errlen)
{
    /* OpenSSL's default would ask on the terminal, stalling a start or a reload */
    SSL_CTX_set_default_passwd_cb(ctx, pt__no_password);
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(err, errlen, "cert %s: not a PEM certificate chain (%s)", cert, pt__ssl_err());
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
            ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH) {
            ERR_clear_error();
            snprintf(err, errlen, "key %s does not match the certificate %s", key, cert);
        } else {
            snprintf(err, errlen, "key %s: not a PEM private key without a password (%s)", key,
                     pt__ssl_err());
        }
        return -2;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "key %s does not match the certificate %s", key, cert);
        return -2;
    }
    return 0;
}

int pt_tls_ctx_add(pt_tls_ctx_t *c, const char *cert, const char *key, char *err, size_t errlen)
{
    if (pt__readable(cert, "cert", err, errlen) != 0 || pt__readable(key, "key", err, errlen) != 0)
        return -1;
    pt__cert_t *grown = realloc(c->certs, (c->n_certs + 1) * sizeof *grown);
    if (!grown) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->certs = grown;
    pt__cert_t *pc = &c->certs[c->n_certs];
    memset(pc, 0, sizeof *pc);
    if (!(pc->ctx = pt__ssl_ctx(c, err, errlen))) return -1;
    if (pt__use_pair(pc->ctx, cert, key, err, errlen) != 0) goto fail;
    if (pt__names(pc, SSL_CTX_get0_certificate(pc->ctx)) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    c->n_certs++;
    return 0;
fail:
    /* a refused pair is not kept */
    SSL_CTX_free(pc->ctx);
    for (size_t j = 0; j < pc->n_names; j++)
        free(pc->names[j]);
    free(pc->names);
    memset(pc, 0, sizeof *pc);
    return -1;
}

size_t pt_tls_ctx_count(const pt_tls_ctx_t *c)
{
    return c->n_certs;
}

pt_tls_ctx_t *pt_tls_ctx_ref(pt_tls_ctx_t *c)
{
    __atomic_fetch_add(&c->refs, 1, __ATOMIC_RELAXED);
    return c;
}

void pt_tls_ctx_unref(pt_tls_ctx_t *c)
{
    if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
    for (size_t i = 0; i < c->n_certs; i++) {
        SSL_CTX_free(c->certs[i].ctx);
        for (size_t j = 0; j < c->certs[i].n_names; j++)
            free(c->certs[i].names[j]);
        free(c->certs[i].names);
    }
    free(c->certs);
    free(c->client_ca);
    sk_X509_pop_free(c->client_cas, X509_free);
    OPENSSL_cleanse(c->tickets, sizeof c->tickets);
    pthread_mutex_destroy(&c->ticket_lock);
    free(c);
}

int pt_tls_ctx_client_cas(pt_tls_ctx_t *c, STACK_OF(X509) * cas, char *err, size_t errlen)
{
    if (!c->client_cas && !(c->client_cas = sk_X509_new_null())) goto oom;
    for (int i = 0; i < sk_X509_num(cas); i++) {
        X509 *x = sk_X509_value(cas, i);
        if (!X509_up_ref(x)) goto oom;
        if (!sk_X509_push(c->client_cas, x)) {
            X509_free(x);
            goto oom;
        }
    }
    c->any_client_cert = 1;
    for (size_t i = 0; i < c->n_certs; i++) {
        SSL_CTX *ctx = c->certs[i].ctx;
        for (int j = 0; j < sk_X509_num(cas); j++)
            if (SSL_CTX_add_client_CA(ctx, sk_X509_value(cas, j)) != 1) goto oom;
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, pt__verify_any);
    }
    return 0;
oom:
    ERR_clear_error();
    snprintf(err, errlen, "out of memory");
    return -1;
}

void pt_tls_ctx_set_ticket_rotation(pt_tls_ctx_t *c, uint64_t ms)
{
    c->ticket_rotation_ms = ms;
    for (size_t i = 0; i < c->n_certs; i++) pt__session_lifetime(c->certs[i].ctx, ms);
}

SSL *pt_tls_ctx_ssl(pt_tls_ctx_t *c)
{
    if (c->n_certs == 0) return NULL;
    SSL *ssl = SSL_new(c->certs[0].ctx);
    if (ssl) SSL_set_accept_state(ssl);
    return ssl;
}

void pt_tls_ctx_names(const pt_tls_ctx_t *c, size_t i, char *out, size_t outlen)
{
    size_t off = 0;
    out[0] = '\0';
    for (size_t j = 0; i < c->n_certs && j < c->certs[i].n_names && off < outlen; j++)
        off +=
            (size_t)snprintf(out + off, outlen - off, "%s%s", j ? "," : "", c->certs[i].names[j]);
}

/* ---- client side ---- */

static int pt__watch_idx = -1;
static pthread_once_t pt__watch_once = PTHREAD_ONCE_INIT;

static void pt__watch_init(void)
{
    pt__watch_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static pt_tls_client_watch_t *pt__watch(const SSL *ssl)
{
    return pt__watch_idx < 0 ? NULL : SSL_get_ex_data(ssl, pt__watch_idx);
}

/* The owner gets a copy: OpenSSL marks the SSL's own session not
 * resumable when the SSL is freed without a close_notify sent (as a
 * connection closed by either side is). */
static int pt__client_session(SSL *ssl, SSL_SESSION *sess)
{
    pt_tls_client_watch_t *w = pt__watch(ssl);
    if (!w || !w->on_session || !SSL_SESSION_is_resumable(sess)) return 0;
    SSL_SESSION *copy = SSL_SESSION_dup(sess);
    if (copy && !w->on_session(w->ud, copy)) SSL_SESSION_free(copy);
    return 0;
}

/* Keeps what the transport cannot tell: the handshake step's error (still
 * in the queue when the step exits) and fatal alerts either way. */
static void pt__client_info(const SSL *ssl, int where, int ret)
{
    pt_tls_client_watch_t *w = pt__watch(ssl);
    if (!w) return;
    if ((where & SSL_CB_EXIT) && ret <= 0 && !w->error[0]) {
        unsigned long e = ERR_peek_error();
        const char *r = e ? ERR_reason_error_string(e) : NULL;
        if (r) snprintf(w->error, sizeof w->error, "%s", r);
    }
    if ((where & SSL_CB_LOOP) && SSL_get_state(ssl) == TLS_ST_CR_CERT_REQ) w->cert_asked = 1;
    if ((where & SSL_CB_ALERT) && (where & SSL_CB_READ) && (ret >> 8) == SSL3_AL_FATAL)
        snprintf(w->alert, sizeof w->alert, "the peer sent the alert \"%s\"",
                 SSL_alert_desc_string_long(ret));
}

SSL_CTX *pt_tls_client_ctx_new(const char *ca_file, int verify, char *err, size_t errlen)
{
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot make a TLS context: %s", pt__ssl_err());
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
    SSL_CTX_set_default_passwd_cb(ctx, pt__no_password);
    pthread_once(&pt__watch_once, pt__watch_init);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, pt__client_session);
    SSL_CTX_set_info_callback(ctx, pt__client_info);
    X509_VERIFY_PARAM_set_hostflags(SSL_CTX_get0_param(ctx), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (verify) {
        /* the system store's file, read now: its hashed directory would be
         * searched (files opened) during a verification, on the loop */
        const char *sys = getenv(X509_get_default_cert_file_env());
        if (!sys || !*sys) sys = X509_get_default_cert_file();
        if (SSL_CTX_load_verify_file(ctx, sys) != 1) ERR_clear_error();
        if (ca_file && (pt__readable(ca_file, "ca_file", err, errlen) != 0 ||
                        SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1)) {
            if (access(ca_file, R_OK) == 0)
                snprintf(err, errlen, "ca_file %s: not a PEM file of certificates (%s)", ca_file,
                         pt__ssl_err());
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    return ctx;
}

SSL *pt_tls_client_ssl(SSL_CTX *ctx, const char *host)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl) return NULL;
    SSL_set_connect_state(ssl);
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    int ok = is_ip || SSL_set_tlsext_host_name(ssl, host) == 1;
    if (ok && (SSL_CTX_get_verify_mode(ctx) & SSL_VERIFY_PEER))
        ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1
                   : SSL_set1_host(ssl, host) == 1;
    if (!ok) {
        ERR_clear_error();
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

int pt_tls_client_ctx_cert(SSL_CTX *ctx, const char *cert, const char *key, char *err,
                           size_t errlen)
{
    if (pt__readable(cert, "cert", err, errlen) != 0) return -1;
    if (pt__readable(key, "key", err, errlen) != 0) return -2;
    return pt__use_pair(ctx, cert, key, err, errlen);
}

void pt_tls_client_watch(SSL *ssl, pt_tls_client_watch_t *w)
{
    w->error[0] = w->alert[0] = '\0';
    w->cert_asked = 0;
    pthread_once(&pt__watch_once, pt__watch_init);
    if (pt__watch_idx >= 0) SSL_set_ex_data(ssl, pt__watch_idx, w);
}

void pt_tls_client_why(SSL *ssl, const pt_tls_client_watch_t *w, char *out, size_t outlen)
{
    long v = ssl && (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) ? SSL_get_verify_result(ssl)
                                                                 : X509_V_OK;
    if (v != X509_V_OK)
        snprintf(out, outlen, "%s", X509_verify_cert_error_string(v));
    else if (w && w->alert[0])
        snprintf(out, outlen, "%s", w->alert);
    else if (w && w->error[0])
        snprintf(out, outlen, "%s", w->error);
    else
        snprintf(out, outlen, "the connection closed during the handshake");
}
