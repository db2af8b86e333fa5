/* pt_ratelimit: token buckets shared by every worker thread of the process,
 * so a limit of 10/s is 10/s for the process, not 10/s per worker.
 *
 * Buckets are named by an opaque key (pt_http uses "channel\0user") and kept
 * in a hash table split into shards, each behind its own mutex; a take locks
 * one shard for a few hundred nanoseconds. The rate and burst travel with each
 * take, so a config reload changes a limit without losing what was counted.
 * The table is bounded (the process's: 65536 buckets, 64 shards of 1024):
 * a new bucket in a full shard drops one, in constant time: of the 8 least
 * recently used, the oldest that has refilled (forgetting a full bucket
 * changes nothing), else the least recently used. So a caller cycling
 * through millions of names costs a fixed amount of memory, and can at
 * worst make the limiter forget a bucket no one used for longer than
 * those of the names it cycles (docs/security.md, "Rate limits"). */
#ifndef PT_RATELIMIT_H
#define PT_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct pt_ratelimit_s pt_ratelimit_t;

/* What a channel's rate_limit says. rate 0: no limit. */
typedef struct {
    double rate;  /* tokens added per second */
    double burst; /* bucket size: requests allowed at once */
    int per_user; /* one bucket per authenticated user (else one per channel) */
    /* scope: cluster: the bucket lives in the cluster's Redis
     * (pt_ratelimit_cluster.h); 0: in this process (the table below) */
    int cluster;
    int fail_closed; /* on_redis_error: fail_closed (503); 0: fail_open (the local limit) */
    uint32_t batch;  /* cluster: tokens a node takes from Redis at once (1: none kept) */
} pt_ratelimit_cfg_t;

/* Creates a table that holds at most max_buckets buckets (at least one per
 * shard). Returns 0, or -1 when out of memory. */
int pt_ratelimit_new(size_t max_buckets, pt_ratelimit_t **out);

/* Frees a table. No take may be running. NULL is fine. */
void pt_ratelimit_free(pt_ratelimit_t *rl);

/* The process-wide table, made on first use (thread-safe) and kept until the
 * process exits. NULL only when it could not be allocated. */
pt_ratelimit_t *pt_ratelimit_global(void);

/* Takes one token from the bucket named key[0..key_len) that fills at rate
 * per second up to burst; a new bucket starts full. now_ns is a monotonic
 * clock (uv_hrtime). Returns 0 when a token was taken; 1 when the bucket is
 * empty, with the whole seconds until a token is there (at least 1) in
 * *retry_after_s; -1 when out of memory (the caller decides; pt_http lets the
 * request through and logs it). Thread-safe. */
int pt_ratelimit_take(pt_ratelimit_t *rl, const void *key, size_t key_len, double rate,
                      double burst, uint64_t now_ns, uint32_t *retry_after_s);

/* Parses a rate: a number of requests per second ("10", "0.5") or with a
 * unit ("10/s", "600/m", "1000/h", "5/min"). Returns 0 and requests per
 * second in *per_sec (> 0), or -1. */
int pt_ratelimit_parse_rate(const char *s, double *per_sec);

/* Number of buckets in the table (for tests and metrics). Thread-safe. */
size_t pt_ratelimit_count(pt_ratelimit_t *rl);

#endif
