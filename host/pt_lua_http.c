#include "pt_lua_http.h"
#include "pt_field.h"
#include "pt_lua.h"
#include "pt_upstream.h"
#include "pt_util.h"
#include "pt_worker.h"

#include <lauxlib.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PT__DEFAULT_MAX_BODY (16u * 1024 * 1024)

/* One call of host.http_request: owned here from the start of the exchange
 * until the task is resumed and no completion is due any more (pt__complete
 * frees it; after a cancel, the deferred completion does). */
typedef struct pt__call_s {
    pt_worker_t *w;
    pt_lua_task_t *task; /* set once the coroutine yields; NULL once a cancel answered it */
    pt_upx_t *x;         /* NULL once the exchange is over or aborted */
    int body_ref;        /* the request body string, anchored until the task resumes */
    const char *body;
    size_t body_len;
    size_t max_body;
    int head_only;
    int status;
    pt_buf_t heads;   /* "name\0value\0" per response header, names lower-cased */
    pt_buf_t resp;    /* the response body */
    const char *kind; /* NULL: answered; else why not (see pt_lua_http.h) */
    char detail[256];
    int finished; /* the outcome is known */
    int deferred; /* a pt_worker_call will complete it */
} pt__call_t;

static void pt__free(pt__call_t *c)
{
    pt_buf_free(&c->heads);
    pt_buf_free(&c->resp);
    free(c);
}

static void pt__fail(pt__call_t *c, const char *kind, const char *detail)
{
    c->finished = 1;
    c->kind = kind;
    snprintf(c->detail, sizeof c->detail, "%s", detail ? detail : "");
}

/* Pushes the response headers as a table; a repeated name is joined with ", ". */
static void pt__push_headers(lua_State *co, const pt__call_t *c)
{
    lua_newtable(co);
    const char *p = c->heads.data, *end = p ? p + c->heads.len : NULL;
    while (p && p < end) {
        size_t nlen = strlen(p);
        const char *v = p + nlen + 1;
        size_t vlen = strlen(v);
        lua_pushlstring(co, p, nlen);
        lua_pushvalue(co, -1);
        lua_rawget(co, -3);
        if (lua_isstring(co, -1)) {
            lua_pushliteral(co, ", ");
            lua_pushlstring(co, v, vlen);
            lua_concat(co, 3);
        } else {
            lua_pop(co, 1);
            lua_pushlstring(co, v, vlen);
        }
        lua_rawset(co, -3);
        p = v + vlen + 1;
    }
}

/* Pushes the outcome on co (status, headers, body | nil, kind, detail) and
 * lets the request body go. */
static void pt__push_outcome(lua_State *co, pt__call_t *c)
{
    lua_checkstack(co, 8);
    luaL_unref(co, LUA_REGISTRYINDEX, c->body_ref);
    c->body_ref = LUA_NOREF;
    if (c->kind) {
        lua_pushnil(co);
        lua_pushstring(co, c->kind);
        lua_pushstring(co, c->detail);
    } else {
        lua_pushinteger(co, c->status);
        pt__push_headers(co, c);
        lua_pushlstring(co, c->resp.data ? c->resp.data : "", c->resp.len);
    }
}

/* Resumes the service with the outcome and frees the call. When the task
 * was cancelled (it has been answered already) or the worker's VM is gone
 * (shutdown, maybe on the joining thread), only frees. */
static void pt__complete(pt__call_t *c)
{
    pt_worker_t *w = c->w;
    pt_lua_task_t *t = c->task;
    if (!w->lua || !t) {
        pt__free(c);
        return;
    }
    lua_State *co = pt_lua_task_state(t);
    pt__push_outcome(co, c);
    pt__free(c);
    pt_lua_task_resume(t, 3);
}

static void pt__on_deferred(pt_worker_t *w, void *arg)
{
    pt__call_t *c = arg;
    (void)w;
    pt__complete(c);
}

/* Completes from the loop, not from inside the callback that found the
 * outcome (pt_upstream is in the middle of parsing then). */
static void pt__defer(pt__call_t *c)
{
    if (c->deferred) return;
    c->deferred = 1;
    if (pt_worker_call(c->w, pt__on_deferred, c) != 0) pt__complete(c); /* out of memory */
}

/* ---- the exchange's callbacks ---- */

/* Also called from pt__http_request when pt_upx_start took a kept-alive
 * connection: neither call below calls back (pt_upstream.h). */
static void pt__on_ready(void *ud)
{
    pt__call_t *c = ud;
    if (c->body_len) pt_upx_write(c->x, c->body, c->body_len); /* copied; flow control is moot */
    pt_upx_end_request(c->x);
}

static int pt__on_head(void *ud, int status, const pt_upx_header_t *hs, size_t n,
                       int64_t content_length, int chunked)
{
    pt__call_t *c = ud;
    (void)chunked;
    c->status = status;
    if (!c->head_only && content_length > 0 && (uint64_t)content_length > c->max_body) {
        pt__fail(c, "too_large", NULL);
        c->x = NULL; /* returning -1 aborts it: no more callbacks */
        pt__defer(c);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char *at;
        if (pt_buf_reserve(&c->heads, hs[i].name_len + hs[i].value_len + 2) != 0) goto nomem;
        at = c->heads.data + c->heads.len;
        for (size_t k = 0; k < hs[i].name_len; k++) {
            char ch = hs[i].name[k];
            at[k] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
        }
        at[hs[i].name_len] = '\0';
        memcpy(at + hs[i].name_len + 1, hs[i].value, hs[i].value_len);
        at[hs[i].name_len + 1 + hs[i].value_len] = '\0';
        c->heads.len += hs[i].name_len + hs[i].value_len + 2;
    }
    if (!c->head_only && content_length > 0 &&
        pt_buf_reserve(&c->resp, (size_t)content_length) != 0)
        goto nomem;
    return 0;
nomem:
    pt__fail(c, "nomem", "out of memory buffering the answer");
    c->x = NULL;
    pt__defer(c);
    return -1;
}

static void pt__on_body(void *ud, const char *data, size_t len)
{
    pt__call_t *c = ud;
    if (c->finished) return;
    if (c->resp.len + len > c->max_body) {
        pt__fail(c, "too_large", NULL);
    } else if (pt_buf_append(&c->resp, data, len) != 0) {
        pt__fail(c, "nomem", "out of memory buffering the answer");
    } else {
        return;
    }
    pt_upx_t *x = c->x;
    c->x = NULL;
    pt_upx_abort(x); /* inside the parser: it only marks it, and no callback follows */
    pt__defer(c);
}

static void pt__on_drain(void *ud)
{
    (void)ud;
}

/* The service sees msg, which names the target: its own error to shape. */
static void pt__on_done(void *ud, pt_upx_err_t err, const char *msg, const char *safe)
{
    pt__call_t *c = ud;
    (void)safe;
    c->x = NULL;
    if (!c->finished) {
        switch (err) {
        case PT_UPX_OK:
            c->finished = 1;
            break;
        case PT_UPX_CONNECT:
            pt__fail(c, "connect", msg);
            break;
        case PT_UPX_TIMEOUT:
            pt__fail(c, "timeout", msg);
            break;
        case PT_UPX_NOMEM:
            pt__fail(c, "nomem", msg);
            break;
        default:
            pt__fail(c, "broken", msg);
        }
    }
    if (c->deferred) return; /* pt__on_deferred completes it */
    pt__complete(c);
}

static const pt_upx_handler_t pt__handler = {
    .on_ready = pt__on_ready,
    .on_head = pt__on_head,
    .on_body = pt__on_body,
    .on_drain = pt__on_drain,
    .on_done = pt__on_done,
};

/* pt_lua_cancel_all (the worker's drain time-out, the VM closing): the
 * service need not wait for a slow backend. A live exchange is aborted (no
 * callback follows) and the call completes now with nil, "cancelled". A call
 * whose outcome is already in (deferred: its completion is queued on the
 * loop) is resumed now with that outcome, and the queued completion only
 * frees: that wait was over anyway. */
static void pt__cancel(void *op)
{
    pt__call_t *c = op;
    if (c->deferred) {
        pt_lua_task_t *t = c->task;
        c->task = NULL; /* pt__on_deferred only frees */
        pt__push_outcome(pt_lua_task_state(t), c);
        pt_lua_task_resume(t, 3);
        return;
    }
    pt_upx_t *x = c->x;
    c->x = NULL;
    pt__fail(c, "cancelled", "the worker is stopping");
    if (x) pt_upx_abort(x);
    pt__complete(c);
}

/* ---- the primitive ---- */

static int pt__nil_err(lua_State *L, const char *kind, const char *detail)
{
    lua_pushnil(L);
    lua_pushstring(L, kind);
    lua_pushstring(L, detail);
    return 3;
}

static int pt__ieq(const char *s, size_t n, const char *lit)
{
    size_t k = strlen(lit);
    if (n != k) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
        if (c != lit[i]) return 0;
    }
    return 1;
}

/* Fields that frame the message or belong to the connection: pt_upstream
 * writes Host, the rest would let the caller frame the request otherwise
 * (portico.http's RESERVED, without Content-Length, checked apart). */
static int pt__reserved(const char *name, size_t n)
{
    static const char *const names[] = {"host",       "transfer-encoding", "connection",
                                        "keep-alive", "upgrade",           "te",
                                        "trailer",    "proxy-connection"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (pt__ieq(name, n, names[i])) return 1;
    return 0;
}

/* What portico.http builds, and no more for a service that calls
 * portico.host itself, since the head goes to the target as it is and a
 * pooled connection serves other requests after it: a request line
 * "METHOD /target HTTP/1.1" (a token, then visible ASCII starting with
 * '/'), then "Name: value" lines (a token name, a field value), none of
 * the reserved fields, at most one Content-Length, which must be the
 * body's length (and a body must have one), else bytes of the body would
 * be read as a request of its own. Returns NULL, or why not. */
static const char *pt__head_check(const char *h, size_t n, size_t body_len, int has_body)
{
    const char *end = h + n, *sp, *eol;
    if (n < 2 || h[n - 2] != '\r' || h[n - 1] != '\n') return "the head must end in CRLF";
    if (!(eol = memchr(h, '\n', n)) || eol == h || eol[-1] != '\r')
        return "the request line must end in CRLF";
    size_t line = (size_t)(eol - 1 - h);
    if (!(sp = memchr(h, ' ', line)) || !pt_field_token(h, (size_t)(sp - h)))
        return "the method must be a token";
    const char *target = sp + 1;
    if (line < (size_t)(target - h) + 10 || memcmp(h + line - 9, " HTTP/1.1", 9) != 0)
        return "the request line must end in HTTP/1.1";
    size_t tlen = (size_t)(h + line - 9 - target);
    if (!tlen || target[0] != '/') return "the target must start with '/'";
    for (size_t i = 0; i < tlen; i++)
        if ((unsigned char)target[i] <= 0x20 || (unsigned char)target[i] >= 0x7f ||
            target[i] == '#')
            return "the target must be visible ASCII without '#'";
    int n_cl = 0;
    for (const char *p = eol + 1; p < end; p = eol + 1) {
        eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol || eol == p || eol[-1] != '\r') return "header lines must end in CRLF";
        size_t len = (size_t)(eol - 1 - p);
        const char *colon = memchr(p, ':', len);
        if (!colon || !pt_field_token(p, (size_t)(colon - p)))
            return "a header line must be a token, ':' and a value";
        size_t nlen = (size_t)(colon - p), vlen = len - nlen - 1;
        const char *v = colon + 1;
        if (!pt_field_value(v, vlen)) return "a header value holds a control character";
        if (pt__reserved(p, nlen)) return "a header portico sets itself (Host, framing)";
        if (pt__ieq(p, nlen, "content-length")) {
            while (vlen && (*v == ' ' || *v == '\t'))
                v++, vlen--;
            while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                vlen--;
            uint64_t cl = 0;
            if (++n_cl > 1 || !vlen || vlen > 18) return "one Content-Length of digits";
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9') return "one Content-Length of digits";
                cl = cl * 10 + (uint64_t)(v[i] - '0');
            }
            if (cl != body_len) return "the Content-Length is not the body's length";
        }
    }
    if (has_body && body_len && !n_cl) return "a body needs its Content-Length";
    return NULL;
}

static int pt__http_request(lua_State *L)
{
    size_t head_len, body_len = 0;
    char detail[256];
    const char *name = luaL_checkstring(L, 1);
    const char *head = luaL_checklstring(L, 2, &head_len);
    const char *body = lua_isnoneornil(L, 3) ? NULL : luaL_checklstring(L, 3, &body_len);
    int retry = lua_toboolean(L, 4), head_only = lua_toboolean(L, 5);
    lua_Number timeout_ms = lua_isnoneornil(L, 6) ? 0 : luaL_checknumber(L, 6);
    lua_Number max_body = lua_isnoneornil(L, 7) ? PT__DEFAULT_MAX_BODY : luaL_checknumber(L, 7);
    const char *bad = pt__head_check(head, head_len, body_len, body != NULL);
    if (bad) return luaL_error(L, "http_request: %s", bad);
    if (!(timeout_ms >= 0 && timeout_ms <= 86400000.0))
        return luaL_error(L, "http_request: timeout_ms must be from 0 to 86400000");
    if (!(max_body >= 0 && max_body <= (lua_Number)SIZE_MAX / 2))
        return luaL_error(L, "http_request: max_body out of range");

    pt_worker_t *w = pt_worker_self();
    if (!w || !w->lua || pt_lua_running(w->lua) != L)
        return pt__nil_err(L, "context",
                           "outgoing HTTP calls work only while handling a request, in its own "
                           "coroutine");
    pt_upstream_t *u = w->upstreams ? pt_upstreams_find(w->upstreams, NULL, name) : NULL;
    if (!u) {
        snprintf(detail, sizeof detail, "no outgoing.http connection named '%s'", name);
        return pt__nil_err(L, "unknown", detail);
    }
    pt__call_t *c = calloc(1, sizeof *c);
    if (!c) return pt__nil_err(L, "nomem", "out of memory");
    c->w = w;
    c->max_body = (size_t)max_body;
    c->head_only = head_only;
    c->body = body;
    c->body_len = body_len;
    c->body_ref = LUA_NOREF;
    if (body) {
        lua_pushvalue(L, 3); /* LuaJIT strings do not move: body stays valid while referenced */
        c->body_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }

    /* no upgrade asked for: a 101 is a broken answer */
    pt_upx_req_t req = {.head = head,
                        .head_len = head_len,
                        .retry = retry,
                        .head_only = head_only,
                        .timeout_ms = (uint64_t)timeout_ms};
    int rc = pt_upx_start(u, &req, &pt__handler, c, &c->x);
    if (rc < 0) { /* nothing in flight, and no on_done will come */
        int n = pt__nil_err(L, "connect", "no target can be reached");
        luaL_unref(L, LUA_REGISTRYINDEX, c->body_ref);
        pt__free(c);
        return n;
    }
    if (rc == 1) pt__on_ready(c); /* a kept-alive connection took the head */
    if (!(c->task = pt_lua_task_wait(w->lua, pt__cancel, c))) { /* cannot be: checked above */
        pt_upx_abort(c->x);
        luaL_unref(L, LUA_REGISTRYINDEX, c->body_ref);
        pt__free(c);
        return pt__nil_err(L, "cancelled", "the worker is stopping");
    }
    return lua_yield(L, 0);
}

void pt_lua_http_register(lua_State *L)
{
    lua_pushcfunction(L, pt__http_request);
    lua_setfield(L, -2, "http_request");
}
