/* Spawning and stopping test nodes (see node.h). The node is started with
 * fork + exec; it is stopped by the PID we got, never by name.
 * SPDX-License-Identifier: MIT */
#include "common/node.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <sqlite3.h>
#include <unistd.h>

#include "common/pg.h"

const char *fb_test_bin(void)
{
    const char *b = getenv("FIREBREAK_BIN");
    return b && *b ? b : "build/firebreak";
}

int fb_test_tmpdir(char *out, size_t n, const char *tag)
{
    snprintf(out, n, "/tmp/fbtest-%s-XXXXXX", tag);
    return mkdtemp(out) ? 0 : -1;
}

/* The store keys go into a config file, so that `firebreak admin` can be
 * pointed at the same store. */
static int write_conf(fb_test_node_t *n)
{
    snprintf(n->conf, sizeof n->conf, "%s/node.conf", n->dir);
    if (fb_test_pg_nodes() && !n->pg[0] && fb_test_pg_db_new(NULL, n->pg, sizeof n->pg) != 0)
        return -1;
    FILE *f = fopen(n->conf, "w");
    if (!f) return -1;
    if (n->pg[0]) fprintf(f, "store = postgres\npg_conninfo = %s\n", n->pg);
    return fclose(f) == 0 ? 0 : -1;
}

static int spawn(fb_test_node_t *n, const char *listen)
{
    char ready[300], data[300];
    snprintf(ready, sizeof ready, "%s/ready", n->dir);
    snprintf(data, sizeof data, "%s/data", n->dir);
    snprintf(n->log, sizeof n->log, "%s/node.log", n->dir);
    unlink(ready);
    if (write_conf(n) != 0) return -1;
    const char *argv[48] = {fb_test_bin(), "serve", "--config", n->conf, "--listen", listen,
                            "--data-dir", data, "--ready-file", ready, "--set",
                            "argon2_opslimit=1", "--set", "argon2_memlimit_kib=8",
                            "--log-level", "info"};
    int k = 16;
    for (int i = 0; n->extra[i] && k < 46; i++) argv[k++] = n->extra[i];
    argv[k] = NULL;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a crashed test leaves no node behind */
        int fd = open(n->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) dup2(fd, 2);
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    n->pid = pid;
    /* Wait for the ready file (bounded: 15 s). */
    for (int i = 0; i < 1500; i++) {
        FILE *f = fopen(ready, "r");
        if (f) {
            char line[64] = {0};
            bool ok = fgets(line, sizeof line, f) != NULL;
            fclose(f);
            if (ok && strchr(line, '\n')) {
                line[strcspn(line, "\n")] = 0;
                snprintf(n->addr, sizeof n->addr, "%s", line);
                return 0;
            }
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            n->pid = 0;
            fprintf(stderr, "node exited during start; see %s\n", n->log);
            return -1;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "node did not become ready; see %s\n", n->log);
    fb_test_node_stop(n, SIGKILL);
    return -1;
}

int fb_test_node_start(fb_test_node_t *n)
{
    if (!n->dir[0] && fb_test_tmpdir(n->dir, sizeof n->dir, "node") != 0) return -1;
    return spawn(n, "127.0.0.1:0");
}

int fb_test_node_restart(fb_test_node_t *n)
{
    return spawn(n, n->addr);
}

int fb_test_node_stop(fb_test_node_t *n, int sig)
{
    if (n->pid <= 0) return -1;
    kill(n->pid, sig);
    int st = 0;
    while (waitpid(n->pid, &st, 0) < 0 && errno == EINTR) {}
    n->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void fb_test_node_cleanup(fb_test_node_t *n)
{
    if (n->pid > 0) fb_test_node_stop(n, SIGTERM);
    if (n->dir[0] && !getenv("FB_KEEP_TEST_DIRS")) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", n->dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", n->dir);
        if (n->pg[0]) fb_test_pg_db_drop(n->pg);
    }
    n->dir[0] = 0;
    n->pg[0] = 0;
}

/* ---- looking into the store ---- */

static sqlite3 *sq_open(const fb_test_node_t *n)
{
    char path[400];
    snprintf(path, sizeof path, "%s/data/firebreak.db", n->dir);
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        fprintf(stderr, "cannot open %s\n", path);
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static PGresult *pg_run(const fb_test_node_t *n, PGconn **c, const char *sql, const int64_t *params,
                        int nparams)
{
    *c = PQconnectdb(n->pg);
    if (PQstatus(*c) != CONNECTION_OK) {
        fprintf(stderr, "test node: cannot connect: %s", PQerrorMessage(*c));
        return NULL;
    }
    char num[8][24];
    const char *vals[8];
    for (int i = 0; i < nparams && i < 8; i++) {
        snprintf(num[i], sizeof num[i], "%lld", (long long)params[i]);
        vals[i] = num[i];
    }
    PGresult *r = PQexecParams(*c, sql, nparams, NULL, vals, NULL, NULL, 0);
    int st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fprintf(stderr, "test node: %s: %s", sql, PQerrorMessage(*c));
        PQclear(r);
        return NULL;
    }
    return r;
}

int fb_test_node_sql(const fb_test_node_t *n, const char *sql, const int64_t *params, int nparams)
{
    int rc = -1;
    if (n->pg[0]) {
        PGconn *c;
        PGresult *r = pg_run(n, &c, sql, params, nparams);
        if (r) rc = atoi(PQcmdTuples(r));
        PQclear(r);
        PQfinish(c);
        return rc;
    }
    sqlite3 *db = sq_open(n);
    sqlite3_stmt *st = NULL;
    if (db && sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        for (int i = 0; i < nparams; i++)
            sqlite3_bind_int64(st, i + 1, params[i]);
        if (sqlite3_step(st) == SQLITE_DONE) rc = sqlite3_changes(db);
    }
    if (rc < 0 && db) fprintf(stderr, "test node: %s: %s\n", sql, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

int fb_test_node_query(const fb_test_node_t *n, const char *sql, char *out, size_t outlen)
{
    int rc = -1;
    if (n->pg[0]) {
        PGconn *c;
        PGresult *r = pg_run(n, &c, sql, NULL, 0);
        if (r && PQntuples(r) > 0) {
            snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
            rc = 0;
        }
        PQclear(r);
        PQfinish(c);
        return rc;
    }
    sqlite3 *db = sq_open(n);
    sqlite3_stmt *st = NULL;
    if (db && sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0)) {
        snprintf(out, outlen, "%s", (const char *)sqlite3_column_text(st, 0));
        rc = 0;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

bool fb_test_file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    size_t n = strlen(needle), cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    bool found = false;
    size_t got;
    /* Overlapping reads, so that a match across two reads is not missed. */
    while (!found && (got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (memmem(buf, len, needle, n)) found = true;
        if (len > n) {
            memmove(buf, buf + len - n, n);
            len = n;
        }
    }
    free(buf);
    fclose(f);
    return found;
}

int fb_test_node_store_contains(const fb_test_node_t *n, const char *needle)
{
    int searched = 0;
    if (!n->pg[0]) {
        const char *files[] = {"data/firebreak.db", "data/firebreak.db-wal"};
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
            char path[400];
            snprintf(path, sizeof path, "%s/%s", n->dir, files[i]);
            if (access(path, R_OK) == 0) searched++;
            if (fb_test_file_contains(path, needle)) return 1;
        }
        return searched ? 0 : -1;
    }
    const char *pgdir = getenv("FIREBREAK_TEST_PG_DIR");
    if (!pgdir || !*pgdir) return -1;
    char wal[400];
    snprintf(wal, sizeof wal, "%s/data/pg_wal", pgdir);
    DIR *d = opendir(wal);
    if (!d) return -1;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d))) {
        if (strlen(e->d_name) != 24) continue; /* WAL segments only */
        char path[700];
        snprintf(path, sizeof path, "%s/%s", wal, e->d_name);
        searched++;
        found = fb_test_file_contains(path, needle);
    }
    closedir(d);
    return found ? 1 : searched ? 0 : -1;
}
