#include "pt_json.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef const unsigned char *pt__p_t;

/* Bytes a string holds as they are: printable ASCII but '"' and '\\'. One
 * table look-up a byte keeps the common case (short ASCII strings) tight. */
static const unsigned char pt__plain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x20: '"' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x30 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x40 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x50: '\\' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x60 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x70 */
};

typedef struct {
    pt__p_t start, end;
    pt_json_error_t *err;
} pt__scan_t;

static pt__p_t pt__fail(pt__scan_t *s, pt__p_t at, const char *message)
{
    if (s->err) {
        s->err->offset = (size_t)(at - s->start);
        s->err->message = message;
    }
    return NULL;
}

static int pt__refuse(pt__scan_t *s, pt__p_t at, const char *message)
{
    pt__fail(s, at, message);
    return -1;
}

/* The length of the well-formed UTF-8 sequence at p, 0 when there is none
 * (RFC 3629's table: E0 and F0 exclude overlong forms, ED the surrogates, F4
 * everything above U+10FFFF). */
static size_t pt__utf8_seq(pt__p_t p, pt__p_t end)
{
    unsigned c = p[0];
    size_t avail = (size_t)(end - p);
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    if (c < 0xE0) return avail >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c < 0xF0) {
        unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        return avail >= 3 && p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c < 0xF5) {
        unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        return avail >= 4 && p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 &&
                       (p[3] & 0xC0) == 0x80
                   ? 4
                   : 0;
    }
    return 0;
}

int pt_utf8_check(const char *text, size_t len, size_t *bad)
{
    pt__p_t p = (pt__p_t)text, end = p + len;
    while (p < end) {
        /* ASCII, the usual case, eight bytes at a time */
        uint64_t w;
        if (end - p >= 8 && (memcpy(&w, p, 8), (w & 0x8080808080808080ULL) == 0)) {
            p += 8;
            continue;
        }
        if (*p < 0x80) { /* the tail of an ASCII run */
            p++;
            continue;
        }
        size_t n = pt__utf8_seq(p, end);
        if (!n) {
            if (bad) *bad = (size_t)(p - (pt__p_t)text);
            return -1;
        }
        p += n;
    }
    return 0;
}

static int pt__hex4(pt__p_t p, pt__p_t end)
{
    if (end - p < 4) return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i];
        int d = c >= '0' && c <= '9'   ? (int)(c - '0')
                : c >= 'a' && c <= 'f' ? (int)(c - 'a' + 10)
                : c >= 'A' && c <= 'F' ? (int)(c - 'A' + 10)
                                       : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* p is at the opening quote; returns the byte after the closing one. */
static pt__p_t pt__string(pt__scan_t *s, pt__p_t p)
{
    pt__p_t end = s->end;
    for (p++;;) {
        while (p < end && pt__plain[*p])
            p++;
        if (p == end) return pt__fail(s, p, "unterminated string");
        unsigned c = *p;
        if (c == '"') return p + 1;
        if (c == '\\') {
            if (end - p < 2) return pt__fail(s, end, "unterminated string");
            switch (p[1]) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                p += 2;
                continue;
            case 'u':
                break;
            default:
                return pt__fail(s, p, "invalid escape in a string");
            }
            int u = pt__hex4(p + 2, end);
            if (u < 0) return pt__fail(s, p, "invalid \\u escape in a string");
            /* cjson refuses lone surrogates too, but with a vaguer message */
            if (u >= 0xDC00 && u <= 0xDFFF)
                return pt__fail(s, p, "unpaired UTF-16 surrogate in a \\u escape");
            if (u >= 0xD800 && u <= 0xDBFF) {
                int lo = end - p >= 12 && p[6] == '\\' && p[7] == 'u' ? pt__hex4(p + 8, end) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return pt__fail(s, p, "unpaired UTF-16 surrogate in a \\u escape");
                p += 6;
            }
            p += 6;
            continue;
        }
        if (c < 0x20) return pt__fail(s, p, "unescaped control character in a string");
        size_t n = pt__utf8_seq(p, end);
        if (!n) return pt__fail(s, p, "invalid UTF-8 in a string");
        p += n;
    }
}

static int pt__digit(pt__p_t p, pt__p_t end)
{
    return p < end && *p >= '0' && *p <= '9';
}

/* Whether the number [p, end) is beyond a double's range; only numbers whose
 * decimal exponent is within one of the limit get here, so strtod (which
 * rounds exactly, as cjson's and jansson's do) is rare. */
static int pt__overflows(pt__p_t p, pt__p_t end)
{
    char small[64], *buf = small;
    size_t n = (size_t)(end - p);
    if (n >= sizeof small && !(buf = malloc(n + 1))) return 1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    int inf = isinf(strtod(buf, NULL));
    if (buf != small) free(buf);
    return inf;
}

/* p is at '-' or a digit; returns the byte after the number. */
static pt__p_t pt__number(pt__scan_t *s, pt__p_t p)
{
    pt__p_t start = p, end = s->end;
    long long order = 0; /* the decimal exponent of the first significant digit */
    int zero = 1;        /* no significant digit yet */
    if (*p == '-') p++;
    if (!pt__digit(p, end)) return pt__fail(s, start, "invalid number");
    if (*p == '0') {
        p++;
        if (pt__digit(p, end)) return pt__fail(s, start, "invalid number (leading zero)");
    } else {
        zero = 0;
        while (pt__digit(p, end)) {
            p++;
            order++;
        }
        order--;
    }
    if (p < end && *p == '.') {
        p++;
        if (!pt__digit(p, end)) return pt__fail(s, start, "invalid number (no digit after '.')");
        for (long long k = -1; pt__digit(p, end); p++, k--)
            if (zero && *p != '0') {
                zero = 0;
                order = k;
            }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        long long exp = 0;
        int neg = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-')) neg = *p++ == '-';
        if (!pt__digit(p, end)) return pt__fail(s, start, "invalid number (no digit in exponent)");
        for (; pt__digit(p, end); p++)
            if (exp < 100000000000000000LL) exp = exp * 10 + (*p - '0');
        order += neg ? -exp : exp;
    }
    /* "0x7B", "1.5.2", "12abc": a number runs up to a delimiter */
    if (p < end && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '.' ||
                    *p == '+' || *p == '-' || *p == '_'))
        return pt__fail(s, start, "invalid number");
    /* DBL_MAX is 1.797...e308: order 309 always overflows, 307 never does */
    if (!zero && order >= 308 && (order > 308 || pt__overflows(start, p)))
        return pt__fail(s, start, "number out of range");
    return p;
}

static pt__p_t pt__ws(pt__p_t p, pt__p_t end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static pt__p_t pt__literal(pt__scan_t *s, pt__p_t p, const char *word, size_t n)
{
    if ((size_t)(s->end - p) < n || memcmp(p, word, n) != 0)
        return pt__fail(s, p, "invalid literal (true, false and null are the only words in JSON)");
    return p + n;
}

/* An explicit stack instead of recursion: a deep body cannot overflow the C
 * stack, and the depth limit is one comparison. */
int pt_json_check(const char *text, size_t len, int max_depth, pt_json_error_t *err)
{
    char stack[PT_JSON_MAX_DEPTH]; /* '{' or '[' of each open container */
    int depth = 0;
    pt__scan_t s = {(pt__p_t)text, (pt__p_t)text + len, err};
    pt__p_t p = pt__ws(s.start, s.end), end = s.end;
    if (max_depth < 1 || max_depth > PT_JSON_MAX_DEPTH) max_depth = PT_JSON_MAX_DEPTH;

value:
    if (p == end) return pt__refuse(&s, p, "unexpected end of input");
    switch (*p) {
    case '{':
    case '[':
        if (depth == max_depth) return pt__refuse(&s, p, "nesting of arrays and objects too deep");
        stack[depth++] = (char)*p;
        p = pt__ws(p + 1, end);
        if (p < end && *p == (stack[depth - 1] == '{' ? '}' : ']')) {
            depth--;
            p++;
            goto after;
        }
        if (stack[depth - 1] == '{') goto key;
        goto value;
    case '"':
        p = pt__string(&s, p);
        break;
    case 't':
        p = pt__literal(&s, p, "true", 4);
        break;
    case 'f':
        p = pt__literal(&s, p, "false", 5);
        break;
    case 'n':
        p = pt__literal(&s, p, "null", 4);
        break;
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        p = pt__number(&s, p);
        break;
    case '+':
    case '.':
        p = pt__fail(&s, p, "invalid number");
        break;
    case 'N':
    case 'I':
        p = pt__fail(&s, p, "NaN and Infinity are not JSON");
        break;
    default:
        p = pt__fail(&s, p, "expected a JSON value");
        break;
    }
    if (!p) return -1;

after:
    p = pt__ws(p, end);
    if (depth == 0) return p == end ? 0 : pt__refuse(&s, p, "unexpected data after the JSON value");
    if (p == end) return pt__refuse(&s, p, "unexpected end of input");
    if (*p == ',') {
        p = pt__ws(p + 1, end);
        if (stack[depth - 1] == '[') goto value;
        goto key;
    }
    if (*p == (stack[depth - 1] == '{' ? '}' : ']')) {
        depth--;
        p++;
        goto after;
    }
    return pt__refuse(&s, p,
                      stack[depth - 1] == '{' ? "expected ',' or '}'" : "expected ',' or ']'");

key:
    if (p == end) return pt__refuse(&s, p, "unexpected end of input");
    if (*p != '"') return pt__refuse(&s, p, "expected a string as object key");
    if (!(p = pt__string(&s, p))) return -1;
    p = pt__ws(p, end);
    if (p == end || *p != ':') return pt__refuse(&s, p, "expected ':' after an object key");
    p = pt__ws(p + 1, end);
    goto value;
}
