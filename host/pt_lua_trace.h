/* pt_lua_trace: the tracing primitives of portico.host, under self.trace
 * (lua/portico/trace.lua). Registered only when tracing is on, so a
 * service's self.trace is a no-op object otherwise:
 *
 *   host.trace_id(n) -> n random bytes as lower-case hex (n 8 or 16)
 *   host.trace_now() -> the wall clock in unix nanoseconds (a number)
 *   host.trace_parent() -> traceparent, tracestate (nil: none) of the
 *     running request's span, or nothing when the request is not traced
 *     (the context is copied into the task by pt_lua_dispatch and formatted
 *     only here, when a service first uses self.trace or calls out)
 *   host.trace_emit(trace_id, span_id, parent_id, name, kind, start_ns,
 *                   end_ns, attrs, err) -> nothing
 *     Hands a finished span to the exporter (pt_span_end): ids as hex
 *     (parent_id "" for a root), kind 1..5 (OTLP's), attrs a table of
 *     string keys to strings, numbers or booleans (NULL: none), err a status
 *     message (nil: ok). A bad id or kind raises. */
#ifndef PT_LUA_TRACE_H
#define PT_LUA_TRACE_H

#include <lua.h>

/* Adds the primitives to the portico.host table on top of L's stack. */
void pt_lua_trace_register(lua_State *L);

#endif
