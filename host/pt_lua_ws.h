/* pt_lua_ws: the WebSocket server-push primitive of portico.host, under the
 * Lua module lua/portico/websocket.lua:
 *
 *   host.ws_push(channel, username_or_nil, text) -> count
 *     Sends text (a string of valid UTF-8, else it raises) as one text
 *     message to the sockets of the websocket channel called channel on
 *     every worker: all of them, or only those of username. The text is
 *     handed to each worker's loop (pt_ws_push there); count is the number
 *     of workers it was handed to, not of sockets. With a cluster: section
 *     it is also published to the other nodes (pt_cluster_push.h), and a
 *     text over PT_CLUSTER_PUSH_MAX (1 MiB) is refused before any socket
 *     gets it: nil, "too_large", detail. Never waits. */
#ifndef PT_LUA_WS_H
#define PT_LUA_WS_H

#include <lua.h>

/* Adds ws_push to the table on top of L's stack (portico.host); a
 * pt_lua_register_fn of pt_primitives. */
void pt_lua_ws_register(lua_State *L);

#endif
