#include "pt_redis.h"
#include "pt_log.h"
#include "pt_metrics_redis.h"
#include "pt_tls.h"
#include "pt_transport.h"
#include "pt_transport_tls.h"
#include "pt_util.h"
#include "pt_worker.h"

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <sodium.h>

#include <stdlib.h>
#include <string.h>

#define PT__BACKOFF_MIN_MS 100
#define PT__BACKOFF_MAX_MS 2000
#define PT__READ_SIZE (16 * 1024)

typedef enum {
    PT__IDLE = 0,   /* never connected: the first command connects */
    PT__CONNECTING, /* resolving or connecting: commands queue */
    PT__READY,      /* connected: commands are written */
    PT__BACKOFF     /* down: commands fail at once until the retry */
} pt__state_t;

typedef struct pt__cmd_s {
    struct pt__cmd_s *next;
    pt_redis_cb cb; /* NULL: one of ours (AUTH, SELECT, SUBSCRIBE) */
    void *arg;
    uint64_t deadline; /* uv_now ms */
    uint64_t t0;       /* uv_hrtime, for the round-trip histogram */
} pt__cmd_t;

typedef struct pt__conn_s pt__conn_t;

typedef struct pt__resolve_s {
    uv_getaddrinfo_t req;
    pt_redis_t *r; /* NULL once r gave up on it */
} pt__resolve_t;

struct pt_redis_s {
    uv_loop_t *loop;
    char *host, *user, *password, *sni, *display;
    int port, db;
    SSL_CTX *ssl_ctx; /* a reference; NULL: plain TCP */
    uint64_t timeout_ms;
    pt__state_t state;
    pt__conn_t *conn;
    pt__resolve_t *resolving;
    redisReader *reader;
    pt__cmd_t *head, **tail;
    pt_buf_t out; /* formatted, not handed to the transport yet */
    uv_timer_t timer;
    uint64_t timer_due; /* 0: not armed */
    uv_prepare_t flush;
    int flush_on;
    uint64_t connect_deadline, retry_at, backoff_ms;
    unsigned gen; /* bumped at every reset: callbacks notice one made under them */
    int handles;  /* timer and prepare, open */
    int freed;
    int up_counted;
    /* subscriber */
    int subscriber;
    int subscribed;                  /* the first SUBSCRIBE was confirmed on this connection */
    uint64_t ping_at, pong_deadline; /* the subscriber's next PING; its answer's limit (0: none) */
    uint64_t ping_ms; /* a subscriber may hear nothing for long: a PING each heartbeat */
    pt_redis_msg_cb msg_cb;
    void *msg_arg;
    char **channels;
    size_t n_channels;
};

struct pt__conn_s {
    pt_redis_t *r; /* NULL once detached: it only closes then */
    pt_transport_tcp_t tcp;
    pt_transport_tls_t tls;
    pt_tls_client_watch_t watch; /* why a handshake failed */
    int tls_on;
    int writing;
    char read_buf[PT__READ_SIZE];
};

typedef struct {
    pt_transport_write_t base; /* first */
    pt__conn_t *c;
    char *data;
} pt__wreq_t;

/* One outage is logged once in the process, not once per loop. */
static int pt__outage;
static pt_redis_t *pt__main;

static void pt__arm(pt_redis_t *r);
static void pt__connect(pt_redis_t *r);
static void pt__lost(pt_redis_t *r, int reason, int err, const char *why);
static void pt__want_flush(pt_redis_t *r);

const char *pt_redis_strerror(int err)
{
    switch (err) {
    case 0:
        return "ok";
    case PT_REDIS_EDOWN:
        return "redis down";
    case PT_REDIS_ETIMEOUT:
        return "redis timeout";
    case PT_REDIS_EPROTO:
        return "redis protocol error";
    case PT_REDIS_ENOMEM:
        return "out of memory";
    case PT_REDIS_EINVAL:
        return "invalid redis call";
    default:
        return "redis error";
    }
}

/* ---- the connection ---- */

static pt_transport_t *pt__io(pt__conn_t *c)
{
    return c->tls_on ? &c->tls.base : &c->tcp.base;
}

static void pt__conn_closed(pt_transport_t *t, int status)
{
    (void)status;
    free(t->data);
}

/* Detaches r's connection and closes it (its memory goes in the close
 * callback, after the callbacks of its queued writes). */
static void pt__conn_drop(pt_redis_t *r)
{
    pt__conn_t *c = r->conn;
    if (!c) return;
    r->conn = NULL;
    c->r = NULL;
    pt_transport_t *io = pt__io(c); /* TLS closes the TCP under it (whose data is TLS's) */
    io->data = c;
    pt_transport_close(io, pt__conn_closed);
}

static void pt__write_done(pt_transport_write_t *req, int status)
{
    pt__wreq_t *w = (pt__wreq_t *)req;
    pt__conn_t *c = w->c;
    free(w->data);
    free(w);
    c->writing = 0;
    pt_redis_t *r = c->r;
    if (!r) return;
    if (status < 0) {
        pt__lost(r, PT_METRICS_REDIS_LOST, PT_REDIS_EDOWN, uv_strerror(status));
        return;
    }
    if (r->out.len) pt__want_flush(r);
}

/* Hands r->out to the transport: what the socket takes now, the rest as one
 * queued write (one in flight at a time; more collects in r->out). */
static void pt__flush_out(pt_redis_t *r)
{
    pt__conn_t *c = r->conn;
    if (!c || r->state != PT__READY || c->writing || !r->out.len) return;
    pt_transport_t *io = pt__io(c);
    uv_buf_t b = uv_buf_init(r->out.data, (unsigned)r->out.len);
    int n = pt_transport_try_write(io, &b, 1);
    if (n == UV_EAGAIN) n = 0;
    if (n < 0) {
        pt__lost(r, PT_METRICS_REDIS_LOST, PT_REDIS_EDOWN, uv_strerror(n));
        return;
    }
    if ((size_t)n == r->out.len) {
        r->out.len = 0;
        return;
    }
    pt__wreq_t *w = calloc(1, sizeof *w);
    if (!w) {
        pt__lost(r, PT_METRICS_REDIS_LOST, PT_REDIS_ENOMEM, "out of memory");
        return;
    }
    size_t rest = r->out.len - (size_t)n;
    if (n == 0) { /* the buffer itself goes with the write */
        w->data = r->out.data;
        r->out = (pt_buf_t){0};
    } else if ((w->data = malloc(rest))) {
        memcpy(w->data, r->out.data + n, rest);
        r->out.len = 0;
    } else {
        free(w);
        pt__lost(r, PT_METRICS_REDIS_LOST, PT_REDIS_ENOMEM, "out of memory");
        return;
    }
    w->c = c;
    b = uv_buf_init(w->data, (unsigned)rest);
    int rc = pt_transport_write(io, &w->base, &b, 1, pt__write_done);
    if (rc != 0) {
        free(w->data);
        free(w);
        pt__lost(r, PT_METRICS_REDIS_LOST, PT_REDIS_EDOWN, uv_strerror(rc));
        return;
    }
    c->writing = 1;
}

/* Before the loop polls: what this turn queued goes out in one write. */
static void pt__on_flush(uv_prepare_t *h)
{
    pt_redis_t *r = h->data;
    r->flush_on = 0;
    uv_prepare_stop(h);
    pt__flush_out(r);
}

static void pt__want_flush(pt_redis_t *r)
{
    if (r->flush_on || r->state != PT__READY) return;
    r->flush_on = 1;
    uv_prepare_start(&r->flush, pt__on_flush);
}

/* ---- the queue of pending commands ---- */

static pt__cmd_t *pt__push(pt_redis_t *r, pt_redis_cb cb, void *arg)
{
    pt__cmd_t *cmd = malloc(sizeof *cmd);
    if (!cmd) return NULL;
    cmd->next = NULL;
    cmd->cb = cb;
    cmd->arg = arg;
    cmd->deadline = uv_now(r->loop) + r->timeout_ms;
    cmd->t0 = uv_hrtime();
    *r->tail = cmd;
    r->tail = &cmd->next;
    return cmd;
}

static pt__cmd_t *pt__pop(pt_redis_t *r)
{
    pt__cmd_t *cmd = r->head;
    if (!cmd) return NULL;
    r->head = cmd->next;
    if (!r->head) r->tail = &r->head;
    return cmd;
}

/* The command in RESP ("*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n") straight into
 * r->out. Not redisFormatCommandArgv: its sprintf of every length and its
 * own buffer (malloc, copy, free) were half the client's instructions per
 * command (callgrind, test_redis throughput); the grammar is this loop. */
static int pt__append(pt_redis_t *r, int argc, const char **argv, const size_t *lens)
{
    size_t need = 16;
    for (int i = 0; i < argc; i++)
        need += (lens ? lens[i] : strlen(argv[i])) + 26;
    if (pt_buf_reserve(&r->out, need) != 0) return PT_REDIS_ENOMEM;
    char *p = r->out.data + r->out.len;
    *p++ = '*';
    p += pt_u64_digits((uint64_t)argc, p);
    *p++ = '\r', *p++ = '\n';
    for (int i = 0; i < argc; i++) {
        size_t len = lens ? lens[i] : strlen(argv[i]);
        *p++ = '$';
        p += pt_u64_digits(len, p);
        *p++ = '\r', *p++ = '\n';
        memcpy(p, argv[i], len);
        p += len;
        *p++ = '\r', *p++ = '\n';
    }
    r->out.len = (size_t)(p - r->out.data);
    return 0;
}

/* Fails every pending command: err, or PT_REDIS_ETIMEOUT for those whose
 * time is up. The list is taken first, so a callback that sends again sees
 * the new state. */
static void pt__fail_all(pt_redis_t *r, int err)
{
    pt__cmd_t *cmd = r->head;
    uint64_t now = uv_now(r->loop);
    r->head = NULL;
    r->tail = &r->head;
    while (cmd) {
        pt__cmd_t *next = cmd->next;
        if (cmd->cb) {
            int e = err == PT_REDIS_EDOWN && now >= cmd->deadline ? PT_REDIS_ETIMEOUT : err;
            pt_metrics_redis_fail(e == PT_REDIS_ETIMEOUT ? PT_METRICS_REDIS_TIMEOUT
                                                         : PT_METRICS_REDIS_LOST);
            cmd->cb(cmd->arg, NULL, e);
        }
        free(cmd);
        cmd = next;
    }
}

static void pt__set_up(pt_redis_t *r, int up)
{
    if (up == r->up_counted) return;
    r->up_counted = up;
    pt_metrics_redis_up(up ? 1 : -1);
}

/* The connection's set-up was answered: it is up. */
static void pt__mark_up(pt_redis_t *r)
{
    r->backoff_ms = 0;
    if (r->up_counted) return;
    pt__set_up(r, 1);
    if (__atomic_exchange_n(&pt__outage, 0, __ATOMIC_RELAXED) == 1)
        pt_log_info("redis %s: connected again", r->display);
}

/* The connection broke (or timed out, or spoke nonsense): it is dropped,
 * what is pending fails, and a new one is tried after the backoff. */
static void pt__lost(pt_redis_t *r, int reason, int err, const char *why)
{
    int was_up = r->up_counted;
    pt__conn_drop(r);
    if (r->resolving) {
        r->resolving->r = NULL;
        r->resolving = NULL;
    }
    r->gen++;
    if (r->reader) redisReaderFree(r->reader);
    r->reader = NULL;
    r->out.len = 0;
    r->subscribed = 0;
    pt__set_up(r, 0);
    if (reason == PT_METRICS_REDIS_CONNECT || reason == PT_METRICS_REDIS_AUTH ||
        reason == PT_METRICS_REDIS_PROTOCOL)
        pt_metrics_redis_fail(reason);
    if (!r->freed) {
        r->state = PT__BACKOFF;
        r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : PT__BACKOFF_MIN_MS;
        if (r->backoff_ms > PT__BACKOFF_MAX_MS) r->backoff_ms = PT__BACKOFF_MAX_MS;
        /* jitter: the loops of every node do not come back in step */
        uint64_t wait = r->backoff_ms * 3 / 4 + (uint64_t)rand() % (r->backoff_ms / 2 + 1);
        r->retry_at = uv_now(r->loop) + wait;
        if (__atomic_exchange_n(&pt__outage, 1, __ATOMIC_RELAXED) == 0 ||
            reason == PT_METRICS_REDIS_AUTH)
            pt_log_warn("redis %s: %s%s; commands fail at once until it is back", r->display,
                        was_up ? "connection lost: " : "", why);
    }
    pt__fail_all(r, err);
    if (!r->freed) pt__arm(r);
}

/* ---- replies ---- */

static void pt__on_push(pt_redis_t *r, redisReply *rep)
{
    if (rep->type == REDIS_REPLY_ERROR) {
        pt__lost(r, PT_METRICS_REDIS_AUTH, PT_REDIS_EDOWN, rep->str);
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 ||
        rep->element[0]->type != REDIS_REPLY_STRING)
        return; /* +OK of AUTH and SELECT */
    const char *kind = rep->element[0]->str;
    if (!strcmp(kind, "pong")) {
        r->pong_deadline = 0;
        r->ping_at = uv_now(r->loop) + r->ping_ms;
        pt__arm(r);
    } else if (rep->elements < 3) {
        return;
    } else if (!strcmp(kind, "subscribe")) {
        if (!r->subscribed) {
            r->subscribed = 1;
            r->pong_deadline = 0;
            r->ping_at = uv_now(r->loop) + r->ping_ms;
            pt__mark_up(r);
            pt__arm(r);
        }
    } else if (!strcmp(kind, "message") && rep->element[1]->type == REDIS_REPLY_STRING &&
               rep->element[2]->type == REDIS_REPLY_STRING) {
        r->msg_cb(r->msg_arg, rep->element[1]->str, rep->element[2]->str, rep->element[2]->len);
    }
}

static void pt__on_reply(pt_redis_t *r, redisReply *rep)
{
    pt__cmd_t *cmd = pt__pop(r);
    if (!cmd) {
        pt__lost(r, PT_METRICS_REDIS_PROTOCOL, PT_REDIS_EPROTO, "a reply nobody asked for");
        return;
    }
    if (!cmd->cb) { /* AUTH, SELECT, then PING */
        int last = cmd->arg != NULL;
        free(cmd);
        if (rep->type == REDIS_REPLY_ERROR) {
            char why[300];
            snprintf(why, sizeof why, "refused the connection's set-up: %s", rep->str);
            pt__lost(r, PT_METRICS_REDIS_AUTH, PT_REDIS_EDOWN, why);
        } else if (last) {
            pt__mark_up(r);
        }
        return;
    }
    pt_metrics_redis_roundtrip(uv_hrtime() - cmd->t0);
    cmd->cb(cmd->arg, rep, 0);
    free(cmd);
}

static void pt__on_read(pt_transport_t *t, ssize_t nread, const char *data)
{
    pt__conn_t *c = t->data;
    pt_redis_t *r = c->r;
    if (!r) return;
    if (nread < 0) {
        /* a connection that never came up failed to connect (a client
         * certificate refused after a TLS 1.3 handshake, say) */
        int reason = r->up_counted ? PT_METRICS_REDIS_LOST : PT_METRICS_REDIS_CONNECT;
        char why[300], tls[200];
        if (c->tls_on && (nread == UV_EPROTO || !c->tls.handshake_done)) {
            pt_tls_client_why(c->tls.ssl, &c->watch, tls, sizeof tls);
            snprintf(why, sizeof why, "TLS %s: %s",
                     c->tls.handshake_done ? "connection failed" : "handshake failed", tls);
        } else {
            snprintf(why, sizeof why, "%s",
                     nread == UV_EOF ? "closed by redis" : uv_strerror((int)nread));
        }
        pt__lost(r, reason, PT_REDIS_EDOWN, why);
        return;
    }
    if (redisReaderFeed(r->reader, data, (size_t)nread) != REDIS_OK) {
        pt__lost(r, PT_METRICS_REDIS_PROTOCOL, PT_REDIS_EPROTO, "out of memory");
        return;
    }
    unsigned gen = r->gen;
    for (;;) {
        void *reply = NULL;
        if (redisReaderGetReply(r->reader, &reply) != REDIS_OK) {
            char why[200];
            snprintf(why, sizeof why, "unreadable reply: %s", r->reader->errstr);
            pt__lost(r, PT_METRICS_REDIS_PROTOCOL, PT_REDIS_EPROTO, why);
            return;
        }
        if (!reply) break;
        if (r->subscriber)
            pt__on_push(r, reply);
        else
            pt__on_reply(r, reply);
        freeReplyObject(reply);
        if (r->gen != gen || r->freed) return; /* reset (or freed) by a callback */
    }
}

/* The set-up commands go first, before what queued while connecting. */
static int pt__handshake(pt_redis_t *r)
{
    pt_buf_t queued = r->out;
    r->out = (pt_buf_t){0};
    pt__cmd_t *user = r->head;
    pt__cmd_t **user_tail = r->tail;
    r->head = NULL;
    r->tail = &r->head;
    int rc = 0;
    if (r->password) {
        const char *argv[3] = {"AUTH", r->user ? r->user : r->password, r->password};
        rc = pt__append(r, r->user ? 3 : 2, argv, NULL);
        if (!r->subscriber && rc == 0 && !pt__push(r, NULL, NULL)) rc = PT_REDIS_ENOMEM;
    }
    if (rc == 0 && r->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->db);
        const char *argv[2] = {"SELECT", db};
        rc = pt__append(r, 2, argv, NULL);
        if (!r->subscriber && rc == 0 && !pt__push(r, NULL, NULL)) rc = PT_REDIS_ENOMEM;
    }
    if (rc == 0 && !r->subscriber) { /* its answer says the connection is up */
        const char *argv[1] = {"PING"};
        rc = pt__append(r, 1, argv, NULL);
        if (rc == 0 && !pt__push(r, NULL, (void *)1)) rc = PT_REDIS_ENOMEM;
    }
    for (size_t i = 0; rc == 0 && i < r->n_channels; i++) {
        const char *argv[2] = {"SUBSCRIBE", r->channels[i]};
        rc = pt__append(r, 2, argv, NULL);
    }
    if (queued.len && rc == 0) rc = pt_buf_append(&r->out, queued.data, queued.len);
    pt_buf_free(&queued);
    if (user) { /* the user's commands after ours, whose deadlines keep the queue's order */
        for (pt__cmd_t *c = r->head; c; c = c->next)
            if (c->deadline > user->deadline) c->deadline = user->deadline;
        *r->tail = user;
        r->tail = user_tail;
    }
    return rc;
}

static int pt__tls_start(pt__conn_t *c, pt_redis_t *r)
{
    SSL *ssl = pt_tls_client_ssl(r->ssl_ctx, r->sni ? r->sni : r->host);
    if (!ssl) return -1;
    pt_tls_client_watch(ssl, &c->watch);
    if (pt_transport_tls_init(&c->tls, r->loop, &c->tcp.base, ssl, NULL) != 0) return -1;
    c->tls_on = 1;
    return 0;
}

static void pt__on_connect(pt_transport_t *t, int status)
{
    pt__conn_t *c = t->data;
    pt_redis_t *r = c->r;
    if (!r || status == UV_ECANCELED) return;
    if (status < 0) {
        char why[200];
        snprintf(why, sizeof why, "cannot connect: %s", uv_strerror(status));
        pt__lost(r, PT_METRICS_REDIS_CONNECT, PT_REDIS_EDOWN, why);
        return;
    }
    if (r->ssl_ctx && pt__tls_start(c, r) != 0) {
        pt__lost(r, PT_METRICS_REDIS_CONNECT, PT_REDIS_ENOMEM, "out of memory");
        return;
    }
    pt_transport_t *io = pt__io(c);
    io->on_read = pt__on_read;
    io->data = c;
    if (!(r->reader = redisReaderCreate()) || pt__handshake(r) != 0) {
        pt__lost(r, PT_METRICS_REDIS_CONNECT, PT_REDIS_ENOMEM, "out of memory");
        return;
    }
    int rc = pt_transport_read_start(io);
    if (rc != 0) {
        pt__lost(r, PT_METRICS_REDIS_CONNECT, PT_REDIS_EDOWN, uv_strerror(rc));
        return;
    }
    uv_tcp_keepalive(&c->tcp.tcp, 1, 15); /* a subscriber may hear nothing for long */
    r->state = PT__READY;                 /* up once the set-up is answered */
    pt__flush_out(r);
    pt__arm(r);
}

static void pt__open(pt_redis_t *r, const struct sockaddr *addr)
{
    pt__conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        pt__lost(r, PT_METRICS_REDIS_CONNECT, PT_REDIS_ENOMEM, "out of memory");
        return;
    }
    if (pt_transport_tcp_init(&c->tcp, r->loop, c->read_buf, sizeof c->read_buf) != 0) {
        free(c);
        pt__lost(r, PT_METRICS_REDIS_CONNECT, PT_REDIS_EDOWN, "cannot make a socket");
        return;
    }
    c->r = r;
    c->tcp.base.data = c;
    r->conn = c;
    int rc = pt_transport_tcp_connect(&c->tcp, addr, pt__on_connect);
    if (rc != 0) {
        char why[200];
        snprintf(why, sizeof why, "cannot connect: %s", uv_strerror(rc));
        pt__lost(r, PT_METRICS_REDIS_CONNECT, PT_REDIS_EDOWN, why);
    }
}

static void pt__on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    pt__resolve_t *q = req->data;
    pt_redis_t *r = q->r;
    free(q);
    if (r) {
        r->resolving = NULL;
        if (status != 0 || !res) {
            char why[300];
            snprintf(why, sizeof why, "cannot resolve %s: %s", r->host, uv_strerror(status));
            pt__lost(r, PT_METRICS_REDIS_CONNECT, PT_REDIS_EDOWN, why);
        } else {
            pt__open(r, res->ai_addr);
        }
    }
    uv_freeaddrinfo(res);
}

static void pt__connect(pt_redis_t *r)
{
    r->state = PT__CONNECTING;
    r->connect_deadline = uv_now(r->loop) + r->timeout_ms;
    pt__arm(r);
    struct sockaddr_storage ss;
    if (uv_ip4_addr(r->host, r->port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(r->host, r->port, (struct sockaddr_in6 *)&ss) == 0) {
        pt__open(r, (struct sockaddr *)&ss);
        return;
    }
    pt__resolve_t *q = calloc(1, sizeof *q);
    if (!q) {
        pt__lost(r, PT_METRICS_REDIS_CONNECT, PT_REDIS_ENOMEM, "out of memory");
        return;
    }
    char port[8];
    snprintf(port, sizeof port, "%d", r->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    q->r = r;
    q->req.data = q;
    r->resolving = q;
    int rc = uv_getaddrinfo(r->loop, &q->req, pt__on_resolved, r->host, port, &hints);
    if (rc != 0) {
        r->resolving = NULL;
        free(q);
        pt__lost(r, PT_METRICS_REDIS_CONNECT, PT_REDIS_EDOWN, uv_strerror(rc));
    }
}

/* ---- time ---- */

static void pt__on_timer(uv_timer_t *tm)
{
    pt_redis_t *r = tm->data;
    uint64_t now = uv_now(r->loop);
    r->timer_due = 0;
    if (r->state == PT__BACKOFF) {
        if (now >= r->retry_at) pt__connect(r);
    } else if ((r->state == PT__CONNECTING ||
                (r->subscriber && r->state == PT__READY && !r->subscribed)) &&
               now >= r->connect_deadline) {
        pt__lost(r, PT_METRICS_REDIS_CONNECT, PT_REDIS_ETIMEOUT, "connect timed out");
    } else if (r->head && now >= r->head->deadline) {
        pt__lost(r, PT_METRICS_REDIS_LOST, PT_REDIS_EDOWN, "a command timed out");
    } else if (r->subscriber && r->state == PT__READY && r->subscribed) {
        if (r->pong_deadline && now >= r->pong_deadline) {
            pt__lost(r, PT_METRICS_REDIS_LOST, PT_REDIS_EDOWN, "no answer to a PING");
        } else if (!r->pong_deadline && now >= r->ping_at) {
            const char *argv[1] = {"PING"};
            if (pt__append(r, 1, argv, NULL) == 0) {
                r->pong_deadline = now + r->timeout_ms;
                pt__want_flush(r);
            }
        }
    }
    if (!r->freed) pt__arm(r);
}

/* Arms the timer for the next thing due: the retry, the connect's limit or
 * the oldest command's (the queue is in deadline order). */
static void pt__arm(pt_redis_t *r)
{
    uint64_t due = 0;
    if (r->state == PT__BACKOFF)
        due = r->retry_at;
    else if (r->state == PT__CONNECTING || (r->subscriber && !r->subscribed))
        due = r->connect_deadline;
    else if (r->subscriber && r->state == PT__READY)
        due = r->pong_deadline ? r->pong_deadline : r->ping_at;
    if (r->head && (!due || r->head->deadline < due)) due = r->head->deadline;
    if (!due) {
        if (r->timer_due) uv_timer_stop(&r->timer);
        r->timer_due = 0;
        return;
    }
    if (r->timer_due && r->timer_due <= due) return; /* it fires first and re-arms */
    uint64_t now = uv_now(r->loop);
    r->timer_due = due;
    uv_timer_start(&r->timer, pt__on_timer, due > now ? due - now : 0, 0);
}

/* ---- the client ---- */

static pt_redis_t *pt__new(uv_loop_t *loop, const pt_cluster_cfg_t *cfg)
{
    pt_redis_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->loop = loop;
    r->tail = &r->head;
    r->port = cfg->port;
    r->db = cfg->db;
    r->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 1000;
    r->ping_ms = cfg->heartbeat_ms ? cfg->heartbeat_ms : 2000;
    r->host = strdup(cfg->host ? cfg->host : "127.0.0.1");
    r->display = strdup(cfg->redis ? cfg->redis : "redis");
    if (cfg->user) r->user = strdup(cfg->user);
    if (cfg->password) r->password = strdup(cfg->password);
    if (cfg->tls && cfg->tls->server_name) r->sni = strdup(cfg->tls->server_name);
    if (cfg->tls && cfg->tls->ctx) {
        SSL_CTX_up_ref(cfg->tls->ctx);
        r->ssl_ctx = cfg->tls->ctx;
    }
    uv_timer_init(loop, &r->timer);
    uv_prepare_init(loop, &r->flush);
    r->timer.data = r->flush.data = r;
    r->handles = 2;
    pt_metrics_redis_enable();
    if (!r->host || !r->display || (cfg->user && !r->user) || (cfg->password && !r->password) ||
        (cfg->tls && cfg->tls->server_name && !r->sni)) {
        pt_redis_free(r);
        return NULL;
    }
    return r;
}

pt_redis_t *pt_redis_new(uv_loop_t *loop, const pt_cluster_cfg_t *cfg)
{
    return pt__new(loop, cfg);
}

static void pt__handle_closed(uv_handle_t *h)
{
    pt_redis_t *r = h->data;
    if (--r->handles > 0) return;
    for (size_t i = 0; i < r->n_channels; i++)
        free(r->channels[i]);
    free(r->channels);
    free(r->host);
    free(r->user);
    if (r->password) {
        sodium_memzero(r->password, strlen(r->password));
        free(r->password);
    }
    free(r->sni);
    free(r->display);
    if (r->ssl_ctx) SSL_CTX_free(r->ssl_ctx);
    free(r);
}

void pt_redis_free(pt_redis_t *r)
{
    if (!r || r->freed) return;
    r->freed = 1;
    if (pt__main == r) pt__main = NULL;
    pt__conn_drop(r);
    if (r->resolving) r->resolving->r = NULL;
    r->resolving = NULL;
    r->gen++;
    pt__set_up(r, 0);
    pt__fail_all(r, PT_REDIS_EDOWN);
    if (r->reader) redisReaderFree(r->reader);
    r->reader = NULL;
    pt_buf_free(&r->out);
    uv_close((uv_handle_t *)&r->timer, pt__handle_closed);
    uv_close((uv_handle_t *)&r->flush, pt__handle_closed);
}

pt_redis_t *pt_redis_of_worker(struct pt_worker_s *w)
{
    return w ? w->redis : NULL;
}

pt_redis_t *pt_redis_main(void)
{
    return pt__main;
}

void pt_redis_set_main(pt_redis_t *r)
{
    pt__main = r;
}

bool pt_redis_up(const pt_redis_t *r)
{
    return r && !r->freed && r->state == PT__READY && r->up_counted;
}

int pt_redis_command(pt_redis_t *r, int argc, const char **argv, const size_t *lens, pt_redis_cb cb,
                     void *arg)
{
    if (!r || r->freed) return PT_REDIS_EDOWN;
    if (r->subscriber || argc < 1 || !cb) return PT_REDIS_EINVAL;
    if (r->state == PT__IDLE) pt__connect(r); /* may fail at once: then down */
    if (r->state == PT__BACKOFF) {
        pt_metrics_redis_fail(PT_METRICS_REDIS_DOWN);
        return PT_REDIS_EDOWN;
    }
    size_t before = r->out.len;
    int rc = pt__append(r, argc, argv, lens);
    if (rc == 0 && !pt__push(r, cb, arg)) rc = PT_REDIS_ENOMEM;
    if (rc != 0) {
        r->out.len = before;
        return rc;
    }
    pt_metrics_redis_command();
    pt__want_flush(r);
    if (!r->timer_due) pt__arm(r);
    return 0;
}

/* ---- scripts ---- */

void pt_redis_script_init(pt_redis_script_t *s, const char *body)
{
    unsigned char md[20];
    unsigned int n = 0;
    s->body = body;
    s->sha1[0] = '\0';
    if (!body || EVP_Digest(body, strlen(body), md, &n, EVP_sha1(), NULL) != 1) return;
    for (unsigned i = 0; i < 20; i++)
        snprintf(s->sha1 + 2 * i, 3, "%02x", md[i]);
}

/* An EVALSHA in flight, with what an EVAL would need. */
typedef struct {
    pt_redis_t *r;
    pt_redis_script_t *s;
    pt_redis_cb cb;
    void *arg;
    int argc; /* EVAL's: "EVAL", body, nkeys, args... */
    const char **argv;
    size_t *lens;
} pt__eval_t;

static void pt__eval_done(void *arg, const struct redisReply *reply, int err)
{
    pt__eval_t *e = arg;
    if (!err && reply->type == REDIS_REPLY_ERROR && !strncmp(reply->str, "NOSCRIPT", 8)) {
        e->argv[0] = "EVAL";
        e->argv[1] = e->s->body;
        e->lens[0] = 4;
        e->lens[1] = strlen(e->s->body);
        int rc = pt_redis_command(e->r, e->argc, e->argv, e->lens, e->cb, e->arg);
        if (rc != 0) e->cb(e->arg, NULL, rc);
    } else {
        e->cb(e->arg, reply, err);
    }
    free(e);
}

int pt_redis_eval(pt_redis_t *r, pt_redis_script_t *s, int nkeys, int argc, const char **argv,
                  const size_t *lens, pt_redis_cb cb, void *arg)
{
    if (!s->body || !s->sha1[0] || nkeys < 0 || nkeys > argc) return PT_REDIS_EINVAL;
    int n = argc + 3;
    size_t bytes = sizeof(pt__eval_t) + (size_t)n * (sizeof(char *) + sizeof(size_t));
    for (int i = 0; i < argc; i++)
        bytes += (lens ? lens[i] : strlen(argv[i])) + 1;
    bytes += 16;
    pt__eval_t *e = malloc(bytes);
    if (!e) return PT_REDIS_ENOMEM;
    *e = (pt__eval_t){r, s, cb, arg, n, NULL, NULL};
    e->lens = (size_t *)(e + 1);
    e->argv = (const char **)(e->lens + n);
    char *p = (char *)(e->argv + n);
    e->argv[0] = "EVALSHA";
    e->lens[0] = 7;
    e->argv[1] = s->sha1;
    e->lens[1] = 40;
    e->lens[2] = (size_t)snprintf(p, 16, "%d", nkeys);
    e->argv[2] = p;
    p += 16;
    for (int i = 0; i < argc; i++) { /* a copy: the caller's may be gone by the NOSCRIPT */
        size_t len = lens ? lens[i] : strlen(argv[i]);
        memcpy(p, argv[i], len);
        p[len] = '\0';
        e->argv[3 + i] = p;
        e->lens[3 + i] = len;
        p += len + 1;
    }
    int rc = pt_redis_command(r, n, e->argv, e->lens, pt__eval_done, e);
    if (rc != 0) free(e);
    return rc;
}

/* ---- pub/sub ---- */

/* ---- preformatted scripts (pt_redis_eval_formatted) ---- */

/* pt_redis_command for bytes already in RESP: head, then tail. */
static int pt__send_resp(pt_redis_t *r, const char *head, size_t head_len, const char *tail,
                         size_t tail_len, pt_redis_cb cb, void *arg)
{
    if (!r || r->freed) return PT_REDIS_EDOWN;
    if (r->subscriber || !cb) return PT_REDIS_EINVAL;
    if (r->state == PT__IDLE) pt__connect(r);
    if (r->state == PT__BACKOFF) {
        pt_metrics_redis_fail(PT_METRICS_REDIS_DOWN);
        return PT_REDIS_EDOWN;
    }
    size_t before = r->out.len;
    if (pt_buf_append(&r->out, head, head_len) || pt_buf_append(&r->out, tail, tail_len) ||
        !pt__push(r, cb, arg)) {
        r->out.len = before;
        return PT_REDIS_ENOMEM;
    }
    pt_metrics_redis_command();
    pt__want_flush(r);
    if (!r->timer_due) pt__arm(r);
    return 0;
}

/* "*<3 + nargs>\r\n$<len>\r\n<verb>\r\n$<len>\r\n<what>\r\n$<len>\r\n<nkeys>\r\n"
 * into buf (big enough for what plus 64); returns its length. */
static size_t pt__eval_head(char *buf, const char *verb, size_t verb_len, const char *what,
                            size_t what_len, int nkeys, int nargs)
{
    char num[24];
    size_t n = 0, k;
    buf[n++] = '*';
    n += pt_u64_digits((size_t)nargs + 3, buf + n);
    buf[n++] = '\r', buf[n++] = '\n', buf[n++] = '$';
    n += pt_u64_digits(verb_len, buf + n);
    buf[n++] = '\r', buf[n++] = '\n';
    memcpy(buf + n, verb, verb_len), n += verb_len;
    buf[n++] = '\r', buf[n++] = '\n', buf[n++] = '$';
    n += pt_u64_digits(what_len, buf + n);
    buf[n++] = '\r', buf[n++] = '\n';
    memcpy(buf + n, what, what_len), n += what_len;
    k = pt_u64_digits((size_t)nkeys, num);
    buf[n++] = '\r', buf[n++] = '\n', buf[n++] = '$';
    n += pt_u64_digits(k, buf + n);
    buf[n++] = '\r', buf[n++] = '\n';
    memcpy(buf + n, num, k), n += k;
    buf[n++] = '\r', buf[n++] = '\n';
    return n;
}

static void pt__evalf_done(void *arg, const struct redisReply *reply, int err)
{
    pt_redis_evalf_t *e = arg;
    if (!err && reply->type == REDIS_REPLY_ERROR && !strncmp(reply->str, "NOSCRIPT", 8)) {
        size_t blen = strlen(e->s->body);
        char *head = malloc(blen + 64);
        int rc = PT_REDIS_ENOMEM;
        if (head) {
            size_t n = pt__eval_head(head, "EVAL", 4, e->s->body, blen, e->nkeys, e->nargs);
            rc = pt__send_resp(e->r, head, n, e->tail, e->tail_len, e->cb, e->arg);
            free(head);
        }
        if (rc != 0) e->cb(e->arg, NULL, rc);
        return;
    }
    e->cb(e->arg, reply, err);
}

int pt_redis_eval_formatted(pt_redis_t *r, pt_redis_script_t *s, int nkeys, int nargs,
                            const char *tail, size_t tail_len, pt_redis_evalf_t *e, pt_redis_cb cb,
                            void *arg)
{
    if (!s->body || !s->sha1[0] || nkeys < 0 || nkeys > nargs) return PT_REDIS_EINVAL;
    *e = (pt_redis_evalf_t){r, s, cb, arg, nkeys, nargs, tail, tail_len};
    char head[40 + 64];
    size_t n = pt__eval_head(head, "EVALSHA", 7, s->sha1, 40, nkeys, nargs);
    return pt__send_resp(r, head, n, tail, tail_len, pt__evalf_done, e);
}

int pt_redis_subscriber_add(pt_redis_t *s, const char *channel)
{
    if (!s || !s->subscriber || s->freed) return PT_REDIS_EINVAL;
    char **list = realloc(s->channels, (s->n_channels + 1) * sizeof *list);
    if (!list) return PT_REDIS_ENOMEM;
    s->channels = list;
    if (!(list[s->n_channels] = strdup(channel))) return PT_REDIS_ENOMEM;
    s->n_channels++;
    if (s->state == PT__READY) {
        const char *argv[2] = {"SUBSCRIBE", channel};
        if (pt__append(s, 2, argv, NULL) != 0) return PT_REDIS_ENOMEM;
        pt__want_flush(s);
    }
    return 0;
}

pt_redis_t *pt_redis_subscriber_new(uv_loop_t *loop, const pt_cluster_cfg_t *cfg,
                                    const char *channel, pt_redis_msg_cb cb, void *arg)
{
    pt_redis_t *r = pt__new(loop, cfg);
    if (!r) return NULL;
    r->subscriber = 1;
    r->msg_cb = cb;
    r->msg_arg = arg;
    if (pt_redis_subscriber_add(r, channel) != 0) {
        pt_redis_free(r);
        return NULL;
    }
    pt__connect(r);
    return r;
}
