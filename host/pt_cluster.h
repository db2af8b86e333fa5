/* pt_cluster: the node registry (docs/cluster.md), on the main loop's Redis
 * connection.
 *
 * Every cluster.heartbeat each node writes <prefix>node:<name>, a JSON
 * record {name, instance, version, checksum, started_at, updated_at,
 * address, admin, pid}, with a TTL of three heartbeats, and its name into the
 * sorted set <prefix>nodes (the index a listing reads instead of a SCAN of
 * the whole keyspace; scores are the write's wall-clock time, and names older
 * than ten heartbeats are pruned from it). In the same round trip it reads
 * the index back and then MGETs the records: the nodes seen recently (a record
 * outlives its node by at most three heartbeats). That view is what
 * GET /cluster shows, at most one heartbeat old, so the admin endpoint never
 * waits on Redis; while Redis is down it shows the last view with
 * "redis_up": false.
 *
 * checksum is pt_config_t.checksum: the nodes of one cluster run the same
 * file but for their listen addresses and node name, so a differing
 * checksum is a node running another config. Each node is flagged
 * config_differs when its checksum is not the one most nodes run (a tie is
 * broken for the asking node's). A clean stop deletes the node's record at
 * once; a killed node's expires. */
#ifndef PT_CLUSTER_H
#define PT_CLUSTER_H

#include "pt_config.h"
#include "pt_redis.h"
#include "pt_util.h"

#include <uv.h>

typedef struct pt_cluster_s pt_cluster_t;

/* Starts the registry of cfg's node on loop over r (the main loop's client;
 * the registry frees it at stop). Its first heartbeat goes now. NULL when
 * out of memory (r is then the caller's). */
pt_cluster_t *pt_cluster_start(uv_loop_t *loop, pt_redis_t *r, const pt_config_t *cfg);

/* A reload: the record carries cfg's checksum from the next heartbeat on
 * (the next is sent now). */
void pt_cluster_config(pt_cluster_t *c, const pt_config_t *cfg);

/* Deletes the node's record, then frees c and its Redis client once that is
 * answered or failed (within cluster.timeout: the loop must run). NULL is
 * fine. */
void pt_cluster_stop(pt_cluster_t *c);

/* GET /cluster's JSON into out: {"node", "checksum", "redis", "redis_up",
 * "updated_ms_ago", "configs_differ", "nodes": [record + "self",
 * "config_differs"]}. */
void pt_cluster_json(pt_cluster_t *c, pt_buf_t *out);

/* The same document from records (JSON texts of node records, NULLs
 * skipped) as the node named self with checksum sees them; for
 * `portico cluster status` reading Redis itself. Returns 0 or -1. */
int pt_cluster_view_json(const char *const *records, size_t n, const char *self,
                         const char *checksum, const char *redis, int redis_up,
                         long long updated_ms_ago, pt_buf_t *out);

#endif
