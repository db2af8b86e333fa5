/* pt_worker: the generic worker, with hooks of its own instead of a
 * gateway's. max_connections is one count for the whole process, whichever
 * worker a connection lands on; a drain waits for connections and tasks,
 * at most drain_timeout; the hooks run on the worker's thread in their
 * order; what is posted after the end still runs, on the joining thread. */
#include "pt_metrics.h"
#include "pt_test.h"
#include "pt_test_config.h"
#include "pt_worker.h"

#include <string.h>

static pt_snapshot_t *snapshot(const char *yaml, uint64_t generation)
{
    char err[512];
    pt_snapshot_t *s = calloc(1, sizeof *s);
    if (pt_test_load(yaml, &s->cfg, err, sizeof err) != 0 ||
        pt_router_new(s->cfg, &s->router, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        pt_config_free(s->cfg);
        free(s);
        return NULL;
    }
    s->generation = generation;
    s->refs = 1;
    return s;
}

/* ---- connections without a thread ---- */

static void no_op(pt_worker_conn_t *wc) {}
static const pt_worker_conn_ops_t no_ops = {no_op, no_op};

PT_CASE(max_connections_count_for_the_whole_process)
{
    pt_snapshot_t *s = snapshot("server:\n  max_connections: 10\n", 1);
    PT_CHECK(s != NULL);
    if (!s) return;
    static pt_worker_t w[2];
    static pt_worker_conn_t c[12];
    memset(w, 0, sizeof w);
    w[0].cfg = w[1].cfg = s->cfg;
    w[0].n_workers = w[1].n_workers = 2;
    /* all ten on one worker: a per-worker share (5) would refuse the sixth */
    for (int i = 0; i < 10; i++)
        PT_CHECK_INT(pt_worker_conn_add(&w[0], &c[i], &no_ops), 0);
    PT_CHECK_INT(w[0].n_conns, 10);
    uint64_t refused = pt_metrics_connections_refused;
    PT_CHECK_INT(pt_worker_conn_add(&w[1], &c[10], &no_ops), -1);
    PT_CHECK_INT(c[10].admitted, 0);
    PT_CHECK_INT(pt_metrics_connections_refused, refused + 1);
    /* a refused connection stays linked until its handles are closed */
    PT_CHECK(w[1].conns == &c[10]);
    PT_CHECK_INT(w[1].n_conns, 1);
    pt_worker_conn_remove(&w[1], &c[10]);
    PT_CHECK(w[1].conns == NULL);
    /* ... and letting it go frees no place: still refused */
    PT_CHECK_INT(pt_worker_conn_add(&w[1], &c[10], &no_ops), -1);
    pt_worker_conn_remove(&w[1], &c[10]);
    /* one closes on worker 0 (from the middle of its list): worker 1 may take one more */
    pt_worker_conn_remove(&w[0], &c[4]);
    PT_CHECK_INT(w[0].n_conns, 9);
    PT_CHECK_INT(pt_worker_conn_add(&w[1], &c[11], &no_ops), 0);
    PT_CHECK_INT(pt_worker_conn_add(&w[1], &c[10], &no_ops), -1);
    pt_worker_conn_remove(&w[1], &c[10]);
    pt_worker_conn_remove(&w[1], &c[11]);
    for (int i = 0; i < 10; i++)
        if (i != 4) pt_worker_conn_remove(&w[0], &c[i]);
    PT_CHECK(w[0].conns == NULL && w[0].n_conns == 0);
    pt_snapshot_release(s);
}

PT_CASE(a_draining_worker_refuses_without_counting)
{
    pt_snapshot_t *s = snapshot("server:\n  max_connections: 10\n", 1);
    if (!s) return;
    pt_worker_t w = {.cfg = s->cfg, .draining = 1};
    pt_worker_conn_t c;
    uint64_t refused = pt_metrics_connections_refused;
    PT_CHECK_INT(pt_worker_conn_add(&w, &c, &no_ops), -1);
    PT_CHECK_INT(pt_metrics_connections_refused, refused);
    PT_CHECK(w.conns == &c);
    w.draining = 0; /* no finish to run: this worker has no loop */
    pt_worker_conn_remove(&w, &c);
    pt_snapshot_release(s);
}

/* ---- a running worker with hooks that record ---- */

typedef struct {
    pt_worker_conn_t wc;
    int drains, closes;
    int remove_on_drain, remove_on_close;
} fake_conn_t;

static char trace[512];
static int start_fails, hooks_off_thread;
static uv_sem_t done_sem, drain_sem;

static void note(pt_worker_t *w, const char *what)
{
    if (pt_worker_self() != w) hooks_off_thread++;
    if (trace[0]) strncat(trace, ",", sizeof trace - strlen(trace) - 1);
    strncat(trace, what, sizeof trace - strlen(trace) - 1);
}

static int h_start(pt_worker_t *w, char *err, size_t errlen)
{
    note(w, "start");
    if (start_fails) {
        snprintf(err, errlen, "no VM today");
        return -1;
    }
    return 0;
}

static void h_snapshot(pt_worker_t *w)
{
    char s[32];
    snprintf(s, sizeof s, "snapshot%llu", (unsigned long long)w->snap->generation);
    note(w, s);
}

static void h_drain(pt_worker_t *w)
{
    note(w, "drain");
    uv_sem_post(&drain_sem);
}

static void h_drain_expired(pt_worker_t *w)
{
    note(w, "expired");
}

static void h_drained(pt_worker_t *w)
{
    note(w, "drained");
}

static void h_end(pt_worker_t *w)
{
    note(w, "end");
}

static const pt_worker_hooks_t hooks = {
    .start = h_start,
    .snapshot = h_snapshot,
    .drain = h_drain,
    .drain_expired = h_drain_expired,
    .drained = h_drained,
    .end = h_end,
};

static void fc_drain(pt_worker_conn_t *wc)
{
    fake_conn_t *c = (fake_conn_t *)wc;
    c->drains++;
    if (c->remove_on_drain) pt_worker_conn_remove(pt_worker_self(), wc);
}

static void fc_close(pt_worker_conn_t *wc)
{
    fake_conn_t *c = (fake_conn_t *)wc;
    pt_worker_t *w = pt_worker_self();
    note(w, "close");
    c->closes++;
    if (c->remove_on_close) pt_worker_conn_remove(w, wc);
}

static const pt_worker_conn_ops_t fc_ops = {fc_drain, fc_close};

static int start_worker(pt_worker_t *w, uv_sem_t *started, pt_snapshot_t *s)
{
    memset(w, 0, sizeof *w);
    w->id = 1;
    w->n_workers = 1;
    w->hooks = &hooks;
    w->snap = pt_snapshot_ref(s);
    w->started = started;
    pt_worker_resolve("127.0.0.1", 0, &w->addr);
    if (pt_worker_start(w) != 0) return -1;
    uv_sem_wait(started);
    return w->start_rc;
}

static void reset(void)
{
    trace[0] = '\0';
    start_fails = hooks_off_thread = 0;
    uv_sem_destroy(&drain_sem);
    uv_sem_init(&drain_sem, 0);
}

static void call_note(pt_worker_t *w, void *arg)
{
    note(w, arg);
}

static void call_add(pt_worker_t *w, void *arg)
{
    note(w, "add");
    PT_CHECK_INT(pt_worker_conn_add(w, &((fake_conn_t *)arg)->wc, &fc_ops), 0);
}

static void call_remove(pt_worker_t *w, void *arg)
{
    note(w, "remove");
    pt_worker_conn_remove(w, &((fake_conn_t *)arg)->wc);
}

static void call_task_begin(pt_worker_t *w, void *arg)
{
    note(w, "task");
    pt_worker_task_begin(w);
}

static void call_task_end(pt_worker_t *w, void *arg)
{
    note(w, "task_end");
    pt_worker_task_end(w);
}

static void call_post_done(pt_worker_t *w, void *arg)
{
    uv_sem_post(&done_sem);
}

/* Waits until the worker ran everything posted so far. */
static void settle(pt_worker_t *w)
{
    pt_worker_call(w, call_post_done, NULL);
    uv_sem_wait(&done_sem);
}

PT_CASE(hooks_run_on_the_worker_in_order)
{
    reset();
    pt_snapshot_t *s = snapshot("server:\n  max_connections: 10\n", 1);
    pt_snapshot_t *s2 = snapshot("server:\n  max_connections: 20\n", 2);
    if (!s || !s2) return;
    static pt_worker_t w;
    uv_sem_t started;
    uv_sem_init(&started, 0);
    PT_CHECK_INT(start_worker(&w, &started, s), 0);
    pt_worker_call(&w, call_note, "call");
    pt_worker_post_snapshot(&w, pt_snapshot_ref(s2));
    settle(&w);
    PT_CHECK_INT(w.cfg->max_connections, 20);
    PT_CHECK_INT(s->refs, 1); /* the worker let the first generation go */
    PT_CHECK(!pt_worker_ended(&w));
    pt_worker_stop(&w);
    pt_worker_join(&w);
    PT_CHECK_STR(trace, "start,call,snapshot2,drain,drained,end");
    PT_CHECK_INT(hooks_off_thread, 0);
    PT_CHECK_INT(s2->refs, 1); /* and the second one at its end */
    uv_sem_destroy(&started);
    pt_snapshot_release(s);
    pt_snapshot_release(s2);
}

PT_CASE(a_drain_waits_for_connections_and_tasks)
{
    reset();
    pt_snapshot_t *s = snapshot("server:\n  drain_timeout: 60s\n", 1);
    if (!s) return;
    static pt_worker_t w;
    static fake_conn_t c;
    memset(&c, 0, sizeof c);
    uv_sem_t started;
    uv_sem_init(&started, 0);
    PT_CHECK_INT(start_worker(&w, &started, s), 0);
    pt_worker_call(&w, call_add, &c);
    pt_worker_call(&w, call_task_begin, NULL);
    settle(&w);
    pt_worker_stop(&w);
    uv_sem_wait(&drain_sem);
    /* messages still run while the drain waits, in order: the connection
     * goes, then the task; only then the drain is over */
    pt_worker_call(&w, call_remove, &c);
    pt_worker_call(&w, call_note, "waiting");
    pt_worker_call(&w, call_task_end, NULL);
    pt_worker_join(&w);
    PT_CHECK_INT(c.drains, 1);
    PT_CHECK_INT(c.closes, 0);
    PT_CHECK_STR(trace, "start,add,task,drain,remove,waiting,task_end,drained,end");
    PT_CHECK_INT(hooks_off_thread, 0);
    uv_sem_destroy(&started);
    pt_snapshot_release(s);
}

PT_CASE(a_drain_time_out_cancels_then_closes)
{
    reset();
    pt_snapshot_t *s = snapshot("server:\n  drain_timeout: 50ms\n", 1);
    if (!s) return;
    static pt_worker_t w;
    static fake_conn_t stuck, quick;
    memset(&stuck, 0, sizeof stuck);
    memset(&quick, 0, sizeof quick);
    stuck.remove_on_close = 1;
    quick.remove_on_drain = 1;
    uv_sem_t started;
    uv_sem_init(&started, 0);
    PT_CHECK_INT(start_worker(&w, &started, s), 0);
    pt_worker_call(&w, call_add, &stuck);
    pt_worker_call(&w, call_add, &quick);
    pt_worker_call(&w, call_task_begin, NULL); /* never ends: the time-out leaves it */
    settle(&w);
    uint64_t t0 = uv_hrtime();
    pt_worker_stop(&w);
    pt_worker_join(&w);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    PT_CHECK(ms >= 40 && ms < 5000);
    PT_CHECK_INT(quick.drains, 1);
    PT_CHECK_INT(quick.closes, 0);
    PT_CHECK_INT(stuck.drains, 1);
    PT_CHECK_INT(stuck.closes, 1);
    PT_CHECK_STR(trace, "start,add,add,task,drain,expired,close,drained,end");
    PT_CHECK_INT(w.tasks, 1);
    uv_sem_destroy(&started);
    pt_snapshot_release(s);
}

static pt_worker_t *late_w;
static int late_runs, late_self;

static void call_late(pt_worker_t *w, void *arg)
{
    late_runs++;
    if (w == late_w && pt_worker_self() == NULL && w->lua == NULL) late_self++;
}

PT_CASE(what_comes_after_the_end_runs_on_the_joining_thread)
{
    reset();
    pt_snapshot_t *s = snapshot("server:\n  max_connections: 10\n", 1);
    pt_snapshot_t *s2 = snapshot("server:\n  max_connections: 20\n", 2);
    if (!s || !s2) return;
    static pt_worker_t w;
    uv_sem_t started;
    uv_sem_init(&started, 0);
    PT_CHECK_INT(start_worker(&w, &started, s), 0);
    late_w = &w;
    late_runs = late_self = 0;
    pt_worker_stop(&w);
    while (!pt_worker_ended(&w))
        uv_sleep(1);
    PT_CHECK_INT(pt_worker_call(&w, call_late, NULL), 0);
    pt_worker_post_snapshot(&w, pt_snapshot_ref(s2));
    pt_worker_join(&w);
    PT_CHECK_INT(late_runs, 1);
    PT_CHECK_INT(late_self, 1);
    PT_CHECK_INT(s2->refs, 1); /* released, not served with */
    PT_CHECK(strstr(trace, "snapshot") == NULL);
    uv_sem_destroy(&started);
    pt_snapshot_release(s);
    pt_snapshot_release(s2);
}

PT_CASE(a_failed_start_still_drains_and_ends)
{
    reset();
    start_fails = 1;
    pt_snapshot_t *s = snapshot("server:\n  max_connections: 10\n", 1);
    if (!s) return;
    static pt_worker_t w;
    uv_sem_t started;
    uv_sem_init(&started, 0);
    PT_CHECK(start_worker(&w, &started, s) != 0);
    PT_CHECK_STR(w.start_err, "no VM today");
    pt_worker_join(&w);
    PT_CHECK_STR(trace, "start,drained,end");
    PT_CHECK_INT(s->refs, 1);
    uv_sem_destroy(&started);
    pt_snapshot_release(s);
}

/* ---- the connections' timer heap, on a worker without its thread ---- */

static int fired[64], n_fired;
static uint64_t fired_due[64];
static pt_worker_t *heap_w;
static pt_worker_timer_t timers[64];

static void on_fire(pt_worker_timer_t *t)
{
    int i = (int)(t - timers);
    fired_due[n_fired] = t->due;
    fired[n_fired++] = i;
    if (i == 7) pt_worker_timer_stop(heap_w, &timers[5]); /* another one, from a callback */
    if (i == 7 && n_fired < 4) pt_worker_timer_start(heap_w, &timers[7], 5); /* itself, once */
}

PT_CASE(the_timer_heap_fires_in_deadline_order)
{
    static pt_worker_t w;
    heap_w = &w;
    uv_loop_init(&w.loop);
    n_fired = 0;
    /* 0..9 at 10*(9-i) ms: they fire 9, 8, ..., 0 (moved and stopped ones aside) */
    for (int i = 0; i < 10; i++) {
        timers[i].cb = on_fire;
        PT_CHECK_INT(pt_worker_timer_start(&w, &timers[i], (uint64_t)(10 * (9 - i))), 0);
    }
    pt_worker_timer_start(&w, &timers[2], 200); /* moved later */
    pt_worker_timer_start(&w, &timers[9], 1);   /* moved a little later: still first */
    pt_worker_timer_stop(&w, &timers[3]);       /* never fires */
    pt_worker_timer_stop(&w, &timers[3]);       /* twice: nothing */
    PT_CHECK_INT((int)w.n_timers, 9);
    /* the heap's timer keeps no loop alive (connections do): here it must */
    uv_ref((uv_handle_t *)&w.timer_heap);
    uv_run(&w.loop, UV_RUN_DEFAULT); /* returns once the heap is empty (its timer stopped) */
    PT_CHECK_INT((int)w.n_timers, 0);
    /* 9 8 7 6 4 1 0 with 7 again between them (3 and 5 stopped), 2 last */
    int seen[10] = {0};
    for (int i = 0; i < n_fired; i++)
        seen[fired[i]]++;
    PT_CHECK_INT(n_fired, 9);
    PT_CHECK_INT(seen[3], 0);
    PT_CHECK_INT(seen[5], 0);
    PT_CHECK_INT(seen[7], 2);
    PT_CHECK_INT(seen[2], 1);
    PT_CHECK_INT(fired[0], 9);
    PT_CHECK_INT(fired[n_fired - 1], 2);
    for (int i = 1; i < n_fired; i++)
        PT_CHECK(fired_due[i - 1] <= fired_due[i]);
    PT_CHECK_INT((int)timers[2].idx, 0);
    uv_close((uv_handle_t *)&w.timer_heap, NULL);
    uv_run(&w.loop, UV_RUN_DEFAULT);
    uv_loop_close(&w.loop);
    free(w.timers);
}

int main(void)
{
    (void)pt_test_fails_with;
    uv_sem_init(&done_sem, 0);
    uv_sem_init(&drain_sem, 0);
    PT_RUN(max_connections_count_for_the_whole_process);
    PT_RUN(the_timer_heap_fires_in_deadline_order);
    PT_RUN(a_draining_worker_refuses_without_counting);
    PT_RUN(hooks_run_on_the_worker_in_order);
    PT_RUN(a_drain_waits_for_connections_and_tasks);
    PT_RUN(a_drain_time_out_cancels_then_closes);
    PT_RUN(what_comes_after_the_end_runs_on_the_joining_thread);
    PT_RUN(a_failed_start_still_drains_and_ends);
    uv_sem_destroy(&done_sem);
    uv_sem_destroy(&drain_sem);
    return PT_TEST_DONE();
}
