#include "pt_cluster_cli.h"
#include "pt_admin.h"
#include "pt_cluster.h"
#include "pt_config.h"
#include "pt_redis.h"

#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PT__BODY_MAX (1024 * 1024)

/* ---- the registry read from Redis ---- */

typedef struct {
    uv_loop_t loop;
    pt_redis_t *r;
    const pt_config_t *cfg;
    char **records;
    size_t n;
    int done, err;
} pt__read_t;

static void pt__on_records(void *arg, const struct redisReply *rep, int err)
{
    pt__read_t *x = arg;
    x->done = 1;
    if (err || rep->type != REDIS_REPLY_ARRAY) {
        x->err = err ? err : PT_REDIS_EPROTO;
        return;
    }
    x->records = calloc(rep->elements ? rep->elements : 1, sizeof *x->records);
    for (size_t i = 0; x->records && i < rep->elements; i++)
        if (rep->element[i]->type == REDIS_REPLY_STRING)
            x->records[x->n++] = strndup(rep->element[i]->str, rep->element[i]->len);
}

static void pt__on_index(void *arg, const struct redisReply *rep, int err)
{
    pt__read_t *x = arg;
    if (err || rep->type != REDIS_REPLY_ARRAY) {
        x->done = 1;
        x->err = err ? err : PT_REDIS_EPROTO;
        return;
    }
    if (rep->elements == 0) {
        x->done = 1;
        return;
    }
    const char **argv = calloc(rep->elements + 1, sizeof *argv);
    char **keys = calloc(rep->elements, sizeof *keys);
    int rc = PT_REDIS_ENOMEM;
    if (argv && keys) {
        argv[0] = "MGET";
        size_t k = 0;
        for (; k < rep->elements; k++) {
            size_t len = strlen(x->cfg->cluster.key_prefix) + 6 + rep->element[k]->len;
            if (!(keys[k] = malloc(len))) break;
            snprintf(keys[k], len, "%snode:%.*s", x->cfg->cluster.key_prefix,
                     (int)rep->element[k]->len, rep->element[k]->str);
            argv[k + 1] = keys[k];
        }
        if (k == rep->elements)
            rc = pt_redis_command(x->r, (int)k + 1, argv, NULL, pt__on_records, x);
    }
    for (size_t k = 0; keys && k < rep->elements; k++)
        free(keys[k]);
    free(keys);
    free(argv);
    if (rc != 0) {
        x->done = 1;
        x->err = rc;
    }
}

static int pt__from_redis(const pt_config_t *cfg, pt_buf_t *out, char *err, size_t errlen)
{
    pt__read_t x = {.cfg = cfg};
    uv_loop_init(&x.loop);
    x.r = pt_redis_new(&x.loop, &cfg->cluster);
    char index[PT_CLUSTER_PREFIX_MAX + 8];
    snprintf(index, sizeof index, "%snodes", cfg->cluster.key_prefix);
    const char *range[] = {"ZRANGE", index, "0", "-1"};
    int rc = x.r ? pt_redis_command(x.r, 4, range, NULL, pt__on_index, &x) : PT_REDIS_ENOMEM;
    if (rc != 0) x.err = rc, x.done = 1;
    while (!x.done && uv_run(&x.loop, UV_RUN_ONCE))
        ;
    pt_redis_free(x.r);
    uv_run(&x.loop, UV_RUN_DEFAULT);
    uv_loop_close(&x.loop);
    if (x.err == 0 && pt_cluster_view_json((const char *const *)x.records, x.n, cfg->cluster.node,
                                           cfg->checksum, cfg->cluster.redis, 1, 0, out) != 0)
        x.err = PT_REDIS_ENOMEM;
    for (size_t i = 0; i < x.n; i++)
        free(x.records[i]);
    free(x.records);
    if (x.err) {
        snprintf(err, errlen, "cannot read the registry in %s: %s", cfg->cluster.redis,
                 pt_redis_strerror(x.err));
        return -1;
    }
    return 0;
}

/* ---- printing ---- */

static const char *pt__str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "-";
}

static int pt__print(const char *text, const char *source)
{
    json_error_t je;
    json_t *doc = json_loads(text, 0, &je);
    json_t *nodes = json_object_get(doc, "nodes");
    if (!json_is_array(nodes)) {
        fprintf(stderr, "portico: %s answered no node list: %.200s\n", source, text);
        json_decref(doc);
        return 2;
    }
    int differ = json_is_true(json_object_get(doc, "configs_differ"));
    printf("cluster of %s (%s), redis %s%s: %zu node%s%s\n", pt__str(doc, "node"), source,
           pt__str(doc, "redis"), json_is_false(json_object_get(doc, "redis_up")) ? " (down)" : "",
           json_array_size(nodes), json_array_size(nodes) == 1 ? "" : "s",
           differ ? ", configs differ" : ", one config");
    printf("%-24s %-8s %-14s %-22s %-22s %s\n", "NODE", "VERSION", "CONFIG", "STARTED", "ADDRESS",
           "");
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n)
    {
        printf("%-24s %-8s %-14.12s %-22s %-22s %s%s\n", pt__str(n, "name"), pt__str(n, "version"),
               pt__str(n, "checksum"), pt__str(n, "started_at"), pt__str(n, "address"),
               json_is_true(json_object_get(n, "config_differs")) ? "CONFIG DIFFERS" : "",
               json_is_true(json_object_get(n, "self")) ? " (this node)" : "");
    }
    json_decref(doc);
    return differ ? 1 : 0;
}

static int pt__exit_of(const char *text)
{
    json_t *doc = json_loads(text, 0, NULL);
    int rc = !json_is_array(json_object_get(doc, "nodes"))          ? 2
             : json_is_true(json_object_get(doc, "configs_differ")) ? 1
                                                                    : 0;
    json_decref(doc);
    return rc;
}

int pt_cluster_status_cli(const char *config_path, int json, int from_redis)
{
    char err[1024], source[300];
    pt_config_t *cfg = NULL;
    if (pt_config_load(config_path, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "portico: %s\n", err);
        return 2;
    }
    if (!cfg->cluster.on) {
        fprintf(stderr, "portico: %s has no cluster: section\n", config_path);
        pt_config_free(cfg);
        return 2;
    }
    pt_buf_t body = {0};
    int got = 0;
    if (!from_redis && cfg->admin_host) {
        char *text = malloc(PT__BODY_MAX);
        int status = text ? pt_admin_request(cfg->admin_host, cfg->admin_port, "GET", "/cluster",
                                             text, PT__BODY_MAX, err, sizeof err)
                          : -1;
        if (status == 200) {
            pt_buf_puts(&body, text);
            snprintf(source, sizeof source, "admin %s:%d", cfg->admin_host, cfg->admin_port);
            got = 1;
        } else if (status > 0) {
            fprintf(stderr, "portico: GET /cluster on %s:%d answered %d: %.300s\n", cfg->admin_host,
                    cfg->admin_port, status, text);
        } else {
            fprintf(stderr, "portico: %s; reading the registry in Redis\n", err);
        }
        free(text);
    }
    if (!got) {
        if (pt__from_redis(cfg, &body, err, sizeof err) != 0) {
            fprintf(stderr, "portico: %s\n", err);
            pt_buf_free(&body);
            pt_config_free(cfg);
            return 2;
        }
        snprintf(source, sizeof source, "redis");
    }
    int rc;
    if (json) {
        printf("%.*s\n", (int)body.len, body.data);
        rc = pt__exit_of(body.data);
    } else {
        rc = pt__print(body.data, source);
    }
    pt_buf_free(&body);
    pt_config_free(cfg);
    return rc;
}
