#include "pt_lua_amqp.h"
#include "pt_amqp.h"
#include "pt_log.h"
#include "pt_lua.h"
#include "pt_worker.h"

#include <lauxlib.h>

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* Back on the worker that submitted the job: resume the request with the
 * outcome. When the wait was cancelled (job->ud is NULL: the service has
 * been answered) or the worker's VM is gone (shutdown), only free. */
static void pt__resume(pt_worker_t *w, void *arg)
{
    pt_amqp_job_t *job = arg;
    if (!w->lua || !job->ud) {
        pt_amqp_job_free(job);
        return;
    }
    pt_lua_task_t *t = job->ud;
    lua_State *co = pt_lua_task_state(t);
    int n = 1;
    if (job->failed) {
        lua_pushnil(co);
        lua_pushstring(co, job->error);
        n = 2;
    } else {
        lua_pushboolean(co, 1);
    }
    pt_amqp_job_free(job);
    pt_lua_task_resume(t, n);
}

/* pt_lua_cancel_all (the drain time-out, the VM closing): the service stops
 * waiting for the confirm and gets nil, "cancelled". The job stays with its
 * connection thread, which may still publish it (the broker may still take
 * the message): only the wait ends. job->ud is the submitter's, touched by
 * no other thread, so clearing it here, on the worker, tells pt__resume
 * (which runs on this worker after the connection thread is done with the
 * job) to free it without resuming anything. */
static void pt__cancel(void *op)
{
    pt_amqp_job_t *job = op;
    pt_lua_task_t *t = job->ud;
    job->ud = NULL;
    lua_State *co = pt_lua_task_state(t);
    lua_pushnil(co);
    lua_pushliteral(co, "cancelled");
    pt_lua_task_resume(t, 2);
}

/* On the connection's thread. */
static void pt__on_done(pt_amqp_job_t *job)
{
    if (pt_worker_call(job->ud2, pt__resume, job) != 0) {
        pt_log_error("AMQP: out of memory handing a send's result back to its worker");
        pt_amqp_job_free(job);
    }
}

static int pt__nil_err(lua_State *L, const char *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

/* props.key as bytes in the job: 0 when absent or set, -1 with err. */
static int pt__prop_bytes(lua_State *L, int idx, const char *key, pt_amqp_job_t *job,
                          amqp_bytes_t *out, amqp_flags_t flag, char *err, size_t errlen)
{
    int rc = 0;
    lua_getfield(L, idx, key);
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING || t == LUA_TNUMBER) {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        *out = pt_amqp_job_bytes(job, s, n);
        job->props._flags |= flag;
        if (!out->bytes && n) rc = -1, snprintf(err, errlen, "out of memory");
    } else if (t != LUA_TNIL) {
        rc = -1;
        snprintf(err, errlen, "props.%s: expected a string, got %s", key, lua_typename(L, t));
    }
    lua_pop(L, 1);
    return rc;
}

static int pt__prop_number(lua_State *L, int idx, const char *key, double lo, double hi,
                           double *out, char *err, size_t errlen)
{
    int rc = 0;
    lua_getfield(L, idx, key);
    int t = lua_type(L, -1);
    if (t == LUA_TNUMBER) {
        *out = lua_tonumber(L, -1);
        if (!(*out >= lo && *out <= hi) || floor(*out) != *out)
            rc = -1, snprintf(err, errlen, "props.%s: expected a whole number from %.0f to %.0f",
                              key, lo, hi);
        else
            rc = 1;
    } else if (t != LUA_TNIL) {
        rc = -1;
        snprintf(err, errlen, "props.%s: expected a number, got %s", key, lua_typename(L, t));
    }
    lua_pop(L, 1);
    return rc;
}

static int pt__prop_headers(lua_State *L, int idx, pt_amqp_job_t *job, char *err, size_t errlen)
{
    lua_getfield(L, idx, "headers");
    int t = lua_type(L, -1);
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    if (t != LUA_TTABLE) {
        snprintf(err, errlen, "props.headers: expected a table, got %s", lua_typename(L, t));
        lua_pop(L, 1);
        return -1;
    }
    int tab = lua_gettop(L), n = 0;
    lua_pushnil(L);
    while (lua_next(L, tab)) {
        n++;
        lua_pop(L, 1);
    }
    amqp_table_entry_t *entries =
        n ? amqp_pool_alloc(&job->pool, (size_t)n * sizeof *entries) : NULL;
    if (n && !entries) {
        snprintf(err, errlen, "out of memory");
        lua_pop(L, 1);
        return -1;
    }
    int i = 0, rc = 0;
    lua_pushnil(L);
    while (rc == 0 && lua_next(L, tab)) {
        amqp_table_entry_t *e = &entries[i];
        size_t klen, vlen;
        if (lua_type(L, -2) != LUA_TSTRING) {
            rc = -1;
            snprintf(err, errlen, "props.headers: names must be strings");
        } else {
            const char *k = lua_tolstring(L, -2, &klen);
            e->key = pt_amqp_job_bytes(job, k, klen);
            switch (lua_type(L, -1)) {
            case LUA_TSTRING: {
                const char *v = lua_tolstring(L, -1, &vlen);
                e->value.kind = AMQP_FIELD_KIND_UTF8;
                e->value.value.bytes = pt_amqp_job_bytes(job, v, vlen);
                break;
            }
            case LUA_TBOOLEAN:
                e->value.kind = AMQP_FIELD_KIND_BOOLEAN;
                e->value.value.boolean = lua_toboolean(L, -1);
                break;
            case LUA_TNUMBER: {
                double d = lua_tonumber(L, -1);
                if (floor(d) == d && d >= -9.2e18 && d <= 9.2e18) {
                    e->value.kind = AMQP_FIELD_KIND_I64;
                    e->value.value.i64 = (int64_t)d;
                } else {
                    e->value.kind = AMQP_FIELD_KIND_F64;
                    e->value.value.f64 = d;
                }
                break;
            }
            default:
                rc = -1;
                snprintf(err, errlen, "props.headers.%s: expected a string, number or boolean", k);
            }
            i++;
        }
        lua_pop(L, 1);
    }
    if (rc != 0) lua_pop(L, 1); /* the key lua_next left */
    lua_pop(L, 1);
    if (rc == 0) {
        job->props.headers.num_entries = n;
        job->props.headers.entries = entries;
        job->props._flags |= AMQP_BASIC_HEADERS_FLAG;
    }
    return rc;
}

static int pt__props(lua_State *L, int idx, pt_amqp_job_t *job, char *err, size_t errlen)
{
    amqp_basic_properties_t *p = &job->props;
    double d;
    int rc;
    p->_flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
    p->delivery_mode = 2; /* persistent unless asked otherwise */
    if (idx == 0) return 0;
    for (size_t i = 0; i < pt_amqp_n_string_props; i++) {
        const pt_amqp_string_prop_t *sp = &pt_amqp_string_props[i];
        if (sp->publishable &&
            pt__prop_bytes(L, idx, sp->key, job, (amqp_bytes_t *)((char *)p + sp->off), sp->flag,
                           err, errlen) != 0)
            return -1;
    }
    lua_getfield(L, idx, "persistent");
    int t = lua_type(L, -1);
    if (t == LUA_TBOOLEAN) p->delivery_mode = lua_toboolean(L, -1) ? 2 : 1;
    lua_pop(L, 1);
    if (t != LUA_TBOOLEAN && t != LUA_TNIL) {
        snprintf(err, errlen, "props.persistent: expected a boolean, got %s", lua_typename(L, t));
        return -1;
    }
    if ((rc = pt__prop_number(L, idx, "priority", 0, 255, &d, err, errlen)) < 0) return -1;
    if (rc > 0) {
        p->priority = (uint8_t)d;
        p->_flags |= AMQP_BASIC_PRIORITY_FLAG;
    }
    if ((rc = pt__prop_number(L, idx, "timestamp", 0, 1e15, &d, err, errlen)) < 0) return -1;
    if (rc > 0) {
        p->timestamp = (uint64_t)d;
        p->_flags |= AMQP_BASIC_TIMESTAMP_FLAG;
    }
    return pt__prop_headers(L, idx, job, err, errlen);
}

static int pt__amqp_publish(lua_State *L)
{
    size_t exlen, rklen, blen;
    char err[256];
    const char *name = luaL_checkstring(L, 1);
    const char *ex = luaL_checklstring(L, 2, &exlen);
    const char *rk = luaL_checklstring(L, 3, &rklen);
    const char *body = luaL_checklstring(L, 4, &blen);
    int props = lua_isnoneornil(L, 5) ? 0 : 5;
    if (props) luaL_checktype(L, 5, LUA_TTABLE);
    pt_amqp_out_t *oc = pt_amqp_find(name);
    if (!oc) return luaL_error(L, "no outgoing AMQP connection named '%s'", name);
    if (exlen > 255 || rklen > 255)
        return luaL_error(L, "exchange and routing key names are at most 255 bytes");
    pt_worker_t *w = pt_worker_self();
    if (!w || !w->lua || pt_lua_running(w->lua) != L)
        return pt__nil_err(L, "AMQP sends work only while handling a request, in its own "
                              "coroutine");
    pt_amqp_job_t *job = pt_amqp_job_new();
    if (!job) return pt__nil_err(L, "out of memory");
    job->exchange = pt_amqp_job_bytes(job, ex, exlen);
    job->routing_key = pt_amqp_job_bytes(job, rk, rklen);
    job->body = pt_amqp_job_bytes(job, body, blen);
    if ((exlen && !job->exchange.bytes) || (rklen && !job->routing_key.bytes) ||
        (blen && !job->body.bytes)) {
        pt_amqp_job_free(job);
        return pt__nil_err(L, "out of memory");
    }
    if (pt__props(L, props, job, err, sizeof err) != 0) {
        pt_amqp_job_free(job);
        return luaL_error(L, "%s", err);
    }
    if (!pt_amqp_available(oc)) {
        pt_amqp_job_free(job);
        snprintf(err, sizeof err, "no connection to the broker of '%s'", name);
        return pt__nil_err(L, err);
    }
    /* before the submit: the job belongs to the connection thread after it */
    if (!(job->ud = pt_lua_task_wait(w->lua, pt__cancel, job))) { /* cannot be: checked above */
        pt_amqp_job_free(job);
        return pt__nil_err(L, "cancelled");
    }
    job->done = pt__on_done;
    job->ud2 = w;
    pt_amqp_submit(oc, job);
    return lua_yield(L, 0);
}

static int pt__amqp_outconn(lua_State *L)
{
    lua_pushboolean(L, pt_amqp_find(luaL_checkstring(L, 1)) != NULL);
    return 1;
}

void pt_lua_amqp_register(lua_State *L)
{
    lua_pushcfunction(L, pt__amqp_publish);
    lua_setfield(L, -2, "amqp_publish");
    lua_pushcfunction(L, pt__amqp_outconn);
    lua_setfield(L, -2, "amqp_outconn");
}
