/* pt_admin: the admin listener on the main thread, on its own address
 * (admin.listen), off the public port. GET /healthz, GET /readyz,
 * GET /metrics, GET /scheduler, GET /cluster, GET /openapi.json, POST /reload,
 * and the console (GET /, /console/..., behind admin.users:
 * pt_admin_console.h). One request a connection, within 5 s of the accept
 * and 64 KB; at most 32 connections, past which the oldest unanswered one is
 * closed. Also the client side that `portico reload` uses. */
#ifndef PT_ADMIN_H
#define PT_ADMIN_H

#include "pt_config.h"
#include "pt_util.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct pt_admin_s pt_admin_t;

/* What the admin listener asks of the process (pt_server gives it these),
 * each called on the loop's thread with ud. */
typedef struct {
    /* Non-zero while the process serves: every worker listens, no drain began. */
    int (*ready)(void *ud);
    /* The config generation serving now. */
    uint64_t (*generation)(void *ud);
    /* Reloads the config file. Returns 0 (accepted: generation is the new
     * one), or -1 with the reason in err (the old config keeps serving). */
    int (*reload)(void *ud, char *err, size_t errlen);
    /* Appends the Prometheus text exposition of every figure to out. */
    void (*metrics)(void *ud, pt_buf_t *out);
    /* Appends the JSON of the scheduler's jobs (GET /scheduler). */
    void (*scheduler)(void *ud, pt_buf_t *out);
    /* Appends the JSON of the cluster's nodes (GET /cluster, pt_cluster.h).
     * Returns 0, or -1 when the node has no cluster: section (404). NULL: 404. */
    int (*cluster)(void *ud, pt_buf_t *out);
    /* Appends the OpenAPI document (GET /openapi.json, pt_openapi.h). Returns
     * 0, or -1 with the reason in err. NULL: 404. */
    int (*openapi)(void *ud, pt_buf_t *out, char *err, size_t errlen);
    /* The config serving now (admin.users for the console's gate). */
    const pt_config_t *(*config)(void *ud);
    /* The console's JSON (GET /console/api/state and /console/api/stats). */
    void (*console_state)(void *ud, pt_buf_t *out);
    void (*console_stats)(void *ud, pt_buf_t *out);
} pt_admin_ops_t;

/* Starts listening on loop when cfg has admin.listen (*out stays NULL when it
 * has none); ops and ud must outlive the listener. Returns 0, or -1 with a
 * message in err. */
int pt_admin_start(uv_loop_t *loop, const pt_config_t *cfg, const pt_admin_ops_t *ops, void *ud,
                   pt_admin_t **out, char *err, size_t errlen);

/* Closes the listener and open admin connections (on the loop). NULL is fine. */
void pt_admin_stop(pt_admin_t *a);

/* Blocking client: sends "METHOD path" to host:port and reads the answer,
 * with the basic credentials of PORTICO_ADMIN_AUTH ("user:password") when
 * that is set, and X-Portico-Console: 1.
 * Returns the HTTP status and the body in out (NUL-terminated), or -1 when
 * nothing answered (err says why). */
int pt_admin_request(const char *host, int port, const char *method, const char *path, char *out,
                     size_t outlen, char *err, size_t errlen);

#endif
