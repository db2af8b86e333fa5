#include "pt_lua_timer.h"
#include "pt_log.h"
#include "pt_lua.h"
#include "pt_worker.h"

#include <lauxlib.h>

#include <stdio.h>
#include <stdlib.h>

/* A worker is a thread with one VM: its count of async runs is the thread's. */
static _Thread_local unsigned pt__outstanding;

unsigned pt_lua_timer_outstanding(void)
{
    return pt__outstanding;
}

static int pt__nil_err(lua_State *L, const char *kind, const char *detail)
{
    lua_pushnil(L);
    lua_pushstring(L, kind);
    lua_pushstring(L, detail);
    return 3;
}

static void pt__free_handle(uv_handle_t *h)
{
    free(h->data);
}

/* ---- sleep ---- */

typedef struct {
    uv_timer_t timer; /* first: timer.data is the op */
    pt_lua_task_t *task;
} pt__sleep_t;

static void pt__on_wake(uv_timer_t *h)
{
    pt__sleep_t *op = h->data;
    pt_lua_task_t *t = op->task;
    uv_close((uv_handle_t *)h, pt__free_handle);
    lua_pushboolean(pt_lua_task_state(t), 1);
    pt_lua_task_resume(t, 1);
}

static void pt__sleep_cancel(void *arg)
{
    pt__sleep_t *op = arg;
    pt_lua_task_t *t = op->task;
    uv_timer_stop(&op->timer);
    uv_close((uv_handle_t *)&op->timer, pt__free_handle);
    lua_State *co = pt_lua_task_state(t);
    lua_pushnil(co);
    lua_pushliteral(co, "cancelled");
    lua_pushliteral(co, "the sleep was cancelled");
    pt_lua_task_resume(t, 3);
}

static int pt__sleep(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    if (!(s >= 0 && s <= PT_SLEEP_MAX_S))
        return luaL_error(L, "sleep: seconds must be from 0 to %d", PT_SLEEP_MAX_S);
    pt_worker_t *w = pt_worker_self();
    if (!w || !w->lua || pt_lua_running(w->lua) != L)
        return pt__nil_err(L, "context",
                           "sleep works only while handling a request, in its own coroutine");
    if (w->drain_expired) return pt__nil_err(L, "cancelled", "the worker is stopping");
    pt__sleep_t *op = calloc(1, sizeof *op);
    if (!op) return pt__nil_err(L, "nomem", "out of memory");
    uv_timer_init(&w->loop, &op->timer);
    op->timer.data = op;
    if (!(op->task = pt_lua_task_wait(w->lua, pt__sleep_cancel, op))) {
        uv_close((uv_handle_t *)&op->timer, pt__free_handle);
        return pt__nil_err(L, "cancelled", "the run was cancelled");
    }
    uv_timer_start(&op->timer, pt__on_wake, (uint64_t)(s * 1000.0 + 0.5), 0);
    return lua_yield(L, 0);
}

/* ---- spawn ---- */

typedef struct {
    uv_timer_t timer; /* a 0 ms timer: the loop's next iteration */
    pt_worker_t *w;
    int ref; /* the function */
} pt__spawn_t;

static void pt__spawn_end(pt_worker_t *w)
{
    pt__outstanding--;
    pt_worker_task_end(w);
}

static void pt__on_spawn_done(void *ud, const pt_lua_result_t *res)
{
    (void)res;
    pt__spawn_end(ud);
}

static void pt__on_spawn(uv_timer_t *h)
{
    pt__spawn_t *op = h->data;
    pt_worker_t *w = op->w;
    int ref = op->ref;
    uv_close((uv_handle_t *)h, pt__free_handle);
    if (!w->lua || w->drain_expired) {
        pt_log_warn("an async run was dropped: the worker's drain time-out passed");
        pt_lua_release(w->lua, ref);
        pt__spawn_end(w);
        return;
    }
    if (pt_lua_spawn(w->lua, ref, pt__on_spawn_done, w) != 0) {
        pt_log_error("an async run could not start (out of memory)");
        pt__spawn_end(w);
    }
}

static int pt__spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    pt_worker_t *w = pt_worker_self();
    if (!w || !w->lua || !pt_lua_running(w->lua) || w->drain_expired)
        return pt__nil_err(L, "context",
                           "async work starts only while a request runs on a worker that is not "
                           "stopping");
    if (pt__outstanding >= PT_ASYNC_MAX) {
        char msg[128];
        snprintf(msg, sizeof msg, "this worker has %d async runs queued or running (the limit)",
                 PT_ASYNC_MAX);
        return pt__nil_err(L, "limit", msg);
    }
    pt__spawn_t *op = calloc(1, sizeof *op);
    if (!op) return pt__nil_err(L, "nomem", "out of memory");
    op->w = w;
    lua_pushvalue(L, 1);
    op->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    uv_timer_init(&w->loop, &op->timer);
    op->timer.data = op;
    uv_timer_start(&op->timer, pt__on_spawn, 0, 0);
    pt__outstanding++;
    pt_worker_task_begin(w);
    lua_pushboolean(L, 1);
    return 1;
}

void pt_lua_timer_register(lua_State *L)
{
    lua_pushcfunction(L, pt__sleep);
    lua_setfield(L, -2, "sleep");
    lua_pushcfunction(L, pt__spawn);
    lua_setfield(L, -2, "spawn");
}
