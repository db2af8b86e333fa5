/* pt_lua_timer: the primitives of async work in portico.host, under
 * self:sleep, self:invoke_async and self:defer (lua/portico/runtime.lua):
 *
 *   host.sleep(seconds) -> true | nil, kind, detail
 *     Yields the request's coroutine on a libuv timer of the worker's loop
 *     for seconds (0 to PT_SLEEP_MAX_S; a number out of that range raises)
 *     and resumes it with true. kind "context": not called from a request's
 *     own coroutine (detail says so). kind "cancelled": the wait was cut
 *     short (pt_lua_cancel_all at the drain time-out or when the VM closes,
 *     pt_lua_cancel_run at a scheduler run's time-out), or the worker's
 *     drain time-out has passed already (no new sleep starts then).
 *
 *   host.spawn(fn) -> true | nil, kind, detail
 *     Runs fn() in a task of its own (pt_lua_spawn) from the worker's loop,
 *     on its next iteration: never before the caller's current run ends.
 *     Each spawned run counts as a task of the worker (pt_worker_task_begin),
 *     so a drain waits for it (at most drain_timeout); one still queued when
 *     the drain time-out passes is dropped (and logged). kind "limit": the
 *     worker has PT_ASYNC_MAX runs queued or running already. kind
 *     "context": not called on a worker while a request runs, or the
 *     worker is stopping. fn's errors are fn's own: the Lua side wraps it.
 *
 * Sleep's timer keeps the loop alive, so a worker's loop never ends while a
 * sleep waits: every sleep ends in its timer or its cancel hook, which
 * close the timer and free it in the close callback. */
#ifndef PT_LUA_TIMER_H
#define PT_LUA_TIMER_H

#include <lua.h>

#define PT_SLEEP_MAX_S 3600 /* an hour */
#define PT_ASYNC_MAX 1000   /* async runs queued or running per worker */

/* Adds sleep and spawn to the table on top of L's stack (portico.host); a
 * pt_lua_register_fn of pt_primitives. */
void pt_lua_timer_register(lua_State *L);

/* Async runs queued or running on this thread's worker. */
unsigned pt_lua_timer_outstanding(void);

#endif
