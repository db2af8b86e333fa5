/* pt_security_describe: what a security definition is, in the words an API
 * description uses (pt_openapi): its name, kind, the header it reads and
 * its realm or signature algorithm. No secret is reachable from here. */
#ifndef PT_SECURITY_DESCRIBE_H
#define PT_SECURITY_DESCRIBE_H

#include "pt_security.h"

typedef struct {
    const char *name;
    const char *kind;   /* "basic_auth", "api_key", "jwt", "client_cert" */
    const char *header; /* lower-case; NULL for client_cert */
    const char *realm;  /* NULL: none */
    const char *alg;    /* jwt: "HS256", "RS256"; NULL otherwise */
} pt_security_info_t;

/* Fills out with d's description (pointers into d: valid while d is). */
void pt_security_describe(const pt_security_def_t *d, pt_security_info_t *out);

#endif
