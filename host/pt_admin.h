/* pt_admin: the admin listener on the main thread, on its own address
 * (admin.listen), off the public port. GET /healthz, GET /readyz,
 * GET /metrics, POST /reload. One request a connection, within 5 s of the
 * accept and 64 KB; at most 32 connections, past which the oldest
 * unanswered one is closed. Also the client side that `portico reload` uses. */
#ifndef PT_ADMIN_H
#define PT_ADMIN_H

#include <stddef.h>

struct pt_server_s;
typedef struct pt_admin_s pt_admin_t;

/* Starts listening when the config has admin.listen; *out stays NULL when it
 * has none. Returns 0, or -1 with a message in err. */
int pt_admin_start(struct pt_server_s *s, pt_admin_t **out, char *err, size_t errlen);

/* Closes the listener and open admin connections (on the loop). NULL is fine. */
void pt_admin_stop(pt_admin_t *a);

/* Blocking client: sends "METHOD path" to host:port and reads the answer.
 * Returns the HTTP status and the body in out (NUL-terminated), or -1 when
 * nothing answered (err says why). */
int pt_admin_request(const char *host, int port, const char *method, const char *path, char *out,
                     size_t outlen, char *err, size_t errlen);

#endif
