/* pt_dispatch_handler: what a channel type's handler is given, and what it
 * is. pt_dispatch routes a request, runs its channel's security and rate
 * limit in C, then calls the handler of the channel's type from a table
 * indexed by pt_channel_type (pt_dispatch.c); a handler answers the
 * connection itself (a response, a streamed exchange, or a hand-over). */
#ifndef PT_DISPATCH_HANDLER_H
#define PT_DISPATCH_HANDLER_H

#include "pt_http.h"
#include "pt_router.h"
#include "pt_security.h"

#include <stddef.h>

/* A routed, let-through request. Every pointer lives only during handle(). */
typedef struct {
    pt_conn_t *c;
    pt_worker_t *w;
    const pt_route_match_t *m;       /* the channel, service, rest, params */
    const pt_security_result_t *sec; /* username, gateway, hide_header */
    int method;                      /* llhttp_method_t */
    const char *path, *query;        /* the target, not decoded; query without '?' */
    size_t path_len, query_len;
} pt_dispatch_req_t;

typedef struct {
    /* 1: the request's body streams (held at its head until handle() is
     * ready for it: pt_http_stream, pt_http_release); 0: read whole first. */
    int stream_body;
    /* Answers r->c, now or later (it may keep c with pt_http_hold). */
    void (*handle)(const pt_dispatch_req_t *r);
} pt_dispatch_handler_t;

#endif
