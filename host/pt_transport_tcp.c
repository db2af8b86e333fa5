#include "pt_transport.h"

#include <stddef.h>
#include <stdlib.h>

/* The handle's data is the transport: libuv callbacks find it there. */
#define PT__T(h) ((pt_transport_tcp_t *)(h)->data)

static void pt__on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    pt_transport_t *t = &PT__T(h)->base;
    (void)suggested;
    /* every connection of a worker reads into the worker's one buffer: the
     * bytes are parsed (or copied) before the next read can land */
    *buf = uv_buf_init(t->read_buf, (unsigned)t->read_size);
}

static void pt__on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    pt_transport_t *t = &PT__T(s)->base;
    if (nread == 0) return; /* EAGAIN: nothing read */
    t->on_read(t, nread, nread > 0 ? buf->base : NULL);
}

static int pt__read_start(pt_transport_t *t)
{
    pt_transport_tcp_t *tt = (pt_transport_tcp_t *)t;
    return uv_read_start((uv_stream_t *)&tt->tcp, pt__on_alloc, pt__on_read);
}

static void pt__read_stop(pt_transport_t *t)
{
    pt_transport_tcp_t *tt = (pt_transport_tcp_t *)t;
    uv_read_stop((uv_stream_t *)&tt->tcp);
}

static int pt__try_write(pt_transport_t *t, const uv_buf_t *bufs, unsigned n)
{
    pt_transport_tcp_t *tt = (pt_transport_tcp_t *)t;
    return uv_try_write((uv_stream_t *)&tt->tcp, bufs, n);
}

static void pt__on_written(uv_write_t *req, int status)
{
    pt_transport_write_t *wr = (pt_transport_write_t *)req;
    wr->cb(wr, status);
}

static int pt__write(pt_transport_t *t, pt_transport_write_t *req, const uv_buf_t *bufs, unsigned n,
                     pt_transport_write_cb cb)
{
    pt_transport_tcp_t *tt = (pt_transport_tcp_t *)t;
    req->t = t;
    req->cb = cb;
    return uv_write(&req->uv, (uv_stream_t *)&tt->tcp, bufs, n, pt__on_written);
}

static void pt__on_shutdown(uv_shutdown_t *req, int status)
{
    pt_transport_t *t = req->data;
    free(req);
    t->on_shutdown(t, status);
}

static int pt__shutdown(pt_transport_t *t, pt_transport_cb cb)
{
    pt_transport_tcp_t *tt = (pt_transport_tcp_t *)t;
    t->on_shutdown = cb;
    /* allocated when needed, not embedded: most connections never shut
     * down, and every idle one would carry the request (issue 22) */
    uv_shutdown_t *sd = malloc(sizeof *sd);
    if (!sd) return UV_ENOMEM;
    sd->data = t;
    int rc = uv_shutdown(sd, (uv_stream_t *)&tt->tcp, pt__on_shutdown);
    if (rc != 0) free(sd);
    return rc;
}

static void pt__on_closed(uv_handle_t *h)
{
    pt_transport_t *t = &PT__T(h)->base;
    t->on_close(t, 0);
}

static void pt__close(pt_transport_t *t, pt_transport_cb cb)
{
    pt_transport_tcp_t *tt = (pt_transport_tcp_t *)t;
    t->on_close = cb;
    uv_close((uv_handle_t *)&tt->tcp, pt__on_closed);
}

static int pt__peer(pt_transport_t *t, struct sockaddr_storage *ss)
{
    pt_transport_tcp_t *tt = (pt_transport_tcp_t *)t;
    int len = sizeof *ss;
    return uv_tcp_getpeername(&tt->tcp, (struct sockaddr *)ss, &len);
}

static const pt_transport_ops_t pt__tcp_ops = {
    .read_start = pt__read_start,
    .read_stop = pt__read_stop,
    .try_write = pt__try_write,
    .write = pt__write,
    .shutdown = pt__shutdown,
    .close = pt__close,
    .peer = pt__peer,
};

int pt_transport_tcp_init(pt_transport_tcp_t *t, uv_loop_t *loop, char *read_buf, size_t read_size)
{
    int rc = uv_tcp_init(loop, &t->tcp);
    if (rc != 0) return rc;
    t->tcp.data = t;
    t->base.ops = &pt__tcp_ops;
    t->base.read_buf = read_buf;
    t->base.read_size = read_size;
    t->base.tcp = &t->tcp;
    return 0;
}

int pt_transport_tcp_accept(pt_transport_tcp_t *t, uv_stream_t *listener)
{
    int rc = uv_accept(listener, (uv_stream_t *)&t->tcp);
    if (rc == 0) uv_tcp_nodelay(&t->tcp, 1);
    return rc;
}

static void pt__on_connect(uv_connect_t *req, int status)
{
    pt_transport_tcp_t *t = req->data;
    free(req);
    if (status == 0) uv_tcp_nodelay(&t->tcp, 1);
    t->on_connect(&t->base, status);
}

int pt_transport_tcp_connect(pt_transport_tcp_t *t, const struct sockaddr *addr,
                             void (*on_connect)(pt_transport_t *t, int status))
{
    t->on_connect = on_connect;
    uv_connect_t *req = malloc(sizeof *req); /* freed in its callback (ECANCELED on a close) */
    if (!req) return UV_ENOMEM;
    req->data = t;
    int rc = uv_tcp_connect(req, &t->tcp, addr, pt__on_connect);
    if (rc != 0) free(req);
    return rc;
}
