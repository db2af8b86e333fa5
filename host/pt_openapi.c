#include "pt_openapi.h"
#include "pt_security_describe.h"

#include <lauxlib.h>
#include <llhttp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t pt__doc_lock = PTHREAD_MUTEX_INITIALIZER;
static pt_openapi_doc_t *pt__doc; /* the published one (one reference) */

typedef struct {
    const pt_config_t *cfg;
    pt_buf_t *out;
    int oom;
} pt__openapi_ctx_t;

static const char *const pt__type_names[] = {
    [PT_CHANNEL_REST] = "rest",
    [PT_CHANNEL_GATEWAY] = "gateway",
    [PT_CHANNEL_AMQP] = "amqp",
    [PT_CHANNEL_WEBSOCKET] = "websocket",
    [PT_CHANNEL_HTTP_PROXY] = "http_proxy",
    [PT_CHANNEL_AMQP_BUS] = "amqp_bus",
    [PT_CHANNEL_OPENAPI] = "openapi",
};

static void pt__set_str(lua_State *L, const char *key, const char *v)
{
    if (!v) return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, key);
}

static void pt__push_list(lua_State *L, char *const *list, size_t n)
{
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, list[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
}

static void pt__server(lua_State *L, int *n, const char *scheme, const char *host, int port)
{
    int v6 = strchr(host, ':') != NULL;
    lua_pushfstring(L, "%s://%s%s%s:%d", scheme, v6 ? "[" : "", host, v6 ? "]" : "", port);
    lua_rawseti(L, -2, ++*n);
}

/* The methods of a channel in a fixed order; HEAD only without GET (it
 * follows GET). */
static void pt__methods(lua_State *L, uint64_t bits)
{
    static const char *const names[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    int n = 0;
    lua_newtable(L);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int m = pt_config_method(names[i]);
        if (m < 0 || !(bits & (1ull << m))) continue;
        if (m == HTTP_HEAD && (bits & (1ull << HTTP_GET))) continue;
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, ++n);
    }
}

static void pt__channel(lua_State *L, const pt_channel_t *ch)
{
    lua_newtable(L);
    pt__set_str(L, "name", ch->name);
    pt__set_str(L, "type", pt__type_names[ch->type]);
    pt__set_str(L, "url_path", ch->url_path);
    pt__set_str(L, "service", ch->service);
    pt__methods(L, ch->methods);
    lua_setfield(L, -2, "methods");
    if (ch->n_service_list) {
        pt__push_list(L, ch->service_list, ch->n_service_list);
        lua_setfield(L, -2, "services");
    }
    if (ch->type == PT_CHANNEL_HTTP_PROXY && ch->n_upstreams) {
        lua_createtable(L, (int)ch->n_upstreams, 0);
        for (size_t i = 0; i < ch->n_upstreams; i++) {
            lua_pushstring(L, ch->upstreams[i].name);
            lua_rawseti(L, -2, (int)i + 1);
        }
        lua_setfield(L, -2, "services");
    }
    if (ch->rate_limit.rate > 0) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "rate_limit");
    }
    if (ch->security) {
        pt_security_info_t info;
        pt_security_describe(ch->security, &info);
        lua_newtable(L);
        pt__set_str(L, "name", info.name);
        pt__set_str(L, "kind", info.kind);
        pt__set_str(L, "header", info.header);
        pt__set_str(L, "realm", info.realm);
        pt__set_str(L, "alg", info.alg);
        lua_setfield(L, -2, "security");
    }
}

/* Under lua_cpcall: an error (out of memory too) is caught. */
static int pt__generate(lua_State *L)
{
    pt__openapi_ctx_t *ctx = lua_touserdata(L, 1);
    const pt_config_t *cfg = ctx->cfg;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "portico.openapi");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "document");
    lua_newtable(L);
    pt__set_str(L, "version", PT_VERSION);
    lua_newtable(L);
    int n = 0;
    pt__server(L, &n, "http", cfg->listen_host, cfg->listen_port);
    if (cfg->tls_listen_host)
        pt__server(L, &n, "https", cfg->tls_listen_host, cfg->tls_listen_port);
    lua_setfield(L, -2, "servers");
    lua_createtable(L, (int)cfg->n_channels, 0);
    for (size_t i = 0; i < cfg->n_channels; i++) {
        pt__channel(L, &cfg->channels[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_setfield(L, -2, "channels");
    lua_call(L, 1, 1);
    size_t len = 0;
    const char *text = lua_tolstring(L, -1, &len);
    if (!text) return luaL_error(L, "portico.openapi.document returned no text");
    if (pt_buf_append(ctx->out, text, len) != 0) ctx->oom = 1;
    return 0;
}

int pt_openapi_generate(pt_lua_t *vm, const pt_config_t *cfg, pt_buf_t *out, char *err,
                        size_t errlen)
{
    lua_State *L = pt_lua_state(vm);
    int top = lua_gettop(L);
    pt__openapi_ctx_t ctx = {.cfg = cfg, .out = out};
    int rc = lua_cpcall(L, pt__generate, &ctx);
    if (rc != 0) {
        const char *msg = lua_tostring(L, -1);
        snprintf(err, errlen, "cannot make the OpenAPI document: %s", msg ? msg : "error");
    } else if (ctx.oom) {
        snprintf(err, errlen, "cannot make the OpenAPI document: out of memory");
    }
    lua_settop(L, top);
    return rc != 0 || ctx.oom ? -1 : 0;
}

int pt_openapi_publish(const char *text, size_t len)
{
    pt_openapi_doc_t *doc = NULL, *old;
    if (text) {
        if (!(doc = malloc(sizeof *doc + len))) return -1;
        doc->refs = 1;
        doc->len = len;
        memcpy(doc->text, text, len);
    }
    pthread_mutex_lock(&pt__doc_lock);
    old = pt__doc;
    pt__doc = doc;
    pthread_mutex_unlock(&pt__doc_lock);
    pt_openapi_release(old);
    return 0;
}

pt_openapi_doc_t *pt_openapi_current(void)
{
    pthread_mutex_lock(&pt__doc_lock);
    pt_openapi_doc_t *doc = pt__doc;
    if (doc) doc->refs++;
    pthread_mutex_unlock(&pt__doc_lock);
    return doc;
}

void pt_openapi_release(pt_openapi_doc_t *doc)
{
    if (!doc) return;
    pthread_mutex_lock(&pt__doc_lock);
    int last = --doc->refs == 0;
    pthread_mutex_unlock(&pt__doc_lock);
    if (last) free(doc);
}
