/* pt_audit: the audit trail (docs/observability.md, "Audit log"). For each
 * request on a channel named in audit.channels, one JSON line with the cid,
 * the trace id, the channel, service, user and status, the request's
 * headers and body and the response's body, each body cut at
 * audit.max_body (marked "truncated") after secrets were hidden: headers by
 * name (built-in: authorization, proxy-authorization, cookie, set-cookie,
 * and any name holding token, secret, password or api-key; more in
 * audit.redact_headers) and JSON bodies by path (audit.redact_json: $.a.b,
 * $..key; built-in $..password, $..token and the like).
 *
 * The worker makes the line (only for audited channels) and hands it to one
 * writer thread through a queue bounded by bytes (audit.max_queue): a sink
 * that is slow or failing never holds a request up; what does not fit is
 * dropped and counted (portico_audit_lines_total{result="dropped"}). The
 * writer appends to audit.file (or hands each line to a sink function, the
 * AMQP one); SIGUSR1 reopens the file. */
#ifndef PT_AUDIT_H
#define PT_AUDIT_H

#include "pt_config_obs.h"
#include "pt_metrics.h"
#include "pt_util.h"

#include <stddef.h>
#include <stdint.h>

/* A sink other than a file: called on the writer thread with one line (no
 * newline); returns 0 (written), -1 (lost: counted as failed), or 1 when
 * the sink counts it itself later (pt_metrics_audit). */
typedef int (*pt_audit_sink_fn)(void *ud, const char *line, size_t len);

/* Starts the writer for o's file (or sink when not NULL). Does nothing when
 * o names no audited channel. A FIFO without a reader yet is opened by the
 * writer thread (blocking there, never here). Returns 0, or -1 with a
 * message in err. Main thread, before the workers start. */
int pt_audit_start(const pt_config_obs_t *o, pt_audit_sink_fn sink, void *sink_ud, char *err,
                   size_t errlen);

/* Stops the writer after it wrote what is queued (at exit). */
void pt_audit_stop(void);

/* Asks the writer to reopen its file (SIGUSR1). */
void pt_audit_reopen(void);

/* Non-zero when a writer runs. */
int pt_audit_running(void);

typedef struct {
    const char *name, *value;
    size_t name_len, value_len;
} pt_audit_header_t;

/* One request, as the worker saw it at its answer. Strings may be NULL. */
typedef struct {
    const char *cid, *channel, *service, *username, *method;
    const char *path;
    size_t path_len;
    const char *query; /* hidden as in the access log (pt_accesslog_redact_query) */
    size_t query_len;
    const char *traceparent; /* the request's, if any: its trace id when valid */
    size_t traceparent_len;
    int status;
    const pt_audit_header_t *headers;
    size_t n_headers;
    const char *req_body; /* NULL: streamed, not seen */
    size_t req_body_len;
    const char *resp_ctype;
    size_t resp_ctype_len;
    const char *resp_body; /* NULL: streamed, not seen */
    size_t resp_body_len;
    size_t resp_bytes;
} pt_audit_record_t;

/* Makes r's line under o's redactions and queues it (any worker thread);
 * drops and counts it when the queue is full. */
void pt_audit_submit(const pt_config_obs_t *o, const pt_audit_record_t *r);

/* Formats r's line into b (no newline): what submit queues. For tests. */
void pt_audit_format(const pt_config_obs_t *o, const pt_audit_record_t *r, pt_buf_t *b);

/* The trace id (32 lowercase hex digits) of a valid W3C traceparent into
 * out (33 bytes); returns 1, or 0 when v is not one. */
int pt_audit_trace_id(const char *v, size_t len, char *out);

/* Lines written, dropped and failed: pt_metrics_audit (pt_metrics.h). */

#endif
