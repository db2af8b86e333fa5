#include "pt_lua_trace.h"
#include "pt_lua.h"
#include "pt_trace.h"
#include "pt_trace_queue.h"
#include "pt_worker.h"

#include <lauxlib.h>

#include <string.h>

static int pt__id(lua_State *L)
{
    int n = (int)luaL_checkinteger(L, 1);
    if (n != 8 && n != 16) return luaL_error(L, "trace_id: 8 or 16 bytes");
    uint8_t b[16];
    char hex[33];
    pt_trace_random(b, (size_t)n);
    pt_trace_hex(b, (size_t)n, hex);
    lua_pushlstring(L, hex, 2 * (size_t)n);
    return 1;
}

/* trace_parent() -> the traceparent naming the running request's span as
 * the parent, and its tracestate (nil: none); nil when the request is not
 * traced. Formatted only when a service asks (self.trace, a call out): most
 * requests never do, and a string a request is measurable. */
static int pt__parent(lua_State *L)
{
    pt_worker_t *w = pt_worker_self();
    const pt_trace_ctx_t *tc = w && w->lua ? pt_lua_trace(w->lua) : NULL;
    if (!tc) return 0;
    char tp[PT_TRACEPARENT_LEN + 1];
    pt_trace_format(tc, tp);
    lua_pushlstring(L, tp, PT_TRACEPARENT_LEN);
    if (!tc->state_len) return 1;
    lua_pushlstring(L, tc->state, tc->state_len);
    return 2;
}

static int pt__now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)pt_trace_now());
    return 1;
}

static int pt__unhex(const char *s, size_t len, uint8_t *out, size_t n)
{
    if (len != 2 * n) return -1;
    for (size_t i = 0; i < 2 * n; i++) {
        char ch = s[i];
        int v = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (v < 0) return -1;
        out[i / 2] = (uint8_t)(i % 2 ? (out[i / 2] | v) : v << 4);
    }
    return 0;
}

static int pt__emit(lua_State *L)
{
    size_t tl, sl, pl, nl;
    const char *tid = luaL_checklstring(L, 1, &tl), *sid = luaL_checklstring(L, 2, &sl);
    const char *pid = luaL_checklstring(L, 3, &pl), *name = luaL_checklstring(L, 4, &nl);
    int kind = (int)luaL_checkinteger(L, 5);
    pt_trace_ctx_t ctx = {.on = 1, .flags = 1};
    if (pt__unhex(tid, tl, ctx.trace_id, 16) || pt__unhex(sid, sl, ctx.span_id, 8) ||
        (pl && pt__unhex(pid, pl, ctx.parent_id, 8)))
        return luaL_error(L, "trace_emit: bad id");
    if (kind < 1 || kind > 5) return luaL_error(L, "trace_emit: bad kind");
    ctx.start_ns = (uint64_t)luaL_checknumber(L, 6);
    uint64_t end_ns = (uint64_t)luaL_checknumber(L, 7);
    pt_span_t *s = pt_span_new(&ctx, kind, name, nl);
    if (!s) return 0;
    if (lua_istable(L, 8)) {
        lua_pushnil(L);
        while (lua_next(L, 8)) {
            if (lua_type(L, -2) == LUA_TSTRING) {
                size_t kl, vl;
                const char *k = lua_tolstring(L, -2, &kl);
                switch (lua_type(L, -1)) {
                case LUA_TNUMBER: {
                    lua_Number v = lua_tonumber(L, -1);
                    if (v == (lua_Number)(int64_t)v)
                        pt_span_attr(s, 'i' | PT_SPAN_KEY_ESCAPE, k, kl, &(int64_t){(int64_t)v}, 8);
                    else
                        pt_span_attr(s, 'd' | PT_SPAN_KEY_ESCAPE, k, kl, &(double){v}, 8);
                    break;
                }
                case LUA_TBOOLEAN:
                    pt_span_attr(s, 's' | PT_SPAN_KEY_ESCAPE, k, kl,
                                 lua_toboolean(L, -1) ? "true" : "false",
                                 lua_toboolean(L, -1) ? 4 : 5);
                    break;
                case LUA_TSTRING: {
                    const char *v = lua_tolstring(L, -1, &vl);
                    pt_span_attr(s, 's' | PT_SPAN_KEY_ESCAPE, k, kl, v, vl);
                    break;
                }
                default:
                    break;
                }
            }
            lua_pop(L, 1);
        }
    }
    if (lua_isstring(L, 9)) pt_span_error(s, lua_tostring(L, 9));
    s->end_ns = end_ns > ctx.start_ns ? end_ns : ctx.start_ns; /* as timed in Lua */
    pt_span_end(s);
    return 0;
}

void pt_lua_trace_register(lua_State *L)
{
    if (!pt_trace_enabled()) return;
    lua_pushcfunction(L, pt__id);
    lua_setfield(L, -2, "trace_id");
    lua_pushcfunction(L, pt__now);
    lua_setfield(L, -2, "trace_now");
    lua_pushcfunction(L, pt__parent);
    lua_setfield(L, -2, "trace_parent");
    lua_pushcfunction(L, pt__emit);
    lua_setfield(L, -2, "trace_emit");
}
