/* pt_config_tracing: the `tracing:` section (docs/tracing.md), off when
 * absent:
 *
 *   tracing:
 *     endpoint: http://127.0.0.1:4318/v1/traces   # required: OTLP/HTTP, JSON (or https://)
 *     tls: {ca_file, verify, server_name, cert, key}   # https only (pt_config_upstream_tls)
 *     ratio: 1.0          # of new traces sampled (a caller's flag decides otherwise)
 *     batch_size: 512     # spans a post
 *     queue_size: 8192    # spans waiting at most; past it they are dropped
 *     timeout: 2s         # of one post
 *     interval: 1s        # a batch that is not full goes after this
 *     service_name: portico
 *     headers: {authorization: "Bearer ..."}
 *     enabled: true       # false keeps the section but turns tracing off
 *
 * Read at start only: a reload that changes it is told to restart. */
#ifndef PT_CONFIG_TRACING_H
#define PT_CONFIG_TRACING_H

#include "pt_trace.h"
#include "pt_yaml.h"

/* Parses node (NULL or null: off) into *out. Returns 0, or -1 with
 * "file:line: message" in y->err. */
int pt_config_tracing_parse(const pt_yaml_t *y, yaml_node_t *node, pt_trace_cfg_t *out);

#endif
