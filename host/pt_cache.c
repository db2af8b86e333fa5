#include "pt_cache.h"

#include <stdlib.h>
#include <string.h>

int pt_cache_valid_name(const char *name, size_t len)
{
    if (len < 1 || len > PT_CACHE_NAME_MAX) return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

const char *pt_cache_strerror(int rc)
{
    switch (rc) {
    case PT_CACHE_ENOMEM:
        return "out of memory";
    case PT_CACHE_ETOOLARGE:
        return "the entry is larger than the cache's max_bytes";
    case PT_CACHE_ENOTNUM:
        return "the value is not a number";
    case PT_CACHE_ERANGE:
        return "the result is not a finite number";
    case PT_CACHE_EINVAL:
        return "a key must be 1 to 1024 bytes and a ttl at most a year";
    case PT_CACHE_EBACKEND:
        return "the cache's backend failed";
    case PT_CACHE_EMAXVALUE:
        return "the value is larger than the cache's max_value";
    case PT_CACHE_EWAIT:
        return "this cache waits on its backend: it is reached from a request only";
    default:
        return "no error";
    }
}
