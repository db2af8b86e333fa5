#include "pt_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>

int pt_buf_reserve(pt_buf_t *b, size_t extra)
{
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int pt_buf_append(pt_buf_t *b, const void *p, size_t n)
{
    if (pt_buf_reserve(b, n + 1) != 0) return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int pt_buf_puts(pt_buf_t *b, const char *s)
{
    return pt_buf_append(b, s, strlen(s));
}

int pt_buf_printf(pt_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || pt_buf_reserve(b, (size_t)n + 1) != 0) return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int pt_host_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 253) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_' || c == ':'))
            return 0;
    }
    return 1;
}

size_t pt_u64_digits(uint64_t v, char *out)
{
    char d[20];
    size_t n = 0;
    do {
        d[sizeof d - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(out, d + sizeof d - n, n);
    return n;
}

int pt_buf_put_u64(pt_buf_t *b, uint64_t v)
{
    char d[20];
    return pt_buf_append(b, d, pt_u64_digits(v, d));
}

int pt_buf_json_escape(pt_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (pt_buf_reserve(b, n * 6 + 1) != 0) return -1;
    char *o = b->data + b->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        } else if (c == '\t') {
            *o++ = '\\';
            *o++ = 't';
        } else if (c < 0x20 || c == 0x7f) {
            *o++ = '\\';
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        } else {
            *o++ = (char)c;
        }
    }
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
    return 0;
}

void pt_buf_free(pt_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void pt_utcnow(char out[32])
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%06ld", (long)tv.tv_usec);
}

/* A cid needs to be unique, not secret: a per-thread random prefix from the
 * kernel plus a counter avoids a syscall per request. */
void pt_cid_new(char out[25])
{
    static __thread uint64_t prefix, counter;
    static const char hex[] = "0123456789abcdef";
    if (prefix == 0) {
        while (getrandom(&prefix, sizeof prefix, 0) != sizeof prefix && errno == EINTR)
            ;
        prefix |= 1;
        counter = prefix >> 32;
    }
    uint64_t hi = prefix, lo = counter++;
    for (int i = 15; i >= 0; i--, hi >>= 4)
        out[i] = hex[hi & 15];
    for (int i = 23; i >= 16; i--, lo >>= 4)
        out[i] = hex[lo & 15];
    out[24] = '\0';
}

int pt_cid_valid(const char *s, size_t n)
{
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

/* The number in front of a unit: digits, optionally a '.' and more digits.
 * strtod alone would take "nan", "inf", "1e99", "0x10", signs and leading
 * blanks, none of which a config means. Returns where the unit starts, or
 * NULL; *v is the value. */
static const char *pt__decimal(const char *s, double *v)
{
    const char *p = s;
    while (*p >= '0' && *p <= '9')
        p++;
    if (p == s) return NULL;
    if (*p == '.') {
        const char *frac = ++p;
        while (*p >= '0' && *p <= '9')
            p++;
        if (p == frac) return NULL;
    }
    errno = 0; /* ERANGE: hundreds of digits */
    *v = strtod(s, NULL);
    return errno == 0 ? p : NULL;
}

/* 2^63: every parsed value fits in an int64_t as well as a uint64_t. */
#define PT__PARSE_MAX 9223372036854775808.0

int pt_parse_duration_ms(const char *s, uint64_t *ms)
{
    double v;
    const char *end = pt__decimal(s, &v);
    if (!end) return -1;
    double mul;
    if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "s") == 0 || *end == '\0')
        mul = 1000;
    else if (strcmp(end, "m") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else
        return -1;
    double r = v * mul + 0.5;
    if (!(r < PT__PARSE_MAX)) return -1;
    *ms = (uint64_t)r;
    return 0;
}

int pt_parse_size(const char *s, uint64_t *out)
{
    double v;
    const char *end = pt__decimal(s, &v);
    if (!end) return -1;
    double mul;
    if (*end == '\0' || strcasecmp(end, "b") == 0)
        mul = 1;
    else if (strcasecmp(end, "k") == 0 || strcasecmp(end, "kb") == 0)
        mul = 1024;
    else if (strcasecmp(end, "m") == 0 || strcasecmp(end, "mb") == 0)
        mul = 1024 * 1024;
    else if (strcasecmp(end, "g") == 0 || strcasecmp(end, "gb") == 0)
        mul = 1024.0 * 1024 * 1024;
    else
        return -1;
    double r = v * mul;
    if (!(r < PT__PARSE_MAX)) return -1;
    *out = (uint64_t)r;
    return 0;
}

static int pt__hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

long pt_percent_decode(const char *in, size_t n, char *out, int plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '%') {
            if (i + 2 >= n) return -1;
            int h = pt__hexval(in[i + 1]), l = pt__hexval(in[i + 2]);
            if (h < 0 || l < 0) return -1;
            out[o++] = (char)(h * 16 + l);
            i += 2;
        } else if (plus_is_space && in[i] == '+') {
            out[o++] = ' ';
        } else {
            out[o++] = in[i];
        }
    }
    out[o] = '\0';
    return (long)o;
}

/* Non-zero when the name of a query pair, p[0..n), is name (nlen bytes)
 * once decoded: "%73ervice" is "service" to every parser after this one, so
 * it must be to this one too. */
static int pt__query_name_is(const char *p, size_t n, const char *name, size_t nlen)
{
    char dec[3 * 64 + 1];
    if (n == nlen && memcmp(p, name, nlen) == 0) return 1;
    if (n >= sizeof dec || (!memchr(p, '%', n) && !memchr(p, '+', n))) return 0;
    long len = pt_percent_decode(p, n, dec, 1);
    return len == (long)nlen && memcmp(dec, name, nlen) == 0;
}

long pt_query_param(const char *q, size_t qlen, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    long found = -1;
    int seen = 0;
    for (const char *p = q, *end = q + qlen; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *name_end = eq ? eq : stop;
        int hit = pt__query_name_is(p, (size_t)(name_end - p), name, nlen);
        if (hit && seen++) return -3; /* which one counts is the ambiguity */
        if (hit) {
            const char *val = eq ? eq + 1 : stop;
            size_t vlen = (size_t)(stop - val);
            if (vlen + 1 > cap) {
                found = -2;
            } else {
                long n = pt_percent_decode(val, vlen, out, 1);
                found = n < 0 ? -2 : n;
            }
        }
        p = stop + 1;
    }
    return found;
}

int pt_read_small_file(const char *path, size_t max, char **out, size_t *len, char *err,
                       size_t errlen)
{
    /* O_NONBLOCK: opening a FIFO with no writer would wait for one forever */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    struct stat st;
    char *buf = NULL;
    size_t n = 0;
    int rc = -1;
    *out = NULL;
    if (fd < 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "not a regular file");
        rc = -2;
        goto done;
    }
    if ((uint64_t)st.st_size > max) {
        snprintf(err, errlen, "larger than %zu bytes", max);
        rc = -3;
        goto done;
    }
    if (!(buf = malloc(max + 1))) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    /* read to max + 1 whatever fstat said: the file may be growing */
    for (;;) {
        ssize_t r = read(fd, buf + n, max + 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            snprintf(err, errlen, "%s", strerror(errno));
            goto done;
        }
        if (r == 0) break;
        n += (size_t)r;
        if (n > max) {
            snprintf(err, errlen, "larger than %zu bytes", max);
            rc = -3;
            goto done;
        }
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    buf = NULL;
    rc = 0;
done:
    free(buf);
    close(fd);
    return rc;
}

/* The state of one pt_walk_files: the directories on the way down (a
 * symlink loop leads back to one of them) and every one entered so far. */
typedef struct {
    struct {
        dev_t dev;
        ino_t ino;
    } seen[PT_WALK_MAX_DIRS];
    size_t n_seen;
    size_t path_top; /* seen[] indexes of the current ancestors */
    size_t ancestors[PT_WALK_MAX_DEPTH + 2];
    int depth;
    pt_walk_cb cb;
    void *ud;
    char *problem;
    size_t problem_len;
    int skipped;
} pt__walk_t;

static void pt__walk_problem(pt__walk_t *w, const char *fmt, const char *path)
{
    if (!w->skipped++ && w->problem) snprintf(w->problem, w->problem_len, fmt, path);
}

static int pt__walk_dir(pt__walk_t *w, const char *dir, const struct stat *dst)
{
    for (size_t i = 0; i < w->path_top; i++) {
        size_t k = w->ancestors[i];
        if (w->seen[k].dev == dst->st_dev && w->seen[k].ino == dst->st_ino) {
            pt__walk_problem(w, "a symlink loop at %s", dir);
            return 0;
        }
    }
    for (size_t k = 0; k < w->n_seen; k++)
        if (w->seen[k].dev == dst->st_dev && w->seen[k].ino == dst->st_ino)
            return 0; /* reached twice, no loop: its files are in already */
    if (w->depth > PT_WALK_MAX_DEPTH) {
        pt__walk_problem(w, "%s is too deep (16 levels below a service directory)", dir);
        return 0;
    }
    if (w->n_seen == PT_WALK_MAX_DIRS) {
        pt__walk_problem(w, "more than 4096 directories (at %s)", dir);
        return 0;
    }
    DIR *d = opendir(dir);
    if (!d) return 0;
    w->seen[w->n_seen].dev = dst->st_dev;
    w->seen[w->n_seen].ino = dst->st_ino;
    w->ancestors[w->path_top++] = w->n_seen++;
    w->depth++;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue; /* hidden files and editors' swap files */
        char path[4096];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= sizeof path) continue;
        struct stat st;
        if (stat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode))
            rc = pt__walk_dir(w, path, &st);
        else if (S_ISREG(st.st_mode) && w->cb(w->ud, path, &st) != 0)
            rc = -1;
    }
    closedir(d);
    w->depth--;
    w->path_top--;
    return rc;
}

int pt_walk_files(char *const *dirs, size_t n_dirs, pt_walk_cb cb, void *ud, char *problem,
                  size_t problem_len)
{
    pt__walk_t *w = calloc(1, sizeof *w);
    if (!w) return -1;
    w->cb = cb;
    w->ud = ud;
    w->problem = problem;
    w->problem_len = problem_len;
    if (problem && problem_len) problem[0] = '\0';
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n_dirs; i++) {
        struct stat st;
        if (stat(dirs[i], &st) == 0 && S_ISDIR(st.st_mode)) rc = pt__walk_dir(w, dirs[i], &st);
    }
    if (rc == 0 && w->skipped) rc = -2;
    free(w);
    return rc;
}
