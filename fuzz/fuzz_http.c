/* libFuzzer target: pt_http_parser, the request side of the HTTP/1.1 gate.
 * The input's first byte seeds how the rest is cut into reads; the rest is
 * what a client sends (requests, pipelined, chunked, trailers, garbage).
 * It is parsed twice: whole, and cut into small reads. Both must give the
 * same requests (method, version, target, headers, body) and both must
 * refuse or both accept, since a parser whose verdict depends on where the
 * reads fall is a desync. Every request handed over must keep the gate's
 * promises: offsets inside head, token names, clean values, one Host for
 * HTTP/1.1, a target in origin form of printable ASCII without a fragment,
 * no CONNECT, at most PT_HTTP_PARSER_MAX_FIELDS headers. */
#include "pt_field.h"
#include "pt_http_parser.h"

#include <stdint.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t hash; /* of every request handed over, in order */
    size_t body;   /* body bytes of the current request */
    int requests;
} pt__run_t;

static uint64_t pt__mix(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ull; /* FNV-1a */
    return h;
}

static void pt__check_head(pt_http_parser_t *p)
{
    const char *h = p->head.data ? p->head.data : "";
    int hosts = 0;
    if (p->url_len > p->head.len) abort();
    if (p->parser.method != HTTP_CONNECT && p->url_len && h[0] != '/' &&
        !(p->url_len == 1 && h[0] == '*'))
        abort(); /* absolute form must have become a path */
    if (p->parser.http_major != 1 || p->parser.http_minor > 1) abort();
    if (p->parser.method == HTTP_CONNECT) abort(); /* 501: never a tunnel */
    for (uint32_t i = 0; i < p->url_len; i++)
        if ((unsigned char)h[i] <= 0x20 || (unsigned char)h[i] >= 0x7f || h[i] == '#') abort();
    if (p->n_headers > PT_HTTP_PARSER_MAX_FIELDS) abort();
    for (size_t i = 0; i < p->n_headers; i++) {
        const pt_http_header_t *x = &p->headers[i];
        if ((uint64_t)x->name_off + x->name_len > p->head.len ||
            (uint64_t)x->value_off + x->value_len > p->head.len)
            abort();
        if (!pt_field_token(h + x->name_off, x->name_len)) abort();
        if (!pt_field_value(h + x->value_off, x->value_len)) abort();
        if (x->name_len == 4 && strncasecmp(h + x->name_off, "host", 4) == 0) {
            hosts++;
            if (!pt_field_host(h + x->value_off, x->value_len)) abort();
        }
    }
    if (hosts > 1 || (p->parser.http_minor == 1 && hosts != 1)) abort();
}

static int pt__on_head(pt_http_parser_t *p)
{
    pt__run_t *r = p->ud;
    pt__check_head(p);
    r->hash = pt__mix(r->hash, &p->parser.method, 1);
    r->hash = pt__mix(r->hash, &p->parser.http_minor, 1);
    r->hash = pt__mix(r->hash, p->head.data, p->url_len);
    for (size_t i = 0; i < p->n_headers; i++) {
        const pt_http_header_t *x = &p->headers[i];
        r->hash = pt__mix(r->hash, p->head.data + x->name_off, x->name_len);
        r->hash = pt__mix(r->hash, ":", 1);
        r->hash = pt__mix(r->hash, p->head.data + x->value_off, x->value_len);
    }
    r->body = 0;
    /* what a proxied request does: stop at the head, go on later */
    return p->parser.method == HTTP_PUT ? PT_HTTP_PARSER_HOLD : 0;
}

static int pt__on_body(pt_http_parser_t *p, const char *at, size_t len)
{
    pt__run_t *r = p->ud;
    if (r->body + len > 65536) {
        p->error_msg = "the request body is larger than the limit";
        return 413;
    }
    r->body += len;
    r->hash = pt__mix(r->hash, at, len);
    return 0;
}

static void pt__on_done(pt_http_parser_t *p)
{
    pt__run_t *r = p->ud;
    r->requests++;
    r->hash = pt__mix(r->hash, "|", 1);
}

static const pt_http_parser_ops_t pt__ops = {
    .on_head = pt__on_head,
    .on_body = pt__on_body,
    .on_done = pt__on_done,
};

/* Feeds data in reads of the sizes seed picks (0: all at once); returns 1
 * when the parser refused, 0 when it took everything. */
static int pt__run(const char *data, size_t size, unsigned seed, pt__run_t *r)
{
    pt_http_parser_t p;
    memset(&p, 0, sizeof p);
    memset(r, 0, sizeof *r);
    r->hash = 14695981039346656037ull;
    pt_http_parser_init(&p, &pt__ops, r, 4096);
    /* pending bytes, as pt_http keeps them */
    char *pending = malloc(size + 1);
    size_t plen = 0, off = 0;
    int refused = 0;
    uint32_t x = seed * 2654435761u + 1;
    while (!refused && (off < size || plen)) {
        size_t n = size - off;
        if (seed && n) {
            x = x * 1103515245u + 12345u;
            size_t cut = 1 + (x >> 16) % 23;
            if (cut < n) n = cut;
        }
        memcpy(pending + plen, data + off, n);
        plen += n;
        off += n;
        /* parse what is pending until it is used or more is needed */
        size_t at = 0;
        for (;;) {
            size_t used = 0;
            int rc = pt_http_parser_execute(&p, pending + at, plen - at, &used);
            if (used > plen - at) abort();
            at += used;
            if (rc == PT_HTTP_PARSER_ERROR) {
                if (p.error_status < 400 || p.error_status > 599 || !p.error_msg) abort();
                refused = 1;
                break;
            }
            if (rc == PT_HTTP_PARSER_MORE) {
                if (at != plen) abort();
                break;
            }
            pt_http_parser_resume(&p); /* DONE or HELD: go on at once */
        }
        memmove(pending, pending + at, plen - at);
        plen -= at;
    }
    free(pending);
    pt_http_parser_free(&p);
    return refused;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned seed = data[0] | 1u;
    const char *in = (const char *)data + 1;
    size--;
    pt__run_t whole, cut;
    int a = pt__run(in, size, 0, &whole);
    int b = pt__run(in, size, seed, &cut);
    if (a != b) abort(); /* the verdict depended on where reads fell */
    /* the same requests were handed over (a refused one's body may have
     * been cut at different places, so its bytes are compared only when
     * nothing was refused) */
    if (whole.requests != cut.requests) abort();
    if (!a && whole.hash != cut.hash) abort();
    return 0;
}
