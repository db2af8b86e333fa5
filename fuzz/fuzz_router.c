/* libFuzzer target: the router's path decoding and matching. The input is a
 * request target (path and query, split at the first '?') routed against the
 * channels of tests/unit/data/router.yaml, with each of a few methods. A
 * match must point into the decode buffer or the router, never past them. */
#include "pt_config.h"
#include "pt_router.h"

#include <llhttp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pt_config_t *pt__cfg;
static pt_router_t *pt__router;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[512];
    const char *path = getenv("PT_FUZZ_ROUTER_CONFIG");
    if (!path) path = "tests/unit/data/router.yaml";
    if (pt_config_load(path, &pt__cfg, err, sizeof err) != 0 ||
        pt_router_new(pt__cfg, &pt__router, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_router: %s (run from the repository root)\n", err);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int methods[] = {HTTP_GET, HTTP_POST, HTTP_DELETE};
    const char *p = (const char *)data;
    const char *q = memchr(p, '?', size);
    size_t path_len = q ? (size_t)(q - p) : size;
    const char *query = q ? q + 1 : "";
    size_t query_len = q ? size - path_len - 1 : 0;
    char *buf = malloc(path_len + 1);
    if (!buf) return 0;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        pt_route_match_t m;
        int rc = pt_router_match(pt__router, methods[i], p, path_len, query, query_len, buf, &m);
        if (rc == 0) {
            /* touch every capture: ASan catches one that runs past its buffer */
            volatile size_t sum = strlen(m.service) + m.rest_len;
            for (int k = 0; k < m.n_params; k++)
                sum += (size_t)m.params[k]
                           .value[m.params[k].value_len ? m.params[k].value_len - 1 : 0];
            (void)sum;
            if (!pt_route_valid_service_name(m.service, strlen(m.service)) &&
                m.channel->type != PT_CHANNEL_REST)
                abort(); /* a routed service name is always well formed */
        } else if (rc == 400) {
            if (!m.error) abort();
        } else if (rc != 404 && rc != 405) {
            abort();
        }
    }
    free(buf);
    return 0;
}
