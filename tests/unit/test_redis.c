/* pt_redis against a real redis-server started here (skipped, and said so,
 * when there is none): pipelined replies in order, error replies, scripts
 * (EVALSHA, EVAL on NOSCRIPT), the per-command timeout, failing fast while
 * down and reconnecting, AUTH, SELECT, pub/sub, and the URL parser. */
#include "pt_redis.h"
#include "pt_test.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static uv_loop_t loop;
static int port;
static pid_t server = -1;
static char dir[] = "/tmp/pt-test-redis-XXXXXX";

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static void run_ms(uint64_t ms);

static void server_start(void)
{
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    server = fork();
    if (server == 0) {
        int null = open("/dev/null", 1);
        dup2(null, 1);
        dup2(null, 2);
        execlp("redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", dir, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) { /* until it listens */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok) return;
        usleep(50000);
    }
}

static void server_stop(void)
{
    if (server <= 0) return;
    kill(server, SIGTERM);
    waitpid(server, NULL, 0);
    server = -1;
}

static pt_cluster_cfg_t cfg_of(uint64_t timeout_ms)
{
    static char host[] = "127.0.0.1", url[] = "redis://127.0.0.1/test";
    return (pt_cluster_cfg_t){
        .on = true, .host = host, .port = port, .timeout_ms = timeout_ms, .redis = url};
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop for about ms (or until nothing is left to run). */
static void run_ms(uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uint64_t end = uv_now(&loop) + ms;
    uv_timer_start(&t, on_tick, 5, 5);
    while (uv_now(&loop) < end)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static int *until_flag, until_want;
static void run_until(int *flag, int want, uint64_t ms)
{
    uint64_t end = uv_now(&loop) + ms;
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, on_tick, 5, 5);
    until_flag = flag, until_want = want;
    while (*flag < want && uv_now(&loop) < end)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

typedef struct {
    int done, err, type;
    long long integer;
    char str[256];
} result_t;

static void on_result(void *arg, const struct redisReply *reply, int err)
{
    result_t *r = arg;
    r->done++;
    r->err = err;
    if (reply) {
        r->type = reply->type;
        r->integer = reply->integer;
        if (reply->str) snprintf(r->str, sizeof r->str, "%.*s", (int)reply->len, reply->str);
    }
}

static int cmd(pt_redis_t *r, result_t *res, int argc, const char **argv)
{
    memset(res, 0, sizeof *res);
    return pt_redis_command(r, argc, argv, NULL, on_result, res);
}

/* ---- cases ---- */

static long long order[200];
static int n_order;
static void on_incr(void *arg, const struct redisReply *reply, int err)
{
    (void)arg;
    order[n_order++] = err ? -1 : reply->integer;
}

PT_CASE(pipelined_replies_come_in_order)
{
    pt_cluster_cfg_t cfg = cfg_of(1000);
    pt_redis_t *r = pt_redis_new(&loop, &cfg);
    PT_CHECK(!pt_redis_up(r)); /* lazy: nothing before the first command */
    const char *del[] = {"DEL", "t:n"};
    result_t res;
    PT_CHECK_INT(cmd(r, &res, 2, del), 0);
    n_order = 0;
    const char *incr[] = {"INCR", "t:n"};
    for (int i = 0; i < 100; i++)
        PT_CHECK_INT(pt_redis_command(r, 2, incr, NULL, on_incr, NULL), 0);
    PT_CHECK_INT(res.done, 0); /* never from within the call */
    run_until(&n_order, 100, 3000);
    PT_CHECK_INT(n_order, 100);
    for (int i = 0; i < n_order; i++)
        if (order[i] != i + 1) {
            PT_CHECK_INT(order[i], i + 1);
            break;
        }
    PT_CHECK(pt_redis_up(r));
    /* binary-safe arguments */
    const char *set[] = {"SET", "t:bin", "a\0b"};
    size_t lens[] = {3, 5, 3};
    memset(&res, 0, sizeof res);
    PT_CHECK_INT(pt_redis_command(r, 3, set, lens, on_result, &res), 0);
    run_until(&res.done, 1, 2000);
    const char *get[] = {"STRLEN", "t:bin"};
    PT_CHECK_INT(cmd(r, &res, 2, get), 0);
    run_until(&res.done, 1, 2000);
    PT_CHECK_INT(res.integer, 3);
    /* an error reply is a reply */
    const char *bad[] = {"NOSUCHCOMMAND", "x"};
    PT_CHECK_INT(cmd(r, &res, 2, bad), 0);
    run_until(&res.done, 1, 2000);
    PT_CHECK_INT(res.err, 0);
    PT_CHECK_INT(res.type, REDIS_REPLY_ERROR);
    pt_redis_free(r);
    run_ms(20);
}

static int big_ok, big_done, n_long, long_bad;
static void on_long(void *arg, const struct redisReply *reply, int err)
{
    (void)arg;
    n_long++;
    if (err || reply->integer != n_long) long_bad++;
}
static void on_big_get(void *arg, const struct redisReply *reply, int err)
{
    const char *want = arg;
    big_done++;
    big_ok = !err && reply->type == REDIS_REPLY_STRING && reply->len == 4 << 20 &&
             !memcmp(reply->str, want, reply->len);
}

/* 4 MB each way (partial writes, a reply over many reads) and 20,000
 * commands queued in one loop turn (one write far past the socket's room). */
PT_CASE(big_values_and_long_pipelines)
{
    pt_cluster_cfg_t cfg = cfg_of(5000);
    pt_redis_t *r = pt_redis_new(&loop, &cfg);
    size_t n = 4 << 20;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    const char *set[] = {"SET", "t:big", big};
    size_t lens[] = {3, 5, n};
    result_t res = {0};
    PT_CHECK_INT(pt_redis_command(r, 3, set, lens, on_result, &res), 0);
    const char *get[] = {"GET", "t:big"};
    big_done = big_ok = 0;
    PT_CHECK_INT(pt_redis_command(r, 2, get, NULL, on_big_get, big), 0);
    run_until(&big_done, 1, 5000);
    PT_CHECK_INT(res.err, 0);
    PT_CHECK(big_ok);
    const char *del[] = {"DEL", "t:n"};
    PT_CHECK_INT(cmd(r, &res, 2, del), 0);
    run_until(&res.done, 1, 2000);
    n_long = long_bad = 0;
    const char *incr[] = {"INCR", "t:n"};
    for (int i = 0; i < 20000; i++)
        PT_CHECK(pt_redis_command(r, 2, incr, NULL, on_long, NULL) == 0);
    run_until(&n_long, 20000, 10000);
    PT_CHECK_INT(n_long, 20000);
    PT_CHECK_INT(long_bad, 0); /* each reply is the next integer: in order, none lost */
    free(big);
    pt_redis_free(r);
    run_ms(20);
}

PT_CASE(scripts_run_by_sha_then_whole)
{
    pt_cluster_cfg_t cfg = cfg_of(1000);
    pt_redis_t *r = pt_redis_new(&loop, &cfg);
    pt_redis_script_t s;
    pt_redis_script_init(&s, "return redis.call('INCRBY', KEYS[1], ARGV[1])");
    PT_CHECK_INT(strlen(s.sha1), 40);
    result_t res = {0};
    const char *flush[] = {"SCRIPT", "FLUSH"};
    PT_CHECK_INT(cmd(r, &res, 2, flush), 0);
    run_until(&res.done, 1, 2000);
    const char *del[] = {"DEL", "t:s"};
    PT_CHECK_INT(cmd(r, &res, 2, del), 0);
    run_until(&res.done, 1, 2000);
    const char *args[] = {"t:s", "5"};
    for (int i = 1; i <= 2; i++) { /* NOSCRIPT, then cached */
        memset(&res, 0, sizeof res);
        PT_CHECK_INT(pt_redis_eval(r, &s, 1, 2, args, NULL, on_result, &res), 0);
        run_until(&res.done, 1, 2000);
        PT_CHECK_INT(res.err, 0);
        PT_CHECK_INT(res.type, REDIS_REPLY_INTEGER);
        PT_CHECK_INT(res.integer, 5 * i);
    }
    /* preformatted arguments (pt_redis_eval_formatted): NOSCRIPT, then cached */
    PT_CHECK_INT(cmd(r, &res, 2, flush), 0);
    run_until(&res.done, 1, 2000);
    static const char tail[] = "$3\r\nt:s\r\n$1\r\n2\r\n";
    for (int i = 1; i <= 2; i++) {
        pt_redis_evalf_t e;
        memset(&res, 0, sizeof res);
        PT_CHECK_INT(
            pt_redis_eval_formatted(r, &s, 1, 2, tail, sizeof tail - 1, &e, on_result, &res), 0);
        run_until(&res.done, 1, 2000);
        PT_CHECK_INT(res.err, 0);
        PT_CHECK_INT(res.integer, 10 + 2 * i);
    }
    pt_redis_free(r);
    run_ms(20);
}

PT_CASE(a_command_times_out_and_the_connection_comes_back)
{
    pt_cluster_cfg_t cfg = cfg_of(100);
    pt_redis_t *r = pt_redis_new(&loop, &cfg);
    result_t slow, after, res;
    const char *blpop[] = {"BLPOP", "t:never", "2"};
    const char *ping[] = {"PING"};
    PT_CHECK_INT(cmd(r, &slow, 3, blpop), 0);
    PT_CHECK_INT(cmd(r, &after, 1, ping), 0);
    uint64_t t0 = uv_now(&loop);
    run_until(&slow.done, 1, 2000);
    PT_CHECK_INT(slow.err, PT_REDIS_ETIMEOUT);
    PT_CHECK(uv_now(&loop) - t0 < 400);
    PT_CHECK_INT(after.done, 1); /* reset with it */
    PT_CHECK(after.err != 0);
    PT_CHECK(!pt_redis_up(r));
    PT_CHECK_INT(cmd(r, &res, 1, ping), PT_REDIS_EDOWN); /* at once while down */
    run_ms(400);                                         /* the backoff, then a reconnect */
    PT_CHECK(pt_redis_up(r));
    PT_CHECK_INT(cmd(r, &res, 1, ping), 0);
    run_until(&res.done, 1, 2000);
    PT_CHECK_STR(res.str, "PONG");
    pt_redis_free(r);
    run_ms(20);
}

PT_CASE(down_fails_fast_and_reconnects)
{
    pt_cluster_cfg_t cfg = cfg_of(1000);
    pt_redis_t *r = pt_redis_new(&loop, &cfg);
    result_t res, pending;
    const char *ping[] = {"PING"};
    PT_CHECK_INT(cmd(r, &res, 1, ping), 0);
    run_until(&res.done, 1, 2000);
    PT_CHECK(pt_redis_up(r));
    server_stop();
    const char *blpop[] = {"BLPOP", "t:never", "0"};
    if (cmd(r, &pending, 3, blpop) == 0) run_until(&pending.done, 1, 2000);
    run_ms(50);
    PT_CHECK(!pt_redis_up(r));
    PT_CHECK_INT(cmd(r, &res, 1, ping), PT_REDIS_EDOWN);
    server_start();
    run_ms(2600); /* at most the longest backoff */
    PT_CHECK(pt_redis_up(r));
    PT_CHECK_INT(cmd(r, &res, 1, ping), 0);
    run_until(&res.done, 1, 2000);
    PT_CHECK_INT(res.err, 0);
    pt_redis_free(r);
    run_ms(20);
}

PT_CASE(the_first_connect_fails_fast_too)
{
    pt_cluster_cfg_t cfg = cfg_of(500);
    cfg.port = free_port(); /* nothing there */
    pt_redis_t *r = pt_redis_new(&loop, &cfg);
    result_t res;
    const char *ping[] = {"PING"};
    int rc = cmd(r, &res, 1, ping);
    if (rc == 0) run_until(&res.done, 1, 2000);
    PT_CHECK(rc == PT_REDIS_EDOWN || res.err == PT_REDIS_EDOWN);
    PT_CHECK_INT(cmd(r, &res, 1, ping), PT_REDIS_EDOWN);
    pt_redis_free(r);
    run_ms(20);
}

PT_CASE(auth_and_select)
{
    pt_cluster_cfg_t cfg = cfg_of(1000);
    pt_redis_t *admin = pt_redis_new(&loop, &cfg);
    result_t res;
    const char *setpw[] = {"CONFIG", "SET", "requirepass", "s3cret"};
    PT_CHECK_INT(cmd(admin, &res, 4, setpw), 0);
    run_until(&res.done, 1, 2000);
    PT_CHECK_INT(res.err, 0);

    char pw[] = "s3cret", wrong[] = "nope";
    cfg.password = pw;
    cfg.db = 3;
    pt_redis_t *r = pt_redis_new(&loop, &cfg);
    const char *set[] = {"SET", "t:db", "three"};
    PT_CHECK_INT(cmd(r, &res, 3, set), 0);
    run_until(&res.done, 1, 2000);
    PT_CHECK_INT(res.err, 0);
    PT_CHECK_STR(res.str, "OK");
    cfg.db = 0;
    pt_redis_t *r0 = pt_redis_new(&loop, &cfg);
    const char *get[] = {"GET", "t:db"};
    PT_CHECK_INT(cmd(r0, &res, 2, get), 0);
    run_until(&res.done, 1, 2000);
    PT_CHECK_INT(res.type, REDIS_REPLY_NIL); /* SET went to database 3 */

    cfg.password = wrong;
    pt_redis_t *bad = pt_redis_new(&loop, &cfg);
    PT_CHECK_INT(cmd(bad, &res, 2, get), 0);
    run_until(&res.done, 1, 2000);
    PT_CHECK_INT(res.err, PT_REDIS_EDOWN); /* AUTH refused: the connection is dropped */
    PT_CHECK(!pt_redis_up(bad));

    const char *nopw[] = {"CONFIG", "SET", "requirepass", ""};
    PT_CHECK_INT(cmd(r0, &res, 4, nopw), 0);
    run_until(&res.done, 1, 2000);
    PT_CHECK_INT(res.err, 0);
    pt_redis_free(bad);
    pt_redis_free(r0);
    pt_redis_free(r);
    pt_redis_free(admin);
    run_ms(20);
}

static int n_msgs;
static char last_msg[64], last_channel[64];
static void on_msg(void *arg, const char *channel, const char *data, size_t len)
{
    (void)arg;
    n_msgs++;
    snprintf(last_channel, sizeof last_channel, "%s", channel);
    snprintf(last_msg, sizeof last_msg, "%.*s", (int)len, data);
}

PT_CASE(subscriber_gets_messages)
{
    pt_cluster_cfg_t cfg = cfg_of(1000);
    n_msgs = 0;
    pt_redis_t *sub = pt_redis_subscriber_new(&loop, &cfg, "t:chan", on_msg, NULL);
    PT_CHECK_INT(pt_redis_subscriber_add(sub, "t:other"), 0);
    result_t res;
    PT_CHECK_INT(cmd(sub, &res, 1, (const char *[]){"PING"}), PT_REDIS_EINVAL);
    for (int i = 0; i < 100 && !pt_redis_up(sub); i++)
        run_ms(10);
    PT_CHECK(pt_redis_up(sub));
    run_ms(50); /* the second SUBSCRIBE's confirmation */
    pt_redis_t *r = pt_redis_new(&loop, &cfg);
    const char *pub[] = {"PUBLISH", "t:other", "hello"};
    PT_CHECK_INT(cmd(r, &res, 3, pub), 0);
    run_until(&n_msgs, 1, 2000);
    PT_CHECK_INT(n_msgs, 1);
    PT_CHECK_STR(last_channel, "t:other");
    PT_CHECK_STR(last_msg, "hello");
    pt_redis_free(sub);
    /* a subscriber whose Redis stops answering notices it by its PING, and
     * subscribes again once it answers */
    cfg.heartbeat_ms = 100;
    cfg.timeout_ms = 100;
    sub = pt_redis_subscriber_new(&loop, &cfg, "t:chan", on_msg, NULL);
    for (int i = 0; i < 100 && !pt_redis_up(sub); i++)
        run_ms(10);
    PT_CHECK(pt_redis_up(sub));
    const char *pause[] = {"CLIENT", "PAUSE", "700", "ALL"};
    PT_CHECK_INT(cmd(r, &res, 4, pause), 0);
    run_until(&res.done, 1, 2000);
    PT_CHECK_INT(res.err, 0);
    run_ms(400);
    PT_CHECK(!pt_redis_up(sub));
    for (int i = 0; i < 300 && !pt_redis_up(sub); i++)
        run_ms(10);
    PT_CHECK(pt_redis_up(sub));
    n_msgs = 0;
    const char *pub2[] = {"PUBLISH", "t:chan", "again"};
    memset(&res, 0, sizeof res);
    if (pt_redis_command(r, 3, pub2, NULL, on_result, &res) != 0) { /* r was paused too */
        run_ms(300);
        PT_CHECK_INT(pt_redis_command(r, 3, pub2, NULL, on_result, &res), 0);
    }
    run_until(&n_msgs, 1, 3000);
    PT_CHECK_INT(n_msgs, 1);
    PT_CHECK_STR(last_msg, "again");
    pt_redis_free(sub);
    pt_redis_free(r);
    run_ms(20);
}

static pt_redis_t *freed_in_cb;
static int cb_calls;
static void free_in_cb(void *arg, const struct redisReply *reply, int err)
{
    (void)reply, (void)err;
    cb_calls++;
    if (arg) {
        pt_redis_free(freed_in_cb);
    }
}

PT_CASE(free_from_within_a_callback)
{
    pt_cluster_cfg_t cfg = cfg_of(1000);
    freed_in_cb = pt_redis_new(&loop, &cfg);
    cb_calls = 0;
    const char *ping[] = {"PING"};
    pt_redis_command(freed_in_cb, 1, ping, NULL, free_in_cb, (void *)1);
    pt_redis_command(freed_in_cb, 1, ping, NULL, free_in_cb, NULL);
    run_until(&cb_calls, 2, 2000);
    PT_CHECK_INT(cb_calls, 2); /* the second heard EDOWN from the free */
    run_ms(20);
}

/* PT_REDIS_BENCH=N: N INCRs, at most 64 outstanding (a worker's pipeline
 * under load), timed; not a check. Under callgrind, the difference of two
 * runs is the client's instructions per command. */
static int bench_left, bench_out, bench_done;
static pt_redis_t *bench_r;
static void bench_send(void);
static void on_bench(void *arg, const struct redisReply *reply, int err)
{
    (void)arg, (void)reply;
    PT_CHECK_INT(err, 0);
    bench_out--;
    bench_done++;
    bench_send();
}
static void bench_send(void)
{
    const char *incr[] = {"INCR", "t:bench"};
    while (bench_left > 0 && bench_out < 64) {
        if (pt_redis_command(bench_r, 2, incr, NULL, on_bench, NULL) != 0) return;
        bench_left--, bench_out++;
    }
}

PT_CASE(throughput)
{
    const char *n = getenv("PT_REDIS_BENCH");
    if (!n) return;
    pt_cluster_cfg_t cfg = cfg_of(1000);
    bench_r = pt_redis_new(&loop, &cfg);
    int total = atoi(n);
    bench_left = total, bench_out = 0, bench_done = 0;
    uint64_t t0 = uv_hrtime();
    bench_send();
    run_until(&bench_done, total, 60000);
    double s = (double)(uv_hrtime() - t0) / 1e9;
    printf("throughput: %d INCR in %.3f s: %.0f/s, 64 outstanding, one connection\n", bench_done, s,
           bench_done / s);
    pt_redis_free(bench_r);
    run_ms(10);
}

PT_CASE(urls)
{
    char err[256];
    int tls;
    pt_cluster_cfg_t c = {0};
    PT_CHECK_INT(pt_config_cluster_url("redis://127.0.0.1:6380/2", &c, &tls, err, sizeof err), 0);
    PT_CHECK_STR(c.host, "127.0.0.1");
    PT_CHECK_INT(c.port, 6380);
    PT_CHECK_INT(c.db, 2);
    PT_CHECK_INT(tls, 0);
    pt_config_cluster_free(&c);
    PT_CHECK_INT(pt_config_cluster_url("rediss://app@[::1]", &c, &tls, err, sizeof err), 0);
    PT_CHECK_STR(c.host, "::1");
    PT_CHECK_STR(c.user, "app");
    PT_CHECK_INT(c.port, 6379);
    PT_CHECK_INT(tls, 1);
    pt_config_cluster_free(&c);
    PT_CHECK_INT(pt_config_cluster_url("redis://u:pw@host/0", &c, &tls, err, sizeof err), -1);
    PT_CHECK(strstr(err, "password_env") != NULL);
    pt_config_cluster_free(&c);
    PT_CHECK_INT(pt_config_cluster_url("http://host", &c, &tls, err, sizeof err), -1);
    PT_CHECK_INT(pt_config_cluster_url("redis://host:99999", &c, &tls, err, sizeof err), -1);
    PT_CHECK_INT(pt_config_cluster_url("redis://host/x", &c, &tls, err, sizeof err), -1);
    pt_config_cluster_free(&c);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    PT_RUN(urls);
    if (access("/usr/bin/redis-server", X_OK) != 0) {
        printf("skip: no redis-server (apt-get install redis-server)\n");
        return PT_TEST_DONE();
    }
    if (!mkdtemp(dir)) return 1;
    port = free_port();
    server_start();
    PT_RUN(pipelined_replies_come_in_order);
    PT_RUN(scripts_run_by_sha_then_whole);
    PT_RUN(big_values_and_long_pipelines);
    PT_RUN(a_command_times_out_and_the_connection_comes_back);
    PT_RUN(the_first_connect_fails_fast_too);
    PT_RUN(auth_and_select);
    PT_RUN(subscriber_gets_messages);
    PT_RUN(free_from_within_a_callback);
    PT_RUN(down_fails_fast_and_reconnects);
    PT_RUN(throughput);
    server_stop();
    rmdir(dir);
    uv_run(&loop, UV_RUN_NOWAIT);
    return PT_TEST_DONE();
}
