/* pt_queue: pushes from many threads reach one consumer in each thread's
 * order, woken by a uv_async_t on its loop or by an eventfd; once the queue
 * has ended a push only queues, and the joining thread takes what is left. */
#include "pt_queue.h"
#include "pt_test.h"

#include <poll.h>
#include <stdint.h>
#include <unistd.h>

#define PRODUCERS 4
#define PER_PRODUCER 5000

typedef struct {
    pt_queue_node_t node;
    int producer, seq;
} item_t;

static item_t items[PRODUCERS][PER_PRODUCER];

typedef struct {
    pt_queue_t *q;
    int producer;
} producer_arg_t;

static void produce(void *arg)
{
    producer_arg_t *p = arg;
    for (int i = 0; i < PER_PRODUCER; i++) {
        item_t *it = &items[p->producer][i];
        it->producer = p->producer;
        it->seq = i;
        pt_queue_push(p->q, &it->node);
    }
}

/* What a consumer saw: per producer, the next seq it expects. */
typedef struct {
    int next[PRODUCERS];
    int total, out_of_order, batches;
} tally_t;

static void count(tally_t *t, pt_queue_node_t *n)
{
    if (n) t->batches++;
    for (; n; n = n->next) {
        item_t *it = PT_QUEUE_ENTRY(n, item_t, node);
        if (it->seq != t->next[it->producer]) t->out_of_order++;
        t->next[it->producer] = it->seq + 1;
        t->total++;
    }
}

static void start_producers(pt_queue_t *q, uv_thread_t *th, producer_arg_t *args)
{
    for (int i = 0; i < PRODUCERS; i++) {
        args[i].q = q;
        args[i].producer = i;
        uv_thread_create(&th[i], produce, &args[i]);
    }
}

PT_CASE(take_returns_everything_oldest_first)
{
    pt_queue_t q;
    item_t a, b, c;
    int ended = -1;
    PT_CHECK_INT(pt_queue_init(&q), 0);
    PT_CHECK(pt_queue_take(&q, &ended) == NULL);
    PT_CHECK_INT(ended, 0);
    PT_CHECK_INT(pt_queue_push(&q, &a.node), 0);
    PT_CHECK_INT(pt_queue_push(&q, &b.node), 0);
    PT_CHECK_INT(pt_queue_push(&q, &c.node), 0);
    pt_queue_node_t *n = pt_queue_take(&q, NULL);
    PT_CHECK(n == &a.node && n->next == &b.node && n->next->next == &c.node);
    PT_CHECK(c.node.next == NULL);
    PT_CHECK(pt_queue_take(&q, NULL) == NULL);
    /* the queue is usable again after a take */
    pt_queue_push(&q, &b.node);
    PT_CHECK(pt_queue_take(&q, NULL) == &b.node);
    pt_queue_destroy(&q);
}

/* ---- a loop consumer ---- */

static tally_t loop_tally;

static void on_loop_queue(pt_queue_t *q)
{
    count(&loop_tally, pt_queue_take(q, NULL));
    if (loop_tally.total == PRODUCERS * PER_PRODUCER + 1) pt_queue_end(q); /* the loop can end */
}

PT_CASE(a_loop_consumer_gets_every_push_in_order)
{
    uv_loop_t loop;
    pt_queue_t q;
    static item_t early;
    uv_thread_t th[PRODUCERS];
    producer_arg_t args[PRODUCERS];
    memset(&loop_tally, 0, sizeof loop_tally);
    uv_loop_init(&loop);
    pt_queue_init(&q);
    /* pushed before the consumer is there: delivered once it starts */
    early.producer = 0;
    early.seq = -1;
    loop_tally.next[0] = -1;
    pt_queue_push(&q, &early.node);
    PT_CHECK_INT(pt_queue_start_loop(&q, &loop, on_loop_queue, NULL), 0);
    PT_CHECK_INT(pt_queue_fd(&q), -1);
    start_producers(&q, th, args);
    uv_run(&loop, UV_RUN_DEFAULT); /* ends once the queue has ended */
    for (int i = 0; i < PRODUCERS; i++)
        uv_thread_join(&th[i]);
    PT_CHECK_INT(loop_tally.total, PRODUCERS * PER_PRODUCER + 1);
    PT_CHECK_INT(loop_tally.out_of_order, 0);
    PT_CHECK(loop_tally.batches >= 1);
    PT_CHECK(pt_queue_ended(&q));
    PT_CHECK_INT(uv_loop_close(&loop), 0); /* the uv_async_t is closed */
    pt_queue_destroy(&q);
}

PT_CASE(after_the_end_a_push_only_queues_for_the_joining_thread)
{
    uv_loop_t loop;
    pt_queue_t q;
    item_t a, b;
    int ended = 0;
    memset(&loop_tally, 0, sizeof loop_tally);
    uv_loop_init(&loop);
    pt_queue_init(&q);
    pt_queue_start_loop(&q, &loop, on_loop_queue, NULL);
    pt_queue_end(&q);
    pt_queue_end(&q); /* twice is once */
    PT_CHECK_INT(pt_queue_push(&q, &a.node), 1);
    PT_CHECK_INT(pt_queue_push(&q, &b.node), 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    PT_CHECK_INT(loop_tally.total, 0); /* nobody was woken */
    PT_CHECK_INT(uv_loop_close(&loop), 0);
    pt_queue_node_t *n = pt_queue_take(&q, &ended);
    PT_CHECK(n == &a.node && n->next == &b.node);
    PT_CHECK_INT(ended, 1);
    pt_queue_destroy(&q);
}

/* ---- a thread consumer on the eventfd ---- */

static tally_t fd_tally;

static void consume_fd(void *arg)
{
    pt_queue_t *q = arg;
    for (;;) {
        struct pollfd p = {.fd = pt_queue_fd(q), .events = POLLIN};
        poll(&p, 1, 1000);
        uint64_t v;
        ssize_t r = read(pt_queue_fd(q), &v, sizeof v); /* resets it; nothing after a time-out */
        (void)r;
        int ended;
        count(&fd_tally, pt_queue_take(q, &ended));
        if (ended) return; /* all pushed before the end is counted */
    }
}

PT_CASE(a_thread_consumer_is_woken_by_the_eventfd_and_stopped_by_the_end)
{
    pt_queue_t q;
    uv_thread_t consumer, th[PRODUCERS];
    producer_arg_t args[PRODUCERS];
    memset(&fd_tally, 0, sizeof fd_tally);
    pt_queue_init(&q);
    PT_CHECK_INT(pt_queue_start_fd(&q), 0);
    PT_CHECK(pt_queue_fd(&q) >= 0);
    uv_thread_create(&consumer, consume_fd, &q);
    start_producers(&q, th, args);
    for (int i = 0; i < PRODUCERS; i++)
        uv_thread_join(&th[i]);
    pt_queue_end(&q); /* wakes the consumer, which takes the rest and returns */
    uv_thread_join(&consumer);
    PT_CHECK_INT(fd_tally.total, PRODUCERS * PER_PRODUCER);
    PT_CHECK_INT(fd_tally.out_of_order, 0);
    /* late: the joining thread takes it */
    item_t late;
    PT_CHECK_INT(pt_queue_push(&q, &late.node), 1);
    PT_CHECK(pt_queue_take(&q, NULL) == &late.node);
    pt_queue_destroy(&q);
}

PT_CASE(a_push_wakes_only_an_empty_queue)
{
    pt_queue_t q;
    item_t a, b, c;
    uint64_t v = 0;
    pt_queue_init(&q);
    pt_queue_start_fd(&q);
    int fd = pt_queue_fd(&q);
    PT_CHECK(read(fd, &v, sizeof v) < 0); /* nothing yet */
    pt_queue_push(&q, &a.node);
    pt_queue_push(&q, &b.node); /* a wake-up is pending already */
    PT_CHECK_INT(read(fd, &v, sizeof v), 8);
    PT_CHECK_INT(v, 1);
    pt_queue_take(&q, NULL);
    pt_queue_push(&q, &c.node);
    PT_CHECK_INT(read(fd, &v, sizeof v), 8);
    PT_CHECK_INT(v, 1);
    /* a wake-up of the consumer's own (a flag it reads) */
    pt_queue_wake(&q);
    PT_CHECK_INT(read(fd, &v, sizeof v), 8);
    PT_CHECK_INT(v, 1);
    /* the end wakes it once; later pushes do not */
    pt_queue_take(&q, NULL);
    pt_queue_end(&q);
    PT_CHECK_INT(read(fd, &v, sizeof v), 8);
    pt_queue_push(&q, &a.node);
    PT_CHECK(read(fd, &v, sizeof v) < 0);
    pt_queue_take(&q, NULL);
    pt_queue_destroy(&q);
}

int main(void)
{
    PT_RUN(take_returns_everything_oldest_first);
    PT_RUN(a_loop_consumer_gets_every_push_in_order);
    PT_RUN(after_the_end_a_push_only_queues_for_the_joining_thread);
    PT_RUN(a_thread_consumer_is_woken_by_the_eventfd_and_stopped_by_the_end);
    PT_RUN(a_push_wakes_only_an_empty_queue);
    return PT_TEST_DONE();
}
