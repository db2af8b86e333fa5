/* Placeholder until the bus lands: every request is refused with 503. */
#include "pt_bus.h"

int pt_bus_start(const pt_config_t *cfg, pt_bus_t **out)
{
    (void)cfg;
    *out = NULL;
    return 0;
}

void pt_bus_stop(pt_bus_t *b)
{
    (void)b;
}

int pt_bus_send(pt_worker_t *w, const pt_bus_request_t *req, pt_bus_done_cb done, void *ud)
{
    (void)w;
    (void)req;
    (void)done;
    (void)ud;
    return -1;
}

long pt_bus_routing_key(const char *rest, size_t rest_len, char *out, size_t outlen)
{
    (void)rest;
    (void)rest_len;
    (void)out;
    (void)outlen;
    return -1;
}
