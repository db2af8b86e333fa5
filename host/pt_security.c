#include "pt_security.h"
#include "pt_metrics.h"
#include "pt_yaml.h"
#include "pt_util.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <sodium.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

typedef enum { PT__BASIC = 0, PT__APIKEY, PT__JWT } pt__kind_t;
typedef enum { PT__HS256 = 0, PT__RS256 } pt__alg_t;

#define PT__DIGEST 32                                      /* BLAKE2b-256 */
#define PT__CACHE_DIGEST crypto_shorthash_siphashx24_BYTES /* 128-bit keyed SipHash */
_Static_assert(crypto_generichash_KEYBYTES >= crypto_shorthash_siphashx24_KEYBYTES,
               "the cache key serves SipHash too");
#define PT__MAX_CREDENTIAL 1024 /* decoded "user:password" */
#define PT__MAX_TOKEN 8192      /* a JWT, in bytes */
#define PT__MAX_MEMLIMIT (256u << 20)
#define PT__CACHE_SLOTS 4096 /* a power of two */
#define PT__NEGATIVE_TTL_NS (30ull * 1000000000ull)
#define PT__GATE_SLOTS 8192     /* a power of two */
#define PT__GATE_PROBE 8        /* slots an entry may sit in */
#define PT__GATE_MAX_TOTAL 1024 /* keeps entries with checks under way below 1/4 of the slots */

typedef struct {
    char *name;
    char *hash;                           /* argon2id string, or NULL: from the environment */
    unsigned char env_digest[PT__DIGEST]; /* keyed BLAKE2b of the password from the environment */
} pt__user_t;

typedef struct {
    char *username;
    unsigned char digest[PT__DIGEST]; /* BLAKE2b of the key */
} pt__key_t;

struct pt_security_def_s {
    char *name;
    pt__kind_t kind;
    uint32_t index;
    char *realm;
    char *trust_header; /* lower-case, or NULL */
    int hide_credentials;
    char *header;          /* lower-case: where the credential comes from */
    uint64_t cache_ttl_ns; /* basic_auth */
    pt__user_t *users;     /* basic_auth */
    size_t n_users;
    const char *dummy_hash; /* basic_auth: verified against for an unknown user */
    pt__key_t *keys;        /* api_key */
    size_t n_keys;
    pt__alg_t alg;         /* jwt */
    unsigned char *secret; /* HS256 */
    size_t secret_len;
    EVP_PKEY *pkey; /* RS256 */
    char *issuer;
    char **audiences;
    size_t n_audiences;
    char *username_claim;
    int64_t leeway_s;
    int require_exp;
};

/* security.hash_checks: the bounds on uncached password checks. */
typedef struct {
    uint32_t per_address; /* queued or running, for one client address */
    uint32_t per_user;    /* ... for one user name of one definition */
    uint32_t total;       /* ... in the process */
    uint32_t failures;    /* failed checks an address may have pending; 0: no limit */
    uint64_t window_ns;   /* in which `failures` are forgiven */
} pt__gate_cfg_t;

/* What an admitted check holds of the gate until it ends. */
typedef struct {
    int held;
    int addr, user; /* their entries; -1: not counted (addr: the address is not known) */
    int cred;       /* the entry of the credential presented */
    int clean;      /* the address had no failure pending */
    double rate;    /* failures forgiven a second, as configured when admitted */
} pt__ticket_t;

struct pt_security_s {
    pt__gate_cfg_t gate;
    pt_security_def_t *defs;
    size_t n_defs;
    char **trust_headers; /* lower-case; PT_SECURITY_USERNAME_HEADER first */
    size_t n_trust_headers;
    unsigned char cache_key[crypto_generichash_KEYBYTES]; /* per compiled set: a reload
                                                            invalidates every cache entry */
    unsigned char env_key[crypto_generichash_KEYBYTES];
};

struct pt_security_verify_s {
    uv_work_t work;
    char hash[crypto_pwhash_STRBYTES];
    char *password;
    size_t password_len;
    int force_fail; /* unknown user: spend the same time, then refuse */
    int ok;
    unsigned char digest[PT__CACHE_DIGEST];
    uint32_t user; /* its index in the definition's users */
    uint64_t ttl_ns;
    pt_security_verify_cb cb;
    void *ud;
    struct pt__waiter_s *waiters; /* requests that presented the same credential meanwhile */
    struct pt_security_verify_s *next_running;
    uv_loop_t *loop;
    pt__ticket_t ticket;                      /* none for a job that joins one under way */
    struct pt_security_verify_s *next_queued; /* kept back from the pool (pt__queue) */
};

typedef struct pt__waiter_s {
    pt_security_verify_cb cb;
    void *ud;
    struct pt__waiter_s *next;
} pt__waiter_t;

/* argon2id runs this thread has under way (queued or running): a credential
 * presented again while its check runs waits for that check instead of
 * starting another (many connections with one new credential cost one KDF
 * run, not one each). */
static __thread struct pt_security_verify_s *pt__running;

/* libuv's thread pool, which every worker shares: its size, as libuv reads
 * it when the pool starts (set when a config is compiled). */
static unsigned pt__pool_threads = 4;

/* ------------------------------------------------------------------ config */

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

/* A name fit for a header value and a log line: 1..255 bytes, no control
 * characters. Basic-auth user names also may not hold ':' (RFC 7617). */
static int pt__valid_username(const char *s, size_t n, int basic)
{
    if (n == 0 || n > PT_SECURITY_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f || (basic && ch == ':')) return 0;
    }
    return 1;
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
    d->kind = PT__BASIC;
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
        pt__user_t *user = &d->users[d->n_users++];
        char uwhat[160];
        snprintf(uwhat, sizeof uwhat, "%s.users[%zu]", what, i);
        if (pt__check_keys(c, u, uwhat, user_keys) != 0) return -1;
        snprintf(key, sizeof key, "%s.username", uwhat);
        if (pt_yaml_string(c, pt_yaml_get(c, u, "username"), key, &user->name) != 0) return -1;
        if (!pt__valid_username(user->name, strlen(user->name), 1))
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
            crypto_generichash(user->env_digest, PT__DIGEST, (const unsigned char *)pw, strlen(pw),
                               sec->env_key, sizeof sec->env_key);
        }
    }
    return 0;
}

static int pt__apikey(pt__ctx_t *c, yaml_node_t *n, const char *what, pt_security_def_t *d)
{
    static const char *const keys[] = {
        "name", "realm", "header", "keys", "trust_username_header", "hide_credentials", NULL};
    static const char *const key_keys[] = {"username", "key_hash", "key_env", NULL};
    char key[256];
    yaml_node_t *v;
    if (pt__check_keys(c, n, what, keys) != 0 || pt__common(c, n, what, d) != 0) return -1;
    d->kind = PT__APIKEY;
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
        pt__key_t *ak = &d->keys[d->n_keys++];
        char kwhat[160];
        snprintf(kwhat, sizeof kwhat, "%s.keys[%zu]", what, i);
        if (pt__check_keys(c, k, kwhat, key_keys) != 0) return -1;
        snprintf(key, sizeof key, "%s.username", kwhat);
        if (pt_yaml_string(c, pt_yaml_get(c, k, "username"), key, &ak->username) != 0) return -1;
        if (!pt__valid_username(ak->username, strlen(ak->username), 0))
            return pt_yaml_fail(c, pt_yaml_get(c, k, "username"),
                                "%s: 1 to 255 characters, no control characters", key);
        yaml_node_t *h = pt_yaml_get(c, k, "key_hash"), *e = pt_yaml_get(c, k, "key_env");
        if (!h == !e) return pt_yaml_fail(c, k, "%s: give either key_hash or key_env", kwhat);
        if (h) {
            const char *s = pt_yaml_value(h);
            if (!s || strncmp(s, "blake2b:", 8) != 0 || pt__hex(s + 8, ak->digest, PT__DIGEST))
                return pt_yaml_fail(c, h,
                                    "%s.key_hash: expected blake2b:<64 hex digits> (make one with "
                                    "`portico hash-password --api-key`)",
                                    kwhat);
        } else {
            snprintf(key, sizeof key, "%s.key_env", kwhat);
            const char *kv = pt__env(c, e, key);
            if (!kv) return -1;
            crypto_generichash(ak->digest, PT__DIGEST, (const unsigned char *)kv, strlen(kv), NULL,
                               0);
        }
        for (size_t j = 0; j + 1 < d->n_keys; j++)
            if (!sodium_memcmp(d->keys[j].digest, ak->digest, PT__DIGEST))
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

static int pt__jwt(pt__ctx_t *c, yaml_node_t *n, const char *what, pt_security_def_t *d)
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
    char key[160], why[128] = "out of memory";
    yaml_node_t *v;
    if (pt__check_keys(c, n, what, keys) != 0 || pt__common(c, n, what, d) != 0) return -1;
    d->kind = PT__JWT;
    if (!(d->header = strdup("authorization"))) return pt_yaml_fail(c, n, "out of memory");
    v = pt_yaml_get(c, n, "algorithm");
    const char *alg = pt_yaml_value(v);
    if (alg && !strcmp(alg, "HS256"))
        d->alg = PT__HS256;
    else if (alg && !strcmp(alg, "RS256"))
        d->alg = PT__RS256;
    else
        return pt_yaml_fail(c, v ? v : n, "%s.algorithm: expected HS256 or RS256", what);

    yaml_node_t *se = pt_yaml_get(c, n, "secret_env"), *sf = pt_yaml_get(c, n, "secret_file");
    yaml_node_t *pk = pt_yaml_get(c, n, "public_key");
    if (d->alg == PT__HS256) {
        if (pk || !se == !sf)
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
            return pt_yaml_fail(c, se ? se : sf, "%s: an HS256 secret needs at least 32 bytes",
                                what);
    } else {
        if (se || sf || !pk)
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
    }
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
static int pt__hash_checks(pt__ctx_t *c, yaml_node_t *n, pt__gate_cfg_t *g)
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
    if ((v = pt_yaml_get(c, n, "total")) && pt__uint(c, v, key, 1, PT__GATE_MAX_TOTAL, &g->total))
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

static void pt__def_free(pt_security_def_t *d)
{
    free(d->name);
    free(d->realm);
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

int pt_security_parse(yaml_document_t *doc, yaml_node_t *node, const char *file, const char *dir,
                      pt_security_t **out, char *err, size_t errlen)
{
    static const char *const keys[] = {"basic_auth", "api_key", "jwt", "hash_checks", NULL};
    static const char *const kinds[] = {"basic_auth", "api_key", "jwt"};
    pt__ctx_t c = {.doc = doc, .file = file, .dir = dir, .err = err, .errlen = errlen};
    pt_security_t *sec = calloc(1, sizeof *sec);
    int rc = -1;

    if (!sec || sodium_init() < 0) {
        pt_yaml_fail(&c, node, "cannot start libsodium");
        goto done;
    }
    randombytes_buf(sec->cache_key, sizeof sec->cache_key);
    randombytes_buf(sec->env_key, sizeof sec->env_key);
    /* libuv: UV_THREADPOOL_SIZE, 0 counts as 1, at most 1024, default 4 */
    const char *pool = getenv("UV_THREADPOOL_SIZE");
    long threads = pool ? strtol(pool, NULL, 10) : 4;
    threads = threads < 1 ? 1 : threads > 1024 ? 1024 : threads;
    __atomic_store_n(&pt__pool_threads, (unsigned)threads, __ATOMIC_RELAXED);
    /* the whole queue drains in about 16 check times, with the pool busy */
    uint32_t total = (uint32_t)threads * 16;
    sec->gate = (pt__gate_cfg_t){.per_address = 4,
                                 .per_user = 4,
                                 .total = total < PT__GATE_MAX_TOTAL ? total : PT__GATE_MAX_TOTAL,
                                 .failures = 20,
                                 .window_ns = 60ull * 1000000000ull};
    if (pt__add_trust_header(sec, PT_SECURITY_USERNAME_HEADER) != 0) {
        pt_yaml_fail(&c, node, "out of memory");
        goto done;
    }
    if (node && !(node->type == YAML_SCALAR_NODE && !pt_yaml_value(node))) {
        if (pt__check_keys(&c, node, "security", keys) != 0) goto done;
        yaml_node_t *hc = pt_yaml_get(&c, node, "hash_checks");
        if (hc && pt__hash_checks(&c, hc, &sec->gate) != 0) goto done;
        size_t total = 0;
        for (int k = 0; k < 3; k++) {
            yaml_node_t *list = pt_yaml_get(&c, node, kinds[k]);
            if (!list || (list->type == YAML_SCALAR_NODE && !pt_yaml_value(list))) continue;
            if (list->type != YAML_SEQUENCE_NODE) {
                pt_yaml_fail(&c, list, "security.%s: expected a list", kinds[k]);
                goto done;
            }
            total += pt_yaml_len(list);
        }
        if (!(sec->defs = calloc(total ? total : 1, sizeof *sec->defs))) {
            pt_yaml_fail(&c, node, "out of memory");
            goto done;
        }
        for (int k = 0; k < 3; k++) {
            yaml_node_t *list = pt_yaml_get(&c, node, kinds[k]);
            if (!list || list->type != YAML_SEQUENCE_NODE) continue;
            for (size_t i = 0; i < pt_yaml_len(list); i++) {
                yaml_node_t *item = pt_yaml_item(&c, list, i);
                pt_security_def_t *d = &sec->defs[sec->n_defs];
                char what[64];
                snprintf(what, sizeof what, "security.%s[%zu]", kinds[k], i);
                d->index = (uint32_t)sec->n_defs++;
                int r = k == 0   ? pt__basic(&c, sec, item, what, d)
                        : k == 1 ? pt__apikey(&c, item, what, d)
                                 : pt__jwt(&c, item, what, d);
                if (r != 0) goto done;
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
                if (!strcmp(sec->defs[i].header, sec->trust_headers[j])) {
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

const char *pt_security_def_name(const pt_security_def_t *def)
{
    return def->name;
}

/* ------------------------------------------------------- per-thread cache */

/* Keyed by a SipHash of what was presented (the definition's index and the
 * Authorization value as it came), under a key of the compiled set: a hit
 * costs no base64 decoding and no BLAKE2b, and says which user it was. */
typedef struct {
    unsigned char digest[PT__CACHE_DIGEST];
    uint64_t expires_ns; /* 0: empty */
    int ok;
    uint32_t user; /* ok: the index of the user in the definition */
} pt__cache_entry_t;

static pthread_once_t pt__cache_once = PTHREAD_ONCE_INIT;
static pthread_key_t pt__cache_tls;

static void pt__cache_init(void)
{
    pthread_key_create(&pt__cache_tls, free);
}

static pt__cache_entry_t *pt__cache(void)
{
    pthread_once(&pt__cache_once, pt__cache_init);
    pt__cache_entry_t *t = pthread_getspecific(pt__cache_tls);
    if (!t && (t = calloc(PT__CACHE_SLOTS, sizeof *t))) pthread_setspecific(pt__cache_tls, t);
    return t;
}

static pt__cache_entry_t *pt__cache_slot(pt__cache_entry_t *t, const unsigned char *digest)
{
    uint32_t h;
    memcpy(&h, digest, sizeof h);
    return &t[h & (PT__CACHE_SLOTS - 1)];
}

/* Returns 1 (verified: the user's index in *user), 0 (refused) or -1 (not
 * known). */
static int pt__cache_get(const unsigned char *digest, uint32_t *user)
{
    pt__cache_entry_t *t = pt__cache();
    if (!t) return -1;
    pt__cache_entry_t *e = pt__cache_slot(t, digest);
    if (!e->expires_ns || e->expires_ns < uv_hrtime() ||
        sodium_memcmp(e->digest, digest, PT__CACHE_DIGEST) != 0)
        return -1;
    *user = e->user;
    return e->ok;
}

static void pt__cache_put(const unsigned char *digest, int ok, uint32_t user, uint64_t ttl_ns)
{
    pt__cache_entry_t *t = pt__cache();
    if (!t) return;
    pt__cache_entry_t *e = pt__cache_slot(t, digest);
    memcpy(e->digest, digest, PT__CACHE_DIGEST);
    e->ok = ok;
    e->user = user;
    e->expires_ns =
        uv_hrtime() + (ok || ttl_ns < PT__NEGATIVE_TTL_NS ? ttl_ns : PT__NEGATIVE_TTL_NS);
}

/* ------------------------------------------------- bounds on slow checks */

/* The gate: what each client address and each user name has under way, and
 * the failures each address has pending, shared by every worker thread (the
 * thread pool they bound is the process's). One mutex: it is taken twice
 * per argon2id run, which costs tens of milliseconds, so it is never hot.
 * It outlives a reload, which the checks in flight do too. Entries are
 * named by a keyed BLAKE2b of the address or user name, so a caller cannot
 * choose names that pile into one probe window. */
typedef struct {
    unsigned char id[16];
    int used;
    uint32_t inflight;     /* admitted checks not done */
    double fails;          /* failed checks not forgiven yet (addresses) */
    uint64_t fails_ns;     /* when fails was brought up to date */
    uint64_t last_fail_ns; /* the last failed check (addresses); 0: none */
} pt__gate_entry_t;

static struct {
    pthread_mutex_t lock;
    pthread_once_t once;
    unsigned char key[crypto_generichash_KEYBYTES];
    uint32_t inflight;
    pt__gate_entry_t slots[PT__GATE_SLOTS];
} pt__gate = {.lock = PTHREAD_MUTEX_INITIALIZER, .once = PTHREAD_ONCE_INIT};

static void pt__gate_init(void)
{
    randombytes_buf(pt__gate.key, sizeof pt__gate.key);
}

static void pt__gate_id(unsigned char id[16], char kind, const void *a, size_t a_len, const void *b,
                        size_t b_len)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, pt__gate.key, sizeof pt__gate.key, 16);
    crypto_generichash_update(&st, (const unsigned char *)&kind, 1);
    crypto_generichash_update(&st, a, a_len);
    crypto_generichash_update(&st, (const unsigned char *)"", 1); /* a/b boundary */
    crypto_generichash_update(&st, b, b_len);
    crypto_generichash_final(&st, id, 16);
}

/* e's failures as of now: they are forgiven at rate a second. */
static double pt__gate_fails(pt__gate_entry_t *e, double rate, uint64_t now)
{
    if (e->fails > 0 && now > e->fails_ns) {
        e->fails -= (double)(now - e->fails_ns) / 1e9 * rate;
        if (e->fails < 0) e->fails = 0;
    }
    e->fails_ns = now;
    return e->fails;
}

/* The entry called id: found in its probe window, or made there in place of
 * an empty slot or else of the idle one with least to remember (fewest
 * failures pending, then no failure in the window). -1: every slot there
 * has checks under way. Under the lock. */
static int pt__gate_entry(const unsigned char id[16], double rate, uint64_t window_ns, uint64_t now)
{
    uint32_t h;
    memcpy(&h, id, sizeof h);
    int best = -1;
    double best_fails = 0;
    for (uint32_t i = 0; i < PT__GATE_PROBE; i++) {
        int k = (int)((h + i) & (PT__GATE_SLOTS - 1));
        pt__gate_entry_t *e = &pt__gate.slots[k];
        if (e->used && !memcmp(e->id, id, sizeof e->id)) return k;
        if (e->used && e->inflight) continue;
        double f = !e->used ? -1
                            : pt__gate_fails(e, rate, now) +
                                  (e->last_fail_ns && now - e->last_fail_ns < window_ns ? 0.5 : 0);
        if (best < 0 || f < best_fails) {
            best = k;
            best_fails = f;
        }
    }
    if (best >= 0) {
        pt__gate_entry_t *e = &pt__gate.slots[best];
        memset(e, 0, sizeof *e);
        memcpy(e->id, id, sizeof e->id);
        e->used = 1;
        e->fails_ns = now;
    }
    return best;
}

/* The client's address as the gate names it: IPv4 as is (also when mapped
 * into IPv6), IPv6 by its /64, the prefix one host is given, so an attacker
 * gains nothing by moving through the addresses of its own network. Returns
 * the key's length, 0 when the address is not known. */
static size_t pt__peer_key(const pt_security_request_t *req, unsigned char out[9])
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (req->peer && req->peer[0]) {
        if (inet_pton(AF_INET, req->peer, &((struct sockaddr_in *)&ss)->sin_addr) == 1)
            ss.ss_family = AF_INET;
        else if (inet_pton(AF_INET6, req->peer, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
            ss.ss_family = AF_INET6;
    } else if (req->tcp) {
        int len = sizeof ss;
        if (uv_tcp_getpeername(req->tcp, (struct sockaddr *)&ss, &len) != 0)
            ss.ss_family = AF_UNSPEC;
    }
    if (ss.ss_family == AF_INET) {
        out[0] = 4;
        memcpy(out + 1, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        return 5;
    }
    if (ss.ss_family == AF_INET6) {
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        const unsigned char *a = ((struct sockaddr_in6 *)&ss)->sin6_addr.s6_addr;
        if (!memcmp(a, mapped, sizeof mapped)) {
            out[0] = 4;
            memcpy(out + 1, a + 12, 4);
            return 5;
        }
        out[0] = 6;
        memcpy(out + 1, a, 8);
        return 9;
    }
    return 0;
}

/* Admits one uncached check of user (of the definition called def) from
 * the address key addr (addr_len 0: not known), of the credential whose
 * cache digest is digest, into *t. Returns -1 when admitted, else the
 * PT_METRICS_AUTH_ reason it is refused for, with the seconds to wait in
 * *retry. Any thread. */
static int pt__gate_enter(const pt__gate_cfg_t *g, const unsigned char *addr, size_t addr_len,
                          const char *def, const char *user, size_t user_len,
                          const unsigned char digest[PT__CACHE_DIGEST], pt__ticket_t *t,
                          uint32_t *retry)
{
    unsigned char aid[16], uid[16], cid[16];
    uint64_t now = uv_hrtime();
    /* without a limit, fails only rank entries to forget: one forgiven a window */
    double rate = (double)(g->failures ? g->failures : 1) / ((double)g->window_ns / 1e9);
    int why = -1;

    pthread_once(&pt__gate.once, pt__gate_init);
    pt__gate_id(aid, 'a', addr, addr_len, "", 0);
    pt__gate_id(uid, 'u', def, strlen(def), user, user_len);
    pt__gate_id(cid, 'c', digest, PT__CACHE_DIGEST, "", 0);
    *retry = 1;
    pthread_mutex_lock(&pt__gate.lock);
    int a = addr_len ? pt__gate_entry(aid, rate, g->window_ns, now) : -1;
    int u = pt__gate_entry(uid, rate, g->window_ns, now);
    int k = pt__gate_entry(cid, rate, g->window_ns, now);
    /* (a later entry may have been made in the place of an earlier one) */
    pt__gate_entry_t *ae =
        a >= 0 && !memcmp(pt__gate.slots[a].id, aid, 16) ? &pt__gate.slots[a] : NULL;
    pt__gate_entry_t *ue =
        u >= 0 && !memcmp(pt__gate.slots[u].id, uid, 16) ? &pt__gate.slots[u] : NULL;
    pt__gate_entry_t *ke = k >= 0 ? &pt__gate.slots[k] : NULL;
    /* Clean: no check failed in the window and none under way, so an
     * attacker's address is clean for one check at most, and an unknown
     * address never (it could be anyone's). */
    double fails = ae ? pt__gate_fails(ae, rate, now) : 1;
    int clean =
        ae && !ae->inflight && (!ae->last_fail_ns || now - ae->last_fail_ns >= g->window_ns);
    if ((addr_len && !ae) || !ue || !ke) {
        why = PT_METRICS_AUTH_TOTAL; /* no room to count them: as good as full */
    } else if (ae && g->failures && fails > (double)g->failures - 1) {
        why = PT_METRICS_AUTH_FAILURES;
        double wait = ceil((fails - ((double)g->failures - 1)) / rate);
        *retry = wait < 1 ? 1 : wait > 86400 ? 86400 : (uint32_t)wait;
    } else if (ke->inflight) {
        /* The same credential is being checked on another worker (each
         * worker runs one check per credential and the rest wait for it):
         * one client fanning a new credential out over many connections
         * is not refused for it. The same guess again is no new
         * information, so only the total bounds it, and only the first
         * check's failure counts. */
        if (pt__gate.inflight >= g->total) {
            why = PT_METRICS_AUTH_TOTAL;
        } else {
            ke->inflight++;
            pt__gate.inflight++;
            *t = (pt__ticket_t){
                .held = 1, .addr = -1, .user = -1, .cred = k, .clean = clean, .rate = rate};
        }
    } else if (ae && ae->inflight >= g->per_address) {
        why = PT_METRICS_AUTH_ADDRESS;
    } else if (!clean && ue->inflight >= g->per_user) {
        /* a clean address is not held back by what others do with the
         * name: a flood of wrong passwords for a user does not lock it out */
        why = PT_METRICS_AUTH_USER;
    } else if (pt__gate.inflight >= (clean ? g->total : g->total - g->total / 4)) {
        why = PT_METRICS_AUTH_TOTAL; /* a quarter is kept for clean addresses */
    } else {
        if (ae) ae->inflight++;
        ue->inflight++;
        ke->inflight++;
        pt__gate.inflight++;
        *t = (pt__ticket_t){
            .held = 1, .addr = a, .user = u, .cred = k, .clean = clean, .rate = rate};
    }
    pthread_mutex_unlock(&pt__gate.lock);
    return why;
}

/* Gives back what t holds; a failed check is one more failure of its
 * address. */
static void pt__gate_leave(pt__ticket_t *t, int failed)
{
    if (!t->held) return;
    t->held = 0;
    uint64_t now = uv_hrtime();
    pthread_mutex_lock(&pt__gate.lock);
    if (t->addr >= 0) {
        pt__gate_entry_t *e = &pt__gate.slots[t->addr];
        e->inflight--;
        if (failed) {
            e->fails = pt__gate_fails(e, t->rate, now) + 1;
            e->last_fail_ns = now;
        }
    }
    if (t->user >= 0) pt__gate.slots[t->user].inflight--;
    pt__gate.slots[t->cred].inflight--;
    pt__gate.inflight--;
    pthread_mutex_unlock(&pt__gate.lock);
}

/* ------------------------------------------------------------- the checks */

static int pt__refuse(pt_security_result_t *res, int status, const char *message)
{
    res->status = status;
    res->message = message;
    return PT_SECURITY_REFUSE;
}

static int pt__unauthorized(const pt_security_def_t *d, pt_security_result_t *res,
                            const char *message, int presented)
{
    if (d->kind == PT__BASIC)
        snprintf(res->extra, sizeof res->extra,
                 "WWW-Authenticate: Basic realm=\"%s\", charset=\"UTF-8\"\r\n", d->realm);
    else if (d->kind == PT__JWT)
        snprintf(res->extra, sizeof res->extra, "WWW-Authenticate: Bearer realm=\"%s\"%s\r\n",
                 d->realm, presented ? ", error=\"invalid_token\"" : "");
    else
        snprintf(res->extra, sizeof res->extra, "WWW-Authenticate: Key realm=\"%s\"\r\n", d->realm);
    return pt__refuse(res, 401, message);
}

static void pt__set_name(char *out, const char *s, size_t n)
{
    memcpy(out, s, n);
    out[n] = '\0';
}

/* "<scheme> <rest>": 1 when value starts with scheme (any case) and spaces. */
static int pt__scheme(const char *v, size_t n, const char *scheme, const char **rest,
                      size_t *rest_len)
{
    size_t s = strlen(scheme);
    if (n <= s || strncasecmp(v, scheme, s) != 0 || v[s] != ' ') return 0;
    size_t i = s;
    while (i < n && v[i] == ' ')
        i++;
    *rest = v + i;
    *rest_len = n - i;
    return 1;
}

static int pt__check_basic(const pt_security_t *sec, const pt_security_def_t *d,
                           const pt_security_request_t *req, const char *v, size_t n,
                           pt_security_result_t *res)
{
    unsigned char cred[4 + PT__MAX_CREDENTIAL + 1];
    size_t len = 0;
    const char *b64;
    size_t b64_len;
    int rc;

    if (!pt__scheme(v, n, "Basic", &b64, &b64_len))
        return pt__unauthorized(d, res, "expected Basic credentials", 1);
    if (b64_len == 0 || b64_len > (PT__MAX_CREDENTIAL / 3 + 1) * 4)
        return pt__unauthorized(d, res, "malformed Basic credentials: not base64", 1);
    /* The definition's index goes first, so a digest is only ever found again
     * by the same definition of the same compiled config (whose key it is). */
    unsigned char presented[4 + (PT__MAX_CREDENTIAL / 3 + 1) * 4];
    unsigned char digest[PT__CACHE_DIGEST];
    uint32_t ui = 0;
    memcpy(presented, &d->index, 4);
    memcpy(presented + 4, b64, b64_len);
    crypto_shorthash_siphashx24(digest, presented, 4 + b64_len, sec->cache_key);
    sodium_memzero(presented, 4 + b64_len);
    int known = pt__cache_get(digest, &ui);
    if (known == 0) return pt__unauthorized(d, res, "wrong username or password", 1);
    if (known == 1 && ui < d->n_users) {
        pt_strcpy_cap(res->username, d->users[ui].name, sizeof res->username);
        return 0;
    }
    memcpy(cred, &d->index, 4);
    if (sodium_base642bin(cred + 4, PT__MAX_CREDENTIAL, b64, b64_len, NULL, &len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0) {
        rc = pt__unauthorized(d, res, "malformed Basic credentials: not base64", 1);
        goto done;
    }
    const unsigned char *c = cred + 4;
    for (size_t i = 0; i < len; i++)
        if (c[i] < 0x20 || c[i] == 0x7f) {
            rc = pt__unauthorized(d, res, "malformed Basic credentials: control characters", 1);
            goto done;
        }
    const unsigned char *colon = memchr(c, ':', len);
    if (!colon) {
        rc = pt__unauthorized(d, res, "malformed Basic credentials: no ':' after the username", 1);
        goto done;
    }
    size_t user_len = (size_t)(colon - c);
    if (user_len == 0 || user_len > PT_SECURITY_NAME_MAX) {
        rc = pt__unauthorized(d, res,
                              user_len ? "malformed Basic credentials: username too long"
                                       : "malformed Basic credentials: empty username",
                              1);
        goto done;
    }
    const char *pw = (const char *)colon + 1;
    size_t pw_len = len - user_len - 1;
    const pt__user_t *user = NULL;
    for (size_t i = 0; i < d->n_users; i++)
        if (strlen(d->users[i].name) == user_len && !memcmp(d->users[i].name, c, user_len))
            user = &d->users[i];
    if (user && !user->hash) {
        unsigned char pd[PT__DIGEST];
        crypto_generichash(pd, sizeof pd, (const unsigned char *)pw, pw_len, sec->env_key,
                           sizeof sec->env_key);
        if (sodium_memcmp(pd, user->env_digest, PT__DIGEST) != 0) {
            rc = pt__unauthorized(d, res, "wrong username or password", 1);
            goto done;
        }
        pt__set_name(res->username, (const char *)c, user_len);
        rc = 0;
        goto done;
    }
    const char *hash = user ? user->hash : d->dummy_hash;
    if (!hash) { /* unknown user, and no hash to spend the same time on */
        rc = pt__unauthorized(d, res, "wrong username or password", 1);
        goto done;
    }
    /* Bounded before any hashing, known user or not, so the answer (and its
     * time) is the same for a name that does not exist. A credential whose
     * check is under way on this thread waits for it (pt_security_verify)
     * and costs nothing more. */
    pt__ticket_t ticket = {0};
    int joins = 0;
    for (pt_security_verify_t *r = pt__running; r && !joins; r = r->next_running)
        joins = !sodium_memcmp(r->digest, digest, sizeof digest);
    if (!joins) {
        unsigned char addr[9];
        size_t addr_len = pt__peer_key(req, addr);
        uint32_t retry;
        int why = pt__gate_enter(&sec->gate, addr, addr_len, d->name, (const char *)c, user_len,
                                 digest, &ticket, &retry);
        if (why >= 0) {
            pt_metrics_inc(&pt_metrics_auth_throttled[why], 1);
            snprintf(res->extra, sizeof res->extra, "Retry-After: %u\r\n", retry);
            rc = pt__refuse(res, 429, "too many password checks: try again later");
            goto done;
        }
    }
    pt_security_verify_t *job = calloc(1, sizeof *job);
    if (!job || !(job->password = malloc(pw_len + 1))) {
        free(job);
        pt__gate_leave(&ticket, 0);
        rc = pt__refuse(res, 500, "out of memory");
        goto done;
    }
    job->ticket = ticket;
    memcpy(job->password, pw, pw_len);
    job->password[pw_len] = '\0';
    job->password_len = pw_len;
    snprintf(job->hash, sizeof job->hash, "%s", hash);
    job->force_fail = user == NULL;
    memcpy(job->digest, digest, sizeof digest);
    job->user = user ? (uint32_t)(user - d->users) : 0;
    job->ttl_ns = d->cache_ttl_ns;
    res->verify = job;
    rc = PT_SECURITY_VERIFY;
done:
    sodium_memzero(cred, sizeof cred);
    return rc;
}

static int pt__check_apikey(const pt_security_def_t *d, const char *v, size_t n,
                            pt_security_result_t *res)
{
    unsigned char digest[PT__DIGEST];
    const pt__key_t *found = NULL;
    crypto_generichash(digest, sizeof digest, (const unsigned char *)v, n, NULL, 0);
    /* every key is compared, so the time taken says nothing about which one
     * came close */
    for (size_t i = 0; i < d->n_keys; i++)
        if (sodium_memcmp(digest, d->keys[i].digest, PT__DIGEST) == 0) found = &d->keys[i];
    if (!found) return pt__unauthorized(d, res, "unknown API key", 1);
    snprintf(res->username, sizeof res->username, "%s", found->username);
    return 0;
}

/* base64url without padding into a malloc'd, NUL-terminated buffer. */
static unsigned char *pt__b64url(const char *s, size_t n, size_t *out_len)
{
    unsigned char *buf = malloc(n + 1);
    if (!buf) return NULL;
    if (sodium_base642bin(buf, n, s, n, NULL, out_len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0) {
        free(buf);
        return NULL;
    }
    buf[*out_len] = '\0';
    return buf;
}

static int pt__jwt_signature_ok(const pt_security_def_t *d, const char *input, size_t input_len,
                                const unsigned char *sig, size_t sig_len)
{
    if (d->alg == PT__HS256) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mac_len = 0;
        if (!HMAC(EVP_sha256(), d->secret, (int)d->secret_len, (const unsigned char *)input,
                  input_len, mac, &mac_len))
            return 0;
        return sig_len == mac_len && sodium_memcmp(mac, sig, mac_len) == 0;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, d->pkey) == 1 &&
             EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)input, input_len) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

static int pt__aud_ok(const pt_security_def_t *d, json_t *aud)
{
    size_t n = json_is_array(aud) ? json_array_size(aud) : 1;
    for (size_t k = 0; k < n; k++) {
        json_t *a = json_is_array(aud) ? json_array_get(aud, k) : aud;
        for (size_t i = 0; json_is_string(a) && i < d->n_audiences; i++)
            if (!strcmp(json_string_value(a), d->audiences[i])) return 1;
    }
    return 0;
}

static int pt__check_jwt(const pt_security_def_t *d, const char *tok, size_t n,
                         pt_security_result_t *res)
{
    unsigned char *hdr = NULL, *body = NULL, *sig = NULL;
    json_t *jh = NULL, *jp = NULL;
    size_t hdr_len, body_len, sig_len;
    const char *msg = "malformed token";
    int rc;

    const char *dot1 = n <= PT__MAX_TOKEN ? memchr(tok, '.', n) : NULL;
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', n - (size_t)(dot1 + 1 - tok)) : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', n - (size_t)(dot2 + 1 - tok)) || dot1 == tok) goto refuse;
    if (!(hdr = pt__b64url(tok, (size_t)(dot1 - tok), &hdr_len)) ||
        !(jh = json_loadb((const char *)hdr, hdr_len, JSON_REJECT_DUPLICATES, NULL)) ||
        !json_is_object(jh))
        goto refuse;
    json_t *alg = json_object_get(jh, "alg");
    const char *want = d->alg == PT__HS256 ? "HS256" : "RS256";
    if (!json_is_string(alg) || strcmp(json_string_value(alg), want) != 0) {
        msg = "token algorithm not accepted";
        goto refuse;
    }
    if (json_object_get(jh, "crit")) {
        msg = "token has critical extensions";
        goto refuse;
    }
    size_t sig_b64_len = n - (size_t)(dot2 + 1 - tok);
    if (sig_b64_len == 0 || !(sig = pt__b64url(dot2 + 1, sig_b64_len, &sig_len))) goto refuse;
    if (!pt__jwt_signature_ok(d, tok, (size_t)(dot2 - tok), sig, sig_len)) {
        msg = "invalid token signature";
        goto refuse;
    }
    /* Only a signed payload is read at all. */
    if (!(body = pt__b64url(dot1 + 1, (size_t)(dot2 - dot1 - 1), &body_len)) ||
        !(jp = json_loadb((const char *)body, body_len, JSON_REJECT_DUPLICATES, NULL)) ||
        !json_is_object(jp))
        goto refuse;
    int64_t now = (int64_t)time(NULL);
    json_t *exp = json_object_get(jp, "exp"), *nbf = json_object_get(jp, "nbf");
    if (exp && !json_is_number(exp)) {
        msg = "token exp is not a number";
        goto refuse;
    }
    if (!exp && d->require_exp) {
        msg = "token has no exp claim";
        goto refuse;
    }
    if (exp && (double)now >= json_number_value(exp) + (double)d->leeway_s) {
        msg = "token expired";
        goto refuse;
    }
    if (nbf &&
        (!json_is_number(nbf) || (double)now + (double)d->leeway_s < json_number_value(nbf))) {
        msg = "token not valid yet";
        goto refuse;
    }
    if (d->issuer) {
        json_t *iss = json_object_get(jp, "iss");
        if (!json_is_string(iss) || strcmp(json_string_value(iss), d->issuer) != 0) {
            msg = "token issuer not accepted";
            goto refuse;
        }
    }
    if (d->n_audiences && !pt__aud_ok(d, json_object_get(jp, "aud"))) {
        msg = "token audience not accepted";
        goto refuse;
    }
    json_t *user = json_object_get(jp, d->username_claim);
    if (!json_is_string(user) ||
        !pt__valid_username(json_string_value(user), json_string_length(user), 0)) {
        msg = "token has no usable username claim";
        goto refuse;
    }
    pt__set_name(res->username, json_string_value(user), json_string_length(user));
    rc = 0;
    goto done;
refuse:
    rc = pt__unauthorized(d, res, msg, 1);
done:
    json_decref(jh);
    json_decref(jp);
    free(hdr);
    free(body);
    free(sig);
    return rc;
}

int pt_security_check(const pt_security_t *sec, const pt_security_def_t *d,
                      const pt_security_request_t *req, pt_security_result_t *res)
{
    const char *v = NULL;
    size_t n = 0;
    int count, rc;

    res->status = 0;
    res->message = NULL;
    res->extra[0] = res->username[0] = res->gateway[0] = '\0';
    res->hide_header = NULL;
    res->verify = NULL;

    /* A name for the end user is believed only from a caller authenticated by
     * a definition that says so; from anyone else it is refused outright, so
     * it can never reach a service. */
    for (size_t i = 0; sec && i < sec->n_trust_headers; i++) {
        const char *h = sec->trust_headers[i];
        if ((!d || !d->trust_header || strcmp(d->trust_header, h) != 0) &&
            req->header(req->ud, h, &v, &n) > 0)
            return pt__refuse(res, 403,
                              !strcmp(h, PT_SECURITY_USERNAME_HEADER)
                                  ? "the x-portico-username header is not accepted "
                                    "from this caller"
                                  : "a trusted-gateway username header is not "
                                    "accepted from this caller");
    }
    if (!d) return 0;

    count = req->header(req->ud, d->header, &v, &n);
    if (count > 1)
        return pt__refuse(res, 400,
                          d->kind == PT__APIKEY ? "more than one API key header"
                                                : "more than one Authorization header");
    if (count == 0 && req->token && d->kind != PT__BASIC) {
        v = req->token;
        n = req->token_len;
        count = 1;
    } else if (count == 1 && d->kind == PT__JWT) {
        const char *tok;
        size_t tok_len;
        if (!pt__scheme(v, n, "Bearer", &tok, &tok_len))
            return pt__unauthorized(d, res, "expected a Bearer token", 1);
        v = tok;
        n = tok_len;
    }
    if (count == 0 || n == 0)
        return pt__unauthorized(d, res,
                                d->kind == PT__BASIC    ? "authentication required"
                                : d->kind == PT__APIKEY ? "API key required"
                                                        : "bearer token required",
                                0);
    rc = d->kind == PT__BASIC    ? pt__check_basic(sec, d, req, v, n, res)
         : d->kind == PT__APIKEY ? pt__check_apikey(d, v, n, res)
                                 : pt__check_jwt(d, v, n, res);
    if (rc != 0) return rc;
    if (d->hide_credentials) res->hide_header = d->header;
    if (d->trust_header) {
        count = req->header(req->ud, d->trust_header, &v, &n);
        if (count > 1) return pt__refuse(res, 400, "more than one trusted username header");
        if (count == 1) {
            if (!pt__valid_username(v, n, 0))
                return pt__refuse(res, 400, "the trusted username header is not a valid name");
            memcpy(res->gateway, res->username, sizeof res->gateway);
            pt__set_name(res->username, v, n);
        }
    }
    return 0;
}

/* ------------------------------------------------------------ slow checks */

/* The checks this thread keeps back from the pool, those of clean addresses
 * first. A thread hands the pool at most its share of the pool's threads at
 * once, so libuv's own queue (first come, first served, and shared by every
 * worker) stays short and the order chosen here is the order they run in. */
static __thread struct {
    pt_security_verify_t *head[2], *tail[2]; /* [0]: clean addresses, [1]: the rest */
    unsigned submitted;                      /* handed to the pool, not done */
    int counted;                             /* this thread is one of pt__hashing_threads */
} pt__queue;
static unsigned pt__hashing_threads; /* threads that have run a check */

static unsigned pt__share(void)
{
    unsigned pool = __atomic_load_n(&pt__pool_threads, __ATOMIC_RELAXED);
    unsigned threads = __atomic_load_n(&pt__hashing_threads, __ATOMIC_RELAXED);
    return threads ? (pool + threads - 1) / threads : pool;
}

static void pt__verify_run(pt_security_verify_t *job)
{
    job->ok = crypto_pwhash_str_verify(job->hash, job->password, job->password_len) == 0 &&
              !job->force_fail;
    pt_metrics_inc(&pt_metrics_auth_hash_checks, 1);
}

void pt_security_verify_free(pt_security_verify_t *job)
{
    if (!job) return;
    pt__gate_leave(&job->ticket, 0);
    if (job->password) {
        sodium_memzero(job->password, job->password_len);
        free(job->password);
    }
    sodium_memzero(job, sizeof *job);
    free(job);
}

static void pt__on_work(uv_work_t *w)
{
    pt__verify_run(w->data);
}

static void pt__on_work_done(uv_work_t *w, int status);

static int pt__submit(pt_security_verify_t *job)
{
    job->work.data = job;
    int rc = uv_queue_work(job->loop, &job->work, pt__on_work, pt__on_work_done);
    if (rc == 0) pt__queue.submitted++;
    return rc;
}

static void pt__finish(pt_security_verify_t *job, int ran);

/* Hands the pool the next checks kept back, up to this thread's share. */
static void pt__pump(void)
{
    while (pt__queue.submitted < pt__share()) {
        int t = pt__queue.head[0] ? 0 : 1;
        pt_security_verify_t *job = pt__queue.head[t];
        if (!job) return;
        if (!(pt__queue.head[t] = job->next_queued)) pt__queue.tail[t] = NULL;
        /* libuv refuses work only for a NULL callback; should it, the
         * requests check again, and their pt_security_verify says why */
        if (pt__submit(job) != 0) pt__finish(job, 0);
    }
}

/* A check is over (ran: its outcome is in job): it leaves the list and the
 * gate, the next ones go to the pool, then every request that waited for it
 * is called back (they may start other checks; the lists are in order). */
static void pt__finish(pt_security_verify_t *job, int ran)
{
    for (pt_security_verify_t **p = &pt__running; *p; p = &(*p)->next_running)
        if (*p == job) {
            *p = job->next_running;
            break;
        }
    if (ran) pt__cache_put(job->digest, job->ok, job->user, job->ttl_ns);
    pt__gate_leave(&job->ticket, ran && !job->ok);
    pt_security_verify_cb cb = job->cb;
    void *ud = job->ud;
    pt__waiter_t *waiters = job->waiters;
    pt_security_verify_free(job);
    pt__pump();
    cb(ud);
    while (waiters) {
        pt__waiter_t *next = waiters->next;
        waiters->cb(waiters->ud);
        free(waiters);
        waiters = next;
    }
}

static void pt__on_work_done(uv_work_t *w, int status)
{
    pt__queue.submitted--;
    pt__finish(w->data, status == 0);
}

int pt_security_verify(uv_loop_t *loop, pt_security_verify_t *job, pt_security_verify_cb cb,
                       void *ud)
{
    for (pt_security_verify_t *r = pt__running; r; r = r->next_running) {
        if (sodium_memcmp(r->digest, job->digest, sizeof job->digest) != 0) continue;
        pt__waiter_t *wt = malloc(sizeof *wt);
        if (!wt) break; /* run a check of its own */
        wt->cb = cb;
        wt->ud = ud;
        wt->next = r->waiters;
        r->waiters = wt;
        pt_security_verify_free(job);
        return 0;
    }
    if (!pt__queue.counted) {
        pt__queue.counted = 1;
        __atomic_add_fetch(&pt__hashing_threads, 1, __ATOMIC_RELAXED);
    }
    job->cb = cb;
    job->ud = ud;
    job->loop = loop;
    if (pt__queue.submitted < pt__share()) {
        int rc = pt__submit(job);
        if (rc != 0) {
            pt_security_verify_free(job);
            return rc;
        }
    } else {
        /* a check runs now (submitted > 0), and its end hands on the next */
        int t = job->ticket.clean ? 0 : 1;
        job->next_queued = NULL;
        if (pt__queue.tail[t])
            pt__queue.tail[t]->next_queued = job;
        else
            pt__queue.head[t] = job;
        pt__queue.tail[t] = job;
    }
    job->next_running = pt__running;
    pt__running = job;
    return 0;
}

void pt_security_verify_now(pt_security_verify_t *job)
{
    pt__verify_run(job);
    pt__cache_put(job->digest, job->ok, job->user, job->ttl_ns);
    pt__gate_leave(&job->ticket, !job->ok);
    pt_security_verify_free(job);
}

/* -------------------------------------------------------- hash-password */

int pt_security_hash_password(const char *password, size_t len, char out[128])
{
    if (sodium_init() < 0) return -1;
    return crypto_pwhash_str_alg(out, password, len, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                 crypto_pwhash_MEMLIMIT_INTERACTIVE,
                                 crypto_pwhash_ALG_ARGON2ID13) == 0
               ? 0
               : -1;
}

int pt_security_hash_api_key(const char *key, size_t len, char out[128])
{
    unsigned char digest[PT__DIGEST];
    if (sodium_init() < 0) return -1;
    crypto_generichash(digest, sizeof digest, (const unsigned char *)key, len, NULL, 0);
    memcpy(out, "blake2b:", 8);
    sodium_bin2hex(out + 8, 128 - 8, digest, sizeof digest);
    return 0;
}

/* Reads one line from fd 0 into buf; returns its length, or -1. With a
 * terminal, echo is off while it is typed. */
static long pt__read_secret(const char *prompt, char *buf, size_t cap)
{
    struct termios old, quiet;
    int tty = isatty(0) && tcgetattr(0, &old) == 0;
    if (tty) {
        fputs(prompt, stderr);
        fflush(stderr);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        tcsetattr(0, TCSAFLUSH, &quiet);
    }
    size_t n = 0;
    int ch = 0;
    long rc = -1;
    while (n + 1 < cap) {
        char c;
        ssize_t r = read(0, &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            ch = EOF;
            break;
        }
        if (c == '\n') {
            ch = '\n';
            break;
        }
        buf[n++] = c;
    }
    if (n + 1 < cap || ch == '\n') {
        if (n && buf[n - 1] == '\r') n--;
        buf[n] = '\0';
        rc = (long)n;
    }
    if (tty) tcsetattr(0, TCSAFLUSH, &old);
    return rc;
}

int pt_security_hash_password_cli(int api_key)
{
    char *pw = NULL, *again = NULL, out[128];
    int status = 1;
    const size_t cap = 4096;
    if (sodium_init() < 0 || !(pw = sodium_malloc(cap)) || !(again = sodium_malloc(cap))) {
        fprintf(stderr, "portico: cannot start libsodium\n");
        goto done;
    }
    const char *what = api_key ? "API key" : "password";
    long n = pt__read_secret(api_key ? "API key: " : "Password: ", pw, cap);
    if (n <= 0) {
        fprintf(stderr, "portico: no %s on stdin (or longer than %zu bytes)\n", what, cap - 2);
        goto done;
    }
    if (isatty(0)) {
        long m = pt__read_secret("Again: ", again, cap);
        if (m != n || sodium_memcmp(pw, again, (size_t)n) != 0) {
            fprintf(stderr, "portico: the two entries differ\n");
            goto done;
        }
    }
    if ((api_key ? pt_security_hash_api_key(pw, (size_t)n, out)
                 : pt_security_hash_password(pw, (size_t)n, out)) != 0) {
        fprintf(stderr, "portico: cannot hash the %s (out of memory?)\n", what);
        goto done;
    }
    printf("%s\n", out);
    status = 0;
done:
    sodium_free(pw);
    sodium_free(again);
    return status;
}
