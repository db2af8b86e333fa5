/* pt_cluster_push: WebSocket push across the nodes of a cluster
 * (docs/cluster-push.md). self.out.websocket:send reaches this process's
 * sockets through pt_cluster_push_fanout (every worker, pt_ws_push) and,
 * with a cluster: section, every other node through Redis pub/sub: the
 * sending worker PUBLISHes one frame on <key_prefix>ws over its own
 * pt_redis connection (so one sender's pushes keep their order: Redis
 * delivers one connection's publishes in order), and each node's one
 * subscriber hands the frames of other nodes to its workers in the order
 * they came. A frame names the process that sent it (a random instance id
 * beside the node name), and that process skips it: it delivered locally.
 *
 * The frame: "PTWS1 <ilen> <nlen> <clen> <ulen|-1>\n" then the instance
 * id, node name, channel and username bytes, then the text. Its text is at
 * most PT_CLUSTER_PUSH_MAX bytes (larger pushes are refused before any
 * socket gets them). A push made while Redis is unreachable reaches this
 * node's sockets only; the failure is counted and logged once a second.
 *
 * The subscriber is made only once a config has both a cluster: section
 * and a WebSocket channel (pt_cluster_push_apply, at start and on each
 * reload), and stays until pt_cluster_push_stop. */
#ifndef PT_CLUSTER_PUSH_H
#define PT_CLUSTER_PUSH_H

#include "pt_config.h"
#include "pt_util.h"

#include <stddef.h>
#include <uv.h>

struct pt_worker_s;

#define PT_CLUSTER_PUSH_MAX (1u << 20)

/* Hands text to channel's sockets (username's only, or all: NULL) on every
 * worker of this process, in order with the other messages of each.
 * Returns how many workers it was handed to. Any thread. */
int pt_cluster_push_fanout(const char *channel, const char *username, const char *text, size_t len);

/* Publishes the push to the other nodes, from worker w (w->cfg has a
 * cluster: section). Returns 0 (queued on w's connection; a later failure
 * is counted), or -1 with the reason in err (text over
 * PT_CLUSTER_PUSH_MAX: checked first, so nothing was sent anywhere). */
int pt_cluster_push_publish(struct pt_worker_s *w, const char *channel, const char *username,
                            const char *text, size_t len, char *err, size_t errlen);

/* Whether a push of len bytes may go (checked before the local fan-out). */
static inline int pt_cluster_push_fits(size_t len)
{
    return len <= PT_CLUSTER_PUSH_MAX;
}

/* Main thread: makes the subscriber on loop for the cluster cc (the start
 * config's: the section is read at start only) when cc is on, cfg has a
 * WebSocket channel and there is none yet. Returns 0, or -1 (out of
 * memory: logged). */
int pt_cluster_push_apply(uv_loop_t *loop, const pt_config_t *cfg, const pt_cluster_cfg_t *cc);

/* Main thread, at stop: frees the subscriber. */
void pt_cluster_push_stop(void);

/* Appends the Prometheus text of the cross-node pushes (published,
 * received, skipped own, failures), when a subscriber or a publish was
 * ever made. */
void pt_cluster_push_metrics(pt_buf_t *out);

#endif
