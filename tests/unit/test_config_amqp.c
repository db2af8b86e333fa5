/* outgoing.amqp and channels.amqp in the config (pt_config.c). */
#include "pt_test_config.h"

#include <stdlib.h>
#include <unistd.h>

/* Everything set; a channel borrowing the connection's URL. */
static const char full[] = "outgoing:\n"
                           "  amqp:\n"
                           "    - name: b\n"
                           "      url: amqp://u:s3cret@rabbit.example:5673/prod\n"
                           "      url_env: PT_TEST_AMQP_URL\n"
                           "      heartbeat: 1500ms\n"
                           "      confirms: false\n"
                           "      pool_size: 3\n"
                           "      timeout: 2s\n"
                           "channels:\n"
                           "  amqp:\n"
                           "    - name: in\n"
                           "      connection: b\n"
                           "      queue: orders\n"
                           "      service: orders.handle\n"
                           "      prefetch: 20\n"
                           "      concurrency: 5\n"
                           "      on_error: requeue\n";

PT_CASE(defaults)
{
    pt_config_t *cfg;
    char err[512] = "";
    int rc;
    /* Defaults. */
    unsetenv("PT_TEST_AMQP_URL");
    rc = pt_test_load("outgoing:\n"
                      "  amqp:\n"
                      "    - name: My Backend\n",
                      &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        PT_CHECK_INT(cfg->n_amqp_out, 1);
        PT_CHECK_STR(cfg->amqp_out[0].name, "My Backend");
        PT_CHECK_STR(cfg->amqp_out[0].ep.host, "127.0.0.1");
        PT_CHECK_INT(cfg->amqp_out[0].ep.port, 5672);
        PT_CHECK_STR(cfg->amqp_out[0].ep.user, "guest");
        PT_CHECK_STR(cfg->amqp_out[0].ep.password, "guest");
        PT_CHECK_STR(cfg->amqp_out[0].ep.vhost, "/");
        PT_CHECK_INT(cfg->amqp_out[0].ep.heartbeat, 30);
        PT_CHECK_INT(cfg->amqp_out[0].confirms, 1);
        PT_CHECK_INT(cfg->amqp_out[0].pool_size, 1);
        PT_CHECK_INT(cfg->amqp_out[0].timeout_ms, 10000);
        PT_CHECK_INT(cfg->n_amqp_channels, 0);
        pt_config_free(cfg);
    }
}

PT_CASE(everything_set)
{
    pt_config_t *cfg;
    char err[512] = "";
    int rc = pt_test_load(full, &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        const pt_amqp_out_cfg_t *o = &cfg->amqp_out[0];
        PT_CHECK_STR(o->ep.host, "rabbit.example");
        PT_CHECK_INT(o->ep.port, 5673);
        PT_CHECK_STR(o->ep.user, "u");
        PT_CHECK_STR(o->ep.password, "s3cret");
        PT_CHECK_STR(o->ep.vhost, "prod");
        PT_CHECK(strstr(o->ep.display, "s3cret") == NULL);
        PT_CHECK_INT(o->ep.heartbeat, 2);
        PT_CHECK_INT(o->confirms, 0);
        PT_CHECK_INT(o->pool_size, 3);
        PT_CHECK_INT(o->timeout_ms, 2000);
        PT_CHECK_INT(cfg->n_amqp_channels, 1);
        const pt_amqp_channel_cfg_t *a = &cfg->amqp_channels[0];
        PT_CHECK_STR(a->channel.name, "in");
        PT_CHECK_INT(a->channel.type, PT_CHANNEL_AMQP);
        PT_CHECK_STR(a->channel.service, "orders.handle");
        PT_CHECK_STR(a->queue, "orders");
        PT_CHECK_STR(a->ep.host, "rabbit.example");
        PT_CHECK_INT(a->prefetch, 20);
        PT_CHECK_INT(a->concurrency, 5);
        PT_CHECK_INT(a->requeue, 1);
        PT_CHECK_INT(cfg->n_channels, 0); /* AMQP channels are not routed over HTTP */
        pt_config_free(cfg);
    }
}

PT_CASE(url_env_wins)
{
    pt_config_t *cfg;
    char err[512] = "";
    int rc;
    /* The variable named by url_env wins when set and not empty. */
    setenv("PT_TEST_AMQP_URL", "amqp://env:pw@10.0.0.9:5999/%2f", 1);
    rc = pt_test_load(full, &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        PT_CHECK_STR(cfg->amqp_out[0].ep.host, "10.0.0.9");
        PT_CHECK_INT(cfg->amqp_out[0].ep.port, 5999);
        PT_CHECK_STR(cfg->amqp_out[0].ep.user, "env");
        PT_CHECK_STR(cfg->amqp_out[0].ep.vhost, "/");
        PT_CHECK_STR(cfg->amqp_channels[0].ep.host, "10.0.0.9");
        pt_config_free(cfg);
    }
    setenv("PT_TEST_AMQP_URL", "", 1);
    rc = pt_test_load(full, &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        PT_CHECK_STR(cfg->amqp_out[0].ep.host, "rabbit.example");
        pt_config_free(cfg);
    }
    setenv("PT_TEST_AMQP_URL", "http://nope", 1);
    PT_CHECK(pt_test_fails_with(
        full, ":5: outgoing.amqp[0].url_env: $PT_TEST_AMQP_URL is not an AMQP URL"));
    unsetenv("PT_TEST_AMQP_URL");
}

PT_CASE(mistakes_name_the_line)
{
    /* Mistakes name the file and line. */
    PT_CHECK(pt_test_fails_with("outgoing:\n  amqp:\n    - name: x\n      confirm: true\n",
                                ":4: outgoing.amqp[0]: unknown key 'confirm'"));
    PT_CHECK(pt_test_fails_with("outgoing:\n  amqp:\n    - name: x\n      url: rabbit:5672\n",
                                ":4: outgoing.amqp[0].url: not an AMQP URL"));
    PT_CHECK(pt_test_fails_with("outgoing:\n  amqp:\n    - name: x\n      url: amqps://h/\n",
                                ":4: outgoing.amqp[0].url: amqps:// is not supported"));
    PT_CHECK(
        pt_test_fails_with("outgoing:\n  amqp:\n    - name: x\n      pool_size: 0\n",
                           ":4: outgoing.amqp[0].pool_size: expected a whole number from 1 to 64"));
    PT_CHECK(pt_test_fails_with("outgoing:\n  amqp:\n    - name: x\n      confirms: maybe\n",
                                ":4: outgoing.amqp[0].confirms: expected true or false"));
    PT_CHECK(pt_test_fails_with("outgoing:\n  amqp:\n    - name: x\n    - name: x\n",
                                ":4: outgoing AMQP connection name 'x' is used twice"));
    PT_CHECK(pt_test_fails_with("outgoing:\n  amqp:\n    - url: amqp://h/\n",
                                "outgoing.amqp[0].name: expected a string"));
    PT_CHECK(pt_test_fails_with("outgoing:\n  ftp: []\n", ":2: outgoing: unknown key 'ftp'"));
    PT_CHECK(pt_test_fails_with(
        "channels:\n  amqp:\n    - name: c\n      connection: nope\n"
        "      queue: q\n      service: s\n",
        ":4: channels.amqp[0].connection: no outgoing.amqp connection named 'nope'"));
    PT_CHECK(pt_test_fails_with(
        "channels:\n  amqp:\n    - name: c\n      queue: q\n      service: s\n"
        "      prefetch: 2\n      concurrency: 3\n",
        ":7: channels.amqp[0].concurrency: expected a whole number from 1 to 2"));
    PT_CHECK(
        pt_test_fails_with("channels:\n  amqp:\n    - name: c\n      queue: q\n      service: s\n"
                           "      on_error: drop\n",
                           ":6: channels.amqp[0].on_error: expected dead_letter or requeue"));
    PT_CHECK(pt_test_fails_with("channels:\n  amqp:\n    - name: c\n      service: s\n",
                                "channels.amqp[0].queue: expected a string"));
    PT_CHECK(pt_test_fails_with(
        "channels:\n  rest:\n    - name: c\n      url_path: /c\n      service: s\n"
        "  amqp:\n    - name: c\n      queue: q\n      service: s\n",
        ":7: channel name 'c' is used twice"));
}

int main(void)
{
    PT_RUN(defaults);
    PT_RUN(everything_set);
    PT_RUN(url_env_wins);
    PT_RUN(mistakes_name_the_line);
    return PT_TEST_DONE();
}
