#include "pt_ratelimit_cluster.h"
#include "pt_log.h"
#include "pt_metrics.h"
#include "pt_metrics_ratelimit.h"
#include "pt_redis.h"
#include "pt_util.h"

#include <hiredis/hiredis.h>
#include <sodium.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* GCRA on Redis's clock. tat (the theoretical arrival time, microseconds)
 * is where the bucket's next token stands; the bucket holds the tokens
 * that fit between tat and now + burst x interval. The 1e-9 keeps a
 * rounding of (now - tat) / T just under a whole number from losing a
 * token. tat is stored with %.17g: a double read back exactly. */
const char pt_ratelimit_cluster_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local T, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1])) or now\n"
    "if tat < now then tat = now end\n"
    "local free = math.floor((now - tat) / T + burst + 1e-9)\n"
    "if free < 1 then\n"
    "  return {0, math.ceil(tat - now - (burst - 1) * T)}\n"
    "end\n"
    "if want > free then want = free end\n"
    "tat = tat + want * T\n"
    "redis.call('SET', KEYS[1], string.format('%.17g', tat), 'PX',\n"
    "           math.ceil((tat - now) / 1000) + 1)\n"
    "return {want, 0}\n";

/* ---- pure parts ---- */

/* Made per request: memcpy, no printf (a %zu format cost ~400 instructions). */
int pt_ratelimit_cluster_key(const char *prefix, const char *channel, const char *user, char *buf,
                             size_t cap)
{
    size_t p = strlen(prefix), c = strlen(channel), u = user ? strlen(user) : 0;
    if (p + c + u + 3 + 1 + 20 + 1 + 1 > cap) return -1;
    size_t n = 0;
    memcpy(buf, prefix, p), n += p;
    memcpy(buf + n, "rl:", 3), n += 3;
    n += pt_u64_digits(c, buf + n);
    buf[n++] = ':';
    memcpy(buf + n, channel, c), n += c;
    if (u) {
        buf[n++] = ':';
        memcpy(buf + n, user, u), n += u;
    }
    buf[n] = '\0';
    return (int)n;
}

/* "$<len>\r\n<s>\r\n" at p; returns its length. */
static size_t pt__bulk(char *p, const char *str, size_t len)
{
    size_t n = 0;
    p[n++] = '$';
    n += pt_u64_digits(len, p + n);
    p[n++] = '\r', p[n++] = '\n';
    memcpy(p + n, str, len), n += len;
    p[n++] = '\r', p[n++] = '\n';
    return n;
}

size_t pt_ratelimit_cluster_tail(char *buf, const char *key, size_t key_len, const char *args,
                                 size_t args_len, uint32_t want)
{
    char w[16];
    size_t n = pt__bulk(buf, key, key_len);
    memcpy(buf + n, args, args_len), n += args_len;
    n += pt__bulk(buf + n, w, pt_u64_digits(want, w));
    return n;
}

size_t pt_ratelimit_cluster_args(const pt_ratelimit_cfg_t *rl, char buf[PT_RLC_ARGS_MAX])
{
    char interval[32], burst[16], want[16];
    pt_ratelimit_cluster_argv(rl, interval, burst, want);
    size_t n = pt__bulk(buf, interval, strlen(interval));
    return n + pt__bulk(buf + n, burst, strlen(burst));
}

void pt_ratelimit_cluster_argv(const pt_ratelimit_cfg_t *rl, char interval[32], char burst[16],
                               char want[16])
{
    snprintf(interval, 32, "%.17g", 1e6 / rl->rate);
    snprintf(burst, 16, "%.0f", rl->burst);
    snprintf(want, 16, "%u", rl->batch ? rl->batch : 1);
}

int pt_ratelimit_cluster_reply(const struct redisReply *r, long long *granted,
                               uint32_t *retry_after_s)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER ||
        r->element[0]->integer < 0)
        return -1;
    *granted = r->element[0]->integer;
    long long us = r->element[1]->integer;
    long long s = (us + 999999) / 1000000;
    *retry_after_s = s < 1 ? 1 : s > 86400 ? 86400 : (uint32_t)s;
    return 0;
}

/* ---- the node's batches ----
 * A direct-mapped table: a bucket's slot is its keyed hash's; a new key
 * takes the slot over and what the old one held is dropped (fewer requests
 * let through, never more). Held tokens stay below N per key, so the
 * cluster's excess stays under N x nodes. */

#define PT__SLOTS 1024 /* a power of two */
#define PT__LOCKS 64
#define PT__KEY_MAX 192
#define PT__KEEP_NS 1000000000ull /* unspent tokens are dropped after this */

typedef struct {
    uint32_t tokens;   /* left to spend */
    uint32_t underway; /* asked of Redis by calls not back yet */
    uint64_t expires_ns;
    uint16_t key_len;
    unsigned char key[PT__KEY_MAX];
} pt__slot_t;

static struct {
    pthread_once_t once;
    pt__slot_t *slots;
    pthread_mutex_t locks[PT__LOCKS];
    unsigned char hash_key[crypto_shorthash_KEYBYTES];
} pt__batch = {.once = PTHREAD_ONCE_INIT};

static void pt__batch_init(void)
{
    if (sodium_init() < 0) return;
    crypto_shorthash_keygen(pt__batch.hash_key);
    for (int i = 0; i < PT__LOCKS; i++)
        pthread_mutex_init(&pt__batch.locks[i], NULL);
    pt__batch.slots = calloc(PT__SLOTS, sizeof *pt__batch.slots);
}

static size_t pt__slot_of(const void *key, size_t len)
{
    unsigned char h[crypto_shorthash_BYTES];
    uint64_t v;
    crypto_shorthash(h, key, len, pt__batch.hash_key);
    memcpy(&v, h, sizeof v);
    return (size_t)v & (PT__SLOTS - 1);
}

static int pt__slot_is(const pt__slot_t *s, const void *key, size_t len)
{
    return s->key_len == len && memcmp(s->key, key, len) == 0;
}

int pt_ratelimit_batch_take(const void *key, size_t len, uint32_t batch, uint64_t now_ns,
                            uint32_t *want)
{
    pthread_once(&pt__batch.once, pt__batch_init);
    *want = 1;
    if (!pt__batch.slots || len > PT__KEY_MAX || batch < 2) return 0;
    size_t i = pt__slot_of(key, len);
    pt__slot_t *s = &pt__batch.slots[i];
    int took = 0;
    pthread_mutex_lock(&pt__batch.locks[i % PT__LOCKS]);
    if (!pt__slot_is(s, key, len)) { /* taken over: the old key's calls find it gone */
        memcpy(s->key, key, len);
        s->key_len = (uint16_t)len;
        s->tokens = s->underway = 0;
    }
    if (s->tokens && now_ns >= s->expires_ns) s->tokens = 0;
    if (s->tokens) {
        s->tokens--;
        took = 1;
        /* half spent: the next batch is asked for now, in the background,
         * so a steady flow seldom finds the table empty (held and asked
         * together stay within N) */
        *want = s->tokens <= batch / 2 && !s->underway ? batch - s->tokens : 0;
    } else {
        /* a batch already on its way covers what comes meanwhile only as
         * far as N; past it, *want 0: the caller waits for one on its way
         * (pt__join) or asks for its own token, counted nowhere */
        *want = s->underway < batch ? batch - s->underway : 0;
    }
    s->underway += *want;
    pthread_mutex_unlock(&pt__batch.locks[i % PT__LOCKS]);
    return took;
}

void pt_ratelimit_batch_done(const void *key, size_t len, uint32_t want, long long granted,
                             uint32_t spent, uint64_t now_ns)
{
    if (!pt__batch.slots || len > PT__KEY_MAX) return;
    size_t i = pt__slot_of(key, len);
    pt__slot_t *s = &pt__batch.slots[i];
    long long keep = granted - (long long)spent;
    pthread_mutex_lock(&pt__batch.locks[i % PT__LOCKS]);
    if (pt__slot_is(s, key, len)) {
        s->underway = s->underway > want ? s->underway - want : 0;
        if (keep > 0) {
            if (now_ns >= s->expires_ns) s->tokens = 0;
            s->tokens += (uint32_t)keep;
            s->expires_ns = now_ns + PT__KEEP_NS;
        }
    }
    pthread_mutex_unlock(&pt__batch.locks[i % PT__LOCKS]);
}

/* ---- outages: logged once each ---- */

static int pt__down; /* atomic: 1 while the last call failed */

void pt_ratelimit_cluster_failed(const char *what)
{
    pt_metrics_inc(&pt_metrics_rl_redis_errors, 1);
    int was = 0;
    if (__atomic_compare_exchange_n(&pt__down, &was, 1, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        pt_metrics_inc(&pt_metrics_rl_outages, 1);
        pt_log_warn("cluster rate limits: Redis unreachable (%s): fail_open channels use their "
                    "local limit, fail_closed ones answer 503, until it is back",
                    what);
    }
}

void pt_ratelimit_cluster_succeeded(void)
{
    int was = 1;
    if (__atomic_load_n(&pt__down, __ATOMIC_RELAXED) &&
        __atomic_compare_exchange_n(&pt__down, &was, 0, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        pt_log_info("cluster rate limits: Redis reachable again: limits are cluster-wide again");
}

/* ---- one decision ---- */

static pt_redis_script_t pt__script;
static pthread_once_t pt__script_once = PTHREAD_ONCE_INIT;

static void pt__script_init(void)
{
    pt_redis_script_init(&pt__script, pt_ratelimit_cluster_script);
}

/* A request waiting for a batch another request (or an ask ahead) of this
 * worker has asked for. */
typedef struct pt__waiter_s {
    struct pt__waiter_s *next;
    pt_rlc_cb cb;
    void *arg;
    const pt_channel_t *ch;
    pt_snapshot_t *snap; /* ch's generation */
} pt__waiter_t;

typedef struct {
    pt_rlc_cb cb;
    void *arg;
    const pt_channel_t *ch;
    pt_snapshot_t *snap; /* ch's generation, held across the wait */
    pt_redis_evalf_t ev; /* pt_redis's, until the reply */
    uint32_t want;       /* tokens asked for */
    uint32_t counted;    /* of them, counted as under way in the batch table */
    uint32_t n_waiters;
    pt__waiter_t *waiters, **wtail;
    size_t slot;      /* in pt__inflight, when set there */
    size_t key_len;   /* the Redis key: data[0..key_len) */
    size_t local_len; /* the local bucket's name (fail_open): data + key_len + 1 */
    char data[];      /* key, NUL, local name, then the script's keys and args in RESP */
} pt__call_t;

/* The local bucket's name, as scope: local names it (pt_dispatch):
 * "channel\0user". Returns its length. */
static size_t pt__local_key(const pt_channel_t *ch, const char *user, char *buf)
{
    size_t n = strlen(ch->name), u = strlen(user);
    memcpy(buf, ch->name, n);
    buf[n] = '\0';
    memcpy(buf + n + 1, user, u);
    return n + 1 + u;
}

/* Redis did not answer: the channel's policy. */
static int pt__policy(const pt_channel_t *ch, const char *local, size_t local_len,
                      uint32_t *retry_after_s)
{
    const pt_ratelimit_cfg_t *rl = &ch->rate_limit;
    if (rl->fail_closed) {
        pt_metrics_inc(&pt_metrics_rl_decisions[PT_METRICS_RL_CLOSED], 1);
        *retry_after_s = 1;
        return PT_RLC_CLOSED;
    }
    pt_ratelimit_t *limiter = pt_ratelimit_global();
    int rc = limiter ? pt_ratelimit_take(limiter, local, local_len, rl->rate, rl->burst,
                                         uv_hrtime(), retry_after_s)
                     : 0;
    if (rc == 1) {
        pt_metrics_inc(&pt_metrics_rl_decisions[PT_METRICS_RL_LOCAL_NO], 1);
        return PT_RLC_LIMITED;
    }
    pt_metrics_inc(&pt_metrics_rl_decisions[PT_METRICS_RL_LOCAL_OK], 1);
    return PT_RLC_ALLOW; /* out of memory (-1): let through, as scope: local does */
}

/* The reply is the script's (a decision was made by Redis). */
static int reply_ok(int err, const struct redisReply *reply)
{
    long long g;
    uint32_t r;
    return err == 0 && pt_ratelimit_cluster_reply(reply, &g, &r) == 0;
}

/* This worker's batch calls on their way, by the batch table's slot, so a
 * request that finds the table empty and enough asked for already waits
 * for those tokens instead of asking for its own. */
#define PT__INFLIGHT 64
static __thread pt__call_t *pt__inflight[PT__INFLIGHT + 1]; /* [PT__INFLIGHT]: none */

static size_t pt__inflight_slot(const char *key, size_t len)
{
    pthread_once(&pt__batch.once, pt__batch_init);
    return pt__slot_of(key, len) % PT__INFLIGHT;
}

/* Waits for this worker's call on its way for key, when it asked for
 * enough to cover one more. Returns 1 when joined. */
static int pt__join(pt_worker_t *w, const char *key, size_t len, const pt_channel_t *ch,
                    pt_rlc_cb cb, void *arg)
{
    pt__call_t *on = pt__inflight[pt__inflight_slot(key, len)];
    if (!on || on->key_len != len || memcmp(on->data, key, len) != 0 ||
        on->n_waiters + (on->cb ? 1 : 0) >= on->want)
        return 0;
    pt__waiter_t *wt = malloc(sizeof *wt);
    if (!wt) return 0;
    *wt = (pt__waiter_t){NULL, cb, arg, ch, pt_snapshot_ref(w->snap)};
    *on->wtail = wt;
    on->wtail = &wt->next;
    on->n_waiters++;
    return 1;
}

static void pt__done(void *arg, const struct redisReply *reply, int err)
{
    pt__call_t *call = arg;
    long long granted = 0;
    uint32_t retry = 1;
    int verdict;
    if (err == 0 && pt_ratelimit_cluster_reply(reply, &granted, &retry) == 0) {
        pt_ratelimit_cluster_succeeded();
        verdict = granted > 0 ? PT_RLC_ALLOW : PT_RLC_LIMITED;
        if (call->cb) /* a decision, not a batch asked ahead */
            pt_metrics_inc(&pt_metrics_rl_decisions[granted > 0 ? PT_METRICS_RL_ALLOWED
                                                                : PT_METRICS_RL_LIMITED],
                           1);
    } else if (!call->cb) { /* a batch asked ahead: no request waits for it */
        pt_ratelimit_cluster_failed(err ? pt_redis_strerror(err) : "error reply");
        granted = 0;
        verdict = PT_RLC_ALLOW;
    } else {
        char what[160];
        if (err)
            snprintf(what, sizeof what, "%s", pt_redis_strerror(err));
        else if (reply && reply->type == REDIS_REPLY_ERROR)
            snprintf(what, sizeof what, "error reply: %.120s", reply->str);
        else
            snprintf(what, sizeof what, "unexpected reply to the rate limit script");
        pt_ratelimit_cluster_failed(what);
        granted = 0;
        verdict = pt__policy(call->ch, call->data + call->key_len + 1, call->local_len, &retry);
    }
    if (pt__inflight[call->slot] == call) pt__inflight[call->slot] = NULL;
    /* the waiters take theirs first, in order; the rest is the node's */
    uint32_t spent = call->cb && granted > 0 ? 1 : 0;
    pt__waiter_t *wt = call->waiters, *next;
    if (call->ch->rate_limit.batch > 1) {
        uint32_t served = 0;
        for (pt__waiter_t *x = wt; x && spent + served < granted; x = x->next)
            served++;
        pt_ratelimit_batch_done(call->data, call->key_len, call->counted, granted, spent + served,
                                uv_hrtime());
    }
    if (call->cb) call->cb(call->arg, call->ch, verdict, retry);
    int decided = reply_ok(err, reply);
    for (; wt; wt = next) {
        next = wt->next;
        int v;
        uint32_t r = 1;
        if (decided && spent < granted) {
            spent++;
            v = PT_RLC_ALLOW;
            pt_metrics_inc(&pt_metrics_rl_decisions[PT_METRICS_RL_BATCH], 1);
        } else if (decided) { /* fewer granted than asked: the bucket is empty */
            v = PT_RLC_LIMITED;
            r = retry;
            pt_metrics_inc(&pt_metrics_rl_decisions[PT_METRICS_RL_LIMITED], 1);
        } else {
            v = pt__policy(wt->ch, call->data + call->key_len + 1, call->local_len, &r);
        }
        wt->cb(wt->arg, wt->ch, v, r);
        pt_snapshot_release(wt->snap);
        free(wt);
    }
    pt_snapshot_release(call->snap);
    free(call);
}

/* The script's interval and burst in RESP, formatted once per limit and
 * thread (a %.17g costs thousands of instructions): a few entries keyed by
 * the limit's address, rate and burst (an address a reload reuses for
 * another limit with the same figures gives the same bytes). */
#define PT__ARGS_CACHE 8
static __thread struct {
    const pt_ratelimit_cfg_t *rl;
    double rate, burst;
    size_t len;
    char resp[PT_RLC_ARGS_MAX];
} pt__args[PT__ARGS_CACHE];

static const char *pt__args_of(const pt_ratelimit_cfg_t *rl, size_t *len)
{
    size_t i = ((uintptr_t)rl >> 4) % PT__ARGS_CACHE;
    if (pt__args[i].rl != rl || pt__args[i].rate != rl->rate || pt__args[i].burst != rl->burst) {
        pt__args[i].len = pt_ratelimit_cluster_args(rl, pt__args[i].resp);
        pt__args[i].rl = rl;
        pt__args[i].rate = rl->rate;
        pt__args[i].burst = rl->burst;
    }
    *len = pt__args[i].len;
    return pt__args[i].resp;
}

/* Sends the script for call (its data holds the key and the local name);
 * returns 0 or a PT_REDIS_E*. */
static int pt__send(pt_worker_t *w, pt__call_t *call)
{
    const pt_ratelimit_cfg_t *rl = &call->ch->rate_limit;
    pthread_once(&pt__script_once, pt__script_init);
    size_t args_len;
    const char *args = pt__args_of(rl, &args_len);
    char *tail = call->data + call->key_len + 1 + call->local_len;
    size_t tail_len =
        pt_ratelimit_cluster_tail(tail, call->data, call->key_len, args, args_len, call->want);
    call->snap = pt_snapshot_ref(w->snap);
    call->waiters = NULL;
    call->wtail = &call->waiters;
    call->n_waiters = 0;
    pt_redis_t *r = pt_redis_of_worker(w);
    int rc =
        r ? pt_redis_eval_formatted(r, &pt__script, 1, 4, tail, tail_len, &call->ev, pt__done, call)
          : PT_REDIS_EDOWN;
    if (rc != 0) {
        pt_snapshot_release(call->snap);
        return rc;
    }
    call->slot = rl->batch > 1 && call->want > 1 ? pt__inflight_slot(call->data, call->key_len)
                                                 : PT__INFLIGHT;
    if (call->slot < PT__INFLIGHT) pt__inflight[call->slot] = call; /* the latest wins */
    return 0;
}

/* A call for ch by user; NULL when out of memory. */
static pt__call_t *pt__call_new(pt_worker_t *w, const pt_channel_t *ch, const char *user)
{
    const char *prefix = w->cfg->cluster.key_prefix ? w->cfg->cluster.key_prefix : "portico:";
    size_t nlen = strlen(ch->name), ulen = strlen(user);
    size_t kcap = strlen(prefix) + nlen + ulen + 32;
    /* key, NUL, local name, RESP: the key again and the args */
    size_t bytes = sizeof(pt__call_t) + kcap + 1 + nlen + 1 + ulen + kcap + 32 + PT_RLC_ARGS_MAX;
    pt__call_t *call = malloc(bytes);
    if (!call) return NULL;
    int klen = pt_ratelimit_cluster_key(prefix, ch->name, user, call->data, kcap);
    call->key_len = klen > 0 ? (size_t)klen : 0;
    call->local_len = pt__local_key(ch, user, call->data + call->key_len + 1);
    call->ch = ch;
    call->cb = NULL;
    call->arg = NULL;
    call->want = call->counted = 1;
    call->slot = PT__INFLIGHT;
    return call;
}

/* Asks for want tokens of call's bucket ahead of need (batch: N), with no
 * request waiting; a failure only gives them up. Takes call over. */
static void pt__ask_ahead(pt_worker_t *w, pt__call_t *call, uint32_t want)
{
    call->want = call->counted = want;
    int rc = pt__send(w, call);
    if (rc == 0) return;
    pt_ratelimit_cluster_failed(pt_redis_strerror(rc));
    pt_ratelimit_batch_done(call->data, call->key_len, want, 0, 0, uv_hrtime());
    free(call);
}

int pt_ratelimit_cluster_take(pt_worker_t *w, const pt_channel_t *ch, const char *user,
                              pt_rlc_cb cb, void *arg, uint32_t *retry_after_s)
{
    const pt_ratelimit_cfg_t *rl = &ch->rate_limit;
    uint32_t want = 1;
    int took = 0, klen = 0;
    char kbuf[PT__KEY_MAX + 1];
    if (rl->batch > 1) { /* a token of the node's batch: no call, no allocation */
        const char *prefix = w->cfg->cluster.key_prefix ? w->cfg->cluster.key_prefix : "portico:";
        klen = pt_ratelimit_cluster_key(prefix, ch->name, user, kbuf, sizeof kbuf);
        if (klen > 0)
            took = pt_ratelimit_batch_take(kbuf, (size_t)klen, rl->batch, uv_hrtime(), &want);
        if (took) pt_metrics_inc(&pt_metrics_rl_decisions[PT_METRICS_RL_BATCH], 1);
        if (took && !want) return PT_RLC_ALLOW;
        /* none left and enough on its way: wait for it when it is this
         * worker's, else ask for one token of our own (counted nowhere) */
        if (!took && !want && klen > 0 && pt__join(w, kbuf, (size_t)klen, ch, cb, arg))
            return PT_RLC_WAIT;
    }
    pt__call_t *call = pt__call_new(w, ch, user);
    if (!call) { /* as scope: local does when out of memory */
        if (klen > 0) pt_ratelimit_batch_done(kbuf, (size_t)klen, want, 0, 0, uv_hrtime());
        pt_log_warn("cluster rate limit of %s: out of memory: let through", ch->name);
        return PT_RLC_ALLOW;
    }
    if (took) { /* let through; the next batch is asked for ahead */
        pt__ask_ahead(w, call, want);
        return PT_RLC_ALLOW;
    }
    call->want = want ? want : 1;
    call->counted = rl->batch > 1 && klen > 0 ? want : 0;
    call->cb = cb;
    call->arg = arg;
    int rc = pt__send(w, call);
    if (rc == 0) return PT_RLC_WAIT;

    /* known down (or no connection at all): the policy, at once */
    pt_ratelimit_cluster_failed(pt_redis_of_worker(w) ? pt_redis_strerror(rc)
                                                      : "no Redis connection on this worker");
    if (rl->batch > 1)
        pt_ratelimit_batch_done(call->data, call->key_len, call->counted, 0, 0, uv_hrtime());
    int verdict = pt__policy(ch, call->data + call->key_len + 1, call->local_len, retry_after_s);
    free(call);
    return verdict;
}
