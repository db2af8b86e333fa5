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

/* A callback that read a file a writer came back to answers PT_WATCH_RETRY:
 * the change is reported again, not taken as done (a service file caught
 * while an editor rewrote it); pt_watch_same_on_disk tells a rewrite. */
typedef struct {
    int calls;
    int same_first; /* pt_watch_same_on_disk at the first call, after a rewrite */
    char path[512];
    uv_loop_t *loop;
} retry_ctx_t;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    PT_CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

static int retry_cb(void *ud, const char *path, const pt_watch_file_t *now, pt_watch_event_t ev)
{
    retry_ctx_t *r = ud;
    PT_CHECK_INT(ev, PT_WATCH_CHANGED);
    PT_CHECK_STR(path, r->path);
    r->calls++;
    if (r->calls == 1) {
        r->same_first = pt_watch_same_on_disk(now);
        return PT_WATCH_RETRY; /* as if a writer had come back: not taken */
    }
    PT_CHECK_INT(pt_watch_same_on_disk(now), 1);
    uv_stop(r->loop);
    return 0;
}

static void on_give_up(uv_timer_t *t)
{
    uv_stop(t->loop);
}

PT_CASE(a_file_changed_while_read_is_reported_again_once_settled)
{
    char root[] = "/tmp/pt_test_watch_XXXXXX";
    make_tree(root, 0);
    retry_ctx_t r = {0};
    snprintf(r.path, sizeof r.path, "%s/svc.lua", root);
    uv_loop_t loop;
    PT_CHECK_INT(uv_loop_init(&loop), 0);
    r.loop = &loop;
    char *dirs[] = {root};
    pt_watch_t w = {0};
    PT_CHECK_INT(pt_watch_start(&w, &loop, dirs, 1, 10, retry_cb, &r), 0);
    write_file(r.path, "return 1\n");
    uv_timer_t give_up;
    uv_timer_init(&loop, &give_up);
    uv_timer_start(&give_up, on_give_up, 3000, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    PT_CHECK_INT(r.calls, 2);
    PT_CHECK_INT(r.same_first, 1);
    pt_watch_list_t l;
    PT_CHECK_INT(pt_watch_scan(dirs, 1, &l), 0);
    PT_CHECK_INT(l.n, 1);
    PT_CHECK_INT(pt_watch_same_on_disk(&l.files[0]), 1);
    write_file(r.path, "return 2 -- another length\n");
    PT_CHECK_INT(pt_watch_same_on_disk(&l.files[0]), 0);
    pt_watch_list_free(&l);
    pt_watch_stop(&w);
    uv_close((uv_handle_t *)&give_up, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    PT_CHECK_INT(uv_loop_close(&loop), 0);
    remove_tree(root);
}

int main(void)
{
    PT_RUN(a_symlink_loop_is_scanned_once_and_reported);
    PT_RUN(only_lua_files_are_listed_and_no_problem_without_a_loop);
    PT_RUN(a_file_changed_while_read_is_reported_again_once_settled);
    return PT_TEST_DONE();
}
