#include "pt_ws.h"
#include "pt_http.h"
#include "pt_log.h"
#include "pt_lua.h"
#include "pt_worker.h"

#include <jansson.h>
#include <lauxlib.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <wslay/wslay.h>

#include <stdlib.h>
#include <string.h>

#define PT__WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

struct pt_ws_s {
    pt_conn_t *c; /* NULL once the connection is gone */
    pt_worker_t *w;
    wslay_event_context_ptr ctx;
    pt_buf_t in;
    size_t in_off;
    uv_timer_t ping_timer;
    int missed;
    uint64_t last_message_ms;
    int in_flight; /* service calls not answered yet */
    int timer_open;
    char channel[PT_SERVICE_NAME_MAX + 1];
    char username[256];
    pt_ws_t *prev, *next; /* the worker's sockets */
};

typedef struct {
    pt_ws_t *ws;
    json_t *request_id; /* NULL: a plain message, the reply is the bare payload */
} pt__ws_call_t;

typedef struct {
    uv_write_t req;
    char data[];
} pt__ws_write_t;

/* ---- the worker's list of sockets ---- */

static pt_ws_t **pt__list(pt_worker_t *w)
{
    return (pt_ws_t **)&w->ws_list;
}

static void pt__link(pt_ws_t *ws)
{
    pt_ws_t **head = pt__list(ws->w);
    ws->next = *head;
    if (*head) (*head)->prev = ws;
    *head = ws;
    pt_metrics_add(&ws->w->metrics.websockets_open, 1);
}

static void pt__unlink(pt_ws_t *ws)
{
    if (ws->prev)
        ws->prev->next = ws->next;
    else
        *pt__list(ws->w) = ws->next;
    if (ws->next) ws->next->prev = ws->prev;
    ws->prev = ws->next = NULL;
    pt_metrics_add(&ws->w->metrics.websockets_open, -1);
}

/* ---- writing and closing ---- */

static void pt__on_written(uv_write_t *req, int status)
{
    free(req);
}

static int pt__write(pt_conn_t *c, const void *data, size_t len)
{
    pt__ws_write_t *wr = malloc(sizeof *wr + len);
    if (!wr) return -1;
    memcpy(wr->data, data, len);
    uv_buf_t buf = uv_buf_init(wr->data, (unsigned)len);
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &buf, 1, pt__on_written) != 0) {
        free(wr);
        return -1;
    }
    return 0;
}

static void pt__on_shutdown(uv_shutdown_t *req, int status)
{
    pt_conn_t *c = req->data;
    free(req);
    pt_http_close(c);
}

/* Flushes what wslay has queued; closes the connection once both sides of
 * the WebSocket are done (close frames exchanged) or wslay failed. */
static void pt__pump(pt_ws_t *ws)
{
    pt_conn_t *c = ws->c;
    if (!c || c->closing) return;
    if (wslay_event_send(ws->ctx) != 0) {
        pt_http_close(c);
        return;
    }
    if (!wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx) && !ws->in_flight) {
        uv_shutdown_t *sd = malloc(sizeof *sd);
        uv_timer_stop(&ws->ping_timer);
        c->state = PT_CONN_LINGER;
        if (!sd || (sd->data = c, uv_shutdown(sd, (uv_stream_t *)&c->tcp, pt__on_shutdown)) != 0) {
            free(sd);
            pt_http_close(c);
        }
    }
}

static void pt__close(pt_ws_t *ws, uint16_t code, const char *reason)
{
    if (!ws->c) return;
    wslay_event_queue_close(ws->ctx, code, (const uint8_t *)reason, strlen(reason));
    pt__pump(ws);
}

static void pt__send_text(pt_ws_t *ws, const char *text, size_t len)
{
    struct wslay_event_msg msg = {WSLAY_TEXT_FRAME, (const uint8_t *)text, len};
    if (ws->c && wslay_event_queue_msg(ws->ctx, &msg) == 0) pt__pump(ws);
}

/* ---- wslay callbacks ---- */

static ssize_t pt__recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                           void *ud)
{
    pt_ws_t *ws = ud;
    size_t have = ws->in.len - ws->in_off;
    if (have == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (len > have) len = have;
    memcpy(buf, ws->in.data + ws->in_off, len);
    ws->in_off += len;
    return (ssize_t)len;
}

static ssize_t pt__send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                           void *ud)
{
    pt_ws_t *ws = ud;
    if (!ws->c || ws->c->closing || pt__write(ws->c, data, len) != 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static void pt__reply(pt_ws_t *ws, json_t *request_id, const pt_lua_result_t *res);

static void pt__on_service_done(void *ud, const pt_lua_result_t *res)
{
    pt__ws_call_t *call = ud;
    pt_ws_t *ws = call->ws;
    ws->in_flight--;
    if (ws->c) pt__reply(ws, call->request_id, res);
    if (call->request_id) json_decref(call->request_id);
    free(call);
    if (!ws->c && ws->in_flight == 0 && !ws->timer_open)
        free(ws);
    else if (ws->c)
        pt__pump(ws);
}

/* Sends root with the request's id added, and releases root. */
static void pt__send_reply(pt_ws_t *ws, json_t *root, json_t *request_id)
{
    json_object_set(root, "request_id", request_id ? request_id : json_null());
    char *text = json_dumps(root, JSON_COMPACT);
    if (text) pt__send_text(ws, text, strlen(text));
    free(text);
    json_decref(root);
}

/* An error as a message: {"error": {...}, "request_id": ...}. */
static void pt__send_error(pt_ws_t *ws, json_t *request_id, int status, const char *message,
                           const char *cid)
{
    json_t *root =
        json_pack("{s:{s:i,s:s,s:s}}", "error", "status", status, "message", message, "cid", cid);
    if (root) pt__send_reply(ws, root, request_id);
}

static void pt__reply(pt_ws_t *ws, json_t *request_id, const pt_lua_result_t *res)
{
    int is_json = res->content_type && strncmp(res->content_type, "application/json", 16) == 0;
    if (!request_id && res->status < 400) {
        pt__send_text(ws, res->body, res->body_len);
        return;
    }
    json_t *body = NULL;
    if (res->body_len == 0)
        body = json_null();
    else if (is_json)
        body = json_loadb(res->body, res->body_len, JSON_DECODE_ANY, NULL);
    if (!body) body = json_stringn(res->body, res->body_len);
    json_t *root;
    if (res->status >= 400 && json_is_object(body) && json_object_get(body, "error")) {
        root = body; /* the runtime's {"error": {...}} */
    } else {
        root = json_object();
        json_object_set_new(root, "status", json_integer(res->status));
        json_object_set_new(root, "data", body);
    }
    pt__send_reply(ws, root, request_id);
}

static int pt__allowed(const pt_channel_t *ch, const char *name)
{
    if (strcmp(ch->service, name) == 0) return 1;
    for (size_t i = 0; i < ch->n_service_list; i++)
        if (strcmp(ch->service_list[i], name) == 0) return 1;
    return 0;
}

static const pt_channel_t *pt__channel(pt_ws_t *ws)
{
    const pt_config_t *cfg = ws->w->cfg;
    for (size_t i = 0; i < cfg->n_channels; i++)
        if (cfg->channels[i].type == PT_CHANNEL_WEBSOCKET &&
            strcmp(cfg->channels[i].name, ws->channel) == 0)
            return &cfg->channels[i];
    return NULL;
}

/* One text message: decode the envelope, check the allowlist in C, run. */
static void pt__on_text(pt_ws_t *ws, const char *text, size_t len)
{
    char cid[25];
    pt_cid_new(cid);
    const pt_channel_t *ch = pt__channel(ws);
    if (!ch) {
        pt__close(ws, WSLAY_CODE_GOING_AWAY, "channel removed");
        return;
    }
    json_error_t jerr;
    json_t *msg = json_loadb(text, len, JSON_DECODE_ANY, &jerr);
    if (!msg) {
        char m[256];
        snprintf(m, sizeof m, "invalid JSON: %s", jerr.text);
        pt__send_error(ws, NULL, 400, m, cid);
        return;
    }
    const char *service = ch->service;
    json_t *request_id = NULL;
    char *body = NULL;
    size_t body_len = len;
    json_t *svc = json_is_object(msg) ? json_object_get(msg, "service") : NULL;
    if (svc) {
        request_id = json_object_get(msg, "request_id");
        if (request_id)
            json_incref(request_id);
        else
            request_id = json_null();
        if (!json_is_string(svc) ||
            !pt_router_valid_service_name(json_string_value(svc), json_string_length(svc))) {
            pt__send_error(ws, request_id, 400, "\"service\" must be a service name", cid);
            goto done;
        }
        service = json_string_value(svc);
        json_t *data = json_object_get(msg, "data");
        body = data && !json_is_null(data) ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY)
                                           : strdup("");
        body_len = body ? strlen(body) : 0;
    }
    char m[256];
    if (!pt_lua_has_service(ws->w->lua, service)) {
        snprintf(m, sizeof m, "unknown service '%s'", service);
        pt__send_error(ws, request_id, 404, m, cid);
        goto done;
    }
    if (!pt__allowed(ch, service)) {
        snprintf(m, sizeof m, "service '%s' is not on this channel's allowlist", service);
        pt__send_error(ws, request_id, 403, m, cid);
        goto done;
    }
    pt__ws_call_t *call = calloc(1, sizeof *call);
    if (!call) goto done;
    call->ws = ws;
    call->request_id = request_id;
    request_id = NULL;
    pt_lua_call_t lc = {
        .service = service,
        .cid = cid,
        .method = "MESSAGE",
        .path = ch->url_path,
        .path_len = strlen(ch->url_path),
        .query = "",
        .body = body ? body : text,
        .body_len = body_len,
        .channel = ch,
        .username = ws->username[0] ? ws->username : NULL,
    };
    ws->in_flight++;
    if (pt_lua_dispatch(ws->w->lua, &lc, pt__on_service_done, call) != 0) {
        ws->in_flight--;
        pt__send_error(ws, call->request_id, 500, "cannot start the service", cid);
        json_decref(call->request_id);
        free(call);
    }
done:
    if (request_id) json_decref(request_id);
    free(body);
    json_decref(msg);
}

static void pt__on_msg_cb(wslay_event_context_ptr ctx,
                          const struct wslay_event_on_msg_recv_arg *arg, void *ud)
{
    pt_ws_t *ws = ud;
    ws->last_message_ms = uv_now(&ws->w->loop);
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
        pt__on_text(ws, (const char *)arg->msg, arg->msg_length);
        break;
    case WSLAY_BINARY_FRAME:
        pt__close(ws, WSLAY_CODE_UNSUPPORTED_DATA, "text messages only");
        break;
    case WSLAY_PONG:
        ws->missed = 0;
        break;
    default:
        break; /* close and ping are answered by wslay */
    }
}

/* ---- keep-alive ---- */

static void pt__on_ping_timer(uv_timer_t *t)
{
    pt_ws_t *ws = t->data;
    const pt_channel_t *ch = pt__channel(ws);
    if (!ws->c) return;
    if (!ch) {
        pt__close(ws, WSLAY_CODE_GOING_AWAY, "channel removed");
        return;
    }
    if (ws->missed >= ch->ws_missed_pings) {
        pt_log_debug("websocket on %s: %d pings unanswered, closing", ws->channel, ws->missed);
        pt_http_close(ws->c); /* a dead peer cannot take a close frame */
        return;
    }
    if (ch->ws_idle_timeout_ms &&
        uv_now(&ws->w->loop) - ws->last_message_ms >= ch->ws_idle_timeout_ms) {
        pt__close(ws, WSLAY_CODE_NORMAL_CLOSURE, "idle");
        return;
    }
    struct wslay_event_msg ping = {WSLAY_PING, (const uint8_t *)"", 0};
    ws->missed++;
    if (wslay_event_queue_msg(ws->ctx, &ping) == 0) pt__pump(ws);
}

/* ---- the upgrade ---- */

static int pt__has_token(const char *v, size_t len, const char *token)
{
    size_t n = strlen(token);
    for (size_t i = 0; v && i + n <= len; i++)
        if (strncasecmp(v + i, token, n) == 0 && (i == 0 || v[i - 1] == ' ' || v[i - 1] == ',') &&
            (i + n == len || v[i + n] == ' ' || v[i + n] == ','))
            return 1;
    return 0;
}

static void pt__on_timer_closed(uv_handle_t *h)
{
    pt_ws_t *ws = h->data;
    ws->timer_open = 0;
    if (!ws->c && ws->in_flight == 0) free(ws);
}

int pt_ws_upgrade(pt_conn_t *c, const pt_channel_t *ch, const char *username)
{
    size_t ulen = 0, clen = 0, vlen = 0, klen = 0;
    const char *up = pt_http_header(c, "upgrade", &ulen);
    const char *conn = pt_http_header(c, "connection", &clen);
    const char *ver = pt_http_header(c, "sec-websocket-version", &vlen);
    const char *key = pt_http_header(c, "sec-websocket-key", &klen);
    if (!up || !pt__has_token(up, ulen, "websocket") || !conn ||
        !pt__has_token(conn, clen, "upgrade"))
        return 426;
    if (!ver || vlen != 2 || memcmp(ver, "13", 2) != 0 || !key || klen != 24) return 400;

    unsigned char digest[SHA_DIGEST_LENGTH];
    char src[24 + sizeof PT__WS_GUID], accept[32];
    memcpy(src, key, 24);
    memcpy(src + 24, PT__WS_GUID, sizeof PT__WS_GUID - 1);
    SHA1((const unsigned char *)src, 24 + sizeof PT__WS_GUID - 1, digest);
    EVP_EncodeBlock((unsigned char *)accept, digest, SHA_DIGEST_LENGTH);

    pt_ws_t *ws = calloc(1, sizeof *ws);
    if (!ws) return 500;
    static const struct wslay_event_callbacks callbacks = {
        .recv_callback = pt__recv_cb,
        .send_callback = pt__send_cb,
        .on_msg_recv_callback = pt__on_msg_cb,
    };
    if (wslay_event_context_server_init(&ws->ctx, &callbacks, ws) != 0) {
        free(ws);
        return 500;
    }
    wslay_event_config_set_max_recv_msg_length(ws->ctx, ch->ws_max_message);
    ws->c = c;
    ws->w = c->w;
    snprintf(ws->channel, sizeof ws->channel, "%s", ch->name);
    snprintf(ws->username, sizeof ws->username, "%s", username ? username : "");
    ws->last_message_ms = uv_now(&c->w->loop);

    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                     "X-Correlation-Id: %s\r\n\r\n",
                     accept, c->cid);
    if (pt__write(c, head, (size_t)n) != 0) {
        wslay_event_context_free(ws->ctx);
        free(ws);
        return 500;
    }
    c->ws = ws;
    c->close_after = 0;
    c->state = PT_CONN_WS;
    uv_timer_stop(&c->timer);
    c->deadline = c->timer_due = 0;
    uv_timer_init(&c->w->loop, &ws->ping_timer);
    ws->ping_timer.data = ws;
    ws->timer_open = 1;
    uv_timer_start(&ws->ping_timer, pt__on_ping_timer, ch->ws_ping_interval_ms,
                   ch->ws_ping_interval_ms);
    pt__link(ws);
    /* Frames the client sent right behind its handshake. */
    if (c->pending.len > c->pending_off) {
        pt_ws_on_read(ws, c->pending.data + c->pending_off, c->pending.len - c->pending_off);
        c->pending.len = c->pending_off = 0;
    }
    return 0;
}

void pt_ws_on_read(pt_ws_t *ws, const char *data, size_t len)
{
    if (ws->in_off == ws->in.len) ws->in.len = ws->in_off = 0;
    if (pt_buf_append(&ws->in, data, len) != 0) {
        pt_http_close(ws->c);
        return;
    }
    if (wslay_event_recv(ws->ctx) != 0) {
        pt_http_close(ws->c);
        return;
    }
    pt__pump(ws);
}

void pt_ws_detach(pt_ws_t *ws)
{
    pt__unlink(ws);
    ws->c = NULL;
    wslay_event_context_free(ws->ctx);
    ws->ctx = NULL;
    pt_buf_free(&ws->in);
    uv_timer_stop(&ws->ping_timer);
    uv_close((uv_handle_t *)&ws->ping_timer, pt__on_timer_closed);
}

size_t pt_ws_push(pt_worker_t *w, const char *channel, const char *username, const char *text,
                  size_t len)
{
    size_t n = 0;
    for (pt_ws_t *ws = *pt__list(w), *next; ws; ws = next) {
        next = ws->next;
        if (strcmp(ws->channel, channel) != 0 || (username && strcmp(ws->username, username)))
            continue;
        pt__send_text(ws, text, len);
        n++;
    }
    return n;
}

void pt_ws_close_all(pt_worker_t *w)
{
    for (pt_ws_t *ws = *pt__list(w), *next; ws; ws = next) {
        next = ws->next;
        pt__close(ws, WSLAY_CODE_GOING_AWAY, "server going away");
    }
}

/* ---- server push: host.ws_push(channel, username_or_nil, text) ---- */

typedef struct {
    char *channel;
    char *username; /* NULL: everyone on the channel */
    size_t len;
    char text[];
} pt__push_t;

static void pt__push_on_worker(pt_worker_t *w, void *arg)
{
    pt__push_t *p = arg;
    if (w->lua) /* NULL when the worker has ended: only free */
        pt_ws_push(w, p->channel, p->username, p->text, p->len);
    free(p->channel);
    free(p->username);
    free(p);
}

/* Sockets live on every worker: the text goes to each of them. Returns the
 * number of workers it was handed to. */
static int pt__lua_push(lua_State *L)
{
    size_t clen, len;
    const char *channel = luaL_checklstring(L, 1, &clen);
    const char *username = lua_isnoneornil(L, 2) ? NULL : luaL_checkstring(L, 2);
    const char *text = luaL_checklstring(L, 3, &len);
    int n = 0, count = 0;
    pt_worker_t *all = pt_worker_all(&n);
    for (int i = 0; i < n; i++) {
        pt__push_t *p = malloc(sizeof *p + len + 1);
        if (!p) break;
        p->channel = strdup(channel);
        p->username = username ? strdup(username) : NULL;
        p->len = len;
        memcpy(p->text, text, len);
        p->text[len] = '\0';
        if (pt_worker_call(&all[i], pt__push_on_worker, p) == 0) {
            count++;
        } else {
            free(p->channel);
            free(p->username);
            free(p);
        }
    }
    lua_pushinteger(L, count);
    return 1;
}

void pt_ws_lua_register(lua_State *L)
{
    lua_pushcfunction(L, pt__lua_push);
    lua_setfield(L, -2, "ws_push");
}
