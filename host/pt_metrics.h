/* pt_metrics: per-worker counters with no locks, summed on scrape.
 *
 * Each worker writes only its own pt_metrics_t. Series (one per channel,
 * service and status) live in a fixed array that only grows: a new series is
 * filled in, then published by a release store of the count, so the scraper
 * on the main thread (acquire load) never sees a half-made one. Every counter
 * is a relaxed atomic, written by one thread and read by another. */
#ifndef PT_METRICS_H
#define PT_METRICS_H

#include "pt_util.h"

#include <stddef.h>
#include <stdint.h>

#define PT_METRICS_MAX_SERIES 1024
#define PT_METRICS_BUCKETS 14
#define PT_METRICS_NAME_MAX 128

typedef struct {
    char channel[PT_METRICS_NAME_MAX + 1];
    char service[PT_METRICS_NAME_MAX + 1];
    int status;
    uint64_t count;
    uint64_t sum_us;
    uint64_t buckets[PT_METRICS_BUCKETS]; /* not cumulative; summed on render */
} pt_metrics_series_t;

/* A table of series keyed by two names and a status. */
typedef struct {
    pt_metrics_series_t *series;
    size_t n_series; /* published with release */
    int32_t *index;  /* worker-private hash: slot -> series + 1 */
} pt_metrics_table_t;

typedef struct {
    pt_metrics_table_t requests; /* channel, service, status */
    pt_metrics_table_t targets;  /* upstream, target, 1 ok / 0 failed */
    uint64_t dropped;            /* observations past PT_METRICS_MAX_SERIES */
    /* gauges and counters of the worker */
    uint64_t in_flight;
    uint64_t connections_open;
    uint64_t connections_total;
    uint64_t websockets_open;
    uint64_t ws_slow_consumers; /* sockets closed because their output did not drain */
} pt_metrics_t;

/* Allocates the series table; returns 0 or -1. */
int pt_metrics_init(pt_metrics_t *m);
void pt_metrics_free(pt_metrics_t *m);

/* Counts one answered request (worker thread only). NULL names count as "". */
void pt_metrics_observe(pt_metrics_t *m, const char *channel, const char *service, int status,
                        uint64_t duration_us);

/* Counts one exchange with an upstream's target (worker thread only). */
void pt_metrics_target(pt_metrics_t *m, const char *upstream, const char *target, int ok,
                       uint64_t duration_us);

/* Adds delta to a gauge or counter of m (worker thread only). */
static inline void pt_metrics_add(uint64_t *counter, int64_t delta)
{
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + (uint64_t)delta,
                     __ATOMIC_RELAXED);
}

/* The figures of one AMQP connection (an outgoing.amqp pool, a
 * channels.amqp consumer, an amqp_bus channel). Its own threads bump them
 * with relaxed atomic adds; the scraper reads them. Entries live as long as
 * the process. */
typedef struct {
    char kind[16]; /* "outgoing", "channel", "bus" */
    char name[PT_METRICS_NAME_MAX + 1];
    uint64_t published;  /* messages handed to the broker */
    uint64_t confirmed;  /* outgoing: broker acks; bus: replies matched */
    uint64_t failed;     /* outgoing: nack, return, time-out, no connection; bus: the
                            same and 504s; channel: deliveries rejected or requeued */
    uint64_t delivered;  /* channel: deliveries received */
    uint64_t reconnects; /* connections made again after a loss */
    int64_t up;          /* connections up now */
} pt_metrics_amqp_t;

/* The entry of kind and name, made on first use (any thread; a mutex guards
 * the making). Never NULL: past 64 entries one unlisted spill entry counts. */
pt_metrics_amqp_t *pt_metrics_amqp(const char *kind, const char *name);

/* Every entry made so far (*n of them; each stays where it is). */
const pt_metrics_amqp_t *pt_metrics_amqp_all(size_t *n);

/* Adds delta to a counter shared by threads (NULL: nothing). */
static inline void pt_metrics_inc(uint64_t *counter, int64_t delta)
{
    if (counter) __atomic_fetch_add(counter, (uint64_t)delta, __ATOMIC_RELAXED);
}

/* Uncached password checks (pt_security): refused before any hashing, by
 * the bound that refused them, and run. Any thread adds with
 * pt_metrics_inc; the scrape reads them. */
enum {
    PT_METRICS_AUTH_ADDRESS = 0, /* too many checks under way for one client address */
    PT_METRICS_AUTH_USER,        /* ... for one user name */
    PT_METRICS_AUTH_TOTAL,       /* ... in the process */
    PT_METRICS_AUTH_FAILURES,    /* the address failed too often of late */
    PT_METRICS_AUTH_REASONS
};
extern uint64_t pt_metrics_auth_throttled[PT_METRICS_AUTH_REASONS];
extern uint64_t pt_metrics_auth_hash_checks;

/* Client connections refused because max_connections were open (any
 * worker thread adds with pt_metrics_inc; the scrape reads it). */
extern uint64_t pt_metrics_connections_refused;

/* TLS handshakes on the listeners (pt_transport_tls; any worker adds with
 * pt_metrics_inc): done by version (TLSv1.2, TLSv1.3), connections open now
 * by version, sessions resumed, and failures by reason. */
enum {
    PT_METRICS_TLS_PLAINTEXT = 0, /* plain HTTP sent to the TLS port */
    PT_METRICS_TLS_VERSION,       /* a version below server.tls.min_version */
    PT_METRICS_TLS_CIPHER,        /* no cipher suite in common */
    PT_METRICS_TLS_CERTIFICATE,   /* a client certificate that did not verify */
    PT_METRICS_TLS_ALERT,         /* the client refused (our certificate, say) */
    PT_METRICS_TLS_PROTOCOL,      /* not TLS, or broken TLS */
    PT_METRICS_TLS_EOF,           /* the client closed mid-handshake */
    PT_METRICS_TLS_TIMEOUT,       /* not done when closed (server.header_timeout, a drain) */
    PT_METRICS_TLS_REASONS
};
extern uint64_t pt_metrics_tls_handshakes[2];
extern uint64_t pt_metrics_tls_open[2];
extern uint64_t pt_metrics_tls_resumed;
extern uint64_t pt_metrics_tls_failures[PT_METRICS_TLS_REASONS];

/* TLS to https targets (pt_upstream; any worker adds with pt_metrics_inc):
 * handshakes done, of them resumed sessions, and failed (a refused
 * certificate, broken TLS, the target closing; the log says why). */
enum {
    PT_METRICS_UPTLS_DONE = 0,
    PT_METRICS_UPTLS_RESUMED,
    PT_METRICS_UPTLS_FAILED,
    PT_METRICS_UPTLS_N
};
extern uint64_t pt_metrics_upstream_tls[PT_METRICS_UPTLS_N];

/* Audit lines (pt_audit): written by the sink, dropped because the queue
 * was full (a slow sink), failed (the sink refused them). */
enum { PT_METRICS_AUDIT_WRITTEN = 0, PT_METRICS_AUDIT_DROPPED, PT_METRICS_AUDIT_FAILED,
       PT_METRICS_AUDIT_N };
extern uint64_t pt_metrics_audit[PT_METRICS_AUDIT_N];

/* Process-wide figures kept by the main thread. */
typedef struct {
    uint64_t reloads;
    uint64_t reload_failures;
    uint64_t generation;
    int workers;
} pt_metrics_process_t;

/* Appends the Prometheus text exposition of all workers' metrics and the
 * process figures to out. Safe on the main thread while workers run. */
void pt_metrics_render(pt_metrics_t *const *workers, size_t n, const pt_metrics_process_t *proc,
                       pt_buf_t *out);

#endif
