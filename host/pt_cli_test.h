/* pt_cli_test: `portico test`, busted for a user's own project. It runs
 * busted under LuaJIT with package.path set as the gateway sets it for
 * services: the portico library (lua.path, so portico.testing and
 * portico.service are found) and the lua.lib_dirs of the config, so a spec
 * and the services it loads require library modules as in the gateway. No
 * --lpath or .busted by hand: the config is the one source of both. */
#ifndef PT_CLI_TEST_H
#define PT_CLI_TEST_H

/* Runs `busted --lua=luajit args...` in the current directory, LUA_PATH
 * set to portico's library and the lib dirs (before what it held)
 * (execvp: returns only when that fails). config: the config file; when it
 * is the default and there is none, the built-in lua.path and ./lib. args:
 * what follows `portico test` ([-c FILE] first, then busted's own). Returns
 * the process exit code on failure (1, or 2 for a usage error). */
int pt_cli_test(const char *config, int is_default, int argc, char **argv);

#endif
