/* pt_worker: max_connections is one count for the whole process, whichever
 * worker a connection lands on; refusals are counted. */
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
    static pt_worker_conn_t c[12];
    static const pt_worker_conn_ops_t ops = {0};
    w[0].cfg = w[1].cfg = cfg;
    w[0].n_workers = w[1].n_workers = 2;
    /* all ten on one worker: a per-worker share (5) would refuse the sixth */
    for (int i = 0; i < 10; i++)
        PT_CHECK_INT(pt_worker_conn_add(&w[0], &c[i], &ops), 0);
    uint64_t refused = pt_metrics_connections_refused;
    PT_CHECK_INT(pt_worker_conn_add(&w[1], &c[10], &ops), -1);
    PT_CHECK_INT(c[10].admitted, 0);
    PT_CHECK_INT(pt_metrics_connections_refused, refused + 1);
    pt_worker_conn_remove(&w[1], &c[10]); /* a refused one stays linked until it is closed */
    /* one closes on worker 0: worker 1 may take one more */
    pt_worker_conn_remove(&w[0], &c[0]);
    PT_CHECK_INT(pt_worker_conn_add(&w[1], &c[11], &ops), 0);
    PT_CHECK_INT(pt_worker_conn_add(&w[1], &c[10], &ops), -1);
    pt_config_free(cfg);
    return PT_TEST_DONE();
}
