#include "pt_dispatch.h"
#include "pt_bus.h"
#include "pt_dispatch_handler.h"
#include "pt_dispatch_lua.h"
#include "pt_dispatch_openapi.h"
#include "pt_proxy.h"
#include "pt_ratelimit.h"
#include "pt_ratelimit_cluster.h"
#include "pt_transport_tls.h"
#include "pt_ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the handlers of the channel types without Lua ---- */

typedef struct {
    pt_conn_t *c;
    uint64_t started_ns;
    char where[80];
} pt__bus_call_t;

static void pt__bus_done(void *ud, const pt_bus_result_t *res)
{
    pt__bus_call_t *call = ud;
    pt_conn_t *c = call->c;
    pt_worker_t *w = pt_http_worker(c);
    pt_metrics_add(&w->metrics.in_flight, -1);
    pt_trace_ctx_t *tc = pt_http_trace(c);
    if (tc && tc->call) { /* the bus round trip */
        pt_span_int(tc->call, "http.response.status_code", res->status);
        if (res->error) pt_span_error(tc->call, res->error);
        pt_span_end(tc->call);
        tc->call = NULL;
    }
    if (!pt_http_unhold(c)) {
        free(call);
        return;
    }
    pt_http_set_upstream(c, call->where, (uv_hrtime() - call->started_ns) / 1000);
    free(call);
    if (!res->error) pt_http_service_known(c); /* a reply came: the exchange exists */
    if (res->error)
        pt_http_send_error(c, res->status, res->error, NULL);
    else
        pt_http_respond(c, res->status, res->content_type, res->content_type_len, NULL, 0,
                        res->body, res->body_len, 502,
                        "the bus reply's content type is not a valid header");
}

/* An amqp_bus request: published without Lua, answered from the reply. */
static void pt__bus(const pt_dispatch_req_t *r)
{
    pt_conn_t *c = r->c;
    const pt_route_match_t *m = r->m;
    char msg[256];
    if (!m->listed) {
        snprintf(msg, sizeof msg, "service '%s' is not on this channel's service_list", m->service);
        pt_http_send_error(c, 403, msg, NULL);
        return;
    }
    if (m->channel->n_service_list) pt_http_service_known(c);
    size_t ct_len = 0, body_len = 0;
    const char *ct = pt_http_header(c, "content-type", &ct_len);
    const char *body = pt_http_body(c, &body_len);
    pt_bus_request_t req = {
        .channel = m->channel,
        .exchange = m->service,
        .rest = m->rest,
        .rest_len = m->rest_len,
        .method = llhttp_method_name((llhttp_method_t)r->method),
        .query = r->query,
        .query_len = r->query_len,
        .content_type = ct,
        .content_type_len = ct_len,
        .body = body,
        .body_len = body_len,
        .cid = pt_http_cid(c),
    };
    pt__bus_call_t *call = malloc(sizeof *call);
    if (!call) {
        pt_http_send_error(c, 500, "out of memory", NULL);
        return;
    }
    call->c = c;
    call->started_ns = uv_hrtime();
    snprintf(call->where, sizeof call->where, "amqp:%s", m->service);
    pt_trace_ctx_t *tc = pt_http_trace(c), child;
    char tp[PT_TRACEPARENT_LEN + 1];
    if (tc) {
        pt_trace_child(tc, &child);
        pt_trace_format(&child, tp);
        req.traceparent = tp;
        if (child.state_len) req.tracestate = child.state;
        tc->call = pt_span_new(&child, PT_SPAN_CLIENT, "bus", 3);
        pt_span_str(tc->call, "messaging.system", "rabbitmq", 8);
        pt_span_str(tc->call, "messaging.destination.name", m->service, strlen(m->service));
        pt_span_str(tc->call, "portico.cid", req.cid, strlen(req.cid));
    }
    pt_http_hold(c);
    pt_metrics_add(&r->w->metrics.in_flight, 1);
    if (pt_bus_send(r->w, &req, pt__bus_done, call) != 0) {
        free(call);
        if (tc && tc->call) pt_span_end(tc->call);
        if (tc) tc->call = NULL;
        pt_http_unhold(c);
        pt_metrics_add(&r->w->metrics.in_flight, -1);
        pt_http_send_error(c, 500, "cannot queue the message", NULL);
    }
}

static void pt__proxy(const pt_dispatch_req_t *r)
{
    char msg[256];
    if (!r->m->listed) {
        snprintf(msg, sizeof msg, "unknown service '%s'", r->m->service);
        pt_http_send_error(r->c, 404, msg, NULL);
        return;
    }
    pt_http_service_known(r->c); /* one of the channel's upstreams */
    pt_proxy_start(r->c, r->m, r->sec->hide_header);
}

static void pt__websocket(const pt_dispatch_req_t *r)
{
    const char *user = pt_http_username(r->c);
    /* answers the handshake itself: 101, or the refusal RFC 6455 asks for */
    (void)pt_ws_upgrade(r->c, r->m->channel, user[0] ? user : NULL, r->sec->hide_header);
}

static const pt_dispatch_handler_t pt__bus_handler = {.stream_body = 0, .handle = pt__bus};
static const pt_dispatch_handler_t pt__proxy_handler = {.stream_body = 1, .handle = pt__proxy};
static const pt_dispatch_handler_t pt__ws_handler = {.stream_body = 0, .handle = pt__websocket};

/* One handler per channel type. */
static const pt_dispatch_handler_t *const pt__handlers[] = {
    [PT_CHANNEL_REST] = &pt_dispatch_lua,         [PT_CHANNEL_GATEWAY] = &pt_dispatch_lua,
    [PT_CHANNEL_AMQP] = &pt_dispatch_lua,         [PT_CHANNEL_WEBSOCKET] = &pt__ws_handler,
    [PT_CHANNEL_HTTP_PROXY] = &pt__proxy_handler, [PT_CHANNEL_AMQP_BUS] = &pt__bus_handler,
    [PT_CHANNEL_OPENAPI] = &pt_dispatch_openapi,
};

static const pt_dispatch_handler_t *pt__handler(const pt_channel_t *ch)
{
    size_t t = (size_t)ch->type;
    if (t < sizeof pt__handlers / sizeof pt__handlers[0] && pt__handlers[t]) return pt__handlers[t];
    return &pt_dispatch_lua;
}

/* ---- security and rate limits, before any Lua ---- */

static int pt__sec_header(void *ud, const char *name, const char **value, size_t *len)
{
    const pt_http_parser_t *req = pt_http_request(ud);
    int n = 0;
    size_t name_len = strlen(name); /* once, not once a header */
    for (size_t i = 0; i < req->n_headers; i++) {
        const pt_http_header_t *h = &req->headers[i];
        if (!pt_http_parser_header_is(req, h, name, name_len)) continue;
        if (n++ == 0) {
            *value = req->head.data + h->value_off;
            *len = h->value_len;
        }
    }
    return n;
}

static void pt__dispatch(pt_conn_t *c);
static void pt__dispatch_as(pt_conn_t *c, const char *rl_passed);

/* A password check ran on the thread pool; its outcome is in this thread's
 * cache now, so dispatching the request again answers at once. */
static void pt__on_verified(void *ud)
{
    pt_conn_t *c = ud;
    if (pt_http_unhold(c)) pt__dispatch(c);
}

static void pt__rate_limited(pt_conn_t *c, uint32_t retry)
{
    char extra[48];
    snprintf(extra, sizeof extra, "Retry-After: %u\r\n", retry);
    pt_http_send_error(c, 429, "rate limit exceeded", extra);
}

/* A cluster limit with on_redis_error: fail_closed while Redis is out: the
 * JSON error of pt_http_send_error, without its error line per request
 * (the outage is logged once, pt_ratelimit_cluster). */
static void pt__rate_unavailable(pt_conn_t *c)
{
    static const char msg[] = "rate limit unavailable: the cluster's Redis cannot be reached "
                              "(on_redis_error: fail_closed)";
    static const char extra[] = "Retry-After: 1\r\n";
    char body[320];
    int n = snprintf(body, sizeof body,
                     "{\"error\":{\"status\":503,\"message\":\"%s\",\"cid\":\"%s\"}}", msg,
                     pt_http_cid(c));
    if (n < 0 || (size_t)n >= sizeof body) n = 0;
    pt_http_respond(c, 503, "application/json", 16, extra, sizeof extra - 1, body, (size_t)n, 0,
                    NULL);
}

/* A routed, secured request waiting for its cluster rate limit: what its
 * handler needs, copied off the stack of pt__dispatch_as, so the decision
 * goes on to the handler without routing and securing it again (about
 * 1 500 instructions of a request that waited). */
typedef struct pt__parked_s {
    struct pt__parked_s *next_free;
    size_t cap; /* of buf */
    pt_conn_t *c;
    uint64_t generation; /* routed on it; another one by the decision: routed again */
    pt_dispatch_req_t r;
    pt_route_match_t m;
    pt_security_result_t sec;
    char buf[]; /* the decoded path the match points into */
} pt__parked_t;

/* Parked requests are about 1.5 KB, past malloc's per-thread cache: the
 * worker keeps a few for the next ones (paths up to PT__PARK_PATH). */
#define PT__PARK_PATH 256
#define PT__PARK_KEEP 64
static __thread pt__parked_t *pt__park_free;
static __thread int pt__park_n;

static void pt__unpark(pt__parked_t *p)
{
    if (p->cap == PT__PARK_PATH && pt__park_n < PT__PARK_KEEP) {
        p->next_free = pt__park_free;
        pt__park_free = p;
        pt__park_n++;
    } else {
        free(p);
    }
}

void pt_dispatch_end(pt_worker_t *w)
{
    (void)w;
    while (pt__park_free) {
        pt__parked_t *p = pt__park_free;
        pt__park_free = p->next_free;
        free(p);
    }
    pt__park_n = 0;
}

static pt__parked_t *pt__park(pt_worker_t *w, const pt_dispatch_req_t *r, const pt_route_match_t *m,
                              const pt_security_result_t *sec, const char *buf)
{
    size_t len = r->path_len + 1;
    pt__parked_t *p;
    if (len <= PT__PARK_PATH && pt__park_free) {
        p = pt__park_free;
        pt__park_free = p->next_free;
        pt__park_n--;
    } else {
        size_t cap = len <= PT__PARK_PATH ? PT__PARK_PATH : len;
        if (!(p = malloc(sizeof *p + cap))) return NULL;
        p->cap = cap;
    }
    p->c = r->c;
    p->generation = w->snap->generation;
    p->r = *r;
    p->m = *m;
    p->sec = *sec;
    memcpy(p->buf, buf, len);
    for (int i = 0; i < m->n_params; i++)
        p->m.params[i].value = p->buf + (m->params[i].value - buf);
    if (m->service == m->name_buf) p->m.service = p->m.name_buf;
    p->r.m = &p->m;
    p->r.sec = &p->sec;
    return p;
}

/* The request's handler, now that it is routed, secured and let through. */
static void pt__handle(const pt_dispatch_req_t *r)
{
    /* a configured service is known; one named in the path (a prefix
     * channel) is known once its handler found it */
    if (r->m->service != r->m->name_buf) pt_http_service_known(r->c);
    pt__handler(r->m->channel)->handle(r);
}

/* A cluster-scope decision came back (Redis answered, or the policy
 * decided): refused, or on to the handler. */
static void pt__on_cluster_decided(void *arg, const pt_channel_t *ch, int verdict, uint32_t retry)
{
    pt__parked_t *p = arg;
    pt_conn_t *c = p->c;
    if (!pt_http_unhold(c)) {
        pt__unpark(p);
        return;
    }
    if (verdict == PT_RLC_LIMITED) {
        pt__rate_limited(c, retry);
    } else if (verdict == PT_RLC_CLOSED) {
        pt__rate_unavailable(c);
    } else if (p->generation == pt_http_worker(c)->snap->generation) {
        p->r.w = pt_http_worker(c);
        pt__handle(&p->r);
    } else { /* a reload came meanwhile: on the new generation's channel */
        pt__dispatch_as(c, ch->name);
    }
    pt__unpark(p);
}

/* Asks the channel's cluster rate limit for r (routed and secured; buf
 * the decoded path r->m points into), then answers or hands it on: now, or
 * from pt__on_cluster_decided once Redis has decided. */
static void pt__cluster_limit(const pt_dispatch_req_t *r, const char *buf)
{
    pt_conn_t *c = r->c;
    const pt_channel_t *ch = r->m->channel;
    pt__parked_t *p = pt__park(r->w, r, r->m, r->sec, buf);
    if (!p) {
        pt_http_send_error(c, 500, "out of memory", NULL);
        return;
    }
    uint32_t retry = 1;
    pt_http_hold(c);
    int rc = pt_ratelimit_cluster_take(r->w, ch, ch->rate_limit.per_user ? pt_http_username(c) : "",
                                       pt__on_cluster_decided, p, &retry);
    if (rc == PT_RLC_WAIT) return;
    pt_http_unhold(c);
    pt__unpark(p);
    if (rc == PT_RLC_ALLOW)
        pt__handle(r);
    else if (rc == PT_RLC_LIMITED)
        pt__rate_limited(c, retry);
    else
        pt__rate_unavailable(c);
}

/* Runs the channel's security and rate limit. Returns 0 to go on (res
 * filled, the username set on c), 1 when the request is answered or waits
 * for a password check, 2 when a cluster rate limit is to be asked (res
 * filled, the username set).
 * rl_passed: the name of a channel whose cluster limit this request has
 * passed already (it waited for it), or NULL. */
static int pt__secure(pt_conn_t *c, pt_worker_t *w, const pt_channel_t *ch, const char *query,
                      size_t query_len, pt_security_result_t *res, const char *rl_passed)
{
    char token[2048];
    pt_security_request_t req = {.header = pt__sec_header, .ud = c, .tcp = pt_http_tcp(c)};
    pt_transport_tls_t *tls = pt_transport_tls_of(pt_http_transport(c));
    if (tls) {
        req.ssl = tls->ssl;
        req.cert_memo = &tls->cert_memo;
    }
    if (ch->ws_token_param) {
        long n = pt_query_param(query, query_len, ch->ws_token_param, token, sizeof token);
        if (n == -3) { /* which one would be the credential is not ours to guess */
            pt_http_send_error(c, 400, "the token parameter is given more than once", NULL);
            return 1;
        }
        if (n > 0 && !memchr(token, '\0', (size_t)n)) {
            req.token = token;
            req.token_len = (size_t)n;
        }
    }
    pt_trace_ctx_t *tc = pt_http_trace(c);
    uint64_t t0 = tc ? uv_hrtime() : 0;
    int rc = pt_security_check(w->cfg->security, ch->security, &req, res);
    if (tc) tc->security_ns += uv_hrtime() - t0;
    if (rc == PT_SECURITY_VERIFY) {
        pt_http_hold(c);
        rc = pt_security_verify(&w->loop, res->verify, pt__on_verified, c);
        if (rc == 0) return 1;
        pt_http_unhold(c);
        pt_http_send_error(c, 500, "cannot check the password", NULL);
        return 1;
    }
    if (rc == PT_SECURITY_REFUSE) {
        pt_http_send_error(c, res->status, res->message, res->extra[0] ? res->extra : NULL);
        return 1;
    }
    pt_http_set_username(c, res->username);

    const pt_ratelimit_cfg_t *rl = &ch->rate_limit;
    if (rl->rate > 0 && rl->cluster) {
        /* passed while the request waited; a reload meanwhile kept the
         * channel's name, which names its bucket as it does a local one */
        if (rl_passed && !strcmp(rl_passed, ch->name)) return 0;
        return 2; /* the caller asks, with what the handler will need */
    }
    pt_ratelimit_t *limiter = rl->rate > 0 ? pt_ratelimit_global() : NULL;
    if (limiter) {
        /* one bucket per channel name (and user): it outlives a reload */
        const char *user = rl->per_user ? pt_http_username(c) : "";
        size_t nlen = strlen(ch->name), ulen = strlen(user);
        char kbuf[512];
        char *key = nlen + ulen + 1 <= sizeof kbuf ? kbuf : malloc(nlen + ulen + 1);
        uint32_t retry = 1;
        if (!key) {
            pt_http_send_error(c, 500, "out of memory", NULL);
            return 1;
        }
        memcpy(key, ch->name, nlen);
        key[nlen] = '\0';
        memcpy(key + nlen + 1, user, ulen);
        rc = pt_ratelimit_take(limiter, key, nlen + 1 + ulen, rl->rate, rl->burst, uv_hrtime(),
                               &retry);
        if (key != kbuf) free(key);
        if (rc == 1) {
            pt__rate_limited(c, retry);
            return 1;
        }
    }
    return 0;
}

/* ---- routing ---- */

/* The head hook: 1 when the request's channel streams its body (its
 * handler says so) instead of reading it whole first. */
static int pt__streams(pt_conn_t *c)
{
    pt_worker_t *w = pt_http_worker(c);
    const char *path, *query;
    size_t path_len, query_len;
    pt_http_target(c, &path, &path_len, &query, &query_len);
    /* only channels that stream are worth a match this early */
    if (!pt_router_may_proxy(w->router, path, path_len)) return 0;
    char stackbuf[2048];
    char *buf = path_len < sizeof stackbuf ? stackbuf : malloc(path_len + 1);
    pt_route_match_t m;
    if (!buf) return 0;
    int rc = pt_router_match(w->router, pt_http_method(c), path, path_len, "", 0, buf, &m);
    if (buf != stackbuf) free(buf);
    return rc == 0 && pt__handler(m.channel)->stream_body;
}

static void pt__dispatch(pt_conn_t *c)
{
    pt__dispatch_as(c, NULL);
}

static void pt__dispatch_as(pt_conn_t *c, const char *rl_passed)
{
    pt_worker_t *w = pt_http_worker(c);
    pt_dispatch_req_t r = {.c = c, .w = w, .method = pt_http_method(c)};
    pt_http_target(c, &r.path, &r.path_len, &r.query, &r.query_len);
    char stackbuf[2048];
    char *buf = r.path_len < sizeof stackbuf ? stackbuf : malloc(r.path_len + 1);
    pt_route_match_t m;
    pt_security_result_t sec;

    if (!buf) {
        pt_http_send_error(c, 500, "out of memory", NULL);
        return;
    }
    int rc =
        pt_router_match(w->router, r.method, r.path, r.path_len, r.query, r.query_len, buf, &m);
    if (rc == 0) pt_http_set_route(c, m.channel->name, m.service);
    if (rc == 405 && m.channel) pt_http_set_route(c, m.channel->name, NULL);
    if (rc == 400) {
        pt_http_send_error(c, 400, m.error, NULL);
    } else if (rc == 404) {
        pt_http_send_error(c, 404, "no channel at this path", NULL);
    } else if (rc == 405) {
        char allow[160], extra[200];
        snprintf(extra, sizeof extra, "Allow: %s\r\n",
                 pt_route_allow_header(m.allow, allow, sizeof allow));
        pt_http_send_error(c, 405, "method not allowed on this channel", extra);
    } else if (pt__handler(m.channel)->stream_body != pt_http_held(c)) {
        /* a reload changed the channels between the headers and the body */
        pt_http_set_close(c);
        pt_http_send_error(c, 503, "the configuration changed during the request: try again", NULL);
    } else if ((rc = pt__secure(c, w, m.channel, r.query, r.query_len, &sec, rl_passed)) == 1) {
        /* refused, or dispatched again once a password check is done */
    } else {
        r.m = &m;
        r.sec = &sec;
        if (rc == 0)
            pt__handle(&r);
        else
            pt__cluster_limit(&r, buf);
    }
    if (buf != stackbuf) free(buf);
}

static const pt_http_handler_t pt__http = {.head = pt__streams, .request = pt__dispatch};

/* The TLS handshake is done: the first request's head has header_timeout. */
static void pt__handshake_done(pt_transport_tls_t *t)
{
    pt_conn_t *c = t->base.data;
    pt_http_set_timeout(c, pt_http_worker(c)->cfg->header_timeout_ms);
}

void pt_dispatch_accept(pt_worker_t *w, uv_stream_t *listener)
{
    if (listener != (uv_stream_t *)&w->tls_listener) {
        pt_http_accept(w, listener, &pt__http);
        return;
    }
    /* server.tls: TCP, then TLS on the certificates of the generation the
     * worker serves with now (the connection keeps them), then HTTP; the
     * handshake runs within server.tls.handshake_timeout, the first head
     * within header_timeout from the handshake's end */
    pt_transport_t *t =
        pt_transport_tls_accept(&w->loop, listener, w->cfg->tls, w->read_buf, sizeof w->read_buf);
    pt_conn_t *c = t ? pt_http_start(w, t, &pt__http) : NULL;
    if (!c) return;
    pt_http_set_timeout(c, w->cfg->tls_handshake_timeout_ms);
    pt_transport_tls_of(t)->on_handshake = pt__handshake_done;
}
