#include "pt_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int pt_parse_duration_ms(const char *s, uint64_t *ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno != 0 || v < 0) return -1;
    double mul = 1000;
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
    *ms = (uint64_t)(v * mul + 0.5);
    return 0;
}

int pt_parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno != 0 || v < 0) return -1;
    uint64_t mul = 1;
    if (*end == '\0' || strcasecmp(end, "b") == 0)
        mul = 1;
    else if (strcasecmp(end, "k") == 0 || strcasecmp(end, "kb") == 0)
        mul = 1024;
    else if (strcasecmp(end, "m") == 0 || strcasecmp(end, "mb") == 0)
        mul = 1024 * 1024;
    else if (strcasecmp(end, "g") == 0 || strcasecmp(end, "gb") == 0)
        mul = 1024ull * 1024 * 1024;
    else
        return -1;
    *out = (uint64_t)(v * (double)mul);
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

long pt_query_param(const char *q, size_t qlen, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    for (const char *p = q, *end = q + qlen; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > nlen && p[nlen] == '=' && memcmp(p, name, nlen) == 0) {
            size_t vlen = (size_t)(stop - p) - nlen - 1;
            if (vlen + 1 > cap) return -2;
            long n = pt_percent_decode(p + nlen + 1, vlen, out, 1);
            return n < 0 ? -2 : n;
        }
        p = stop + 1;
    }
    return -1;
}
