/* pt_config_cluster: the cluster: section of the config (docs/cluster.md).
 *
 *   cluster:
 *     node: ""                        # default: <hostname>:<server port>
 *     redis: redis://127.0.0.1:6379/0 # rediss:// for TLS; /N selects database N
 *     password_env: ""                # env var holding the password (AUTH); read at load
 *     tls: {ca_file, verify, server_name, cert, key}   # rediss:// only, as outgoing https
 *     timeout: 1s                     # per command (and per connect)
 *     key_prefix: "portico:"
 *     heartbeat: 2s                   # node registry refresh; seen recently = 3 heartbeats
 *
 * No section: on is 0 and nothing talks to Redis (today's behaviour). The
 * password never appears in the URL (refused there: it would be in every
 * copy of the file and in logs); a password_env naming a variable that is
 * not set refuses the load at its line. The section is read at start only:
 * a reload that changes it warns that it needs a restart. */
#ifndef PT_CONFIG_CLUSTER_H
#define PT_CONFIG_CLUSTER_H

#include "pt_config_upstream_tls.h"
#include "pt_yaml.h"

#include <stdbool.h>
#include <stdint.h>

#define PT_CLUSTER_NODE_MAX 128
#define PT_CLUSTER_PREFIX_MAX 64

typedef struct pt_cluster_cfg_s {
    bool on;                /* a cluster: section is there */
    char *node;             /* this node's name (default <hostname>:<port>) */
    char *redis;            /* the URL as written, without a password (for logs) */
    char *host;             /* Redis host name or IP literal (no brackets) */
    int port;               /* default 6379 */
    int db;                 /* SELECTed after connect when not 0 */
    char *user;             /* ACL user from redis://user@host (AUTH user pass), or NULL */
    char *password_env;     /* the variable's name, or NULL */
    char *password;         /* its value at load (never logged), or NULL: no AUTH */
    pt_upstream_tls_t *tls; /* rediss://: the client context; NULL: plain TCP */
    uint64_t timeout_ms;
    char *key_prefix;
    uint64_t heartbeat_ms;
    int line;
} pt_cluster_cfg_t;

/* Parses the cluster: mapping n into *out (zeroed) for a server listening on
 * listen_port (the default node name's port). Returns 0, or -1 with
 * "file:line: message" written through y (free *out then). */
int pt_config_cluster_parse(const pt_yaml_t *y, yaml_node_t *n, int listen_port,
                            pt_cluster_cfg_t *out);

/* Parses a redis:// or rediss:// URL into out's host, port, db, user and tls
 * flag (*tls). Returns 0, or -1 with a message in err. For tests and the CLI. */
int pt_config_cluster_url(const char *url, pt_cluster_cfg_t *out, int *tls, char *err,
                          size_t errlen);

/* Frees what out holds (not out). */
void pt_config_cluster_free(pt_cluster_cfg_t *out);

/* Non-zero when a and b connect the same way (a reload that changes any of
 * it needs a restart). */
int pt_config_cluster_same(const pt_cluster_cfg_t *a, const pt_cluster_cfg_t *b);

/* The SHA-256 (64 hex digits and a NUL into hex) of the document under root
 * in a canonical form (mapping keys sorted, scalars as parsed, comments and
 * layout gone), leaving out what differs between the nodes of one cluster by
 * design: server.listen, server.tls.listen, admin.listen and cluster.node.
 * Returns 0 or -1 (out of memory). */
int pt_config_checksum(const pt_yaml_t *y, yaml_node_t *root, char hex[65]);

#endif
