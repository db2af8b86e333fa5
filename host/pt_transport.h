/* pt_transport: the byte stream under a connection, as a small ops table.
 *
 * A connection (pt_http, and after a hand-over pt_ws or a proxy tunnel)
 * reads and writes only through these ops, so a transport that is not plain
 * TCP (TLS over a memory BIO, next) sits under HTTP, WebSocket and proxy
 * code without any of them changing: it takes the plaintext they write,
 * and hands them the plaintext it decrypted into the same read buffer.
 *
 * Reads are zero-copy: the bytes of one read are in t->read_buf (the
 * worker's, shared by all its connections) and valid only during on_read.
 * Writes go first through try_write (no request, no epoll re-arm when the
 * socket takes all of them), and only what is left through write, whose
 * request the caller allocates (embedding pt_transport_write_t) and frees
 * in its callback. Callbacks of queued writes come before the close
 * callback. */
#ifndef PT_TRANSPORT_H
#define PT_TRANSPORT_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <uv.h>

typedef struct pt_transport_s pt_transport_t;
typedef struct pt_transport_write_s pt_transport_write_t;

/* Bytes read (nread > 0, data in t->read_buf), or the end of the input
 * (nread < 0: UV_EOF, or another libuv error). */
typedef void (*pt_transport_read_cb)(pt_transport_t *t, ssize_t nread, const char *data);
/* A queued write completed (status < 0: it failed). */
typedef void (*pt_transport_write_cb)(pt_transport_write_t *req, int status);
/* A shutdown completed (status), or the handles closed (status 0). */
typedef void (*pt_transport_cb)(pt_transport_t *t, int status);

/* A queued write: embedded first in the caller's own request struct. */
struct pt_transport_write_s {
    uv_write_t uv; /* the transport's */
    pt_transport_t *t;
    pt_transport_write_cb cb;
};

typedef struct {
    /* Starts delivering reads to t->on_read. Returns 0 or a libuv error. */
    int (*read_start)(pt_transport_t *t);
    /* Stops delivering reads (no callback after it returns). */
    void (*read_stop)(pt_transport_t *t);
    /* Writes what it can now without queueing: returns the bytes taken (all
     * of them when the socket had room), UV_EAGAIN, or another error. Only
     * when nothing is queued (or the order of the bytes breaks). */
    int (*try_write)(pt_transport_t *t, const uv_buf_t *bufs, unsigned n);
    /* Queues bufs (which must stay valid until cb); cb(req, status) once
     * they are written or failed. Returns 0, or an error (cb is not called). */
    int (*write)(pt_transport_t *t, pt_transport_write_t *req, const uv_buf_t *bufs, unsigned n,
                 pt_transport_write_cb cb);
    /* Ends the write side once queued writes are out; cb(t, status) then.
     * Returns 0 or an error (cb is not called). One at a time. */
    int (*shutdown)(pt_transport_t *t, pt_transport_cb cb);
    /* Closes the transport's handles; cb(t, 0) once they are closed (the
     * owner may free t's memory then, not before). */
    void (*close)(pt_transport_t *t, pt_transport_cb cb);
    /* The peer's address into ss. Returns 0 or an error. */
    int (*peer)(pt_transport_t *t, struct sockaddr_storage *ss);
} pt_transport_ops_t;

struct pt_transport_s {
    const pt_transport_ops_t *ops;
    pt_transport_read_cb on_read; /* set by the owner */
    void *data;                   /* the owner's */
    char *read_buf;               /* where reads land (not owned) */
    size_t read_size;
    pt_transport_cb on_shutdown, on_close; /* the pending callbacks */
    const uv_tcp_t *tcp;                   /* the TCP handle underneath, for lazy peer
                                              lookups (pt_security); NULL when none */
};

static inline int pt_transport_read_start(pt_transport_t *t)
{
    return t->ops->read_start(t);
}

static inline void pt_transport_read_stop(pt_transport_t *t)
{
    t->ops->read_stop(t);
}

static inline int pt_transport_try_write(pt_transport_t *t, const uv_buf_t *bufs, unsigned n)
{
    return t->ops->try_write(t, bufs, n);
}

static inline int pt_transport_write(pt_transport_t *t, pt_transport_write_t *req,
                                     const uv_buf_t *bufs, unsigned n, pt_transport_write_cb cb)
{
    return t->ops->write(t, req, bufs, n, cb);
}

static inline int pt_transport_shutdown(pt_transport_t *t, pt_transport_cb cb)
{
    return t->ops->shutdown(t, cb);
}

static inline void pt_transport_close(pt_transport_t *t, pt_transport_cb cb)
{
    t->ops->close(t, cb);
}

static inline int pt_transport_peer(pt_transport_t *t, struct sockaddr_storage *ss)
{
    return t->ops->peer(t, ss);
}

/* ---- plain TCP over uv_tcp_t ---- */

typedef struct {
    pt_transport_t base; /* first: a pt_transport_tcp_t * is a pt_transport_t * */
    uv_tcp_t tcp;
    /* the shutdown and connect requests are allocated when made and freed in
     * their callbacks: an idle connection carries neither */
    void (*on_connect)(pt_transport_t *t, int status);
} pt_transport_tcp_t;

/* Initializes t on loop with read_buf as the buffer reads land in (not
 * copied: it must outlive t). Returns 0 or a libuv error (then t has no
 * handle to close). */
int pt_transport_tcp_init(pt_transport_tcp_t *t, uv_loop_t *loop, char *read_buf, size_t read_size);

/* Accepts a client of listener into t (initialized) and sets TCP_NODELAY.
 * Returns 0 or a libuv error (t must still be closed). */
int pt_transport_tcp_accept(pt_transport_tcp_t *t, uv_stream_t *listener);

/* Connects t (initialized) to addr; on_connect(t, status) when done (with
 * TCP_NODELAY set on success; UV_ECANCELED when t closed first).
 * Returns 0 or a libuv error (on_connect is not called). */
int pt_transport_tcp_connect(pt_transport_tcp_t *t, const struct sockaddr *addr,
                             void (*on_connect)(pt_transport_t *t, int status));

#endif
