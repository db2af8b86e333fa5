#include "pt_lua_cache.h"
#include "pt_cache_set.h"
#include "pt_util.h"
#include "pt_worker.h"

#include <lauxlib.h>

#include <math.h>
#include <stdio.h>

static int pt__fail(lua_State *L, const char *kind, const char *detail)
{
    lua_pushnil(L);
    lua_pushstring(L, kind);
    lua_pushstring(L, detail);
    return 3;
}

static int pt__fail_rc(lua_State *L, int rc)
{
    const char *kind = rc == PT_CACHE_ETOOLARGE ? "too_large"
                       : rc == PT_CACHE_ENOTNUM ? "not_number"
                       : rc == PT_CACHE_ERANGE  ? "range"
                       : rc == PT_CACHE_EINVAL  ? "invalid"
                                                : "nomem";
    return pt__fail(L, kind, pt_cache_strerror(rc));
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
