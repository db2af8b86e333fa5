#include "pt_lua.h"
#include "pt_field.h"
#include "pt_json.h"
#include "pt_log.h"
#include "pt_util.h"
#include "pt_watch.h"

#include <lauxlib.h>
#include <luajit.h>
#include <lualib.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

int luaopen_cjson(lua_State *L);
int luaopen_cjson_safe(lua_State *L);

struct pt_lua_task_s {
    pt_lua_t *pl;
    lua_State *co;
    int ref;
    int waiting;
    pt_lua_done_cb done;
    void *ud;
    pt_lua_task_t *next_free;
    /* while waiting: the primitive's hook and op, and the task's place in
     * pl's list of waiting tasks (oldest first) */
    pt_lua_cancel_fn cancel;
    void *op;
    uint64_t wait_seq; /* which wait of the VM this is: a sweep ends at its start */
    uint64_t swept;    /* the sweep that called cancel (0: none) */
    pt_lua_task_t *wait_prev, *wait_next;
    uint64_t run_id;      /* this run's (pt_lua_cancel_run); 0 when free */
    int doomed;           /* pt_lua_cancel_run: no more waits */
    int spawned;          /* pt_lua_spawn's: done gets no result */
    pt_trace_ctx_t trace; /* the request's context (trace.on 0: not traced) */
};

typedef struct {
    char *path;
    char *name;
} pt__svc_t;

struct pt_lua_s {
    lua_State *L;
    int dispatch_ref;
    pt_lua_task_t *free_tasks;
    pt_lua_task_t *running;
    size_t n_waiting;
    pt_lua_task_t *wait_head, *wait_tail; /* the waiting tasks, by wait_seq */
    uint64_t wait_seq;                    /* waits started so far */
    uint64_t sweeps;                      /* pt_lua_cancel_all runs so far */
    uint64_t runs;                        /* run ids given so far */
    int closing;                          /* pt_lua_free: no new waits */
    int runtime_ref;
    pt__svc_t *services; /* what each loaded file registered */
    size_t n_services;
    pt_buf_t scratch;
    uint64_t load_timeout_ms;
    /* the service file being loaded, for the budget hook */
    const char *loading;
    uint64_t load_deadline_ns;
    int load_over; /* the budget ran out: every instruction raises now */
    int load_line; /* where the file was when it did (0: not known) */
    /* The request budget (pt_lua_interrupt). run_seq is odd while a request
     * runs, even between runs; only this VM's thread writes it. */
    _Atomic uint64_t run_seq;
    _Atomic uint64_t stop_seq; /* the run another thread asked to stop */
    _Atomic uint64_t stop_ms;  /* the budget it ran past, for the message */
    int stop_armed;            /* the stop hook is set */
    int stop_raises;           /* how often it raised in this run */
};

/* The VM loading a file on this thread; a hook has only the lua_State. */
static _Thread_local pt_lua_t *pt__loading_vm;

/* The worker VM of this thread, for the request budget's signal handler. */
static _Thread_local pt_lua_t *pt__thread_vm;
static void pt__on_sigxcpu(int sig);

/* ---- portico.host: the C primitives under the lua/portico modules ---- */

static int pt__host_log(lua_State *L)
{
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    int level = luaL_checkoption(L, 1, "info", levels);
    size_t len;
    const char *msg = luaL_checklstring(L, 2, &len);
    const char *cid = luaL_optstring(L, 3, NULL);
    const char *service = luaL_optstring(L, 4, NULL);
    pt_log_write((pt_log_level_t)level, cid, service, msg, len);
    return 0;
}

static int pt__host_utcnow(lua_State *L)
{
    char now[32];
    pt_utcnow(now);
    lua_pushstring(L, now);
    return 1;
}

static int pt__host_now(lua_State *L)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    lua_pushnumber(L, (double)tv.tv_sec + tv.tv_usec / 1e6);
    return 1;
}

/* lua/portico/runtime.lua binds these with the FFI (ffi.C, the binary is
 * linked with -E); nothing in C calls them, so this reference is what brings
 * pt_json.o out of the static library into the binary. */
__attribute__((used)) static const void *const pt__ffi_exports[] = {(const void *)pt_json_check,
                                                                    (const void *)pt_utf8_check};

/* What stands in for a call services do not get (upvalues: its name, why). */
static int pt__forbidden(lua_State *L)
{
    return luaL_error(L, "%s is not available to services: %s",
                      lua_tostring(L, lua_upvalueindex(1)), lua_tostring(L, lua_upvalueindex(2)));
}

/* The gateway's process is not a service's: os.exit would end it (on a hot
 * reload too), os.execute and io.popen fork it with every socket it holds,
 * os.setlocale changes how every thread reads and writes numbers (cjson,
 * strtod). docs/contract.md lists them. */
static void pt__forbid(lua_State *L, const char *const (*calls)[2], size_t n, const char *why)
{
    for (size_t i = 0; i < n; i++) {
        lua_getglobal(L, calls[i][0]);
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        lua_pushfstring(L, "%s.%s", calls[i][0], calls[i][1]);
        lua_pushstring(L, why);
        lua_pushcclosure(L, pt__forbidden, 2);
        lua_setfield(L, -2, calls[i][1]);
        lua_pop(L, 1);
    }
}

static void pt__restrict(lua_State *L)
{
    static const char *const calls[][2] = {
        {"os", "exit"}, {"os", "execute"}, {"io", "popen"}, {"os", "setlocale"}};
    pt__forbid(L, calls, sizeof calls / sizeof calls[0], "it acts on the whole gateway process");
}

/* What the runtime uses but services must not, taken away once it has been
 * loaded (it keeps its own references): the load and request budgets are a
 * count hook over interpreted code, so debug.sethook would clear it and
 * jit.on would compile a loop past it; the FFI reaches any C function of the
 * process (exit, kill, raw memory), so require "ffi" fails for services. */
static void pt__restrict_services(lua_State *L)
{
    static const char *const calls[][2] = {
        {"debug", "sethook"}, {"jit", "on"}, {"jit", "off"}, {"jit", "flush"}};
    pt__forbid(L, calls, sizeof calls / sizeof calls[0],
               "it would lift the time budget of loads and requests");
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    /* the module stays anchored: the runtime holds only its functions, and a
     * collected ffi table takes state its cdata still use with it (a crash) */
    lua_getfield(L, -1, "ffi");
    lua_setfield(L, LUA_REGISTRYINDEX, "portico.ffi");
    lua_pushnil(L);
    lua_setfield(L, -2, "ffi");
    lua_pop(L, 1);
    lua_getfield(L, -1, "preload");
    lua_pushliteral(L, "require \"ffi\"");
    lua_pushliteral(L, "it reaches every C function of the gateway process");
    lua_pushcclosure(L, pt__forbidden, 2);
    lua_setfield(L, -2, "ffi");
    lua_pop(L, 2);
}

static void pt__open_host(lua_State *L, int worker, const pt_lua_register_fn *prims)
{
    static const luaL_Reg fns[] = {
        {"log", pt__host_log}, {"utcnow", pt__host_utcnow}, {"now", pt__host_now}, {NULL, NULL}};
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    for (; prims && *prims; prims++)
        (*prims)(L);
    lua_pushinteger(L, worker);
    lua_setfield(L, -2, "worker");
    lua_setfield(L, -2, "portico.host");
    lua_pop(L, 1);
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_cjson);
    lua_setfield(L, -2, "cjson");
    lua_pushcfunction(L, luaopen_cjson_safe);
    lua_setfield(L, -2, "cjson.safe");
    lua_pop(L, 2);
}

/* ---- service files ---- */

static pt__svc_t *pt__find_path(pt_lua_t *pl, const char *path)
{
    for (size_t i = 0; i < pl->n_services; i++)
        if (strcmp(pl->services[i].path, path) == 0) return &pl->services[i];
    return NULL;
}

/* Calls runtime[fn](path[, source]) under pcall; leaves one result on the stack. */
static int pt__runtime_call(pt_lua_t *pl, const char *fn, const char *path, const char *source,
                            size_t source_len)
{
    lua_State *L = pl->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, pl->runtime_ref);
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    lua_pushstring(L, path);
    if (source) lua_pushlstring(L, source, source_len);
    return lua_pcall(L, source ? 2 : 1, 1, 0);
}

int pt_lua_read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    pt_buf_t b = {0};
    char chunk[8192];
    size_t n;
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (pt_buf_append(&b, chunk, n) != 0) break;
    int failed = ferror(f) || (!feof(f));
    fclose(f);
    if (failed || !b.data) {
        if (!failed && !b.data) { /* an empty file */
            *out = strdup("");
            *len = 0;
            return *out ? 0 : -1;
        }
        pt_buf_free(&b);
        snprintf(err, errlen, "%s: cannot read", path);
        return -1;
    }
    *out = b.data;
    *len = b.len;
    return 0;
}

static uint64_t pt__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The deepest line of the file being loaded on L's stack, or 0. */
static int pt__loading_line(pt_lua_t *pl, lua_State *L)
{
    lua_Debug ar;
    size_t n = strlen(pl->loading);
    for (int level = 0; lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "Sl", &ar)) break;
        if (ar.source[0] == '@' && strncmp(ar.source + 1, pl->loading, n) == 0 &&
            ar.source[n + 1] == '\0' && ar.currentline > 0)
            return ar.currentline;
    }
    return 0;
}

/* The count hook of a load: past the deadline, the file is refused. From
 * then on every instruction raises, so a file that catches errors in a loop
 * (while true do pcall(f) end) cannot go on either. */
static void pt__load_hook(lua_State *L, lua_Debug *ar)
{
    pt_lua_t *pl = pt__loading_vm;
    if (!pl) return;
    if (!pl->load_over) {
        if (pt__now_ns() < pl->load_deadline_ns) return;
        pl->load_over = 1;
        pl->load_line = pt__loading_line(pl, L);
        lua_sethook(L, pt__load_hook, LUA_MASKCOUNT, 1);
    }
    lua_pushliteral(L, "the load time budget is spent");
    lua_error(L);
}

/* Runs call(pl, ud) (a runtime function) under the budget. JIT-compiled
 * code runs no hooks, and a loop in a file (while true do end) becomes a
 * trace at once, so the JIT is off while a file runs: the file's code is
 * new, so no trace of its own exists yet. Code compiled before (the
 * runtime's, other services') could still run unhooked; the main thread
 * checks every file first in a VM that serves no requests and so has none.
 * path: the file whose line a message names; budget_ms: the time allowed. */
static int pt__budgeted(pt_lua_t *pl, const char *path, uint64_t budget_ms,
                        int (*call)(pt_lua_t *, void *), void *ud)
{
    lua_State *L = pl->L;
    pl->loading = path;
    pl->load_over = 0;
    pl->load_line = 0;
    pl->load_deadline_ns = pt__now_ns() + budget_ms * 1000000u;
    pt__loading_vm = pl;
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    lua_sethook(L, pt__load_hook, LUA_MASKCOUNT, 1000);
    int rc = call(pl, ud);
    lua_sethook(L, NULL, 0, 0);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_ON);
    pt__loading_vm = NULL;
    pl->loading = NULL;
    return rc;
}

typedef struct {
    const char *path, *source;
    size_t len;
} pt__load_args_t;

static int pt__call_load(pt_lua_t *pl, void *ud)
{
    pt__load_args_t *a = ud;
    return pt__runtime_call(pl, "load", a->path, a->source, a->len);
}

static int pt__load_budgeted(pt_lua_t *pl, const char *path, const char *source, size_t len)
{
    pt__load_args_t a = {path, source, len};
    return pt__budgeted(pl, path, pl->load_timeout_ms, pt__call_load, &a);
}

/* The message of a failed budgeted call (the result on the stack is popped). */
static void pt__budget_error(pt_lua_t *pl, const char *path, uint64_t budget_ms, char *err,
                             size_t errlen)
{
    lua_State *L = pl->L;
    if (pl->load_over)
        snprintf(err, errlen,
                 "%s:%d: still running after %llu ms of loading (an endless loop at load "
                 "time?); refused (lua.load_timeout)",
                 path, pl->load_line > 0 ? pl->load_line : 1, (unsigned long long)budget_ms);
    else
        snprintf(err, errlen, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : path);
    lua_pop(L, 1);
}

/* Records the name the file path registered. */
static int pt__set_name(pt_lua_t *pl, const char *path, const char *name)
{
    char *copy = strdup(name);
    if (!copy) return -1;
    pt__svc_t *svc = pt__find_path(pl, path);
    if (!svc) {
        pt__svc_t *grown = realloc(pl->services, (pl->n_services + 1) * sizeof *grown);
        if (!grown) {
            free(copy);
            return -1;
        }
        pl->services = grown;
        svc = &pl->services[pl->n_services++];
        svc->path = strdup(path);
    } else {
        free(svc->name);
    }
    svc->name = copy;
    return 0;
}

int pt_lua_load_file(pt_lua_t *pl, const char *path, const char *source, size_t source_len,
                     char *err, size_t errlen)
{
    lua_State *L = pl->L;
    char *own = NULL;
    if (!source) {
        if (pt_lua_read_file(path, &own, &source_len, err, errlen) != 0) return -1;
        source = own;
    }
    int rc = pt__load_budgeted(pl, path, source, source_len);
    free(own);
    if (rc != 0) {
        pt__budget_error(pl, path, pl->load_timeout_ms, err, errlen);
        return -1;
    }
    const char *name = lua_tostring(L, -1);
    rc = pt__set_name(pl, path, name ? name : "");
    lua_pop(L, 1);
    if (rc != 0) snprintf(err, errlen, "out of memory");
    return rc;
}

int pt_lua_unload_file(pt_lua_t *pl, const char *path)
{
    pt__svc_t *svc = pt__find_path(pl, path);
    if (!svc) return -1;
    if (pt__runtime_call(pl, "unload", path, NULL, 0) != 0)
        pt_log_error("unloading %s: %s", path, lua_tostring(pl->L, -1));
    lua_pop(pl->L, 1);
    free(svc->path);
    free(svc->name);
    *svc = pl->services[--pl->n_services];
    return 0;
}

const char *pt_lua_service_of(const pt_lua_t *pl, const char *path)
{
    for (size_t i = 0; i < pl->n_services; i++)
        if (strcmp(pl->services[i].path, path) == 0) return pl->services[i].name;
    return NULL;
}

int pt_lua_lib_dependants(pt_lua_t *pl, const char *const *files, size_t n, char ***out,
                          size_t *n_out)
{
    lua_State *L = pl->L;
    *out = NULL;
    *n_out = 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, pl->runtime_ref);
    lua_getfield(L, -1, "lib_dependants");
    lua_remove(L, -2);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, files[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    if (lua_pcall(L, 1, 1, 0) != 0 || !lua_istable(L, -1)) {
        pt_log_error("finding the dependants of a library: %s",
                     lua_isstring(L, -1) ? lua_tostring(L, -1) : "not a list");
        lua_pop(L, 1);
        return -1;
    }
    size_t len = lua_objlen(L, -1);
    char **list = calloc(len + 1, sizeof *list);
    for (size_t i = 0; list && i < len; i++) {
        lua_rawgeti(L, -1, (int)i + 1);
        const char *p = lua_tostring(L, -1);
        list[i] = p ? strdup(p) : NULL;
        lua_pop(L, 1);
        if (!list[i]) {
            pt_lua_free_list(list, i);
            list = NULL;
        }
    }
    lua_pop(L, 1);
    if (!list) return -1;
    *out = list;
    *n_out = len;
    return 0;
}

void pt_lua_free_list(char **list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        free(list[i]);
    free(list);
}

typedef struct {
    const pt_lua_source_t *libs, *svcs;
    size_t n_libs, n_svcs;
} pt__reload_args_t;

/* runtime.reload_libs({file = text|false}, {path = text}) */
static int pt__call_reload_libs(pt_lua_t *pl, void *ud)
{
    pt__reload_args_t *a = ud;
    lua_State *L = pl->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, pl->runtime_ref);
    lua_getfield(L, -1, "reload_libs");
    lua_remove(L, -2);
    lua_createtable(L, 0, (int)a->n_libs);
    for (size_t i = 0; i < a->n_libs; i++) {
        if (a->libs[i].source)
            lua_pushlstring(L, a->libs[i].source, a->libs[i].len);
        else
            lua_pushboolean(L, 0);
        lua_setfield(L, -2, a->libs[i].path);
    }
    lua_createtable(L, 0, (int)a->n_svcs);
    for (size_t i = 0; i < a->n_svcs; i++) {
        lua_pushlstring(L, a->svcs[i].source, a->svcs[i].len);
        lua_setfield(L, -2, a->svcs[i].path);
    }
    return lua_pcall(L, 2, 1, 0);
}

int pt_lua_reload_libs(pt_lua_t *pl, const pt_lua_source_t *libs, size_t n_libs,
                       const pt_lua_source_t *svcs, size_t n_svcs, char *err, size_t errlen)
{
    if (n_svcs == 0) return 0;
    pt__reload_args_t a = {libs, svcs, n_libs, n_svcs};
    uint64_t budget = pl->load_timeout_ms * n_svcs;
    if (pt__budgeted(pl, svcs[0].path, budget, pt__call_reload_libs, &a) != 0) {
        pt__budget_error(pl, svcs[0].path, budget, err, errlen);
        return -1;
    }
    lua_State *L = pl->L;
    int rc = 0;
    if (lua_istable(L, -1)) { /* { path = name }: a file may have changed its name */
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING &&
                pt__set_name(pl, lua_tostring(L, -2), lua_tostring(L, -1)) != 0)
                rc = -1;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    if (rc != 0) snprintf(err, errlen, "out of memory");
    return rc;
}

static int pt__load_services(pt_lua_t *pl, const pt_config_t *cfg, char *err, size_t errlen)
{
    pt_watch_list_t files;
    if (pt_watch_scan(cfg->service_dirs, cfg->n_service_dirs, &files) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < files.n; i++)
        rc = pt_lua_load_file(pl, files.files[i].path, NULL, 0, err, errlen);
    pt_watch_list_free(&files);
    return rc;
}

int pt_lua_new(const pt_config_t *cfg, int worker, const pt_lua_register_fn *prims, pt_lua_t **out,
               char *err, size_t errlen)
{
    pt_lua_t *pl = calloc(1, sizeof *pl);
    if (!pl || !(pl->L = luaL_newstate())) {
        free(pl);
        snprintf(err, errlen, "cannot create a Lua VM");
        return -1;
    }
    lua_State *L = pl->L;
    pl->load_timeout_ms = cfg->lua_load_timeout_ms;
    if (worker > 0) {
        /* the request budget's signal: only workers run requests */
        struct sigaction sa = {.sa_handler = pt__on_sigxcpu, .sa_flags = SA_RESTART};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGXCPU, &sa, NULL);
        pt__thread_vm = pl;
    }
    luaL_openlibs(L);
    pt__restrict(L);
    pt__open_host(L, worker, prims);
    /* Every request leaves ~1 KB of tables behind; a cycle per doubling of the
     * live heap (LuaJIT's 200) marked the live heap often enough to be ~4 % of
     * a small JSON request's instructions (docs/benchmarks.md). */
    lua_gc(L, LUA_GCSETPAUSE, cfg->lua_gc_pause);

    /* the portico library first (a lib cannot shadow portico.*), then the
     * lib dirs; never a service directory (a service is not a module) */
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua", cfg->lua_path, cfg->lua_path);
    for (size_t i = 0; i < cfg->n_lib_dirs; i++) {
        lua_pushfstring(L, ";%s/?.lua;%s/?/init.lua", cfg->lib_dirs[i], cfg->lib_dirs[i]);
        lua_concat(L, 2);
    }
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);

    lua_getglobal(L, "require");
    lua_pushliteral(L, "portico.runtime");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        snprintf(err, errlen, "%s: cannot load portico.runtime from %s: %s", cfg->path,
                 cfg->lua_path, lua_tostring(L, -1));
        goto fail;
    }
    /* the request budget can stop only code that is not compiled */
    lua_pushboolean(L, cfg->lua_request_timeout_ms > 0);
    lua_setfield(L, -2, "interpret_services");
    lua_pushvalue(L, -1);
    pl->runtime_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "dispatch");
    if (!lua_isfunction(L, -1)) {
        snprintf(err, errlen, "portico.runtime has no dispatch function");
        goto fail;
    }
    pl->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    /* runtime.use_libs(lib_dirs, portico's path): require records who uses what */
    lua_getfield(L, -1, "use_libs");
    lua_createtable(L, (int)cfg->n_lib_dirs, 0);
    for (size_t i = 0; i < cfg->n_lib_dirs; i++) {
        lua_pushstring(L, cfg->lib_dirs[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua", cfg->lua_path, cfg->lua_path);
    if (lua_pcall(L, 2, 0, 0) != 0) {
        snprintf(err, errlen, "%s: cannot set up lua.lib_dirs: %s", cfg->path, lua_tostring(L, -1));
        goto fail;
    }
    lua_pop(L, 1);
    pt__restrict_services(L);
    if (pt__load_services(pl, cfg, err, errlen) != 0) goto fail;
    *out = pl;
    return 0;
fail:
    pt_lua_free(pl);
    return -1;
}

void pt_lua_free(pt_lua_t *pl)
{
    if (!pl) return;
    /* A task still waiting (an AMQP confirm that the drain did not wait
     * for) is answered "cancelled" now, so its done callback frees what it
     * holds, and its op knows the later completion must only free. While
     * closing, no primitive starts a wait: one sweep ends them all. */
    pl->closing = 1;
    pt_lua_cancel_all(pl);
    if (pt__thread_vm == pl) pt__thread_vm = NULL;
    while (pl->free_tasks) {
        pt_lua_task_t *t = pl->free_tasks;
        pl->free_tasks = t->next_free;
        free(t);
    }
    if (pl->L) lua_close(pl->L);
    for (size_t i = 0; i < pl->n_services; i++) {
        free(pl->services[i].path);
        free(pl->services[i].name);
    }
    free(pl->services);
    pt_buf_free(&pl->scratch);
    free(pl);
}

int pt_lua_has_service(const pt_lua_t *pl, const char *name)
{
    for (size_t i = 0; i < pl->n_services; i++)
        if (strcmp(pl->services[i].name, name) == 0) return 1;
    return 0;
}

size_t pt_lua_service_count(const pt_lua_t *pl)
{
    return pl->n_services;
}

lua_State *pt_lua_state(pt_lua_t *pl)
{
    return pl->L;
}

size_t pt_lua_tasks_waiting(const pt_lua_t *pl)
{
    return pl->n_waiting;
}

/* ---- the run loop ---- */

static pt_lua_task_t *pt__task_get(pt_lua_t *pl)
{
    pt_lua_task_t *t = pl->free_tasks;
    if (t) {
        pl->free_tasks = t->next_free;
        return t;
    }
    if (!(t = calloc(1, sizeof *t))) return NULL;
    t->pl = pl;
    t->co = lua_newthread(pl->L);
    t->ref = luaL_ref(pl->L, LUA_REGISTRYINDEX);
    return t;
}

/* A coroutine that ended in an error cannot run again: drop it. */
static void pt__task_put(pt_lua_task_t *t, int reusable)
{
    pt_lua_t *pl = t->pl;
    if (!reusable) {
        luaL_unref(pl->L, LUA_REGISTRYINDEX, t->ref);
        t->co = lua_newthread(pl->L);
        t->ref = luaL_ref(pl->L, LUA_REGISTRYINDEX);
    }
    lua_settop(t->co, 0);
    t->done = NULL;
    t->ud = NULL;
    t->waiting = 0;
    t->run_id = 0;
    t->doomed = 0;
    t->spawned = 0;
    t->trace.on = 0;
    t->next_free = pl->free_tasks;
    pl->free_tasks = t;
}

/* Headers the host owns: a service cannot set or duplicate them. */
static int pt__header_reserved(const char *s, size_t n)
{
    static const char *const names[] = {"content-length", "transfer-encoding", "connection",
                                        "date",           "x-correlation-id",  "content-type",
                                        "keep-alive",     "upgrade",           NULL};
    for (const char *const *r = names; *r; r++)
        if (strlen(*r) == n && strncasecmp(*r, s, n) == 0) return 1;
    return 0;
}

/* Gathers the service's response.headers into pl->scratch as "Name: value\r\n"
 * lines. Each name and value is checked on its own (pt_field), before they
 * are joined: a name holding ": x\r\nSet-Cookie" would make a block that
 * looks well formed. Returns 0, or -1 when one is not valid HTTP (the answer
 * is then a 500). Headers the host owns are left out. */
static int pt__collect_headers(pt_lua_t *pl, lua_State *co, int idx)
{
    int rc = 0;
    pl->scratch.len = 0;
    if (!lua_istable(co, idx)) return 0;
    lua_pushnil(co);
    while (lua_next(co, idx)) {
        size_t nlen, vlen;
        if (lua_type(co, -2) == LUA_TSTRING &&
            (lua_type(co, -1) == LUA_TSTRING || lua_type(co, -1) == LUA_TNUMBER)) {
            const char *name = lua_tolstring(co, -2, &nlen);
            const char *value = lua_tolstring(co, -1, &vlen);
            if (!pt_field_token(name, nlen) || !pt_field_value(value, vlen)) {
                rc = -1;
            } else if (!pt__header_reserved(name, nlen)) {
                pt_buf_append(&pl->scratch, name, nlen);
                pt_buf_append(&pl->scratch, ": ", 2);
                pt_buf_append(&pl->scratch, value, vlen);
                pt_buf_append(&pl->scratch, "\r\n", 2);
            }
        }
        lua_pop(co, 1);
    }
    return rc;
}

static void pt__finish(pt_lua_task_t *t, int rc)
{
    pt_lua_t *pl = t->pl;
    lua_State *co = t->co;
    pt_lua_result_t res = {0};
    if (t->spawned) {
        if (rc == LUA_YIELD)
            pt_log_error("async run failed: it yielded outside a waiting call");
        else if (rc != 0)
            pt_log_error("async run failed: %s",
                         lua_isstring(co, -1) ? lua_tostring(co, -1) : "(no message)");
        pt_lua_done_cb done = t->done;
        void *ud = t->ud;
        done(ud, NULL);
        pt__task_put(t, rc == 0);
        return;
    }
    static const char internal[] = "{\"error\":{\"status\":500,\"message\":\"internal error\"}}";

    if (rc == 0 && lua_gettop(co) >= 2 && lua_isnumber(co, 1)) {
        res.status = (int)lua_tointeger(co, 1);
        res.body = lua_tolstring(co, 2, &res.body_len);
        res.content_type = lua_tolstring(co, 3, &res.content_type_len);
        res.headers_invalid = pt__collect_headers(pl, co, 4) != 0;
        res.headers = pl->scratch.data;
        res.headers_len = pl->scratch.len;
    }
    if (res.status < 100 || res.status > 599 || !res.body) {
        const char *why = rc == LUA_YIELD ? "a service yielded outside a waiting call"
                          : rc != 0 && lua_isstring(co, -1) ? lua_tostring(co, -1)
                                                            : "runtime.dispatch returned no answer";
        pt_log_error("dispatch failed: %s", why);
        res.status = 500;
        res.body = internal;
        res.body_len = sizeof internal - 1;
        res.content_type = "application/json";
        res.content_type_len = sizeof "application/json" - 1;
        res.headers = NULL;
        res.headers_len = 0;
        res.headers_invalid = 0;
    }
    pt_lua_done_cb done = t->done;
    void *ud = t->ud;
    done(ud, &res);
    pt__task_put(t, rc == 0);
}

/* ---- the request budget ----
 *
 * A run of a request (from a resume to the next wait or the end) that takes
 * longer than lua.request_timeout is stopped. The main thread watches
 * run_seq (pt_server.c) and, when one run has lasted too long, signals the
 * worker's thread with SIGXCPU. The handler, on that thread, only sets a
 * count hook (lua_sethook may be called from a signal handler; luajit's own
 * Ctrl-C works this way). The hook raises in the run: the request answers
 * 500 through runtime.dispatch like any raise, with the line in the log. A
 * service that catches that error and goes on gets one every 1000
 * instructions, and from the fourth on one at every instruction, which no
 * pcall can hold. Code the JIT has compiled runs no hooks: a loop with no call
 * out of compiled code (while true do end) cannot be stopped this way. */

static void pt__stop_disarm(pt_lua_t *pl)
{
    lua_sethook(pl->L, NULL, 0, 0);
    pl->stop_armed = 0;
}

static void pt__stop_hook(lua_State *L, lua_Debug *ar)
{
    pt_lua_t *pl = pt__thread_vm;
    if (!pl) return;
    uint64_t seq = atomic_load_explicit(&pl->run_seq, memory_order_relaxed);
    if (seq != atomic_load_explicit(&pl->stop_seq, memory_order_relaxed)) {
        pt__stop_disarm(pl); /* a later run: the one to stop has ended */
        return;
    }
    /* the first raise names the service's line; later ones may land anywhere */
    if (++pl->stop_raises == 4) lua_sethook(L, pt__stop_hook, LUA_MASKCOUNT, 1);
    if (pl->stop_raises == 1)
        luaL_where(L, 0);
    else
        lua_pushliteral(L, "");
    lua_pushfstring(L,
                    "the request ran for more than %d ms without waiting "
                    "(lua.request_timeout): stopped",
                    (int)atomic_load_explicit(&pl->stop_ms, memory_order_relaxed));
    lua_concat(L, 2);
    lua_error(L);
}

static void pt__on_sigxcpu(int sig)
{
    pt_lua_t *pl = pt__thread_vm;
    if (!pl || pl->stop_armed) return;
    uint64_t seq = atomic_load_explicit(&pl->run_seq, memory_order_relaxed);
    if ((seq & 1) && seq == atomic_load_explicit(&pl->stop_seq, memory_order_relaxed)) {
        pl->stop_armed = 1;
        pl->stop_raises = 0;
        lua_sethook(pl->L, pt__stop_hook, LUA_MASKCOUNT, 1000);
    }
}

uint64_t pt_lua_run_seq(pt_lua_t *pl)
{
    return atomic_load_explicit(&pl->run_seq, memory_order_relaxed);
}

void pt_lua_interrupt(pt_lua_t *pl, uv_thread_t thread, uint64_t seq, uint64_t budget_ms)
{
    atomic_store_explicit(&pl->stop_ms, budget_ms, memory_order_relaxed);
    atomic_store_explicit(&pl->stop_seq, seq, memory_order_relaxed);
    pthread_kill(thread, SIGXCPU);
}

static void pt__run(pt_lua_task_t *t, int nargs)
{
    pt_lua_t *pl = t->pl;
    pt_lua_task_t *outer = pl->running;
    pl->running = t;
    /* only the outermost run counts (a primitive may resume another task) */
    if (!outer) atomic_store_explicit(&pl->run_seq, pl->run_seq + 1, memory_order_relaxed);
    int rc = lua_resume(t->co, nargs);
    if (!outer) {
        atomic_store_explicit(&pl->run_seq, pl->run_seq + 1, memory_order_relaxed);
        if (pl->stop_armed) pt__stop_disarm(pl);
    }
    pl->running = outer;
    if (rc == LUA_YIELD && t->waiting) return; /* a primitive holds the task and will resume it */
    pt__finish(t, rc);
}

pt_lua_task_t *pt_lua_task_wait(pt_lua_t *pl, pt_lua_cancel_fn cancel, void *op)
{
    pt_lua_task_t *t = pl->running;
    if (!t || pl->closing || t->doomed) return NULL;
    t->waiting = 1;
    t->cancel = cancel;
    t->op = op;
    t->wait_seq = ++pl->wait_seq;
    t->swept = 0;
    /* appended: the list stays in wait_seq order, so a sweep stops at the
     * first wait that started after it */
    t->wait_next = NULL;
    t->wait_prev = pl->wait_tail;
    if (pl->wait_tail)
        pl->wait_tail->wait_next = t;
    else
        pl->wait_head = t;
    pl->wait_tail = t;
    pl->n_waiting++;
    return t;
}

lua_State *pt_lua_running(pt_lua_t *pl)
{
    return pl->running && !pl->closing ? pl->running->co : NULL;
}

const pt_trace_ctx_t *pt_lua_trace(pt_lua_t *pl)
{
    pt_lua_task_t *t = pl->running;
    return t && t->trace.on ? &t->trace : NULL;
}

lua_State *pt_lua_task_state(pt_lua_task_t *t)
{
    return t->co;
}

void pt_lua_task_resume(pt_lua_task_t *t, int nargs)
{
    pt_lua_t *pl = t->pl;
    if (t->wait_prev)
        t->wait_prev->wait_next = t->wait_next;
    else
        pl->wait_head = t->wait_next;
    if (t->wait_next)
        t->wait_next->wait_prev = t->wait_prev;
    else
        pl->wait_tail = t->wait_prev;
    t->wait_prev = t->wait_next = NULL;
    t->cancel = NULL;
    t->op = NULL;
    t->waiting = 0;
    pl->n_waiting--;
    pt__run(t, nargs);
}

/* A hook resumes its task and so unlinks it, and may resume or start other
 * waits on the way (the resumed service runs on): no pointer into the list
 * survives a hook. Each round therefore starts again at the head and takes
 * the first task this sweep has not cancelled yet. With hooks that resume
 * at once, as the contract asks, that is the head itself: one step per
 * task. One that breaks it is skipped (and said so), never called twice. */
void pt_lua_cancel_all(pt_lua_t *pl)
{
    if (!pl) return;
    uint64_t upto = pl->wait_seq;
    uint64_t sweep = ++pl->sweeps;
    for (;;) {
        pt_lua_task_t *t = pl->wait_head;
        while (t && t->wait_seq <= upto && t->swept == sweep)
            t = t->wait_next;
        if (!t || t->wait_seq > upto) break;
        uint64_t seq = t->wait_seq;
        t->swept = sweep;
        t->cancel(t->op);
        if (t->waiting && t->wait_seq == seq)
            pt_log_error("a waiting primitive's cancel hook did not resume its task");
    }
}

void pt_lua_cancel_run(pt_lua_t *pl, uint64_t run_id)
{
    if (!pl || !run_id) return;
    for (pt_lua_task_t *t = pl->wait_head; t; t = t->wait_next)
        if (t->run_id == run_id) {
            t->doomed = 1;
            t->cancel(t->op); /* resumes it: the list may change, so stop here */
            return;
        }
}

void pt_lua_release(pt_lua_t *pl, int ref)
{
    if (pl) luaL_unref(pl->L, LUA_REGISTRYINDEX, ref);
}

int pt_lua_spawn(pt_lua_t *pl, int fn_ref, pt_lua_done_cb done, void *ud)
{
    pt_lua_task_t *t = pl->closing ? NULL : pt__task_get(pl);
    if (!t) {
        luaL_unref(pl->L, LUA_REGISTRYINDEX, fn_ref);
        return -1;
    }
    t->done = done;
    t->ud = ud;
    t->spawned = 1;
    t->run_id = ++pl->runs;
    lua_State *co = t->co;
    lua_settop(co, 0);
    lua_rawgeti(co, LUA_REGISTRYINDEX, fn_ref);
    luaL_unref(co, LUA_REGISTRYINDEX, fn_ref);
    pt__run(t, 0);
    return 0;
}

/* The one table runtime.dispatch takes (its fields: lua/portico/runtime.lua,
 * docs/contract.md). A VM has one, made at its first request and refilled for
 * each, so a request allocates no table for it: runtime.dispatch reads every
 * field before it does anything else, and clears each optional one it finds
 * (username, gateway, params, amqp), which pt_lua_dispatch sets only for a
 * request that has it. A cleared field keeps its key: refilling adds none.
 *
 * Its array part holds the field names (and the channel types), so a field
 * is set with the name's string as it is: lua_setfield hashes and interns its
 * key every time, and 13 of those were +8 % of a JSON request's instructions
 * (callgrind, bench json scenario). The array also keeps the names alive
 * while a field's value is nil (the GC marks no key whose value is nil). */
static char pt__request_key; /* where it is in the registry */

/* The array part of the request table: the names of its fields, then those
 * of the channel types that are not also field names. */
enum {
    PT__R_SERVICE = 1,
    PT__R_CID,
    PT__R_METHOD,
    PT__R_PATH,
    PT__R_QUERY_STRING,
    PT__R_HEADERS,
    PT__R_BODY,
    PT__R_CHANNEL,
    PT__R_CHANNEL_TYPE,
    PT__R_USERNAME,
    PT__R_GATEWAY, /* also the type of the gateway channel */
    PT__R_PARAMS,
    PT__R_AMQP, /* also the type of AMQP channels */
    PT__R_N_FIELDS = PT__R_AMQP,
    PT__R_REST,
    PT__R_WEBSOCKET,
    PT__R_INTERNAL,
    PT__R_SCHEDULER,
    PT__R_N = PT__R_SCHEDULER
};

static const char *const pt__request_names[PT__R_N + 1] = {[PT__R_SERVICE] = "service",
                                                           [PT__R_CID] = "cid",
                                                           [PT__R_METHOD] = "method",
                                                           [PT__R_PATH] = "path",
                                                           [PT__R_QUERY_STRING] = "query_string",
                                                           [PT__R_HEADERS] = "headers",
                                                           [PT__R_BODY] = "body",
                                                           [PT__R_CHANNEL] = "channel",
                                                           [PT__R_CHANNEL_TYPE] = "channel_type",
                                                           [PT__R_USERNAME] = "username",
                                                           [PT__R_GATEWAY] = "gateway",
                                                           [PT__R_PARAMS] = "params",
                                                           [PT__R_AMQP] = "amqp",
                                                           [PT__R_REST] = "rest",
                                                           [PT__R_WEBSOCKET] = "websocket",
                                                           [PT__R_INTERNAL] = "internal",
                                                           [PT__R_SCHEDULER] = "scheduler"};

/* Pushes the request table, making it on the VM's first request. Returns 1
 * when it made it. */
static int pt__push_request(lua_State *co)
{
    lua_pushlightuserdata(co, &pt__request_key);
    lua_rawget(co, LUA_REGISTRYINDEX);
    if (lua_istable(co, -1)) return 0;
    lua_pop(co, 1);
    lua_createtable(co, PT__R_N, PT__R_N_FIELDS);
    for (int i = 1; i <= PT__R_N; i++) {
        lua_pushstring(co, pt__request_names[i]);
        lua_rawseti(co, -2, i);
    }
    lua_pushlightuserdata(co, &pt__request_key);
    lua_pushvalue(co, -2);
    lua_rawset(co, LUA_REGISTRYINDEX);
    return 1;
}

/* What the request table of this thread's VM holds already of the fields
 * that repeat from one request to the next (a worker serves a few channels
 * over and over): such a field is set only when its value changes, a
 * comparison of a few bytes instead of ~80 instructions a set. A VM runs
 * requests on one thread only. When another VM runs on this thread, or a
 * VM's table is new (it may be a new VM where a freed one was), what was
 * seen is forgotten and the fields are set. */
typedef struct {
    char s[48];
    size_t len; /* of s; PT__UNSEEN: not known */
} pt__seen_t;
#define PT__UNSEEN ((size_t)-1)
static _Thread_local struct {
    const pt_lua_t *vm;
    pt__seen_t service, method, channel;
    int type; /* the PT__R_ of the channel type; 0: not known */
} pt__seen;

static void pt__seen_forget(const pt_lua_t *pl)
{
    pt__seen.vm = pl;
    pt__seen.service.len = pt__seen.method.len = pt__seen.channel.len = PT__UNSEEN;
    pt__seen.type = 0;
}

/* Pushes the name of field f of the request table at index req: the string
 * the table already holds, so setting the field neither hashes nor interns
 * it (lua_setfield does both, for every field of every request). */
static void pt__field(lua_State *co, int req, int f)
{
    lua_rawgeti(co, req, f);
}

/* Sets field f of the request table at index req to s. */
static void pt__set_string(lua_State *co, int req, int f, const char *s)
{
    pt__field(co, req, f);
    lua_pushstring(co, s);
    lua_rawset(co, req);
}

/* Sets field f to s (NULL: nil) unless it holds s already (seen: what it
 * holds), and remembers what it holds now. */
static void pt__set_seen(lua_State *co, int req, int f, const char *s, pt__seen_t *seen)
{
    size_t len = s ? strlen(s) : 0;
    if (s && len == seen->len && memcmp(seen->s, s, len) == 0) return;
    pt__field(co, req, f);
    if (s)
        lua_pushlstring(co, s, len);
    else
        lua_pushnil(co);
    lua_rawset(co, req);
    seen->len = s && len <= sizeof seen->s ? len : PT__UNSEEN;
    if (seen->len != PT__UNSEEN) memcpy(seen->s, s, len);
}

/* Whether header i's name (lower-cased: lower) came before it: most requests
 * have no repeated header, and comparing lengths first finds that without
 * looking the name up in the table being built. */
static int pt__header_seen(const pt_lua_call_t *c, size_t i, const char *lower)
{
    size_t n = c->headers[i].name_len;
    for (size_t j = 0; j < i; j++)
        if (c->headers[j].name_len == n && strncasecmp(c->headers[j].name, lower, n) == 0) return 1;
    return 0;
}

int pt_lua_dispatch(pt_lua_t *pl, const pt_lua_call_t *c, pt_lua_done_cb done, void *ud)
{
    pt_lua_task_t *t = pt__task_get(pl);
    if (!t) return -1;
    t->done = done;
    t->ud = ud;
    t->run_id = ++pl->runs;
    if (c->trace && c->trace->on) pt_trace_copy(&t->trace, c->trace);
    if (c->run_id) *c->run_id = t->run_id;
    lua_State *co = t->co;
    lua_settop(co, 0);
    lua_checkstack(co, 16);
    lua_rawgeti(co, LUA_REGISTRYINDEX, pl->dispatch_ref);
    if (pt__push_request(co) || pt__seen.vm != pl) pt__seen_forget(pl);
    const int req = lua_gettop(co);
    pt__set_seen(co, req, PT__R_SERVICE, c->service, &pt__seen.service);
    pt__set_string(co, req, PT__R_CID, c->cid);
    pt__set_seen(co, req, PT__R_METHOD, c->method, &pt__seen.method);
    pt__field(co, req, PT__R_PATH);
    lua_pushlstring(co, c->path, c->path_len);
    lua_rawset(co, req);
    pt__field(co, req, PT__R_QUERY_STRING);
    lua_pushlstring(co, c->query ? c->query : "", c->query_len);
    lua_rawset(co, req);

    /* Header names are lower-cased; a repeated header is joined with ", ". */
    pt__field(co, req, PT__R_HEADERS);
    lua_createtable(co, 0, (int)c->n_headers);
    for (size_t i = 0; i < c->n_headers; i++) {
        const pt_lua_header_t *h = &c->headers[i];
        char stackbuf[128];
        char *lower = h->name_len < sizeof stackbuf ? stackbuf : malloc(h->name_len + 1);
        if (!lower) continue;
        for (size_t k = 0; k < h->name_len; k++) {
            char ch = h->name[k];
            lower[k] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
        }
        lua_pushlstring(co, lower, h->name_len);
        if (pt__header_seen(c, i, lower)) {
            lua_pushvalue(co, -1);
            lua_rawget(co, -3);
            lua_pushliteral(co, ", ");
            lua_pushlstring(co, h->value, h->value_len);
            lua_concat(co, 3);
        } else {
            lua_pushlstring(co, h->value, h->value_len);
        }
        lua_rawset(co, -3);
        if (lower != stackbuf) free(lower);
    }
    lua_rawset(co, req);
    pt__field(co, req, PT__R_BODY);
    lua_pushlstring(co, c->body ? c->body : "", c->body_len);
    lua_rawset(co, req);
    const char *channel = c->job ? c->job : c->channel ? c->channel->name : "";
    pt__set_seen(co, req, PT__R_CHANNEL, channel, &pt__seen.channel);
    int type = c->job                                     ? PT__R_SCHEDULER
               : !c->channel                              ? PT__R_INTERNAL
               : c->channel->type == PT_CHANNEL_REST      ? PT__R_REST
               : c->channel->type == PT_CHANNEL_AMQP      ? PT__R_AMQP
               : c->channel->type == PT_CHANNEL_WEBSOCKET ? PT__R_WEBSOCKET
                                                          : PT__R_GATEWAY;
    if (type != pt__seen.type) {
        pt__field(co, req, PT__R_CHANNEL_TYPE);
        lua_rawgeti(co, req, type);
        lua_rawset(co, req);
        pt__seen.type = type;
    }
    /* The fields a request may not have are set only when it has them:
     * runtime.dispatch clears each it finds (so the next request sees none
     * that was not its own), and most requests have none of them. */
    if (c->username) pt__set_string(co, req, PT__R_USERNAME, c->username);
    if (c->gateway) pt__set_string(co, req, PT__R_GATEWAY, c->gateway);
    if (c->n_params > 0) {
        pt__field(co, req, PT__R_PARAMS);
        lua_createtable(co, 0, c->n_params);
        for (int i = 0; i < c->n_params; i++) {
            lua_pushlstring(co, c->params[i].value, c->params[i].value_len);
            lua_setfield(co, -2, c->params[i].name);
        }
        lua_rawset(co, req);
    }
    if (c->push_extra) {
        pt__field(co, req, PT__R_AMQP);
        c->push_extra(co, c->extra_ud);
        lua_rawset(co, req);
    }
    uint64_t id = t->run_id;
    pt__run(t, 1);
    if (c->run_id && t->run_id != id) *c->run_id = 0; /* it ended: t may be reused already */
    return 0;
}
