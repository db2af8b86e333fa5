/* pt_http_parser: the request side of HTTP/1.1 with no socket. llhttp 8.1
 * parses; this layer holds the gate's rules on top of it, because llhttp's
 * leniency is not a policy (RFC 9110, RFC 9112):
 *   - every line of the head, of the chunk framing and of the trailers ends
 *     in CRLF (no bare LF or CR), no obs-fold, the request line has a version;
 *   - field names are tokens, values hold no control byte but HTAB (pt_field),
 *     trailing whitespace of a value is not part of it;
 *   - the request line is exactly method SP target SP "HTTP/" d.d (no run
 *     of spaces, no RTSP/ICE protocol); an unknown method (methods are
 *     case-sensitive: "get" is one) and CONNECT: 501;
 *   - the target is printable ASCII without '#' (no fragment, no CTL, SP,
 *     DEL or byte >= 0x80); longer than max_header_bytes: 414;
 *   - HTTP/1.1 has exactly one valid Host; an absolute-form target is
 *     rewritten to its path, and its authority becomes the Host value;
 *   - at most PT_HTTP_PARSER_MAX_FIELDS header fields, and as many trailer
 *     fields (431);
 *   - a version other than 1.0 and 1.1: 505; Transfer-Encoding other than
 *     exactly "chunked": 501; Transfer-Encoding with Content-Length: 400;
 *   - the two bytes after chunk data are exactly CRLF; chunk-size lines
 *     (extensions, leading zeros) count against max_header_bytes (413);
 *   - trailers are checked, counted with the head against max_header_bytes
 *     (431) and dropped: they never become headers.
 * The owner (pt_http, fuzz/fuzz_http.c, the unit test) feeds bytes and gets
 * the request through a small table of callbacks. */
#ifndef PT_HTTP_PARSER_H
#define PT_HTTP_PARSER_H

#include "pt_util.h"

#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>
#include <strings.h>

typedef struct {
    uint32_t name_off, name_len;
    uint32_t value_off, value_len;
} pt_http_header_t;

typedef struct pt_http_parser_s pt_http_parser_t;

/* Header fields a request may have (and trailer fields, counted apart):
 * Envoy's max_headers_count default. Past it: 431. */
#define PT_HTTP_PARSER_MAX_FIELDS 100

/* on_head returns this to stop at the end of the head: execute returns
 * PT_HTTP_PARSER_HELD and goes on after pt_http_parser_resume. */
#define PT_HTTP_PARSER_HOLD 1

typedef struct {
    /* A request's first byte came: the parser has reset its own state. */
    void (*on_begin)(pt_http_parser_t *p);
    /* The head is complete and passed every check. Returns 0 to go on,
     * PT_HTTP_PARSER_HOLD, or an HTTP status >= 400 to refuse the request
     * (with p->error_msg set to a fixed text). */
    int (*on_head)(pt_http_parser_t *p);
    /* Body bytes (chunked framing removed). Returns 0 or a status as on_head. */
    int (*on_body)(pt_http_parser_t *p, const char *at, size_t len);
    /* The whole request is read (trailers checked and dropped). */
    void (*on_done)(pt_http_parser_t *p);
} pt_http_parser_ops_t;

/* The fields an owner reads. pt_conn_t names them directly too (an anonymous
 * struct in a union with its pt_http_parser_t), which pt_proxy and pt_ws use:
 *   parser     llhttp's state: method, version, flags, content_length
 *   head       the request target, then header names and values
 *   url_len    the target's length at head.data: origin form ("/path?q"),
 *              absolute form already rewritten to it
 *   headers    n_headers offsets into head, in arrival order; never trailers */
#define PT_HTTP_PARSER_FIELDS                                                                      \
    llhttp_t parser;                                                                               \
    pt_buf_t head;                                                                                 \
    uint32_t url_len;                                                                              \
    pt_http_header_t *headers;                                                                     \
    size_t n_headers;

struct pt_http_parser_s {
    PT_HTTP_PARSER_FIELDS
    /* set by the owner (pt_http_parser_init); max_header_bytes may change
     * between requests (a reload) */
    const pt_http_parser_ops_t *ops;
    void *ud;
    uint64_t max_header_bytes;
    /* when execute returned PT_HTTP_PARSER_ERROR: the status to answer and a
     * fixed text saying why (never the bytes that came) */
    int error_status;
    const char *error_msg;
    /* from on_head on: the connection must close after this request
     * (HTTP/1.0 with Transfer-Encoding, RFC 9112 §6.1) */
    int close_after;
    /* from on_head on: the index in headers of the first Expect and the
     * first X-Correlation-Id field, -1 when there is none (found while the
     * head is checked, so the owner need not look again) */
    int h_expect, h_cid;
    /* private */
    size_t cap_headers;
    uint32_t authority_off, authority_len; /* absolute form: the authority in head */
    uint32_t trailer_name_len;
    uint32_t target_len; /* the target's bytes on the wire (before a rewrite) */
    unsigned n_trailers;
    uint64_t meta; /* bytes of head and trailers seen on the wire */
    uint64_t ext;  /* chunk-size line bytes past the first few */
    uint64_t chunk_line;
    int mode;     /* what the next unparsed bytes are (pt_http_parser.c) */
    int event;    /* why a callback paused llhttp */
    int in_field; /* a header name is being read */
    int has_version;
    int line_start;   /* the scan is at the start of a line */
    int after_cr;     /* the last byte of a chunk-size line scanned was CR */
    char last;        /* the last byte of the head or the trailers scanned */
    int crlf_seen;    /* bytes after a chunk's data */
    unsigned lines;   /* lines of the head ended so far */
    const char *scan; /* bytes before this in the buffer being parsed are checked */
    char version[4];
    unsigned version_len;
    char line_tail[10]; /* the request line's last bytes when it spans reads */
    unsigned line_tail_len;
};

/* Results of pt_http_parser_execute. */
enum {
    PT_HTTP_PARSER_MORE = 0,   /* every byte was used; more are needed */
    PT_HTTP_PARSER_HELD = 1,   /* on_head said hold: *used bytes were used */
    PT_HTTP_PARSER_DONE = 2,   /* a request ended (on_done ran): *used bytes were its
                                  own; the rest belong to the next request */
    PT_HTTP_PARSER_ERROR = -1, /* refused: error_status, error_msg; the
                                  connection cannot go on */
};

/* Sets p up to parse requests with ops; ud is the owner's. */
void pt_http_parser_init(pt_http_parser_t *p, const pt_http_parser_ops_t *ops, void *ud,
                         uint64_t max_header_bytes);

/* Frees what p holds (not p). */
void pt_http_parser_free(pt_http_parser_t *p);

/* Parses data[0..len): calls the ops as the request comes, stops after a
 * whole request (DONE) or a hold (HELD). *used says how many bytes were
 * parsed (all of them for MORE). After DONE or HELD, call
 * pt_http_parser_resume before the next execute. len may be 0 (a held
 * request without a body ends then). After a request with Upgrade the parser
 * takes no more bytes: execute returns ERROR (the connection belongs to
 * whoever took the upgrade). */
int pt_http_parser_execute(pt_http_parser_t *p, const char *data, size_t len, size_t *used);

/* Lets a parser stopped by DONE or HELD go on. */
void pt_http_parser_resume(pt_http_parser_t *p);

/* The value of the first request header called name (any case), its length
 * in *len; NULL when there is none. Valid until the next request begins. */
const char *pt_http_parser_header(const pt_http_parser_t *p, const char *name, size_t *len);

/* 1 when h is called name (any case); name_len is strlen(name). Inline:
 * callers run it over every header. */
static inline int pt_http_parser_header_is(const pt_http_parser_t *p, const pt_http_header_t *h,
                                           const char *name, size_t name_len)
{
    return h->name_len == name_len && strncasecmp(p->head.data + h->name_off, name, name_len) == 0;
}

#endif
