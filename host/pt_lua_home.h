/* pt_lua_home: where portico's own Lua library (portico/runtime.lua) is when
 * the config sets no lua.path. Looked for, in order:
 *   1. beside the binary: <dir of /proc/self/exe>/../share/portico/lua (an
 *      install tree, wherever it was installed or moved to), or, for a binary
 *      still in the build directory it was built in, that checkout's lua/;
 *   2. the install prefix configured at build time: PREFIX/share/portico/lua.
 * An explicit lua.path wins over both (pt_config.c never calls this then).
 * Layer 1 (base): no portico header but its own. */
#ifndef PT_LUA_HOME_H
#define PT_LUA_HOME_H

#include <stddef.h>

/* Sets *out (malloc) to the first place above that holds portico/runtime.lua,
 * as an absolute path without symlinks; returns 0. Otherwise returns -1 with
 * err naming every place it looked and how to fix it. */
int pt_lua_home(char **out, char *err, size_t errlen);

#endif
