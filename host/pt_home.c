#include "pt_home.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef PT_LUA_SOURCE_DIR /* the checkout's lua/ (CMake) */
#define PT_LUA_SOURCE_DIR ""
#endif
#ifndef PT_BUILD_DIR /* the directory the binary was built in (CMake) */
#define PT_BUILD_DIR ""
#endif
#ifndef PT_INSTALL_CONFIG /* SYSCONFDIR/portico/portico.yaml (CMake) */
#define PT_INSTALL_CONFIG "/usr/local/etc/portico/portico.yaml"
#endif
#ifndef PT_INSTALL_LUA_DIR /* CMAKE_INSTALL_PREFIX/share/portico/lua (CMake) */
#define PT_INSTALL_LUA_DIR "/usr/local/share/portico/lua"
#endif

/* dir holds the library: its real path into *out (malloc), 0; else -1 */
static int pt__has_runtime(const char *dir, char **out)
{
    char real[PATH_MAX], file[PATH_MAX + 32];
    if (!dir[0] || !realpath(dir, real)) return -1;
    snprintf(file, sizeof file, "%s/portico/runtime.lua", real);
    if (access(file, R_OK) != 0) return -1;
    return (*out = strdup(real)) ? 0 : -1;
}

/* the directory of the running binary into dir; 0, or -1 */
static int pt__exe_dir(char *dir, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", dir, size - 1);
    if (n <= 0) return -1;
    dir[n] = 0;
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    return 0;
}

const char *pt_home_config(char *err, size_t errlen)
{
    static char path[PATH_MAX + 32];
    if (access("config/portico.yaml", F_OK) == 0) return "config/portico.yaml";
    char exe[PATH_MAX];
    path[0] = 0;
    if (pt__exe_dir(exe, sizeof exe) == 0) {
        snprintf(path, sizeof path, "%s/../etc/portico/portico.yaml", exe);
        if (access(path, F_OK) == 0) return path;
    }
    if (access(PT_INSTALL_CONFIG, F_OK) == 0) return PT_INSTALL_CONFIG;
    snprintf(err, errlen,
             "no config: none of config/portico.yaml (in this directory), %s (beside the "
             "binary), %s (the install's) exists; name one with -c FILE",
             path[0] ? path : "(/proc/self/exe unreadable)", PT_INSTALL_CONFIG);
    return NULL;
}

int pt_home_lua(char **out, char *err, size_t errlen)
{
    char exe[PATH_MAX], beside[PATH_MAX + 32], build[PATH_MAX];
    const char *in_build = NULL;
    beside[0] = 0;
    if (pt__exe_dir(exe, sizeof exe) == 0) {
        snprintf(beside, sizeof beside, "%s/../share/portico/lua", exe);
        if (pt__has_runtime(beside, out) == 0) return 0;
        /* a binary in its own build directory runs its checkout's library */
        if (PT_BUILD_DIR[0] && realpath(PT_BUILD_DIR, build) && !strcmp(build, exe)) {
            in_build = PT_LUA_SOURCE_DIR;
            if (pt__has_runtime(in_build, out) == 0) return 0;
        }
    }
    if (pt__has_runtime(PT_INSTALL_LUA_DIR, out) == 0) return 0;
    snprintf(err, errlen,
             "portico's Lua library (portico/runtime.lua) is not in %s%s%s (beside the "
             "binary), nor in %s (the install prefix), and the config sets no lua.path: "
             "install portico with cmake --install, or set lua.path to the directory "
             "that holds portico/runtime.lua",
             beside[0] ? beside : "(/proc/self/exe unreadable)", in_build ? " or " : "",
             in_build ? in_build : "", PT_INSTALL_LUA_DIR);
    return -1;
}
