/* The client_cert kind's check: the TLS client certificate of the request's
 * connection, verified against the definition's own CAs (not the union the
 * listener asks for, so a certificate of CA A never passes a definition
 * that trusts only CA B), then its subject against the allowlist, then the
 * user name from its CN or a subjectAltName. The outcome is kept in the
 * connection's memo, so keep-alive requests cost no verification. Nothing
 * here blocks: the store is in memory (loaded when the config was), and no
 * CRL or OCSP is fetched. */
#include "pt_security.h"
#include "pt_security_def.h"
#include "pt_util.h"

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Why X509_verify_cert refused, as a fixed text. */
static const char *pt__why(int e)
{
    switch (e) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return "the client certificate has expired";
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return "the client certificate is not valid yet";
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        return "the client certificate is not issued by a CA this channel trusts";
    case X509_V_ERR_INVALID_PURPOSE:
        return "the client certificate is not for client authentication";
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        return "the client certificate's signature does not verify";
    default:
        return "the client certificate does not verify";
    }
}

/* The last CN of x's subject (the most specific) as UTF-8 into out. 1 when
 * there is one that fits; 0 otherwise. */
static int pt__cn(X509 *x, char *out, size_t outlen)
{
    X509_NAME *name = X509_get_subject_name(x);
    int i = -1, last = -1;
    while ((i = X509_NAME_get_index_by_NID(name, NID_commonName, i)) >= 0)
        last = i;
    if (last < 0) return 0;
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, last)));
    int ok = n > 0 && (size_t)n < outlen;
    if (ok) {
        memcpy(out, utf8, (size_t)n);
        out[n] = '\0';
        ok = strlen(out) == (size_t)n; /* no NUL inside */
    }
    OPENSSL_free(utf8);
    return ok;
}

static int pt__gen_type(int from)
{
    return from == PT__CERT_SAN_DNS ? GEN_DNS : from == PT__CERT_SAN_EMAIL ? GEN_EMAIL : GEN_URI;
}

/* Whether a SAN entry of x of kind from (PT__CERT_SAN_) equals want (DNS
 * names and e-mail addresses in any case), or, want NULL, the first such
 * entry into out. */
static int pt__san(X509 *x, int from, const char *want, char *out, size_t outlen)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int found = 0;
    for (int i = 0; sans && !found && i < sk_GENERAL_NAME_num(sans); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != pt__gen_type(from)) continue;
        ASN1_IA5STRING *s = g->d.ia5;
        const char *p = (const char *)ASN1_STRING_get0_data(s);
        size_t n = (size_t)ASN1_STRING_length(s);
        if (memchr(p, '\0', n)) continue;
        if (want)
            found = strlen(want) == n &&
                    (from == PT__CERT_SAN_URI ? !memcmp(want, p, n) : !strncasecmp(want, p, n));
        else if (n < outlen) {
            memcpy(out, p, n);
            out[n] = '\0';
            found = 1;
        }
    }
    GENERAL_NAMES_free(sans);
    return found;
}

/* x's subject as RFC 2253 text ("CN=acme,O=Acme"), as `openssl x509
 * -subject -nameopt RFC2253` prints it. */
static int pt__dn(X509 *x, char *out, size_t outlen)
{
    BIO *b = BIO_new(BIO_s_mem());
    int ok = b && X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0;
    char *p = NULL;
    long n = ok ? BIO_get_mem_data(b, &p) : 0;
    ok = ok && n >= 0 && (size_t)n < outlen;
    if (ok) {
        memcpy(out, p, (size_t)n);
        out[n] = '\0';
    }
    BIO_free(b);
    return ok;
}

static int pt__allowed(const pt_security_def_t *d, X509 *x)
{
    char buf[1024];
    if (!d->n_subjects) return 1;
    for (size_t i = 0; i < d->n_subjects; i++) {
        const pt__security_subject_t *s = &d->subjects[i];
        if (s->type == PT__CERT_CN) {
            if (pt__cn(x, buf, sizeof buf) && !strcmp(buf, s->value)) return 1;
        } else if (s->type == PT__CERT_DN) {
            if (pt__dn(x, buf, sizeof buf) && !strcmp(buf, s->value)) return 1;
        } else if (pt__san(x, s->type, s->value, NULL, 0)) {
            return 1;
        }
    }
    return 0;
}

/* The check itself, into memo (status 0: let through, with the user name). */
static void pt__check(const pt_security_def_t *d, const SSL *ssl, pt_security_cert_memo_t *m)
{
    X509 *x = SSL_get0_peer_certificate(ssl);
    m->username[0] = '\0';
    m->message = NULL;
    if (!x) {
        m->status = 401;
        m->message = d->kind->missing;
        return;
    }
    /* the chain the client sent (without its own certificate), untrusted */
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
    X509_STORE_CTX *xc = X509_STORE_CTX_new();
    int ok = xc && X509_STORE_CTX_init(xc, d->ca_store, x, chain) == 1 &&
             X509_STORE_CTX_set_default(xc, "ssl_client") == 1;
    if (!ok) {
        X509_STORE_CTX_free(xc);
        ERR_clear_error();
        m->status = 500;
        m->message = "cannot check the client certificate";
        return;
    }
    ok = X509_verify_cert(xc) == 1;
    int e = X509_STORE_CTX_get_error(xc);
    X509_STORE_CTX_free(xc);
    ERR_clear_error();
    if (!ok) {
        m->status = 401;
        m->message = pt__why(e);
        return;
    }
    if (!pt__allowed(d, x)) {
        m->status = 403;
        m->message = "the client certificate's subject is not allowed on this channel";
        return;
    }
    static const char *const none[] = {
        [PT__CERT_CN] = "the client certificate has no usable subject CN to name the user",
        [PT__CERT_SAN_DNS] = "the client certificate has no DNS subjectAltName to name the user",
        [PT__CERT_SAN_EMAIL] = ("the client certificate has no email subjectAltName to name the "
                                "user"),
        [PT__CERT_SAN_URI] = "the client certificate has no URI subjectAltName to name the user"};
    int named = d->username_from == PT__CERT_CN
                    ? pt__cn(x, m->username, sizeof m->username)
                    : pt__san(x, d->username_from, NULL, m->username, sizeof m->username);
    if (!named || !pt__security_valid_username(m->username, strlen(m->username), 0)) {
        m->username[0] = '\0';
        m->status = 403;
        m->message = none[d->username_from];
        return;
    }
    m->status = 0;
}

int pt__security_check_cert(const pt_security_t *sec, const pt_security_def_t *d,
                            const pt_security_request_t *req, const char *v, size_t n,
                            pt_security_result_t *res)
{
    (void)v;
    (void)n;
    if (!req->ssl) {
        res->status = 403;
        res->message = "this channel takes a TLS client certificate: call it on the TLS listener";
        return PT_SECURITY_REFUSE;
    }
    pt_security_cert_memo_t local, *m = req->cert_memo ? req->cert_memo : &local;
    if (!req->cert_memo || m->set != sec->id || m->def != d->index) {
        pt__check(d, req->ssl, m);
        m->set = sec->id;
        m->def = d->index;
    }
    if (m->status == 0) {
        pt_strcpy_cap(res->username, m->username, sizeof res->username);
        return 0;
    }
    res->status = m->status;
    res->message = m->message;
    if (m->status == 401)
        pt_strcpy_cap(res->extra, d->challenge[m->message != d->kind->missing], sizeof res->extra);
    return PT_SECURITY_REFUSE;
}
