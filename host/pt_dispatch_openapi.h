/* pt_dispatch_openapi: the handler of channels.openapi: GET (and HEAD)
 * answers the OpenAPI document the main thread published (pt_openapi.h),
 * after the channel's security and rate limit like any channel; 503 while
 * none is published. */
#ifndef PT_DISPATCH_OPENAPI_H
#define PT_DISPATCH_OPENAPI_H

#include "pt_dispatch_handler.h"

extern const pt_dispatch_handler_t pt_dispatch_openapi;

#endif
