#include "pt_admin_try.h"
#include "pt_worker.h"

#include <jansson.h>
#include <llhttp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PT__MAX_HEADERS 32
#define PT__MAX_READ (PT_ADMIN_TRY_MAX_BODY + 64 * 1024)

struct pt_admin_try_s {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    uv_timer_t timer;
    int open; /* handles not closed yet */
    int finished;
    pt_admin_try_cb cb;
    void *ud;
    pt_buf_t request;
    llhttp_t parser;
    int status;
    int complete;
    int head; /* a HEAD: the answer has no body whatever it says */
    int truncated;
    size_t read;
    pt_buf_t field, value;
    pt_buf_t headers; /* JSON members so far */
    pt_buf_t body;
};

static int pt__refuse(pt_buf_t *out, const char *msg)
{
    pt_buf_puts(out, "{\"error\":{\"status\":400,\"message\":\"");
    pt_buf_json_escape(out, msg, strlen(msg));
    pt_buf_puts(out, "\"}}");
    return 400;
}

static int pt__token(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!strchr("!#$%&'*+-.^_`|~", *s) &&
            !((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
            return 0;
    return 1;
}

static int pt__forbidden(const char *name)
{
    static const char *const names[] = {"host",       "content-length", "transfer-encoding",
                                        "connection", "upgrade",        "te",
                                        "keep-alive", "expect",         NULL};
    for (int i = 0; names[i]; i++)
        if (!strcasecmp(name, names[i])) return 1;
    return strncasecmp(name, "proxy-", 6) == 0;
}

static void pt__on_closed(uv_handle_t *h)
{
    pt_admin_try_t *t = h->data;
    if (--t->open) return;
    pt_buf_free(&t->request);
    pt_buf_free(&t->field);
    pt_buf_free(&t->value);
    pt_buf_free(&t->headers);
    pt_buf_free(&t->body);
    free(t);
}

static void pt__close(pt_admin_try_t *t)
{
    t->finished = 1;
    if (!uv_is_closing((uv_handle_t *)&t->tcp)) uv_close((uv_handle_t *)&t->tcp, pt__on_closed);
    if (!uv_is_closing((uv_handle_t *)&t->timer)) uv_close((uv_handle_t *)&t->timer, pt__on_closed);
}

static void pt__finish(pt_admin_try_t *t, int status, const char *why)
{
    if (t->finished) return;
    pt_buf_t out = {0};
    if (status == 200) {
        pt_buf_printf(&out, "{\"status\":%d,\"headers\":{%.*s},\"body\":\"", t->status,
                      (int)t->headers.len, t->headers.data ? t->headers.data : "");
        pt_buf_json_escape(&out, t->body.data ? t->body.data : "", t->body.len);
        pt_buf_printf(&out, "\",\"truncated\":%s}", t->truncated ? "true" : "false");
    } else {
        pt_buf_printf(&out, "{\"error\":{\"status\":%d,\"message\":\"", status);
        pt_buf_json_escape(&out, why, strlen(why));
        pt_buf_puts(&out, "\"}}");
    }
    pt_admin_try_cb cb = t->cb;
    pt__close(t);
    if (cb) cb(t->ud, status, &out);
    pt_buf_free(&out);
}

void pt_admin_try_cancel(pt_admin_try_t *t)
{
    if (!t) return;
    t->cb = NULL;
    pt__close(t);
}

static int pt__on_status_complete(llhttp_t *p)
{
    pt_admin_try_t *t = p->data;
    t->status = llhttp_get_status_code(p);
    return 0;
}

static int pt__on_field(llhttp_t *p, const char *at, size_t len)
{
    pt_admin_try_t *t = p->data;
    return t->field.len + len > 1024 ? -1 : pt_buf_append(&t->field, at, len);
}

static int pt__on_value(llhttp_t *p, const char *at, size_t len)
{
    pt_admin_try_t *t = p->data;
    return t->value.len + len > 16384 ? -1 : pt_buf_append(&t->value, at, len);
}

static int pt__on_value_complete(llhttp_t *p)
{
    pt_admin_try_t *t = p->data;
    pt_buf_puts(&t->headers, t->headers.len ? ",\"" : "\"");
    for (size_t i = 0; i < t->field.len; i++)
        t->field.data[i] =
            (char)(t->field.data[i] >= 'A' && t->field.data[i] <= 'Z' ? t->field.data[i] + 32
                                                                      : t->field.data[i]);
    pt_buf_json_escape(&t->headers, t->field.data ? t->field.data : "", t->field.len);
    pt_buf_puts(&t->headers, "\":\"");
    pt_buf_json_escape(&t->headers, t->value.data ? t->value.data : "", t->value.len);
    pt_buf_puts(&t->headers, "\"");
    t->field.len = t->value.len = 0;
    return 0;
}

static int pt__on_body(llhttp_t *p, const char *at, size_t len)
{
    pt_admin_try_t *t = p->data;
    size_t room = PT_ADMIN_TRY_MAX_BODY - t->body.len;
    if (len > room) {
        t->truncated = 1;
        len = room;
    }
    return pt_buf_append(&t->body, at, len);
}

static int pt__on_headers_complete(llhttp_t *p)
{
    pt_admin_try_t *t = p->data;
    return t->head ? 1 : 0;
}

static int pt__on_complete(llhttp_t *p)
{
    pt_admin_try_t *t = p->data;
    t->complete = 1;
    return HPE_PAUSED;
}

static const llhttp_settings_t pt__settings = {
    .on_status_complete = pt__on_status_complete,
    .on_header_field = pt__on_field,
    .on_header_value = pt__on_value,
    .on_header_value_complete = pt__on_value_complete,
    .on_headers_complete = pt__on_headers_complete,
    .on_body = pt__on_body,
    .on_message_complete = pt__on_complete,
};

static void pt__on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char slab[16384]; /* the main loop is single-threaded */
    *buf = uv_buf_init(slab, sizeof slab);
}

static void pt__on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    pt_admin_try_t *t = st->data;
    if (t->finished) return;
    if (nread == UV_EOF) {
        if (llhttp_finish(&t->parser) == HPE_OK && t->status) t->complete = 1;
        if (t->complete)
            pt__finish(t, 200, NULL);
        else
            pt__finish(t, 502, "the public listener closed before a whole answer");
        return;
    }
    if (nread < 0) {
        pt__finish(t, 502, uv_strerror((int)nread));
        return;
    }
    t->read += (size_t)nread;
    llhttp_errno_t e = llhttp_execute(&t->parser, buf->base, (size_t)nread);
    if (t->complete || (t->truncated && t->read > PT__MAX_READ)) {
        if (!t->complete) t->complete = 1;
        pt__finish(t, 200, NULL);
    } else if (e != HPE_OK) {
        pt__finish(t, 502, "the public listener's answer did not parse");
    }
}

static void pt__on_written(uv_write_t *w, int status)
{
    pt_admin_try_t *t = w->data;
    if (status < 0 && !t->finished) pt__finish(t, 502, uv_strerror(status));
}

static void pt__on_connect(uv_connect_t *c, int status)
{
    pt_admin_try_t *t = c->data;
    if (t->finished) return;
    if (status < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "cannot connect to the public listener: %s", uv_strerror(status));
        pt__finish(t, 502, msg);
        return;
    }
    uv_buf_t b = uv_buf_init(t->request.data, (unsigned)t->request.len);
    t->write.data = t;
    if (uv_write(&t->write, (uv_stream_t *)&t->tcp, &b, 1, pt__on_written) != 0 ||
        uv_read_start((uv_stream_t *)&t->tcp, pt__on_alloc, pt__on_read) != 0)
        pt__finish(t, 502, "cannot send to the public listener");
}

static void pt__on_timeout(uv_timer_t *tm)
{
    pt__finish(tm->data, 504, "no whole answer from the public listener in time");
}

int pt_admin_try_start(uv_loop_t *loop, const pt_config_t *cfg, const char *json, size_t len,
                       pt_admin_try_cb cb, void *ud, pt_admin_try_t **out, pt_buf_t *err_body)
{
    static const char *const methods[] = {"GET",   "HEAD",   "POST",    "PUT",
                                          "PATCH", "DELETE", "OPTIONS", NULL};
    json_error_t je;
    json_t *root = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES, &je);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return pt__refuse(err_body, "expected a JSON object {method, path, headers, body}");
    }
    const char *method = json_string_value(json_object_get(root, "method"));
    const char *path = json_string_value(json_object_get(root, "path"));
    json_t *headers = json_object_get(root, "headers"), *body = json_object_get(root, "body");
    const char *why = NULL;
    int known = 0;
    for (int i = 0; method && methods[i]; i++)
        known |= !strcmp(method, methods[i]);
    if (!known)
        why = "method: expected one of GET HEAD POST PUT PATCH DELETE OPTIONS";
    else if (!path || path[0] != '/' || strlen(path) > 2048)
        why = "path: expected a path starting with '/', at most 2048 bytes";
    else if (body && !json_is_null(body) && !json_is_string(body))
        why = "body: expected a string";
    else if (headers && !json_is_null(headers) &&
             (!json_is_object(headers) || json_object_size(headers) > PT__MAX_HEADERS))
        why = "headers: expected an object of at most 32 names and string values";
    for (const char *p = path; !why && p && *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            why = "path: only visible ASCII (percent-encode the rest)";
    const char *cfg_host = cfg->listen_host;
    const char *host = !strcmp(cfg_host, "0.0.0.0")                             ? "127.0.0.1"
                       : (!strcmp(cfg_host, "::") || !strcmp(cfg_host, "[::]")) ? "::1"
                                                                                : cfg_host;
    pt_buf_t req = {0};
    const char *btext = json_is_string(body) ? json_string_value(body) : "";
    size_t blen = json_is_string(body) ? json_string_length(body) : 0;
    if (!why) {
        pt_buf_printf(&req, "%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n", method, path,
                      strchr(host, ':') ? "localhost" : host, cfg->listen_port);
        if (blen || (strcmp(method, "GET") && strcmp(method, "HEAD")))
            pt_buf_printf(&req, "Content-Length: %zu\r\n", blen);
        const char *name;
        json_t *v;
        json_object_foreach(headers, name, v)
        {
            const char *val = json_string_value(v);
            if (!pt__token(name) || strlen(name) > 256 || pt__forbidden(name)) {
                why = "headers: a name that is no token or that the explorer sets itself (Host, "
                      "Content-Length, Transfer-Encoding, Connection, Upgrade, TE, Keep-Alive, "
                      "Expect, Proxy-*)";
                break;
            }
            if (!val || strlen(val) > 8192 || json_string_length(v) != strlen(val)) {
                why = "headers: values must be strings of at most 8192 bytes";
                break;
            }
            for (const char *p = val; *p && !why; p++)
                if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
                    why = "headers: a value with a control byte";
            if (why) break;
            pt_buf_printf(&req, "%s: %s\r\n", name, val);
        }
        pt_buf_puts(&req, "\r\n");
        pt_buf_append(&req, btext, blen);
    }
    struct sockaddr_storage addr;
    if (!why && pt_worker_resolve(host, cfg->listen_port, &addr) != 0)
        why = "cannot resolve server.listen";
    int is_head = method && !strcmp(method, "HEAD");
    json_decref(root); /* method, path and the rest point into it */
    if (why) {
        pt_buf_free(&req);
        return pt__refuse(err_body, why);
    }
    pt_admin_try_t *t = calloc(1, sizeof *t);
    if (!t) {
        pt_buf_free(&req);
        return pt__refuse(err_body, "out of memory");
    }
    t->request = req;
    t->head = is_head;
    t->cb = cb;
    t->ud = ud;
    llhttp_init(&t->parser, HTTP_RESPONSE, &pt__settings);
    t->parser.data = t;
    uv_tcp_init(loop, &t->tcp);
    uv_timer_init(loop, &t->timer);
    t->tcp.data = t->timer.data = t->connect.data = t;
    t->open = 2;
    uv_timer_start(&t->timer, pt__on_timeout, PT_ADMIN_TRY_TIMEOUT_MS, 0);
    if (uv_tcp_connect(&t->connect, &t->tcp, (const struct sockaddr *)&addr, pt__on_connect) != 0) {
        t->cb = NULL;
        pt__close(t);
        return pt__refuse(err_body, "cannot connect to the public listener");
    }
    *out = t;
    return 0;
}
