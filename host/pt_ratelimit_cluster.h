/* pt_ratelimit_cluster: rate limits shared by every node of a cluster
 * (rate_limit scope: cluster; docs/cluster-ratelimit.md).
 *
 * Each bucket is one Redis key holding a GCRA "theoretical arrival time";
 * one Lua script per decision reads and moves it atomically on Redis's own
 * clock (TIME), so there is no read-then-write race between nodes and the
 * nodes' clocks do not matter. The script goes as EVALSHA (EVAL once on
 * NOSCRIPT, pt_redis), pipelined on the worker's connection: one round trip
 * per decision, and the request waits for it without blocking the loop.
 * Its arguments are formatted once per limit and the command is written
 * without printf (pt_redis_eval_formatted): a decision costs a few thousand
 * instructions on the node (docs/cluster-ratelimit.md, "Cost").
 *
 * batch: N lets a node take up to N tokens in one call and spend the rest
 * on its next requests for the same bucket (a process-wide table, unspent
 * tokens dropped after a second; the next batch asked for when half is
 * spent): the cluster then admits at most N x nodes more than the limit in
 * any window.
 *
 * When Redis cannot be reached (down, time-out, an error reply) the
 * channel's on_redis_error applies: fail_open decides with the process's
 * local bucket of the same rate (pt_ratelimit), fail_closed refuses (503).
 * The first failure of an outage is logged (warn) and the first success
 * after it (info); both are counted (pt_metrics_ratelimit). */
#ifndef PT_RATELIMIT_CLUSTER_H
#define PT_RATELIMIT_CLUSTER_H

#include "pt_config.h"
#include "pt_ratelimit.h"
#include "pt_worker.h"

#include <stddef.h>
#include <stdint.h>

struct redisReply;

/* A decision. */
enum {
    PT_RLC_ALLOW = 0,   /* let through */
    PT_RLC_LIMITED = 1, /* 429, with Retry-After */
    PT_RLC_CLOSED = 2,  /* Redis unreachable and fail_closed: 503 */
    PT_RLC_WAIT = 3     /* pt_ratelimit_cluster_take: the callback says later */
};

/* The decision for a request that waited: verdict is PT_RLC_ALLOW, _LIMITED
 * or _CLOSED; retry_after_s (>= 1) for the last two. ch is the channel the
 * decision was asked for; it is valid during the call (its config
 * generation is held until the callback returns). */
typedef void (*pt_rlc_cb)(void *arg, const pt_channel_t *ch, int verdict, uint32_t retry_after_s);

/* The Redis script (Lua): KEYS[1] the bucket, ARGV the emission interval in
 * microseconds, the burst and the tokens wanted; returns {granted,
 * retry_after_us}. */
extern const char pt_ratelimit_cluster_script[];

/* Decides for one request of channel ch (its rate_limit has scope:
 * cluster) by user ("" when per channel) on worker w. Returns PT_RLC_ALLOW,
 * _LIMITED or _CLOSED when decided at once (a token of the node's batch, or
 * Redis known down: then the policy), with *retry_after_s set for a
 * refusal; or PT_RLC_WAIT: cb(arg, ...) comes exactly once, later, from w's
 * loop, within the cluster's Redis time-out. Worker thread only. */
int pt_ratelimit_cluster_take(pt_worker_t *w, const pt_channel_t *ch, const char *user,
                              pt_rlc_cb cb, void *arg, uint32_t *retry_after_s);

/* ---- the pure parts (unit tested) ---- */

/* The bucket's Redis key: prefix "rl:" <length of channel> ":" channel [":" user],
 * the length making a channel "a:b" and user "c" differ from channel "a" and
 * user "b:c". Writes at most cap bytes; returns the length, or -1 when it
 * does not fit. */
int pt_ratelimit_cluster_key(const char *prefix, const char *channel, const char *user, char *buf,
                             size_t cap);

/* The script's ARGV for a limit: the emission interval (1e6 / rate
 * microseconds, exact to a double), the burst, the tokens wanted (batch). */
void pt_ratelimit_cluster_argv(const pt_ratelimit_cfg_t *rl, char interval[32], char burst[16],
                               char want[16]);

/* The script's interval and burst as two RESP bulk strings (what
 * pt_ratelimit_cluster_argv gives), into buf; returns the length. */
#define PT_RLC_ARGS_MAX 80
size_t pt_ratelimit_cluster_args(const pt_ratelimit_cfg_t *rl, char buf[PT_RLC_ARGS_MAX]);

/* The script's keys and arguments in RESP, as pt_redis_eval_formatted takes
 * them: the key, args (pt_ratelimit_cluster_args), want. buf holds at least
 * key_len + args_len + 48 bytes. Returns the length; no printf. */
size_t pt_ratelimit_cluster_tail(char *buf, const char *key, size_t key_len, const char *args,
                                 size_t args_len, uint32_t want);

/* Reads the script's reply: returns 0 with the tokens granted (0..wanted)
 * and, when none, the whole seconds until one is there (>= 1); -1 when the
 * reply is not the script's (an error reply, a wrong shape). */
int pt_ratelimit_cluster_reply(const struct redisReply *r, long long *granted,
                               uint32_t *retry_after_s);

/* The node's batches (batch > 1), one table for the process. take: 1 when
 * a token of key's batch was left (spent now), and *want tokens to ask
 * Redis for ahead of need (0: none; the batch is half spent and none is on
 * its way); 0 when none was left, and *want tokens to ask Redis for with
 * this request (what N leaves after the calls under way), or 0 when those
 * calls asked for N already: then the request waits for one of this
 * worker's, or asks for one token that is counted nowhere. What *want says
 * is counted as under way until done. done: a call for key counted as want
 * came back with granted tokens (0 on failure), of which spent went to
 * requests; the rest are kept for 1 s. Held and counted tokens together
 * stay within N. Thread-safe. */
int pt_ratelimit_batch_take(const void *key, size_t len, uint32_t batch, uint64_t now_ns,
                            uint32_t *want);
void pt_ratelimit_batch_done(const void *key, size_t len, uint32_t want, long long granted,
                             uint32_t spent, uint64_t now_ns);

/* Whether Redis is in an outage for the rate limits (the last call
 * failed). A failure of a call marks it and logs the outage once; a success
 * ends it. what: why the call failed (for the log). */
void pt_ratelimit_cluster_failed(const char *what);
void pt_ratelimit_cluster_succeeded(void);

#endif
