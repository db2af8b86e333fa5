#include "pt_dispatch_openapi.h"
#include "pt_openapi.h"

static void pt__openapi(const pt_dispatch_req_t *r)
{
    pt_openapi_doc_t *doc = pt_openapi_current();
    if (!doc) {
        pt_http_send_error(r->c, 503, "the OpenAPI document is not made yet", NULL);
        return;
    }
    pt_http_respond(r->c, 200, "application/json", 16, NULL, 0, doc->text, doc->len, 0, NULL);
    pt_openapi_release(doc);
}

const pt_dispatch_handler_t pt_dispatch_openapi = {.stream_body = 0, .handle = pt__openapi};
