#include "pt_lua_ws.h"
#include "pt_json.h"
#include "pt_worker.h"
#include "pt_ws.h"

#include <lauxlib.h>

#include <stdlib.h>
#include <string.h>

/* One push on its way to one worker: owns copies of everything, since it
 * runs later on that worker's loop. */
typedef struct {
    char *channel;
    char *username; /* NULL: everyone on the channel */
    size_t len;
    char text[];
} pt__push_t;

static void pt__push_on_worker(pt_worker_t *w, void *arg)
{
    pt__push_t *p = arg;
    if (w->lua) /* NULL when the worker has ended: only free */
        pt_ws_push(w, p->channel, p->username, p->text, p->len);
    free(p->channel);
    free(p->username);
    free(p);
}

/* Sockets live on every worker: the text goes to each of them. Returns the
 * number of workers it was handed to. */
static int pt__lua_push(lua_State *L)
{
    size_t clen, len;
    const char *channel = luaL_checklstring(L, 1, &clen);
    const char *username = lua_isnoneornil(L, 2) ? NULL : luaL_checkstring(L, 2);
    const char *text = luaL_checklstring(L, 3, &len);
    int n = 0, count = 0;
    /* a text frame is UTF-8 (RFC 6455 5.6): portico.websocket refuses
     * other data first, this holds for any caller */
    if (pt_utf8_check(text, len, NULL) != 0)
        return luaL_argerror(L, 3, "not valid UTF-8 (a text message must be)");
    pt_worker_t *all = pt_worker_all(&n);
    for (int i = 0; i < n; i++) {
        pt__push_t *p = malloc(sizeof *p + len + 1);
        if (!p) break;
        p->channel = strdup(channel);
        p->username = username ? strdup(username) : NULL;
        p->len = len;
        memcpy(p->text, text, len);
        p->text[len] = '\0';
        if (pt_worker_call(&all[i], pt__push_on_worker, p) == 0) {
            count++;
        } else {
            free(p->channel);
            free(p->username);
            free(p);
        }
    }
    lua_pushinteger(L, count);
    return 1;
}

void pt_lua_ws_register(lua_State *L)
{
    lua_pushcfunction(L, pt__lua_push);
    lua_setfield(L, -2, "ws_push");
}
