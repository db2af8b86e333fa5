/* pt_cache: the caches services share across the workers of a process
 * (self.cache, self.caches[name]; docs/services.md "Cache").
 *
 * A cache is a pt_cache_t behind a backend's ops table: the in-process
 * store of pt_cache_mem.h, or Redis (pt_cache_redis.h, `backend: redis`).
 * The ops of pt_cache_backend_ops_t are synchronous and thread-safe: they
 * return their result before they return. A backend that has to wait
 * (Redis) also has wait ops (pt_cache_wait_ops_t): each answers at once
 * (a near-cache hit, a refusal) or returns PT_CACHE_PENDING and completes
 * through its pt_cache_call_t later, on the caller's loop; the Lua binding
 * (pt_lua_cache) yields the request's coroutine meanwhile. Such a backend's
 * synchronous ops answer PT_CACHE_EWAIT.
 * pt_cache_set.h keeps the process's caches by name across reloads. */
#ifndef PT_CACHE_H
#define PT_CACHE_H

#include "pt_util.h"

#include <stddef.h>
#include <stdint.h>

#define PT_CACHE_NAME_MAX 64           /* [A-Za-z0-9_.-] */
#define PT_CACHE_KEY_MAX 1024          /* bytes of a key (1 and more) */
#define PT_CACHE_VALUE_MAX (64u << 20) /* bytes of one value, whatever the caps */
#define PT_CACHE_TTL_MAX_MS (365ull * 24 * 3600 * 1000)

/* What an entry costs besides its key and value bytes: the entry's header,
 * its bucket slot and the allocator's own header. Bytes caps count this. */
#define PT_CACHE_ENTRY_OVERHEAD 96u

/* An entry's accounted size: key + value + PT_CACHE_ENTRY_OVERHEAD. */
static inline uint64_t pt_cache_entry_bytes(size_t klen, size_t vlen)
{
    return (uint64_t)klen + vlen + PT_CACHE_ENTRY_OVERHEAD;
}

typedef struct {
    uint64_t max_entries; /* >= 1 */
    uint64_t max_bytes;   /* >= 1 KB; entries' accounted bytes */
    uint64_t ttl_ms;      /* a set without a ttl gets this; 0: none */
} pt_cache_limits_t;

/* The default cache's caps when the config names none. */
#define PT_CACHE_DEFAULT_LIMITS ((pt_cache_limits_t){10000, 64ull << 20, 0})

/* The kind of a stored value (the Lua side turns tables into JSON text). */
typedef enum {
    PT_CACHE_STRING = 0,
    PT_CACHE_NUMBER, /* 8 bytes: a double */
    PT_CACHE_BOOLEAN,
    PT_CACHE_JSON /* a table, encoded once by portico.cache */
} pt_cache_type_t;

typedef struct {
    pt_cache_type_t type;
    const char *data; /* STRING, JSON: the bytes; get: in the caller's buffer */
    size_t len;
    double number; /* NUMBER */
    int boolean;   /* BOOLEAN */
} pt_cache_value_t;

/* Results of the ops: 0 and positive are answers, negative are failures. */
enum {
    PT_CACHE_OK = 0,
    PT_CACHE_MISS = 1,    /* no such key (or it expired) */
    PT_CACHE_EXISTS = 2,  /* add: the key is there already */
    PT_CACHE_PENDING = 3, /* a wait op: the answer comes through call->done */
    PT_CACHE_ENOMEM = -1,
    PT_CACHE_ETOOLARGE = -2, /* the entry is larger than the cache's max_bytes */
    PT_CACHE_ENOTNUM = -3,   /* incr: the value is not a number */
    PT_CACHE_ERANGE = -4,    /* incr: the result is not a finite number */
    PT_CACHE_EINVAL = -5,    /* a key of 0 or more than PT_CACHE_KEY_MAX bytes, a bad ttl */
    PT_CACHE_EBACKEND = -6,  /* the backend's server failed (down, timed out): call->err says */
    PT_CACHE_EMAXVALUE = -7, /* the value is larger than the cache's max_value */
    PT_CACHE_EWAIT = -8      /* a waiting backend reached without a call (not from a request) */
};

/* Which store a cache uses (cache.caches.NAME.backend). */
typedef enum { PT_CACHE_BACKEND_MEMORY = 0, PT_CACHE_BACKEND_REDIS } pt_cache_backend_t;

/* One cache's figures, for /metrics. */
typedef struct {
    uint64_t hits, misses, sets, evictions, expired; /* counters */
    uint64_t failures;                               /* backend failures (Redis) */
    uint64_t entries, bytes;                         /* now */
    uint64_t max_entries, max_bytes;                 /* the caps */
} pt_cache_stats_t;

typedef struct pt_cache_s pt_cache_t;

/* One cache of a config: its name, backend and caps. */
typedef struct pt_cache_spec_s {
    const char *name;
    pt_cache_limits_t limits; /* memory: the caps; redis: only ttl_ms counts */
    pt_cache_backend_t backend;
    uint64_t max_value;     /* bytes of one value; 0: PT_CACHE_VALUE_MAX */
    pt_cache_limits_t near; /* redis: the near cache's caps; ttl_ms 0: none */
    const char *key_prefix; /* redis: cluster.key_prefix; the keys are
                               <key_prefix>cache:<name>:<key> */
    int line;
} pt_cache_spec_t;

/* ttl_ms in the ops: 0 is the cache's ttl (limits.ttl_ms), else at most
 * PT_CACHE_TTL_MAX_MS. keys: 1..PT_CACHE_KEY_MAX bytes, any bytes. */
typedef struct {
    /* The value of key, its bytes copied into buf (reset first): OK or MISS. */
    int (*get)(pt_cache_t *c, const char *key, size_t klen, pt_cache_value_t *out, pt_buf_t *buf);
    /* Stores v under key (add: only when key is absent, else EXISTS). */
    int (*set)(pt_cache_t *c, const char *key, size_t klen, const pt_cache_value_t *v,
               uint64_t ttl_ms, int add);
    /* Adds by to the number under key (an absent key counts as 0 and gets
     * ttl_ms; an existing one keeps its expiry); the sum in *out. */
    int (*incr)(pt_cache_t *c, const char *key, size_t klen, double by, uint64_t ttl_ms,
                double *out);
    /* Removes key: OK or MISS. */
    int (*del)(pt_cache_t *c, const char *key, size_t klen);
    /* Gives key a new expiry from now: OK or MISS. */
    int (*expire)(pt_cache_t *c, const char *key, size_t klen, uint64_t ttl_ms);
    /* New caps: entries past them are evicted now (LRU first). Returns 0. */
    int (*limits)(pt_cache_t *c, const pt_cache_limits_t *l);
    void (*stats)(pt_cache_t *c, pt_cache_stats_t *out);
    /* Optional: takes a reload's spec on instead of limits: 0, or -1 when
     * the cache must be made anew (its settings changed). */
    int (*apply)(pt_cache_t *c, const struct pt_cache_spec_s *spec);
    void (*free)(pt_cache_t *c);
} pt_cache_backend_ops_t;

/* One call of a wait op. The caller owns it and keeps it (and the cache:
 * its generation's set) alive until done. conn: what the backend reaches
 * its server through on the caller's loop (pt_redis_t of the worker). A
 * wait op returns its answer (OK, MISS, EXISTS, or < 0) at once with the
 * results in the call and done never called, or PT_CACHE_PENDING and then
 * calls done(call, rc) exactly once, later, on that loop; the cache is not
 * touched after done returns. */
typedef struct pt_cache_call_s pt_cache_call_t;
struct pt_cache_call_s {
    void *conn;
    void (*done)(pt_cache_call_t *call, int rc);
    void *ud;               /* the caller's */
    pt_cache_value_t value; /* get: the value; its bytes valid during done only, or in buf */
    pt_buf_t *buf;          /* get: where an answer given at once copies its bytes */
    double number;          /* incr: the sum */
    char err[160];          /* EBACKEND, EMAXVALUE: what happened */
};

/* The ops of a cache that may wait; the arguments as the synchronous ops'. */
typedef struct {
    int (*get)(pt_cache_t *c, const char *key, size_t klen, pt_cache_call_t *call);
    int (*set)(pt_cache_t *c, const char *key, size_t klen, const pt_cache_value_t *v,
               uint64_t ttl_ms, int add, pt_cache_call_t *call);
    int (*incr)(pt_cache_t *c, const char *key, size_t klen, double by, uint64_t ttl_ms,
                pt_cache_call_t *call);
    int (*del)(pt_cache_t *c, const char *key, size_t klen, pt_cache_call_t *call);
    int (*expire)(pt_cache_t *c, const char *key, size_t klen, uint64_t ttl_ms,
                  pt_cache_call_t *call);
} pt_cache_wait_ops_t;

/* The head of every backend's cache struct. */
struct pt_cache_s {
    const pt_cache_backend_ops_t *ops;
    const pt_cache_wait_ops_t *wait; /* NULL: ops answer at once */
    pt_cache_backend_t backend;
    int retired;        /* a reload replaced it under its name (another backend) */
    uint64_t max_value; /* bytes of one value (atomic: a reload sets it) */
    char name[PT_CACHE_NAME_MAX + 1];
    size_t name_len;
    int refs;         /* sets holding it; under the registry's lock */
    pt_cache_t *next; /* the registry */
};

/* Name syntax: 1..PT_CACHE_NAME_MAX of [A-Za-z0-9_.-]. */
int pt_cache_valid_name(const char *name, size_t len);

/* A message for an op's negative result. */
const char *pt_cache_strerror(int rc);

#endif
