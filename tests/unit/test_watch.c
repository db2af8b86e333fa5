#include "pt_test.h"
#include "pt_watch.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void)
{
    /* three links to "." below a service directory: 3^16 directories to a
     * scan that follows every link; one pass with the loop left out here */
    char root[] = "/tmp/pt_test_watch_XXXXXX", p[512];
    PT_CHECK(mkdtemp(root) != NULL);
    snprintf(p, sizeof p, "%s/svc.lua", root);
    close(open(p, O_CREAT | O_WRONLY, 0600));
    snprintf(p, sizeof p, "%s/notes.txt", root);
    close(open(p, O_CREAT | O_WRONLY, 0600));
    const char *links[] = {"l1", "l2", "l3"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", root, links[i]);
        PT_CHECK_INT(symlink(".", p), 0);
    }
    char *dirs[] = {root};
    pt_watch_list_t l;
    double t0 = now_s();
    PT_CHECK_INT(pt_watch_scan(dirs, 1, &l), 0);
    PT_CHECK(now_s() - t0 < 1.0);
    PT_CHECK_INT(l.n, 1); /* svc.lua once, not once per path to it */
    PT_CHECK(l.n == 1 && strstr(l.files[0].path, "/svc.lua") != NULL);
    PT_CHECK(strstr(l.problem, "a symlink loop at") != NULL);
    pt_watch_list_free(&l);
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", root, links[i]);
        unlink(p);
    }
    PT_CHECK_INT(pt_watch_scan(dirs, 1, &l), 0);
    PT_CHECK_INT(l.n, 1);
    PT_CHECK_STR(l.problem, "");
    pt_watch_list_free(&l);
    snprintf(p, sizeof p, "%s/svc.lua", root);
    unlink(p);
    snprintf(p, sizeof p, "%s/notes.txt", root);
    unlink(p);
    rmdir(root);
    return PT_TEST_DONE();
}
