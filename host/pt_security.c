#include "pt_security.h"
#include "pt_metrics.h"
#include "pt_security_def.h"
#include "pt_security_gate.h"
#include "pt_util.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

_Static_assert(PT_SECURITY_NAME_LIMIT == PT_SECURITY_NAME_MAX, "one bound on user names");

#define PT__CACHE_DIGEST crypto_shorthash_siphashx24_BYTES /* 128-bit keyed SipHash */
_Static_assert(crypto_generichash_KEYBYTES >= crypto_shorthash_siphashx24_KEYBYTES,
               "the cache key serves SipHash too");
_Static_assert(PT__CACHE_DIGEST == PT_SECURITY_GATE_DIGEST, "the gate names a check by it");
#define PT__MAX_CREDENTIAL 1024 /* decoded "user:password" */
#define PT__MAX_TOKEN 8192      /* a JWT, in bytes */
#define PT__CACHE_SLOTS 4096    /* a power of two */
#define PT__NEGATIVE_TTL_NS (30ull * 1000000000ull)

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
    pt__security_ticket_t ticket;             /* none for a job that joins one under way */
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

unsigned pt__security_pool_size(void)
{
    /* libuv: UV_THREADPOOL_SIZE, 0 counts as 1, at most 1024, default 4 */
    const char *pool = getenv("UV_THREADPOOL_SIZE");
    long threads = pool ? strtol(pool, NULL, 10) : 4;
    threads = threads < 1 ? 1 : threads > 1024 ? 1024 : threads;
    __atomic_store_n(&pt__pool_threads, (unsigned)threads, __ATOMIC_RELAXED);
    return (unsigned)threads;
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

/* ------------------------------------------------------------- the checks */

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

static int pt__refuse(pt_security_result_t *res, int status, const char *message)
{
    res->status = status;
    res->message = message;
    return PT_SECURITY_REFUSE;
}

static int pt__unauthorized(const pt_security_def_t *d, pt_security_result_t *res,
                            const char *message, int presented)
{
    pt_strcpy_cap(res->extra, d->challenge[presented], sizeof res->extra);
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

int pt__security_check_basic(const pt_security_t *sec, const pt_security_def_t *d,
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
    const pt__security_user_t *user = NULL;
    for (size_t i = 0; i < d->n_users; i++)
        if (strlen(d->users[i].name) == user_len && !memcmp(d->users[i].name, c, user_len))
            user = &d->users[i];
    if (user && !user->hash) {
        unsigned char pd[PT_SECURITY_DIGEST];
        crypto_generichash(pd, sizeof pd, (const unsigned char *)pw, pw_len, sec->env_key,
                           sizeof sec->env_key);
        if (sodium_memcmp(pd, user->env_digest, PT_SECURITY_DIGEST) != 0) {
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
    pt__security_ticket_t ticket = {0};
    int joins = 0;
    for (pt_security_verify_t *r = pt__running; r && !joins; r = r->next_running)
        joins = !sodium_memcmp(r->digest, digest, sizeof digest);
    if (!joins) {
        unsigned char addr[9];
        size_t addr_len = pt__peer_key(req, addr);
        uint32_t retry;
        int why = pt__security_gate_enter(&sec->gate, addr, addr_len, d->name, (const char *)c,
                                          user_len, digest, &ticket, &retry);
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
        pt__security_gate_leave(&ticket, 0);
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

int pt__security_check_apikey(const pt_security_t *sec, const pt_security_def_t *d,
                              const pt_security_request_t *req, const char *v, size_t n,
                              pt_security_result_t *res)
{
    unsigned char digest[PT_SECURITY_DIGEST];
    const pt__security_key_t *found = NULL;
    crypto_generichash(digest, sizeof digest, (const unsigned char *)v, n, NULL, 0);
    /* every key is compared, so the time taken says nothing about which one
     * came close */
    for (size_t i = 0; i < d->n_keys; i++)
        if (sodium_memcmp(digest, d->keys[i].digest, PT_SECURITY_DIGEST) == 0) found = &d->keys[i];
    if (!found) return pt__unauthorized(d, res, "unknown API key", 1);
    pt_strcpy_cap(res->username, found->username, sizeof res->username);
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

int pt__security_jwt_verify_hs256(const pt_security_def_t *d, const char *input, size_t input_len,
                                  const unsigned char *sig, size_t sig_len)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (!HMAC(EVP_sha256(), d->secret, (int)d->secret_len, (const unsigned char *)input, input_len,
              mac, &mac_len))
        return 0;
    return sig_len == mac_len && sodium_memcmp(mac, sig, mac_len) == 0;
}

int pt__security_jwt_verify_rs256(const pt_security_def_t *d, const char *input, size_t input_len,
                                  const unsigned char *sig, size_t sig_len)
{
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

int pt__security_check_jwt(const pt_security_t *sec, const pt_security_def_t *d,
                           const pt_security_request_t *req, const char *tok, size_t n,
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
    if (!json_is_string(alg) || strcmp(json_string_value(alg), d->alg->name) != 0) {
        msg = "token algorithm not accepted";
        goto refuse;
    }
    if (json_object_get(jh, "crit")) {
        msg = "token has critical extensions";
        goto refuse;
    }
    size_t sig_b64_len = n - (size_t)(dot2 + 1 - tok);
    if (sig_b64_len == 0 || !(sig = pt__b64url(dot2 + 1, sig_b64_len, &sig_len))) goto refuse;
    if (!d->alg->verify(d, tok, (size_t)(dot2 - tok), sig, sig_len)) {
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
        !pt__security_valid_username(json_string_value(user), json_string_length(user), 0)) {
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

    const pt__security_kind_t *kind = d->kind;
    if (kind->from_tls) {
        rc = kind->check(sec, d, req, NULL, 0, res);
        if (rc != 0) return rc;
        goto trusted;
    }
    count = req->header(req->ud, d->header, &v, &n);
    if (count > 1) return pt__refuse(res, 400, kind->twice);
    if (count == 0 && req->token && kind->takes_token) {
        v = req->token;
        n = req->token_len;
        count = 1;
    } else if (count == 1 && kind->prefix) {
        const char *cred;
        size_t cred_len;
        if (!pt__scheme(v, n, kind->prefix, &cred, &cred_len))
            return pt__unauthorized(d, res, kind->no_prefix, 1);
        v = cred;
        n = cred_len;
    }
    if (count == 0 || n == 0) return pt__unauthorized(d, res, kind->missing, 0);
    rc = kind->check(sec, d, req, v, n, res);
    if (rc != 0) return rc;
    if (d->hide_credentials) res->hide_header = d->header;
trusted:
    if (d->trust_header) {
        count = req->header(req->ud, d->trust_header, &v, &n);
        if (count > 1) return pt__refuse(res, 400, "more than one trusted username header");
        if (count == 1) {
            if (!pt__security_valid_username(v, n, 0))
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
    pt__security_gate_leave(&job->ticket, 0);
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
    pt__security_gate_leave(&job->ticket, ran && !job->ok);
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
    pt__security_gate_leave(&job->ticket, !job->ok);
    pt_security_verify_free(job);
}
