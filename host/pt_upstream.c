#include "pt_upstream.h"
#include "pt_field.h"
#include "pt_log.h"
#include "pt_tls.h"
#include "pt_transport.h"
#include "pt_transport_tls.h"
#include "pt_util.h"

#include <llhttp.h>
#include <openssl/ssl.h>

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define PT__IDLE_MS 60000           /* an idle keep-alive connection is closed after this */
#define PT__HIGH_WATER (256 * 1024) /* queued request bytes that ask the caller to wait */
#define PT__LOW_WATER (64 * 1024)
#define PT__MAX_HEAD (64 * 1024) /* bytes of a response head (with 1xx before it), of trailers */

typedef struct pt__conn_s pt__conn_t;

typedef struct {
    pt_upstream_t *up;
    const pt_target_cfg_t *cfg;
    struct sockaddr_storage addr;
    int have_addr;
    int literal;          /* an IP literal: never resolved again */
    uint64_t resolved_at; /* loop time */
    int resolving;
    pt_upx_t *waiting; /* exchanges waiting for the first resolution */
    int fails;
    uint64_t down_until; /* loop time; 0: up */
    pt__conn_t *idle;    /* idle keep-alive connections */
    int n_idle;
    SSL_SESSION *session; /* https: the last one the target gave, for the next connection */
} pt__target_t;

struct pt_upstream_s {
    pt_upstreams_t *set;
    const pt_upstream_cfg_t *cfg;
    int outgoing; /* an outgoing.http entry: found by name */
    pt__target_t *targets;
    size_t rr;
};

struct pt_upstreams_s {
    uv_loop_t *loop;
    pt_snapshot_t *snap; /* the config the upstreams point into */
    pt_metrics_t *metrics;
    pt_upstream_t *ups;
    size_t n;
    size_t refs; /* the owner, every live connection, exchange and name lookup */
    int retired;
    /* a target's responses are read into this, one set per worker: a large
     * download goes in 256 KB reads (a quarter of the syscalls of 64 KB;
     * pages only become resident as a big read touches them) */
    char read_buf[256 * 1024];
};

/* What the connection's one timer is counting. */
typedef enum {
    PT__T_NONE = 0,
    PT__T_CONNECT, /* connect_timeout */
    PT__T_READ,    /* read_timeout (or the target not reading the request) */
    PT__T_IDLE,    /* an idle keep-alive connection is closed */
    PT__T_FAIL,    /* 0 ms: report a failure the caller caused from its own stack */
} pt__tmode_t;

struct pt__conn_s {
    pt_transport_tcp_t io;  /* the TCP connection */
    pt_transport_tls_t tls; /* https: TLS over io, what the connection reads and writes through */
    pt_tls_client_watch_t watch;
    int tls_on;      /* tls is set up over io */
    int handshaking; /* the TLS handshake is not done: connect_timeout still runs */
    uv_timer_t timer;
    int handles;
    int closing;
    pt__tmode_t tmode;
    uint64_t deadline;  /* loop time tmode's time-out ends; 0: none */
    uint64_t timer_due; /* loop time the libuv timer fires; 0: not armed */
    pt__target_t *t;
    pt_upstreams_t *set;
    pt_upx_t *x; /* the exchange it is leased to; NULL when idle */
    pt__conn_t *next;
    int reused; /* served an exchange before */
    int idle;   /* in its target's idle list */
    llhttp_t parser;
};

struct pt_upx_s {
    pt_upstream_t *up;
    pt__target_t *t;
    pt__target_t *failed; /* the target of a failed first try */
    pt__conn_t *conn;
    const pt_upx_handler_t *h;
    void *ud;
    char *head; /* the request head, then the Upgrade tokens asked for */
    size_t head_len;
    const char *upgrade; /* into head; NULL: no protocol switch was asked for */
    size_t upgrade_len;
    uint64_t timeout_ms;
    uint64_t started_ns;
    size_t queued;   /* request bytes in queued writes or in outq */
    unsigned writes; /* queued writes in flight */
    pt_buf_t outq;   /* request bytes behind the write in flight: one write when it is done */
    pt_upx_t *next_waiting;
    int retry, tries, head_only;
    int ready_called, body_sent, req_ended, paused, want_drain;
    int got_head, upgraded, complete, reusable, busy, aborted, finished;
    int in_header_field;
    int starting;         /* inside pt_upx_start: a failure is its return value, not on_done */
    int ready_now;        /* pt_upx_start took an idle connection: it returns 1 */
    int invalid;          /* the answer was refused (errmsg says why): no retry */
    size_t head_seen;     /* bytes read before the head was complete, 1xx answers included */
    size_t trailer_bytes; /* trailer bytes read (and dropped) */
    char errmsg[200];     /* why it failed, naming the target */
    char safe[200];       /* the same, naming no address */
    pt_buf_t rhead;
    struct {
        uint32_t name_off, name_len, value_off, value_len;
    } hdrs[128];
    size_t n_hdrs;
};

typedef struct {
    pt_transport_write_t req;
    pt__conn_t *conn;
    size_t len;
    char data[];
} pt__write_t;

static void pt__connect(pt_upx_t *x);
static void pt__on_read(pt_transport_t *io, ssize_t nread, const char *data);
static void pt__attempt_failed(pt_upx_t *x, pt_upx_err_t err, int health);
static void pt__read_timer(pt_upx_t *x);
static int pt__flush(pt_upx_t *x);
static void pt__handshake_done(pt_upx_t *x);

/* Sets why the exchange fails, twice: errmsg with who (the target's address
 * or name) for the log and Lua services, safe with "the target" there for an
 * error answer to a client, which must not learn internal addresses. */
static void pt__why(pt_upx_t *x, const char *pre, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void pt__why(pt_upx_t *x, const char *pre, const char *who, const char *fmt, ...)
{
    char rest[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rest, sizeof rest, fmt, ap);
    va_end(ap);
    snprintf(x->errmsg, sizeof x->errmsg, "%s%s%s", pre, who, rest);
    snprintf(x->safe, sizeof x->safe, "%sthe target%s", pre, rest);
}

/* A failure that names no target: both texts alike. */
static void pt__why_plain(pt_upx_t *x, const char *msg)
{
    snprintf(x->errmsg, sizeof x->errmsg, "%s", msg);
    snprintf(x->safe, sizeof x->safe, "%s", msg);
}

/* ---- the set ---- */

static void pt__set_unref(pt_upstreams_t *set)
{
    if (--set->refs > 0) return;
    for (size_t i = 0; i < set->n; i++) {
        for (size_t j = 0; set->ups[i].targets && j < set->ups[i].cfg->n_targets; j++)
            if (set->ups[i].targets[j].session) SSL_SESSION_free(set->ups[i].targets[j].session);
        free(set->ups[i].targets);
    }
    free(set->ups);
    if (set->snap) pt_snapshot_release(set->snap);
    free(set);
}

static int pt__init_upstream(pt_upstreams_t *set, pt_upstream_t *u, const pt_upstream_cfg_t *cfg)
{
    u->set = set;
    u->cfg = cfg;
    if (!(u->targets = calloc(cfg->n_targets ? cfg->n_targets : 1, sizeof *u->targets))) return -1;
    for (size_t i = 0; i < cfg->n_targets; i++) {
        pt__target_t *t = &u->targets[i];
        t->up = u;
        t->cfg = &cfg->targets[i];
        struct sockaddr_in *a4 = (struct sockaddr_in *)&t->addr;
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&t->addr;
        if (uv_ip4_addr(t->cfg->host, t->cfg->port, a4) == 0 ||
            uv_ip6_addr(t->cfg->host, t->cfg->port, a6) == 0)
            t->have_addr = t->literal = 1;
    }
    return 0;
}

pt_upstreams_t *pt_upstreams_new(uv_loop_t *loop, pt_snapshot_t *snap, pt_metrics_t *metrics)
{
    const pt_config_t *cfg = snap->cfg;
    pt_upstreams_t *set = calloc(1, sizeof *set);
    if (!set) return NULL;
    set->snap = pt_snapshot_ref(snap);
    set->loop = loop;
    set->metrics = metrics;
    set->refs = 1;
    size_t n = cfg->n_http_out;
    for (size_t i = 0; i < cfg->n_channels; i++)
        n += cfg->channels[i].n_upstreams;
    if (!(set->ups = calloc(n ? n : 1, sizeof *set->ups))) goto fail;
    for (size_t i = 0; i < cfg->n_channels; i++)
        for (size_t j = 0; j < cfg->channels[i].n_upstreams; j++)
            if (pt__init_upstream(set, &set->ups[set->n++], &cfg->channels[i].upstreams[j]) != 0)
                goto fail;
    for (size_t i = 0; i < cfg->n_http_out; i++) {
        set->ups[set->n].outgoing = 1;
        if (pt__init_upstream(set, &set->ups[set->n++], &cfg->http_out[i]) != 0) goto fail;
    }
    return set;
fail:
    set->refs = 1;
    pt__set_unref(set);
    return NULL;
}

pt_upstream_t *pt_upstreams_find(pt_upstreams_t *set, const pt_upstream_cfg_t *cfg,
                                 const char *name)
{
    if (!set) return NULL;
    for (size_t i = 0; i < set->n; i++) {
        if (cfg ? set->ups[i].cfg == cfg
                : set->ups[i].outgoing && name && strcmp(set->ups[i].cfg->name, name) == 0)
            return &set->ups[i];
    }
    return NULL;
}

const pt_upstream_cfg_t *pt_upstream_cfg(const pt_upstream_t *u)
{
    return u->cfg;
}

/* ---- connections ---- */

static void pt__conn_gone(pt__conn_t *conn)
{
    if (--conn->handles > 0) return;
    pt_upstreams_t *set = conn->set;
    free(conn);
    pt__set_unref(set);
}

static void pt__on_conn_closed(uv_handle_t *h)
{
    pt__conn_gone(h->data);
}

static void pt__on_io_closed(pt_transport_t *io, int status)
{
    (void)status;
    pt__conn_gone(io->data);
}

static pt_transport_t *pt__io(pt__conn_t *conn)
{
    return conn->tls_on ? &conn->tls.base : &conn->io.base;
}

static void pt__idle_remove(pt__conn_t *conn)
{
    pt__target_t *t = conn->t;
    if (!conn->idle) return;
    conn->idle = 0;
    for (pt__conn_t **p = &t->idle; *p; p = &(*p)->next)
        if (*p == conn) {
            *p = conn->next;
            t->n_idle--;
            break;
        }
    conn->next = NULL;
}

static void pt__conn_close(pt__conn_t *conn)
{
    if (conn->closing) return;
    conn->closing = 1;
    pt__idle_remove(conn);
    conn->x = NULL;
    uv_close((uv_handle_t *)&conn->timer, pt__on_conn_closed);
    pt_transport_close(pt__io(conn), pt__on_io_closed);
}

void pt_upstreams_retire(pt_upstreams_t *set)
{
    if (!set) return;
    set->retired = 1;
    for (size_t i = 0; i < set->n; i++)
        for (size_t j = 0; j < set->ups[i].cfg->n_targets; j++) {
            pt__target_t *t = &set->ups[i].targets[j];
            while (t->idle)
                pt__conn_close(t->idle);
        }
    pt__set_unref(set);
}

static void pt__on_timer(uv_timer_t *tm);

/* Lazy, as in pt_http: the libuv timer is started again only when the new
 * deadline comes before the time it is armed for; one that fires early
 * re-arms for what is left. A kept-alive exchange then costs no timer work. */
static void pt__timer(pt__conn_t *conn, pt__tmode_t mode, uint64_t ms)
{
    conn->tmode = mode;
    conn->deadline = uv_now(conn->set->loop) + ms;
    if (conn->timer_due && conn->timer_due <= conn->deadline) return;
    conn->timer_due = conn->deadline;
    uv_timer_start(&conn->timer, pt__on_timer, ms, 0);
}

static void pt__timer_off(pt__conn_t *conn)
{
    conn->tmode = PT__T_NONE;
    conn->deadline = 0;
}

/* ---- finishing ---- */

static void pt__free(pt_upx_t *x)
{
    pt_upstreams_t *set = x->up->set;
    pt_buf_free(&x->rhead);
    pt_buf_free(&x->outq);
    free(x->head);
    free(x);
    pt__set_unref(set);
}

/* Gives the connection back: to the idle list when it can serve again. */
static void pt__release(pt_upx_t *x)
{
    pt__conn_t *conn = x->conn;
    if (!conn) return;
    x->conn = NULL;
    conn->x = NULL;
    /* writes in flight on it are no longer the exchange's (their callbacks
     * find conn->x NULL): a retry on another connection starts clean */
    size_t queued = x->queued;
    x->queued = x->outq.len = 0;
    x->writes = 0;
    pt__target_t *t = conn->t;
    /* reusable is set only where a message ended exactly at the end of what
     * was read, with keep-alive agreed (pt__on_read) */
    if (x->reusable && !x->invalid && !queued && !conn->set->retired &&
        t->n_idle < t->up->cfg->keepalive && !conn->closing) {
        if (x->paused) /* an idle connection must see its peer close */
            pt_transport_read_start(pt__io(conn));
        conn->reused = 1;
        conn->idle = 1;
        conn->next = t->idle;
        t->idle = conn;
        t->n_idle++;
        pt__timer(conn, PT__T_IDLE, PT__IDLE_MS);
        return;
    }
    pt__conn_close(conn);
}

static void pt__observe(pt_upx_t *x, int ok)
{
    if (!x->t || !x->up->set->metrics) return;
    uint64_t us = (uv_hrtime() - x->started_ns) / 1000;
    pt_metrics_target(x->up->set->metrics, x->up->cfg->name, x->t->cfg->display, ok, us);
}

/* Ends the exchange; a failure's texts are in errmsg and safe (pt__why). */
static void pt__finish(pt_upx_t *x, pt_upx_err_t err)
{
    if (x->finished) return;
    x->finished = 1;
    pt__observe(x, err == PT_UPX_OK);
    pt__release(x);
    if (!x->aborted && !x->starting)
        x->h->on_done(x->ud, err, err == PT_UPX_OK ? NULL : x->errmsg,
                      err == PT_UPX_OK ? NULL : x->safe);
    if (!x->busy) pt__free(x);
}

/* ---- health ---- */

static void pt__health(pt__target_t *t, int ok)
{
    if (ok) {
        t->fails = 0;
        t->down_until = 0;
        return;
    }
    if (++t->fails >= t->up->cfg->max_fails) {
        uint64_t now = uv_now(t->up->set->loop);
        if (!t->down_until || t->down_until <= now)
            pt_log_warn("upstream %s: target %s is out for %llu ms", t->up->cfg->name,
                        t->cfg->display, (unsigned long long)t->up->cfg->fail_timeout_ms);
        t->down_until = now + t->up->cfg->fail_timeout_ms;
    }
}

/* The next target in round-robin order that is up and not avoid. When all
 * are out, the one that comes back first (a probe), unless it is avoid. */
static pt__target_t *pt__pick(pt_upstream_t *u, const pt__target_t *avoid)
{
    size_t n = u->cfg->n_targets;
    uint64_t now = uv_now(u->set->loop);
    pt__target_t *best = NULL;
    for (size_t i = 0; i < n; i++) {
        size_t k = (u->rr + i) % n;
        pt__target_t *t = &u->targets[k];
        if (t == avoid) continue;
        if (t->down_until <= now) {
            u->rr = k + 1;
            return t;
        }
        if (!best || t->down_until < best->down_until) best = t;
    }
    return best;
}

/* ---- response parsing ---- */

/* Refuses the answer (errmsg and safe say why): no retry, since the target
 * did answer. Returns -1, a parser callback's "stop". */
static int pt__invalid(pt_upx_t *x, const char *what)
{
    if (!x->invalid) pt__why(x, "", x->t->cfg->display, " sent a malformed answer: %s", what);
    x->invalid = 1;
    return -1;
}

/* Trailer fields are read (llhttp checks their syntax) and dropped: the
 * client gets none (docs/dispatch.md). Only their size is kept. */
static int pt__trailer(pt_upx_t *x, size_t len)
{
    x->trailer_bytes += len;
    return x->trailer_bytes > PT__MAX_HEAD ? pt__invalid(x, "trailers larger than 64 KB") : 0;
}

static int pt__on_header_field(llhttp_t *p, const char *at, size_t len)
{
    pt_upx_t *x = ((pt__conn_t *)p->data)->x;
    if (!x || x->aborted) return -1;
    if (x->got_head) return pt__trailer(x, len);
    if (!x->in_header_field) {
        if (x->n_hdrs == sizeof x->hdrs / sizeof x->hdrs[0])
            return pt__invalid(x, "more than 128 header fields");
        x->hdrs[x->n_hdrs].name_off = (uint32_t)x->rhead.len;
        x->hdrs[x->n_hdrs].name_len = 0;
        x->hdrs[x->n_hdrs].value_off = (uint32_t)x->rhead.len;
        x->hdrs[x->n_hdrs].value_len = 0;
        x->n_hdrs++;
        x->in_header_field = 1;
    }
    x->hdrs[x->n_hdrs - 1].name_len += (uint32_t)len;
    if (x->rhead.len + len > PT__MAX_HEAD) return pt__invalid(x, "a head larger than 64 KB");
    return pt_buf_append(&x->rhead, at, len);
}

/* The name is whole: what comes next is its value, which may be empty (no
 * on_header_value then), and the next name is a new field. */
static int pt__on_header_field_complete(llhttp_t *p)
{
    pt_upx_t *x = ((pt__conn_t *)p->data)->x;
    if (!x || x->aborted) return -1;
    if (x->got_head) return 0;
    x->in_header_field = 0;
    x->hdrs[x->n_hdrs - 1].value_off = (uint32_t)x->rhead.len;
    return 0;
}

static int pt__on_header_value(llhttp_t *p, const char *at, size_t len)
{
    pt_upx_t *x = ((pt__conn_t *)p->data)->x;
    if (!x || x->aborted) return -1;
    if (x->got_head) return pt__trailer(x, len);
    x->hdrs[x->n_hdrs - 1].value_len += (uint32_t)len;
    if (x->rhead.len + len > PT__MAX_HEAD) return pt__invalid(x, "a head larger than 64 KB");
    return pt_buf_append(&x->rhead, at, len);
}

/* s[0..n) without optional whitespace around it. */
static const char *pt__trim(const char *s, size_t *n)
{
    while (*n && (s[0] == ' ' || s[0] == '\t'))
        s++, (*n)--;
    while (*n && (s[*n - 1] == ' ' || s[*n - 1] == '\t'))
        (*n)--;
    return s;
}

static int pt__ieq(const char *s, size_t n, const char *lit, size_t lit_n)
{
    if (n != lit_n) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
        if (c != lit[i]) return 0;
    }
    return 1;
}

/* 1 when the comma-separated list v[0..n) has at least one element and each
 * is one of the list of[0..of_n) (compared without case): a 101 switches
 * only to protocols the client asked for. */
static int pt__tokens_within(const char *v, size_t n, const char *of, size_t of_n)
{
    int any = 0;
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        while (i < n && v[i] != ',')
            i++;
        size_t len = i - start;
        const char *tok = pt__trim(v + start, &len);
        i++;
        if (!len) continue;
        if (!pt_field_list_has(of, of_n, tok, len)) return 0;
        any = 1;
    }
    return any;
}

/* Checks the head in one pass over its fields (no allocation): what llhttp
 * lets through but a proxy must not pass on. Returns 0, or -1 (refused). */
static int pt__check_head(pt_upx_t *x, const llhttp_t *p)
{
    int status = p->status_code;
    if (status < 100 || status > 599) return pt__invalid(x, "a status outside 100..599");
    int n_cl = 0, n_te = 0, n_up = 0;
    const char *up = NULL;
    size_t up_len = 0;
    for (size_t i = 0; i < x->n_hdrs; i++) {
        const char *name = x->rhead.data + x->hdrs[i].name_off;
        const char *value = x->rhead.data + x->hdrs[i].value_off;
        size_t nlen = x->hdrs[i].name_len, vlen = x->hdrs[i].value_len;
        if (!pt_field_token(name, nlen)) return pt__invalid(x, "a field name that is not a token");
        if (!pt_field_value(value, vlen))
            return pt__invalid(x, "a field value with a control character");
        if (nlen == 14 && pt__ieq(name, nlen, "content-length", 14)) {
            const char *v = pt__trim(value, &vlen);
            if (++n_cl > 1) return pt__invalid(x, "more than one Content-Length");
            if (!vlen) return pt__invalid(x, "an empty Content-Length");
            for (size_t k = 0; k < vlen; k++)
                if (v[k] < '0' || v[k] > '9') return pt__invalid(x, "an invalid Content-Length");
        } else if (nlen == 17 && pt__ieq(name, nlen, "transfer-encoding", 17)) {
            const char *v = pt__trim(value, &vlen);
            if (++n_te > 1 || !pt__ieq(v, vlen, "chunked", 7))
                return pt__invalid(x, "a Transfer-Encoding other than chunked");
        } else if (nlen == 7 && pt__ieq(name, nlen, "upgrade", 7)) {
            n_up++;
            up = value;
            up_len = vlen;
        }
    }
    if (n_cl && n_te) return pt__invalid(x, "both Content-Length and Transfer-Encoding");
    if (status == 101) {
        if (!x->upgrade) return pt__invalid(x, "a 101 Switching Protocols nobody asked for");
        if (!p->upgrade || n_up != 1 || !pt__tokens_within(up, up_len, x->upgrade, x->upgrade_len))
            return pt__invalid(x, "a 101 to a protocol the client did not ask for");
    }
    return 0;
}

static int pt__on_headers_complete(llhttp_t *p)
{
    pt__conn_t *conn = p->data;
    pt_upx_t *x = conn->x;
    if (!x || x->aborted) return -1;
    int status = p->status_code;
    x->in_header_field = 0;
    if (pt__check_head(x, p) != 0) return -1;
    /* 1xx: skipped, and never with a body, whatever its headers say. A whole
     * one starts the head's time-out again (102 Processing keeps a slow
     * target's exchange alive); their bytes count against the head limit. */
    if (status >= 100 && status < 200 && status != 101) {
        pt__read_timer(x);
        return 1;
    }
    pt_upx_header_t hs[128];
    for (size_t i = 0; i < x->n_hdrs; i++) {
        hs[i].name = x->rhead.data + x->hdrs[i].name_off;
        hs[i].name_len = x->hdrs[i].name_len;
        hs[i].value = x->rhead.data + x->hdrs[i].value_off;
        hs[i].value_len = x->hdrs[i].value_len;
    }
    x->got_head = 1;
    pt__health(x->t, 1);
    /* 204 and 304 have no body (RFC 9112 6.3): a length they give is not
     * read, or the next answer's bytes would be taken for it */
    int bodiless = x->head_only || status == 204 || status == 304;
    int64_t clen = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
    int chunked = (p->flags & F_CHUNKED) != 0;
    if (status == 204 || status == 304) clen = -1, chunked = 0;
    if (status == 101) x->upgraded = 1;
    if (x->h->on_head(x->ud, status, hs, x->n_hdrs, clen, chunked) != 0 || x->aborted) {
        x->aborted = 1;
        return -1;
    }
    /* a 101 has no body either: what follows its head is the tunnel */
    return bodiless || status == 101 ? 1 : 0;
}

static int pt__on_body(llhttp_t *p, const char *at, size_t len)
{
    pt_upx_t *x = ((pt__conn_t *)p->data)->x;
    if (!x || x->aborted) return -1;
    x->h->on_body(x->ud, at, len);
    return x->aborted ? -1 : 0;
}

static int pt__on_message_begin(llhttp_t *p)
{
    pt_upx_t *x = ((pt__conn_t *)p->data)->x;
    if (!x) return -1;
    x->n_hdrs = 0;
    x->rhead.len = 0;
    x->in_header_field = 0;
    return 0;
}

static int pt__on_message_complete(llhttp_t *p)
{
    pt_upx_t *x = ((pt__conn_t *)p->data)->x;
    if (!x || x->aborted) return -1;
    if (!x->got_head) return 0; /* a 1xx answer: the real one follows */
    if (x->upgraded) return 0;  /* llhttp stops with HPE_PAUSED_UPGRADE */
    x->complete = 1;
    /* kept only if pt__on_read finds nothing after it */
    x->reusable = llhttp_should_keep_alive(p);
    return HPE_PAUSED;
}

static const llhttp_settings_t pt__settings = {
    .on_message_begin = pt__on_message_begin,
    .on_header_field = pt__on_header_field,
    .on_header_field_complete = pt__on_header_field_complete,
    .on_header_value = pt__on_header_value,
    .on_headers_complete = pt__on_headers_complete,
    .on_body = pt__on_body,
    .on_message_complete = pt__on_message_complete,
};

/* ---- reading ---- */

/* After the caller's code ran from inside the read path: an exchange it
 * ended meanwhile (pt_upx_abort, or a failure it caused) is freed here.
 * Returns 1 then. */
static int pt__settled(pt_upx_t *x)
{
    if (!x->aborted && !x->finished) return 0;
    if (!x->finished) {
        x->finished = 1;
        x->reusable = 0;
        pt__release(x);
    }
    pt__free(x);
    return 1;
}

/* Bytes of a tunnel (after a 101) for the caller. */
static void pt__tunnel(pt_upx_t *x, const char *data, size_t len)
{
    x->busy = 1;
    x->h->on_body(x->ud, data, len);
    x->busy = 0;
    pt__settled(x);
}

static void pt__read_timer(pt_upx_t *x)
{
    if (x->conn && x->req_ended && !x->paused && !x->upgraded)
        pt__timer(x->conn, PT__T_READ, x->timeout_ms);
}

static void pt__on_read(pt_transport_t *io, ssize_t nread, const char *data)
{
    pt__conn_t *conn = io->data;
    pt_upx_t *x = conn->x;
    if (!x) {
        /* idle: the target closed it, or sent what nobody asked for (a late
         * answer), which must never reach the next exchange */
        pt__conn_close(conn);
        return;
    }
    const char *who = x->t->cfg->display;
    if (x->upgraded && x->complete) {
        if (nread < 0) {
            x->reusable = 0;
            pt__finish(x, PT_UPX_OK);
            return;
        }
        pt__tunnel(x, data, (size_t)nread);
        return;
    }
    if (nread < 0 && conn->handshaking && !conn->tls.handshake_done) {
        char why[120];
        pt_tls_client_why(conn->tls.ssl, &conn->watch, why, sizeof why);
        pt__why(x, "TLS handshake with ", who, " failed: %s", why);
        pt_metrics_inc(&pt_metrics_upstream_tls[PT_METRICS_UPTLS_FAILED], 1);
        if (x->t->session) { /* it may be what the target refused */
            SSL_SESSION_free(x->t->session);
            x->t->session = NULL;
        }
        pt__attempt_failed(x, PT_UPX_CONNECT, 1);
        return;
    }
    if (nread < 0) {
        /* llhttp_finish returns what on_message_complete did: HPE_PAUSED */
        llhttp_errno_t fe = x->got_head ? llhttp_finish(&conn->parser) : HPE_OK;
        if (x->got_head && (fe == HPE_OK || fe == HPE_PAUSED) && x->complete) {
            x->reusable = 0; /* delimited by the close */
            pt__finish(x, PT_UPX_OK);
            return;
        }
        /* TLS 1.3: a client certificate is refused after our handshake ended */
        char alert[120] = "";
        if (conn->tls_on && conn->watch.alert[0])
            snprintf(alert, sizeof alert, " (%s)", conn->watch.alert);
        else if (conn->tls_on && conn->watch.cert_asked && !SSL_get_certificate(conn->tls.ssl))
            snprintf(alert, sizeof alert, " (it asked for a client certificate: tls has none)");
        pt__why(x, "", who, " closed the connection%s: %s%s",
                x->got_head ? " in the middle of the answer" : " before answering",
                uv_strerror((int)nread), alert);
        /* a kept-alive connection the target had given up on costs it nothing */
        pt__attempt_failed(x, PT_UPX_BROKEN, !conn->reused);
        return;
    }
    if (conn->handshaking) { /* an answer before the head's write callback: the handshake is done */
        x->busy = 1;
        pt__handshake_done(x);
        x->busy = 0;
        if (pt__settled(x)) return;
    }
    /* the time-out runs between two reads of the answer; the head has one
     * deadline (from the request's end or the last 1xx), however slowly it
     * trickles in */
    if (x->got_head)
        pt__read_timer(x);
    else
        x->head_seen += (size_t)nread;
    x->busy = 1;
    llhttp_errno_t e = llhttp_execute(&conn->parser, data, (size_t)nread);
    x->busy = 0;
    if (pt__settled(x)) return;
    if ((e == HPE_PAUSED_UPGRADE || e == HPE_PAUSED) && x->upgraded) {
        x->complete = 1;
        pt__timer_off(conn);
        const char *at = llhttp_get_error_pos(&conn->parser);
        size_t used = at ? (size_t)(at - data) : (size_t)nread;
        if (used < (size_t)nread) pt__tunnel(x, data + used, (size_t)nread - used);
        return;
    }
    if (e == HPE_PAUSED && x->complete) {
        /* pooled only when the answer ended exactly here, after the whole
         * request went out: a byte more is an answer nobody asked for */
        const char *at = llhttp_get_error_pos(&conn->parser);
        if (!at || at != data + nread || !x->req_ended || x->queued) x->reusable = 0;
        pt__finish(x, PT_UPX_OK);
        return;
    }
    if (e == HPE_OK && !x->got_head && x->head_seen > PT__MAX_HEAD) {
        pt__invalid(x, "a head larger than 64 KB");
        e = HPE_USER;
    }
    if (e != HPE_OK) {
        if (!x->invalid)
            pt__why(x, "", who, " sent a malformed answer: %s",
                    llhttp_get_error_reason(&conn->parser));
        x->invalid = 1;
        x->reusable = 0;
        pt__health(x->t, 0);
        pt__finish(x, PT_UPX_BROKEN);
    }
}

/* ---- writing ---- */

static void pt__on_written(pt_transport_write_t *req, int status)
{
    pt__write_t *wr = (pt__write_t *)req;
    pt__conn_t *conn = wr->conn; /* write callbacks come before the close callback */
    pt_upx_t *x = conn->x;
    size_t len = wr->len;
    free(wr);
    if (!x || conn->closing || x->finished) return;
    x->queued -= len;
    x->writes--;
    if (status == 0 && !x->writes && x->outq.len) status = pt__flush(x);
    if (status < 0) {
        if (status == UV_ECANCELED) return;
        pt__why(x, "cannot write to ", x->t->cfg->display, ": %s", uv_strerror(status));
        pt__attempt_failed(x, PT_UPX_BROKEN, !conn->reused);
        return;
    }
    if (conn->handshaking) { /* the head waited for the handshake: it is done */
        pt__handshake_done(x);
        return;
    }
    if (x->want_drain && x->queued < PT__LOW_WATER) {
        x->want_drain = 0;
        pt__read_timer(x);
        if (x->conn && x->conn->tmode != PT__T_READ) pt__timer_off(x->conn);
        x->h->on_drain(x->ud);
    }
}

/* One queued write of len bytes: data[0..n) from skip on, copied. Returns 0 or
 * a libuv error. */
static int pt__write(pt_upx_t *x, const uv_buf_t *data, unsigned n, size_t skip, size_t len)
{
    pt__write_t *wr = malloc(sizeof *wr + len);
    if (!wr) return UV_ENOMEM;
    wr->conn = x->conn;
    wr->len = len;
    size_t o = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t l = data[i].len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        memcpy(wr->data + o, data[i].base + skip, l - skip);
        o += l - skip;
        skip = 0;
    }
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)len);
    int rc = pt_transport_write(pt__io(x->conn), &wr->req, &b, 1, pt__on_written);
    if (rc != 0) {
        free(wr);
        return rc;
    }
    x->writes++;
    x->queued += len;
    return 0;
}

/* The bytes that waited behind the write that just finished, as one. */
static int pt__flush(pt_upx_t *x)
{
    uv_buf_t b = uv_buf_init(x->outq.data, (unsigned)x->outq.len);
    size_t len = x->outq.len;
    x->queued -= len; /* counted again by pt__write */
    x->outq.len = 0;
    return pt__write(x, &b, 1, 0, len);
}

/* Writes bufs[0..n) to the exchange's connection; returns 0 or a libuv
 * error. While a write is in flight (the target reads slower than we
 * send), what follows waits in outq and goes as one write after it: the
 * memory a slow target costs is its bytes, not a write request (some 250
 * bytes) per piece however small (a client's 1-byte chunks made 750 bytes
 * of requests per 6 bytes counted against the high-water mark). */
static int pt__sendv(pt_upx_t *x, const uv_buf_t *bufs, unsigned n)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (x->writes) {
        for (unsigned i = 0; i < n; i++)
            if (pt_buf_append(&x->outq, bufs[i].base, bufs[i].len) != 0) return UV_ENOMEM;
        x->queued += total;
        return 0;
    }
    int w = pt_transport_try_write(pt__io(x->conn), bufs, n);
    if (w == (int)total) return 0;
    if (w < 0 && w != UV_EAGAIN && w != UV_ENOSYS) return w;
    size_t done = w > 0 ? (size_t)w : 0;
    return pt__write(x, bufs, n, done, total - done);
}

static int pt__send(pt_upx_t *x, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    return pt__sendv(x, &b, 1);
}

/* Writes the head with this target's Host. */
static int pt__send_head(pt_upx_t *x)
{
    const char *host = x->t->cfg->display;
    size_t hl = strlen(host);
    char stack[4096];
    size_t n = x->head_len + hl + 10;
    char *b = n <= sizeof stack ? stack : malloc(n);
    if (!b) return UV_ENOMEM;
    memcpy(b, x->head, x->head_len);
    memcpy(b + x->head_len, "Host: ", 6);
    memcpy(b + x->head_len + 6, host, hl);
    memcpy(b + x->head_len + 6 + hl, "\r\n\r\n", 4);
    int rc = pt__send(x, b, x->head_len + hl + 10);
    if (b != stack) free(b);
    return rc;
}

/* The connection is ready: head out, caller told (once). */
/* The connection is the exchange's: the parser is reset and the head goes
 * out. Returns 0, or -1 after the failure was handled. */
static int pt__begin(pt_upx_t *x)
{
    pt__conn_t *conn = x->conn;
    llhttp_init(&conn->parser, HTTP_RESPONSE, &pt__settings);
    conn->parser.data = conn;
    int rc = pt__send_head(x);
    if (rc != 0) {
        pt__why(x, "cannot write to ", x->t->cfg->display, ": %s", uv_strerror(rc));
        pt__attempt_failed(x, PT_UPX_BROKEN, !conn->reused);
        return -1;
    }
    if (conn->handshaking) return 0; /* the head waits for it, connect_timeout runs */
    pt__timer_off(conn);
    pt__read_timer(x);
    return 0;
}

/* Tells the caller (once) that body bytes may come. */
static void pt__ready(pt_upx_t *x)
{
    if (x->ready_called) return;
    x->ready_called = 1;
    x->h->on_ready(x->ud);
}

/* The TLS handshake is done and the head that waited for it went out: the
 * connect time-out ends, the caller may send the body. */
static void pt__handshake_done(pt_upx_t *x)
{
    pt__conn_t *conn = x->conn;
    conn->handshaking = 0;
    pt_metrics_inc(&pt_metrics_upstream_tls[PT_METRICS_UPTLS_DONE], 1);
    if (SSL_session_reused(conn->tls.ssl))
        pt_metrics_inc(&pt_metrics_upstream_tls[PT_METRICS_UPTLS_RESUMED], 1);
    pt__timer_off(conn);
    pt__read_timer(x);
    pt__ready(x);
}

static void pt__on_timer(uv_timer_t *tm)
{
    pt__conn_t *conn = tm->data;
    uint64_t now = uv_now(tm->loop);
    conn->timer_due = 0;
    if (!conn->deadline) return;
    if (now < conn->deadline) {
        conn->timer_due = conn->deadline;
        uv_timer_start(&conn->timer, pt__on_timer, conn->deadline - now, 0);
        return;
    }
    pt__tmode_t mode = conn->tmode;
    conn->tmode = PT__T_NONE;
    conn->deadline = 0;
    pt_upx_t *x = conn->x;
    switch (mode) {
    case PT__T_IDLE:
        pt__conn_close(conn);
        break;
    case PT__T_CONNECT:
        if (!x) break;
        pt__why(x, "connecting to ", x->t->cfg->display, " timed out after %llu ms%s",
                (unsigned long long)x->up->cfg->connect_timeout_ms,
                conn->handshaking ? " (in the TLS handshake)" : "");
        if (conn->handshaking) pt_metrics_inc(&pt_metrics_upstream_tls[PT_METRICS_UPTLS_FAILED], 1);
        pt__attempt_failed(x, PT_UPX_TIMEOUT, 1);
        break;
    case PT__T_READ:
        if (!x) break;
        pt__why(x, "", x->t->cfg->display, " did not answer within %llu ms",
                (unsigned long long)x->timeout_ms);
        x->reusable = 0;
        pt__health(x->t, 0);
        pt__finish(x, PT_UPX_TIMEOUT);
        break;
    case PT__T_FAIL:
        if (x) pt__attempt_failed(x, PT_UPX_BROKEN, 1); /* pt_upx_write set why */
        break;
    case PT__T_NONE:
        break;
    }
}

/* A session the target gave (in the TLS 1.2 handshake, or a TLS 1.3 ticket
 * after it): the next connection to it resumes with the newest. */
static int pt__on_session(void *ud, SSL_SESSION *sess)
{
    pt__conn_t *conn = ud;
    pt__target_t *t = conn->t;
    if (t->session) SSL_SESSION_free(t->session);
    t->session = sess;
    return 1;
}

/* TLS over the connected TCP connection: SNI and the name checked are
 * tls.server_name or the target's host; the target's last session is
 * offered. The handshake starts with the first read_start. Returns 0, or
 * -1 (out of memory: io is still plain and the caller's to close). */
static int pt__tls_start(pt__conn_t *conn)
{
    const pt_upstream_tls_t *tc = conn->t->up->cfg->tls;
    SSL *ssl = pt_tls_client_ssl(tc->ctx, tc->server_name ? tc->server_name : conn->t->cfg->host);
    if (!ssl) return -1;
    /* a copy: OpenSSL marks the session of an SSL freed without a
     * close_notify sent not resumable, and this one is the target's */
    SSL_SESSION *sess = conn->t->session ? SSL_SESSION_dup(conn->t->session) : NULL;
    if (sess) {
        SSL_set_session(ssl, sess);
        SSL_SESSION_free(sess);
    }
    conn->watch.on_session = pt__on_session;
    conn->watch.ud = conn;
    pt_tls_client_watch(ssl, &conn->watch);
    if (pt_transport_tls_init(&conn->tls, conn->set->loop, &conn->io.base, ssl, NULL) != 0)
        return -1; /* ssl freed, io untouched */
    conn->tls_on = 1;
    conn->handshaking = 1;
    conn->tls.base.on_read = pt__on_read;
    conn->tls.base.data = conn;
    return 0;
}

static void pt__on_connect(pt_transport_t *io, int status)
{
    pt__conn_t *conn = io->data;
    if (status == UV_ECANCELED || conn->closing) return;
    pt_upx_t *x = conn->x;
    if (!x) {
        pt__conn_close(conn);
        return;
    }
    if (status < 0) {
        pt__why(x, "cannot connect to ", x->t->cfg->display, ": %s", uv_strerror(status));
        pt__attempt_failed(x, PT_UPX_CONNECT, 1);
        return;
    }
    if (x->up->cfg->tls && pt__tls_start(conn) != 0) {
        pt__why_plain(x, "out of memory");
        pt__attempt_failed(x, PT_UPX_NOMEM, 0);
        return;
    }
    io = pt__io(conn);
    if (pt_transport_read_start(io) != 0) {
        pt__why_plain(x, "cannot read from the target");
        pt__attempt_failed(x, PT_UPX_CONNECT, 1);
        return;
    }
    if (pt__begin(x) == 0 && !conn->handshaking) pt__ready(x); /* else after the handshake */
}

/* 1 when an idle connection has nothing unread. A stray answer (or the
 * close) can reach the socket in the same loop turn as the request that
 * takes the connection, and be read only after it: on_read would then give
 * it to the new exchange. One peek per reuse rules that out. */
static int pt__idle_clean(pt__conn_t *conn)
{
    uv_os_fd_t fd;
    char ch;
    if (conn->tls_on &&
        (BIO_ctrl_pending(conn->tls.rbio) > 0 || SSL_pending(conn->tls.ssl) > 0 || conn->tls.eof))
        return 0; /* a record (a close_notify, say) read but not taken */
    if (uv_fileno((const uv_handle_t *)conn->io.base.tcp, &fd) != 0) return 0;
    ssize_t n = recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void pt__open(pt_upx_t *x)
{
    pt__target_t *t = x->t;
    pt_upstreams_t *set = x->up->set;
    /* an idle connection first: the newest, whose peer is least likely to
     * have given up on it; one with unread bytes or a close is dropped */
    while (t->idle) {
        pt__conn_t *conn = t->idle;
        pt__idle_remove(conn);
        if (!pt__idle_clean(conn)) {
            pt__conn_close(conn);
            continue;
        }
        conn->x = x;
        x->conn = conn;
        pt__timer_off(conn);
        /* the head goes now: pt_upx_start says so to its caller, a retry
         * (from the loop) tells it at once */
        if (pt__begin(x) == 0) {
            if (x->starting)
                x->ready_called = x->ready_now = 1;
            else
                pt__ready(x);
        }
        return;
    }
    pt__conn_t *conn = calloc(1, sizeof *conn);
    if (!conn ||
        pt_transport_tcp_init(&conn->io, set->loop, set->read_buf, sizeof set->read_buf) != 0) {
        free(conn);
        pt__why_plain(x, "out of memory");
        pt__finish(x, PT_UPX_NOMEM);
        return;
    }
    conn->set = set;
    conn->t = t;
    conn->x = x;
    set->refs++;
    uv_timer_init(set->loop, &conn->timer);
    conn->io.base.on_read = pt__on_read;
    conn->io.base.data = conn->timer.data = conn;
    conn->handles = 2;
    x->conn = conn;
    int rc = pt_transport_tcp_connect(&conn->io, (struct sockaddr *)&t->addr, pt__on_connect);
    if (rc != 0) {
        pt__why(x, "cannot connect to ", t->cfg->display, ": %s", uv_strerror(rc));
        pt__attempt_failed(x, PT_UPX_CONNECT, 1);
        return;
    }
    pt__timer(conn, PT__T_CONNECT, x->up->cfg->connect_timeout_ms);
}

/* ---- names ---- */

static void pt__on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    pt__target_t *t = req->data;
    pt_upstreams_t *set = t->up->set;
    free(req);
    t->resolving = 0;
    if (status == 0 && res) {
        memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
        if (t->addr.ss_family == AF_INET)
            ((struct sockaddr_in *)&t->addr)->sin_port = htons((uint16_t)t->cfg->port);
        else
            ((struct sockaddr_in6 *)&t->addr)->sin6_port = htons((uint16_t)t->cfg->port);
        t->have_addr = 1;
        t->resolved_at = uv_now(set->loop);
    } else if (!t->have_addr || status != 0) {
        pt_log_warn("upstream %s: cannot resolve %s: %s", t->up->cfg->name, t->cfg->host,
                    uv_strerror(status ? status : UV_EAI_NONAME));
    }
    if (res) uv_freeaddrinfo(res);
    pt_upx_t *w = t->waiting;
    t->waiting = NULL;
    while (w) {
        pt_upx_t *next = w->next_waiting;
        w->next_waiting = NULL;
        if (t->have_addr) {
            pt__open(w);
        } else {
            pt__why(w, "cannot resolve the name of ", t->cfg->host, ": %s",
                    uv_strerror(status ? status : UV_EAI_NONAME));
            pt__attempt_failed(w, PT_UPX_CONNECT, 1);
        }
        w = next;
    }
    pt__set_unref(set);
}

static int pt__resolve(pt__target_t *t)
{
    if (t->resolving) return 0;
    pt_upstreams_t *set = t->up->set;
    uv_getaddrinfo_t *req = malloc(sizeof *req);
    if (!req) return -1;
    req->data = t;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    char port[16];
    snprintf(port, sizeof port, "%d", t->cfg->port);
    if (uv_getaddrinfo(set->loop, req, pt__on_resolved, t->cfg->host, port, &hints) != 0) {
        free(req);
        return -1;
    }
    t->resolving = 1;
    set->refs++;
    return 0;
}

/* Picks a target and connects to it (or waits for its name). */
static void pt__connect(pt_upx_t *x)
{
    pt_upstream_t *u = x->up;
    pt__target_t *t = pt__pick(u, x->failed);
    if (!t && x->failed && x->conn == NULL) t = x->failed; /* one target: a fresh connection */
    if (!t) {
        pt__why_plain(x, "the upstream has no target");
        pt__finish(x, PT_UPX_CONNECT);
        return;
    }
    x->t = t;
    if (!t->literal) {
        uint64_t now = uv_now(u->set->loop);
        int stale = !t->have_addr || now - t->resolved_at >= u->cfg->resolve_ttl_ms;
        if (stale && pt__resolve(t) != 0 && !t->have_addr) {
            pt__why_plain(x, "cannot start resolving the target's name");
            pt__finish(x, PT_UPX_NOMEM);
            return;
        }
        if (!t->have_addr) { /* the first lookup: wait for it; later ones run behind */
            x->next_waiting = t->waiting;
            t->waiting = x;
            return;
        }
    }
    pt__open(x);
}

/* A connection attempt failed (errmsg and safe say why): once more on
 * another target when the caller allows it and nothing was sent or read. */
static void pt__attempt_failed(pt_upx_t *x, pt_upx_err_t err, int health)
{
    pt__target_t *t = x->t;
    if (health && t) pt__health(t, 0);
    if (x->conn) {
        x->reusable = 0;
        pt__release(x);
    }
    if (x->retry && x->tries == 0 && !x->body_sent && !x->got_head) {
        x->tries++;
        x->failed = t;
        pt_log_info("upstream %s: %s; trying again", x->up->cfg->name, x->errmsg);
        if (x->h->on_retry) x->h->on_retry(x->ud, t ? t->cfg->display : "", x->errmsg);
        pt__connect(x);
        return;
    }
    pt__finish(x, err);
}

/* ---- the exchange API ---- */

int pt_upx_start(pt_upstream_t *u, const pt_upx_req_t *req, const pt_upx_handler_t *h, void *ud,
                 pt_upx_t **out)
{
    size_t up_len = req->upgrade ? req->upgrade_len : 0, n = req->head_len + up_len;
    pt_upx_t *x = calloc(1, sizeof *x);
    if (!x || !(x->head = malloc(n ? n : 1))) {
        free(x);
        return -1;
    }
    memcpy(x->head, req->head, req->head_len);
    x->head_len = req->head_len;
    if (req->upgrade) {
        memcpy(x->head + req->head_len, req->upgrade, up_len);
        x->upgrade = x->head + req->head_len;
        x->upgrade_len = up_len;
    }
    x->up = u;
    x->h = h;
    x->ud = ud;
    x->retry = req->retry;
    x->head_only = req->head_only;
    x->timeout_ms = req->timeout_ms ? req->timeout_ms : u->cfg->read_timeout_ms;
    x->started_ns = uv_hrtime();
    u->set->refs++;
    *out = x;
    x->starting = 1;
    pt__connect(x);
    x->starting = 0;
    if (x->finished) { /* nothing reachable at once: the caller answers itself */
        pt__free(x);
        return -1;
    }
    return x->ready_now;
}

int pt_upx_write(pt_upx_t *x, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    return pt_upx_writev(x, &b, 1);
}

int pt_upx_writev(pt_upx_t *x, const uv_buf_t *bufs, unsigned n)
{
    size_t len = 0;
    for (unsigned i = 0; i < n; i++)
        len += bufs[i].len;
    if (x->finished || !x->conn || len == 0) return 0;
    if (x->conn->tmode == PT__T_FAIL) return 1;
    x->body_sent = 1;
    int rc = pt__sendv(x, bufs, n);
    if (rc != 0) {
        /* reported from the loop: the caller is in the middle of feeding us */
        pt__why(x, "cannot write to ", x->t->cfg->display, ": %s", uv_strerror(rc));
        x->reusable = 0;
        pt__timer(x->conn, PT__T_FAIL, 0);
        return 1;
    }
    if (x->queued >= PT__HIGH_WATER) {
        if (!x->want_drain && x->conn)
            pt__timer(x->conn, PT__T_READ, x->timeout_ms); /* the target must keep reading */
        x->want_drain = 1;
        return 1;
    }
    return 0;
}

void pt_upx_end_request(pt_upx_t *x)
{
    if (x->finished) return;
    x->req_ended = 1;
    if (x->conn && x->conn->tmode != PT__T_CONNECT) pt__read_timer(x);
}

void pt_upx_pause(pt_upx_t *x, int paused)
{
    if (x->finished || x->paused == paused) return;
    x->paused = paused;
    pt__conn_t *conn = x->conn;
    if (!conn || conn->tmode == PT__T_CONNECT) return;
    if (paused) {
        pt_transport_read_stop(pt__io(conn));
        if (conn->tmode == PT__T_READ) pt__timer_off(conn);
    } else {
        pt_transport_read_start(pt__io(conn));
        pt__read_timer(x);
    }
}

void pt_upx_abort(pt_upx_t *x)
{
    if (x->aborted) return;
    x->aborted = 1;
    x->reusable = 0;
    if (x->t && !x->conn) /* maybe waiting for a name */
        for (pt_upx_t **p = &x->t->waiting; *p; p = &(*p)->next_waiting)
            if (*p == x) {
                *p = x->next_waiting;
                break;
            }
    if (x->busy) return; /* the parser loop frees it */
    if (!x->finished) {
        x->finished = 1;
        pt__observe(x, 0);
        pt__release(x);
    }
    pt__free(x);
}

const char *pt_upx_target(const pt_upx_t *x)
{
    return x->t ? x->t->cfg->display : "";
}

int pt_upx_retries(const pt_upx_t *x, const char **failed)
{
    *failed = x->failed ? x->failed->cfg->display : NULL;
    return x->tries;
}
