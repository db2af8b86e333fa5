/* pt_lua: one LuaJIT VM per worker, with every service loaded, and the run
 * loop of request coroutines.
 *
 * Each request runs runtime.dispatch (lua/portico/runtime.lua) in a coroutine
 * taken from a pool (anchored in the registry with luaL_ref) and given back
 * when the request is done. A waiting primitive yields the coroutine after
 * storing its operation in the task (pt_lua_task_wait); its libuv callback
 * later pushes results and calls pt_lua_task_resume. Every path that ends a
 * request goes through one function that calls the done callback exactly once. */
#ifndef PT_LUA_H
#define PT_LUA_H

#include "pt_config.h"
#include "pt_router.h"

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
    /* Optional: pushes one more argument for runtime.dispatch, after gateway
     * (the AMQP channels pass the delivery's properties this way). */
    void (*push_extra)(lua_State *co, void *ud);
    void *extra_ud;
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

/* Creates a VM for worker (1..N; 0 for a check on the main thread), opens the
 * standard libraries (os.exit, os.execute, io.popen and os.setlocale replaced
 * by functions that raise), cjson and portico.host, and loads every service
 * under cfg->service_dirs. Returns 0, or -1 with "file:line: message" in err. */
int pt_lua_new(const pt_config_t *cfg, int worker, pt_lua_t **out, char *err, size_t errlen);

/* Closes the VM. No task may be in flight. */
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

/* Non-zero when a service of that name is loaded. */
int pt_lua_has_service(const pt_lua_t *pl, const char *name);

/* Number of services loaded. */
size_t pt_lua_service_count(const pt_lua_t *pl);

/* Starts a request. done(ud, result) is called exactly once: before this
 * returns when the service does not wait, later otherwise. Returns 0, or -1
 * when no coroutine could be made (done is not called then). */
int pt_lua_dispatch(pt_lua_t *pl, const pt_lua_call_t *call, pt_lua_done_cb done, void *ud);

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

/* For waiting primitives (C functions called from a service): marks the
 * running request as waiting and returns its task; the primitive then returns
 * lua_yield(L, 0). Returns NULL when called outside a request. */
pt_lua_task_t *pt_lua_task_wait(pt_lua_t *pl);

/* The coroutine of the request running right now, or NULL. A waiting
 * primitive checks it is called from there, not from a coroutine of the
 * service's own, before it yields. */
lua_State *pt_lua_running(pt_lua_t *pl);

/* The coroutine of a task: push the primitive's results here, then resume. */
lua_State *pt_lua_task_state(pt_lua_task_t *t);

/* Resumes a waiting task with the nargs values pushed on its coroutine. */
void pt_lua_task_resume(pt_lua_task_t *t, int nargs);

#endif
