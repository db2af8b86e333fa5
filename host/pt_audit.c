#include "pt_audit.h"
#include "pt_accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

typedef struct pt__line_s {
    struct pt__line_s *next;
    size_t len;
    char data[];
} pt__line_t;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int running, stop, reopen, done;
    pt__line_t *head, *tail;
    size_t queued, max_queue;
    char *path;
    int fd; /* -1: not open yet (a FIFO waiting for its reader) */
    pt_audit_sink_fn sink;
    void *sink_ud;
} pt__w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .fd = -1};

/* ---- redaction ---- */

static const char *const pt__headers_hidden[] = {"authorization", "proxy-authorization", "cookie",
                                                 "set-cookie", NULL};
static const char *const pt__header_words[] = {"token",   "secret", "password", "passwd",
                                               "api-key", "apikey", "api_key",  NULL};
static const char *const pt__json_hidden[] = {
    "password", "passwd",     "secret", "token",         "access_token",  "refresh_token",
    "id_token", "api_key",    "apikey", "client_secret", "authorization", "proxy-authorization",
    "cookie",   "set-cookie", NULL};

static int pt__has_word(const char *s, size_t n, const char *w)
{
    size_t wl = strlen(w);
    for (size_t i = 0; i + wl <= n; i++)
        if (strncasecmp(s + i, w, wl) == 0) return 1;
    return 0;
}

static int pt__header_hidden(const pt_config_obs_t *o, const char *name, size_t n)
{
    for (size_t i = 0; pt__headers_hidden[i]; i++)
        if (strlen(pt__headers_hidden[i]) == n && strncasecmp(name, pt__headers_hidden[i], n) == 0)
            return 1;
    for (size_t i = 0; pt__header_words[i]; i++)
        if (pt__has_word(name, n, pt__header_words[i])) return 1;
    for (size_t i = 0; i < o->n_redact_headers; i++)
        if (strlen(o->redact_headers[i]) == n && strncasecmp(name, o->redact_headers[i], n) == 0)
            return 1;
    return 0;
}

static int pt__key_hidden(const pt_config_obs_t *o, const char *k)
{
    for (size_t i = 0; pt__json_hidden[i]; i++)
        if (strcasecmp(k, pt__json_hidden[i]) == 0) return 1;
    return pt__header_hidden(o, k, strlen(k));
}

/* Every value whose key is a secret's name (the header rules and the
 * built-in keys), at any depth. */
static void pt__hide_named(json_t *v, const pt_config_obs_t *o, int depth)
{
    if (depth > 2048) return;
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x)
        {
            if (pt__key_hidden(o, k))
                json_object_set_new(v, k, json_string("[REDACTED]"));
            else
                pt__hide_named(x, o, depth + 1);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) pt__hide_named(x, o, depth + 1);
    }
}

/* Every value under key, at any depth. */
static void pt__hide_deep(json_t *v, const char *key, int depth)
{
    if (depth > 2048) return;
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x)
        {
            if (strcmp(k, key) == 0)
                json_object_set_new(v, k, json_string("[REDACTED]"));
            else
                pt__hide_deep(x, key, depth + 1);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) pt__hide_deep(x, key, depth + 1);
    }
}

/* The value at keys[0..n) from v; an array on the way stands for each of
 * its items. */
static void pt__hide_path(json_t *v, char *const *keys, size_t n)
{
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) pt__hide_path(x, keys, n);
        return;
    }
    if (!json_is_object(v) || n == 0) return;
    json_t *x = json_object_get(v, keys[0]);
    if (!x) return;
    if (n == 1)
        json_object_set_new(v, keys[0], json_string("[REDACTED]"));
    else
        pt__hide_path(x, keys + 1, n - 1);
}

/* The body as it is logged: a JSON body with its secrets hidden
 * (re-encoded), anything else as it came; then cut at max. */
static void pt__body(pt_buf_t *b, const pt_config_obs_t *o, const char *name, const char *body,
                     size_t len)
{
    pt_buf_printf(b, ",\"%s\":{\"bytes\":%zu,\"body\":", name, len);
    if (!body) {
        pt_buf_puts(b, "null,\"truncated\":false,\"streamed\":true}");
        return;
    }
    char *text = NULL;
    size_t text_len = len;
    json_t *doc = NULL;
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        i++;
    if (i < len && (body[i] == '{' || body[i] == '['))
        doc = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (doc) {
        pt__hide_named(doc, o, 0);
        for (size_t k = 0; k < o->n_redact_json; k++) {
            const pt_json_path_t *p = &o->redact_json[k];
            if (p->deep)
                pt__hide_deep(doc, p->keys[0], 0);
            else
                pt__hide_path(doc, p->keys, p->n);
        }
        text = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
        json_decref(doc);
        if (text) text_len = strlen(text);
    }
    const char *src = text ? text : body;
    size_t keep = text_len;
    int cut = keep > o->audit_max_body;
    if (cut) {
        keep = (size_t)o->audit_max_body;
        /* not inside a UTF-8 sequence */
        while (keep > 0 && ((unsigned char)src[keep] & 0xC0) == 0x80)
            keep--;
    }
    pt_accesslog_string(b, src, keep);
    pt_buf_printf(b, ",\"truncated\":%s,\"streamed\":false}", cut ? "true" : "false");
    free(text);
}

static int pt__hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

int pt_audit_trace_id(const char *v, size_t len, char *out)
{
    /* version "-" trace-id "-" parent-id "-" flags; version ff is invalid,
     * a future version may carry more after the flags */
    if (!v || len < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return 0;
    if (!pt__hex(v, 2) || !pt__hex(v + 3, 32) || !pt__hex(v + 36, 16) || !pt__hex(v + 53, 2))
        return 0;
    if (memcmp(v, "ff", 2) == 0) return 0;
    if (memcmp(v, "00", 2) == 0 && len != 55) return 0;
    if (len > 55 && v[55] != '-') return 0;
    static const char zeros[32] = "00000000000000000000000000000000";
    if (memcmp(v + 3, zeros, 32) == 0 || memcmp(v + 36, zeros, 16) == 0) return 0;
    memcpy(out, v + 3, 32);
    out[32] = '\0';
    return 1;
}

static void pt__str(pt_buf_t *b, const char *name, const char *v, size_t len)
{
    pt_buf_printf(b, ",\"%s\":", name);
    pt_accesslog_string(b, v, len);
}

void pt_audit_format(const pt_config_obs_t *o, const pt_audit_record_t *r, pt_buf_t *b)
{
    char now[32], trace[33];
    pt_utcnow(now);
    pt_buf_printf(b, "{\"time\":\"%sZ\"", now);
    pt__str(b, "cid", r->cid, r->cid ? strlen(r->cid) : 0);
    int has_trace = pt_audit_trace_id(r->traceparent, r->traceparent_len, trace);
    pt__str(b, "trace_id", has_trace ? trace : NULL, 32);
    pt__str(b, "channel", r->channel, r->channel ? strlen(r->channel) : 0);
    pt__str(b, "service", r->service, r->service ? strlen(r->service) : 0);
    pt__str(b, "username", r->username, r->username ? strlen(r->username) : 0);
    pt__str(b, "method", r->method, r->method ? strlen(r->method) : 0);
    pt__str(b, "path", r->path, r->path_len);
    if (r->query && r->query_len) {
        pt_buf_t q = {0};
        pt_accesslog_redact_query(&q, r->query, r->query_len, o->redact_query, o->n_redact_query);
        pt__str(b, "query", q.data ? q.data : "", q.len);
        pt_buf_free(&q);
    } else {
        pt__str(b, "query", NULL, 0);
    }
    pt_buf_printf(b, ",\"status\":%d,\"request_headers\":{", r->status);
    for (size_t i = 0; i < r->n_headers; i++) {
        const pt_audit_header_t *h = &r->headers[i];
        if (i) pt_buf_append(b, ",", 1);
        char lower[128];
        size_t n = h->name_len < sizeof lower ? h->name_len : sizeof lower - 1;
        for (size_t k = 0; k < n; k++) {
            char ch = h->name[k];
            lower[k] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
        }
        pt_accesslog_string(b, lower, n);
        pt_buf_append(b, ":", 1);
        if (pt__header_hidden(o, h->name, h->name_len))
            pt_buf_puts(b, "\"[REDACTED]\"");
        else
            pt_accesslog_string(b, h->value, h->value_len);
    }
    pt_buf_append(b, "}", 1);
    pt__body(b, o, "request", r->req_body, r->req_body_len);
    pt__str(b, "response_content_type", r->resp_ctype, r->resp_ctype_len);
    pt__body(b, o, "response", r->resp_body, r->resp_body ? r->resp_body_len : r->resp_bytes);
    pt_buf_append(b, "}", 1);
}

/* ---- the queue and the writer ---- */

void pt_audit_submit(const pt_config_obs_t *o, const pt_audit_record_t *r)
{
    if (!__atomic_load_n(&pt__w.running, __ATOMIC_ACQUIRE)) return;
    pt_buf_t b = {0};
    pt_audit_format(o, r, &b);
    if (!b.data) return;
    pt__line_t *l = malloc(sizeof *l + b.len + 1);
    if (l) {
        l->next = NULL;
        l->len = b.len + 1;
        memcpy(l->data, b.data, b.len);
        l->data[b.len] = '\n';
    }
    pt_buf_free(&b);
    pthread_mutex_lock(&pt__w.mu);
    if (!l || pt__w.queued + l->len > pt__w.max_queue) {
        pthread_mutex_unlock(&pt__w.mu);
        free(l);
        pt_metrics_inc(&pt_metrics_audit[PT_METRICS_AUDIT_DROPPED], 1);
        return;
    }
    if (pt__w.tail)
        pt__w.tail->next = l;
    else
        pt__w.head = l;
    pt__w.tail = l;
    pt__w.queued += l->len;
    pthread_cond_broadcast(&pt__w.cv);
    pthread_mutex_unlock(&pt__w.mu);
}

static int pt__open(const char *path, int nonblock)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | (nonblock ? O_NONBLOCK : 0),
                0640);
}

static int pt__write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static void *pt__writer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pt__w.mu);
    for (;;) {
        while (!pt__w.head && !pt__w.stop && !pt__w.reopen)
            pthread_cond_wait(&pt__w.cv, &pt__w.mu);
        int reopen = pt__w.reopen;
        pt__w.reopen = 0;
        pt__line_t *batch = pt__w.head;
        pt__w.head = pt__w.tail = NULL;
        int stop = pt__w.stop;
        pthread_mutex_unlock(&pt__w.mu);

        if (pt__w.path && (reopen || pt__w.fd < 0)) {
            int fd = pt__open(pt__w.path, 0); /* a FIFO: blocks here, off the workers */
            if (fd >= 0) {
                if (pt__w.fd >= 0) close(pt__w.fd);
                pt__w.fd = fd;
            }
        }
        while (batch) {
            pt__line_t *next = batch->next;
            int rc;
            if (pt__w.sink)
                rc = pt__w.sink(pt__w.sink_ud, batch->data, batch->len - 1);
            else
                rc = pt__w.fd >= 0 ? pt__write_all(pt__w.fd, batch->data, batch->len) : -1;
            if (rc != 1)
                pt_metrics_inc(
                    &pt_metrics_audit[rc == 0 ? PT_METRICS_AUDIT_WRITTEN : PT_METRICS_AUDIT_FAILED],
                    1);
            pthread_mutex_lock(&pt__w.mu);
            pt__w.queued -= batch->len; /* room again only once it is out */
            pthread_mutex_unlock(&pt__w.mu);
            free(batch);
            batch = next;
        }
        pthread_mutex_lock(&pt__w.mu);
        if (stop && !pt__w.head) break;
    }
    pt__w.done = 1;
    pthread_cond_broadcast(&pt__w.cv);
    pthread_mutex_unlock(&pt__w.mu);
    return NULL;
}

int pt_audit_start(const pt_config_obs_t *o, pt_audit_sink_fn sink, void *sink_ud, char *err,
                   size_t errlen)
{
    if (!o->n_audit_channels || pt__w.running) return 0;
    pt__w.max_queue = (size_t)o->audit_max_queue;
    pt__w.sink = sink;
    pt__w.sink_ud = sink_ud;
    if (!sink && o->audit_file) {
        int fd = pt__open(o->audit_file, 1);
        if (fd < 0 && errno != ENXIO) { /* ENXIO: a FIFO with no reader yet */
            snprintf(err, errlen, "cannot open audit log %s: %s", o->audit_file, strerror(errno));
            return -1;
        }
        if (fd >= 0) {
            /* writes block: a slow file holds the writer, not the workers */
            int fl = fcntl(fd, F_GETFL);
            if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
        }
        pt__w.fd = fd;
        if (!(pt__w.path = strdup(o->audit_file))) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    pt__w.stop = 0;
    if (pthread_create(&pt__w.thread, NULL, pt__writer, NULL) != 0) {
        snprintf(err, errlen, "cannot start the audit writer thread");
        return -1;
    }
    __atomic_store_n(&pt__w.running, 1, __ATOMIC_RELEASE);
    return 0;
}

int pt_audit_running(void)
{
    return __atomic_load_n(&pt__w.running, __ATOMIC_ACQUIRE);
}

void pt_audit_reopen(void)
{
    if (!pt_audit_running()) return;
    pthread_mutex_lock(&pt__w.mu);
    pt__w.reopen = 1;
    pthread_cond_broadcast(&pt__w.cv);
    pthread_mutex_unlock(&pt__w.mu);
}

void pt_audit_stop(void)
{
    if (!pt_audit_running()) return;
    __atomic_store_n(&pt__w.running, 0, __ATOMIC_RELEASE);
    /* a sink that does not take the last lines within 2 s is left behind:
     * exiting must not wait for a stuck file or FIFO */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 2;
    pthread_mutex_lock(&pt__w.mu);
    pt__w.stop = 1;
    pthread_cond_broadcast(&pt__w.cv);
    while (!pt__w.done && pthread_cond_timedwait(&pt__w.cv, &pt__w.mu, &until) == 0) {
    }
    int done = pt__w.done;
    pthread_mutex_unlock(&pt__w.mu);
    if (!done) {
        pthread_detach(pt__w.thread);
        return;
    }
    pthread_join(pt__w.thread, NULL);
    if (pt__w.fd >= 0) close(pt__w.fd);
    pt__w.fd = -1;
    free(pt__w.path);
    pt__w.path = NULL;
}
