#include "pt_config_tracing.h"
#include "pt_config_upstream_tls.h"
#include "pt_field.h"
#include "pt_util.h"

#include <openssl/ssl.h>

#include <stdlib.h>
#include <string.h>

static char *pt__ndup(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    if (!o) return NULL;
    memcpy(o, s, n);
    o[n] = '\0';
    return o;
}

/* http[s]://host[:port]/path; *tls set for https. */
static int pt__endpoint(const pt_yaml_t *y, yaml_node_t *n, pt_trace_cfg_t *out, int *tls)
{
    const char *s = out->endpoint;
    *tls = strncmp(s, "https://", 8) == 0;
    if (!*tls && strncmp(s, "http://", 7) != 0)
        return pt_yaml_fail(y, n, "tracing.endpoint: must start with http:// or https://");
    const char *h = s + (*tls ? 8 : 7), *slash = strchr(h, '/'),
               *end = slash ? slash : h + strlen(h);
    const char *colon = NULL;
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb) return pt_yaml_fail(y, n, "tracing.endpoint: bad host");
        out->host = pt__ndup(h + 1, (size_t)(rb - h - 1));
        if (rb + 1 < end && rb[1] == ':')
            colon = rb + 1;
        else if (rb + 1 != end)
            return pt_yaml_fail(y, n, "tracing.endpoint: bad host");
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        out->host = pt__ndup(h, (size_t)((colon ? colon : end) - h));
    }
    if (!out->host || !out->host[0]) return pt_yaml_fail(y, n, "tracing.endpoint: no host");
    if (colon) {
        size_t pn = (size_t)(end - colon - 1);
        long port = 0;
        for (size_t i = 0; i < pn; i++) {
            if (colon[1 + i] < '0' || colon[1 + i] > '9' || pn > 5)
                return pt_yaml_fail(y, n, "tracing.endpoint: bad port");
            port = port * 10 + (colon[1 + i] - '0');
        }
        if (pn == 0 || port < 1 || port > 65535)
            return pt_yaml_fail(y, n, "tracing.endpoint: bad port");
        out->port = pt__ndup(colon + 1, pn);
    } else {
        out->port = strdup(*tls ? "443" : "80");
    }
    out->path = strdup(slash ? slash : "/v1/traces");
    if (!out->port || !out->path) return pt_yaml_fail(y, n, "out of memory");
    for (const char *p = out->path; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return pt_yaml_fail(y, n, "tracing.endpoint: bad path");
    return 0;
}

static int pt__count(const pt_yaml_t *y, yaml_node_t *n, const char *what, unsigned lo, unsigned hi,
                     unsigned *out)
{
    const char *s = pt_yaml_value(n);
    char *e;
    unsigned long v = s ? strtoul(s, &e, 10) : 0;
    if (!s || *s < '0' || *s > '9' || *e || v < lo || v > hi)
        return pt_yaml_fail(y, n, "%s: a whole number from %u to %u", what, lo, hi);
    *out = (unsigned)v;
    return 0;
}

static int pt__ms(const pt_yaml_t *y, yaml_node_t *n, const char *what, uint64_t *out)
{
    const char *s = pt_yaml_value(n);
    if (!s || pt_parse_duration_ms(s, out) != 0 || *out == 0 || *out > 60000)
        return pt_yaml_fail(y, n, "%s: a duration from 1ms to 60s", what);
    return 0;
}

static int pt__headers(const pt_yaml_t *y, yaml_node_t *n, pt_trace_cfg_t *out)
{
    pt_buf_t b = {0};
    pt_buf_puts(&b, "");
    if (n->type != YAML_MAPPING_NODE)
        return pt_yaml_fail(y, n, "tracing.headers: a mapping of names to values");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(y->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(y->doc, p->value);
        const char *ks = pt_yaml_value(k), *vs = pt_yaml_value(v);
        if (!ks || !vs || !pt_field_token(ks, strlen(ks)) || !pt_field_value(vs, strlen(vs))) {
            pt_buf_free(&b);
            return pt_yaml_fail(y, k, "tracing.headers: not a valid header name and value");
        }
        pt_buf_printf(&b, "%s: %s\r\n", ks, vs);
    }
    out->headers = b.data ? b.data : strdup("");
    return out->headers ? 0 : pt_yaml_fail(y, n, "out of memory");
}

int pt_config_tracing_parse(const pt_yaml_t *y, yaml_node_t *node, pt_trace_cfg_t *out)
{
    static const char *const keys[] = {
        "endpoint",     "ratio",   "batch_size", "queue_size", "timeout", "interval",
        "service_name", "headers", "enabled",    "tls",        NULL};
    memset(out, 0, sizeof *out);
    if (pt_yaml_is_null(node)) return 0;
    if (node->type != YAML_MAPPING_NODE) return pt_yaml_fail(y, node, "tracing: a mapping");
    if (pt_yaml_check_keys(y, node, "tracing", keys) != 0) return -1;
    out->enabled = 1;
    out->ratio = 1.0;
    out->batch_size = 512;
    out->queue_size = 8192;
    out->timeout_ms = 2000;
    out->interval_ms = 1000;
    yaml_node_t *v;
    if ((v = pt_yaml_get(y, node, "enabled")) &&
        pt_yaml_bool(y, v, "tracing.enabled", &out->enabled))
        return -1;
    if (!(v = pt_yaml_get(y, node, "endpoint")))
        return pt_yaml_fail(y, node, "tracing: endpoint is required");
    int https = 0;
    if (pt_yaml_string(y, v, "tracing.endpoint", &out->endpoint) || pt__endpoint(y, v, out, &https))
        return -1;
    /* https: the tls options of outgoing https (ca_file, verify,
     * server_name, cert, key), checked and built now */
    yaml_node_t *tv = pt_yaml_get(y, node, "tls");
    if (tv && !https) return pt_yaml_fail(y, tv, "tracing.tls: only with an https:// endpoint");
    if (https) {
        pt_upstream_tls_t *t = NULL;
        if (pt_config_upstream_tls(y, tv, tv ? tv : node, "tracing", &t) != 0) return -1;
        out->tls_ctx = t->ctx;
        SSL_CTX_up_ref(out->tls_ctx);
        out->tls_name = strdup(t->server_name ? t->server_name : out->host);
        pt_upstream_tls_free(t);
        if (!out->tls_name) return pt_yaml_fail(y, node, "out of memory");
    }
    if ((v = pt_yaml_get(y, node, "ratio"))) {
        const char *s = pt_yaml_value(v);
        char *e;
        double r = s ? strtod(s, &e) : -1;
        if (!s || *e || !(r >= 0.0 && r <= 1.0))
            return pt_yaml_fail(y, v, "tracing.ratio: a number from 0 to 1");
        out->ratio = r;
    }
    if ((v = pt_yaml_get(y, node, "batch_size")) &&
        pt__count(y, v, "tracing.batch_size", 1, 65536, &out->batch_size))
        return -1;
    if ((v = pt_yaml_get(y, node, "queue_size")) &&
        pt__count(y, v, "tracing.queue_size", 1, 1048576, &out->queue_size))
        return -1;
    if (out->batch_size > out->queue_size)
        return pt_yaml_fail(y, node, "tracing: batch_size is larger than queue_size");
    if ((v = pt_yaml_get(y, node, "timeout")) && pt__ms(y, v, "tracing.timeout", &out->timeout_ms))
        return -1;
    if ((v = pt_yaml_get(y, node, "interval")) &&
        pt__ms(y, v, "tracing.interval", &out->interval_ms))
        return -1;
    if ((v = pt_yaml_get(y, node, "service_name"))) {
        if (pt_yaml_string(y, v, "tracing.service_name", &out->service_name)) return -1;
        if (!out->service_name[0] || strlen(out->service_name) > 255)
            return pt_yaml_fail(y, v, "tracing.service_name: 1 to 255 characters");
    } else if (!(out->service_name = strdup("portico"))) {
        return pt_yaml_fail(y, node, "out of memory");
    }
    if ((v = pt_yaml_get(y, node, "headers")) && !pt_yaml_is_null(v) && pt__headers(y, v, out))
        return -1;
    return 0;
}
