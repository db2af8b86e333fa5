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

static const char *const links[] = {"l1", "l2", "l3"};

/* A service directory with svc.lua, notes.txt and, when with_links, three
 * links to "." in it. */
static void make_tree(char *root, int with_links)
{
    char p[512];
    PT_CHECK(mkdtemp(root) != NULL);
    snprintf(p, sizeof p, "%s/svc.lua", root);
    close(open(p, O_CREAT | O_WRONLY, 0600));
    snprintf(p, sizeof p, "%s/notes.txt", root);
    close(open(p, O_CREAT | O_WRONLY, 0600));
    for (int i = 0; with_links && i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", root, links[i]);
        PT_CHECK_INT(symlink(".", p), 0);
    }
}

static void remove_tree(const char *root)
{
    char p[512];
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", root, links[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/svc.lua", root);
    unlink(p);
    snprintf(p, sizeof p, "%s/notes.txt", root);
    unlink(p);
    rmdir(root);
}

/* Three links to "." below a service directory: 3^16 directories to a scan
 * that follows every link; one pass with the loop left out here. */
PT_CASE(a_symlink_loop_is_scanned_once_and_reported)
{
    char root[] = "/tmp/pt_test_watch_XXXXXX";
    make_tree(root, 1);
    char *dirs[] = {root};
    pt_watch_list_t l;
    double t0 = now_s();
    PT_CHECK_INT(pt_watch_scan(dirs, 1, &l), 0);
    PT_CHECK(now_s() - t0 < 1.0);
    PT_CHECK_INT(l.n, 1); /* svc.lua once, not once per path to it */
    PT_CHECK(l.n == 1 && strstr(l.files[0].path, "/svc.lua") != NULL);
    PT_CHECK(strstr(l.problem, "a symlink loop at") != NULL);
    pt_watch_list_free(&l);
    remove_tree(root);
}

PT_CASE(only_lua_files_are_listed_and_no_problem_without_a_loop)
{
    char root[] = "/tmp/pt_test_watch_XXXXXX";
    make_tree(root, 0);
    char *dirs[] = {root};
    pt_watch_list_t l;
    PT_CHECK_INT(pt_watch_scan(dirs, 1, &l), 0);
    PT_CHECK_INT(l.n, 1);
    PT_CHECK_STR(l.problem, "");
    pt_watch_list_free(&l);
    remove_tree(root);
}

int main(void)
{
    PT_RUN(a_symlink_loop_is_scanned_once_and_reported);
    PT_RUN(only_lua_files_are_listed_and_no_problem_without_a_loop);
    return PT_TEST_DONE();
}
