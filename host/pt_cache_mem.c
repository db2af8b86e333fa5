#include "pt_cache_mem.h"

#include <sodium.h>

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PT__NONE UINT64_MAX /* tail_stamp of an empty shard */

typedef struct pt__entry_s {
    struct pt__entry_s *hnext;       /* the bucket's chain */
    struct pt__entry_s *prev, *next; /* the shard's LRU list: head is the most recent */
    uint64_t hash;
    uint64_t stamp;   /* last use, clock ns */
    uint64_t expires; /* clock ns; 0: never */
    uint32_t klen, vlen;
    uint8_t type;
    char data[]; /* key, then value */
} pt__entry_t;

typedef struct {
    pthread_mutex_t lock;
    pt__entry_t **buckets;
    size_t n_buckets; /* a power of two */
    size_t n;
    pt__entry_t *head, *tail;
    uint64_t tail_stamp; /* atomic: the tail's stamp (PT__NONE: empty), read without the lock */
    /* written under the lock, read by the scrape (relaxed) */
    uint64_t hits, misses, sets, evictions, expired;
} __attribute__((aligned(64))) pt__shard_t;

typedef struct {
    pt_cache_t base;
    pt__shard_t shards[PT_CACHE_MEM_SHARDS];
    uint64_t entries, bytes;              /* atomic */
    uint64_t max_entries, max_bytes, ttl; /* atomic (a reload changes them); ttl in ms */
    unsigned char key[crypto_shorthash_KEYBYTES];
    uint64_t (*now)(void *);
    void *now_ud;
} pt__mem_t;

static uint64_t pt__load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void pt__bump(uint64_t *p)
{
    __atomic_store_n(p, pt__load(p) + 1, __ATOMIC_RELAXED); /* one writer: the lock holder */
}

/* The coarse clock (a few ms of resolution) costs a fraction of the fine
 * one, and ttls are seconds. */
static uint64_t pt__real_now(void *ud)
{
    struct timespec ts;
    (void)ud;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* An LRU stamp: the clock, made strictly increasing per thread, so one
 * thread's uses are ordered exactly even within a clock tick (other
 * threads' within a tick are in no set order). Never ahead of the clock by
 * more than the thread's ops in one tick, in ns. */
static __thread uint64_t pt__last_stamp;

static uint64_t pt__stamp(uint64_t now)
{
    uint64_t s = now > pt__last_stamp ? now : pt__last_stamp + 1;
    pt__last_stamp = s;
    return s;
}

static uint64_t pt__hash(const pt__mem_t *m, const char *key, size_t klen)
{
    unsigned char out[crypto_shorthash_BYTES];
    uint64_t h;
    crypto_shorthash(out, (const unsigned char *)key, klen, m->key);
    memcpy(&h, out, sizeof h);
    return h;
}

static pt__shard_t *pt__shard(pt__mem_t *m, uint64_t h)
{
    return &m->shards[h >> 60]; /* the top bits; buckets use the low ones */
}

static uint64_t pt__expiry(const pt__mem_t *m, uint64_t now, uint64_t ttl_ms)
{
    if (!ttl_ms) ttl_ms = pt__load(&m->ttl);
    return ttl_ms ? now + ttl_ms * 1000000u : 0;
}

static int pt__expired(const pt__entry_t *e, uint64_t now)
{
    return e->expires && e->expires <= now;
}

static uint64_t pt__size(const pt__entry_t *e)
{
    return pt_cache_entry_bytes(e->klen, e->vlen);
}

/* ---- one shard, under its lock ---- */

static void pt__publish_tail(pt__shard_t *s)
{
    __atomic_store_n(&s->tail_stamp, s->tail ? s->tail->stamp : PT__NONE, __ATOMIC_RELAXED);
}

static pt__entry_t *pt__find(pt__shard_t *s, uint64_t h, const char *key, size_t klen)
{
    for (pt__entry_t *e = s->buckets[h & (s->n_buckets - 1)]; e; e = e->hnext)
        if (e->hash == h && e->klen == klen && memcmp(e->data, key, klen) == 0) return e;
    return NULL;
}

static void pt__lru_unlink(pt__shard_t *s, pt__entry_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        s->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        s->tail = e->prev;
}

static void pt__lru_push(pt__shard_t *s, pt__entry_t *e)
{
    e->prev = NULL;
    e->next = s->head;
    if (s->head) s->head->prev = e;
    s->head = e;
    if (!s->tail) s->tail = e;
}

/* A use: e becomes the shard's most recent. */
static void pt__touch(pt__shard_t *s, pt__entry_t *e, uint64_t now)
{
    e->stamp = pt__stamp(now);
    if (s->head != e) {
        pt__lru_unlink(s, e);
        pt__lru_push(s, e);
    }
    pt__publish_tail(s);
}

/* Takes e out of the shard and the counts; the caller frees it (after the
 * unlock). */
static void pt__remove(pt__mem_t *m, pt__shard_t *s, pt__entry_t *e)
{
    pt__entry_t **p = &s->buckets[e->hash & (s->n_buckets - 1)];
    while (*p != e)
        p = &(*p)->hnext;
    *p = e->hnext;
    pt__lru_unlink(s, e);
    s->n--;
    pt__publish_tail(s);
    __atomic_sub_fetch(&m->entries, 1, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&m->bytes, pt__size(e), __ATOMIC_RELAXED);
}

/* Doubles the buckets when the shard holds more entries than it has
 * buckets; a failed allocation keeps the longer chains. */
static void pt__grow(pt__shard_t *s)
{
    size_t n = s->n_buckets * 2;
    pt__entry_t **b = calloc(n, sizeof *b);
    if (!b) return;
    for (size_t i = 0; i < s->n_buckets; i++) {
        pt__entry_t *e = s->buckets[i], *next;
        for (; e; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->n_buckets = n;
}

static void pt__insert(pt__mem_t *m, pt__shard_t *s, pt__entry_t *e)
{
    if (s->n >= s->n_buckets) pt__grow(s);
    pt__entry_t **b = &s->buckets[e->hash & (s->n_buckets - 1)];
    e->hnext = *b;
    *b = e;
    pt__lru_push(s, e);
    s->n++;
    pt__publish_tail(s);
    __atomic_add_fetch(&m->entries, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&m->bytes, pt__size(e), __ATOMIC_RELAXED);
}

/* ---- eviction, with no lock held ---- */

static int pt__over(pt__mem_t *m)
{
    return __atomic_load_n(&m->entries, __ATOMIC_RELAXED) > pt__load(&m->max_entries) ||
           __atomic_load_n(&m->bytes, __ATOMIC_RELAXED) > pt__load(&m->max_bytes);
}

/* Evicts the process's least recently used entries until the counts are
 * within the caps: the shard whose tail was used longest ago gives its tail.
 * One lock at a time, so no order between shards is needed. */
static void pt__evict(pt__mem_t *m)
{
    int misses = 0;
    while (pt__over(m) && misses < PT_CACHE_MEM_SHARDS) {
        pt__shard_t *s = NULL;
        uint64_t oldest = PT__NONE;
        for (int i = 0; i < PT_CACHE_MEM_SHARDS; i++) {
            uint64_t t = __atomic_load_n(&m->shards[i].tail_stamp, __ATOMIC_RELAXED);
            if (t < oldest) oldest = t, s = &m->shards[i];
        }
        if (!s) break;
        pthread_mutex_lock(&s->lock);
        pt__entry_t *e = s->tail;
        if (e) {
            pt__remove(m, s, e);
            pt__bump(pt__expired(e, m->now(m->now_ud)) ? &s->expired : &s->evictions);
        }
        pthread_mutex_unlock(&s->lock);
        if (e)
            free(e), misses = 0;
        else
            misses++; /* it emptied meanwhile: look again */
    }
}

/* ---- the ops ---- */

static int pt__check_key(size_t klen)
{
    return klen >= 1 && klen <= PT_CACHE_KEY_MAX ? 0 : PT_CACHE_EINVAL;
}

static int pt__check_ttl(uint64_t ttl_ms)
{
    return ttl_ms <= PT_CACHE_TTL_MAX_MS ? 0 : PT_CACHE_EINVAL;
}

static int pt__get(pt_cache_t *c, const char *key, size_t klen, pt_cache_value_t *out,
                   pt_buf_t *buf)
{
    pt__mem_t *m = (pt__mem_t *)c;
    if (pt__check_key(klen)) return PT_CACHE_EINVAL;
    uint64_t h = pt__hash(m, key, klen);
    pt__shard_t *s = pt__shard(m, h);
    int rc = PT_CACHE_OK;
    buf->len = 0;
    pthread_mutex_lock(&s->lock);
    uint64_t now = m->now(m->now_ud);
    pt__entry_t *e = pt__find(s, h, key, klen), *gone = NULL;
    if (e && pt__expired(e, now)) {
        pt__remove(m, s, e);
        pt__bump(&s->expired);
        gone = e;
        e = NULL;
    }
    if (!e) {
        pt__bump(&s->misses);
        rc = PT_CACHE_MISS;
        goto done;
    }
    out->type = (pt_cache_type_t)e->type;
    const char *v = e->data + e->klen;
    if (e->type == PT_CACHE_NUMBER) {
        memcpy(&out->number, v, sizeof out->number);
    } else if (e->type == PT_CACHE_BOOLEAN) {
        out->boolean = v[0] != 0;
    } else {
        if (pt_buf_reserve(buf, e->vlen + 1) != 0) {
            rc = PT_CACHE_ENOMEM;
            goto done;
        }
        memcpy(buf->data, v, e->vlen);
        buf->len = e->vlen;
        out->data = buf->data;
        out->len = e->vlen;
    }
    pt__touch(s, e, now);
    pt__bump(&s->hits);
done:
    pthread_mutex_unlock(&s->lock);
    free(gone);
    return rc;
}

/* A new entry for key and a value of vlen bytes (not linked). */
static pt__entry_t *pt__entry(uint64_t h, const char *key, size_t klen, pt_cache_type_t type,
                              const void *v, size_t vlen)
{
    pt__entry_t *e = malloc(sizeof *e + klen + vlen);
    if (!e) return NULL;
    e->hash = h;
    e->klen = (uint32_t)klen;
    e->vlen = (uint32_t)vlen;
    e->type = (uint8_t)type;
    memcpy(e->data, key, klen);
    if (vlen) memcpy(e->data + klen, v, vlen);
    return e;
}

static int pt__set(pt_cache_t *c, const char *key, size_t klen, const pt_cache_value_t *v,
                   uint64_t ttl_ms, int add)
{
    pt__mem_t *m = (pt__mem_t *)c;
    const void *bytes;
    size_t vlen;
    char b;
    if (pt__check_key(klen) || pt__check_ttl(ttl_ms)) return PT_CACHE_EINVAL;
    switch (v->type) {
    case PT_CACHE_NUMBER:
        bytes = &v->number, vlen = sizeof v->number;
        break;
    case PT_CACHE_BOOLEAN:
        b = v->boolean ? 1 : 0;
        bytes = &b, vlen = 1;
        break;
    case PT_CACHE_STRING:
    case PT_CACHE_JSON:
        bytes = v->data, vlen = v->len;
        break;
    default:
        return PT_CACHE_EINVAL;
    }
    if (vlen > PT_CACHE_VALUE_MAX || pt_cache_entry_bytes(klen, vlen) > pt__load(&m->max_bytes))
        return PT_CACHE_ETOOLARGE;
    uint64_t h = pt__hash(m, key, klen);
    pt__shard_t *s = pt__shard(m, h);
    pt__entry_t *e = pt__entry(h, key, klen, v->type, bytes, vlen), *old;
    if (!e) return PT_CACHE_ENOMEM;
    pthread_mutex_lock(&s->lock);
    uint64_t now = m->now(m->now_ud);
    if ((old = pt__find(s, h, key, klen))) {
        int expired = pt__expired(old, now);
        if (add && !expired) {
            pthread_mutex_unlock(&s->lock);
            free(e);
            return PT_CACHE_EXISTS;
        }
        pt__remove(m, s, old);
        if (expired) pt__bump(&s->expired);
    }
    e->stamp = pt__stamp(now);
    e->expires = pt__expiry(m, now, ttl_ms);
    pt__insert(m, s, e);
    pt__bump(&s->sets);
    pthread_mutex_unlock(&s->lock);
    free(old);
    if (pt__over(m)) pt__evict(m);
    return PT_CACHE_OK;
}

static int pt__incr(pt_cache_t *c, const char *key, size_t klen, double by, uint64_t ttl_ms,
                    double *out)
{
    pt__mem_t *m = (pt__mem_t *)c;
    if (pt__check_key(klen) || pt__check_ttl(ttl_ms)) return PT_CACHE_EINVAL;
    if (!isfinite(by)) return PT_CACHE_ERANGE;
    if (pt_cache_entry_bytes(klen, sizeof(double)) > pt__load(&m->max_bytes))
        return PT_CACHE_ETOOLARGE;
    uint64_t h = pt__hash(m, key, klen);
    pt__shard_t *s = pt__shard(m, h);
    /* made before the lock: used only when the key is absent */
    pt__entry_t *fresh = pt__entry(h, key, klen, PT_CACHE_NUMBER, &by, sizeof by), *gone = NULL;
    int rc = PT_CACHE_OK;
    if (!fresh) return PT_CACHE_ENOMEM;
    pthread_mutex_lock(&s->lock);
    uint64_t now = m->now(m->now_ud);
    pt__entry_t *e = pt__find(s, h, key, klen);
    if (e && pt__expired(e, now)) {
        pt__remove(m, s, e);
        pt__bump(&s->expired);
        gone = e;
        e = NULL;
    }
    if (e) {
        double n;
        if (e->type != PT_CACHE_NUMBER) {
            rc = PT_CACHE_ENOTNUM;
            goto done;
        }
        memcpy(&n, e->data + e->klen, sizeof n);
        n += by;
        if (!isfinite(n)) {
            rc = PT_CACHE_ERANGE;
            goto done;
        }
        memcpy(e->data + e->klen, &n, sizeof n);
        pt__touch(s, e, now);
        *out = n;
    } else {
        fresh->stamp = pt__stamp(now);
        fresh->expires = pt__expiry(m, now, ttl_ms);
        pt__insert(m, s, fresh);
        fresh = NULL;
        *out = by;
    }
    pt__bump(&s->sets);
done:
    pthread_mutex_unlock(&s->lock);
    free(gone);
    if (fresh)
        free(fresh);
    else if (rc == PT_CACHE_OK && pt__over(m))
        pt__evict(m);
    return rc;
}

/* Finds a live key and locks its shard (the caller unlocks), or removes an
 * expired one: NULL then, and the shard is unlocked. */
static pt__entry_t *pt__find_live(pt__mem_t *m, const char *key, size_t klen, pt__shard_t **sp,
                                  uint64_t *nowp)
{
    uint64_t h = pt__hash(m, key, klen);
    pt__shard_t *s = *sp = pt__shard(m, h);
    pthread_mutex_lock(&s->lock);
    uint64_t now = *nowp = m->now(m->now_ud);
    pt__entry_t *e = pt__find(s, h, key, klen);
    if (e && pt__expired(e, now)) {
        pt__remove(m, s, e);
        pt__bump(&s->expired);
        pthread_mutex_unlock(&s->lock);
        free(e);
        return NULL;
    }
    if (!e) pthread_mutex_unlock(&s->lock);
    return e;
}

static int pt__del(pt_cache_t *c, const char *key, size_t klen)
{
    pt__mem_t *m = (pt__mem_t *)c;
    pt__shard_t *s;
    uint64_t now;
    if (pt__check_key(klen)) return PT_CACHE_EINVAL;
    pt__entry_t *e = pt__find_live(m, key, klen, &s, &now);
    if (!e) return PT_CACHE_MISS;
    pt__remove(m, s, e);
    pthread_mutex_unlock(&s->lock);
    free(e);
    return PT_CACHE_OK;
}

static int pt__expire(pt_cache_t *c, const char *key, size_t klen, uint64_t ttl_ms)
{
    pt__mem_t *m = (pt__mem_t *)c;
    pt__shard_t *s;
    uint64_t now;
    if (pt__check_key(klen) || pt__check_ttl(ttl_ms)) return PT_CACHE_EINVAL;
    pt__entry_t *e = pt__find_live(m, key, klen, &s, &now);
    if (!e) return PT_CACHE_MISS;
    e->expires = pt__expiry(m, now, ttl_ms);
    pthread_mutex_unlock(&s->lock);
    return PT_CACHE_OK;
}

static int pt__limits(pt_cache_t *c, const pt_cache_limits_t *l)
{
    pt__mem_t *m = (pt__mem_t *)c;
    __atomic_store_n(&m->max_entries, l->max_entries, __ATOMIC_RELAXED);
    __atomic_store_n(&m->max_bytes, l->max_bytes, __ATOMIC_RELAXED);
    __atomic_store_n(&m->ttl, l->ttl_ms, __ATOMIC_RELAXED);
    pt__evict(m);
    return 0;
}

static void pt__stats(pt_cache_t *c, pt_cache_stats_t *out)
{
    pt__mem_t *m = (pt__mem_t *)c;
    memset(out, 0, sizeof *out);
    for (int i = 0; i < PT_CACHE_MEM_SHARDS; i++) {
        pt__shard_t *s = &m->shards[i];
        out->hits += pt__load(&s->hits);
        out->misses += pt__load(&s->misses);
        out->sets += pt__load(&s->sets);
        out->evictions += pt__load(&s->evictions);
        out->expired += pt__load(&s->expired);
    }
    out->entries = pt__load(&m->entries);
    out->bytes = pt__load(&m->bytes);
    out->max_entries = pt__load(&m->max_entries);
    out->max_bytes = pt__load(&m->max_bytes);
}

static void pt__free(pt_cache_t *c)
{
    pt__mem_t *m = (pt__mem_t *)c;
    for (int i = 0; i < PT_CACHE_MEM_SHARDS; i++) {
        pt__shard_t *s = &m->shards[i];
        for (pt__entry_t *e = s->head, *next; e; e = next) {
            next = e->next;
            free(e);
        }
        free(s->buckets);
        pthread_mutex_destroy(&s->lock);
    }
    free(m);
}

static const pt_cache_backend_ops_t pt__ops = {
    .get = pt__get,
    .set = pt__set,
    .incr = pt__incr,
    .del = pt__del,
    .expire = pt__expire,
    .limits = pt__limits,
    .stats = pt__stats,
    .free = pt__free,
};

int pt_cache_mem_new(const char *name, const pt_cache_limits_t *l, pt_cache_t **out)
{
    pt__mem_t *m = NULL;
    size_t len = strlen(name);
    if (len > PT_CACHE_NAME_MAX || sodium_init() < 0) return PT_CACHE_ENOMEM;
    if (posix_memalign((void **)&m, 64, sizeof *m) != 0) return PT_CACHE_ENOMEM;
    memset(m, 0, sizeof *m);
    m->base.ops = &pt__ops;
    memcpy(m->base.name, name, len + 1);
    m->base.name_len = len;
    m->max_entries = l->max_entries;
    m->max_bytes = l->max_bytes;
    m->ttl = l->ttl_ms;
    m->now = pt__real_now;
    crypto_shorthash_keygen(m->key);
    for (int i = 0; i < PT_CACHE_MEM_SHARDS; i++) {
        pt__shard_t *s = &m->shards[i];
        s->n_buckets = 16;
        s->tail_stamp = PT__NONE;
        pthread_mutex_init(&s->lock, NULL);
        if (!(s->buckets = calloc(s->n_buckets, sizeof *s->buckets))) {
            for (int j = i + 1; j < PT_CACHE_MEM_SHARDS; j++)
                pthread_mutex_init(&m->shards[j].lock, NULL);
            pt__free(&m->base);
            return PT_CACHE_ENOMEM;
        }
    }
    *out = &m->base;
    return 0;
}

void pt_cache_mem_clock(pt_cache_t *c, uint64_t (*now_ns)(void *ud), void *ud)
{
    pt__mem_t *m = (pt__mem_t *)c;
    m->now = now_ns ? now_ns : pt__real_now;
    m->now_ud = now_ns ? ud : NULL;
}
