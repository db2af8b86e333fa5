/* pt_http, the glue between the parser and a connection, over an in-memory
 * transport (no socket): requests in, responses out. Keep-alive,
 * pipelining, an answer that comes later, error answers and the close that
 * follows them, a body read whole and one streamed to a sink, and the
 * hand-over to a new owner with the bytes read past the request. */
#include "pt_http.h"
#include "pt_metrics.h"
#include "pt_test.h"
#include "pt_test_config.h"
#include "pt_transport.h"
#include "pt_worker.h"

#include <string.h>

/* ---- the in-memory transport ---- */

typedef struct {
    pt_transport_t base;
    pt_buf_t out; /* every byte written, queued ones as they were queued */
    int reading;
    int full; /* try_write takes nothing: every write queues */
    int shut, closed;
    pt_transport_write_t *queued[64];
    size_t n_queued;
    int shutdown_due, close_due;
} mem_t;

static int mem_read_start(pt_transport_t *t)
{
    ((mem_t *)t)->reading = 1;
    return 0;
}

static void mem_read_stop(pt_transport_t *t)
{
    ((mem_t *)t)->reading = 0;
}

static int mem_try_write(pt_transport_t *t, const uv_buf_t *bufs, unsigned n)
{
    mem_t *m = (mem_t *)t;
    size_t total = 0;
    if (m->full || m->n_queued) return UV_EAGAIN;
    for (unsigned i = 0; i < n; i++) {
        pt_buf_append(&m->out, bufs[i].base, bufs[i].len);
        total += bufs[i].len;
    }
    return (int)total;
}

static int mem_write(pt_transport_t *t, pt_transport_write_t *req, const uv_buf_t *bufs, unsigned n,
                     pt_transport_write_cb cb)
{
    mem_t *m = (mem_t *)t;
    req->t = t;
    req->cb = cb;
    for (unsigned i = 0; i < n; i++)
        pt_buf_append(&m->out, bufs[i].base, bufs[i].len);
    m->queued[m->n_queued++] = req;
    return 0;
}

static int mem_shutdown(pt_transport_t *t, pt_transport_cb cb)
{
    mem_t *m = (mem_t *)t;
    t->on_shutdown = cb;
    m->shut = 1;
    m->shutdown_due = 1;
    return 0;
}

static void mem_close(pt_transport_t *t, pt_transport_cb cb)
{
    mem_t *m = (mem_t *)t;
    t->on_close = cb;
    m->closed = 1;
    m->close_due = 1;
}

static int mem_peer(pt_transport_t *t, struct sockaddr_storage *ss)
{
    (void)t;
    return uv_ip4_addr("192.0.2.7", 4711, (struct sockaddr_in *)ss);
}

static const pt_transport_ops_t mem_ops = {
    .read_start = mem_read_start,
    .read_stop = mem_read_stop,
    .try_write = mem_try_write,
    .write = mem_write,
    .shutdown = mem_shutdown,
    .close = mem_close,
    .peer = mem_peer,
};

static pt_worker_t w;
static mem_t mem;

/* The client sends text (NULL: its end of the input). */
static void mem_send(const char *text)
{
    if (!text) {
        mem.base.on_read(&mem.base, UV_EOF, NULL);
        return;
    }
    size_t len = strlen(text);
    memcpy(w.read_buf, text, len);
    mem.base.on_read(&mem.base, (ssize_t)len, w.read_buf);
}

/* The connection breaks (a reset). */
static void mem_reset(void)
{
    mem.base.on_read(&mem.base, UV_ECONNRESET, NULL);
}

/* The loop goes round: queued writes complete, then the shutdown, then the
 * close (as libuv orders them). */
static void mem_run(void)
{
    while (mem.n_queued) {
        pt_transport_write_t *req = mem.queued[0];
        memmove(mem.queued, mem.queued + 1, --mem.n_queued * sizeof mem.queued[0]);
        req->cb(req, 0);
    }
    if (mem.shutdown_due) {
        mem.shutdown_due = 0;
        mem.base.on_shutdown(&mem.base, 0);
    }
    uv_run(&w.loop, UV_RUN_NOWAIT); /* the timer's close */
    if (mem.close_due) {
        mem.close_due = 0;
        mem.base.on_close(&mem.base, 0);
    }
    uv_run(&w.loop, UV_RUN_NOWAIT);
}

/* How often needle is in what was written. */
static int written(const char *needle)
{
    int n = 0;
    const char *p = mem.out.data, *end = mem.out.data + mem.out.len;
    size_t len = strlen(needle);
    while (p && (size_t)(end - p) >= len) {
        const char *hit = memmem(p, (size_t)(end - p), needle, len);
        if (!hit) break;
        n++;
        p = hit + len;
    }
    return n;
}

/* ---- a handler that records what it is given ---- */

static int stream;     /* the head hook's answer */
static int hold;       /* requests are answered later (answer_held) */
static int handed;     /* requests are handed over to the owner below */
static int requests;   /* requests handled */
static char seen[512]; /* "METHOD path?query body|" of each */
static pt_conn_t *held;

static int on_head(pt_conn_t *c)
{
    (void)c;
    return stream;
}

static char owner_got[256];
static int owner_aborted, owner_closed, owner_drained;

static void owner_data(void *owner, const char *data, size_t len)
{
    (void)owner;
    strncat(owner_got, data, len);
}

static void owner_abort(void *owner)
{
    (void)owner;
    owner_aborted++;
}

static void owner_closed_cb(void *owner)
{
    (void)owner;
    owner_closed++;
}

static void owner_drain(void *owner)
{
    owner_drained++;
    pt_http_shutdown(owner);
}

static const pt_http_owner_ops_t owner_ops = {
    .data = owner_data, .abort = owner_abort, .closed = owner_closed_cb, .drain = owner_drain};

static char sunk[256];
static int sink_ended, sink_aborted;

static int sink_body(void *ud, const char *data, size_t len)
{
    (void)ud;
    strncat(sunk, data, len);
    return 0;
}

static void sink_end(void *ud)
{
    (void)ud;
    sink_ended++;
}

/* The streamed exchange's answer, as a proxy writes it. */
static void stream_answer(pt_conn_t *c)
{
    static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsunk";
    uv_buf_t b = uv_buf_init((char *)answer, sizeof answer - 1);
    pt_http_write(c, &b, 1);
    pt_http_detach(c);
    pt_http_response_end(c, 200, 4);
}

static void sink_abort(void *ud)
{
    (void)ud;
    sink_aborted++;
}

static const pt_http_sink_ops_t sink_ops = {
    .body = sink_body, .end = sink_end, .abort = sink_abort};

static void answer(pt_conn_t *c)
{
    const char *path, *query;
    size_t path_len, query_len;
    pt_http_target(c, &path, &path_len, &query, &query_len);
    pt_http_respond(c, 200, "text/plain", 10, "X-Seen: yes\r\n", 13, path, path_len, 0, NULL);
}

static void on_request(pt_conn_t *c)
{
    const char *path, *query, *body;
    size_t path_len, query_len, body_len;
    requests++;
    pt_http_target(c, &path, &path_len, &query, &query_len);
    body = pt_http_body(c, &body_len);
    size_t n = strlen(seen);
    snprintf(seen + n, sizeof seen - n, "%s %.*s?%.*s %.*s|",
             llhttp_method_name((llhttp_method_t)pt_http_method(c)), (int)path_len, path,
             (int)query_len, query, (int)body_len, body);
    if (stream) {
        held = c;
        pt_http_stream(c, &sink_ops, c);
        pt_http_release(c);
    } else if (handed) {
        static const char sw[] = "HTTP/1.1 101 Switching Protocols\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)sw, sizeof sw - 1);
        pt_http_write(c, &b, 1);
        pt_http_hand_over(c, &owner_ops, c);
    } else if (hold) {
        pt_http_hold(c);
        held = c;
    } else {
        answer(c);
    }
}

static const pt_http_handler_t handler = {.head = on_head, .request = on_request};

static pt_config_t *cfg;

/* A new connection over a fresh transport, with every record cleared. */
static pt_conn_t *start(void)
{
    pt_buf_free(&mem.out);
    memset(&mem, 0, sizeof mem);
    mem.base.ops = &mem_ops;
    mem.base.read_buf = w.read_buf;
    mem.base.read_size = sizeof w.read_buf;
    stream = hold = handed = requests = 0;
    seen[0] = owner_got[0] = sunk[0] = '\0';
    owner_aborted = owner_closed = owner_drained = sink_ended = sink_aborted = 0;
    held = NULL;
    return pt_http_start(&w, &mem.base, &handler);
}

/* ---- cases ---- */

PT_CASE(keep_alive)
{
    pt_conn_t *c = start();
    PT_CHECK(c != NULL);
    PT_CHECK_INT(mem.reading, 1);
    PT_CHECK_INT(w.n_conns, 1);
    mem_send("GET /a?x=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    PT_CHECK_INT(requests, 1);
    PT_CHECK_INT(written("HTTP/1.1 200 OK\r\n"), 1);
    PT_CHECK_INT(written("Content-Length: 2\r\n"), 1);
    PT_CHECK_INT(written("Content-Type: text/plain\r\nX-Seen: yes\r\n\r\n/a"), 1);
    PT_CHECK_INT(written("X-Correlation-Id: "), 1);
    PT_CHECK_INT(written("Connection: close"), 0);
    /* the same connection takes the next request */
    mem_send("POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    PT_CHECK_INT(requests, 2);
    PT_CHECK_STR(seen, "GET /a?x=1 |POST /b? abc|");
    PT_CHECK_INT(written("HTTP/1.1 200 OK\r\n"), 2);
    PT_CHECK_INT(mem.shut + mem.closed, 0);
    PT_CHECK_STR(pt_http_peer(c), "192.0.2.7");
    mem_send(NULL); /* the client goes */
    PT_CHECK_INT(mem.closed, 1);
    mem_run();
    PT_CHECK_INT(w.n_conns, 0);
}

PT_CASE(pipelined_requests_answered_in_order)
{
    start();
    mem_send("GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n"
             "GET /3 HTTP/1.1\r\nHost: t\r\n\r\n");
    PT_CHECK_INT(requests, 3);
    const char *a = memmem(mem.out.data, mem.out.len, "\r\n\r\n/1", 6);
    const char *b = memmem(mem.out.data, mem.out.len, "\r\n\r\n/2", 6);
    const char *d = memmem(mem.out.data, mem.out.len, "\r\n\r\n/3", 6);
    PT_CHECK(a && b && d && a < b && b < d);
    mem_send(NULL);
    mem_run();
    PT_CHECK_INT(w.n_conns, 0);
}

PT_CASE(an_answer_that_comes_later_holds_the_next_request)
{
    start();
    hold = 1;
    mem_send("GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n");
    PT_CHECK_INT(requests, 1); /* the second waits for the first's answer */
    PT_CHECK_INT(mem.out.len, 0);
    pt_conn_t *c = held;
    hold = 0;
    PT_CHECK_INT(pt_http_unhold(c), 1);
    answer(c);
    PT_CHECK_INT(requests, 2);
    PT_CHECK_INT(written("HTTP/1.1 200 OK\r\n"), 2);
    /* a connection that closes while its answer is awaited is freed by the
     * callback, not before */
    hold = 1;
    mem_send("GET /3 HTTP/1.1\r\nHost: t\r\n\r\n");
    PT_CHECK(held == c);
    mem_reset();
    mem_run();
    PT_CHECK_INT(w.n_conns, 0);
    PT_CHECK_INT(pt_http_unhold(c), 0); /* freed here */
}

PT_CASE(an_answer_that_waits_for_the_peer)
{
    start();
    mem.full = 1;
    mem_send("GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /next HTTP/1.1\r\nHost: t\r\n\r\n");
    PT_CHECK_INT(requests, 1);
    PT_CHECK_INT(mem.n_queued, 1);
    mem.full = 0;
    mem_run(); /* written: the next request goes on */
    PT_CHECK_INT(requests, 2);
    PT_CHECK_INT(written("HTTP/1.1 200 OK\r\n"), 2);
    mem_send(NULL);
    mem_run();
}

PT_CASE(a_malformed_request_gets_400_then_a_close)
{
    start();
    mem_send("GARBAGE\r\n\r\n");
    PT_CHECK_INT(requests, 0);
    PT_CHECK_INT(written("HTTP/1.1 400 Bad Request\r\n"), 1);
    PT_CHECK_INT(written("Connection: close\r\n"), 1);
    PT_CHECK_INT(written("{\"error\":{\"status\":400,\"message\":\"malformed HTTP request"), 1);
    PT_CHECK_INT(mem.shut, 1);
    mem_run(); /* shut: the connection lingers, reading what still comes */
    PT_CHECK_INT(mem.closed, 0);
    PT_CHECK_INT(mem.reading, 1);
    mem_send("more");
    PT_CHECK_INT(written("HTTP/1.1"), 1);
    mem_send(NULL);
    PT_CHECK_INT(mem.closed, 1);
    mem_run();
    PT_CHECK_INT(w.n_conns, 0);
}

PT_CASE(error_answers_keep_their_status)
{
    start();
    mem_send("GET / HTTP/2.0\r\nHost: t\r\n\r\n");
    PT_CHECK_INT(written("HTTP/1.1 505 HTTP Version Not Supported\r\n"), 1);
    mem_run();
    mem_send(NULL);
    mem_run();
    start();
    mem_send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 999999999999\r\n\r\n");
    PT_CHECK_INT(written(" 413 "), 1);
    PT_CHECK_INT(requests, 0);
    mem_run();
    mem_send(NULL);
    mem_run();
    start();
    /* HTTP/1.0 without keep-alive: answered, then closed */
    mem_send("GET /old HTTP/1.0\r\n\r\n");
    PT_CHECK_INT(written("HTTP/1.0 200 OK\r\n"), 1);
    PT_CHECK_INT(written("Connection: close\r\n"), 1);
    PT_CHECK_INT(mem.shut, 1);
    mem_run();
    mem_send(NULL);
    mem_run();
    PT_CHECK_INT(w.n_conns, 0);
}

PT_CASE(a_streamed_body_goes_to_the_sink)
{
    start();
    stream = 1;
    mem_send("POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    PT_CHECK_INT(requests, 1); /* handed over at its head */
    PT_CHECK_STR(sunk, "abc");
    mem_send("2\r\nde\r\n0\r\n\r\n");
    PT_CHECK_STR(sunk, "abcde");
    PT_CHECK_INT(sink_ended, 1);
    stream_answer(held);
    PT_CHECK_INT(written("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsunk"), 1);
    PT_CHECK_INT(sink_aborted, 0);
    /* the connection goes on: a second streamed request, cut by a close */
    mem_send("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12");
    PT_CHECK_STR(sunk, "abcde12");
    mem_send(NULL);
    PT_CHECK_INT(sink_aborted, 1);
    mem_run();
    PT_CHECK_INT(w.n_conns, 0);
}

PT_CASE(hand_over_gives_the_owner_every_byte)
{
    PT_CHECK(start() != NULL);
    handed = 1;
    mem_send("GET /ws HTTP/1.1\r\nHost: t\r\n\r\nfirst");
    PT_CHECK_INT(requests, 1);
    PT_CHECK_INT(written("HTTP/1.1 101 Switching Protocols\r\n\r\n"), 1);
    PT_CHECK_STR(owner_got, "first"); /* read with the request: it comes first */
    mem_send(" second");
    PT_CHECK_STR(owner_got, "first second");
    PT_CHECK_INT(requests, 1); /* HTTP parses nothing any more */
    /* a draining worker asks the owner */
    w.conns->ops->drain(w.conns);
    PT_CHECK_INT(owner_drained, 1);
    PT_CHECK_INT(mem.shut, 1);
    mem_run();
    PT_CHECK_INT(mem.closed, 1);
    PT_CHECK_INT(owner_aborted, 1);
    mem_run();
    PT_CHECK_INT(owner_closed, 1);
    PT_CHECK_INT(w.n_conns, 0);
}

PT_CASE(a_drained_worker_closes_an_idle_connection)
{
    start();
    mem_send("GET /a HTTP/1.1\r\nHost: t\r\n\r\n");
    w.conns->ops->drain(w.conns);
    PT_CHECK_INT(mem.closed, 1);
    mem_run();
    PT_CHECK_INT(w.n_conns, 0);
    /* and one in the middle of a request after its answer */
    start();
    hold = 1;
    mem_send("GET /a HTTP/1.1\r\nHost: t\r\n\r\n");
    w.conns->ops->drain(w.conns);
    PT_CHECK_INT(mem.closed, 0);
    pt_http_unhold(held);
    answer(held);
    PT_CHECK_INT(written("Connection: close\r\n"), 1);
    PT_CHECK_INT(mem.shut, 1);
    mem_run();
    mem_send(NULL);
    mem_run();
    PT_CHECK_INT(w.n_conns, 0);
}

int main(void)
{
    char err[512];
    (void)pt_test_fails_with;
    PT_CHECK_INT(pt_test_load("server:\n  max_connections: 10\n", &cfg, err, sizeof err), 0);
    if (!cfg) return PT_TEST_DONE();
    w.cfg = cfg;
    uv_loop_init(&w.loop);
    pt_metrics_init(&w.metrics);
    PT_RUN(keep_alive);
    PT_RUN(pipelined_requests_answered_in_order);
    PT_RUN(an_answer_that_comes_later_holds_the_next_request);
    PT_RUN(an_answer_that_waits_for_the_peer);
    PT_RUN(a_malformed_request_gets_400_then_a_close);
    PT_RUN(error_answers_keep_their_status);
    PT_RUN(a_streamed_body_goes_to_the_sink);
    PT_RUN(hand_over_gives_the_owner_every_byte);
    PT_RUN(a_drained_worker_closes_an_idle_connection);
    pt_buf_free(&mem.out);
    pt_http_worker_end(&w);
    uv_loop_close(&w.loop);
    pt_metrics_free(&w.metrics);
    pt_config_free(cfg);
    return PT_TEST_DONE();
}
