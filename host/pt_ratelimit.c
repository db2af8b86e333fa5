#include "pt_ratelimit.h"

#include <sodium.h>

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define PT__SHARDS 64 /* a power of two */
#define PT__GLOBAL_MAX_BUCKETS (64 * 1024)

typedef struct pt__bucket_s {
    struct pt__bucket_s *next;                /* the slot's chain */
    struct pt__bucket_s *lru_prev, *lru_next; /* the shard's, most recent first */
    uint64_t hash;
    double tokens;
    double rate, burst; /* of the last take: what the sweep needs */
    uint64_t last_ns;
    size_t key_len;
    unsigned char key[];
} pt__bucket_t;

/* Aligned so two shards never share a cache line (their mutexes are hot). */
typedef struct {
    pthread_mutex_t lock;
    pt__bucket_t **slots;
    size_t n_slots; /* a power of two */
    size_t count;
    pt__bucket_t *lru_head, *lru_tail;
} __attribute__((aligned(64))) pt__shard_t;

struct pt_ratelimit_s {
    pt__shard_t shards[PT__SHARDS];
    size_t max_per_shard;
    unsigned char hash_key[crypto_shorthash_KEYBYTES];
};

int pt_ratelimit_new(size_t max_buckets, pt_ratelimit_t **out)
{
    pt_ratelimit_t *rl = NULL;
    if (sodium_init() < 0) return -1;
    if (posix_memalign((void **)&rl, 64, sizeof *rl) != 0) return -1;
    memset(rl, 0, sizeof *rl);
    /* SipHash with a secret key: users are named by their callers (a JWT
     * claim, a gateway's header), so the buckets they land in must not be
     * predictable, or one caller could pile every user into one chain. */
    crypto_shorthash_keygen(rl->hash_key);
    rl->max_per_shard = max_buckets / PT__SHARDS ? max_buckets / PT__SHARDS : 1;
    for (int i = 0; i < PT__SHARDS; i++) {
        pt__shard_t *s = &rl->shards[i];
        pthread_mutex_init(&s->lock, NULL);
        s->n_slots = 16;
        if (!(s->slots = calloc(s->n_slots, sizeof *s->slots))) {
            for (int j = 0; j <= i; j++)
                pthread_mutex_destroy(&rl->shards[j].lock);
            for (int j = 0; j < i; j++)
                free(rl->shards[j].slots);
            free(rl);
            return -1;
        }
    }
    *out = rl;
    return 0;
}

void pt_ratelimit_free(pt_ratelimit_t *rl)
{
    if (!rl) return;
    for (int i = 0; i < PT__SHARDS; i++) {
        pt__shard_t *s = &rl->shards[i];
        for (size_t j = 0; j < s->n_slots; j++) {
            pt__bucket_t *b = s->slots[j], *next;
            for (; b; b = next) {
                next = b->next;
                free(b);
            }
        }
        free(s->slots);
        pthread_mutex_destroy(&s->lock);
    }
    free(rl);
}

static pthread_once_t pt__global_once = PTHREAD_ONCE_INIT;
static pt_ratelimit_t *pt__global;

static void pt__global_init(void)
{
    if (pt_ratelimit_new(PT__GLOBAL_MAX_BUCKETS, &pt__global) != 0) pt__global = NULL;
}

pt_ratelimit_t *pt_ratelimit_global(void)
{
    pthread_once(&pt__global_once, pt__global_init);
    return pt__global;
}

static double pt__refill(const pt__bucket_t *b, uint64_t now_ns)
{
    double elapsed = now_ns > b->last_ns ? (double)(now_ns - b->last_ns) / 1e9 : 0.0;
    double t = b->tokens + elapsed * b->rate;
    return t > b->burst ? b->burst : t;
}

/* Doubles the slot array; keeps the old one when out of memory. */
static void pt__grow(pt__shard_t *s)
{
    size_t n = s->n_slots * 2;
    pt__bucket_t **slots = calloc(n, sizeof *slots);
    if (!slots) return;
    for (size_t i = 0; i < s->n_slots; i++) {
        pt__bucket_t *b = s->slots[i], *next;
        for (; b; b = next) {
            next = b->next;
            /* the low bits picked the shard; the next bits pick the slot */
            size_t j = (size_t)(b->hash >> 6) & (n - 1);
            b->next = slots[j];
            slots[j] = b;
        }
    }
    free(s->slots);
    s->slots = slots;
    s->n_slots = n;
}

static void pt__lru_unlink(pt__shard_t *s, pt__bucket_t *b)
{
    if (b->lru_prev)
        b->lru_prev->lru_next = b->lru_next;
    else
        s->lru_head = b->lru_next;
    if (b->lru_next)
        b->lru_next->lru_prev = b->lru_prev;
    else
        s->lru_tail = b->lru_prev;
    b->lru_prev = b->lru_next = NULL;
}

static void pt__lru_front(pt__shard_t *s, pt__bucket_t *b)
{
    b->lru_prev = NULL;
    b->lru_next = s->lru_head;
    if (s->lru_head) s->lru_head->lru_prev = b;
    s->lru_head = b;
    if (!s->lru_tail) s->lru_tail = b;
}

/* Frees b, taking it out of its slot's chain and the LRU list. */
static void pt__drop(pt__shard_t *s, pt__bucket_t *b)
{
    pt__bucket_t **pb = &s->slots[(size_t)(b->hash >> 6) & (s->n_slots - 1)];
    while (*pb != b)
        pb = &(*pb)->next;
    *pb = b->next;
    pt__lru_unlink(s, b);
    free(b);
    s->count--;
}

/* How many of the least recently used buckets an eviction looks at for one
 * that has refilled. */
#define PT__EVICT_LOOK 8

/* Makes room for one bucket in a full shard, in constant time (a scan of
 * the shard cost some 20 us under its lock per new name once the table was
 * full, which a client cycling through names could make every request pay):
 * among the PT__EVICT_LOOK least recently used buckets, the oldest that has
 * refilled (forgetting it changes nothing), else the least recently used. */
static void pt__evict(pt__shard_t *s, uint64_t now_ns)
{
    pt__bucket_t *b = s->lru_tail;
    for (int i = 0; b && i < PT__EVICT_LOOK; i++, b = b->lru_prev)
        if (pt__refill(b, now_ns) >= b->burst) break;
    if (!b || pt__refill(b, now_ns) < b->burst) b = s->lru_tail;
    if (b) pt__drop(s, b);
}

int pt_ratelimit_take(pt_ratelimit_t *rl, const void *key, size_t key_len, double rate,
                      double burst, uint64_t now_ns, uint32_t *retry_after_s)
{
    uint64_t h;
    int rc = -1;
    unsigned char hb[crypto_shorthash_BYTES];
    crypto_shorthash(hb, key, key_len, rl->hash_key);
    memcpy(&h, hb, sizeof h);
    pt__shard_t *s = &rl->shards[h & (PT__SHARDS - 1)];
    if (burst < 1) burst = 1;

    pthread_mutex_lock(&s->lock);
    size_t slot = (size_t)(h >> 6) & (s->n_slots - 1);
    pt__bucket_t *b = s->slots[slot];
    while (b && !(b->hash == h && b->key_len == key_len && memcmp(b->key, key, key_len) == 0))
        b = b->next;
    if (b) {
        b->rate = rate;
        b->burst = burst;
        b->tokens = pt__refill(b, now_ns);
        pt__lru_unlink(s, b);
        pt__lru_front(s, b);
    } else {
        if (s->count >= rl->max_per_shard) {
            pt__evict(s, now_ns);
        } else if (s->count >= s->n_slots) {
            pt__grow(s);
            slot = (size_t)(h >> 6) & (s->n_slots - 1);
        }
        if (!(b = malloc(sizeof *b + key_len))) goto unlock;
        b->hash = h;
        b->key_len = key_len;
        memcpy(b->key, key, key_len);
        b->rate = rate;
        b->burst = burst;
        b->tokens = burst;
        b->next = s->slots[slot];
        s->slots[slot] = b;
        pt__lru_front(s, b);
        s->count++;
    }
    b->last_ns = now_ns;
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        rc = 0;
    } else {
        double wait = rate > 0 ? (1.0 - b->tokens) / rate : 1.0;
        double secs = ceil(wait);
        *retry_after_s = secs < 1 ? 1 : secs > 86400 ? 86400 : (uint32_t)secs;
        rc = 1;
    }
unlock:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

size_t pt_ratelimit_count(pt_ratelimit_t *rl)
{
    size_t n = 0;
    for (int i = 0; i < PT__SHARDS; i++) {
        pthread_mutex_lock(&rl->shards[i].lock);
        n += rl->shards[i].count;
        pthread_mutex_unlock(&rl->shards[i].lock);
    }
    return n;
}

int pt_ratelimit_parse_rate(const char *s, double *per_sec)
{
    char *end;
    if (!s || !*s) return -1;
    double v = strtod(s, &end);
    if (end == s || !isfinite(v) || v <= 0) return -1;
    while (*end == ' ')
        end++;
    double div = 1;
    if (*end == '/') {
        const char *u = end + 1;
        while (*u == ' ')
            u++;
        if (!strcmp(u, "s") || !strcmp(u, "sec") || !strcmp(u, "second"))
            div = 1;
        else if (!strcmp(u, "m") || !strcmp(u, "min") || !strcmp(u, "minute"))
            div = 60;
        else if (!strcmp(u, "h") || !strcmp(u, "hour"))
            div = 3600;
        else
            return -1;
    } else if (*end) {
        return -1;
    }
    *per_sec = v / div;
    return 0;
}
