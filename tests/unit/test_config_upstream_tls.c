/* https:// targets and their tls options in the config (pt_config.c,
 * pt_config_upstream_tls.c), with the test PEM files of
 * tests/unit/data/amqps. */
#include "pt_test_config.h"

#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* An http_proxy channel p with service a (targets, then the lines given),
 * every {} in lines replaced by the absolute data directory. */
static char *pt__proxy(const char *channel_lines, const char *targets, const char *lines)
{
    static char buf[4096];
    char cwd[1024], body[2048] = "", *o = body;
    if (!getcwd(cwd, sizeof cwd)) cwd[0] = 0;
    for (const char *p = lines; *p && o < body + sizeof body - 200; p++) {
        if (p[0] == '{' && p[1] == '}') {
            o += snprintf(o, 200, "%s/tests/unit/data/amqps", cwd);
            p++;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
    snprintf(buf, sizeof buf,
             "channels:\n  http_proxy:\n    - name: p\n      url_prefix: /p\n%s"
             "      services:\n        a:\n          targets: [%s]\n%s",
             channel_lines, targets, body);
    return buf;
}

PT_CASE(https_targets_and_defaults)
{
    pt_config_t *cfg;
    char err[512] = "";
    int rc = pt_test_load(pt__proxy("", "https://api.example, \"https://[::1]:8443\"", ""), &cfg,
                          err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        const pt_upstream_cfg_t *u = &cfg->channels[0].upstreams[0];
        PT_CHECK_INT(u->targets[0].port, 443);
        PT_CHECK_STR(u->targets[0].display, "api.example:443");
        PT_CHECK_STR(u->targets[1].display, "[::1]:8443");
        PT_CHECK(u->tls != NULL);
        if (u->tls) {
            PT_CHECK_INT(u->tls->verify, 1);
            PT_CHECK(u->tls->ctx != NULL);
            PT_CHECK(u->tls->ca_file == NULL && u->tls->server_name == NULL);
            PT_CHECK(u->tls->cert == NULL && u->tls->key == NULL);
            PT_CHECK(SSL_CTX_get_verify_mode(u->tls->ctx) & SSL_VERIFY_PEER);
        }
        pt_config_free(cfg);
    }
    /* http:// keeps no TLS */
    rc = pt_test_load(pt__proxy("", "http://x:1, x:2", ""), &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        PT_CHECK(cfg->channels[0].upstreams[0].tls == NULL);
        pt_config_free(cfg);
    }
}

PT_CASE(every_option)
{
    pt_config_t *cfg;
    char err[512] = "";
    int rc = pt_test_load(pt__proxy("", "https://10.0.0.1:8443",
                                    "          tls:\n"
                                    "            ca_file: {}/ca.pem\n"
                                    "            server_name: api.internal\n"
                                    "            cert: {}/client.pem\n"
                                    "            key: {}/client.key\n"),
                          &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        const pt_upstream_tls_t *t = cfg->channels[0].upstreams[0].tls;
        PT_CHECK(t && t->ca_file && strstr(t->ca_file, "/tests/unit/data/amqps/ca.pem"));
        PT_CHECK(t && t->server_name && strcmp(t->server_name, "api.internal") == 0);
        PT_CHECK(t && t->cert && strstr(t->cert, "/client.pem"));
        PT_CHECK(t && t->key && strstr(t->key, "/client.key"));
        PT_CHECK(t && SSL_CTX_get0_certificate(t->ctx) != NULL);
        pt_config_free(cfg);
    }
    /* the channel's tls is the default of its https services; a service's
     * own replaces it whole; verify: false is allowed (with a warning) */
    rc = pt_test_load("channels:\n  http_proxy:\n    - name: p\n      url_prefix: /p\n"
                      "      tls: {verify: false}\n"
                      "      services:\n"
                      "        a: {targets: [https://x]}\n"
                      "        b: {targets: [https://x], tls: {server_name: y}}\n"
                      "        c: {targets: [http://x]}\n"
                      "outgoing:\n  http:\n    - name: o\n      targets: [https://x]\n"
                      "      tls: {verify: false, server_name: z}\n",
                      &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        const pt_upstream_cfg_t *u = cfg->channels[0].upstreams;
        PT_CHECK(u[0].tls && u[0].tls->verify == 0);
        PT_CHECK(u[1].tls && u[1].tls->verify == 1 && strcmp(u[1].tls->server_name, "y") == 0);
        PT_CHECK(u[2].tls == NULL);
        PT_CHECK(cfg->http_out[0].tls && cfg->http_out[0].tls->verify == 0);
        PT_CHECK(!(SSL_CTX_get_verify_mode(cfg->http_out[0].tls->ctx) & SSL_VERIFY_PEER));
        pt_config_free(cfg);
    }
}

PT_CASE(mistakes_name_the_line)
{
    const char *a = "channels.http_proxy[0].services.a";
    char want[256];
    PT_CHECK(pt_test_fails_with(pt__proxy("", "https://x, http://y", ""),
                                ":7: channels.http_proxy[0].services.a.targets[1]: http:// and "
                                "https:// targets cannot be mixed in one upstream"));
    PT_CHECK(pt_test_fails_with(pt__proxy("", "http://x", "          tls: {verify: false}\n"),
                                ":8: channels.http_proxy[0].services.a.tls: TLS options need "
                                "https:// targets"));
    PT_CHECK(pt_test_fails_with(pt__proxy("      tls: {verify: false}\n", "http://x", ""),
                                ":5: channels.http_proxy[0].tls: TLS options need https:// "
                                "targets"));
    PT_CHECK(pt_test_fails_with(pt__proxy("", "https://x", "          tls: {ca: x}\n"),
                                ":8: channels.http_proxy[0].services.a.tls: unknown key 'ca'"));
    PT_CHECK(pt_test_fails_with(pt__proxy("", "https://x", "          tls: [1]\n"),
                                ":8: channels.http_proxy[0].services.a.tls: expected a mapping"));
    PT_CHECK(pt_test_fails_with(pt__proxy("", "https://x", "          tls: {verify: sure}\n"),
                                ":8: channels.http_proxy[0].services.a.tls.verify: expected true "
                                "or false"));
    snprintf(want, sizeof want, ":9: %s.tls.ca_file: cannot read ", a);
    PT_CHECK(pt_test_fails_with(
        pt__proxy("", "https://x", "          tls:\n            ca_file: {}/missing.pem\n"), want));
    snprintf(want, sizeof want, ":9: %s.tls: ca_file ", a);
    PT_CHECK(pt_test_fails_with(
        pt__proxy("", "https://x", "          tls:\n            ca_file: {}/client.key\n"), want));
    PT_CHECK(pt_test_fails_with(
        pt__proxy("", "https://x", "          tls:\n            ca_file: {}/client.key\n"),
        "not a PEM file of certificates"));
    snprintf(want, sizeof want, ":10: %s.tls.ca_file: has no use with verify: false", a);
    PT_CHECK(pt_test_fails_with(pt__proxy("", "https://x",
                                          "          tls:\n            verify: false\n"
                                          "            ca_file: {}/ca.pem\n"),
                                want));
    snprintf(want, sizeof want, ":9: %s.tls.server_name: expected a host name or IP address", a);
    PT_CHECK(pt_test_fails_with(
        pt__proxy("", "https://x", "          tls:\n            server_name: \"a b\"\n"), want));
    snprintf(want, sizeof want, ":9: %s.tls: a client certificate takes both cert and key", a);
    PT_CHECK(pt_test_fails_with(
        pt__proxy("", "https://x", "          tls:\n            cert: {}/client.pem\n"), want));
    snprintf(want, sizeof want, ":9: %s.tls: cert ", a);
    PT_CHECK(pt_test_fails_with(pt__proxy("", "https://x",
                                          "          tls:\n            cert: {}/client.key\n"
                                          "            key: {}/client.key\n"),
                                want));
    PT_CHECK(pt_test_fails_with(pt__proxy("", "https://x",
                                          "          tls:\n            cert: {}/client.key\n"
                                          "            key: {}/client.key\n"),
                                "not a PEM certificate chain"));
    snprintf(want, sizeof want, ":10: %s.tls: key ", a);
    PT_CHECK(pt_test_fails_with(pt__proxy("", "https://x",
                                          "          tls:\n            cert: {}/client.pem\n"
                                          "            key: {}/client.pem\n"),
                                want));
    PT_CHECK(pt_test_fails_with(pt__proxy("", "https://x",
                                          "          tls:\n            cert: {}/client.pem\n"
                                          "            key: {}/client-enc.key\n"),
                                "not a PEM private key without a password"));
    PT_CHECK(pt_test_fails_with(pt__proxy("", "https://x",
                                          "          tls:\n            cert: {}/client.pem\n"
                                          "            key: {}/other.key\n"),
                                "does not match the certificate"));
    snprintf(want, sizeof want, ":10: %s.tls.key: cannot read ", a);
    PT_CHECK(pt_test_fails_with(pt__proxy("", "https://x",
                                          "          tls:\n            cert: {}/client.pem\n"
                                          "            key: {}/nope.key\n"),
                                want));
    PT_CHECK(pt_test_fails_with("outgoing:\n  http:\n    - name: o\n      targets: [http://x]\n"
                                "      tls: {verify: false}\n",
                                ":5: outgoing.http[0].tls: TLS options need https:// targets"));
    PT_CHECK(pt_test_fails_with("outgoing:\n  http:\n    - name: o\n      targets: [https://x]\n"
                                "      tls: {verify: 1}\n",
                                ":5: outgoing.http[0].tls.verify: expected true or false"));
}

int main(void)
{
    PT_RUN(https_targets_and_defaults);
    PT_RUN(every_option);
    PT_RUN(mistakes_name_the_line);
    return PT_TEST_DONE();
}
