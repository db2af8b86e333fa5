#include "pt_log.h"
#include "pt_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile int pt__log_level = PT_LOG_INFO;
static __thread int pt__log_worker;
static const char *const pt__level_names[] = {"debug", "info", "warn", "error"};

void pt_log_set_level(pt_log_level_t level)
{
    pt__log_level = level;
}

int pt_log_parse_level(const char *name, pt_log_level_t *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, pt__level_names[i]) == 0) {
            *out = (pt_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

void pt_log_set_worker(int worker)
{
    pt__log_worker = worker;
}

int pt_log_enabled(pt_log_level_t level)
{
    return (int)level >= pt__log_level;
}

void pt_log_write(pt_log_level_t level, const char *cid, const char *service, const char *msg,
                  size_t msg_len)
{
    if (!pt_log_enabled(level)) return;
    char now[32];
    pt_utcnow(now);
    pt_buf_t b = {0};
    pt_buf_printf(&b, "{\"time\":\"%sZ\",\"level\":\"%s\",\"worker\":%d", now,
                  pt__level_names[level], pt__log_worker);
    if (cid) {
        pt_buf_puts(&b, ",\"cid\":\"");
        pt_buf_json_escape(&b, cid, strlen(cid));
        pt_buf_puts(&b, "\"");
    }
    if (service) {
        pt_buf_puts(&b, ",\"service\":\"");
        pt_buf_json_escape(&b, service, strlen(service));
        pt_buf_puts(&b, "\"");
    }
    pt_buf_puts(&b, ",\"msg\":\"");
    pt_buf_json_escape(&b, msg, msg_len);
    if (pt_buf_puts(&b, "\"}\n") == 0) {
        size_t off = 0;
        while (off < b.len) {
            ssize_t n = write(STDERR_FILENO, b.data + off, b.len - off);
            if (n <= 0) break;
            off += (size_t)n;
        }
    }
    pt_buf_free(&b);
}

void pt_log(pt_log_level_t level, const char *fmt, ...)
{
    if (!pt_log_enabled(level)) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof msg) n = sizeof msg - 1;
    pt_log_write(level, NULL, NULL, msg, (size_t)n);
}
