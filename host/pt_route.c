#include "pt_route.h"

#include <llhttp.h>

#include <stdio.h>

int pt_route_valid_service_name(const char *name, size_t len)
{
    if (len == 0 || len > PT_SERVICE_NAME_MAX || name[0] == '.' || name[0] == '-') return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

char *pt_route_allow_header(uint64_t mask, char *out, size_t outlen)
{
    size_t o = 0;
    out[0] = '\0';
    for (int m = 0; m < 64; m++) {
        if (!(mask & (1ull << m))) continue;
        int n = snprintf(out + o, outlen - o, "%s%s", o ? ", " : "",
                         llhttp_method_name((llhttp_method_t)m));
        if (n < 0 || (size_t)n >= outlen - o) {
            out[o] = '\0'; /* a method that does not fit is left out whole, never cut */
            break;
        }
        o += (size_t)n;
    }
    return out;
}
