/* pt_lua: one LuaJIT VM per worker, with every service loaded, and the run
 * loop of request coroutines.
 *
 * The run loop. Each request runs runtime.dispatch (lua/portico/runtime.lua)
 * in a coroutine taken from a pool (anchored in the registry with luaL_ref)
 * and given back when the request is done. A run of the coroutine (from
 * pt_lua_dispatch or a resume to its next wait or its end) happens only in
 * this file; when it ends without waiting, the request's done callback is
 * called, exactly once, through one function.
 *
 * The yield protocol, for every primitive that waits (outgoing HTTP, AMQP
 * publish, and those to come):
 *   1. The primitive (a C function of portico.host) checks it runs in the
 *      request's own coroutine (pt_lua_running(pl) == L), checks its
 *      arguments and prepares its operation (op: its own struct).
 *   2. Once nothing can fail without yielding, it calls
 *      t = pt_lua_task_wait(pl, cancel, op), starts or hands over the
 *      operation (either order, as op's ownership needs) and returns
 *      lua_yield(L, 0). From here the primitive owns one resume of t.
 *   3. When the operation ends (a libuv callback on the worker's loop, or
 *      a pt_worker_call from another thread), the primitive pushes its
 *      results on pt_lua_task_state(t) and calls pt_lua_task_resume(t, n).
 *   4. Or the wait is cut short: pt_lua_cancel_all (the drain time-out,
 *      the VM closing) calls cancel(op) instead, and the hook resumes t the
 *      same way with the primitive's own "cancelled" results (nil,
 *      "cancelled", ...). The operation's own completion may still come
 *      later: the primitive must then only free what it owns.
 * Either way a task is resumed exactly once per wait: pt_lua_task_resume
 * ends the wait, so a task resumed by its primitive is never cancelled and
 * a cancelled one is never resumed again by that wait. Resumes happen on the
 * VM's thread, from its loop, never inside a run. Nothing is allocated per
 * wait: the task links itself into the VM's list of waiting tasks. Which
 * primitives a VM has is its creator's choice (pt_lua_new's list): this
 * file knows none of them. */
#ifndef PT_LUA_H
#define PT_LUA_H

#include "pt_config.h"
#include "pt_router.h"
#include "pt_trace.h"

#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct pt_lua_s pt_lua_t;
typedef struct pt_lua_task_s pt_lua_task_t;

typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} pt_lua_header_t;

/* What the host hands to runtime.dispatch. Everything is copied into Lua
 * before pt_lua_dispatch returns, so the caller may free it then. */
typedef struct {
    const char *service;
    const char *cid;
    const char *method;
    const char *path;
    size_t path_len;
    const char *query;
    size_t query_len;
    const pt_lua_header_t *headers;
    size_t n_headers;
    const char *body;
    size_t body_len;
    const pt_channel_t *channel;
    const char *username; /* NULL: anonymous */
    const char *gateway;  /* the trusted gateway's own user when username came in its
                             header (self.channel.security.gateway); NULL: none */
    const pt_route_param_t *params;
    int n_params;
    /* The context of the span the service runs under (pt_trace): copied
     * into the task, where portico.host.trace_parent() finds it when the
     * service first uses self.trace or calls out; NULL: not traced. */
    const pt_trace_ctx_t *trace;
    /* Optional: pushes the value of the request table's amqp field
     * (self.request.amqp: the AMQP channels pass the delivery's properties
     * this way). */
    void (*push_extra)(lua_State *co, void *ud);
    void *extra_ud;
    /* A scheduler run (pt_scheduler): channel is NULL, and the service sees
     * a channel of type "scheduler" named after the job. NULL otherwise. */
    const char *job;
    /* Optional: set to the run's id, for pt_lua_cancel_run (0 when it ended
     * before pt_lua_dispatch returned). */
    uint64_t *run_id;
} pt_lua_call_t;

/* The answer of a service. Valid only during the done callback. */
typedef struct {
    int status;
    const char *body;
    size_t body_len;
    const char *content_type; /* may hold any byte: pt_http checks it */
    size_t content_type_len;
    const char *headers; /* extra "Name: value\r\n" lines, checked; may be empty */
    size_t headers_len;
    int headers_invalid; /* the service set a header that is not valid HTTP: answer 500 */
} pt_lua_result_t;

typedef void (*pt_lua_done_cb)(void *ud, const pt_lua_result_t *res);

/* Adds primitives to the portico.host table on top of L's stack (and leaves
 * the stack as it found it). */
typedef void (*pt_lua_register_fn)(lua_State *L);

/* Creates a VM for worker (1..N; 0 for a check on the main thread), opens the
 * standard libraries (os.exit, os.execute, io.popen and os.setlocale replaced
 * by functions that raise), cjson and portico.host (log, utcnow, now, worker,
 * then what each function of prims adds, in order), and loads every service
 * under cfg->service_dirs. prims: a NULL-terminated list (pt_primitives of
 * pt_primitives.h for a gateway VM), or NULL for none. Returns 0, or -1 with
 * "file:line: message" in err. */
int pt_lua_new(const pt_config_t *cfg, int worker, const pt_lua_register_fn *prims, pt_lua_t **out,
               char *err, size_t errlen);

/* Closes the VM. Tasks still waiting are cancelled first (their cancel hooks
 * resume them, their done callbacks run); while it closes, no primitive can
 * start a wait (pt_lua_running is NULL, pt_lua_task_wait returns NULL). So
 * a primitive's late completion (an AMQP confirm after the worker's loop
 * ended) finds its op cancelled and only frees it. NULL is fine. */
void pt_lua_free(pt_lua_t *pl);

/* Loads (or reloads) one service file through runtime.load. source is the
 * file's text as already read (so a worker compiles exactly what the main
 * thread checked), or NULL to read path now. The file's code runs with the
 * JIT off and under a time budget (lua.load_timeout): past it the load is
 * refused with the line the file was at. The previous version of that
 * file keeps serving unless this returns 0; requests already running finish
 * on the version they started with. Returns 0, or -1 with
 * "file:line: message" in err. */
int pt_lua_load_file(pt_lua_t *pl, const char *path, const char *source, size_t source_len,
                     char *err, size_t errlen);

/* Reads a whole file into *out (malloc, NUL-terminated). Returns 0, or -1
 * with a message in err. */
int pt_lua_read_file(const char *path, char **out, size_t *len, char *err, size_t errlen);

/* Removes the service a file registered (runtime.unload). Returns 0, or -1
 * when that file is not loaded. */
int pt_lua_unload_file(pt_lua_t *pl, const char *path);

/* The name of the service file path registered, or NULL. */
const char *pt_lua_service_of(const pt_lua_t *pl, const char *path);

/* Library files (lua.lib_dirs, portico.libs) and the text a reload checked. */
typedef struct {
    const char *path;
    const char *source; /* NULL: the file was removed */
    size_t len;
} pt_lua_source_t;

/* The loaded service files that required (at load, transitively) a module
 * of one of files: *out (malloc'd paths, free with pt_lua_free_list).
 * Returns 0, or -1 (out of memory, or the runtime failed: logged). */
int pt_lua_lib_dependants(pt_lua_t *pl, const char *const *files, size_t n, char ***out,
                          size_t *n_out);

/* Frees a list of pt_lua_lib_dependants. */
void pt_lua_free_list(char **list, size_t n);

/* Reloads the library files libs (their modules and the library modules
 * that require them leave package.loaded; a library reads its text from
 * libs, not the disk) and with them the services svcs (their texts), each
 * on_load run again, all within lua.load_timeout per service. All or
 * nothing: if one service fails to load (a library that does not load
 * fails each of its dependants), every service keeps the version it ran and
 * the old library modules stay; requests in flight finish on the version
 * they started with. Returns 0, or -1 with "file:line: message" in err. */
int pt_lua_reload_libs(pt_lua_t *pl, const pt_lua_source_t *libs, size_t n_libs,
                       const pt_lua_source_t *svcs, size_t n_svcs, char *err, size_t errlen);

/* Non-zero when a service of that name is loaded. */
int pt_lua_has_service(const pt_lua_t *pl, const char *name);

/* Number of services loaded. */
size_t pt_lua_service_count(const pt_lua_t *pl);

/* The VM's main state, for code of the main thread that reads what the
 * loaded services declare (pt_openapi on the reference VM). Not for a
 * worker's VM while it serves, and never inside a run. */
lua_State *pt_lua_state(pt_lua_t *pl);

/* Starts a request. done(ud, result) is called exactly once: before this
 * returns when the service does not wait, later otherwise. Returns 0, or -1
 * when no coroutine could be made (done is not called then). */
int pt_lua_dispatch(pt_lua_t *pl, const pt_lua_call_t *call, pt_lua_done_cb done, void *ud);

/* Ends run_id's current wait through its cancel hook (its service goes on
 * with the primitive's "cancelled" results), and refuses every later wait
 * of that run (pt_lua_task_wait returns NULL for it), so the run ends soon.
 * Does nothing when that run has ended. Worker thread only. */
void pt_lua_cancel_run(pt_lua_t *pl, uint64_t run_id);

/* Starts a task that runs the function registry[fn_ref] with no arguments
 * (async work: self:invoke_async, self:defer). The reference is the task's
 * from here (it is released, whatever this returns). The function's own
 * errors are its business (the Lua side wraps it in xpcall); a raise that
 * gets here anyway is logged. done(ud, NULL) is called exactly once when it
 * ends: before this returns when it never waits. Returns 0, or -1 when no
 * task could be made or the VM closes (done is not called then). */
int pt_lua_spawn(pt_lua_t *pl, int fn_ref, pt_lua_done_cb done, void *ud);

/* Lets go of a registry reference of pl's (NULL pl: nothing). */
void pt_lua_release(pt_lua_t *pl, int ref);

/* The request budget, for a watchdog on another thread. The number of the
 * VM's current run of a request (from a resume to the next wait or the end):
 * odd while one runs, even between runs. The same odd number seen for longer
 * than the budget means one run has taken that long. Safe from any thread. */
uint64_t pt_lua_run_seq(pt_lua_t *pl);

/* Asks the worker thread of pl (thread) to stop run seq: sends it SIGXCPU,
 * whose handler arms a hook that raises in that run, so the request answers
 * 500 and the log says "ran for more than budget_ms ms without waiting". Does
 * nothing when that run has ended. Compiled code runs no hooks: a loop the JIT
 * compiled whole (while true do end) is not stopped. Call from another
 * thread; only for VMs of workers (worker >= 1). */
void pt_lua_interrupt(pt_lua_t *pl, uv_thread_t thread, uint64_t seq, uint64_t budget_ms);

/* Number of requests currently suspended in a waiting primitive. */
size_t pt_lua_tasks_waiting(const pt_lua_t *pl);

/* Ends a wait early: must resume op's task exactly once, now, through
 * pt_lua_task_resume, with the primitive's own "cancelled" results, and make
 * the operation's later completion harmless (it must not resume again). */
typedef void (*pt_lua_cancel_fn)(void *op);

/* For waiting primitives (C functions called from a service, in the
 * request's own coroutine): marks the running request as waiting on op and
 * returns its task; the primitive then returns lua_yield(L, 0) and later
 * resumes the task exactly once, from its completion or from cancel(op).
 * Call it once nothing can fail without yielding. Returns NULL outside a
 * request, while the VM closes or for a run pt_lua_cancel_run ended: the
 * primitive then must not yield (it ends op and returns its "cancelled"
 * results). */
pt_lua_task_t *pt_lua_task_wait(pt_lua_t *pl, pt_lua_cancel_fn cancel, void *op);

/* Calls the cancel hook of every task waiting now, oldest first: each is
 * resumed with its primitive's "cancelled" results and runs on. Tasks that
 * start waiting meanwhile (a resumed service that calls out again) are not
 * cancelled. Worker thread (the VM's) only. */
void pt_lua_cancel_all(pt_lua_t *pl);

/* The coroutine of the request running right now, or NULL (also while the
 * VM closes). A waiting primitive checks it is called from there, not from
 * a coroutine of the service's own, before it yields. */
lua_State *pt_lua_running(pt_lua_t *pl);

/* The trace context of the request running right now (pt_lua_call_t's
 * trace, as copied), or NULL: none runs, or it is not traced (an async
 * run, a WebSocket message, tracing off). */
const pt_trace_ctx_t *pt_lua_trace(pt_lua_t *pl);

/* The coroutine of a task: push the primitive's results here, then resume. */
lua_State *pt_lua_task_state(pt_lua_task_t *t);

/* Ends t's wait and resumes it with the nargs values pushed on its
 * coroutine; the request runs on to its next wait or its end (done). Call
 * once per wait, from the worker's loop (never from inside a run of the
 * same task). */
void pt_lua_task_resume(pt_lua_task_t *t, int nargs);

#endif
