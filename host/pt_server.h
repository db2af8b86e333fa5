/* pt_server: the process on the main thread. Owns the current config
 * snapshot, a reference Lua VM that mirrors what the workers run (every
 * change is checked there first), the service-file and library watchers, the signals and
 * the admin listener. Workers only ever receive changes that passed. */
#ifndef PT_SERVER_H
#define PT_SERVER_H

#include "pt_lua.h"
#include "pt_server_console.h"
#include "pt_snapshot.h"
#include "pt_util.h"
#include "pt_watch.h"
#include "pt_worker.h"

#include <uv.h>

typedef struct pt_admin_s pt_admin_t;
struct pt_scheduler_s;
struct pt_cluster_s;

typedef struct pt_server_s {
    const char *config_path;
    uv_loop_t *loop;
    pt_snapshot_t *snap;  /* the accepted config */
    pt_config_t *started; /* the start's config, loaded on its own (no caches kept):
                           * what restart-only settings run with; reloads compare with it */
    pt_lua_t *ref_vm;     /* services as the workers run them */
    pt_worker_t *workers;
    int n_workers;
    pt_watch_t watch;
    pt_watch_t lib_watch; /* lua.lib_dirs: a change reloads the services that use it */
    uv_signal_t sigterm, sigint, sighup, sigusr1;
    pt_admin_t *admin;
    struct pt_scheduler_s *sched; /* scheduler: jobs (pt_scheduler.h) */
    struct pt_cluster_s *cluster; /* cluster: the node registry (pt_cluster.h); NULL: none */
    int ready;                    /* every worker listens */
    int stopping;                 /* a drain has begun */
    uint64_t reloads, reload_failures;
    pt_buf_t openapi; /* GET /openapi.json's text, made on first ask after a change */
    int openapi_made; /* openapi holds the document of the services and config now */

    pt_console_t console;      /* services' files and recent reloads (the admin console) */
    const char *reload_source; /* who asked for the reload under way: "admin", else "signal" */
} pt_server_t;

/* Loads config_path and every service the way a worker would, and checks
 * that channels name loaded services. Returns 0, or -1 after printing
 * "file:line: message" to stderr. */
int pt_server_check(const char *config_path);

/* `portico openapi`: loads config_path and its services as pt_server_check
 * does and prints the OpenAPI document that GET /openapi.json of the admin
 * listener serves for them. Returns 0, or -1 after printing the error. */
int pt_server_openapi(const char *config_path);

/* Runs the gateway until SIGTERM/SIGINT and the drain are over. Returns the
 * process exit code (0 after a clean drain). */
int pt_server_run(const char *config_path);

/* Reloads the config file (SIGHUP, admin POST /reload): builds and checks the
 * new snapshot whole, then swaps it into every worker. On refusal the old
 * config keeps serving. Returns 0 (accepted) or -1 with the reason in err. */
int pt_server_reload(pt_server_t *s, char *err, size_t errlen);

#endif
