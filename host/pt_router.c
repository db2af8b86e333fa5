#include "pt_router.h"
#include "pt_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PT__MAX_SEGMENTS PT_ROUTE_MAX_SEGMENTS

typedef struct {
    char *text; /* literal text, or the capture's name */
    size_t len;
    int capture;
} pt__seg_t;

typedef struct {
    const pt_channel_t *channel;
    pt__seg_t segs[PT__MAX_SEGMENTS];
    int n_segs;
    int service_seg; /* gateway: index of {service} */
    size_t order;    /* the channel's place in the config */
} pt__route_t;

struct pt_router_s {
    pt__route_t *routes;
    size_t n_routes;
    int has_proxy;
};

static int pt__prefixed(const pt__route_t *rt)
{
    return rt->channel->type == PT_CHANNEL_HTTP_PROXY || rt->channel->type == PT_CHANNEL_AMQP_BUS;
}

/* Non-zero when a decoded segment is "." or "..", or holds one between
 * encoded slashes or backslashes ("a%2F..%2Fb", "..%5C"): a proxied rest is
 * passed on raw, and a target that decodes before it normalizes would climb
 * out of where the prefix put it. */
static int pt__has_dot_segment(const char *s, size_t n)
{
    for (size_t i = 0; i <= n;) {
        size_t j = i;
        while (j < n && s[j] != '/' && s[j] != '\\')
            j++;
        size_t len = j - i;
        if ((len == 1 && s[i] == '.') || (len == 2 && s[i] == '.' && s[i + 1] == '.')) return 1;
        i = j + 1;
    }
    return 0;
}

static int pt__compile(pt__route_t *rt, const pt_channel_t *ch, char *err, size_t errlen)
{
    const char *p = ch->url_path + 1;
    rt->channel = ch;
    rt->service_seg = -1;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (rt->n_segs == PT__MAX_SEGMENTS) {
            snprintf(err, errlen, "channel '%s': url_path has too many segments", ch->name);
            return -1;
        }
        pt__seg_t *s = &rt->segs[rt->n_segs];
        if (len >= 2 && p[0] == '{' && p[len - 1] == '}') {
            s->capture = 1;
            s->text = strndup(p + 1, len - 2);
            s->len = len - 2;
            if (strcmp(s->text, "service") == 0) rt->service_seg = rt->n_segs;
        } else {
            s->text = strndup(p, len);
            s->len = len;
        }
        rt->n_segs++;
        if (!slash) break;
        p = slash + 1;
    }
    if (rt->n_segs == 1 && rt->segs[0].len == 0) rt->n_segs = 0; /* prefix "/" */
    if (ch->type == PT_CHANNEL_GATEWAY && rt->service_seg < 0) {
        snprintf(err, errlen, "channel '%s': a gateway url_path needs a {service} segment",
                 ch->name);
        return -1;
    }
    return 0;
}

/* The order routes are tried in, so that no request is answered by whichever
 * channel the config happens to list first: templates before prefixes; of
 * two templates, the one with a literal where the other captures (left to
 * right: /a/new before /a/{id}). The config refuses two channels that
 * still tie, and prefixes that hold one another (pt__routes_clash in
 * pt_config.c); the longer prefix first all the same. */
static int pt__route_cmp(const void *pa, const void *pb)
{
    const pt__route_t *a = pa, *b = pb;
    int xa = pt__prefixed(a), xb = pt__prefixed(b);
    if (xa != xb) return xa - xb;
    if (xa && a->n_segs != b->n_segs) return b->n_segs - a->n_segs;
    for (int i = 0; !xa && i < a->n_segs && i < b->n_segs; i++)
        if (a->segs[i].capture != b->segs[i].capture)
            return a->segs[i].capture - b->segs[i].capture;
    return a->order < b->order ? -1 : a->order > b->order;
}

int pt_router_new(const pt_config_t *cfg, pt_router_t **out, char *err, size_t errlen)
{
    pt_router_t *r = calloc(1, sizeof *r);
    if (!r || !(r->routes = calloc(cfg->n_channels ? cfg->n_channels : 1, sizeof *r->routes))) {
        free(r);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < cfg->n_channels; i++) {
        r->n_routes++;
        r->has_proxy |= cfg->channels[i].type == PT_CHANNEL_HTTP_PROXY;
        r->routes[i].order = i;
        if (pt__compile(&r->routes[i], &cfg->channels[i], err, errlen) != 0) {
            pt_router_free(r);
            return -1;
        }
    }
    if (r->n_routes > 1) qsort(r->routes, r->n_routes, sizeof *r->routes, pt__route_cmp);
    *out = r;
    return 0;
}

void pt_router_free(pt_router_t *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_routes; i++)
        for (int j = 0; j < r->routes[i].n_segs; j++)
            free(r->routes[i].segs[j].text);
    free(r->routes);
    free(r);
}

int pt_router_may_proxy(const pt_router_t *r, const char *path, size_t len)
{
    if (!r->has_proxy) return 0;
    if (memchr(path, '%', len)) return 1;
    for (size_t i = 0; i < r->n_routes; i++) {
        const pt_channel_t *ch = r->routes[i].channel;
        if (ch->type != PT_CHANNEL_HTTP_PROXY) continue;
        size_t n = strlen(ch->url_path);
        if (n == 1) return 1; /* the prefix "/" */
        if (len > n && path[n] == '/' && memcmp(path, ch->url_path, n) == 0) return 1;
    }
    return 0;
}

int pt_router_match(const pt_router_t *r, int method, const char *path, size_t path_len,
                    const char *query, size_t query_len, char *buf, pt_route_match_t *m)
{
    struct {
        const char *p;
        size_t len;
        const char *raw; /* where the segment starts in path */
    } segs[PT__MAX_SEGMENTS];
    int n_segs = 0;
    size_t o = 0;

    memset(m, 0, offsetof(pt_route_match_t, name_buf));
    if (path_len == 0 || path[0] != '/') {
        m->error = "the request target must be an absolute path";
        return 400;
    }
    const char *p = path + 1, *end = path + path_len;
    for (;;) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *stop = slash ? slash : end;
        if (n_segs == PT__MAX_SEGMENTS) return 404;
        long n = pt_percent_decode(p, (size_t)(stop - p), buf + o, 0);
        if (n < 0) {
            m->error = "malformed percent-encoding in the path";
            return 400;
        }
        for (long i = 0; i < n; i++) {
            unsigned char c = (unsigned char)buf[o + i];
            if (c < 0x20 || c == 0x7f) {
                m->error = "control characters in the path";
                return 400;
            }
        }
        if (pt__has_dot_segment(buf + o, (size_t)n)) {
            m->error = "dot segments in the path";
            return 400;
        }
        segs[n_segs].p = buf + o;
        segs[n_segs].len = (size_t)n;
        segs[n_segs].raw = p;
        n_segs++;
        o += (size_t)n;
        if (!slash) break;
        p = slash + 1;
    }

    const pt__route_t *hit = NULL;
    for (size_t i = 0; !hit && i < r->n_routes; i++) {
        const pt__route_t *rt = &r->routes[i];
        if (pt__prefixed(rt) || rt->n_segs != n_segs) continue;
        int ok = 1;
        for (int s = 0; ok && s < n_segs; s++) {
            if (rt->segs[s].capture)
                ok = segs[s].len > 0;
            else
                ok = rt->segs[s].len == segs[s].len &&
                     memcmp(rt->segs[s].text, segs[s].p, segs[s].len) == 0;
        }
        if (!ok) continue;
        if (rt->channel->methods & (1ull << method)) {
            hit = rt;
            break;
        }
        if (!m->allow) m->channel = rt->channel; /* a 405 names its channel */
        m->allow |= rt->channel->methods;
    }
    /* prefix channels: the prefix, then the service, then anything */
    for (size_t i = 0; !hit && !m->allow && i < r->n_routes; i++) {
        const pt__route_t *rt = &r->routes[i];
        if (!pt__prefixed(rt) || n_segs <= rt->n_segs) continue;
        int ok = 1;
        for (int s = 0; ok && s < rt->n_segs; s++)
            ok = rt->segs[s].len == segs[s].len &&
                 memcmp(rt->segs[s].text, segs[s].p, segs[s].len) == 0;
        if (!ok) continue;
        if (!(rt->channel->methods & (1ull << method))) {
            if (!m->allow) m->channel = rt->channel;
            m->allow |= rt->channel->methods;
            continue;
        }
        size_t k = (size_t)rt->n_segs;
        if (!pt_route_valid_service_name(segs[k].p, segs[k].len)) {
            m->error = "malformed service name";
            return 400;
        }
        memcpy(m->name_buf, segs[k].p, segs[k].len);
        m->name_buf[segs[k].len] = '\0';
        m->channel = rt->channel;
        m->service = m->name_buf;
        m->rest = k + 1 < (size_t)n_segs ? segs[k + 1].raw - 1 : path + path_len;
        m->rest_len = (size_t)(path + path_len - m->rest);
        if (rt->channel->type == PT_CHANNEL_HTTP_PROXY) {
            for (size_t u = 0; u < rt->channel->n_upstreams; u++)
                if (strcmp(rt->channel->upstreams[u].name, m->name_buf) == 0)
                    m->upstream = &rt->channel->upstreams[u];
            m->listed = m->upstream != NULL;
        } else {
            m->listed = rt->channel->n_service_list == 0;
            for (size_t u = 0; u < rt->channel->n_service_list; u++)
                if (strcmp(rt->channel->service_list[u], m->name_buf) == 0) m->listed = 1;
        }
        return 0;
    }
    if (!hit) return m->allow ? 405 : 404;

    m->channel = hit->channel;
    for (int s = 0; s < n_segs && m->n_params < PT_ROUTE_MAX_PARAMS; s++) {
        if (!hit->segs[s].capture) continue;
        pt_route_param_t *prm = &m->params[m->n_params++];
        prm->name = hit->segs[s].text;
        prm->value = segs[s].p;
        prm->value_len = segs[s].len;
    }
    if (hit->channel->type != PT_CHANNEL_GATEWAY) {
        m->service = hit->channel->service;
        m->listed = 1;
        return 0;
    }

    /* Gateway: the name comes from {service}, or from ?service= on /invoke. */
    const char *name = segs[hit->service_seg].p;
    size_t name_len = segs[hit->service_seg].len;
    if (name_len == 6 && memcmp(name, "invoke", 6) == 0) {
        long n = pt_query_param(query, query_len, "service", m->name_buf, sizeof m->name_buf);
        if (n == -1) {
            m->error = "/invoke needs ?service=NAME";
            return 400;
        }
        if (n == -3) {
            m->error = "?service= is given more than once";
            return 400;
        }
        if (n < 0 || memchr(m->name_buf, '\0', (size_t)n)) {
            m->error = "malformed service name";
            return 400;
        }
        name_len = (size_t)n;
    } else {
        if (name_len > PT_SERVICE_NAME_MAX) {
            m->error = "malformed service name";
            return 400;
        }
        memcpy(m->name_buf, name, name_len);
        m->name_buf[name_len] = '\0';
    }
    if (!pt_route_valid_service_name(m->name_buf, name_len)) {
        m->error = "malformed service name";
        return 400;
    }
    m->service = m->name_buf;
    for (size_t i = 0; i < hit->channel->n_service_list; i++)
        if (strcmp(hit->channel->service_list[i], m->name_buf) == 0) m->listed = 1;
    return 0;
}
