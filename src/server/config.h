/* The node's configuration: every key with its default, read from a
 * `key = value` file and overridden by command-line flags. It validates
 * values but starts nothing.
 * SPDX-License-Identifier: MIT */
#ifndef FB_CONFIG_H
#define FB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char listen_host[64];     /* listen = 127.0.0.1:8080 */
    int listen_port;
    char data_dir[512];       /* data_dir = ./firebreak-data */
    char store[16];           /* store = sqlite | postgres */
    char pg_conninfo[1024];   /* postgres: write connection + change feed (libpq) */
    char pg_read_conninfo[1024]; /* postgres: io loops' reads; "": pg_conninfo */
    int io_threads;           /* io_threads = 0 (one per core) */
    bool registration_open;   /* registration = open | closed */
    int64_t max_frame_bytes;  /* 65536 */
    int64_t max_text_bytes;   /* 8192 */
    int64_t max_output_bytes; /* 4194304 */
    int64_t max_room_members; /* 10000 */
    int64_t history_page_max; /* 200 */
    int64_t token_ttl_days;   /* 90 */
    int64_t handshake_timeout_ms; /* 10000 */
    int64_t writer_batch_max; /* 4096 */
    int64_t sqlite_cache_mib; /* 64 */
    int64_t store_hold_ms;    /* 20000 */
    int64_t argon2_opslimit;  /* 2 (libsodium interactive) */
    int64_t argon2_memlimit_kib; /* 65536 */
    int log_level;            /* log_level = info */
} fb_config_t;

void fb_config_defaults(fb_config_t *c);
/* Reads a file of `key = value` lines (# comments). Unknown keys and bad
 * values are errors: returns FB_EINVAL with a message in err. */
int fb_config_load(fb_config_t *c, const char *path, char *err, size_t errlen);
/* Sets one key from a string (shared by the file and flags). */
int fb_config_set(fb_config_t *c, const char *key, const char *value, char *err, size_t errlen);
/* What no single key can check: the keys a chosen store needs. Call once
 * every source is applied; FB_EINVAL with a message in err. */
int fb_config_check(const fb_config_t *c, char *err, size_t errlen);
/* Writes every key with its current value, documented, as a config file.
 * A password inside a connection string is printed as "redacted". */
void fb_config_print(const fb_config_t *c, void *file /* FILE* */);
/* A connection string with its password replaced by "redacted", for logs
 * and printing; the string itself when it holds no password. */
void fb_config_redact_conninfo(const char *conninfo, char *out, size_t n);
/* Path of the SQLite database inside data_dir. */
void fb_config_db_path(const fb_config_t *c, char *out, size_t n);

#endif
