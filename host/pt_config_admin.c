#include "pt_config_admin.h"

#include <stdlib.h>
#include <string.h>

static int pt__username_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > PT_ADMIN_USERNAME_MAX) return 0;
    for (; *s; s++)
        if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e || *s == ':') return 0;
    return 1;
}

int pt_config_admin_parse(const pt_yaml_t *y, yaml_node_t *n, pt_config_admin_t *out)
{
    out->open_probes = 1;
    yaml_node_t *p = pt_yaml_get(y, n, "open_probes");
    if (p && pt_yaml_bool(y, p, "admin.open_probes", &out->open_probes) != 0) return -1;
    yaml_node_t *users = pt_yaml_get(y, n, "users");
    if (!users) return 0;
    if (users->type != YAML_SEQUENCE_NODE)
        return pt_yaml_fail(y, users, "admin.users: expected a list of {username, password_hash}");
    size_t count = pt_yaml_len(users);
    if (count > PT_ADMIN_MAX_USERS)
        return pt_yaml_fail(y, users, "admin.users: at most %d users", PT_ADMIN_MAX_USERS);
    out->users = calloc(count ? count : 1, sizeof *out->users);
    if (!out->users) return pt_yaml_fail(y, users, "out of memory");
    static const char *const keys[] = {"username", "password_hash", NULL};
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *u = pt_yaml_item(y, users, i);
        if (!u || u->type != YAML_MAPPING_NODE)
            return pt_yaml_fail(y, u ? u : users,
                                "admin.users: expected a mapping {username, password_hash}");
        if (pt_yaml_check_keys(y, u, "admin.users[]", keys) != 0) return -1;
        pt_admin_user_t *d = &out->users[out->n_users++];
        yaml_node_t *un = pt_yaml_get(y, u, "username"), *hn = pt_yaml_get(y, u, "password_hash");
        if (!un || !hn)
            return pt_yaml_fail(y, u, "admin.users[]: username and password_hash are required");
        if (pt_yaml_string(y, un, "admin.users[].username", &d->username) != 0 ||
            pt_yaml_string(y, hn, "admin.users[].password_hash", &d->password_hash) != 0)
            return -1;
        if (!pt__username_ok(d->username))
            return pt_yaml_fail(y, un,
                                "admin.users[].username: 1 to %d printable bytes without ':'",
                                PT_ADMIN_USERNAME_MAX);
        if (strncmp(d->password_hash, "$argon2id$", 10) != 0 || strlen(d->password_hash) > 127)
            return pt_yaml_fail(y, hn,
                                "admin.users[].password_hash: expected an argon2id hash (make one "
                                "with `portico hash-password`)");
        for (size_t j = 0; j + 1 < out->n_users; j++)
            if (strcmp(out->users[j].username, d->username) == 0)
                return pt_yaml_fail(y, un, "admin.users: user '%s' is listed twice", d->username);
    }
    return 0;
}

void pt_config_admin_free(pt_config_admin_t *out)
{
    for (size_t i = 0; i < out->n_users; i++) {
        free(out->users[i].username);
        free(out->users[i].password_hash);
    }
    free(out->users);
    out->users = NULL;
    out->n_users = 0;
}
