#include "pt_cluster.h"
#include "pt_log.h"

#include <jansson.h>
#include <sodium.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

struct pt_cluster_s {
    uv_loop_t *loop;
    pt_redis_t *r;
    uv_timer_t timer;
    char *name, *prefix, *redis_url, *address, *admin;
    char checksum[65];
    char instance[17]; /* random per process: two nodes given one name tell apart */
    char started_at[32];
    uint64_t heartbeat_ms;
    char **records; /* the last view: JSON texts */
    size_t n_records;
    uint64_t view_at; /* uv_now of the last view; 0: none yet */
    int in_flight;    /* a heartbeat's commands are pending */
    int stopping;
    int refs; /* the timer, and the stop's commands */
    int warned_twin;
};

static int64_t pt__wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* RFC 3339 UTC to the millisecond ("2026-12-02T13:08:49.609Z"). */
static void pt__now_text(char out[32])
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03ldZ", (long)(tv.tv_usec / 1000));
}

static void pt__key(pt_cluster_t *c, const char *name, char *out, size_t len)
{
    snprintf(out, len, "%snode:%s", c->prefix, name);
}

static void pt__unref(pt_cluster_t *c)
{
    if (--c->refs > 0) return;
    pt_redis_free(c->r);
    for (size_t i = 0; i < c->n_records; i++)
        free(c->records[i]);
    free(c->records);
    free(c->name);
    free(c->prefix);
    free(c->redis_url);
    free(c->address);
    free(c->admin);
    free(c);
}

/* ---- the heartbeat ---- */

static void pt__set_view(pt_cluster_t *c, const struct redisReply *rep)
{
    char **records = calloc(rep->elements ? rep->elements : 1, sizeof *records);
    if (!records) return;
    size_t n = 0;
    for (size_t i = 0; i < rep->elements; i++) {
        const struct redisReply *e = rep->element[i];
        if (e->type != REDIS_REPLY_STRING) continue; /* expired: the node is gone */
        if (!(records[n] = strndup(e->str, e->len))) break;
        n++;
    }
    for (size_t i = 0; i < c->n_records; i++)
        free(c->records[i]);
    free(c->records);
    c->records = records;
    c->n_records = n;
    c->view_at = uv_now(c->loop);
    /* another process writing this node's name: the views would flicker */
    for (size_t i = 0; i < n; i++) {
        json_t *j = json_loads(records[i], 0, NULL);
        const char *name = json_string_value(json_object_get(j, "name"));
        const char *inst = json_string_value(json_object_get(j, "instance"));
        if (name && inst && !strcmp(name, c->name) && strcmp(inst, c->instance) != 0 &&
            !c->warned_twin) {
            c->warned_twin = 1;
            pt_log_warn("cluster: another process also registers as node '%s' (pid %lld): give "
                        "each node its own cluster.node",
                        c->name, (long long)json_integer_value(json_object_get(j, "pid")));
        }
        json_decref(j);
    }
}

static void pt__on_records(void *arg, const struct redisReply *rep, int err)
{
    pt_cluster_t *c = arg;
    c->in_flight = 0;
    if (!err && rep->type == REDIS_REPLY_ARRAY) pt__set_view(c, rep);
    pt__unref(c);
}

static void pt__on_index(void *arg, const struct redisReply *rep, int err)
{
    pt_cluster_t *c = arg;
    if (err || rep->type != REDIS_REPLY_ARRAY || c->stopping) {
        c->in_flight = 0;
        pt__unref(c);
        return;
    }
    size_t n = rep->elements;
    if (n == 0) {
        c->in_flight = 0;
        pt__unref(c);
        return;
    }
    const char **argv = calloc(n + 1, sizeof *argv);
    char **keys = calloc(n, sizeof *keys);
    int rc = PT_REDIS_ENOMEM;
    if (argv && keys) {
        argv[0] = "MGET";
        size_t k = 0;
        for (; k < n; k++) {
            const struct redisReply *e = rep->element[k];
            size_t len = strlen(c->prefix) + 5 + e->len + 1;
            if (e->type != REDIS_REPLY_STRING || !(keys[k] = malloc(len))) break;
            snprintf(keys[k], len, "%snode:%.*s", c->prefix, (int)e->len, e->str);
            argv[k + 1] = keys[k];
        }
        if (k == n) rc = pt_redis_command(c->r, (int)n + 1, argv, NULL, pt__on_records, c);
    }
    for (size_t k = 0; keys && k < n; k++)
        free(keys[k]);
    free(keys);
    free(argv);
    if (rc != 0) {
        c->in_flight = 0;
        pt__unref(c);
    }
}

static void pt__ignore(void *arg, const struct redisReply *rep, int err)
{
    (void)arg, (void)rep, (void)err;
}

static void pt__record(pt_cluster_t *c, pt_buf_t *b)
{
    char now[32];
    pt__now_text(now);
    pt_buf_puts(b, "{\"name\":\"");
    pt_buf_json_escape(b, c->name, strlen(c->name));
    pt_buf_printf(b,
                  "\",\"instance\":\"%s\",\"version\":\"%s\",\"checksum\":\"%s\","
                  "\"started_at\":\"%s\",\"updated_at\":\"%s\",\"address\":\"",
                  c->instance, PT_VERSION, c->checksum, c->started_at, now);
    pt_buf_json_escape(b, c->address, strlen(c->address));
    pt_buf_puts(b, "\",\"admin\":");
    if (c->admin) {
        pt_buf_puts(b, "\"");
        pt_buf_json_escape(b, c->admin, strlen(c->admin));
        pt_buf_puts(b, "\"");
    } else {
        pt_buf_puts(b, "null");
    }
    pt_buf_printf(b, ",\"pid\":%ld,\"heartbeat_ms\":%llu}", (long)getpid(),
                  (unsigned long long)c->heartbeat_ms);
}

/* One round trip: SET the record, ZADD and prune the index, read it back;
 * the records' MGET follows its answer. */
static void pt__beat(pt_cluster_t *c)
{
    if (c->in_flight || c->stopping) return;
    char key[512], ttl[32], score[32], old[32];
    pt__key(c, c->name, key, sizeof key);
    size_t plen = strlen(c->prefix);
    char index[PT_CLUSTER_PREFIX_MAX + 8];
    snprintf(index, sizeof index, "%snodes", c->prefix);
    (void)plen;
    int64_t now = pt__wall_ms();
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)(3 * c->heartbeat_ms));
    snprintf(score, sizeof score, "%lld", (long long)now);
    snprintf(old, sizeof old, "(%lld", (long long)(now - 10 * (int64_t)c->heartbeat_ms));
    pt_buf_t rec = {0};
    pt__record(c, &rec);
    if (!rec.data) return;
    const char *set[] = {"SET", key, rec.data, "PX", ttl};
    size_t set_lens[] = {3, strlen(key), rec.len, 2, strlen(ttl)};
    const char *zadd[] = {"ZADD", index, score, c->name};
    const char *prune[] = {"ZREMRANGEBYSCORE", index, "-inf", old};
    const char *range[] = {"ZRANGE", index, "0", "-1"};
    int rc = pt_redis_command(c->r, 5, set, set_lens, pt__ignore, NULL);
    pt_buf_free(&rec);
    if (rc != 0) return; /* down: the next heartbeat tries again */
    if (pt_redis_command(c->r, 4, zadd, NULL, pt__ignore, NULL) != 0 ||
        pt_redis_command(c->r, 4, prune, NULL, pt__ignore, NULL) != 0)
        return;
    c->refs++;
    c->in_flight = 1;
    if (pt_redis_command(c->r, 4, range, NULL, pt__on_index, c) != 0) {
        c->in_flight = 0;
        c->refs--;
    }
}

static void pt__on_timer(uv_timer_t *t)
{
    pt__beat(t->data);
}

pt_cluster_t *pt_cluster_start(uv_loop_t *loop, pt_redis_t *r, const pt_config_t *cfg)
{
    pt_cluster_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    char addr[300];
    c->loop = loop;
    c->heartbeat_ms = cfg->cluster.heartbeat_ms ? cfg->cluster.heartbeat_ms : 2000;
    c->name = strdup(cfg->cluster.node);
    c->prefix = strdup(cfg->cluster.key_prefix);
    c->redis_url = strdup(cfg->cluster.redis);
    snprintf(addr, sizeof addr, "%s:%d", cfg->listen_host, cfg->listen_port);
    c->address = strdup(addr);
    if (cfg->admin_host) {
        snprintf(addr, sizeof addr, "%s:%d", cfg->admin_host, cfg->admin_port);
        c->admin = strdup(addr);
    }
    if (!c->name || !c->prefix || !c->redis_url || !c->address || (cfg->admin_host && !c->admin)) {
        free(c->name), free(c->prefix), free(c->redis_url), free(c->address), free(c->admin);
        free(c);
        return NULL;
    }
    memcpy(c->checksum, cfg->checksum, sizeof c->checksum);
    unsigned char rnd[8];
    randombytes_buf(rnd, sizeof rnd);
    for (int i = 0; i < 8; i++)
        snprintf(c->instance + 2 * i, 3, "%02x", rnd[i]);
    pt__now_text(c->started_at);
    c->r = r;
    c->refs = 1; /* the timer */
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, pt__on_timer, 0, c->heartbeat_ms);
    pt_log_info("cluster: node '%s' registers in %s every %llums", c->name, c->redis_url,
                (unsigned long long)c->heartbeat_ms);
    return c;
}

void pt_cluster_config(pt_cluster_t *c, const pt_config_t *cfg)
{
    if (!c || !memcmp(c->checksum, cfg->checksum, sizeof c->checksum)) return;
    memcpy(c->checksum, cfg->checksum, sizeof c->checksum);
    pt__beat(c);
}

static void pt__timer_closed(uv_handle_t *h)
{
    pt__unref(h->data);
}

static void pt__on_deleted(void *arg, const struct redisReply *rep, int err)
{
    (void)rep, (void)err;
    pt__unref(arg);
}

void pt_cluster_stop(pt_cluster_t *c)
{
    if (!c || c->stopping) return;
    c->stopping = 1;
    char key[512], index[PT_CLUSTER_PREFIX_MAX + 8];
    pt__key(c, c->name, key, sizeof key);
    snprintf(index, sizeof index, "%snodes", c->prefix);
    const char *del[] = {"DEL", key};
    const char *zrem[] = {"ZREM", index, c->name};
    c->refs++;
    if (pt_redis_command(c->r, 3, zrem, NULL, pt__ignore, NULL) != 0 ||
        pt_redis_command(c->r, 2, del, NULL, pt__on_deleted, c) != 0)
        c->refs--;
    uv_close((uv_handle_t *)&c->timer, pt__timer_closed);
}

/* ---- the view ---- */

int pt_cluster_view_json(const char *const *records, size_t n, const char *self,
                         const char *checksum, const char *redis, int redis_up,
                         long long updated_ms_ago, pt_buf_t *out)
{
    json_t *nodes = json_array(), *counts = json_object();
    if (!nodes || !counts) goto oom;
    for (size_t i = 0; i < n; i++) {
        json_t *j = records[i] ? json_loads(records[i], 0, NULL) : NULL;
        if (!json_is_object(j) || !json_is_string(json_object_get(j, "name"))) {
            json_decref(j);
            continue;
        }
        const char *sum = json_string_value(json_object_get(j, "checksum"));
        if (!sum) sum = "";
        json_object_set_new(counts, sum,
                            json_integer(json_integer_value(json_object_get(counts, sum)) + 1));
        json_array_append_new(nodes, j);
    }
    /* the checksum most nodes run; a tie goes to this node's */
    const char *major = checksum, *k;
    json_int_t best = checksum ? json_integer_value(json_object_get(counts, checksum)) : 0;
    json_t *v;
    json_object_foreach(counts, k, v)
    {
        if (json_integer_value(v) > best) best = json_integer_value(v), major = k;
    }
    size_t i;
    json_t *node;
    json_array_foreach(nodes, i, node)
    {
        const char *name = json_string_value(json_object_get(node, "name"));
        const char *sum = json_string_value(json_object_get(node, "checksum"));
        json_object_set_new(node, "self", json_boolean(self && !strcmp(name, self)));
        json_object_set_new(node, "config_differs",
                            json_boolean(!major || !sum || strcmp(sum, major) != 0));
    }
    json_t *doc =
        json_pack("{s:s?,s:s?,s:s?,s:b,s:I,s:b,s:O}", "node", self, "checksum", checksum, "redis",
                  redis, "redis_up", redis_up, "updated_ms_ago", (json_int_t)updated_ms_ago,
                  "configs_differ", json_object_size(counts) > 1, "nodes", nodes);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    json_decref(nodes);
    json_decref(counts);
    if (!text) return -1;
    int rc = pt_buf_puts(out, text);
    free(text);
    return rc;
oom:
    json_decref(nodes);
    json_decref(counts);
    return -1;
}

void pt_cluster_json(pt_cluster_t *c, pt_buf_t *out)
{
    long long ago = c->view_at ? (long long)(uv_now(c->loop) - c->view_at) : -1;
    if (pt_cluster_view_json((const char *const *)c->records, c->n_records, c->name, c->checksum,
                             c->redis_url, pt_redis_up(c->r), ago, out) != 0)
        pt_buf_puts(out, "{\"error\":{\"status\":500,\"message\":\"out of memory\"}}");
}
