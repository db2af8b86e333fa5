/* libFuzzer target: pt_json_check and pt_utf8_check against jansson, which
 * parses RFC 8259 strictly. The input is taken as a whole JSON text; both
 * must agree on whether it is one. jansson is asked to read every number as
 * a double (JSON_DECODE_INT_AS_REAL: RFC 8259 sets no integer limit, and
 * portico's cjson reads numbers as doubles) and to allow \u0000 (JSON_ALLOW_NUL:
 * the RFC does, and cjson decodes it). The one known difference is depth:
 * pt_json stops at PT_JSON_MAX_DEPTH, jansson at JSON_PARSER_MAX_DEPTH, so a
 * refusal for depth is not compared. And jansson loses a NUL byte that ends a
 * number ("6\0" and "[6\0]" pass; it pushes the NUL back into a buffer where a
 * NUL means "empty"), so a refusal at a NUL jansson let through is not a
 * difference either, nor is jansson's refusal of \u0000 in an object key
 * (RFC 8259 allows it, cjson decodes it). pt_utf8_check is compared with jansson's
 * json_stringn, which refuses a string that is not UTF-8. */
#include "pt_json.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pt_json_error_t perr = {0};
    json_error_t jerr;
    int ours = pt_json_check((const char *)data, size, PT_JSON_MAX_DEPTH, &perr);
    json_t *v = json_loadb((const char *)data, size,
                           JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &jerr);
    int theirs = v ? 0 : -1;
    json_decref(v);
    if (ours != 0 && perr.offset > size) {
        fprintf(stderr, "fuzz_json: error offset %zu beyond the input's %zu bytes\n", perr.offset,
                size);
        abort();
    }
    int depth = ours != 0 && strstr(perr.message, "too deep") != NULL;
    int nul = ours != 0 && theirs == 0 && perr.offset < size && data[perr.offset] == 0;
    int nul_key = ours == 0 && theirs != 0 && strstr(jerr.text, "NUL byte in object key");
    if (ours != theirs && !depth && !nul && !nul_key) {
        fprintf(stderr, "fuzz_json: pt_json_check says %s (%s at %zu), jansson says %s (%s)\n",
                ours ? "no" : "yes", ours ? perr.message : "-", perr.offset, theirs ? "no" : "yes",
                theirs ? jerr.text : "-");
        abort();
    }

    size_t bad = 0;
    int utf8 = pt_utf8_check((const char *)data, size, &bad);
    json_t *s = json_stringn((const char *)data, size);
    if ((utf8 == 0) != (s != NULL) || (utf8 != 0 && bad >= size)) {
        fprintf(stderr, "fuzz_json: pt_utf8_check says %d (bad byte %zu), jansson %s\n", utf8, bad,
                s ? "valid" : "invalid");
        abort();
    }
    json_decref(s);
    return 0;
}
