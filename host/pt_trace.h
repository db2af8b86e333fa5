/* pt_trace: W3C Trace Context and spans (docs/tracing.md).
 *
 * Context. A request's trace context comes from its `traceparent` header
 * when that is valid (strict: version 00 exactly 55 characters, lower-case
 * hex, all-zero ids refused, a higher version parsed by the spec's rules for
 * it, version ff refused) and is made otherwise; `tracestate` is kept only
 * next to a valid traceparent and only when it is valid and bounded (32
 * members, 512 bytes). The context holds this hop's span id: everything the
 * request calls gets it as the parent.
 *
 * Ids come from a per-thread xoshiro256** seeded from libsodium's
 * randombytes_buf (the kernel's CSPRNG): a few nanoseconds an id, no lock, no
 * system call. Sampling is parent-based (a valid parent's sampled flag
 * decides) plus a ratio for new traces.
 *
 * Spans. A sampled span is one record (recycled: a per-thread list of spare
 * records, refilled from the exporter's, pt_trace_queue.h), its attributes
 * copied into it inline as they are set (a bounded area: attributes past it
 * are dropped and counted) and rendered as OTLP/JSON by the exporter.
 * pt_span_end hands it to a bounded queue (a mutex and a ring of pointers);
 * a full queue drops the span and counts it: a request never waits for the
 * exporter. The exporter is one thread of its own that posts batches to the
 * collector's OTLP/HTTP endpoint (application/json, /v1/traces) with
 * blocking sockets under a time-out.
 *
 * When tracing is off (the default) pt_trace_enabled() is 0 and callers
 * skip everything: no parsing, no ids, no allocation. */
#ifndef PT_TRACE_H
#define PT_TRACE_H

#include "pt_util.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PT_TRACE_STATE_MAX 512
#define PT_TRACE_STATE_MEMBERS 32
#define PT_TRACEPARENT_LEN 55 /* "00-" 32 "-" 16 "-" 2 */

enum {
    PT_SPAN_INTERNAL = 1,
    PT_SPAN_SERVER = 2,
    PT_SPAN_CLIENT = 3,
    PT_SPAN_PRODUCER = 4,
    PT_SPAN_CONSUMER = 5,
};

/* The `tracing:` section (parsed by pt_config_tracing). */
typedef struct {
    int enabled;
    char *endpoint; /* http://host:port/path as configured */
    char *host;     /* parsed from endpoint */
    char *port;
    char *path;
    double ratio;         /* of new traces sampled, 0..1 */
    unsigned batch_size;  /* spans per post */
    unsigned queue_size;  /* spans waiting at most */
    uint64_t timeout_ms;  /* of one post (connect, send, answer) */
    uint64_t interval_ms; /* a batch that is not full goes after this */
    char *service_name;   /* the resource's service.name */
    char *headers;        /* "Name: value\r\n" lines for the post ("" none) */
    /* https:// endpoints: the client context (tracing.tls, built by
     * pt_config_upstream_tls; a reference this struct holds) and the name
     * sent as SNI and checked (tls.server_name, else the host). NULL: http. */
    struct ssl_ctx_st *tls_ctx;
    char *tls_name;
} pt_trace_cfg_t;

/* Frees what a pt_trace_cfg_t owns (not the struct). */
void pt_trace_cfg_free(pt_trace_cfg_t *cfg);

/* One hop's context. */
typedef struct {
    uint8_t trace_id[16];
    uint8_t span_id[8];   /* this hop's span: the parent of what it calls */
    uint8_t parent_id[8]; /* the caller's span; all zero: a root */
    uint8_t flags;        /* trace-flags as sent on: bit 0 sampled */
    uint8_t on;           /* set up (tracing is on); 0: nothing to do */
    uint16_t state_len;
    uint64_t start_ns;      /* wall clock (unix ns) the span started */
    uint64_t security_ns;   /* time spent in the security checks */
    struct pt_span_s *call; /* the span of a call the request waits for (a bus round trip) */
    char state[PT_TRACE_STATE_MAX + 1];
} pt_trace_ctx_t;

/* Non-zero once pt_trace_start ran with tracing on. */
extern int pt_trace_on;
static inline int pt_trace_enabled(void)
{
    return pt_trace_on;
}

/* Parses a traceparent value. Returns 0 with the ids and flags, or -1 for
 * anything the spec says to refuse. */
int pt_trace_parse_parent(const char *v, size_t len, uint8_t trace_id[16], uint8_t parent_id[8],
                          uint8_t *flags);

/* 1 when v is a valid tracestate within the bounds, 0 otherwise. */
int pt_trace_valid_state(const char *v, size_t len);

/* Sets up ctx for a hop: from tp/ts (the incoming headers, NULL: none) when
 * tp is valid, a new root otherwise; a new span id either way. */
void pt_trace_begin(pt_trace_ctx_t *ctx, const char *tp, size_t tp_len, const char *ts,
                    size_t ts_len);

/* Sets up child as a new span under parent (same trace, flags and state). */
void pt_trace_child(const pt_trace_ctx_t *parent, pt_trace_ctx_t *child);

/* Copies src into dst (the state only as far as it goes). */
void pt_trace_copy(pt_trace_ctx_t *dst, const pt_trace_ctx_t *src);

/* Writes the traceparent naming ctx's span as the parent ("00-...", 55
 * characters and a NUL). */
void pt_trace_format(const pt_trace_ctx_t *ctx, char out[PT_TRACEPARENT_LEN + 1]);

/* Lower-case hex of n bytes into out (2n characters and a NUL). */
void pt_trace_hex(const uint8_t *b, size_t n, char *out);

/* Fills n bytes (at most 16) with ids from this thread's generator (never
 * all zero). */
void pt_trace_random(uint8_t *b, size_t n);

/* The wall clock in unix nanoseconds. */
uint64_t pt_trace_now(void);

/* ---- spans ---- */

typedef struct pt_span_s pt_span_t;

/* A span's record: made by pt_span_new, filled by pt_span_*, handed to the
 * exporter by pt_span_end (pt_trace_queue.h). Its fields are the host's
 * business: callers use the functions. */
struct pt_span_s {
    struct pt_span_s *next; /* on a list of spare records */
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_id[8];
    int kind;
    int error;
    uint64_t start_ns, end_ns;
    char name[64];
    char msg[64]; /* the status message of an error */
    size_t attrs_len;
    /* attributes as records: type ('s', 'i' int64, 'd' double; with
     * PT_SPAN_KEY_ESCAPE when the key must be escaped), key length
     * (1 byte), value length (2 bytes, big-endian), key, value */
    char attrs[800]; /* the span stays under glibc's per-thread cache limit (1 KB) */
    char pad[16];    /* the exporter reads text 16 bytes at a time */
};

/* An attribute did not fit in its span (counted). */
void pt_trace_count_attr_drop(void);

/* A span of ctx (its trace, its span id, its parent) when ctx is sampled,
 * started at ctx->start_ns; NULL when not sampled or out of memory (every
 * pt_span_* takes NULL and does nothing). */
pt_span_t *pt_span_new(const pt_trace_ctx_t *ctx, int kind, const char *name, size_t name_len);

/* An attribute: type 's' (v: len bytes of text), 'p' (text known plain:
 * pt_span_plain), 'i' (an int64_t) or 'd' (a double); the key klen bytes (at most 255 are kept).
 * Copied into s. A key is taken to need no JSON escaping (the host's keys are literals) unless type
 * has PT_SPAN_KEY_ESCAPE (a key a service chose). */
#define PT_SPAN_KEY_ESCAPE 0x80
static inline void pt_span_attr(pt_span_t *s, int type, const char *key, size_t klen, const void *v,
                                size_t len)
{
    /* inline: a literal key's bytes are copied by a few moves */
    if (!s) return;
    if (klen > 255) klen = 255;
    if (len > 0xffff) len = 0xffff;
    size_t at = s->attrs_len;
    if (at + 4 + klen + len > sizeof s->attrs) {
        pt_trace_count_attr_drop();
        return;
    }
    unsigned char *o = (unsigned char *)s->attrs + at;
    o[0] = (unsigned char)type;
    o[1] = (unsigned char)klen;
    o[2] = (unsigned char)(len >> 8);
    o[3] = (unsigned char)(len & 0xff);
    memcpy(o + 4, key, klen);
    memcpy(o + 4 + klen, v, len);
    s->attrs_len = at + 4 + klen + len;
}

/* Attributes (key: a literal-like name, no escaping needed; values escaped).
 * Inline, so a literal key's length is known when compiled. */
static inline void pt_span_str(pt_span_t *s, const char *key, const char *v, size_t len)
{
    if (s) pt_span_attr(s, 's', key, strlen(key), v ? v : "", v ? len : 0);
}
/* A string the host knows needs no JSON escaping (printable ASCII without
 * '"' or '\\': a method name, a cid): the exporter copies it as it is. */
static inline void pt_span_plain(pt_span_t *s, const char *key, const char *v, size_t len)
{
    if (s) pt_span_attr(s, 'p', key, strlen(key), v, len);
}
static inline void pt_span_int(pt_span_t *s, const char *key, int64_t v)
{
    if (s) pt_span_attr(s, 'i', key, strlen(key), &v, sizeof v);
}
static inline void pt_span_double(pt_span_t *s, const char *key, double v)
{
    if (s) pt_span_attr(s, 'd', key, strlen(key), &v, sizeof v);
}
/* An attempt of s that is over (a retried call): a copy of s as it is
 * (trace, parent, kind, name, start, attributes so far) with a span id of
 * its own, ending now; s starts again now. The caller adds to the copy and
 * hands it on with pt_span_end. NULL when s is NULL or out of memory. */
pt_span_t *pt_span_split(pt_span_t *s);

/* The span's status: error with a message. */
void pt_span_error(pt_span_t *s, const char *msg);

/* Ends s now and hands it to the exporter (or drops and counts it). */
void pt_span_end(pt_span_t *s);

/* ---- the exporter ---- */

/* Starts the exporter thread for cfg (copied) when cfg->enabled. Returns 0,
 * or -1 with a message in err. Main thread, before the workers start. */
int pt_trace_start(const pt_trace_cfg_t *cfg, char *err, size_t errlen);

/* Posts what is queued (within one time-out) and joins the thread. */
void pt_trace_stop(void);

/* Appends the exporter's counters in Prometheus text (nothing when off). */
void pt_trace_render_metrics(pt_buf_t *out);

#endif
