#include "pt_lua_cache.h"
#include "pt_cache_set.h"
#include "pt_lua.h"
#include "pt_redis.h"
#include "pt_snapshot.h"
#include "pt_util.h"
#include "pt_worker.h"

#include <lauxlib.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int pt__fail(lua_State *L, const char *kind, const char *detail)
{
    lua_pushnil(L);
    lua_pushstring(L, kind);
    lua_pushstring(L, detail);
    return 3;
}

static int pt__fail_rc(lua_State *L, int rc)
{
    const char *kind = rc == PT_CACHE_ETOOLARGE   ? "too_large"
                       : rc == PT_CACHE_EMAXVALUE ? "too_large"
                       : rc == PT_CACHE_ENOTNUM   ? "not_number"
                       : rc == PT_CACHE_ERANGE    ? "range"
                       : rc == PT_CACHE_EINVAL    ? "invalid"
                       : rc == PT_CACHE_EBACKEND  ? "backend"
                       : rc == PT_CACHE_EWAIT     ? "context"
                                                  : "nomem";
    return pt__fail(L, kind, pt_cache_strerror(rc));
}

/* ---- caches that wait (backend: redis) ---- */

enum { PT__GET, PT__SET, PT__INCR, PT__BOOL }; /* what a call's answer pushes */

/* A call of a waiting cache. It holds the generation it started in (its
 * cache lives in that generation's set), so a reload during the wait frees
 * nothing it uses; the reference goes when the backend is done with it. */
typedef struct {
    pt_cache_call_t call;
    pt_snapshot_t *snap;
    pt_lua_task_t *task;
    int kind;
    int phase; /* 0: in the op, 1: answered inside it, 2: waiting, 3: cancelled */
    int early_rc;
} pt__wait_t;

/* Pushes the answer rc of a call (kind) on L; returns how many. */
static int pt__push(lua_State *L, int kind, int rc, const pt_cache_call_t *call)
{
    if (rc == PT_CACHE_EBACKEND || rc == PT_CACHE_EMAXVALUE)
        return pt__fail(L, rc == PT_CACHE_EBACKEND ? "backend" : "too_large", call->err);
    if (rc < 0) return pt__fail_rc(L, rc);
    switch (kind) {
    case PT__GET:
        if (rc == PT_CACHE_MISS) return 0;
        switch (call->value.type) {
        case PT_CACHE_NUMBER:
            lua_pushnumber(L, call->value.number);
            return 1;
        case PT_CACHE_BOOLEAN:
            lua_pushboolean(L, call->value.boolean);
            return 1;
        default:
            lua_pushlstring(L, call->value.data, call->value.len);
            lua_pushboolean(L, call->value.type == PT_CACHE_JSON);
            return 2;
        }
    case PT__INCR:
        lua_pushnumber(L, call->number);
        return 1;
    default: /* set, add, delete, expire */
        lua_pushboolean(L, rc == PT_CACHE_OK);
        return 1;
    }
}

static void pt__wait_free(pt__wait_t *op)
{
    pt_snapshot_release(op->snap);
    free(op);
}

static void pt__wait_done(pt_cache_call_t *call, int rc)
{
    pt__wait_t *op = call->ud;
    if (op->phase == 0) { /* answered before the op returned: keep the bytes */
        op->phase = 1;
        op->early_rc = rc;
        if (rc == PT_CACHE_OK && op->kind == PT__GET && call->value.data &&
            (call->value.type == PT_CACHE_STRING || call->value.type == PT_CACHE_JSON)) {
            pt_buf_t *b = call->buf;
            b->len = 0;
            if (pt_buf_reserve(b, call->value.len + 1) != 0) {
                op->early_rc = PT_CACHE_ENOMEM;
                return;
            }
            memcpy(b->data, call->value.data, call->value.len);
            call->value.data = b->data;
        }
        return;
    }
    if (op->phase == 2) {
        lua_State *co = pt_lua_task_state(op->task);
        pt_lua_task_resume(op->task, pt__push(co, op->kind, rc, call));
    }
    pt__wait_free(op); /* after the resume: the service may still hold the generation */
}

static void pt__wait_cancel(void *arg)
{
    pt__wait_t *op = arg;
    op->phase = 3; /* the backend's answer still comes: it only frees op then */
    lua_State *co = pt_lua_task_state(op->task);
    lua_pushnil(co);
    lua_pushliteral(co, "cancelled");
    lua_pushliteral(co, "the cache call was cancelled");
    pt_lua_task_resume(op->task, 3);
}

/* A call of c for kind: NULL (the failure pushed, *n results) outside a
 * request's own coroutine. */
static pt__wait_t *pt__wait_new(lua_State *L, pt_cache_t *c, int kind, int *n)
{
    pt_worker_t *w = pt_worker_self();
    if (!w || !w->lua || pt_lua_running(w->lua) != L) {
        char detail[PT_CACHE_NAME_MAX + 128];
        snprintf(detail, sizeof detail,
                 "cache '%s' waits on Redis: it is reached while handling a request, in the "
                 "request's own coroutine",
                 c->name);
        *n = pt__fail(L, "context", detail);
        return NULL;
    }
    pt__wait_t *op = calloc(1, sizeof *op);
    if (!op) {
        *n = pt__fail_rc(L, PT_CACHE_ENOMEM);
        return NULL;
    }
    op->call.conn = pt_redis_of_worker(w);
    op->call.done = pt__wait_done;
    op->call.ud = op;
    op->call.buf = lua_touserdata(L, lua_upvalueindex(1));
    op->snap = pt_snapshot_ref(w->snap);
    op->kind = kind;
    return op;
}

/* After the wait op returned rc: answers now, or yields until done. */
static int pt__wait_finish(lua_State *L, pt__wait_t *op, int rc)
{
    if (rc == PT_CACHE_PENDING && op->phase == 1) rc = op->early_rc;
    if (rc != PT_CACHE_PENDING) {
        int n = pt__push(L, op->kind, rc, &op->call);
        pt__wait_free(op);
        return n;
    }
    pt_worker_t *w = pt_worker_self();
    if (!(op->task = pt_lua_task_wait(w->lua, pt__wait_cancel, op))) {
        op->phase = 3; /* done frees it */
        return pt__fail(L, "cancelled", "the run was cancelled");
    }
    op->phase = 2;
    return lua_yield(L, 0);
}

/* The failure of a value over the cache's max_value. */
static int pt__too_big(lua_State *L, const pt_cache_t *c, size_t len, uint64_t max)
{
    char detail[160];
    snprintf(detail, sizeof detail,
             "the value is %zu bytes, more than the cache's max_value (%llu)", len,
             (unsigned long long)max);
    return pt__fail(L, "too_large", detail);
}

/* The cache named by argument 1 in the worker's current generation, or
 * NULL with the failure pushed (*n results). */
static pt_cache_t *pt__cache(lua_State *L, int *n)
{
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    pt_worker_t *w = pt_worker_self();
    if (!w || !w->snap) {
        *n = pt__fail(L, "context", "caches are reached from a worker only");
        return NULL;
    }
    pt_cache_t *c = pt_cache_set_find(w->snap->caches, name, len);
    if (!c) {
        char detail[PT_CACHE_NAME_MAX + 96];
        snprintf(detail, sizeof detail, "no cache named '%.*s' (cache.caches in the config)",
                 len > PT_CACHE_NAME_MAX ? PT_CACHE_NAME_MAX : (int)len, name);
        *n = pt__fail(L, "unknown", detail);
    }
    return c;
}

/* ttl at index i in ms: nil or 0 is the cache's; -1 when out of range. */
static int64_t pt__ttl(lua_State *L, int i)
{
    if (lua_isnoneornil(L, i)) return 0;
    lua_Number t = luaL_checknumber(L, i);
    if (!(t >= 0 && t * 1000 <= (lua_Number)PT_CACHE_TTL_MAX_MS)) return -1;
    return (int64_t)ceil(t * 1000);
}

static int pt__get(lua_State *L)
{
    int n;
    size_t klen;
    pt_cache_t *c = pt__cache(L, &n);
    const char *key = luaL_checklstring(L, 2, &klen);
    if (!c) return n;
    if (c->wait) {
        pt__wait_t *op = pt__wait_new(L, c, PT__GET, &n);
        return op ? pt__wait_finish(L, op, c->wait->get(c, key, klen, &op->call)) : n;
    }
    pt_buf_t *buf = lua_touserdata(L, lua_upvalueindex(1));
    pt_cache_value_t v;
    int rc = c->ops->get(c, key, klen, &v, buf);
    if (rc == PT_CACHE_MISS) return 0;
    if (rc != PT_CACHE_OK) return pt__fail_rc(L, rc);
    switch (v.type) {
    case PT_CACHE_NUMBER:
        lua_pushnumber(L, v.number);
        return 1;
    case PT_CACHE_BOOLEAN:
        lua_pushboolean(L, v.boolean);
        return 1;
    default:
        lua_pushlstring(L, v.data, v.len);
        lua_pushboolean(L, v.type == PT_CACHE_JSON);
        return 2;
    }
}

static int pt__set(lua_State *L)
{
    int n;
    size_t klen;
    pt_cache_t *c = pt__cache(L, &n);
    const char *key = luaL_checklstring(L, 2, &klen);
    int64_t ttl = pt__ttl(L, 5);
    pt_cache_value_t v = {0};
    if (!c) return n;
    switch (lua_type(L, 3)) {
    case LUA_TSTRING:
        v.data = lua_tolstring(L, 3, &v.len);
        v.type = lua_toboolean(L, 4) ? PT_CACHE_JSON : PT_CACHE_STRING;
        break;
    case LUA_TNUMBER:
        v.type = PT_CACHE_NUMBER;
        v.number = lua_tonumber(L, 3);
        break;
    case LUA_TBOOLEAN:
        v.type = PT_CACHE_BOOLEAN;
        v.boolean = lua_toboolean(L, 3);
        break;
    default:
        return pt__fail(L, "invalid", "a value must be a string, a number or a boolean");
    }
    if (ttl < 0) return pt__fail_rc(L, PT_CACHE_EINVAL);
    uint64_t max = __atomic_load_n(&c->max_value, __ATOMIC_RELAXED);
    if ((v.type == PT_CACHE_STRING || v.type == PT_CACHE_JSON) && max && v.len > max)
        return pt__too_big(L, c, v.len, max);
    if (c->wait) {
        pt__wait_t *op = pt__wait_new(L, c, PT__BOOL, &n);
        return op ? pt__wait_finish(L, op,
                                    c->wait->set(c, key, klen, &v, (uint64_t)ttl,
                                                 lua_toboolean(L, 6), &op->call))
                  : n;
    }
    int rc = c->ops->set(c, key, klen, &v, (uint64_t)ttl, lua_toboolean(L, 6));
    if (rc < 0) return pt__fail_rc(L, rc);
    lua_pushboolean(L, rc == PT_CACHE_OK);
    return 1;
}

static int pt__incr(lua_State *L)
{
    int n;
    size_t klen;
    pt_cache_t *c = pt__cache(L, &n);
    const char *key = luaL_checklstring(L, 2, &klen);
    lua_Number by = luaL_checknumber(L, 3);
    int64_t ttl = pt__ttl(L, 4);
    double out;
    if (!c) return n;
    if (ttl < 0) return pt__fail_rc(L, PT_CACHE_EINVAL);
    if (c->wait) {
        pt__wait_t *op = pt__wait_new(L, c, PT__INCR, &n);
        return op ? pt__wait_finish(L, op,
                                    c->wait->incr(c, key, klen, by, (uint64_t)ttl, &op->call))
                  : n;
    }
    int rc = c->ops->incr(c, key, klen, by, (uint64_t)ttl, &out);
    if (rc < 0) return pt__fail_rc(L, rc);
    lua_pushnumber(L, out);
    return 1;
}

static int pt__delete(lua_State *L)
{
    int n;
    size_t klen;
    pt_cache_t *c = pt__cache(L, &n);
    const char *key = luaL_checklstring(L, 2, &klen);
    if (!c) return n;
    if (c->wait) {
        pt__wait_t *op = pt__wait_new(L, c, PT__BOOL, &n);
        return op ? pt__wait_finish(L, op, c->wait->del(c, key, klen, &op->call)) : n;
    }
    int rc = c->ops->del(c, key, klen);
    if (rc < 0) return pt__fail_rc(L, rc);
    lua_pushboolean(L, rc == PT_CACHE_OK);
    return 1;
}

static int pt__expire(lua_State *L)
{
    int n;
    size_t klen;
    pt_cache_t *c = pt__cache(L, &n);
    const char *key = luaL_checklstring(L, 2, &klen);
    int64_t ttl = pt__ttl(L, 3);
    if (!c) return n;
    if (ttl < 0) return pt__fail_rc(L, PT_CACHE_EINVAL);
    if (c->wait) {
        pt__wait_t *op = pt__wait_new(L, c, PT__BOOL, &n);
        return op ? pt__wait_finish(L, op, c->wait->expire(c, key, klen, (uint64_t)ttl, &op->call))
                  : n;
    }
    int rc = c->ops->expire(c, key, klen, (uint64_t)ttl);
    if (rc < 0) return pt__fail_rc(L, rc);
    lua_pushboolean(L, rc == PT_CACHE_OK);
    return 1;
}

static int pt__exists(lua_State *L)
{
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    pt_worker_t *w = pt_worker_self();
    if (!w || !w->snap) return pt__fail(L, "context", "caches are reached from a worker only");
    lua_pushboolean(L, pt_cache_set_find(w->snap->caches, name, len) != NULL);
    return 1;
}

static int pt__buf_gc(lua_State *L)
{
    pt_buf_free(lua_touserdata(L, 1));
    return 0;
}

void pt_lua_cache_register(lua_State *L)
{
    /* get copies a value out under its shard's lock into this VM's buffer */
    pt_buf_t *buf = lua_newuserdata(L, sizeof *buf);
    *buf = (pt_buf_t){0};
    lua_newtable(L);
    lua_pushcfunction(L, pt__buf_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pushcclosure(L, pt__get, 1);
    lua_setfield(L, -2, "cache_get");
    static const luaL_Reg fns[] = {{"cache_set", pt__set},       {"cache_incr", pt__incr},
                                   {"cache_delete", pt__delete}, {"cache_expire", pt__expire},
                                   {"cache_exists", pt__exists}, {NULL, NULL}};
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
}
