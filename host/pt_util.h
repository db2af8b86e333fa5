/* pt_util: small helpers shared by the host: growable buffers, bounded string
 * copies, JSON string escaping, time formatting, correlation ids, durations
 * and sizes. */
#ifndef PT_UTIL_H
#define PT_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A growable byte buffer. Owns data (malloc); pt_buf_free releases it. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} pt_buf_t;

/* Ensures room for extra more bytes; returns 0 or -1 (out of memory). */
int pt_buf_reserve(pt_buf_t *b, size_t extra);
/* Appends n bytes; returns 0 or -1. */
int pt_buf_append(pt_buf_t *b, const void *p, size_t n);
/* Appends a NUL-terminated string; returns 0 or -1. */
int pt_buf_puts(pt_buf_t *b, const char *s);
/* Appends printf-style text; returns 0 or -1. */
int pt_buf_printf(pt_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* 1 when s[0..n) is a host name or IP literal by its bytes: 1 to 253 of
 * letters, digits, '.', '-', '_' and ':' (what SNI, a certificate check and
 * a Redis URL take), else 0. */
int pt_host_name_ok(const char *s, size_t n);
/* Writes the decimal digits of v at out (room for 20; no NUL, no printf on
 * hot paths); returns how many. */
size_t pt_u64_digits(uint64_t v, char *out);
/* Appends the decimal digits of v; returns 0 or -1. */
int pt_buf_put_u64(pt_buf_t *b, uint64_t v);
/* Appends s as the inside of a JSON string (quotes not included); returns 0 or -1. */
int pt_buf_json_escape(pt_buf_t *b, const char *s, size_t n);
void pt_buf_free(pt_buf_t *b);

/* Copies the string src into dst of cap bytes (cap > 0), cut short if it
 * must be, always NUL-terminated. For per-request copies, where
 * snprintf("%s") costs a printf. */
static inline void pt_strcpy_cap(char *dst, const char *src, size_t cap)
{
    if (!memccpy(dst, src, '\0', cap)) dst[cap - 1] = '\0';
}

/* Writes the current UTC time as "YYYY-MM-DDTHH:MM:SS.ffffff" (27 bytes + NUL). */
void pt_utcnow(char out[32]);

/* Fills out with a fresh 24-hex-digit correlation id and a NUL. Thread-safe. */
void pt_cid_new(char out[25]);

/* A sane correlation id from a client: 1..64 bytes of [A-Za-z0-9._:-]. */
int pt_cid_valid(const char *s, size_t n);

/* Parses a duration: a number of seconds ("1.5") or with a unit ("500ms", "10s",
 * "2m", "1h"). The number is plain decimal digits with an optional fraction:
 * no sign, exponent, "nan" or "inf". Returns 0 and milliseconds in *ms, or -1
 * (also when the result would not fit in an int64_t). */
int pt_parse_duration_ms(const char *s, uint64_t *ms);

/* Parses a size: bytes ("1048576") or with a unit ("16KB", "1MB", "1GB", "k"/"m"
 * also accepted), the number as for pt_parse_duration_ms. Returns 0 and bytes
 * in *out, or -1 (also when the result would not fit in an int64_t). */
int pt_parse_size(const char *s, uint64_t *out);

/* Decodes %XX escapes of in[0..n) into out (room for n+1 bytes), NUL-terminates.
 * plus_is_space turns '+' into ' ' (query strings). Returns the decoded length,
 * or -1 for a malformed escape. NUL bytes may appear in the output: callers check. */
long pt_percent_decode(const char *in, size_t n, char *out, int plus_is_space);

/* Finds name in a raw query string ("a=1&b=2") and decodes its value into
 * out (room for cap bytes, NUL-terminated; '+' is a space). Pair names are
 * compared decoded ("%73ervice" is "service"); a bare "name" has an empty
 * value. Returns the decoded length, -1 when name is absent, -2 when its
 * value is too long or malformed, or -3 when name appears more than once
 * (which one counts is ambiguous: refuse the request). The value may hold
 * NUL bytes: callers check. */
long pt_query_param(const char *q, size_t qlen, const char *name, char *out, size_t cap);

/* Reads the regular file path, at most max bytes, into *out (malloc, NUL-
 * terminated; *len excludes the NUL). Opened without blocking and checked
 * with fstat, so a FIFO, a device (/dev/zero) or a directory is refused
 * rather than waited on or read forever. Returns 0, or a negative code with
 * the reason (no path) in err: -1 cannot open or read (errno's text), -2 not
 * a regular file, -3 larger than max. */
int pt_read_small_file(const char *path, size_t max, char **out, size_t *len, char *err,
                       size_t errlen);

/* Limits of pt_walk_files: levels below each root, directories in all. */
#define PT_WALK_MAX_DEPTH 16
#define PT_WALK_MAX_DIRS 4096

struct stat;
/* Called with each regular file; non-zero stops the walk. */
typedef int (*pt_walk_cb)(void *ud, const char *path, const struct stat *st);

/* Calls cb for every regular file below the directories dirs (symlinks
 * followed; names starting with '.' skipped). Every directory is entered at
 * most once, identified by (st_dev, st_ino): one that is its own ancestor (a
 * symlink loop), one deeper than PT_WALK_MAX_DEPTH, or one past
 * PT_WALK_MAX_DIRS is left out, and one reached again by another link is
 * not walked twice. Returns 0, -1 (out of memory, or cb stopped it), or -2
 * when directories were left out: the walk is complete without them and
 * problem (when not NULL) names the first ("a symlink loop at PATH"). */
int pt_walk_files(char *const *dirs, size_t n_dirs, pt_walk_cb cb, void *ud, char *problem,
                  size_t problem_len);

#endif
