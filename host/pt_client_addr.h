/* pt_client_addr: who the client of a request is. The TCP peer, unless the
 * peer is one of server.trusted_proxies: then X-Forwarded-For (every such
 * header, in order, as one comma list) is walked from the right, past the
 * trusted addresses, and the first untrusted one is the client (nginx's
 * real_ip_recursive, Envoy's xff_num_trusted_hops). An entry that is not an
 * IP address ends the walk: the client is then the last hop that was
 * believed. A chain from an untrusted peer is never read. */
#ifndef PT_CLIENT_ADDR_H
#define PT_CLIENT_ADDR_H

#include "pt_config_obs.h"
#include "pt_http_parser.h"

#include <stddef.h>

#define PT_HTTP_CLIENT_MAX 64

/* Writes the client's address of a request from peer (its TCP peer as
 * text) with headers req into out (PT_HTTP_CLIENT_MAX bytes, "" when
 * unknown) and returns out. *xff and *xff_len (may be NULL) get the first
 * X-Forwarded-For value when the peer is trusted (NULL otherwise). */
const char *pt_client_addr(const pt_config_obs_t *o, const char *peer, const pt_http_parser_t *req,
                           char *out, const char **xff, size_t *xff_len);

#endif
