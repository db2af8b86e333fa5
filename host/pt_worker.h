/* pt_worker: one thread with its own libuv loop, its own SO_REUSEPORT
 * listener and its own Lua VM. Workers share only the immutable config and
 * router, and one atomic count of the process's connections (max_connections). */
#ifndef PT_WORKER_H
#define PT_WORKER_H

#include "pt_config.h"
#include "pt_lua.h"
#include "pt_metrics.h"
#include "pt_router.h"
#include "pt_snapshot.h"

#include <sys/socket.h>
#include <time.h>
#include <uv.h>

/* A connection in a worker's list (embedded in the connection's own
 * struct): the worker drains and closes it through its ops, knowing nothing
 * of its protocol. */
typedef struct pt_worker_conn_s pt_worker_conn_t;
typedef struct {
    void (*drain)(pt_worker_conn_t *wc); /* the worker drains: finish the exchange
                                            in progress, then close */
    void (*close)(pt_worker_conn_t *wc); /* drain_timeout passed: close now */
} pt_worker_conn_ops_t;
struct pt_worker_conn_s {
    const pt_worker_conn_ops_t *ops;
    pt_worker_conn_t *prev, *next;
    int admitted;
};

/* What the main thread tells a worker. Messages are handled in order. */
typedef enum {
    PT_WORKER_LOAD = 0, /* path, source: load or reload a service file */
    PT_WORKER_UNLOAD,   /* path: remove the service of a file */
    PT_WORKER_SNAPSHOT, /* snap: serve with this config from now on */
    PT_WORKER_CALL,     /* fn(w, arg) on the worker's loop: how other threads
                           (AMQP, resolvers) hand results back to a request */
} pt_worker_msg_type_t;

struct pt_worker_s;
typedef void (*pt_worker_fn)(struct pt_worker_s *w, void *arg);

typedef struct pt_worker_msg_s {
    pt_worker_msg_type_t type;
    char *path;
    char *source; /* PT_WORKER_LOAD: the text the main thread checked */
    size_t source_len;
    pt_snapshot_t *snap; /* a reference the worker takes over */
    pt_worker_fn fn;
    void *arg;
    struct pt_worker_msg_s *next;
} pt_worker_msg_t;

typedef struct pt_worker_s {
    int id; /* 1..N */
    int n_workers;
    pt_snapshot_t *snap;       /* the generation this worker serves with (a reference) */
    const pt_config_t *cfg;    /* snap->cfg */
    const pt_router_t *router; /* snap->router */
    struct sockaddr_storage addr;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t stop_async;
    uv_async_t msg_async;
    uv_mutex_t msg_lock;
    pt_worker_msg_t *msg_head, *msg_tail;
    int ended; /* the loop is gone (under msg_lock) */
    uv_timer_t drain_timer;
    uv_thread_t thread;
    uv_sem_t *started; /* posted once start_rc is known */
    int start_rc;
    char start_err[512];
    pt_lua_t *lua;
    struct pt_upstreams_s *upstreams; /* targets, pools and health of w->snap's upstreams */
    pt_worker_conn_t *conns;          /* every open connection, doubly linked */
    void *ws_list;                    /* pt_ws's own list of upgraded connections */
    /* a client connected on the listener (set before pt_worker_start) */
    void (*accept)(struct pt_worker_s *w, uv_stream_t *listener);
    size_t n_conns;
    int draining;
    int drain_expired;    /* drain_timeout passed: stop waiting for tasks */
    size_t tasks;         /* service calls that hold no connection (AMQP deliveries) */
    pt_metrics_t metrics; /* written by this worker only; read on scrape */
    pt_buf_t access_buf;  /* access log lines of this loop iteration */
    uv_check_t flush_check;
    time_t date_sec;
    char date[40]; /* "Date: ...\r\n" of date_sec */
    char read_buf[64 * 1024];
} pt_worker_t;

/* Starts a worker thread serving with w->snap (a reference the worker owns).
 * It binds, loads its VM, then posts started; the caller reads w->start_rc
 * after uv_sem_wait. Returns 0 or a libuv error. */
int pt_worker_start(pt_worker_t *w);

/* Asks the worker to stop accepting, finish in-flight requests (at most
 * cfg->drain_timeout_ms) and end its loop. Safe from any thread. */
void pt_worker_stop(pt_worker_t *w);

/* A service call that holds no HTTP connection (an AMQP delivery) starts or
 * ends on this worker; a draining worker waits for them (at most
 * drain_timeout). Worker thread only. */
void pt_worker_task_begin(pt_worker_t *w);
void pt_worker_task_end(pt_worker_t *w);

/* Queues a message for the worker (which frees it). Safe from any thread. */
void pt_worker_post(pt_worker_t *w, pt_worker_msg_type_t type, const char *path,
                    pt_snapshot_t *snap);

/* Queues PT_WORKER_LOAD of path with the text the main thread checked
 * (copied). Safe from any thread. */
void pt_worker_post_source(pt_worker_t *w, const char *path, const char *source, size_t len);

/* Runs fn(w, arg) on the worker's loop, in order with other messages. Safe
 * from any thread. Returns 0, or -1 (out of memory: fn is not called). If
 * the worker has ended, fn still runs once, on the joining thread, so arg is
 * never leaked; fn must then only free it (w->lua is NULL). */
int pt_worker_call(pt_worker_t *w, pt_worker_fn fn, void *arg);

/* Publishes the array of all workers (main thread, once they run), so a
 * primitive can reach every worker (WebSocket push). */
void pt_worker_set_all(pt_worker_t *workers, int n);

/* All workers and their number (NULL, 0 before pt_worker_set_all). */
pt_worker_t *pt_worker_all(int *n);

/* The worker running on this thread, or NULL on any other thread. */
pt_worker_t *pt_worker_self(void);

/* Waits for the worker thread to end. */
void pt_worker_join(pt_worker_t *w);

/* Resolves host:port into addr; returns 0 or -1. */
int pt_worker_resolve(const char *host, int port, struct sockaddr_storage *addr);

/* A client connection accepted on w: links wc into w's list and admits it
 * (returns 0) while the process has fewer than server.max_connections open
 * (one atomic counter all workers share, so the figure is the config's, not
 * a split of it per worker) and w is not draining; else returns -1 (counted
 * in portico_connections_refused_total, warned at most once a second) and
 * wc stays linked: the caller closes it and calls pt_worker_conn_remove once
 * its handles are closed. */
int pt_worker_conn_add(pt_worker_t *w, pt_worker_conn_t *wc, const pt_worker_conn_ops_t *ops);

/* wc's handles are closed: unlinks it, lets its admission go, may end a drain. */
void pt_worker_conn_remove(pt_worker_t *w, pt_worker_conn_t *wc);

/* "Date: <RFC 7231 date>\r\n" for now, cached per second. */
const char *pt_worker_date(pt_worker_t *w);

#endif
