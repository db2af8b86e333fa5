#include "pt_cli_test.h"
#include "pt_config.h"
#include "pt_home.h"
#include "pt_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* "D/?.lua;D/?/init.lua" appended to b for d. */
static int pt__add_dir(pt_buf_t *b, const char *d)
{
    return pt_buf_printf(b, "%s%s/?.lua;%s/?/init.lua", b->len ? ";" : "", d, d);
}

int pt_cli_test(const char *config, int is_default, int argc, char **argv)
{
    char err[1024];
    pt_config_t *cfg = NULL;
    int first = 0;
    if (argc >= 2 && (!strcmp(argv[0], "-c") || !strcmp(argv[0], "--config"))) {
        config = argv[1];
        is_default = 0;
        first = 2;
    }
    if (!is_default || access(config, F_OK) == 0) {
        if (pt_config_load(config, &cfg, err, sizeof err) != 0) {
            fprintf(stderr, "portico test: %s\n", err);
            return 1;
        }
    }
    char *home = NULL;
    if (!cfg && pt_home_lua(&home, err, sizeof err) != 0) {
        fprintf(stderr, "portico test: %s\n", err);
        return 1;
    }
    pt_buf_t lpath = {0};
    int rc = pt__add_dir(&lpath, cfg ? cfg->lua_path : home);
    free(home);
    if (cfg)
        for (size_t i = 0; rc == 0 && i < cfg->n_lib_dirs; i++)
            rc = pt__add_dir(&lpath, cfg->lib_dirs[i]);
    else
        rc = rc ? rc : pt__add_dir(&lpath, "lib");
    pt_config_free(cfg);
    char **args = calloc((size_t)(argc - first) + 4, sizeof *args);
    if (rc != 0 || !args) {
        fprintf(stderr, "portico test: out of memory\n");
        return 1;
    }
    /* LUA_PATH, not --lpath: busted hands --lpath to a shell when it runs
     * itself again under --lua, and the shell splits it at each ';'. ";;"
     * is Lua's default path (busted's own modules). */
    const char *prev = getenv("LUA_PATH");
    if (pt_buf_printf(&lpath, ";%s", prev && prev[0] ? prev : ";") != 0 ||
        setenv("LUA_PATH", lpath.data, 1) != 0) {
        fprintf(stderr, "portico test: out of memory\n");
        return 1;
    }
    int n = 0;
    args[n++] = "busted";
    args[n++] = "--lua=luajit";
    for (int i = first; i < argc; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    execvp("busted", args);
    fprintf(stderr, "portico test: cannot run busted (the lua-busted package): %s\n",
            strerror(errno));
    return 1;
}
