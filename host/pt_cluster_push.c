#include "pt_cluster_push.h"
#include "pt_json.h"
#include "pt_log.h"
#include "pt_redis.h"
#include "pt_worker.h"
#include "pt_ws.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The process's side of the cluster's pushes. The instance id is made once;
 * the subscriber lives on the main loop. */
static pthread_once_t pt__once = PTHREAD_ONCE_INIT;
static char pt__instance[25];
static pt_redis_t *pt__sub;
static int pt__used; /* a frame was ever published or the subscriber made: show the metrics */
static uint64_t pt__published, pt__received, pt__own, pt__failures, pt__bad; /* atomics */
static int64_t pt__warned_s;
static char pt__node[PT_CLUSTER_NODE_MAX + 1], pt__prefix[PT_CLUSTER_PREFIX_MAX + 1];
static int pt__named; /* atomic: pt__node and pt__prefix are set */

static void pt__init(void)
{
    pt_cid_new(pt__instance);
}

static void pt__bump(uint64_t *x)
{
    __atomic_add_fetch(x, 1, __ATOMIC_RELAXED);
}

static void pt__warn(const char *what)
{
    int64_t now = (int64_t)time(NULL), last = __atomic_load_n(&pt__warned_s, __ATOMIC_RELAXED);
    if (now != last && __atomic_compare_exchange_n(&pt__warned_s, &last, now, 0, __ATOMIC_RELAXED,
                                                   __ATOMIC_RELAXED))
        pt_log_warn("cluster push: %s (counted in portico_ws_cluster_failures_total)", what);
}

/* ---- this process's sockets ---- */

/* One push on its way to one worker: owns copies of everything, since it
 * runs later on that worker's loop. */
typedef struct {
    char *channel;
    char *username; /* NULL: everyone on the channel */
    size_t len;
    char text[];
} pt__push_t;

static void pt__push_free(pt__push_t *p)
{
    free(p->channel);
    free(p->username);
    free(p);
}

static void pt__push_on_worker(pt_worker_t *w, void *arg)
{
    pt__push_t *p = arg;
    if (w->lua) /* NULL when the worker has ended: only free */
        pt_ws_push(w, p->channel, p->username, p->text, p->len);
    pt__push_free(p);
}

static pt__push_t *pt__push_new(const char *channel, size_t clen, const char *user, size_t ulen,
                                const char *text, size_t len)
{
    pt__push_t *p = malloc(sizeof *p + len + 1);
    if (!p) return NULL;
    p->channel = strndup(channel, clen);
    p->username = user ? strndup(user, ulen) : NULL;
    p->len = len;
    memcpy(p->text, text, len);
    p->text[len] = '\0';
    if (!p->channel || (user && !p->username)) {
        pt__push_free(p);
        return NULL;
    }
    return p;
}

static int pt__fanout(const char *channel, size_t clen, const char *user, size_t ulen,
                      const char *text, size_t len)
{
    int n = 0, count = 0;
    pt_worker_t *all = pt_worker_all(&n);
    for (int i = 0; i < n; i++) {
        pt__push_t *p = pt__push_new(channel, clen, user, ulen, text, len);
        if (!p) break;
        if (pt_worker_call(&all[i], pt__push_on_worker, p) == 0)
            count++;
        else
            pt__push_free(p);
    }
    return count;
}

int pt_cluster_push_fanout(const char *channel, const char *username, const char *text, size_t len)
{
    return pt__fanout(channel, strlen(channel), username, username ? strlen(username) : 0, text,
                      len);
}

/* ---- publishing ---- */

static void pt__on_published(void *arg, const struct redisReply *reply, int err)
{
    (void)arg;
    if (err) {
        pt__bump(&pt__failures);
        pt__warn(pt_redis_strerror(err));
    }
}

int pt_cluster_push_publish(pt_worker_t *w, const char *channel, const char *username,
                            const char *text, size_t len, char *err, size_t errlen)
{
    if (!pt_cluster_push_fits(len)) {
        snprintf(err, errlen,
                 "the message is %zu bytes, more than a push may carry across the cluster (%u)",
                 len, PT_CLUSTER_PUSH_MAX);
        return -1;
    }
    pthread_once(&pt__once, pt__init);
    __atomic_store_n(&pt__used, 1, __ATOMIC_RELAXED);
    pt_redis_t *r = pt_redis_of_worker(w);
    /* the start config's names (the section is read at start only), once
     * pt_cluster_push_apply has them; the worker's until then */
    const char *node = w->cfg->cluster.node, *prefix = w->cfg->cluster.key_prefix;
    if (__atomic_load_n(&pt__named, __ATOMIC_ACQUIRE)) node = pt__node, prefix = pt__prefix;
    if (!node || !prefix) return 0; /* the worker's config has no cluster: nothing to name */
    size_t ilen = strlen(pt__instance), nlen = strlen(node), clen = strlen(channel);
    char head[128];
    int hlen = snprintf(head, sizeof head, "PTWS1 %zu %zu %zu %lld\n", ilen, nlen, clen,
                        username ? (long long)strlen(username) : -1LL);
    size_t ulen = username ? strlen(username) : 0;
    size_t total = (size_t)hlen + ilen + nlen + clen + ulen + len;
    char *frame = malloc(total);
    char chan[PT_CLUSTER_PREFIX_MAX + 8];
    if (!frame) {
        pt__bump(&pt__failures);
        return 0; /* counted: the local sockets have it */
    }
    char *p = frame;
    memcpy(p, head, (size_t)hlen), p += hlen;
    memcpy(p, pt__instance, ilen), p += ilen;
    memcpy(p, node, nlen), p += nlen;
    memcpy(p, channel, clen), p += clen;
    if (ulen) memcpy(p, username, ulen), p += ulen;
    memcpy(p, text, len);
    int chlen = snprintf(chan, sizeof chan, "%sws", prefix);
    const char *argv[] = {"PUBLISH", chan, frame};
    size_t lens[] = {7, (size_t)chlen, total};
    if (!r || pt_redis_command(r, 3, argv, lens, pt__on_published, NULL) != 0) {
        pt__bump(&pt__failures);
        pt__warn("the frame could not be sent to Redis");
    } else {
        pt__bump(&pt__published);
    }
    free(frame); /* the command holds its own copy of the bytes */
    return 0;
}

/* ---- the subscriber ---- */

/* Reads a decimal count ending in ' ' or '\n' at *p; -2 on a bad one. */
static long long pt__num(const char **p, const char *end, char stop)
{
    const char *s = *p;
    int neg = 0;
    long long v = 0;
    if (s < end && *s == '-') neg = 1, s++;
    const char *digits = s;
    while (s < end && *s >= '0' && *s <= '9' && v < (1LL << 40))
        v = v * 10 + (*s++ - '0');
    if (s == digits || s >= end || *s != stop) return -2;
    *p = s + 1;
    return neg ? -v : v;
}

static void pt__on_frame(void *arg, const char *channel, const char *data, size_t len)
{
    (void)arg, (void)channel;
    const char *p = data, *end = data + len;
    if (len < 6 || memcmp(p, "PTWS1 ", 6) != 0) goto bad;
    p += 6;
    long long il = pt__num(&p, end, ' '), nl = pt__num(&p, end, ' '), cl = pt__num(&p, end, ' '),
              ul = pt__num(&p, end, '\n');
    if (il < 0 || nl < 0 || cl < 1 || ul < -1) goto bad;
    if ((size_t)(end - p) < (size_t)il + (size_t)nl + (size_t)cl + (size_t)(ul > 0 ? ul : 0))
        goto bad;
    const char *inst = p, *ch = p + il + nl, *user = ch + cl;
    const char *text = user + (ul > 0 ? ul : 0);
    size_t tlen = (size_t)(end - text);
    if ((size_t)il == strlen(pt__instance) && memcmp(inst, pt__instance, (size_t)il) == 0) {
        pt__bump(&pt__own); /* this process delivered it locally already */
        return;
    }
    if (tlen > PT_CLUSTER_PUSH_MAX || pt_utf8_check(text, tlen, NULL) != 0) goto bad;
    pt__bump(&pt__received);
    pt__fanout(ch, (size_t)cl, ul >= 0 ? user : NULL, ul > 0 ? (size_t)ul : 0, text, tlen);
    return;
bad:
    pt__bump(&pt__bad);
    pt__warn("a frame on the push channel is not one of portico's: dropped");
}

int pt_cluster_push_apply(uv_loop_t *loop, const pt_config_t *cfg, const pt_cluster_cfg_t *cc)
{
    if (!cc->on) return 0;
    if (!__atomic_load_n(&pt__named, __ATOMIC_RELAXED)) {
        snprintf(pt__node, sizeof pt__node, "%s", cc->node);
        snprintf(pt__prefix, sizeof pt__prefix, "%s", cc->key_prefix);
        __atomic_store_n(&pt__named, 1, __ATOMIC_RELEASE);
    }
    if (pt__sub) return 0;
    size_t i;
    for (i = 0; i < cfg->n_channels; i++)
        if (cfg->channels[i].type == PT_CHANNEL_WEBSOCKET) break;
    if (i == cfg->n_channels) return 0; /* no socket to deliver to: no subscriber */
    pthread_once(&pt__once, pt__init);
    char chan[PT_CLUSTER_PREFIX_MAX + 8];
    snprintf(chan, sizeof chan, "%sws", cc->key_prefix);
    if (!(pt__sub = pt_redis_subscriber_new(loop, cc, chan, pt__on_frame, NULL))) {
        pt_log_error("cluster push: out of memory: pushes of other nodes do not reach this one");
        return -1;
    }
    __atomic_store_n(&pt__used, 1, __ATOMIC_RELAXED);
    pt_log_info("cluster push: subscribed to %s (instance %s)", chan, pt__instance);
    return 0;
}

void pt_cluster_push_stop(void)
{
    pt_redis_free(pt__sub);
    pt__sub = NULL;
}

void pt_cluster_push_metrics(pt_buf_t *out)
{
    if (!__atomic_load_n(&pt__used, __ATOMIC_RELAXED)) return;
    static const struct {
        const char *name, *help;
        uint64_t *v;
    } m[] = {
        {"portico_ws_cluster_published_total", "WebSocket pushes published to the other nodes.",
         &pt__published},
        {"portico_ws_cluster_received_total",
         "WebSocket pushes of other nodes delivered to this node's sockets.", &pt__received},
        {"portico_ws_cluster_own_total",
         "Frames of this process that came back from Redis (skipped: delivered locally).",
         &pt__own},
        {"portico_ws_cluster_failures_total",
         "WebSocket pushes that could not be published (Redis down or too slow).", &pt__failures},
        {"portico_ws_cluster_bad_frames_total", "Frames on the push channel that were dropped.",
         &pt__bad},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        pt_buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", m[i].name, m[i].help,
                      m[i].name, m[i].name,
                      (unsigned long long)__atomic_load_n(m[i].v, __ATOMIC_RELAXED));
}
