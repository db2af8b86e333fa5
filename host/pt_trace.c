#include "pt_trace.h"
#include "pt_trace_queue.h"

#include <pthread.h>
#include <sodium.h>

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int pt_trace_on;
static double pt__ratio = 1.0;

void pt_trace_set_ratio(double r)
{
    pt__ratio = r;
}

/* ---- ids: xoshiro256** per thread, seeded from the kernel's CSPRNG ---- */

static __thread uint64_t pt__s[4];
static __thread int pt__seeded;

static inline uint64_t pt__rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t pt__next(void)
{
    if (!pt__seeded) {
        do
            randombytes_buf(pt__s, sizeof pt__s);
        while (!(pt__s[0] | pt__s[1] | pt__s[2] | pt__s[3]));
        pt__seeded = 1;
    }
    uint64_t *s = pt__s;
    uint64_t r = pt__rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = pt__rotl(s[3], 45);
    return r;
}

static int pt__zero(const uint8_t *b, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= b[i];
    return acc == 0;
}

void pt_trace_random(uint8_t *b, size_t n)
{
    uint64_t r[2] = {0, 0};
    if (n > sizeof r) n = sizeof r;
    do {
        r[0] = pt__next();
        if (n > 8) r[1] = pt__next();
        if (n < 8) r[0] &= (1ull << (8 * n)) - 1; /* only the bytes kept count */
    } while (!(r[0] | r[1]));
    memcpy(b, r, n);
}

uint64_t pt_trace_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void pt_trace_hex(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

/* ---- parsing (W3C Trace Context, level 1) ---- */

static int pt__hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1; /* upper case is invalid too */
}

static int pt__unhex(const char *s, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi = pt__hexval(s[2 * i]), lo = pt__hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int pt_trace_parse_parent(const char *v, size_t len, uint8_t trace_id[16], uint8_t parent_id[8],
                          uint8_t *flags)
{
    uint8_t ver, fl;
    if (!v || len < PT_TRACEPARENT_LEN) return -1;
    if (pt__unhex(v, 1, &ver) != 0 || ver == 0xff) return -1;
    /* version 00 is exactly 55 characters; a later version may carry more
     * after a '-', and is read as far as version 00 goes */
    if (ver == 0 && len != PT_TRACEPARENT_LEN) return -1;
    if (ver != 0 && len > PT_TRACEPARENT_LEN && v[PT_TRACEPARENT_LEN] != '-') return -1;
    if (v[2] != '-' || v[35] != '-' || v[52] != '-') return -1;
    if (pt__unhex(v + 3, 16, trace_id) != 0 || pt__unhex(v + 36, 8, parent_id) != 0 ||
        pt__unhex(v + 53, 1, &fl) != 0)
        return -1;
    if (pt__zero(trace_id, 16) || pt__zero(parent_id, 8)) return -1;
    *flags = fl;
    return 0;
}

/* A key: lcalpha 0*255(lcalpha / DIGIT / "_" / "-"/ "*" / "/"), or
 * tenant@system (tenant from lcalpha/DIGIT, 241 at most; system 14 at most). */
static int pt__state_key(const char *k, size_t n)
{
    const char *at = memchr(k, '@', n);
    if (n == 0 || n > 256) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = k[i];
        if (k + i == at) continue;
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' ||
                 ch == '*' || ch == '/';
        if (!ok) return 0;
    }
    if (!at) return k[0] >= 'a' && k[0] <= 'z';
    size_t tn = (size_t)(at - k), sn = n - tn - 1;
    if (tn == 0 || tn > 241 || sn == 0 || sn > 14) return 0;
    if (memchr(at + 1, '@', sn)) return 0;
    int t0 = (k[0] >= 'a' && k[0] <= 'z') || (k[0] >= '0' && k[0] <= '9');
    return t0 && at[1] >= 'a' && at[1] <= 'z';
}

/* A value: 0*255 chr (0x20..0x7e but ',' and '=') ending in one that is not
 * a space. */
static int pt__state_value(const char *v, size_t n)
{
    if (n == 0 || n > 256) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch < 0x20 || ch > 0x7e || ch == ',' || ch == '=') return 0;
    }
    return v[n - 1] != ' ';
}

int pt_trace_valid_state(const char *v, size_t len)
{
    if (!v || len > PT_TRACE_STATE_MAX) return 0;
    size_t members = 0, i = 0;
    while (i <= len) {
        const char *comma = memchr(v + i, ',', len - i);
        size_t end = comma ? (size_t)(comma - v) : len;
        size_t a = i, b = end;
        while (a < b && (v[a] == ' ' || v[a] == '\t'))
            a++;
        while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
            b--;
        if (a < b) { /* empty list members are allowed */
            const char *eq = memchr(v + a, '=', b - a);
            if (!eq) return 0;
            size_t kn = (size_t)(eq - (v + a));
            if (!pt__state_key(v + a, kn) || !pt__state_value(eq + 1, b - a - kn - 1)) return 0;
            if (++members > PT_TRACE_STATE_MEMBERS) return 0;
        }
        if (!comma) break;
        i = end + 1;
    }
    return 1;
}

void pt_trace_begin(pt_trace_ctx_t *ctx, const char *tp, size_t tp_len, const char *ts,
                    size_t ts_len)
{
    ctx->on = 1;
    ctx->call = NULL;
    ctx->state_len = 0;
    ctx->security_ns = 0;
    ctx->start_ns = pt_trace_now();
    uint8_t fl;
    if (tp && pt_trace_parse_parent(tp, tp_len, ctx->trace_id, ctx->parent_id, &fl) == 0) {
        ctx->flags = fl & 1; /* parent-based: the caller decided */
        if (ts && ts_len && pt_trace_valid_state(ts, ts_len)) {
            memcpy(ctx->state, ts, ts_len);
            ctx->state_len = (uint16_t)ts_len;
        }
    } else {
        pt_trace_random(ctx->trace_id, 16);
        memset(ctx->parent_id, 0, 8);
        /* the ratio on the trace id's random bits (as the spec's
         * TraceIdRatioBased does) */
        uint64_t r;
        memcpy(&r, ctx->trace_id + 8, 8);
        ctx->flags = pt__ratio >= 1.0 ? 1 : (double)(r >> 11) < pt__ratio * 9007199254740992.0;
    }
    ctx->state[ctx->state_len] = '\0';
    pt_trace_random(ctx->span_id, 8);
}

void pt_trace_child(const pt_trace_ctx_t *parent, pt_trace_ctx_t *child)
{
    memcpy(child->trace_id, parent->trace_id, 16);
    memcpy(child->parent_id, parent->span_id, 8);
    child->flags = parent->flags;
    child->on = parent->on;
    child->state_len = parent->state_len;
    memcpy(child->state, parent->state, parent->state_len + 1u);
    child->security_ns = 0;
    child->call = NULL;
    child->start_ns = pt_trace_now();
    pt_trace_random(child->span_id, 8);
}

void pt_trace_copy(pt_trace_ctx_t *dst, const pt_trace_ctx_t *src)
{
    memcpy(dst, src, offsetof(pt_trace_ctx_t, state));
    memcpy(dst->state, src->state, src->state_len + 1u);
}

void pt_trace_format(const pt_trace_ctx_t *ctx, char out[PT_TRACEPARENT_LEN + 1])
{
    memcpy(out, "00-", 3);
    pt_trace_hex(ctx->trace_id, 16, out + 3);
    out[35] = '-';
    pt_trace_hex(ctx->span_id, 8, out + 36);
    out[52] = '-';
    pt_trace_hex(&ctx->flags, 1, out + 53);
}

/* ---- spans ---- */

/* This thread's spare records (pt_trace_queue.h), freed when it ends. */
static __thread pt_span_t *pt__spare;
static pthread_key_t pt__spare_key;
static pthread_once_t pt__spare_once = PTHREAD_ONCE_INIT;
static __thread int pt__spare_keyed;

static void pt__spare_drop(void *unused)
{
    (void)unused;
    pt_trace_queue_free(pt__spare);
    pt__spare = NULL;
}

static void pt__spare_key_make(void)
{
    pthread_key_create(&pt__spare_key, pt__spare_drop);
}

static pt_span_t *pt__record(void)
{
    pt_span_t *s = pt__spare;
    if (s) {
        pt__spare = s->next;
        return s;
    }
    if (!pt__spare_keyed) { /* so the thread's list goes when the thread does */
        pthread_once(&pt__spare_once, pt__spare_key_make);
        pthread_setspecific(pt__spare_key, &pt__spare_keyed);
        pt__spare_keyed = 1;
    }
    return malloc(sizeof *s);
}

pt_span_t *pt_span_new(const pt_trace_ctx_t *ctx, int kind, const char *name, size_t name_len)
{
    if (!ctx->on || !(ctx->flags & 1)) return NULL;
    pt_span_t *s = pt__record();
    if (!s) return NULL;
    memcpy(s->trace_id, ctx->trace_id, 16);
    memcpy(s->span_id, ctx->span_id, 8);
    memcpy(s->parent_id, ctx->parent_id, 8);
    s->kind = kind;
    s->start_ns = ctx->start_ns;
    s->end_ns = 0;
    s->error = 0;
    if (name_len >= sizeof s->name) name_len = sizeof s->name - 1;
    memcpy(s->name, name, name_len);
    s->name[name_len] = '\0';
    s->attrs_len = 0;
    s->msg[0] = '\0';
    return s;
}

pt_span_t *pt_span_split(pt_span_t *s)
{
    if (!s) return NULL;
    pt_span_t *a = pt__record();
    if (!a) return NULL;
    memcpy(a, s, offsetof(pt_span_t, attrs) + s->attrs_len);
    a->next = NULL;
    pt_trace_random(a->span_id, 8);
    a->end_ns = pt_trace_now();
    s->start_ns = a->end_ns;
    return a;
}

void pt_span_error(pt_span_t *s, const char *msg)
{
    if (!s) return;
    s->error = 1;
    snprintf(s->msg, sizeof s->msg, "%s", msg ? msg : "");
}

void pt_span_end(pt_span_t *s)
{
    if (!s) return;
    if (!s->end_ns) s->end_ns = pt_trace_now();
    pt_span_t *more = pt_trace_queue_push(s, pt__spare == NULL);
    if (more) pt__spare = more;
}
