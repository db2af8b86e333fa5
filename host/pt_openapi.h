/* pt_openapi: the OpenAPI 3.1 document of a config and the services loaded
 * in a VM (docs/openapi.md). The document is made by lua/portico/openapi.lua
 * in that VM, from a table this file builds out of the config: the REST and
 * gateway channels with their paths, methods, services and security (the
 * kind and header of each definition, never a secret). The main thread runs
 * it on its reference VM, which holds exactly the services the workers run
 * (pt_server caches the text until a service or the config changes). */
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

#endif
