/* pt_cache and pt_cache_mem: LRU eviction by entries and bytes across
 * shards, ttl expiry on a test clock, add and incr, the bounds of keys,
 * values and ttls, new caps applied now, threads hammering the same keys,
 * the registry keeping a cache across sets, and the cache: config section. */
#include "pt_cache_set.h"
#include "pt_cache_mem.h"
#include "pt_test.h"
#include "pt_test_config.h"

#include <math.h>
#include <uv.h>

static uint64_t fake_ns;

static uint64_t fake_now(void *ud)
{
    (void)ud;
    return ++fake_ns; /* distinct stamps, so the LRU order is exact */
}

#define MS 1000000ull

static pt_cache_t *mem(uint64_t entries, uint64_t bytes, uint64_t ttl_ms, int fake)
{
    pt_cache_t *c = NULL;
    pt_cache_limits_t l = {entries, bytes, ttl_ms};
    PT_CHECK_INT(pt_cache_mem_new("t", &l, &c), 0);
    if (fake) pt_cache_mem_clock(c, fake_now, NULL);
    return c;
}

static int set_str(pt_cache_t *c, const char *k, const char *v, uint64_t ttl_ms)
{
    pt_cache_value_t val = {.type = PT_CACHE_STRING, .data = v, .len = strlen(v)};
    return c->ops->set(c, k, strlen(k), &val, ttl_ms, 0);
}

static int add_num(pt_cache_t *c, const char *k, double n)
{
    pt_cache_value_t val = {.type = PT_CACHE_NUMBER, .number = n};
    return c->ops->set(c, k, strlen(k), &val, 0, 1);
}

static int get(pt_cache_t *c, const char *k, pt_cache_value_t *v, pt_buf_t *buf)
{
    return c->ops->get(c, k, strlen(k), v, buf);
}

static pt_cache_stats_t stats(pt_cache_t *c)
{
    pt_cache_stats_t s;
    c->ops->stats(c, &s);
    return s;
}

PT_CASE(lru_by_entries)
{
    pt_cache_t *c = mem(3, 1 << 20, 0, 1);
    pt_buf_t buf = {0};
    pt_cache_value_t v;
    set_str(c, "a", "1", 0);
    set_str(c, "b", "2", 0);
    set_str(c, "c", "3", 0);
    PT_CHECK_INT(get(c, "a", &v, &buf), PT_CACHE_OK); /* a is used: b is the oldest now */
    set_str(c, "d", "4", 0);
    PT_CHECK_INT(get(c, "b", &v, &buf), PT_CACHE_MISS);
    PT_CHECK_INT(get(c, "a", &v, &buf), PT_CACHE_OK);
    PT_CHECK_INT(get(c, "c", &v, &buf), PT_CACHE_OK);
    PT_CHECK_INT(get(c, "d", &v, &buf), PT_CACHE_OK);
    PT_CHECK(v.len == 1 && v.data[0] == '4');
    pt_cache_stats_t s = stats(c);
    PT_CHECK_INT(s.entries, 3);
    PT_CHECK_INT(s.evictions, 1);
    PT_CHECK_INT(s.sets, 4);
    PT_CHECK_INT(s.hits, 4);
    PT_CHECK_INT(s.misses, 1);
    /* a replaced key is one entry, and used */
    set_str(c, "c", "33", 0);
    set_str(c, "e", "5", 0); /* a goes: its last use is older than c's replacement */
    PT_CHECK_INT(get(c, "a", &v, &buf), PT_CACHE_MISS);
    PT_CHECK_INT(get(c, "c", &v, &buf), PT_CACHE_OK);
    PT_CHECK(v.len == 2);
    PT_CHECK_INT(stats(c).entries, 3);
    /* many keys over every shard: the most recent stay */
    char k[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof k, "key%d", i);
        set_str(c, k, "x", 0);
    }
    PT_CHECK_INT(stats(c).entries, 3);
    PT_CHECK_INT(get(c, "key999", &v, &buf), PT_CACHE_OK);
    PT_CHECK_INT(get(c, "key997", &v, &buf), PT_CACHE_OK);
    PT_CHECK_INT(get(c, "key996", &v, &buf), PT_CACHE_MISS);
    pt_buf_free(&buf);
    c->ops->free(c);
}

PT_CASE(lru_by_bytes)
{
    uint64_t one = pt_cache_entry_bytes(2, 100);
    pt_cache_t *c = mem(1000, 4 * one, 0, 1);
    pt_buf_t buf = {0};
    pt_cache_value_t v;
    char val[101], k[8];
    memset(val, 'v', 100);
    val[100] = '\0';
    for (int i = 0; i < 6; i++) {
        snprintf(k, sizeof k, "k%d", i);
        PT_CHECK_INT(set_str(c, k, val, 0), PT_CACHE_OK);
    }
    pt_cache_stats_t s = stats(c);
    PT_CHECK_INT(s.entries, 4);
    PT_CHECK_INT(s.bytes, 4 * one);
    PT_CHECK_INT(s.evictions, 2);
    PT_CHECK_INT(get(c, "k1", &v, &buf), PT_CACHE_MISS);
    PT_CHECK_INT(get(c, "k2", &v, &buf), PT_CACHE_OK);
    /* a larger value pushes out as many as it needs */
    char big[301];
    memset(big, 'b', 300);
    big[300] = '\0';
    PT_CHECK_INT(set_str(c, "kb", big, 0), PT_CACHE_OK);
    s = stats(c);
    PT_CHECK(s.bytes <= 4 * one);
    PT_CHECK_INT(s.entries, 2);
    PT_CHECK_INT(get(c, "k2", &v, &buf), PT_CACHE_OK); /* used last, so kept */
    /* an entry larger than the cache is refused and changes nothing */
    char *huge = malloc(4 * one + 1);
    memset(huge, 'h', 4 * one);
    huge[4 * one] = '\0';
    PT_CHECK_INT(set_str(c, "kh", huge, 0), PT_CACHE_ETOOLARGE);
    PT_CHECK_INT(stats(c).entries, 2);
    free(huge);
    pt_buf_free(&buf);
    c->ops->free(c);
}

PT_CASE(ttl_expiry)
{
    pt_cache_t *c = mem(100, 1 << 20, 0, 1);
    pt_buf_t buf = {0};
    pt_cache_value_t v;
    fake_ns = 0;
    set_str(c, "short", "1", 1000);
    set_str(c, "forever", "1", 0);
    fake_ns += 999 * MS;
    PT_CHECK_INT(get(c, "short", &v, &buf), PT_CACHE_OK);
    fake_ns += 2 * MS;
    PT_CHECK_INT(get(c, "short", &v, &buf), PT_CACHE_MISS);
    PT_CHECK_INT(get(c, "forever", &v, &buf), PT_CACHE_OK);
    pt_cache_stats_t s = stats(c);
    PT_CHECK_INT(s.expired, 1);
    PT_CHECK_INT(s.entries, 1);
    /* expire: a new expiry from now, on live keys only */
    PT_CHECK_INT(c->ops->expire(c, "forever", 7, 10), PT_CACHE_OK);
    PT_CHECK_INT(c->ops->expire(c, "short", 5, 10), PT_CACHE_MISS);
    fake_ns += 11 * MS;
    PT_CHECK_INT(c->ops->del(c, "forever", 7), PT_CACHE_MISS); /* expired: not there */
    PT_CHECK_INT(stats(c).expired, 2);
    /* the cache's ttl for sets without one */
    pt_cache_limits_t l = {100, 1 << 20, 50};
    c->ops->limits(c, &l);
    set_str(c, "dflt", "1", 0);
    set_str(c, "own", "1", 500);
    fake_ns += 60 * MS;
    PT_CHECK_INT(get(c, "dflt", &v, &buf), PT_CACHE_MISS);
    PT_CHECK_INT(get(c, "own", &v, &buf), PT_CACHE_OK);
    /* an expired entry that comes up for eviction is counted as expired */
    l = (pt_cache_limits_t){1, 1 << 20, 0};
    set_str(c, "a", "1", 10);
    PT_CHECK_INT(get(c, "own", &v, &buf), PT_CACHE_OK); /* a is the least recent */
    fake_ns += 20 * MS;
    uint64_t before = stats(c).expired, evicted = stats(c).evictions;
    c->ops->limits(c, &l); /* a goes, and had expired */
    PT_CHECK_INT(stats(c).evictions, evicted);
    PT_CHECK_INT(stats(c).entries, 1);
    PT_CHECK_INT(stats(c).expired, before + 1);
    pt_buf_free(&buf);
    c->ops->free(c);
}

PT_CASE(add_and_incr)
{
    pt_cache_t *c = mem(100, 1 << 20, 0, 1);
    pt_buf_t buf = {0};
    pt_cache_value_t v;
    double n = 0;
    fake_ns = 0;
    PT_CHECK_INT(add_num(c, "a", 1), PT_CACHE_OK);
    PT_CHECK_INT(add_num(c, "a", 2), PT_CACHE_EXISTS);
    PT_CHECK_INT(get(c, "a", &v, &buf), PT_CACHE_OK);
    PT_CHECK(v.type == PT_CACHE_NUMBER && v.number == 1);
    /* add over an expired entry stores */
    set_str(c, "e", "x", 5);
    fake_ns += 6 * MS;
    PT_CHECK_INT(add_num(c, "e", 3), PT_CACHE_OK);
    PT_CHECK_INT(stats(c).expired, 1);
    /* incr: an absent key counts as 0 */
    PT_CHECK_INT(c->ops->incr(c, "n", 1, 5, 0, &n), PT_CACHE_OK);
    PT_CHECK(n == 5);
    PT_CHECK_INT(c->ops->incr(c, "n", 1, -7.5, 0, &n), PT_CACHE_OK);
    PT_CHECK(n == -2.5);
    PT_CHECK_INT(get(c, "n", &v, &buf), PT_CACHE_OK);
    PT_CHECK(v.type == PT_CACHE_NUMBER && v.number == -2.5);
    /* not a number: refused, the value stays */
    set_str(c, "s", "12", 0);
    PT_CHECK_INT(c->ops->incr(c, "s", 1, 1, 0, &n), PT_CACHE_ENOTNUM);
    PT_CHECK_INT(get(c, "s", &v, &buf), PT_CACHE_OK);
    PT_CHECK(v.type == PT_CACHE_STRING && v.len == 2);
    /* past a finite number */
    PT_CHECK_INT(c->ops->incr(c, "big", 3, 1e308, 0, &n), PT_CACHE_OK);
    PT_CHECK_INT(c->ops->incr(c, "big", 3, 1e308, 0, &n), PT_CACHE_ERANGE);
    PT_CHECK_INT(c->ops->incr(c, "big", 3, INFINITY, 0, &n), PT_CACHE_ERANGE);
    /* the ttl applies when incr makes the key; later incrs keep the expiry */
    PT_CHECK_INT(c->ops->incr(c, "t", 1, 1, 10, &n), PT_CACHE_OK);
    fake_ns += 6 * MS;
    PT_CHECK_INT(c->ops->incr(c, "t", 1, 1, 1000, &n), PT_CACHE_OK);
    PT_CHECK(n == 2);
    fake_ns += 6 * MS;
    PT_CHECK_INT(c->ops->incr(c, "t", 1, 1, 0, &n), PT_CACHE_OK);
    PT_CHECK(n == 1); /* it had expired: counted from 0 again */
    pt_buf_free(&buf);
    c->ops->free(c);
}

PT_CASE(values_and_limits)
{
    pt_cache_t *c = mem(100, 1 << 20, 0, 0);
    pt_buf_t buf = {0};
    pt_cache_value_t v, in;
    /* bytes as they are, NULs too */
    in = (pt_cache_value_t){.type = PT_CACHE_STRING, .data = "a\0b", .len = 3};
    PT_CHECK_INT(c->ops->set(c, "k\0x", 3, &in, 0, 0), PT_CACHE_OK);
    PT_CHECK_INT(c->ops->get(c, "k\0x", 3, &v, &buf), PT_CACHE_OK);
    PT_CHECK(v.len == 3 && memcmp(v.data, "a\0b", 3) == 0);
    PT_CHECK_INT(c->ops->get(c, "k\0y", 3, &v, &buf), PT_CACHE_MISS);
    in = (pt_cache_value_t){.type = PT_CACHE_JSON, .data = "{\"a\":1}", .len = 7};
    PT_CHECK_INT(c->ops->set(c, "j", 1, &in, 0, 0), PT_CACHE_OK);
    PT_CHECK_INT(c->ops->get(c, "j", 1, &v, &buf), PT_CACHE_OK);
    PT_CHECK(v.type == PT_CACHE_JSON && v.len == 7);
    in = (pt_cache_value_t){.type = PT_CACHE_BOOLEAN, .boolean = 1};
    PT_CHECK_INT(c->ops->set(c, "b", 1, &in, 0, 0), PT_CACHE_OK);
    PT_CHECK_INT(c->ops->get(c, "b", 1, &v, &buf), PT_CACHE_OK);
    PT_CHECK(v.type == PT_CACHE_BOOLEAN && v.boolean == 1);
    /* keys of 1..1024 bytes, ttls of at most a year */
    char key[PT_CACHE_KEY_MAX + 1];
    memset(key, 'k', sizeof key);
    PT_CHECK_INT(c->ops->set(c, key, PT_CACHE_KEY_MAX, &in, 0, 0), PT_CACHE_OK);
    PT_CHECK_INT(c->ops->set(c, key, PT_CACHE_KEY_MAX + 1, &in, 0, 0), PT_CACHE_EINVAL);
    PT_CHECK_INT(c->ops->get(c, key, PT_CACHE_KEY_MAX + 1, &v, &buf), PT_CACHE_EINVAL);
    PT_CHECK_INT(c->ops->set(c, "", 0, &in, 0, 0), PT_CACHE_EINVAL);
    PT_CHECK_INT(c->ops->del(c, "", 0), PT_CACHE_EINVAL);
    PT_CHECK_INT(c->ops->set(c, "k", 1, &in, PT_CACHE_TTL_MAX_MS + 1, 0), PT_CACHE_EINVAL);
    PT_CHECK_INT(c->ops->expire(c, "b", 1, PT_CACHE_TTL_MAX_MS + 1), PT_CACHE_EINVAL);
    /* accounting: key + value + overhead */
    pt_cache_stats_t s = stats(c);
    PT_CHECK_INT(s.bytes, pt_cache_entry_bytes(3, 3) + pt_cache_entry_bytes(1, 7) +
                              pt_cache_entry_bytes(1, 1) +
                              pt_cache_entry_bytes(PT_CACHE_KEY_MAX, 1));
    /* new caps apply now */
    char k[16];
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof k, "n%d", i);
        set_str(c, k, "x", 0);
    }
    PT_CHECK_INT(stats(c).entries, 54);
    pt_cache_limits_t l = {10, 1 << 20, 0};
    c->ops->limits(c, &l);
    s = stats(c);
    PT_CHECK_INT(s.entries, 10);
    PT_CHECK_INT(s.evictions, 44);
    PT_CHECK_INT(s.max_entries, 10);
    PT_CHECK_INT(c->ops->get(c, "n49", 3, &v, &buf), PT_CACHE_OK);
    PT_CHECK_INT(c->ops->get(c, "n39", 3, &v, &buf), PT_CACHE_MISS);
    pt_buf_free(&buf);
    c->ops->free(c);
}

#define THREADS 4
#define ROUNDS 20000

typedef struct {
    pt_cache_t *c;
    int id;
    int bad;
} hammer_t;

/* Every thread: incr of one shared key, and sets, gets and deletes of a
 * few shared keys in a cache small enough to evict all the time. */
static void hammer(void *arg)
{
    hammer_t *h = arg;
    pt_buf_t buf = {0};
    char k[16], val[64];
    for (int i = 0; i < ROUNDS; i++) {
        double n;
        pt_cache_value_t v;
        if (h->c->ops->incr(h->c, "count", 5, 1, 0, &n) != PT_CACHE_OK) h->bad++;
        snprintf(k, sizeof k, "k%d", i % 64);
        int len = snprintf(val, sizeof val, "%s-from-%d", k, h->id);
        pt_cache_value_t in = {.type = PT_CACHE_STRING, .data = val, .len = (size_t)len};
        if (h->c->ops->set(h->c, k, strlen(k), &in, i % 3 ? 0 : 1, i % 2) < 0) h->bad++;
        int rc = h->c->ops->get(h->c, k, strlen(k), &v, &buf);
        /* whoever wrote it last, the value is whole and belongs to the key */
        if (rc == PT_CACHE_OK &&
            (v.len < strlen(k) || memcmp(v.data, k, strlen(k)) != 0 || v.data[strlen(k)] != '-'))
            h->bad++;
        if (i % 7 == 0) h->c->ops->del(h->c, k, strlen(k));
    }
    pt_buf_free(&buf);
}

PT_CASE(threads_hammer_the_same_keys)
{
    pt_cache_t *c = mem(20, 1 << 20, 0, 0);
    uv_thread_t th[THREADS];
    hammer_t hs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        hs[i] = (hammer_t){.c = c, .id = i};
        uv_thread_create(&th[i], hammer, &hs[i]);
    }
    for (int i = 0; i < THREADS; i++)
        uv_thread_join(&th[i]);
    int bad = 0;
    for (int i = 0; i < THREADS; i++)
        bad += hs[i].bad;
    PT_CHECK_INT(bad, 0);
    pt_buf_t buf = {0};
    pt_cache_value_t v;
    int rc = get(c, "count", &v, &buf);
    /* count may have been evicted (20 entries, 65 keys): then it counted again from 0 */
    if (rc == PT_CACHE_OK) PT_CHECK(v.number >= 1 && v.number <= THREADS * ROUNDS);
    pt_cache_stats_t s = stats(c);
    PT_CHECK(s.entries <= 20);
    PT_CHECK(s.evictions > 0);
    pt_buf_free(&buf);
    c->ops->free(c);

    /* with room for every key, N increments are exactly N */
    c = mem(1000, 1 << 20, 0, 0);
    for (int i = 0; i < THREADS; i++) {
        hs[i] = (hammer_t){.c = c, .id = i};
        uv_thread_create(&th[i], hammer, &hs[i]);
    }
    for (int i = 0; i < THREADS; i++)
        uv_thread_join(&th[i]);
    PT_CHECK_INT(get(c, "count", &v, &buf), PT_CACHE_OK);
    PT_CHECK_INT((long long)v.number, THREADS * ROUNDS);
    PT_CHECK_INT(stats(c).evictions, 0);
    pt_buf_free(&buf);
    c->ops->free(c);
}

PT_CASE(sets_keep_caches_by_name)
{
    pt_cache_spec_t specs[] = {{.name = "default", .limits = {100, 1 << 20, 0}},
                               {.name = "sessions", .limits = {10, 1 << 20, 0}},
                               {.name = "gone", .limits = {10, 1 << 20, 0}}};
    pt_cache_set_t *a = NULL, *b = NULL;
    pt_buf_t buf = {0}, out = {0};
    pt_cache_value_t v;
    PT_CHECK_INT(pt_cache_set_open(specs, 3, &a), 0);
    PT_CHECK_INT(a->n, 3);
    pt_cache_t *s = pt_cache_set_find(a, "sessions", 8);
    PT_CHECK(s != NULL);
    PT_CHECK(pt_cache_set_find(a, "session", 7) == NULL);
    char k[16];
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof k, "s%d", i);
        set_str(s, k, "x", 0);
    }
    /* the next generation keeps sessions (new caps), drops gone */
    specs[1].limits.max_entries = 4;
    PT_CHECK_INT(pt_cache_set_open(specs, 2, &b), 0);
    PT_CHECK(pt_cache_set_find(b, "sessions", 8) == s);
    PT_CHECK_INT(stats(s).entries, 4);
    PT_CHECK_INT(get(s, "s9", &v, &buf), PT_CACHE_OK);
    pt_cache_render_metrics(&out);
    PT_CHECK(strstr(out.data, "portico_cache_entries{cache=\"gone\"} 0") != NULL);
    PT_CHECK(strstr(out.data, "portico_cache_entries{cache=\"sessions\"} 4") != NULL);
    PT_CHECK(strstr(out.data, "portico_cache_evictions_total{cache=\"sessions\"} 6") != NULL);
    pt_cache_set_free(a); /* gone has no set left */
    out.len = 0;
    pt_cache_render_metrics(&out);
    pt_buf_append(&out, "", 1);
    PT_CHECK(strstr(out.data, "cache=\"gone\"") == NULL);
    PT_CHECK(strstr(out.data, "portico_cache_max_entries{cache=\"default\"} 100") != NULL);
    /* no specs: the default cache with the default caps */
    pt_cache_set_t *d = NULL;
    pt_cache_set_free(b);
    PT_CHECK_INT(pt_cache_set_open(NULL, 0, &d), 0);
    PT_CHECK_INT(d->n, 1);
    PT_CHECK_INT(stats(d->caches[0]).max_entries, 10000);
    PT_CHECK_INT(stats(d->caches[0]).entries, 0); /* the previous default had gone with b */
    pt_cache_set_free(d);
    pt_buf_free(&buf);
    pt_buf_free(&out);
}

PT_CASE(config_section)
{
    pt_config_t *cfg = NULL;
    char err[512] = "";
    PT_CHECK_INT(pt_test_load("cache:\n"
                              "  default: {max_entries: 10k, max_bytes: 8MB}\n"
                              "  caches:\n"
                              "    sessions: {max_entries: 100000, max_bytes: 256MB, ttl: 10m}\n"
                              "    plain:\n",
                              &cfg, err, sizeof err),
                 0);
    if (cfg) {
        PT_CHECK_INT(cfg->caches.n, 3);
        PT_CHECK_STR(cfg->caches.specs[0].name, "default");
        PT_CHECK_INT(cfg->caches.specs[0].limits.max_entries, 10240);
        PT_CHECK_INT(cfg->caches.specs[0].limits.max_bytes, 8 << 20);
        PT_CHECK_STR(cfg->caches.specs[1].name, "sessions");
        PT_CHECK_INT(cfg->caches.specs[1].limits.ttl_ms, 600000);
        PT_CHECK_INT(cfg->caches.specs[1].limits.max_bytes, 256ull << 20);
        PT_CHECK_INT(cfg->caches.specs[2].limits.max_entries, 10000);
        PT_CHECK_INT(cfg->caches.specs[2].limits.ttl_ms, 0);
    }
    pt_config_free(cfg);
    PT_CHECK_INT(pt_test_load("log: {level: info}\n", &cfg, err, sizeof err), 0);
    if (cfg) PT_CHECK_INT(cfg->caches.n, 1);
    pt_config_free(cfg);
    PT_CHECK(pt_test_fails_with("cache:\n  caches:\n    s: {max_entries: 0}\n",
                                ":3: cache.caches.s.max_entries: expected a count"));
    PT_CHECK(pt_test_fails_with("cache:\n  default: {max_bytes: 100}\n",
                                ":2: cache.default.max_bytes: expected a size from 1KB"));
    PT_CHECK(pt_test_fails_with("cache:\n  caches:\n    s: {ttl: -1}\n", "cache.caches.s.ttl"));
    PT_CHECK(pt_test_fails_with("cache:\n  caches:\n    s: {ttl: 400d}\n", "cache.caches.s.ttl"));
    PT_CHECK(pt_test_fails_with("cache:\n  caches:\n    s: 5\n", "expected a mapping"));
    PT_CHECK(pt_test_fails_with("cache:\n  caches: [a]\n", "cache.caches: expected a mapping"));
    PT_CHECK(pt_test_fails_with("cache:\n  caches:\n    default: {}\n", "cache.default"));
    PT_CHECK(pt_test_fails_with("cache:\n  caches:\n    \"a b\": {}\n", "a name must be"));
    PT_CHECK(pt_test_fails_with("cache:\n  size: 1\n", "unknown key 'size'"));
    PT_CHECK(pt_test_fails_with("cache:\n  caches:\n    s: {}\n    s: {}\n", "duplicate key 's'"));
}

PT_CASE(config_redis_caches)
{
    pt_config_t *cfg = NULL;
    char err[512] = "";
    PT_CHECK_INT(pt_test_load("cluster:\n  redis: redis://127.0.0.1:1/0\n  key_prefix: \"p:\"\n"
                              "cache:\n"
                              "  caches:\n"
                              "    shared: {backend: redis, ttl: 1m, max_value: 2KB}\n"
                              "    near:\n"
                              "      backend: redis\n"
                              "      near_cache: {ttl: 500ms, max_entries: 7}\n"
                              "    mem: {backend: memory, max_entries: 3}\n",
                              &cfg, err, sizeof err),
                 0);
    if (cfg) {
        PT_CHECK_INT(cfg->caches.n, 4);
        const pt_cache_spec_t *sp = &cfg->caches.specs[1];
        PT_CHECK_INT(sp->backend, PT_CACHE_BACKEND_REDIS);
        PT_CHECK_STR(sp->key_prefix, "p:");
        PT_CHECK_INT(sp->limits.ttl_ms, 60000);
        PT_CHECK_INT(sp->max_value, 2048);
        PT_CHECK_INT(sp->near.ttl_ms, 0);
        sp = &cfg->caches.specs[2];
        PT_CHECK_INT(sp->max_value, 1 << 20); /* the default */
        PT_CHECK_INT(sp->near.ttl_ms, 500);
        PT_CHECK_INT(sp->near.max_entries, 7);
        PT_CHECK_INT(cfg->caches.specs[3].backend, PT_CACHE_BACKEND_MEMORY);
        PT_CHECK_INT(cfg->caches.specs[3].limits.max_entries, 3);
    }
    pt_config_free(cfg);
    PT_CHECK(pt_test_fails_with("cache:\n  caches:\n    s: {backend: redis}\n",
                                ":3: cache.caches.s.backend: redis needs a cluster: section"));
    PT_CHECK(pt_test_fails_with("cluster: {redis: \"redis://h/0\"}\n"
                                "cache:\n  caches:\n    s: {backend: redis, max_bytes: 1MB}\n",
                                "unknown key 'max_bytes'"));
    PT_CHECK(
        pt_test_fails_with("cluster: {redis: \"redis://h/0\"}\n"
                           "cache:\n  caches:\n    s: {backend: redis, near_cache: {ttl: 2m}}\n",
                           "cache.caches.s.near_cache.ttl: expected"));
    PT_CHECK(pt_test_fails_with("cache:\n  caches:\n    s: {backend: memory, near_cache: {}}\n",
                                "unknown key 'near_cache'"));
}

/* A spec of a backend with no maker fails to open; a memory cache that a
 * reload turns into another backend is replaced (the old one retired). */
static int pt__fake_made;
static int pt__fake_new(const pt_cache_spec_t *sp, pt_cache_t **out)
{
    pt__fake_made++;
    return pt_cache_mem_new(sp->name, &sp->limits, out);
}

PT_CASE(sets_replace_a_cache_of_another_backend)
{
    pt_cache_spec_t mem[] = {{.name = "x", .limits = {10, 1 << 20, 0}}};
    pt_cache_spec_t red[] = {
        {.name = "x", .limits = {10, 1 << 20, 0}, .backend = PT_CACHE_BACKEND_REDIS}};
    pt_cache_set_t *a = NULL, *b = NULL;
    PT_CHECK_INT(pt_cache_set_open(red, 1, &a), -1); /* no maker yet */
    pt_cache_set_backend(PT_CACHE_BACKEND_REDIS, pt__fake_new);
    PT_CHECK_INT(pt_cache_set_open(mem, 1, &a), 0);
    PT_CHECK_INT(pt_cache_set_open(red, 1, &b), 0);
    PT_CHECK_INT(pt__fake_made, 1);
    pt_cache_t *old = pt_cache_set_find(a, "x", 1), *fresh = pt_cache_set_find(b, "x", 1);
    PT_CHECK(old && fresh && old != fresh);
    PT_CHECK(old->retired && !fresh->retired);
    PT_CHECK_INT(fresh->backend, PT_CACHE_BACKEND_REDIS);
    pt_buf_t out = {0};
    pt_cache_render_metrics(&out);
    PT_CHECK(out.data && strstr(out.data, "portico_cache_max_entries{cache=\"x\"} 10\n"));
    PT_CHECK(out.data && !strstr(strstr(out.data, "{cache=\"x\"}") + 1,
                                 "portico_cache_hits_total{cache=\"x\"}"));
    pt_buf_free(&out);
    pt_cache_set_free(a);
    pt_cache_set_free(b);
    pt_cache_set_backend(PT_CACHE_BACKEND_REDIS, NULL);
}

int main(void)
{
    PT_RUN(lru_by_entries);
    PT_RUN(lru_by_bytes);
    PT_RUN(ttl_expiry);
    PT_RUN(add_and_incr);
    PT_RUN(values_and_limits);
    PT_RUN(threads_hammer_the_same_keys);
    PT_RUN(sets_keep_caches_by_name);
    PT_RUN(config_section);
    PT_RUN(config_redis_caches);
    PT_RUN(sets_replace_a_cache_of_another_backend);
    return PT_TEST_DONE();
}
