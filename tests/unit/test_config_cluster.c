/* The cluster: section (pt_config_cluster): defaults, every key, refusals
 * at their line, and the config checksum: blind to layout, key order,
 * comments, listen addresses and the node name; not to values. */
#include "pt_test_config.h"

#include <unistd.h>

static pt_config_t *load(const char *yaml)
{
    pt_config_t *cfg = NULL;
    char err[512] = "";
    char text[4096];
    char cwd[1024];
    if (!getcwd(cwd, sizeof cwd)) return NULL;
    /* lua.path relative to the temporary file's directory would miss: absolute */
    snprintf(text, sizeof text, "server:\n  listen: 127.0.0.1:18080\nlua:\n  path: %s/lua\n%s", cwd,
             yaml);
    if (pt_test_load(text, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "  refused: %s\n", err);
        return NULL;
    }
    return cfg;
}

static int fails(const char *yaml, const char *needle)
{
    char text[4096], cwd[1024];
    if (!getcwd(cwd, sizeof cwd)) return 0;
    snprintf(text, sizeof text, "server:\n  listen: 127.0.0.1:18080\nlua:\n  path: %s/lua\n%s", cwd,
             yaml);
    return pt_test_fails_with(text, needle);
}

PT_CASE(no_section_no_cluster)
{
    pt_config_t *cfg = load("");
    PT_CHECK(cfg && !cfg->cluster.on);
    pt_config_free(cfg);
}

PT_CASE(defaults)
{
    pt_config_t *cfg = load("cluster:\n");
    PT_CHECK(cfg != NULL);
    if (!cfg) return;
    PT_CHECK(cfg->cluster.on);
    PT_CHECK_STR(cfg->cluster.host, "127.0.0.1");
    PT_CHECK_INT(cfg->cluster.port, 6379);
    PT_CHECK_INT(cfg->cluster.db, 0);
    PT_CHECK_INT(cfg->cluster.timeout_ms, 1000);
    PT_CHECK_INT(cfg->cluster.heartbeat_ms, 2000);
    PT_CHECK_STR(cfg->cluster.key_prefix, "portico:");
    char host[256], want[300];
    gethostname(host, sizeof host);
    snprintf(want, sizeof want, "%s:18080", host);
    PT_CHECK_STR(cfg->cluster.node, want);
    PT_CHECK(cfg->cluster.tls == NULL && cfg->cluster.password == NULL);
    pt_config_free(cfg);
}

PT_CASE(every_key)
{
    setenv("PT_TEST_CLUSTER_PW", "hunter2", 1);
    pt_config_t *cfg = load("cluster:\n"
                            "  node: gw-1\n"
                            "  redis: rediss://app@redis.internal:6380/4\n"
                            "  password_env: PT_TEST_CLUSTER_PW\n"
                            "  tls: {verify: false, server_name: redis.internal}\n"
                            "  timeout: 250ms\n"
                            "  key_prefix: \"shop:\"\n"
                            "  heartbeat: 5s\n");
    PT_CHECK(cfg != NULL);
    if (!cfg) return;
    PT_CHECK_STR(cfg->cluster.node, "gw-1");
    PT_CHECK_STR(cfg->cluster.host, "redis.internal");
    PT_CHECK_STR(cfg->cluster.user, "app");
    PT_CHECK_INT(cfg->cluster.port, 6380);
    PT_CHECK_INT(cfg->cluster.db, 4);
    PT_CHECK_STR(cfg->cluster.password, "hunter2");
    PT_CHECK(cfg->cluster.tls && cfg->cluster.tls->ctx && !cfg->cluster.tls->verify);
    PT_CHECK_INT(cfg->cluster.timeout_ms, 250);
    PT_CHECK_STR(cfg->cluster.key_prefix, "shop:");
    PT_CHECK_INT(cfg->cluster.heartbeat_ms, 5000);
    /* rediss:// without tls: verified against the system store */
    pt_config_t *d = load("cluster:\n  redis: rediss://127.0.0.1/0\n");
    PT_CHECK(d && d->cluster.tls && d->cluster.tls->verify);
    PT_CHECK(pt_config_cluster_same(&cfg->cluster, &cfg->cluster));
    PT_CHECK(d && !pt_config_cluster_same(&cfg->cluster, &d->cluster));
    pt_config_free(d);
    pt_config_free(cfg);
    unsetenv("PT_TEST_CLUSTER_PW");
}

PT_CASE(refusals_at_their_line)
{
    PT_CHECK(fails("cluster:\n  redis: redis://127.0.0.1/0\n  bogus: 1\n",
                   ":7: cluster: unknown key 'bogus'"));
    PT_CHECK(fails("cluster:\n  redis: tcp://127.0.0.1\n", ":6: cluster.redis: expected"));
    PT_CHECK(fails("cluster:\n  redis: redis://:pw@127.0.0.1\n", ":6: cluster.redis: no password"));
    PT_CHECK(fails("cluster:\n  password_env: PT_TEST_UNSET_VAR_X\n",
                   ":6: cluster.password_env: the environment variable PT_TEST_UNSET_VAR_X"));
    PT_CHECK(fails("cluster:\n  timeout: 0\n", ":6: cluster.timeout"));
    PT_CHECK(fails("cluster:\n  heartbeat: 10ms\n", ":6: cluster.heartbeat"));
    PT_CHECK(fails("cluster:\n  key_prefix: \"a b\"\n", ":6: cluster.key_prefix"));
    PT_CHECK(fails("cluster:\n  node: \"\xc3\xa9\"\n", ":6: cluster.node"));
    PT_CHECK(fails("cluster:\n  tls: {verify: false}\n", ":6: cluster.tls: TLS options need"));
    PT_CHECK(fails("cluster:\n  redis: rediss://h/0\n  tls: {nope: 1}\n",
                   "cluster.tls: unknown key 'nope'"));
    PT_CHECK(fails("cluster: [1]\n", ":5: cluster: expected a mapping"));
}

static int same_sum(const char *a, const char *b)
{
    pt_config_t *x = load(a), *y = load(b);
    int same = x && y && !strcmp(x->checksum, y->checksum);
    PT_CHECK(x && strlen(x->checksum) == 64);
    pt_config_free(x);
    pt_config_free(y);
    return same;
}

PT_CASE(checksum)
{
    const char *base = "admin:\n  listen: 127.0.0.1:1\ncluster:\n  node: a\n  heartbeat: 1s\n"
                       "cache:\n  default: {max_entries: 10, max_bytes: 1MB}\n";
    /* listen addresses and the node name do not count */
    PT_CHECK(same_sum(base, "admin:\n  listen: 127.0.0.1:2\ncluster:\n  node: b\n  heartbeat: "
                            "1s\ncache:\n  default: {max_entries: 10, max_bytes: 1MB}\n"));
    /* nor key order, layout or comments */
    PT_CHECK(same_sum(base, "# a comment\ncache:\n  default:\n    max_bytes: 1MB\n    "
                            "max_entries: 10\ncluster: {heartbeat: 1s, node: z}\nadmin: {listen: "
                            "127.0.0.1:9}\n"));
    /* values do */
    PT_CHECK(!same_sum(base, "admin:\n  listen: 127.0.0.1:1\ncluster:\n  node: a\n  heartbeat: "
                             "2s\ncache:\n  default: {max_entries: 10, max_bytes: 1MB}\n"));
    PT_CHECK(!same_sum(base, "admin:\n  listen: 127.0.0.1:1\ncluster:\n  node: a\n  heartbeat: "
                             "1s\ncache:\n  default: {max_entries: 11, max_bytes: 1MB}\n"));
    /* a "listen" elsewhere is a value like any other */
    PT_CHECK(!same_sum("cluster: {node: a}\ncache:\n  default: {max_entries: 10}\n",
                       "cluster: {node: a}\ncache:\n  default: {max_entries: 10}\n"
                       "scheduler: {jobs: []}\n"));
    /* without a cluster: section no digest is made */
    pt_config_t *x = load("cache:\n  default: {max_entries: 10}\n");
    PT_CHECK(x && x->checksum[0] == 0);
    pt_config_free(x);
}

int main(void)
{
    PT_RUN(no_section_no_cluster);
    PT_RUN(defaults);
    PT_RUN(every_key);
    PT_RUN(refusals_at_their_line);
    PT_RUN(checksum);
    return PT_TEST_DONE();
}
