/* pt_cache_mem: the in-process backend of pt_cache (pt_cache_backend_ops_t):
 * a hash table in 16 shards, each with its own mutex and its own LRU list,
 * so threads that touch different keys rarely meet. Keys are hashed with
 * SipHash (libsodium's crypto_shorthash) under a random key, so a client
 * that picks the keys cannot pile them into one chain.
 *
 * The caps (entries, accounted bytes: pt_cache_entry_bytes) hold for the
 * whole cache: counts are process-wide atomics, and a set that passes a cap
 * evicts the least recently used entry of the process (each shard publishes
 * its LRU tail's last use; the oldest of those goes; uses on other threads
 * within one tick of the coarse clock are in no set order). An expired entry goes
 * when it is next touched, or when it comes up for eviction (it is counted
 * as expired then). While concurrent sets are in flight the counts may pass
 * a cap by at most one entry per setting thread, for the time of the set. */
#ifndef PT_CACHE_MEM_H
#define PT_CACHE_MEM_H

#include "pt_cache.h"

#define PT_CACHE_MEM_SHARDS 16

/* A new empty cache called name (copied) with caps l. Returns 0 and the
 * cache (refs 0, no registry) in *out, or PT_CACHE_ENOMEM. */
int pt_cache_mem_new(const char *name, const pt_cache_limits_t *l, pt_cache_t **out);

/* Replaces the cache's clock (nanoseconds, monotonic) for tests; NULL: the
 * real one. Call before other threads use c. */
void pt_cache_mem_clock(pt_cache_t *c, uint64_t (*now_ns)(void *ud), void *ud);

#endif
