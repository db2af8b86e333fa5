#include "pt_amqp.h"

#include <stddef.h>
#include "pt_amqp_declare.h"
#include "pt_amqp_tls.h"
#include "pt_log.h"

#include <amqp_framing.h>
#include <uv.h>

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PT__BACKOFF_MIN_MS 100
#define PT__BACKOFF_MAX_MS 5000
#define PT__CONNECT_TIMEOUT_MS 5000
#define PT__CH_PUBLISH 1 /* publishes, in confirm mode when configured */
#define PT__CH_CHECK 2   /* passive exchange checks: a refusal closes this one only */

typedef struct pt__member_s {
    pt_amqp_out_t *oc;
    int index;
    uv_thread_t thread;
    int started;
    pt_queue_t queue; /* submitted, not yet published; ended: the thread stops */
    atomic_int up;
    /* Owned by the member's thread. */
    amqp_connection_state_t conn;
    pt_amqp_job_t *fl_head, *fl_tail; /* published, waiting for a confirm, by tag */
    uint64_t next_tag;
    pt_amqp_exchanges_t exchanges; /* known to exist on this connection */
} pt__member_t;

struct pt_amqp_out_s {
    char *name;
    pt_amqp_endpoint_t ep;
    int confirms;
    uint64_t timeout_ms;
    pt__member_t *members;
    int n_members;
    atomic_uint rr;
    pt_metrics_amqp_t *mx; /* its figures on /metrics */
};

struct pt_amqp_s {
    pt_amqp_out_t *outs;
    size_t n;
};

/* Set before the workers start and cleared after they ended, so workers
 * read it without a lock. */
static pt_amqp_t *pt__registry;

/* ---- jobs ---- */

pt_amqp_job_t *pt_amqp_job_new(void)
{
    pt_amqp_job_t *job = calloc(1, sizeof *job);
    if (job) init_amqp_pool(&job->pool, 4096);
    return job;
}

amqp_bytes_t pt_amqp_job_bytes(pt_amqp_job_t *job, const void *p, size_t n)
{
    amqp_bytes_t b = {0, NULL};
    if (n == 0) return amqp_empty_bytes;
    amqp_pool_alloc_bytes(&job->pool, n, &b);
    if (b.bytes) memcpy(b.bytes, p, n);
    return b;
}

void pt_amqp_job_free(pt_amqp_job_t *job)
{
    if (!job) return;
    empty_amqp_pool(&job->pool);
    free(job);
}

static void pt__complete(pt_amqp_job_t *job, const char *err)
{
    job->next = NULL;
    if (err && job->mx) pt_metrics_inc(&job->mx->failed, 1);
    if (err) {
        job->failed = 1;
        if (err != job->error) snprintf(job->error, sizeof job->error, "%s", err);
    }
    job->done(job);
}

static void pt__fail_list(pt_amqp_job_t *job, const char *err)
{
    while (job) {
        pt_amqp_job_t *next = job->next;
        pt__complete(job, err);
        job = next;
    }
}

/* ---- shared helpers ---- */

uint64_t pt_amqp_now_ms(void)
{
    return uv_hrtime() / 1000000;
}

void pt_amqp_reply_error(amqp_rpc_reply_t r, char *err, size_t errlen)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        snprintf(err, errlen, "no error");
        break;
    case AMQP_RESPONSE_NONE:
        snprintf(err, errlen, "no reply from the broker");
        break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(err, errlen, "%s", amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            snprintf(err, errlen, "%u %.*s", m->reply_code, (int)m->reply_text.len,
                     (const char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            snprintf(err, errlen, "%u %.*s", m->reply_code, (int)m->reply_text.len,
                     (const char *)m->reply_text.bytes);
        } else {
            snprintf(err, errlen, "unexpected %s from the broker", amqp_method_name(r.reply.id));
        }
        break;
    }
}

void pt_amqp_answer_close(amqp_connection_state_t conn, amqp_channel_t ch, const amqp_method_t *m,
                          char *err, size_t errlen)
{
    if (m->id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_t *c = m->decoded;
        amqp_channel_close_ok_t ok = {0};
        snprintf(err, errlen, "%u %.*s", c->reply_code, (int)c->reply_text.len,
                 (const char *)c->reply_text.bytes);
        amqp_send_method(conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    } else if (m->id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_t *c = m->decoded;
        amqp_connection_close_ok_t ok = {0};
        snprintf(err, errlen, "%u %.*s", c->reply_code, (int)c->reply_text.len,
                 (const char *)c->reply_text.bytes);
        amqp_send_method(conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    } else {
        snprintf(err, errlen, "unexpected %s from the broker", amqp_method_name(m->id));
    }
}

amqp_connection_state_t pt_amqp_connect(const pt_amqp_endpoint_t *ep, uint64_t timeout_ms,
                                        char *err, size_t errlen)
{
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
    char why[200];
    amqp_connection_state_t conn = amqp_new_connection();
    if (!conn) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    amqp_set_handshake_timeout(conn, &tv);
    amqp_set_rpc_timeout(conn, &tv);
    if (pt_amqp_socket_open(conn, ep, &tv, err, errlen) != 0) {
        amqp_destroy_connection(conn);
        return NULL;
    }
    amqp_rpc_reply_t r = amqp_login(conn, ep->vhost, 0, 131072, ep->heartbeat,
                                    AMQP_SASL_METHOD_PLAIN, ep->user, ep->password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        int st = r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION ? r.library_error : 0;
        if (!pt_amqp_tls_late_error(ep, st, why, sizeof why))
            pt_amqp_reply_error(r, why, sizeof why);
        snprintf(err, errlen, "cannot log in to %s: %s", ep->display, why);
        amqp_destroy_connection(conn);
        return NULL;
    }
    amqp_channel_open(conn, 1);
    r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        pt_amqp_reply_error(r, why, sizeof why);
        snprintf(err, errlen, "cannot open a channel on %s: %s", ep->display, why);
        amqp_destroy_connection(conn);
        return NULL;
    }
    /* declare: on every connect; a refusal is logged there, the connection stays */
    if (pt_amqp_declare_apply(conn, ep, err, errlen) < 0) {
        amqp_destroy_connection(conn);
        return NULL;
    }
    return conn;
}

void pt_amqp_disconnect(amqp_connection_state_t conn, int polite)
{
    if (!conn) return;
    if (polite) amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
}

int pt_amqp_wait(amqp_connection_state_t conn, int efd, int timeout_ms)
{
    int ready = 0;
    struct pollfd p[2] = {{.fd = efd, .events = POLLIN}, {.fd = -1, .events = POLLIN}};
    if (conn) {
        if (amqp_frames_enqueued(conn) || amqp_data_in_buffer(conn)) {
            ready = 1;
            timeout_ms = 0;
        }
        p[1].fd = amqp_get_sockfd(conn);
    }
    if (poll(p, 2, timeout_ms < 0 ? 0 : timeout_ms) > 0) {
        if (p[0].revents) {
            uint64_t v;
            ssize_t n = read(efd, &v, sizeof v);
            (void)n;
            ready |= 2;
        }
        if (p[1].revents) ready |= 1;
    }
    return ready;
}

int pt_amqp_wait_ms(amqp_connection_state_t conn, uint64_t deadline_ms)
{
    int t = 1000, hb = amqp_get_heartbeat(conn);
    if (hb > 0 && hb * 500 < t) t = hb * 500;
    if (deadline_ms) {
        uint64_t now = pt_amqp_now_ms();
        uint64_t d = deadline_ms > now ? deadline_ms - now : 0;
        if (d < (uint64_t)t) t = (int)d;
    }
    return t;
}

/* ---- reading a message's content with a bound ---- */

static int pt__dup_bytes(amqp_pool_t *pool, amqp_bytes_t *b)
{
    amqp_bytes_t copy = amqp_empty_bytes;
    if (b->len == 0) {
        *b = amqp_empty_bytes;
        return 0;
    }
    amqp_pool_alloc_bytes(pool, b->len, &copy);
    if (!copy.bytes) return -1;
    memcpy(copy.bytes, b->bytes, b->len);
    *b = copy;
    return 0;
}

/* rabbitmq-c 0.11 keeps amqp_basic_properties_clone private: the same, with
 * its public pieces. */
static int pt__props_clone(const amqp_basic_properties_t *src, amqp_basic_properties_t *dst,
                           amqp_pool_t *pool)
{
    *dst = *src;
    /* a field whose flag is not set holds whatever the decoder left */
    struct {
        amqp_flags_t flag;
        amqp_bytes_t *b;
    } fields[] = {{AMQP_BASIC_CONTENT_TYPE_FLAG, &dst->content_type},
                  {AMQP_BASIC_CONTENT_ENCODING_FLAG, &dst->content_encoding},
                  {AMQP_BASIC_CORRELATION_ID_FLAG, &dst->correlation_id},
                  {AMQP_BASIC_REPLY_TO_FLAG, &dst->reply_to},
                  {AMQP_BASIC_EXPIRATION_FLAG, &dst->expiration},
                  {AMQP_BASIC_MESSAGE_ID_FLAG, &dst->message_id},
                  {AMQP_BASIC_TYPE_FLAG, &dst->type},
                  {AMQP_BASIC_USER_ID_FLAG, &dst->user_id},
                  {AMQP_BASIC_APP_ID_FLAG, &dst->app_id},
                  {AMQP_BASIC_CLUSTER_ID_FLAG, &dst->cluster_id}};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        if (!(src->_flags & fields[i].flag))
            *fields[i].b = amqp_empty_bytes;
        else if (pt__dup_bytes(pool, fields[i].b) != 0)
            return -1;
    }
    if (src->_flags & AMQP_BASIC_HEADERS_FLAG) {
        if (amqp_table_clone(&src->headers, &dst->headers, pool) != AMQP_STATUS_OK) return -1;
    } else {
        dst->headers = amqp_empty_table;
    }
    return 0;
}

/* The next frame on channel ch. rabbitmq-c 0.11 has no public wait on one
 * channel; frames of one message are never interleaved with others of its
 * channel, and on these connections nothing else is pending on another one
 * but the broker's Connection.Blocked/Unblocked (let pass) or a close,
 * which ends the connection anyway. */
static int pt__wait_on_channel(amqp_connection_state_t conn, amqp_channel_t ch, amqp_frame_t *f,
                               char *err, size_t errlen)
{
    for (;;) {
        int rc = amqp_simple_wait_frame(conn, f);
        if (rc != AMQP_STATUS_OK) {
            snprintf(err, errlen, "%s", amqp_error_string2(rc));
            return -1;
        }
        if (f->channel == ch) return 0;
        if (f->frame_type == AMQP_FRAME_METHOD &&
            (f->payload.method.id == AMQP_CONNECTION_BLOCKED_METHOD ||
             f->payload.method.id == AMQP_CONNECTION_UNBLOCKED_METHOD))
            continue;
        snprintf(err, errlen, "the broker sent a frame on channel %u inside a message on %u",
                 f->channel, ch);
        return -1;
    }
}

int pt_amqp_read_header(amqp_connection_state_t conn, amqp_channel_t ch, amqp_message_t *msg,
                        uint64_t *body_size, char *err, size_t errlen)
{
    amqp_frame_t f;
    if (pt__wait_on_channel(conn, ch, &f, err, errlen) != 0) return -1;
    if (f.frame_type != AMQP_FRAME_HEADER) {
        snprintf(err, errlen, "the broker sent frame type %d where a content header belongs",
                 f.frame_type);
        return -1;
    }
    memset(msg, 0, sizeof *msg);
    init_amqp_pool(&msg->pool, 4096);
    if (pt__props_clone(f.payload.properties.decoded, &msg->properties, &msg->pool) != 0) {
        empty_amqp_pool(&msg->pool);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    msg->body = amqp_empty_bytes;
    *body_size = f.payload.properties.body_size;
    return 0;
}

int pt_amqp_read_body(amqp_connection_state_t conn, amqp_channel_t ch, amqp_message_t *msg,
                      uint64_t body_size, int keep, char *err, size_t errlen)
{
    uint64_t got = 0;
    if (keep && body_size) {
        if (body_size > SIZE_MAX || !(msg->body = amqp_bytes_malloc((size_t)body_size)).bytes) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    while (got < body_size) {
        amqp_frame_t f;
        if (pt__wait_on_channel(conn, ch, &f, err, errlen) != 0) return -1;
        if (f.frame_type != AMQP_FRAME_BODY || f.payload.body_fragment.len > body_size - got) {
            snprintf(err, errlen, "the broker sent a frame that does not fit the message body");
            return -1;
        }
        if (keep)
            memcpy((char *)msg->body.bytes + got, f.payload.body_fragment.bytes,
                   f.payload.body_fragment.len);
        got += f.payload.body_fragment.len;
        /* each frame was allocated in the channel's pool: a dropped body of
         * 200 MB must not pile up there either */
        amqp_maybe_release_buffers_on_channel(conn, ch);
    }
    return 0;
}

/* The tiny time-out (not 0) lets rabbitmq-c notice missed heartbeats; it
 * also sends ours when due. */
int pt_amqp_read_frames(amqp_connection_state_t conn, pt_amqp_method_cb on_method, void *ud,
                        char *err, size_t errlen)
{
    for (;;) {
        amqp_frame_t f;
        struct timeval tick = {0, 1};
        amqp_maybe_release_buffers(conn);
        int rc = amqp_simple_wait_frame_noblock(conn, &f, &tick);
        if (rc == AMQP_STATUS_TIMEOUT) return 0;
        if (rc != AMQP_STATUS_OK) {
            snprintf(err, errlen, "%s", amqp_error_string2(rc));
            return -1;
        }
        if (f.frame_type == AMQP_FRAME_METHOD && on_method(ud, &f, err, errlen) != 0) return -1;
    }
}

int pt_amqp_exchange_check(amqp_connection_state_t conn, amqp_channel_t ch,
                           pt_amqp_exchanges_t *known, amqp_bytes_t ex, char *job_err,
                           size_t job_errlen, char *err, size_t errlen)
{
    char why[200];
    for (size_t i = 0; i < known->n; i++)
        if (strlen(known->names[i]) == ex.len && memcmp(known->names[i], ex.bytes, ex.len) == 0)
            return 1;
    amqp_exchange_declare(conn, ch, ex, amqp_cstring_bytes("direct"), 1, 0, 0, 0, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        char **grown = realloc(known->names, (known->n + 1) * sizeof *grown);
        char *copy = strndup(ex.bytes, ex.len);
        if (grown) known->names = grown;
        if (grown && copy)
            known->names[known->n++] = copy;
        else
            free(copy);
        return 1;
    }
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        pt_amqp_answer_close(conn, ch, &r.reply, why, sizeof why);
        snprintf(job_err, job_errlen, "the broker refused exchange '%.*s': %s", (int)ex.len,
                 (const char *)ex.bytes, why);
        amqp_channel_open(conn, ch);
        r = amqp_get_rpc_reply(conn);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) return 0;
    }
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        r.reply.id == AMQP_CONNECTION_CLOSE_METHOD)
        pt_amqp_answer_close(conn, 0, &r.reply, why, sizeof why);
    else
        pt_amqp_reply_error(r, why, sizeof why);
    snprintf(err, errlen, "%s", why);
    return -1;
}

void pt_amqp_exchanges_forget(pt_amqp_exchanges_t *known)
{
    for (size_t i = 0; i < known->n; i++)
        free(known->names[i]);
    free(known->names);
    known->names = NULL;
    known->n = 0;
}

/* ---- a pooled connection's thread ---- */

/* What was submitted, oldest first, linked through next; *stop (when not
 * NULL): pt_amqp_stop has begun, and this is all it queued before. */
static pt_amqp_job_t *pt__take_queue(pt__member_t *m, int *stop)
{
    pt_amqp_job_t *jobs = NULL, **tail = &jobs;
    for (pt_queue_node_t *n = pt_queue_take(&m->queue, stop); n; n = n->next) {
        *tail = PT_QUEUE_ENTRY(n, pt_amqp_job_t, node);
        tail = &(*tail)->next;
    }
    *tail = NULL;
    return jobs;
}

static void pt__fail_inflight(pt__member_t *m, const char *err)
{
    pt_amqp_job_t *jobs = m->fl_head;
    m->fl_head = m->fl_tail = NULL;
    pt__fail_list(jobs, err);
}

static int pt__open(pt__member_t *m, char *err, size_t errlen)
{
    pt_amqp_out_t *oc = m->oc;
    char why[200];
    uint64_t t = oc->timeout_ms < PT__CONNECT_TIMEOUT_MS ? oc->timeout_ms : PT__CONNECT_TIMEOUT_MS;
    if (!(m->conn = pt_amqp_connect(&oc->ep, t < 1000 ? 1000 : t, err, errlen))) return -1;
    amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_NORMAL};
    if (oc->confirms) {
        amqp_confirm_select(m->conn, PT__CH_PUBLISH);
        r = amqp_get_rpc_reply(m->conn);
    }
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        amqp_channel_open(m->conn, PT__CH_CHECK);
        r = amqp_get_rpc_reply(m->conn);
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        pt_amqp_reply_error(r, why, sizeof why);
        snprintf(err, errlen, "cannot set up channels on %s: %s", oc->ep.display, why);
        pt_amqp_disconnect(m->conn, 0);
        m->conn = NULL;
        return -1;
    }
    m->next_tag = 0;
    return 0;
}

/* The connection is gone: everything waiting on it fails, since nobody can
 * tell whether the broker kept an unconfirmed message. */
static void pt__down(pt__member_t *m, const char *why)
{
    char msg[sizeof((pt_amqp_job_t *)0)->error];
    atomic_store(&m->up, 0);
    snprintf(msg, sizeof msg, "connection to the broker lost before it confirmed: %s", why);
    pt__fail_inflight(m, msg);
    snprintf(msg, sizeof msg, "connection to the broker lost: %s", why);
    pt__fail_list(pt__take_queue(m, NULL), msg);
    pt_amqp_disconnect(m->conn, 0);
    m->conn = NULL;
    pt_amqp_exchanges_forget(&m->exchanges);
}

/* Publishes one job. Returns 0, or -1 when the connection failed (the job
 * has been failed then, and err says why). */
static int pt__publish(pt__member_t *m, pt_amqp_job_t *job, char *err, size_t errlen)
{
    char job_err[sizeof job->error];
    if (job->exchange.len > 0) {
        int rc = pt_amqp_exchange_check(m->conn, PT__CH_CHECK, &m->exchanges, job->exchange,
                                        job_err, sizeof job_err, err, errlen);
        if (rc < 0) snprintf(job_err, sizeof job_err, "connection to the broker lost: %s", err);
        if (rc <= 0) {
            pt__complete(job, job_err);
            return rc;
        }
    }
    int rc = amqp_basic_publish(m->conn, PT__CH_PUBLISH, job->exchange, job->routing_key, 1, 0,
                                &job->props, job->body);
    if (rc != AMQP_STATUS_OK) {
        snprintf(err, errlen, "cannot publish: %s", amqp_error_string2(rc));
        pt__complete(job, err);
        return -1;
    }
    pt_metrics_inc(&m->oc->mx->published, 1);
    if (!m->oc->confirms) {
        pt__complete(job, NULL);
        return 0;
    }
    job->tag = ++m->next_tag;
    job->next = NULL;
    /* Workers read the clock before they queue, so two of them can queue in
     * the other order by a few microseconds: the list stays in deadline
     * order, its head the next to expire. */
    if (m->fl_tail && job->deadline_ms < m->fl_tail->deadline_ms)
        job->deadline_ms = m->fl_tail->deadline_ms;
    if (m->fl_tail)
        m->fl_tail->next = job;
    else
        m->fl_head = job;
    m->fl_tail = job;
    return 0;
}

/* Basic.Ack / Basic.Nack for tag (and every earlier one when multiple). */
static void pt__confirm(pt__member_t *m, uint64_t tag, int multiple, const char *nack)
{
    pt_amqp_job_t *prev = NULL, *job = m->fl_head;
    while (job && job->tag <= tag) {
        pt_amqp_job_t *next = job->next;
        if (multiple || job->tag == tag) {
            if (prev)
                prev->next = next;
            else
                m->fl_head = next;
            if (m->fl_tail == job) m->fl_tail = prev;
            if (!nack && !job->returned && job->mx) pt_metrics_inc(&job->mx->confirmed, 1);
            pt__complete(job, nack ? nack : job->returned ? job->error : NULL);
            if (!multiple) return;
        } else {
            prev = job;
        }
        job = next;
    }
}

/* A Basic.Return names no delivery tag. RabbitMQ sends it before the ack of
 * the same message, so it belongs to the oldest unconfirmed message with
 * that exchange, routing key and body not returned yet. */
static void pt__returned(pt__member_t *m, const char *ex, size_t exlen, const char *rk,
                         size_t rklen, amqp_bytes_t body, const char *text)
{
    for (pt_amqp_job_t *job = m->fl_head; job; job = job->next) {
        if (job->returned || job->exchange.len != exlen || job->routing_key.len != rklen ||
            job->body.len != body.len || memcmp(job->exchange.bytes, ex, exlen) != 0 ||
            memcmp(job->routing_key.bytes, rk, rklen) != 0 ||
            (body.len && memcmp(job->body.bytes, body.bytes, body.len) != 0))
            continue;
        job->returned = 1;
        snprintf(job->error, sizeof job->error, "%s", text);
        return;
    }
    if (!m->oc->confirms) pt_log_warn("AMQP '%s': %s", m->oc->name, text);
}

static int pt__on_method(void *ud, amqp_frame_t *f, char *err, size_t errlen)
{
    pt__member_t *m = ud;
    pt_amqp_out_t *oc = m->oc;
    char why[200];
    switch (f->payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        amqp_basic_ack_t *a = f->payload.method.decoded;
        pt__confirm(m, a->delivery_tag, a->multiple, NULL);
        return 0;
    }
    case AMQP_BASIC_NACK_METHOD: {
        amqp_basic_nack_t *a = f->payload.method.decoded;
        pt__confirm(m, a->delivery_tag, a->multiple,
                    "the broker did not accept the message (nack)");
        return 0;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        amqp_basic_return_t *r = f->payload.method.decoded;
        char text[256], ex[256], rk[256];
        size_t exlen = r->exchange.len < sizeof ex ? r->exchange.len : sizeof ex - 1;
        size_t rklen = r->routing_key.len < sizeof rk ? r->routing_key.len : sizeof rk - 1;
        memcpy(ex, r->exchange.bytes, exlen);
        memcpy(rk, r->routing_key.bytes, rklen);
        snprintf(text, sizeof text,
                 "the broker returned the message: %u %.*s (exchange '%.*s', routing key '%.*s')",
                 r->reply_code, (int)r->reply_text.len, (const char *)r->reply_text.bytes,
                 (int)exlen, ex, (int)rklen, rk);
        amqp_message_t msg;
        amqp_rpc_reply_t rr = amqp_read_message(m->conn, f->channel, &msg, 0);
        if (rr.reply_type != AMQP_RESPONSE_NORMAL) {
            pt_amqp_reply_error(rr, err, errlen);
            return -1;
        }
        pt__returned(m, ex, exlen, rk, rklen, msg.body, text);
        amqp_destroy_message(&msg);
        return 0;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
        amqp_rpc_reply_t r;
        pt_amqp_answer_close(m->conn, f->channel, &f->payload.method, why, sizeof why);
        pt_log_warn("AMQP '%s': the broker closed channel %u: %s", oc->name, f->channel, why);
        if (f->channel == PT__CH_PUBLISH) {
            char msg[PT_AMQP_ERRLEN];
            snprintf(msg, sizeof msg, "the broker closed the channel: %s", why);
            pt__fail_inflight(m, msg);
            pt_amqp_exchanges_forget(&m->exchanges);
            m->next_tag = 0;
        }
        amqp_channel_open(m->conn, f->channel);
        r = amqp_get_rpc_reply(m->conn);
        if (r.reply_type == AMQP_RESPONSE_NORMAL && oc->confirms && f->channel == PT__CH_PUBLISH) {
            amqp_confirm_select(m->conn, PT__CH_PUBLISH);
            r = amqp_get_rpc_reply(m->conn);
        }
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            pt_amqp_reply_error(r, why, sizeof why);
            snprintf(err, errlen, "cannot reopen channel %u: %s", f->channel, why);
            return -1;
        }
        return 0;
    }
    case AMQP_CONNECTION_CLOSE_METHOD:
        pt_amqp_answer_close(m->conn, 0, &f->payload.method, why, sizeof why);
        snprintf(err, errlen, "the broker closed the connection: %s", why);
        return -1;
    case AMQP_CONNECTION_BLOCKED_METHOD:
        pt_log_warn("AMQP '%s': the broker blocks publishing (resource alarm)", oc->name);
        return 0;
    default:
        return 0;
    }
}

/* One round on a live connection: publish what was submitted, wait for
 * input, read it, expire old confirms. -1 when the connection failed. */
static int pt__step(pt__member_t *m, char *err, size_t errlen)
{
    int stop;
    pt_amqp_job_t *jobs = pt__take_queue(m, &stop);
    while (jobs) {
        pt_amqp_job_t *next = jobs->next;
        jobs->next = NULL;
        if (pt__publish(m, jobs, err, errlen) != 0) {
            char msg[PT_AMQP_ERRLEN];
            snprintf(msg, sizeof msg, "connection to the broker lost: %s", err);
            pt__fail_list(next, msg);
            return -1;
        }
        jobs = next;
    }
    if (stop) return 0;
    pt_amqp_wait(m->conn, pt_queue_fd(&m->queue),
                 pt_amqp_wait_ms(m->conn, m->fl_head ? m->fl_head->deadline_ms : 0));
    if (pt_amqp_read_frames(m->conn, pt__on_method, m, err, errlen) != 0) return -1;
    uint64_t now = pt_amqp_now_ms();
    while (m->fl_head && m->fl_head->deadline_ms <= now) {
        pt_amqp_job_t *job = m->fl_head;
        char msg[128];
        if (!(m->fl_head = job->next)) m->fl_tail = NULL;
        snprintf(msg, sizeof msg, "time-out: no confirm from the broker within %llu ms",
                 (unsigned long long)m->oc->timeout_ms);
        pt__complete(job, msg);
    }
    return 0;
}

/* Waits ms before the next attempt; what is submitted meanwhile fails at
 * once. Returns non-zero when asked to stop. */
static int pt__backoff(pt__member_t *m, int ms, const char *why)
{
    char msg[PT_AMQP_ERRLEN];
    int stop = 0;
    uint64_t until = pt_amqp_now_ms() + (uint64_t)ms;
    snprintf(msg, sizeof msg, "no connection to the broker: %s", why);
    for (;;) {
        pt__fail_list(pt__take_queue(m, &stop), msg);
        uint64_t now = pt_amqp_now_ms();
        if (stop || now >= until) return stop;
        pt_amqp_wait(NULL, pt_queue_fd(&m->queue), (int)(until - now));
    }
}

static void pt__member_main(void *arg)
{
    pt__member_t *m = arg;
    pt_amqp_out_t *oc = m->oc;
    char err[320];
    int backoff = PT__BACKOFF_MIN_MS, failures = 0, stop = 0, ever_up = 0;
    for (;;) {
        if ((stop = pt_queue_ended(&m->queue))) break;
        if (!m->conn) {
            if (pt__open(m, err, sizeof err) != 0) {
                pt_log(failures++ == 0 ? PT_LOG_WARN : PT_LOG_DEBUG,
                       "AMQP '%s' [%d]: %s; retrying in the background", oc->name, m->index + 1,
                       err);
                if (pt__backoff(m, backoff, err)) break;
                backoff = backoff * 2 > PT__BACKOFF_MAX_MS ? PT__BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            pt_log_info("AMQP '%s' [%d]: connected to %s%s", oc->name, m->index + 1, oc->ep.display,
                        oc->confirms ? " (publisher confirms)" : "");
            if (ever_up) pt_metrics_inc(&oc->mx->reconnects, 1);
            pt_metrics_inc((uint64_t *)&oc->mx->up, 1);
            ever_up = 1;
            failures = 0;
            backoff = PT__BACKOFF_MIN_MS;
            atomic_store(&m->up, 1);
        }
        if (pt__step(m, err, sizeof err) != 0) {
            pt_log_warn("AMQP '%s' [%d]: connection lost: %s; reconnecting", oc->name, m->index + 1,
                        err);
            pt__down(m, err);
            pt_metrics_inc((uint64_t *)&oc->mx->up, -1);
            failures = 1;
        }
    }
    if (m->conn) pt_metrics_inc((uint64_t *)&oc->mx->up, -1);
    atomic_store(&m->up, 0);
    pt__fail_list(pt__take_queue(m, NULL), "portico is shutting down");
    pt__fail_inflight(m, "portico is shutting down before the broker confirmed");
    pt_amqp_disconnect(m->conn, 1);
    m->conn = NULL;
    pt_amqp_exchanges_forget(&m->exchanges);
}

/* ---- the pools ---- */

pt_amqp_out_t *pt_amqp_find(const char *name)
{
    pt_amqp_t *a = pt__registry;
    for (size_t i = 0; a && i < a->n; i++)
        if (strcmp(a->outs[i].name, name) == 0) return &a->outs[i];
    return NULL;
}

const char *pt_amqp_name(const pt_amqp_out_t *oc)
{
    return oc->name;
}

int pt_amqp_available(pt_amqp_out_t *oc)
{
    for (int i = 0; i < oc->n_members; i++)
        if (atomic_load(&oc->members[i].up)) return 1;
    return 0;
}

void pt_amqp_submit(pt_amqp_out_t *oc, pt_amqp_job_t *job)
{
    unsigned start = atomic_fetch_add(&oc->rr, 1);
    pt__member_t *m = &oc->members[start % (unsigned)oc->n_members];
    for (int i = 0; i < oc->n_members; i++) {
        pt__member_t *c = &oc->members[(start + (unsigned)i) % (unsigned)oc->n_members];
        if (atomic_load(&c->up)) {
            m = c;
            break;
        }
    }
    job->next = NULL;
    job->mx = oc->mx;
    job->deadline_ms = pt_amqp_now_ms() + oc->timeout_ms;
    /* Once stopping, the job only queues: the thread on its way out, or
     * pt_amqp_stop after the join, fails it ("shutting down"). */
    pt_queue_push(&m->queue, &job->node);
}

static char *pt__dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void pt__free(pt_amqp_t *a)
{
    for (size_t i = 0; i < a->n; i++) {
        pt_amqp_out_t *oc = &a->outs[i];
        for (int j = 0; oc->members && j < oc->n_members; j++) {
            pt_queue_destroy(&oc->members[j].queue);
        }
        free(oc->members);
        free(oc->name);
        pt_amqp_endpoint_free(&oc->ep);
    }
    free(a->outs);
    free(a);
}

void pt_amqp_stop(pt_amqp_t *a)
{
    if (!a) return;
    for (size_t i = 0; i < a->n; i++)
        for (int j = 0; j < a->outs[i].n_members; j++) {
            pt_queue_end(&a->outs[i].members[j].queue); /* wakes the thread */
        }
    for (size_t i = 0; i < a->n; i++)
        for (int j = 0; j < a->outs[i].n_members; j++) {
            pt__member_t *m = &a->outs[i].members[j];
            if (m->started) uv_thread_join(&m->thread);
            /* submitted after the thread's last look: it has ended, we run it */
            pt__fail_list(pt__take_queue(m, NULL), "portico is shutting down");
        }
    if (pt__registry == a) pt__registry = NULL;
    pt__free(a);
}

int pt_amqp_start(const pt_config_t *cfg, pt_amqp_t **out)
{
    *out = NULL;
    if (cfg->n_amqp_out == 0) return 0;
    pt_amqp_t *a = calloc(1, sizeof *a);
    if (!a || !(a->outs = calloc(cfg->n_amqp_out, sizeof *a->outs))) {
        free(a);
        return -1;
    }
    int ok = 1;
    for (size_t i = 0; i < cfg->n_amqp_out; i++, a->n++) {
        const pt_amqp_out_cfg_t *c = &cfg->amqp_out[i];
        pt_amqp_out_t *oc = &a->outs[i];
        oc->name = pt__dup(c->name);
        int ep_rc = pt_amqp_endpoint_copy(&oc->ep, &c->ep);
        char what[160];
        snprintf(what, sizeof what, "AMQP '%s'", c->name);
        pt_amqp_tls_warn(what, &c->ep);
        oc->confirms = c->confirms;
        oc->mx = pt_metrics_amqp("outgoing", c->name);
        oc->timeout_ms = c->timeout_ms;
        oc->members = calloc((size_t)c->pool_size, sizeof *oc->members);
        if (!oc->name || ep_rc != 0 || !oc->members) {
            ok = 0;
            a->n++;
            break;
        }
        for (int j = 0; j < c->pool_size; j++, oc->n_members++) {
            pt__member_t *m = &oc->members[j];
            m->oc = oc;
            m->index = j;
            if (pt_queue_init(&m->queue) != 0) {
                ok = 0;
                break;
            }
            if (pt_queue_start_fd(&m->queue) != 0) {
                ok = 0;
                oc->n_members++;
                break;
            }
        }
        if (!ok) {
            a->n++;
            break;
        }
    }
    if (!ok) {
        pt__free(a);
        return -1;
    }
    pt__registry = a;
    for (size_t i = 0; i < a->n; i++)
        for (int j = 0; j < a->outs[i].n_members; j++) {
            pt__member_t *m = &a->outs[i].members[j];
            if (uv_thread_create(&m->thread, pt__member_main, m) != 0) {
                pt_amqp_stop(a);
                return -1;
            }
            m->started = 1;
        }
    *out = a;
    return 0;
}

#define PT__PROP(key, field, flag, publishable)                                                    \
    {                                                                                              \
        key, offsetof(amqp_basic_properties_t, field), flag, publishable                           \
    }
const pt_amqp_string_prop_t pt_amqp_string_props[] = {
    PT__PROP("content_type", content_type, AMQP_BASIC_CONTENT_TYPE_FLAG, 1),
    PT__PROP("content_encoding", content_encoding, AMQP_BASIC_CONTENT_ENCODING_FLAG, 1),
    PT__PROP("message_id", message_id, AMQP_BASIC_MESSAGE_ID_FLAG, 1),
    PT__PROP("correlation_id", correlation_id, AMQP_BASIC_CORRELATION_ID_FLAG, 1),
    PT__PROP("reply_to", reply_to, AMQP_BASIC_REPLY_TO_FLAG, 1),
    PT__PROP("expiration", expiration, AMQP_BASIC_EXPIRATION_FLAG, 1),
    PT__PROP("type", type, AMQP_BASIC_TYPE_FLAG, 1),
    PT__PROP("app_id", app_id, AMQP_BASIC_APP_ID_FLAG, 1),
    PT__PROP("user_id", user_id, AMQP_BASIC_USER_ID_FLAG, 0),
};
const size_t pt_amqp_n_string_props = sizeof pt_amqp_string_props / sizeof pt_amqp_string_props[0];
