/* pt_worker: max_connections is one count for the whole process, whichever
 * worker a connection lands on; refusals are counted. */
#include "pt_http.h"
#include "pt_metrics.h"
#include "pt_test.h"
#include "pt_test_config.h"
#include "pt_worker.h"

int main(void)
{
    char err[512];
    pt_config_t *cfg = NULL;
    (void)pt_test_fails_with;
    PT_CHECK_INT(pt_test_load("server:\n  max_connections: 10\n", &cfg, err, sizeof err), 0);
    if (!cfg) return PT_TEST_DONE();
    static pt_worker_t w[2];
    static pt_conn_t c[12];
    w[0].cfg = w[1].cfg = cfg;
    w[0].n_workers = w[1].n_workers = 2;
    /* all ten on one worker: a per-worker share (5) would refuse the sixth */
    for (int i = 0; i < 10; i++)
        PT_CHECK_INT(pt_worker_conn_admit(&w[0], &c[i]), 0);
    uint64_t refused = pt_metrics_connections_refused;
    PT_CHECK_INT(pt_worker_conn_admit(&w[1], &c[10]), -1);
    PT_CHECK_INT(c[10].admitted, 0);
    PT_CHECK_INT(pt_metrics_connections_refused, refused + 1);
    /* one closes on worker 0: worker 1 may take one more */
    w[0].conns = &c[0];
    w[0].n_conns = 1;
    pt_worker_conn_closed(&w[0], &c[0]);
    PT_CHECK_INT(pt_worker_conn_admit(&w[1], &c[11]), 0);
    PT_CHECK_INT(pt_worker_conn_admit(&w[1], &c[10]), -1);
    pt_config_free(cfg);
    return PT_TEST_DONE();
}
