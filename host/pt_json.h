/* pt_json: strict checks of JSON text (RFC 8259) that build nothing.
 *
 * lua-cjson decodes request bodies; it accepts more than RFC 8259 (NaN,
 * Infinity, hex, "1.", "-.5", control characters and any bytes in strings, a
 * NUL ending the text early, numbers that overflow to inf). pt_json_check runs
 * first, in one pass with no allocation, so cjson only ever sees JSON
 * (docs/contract.md, "Strict JSON"). fuzz/fuzz_json.c holds it to jansson's
 * verdict.
 *
 * lua/portico/runtime.lua calls both functions through the FFI (its ffi.cdef
 * repeats the declarations below: change them together). */
#ifndef PT_JSON_H
#define PT_JSON_H

#include <stddef.h>

/* The deepest nesting of arrays and objects pt_json_check lets through by
 * default; lua-cjson's own decode limit is the same, so it never trips. */
#define PT_JSON_MAX_DEPTH 1000

typedef struct {
    size_t offset;       /* of the first byte that is not JSON (0-based); len at a cut-off end */
    const char *message; /* static text, e.g. "invalid number" */
} pt_json_error_t;

/* Checks that s[0..len) is exactly one JSON value, with optional whitespace
 * around it: strings in well-formed UTF-8 (no overlong forms, no encoded
 * surrogates, nothing above U+10FFFF) without unescaped control characters,
 * \u escapes of surrogates only in pairs, numbers by the RFC's grammar and
 * within a double's range (1e400 is refused; 1e-400 is 0), at most max_depth
 * nested arrays and objects (1..PT_JSON_MAX_DEPTH; anything else means
 * PT_JSON_MAX_DEPTH), nothing after the value. s need not be NUL-terminated
 * and may hold NULs (which are never JSON outside a \u escape). Returns 0, or
 * -1 with *err filled in when err is not NULL. */
int pt_json_check(const char *s, size_t len, int max_depth, pt_json_error_t *err);

/* Checks that s[0..len) is well-formed UTF-8 (RFC 3629). Returns 0, or -1
 * with the offset of the first bad byte in *bad when bad is not NULL. */
int pt_utf8_check(const char *s, size_t len, size_t *bad);

#endif
