/* pt_http_parser: the gate's rules on request syntax, with no socket. Each
 * case is parsed whole and one byte at a time; both must agree. */
#include "pt_http_parser.h"
#include "pt_field.h"
#include "pt_test.h"

#include <stdlib.h>
#include <string.h>

#define S(x) x, sizeof x - 1

typedef struct {
    int requests;
    char url[256];
    char host[256];
    char headers[1024]; /* "name=value;" of the last request */
    char body[1024];
    size_t body_len;
    int close_after;
} pt__seen_t;

static int pt__on_head(pt_http_parser_t *p)
{
    pt__seen_t *s = p->ud;
    size_t n = 0, len = 0;
    const char *host = pt_http_parser_header(p, "host", &len);
    snprintf(s->url, sizeof s->url, "%.*s", (int)p->url_len, p->head.data);
    snprintf(s->host, sizeof s->host, "%.*s", host ? (int)len : 0, host ? host : "");
    s->headers[0] = '\0';
    for (size_t i = 0; i < p->n_headers; i++) {
        const pt_http_header_t *h = &p->headers[i];
        n += (size_t)snprintf(s->headers + n, sizeof s->headers - n, "%.*s=%.*s;", (int)h->name_len,
                              p->head.data + h->name_off, (int)h->value_len,
                              p->head.data + h->value_off);
    }
    s->body_len = 0;
    s->close_after = p->close_after;
    return 0;
}

static int pt__on_body(pt_http_parser_t *p, const char *at, size_t len)
{
    pt__seen_t *s = p->ud;
    if (s->body_len + len >= sizeof s->body) return 413;
    memcpy(s->body + s->body_len, at, len);
    s->body_len += len;
    s->body[s->body_len] = '\0';
    return 0;
}

static void pt__on_done(pt_http_parser_t *p)
{
    pt__seen_t *s = p->ud;
    s->requests++;
}

static const pt_http_parser_ops_t pt__ops = {
    .on_head = pt__on_head, .on_body = pt__on_body, .on_done = pt__on_done};

/* Parses in reads of step bytes (0: whole); returns the refusal's status, or
 * 0 when every byte was taken. */
static int pt__parse_by(const char *in, size_t len, size_t step, pt__seen_t *s)
{
    pt_http_parser_t p;
    memset(&p, 0, sizeof p);
    memset(s, 0, sizeof *s);
    pt_http_parser_init(&p, &pt__ops, s, 1024);
    int status = 0;
    size_t off = 0;
    char buf[8192];
    size_t have = 0;
    while (off < len && !status) {
        size_t n = step && step < len - off ? step : len - off;
        memcpy(buf + have, in + off, n);
        have += n;
        off += n;
        size_t at = 0;
        for (;;) {
            size_t used;
            int rc = pt_http_parser_execute(&p, buf + at, have - at, &used);
            at += used;
            if (rc == PT_HTTP_PARSER_ERROR) {
                status = p.error_status;
                break;
            }
            if (rc == PT_HTTP_PARSER_MORE) break;
            pt_http_parser_resume(&p);
        }
        memmove(buf, buf + at, have - at);
        have -= at;
    }
    pt_http_parser_free(&p);
    return status;
}

/* Both ways; returns the status when they agree, -1 when not. */
static int pt__parse(const char *in, size_t len, pt__seen_t *s)
{
    pt__seen_t one;
    int a = pt__parse_by(in, len, 1, &one);
    int b = pt__parse_by(in, len, 0, s);
    if (a != b || one.requests != s->requests) return -1;
    return a;
}

#define REFUSED(want, raw) PT_CHECK_INT(pt__parse(S(raw), &seen), want)

static int pt__llhttp_takes(const char *s, size_t n)
{
    llhttp_settings_t st;
    llhttp_t lp;
    llhttp_settings_init(&st);
    llhttp_init(&lp, HTTP_REQUEST, &st);
    return llhttp_execute(&lp, s, n) == HPE_OK;
}

/* The gate leaves two checks to llhttp 8.1 (pt_http_parser.c says where):
 * a field value with a byte pt_field_value refuses, and a field name with a
 * byte that is neither a tchar nor SP. Every byte, after the starts of the
 * names and values llhttp parses in states of their own, in the head and in
 * the trailers: what llhttp takes must be what the gate would have. */
static int pt__differential(void)
{
    static const char *names[] = {"X-A",
                                  "Connection",
                                  "Content-Length",
                                  "Transfer-Encoding",
                                  "Upgrade",
                                  "Proxy-Connection",
                                  "Keep-Alive",
                                  "Host",
                                  "Con",
                                  "Transfer-",
                                  "Content-Lengt",
                                  "T",
                                  "C",
                                  NULL};
    static const char *values[] = {"",         "close",    "keep-alive", "upgrade", "chunked",
                                   "gzip, ",   "1",        " ",          "close, ", "chunke",
                                   "a, close", "chunked ", NULL};
    static const char *heads[] = {
        "GET / HTTP/1.1\r\nHost: t\r\n",
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", NULL};
    char buf[512], f[64];
    int bad = 0;
    for (int k = 0; heads[k]; k++)
        for (int i = 0; names[i]; i++)
            for (int j = 0; values[j]; j++)
                for (int b = 0; b < 256; b++) {
                    if (b == '\r' || b == '\n' || b == ':') continue; /* pt__scan_lines' */
                    /* the byte in the value, then in the name */
                    int fl = snprintf(f, sizeof f, "%s%cx", values[j], b);
                    int n = snprintf(buf, sizeof buf, "%s%s: ", heads[k], names[i]);
                    memcpy(buf + n, f, (size_t)fl);
                    memcpy(buf + n + fl, "\r\n\r\n", 4);
                    if (pt__llhttp_takes(buf, (size_t)(n + fl + 4)) &&
                        !pt_field_value(f, (size_t)fl))
                        bad++;
                    fl = snprintf(f, sizeof f, "%s%cx", names[i], b);
                    n = snprintf(buf, sizeof buf, "%s", heads[k]);
                    memcpy(buf + n, f, (size_t)fl);
                    n += fl;
                    n += snprintf(buf + n, sizeof buf - (size_t)n, ": %s\r\n\r\n", values[j]);
                    if (pt__llhttp_takes(buf, (size_t)n) && b != ' ' &&
                        !pt_field_token(f, (size_t)fl))
                        bad++;
                }
    return bad;
}

PT_CASE(well_formed_pipelined_chunked)
{
    pt__seen_t seen;
    /* well formed, pipelined, chunked with extensions and trailers */
    PT_CHECK_INT(pt__parse(S("GET /a?b HTTP/1.1\r\nHost: t\r\nX-A:  v \t\r\n\r\n"
                             "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "2;x=y\r\n{}\r\n0\r\nX-Portico-Username: admin\r\n\r\n"),
                           &seen),
                 0);
    PT_CHECK_INT(seen.requests, 2);
    PT_CHECK_STR(seen.url, "/c");
    PT_CHECK_STR(seen.body, "{}");
    /* trailers never become headers */
    PT_CHECK_STR(seen.headers, "Host=t;Transfer-Encoding=chunked;");
    PT_CHECK_INT(pt__parse(S("GET / HTTP/1.1\r\nHost: t\r\nX-A:  v \t\r\n\r\n"), &seen), 0);
    PT_CHECK_STR(seen.headers, "Host=t;X-A=v;");
}

PT_CASE(absolute_form)
{
    pt__seen_t seen;
    /* absolute form: routed by the path, the authority is Host */
    PT_CHECK_INT(
        pt__parse(S("GET http://example.com:81/api/echo?x=1 HTTP/1.1\r\nHost: o\r\n\r\n"), &seen),
        0);
    PT_CHECK_STR(seen.url, "/api/echo?x=1");
    PT_CHECK_STR(seen.host, "example.com:81");
    PT_CHECK_INT(pt__parse(S("GET HTTP://h?q HTTP/1.0\r\n\r\n"), &seen), 0);
    PT_CHECK_STR(seen.url, "/?q");
    PT_CHECK_STR(seen.host, "h");
    REFUSED(400, "GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n");
    REFUSED(400, "GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n");
}

PT_CASE(field_syntax)
{
    pt__seen_t seen;
    /* field syntax */
    REFUSED(400, "GET / HTTP/1.1\r\nHost : evil\r\n\r\n");
    REFUSED(400, "GET / HTTP/1.1\r\nHost: t\r\n: v\r\n\r\n");
    REFUSED(400, "GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n");
    REFUSED(400, "GET / HTTP/1.1\nHost: t\r\n\r\n");
    REFUSED(400, "GET / HTTP/1.1\r\nHost: t\r\n\n");
}

PT_CASE(host_rules)
{
    pt__seen_t seen;
    /* Host */
    REFUSED(400, "GET / HTTP/1.1\r\n\r\n");
    REFUSED(400, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    REFUSED(400, "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n");
    PT_CHECK_INT(pt__parse(S("GET / HTTP/1.0\r\n\r\n"), &seen), 0);
}

PT_CASE(request_line_target_methods_and_limits)
{
    pt__seen_t seen;
    /* the request line: exactly method SP target SP HTTP/d.d, whole or a byte a read */
    REFUSED(400, "GET  / HTTP/1.1\r\nHost: t\r\n\r\n");
    REFUSED(400, "GET /  HTTP/1.1\r\nHost: t\r\n\r\n");
    REFUSED(400, "GET / RTSP/1.0\r\n\r\n");
    REFUSED(400, "SOURCE / ICE/1.0\r\n\r\n");
    REFUSED(400, "GET / HTTP/1.1 \r\nHost: t\r\n\r\n");
    PT_CHECK_INT(pt__parse(S("OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n"), &seen), 0);
    /* the target */
    REFUSED(400, "GET /a#b HTTP/1.1\r\nHost: t\r\n\r\n");
    REFUSED(400, "GET /a\tb HTTP/1.1\r\nHost: t\r\n\r\n");
    REFUSED(400, "GET /a?\x80 HTTP/1.1\r\nHost: t\r\n\r\n");
    REFUSED(400, "GET /abcdefghijklmn\xff HTTP/1.1\r\nHost: t\r\n\r\n");
    PT_CHECK_INT(pt__parse(S("GET /a?b={|}^ HTTP/1.1\r\nHost: t\r\n\r\n"), &seen), 0);
    /* methods */
    REFUSED(501, "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n");
    REFUSED(501, "FOO / HTTP/1.1\r\nHost: t\r\n\r\n");
    REFUSED(501, "get / HTTP/1.1\r\nHost: t\r\n\r\n");
    REFUSED(400, "GARBAGE\r\n\r\n");
    {
        /* 100 fields pass, 101 are 431; a target past the limit is 414 */
        static char many[2048];
        int n = snprintf(many, sizeof many, "GET / HTTP/1.1\r\nHost: t\r\n");
        for (int i = 0; i < 99; i++)
            n += snprintf(many + n, sizeof many - (size_t)n, "a:\r\n");
        PT_CHECK_INT(pt__parse(many, (size_t)n + (size_t)snprintf(many + n, 3, "\r\n"), &seen), 0);
        n += snprintf(many + n, sizeof many - (size_t)n, "a:\r\n\r\n");
        PT_CHECK_INT(pt__parse(many, (size_t)n, &seen), 431);
        n = snprintf(many, sizeof many, "GET /");
        memset(many + n, 'a', 1100);
        n += 1100;
        n += snprintf(many + n, sizeof many - (size_t)n, " HTTP/1.1\r\nHost: t\r\n\r\n");
        PT_CHECK_INT(pt__parse(many, (size_t)n, &seen), 414);
    }
    {
        /* a SP anywhere in a name of 1 to 24 bytes (the word-a-step check's edges) */
        static char raw[256];
        for (int n = 1; n <= 24; n++)
            for (int at = 0; at <= n; at++) {
                int k = snprintf(raw, sizeof raw, "GET / HTTP/1.1\r\nHost: t\r\n");
                for (int i = 0; i < n; i++)
                    raw[k++] = i == at ? ' ' : 'a';
                k += snprintf(raw + k, sizeof raw - (size_t)k, ": v\r\n\r\n");
                PT_CHECK_INT(pt__parse(raw, (size_t)k, &seen), at < n ? 400 : 0);
            }
    }
    /* the names the head's rules look for, in any case */
    REFUSED(400, "POST / HTTP/1.1\r\nHost: t\r\nTRANSFER-ENCODING: chunked\r\n"
                 "content-LENGTH: 2\r\n\r\n");
    REFUSED(400, "GET / HTTP/1.1\r\nhOST: a\r\nHost: b\r\n\r\n");
    REFUSED(501, "POST / HTTP/1.1\r\nHost: t\r\nTransfer-encoding: chunked\r\n"
                 "TRANSFER-ENCODING: chunked\r\n\r\n");
}

PT_CASE(left_to_llhttp_is_refused_by_it)
{
    /* what the gate leaves to llhttp 8.1, llhttp refuses */
    PT_CHECK_INT(pt__differential(), 0);
}

PT_CASE(version_and_framing)
{
    pt__seen_t seen;
    /* the request line and framing */
    REFUSED(400, "GET /\r\n");
    REFUSED(505, "GET / HTTP/2.0\r\nHost: t\r\n\r\n");
    REFUSED(505, "GET / HTTP/1.2\r\nHost: t\r\n\r\n");
    REFUSED(501, "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
    REFUSED(501, "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\n");
    REFUSED(400, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1, 2\r\n\r\nab");
}

PT_CASE(chunks_and_trailers)
{
    pt__seen_t seen;
    /* chunks */
    REFUSED(400,
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XY0\r\n\r\n");
    REFUSED(400,
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\n");
    REFUSED(400,
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX : 1\r\n\r\n");
    {
        /* 2 KB of extension with max_header_bytes 1 KB */
        static char big[4096];
        int n = snprintf(big, sizeof big,
                         "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1;x=");
        memset(big + n, 'a', 2048);
        memcpy(big + n + 2048, "\r\na\r\n0\r\n\r\n", 11);
        PT_CHECK_INT(pt__parse(big, (size_t)n + 2048 + 10, &seen), 413);
        /* trailers count with the head */
        n = snprintf(big, sizeof big,
                     "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX:");
        memset(big + n, ' ', 2048);
        memcpy(big + n + 2048, "1\r\n\r\n", 5);
        PT_CHECK_INT(pt__parse(big, (size_t)n + 2048 + 5, &seen), 431);
    }
    /* HTTP/1.0 with chunked: served, then the connection must close */
    PT_CHECK_INT(
        pt__parse(S("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"),
                  &seen),
        0);
    PT_CHECK_STR(seen.body, "a");
    PT_CHECK_INT(seen.close_after, 1);
}

int main(void)
{
    PT_RUN(well_formed_pipelined_chunked);
    PT_RUN(absolute_form);
    PT_RUN(field_syntax);
    PT_RUN(host_rules);
    PT_RUN(request_line_target_methods_and_limits);
    PT_RUN(left_to_llhttp_is_refused_by_it);
    PT_RUN(version_and_framing);
    PT_RUN(chunks_and_trailers);
    return PT_TEST_DONE();
}
