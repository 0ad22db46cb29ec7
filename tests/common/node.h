/* Test harness: runs a real `firebreak serve` on 127.0.0.1 with its data in
 * a fresh temporary folder, and stops, kills or restarts it by its PID.
 * With FIREBREAK_TEST_STORE=postgres the node's store is a fresh database
 * of the test run's PostgreSQL server (tests/common/pg.h) instead of a
 * SQLite file; the helpers below that look into the store work for both.
 * Only for tests; never listens beyond loopback.
 * SPDX-License-Identifier: MIT */
#ifndef FB_TEST_NODE_H
#define FB_TEST_NODE_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct {
    pid_t pid;
    char dir[256];  /* data dir (removed by fb_test_node_cleanup) */
    char addr[64];  /* "127.0.0.1:PORT" once started */
    char log[320];  /* the node's stderr */
    const char *extra[16]; /* more `serve` arguments, NULL-terminated */
    char conf[320]; /* its config file (store keys), for `firebreak admin --config` too */
    char pg[512];   /* postgres: the node's database, made at first start */
} fb_test_node_t;

/* Starts a node on a free loopback port (fast argon2 settings for tests). */
int fb_test_node_start(fb_test_node_t *n);
/* Starts it again on the same data dir and port. */
int fb_test_node_restart(fb_test_node_t *n);
/* Sends sig (SIGTERM: orderly, SIGKILL: a crash) and reaps the process;
 * returns its exit status (or 128 + signal). */
int fb_test_node_stop(fb_test_node_t *n, int sig);
/* Stops it if running and removes its folder. */
void fb_test_node_cleanup(fb_test_node_t *n);
/* Runs one SQL statement on the node's store (no rows; integer values
 * bound as $1, $2, ...): rows changed, or -1 with the error printed. */
int fb_test_node_sql(const fb_test_node_t *n, const char *sql, const int64_t *params, int nparams);
/* First column of the first row of a query, as text into out: 0, or -1. */
int fb_test_node_query(const fb_test_node_t *n, const char *sql, char *out, size_t outlen);
/* Whether the bytes of the node's store on disk contain needle: SQLite's
 * database and WAL; PostgreSQL's WAL (every committed write passes through
 * it) in $FIREBREAK_TEST_PG_DIR. 1 found, 0 not, -1 nothing to search. */
int fb_test_node_store_contains(const fb_test_node_t *n, const char *needle);
/* Whether a file contains needle (false when it cannot be read). */
bool fb_test_file_contains(const char *path, const char *needle);
/* Path of the firebreak binary under test ($FIREBREAK_BIN or build/firebreak). */
const char *fb_test_bin(void);
/* Makes a temporary folder; returns 0. */
int fb_test_tmpdir(char *out, size_t n, const char *tag);

#endif
