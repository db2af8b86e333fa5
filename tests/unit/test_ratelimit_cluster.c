/* pt_ratelimit_cluster: the pure parts of cluster-wide rate limits (the
 * Redis key, the script's arguments, its reply, the node's batches) and
 * the scope / on_redis_error / batch config keys. The script itself runs
 * against a real redis-server in tests/integration/test_cluster_ratelimit.py. */
#include "pt_config.h"
#include "pt_ratelimit_cluster.h"
#include "pt_test.h"
#include "pt_test_config.h"

#include <hiredis/hiredis.h>

#define S 1000000000ull /* ns */

PT_CASE(key)
{
    char buf[64];
    PT_CHECK_INT(pt_ratelimit_cluster_key("portico:", "api.echo", "", buf, sizeof buf), 21);
    PT_CHECK_STR(buf, "portico:rl:8:api.echo");
    PT_CHECK_INT(pt_ratelimit_cluster_key("p:", "api.echo", "alice", buf, sizeof buf), 21);
    PT_CHECK_STR(buf, "p:rl:8:api.echo:alice");
    /* a ':' in a name cannot make two buckets one */
    char other[64];
    pt_ratelimit_cluster_key("p:", "a:b", "c", buf, sizeof buf);
    pt_ratelimit_cluster_key("p:", "a", "b:c", other, sizeof other);
    PT_CHECK(strcmp(buf, other) != 0);
    /* too long for the buffer: refused, not cut */
    PT_CHECK_INT(pt_ratelimit_cluster_key("portico:", "api.echo", "alice", buf, 21), -1);
}

PT_CASE(argv)
{
    pt_ratelimit_cfg_t rl = {.rate = 3, .burst = 20, .cluster = 1, .batch = 1};
    char interval[32], burst[16], want[16];
    pt_ratelimit_cluster_argv(&rl, interval, burst, want);
    PT_CHECK(strtod(interval, NULL) == 1e6 / 3); /* exact: read back as the same double */
    PT_CHECK_STR(burst, "20");
    PT_CHECK_STR(want, "1");
    rl.rate = 100000;
    rl.batch = 100;
    pt_ratelimit_cluster_argv(&rl, interval, burst, want);
    PT_CHECK_STR(interval, "10");
    PT_CHECK_STR(want, "100");
}

PT_CASE(resp)
{
    /* what goes after "EVALSHA sha 1": the key, the cached args, the tokens wanted */
    pt_ratelimit_cfg_t rl = {.rate = 100, .burst = 200, .cluster = 1, .batch = 1};
    char args[PT_RLC_ARGS_MAX], buf[256];
    size_t n = pt_ratelimit_cluster_args(&rl, args);
    PT_CHECK_INT(n, strlen("$5\r\n10000\r\n$3\r\n200\r\n"));
    PT_CHECK(memcmp(args, "$5\r\n10000\r\n$3\r\n200\r\n", n) == 0);
    size_t t = pt_ratelimit_cluster_tail(buf, "p:rl:1:a", 8, args, n, 100);
    buf[t] = '\0';
    PT_CHECK_STR(buf, "$8\r\np:rl:1:a\r\n$5\r\n10000\r\n$3\r\n200\r\n$3\r\n100\r\n");
}

static redisReply *integer(long long v)
{
    redisReply *r = calloc(1, sizeof *r);
    r->type = REDIS_REPLY_INTEGER;
    r->integer = v;
    return r;
}

PT_CASE(reply)
{
    redisReply *el[2] = {integer(1), integer(0)};
    redisReply arr = {.type = REDIS_REPLY_ARRAY, .elements = 2, .element = el};
    long long granted = -1;
    uint32_t retry = 0;
    PT_CHECK_INT(pt_ratelimit_cluster_reply(&arr, &granted, &retry), 0);
    PT_CHECK_INT(granted, 1);
    /* refused: the wait in whole seconds, at least 1 */
    el[0]->integer = 0;
    el[1]->integer = 250000;
    PT_CHECK_INT(pt_ratelimit_cluster_reply(&arr, &granted, &retry), 0);
    PT_CHECK_INT(granted, 0);
    PT_CHECK_INT(retry, 1);
    el[1]->integer = 2000001;
    PT_CHECK_INT(pt_ratelimit_cluster_reply(&arr, &granted, &retry), 0);
    PT_CHECK_INT(retry, 3);
    el[1]->integer = -5; /* a rounding on Redis's side */
    PT_CHECK_INT(pt_ratelimit_cluster_reply(&arr, &granted, &retry), 0);
    PT_CHECK_INT(retry, 1);
    /* anything else is not the script's reply */
    redisReply err = {.type = REDIS_REPLY_ERROR, .str = "ERR oops", .len = 8};
    PT_CHECK_INT(pt_ratelimit_cluster_reply(&err, &granted, &retry), -1);
    PT_CHECK_INT(pt_ratelimit_cluster_reply(NULL, &granted, &retry), -1);
    arr.elements = 1;
    PT_CHECK_INT(pt_ratelimit_cluster_reply(&arr, &granted, &retry), -1);
    arr.elements = 2;
    el[0]->type = REDIS_REPLY_STRING;
    PT_CHECK_INT(pt_ratelimit_cluster_reply(&arr, &granted, &retry), -1);
    el[0]->type = REDIS_REPLY_INTEGER;
    el[0]->integer = -1;
    PT_CHECK_INT(pt_ratelimit_cluster_reply(&arr, &granted, &retry), -1);
    free(el[0]);
    free(el[1]);
}

PT_CASE(batch)
{
    const char *k = "p:rl:1:a";
    size_t n = strlen(k);
    uint64_t t0 = 1000 * S;
    uint32_t want = 0;
    /* nothing held: ask Redis for a whole batch */
    PT_CHECK_INT(pt_ratelimit_batch_take(k, n, 10, t0, &want), 0);
    PT_CHECK_INT(want, 10);
    /* while it is under way, the next request is covered by it (held and
     * asked for stay within N): it waits for it, or asks for one token
     * counted nowhere */
    PT_CHECK_INT(pt_ratelimit_batch_take(k, n, 10, t0, &want), 0);
    PT_CHECK_INT(want, 0);
    /* the batch came: 10 granted, one is the caller's, 9 are kept */
    pt_ratelimit_batch_done(k, n, 10, 10, 1, t0);
    pt_ratelimit_batch_done(k, n, 0, 1, 1, t0); /* the single one: nothing left over */
    for (int i = 0; i < 3; i++) {
        PT_CHECK_INT(pt_ratelimit_batch_take(k, n, 10, t0 + i, &want), 1);
        PT_CHECK_INT(want, 0);
    }
    /* half spent (5 left): the next batch is asked for ahead, once */
    PT_CHECK_INT(pt_ratelimit_batch_take(k, n, 10, t0 + 5, &want), 1);
    PT_CHECK_INT(want, 5); /* 5 held + 5 asked for = N */
    PT_CHECK_INT(pt_ratelimit_batch_take(k, n, 10, t0 + 6, &want), 1);
    PT_CHECK_INT(want, 0);
    /* it came (no request took one of it): 4 held + 5 */
    pt_ratelimit_batch_done(k, n, 5, 5, 0, t0 + 7);
    uint32_t ahead = 0;
    for (int i = 0; i < 9; i++) {
        PT_CHECK_INT(pt_ratelimit_batch_take(k, n, 10, t0 + 8, &want), 1);
        ahead += want;
    }
    PT_CHECK_INT(ahead, 5);                             /* asked ahead once more, at 5 left */
    pt_ratelimit_batch_done(k, n, ahead, 0, 0, t0 + 8); /* and that call failed */
    PT_CHECK_INT(pt_ratelimit_batch_take(k, n, 10, t0 + 9, &want), 0);
    PT_CHECK_INT(want, 10);
    /* Redis granted fewer than asked (the bucket was nearly empty) */
    pt_ratelimit_batch_done(k, n, 10, 3, 1, t0 + 20);
    PT_CHECK_INT(pt_ratelimit_batch_take(k, n, 10, t0 + 30, &want), 1);
    PT_CHECK_INT(want, 9);                           /* 1 left: ask ahead */
    pt_ratelimit_batch_done(k, n, 9, 0, 0, t0 + 35); /* refused: nothing */
    PT_CHECK_INT(pt_ratelimit_batch_take(k, n, 10, t0 + 40, &want), 1);
    PT_CHECK_INT(want, 10); /* none left, none on its way */
    pt_ratelimit_batch_done(k, n, 10, 0, 0, t0 + 40);
    PT_CHECK_INT(pt_ratelimit_batch_take(k, n, 10, t0 + 40, &want), 0);
    PT_CHECK_INT(want, 10);
    /* a failed call gives nothing and frees what it had asked for */
    pt_ratelimit_batch_done(k, n, 10, 0, 1, t0 + 40);
    PT_CHECK_INT(pt_ratelimit_batch_take(k, n, 10, t0 + 50, &want), 0);
    PT_CHECK_INT(want, 10);
    /* unspent tokens are dropped after a second */
    pt_ratelimit_batch_done(k, n, 10, 10, 1, t0 + 60);
    PT_CHECK_INT(pt_ratelimit_batch_take(k, n, 10, t0 + 60 + S / 2, &want), 1);
    PT_CHECK_INT(pt_ratelimit_batch_take(k, n, 10, t0 + 60 + S + 1, &want), 0);
    /* batch 1 keeps nothing */
    PT_CHECK_INT(pt_ratelimit_batch_take("p:rl:1:b", 8, 1, t0, &want), 0);
    PT_CHECK_INT(want, 1);
}

#define CLUSTER "cluster:\n  redis: redis://127.0.0.1:6379/0\n"
#define HEAD                                                                                       \
    "channels:\n  rest:\n    - name: a\n      url_path: /a\n      service: s\n      rate_limit: "

PT_CASE(config)
{
    pt_config_t *cfg = NULL;
    char err[512] = "";
    PT_CHECK_INT(pt_test_load(CLUSTER HEAD "{rate: 100/s, burst: 200, per: user, scope: cluster}\n"
                                           "    - name: b\n      url_path: /b\n      service: s\n"
                                           "      rate_limit: {rate: 10, scope: cluster, "
                                           "on_redis_error: fail_closed, batch: 5}\n"
                                           "    - name: c\n      url_path: /c\n      service: s\n"
                                           "      rate_limit: {rate: 10, scope: local}\n",
                              &cfg, err, sizeof err),
                 0);
    if (cfg) {
        const pt_ratelimit_cfg_t *a = &cfg->channels[0].rate_limit;
        const pt_ratelimit_cfg_t *b = &cfg->channels[1].rate_limit;
        const pt_ratelimit_cfg_t *c = &cfg->channels[2].rate_limit;
        PT_CHECK_INT(a->cluster, 1);
        PT_CHECK_INT(a->fail_closed, 0); /* fail_open is the default */
        PT_CHECK_INT(a->batch, 1);
        PT_CHECK(a->burst == 200);
        PT_CHECK_INT(b->cluster, 1);
        PT_CHECK_INT(b->fail_closed, 1);
        PT_CHECK_INT(b->batch, 5);
        PT_CHECK_INT(c->cluster, 0);
        pt_config_free(cfg);
    } else {
        fprintf(stderr, "  %s\n", err);
    }
    /* each bad value refused at its line */
    PT_CHECK(pt_test_fails_with(CLUSTER HEAD "{rate: 1, scope: global}\n",
                                ".yaml:8: channels.rest[0].rate_limit.scope: expected local or "
                                "cluster"));
    PT_CHECK(pt_test_fails_with(CLUSTER HEAD "{rate: 1, scope: cluster, on_redis_error: ignore}\n",
                                ".yaml:8: channels.rest[0].rate_limit.on_redis_error: expected "
                                "fail_open or fail_closed"));
    PT_CHECK(pt_test_fails_with(CLUSTER HEAD "{rate: 1, on_redis_error: fail_closed}\n",
                                "rate_limit.on_redis_error: only with scope: cluster"));
    PT_CHECK(pt_test_fails_with(CLUSTER HEAD "{rate: 10, batch: 5}\n",
                                "rate_limit.batch: only with scope: cluster"));
    PT_CHECK(pt_test_fails_with(CLUSTER HEAD "{rate: 10, scope: cluster, batch: 0}\n",
                                "rate_limit.batch: a whole number from 1 to 10000"));
    PT_CHECK(pt_test_fails_with(CLUSTER HEAD "{rate: 10, scope: cluster, batch: many}\n",
                                "rate_limit.batch: a whole number"));
    PT_CHECK(pt_test_fails_with(CLUSTER HEAD "{rate: 10, burst: 20, scope: cluster, batch: 50}\n",
                                "rate_limit.batch: at most burst (20)"));
    /* scope: cluster needs the Redis of a cluster: section */
    PT_CHECK(pt_test_fails_with(HEAD "{rate: 10, scope: cluster}\n",
                                ".yaml:6: channels.rest[0].rate_limit.scope: cluster needs a "
                                "cluster: section"));
}

int main(void)
{
    PT_RUN(key);
    PT_RUN(argv);
    PT_RUN(resp);
    PT_RUN(reply);
    PT_RUN(batch);
    PT_RUN(config);
    return PT_TEST_DONE();
}
