/* portico: the process. Reads the config, checks every service once, starts
 * the workers and turns SIGTERM/SIGINT into a drain. */
#include "pt_config.h"
#include "pt_log.h"
#include "pt_lua.h"
#include "pt_router.h"
#include "pt_worker.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define PT_DEFAULT_CONFIG "config/portico.yaml"

static const char pt__usage[] =
    "usage: portico [-c FILE] [--check]\n"
    "       portico --help | --version\n"
    "\n"
    "  -c, --config FILE  the YAML config (default: " PT_DEFAULT_CONFIG ")\n"
    "  --check            validate the config and load every service, then exit:\n"
    "                     0 when all is well, 1 with file:line: message otherwise\n"
    "  -h, --help         this text\n"
    "  -V, --version      the version\n"
    "\n"
    "Signals: SIGTERM or SIGINT finish the requests in flight, then exit 0.\n";

typedef struct {
    pt_worker_t *workers;
    int n;
    int stopping;
} pt__main_t;

static void pt__on_signal(uv_signal_t *s, int signum)
{
    pt__main_t *m = s->data;
    if (m->stopping) {
        pt_log_warn("second signal: exiting now");
        exit(1);
    }
    m->stopping = 1;
    pt_log_info("%s: draining", signum == SIGINT ? "SIGINT" : "SIGTERM");
    for (int i = 0; i < m->n; i++)
        pt_worker_stop(&m->workers[i]);
    uv_stop(s->loop);
}

/* Loads everything a worker would load, on this thread, and reports. */
static int pt__check(const pt_config_t *cfg, size_t *n_services)
{
    char err[1024];
    pt_router_t *router = NULL;
    pt_lua_t *lua = NULL;
    if (pt_router_new(cfg, &router, err, sizeof err) != 0 ||
        pt_lua_new(cfg, 0, &lua, err, sizeof err) != 0) {
        fprintf(stderr, "portico: %s\n", err);
        pt_router_free(router);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < cfg->n_channels; i++) {
        const pt_channel_t *ch = &cfg->channels[i];
        if (ch->type == PT_CHANNEL_REST && !pt_lua_has_service(lua, ch->service)) {
            fprintf(stderr, "portico: %s:%d: channel '%s' runs service '%s', which is not loaded\n",
                    cfg->path, ch->line, ch->name, ch->service);
            rc = -1;
        }
        for (size_t j = 0; j < ch->n_service_list; j++)
            if (!pt_router_valid_service_name(ch->service_list[j], strlen(ch->service_list[j]))) {
                fprintf(stderr, "portico: %s:%d: channel '%s' lists a malformed name '%s'\n",
                        cfg->path, ch->line, ch->name, ch->service_list[j]);
                rc = -1;
            }
    }
    *n_services = pt_lua_service_count(lua);
    pt_lua_free(lua);
    pt_router_free(router);
    return rc;
}

int main(int argc, char **argv)
{
    const char *path = PT_DEFAULT_CONFIG;
    int check = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(pt__usage, stdout);
            return 0;
        } else if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
            printf("portico %s\n", PT_VERSION);
            return 0;
        } else if (!strcmp(a, "--check") || !strcmp(a, "-t")) {
            check = 1;
        } else if ((!strcmp(a, "-c") || !strcmp(a, "--config")) && i + 1 < argc) {
            path = argv[++i];
        } else if (!strncmp(a, "--config=", 9)) {
            path = a + 9;
        } else {
            fprintf(stderr, "portico: unknown argument '%s'\n\n%s", a, pt__usage);
            return 2;
        }
    }

    char err[1024];
    pt_config_t *cfg = NULL;
    if (pt_config_load(path, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "portico: %s\n", err);
        return 1;
    }
    pt_log_set_level(cfg->log_level);
    size_t n_services = 0;
    if (pt__check(cfg, &n_services) != 0) {
        pt_config_free(cfg);
        return 1;
    }
    if (check) {
        printf("portico: %s is valid: %zu channels, %zu services\n", path, cfg->n_channels,
               n_services);
        pt_config_free(cfg);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);

    pt_router_t *router = NULL;
    if (pt_router_new(cfg, &router, err, sizeof err) != 0) {
        fprintf(stderr, "portico: %s\n", err);
        return 1;
    }
    struct sockaddr_storage addr;
    if (pt_worker_resolve(cfg->listen_host, cfg->listen_port, &addr) != 0) {
        fprintf(stderr, "portico: %s: cannot resolve listen address %s\n", path, cfg->listen_host);
        return 1;
    }
    int n = cfg->workers > 0 ? cfg->workers : (int)uv_available_parallelism();
    pt__main_t m = {.workers = calloc((size_t)n, sizeof(pt_worker_t)), .n = 0};
    uv_sem_t started;
    uv_sem_init(&started, 0);
    int failed = 0;
    for (int i = 0; i < n && !failed; i++) {
        pt_worker_t *w = &m.workers[i];
        w->id = i + 1;
        w->cfg = cfg;
        w->router = router;
        w->addr = addr;
        w->started = &started;
        w->max_conns = (cfg->max_connections + (uint64_t)n - 1) / (uint64_t)n;
        if (pt_worker_start(w) != 0) {
            failed = 1;
            break;
        }
        m.n++;
        uv_sem_wait(&started);
        if (w->start_rc != 0) {
            pt_log_error("worker %d: %s", w->id, w->start_err);
            failed = 1;
        }
    }

    uv_loop_t *loop = uv_default_loop();
    uv_signal_t sigterm, sigint;
    uv_signal_init(loop, &sigterm);
    uv_signal_init(loop, &sigint);
    sigterm.data = sigint.data = &m;
    if (!failed) {
        pt_log_info("portico %s listening on %s:%d with %d workers, %zu services, %zu channels",
                    PT_VERSION, cfg->listen_host, cfg->listen_port, n, n_services,
                    cfg->n_channels);
        uv_signal_start(&sigterm, pt__on_signal, SIGTERM);
        uv_signal_start(&sigint, pt__on_signal, SIGINT);
        uv_run(loop, UV_RUN_DEFAULT);
    } else {
        for (int i = 0; i < m.n; i++)
            if (m.workers[i].start_rc == 0)
                pt_worker_stop(&m.workers[i]);
    }
    for (int i = 0; i < m.n; i++)
        pt_worker_join(&m.workers[i]);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    uv_sem_destroy(&started);
    if (!failed)
        pt_log_info("stopped");
    free(m.workers);
    pt_router_free(router);
    pt_config_free(cfg);
    return failed ? 1 : 0;
}
