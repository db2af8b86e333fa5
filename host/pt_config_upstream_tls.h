/* pt_config_upstream_tls: the tls options of an upstream with https://
 * targets (an http_proxy service or an outgoing.http connection).
 *
 *   tls: {ca_file, verify, server_name, cert, key}
 *
 * Parsed, and the client SSL_CTX built, while the config loads (main
 * thread), so an unreadable CA, a certificate that is not PEM or a key that
 * does not match it refuses the load with its file:line. The context is
 * then only read: each worker makes its SSLs on it (SSL_new is safe from
 * any thread), and it is freed with the config. verify: false is allowed,
 * with a warning in the log at each load. */
#ifndef PT_CONFIG_UPSTREAM_TLS_H
#define PT_CONFIG_UPSTREAM_TLS_H

#include "pt_yaml.h"

struct ssl_ctx_st;

typedef struct pt_upstream_tls_s {
    int verify;        /* chain and host name checked (default 1) */
    char *ca_file;     /* trusted besides the system store; NULL: the store only */
    char *server_name; /* SNI and the name checked; NULL: each target's host */
    char *cert, *key;  /* the client certificate, or NULL */
    struct ssl_ctx_st *ctx;
} pt_upstream_tls_t;

/* Parses n (a tls mapping; NULL: the defaults) for the upstream what
 * (where: its node, for a warning's line) into a new *out. Returns 0, or -1
 * with "file:line: message" in y's err. */
int pt_config_upstream_tls(const pt_yaml_t *y, yaml_node_t *n, yaml_node_t *where, const char *what,
                           pt_upstream_tls_t **out);

/* Frees t (NULL is fine). */
void pt_upstream_tls_free(pt_upstream_tls_t *t);

#endif
