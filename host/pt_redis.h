/* pt_redis: a Redis client on a libuv loop, for the cluster (docs/cluster.md).
 *
 * hiredis is the reply codec only (redisReader parses replies; commands
 * are written in RESP here, not by redisFormatCommandArgv, whose sprintf
 * and copy were half the client's cost per command); the bytes go through
 * the project's own
 * pt_transport (TCP, or TLS through pt_transport_tls for rediss://), so
 * nothing ever blocks the loop. One pt_redis_t is one connection of one
 * loop: a worker's (pt_redis_of_worker), or the main loop's (pt_redis_main,
 * for the node registry and the scheduler).
 *
 * - Pipelined: commands are written as they come (coalesced once per loop
 *   turn) and answered in order.
 * - Lazy: the first command connects (then AUTH with cluster.password_env's
 *   value, SELECT of the URL's database and a PING go first in the
 *   pipeline; commands queue behind them while it connects).
 * - Each command has cluster.timeout (also the limit of a connect): past it
 *   the command fails with PT_REDIS_ETIMEOUT and the connection is reset.
 * - A lost connection fails what is pending (PT_REDIS_EDOWN) and is made
 *   again on its own with a backoff (100 ms doubling to 2 s, with jitter);
 *   while it is down, pt_redis_command fails at once (returns
 *   PT_REDIS_EDOWN, its callback is not called): callers apply their own
 *   policy without waiting.
 * - A Redis error reply ("-ERR ...", REDIS_REPLY_ERROR) is a reply
 *   (err 0): the caller reads reply->type.
 * Figures go to pt_metrics_redis. Everything here runs on r's loop thread.
 *
 * Differences from the first draft of this interface:
 * commands are encoded here (above), not by redisFormatCommandArgv; API
 * additions only: pt_redis_main/pt_redis_set_main (the main loop's
 * connection), pt_redis_subscriber_add (more channels on a subscriber),
 * pt_redis_eval_formatted (a script with preformatted args: rate limits),
 * PT_REDIS_ENOMEM/EINVAL, and pt_redis_new copies what it needs of cfg (it
 * may be freed after, a reload does). */
#ifndef PT_REDIS_H
#define PT_REDIS_H

#include "pt_config_cluster.h"

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include <hiredis/read.h> /* redisReply's types (REDIS_REPLY_*); hiredis.h has the struct */
#include <hiredis/hiredis.h>

typedef struct pt_redis_s pt_redis_t;
struct pt_worker_s;

#define PT_REDIS_EDOWN (-1)    /* not connected, or the connection was lost */
#define PT_REDIS_ETIMEOUT (-2) /* no reply within cluster.timeout */
#define PT_REDIS_EPROTO (-3)   /* a reply hiredis could not parse, or one nobody asked for */
#define PT_REDIS_ENOMEM (-4)
#define PT_REDIS_EINVAL (-5) /* a command on a subscriber, or a script with no body */

/* The reply of one command: reply is NULL when err != 0 (a PT_REDIS_E*),
 * and valid only during the call (freed after it returns). */
typedef void (*pt_redis_cb)(void *arg, const struct redisReply *reply, int err);

/* A client of cfg's Redis on loop (copies what it needs of cfg, which must
 * have on set). It connects at its first command. NULL when out of memory. */
pt_redis_t *pt_redis_new(uv_loop_t *loop, const pt_cluster_cfg_t *cfg);

/* Closes r: callbacks still pending get PT_REDIS_EDOWN first (from within
 * this call), the memory goes once its handles closed (the loop must run
 * once more). Safe from within one of r's callbacks. NULL is fine. */
void pt_redis_free(pt_redis_t *r);

/* The worker's connection (made at its start when the config has a
 * cluster: section), NULL without one or once the worker has drained. */
pt_redis_t *pt_redis_of_worker(struct pt_worker_s *w);

/* The main loop's connection (pt_server sets it at start when there is a
 * cluster: section), or NULL. Main thread only. */
pt_redis_t *pt_redis_main(void);
void pt_redis_set_main(pt_redis_t *r);

/* Sends the command argv[0..argc) (lens[i] the length of argv[i]; lens
 * NULL: strlen). cb(arg, reply, err) once it is answered, failed or timed
 * out, never from within this call. Returns 0, or a PT_REDIS_E* (<0;
 * cb is not called): PT_REDIS_EDOWN at once while the connection is down. */
int pt_redis_command(pt_redis_t *r, int argc, const char **argv, const size_t *lens, pt_redis_cb cb,
                     void *arg);

/* A Lua script run by its SHA-1 (EVALSHA), sent whole (EVAL) once when
 * Redis answers NOSCRIPT. body must outlive every pt_redis_eval of s. */
typedef struct {
    const char *body;
    char sha1[41];
} pt_redis_script_t;
void pt_redis_script_init(pt_redis_script_t *s, const char *body);

/* EVALSHA s nkeys argv... (the first nkeys of argv are keys), then EVAL on
 * NOSCRIPT; cb as for pt_redis_command (with the EVAL's reply then).
 * Returns as pt_redis_command does. */
int pt_redis_eval(pt_redis_t *r, pt_redis_script_t *s, int nkeys, int argc, const char **argv,
                  const size_t *lens, pt_redis_cb cb, void *arg);

/* EVALSHA s with keys and arguments the caller formatted once: tail holds
 * nargs RESP bulk strings ("$<len>\r\n<bytes>\r\n" each; the first nkeys
 * are keys), sent after the "EVALSHA sha nkeys" head made here without
 * printf, so a hot script (a rate limit per request) pays no
 * redisFormatCommandArgv and no copy. e and tail are the caller's (in what
 * it keeps for the call) and must stay until cb; on NOSCRIPT the same tail
 * goes once more with EVAL. Returns as pt_redis_command does. */
typedef struct {
    pt_redis_t *r;
    pt_redis_script_t *s;
    pt_redis_cb cb;
    void *arg;
    int nkeys, nargs;
    const char *tail;
    size_t tail_len;
} pt_redis_evalf_t;
int pt_redis_eval_formatted(pt_redis_t *r, pt_redis_script_t *s, int nkeys, int nargs,
                            const char *tail, size_t tail_len, pt_redis_evalf_t *e, pt_redis_cb cb,
                            void *arg);

/* Up: connected, and the connection's set-up (AUTH, SELECT, a PING; a
 * subscriber's first SUBSCRIBE) answered. A command is refused only while
 * down (after a failure, until the retry), not while connecting. */
bool pt_redis_up(const pt_redis_t *r);

/* "redis down", "redis timeout" ... for a PT_REDIS_E*. */
const char *pt_redis_strerror(int err);

/* ---- pub/sub ---- */

/* One message published on channel: data[0..len) valid during the call. */
typedef void (*pt_redis_msg_cb)(void *arg, const char *channel, const char *data, size_t len);

/* A subscriber: its own connection, made now, that SUBSCRIBEs channel (and
 * those of pt_redis_subscriber_add) on every connect, and hands each
 * message to cb. Messages published while it is reconnecting are lost
 * (Redis keeps none). It PINGs every cluster.heartbeat, so a connection
 * that died silently is noticed (no answer within cluster.timeout: made
 * again). pt_redis_command refuses it (PT_REDIS_EINVAL). Free
 * it with pt_redis_free. NULL when out of memory. */
pt_redis_t *pt_redis_subscriber_new(uv_loop_t *loop, const pt_cluster_cfg_t *cfg,
                                    const char *channel, pt_redis_msg_cb cb, void *arg);

/* Subscribes s to one more channel (now when connected, and on every
 * reconnect). Returns 0 or a PT_REDIS_E*. */
int pt_redis_subscriber_add(pt_redis_t *s, const char *channel);

#endif
