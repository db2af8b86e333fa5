#include "pt_gateway.h"
#include "pt_dispatch.h"
#include "pt_http.h"
#include "pt_log.h"
#include "pt_lua.h"
#include "pt_primitives.h"
#include "pt_redis.h"
#include "pt_upstream.h"
#include "pt_ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the hooks ---- */

/* The VM loads every service within lua.load_timeout; the upstreams are
 * w->snap's. Both live on this thread's loop. */
static int pt__start(pt_worker_t *w, char *err, size_t errlen)
{
    if (pt_lua_new(w->cfg, w->id, pt_primitives, &w->lua, err, errlen) != 0) return -1;
    if (!(w->upstreams = pt_upstreams_new(&w->loop, w->snap, &w->metrics))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* cluster: the loop's Redis connection, made at its first command */
    if (w->cfg->cluster.on && !(w->redis = pt_redis_new(&w->loop, &w->cfg->cluster))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static void pt__accept(pt_worker_t *w, uv_stream_t *listener)
{
    pt_dispatch_accept(w, listener);
}

static void pt__snapshot(pt_worker_t *w)
{
    pt_upstreams_t *ups = pt_upstreams_new(&w->loop, w->snap, &w->metrics);
    if (!ups) {
        pt_log_error("out of memory: the upstreams keep their previous config");
        return;
    }
    pt_upstreams_retire(w->upstreams); /* exchanges in flight finish on the old set */
    w->upstreams = ups;
}

static void pt__drain_expired(pt_worker_t *w)
{
    pt_lua_cancel_all(w->lua); /* services waiting on a backend answer "cancelled" now */
}

static void pt__drained(pt_worker_t *w)
{
    pt_upstreams_retire(w->upstreams); /* idle upstream connections close */
    w->upstreams = NULL;
    pt_redis_free(w->redis); /* so does Redis's (its retry timer would keep the loop) */
    w->redis = NULL;
}

static void pt__end(pt_worker_t *w)
{
    pt_lua_free(w->lua);
    w->lua = NULL;
    pt_dispatch_end(w);
    pt_http_worker_end(w); /* after the VM: its callbacks may give request states back */
}

static void pt__at_check(pt_worker_t *w)
{
    pt_ws_flush_pushes(w);
}

const pt_worker_hooks_t pt_gateway_hooks = {
    .start = pt__start,
    .accept = pt__accept,
    .snapshot = pt__snapshot,
    .drain_expired = pt__drain_expired,
    .drained = pt__drained,
    .at_check = pt__at_check,
    .end = pt__end,
};

/* ---- service files ---- */

typedef struct {
    int unload;
    char *path;
    char *source; /* NUL-terminated; NULL for an unload */
    size_t len;
    char data[]; /* path, then source */
} pt__file_msg_t;

/* On w's loop; on the joining thread once w ended (w->lua is NULL then). */
static void pt__on_file(pt_worker_t *w, void *arg)
{
    pt__file_msg_t *m = arg;
    char err[1024];
    if (w->lua && m->unload)
        pt_lua_unload_file(w->lua, m->path);
    else if (w->lua && pt_lua_load_file(w->lua, m->path, m->source, m->len, err, sizeof err) != 0)
        pt_log_error("service reload failed, the previous version keeps serving: %s", err);
    free(m);
}

static int pt__post_file(pt_worker_t *w, const char *path, const char *source, size_t len)
{
    size_t plen = strlen(path);
    pt__file_msg_t *m = malloc(sizeof *m + plen + 1 + (source ? len + 1 : 0));
    if (!m) goto oom;
    m->unload = source == NULL;
    m->path = m->data;
    memcpy(m->path, path, plen + 1);
    m->source = NULL;
    m->len = 0;
    if (source) {
        m->source = m->data + plen + 1;
        memcpy(m->source, source, len);
        m->source[len] = '\0';
        m->len = len;
    }
    if (pt_worker_call(w, pt__on_file, m) != 0) {
        free(m);
        goto oom;
    }
    return 0;
oom:
    pt_log_error("out of memory: worker %d keeps the previous version of %s", w->id, path);
    return -1;
}

int pt_gateway_load(pt_worker_t *w, const char *path, const char *source, size_t len)
{
    return pt__post_file(w, path, source ? source : "", len);
}

int pt_gateway_unload(pt_worker_t *w, const char *path)
{
    return pt__post_file(w, path, NULL, 0);
}

/* ---- library reloads ---- */

typedef struct {
    pt_lua_source_t *libs, *svcs;
    size_t n_libs, n_svcs;
} pt__libs_msg_t;

static void pt__on_libs(pt_worker_t *w, void *arg)
{
    pt__libs_msg_t *m = arg;
    char err[1024];
    if (w->lua &&
        pt_lua_reload_libs(w->lua, m->libs, m->n_libs, m->svcs, m->n_svcs, err, sizeof err) != 0)
        pt_log_error("library reload failed, its dependants keep their previous version: %s", err);
    free(m);
}

/* Sizes (data == NULL) or copies the sources into data. */
static size_t pt__copy_sources(pt_lua_source_t *dst, const pt_lua_source_t *src, size_t n,
                               char *data)
{
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t plen = strlen(src[i].path) + 1, slen = src[i].source ? src[i].len + 1 : 0;
        if (data) {
            dst[i].path = memcpy(data + off, src[i].path, plen);
            dst[i].source = NULL;
            dst[i].len = src[i].len;
            if (src[i].source) {
                char *s = data + off + plen;
                memcpy(s, src[i].source, src[i].len);
                s[src[i].len] = '\0';
                dst[i].source = s;
            }
        }
        off += plen + slen;
    }
    return off;
}

int pt_gateway_reload_libs(pt_worker_t *w, const pt_lua_source_t *libs, size_t n_libs,
                           const pt_lua_source_t *svcs, size_t n_svcs)
{
    size_t heads = sizeof(pt__libs_msg_t) + (n_libs + n_svcs) * sizeof(pt_lua_source_t);
    size_t size = heads + pt__copy_sources(NULL, libs, n_libs, NULL) +
                  pt__copy_sources(NULL, svcs, n_svcs, NULL);
    pt__libs_msg_t *m = malloc(size);
    if (!m) goto oom;
    m->libs = (pt_lua_source_t *)(m + 1);
    m->svcs = m->libs + n_libs;
    m->n_libs = n_libs;
    m->n_svcs = n_svcs;
    char *data = (char *)(m->svcs + n_svcs);
    data += pt__copy_sources(m->libs, libs, n_libs, data);
    pt__copy_sources(m->svcs, svcs, n_svcs, data);
    if (pt_worker_call(w, pt__on_libs, m) != 0) {
        free(m);
        goto oom;
    }
    return 0;
oom:
    pt_log_error("out of memory: worker %d keeps the previous version of a library's dependants",
                 w->id);
    return -1;
}
