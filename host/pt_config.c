#include "pt_config.h"
#include "pt_util.h"

#include <llhttp.h>
#include <yaml.h>

#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    yaml_document_t doc;
    const char *file;
    char *err;
    size_t errlen;
} pt__cfg_ctx_t;

static int pt__fail(pt__cfg_ctx_t *c, yaml_node_t *node, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "%s:%lu: %s", c->file,
             node ? (unsigned long)node->start_mark.line + 1 : 1ul, msg);
    return -1;
}

static const char *pt__scalar(yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int pt__is_null(yaml_node_t *n)
{
    const char *s = pt__scalar(n);
    return n == NULL || (s && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                         (strcmp(s, "") == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0));
}

/* Walks a mapping; every key must be one of allowed (NULL-terminated). */
static int pt__check_keys(pt__cfg_ctx_t *c, yaml_node_t *map, const char *what,
                          const char *const *allowed)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return pt__fail(c, map, "%s: expected a mapping", what);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(&c->doc, p->key);
        const char *ks = pt__scalar(k);
        int ok = 0;
        for (const char *const *a = allowed; ks && *a; a++)
            ok |= strcmp(ks, *a) == 0;
        if (!ok)
            return pt__fail(c, k, "%s: unknown key '%s'", what, ks ? ks : "?");
    }
    return 0;
}

static yaml_node_t *pt__get(pt__cfg_ctx_t *c, yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const char *ks = pt__scalar(yaml_document_get_node(&c->doc, p->key));
        if (ks && strcmp(ks, key) == 0)
            return yaml_document_get_node(&c->doc, p->value);
    }
    return NULL;
}

static int pt__string(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, char **out)
{
    const char *s = pt__scalar(n);
    if (!s || pt__is_null(n))
        return pt__fail(c, n, "%s: expected a string", what);
    *out = strdup(s);
    return *out ? 0 : pt__fail(c, n, "out of memory");
}

static int pt__size(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, uint64_t *out)
{
    const char *s = pt__scalar(n);
    if (!s || pt_parse_size(s, out) != 0)
        return pt__fail(c, n, "%s: expected a size such as 16384 or \"1MB\"", what);
    return 0;
}

static int pt__duration(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, uint64_t *out)
{
    const char *s = pt__scalar(n);
    if (!s || pt_parse_duration_ms(s, out) != 0)
        return pt__fail(c, n, "%s: expected a duration such as 10, \"500ms\" or \"2m\"", what);
    return 0;
}

static int pt__string_list(pt__cfg_ctx_t *c, yaml_node_t *n, const char *what, char ***out,
                           size_t *count)
{
    if (!n || n->type != YAML_SEQUENCE_NODE)
        return pt__fail(c, n, "%s: expected a list", what);
    size_t len = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    char **list = calloc(len + 1, sizeof *list);
    if (!list)
        return pt__fail(c, n, "out of memory");
    *out = list;
    *count = 0;
    for (size_t i = 0; i < len; i++) {
        yaml_node_t *item = yaml_document_get_node(&c->doc, n->data.sequence.items.start[i]);
        if (pt__string(c, item, what, &list[i]) != 0)
            return -1;
        (*count)++;
    }
    return 0;
}

int pt_config_method(const char *name)
{
    static const struct {
        const char *name;
        int method;
    } methods[] = {{"GET", HTTP_GET},         {"POST", HTTP_POST},   {"PUT", HTTP_PUT},
                   {"DELETE", HTTP_DELETE},   {"PATCH", HTTP_PATCH}, {"HEAD", HTTP_HEAD},
                   {"OPTIONS", HTTP_OPTIONS}};
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (strcasecmp(name, methods[i].name) == 0)
            return methods[i].method;
    return -1;
}

static char *pt__resolve(const char *dir, const char *p)
{
    char buf[PATH_MAX];
    if (p[0] == '/')
        return strdup(p);
    snprintf(buf, sizeof buf, "%s/%s", dir, p);
    return strdup(buf);
}

static int pt__channel(pt__cfg_ctx_t *c, yaml_node_t *n, pt_channel_type_t type, size_t idx,
                       pt_channel_t *ch)
{
    static const char *const rest_keys[] = {"name",     "url_path",    "methods",
                                            "service",  "security",    "data_format", NULL};
    static const char *const gw_keys[] = {
        "name", "url_path", "methods", "gateway_service_list", "security", "data_format", NULL};
    char what[64];
    snprintf(what, sizeof what, "channels.%s[%zu]", type == PT_CHANNEL_REST ? "rest" : "gateway",
             idx);
    if (pt__check_keys(c, n, what, type == PT_CHANNEL_REST ? rest_keys : gw_keys) != 0)
        return -1;
    ch->type = type;
    ch->line = (int)n->start_mark.line + 1;
    char key[96];
    snprintf(key, sizeof key, "%s.name", what);
    if (pt__string(c, pt__get(c, n, "name"), key, &ch->name) != 0)
        return -1;
    snprintf(key, sizeof key, "%s.url_path", what);
    if (pt__string(c, pt__get(c, n, "url_path"), key, &ch->url_path) != 0)
        return -1;
    if (ch->url_path[0] != '/')
        return pt__fail(c, pt__get(c, n, "url_path"), "%s: must start with '/'", key);

    yaml_node_t *m = pt__get(c, n, "methods");
    if (!m) {
        ch->methods = (1ull << HTTP_GET) | (1ull << HTTP_POST);
    } else {
        char **names = NULL;
        size_t count = 0;
        snprintf(key, sizeof key, "%s.methods", what);
        int rc = pt__string_list(c, m, key, &names, &count);
        for (size_t i = 0; rc == 0 && i < count; i++) {
            int method = pt_config_method(names[i]);
            if (method < 0)
                rc = pt__fail(c, m, "%s: unknown method '%s'", key, names[i]);
            else
                ch->methods |= 1ull << method;
        }
        for (size_t i = 0; names && i < count; i++)
            free(names[i]);
        free(names);
        if (rc != 0)
            return -1;
        if (ch->methods == 0)
            return pt__fail(c, m, "%s: empty", key);
    }
    if (ch->methods & (1ull << HTTP_GET))
        ch->methods |= 1ull << HTTP_HEAD;

    if (type == PT_CHANNEL_REST) {
        snprintf(key, sizeof key, "%s.service", what);
        if (pt__string(c, pt__get(c, n, "service"), key, &ch->service) != 0)
            return -1;
    } else {
        snprintf(key, sizeof key, "%s.gateway_service_list", what);
        if (pt__string_list(c, pt__get(c, n, "gateway_service_list"), key, &ch->service_list,
                            &ch->n_service_list) != 0)
            return -1;
        if (!strstr(ch->url_path, "{service}"))
            return pt__fail(c, pt__get(c, n, "url_path"),
                            "%s.url_path: a gateway path needs a {service} segment", what);
    }
    yaml_node_t *df = pt__get(c, n, "data_format");
    if (df && !pt__is_null(df)) {
        snprintf(key, sizeof key, "%s.data_format", what);
        if (pt__string(c, df, key, &ch->data_format) != 0)
            return -1;
        if (strcmp(ch->data_format, "json") != 0)
            return pt__fail(c, df, "%s: only \"json\" is supported", key);
    } else {
        ch->data_format = strdup("json");
    }
    yaml_node_t *sec = pt__get(c, n, "security");
    if (sec && !pt__is_null(sec))
        return pt__fail(c, sec, "%s.security: no security definition named '%s'", what,
                        pt__scalar(sec) ? pt__scalar(sec) : "?");
    return 0;
}

static int pt__channels(pt__cfg_ctx_t *c, yaml_node_t *n, pt_config_t *cfg)
{
    static const char *const keys[] = {"rest", "gateway", NULL};
    if (pt__check_keys(c, n, "channels", keys) != 0)
        return -1;
    yaml_node_t *lists[2] = {pt__get(c, n, "rest"), pt__get(c, n, "gateway")};
    size_t total = 0;
    for (int t = 0; t < 2; t++) {
        if (!lists[t] || pt__is_null(lists[t]))
            continue;
        if (lists[t]->type != YAML_SEQUENCE_NODE)
            return pt__fail(c, lists[t], "channels.%s: expected a list",
                            t == 0 ? "rest" : "gateway");
        total += (size_t)(lists[t]->data.sequence.items.top - lists[t]->data.sequence.items.start);
    }
    cfg->channels = calloc(total ? total : 1, sizeof *cfg->channels);
    if (!cfg->channels)
        return pt__fail(c, n, "out of memory");
    for (int t = 0; t < 2; t++) {
        if (!lists[t] || pt__is_null(lists[t]))
            continue;
        size_t len =
            (size_t)(lists[t]->data.sequence.items.top - lists[t]->data.sequence.items.start);
        for (size_t i = 0; i < len; i++) {
            yaml_node_t *item =
                yaml_document_get_node(&c->doc, lists[t]->data.sequence.items.start[i]);
            pt_channel_t *ch = &cfg->channels[cfg->n_channels++];
            if (pt__channel(c, item, t == 0 ? PT_CHANNEL_REST : PT_CHANNEL_GATEWAY, i, ch) != 0)
                return -1;
            for (size_t j = 0; j + 1 < cfg->n_channels; j++)
                if (strcmp(cfg->channels[j].name, ch->name) == 0)
                    return pt__fail(c, item, "channel name '%s' is used twice", ch->name);
        }
    }
    return 0;
}

static int pt__listen(pt__cfg_ctx_t *c, yaml_node_t *v, const char *what, char **host, int *port)
{
    const char *s = pt__scalar(v);
    const char *colon = s ? strrchr(s, ':') : NULL;
    char *end;
    long p = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || colon == s || *end != '\0' || p < 0 || p > 65535)
        return pt__fail(c, v, "%s: expected host:port such as 127.0.0.1:11223", what);
    free(*host);
    *host = strndup(s, (size_t)(colon - s));
    *port = (int)p;
    return 0;
}

static int pt__server(pt__cfg_ctx_t *c, yaml_node_t *n, pt_config_t *cfg)
{
    static const char *const keys[] = {"listen",         "workers",        "max_connections",
                                       "max_header_bytes", "max_body_bytes", "header_timeout",
                                       "body_timeout",   "idle_timeout",   "drain_timeout",
                                       NULL};
    if (pt__check_keys(c, n, "server", keys) != 0)
        return -1;
    yaml_node_t *v;
    if ((v = pt__get(c, n, "listen")) &&
        pt__listen(c, v, "server.listen", &cfg->listen_host, &cfg->listen_port) != 0)
        return -1;
    if ((v = pt__get(c, n, "workers"))) {
        const char *s = pt__scalar(v);
        char *end;
        long w = s ? strtol(s, &end, 10) : -1;
        if (!s || *end != '\0' || w < 0 || w > 256)
            return pt__fail(c, v, "server.workers: expected 0 (one per core) to 256");
        cfg->workers = (int)w;
    }
    struct {
        const char *key;
        uint64_t *out;
        int is_duration;
    } fields[] = {{"max_connections", &cfg->max_connections, 0},
                  {"max_header_bytes", &cfg->max_header_bytes, 0},
                  {"max_body_bytes", &cfg->max_body_bytes, 0},
                  {"header_timeout", &cfg->header_timeout_ms, 1},
                  {"body_timeout", &cfg->body_timeout_ms, 1},
                  {"idle_timeout", &cfg->idle_timeout_ms, 1},
                  {"drain_timeout", &cfg->drain_timeout_ms, 1}};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "server.%s", fields[i].key);
        if (!(v = pt__get(c, n, fields[i].key)))
            continue;
        int rc = fields[i].is_duration ? pt__duration(c, v, what, fields[i].out)
                                       : pt__size(c, v, what, fields[i].out);
        if (rc != 0)
            return -1;
    }
    if (cfg->max_header_bytes < 1024)
        return pt__fail(c, pt__get(c, n, "max_header_bytes"),
                        "server.max_header_bytes: at least 1024");
    if (cfg->max_connections < 1)
        return pt__fail(c, pt__get(c, n, "max_connections"), "server.max_connections: at least 1");
    return 0;
}

static int pt__parse(pt__cfg_ctx_t *c, pt_config_t *cfg)
{
    static const char *const keys[] = {"server", "log", "lua", "services", "channels", "admin", NULL};
    yaml_node_t *root = yaml_document_get_root_node(&c->doc);
    if (!root)
        return pt__fail(c, NULL, "the file is empty");
    if (pt__check_keys(c, root, "top level", keys) != 0)
        return -1;
    yaml_node_t *v;
    if ((v = pt__get(c, root, "server")) && pt__server(c, v, cfg) != 0)
        return -1;
    if ((v = pt__get(c, root, "log"))) {
        static const char *const log_keys[] = {"level", "access", NULL};
        if (pt__check_keys(c, v, "log", log_keys) != 0)
            return -1;
        yaml_node_t *acc = pt__get(c, v, "access");
        if (acc) {
            free(cfg->access_log);
            if (pt__string(c, acc, "log.access", &cfg->access_log) != 0)
                return -1;
            if (strcmp(cfg->access_log, "stdout") != 0 && strcmp(cfg->access_log, "off") != 0) {
                char *abs = pt__resolve(cfg->dir, cfg->access_log);
                free(cfg->access_log);
                cfg->access_log = abs;
            }
        }
        yaml_node_t *lv = pt__get(c, v, "level");
        if (lv && (!pt__scalar(lv) || pt_log_parse_level(pt__scalar(lv), &cfg->log_level) != 0))
            return pt__fail(c, lv, "log.level: expected debug, info, warn or error");
    }
    if ((v = pt__get(c, root, "admin"))) {
        static const char *const admin_keys[] = {"listen", NULL};
        if (pt__check_keys(c, v, "admin", admin_keys) != 0 ||
            pt__listen(c, pt__get(c, v, "listen"), "admin.listen", &cfg->admin_host,
                       &cfg->admin_port) != 0)
            return -1;
    }
    if ((v = pt__get(c, root, "lua"))) {
        static const char *const lua_keys[] = {"path", NULL};
        char *p = NULL;
        if (pt__check_keys(c, v, "lua", lua_keys) != 0 ||
            pt__string(c, pt__get(c, v, "path"), "lua.path", &p) != 0)
            return -1;
        free(cfg->lua_path);
        cfg->lua_path = pt__resolve(cfg->dir, p);
        free(p);
    }
    if ((v = pt__get(c, root, "services"))) {
        static const char *const svc_keys[] = {"dirs", NULL};
        if (pt__check_keys(c, v, "services", svc_keys) != 0 ||
            pt__string_list(c, pt__get(c, v, "dirs"), "services.dirs", &cfg->service_dirs,
                            &cfg->n_service_dirs) != 0)
            return -1;
        for (size_t i = 0; i < cfg->n_service_dirs; i++) {
            char *abs = pt__resolve(cfg->dir, cfg->service_dirs[i]);
            free(cfg->service_dirs[i]);
            cfg->service_dirs[i] = abs;
            if (access(abs, R_OK | X_OK) != 0)
                return pt__fail(c, pt__get(c, v, "dirs"),
                                "services.dirs: cannot read directory %s", abs);
        }
    }
    if ((v = pt__get(c, root, "channels")) && !pt__is_null(v) && pt__channels(c, v, cfg) != 0)
        return -1;
    return 0;
}

int pt_config_load(const char *path, pt_config_t **out, char *err, size_t errlen)
{
    pt_config_t *cfg = calloc(1, sizeof *cfg);
    pt__cfg_ctx_t c = {.file = path, .err = err, .errlen = errlen};
    yaml_parser_t parser;
    int rc = -1, have_doc = 0;
    FILE *f = NULL;

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
    cfg->idle_timeout_ms = 60000;
    cfg->drain_timeout_ms = 30000;
    cfg->log_level = PT_LOG_INFO;
    cfg->access_log = strdup("off");
    cfg->lua_path = strdup(PT_LUA_DIR);

    if (!(f = fopen(path, "rb"))) {
        snprintf(err, errlen, "%s: cannot open: %m", path);
        goto done;
    }
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &c.doc)) {
        snprintf(err, errlen, "%s:%lu: YAML error: %s %s", path,
                 (unsigned long)parser.problem_mark.line + 1,
                 parser.problem ? parser.problem : "?", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        goto done;
    }
    have_doc = 1;
    yaml_parser_delete(&parser);
    rc = pt__parse(&c, cfg);

done:
    if (have_doc)
        yaml_document_delete(&c.doc);
    if (f)
        fclose(f);
    if (rc != 0) {
        pt_config_free(cfg);
        return -1;
    }
    *out = cfg;
    return 0;
}

static void pt__free_list(char **list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        free(list[i]);
    free(list);
}

void pt_config_free(pt_config_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n_channels; i++) {
        pt_channel_t *ch = &cfg->channels[i];
        free(ch->name);
        free(ch->url_path);
        free(ch->service);
        free(ch->data_format);
        pt__free_list(ch->service_list, ch->n_service_list);
    }
    free(cfg->channels);
    pt__free_list(cfg->service_dirs, cfg->n_service_dirs);
    free(cfg->path);
    free(cfg->dir);
    free(cfg->listen_host);
    free(cfg->admin_host);
    free(cfg->access_log);
    free(cfg->lua_path);
    free(cfg);
}
