/* pt_accesslog: one JSON line per request, to stdout or a file.
 * Each worker appends lines to its own buffer and writes the buffer once per
 * loop iteration (pt_accesslog_flush from a uv_check handle), so a busy
 * worker makes one write(2) for many requests. The file is opened with
 * O_APPEND and reopened in place (dup2 onto the same descriptor) on SIGUSR1,
 * so log rotation needs no restart and no coordination with the workers. */
#ifndef PT_ACCESSLOG_H
#define PT_ACCESSLOG_H

#include "pt_util.h"

#include <stddef.h>
#include <stdint.h>

/* Opens the process-wide access log: "stdout", "off", or a file path.
 * Returns 0, or -1 with a message in err. Main thread, before workers start. */
int pt_accesslog_open(const char *target, char *err, size_t errlen);

/* Reopens the file (after rotation). Returns 0 or -1 (the old file stays). */
int pt_accesslog_reopen(void);

/* Non-zero when access logging is on. */
int pt_accesslog_enabled(void);

/* One request, as the worker saw it. Strings may be NULL. */
typedef struct {
    const char *cid;
    const char *channel;
    const char *service;
    const char *method;
    const char *path; /* without the query string, which may carry secrets */
    size_t path_len;
    int status;
    size_t bytes;
    uint64_t duration_us;
    const char *username;
    const char *client; /* the client's address (pt_http_client: past trusted proxies) */
    const char *peer;   /* the TCP peer */
    const char *xff;    /* X-Forwarded-For as a trusted peer sent it (else NULL) */
    size_t xff_len;
    const char *user_agent;
    size_t user_agent_len;
    const char *query; /* without '?'; parameters named in redact are hidden */
    size_t query_len;
    const char *upstream; /* "host:port" of the proxy's target, "amqp:EXCHANGE" of a bus */
    uint64_t upstream_us; /* time to the upstream's answer (head) */
    char *const *redact;  /* more query parameter names to hide (any case) */
    size_t n_redact;
    const char *trace_id; /* 32 hex digits, or NULL when tracing is off */
} pt_accesslog_entry_t;

/* Appends a line to buf (the worker's own). Every string is JSON-escaped,
 * so no value can end the line or add a field. */
void pt_accesslog_append(pt_buf_t *buf, const pt_accesslog_entry_t *e);

/* Appends value as a JSON string ("null" for NULL); bytes that are not
 * UTF-8 become \u00XX escapes, so the line stays JSON whatever came in. */
void pt_accesslog_string(pt_buf_t *b, const char *value, size_t len);

/* Query parameters always hidden: their value becomes "[REDACTED]". */
extern const char *const pt_accesslog_redact_default[];

/* Appends q with the values of the parameters named in the defaults or in
 * extra (compared decoded, any case) replaced by [REDACTED]. */
void pt_accesslog_redact_query(pt_buf_t *b, const char *q, size_t len, char *const *extra,
                               size_t n_extra);

/* Writes buf out and empties it. */
void pt_accesslog_flush(pt_buf_t *buf);

/* Closes the log (at exit). */
void pt_accesslog_close(void);

#endif
