#include "pt_config.h"
#include "pt_home.h"
#include "pt_route.h"
#include "pt_security_config.h"
#include "pt_tls.h"
#include "pt_util.h"
#include "pt_yaml.h"

#include <amqp.h>
#include <llhttp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <yaml.h>

#include <arpa/inet.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    pt_yaml_t y; /* y.doc is &doc */
    yaml_document_t doc;
    const pt_security_t *security; /* compiled before the channels that name it */
    yaml_node_t *rl_cluster_at;    /* the first rate_limit scope: cluster (it needs cluster:) */
    char rl_cluster_key[112];      /* its key, for the message */
} pt__cfg_ctx_t;

static int pt__size(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, uint64_t *out)
{
    const char *s = pt_yaml_scalar(n);
    if (!s || pt_parse_size(s, out) != 0)
        return pt_yaml_fail(&c->y, n, "%s: expected a size such as 16384 or \"1MB\"", what);
    return 0;
}

static int pt__duration(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, uint64_t *out)
{
    const char *s = pt_yaml_scalar(n);
    if (!s || pt_parse_duration_ms(s, out) != 0)
        return pt_yaml_fail(&c->y, n, "%s: expected a duration such as 10, \"500ms\" or \"2m\"",
                            what);
    return 0;
}

/* A duration or size for messages: "1h", "90s", "1500ms", "16KB", "100". */
static const char *pt__ms_text(uint64_t ms, char *buf, size_t len)
{
    if (ms && ms % 3600000 == 0)
        snprintf(buf, len, "%lluh", (unsigned long long)(ms / 3600000));
    else if (ms && ms % 60000 == 0)
        snprintf(buf, len, "%llum", (unsigned long long)(ms / 60000));
    else if (ms && ms % 1000 == 0)
        snprintf(buf, len, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, len, "%llums", (unsigned long long)ms);
    return buf;
}

static const char *pt__size_text(uint64_t b, char *buf, size_t len)
{
    if (b && b % (1024 * 1024 * 1024) == 0)
        snprintf(buf, len, "%lluGB", (unsigned long long)(b >> 30));
    else if (b && b % (1024 * 1024) == 0)
        snprintf(buf, len, "%lluMB", (unsigned long long)(b >> 20));
    else if (b && b % 1024 == 0)
        snprintf(buf, len, "%lluKB", (unsigned long long)(b >> 10));
    else
        snprintf(buf, len, "%llu", (unsigned long long)b);
    return buf;
}

typedef int (*pt__parse_fn)(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, uint64_t *out);
typedef const char *(*pt__text_fn)(uint64_t v, char *buf, size_t len);

/* A value parse() reads, in [lo, hi] (text() writes the bounds in the
 * message): 0 where it makes no sense (every request would time out at
 * once) is refused like any other bad value. */
static int pt__in(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, uint64_t lo, uint64_t hi,
                  uint64_t *out, pt__parse_fn parse, pt__text_fn text)
{
    uint64_t v;
    char a[32], b[32];
    if (parse(c, n, what, &v) != 0) return -1;
    if (v < lo || v > hi)
        return pt_yaml_fail(&c->y, n, "%s: %sfrom %s to %s", what,
                            v == 0 ? "must be more than 0, " : "", text(lo, a, sizeof a),
                            text(hi, b, sizeof b));
    *out = v;
    return 0;
}

/* A duration in [lo, hi] milliseconds. */
static int pt__duration_in(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, uint64_t lo,
                           uint64_t hi, uint64_t *out)
{
    return pt__in(c, n, what, lo, hi, out, pt__duration, pt__ms_text);
}

/* A size (or a count written like one, "10k") in [lo, hi]. */
static int pt__size_in(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, uint64_t lo, uint64_t hi,
                       uint64_t *out)
{
    return pt__in(c, n, what, lo, hi, out, pt__size, pt__size_text);
}

#define PT__SEC 1000ull
#define PT__MIN (60 * PT__SEC)
#define PT__HOUR (60 * PT__MIN)
#define PT__DAY (24 * PT__HOUR)
#define PT__MB (1024ull * 1024)
#define PT__GB (1024 * PT__MB)

static int pt__string_list(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, char ***out,
                           size_t *count)
{
    if (!n || n->type != YAML_SEQUENCE_NODE)
        return pt_yaml_fail(&c->y, n, "%s: expected a list", what);
    size_t len = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    char **list = calloc(len + 1, sizeof *list);
    if (!list) return pt_yaml_fail(&c->y, n, "out of memory");
    *out = list;
    *count = 0;
    for (size_t i = 0; i < len; i++) {
        yaml_node_t *item = yaml_document_get_node(c->y.doc, n->data.sequence.items.start[i]);
        if (pt_yaml_string(&c->y, item, what, &list[i]) != 0) return -1;
        (*count)++;
    }
    return 0;
}

/* lua.lib_dirs: absolute like every path; a directory that is not there
 * (yet) is fine, one that is there must be readable. A path may not hold
 * ';' or '?', which package.path gives a meaning. */
static int pt__lib_dirs(pt__cfg_ctx_t *c, yaml_node_t *n, pt_config_t *cfg)
{
    if (pt__string_list(c, n, "lua.lib_dirs", &cfg->lib_dirs, &cfg->n_lib_dirs) != 0) return -1;
    for (size_t i = 0; i < cfg->n_lib_dirs; i++) {
        yaml_node_t *item = pt_yaml_item(&c->y, n, i);
        if (!cfg->lib_dirs[i][0] || strpbrk(cfg->lib_dirs[i], ";?"))
            return pt_yaml_fail(&c->y, item,
                                "lua.lib_dirs: '%s' is empty or holds ';' or '?' (package.path "
                                "syntax)",
                                cfg->lib_dirs[i]);
        char *abs = pt_yaml_path(&c->y, cfg->lib_dirs[i]);
        free(cfg->lib_dirs[i]);
        cfg->lib_dirs[i] = abs;
        if (!abs) return pt_yaml_fail(&c->y, item, "out of memory");
        if (access(abs, F_OK) == 0 && access(abs, R_OK | X_OK) != 0)
            return pt_yaml_fail(&c->y, item, "lua.lib_dirs: cannot read directory %s", abs);
    }
    return 0;
}

/* Without lua.lib_dirs: a lib/ beside each service directory (made nowhere). */
static int pt__default_lib_dirs(pt_config_t *cfg)
{
    cfg->lib_dirs = calloc(cfg->n_service_dirs + 1, sizeof *cfg->lib_dirs);
    if (!cfg->lib_dirs) return -1;
    for (size_t i = 0; i < cfg->n_service_dirs; i++) {
        const char *d = cfg->service_dirs[i];
        size_t len = strlen(d);
        while (len > 1 && d[len - 1] == '/')
            len--;
        while (len > 0 && d[len - 1] != '/')
            len--;
        char *lib = malloc(len + 4);
        if (!lib) return -1;
        memcpy(lib, d, len);
        memcpy(lib + len, "lib", 4);
        int dup = strchr(lib, ';') || strchr(lib, '?');
        for (size_t j = 0; j < cfg->n_lib_dirs && !dup; j++)
            dup = strcmp(cfg->lib_dirs[j], lib) == 0;
        if (dup)
            free(lib);
        else
            cfg->lib_dirs[cfg->n_lib_dirs++] = lib;
    }
    return 0;
}

int pt_config_method(const char *name)
{
    static const struct {
        const char *name;
        int method;
    } methods[] = {{"GET", HTTP_GET},        {"POST", HTTP_POST},   {"PUT", HTTP_PUT},
                   {"DELETE", HTTP_DELETE},  {"PATCH", HTTP_PATCH}, {"HEAD", HTTP_HEAD},
                   {"OPTIONS", HTTP_OPTIONS}};
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (strcasecmp(name, methods[i].name) == 0) return methods[i].method;
    return -1;
}

/* A query parameter name that reads the same raw and decoded. */
static int pt__query_name_ok(const char *s)
{
    if (!*s || strlen(s) > 63) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

static int pt__int(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, long lo, long hi, int *out);

/* The settings only a WebSocket channel has. */
static int pt__websocket(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, pt_channel_t *ch)
{
    char key[96];
    yaml_node_t *v;
    snprintf(key, sizeof key, "%s.service", what);
    if (pt_yaml_string(&c->y, pt_yaml_get(&c->y, n, "service"), key, &ch->service) != 0) return -1;
    if ((v = pt_yaml_get(&c->y, n, "service_list"))) {
        snprintf(key, sizeof key, "%s.service_list", what);
        if (pt__string_list(c, v, key, &ch->service_list, &ch->n_service_list) != 0) return -1;
    }
    ch->ws_ping_interval_ms = 30000;
    ch->ws_missed_pings = 2;
    ch->ws_max_message = 1024 * 1024;
    ch->ws_idle_timeout_ms = 0;
    ch->ws_max_output = 1024 * 1024;
    ch->ws_send_timeout_ms = 10000;
    /* [lo, hi]; idle_timeout 0: none (pings keep a live peer) */
    struct {
        const char *key;
        uint64_t *out;
        int is_duration;
        uint64_t lo, hi;
    } fields[] = {{"ping_interval", &ch->ws_ping_interval_ms, 1, 100, PT__HOUR},
                  {"max_message_size", &ch->ws_max_message, 0, 1, 256 * PT__MB},
                  {"idle_timeout", &ch->ws_idle_timeout_ms, 1, 0, PT__DAY},
                  {"max_output", &ch->ws_max_output, 0, 0, PT__GB},
                  {"send_timeout", &ch->ws_send_timeout_ms, 1, 0, PT__HOUR}};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (!(v = pt_yaml_get(&c->y, n, fields[i].key))) continue;
        snprintf(key, sizeof key, "%s.%s", what, fields[i].key);
        if ((fields[i].is_duration
                 ? pt__duration_in(c, v, key, fields[i].lo, fields[i].hi, fields[i].out)
                 : pt__size_in(c, v, key, fields[i].lo, fields[i].hi, fields[i].out)) != 0)
            return -1;
    }
    snprintf(key, sizeof key, "%s.missed_pings", what);
    if ((v = pt_yaml_get(&c->y, n, "missed_pings")) &&
        pt__int(c, v, key, 1, 100, &ch->ws_missed_pings) != 0)
        return -1;
    if ((v = pt_yaml_get(&c->y, n, "token_query_param"))) {
        snprintf(key, sizeof key, "%s.token_query_param", what);
        if (pt_yaml_string(&c->y, v, key, &ch->ws_token_param) != 0) return -1;
        if (!pt__query_name_ok(ch->ws_token_param))
            return pt_yaml_fail(&c->y, v, "%s: expected a query parameter name ([A-Za-z0-9._-])",
                                key);
    }
    if (ch->ws_max_output < 1024)
        return pt_yaml_fail(&c->y, pt_yaml_get(&c->y, n, "max_output"),
                            "%s.max_output: at least 1KB", what);
    if (ch->ws_send_timeout_ms < 100)
        return pt_yaml_fail(&c->y, pt_yaml_get(&c->y, n, "send_timeout"),
                            "%s.send_timeout: at least 100ms", what);
    return 0;
}

/* rate_limit: {rate: 10/s, burst: 20, per: user|channel, scope: local|cluster,
 * on_redis_error: fail_open|fail_closed, batch: N} (docs/cluster-ratelimit.md) */
static int pt__rate_limit(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what,
                          pt_ratelimit_cfg_t *rl)
{
    static const char *const keys[] = {"rate",           "burst", "per", "scope",
                                       "on_redis_error", "batch", NULL};
    char key[96];
    yaml_node_t *v;
    snprintf(key, sizeof key, "%s.rate_limit", what);
    if (pt_yaml_check_keys(&c->y, n, key, keys) != 0) return -1;
    v = pt_yaml_get(&c->y, n, "rate");
    /* at least 1/h: a smaller rate is a typo, and near 0 it is 0 */
    if (!pt_yaml_scalar(v) || pt_ratelimit_parse_rate(pt_yaml_scalar(v), &rl->rate) != 0 ||
        !(rl->rate <= 1e6 && rl->rate >= 1.0 / 3600))
        return pt_yaml_fail(&c->y, v ? v : n,
                            "%s.rate: expected requests per second such as 10, "
                            "\"10/s\", \"600/m\" or \"1000/h\"",
                            key);
    rl->burst = rl->rate < 1 ? 1 : (double)(uint64_t)(rl->rate + 0.999999);
    if ((v = pt_yaml_get(&c->y, n, "burst"))) {
        const char *s = pt_yaml_scalar(v);
        size_t digits = s ? strspn(s, "0123456789") : 0;
        long b = digits && digits < 8 && !s[digits] ? strtol(s, NULL, 10) : 0;
        if (b < 1 || b > 1000000)
            return pt_yaml_fail(&c->y, v, "%s.burst: a whole number from 1 to 1000000", key);
        rl->burst = (double)b;
    }
    rl->per_user = 0;
    if ((v = pt_yaml_get(&c->y, n, "per"))) {
        const char *s = pt_yaml_scalar(v);
        if (s && !strcmp(s, "user"))
            rl->per_user = 1;
        else if (!s || strcmp(s, "channel") != 0)
            return pt_yaml_fail(&c->y, v, "%s.per: expected user or channel", key);
    }
    rl->cluster = 0;
    if ((v = pt_yaml_get(&c->y, n, "scope"))) {
        const char *s = pt_yaml_scalar(v);
        if (s && !strcmp(s, "cluster"))
            rl->cluster = 1;
        else if (!s || strcmp(s, "local") != 0)
            return pt_yaml_fail(&c->y, v, "%s.scope: expected local or cluster", key);
        /* the cluster: section may come later in the file: checked at the end */
        if (rl->cluster && !c->rl_cluster_at) {
            c->rl_cluster_at = v;
            snprintf(c->rl_cluster_key, sizeof c->rl_cluster_key, "%s.scope", key);
        }
    }
    rl->fail_closed = 0;
    if ((v = pt_yaml_get(&c->y, n, "on_redis_error"))) {
        const char *s = pt_yaml_scalar(v);
        if (s && !strcmp(s, "fail_closed"))
            rl->fail_closed = 1;
        else if (!s || strcmp(s, "fail_open") != 0)
            return pt_yaml_fail(&c->y, v, "%s.on_redis_error: expected fail_open or fail_closed",
                                key);
        if (!rl->cluster)
            return pt_yaml_fail(&c->y, v, "%s.on_redis_error: only with scope: cluster", key);
    }
    rl->batch = 1;
    if ((v = pt_yaml_get(&c->y, n, "batch"))) {
        const char *s = pt_yaml_scalar(v);
        size_t digits = s ? strspn(s, "0123456789") : 0;
        long b = digits && digits < 6 && !s[digits] ? strtol(s, NULL, 10) : 0;
        if (b < 1 || b > 10000)
            return pt_yaml_fail(&c->y, v, "%s.batch: a whole number from 1 to 10000", key);
        if (!rl->cluster) return pt_yaml_fail(&c->y, v, "%s.batch: only with scope: cluster", key);
        if ((double)b > rl->burst)
            return pt_yaml_fail(&c->y, v,
                                "%s.batch: at most burst (%.0f): a node could never take more", key,
                                rl->burst);
        rl->batch = (uint32_t)b;
    }
    return 0;
}

static int pt__endpoint(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, pt_amqp_endpoint_t *ep);

static const char *pt__channel_kind(pt_channel_type_t type)
{
    static const char *const kinds[] = {[PT_CHANNEL_REST] = "rest",
                                        [PT_CHANNEL_GATEWAY] = "gateway",
                                        [PT_CHANNEL_AMQP] = "amqp",
                                        [PT_CHANNEL_WEBSOCKET] = "websocket",
                                        [PT_CHANNEL_HTTP_PROXY] = "http_proxy",
                                        [PT_CHANNEL_AMQP_BUS] = "amqp_bus",
                                        [PT_CHANNEL_OPENAPI] = "openapi"};
    return kinds[type];
}

/* What a prefix channel accepts when it names no methods. */
static const char *const pt__all_methods[] = {"GET",    "HEAD",  "POST",    "PUT",
                                              "DELETE", "PATCH", "OPTIONS", NULL};

/* A port: 1 to 65535 in plain digits (strtol would take " +80"). Returns it,
 * or -1. */
static long pt__port(const char *s, size_t n)
{
    long port = 0;
    if (n == 0 || n > 5) return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        port = port * 10 + (s[i] - '0');
    }
    return port >= 1 && port <= 65535 ? port : -1;
}

/* Non-zero for an IPv6 literal (bracketed: the brackets are not in h), an
 * IPv4 literal or a DNS name (labels of [A-Za-z0-9-], not all digits, which
 * would be a mistyped IPv4 address). */
static int pt__host_ok(const char *h, size_t n, int bracketed)
{
    char buf[256];
    unsigned char addr[16];
    if (n == 0 || n >= sizeof buf) return 0;
    memcpy(buf, h, n);
    buf[n] = '\0';
    if (bracketed) return inet_pton(AF_INET6, buf, addr) == 1;
    if (inet_pton(AF_INET, buf, addr) == 1) return 1;
    if (strspn(buf, "0123456789.") == n) return 0;
    for (size_t i = 0, label = 0; i <= n; i++, label++) {
        char c = buf[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || buf[i - 1] == '-') return 0;
            label = (size_t)-1;
        } else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '_' || (c == '-' && label > 0))) {
            return 0;
        }
    }
    return 1;
}

/* "http://host:port", "https://host:port", "host:port" or "[v6]:port"
 * (port 80, or 443 for https, when none); *https says which scheme. */
static int pt__target(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, pt_target_cfg_t *t,
                      int *https)
{
    const char *s = pt_yaml_value(n);
    if (!s) return pt_yaml_fail(&c->y, n, "%s: expected http://host:port", what);
    *https = strncasecmp(s, "https://", 8) == 0;
    if (*https)
        s += 8;
    else if (strncasecmp(s, "http://", 7) == 0)
        s += 7;
    const char *end = s + strlen(s);
    if (end > s && end[-1] == '/') end--;
    const char *host = s, *host_end, *colon;
    if (*s == '[') {
        host = s + 1;
        host_end = memchr(host, ']', (size_t)(end - host));
        if (!host_end) return pt_yaml_fail(&c->y, n, "%s: unclosed '[' in '%s'", what, s);
        colon = host_end + 1 < end && host_end[1] == ':' ? host_end + 1 : NULL;
        if (!colon && host_end + 1 != end)
            return pt_yaml_fail(&c->y, n, "%s: expected http://host:port, no path", what);
    } else {
        colon = memchr(s, ':', (size_t)(end - s));
        host_end = colon ? colon : end;
    }
    long port = *https ? 443 : 80;
    if (colon && (port = pt__port(colon + 1, (size_t)(end - colon - 1))) < 0)
        return pt_yaml_fail(&c->y, n, "%s: expected http://host:port (a port 1-65535, no path)",
                            what);
    if (!pt__host_ok(host, (size_t)(host_end - host), *s == '['))
        return pt_yaml_fail(&c->y, n, "%s: expected http://host:port (a host name or IP address)",
                            what);
    t->host = strndup(host, (size_t)(host_end - host));
    t->port = (int)port;
    char disp[300];
    snprintf(disp, sizeof disp, *s == '[' ? "[%s]:%d" : "%s:%d", t->host ? t->host : "", t->port);
    t->display = strdup(disp);
    if (!t->host || !t->display) return pt_yaml_fail(&c->y, n, "out of memory");
    return 0;
}

/* The settings of an upstream under n; defaults come from def (NULL: the
 * built-in ones) and def_tls (the tls mapping of the level above, or NULL).
 * n must hold targets unless need_targets is 0. */
static int pt__upstream(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what,
                        const pt_upstream_cfg_t *def, yaml_node_t *def_tls, int need_targets,
                        pt_upstream_cfg_t *u)
{
    char key[160];
    yaml_node_t *v;
    if (def) {
        u->connect_timeout_ms = def->connect_timeout_ms;
        u->read_timeout_ms = def->read_timeout_ms;
        u->fail_timeout_ms = def->fail_timeout_ms;
        u->max_fails = def->max_fails;
        u->keepalive = def->keepalive;
        u->resolve_ttl_ms = def->resolve_ttl_ms;
    } else {
        u->connect_timeout_ms = 5000;
        u->read_timeout_ms = 60000;
        u->fail_timeout_ms = 10000;
        u->max_fails = 1;
        u->keepalive = 32;
        u->resolve_ttl_ms = 30000;
    }
    u->line = (int)n->start_mark.line + 1;
    /* fail_timeout 0: a failed target is tried again at once; resolve_ttl
     * 0: a name is resolved for every connection */
    struct {
        const char *key;
        uint64_t *out;
        uint64_t lo, hi;
    } durations[] = {{"connect_timeout", &u->connect_timeout_ms, 1, 10 * PT__MIN},
                     {"read_timeout", &u->read_timeout_ms, 1, PT__DAY},
                     {"fail_timeout", &u->fail_timeout_ms, 0, PT__DAY},
                     {"resolve_ttl", &u->resolve_ttl_ms, 0, PT__DAY}};
    for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++) {
        if (!(v = pt_yaml_get(&c->y, n, durations[i].key))) continue;
        snprintf(key, sizeof key, "%s.%s", what, durations[i].key);
        if (pt__duration_in(c, v, key, durations[i].lo, durations[i].hi, durations[i].out) != 0)
            return -1;
    }
    snprintf(key, sizeof key, "%s.max_fails", what);
    if ((v = pt_yaml_get(&c->y, n, "max_fails")) && pt__int(c, v, key, 1, 1000, &u->max_fails))
        return -1;
    snprintf(key, sizeof key, "%s.keepalive", what);
    if ((v = pt_yaml_get(&c->y, n, "keepalive")) && pt__int(c, v, key, 0, 10000, &u->keepalive))
        return -1;
    v = pt_yaml_get(&c->y, n, "targets");
    if (!need_targets && !v) return 0;
    snprintf(key, sizeof key, "%s.targets", what);
    if (!v || v->type != YAML_SEQUENCE_NODE || pt_yaml_len(v) == 0)
        return pt_yaml_fail(&c->y, v ? v : n, "%s: expected a list of http://host:port", key);
    if (!(u->targets = calloc(pt_yaml_len(v), sizeof *u->targets)))
        return pt_yaml_fail(&c->y, v, "out of memory");
    int https = 0;
    for (size_t i = 0; i < pt_yaml_len(v); i++) {
        char tk[192];
        int this_https = 0;
        yaml_node_t *item = pt_yaml_item(&c->y, v, i);
        snprintf(tk, sizeof tk, "%s[%zu]", key, i);
        u->n_targets++;
        if (pt__target(c, item, tk, &u->targets[i], &this_https) != 0) return -1;
        /* one scheme per upstream, as nginx's proxy_pass: what an upstream
         * promises its clients about the way to its targets holds for all */
        if (i > 0 && this_https != https)
            return pt_yaml_fail(&c->y, item,
                                "%s: http:// and https:// targets cannot be mixed in one upstream",
                                tk);
        https = this_https;
    }
    yaml_node_t *tls = pt_yaml_get(&c->y, n, "tls");
    if (!https) {
        if (tls) return pt_yaml_fail(&c->y, tls, "%s.tls: TLS options need https:// targets", what);
        return 0;
    }
    return pt_config_upstream_tls(&c->y, tls ? tls : def_tls, n, what, &u->tls);
}

static void pt__upstream_free(pt_upstream_cfg_t *u)
{
    free(u->name);
    pt_upstream_tls_free(u->tls);
    for (size_t i = 0; i < u->n_targets; i++) {
        free(u->targets[i].host);
        free(u->targets[i].display);
    }
    free(u->targets);
}

/* http_proxy: settings for every service, then services: {name: {targets}} */
static int pt__proxy(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, pt_channel_t *ch)
{
    static const char *const svc_keys[] = {
        "targets",   "connect_timeout", "read_timeout", "fail_timeout",
        "max_fails", "keepalive",       "resolve_ttl",  "tls",
        NULL};
    char key[160];
    pt_upstream_cfg_t def = {0};
    if (pt__upstream(c, n, what, NULL, NULL, 0, &def) != 0) return -1;
    /* the channel's tls: the default of its https services */
    yaml_node_t *def_tls = pt_yaml_get(&c->y, n, "tls");
    yaml_node_t *svcs = pt_yaml_get(&c->y, n, "services");
    snprintf(key, sizeof key, "%s.services", what);
    if (!svcs || svcs->type != YAML_MAPPING_NODE ||
        svcs->data.mapping.pairs.top == svcs->data.mapping.pairs.start)
        return pt_yaml_fail(&c->y, svcs ? svcs : n,
                            "%s: expected a mapping of service name to {targets: [...]}", key);
    size_t len = (size_t)(svcs->data.mapping.pairs.top - svcs->data.mapping.pairs.start);
    if (!(ch->upstreams = calloc(len, sizeof *ch->upstreams)))
        return pt_yaml_fail(&c->y, svcs, "out of memory");
    for (size_t i = 0; i < len; i++) {
        yaml_node_pair_t *pair = &svcs->data.mapping.pairs.start[i];
        yaml_node_t *kn = yaml_document_get_node(c->y.doc, pair->key);
        yaml_node_t *vn = yaml_document_get_node(c->y.doc, pair->value);
        const char *name = pt_yaml_value(kn);
        pt_upstream_cfg_t *u = &ch->upstreams[ch->n_upstreams++];
        if (!name || !pt_route_valid_service_name(name, strlen(name)))
            return pt_yaml_fail(&c->y, kn, "%s: '%s' is not a service name ([A-Za-z0-9._-])", key,
                                name ? name : "?");
        for (size_t j = 0; j + 1 < ch->n_upstreams; j++)
            if (strcmp(ch->upstreams[j].name, name) == 0)
                return pt_yaml_fail(&c->y, kn, "%s: '%s' is named twice", key, name);
        if (!(u->name = strdup(name))) return pt_yaml_fail(&c->y, kn, "out of memory");
        char sk[224];
        snprintf(sk, sizeof sk, "%s.%s", key, name);
        if (pt_yaml_check_keys(&c->y, vn, sk, svc_keys) != 0 ||
            pt__upstream(c, vn, sk, &def, def_tls, 1, u) != 0)
            return -1;
    }
    int any_https = 0;
    for (size_t i = 0; i < ch->n_upstreams; i++)
        any_https |= ch->upstreams[i].tls != NULL;
    if (def_tls && !any_https)
        return pt_yaml_fail(&c->y, def_tls, "%s.tls: TLS options need https:// targets", what);
    return 0;
}

/* amqp_bus: the broker, the reply time-out and an optional exchange allowlist */
static int pt__bus(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, pt_channel_t *ch)
{
    char key[160];
    yaml_node_t *v;
    if (pt__endpoint(c, n, what, &ch->bus_ep) != 0) return -1;
    ch->bus_reply_timeout_ms = 30000;
    snprintf(key, sizeof key, "%s.reply_timeout", what);
    if ((v = pt_yaml_get(&c->y, n, "reply_timeout")) &&
        pt__duration_in(c, v, key, 1, PT__DAY, &ch->bus_reply_timeout_ms) != 0)
        return -1;
    if ((v = pt_yaml_get(&c->y, n, "service_list"))) {
        snprintf(key, sizeof key, "%s.service_list", what);
        if (pt__string_list(c, v, key, &ch->service_list, &ch->n_service_list) != 0) return -1;
    }
    return 0;
}

/* A url_path or url_prefix the router can match as written: the bytes of a
 * URI path that need no encoding ('%' would be compared undecoded, so it
 * could never match), no dot segments, no empty segment but a trailing one,
 * captures only as whole "{name}" segments, each name once. */
static int pt__url_path_check(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, const char *path)
{
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                             "-._~!$&'()*+,;=:@/{}";
    size_t bad = strspn(path, ok);
    if (path[bad]) {
        unsigned char b = (unsigned char)path[bad];
        if (b == '%')
            return pt_yaml_fail(&c->y, n, "%s: no percent-encoding: write the path decoded", what);
        return pt_yaml_fail(&c->y, n,
                            b > 0x20 && b < 0x7f ? "%s: '%c' cannot be routed (a path takes "
                                                   "letters, digits and -._~!$&'()*+,;=:@)"
                                                 : "%s: byte 0x%02x cannot be routed",
                            what, b);
    }
    const char *names[PT_ROUTE_MAX_PARAMS];
    size_t name_len[PT_ROUTE_MAX_PARAMS];
    int n_names = 0, n_segs = 0;
    for (const char *p = path + 1;; n_segs++) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (n_segs == PT_ROUTE_MAX_SEGMENTS)
            return pt_yaml_fail(&c->y, n, "%s: more than %d segments", what, PT_ROUTE_MAX_SEGMENTS);
        if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return pt_yaml_fail(&c->y, n, "%s: dot segments ('.', '..') cannot be routed", what);
        if (len == 0 && slash)
            return pt_yaml_fail(&c->y, n, "%s: an empty segment ('//') cannot be routed", what);
        int capture = len >= 2 && p[0] == '{' && p[len - 1] == '}';
        if (capture) {
            size_t nl = len - 2;
            if (nl == 0 || strspn(p + 1, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789_") < nl)
                return pt_yaml_fail(&c->y, n, "%s: a capture is {name}, name of [A-Za-z0-9_]",
                                    what);
            for (int i = 0; i < n_names; i++)
                if (name_len[i] == nl && memcmp(names[i], p + 1, nl) == 0)
                    return pt_yaml_fail(&c->y, n, "%s: {%.*s} is captured twice", what, (int)nl,
                                        p + 1);
            if (n_names == PT_ROUTE_MAX_PARAMS)
                return pt_yaml_fail(&c->y, n, "%s: more than %d captures", what,
                                    PT_ROUTE_MAX_PARAMS);
            names[n_names] = p + 1;
            name_len[n_names++] = nl;
        } else if (memchr(p, '{', len) || memchr(p, '}', len)) {
            return pt_yaml_fail(&c->y, n, "%s: '{' and '}' only around a whole segment: {name}",
                                what);
        }
        if (!slash) break;
        p = slash + 1;
    }
    return 0;
}

static int pt__prefixed_type(pt_channel_type_t t)
{
    return t == PT_CHANNEL_HTTP_PROXY || t == PT_CHANNEL_AMQP_BUS;
}

/* Non-zero when the paths of a and b match the same requests with a method
 * in common: which channel serves them would be down to their order. Two
 * templates clash when their segments agree, any capture matching any
 * capture (where a literal meets a capture the router takes the literal);
 * two prefixes clash when one holds the other. */
static int pt__routes_clash(const pt_channel_t *a, const pt_channel_t *b)
{
    int pa = pt__prefixed_type(a->type), pb = pt__prefixed_type(b->type);
    if (pa != pb || !(a->methods & b->methods)) return 0;
    if (pa) {
        /* /p and /p/q: /p/q/x/y could be service q of /p or service x of /p/q */
        size_t la = strlen(a->url_path), lb = strlen(b->url_path);
        const pt_channel_t *s = la <= lb ? a : b, *l = la <= lb ? b : a;
        size_t ls = la <= lb ? la : lb;
        return ls == 1 || (strncmp(s->url_path, l->url_path, ls) == 0 &&
                           (l->url_path[ls] == '\0' || l->url_path[ls] == '/'));
    }
    const char *x = a->url_path, *y = b->url_path;
    for (;;) {
        size_t lx = strcspn(x + 1, "/"), ly = strcspn(y + 1, "/");
        int cx = lx >= 2 && x[1] == '{', cy = ly >= 2 && y[1] == '{';
        if (cx != cy || (!cx && (lx != ly || memcmp(x + 1, y + 1, lx) != 0))) return 0;
        x += 1 + lx;
        y += 1 + ly;
        if (!*x || !*y) return !*x && !*y;
    }
}

static int pt__channel(pt__cfg_ctx_t *c, yaml_node_t *n, pt_channel_type_t type, size_t idx,
                       pt_channel_t *ch)
{
    static const char *const rest_keys[] = {"name",     "url_path",    "methods",    "service",
                                            "security", "data_format", "rate_limit", NULL};
    static const char *const gw_keys[] = {
        "name",     "url_path",    "methods",    "gateway_service_list",
        "security", "data_format", "rate_limit", NULL};
    static const char *const ws_keys[] = {"name",
                                          "url_path",
                                          "service",
                                          "service_list",
                                          "security",
                                          "data_format",
                                          "ping_interval",
                                          "missed_pings",
                                          "max_message_size",
                                          "idle_timeout",
                                          "token_query_param",
                                          "max_output",
                                          "send_timeout",
                                          NULL};
    static const char *const proxy_keys[] = {
        "name",         "url_prefix", "methods",         "services",
        "security",     "rate_limit", "connect_timeout", "read_timeout",
        "fail_timeout", "max_fails",  "keepalive",       "resolve_ttl",
        "tls",          NULL};
    static const char *const bus_keys[] = {
        "name",    "url_prefix", "methods", "service_list",  "security", "rate_limit", "url",
        "url_env", "heartbeat",  "tls",     "reply_timeout", "declare",  NULL};
    static const char *const openapi_keys[] = {"name", "url_path", "security", "rate_limit", NULL};
    static const char *const *const keys[] = {
        [PT_CHANNEL_REST] = rest_keys,    [PT_CHANNEL_GATEWAY] = gw_keys,
        [PT_CHANNEL_WEBSOCKET] = ws_keys, [PT_CHANNEL_HTTP_PROXY] = proxy_keys,
        [PT_CHANNEL_AMQP_BUS] = bus_keys, [PT_CHANNEL_OPENAPI] = openapi_keys};
    int prefixed = type == PT_CHANNEL_HTTP_PROXY || type == PT_CHANNEL_AMQP_BUS;
    const char *path_key = prefixed ? "url_prefix" : "url_path";
    char what[64];
    snprintf(what, sizeof what, "channels.%s[%zu]", pt__channel_kind(type), idx);
    if (pt_yaml_check_keys(&c->y, n, what, keys[type]) != 0) return -1;
    ch->type = type;
    ch->line = (int)n->start_mark.line + 1;
    char key[96];
    snprintf(key, sizeof key, "%s.name", what);
    if (pt_yaml_string(&c->y, pt_yaml_get(&c->y, n, "name"), key, &ch->name) != 0) return -1;
    snprintf(key, sizeof key, "%s.%s", what, path_key);
    if (pt_yaml_string(&c->y, pt_yaml_get(&c->y, n, path_key), key, &ch->url_path) != 0) return -1;
    if (ch->url_path[0] != '/')
        return pt_yaml_fail(&c->y, pt_yaml_get(&c->y, n, path_key), "%s: must start with '/'", key);
    if (prefixed) {
        size_t len = strlen(ch->url_path);
        while (len > 1 && ch->url_path[len - 1] == '/')
            ch->url_path[--len] = '\0'; /* "/svc/" and "/svc" are the same prefix */
        if (strchr(ch->url_path, '{'))
            return pt_yaml_fail(&c->y, pt_yaml_get(&c->y, n, path_key),
                                "%s: a prefix has no {name} segments", key);
    }
    if (pt__url_path_check(c, pt_yaml_get(&c->y, n, path_key), key, ch->url_path) != 0) return -1;

    yaml_node_t *m = pt_yaml_get(&c->y, n, "methods");
    if (type == PT_CHANNEL_WEBSOCKET || type == PT_CHANNEL_OPENAPI) {
        ch->methods = 1ull << HTTP_GET; /* the upgrade; the document */
    } else if (!m && prefixed) {
        for (const char *const *mn = pt__all_methods; *mn; mn++)
            ch->methods |= 1ull << pt_config_method(*mn);
    } else if (!m) {
        ch->methods = (1ull << HTTP_GET) | (1ull << HTTP_POST);
    } else {
        char **names = NULL;
        size_t count = 0;
        snprintf(key, sizeof key, "%s.methods", what);
        int rc = pt__string_list(c, m, key, &names, &count);
        for (size_t i = 0; rc == 0 && i < count; i++) {
            int method = pt_config_method(names[i]);
            if (method < 0)
                rc = pt_yaml_fail(&c->y, m, "%s: unknown method '%s'", key, names[i]);
            else
                ch->methods |= 1ull << method;
        }
        for (size_t i = 0; names && i < count; i++)
            free(names[i]);
        free(names);
        if (rc != 0) return -1;
        if (ch->methods == 0) return pt_yaml_fail(&c->y, m, "%s: empty", key);
    }
    if (ch->methods & (1ull << HTTP_GET)) ch->methods |= 1ull << HTTP_HEAD;

    if (type == PT_CHANNEL_WEBSOCKET) {
        if (pt__websocket(c, n, what, ch) != 0) return -1;
    } else if (type == PT_CHANNEL_HTTP_PROXY) {
        if (pt__proxy(c, n, what, ch) != 0) return -1;
    } else if (type == PT_CHANNEL_AMQP_BUS) {
        if (pt__bus(c, n, what, ch) != 0) return -1;
    } else if (type == PT_CHANNEL_OPENAPI) {
        if (strchr(ch->url_path, '{'))
            return pt_yaml_fail(&c->y, pt_yaml_get(&c->y, n, "url_path"),
                                "%s.url_path: the document's path has no {name} segments", what);
    } else if (type == PT_CHANNEL_REST) {
        snprintf(key, sizeof key, "%s.service", what);
        if (pt_yaml_string(&c->y, pt_yaml_get(&c->y, n, "service"), key, &ch->service) != 0)
            return -1;
    } else {
        snprintf(key, sizeof key, "%s.gateway_service_list", what);
        if (pt__string_list(c, pt_yaml_get(&c->y, n, "gateway_service_list"), key,
                            &ch->service_list, &ch->n_service_list) != 0)
            return -1;
        if (!strstr(ch->url_path, "{service}"))
            return pt_yaml_fail(&c->y, pt_yaml_get(&c->y, n, "url_path"),
                                "%s.url_path: a gateway path needs a {service} segment", what);
    }
    yaml_node_t *df = pt_yaml_get(&c->y, n, "data_format");
    if (df && !pt_yaml_is_null(df)) {
        snprintf(key, sizeof key, "%s.data_format", what);
        if (pt_yaml_string(&c->y, df, key, &ch->data_format) != 0) return -1;
        if (strcmp(ch->data_format, "json") != 0)
            return pt_yaml_fail(&c->y, df, "%s: only \"json\" is supported", key);
    } else if (!prefixed) {
        ch->data_format = strdup("json");
    }
    yaml_node_t *sec = pt_yaml_get(&c->y, n, "security");
    if (sec && !pt_yaml_is_null(sec) &&
        !(pt_yaml_scalar(sec) &&
          (ch->security = pt_security_find(c->security, pt_yaml_scalar(sec)))))
        return pt_yaml_fail(&c->y, sec, "%s.security: no security definition named '%s'", what,
                            pt_yaml_scalar(sec) ? pt_yaml_scalar(sec) : "?");
    yaml_node_t *rl = pt_yaml_get(&c->y, n, "rate_limit");
    if (rl && !pt_yaml_is_null(rl) && pt__rate_limit(c, rl, what, &ch->rate_limit) != 0) return -1;
    return 0;
}

static int pt__amqp_channels(pt__cfg_ctx_t *c, yaml_node_t *list, pt_config_t *cfg);

/* ---- twins: two channels of one name, or whose paths clash ----
 * Found by sorting hashes, not by comparing every pair: a long channel list
 * would cost its square. */

typedef struct {
    uint64_t h;
    size_t i;
} pt__twin_t;

static uint64_t pt__fnv(uint64_t h, const char *s, size_t n)
{
    for (size_t k = 0; k < n; k++)
        h = (h ^ (unsigned char)s[k]) * 1099511628211ull;
    return h;
}

#define PT__FNV0 14695981039346656037ull

/* What pt__routes_clash compares of a template: literals, any capture alike. */
static uint64_t pt__shape_hash(const char *path)
{
    uint64_t h = PT__FNV0;
    for (const char *p = path; *p == '/';) {
        size_t len = strcspn(p + 1, "/");
        h = len >= 2 && p[1] == '{' ? pt__fnv(h, "/{}", 3) : pt__fnv(h, p, len + 1);
        p += 1 + len;
    }
    return h;
}

static int pt__twin_cmp(const void *a, const void *b)
{
    const pt__twin_t *x = a, *y = b;
    if (x->h != y->h) return x->h < y->h ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

typedef struct {
    size_t later, earlier; /* channel indexes; later == SIZE_MAX: none */
    int clash;             /* 0: the same name, 1: clashing paths */
} pt__pair_t;

/* Keeps the pair the one-by-one check would have met first: the earliest
 * later channel, then the earliest other, a name before a path. */
static void pt__pair(pt__pair_t *best, size_t a, size_t b, int clash)
{
    size_t later = a > b ? a : b, earlier = a > b ? b : a;
    if (later < best->later || (later == best->later && earlier < best->earlier) ||
        (later == best->later && earlier == best->earlier && clash < best->clash))
        *best = (pt__pair_t){later, earlier, clash};
}

static int pt__twins(pt__cfg_ctx_t *c, yaml_node_t *n, yaml_node_t **lists, int n_types,
                     pt_config_t *cfg)
{
    size_t nc = cfg->n_channels, n_shapes = 0, n_prefixes = 0;
    pt__twin_t *names = calloc(nc + 1, sizeof *names), *shapes = calloc(nc + 1, sizeof *shapes);
    pt__twin_t *prefixes = calloc(nc + 1, sizeof *prefixes);
    if (!names || !shapes || !prefixes) {
        free(names);
        free(shapes);
        free(prefixes);
        return pt_yaml_fail(&c->y, n, "out of memory");
    }
    for (size_t i = 0; i < nc; i++) {
        const pt_channel_t *ch = &cfg->channels[i];
        names[i] = (pt__twin_t){pt__fnv(PT__FNV0, ch->name, strlen(ch->name)), i};
        if (pt__prefixed_type(ch->type))
            prefixes[n_prefixes++] =
                (pt__twin_t){pt__fnv(PT__FNV0, ch->url_path, strlen(ch->url_path)), i};
        else
            shapes[n_shapes++] = (pt__twin_t){pt__shape_hash(ch->url_path), i};
    }
    qsort(names, nc, sizeof *names, pt__twin_cmp);
    qsort(shapes, n_shapes, sizeof *shapes, pt__twin_cmp);
    qsort(prefixes, n_prefixes, sizeof *prefixes, pt__twin_cmp);
    pt__pair_t best = {SIZE_MAX, SIZE_MAX, 0};
    /* equal hashes: each pair of a run is checked for real */
    for (size_t a = 0; a < nc; a++)
        for (size_t b = a + 1; b < nc && names[b].h == names[a].h; b++)
            if (!strcmp(cfg->channels[names[a].i].name, cfg->channels[names[b].i].name))
                pt__pair(&best, names[a].i, names[b].i, 0);
    for (size_t a = 0; a < n_shapes; a++)
        for (size_t b = a + 1; b < n_shapes && shapes[b].h == shapes[a].h; b++)
            if (pt__routes_clash(&cfg->channels[shapes[a].i], &cfg->channels[shapes[b].i]))
                pt__pair(&best, shapes[a].i, shapes[b].i, 1);
    /* a prefix clashes with itself and with each prefix it starts with */
    for (size_t a = 0; a < n_prefixes; a++) {
        const pt_channel_t *ch = &cfg->channels[prefixes[a].i];
        size_t len = strlen(ch->url_path);
        for (size_t k = 1; k <= len; k++) {
            if (k < len && k > 1 && ch->url_path[k] != '/') continue; /* k == 1: "/" */
            pt__twin_t key = {pt__fnv(PT__FNV0, ch->url_path, k), 0};
            size_t lo = 0, hi = n_prefixes; /* the first of key's run */
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (prefixes[mid].h < key.h)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            for (size_t b = lo; b < n_prefixes && prefixes[b].h == key.h; b++)
                if (prefixes[b].i != prefixes[a].i &&
                    pt__routes_clash(&cfg->channels[prefixes[b].i], ch))
                    pt__pair(&best, prefixes[a].i, prefixes[b].i, 1);
        }
    }
    free(names);
    free(shapes);
    free(prefixes);
    if (best.later == SIZE_MAX) return 0;

    /* the later channel's node: channels are in the order of lists[] */
    yaml_node_t *item = n;
    for (int t = 0, k = 0; t < n_types && item == n; t++) {
        if (!lists[t] || pt_yaml_is_null(lists[t])) continue;
        size_t len = pt_yaml_len(lists[t]);
        if (best.later < (size_t)k + len) item = pt_yaml_item(&c->y, lists[t], best.later - k);
        k += (int)len;
    }
    const pt_channel_t *ch = &cfg->channels[best.later], *o = &cfg->channels[best.earlier];
    if (!best.clash) return pt_yaml_fail(&c->y, item, "channel name '%s' is used twice", ch->name);
    const char *pk = pt__prefixed_type(ch->type) ? "url_prefix" : "url_path";
    uint64_t both = o->methods & ch->methods;
    char m[128];
    if (both & ~(1ull << HTTP_HEAD)) both &= ~(1ull << HTTP_HEAD); /* GET says it */
    return pt_yaml_fail(&c->y, pt_yaml_get(&c->y, item, pk),
                        "channel '%s': %s %s matches what channel '%s' (line %d) does, for %s: "
                        "which one answers would be down to their order",
                        ch->name, pk, ch->url_path, o->name, o->line,
                        pt_route_allow_header(both, m, sizeof m));
}

static int pt__channels(pt__cfg_ctx_t *c, yaml_node_t *n, pt_config_t *cfg)
{
    static const char *const keys[] = {"rest",       "gateway",  "amqp",    "websocket",
                                       "http_proxy", "amqp_bus", "openapi", NULL};
    static const pt_channel_type_t types[] = {PT_CHANNEL_REST,      PT_CHANNEL_GATEWAY,
                                              PT_CHANNEL_WEBSOCKET, PT_CHANNEL_HTTP_PROXY,
                                              PT_CHANNEL_AMQP_BUS,  PT_CHANNEL_OPENAPI};
    enum { n_types = sizeof types / sizeof types[0] };
    if (pt_yaml_check_keys(&c->y, n, "channels", keys) != 0) return -1;
    yaml_node_t *lists[n_types];
    size_t total = 0;
    for (int t = 0; t < n_types; t++) {
        lists[t] = pt_yaml_get(&c->y, n, pt__channel_kind(types[t]));
        if (!lists[t] || pt_yaml_is_null(lists[t])) continue;
        if (lists[t]->type != YAML_SEQUENCE_NODE)
            return pt_yaml_fail(&c->y, lists[t], "channels.%s: expected a list",
                                pt__channel_kind(types[t]));
        total += (size_t)(lists[t]->data.sequence.items.top - lists[t]->data.sequence.items.start);
    }
    cfg->channels = calloc(total ? total : 1, sizeof *cfg->channels);
    if (!cfg->channels) return pt_yaml_fail(&c->y, n, "out of memory");
    for (int t = 0; t < n_types; t++) {
        if (!lists[t] || pt_yaml_is_null(lists[t])) continue;
        size_t len =
            (size_t)(lists[t]->data.sequence.items.top - lists[t]->data.sequence.items.start);
        for (size_t i = 0; i < len; i++) {
            yaml_node_t *item =
                yaml_document_get_node(c->y.doc, lists[t]->data.sequence.items.start[i]);
            pt_channel_t *ch = &cfg->channels[cfg->n_channels++];
            if (pt__channel(c, item, types[t], i, ch) != 0) return -1;
        }
    }
    if (pt__twins(c, n, lists, n_types, cfg) != 0) return -1;
    yaml_node_t *amqp = pt_yaml_get(&c->y, n, "amqp");
    if (amqp && !pt_yaml_is_null(amqp) && pt__amqp_channels(c, amqp, cfg) != 0) return -1;
    return 0;
}

static int pt__listen(pt__cfg_ctx_t *c, yaml_node_t *v, const char *what, char **host, int *port)
{
    const char *s = pt_yaml_value(v);
    const char *colon = s ? strrchr(s, ':') : NULL;
    if (!colon)
        return pt_yaml_fail(&c->y, v, "%s: expected host:port such as 127.0.0.1:11223", what);
    long p = pt__port(colon + 1, strlen(colon + 1));
    if (p < 0)
        return pt_yaml_fail(&c->y, v, "%s: the port must be from 1 to 65535 (in '%s')", what, s);
    const char *h = s, *h_end = colon;
    int bracketed = *s == '[' && colon > s && colon[-1] == ']';
    if (bracketed) h++, h_end--;
    if (!bracketed && memchr(s, ':', (size_t)(colon - s)) && pt__host_ok(s, (size_t)(colon - s), 1))
        return pt_yaml_fail(&c->y, v, "%s: an IPv6 address goes in brackets: [::1]:11223", what);
    if (!pt__host_ok(h, (size_t)(h_end - h), bracketed))
        return pt_yaml_fail(&c->y, v, "%s: '%.*s' is not a host name or IP address", what,
                            (int)(colon - s), s);
    free(*host);
    if (!(*host = strndup(h, (size_t)(h_end - h)))) return pt_yaml_fail(&c->y, v, "out of memory");
    *port = (int)p;
    return 0;
}

/* ---- server.tls: the TLS listener and its certificates ---- */

/* A path of the config (relative to its directory) into *out. */
static int pt__tls_path(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, char **out)
{
    char *p = NULL;
    if (!n) return -1;
    if (pt_yaml_string(&c->y, n, what, &p) != 0) return -1;
    *out = pt_yaml_path(&c->y, p);
    free(p);
    if (!*out) return pt_yaml_fail(&c->y, n, "out of memory");
    return 0;
}

static int pt__server_tls(pt__cfg_ctx_t *c, yaml_node_t *n, pt_config_t *cfg)
{
    static const char *const keys[] = {"listen",    "certificates",      "min_version",
                                       "client_ca", "handshake_timeout", "ticket_rotation",
                                       NULL};
    static const char *const cert_keys[] = {"cert", "key", NULL};
    char err[512];
    if (pt_yaml_check_keys(&c->y, n, "server.tls", keys) != 0) return -1;
    yaml_node_t *v = pt_yaml_get(&c->y, n, "listen");
    if (!v) return pt_yaml_fail(&c->y, n, "server.tls.listen: missing (host:port)");
    if (pt__listen(c, v, "server.tls.listen", &cfg->tls_listen_host, &cfg->tls_listen_port) != 0)
        return -1;
    int min_version = TLS1_2_VERSION;
    if ((v = pt_yaml_get(&c->y, n, "min_version")) &&
        pt_tls_parse_version(pt_yaml_scalar(v), &min_version, err, sizeof err) != 0)
        return pt_yaml_fail(&c->y, v, "server.tls.min_version: %s", err);
    char *ca = NULL;
    if ((v = pt_yaml_get(&c->y, n, "client_ca")) &&
        pt__tls_path(c, v, "server.tls.client_ca", &ca) != 0)
        return -1;
    int rc = pt_tls_ctx_new(min_version, ca, &cfg->tls, err, sizeof err);
    free(ca);
    if (rc != 0) return pt_yaml_fail(&c->y, v, "server.tls.client_ca: %s", err);
    /* 0: server.header_timeout's value (pt__server) */
    if ((v = pt_yaml_get(&c->y, n, "handshake_timeout")) &&
        pt__duration_in(c, v, "server.tls.handshake_timeout", 1, PT__HOUR,
                        &cfg->tls_handshake_timeout_ms) != 0)
        return -1;
    uint64_t rotation = PT_TLS_TICKET_ROTATION_MS;
    if ((v = pt_yaml_get(&c->y, n, "ticket_rotation")) &&
        pt__duration_in(c, v, "server.tls.ticket_rotation", 1000, PT__DAY, &rotation) != 0)
        return -1;
    pt_tls_ctx_set_ticket_rotation(cfg->tls, rotation);
    yaml_node_t *list = pt_yaml_get(&c->y, n, "certificates");
    if (!list || list->type != YAML_SEQUENCE_NODE || pt_yaml_len(list) == 0)
        return pt_yaml_fail(&c->y, list ? list : n,
                            "server.tls.certificates: expected a list of {cert, key}");
    for (size_t i = 0; i < pt_yaml_len(list); i++) {
        yaml_node_t *item = pt_yaml_item(&c->y, list, i);
        char what[64], *cert = NULL, *key = NULL;
        snprintf(what, sizeof what, "server.tls.certificates[%zu]", i);
        if (!item || item->type != YAML_MAPPING_NODE)
            return pt_yaml_fail(&c->y, item ? item : list, "%s: expected {cert, key}", what);
        if (pt_yaml_check_keys(&c->y, item, what, cert_keys) != 0) return -1;
        yaml_node_t *cn = pt_yaml_get(&c->y, item, "cert"), *kn = pt_yaml_get(&c->y, item, "key");
        if (!cn || !kn) return pt_yaml_fail(&c->y, item, "%s: needs both cert and key", what);
        if (pt__tls_path(c, cn, what, &cert) != 0) return -1;
        if (pt__tls_path(c, kn, what, &key) != 0) {
            free(cert);
            return -1;
        }
        rc = pt_tls_ctx_add(cfg->tls, cert, key, err, sizeof err);
        free(cert);
        free(key);
        if (rc != 0) return pt_yaml_fail(&c->y, item, "%s: %s", what, err);
    }
    return 0;
}

static int pt__server(pt__cfg_ctx_t *c, yaml_node_t *n, pt_config_t *cfg)
{
    static const char *const keys[] = {"listen",
                                       "workers",
                                       "max_connections",
                                       "max_header_bytes",
                                       "max_body_bytes",
                                       "header_timeout",
                                       "body_timeout",
                                       "idle_timeout",
                                       "drain_timeout",
                                       "body_deadline",
                                       "tls",
                                       "trusted_proxies",
                                       NULL};
    if (pt_yaml_check_keys(&c->y, n, "server", keys) != 0) return -1;
    if (pt_config_obs_trusted(&c->y, pt_yaml_get(&c->y, n, "trusted_proxies"), &cfg->obs) != 0)
        return -1;
    yaml_node_t *tls = pt_yaml_get(&c->y, n, "tls");
    if (tls && !pt_yaml_is_null(tls) && pt__server_tls(c, tls, cfg) != 0) return -1;
    /* the whole request body within this long (0: no deadline); body_timeout
     * is the longest gap between two of its reads */
    yaml_node_t *bd = pt_yaml_get(&c->y, n, "body_deadline");
    if (bd &&
        pt__duration_in(c, bd, "server.body_deadline", 0, PT__DAY, &cfg->body_deadline_ms) != 0)
        return -1;
    yaml_node_t *v;
    if ((v = pt_yaml_get(&c->y, n, "listen")) &&
        pt__listen(c, v, "server.listen", &cfg->listen_host, &cfg->listen_port) != 0)
        return -1;
    if ((v = pt_yaml_get(&c->y, n, "workers")) &&
        pt__int(c, v, "server.workers (0: one per core)", 0, 256, &cfg->workers) != 0)
        return -1;
    /* [lo, hi] each; drain_timeout 0: in-flight requests are not waited for */
    struct {
        const char *key;
        uint64_t *out;
        int is_duration;
        uint64_t lo, hi;
    } fields[] = {{"max_connections", &cfg->max_connections, 0, 1, 10000000},
                  {"max_header_bytes", &cfg->max_header_bytes, 0, 1024, 16 * PT__MB},
                  {"max_body_bytes", &cfg->max_body_bytes, 0, 1, 64 * PT__GB},
                  {"header_timeout", &cfg->header_timeout_ms, 1, 1, PT__HOUR},
                  {"body_timeout", &cfg->body_timeout_ms, 1, 1, PT__DAY},
                  {"idle_timeout", &cfg->idle_timeout_ms, 1, 1, PT__DAY},
                  {"drain_timeout", &cfg->drain_timeout_ms, 1, 0, PT__DAY}};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "server.%s", fields[i].key);
        if (!(v = pt_yaml_get(&c->y, n, fields[i].key))) continue;
        int rc = fields[i].is_duration
                     ? pt__duration_in(c, v, what, fields[i].lo, fields[i].hi, fields[i].out)
                     : pt__size_in(c, v, what, fields[i].lo, fields[i].hi, fields[i].out);
        if (rc != 0) return -1;
    }
    if (!cfg->tls_handshake_timeout_ms) cfg->tls_handshake_timeout_ms = cfg->header_timeout_ms;
    return 0;
}

/* client_cert definitions: the TLS listener asks for certificates of their
 * CAs; without one they could never be met. */
typedef struct {
    pt__cfg_ctx_t *c;
    pt_config_t *cfg;
} pt__cas_ud_t;

static int pt__client_cas(void *ud, const char *name, int line, STACK_OF(X509) * cas)
{
    pt__cfg_ctx_t *c = ((pt__cas_ud_t *)ud)->c;
    pt_config_t *cfg = ((pt__cas_ud_t *)ud)->cfg;
    char err[256];
    if (!cfg->tls) {
        snprintf(c->y.err, c->y.errlen,
                 "%s:%d: security definition '%s' (client_cert) needs server.tls: client "
                 "certificates come over the TLS listener",
                 c->y.file, line, name);
        return -1;
    }
    if (pt_tls_ctx_client_cas(cfg->tls, cas, err, sizeof err) == 0) return 0;
    snprintf(c->y.err, c->y.errlen, "%s:%d: %s", c->y.file, line, err);
    return -1;
}

/* ---- AMQP: outgoing.amqp and channels.amqp ---- */

#define PT__AMQP_DEFAULT_URL "amqp://guest:guest@127.0.0.1:5672/"

static int pt__int(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, long lo, long hi, int *out)
{
    const char *s = pt_yaml_scalar(n);
    /* digits only: strtol would also take blanks, a sign and "0x" */
    int digits = s && *s && strlen(s) < 19;
    for (const char *p = s; digits && *p; p++)
        digits = *p >= '0' && *p <= '9';
    long v = digits ? strtol(s, NULL, 10) : 0;
    if (!digits || v < lo || v > hi)
        return pt_yaml_fail(&c->y, n, "%s: expected a whole number from %ld to %ld", what, lo, hi);
    *out = (int)v;
    return 0;
}

void pt_amqp_endpoint_free(pt_amqp_endpoint_t *ep)
{
    free(ep->host);
    free(ep->user);
    free(ep->password);
    free(ep->vhost);
    free(ep->display);
    free(ep->tls_ca_file);
    free(ep->tls_cert);
    free(ep->tls_key);
    pt_amqp_declare_free(&ep->declare);
}

static int pt__dup_opt(char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return src && !*dst ? -1 : 0;
}

int pt_amqp_endpoint_copy(pt_amqp_endpoint_t *dst, const pt_amqp_endpoint_t *src)
{
    *dst = *src;
    dst->host = strdup(src->host);
    dst->user = strdup(src->user);
    dst->password = strdup(src->password);
    dst->vhost = strdup(src->vhost);
    dst->display = strdup(src->display);
    int opt = pt__dup_opt(&dst->tls_ca_file, src->tls_ca_file);
    opt |= pt__dup_opt(&dst->tls_cert, src->tls_cert);
    opt |= pt__dup_opt(&dst->tls_key, src->tls_key);
    opt |= pt_amqp_declare_copy(&dst->declare, &src->declare);
    return dst->host && dst->user && dst->password && dst->vhost && dst->display && !opt ? 0 : -1;
}

static int pt__same_opt(const char *a, const char *b)
{
    return a && b ? strcmp(a, b) == 0 : a == b;
}

int pt_amqp_endpoint_same(const pt_amqp_endpoint_t *a, const pt_amqp_endpoint_t *b)
{
    return strcmp(a->host, b->host) == 0 && a->port == b->port && strcmp(a->user, b->user) == 0 &&
           strcmp(a->password, b->password) == 0 && strcmp(a->vhost, b->vhost) == 0 &&
           a->heartbeat == b->heartbeat && a->tls == b->tls && a->tls_verify == b->tls_verify &&
           pt__same_opt(a->tls_ca_file, b->tls_ca_file) && pt__same_opt(a->tls_cert, b->tls_cert) &&
           pt__same_opt(a->tls_key, b->tls_key) && pt_amqp_declare_same(&a->declare, &b->declare);
}

/* The OpenSSL error of a failed call, for a message. */
static const char *pt__ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : "unknown error";
}

static int pt__no_password(char *buf, int size, int rwflag, void *ud)
{
    return 0;
}

/* A readable PEM file under key, made absolute into *out; n is the key's node. */
static int pt__tls_file(pt__cfg_ctx_t *c, yaml_node_t *n, const char *key, char **out)
{
    const char *p = pt_yaml_value(n);
    if (!p) return pt_yaml_fail(&c->y, n, "%s: expected the path of a PEM file", key);
    if (!(*out = pt_yaml_path(&c->y, p))) return pt_yaml_fail(&c->y, n, "out of memory");
    FILE *f = fopen(*out, "r");
    if (!f) return pt_yaml_fail(&c->y, n, "%s: cannot read %s: %s", key, p, strerror(errno));
    fclose(f);
    return 0;
}

/* tls of an amqps:// endpoint: {ca_file, cert, key, verify}, each checked
 * here the way a connection will load it, so a broken file is refused with
 * its line instead of failing every connection attempt later. */
static int pt__endpoint_tls(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what,
                            pt_amqp_endpoint_t *ep)
{
    static const char *const keys[] = {"ca_file", "cert", "key", "verify", NULL};
    char key[160];
    yaml_node_t *v, *cert = pt_yaml_get(&c->y, n, "cert"), *keyn = pt_yaml_get(&c->y, n, "key");
    snprintf(key, sizeof key, "%s.tls", what);
    if (pt_yaml_check_keys(&c->y, n, key, keys) != 0) return -1;
    if ((v = pt_yaml_get(&c->y, n, "verify"))) {
        snprintf(key, sizeof key, "%s.tls.verify", what);
        if (pt_yaml_bool(&c->y, v, key, &ep->tls_verify) != 0) return -1;
    }
    if ((v = pt_yaml_get(&c->y, n, "ca_file"))) {
        snprintf(key, sizeof key, "%s.tls.ca_file", what);
        if (pt__tls_file(c, v, key, &ep->tls_ca_file) != 0) return -1;
        X509_STORE *st = X509_STORE_new();
        int ok = st && X509_STORE_load_file(st, ep->tls_ca_file) == 1;
        X509_STORE_free(st);
        if (!ok)
            return pt_yaml_fail(&c->y, v, "%s: no PEM certificate in %s (%s)", key,
                                pt_yaml_value(v), pt__ssl_reason());
    }
    if (!cert != !keyn)
        return pt_yaml_fail(&c->y, cert ? cert : keyn,
                            "%s.tls: a client certificate takes both cert and key", what);
    if (cert) {
        snprintf(key, sizeof key, "%s.tls.cert", what);
        if (pt__tls_file(c, cert, key, &ep->tls_cert) != 0) return -1;
        snprintf(key, sizeof key, "%s.tls.key", what);
        if (pt__tls_file(c, keyn, key, &ep->tls_key) != 0) return -1;
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx) return pt_yaml_fail(&c->y, n, "out of memory");
        SSL_CTX_set_default_passwd_cb(ctx, pt__no_password); /* never a prompt */
        int rc = 0;
        if (SSL_CTX_use_certificate_chain_file(ctx, ep->tls_cert) != 1)
            rc = pt_yaml_fail(&c->y, cert, "%s.tls.cert: not a PEM certificate chain: %s", what,
                              pt__ssl_reason());
        else if (SSL_CTX_use_PrivateKey_file(ctx, ep->tls_key, SSL_FILETYPE_PEM) != 1 &&
                 ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH)
            rc = pt_yaml_fail(&c->y, keyn,
                              "%s.tls.key: not a PEM private key without a password: %s", what,
                              pt__ssl_reason());
        else if (SSL_CTX_check_private_key(ctx) != 1)
            rc = pt_yaml_fail(&c->y, keyn, "%s.tls.key: does not match the certificate in cert",
                              what);
        ERR_clear_error();
        SSL_CTX_free(ctx);
        if (rc != 0) return rc;
    }
    return 0;
}

/* url, url_env (its value wins when set and not empty), heartbeat and tls
 * of n. */
static int pt__endpoint(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, pt_amqp_endpoint_t *ep)
{
    char key[128], *url = NULL;
    yaml_node_t *v, *at = n;
    const char *src = PT__AMQP_DEFAULT_URL, *env_name = NULL;
    if ((v = pt_yaml_get(&c->y, n, "url"))) {
        snprintf(key, sizeof key, "%s.url", what);
        if (!pt_yaml_scalar(v) || pt_yaml_is_null(v))
            return pt_yaml_fail(&c->y, v, "%s: expected a URL such as %s", key,
                                PT__AMQP_DEFAULT_URL);
        src = pt_yaml_scalar(v);
        at = v;
    }
    if ((v = pt_yaml_get(&c->y, n, "url_env"))) {
        snprintf(key, sizeof key, "%s.url_env", what);
        if (!pt_yaml_scalar(v) || pt_yaml_is_null(v))
            return pt_yaml_fail(&c->y, v, "%s: expected the name of an environment variable", key);
        const char *val = getenv(pt_yaml_scalar(v));
        if (val && *val) {
            src = val;
            env_name = pt_yaml_scalar(v);
            at = v;
        }
    }
    if (!(url = strdup(src))) return pt_yaml_fail(&c->y, n, "out of memory");
    struct amqp_connection_info info;
    if (amqp_parse_url(url, &info) != AMQP_STATUS_OK || !info.host || !*info.host) {
        free(url);
        if (env_name)
            return pt_yaml_fail(
                &c->y, at, "%s.url_env: $%s is not an AMQP URL (amqp://user:pass@host:port/vhost)",
                what, env_name);
        return pt_yaml_fail(&c->y, at, "%s.url: not an AMQP URL (amqp://user:pass@host:port/vhost)",
                            what);
    }
    ep->tls = info.ssl;
    ep->tls_verify = 1;
    yaml_node_t *tls = pt_yaml_get(&c->y, n, "tls");
    if (tls && !ep->tls) {
        free(url);
        if (env_name)
            return pt_yaml_fail(&c->y, tls,
                                "%s.tls: TLS options need an amqps:// URL ($%s is amqp://)", what,
                                env_name);
        return pt_yaml_fail(&c->y, tls, "%s.tls: TLS options need an amqps:// URL", what);
    }
    if (tls && pt__endpoint_tls(c, tls, what, ep) != 0) {
        free(url);
        return -1;
    }
    ep->host = strdup(info.host);
    ep->port = info.port;
    ep->user = strdup(info.user ? info.user : "guest");
    ep->password = strdup(info.password ? info.password : "guest");
    /* amqp://host/ names the empty vhost in the AMQP URI spec; every broker
     * in practice means "/", which is what users expect. */
    ep->vhost = strdup(info.vhost && *info.vhost ? info.vhost : "/");
    free(url);
    if (!ep->host || !ep->user || !ep->password || !ep->vhost)
        return pt_yaml_fail(&c->y, n, "out of memory");
    char disp[512];
    snprintf(disp, sizeof disp, "%s://%s@%s:%d/%s", ep->tls ? "amqps" : "amqp", ep->user, ep->host,
             ep->port, strcmp(ep->vhost, "/") == 0 ? "" : ep->vhost);
    ep->display = strdup(disp);
    ep->heartbeat = 30;
    if ((v = pt_yaml_get(&c->y, n, "heartbeat"))) {
        uint64_t ms = 0;
        snprintf(key, sizeof key, "%s.heartbeat", what);
        if (pt__duration_in(c, v, key, 0, PT__HOUR, &ms) != 0) return -1; /* 0: off */
        ep->heartbeat = (int)((ms + 999) / 1000);
    }
    if (!ep->display) return pt_yaml_fail(&c->y, n, "out of memory");
    return pt_amqp_declare_parse(&c->y, pt_yaml_get(&c->y, n, "declare"), what, &ep->declare);
}

static int pt__amqp_out(pt__cfg_ctx_t *c, yaml_node_t *n, size_t idx, pt_amqp_out_cfg_t *o)
{
    static const char *const keys[] = {"name",     "url",       "url_env", "heartbeat", "tls",
                                       "confirms", "pool_size", "timeout", "declare",   NULL};
    char what[64], key[96];
    yaml_node_t *v;
    snprintf(what, sizeof what, "outgoing.amqp[%zu]", idx);
    if (pt_yaml_check_keys(&c->y, n, what, keys) != 0) return -1;
    o->line = (int)n->start_mark.line + 1;
    o->confirms = 1;
    o->pool_size = 1;
    o->timeout_ms = 10000;
    snprintf(key, sizeof key, "%s.name", what);
    if (pt_yaml_string(&c->y, pt_yaml_get(&c->y, n, "name"), key, &o->name) != 0 ||
        pt__endpoint(c, n, what, &o->ep) != 0)
        return -1;
    snprintf(key, sizeof key, "%s.confirms", what);
    if ((v = pt_yaml_get(&c->y, n, "confirms")) && pt_yaml_bool(&c->y, v, key, &o->confirms) != 0)
        return -1;
    snprintf(key, sizeof key, "%s.pool_size", what);
    if ((v = pt_yaml_get(&c->y, n, "pool_size")) && pt__int(c, v, key, 1, 64, &o->pool_size) != 0)
        return -1;
    snprintf(key, sizeof key, "%s.timeout", what);
    if ((v = pt_yaml_get(&c->y, n, "timeout")) &&
        pt__duration_in(c, v, key, 1, PT__DAY, &o->timeout_ms) != 0)
        return -1;
    return 0;
}

/* outgoing.http[]: {name, targets, time-outs, keepalive} for self.out.http */
static int pt__http_out(pt__cfg_ctx_t *c, yaml_node_t *list, pt_config_t *cfg)
{
    static const char *const keys[] = {
        "name",      "targets",   "connect_timeout", "timeout", "fail_timeout",
        "max_fails", "keepalive", "resolve_ttl",     "tls",     NULL};
    if (list->type != YAML_SEQUENCE_NODE)
        return pt_yaml_fail(&c->y, list, "outgoing.http: expected a list");
    size_t len = pt_yaml_len(list);
    if (!(cfg->http_out = calloc(len ? len : 1, sizeof *cfg->http_out)))
        return pt_yaml_fail(&c->y, list, "out of memory");
    for (size_t i = 0; i < len; i++) {
        yaml_node_t *item = pt_yaml_item(&c->y, list, i);
        pt_upstream_cfg_t *u = &cfg->http_out[cfg->n_http_out++];
        char what[64], key[96];
        yaml_node_t *v;
        snprintf(what, sizeof what, "outgoing.http[%zu]", i);
        if (pt_yaml_check_keys(&c->y, item, what, keys) != 0) return -1;
        snprintf(key, sizeof key, "%s.name", what);
        if (pt_yaml_string(&c->y, pt_yaml_get(&c->y, item, "name"), key, &u->name) != 0 ||
            pt__upstream(c, item, what, NULL, NULL, 1, u) != 0)
            return -1;
        /* timeout: the whole answer's read time-out, as services think of it */
        snprintf(key, sizeof key, "%s.timeout", what);
        if ((v = pt_yaml_get(&c->y, item, "timeout")) &&
            pt__duration_in(c, v, key, 1, PT__DAY, &u->read_timeout_ms) != 0)
            return -1;
        for (size_t j = 0; j + 1 < cfg->n_http_out; j++)
            if (strcmp(cfg->http_out[j].name, u->name) == 0)
                return pt_yaml_fail(&c->y, item, "outgoing HTTP connection name '%s' is used twice",
                                    u->name);
    }
    return 0;
}

static int pt__outgoing(pt__cfg_ctx_t *c, yaml_node_t *n, pt_config_t *cfg)
{
    static const char *const keys[] = {"amqp", "http", NULL};
    if (pt_yaml_check_keys(&c->y, n, "outgoing", keys) != 0) return -1;
    yaml_node_t *http = pt_yaml_get(&c->y, n, "http");
    if (http && !pt_yaml_is_null(http) && pt__http_out(c, http, cfg) != 0) return -1;
    yaml_node_t *list = pt_yaml_get(&c->y, n, "amqp");
    if (!list || pt_yaml_is_null(list)) return 0;
    if (list->type != YAML_SEQUENCE_NODE)
        return pt_yaml_fail(&c->y, list, "outgoing.amqp: expected a list");
    size_t len = (size_t)(list->data.sequence.items.top - list->data.sequence.items.start);
    if (!(cfg->amqp_out = calloc(len ? len : 1, sizeof *cfg->amqp_out)))
        return pt_yaml_fail(&c->y, n, "out of memory");
    for (size_t i = 0; i < len; i++) {
        yaml_node_t *item = yaml_document_get_node(c->y.doc, list->data.sequence.items.start[i]);
        pt_amqp_out_cfg_t *o = &cfg->amqp_out[cfg->n_amqp_out++];
        if (pt__amqp_out(c, item, i, o) != 0) return -1;
        for (size_t j = 0; j + 1 < cfg->n_amqp_out; j++)
            if (strcmp(cfg->amqp_out[j].name, o->name) == 0)
                return pt_yaml_fail(&c->y, item, "outgoing AMQP connection name '%s' is used twice",
                                    o->name);
    }
    return 0;
}

static int pt__amqp_channel(pt__cfg_ctx_t *c, yaml_node_t *n, size_t idx, pt_config_t *cfg,
                            pt_amqp_channel_cfg_t *a)
{
    static const char *const keys[] = {
        "name",    "connection", "url",         "url_env",  "heartbeat",   "tls",     "queue",
        "service", "prefetch",   "concurrency", "on_error", "data_format", "declare", NULL};
    char what[64], key[96];
    yaml_node_t *v;
    snprintf(what, sizeof what, "channels.amqp[%zu]", idx);
    if (pt_yaml_check_keys(&c->y, n, what, keys) != 0) return -1;
    a->channel.type = PT_CHANNEL_AMQP;
    a->channel.line = (int)n->start_mark.line + 1;
    a->prefetch = 10;
    snprintf(key, sizeof key, "%s.name", what);
    if (pt_yaml_string(&c->y, pt_yaml_get(&c->y, n, "name"), key, &a->channel.name) != 0) return -1;
    snprintf(key, sizeof key, "%s.queue", what);
    if (pt_yaml_string(&c->y, pt_yaml_get(&c->y, n, "queue"), key, &a->queue) != 0) return -1;
    snprintf(key, sizeof key, "%s.service", what);
    if (pt_yaml_string(&c->y, pt_yaml_get(&c->y, n, "service"), key, &a->channel.service) != 0)
        return -1;
    if ((v = pt_yaml_get(&c->y, n, "connection"))) {
        const char *name = pt_yaml_scalar(v);
        if (pt_yaml_get(&c->y, n, "url") || pt_yaml_get(&c->y, n, "url_env") ||
            pt_yaml_get(&c->y, n, "heartbeat") || pt_yaml_get(&c->y, n, "tls"))
            return pt_yaml_fail(&c->y, v, "%s: give either connection or url/url_env/heartbeat/tls",
                                what);
        const pt_amqp_out_cfg_t *o = NULL;
        for (size_t i = 0; name && i < cfg->n_amqp_out; i++)
            if (strcmp(cfg->amqp_out[i].name, name) == 0) o = &cfg->amqp_out[i];
        if (!o)
            return pt_yaml_fail(&c->y, v, "%s.connection: no outgoing.amqp connection named '%s'",
                                what, name ? name : "?");
        if (pt_amqp_endpoint_copy(&a->ep, &o->ep) != 0)
            return pt_yaml_fail(&c->y, v, "out of memory");
        yaml_node_t *d = pt_yaml_get(&c->y, n, "declare");
        if (d) { /* the channel's own declarations instead of the connection's */
            pt_amqp_declare_free(&a->ep.declare);
            if (pt_amqp_declare_parse(&c->y, d, what, &a->ep.declare) != 0) return -1;
        }
    } else if (pt__endpoint(c, n, what, &a->ep) != 0) {
        return -1;
    }
    snprintf(key, sizeof key, "%s.prefetch", what);
    if ((v = pt_yaml_get(&c->y, n, "prefetch")) && pt__int(c, v, key, 1, 65535, &a->prefetch) != 0)
        return -1;
    a->concurrency = a->prefetch;
    snprintf(key, sizeof key, "%s.concurrency", what);
    if ((v = pt_yaml_get(&c->y, n, "concurrency")) &&
        pt__int(c, v, key, 1, a->prefetch, &a->concurrency) != 0)
        return -1;
    if ((v = pt_yaml_get(&c->y, n, "on_error"))) {
        const char *s = pt_yaml_scalar(v);
        if (s && strcmp(s, "dead_letter") == 0)
            a->requeue = 0;
        else if (s && strcmp(s, "requeue") == 0)
            a->requeue = 1;
        else
            return pt_yaml_fail(&c->y, v, "%s.on_error: expected dead_letter or requeue", what);
    }
    yaml_node_t *df = pt_yaml_get(&c->y, n, "data_format");
    if (df && !pt_yaml_is_null(df)) {
        snprintf(key, sizeof key, "%s.data_format", what);
        if (pt_yaml_string(&c->y, df, key, &a->channel.data_format) != 0) return -1;
        if (strcmp(a->channel.data_format, "json") != 0)
            return pt_yaml_fail(&c->y, df, "%s: only \"json\" is supported", key);
    } else if (!(a->channel.data_format = strdup("json"))) {
        return pt_yaml_fail(&c->y, n, "out of memory");
    }
    return 0;
}

static int pt__amqp_channels(pt__cfg_ctx_t *c, yaml_node_t *list, pt_config_t *cfg)
{
    if (list->type != YAML_SEQUENCE_NODE)
        return pt_yaml_fail(&c->y, list, "channels.amqp: expected a list");
    size_t len = (size_t)(list->data.sequence.items.top - list->data.sequence.items.start);
    if (!(cfg->amqp_channels = calloc(len ? len : 1, sizeof *cfg->amqp_channels)))
        return pt_yaml_fail(&c->y, list, "out of memory");
    for (size_t i = 0; i < len; i++) {
        yaml_node_t *item = yaml_document_get_node(c->y.doc, list->data.sequence.items.start[i]);
        pt_amqp_channel_cfg_t *a = &cfg->amqp_channels[cfg->n_amqp_channels++];
        if (pt__amqp_channel(c, item, i, cfg, a) != 0) return -1;
        int dup = 0;
        for (size_t j = 0; j < cfg->n_channels; j++)
            dup |= strcmp(cfg->channels[j].name, a->channel.name) == 0;
        for (size_t j = 0; j + 1 < cfg->n_amqp_channels; j++)
            dup |= strcmp(cfg->amqp_channels[j].channel.name, a->channel.name) == 0;
        if (dup)
            return pt_yaml_fail(&c->y, item, "channel name '%s' is used twice", a->channel.name);
    }
    return 0;
}

static void pt__amqp_free(pt_config_t *cfg)
{
    for (size_t i = 0; i < cfg->n_amqp_out; i++) {
        free(cfg->amqp_out[i].name);
        pt_amqp_endpoint_free(&cfg->amqp_out[i].ep);
    }
    free(cfg->amqp_out);
    for (size_t i = 0; i < cfg->n_amqp_channels; i++) {
        pt_amqp_channel_cfg_t *a = &cfg->amqp_channels[i];
        free(a->channel.name);
        free(a->channel.service);
        free(a->channel.data_format);
        free(a->queue);
        pt_amqp_endpoint_free(&a->ep);
    }
    free(cfg->amqp_channels);
}

static int pt__no_file(void *ud, const char *path, const struct stat *st)
{
    return 0;
}

static int pt__parse(pt__cfg_ctx_t *c, pt_config_t *cfg)
{
    static const char *const keys[] = {"server", "log",      "lua",      "services", "channels",
                                       "admin",  "outgoing", "security", "cache",    "scheduler",
                                       "audit",  "tracing",  "cluster",  NULL};
    yaml_node_t *root = yaml_document_get_root_node(c->y.doc);
    if (!root) return pt_yaml_fail(&c->y, NULL, "the file is empty");
    if (pt_yaml_check_keys(&c->y, root, "top level", keys) != 0) return -1;
    /* only a cluster compares it, and the digest's first use loads much of
     * libcrypto: a node without cluster: leaves it empty */
    if (pt_yaml_get(&c->y, root, "cluster") && pt_config_checksum(&c->y, root, cfg->checksum) != 0)
        return pt_yaml_fail(&c->y, root, "out of memory");
    yaml_node_t *v;
    if ((v = pt_yaml_get(&c->y, root, "server")) && pt__server(c, v, cfg) != 0) return -1;
    if ((v = pt_yaml_get(&c->y, root, "cluster")) &&
        pt_config_cluster_parse(&c->y, v, cfg->listen_port, &cfg->cluster) != 0)
        return -1;
    if ((v = pt_yaml_get(&c->y, root, "log"))) {
        static const char *const log_keys[] = {"level", "access", "redact_query", NULL};
        if (pt_yaml_check_keys(&c->y, v, "log", log_keys) != 0) return -1;
        if (pt_config_obs_redact_query(&c->y, pt_yaml_get(&c->y, v, "redact_query"), &cfg->obs))
            return -1;
        yaml_node_t *acc = pt_yaml_get(&c->y, v, "access");
        if (acc) {
            free(cfg->access_log);
            cfg->access_log = NULL; /* a refused value must not leave it freed twice */
            if (pt_yaml_string(&c->y, acc, "log.access", &cfg->access_log) != 0) return -1;
            if (strcmp(cfg->access_log, "stdout") != 0 && strcmp(cfg->access_log, "off") != 0) {
                char *abs = pt_yaml_path(&c->y, cfg->access_log);
                free(cfg->access_log);
                cfg->access_log = abs;
            }
        }
        yaml_node_t *lv = pt_yaml_get(&c->y, v, "level");
        if (lv &&
            (!pt_yaml_scalar(lv) || pt_log_parse_level(pt_yaml_scalar(lv), &cfg->log_level) != 0))
            return pt_yaml_fail(&c->y, lv, "log.level: expected debug, info, warn or error");
    }
    if ((v = pt_yaml_get(&c->y, root, "admin"))) {
        static const char *const admin_keys[] = {"listen", "users", "open_probes", NULL};
        if (pt_yaml_check_keys(&c->y, v, "admin", admin_keys) != 0 ||
            pt__listen(c, pt_yaml_get(&c->y, v, "listen"), "admin.listen", &cfg->admin_host,
                       &cfg->admin_port) != 0 ||
            pt_config_admin_parse(&c->y, v, &cfg->admin) != 0)
            return -1;
    }
    if ((v = pt_yaml_get(&c->y, root, "lua"))) {
        static const char *const lua_keys[] = {
            "path", "gc_pause", "load_timeout", "request_timeout", "lib_dirs", NULL};
        yaml_node_t *gp = pt_yaml_get(&c->y, v, "gc_pause");
        yaml_node_t *lt = pt_yaml_get(&c->y, v, "load_timeout");
        yaml_node_t *rt = pt_yaml_get(&c->y, v, "request_timeout");
        if (pt_yaml_check_keys(&c->y, v, "lua", lua_keys) != 0 ||
            (gp && pt__int(c, gp, "lua.gc_pause", 100, 1000, &cfg->lua_gc_pause) != 0) ||
            (lt && pt__duration_in(c, lt, "lua.load_timeout", 10, PT__MIN,
                                   &cfg->lua_load_timeout_ms) != 0) ||
            (rt && pt__duration_in(c, rt, "lua.request_timeout", 0, PT__HOUR,
                                   &cfg->lua_request_timeout_ms) != 0))
            return -1;
        yaml_node_t *lp = pt_yaml_get(&c->y, v, "path");
        if (lp) {
            char *p = NULL;
            if (pt_yaml_string(&c->y, lp, "lua.path", &p) != 0) return -1;
            free(cfg->lua_path);
            cfg->lua_path = pt_yaml_path(&c->y, p);
            free(p);
            /* an explicit path wins over the search of pt_home: it must hold
             * the library, or the error says what it would have found */
            char probe[PATH_MAX + 32];
            snprintf(probe, sizeof probe, "%s/portico/runtime.lua", cfg->lua_path);
            if (access(probe, R_OK) != 0) {
                char *home = NULL, why[1024];
                int found = pt_home_lua(&home, why, sizeof why) == 0;
                int rc = pt_yaml_fail(&c->y, lp,
                                      "lua.path: %s holds no portico/runtime.lua (portico's Lua "
                                      "library): %s",
                                      cfg->lua_path,
                                      found ? "without lua.path the one found is used: " : why);
                if (found) {
                    size_t n = strlen(c->y.err);
                    snprintf(c->y.err + n, c->y.errlen > n ? c->y.errlen - n : 0, "%s", home);
                }
                free(home);
                return rc;
            }
        }
        yaml_node_t *ld = pt_yaml_get(&c->y, v, "lib_dirs");
        if (ld && pt__lib_dirs(c, ld, cfg) != 0) return -1;
    }
    if ((v = pt_yaml_get(&c->y, root, "services"))) {
        static const char *const svc_keys[] = {"dirs", "watch_interval", NULL};
        yaml_node_t *wi = pt_yaml_get(&c->y, v, "watch_interval");
        if (wi && pt__duration_in(c, wi, "services.watch_interval", 10, PT__MIN,
                                  &cfg->watch_interval_ms) != 0)
            return -1;
        if (pt_yaml_check_keys(&c->y, v, "services", svc_keys) != 0 ||
            pt__string_list(c, pt_yaml_get(&c->y, v, "dirs"), "services.dirs", &cfg->service_dirs,
                            &cfg->n_service_dirs) != 0)
            return -1;
        for (size_t i = 0; i < cfg->n_service_dirs; i++) {
            char *abs = pt_yaml_path(&c->y, cfg->service_dirs[i]);
            free(cfg->service_dirs[i]);
            cfg->service_dirs[i] = abs;
            if (access(abs, R_OK | X_OK) != 0)
                return pt_yaml_fail(&c->y, pt_yaml_get(&c->y, v, "dirs"),
                                    "services.dirs: cannot read directory %s", abs);
            /* the watcher would leave a loop out at every scan: say so now */
            char problem[256];
            char *one[] = {abs};
            if (pt_walk_files(one, 1, pt__no_file, NULL, problem, sizeof problem) == -2)
                return pt_yaml_fail(&c->y, pt_yaml_item(&c->y, pt_yaml_get(&c->y, v, "dirs"), i),
                                    "services.dirs: %s", problem);
        }
    }
    if (pt_config_obs_audit(&c->y, pt_yaml_get(&c->y, root, "audit"), &cfg->obs) != 0) return -1;
    if (pt_config_cache_parse(&c->y, pt_yaml_get(&c->y, root, "cache"),
                              cfg->cluster.on ? cfg->cluster.key_prefix : NULL, &cfg->caches) != 0)
        return -1;
    if (pt_config_tracing_parse(&c->y, pt_yaml_get(&c->y, root, "tracing"), &cfg->tracing) != 0)
        return -1;
    if (!cfg->lib_dirs && pt__default_lib_dirs(cfg) != 0)
        return pt_yaml_fail(&c->y, root, "out of memory");
    if ((v = pt_yaml_get(&c->y, root, "outgoing")) && !pt_yaml_is_null(v) &&
        pt__outgoing(c, v, cfg) != 0)
        return -1;
    if (pt_security_parse(c->y.doc, pt_yaml_get(&c->y, root, "security"), c->y.file, cfg->dir,
                          &cfg->security, c->y.err, c->y.errlen) != 0)
        return -1;
    c->security = cfg->security;
    pt__cas_ud_t cas = {c, cfg};
    if (pt_security_each_client_ca(cfg->security, pt__client_cas, &cas) != 0) return -1;
    if ((v = pt_yaml_get(&c->y, root, "channels")) && !pt_yaml_is_null(v) &&
        pt__channels(c, v, cfg) != 0)
        return -1;
    if ((v = pt_yaml_get(&c->y, root, "scheduler")) &&
        pt_config_scheduler_parse(&c->y, v, &cfg->scheduler) != 0)
        return -1;
    for (size_t i = 0; i < cfg->obs.n_audit_channels; i++) { /* a typo would audit nothing */
        size_t k = 0;
        while (k < cfg->n_channels && strcmp(cfg->channels[k].name, cfg->obs.audit_channels[i]))
            k++;
        if (k == cfg->n_channels)
            return pt_yaml_fail(&c->y, pt_yaml_get(&c->y, root, "audit"),
                                "audit.channels: no channel is called '%s'",
                                cfg->obs.audit_channels[i]);
    }
    if (c->rl_cluster_at && !pt_yaml_get(&c->y, root, "cluster"))
        return pt_yaml_fail(&c->y, c->rl_cluster_at,
                            "%s: cluster needs a cluster: section (the Redis the nodes share: "
                            "docs/cluster-ratelimit.md)",
                            c->rl_cluster_key);
    return 0;
}

/* Parses text as the config file path (which names it in messages and
 * anchors its relative paths). */
static int pt__load(const char *path, const char *text, size_t len, pt_config_t **out, char *err,
                    size_t errlen)
{
    pt_config_t *cfg = calloc(1, sizeof *cfg);
    pt__cfg_ctx_t c = {.y = {.file = path, .err = err, .errlen = errlen}};
    int rc = -1;

    if (!cfg) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    cfg->path = strdup(path);
    char *tmp = strdup(path);
    cfg->dir = strdup(dirname(tmp));
    free(tmp);
    cfg->listen_host = strdup("127.0.0.1");
    cfg->listen_port = 11223;
    cfg->max_connections = 10000;
    cfg->max_header_bytes = 16384;
    cfg->max_body_bytes = 1024 * 1024;
    cfg->header_timeout_ms = 10000;
    cfg->body_timeout_ms = 10000;
    cfg->body_deadline_ms = 60000;
    cfg->idle_timeout_ms = 60000;
    cfg->drain_timeout_ms = 30000;
    cfg->log_level = PT_LOG_INFO;
    cfg->access_log = strdup("off");
    cfg->watch_interval_ms = 200;
    cfg->lua_gc_pause = 400;
    cfg->lua_load_timeout_ms = 1000;
    cfg->lua_request_timeout_ms = 0;

    c.y.doc = &c.doc;
    c.y.dir = cfg->dir;
    if (pt_yaml_load(path, text, len, &c.doc, err, errlen) == 0) {
        rc = pt__parse(&c, cfg);
        yaml_document_delete(&c.doc);
    }
    /* no lua.path: the library beside the binary or under the prefix */
    if (rc == 0 && !cfg->lua_path && pt_home_lua(&cfg->lua_path, err, errlen) != 0) rc = -1;
    if (rc != 0) {
        pt_config_free(cfg);
        return -1;
    }
    *out = cfg;
    return 0;
}

int pt_config_load(const char *path, pt_config_t **out, char *err, size_t errlen)
{
    char *text, why[128];
    size_t len;
    if (pt_read_small_file(path, PT_CONFIG_MAX_BYTES, &text, &len, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, why);
        return -1;
    }
    int rc = pt__load(path, text, len, out, err, errlen);
    free(text);
    return rc;
}

int pt_config_admin_address(const char *path, char **host, int *port, char *err, size_t errlen)
{
    char *text, why[128];
    size_t len;
    *host = NULL;
    if (pt_read_small_file(path, PT_CONFIG_MAX_BYTES, &text, &len, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, why);
        return -1;
    }
    pt__cfg_ctx_t c = {.y = {.file = path, .dir = ".", .err = err, .errlen = errlen}};
    c.y.doc = &c.doc;
    int rc = pt_yaml_load(path, text, len, &c.doc, err, errlen);
    free(text);
    if (rc != 0) return -1;
    yaml_node_t *root = yaml_document_get_root_node(&c.doc);
    yaml_node_t *admin =
        root && root->type == YAML_MAPPING_NODE ? pt_yaml_get(&c.y, root, "admin") : NULL;
    yaml_node_t *listen =
        admin && admin->type == YAML_MAPPING_NODE ? pt_yaml_get(&c.y, admin, "listen") : NULL;
    if (!listen)
        rc = pt_yaml_fail(&c.y, admin ? admin : root, "no admin.listen");
    else
        rc = pt__listen(&c, listen, "admin.listen", host, port);
    yaml_document_delete(&c.doc);
    return rc;
}

int pt_config_load_text(const char *path, const char *text, size_t len, pt_config_t **out,
                        char *err, size_t errlen)
{
    if (len > PT_CONFIG_MAX_BYTES) {
        snprintf(err, errlen, "%s: larger than %d bytes", path, PT_CONFIG_MAX_BYTES);
        return -1;
    }
    return pt__load(path, text, len, out, err, errlen);
}

static void pt__free_list(char **list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        free(list[i]);
    free(list);
}

void pt_config_free(pt_config_t *cfg)
{
    if (!cfg) return;
    for (size_t i = 0; i < cfg->n_channels; i++) {
        pt_channel_t *ch = &cfg->channels[i];
        free(ch->name);
        free(ch->url_path);
        free(ch->service);
        free(ch->data_format);
        free(ch->ws_token_param);
        pt__free_list(ch->service_list, ch->n_service_list);
        for (size_t j = 0; j < ch->n_upstreams; j++)
            pt__upstream_free(&ch->upstreams[j]);
        free(ch->upstreams);
        pt_amqp_endpoint_free(&ch->bus_ep);
    }
    free(cfg->channels);
    for (size_t i = 0; i < cfg->n_http_out; i++)
        pt__upstream_free(&cfg->http_out[i]);
    free(cfg->http_out);
    pt_security_free(cfg->security);
    pt_config_cache_free(&cfg->caches);
    pt_config_obs_free(&cfg->obs);
    pt_trace_cfg_free(&cfg->tracing);
    pt_config_scheduler_free(&cfg->scheduler);
    pt_config_cluster_free(&cfg->cluster);
    pt_config_admin_free(&cfg->admin);
    pt__amqp_free(cfg);
    pt__free_list(cfg->service_dirs, cfg->n_service_dirs);
    pt__free_list(cfg->lib_dirs, cfg->n_lib_dirs);
    free(cfg->path);
    free(cfg->dir);
    free(cfg->listen_host);
    free(cfg->tls_listen_host);
    pt_tls_ctx_unref(cfg->tls);
    free(cfg->admin_host);
    free(cfg->access_log);
    free(cfg->lua_path);
    free(cfg);
}
