/* pt_security: who may call a channel, checked in C before any Lua runs.
 *
 * The top-level `security:` section of the config holds named definitions of
 * four kinds (basic_auth, api_key, jwt, client_cert: a TLS client
 * certificate of the definition's CAs); a channel names one with
 * `security: NAME`. pt_security_parse (pt_security_config.h) compiles them
 * into an immutable pt_security_t that hangs off the config snapshot
 * (cfg->security), so a reload swaps definitions with the rest of the config
 * and workers read them without locks. This header is the contract of the
 * checks made against them on the request path.
 *
 * The module's files: pt_security.c (the checks, the cache of verified
 * credentials, the slow checks on the thread pool), pt_security_config.c
 * (reading definitions), pt_security_gate.c (the bounds on password checks),
 * pt_security_hash.c (`portico hash-password`), and pt_security_def.h, the
 * definitions' layout and the table of kinds, which only they read.
 *
 * Secrets never sit in the file in the clear: basic-auth passwords are argon2id
 * hashes (`portico hash-password`) or come from an environment variable, API
 * keys are BLAKE2b hashes or come from the environment, JWT secrets come from
 * the environment or a file. Nothing this module writes (error messages,
 * config errors) ever contains what a caller presented or a secret.
 *
 * A verified basic-auth credential is remembered in a per-thread cache keyed
 * by a keyed hash of what was presented, so the hot path costs a BLAKE2b, not
 * an argon2id run. An argon2id run is never done on the caller's thread: the
 * check answers PT_SECURITY_VERIFY and the caller hands the job to
 * pt_security_verify (libuv's thread pool), then checks again when it is done;
 * the second check answers from the cache.
 *
 * Uncached checks are bounded before any hashing, so wrong passwords cannot
 * buy the thread pool: process-wide, at most `hash_checks.per_address`
 * checks queued or running for one client address, `per_user` for one user
 * name (known or not), `total` in all, and an address whose checks failed
 * `failures_per_address` times in `failure_window` waits. The excess is
 * refused with 429 and Retry-After. A client address with no failure
 * pending (a clean one) is not held to the per-user bound and its checks
 * run first on its worker, so a flood of wrong passwords, even for the same
 * user names, delays a first login from another address by one check at
 * most. An unknown user name costs the same argon2id run and goes through
 * the same bounds as a known one. docs/security.md has the policy.
 *
 * Trusted upstream gateways: a definition with `trust_username_header: NAME`
 * takes the end user's name from that header once the caller has
 * authenticated with it; the gateway's own name is kept apart. Any header
 * named so by any definition (and x-portico-username always) is refused with
 * 403 from every caller whose channel's definition does not trust it, and on
 * channels with no security at all. */
#ifndef PT_SECURITY_H
#define PT_SECURITY_H

#include <openssl/ssl.h>
#include <uv.h>

#include <stddef.h>
#include <stdint.h>

typedef struct pt_security_s pt_security_t;
typedef struct pt_security_def_s pt_security_def_t;
typedef struct pt_security_verify_s pt_security_verify_t;

#define PT_SECURITY_NAME_MAX 255 /* bytes of a username */

/* The header always treated as a trusted gateway's end-user header. */
#define PT_SECURITY_USERNAME_HEADER "x-portico-username"

/* How the check reads the request's headers: returns how many headers are
 * called name (lower-case; compare case-insensitively), and the first one's
 * value in *value and *len when there is one. */
typedef int (*pt_security_header_fn)(void *ud, const char *name, const char **value, size_t *len);

/* What a client_cert definition found of one connection's certificate,
 * kept by the connection (pt_transport_tls_t) so that its keep-alive
 * requests cost no certificate check: one slot, for the last definition
 * checked. Zeroed: empty. */
typedef struct pt_security_cert_memo_s {
    uint64_t set;        /* the id of the compiled set checked under; 0: empty */
    uint32_t def;        /* the definition's index in it */
    int status;          /* 0: let through; else the refusal's status */
    const char *message; /* the refusal's (static) */
    char username[PT_SECURITY_NAME_MAX + 1];
} pt_security_cert_memo_t;

typedef struct pt_security_request_s {
    pt_security_header_fn header;
    void *ud;
    /* Optional: a credential that came another way (a WebSocket's query
     * parameter). Used as the bearer token (jwt) or the key (api_key) when
     * the request has no header carrying one; basic_auth ignores it. */
    const char *token;
    size_t token_len;
    /* The client's address, which the bounds on password checks are kept
     * by: peer as text ("127.0.0.1", "::1") when set, else the peer of tcp,
     * asked only when a password check is due. Neither: the address is not
     * known, and only the per-user and total bounds apply. */
    const char *peer;
    const uv_tcp_t *tcp;
    /* The TLS connection the request came on, NULL over plaintext: a
     * client_cert definition reads its peer certificate (verified by the
     * handshake or not) and keeps its outcome in cert_memo (NULL: checked
     * every time). */
    const SSL *ssl;
    pt_security_cert_memo_t *cert_memo;
} pt_security_request_t;

/* pt_security_check's answers besides 0. */
#define PT_SECURITY_REFUSE 1 /* res->status, res->message, res->extra say how */
#define PT_SECURITY_VERIFY 2 /* res->verify holds a slow check to run first */

typedef struct pt_security_result_s {
    int status;          /* refused: 400, 401, 403, 429 or 500 */
    const char *message; /* refused: a static text, safe for a response body and a log */
    char extra[224];     /* refused: header lines ("Name: value\r\n"), may be "" */
    char username[PT_SECURITY_NAME_MAX + 1]; /* let through: the caller, "" anonymous */
    char gateway[PT_SECURITY_NAME_MAX + 1];  /* let through: the trusted gateway's own
                                                user when the end user came in its
                                                header, else "" */
    const char *hide_header;                 /* let through: a header (lower-case) that carried the
                                                credential; the service is not shown it. NULL: none */
    pt_security_verify_t *verify;            /* PT_SECURITY_VERIFY: owned by the caller, who passes
                                                it to pt_security_verify(_now) or _free */
} pt_security_result_t;

/* Checks a request against def (NULL: a channel with no security, where only
 * the trusted-gateway header rule applies). Returns 0 (let through: username
 * and gateway filled), PT_SECURITY_REFUSE, or PT_SECURITY_VERIFY. Runs on any
 * thread; each thread keeps its own cache of verified credentials. */
int pt_security_check(const pt_security_t *sec, const pt_security_def_t *def,
                      const pt_security_request_t *req, pt_security_result_t *res);

typedef void (*pt_security_verify_cb)(void *ud);

/* Runs a slow check on loop's thread pool, records its outcome in the cache
 * of the loop's thread, then calls cb(ud) on the loop's thread; the caller
 * then runs pt_security_check again. A thread hands the pool only its share
 * of the pool's threads at once and keeps the rest waiting, checks from
 * clean addresses first; a job for a credential already under way on this
 * thread waits for that one. Takes over job. Returns 0, or a negative libuv
 * error (job freed, cb not called). */
int pt_security_verify(uv_loop_t *loop, pt_security_verify_t *job, pt_security_verify_cb cb,
                       void *ud);

/* Runs a slow check here and now (tests, threads without a loop) and records
 * its outcome in this thread's cache and the bounds. Takes over job. */
void pt_security_verify_now(pt_security_verify_t *job);

/* Drops a job that will not be run; its place in the bounds on password
 * checks is given back, and no failure is counted. NULL is fine. */
void pt_security_verify_free(pt_security_verify_t *job);

#endif
