/* pt_lua_dispatch and runtime.dispatch together: what a service sees of the
 * request table the host fills (host/pt_lua.c). The VM has one such table,
 * refilled for every request, so these cases check above all that nothing of
 * one request reaches the next. */
#include "pt_lua.h"
#include "pt_test.h"
#include "pt_test_config.h"

#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A service that answers what it was given, one "key=value;" per field. */
static const char echo_service[] =
    "local M = require('portico.service').new { name = 't.echo' }\n"
    "local function s(v) if v == nil then return '<nil>' end return tostring(v) end\n"
    "function M:handle()\n"
    "  local r, h, sec = self.request, self.request.http, self.channel.security\n"
    "  local params = rawget(h, 'params')\n"
    "  self.response.payload = table.concat {\n"
    "    'cid=', s(self.cid), ';method=', s(h.method), ';path=', s(h.path),\n"
    "    ';qs=', s(h.query_string), ';body=', s(r.raw), ';hdr=', s(h.headers['x-a']),\n"
    "    ';ch=', s(self.channel.name), ';type=', s(self.channel.type),\n"
    "    ';user=', s(sec.username), ';gw=', s(sec.gateway),\n"
    "    ';id=', s(params and params.id), ';amqp=', s(r.amqp and r.amqp.queue), ';' }\n"
    "end\n"
    "return M\n";

static char dir[] = "/tmp/pt_test_lua_XXXXXX";
static char answer[1024];
static int answered;

static void on_done(void *ud, const pt_lua_result_t *res)
{
    (void)ud;
    answered++;
    snprintf(answer, sizeof answer, "%d %.*s", res->status, (int)res->body_len, res->body);
}

static void push_amqp(lua_State *co, void *ud)
{
    (void)ud;
    lua_createtable(co, 0, 1);
    lua_pushliteral(co, "q1");
    lua_setfield(co, -2, "queue");
}

/* Writes the service into a new temporary directory (once). */
static int make_dir(void)
{
    char path[600];
    if (!mkdtemp(dir)) return -1;
    snprintf(path, sizeof path, "%s/echo.lua", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(echo_service, f);
    fclose(f);
    return 0;
}

/* A VM serving the service of dir. */
static pt_lua_t *new_vm(void)
{
    char cwd[512], yaml[1400];
    if (!getcwd(cwd, sizeof cwd)) return NULL;
    snprintf(yaml, sizeof yaml, "lua:\n  path: %s/lua\nservices:\n  dirs: [%s]\n", cwd, dir);
    pt_config_t *cfg;
    char err[512] = "";
    if (pt_test_load(yaml, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "config: %s\n", err);
        return NULL;
    }
    pt_lua_t *pl = NULL;
    if (pt_lua_new(cfg, 0, NULL, &pl, err, sizeof err) != 0) fprintf(stderr, "vm: %s\n", err);
    pt_config_free(cfg);
    return pl;
}

static pt_lua_t *vm;

/* Runs one request and returns the answer ("status body"). */
static const char *call(const pt_lua_call_t *c)
{
    answered = 0;
    answer[0] = '\0';
    PT_CHECK_INT(pt_lua_dispatch(vm, c, on_done, NULL), 0);
    PT_CHECK_INT(answered, 1);
    return answer;
}

PT_CASE(gives_the_service_every_field)
{
    static const pt_lua_header_t hdrs[] = {{"X-A", 3, "1", 1}, {"x-a", 3, "2", 1}};
    static const pt_route_param_t params[] = {{"id", "42", 2}};
    pt_channel_t ch = {.name = "api.echo", .type = PT_CHANNEL_REST};
    pt_lua_call_t c = {.service = "t.echo",
                       .cid = "cid-1",
                       .method = "GET",
                       .path = "/x",
                       .path_len = 2,
                       .query = "a=1",
                       .query_len = 3,
                       .headers = hdrs,
                       .n_headers = 2,
                       .channel = &ch,
                       .username = "john",
                       .gateway = "front",
                       .params = params,
                       .n_params = 1,
                       .push_extra = push_amqp};
    PT_CHECK_STR(call(&c), "200 cid=cid-1;method=GET;path=/x;qs=a=1;body=;hdr=1, 2;ch=api.echo;"
                           "type=rest;user=john;gw=front;id=42;amqp=q1;");
}

PT_CASE(carries_nothing_over_to_the_next_request)
{
    static const pt_lua_header_t hdrs[] = {{"X-A", 3, "1", 1}};
    static const pt_route_param_t params[] = {{"id", "42", 2}};
    pt_channel_t gw = {.name = "gw", .type = PT_CHANNEL_GATEWAY};
    pt_lua_call_t full = {.service = "t.echo",
                          .cid = "c-full",
                          .method = "POST",
                          .path = "/gateway/t.echo",
                          .path_len = 15,
                          .query = "z=9",
                          .query_len = 3,
                          .headers = hdrs,
                          .n_headers = 1,
                          .body = "{}",
                          .body_len = 2,
                          .channel = &gw,
                          .username = "u",
                          .gateway = "g",
                          .params = params,
                          .n_params = 1,
                          .push_extra = push_amqp};
    pt_lua_call_t bare = {
        .service = "t.echo", .cid = "c-bare", .method = "GET", .path = "/y", .path_len = 2};
    for (int i = 0; i < 3; i++) {
        PT_CHECK_STR(call(&full), "200 cid=c-full;method=POST;path=/gateway/t.echo;qs=z=9;body={};"
                                  "hdr=1;ch=gw;type=gateway;user=u;gw=g;id=42;amqp=q1;");
        PT_CHECK_STR(call(&bare), "200 cid=c-bare;method=GET;path=/y;qs=;body=;hdr=<nil>;ch=;"
                                  "type=internal;user=<nil>;gw=<nil>;id=<nil>;amqp=<nil>;");
    }
}

PT_CASE(answers_unknown_services_and_bad_json_as_before)
{
    pt_lua_call_t c = {
        .service = "no.such", .cid = "c-5", .method = "POST", .path = "/", .path_len = 1};
    PT_CHECK(strncmp(call(&c), "404 ", 4) == 0); /* the keys of the JSON come in any order */
    PT_CHECK(strstr(answer, "\"message\":\"unknown service 'no.such'\"") != NULL);
    PT_CHECK(strstr(answer, "\"cid\":\"c-5\"") != NULL);
    c.service = "t.echo";
    c.body = "{bad";
    c.body_len = 4;
    PT_CHECK(strncmp(call(&c), "400 ", 4) == 0);
    PT_CHECK(strstr(answer, "invalid JSON") != NULL);
}

/* pt_lua_dispatch sets a field that repeats (service, method, channel, its
 * type) only when it differs from what the VM's table holds: with two VMs on
 * one thread, and a VM made after another was freed, each still sees its own. */
PT_CASE(keeps_vms_apart)
{
    pt_channel_t a = {.name = "a", .type = PT_CHANNEL_REST};
    pt_channel_t b = {.name = "b", .type = PT_CHANNEL_WEBSOCKET};
    pt_lua_call_t ca = {.service = "t.echo",
                        .cid = "ca",
                        .method = "GET",
                        .path = "/a",
                        .path_len = 2,
                        .channel = &a};
    pt_lua_call_t cb = {.service = "t.echo",
                        .cid = "cb",
                        .method = "PUT",
                        .path = "/b",
                        .path_len = 2,
                        .channel = &b};
    static const char want_a[] = "200 cid=ca;method=GET;path=/a;qs=;body=;hdr=<nil>;ch=a;type=rest;"
                                 "user=<nil>;gw=<nil>;id=<nil>;amqp=<nil>;";
    static const char want_b[] = "200 cid=cb;method=PUT;path=/b;qs=;body=;hdr=<nil>;ch=b;"
                                 "type=websocket;user=<nil>;gw=<nil>;id=<nil>;amqp=<nil>;";
    pt_lua_t *first = vm, *other = new_vm();
    PT_CHECK(other != NULL);
    if (!other) return;
    for (int i = 0; i < 2; i++) {
        vm = first;
        PT_CHECK_STR(call(&ca), want_a);
        vm = other;
        PT_CHECK_STR(call(&cb), want_b);
        PT_CHECK_STR(call(&ca), want_a);
        vm = first;
        PT_CHECK_STR(call(&cb), want_b);
    }
    /* a new VM, perhaps where the freed one was, after a request that set a */
    vm = other;
    PT_CHECK_STR(call(&ca), want_a);
    pt_lua_free(other);
    other = new_vm();
    PT_CHECK(other != NULL);
    if (other) {
        vm = other;
        PT_CHECK_STR(call(&ca), want_a);
        pt_lua_free(other);
    }
    vm = first;
    PT_CHECK_STR(call(&ca), want_a);
}

int main(void)
{
    (void)pt_test_fails_with; /* pt_test_config.h's, not needed here */
    vm = make_dir() == 0 ? new_vm() : NULL;
    PT_CHECK(vm != NULL);
    if (vm) {
        PT_RUN(gives_the_service_every_field);
        PT_RUN(carries_nothing_over_to_the_next_request);
        PT_RUN(answers_unknown_services_and_bad_json_as_before);
        PT_RUN(keeps_vms_apart);
        pt_lua_free(vm);
    }
    char path[600];
    snprintf(path, sizeof path, "%s/echo.lua", dir);
    unlink(path);
    rmdir(dir);
    return PT_TEST_DONE();
}
