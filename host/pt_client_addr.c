#include "pt_client_addr.h"

#include <string.h>

/* Copies [p, p+n) trimmed of blanks into out when it is an address of the
 * ranges' syntax (an IPv4 or IPv6 literal); returns 1, or 0 when it is not. */
static int pt__addr(const char *p, size_t n, char *out)
{
    while (n && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= PT_HTTP_CLIENT_MAX) return 0;
    static const pt_cidr_t any[2] = {{.family = 4, .prefix = 0}, {.family = 6, .prefix = 0}};
    if (!pt_cidr_match(any, 2, p, n)) return 0;
    memcpy(out, p, n);
    out[n] = '\0';
    return 1;
}

const char *pt_client_addr(const pt_config_obs_t *o, const char *peer, const pt_http_parser_t *req,
                           char *out, const char **xff, size_t *xff_len)
{
    size_t peer_len = strlen(peer);
    if (xff) *xff = NULL;
    if (xff_len) *xff_len = 0;
    memcpy(out, peer, peer_len < PT_HTTP_CLIENT_MAX ? peer_len + 1 : 1);
    if (peer_len >= PT_HTTP_CLIENT_MAX) out[0] = '\0';
    if (!o->n_trusted || !pt_cidr_match(o->trusted, o->n_trusted, peer, peer_len)) return out;
    /* the headers from the last to the first, each value from its right */
    for (size_t i = req->n_headers; i-- > 0;) {
        const pt_http_header_t *h = &req->headers[i];
        if (!pt_http_parser_header_is(req, h, "x-forwarded-for", 15)) continue;
        const char *v = req->head.data + h->value_off;
        size_t end = h->value_len;
        if (xff) *xff = v, *xff_len = h->value_len; /* ends as the first one */
        for (;;) {
            size_t start = end;
            while (start > 0 && v[start - 1] != ',')
                start--;
            char hop[PT_HTTP_CLIENT_MAX];
            if (!pt__addr(v + start, end - start, hop)) return out;
            memcpy(out, hop, strlen(hop) + 1);
            if (!pt_cidr_match(o->trusted, o->n_trusted, hop, strlen(hop))) {
                /* found: the rest of the walk would only fill *xff */
                for (size_t k = i; xff && k-- > 0;) {
                    const pt_http_header_t *e = &req->headers[k];
                    if (!pt_http_parser_header_is(req, e, "x-forwarded-for", 15)) continue;
                    *xff = req->head.data + e->value_off;
                    *xff_len = e->value_len;
                }
                return out;
            }
            if (start == 0) break;
            end = start - 1;
        }
    }
    return out;
}
