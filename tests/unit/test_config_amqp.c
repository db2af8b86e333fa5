/* outgoing.amqp and channels.amqp in the config (pt_config.c). */
#include "pt_test_config.h"

#include <stdlib.h>
#include <string.h>
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

/* amqps://: the default port, verification on, tls options checked with
 * their line (test PEM files under tests/unit/data/amqps). */
static char *pt__yaml_tls(const char *url, const char *tls)
{
    static char buf[2048];
    char cwd[1024];
    if (!getcwd(cwd, sizeof cwd)) cwd[0] = 0;
    /* every {} in tls is the absolute data directory */
    char body[1024] = "", *o = body;
    for (const char *p = tls; *p && o < body + sizeof body - 200; p++) {
        if (p[0] == '{' && p[1] == '}') {
            o += snprintf(o, 200, "%s/tests/unit/data/amqps", cwd);
            p++;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
    snprintf(buf, sizeof buf, "outgoing:\n  amqp:\n    - name: x\n      url: %s\n%s", url, body);
    return buf;
}

PT_CASE(amqps)
{
    pt_config_t *cfg;
    char err[512] = "";
    int rc = pt_test_load(pt__yaml_tls("amqps://u:p@broker.example/", ""), &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        const pt_amqp_endpoint_t *ep = &cfg->amqp_out[0].ep;
        PT_CHECK_INT(ep->tls, 1);
        PT_CHECK_INT(ep->tls_verify, 1);
        PT_CHECK_INT(ep->port, 5671);
        PT_CHECK(ep->tls_ca_file == NULL && ep->tls_cert == NULL && ep->tls_key == NULL);
        PT_CHECK_STR(ep->display, "amqps://u@broker.example:5671/");
        pt_config_free(cfg);
    }
    rc = pt_test_load(pt__yaml_tls("amqps://h:5999/v", "      tls:\n"
                                                       "        ca_file: {}/ca.pem\n"
                                                       "        cert: {}/client.pem\n"
                                                       "        key: {}/client.key\n"
                                                       "        verify: false\n"),
                      &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        pt_amqp_endpoint_t copy;
        const pt_amqp_endpoint_t *ep = &cfg->amqp_out[0].ep;
        PT_CHECK_INT(ep->tls_verify, 0);
        PT_CHECK_INT(ep->port, 5999);
        PT_CHECK(ep->tls_ca_file && strstr(ep->tls_ca_file, "/tests/unit/data/amqps/ca.pem"));
        PT_CHECK(ep->tls_cert && strstr(ep->tls_cert, "/client.pem"));
        PT_CHECK(ep->tls_key && strstr(ep->tls_key, "/client.key"));
        PT_CHECK_INT(pt_amqp_endpoint_copy(&copy, ep), 0);
        PT_CHECK(pt_amqp_endpoint_same(&copy, ep));
        copy.tls_verify = 1;
        PT_CHECK(!pt_amqp_endpoint_same(&copy, ep));
        pt_amqp_endpoint_free(&copy);
        pt_config_free(cfg);
    }
    /* a channel with connection: takes the TLS options too */
    rc = pt_test_load("outgoing:\n  amqp:\n    - name: b\n      url: amqps://h/\n"
                      "      tls: {verify: false}\n"
                      "channels:\n  amqp:\n    - name: in\n      connection: b\n"
                      "      queue: q\n      service: s\n",
                      &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        PT_CHECK_INT(cfg->amqp_channels[0].ep.tls, 1);
        PT_CHECK_INT(cfg->amqp_channels[0].ep.tls_verify, 0);
        pt_config_free(cfg);
    }
    PT_CHECK(pt_test_fails_with(pt__yaml_tls("amqp://h/", "      tls: {verify: false}\n"),
                                ":5: outgoing.amqp[0].tls: TLS options need an amqps:// URL"));
    setenv("PT_TEST_AMQP_URL", "amqp://h/", 1);
    PT_CHECK(pt_test_fails_with(
        pt__yaml_tls("amqps://h/", "      url_env: PT_TEST_AMQP_URL\n      tls: {verify: false}\n"),
        ":6: outgoing.amqp[0].tls: TLS options need an amqps:// URL ($PT_TEST_AMQP_URL is "
        "amqp://)"));
    unsetenv("PT_TEST_AMQP_URL");
    PT_CHECK(pt_test_fails_with(pt__yaml_tls("amqps://h/", "      tls: {ca: x}\n"),
                                ":5: outgoing.amqp[0].tls: unknown key 'ca'"));
    PT_CHECK(pt_test_fails_with(pt__yaml_tls("amqps://h/", "      tls: {verify: sure}\n"),
                                ":5: outgoing.amqp[0].tls.verify: expected true or false"));
    PT_CHECK(pt_test_fails_with(pt__yaml_tls("amqps://h/", "      tls:\n"
                                                           "        ca_file: {}/missing.pem\n"),
                                ":6: outgoing.amqp[0].tls.ca_file: cannot read "));
    PT_CHECK(pt_test_fails_with(pt__yaml_tls("amqps://h/", "      tls:\n"
                                                           "        ca_file: {}/client.key\n"),
                                ":6: outgoing.amqp[0].tls.ca_file: no PEM certificate in "));
    PT_CHECK(pt_test_fails_with(pt__yaml_tls("amqps://h/", "      tls:\n"
                                                           "        cert: {}/client.pem\n"),
                                ":6: outgoing.amqp[0].tls: a client certificate takes both cert "
                                "and key"));
    PT_CHECK(pt_test_fails_with(pt__yaml_tls("amqps://h/", "      tls:\n"
                                                           "        cert: {}/client.key\n"
                                                           "        key: {}/client.key\n"),
                                ":6: outgoing.amqp[0].tls.cert: not a PEM certificate chain"));
    PT_CHECK(pt_test_fails_with(pt__yaml_tls("amqps://h/", "      tls:\n"
                                                           "        cert: {}/client.pem\n"
                                                           "        key: {}/client.pem\n"),
                                ":7: outgoing.amqp[0].tls.key: not a PEM private key"));
    PT_CHECK(pt_test_fails_with(pt__yaml_tls("amqps://h/", "      tls:\n"
                                                           "        cert: {}/client.pem\n"
                                                           "        key: {}/client-enc.key\n"),
                                ":7: outgoing.amqp[0].tls.key: not a PEM private key without a "
                                "password"));
    PT_CHECK(pt_test_fails_with(pt__yaml_tls("amqps://h/", "      tls:\n"
                                                           "        cert: {}/client.pem\n"
                                                           "        key: {}/other.key\n"),
                                ":7: outgoing.amqp[0].tls.key: does not match the certificate"));
    PT_CHECK(pt_test_fails_with(
        "outgoing:\n  amqp:\n    - name: b\n      url: amqps://h/\n"
        "channels:\n  amqp:\n    - name: in\n      connection: b\n      tls: {verify: false}\n"
        "      queue: q\n      service: s\n",
        ":8: channels.amqp[0]: give either connection or url/url_env/heartbeat/tls"));
    PT_CHECK(pt_test_fails_with("channels:\n  amqp_bus:\n    - name: bus\n      url_prefix: /bus\n"
                                "      url: amqp://h/\n      tls: {verify: false}\n",
                                ":6: channels.amqp_bus[0].tls: TLS options need an amqps:// URL"));
}

int main(void)
{
    PT_RUN(defaults);
    PT_RUN(everything_set);
    PT_RUN(url_env_wins);
    PT_RUN(mistakes_name_the_line);
    PT_RUN(amqps);
    return PT_TEST_DONE();
}
