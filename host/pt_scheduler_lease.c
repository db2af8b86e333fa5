#include "pt_scheduler_lease.h"
#include "pt_log.h"
#include "pt_redis.h"
#include "pt_util.h"

#include <hiredis/hiredis.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pt_sched_lease_s {
    pt_redis_t *redis; /* the main loop's (pt_redis_main), or one of its own */
    int own;
    char prefix[PT_CLUSTER_PREFIX_MAX + 1];
    char me[PT_CLUSTER_NODE_MAX + 32]; /* <node>/<instance> */
};

/* 1: run; 0: the tick is another node's; 2: a run of the job goes on elsewhere. */
static const char pt__claim_lua[] =
    "if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end\n"
    "if #KEYS > 1 and not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
    "  return 2\n"
    "end\n"
    "return 1\n";
static const char pt__renew_lua[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                    "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                                    "end\n"
                                    "return 0\n";
static const char pt__release_lua[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";
static pt_redis_script_t pt__claim, pt__renew, pt__release;
static uv_once_t pt__once = UV_ONCE_INIT;

static void pt__init(void)
{
    pt_redis_script_init(&pt__claim, pt__claim_lua);
    pt_redis_script_init(&pt__renew, pt__renew_lua);
    pt_redis_script_init(&pt__release, pt__release_lua);
}

pt_sched_lease_t *pt_sched_lease_new(uv_loop_t *loop, const pt_cluster_cfg_t *cc)
{
    uv_once(&pt__once, pt__init);
    pt_sched_lease_t *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    char inst[25];
    pt_cid_new(inst);
    snprintf(l->prefix, sizeof l->prefix, "%s", cc->key_prefix);
    snprintf(l->me, sizeof l->me, "%s/%s", cc->node, inst);
    if ((l->redis = pt_redis_main())) return l;
    l->own = 1;
    if (!(l->redis = pt_redis_new(loop, cc))) {
        free(l);
        return NULL;
    }
    return l;
}

typedef struct {
    pt_sched_lease_cb cb;
    void *arg;
} pt__claim_t;

static void pt__on_claim(void *arg, const struct redisReply *r, int err)
{
    pt__claim_t *c = arg;
    int verdict = PT_LEASE_ERROR;
    const char *why = NULL;
    if (err || !r)
        why = pt_redis_strerror(err);
    else if (r->type == REDIS_REPLY_ERROR)
        why = r->str;
    else if (r->type != REDIS_REPLY_INTEGER)
        why = "an answer of an unexpected type";
    else
        verdict = r->integer == 1   ? PT_LEASE_RUN
                  : r->integer == 2 ? PT_LEASE_BUSY
                                    : PT_LEASE_ELSEWHERE;
    c->cb(c->arg, verdict, why);
    free(c);
}

int pt_sched_lease_claim(pt_sched_lease_t *l, const char *job, int64_t due_ms, uint64_t lease_ms,
                         int hold_run, pt_sched_lease_cb cb, void *arg)
{
    char tick[PT_CLUSTER_PREFIX_MAX + 128], run[PT_CLUSTER_PREFIX_MAX + 96], px[24];
    pt__claim_t *c = malloc(sizeof *c);
    if (!c) return -1;
    c->cb = cb, c->arg = arg;
    int tl = snprintf(tick, sizeof tick, "%sjob:%s:%lld", l->prefix, job, (long long)due_ms);
    int rl = snprintf(run, sizeof run, "%sjob:%s:run", l->prefix, job);
    int pl = snprintf(px, sizeof px, "%llu", (unsigned long long)lease_ms);
    const char *argv[4], *me = l->me;
    size_t lens[4];
    int n = 0, nkeys = hold_run ? 2 : 1;
    argv[n] = tick, lens[n++] = (size_t)tl;
    if (hold_run) argv[n] = run, lens[n++] = (size_t)rl;
    argv[n] = me, lens[n++] = strlen(me);
    argv[n] = px, lens[n++] = (size_t)pl;
    if (pt_redis_eval(l->redis, &pt__claim, nkeys, n, argv, lens, pt__on_claim, c) != 0) {
        free(c);
        return -1;
    }
    return 0;
}

static void pt__on_renew(void *arg, const struct redisReply *r, int err)
{
    const char *what = arg;
    if (err || !r)
        pt_log_warn("scheduler: %s of a run lease failed: %s", what, pt_redis_strerror(err));
    else if (r->type == REDIS_REPLY_ERROR)
        pt_log_warn("scheduler: %s of a run lease failed: %s", what, r->str);
}

static void pt__own(pt_sched_lease_t *l, pt_redis_script_t *s, const char *job, uint64_t lease_ms,
                    const char *what)
{
    char run[PT_CLUSTER_PREFIX_MAX + 96], px[24];
    int rl = snprintf(run, sizeof run, "%sjob:%s:run", l->prefix, job);
    int pl = snprintf(px, sizeof px, "%llu", (unsigned long long)lease_ms);
    const char *argv[] = {run, l->me, px};
    size_t lens[] = {(size_t)rl, strlen(l->me), (size_t)pl};
    if (pt_redis_eval(l->redis, s, 1, lease_ms ? 3 : 2, argv, lens, pt__on_renew, (void *)what) !=
        0)
        pt_log_warn("scheduler: %s of job '%s''s run lease could not be sent", what, job);
}

void pt_sched_lease_renew(pt_sched_lease_t *l, const char *job, uint64_t lease_ms)
{
    pt__own(l, &pt__renew, job, lease_ms, "the renewal");
}

void pt_sched_lease_release(pt_sched_lease_t *l, const char *job)
{
    pt__own(l, &pt__release, job, 0, "the release");
}

void pt_sched_lease_free(pt_sched_lease_t *l)
{
    if (!l) return;
    if (l->own) pt_redis_free(l->redis);
    free(l);
}
