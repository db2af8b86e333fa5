/* pt_queue: "append under a lock, then wake the consumer", the one way
 * portico's threads hand work to each other (a worker's messages, the jobs
 * of an AMQP connection or bus thread, the answers an AMQP channel gets
 * back from the workers).
 *
 * Any thread pushes; one consumer takes the whole list at once, in push
 * order, and runs it outside the lock. The consumer is woken in one of two
 * ways, chosen when it starts: a uv_async_t on its libuv loop (a worker),
 * or an eventfd for a thread that polls it beside a socket (rabbitmq-c's
 * blocking threads have no loop). A push wakes the consumer only when it
 * makes the queue non-empty: the consumer takes everything at once, so one
 * wake-up per batch is enough.
 *
 * The ended rule: once pt_queue_end ran, a push only queues and wakes
 * nobody (a loop's uv_async_t may be closed by then). The thread that joins
 * the consumer takes what is left and runs or fails it, so nothing pushed
 * is ever lost, however late it comes.
 *
 * Nodes are intrusive: a pt_queue_node_t lives in the pushed struct, and
 * PT_QUEUE_ENTRY gets the struct back. */
#ifndef PT_QUEUE_H
#define PT_QUEUE_H

#include <stddef.h>
#include <uv.h>

typedef struct pt_queue_node_s {
    struct pt_queue_node_s *next;
} pt_queue_node_t;

/* The struct of type holding node in its field member. */
#define PT_QUEUE_ENTRY(node, type, member) ((type *)((char *)(node)-offsetof(type, member)))

typedef struct pt_queue_s pt_queue_t;

/* A loop consumer's callback: on the loop, after one or more pushes. It
 * normally calls pt_queue_take. */
typedef void (*pt_queue_cb)(pt_queue_t *q);

struct pt_queue_s {
    uv_mutex_t lock;
    pt_queue_node_t *head, *tail; /* under lock */
    int ended;                    /* under lock */
    int wake;                     /* under lock: 0 none yet, 1 async, 2 fd */
    uv_async_t async;             /* a loop consumer's */
    int fd;                       /* a thread consumer's eventfd; -1 otherwise */
    pt_queue_cb cb;
    void *data; /* the consumer's, for cb */
};

/* An empty queue with no consumer yet: pushes queue and wake nobody until
 * one of the two starts below. Returns 0 or a libuv error. */
int pt_queue_init(pt_queue_t *q);

/* The consumer is loop (call on its thread): cb(q) runs on it after pushes,
 * and once at once when something was queued before. Returns 0 or a libuv
 * error (the queue then stays without a consumer). */
int pt_queue_start_loop(pt_queue_t *q, uv_loop_t *loop, pt_queue_cb cb, void *data);

/* The consumer is a thread that polls pt_queue_fd(q) for input (and reads
 * it, 8 bytes, to reset it). Returns 0 or a libuv error. */
int pt_queue_start_fd(pt_queue_t *q);

/* The eventfd of a thread consumer (-1 for a loop consumer or none). */
int pt_queue_fd(const pt_queue_t *q);

/* Appends node (any thread). Wakes the consumer when the queue was empty
 * and has not ended. The node belongs to the consumer from here. Returns 0,
 * or 1 when the queue has ended (node is queued all the same, for the
 * joining thread's pt_queue_take). */
int pt_queue_push(pt_queue_t *q, pt_queue_node_t *node);

/* Takes every queued node, oldest first (linked through next, the last
 * one's NULL), leaving the queue empty. *ended (when not NULL) tells
 * whether pt_queue_end ran, read under the same lock: a consumer that sees
 * it set and then takes again has everything pushed before the end. Any
 * thread; normally the consumer's, or the joining one's once it ended. */
pt_queue_node_t *pt_queue_take(pt_queue_t *q, int *ended);

/* Ends the queue: from now on pushes only queue. A loop consumer calls it
 * on its loop (its uv_async_t is closed; the loop can end). For a thread
 * consumer anyone calls it to ask the thread to stop (it is woken once
 * more to see it). Calling it again does nothing. */
void pt_queue_end(pt_queue_t *q);

/* Whether pt_queue_end ran. Any thread. */
int pt_queue_ended(pt_queue_t *q);

/* Wakes a thread consumer for a reason of its own (a flag it reads). Any
 * thread; nothing for a loop consumer. */
void pt_queue_wake(pt_queue_t *q);

/* Frees the lock and the eventfd. The queue must be ended (or never
 * started) and the loop's handle closed; nodes still queued are the
 * caller's, who takes them first. */
void pt_queue_destroy(pt_queue_t *q);

#endif
