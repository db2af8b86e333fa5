/* The in-process cache's hot path, in ns per op: get (hits) and set of
 * 10000 keys of 16 bytes with 64-byte values, from 1 and 2 threads at once
 * on the same cache (the keys shared). bench/cache/run builds and runs it
 * against build/libpt_core.a. Figures only: nothing is asserted. The keys
 * are picked at random, so most lookups miss the CPU's caches. */
#include "pt_cache.h"
#include "pt_cache_mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#define KEYS 10000
#define OPS 2000000

static pt_cache_t *cache;
static char keys[KEYS][17];
static char val[65];

typedef struct {
    int set, seed;
    double ns, cpu_ns;
} job_t;

static double now_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void run(void *arg)
{
    job_t *j = arg;
    pt_buf_t buf = {0};
    pt_cache_value_t v, in = {.type = PT_CACHE_STRING, .data = val, .len = 64};
    unsigned x = (unsigned)j->seed * 2654435761u + 1;
    double t0 = now_ns(CLOCK_MONOTONIC), c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
    for (int i = 0; i < OPS; i++) {
        x = x * 1103515245u + 12345u;
        const char *k = keys[(x >> 8) % KEYS];
        if (j->set)
            cache->ops->set(cache, k, 16, &in, 0, 0);
        else if (cache->ops->get(cache, k, 16, &v, &buf) != PT_CACHE_OK)
            abort();
    }
    j->ns = (now_ns(CLOCK_MONOTONIC) - t0) / OPS;
    j->cpu_ns = (now_ns(CLOCK_THREAD_CPUTIME_ID) - c0) / OPS;
    pt_buf_free(&buf);
}

static void round_of(const char *what, int set, int threads)
{
    uv_thread_t th[8];
    job_t jobs[8];
    for (int i = 0; i < threads; i++) {
        jobs[i] = (job_t){.set = set, .seed = i + 1};
        uv_thread_create(&th[i], run, &jobs[i]);
    }
    double sum = 0, cpu = 0;
    for (int i = 0; i < threads; i++) {
        uv_thread_join(&th[i]);
        sum += jobs[i].ns;
        cpu += jobs[i].cpu_ns;
    }
    /* CPU time is what a thread spent; wall time also counts waiting for a core */
    printf("%-4s %d thread%s: %6.1f ns/op CPU, %6.1f ns/op wall (per thread)\n", what, threads,
           threads > 1 ? "s" : " ", cpu / threads, sum / threads);
}

int main(void)
{
    pt_cache_limits_t l = {100000, 64ull << 20, 0};
    if (pt_cache_mem_new("bench", &l, &cache) != 0) return 1;
    memset(val, 'v', 64);
    pt_cache_value_t in = {.type = PT_CACHE_STRING, .data = val, .len = 64};
    for (int i = 0; i < KEYS; i++) {
        snprintf(keys[i], sizeof keys[i], "key-%012d", i);
        cache->ops->set(cache, keys[i], 16, &in, 0, 0);
    }
    for (int t = 1; t <= 2; t++) {
        round_of("get", 0, t);
        round_of("set", 1, t);
    }
    cache->ops->free(cache);
    return 0;
}
