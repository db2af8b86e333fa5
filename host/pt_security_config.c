#include "pt_security_config.h"
#include "pt_security_def.h"
#include "pt_util.h"
#include "pt_yaml.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sodium.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PT__MAX_MEMLIMIT (256u << 20) /* the most an argon2id hash may ask per check */
#define PT__MAX_CA_FILE (4u << 20)    /* a client_cert CA bundle */

typedef pt_yaml_t pt__ctx_t;

/* The shared key check, after refusing a plain secret with what to use. */
static int pt__check_keys(pt__ctx_t *c, yaml_node_t *map, const char *what,
                          const char *const *allowed)
{
    static const struct {
        const char *key, *instead;
    } plain[] = {
        {"password", "no plain password in the file: use password_hash (`portico "
                     "hash-password`) or password_env"},
        {"key", "no plain key in the file: use key_hash (`portico hash-password --api-key`) "
                "or key_env"},
        {"secret", "no plain secret in the file: use secret_env or secret_file"},
    };
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        yaml_node_t *v = pt_yaml_get(c, map, plain[i].key);
        if (v) return pt_yaml_fail(c, v, "%s: %s", what, plain[i].instead);
    }
    return pt_yaml_check_keys(c, map, what, allowed);
}

/* An HTTP header name (token characters), stored lower-case. */
static char *pt__header_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64) return NULL;
    char *out = malloc(n + 1);
    for (size_t i = 0; out && i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!(ch >= 'a' && ch <= 'z') && !(ch >= 'A' && ch <= 'Z') && !(ch >= '0' && ch <= '9') &&
            !strchr("!#$%&'*+-.^_`|~", ch)) {
            free(out);
            return NULL;
        }
        out[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    if (out) out[n] = '\0';
    return out;
}

/* Reads an environment variable a definition names; it must be set. */
static const char *pt__env(pt__ctx_t *c, yaml_node_t *n, const char *what)
{
    const char *name = pt_yaml_value(n);
    if (!name) {
        pt_yaml_fail(c, n, "%s: expected the name of an environment variable", what);
        return NULL;
    }
    const char *v = getenv(name);
    if (!v || !*v) {
        pt_yaml_fail(c, n, "%s: the environment variable %s is not set", what, name);
        return NULL;
    }
    return v;
}

static int pt__hex(const char *s, unsigned char *out, size_t n)
{
    size_t bin_len;
    return strlen(s) == 2 * n && sodium_hex2bin(out, n, s, 2 * n, NULL, &bin_len, NULL) == 0 &&
                   bin_len == n
               ? 0
               : -1;
}

/* Reads the argon2id memory cost ("m=65536", KiB) out of a hash string. */
static unsigned long pt__argon2_memory_kib(const char *hash)
{
    const char *m = strstr(hash, "$m=");
    return m ? strtoul(m + 3, NULL, 10) : 0;
}

static int pt__common(pt__ctx_t *c, yaml_node_t *n, const char *what, pt_security_def_t *d)
{
    yaml_node_t *v;
    char key[128];
    snprintf(key, sizeof key, "%s.name", what);
    if (pt_yaml_string(c, pt_yaml_get(c, n, "name"), key, &d->name) != 0) return -1;
    d->hide_credentials = 1;
    if ((v = pt_yaml_get(c, n, "realm"))) {
        snprintf(key, sizeof key, "%s.realm", what);
        if (pt_yaml_string(c, v, key, &d->realm) != 0) return -1;
        for (const char *p = d->realm; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\' || *p == 0x7f)
                return pt_yaml_fail(c, v, "%s: no quotes, backslashes or control characters", key);
    } else if (!(d->realm = strdup("portico"))) {
        return pt_yaml_fail(c, n, "out of memory");
    }
    if ((v = pt_yaml_get(c, n, "trust_username_header"))) {
        const char *s = pt_yaml_value(v);
        if (!s || !(d->trust_header = pt__header_name(s)))
            return pt_yaml_fail(c, v, "%s.trust_username_header: expected a header name", what);
        if (!strcmp(d->trust_header, "authorization"))
            return pt_yaml_fail(c, v, "%s.trust_username_header: not the Authorization header",
                                what);
    }
    if ((v = pt_yaml_get(c, n, "hide_credentials"))) {
        snprintf(key, sizeof key, "%s.hide_credentials", what);
        if (pt_yaml_bool(c, v, key, &d->hide_credentials) != 0) return -1;
    }
    return 0;
}

static int pt__basic(pt__ctx_t *c, pt_security_t *sec, yaml_node_t *n, const char *what,
                     pt_security_def_t *d)
{
    static const char *const keys[] = {
        "name", "realm", "users", "trust_username_header", "cache_ttl", "hide_credentials", NULL};
    static const char *const user_keys[] = {"username", "password_hash", "password_env", NULL};
    char key[256];
    yaml_node_t *v;
    if (pt__check_keys(c, n, what, keys) != 0 || pt__common(c, n, what, d) != 0) return -1;
    if (!(d->header = strdup("authorization"))) return pt_yaml_fail(c, n, "out of memory");
    d->cache_ttl_ns = 300ull * 1000000000ull;
    if ((v = pt_yaml_get(c, n, "cache_ttl"))) {
        uint64_t ms;
        if (!pt_yaml_value(v) || pt_parse_duration_ms(pt_yaml_value(v), &ms) != 0 || ms < 1000 ||
            ms > 86400000ull)
            return pt_yaml_fail(c, v, "%s.cache_ttl: a duration from 1s to 24h", what);
        d->cache_ttl_ns = ms * 1000000ull;
    }
    yaml_node_t *list = pt_yaml_get(c, n, "users");
    if (!list || list->type != YAML_SEQUENCE_NODE || pt_yaml_len(list) == 0)
        return pt_yaml_fail(c, list ? list : n, "%s.users: expected a list of users", what);
    if (!(d->users = calloc(pt_yaml_len(list), sizeof *d->users)))
        return pt_yaml_fail(c, n, "out of memory");
    for (size_t i = 0; i < pt_yaml_len(list); i++) {
        yaml_node_t *u = pt_yaml_item(c, list, i);
        pt__security_user_t *user = &d->users[d->n_users++];
        char uwhat[160];
        snprintf(uwhat, sizeof uwhat, "%s.users[%zu]", what, i);
        if (pt__check_keys(c, u, uwhat, user_keys) != 0) return -1;
        snprintf(key, sizeof key, "%s.username", uwhat);
        if (pt_yaml_string(c, pt_yaml_get(c, u, "username"), key, &user->name) != 0) return -1;
        if (!pt__security_valid_username(user->name, strlen(user->name), 1))
            return pt_yaml_fail(c, pt_yaml_get(c, u, "username"),
                                "%s: 1 to 255 characters, no ':' and no control characters", key);
        for (size_t j = 0; j + 1 < d->n_users; j++)
            if (!strcmp(d->users[j].name, user->name))
                return pt_yaml_fail(c, u, "%s: user '%s' is listed twice", what, user->name);
        yaml_node_t *h = pt_yaml_get(c, u, "password_hash"), *e = pt_yaml_get(c, u, "password_env");
        if (!h == !e)
            return pt_yaml_fail(c, u, "%s: give either password_hash or password_env", uwhat);
        if (h) {
            const char *s = pt_yaml_value(h);
            /* needs_rehash answers -1 for anything that is not a well-formed hash */
            if (!s || strncmp(s, "$argon2id$", 10) != 0 || strlen(s) >= crypto_pwhash_STRBYTES ||
                crypto_pwhash_str_needs_rehash(s, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                               crypto_pwhash_MEMLIMIT_INTERACTIVE) < 0)
                return pt_yaml_fail(c, h,
                                    "%s.password_hash: not an argon2id hash (make one with "
                                    "`portico hash-password`)",
                                    uwhat);
            if (pt__argon2_memory_kib(s) > PT__MAX_MEMLIMIT / 1024)
                return pt_yaml_fail(c, h, "%s.password_hash: uses more than %u MiB per check",
                                    uwhat, PT__MAX_MEMLIMIT >> 20);
            if (!(user->hash = strdup(s))) return pt_yaml_fail(c, h, "out of memory");
            if (!d->dummy_hash) d->dummy_hash = user->hash;
        } else {
            snprintf(key, sizeof key, "%s.password_env", uwhat);
            const char *pw = pt__env(c, e, key);
            if (!pw) return -1;
            crypto_generichash(user->env_digest, PT_SECURITY_DIGEST, (const unsigned char *)pw,
                               strlen(pw), sec->env_key, sizeof sec->env_key);
        }
    }
    return 0;
}

static int pt__apikey(pt__ctx_t *c, pt_security_t *sec, yaml_node_t *n, const char *what,
                      pt_security_def_t *d)
{
    static const char *const keys[] = {
        "name", "realm", "header", "keys", "trust_username_header", "hide_credentials", NULL};
    static const char *const key_keys[] = {"username", "key_hash", "key_env", NULL};
    char key[256];
    yaml_node_t *v;
    if (pt__check_keys(c, n, what, keys) != 0 || pt__common(c, n, what, d) != 0) return -1;
    v = pt_yaml_get(c, n, "header");
    if (!v || !pt_yaml_value(v) || !(d->header = pt__header_name(pt_yaml_value(v))))
        return pt_yaml_fail(c, v ? v : n, "%s.header: expected a header name such as x-api-key",
                            what);
    yaml_node_t *list = pt_yaml_get(c, n, "keys");
    if (!list || list->type != YAML_SEQUENCE_NODE || pt_yaml_len(list) == 0)
        return pt_yaml_fail(c, list ? list : n, "%s.keys: expected a list of keys", what);
    if (!(d->keys = calloc(pt_yaml_len(list), sizeof *d->keys)))
        return pt_yaml_fail(c, n, "out of memory");
    for (size_t i = 0; i < pt_yaml_len(list); i++) {
        yaml_node_t *k = pt_yaml_item(c, list, i);
        pt__security_key_t *ak = &d->keys[d->n_keys++];
        char kwhat[160];
        snprintf(kwhat, sizeof kwhat, "%s.keys[%zu]", what, i);
        if (pt__check_keys(c, k, kwhat, key_keys) != 0) return -1;
        snprintf(key, sizeof key, "%s.username", kwhat);
        if (pt_yaml_string(c, pt_yaml_get(c, k, "username"), key, &ak->username) != 0) return -1;
        if (!pt__security_valid_username(ak->username, strlen(ak->username), 0))
            return pt_yaml_fail(c, pt_yaml_get(c, k, "username"),
                                "%s: 1 to 255 characters, no control characters", key);
        yaml_node_t *h = pt_yaml_get(c, k, "key_hash"), *e = pt_yaml_get(c, k, "key_env");
        if (!h == !e) return pt_yaml_fail(c, k, "%s: give either key_hash or key_env", kwhat);
        if (h) {
            const char *s = pt_yaml_value(h);
            if (!s || strncmp(s, "blake2b:", 8) != 0 ||
                pt__hex(s + 8, ak->digest, PT_SECURITY_DIGEST))
                return pt_yaml_fail(c, h,
                                    "%s.key_hash: expected blake2b:<64 hex digits> (make one with "
                                    "`portico hash-password --api-key`)",
                                    kwhat);
        } else {
            snprintf(key, sizeof key, "%s.key_env", kwhat);
            const char *kv = pt__env(c, e, key);
            if (!kv) return -1;
            crypto_generichash(ak->digest, PT_SECURITY_DIGEST, (const unsigned char *)kv,
                               strlen(kv), NULL, 0);
        }
        for (size_t j = 0; j + 1 < d->n_keys; j++)
            if (!sodium_memcmp(d->keys[j].digest, ak->digest, PT_SECURITY_DIGEST))
                return pt_yaml_fail(c, k, "%s: the same key is listed twice", what);
    }
    return 0;
}

/* Reads a whole (small) file; *len excludes a trailing newline. A regular
 * file only: a FIFO would block the load, /dev/zero never end. NULL with the
 * reason in why. */
static unsigned char *pt__slurp(const char *path, size_t *len, char *why, size_t whylen)
{
    char *text;
    size_t n;
    if (pt_read_small_file(path, 65536, &text, &n, why, whylen) != 0) return NULL;
    unsigned char *buf = (unsigned char *)text;
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* HS256: a secret of at least 32 bytes from the environment or a file. */
static int pt__jwt_hs256_key(pt__ctx_t *c, yaml_node_t *n, const char *what, pt_security_def_t *d)
{
    char key[160], why[128] = "out of memory";
    yaml_node_t *se = pt_yaml_get(c, n, "secret_env"), *sf = pt_yaml_get(c, n, "secret_file");
    if (pt_yaml_get(c, n, "public_key") || !se == !sf)
        return pt_yaml_fail(c, n, "%s: HS256 takes either secret_env or secret_file", what);
    if (se) {
        snprintf(key, sizeof key, "%s.secret_env", what);
        const char *s = pt__env(c, se, key);
        if (!s) return -1;
        d->secret_len = strlen(s);
        d->secret = (unsigned char *)strdup(s);
    } else {
        const char *p = pt_yaml_value(sf);
        char *path = p ? pt_yaml_path(c, p) : NULL;
        d->secret = path ? pt__slurp(path, &d->secret_len, why, sizeof why) : NULL;
        free(path);
        if (!d->secret)
            return pt_yaml_fail(c, sf, "%s.secret_file: cannot read %s: %s", what, p ? p : "?",
                                why);
    }
    if (!d->secret) return pt_yaml_fail(c, n, "out of memory");
    if (d->secret_len < 32)
        return pt_yaml_fail(c, se ? se : sf, "%s: an HS256 secret needs at least 32 bytes", what);
    return 0;
}

/* RS256: a PEM public key of at least 2048 bits. */
static int pt__jwt_rs256_key(pt__ctx_t *c, yaml_node_t *n, const char *what, pt_security_def_t *d)
{
    char why[128] = "out of memory";
    yaml_node_t *pk = pt_yaml_get(c, n, "public_key");
    if (pt_yaml_get(c, n, "secret_env") || pt_yaml_get(c, n, "secret_file") || !pk)
        return pt_yaml_fail(c, n, "%s: RS256 takes public_key (a PEM file)", what);
    const char *p = pt_yaml_value(pk);
    char *path = p ? pt_yaml_path(c, p) : NULL;
    /* read like secret_file (a FIFO must not block the load), parsed from memory */
    size_t pem_len = 0;
    unsigned char *pem = path ? pt__slurp(path, &pem_len, why, sizeof why) : NULL;
    free(path);
    if (!pem)
        return pt_yaml_fail(c, pk, "%s.public_key: cannot read %s: %s", what, p ? p : "?", why);
    BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
    d->pkey = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    free(pem);
    if (!d->pkey || !EVP_PKEY_is_a(d->pkey, "RSA"))
        return pt_yaml_fail(c, pk, "%s.public_key: not a PEM RSA public key (BEGIN PUBLIC KEY)",
                            what);
    if (EVP_PKEY_get_bits(d->pkey) < 2048)
        return pt_yaml_fail(c, pk, "%s.public_key: an RSA key needs at least 2048 bits", what);
    return 0;
}

static const pt__security_jwt_alg_t pt__jwt_algs[] = {
    {"HS256", pt__jwt_hs256_key, pt__security_jwt_verify_hs256},
    {"RS256", pt__jwt_rs256_key, pt__security_jwt_verify_rs256},
};

static int pt__jwt(pt__ctx_t *c, pt_security_t *sec, yaml_node_t *n, const char *what,
                   pt_security_def_t *d)
{
    static const char *const keys[] = {"name",
                                       "realm",
                                       "algorithm",
                                       "secret_env",
                                       "secret_file",
                                       "public_key",
                                       "issuer",
                                       "audience",
                                       "username_claim",
                                       "leeway",
                                       "require_exp",
                                       "trust_username_header",
                                       "hide_credentials",
                                       NULL};
    char key[160];
    yaml_node_t *v;
    if (pt__check_keys(c, n, what, keys) != 0 || pt__common(c, n, what, d) != 0) return -1;
    if (!(d->header = strdup("authorization"))) return pt_yaml_fail(c, n, "out of memory");
    v = pt_yaml_get(c, n, "algorithm");
    const char *alg = pt_yaml_value(v);
    for (size_t i = 0; alg && i < sizeof pt__jwt_algs / sizeof pt__jwt_algs[0]; i++)
        if (!strcmp(alg, pt__jwt_algs[i].name)) d->alg = &pt__jwt_algs[i];
    if (!d->alg) return pt_yaml_fail(c, v ? v : n, "%s.algorithm: expected HS256 or RS256", what);
    if (d->alg->parse_key(c, n, what, d) != 0) return -1;
    if ((v = pt_yaml_get(c, n, "issuer"))) {
        snprintf(key, sizeof key, "%s.issuer", what);
        if (pt_yaml_string(c, v, key, &d->issuer) != 0) return -1;
    }
    if ((v = pt_yaml_get(c, n, "audience"))) {
        size_t len = v->type == YAML_SEQUENCE_NODE ? pt_yaml_len(v) : 1;
        if (!(d->audiences = calloc(len, sizeof *d->audiences)))
            return pt_yaml_fail(c, v, "out of memory");
        snprintf(key, sizeof key, "%s.audience", what);
        for (size_t i = 0; i < len; i++) {
            yaml_node_t *item = v->type == YAML_SEQUENCE_NODE ? pt_yaml_item(c, v, i) : v;
            if (pt_yaml_string(c, item, key, &d->audiences[d->n_audiences]) != 0) return -1;
            d->n_audiences++;
        }
    }
    if ((v = pt_yaml_get(c, n, "username_claim"))) {
        snprintf(key, sizeof key, "%s.username_claim", what);
        if (pt_yaml_string(c, v, key, &d->username_claim) != 0) return -1;
    } else if (!(d->username_claim = strdup("sub"))) {
        return pt_yaml_fail(c, n, "out of memory");
    }
    d->leeway_s = 30;
    if ((v = pt_yaml_get(c, n, "leeway"))) {
        uint64_t ms;
        if (!pt_yaml_value(v) || pt_parse_duration_ms(pt_yaml_value(v), &ms) != 0 || ms > 3600000)
            return pt_yaml_fail(c, v, "%s.leeway: a duration up to 1h", what);
        d->leeway_s = (int64_t)(ms / 1000);
    }
    d->require_exp = 1;
    if ((v = pt_yaml_get(c, n, "require_exp"))) {
        snprintf(key, sizeof key, "%s.require_exp", what);
        if (pt_yaml_bool(c, v, key, &d->require_exp) != 0) return -1;
    }
    return 0;
}

/* client_cert.ca: a PEM file of CA certificates, read like secret_file (a
 * FIFO must not block the load) and parsed from memory into the
 * definition's own store, which no other definition shares. */
static int pt__cert_ca(pt__ctx_t *c, yaml_node_t *v, const char *what, pt_security_def_t *d)
{
    char why[160] = "out of memory";
    const char *p = pt_yaml_value(v);
    if (!p || !*p) return pt_yaml_fail(c, v, "%s.ca: expected the path of a PEM file of CAs", what);
    char *path = pt_yaml_path(c, p), *text = NULL;
    size_t len = 0;
    int rc = path ? pt_read_small_file(path, PT__MAX_CA_FILE, &text, &len, why, sizeof why) : -1;
    free(path);
    if (rc != 0)
        return pt_yaml_fail(c, v, "%s.ca: cannot read %s: %s", what, p,
                            rc == -2   ? "not a regular file"
                            : rc == -3 ? "larger than 4 MiB"
                                       : why);
    BIO *bio = BIO_new_mem_buf(text, (int)len);
    d->ca_store = X509_STORE_new();
    d->ca_certs = sk_X509_new_null();
    X509 *x;
    while (bio && d->ca_store && d->ca_certs && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
        if (X509_STORE_add_cert(d->ca_store, x) != 1 || !sk_X509_push(d->ca_certs, x)) {
            X509_free(x);
            break;
        }
    }
    ERR_clear_error(); /* the end of the PEM text reads as an error */
    BIO_free(bio);
    free(text);
    if (!d->ca_store || !d->ca_certs) return pt_yaml_fail(c, v, "out of memory");
    if (sk_X509_num(d->ca_certs) == 0)
        return pt_yaml_fail(c, v, "%s.ca: no PEM certificate (BEGIN CERTIFICATE) in %s", what, p);
    return 0;
}

/* client_cert.subjects: CN=name, DNS:name, email:address, URI:uri, or a
 * whole subject DN in RFC 2253 form ("CN=acme,O=Acme Corp"). */
static int pt__cert_subject(pt__ctx_t *c, yaml_node_t *v, const char *what,
                            pt__security_subject_t *out)
{
    static const struct {
        const char *prefix;
        int type;
    } kinds[] = {
        {"DNS:", PT__CERT_SAN_DNS}, {"email:", PT__CERT_SAN_EMAIL}, {"URI:", PT__CERT_SAN_URI}};
    const char *s = pt_yaml_value(v);
    const char *bad = "%s: expected CN=name, DNS:name, email:address, URI:uri or a subject DN "
                      "such as \"CN=acme,O=Acme\"";
    if (!s || !*s || v->type != YAML_SCALAR_NODE) return pt_yaml_fail(c, v, bad, what);
    for (const char *q = s; *q; q++)
        if ((unsigned char)*q < 0x20 || *q == 0x7f)
            return pt_yaml_fail(c, v, "%s: no control characters", what);
    out->type = -1;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strncmp(s, kinds[i].prefix, strlen(kinds[i].prefix))) {
            out->type = kinds[i].type;
            s += strlen(kinds[i].prefix);
        }
    if (out->type < 0) {
        const char *eq = strchr(s, '=');
        if (!eq || eq == s) return pt_yaml_fail(c, v, bad, what);
        /* one RDN, CN=: the common name; anything longer: the whole DN */
        out->type =
            !strncmp(s, "CN=", 3) && !strchr(s, ',') && !strchr(s, '+') ? PT__CERT_CN : PT__CERT_DN;
        if (out->type == PT__CERT_CN) s += 3;
    }
    if (!*s) return pt_yaml_fail(c, v, bad, what);
    if (!(out->value = strdup(s))) return pt_yaml_fail(c, v, "out of memory");
    return 0;
}

static int pt__cert(pt__ctx_t *c, pt_security_t *sec, yaml_node_t *n, const char *what,
                    pt_security_def_t *d)
{
    static const char *const keys[] = {
        "name", "realm", "ca", "subjects", "username", "trust_username_header", NULL};
    static const char *const from[] = {[PT__CERT_CN] = "cn",
                                       [PT__CERT_SAN_DNS] = "san_dns",
                                       [PT__CERT_SAN_EMAIL] = "san_email",
                                       [PT__CERT_SAN_URI] = "san_uri"};
    char key[160];
    yaml_node_t *v;
    (void)sec;
    if (pt__check_keys(c, n, what, keys) != 0 || pt__common(c, n, what, d) != 0) return -1;
    d->hide_credentials = 0; /* no header carries it */
    d->line = (int)n->start_mark.line + 1;
    if (!(v = pt_yaml_get(c, n, "ca")))
        return pt_yaml_fail(c, n,
                            "%s.ca: missing (a PEM file of the CAs whose client "
                            "certificates are accepted)",
                            what);
    if (pt__cert_ca(c, v, what, d) != 0) return -1;
    d->username_from = PT__CERT_CN;
    if ((v = pt_yaml_get(c, n, "username"))) {
        const char *s = pt_yaml_value(v);
        d->username_from = -1;
        for (int i = 0; s && i <= PT__CERT_SAN_URI; i++)
            if (!strcmp(s, from[i])) d->username_from = i;
        if (d->username_from < 0)
            return pt_yaml_fail(c, v, "%s.username: expected cn, san_dns, san_email or san_uri",
                                what);
    }
    if ((v = pt_yaml_get(c, n, "subjects"))) {
        if (v->type != YAML_SEQUENCE_NODE || pt_yaml_len(v) == 0)
            return pt_yaml_fail(c, v, "%s.subjects: expected a list of subjects", what);
        if (!(d->subjects = calloc(pt_yaml_len(v), sizeof *d->subjects)))
            return pt_yaml_fail(c, v, "out of memory");
        for (size_t i = 0; i < pt_yaml_len(v); i++) {
            snprintf(key, sizeof key, "%s.subjects[%zu]", what, i);
            if (pt__cert_subject(c, pt_yaml_item(c, v, i), key, &d->subjects[d->n_subjects]) != 0)
                return -1;
            d->n_subjects++;
        }
    }
    return 0;
}

static int pt__uint(pt__ctx_t *c, yaml_node_t *v, const char *what, unsigned long lo,
                    unsigned long hi, uint32_t *out)
{
    const char *s = pt_yaml_value(v);
    char *end = NULL;
    errno = 0;
    unsigned long n = s && *s >= '0' && *s <= '9' ? strtoul(s, &end, 10) : 0;
    if (!end || *end || errno || n < lo || n > hi)
        return pt_yaml_fail(c, v, "%s: a whole number from %lu to %lu", what, lo, hi);
    *out = (uint32_t)n;
    return 0;
}

/* security.hash_checks over the defaults in *g. */
static int pt__hash_checks(pt__ctx_t *c, yaml_node_t *n, pt__security_gate_cfg_t *g)
{
    static const char *const keys[] = {"per_address",          "per_user",       "total",
                                       "failures_per_address", "failure_window", NULL};
    const char *w = "security.hash_checks";
    char key[96];
    yaml_node_t *v;
    if (pt_yaml_check_keys(c, n, w, keys) != 0) return -1;
    snprintf(key, sizeof key, "%s.per_address", w);
    if ((v = pt_yaml_get(c, n, "per_address")) && pt__uint(c, v, key, 1, 1024, &g->per_address))
        return -1;
    snprintf(key, sizeof key, "%s.per_user", w);
    if ((v = pt_yaml_get(c, n, "per_user")) && pt__uint(c, v, key, 1, 1024, &g->per_user))
        return -1;
    snprintf(key, sizeof key, "%s.total", w);
    if ((v = pt_yaml_get(c, n, "total")) &&
        pt__uint(c, v, key, 1, PT_SECURITY_GATE_MAX_TOTAL, &g->total))
        return -1;
    snprintf(key, sizeof key, "%s.failures_per_address", w);
    if ((v = pt_yaml_get(c, n, "failures_per_address")) &&
        pt__uint(c, v, key, 0, 1000000, &g->failures))
        return -1;
    if ((v = pt_yaml_get(c, n, "failure_window"))) {
        uint64_t ms;
        if (!pt_yaml_value(v) || pt_parse_duration_ms(pt_yaml_value(v), &ms) != 0 || ms < 1000 ||
            ms > 86400000ull)
            return pt_yaml_fail(c, v, "%s.failure_window: a duration from 1s to 24h", w);
        g->window_ns = ms * 1000000ull;
    }
    return 0;
}

static int pt__add_trust_header(pt_security_t *sec, const char *name)
{
    for (size_t i = 0; i < sec->n_trust_headers; i++)
        if (!strcmp(sec->trust_headers[i], name)) return 0;
    char **list = realloc(sec->trust_headers, (sec->n_trust_headers + 1) * sizeof *list);
    if (!list) return -1;
    sec->trust_headers = list;
    if (!(list[sec->n_trust_headers] = strdup(name))) return -1;
    sec->n_trust_headers++;
    return 0;
}

/* The WWW-Authenticate lines of d's 401s, made once here so that a refusal
 * on the request path copies a line instead of formatting one. Cut short
 * like the result's extra it is copied into. */
static int pt__challenges(pt_security_def_t *d)
{
    char line[sizeof((pt_security_result_t *)0)->extra];
    for (int presented = 0; presented < 2; presented++) {
        snprintf(line, sizeof line, "WWW-Authenticate: %s realm=\"%s\"%s\r\n", d->kind->scheme,
                 d->realm, d->kind->challenge[presented]);
        if (!(d->challenge[presented] = strdup(line))) return -1;
    }
    return 0;
}

static void pt__def_free(pt_security_def_t *d)
{
    free(d->name);
    free(d->realm);
    free(d->challenge[0]);
    free(d->challenge[1]);
    free(d->trust_header);
    free(d->header);
    for (size_t i = 0; i < d->n_users; i++) {
        free(d->users[i].name);
        free(d->users[i].hash);
    }
    free(d->users);
    for (size_t i = 0; i < d->n_keys; i++)
        free(d->keys[i].username);
    free(d->keys);
    if (d->secret) {
        sodium_memzero(d->secret, d->secret_len);
        free(d->secret);
    }
    EVP_PKEY_free(d->pkey);
    free(d->issuer);
    for (size_t i = 0; i < d->n_audiences; i++)
        free(d->audiences[i]);
    free(d->audiences);
    free(d->username_claim);
    X509_STORE_free(d->ca_store);
    sk_X509_pop_free(d->ca_certs, X509_free);
    for (size_t i = 0; i < d->n_subjects; i++)
        free(d->subjects[i].value);
    free(d->subjects);
}

void pt_security_free(pt_security_t *sec)
{
    if (!sec) return;
    for (size_t i = 0; i < sec->n_defs; i++)
        pt__def_free(&sec->defs[i]);
    free(sec->defs);
    for (size_t i = 0; i < sec->n_trust_headers; i++)
        free(sec->trust_headers[i]);
    free(sec->trust_headers);
    sodium_memzero(sec, sizeof *sec);
    free(sec);
}

/* The kinds of definition: how each is read and checked, and the words its
 * answers differ by (pt_security_def.h). */
const pt__security_kind_t pt__security_kinds[] = {
    {.key = "basic_auth",
     .parse = pt__basic,
     .check = pt__security_check_basic,
     .scheme = "Basic",
     .challenge = {", charset=\"UTF-8\"", ", charset=\"UTF-8\""},
     .missing = "authentication required",
     .twice = "more than one Authorization header"},
    {.key = "api_key",
     .parse = pt__apikey,
     .check = pt__security_check_apikey,
     .scheme = "Key",
     .challenge = {"", ""},
     .missing = "API key required",
     .twice = "more than one API key header",
     .takes_token = 1},
    {.key = "jwt",
     .parse = pt__jwt,
     .check = pt__security_check_jwt,
     .scheme = "Bearer",
     .challenge = {"", ", error=\"invalid_token\""},
     .missing = "bearer token required",
     .twice = "more than one Authorization header",
     .takes_token = 1,
     .prefix = "Bearer",
     .no_prefix = "expected a Bearer token"},
    {.key = "client_cert",
     .parse = pt__cert,
     .check = pt__security_check_cert,
     .scheme = "TLS",
     .challenge = {"", ""},
     .missing = "a client certificate is required",
     .from_tls = 1},
};
const size_t pt__security_n_kinds = sizeof pt__security_kinds / sizeof pt__security_kinds[0];

int pt_security_parse(yaml_document_t *doc, yaml_node_t *node, const char *file, const char *dir,
                      pt_security_t **out, char *err, size_t errlen)
{
    const char *keys[sizeof pt__security_kinds / sizeof pt__security_kinds[0] + 2];
    pt__ctx_t c = {.doc = doc, .file = file, .dir = dir, .err = err, .errlen = errlen};
    pt_security_t *sec = calloc(1, sizeof *sec);
    int rc = -1;

    if (!sec || sodium_init() < 0) {
        pt_yaml_fail(&c, node, "cannot start libsodium");
        goto done;
    }
    static atomic_uint_fast64_t ids;
    sec->id = atomic_fetch_add(&ids, 1) + 1;
    randombytes_buf(sec->cache_key, sizeof sec->cache_key);
    randombytes_buf(sec->env_key, sizeof sec->env_key);
    /* the whole queue drains in about 16 check times, with the pool busy */
    uint32_t total = (uint32_t)pt__security_pool_size() * 16;
    sec->gate = (pt__security_gate_cfg_t){
        .per_address = 4,
        .per_user = 4,
        .total = total < PT_SECURITY_GATE_MAX_TOTAL ? total : PT_SECURITY_GATE_MAX_TOTAL,
        .failures = 20,
        .window_ns = 60ull * 1000000000ull};
    if (pt__add_trust_header(sec, PT_SECURITY_USERNAME_HEADER) != 0) {
        pt_yaml_fail(&c, node, "out of memory");
        goto done;
    }
    for (size_t k = 0; k < pt__security_n_kinds; k++)
        keys[k] = pt__security_kinds[k].key;
    keys[pt__security_n_kinds] = "hash_checks";
    keys[pt__security_n_kinds + 1] = NULL;
    if (node && !(node->type == YAML_SCALAR_NODE && !pt_yaml_value(node))) {
        if (pt__check_keys(&c, node, "security", keys) != 0) goto done;
        yaml_node_t *hc = pt_yaml_get(&c, node, "hash_checks");
        if (hc && pt__hash_checks(&c, hc, &sec->gate) != 0) goto done;
        size_t total = 0;
        for (size_t k = 0; k < pt__security_n_kinds; k++) {
            yaml_node_t *list = pt_yaml_get(&c, node, pt__security_kinds[k].key);
            if (!list || (list->type == YAML_SCALAR_NODE && !pt_yaml_value(list))) continue;
            if (list->type != YAML_SEQUENCE_NODE) {
                pt_yaml_fail(&c, list, "security.%s: expected a list", pt__security_kinds[k].key);
                goto done;
            }
            total += pt_yaml_len(list);
        }
        if (!(sec->defs = calloc(total ? total : 1, sizeof *sec->defs))) {
            pt_yaml_fail(&c, node, "out of memory");
            goto done;
        }
        for (size_t k = 0; k < pt__security_n_kinds; k++) {
            const pt__security_kind_t *kind = &pt__security_kinds[k];
            yaml_node_t *list = pt_yaml_get(&c, node, kind->key);
            if (!list || list->type != YAML_SEQUENCE_NODE) continue;
            for (size_t i = 0; i < pt_yaml_len(list); i++) {
                yaml_node_t *item = pt_yaml_item(&c, list, i);
                pt_security_def_t *d = &sec->defs[sec->n_defs];
                char what[64];
                snprintf(what, sizeof what, "security.%s[%zu]", kind->key, i);
                d->index = (uint32_t)sec->n_defs++;
                d->kind = kind;
                if (kind->parse(&c, sec, item, what, d) != 0) goto done;
                if (pt__challenges(d) != 0) {
                    pt_yaml_fail(&c, item, "out of memory");
                    goto done;
                }
                for (size_t j = 0; j < d->index; j++)
                    if (!strcmp(sec->defs[j].name, d->name)) {
                        pt_yaml_fail(&c, item, "security definition name '%s' is used twice",
                                     d->name);
                        goto done;
                    }
                if (d->trust_header && pt__add_trust_header(sec, d->trust_header) != 0) {
                    pt_yaml_fail(&c, item, "out of memory");
                    goto done;
                }
            }
        }
        /* A header that names the end user can never also carry a credential. */
        for (size_t i = 0; i < sec->n_defs; i++)
            for (size_t j = 0; j < sec->n_trust_headers; j++)
                if (sec->defs[i].header && !strcmp(sec->defs[i].header, sec->trust_headers[j])) {
                    pt_yaml_fail(&c, node,
                                 "security: '%s' is both a credential header and a "
                                 "trusted username header",
                                 sec->trust_headers[j]);
                    goto done;
                }
    }
    rc = 0;
done:
    if (rc != 0) {
        pt_security_free(sec);
        return -1;
    }
    *out = sec;
    return 0;
}

const pt_security_def_t *pt_security_find(const pt_security_t *sec, const char *name)
{
    for (size_t i = 0; sec && i < sec->n_defs; i++)
        if (!strcmp(sec->defs[i].name, name)) return &sec->defs[i];
    return NULL;
}

int pt_security_each_client_ca(const pt_security_t *sec,
                               int (*fn)(void *ud, const char *name, int line,
                                         STACK_OF(X509) * cas),
                               void *ud)
{
    for (size_t i = 0; sec && i < sec->n_defs; i++) {
        const pt_security_def_t *d = &sec->defs[i];
        int rc = d->ca_certs ? fn(ud, d->name, d->line, d->ca_certs) : 0;
        if (rc != 0) return rc;
    }
    return 0;
}

const char *pt_security_def_name(const pt_security_def_t *def)
{
    return def->name;
}

const char *pt_security_def_kind(const pt_security_def_t *def)
{
    return def->kind->key;
}
