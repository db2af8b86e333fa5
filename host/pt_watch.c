#include "pt_watch.h"
#include "pt_log.h"
#include "pt_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int pt__push(pt_watch_list_t *l, size_t *cap, const pt_watch_file_t *src)
{
    if (l->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 32;
        pt_watch_file_t *f = realloc(l->files, ncap * sizeof *f);
        if (!f) return -1;
        l->files = f;
        *cap = ncap;
    }
    pt_watch_file_t *f = &l->files[l->n];
    *f = *src;
    if (!(f->path = strdup(src->path))) return -1;
    l->n++;
    return 0;
}

typedef struct {
    pt_watch_list_t *l;
    size_t cap;
} pt__scan_t;

static int pt__scan_file(void *ud, const char *path, const struct stat *st)
{
    pt__scan_t *sc = ud;
    const char *base = strrchr(path, '/');
    size_t len = strlen(base ? base + 1 : path);
    if (len <= 4 || strcmp(path + strlen(path) - 4, ".lua") != 0) return 0;
    pt_watch_file_t f = {
        .path = (char *)path,
        .ino = st->st_ino,
        .size = (uint64_t)st->st_size,
        .mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec,
        .ctime_ns = (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec,
    };
    return pt__push(sc->l, &sc->cap, &f);
}

int pt_watch_same_on_disk(const pt_watch_file_t *f)
{
    struct stat st;
    if (stat(f->path, &st) != 0) return 0;
    return f->ino == st.st_ino && f->size == (uint64_t)st.st_size &&
           f->mtime_ns == (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec &&
           f->ctime_ns == (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
}

static int pt__cmp(const void *a, const void *b)
{
    return strcmp(((const pt_watch_file_t *)a)->path, ((const pt_watch_file_t *)b)->path);
}

int pt_watch_scan(char *const *dirs, size_t n_dirs, pt_watch_list_t *out)
{
    pt__scan_t sc = {.l = out};
    out->files = NULL;
    out->n = 0;
    /* a loop or a too deep tree leaves those directories out (the config
     * refused them at load; here one has appeared since): the rest is watched */
    if (pt_walk_files(dirs, n_dirs, pt__scan_file, &sc, out->problem, sizeof out->problem) == -1) {
        pt_watch_list_free(out);
        return -1;
    }
    if (out->n) qsort(out->files, out->n, sizeof *out->files, pt__cmp);
    return 0;
}

void pt_watch_list_free(pt_watch_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->files[i].path);
    free(l->files);
    l->files = NULL;
    l->n = 0;
}

static const pt_watch_file_t *pt__find(const pt_watch_list_t *l, const char *path)
{
    pt_watch_file_t key = {.path = (char *)path};
    return l->n ? bsearch(&key, l->files, l->n, sizeof key, pt__cmp) : NULL;
}

static int pt__same(const pt_watch_file_t *a, const pt_watch_file_t *b)
{
    if (!a || !b) return a == b;
    return a->ino == b->ino && a->size == b->size && a->mtime_ns == b->mtime_ns &&
           a->ctime_ns == b->ctime_ns;
}

static int pt__copy(pt_watch_list_t *dst, const pt_watch_list_t *src)
{
    size_t cap = 0;
    dst->files = NULL;
    dst->n = 0;
    for (size_t i = 0; i < src->n; i++)
        if (pt__push(dst, &cap, &src->files[i]) != 0) return -1;
    return 0;
}

/* Gives each file of now the time its fingerprint was first seen. */
static void pt__stamp(pt_watch_t *w, pt_watch_list_t *now, uint64_t now_ms)
{
    for (size_t i = 0; i < now->n; i++) {
        const pt_watch_file_t *prev = pt__find(&w->last, now->files[i].path);
        now->files[i].since_ms = pt__same(prev, &now->files[i]) ? prev->since_ms : now_ms;
    }
}

/* Reports paths where now differs from accepted, then accepted follows.
 * With settle, a change counts once the file has kept its fingerprint for
 * settle_ms, a removal once the file has been gone for remove_ms: an editor
 * that truncates and writes, or deletes and writes again, is never caught
 * half-way. An empty file is always taken as a write in progress. */
static void pt__diff(pt_watch_t *w, pt_watch_list_t *now, int settle, uint64_t now_ms)
{
    pt_watch_list_t next = {0}, gone = {0};
    size_t cap = 0, gone_cap = 0;
    size_t i = 0, j = 0;
    /* Walk accepted and now in path order, building the next accepted list. */
    while (i < w->accepted.n || j < now->n) {
        int c = i == w->accepted.n ? 1
                : j == now->n      ? -1
                                   : strcmp(w->accepted.files[i].path, now->files[j].path);
        const pt_watch_file_t *acc = c <= 0 ? &w->accepted.files[i] : NULL;
        const pt_watch_file_t *cur = c >= 0 ? &now->files[j] : NULL;
        const char *path = acc ? acc->path : cur->path;
        const pt_watch_file_t *keep = acc;
        if (!pt__same(acc, cur)) {
            int settled;
            if (cur) {
                settled = cur->size > 0 && (!settle || now_ms - cur->since_ms >= w->settle_ms);
            } else {
                const pt_watch_file_t *g = pt__find(&w->gone, path);
                pt_watch_file_t mark = {.path = (char *)path, .since_ms = g ? g->since_ms : now_ms};
                settled = !settle || now_ms - mark.since_ms >= w->remove_ms;
                if (!settled) pt__push(&gone, &gone_cap, &mark);
            }
            if (settled &&
                w->cb(w->ud, path, cur, cur ? PT_WATCH_CHANGED : PT_WATCH_REMOVED) != PT_WATCH_RETRY)
                keep = cur;
        }
        if (keep) pt__push(&next, &cap, keep);
        if (c <= 0) i++;
        if (c >= 0) j++;
    }
    pt_watch_list_free(&w->accepted);
    w->accepted = next;
    pt_watch_list_free(&w->gone);
    w->gone = gone;
}

static void pt__tick(uv_timer_t *t)
{
    pt_watch_t *w = t->data;
    pt_watch_list_t now;
    uint64_t now_ms = uv_now(t->loop);
    if (pt_watch_scan(w->dirs, w->n_dirs, &now) != 0) return;
    if (now.problem[0] && strcmp(now.problem, w->last.problem) != 0)
        pt_log_warn("service directories: %s, left out of the scan", now.problem);
    pt__stamp(w, &now, now_ms);
    pt__diff(w, &now, 1, now_ms);
    pt_watch_list_free(&w->last);
    w->last = now;
}

static void pt__free_dirs(pt_watch_t *w)
{
    for (size_t i = 0; i < w->n_dirs; i++)
        free(w->dirs[i]);
    free(w->dirs);
    w->dirs = NULL;
    w->n_dirs = 0;
}

static int pt__set_dirs(pt_watch_t *w, char *const *dirs, size_t n_dirs)
{
    pt__free_dirs(w);
    w->dirs = calloc(n_dirs ? n_dirs : 1, sizeof *w->dirs);
    if (!w->dirs) return -1;
    for (size_t i = 0; i < n_dirs; i++)
        w->dirs[w->n_dirs++] = strdup(dirs[i]);
    return 0;
}

int pt_watch_start(pt_watch_t *w, uv_loop_t *loop, char *const *dirs, size_t n_dirs,
                   uint64_t interval_ms, pt_watch_cb cb, void *ud)
{
    w->cb = cb;
    w->ud = ud;
    w->settle_ms = interval_ms * 2 > 100 ? interval_ms * 2 : 100;
    w->remove_ms = interval_ms * 3 > 500 ? interval_ms * 3 : 500;
    if (pt__set_dirs(w, dirs, n_dirs) != 0 || pt_watch_scan(w->dirs, w->n_dirs, &w->last) != 0 ||
        pt__copy(&w->accepted, &w->last) != 0)
        return -1;
    uv_timer_init(loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, pt__tick, interval_ms, interval_ms);
    uv_unref((uv_handle_t *)&w->timer);
    return 0;
}

int pt_watch_retarget(pt_watch_t *w, char *const *dirs, size_t n_dirs)
{
    pt_watch_list_t now;
    if (pt__set_dirs(w, dirs, n_dirs) != 0 || pt_watch_scan(w->dirs, w->n_dirs, &now) != 0)
        return -1;
    pt__stamp(w, &now, uv_now(w->timer.loop));
    pt__diff(w, &now, 0, uv_now(w->timer.loop));
    pt_watch_list_free(&w->last);
    w->last = now;
    return 0;
}

void pt_watch_stop(pt_watch_t *w)
{
    /* a start that failed before its timer (out of memory) left none */
    if (w->timer.loop && !uv_is_closing((uv_handle_t *)&w->timer))
        uv_close((uv_handle_t *)&w->timer, NULL);
    pt_watch_list_free(&w->accepted);
    pt_watch_list_free(&w->last);
    pt_watch_list_free(&w->gone);
    pt__free_dirs(w);
}
