#include "pt_config_upstream_tls.h"
#include "pt_log.h"
#include "pt_tls.h"
#include "pt_util.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A readable file under key, made absolute into *out. */
static int pt__file(const pt_yaml_t *y, yaml_node_t *n, const char *key, char **out)
{
    const char *p = pt_yaml_value(n);
    if (!p || !*p) return pt_yaml_fail(y, n, "%s: expected the path of a PEM file", key);
    if (!(*out = pt_yaml_path(y, p))) return pt_yaml_fail(y, n, "out of memory");
    FILE *f = fopen(*out, "r");
    if (!f) return pt_yaml_fail(y, n, "%s: cannot read %s: %s", key, p, strerror(errno));
    fclose(f);
    return 0;
}

int pt_config_upstream_tls(const pt_yaml_t *y, yaml_node_t *n, yaml_node_t *where, const char *what,
                           pt_upstream_tls_t **out)
{
    static const char *const keys[] = {"ca_file", "verify", "server_name", "cert", "key", NULL};
    char key[200], err[512];
    yaml_node_t *v, *ca = NULL, *cert = NULL, *keyn = NULL;
    pt_upstream_tls_t *t = calloc(1, sizeof *t);
    if (!t) return pt_yaml_fail(y, n ? n : where, "out of memory");
    *out = t;
    t->verify = 1;
    if (n && !pt_yaml_is_null(n)) {
        snprintf(key, sizeof key, "%s.tls", what);
        if (n->type != YAML_MAPPING_NODE)
            return pt_yaml_fail(y, n,
                                "%s: expected a mapping {ca_file, verify, server_name, "
                                "cert, key}",
                                key);
        if (pt_yaml_check_keys(y, n, key, keys) != 0) return -1;
        if ((v = pt_yaml_get(y, n, "verify"))) {
            snprintf(key, sizeof key, "%s.tls.verify", what);
            if (pt_yaml_bool(y, v, key, &t->verify) != 0) return -1;
        }
        if ((ca = pt_yaml_get(y, n, "ca_file"))) {
            snprintf(key, sizeof key, "%s.tls.ca_file", what);
            if (!t->verify)
                return pt_yaml_fail(y, ca, "%s: has no use with verify: false (nothing is checked)",
                                    key);
            if (pt__file(y, ca, key, &t->ca_file) != 0) return -1;
        }
        if ((v = pt_yaml_get(y, n, "server_name"))) {
            snprintf(key, sizeof key, "%s.tls.server_name", what);
            const char *s = pt_yaml_value(v);
            if (!s || !pt_host_name_ok(s, strlen(s)))
                return pt_yaml_fail(y, v, "%s: expected a host name or IP address", key);
            if (!(t->server_name = strdup(s))) return pt_yaml_fail(y, v, "out of memory");
        }
        cert = pt_yaml_get(y, n, "cert");
        keyn = pt_yaml_get(y, n, "key");
        if (!cert != !keyn)
            return pt_yaml_fail(y, cert ? cert : keyn,
                                "%s.tls: a client certificate takes both cert and key", what);
        if (cert) {
            snprintf(key, sizeof key, "%s.tls.cert", what);
            if (pt__file(y, cert, key, &t->cert) != 0) return -1;
            snprintf(key, sizeof key, "%s.tls.key", what);
            if (pt__file(y, keyn, key, &t->key) != 0) return -1;
        }
    }
    if (!(t->ctx = pt_tls_client_ctx_new(t->ca_file, t->verify, err, sizeof err)))
        return pt_yaml_fail(y, ca ? ca : n ? n : where, "%s.tls: %s", what, err);
    if (t->cert) {
        int rc = pt_tls_client_ctx_cert(t->ctx, t->cert, t->key, err, sizeof err);
        if (rc != 0) return pt_yaml_fail(y, rc == -1 ? cert : keyn, "%s.tls: %s", what, err);
    }
    if (!t->verify)
        pt_log_warn("%s:%lu: %s: tls.verify is false: the certificates of its targets are not "
                    "checked (anyone on the way can read and change its traffic)",
                    y->file, (unsigned long)(n ? n : where)->start_mark.line + 1, what);
    return 0;
}

void pt_upstream_tls_free(pt_upstream_tls_t *t)
{
    if (!t) return;
    SSL_CTX_free(t->ctx);
    free(t->ca_file);
    free(t->server_name);
    free(t->cert);
    free(t->key);
    free(t);
}
