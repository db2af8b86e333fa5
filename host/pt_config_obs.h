/* pt_config_obs: the observability settings (docs/observability.md):
 *
 *   server:
 *     trusted_proxies: [10.0.0.0/8, "::1/128"]  # peers whose X-Forwarded-For is believed
 *   log:
 *     redact_query: [session]      # more query parameters the access log hides
 *   audit:                         # off unless channels names some
 *     channels: [api.echo]
 *     file: /var/log/portico/audit.log     # or, instead of file:
 *     # amqp: {outgoing: audit.bus, exchange: audit, routing_key: portico}
 *     max_body: 4KB                # per body; longer ones are cut and marked
 *     max_queue: 1MB               # bytes waiting for the sink; past it lines are dropped
 *     redact_json: ["$.password", "$.card.number", "$..token"]
 *     redact_headers: [x-api-key]
 *
 * Parsed by pt_config.c through the functions below; the structs live in
 * pt_config_t (pt_config.h includes this header). */
#ifndef PT_CONFIG_OBS_H
#define PT_CONFIG_OBS_H

#include "pt_yaml.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int family; /* 4 or 6 */
    unsigned char addr[16];
    int prefix; /* bits */
} pt_cidr_t;

/* A JSON path of redact_json: keys from the root ($.a.b) or, with deep, a
 * key at any depth ($..token). */
typedef struct {
    char **keys;
    size_t n;
    int deep;
} pt_json_path_t;

typedef struct {
    pt_cidr_t *trusted;
    size_t n_trusted;
    char **redact_query; /* names (exact, any case) besides the built-in ones */
    size_t n_redact_query;
    /* audit */
    char **audit_channels;
    size_t n_audit_channels;
    char *audit_file;          /* absolute path; NULL: the AMQP sink, or audit off */
    char *audit_amqp_outgoing; /* audit.amqp: an outgoing.amqp name, exchange, routing key */
    char *audit_amqp_exchange;
    char *audit_amqp_routing_key;
    uint64_t audit_max_body;
    uint64_t audit_max_queue;
    pt_json_path_t *redact_json;
    size_t n_redact_json;
    char **redact_headers; /* besides the built-in ones */
    size_t n_redact_headers;
} pt_config_obs_t;

/* server.trusted_proxies (n may be NULL: nothing). Returns 0 or -1 with
 * "file:line: message" in y->err. */
int pt_config_obs_trusted(const pt_yaml_t *y, yaml_node_t *n, pt_config_obs_t *o);

/* log.redact_query. */
int pt_config_obs_redact_query(const pt_yaml_t *y, yaml_node_t *n, pt_config_obs_t *o);

/* The audit: section (NULL: off). */
int pt_config_obs_audit(const pt_yaml_t *y, yaml_node_t *n, pt_config_obs_t *o);

void pt_config_obs_free(pt_config_obs_t *o);

/* 1 when the address text (IPv4 or IPv6) is in one of the ranges. */
int pt_cidr_match(const pt_cidr_t *set, size_t n, const char *addr, size_t len);

/* 1 when a and b have the same audit sink (what needs a restart). */
int pt_config_obs_same_sink(const pt_config_obs_t *a, const pt_config_obs_t *b);

/* 1 when channel is audited. */
int pt_config_obs_audited(const pt_config_obs_t *o, const char *channel);

#endif
