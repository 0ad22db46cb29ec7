/* Test harness: the throwaway PostgreSQL of a test run. tests/run.sh starts
 * one server for the whole run (tests/pg-up.sh) and exports its connection
 * string as FIREBREAK_TEST_PG; every test takes a fresh database of its own
 * on it and drops it afterwards, so tests never see each other's data. A
 * test that must restart a server or change its settings starts a private
 * one. Only for tests; the servers listen on 127.0.0.1 only.
 * SPDX-License-Identifier: MIT */
#ifndef FB_TEST_PG_H
#define FB_TEST_PG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* $FIREBREAK_TEST_PG, or NULL when no server was given (then the
 * PostgreSQL tests report themselves skipped: run them through run.sh). */
const char *fb_test_pg_server(void);
/* Whether integration tests run their nodes on PostgreSQL
 * ($FIREBREAK_TEST_STORE=postgres). */
bool fb_test_pg_nodes(void);

/* Creates an empty database on server (NULL: fb_test_pg_server()) and
 * writes the connection string of it to out. 0, or -1 with a message. */
int fb_test_pg_db_new(const char *server, char *out, size_t n);
/* Drops the database named by conninfo (closing its connections first). */
void fb_test_pg_db_drop(const char *conninfo);

/* Runs SQL (no values) on conninfo: 0, or -1 with the error printed. */
int fb_test_pg_exec(const char *conninfo, const char *sql);
/* First column of the first row as an integer; -1 on error or no row. */
int64_t fb_test_pg_int(const char *conninfo, const char *sql);

/* A private server in its own temporary folder. settings: more postgres
 * options ("-c name=value ...", no spaces inside a value), or NULL. */
typedef struct {
    char dir[256];
    char conninfo[256]; /* of its "postgres" database */
} fb_test_pg_t;
int fb_test_pg_start(fb_test_pg_t *p, const char *settings);
/* Stops it by its PID; keep: leave the folder, to start it again. */
int fb_test_pg_stop(fb_test_pg_t *p, bool keep);

#endif
