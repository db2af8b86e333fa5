/* pt_config: the YAML config, parsed once into an immutable snapshot.
 * Nothing in a snapshot changes after pt_config_load returns, so workers read
 * it without locks. Relative paths in the file are resolved against the
 * directory of the config file. */
#ifndef PT_CONFIG_H
#define PT_CONFIG_H

#include "pt_config_amqp_declare.h"
#include "pt_config_cache.h"
#include "pt_config_cluster.h"
#include "pt_config_obs.h"
#include "pt_config_upstream_tls.h"
#include "pt_config_admin.h"
#include "pt_config_scheduler.h"
#include "pt_config_tracing.h"
#include "pt_log.h"
#include "pt_ratelimit.h"

#include <stddef.h>
#include <stdint.h>

typedef enum {
    PT_CHANNEL_REST = 0,
    PT_CHANNEL_GATEWAY,
    PT_CHANNEL_AMQP,
    PT_CHANNEL_WEBSOCKET,
    PT_CHANNEL_HTTP_PROXY, /* url_path is a prefix: /<prefix>/<service>/rest -> a target */
    PT_CHANNEL_AMQP_BUS,   /* url_path is a prefix: /<prefix>/<exchange>/a/b -> key a.b */
    PT_CHANNEL_OPENAPI     /* GET url_path: the OpenAPI document (pt_openapi.h) */
} pt_channel_type_t;

/* Where an AMQP connection goes, parsed from an amqp:// or amqps:// URL
 * and its tls options. */
typedef struct {
    char *host;
    int port;
    char *user;
    char *password; /* never logged */
    char *vhost;    /* "/" when the URL names none */
    char *display;  /* amqp[s]://user@host:port/vhost, for logs */
    int heartbeat;  /* seconds; 0 = off */
    /* amqps:// (the fields below are 0 and NULL for amqp://) */
    int tls;
    int tls_verify;    /* check the broker's chain and host name (default on) */
    char *tls_ca_file; /* trusted besides the system store; NULL: the store only */
    char *tls_cert;    /* client certificate chain (PEM) with tls_key, or NULL */
    char *tls_key;
    pt_amqp_declare_t declare; /* declared on every connect (pt_config_amqp_declare.h) */
} pt_amqp_endpoint_t;

/* One target of an upstream: http://host:port or https://host:port (one
 * scheme per upstream). */
typedef struct {
    char *host; /* a name (resolved on the upstream's resolve_ttl) or an IP literal */
    int port;
    char *display; /* "host:port", for logs, metrics and the Host header */
} pt_target_cfg_t;

/* An upstream: a proxied service (channels.http_proxy[].services) or an
 * outgoing HTTP connection (outgoing.http). */
typedef struct {
    char *name;
    pt_target_cfg_t *targets;
    size_t n_targets;
    uint64_t connect_timeout_ms; /* connecting to a target */
    uint64_t read_timeout_ms;    /* between two reads of the answer: 504 before its head */
    uint64_t fail_timeout_ms;    /* a failed target sits out this long */
    int max_fails;               /* failures in a row that take a target out */
    int keepalive;               /* idle connections kept per target and worker */
    uint64_t resolve_ttl_ms;     /* how long a name's addresses are used */
    pt_upstream_tls_t *tls;      /* https:// targets: how to speak TLS to them; NULL: http:// */
    int line;
} pt_upstream_cfg_t;

typedef struct {
    char *name;
    pt_channel_type_t type;
    char *url_path;      /* exact path or template with {name} segments */
    uint64_t methods;    /* bit (1 << llhttp method) per allowed method; HEAD follows GET */
    char *service;       /* REST: the service it runs */
    char **service_list; /* gateway: the allowlist, matched exactly */
    size_t n_service_list;
    char *data_format; /* "json" */
    int line;          /* where it was defined, for messages */
    /* WebSocket channels: service is the default, service_list what a
     * {"service": ...} message may call besides it */
    uint64_t ws_ping_interval_ms;
    int ws_missed_pings;         /* pings without a pong before the socket is closed */
    uint64_t ws_max_message;     /* bytes; a larger message closes with 1009 */
    uint64_t ws_idle_timeout_ms; /* 0: none (pings keep a live peer) */
    char *ws_token_param;        /* query parameter that may carry the credential */
    uint64_t ws_max_output;      /* bytes queued for a socket before its frames wait */
    uint64_t ws_send_timeout_ms; /* output over ws_max_output this long: close 1008 */
    /* security: NAME; NULL: open (pt_security_check still refuses a trusted
     * gateway's username header). Points into the snapshot's security. */
    const struct pt_security_def_s *security;
    pt_ratelimit_cfg_t rate_limit; /* rate_limit: {rate, burst, per}; rate 0: none */
    /* http_proxy: the services it reaches, each an upstream */
    pt_upstream_cfg_t *upstreams;
    size_t n_upstreams;
    /* amqp_bus: service_list (optional) limits the exchanges */
    pt_amqp_endpoint_t bus_ep;
    uint64_t bus_reply_timeout_ms; /* no reply in this long: 504 */
} pt_channel_t;

/* Copies src into dst (every string duplicated). Returns 0, or -1 when out of
 * memory (dst then holds what was copied: free it). */
int pt_amqp_endpoint_copy(pt_amqp_endpoint_t *dst, const pt_amqp_endpoint_t *src);

/* Frees the strings of ep (not ep itself). */
void pt_amqp_endpoint_free(pt_amqp_endpoint_t *ep);

/* Non-zero when a and b name the same broker the same way (URL, heartbeat,
 * TLS options): a reload that changes any of it needs a restart. */
int pt_amqp_endpoint_same(const pt_amqp_endpoint_t *a, const pt_amqp_endpoint_t *b);

/* outgoing.amqp[]: a broker connection that services publish through. */
typedef struct {
    char *name;
    pt_amqp_endpoint_t ep;
    int confirms;        /* wait for the broker's ack (default on) */
    int pool_size;       /* connections, each with its own thread */
    uint64_t timeout_ms; /* a send fails after this long without a confirm */
    int line;
} pt_amqp_out_cfg_t;

/* channels.amqp[]: a queue whose deliveries run a service. */
typedef struct {
    pt_channel_t channel; /* name, service, data_format; type PT_CHANNEL_AMQP */
    pt_amqp_endpoint_t ep;
    char *queue;
    int prefetch;    /* unacknowledged deliveries the broker may send */
    int concurrency; /* deliveries being handled at once (<= prefetch) */
    int requeue;     /* on a failed delivery: requeue instead of dead-lettering */
} pt_amqp_channel_cfg_t;

typedef struct {
    char *path; /* the config file */
    char *dir;  /* its directory */
    char *listen_host;
    int listen_port;
    char *tls_listen_host; /* server.tls.listen; NULL: no TLS listener */
    int tls_listen_port;
    struct pt_tls_ctx_s *tls; /* server.tls's certificates (a reference); NULL: none */
    /* server.tls.handshake_timeout (default: header_timeout's value) */
    uint64_t tls_handshake_timeout_ms;
    int workers;
    uint64_t max_connections;
    uint64_t max_header_bytes;
    uint64_t max_body_bytes;
    uint64_t header_timeout_ms;
    uint64_t body_timeout_ms;
    uint64_t body_deadline_ms; /* the whole request body within this; 0: none */
    uint64_t idle_timeout_ms;
    uint64_t drain_timeout_ms;
    pt_log_level_t log_level;
    char *access_log; /* "stdout", "off" or an absolute path */
    char *admin_host; /* NULL: no admin listener */
    int admin_port;
    pt_config_admin_t admin; /* admin.users, admin.open_probes (pt_config_admin.h) */
    char *lua_path;
    int lua_gc_pause;                /* LuaJIT's GC pause, per cent: a cycle starts when the heap
                                        reaches this share of what the last one left live */
    uint64_t lua_load_timeout_ms;    /* the longest a service file may run while it loads */
    uint64_t lua_request_timeout_ms; /* a request's run between waits; longer: stopped, 500
                                        (0: never) */
    char **service_dirs;
    size_t n_service_dirs;
    char **lib_dirs; /* lua.lib_dirs, absolute: shared modules of services (package.path);
                        default: a lib/ beside each service directory */
    size_t n_lib_dirs;
    uint64_t watch_interval_ms; /* how often the service dirs are scanned */
    pt_channel_t *channels;
    size_t n_channels;
    pt_amqp_out_cfg_t *amqp_out; /* outgoing.amqp */
    size_t n_amqp_out;
    pt_amqp_channel_cfg_t *amqp_channels; /* channels.amqp (not routed over HTTP) */
    size_t n_amqp_channels;
    pt_upstream_cfg_t *http_out; /* outgoing.http */
    size_t n_http_out;
    struct pt_security_s *security; /* the compiled security: section (never NULL) */
    pt_config_obs_t obs;            /* trusted proxies, query redaction, audit (pt_config_obs.h) */
    pt_config_caches_t caches;      /* cache: (pt_config_cache.h); [0] is the default */
    pt_scheduler_cfg_t scheduler;   /* scheduler: (pt_config_scheduler.h) */
    pt_trace_cfg_t tracing;         /* tracing: (pt_config_tracing.h); read at start only */
    pt_cluster_cfg_t cluster;       /* cluster: (pt_config_cluster.h); read at start only */
    char checksum[65]; /* SHA-256 of the parsed file but its listen addresses and node name
                          (pt_config_checksum): equal on the nodes of one cluster; "" without
                          a cluster: section */
} pt_config_t;

/* Reads and checks path. On success returns 0 and a snapshot in *out that the
 * caller frees with pt_config_free. On failure returns -1 and writes
 * "file:line: what is wrong" into err. */
int pt_config_load(const char *path, pt_config_t **out, char *err, size_t errlen);

/* Only admin.listen of path (`portico reload` asks the running server, which
 * checks the whole file itself, counts and logs the outcome). Returns 0 with
 * *host (malloc) and *port, or -1 with "file:line: message" in err (no
 * admin.listen: err says so). */
int pt_config_admin_address(const char *path, char **host, int *port, char *err, size_t errlen);

/* A config file is refused past this size (it is a few kilobytes). */
#define PT_CONFIG_MAX_BYTES (4 * 1024 * 1024)

/* pt_config_load of text[0..len) as if it were the file path (which names it
 * in messages and anchors its relative paths; it need not exist). For the
 * fuzzer and tests. */
int pt_config_load_text(const char *path, const char *text, size_t len, pt_config_t **out,
                        char *err, size_t errlen);

/* Frees a snapshot and everything it owns. NULL is fine. */
void pt_config_free(pt_config_t *cfg);

/* Maps a method name ("GET") to its llhttp method number, or -1. */
int pt_config_method(const char *name);

#endif
