/* pt_router: maps a method and a raw request path to a channel.
 * Exact paths and templates win over prefix channels (http_proxy, amqp_bus),
 * whose next segment after the prefix names the service.
 * The path is split on '/' and each segment percent-decoded on its own, so an
 * encoded slash never joins segments and no encoding gets round a literal
 * match or an allowlist. Dot segments, NULs and control bytes are refused. */
#ifndef PT_ROUTER_H
#define PT_ROUTER_H

#include "pt_config.h"
#include "pt_route.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name; /* points into the router (template name) */
    const char *value;
    size_t value_len; /* value points into the caller's decode buffer */
} pt_route_param_t;

typedef struct {
    const pt_channel_t *channel;
    pt_route_param_t params[PT_ROUTE_MAX_PARAMS];
    int n_params;
    const char *service; /* the service to run: REST channel's, or the gateway's checked name */
    int listed;          /* gateway: the name is on the allowlist; REST: 1; http_proxy:
                            the channel has the service; amqp_bus: the exchange is allowed */
    const pt_upstream_cfg_t *upstream; /* http_proxy: the service's targets, when listed */
    const char *rest;  /* prefix channels: the raw path after the service ("" or "/a/b"), */
    size_t rest_len;   /* pointing into the caller's path */
    uint64_t allow;    /* on 405: the methods the path accepts */
    const char *error; /* on 400: why */
    char name_buf[PT_SERVICE_NAME_MAX + 1];
} pt_route_match_t;

typedef struct pt_router_s pt_router_t;

/* Compiles the channels of cfg (which must outlive the router). Returns 0, or
 * -1 with a message in err. */
int pt_router_new(const pt_config_t *cfg, pt_router_t **out, char *err, size_t errlen);
/* Frees a router (not the config it was compiled from). NULL is fine. */
void pt_router_free(pt_router_t *r);

/* Matches method (llhttp number) and the raw path/query of a request target.
 * buf must hold path_len + 1 bytes; decoded captures point into it.
 * Returns 0 (matched), 400 (bad path or service name, m->error says why),
 * 404 (no channel) or 405 (m->allow holds the accepted methods). */
int pt_router_match(const pt_router_t *r, int method, const char *path, size_t path_len,
                    const char *query, size_t query_len, char *buf, pt_route_match_t *m);

/* Non-zero when the raw path may reach an http_proxy channel (its raw text
 * starts with a proxy prefix and a '/', or it has a '%' that may encode one):
 * only then is a request routed when its headers are in, so a proxied body
 * can stream. Zero is certain; non-zero asks pt_router_match. */
int pt_router_may_proxy(const pt_router_t *r, const char *path, size_t len);

#endif
