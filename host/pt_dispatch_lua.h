/* pt_dispatch_lua: the handler of rest and gateway channels: the request
 * runs a Lua service (pt_lua_dispatch) and its result is the response. In a
 * file of its own so that only it includes the Lua bridge. */
#ifndef PT_DISPATCH_LUA_H
#define PT_DISPATCH_LUA_H

#include "pt_dispatch_handler.h"

/* 404 for a service not loaded, 403 for one not on the channel's
 * allowlist, else the service's answer (500 when its headers are bad). */
extern const pt_dispatch_handler_t pt_dispatch_lua;

#endif
