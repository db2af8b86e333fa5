#include "pt_worker.h"
#include "pt_accesslog.h"
#include "pt_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int pt_worker_resolve(const char *host, int port, struct sockaddr_storage *addr)
{
    memset(addr, 0, sizeof *addr);
    struct sockaddr_in *a4 = (struct sockaddr_in *)addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)addr;
    if (uv_ip4_addr(host, port, a4) == 0) return 0;
    if (uv_ip6_addr(host, port, a6) == 0) return 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, NULL, &hints, &res) != 0) return -1;
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    if (res->ai_family == AF_INET)
        a4->sin_port = htons((uint16_t)port);
    else
        a6->sin6_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return 0;
}

const char *pt_worker_date(pt_worker_t *w)
{
    time_t now = time(NULL);
    if (now != w->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(w->date, sizeof w->date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        w->date_sec = now;
    }
    return w->date;
}

/* What other threads hand a worker: a new generation, or a function to run
 * on its loop. */
typedef enum {
    PT__MSG_SNAPSHOT = 0, /* snap: serve with this config from now on */
    PT__MSG_CALL,         /* fn(w, arg) on the worker's loop */
} pt__msg_type_t;

typedef struct {
    pt_queue_node_t node;
    pt__msg_type_t type;
    pt_snapshot_t *snap; /* a reference the worker takes over */
    pt_worker_fn fn;
    void *arg;
} pt__msg_t;

static void pt__on_connection(uv_stream_t *listener, int status)
{
    pt_worker_t *w = listener->data;
    if (status < 0) {
        pt_log_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    if (w->hooks && w->hooks->accept) w->hooks->accept(w, listener);
}

/* The listener is a socket of our own with SO_REUSEPORT set before bind, so
 * every worker listens on the same port and the kernel spreads connections.
 * The TLS listener is a second one, made the same way. */
static int pt__listen_on(pt_worker_t *w, uv_tcp_t *h, const struct sockaddr_storage *addr)
{
    int one = 1, rc;
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return uv_translate_sys_error(errno);
    socklen_t len =
        addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, (const struct sockaddr *)addr, len) != 0) {
        rc = uv_translate_sys_error(errno);
        close(fd);
        return rc;
    }
    uv_tcp_init(&w->loop, h);
    h->data = w;
    if ((rc = uv_tcp_open(h, fd)) != 0) return rc;
    /* the kernel caps it at net.core.somaxconn: a burst of thousands of
     * connects (a reconnect storm) waits in the queue instead of SYN retries */
    return uv_listen((uv_stream_t *)h, 65535, pt__on_connection);
}

static int pt__listen(pt_worker_t *w)
{
    return pt__listen_on(w, &w->listener, &w->addr);
}

static void pt__close_listeners(pt_worker_t *w)
{
    uv_tcp_t *hs[] = {&w->listener, &w->tls_listener};
    for (int i = 0; i < 2; i++)
        if (hs[i]->type == UV_TCP && !uv_is_closing((uv_handle_t *)hs[i]))
            uv_close((uv_handle_t *)hs[i], NULL);
}

/* ---- the connections' timer heap ---- */

static void pt__timer_swap(pt_worker_t *w, size_t a, size_t b)
{
    pt_worker_timer_t *t = w->timers[a];
    w->timers[a] = w->timers[b];
    w->timers[b] = t;
    w->timers[a]->idx = a + 1;
    w->timers[b]->idx = b + 1;
}

static void pt__timer_up(pt_worker_t *w, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (w->timers[parent]->due <= w->timers[i]->due) break;
        pt__timer_swap(w, i, parent);
        i = parent;
    }
}

static void pt__timer_down(pt_worker_t *w, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < w->n_timers && w->timers[l]->due < w->timers[m]->due) m = l;
        if (r < w->n_timers && w->timers[r]->due < w->timers[m]->due) m = r;
        if (m == i) break;
        pt__timer_swap(w, i, m);
        i = m;
    }
}

static void pt__on_timer_heap(uv_timer_t *h);

/* Points the one libuv timer at the heap's earliest deadline. */
static void pt__timer_arm(pt_worker_t *w)
{
    if (!w->timer_heap.loop) { /* a worker made without its thread (the unit tests) */
        uv_timer_init(&w->loop, &w->timer_heap);
        uv_unref((uv_handle_t *)&w->timer_heap);
        w->timer_heap.data = w;
    }
    if (w->timers_firing || uv_is_closing((uv_handle_t *)&w->timer_heap)) return;
    if (w->n_timers == 0) {
        if (w->timer_armed) uv_timer_stop(&w->timer_heap);
        w->timer_armed = 0;
        return;
    }
    uint64_t due = w->timers[0]->due;
    if (w->timer_armed == due) return;
    uint64_t now = uv_now(&w->loop);
    w->timer_armed = due;
    uv_timer_start(&w->timer_heap, pt__on_timer_heap, due > now ? due - now : 0, 0);
}

static void pt__timer_remove(pt_worker_t *w, pt_worker_timer_t *t)
{
    size_t i = t->idx - 1;
    t->idx = 0;
    if (--w->n_timers == i) return;
    w->timers[i] = w->timers[w->n_timers];
    w->timers[i]->idx = i + 1;
    pt__timer_up(w, i);
    pt__timer_down(w, w->timers[i]->idx - 1);
}

static void pt__on_timer_heap(uv_timer_t *h)
{
    pt_worker_t *w = h->data;
    uint64_t now = uv_now(&w->loop);
    w->timer_armed = 0;
    w->timers_firing = 1;
    while (w->n_timers && w->timers[0]->due <= now) {
        pt_worker_timer_t *t = w->timers[0];
        pt__timer_remove(w, t);
        t->cb(t); /* may arm or disarm timers, its own too */
    }
    w->timers_firing = 0;
    pt__timer_arm(w);
}

int pt_worker_timer_start(pt_worker_t *w, pt_worker_timer_t *t, uint64_t ms)
{
    uint64_t due = uv_now(&w->loop) + ms;
    if (t->idx) {
        uint64_t was = t->due;
        t->due = due;
        if (due < was)
            pt__timer_up(w, t->idx - 1);
        else
            pt__timer_down(w, t->idx - 1);
    } else {
        if (w->n_timers == w->cap_timers) {
            size_t cap = w->cap_timers ? w->cap_timers * 2 : 256;
            pt_worker_timer_t **a = realloc(w->timers, cap * sizeof *a);
            if (!a) return -1;
            w->timers = a;
            w->cap_timers = cap;
        }
        t->due = due;
        w->timers[w->n_timers++] = t;
        t->idx = w->n_timers;
        pt__timer_up(w, t->idx - 1);
    }
    pt__timer_arm(w);
    return 0;
}

void pt_worker_timer_stop(pt_worker_t *w, pt_worker_timer_t *t)
{
    if (!t->idx) return;
    pt__timer_remove(w, t);
    pt__timer_arm(w);
}

/* Once: the hook lets go of what would keep the loop running. */
static void pt__drained(pt_worker_t *w)
{
    if (w->drained) return;
    w->drained = 1;
    if (w->hooks && w->hooks->drained) w->hooks->drained(w);
}

static void pt__maybe_finish(pt_worker_t *w)
{
    if (!w->draining || w->n_conns > 0 || (w->tasks > 0 && !w->drain_expired)) return;
    if (!uv_is_closing((uv_handle_t *)&w->drain_timer))
        uv_close((uv_handle_t *)&w->drain_timer, NULL);
    if (!uv_is_closing((uv_handle_t *)&w->timer_heap))
        uv_close((uv_handle_t *)&w->timer_heap, NULL);
    if (!uv_is_closing((uv_handle_t *)&w->stop_async))
        uv_close((uv_handle_t *)&w->stop_async, NULL);
    /* No wake-up may reach the queue's handle once it closes: from here on
     * other threads only queue, and the joining thread runs what they
     * queued. */
    pt_queue_end(&w->msgs);
    if (!uv_is_closing((uv_handle_t *)&w->flush_check))
        uv_close((uv_handle_t *)&w->flush_check, NULL);
    pt__drained(w); /* idle upstream connections close */
}

/* Once per loop iteration: the access log lines of all requests it ended. */
static void pt__on_check(uv_check_t *h)
{
    pt_worker_t *w = h->data;
    if (w->hooks && w->hooks->at_check) w->hooks->at_check(w);
    if (w->access_buf.len) pt_accesslog_flush(&w->access_buf);
}

/* Runs what is queued, in order: on the loop, or once it ended on the
 * thread that ends or joins the worker (fn then only frees its arg, and a
 * generation only loses its reference). */
static void pt__run_msgs(pt_worker_t *w, int live)
{
    pt_queue_node_t *n = pt_queue_take(&w->msgs, NULL);
    while (n) {
        pt__msg_t *m = PT_QUEUE_ENTRY(n, pt__msg_t, node);
        n = n->next;
        switch (m->type) {
        case PT__MSG_CALL:
            m->fn(w, m->arg);
            break;
        case PT__MSG_SNAPSHOT: {
            if (!live) {
                pt_snapshot_release(m->snap);
                break;
            }
            pt_snapshot_t *old = w->snap;
            w->snap = m->snap;
            w->cfg = m->snap->cfg;
            w->router = m->snap->router;
            pt_log_set_level(w->cfg->log_level);
            if (w->hooks && w->hooks->snapshot) w->hooks->snapshot(w);
            pt_snapshot_release(old);
            break;
        }
        }
        free(m);
    }
}

static void pt__on_msgs(pt_queue_t *q)
{
    pt__run_msgs(q->data, 1);
}

static __thread pt_worker_t *pt__self;
static pt_worker_t *pt__all;
static int pt__n_all;

void pt_worker_set_all(pt_worker_t *workers, int n)
{
    __atomic_store_n(&pt__n_all, 0, __ATOMIC_RELEASE);
    pt__all = workers;
    __atomic_store_n(&pt__n_all, n, __ATOMIC_RELEASE);
}

pt_worker_t *pt_worker_all(int *n)
{
    *n = __atomic_load_n(&pt__n_all, __ATOMIC_ACQUIRE);
    return pt__all;
}

pt_worker_t *pt_worker_self(void)
{
    return pt__self;
}

static int pt__post(pt_worker_t *w, pt__msg_type_t type, pt_snapshot_t *snap, pt_worker_fn fn,
                    void *arg)
{
    pt__msg_t *m = calloc(1, sizeof *m);
    if (!m) return -1;
    m->type = type;
    m->snap = snap;
    m->fn = fn;
    m->arg = arg;
    pt_queue_push(&w->msgs, &m->node); /* once ended: the joining thread runs it */
    return 0;
}

void pt_worker_post_snapshot(pt_worker_t *w, pt_snapshot_t *snap)
{
    if (pt__post(w, PT__MSG_SNAPSHOT, snap, NULL, NULL) != 0) {
        pt_log_error("out of memory: worker %d keeps its previous config", w->id);
        pt_snapshot_release(snap);
    }
}

int pt_worker_call(pt_worker_t *w, pt_worker_fn fn, void *arg)
{
    return pt__post(w, PT__MSG_CALL, NULL, fn, arg);
}

int pt_worker_ended(pt_worker_t *w)
{
    return pt_queue_ended(&w->msgs);
}

/* Process-wide: the workers' connections count against one limit. */
static uint64_t pt__conns_open;
static uint64_t pt__refused_unreported;
static int64_t pt__refused_warned; /* the second of the last warning */

static int pt__admit(pt_worker_t *w, pt_worker_conn_t *wc)
{
    uint64_t limit = w->cfg->max_connections;
    uint64_t open = __atomic_add_fetch(&pt__conns_open, 1, __ATOMIC_RELAXED);
    if (open <= limit) {
        wc->admitted = 1;
        return 0;
    }
    __atomic_sub_fetch(&pt__conns_open, 1, __ATOMIC_RELAXED);
    pt_metrics_inc(&pt_metrics_connections_refused, 1);
    __atomic_add_fetch(&pt__refused_unreported, 1, __ATOMIC_RELAXED);
    /* a flood of refusals must not flood the log: one line a second at most,
     * from whichever worker wins the second */
    int64_t now = (int64_t)(uv_hrtime() / 1000000000u);
    int64_t last = __atomic_load_n(&pt__refused_warned, __ATOMIC_RELAXED);
    if (now != last && __atomic_compare_exchange_n(&pt__refused_warned, &last, now, 0,
                                                   __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        uint64_t n = __atomic_exchange_n(&pt__refused_unreported, 0, __ATOMIC_RELAXED);
        pt_log_warn("connection refused: server.max_connections (%llu) are open; %llu refused "
                    "since the last warning",
                    (unsigned long long)limit, (unsigned long long)n);
    }
    return -1;
}

int pt_worker_conn_add(pt_worker_t *w, pt_worker_conn_t *wc, const pt_worker_conn_ops_t *ops)
{
    wc->ops = ops;
    wc->admitted = 0;
    wc->prev = NULL;
    wc->next = w->conns;
    if (w->conns) w->conns->prev = wc;
    w->conns = wc;
    w->n_conns++;
    if (w->draining) return -1; /* not a refusal under the limit: not counted */
    return pt__admit(w, wc);
}

void pt_worker_conn_remove(pt_worker_t *w, pt_worker_conn_t *wc)
{
    if (wc->admitted) __atomic_sub_fetch(&pt__conns_open, 1, __ATOMIC_RELAXED);
    wc->admitted = 0;
    if (wc->prev)
        wc->prev->next = wc->next;
    else
        w->conns = wc->next;
    if (wc->next) wc->next->prev = wc->prev;
    wc->prev = wc->next = NULL;
    w->n_conns--;
    pt__maybe_finish(w);
}

static void pt__on_drain_timeout(uv_timer_t *t)
{
    pt_worker_t *w = t->data;
    pt_log_warn("drain time-out: closing %zu connections, leaving %zu tasks", w->n_conns, w->tasks);
    w->drain_expired = 1;
    /* services waiting on a slow backend answer now */
    if (w->hooks && w->hooks->drain_expired) w->hooks->drain_expired(w);
    for (pt_worker_conn_t *c = w->conns, *next; c; c = next) {
        next = c->next;
        c->ops->close(c);
    }
    pt__maybe_finish(w);
}

void pt_worker_task_begin(pt_worker_t *w)
{
    w->tasks++;
}

void pt_worker_task_end(pt_worker_t *w)
{
    w->tasks--;
    pt__maybe_finish(w);
}

static void pt__on_stop(uv_async_t *a)
{
    pt_worker_t *w = a->data;
    if (w->draining) return;
    w->draining = 1;
    pt__close_listeners(w);
    for (pt_worker_conn_t *c = w->conns, *next; c; c = next) {
        next = c->next;
        c->ops->drain(c);
    }
    if (w->hooks && w->hooks->drain) w->hooks->drain(w);
    uv_timer_start(&w->drain_timer, pt__on_drain_timeout, w->cfg->drain_timeout_ms, 0);
    uv_unref((uv_handle_t *)&w->drain_timer);
    pt__maybe_finish(w);
}

static void pt__run(void *arg)
{
    pt_worker_t *w = arg;
    pt_log_set_worker(w->id);
    pt__self = w;
    w->cfg = w->snap->cfg;
    w->router = w->snap->router;
    int rc = uv_loop_init(&w->loop), loop_ok = rc == 0;
    if (loop_ok) {
        uv_async_init(&w->loop, &w->stop_async, pt__on_stop);
        uv_timer_init(&w->loop, &w->drain_timer);
        uv_timer_init(&w->loop, &w->timer_heap);
        uv_unref((uv_handle_t *)&w->timer_heap); /* connections keep the loop alive, not it */
        w->timer_heap.data = w;
        uv_check_init(&w->loop, &w->flush_check);
        uv_check_start(&w->flush_check, pt__on_check);
        uv_unref((uv_handle_t *)&w->flush_check);
        w->stop_async.data = w->drain_timer.data = w->flush_check.data = w;
        rc = pt_queue_start_loop(&w->msgs, &w->loop, pt__on_msgs, w);
    }
    if (rc != 0) snprintf(w->start_err, sizeof w->start_err, "cannot start a worker loop");
    if (rc == 0 && w->hooks && w->hooks->start &&
        w->hooks->start(w, w->start_err, sizeof w->start_err) != 0)
        rc = -1;
    if (rc == 0 && (rc = pt__listen(w)) != 0)
        snprintf(w->start_err, sizeof w->start_err, "cannot listen on %s:%d: %s",
                 w->cfg->listen_host, w->cfg->listen_port, uv_strerror(rc));
    if (rc == 0 && w->tls_on && (rc = pt__listen_on(w, &w->tls_listener, &w->tls_addr)) != 0)
        snprintf(w->start_err, sizeof w->start_err, "cannot listen on %s:%d (server.tls): %s",
                 w->cfg->tls_listen_host, w->cfg->tls_listen_port, uv_strerror(rc));
    w->start_rc = rc;
    uv_sem_post(w->started);
    if (rc != 0) {
        /* Close what was opened so the loop can be freed. */
        pt_queue_end(&w->msgs);
        if (loop_ok) {
            if (!uv_is_closing((uv_handle_t *)&w->stop_async))
                uv_close((uv_handle_t *)&w->stop_async, NULL);
            uv_close((uv_handle_t *)&w->drain_timer, NULL);
            uv_close((uv_handle_t *)&w->timer_heap, NULL);
            uv_close((uv_handle_t *)&w->flush_check, NULL);
            pt__close_listeners(w);
        }
        pt__drained(w);
    }
    if (loop_ok) {
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_loop_close(&w->loop);
    }
    free(w->timers);
    w->timers = NULL;
    w->n_timers = w->cap_timers = 0;
    pt_queue_end(&w->msgs); /* ended already: later messages wait for the join */
    if (w->hooks && w->hooks->end) w->hooks->end(w);
    pt__self = NULL;    /* late messages run as on the joining thread */
    pt__run_msgs(w, 0); /* frees what arrived too late */
    pt_accesslog_flush(&w->access_buf);
    pt_buf_free(&w->access_buf);
    pt_snapshot_release(w->snap);
    w->snap = NULL;
}

int pt_worker_start(pt_worker_t *w)
{
    if (pt_queue_init(&w->msgs) != 0) return UV_ENOMEM;
    if (pt_metrics_init(&w->metrics) != 0) return UV_ENOMEM;
    return uv_thread_create(&w->thread, pt__run, w);
}

void pt_worker_stop(pt_worker_t *w)
{
    uv_async_send(&w->stop_async);
}

void pt_worker_join(pt_worker_t *w)
{
    uv_thread_join(&w->thread);
    pt__run_msgs(w, 0); /* what other threads posted after the end */
    pt_queue_destroy(&w->msgs);
    pt_metrics_free(&w->metrics);
}
