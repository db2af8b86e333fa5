#include "pt_dispatch_lua.h"
#include "pt_lua.h"

#include <stdio.h>
#include <stdlib.h>

#define PT__STACK_HEADERS 64
/* The refusal of a service's answer whose headers are not valid HTTP. */
#define PT__BAD_HEADERS                                                                            \
    "the service's response headers are not valid (a control character or a bad name)"

static void pt__on_service_done(void *ud, const pt_lua_result_t *res)
{
    pt_conn_t *c = ud;
    pt_worker_t *w = pt_http_worker(c);
    pt_metrics_add(&w->metrics.in_flight, -1);
    if (!pt_http_unhold(c)) return; /* closed meanwhile */
    if (res->headers_invalid) {     /* never half of what the service meant to send */
        pt_http_send_error(c, 500, PT__BAD_HEADERS, NULL);
        return;
    }
    pt_http_respond(c, res->status, res->content_type, res->content_type_len, res->headers,
                    res->headers_len, res->body, res->body_len, 500, PT__BAD_HEADERS);
}

static void pt__handle(const pt_dispatch_req_t *r)
{
    pt_conn_t *c = r->c;
    pt_worker_t *w = r->w;
    const pt_route_match_t *m = r->m;
    const pt_http_parser_t *req = pt_http_request(c);
    char msg[256];
    if (!pt_lua_has_service(w->lua, m->service)) {
        snprintf(msg, sizeof msg, "unknown service '%s'", m->service);
        pt_http_send_error(c, 404, msg, NULL);
        return;
    }
    if (!m->listed) {
        snprintf(msg, sizeof msg, "service '%s' is not on this channel's allowlist", m->service);
        pt_http_send_error(c, 403, msg, NULL);
        return;
    }
    pt_http_service_known(c);
    pt_lua_header_t hstack[PT__STACK_HEADERS];
    pt_lua_header_t *hs =
        req->n_headers <= PT__STACK_HEADERS ? hstack : malloc(req->n_headers * sizeof *hs);
    const char *hide = r->sec->hide_header;
    size_t n_hs = 0, hide_len = hide ? strlen(hide) : 0;
    for (size_t i = 0; hs && i < req->n_headers; i++) {
        const pt_http_header_t *h = &req->headers[i];
        /* the credential that let the request in stays here */
        if (hide_len && pt_http_parser_header_is(req, h, hide, hide_len)) continue;
        hs[n_hs].name = req->head.data + h->name_off;
        hs[n_hs].name_len = h->name_len;
        hs[n_hs].value = req->head.data + h->value_off;
        hs[n_hs].value_len = h->value_len;
        n_hs++;
    }
    size_t body_len;
    const char *body = pt_http_body(c, &body_len);
    const char *username = pt_http_username(c);
    pt_lua_call_t call = {
        .service = m->service,
        .cid = pt_http_cid(c),
        .method = llhttp_method_name((llhttp_method_t)r->method),
        .path = r->path,
        .path_len = r->path_len,
        .query = r->query,
        .query_len = r->query_len,
        .headers = hs,
        .n_headers = n_hs,
        .body = body_len ? body : NULL,
        .body_len = body_len,
        .channel = m->channel,
        .username = username[0] ? username : NULL,
        .gateway = r->sec->gateway[0] ? r->sec->gateway : NULL,
        .params = m->params,
        .n_params = m->n_params,
        .trace = pt_http_trace(c),
    };
    pt_http_hold(c);
    pt_metrics_add(&w->metrics.in_flight, 1);
    if (pt_lua_dispatch(w->lua, &call, pt__on_service_done, c) != 0) {
        pt_http_unhold(c);
        pt_metrics_add(&w->metrics.in_flight, -1);
        pt_http_send_error(c, 500, "cannot start the service", NULL);
    }
    if (hs != hstack) free(hs);
}

const pt_dispatch_handler_t pt_dispatch_lua = {.stream_body = 0, .handle = pt__handle};
