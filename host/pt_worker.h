/* pt_worker: one thread with its own libuv loop, its own SO_REUSEPORT
 * listener, its message queue and the list of its client connections.
 * Workers share only the immutable config and router, and one atomic count
 * of the process's connections (max_connections).
 *
 * The worker knows no protocol: what it serves comes from above as hooks
 * (pt_gateway.c sets them: the Lua VM, the upstreams, HTTP's accept), and a
 * connection of any protocol joins its list with the two operations a
 * drain needs. */
#ifndef PT_WORKER_H
#define PT_WORKER_H

#include "pt_config.h"
#include "pt_metrics.h"
#include "pt_queue.h"
#include "pt_router.h"
#include "pt_snapshot.h"
#include "pt_util.h"

#include <stddef.h>
#include <sys/socket.h>
#include <time.h>
#include <uv.h>

struct pt_lua_s;
struct pt_upstreams_s;
typedef struct pt_worker_s pt_worker_t;
typedef void (*pt_worker_fn)(pt_worker_t *w, void *arg);

/* ---- the connections of a worker ---- */

typedef struct pt_worker_conn_s pt_worker_conn_t;
typedef struct {
    void (*drain)(pt_worker_conn_t *wc); /* the worker drains: finish the exchange
                                            in progress, then close */
    void (*close)(pt_worker_conn_t *wc); /* drain_timeout passed: close now */
} pt_worker_conn_ops_t;
struct pt_worker_conn_s { /* embedded in the connection's own struct */
    const pt_worker_conn_ops_t *ops;
    pt_worker_conn_t *prev, *next;
    int admitted;
};

/* ---- timers of a worker's connections ---- */

/* One deadline of a connection (its idle, head or body time-out), a node
 * embedded in the connection: every connection of a worker shares the
 * worker's one binary heap and its one libuv timer, so a connection costs
 * 24 bytes of timer instead of a uv_timer_t (152). */
typedef struct pt_worker_timer_s pt_worker_timer_t;
struct pt_worker_timer_s {
    uint64_t due; /* loop time (ms) it fires at, while armed */
    size_t idx;   /* its place in the heap plus one; 0: not armed */
    void (*cb)(pt_worker_timer_t *t);
};

/* Arms t to run t->cb once, ms from the loop's now (again: moved). No
 * allocation but the heap's growth; returns 0, or -1 out of memory (then t
 * is not armed). Worker thread only. */
int pt_worker_timer_start(pt_worker_t *w, pt_worker_timer_t *t, uint64_t ms);

/* Disarms t (nothing when it is not armed). */
void pt_worker_timer_stop(pt_worker_t *w, pt_worker_timer_t *t);

/* ---- what the layer above gives a worker ---- */

/* Every hook runs on the worker's thread, and each may be NULL. */
typedef struct {
    /* Before the worker listens: makes what it serves with (w->lua,
     * w->upstreams). Returns 0, or -1 with the reason in err; a failed start
     * still gets drained and end, which free whatever it made. */
    int (*start)(pt_worker_t *w, char *err, size_t errlen);
    /* A client connected on the listener: uv_accept it and pt_worker_conn_add. */
    void (*accept)(pt_worker_t *w, uv_stream_t *listener);
    /* w->snap (and cfg, router) has just become a new generation; the old
     * one is released after the hook returns. */
    void (*snapshot)(pt_worker_t *w);
    /* A drain began: the listener is closed and every connection was asked
     * to drain. */
    void (*drain)(pt_worker_t *w);
    /* drain_timeout passed: end what waits (services waiting on a slow
     * backend); the worker closes its connections right after. */
    void (*drain_expired)(pt_worker_t *w);
    /* The drain is over (no connection, no task, or it expired), or the
     * start failed: let go of what keeps the loop alive (idle upstream
     * connections). Runs once. */
    void (*drained)(pt_worker_t *w);
    /* Once per loop iteration, after the I/O callbacks (uv_check): writes
     * what the iteration batched (WebSocket pushes). */
    void (*at_check)(pt_worker_t *w);
    /* After the loop ended: frees what start made (w->lua). Later messages
     * then run on the joining thread (pt_worker_call). */
    void (*end)(pt_worker_t *w);
} pt_worker_hooks_t;

struct pt_worker_s {
    int id; /* 1..N */
    int n_workers;
    const pt_worker_hooks_t *hooks; /* set before pt_worker_start; NULL: none */
    pt_snapshot_t *snap;            /* the generation this worker serves with (a reference) */
    const pt_config_t *cfg;         /* snap->cfg */
    const pt_router_t *router;      /* snap->router */
    struct sockaddr_storage addr;
    struct sockaddr_storage tls_addr; /* server.tls.listen, when tls_on */
    int tls_on;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_tcp_t tls_listener; /* its accept hook tells the two apart by the handle */
    uv_async_t stop_async;
    pt_queue_t msgs; /* what other threads hand this worker, in order */
    uv_timer_t drain_timer;
    pt_worker_timer_t **timers; /* the heap of armed connection timers (earliest first) */
    size_t n_timers, cap_timers;
    uv_timer_t timer_heap; /* fires at timers[0]->due */
    uint64_t timer_armed;  /* when timer_heap fires; 0: stopped */
    int timers_firing;     /* inside its callback: re-armed once at its end */
    void *http_pool;       /* pt_http's free request states */
    size_t n_http_pool;
    uv_thread_t thread;
    uv_sem_t *started; /* posted once start_rc is known */
    int start_rc;
    char start_err[512];
    struct pt_lua_s *lua;             /* made by the start hook */
    struct pt_upstreams_s *upstreams; /* targets, pools and health of w->snap's upstreams */
    struct pt_redis_s *redis;         /* cluster: this loop's Redis connection; NULL: none */
    pt_worker_conn_t *conns;          /* every open client connection, doubly linked */
    void *ws_list;                    /* pt_ws's own list of upgraded connections */
    size_t n_conns;
    int draining;
    int drain_expired;    /* drain_timeout passed: stop waiting for tasks */
    int drained;          /* the drained hook ran */
    size_t tasks;         /* service calls that hold no connection (AMQP deliveries) */
    pt_metrics_t metrics; /* written by this worker only; read on scrape */
    pt_buf_t access_buf;  /* access log lines of this loop iteration */
    uv_check_t flush_check;
    time_t date_sec;
    char date[40]; /* "Date: ...\r\n" of date_sec */
    char read_buf[64 * 1024];
};

/* Starts a worker thread serving with w->snap (a reference the worker owns)
 * and w->hooks. It runs the start hook, binds, then posts started; the
 * caller reads w->start_rc after uv_sem_wait. Returns 0 or a libuv error. */
int pt_worker_start(pt_worker_t *w);

/* Asks the worker to stop accepting, finish in-flight requests (at most
 * cfg->drain_timeout_ms) and end its loop. Safe from any thread. */
void pt_worker_stop(pt_worker_t *w);

/* Whether the worker's loop has ended (from then on, what is posted to it
 * runs on the thread that joins it). Any thread. */
int pt_worker_ended(pt_worker_t *w);

/* A service call that holds no client connection (an AMQP delivery) starts
 * or ends on this worker; a draining worker waits for them (at most
 * drain_timeout). Worker thread only. */
void pt_worker_task_begin(pt_worker_t *w);
void pt_worker_task_end(pt_worker_t *w);

/* Hands the worker a new config generation (a reference it takes over): it
 * serves with it from its next message on. Safe from any thread. */
void pt_worker_post_snapshot(pt_worker_t *w, pt_snapshot_t *snap);

/* Runs fn(w, arg) on the worker's loop, in order with other messages. Safe
 * from any thread. Returns 0, or -1 (out of memory: fn is not called). If
 * the worker has ended, fn still runs once, on the joining thread, so arg is
 * never leaked; fn must then only free it (w->lua is NULL, and
 * pt_worker_self() too). */
int pt_worker_call(pt_worker_t *w, pt_worker_fn fn, void *arg);

/* Publishes the array of all workers (main thread, once they run), so a
 * primitive can reach every worker (WebSocket push). */
void pt_worker_set_all(pt_worker_t *workers, int n);

/* All workers and their number (NULL, 0 before pt_worker_set_all). */
pt_worker_t *pt_worker_all(int *n);

/* The worker running on this thread, or NULL on any other thread. */
pt_worker_t *pt_worker_self(void);

/* Waits for the worker thread to end, then runs what was posted after its
 * loop ended. */
void pt_worker_join(pt_worker_t *w);

/* Resolves host:port into addr; returns 0 or -1. */
int pt_worker_resolve(const char *host, int port, struct sockaddr_storage *addr);

/* A client connection accepted on w: links wc into w's list and admits it
 * (returns 0) while the process has fewer than server.max_connections open
 * (one atomic counter all workers share, so the figure is the config's, not
 * a split of it per worker) and w is not draining; else returns -1 (a
 * refusal under the limit is counted in portico_connections_refused_total
 * and warned of at most once a second) and wc stays linked: the caller
 * closes it and calls pt_worker_conn_remove once its handles are closed. */
int pt_worker_conn_add(pt_worker_t *w, pt_worker_conn_t *wc, const pt_worker_conn_ops_t *ops);

/* wc's handles are closed: unlinks it, lets its admission go, may end a drain. */
void pt_worker_conn_remove(pt_worker_t *w, pt_worker_conn_t *wc);

/* "Date: <RFC 7231 date>\r\n" for now, cached per second. */
const char *pt_worker_date(pt_worker_t *w);

#endif
