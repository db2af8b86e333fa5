#include "pt_accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static void pt__field(pt_buf_t *b, const char *name, const char *value, size_t len)
{
    pt_buf_printf(b, ",\"%s\":", name);
    if (!value) {
        pt_buf_puts(b, "null");
        return;
    }
    pt_buf_append(b, "\"", 1);
    pt_buf_json_escape(b, value, len);
    pt_buf_append(b, "\"", 1);
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
