/* libFuzzer target: WebSocket frame handling (pt_ws over wslay). The input
 * is what a client sends after the handshake, fed through a probe: the same
 * wslay context, callbacks and checks as an upgraded connection, with no
 * socket. Its first byte picks how the rest is cut into reads (1 to 128
 * bytes) and, with its high bit, a peer that reads nothing until every
 * fourth read (the output bound and paused frames).
 *
 * What must hold: a text message handed on is valid UTF-8 and within the
 * size limit; what the server writes parses as unmasked frames, control
 * frames of at most 125 bytes, nothing after a close, and a close code the
 * server may send (its own, or the peer's valid one echoed). */
#include "pt_ws.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

#define PT__MAX_MESSAGE (64 * 1024)

typedef struct {
    uint8_t *data;
    size_t len, cap, off;
} pt__out_t;

static void pt__on_out(void *ud, const uint8_t *data, size_t len)
{
    pt__out_t *o = ud;
    if (o->len + len > o->cap) {
        o->cap = (o->len + len) * 2;
        o->data = realloc(o->data, o->cap);
        if (!o->data) abort();
    }
    memcpy(o->data + o->len, data, len);
    o->len += len;
}

/* RFC 3629 UTF-8 (no surrogates, nothing past U+10FFFF, shortest form). */
static int pt__utf8(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            k = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            k = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 3, cp = c & 0x07;
        else
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

static void pt__on_text(void *ud, const char *msg, size_t len)
{
    if (len > PT__MAX_MESSAGE || !pt__utf8((const uint8_t *)msg, len)) abort();
}

static ssize_t pt__frame_recv(uint8_t *buf, size_t len, int flags, void *ud)
{
    pt__out_t *o = ud;
    size_t have = o->len - o->off;
    if (have == 0) return -1;
    if (len > have) len = have;
    memcpy(buf, o->data + o->off, len);
    o->off += len;
    return (ssize_t)len;
}

/* Parses the server's output as a client would. */
static void pt__check_output(pt__out_t *o)
{
    struct wslay_frame_callbacks cb = {.recv_callback = pt__frame_recv};
    wslay_frame_context_ptr f;
    if (wslay_frame_context_init(&f, &cb, o) != 0) abort();
    int closed = 0;
    uint64_t left = 0; /* payload bytes of the current frame still to come */
    uint8_t close_body[2];
    size_t close_len = 0;
    for (;;) {
        struct wslay_frame_iocb io;
        memset(&io, 0, sizeof io);
        ssize_t r = wslay_frame_recv(f, &io);
        if (r == WSLAY_ERR_WANT_READ) break;
        if (r < 0 || io.mask || io.rsv) abort(); /* not a frame a client can read */
        if (left == 0) {                         /* a new frame */
            if (closed) abort();                 /* something after the close */
            left = io.payload_length;
            if (io.opcode == WSLAY_CONNECTION_CLOSE) closed = 1;
        }
        if (io.opcode == WSLAY_CONNECTION_CLOSE)
            for (size_t i = 0; i < io.data_length && close_len < 2; i++)
                close_body[close_len++] = io.data[i];
        left -= io.data_length;
    }
    wslay_frame_context_free(f);
    if (left) abort(); /* a frame cut short */
    if (closed && close_len == 2) {
        unsigned code = (unsigned)close_body[0] << 8 | close_body[1];
        /* its own codes, or the peer's echoed: RFC 6455 7.4 */
        int ok = (code >= 1000 && code <= 1011 && (code < 1004 || code > 1006)) ||
                 (code >= 3000 && code <= 4999);
        if (!ok) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t chunk = (size_t)(data[0] & 0x7f) + 1;
    int hold = data[0] & 0x80;
    pt__out_t out = {0};
    pt_ws_probe_t p = {.out = pt__on_out,
                       .text = pt__on_text,
                       .ud = &out,
                       .max_message = PT__MAX_MESSAGE,
                       .max_output = 4096,
                       .hold_output = hold};
    pt_ws_t *ws = pt_ws_probe_new(&p);
    if (!ws) return 0;
    data++, size--;
    int reads = 0, done = 0;
    for (size_t off = 0; off < size && !done; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        done = pt_ws_probe_feed(ws, data + off, n);
        if (hold && ++reads % 4 == 0 && !done) done = pt_ws_probe_drain(ws);
    }
    if (hold && !done) pt_ws_probe_drain(ws);
    pt_ws_probe_free(ws);
    pt__check_output(&out);
    free(out.data);
    return 0;
}
