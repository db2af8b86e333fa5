/* pt_log: the error log. One JSON object per line on stderr, written with a
 * single write(2) so lines from different threads never interleave. */
#ifndef PT_LOG_H
#define PT_LOG_H

#include <stddef.h>

typedef enum { PT_LOG_DEBUG = 0, PT_LOG_INFO, PT_LOG_WARN, PT_LOG_ERROR } pt_log_level_t;

/* Sets the lowest level that is written (process-wide). */
void pt_log_set_level(pt_log_level_t level);

/* Parses "debug" | "info" | "warn" | "error"; returns 0 or -1. */
int pt_log_parse_level(const char *name, pt_log_level_t *out);

/* Names this thread's worker in every line it logs (0 = main thread). */
void pt_log_set_worker(int worker);

/* Returns non-zero when a line of this level would be written. */
int pt_log_enabled(pt_log_level_t level);

/* Writes {"time","level","worker","msg"} plus "cid"/"service" when not NULL.
 * msg is JSON-escaped here; callers never log secrets. */
void pt_log_write(pt_log_level_t level, const char *cid, const char *service, const char *msg,
                  size_t msg_len);

/* printf-style convenience over pt_log_write. */
void pt_log(pt_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define pt_log_debug(...) pt_log(PT_LOG_DEBUG, __VA_ARGS__)
#define pt_log_info(...) pt_log(PT_LOG_INFO, __VA_ARGS__)
#define pt_log_warn(...) pt_log(PT_LOG_WARN, __VA_ARGS__)
#define pt_log_error(...) pt_log(PT_LOG_ERROR, __VA_ARGS__)

#endif
