#include "pt_server_console.h"
#include "pt_security_config.h"
#include "pt_watch.h"

#include <llhttp.h>
#include <sodium.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t pt__wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pt__hash(const char *source, size_t len, char out[17])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)source, len);
    sodium_bin2hex(out, 17, h, 8);
}

static pt_console_file_t *pt__find(pt_console_t *c, const char *path, int make)
{
    for (size_t i = 0; i < c->n_files; i++)
        if (strcmp(c->files[i].path, path) == 0) return &c->files[i];
    if (!make || c->n_files >= PT_CONSOLE_MAX_FILES) return NULL;
    pt_console_file_t *f = realloc(c->files, (c->n_files + 1) * sizeof *f);
    if (!f) return NULL;
    c->files = f;
    f = &c->files[c->n_files];
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(path))) return NULL;
    c->n_files++;
    return f;
}

static void pt__set(char **slot, const char *v)
{
    free(*slot);
    *slot = v ? strdup(v) : NULL;
}

void pt_console_file_loaded(pt_console_t *c, const char *path, const char *source, size_t len,
                            const pt_lua_t *vm)
{
    pt_console_file_t *f = pt__find(c, path, 1);
    if (!f) return;
    char hash[17];
    pt__hash(source, len, hash);
    if (strcmp(hash, f->hash) != 0 || !f->loaded_ms) {
        memcpy(f->hash, hash, sizeof hash);
        f->loaded_ms = pt__wall_ms();
    }
    pt__set(&f->service, pt_lua_service_of(vm, path));
    pt__set(&f->error, NULL);
}

void pt_console_file_failed(pt_console_t *c, const char *path, const char *why)
{
    pt_console_file_t *f = pt__find(c, path, 1);
    if (!f) return;
    pt__set(&f->error, why);
    f->error_ms = pt__wall_ms();
}

static void pt__drop(pt_console_t *c, size_t i)
{
    free(c->files[i].path);
    free(c->files[i].service);
    free(c->files[i].error);
    c->files[i] = c->files[--c->n_files];
}

void pt_console_file_removed(pt_console_t *c, const char *path)
{
    for (size_t i = 0; i < c->n_files; i++)
        if (strcmp(c->files[i].path, path) == 0) {
            pt__drop(c, i);
            return;
        }
}

void pt_console_scan(pt_console_t *c, const pt_config_t *cfg, const pt_lua_t *vm)
{
    pt_watch_list_t l = {0};
    if (pt_watch_scan(cfg->service_dirs, cfg->n_service_dirs, &l) != 0) return;
    for (size_t i = 0; i < c->n_files;) {
        int seen = 0;
        for (size_t j = 0; j < l.n && !seen; j++)
            seen = strcmp(l.files[j].path, c->files[i].path) == 0;
        if (seen)
            i++;
        else
            pt__drop(c, i);
    }
    for (size_t j = 0; j < l.n; j++) {
        char *src = NULL, err[256];
        size_t len = 0;
        if (pt_lua_read_file(l.files[j].path, &src, &len, err, sizeof err) == 0 &&
            pt_lua_service_of(vm, l.files[j].path))
            pt_console_file_loaded(c, l.files[j].path, src, len, vm);
        else
            pt__find(c, l.files[j].path, 1);
        free(src);
    }
    pt_watch_list_free(&l);
}

void pt_console_reload(pt_console_t *c, const char *source, const char *what, int accepted,
                       uint64_t generation, const char *err)
{
    pt_console_reload_t *r = &c->ring[c->n_reloads % PT_CONSOLE_RELOADS];
    memset(r, 0, sizeof *r);
    r->time_ms = pt__wall_ms();
    snprintf(r->source, sizeof r->source, "%s", source);
    snprintf(r->what, sizeof r->what, "%s", what ? what : "");
    r->accepted = accepted;
    r->generation = generation;
    snprintf(r->error, sizeof r->error, "%s", err ? err : "");
    c->n_reloads++;
}

static void pt__str(pt_buf_t *out, const char *s)
{
    if (!s) {
        pt_buf_puts(out, "null");
        return;
    }
    pt_buf_puts(out, "\"");
    pt_buf_json_escape(out, s, strlen(s));
    pt_buf_puts(out, "\"");
}

static const char *const pt__types[] = {"rest",      "gateway",    "amqp",
                                        "websocket", "http_proxy", "amqp_bus"};

static void pt__upstream(pt_buf_t *out, const pt_upstream_cfg_t *u, const char *kind)
{
    pt_buf_puts(out, "{\"name\":");
    pt__str(out, u->name);
    pt_buf_puts(out, ",\"kind\":");
    pt__str(out, kind);
    pt_buf_printf(out, ",\"tls\":%s,\"max_fails\":%d,\"fail_timeout_ms\":%llu,\"targets\":[",
                  u->tls ? "true" : "false", u->max_fails, (unsigned long long)u->fail_timeout_ms);
    for (size_t t = 0; t < u->n_targets; t++) {
        if (t) pt_buf_puts(out, ",");
        pt__str(out, u->targets[t].display);
    }
    pt_buf_puts(out, "]}");
}

static void pt__channel(pt_buf_t *out, const pt_channel_t *ch)
{
    pt_buf_puts(out, "{\"name\":");
    pt__str(out, ch->name);
    pt_buf_printf(out, ",\"type\":\"%s\",\"path\":", pt__types[ch->type]);
    pt__str(out, ch->url_path);
    pt_buf_puts(out, ",\"methods\":[");
    int first = 1;
    for (int m = 0; m < 64; m++)
        if (ch->methods & (1ull << m)) {
            pt_buf_printf(out, "%s\"%s\"", first ? "" : ",",
                          llhttp_method_name((llhttp_method_t)m));
            first = 0;
        }
    pt_buf_puts(out, "],\"service\":");
    pt__str(out, ch->service);
    pt_buf_puts(out, ",\"services\":[");
    for (size_t i = 0; i < ch->n_service_list; i++) {
        if (i) pt_buf_puts(out, ",");
        pt__str(out, ch->service_list[i]);
    }
    pt_buf_puts(out, "],\"security\":");
    if (ch->security) {
        pt_buf_puts(out, "{\"name\":");
        pt__str(out, pt_security_def_name(ch->security));
        pt_buf_puts(out, ",\"kind\":");
        pt__str(out, pt_security_def_kind(ch->security));
        pt_buf_puts(out, "}");
    } else {
        pt_buf_puts(out, "null");
    }
    if (ch->rate_limit.rate > 0)
        pt_buf_printf(out, ",\"rate_limit\":{\"rate\":%g,\"burst\":%g,\"per_user\":%s}",
                      ch->rate_limit.rate, ch->rate_limit.burst,
                      ch->rate_limit.per_user ? "true" : "false");
    else
        pt_buf_puts(out, ",\"rate_limit\":null");
    pt_buf_puts(out, "}");
}

static void pt__endpoint(pt_buf_t *out, const char *kind, const char *name,
                         const pt_amqp_endpoint_t *ep, const char *queue)
{
    pt_buf_puts(out, "{\"kind\":");
    pt__str(out, kind);
    pt_buf_puts(out, ",\"name\":");
    pt__str(out, name);
    pt_buf_puts(out, ",\"broker\":");
    pt__str(out, ep->display); /* no password: amqp[s]://user@host:port/vhost */
    pt_buf_puts(out, ",\"queue\":");
    pt__str(out, queue);
    pt_buf_puts(out, "}");
}

void pt_console_state(const pt_console_t *c, const pt_config_t *cfg, uint64_t generation,
                      int workers, pt_buf_t *out)
{
    pt_buf_printf(out,
                  "{\"version\":\"%s\",\"generation\":%llu,\"workers\":%d,\"config\":", PT_VERSION,
                  (unsigned long long)generation, workers);
    pt__str(out, cfg->path);
    pt_buf_printf(out, ",\"listen\":\"%s:%d\",\"tls_listen\":", cfg->listen_host, cfg->listen_port);
    if (cfg->tls_listen_host)
        pt_buf_printf(out, "\"%s:%d\"", cfg->tls_listen_host, cfg->tls_listen_port);
    else
        pt_buf_puts(out, "null");
    pt_buf_puts(out, ",\"channels\":[");
    for (size_t i = 0; i < cfg->n_channels; i++) {
        if (i) pt_buf_puts(out, ",");
        pt__channel(out, &cfg->channels[i]);
    }
    for (size_t i = 0; i < cfg->n_amqp_channels; i++) {
        if (i || cfg->n_channels) pt_buf_puts(out, ",");
        pt__channel(out, &cfg->amqp_channels[i].channel);
    }
    pt_buf_puts(out, "],\"upstreams\":[");
    int first = 1;
    for (size_t i = 0; i < cfg->n_channels; i++)
        for (size_t j = 0; j < cfg->channels[i].n_upstreams; j++) {
            if (!first) pt_buf_puts(out, ",");
            first = 0;
            pt__upstream(out, &cfg->channels[i].upstreams[j], "http_proxy");
        }
    for (size_t i = 0; i < cfg->n_http_out; i++) {
        if (!first) pt_buf_puts(out, ",");
        first = 0;
        pt__upstream(out, &cfg->http_out[i], "outgoing");
    }
    pt_buf_puts(out, "],\"amqp\":[");
    first = 1;
    for (size_t i = 0; i < cfg->n_amqp_out; i++, first = 0) {
        if (!first) pt_buf_puts(out, ",");
        pt__endpoint(out, "outgoing", cfg->amqp_out[i].name, &cfg->amqp_out[i].ep, NULL);
    }
    for (size_t i = 0; i < cfg->n_amqp_channels; i++, first = 0) {
        if (!first) pt_buf_puts(out, ",");
        pt__endpoint(out, "channel", cfg->amqp_channels[i].channel.name, &cfg->amqp_channels[i].ep,
                     cfg->amqp_channels[i].queue);
    }
    for (size_t i = 0; i < cfg->n_channels; i++) {
        if (cfg->channels[i].type != PT_CHANNEL_AMQP_BUS) continue;
        if (!first) pt_buf_puts(out, ",");
        first = 0;
        pt__endpoint(out, "bus", cfg->channels[i].name, &cfg->channels[i].bus_ep, NULL);
    }
    pt_buf_puts(out, "],\"services\":[");
    for (size_t i = 0; i < c->n_files; i++) {
        const pt_console_file_t *f = &c->files[i];
        if (i) pt_buf_puts(out, ",");
        pt_buf_puts(out, "{\"file\":");
        pt__str(out, f->path);
        pt_buf_puts(out, ",\"service\":");
        pt__str(out, f->service);
        pt_buf_puts(out, ",\"hash\":");
        pt__str(out, f->loaded_ms ? f->hash : NULL);
        pt_buf_printf(out, ",\"loaded_ms\":%lld,\"error\":", (long long)f->loaded_ms);
        pt__str(out, f->error);
        pt_buf_printf(out, ",\"error_ms\":%lld}", (long long)f->error_ms);
    }
    pt_buf_printf(out, "],\"reloads_total\":%llu,\"reloads\":[", (unsigned long long)c->n_reloads);
    uint64_t n = c->n_reloads < PT_CONSOLE_RELOADS ? c->n_reloads : PT_CONSOLE_RELOADS;
    for (uint64_t k = 0; k < n; k++) {
        const pt_console_reload_t *r = &c->ring[(c->n_reloads - 1 - k) % PT_CONSOLE_RELOADS];
        if (k) pt_buf_puts(out, ",");
        pt_buf_printf(out, "{\"time_ms\":%lld,\"source\":\"%s\",\"what\":", (long long)r->time_ms,
                      r->source);
        pt__str(out, r->what[0] ? r->what : NULL);
        pt_buf_printf(out, ",\"accepted\":%s,\"generation\":%llu,\"error\":",
                      r->accepted ? "true" : "false", (unsigned long long)r->generation);
        pt__str(out, r->error[0] ? r->error : NULL);
        pt_buf_puts(out, "}");
    }
    pt_buf_puts(out, "]}");
}

void pt_console_free(pt_console_t *c)
{
    while (c->n_files)
        pt__drop(c, c->n_files - 1);
    free(c->files);
    c->files = NULL;
}
