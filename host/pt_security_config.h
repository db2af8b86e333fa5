/* pt_security_config: the `security:` section of the config, compiled into
 * the pt_security_t that the checks of pt_security.h read. Called by
 * pt_config.c while it loads a config; nothing here runs on the request
 * path. docs/security.md describes the syntax. */
#ifndef PT_SECURITY_CONFIG_H
#define PT_SECURITY_CONFIG_H

#include "pt_security.h"

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

/* The name a definition was given in the config. */
const char *pt_security_def_name(const pt_security_def_t *def);

#endif
