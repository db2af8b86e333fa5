/* The exporter thread: batches of spans posted as OTLP/JSON to the
 * collector, off the request path. Blocking sockets under poll with one
 * deadline a post; one connection a post (Connection: close), which at a
 * batch of hundreds of spans is a few posts a second. */
#include "pt_json.h"
#include "pt_log.h"
#include "pt_trace.h"
#include "pt_trace_queue.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "pt__esc reads words as little-endian"
#endif

static pthread_mutex_t pt__mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pt__cv;
static pthread_t pt__thread;
static int pt__running, pt__stopping;
static int pt__gave_up; /* the exporter thread's own */
static pt_span_t **pt__ring;
static size_t pt__cap, pt__head, pt__count;
static pt_span_t *pt__spares; /* records of posted spans, for the next pusher */
static size_t pt__n_spares;
static pt_trace_cfg_t pt__cfg;

static uint64_t pt__exported, pt__dropped_full, pt__dropped_failed, pt__attr_drops,
    pt__posts_failed;

void pt_trace_cfg_free(pt_trace_cfg_t *cfg)
{
    free(cfg->endpoint);
    free(cfg->host);
    free(cfg->port);
    free(cfg->path);
    free(cfg->service_name);
    free(cfg->headers);
    free(cfg->tls_name);
    if (cfg->tls_ctx) SSL_CTX_free(cfg->tls_ctx);
    memset(cfg, 0, sizeof *cfg);
}

void pt_trace_count_attr_drop(void)
{
    __atomic_add_fetch(&pt__attr_drops, 1, __ATOMIC_RELAXED);
}

void pt_trace_queue_free(pt_span_t *list)
{
    while (list) {
        pt_span_t *next = list->next;
        free(list);
        list = next;
    }
}

pt_span_t *pt_trace_queue_push(pt_span_t *s, int want)
{
    int wake = 0;
    pt_span_t *spares = NULL;
    pthread_mutex_lock(&pt__mu);
    if (!pt__running || pt__stopping || pt__count == pt__cap) {
        pthread_mutex_unlock(&pt__mu);
        __atomic_add_fetch(&pt__dropped_full, 1, __ATOMIC_RELAXED);
        free(s);
        return NULL;
    }
    pt__ring[(pt__head + pt__count) % pt__cap] = s;
    pt__count++;
    wake = pt__count == pt__cfg.batch_size;
    if (want && pt__spares) {
        spares = pt__spares;
        pt__spares = NULL;
        pt__n_spares = 0;
    }
    pthread_mutex_unlock(&pt__mu);
    if (wake) pthread_cond_signal(&pt__cv);
    return spares;
}

/* ---- one post ---- */

static uint64_t pt__mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits for fd to be ready for ev before deadline. 0 ready, -1 not. */
static int pt__wait(int fd, short ev, uint64_t deadline)
{
    for (;;) {
        uint64_t now = pt__mono_ms();
        if (now >= deadline) return -1;
        struct pollfd p = {.fd = fd, .events = ev};
        int n = poll(&p, 1, (int)(deadline - now));
        if (n > 0) return 0;
        if (n < 0 && errno == EINTR) continue;
        return -1;
    }
}

static int pt__connect(uint64_t deadline)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(pt__cfg.host, pt__cfg.port, &hints, &res) != 0 || !res) return -1;
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        if (errno == EINPROGRESS && pt__wait(fd, POLLOUT, deadline) == 0) {
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0) break;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* An https endpoint: OpenSSL on the socket, each step waiting under the
 * post's deadline. Returns the SSL after the handshake, or NULL. */
static SSL *pt__tls_open(int fd, uint64_t deadline)
{
    SSL *ssl = SSL_new(pt__cfg.tls_ctx);
    if (!ssl) return NULL;
    const char *name = pt__cfg.tls_name;
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    int ok = SSL_set_fd(ssl, fd) == 1 && (is_ip || SSL_set_tlsext_host_name(ssl, name) == 1);
    if (ok && (SSL_CTX_get_verify_mode(pt__cfg.tls_ctx) & SSL_VERIFY_PEER))
        ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1
                   : SSL_set1_host(ssl, name) == 1;
    while (ok) {
        int r = SSL_connect(ssl);
        if (r == 1) return ssl;
        int e = SSL_get_error(ssl, r);
        if (!((e == SSL_ERROR_WANT_READ && pt__wait(fd, POLLIN, deadline) == 0) ||
              (e == SSL_ERROR_WANT_WRITE && pt__wait(fd, POLLOUT, deadline) == 0)))
            ok = 0;
    }
    ERR_clear_error();
    SSL_free(ssl);
    return NULL;
}

/* Sends or receives through ssl (NULL: the plain socket) as far as it can
 * before deadline. Returns the bytes moved (> 0), or -1. */
static ssize_t pt__io(int fd, SSL *ssl, int out, void *p, size_t n, uint64_t deadline)
{
    for (;;) {
        ssize_t r;
        short ev = out ? POLLOUT : POLLIN;
        if (ssl) {
            int k = out ? SSL_write(ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n))
                        : SSL_read(ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));
            if (k > 0) return k;
            int e = SSL_get_error(ssl, k);
            if (e == SSL_ERROR_WANT_READ)
                ev = POLLIN;
            else if (e == SSL_ERROR_WANT_WRITE)
                ev = POLLOUT;
            else {
                ERR_clear_error();
                return -1;
            }
        } else {
            r = out ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
            if (r > 0) return r;
            if (!(r < 0 && (errno == EAGAIN || errno == EINTR))) return -1;
        }
        if (pt__wait(fd, ev, deadline) != 0) return -1;
    }
}

/* Posts body; returns the HTTP status, or -1. */
static int pt__post(const char *body, size_t len)
{
    uint64_t deadline = pt__mono_ms() + pt__cfg.timeout_ms;
    int fd = pt__connect(deadline);
    if (fd < 0) return -1;
    SSL *ssl = NULL;
    if (pt__cfg.tls_ctx && !(ssl = pt__tls_open(fd, deadline))) {
        close(fd);
        return -1;
    }
    pt_buf_t head = {0};
    pt_buf_printf(&head,
                  "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                  "Content-Length: %zu\r\nConnection: close\r\nUser-Agent: portico\r\n%s\r\n",
                  pt__cfg.path, pt__cfg.host, pt__cfg.port, len,
                  pt__cfg.headers ? pt__cfg.headers : "");
    const char *parts[2] = {head.data, body};
    size_t lens[2] = {head.len, len};
    int status = -1;
    for (int i = 0; i < 2; i++) {
        size_t off = 0;
        while (off < lens[i]) {
            ssize_t n = pt__io(fd, ssl, 1, (char *)parts[i] + off, lens[i] - off, deadline);
            if (n < 0) goto done;
            off += (size_t)n;
        }
    }
    /* the status line is all we need */
    char resp[256];
    size_t got = 0;
    while (got < sizeof resp - 1) {
        ssize_t n = pt__io(fd, ssl, 0, resp + got, sizeof resp - 1 - got, deadline);
        if (n < 0) break;
        got += (size_t)n;
        resp[got] = '\0';
        if (strstr(resp, "\r\n")) break;
    }
    resp[got] = '\0';
    int code;
    if (sscanf(resp, "HTTP/1.%*1d %3d", &code) == 1) status = code;
done:
    pt_buf_free(&head);
    if (ssl) {
        SSL_shutdown(ssl); /* close_notify, not waited for */
        SSL_free(ssl);
        ERR_clear_error();
    }
    close(fd);
    return status;
}

/* ---- rendering ----
 *
 * Straight into the body with a cursor: each span first reserves what it
 * can take at most (pt__span_max), then is written with no further check,
 * no allocation and no printf but for a double. */

/* The most one span renders to: the fixed text and ids, the name and the
 * status message escaped (6 bytes a byte at most), and per attribute record
 * (4 bytes of header at least) its text plus its key and value escaped. */
static size_t pt__span_max(const pt_span_t *s)
{
    return 1100 + 6 * (sizeof s->name + sizeof s->msg) + 16 * s->attrs_len + 64;
}

#define PT__LIT(o, lit) (memcpy((o), (lit), sizeof(lit) - 1), (o) + sizeof(lit) - 1)

static const char pt__pairs[] = "00010203040506070809101112131415161718192021222324"
                                "25262728293031323334353637383940414243444546474849"
                                "50515253545556575859606162636465666768697071727374"
                                "75767778798081828384858687888990919293949596979899";

/* The decimal digits of v at o; returns how many. Written from the end,
 * two at a time, once their number is known (no buffer, no copy). */
static size_t pt__digits(uint64_t v, char *o)
{
    static const uint64_t p10[20] = {1ull,
                                     10ull,
                                     100ull,
                                     1000ull,
                                     10000ull,
                                     100000ull,
                                     1000000ull,
                                     10000000ull,
                                     100000000ull,
                                     1000000000ull,
                                     10000000000ull,
                                     100000000000ull,
                                     1000000000000ull,
                                     10000000000000ull,
                                     100000000000000ull,
                                     1000000000000000ull,
                                     10000000000000000ull,
                                     100000000000000000ull,
                                     1000000000000000000ull,
                                     10000000000000000000ull};
    /* digits from the bit length: log10(2) ~ 1233 / 4096 */
    unsigned t = (unsigned)(64 - __builtin_clzll(v | 1)) * 1233 >> 12;
    size_t n = t + 1 - ((v | 1) < p10[t]); /* v | 1: 0 has one digit too */
    char *e = o + n;
    while (v >= 100) {
        e -= 2;
        memcpy(e, pt__pairs + 2 * (v % 100), 2);
        v /= 100;
    }
    if (v >= 10) {
        e -= 2;
        memcpy(e, pt__pairs + 2 * v, 2);
    } else {
        *--e = (char)('0' + v);
    }
    return n;
}

/* Non-zero when one of the 8 bytes of x needs escaping or checking: below
 * 0x20, 0x7f and up, '"' or '\\' (bit tricks on a word at a time: the scan
 * is most of what rendering costs). */
#ifndef __SSE2__
static inline uint64_t pt__special(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t q = x ^ (ones * '"'), bs = x ^ (ones * '\\');
    /* a high bit of x - 0x20 (below 0x20), of x + 1 (0x7f), of x (0x80 and
     * up), or of a zero byte of q or bs ((v - 1) & ~v); a borrow or a carry
     * between bytes comes only from a byte that is special itself */
    return ((x - ones * 0x20) | (x + ones) | x | ((q - ones) & ~q) | ((bs - ones) & ~bs)) & high;
}
#endif

/* JSON-escapes s at o; text that is not UTF-8 has "?" for its bytes past
 * 0x7f (a collector refuses a whole batch for one bad string). Returns the
 * end. s is text inside a span record, where 16 bytes may be read from any
 * byte of it (pt_trace.h pads the record); o has room for 16 bytes
 * past what it writes (pt__span_max). */
static char *pt__esc_slow(char *o, const char *s, size_t n, size_t i);

static inline __attribute__((always_inline)) char *pt__esc(char *o, const char *s, size_t n)
{
    size_t i = 0;
    /* the usual case: plain ASCII, copied as it is, 16 bytes (SSE2) or a
     * word at a time; the last block's bytes past the text count as spaces */
#ifdef __SSE2__
    static const unsigned char keep[32] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                           0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    const __m128i sp = _mm_set1_epi8(' '), q = _mm_set1_epi8('"'), bs = _mm_set1_epi8('\\'),
                  del = _mm_set1_epi8(0x7f);
    for (; i < n; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        if (n - i < 16) {
            __m128i m = _mm_loadu_si128((const __m128i *)(const void *)(keep + 16 - (n - i)));
            x = _mm_or_si128(_mm_and_si128(x, m), _mm_andnot_si128(m, sp));
        }
        /* signed: a byte of 0x80 and up is below 0x20 too */
        __m128i bad = _mm_or_si128(_mm_or_si128(_mm_cmplt_epi8(x, sp), _mm_cmpeq_epi8(x, q)),
                                   _mm_or_si128(_mm_cmpeq_epi8(x, bs), _mm_cmpeq_epi8(x, del)));
        if (_mm_movemask_epi8(bad)) break;
        _mm_storeu_si128((__m128i *)(void *)(o + i), x);
    }
#else
    for (; i < n; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        if (n - i < 8) {
            uint64_t keep = (1ull << (8 * (n - i))) - 1; /* little-endian: the first bytes */
            x = (x & keep) | (0x2020202020202020ull & ~keep);
        }
        if (pt__special(x)) break;
        memcpy(o + i, &x, 8);
    }
#endif
    if (i >= n) return o + n;
    return pt__esc_slow(o + i, s, n, i);
}

/* From byte i on, where the word scan stopped. */
static char *pt__esc_slow(char *o, const char *s, size_t n, size_t i)
{
    static const char hex[] = "0123456789abcdef";
    int utf8 = pt_utf8_check(s, n, NULL) == 0;
    for (; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x80) {
            *o++ = utf8 ? (char)ch : '?';
        } else if (ch == '"' || ch == '\\') {
            *o++ = '\\';
            *o++ = (char)ch;
        } else if (ch == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        } else if (ch == '\t') {
            *o++ = '\\';
            *o++ = 't';
        } else if (ch < 0x20 || ch == 0x7f) {
            o = PT__LIT(o, "\\u00");
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        } else {
            *o++ = (char)ch;
        }
    }
    return o;
}

/* The records of a span's attributes (pt_trace.c) as OTLP/JSON at o. */
static char *pt__attrs(char *o, const pt_span_t *s)
{
    const unsigned char *p = (const unsigned char *)s->attrs, *end = p + s->attrs_len;
    for (int first = 1; p + 4 <= end; first = 0) {
        int type = p[0] & ~PT_SPAN_KEY_ESCAPE, esc_key = p[0] & PT_SPAN_KEY_ESCAPE;
        size_t klen = p[1], vlen = (size_t)p[2] << 8 | p[3];
        const char *key = (const char *)p + 4, *v = key + klen;
        p += 4 + klen + vlen;
        if (first)
            o = PT__LIT(o, "{\"key\":\"");
        else
            o = PT__LIT(o, ",{\"key\":\"");
        if (esc_key) {
            o = pt__esc(o, key, klen);
        } else { /* the host's own keys are literals: copied a word at a time */
            for (size_t i = 0; i < klen; i += 8)
                memcpy(o + i, key + i, 8);
            o += klen;
        }
        if (type == 's' || type == 'p') {
            o = PT__LIT(o, "\",\"value\":{\"stringValue\":\"");
            if (type == 's') {
                o = pt__esc(o, v, vlen);
            } else { /* a value the host knows is plain (a method, a cid) */
                for (size_t i = 0; i < vlen; i += 8)
                    memcpy(o + i, v + i, 8);
                o += vlen;
            }
            o = PT__LIT(o, "\"}}");
        } else if (type == 'i') {
            int64_t x;
            memcpy(&x, v, sizeof x);
            o = PT__LIT(o, "\",\"value\":{\"intValue\":\"");
            if (x < 0) *o++ = '-';
            o += pt__digits(x < 0 ? 0 - (uint64_t)x : (uint64_t)x, o);
            o = PT__LIT(o, "\"}}");
        } else {
            double x;
            memcpy(&x, v, sizeof x);
            if (x != x || x - x != 0) x = 0; /* JSON has no NaN or infinity */
            o = PT__LIT(o, "\",\"value\":{\"doubleValue\":");
            o += snprintf(o, 32, "%.17g", x);
            o = PT__LIT(o, "}}");
        }
    }
    return o;
}

/* A unix time in nanoseconds at o: the seconds' digits are those of the
 * last time when they are the same (the spans of a batch are from one
 * second or a few), then the nine digits of the nanoseconds. */
typedef struct {
    uint64_t sec;
    size_t len;
    char digits[20];
} pt__secs_t;

static char *pt__time(char *o, uint64_t ns, pt__secs_t *last)
{
    uint64_t sec = ns / 1000000000u;
    uint32_t frac = (uint32_t)(ns % 1000000000u);
    if (sec != last->sec || !last->len) {
        last->sec = sec;
        last->len = sec ? pt__digits(sec, last->digits) : 0;
    }
    memcpy(o, last->digits, sizeof last->digits); /* a fixed size: a few moves */
    o += last->len;
    if (!sec) return o + pt__digits(frac, o);
    for (int k = 7; k >= 1; k -= 2) {
        memcpy(o + k, pt__pairs + 2 * (frac % 100), 2);
        frac /= 100;
    }
    o[0] = (char)('0' + frac);
    return o + 9;
}

/* Lower-case hex of n bytes (a multiple of 4) at o, four bytes at a time:
 * each byte's nibbles spread into two bytes of a word, then made digits. */
static char *pt__hex(char *o, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v;
        memcpy(&v, b + i, 4);
        uint64_t x = v;
        x = (x | (x << 16)) & 0x0000ffff0000ffffull;
        x = (x | (x << 8)) & 0x00ff00ff00ff00ffull; /* byte k at byte 2k */
        x = ((x >> 4) & 0x000f000f000f000full) | ((x & 0x000f000f000f000full) << 8);
        uint64_t letters = ((x + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
        x += 0x3030303030303030ull + letters * ('a' - '0' - 10);
        memcpy(o, &x, 8);
        o += 8;
    }
    return o;
}

static int pt__render(pt_buf_t *b, pt_span_t **spans, size_t n)
{
    pt_buf_puts(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\","
                   "\"value\":{\"stringValue\":\"");
    pt_buf_json_escape(b, pt__cfg.service_name, strlen(pt__cfg.service_name));
    pt_buf_puts(b, "\"}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"portico\"},\"spans\":[");
    /* the spans of one request are one trace: its id is hex-encoded once */
    uint8_t last_id[16];
    char last_hex[32];
    int have_last = 0;
    pt__secs_t secs = {0};
    static const uint8_t zero[8];
    for (size_t i = 0; i < n; i++) {
        const pt_span_t *s = spans[i];
        if (pt_buf_reserve(b, pt__span_max(s)) != 0) return -1;
        char *o = b->data + b->len;
        if (i) *o++ = ',';
        o = PT__LIT(o, "{\"traceId\":\"");
        if (have_last && memcmp(last_id, s->trace_id, 16) == 0) {
            memcpy(o, last_hex, 32);
            o += 32;
        } else {
            pt__hex(o, s->trace_id, 16);
            memcpy(last_id, s->trace_id, 16);
            memcpy(last_hex, o, 32);
            have_last = 1;
            o += 32;
        }
        o = PT__LIT(o, "\",\"spanId\":\"");
        o = pt__hex(o, s->span_id, 8);
        o = PT__LIT(o, "\",\"parentSpanId\":\"");
        if (memcmp(s->parent_id, zero, 8) != 0) o = pt__hex(o, s->parent_id, 8);
        o = PT__LIT(o, "\",\"name\":\"");
        o = pt__esc(o, s->name, strnlen(s->name, sizeof s->name));
        o = PT__LIT(o, "\",\"kind\":");
        o += pt__digits((uint64_t)s->kind, o);
        o = PT__LIT(o, ",\"startTimeUnixNano\":\"");
        o = pt__time(o, s->start_ns, &secs);
        o = PT__LIT(o, "\",\"endTimeUnixNano\":\"");
        o = pt__time(o, s->end_ns, &secs);
        o = PT__LIT(o, "\",\"attributes\":[");
        o = pt__attrs(o, s);
        o = PT__LIT(o, "],\"status\":{");
        if (s->error) {
            o = PT__LIT(o, "\"code\":2,\"message\":\"");
            o = pt__esc(o, s->msg, strnlen(s->msg, sizeof s->msg));
            *o++ = '"';
        }
        o = PT__LIT(o, "}}");
        b->len = (size_t)(o - b->data);
    }
    if (pt_buf_puts(b, "]}]}]}") != 0) return -1;
    return 0;
}

static void *pt__main(void *arg)
{
    (void)arg;
    size_t batch = pt__cfg.batch_size;
    pt_span_t **mine = calloc(batch, sizeof *mine);
    pt_buf_t body = {0};
    uint64_t stop_by = 0;
    if (!mine) return NULL;
    pthread_mutex_lock(&pt__mu);
    for (;;) {
        if (pt__count < batch && !pt__stopping) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t ns = (uint64_t)ts.tv_nsec + pt__cfg.interval_ms * 1000000ull;
            ts.tv_sec += (time_t)(ns / 1000000000ull);
            ts.tv_nsec = (long)(ns % 1000000000ull);
            pthread_cond_timedwait(&pt__cv, &pt__mu, &ts);
        }
        size_t n = pt__count < batch ? pt__count : batch;
        for (size_t i = 0; i < n; i++)
            mine[i] = pt__ring[(pt__head + i) % pt__cap];
        pt__head = (pt__head + n) % pt__cap;
        pt__count -= n;
        int stop = pt__stopping && pt__count == 0;
        /* at stop, what is queued gets one time-out in all: past it, or
         * after a failed post, the rest is dropped (a stop never hangs on a
         * collector that is gone) */
        int stopping = pt__stopping;
        int give_up = stopping && (pt__gave_up || (stop_by && pt__mono_ms() >= stop_by));
        if (stopping && !stop_by) stop_by = pt__mono_ms() + pt__cfg.timeout_ms;
        pthread_mutex_unlock(&pt__mu);
        if (n) {
            body.len = 0;
            int st = -1;
            if (!give_up) {
                st = pt__render(&body, mine, n) == 0 ? pt__post(body.data, body.len) : -1;
            }
            if (stopping && (st < 200 || st >= 300)) pt__gave_up = 1;
            if (st >= 200 && st < 300) {
                __atomic_add_fetch(&pt__exported, n, __ATOMIC_RELAXED);
            } else {
                __atomic_add_fetch(&pt__dropped_failed, n, __ATOMIC_RELAXED);
                __atomic_add_fetch(&pt__posts_failed, 1, __ATOMIC_RELAXED);
            }
            for (size_t i = 0; i + 1 < n; i++)
                mine[i]->next = mine[i + 1];
        }
        pthread_mutex_lock(&pt__mu);
        /* the batch's records go back for the pushers to take, as many as
         * the queue holds at most (more are not needed at once) */
        if (n && pt__n_spares + n <= pt__cap) {
            mine[n - 1]->next = pt__spares;
            pt__spares = mine[0];
            pt__n_spares += n;
        } else if (n) {
            mine[n - 1]->next = NULL;
            pthread_mutex_unlock(&pt__mu);
            pt_trace_queue_free(mine[0]);
            pthread_mutex_lock(&pt__mu);
        }
        if (stop || (pt__stopping && pt__count == 0)) break;
    }
    pthread_mutex_unlock(&pt__mu);
    pt_buf_free(&body);
    free(mine);
    return NULL;
}

static char *pt__dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

int pt_trace_start(const pt_trace_cfg_t *cfg, char *err, size_t errlen)
{
    if (!cfg->enabled || pt__running) return 0;
    pt__cfg = *cfg;
    pt__cfg.endpoint = pt__dup(cfg->endpoint);
    pt__cfg.host = pt__dup(cfg->host);
    pt__cfg.port = pt__dup(cfg->port);
    pt__cfg.path = pt__dup(cfg->path);
    pt__cfg.service_name = pt__dup(cfg->service_name ? cfg->service_name : "portico");
    pt__cfg.headers = pt__dup(cfg->headers ? cfg->headers : "");
    pt__cfg.tls_name = pt__dup(cfg->tls_name);
    if (pt__cfg.tls_ctx) SSL_CTX_up_ref(pt__cfg.tls_ctx);
    pt__cap = cfg->queue_size;
    pt__ring = calloc(pt__cap, sizeof *pt__ring);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&pt__cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!pt__ring || !pt__cfg.host || !pt__cfg.port || !pt__cfg.path || !pt__cfg.service_name ||
        !pt__cfg.headers) {
        snprintf(err, errlen, "tracing: out of memory");
        goto fail;
    }
    pt__stopping = 0;
    pt__running = 1;
    pt_trace_set_ratio(cfg->ratio);
    if (pthread_create(&pt__thread, NULL, pt__main, NULL) != 0) {
        pt__running = 0;
        snprintf(err, errlen, "tracing: cannot start the exporter thread");
        goto fail;
    }
    pt_trace_on = 1;
    return 0;
fail:
    free(pt__ring);
    pt__ring = NULL;
    pt_trace_cfg_free(&pt__cfg);
    return -1;
}

void pt_trace_stop(void)
{
    if (!pt__running) return;
    pt_trace_on = 0;
    pthread_mutex_lock(&pt__mu);
    pt__stopping = 1;
    pthread_mutex_unlock(&pt__mu);
    pthread_cond_signal(&pt__cv);
    pthread_join(pt__thread, NULL);
    pthread_mutex_lock(&pt__mu);
    for (size_t i = 0; i < pt__count; i++)
        free(pt__ring[(pt__head + i) % pt__cap]);
    pt__count = 0;
    pt_trace_queue_free(pt__spares);
    pt__spares = NULL;
    pt__n_spares = 0;
    pt__running = 0;
    pthread_mutex_unlock(&pt__mu);
    free(pt__ring);
    pt__ring = NULL;
    pt_trace_cfg_free(&pt__cfg);
}

void pt_trace_render_metrics(pt_buf_t *out)
{
    if (!pt__cfg.host) return;
    pthread_mutex_lock(&pt__mu);
    size_t queued = pt__count;
    pthread_mutex_unlock(&pt__mu);
    pt_buf_printf(
        out,
        "# HELP portico_trace_spans_exported_total Spans the collector accepted.\n"
        "# TYPE portico_trace_spans_exported_total counter\n"
        "portico_trace_spans_exported_total %llu\n"
        "# HELP portico_trace_spans_dropped_total Spans dropped: the queue was full, or the "
        "collector did not take their batch.\n"
        "# TYPE portico_trace_spans_dropped_total counter\n"
        "portico_trace_spans_dropped_total{reason=\"queue_full\"} %llu\n"
        "portico_trace_spans_dropped_total{reason=\"export_failed\"} %llu\n"
        "# HELP portico_trace_export_failures_total Posts to the collector that failed.\n"
        "# TYPE portico_trace_export_failures_total counter\n"
        "portico_trace_export_failures_total %llu\n"
        "# HELP portico_trace_attributes_dropped_total Span attributes past a span's bound.\n"
        "# TYPE portico_trace_attributes_dropped_total counter\n"
        "portico_trace_attributes_dropped_total %llu\n"
        "# HELP portico_trace_queue_spans Spans waiting for the exporter.\n"
        "# TYPE portico_trace_queue_spans gauge\nportico_trace_queue_spans %zu\n",
        (unsigned long long)__atomic_load_n(&pt__exported, __ATOMIC_RELAXED),
        (unsigned long long)__atomic_load_n(&pt__dropped_full, __ATOMIC_RELAXED),
        (unsigned long long)__atomic_load_n(&pt__dropped_failed, __ATOMIC_RELAXED),
        (unsigned long long)__atomic_load_n(&pt__posts_failed, __ATOMIC_RELAXED),
        (unsigned long long)__atomic_load_n(&pt__attr_drops, __ATOMIC_RELAXED), queued);
}
