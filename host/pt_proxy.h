/* pt_proxy: the http_proxy dispatch strategy, no Lua on the way.
 *
 * /<prefix>/<service>/rest?q goes to a target of the channel's <service> at
 * /rest?q. pt_http holds the request at the end of its headers (security and
 * rate limits have run: pt_dispatch) until pt_upstream has a connection,
 * then streams the body to the target as it is parsed, and the answer back
 * as it arrives, with flow control both ways: memory stays flat for any
 * body size.
 *
 * Headers (RFC 9110 section 7.6.1): hop-by-hop ones (Connection and what it
 * names, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding,
 * Upgrade) are not forwarded in either direction; the body framing is
 * rebuilt on each side. The target gets Host set to itself,
 * X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, Via and the
 * request's X-Correlation-Id; the client's own X-Forwarded-*, Forwarded and
 * X-Real-IP are dropped (the gateway is the edge), and the credential that
 * let the request in is dropped when the security definition hides it. A
 * WebSocket handshake (a GET with Upgrade: websocket; no other protocol)
 * goes to the target, and after its 101 the two connections are joined
 * byte for byte, with flow control each way.
 *
 * Trailers are forwarded in neither direction. pt_upstream checks the
 * answer (pt_upstream.h); a 101 is taken only with the Upgrade the client
 * asked for.
 *
 * A target that cannot be reached gives 502, one that does not answer in
 * time 504, a refused answer 502, each with the JSON error body and the cid
 * and a message naming no internal address (the log names it, at warn level
 * with the cid); once a byte of the answer reached the client, a failure can
 * only close the client's connection. */
#ifndef PT_PROXY_H
#define PT_PROXY_H

#include "pt_http.h"
#include "pt_router.h"

#include <stddef.h>

typedef struct pt_proxy_s pt_proxy_t;

/* Starts proxying the held request c to m->upstream: c's body goes to the
 * target through the sink set here (pt_http_stream), the answer back
 * through pt_http_write, a 101 joins the two connections (pt_http_hand_over).
 * hide_header (or NULL) is the credential header not to forward. Answers c
 * itself on failure. */
void pt_proxy_start(pt_conn_t *c, const pt_route_match_t *m, const char *hide_header);

#endif
