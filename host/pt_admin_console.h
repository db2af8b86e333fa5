/* pt_admin_console: the admin listener's gate and static files for the
 * console (docs/console.md).
 *
 * Credentials: when admin.users is set, every admin request but the probes
 * (/healthz, /readyz, /metrics while admin.open_probes) needs HTTP basic
 * credentials of one of them; a wrong or missing one is a 401 with a
 * WWW-Authenticate challenge. The argon2id check runs on the main thread,
 * so a verified (user, password) is remembered for 60 s (keyed BLAKE2b of
 * it, never the password), and at most PT_ADMIN_AUTH_PER_SEC uncached checks
 * run a second (each blocks the main loop for one argon2id run): past that,
 * 429.
 *
 * CSRF: basic credentials are ambient in a browser, so a POST is refused
 * (403) when its Origin is not the admin listener's own (http://Host), when
 * Sec-Fetch-Site says cross-site or same-site, and, with admin.users set,
 * when it lacks the header X-Portico-Console: 1 (which no cross-origin form
 * or simple request can send).
 *
 * Files: GET / is console/index.html, GET /console/NAME the file NAME,
 * each with a strict Content-Security-Policy (self only, no inline code). */
#ifndef PT_ADMIN_CONSOLE_H
#define PT_ADMIN_CONSOLE_H

#include "pt_config_admin.h"
#include "pt_util.h"

#include <stddef.h>
#include <stdint.h>

#define PT_ADMIN_AUTH_PER_SEC 3
#define PT_ADMIN_AUTH_TTL_MS 60000

/* The request headers the gate reads (NULL: absent; "" never). */
typedef struct {
    const char *authorization;
    const char *origin;
    const char *host;
    const char *sec_fetch_site;
    const char *console; /* X-Portico-Console */
} pt_admin_headers_t;

/* Whether path needs credentials when users are configured. */
int pt_admin_console_protected(const pt_config_admin_t *cfg, const char *path, size_t len);

/* Checks the credentials. Returns 0 (let through), 401 or 429, with the
 * error body in body and the extra header lines in headers. now_ms: a
 * monotonic clock. */
int pt_admin_console_auth(const pt_config_admin_t *cfg, const pt_admin_headers_t *h,
                          uint64_t now_ms, pt_buf_t *body, pt_buf_t *headers);

/* The CSRF checks of a POST. Returns 0 or 403 (body says why). */
int pt_admin_console_csrf(const pt_config_admin_t *cfg, const pt_admin_headers_t *h,
                          pt_buf_t *body);

/* Serves GET / and GET /console/NAME: returns 200 (file in body, its type in
 * *ctype, the security headers in headers), 404 for a /console/ name that
 * is no file, or 0 when path is neither. */
int pt_admin_console_file(const char *path, size_t len, pt_buf_t *body, const char **ctype,
                          pt_buf_t *headers);

/* The headers every console answer carries (CSP and friends), CRLF-ended. */
extern const char pt_admin_console_security_headers[];

#endif
