#include "pt_accesslog.h"
#include "pt_json.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static int pt__fd = -1;
static char *pt__path; /* NULL for stdout */

int pt_accesslog_open(const char *target, char *err, size_t errlen)
{
    pt_accesslog_close();
    if (!target || strcmp(target, "off") == 0) return 0;
    if (strcmp(target, "stdout") == 0) {
        pt__fd = STDOUT_FILENO;
        return 0;
    }
    int fd = open(target, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open access log %s: %s", target, strerror(errno));
        return -1;
    }
    pt__fd = fd;
    pt__path = strdup(target);
    return 0;
}

int pt_accesslog_reopen(void)
{
    if (!pt__path) return 0;
    int fd = open(pt__path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) return -1;
    /* dup2 swaps the file under the same number: workers never see a gap. */
    int rc = dup2(fd, pt__fd) < 0 ? -1 : 0;
    close(fd);
    return rc;
}

int pt_accesslog_enabled(void)
{
    return pt__fd >= 0;
}

void pt_accesslog_string(pt_buf_t *b, const char *value, size_t len)
{
    if (!value) {
        pt_buf_puts(b, "null");
        return;
    }
    pt_buf_append(b, "\"", 1);
    size_t bad;
    if (pt_utf8_check(value, len, &bad) == 0) {
        pt_buf_json_escape(b, value, len);
    } else { /* not UTF-8 (a hostile header): each byte past ASCII as \u00XX */
        for (size_t i = 0; i < len; i++) {
            unsigned char ch = (unsigned char)value[i];
            if (ch < 0x80)
                pt_buf_json_escape(b, value + i, 1);
            else
                pt_buf_printf(b, "\\u%04x", ch);
        }
    }
    pt_buf_append(b, "\"", 1);
}

static void pt__field(pt_buf_t *b, const char *name, const char *value, size_t len)
{
    pt_buf_printf(b, ",\"%s\":", name);
    pt_accesslog_string(b, value, len);
}

const char *const pt_accesslog_redact_default[] = {
    "token",   "access_token", "id_token", "refresh_token", "api_key", "apikey",
    "api-key", "key",          "password", "passwd",        "secret",  "client_secret",
    "code",    "signature",    "sig",      "auth",          NULL};

static int pt__redacted(const char *name, char *const *extra, size_t n_extra)
{
    for (size_t i = 0; pt_accesslog_redact_default[i]; i++)
        if (strcasecmp(name, pt_accesslog_redact_default[i]) == 0) return 1;
    for (size_t i = 0; i < n_extra; i++)
        if (strcasecmp(name, extra[i]) == 0) return 1;
    return 0;
}

void pt_accesslog_redact_query(pt_buf_t *b, const char *q, size_t len, char *const *extra,
                               size_t n_extra)
{
    size_t i = 0;
    while (i < len) {
        size_t amp = i;
        while (amp < len && q[amp] != '&')
            amp++;
        const char *eq = memchr(q + i, '=', amp - i);
        size_t name_end = eq ? (size_t)(eq - q) : amp;
        char name[130];
        long n = name_end - i < 128 ? pt_percent_decode(q + i, name_end - i, name, 1) : -1;
        if (n >= 0) name[n] = '\0';
        if (eq && (n < 0 || memchr(name, '\0', (size_t)n) || pt__redacted(name, extra, n_extra))) {
            /* a name too long or malformed to check is hidden too */
            pt_buf_append(b, q + i, name_end - i + 1);
            pt_buf_puts(b, "[REDACTED]");
        } else {
            pt_buf_append(b, q + i, amp - i);
        }
        if (amp < len) pt_buf_append(b, "&", 1);
        i = amp + 1;
    }
}

void pt_accesslog_append(pt_buf_t *b, const pt_accesslog_entry_t *e)
{
    char now[32];
    pt_utcnow(now);
    pt_buf_printf(b, "{\"time\":\"%sZ\"", now);
    pt__field(b, "cid", e->cid, e->cid ? strlen(e->cid) : 0);
    pt__field(b, "channel", e->channel, e->channel ? strlen(e->channel) : 0);
    pt__field(b, "service", e->service, e->service ? strlen(e->service) : 0);
    pt__field(b, "method", e->method, e->method ? strlen(e->method) : 0);
    pt__field(b, "path", e->path, e->path_len);
    pt_buf_printf(b, ",\"status\":%d,\"bytes\":%zu,\"duration_ms\":%.3f", e->status, e->bytes,
                  (double)e->duration_us / 1000.0);
    pt__field(b, "username", e->username, e->username ? strlen(e->username) : 0);
    pt__field(b, "client", e->client, e->client ? strlen(e->client) : 0);
    pt__field(b, "peer", e->peer, e->peer ? strlen(e->peer) : 0);
    pt__field(b, "xff", e->xff, e->xff_len);
    pt__field(b, "user_agent", e->user_agent, e->user_agent_len);
    if (e->query && e->query_len) {
        pt_buf_t q = {0};
        pt_accesslog_redact_query(&q, e->query, e->query_len, e->redact, e->n_redact);
        pt__field(b, "query", q.data ? q.data : "", q.len);
        pt_buf_free(&q);
    } else {
        pt__field(b, "query", NULL, 0);
    }
    pt__field(b, "upstream", e->upstream, e->upstream ? strlen(e->upstream) : 0);
    if (e->upstream)
        pt_buf_printf(b, ",\"upstream_ms\":%.3f", (double)e->upstream_us / 1000.0);
    else
        pt_buf_puts(b, ",\"upstream_ms\":null");
    if (e->trace_id) pt__field(b, "trace_id", e->trace_id, strlen(e->trace_id));
    pt_buf_puts(b, "}\n");
}

void pt_accesslog_flush(pt_buf_t *b)
{
    size_t off = 0;
    while (pt__fd >= 0 && off < b->len) {
        ssize_t n = write(pt__fd, b->data + off, b->len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        off += (size_t)n;
    }
    b->len = 0;
}

void pt_accesslog_close(void)
{
    if (pt__fd > STDERR_FILENO) close(pt__fd);
    pt__fd = -1;
    free(pt__path);
    pt__path = NULL;
}
