/* pt_openapi: the OpenAPI 3.1 document of a config and the services loaded
 * in a VM (docs/openapi.md). The document is made by lua/portico/openapi.lua
 * in that VM, from a table this file builds out of the config: the REST and
 * gateway channels with their paths, methods, services and security (the
 * kind and header of each definition, never a secret). The main thread runs
 * it on its reference VM, which holds exactly the services the workers run
 * (pt_server caches the text until a service or the config changes), and
 * publishes it for channels.openapi, which workers answer from. */
#ifndef PT_OPENAPI_H
#define PT_OPENAPI_H

#include "pt_config.h"
#include "pt_lua.h"
#include "pt_util.h"

#include <stddef.h>

/* Appends the document (JSON text, the same for the same config and
 * services) to out. Returns 0, or -1 with the reason in err (out may hold
 * part of it then). */
int pt_openapi_generate(pt_lua_t *vm, const pt_config_t *cfg, pt_buf_t *out, char *err,
                        size_t errlen);

/* The document channels.openapi serves on the workers: the main thread
 * publishes each new text, a worker takes a reference for one answer. */
typedef struct pt_openapi_doc_s {
    int refs; /* under the module's lock */
    size_t len;
    char text[];
} pt_openapi_doc_t;

/* Makes text[0..len) the document served from now on (a copy); NULL: none
 * (the channels answer 503). Returns 0, or -1 when out of memory (the
 * previous one stays). Any thread. */
int pt_openapi_publish(const char *text, size_t len);

/* The document now, with a reference the caller drops with
 * pt_openapi_release; NULL when none is published. Any thread. */
pt_openapi_doc_t *pt_openapi_current(void);

void pt_openapi_release(pt_openapi_doc_t *doc);

#endif
