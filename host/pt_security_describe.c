#include "pt_security_describe.h"
#include "pt_security_def.h"

#include <string.h>

void pt_security_describe(const pt_security_def_t *d, pt_security_info_t *out)
{
    memset(out, 0, sizeof *out);
    out->name = d->name;
    out->kind = d->kind->key;
    out->header = d->kind->from_tls ? NULL : d->header;
    out->realm = d->realm;
    out->alg = d->alg ? d->alg->name : NULL;
}
