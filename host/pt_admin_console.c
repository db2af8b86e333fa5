#include "pt_admin_console.h"
#include "pt_console_assets.h"

#include <sodium.h>

#include <stdio.h>
#include <string.h>

const char pt_admin_console_security_headers[] =
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "X-Frame-Options: DENY\r\n"
    "Referrer-Policy: no-referrer\r\n"
    "Cache-Control: no-store\r\n";

int pt_admin_console_protected(const pt_config_admin_t *cfg, const char *path, size_t len)
{
    static const char *const probes[] = {"/healthz", "/readyz", "/metrics"};
    if (cfg->n_users == 0) return 0;
    if (!cfg->open_probes) return 1;
    for (size_t i = 0; i < 3; i++)
        if (strlen(probes[i]) == len && memcmp(probes[i], path, len) == 0) return 0;
    return 1;
}

/* Verified credentials, remembered so that the page's polling costs no
 * argon2id run each time. */
#define PT__AUTH_SLOTS 8
static struct {
    unsigned char tag[crypto_generichash_BYTES];
    char hash[128]; /* the password_hash it matched: a reload that changes it forgets it */
    char user[PT_ADMIN_USERNAME_MAX + 1];
    uint64_t until_ms;
} pt__slots[PT__AUTH_SLOTS];
static unsigned char pt__key[crypto_generichash_KEYBYTES];
static int pt__keyed;
static uint64_t pt__window_ms, pt__window_checks;

static int pt__refuse(int status, const char *msg, pt_buf_t *body, pt_buf_t *headers)
{
    if (status == 401)
        pt_buf_puts(headers,
                    "WWW-Authenticate: Basic realm=\"portico admin\", charset=\"UTF-8\"\r\n");
    if (status == 429) pt_buf_puts(headers, "Retry-After: 1\r\n");
    pt_buf_printf(body, "{\"error\":{\"status\":%d,\"message\":\"%s\"}}", status, msg);
    return status;
}

int pt_admin_console_auth(const pt_config_admin_t *cfg, const pt_admin_headers_t *h,
                          uint64_t now_ms, pt_buf_t *body, pt_buf_t *headers)
{
    if (cfg->n_users == 0) return 0;
    const char *v = h->authorization;
    if (!v) return pt__refuse(401, "admin credentials required", body, headers);
    if (strncasecmp(v, "Basic ", 6) != 0)
        return pt__refuse(401, "admin credentials must be HTTP basic", body, headers);
    v += 6;
    while (*v == ' ')
        v++;
    unsigned char dec[512];
    size_t n = 0;
    if (strlen(v) > 680 || sodium_base642bin(dec, sizeof dec - 1, v, strlen(v), NULL, &n, NULL,
                                             sodium_base64_VARIANT_ORIGINAL) != 0)
        return pt__refuse(401, "malformed basic credentials", body, headers);
    dec[n] = '\0';
    unsigned char *colon = memchr(dec, ':', n);
    if (!colon) return pt__refuse(401, "malformed basic credentials", body, headers);
    size_t ulen = (size_t)(colon - dec);
    const char *pass = (const char *)colon + 1;
    size_t plen = n - ulen - 1;
    const pt_admin_user_t *user = NULL;
    for (size_t i = 0; i < cfg->n_users && !user; i++)
        if (strlen(cfg->users[i].username) == ulen &&
            memcmp(cfg->users[i].username, dec, ulen) == 0)
            user = &cfg->users[i];
    if (!pt__keyed) {
        if (sodium_init() < 0) return pt__refuse(401, "cannot check credentials", body, headers);
        randombytes_buf(pt__key, sizeof pt__key);
        pt__keyed = 1;
    }
    unsigned char tag[crypto_generichash_BYTES];
    crypto_generichash(tag, sizeof tag, dec, n, pt__key, sizeof pt__key);
    for (int i = 0; user && i < PT__AUTH_SLOTS; i++)
        if (pt__slots[i].until_ms > now_ms && strcmp(pt__slots[i].hash, user->password_hash) == 0 &&
            sodium_memcmp(pt__slots[i].tag, tag, sizeof tag) == 0) {
            sodium_memzero(dec, sizeof dec);
            return 0;
        }
    if (now_ms - pt__window_ms >= 1000) {
        pt__window_ms = now_ms;
        pt__window_checks = 0;
    }
    if (++pt__window_checks > PT_ADMIN_AUTH_PER_SEC) {
        sodium_memzero(dec, sizeof dec);
        return pt__refuse(429, "too many admin credential checks, try again in a second", body,
                          headers);
    }
    /* an unknown user costs the same run, against the first user's hash */
    const char *hash = user ? user->password_hash : cfg->users[0].password_hash;
    int ok = crypto_pwhash_str_verify(hash, pass, plen) == 0 && user;
    sodium_memzero(dec, sizeof dec);
    if (!ok) return pt__refuse(401, "wrong admin credentials", body, headers);
    int slot = 0;
    for (int i = 1; i < PT__AUTH_SLOTS; i++)
        if (pt__slots[i].until_ms < pt__slots[slot].until_ms) slot = i;
    memcpy(pt__slots[slot].tag, tag, sizeof tag);
    snprintf(pt__slots[slot].hash, sizeof pt__slots[slot].hash, "%s", user->password_hash);
    snprintf(pt__slots[slot].user, sizeof pt__slots[slot].user, "%s", user->username);
    pt__slots[slot].until_ms = now_ms + PT_ADMIN_AUTH_TTL_MS;
    return 0;
}

int pt_admin_console_csrf(const pt_config_admin_t *cfg, const pt_admin_headers_t *h, pt_buf_t *body)
{
    const char *why = NULL;
    if (h->sec_fetch_site && strcmp(h->sec_fetch_site, "same-origin") != 0 &&
        strcmp(h->sec_fetch_site, "none") != 0)
        why = "cross-site request refused (Sec-Fetch-Site)";
    else if (h->origin && (!h->host || strncmp(h->origin, "http://", 7) != 0 ||
                           strcmp(h->origin + 7, h->host) != 0))
        why = "cross-origin request refused (Origin is not this admin listener)";
    else if (cfg->n_users && (!h->console || strcmp(h->console, "1") != 0))
        why = "a POST needs the header X-Portico-Console: 1 (CSRF protection)";
    if (!why) return 0;
    pt_buf_printf(body, "{\"error\":{\"status\":403,\"message\":\"%s\"}}", why);
    return 403;
}

static const char *pt__type(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot) return "application/octet-stream";
    if (!strcmp(dot, ".html")) return "text/html; charset=utf-8";
    if (!strcmp(dot, ".css")) return "text/css; charset=utf-8";
    if (!strcmp(dot, ".js")) return "text/javascript; charset=utf-8";
    if (!strcmp(dot, ".svg")) return "image/svg+xml";
    if (!strcmp(dot, ".png")) return "image/png";
    return "application/octet-stream";
}

int pt_admin_console_file(const char *path, size_t len, pt_buf_t *body, const char **ctype,
                          pt_buf_t *headers)
{
    const char *name;
    size_t nlen;
    if (len == 1 && path[0] == '/') {
        name = "index.html";
        nlen = 10;
    } else if (len > 9 && memcmp(path, "/console/", 9) == 0) {
        name = path + 9;
        nlen = len - 9;
        if (memchr(name, '/', nlen)) return 0; /* /console/api/... and nothing deeper */
    } else {
        return 0;
    }
    const pt_console_asset_t *f = pt_console_asset(name, nlen);
    if (!f) {
        pt_buf_puts(body, "{\"error\":{\"status\":404,\"message\":\"not found\"}}");
        return 404;
    }
    pt_buf_append(body, (const char *)f->data, f->len);
    *ctype = pt__type(f->name);
    pt_buf_puts(headers, pt_admin_console_security_headers);
    return 200;
}
