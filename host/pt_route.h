/* pt_route: the rules a route is made of, shared by the config, which checks
 * the channels it reads against them, and the router, which matches requests
 * by them: the limits on a url_path, what a service name may be, and a set of
 * methods as the text of an Allow header. It sits below both (pt_config.c
 * and pt_router.c include it; it includes neither), so the config never
 * needs the router. */
#ifndef PT_ROUTE_H
#define PT_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#define PT_ROUTE_MAX_PARAMS 8     /* captures of a template (the config refuses more) */
#define PT_ROUTE_MAX_SEGMENTS 128 /* segments of a url_path (the config refuses more) */
#define PT_SERVICE_NAME_MAX 128

/* Non-zero when name is a well-formed service name: [A-Za-z0-9_][A-Za-z0-9._-]*,
 * at most PT_SERVICE_NAME_MAX bytes. */
int pt_route_valid_service_name(const char *name, size_t len);

/* Writes "GET, POST" style text for a method mask (bit 1 << llhttp method)
 * into out, as much as fits in outlen; returns out. */
char *pt_route_allow_header(uint64_t mask, char *out, size_t outlen);

#endif
