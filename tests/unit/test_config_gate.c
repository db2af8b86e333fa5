/* What a config must never get past pt_config_load: each case is refused
 * with the file, the line and what is wrong. */
#include "pt_config.h"
#include "pt_test.h"
#include "pt_test_config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Refused, with needle in the message, in less than a second. */
static int fails_fast(const char *yaml, const char *needle)
{
    double t0 = now_s();
    int ok = pt_test_fails_with(yaml, needle);
    double dt = now_s() - t0;
    if (dt > 1.0) fprintf(stderr, "  took %.2fs (wanted \"%s\")\n", dt, needle);
    return ok && dt <= 1.0;
}

static int loads(const char *yaml)
{
    pt_config_t *cfg;
    char err[512] = "";
    int rc = pt_test_load(yaml, &cfg, err, sizeof err);
    if (rc != 0) fprintf(stderr, "  refused: %s\n", err);
    pt_config_free(cfg);
    return rc == 0;
}

PT_CASE(duplicate_keys)
{
    PT_CHECK(pt_test_fails_with("server:\n  workers: 1\nserver:\n  workers: 2\n",
                                ".yaml:3: duplicate key 'server' (first at line 1)"));
    PT_CHECK(pt_test_fails_with("server:\n  workers: 1\n  listen: 127.0.0.1:1\n  workers: 2\n",
                                ".yaml:4: duplicate key 'workers' (first at line 2)"));
    PT_CHECK(
        pt_test_fails_with("{server: {}, \"server\": {}}\n", ".yaml:1: duplicate key 'server'"));
    PT_CHECK(pt_test_fails_with("channels:\n"
                                "  rest:\n"
                                "    - name: a\n"
                                "      url_path: /a\n"
                                "      service: x\n"
                                "      url_path: /b\n",
                                ".yaml:6: duplicate key 'url_path' (first at line 4)"));
    PT_CHECK(pt_test_fails_with("channels:\n"
                                "  http_proxy:\n"
                                "    - name: p\n"
                                "      url_prefix: /p\n"
                                "      services:\n"
                                "        foo: {targets: [http://127.0.0.1:1]}\n"
                                "        foo: {targets: [http://127.0.0.1:2]}\n",
                                ".yaml:7: duplicate key 'foo' (first at line 6)"));
    /* a key given as an alias of a scalar is that scalar */
    PT_CHECK(pt_test_fails_with("&k server:\n  workers: 1\n*k :\n  workers: 2\n",
                                ".yaml:3: duplicate key 'server' (first at line 1)"));
}

PT_CASE(route_clashes)
{
    /* the same path in two channel types, methods in common */
    PT_CHECK(pt_test_fails_with("channels:\n"
                                "  rest:\n"
                                "    - {name: a, url_path: /x, service: s}\n"
                                "  websocket:\n"
                                "    - name: w\n"
                                "      url_path: /x\n"
                                "      service: s\n",
                                ".yaml:6: channel 'w': url_path /x matches what channel 'a' "
                                "(line 3) does, for GET"));
    PT_CHECK(pt_test_fails_with("channels:\n"
                                "  gateway:\n"
                                "    - name: g\n"
                                "      url_path: /gw/{service}\n"
                                "      gateway_service_list: [a]\n"
                                "  rest:\n"
                                "    - name: r\n"
                                "      url_path: /gw/{name}\n"
                                "      methods: [POST, PUT]\n"
                                "      service: a\n",
                                ".yaml:4: channel 'g': url_path /gw/{service} matches what "
                                "channel 'r' (line 7) does, for POST"));
    /* the same path for other methods is fine, and so is a literal beside a capture */
    PT_CHECK(loads("channels:\n"
                   "  rest:\n"
                   "    - {name: a, url_path: /x, methods: [GET], service: s}\n"
                   "    - {name: b, url_path: /x, methods: [POST], service: s}\n"
                   "    - {name: c, url_path: '/x/{id}', methods: [GET], service: s}\n"
                   "    - {name: d, url_path: /x/new, methods: [GET], service: s}\n"));
    /* prefixes: the same one, or one inside the other */
    PT_CHECK(pt_test_fails_with("channels:\n"
                                "  http_proxy:\n"
                                "    - name: p\n"
                                "      url_prefix: /p/\n"
                                "      services: {foo: {targets: [http://127.0.0.1:1]}}\n"
                                "  amqp_bus:\n"
                                "    - name: b\n"
                                "      url_prefix: /p\n",
                                ".yaml:8: channel 'b': url_prefix /p matches what channel 'p'"));
    PT_CHECK(pt_test_fails_with("channels:\n"
                                "  amqp_bus:\n"
                                "    - {name: b, url_prefix: /p}\n"
                                "    - {name: c, url_prefix: /p/q}\n",
                                ".yaml:4: channel 'c': url_prefix /p/q matches what channel 'b'"));
    PT_CHECK(loads("channels:\n"
                   "  amqp_bus:\n"
                   "    - {name: b, url_prefix: /p}\n"
                   "    - {name: c, url_prefix: /pq}\n"));
    PT_CHECK(pt_test_fails_with("channels:\n"
                                "  amqp_bus:\n"
                                "    - {name: b, url_prefix: /p/q/r}\n"
                                "    - {name: c, url_prefix: /}\n",
                                ".yaml:4: channel 'c': url_prefix / matches what channel 'b'"));
    PT_CHECK(pt_test_fails_with("channels:\n"
                                "  amqp_bus:\n"
                                "    - {name: b, url_prefix: /p/q/r, methods: [GET]}\n"
                                "    - {name: c, url_prefix: /p/q, methods: [POST]}\n"
                                "    - {name: d, url_prefix: /p, methods: [PUT, GET]}\n",
                                ".yaml:5: channel 'd': url_prefix /p matches what channel 'b' "
                                "(line 3) does, for GET"));

    /* thousands of channels are checked in n log n, not n^2 */
    size_t n = 12000, o = 0;
    char *big = malloc(n * 64 + 256);
    o += (size_t)sprintf(big + o, "channels:\n  rest:\n");
    for (size_t i = 0; i < n; i++)
        o += (size_t)sprintf(big + o, "    - {name: c%zu, url_path: /p/c%zu, service: s}\n", i, i);
    sprintf(big + o, "    - {name: last, url_path: /p/c77, methods: [POST], service: s}\n");
    PT_CHECK(fails_fast(big, ".yaml:12003: channel 'last': url_path /p/c77 matches what channel "
                             "'c77' (line 80) does, for POST"));
    free(big);
}

PT_CASE(unroutable_paths)
{
    static const struct {
        const char *path, *needle;
    } cases[] = {
        {"/a/../b", "dot segments"},
        {"/a/./b", "dot segments"},
        {"/a/..", "dot segments"},
        {"/a/%2e%2e/b", "no percent-encoding"},
        {"/a/%2Fb", "no percent-encoding"},
        {"'/a b'", "byte 0x20 cannot be routed"},
        {"\"/a\\tb\"", "byte 0x09 cannot be routed"},
        {"\"/a\\u00e9\"", "byte 0xc3 cannot be routed"},
        {"/a?x=1", "'?' cannot be routed"},
        {"'/a#x'", "'#' cannot be routed"},
        {"/a\\b", "'\\' cannot be routed"},
        {"/a//b", "an empty segment"},
        {"'/a/{id}/{id}'", "{id} is captured twice"},
        {"'/a/x{id}'", "'{' and '}' only around a whole segment"},
        {"'/a/{}'", "a capture is {name}"},
        {"'/a/{i-d}'", "a capture is {name}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char yaml[256], needle[128];
        snprintf(yaml, sizeof yaml,
                 "channels:\n  rest:\n    - name: a\n      service: s\n      url_path: %s\n",
                 cases[i].path);
        snprintf(needle, sizeof needle, ".yaml:5: channels.rest[0].url_path: %s", cases[i].needle);
        PT_CHECK(pt_test_fails_with(yaml, needle));
    }
    PT_CHECK(
        pt_test_fails_with("channels:\n  amqp_bus:\n    - name: b\n      url_prefix: /b/../c\n",
                           ".yaml:4: channels.amqp_bus[0].url_prefix: dot segments"));
    PT_CHECK(pt_test_fails_with("channels:\n  amqp_bus:\n    - name: b\n      url_prefix: /b/%2e\n",
                                ".yaml:4: channels.amqp_bus[0].url_prefix: no percent-encoding"));
    PT_CHECK(loads("channels:\n  rest:\n    - name: a\n      service: s\n"
                   "      url_path: \"/a-b_c.d~e/!$&'()*+,;=:@/{id}/\"\n"));
}

/* Every numeric key: nan, inf, negative, zero where it makes no sense, overflow. */
PT_CASE(numbers)
{
    static const struct {
        const char *yaml, *needle;
    } cases[] = {
        {"server:\n  header_timeout: 0\n",
         ".yaml:2: server.header_timeout: must be more than 0, from 1ms to 1h"},
        {"server:\n  header_timeout: 2h\n", ".yaml:2: server.header_timeout: from 1ms to 1h"},
        {"server:\n  max_header_bytes: nan\n", ".yaml:2: server.max_header_bytes: expected a size"},
        {"server:\n  max_header_bytes: 512\n",
         ".yaml:2: server.max_header_bytes: from 1KB to 16MB"},
        {"server:\n  workers: 1e99\n", ".yaml:2: server.workers (0: one per core): expected a "
                                       "whole number from 0 to 256"},
        {"server:\n  workers: -1\n", ".yaml:2: server.workers"},
        {"server:\n  workers: '+4'\n", ".yaml:2: server.workers"},
        {"server:\n  workers: 0x10\n", ".yaml:2: server.workers"},
        {"server:\n  workers: 99999999999999999999\n", ".yaml:2: server.workers"},
        {"server:\n  max_body_bytes: 99999999999999999999GB\n",
         ".yaml:2: server.max_body_bytes: expected a size"},
        {"server:\n  max_body_bytes: 0\n", ".yaml:2: server.max_body_bytes: must be more than 0"},
        {"server:\n  max_body_bytes: 1e3\n", ".yaml:2: server.max_body_bytes: expected a size"},
        {"server:\n  max_body_bytes: 100GB\n", ".yaml:2: server.max_body_bytes: from 1 to 64GB"},
        {"server:\n  max_connections: -5\n", ".yaml:2: server.max_connections: expected a size"},
        {"server:\n  max_connections: 0\n", ".yaml:2: server.max_connections: must be more than 0"},
        {"server:\n  body_timeout: inf\n", ".yaml:2: server.body_timeout: expected a duration"},
        {"server:\n  body_timeout: -1s\n", ".yaml:2: server.body_timeout: expected a duration"},
        {"server:\n  idle_timeout: 0\n", ".yaml:2: server.idle_timeout: must be more than 0"},
        {"server:\n  idle_timeout: nanms\n", ".yaml:2: server.idle_timeout: expected a duration"},
        {"server:\n  drain_timeout: 1e3\n", ".yaml:2: server.drain_timeout: expected a duration"},
        {"server:\n  drain_timeout: 25h\n", ".yaml:2: server.drain_timeout: from 0ms to 24h"},
        {"services:\n  watch_interval: 0\n  dirs: []\n",
         ".yaml:2: services.watch_interval: must be more than 0, from 10ms to 1m"},
        {"lua:\n  gc_pause: nan\n", ".yaml:2: lua.gc_pause"},
        {"channels:\n  websocket:\n    - name: w\n      url_path: /w\n      service: s\n"
         "      ping_interval: 50ms\n",
         ".yaml:6: channels.websocket[0].ping_interval: from 100ms to 1h"},
        {"channels:\n  websocket:\n    - name: w\n      url_path: /w\n      service: s\n"
         "      max_message_size: 0\n",
         ".yaml:6: channels.websocket[0].max_message_size: must be more than 0"},
        {"channels:\n  websocket:\n    - name: w\n      url_path: /w\n      service: s\n"
         "      idle_timeout: nan\n",
         ".yaml:6: channels.websocket[0].idle_timeout: expected a duration"},
        {"channels:\n  websocket:\n    - name: w\n      url_path: /w\n      service: s\n"
         "      missed_pings: 0\n",
         ".yaml:6: channels.websocket[0].missed_pings: expected a whole number from 1 to 100"},
        {"channels:\n  websocket:\n    - name: w\n      url_path: /w\n      service: s\n"
         "      token_query_param: 'a b'\n",
         ".yaml:6: channels.websocket[0].token_query_param: expected a query parameter name"},
        {"channels:\n  http_proxy:\n    - name: p\n      url_prefix: /p\n"
         "      read_timeout: 25h\n      services: {a: {targets: [http://127.0.0.1:1]}}\n",
         ".yaml:5: channels.http_proxy[0].read_timeout: from 1ms to 24h"},
        {"channels:\n  http_proxy:\n    - name: p\n      url_prefix: /p\n"
         "      resolve_ttl: inf\n      services: {a: {targets: [http://127.0.0.1:1]}}\n",
         ".yaml:5: channels.http_proxy[0].resolve_ttl: expected a duration"},
        {"channels:\n  http_proxy:\n    - name: p\n      url_prefix: /p\n"
         "      max_fails: 0\n      services: {a: {targets: [http://127.0.0.1:1]}}\n",
         ".yaml:5: channels.http_proxy[0].max_fails: expected a whole number from 1 to 1000"},
        {"channels:\n  http_proxy:\n    - name: p\n      url_prefix: /p\n"
         "      keepalive: -1\n      services: {a: {targets: [http://127.0.0.1:1]}}\n",
         ".yaml:5: channels.http_proxy[0].keepalive"},
        {"channels:\n  http_proxy:\n    - name: p\n      url_prefix: /p\n"
         "      services: {a: {targets: ['http://127.0.0.1:+80']}}\n",
         ".yaml:5: channels.http_proxy[0].services.a.targets[0]: expected http://host:port (a "
         "port"},
        {"channels:\n  http_proxy:\n    - name: p\n      url_prefix: /p\n"
         "      services: {a: {targets: ['http://bad host:80']}}\n",
         ".yaml:5: channels.http_proxy[0].services.a.targets[0]: expected http://host:port (a "
         "host name"},
        {"channels:\n  amqp_bus:\n    - name: b\n      url_prefix: /b\n      reply_timeout: nan\n",
         ".yaml:5: channels.amqp_bus[0].reply_timeout: expected a duration"},
        {"channels:\n  amqp_bus:\n    - name: b\n      url_prefix: /b\n      heartbeat: 2h\n",
         ".yaml:5: channels.amqp_bus[0].heartbeat: from 0ms to 1h"},
        {"channels:\n  rest:\n    - name: r\n      url_path: /r\n      service: s\n"
         "      rate_limit: {rate: nan}\n",
         ".yaml:6: channels.rest[0].rate_limit.rate: expected requests per second"},
        {"channels:\n  rest:\n    - name: r\n      url_path: /r\n      service: s\n"
         "      rate_limit: {rate: 0.0001/h}\n",
         ".yaml:6: channels.rest[0].rate_limit.rate: expected requests per second"},
        {"outgoing:\n  http:\n    - name: h\n      targets: [http://127.0.0.1:1]\n"
         "      timeout: 0\n",
         ".yaml:5: outgoing.http[0].timeout: must be more than 0"},
        {"outgoing:\n  amqp:\n    - name: o\n      timeout: inf\n",
         ".yaml:4: outgoing.amqp[0].timeout: expected a duration"},
        {"outgoing:\n  amqp:\n    - name: o\n      pool_size: 0\n",
         ".yaml:4: outgoing.amqp[0].pool_size: expected a whole number from 1 to 64"},
        {"channels:\n  amqp:\n    - name: q\n      queue: q\n      service: s\n"
         "      prefetch: 1e3\n",
         ".yaml:6: channels.amqp[0].prefetch: expected a whole number from 1 to 65535"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        PT_CHECK(pt_test_fails_with(cases[i].yaml, cases[i].needle));
    /* the edges that make sense still load */
    PT_CHECK(loads("server:\n  drain_timeout: 0\n  header_timeout: 1ms\n  max_body_bytes: 1\n"
                   "  workers: 0\n  max_header_bytes: 1KB\n"));
}

PT_CASE(listen)
{
    static const struct {
        const char *value, *needle;
    } cases[] = {
        {"127.0.0.1", "expected host:port such as 127.0.0.1:11223"},
        {"127.0.0.1:0", "the port must be from 1 to 65535"},
        {"127.0.0.1:65536", "the port must be from 1 to 65535"},
        {"'127.0.0.1:'", "the port must be from 1 to 65535"},
        {"'127.0.0.1:+80'", "the port must be from 1 to 65535"},
        {"':8080'", "'' is not a host name or IP address"},
        {"'exa mple:8080'", "'exa mple' is not a host name or IP address"},
        {"999.1.1.1:80", "'999.1.1.1' is not a host name or IP address"},
        {"'http://x:80'", "'http://x' is not a host name or IP address"},
        {"'::1:8080'", "an IPv6 address goes in brackets"},
        {"'[zz::1]:8080'", "'[zz::1]' is not a host name or IP address"},
        {"'-x:8080'", "'-x' is not a host name or IP address"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char yaml[128], needle[160];
        snprintf(yaml, sizeof yaml, "server:\n  listen: %s\n", cases[i].value);
        snprintf(needle, sizeof needle, ".yaml:2: server.listen: %s", cases[i].needle);
        PT_CHECK(pt_test_fails_with(yaml, needle));
    }
    PT_CHECK(pt_test_fails_with("admin:\n  listen: 127.0.0.1:0\n",
                                ".yaml:2: admin.listen: the port must be from 1 to 65535"));
    pt_config_t *cfg;
    char err[512];
    PT_CHECK_INT(pt_test_load("server:\n  listen: '[::1]:8080'\n", &cfg, err, sizeof err), 0);
    if (cfg) PT_CHECK_STR(cfg->listen_host, "::1");
    pt_config_free(cfg);
    PT_CHECK(loads("server:\n  listen: localhost:8080\n"));
    PT_CHECK(loads("server:\n  listen: 0.0.0.0:65535\n"));
}

/* Files made to exhaust the parser or whoever walks the tree. */
PT_CASE(yaml_bounds)
{
    size_t n = 100000;
    char *deep = malloc(2 * n + 16);
    memcpy(deep, "server: ", 8);
    memset(deep + 8, '[', n);
    memset(deep + 8 + n, ']', n);
    strcpy(deep + 8 + 2 * n, "\n");
    PT_CHECK(fails_fast(deep, ".yaml:1: YAML: nested deeper than 64 levels"));
    /* block nesting too: the 65th mapping starts on line 65 */
    char *blk = malloc(70 * 140);
    size_t o = 0;
    for (int i = 0; i < 70; i++)
        o += (size_t)sprintf(blk + o, "%*sk%d:\n", i * 2, "", i);
    PT_CHECK(fails_fast(blk, ".yaml:65: YAML: nested deeper than 64 levels"));
    free(blk);
    free(deep);
    const char *laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                         "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                         "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                         "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                         "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                         "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                         "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
                         "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
                         "i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n";
    PT_CHECK(fails_fast(laughs, ".yaml:5: YAML: more than 100000 nodes"));
    PT_CHECK(fails_fast("a: &a [1, *a]\n", ".yaml:1: YAML: alias *a names no anchor"));
    PT_CHECK(fails_fast("a: *nope\n", ".yaml:1: YAML: alias *nope names no anchor"));
    PT_CHECK(fails_fast("server: {}\n---\nserver: {}\n",
                        ".yaml:2: YAML: more than one document in the file"));
    /* an alias that stays small is fine */
    PT_CHECK(loads("channels:\n  rest:\n    - name: a\n      url_path: /a\n      service: s\n"
                   "      methods: &m [GET, POST]\n"
                   "    - name: b\n      url_path: /b\n      service: s\n      methods: *m\n"));
}

PT_CASE(secret_file)
{
    char dir[] = "/tmp/pt_test_gate_XXXXXX", fifo[512], yaml[1024];
    PT_CHECK(mkdtemp(dir) != NULL);
    snprintf(fifo, sizeof fifo, "%s/secret", dir);
    PT_CHECK_INT(mkfifo(fifo, 0600), 0);
    static const char *const tmpl = "security:\n"
                                    "  jwt:\n"
                                    "    - name: hs\n"
                                    "      algorithm: HS256\n"
                                    "      secret_file: %s\n";
    snprintf(yaml, sizeof yaml, tmpl, fifo);
    PT_CHECK(fails_fast(yaml, ".yaml:5: security.jwt[0].secret_file: cannot read"));
    snprintf(yaml, sizeof yaml, tmpl, "/dev/zero");
    PT_CHECK(fails_fast(yaml, ".yaml:5: security.jwt[0].secret_file: cannot read"));
    unlink(fifo);
    rmdir(dir);
}

PT_CASE(service_dir_loop)
{
    char dir[] = "/tmp/pt_test_gate_XXXXXX", p[512], yaml[1024];
    PT_CHECK(mkdtemp(dir) != NULL);
    const char *links[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, links[i]);
        PT_CHECK_INT(symlink(".", p), 0);
    }
    snprintf(yaml, sizeof yaml, "services:\n  dirs:\n    - %s\n", dir);
    PT_CHECK(fails_fast(yaml, ".yaml:3: services.dirs: a symlink loop at"));
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, links[i]);
        unlink(p);
    }
    rmdir(dir);
}

int main(void)
{
    PT_RUN(duplicate_keys);
    PT_RUN(route_clashes);
    PT_RUN(unroutable_paths);
    PT_RUN(numbers);
    PT_RUN(listen);
    PT_RUN(yaml_bounds);
    PT_RUN(secret_file);
    PT_RUN(service_dir_loop);
    return PT_TEST_DONE();
}
