/* pt_admin: the admin listener answers from the operations it is given (no
 * server needed): readiness and generation, reload accepted or refused,
 * the metrics text, 404 and 405. */
#include "pt_admin.h"
#include "pt_test.h"
#include "pt_test_config.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
    int ready, refuse, reloads;
    uint64_t generation;
} fake_t;

static int f_ready(void *ud)
{
    return ((fake_t *)ud)->ready;
}

static uint64_t f_generation(void *ud)
{
    return ((fake_t *)ud)->generation;
}

static int f_reload(void *ud, char *err, size_t errlen)
{
    fake_t *f = ud;
    if (f->refuse) {
        snprintf(err, errlen, "x.yaml:3: \"bad\"");
        return -1;
    }
    f->reloads++;
    f->generation++;
    return 0;
}

static void f_metrics(void *ud, pt_buf_t *out)
{
    pt_buf_puts(out, "portico_test 1\n");
}

static const pt_admin_ops_t ops = {
    .ready = f_ready, .generation = f_generation, .reload = f_reload, .metrics = f_metrics};

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

/* The requests run on a thread of their own: the admin listener serves on
 * the test's loop meanwhile. */
typedef struct {
    int port;
    fake_t *fake;
    uv_async_t done;
} client_t;

static void expect(client_t *c, const char *method, const char *path, int status, const char *body)
{
    char out[4096], err[256];
    PT_CHECK_INT(
        pt_admin_request("127.0.0.1", c->port, method, path, out, sizeof out, err, sizeof err),
        status);
    if (!strstr(out, body)) fprintf(stderr, "  %s %s: %s\n", method, path, out);
    PT_CHECK(strstr(out, body) != NULL);
}

static void run_client(void *arg)
{
    client_t *c = arg;
    expect(c, "GET", "/healthz", 200, "{\"status\":\"ok\"}");
    expect(c, "GET", "/readyz", 200, "{\"ready\":true,\"generation\":7}");
    c->fake->ready = 0;
    expect(c, "GET", "/readyz", 503, "{\"ready\":false,\"generation\":7}");
    expect(c, "POST", "/reload", 200, "{\"accepted\":true,\"generation\":8}");
    c->fake->refuse = 1;
    expect(c, "POST", "/reload", 422, "{\"accepted\":false,\"error\":\"x.yaml:3: \\\"bad\\\"\"}");
    expect(c, "GET", "/metrics", 200, "portico_test 1\n");
    expect(c, "GET", "/reload", 405, "\"status\":405");
    expect(c, "GET", "/nope", 404, "\"status\":404");
    uv_async_send(&c->done);
}

static void on_done(uv_async_t *a)
{
    pt_admin_stop(a->data);
    uv_close((uv_handle_t *)a, NULL);
}

PT_CASE(answers_from_the_operations_it_is_given)
{
    char yaml[128], err[512];
    int port = free_port();
    pt_config_t *cfg = NULL;
    snprintf(yaml, sizeof yaml, "admin:\n  listen: 127.0.0.1:%d\n", port);
    PT_CHECK_INT(pt_test_load(yaml, &cfg, err, sizeof err), 0);
    if (!cfg) return;
    uv_loop_t loop;
    uv_loop_init(&loop);
    fake_t fake = {.ready = 1, .generation = 7};
    pt_admin_t *a = NULL;
    PT_CHECK_INT(pt_admin_start(&loop, cfg, &ops, &fake, &a, err, sizeof err), 0);
    PT_CHECK(a != NULL);
    client_t c = {.port = port, .fake = &fake};
    uv_async_init(&loop, &c.done, on_done);
    c.done.data = a;
    uv_thread_t th;
    uv_thread_create(&th, run_client, &c);
    uv_run(&loop, UV_RUN_DEFAULT); /* until the client is done and the admin stopped */
    uv_thread_join(&th);
    PT_CHECK_INT(fake.reloads, 1);
    PT_CHECK_INT(uv_loop_close(&loop), 0);
    pt_config_free(cfg);
}

PT_CASE(no_admin_listen_no_listener)
{
    char err[512];
    pt_config_t *cfg = NULL;
    PT_CHECK_INT(pt_test_load("server:\n  workers: 1\n", &cfg, err, sizeof err), 0);
    if (!cfg) return;
    uv_loop_t loop;
    uv_loop_init(&loop);
    fake_t fake = {0};
    pt_admin_t *a = (pt_admin_t *)&fake;
    PT_CHECK_INT(pt_admin_start(&loop, cfg, &ops, &fake, &a, err, sizeof err), 0);
    PT_CHECK(a == NULL);
    pt_admin_stop(a); /* NULL is fine */
    PT_CHECK_INT(uv_loop_close(&loop), 0);
    pt_config_free(cfg);
}

int main(void)
{
    (void)pt_test_fails_with;
    PT_RUN(answers_from_the_operations_it_is_given);
    PT_RUN(no_admin_listen_no_listener);
    return PT_TEST_DONE();
}
