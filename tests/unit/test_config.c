#include "pt_config.h"
#include "pt_test.h"
#include "pt_test_config.h"

#include <llhttp.h>

static int load_fails_with(const char *path, const char *needle)
{
    pt_config_t *cfg = NULL;
    char err[512] = "";
    int rc = pt_config_load(path, &cfg, err, sizeof err);
    pt_config_free(cfg);
    if (rc == 0 || !strstr(err, needle)) {
        fprintf(stderr, "  %s: rc=%d err=\"%s\" (wanted \"%s\")\n", path, rc, err, needle);
        return 0;
    }
    return 1;
}

PT_CASE(default_config)
{
    pt_config_t *cfg;
    char err[512] = "";
    /* a fixture, not config/portico.yaml: that one is the user's to edit */
    int rc = pt_config_load("tests/unit/data/portico.yaml", &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        PT_CHECK_STR(cfg->listen_host, "127.0.0.1");
        PT_CHECK_INT(cfg->listen_port, 11223);
        PT_CHECK_INT(cfg->max_body_bytes, 1024 * 1024);
        PT_CHECK_INT(cfg->max_header_bytes, 16 * 1024);
        PT_CHECK_INT(cfg->header_timeout_ms, 10000);
        PT_CHECK(cfg->n_channels >= 3);
        const pt_channel_t *gw = NULL;
        for (size_t i = 0; i < cfg->n_channels; i++)
            if (strcmp(cfg->channels[i].name, "gateway") == 0) gw = &cfg->channels[i];
        PT_CHECK(gw != NULL);
        if (gw) {
            PT_CHECK_INT(gw->type, PT_CHANNEL_GATEWAY);
            PT_CHECK_INT(gw->n_service_list, 2);
            PT_CHECK(gw->methods & (1ull << HTTP_HEAD));
        }
        PT_CHECK(strstr(cfg->service_dirs[0], "tests/unit/data/../../../services") != NULL);
        PT_CHECK_INT(cfg->lua_gc_pause, 400); /* the default */
        pt_config_free(cfg);
    }
}

PT_CASE(lua_gc_pause)
{
    pt_config_t *cfg;
    char err[512] = "";
    /* lua.gc_pause alone (lua.path keeps its default), and its bounds */
    int rc = pt_test_load("lua:\n  gc_pause: 250\n", &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        PT_CHECK_INT(cfg->lua_gc_pause, 250);
        PT_CHECK(cfg->lua_path && cfg->lua_path[0]);
        pt_config_free(cfg);
    }
    PT_CHECK(pt_test_fails_with("lua:\n  gc_pause: 50\n", "lua.gc_pause"));
    PT_CHECK(pt_test_fails_with("lua:\n  gc_pause: lots\n", "lua.gc_pause"));
}

PT_CASE(lua_lib_dirs)
{
    pt_config_t *cfg;
    char err[512] = "", cwd[512], yaml[2048], want[600];
    PT_CHECK(getcwd(cwd, sizeof cwd) != NULL);
    /* the default: a lib/ beside each service directory, once per parent */
    snprintf(yaml, sizeof yaml,
             "services:\n  dirs: [%s/services/demo, %s/services/api/, %s/spec/services]\n", cwd,
             cwd, cwd);
    int rc = pt_test_load(yaml, &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        PT_CHECK_INT(cfg->n_lib_dirs, 2);
        snprintf(want, sizeof want, "%s/services/lib", cwd);
        PT_CHECK_STR(cfg->lib_dirs[0], want);
        snprintf(want, sizeof want, "%s/spec/lib", cwd);
        PT_CHECK_STR(cfg->lib_dirs[1], want);
        pt_config_free(cfg);
    }
    /* no services section: no lib dir either */
    rc = pt_test_load("log:\n  level: info\n", &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        PT_CHECK_INT(cfg->n_lib_dirs, 0);
        pt_config_free(cfg);
    }
    /* given: absolute as they are, relative to the config file's directory */
    rc = pt_test_load("lua:\n  lib_dirs: [/opt/shared, lib]\n", &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        PT_CHECK_INT(cfg->n_lib_dirs, 2);
        PT_CHECK_STR(cfg->lib_dirs[0], "/opt/shared");
        PT_CHECK_STR(cfg->lib_dirs[1], "/tmp/lib");
        pt_config_free(cfg);
    }
    PT_CHECK(pt_test_fails_with("lua:\n  lib_dirs: lib\n", "lua.lib_dirs: expected a list"));
    PT_CHECK(pt_test_fails_with("lua:\n  lib_dirs: [\"a;b\"]\n", "holds ';' or '?'"));
    PT_CHECK(pt_test_fails_with("lua:\n  lib_dirs: [\"x/?\"]\n", "holds ';' or '?'"));
    PT_CHECK(pt_test_fails_with("lua:\n  lib_dirs: [[a]]\n", "lua.lib_dirs"));
}

PT_CASE(load_errors)
{
    PT_CHECK(load_fails_with("tests/unit/data/bad_key.yaml",
                             "bad_key.yaml:3: server: unknown key 'wokers'"));
    PT_CHECK(load_fails_with("tests/unit/data/bad_yaml.yaml", "bad_yaml.yaml:3: YAML error"));
    PT_CHECK(load_fails_with("tests/unit/data/bad_duration.yaml",
                             "bad_duration.yaml:2: server.header_timeout"));
    PT_CHECK(load_fails_with("tests/unit/data/missing.yaml", "cannot open"));
}

int main(void)
{
    PT_RUN(default_config);
    PT_RUN(lua_gc_pause);
    PT_RUN(lua_lib_dirs);
    PT_RUN(load_errors);
    return PT_TEST_DONE();
}
