/* pt_ws: WebSocket channels (RFC 6455, frames by wslay).
 *
 * After an authenticated GET on a websocket channel, pt_ws_upgrade answers
 * 101 and takes the connection over: pt_http hands it every byte read. Each
 * text message is JSON and runs a service like a REST request; a message
 * {"service": ..., "request_id": ..., "data": ...} may call any service the
 * channel allows and its reply carries the same request_id, so many calls can
 * be in flight on one socket and come back in any order. Errors come back as
 * messages; protocol violations close with the matching close code. Pings go
 * out every ping_interval; a peer that misses missed_pings of them is closed. */
#ifndef PT_WS_H
#define PT_WS_H

#include "pt_config.h"

#include <stddef.h>

struct pt_conn_s;
struct pt_worker_s;
typedef struct pt_ws_s pt_ws_t;

/* Checks the handshake headers of c's request. Returns 0 after writing 101
 * and switching c to WebSocket, or the HTTP status to refuse it with (400
 * for a malformed handshake, 426 without the upgrade headers). */
int pt_ws_upgrade(struct pt_conn_s *c, const pt_channel_t *ch, const char *username);

/* Bytes read from a WebSocket connection. */
void pt_ws_on_read(pt_ws_t *ws, const char *data, size_t len);

/* The connection's handles are closed: frees ws, or lets the last service
 * call in flight free it. */
void pt_ws_detach(pt_ws_t *ws);

/* Sends text to this worker's sockets on channel, all of them or only
 * username's (NULL: all). Returns how many sockets it was queued on. */
size_t pt_ws_push(struct pt_worker_s *w, const char *channel, const char *username,
                  const char *text, size_t len);

/* Adds ws_push(channel, username_or_nil, text) to the portico.host table on
 * top of L's stack: server push to the sockets of every worker. */
struct lua_State;
void pt_ws_lua_register(struct lua_State *L);

/* Closes every socket of this worker with 1001 (the worker drains). */
void pt_ws_close_all(struct pt_worker_s *w);

#endif
