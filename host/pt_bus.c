#include "pt_bus.h"
#include "pt_amqp.h"
#include "pt_amqp_tls.h"
#include "pt_log.h"
#include "pt_util.h"

#include <amqp_framing.h>
#include <uv.h>

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define PT__BACKOFF_MIN_MS 100
#define PT__BACKOFF_MAX_MS 5000
#define PT__CONNECT_TIMEOUT_MS 5000
#define PT__DEFAULT_TIMEOUT_MS 30000
#define PT__SHORTSTR 255 /* the longest exchange, routing key or correlation id */
#define PT__CH_RPC 1     /* publishes and consumes the replies: direct reply-to wants one channel */
#define PT__CH_CHECK 2   /* passive exchange checks: a refusal closes this one only */
#define PT__REPLY_TO "amq.rabbitmq.reply-to"
#define PT__TABLE_MIN 256
/* A reply body larger than this is refused when the worker has no config
 * (tests): server.max_body_bytes's default. */
#define PT__DEFAULT_MAX_REPLY (1024 * 1024)

typedef struct pt__conn_s pt__conn_t;

/* One request, from pt_bus_send until done returned. Everything it needs
 * is copied into data, so nothing points into the worker's request. */
typedef struct pt__job_s {
    pt_worker_t *w;
    pt_bus_done_cb done;
    void *ud;
    uint64_t seq; /* the unique part of the correlation id */
    uint64_t timeout_ms;
    uint64_t deadline_ms;
    uint64_t max_reply; /* a larger reply body is dropped unread: 502 */
    amqp_bytes_t exchange, routing_key, method, query, content_type, body, corr;
    int has_content_type;
    char traceparent[PT_TRACEPARENT_LEN + 1]; /* "" none */
    char tracestate[PT_TRACE_STATE_MAX + 1];  /* "" none (only with a traceparent) */
    /* The outcome. */
    int status;
    char error[PT_AMQP_ERRLEN];
    char reply_ctype[PT__SHORTSTR + 1];
    size_t reply_ctype_len;
    int has_reply_ctype;
    amqp_message_t reply; /* its body is the answer's */
    int has_reply;
    pt_metrics_amqp_t *mx;               /* its connection's figures; NULL: none */
    pt_queue_node_t node;                /* in its connection's queue */
    struct pt__job_s *next;              /* taken from it */
    struct pt__job_s *hnext;             /* a bucket of the in-flight table */
    struct pt__job_s *dl_prev, *dl_next; /* in flight, by deadline */
    char data[];
} pt__job_t;

struct pt__conn_s {
    char *name;
    pt_metrics_amqp_t *mx; /* its figures on /metrics */
    pt_amqp_endpoint_t ep;
    uv_thread_t thread;
    int started;
    pt_queue_t queue; /* submitted, not yet published; ended: the thread stops */
    atomic_int up;
    /* Owned by the connection's thread. */
    amqp_connection_state_t conn;
    pt__job_t **table; /* in flight, by seq; a power of two of buckets, never none */
    size_t table_size, n_inflight;
    pt__job_t *dl_head, *dl_tail;
    pt_amqp_exchanges_t exchanges; /* known to exist on this connection */
};

struct pt_bus_s {
    pt__conn_t *conns;
    size_t n;
};

/* Set before the workers start and cleared after they ended, so workers
 * read it without a lock. */
static pt_bus_t *pt__registry;

/* Process-wide, so a correlation id is never used twice, whatever the
 * connection or the client's cid. */
static atomic_uint_fast64_t pt__next_seq;

/* ---- the routing key ---- */

long pt_bus_routing_key(const char *rest, size_t rest_len, char *out, size_t outlen)
{
    size_t len = 0;
    long rc = -1;
    char stack[256], *seg = stack;
    if (outlen == 0) return -1;
    out[0] = '\0';
    for (size_t i = 0; i < rest_len;) {
        const char *start = rest + i;
        size_t n = 0;
        while (i + n < rest_len && start[n] != '/')
            n++;
        i += n + 1;
        if (n == 0) continue;
        /* Decoding never grows a segment: one buffer of rest_len fits all. */
        if (n >= sizeof stack && seg == stack && !(seg = malloc(rest_len + 1))) goto done;
        long d = pt_percent_decode(start, n, seg, 0);
        if (d < 0 || memchr(seg, '\0', (size_t)d)) goto done;
        size_t sep = len > 0 ? 1 : 0;
        if (len + sep + (size_t)d + 1 > outlen) goto done;
        if (sep) out[len++] = '.';
        memcpy(out + len, seg, (size_t)d);
        len += (size_t)d;
        out[len] = '\0';
    }
    rc = (long)len;
done:
    if (seg != stack) free(seg);
    if (rc < 0) out[0] = '\0';
    return rc;
}

/* ---- jobs ---- */

static void pt__job_free(pt__job_t *job)
{
    if (!job) return;
    if (job->has_reply) amqp_destroy_message(&job->reply);
    free(job);
}

/* On the worker that asked (or, after its loop ended, on the thread that
 * joins it: done then frees what ud holds and touches nothing else). */
static void pt__on_worker(pt_worker_t *w, void *arg)
{
    pt__job_t *job = arg;
    pt_bus_result_t res = {.status = job->status};
    (void)w;
    if (job->mx) pt_metrics_inc(job->has_reply ? &job->mx->confirmed : &job->mx->failed, 1);
    if (job->has_reply) {
        res.body = job->reply.body.len ? (const char *)job->reply.body.bytes : "";
        res.body_len = job->reply.body.len;
        if (job->has_reply_ctype) {
            res.content_type = job->reply_ctype;
            res.content_type_len = job->reply_ctype_len;
        }
    } else {
        res.error = job->error[0] ? job->error : "the AMQP bus failed";
    }
    job->done(job->ud, &res);
    pt__job_free(job);
}

/* Hands the outcome to the job's worker; the job belongs to it from here. */
static void pt__hand_back(pt__job_t *job)
{
    if (pt_worker_call(job->w, pt__on_worker, job) != 0) {
        pt_log_error("AMQP bus: out of memory handing a result back to its worker");
        pt__job_free(job);
    }
}

static void pt__set_error(pt__job_t *job, int status, const char *err)
{
    job->status = status;
    if (err != job->error) snprintf(job->error, sizeof job->error, "%s", err);
}

static void pt__fail_list(pt__job_t *job, int status, const char *err)
{
    while (job) {
        pt__job_t *next = job->next;
        job->next = NULL;
        pt__set_error(job, status, err);
        pt__hand_back(job);
        job = next;
    }
}

/* ---- the jobs in flight of a connection ---- */

static void pt__track(pt__conn_t *c, pt__job_t *job)
{
    if (c->n_inflight >= c->table_size) {
        size_t size = c->table_size * 2;
        pt__job_t **t = calloc(size, sizeof *t);
        if (t) { /* without memory the chains just grow longer */
            for (size_t i = 0; i < c->table_size; i++)
                for (pt__job_t *j = c->table[i], *next; j; j = next) {
                    next = j->hnext;
                    j->hnext = t[j->seq & (size - 1)];
                    t[j->seq & (size - 1)] = j;
                }
            free(c->table);
            c->table = t;
            c->table_size = size;
        }
    }
    pt__job_t **b = &c->table[job->seq & (c->table_size - 1)];
    job->hnext = *b;
    *b = job;
    c->n_inflight++;
    /* Deadlines mostly grow with the sends; only a reload that shortens
     * the time-out walks back from the tail. */
    pt__job_t *after = c->dl_tail;
    while (after && after->deadline_ms > job->deadline_ms)
        after = after->dl_prev;
    job->dl_prev = after;
    job->dl_next = after ? after->dl_next : c->dl_head;
    if (job->dl_next)
        job->dl_next->dl_prev = job;
    else
        c->dl_tail = job;
    if (after)
        after->dl_next = job;
    else
        c->dl_head = job;
}

static void pt__untrack(pt__conn_t *c, pt__job_t *job)
{
    for (pt__job_t **p = &c->table[job->seq & (c->table_size - 1)]; *p; p = &(*p)->hnext)
        if (*p == job) {
            *p = job->hnext;
            break;
        }
    job->hnext = NULL;
    c->n_inflight--;
    if (job->dl_prev)
        job->dl_prev->dl_next = job->dl_next;
    else
        c->dl_head = job->dl_next;
    if (job->dl_next)
        job->dl_next->dl_prev = job->dl_prev;
    else
        c->dl_tail = job->dl_prev;
    job->dl_prev = job->dl_next = NULL;
}

/* The job in flight whose correlation id is corr ("<cid>.<seq>"), or NULL. */
static pt__job_t *pt__lookup(pt__conn_t *c, amqp_bytes_t corr)
{
    const char *s = corr.bytes;
    size_t i = corr.len;
    uint64_t seq = 0, mul = 1;
    if (corr.len == 0 || corr.len > PT__SHORTSTR) return NULL;
    while (i > 0 && s[i - 1] >= '0' && s[i - 1] <= '9' && corr.len - i < 19) {
        seq += (uint64_t)(s[i - 1] - '0') * mul;
        mul *= 10;
        i--;
    }
    if (i == corr.len) return NULL;
    for (pt__job_t *j = c->table[seq & (c->table_size - 1)]; j; j = j->hnext)
        if (j->seq == seq && j->corr.len == corr.len && memcmp(j->corr.bytes, s, corr.len) == 0)
            return j;
    return NULL;
}

static void pt__finish(pt__conn_t *c, pt__job_t *job, int status, const char *err)
{
    pt__untrack(c, job);
    if (err) pt__set_error(job, status, err);
    pt__hand_back(job);
}

static void pt__fail_inflight(pt__conn_t *c, int status, const char *err)
{
    while (c->dl_head)
        pt__finish(c, c->dl_head, status, err);
}

/* ---- a connection's thread ---- */

/* What was submitted, oldest first, linked through next; *stop (when not
 * NULL): pt_bus_stop has begun, and this is all it queued before. */
static pt__job_t *pt__take_queue(pt__conn_t *c, int *stop)
{
    pt__job_t *jobs = NULL, **tail = &jobs;
    for (pt_queue_node_t *n = pt_queue_take(&c->queue, stop); n; n = n->next) {
        *tail = PT_QUEUE_ENTRY(n, pt__job_t, node);
        tail = &(*tail)->next;
    }
    *tail = NULL;
    return jobs;
}

/* Replies to amq.rabbitmq.reply-to come to a consumer of that pseudo-queue
 * on the channel that published, in no-ack mode. */
static amqp_rpc_reply_t pt__consume_replies(pt__conn_t *c)
{
    amqp_basic_consume(c->conn, PT__CH_RPC, amqp_cstring_bytes(PT__REPLY_TO), amqp_empty_bytes, 0,
                       1, 0, amqp_empty_table);
    return amqp_get_rpc_reply(c->conn);
}

static int pt__open(pt__conn_t *c, char *err, size_t errlen)
{
    char why[200];
    if (!(c->conn = pt_amqp_connect(&c->ep, PT__CONNECT_TIMEOUT_MS, err, errlen))) return -1;
    amqp_rpc_reply_t r = pt__consume_replies(c);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        amqp_channel_open(c->conn, PT__CH_CHECK);
        r = amqp_get_rpc_reply(c->conn);
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        pt_amqp_reply_error(r, why, sizeof why);
        snprintf(err, errlen, "cannot consume %s on %s: %s", PT__REPLY_TO, c->ep.display, why);
        pt_amqp_disconnect(c->conn, 0);
        c->conn = NULL;
        return -1;
    }
    return 0;
}

/* The connection is gone: the replies of what was published can no longer
 * come (direct reply-to is bound to the channel), so all of it fails. */
static void pt__down(pt__conn_t *c, const char *why)
{
    char msg[PT_AMQP_ERRLEN];
    atomic_store(&c->up, 0);
    snprintf(msg, sizeof msg, "the broker connection was lost: %s", why);
    pt__fail_inflight(c, 503, msg);
    pt__fail_list(pt__take_queue(c, NULL), 503, msg);
    pt_amqp_disconnect(c->conn, 0);
    c->conn = NULL;
    pt_amqp_exchanges_forget(&c->exchanges);
}

/* Publishes one job and tracks it until its reply. Returns 0, or -1 when
 * the connection failed (err says why; the job has been answered). */
static int pt__publish(pt__conn_t *c, pt__job_t *job, char *err, size_t errlen)
{
    char job_err[PT_AMQP_ERRLEN];
    if (job->deadline_ms <= pt_amqp_now_ms()) {
        snprintf(job_err, sizeof job_err, "no reply from the AMQP bus within %" PRIu64 " ms",
                 job->timeout_ms);
        pt__set_error(job, 504, job_err);
        pt__hand_back(job);
        return 0;
    }
    if (job->exchange.len > 0) {
        int rc = pt_amqp_exchange_check(c->conn, PT__CH_CHECK, &c->exchanges, job->exchange,
                                        job_err, sizeof job_err, err, errlen);
        if (rc == 0) {
            pt__set_error(job, 502, job_err);
            pt__hand_back(job);
            return 0;
        }
        if (rc < 0) {
            snprintf(job_err, sizeof job_err, "the broker connection was lost: %s", err);
            pt__set_error(job, 503, job_err);
            pt__hand_back(job);
            return -1;
        }
    }
    amqp_table_entry_t headers[4] = {
        {.key = amqp_cstring_bytes("X-WASP-METHOD")},
        {.key = amqp_cstring_bytes("X-WASP-QS")},
        {.key = amqp_cstring_bytes("traceparent")},
        {.key = amqp_cstring_bytes("tracestate")},
    };
    headers[2].value.kind = AMQP_FIELD_KIND_UTF8;
    headers[2].value.value.bytes = amqp_cstring_bytes(job->traceparent);
    headers[3].value.kind = AMQP_FIELD_KIND_UTF8;
    headers[3].value.value.bytes = amqp_cstring_bytes(job->tracestate);
    headers[0].value.kind = AMQP_FIELD_KIND_UTF8;
    headers[0].value.value.bytes = job->method;
    headers[1].value.kind = AMQP_FIELD_KIND_UTF8;
    headers[1].value.value.bytes = job->query;
    amqp_basic_properties_t p = {
        ._flags =
            AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_REPLY_TO_FLAG | AMQP_BASIC_HEADERS_FLAG,
        .correlation_id = job->corr,
        .reply_to = amqp_cstring_bytes(PT__REPLY_TO),
        .headers = {.num_entries = !job->traceparent[0] ? 2
                                   : job->tracestate[0] ? 4
                                                        : 3,
                    .entries = headers},
    };
    if (job->has_content_type) {
        p._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
        p.content_type = job->content_type;
    }
    int rc = amqp_basic_publish(c->conn, PT__CH_RPC, job->exchange, job->routing_key, 1, 0, &p,
                                job->body);
    if (rc != AMQP_STATUS_OK) {
        snprintf(err, errlen, "cannot publish: %s", amqp_error_string2(rc));
        snprintf(job_err, sizeof job_err, "the broker connection was lost: %s", err);
        pt__set_error(job, 503, job_err);
        pt__hand_back(job);
        return -1;
    }
    pt_metrics_inc(&c->mx->published, 1);
    pt__track(c, job);
    return 0;
}

/* X-WASP-STATUS (any case) as a number or a string of digits: 200..599, 200
 * when absent, -1 when it holds anything else (out of range, a 1xx, which is
 * not a final answer, or not a number): the reply is then answered 502. */
static int pt__reply_status(const amqp_basic_properties_t *p)
{
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG)) return 200;
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];
        const amqp_field_value_t *v = &e->value;
        int64_t n;
        if (e->key.len != 13 || strncasecmp(e->key.bytes, "X-WASP-STATUS", 13) != 0) continue;
        switch (v->kind) {
        case AMQP_FIELD_KIND_I8:
            n = v->value.i8;
            break;
        case AMQP_FIELD_KIND_U8:
            n = v->value.u8;
            break;
        case AMQP_FIELD_KIND_I16:
            n = v->value.i16;
            break;
        case AMQP_FIELD_KIND_U16:
            n = v->value.u16;
            break;
        case AMQP_FIELD_KIND_I32:
            n = v->value.i32;
            break;
        case AMQP_FIELD_KIND_U32:
            n = v->value.u32;
            break;
        case AMQP_FIELD_KIND_I64:
            n = v->value.i64;
            break;
        case AMQP_FIELD_KIND_U64:
            n = v->value.u64 > 1000 ? 1000 : (int64_t)v->value.u64;
            break;
        case AMQP_FIELD_KIND_UTF8:
        case AMQP_FIELD_KIND_BYTES: {
            const char *s = v->value.bytes.bytes;
            size_t len = v->value.bytes.len;
            if (len == 0 || len > 3) return -1;
            n = 0;
            for (size_t k = 0; k < len; k++) {
                if (s[k] < '0' || s[k] > '9') return -1;
                n = n * 10 + (s[k] - '0');
            }
            break;
        }
        default:
            return -1;
        }
        return n < 200 || n > 599 ? -1 : (int)n;
    }
    return 200;
}

static void pt__log_dropped(pt__conn_t *c, const char *what, const amqp_basic_properties_t *p)
{
    if (!pt_log_enabled(PT_LOG_DEBUG)) return;
    if (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG)
        pt_log_debug("AMQP bus '%s': dropped %s with an unknown or late correlation id '%.*s'",
                     c->name, what, (int)p->correlation_id.len,
                     (const char *)p->correlation_id.bytes);
    else
        pt_log_debug("AMQP bus '%s': dropped %s without a correlation id", c->name, what);
}

/* A reply: msg becomes the job's, or is freed. */
static void pt__on_reply(pt__conn_t *c, amqp_message_t *msg)
{
    const amqp_basic_properties_t *p = &msg->properties;
    pt__job_t *job = NULL;
    if (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) job = pt__lookup(c, p->correlation_id);
    if (!job) {
        pt__log_dropped(c, "a reply", p);
        amqp_destroy_message(msg);
        return;
    }
    job->status = pt__reply_status(p);
    if (job->status < 0) { /* a peer's answer is checked like a backend's: no guessing */
        amqp_destroy_message(msg);
        pt__finish(c, job, 502,
                   "the AMQP bus reply's X-WASP-STATUS is not a final status (200..599)");
        return;
    }
    if ((p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) && p->content_type.len > 0) {
        size_t n = p->content_type.len < PT__SHORTSTR ? p->content_type.len : PT__SHORTSTR;
        memcpy(job->reply_ctype, p->content_type.bytes, n);
        job->reply_ctype[n] = '\0';
        job->reply_ctype_len = n;
        job->has_reply_ctype = 1;
    }
    job->reply = *msg;
    job->has_reply = 1;
    pt__finish(c, job, job->status, NULL);
}

static int pt__on_method(void *ud, amqp_frame_t *f, char *err, size_t errlen)
{
    pt__conn_t *c = ud;
    char why[200];
    amqp_message_t msg;
    amqp_rpc_reply_t r;
    switch (f->payload.method.id) {
    case AMQP_BASIC_DELIVER_METHOD: {
        /* The header says who the reply is for and how large it is before
         * any of the body is read: a body over the request's bound, or one
         * nobody waits for, is read and dropped frame by frame instead of
         * being held whole (rabbitmq-c's amqp_read_message would). */
        uint64_t size;
        if (pt_amqp_read_header(c->conn, f->channel, &msg, &size, err, errlen) != 0) return -1;
        const amqp_basic_properties_t *p = &msg.properties;
        pt__job_t *job =
            (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) ? pt__lookup(c, p->correlation_id) : NULL;
        int keep = !job || size <= job->max_reply;
        if (pt_amqp_read_body(c->conn, f->channel, &msg, size, keep && job, err, errlen) != 0) {
            amqp_destroy_message(&msg);
            return -1;
        }
        if (!keep) {
            char text[PT_AMQP_ERRLEN];
            snprintf(text, sizeof text,
                     "the reply of %" PRIu64 " bytes is over server.max_body_bytes (%" PRIu64
                     "); it was dropped",
                     size, job->max_reply);
            pt_log_warn("AMQP bus '%s': %s", c->name, text);
            pt__finish(c, job, 502, text);
            amqp_destroy_message(&msg);
            return 0;
        }
        pt__on_reply(c, &msg);
        return 0;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        /* Mandatory and no queue took it: no reply will ever come. */
        amqp_basic_return_t *ret = f->payload.method.decoded;
        char text[PT_AMQP_ERRLEN];
        snprintf(text, sizeof text,
                 "the broker returned the message: %u %.*s (exchange '%.*s', routing key '%.*s')",
                 ret->reply_code, (int)ret->reply_text.len, (const char *)ret->reply_text.bytes,
                 (int)ret->exchange.len, (const char *)ret->exchange.bytes,
                 (int)ret->routing_key.len, (const char *)ret->routing_key.bytes);
        /* the body is the request's own: not needed again */
        uint64_t size;
        if (pt_amqp_read_header(c->conn, f->channel, &msg, &size, err, errlen) != 0) return -1;
        if (pt_amqp_read_body(c->conn, f->channel, &msg, size, 0, err, errlen) != 0) {
            amqp_destroy_message(&msg);
            return -1;
        }
        pt__job_t *job = (msg.properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG)
                             ? pt__lookup(c, msg.properties.correlation_id)
                             : NULL;
        if (job)
            pt__finish(c, job, 502, text);
        else
            pt__log_dropped(c, "a returned message", &msg.properties);
        amqp_destroy_message(&msg);
        return 0;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
        amqp_channel_t ch = f->channel;
        pt_amqp_answer_close(c->conn, ch, &f->payload.method, why, sizeof why);
        pt_log_warn("AMQP bus '%s': the broker closed channel %u: %s", c->name, ch, why);
        if (ch == PT__CH_RPC) {
            char msgtext[PT_AMQP_ERRLEN];
            snprintf(msgtext, sizeof msgtext, "the broker closed the channel: %s", why);
            pt__fail_inflight(c, 502, msgtext);
            pt_amqp_exchanges_forget(&c->exchanges);
        }
        amqp_channel_open(c->conn, ch);
        r = amqp_get_rpc_reply(c->conn);
        if (r.reply_type == AMQP_RESPONSE_NORMAL && ch == PT__CH_RPC) r = pt__consume_replies(c);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            pt_amqp_reply_error(r, why, sizeof why);
            snprintf(err, errlen, "cannot reopen channel %u: %s", ch, why);
            return -1;
        }
        return 0;
    }
    case AMQP_CONNECTION_CLOSE_METHOD:
        pt_amqp_answer_close(c->conn, 0, &f->payload.method, why, sizeof why);
        snprintf(err, errlen, "the broker closed the connection: %s", why);
        return -1;
    case AMQP_BASIC_CANCEL_METHOD:
        snprintf(err, errlen, "the broker cancelled the consumer of %s", PT__REPLY_TO);
        return -1;
    case AMQP_CONNECTION_BLOCKED_METHOD:
        pt_log_warn("AMQP bus '%s': the broker blocks publishing (resource alarm)", c->name);
        return 0;
    default:
        return 0;
    }
}

static void pt__expire(pt__conn_t *c)
{
    uint64_t now = pt_amqp_now_ms();
    while (c->dl_head && c->dl_head->deadline_ms <= now) {
        pt__job_t *job = c->dl_head;
        char msg[128];
        snprintf(msg, sizeof msg, "no reply from the AMQP bus within %" PRIu64 " ms",
                 job->timeout_ms);
        pt__finish(c, job, 504, msg);
    }
}

/* One round on a live connection: publish what was submitted, wait for
 * input, read it, expire what waited too long. -1 when the connection
 * failed. */
static int pt__step(pt__conn_t *c, char *err, size_t errlen)
{
    int stop;
    pt__job_t *jobs = pt__take_queue(c, &stop);
    while (jobs) {
        pt__job_t *next = jobs->next;
        jobs->next = NULL;
        if (pt__publish(c, jobs, err, errlen) != 0) {
            char msg[PT_AMQP_ERRLEN];
            snprintf(msg, sizeof msg, "the broker connection was lost: %s", err);
            pt__fail_list(next, 503, msg);
            return -1;
        }
        jobs = next;
    }
    if (stop) return 0;
    pt_amqp_wait(c->conn, pt_queue_fd(&c->queue),
                 pt_amqp_wait_ms(c->conn, c->dl_head ? c->dl_head->deadline_ms : 0));
    if (pt_amqp_read_frames(c->conn, pt__on_method, c, err, errlen) != 0) return -1;
    pt__expire(c);
    return 0;
}

/* Waits ms before the next attempt; what is submitted meanwhile fails at
 * once. Returns non-zero when asked to stop. */
static int pt__backoff(pt__conn_t *c, int ms, const char *why)
{
    char msg[PT_AMQP_ERRLEN];
    int stop = 0;
    uint64_t until = pt_amqp_now_ms() + (uint64_t)ms;
    snprintf(msg, sizeof msg, "no connection to the broker: %s", why);
    for (;;) {
        pt__fail_list(pt__take_queue(c, &stop), 503, msg);
        uint64_t now = pt_amqp_now_ms();
        if (stop || now >= until) return stop;
        pt_amqp_wait(NULL, pt_queue_fd(&c->queue), (int)(until - now));
    }
}

static void pt__conn_main(void *arg)
{
    pt__conn_t *c = arg;
    char err[320];
    int backoff = PT__BACKOFF_MIN_MS, failures = 0, stop, ever_up = 0;
    for (;;) {
        if ((stop = pt_queue_ended(&c->queue))) break;
        if (!c->conn) {
            if (pt__open(c, err, sizeof err) != 0) {
                pt_log(failures++ == 0 ? PT_LOG_WARN : PT_LOG_DEBUG,
                       "AMQP bus '%s': %s; retrying in the background", c->name, err);
                if (pt__backoff(c, backoff, err)) break;
                backoff = backoff * 2 > PT__BACKOFF_MAX_MS ? PT__BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            pt_log_info("AMQP bus '%s': connected to %s", c->name, c->ep.display);
            if (ever_up) pt_metrics_inc(&c->mx->reconnects, 1);
            pt_metrics_inc((uint64_t *)&c->mx->up, 1);
            ever_up = 1;
            failures = 0;
            backoff = PT__BACKOFF_MIN_MS;
            atomic_store(&c->up, 1);
        }
        if (pt__step(c, err, sizeof err) != 0) {
            pt_log_warn("AMQP bus '%s': connection lost: %s; reconnecting", c->name, err);
            pt__down(c, err);
            pt_metrics_inc((uint64_t *)&c->mx->up, -1);
            failures = 1;
        }
    }
    if (c->conn) pt_metrics_inc((uint64_t *)&c->mx->up, -1);
    atomic_store(&c->up, 0);
    pt__fail_list(pt__take_queue(c, NULL), 503, "portico is shutting down");
    pt__fail_inflight(c, 503, "portico is shutting down");
    pt_amqp_disconnect(c->conn, 1);
    c->conn = NULL;
    pt_amqp_exchanges_forget(&c->exchanges);
}

/* ---- the connections ---- */

static pt__conn_t *pt__find(const char *name)
{
    pt_bus_t *b = pt__registry;
    for (size_t i = 0; b && name && i < b->n; i++)
        if (strcmp(b->conns[i].name, name) == 0) return &b->conns[i];
    return NULL;
}

static amqp_bytes_t pt__copy(char **at, const void *p, size_t n)
{
    amqp_bytes_t b = {n, *at};
    if (n) memcpy(*at, p, n);
    *at += n;
    return b;
}

int pt_bus_send(pt_worker_t *w, const pt_bus_request_t *req, pt_bus_done_cb done, void *ud)
{
    char rk[PT__SHORTSTR + 1], corr[PT__SHORTSTR + 1];
    const pt_channel_t *ch = req->channel;
    const char *ex = req->exchange ? req->exchange : "";
    const char *method = req->method ? req->method : "GET";
    size_t exlen = strlen(ex), mlen = strlen(method);
    size_t qlen = req->query ? req->query_len : 0;
    size_t ctlen = req->content_type ? req->content_type_len : 0;
    size_t blen = req->body ? req->body_len : 0;
    if (!ch || !done) return -1;
    long rklen = pt_bus_routing_key(req->rest ? req->rest : "", req->rest ? req->rest_len : 0, rk,
                                    sizeof rk);
    uint64_t seq = atomic_fetch_add(&pt__next_seq, 1) + 1;
    const char *cid = req->cid ? req->cid : "";
    int corrlen = snprintf(corr, sizeof corr, "%.200s%s%" PRIu64, cid, *cid ? "." : "", seq);
    size_t total =
        exlen + (rklen > 0 ? (size_t)rklen : 0) + mlen + qlen + ctlen + blen + (size_t)corrlen;
    pt__job_t *job = calloc(1, sizeof *job + total);
    if (!job) return -1;
    char *at = job->data;
    job->w = w;
    job->done = done;
    job->ud = ud;
    job->seq = seq;
    job->exchange = pt__copy(&at, ex, exlen);
    job->routing_key = pt__copy(&at, rk, rklen > 0 ? (size_t)rklen : 0);
    job->method = pt__copy(&at, method, mlen);
    job->query = pt__copy(&at, req->query, qlen);
    job->content_type = pt__copy(&at, req->content_type, ctlen);
    job->has_content_type = req->content_type != NULL;
    job->body = pt__copy(&at, req->body, blen);
    job->corr = pt__copy(&at, corr, (size_t)corrlen);
    if (req->traceparent) {
        pt_strcpy_cap(job->traceparent, req->traceparent, sizeof job->traceparent);
        if (req->tracestate)
            pt_strcpy_cap(job->tracestate, req->tracestate, sizeof job->tracestate);
    }
    job->timeout_ms = ch->bus_reply_timeout_ms ? ch->bus_reply_timeout_ms : PT__DEFAULT_TIMEOUT_MS;
    job->deadline_ms = pt_amqp_now_ms() + job->timeout_ms;
    job->max_reply = w && w->cfg ? w->cfg->max_body_bytes : PT__DEFAULT_MAX_REPLY;

    pt__conn_t *c = pt__find(ch->name);
    job->mx = c ? c->mx : NULL;
    if (rklen < 0) {
        pt__set_error(job, 400,
                      "the path does not make a routing key (bad percent-encoding, a "
                      "NUL byte, or longer than 255 bytes)");
    } else if (exlen > PT__SHORTSTR || ctlen > PT__SHORTSTR) {
        pt__set_error(job, 400, "the exchange or the content type is longer than 255 bytes");
    } else if (!c) {
        snprintf(job->error, sizeof job->error,
                 "no broker connection for channel '%s' (a new amqp_bus channel needs a restart)",
                 ch->name ? ch->name : "");
        job->status = 503;
    } else if (!atomic_load(&c->up)) {
        pt__set_error(job, 503, "no connection to the broker");
    } else {
        /* Once stopping, the job only queues: the thread on its way out, or
         * pt_bus_stop after the join, answers it 503 ("shutting down"). */
        pt_queue_push(&c->queue, &job->node);
        return 0;
    }
    /* Answered without the broker: still through the loop, never from here. */
    if (pt_worker_call(w, pt__on_worker, job) != 0) {
        pt__job_free(job);
        return -1;
    }
    return 0;
}

static void pt__free(pt_bus_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        pt__conn_t *c = &b->conns[i];
        pt_queue_destroy(&c->queue);
        free(c->table);
        free(c->name);
        pt_amqp_endpoint_free(&c->ep);
    }
    free(b->conns);
    free(b);
}

void pt_bus_stop(pt_bus_t *b)
{
    if (!b) return;
    for (size_t i = 0; i < b->n; i++)
        pt_queue_end(&b->conns[i].queue); /* wakes the thread */
    for (size_t i = 0; i < b->n; i++) {
        pt__conn_t *c = &b->conns[i];
        if (c->started) uv_thread_join(&c->thread);
        /* sent after the thread's last look: it has ended, we answer it */
        pt__fail_list(pt__take_queue(c, NULL), 503, "portico is shutting down");
    }
    if (pt__registry == b) pt__registry = NULL;
    pt__free(b);
}

int pt_bus_start(const pt_config_t *cfg, pt_bus_t **out)
{
    size_t n = 0;
    *out = NULL;
    for (size_t i = 0; i < cfg->n_channels; i++)
        if (cfg->channels[i].type == PT_CHANNEL_AMQP_BUS) n++;
    if (n == 0) return 0;
    pt_bus_t *b = calloc(1, sizeof *b);
    if (!b || !(b->conns = calloc(n, sizeof *b->conns))) {
        free(b);
        return -1;
    }
    int ok = 1;
    for (size_t i = 0; i < cfg->n_channels; i++) {
        const pt_channel_t *ch = &cfg->channels[i];
        if (ch->type != PT_CHANNEL_AMQP_BUS) continue;
        pt__conn_t *c = &b->conns[b->n++];
        int q_rc = pt_queue_init(&c->queue);
        if (q_rc == 0) q_rc = pt_queue_start_fd(&c->queue);
        c->name = strdup(ch->name ? ch->name : "");
        c->mx = pt_metrics_amqp("bus", ch->name ? ch->name : "");
        int ep_rc = pt_amqp_endpoint_copy(&c->ep, &ch->bus_ep);
        char what[160];
        snprintf(what, sizeof what, "AMQP bus '%s'", ch->name ? ch->name : "");
        pt_amqp_tls_warn(what, &ch->bus_ep);
        if ((c->table = calloc(PT__TABLE_MIN, sizeof *c->table))) c->table_size = PT__TABLE_MIN;
        if (q_rc != 0 || !c->name || ep_rc != 0 || !c->table) ok = 0;
    }
    if (!ok) {
        pt__free(b);
        return -1;
    }
    pt__registry = b;
    for (size_t i = 0; i < b->n; i++) {
        pt__conn_t *c = &b->conns[i];
        if (uv_thread_create(&c->thread, pt__conn_main, c) != 0) {
            pt_bus_stop(b);
            return -1;
        }
        c->started = 1;
    }
    *out = b;
    return 0;
}
