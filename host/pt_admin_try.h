/* pt_admin_try: the API explorer's "send a request" (POST /console/api/try
 * on the admin listener). It sends one request to this gateway's own public
 * listener (server.listen; 0.0.0.0 and :: as loopback) and hands back the
 * answer as JSON. The target is fixed, so it is no open proxy: the request
 * meets the channel's security, limits and logs like any client's. Input,
 * as JSON: {"method": "GET", "path": "/api/x?y=1", "headers": {"name":
 * "value"}, "body": "text"}: a method of GET HEAD POST PUT PATCH DELETE
 * OPTIONS, a path of visible ASCII starting with '/' (at most 2048 bytes), at
 * most 32 headers with token names (not Host, Content-Length,
 * Transfer-Encoding, Connection, Upgrade, TE, Keep-Alive, Expect, Proxy-*),
 * values without control bytes. The answer: {"status", "headers":{...},
 * "body", "truncated"}, the body cut at 256 KB; the exchange has
 * PT_ADMIN_TRY_TIMEOUT_MS. Main thread. */
#ifndef PT_ADMIN_TRY_H
#define PT_ADMIN_TRY_H

#include "pt_config.h"
#include "pt_util.h"

#include <stddef.h>
#include <uv.h>

#define PT_ADMIN_TRY_TIMEOUT_MS 4000
#define PT_ADMIN_TRY_MAX_BODY (256 * 1024)

typedef struct pt_admin_try_s pt_admin_try_t;

/* The exchange is over: status 200 with the answer's JSON in body, or 502 /
 * 504 with an error body. Called once, from the loop, unless cancelled. */
typedef void (*pt_admin_try_cb)(void *ud, int status, const pt_buf_t *body);

/* Checks the request JSON and starts the exchange. Returns 0 (started:
 * *out set) or 400 with the reason's error JSON in err_body. */
int pt_admin_try_start(uv_loop_t *loop, const pt_config_t *cfg, const char *json, size_t len,
                       pt_admin_try_cb cb, void *ud, pt_admin_try_t **out, pt_buf_t *err_body);

/* Ends an exchange under way without calling its callback. */
void pt_admin_try_cancel(pt_admin_try_t *t);

#endif
