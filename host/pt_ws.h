/* pt_ws: WebSocket channels (RFC 6455, frames by wslay).
 *
 * After an authenticated GET on a websocket channel, pt_ws_upgrade answers
 * 101 and takes the connection over (pt_http_hand_over): every byte read
 * comes to it, and a draining worker's goodbye is a close with 1001. Each
 * text message is JSON and runs a service like a REST request; a message
 * {"service": ..., "request_id": ..., "data": ...} may call any service the
 * channel allows and its reply carries the same request_id, so many calls can
 * be in flight on one socket and come back in any order. Errors come back as
 * messages. A message is JSON by pt_json_check, as a REST body (\u0000 and
 * integers beyond 64 bits included; an envelope's data with one of those
 * reaches the service with every number as a double, as cjson reads it);
 * request_id is null, an integer or a string of at most 256 bytes, anything
 * else is a 400 error message (the socket stays open). Protocol violations
 * close with the matching close code (RFC 6455 7.4.1: 1002 for a bad frame,
 * 1007 for text that is not UTF-8, 1009 for a message over
 * max_message_size). Pings go out every ping_interval; a peer that misses
 * missed_pings of them is closed.
 *
 * Output is bounded: once a socket has more than max_output queued (in
 * wslay, where each queued message, an empty ping's pong too, counts 64
 * bytes besides its payload, and in libuv for a peer that reads slowly), its
 * frames are not read until half of that has drained; if that takes longer
 * than send_timeout it is closed with 1008 (as is a socket whose close waits
 * that long). A push (pt_ws_push) that would take a consumer's backlog past
 * the bound drops that consumer (1008) instead. Both count in
 * portico_ws_slow_consumers_total. A push's text must be UTF-8
 * (host.ws_push raises otherwise). */
#ifndef PT_WS_H
#define PT_WS_H

#include "pt_config.h"

#include <stddef.h>
#include <stdint.h>

struct pt_conn_s;
struct pt_worker_s;
typedef struct pt_ws_s pt_ws_t;

/* Checks the handshake of c's request and answers it: 101 and c switched to
 * WebSocket, or a refusal written here with the headers RFC 6455 asks for
 * (405 not a GET; 400 not HTTP/1.1, no "upgrade" in Connection, a key that
 * is not 16 bytes in base64; 426 with Upgrade: websocket when the request
 * asks for no WebSocket upgrade, 426 with Sec-WebSocket-Version: 13 for
 * another version). Returns 0: c is answered either way. The socket keeps
 * a copy of the handshake's headers but hide_header (the credential's, or
 * NULL): every message's service sees them in self.request.http.headers,
 * as a REST service sees its request's (bounded by the same limits of the
 * head: server.max_header_bytes, 100 fields). */
int pt_ws_upgrade(struct pt_conn_s *c, const pt_channel_t *ch, const char *username,
                  const char *hide_header);

/* Sends text to this worker's sockets on channel, all of them or only
 * username's (NULL: all). The frame is made once and appended to each
 * socket's output; the writes happen at pt_ws_flush_pushes, once per socket
 * for all the pushes of a loop iteration. Returns how many sockets it was
 * queued on. Worker thread only. */
size_t pt_ws_push(struct pt_worker_s *w, const char *channel, const char *username,
                  const char *text, size_t len);

/* Writes what pt_ws_push appended in this loop iteration (the worker's
 * at_check hook). */
void pt_ws_flush_pushes(struct pt_worker_s *w);

/* A WebSocket with no socket, for the fuzzer: the frame handling of an
 * upgraded connection (the same wslay context, callbacks and checks) fed
 * from memory. What the server writes goes to out (whole frames, or the
 * bytes of them in order), each complete text message to text; either may
 * be NULL. With hold_output the peer reads nothing: written bytes count
 * against max_output until pt_ws_probe_drain. */
typedef struct {
    void (*out)(void *ud, const uint8_t *data, size_t len);
    void (*text)(void *ud, const char *msg, size_t len);
    void *ud;
    uint64_t max_message; /* as max_message_size */
    size_t max_output;    /* as max_output */
    int hold_output;
} pt_ws_probe_t;

/* A new probe (probe is copied); NULL when out of memory. */
pt_ws_t *pt_ws_probe_new(const pt_ws_probe_t *probe);

/* Bytes from the client. Returns 1 once the server is done with the socket
 * (it closed or failed it: further bytes are ignored), else 0. */
int pt_ws_probe_feed(pt_ws_t *ws, const uint8_t *data, size_t len);

/* The peer read everything written so far: frames that waited are read.
 * Returns as pt_ws_probe_feed. */
int pt_ws_probe_drain(pt_ws_t *ws);

/* Whether frames wait because of the output bound. */
int pt_ws_probe_paused(const pt_ws_t *ws);

void pt_ws_probe_free(pt_ws_t *ws);

#endif
