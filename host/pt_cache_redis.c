#include "pt_cache_redis.h"
#include "pt_cache_mem.h"
#include "pt_cache_set.h"
#include "pt_log.h"
#include "pt_redis.h"

#include <hiredis/hiredis.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    pt_cache_t base;
    pt_cache_t *near; /* NULL: no near cache */
    uint64_t ttl_ms;  /* atomic: the cache's default ttl */
    uint64_t near_ttl_ms;
    uint64_t writes; /* atomic: writes of this process, so an overtaken read stores nothing */
    uint64_t hits, misses, sets, failures; /* atomics */
    int64_t warned_s;                      /* atomic: the last failure logged */
    size_t prefix_len;
    char prefix[]; /* <key_prefix>cache:<name>: */
} pt__rc_t;

enum { PT__GET, PT__SET, PT__ADD, PT__INCR, PT__DEL, PT__EXPIRE };

/* One command in flight: owns copies of what its completion needs (the
 * coroutine that called may be cancelled and its strings collected). */
typedef struct {
    pt__rc_t *c;
    pt_cache_call_t *call;
    int op;
    uint64_t writes;    /* GET: c->writes when it was sent */
    uint64_t ttl_ms;    /* SET/ADD: the entry's ttl (0: none), which bounds the near copy's */
    size_t klen;        /* the full key (prefix + key) is data[0..klen) */
    pt_cache_value_t v; /* SET/ADD: the value, for the near cache */
    char data[];
} pt__req_t;

static const char pt__incr_lua[] =
    "local e = redis.call('EXISTS', KEYS[1])\n"
    "local v = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])\n"
    "if e == 0 and ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end\n"
    "return v\n";
static const char pt__expire_lua[] = "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
                                     "if ARGV[1] == '0' then redis.call('PERSIST', KEYS[1])\n"
                                     "else redis.call('PEXPIRE', KEYS[1], ARGV[1]) end\n"
                                     "return 1\n";
static pt_redis_script_t pt__incr_script, pt__expire_script;

static void pt__add(uint64_t *x, uint64_t n)
{
    __atomic_add_fetch(x, n, __ATOMIC_RELAXED);
}

static uint64_t pt__load(const uint64_t *x)
{
    return __atomic_load_n(x, __ATOMIC_RELAXED);
}

static int pt__fail(pt__rc_t *c, pt_cache_call_t *call, const char *what)
{
    pt__add(&c->failures, 1);
    snprintf(call->err, sizeof call->err, "Redis: %s", what);
    int64_t now = (int64_t)time(NULL), last = __atomic_load_n(&c->warned_s, __ATOMIC_RELAXED);
    if (now != last && __atomic_compare_exchange_n(&c->warned_s, &last, now, 0, __ATOMIC_RELAXED,
                                                   __ATOMIC_RELAXED))
        pt_log_warn("cache '%s': %s (counted in portico_cache_failures_total)", c->base.name,
                    call->err);
    return PT_CACHE_EBACKEND;
}

static int pt__check(size_t klen, uint64_t ttl_ms)
{
    return klen >= 1 && klen <= PT_CACHE_KEY_MAX && ttl_ms <= PT_CACHE_TTL_MAX_MS ? 0
                                                                                  : PT_CACHE_EINVAL;
}

/* The value's bytes as stored in Redis, into out (at least 32 bytes for
 * a number or boolean); returns their length. */
static size_t pt__encode(const pt_cache_value_t *v, char *out)
{
    switch (v->type) {
    case PT_CACHE_NUMBER:
        return (size_t)snprintf(out, 32, "%.17g", v->number);
    case PT_CACHE_BOOLEAN:
        out[0] = 'b', out[1] = v->boolean ? '1' : '0';
        return 2;
    default:
        out[0] = v->type == PT_CACHE_JSON ? 'j' : 's';
        memcpy(out + 1, v->data, v->len);
        return v->len + 1;
    }
}

/* Stored bytes back into a value (pointing into s). */
static void pt__decode(const char *s, size_t len, pt_cache_value_t *v)
{
    memset(v, 0, sizeof *v);
    if (len >= 1 && (s[0] == 's' || s[0] == 'j')) {
        v->type = s[0] == 'j' ? PT_CACHE_JSON : PT_CACHE_STRING;
        v->data = s + 1, v->len = len - 1;
        return;
    }
    if (len == 2 && s[0] == 'b' && (s[1] == '0' || s[1] == '1')) {
        v->type = PT_CACHE_BOOLEAN, v->boolean = s[1] == '1';
        return;
    }
    char num[64], *end;
    if (len > 0 && len < sizeof num) {
        memcpy(num, s, len);
        num[len] = '\0';
        double d = strtod(num, &end);
        if (*end == '\0' && isfinite(d)) {
            v->type = PT_CACHE_NUMBER, v->number = d;
            return;
        }
    }
    v->type = PT_CACHE_STRING; /* not one of ours: its bytes as they are */
    v->data = s, v->len = len;
}

/* A request for key with room for extra bytes after the full key. */
static pt__req_t *pt__req(pt__rc_t *c, pt_cache_call_t *call, int op, const char *key, size_t klen,
                          size_t extra)
{
    pt__req_t *q = malloc(sizeof *q + c->prefix_len + klen + extra);
    if (!q) return NULL;
    memset(q, 0, sizeof *q);
    q->c = c, q->call = call, q->op = op;
    memcpy(q->data, c->prefix, c->prefix_len);
    memcpy(q->data + c->prefix_len, key, klen);
    q->klen = c->prefix_len + klen;
    return q;
}

static const char *pt__key(const pt__req_t *q, size_t *len)
{
    *len = q->klen - q->c->prefix_len;
    return q->data + q->c->prefix_len;
}

static void pt__near_drop(pt__req_t *q)
{
    size_t len;
    const char *key = pt__key(q, &len);
    if (q->c->near) q->c->near->ops->del(q->c->near, key, len);
}

static void pt__near_put(pt__req_t *q, const pt_cache_value_t *v)
{
    size_t len;
    const char *key = pt__key(q, &len);
    uint64_t ttl = q->c->near_ttl_ms;
    if (q->ttl_ms && q->ttl_ms < ttl) ttl = q->ttl_ms;
    if (q->c->near) q->c->near->ops->set(q->c->near, key, len, v, ttl, 0);
}

/* What an error reply means for op. */
static int pt__reply_error(pt__req_t *q, const char *msg)
{
    if (q->op == PT__INCR && strstr(msg, "not a valid float")) return PT_CACHE_ENOTNUM;
    if (q->op == PT__INCR && strstr(msg, "NaN or Infinity")) return PT_CACHE_ERANGE;
    return pt__fail(q->c, q->call, msg);
}

static int pt__answer(pt__req_t *q, const redisReply *r)
{
    pt__rc_t *c = q->c;
    pt_cache_call_t *call = q->call;
    if (r->type == REDIS_REPLY_ERROR) return pt__reply_error(q, r->str);
    switch (q->op) {
    case PT__GET:
        if (r->type == REDIS_REPLY_NIL) {
            pt__add(&c->misses, 1);
            return PT_CACHE_MISS;
        }
        if (r->type != REDIS_REPLY_STRING) break;
        pt__decode(r->str, r->len, &call->value);
        pt__add(&c->hits, 1);
        if (pt__load(&c->writes) == q->writes) pt__near_put(q, &call->value);
        return PT_CACHE_OK;
    case PT__SET:
    case PT__ADD:
        if (r->type == REDIS_REPLY_NIL && q->op == PT__ADD) return PT_CACHE_EXISTS;
        if (r->type != REDIS_REPLY_STATUS) break;
        pt__add(&c->sets, 1);
        pt__near_put(q, &q->v);
        return PT_CACHE_OK;
    case PT__INCR: {
        if (r->type != REDIS_REPLY_STRING) break;
        pt_cache_value_t v;
        pt__decode(r->str, r->len, &v);
        if (v.type != PT_CACHE_NUMBER) break;
        call->number = v.number;
        pt__add(&c->sets, 1);
        return PT_CACHE_OK;
    }
    case PT__DEL:
    case PT__EXPIRE:
        if (r->type != REDIS_REPLY_INTEGER) break;
        return r->integer > 0 ? PT_CACHE_OK : PT_CACHE_MISS;
    }
    return pt__fail(c, call, "an answer of an unexpected type");
}

static void pt__on_reply(void *arg, const struct redisReply *r, int err)
{
    pt__req_t *q = arg;
    pt_cache_call_t *call = q->call;
    int rc;
    if (q->op != PT__GET) {
        /* a write: another read of this process may have stored the old value meanwhile */
        pt__add(&q->c->writes, 1);
        pt__near_drop(q);
    }
    if (err || !r)
        rc = pt__fail(q->c, call, pt_redis_strerror(err));
    else
        rc = pt__answer(q, r);
    call->done(call, rc); /* may free the cache: nothing of it is touched after */
    free(q);
}

/* Sends q's command; an immediate failure frees q and is the answer. */
static int pt__send(pt__req_t *q, pt_redis_script_t *script, int argc, const char **argv,
                    const size_t *lens)
{
    pt_redis_t *r = q->call->conn;
    int rc = !r       ? -1
             : script ? pt_redis_eval(r, script, 1, argc, argv, lens, pt__on_reply, q)
                      : pt_redis_command(r, argc, argv, lens, pt__on_reply, q);
    if (rc == 0) {
        if (q->op != PT__GET) pt__add(&q->c->writes, 1);
        return PT_CACHE_PENDING;
    }
    rc = pt__fail(q->c, q->call, r ? pt_redis_strerror(rc) : "no connection on this worker");
    free(q);
    return rc;
}

static int pt__wget(pt_cache_t *base, const char *key, size_t klen, pt_cache_call_t *call)
{
    pt__rc_t *c = (pt__rc_t *)base;
    if (pt__check(klen, 0)) return PT_CACHE_EINVAL;
    if (c->near && c->near->ops->get(c->near, key, klen, &call->value, call->buf) == PT_CACHE_OK) {
        pt__add(&c->hits, 1);
        return PT_CACHE_OK;
    }
    pt__req_t *q = pt__req(c, call, PT__GET, key, klen, 0);
    if (!q) return PT_CACHE_ENOMEM;
    q->writes = pt__load(&c->writes);
    const char *argv[] = {"GET", q->data};
    size_t lens[] = {3, q->klen};
    return pt__send(q, NULL, 2, argv, lens);
}

static uint64_t pt__ttl(pt__rc_t *c, uint64_t ttl_ms)
{
    return ttl_ms ? ttl_ms : pt__load(&c->ttl_ms);
}

static int pt__wset(pt_cache_t *base, const char *key, size_t klen, const pt_cache_value_t *v,
                    uint64_t ttl_ms, int add, pt_cache_call_t *call)
{
    pt__rc_t *c = (pt__rc_t *)base;
    if (pt__check(klen, ttl_ms)) return PT_CACHE_EINVAL;
    size_t vmax = v->type == PT_CACHE_STRING || v->type == PT_CACHE_JSON ? v->len + 1 : 32;
    pt__req_t *q = pt__req(c, call, add ? PT__ADD : PT__SET, key, klen, vmax);
    if (!q) return PT_CACHE_ENOMEM;
    char *val = q->data + q->klen;
    size_t vlen = pt__encode(v, val);
    pt__decode(val, vlen, &q->v); /* the near cache's copy points into q */
    char px[24];
    uint64_t ttl = pt__ttl(c, ttl_ms);
    int n = 3;
    const char *argv[6] = {"SET", q->data, val};
    size_t lens[6] = {3, q->klen, vlen};
    if (add) argv[n] = "NX", lens[n++] = 2;
    q->ttl_ms = ttl;
    pt__near_drop(q);
    if (ttl) {
        argv[n] = "PX", lens[n++] = 2;
        lens[n] = (size_t)snprintf(px, sizeof px, "%llu", (unsigned long long)ttl);
        argv[n++] = px;
    }
    return pt__send(q, NULL, n, argv, lens);
}

static int pt__wincr(pt_cache_t *base, const char *key, size_t klen, double by, uint64_t ttl_ms,
                     pt_cache_call_t *call)
{
    pt__rc_t *c = (pt__rc_t *)base;
    if (pt__check(klen, ttl_ms)) return PT_CACHE_EINVAL;
    if (!isfinite(by)) return PT_CACHE_ERANGE;
    pt__req_t *q = pt__req(c, call, PT__INCR, key, klen, 0);
    if (!q) return PT_CACHE_ENOMEM;
    char b[32], px[24];
    size_t blen = (size_t)snprintf(b, sizeof b, "%.17g", by);
    size_t plen = (size_t)snprintf(px, sizeof px, "%llu", (unsigned long long)pt__ttl(c, ttl_ms));
    const char *argv[] = {q->data, b, px};
    size_t lens[] = {q->klen, blen, plen};
    return pt__send(q, &pt__incr_script, 3, argv, lens);
}

static int pt__wdel(pt_cache_t *base, const char *key, size_t klen, pt_cache_call_t *call)
{
    pt__rc_t *c = (pt__rc_t *)base;
    if (pt__check(klen, 0)) return PT_CACHE_EINVAL;
    pt__req_t *q = pt__req(c, call, PT__DEL, key, klen, 0);
    if (!q) return PT_CACHE_ENOMEM;
    pt__near_drop(q);
    const char *argv[] = {"DEL", q->data};
    size_t lens[] = {3, q->klen};
    return pt__send(q, NULL, 2, argv, lens);
}

static int pt__wexpire(pt_cache_t *base, const char *key, size_t klen, uint64_t ttl_ms,
                       pt_cache_call_t *call)
{
    pt__rc_t *c = (pt__rc_t *)base;
    if (pt__check(klen, ttl_ms)) return PT_CACHE_EINVAL;
    pt__req_t *q = pt__req(c, call, PT__EXPIRE, key, klen, 0);
    if (!q) return PT_CACHE_ENOMEM;
    char px[24];
    size_t plen = (size_t)snprintf(px, sizeof px, "%llu", (unsigned long long)pt__ttl(c, ttl_ms));
    const char *argv[] = {q->data, px};
    size_t lens[] = {q->klen, plen};
    return pt__send(q, &pt__expire_script, 2, argv, lens);
}

static const pt_cache_wait_ops_t pt__wait_ops = {
    .get = pt__wget,
    .set = pt__wset,
    .incr = pt__wincr,
    .del = pt__wdel,
    .expire = pt__wexpire,
};

/* ---- the synchronous ops: only what needs no round trip ---- */

static int pt__get(pt_cache_t *c, const char *key, size_t klen, pt_cache_value_t *out,
                   pt_buf_t *buf)
{
    return PT_CACHE_EWAIT;
}

static int pt__set(pt_cache_t *c, const char *key, size_t klen, const pt_cache_value_t *v,
                   uint64_t ttl_ms, int add)
{
    return PT_CACHE_EWAIT;
}

static int pt__incr(pt_cache_t *c, const char *key, size_t klen, double by, uint64_t ttl_ms,
                    double *out)
{
    return PT_CACHE_EWAIT;
}

static int pt__del(pt_cache_t *c, const char *key, size_t klen)
{
    return PT_CACHE_EWAIT;
}

static int pt__expire(pt_cache_t *c, const char *key, size_t klen, uint64_t ttl_ms)
{
    return PT_CACHE_EWAIT;
}

static int pt__limits(pt_cache_t *base, const pt_cache_limits_t *l)
{
    pt__rc_t *c = (pt__rc_t *)base;
    __atomic_store_n(&c->ttl_ms, l->ttl_ms, __ATOMIC_RELAXED);
    return 0;
}

static int pt__apply(pt_cache_t *base, const pt_cache_spec_t *sp)
{
    pt__rc_t *c = (pt__rc_t *)base;
    char prefix[512];
    int n = snprintf(prefix, sizeof prefix, "%scache:%s:", sp->key_prefix ? sp->key_prefix : "",
                     sp->name);
    /* another prefix, or a near cache added, dropped or of another ttl: a new cache */
    if ((size_t)n != c->prefix_len || memcmp(prefix, c->prefix, c->prefix_len) != 0 ||
        (sp->near.ttl_ms != 0) != (c->near != NULL) || sp->near.ttl_ms != c->near_ttl_ms)
        return -1;
    pt__limits(base, &sp->limits);
    if (c->near) c->near->ops->limits(c->near, &sp->near);
    return 0;
}

static void pt__stats(pt_cache_t *base, pt_cache_stats_t *out)
{
    pt__rc_t *c = (pt__rc_t *)base;
    memset(out, 0, sizeof *out);
    if (c->near) c->near->ops->stats(c->near, out); /* entries, bytes, evictions: the near copy's */
    out->hits = pt__load(&c->hits);
    out->misses = pt__load(&c->misses);
    out->sets = pt__load(&c->sets);
    out->failures = pt__load(&c->failures);
}

static void pt__free(pt_cache_t *base)
{
    pt__rc_t *c = (pt__rc_t *)base;
    if (c->near) c->near->ops->free(c->near);
    free(c);
}

static const pt_cache_backend_ops_t pt__ops = {
    .get = pt__get,
    .set = pt__set,
    .incr = pt__incr,
    .del = pt__del,
    .expire = pt__expire,
    .limits = pt__limits,
    .stats = pt__stats,
    .apply = pt__apply,
    .free = pt__free,
};

/* The scripts' digests are made when the first redis cache is: the digest's
 * first use loads much of libcrypto, which a node without one never needs. */
static pthread_once_t pt__scripts_once = PTHREAD_ONCE_INIT;

static void pt__scripts_init(void)
{
    pt_redis_script_init(&pt__incr_script, pt__incr_lua);
    pt_redis_script_init(&pt__expire_script, pt__expire_lua);
}

int pt_cache_redis_new(const pt_cache_spec_t *sp, pt_cache_t **out)
{
    pthread_once(&pt__scripts_once, pt__scripts_init);
    size_t len = strlen(sp->name);
    if (len > PT_CACHE_NAME_MAX) return PT_CACHE_ENOMEM;
    char prefix[512];
    int n = snprintf(prefix, sizeof prefix, "%scache:%s:", sp->key_prefix ? sp->key_prefix : "",
                     sp->name);
    if (n < 0 || (size_t)n >= sizeof prefix) return PT_CACHE_EINVAL;
    pt__rc_t *c = calloc(1, sizeof *c + (size_t)n + 1);
    if (!c) return PT_CACHE_ENOMEM;
    c->base.ops = &pt__ops;
    c->base.wait = &pt__wait_ops;
    memcpy(c->base.name, sp->name, len + 1);
    c->base.name_len = len;
    c->ttl_ms = sp->limits.ttl_ms;
    memcpy(c->prefix, prefix, (size_t)n + 1);
    c->prefix_len = (size_t)n;
    if (sp->near.ttl_ms) {
        pt_cache_limits_t nl = sp->near;
        if (pt_cache_mem_new(sp->name, &nl, &c->near) != 0) {
            free(c);
            return PT_CACHE_ENOMEM;
        }
        c->near_ttl_ms = sp->near.ttl_ms;
    }
    *out = &c->base;
    return 0;
}

void pt_cache_redis_install(void)
{
    pt_cache_set_backend(PT_CACHE_BACKEND_REDIS, pt_cache_redis_new);
}
