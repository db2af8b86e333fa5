/* pt_console_assets: the admin console's files (console/ in the source
 * tree: HTML, CSS, JavaScript), built into the binary by a CMake step
 * (scripts/embed-console.cmake), so nothing is looked up at run time and no
 * install step can leave them out of step with the binary. */
#ifndef PT_CONSOLE_ASSETS_H
#define PT_CONSOLE_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *name; /* "index.html" */
    const unsigned char *data;
    size_t len;
} pt_console_asset_t;

/* The file called name[0..len) (no directories), or NULL. */
const pt_console_asset_t *pt_console_asset(const char *name, size_t len);

#endif
