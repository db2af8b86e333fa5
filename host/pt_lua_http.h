/* pt_lua_http: the outgoing HTTP primitive of portico.host, under the Lua
 * module lua/portico/http.lua (self.out.http[name]:get(...) and the rest):
 *
 *   host.http_request(name, head, body, retry, head_only, timeout_ms, max_body)
 *       -> status, headers, body | nil, kind, detail
 *     Sends one request to the outgoing.http connection called name (the
 *     worker's pt_upstream of it) and yields the request's coroutine until
 *     the whole answer is in. head: the request line ("METHOD /target
 *     HTTP/1.1", a token method, a target of visible ASCII without '#')
 *     and header lines ("Name: value", token names, no control bytes in
 *     values), each ending in CRLF, without the blank line; no Host,
 *     Transfer-Encoding, Connection or other hop-by-hop field, and a
 *     Content-Length (at most one) equal to the body's length, which a body
 *     must have. portico.http builds such a head; any other raises, since
 *     it would frame the request otherwise. body: a string or nil.
 *     retry: the method is idempotent, so a failed connection may be tried
 *     again on another target. head_only: a HEAD request. timeout_ms: the
 *     read time-out instead of the connection's (nil or 0: the config's).
 *     max_body: the most response body bytes kept (default 16 MB).
 *     On an answer: status (a number), headers (a table, lower-case names, a
 *     repeated header joined with ", ") and body (a string). Otherwise nil,
 *     kind, detail, kind one of "unknown" (no such connection; detail is the
 *     message), "context" (called outside a request's own coroutine; detail
 *     is the message), "connect", "timeout", "broken", "too_large", "nomem",
 *     "cancelled"; detail then is pt_upstream's reason.
 *
 * A call in flight keeps its exchange and the task: the task is resumed
 * exactly once, from the worker's loop, by the answer or by the call's
 * cancel hook (pt_lua_cancel_all: the worker's drain time-out passed, or
 * the VM closes), which aborts the exchange and resumes the service with
 * nil, "cancelled", "the worker is stopping". */
#ifndef PT_LUA_HTTP_H
#define PT_LUA_HTTP_H

#include <lua.h>

/* Adds the primitive to the table on top of L's stack (portico.host); a
 * pt_lua_register_fn of pt_primitives. */
void pt_lua_http_register(lua_State *L);

#endif
