#include "pt_field.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

/* bit 1: tchar; bit 2: field-vchar, SP or HTAB; bit 4: reg-name byte
 * (unreserved / sub-delims; '%' is checked apart) */
static const uint8_t pt__class[256] = {
    ['\t'] = 2,     [' '] = 2,      ['!'] = 7,      ['"'] = 2,      ['#'] = 3,      ['$'] = 7,
    ['%'] = 3,      ['&'] = 7,      ['\''] = 7,     ['('] = 6,      [')'] = 6,      ['*'] = 7,
    ['+'] = 7,      [','] = 6,      ['-'] = 7,      ['.'] = 7,      ['/'] = 2,      ['0'] = 7,
    ['1'] = 7,      ['2'] = 7,      ['3'] = 7,      ['4'] = 7,      ['5'] = 7,      ['6'] = 7,
    ['7'] = 7,      ['8'] = 7,      ['9'] = 7,      [':'] = 2,      [';'] = 6,      ['<'] = 2,
    ['='] = 6,      ['>'] = 2,      ['?'] = 2,      ['@'] = 2,      ['['] = 2,      ['\\'] = 2,
    [']'] = 2,      ['^'] = 3,      ['_'] = 7,      ['`'] = 3,      ['{'] = 2,      ['|'] = 3,
    ['}'] = 2,      ['~'] = 7,
#define PT__ALPHA(c) [c] = 7, [c + 32] = 7
    PT__ALPHA('A'), PT__ALPHA('B'), PT__ALPHA('C'), PT__ALPHA('D'), PT__ALPHA('E'), PT__ALPHA('F'),
    PT__ALPHA('G'), PT__ALPHA('H'), PT__ALPHA('I'), PT__ALPHA('J'), PT__ALPHA('K'), PT__ALPHA('L'),
    PT__ALPHA('M'), PT__ALPHA('N'), PT__ALPHA('O'), PT__ALPHA('P'), PT__ALPHA('Q'), PT__ALPHA('R'),
    PT__ALPHA('S'), PT__ALPHA('T'), PT__ALPHA('U'), PT__ALPHA('V'), PT__ALPHA('W'), PT__ALPHA('X'),
    PT__ALPHA('Y'), PT__ALPHA('Z'),
#undef PT__ALPHA
};

/* obs-text (RFC 9110 §5.5) */
static int pt__obs_text(unsigned char ch)
{
    return ch >= 0x80;
}

int pt_field_token(const char *s, size_t n)
{
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!(pt__class[(unsigned char)s[i]] & 1)) return 0;
    return 1;
}

int pt_field_value(const char *s, size_t n)
{
    /* eight bytes of printable ASCII a step (a content type, a header a
     * service hands over); a word with anything else is decided byte by
     * byte below */
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        if ((((x - 0x20 * ones) & ~x) | (x + ones) | x) & highs) break;
    }
    for (; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!(pt__class[ch] & 2) && !pt__obs_text(ch)) return 0;
    }
    return 1;
}

int pt_field_lines(const char *lines, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t name = i;
        while (i < n && lines[i] != ':' && lines[i] != '\r' && lines[i] != '\n')
            i++;
        if (i == n || lines[i] != ':' || !pt_field_token(lines + name, i - name)) return 0;
        size_t value = ++i;
        while (i < n && lines[i] != '\r' && lines[i] != '\n')
            i++;
        if (!pt_field_value(lines + value, i - value)) return 0;
        if (i + 1 >= n || lines[i] != '\r' || lines[i + 1] != '\n') return 0;
        i += 2;
    }
    return 1;
}

int pt_field_list_has(const char *v, size_t len, const char *token, size_t tlen)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == tlen && strncasecmp(v + start, token, tlen) == 0) return 1;
    }
    return 0;
}

static int pt__hex(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || ((ch | 32) >= 'a' && (ch | 32) <= 'f');
}

int pt_field_host(const char *s, size_t n)
{
    size_t i = 0;
    if (n == 0) return 0;
    if (s[0] == '[') {
        /* IP-literal: IPv6address or IPvFuture; checked for its alphabet */
        for (i = 1; i < n && s[i] != ']'; i++) {
            unsigned char ch = (unsigned char)s[i];
            if (!pt__hex(ch) && ch != ':' && ch != '.' && ch != 'v' && ch != 'V' &&
                !(pt__class[ch] & 4))
                return 0;
        }
        if (i == n || i == 1) return 0;
        i++;
    } else {
        for (; i < n && s[i] != ':'; i++) {
            unsigned char ch = (unsigned char)s[i];
            if (ch == '%') {
                if (i + 2 >= n || !pt__hex((unsigned char)s[i + 1]) ||
                    !pt__hex((unsigned char)s[i + 2]))
                    return 0;
                i += 2;
            } else if (!(pt__class[ch] & 4)) {
                return 0;
            }
        }
        if (i == 0) return 0;
    }
    if (i == n) return 1;
    if (s[i] != ':') return 0;
    /* port = *DIGIT (RFC 3986), and a TCP port: at most 65535 (leading
     * zeros allowed), so no later parse of it wraps around */
    unsigned long port = 0;
    for (i++; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        port = port * 10 + (unsigned long)(s[i] - '0');
        if (port > 65535) return 0;
    }
    return 1;
}
