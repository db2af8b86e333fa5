#include "pt_lua_ws.h"
#include "pt_cluster_push.h"
#include "pt_json.h"
#include "pt_redis.h"
#include "pt_worker.h"

#include <lauxlib.h>

#include <stdlib.h>
#include <string.h>

/* Sockets live on every worker, and with a cluster on every node: the text
 * goes to each worker here (pt_cluster_push_fanout) and to the other nodes
 * through Redis (pt_cluster_push_publish). Returns the number of workers
 * it was handed to, or nil, "too_large", detail for a cluster push over
 * PT_CLUSTER_PUSH_MAX (then no socket gets it). */
static int pt__lua_push(lua_State *L)
{
    size_t len;
    const char *channel = luaL_checkstring(L, 1);
    const char *username = lua_isnoneornil(L, 2) ? NULL : luaL_checkstring(L, 2);
    const char *text = luaL_checklstring(L, 3, &len);
    /* a text frame is UTF-8 (RFC 6455 5.6): portico.websocket refuses
     * other data first, this holds for any caller */
    if (pt_utf8_check(text, len, NULL) != 0)
        return luaL_argerror(L, 3, "not valid UTF-8 (a text message must be)");
    pt_worker_t *w = pt_worker_self();
    /* a process started with a cluster: section has a connection per worker
     * (none once the worker drained: its last pushes stay local) */
    int cluster = w && pt_redis_of_worker(w) != NULL;
    if (cluster && !pt_cluster_push_fits(len)) {
        char err[160];
        pt_cluster_push_publish(w, channel, username, text, len, err, sizeof err);
        lua_pushnil(L);
        lua_pushliteral(L, "too_large");
        lua_pushstring(L, err);
        return 3;
    }
    int count = pt_cluster_push_fanout(channel, username, text, len);
    if (cluster) {
        char err[160];
        pt_cluster_push_publish(w, channel, username, text, len, err, sizeof err);
    }
    lua_pushinteger(L, count);
    return 1;
}

void pt_lua_ws_register(lua_State *L)
{
    lua_pushcfunction(L, pt__lua_push);
    lua_setfield(L, -2, "ws_push");
}
