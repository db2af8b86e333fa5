/* pt_server_console: what the admin console shows of the process that no
 * other part keeps (main thread only): each service file's service name,
 * content hash (SHA-256, 16 hex digits), load time and last refusal, and a
 * ring of the last PT_CONSOLE_RELOADS reloads (config and service files)
 * with accepted or refused and why. Renders GET /console/api/state. */
#ifndef PT_SERVER_CONSOLE_H
#define PT_SERVER_CONSOLE_H

#include "pt_config.h"
#include "pt_lua.h"
#include "pt_util.h"

#include <stddef.h>
#include <stdint.h>

#define PT_CONSOLE_RELOADS 32
#define PT_CONSOLE_MAX_FILES 4096

typedef struct {
    char *path;
    char *service; /* NULL: the file registers none (or never loaded) */
    char hash[17];
    int64_t loaded_ms; /* wall clock of the load of this content; 0: never loaded */
    char *error;       /* the last refusal of this file since its last load, or NULL */
    int64_t error_ms;
} pt_console_file_t;

typedef struct {
    int64_t time_ms;
    char source[16]; /* "admin", "signal", "file", "library" */
    char what[256];  /* the file, for file and library reloads */
    int accepted;
    uint64_t generation;
    char error[512];
} pt_console_reload_t;

typedef struct {
    pt_console_file_t *files;
    size_t n_files;
    pt_console_reload_t ring[PT_CONSOLE_RELOADS];
    uint64_t n_reloads; /* ever recorded; the ring holds the last ones */
} pt_console_t;

/* Rescans the service directories of cfg: files whose content changed get a
 * new hash and load time, vanished ones are dropped; the service names come
 * from vm (the reference VM). */
void pt_console_scan(pt_console_t *c, const pt_config_t *cfg, const pt_lua_t *vm);

/* A service file loaded (its text), or refused (why), or removed. */
void pt_console_file_loaded(pt_console_t *c, const char *path, const char *source, size_t len,
                            const pt_lua_t *vm);
void pt_console_file_failed(pt_console_t *c, const char *path, const char *why);
void pt_console_file_removed(pt_console_t *c, const char *path);

/* Records one reload attempt in the ring. what and err may be NULL. */
void pt_console_reload(pt_console_t *c, const char *source, const char *what, int accepted,
                       uint64_t generation, const char *err);

/* Appends the console's state JSON: generation, workers, listen addresses,
 * channels (type, path, methods, security, rate limit, services),
 * upstreams and their targets, AMQP connections configured, services,
 * reloads (newest first). */
void pt_console_state(const pt_console_t *c, const pt_config_t *cfg, uint64_t generation,
                      int workers, pt_buf_t *out);

void pt_console_free(pt_console_t *c);

#endif
