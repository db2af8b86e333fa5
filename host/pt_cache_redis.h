/* pt_cache_redis: the `backend: redis` caches (docs/cluster-cache.md): the
 * values live in the cluster's Redis under <key_prefix>cache:<name>:<key>,
 * so every node reads what any node set, and the ops are Redis commands
 * sent on the calling worker's pt_redis connection (pt_cache_call_t.conn).
 * They are pt_cache_wait_ops_t: a call returns PT_CACHE_PENDING and
 * completes on the worker's loop; the synchronous ops answer
 * PT_CACHE_EWAIT.
 *
 * Atomic across nodes: set is one SET (PX for a ttl), add one SET NX, incr
 * and expire one script each (INCRBYFLOAT, and the ttl of a key it makes,
 * in one step), so no read-then-write race exists between nodes.
 *
 * Values are stored with their type: a string as "s" + bytes, JSON as
 * "j" + text, a boolean as "b1"/"b0", a number as its decimal text (so
 * INCRBYFLOAT works on it; a value with none of these shapes reads back as
 * a string).
 *
 * The near cache (near_cache: {ttl}) is a process's own pt_cache_mem copy
 * of what it read or wrote, served without a round trip for at most its
 * ttl: another node's write is seen within that ttl. A write of this
 * process drops (or replaces) its copy at once, and a read that a write of
 * this process overtook does not store its older answer.
 *
 * A Redis failure (down, slower than cluster.timeout) answers
 * PT_CACHE_EBACKEND with the reason in call->err, is counted
 * (portico_cache_failures_total) and logged at most once a second per
 * cache. */
#ifndef PT_CACHE_REDIS_H
#define PT_CACHE_REDIS_H

#include "pt_cache.h"

/* A redis cache of spec (spec->key_prefix must be set). Returns 0 and the
 * cache (refs 0) in *out, or PT_CACHE_ENOMEM. */
int pt_cache_redis_new(const pt_cache_spec_t *spec, pt_cache_t **out);

/* Registers pt_cache_redis_new with pt_cache_set (once, before the first
 * config's caches open). */
void pt_cache_redis_install(void);

#endif
