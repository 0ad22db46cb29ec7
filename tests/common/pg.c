/* The PostgreSQL half of the test harness (see pg.h). Servers are started
 * and stopped by tests/pg-up.sh and tests/pg-down.sh, which stop a server
 * only by the PID its own data folder records.
 * SPDX-License-Identifier: MIT */
#include "common/pg.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/node.h"

const char *fb_test_pg_server(void)
{
    const char *s = getenv("FIREBREAK_TEST_PG");
    return s && *s ? s : NULL;
}

bool fb_test_pg_nodes(void)
{
    const char *s = getenv("FIREBREAK_TEST_STORE");
    return s && strcmp(s, "postgres") == 0;
}

static PGconn *connect_to(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "test pg: cannot connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, NULL, NULL); /* quiet: "does not exist, skipping" */
    return c;
}

static int exec_on(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    int st = PQresultStatus(r);
    int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
    if (rc) fprintf(stderr, "test pg: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    return rc;
}

int fb_test_pg_exec(const char *conninfo, const char *sql)
{
    PGconn *c = connect_to(conninfo);
    if (!c) return -1;
    int rc = exec_on(c, sql);
    PQfinish(c);
    return rc;
}

int64_t fb_test_pg_int(const char *conninfo, const char *sql)
{
    PGconn *c = connect_to(conninfo);
    if (!c) return -1;
    PGresult *r = PQexec(c, sql);
    int64_t v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    else if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "test pg: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return v;
}

int fb_test_pg_db_new(const char *server, char *out, size_t n)
{
    static int counter;
    if (!server) server = fb_test_pg_server();
    if (!server) {
        fprintf(stderr,
                "test pg: FIREBREAK_TEST_PG is not set (run the tests with tests/run.sh)\n");
        return -1;
    }
    char name[64], sql[128];
    snprintf(name, sizeof name, "fbt_%d_%d", (int)getpid(), ++counter);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    if (fb_test_pg_exec(server, sql) != 0) return -1;
    /* A later keyword wins in a libpq string: this names the new database. */
    snprintf(out, n, "%s dbname=%s", server, name);
    return 0;
}

void fb_test_pg_db_drop(const char *conninfo)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    if (!opts) return;
    char sql[160] = "";
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "dbname") == 0 && o->val && strncmp(o->val, "fbt_", 4) == 0)
            snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", o->val);
    PQconninfoFree(opts);
    if (!sql[0]) return;
    char admin[400];
    snprintf(admin, sizeof admin, "%s dbname=postgres", conninfo);
    fb_test_pg_exec(admin, sql);
}

static const char *scripts(void)
{
    const char *d = getenv("FIREBREAK_TEST_SCRIPTS");
    return d && *d ? d : "tests";
}

int fb_test_pg_start(fb_test_pg_t *p, const char *settings)
{
    if (!p->dir[0]) {
        /* under the run's folder, whose end (tests/run.sh) stops what a
         * killed test left running */
        const char *run = getenv("FIREBREAK_TEST_TMP");
        snprintf(p->dir, sizeof p->dir, "%s/pg-XXXXXX", run && *run ? run : "/tmp");
        if (!mkdtemp(p->dir)) {
            p->dir[0] = 0;
            return -1;
        }
    }
    char cmd[800];
    snprintf(cmd, sizeof cmd, "%s/pg-up.sh '%s' %s", scripts(), p->dir, settings ? settings : "");
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    char line[256] = "";
    bool got = fgets(line, sizeof line, f) != NULL;
    int st = pclose(f);
    if (!got || st != 0) {
        fprintf(stderr, "test pg: %s failed (status %d)\n", cmd, st);
        return -1;
    }
    line[strcspn(line, "\n")] = 0;
    snprintf(p->conninfo, sizeof p->conninfo, "%s", line);
    return 0;
}

int fb_test_pg_stop(fb_test_pg_t *p, bool keep)
{
    if (!p->dir[0]) return -1;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s/pg-down.sh '%s' %s", scripts(), p->dir, keep ? "--keep" : "");
    int rc = system(cmd) == 0 ? 0 : -1;
    if (!keep) p->dir[0] = 0;
    return rc;
}
