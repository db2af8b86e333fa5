/* pt_dispatch: what happens to an HTTP request once it is parsed. Routing
 * (pt_router), security and rate limits run here in C before any Lua; then
 * the handler of the matched channel's type (pt_dispatch_handler.h) takes
 * it: rest and gateway -> a Lua service (pt_dispatch_lua), websocket -> the
 * upgrade (pt_ws), http_proxy -> pt_proxy, amqp_bus -> pt_bus. Whether a
 * request's body streams is the handler's to say, when its head arrives. */
#ifndef PT_DISPATCH_H
#define PT_DISPATCH_H

#include "pt_worker.h"

#include <uv.h>

/* A client connected on w's listener: HTTP/1.1 over plain TCP with the
 * dispatch table of channel types. */
void pt_dispatch_accept(pt_worker_t *w, uv_stream_t *listener);

/* The worker's loop has ended: frees what dispatch keeps for the thread
 * (requests parked for a cluster rate limit are kept for reuse). */
void pt_dispatch_end(pt_worker_t *w);

#endif
