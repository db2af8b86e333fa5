#include "pt_ws.h"
#include "pt_http.h"
#include "pt_json.h"
#include "pt_log.h"
#include "pt_lua.h"
#include "pt_worker.h"

#include <jansson.h>
#include <lauxlib.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <wslay/wslay.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdlib.h>
#include <string.h>

#define PT__WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
/* Service calls in flight on one socket before its frames wait for answers:
 * a client that never reads cannot pile up coroutines either. */
#define PT__WS_MAX_IN_FLIGHT 1024
/* A socket that held this much gives the heap back to the system when it
 * goes (pt__trim), at most once per PT__WS_TRIM_EVERY_MS in the process. */
#define PT__WS_TRIM_MIN (256 * 1024)
#define PT__WS_TRIM_EVERY_MS 1000
/* wslay keeps each fragment of a message in allocations of its own (about
 * 100 bytes besides the payload): a message cut into 1-byte fragments would
 * cost some 100 times its size. So a message has at most one fragment per
 * this many bytes of max_message (and one more): it never costs more than
 * twice the limit. */
#define PT__WS_FRAGMENT_COST 128
/* The longest string request_id an envelope may carry (it is echoed in the
 * reply). */
#define PT__WS_MAX_REQUEST_ID 256
/* What wslay holds for one queued message besides its payload (its
 * struct, the allocation, the frame header to come). */
#define PT__WS_QUEUED_COST 64
/* ws->out keeps its memory between frames up to this much. */
#define PT__WS_OUT_KEEP (64 * 1024)

/* Where a socket's frames go and its messages come from: the client's TCP
 * connection, or a probe (pt_ws_probe_new: the fuzzer). The frame handling
 * between them is the same code. */
typedef struct {
    /* hands ws->out (whole frames) on and empties it; 0, or -1: write failed */
    int (*flush)(pt_ws_t *ws);
    /* a complete text message (valid UTF-8: wslay checked it) */
    void (*text)(pt_ws_t *ws, const char *text, size_t len);
    /* no more frames either way: abort 0 once what is queued is out, 1 now */
    void (*end)(pt_ws_t *ws, int abort);
} pt__ws_io_t;

struct pt_ws_s {
    const pt__ws_io_t *io;
    pt_conn_t *c; /* NULL once the connection is gone (always for a probe) */
    pt_worker_t *w;
    /* wslay's context (some 4.5 KB with its frame buffer) exists only while
     * frames are in progress: made for the first byte either way, freed
     * once no frame is half read, no message half received and nothing is
     * queued (pt__ctx_idle). An idle socket holds none of it (issue 22). */
    wslay_event_context_ptr ctx;
    uint64_t in_given;  /* bytes handed to this ctx (pt__recv_cb) */
    uint64_t in_framed; /* bytes of the frames it read whole */
    uint64_t frame_len; /* header and payload of the frame being read */
    int frame_open;     /* a frame's header is read, its payload not all */
    int msg_open;       /* a fragmented message is being read */
    pt_buf_t in;        /* bytes read, wslay takes them from in_off */
    size_t in_off;
    pt_buf_t out;      /* frames wslay wrote since the last flush */
    size_t out_bytes;  /* handed to uv_write and not written yet */
    size_t max_output; /* queued output past this: frames wait (ws_max_output) */
    uint64_t send_timeout_ms;
    size_t peak;  /* the most output this socket queued */
    int out_over; /* output passed max_output and is not down to half of it */
    int paused;   /* recv_cb holds the frames in `in` (output or calls) */
    int ended;    /* closing: wslay is not driven any more */
    int in_recv;  /* inside wslay_event_recv, which must not nest */
    int refused;  /* a message was refused: what wslay still hands on is dropped */
    uint64_t max_message;
    uint64_t msg_cost; /* PT__WS_FRAGMENT_COST per fragment of the message being read */
    uv_timer_t ping_timer;
    uv_timer_t send_timer; /* output over the bound, or lingering, for too long */
    int timers_open;
    int missed;
    uint64_t last_message_ms;
    uint64_t detached_ms; /* a deferred trim covers what was freed before this */
    int in_flight;        /* service calls not answered yet */
    char *channel;        /* the channel's name (allocated) */
    char *username;       /* the authenticated user, "" when none (allocated) */
    /* the handshake's headers (self.request.http.headers of every message):
     * one block, the array then the bytes; bounded by the head's limits */
    pt_lua_header_t *headers;
    size_t n_headers;
    pt_ws_t *prev, *next; /* the worker's sockets */
    pt_ws_t *dirty_next;  /* pushes appended to out, written at the loop's check */
    int dirty;
    pt_ws_t *user_prev, *user_next; /* the bucket of (channel, username) (pt__by_user) */
    uint32_t user_hash;
    pt_ws_probe_t probe; /* a probe's callbacks */
};

typedef struct {
    pt_ws_t *ws;
    json_t *request_id; /* NULL: a plain message, the reply is the bare payload */
    char cid[65];       /* for an error reply made here */
} pt__ws_call_t;

static void pt__pump(pt_ws_t *ws);
static int pt__ctx_get(pt_ws_t *ws);
static void pt__ctx_idle(pt_ws_t *ws);

static void pt__ws_free(pt_ws_t *ws)
{
    free(ws->headers);
    free(ws->channel);
    free(ws->username);
    free(ws);
}
static void pt__recv(pt_ws_t *ws);
static void pt__on_send_timer(uv_timer_t *t);
static const pt_http_owner_ops_t pt__owner_ops;

/* ---- the worker's list of sockets ---- */

static pt_ws_t **pt__list(pt_worker_t *w)
{
    return (pt_ws_t **)&w->ws_list;
}

/* The worker's sockets by (channel, username), so that a push to one user
 * visits that user's sockets (and a bucket's few others), not all of them.
 * Each worker is one thread: the table is the thread's. */
#define PT__WS_USER_BUCKETS 4096
static __thread pt_ws_t *pt__by_user[PT__WS_USER_BUCKETS];

static uint32_t pt__user_hash(const char *channel, const char *username)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = channel; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    h = (h ^ 0xff) * 16777619u; /* a separator no name holds */
    for (const char *p = username; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h;
}

static void pt__index(pt_ws_t *ws)
{
    ws->user_hash = pt__user_hash(ws->channel, ws->username);
    pt_ws_t **head = &pt__by_user[ws->user_hash % PT__WS_USER_BUCKETS];
    ws->user_prev = NULL;
    ws->user_next = *head;
    if (*head) (*head)->user_prev = ws;
    *head = ws;
}

static void pt__unindex(pt_ws_t *ws)
{
    if (ws->user_prev)
        ws->user_prev->user_next = ws->user_next;
    else
        pt__by_user[ws->user_hash % PT__WS_USER_BUCKETS] = ws->user_next;
    if (ws->user_next) ws->user_next->user_prev = ws->user_prev;
    ws->user_prev = ws->user_next = NULL;
}

static void pt__link(pt_ws_t *ws)
{
    pt__index(ws);
    pt_ws_t **head = pt__list(ws->w);
    ws->next = *head;
    if (*head) (*head)->prev = ws;
    *head = ws;
    pt_metrics_add(&ws->w->metrics.websockets_open, 1);
}

static void pt__unlink(pt_ws_t *ws)
{
    pt__unindex(ws);
    if (ws->prev)
        ws->prev->next = ws->next;
    else
        *pt__list(ws->w) = ws->next;
    if (ws->next) ws->next->prev = ws->prev;
    ws->prev = ws->next = NULL;
    pt_metrics_add(&ws->w->metrics.websockets_open, -1);
}

/* ---- pushes, batched per loop iteration ---- */

/* Sockets whose ws->out got pushed frames in this loop iteration; each
 * worker is one thread, so the list is the thread's. pt_ws_flush_pushes
 * writes them once per iteration: N pushes cost a socket one write. */
static __thread pt_ws_t *pt__dirty;
/* Bytes appended to the dirty sockets' output since the last flush. */
static __thread size_t pt__batched;
#define PT__WS_PUSH_BATCH_MAX (32u * 1024 * 1024)

static void pt__undirty(pt_ws_t *ws)
{
    if (!ws->dirty) return;
    for (pt_ws_t **at = &pt__dirty; *at; at = &(*at)->dirty_next)
        if (*at == ws) {
            *at = ws->dirty_next;
            break;
        }
    ws->dirty = 0;
    ws->dirty_next = NULL;
}

/* ---- giving memory back ---- */

/* glibc keeps freed memory for reuse: the main heap shrinks only from its
 * top, and the arenas of worker threads keep every page between chunks still
 * in use. After a socket that queued megabytes (a flood, a big push) that
 * memory would stay resident for good; malloc_trim(0) walks every arena and
 * returns the free pages. It locks each arena while it walks it, so it runs
 * at most once a second in the process. */
static uint64_t pt__last_trim_ms;

static uint64_t pt__now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* Trims unless that was done less than PT__WS_TRIM_EVERY_MS ago (force: in
 * any case). Returns 1 when it trimmed. */
static int pt__trim(int force)
{
#ifdef __GLIBC__
    uint64_t now = pt__now_ms();
    uint64_t last = __atomic_load_n(&pt__last_trim_ms, __ATOMIC_RELAXED);
    if (!force && last && now - last < PT__WS_TRIM_EVERY_MS) return 0;
    if (!__atomic_compare_exchange_n(&pt__last_trim_ms, &last, now, 0, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED))
        return 0; /* another thread trims right now */
    malloc_trim(0);
    return 1;
#else
    return 1;
#endif
}

/* ---- output and its bound ---- */

/* Bytes waiting to reach the peer: in wslay's queue, in ws->out, in libuv.
 * wslay counts a queued message by its payload only, so the pong of an
 * empty ping counted nothing: each message also counts what wslay holds for
 * it (PT__WS_QUEUED_COST), and a ping flood reaches the bound too. */
static size_t pt__queued(pt_ws_t *ws)
{
    size_t q = ws->out.len + ws->out_bytes;
    if (ws->ctx)
        q += wslay_event_get_queued_msg_length(ws->ctx) +
             wslay_event_get_queued_msg_count(ws->ctx) * PT__WS_QUEUED_COST;
    return q;
}

static void pt__on_send_timer(uv_timer_t *t);

/* Output grew: past max_output the socket's frames wait (recv_cb) and
 * send_timeout starts to run. */
static void pt__output_grew(pt_ws_t *ws)
{
    size_t q = pt__queued(ws);
    if (q > ws->peak) ws->peak = q;
    if (ws->out_over || q <= ws->max_output) return;
    ws->out_over = 1;
    if (ws->timers_open && !ws->ended)
        uv_timer_start(&ws->send_timer, pt__on_send_timer, ws->send_timeout_ms, 0);
}

/* Frames that waited are read again once the output is down to half the
 * bound (not at once below it: that would stop and start reads per frame)
 * and the calls in flight are under their limit. */
static void pt__resume(pt_ws_t *ws)
{
    if (!ws->paused || ws->out_over || ws->in_flight >= PT__WS_MAX_IN_FLIGHT || ws->ended ||
        ws->in_recv)
        return;
    ws->paused = 0;
    pt__recv(ws);
    if (!ws->paused && !ws->ended && ws->c) pt_http_reading(ws->c, 1);
}

/* Output shrank (written to the socket). */
static void pt__output_drained(pt_ws_t *ws)
{
    if (!ws->out_over || pt__queued(ws) > ws->max_output / 2) return;
    ws->out_over = 0;
    if (ws->timers_open && !ws->ended) uv_timer_stop(&ws->send_timer);
    pt__resume(ws);
}

/* A write to the client completed (pt_http's owner op). */
static void pt__sock_drained(void *owner)
{
    pt_ws_t *ws = owner;
    if (!ws->c || pt_http_closing(ws->c)) return;
    ws->out_bytes = pt_http_out_queued(ws->c);
    if (ws->ended && ws->out_bytes == 0 && ws->timers_open) uv_timer_stop(&ws->send_timer);
    pt__output_drained(ws);
}

/* Writes ws->out to the socket: at once when nothing waits before it, the
 * rest (or all) queued by pt_http_write. */
static int pt__sock_flush(pt_ws_t *ws)
{
    pt_conn_t *c = ws->c;
    if (ws->out.len == 0) return 0;
    if (!c || pt_http_closing(c)) return -1;
    uv_buf_t b = uv_buf_init(ws->out.data, (unsigned)ws->out.len);
    if (pt_http_write(c, &b, 1) != 0) return -1; /* c is closing */
    ws->out.len = 0;
    if (ws->out.cap > PT__WS_OUT_KEEP) pt_buf_free(&ws->out);
    ws->out_bytes = pt_http_out_queued(c);
    return 0;
}

static void pt__sock_end(pt_ws_t *ws, int abort)
{
    pt_conn_t *c = ws->c;
    if (!c || pt_http_closing(c)) return;
    uv_timer_stop(&ws->ping_timer);
    if (abort) {
        pt_http_close(c);
        return;
    }
    /* What is still queued gets send_timeout to go out, then the socket is
     * closed anyway: a peer that sent its close and reads no more must not
     * hold the connection. Its further bytes are read and dropped. */
    if (ws->out_bytes)
        uv_timer_start(&ws->send_timer, pt__on_send_timer, ws->send_timeout_ms, 0);
    else
        uv_timer_stop(&ws->send_timer);
    pt_http_shutdown(c);
}

/* No more frames either way (see pt__ws_io_t.end). */
static void pt__end(pt_ws_t *ws, int abort)
{
    if (ws->ended) return;
    ws->ended = 1;
    if (ws->io->flush(ws) != 0) abort = 1;
    ws->io->end(ws, abort);
}

static ssize_t pt__frame_send_cb(const uint8_t *data, size_t len, int flags, void *ud)
{
    pt_ws_t *ws = ud;
    return pt_buf_append(&ws->out, data, len) == 0 ? (ssize_t)len : -1;
}

/* Appends a close frame with code to ws->out through wslay's frame layer,
 * for the closes wslay's event layer cannot send: it is never driven again
 * after this. Every frame before it in ws->out is whole (pt__send_cb takes
 * all it is given), so this one starts on a frame boundary. */
static void pt__write_close(pt_ws_t *ws, uint16_t code)
{
    struct wslay_frame_callbacks cb = {.send_callback = pt__frame_send_cb};
    wslay_frame_context_ptr f;
    uint8_t payload[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    if (wslay_frame_context_init(&f, &cb, ws) != 0) return;
    struct wslay_frame_iocb io = {.fin = 1,
                                  .opcode = WSLAY_CONNECTION_CLOSE,
                                  .payload_length = 2,
                                  .data = payload,
                                  .data_length = 2};
    wslay_frame_send(f, &io);
    wslay_frame_context_free(f);
}

/* A protocol error wslay could only answer with a close without a code. */
static void pt__fail(pt_ws_t *ws, uint16_t code)
{
    if (ws->ended) return;
    /* a close of ours already went (1003 for a binary message, say): the
     * peer's garbage after it gets no second one */
    if (!ws->ctx || !wslay_event_get_close_sent(ws->ctx)) pt__write_close(ws, code);
    pt__end(ws, 0);
}

/* The peer takes no output: the close frame goes behind what is queued
 * (only a peer that catches up at once sees it) and the socket closes now,
 * which frees the backlog. */
static void pt__drop(pt_ws_t *ws, const char *why)
{
    if (ws->ended) return;
    pt_log_info("websocket on %s: %s, closing with 1008", ws->channel, why);
    if (ws->w) pt_metrics_add(&ws->w->metrics.ws_slow_consumers, 1);
    if (!ws->ctx || !wslay_event_get_close_sent(ws->ctx))
        pt__write_close(ws, WSLAY_CODE_POLICY_VIOLATION);
    pt__end(ws, 1);
}

static void pt__on_send_timer(uv_timer_t *t)
{
    pt_ws_t *ws = t->data;
    if (!ws->c || pt_http_closing(ws->c)) return;
    if (ws->ended) {
        pt_http_close(ws->c); /* lingered with output the peer did not take */
        return;
    }
    char why[96];
    snprintf(why, sizeof why, "output over max_output for %llu ms",
             (unsigned long long)ws->send_timeout_ms);
    pt__drop(ws, why);
}

/* Sends what wslay has queued; ends the socket once both sides are done
 * (close frames exchanged) or wslay failed. */
static void pt__pump(pt_ws_t *ws)
{
    if (ws->ended || (ws->c && pt_http_closing(ws->c))) return;
    if ((ws->ctx && wslay_event_send(ws->ctx) != 0) || ws->io->flush(ws) != 0) {
        pt__end(ws, 1);
        return;
    }
    pt__output_grew(ws);
    if (ws->ctx && !wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx) &&
        !ws->in_flight) {
        pt__end(ws, 0);
        return;
    }
    pt__ctx_idle(ws);
}

static void pt__close(pt_ws_t *ws, uint16_t code, const char *reason)
{
    if (ws->ended) return;
    if (pt__ctx_get(ws) != 0) {
        pt__end(ws, 1);
        return;
    }
    wslay_event_queue_close(ws->ctx, code, (const uint8_t *)reason, strlen(reason));
    pt__pump(ws);
}

static void pt__send_text(pt_ws_t *ws, const char *text, size_t len)
{
    struct wslay_event_msg msg = {WSLAY_TEXT_FRAME, (const uint8_t *)text, len};
    if (ws->ended) return;
    if (pt__ctx_get(ws) != 0) {
        pt__end(ws, 1);
        return;
    }
    if (wslay_event_queue_msg(ws->ctx, &msg) == 0) pt__pump(ws);
}

/* ---- wslay callbacks ---- */

/* Hands wslay the bytes read, unless the output is over its bound or too
 * many calls wait: then the frames stay in ws->in (wslay takes the "would
 * block" as the end of the input) and reading stops until pt__resume. */
static ssize_t pt__recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                           void *ud)
{
    pt_ws_t *ws = ud;
    size_t have = ws->in.len - ws->in_off;
    pt__output_grew(ws); /* pongs wslay queued for the frames read so far count too */
    if (have && (ws->out_over || ws->in_flight >= PT__WS_MAX_IN_FLIGHT)) ws->paused = 1;
    if (have == 0 || ws->paused || ws->ended) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (len > have) len = have;
    memcpy(buf, ws->in.data + ws->in_off, len);
    ws->in_off += len;
    ws->in_given += len;
    return (ssize_t)len;
}

/* Takes every byte: frames are never left half sent inside wslay, so its
 * queue is empty after each pump and the output lives in ws->out and libuv,
 * where pt__queued counts it. */
static ssize_t pt__send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                           void *ud)
{
    pt_ws_t *ws = ud;
    if (ws->ended || pt_buf_append(&ws->out, data, len) != 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

/* Refuses the frame being read: code goes out, nothing more is read and
 * what wslay still completes of this frame is dropped. */
static void pt__refuse_frame(pt_ws_t *ws, uint16_t code)
{
    ws->refused = 1;
    wslay_event_queue_close(ws->ctx, code, NULL, 0);
    wslay_event_shutdown_read(ws->ctx);
}

static void pt__on_frame_start_cb(wslay_event_context_ptr ctx,
                                  const struct wslay_event_on_frame_recv_start_arg *arg, void *ud)
{
    pt_ws_t *ws = ud;
    /* a client's frame is masked and its length minimally encoded (wslay
     * refuses it otherwise): its header is exactly this long */
    uint64_t n = arg->payload_length;
    ws->frame_len = 2 + (n >= 65536 ? 8 : n >= 126 ? 2 : 0) + 4 + n;
    ws->frame_open = 1;
    if (!(arg->opcode & 0x8)) ws->msg_open = !arg->fin;
    /* wslay reads a close body of one byte as "no status code" and echoes
     * an empty close; RFC 6455 5.5.1 makes it a protocol error. */
    if (arg->opcode == WSLAY_CONNECTION_CLOSE && arg->payload_length == 1) {
        pt__refuse_frame(ws, WSLAY_CODE_PROTOCOL_ERROR);
        return;
    }
    if (arg->opcode & 0x8) return; /* control frames are not part of the message */
    if (arg->opcode != WSLAY_CONTINUATION_FRAME)
        ws->msg_cost = 0; /* the first fragment is free */
    else if ((ws->msg_cost += PT__WS_FRAGMENT_COST) > ws->max_message)
        pt__refuse_frame(ws, WSLAY_CODE_MESSAGE_TOO_BIG);
}

static void pt__on_msg_cb(wslay_event_context_ptr ctx,
                          const struct wslay_event_on_msg_recv_arg *arg, void *ud)
{
    pt_ws_t *ws = ud;
    if (ws->ended || ws->refused) return;
    if (ws->w) ws->last_message_ms = uv_now(&ws->w->loop);
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
        ws->io->text(ws, (const char *)arg->msg, arg->msg_length);
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

static void pt__on_frame_end_cb(wslay_event_context_ptr ctx, void *ud)
{
    pt_ws_t *ws = ud;
    ws->in_framed += ws->frame_len;
    ws->frame_open = 0;
}

static const struct wslay_event_callbacks pt__callbacks = {
    .recv_callback = pt__recv_cb,
    .send_callback = pt__send_cb,
    .on_frame_recv_start_callback = pt__on_frame_start_cb,
    .on_frame_recv_end_callback = pt__on_frame_end_cb,
    .on_msg_recv_callback = pt__on_msg_cb,
};

/* A socket's wslay context, the same for a connection and a probe, made
 * when frames begin either way (pt__ctx_get). A message over max_message is
 * closed with 1009 by wslay before it is buffered (its length is checked
 * against each frame header), one of too many fragments by
 * pt__on_frame_start_cb. */
static int pt__ctx_init(pt_ws_t *ws, uint64_t max_message)
{
    ws->max_message = max_message;
    return 0;
}

/* Makes ws->ctx when there is none. Returns 0, or -1 out of memory. */
static int pt__ctx_get(pt_ws_t *ws)
{
    if (ws->ctx) return 0;
    if (wslay_event_context_server_init(&ws->ctx, &pt__callbacks, ws) != 0) {
        ws->ctx = NULL;
        return -1;
    }
    wslay_event_config_set_max_recv_msg_length(ws->ctx, ws->max_message);
    ws->in_given = ws->in_framed = 0;
    ws->frame_open = ws->msg_open = 0;
    return 0;
}

/* Frees ws->ctx (and the empty buffers) when the socket is idle: every
 * byte wslay took belongs to a frame it read whole, no message is half
 * received, nothing is queued, no close went either way and wslay is not
 * on the stack. A later frame or send makes a new one: wslay keeps no other
 * state between messages. */
static void pt__ctx_idle(pt_ws_t *ws)
{
    if (ws->in_recv || ws->ended) return;
    if (ws->in.len == ws->in_off) {
        ws->in.len = ws->in_off = 0;
        pt_buf_free(&ws->in);
    }
    if (ws->out.len == 0) pt_buf_free(&ws->out);
    if (!ws->ctx || ws->refused || ws->frame_open || ws->msg_open ||
        ws->in_given != ws->in_framed || wslay_event_want_write(ws->ctx) ||
        !wslay_event_want_read(ws->ctx) || wslay_event_get_close_sent(ws->ctx) ||
        wslay_event_get_close_received(ws->ctx) || wslay_event_get_queued_msg_count(ws->ctx))
        return;
    wslay_event_context_free(ws->ctx);
    ws->ctx = NULL;
}

/* Runs the bytes in ws->in through wslay, then sends what that queued. */
static void pt__recv(pt_ws_t *ws)
{
    if (ws->ended || ws->in_recv) return;
    for (;;) {
        if (pt__ctx_get(ws) != 0) { /* the pump below may have freed it */
            pt__end(ws, 1);
            return;
        }
        ws->in_recv = 1;
        int rc = wslay_event_recv(ws->ctx);
        ws->in_recv = 0;
        if (rc == WSLAY_ERR_CALLBACK_FAILURE) {
            /* pt__recv_cb never fails, so this is wslay's frame layer
             * refusing a header (a control frame over 125 bytes or
             * fragmented, a bad length): wslay queued a close without a
             * code, RFC 6455 7.4.1 asks for 1002, which goes out instead. */
            pt__fail(ws, WSLAY_CODE_PROTOCOL_ERROR);
            return;
        }
        if (rc != 0) {
            pt__end(ws, 1); /* out of memory */
            return;
        }
        if (ws->in_off == ws->in.len) {
            ws->in.len = ws->in_off = 0;
            if (ws->in.cap > PT__WS_OUT_KEEP) pt_buf_free(&ws->in);
        }
        pt__pump(ws);
        /* The bound may have been reached by what wslay itself queued (the
         * pongs of the pings just read), which the pump has written out
         * since: when that leaves the output at half the bound, the frames
         * that waited for it are read on here (no write callback would
         * come to resume them). Each round reads at least one chunk. */
        if (ws->ended || !ws->paused || !ws->out_over || pt__queued(ws) > ws->max_output / 2 ||
            ws->in_flight >= PT__WS_MAX_IN_FLIGHT)
            break;
        ws->out_over = 0;
        if (ws->timers_open) uv_timer_stop(&ws->send_timer);
        ws->paused = 0;
    }
    if (ws->paused && !ws->ended && ws->c) pt_http_reading(ws->c, 0);
    pt__ctx_idle(ws);
}

/* Appends bytes read to ws->in (what waited moved to its start). */
static int pt__take(pt_ws_t *ws, const char *data, size_t len)
{
    if (ws->in_off) {
        memmove(ws->in.data, ws->in.data + ws->in_off, ws->in.len - ws->in_off);
        ws->in.len -= ws->in_off;
        ws->in_off = 0;
    }
    return pt_buf_append(&ws->in, data, len);
}

/* ---- service calls ---- */

static void pt__reply(pt_ws_t *ws, const pt__ws_call_t *call, const pt_lua_result_t *res);

static void pt__on_service_done(void *ud, const pt_lua_result_t *res)
{
    pt__ws_call_t *call = ud;
    pt_ws_t *ws = call->ws;
    ws->in_flight--;
    if (ws->c && !ws->ended) pt__reply(ws, call, res);
    if (call->request_id) json_decref(call->request_id);
    free(call);
    if (!ws->c && ws->in_flight == 0 && !ws->timers_open) {
        pt__ws_free(ws);
    } else if (ws->c) {
        pt__pump(ws);
        pt__resume(ws);
    }
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

static void pt__reply(pt_ws_t *ws, const pt__ws_call_t *call, const pt_lua_result_t *res)
{
    json_t *request_id = call->request_id;
    int is_json = res->content_type && strncmp(res->content_type, "application/json", 16) == 0;
    /* a text frame is UTF-8 (RFC 6455 5.6), and so is every JSON string */
    if (pt_utf8_check(res->body, res->body_len, NULL) != 0) {
        pt_log_write(PT_LOG_ERROR, call->cid, NULL, "the service's answer is not valid UTF-8",
                     sizeof "the service's answer is not valid UTF-8" - 1);
        pt__send_error(ws, request_id, 500, "internal error", call->cid);
        return;
    }
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

/* The envelope's request_id as it will be echoed (a new reference): null
 * when absent, an integer, or a string of at most PT__WS_MAX_REQUEST_ID
 * bytes; NULL for anything else. It goes back in every reply to the call and
 * lives as long as the call, so it is bounded like the rest of a socket's
 * memory. With as_real every integer was read as a double: one that is a
 * whole number a double holds exactly is an integer again. */
static json_t *pt__request_id(json_t *id, int as_real)
{
    if (!id || json_is_null(id)) return json_null();
    if (json_is_integer(id)) return json_incref(id);
    if (json_is_string(id))
        return json_string_length(id) <= PT__WS_MAX_REQUEST_ID ? json_incref(id) : NULL;
    if (as_real && json_is_real(id)) {
        double v = json_real_value(id);
        if (v >= -9007199254740992.0 && v <= 9007199254740992.0 && v == (double)(json_int_t)v)
            return json_integer((json_int_t)v);
    }
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
    /* The strict check decides what is JSON, as for a REST body (the same
     * depth, the same grammar), so the two channels agree; jansson only
     * builds the envelope. */
    pt_json_error_t jcheck;
    if (pt_json_check(text, len, PT_JSON_MAX_DEPTH, &jcheck) != 0) {
        char m[256];
        snprintf(m, sizeof m, "invalid JSON: %s at byte %zu", jcheck.message, jcheck.offset);
        pt__send_error(ws, NULL, 400, m, cid);
        return;
    }
    /* \u0000 is JSON (cjson decodes it for a REST body too). An integer
     * beyond 64 bits is JSON that jansson refuses: such a text is read again
     * with every integer as a double, which is what cjson makes of it. */
    json_error_t jerr;
    int as_real = 0;
    json_t *msg = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!msg) {
        as_real = 1;
        msg = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL,
                         &jerr);
    }
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
        request_id = pt__request_id(json_object_get(msg, "request_id"), as_real);
        if (!request_id) {
            pt__send_error(ws, NULL, 400,
                           "\"request_id\" must be null, an integer or a string of at most "
                           "256 bytes",
                           cid);
            goto done;
        }
        if (!json_is_string(svc) ||
            !pt_route_valid_service_name(json_string_value(svc), json_string_length(svc))) {
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
    pt_strcpy_cap(call->cid, cid, sizeof call->cid);
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
        .headers = ws->headers,
        .n_headers = ws->n_headers,
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

/* ---- keep-alive ---- */

static void pt__on_ping_timer(uv_timer_t *t)
{
    pt_ws_t *ws = t->data;
    if (!ws->c || ws->ended) return;
    const pt_channel_t *ch = pt__channel(ws);
    if (!ch) {
        pt__close(ws, WSLAY_CODE_GOING_AWAY, "channel removed");
        return;
    }
    /* frames wait unread (the send timer watches an output backlog): the
     * peer's pongs are among them, so misses are not counted meanwhile */
    if (ws->paused) return;
    if (ws->missed >= ch->ws_missed_pings) {
        pt_log_debug("websocket on %s: %d pings unanswered, closing", ws->channel, ws->missed);
        pt__end(ws, 1); /* a dead peer cannot take a close frame */
        return;
    }
    if (ch->ws_idle_timeout_ms &&
        uv_now(&ws->w->loop) - ws->last_message_ms >= ch->ws_idle_timeout_ms) {
        pt__close(ws, WSLAY_CODE_NORMAL_CLOSURE, "idle");
        return;
    }
    struct wslay_event_msg ping = {WSLAY_PING, (const uint8_t *)"", 0};
    ws->missed++;
    if (pt__ctx_get(ws) != 0) {
        pt__end(ws, 1);
        return;
    }
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

/* Sec-WebSocket-Key is base64 of 16 bytes (RFC 6455 4.2.1 item 5): 22
 * characters of the alphabet and "==". */
static int pt__valid_key(const char *k, size_t n)
{
    if (!k || n != 24 || k[22] != '=' || k[23] != '=') return 0;
    for (size_t i = 0; i < 22; i++)
        if (!((k[i] >= 'A' && k[i] <= 'Z') || (k[i] >= 'a' && k[i] <= 'z') ||
              (k[i] >= '0' && k[i] <= '9') || k[i] == '+' || k[i] == '/'))
            return 0;
    return 1;
}

static const pt__ws_io_t pt__sock_io = {pt__sock_flush, pt__on_text, pt__sock_end};

static void pt__on_timer_closed(uv_handle_t *h)
{
    pt_ws_t *ws = h->data;
    if (--ws->timers_open == 0 && !ws->c && ws->in_flight == 0) pt__ws_free(ws);
}

/* Refuses the handshake with status; the reply is ours so that it carries
 * the headers RFC 6455 4.2.2 and 4.4 ask for. */
static int pt__refuse(pt_conn_t *c, int status, const char *msg, const char *extra)
{
    pt_http_send_error(c, status, msg, extra);
    return 0;
}

/* Keeps a copy of the handshake's headers but hide (the credential that let
 * the socket in, as REST services never see it). Returns 0 or -1. */
static int pt__keep_headers(pt_ws_t *ws, const pt_http_parser_t *req, const char *hide)
{
    size_t hide_len = hide ? strlen(hide) : 0, bytes = 0, n = 0;
    for (size_t i = 0; i < req->n_headers; i++) {
        const pt_http_header_t *h = &req->headers[i];
        if (hide_len && pt_http_parser_header_is(req, h, hide, hide_len)) continue;
        bytes += h->name_len + h->value_len;
        n++;
    }
    if (n == 0) return 0;
    pt_lua_header_t *hs = malloc(n * sizeof *hs + bytes);
    if (!hs) return -1;
    char *at = (char *)(hs + n);
    n = 0;
    for (size_t i = 0; i < req->n_headers; i++) {
        const pt_http_header_t *h = &req->headers[i];
        if (hide_len && pt_http_parser_header_is(req, h, hide, hide_len)) continue;
        hs[n].name = memcpy(at, req->head.data + h->name_off, h->name_len);
        hs[n].name_len = h->name_len;
        at += h->name_len;
        hs[n].value = memcpy(at, req->head.data + h->value_off, h->value_len);
        hs[n].value_len = h->value_len;
        at += h->value_len;
        n++;
    }
    ws->headers = hs;
    ws->n_headers = n;
    return 0;
}

int pt_ws_upgrade(pt_conn_t *c, const pt_channel_t *ch, const char *username,
                  const char *hide_header)
{
    size_t ulen = 0, clen = 0, vlen = 0, klen = 0;
    const char *up = pt_http_header(c, "upgrade", &ulen);
    const char *conn = pt_http_header(c, "connection", &clen);
    const char *ver = pt_http_header(c, "sec-websocket-version", &vlen);
    const char *key = pt_http_header(c, "sec-websocket-key", &klen);
    const llhttp_t *lp = &pt_http_request(c)->parser;
    pt_worker_t *w = pt_http_worker(c);
    if (lp->method != HTTP_GET)
        return pt__refuse(c, 405, "a WebSocket handshake is a GET", "Allow: GET\r\n");
    if (lp->http_major != 1 || lp->http_minor < 1)
        return pt__refuse(c, 400, "a WebSocket handshake needs HTTP/1.1", NULL);
    if (!up || !pt__has_token(up, ulen, "websocket"))
        return pt__refuse(c, 426, "this channel speaks WebSocket: upgrade the connection",
                          "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    if (!conn || !pt__has_token(conn, clen, "upgrade"))
        return pt__refuse(c, 400, "malformed WebSocket handshake: Connection lacks 'upgrade'",
                          NULL);
    if (!ver || vlen != 2 || memcmp(ver, "13", 2) != 0)
        return pt__refuse(c, 426, "unsupported WebSocket version: this server speaks 13",
                          "Sec-WebSocket-Version: 13\r\n");
    if (!pt__valid_key(key, klen))
        return pt__refuse(c, 400,
                          "malformed WebSocket handshake: Sec-WebSocket-Key is not 16 bytes "
                          "in base64",
                          NULL);

    unsigned char digest[SHA_DIGEST_LENGTH];
    char src[24 + sizeof PT__WS_GUID], accept[32];
    memcpy(src, key, 24);
    memcpy(src + 24, PT__WS_GUID, sizeof PT__WS_GUID - 1);
    SHA1((const unsigned char *)src, 24 + sizeof PT__WS_GUID - 1, digest);
    EVP_EncodeBlock((unsigned char *)accept, digest, SHA_DIGEST_LENGTH);

    pt_ws_t *ws = calloc(1, sizeof *ws);
    if (!ws) return pt__refuse(c, 500, "out of memory", NULL);
    if (pt__keep_headers(ws, pt_http_request(c), hide_header) != 0 ||
        pt__ctx_init(ws, ch->ws_max_message) != 0) {
        pt__ws_free(ws);
        return pt__refuse(c, 500, "out of memory", NULL);
    }
    ws->io = &pt__sock_io;
    ws->c = c;
    ws->w = w;
    ws->max_output = ch->ws_max_output;
    ws->send_timeout_ms = ch->ws_send_timeout_ms;
    ws->channel = strdup(ch->name);
    ws->username = strdup(username ? username : "");
    if (!ws->channel || !ws->username) {
        pt__ws_free(ws);
        return pt__refuse(c, 500, "out of memory", NULL);
    }
    ws->last_message_ms = uv_now(&w->loop);

    if (pt_buf_printf(&ws->out,
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                      "X-Correlation-Id: %s\r\n\r\n",
                      accept, pt_http_cid(c)) != 0 ||
        pt__sock_flush(ws) != 0) {
        if (ws->ctx) wslay_event_context_free(ws->ctx);
        pt_buf_free(&ws->out);
        pt__ws_free(ws);
        pt_http_close(c);
        return 0;
    }
    uv_timer_init(&w->loop, &ws->ping_timer);
    uv_timer_init(&w->loop, &ws->send_timer);
    ws->ping_timer.data = ws->send_timer.data = ws;
    ws->timers_open = 2;
    uv_timer_start(&ws->ping_timer, pt__on_ping_timer, ch->ws_ping_interval_ms,
                   ch->ws_ping_interval_ms);
    pt__link(ws);
    /* the connection is ours now: frames the client sent right behind its
     * handshake come first */
    pt_http_hand_over(c, &pt__owner_ops, ws);
    /* ws copied what it needs of the handshake: its parser and buffers go
     * back to the worker's pool */
    pt_http_request_done(c);
    return 0;
}

/* Bytes read from the socket (pt_http's owner op). */
static void pt__on_data(void *owner, const char *data, size_t len)
{
    pt_ws_t *ws = owner;
    if (ws->ended) return;
    if (pt__take(ws, data, len) != 0) {
        pt__end(ws, 1);
        return;
    }
    pt__recv(ws);
}

/* A socket that queued a lot trims the heap as it goes; when a trim ran
 * less than a second ago, its send timer does it once that second is over
 * (unless one ran after this socket's memory was freed). */
static void pt__on_trim_timer(uv_timer_t *t)
{
    pt_ws_t *ws = t->data;
    if (__atomic_load_n(&pt__last_trim_ms, __ATOMIC_RELAXED) <= ws->detached_ms) pt__trim(1);
    uv_close((uv_handle_t *)t, pt__on_timer_closed);
}

/* The connection's handles are closed (pt_http's owner op): frees ws, or
 * lets the last service call in flight free it. */
static void pt__on_closed(void *owner)
{
    pt_ws_t *ws = owner;
    pt__unlink(ws);
    pt__undirty(ws);
    ws->c = NULL;
    ws->ended = 1;
    if (ws->ctx) wslay_event_context_free(ws->ctx);
    ws->ctx = NULL;
    pt_buf_free(&ws->in);
    pt_buf_free(&ws->out);
    uv_timer_stop(&ws->ping_timer);
    uv_timer_stop(&ws->send_timer);
    uv_close((uv_handle_t *)&ws->ping_timer, pt__on_timer_closed);
    if (ws->peak >= PT__WS_TRIM_MIN && !pt__trim(0) && !ws->w->draining) {
        ws->detached_ms = pt__now_ms();
        uv_timer_start(&ws->send_timer, pt__on_trim_timer, PT__WS_TRIM_EVERY_MS, 0);
        return;
    }
    uv_close((uv_handle_t *)&ws->send_timer, pt__on_timer_closed);
}

/* The frame of a push, made once for every socket (a server's frames are
 * not masked): FIN + text, the length in 7, 16 or 64 bits, the payload. */
static size_t pt__text_header(uint8_t *h, size_t len)
{
    h[0] = 0x80 | WSLAY_TEXT_FRAME;
    if (len < 126) {
        h[1] = (uint8_t)len;
        return 2;
    }
    if (len < 65536) {
        h[1] = 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

size_t pt_ws_push(pt_worker_t *w, const char *channel, const char *username, const char *text,
                  size_t len)
{
    size_t n = 0;
    uint8_t head[10];
    size_t hl = pt__text_header(head, len);
    uint32_t hash = username ? pt__user_hash(channel, username) : 0;
    pt_ws_t *ws = username ? pt__by_user[hash % PT__WS_USER_BUCKETS] : *pt__list(w);
    for (pt_ws_t *next; ws; ws = next) {
        next = username ? ws->user_next : ws->next;
        if (ws->ended || (username && ws->user_hash != hash) || strcmp(ws->channel, channel) != 0 ||
            (username && strcmp(ws->username, username)))
            continue;
        /* A consumer with a backlog this message would take past the bound
         * is dropped rather than buffered for: pushes come at the service's
         * pace, not the consumer's. */
        size_t q = pt__queued(ws);
        if (q > 0 && q + len > ws->max_output && ws->dirty && ws->out.len) {
            /* what this iteration batched is no backlog yet: written now,
             * only what the peer did not take counts */
            if (ws->io->flush(ws) != 0) {
                pt__end(ws, 1);
                continue;
            }
            q = pt__queued(ws);
        }
        if (q > 0 && q + len > ws->max_output) {
            pt__drop(ws, "a push found its output over max_output");
            continue;
        }
        /* wslay's queue is empty between pumps (pt__send_cb takes every
         * byte), so the frame goes straight behind what ws->out holds, in
         * order with replies; after our close nothing more goes. */
        if (ws->ctx && wslay_event_get_close_sent(ws->ctx)) continue;
        /* no context: an idle socket (pt__ctx_idle), nothing queued */
        if (ws->ctx && wslay_event_get_queued_msg_count(ws->ctx) != 0) {
            pt__send_text(ws, text, len);
            n++;
            continue;
        }
        /* What a loop iteration's pushes hold before they are written
         * stays under PT__WS_PUSH_BATCH_MAX for the worker: a big message
         * to thousands of sockets is written out as it goes instead. */
        if (pt__batched && pt__batched + hl + len > PT__WS_PUSH_BATCH_MAX) pt_ws_flush_pushes(w);
        if (pt_buf_append(&ws->out, head, hl) != 0 || pt_buf_append(&ws->out, text, len) != 0) {
            pt__end(ws, 1);
            continue;
        }
        pt__batched += hl + len;
        if (!ws->dirty) {
            ws->dirty = 1;
            ws->dirty_next = pt__dirty;
            pt__dirty = ws;
        }
        n++;
    }
    return n;
}

void pt_ws_flush_pushes(pt_worker_t *w)
{
    (void)w;
    pt_ws_t *ws = pt__dirty;
    pt__dirty = NULL;
    pt__batched = 0;
    while (ws) {
        pt_ws_t *next = ws->dirty_next;
        ws->dirty = 0;
        ws->dirty_next = NULL;
        if (!ws->ended) {
            if (ws->io->flush(ws) != 0) {
                pt__end(ws, 1);
            } else {
                pt__output_grew(ws);
                if (ws->out.len == 0) pt_buf_free(&ws->out); /* an idle socket holds none */
            }
        }
        ws = next;
    }
}

/* The worker drains (pt_http's owner op): goodbye with 1001. */
static void pt__on_drain(void *owner)
{
    pt__close(owner, WSLAY_CODE_GOING_AWAY, "server going away");
}

static const pt_http_owner_ops_t pt__owner_ops = {
    .data = pt__on_data,
    .drained = pt__sock_drained,
    .closed = pt__on_closed,
    .drain = pt__on_drain,
};

/* ---- probes (the fuzzer) ---- */

static int pt__probe_flush(pt_ws_t *ws)
{
    if (ws->out.len && ws->probe.out)
        ws->probe.out(ws->probe.ud, (uint8_t *)ws->out.data, ws->out.len);
    if (ws->probe.hold_output) ws->out_bytes += ws->out.len;
    ws->out.len = 0;
    return 0;
}

static void pt__probe_text(pt_ws_t *ws, const char *text, size_t len)
{
    if (ws->probe.text) ws->probe.text(ws->probe.ud, text, len);
}

static void pt__probe_end(pt_ws_t *ws, int abort) {}

static const pt__ws_io_t pt__probe_io = {pt__probe_flush, pt__probe_text, pt__probe_end};

pt_ws_t *pt_ws_probe_new(const pt_ws_probe_t *probe)
{
    pt_ws_t *ws = calloc(1, sizeof *ws);
    if (!ws) return NULL;
    ws->probe = *probe;
    ws->channel = strdup("");
    ws->username = strdup("");
    if (!ws->channel || !ws->username) {
        pt__ws_free(ws);
        return NULL;
    }
    if (pt__ctx_init(ws, probe->max_message) != 0) {
        pt__ws_free(ws);
        return NULL;
    }
    ws->io = &pt__probe_io;
    ws->max_output = probe->max_output;
    return ws;
}

int pt_ws_probe_feed(pt_ws_t *ws, const uint8_t *data, size_t len)
{
    if (!ws->ended) {
        if (pt__take(ws, (const char *)data, len) != 0)
            pt__end(ws, 1);
        else
            pt__recv(ws);
    }
    return ws->ended;
}

int pt_ws_probe_drain(pt_ws_t *ws)
{
    ws->out_bytes = 0;
    pt__output_drained(ws);
    return ws->ended;
}

int pt_ws_probe_paused(const pt_ws_t *ws)
{
    return ws->paused;
}

void pt_ws_probe_free(pt_ws_t *ws)
{
    if (!ws) return;
    if (ws->ctx) wslay_event_context_free(ws->ctx);
    pt_buf_free(&ws->in);
    pt_buf_free(&ws->out);
    pt__ws_free(ws);
}
