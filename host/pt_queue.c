#include "pt_queue.h"

#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define PT__WAKE_NONE 0
#define PT__WAKE_ASYNC 1
#define PT__WAKE_FD 2

int pt_queue_init(pt_queue_t *q)
{
    q->head = q->tail = NULL;
    q->ended = 0;
    q->wake = PT__WAKE_NONE;
    q->fd = -1;
    q->cb = NULL;
    q->data = NULL;
    return uv_mutex_init(&q->lock);
}

static void pt__write_fd(int fd)
{
    uint64_t one = 1;
    ssize_t n = write(fd, &one, sizeof one);
    (void)n; /* a full counter (2^64 - 2 wake-ups unread) still wakes */
}

/* Under q->lock. The send stays under the lock: pt_queue_end closes the
 * uv_async_t under it too, so no send can reach a closing handle. */
static void pt__wake_locked(pt_queue_t *q)
{
    if (q->wake == PT__WAKE_ASYNC)
        uv_async_send(&q->async);
    else if (q->wake == PT__WAKE_FD)
        pt__write_fd(q->fd);
}

static void pt__on_async(uv_async_t *a)
{
    pt_queue_t *q = a->data;
    q->cb(q);
}

int pt_queue_start_loop(pt_queue_t *q, uv_loop_t *loop, pt_queue_cb cb, void *data)
{
    q->cb = cb;
    q->data = data;
    int rc = uv_async_init(loop, &q->async, pt__on_async);
    if (rc != 0) return rc;
    q->async.data = q;
    uv_mutex_lock(&q->lock);
    q->wake = PT__WAKE_ASYNC;
    if (q->head && !q->ended) pt__wake_locked(q); /* pushed before the loop was there */
    uv_mutex_unlock(&q->lock);
    return 0;
}

int pt_queue_start_fd(pt_queue_t *q)
{
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) return UV_EMFILE;
    uv_mutex_lock(&q->lock);
    q->fd = fd;
    q->wake = PT__WAKE_FD;
    if (q->head && !q->ended) pt__wake_locked(q);
    uv_mutex_unlock(&q->lock);
    return 0;
}

int pt_queue_fd(const pt_queue_t *q)
{
    return q->fd;
}

int pt_queue_push(pt_queue_t *q, pt_queue_node_t *node)
{
    node->next = NULL;
    uv_mutex_lock(&q->lock);
    int was_empty = q->head == NULL, ended = q->ended;
    if (q->tail)
        q->tail->next = node;
    else
        q->head = node;
    q->tail = node;
    if (was_empty && !ended) pt__wake_locked(q);
    uv_mutex_unlock(&q->lock);
    return ended;
}

pt_queue_node_t *pt_queue_take(pt_queue_t *q, int *ended)
{
    uv_mutex_lock(&q->lock);
    pt_queue_node_t *n = q->head;
    q->head = q->tail = NULL;
    if (ended) *ended = q->ended;
    uv_mutex_unlock(&q->lock);
    return n;
}

void pt_queue_end(pt_queue_t *q)
{
    uv_mutex_lock(&q->lock);
    int was = q->ended;
    q->ended = 1;
    if (!was && q->wake == PT__WAKE_FD) pt__write_fd(q->fd); /* the thread sees it */
    if (!was && q->wake == PT__WAKE_ASYNC && !uv_is_closing((uv_handle_t *)&q->async))
        uv_close((uv_handle_t *)&q->async, NULL);
    uv_mutex_unlock(&q->lock);
}

int pt_queue_ended(pt_queue_t *q)
{
    uv_mutex_lock(&q->lock);
    int ended = q->ended;
    uv_mutex_unlock(&q->lock);
    return ended;
}

void pt_queue_wake(pt_queue_t *q)
{
    uv_mutex_lock(&q->lock);
    if (q->wake == PT__WAKE_FD) pt__write_fd(q->fd);
    uv_mutex_unlock(&q->lock);
}

void pt_queue_destroy(pt_queue_t *q)
{
    uv_mutex_destroy(&q->lock);
    if (q->fd >= 0) close(q->fd);
    q->fd = -1;
}
