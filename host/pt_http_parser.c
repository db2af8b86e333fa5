#include "pt_http_parser.h"
#include "pt_field.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* What the bytes not yet scanned are. llhttp pauses (a callback returns
 * HPE_PAUSED) at each place the kind changes: the end of the head, of a
 * chunk-size line, of a chunk (data and CRLF, or trailers) and of the
 * request, so every byte is scanned knowing what it is, and before the owner
 * hears of anything that follows it. */
enum {
    PT__IDLE = 0, /* before a request: empty lines are skipped */
    PT__HEAD,     /* request line and headers */
    PT__SIZE,     /* a chunk-size line (extensions included) */
    PT__DATA,     /* chunk data (passed by on_body) and its CRLF */
    PT__TRAILER,  /* the trailer section and its empty line */
    PT__BODY,     /* a Content-Length body, or nothing */
    PT__UPGRADED, /* after a request with Upgrade: no more parsing */
    PT__METHOD,   /* llhttp refused the method: is it a token then SP (501)? */
};

/* the event a callback paused llhttp for */
enum { PT__EV_NONE = 0, PT__EV_HEAD, PT__EV_CHUNK, PT__EV_CHUNK_END, PT__EV_DONE };

/* chunk-size line bytes free of charge ("ffffffff\r\n"); the rest counts */
#define PT__CHUNK_LINE_FREE 10

/* Records why the request is refused (the first reason wins); returns -1,
 * which is also PT_HTTP_PARSER_ERROR. */
static int pt__fail(pt_http_parser_t *p, int status, const char *msg)
{
    if (!p->error_status) {
        p->error_status = status;
        p->error_msg = msg;
    }
    return -1;
}

static int pt__limit(pt_http_parser_t *p)
{
    /* memory: what is stored, plus a line's framing per header */
    if (p->head.len + 4 * (uint64_t)p->n_headers > p->max_header_bytes)
        return pt__fail(p, 431, "the request headers are larger than the limit");
    return 0;
}

/* ---- llhttp callbacks ---- */

static int pt__on_message_begin(llhttp_t *lp)
{
    pt_http_parser_t *p = lp->data;
    p->head.len = 0;
    p->url_len = 0;
    p->n_headers = 0;
    p->authority_off = p->authority_len = 0;
    p->trailer_name_len = 0;
    p->target_len = 0;
    p->n_trailers = 0;
    p->line_tail_len = 0;
    p->meta = p->ext = p->chunk_line = 0;
    p->in_field = 0;
    p->has_version = 0;
    p->line_start = 0;
    p->after_cr = 0;
    p->last = 0;
    p->crlf_seen = 0;
    p->lines = 0;
    p->version_len = 0;
    p->close_after = 0;
    if (p->ops->on_begin) p->ops->on_begin(p);
    return 0;
}

static int pt__on_url(llhttp_t *lp, const char *at, size_t len)
{
    pt_http_parser_t *p = lp->data;
    if (pt_buf_append(&p->head, at, len) != 0) return pt__fail(p, 500, "out of memory");
    p->url_len += (uint32_t)len;
    if (p->head.len > p->max_header_bytes)
        return pt__fail(p, 414, "the request target is longer than the limit");
    return 0;
}

/* 1 when s[0..n) is printable ASCII without '#' (RFC 9112 §3.2: a target
 * is a URI, which has no CTL, SP, DEL or byte >= 0x80; origin form has no
 * fragment). llhttp 8.1 (not built strict) takes HTAB, FF, bytes >= 0x80
 * and a fragment. The ASCII RFC 3986 leaves out ("<>\^`{|}) pass, as
 * they do in nginx and in llhttp's strict mode: clients send them. Eight
 * bytes a step: a target is read once per request. */
static int pt__target_ok(const char *s, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    const uint64_t hash = 0x2323232323232323ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x, h;
        memcpy(&x, s + i, 8);
        h = x ^ hash; /* a '#' byte is 0 here */
        /* a byte <= 0x20, >= 0x7f, or '#' */
        if ((((x - 0x21 * ones) & ~x) | (x + ones) | x | ((h - ones) & ~h)) & highs) break;
    }
    if (i < n && i == n - n % 8 && n >= 8) {
        /* the last bytes: the word that ends at n, seen bytes again */
        uint64_t x, h;
        memcpy(&x, s + n - 8, 8);
        h = x ^ hash;
        if (!((((x - 0x21 * ones) & ~x) | (x + ones) | x | ((h - ones) & ~h)) & highs)) return 1;
    }
    for (; i < n; i++)
        if ((unsigned char)(s[i] - 0x21) > 0x5d || s[i] == '#') return 0;
    return 1;
}

static void pt__reverse(char *s, size_t n)
{
    for (size_t i = 0, j = n; i + 1 < j; i++, j--) {
        char t = s[i];
        s[i] = s[j - 1];
        s[j - 1] = t;
    }
}

/* An absolute-form target (RFC 9112 §3.2.2) becomes its path and query, and
 * its authority is kept after it in head for Host. Only the target is in
 * head yet, so the bytes are rotated in place: no copy, no allocation. */
static int pt__on_url_complete(llhttp_t *lp)
{
    pt_http_parser_t *p = lp->data;
    char *u = p->head.data;
    size_t n = p->url_len, scheme;
    p->target_len = (uint32_t)n;
    /* no tunnels here: what follows a CONNECT head is not HTTP */
    if (lp->method == HTTP_CONNECT) return pt__fail(p, 501, "CONNECT is not supported");
    if (!pt__target_ok(u, n))
        return pt__fail(p, 400, "the request target has a byte a URI cannot have, or a fragment");
    if (n == 0 || u[0] == '/') return 0;
    if (n == 1 && u[0] == '*') return 0; /* asterisk form: the router answers */
    if (n > 7 && strncasecmp(u, "http://", 7) == 0)
        scheme = 7;
    else if (n > 8 && strncasecmp(u, "https://", 8) == 0)
        scheme = 8;
    else
        return pt__fail(p, 400, "the request target is neither a path nor an http(s) URI");
    size_t a = scheme;
    while (a < n && u[a] != '/' && u[a] != '?' && u[a] != '#')
        a++;
    if (!pt_field_host(u + scheme, a - scheme))
        return pt__fail(p, 400, "the request target's authority is not a valid host");
    size_t lead = a, rest = n - a;
    pt__reverse(u, lead);
    pt__reverse(u + lead, rest);
    pt__reverse(u, n); /* u: rest, scheme, authority */
    if (rest == 0 || u[0] != '/') {
        /* "http://h" or "http://h?q": the path is "/" (the scheme's first byte goes) */
        memmove(u + 1, u, rest);
        u[0] = '/';
        rest++;
    }
    p->url_len = (uint32_t)rest;
    p->authority_off = (uint32_t)(n - (a - scheme));
    p->authority_len = (uint32_t)(a - scheme);
    return 0;
}

static int pt__on_version(llhttp_t *lp, const char *at, size_t len)
{
    pt_http_parser_t *p = lp->data;
    for (size_t i = 0; i < len && p->version_len < sizeof p->version; i++)
        p->version[p->version_len++] = at[i];
    return 0;
}

static int pt__on_version_complete(llhttp_t *lp)
{
    pt_http_parser_t *p = lp->data;
    p->has_version = 1;
    return 0;
}

static int pt__in_trailers(const pt_http_parser_t *p)
{
    return p->mode != PT__HEAD;
}

/* s[0..n) as one word, n from 4 to 8: two loads that may overlap (a byte
 * seen twice changes no verdict below). */
static inline uint64_t pt__word(const char *s, size_t n)
{
    uint32_t a, b;
    if (n == 8) {
        uint64_t x;
        memcpy(&x, s, 8);
        return x;
    }
    memcpy(&a, s, 4);
    memcpy(&b, s + n - 4, 4);
    return (uint64_t)a | (uint64_t)b << 32;
}

/* 1 when s[0..n) has no SP. A field name llhttp 8.1 took is a token or
 * has SP in it: its header_field_general table (not built strict) is tchar
 * plus SP, and the names it matches itself (Connection, Content-Length...)
 * fall back to that table on any other byte; the differential case in
 * tests/unit/test_http_parser.c checks it over every byte. So "no SP" is
 * pt_field_token's verdict here, at a word a step. */
static inline int pt__no_sp(const char *s, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t x, any = 0;
    if (n < 4) {
        for (size_t i = 0; i < n; i++)
            if (s[i] == ' ') return 0;
        return 1;
    }
    /* whole words, then the last eight bytes (or fewer) over again */
    for (size_t i = 0; i + 8 < n; i += 8) {
        memcpy(&x, s + i, 8);
        x ^= 0x2020202020202020ull; /* a SP byte is 0 here */
        any |= (x - ones) & ~x & highs;
    }
    x = (n > 8 ? pt__word(s + n - 8, 8) : pt__word(s, n)) ^ 0x2020202020202020ull;
    any |= (x - ones) & ~x & highs;
    return any == 0;
}

static int pt__on_header_field(llhttp_t *lp, const char *at, size_t len)
{
    pt_http_parser_t *p = lp->data;
    if (pt__in_trailers(p)) {
        /* never stored: checked piece by piece (see pt__no_sp) */
        if (!pt__no_sp(at, len)) return pt__fail(p, 400, "a trailer field name is not a token");
        p->trailer_name_len += (uint32_t)len;
        p->in_field = 1;
        return 0;
    }
    if (!p->in_field) {
        if (p->n_headers == PT_HTTP_PARSER_MAX_FIELDS)
            return pt__fail(p, 431, "the request has more header fields than the limit");
        if (p->n_headers == p->cap_headers) {
            size_t cap = p->cap_headers ? p->cap_headers * 2 : 16;
            pt_http_header_t *h = realloc(p->headers, cap * sizeof *h);
            if (!h) return pt__fail(p, 500, "out of memory");
            p->headers = h;
            p->cap_headers = cap;
        }
        pt_http_header_t *h = &p->headers[p->n_headers++];
        memset(h, 0, sizeof *h);
        h->name_off = (uint32_t)p->head.len;
        p->in_field = 1;
    }
    /* "Host : x" comes as the name "Host ": not a token, so refused; each
     * piece is checked as it comes (SP is one byte: no piece boundary hides it) */
    if (!pt__no_sp(at, len))
        return pt__fail(p, 400, "a header name is not a token (RFC 9110 §5.1)");
    if (pt_buf_append(&p->head, at, len) != 0) return pt__fail(p, 500, "out of memory");
    p->headers[p->n_headers - 1].name_len += (uint32_t)len;
    return pt__limit(p);
}

static int pt__on_header_field_complete(llhttp_t *lp)
{
    pt_http_parser_t *p = lp->data;
    if (pt__in_trailers(p)) {
        if (p->trailer_name_len == 0) return pt__fail(p, 400, "a trailer field has no name");
        if (++p->n_trailers > PT_HTTP_PARSER_MAX_FIELDS)
            return pt__fail(p, 431, "the request has more trailer fields than the limit");
        p->trailer_name_len = 0;
        p->in_field = 0;
        return 0;
    }
    if (!p->in_field) { /* an empty name: llhttp may not call on_header_field */
        int rc = pt__on_header_field(lp, "", 0);
        if (rc) return rc;
    }
    p->in_field = 0;
    pt_http_header_t *h = &p->headers[p->n_headers - 1];
    if (h->name_len == 0) return pt__fail(p, 400, "a header name is not a token (RFC 9110 §5.1)");
    h->value_off = (uint32_t)p->head.len;
    return 0;
}

static int pt__on_header_value(llhttp_t *lp, const char *at, size_t len)
{
    pt_http_parser_t *p = lp->data;
    if (pt__in_trailers(p)) return 0; /* checked by llhttp: see pt__on_header_value_complete */
    if (pt_buf_append(&p->head, at, len) != 0) return pt__fail(p, 500, "out of memory");
    p->headers[p->n_headers - 1].value_len += (uint32_t)len;
    return pt__limit(p);
}

static int pt__on_header_value_complete(llhttp_t *lp)
{
    pt_http_parser_t *p = lp->data;
    if (pt__in_trailers(p)) return 0;
    pt_http_header_t *h = &p->headers[p->n_headers - 1];
    const char *v = p->head.data ? p->head.data + h->value_off : "";
    while (h->value_len && (v[h->value_len - 1] == ' ' || v[h->value_len - 1] == '\t'))
        h->value_len--; /* trailing OWS is not part of the value (RFC 9110 §5.5) */
    /* No byte check here: llhttp 8.1 (no lenient flag set) refuses in every
     * value state, of the head and of the trailers, each byte pt_field_value
     * refuses (its header_value table is HTAB, SP..0x7e and 0x80..0xff; CR
     * must be followed by LF; a bare LF is refused by pt__scan_lines). The
     * differential case in tests/unit/test_http_parser.c checks it byte by
     * byte, so an llhttp that stops doing it fails the build's tests. */
    return 0;
}

static int pt__pause(pt_http_parser_t *p, int ev)
{
    p->event = ev;
    return HPE_PAUSED;
}

static int pt__on_headers_complete(llhttp_t *lp)
{
    return pt__pause(lp->data, PT__EV_HEAD);
}

static int pt__on_chunk_header(llhttp_t *lp)
{
    return pt__pause(lp->data, PT__EV_CHUNK);
}

static int pt__on_chunk_complete(llhttp_t *lp)
{
    return pt__pause(lp->data, PT__EV_CHUNK_END);
}

static int pt__scan(pt_http_parser_t *p, const char *s, const char *e);

static int pt__on_body(llhttp_t *lp, const char *at, size_t len)
{
    pt_http_parser_t *p = lp->data;
    /* what came before the data is framing: checked before the data goes on */
    if (p->scan && p->scan < at && pt__scan(p, p->scan, at) != 0) return -1;
    p->scan = at + len;
    int rc = p->ops->on_body ? p->ops->on_body(p, at, len) : 0;
    if (rc) return pt__fail(p, rc, p->error_msg ? p->error_msg : "the request body is refused");
    return 0;
}

static int pt__on_message_complete(llhttp_t *lp)
{
    return pt__pause(lp->data, PT__EV_DONE);
}

static const llhttp_settings_t pt__settings = {
    .on_message_begin = pt__on_message_begin,
    .on_url = pt__on_url,
    .on_url_complete = pt__on_url_complete,
    .on_version = pt__on_version,
    .on_version_complete = pt__on_version_complete,
    .on_header_field = pt__on_header_field,
    .on_header_field_complete = pt__on_header_field_complete,
    .on_header_value = pt__on_header_value,
    .on_header_value_complete = pt__on_header_value_complete,
    .on_headers_complete = pt__on_headers_complete,
    .on_chunk_header = pt__on_chunk_header,
    .on_chunk_complete = pt__on_chunk_complete,
    .on_body = pt__on_body,
    .on_message_complete = pt__on_message_complete,
};

/* ---- the byte scan ---- */

/* The request line, at its LF: exactly method SP target SP "HTTP/" d "." d
 * CR. llhttp 8.1 checked each part but skips runs of SP before the target
 * and before the version, and takes "RTSP/" and "ICE/" for "HTTP/"; its
 * length (method, target and version are known) and its last bytes decide
 * both. lf_at is the LF's offset from the start of the head. */
static int pt__request_line(pt_http_parser_t *p, const char *s0, const char *lf, uint64_t lf_at)
{
    static const char proto[] = " HTTP/";
    const char *m = llhttp_method_name((llhttp_method_t)p->parser.method);
    uint64_t want = strlen(m) + 1 + (uint64_t)p->target_len + 10;
    char tail[10];
    const char *t = tail;
    if (lf_at != want)
        return pt__fail(p, 400, "the request line is not method SP target SP version");
    if (lf - s0 >= 10) {
        t = lf - 10;
    } else {
        /* the line spans reads: its end is partly in line_tail */
        size_t here = (size_t)(lf - s0), before = 10 - here;
        if (p->line_tail_len < before) return pt__fail(p, 400, "malformed request line");
        memcpy(tail, p->line_tail + p->line_tail_len - before, before);
        memcpy(tail + before, s0, here);
    }
    if (memcmp(t, proto, 6) != 0 || t[7] != '.' || t[9] != '\r')
        return pt__fail(p, 400, "the request line's protocol is not HTTP");
    return 0;
}

/* Keeps the last bytes of a request line that goes on in the next read. */
static void pt__keep_tail(pt_http_parser_t *p, const char *s, const char *e)
{
    size_t n = (size_t)(e - s), keep = sizeof p->line_tail;
    if (n >= keep) {
        memcpy(p->line_tail, e - keep, keep);
        p->line_tail_len = (unsigned)keep;
        return;
    }
    if (p->line_tail_len + n > keep) {
        size_t drop = p->line_tail_len + n - keep;
        memmove(p->line_tail, p->line_tail + drop, p->line_tail_len - drop);
        p->line_tail_len -= (unsigned)drop;
    }
    memcpy(p->line_tail + p->line_tail_len, s, n);
    p->line_tail_len += (unsigned)n;
}

/* An LF of the head or the trailers at lf (s0..e is the scan's range,
 * base the head's bytes before s0): CR before it, no SP or HTAB after it. */
static inline int pt__lf(pt_http_parser_t *p, const char *s0, const char *lf, const char *e,
                         uint64_t base)
{
    if ((lf > s0 ? lf[-1] : p->last) != '\r')
        return pt__fail(p, 400, "a line of the request head ends in LF without CR");
    if (p->lines++ == 0 && p->mode == PT__HEAD) {
        if (!p->has_version) return pt__fail(p, 400, "the request line has no HTTP version");
        if (pt__request_line(p, s0, lf, base + (uint64_t)(lf - s0)) != 0) return -1;
    }
    if (lf + 1 == e)
        p->line_start = 1; /* the next line's first byte comes in a later scan */
    else if (lf[1] == ' ' || lf[1] == '\t')
        return pt__fail(p, 400, "obsolete line folding in the request head");
    return 0;
}

/* Lines of the head and of the trailers: every LF comes right after a CR,
 * no line starts with SP or HTAB (obs-fold), the request line carries a
 * version and has its exact shape, and the section ends in LF (checked at
 * its end: llhttp 8.1 takes CR and any byte as the empty line's CRLF). A CR
 * elsewhere not followed by LF llhttp refuses itself. Counted against
 * max_header_bytes. */
static int pt__scan_lines(pt_http_parser_t *p, const char *s, const char *e)
{
    const char *s0 = s, *q = s;
    uint64_t base = p->meta;
    p->meta += (uint64_t)(e - s);
    if (p->meta > p->max_header_bytes) {
        if (p->mode == PT__HEAD && p->lines == 0) /* a read ended in the request line */
            return pt__fail(p, 414, "the request target is longer than the limit");
        return pt__fail(p, 431,
                        p->mode == PT__HEAD ? "the request headers are larger than the limit"
                                            : "the request trailers are larger than the limit");
    }
    if (p->line_start) {
        if (*s == ' ' || *s == '\t')
            return pt__fail(p, 400, "obsolete line folding in the request head");
        p->line_start = 0;
    }
#ifdef __SSE2__
    /* sixteen bytes a step, the LFs of each as a bit mask: a memchr call a
     * line was most of this function's cost on a small request */
    const __m128i nl = _mm_set1_epi8('\n');
    for (; q + 16 <= e; q += 16) {
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(const void *)q), nl));
        for (; m; m &= m - 1)
            if (pt__lf(p, s0, q + __builtin_ctz(m), e, base) != 0) return -1;
    }
    if (q < e && e - s0 >= 16) {
        /* the last bytes: the block that ends at e, less what was seen */
        const char *b = e - 16;
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(const void *)b), nl));
        for (m &= ~0u << (q - b); m; m &= m - 1)
            if (pt__lf(p, s0, b + __builtin_ctz(m), e, base) != 0) return -1;
        q = e;
    }
#endif
    for (; q < e; q++)
        if (*q == '\n' && pt__lf(p, s0, q, e, base) != 0) return -1;
    if (p->lines == 0 && p->mode == PT__HEAD) pt__keep_tail(p, s0, e);
    p->last = e[-1];
    return 0;
}

/* A chunk-size line: CRLF only; its bytes past the first few (extensions,
 * leading zeros) count against max_header_bytes for the whole request, so a
 * line of megabytes is refused early (the CVE-2024-22019 class). */
static int pt__scan_size(pt_http_parser_t *p, const char *s, const char *e)
{
    uint64_t n = (uint64_t)(e - s);
    if (p->chunk_line + n > PT__CHUNK_LINE_FREE)
        p->ext +=
            p->chunk_line >= PT__CHUNK_LINE_FREE ? n : p->chunk_line + n - PT__CHUNK_LINE_FREE;
    p->chunk_line += n;
    if (p->ext > p->max_header_bytes)
        return pt__fail(p, 413, "the chunk extensions are larger than the limit");
    for (; s < e; s++) {
        unsigned char ch = (unsigned char)*s;
        if (p->after_cr && ch != '\n') return pt__fail(p, 400, "a CR without LF in a chunk size");
        if (ch == '\n' && !p->after_cr)
            return pt__fail(p, 400, "a chunk-size line ends in LF without CR");
        p->after_cr = ch == '\r';
    }
    return 0;
}

/* llhttp 8.1 takes any two bytes after chunk data as its CRLF: a request
 * smuggling risk when a proxy in front reads them differently. */
static int pt__scan_crlf(pt_http_parser_t *p, const char *s, const char *e)
{
    for (; s < e; s++, p->crlf_seen++) {
        char want = p->crlf_seen == 0 ? '\r' : p->crlf_seen == 1 ? '\n' : 0;
        if (*s != want) return pt__fail(p, 400, "chunk data is not followed by CRLF");
    }
    return 0;
}

static int pt__scan(pt_http_parser_t *p, const char *s, const char *e)
{
    if (s >= e) return 0;
    switch (p->mode) {
    case PT__HEAD:
    case PT__TRAILER:
        return pt__scan_lines(p, s, e);
    case PT__SIZE:
        return pt__scan_size(p, s, e);
    case PT__DATA:
        return pt__scan_crlf(p, s, e);
    default:
        return 0;
    }
}

/* ---- the head's rules ---- */

#define pt__is pt_http_parser_header_is

const char *pt_http_parser_header(const pt_http_parser_t *p, const char *name, size_t *len)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < p->n_headers; i++) {
        const pt_http_header_t *h = &p->headers[i];
        if (pt__is(p, h, name, n)) {
            *len = h->value_len;
            return p->head.data + h->value_off;
        }
    }
    return NULL;
}

/* 1 when h is called lower (lower case, h->name_len bytes long). Without
 * strncasecmp: a name is a token here, and for a tchar c and a lower-case
 * letter or '-' l, (c | 0x20) == l only when c is l or its upper case. */
static inline int pt__name_is(const pt_http_parser_t *p, const pt_http_header_t *h,
                              const char *lower)
{
    const char *s = p->head.data + h->name_off;
    size_t n = h->name_len; /* 4 or more: the names asked for */
    const uint64_t fold = 0x2020202020202020ull;
    uint64_t x, y, diff = 0;
    for (size_t i = 0; i + 8 < n; i += 8) {
        memcpy(&x, s + i, 8);
        memcpy(&y, lower + i, 8);
        diff |= (x | fold) ^ y;
    }
    if (n > 8)
        diff |= (pt__word(s + n - 8, 8) | fold) ^ pt__word(lower + n - 8, 8);
    else
        diff |= (pt__word(s, n) | fold) ^ pt__word(lower, n);
    return diff == 0;
}

/* Version, framing and Host, once the whole head is in (RFC 9112 §2.3, §3.2,
 * §6). Returns 0 or -1 with the error set. */
static int pt__check_head(pt_http_parser_t *p)
{
    llhttp_t *lp = &p->parser;
    if (!p->has_version) return pt__fail(p, 400, "the request line has no HTTP version");
    if (lp->http_major != 1 || lp->http_minor > 1)
        return pt__fail(p, 505, "only HTTP/1.0 and HTTP/1.1 are supported");
    const pt_http_header_t *host = NULL, *te = NULL;
    int n_host = 0, n_te = 0, n_cl = 0;
    p->h_expect = p->h_cid = -1;
    for (size_t i = 0; i < p->n_headers; i++) {
        const pt_http_header_t *h = &p->headers[i];
        switch (h->name_len) {
        case 4:
            if (pt__name_is(p, h, "host")) host = n_host++ ? host : h;
            break;
        case 6:
            if (p->h_expect < 0 && pt__name_is(p, h, "expect")) p->h_expect = (int)i;
            break;
        case 14:
            n_cl += pt__name_is(p, h, "content-length");
            break;
        case 16:
            if (p->h_cid < 0 && pt__name_is(p, h, "x-correlation-id")) p->h_cid = (int)i;
            break;
        case 17:
            if (pt__name_is(p, h, "transfer-encoding")) te = n_te++ ? te : h;
            break;
        }
    }
    if (n_te) {
        if (n_cl) return pt__fail(p, 400, "Transfer-Encoding and Content-Length together");
        if (n_te > 1 || te->value_len != 7 ||
            strncasecmp(p->head.data + te->value_off, "chunked", 7) != 0 ||
            !(lp->flags & F_CHUNKED))
            return pt__fail(p, 501, "the only transfer coding supported is chunked");
        if (lp->http_minor == 0) p->close_after = 1; /* RFC 9112 §6.1: faulty framing */
    }
    if (n_host > 1) return pt__fail(p, 400, "more than one Host header");
    if (!host && lp->http_minor == 1) return pt__fail(p, 400, "an HTTP/1.1 request needs Host");
    if (host && !pt_field_host(p->head.data + host->value_off, host->value_len))
        return pt__fail(p, 400, "the Host header is not a valid host");
    if (p->authority_len) {
        /* absolute form: its authority replaces Host (RFC 9112 §3.2.2) */
        pt_http_header_t *h = (pt_http_header_t *)host;
        if (!h) {
            if (p->n_headers == p->cap_headers) {
                size_t cap = p->cap_headers ? p->cap_headers * 2 : 16;
                pt_http_header_t *hs = realloc(p->headers, cap * sizeof *hs);
                if (!hs) return pt__fail(p, 500, "out of memory");
                p->headers = hs;
                p->cap_headers = cap;
            }
            h = &p->headers[p->n_headers++];
            h->name_off = (uint32_t)p->head.len;
            h->name_len = 4;
            if (pt_buf_append(&p->head, "Host", 4) != 0) return pt__fail(p, 500, "out of memory");
        }
        h->value_off = p->authority_off;
        h->value_len = p->authority_len;
    }
    return 0;
}

/* ---- driving llhttp ---- */

void pt_http_parser_init(pt_http_parser_t *p, const pt_http_parser_ops_t *ops, void *ud,
                         uint64_t max_header_bytes)
{
    llhttp_init(&p->parser, HTTP_REQUEST, &pt__settings);
    p->parser.data = p;
    p->ops = ops;
    p->ud = ud;
    p->max_header_bytes = max_header_bytes;
    p->mode = PT__IDLE;
}

void pt_http_parser_free(pt_http_parser_t *p)
{
    pt_buf_free(&p->head);
    free(p->headers);
    p->headers = NULL;
    p->n_headers = p->cap_headers = 0;
}

void pt_http_parser_resume(pt_http_parser_t *p)
{
    llhttp_resume(&p->parser);
}

/* 1 when at..end holds the rest of a method token and then SP (where
 * llhttp 8.1 stopped on a method it does not know). */
/* Where llhttp 8.1 stopped on a method it does not know (at..end): 1 when
 * the rest of a token and then SP follow, 0 when another byte does, 2 when
 * the bytes end first (the next read decides: PT__METHOD). */
static int pt__method_then_sp(pt_http_parser_t *p, const char *at, const char *end)
{
    if (!at) return 0;
    for (; at < end && *at != ' '; at++)
        if (!pt_field_token(at, 1) || ++p->meta > p->max_header_bytes) return 0;
    return at < end ? 1 : 2;
}

static int pt__error(pt_http_parser_t *p, llhttp_errno_t err, const char *end)
{
    if (p->error_status) return PT_HTTP_PARSER_ERROR;
    const char *why = llhttp_get_error_reason(&p->parser);
    const char *at = llhttp_get_error_pos(&p->parser);
    if (err == HPE_INVALID_TRANSFER_ENCODING) {
        p->error_status = 501;
        p->error_msg = "the only transfer coding supported is chunked";
    } else if (err == HPE_INVALID_METHOD && pt__method_then_sp(p, at, end) == 1) {
        /* a token llhttp does not know, then SP ("FOO /", "get /": methods
         * are case-sensitive): RFC 9110 §9.1; "GARBAGE\r\n" stays a 400 */
        p->error_status = 501;
        p->error_msg = "the request method is not implemented";
    } else if (err == HPE_INVALID_VERSION && p->version_len == 3 && p->version[1] == '.' &&
               p->version[0] >= '0' && p->version[0] <= '9' && p->version[2] >= '0' &&
               p->version[2] <= '9' && !(p->version[0] == '1' && p->version[2] <= '1')) {
        p->error_status = 505; /* well formed, just not 1.0 or 1.1 */
        p->error_msg = "only HTTP/1.0 and HTTP/1.1 are supported";
    } else {
        p->error_status = 400;
        p->error_msg = why && *why ? why : "malformed HTTP request";
    }
    return PT_HTTP_PARSER_ERROR;
}

int pt_http_parser_execute(pt_http_parser_t *p, const char *data, size_t len, size_t *used)
{
    const char *pos = data, *end = data + len;
    *used = 0;
    if (p->mode == PT__METHOD) {
        int v = pt__method_then_sp(p, data, data + len);
        if (v == 2) {
            *used = len;
            return PT_HTTP_PARSER_MORE;
        }
        return v ? pt__fail(p, 501, "the request method is not implemented")
                 : pt__fail(p, 400, "Invalid method encountered");
    }
    if (p->mode == PT__UPGRADED) {
        p->error_status = 400;
        p->error_msg = "bytes after an upgrade request";
        return PT_HTTP_PARSER_ERROR;
    }
    for (;;) {
        if (p->mode == PT__IDLE) {
            /* empty lines before a request line are ignored (RFC 9112 §2.2);
             * skipped here so the head's scan starts at the request line */
            while (pos < end && (*pos == '\r' || *pos == '\n'))
                pos++;
            if (pos == end) {
                *used = len;
                return PT_HTTP_PARSER_MORE;
            }
            p->mode = PT__HEAD;
        }
        p->event = PT__EV_NONE;
        p->scan = pos;
        llhttp_errno_t err = llhttp_execute(&p->parser, pos, (size_t)(end - pos));
        int ev = p->event;
        const char *stop = err == HPE_OK ? end : llhttp_get_error_pos(&p->parser);
        if (err == HPE_INVALID_METHOD && !p->error_status &&
            pt__method_then_sp(p, llhttp_get_error_pos(&p->parser), end) == 2) {
            p->mode = PT__METHOD; /* a token so far: 501 or 400 once more bytes come */
            *used = len;
            return PT_HTTP_PARSER_MORE;
        }
        if (err != HPE_OK && err != HPE_PAUSED) return pt__error(p, err, end);
        if (pt__scan(p, p->scan, stop) != 0) return PT_HTTP_PARSER_ERROR;
        p->scan = NULL;
        pos = stop;
        if (err == HPE_OK) {
            *used = len;
            return PT_HTTP_PARSER_MORE;
        }
        llhttp_t *lp = &p->parser;
        switch (ev) {
        case PT__EV_HEAD: {
            if (p->last != '\n') return pt__fail(p, 400, "the request head does not end in CRLF");
            if (pt__check_head(p) != 0) return PT_HTTP_PARSER_ERROR;
            p->mode = (lp->flags & F_CHUNKED) ? PT__SIZE : PT__BODY;
            p->after_cr = 0;
            p->chunk_line = 0;
            int rc = p->ops->on_head ? p->ops->on_head(p) : 0;
            if (rc >= 400) return pt__fail(p, rc, p->error_msg ? p->error_msg : "refused");
            if (rc == PT_HTTP_PARSER_HOLD) {
                *used = (size_t)(pos - data);
                return PT_HTTP_PARSER_HELD;
            }
            llhttp_resume(lp);
            break;
        }
        case PT__EV_CHUNK:
            if (p->after_cr) return pt__fail(p, 400, "malformed chunk size");
            if (lp->content_length) {
                p->mode = PT__DATA;
                p->crlf_seen = 0;
            } else {
                p->mode = PT__TRAILER; /* the last chunk: trailers, then an empty line */
                p->line_start = 1;
                p->last = '\n'; /* the size line's */
                p->lines = 1;
            }
            llhttp_resume(lp);
            break;
        case PT__EV_CHUNK_END:
            if (p->mode == PT__TRAILER && p->last != '\n')
                return pt__fail(p, 400, "the trailer section does not end in CRLF");
            if (p->mode == PT__DATA && p->crlf_seen != 2)
                return pt__fail(p, 400, "chunk data is not followed by CRLF");
            p->mode = p->mode == PT__DATA ? PT__SIZE : PT__BODY;
            p->chunk_line = 0;
            p->after_cr = 0;
            llhttp_resume(lp);
            break;
        case PT__EV_DONE:
            p->mode = lp->upgrade ? PT__UPGRADED : PT__IDLE;
            if (p->ops->on_done) p->ops->on_done(p);
            *used = (size_t)(pos - data);
            return PT_HTTP_PARSER_DONE;
        default:
            /* paused by the owner from on_body: not a contract of ops */
            return pt__fail(p, 500, "the parser paused for no reason");
        }
    }
}
