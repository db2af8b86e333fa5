/* The dispatch strategies' config: channels.http_proxy, channels.amqp_bus and
 * outgoing.http, from a fixture like config/wasp.yaml (tests/unit/data/wasp.yaml) and from broken snippets. */
#include "pt_test_config.h"

#include <llhttp.h>
#include <stdlib.h>
#include <unistd.h>

PT_CASE(wasp_config)
{
    pt_config_t *cfg;
    char err[512] = "";
    int rc = pt_config_load("tests/unit/data/wasp.yaml", &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        PT_CHECK_INT(cfg->n_channels, 2);
        const pt_channel_t *px = &cfg->channels[0], *bus = &cfg->channels[1];
        PT_CHECK_INT(px->type, PT_CHANNEL_HTTP_PROXY);
        PT_CHECK_STR(px->url_path, "/svc");
        PT_CHECK_INT(px->n_upstreams, 1);
        PT_CHECK_STR(px->upstreams[0].name, "foo");
        PT_CHECK_INT(px->upstreams[0].n_targets, 2);
        PT_CHECK_STR(px->upstreams[0].targets[0].host, "127.0.0.1");
        PT_CHECK_INT(px->upstreams[0].targets[1].port, 18082);
        PT_CHECK_STR(px->upstreams[0].targets[1].display, "127.0.0.1:18082");
        PT_CHECK_INT(px->upstreams[0].connect_timeout_ms, 2000); /* from the channel */
        PT_CHECK_INT(px->upstreams[0].read_timeout_ms, 30000);
        PT_CHECK(px->methods & (1ull << HTTP_PATCH));
        PT_CHECK(px->security == NULL);
        PT_CHECK_INT(bus->type, PT_CHANNEL_AMQP_BUS);
        PT_CHECK_STR(bus->url_path, "/bus");
        PT_CHECK_INT(bus->bus_reply_timeout_ms, 5000);
        PT_CHECK_INT(bus->bus_ep.port, 5672);
        pt_config_free(cfg);
    }
}

PT_CASE(outgoing_http_and_upstream_timeouts)
{
    pt_config_t *cfg;
    char err[512] = "";
    int rc = pt_test_load("outgoing:\n"
                          "  http:\n"
                          "    - name: crm\n"
                          "      targets: [\"http://[::1]:8080/\", crm.internal]\n"
                          "      timeout: 3s\n"
                          "      keepalive: 4\n"
                          "channels:\n"
                          "  http_proxy:\n"
                          "    - name: p\n"
                          "      url_prefix: /p\n"
                          "      read_timeout: 7s\n"
                          "      services:\n"
                          "        a: {targets: [127.0.0.1:1], read_timeout: 9s}\n"
                          "        b: {targets: [127.0.0.1:2]}\n",
                          &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        PT_CHECK_INT(cfg->n_http_out, 1);
        PT_CHECK_STR(cfg->http_out[0].targets[0].host, "::1");
        PT_CHECK_STR(cfg->http_out[0].targets[0].display, "[::1]:8080");
        PT_CHECK_INT(cfg->http_out[0].targets[1].port, 80);
        PT_CHECK_INT(cfg->http_out[0].read_timeout_ms, 3000);
        PT_CHECK_INT(cfg->http_out[0].keepalive, 4);
        PT_CHECK_INT(cfg->channels[0].upstreams[0].read_timeout_ms, 9000); /* its own */
        PT_CHECK_INT(cfg->channels[0].upstreams[1].read_timeout_ms, 7000); /* the channel's */
        pt_config_free(cfg);
    }
}

PT_CASE(mistakes)
{
    const char *px = "channels:\n  http_proxy:\n    - name: p\n      url_prefix: /p\n";
    char text[1024];
    snprintf(text, sizeof text, "%s      services:\n        a: {targets: [x:1, https://x:1]}\n",
             px);
    PT_CHECK(pt_test_fails_with(text, "http:// and https:// targets cannot be mixed"));
    snprintf(text, sizeof text, "%s      services:\n        a: {targets: [http://x:1/path]}\n", px);
    PT_CHECK(pt_test_fails_with(text, "no path"));
    snprintf(text, sizeof text, "%s      services:\n        a: {targets: [x:99999]}\n", px);
    PT_CHECK(pt_test_fails_with(text, "a port 1-65535"));
    snprintf(text, sizeof text, "%s      services:\n        a: {targets: []}\n", px);
    PT_CHECK(pt_test_fails_with(text, "services.a.targets: expected a list"));
    snprintf(text, sizeof text, "%s      services:\n        \"a/b\": {targets: [x:1]}\n", px);
    PT_CHECK(pt_test_fails_with(text, "is not a service name"));
    snprintf(text, sizeof text, "%s      services:\n        a: {targets: [x:1], nope: 1}\n", px);
    PT_CHECK(pt_test_fails_with(text, "unknown key 'nope'"));
    PT_CHECK(pt_test_fails_with(px, "services: expected a mapping"));
    snprintf(text, sizeof text,
             "%s      connect_timeout: 0\n      services:\n        a: {targets: [x:1]}\n", px);
    PT_CHECK(pt_test_fails_with(text, "connect_timeout: must be more than 0"));
    PT_CHECK(
        pt_test_fails_with("channels:\n  http_proxy:\n    - name: p\n      url_prefix: /p/{x}\n"
                           "      services:\n        a: {targets: [x:1]}\n",
                           "a prefix has no {name} segments"));
    PT_CHECK(pt_test_fails_with("channels:\n  amqp_bus:\n    - name: b\n      url_prefix: /b\n"
                                "      url: http://nope\n",
                                "not an AMQP URL"));
    PT_CHECK(pt_test_fails_with("channels:\n  amqp_bus:\n    - name: b\n      url_prefix: /b\n"
                                "      reply_timeout: 0\n",
                                "reply_timeout: must be more than 0"));
    PT_CHECK(pt_test_fails_with("outgoing:\n  http:\n    - name: a\n      targets: [x:1]\n"
                                "    - name: a\n      targets: [x:2]\n",
                                "name 'a' is used twice"));
    PT_CHECK(pt_test_fails_with("outgoing:\n  http:\n    - name: a\n", "targets: expected a list"));
}

int main(void)
{
    PT_RUN(wasp_config);
    PT_RUN(outgoing_http_and_upstream_timeouts);
    PT_RUN(mistakes);
    return PT_TEST_DONE();
}
