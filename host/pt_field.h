/* pt_field: the syntax of HTTP fields (RFC 9110 §5) and of Host (RFC 9112
 * §3.2, RFC 3986 §3.2.2), checked in one place for every direction: request
 * headers from clients, response headers from services, bus replies and
 * backends. No knowledge of connections. */
#ifndef PT_FIELD_H
#define PT_FIELD_H

#include <stddef.h>

/* 1 when s[0..n) is a token (RFC 9110 §5.6.2: one or more tchar), else 0.
 * A field name, a method and a transfer coding are tokens. */
int pt_field_token(const char *s, size_t n);

/* 1 when s[0..n) may be a field value (RFC 9110 §5.5): SP, HTAB, VCHAR and
 * obs-text only; so never NUL, CR, LF or another control byte. */
int pt_field_value(const char *s, size_t n);

/* 1 when lines[0..n) is a block of zero or more "Name: value\r\n" lines with
 * a token name, a colon right after it and a valid value (what a service or a
 * bus reply hands over as extra response headers), else 0. */
int pt_field_lines(const char *lines, size_t n);

/* 1 when the comma-separated list v[0..len) (RFC 9110 §5.6.1: elements with
 * optional whitespace around them, empty ones allowed) has an element equal
 * to token[0..tlen) without regard to case, else 0. Connection, Upgrade and
 * other token lists. */
int pt_field_list_has(const char *v, size_t len, const char *token, size_t tlen);

/* 1 when s[0..n) is a valid Host field value: uri-host [ ":" port ], where
 * uri-host is an IP-literal in brackets, or a reg-name (unreserved,
 * pct-encoded, sub-delims; IPv4 addresses are reg-names too), and port is
 * digits (none, or a number up to 65535). An empty value is not valid. */
int pt_field_host(const char *s, size_t n);

#endif
