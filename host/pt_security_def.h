/* pt_security_def: what a compiled security definition is made of, and the
 * table of the kinds of definition. Internal to the security module:
 * pt_security_config.c builds definitions from the config, pt_security.c
 * checks requests against them. Nothing outside host/pt_security*.c reads
 * these layouts.
 *
 * A kind (basic_auth, api_key, jwt, client_cert) is one pt__security_kind_t: how it is
 * read from the config, how a presented credential is checked, and the few
 * words its answers differ by. The check is one indirect call per request,
 * in place of a branch on a kind field. A new kind is a new row of
 * pt__security_kinds and its two functions.
 *
 * This header includes no other header of the security module (pt_security.h
 * includes none of it either), so the module's files form no include cycle;
 * it names the public types by their struct tags. */
#ifndef PT_SECURITY_DEF_H
#define PT_SECURITY_DEF_H

#include "pt_security_gate.h"
#include "pt_yaml.h"

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <sodium.h>

#include <stddef.h>
#include <stdint.h>

/* The public types of pt_security.h, by their tags (C11 allows the typedef
 * twice). */
typedef struct pt_security_s pt_security_t;
typedef struct pt_security_def_s pt_security_def_t;
typedef struct pt_security_request_s pt_security_request_t;
typedef struct pt_security_result_s pt_security_result_t;

#define PT_SECURITY_DIGEST 32      /* BLAKE2b-256: API keys, passwords from the environment */
#define PT_SECURITY_NAME_LIMIT 255 /* bytes of a user name (PT_SECURITY_NAME_MAX) */

typedef struct {
    char *name;
    char *hash; /* argon2id string, or NULL: from the environment */
    unsigned char env_digest[PT_SECURITY_DIGEST]; /* keyed BLAKE2b of the password from the
                                                     environment */
} pt__security_user_t;

typedef struct {
    char *username;
    unsigned char digest[PT_SECURITY_DIGEST]; /* BLAKE2b of the key */
} pt__security_key_t;

/* A JWT signature algorithm: how its key is read and a signature checked. */
typedef struct {
    const char *name; /* "HS256": the config's algorithm and the token's alg */
    /* Reads the key of definition d (the mapping n, called what); 0 or -1
     * with the message in c. */
    int (*parse_key)(pt_yaml_t *c, yaml_node_t *n, const char *what, pt_security_def_t *d);
    /* 1 when sig[0..sig_len) signs input[0..input_len) under d's key. */
    int (*verify)(const pt_security_def_t *d, const char *input, size_t input_len,
                  const unsigned char *sig, size_t sig_len);
} pt__security_jwt_alg_t;

/* One kind of definition. */
typedef struct {
    const char *key; /* its list under security: ("basic_auth") */
    /* Reads the definition n (called what, e.g. "security.jwt[0]") into d
     * (zeroed, its kind and index set): the keys it allows, the options
     * every kind has, and its own. Returns 0, or -1 with "file:line:
     * message" in c; pt_security_free frees what it left in d. */
    int (*parse)(pt_yaml_t *c, pt_security_t *sec, yaml_node_t *n, const char *what,
                 pt_security_def_t *d);
    /* Checks the credential v[0..n) (not empty) that the request presented:
     * 0 with res->username filled, PT_SECURITY_REFUSE or PT_SECURITY_VERIFY
     * (pt_security_check's answers). */
    int (*check)(const pt_security_t *sec, const pt_security_def_t *d,
                 const pt_security_request_t *req, const char *v, size_t n,
                 pt_security_result_t *res);
    const char *scheme;       /* of the WWW-Authenticate line of a 401 */
    const char *challenge[2]; /* after its realm: [0] nothing presented, [1] a credential refused */
    const char *missing;      /* 401: no credential presented */
    const char *twice;        /* 400: the credential header came more than once */
    int takes_token;          /* a credential that came another way (req->token) stands in
                                 for a missing header */
    const char *prefix;       /* a header value is "<prefix> <credential>", and the check sees
                                 the credential (NULL: the whole value) */
    const char *no_prefix;    /* 401 when the header value lacks the prefix */
    int from_tls;             /* the credential is the TLS client certificate, not a header:
                                 check is called with v NULL, n 0 */
} pt__security_kind_t;

/* client_cert: where the user name comes from, and one entry of subjects. */
enum { PT__CERT_CN, PT__CERT_SAN_DNS, PT__CERT_SAN_EMAIL, PT__CERT_SAN_URI, PT__CERT_DN };

typedef struct {
    int type;    /* PT__CERT_: CN=, DNS:, email:, URI: or a whole DN (RFC 2253) */
    char *value; /* what follows the prefix (a DN: all of it) */
} pt__security_subject_t;

/* basic_auth, api_key, jwt, client_cert (pt_security_config.c). */
extern const pt__security_kind_t pt__security_kinds[];
extern const size_t pt__security_n_kinds;

/* The checks of basic_auth, api_key and jwt (pt_security.c), each as the
 * check of pt__security_kind_t says. */
int pt__security_check_basic(const pt_security_t *sec, const pt_security_def_t *d,
                             const pt_security_request_t *req, const char *v, size_t n,
                             pt_security_result_t *res);
int pt__security_check_apikey(const pt_security_t *sec, const pt_security_def_t *d,
                              const pt_security_request_t *req, const char *v, size_t n,
                              pt_security_result_t *res);
int pt__security_check_jwt(const pt_security_t *sec, const pt_security_def_t *d,
                           const pt_security_request_t *req, const char *v, size_t n,
                           pt_security_result_t *res);
/* client_cert (pt_security_cert.c): req->ssl's peer certificate. */
int pt__security_check_cert(const pt_security_t *sec, const pt_security_def_t *d,
                            const pt_security_request_t *req, const char *v, size_t n,
                            pt_security_result_t *res);

/* The JWT signatures (pt_security.c): 1 when sig signs input under d's key. */
int pt__security_jwt_verify_hs256(const pt_security_def_t *d, const char *input, size_t input_len,
                                  const unsigned char *sig, size_t sig_len);
int pt__security_jwt_verify_rs256(const pt_security_def_t *d, const char *input, size_t input_len,
                                  const unsigned char *sig, size_t sig_len);

struct pt_security_def_s {
    char *name;
    const pt__security_kind_t *kind;
    uint32_t index;
    char *realm;
    char *challenge[2]; /* the WWW-Authenticate line of a 401 (kind->scheme, realm and
                           kind->challenge[i]): [0] nothing presented, [1] refused */
    char *trust_header; /* lower-case, or NULL */
    int hide_credentials;
    char *header; /* lower-case: where the credential comes from */
    /* basic_auth */
    uint64_t cache_ttl_ns;
    pt__security_user_t *users;
    size_t n_users;
    const char *dummy_hash; /* verified against for an unknown user */
    /* api_key */
    pt__security_key_t *keys;
    size_t n_keys;
    /* jwt */
    const pt__security_jwt_alg_t *alg;
    unsigned char *secret; /* HS256 */
    size_t secret_len;
    EVP_PKEY *pkey; /* RS256 */
    char *issuer;
    char **audiences;
    size_t n_audiences;
    char *username_claim;
    int64_t leeway_s;
    int require_exp;
    /* client_cert */
    X509_STORE *ca_store;             /* its CAs only: a chain is verified against them */
    STACK_OF(X509) * ca_certs;        /* the same, for the TLS listener's list of acceptable CAs */
    int username_from;                /* PT__CERT_CN .. PT__CERT_SAN_URI */
    pt__security_subject_t *subjects; /* allowlist; none: any subject of its CAs */
    size_t n_subjects;
    int line; /* of the definition in the config, for messages about it */
};

struct pt_security_s {
    uint64_t id; /* unique in the process: what a connection's cert memo was made under */
    pt__security_gate_cfg_t gate;
    pt_security_def_t *defs;
    size_t n_defs;
    char **trust_headers; /* lower-case; PT_SECURITY_USERNAME_HEADER first */
    size_t n_trust_headers;
    unsigned char cache_key[crypto_generichash_KEYBYTES]; /* per compiled set: a reload
                                                            invalidates every cache entry */
    unsigned char env_key[crypto_generichash_KEYBYTES];
};

/* Reads the size of libuv's thread pool, which every worker shares, as libuv
 * will when the pool starts (UV_THREADPOOL_SIZE), and keeps it for the share
 * of the pool each thread's password checks may take. Returns it. Called
 * when a config is compiled (pt_security.c). */
unsigned pt__security_pool_size(void);

/* A name fit for a header value and a log line: 1..255 bytes, no control
 * characters. Basic-auth user names also may not hold ':' (RFC 7617). */
static inline int pt__security_valid_username(const char *s, size_t n, int basic)
{
    if (n == 0 || n > PT_SECURITY_NAME_LIMIT) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f || (basic && ch == ':')) return 0;
    }
    return 1;
}

#endif
