#include "pt_admin.h"
#include "pt_http.h"
#include "pt_admin_console.h"
#include "pt_admin_try.h"
#include "pt_log.h"
#include "pt_worker.h"

#include <llhttp.h>
#include <sodium.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define PT__ADMIN_MAX_REQUEST 8192
/* The admin listener runs on the main thread beside reloads and signals, so
 * a peer gets little of it: a few connections, a few seconds, a few bytes
 * (its requests have no body worth the name). */
#define PT__ADMIN_MAX_CONNS 32
#define PT__ADMIN_DEADLINE_MS 5000
#define PT__ADMIN_MAX_BYTES (64 * 1024)

typedef struct pt__admin_conn_s {
    uv_tcp_t tcp;
    pt_admin_t *admin;
    llhttp_t parser;
    pt_buf_t url;
    pt_buf_t field, value; /* the header being read */
    char *hdr[5];          /* the headers the console gate reads (pt__hdr_names) */
    int hdr_twice;         /* one of them came twice: 400 */
    pt_buf_t body;         /* the request body (POST /console/api/try) */
    pt_admin_try_t *try;   /* the explorer's exchange under way, answered when it ends */
    int done;
    uint64_t accepted_ms; /* loop time of the accept: the whole exchange has a deadline */
    size_t bytes;         /* read so far */
    struct pt__admin_conn_s *prev, *next;
} pt__admin_conn_t;

struct pt_admin_s {
    const pt_admin_ops_t *ops;
    void *ud; /* the ops' */
    uv_tcp_t listener;
    uv_timer_t sweep; /* closes connections past their deadline */
    int handles_open;
    pt__admin_conn_t *conns;
    size_t n_conns;
};

typedef struct {
    int method;
    const char *path;
    int (*handle)(pt_admin_t *a, pt_buf_t *body); /* returns the status */
} pt__admin_route_t;

static int pt__healthz(pt_admin_t *a, pt_buf_t *body)
{
    pt_buf_puts(body, "{\"status\":\"ok\"}");
    return 200;
}

static int pt__readyz(pt_admin_t *a, pt_buf_t *body)
{
    int ready = a->ops->ready(a->ud);
    pt_buf_printf(body, "{\"ready\":%s,\"generation\":%llu}", ready ? "true" : "false",
                  (unsigned long long)a->ops->generation(a->ud));
    return ready ? 200 : 503;
}

static int pt__reload(pt_admin_t *a, pt_buf_t *body)
{
    char err[1024];
    if (a->ops->reload(a->ud, err, sizeof err) != 0) {
        pt_buf_puts(body, "{\"accepted\":false,\"error\":\"");
        pt_buf_json_escape(body, err, strlen(err));
        pt_buf_puts(body, "\"}");
        return 422;
    }
    pt_buf_printf(body, "{\"accepted\":true,\"generation\":%llu}",
                  (unsigned long long)a->ops->generation(a->ud));
    return 200;
}

static int pt__metrics(pt_admin_t *a, pt_buf_t *body)
{
    a->ops->metrics(a->ud, body);
    return 200;
}

static int pt__scheduler(pt_admin_t *a, pt_buf_t *body)
{
    if (a->ops->scheduler)
        a->ops->scheduler(a->ud, body);
    else
        pt_buf_puts(body, "{\"jobs\":[]}");
    return 200;
}

static int pt__cluster(pt_admin_t *a, pt_buf_t *body)
{
    if (!a->ops->cluster || a->ops->cluster(a->ud, body) != 0) {
        body->len = 0;
        pt_buf_puts(body, "{\"error\":{\"status\":404,\"message\":\"this node has no "
                          "cluster: section\"}}");
        return 404;
    }
    return 200;
}

static int pt__openapi(pt_admin_t *a, pt_buf_t *body)
{
    char err[1024];
    if (!a->ops->openapi) return 404; /* the generic body follows */
    if (a->ops->openapi(a->ud, body, err, sizeof err) != 0) {
        body->len = 0;
        pt_buf_puts(body, "{\"error\":{\"status\":500,\"message\":\"");
        pt_buf_json_escape(body, err, strlen(err));
        pt_buf_puts(body, "\"}}");
        return 500;
    }
    return 200;
}

static const pt__admin_route_t pt__routes[] = {
    {HTTP_GET, "/metrics", pt__metrics},      {HTTP_GET, "/scheduler", pt__scheduler},
    {HTTP_GET, "/openapi.json", pt__openapi}, {HTTP_GET, "/healthz", pt__healthz},
    {HTTP_GET, "/readyz", pt__readyz},        {HTTP_POST, "/reload", pt__reload},
    {HTTP_GET, "/cluster", pt__cluster},
};

static void pt__on_conn_closed(uv_handle_t *h)
{
    pt__admin_conn_t *c = h->data;
    pt_admin_try_cancel(c->try);
    for (int i = 0; i < 5; i++)
        free(c->hdr[i]);
    pt_buf_free(&c->field);
    pt_buf_free(&c->value);
    pt_buf_free(&c->body);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->admin->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->admin->n_conns--;
    pt_buf_free(&c->url);
    free(c);
}

static void pt__close(pt__admin_conn_t *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, pt__on_conn_closed);
}

static void pt__on_sweep(uv_timer_t *t)
{
    pt_admin_t *a = t->data;
    uint64_t now = uv_now(t->loop);
    for (pt__admin_conn_t *c = a->conns; c; c = c->next)
        if (now - c->accepted_ms >= PT__ADMIN_DEADLINE_MS) pt__close(c);
}

static void pt__on_written(uv_write_t *req, int status)
{
    pt__admin_conn_t *c = req->data;
    free(req);
    pt__close(c);
}

static void pt__respond_with(pt__admin_conn_t *c, int status, const char *ctype,
                             const pt_buf_t *body, const pt_buf_t *extra)
{
    pt_buf_t out = {0};
    pt_buf_printf(&out,
                  "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                  "Connection: close\r\n%.*s\r\n",
                  status, pt_http_reason(status), ctype, body->len, /* RFC 9110 phrases */
                  extra ? (int)extra->len : 0, extra && extra->data ? extra->data : "");
    pt_buf_append(&out, body->data ? body->data : "", body->len);
    uv_write_t *req = malloc(sizeof *req + out.len);
    if (!req) {
        pt_buf_free(&out);
        pt__close(c);
        return;
    }
    memcpy(req + 1, out.data, out.len);
    req->data = c;
    uv_buf_t buf = uv_buf_init((char *)(req + 1), (unsigned)out.len);
    pt_buf_free(&out);
    c->done = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (uv_write(req, (uv_stream_t *)&c->tcp, &buf, 1, pt__on_written) != 0) {
        free(req);
        pt__close(c);
    }
}

static void pt__respond(pt__admin_conn_t *c, int status, const char *ctype, const pt_buf_t *body)
{
    pt__respond_with(c, status, ctype, body, NULL);
}

static const char *const pt__hdr_names[5] = {"authorization", "origin", "host", "sec-fetch-site",
                                             "x-portico-console"};

static int pt__on_header_field(llhttp_t *p, const char *at, size_t len)
{
    pt__admin_conn_t *c = p->data;
    if (c->field.len + len > 256) return -1;
    return pt_buf_append(&c->field, at, len);
}

static int pt__on_header_value(llhttp_t *p, const char *at, size_t len)
{
    pt__admin_conn_t *c = p->data;
    if (c->value.len + len > 4096) return -1;
    return pt_buf_append(&c->value, at, len);
}

static int pt__on_header_value_complete(llhttp_t *p)
{
    pt__admin_conn_t *c = p->data;
    for (int i = 0; i < 5; i++) {
        if (c->field.len != strlen(pt__hdr_names[i]) ||
            strncasecmp(c->field.data, pt__hdr_names[i], c->field.len) != 0)
            continue;
        if (c->hdr[i]) c->hdr_twice = 1;
        free(c->hdr[i]);
        c->hdr[i] = strndup(c->value.data ? c->value.data : "", c->value.len);
        if (!c->hdr[i]) return -1;
    }
    c->field.len = c->value.len = 0;
    return 0;
}

static int pt__on_body(llhttp_t *p, const char *at, size_t len)
{
    pt__admin_conn_t *c = p->data;
    return pt_buf_append(&c->body, at, len); /* bounded by PT__ADMIN_MAX_BYTES */
}

static void pt__on_try(void *ud, int status, const pt_buf_t *body)
{
    pt__admin_conn_t *c = ud;
    pt_buf_t extra = {0};
    c->try = NULL;
    pt_buf_puts(&extra, "Cache-Control: no-store\r\n");
    pt__respond_with(c, status, "application/json", body, &extra);
    pt_buf_free(&extra);
}

/* The console's gate, files and JSON (pt_admin_console.h); 0: not answered. */
static int pt__console(pt__admin_conn_t *c, int method, const char *path, size_t plen,
                       pt_buf_t *body, const char **ctype, pt_buf_t *extra)
{
    pt_admin_t *a = c->admin;
    const pt_config_t *cfg = a->ops->config ? a->ops->config(a->ud) : NULL;
    pt_admin_headers_t h = {c->hdr[0], c->hdr[1], c->hdr[2], c->hdr[3], c->hdr[4]};
    int status = 0;
    if (c->hdr_twice) {
        pt_buf_puts(body, "{\"error\":{\"status\":400,\"message\":\"a header the admin "
                          "listener reads came twice\"}}");
        return 400;
    }
    if (cfg && pt_admin_console_protected(&cfg->admin, path, plen))
        status = pt_admin_console_auth(&cfg->admin, &h, uv_now(a->listener.loop), body, extra);
    if (!status && cfg && method == HTTP_POST)
        status = pt_admin_console_csrf(&cfg->admin, &h, body);
    if (status) return status;
    if (method == HTTP_GET) {
        status = pt_admin_console_file(path, plen, body, ctype, extra);
        if (status) return status;
    }
    if (plen == 16 && memcmp(path, "/console/api/try", 16) == 0) {
        if (method != HTTP_POST || !cfg) return 405;
        int st = pt_admin_try_start(a->listener.loop, cfg, c->body.data, c->body.len, pt__on_try, c,
                                    &c->try, body);
        return st ? st : -1;
    }
    static const char *const api[] = {"/console/api/state", "/console/api/stats"};
    for (int i = 0; i < 2; i++) {
        if (strlen(api[i]) != plen || memcmp(api[i], path, plen) != 0) continue;
        if (method != HTTP_GET) return 405;
        void (*fn)(void *, pt_buf_t *) = i == 0 ? a->ops->console_state : a->ops->console_stats;
        if (!fn) return 404;
        fn(a->ud, body);
        pt_buf_puts(extra, "Cache-Control: no-store\r\n");
        return 200;
    }
    return 0;
}

static int pt__on_url(llhttp_t *p, const char *at, size_t len)
{
    pt__admin_conn_t *c = p->data;
    if (c->url.len + len > PT__ADMIN_MAX_REQUEST) return -1;
    return pt_buf_append(&c->url, at, len);
}

static int pt__on_message_complete(llhttp_t *p)
{
    pt__admin_conn_t *c = p->data;
    pt_buf_t body = {0};
    int status = 404, method = llhttp_get_method(p);
    size_t plen = c->url.len;
    const char *q = c->url.data ? memchr(c->url.data, '?', c->url.len) : NULL;
    if (q) plen = (size_t)(q - c->url.data);
    const char *ctype = "application/json";
    pt_buf_t extra = {0};
    int console =
        pt__console(c, method, c->url.data ? c->url.data : "", plen, &body, &ctype, &extra);
    if (console < 0) { /* answered when the explorer's exchange ends */
        c->done = 1;
        uv_read_stop((uv_stream_t *)&c->tcp);
        pt_buf_free(&body);
        pt_buf_free(&extra);
        return HPE_PAUSED;
    }
    if (console) status = console;
    for (size_t i = 0; !console && i < sizeof pt__routes / sizeof pt__routes[0]; i++) {
        const pt__admin_route_t *r = &pt__routes[i];
        if (strlen(r->path) != plen || memcmp(r->path, c->url.data, plen) != 0) continue;
        if (r->method != method) {
            status = 405;
            continue;
        }
        status = r->handle(c->admin, &body);
        break;
    }
    if ((status == 404 || status == 405) && body.len == 0)
        pt_buf_printf(&body, "{\"error\":{\"status\":%d,\"message\":\"%s\"}}", status,
                      status == 404 ? "not found" : "method not allowed");
    int text = status == 200 && plen == 8 && memcmp(c->url.data, "/metrics", 8) == 0;
    if (text) ctype = "text/plain; version=0.0.4";
    pt__respond_with(c, status, ctype, &body, &extra);
    pt_buf_free(&body);
    pt_buf_free(&extra);
    return HPE_PAUSED;
}

static const llhttp_settings_t pt__settings = {
    .on_url = pt__on_url,
    .on_header_field = pt__on_header_field,
    .on_header_value = pt__on_header_value,
    .on_header_value_complete = pt__on_header_value_complete,
    .on_body = pt__on_body,
    .on_message_complete = pt__on_message_complete,
};

static void pt__on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char slab[4096]; /* the main loop is single-threaded */
    *buf = uv_buf_init(slab, sizeof slab);
}

static void pt__on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    pt__admin_conn_t *c = st->data;
    if (c->done) return;
    if (nread < 0) {
        pt__close(c);
        return;
    }
    c->bytes += (size_t)nread;
    if (c->bytes > PT__ADMIN_MAX_BYTES) {
        pt__close(c);
        return;
    }
    llhttp_errno_t e = llhttp_execute(&c->parser, buf->base, (size_t)nread);
    if (e != HPE_OK && e != HPE_PAUSED && !c->done) {
        pt_buf_t body = {0};
        pt_buf_puts(&body, "{\"error\":{\"status\":400,\"message\":\"malformed request\"}}");
        pt__respond(c, 400, "application/json", &body);
        pt_buf_free(&body);
    }
}

static void pt__on_connection(uv_stream_t *l, int status)
{
    pt_admin_t *a = l->data;
    if (status < 0) return;
    pt__admin_conn_t *c = calloc(1, sizeof *c);
    if (!c) return;
    c->admin = a;
    c->accepted_ms = uv_now(l->loop);
    uv_tcp_init(l->loop, &c->tcp);
    c->tcp.data = c;
    c->next = a->conns;
    if (a->conns) a->conns->prev = c;
    a->conns = c;
    a->n_conns++;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        pt__close(c);
        return;
    }
    if (a->n_conns > PT__ADMIN_MAX_CONNS) {
        /* the oldest unanswered one goes, not the newcomer: idle peers
         * holding every place cannot keep a health check out */
        pt__admin_conn_t *old = NULL;
        for (pt__admin_conn_t *o = c->next; o; o = o->next)
            if (!o->done && !uv_is_closing((uv_handle_t *)&o->tcp)) old = o;
        if (old) pt__close(old);
    }
    llhttp_init(&c->parser, HTTP_REQUEST, &pt__settings);
    c->parser.data = c;
    uv_read_start((uv_stream_t *)&c->tcp, pt__on_alloc, pt__on_read);
}

static void pt__on_listener_closed(uv_handle_t *h)
{
    pt_admin_t *a = h->data;
    if (--a->handles_open == 0) free(a);
}

int pt_admin_start(uv_loop_t *loop, const pt_config_t *cfg, const pt_admin_ops_t *ops, void *ud,
                   pt_admin_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!cfg->admin_host) return 0;
    struct sockaddr_storage addr;
    if (pt_worker_resolve(cfg->admin_host, cfg->admin_port, &addr) != 0) {
        snprintf(err, errlen, "%s: cannot resolve admin.listen %s", cfg->path, cfg->admin_host);
        return -1;
    }
    pt_admin_t *a = calloc(1, sizeof *a);
    if (!a) return -1;
    a->ops = ops;
    a->ud = ud;
    uv_tcp_init(loop, &a->listener);
    a->listener.data = a;
    uv_timer_init(loop, &a->sweep);
    a->sweep.data = a;
    a->handles_open = 2;
    uv_timer_start(&a->sweep, pt__on_sweep, 1000, 1000);
    uv_unref((uv_handle_t *)&a->sweep); /* it keeps no loop running on its own */
    int rc = uv_tcp_bind(&a->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&a->listener, 64, pt__on_connection);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on admin address %s:%d: %s", cfg->admin_host,
                 cfg->admin_port, uv_strerror(rc));
        uv_close((uv_handle_t *)&a->sweep, pt__on_listener_closed);
        uv_close((uv_handle_t *)&a->listener, pt__on_listener_closed);
        return -1;
    }
    *out = a;
    return 0;
}

void pt_admin_stop(pt_admin_t *a)
{
    if (!a) return;
    for (pt__admin_conn_t *c = a->conns; c; c = c->next)
        pt__close(c);
    uv_close((uv_handle_t *)&a->sweep, pt__on_listener_closed);
    uv_close((uv_handle_t *)&a->listener, pt__on_listener_closed);
}

int pt_admin_request(const char *host, int port, const char *method, const char *path, char *out,
                     size_t outlen, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    if (pt_worker_resolve(host, port, &addr) != 0) {
        snprintf(err, errlen, "cannot resolve %s", host);
        return -1;
    }
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 30};
    socklen_t len =
        addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        connect(fd, (struct sockaddr *)&addr, len) != 0) {
        snprintf(err, errlen, "cannot reach the admin listener at %s:%d: %s", host, port,
                 strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    /* admin.users: the credentials come from PORTICO_ADMIN_AUTH ("user:password"),
     * never from argv; the console header passes the CSRF check of a POST */
    char auth[600] = "";
    const char *cred = getenv("PORTICO_ADMIN_AUTH");
    if (cred && *cred && strlen(cred) <= 300) {
        char b64[sodium_base64_ENCODED_LEN(300, sodium_base64_VARIANT_ORIGINAL)];
        sodium_bin2base64(b64, sizeof b64, (const unsigned char *)cred, strlen(cred),
                          sodium_base64_VARIANT_ORIGINAL);
        snprintf(auth, sizeof auth, "Authorization: Basic %s\r\n", b64);
    }
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nX-Portico-Console: 1\r\n"
                     "%s\r\n",
                     method, path, host, auth);
    size_t got = 0;
    char resp[8192];
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        snprintf(err, errlen, "cannot send to the admin listener: %s", strerror(errno));
        return -1;
    }
    ssize_t r;
    while (got < sizeof resp - 1 && (r = read(fd, resp + got, sizeof resp - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    resp[got] = '\0';
    int status = 0;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1) {
        snprintf(err, errlen, "no answer from the admin listener");
        return -1;
    }
    const char *body = strstr(resp, "\r\n\r\n");
    snprintf(out, outlen, "%s", body ? body + 4 : "");
    return status;
}
