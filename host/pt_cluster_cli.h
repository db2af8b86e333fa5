/* pt_cluster_cli: `portico cluster status` (docs/cluster.md). */
#ifndef PT_CLUSTER_CLI_H
#define PT_CLUSTER_CLI_H

/* Lists the nodes of config_path's cluster as GET /cluster of its admin
 * listener sees them, or, with from_redis (or no admin.listen, or nothing
 * answering there), as the registry in its Redis holds them (read here, on
 * a loop of its own). Prints one line per node (json: the document as it
 * is). Returns the exit code: 0 all nodes run one config, 1 configs differ,
 * 2 nothing could be read (the reason on stderr). */
int pt_cluster_status_cli(const char *config_path, int json, int from_redis);

#endif
