/* pt_home: where an installed portico finds its own files, so that a binary
 * copied with its install tree (cmake --install, the Debian package) runs
 * from any directory. Layer 1 (base): no portico header but its own.
 *
 * The Lua library (portico/runtime.lua), when the config sets no lua.path
 * (an explicit lua.path wins; pt_config.c never asks then):
 *   1. beside the binary: <dir of /proc/self/exe>/../share/portico/lua (an
 *      install tree, wherever it was installed or moved to), or, for a binary
 *      still in the build directory it was built in, that checkout's lua/;
 *   2. the install prefix configured at build time: PREFIX/share/portico/lua.
 *
 * The config, when the command line names none:
 *   1. config/portico.yaml in the working directory (a checkout);
 *   2. beside the binary: <dir of the binary>/../etc/portico/portico.yaml;
 *   3. the install's: SYSCONFDIR/portico/portico.yaml (/etc/portico/ for
 *      the prefix /usr). */
#ifndef PT_HOME_H
#define PT_HOME_H

#include <stddef.h>

/* Sets *out (malloc) to the first place above that holds portico/runtime.lua,
 * as an absolute path without symlinks; returns 0. Otherwise returns -1 with
 * err naming every place it looked and how to fix it. */
int pt_home_lua(char **out, char *err, size_t errlen);

/* The default config: the first of the places above that exists (a static
 * buffer), or NULL with err naming the places looked at. */
const char *pt_home_config(char *err, size_t errlen);

#endif
