/* pt_lua's yield protocol without a worker: a test primitive (host.test_wait)
 * waits with a cancel hook, and the cases cancel, resume and close. */
#include "pt_lua.h"
#include "pt_test.h"

#include <lauxlib.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One wait of host.test_wait. */
typedef struct {
    pt_lua_task_t *task; /* NULL once resumed */
    int cancels;         /* how often its hook was called */
} t_op_t;

/* One request and its answer. */
typedef struct {
    int done;
    int status;
    char body[512];
} t_req_t;

static pt_lua_t *vm;
static t_op_t ops[16];
static int n_ops;

static void t_resume(t_op_t *op, const char *a, const char *b)
{
    pt_lua_task_t *t = op->task;
    lua_State *co = pt_lua_task_state(t);
    op->task = NULL;
    if (a)
        lua_pushstring(co, a);
    else
        lua_pushnil(co);
    lua_pushstring(co, b);
    pt_lua_task_resume(t, 2);
}

static void t_cancel(void *arg)
{
    t_op_t *op = arg;
    op->cancels++;
    t_resume(op, NULL, "cancelled");
}

/* host.test_wait() -> nil, "cancelled" | "ok", "done" | nil, "context" | nil, "closing" */
static int t_wait(lua_State *L)
{
    if (!vm || pt_lua_running(vm) != L) {
        lua_pushnil(L);
        lua_pushliteral(L, "context");
        return 2;
    }
    t_op_t *op = &ops[n_ops];
    if (!(op->task = pt_lua_task_wait(vm, t_cancel, op))) {
        lua_pushnil(L);
        lua_pushliteral(L, "closing");
        return 2;
    }
    n_ops++;
    return lua_yield(L, 0);
}

static void t_register(lua_State *L)
{
    lua_pushcfunction(L, t_wait);
    lua_setfield(L, -2, "test_wait");
}

static const pt_lua_register_fn t_prims[] = {t_register, NULL};

/* Waits once, or twice with {"again": true}; answers what each wait gave. */
static const char t_service[] = "local service = require \"portico.service\"\n"
                                "local host = require \"portico.host\"\n"
                                "local M = service.new { name = \"t.wait\" }\n"
                                "function M:handle()\n"
                                "  local a, b = host.test_wait()\n"
                                "  local out = { first = tostring(a) .. \":\" .. tostring(b) }\n"
                                "  if self.request.payload and self.request.payload.again then\n"
                                "    local c, d = host.test_wait()\n"
                                "    out.second = tostring(c) .. \":\" .. tostring(d)\n"
                                "  end\n"
                                "  self.response.payload = out\n"
                                "end\n"
                                "return M\n";

static char dir[] = "/tmp/pt_test_lua_XXXXXX";
static char file[sizeof dir + 16];
static pt_config_t *cfg;

static void t_done(void *ud, const pt_lua_result_t *res)
{
    t_req_t *r = ud;
    r->done++;
    r->status = res->status;
    snprintf(r->body, sizeof r->body, "%.*s", (int)res->body_len, res->body);
}

static void t_dispatch(t_req_t *r, const char *body)
{
    pt_lua_call_t call = {.service = "t.wait",
                          .cid = "cid-1",
                          .method = "POST",
                          .path = "/t",
                          .path_len = 2,
                          .body = body,
                          .body_len = body ? strlen(body) : 0};
    memset(r, 0, sizeof *r);
    PT_CHECK_INT(pt_lua_dispatch(vm, &call, t_done, r), 0);
}

static void t_vm(void)
{
    char err[512] = "";
    memset(ops, 0, sizeof ops);
    n_ops = 0;
    vm = NULL;
    pt_lua_t *pl = NULL;
    int rc = pt_lua_new(cfg, 0, t_prims, &pl, err, sizeof err);
    if (rc != 0) fprintf(stderr, "  %s\n", err);
    PT_CHECK_INT(rc, 0);
    vm = pl;
}

PT_CASE(cancel_resumes_every_waiting_task_once)
{
    t_req_t r[3];
    t_vm();
    if (!vm) return;
    for (int i = 0; i < 3; i++)
        t_dispatch(&r[i], NULL);
    PT_CHECK_INT(pt_lua_tasks_waiting(vm), 3);
    PT_CHECK_INT(r[0].done + r[1].done + r[2].done, 0);
    pt_lua_cancel_all(vm);
    PT_CHECK_INT(pt_lua_tasks_waiting(vm), 0);
    for (int i = 0; i < 3; i++) {
        PT_CHECK_INT(ops[i].cancels, 1);
        PT_CHECK_INT(r[i].done, 1);
        PT_CHECK_INT(r[i].status, 200);
        PT_CHECK(strstr(r[i].body, "\"first\":\"nil:cancelled\"") != NULL);
    }
    pt_lua_cancel_all(vm); /* nothing waits: no hook runs */
    for (int i = 0; i < 3; i++)
        PT_CHECK_INT(ops[i].cancels, 1);
    pt_lua_free(vm);
    vm = NULL;
}

PT_CASE(a_task_resumed_by_its_primitive_is_not_cancelled)
{
    t_req_t a, b;
    t_vm();
    if (!vm) return;
    t_dispatch(&a, NULL);
    t_dispatch(&b, NULL);
    t_resume(&ops[0], "ok", "done");
    PT_CHECK_INT(a.done, 1);
    PT_CHECK(strstr(a.body, "\"first\":\"ok:done\"") != NULL);
    PT_CHECK_INT(pt_lua_tasks_waiting(vm), 1);
    pt_lua_cancel_all(vm);
    PT_CHECK_INT(ops[0].cancels, 0);
    PT_CHECK_INT(ops[1].cancels, 1);
    PT_CHECK_INT(a.done, 1);
    PT_CHECK_INT(b.done, 1);
    PT_CHECK(strstr(b.body, "\"first\":\"nil:cancelled\"") != NULL);
    pt_lua_free(vm);
    vm = NULL;
}

PT_CASE(a_wait_started_during_the_sweep_is_left_waiting)
{
    t_req_t r;
    t_vm();
    if (!vm) return;
    t_dispatch(&r, "{\"again\": true}");
    pt_lua_cancel_all(vm);
    /* the cancelled service waited again: that wait is not this sweep's */
    PT_CHECK_INT(ops[0].cancels, 1);
    PT_CHECK_INT(n_ops, 2);
    PT_CHECK_INT(ops[1].cancels, 0);
    PT_CHECK_INT(pt_lua_tasks_waiting(vm), 1);
    PT_CHECK_INT(r.done, 0);
    t_resume(&ops[1], "ok", "done");
    PT_CHECK_INT(r.done, 1);
    PT_CHECK(strstr(r.body, "\"first\":\"nil:cancelled\"") != NULL);
    PT_CHECK(strstr(r.body, "\"second\":\"ok:done\"") != NULL);
    PT_CHECK_INT(pt_lua_tasks_waiting(vm), 0);
    pt_lua_free(vm);
    vm = NULL;
}

PT_CASE(free_cancels_the_tasks_still_waiting)
{
    t_req_t r, s;
    t_vm();
    if (!vm) return;
    t_dispatch(&r, "{\"again\": true}");
    t_dispatch(&s, NULL);
    pt_lua_t *pl = vm;
    pt_lua_free(pl);
    /* each answered once; the second wait could not start while closing */
    PT_CHECK_INT(ops[0].cancels, 1);
    PT_CHECK_INT(ops[1].cancels, 1);
    PT_CHECK_INT(n_ops, 2);
    PT_CHECK_INT(r.done, 1);
    PT_CHECK(strstr(r.body, "\"first\":\"nil:cancelled\"") != NULL);
    PT_CHECK(strstr(r.body, "\"second\":\"nil:context\"") != NULL);
    PT_CHECK_INT(s.done, 1);
    vm = NULL;
}

PT_CASE(a_vm_has_only_the_primitives_it_is_given)
{
    char err[512] = "";
    pt_lua_t *pl = NULL;
    PT_CHECK_INT(pt_lua_new(cfg, 0, NULL, &pl, err, sizeof err), 0);
    pt_lua_free(pl);
}

int main(void)
{
    char err[512] = "";
    if (!mkdtemp(dir)) return 1;
    snprintf(file, sizeof file, "%s/wait.lua", dir);
    FILE *f = fopen(file, "w");
    if (!f) return 1;
    fputs(t_service, f);
    fclose(f);
    char conf[sizeof dir + 16];
    snprintf(conf, sizeof conf, "%s/portico.yaml", dir);
    if (!(f = fopen(conf, "w"))) return 1;
    fprintf(f, "services:\n  dirs: [%s]\n", dir);
    fclose(f);
    int rc = pt_config_load(conf, &cfg, err, sizeof err);
    unlink(conf);
    if (rc != 0) fprintf(stderr, "config: %s\n", err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        PT_RUN(cancel_resumes_every_waiting_task_once);
        PT_RUN(a_task_resumed_by_its_primitive_is_not_cancelled);
        PT_RUN(a_wait_started_during_the_sweep_is_left_waiting);
        PT_RUN(free_cancels_the_tasks_still_waiting);
        PT_RUN(a_vm_has_only_the_primitives_it_is_given);
    }
    pt_config_free(cfg);
    unlink(file);
    rmdir(dir);
    return PT_TEST_DONE();
}
