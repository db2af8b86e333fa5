#include "pt_server.h"
#include "pt_rlimit.h"
#include "pt_accesslog.h"
#include "pt_audit.h"
#include "pt_audit_amqp.h"
#include "pt_admin.h"
#include "pt_amqp.h"
#include "pt_amqp_channel.h"
#include "pt_bus.h"
#include "pt_cache_redis.h"
#include "pt_cache_set.h"
#include "pt_cluster_push.h"
#include "pt_gateway.h"
#include "pt_log.h"
#include "pt_openapi.h"
#include "pt_metrics_json.h"
#include "pt_notify.h"
#include "pt_primitives.h"
#include "pt_cluster.h"
#include "pt_redis.h"
#include "pt_scheduler.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Builds the VM a worker would build for snap and checks the channels'
 * references against it. */
static pt_lua_t *pt__validate(const pt_snapshot_t *snap, char *err, size_t errlen)
{
    const pt_config_t *cfg = snap->cfg;
    pt_lua_t *vm = NULL;
    if (pt_lua_new(cfg, 0, pt_primitives, &vm, err, errlen) != 0) return NULL;
    for (size_t i = 0; i < cfg->n_channels; i++) {
        const pt_channel_t *ch = &cfg->channels[i];
        if (ch->type == PT_CHANNEL_REST && !pt_lua_has_service(vm, ch->service)) {
            snprintf(err, errlen, "%s:%d: channel '%s' runs service '%s', which is not loaded",
                     cfg->path, ch->line, ch->name, ch->service);
            goto fail;
        }
        for (size_t j = 0; j < ch->n_service_list; j++) {
            const char *name = ch->service_list[j];
            if (!pt_route_valid_service_name(name, strlen(name))) {
                snprintf(err, errlen, "%s:%d: channel '%s' lists a malformed service name '%s'",
                         cfg->path, ch->line, ch->name, name);
                goto fail;
            }
        }
    }
    for (size_t i = 0; i < cfg->n_amqp_channels; i++) {
        const pt_channel_t *ch = &cfg->amqp_channels[i].channel;
        if (!pt_lua_has_service(vm, ch->service)) {
            snprintf(err, errlen, "%s:%d: channel '%s' runs service '%s', which is not loaded",
                     cfg->path, ch->line, ch->name, ch->service);
            goto fail;
        }
    }
    for (size_t i = 0; i < cfg->scheduler.n_jobs; i++) {
        const pt_sched_job_cfg_t *j = &cfg->scheduler.jobs[i];
        if (!pt_lua_has_service(vm, j->service)) {
            snprintf(err, errlen,
                     "%s:%d: scheduler job '%s' runs service '%s', which is not loaded", cfg->path,
                     j->line, j->name, j->service);
            goto fail;
        }
    }
    return vm;
fail:
    pt_lua_free(vm);
    return NULL;
}

static int pt__same_list(char *const *a, size_t na, char *const *b, size_t nb)
{
    if (na != nb) return 0;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0) return 0;
    return 1;
}

/* Whether the AMQP connections or channels differ (they are set up once). */
/* Whether server.tls.listen differs (the listeners are made at the start). */
static int pt__tls_listen_changed(const pt_config_t *a, const pt_config_t *b)
{
    if (!a->tls_listen_host || !b->tls_listen_host) return a->tls_listen_host != b->tls_listen_host;
    return strcmp(a->tls_listen_host, b->tls_listen_host) != 0 ||
           a->tls_listen_port != b->tls_listen_port;
}

static int pt__amqp_changed(const pt_config_t *a, const pt_config_t *b)
{
    if (a->n_amqp_out != b->n_amqp_out || a->n_amqp_channels != b->n_amqp_channels) return 1;
    for (size_t i = 0; i < a->n_amqp_out; i++)
        if (strcmp(a->amqp_out[i].name, b->amqp_out[i].name) != 0 ||
            !pt_amqp_endpoint_same(&a->amqp_out[i].ep, &b->amqp_out[i].ep))
            return 1;
    for (size_t i = 0; i < a->n_amqp_channels; i++)
        if (strcmp(a->amqp_channels[i].channel.name, b->amqp_channels[i].channel.name) != 0 ||
            strcmp(a->amqp_channels[i].queue, b->amqp_channels[i].queue) != 0 ||
            !pt_amqp_endpoint_same(&a->amqp_channels[i].ep, &b->amqp_channels[i].ep))
            return 1;
    /* the amqp_bus connections too (their reply time-outs do follow a reload) */
    size_t na = 0, nb = 0;
    for (size_t i = 0; i < a->n_channels; i++)
        if (a->channels[i].type == PT_CHANNEL_AMQP_BUS) na++;
    for (size_t i = 0; i < b->n_channels; i++)
        if (b->channels[i].type == PT_CHANNEL_AMQP_BUS) nb++;
    if (na != nb) return 1;
    for (size_t i = 0, j = 0; i < a->n_channels; i++) {
        if (a->channels[i].type != PT_CHANNEL_AMQP_BUS) continue;
        while (b->channels[j].type != PT_CHANNEL_AMQP_BUS)
            j++;
        if (strcmp(a->channels[i].name, b->channels[j].name) != 0 ||
            !pt_amqp_endpoint_same(&a->channels[i].bus_ep, &b->channels[j].bus_ep))
            return 1;
        j++;
    }
    return 0;
}

/* AMQP threads hand results to workers until the workers' loops have ended;
 * they are stopped in between, before pt_worker_join takes a worker's
 * message queue down. */
static void pt__wait_workers_ended(pt_server_t *s)
{
    for (int i = 0; i < s->n_workers; i++) {
        pt_worker_t *w = &s->workers[i];
        while (!pt_worker_ended(w))
            uv_sleep(10);
    }
}

int pt_server_check(const char *config_path)
{
    char err[1024];
    pt_snapshot_t *snap = pt_snapshot_load(config_path, 0, err, sizeof err);
    pt_lua_t *vm = snap ? pt__validate(snap, err, sizeof err) : NULL;
    if (!vm) {
        fprintf(stderr, "portico: %s\n", err);
        pt_snapshot_release(snap);
        return -1;
    }
    printf("portico: %s is valid: %zu channels, %zu services\n", config_path, snap->cfg->n_channels,
           pt_lua_service_count(vm));
    pt_lua_free(vm);
    pt_snapshot_release(snap);
    return 0;
}

int pt_server_openapi(const char *config_path)
{
    char err[1024];
    pt_buf_t doc = {0};
    pt_snapshot_t *snap = pt_snapshot_load(config_path, 0, err, sizeof err);
    pt_lua_t *vm = snap ? pt__validate(snap, err, sizeof err) : NULL;
    int rc = vm ? pt_openapi_generate(vm, snap->cfg, &doc, err, sizeof err) : -1;
    if (rc == 0 && fwrite(doc.data, 1, doc.len, stdout) != doc.len) {
        snprintf(err, sizeof err, "cannot write the document: %s", strerror(errno));
        rc = -1;
    }
    if (rc != 0) fprintf(stderr, "portico: %s\n", err);
    pt_buf_free(&doc);
    pt_lua_free(vm);
    pt_snapshot_release(snap);
    return rc;
}

/* The services or the config changed: the OpenAPI document is made again
 * when next asked for, or now when a channels.openapi serves it (the
 * workers answer from what was published last). */
static void pt__openapi_stale(pt_server_t *s)
{
    char err[1024];
    const pt_config_t *cfg = s->snap->cfg;
    s->openapi_made = 0;
    s->openapi.len = 0;
    for (size_t i = 0; i < cfg->n_channels; i++) {
        if (cfg->channels[i].type != PT_CHANNEL_OPENAPI) continue;
        int rc = pt_openapi_generate(s->ref_vm, cfg, &s->openapi, err, sizeof err);
        if (rc == 0 && pt_openapi_publish(s->openapi.data, s->openapi.len) != 0) {
            snprintf(err, sizeof err, "out of memory");
            rc = -1;
        }
        if (rc != 0) {
            s->openapi.len = 0;
            pt_log_error("channel '%s' keeps the previous OpenAPI document: %s",
                         cfg->channels[i].name, err);
            return;
        }
        s->openapi_made = 1;
        return;
    }
    pt_openapi_publish(NULL, 0);
}

/* A hot reload that left a channel without its service: --check and a
 * start refuse that state; a running gateway says so (its requests 404). */
static void pt__warn_missing(pt_server_t *s, const char *name, const char *path, const char *why)
{
    const pt_config_t *cfg = s->snap->cfg;
    if (pt_lua_has_service(s->ref_vm, name)) return;
    for (size_t i = 0; i < cfg->n_channels + cfg->n_amqp_channels; i++) {
        const pt_channel_t *ch = i < cfg->n_channels
                                     ? &cfg->channels[i]
                                     : &cfg->amqp_channels[i - cfg->n_channels].channel;
        if (ch->service && strcmp(ch->service, name) == 0)
            pt_log_warn("channel '%s' runs service '%s', which is no longer loaded (%s %s): "
                        "its requests answer 404 until a service of that name is back",
                        ch->name, name, path, why);
    }
}

/* A settled change of a service file: check it on the reference VM, then
 * hand it to the workers. A file that fails is reported once per version. */
static int pt__on_file(void *ud, const char *path, const pt_watch_file_t *now,
                       pt_watch_event_t ev)
{
    pt_server_t *s = ud;
    char err[1024];
    const char *was = pt_lua_service_of(s->ref_vm, path);
    char *old = was ? strdup(was) : NULL;
    if (ev == PT_WATCH_REMOVED) {
        if (pt_lua_unload_file(s->ref_vm, path) == 0) {
            for (int i = 0; i < s->n_workers; i++)
                pt_gateway_unload(&s->workers[i], path);
            pt_log_info("service file removed: %s", path);
            pt__openapi_stale(s);
            pt_console_file_removed(&s->console, path);
            if (old) pt__warn_missing(s, old, path, "was removed");
        }
        free(old);
        return 0;
    }
    char *source = NULL;
    size_t len = 0;
    int rc = pt_lua_read_file(path, &source, &len, err, sizeof err);
    /* a writer that came back while it was read (truncated it, say): what
     * was read is no version of the file; it is read again once settled */
    if (rc == 0 && (len != now->size || !pt_watch_same_on_disk(now))) {
        pt_log_debug("service file %s changed while it was read: read again once settled", path);
        free(source);
        free(old);
        return PT_WATCH_RETRY;
    }
    if (rc != 0 || pt_lua_load_file(s->ref_vm, path, source, len, err, sizeof err) != 0) {
        free(source);
        s->reload_failures++;
        if (old)
            pt_log_error("service file refused, the previous version keeps serving: %s", err);
        else /* a new file (or one never loaded): nothing of it serves */
            pt_log_error("service file refused, not loaded (no previous version): %s", err);
        free(old);
        pt_console_file_failed(&s->console, path, err);
        pt_console_reload(&s->console, "file", path, 0, s->snap->generation, err);
        return 0;
    }
    s->reloads++;
    pt__openapi_stale(s);
    for (int i = 0; i < s->n_workers; i++)
        pt_gateway_load(&s->workers[i], path, source, len);
    pt_log_info("service file loaded: %s", path);
    pt_console_file_loaded(&s->console, path, source ? source : "", len, s->ref_vm);
    pt_console_reload(&s->console, "file", path, 1, s->snap->generation, NULL);
    free(source);
    if (old) pt__warn_missing(s, old, path, "now names another service");
    free(old);
    return 0;
}

/* A settled change of a library file (lua.lib_dirs): the services that
 * required it are checked again with it on the reference VM, all of them or
 * none, and only then reloaded on the workers (pt_lua_reload_libs). */
static int pt__on_lib(void *ud, const char *path, const pt_watch_file_t *now,
                      pt_watch_event_t ev)
{
    pt_server_t *s = ud;
    char err[1024] = "";
    const char *files[] = {path};
    char **deps = NULL;
    size_t n = 0;
    if (pt_lua_lib_dependants(s->ref_vm, files, 1, &deps, &n) != 0) return 0;
    if (n == 0) {
        pt_log_info("library file %s: no loaded service uses it", path);
        pt_lua_free_list(deps, n);
        return 0;
    }
    pt_lua_source_t lib = {.path = path};
    pt_lua_source_t *svcs = calloc(n, sizeof *svcs);
    char *text = NULL;
    int rc = svcs ? 0 : -1;
    if (!svcs) snprintf(err, sizeof err, "out of memory");
    if (rc == 0 && ev == PT_WATCH_CHANGED) {
        rc = pt_lua_read_file(path, &text, &lib.len, err, sizeof err);
        lib.source = text;
        if (rc == 0 && (lib.len != now->size || !pt_watch_same_on_disk(now))) {
            pt_log_debug("library file %s changed while it was read: read again once settled",
                         path);
            free(text);
            free(svcs);
            pt_lua_free_list(deps, n);
            return PT_WATCH_RETRY;
        }
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char *src = NULL;
        svcs[i].path = deps[i];
        rc = pt_lua_read_file(deps[i], &src, &svcs[i].len, err, sizeof err);
        svcs[i].source = src;
    }
    if (rc == 0) rc = pt_lua_reload_libs(s->ref_vm, &lib, 1, svcs, n, err, sizeof err);
    if (rc != 0) {
        s->reload_failures++;
        pt_log_error("library %s refused, the %zu services that use it keep their previous "
                     "version: %s",
                     path, n, err);
        pt_console_reload(&s->console, "library", path, 0, s->snap->generation, err);
    } else {
        s->reloads++;
        pt__openapi_stale(s);
        for (int i = 0; i < s->n_workers; i++)
            pt_gateway_reload_libs(&s->workers[i], &lib, 1, svcs, n);
        pt_log_info("library file %s reloaded with the services that use it (%zu)", path, n);
        pt_console_reload(&s->console, "library", path, 1, s->snap->generation, NULL);
        for (size_t i = 0; i < n; i++)
            pt_console_file_loaded(&s->console, svcs[i].path, svcs[i].source, svcs[i].len,
                                   s->ref_vm);
    }
    for (size_t i = 0; svcs && i < n; i++)
        free((char *)svcs[i].source);
    free(svcs);
    free(text);
    pt_lua_free_list(deps, n);
    return 0;
}

/* Appends ", name (running: a, new: b)" to buf when a and b differ. */
static void pt__changed(char *buf, size_t len, const char *name, const char *a, const char *b)
{
    if (strcmp(a, b) == 0) return;
    size_t n = strlen(buf);
    if (n < len)
        snprintf(buf + n, len - n, "%s%s (running: %s, new: %s)", n ? ", " : "", name, a, b);
}

/* The settings a reload cannot change, named when they differ from what the
 * process runs with (its start's config, not the last reload's). */
static void pt__warn_restart_only(const pt_config_t *run, const pt_config_t *cfg)
{
    char buf[2048] = "", a[600], b[600];
    snprintf(a, sizeof a, "%s:%d", run->listen_host, run->listen_port);
    snprintf(b, sizeof b, "%s:%d", cfg->listen_host, cfg->listen_port);
    pt__changed(buf, sizeof buf, "server.listen", a, b);
    snprintf(a, sizeof a, "%d", run->workers);
    snprintf(b, sizeof b, "%d", cfg->workers);
    pt__changed(buf, sizeof buf, "server.workers", a, b);
    pt__changed(buf, sizeof buf, "lua.path", run->lua_path, cfg->lua_path);
    snprintf(a, sizeof a, "%d", run->lua_gc_pause);
    snprintf(b, sizeof b, "%d", cfg->lua_gc_pause);
    pt__changed(buf, sizeof buf, "lua.gc_pause", a, b);
    snprintf(a, sizeof a, "%llums", (unsigned long long)run->lua_request_timeout_ms);
    snprintf(b, sizeof b, "%llums", (unsigned long long)cfg->lua_request_timeout_ms);
    pt__changed(buf, sizeof buf, "lua.request_timeout", a, b);
    if (!pt__same_list(run->lib_dirs, run->n_lib_dirs, cfg->lib_dirs, cfg->n_lib_dirs))
        pt__changed(buf, sizeof buf, "lua.lib_dirs", run->n_lib_dirs ? run->lib_dirs[0] : "",
                    cfg->n_lib_dirs ? cfg->lib_dirs[0] : "(none)");
    pt__changed(buf, sizeof buf, "log.access", run->access_log, cfg->access_log);
    if (pt__tls_listen_changed(run, cfg)) {
        snprintf(a, sizeof a, "%s:%d", run->tls_listen_host ? run->tls_listen_host : "(none)",
                 run->tls_listen_port);
        snprintf(b, sizeof b, "%s:%d", cfg->tls_listen_host ? cfg->tls_listen_host : "(none)",
                 cfg->tls_listen_port);
        pt__changed(buf, sizeof buf, "server.tls.listen", a, b);
    }
    if (buf[0]) pt_log_warn("config reload: %s: take effect after a restart", buf);
    if (!pt_config_cluster_same(&run->cluster, &cfg->cluster))
        pt_log_warn("config reload: the cluster: section changed: it takes effect after a "
                    "restart");
    if (!pt_config_obs_same_sink(&run->obs, &cfg->obs))
        pt_log_warn("config reload: the audit sink changed: audit.file, audit.amqp, "
                    "audit.max_queue and audit on or off take effect after a restart");
    if (run->tracing.enabled != cfg->tracing.enabled || run->tracing.ratio != cfg->tracing.ratio ||
        !run->tracing.endpoint != !cfg->tracing.endpoint ||
        (run->tracing.endpoint && strcmp(run->tracing.endpoint, cfg->tracing.endpoint) != 0))
        pt_log_warn("config reload: tracing changed: it takes effect after a restart");
    if (pt__amqp_changed(run, cfg))
        pt_log_warn("config reload: the AMQP connections changed (outgoing.amqp, channels.amqp "
                    "or amqp_bus: URL, heartbeat, tls, declare, names or queues): they take effect "
                    "after a restart");
}

static int pt__reload(pt_server_t *s, char *err, size_t errlen);

int pt_server_reload(pt_server_t *s, char *err, size_t errlen)
{
    pt_notify_reloading();
    int rc = pt__reload(s, err, errlen);
    pt_notify_ready(rc == 0 ? "serving, config reloaded" : "serving, last reload refused");
    return rc;
}

static int pt__reload(pt_server_t *s, char *err, size_t errlen)
{
    pt_snapshot_t *snap = pt_snapshot_load(s->config_path, s->snap->generation + 1, err, errlen);
    pt_lua_t *vm = snap ? pt__validate(snap, err, errlen) : NULL;
    if (vm && pt_snapshot_open_caches(snap, err, errlen) != 0) pt_lua_free(vm), vm = NULL;
    if (!vm) {
        pt_snapshot_release(snap);
        s->reload_failures++;
        pt_log_error("config reload refused, the running config keeps serving: %s", err);
        pt_console_reload(&s->console, s->reload_source ? s->reload_source : "signal", NULL, 0,
                          s->snap->generation, err);
        return -1;
    }
    const pt_config_t *old = s->snap->cfg, *cfg = snap->cfg;
    pt__warn_restart_only(s->started ? s->started : old, cfg);
    pt_lua_free(s->ref_vm);
    s->ref_vm = vm;
    /* Service changes go out first, so no new channel sees a missing service. */
    pt_watch_retarget(&s->watch, cfg->service_dirs, cfg->n_service_dirs);
    pt_watch_retarget(&s->lib_watch, old->lib_dirs, old->n_lib_dirs);
    for (int i = 0; i < s->n_workers; i++)
        pt_worker_post_snapshot(&s->workers[i], pt_snapshot_ref(snap));
    pt_snapshot_release(s->snap);
    s->snap = snap;
    pt__openapi_stale(s);
    pt_scheduler_apply(s->sched, cfg);
    pt_cluster_push_apply(s->loop, cfg, s->started ? &s->started->cluster : &cfg->cluster);
    pt_cluster_config(s->cluster, cfg);
    pt_log_set_level(cfg->log_level);
    s->reloads++;
    pt_console_scan(&s->console, cfg, s->ref_vm);
    pt_console_reload(&s->console, s->reload_source ? s->reload_source : "signal", NULL, 1,
                      snap->generation, NULL);
    pt_log_info("config reloaded: generation %llu, %zu channels, %zu services",
                (unsigned long long)snap->generation, cfg->n_channels,
                pt_lua_service_count(s->ref_vm));
    return 0;
}

/* ---- what the admin listener asks ---- */

static int pt__admin_ready(void *ud)
{
    pt_server_t *s = ud;
    return s->ready;
}

static uint64_t pt__admin_generation(void *ud)
{
    pt_server_t *s = ud;
    return s->snap->generation;
}

static int pt__admin_reload(void *ud, char *err, size_t errlen)
{
    pt_server_t *s = ud;
    s->reload_source = "admin";
    int rc = pt_server_reload(s, err, errlen);
    s->reload_source = NULL;
    return rc;
}

static const pt_config_t *pt__admin_config(void *ud)
{
    pt_server_t *s = ud;
    return s->snap->cfg;
}

static void pt__admin_console_state(void *ud, pt_buf_t *out)
{
    pt_server_t *s = ud;
    pt_console_state(&s->console, s->snap->cfg, s->snap->generation, s->n_workers, out);
}

static void pt__admin_console_stats(void *ud, pt_buf_t *out)
{
    pt_server_t *s = ud;
    pt_metrics_t *workers[256];
    size_t n = 0;
    for (int i = 0; i < s->n_workers && n < 256; i++)
        workers[n++] = &s->workers[i].metrics;
    pt_metrics_json(workers, n, uv_now(s->loop), out);
}

static void pt__admin_metrics(void *ud, pt_buf_t *out)
{
    pt_server_t *s = ud;
    pt_metrics_t *workers[256];
    size_t n = 0;
    for (int i = 0; i < s->n_workers && n < 256; i++)
        workers[n++] = &s->workers[i].metrics;
    pt_metrics_process_t proc = {.reloads = s->reloads,
                                 .reload_failures = s->reload_failures,
                                 .generation = s->snap->generation,
                                 .workers = s->n_workers};
    pt_metrics_render(workers, n, &proc, out);
    pt_cache_render_metrics(out);
    pt_scheduler_metrics(s->sched, out);
    pt_cluster_push_metrics(out);
}

static void pt__admin_scheduler(void *ud, pt_buf_t *out)
{
    pt_server_t *s = ud;
    pt_scheduler_json(s->sched, out);
}

static int pt__admin_openapi(void *ud, pt_buf_t *out, char *err, size_t errlen)
{
    pt_server_t *s = ud;
    if (!s->openapi_made) {
        s->openapi.len = 0;
        if (pt_openapi_generate(s->ref_vm, s->snap->cfg, &s->openapi, err, errlen) != 0) {
            pt_log_error("GET /openapi.json: %s", err);
            return -1;
        }
        s->openapi_made = 1;
    }
    return pt_buf_append(out, s->openapi.data, s->openapi.len);
}

static int pt__admin_cluster(void *ud, pt_buf_t *out)
{
    pt_server_t *s = ud;
    if (!s->cluster) return -1;
    pt_cluster_json(s->cluster, out);
    return 0;
}

static const pt_admin_ops_t pt__admin_ops = {
    .cluster = pt__admin_cluster,
    .ready = pt__admin_ready,
    .generation = pt__admin_generation,
    .reload = pt__admin_reload,
    .metrics = pt__admin_metrics,
    .scheduler = pt__admin_scheduler,
    .openapi = pt__admin_openapi,
    .config = pt__admin_config,
    .console_state = pt__admin_console_state,
    .console_stats = pt__admin_console_stats,
};

static void pt__on_signal(uv_signal_t *sig, int signum)
{
    pt_server_t *s = sig->data;
    if (signum == SIGUSR1) {
        pt_audit_reopen(); /* on the audit writer's thread */
        if (pt_accesslog_reopen() != 0)
            pt_log_error("SIGUSR1: cannot reopen the access log");
        else
            pt_log_info("SIGUSR1: access log reopened");
        return;
    }
    if (signum == SIGHUP) {
        char err[1024];
        if (!s->ready) {
            pt_log_warn("SIGHUP while starting or stopping: ignored");
            return;
        }
        pt_log_info("SIGHUP: reloading %s", s->config_path);
        pt_server_reload(s, err, sizeof err);
        return;
    }
    if (s->stopping) {
        pt_log_warn("second signal: exiting now");
        _exit(1);
    }
    s->stopping = 1;
    s->ready = 0;
    pt_notify_stopping();
    pt_scheduler_stop(s->sched);
    pt_log_info("%s: draining", signum == SIGINT ? "SIGINT" : "SIGTERM");
    for (int i = 0; i < s->n_workers; i++)
        pt_worker_stop(&s->workers[i]);
    uv_stop(s->loop);
}

/* The request budget's watchdog (pt_lua_interrupt): a worker whose VM shows
 * the same run for longer than lua.request_timeout is asked to stop it. A run
 * that goes on anyway is in compiled code, which no hook reaches: the log
 * says so once, since that worker serves nothing else until it ends. */
typedef struct {
    uint64_t seq;      /* the run seen last */
    uint64_t since_ms; /* when it was first seen */
    int asked, reported;
} pt__watchdog_t;

typedef struct {
    pt_server_t *s;
    uint64_t budget_ms; /* the start's: the workers' VMs were made for it */
    pt__watchdog_t *w;  /* one per worker */
} pt__watchdog_ctx_t;

static void pt__on_watchdog(uv_timer_t *timer)
{
    pt__watchdog_ctx_t *ctx = timer->data;
    pt_server_t *s = ctx->s;
    uint64_t budget = ctx->budget_ms, now = uv_now(s->loop);
    if (budget == 0) return;
    for (int i = 0; i < s->n_workers; i++) {
        pt_worker_t *w = &s->workers[i];
        pt__watchdog_t *d = &ctx->w[i];
        if (!w->lua) continue;
        uint64_t seq = pt_lua_run_seq(w->lua);
        if (!(seq & 1) || seq != d->seq) {
            d->seq = seq;
            d->since_ms = now;
            d->asked = d->reported = 0;
            continue;
        }
        if (!d->asked && now - d->since_ms >= budget) {
            pt_lua_interrupt(w->lua, w->thread, seq, budget);
            d->asked = 1;
        } else if (d->asked && !d->reported && now - d->since_ms >= 2 * budget + 1000) {
            pt_log_error("worker %d: a request has run for %llu ms without waiting and cannot be "
                         "stopped (a loop the JIT compiled whole runs no hooks); the worker "
                         "serves nothing else until it ends",
                         w->id, (unsigned long long)(now - d->since_ms));
            d->reported = 1;
        }
    }
}

/* Refuses a port that another process already serves: SO_REUSEPORT would
 * otherwise let a second instance share it silently. */
static int pt__port_free(const struct sockaddr_storage *addr)
{
    int one = 1, fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t len =
        addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = bind(fd, (const struct sockaddr *)addr, len);
    close(fd);
    return rc;
}

/* server.tls.listen into addr, checked free like server.listen. */
static int pt__tls_resolve(const pt_config_t *cfg, struct sockaddr_storage *addr)
{
    memset(addr, 0, sizeof *addr);
    if (!cfg->tls_listen_host) return 0;
    if (pt_worker_resolve(cfg->tls_listen_host, cfg->tls_listen_port, addr) != 0) {
        fprintf(stderr, "portico: %s: cannot resolve server.tls.listen address %s\n", cfg->path,
                cfg->tls_listen_host);
        return -1;
    }
    if (pt__port_free(addr) != 0) {
        fprintf(stderr, "portico: cannot listen on %s:%d (server.tls): %s\n", cfg->tls_listen_host,
                cfg->tls_listen_port, strerror(errno));
        return -1;
    }
    return 0;
}

int pt_server_run(const char *config_path)
{
    pt_server_t s = {.config_path = config_path, .loop = uv_default_loop()};
    char err[1024];
    int failed = 0, exit_code = 1;
    uv_sem_t started;
    struct sockaddr_storage addr, tls_addr;
    pt_amqp_t *amqp = NULL;
    pt_bus_t *bus = NULL;
    pt_amqp_channels_t *amqp_channels = NULL;
    uv_timer_t watchdog;
    pt__watchdog_ctx_t watchdog_ctx = {.s = &s};

    pt_cache_redis_install(); /* before a config opens its caches */
    if (!(s.snap = pt_snapshot_load(config_path, 1, err, sizeof err))) {
        fprintf(stderr, "portico: %s\n", err);
        return 1;
    }
    /* The start's settings, for the restart-only warnings of later reloads
     * (a copy, not a reference to the snapshot, which would keep its caches
     * alive). Its load warned already: this one is quiet. */
    pt_log_set_level(PT_LOG_ERROR);
    if (pt_config_load(config_path, &s.started, err, sizeof err) != 0) s.started = NULL;
    pt_log_set_level(s.snap->cfg->log_level);
    const pt_config_t *cfg = s.snap->cfg;
    /* The files are scanned before any VM loads them: a change from here on
     * is reported (at worst a file loaded already is loaded once more). */
    pt_watch_start(&s.watch, s.loop, cfg->service_dirs, cfg->n_service_dirs, cfg->watch_interval_ms,
                   pt__on_file, &s);
    pt_watch_start(&s.lib_watch, s.loop, cfg->lib_dirs, cfg->n_lib_dirs, cfg->watch_interval_ms,
                   pt__on_lib, &s);
    if (!(s.ref_vm = pt__validate(s.snap, err, sizeof err)) ||
        pt_snapshot_open_caches(s.snap, err, sizeof err) != 0) {
        fprintf(stderr, "portico: %s\n", err);
        pt_lua_free(s.ref_vm);
        pt_watch_stop(&s.watch);
        pt_watch_stop(&s.lib_watch);
        uv_run(s.loop, UV_RUN_DEFAULT);
        pt_snapshot_release(s.snap);
        pt_config_free(s.started);
        return 1;
    }
    pt__openapi_stale(&s);
    pt_console_scan(&s.console, cfg, s.ref_vm);
    watchdog_ctx.budget_ms = cfg->lua_request_timeout_ms;
    pt_log_set_level(cfg->log_level);
    signal(SIGPIPE, SIG_IGN);
    /* every connection is a descriptor: server.max_connections needs them */
    pt_rlimit_raise_nofile();
    if (pt_worker_resolve(cfg->listen_host, cfg->listen_port, &addr) != 0) {
        fprintf(stderr, "portico: %s: cannot resolve listen address %s\n", config_path,
                cfg->listen_host);
        goto done;
    }
    if (pt__port_free(&addr) != 0) {
        fprintf(stderr, "portico: cannot listen on %s:%d: %s\n", cfg->listen_host, cfg->listen_port,
                strerror(errno));
        goto done;
    }
    if (pt__tls_resolve(cfg, &tls_addr) != 0) goto done;
    if (pt_accesslog_open(cfg->access_log, err, sizeof err) != 0 ||
        pt_trace_start(&cfg->tracing, err, sizeof err) != 0 ||
        pt_admin_start(s.loop, cfg, &pt__admin_ops, &s, &s.admin, err, sizeof err) != 0) {
        fprintf(stderr, "portico: %s\n", err);
        goto done;
    }
    /* Before the workers, so services find their connections; a broker that
     * is down does not stop the start. */
    if (pt_amqp_start(cfg, &amqp) != 0 || pt_bus_start(cfg, &bus) != 0) {
        fprintf(stderr, "portico: cannot start the AMQP connection threads\n");
        goto done;
    }
    /* the audit writer, with its AMQP sink when audit.amqp names a pool */
    pt_audit_sink_fn audit_sink;
    void *audit_ud;
    if (pt_audit_amqp_sink(&cfg->obs, &audit_sink, &audit_ud, err, sizeof err) != 0 ||
        pt_audit_start(&cfg->obs, audit_sink, audit_ud, err, sizeof err) != 0) {
        fprintf(stderr, "portico: %s\n", err);
        goto done;
    }
    /* Signals are caught before any worker listens: a SIGTERM that comes
     * while the workers start waits for the loop and drains them then. */
    uv_signal_init(s.loop, &s.sigterm);
    uv_signal_init(s.loop, &s.sigint);
    uv_signal_init(s.loop, &s.sighup);
    uv_signal_init(s.loop, &s.sigusr1);
    s.sigterm.data = s.sigint.data = s.sighup.data = s.sigusr1.data = &s;
    uv_signal_start(&s.sigusr1, pt__on_signal, SIGUSR1);
    uv_signal_start(&s.sigterm, pt__on_signal, SIGTERM);
    uv_signal_start(&s.sigint, pt__on_signal, SIGINT);
    uv_signal_start(&s.sighup, pt__on_signal, SIGHUP);
    s.n_workers = cfg->workers > 0 ? cfg->workers : (int)uv_available_parallelism();
    s.workers = calloc((size_t)s.n_workers, sizeof *s.workers);
    uv_sem_init(&started, 0);
    int n_started = 0;
    for (int i = 0; i < s.n_workers && !failed; i++) {
        pt_worker_t *w = &s.workers[i];
        w->id = i + 1;
        w->n_workers = s.n_workers;
        w->hooks = &pt_gateway_hooks;
        w->snap = pt_snapshot_ref(s.snap);
        w->addr = addr;
        w->tls_addr = tls_addr;
        w->tls_on = cfg->tls_listen_host != NULL;
        w->started = &started;
        if (pt_worker_start(w) != 0) {
            pt_snapshot_release(w->snap);
            failed = 1;
            break;
        }
        n_started++;
        uv_sem_wait(&started);
        if (w->start_rc != 0) {
            fprintf(stderr, "portico: %s\n", w->start_err);
            failed = 1;
        }
    }
    s.n_workers = n_started;
    if (!failed) pt_worker_set_all(s.workers, s.n_workers);
    if (!failed && pt_amqp_channels_start(cfg, s.workers, s.n_workers, &amqp_channels) != 0) {
        fprintf(stderr, "portico: cannot start the AMQP channel threads\n");
        failed = 1;
    }

    if (!failed && !(watchdog_ctx.w = calloc((size_t)s.n_workers, sizeof *watchdog_ctx.w))) {
        fprintf(stderr, "portico: out of memory\n");
        failed = 1;
    }
    if (!failed) {
        /* a run is stopped at most 100 ms after its budget ran out */
        uv_timer_init(s.loop, &watchdog);
        watchdog.data = &watchdog_ctx;
        uv_timer_start(&watchdog, pt__on_watchdog, 100, 100);
        uv_unref((uv_handle_t *)&watchdog);
        /* cluster: the main loop's Redis connection (registry, scheduler) */
        if (cfg->cluster.on && !pt_redis_main())
            pt_redis_set_main(pt_redis_new(s.loop, &cfg->cluster));
        if (pt_redis_main() && !(s.cluster = pt_cluster_start(s.loop, pt_redis_main(), cfg)))
            pt_log_error("cluster: out of memory: this node does not register");
        if (!(s.sched = pt_scheduler_start(s.loop, cfg, s.workers, s.n_workers)))
            pt_log_error("scheduler: out of memory: no job runs");
        pt_cluster_push_apply(s.loop, cfg, s.started ? &s.started->cluster : &cfg->cluster);
        s.ready = 1;
        pt_log_info("portico %s listening on %s:%d with %d worker%s, %zu services, %zu channels",
                    PT_VERSION, cfg->listen_host, cfg->listen_port, s.n_workers,
                    s.n_workers == 1 ? "" : "s", pt_lua_service_count(s.ref_vm), cfg->n_channels);
        pt_notify_ready("serving");
        uv_run(s.loop, UV_RUN_DEFAULT);
        exit_code = 0;
    } else {
        for (int i = 0; i < s.n_workers; i++)
            if (s.workers[i].start_rc == 0) pt_worker_stop(&s.workers[i]);
    }
    /* Drain: workers finish their requests; meanwhile the main loop only
     * closes its own handles. AMQP channels take no new deliveries. */
    pt_amqp_channels_quiesce(amqp_channels);
    pt__wait_workers_ended(&s);
    pt_amqp_channels_stop(amqp_channels);
    pt_audit_stop(); /* its last lines go out while the AMQP pools still run */
    pt_amqp_stop(amqp);
    amqp = NULL;
    pt_bus_stop(bus);
    bus = NULL;
    for (int i = 0; i < s.n_workers; i++)
        pt_worker_join(&s.workers[i]);
    pt_amqp_channels_free(amqp_channels);
    uv_sem_destroy(&started);
    uv_close((uv_handle_t *)&s.sigterm, NULL);
    uv_close((uv_handle_t *)&s.sigint, NULL);
    uv_close((uv_handle_t *)&s.sighup, NULL);
    uv_close((uv_handle_t *)&s.sigusr1, NULL);
    if (!failed) {
        uv_close((uv_handle_t *)&watchdog, NULL);
        pt_log_info("stopped");
    }
    free(s.workers);
    free(watchdog_ctx.w);
done:
    pt_watch_stop(&s.watch);
    pt_watch_stop(&s.lib_watch);
    pt_audit_stop();
    pt_amqp_stop(amqp);
    pt_bus_stop(bus);
    pt_admin_stop(s.admin);
    pt_scheduler_close(s.sched);
    pt_cluster_push_stop();
    if (s.cluster)
        pt_cluster_stop(s.cluster); /* its record goes, then the main loop's Redis client */
    else
        pt_redis_free(pt_redis_main());
    s.cluster = NULL;
    uv_run(s.loop, UV_RUN_DEFAULT);
    pt_scheduler_free(s.sched);
    uv_loop_close(s.loop);
    pt_lua_free(s.ref_vm);
    pt_buf_free(&s.openapi);
    pt_openapi_publish(NULL, 0);
    pt_snapshot_release(s.snap);
    pt_config_free(s.started);
    pt_accesslog_close();
    pt_console_free(&s.console);
    pt_audit_stop();
    pt_trace_stop();
    return exit_code;
}
