/* pt_config_admin: the admin: section's credentials and probe setting
 * (admin.listen stays in pt_config.c). The console, its JSON endpoints and
 * POST /reload ask for one of the users (HTTP basic, argon2id hashes made by
 * `portico hash-password`) when any is configured; /healthz, /readyz and
 * /metrics stay open unless open_probes is false (they are probed and
 * scraped).
 *
 *   admin:
 *     listen: 127.0.0.1:9901
 *     users:
 *       - username: ops            # 1..64 bytes, printable, no ':'
 *         password_hash: "$argon2id$v=19$..."
 *     open_probes: true            # default */
#ifndef PT_CONFIG_ADMIN_H
#define PT_CONFIG_ADMIN_H

#include "pt_yaml.h"

#include <stddef.h>

#define PT_ADMIN_MAX_USERS 64
#define PT_ADMIN_USERNAME_MAX 64

typedef struct {
    char *username;
    char *password_hash;
} pt_admin_user_t;

typedef struct {
    pt_admin_user_t *users;
    size_t n_users;
    int open_probes; /* /healthz, /readyz, /metrics without credentials */
} pt_config_admin_t;

/* Parses users and open_probes of the admin: mapping n into *out (zeroed).
 * Returns 0, or -1 with "file:line: message" through y (*out is then freed by
 * pt_config_admin_free). */
int pt_config_admin_parse(const pt_yaml_t *y, yaml_node_t *n, pt_config_admin_t *out);

void pt_config_admin_free(pt_config_admin_t *out);

#endif
