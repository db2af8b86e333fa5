/* pt_gateway: what one worker of this gateway runs, handed to pt_worker as
 * its hooks: the worker's Lua VM with every service, its upstreams (rebuilt
 * for each config generation, the old set retired once idle), HTTP on its
 * listener, and on a drain time-out the end of what services wait on. The
 * service files the main thread checked reach each VM through the worker's
 * message queue, in order with its other messages. */
#ifndef PT_GATEWAY_H
#define PT_GATEWAY_H

#include "pt_lua.h"
#include "pt_worker.h"

#include <stddef.h>

/* The hooks a gateway worker starts with (w->hooks). */
extern const pt_worker_hooks_t pt_gateway_hooks;

/* Loads or reloads the service file path on w's VM with source, the text
 * the main thread checked (copied). Any thread; runs in order with w's
 * other messages, and not at all once w has ended. Returns 0, or -1 when
 * out of memory (logged; w keeps the previous version). */
int pt_gateway_load(pt_worker_t *w, const char *path, const char *source, size_t len);

/* Removes the service of the file path from w's VM, like pt_gateway_load. */
int pt_gateway_unload(pt_worker_t *w, const char *path);

/* A library reload (pt_lua_reload_libs) on w's VM with the texts the main
 * thread checked (copied), like pt_gateway_load. */
int pt_gateway_reload_libs(pt_worker_t *w, const pt_lua_source_t *libs, size_t n_libs,
                           const pt_lua_source_t *svcs, size_t n_svcs);

#endif
