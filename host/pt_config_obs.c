#include "pt_config_obs.h"
#include "pt_util.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int pt__strings(const pt_yaml_t *y, yaml_node_t *n, const char *what, char ***out,
                       size_t *count)
{
    if (n->type != YAML_SEQUENCE_NODE) return pt_yaml_fail(y, n, "%s: expected a list", what);
    size_t len = pt_yaml_len(n);
    *out = calloc(len ? len : 1, sizeof **out);
    if (!*out) return pt_yaml_fail(y, n, "%s: out of memory", what);
    for (size_t i = 0; i < len; i++) {
        yaml_node_t *it = pt_yaml_item(y, n, i);
        const char *s = pt_yaml_value(it);
        if (!s || !*s || strlen(s) > 128)
            return pt_yaml_fail(y, it, "%s: expected a name of 1 to 128 characters", what);
        if (!((*out)[i] = strdup(s))) return pt_yaml_fail(y, it, "%s: out of memory", what);
        *count = i + 1;
    }
    return 0;
}

static int pt__cidr(const char *s, pt_cidr_t *c)
{
    char buf[64];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (inet_pton(AF_INET, buf, c->addr) == 1)
        c->family = 4;
    else if (inet_pton(AF_INET6, buf, c->addr) == 1)
        c->family = 6;
    else
        return -1;
    int max = c->family == 4 ? 32 : 128;
    c->prefix = max;
    if (slash) {
        char *end;
        long p = strtol(slash + 1, &end, 10);
        if (!slash[1] || *end || p < 0 || p > max) return -1;
        c->prefix = (int)p;
    }
    return 0;
}

int pt_config_obs_trusted(const pt_yaml_t *y, yaml_node_t *n, pt_config_obs_t *o)
{
    if (!n || pt_yaml_is_null(n)) return 0;
    if (n->type != YAML_SEQUENCE_NODE)
        return pt_yaml_fail(y, n, "server.trusted_proxies: expected a list of CIDR ranges");
    size_t len = pt_yaml_len(n);
    o->trusted = calloc(len ? len : 1, sizeof *o->trusted);
    if (!o->trusted) return pt_yaml_fail(y, n, "server.trusted_proxies: out of memory");
    for (size_t i = 0; i < len; i++) {
        yaml_node_t *it = pt_yaml_item(y, n, i);
        const char *s = pt_yaml_value(it);
        if (!s || pt__cidr(s, &o->trusted[i]) != 0)
            return pt_yaml_fail(y, it,
                                "server.trusted_proxies: '%s' is not an address or CIDR range "
                                "(10.0.0.0/8, ::1/128)",
                                s ? s : "");
        o->n_trusted = i + 1;
    }
    return 0;
}

int pt_config_obs_redact_query(const pt_yaml_t *y, yaml_node_t *n, pt_config_obs_t *o)
{
    if (!n || pt_yaml_is_null(n)) return 0;
    return pt__strings(y, n, "log.redact_query", &o->redact_query, &o->n_redact_query);
}

/* "$.a.b" or "$..a" into p. Keys are names: letters, digits, _ - and not
 * empty. */
static int pt__json_path(const char *s, pt_json_path_t *p)
{
    if (strncmp(s, "$.", 2) != 0) return -1;
    s += 2;
    if (*s == '.') {
        p->deep = 1;
        s++;
    }
    size_t cap = 1;
    for (const char *q = s; *q; q++)
        cap += *q == '.';
    if (p->deep && cap != 1) return -1; /* $..a only: one key at any depth */
    p->keys = calloc(cap, sizeof *p->keys);
    if (!p->keys) return -1;
    while (*s) {
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        if (n == 0 || n > 128) return -1;
        for (size_t i = 0; i < n; i++) {
            char ch = s[i];
            if (ch == '[' || ch == ']' || ch == '*' || ch == '\'' || ch == '"') return -1;
        }
        if (!(p->keys[p->n] = strndup(s, n))) return -1;
        p->n++;
        s += n;
        if (*s == '.') {
            s++;
            if (!*s) return -1;
        }
    }
    return p->n ? 0 : -1;
}

int pt_config_obs_audit(const pt_yaml_t *y, yaml_node_t *n, pt_config_obs_t *o)
{
    o->audit_max_body = 4096;
    o->audit_max_queue = 1024 * 1024;
    if (!n || pt_yaml_is_null(n)) return 0;
    static const char *const keys[] = {"channels",  "file",        "amqp",           "max_body",
                                       "max_queue", "redact_json", "redact_headers", NULL};
    if (pt_yaml_check_keys(y, n, "audit", keys) != 0) return -1;
    yaml_node_t *v;
    if ((v = pt_yaml_get(y, n, "channels")) &&
        pt__strings(y, v, "audit.channels", &o->audit_channels, &o->n_audit_channels) != 0)
        return -1;
    if ((v = pt_yaml_get(y, n, "file"))) {
        const char *s = pt_yaml_value(v);
        if (!s) return pt_yaml_fail(y, v, "audit.file: expected a file path");
        if (!(o->audit_file = pt_yaml_path(y, s)))
            return pt_yaml_fail(y, v, "audit.file: out of memory");
    }
    if ((v = pt_yaml_get(y, n, "amqp"))) {
        static const char *const akeys[] = {"outgoing", "exchange", "routing_key", NULL};
        if (o->audit_file)
            return pt_yaml_fail(y, v, "audit: file and amqp are each a sink: name one of them");
        if (pt_yaml_check_keys(y, v, "audit.amqp", akeys) != 0) return -1;
        struct {
            const char *key;
            char **out;
        } fs[] = {{"outgoing", &o->audit_amqp_outgoing},
                  {"exchange", &o->audit_amqp_exchange},
                  {"routing_key", &o->audit_amqp_routing_key}};
        for (size_t i = 0; i < 3; i++) {
            yaml_node_t *f = pt_yaml_get(y, v, fs[i].key);
            const char *s = f ? pt_yaml_value(f) : NULL;
            if (!s && i == 2) s = "";
            if (!s || strlen(s) > 255)
                return pt_yaml_fail(y, f ? f : v,
                                    "audit.amqp.%s: expected a name (at most 255 "
                                    "bytes)",
                                    fs[i].key);
            if (!(*fs[i].out = strdup(s))) return pt_yaml_fail(y, v, "out of memory");
        }
    }
    if (o->n_audit_channels && !o->audit_file && !o->audit_amqp_outgoing)
        return pt_yaml_fail(y, n,
                            "audit: channels are audited but no sink is named (audit.file or "
                            "audit.amqp)");
    struct {
        const char *key;
        uint64_t *out, lo, hi;
    } sizes[] = {{"max_body", &o->audit_max_body, 0, 1024 * 1024},
                 {"max_queue", &o->audit_max_queue, 4096, 1024ull * 1024 * 1024}};
    for (size_t i = 0; i < 2; i++) {
        if (!(v = pt_yaml_get(y, n, sizes[i].key))) continue;
        const char *s = pt_yaml_value(v);
        uint64_t x;
        if (!s || pt_parse_size(s, &x) != 0 || x < sizes[i].lo || x > sizes[i].hi)
            return pt_yaml_fail(y, v, "audit.%s: expected a size from %llu to %llu bytes",
                                sizes[i].key, (unsigned long long)sizes[i].lo,
                                (unsigned long long)sizes[i].hi);
        *sizes[i].out = x;
    }
    if ((v = pt_yaml_get(y, n, "redact_headers")) &&
        pt__strings(y, v, "audit.redact_headers", &o->redact_headers, &o->n_redact_headers) != 0)
        return -1;
    if ((v = pt_yaml_get(y, n, "redact_json"))) {
        if (v->type != YAML_SEQUENCE_NODE)
            return pt_yaml_fail(y, v, "audit.redact_json: expected a list of JSON paths");
        size_t len = pt_yaml_len(v);
        o->redact_json = calloc(len ? len : 1, sizeof *o->redact_json);
        if (!o->redact_json) return pt_yaml_fail(y, v, "audit.redact_json: out of memory");
        for (size_t i = 0; i < len; i++) {
            yaml_node_t *it = pt_yaml_item(y, v, i);
            const char *s = pt_yaml_value(it);
            o->n_redact_json = i + 1;
            if (!s || pt__json_path(s, &o->redact_json[i]) != 0)
                return pt_yaml_fail(y, it,
                                    "audit.redact_json: '%s' is not a JSON path of the form "
                                    "$.key.key or $..key",
                                    s ? s : "");
        }
    }
    return 0;
}

static void pt__free_list(char **l, size_t n)
{
    for (size_t i = 0; l && i < n; i++)
        free(l[i]);
    free(l);
}

void pt_config_obs_free(pt_config_obs_t *o)
{
    free(o->trusted);
    pt__free_list(o->redact_query, o->n_redact_query);
    pt__free_list(o->audit_channels, o->n_audit_channels);
    free(o->audit_file);
    free(o->audit_amqp_outgoing);
    free(o->audit_amqp_exchange);
    free(o->audit_amqp_routing_key);
    for (size_t i = 0; o->redact_json && i < o->n_redact_json; i++)
        pt__free_list(o->redact_json[i].keys, o->redact_json[i].n);
    free(o->redact_json);
    pt__free_list(o->redact_headers, o->n_redact_headers);
    memset(o, 0, sizeof *o);
}

int pt_cidr_match(const pt_cidr_t *set, size_t n, const char *addr, size_t len)
{
    char buf[64];
    unsigned char a[16];
    int fam;
    if (n == 0 || len == 0 || len >= sizeof buf) return 0;
    memcpy(buf, addr, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, a) == 1)
        fam = 4;
    else if (inet_pton(AF_INET6, buf, a) == 1)
        fam = 6;
    else
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (set[i].family != fam) continue;
        int bits = set[i].prefix, k = 0;
        for (; bits >= 8; bits -= 8, k++)
            if (a[k] != set[i].addr[k]) break;
        if (bits >= 8) continue;
        unsigned char mask = (unsigned char)(0xff << (8 - bits));
        if (bits == 0 || (a[k] & mask) == (set[i].addr[k] & mask)) return 1;
    }
    return 0;
}

int pt_config_obs_audited(const pt_config_obs_t *o, const char *channel)
{
    for (size_t i = 0; channel && i < o->n_audit_channels; i++)
        if (strcmp(o->audit_channels[i], channel) == 0) return 1;
    return 0;
}

static int pt__same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int pt_config_obs_same_sink(const pt_config_obs_t *a, const pt_config_obs_t *b)
{
    return (a->n_audit_channels > 0) == (b->n_audit_channels > 0) &&
           pt__same(a->audit_file, b->audit_file) &&
           pt__same(a->audit_amqp_outgoing, b->audit_amqp_outgoing) &&
           pt__same(a->audit_amqp_exchange, b->audit_amqp_exchange) &&
           pt__same(a->audit_amqp_routing_key, b->audit_amqp_routing_key) &&
           a->audit_max_queue == b->audit_max_queue;
}
