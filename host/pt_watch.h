/* pt_watch: finds the service files (*.lua below the service directories)
 * and notices when they change. A scan records each file's fingerprint
 * (inode, size, mtime, ctime). The watcher reports a change only once the
 * file has kept its fingerprint for a while (twice the scan interval), and a
 * removal once the file has stayed away for a while (three intervals, at
 * least 500 ms), so a file caught half-written, or deleted and written again
 * by an editor, is never acted on. Runs on the main thread. */
#ifndef PT_WATCH_H
#define PT_WATCH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct {
    char *path;
    uint64_t ino, size;
    int64_t mtime_ns, ctime_ns;
    uint64_t since_ms; /* loop time this fingerprint was first seen */
} pt_watch_file_t;

typedef struct {
    pt_watch_file_t *files; /* sorted by path */
    size_t n;
    char problem[256]; /* a scan: "" or the first directory left out and why */
} pt_watch_list_t;

typedef enum { PT_WATCH_CHANGED = 0, PT_WATCH_REMOVED } pt_watch_event_t;

/* Called for each settled change; path is valid during the call, now is the
 * file's settled fingerprint (NULL for a removal). Returns 0, or
 * PT_WATCH_RETRY when the file changed while the callback read it (a writer
 * came back: pt_watch_same_on_disk): the change is then reported again once
 * the file has settled anew, not taken as done. */
#define PT_WATCH_RETRY 1
typedef int (*pt_watch_cb)(void *ud, const char *path, const pt_watch_file_t *now,
                           pt_watch_event_t ev);

/* 1 when f->path is on disk now with f's fingerprint, else 0. */
int pt_watch_same_on_disk(const pt_watch_file_t *f);

typedef struct {
    uv_timer_t timer;
    char **dirs;
    size_t n_dirs;
    pt_watch_list_t accepted; /* what the workers run */
    pt_watch_list_t last;     /* the previous scan */
    pt_watch_list_t gone;     /* accepted files missing from disk, since when */
    uint64_t settle_ms;
    uint64_t remove_ms;
    pt_watch_cb cb;
    void *ud;
} pt_watch_t;

/* Scans dirs (recursively, with pt_walk_files) into *out, sorted by path.
 * Unreadable directories are skipped; a symlink loop, a tree deeper than
 * PT_WALK_MAX_DEPTH or too many directories are left out and named in
 * out->problem. Returns 0 or -1 (out of memory). */
int pt_watch_scan(char *const *dirs, size_t n_dirs, pt_watch_list_t *out);

/* Frees a list's contents. */
void pt_watch_list_free(pt_watch_list_t *l);

/* Starts watching dirs every interval_ms on loop; the current files count as
 * accepted. dirs are copied. Returns 0 or -1. */
int pt_watch_start(pt_watch_t *w, uv_loop_t *loop, char *const *dirs, size_t n_dirs,
                   uint64_t interval_ms, pt_watch_cb cb, void *ud);

/* Points the watcher at other dirs (a config reload) and reports at once,
 * without waiting for a second scan, every difference between what is
 * accepted and what is on disk now. */
int pt_watch_retarget(pt_watch_t *w, char *const *dirs, size_t n_dirs);

/* Stops the timer (closed on the loop) and frees the lists; also after a
 * pt_watch_start that failed, on a zeroed pt_watch_t. */
void pt_watch_stop(pt_watch_t *w);

#endif
