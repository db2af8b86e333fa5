/* pt_security_config: the `security:` section of the config, compiled into
 * the pt_security_t that the checks of pt_security.h read. Called by
 * pt_config.c while it loads a config; nothing here runs on the request
 * path. docs/security.md describes the syntax. */
#ifndef PT_SECURITY_CONFIG_H
#define PT_SECURITY_CONFIG_H

#include "pt_security.h"

#include <openssl/x509.h>
#include <yaml.h>

#include <stddef.h>

/* Compiles the `security:` mapping node of doc (NULL: none) into *out. file
 * and dir name the config file and its directory (relative key files are
 * resolved against dir). Environment variables named by the definitions are
 * read now. Returns 0, or -1 with "file:line: message" in err. */
int pt_security_parse(yaml_document_t *doc, yaml_node_t *node, const char *file, const char *dir,
                      pt_security_t **out, char *err, size_t errlen);

/* Frees a compiled set and every definition in it. NULL is fine. */
void pt_security_free(pt_security_t *sec);

/* The definition called name, or NULL. It lives as long as sec. */
const pt_security_def_t *pt_security_find(const pt_security_t *sec, const char *name);

/* Calls fn(ud, name, line, cas) for each client_cert definition of sec,
 * with the CA certificates it trusts (they live as long as sec) and the
 * line of the definition: the TLS listener asks for certificates of them.
 * Returns fn's first non-zero answer, else 0. */
int pt_security_each_client_ca(const pt_security_t *sec,
                               int (*fn)(void *ud, const char *name, int line,
                                         STACK_OF(X509) * cas),
                               void *ud);

/* The name a definition was given in the config. */
const char *pt_security_def_name(const pt_security_def_t *def);

/* Its kind: "basic_auth", "api_key", "jwt" or "client_cert". */
const char *pt_security_def_kind(const pt_security_def_t *def);

#endif
