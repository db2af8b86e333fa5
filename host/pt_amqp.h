/* pt_amqp: outgoing AMQP connections (outgoing.amqp) and the helpers the
 * AMQP consumers share with them.
 *
 * rabbitmq-c is blocking, so no worker ever calls it. Each connection of a
 * pool has a thread of its own with a job queue: a worker submits a job (a
 * message and a callback) and goes on serving; the thread publishes it,
 * waits for the broker's confirm (Basic.Ack/Nack, a Basic.Return for a
 * mandatory message that no queue took, a channel error, a time-out or a
 * lost connection), and calls the job's callback, which hands the result
 * back to the worker. Whether a pool has a live connection is an atomic
 * flag, so a send while the broker is down fails at once, without a thread
 * hop. Lost connections are re-established with backoff (0.1 s doubling up
 * to 5 s); a message is reported sent only after the broker confirmed it. */
#ifndef PT_AMQP_H
#define PT_AMQP_H

#include "pt_config.h"
#include "pt_metrics.h"
#include "pt_queue.h"

#include <amqp.h>
#include <stdint.h>

#define PT_AMQP_ERRLEN 512 /* room for an error message of a job */

typedef struct pt_amqp_s pt_amqp_t;         /* every outgoing connection of the process */
typedef struct pt_amqp_out_s pt_amqp_out_t; /* one outgoing.amqp entry: a pool */
typedef struct pt_amqp_job_s pt_amqp_job_t;

/* Called once per submitted job, on the connection's thread, with the
 * result in job->failed / job->error. The job then belongs to the callback,
 * which frees it with pt_amqp_job_free (possibly later, on another thread). */
typedef void (*pt_amqp_job_cb)(pt_amqp_job_t *job);

struct pt_amqp_job_s {
    /* Filled by the submitter. Every byte lives in pool (pt_amqp_job_bytes),
     * so the job owns all it needs and nothing points into Lua. */
    amqp_pool_t pool;
    amqp_bytes_t exchange;
    amqp_bytes_t routing_key;
    amqp_bytes_t body;
    amqp_basic_properties_t props;
    pt_amqp_job_cb done;
    void *ud;  /* the submitter's */
    void *ud2; /* the submitter's */
    /* The result, set before done is called. */
    int failed;
    char error[PT_AMQP_ERRLEN];
    /* Private to pt_amqp. */
    uint64_t deadline_ms;
    uint64_t tag;
    int returned;
    pt_metrics_amqp_t *mx; /* the pool's figures */
    pt_queue_node_t node;  /* in its connection's queue */
    pt_amqp_job_t *next;   /* taken from it, or waiting for a confirm */
};

/* A new, empty job (props._flags 0), or NULL when out of memory. */
pt_amqp_job_t *pt_amqp_job_new(void);

/* Copies n bytes into the job's pool. Returns the copy (len 0 for n 0), or a
 * value with bytes NULL and len n when out of memory. */
amqp_bytes_t pt_amqp_job_bytes(pt_amqp_job_t *job, const void *p, size_t n);

/* Frees a job and everything in its pool. NULL is fine. */
void pt_amqp_job_free(pt_amqp_job_t *job);

/* Starts a thread per pooled connection of cfg->amqp_out (config strings are
 * copied) and makes the pools findable with pt_amqp_find. A broker that is
 * down is not an error: the threads keep retrying. Returns 0, or -1 when
 * out of memory or a thread cannot start (nothing is left running). With no
 * outgoing.amqp entries, *out is NULL and 0 is returned. */
int pt_amqp_start(const pt_config_t *cfg, pt_amqp_t **out);

/* Stops every connection thread and waits for them. Jobs not finished yet
 * fail ("shutting down") through their callbacks before this returns. Call
 * after the workers ended. Frees a; NULL is fine. */
void pt_amqp_stop(pt_amqp_t *a);

/* The pool named name, or NULL. Any thread; valid between pt_amqp_start and
 * pt_amqp_stop. */
pt_amqp_out_t *pt_amqp_find(const char *name);

/* Non-zero when at least one connection of the pool is up. Never blocks. */
int pt_amqp_available(pt_amqp_out_t *oc);

/* The pool's config name. */
const char *pt_amqp_name(const pt_amqp_out_t *oc);

/* Queues a job on a live connection of the pool (round-robin), or on any of
 * them when none is up (it then fails promptly). job->done is always called
 * exactly once, on a connection thread. Never blocks on the broker. */
void pt_amqp_submit(pt_amqp_out_t *oc, pt_amqp_job_t *job);

/* ---- shared with pt_amqp_channel and pt_bus ---- */

/* Milliseconds of a monotonic clock. */
uint64_t pt_amqp_now_ms(void);

/* Opens a TCP connection to ep (TLS for amqps://, pt_amqp_socket_open),
 * logs in (with ep->heartbeat) and opens channel 1. Every step is bounded by
 * timeout_ms. Returns the connection, or NULL with the reason in err. */
amqp_connection_state_t pt_amqp_connect(const pt_amqp_endpoint_t *ep, uint64_t timeout_ms,
                                        char *err, size_t errlen);

/* Closes a connection: politely (Connection.Close, bounded by the rpc
 * time-out) when polite, else just the socket. Frees it. NULL is fine. */
void pt_amqp_disconnect(amqp_connection_state_t conn, int polite);

/* Writes why an RPC failed ("404 NOT_FOUND - no queue 'x'", a library error)
 * into err. */
void pt_amqp_reply_error(amqp_rpc_reply_t r, char *err, size_t errlen);

/* Answers a broker's Channel.Close (CloseOk) or Connection.Close (CloseOk)
 * that arrived as method m, writing its reason into err. */
void pt_amqp_answer_close(amqp_connection_state_t conn, amqp_channel_t ch, const amqp_method_t *m,
                          char *err, size_t errlen);

/* Waits until conn has input or efd (a pt_queue_fd) is written or
 * timeout_ms passed (timeout_ms 0: just looks). Returns a bit set: 1 = conn
 * readable or data already buffered, 2 = efd was written (and is now
 * reset). */
int pt_amqp_wait(amqp_connection_state_t conn, int efd, int timeout_ms);

/* The exchanges a connection has found to exist: each is checked once per
 * connection, and forgotten when the connection goes. */
typedef struct {
    char **names;
    size_t n;
} pt_amqp_exchanges_t;

/* Is exchange ex there? A passive declare on ch, a channel of its own:
 * publishing to a missing exchange would close the publishing channel, and
 * with it whatever is still to come on it. 1 yes (remembered in known), 0 no
 * (job_err says why; ch is open again), -1 the connection failed (err says
 * why). */
int pt_amqp_exchange_check(amqp_connection_state_t conn, amqp_channel_t ch,
                           pt_amqp_exchanges_t *known, amqp_bytes_t ex, char *job_err,
                           size_t job_errlen, char *err, size_t errlen);

/* Forgets every exchange in known (the connection is gone). */
void pt_amqp_exchanges_forget(pt_amqp_exchanges_t *known);

/* How long a connection's thread may wait in pt_amqp_wait: 1 s at most, half
 * the heartbeat interval, and not past deadline_ms (0: no deadline). */
int pt_amqp_wait_ms(amqp_connection_state_t conn, uint64_t deadline_ms);

/* Handles a method frame that arrived on its own; non-zero: the connection
 * failed, why in err. */
/* Reads the header frame of the message whose Basic.Deliver or
 * Basic.Return on channel ch was just read: msg gets a pool of its own
 * (init_amqp_pool) holding a copy of the properties, and an empty body;
 * *body_size is what the header announces. The body frames are still to be
 * read, with pt_amqp_read_body. Returns 0, or -1 with err (the connection
 * cannot go on; msg needs no freeing then). */
int pt_amqp_read_header(amqp_connection_state_t conn, amqp_channel_t ch, amqp_message_t *msg,
                        uint64_t *body_size, char *err, size_t errlen);

/* Reads the body_size bytes of body frames that follow the header: into
 * msg->body (malloc'd; amqp_destroy_message frees it) when keep, or frame by
 * frame into nothing, so a body too large to hold is never buffered whole
 * (rabbitmq-c's amqp_read_message would allocate and keep all of it). The
 * channel's frame pool is recycled after each frame. Returns 0, or -1 with
 * err (connection failed, out of memory, a frame that is no body frame). */
int pt_amqp_read_body(amqp_connection_state_t conn, amqp_channel_t ch, amqp_message_t *msg,
                      uint64_t body_size, int keep, char *err, size_t errlen);

typedef int (*pt_amqp_method_cb)(void *ud, amqp_frame_t *f, char *err, size_t errlen);

/* Reads every frame conn has, without waiting, and hands each method frame
 * to on_method. Returns 0, or -1 with why in err. */
int pt_amqp_read_frames(amqp_connection_state_t conn, pt_amqp_method_cb on_method, void *ud,
                        char *err, size_t errlen);

/* The string properties of a message under their Lua names: what
 * self.request.amqp shows and what out.amqp:send takes in props (all but the
 * ones marked not publishable, which the broker sets). */
typedef struct {
    const char *key;
    size_t off; /* of the amqp_bytes_t in amqp_basic_properties_t */
    amqp_flags_t flag;
    int publishable;
} pt_amqp_string_prop_t;

extern const pt_amqp_string_prop_t pt_amqp_string_props[];
extern const size_t pt_amqp_n_string_props;

#endif
