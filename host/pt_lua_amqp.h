/* pt_lua_amqp: the AMQP primitives of portico.host, under the Lua module
 * lua/portico/amqp.lua (self.out.amqp):
 *
 *   host.amqp_publish(outconn, exchange, routing_key, body, props)
 *       -> true | nil, err
 *     Publishes body (a string) through the outgoing.amqp connection named
 *     outconn. Yields the request's coroutine until the broker confirms (or,
 *     without confirms, until the frame is written); fails at once when the
 *     connection is down. props (a table or nil): content_type,
 *     content_encoding, headers (string keys; string, number or boolean
 *     values), message_id, correlation_id, reply_to, expiration, type,
 *     app_id, persistent (default true), priority (0..255), timestamp.
 *     Wrong argument types raise; broker outcomes return nil, err.
 *     A wait cut short by pt_lua_cancel_all (the worker's drain time-out
 *     passed, or the VM closes) returns nil, "cancelled" at once: the
 *     message was handed to the connection and may still be published and
 *     confirmed (its outcome is not known); the late confirm is only freed.
 *   host.amqp_outconn(name) -> true | false
 *     Whether an outgoing.amqp connection of that name exists. */
#ifndef PT_LUA_AMQP_H
#define PT_LUA_AMQP_H

#include <lua.h>

/* Adds the primitives to the table on top of L's stack (portico.host); a
 * pt_lua_register_fn of pt_primitives. */
void pt_lua_amqp_register(lua_State *L);

#endif
