#include "pt_config_cluster.h"
#include "pt_util.h"

#include <openssl/evp.h>
#include <sodium.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int pt_config_cluster_url(const char *url, pt_cluster_cfg_t *out, int *tls, char *err,
                          size_t errlen)
{
    const char *p;
    if (!strncmp(url, "redis://", 8)) {
        *tls = 0;
        p = url + 8;
    } else if (!strncmp(url, "rediss://", 9)) {
        *tls = 1;
        p = url + 9;
    } else {
        snprintf(err, errlen, "expected redis://host:port/db or rediss://host:port/db");
        return -1;
    }
    const char *at = strchr(p, '@'), *slash = strchr(p, '/');
    if (at && (!slash || at < slash)) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            snprintf(err, errlen,
                     "no password in the URL (it would be in every copy of the file): "
                     "name an environment variable in password_env");
            return -1;
        }
        if (at == p || at - p > 64) {
            snprintf(err, errlen, "expected a user name before '@'");
            return -1;
        }
        if (!(out->user = strndup(p, (size_t)(at - p)))) goto oom;
        p = at + 1;
    }
    const char *host = p, *host_end, *q;
    if (*p == '[') {
        host = p + 1;
        if (!(host_end = strchr(host, ']'))) {
            snprintf(err, errlen, "unclosed '[' in the host");
            return -1;
        }
        q = host_end + 1;
    } else {
        host_end = p + strcspn(p, ":/");
        q = host_end;
    }
    if (!pt_host_name_ok(host, (size_t)(host_end - host))) {
        snprintf(err, errlen, "expected a host name or IP address after //");
        return -1;
    }
    out->port = 6379;
    if (*q == ':') {
        char *end;
        long port = strtol(q + 1, &end, 10);
        if (end == q + 1 || port < 1 || port > 65535 || (*end && *end != '/')) {
            snprintf(err, errlen, "expected a port from 1 to 65535 after the host");
            return -1;
        }
        out->port = (int)port;
        q = end;
    }
    out->db = 0;
    if (*q == '/' && q[1]) {
        char *end;
        long db = strtol(q + 1, &end, 10);
        if (end == q + 1 || *end || db < 0 || db > 1000000) {
            snprintf(err, errlen, "expected a database number after the host: /0, /1 ...");
            return -1;
        }
        out->db = (int)db;
    } else if (*q && strcmp(q, "/") != 0) {
        snprintf(err, errlen, "expected redis://host:port/db");
        return -1;
    }
    if (!(out->host = strndup(host, (size_t)(host_end - host)))) goto oom;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

static int pt__prefix_ok(const char *s)
{
    size_t n = strlen(s);
    if (n > PT_CLUSTER_PREFIX_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f) return 0;
    return 1;
}

/* A node name: host-name bytes (it is a Redis key part and a label) */
static int pt__node_ok(const char *s)
{
    size_t n = strlen(s);
    return n <= PT_CLUSTER_NODE_MAX && pt_host_name_ok(s, n);
}

static int pt__duration(const pt_yaml_t *y, yaml_node_t *n, const char *what, uint64_t lo,
                        uint64_t hi, uint64_t *out)
{
    const char *s = pt_yaml_value(n);
    if (!s || pt_parse_duration_ms(s, out) != 0 || *out < lo || *out > hi)
        return pt_yaml_fail(y, n, "%s: expected a duration from %llums to %llus, such as \"1s\"",
                            what, (unsigned long long)lo, (unsigned long long)(hi / 1000));
    return 0;
}

int pt_config_cluster_parse(const pt_yaml_t *y, yaml_node_t *n, int listen_port,
                            pt_cluster_cfg_t *out)
{
    static const char *const keys[] = {"node",    "redis",      "password_env", "tls",
                                       "timeout", "key_prefix", "heartbeat",    NULL};
    char err[256];
    yaml_node_t *v;
    out->line = (int)n->start_mark.line + 1;
    if (n->type != YAML_MAPPING_NODE && !pt_yaml_is_null(n))
        return pt_yaml_fail(y, n, "cluster: expected a mapping {node, redis, password_env, ...}");
    if (!pt_yaml_is_null(n) && pt_yaml_check_keys(y, n, "cluster", keys) != 0) return -1;
    out->on = true;
    out->timeout_ms = 1000;
    out->heartbeat_ms = 2000;
    const char *url = "redis://127.0.0.1:6379/0";
    yaml_node_t *url_n = pt_yaml_is_null(n) ? NULL : pt_yaml_get(y, n, "redis");
    if (url_n && !(url = pt_yaml_value(url_n)))
        return pt_yaml_fail(y, url_n, "cluster.redis: expected redis://host:port/db");
    int tls = 0;
    if (pt_config_cluster_url(url, out, &tls, err, sizeof err) != 0)
        return pt_yaml_fail(y, url_n ? url_n : n, "cluster.redis: %s", err);
    if (!(out->redis = strdup(url))) return pt_yaml_fail(y, n, "out of memory");
    if (pt_yaml_is_null(n)) goto defaults;

    if ((v = pt_yaml_get(y, n, "node")) && pt_yaml_value(v)) {
        if (pt_yaml_string(y, v, "cluster.node", &out->node) != 0) return -1;
        if (!pt__node_ok(out->node))
            return pt_yaml_fail(
                y, v, "cluster.node: expected 1 to %d of A-Z a-z 0-9 . _ - :", PT_CLUSTER_NODE_MAX);
    }
    if ((v = pt_yaml_get(y, n, "password_env")) && pt_yaml_value(v)) {
        if (pt_yaml_string(y, v, "cluster.password_env", &out->password_env) != 0) return -1;
        const char *pw = getenv(out->password_env);
        if (!pw || !*pw)
            return pt_yaml_fail(y, v,
                                "cluster.password_env: the environment variable %s is not set",
                                out->password_env);
        if (!(out->password = strdup(pw))) return pt_yaml_fail(y, v, "out of memory");
    }
    v = pt_yaml_get(y, n, "tls");
    if (v && !tls) return pt_yaml_fail(y, v, "cluster.tls: TLS options need a rediss:// URL");
    if (tls && pt_config_upstream_tls(y, v, url_n ? url_n : n, "cluster", &out->tls) != 0)
        return -1;
    if ((v = pt_yaml_get(y, n, "timeout")) &&
        pt__duration(y, v, "cluster.timeout", 1, 60000, &out->timeout_ms) != 0)
        return -1;
    if ((v = pt_yaml_get(y, n, "heartbeat")) &&
        pt__duration(y, v, "cluster.heartbeat", 100, 3600000, &out->heartbeat_ms) != 0)
        return -1;
    if ((v = pt_yaml_get(y, n, "key_prefix"))) {
        const char *s = pt_yaml_scalar(v);
        if (!s || !pt__prefix_ok(s))
            return pt_yaml_fail(y, v,
                                "cluster.key_prefix: expected up to %d printable characters, no "
                                "spaces",
                                PT_CLUSTER_PREFIX_MAX);
        if (!(out->key_prefix = strdup(s))) return pt_yaml_fail(y, v, "out of memory");
    }
defaults:
    if (tls && !out->tls &&
        pt_config_upstream_tls(y, NULL, url_n ? url_n : n, "cluster", &out->tls) != 0)
        return -1;
    if (!out->key_prefix && !(out->key_prefix = strdup("portico:")))
        return pt_yaml_fail(y, n, "out of memory");
    if (!out->node) {
        char host[256] = "localhost", name[300];
        if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
        host[sizeof host - 1] = '\0';
        snprintf(name, sizeof name, "%.*s:%d", PT_CLUSTER_NODE_MAX - 7, host, listen_port);
        for (char *c = name; *c; c++)
            if (!pt__node_ok((char[]){*c, 0})) *c = '_';
        if (!(out->node = strdup(name))) return pt_yaml_fail(y, n, "out of memory");
    }
    return 0;
}

void pt_config_cluster_free(pt_cluster_cfg_t *out)
{
    free(out->node);
    free(out->redis);
    free(out->host);
    free(out->user);
    free(out->password_env);
    if (out->password) {
        sodium_memzero(out->password, strlen(out->password));
        free(out->password);
    }
    pt_upstream_tls_free(out->tls);
    free(out->key_prefix);
    memset(out, 0, sizeof *out);
}

static int pt__streq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

int pt_config_cluster_same(const pt_cluster_cfg_t *a, const pt_cluster_cfg_t *b)
{
    if (a->on != b->on) return 0;
    if (!a->on) return 1;
    const pt_upstream_tls_t *ta = a->tls, *tb = b->tls;
    if (!ta != !tb) return 0;
    if (ta && (ta->verify != tb->verify || !pt__streq(ta->ca_file, tb->ca_file) ||
               !pt__streq(ta->server_name, tb->server_name) || !pt__streq(ta->cert, tb->cert) ||
               !pt__streq(ta->key, tb->key)))
        return 0;
    return pt__streq(a->node, b->node) && pt__streq(a->host, b->host) && a->port == b->port &&
           a->db == b->db && pt__streq(a->user, b->user) && pt__streq(a->password, b->password) &&
           a->timeout_ms == b->timeout_ms && pt__streq(a->key_prefix, b->key_prefix) &&
           a->heartbeat_ms == b->heartbeat_ms;
}

/* ---- the checksum ---- */

typedef struct {
    const char *key;
    size_t len;
    yaml_node_t *value;
} pt__pair_t;

static int pt__pair_cmp(const void *a, const void *b)
{
    const pt__pair_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Keys left out, as paths from the root. */
static int pt__skipped(const char *const *path, int depth, const char *key)
{
    static const char *const skip[][4] = {{"server", "listen"},
                                          {"server", "tls", "listen"},
                                          {"admin", "listen"},
                                          {"cluster", "node"}};
    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++) {
        int len = 0;
        while (len < 4 && skip[i][len])
            len++;
        if (len != depth + 1 || strcmp(skip[i][depth], key) != 0) continue;
        int k = 0;
        while (k < depth && !strcmp(skip[i][k], path[k]))
            k++;
        if (k == depth) return 1;
    }
    return 0;
}

/* Length-prefixed, so no two documents share a form. */
static int pt__canon(const pt_yaml_t *y, yaml_node_t *n, pt_buf_t *b, const char **path, int depth)
{
    if (!n) return pt_buf_puts(b, "~");
    if (n->type == YAML_SCALAR_NODE)
        return pt_buf_printf(b, "s%zu:", n->data.scalar.length) ||
               pt_buf_append(b, n->data.scalar.value, n->data.scalar.length);
    if (n->type == YAML_SEQUENCE_NODE) {
        if (pt_buf_printf(b, "[%zu", pt_yaml_len(n))) return -1;
        for (size_t i = 0; i < pt_yaml_len(n); i++)
            if (pt__canon(y, pt_yaml_item(y, n, i), b, path, depth + 4) != 0) return -1;
        return pt_buf_puts(b, "]");
    }
    if (n->type != YAML_MAPPING_NODE) return 0;
    size_t count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    pt__pair_t *pairs = calloc(count ? count : 1, sizeof *pairs);
    if (!pairs) return -1;
    size_t k = 0;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(y->doc, p->key);
        if (!kn || kn->type != YAML_SCALAR_NODE) continue;
        const char *key = (const char *)kn->data.scalar.value;
        if (depth < 3 && pt__skipped(path, depth, key)) continue;
        pairs[k++] =
            (pt__pair_t){key, kn->data.scalar.length, yaml_document_get_node(y->doc, p->value)};
    }
    qsort(pairs, k, sizeof *pairs, pt__pair_cmp);
    int rc = pt_buf_printf(b, "{%zu", k);
    for (size_t i = 0; rc == 0 && i < k; i++) {
        if (depth < 3) path[depth] = pairs[i].key;
        rc = pt_buf_printf(b, "k%zu:", pairs[i].len) ||
             pt_buf_append(b, pairs[i].key, pairs[i].len) ||
             pt__canon(y, pairs[i].value, b, path, depth + 1);
    }
    free(pairs);
    return rc || pt_buf_puts(b, "}");
}

int pt_config_checksum(const pt_yaml_t *y, yaml_node_t *root, char hex[65])
{
    pt_buf_t b = {0};
    const char *path[4] = {0};
    unsigned char md[32];
    unsigned int mdlen = 0;
    int rc = pt__canon(y, root, &b, path, 0);
    if (rc == 0 && EVP_Digest(b.data ? b.data : "", b.len, md, &mdlen, EVP_sha256(), NULL) != 1)
        rc = -1;
    pt_buf_free(&b);
    if (rc != 0) return -1;
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}
