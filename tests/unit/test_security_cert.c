/* The client_cert kind: its config errors (file:line), and its check over a
 * real TLS handshake in memory (pt_tls's server context with the
 * definition's CAs, an OpenSSL client with a certificate). The
 * certificates are made here, at run time; no key is kept. */
#include "pt_config.h"
#include "pt_security.h"
#include "pt_security_config.h"
#include "pt_test.h"
#include "pt_test_config.h"
#include "pt_tls.h"
#include "pt_yaml.h"

#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#include <stdlib.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/pt_test_security_cert.XXXXXX";
static char err[1024];

typedef struct {
    X509 *x;
    EVP_PKEY *k;
} pair_t;

static void ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
}

/* A P-256 certificate for cn, signed by issuer (NULL: itself, a CA), valid
 * from now for secs (negative: expired). */
static pair_t make(const char *cn, const pair_t *issuer, const char *san, long secs)
{
    static long serial = 1;
    pair_t p = {X509_new(), EVP_EC_gen("P-256")};
    X509_set_version(p.x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(p.x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(p.x), secs < 0 ? 2 * secs : 0);
    X509_gmtime_adj(X509_getm_notAfter(p.x), secs);
    X509_set_pubkey(p.x, p.k);
    X509_NAME *name = X509_get_subject_name(p.x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"Unit", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(p.x, issuer ? X509_get_subject_name(issuer->x) : name);
    ext(p.x, issuer ? issuer->x : p.x, NID_basic_constraints, issuer ? "CA:FALSE" : "CA:TRUE");
    if (san) ext(p.x, issuer ? issuer->x : p.x, NID_subject_alt_name, san);
    X509_sign(p.x, issuer ? issuer->k : p.k, EVP_sha256());
    return p;
}

static void pair_free(pair_t *p)
{
    X509_free(p->x);
    EVP_PKEY_free(p->k);
}

static const char *write_pem(const char *name, const pair_t *p, int with_key)
{
    static char path[8][600];
    static int i;
    char *out = path[i++ % 8];
    snprintf(out, 600, "%s/%s", tmpdir, name);
    FILE *f = fopen(out, "w");
    PEM_write_X509(f, p->x);
    if (with_key) PEM_write_PrivateKey(f, p->k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    return out;
}

static pair_t ca_a, ca_b, server, acme, acme_b, expired, mail;

PT_CASE(config_errors)
{
    const char *head = "security:\n  client_cert:\n    - name: p\n";
    char text[2048];
#define WITH(rest) (snprintf(text, sizeof text, "%s%s", head, rest), text)
    PT_CHECK(pt_test_fails_in(tmpdir, WITH("      username: cn\n"),
                              "bad.yaml:3: security.client_cert[0].ca: missing"));
    PT_CHECK(pt_test_fails_in(tmpdir, WITH("      ca: nope.pem\n"),
                              "bad.yaml:4: security.client_cert[0].ca: cannot read nope.pem: No "
                              "such file or directory"));
    PT_CHECK(pt_test_fails_in(tmpdir, WITH("      ca: .\n"),
                              "bad.yaml:4: security.client_cert[0].ca: cannot read .: not a "
                              "regular file"));
    PT_CHECK(pt_test_fails_in(tmpdir, WITH("      ca: bad.yaml\n"),
                              "bad.yaml:4: security.client_cert[0].ca: no PEM certificate"));
    PT_CHECK(pt_test_fails_in(tmpdir, WITH("      ca: ca_a.pem\n      username: serial\n"),
                              "bad.yaml:5: security.client_cert[0].username: expected cn, san_dns, "
                              "san_email or san_uri"));
    PT_CHECK(pt_test_fails_in(tmpdir, WITH("      ca: ca_a.pem\n      subjects: CN=acme\n"),
                              "bad.yaml:5: security.client_cert[0].subjects: expected a list"));
    PT_CHECK(pt_test_fails_in(tmpdir, WITH("      ca: ca_a.pem\n      subjects: []\n"),
                              "bad.yaml:5: security.client_cert[0].subjects: expected a list"));
    PT_CHECK(pt_test_fails_in(tmpdir, WITH("      ca: ca_a.pem\n      subjects: [CN=a, acme]\n"),
                              "bad.yaml:5: security.client_cert[0].subjects[1]: expected CN=name, "
                              "DNS:name"));
    PT_CHECK(pt_test_fails_in(tmpdir, WITH("      ca: ca_a.pem\n      subjects: ['DNS:']\n"),
                              "security.client_cert[0].subjects[0]: expected CN=name"));
    PT_CHECK(pt_test_fails_in(tmpdir, WITH("      ca: ca_a.pem\n      subjects: ['=x']\n"),
                              "security.client_cert[0].subjects[0]: expected CN=name"));
    PT_CHECK(pt_test_fails_in(tmpdir, WITH("      ca: ca_a.pem\n      subjects: [{CN: a}]\n"),
                              "security.client_cert[0].subjects[0]: expected CN=name"));
    PT_CHECK(pt_test_fails_in(tmpdir, WITH("      ca: ca_a.pem\n      hide_credentials: false\n"),
                              "security.client_cert[0]: unknown key 'hide_credentials'"));
    PT_CHECK(pt_test_fails_in(tmpdir,
                              WITH("      ca: ca_a.pem\n      trust_username_header: 'a b'\n"),
                              "security.client_cert[0].trust_username_header: expected a header "
                              "name"));
    /* a definition that can never be met */
    PT_CHECK(
        pt_test_fails_in(tmpdir, WITH("      ca: ca_a.pem\n"),
                         "bad.yaml:3: security definition 'p' (client_cert) needs server.tls"));
    /* server.tls's own durations */
    PT_CHECK(pt_test_fails_in(tmpdir,
                              "server:\n  tls:\n    listen: 127.0.0.1:1\n"
                              "    handshake_timeout: 0s\n",
                              "bad.yaml:4: server.tls.handshake_timeout:"));
    PT_CHECK(pt_test_fails_in(tmpdir,
                              "server:\n  tls:\n    listen: 127.0.0.1:1\n"
                              "    ticket_rotation: 10ms\n",
                              "bad.yaml:4: server.tls.ticket_rotation:"));
#undef WITH
}

PT_CASE(loads_with_tls_and_defaults)
{
    char path[600], text[2048];
    snprintf(path, sizeof path, "%s/good.yaml", tmpdir);
    snprintf(text, sizeof text,
             "server:\n  header_timeout: 7s\n  tls:\n    listen: 127.0.0.1:1\n"
             "    certificates:\n      - {cert: server.pem, key: server.pem}\n"
             "security:\n  client_cert:\n    - name: p\n      ca: ca_a.pem\n"
             "      subjects: [CN=acme, 'DNS:a.example', 'email:a@b', 'URI:spiffe://x',"
             " 'CN=acme,O=Unit']\n      username: san_email\n");
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    pt_config_t *cfg = NULL;
    PT_CHECK(pt_config_load(path, &cfg, err, sizeof err) == 0);
    if (!cfg) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    PT_CHECK_INT(cfg->tls_handshake_timeout_ms, 7000); /* header_timeout's */
    pt_config_free(cfg);
}

/* ---- the check, over a handshake in memory ---- */

/* Runs a handshake between a client with cert (NULL: none) and a server SSL
 * of ctx. Returns the server SSL (the caller frees both), or NULL. */
static SSL *handshake(pt_tls_ctx_t *ctx, const pair_t *cert, SSL **client_out)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    if (cert) {
        SSL_CTX_use_certificate(cctx, cert->x);
        SSL_CTX_use_PrivateKey(cctx, cert->k);
    }
    SSL *c = SSL_new(cctx), *s = pt_tls_ctx_ssl(ctx);
    SSL_CTX_free(cctx);
    BIO *cb, *sb;
    BIO_new_bio_pair(&cb, 0, &sb, 0);
    SSL_set_bio(c, cb, cb);
    SSL_set_bio(s, sb, sb);
    SSL_set_connect_state(c);
    int done_c = 0, done_s = 0;
    for (int i = 0; i < 20 && !(done_c && done_s); i++) {
        if (!done_c) done_c = SSL_do_handshake(c) == 1;
        if (!done_s) done_s = SSL_do_handshake(s) == 1;
    }
    *client_out = c;
    if (!done_s) {
        SSL_free(s);
        return NULL;
    }
    return s;
}

static int no_header(void *ud, const char *name, const char **value, size_t *len)
{
    return 0;
}

/* pt_security_each_client_ca's callback: the CAs go to the listener. */
static int add_cas(void *u, const char *name, int line, STACK_OF(X509) * cas)
{
    struct {
        pt_tls_ctx_t *ctx;
        int n;
    } *ud = u;
    char e[128];
    ud->n++;
    return pt_tls_ctx_client_cas(ud->ctx, cas, e, sizeof e);
}

PT_CASE(checks_the_certificate_once_per_connection)
{
    char text[2048];
    snprintf(text, sizeof text,
             "security:\n  client_cert:\n    - name: a\n      ca: %s/ca_a.pem\n"
             "      subjects: [CN=acme, 'email:m@unit.example']\n"
             "    - name: b\n      ca: %s/ca_b.pem\n"
             "    - name: mail\n      ca: %s/ca_a.pem\n      username: san_email\n",
             tmpdir, tmpdir, tmpdir);
    yaml_document_t doc;
    pt_security_t *sec = NULL;
    PT_CHECK(pt_yaml_load("sec.yaml", text, strlen(text), &doc, err, sizeof err) == 0);
    pt_yaml_t y = {
        .doc = &doc, .file = "sec.yaml", .dir = tmpdir, .err = err, .errlen = sizeof err};
    yaml_node_t *node = pt_yaml_get(&y, yaml_document_get_root_node(&doc), "security");
    PT_CHECK(pt_security_parse(&doc, node, "sec.yaml", tmpdir, &sec, err, sizeof err) == 0);
    yaml_document_delete(&doc);
    if (!sec) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    pt_tls_ctx_t *ctx = NULL;
    char path[600];
    snprintf(path, sizeof path, "%s/server.pem", tmpdir);
    PT_CHECK(pt_tls_ctx_new(TLS1_2_VERSION, NULL, &ctx, err, sizeof err) == 0);
    PT_CHECK(pt_tls_ctx_add(ctx, path, path, err, sizeof err) == 0);
    const pt_security_def_t *a = pt_security_find(sec, "a"), *b = pt_security_find(sec, "b"),
                            *m = pt_security_find(sec, "mail");
    /* both definitions' CAs are asked for */
    struct {
        pt_tls_ctx_t *ctx;
        int n;
    } ud = {ctx, 0};
    PT_CHECK(pt_security_each_client_ca(sec, add_cas, &ud) == 0);
    PT_CHECK_INT(ud.n, 3);

    struct {
        const pair_t *cert;
        const pt_security_def_t *def;
        int status;
        const char *user_or_message;
    } cases[] = {
        {&acme, a, 0, "acme"},
        {&acme, b, 401, "the client certificate is not issued by a CA this channel trusts"},
        {&acme_b, b, 0, "acme"},
        {&acme_b, a, 401, "the client certificate is not issued by a CA this channel trusts"},
        {&expired, a, 401, "the client certificate has expired"},
        {&mail, a, 0, "mailer"}, /* allowed by its SAN, named by its CN */
        {&mail, m, 0, "m@unit.example"},
        {&acme, m, 403, "the client certificate has no email subjectAltName to name the user"},
        {&server, a, 403, "the client certificate's subject is not allowed on this channel"},
        {NULL, a, 401, "a client certificate is required"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        SSL *client = NULL, *s = handshake(ctx, cases[i].cert, &client);
        PT_CHECK(s != NULL);
        if (!s) {
            SSL_free(client);
            continue;
        }
        pt_security_cert_memo_t memo = {0};
        pt_security_request_t req = {.header = no_header, .ssl = s, .cert_memo = &memo};
        pt_security_result_t res;
        int rc = pt_security_check(sec, cases[i].def, &req, &res);
        if (cases[i].status == 0) {
            PT_CHECK_INT(rc, 0);
            PT_CHECK_STR(res.username, cases[i].user_or_message);
            /* the next request of the connection takes the memo */
            memo.username[0] = 'X';
            PT_CHECK_INT(pt_security_check(sec, cases[i].def, &req, &res), 0);
            PT_CHECK(res.username[0] == 'X');
        } else {
            PT_CHECK_INT(rc, PT_SECURITY_REFUSE);
            PT_CHECK_INT(res.status, cases[i].status);
            PT_CHECK_STR(res.message, cases[i].user_or_message);
            if (res.status == 401) PT_CHECK(strstr(res.extra, "WWW-Authenticate: TLS realm=") != 0);
        }
        SSL_free(s);
        SSL_free(client);
    }
    /* plaintext */
    pt_security_request_t plain = {.header = no_header};
    pt_security_result_t res;
    PT_CHECK_INT(pt_security_check(sec, a, &plain, &res), PT_SECURITY_REFUSE);
    PT_CHECK_INT(res.status, 403);
    pt_tls_ctx_unref(ctx);
    pt_security_free(sec);
}

int main(void)
{
    if (sodium_init() < 0 || !mkdtemp(tmpdir)) return 1;
    ca_a = make("unit CA a", NULL, NULL, 3600);
    ca_b = make("unit CA b", NULL, NULL, 3600);
    server = make("localhost", &ca_a, "DNS:localhost", 3600);
    acme = make("acme", &ca_a, NULL, 3600);
    acme_b = make("acme", &ca_b, NULL, 3600);
    expired = make("acme", &ca_a, NULL, -3600);
    mail = make("mailer", &ca_a, "email:m@unit.example", 3600);
    write_pem("ca_a.pem", &ca_a, 0);
    write_pem("ca_b.pem", &ca_b, 0);
    write_pem("server.pem", &server, 1);
    PT_RUN(config_errors);
    PT_RUN(loads_with_tls_and_defaults);
    PT_RUN(checks_the_certificate_once_per_connection);
    pair_t *all[] = {&ca_a, &ca_b, &server, &acme, &acme_b, &expired, &mail};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        pair_free(all[i]);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) return 1;
    return PT_TEST_DONE();
}
