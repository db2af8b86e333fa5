#include "pt_primitives.h"
#include "pt_lua_amqp.h"
#include "pt_lua_cache.h"
#include "pt_lua_http.h"
#include "pt_lua_timer.h"
#include "pt_lua_trace.h"
#include "pt_lua_ws.h"

#include <stddef.h>

/* The order portico.host had them in when pt_lua registered them itself. */
const pt_lua_register_fn pt_primitives[] = {
    pt_lua_amqp_register,
    pt_lua_http_register,
    pt_lua_ws_register,
    pt_lua_cache_register,
    pt_lua_timer_register,
    pt_lua_trace_register,
    NULL,
};
