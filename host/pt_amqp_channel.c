#include "pt_amqp_channel.h"
#include "pt_amqp.h"
#include "pt_amqp_tls.h"
#include "pt_field.h"
#include "pt_log.h"
#include "pt_lua.h"
#include "pt_util.h"

#include <amqp_framing.h>
#include <lauxlib.h>
#include <uv.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define PT__BACKOFF_MIN_MS 100
#define PT__BACKOFF_MAX_MS 5000
#define PT__CONNECT_TIMEOUT_MS 5000

typedef struct pt__consumer_s pt__consumer_t;

typedef struct pt__delivery_s {
    pt__consumer_t *c;
    pt_worker_t *w; /* the worker running it, while it does */
    uint64_t gen;   /* the connection it came on: tags mean nothing on another */
    uint64_t tag;
    amqp_envelope_t env; /* read-only while a worker has it */
    char cid[65];
    pt_trace_ctx_t trace; /* its consumer span's context, while a worker has it */
    /* The answer, written by the worker before it hands the delivery back. */
    int status; /* 0: not handled (the worker was gone) */
    char *resp;
    size_t resp_len;
    char *resp_ctype;
    struct pt__delivery_s *next;                /* the pending list */
    pt_queue_node_t node;                       /* in the consumer's answers */
    struct pt__delivery_s *all_prev, *all_next; /* handed to a worker (under lock) */
} pt__delivery_t;

struct pt__consumer_s {
    pt_amqp_channels_t *owner;
    pt_channel_t channel; /* name, service, type PT_CHANNEL_AMQP, for dispatch */
    pt_amqp_endpoint_t ep;
    char *queue;
    int prefetch, concurrency, requeue;
    uint64_t max_body; /* server.max_body_bytes at start: a larger body is dead-lettered unread */
    pt_metrics_amqp_t *mx; /* its figures on /metrics */
    uv_thread_t thread;
    int started;
    /* Answered by workers. Its eventfd is what the thread waits on, also
     * woken for stop and quiesce. */
    pt_queue_t answers;
    uv_mutex_t lock;
    pt__delivery_t *all; /* out with workers (under lock) */
    int stop, quiesce;   /* under lock */
    /* Owned by the thread. */
    amqp_connection_state_t conn;
    uint64_t gen;
    pt__delivery_t *pend_head, *pend_tail; /* received, not handed out yet */
    int inflight;
    unsigned rr;
};

struct pt_amqp_channels_s {
    pt__consumer_t *consumers;
    size_t n;
    pt_worker_t *workers;
    int n_workers;
};

static void pt__delivery_free(pt__delivery_t *d)
{
    amqp_destroy_envelope(&d->env);
    free(d->resp);
    free(d->resp_ctype);
    free(d);
}

/* ---- on a worker ---- */

static void pt__push_bytes(lua_State *L, amqp_bytes_t b)
{
    lua_pushlstring(L, b.len ? (const char *)b.bytes : "", b.len);
}

/* Header tables and arrays nest as deep as a publisher likes (some 26,000
 * levels fit a content header frame): past this depth a value is nil, so
 * neither this recursion nor a service walking the table goes that deep. */
#define PT__MAX_HEADER_DEPTH 32

static void pt__push_table(lua_State *L, const amqp_table_t *t, int depth);

static void pt__push_field(lua_State *L, const amqp_field_value_t *v, int depth)
{
    if ((v->kind == AMQP_FIELD_KIND_ARRAY || v->kind == AMQP_FIELD_KIND_TABLE) &&
        depth >= PT__MAX_HEADER_DEPTH) {
        lua_pushnil(L);
        return;
    }
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN:
        lua_pushboolean(L, v->value.boolean);
        break;
    case AMQP_FIELD_KIND_I8:
        lua_pushnumber(L, v->value.i8);
        break;
    case AMQP_FIELD_KIND_U8:
        lua_pushnumber(L, v->value.u8);
        break;
    case AMQP_FIELD_KIND_I16:
        lua_pushnumber(L, v->value.i16);
        break;
    case AMQP_FIELD_KIND_U16:
        lua_pushnumber(L, v->value.u16);
        break;
    case AMQP_FIELD_KIND_I32:
        lua_pushnumber(L, v->value.i32);
        break;
    case AMQP_FIELD_KIND_U32:
        lua_pushnumber(L, v->value.u32);
        break;
    case AMQP_FIELD_KIND_I64:
        lua_pushnumber(L, (double)v->value.i64);
        break;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
        lua_pushnumber(L, (double)v->value.u64);
        break;
    case AMQP_FIELD_KIND_F32:
        lua_pushnumber(L, v->value.f32);
        break;
    case AMQP_FIELD_KIND_F64:
        lua_pushnumber(L, v->value.f64);
        break;
    case AMQP_FIELD_KIND_DECIMAL: {
        double d = v->value.decimal.value;
        for (int i = 0; i < v->value.decimal.decimals; i++)
            d /= 10;
        lua_pushnumber(L, d);
        break;
    }
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        pt__push_bytes(L, v->value.bytes);
        break;
    case AMQP_FIELD_KIND_ARRAY:
        lua_createtable(L, v->value.array.num_entries, 0);
        for (int i = 0; i < v->value.array.num_entries; i++) {
            pt__push_field(L, &v->value.array.entries[i], depth + 1);
            lua_rawseti(L, -2, i + 1);
        }
        break;
    case AMQP_FIELD_KIND_TABLE:
        pt__push_table(L, &v->value.table, depth + 1);
        break;
    default:
        lua_pushnil(L);
        break;
    }
}

static void pt__push_table(lua_State *L, const amqp_table_t *t, int depth)
{
    lua_createtable(L, 0, t->num_entries);
    for (int i = 0; i < t->num_entries; i++) {
        pt__push_bytes(L, t->entries[i].key);
        pt__push_field(L, &t->entries[i].value, depth);
        lua_rawset(L, -3);
    }
}

/* The request table's amqp field: self.request.amqp. */
static void pt__push_amqp(lua_State *L, void *ud)
{
    pt__delivery_t *d = ud;
    const amqp_envelope_t *e = &d->env;
    const amqp_basic_properties_t *p = &e->message.properties;
    lua_createtable(L, 0, 20);
    pt__push_bytes(L, e->exchange);
    lua_setfield(L, -2, "exchange");
    pt__push_bytes(L, e->routing_key);
    lua_setfield(L, -2, "routing_key");
    lua_pushstring(L, d->c->queue);
    lua_setfield(L, -2, "queue");
    lua_pushboolean(L, e->redelivered);
    lua_setfield(L, -2, "redelivered");
    lua_pushnumber(L, (double)e->delivery_tag);
    lua_setfield(L, -2, "delivery_tag");
    for (size_t i = 0; i < pt_amqp_n_string_props; i++) {
        const pt_amqp_string_prop_t *sp = &pt_amqp_string_props[i];
        if (p->_flags & sp->flag) {
            pt__push_bytes(L, *(const amqp_bytes_t *)((const char *)p + sp->off));
            lua_setfield(L, -2, sp->key);
        }
    }
    if (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG) {
        lua_pushboolean(L, p->delivery_mode == 2);
        lua_setfield(L, -2, "persistent");
    }
    if (p->_flags & AMQP_BASIC_PRIORITY_FLAG) {
        lua_pushnumber(L, p->priority);
        lua_setfield(L, -2, "priority");
    }
    if (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG) {
        lua_pushnumber(L, (double)p->timestamp);
        lua_setfield(L, -2, "timestamp");
    }
    if (p->_flags & AMQP_BASIC_HEADERS_FLAG)
        pt__push_table(L, &p->headers, 1);
    else
        lua_newtable(L);
    lua_setfield(L, -2, "headers");
}

/* Once the thread has ended the answer just waits: pt_amqp_channels_free
 * frees it. */
static void pt__answer(pt__delivery_t *d)
{
    pt_queue_push(&d->c->answers, &d->node);
}

static void pt__on_done(void *ud, const pt_lua_result_t *res)
{
    pt__delivery_t *d = ud;
    d->status = res->status;
    if (d->trace.call) {
        pt_span_int(d->trace.call, "portico.status", res->status);
        if (res->status >= 500) pt_span_error(d->trace.call, "the service failed");
        pt_span_end(d->trace.call);
        d->trace.call = NULL;
    }
    if ((d->resp = malloc(res->body_len + 1))) {
        memcpy(d->resp, res->body, res->body_len);
        d->resp_len = res->body_len;
    }
    d->resp_ctype = res->content_type ? strdup(res->content_type) : NULL;
    pt_worker_t *w = d->w;
    pt__answer(d);
    pt_worker_task_end(w); /* a draining worker may end now */
}

/* Headers whose values are text or numbers also go into
 * self.request.http.headers, so a service reads them the same way from
 * every channel; only those with a token name and a value that is a valid
 * HTTP field value (no NUL, CR, LF or other control byte), so a publisher
 * cannot hand a service a header no HTTP client could send. All of them
 * are bounded by the content header frame (frame_max, 128 KiB). */
/* The delivery's trace: its traceparent and tracestate headers (text, each
 * once) when valid, a new trace otherwise; a consumer span of its own. */
static void pt__trace_begin(pt__delivery_t *d, const amqp_table_t *h, int n)
{
    const char *v[2] = {NULL, NULL};
    size_t len[2] = {0, 0};
    int seen[2] = {0, 0};
    static const char *const names[2] = {"traceparent", "tracestate"};
    for (int i = 0; i < n; i++) {
        const amqp_table_entry_t *e = &h->entries[i];
        for (int k = 0; k < 2; k++) {
            if (e->key.len != strlen(names[k]) || strncasecmp(e->key.bytes, names[k], e->key.len))
                continue;
            seen[k]++;
            if (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES) {
                v[k] = e->value.value.bytes.bytes;
                len[k] = e->value.value.bytes.len;
            }
        }
    }
    for (int k = 0; k < 2; k++)
        if (seen[k] != 1) v[k] = NULL;
    pt_trace_begin(&d->trace, v[0], len[0], v[0] ? v[1] : NULL, len[1]);
    const pt__consumer_t *c = d->c;
    d->trace.call =
        pt_span_new(&d->trace, PT_SPAN_CONSUMER, c->channel.name, strlen(c->channel.name));
    pt_span_str(d->trace.call, "messaging.system", "rabbitmq", 8);
    pt_span_str(d->trace.call, "messaging.destination.name", c->queue, strlen(c->queue));
    pt_span_str(d->trace.call, "portico.channel", c->channel.name, strlen(c->channel.name));
    pt_span_str(d->trace.call, "portico.service", c->channel.service, strlen(c->channel.service));
    pt_span_str(d->trace.call, "portico.cid", d->cid, strlen(d->cid));
}

static void pt__on_worker(pt_worker_t *w, void *arg)
{
    pt__delivery_t *d = arg;
    pt__consumer_t *c = d->c;
    if (!w->lua) {
        pt__answer(d); /* status 0: requeued */
        return;
    }
    if (!pt_lua_has_service(w->lua, c->channel.service)) {
        /* Removed since the start: a failure, not a "not found" to ack. */
        static const char msg[] = "{\"error\":{\"status\":503,\"message\":\"service not loaded\"}}";
        pt_log_error("AMQP channel '%s': service '%s' is not loaded", c->channel.name,
                     c->channel.service);
        d->status = 503;
        if ((d->resp = strdup(msg))) d->resp_len = sizeof msg - 1;
        d->resp_ctype = strdup("application/json");
        pt__answer(d);
        return;
    }
    const amqp_table_t *h = &d->env.message.properties.headers;
    int n = (d->env.message.properties._flags & AMQP_BASIC_HEADERS_FLAG) ? h->num_entries : 0;
    pt_lua_header_t *hdrs = n ? calloc((size_t)n, sizeof *hdrs) : NULL;
    char(*nums)[32] = n ? calloc((size_t)n, sizeof *nums) : NULL;
    size_t nh = 0;
    for (int i = 0; hdrs && nums && i < n; i++) {
        const amqp_table_entry_t *e = &h->entries[i];
        pt_lua_header_t *o = &hdrs[nh];
        o->name = e->key.bytes;
        o->name_len = e->key.len;
        /* what reaches http.headers obeys the HTTP field syntax, as a
         * request's headers do (the typed amqp.headers keep everything) */
        if (!pt_field_token(e->key.bytes, e->key.len)) continue;
        switch (e->value.kind) {
        case AMQP_FIELD_KIND_UTF8:
        case AMQP_FIELD_KIND_BYTES:
            o->value = e->value.value.bytes.bytes ? e->value.value.bytes.bytes : "";
            o->value_len = e->value.value.bytes.len;
            if (!pt_field_value(o->value, o->value_len)) continue;
            break;
        case AMQP_FIELD_KIND_I8:
            snprintf(nums[i], 32, "%d", e->value.value.i8);
            goto num;
        case AMQP_FIELD_KIND_U8:
            snprintf(nums[i], 32, "%u", e->value.value.u8);
            goto num;
        case AMQP_FIELD_KIND_I16:
            snprintf(nums[i], 32, "%d", e->value.value.i16);
            goto num;
        case AMQP_FIELD_KIND_U16:
            snprintf(nums[i], 32, "%u", e->value.value.u16);
            goto num;
        case AMQP_FIELD_KIND_I32:
            snprintf(nums[i], 32, "%" PRId32, e->value.value.i32);
            goto num;
        case AMQP_FIELD_KIND_U32:
            snprintf(nums[i], 32, "%" PRIu32, e->value.value.u32);
            goto num;
        case AMQP_FIELD_KIND_I64:
            snprintf(nums[i], 32, "%" PRId64, e->value.value.i64);
            goto num;
        case AMQP_FIELD_KIND_U64:
            snprintf(nums[i], 32, "%" PRIu64, e->value.value.u64);
            goto num;
        case AMQP_FIELD_KIND_BOOLEAN:
            snprintf(nums[i], 32, "%s", e->value.value.boolean ? "true" : "false");
        num:
            o->value = nums[i];
            o->value_len = strlen(nums[i]);
            break;
        default:
            continue;
        }
        nh++;
    }
    if (pt_trace_enabled()) pt__trace_begin(d, h, n);
    amqp_bytes_t body = d->env.message.body;
    pt_lua_call_t call = {
        .service = c->channel.service,
        .cid = d->cid,
        .method = "POST",
        .path = c->queue,
        .path_len = strlen(c->queue),
        .query = "",
        .query_len = 0,
        .headers = hdrs,
        .n_headers = nh,
        .body = body.len ? body.bytes : "",
        .body_len = body.len,
        .channel = &c->channel,
        .push_extra = pt__push_amqp,
        .extra_ud = d,
        .trace = d->trace.on ? &d->trace : NULL,
    };
    d->w = w;
    pt_worker_task_begin(w);
    if (pt_lua_dispatch(w->lua, &call, pt__on_done, d) != 0) {
        pt_span_error(d->trace.call, "cannot start the service");
        pt_span_end(d->trace.call);
        d->trace.call = NULL;
        pt__answer(d);
        pt_worker_task_end(w);
    }
    free(hdrs);
    free(nums);
}

/* ---- the consumer's thread ---- */

static int pt__consumer_open(pt__consumer_t *c, char *err, size_t errlen)
{
    char why[200];
    if (!(c->conn = pt_amqp_connect(&c->ep, PT__CONNECT_TIMEOUT_MS, err, errlen))) return -1;
    amqp_basic_qos(c->conn, 1, 0, (uint16_t)c->prefetch, 0);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        amqp_basic_consume(c->conn, 1, amqp_cstring_bytes(c->queue), amqp_empty_bytes, 0, 0, 0,
                           amqp_empty_table);
        r = amqp_get_rpc_reply(c->conn);
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        pt_amqp_reply_error(r, why, sizeof why);
        snprintf(err, errlen, "cannot consume from queue '%s' on %s: %s", c->queue, c->ep.display,
                 why);
        pt_amqp_disconnect(c->conn, r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
                                        r.reply.id == AMQP_CHANNEL_CLOSE_METHOD);
        c->conn = NULL;
        return -1;
    }
    c->gen++;
    c->inflight = 0;
    return 0;
}

static void pt__drop_pending(pt__consumer_t *c)
{
    while (c->pend_head) {
        pt__delivery_t *d = c->pend_head;
        c->pend_head = d->next;
        pt__delivery_free(d);
    }
    c->pend_tail = NULL;
}

static void pt__unlink_all(pt__consumer_t *c, pt__delivery_t *d)
{
    uv_mutex_lock(&c->lock);
    if (d->all_prev)
        d->all_prev->all_next = d->all_next;
    else if (c->all == d)
        c->all = d->all_next;
    if (d->all_next) d->all_next->all_prev = d->all_prev;
    d->all_prev = d->all_next = NULL;
    uv_mutex_unlock(&c->lock);
}

/* The reply to reply_to, on the default exchange, with the request's
 * correlation_id and the service's status in the x-portico-status header. */
static int pt__reply(pt__consumer_t *c, pt__delivery_t *d)
{
    const amqp_basic_properties_t *in = &d->env.message.properties;
    amqp_basic_properties_t p = {0};
    amqp_table_entry_t status = {.key = amqp_cstring_bytes("x-portico-status")};
    status.value.kind = AMQP_FIELD_KIND_I32;
    status.value.value.i32 = d->status;
    p._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    p.headers.num_entries = 1;
    p.headers.entries = &status;
    p.delivery_mode = 1;
    if (in->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) {
        p._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        p.correlation_id = in->correlation_id;
    }
    if (d->resp_ctype) {
        p._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
        p.content_type = amqp_cstring_bytes(d->resp_ctype);
    }
    amqp_bytes_t body = {d->resp ? d->resp_len : 0, d->resp};
    pt_metrics_inc(&c->mx->published, 1);
    return amqp_basic_publish(c->conn, 1, amqp_empty_bytes, in->reply_to, 0, 0, &p, body);
}

/* Acks or rejects one answered delivery. -1 when the connection failed. */
static int pt__settle(pt__consumer_t *c, pt__delivery_t *d)
{
    int rc = AMQP_STATUS_OK;
    int has_reply = (d->env.message.properties._flags & AMQP_BASIC_REPLY_TO_FLAG) &&
                    d->env.message.properties.reply_to.len > 0;
    c->inflight--;
    if (d->status == 0 || d->status == 400 || d->status >= 500) pt_metrics_inc(&c->mx->failed, 1);
    if (d->status == 0) {
        rc = amqp_basic_reject(c->conn, 1, d->tag, 1);
    } else if (d->status == 400 || d->status >= 500) {
        pt_log(PT_LOG_WARN, "AMQP channel '%s': delivery %" PRIu64 " failed with status %d; %s",
               c->channel.name, d->tag, d->status,
               c->requeue ? "requeued" : "rejected to the dead-letter exchange");
        if (has_reply && !c->requeue) rc = pt__reply(c, d);
        if (rc == AMQP_STATUS_OK) rc = amqp_basic_reject(c->conn, 1, d->tag, c->requeue);
    } else {
        if (has_reply) rc = pt__reply(c, d);
        if (rc == AMQP_STATUS_OK) rc = amqp_basic_ack(c->conn, 1, d->tag, 0);
    }
    return rc == AMQP_STATUS_OK ? 0 : -1;
}

/* Settles every answer that came back. Answers of an older connection are
 * dropped: the broker has requeued those deliveries already. */
static int pt__settle_answers(pt__consumer_t *c, char *err, size_t errlen)
{
    pt_queue_node_t *n = pt_queue_take(&c->answers, NULL);
    int rc = 0;
    while (n) {
        pt__delivery_t *d = PT_QUEUE_ENTRY(n, pt__delivery_t, node);
        n = n->next;
        pt__unlink_all(c, d);
        if (rc == 0 && c->conn && d->gen == c->gen && pt__settle(c, d) != 0) {
            snprintf(err, errlen, "cannot acknowledge: the connection failed");
            rc = -1;
        }
        pt__delivery_free(d);
    }
    return rc;
}

/* Queues one received delivery for the workers. */
static int pt__queue_delivery(pt__consumer_t *c, amqp_envelope_t *env, char *err, size_t errlen)
{
    pt__delivery_t *d = calloc(1, sizeof *d);
    if (!d) {
        amqp_destroy_envelope(env);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pt_metrics_inc(&c->mx->delivered, 1);
    d->c = c;
    d->gen = c->gen;
    d->tag = env->delivery_tag;
    d->env = *env;
    const amqp_basic_properties_t *p = &env->message.properties;
    if ((p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) &&
        pt_cid_valid(p->correlation_id.bytes, p->correlation_id.len))
        snprintf(d->cid, sizeof d->cid, "%.*s", (int)p->correlation_id.len,
                 (const char *)p->correlation_id.bytes);
    else
        pt_cid_new(d->cid);
    if (c->pend_tail)
        c->pend_tail->next = d;
    else
        c->pend_head = d;
    c->pend_tail = d;
    return 0;
}

/* A Basic.Deliver was read: its content, bounded. The header announces the
 * body's size before any of it is read, so a body over max_body is read
 * frame by frame into nothing and the delivery rejected without requeue
 * (it would never fit: to the dead-letter exchange), the service never
 * run. rabbitmq-c's amqp_consume_message would have held it whole. */
static int pt__on_deliver(pt__consumer_t *c, const amqp_frame_t *f, char *err, size_t errlen)
{
    const amqp_basic_deliver_t *dm = f->payload.method.decoded;
    amqp_envelope_t env = {0};
    uint64_t size;
    env.channel = f->channel;
    env.delivery_tag = dm->delivery_tag;
    env.redelivered = dm->redelivered;
    env.consumer_tag = amqp_bytes_malloc_dup(dm->consumer_tag);
    env.exchange = amqp_bytes_malloc_dup(dm->exchange);
    env.routing_key = amqp_bytes_malloc_dup(dm->routing_key);
    if (pt_amqp_read_header(c->conn, f->channel, &env.message, &size, err, errlen) != 0) {
        init_amqp_pool(&env.message.pool, 4096);
        amqp_destroy_envelope(&env);
        return -1;
    }
    int keep = size <= c->max_body;
    if (pt_amqp_read_body(c->conn, f->channel, &env.message, size, keep, err, errlen) != 0) {
        amqp_destroy_envelope(&env);
        return -1;
    }
    if (keep) return pt__queue_delivery(c, &env, err, errlen);
    pt_metrics_inc(&c->mx->delivered, 1);
    pt_metrics_inc(&c->mx->failed, 1);
    pt_log(PT_LOG_WARN,
           "AMQP channel '%s': delivery %" PRIu64 " has a body of %" PRIu64
           " bytes, over server.max_body_bytes (%" PRIu64 "); rejected to the dead-letter exchange",
           c->channel.name, env.delivery_tag, size, c->max_body);
    int rc = amqp_basic_reject(c->conn, f->channel, env.delivery_tag, 0);
    amqp_destroy_envelope(&env);
    if (rc != AMQP_STATUS_OK) {
        snprintf(err, errlen, "cannot reject: the connection failed");
        return -1;
    }
    return 0;
}

static int pt__receive(pt__consumer_t *c, char *err, size_t errlen)
{
    for (;;) {
        amqp_frame_t f;
        struct timeval tick = {0, 1};
        amqp_maybe_release_buffers(c->conn);
        int rc = amqp_simple_wait_frame_noblock(c->conn, &f, &tick);
        if (rc == AMQP_STATUS_TIMEOUT) return 0;
        if (rc != AMQP_STATUS_OK) {
            snprintf(err, errlen, "connection failed: %s", amqp_error_string2(rc));
            return -1;
        }
        if (f.frame_type != AMQP_FRAME_METHOD) continue;
        switch (f.payload.method.id) {
        case AMQP_BASIC_DELIVER_METHOD:
            if (pt__on_deliver(c, &f, err, errlen) != 0) return -1;
            continue;
        case AMQP_CHANNEL_CLOSE_METHOD:
        case AMQP_CONNECTION_CLOSE_METHOD: {
            char why[200];
            pt_amqp_answer_close(c->conn, f.channel, &f.payload.method, why, sizeof why);
            snprintf(err, errlen, "the broker closed the %s: %s",
                     f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ? "channel" : "connection",
                     why);
            return -1;
        }
        case AMQP_BASIC_CANCEL_METHOD:
            snprintf(err, errlen, "the broker cancelled the consumer (queue deleted?)");
            return -1;
        default:
            continue; /* basic.ack of a reply and the like */
        }
    }
}

static void pt__dispatch(pt__consumer_t *c)
{
    pt_amqp_channels_t *chs = c->owner;
    while (c->pend_head && c->inflight < c->concurrency) {
        pt__delivery_t *d = c->pend_head;
        pt_worker_t *w = &chs->workers[c->rr++ % (unsigned)chs->n_workers];
        uv_mutex_lock(&c->lock);
        d->all_prev = NULL;
        d->all_next = c->all;
        if (c->all) c->all->all_prev = d;
        c->all = d;
        uv_mutex_unlock(&c->lock);
        if (!(c->pend_head = d->next)) c->pend_tail = NULL;
        d->next = NULL;
        c->inflight++;
        if (pt_worker_call(w, pt__on_worker, d) != 0) pt__answer(d); /* not handled: requeued */
    }
}

static void pt__down(pt__consumer_t *c)
{
    pt__drop_pending(c);
    pt_amqp_disconnect(c->conn, 0);
    c->conn = NULL;
    c->inflight = 0;
}

static void pt__consumer_main(void *arg)
{
    pt__consumer_t *c = arg;
    char err[320];
    int backoff = PT__BACKOFF_MIN_MS, failures = 0, stop, quiesce, ever_up = 0;
    for (;;) {
        uv_mutex_lock(&c->lock);
        stop = c->stop;
        quiesce = c->quiesce;
        uv_mutex_unlock(&c->lock);
        if (stop) break;
        if (!c->conn) {
            pt__settle_answers(c, err, sizeof err); /* stale ones: freed */
            if (quiesce) {
                pt_amqp_wait(NULL, pt_queue_fd(&c->answers), 1000);
                continue;
            }
            if (pt__consumer_open(c, err, sizeof err) != 0) {
                pt_log(failures++ == 0 ? PT_LOG_WARN : PT_LOG_DEBUG,
                       "AMQP channel '%s': %s; retrying in the background", c->channel.name, err);
                pt_amqp_wait(NULL, pt_queue_fd(&c->answers), backoff);
                backoff = backoff * 2 > PT__BACKOFF_MAX_MS ? PT__BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            pt_log_info("AMQP channel '%s': consuming queue '%s' on %s (prefetch %d)",
                        c->channel.name, c->queue, c->ep.display, c->prefetch);
            if (ever_up) pt_metrics_inc(&c->mx->reconnects, 1);
            pt_metrics_inc((uint64_t *)&c->mx->up, 1);
            ever_up = 1;
            failures = 0;
            backoff = PT__BACKOFF_MIN_MS;
        }
        int hb = amqp_get_heartbeat(c->conn);
        if (pt__settle_answers(c, err, sizeof err) != 0 || pt__receive(c, err, sizeof err) != 0) {
            pt_log_warn("AMQP channel '%s': connection lost: %s; reconnecting", c->channel.name,
                        err);
            pt__down(c);
            pt_metrics_inc((uint64_t *)&c->mx->up, -1);
            failures = 1;
            continue;
        }
        if (!quiesce) pt__dispatch(c);
        pt_amqp_wait(c->conn, pt_queue_fd(&c->answers),
                     hb > 0 && hb * 500 < 1000 ? hb * 500 : 1000);
    }
    if (c->conn) pt_metrics_inc((uint64_t *)&c->mx->up, -1);
    /* Stopping: ack what came back; the rest is requeued when we close. */
    if (c->conn && pt__settle_answers(c, err, sizeof err) == 0) {
        pt__drop_pending(c);
        pt_amqp_disconnect(c->conn, 1);
    } else {
        pt__drop_pending(c);
        pt_amqp_disconnect(c->conn, 0);
    }
    c->conn = NULL;
}

/* ---- the set ---- */

static void pt__set_flag(pt_amqp_channels_t *chs, int stop)
{
    for (size_t i = 0; chs && i < chs->n; i++) {
        pt__consumer_t *c = &chs->consumers[i];
        uv_mutex_lock(&c->lock);
        if (stop)
            c->stop = 1;
        else
            c->quiesce = 1;
        uv_mutex_unlock(&c->lock);
        pt_queue_wake(&c->answers);
    }
}

void pt_amqp_channels_quiesce(pt_amqp_channels_t *chs)
{
    pt__set_flag(chs, 0);
}

void pt_amqp_channels_stop(pt_amqp_channels_t *chs)
{
    pt__set_flag(chs, 1);
    for (size_t i = 0; chs && i < chs->n; i++)
        if (chs->consumers[i].started) {
            uv_thread_join(&chs->consumers[i].thread);
            chs->consumers[i].started = 0;
        }
}

void pt_amqp_channels_free(pt_amqp_channels_t *chs)
{
    if (!chs) return;
    pt_amqp_channels_stop(chs);
    for (size_t i = 0; i < chs->n; i++) {
        pt__consumer_t *c = &chs->consumers[i];
        /* Answered deliveries are on both lists; free through "all". */
        for (pt_queue_node_t *n = pt_queue_take(&c->answers, NULL), *next; n; n = next) {
            pt__delivery_t *d = PT_QUEUE_ENTRY(n, pt__delivery_t, node);
            next = n->next;
            if (!d->all_prev && c->all != d) pt__delivery_free(d);
        }
        for (pt__delivery_t *d = c->all, *next; d; d = next) {
            next = d->all_next;
            pt__delivery_free(d);
        }
        pt__drop_pending(c);
        pt_queue_destroy(&c->answers);
        uv_mutex_destroy(&c->lock);
        free(c->channel.name);
        free(c->channel.service);
        free(c->queue);
        pt_amqp_endpoint_free(&c->ep);
    }
    free(chs->consumers);
    free(chs);
}

int pt_amqp_channels_start(const pt_config_t *cfg, pt_worker_t *workers, int n_workers,
                           pt_amqp_channels_t **out)
{
    *out = NULL;
    if (cfg->n_amqp_channels == 0 || n_workers < 1) return 0;
    pt_amqp_channels_t *chs = calloc(1, sizeof *chs);
    if (!chs || !(chs->consumers = calloc(cfg->n_amqp_channels, sizeof *chs->consumers))) {
        free(chs);
        return -1;
    }
    chs->workers = workers;
    chs->n_workers = n_workers;
    int ok = 1;
    for (size_t i = 0; i < cfg->n_amqp_channels; i++) {
        const pt_amqp_channel_cfg_t *a = &cfg->amqp_channels[i];
        pt__consumer_t *c = &chs->consumers[chs->n++];
        c->owner = chs;
        uv_mutex_init(&c->lock);
        int q_rc = pt_queue_init(&c->answers);
        if (q_rc == 0) q_rc = pt_queue_start_fd(&c->answers);
        c->channel.type = PT_CHANNEL_AMQP;
        c->channel.name = strdup(a->channel.name);
        c->mx = pt_metrics_amqp("channel", a->channel.name);
        c->channel.service = strdup(a->channel.service);
        c->channel.line = a->channel.line;
        c->queue = strdup(a->queue);
        int ep_rc = pt_amqp_endpoint_copy(&c->ep, &a->ep);
        char what[160];
        snprintf(what, sizeof what, "AMQP channel '%s'", a->channel.name);
        pt_amqp_tls_warn(what, &a->ep);
        c->prefetch = a->prefetch;
        c->concurrency = a->concurrency;
        c->requeue = a->requeue;
        c->max_body = cfg->max_body_bytes;
        if (q_rc != 0 || !c->channel.name || !c->channel.service || !c->queue || ep_rc != 0) ok = 0;
    }
    for (size_t i = 0; ok && i < chs->n; i++) {
        pt__consumer_t *c = &chs->consumers[i];
        if (uv_thread_create(&c->thread, pt__consumer_main, c) != 0)
            ok = 0;
        else
            c->started = 1;
    }
    if (!ok) {
        pt_amqp_channels_free(chs);
        return -1;
    }
    *out = chs;
    return 0;
}
