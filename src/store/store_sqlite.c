/* The SQLite backend of the store: the schema and its versioned migrations,
 * one cached prepared statement per query and connection, transactions, and
 * the mapping of SQLite's errors to FB_E* codes. It must never format a value
 * into SQL (every value is bound) and never log a password hash or a token.
 * SPDX-License-Identifier: MIT */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/fb.h"
#include "store/sqlite_vfs.h"
#include "store/store_impl.h"

/* ---- schema ----
 * migrations[i] takes a database from PRAGMA user_version i to i + 1, in one
 * transaction. Only ever append: a migration that has shipped is never edited.
 *
 * Notes on the choices:
 *  - events is clustered on (room_id, seq), so history and sync read a room's
 *    range from adjacent pages, and rooms_for_user finds a room's newest text
 *    by walking down from its top. It has no foreign keys because the writer
 *    checked membership before appending: an append stays at one rooms update
 *    and two b-tree inserts (the row and the cmid index). A partial index of
 *    text events was measured and dropped: it cost a third of the append
 *    rate, and counting unread texts through it was slower than the range.
 *  - actor_device, target_id and owner_id use 0 for "none", as store.h does. */
static const char *const migrations[] = {
    /* 1: initial schema */
    "CREATE TABLE users ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  pwhash TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE TABLE devices ("
    "  id INTEGER PRIMARY KEY,"
    "  user_id INTEGER NOT NULL REFERENCES users(id),"
    "  name TEXT NOT NULL,"
    "  token_hash BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),"
    "  created_ms INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL,"
    "  revoked INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX devices_by_user ON devices(user_id);"
    "CREATE TABLE rooms ("
    "  id INTEGER PRIMARY KEY,"
    "  kind INTEGER NOT NULL CHECK (kind IN (1, 2)),"
    "  name TEXT NOT NULL DEFAULT '',"
    "  owner_id INTEGER NOT NULL DEFAULT 0,"
    "  direct_key TEXT UNIQUE,"
    "  last_seq INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE TABLE members ("
    "  room_id INTEGER NOT NULL REFERENCES rooms(id),"
    "  user_id INTEGER NOT NULL REFERENCES users(id),"
    "  role INTEGER NOT NULL DEFAULT 0,"
    "  joined_seq INTEGER NOT NULL,"
    "  left_seq INTEGER NOT NULL DEFAULT 0,"
    "  read_seq INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (room_id, user_id)) WITHOUT ROWID;"
    "CREATE INDEX members_by_user ON members(user_id, left_seq);"
    "CREATE TABLE events ("
    "  room_id INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  ts_ms INTEGER NOT NULL,"
    "  kind INTEGER NOT NULL,"
    "  actor_id INTEGER NOT NULL,"
    "  actor_device INTEGER NOT NULL DEFAULT 0,"
    "  target_id INTEGER NOT NULL DEFAULT 0,"
    "  cmid TEXT,"
    "  text TEXT,"
    "  PRIMARY KEY (room_id, seq)) WITHOUT ROWID;"
    "CREATE UNIQUE INDEX events_by_cmid ON events(actor_device, cmid) WHERE cmid IS NOT NULL;",
};

#define SCHEMA_VERSION ((int)FB_ARRAY_LEN(migrations))

/* ---- statements ----
 * Prepared on first use and kept for the connection's life: the append path
 * runs two of them per event and must not parse SQL. */

/* The columns of one event with both names, in the order ev_read expects. */
#define EV_COLS                                                                                    \
    "e.room_id, e.seq, e.ts_ms, e.kind, e.actor_id, e.actor_device, e.target_id, e.cmid, "         \
    "e.text, a.name, t.name"
#define EV_JOINS " LEFT JOIN users a ON a.id = e.actor_id LEFT JOIN users t ON t.id = e.target_id"
#define MEMBER_COLS "m.room_id, m.user_id, u.name, m.role, m.joined_seq, m.left_seq, m.read_seq"
#define DEVICE_COLS "id, user_id, name, created_ms, expires_ms, revoked"

#define SQ_STMTS(X)                                                                                \
    X(BEGIN_WRITE, "BEGIN IMMEDIATE")                                                              \
    X(BEGIN_READ, "BEGIN DEFERRED")                                                                \
    X(SNAPSHOT, "SELECT count(*) FROM sqlite_schema")                                              \
    X(COMMIT, "COMMIT")                                                                            \
    X(ROLLBACK, "ROLLBACK")                                                                        \
    X(SAVEPOINT, "SAVEPOINT sp")                                                                   \
    X(RELEASE, "RELEASE sp")                                                                       \
    X(ROLLBACK_TO, "ROLLBACK TO sp")                                                               \
    X(USER_VERSION, "PRAGMA user_version")                                                         \
    X(USER_INSERT, "INSERT INTO users(name, pwhash, created_ms) VALUES (?1, ?2, ?3)")              \
    X(USER_BY_NAME, "SELECT id, name, pwhash, created_ms FROM users WHERE name = ?1")              \
    X(USER_BY_ID, "SELECT id, name, pwhash, created_ms FROM users WHERE id = ?1")                  \
    X(DEVICE_INSERT, "INSERT INTO devices(user_id, name, token_hash, created_ms, expires_ms)"      \
                     " VALUES (?1, ?2, ?3, ?4, ?5)")                                               \
    X(DEVICE_BY_TOKEN, "SELECT " DEVICE_COLS " FROM devices WHERE token_hash = ?1")                \
    X(DEVICE_REVOKE,                                                                               \
      "UPDATE devices SET revoked = 1 WHERE id = ?2 AND user_id = ?1 AND revoked = 0")             \
    X(DEVICES_LIST,                                                                                \
      "SELECT " DEVICE_COLS " FROM devices WHERE user_id = ?1 AND revoked = 0 ORDER BY id")        \
    X(ROOM_INSERT, "INSERT INTO rooms(kind, name, owner_id, direct_key, created_ms)"               \
                   " VALUES (?1, ?2, ?3, ?4, ?5)")                                                 \
    X(ROOM_BY_DIRECT_KEY, "SELECT id FROM rooms WHERE direct_key = ?1")                            \
    X(ROOM_GET, "SELECT id, kind, name, owner_id, last_seq, created_ms FROM rooms"                 \
                " WHERE id = ?1")                                                                  \
    X(ROOM_LAST_SEQ, "SELECT last_seq FROM rooms WHERE id = ?1")                                   \
    X(ROOM_SET_NAME, "UPDATE rooms SET name = ?2 WHERE id = ?1")                                   \
    X(ROOM_SET_OWNER, "UPDATE rooms SET owner_id = ?2 WHERE id = ?1")                              \
    /* The seq is read from the room inside the insert itself, so a failed                         \
     * insert (a duplicate cmid) leaves nothing to undo. */                                        \
    X(EVENT_INSERT,                                                                                \
      "INSERT INTO events(room_id, seq, ts_ms, kind, actor_id, actor_device, target_id,"           \
      " cmid, text) SELECT id, last_seq + 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 FROM rooms"                \
      " WHERE id = ?1 RETURNING seq")                                                              \
    X(EVENT_BUMP, "UPDATE rooms SET last_seq = ?2 WHERE id = ?1")                                  \
    /* send_many numbers a run's events itself (it reads a room's last_seq                         \
     * once per call), so its insert is a plain one-row insert. */                                 \
    X(EVENT_PUT, "INSERT INTO events(room_id, seq, ts_ms, kind, actor_id, actor_device,"           \
                 " target_id, cmid, text) VALUES (?1, ?2, ?3, 1, ?4, ?5, 0, ?6, ?7)")              \
    X(EVENT_UNDO, "DELETE FROM events WHERE room_id = ?1 AND seq = ?2")                            \
    X(EVENT_BY_CMID,                                                                               \
      "SELECT " EV_COLS " FROM events e" EV_JOINS " WHERE e.actor_device = ?1 AND e.cmid = ?2")    \
    X(EVENTS_AFTER, "SELECT " EV_COLS " FROM events e" EV_JOINS                                    \
                    " WHERE e.room_id = ?1 AND e.seq > ?2 AND e.seq <= ?3"                         \
                    " ORDER BY e.seq LIMIT ?4")                                                    \
    X(EVENTS_BEFORE, "SELECT " EV_COLS " FROM events e" EV_JOINS                                   \
                     " WHERE e.room_id = ?1 AND e.seq >= ?3 AND e.seq < ?2"                        \
                     " ORDER BY e.seq DESC LIMIT ?4")                                              \
    X(MEMBER_ADD, "INSERT INTO members(room_id, user_id, role, joined_seq, left_seq, read_seq)"    \
                  " VALUES (?1, ?2, ?3, ?4, 0, max(?4 - 1, 0))"                                    \
                  " ON CONFLICT (room_id, user_id) DO UPDATE SET role = excluded.role,"            \
                  " joined_seq = excluded.joined_seq, left_seq = 0,"                               \
                  " read_seq = max(members.read_seq, excluded.read_seq)")                          \
    X(MEMBER_REMOVE, "UPDATE members SET left_seq = ?3"                                            \
                     " WHERE room_id = ?1 AND user_id = ?2 AND left_seq = 0")                      \
    X(MEMBER_SET_ROLE, "UPDATE members SET role = ?3"                                              \
                       " WHERE room_id = ?1 AND user_id = ?2 AND left_seq = 0")                    \
    X(MEMBER_GET, "SELECT " MEMBER_COLS " FROM members m JOIN users u ON u.id = m.user_id"         \
                  " WHERE m.room_id = ?1 AND m.user_id = ?2")                                      \
    X(MEMBERS_LIST, "SELECT " MEMBER_COLS " FROM members m JOIN users u ON u.id = m.user_id"       \
                    " WHERE m.room_id = ?1 AND m.left_seq = 0"                                     \
                    " ORDER BY m.joined_seq, m.user_id")                                           \
    X(READ_MARKER, "UPDATE members SET read_seq = ?3 WHERE room_id = ?1 AND user_id = ?2"          \
                   " AND left_seq = 0 AND read_seq < ?3")                                          \
    X(MEMBER_READ_SEQ, "SELECT read_seq FROM members WHERE room_id = ?1 AND user_id = ?2"          \
                       " AND left_seq = 0")                                                        \
    /* One row per current room of ?1. Every part is a seek or a range inside                      \
     * one room: the newest visible text walks down from the room's top seq,                       \
     * unread counts the room's events after the marker (so it costs what is                       \
     * unread, not what the room holds), the member count reads the room's                         \
     * member rows. A room without text sorts by its creation time. */                             \
    X(ROOMS_FOR_USER,                                                                              \
      "SELECT r.id, r.kind, r.name, r.owner_id, r.last_seq, r.created_ms, " MEMBER_COLS ","        \
      " (SELECT count(*) FROM members c WHERE c.room_id = m.room_id AND c.left_seq = 0),"          \
      " (SELECT count(*) FROM events x WHERE x.room_id = m.room_id AND x.kind = 1"                 \
      "   AND x.seq > max(m.read_seq, m.joined_seq - 1) AND x.actor_id != m.user_id), " EV_COLS    \
      " FROM members m JOIN rooms r ON r.id = m.room_id JOIN users u ON u.id = m.user_id"          \
      " LEFT JOIN events e ON e.room_id = m.room_id AND e.seq = (SELECT max(y.seq)"                \
      "   FROM events y WHERE y.room_id = m.room_id AND y.kind = 1"                                \
      "   AND y.seq >= m.joined_seq)" EV_JOINS " WHERE m.user_id = ?1 AND m.left_seq = 0"          \
      " ORDER BY coalesce(e.ts_ms, r.created_ms) DESC, r.id DESC")

enum {
#define SQ_X_ENUM(name, sql) ST_##name,
    SQ_STMTS(SQ_X_ENUM)
#undef SQ_X_ENUM
        ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
#define SQ_X_SQL(name, sql) sql,
    SQ_STMTS(SQ_X_SQL)
#undef SQ_X_SQL
};

static const char *const stmt_name[ST_COUNT] = {
#define SQ_X_NAME(name, sql) #name,
    SQ_STMTS(SQ_X_NAME)
#undef SQ_X_NAME
};

/* What one send_many call has learnt of a room (actor 0: v is its last_seq)
 * or of a sender in a room (v is its read_seq, or -1: not a current member).
 * v moves as the run goes; v0 is what the store held, so that what moved is
 * written back once, at the end of the call. */
typedef struct {
    int64_t room, actor, v, v0;
} sq_seen_t;

typedef struct {
    fb_store_t base; /* first: store.c sees only this */
    sqlite3 *db;
    bool reader;
    int sp_depth; /* open savepoints, so a stray release is FB_ESTATE, not a SQL error */
    sqlite3_stmt *stmt[ST_COUNT];
    /* send_many's scratch, kept between calls: entries in first-seen order
     * and an open-addressing index of them (index + 1, 0 empty) */
    sq_seen_t *seen;
    uint32_t *seen_ix;
    size_t n_seen, cap_seen, cap_ix, seen_mask;
} sq_store_t;

static sq_store_t *sq(fb_store_t *s)
{
    return (sq_store_t *)s;
}

/* ---- errors ---- */

static int sq_map(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return FB_EUNAVAIL;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_PROTOCOL:
        return FB_EIO;
    case SQLITE_NOMEM:
        return FB_ENOMEM;
    case SQLITE_CONSTRAINT:
        /* A foreign key fails when a referenced user or room does not exist. */
        return rc == SQLITE_CONSTRAINT_FOREIGNKEY ? FB_ENOTFOUND : FB_EINVAL;
    case SQLITE_READONLY:
        /* Plain READONLY is a write on a reader (a bug); the others are the file. */
        return rc == SQLITE_READONLY ? FB_EINTERNAL : FB_EIO;
    default:
        return FB_EINTERNAL;
    }
}

/* sqlite3_errmsg names tables and columns, never bound values, so it is safe
 * to log even when the statement carried a token hash. */
static int sq_fail(sq_store_t *s, int rc, const char *what)
{
    FB_ERROR("store", "sqlite %s failed: %s (code=%d)", what, sqlite3_errmsg(s->db), rc);
    return sq_map(rc);
}

/* ---- statement helpers ---- */

static int sq_stmt(sq_store_t *s, int id, sqlite3_stmt **out)
{
    *out = NULL;
    if (!s->stmt[id]) {
        int rc = sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                    &s->stmt[id], NULL);
        if (rc != SQLITE_OK) {
            s->stmt[id] = NULL;
            return sq_fail(s, rc, stmt_name[id]);
        }
    }
    *out = s->stmt[id];
    return 0;
}

/* Every use of a cached statement ends here. Resetting at once matters: a
 * statement left mid-rows would pin a reader's snapshot, and a bound string
 * must not outlive the caller's buffer. */
static void sq_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* Runs a cached statement that takes no values and returns no rows. */
static int sq_exec(sq_store_t *s, int id)
{
    sqlite3_stmt *st;
    int err = sq_stmt(s, id, &st);
    if (err) return err;
    int rc = sqlite3_step(st);
    while (rc == SQLITE_ROW)
        rc = sqlite3_step(st);
    err = rc == SQLITE_DONE ? 0 : sq_fail(s, rc, stmt_name[id]);
    sq_done(st);
    return err;
}

/* Steps a write statement to its end; *changes gets the rows it touched. */
static int sq_write(sq_store_t *s, int id, sqlite3_stmt *st, int *changes)
{
    int rc = sqlite3_step(st);
    int err = rc == SQLITE_DONE ? 0 : sq_fail(s, rc, stmt_name[id]);
    if (changes) *changes = err ? 0 : sqlite3_changes(s->db);
    sq_done(st);
    return err;
}

static char *col_str(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    if (!t) return NULL;
    return fb_strndup((const char *)t, (size_t)sqlite3_column_bytes(st, i));
}

static void *grow(void *arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap) return arr;
    *cap = *cap ? *cap * 2 : 8;
    return fb_realloc(arr, *cap * elem);
}

static void ev_read(sqlite3_stmt *st, int c, fb_event_t *e)
{
    e->room_id = sqlite3_column_int64(st, c + 0);
    e->seq = sqlite3_column_int64(st, c + 1);
    e->ts_ms = sqlite3_column_int64(st, c + 2);
    e->kind = sqlite3_column_int(st, c + 3);
    e->actor_id = sqlite3_column_int64(st, c + 4);
    e->actor_device = sqlite3_column_int64(st, c + 5);
    e->target_id = sqlite3_column_int64(st, c + 6);
    e->cmid = col_str(st, c + 7);
    e->text = col_str(st, c + 8);
    e->actor_name = col_str(st, c + 9);
    e->target_name = col_str(st, c + 10);
}

static void member_read(sqlite3_stmt *st, int c, fb_member_t *m)
{
    m->room_id = sqlite3_column_int64(st, c + 0);
    m->user_id = sqlite3_column_int64(st, c + 1);
    m->user_name = col_str(st, c + 2);
    m->role = sqlite3_column_int(st, c + 3);
    m->joined_seq = sqlite3_column_int64(st, c + 4);
    m->left_seq = sqlite3_column_int64(st, c + 5);
    m->read_seq = sqlite3_column_int64(st, c + 6);
}

static void device_read(sqlite3_stmt *st, fb_device_t *d)
{
    d->id = sqlite3_column_int64(st, 0);
    d->user_id = sqlite3_column_int64(st, 1);
    d->name = col_str(st, 2);
    d->created_ms = sqlite3_column_int64(st, 3);
    d->expires_ms = sqlite3_column_int64(st, 4);
    d->revoked = sqlite3_column_int(st, 5) != 0;
}

static void user_read(sqlite3_stmt *st, fb_user_t *u)
{
    u->id = sqlite3_column_int64(st, 0);
    u->name = col_str(st, 1);
    u->pwhash = col_str(st, 2);
    u->created_ms = sqlite3_column_int64(st, 3);
}

/* ---- lifetime ---- */

static void sq_close(fb_store_t *base)
{
    sq_store_t *s = sq(base);
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->stmt[i]);
    fb_free(s->seen);
    fb_free(s->seen_ix);
    /* Closing rolls back an open transaction: nothing uncommitted survives. */
    sqlite3_close(s->db);
    fb_free(s);
}

static int sq_user_version(sq_store_t *s, int *version)
{
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_USER_VERSION, &st);
    if (err) return err;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *version = sqlite3_column_int(st, 0);
    else
        err = sq_fail(s, rc, "user_version");
    sq_done(st);
    return err;
}

/* Runs a pragma (no values: only our own constants) and checks the first
 * column of its answer when `want` is given. */
static int sq_pragma(sq_store_t *s, const char *sql, const char *want)
{
    sqlite3_stmt *st = NULL;
    int err = 0;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        err = sq_fail(s, rc, sql);
        goto cleanup;
    }
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        err = sq_fail(s, rc, sql);
        goto cleanup;
    }
    if (want) {
        const char *got = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
        if (!got || sqlite3_stricmp(got, want) != 0) {
            FB_ERROR("store", "sqlite %s answered %s, want %s", sql, got ? got : "nothing", want);
            err = FB_EIO;
        }
    }
cleanup:
    sqlite3_finalize(st);
    return err;
}

/* Applies the migrations the file lacks, each in its own transaction. The
 * version is read inside the write transaction so that two processes opening
 * one new file cannot both apply a migration. */
static int sq_migrate(sq_store_t *s)
{
    int err = 0;
    for (;;) {
        int version = 0;
        err = sq_exec(s, ST_BEGIN_WRITE);
        if (err) return err;
        err = sq_user_version(s, &version);
        if (err) goto fail;
        if (version > SCHEMA_VERSION) {
            FB_ERROR("store", "database schema version=%d is newer than this build's %d", version,
                     SCHEMA_VERSION);
            err = FB_ESTATE;
            goto fail;
        }
        if (version == SCHEMA_VERSION) return sq_exec(s, ST_COMMIT);
        int rc = sqlite3_exec(s->db, migrations[version], NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            err = sq_fail(s, rc, "migration");
            goto fail;
        }
        /* A pragma takes no bound value; the number is our own. */
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", version + 1);
        err = sq_pragma(s, sql, NULL);
        if (err) goto fail;
        err = sq_exec(s, ST_COMMIT);
        if (err) goto fail;
        FB_INFO("store", "applied schema migration version=%d", version + 1);
    }
fail:
    if (!sqlite3_get_autocommit(s->db)) sq_exec(s, ST_ROLLBACK);
    return err;
}

static int sq_open(const fb_store_config_t *cfg, bool reader, fb_store_t **out)
{
    if (!cfg->path || !*cfg->path) return FB_EINVAL;
    sq_store_t *s = fb_calloc(1, sizeof *s);
    s->base.ops = &fb_store_sqlite_ops;
    s->reader = reader;
    int err = 0;
    /* NOMUTEX: a handle is used by one thread at a time (store.h). A reader
     * still opens read-write so that it can use the WAL index. */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (reader ? 0 : SQLITE_OPEN_CREATE);
    int rc = fb_sqlite_vfs_init();
    if (rc == SQLITE_OK) rc = sqlite3_open_v2(cfg->path, &s->db, flags, FB_SQLITE_VFS);
    if (rc != SQLITE_OK) {
        FB_ERROR("store", "cannot open sqlite database path=%s: %s", cfg->path,
                 s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        err = sq_map(rc);
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, 5000);
    if (cfg->cache_mib > 0) {
        /* The writer touches the tail page of every room it appends to and
         * an index page per sender: with SQLite's 2 MiB they are read again
         * from the WAL at nearly every message (bench kakao: 1.5 preads per
         * message). The cache fills only as pages are used. */
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA cache_size = -%d", cfg->cache_mib * 1024);
        if ((err = sq_pragma(s, sql, NULL))) goto fail;
    }
    if (reader) {
        int version = 0;
        if ((err = sq_pragma(s, "PRAGMA query_only = ON", NULL))) goto fail;
        if ((err = sq_user_version(s, &version))) goto fail;
        if (version != SCHEMA_VERSION) {
            FB_ERROR("store", "reader found schema version=%d, want %d: open the writer first",
                     version, SCHEMA_VERSION);
            err = FB_ESTATE;
            goto fail;
        }
    } else {
        /* synchronous=FULL in WAL mode fsyncs the log at every commit: an ack
         * sent after fb_store_commit is a promise kept across power loss. */
        if ((err = sq_pragma(s, "PRAGMA journal_mode = WAL", "wal"))) goto fail;
        if ((err = sq_pragma(s, "PRAGMA synchronous = FULL", NULL))) goto fail;
        if ((err = sq_pragma(s, "PRAGMA wal_autocheckpoint = 10000", NULL))) goto fail;
        if ((err = sq_pragma(s, "PRAGMA foreign_keys = ON", NULL))) goto fail;
        if ((err = sq_migrate(s))) goto fail;
    }
    *out = &s->base;
    return 0;
fail:
    sq_close(&s->base);
    return err;
}

static int sq_schema_version(fb_store_t *base, int *version)
{
    return sq_user_version(sq(base), version);
}

/* ---- transactions ---- */

static int sq_begin(fb_store_t *base)
{
    sq_store_t *s = sq(base);
    if (!sqlite3_get_autocommit(s->db)) return FB_ESTATE;
    s->sp_depth = 0;
    if (!s->reader) return sq_exec(s, ST_BEGIN_WRITE);
    /* BEGIN DEFERRED takes no snapshot until the first read; read now, so
     * that every query of this transaction sees the store as of begin. */
    int err = sq_exec(s, ST_BEGIN_READ);
    if (err) return err;
    err = sq_exec(s, ST_SNAPSHOT);
    if (err) sq_exec(s, ST_ROLLBACK);
    return err;
}

static int sq_commit(fb_store_t *base)
{
    sq_store_t *s = sq(base);
    if (sqlite3_get_autocommit(s->db)) return FB_ESTATE;
    int err = sq_exec(s, ST_COMMIT);
    if (!err) s->sp_depth = 0;
    return err;
}

/* A no-op without a transaction: SQLite may already have rolled back after
 * an I/O error, and the caller's rollback must still succeed then. */
static int sq_rollback(fb_store_t *base)
{
    sq_store_t *s = sq(base);
    s->sp_depth = 0;
    if (sqlite3_get_autocommit(s->db)) return 0;
    return sq_exec(s, ST_ROLLBACK);
}

/* Savepoints all share one name: SQLite releases or rolls back to the
 * innermost one of a name, which is exactly nesting. */
static int sq_savepoint(fb_store_t *base)
{
    sq_store_t *s = sq(base);
    if (sqlite3_get_autocommit(s->db)) return FB_ESTATE;
    int err = sq_exec(s, ST_SAVEPOINT);
    if (!err) s->sp_depth++;
    return err;
}

static int sq_release(fb_store_t *base)
{
    sq_store_t *s = sq(base);
    if (sqlite3_get_autocommit(s->db) || s->sp_depth == 0) return FB_ESTATE;
    int err = sq_exec(s, ST_RELEASE);
    if (!err) s->sp_depth--;
    return err;
}

/* ROLLBACK TO keeps the savepoint open; release it too, so that one
 * savepoint() is paired with exactly one release() or rollback_to(). */
static int sq_rollback_to(fb_store_t *base)
{
    sq_store_t *s = sq(base);
    if (sqlite3_get_autocommit(s->db) || s->sp_depth == 0) return FB_ESTATE;
    int err = sq_exec(s, ST_ROLLBACK_TO);
    if (err) return err;
    err = sq_exec(s, ST_RELEASE);
    if (!err) s->sp_depth--;
    return err;
}

/* ---- accounts ---- */

static int sq_user_create(fb_store_t *base, const char *name, const char *pwhash, int64_t now_ms,
                          int64_t *user_id)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_USER_INSERT, &st);
    if (err) return err;
    bind_text(st, 1, name);
    bind_text(st, 2, pwhash);
    sqlite3_bind_int64(st, 3, now_ms);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        *user_id = sqlite3_last_insert_rowid(s->db);
    else if (rc == SQLITE_CONSTRAINT_UNIQUE)
        err = FB_ENAMETAKEN; /* an expected answer, not worth an error line */
    else
        err = sq_fail(s, rc, "user_create");
    sq_done(st);
    return err;
}

static int sq_user_get(sq_store_t *s, sqlite3_stmt *st, const char *what, fb_user_t *out)
{
    int err = 0;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        user_read(st, out);
    else if (rc == SQLITE_DONE)
        err = FB_ENOTFOUND;
    else
        err = sq_fail(s, rc, what);
    sq_done(st);
    return err;
}

static int sq_user_by_name(fb_store_t *base, const char *name, fb_user_t *out)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_USER_BY_NAME, &st);
    if (err) return err;
    bind_text(st, 1, name);
    return sq_user_get(s, st, "user_by_name", out);
}

static int sq_user_by_id(fb_store_t *base, int64_t id, fb_user_t *out)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_USER_BY_ID, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, id);
    return sq_user_get(s, st, "user_by_id", out);
}

static int sq_device_create(fb_store_t *base, int64_t user_id, const char *name,
                            const uint8_t token_hash[32], int64_t now_ms, int64_t expires_ms,
                            int64_t *device_id)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_DEVICE_INSERT, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, user_id);
    bind_text(st, 2, name);
    sqlite3_bind_blob(st, 3, token_hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now_ms);
    sqlite3_bind_int64(st, 5, expires_ms);
    err = sq_write(s, ST_DEVICE_INSERT, st, NULL);
    if (!err) *device_id = sqlite3_last_insert_rowid(s->db);
    return err;
}

static int sq_device_by_token(fb_store_t *base, const uint8_t token_hash[32], fb_device_t *out)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_DEVICE_BY_TOKEN, &st);
    if (err) return err;
    sqlite3_bind_blob(st, 1, token_hash, 32, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        device_read(st, out);
    else if (rc == SQLITE_DONE)
        err = FB_ENOTFOUND;
    else
        err = sq_fail(s, rc, "device_by_token");
    sq_done(st);
    return err;
}

static int sq_device_revoke(fb_store_t *base, int64_t user_id, int64_t device_id)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int changes = 0;
    int err = sq_stmt(s, ST_DEVICE_REVOKE, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, user_id);
    sqlite3_bind_int64(st, 2, device_id);
    err = sq_write(s, ST_DEVICE_REVOKE, st, &changes);
    if (!err && changes == 0) err = FB_ENOTFOUND;
    return err;
}

/* Live devices only: a revoked device is gone for every purpose but
 * device_by_token, which must still recognise (and refuse) its token. */
static int sq_devices_list(fb_store_t *base, int64_t user_id, fb_device_t **out, size_t *n)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    fb_device_t *arr = NULL;
    size_t len = 0, cap = 0;
    int rc, err = sq_stmt(s, ST_DEVICES_LIST, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, user_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        arr = grow(arr, &cap, len, sizeof *arr);
        memset(&arr[len], 0, sizeof arr[len]);
        device_read(st, &arr[len++]);
    }
    if (rc != SQLITE_DONE) {
        err = sq_fail(s, rc, "devices_list");
        fb_devices_free(arr, len);
        arr = NULL;
        len = 0;
    }
    sq_done(st);
    *out = arr;
    *n = len;
    return err;
}

/* ---- rooms ---- */

static int sq_room_create(fb_store_t *base, int kind, const char *name, int64_t owner_id,
                          const char *direct_key, int64_t now_ms, int64_t *room_id)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_ROOM_INSERT, &st);
    if (err) return err;
    sqlite3_bind_int(st, 1, kind);
    bind_text(st, 2, name);
    sqlite3_bind_int64(st, 3, owner_id);
    bind_text(st, 4, direct_key);
    sqlite3_bind_int64(st, 5, now_ms);
    err = sq_write(s, ST_ROOM_INSERT, st, NULL);
    if (!err) *room_id = sqlite3_last_insert_rowid(s->db);
    return err;
}

static int sq_room_by_direct_key(fb_store_t *base, const char *key, int64_t *room_id)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_ROOM_BY_DIRECT_KEY, &st);
    if (err) return err;
    bind_text(st, 1, key);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *room_id = sqlite3_column_int64(st, 0);
    else if (rc == SQLITE_DONE)
        err = FB_ENOTFOUND;
    else
        err = sq_fail(s, rc, "room_by_direct_key");
    sq_done(st);
    return err;
}

static int sq_room_get(fb_store_t *base, int64_t room_id, fb_room_t *out)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_ROOM_GET, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, room_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->id = sqlite3_column_int64(st, 0);
        out->kind = sqlite3_column_int(st, 1);
        out->name = col_str(st, 2);
        out->owner_id = sqlite3_column_int64(st, 3);
        out->last_seq = sqlite3_column_int64(st, 4);
        out->created_ms = sqlite3_column_int64(st, 5);
    } else if (rc == SQLITE_DONE) {
        err = FB_ENOTFOUND;
    } else {
        err = sq_fail(s, rc, "room_get");
    }
    sq_done(st);
    return err;
}

/* An UPDATE of one row by key; FB_ENOTFOUND when no row matched. */
static int sq_update_room(sq_store_t *s, int id, sqlite3_stmt *st)
{
    int changes = 0;
    int err = sq_write(s, id, st, &changes);
    if (!err && changes == 0) err = FB_ENOTFOUND;
    return err;
}

/* rooms.last_seq = seq: FB_ENOTFOUND without the room. */
static int sq_room_bump(sq_store_t *s, int64_t room_id, int64_t seq)
{
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_EVENT_BUMP, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, room_id);
    sqlite3_bind_int64(st, 2, seq);
    return sq_update_room(s, ST_EVENT_BUMP, st);
}

static int sq_room_set_name(fb_store_t *base, int64_t room_id, const char *name)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_ROOM_SET_NAME, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, room_id);
    bind_text(st, 2, name);
    return sq_update_room(s, ST_ROOM_SET_NAME, st);
}

static int sq_room_set_owner(fb_store_t *base, int64_t room_id, int64_t owner_id)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_ROOM_SET_OWNER, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, room_id);
    sqlite3_bind_int64(st, 2, owner_id);
    return sq_update_room(s, ST_ROOM_SET_OWNER, st);
}

/* ---- events ---- */

/* The hot path: two cached statements per event. The insert reads
 * last_seq + 1 from the room row itself, so a duplicate (device, cmid) fails
 * before anything changed; only then is the room's last_seq moved. */
static int sq_event_append(fb_store_t *base, fb_event_t *ev)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int64_t seq = 0;
    int err = sq_stmt(s, ST_EVENT_INSERT, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, ev->room_id);
    sqlite3_bind_int64(st, 2, ev->ts_ms);
    sqlite3_bind_int(st, 3, ev->kind);
    sqlite3_bind_int64(st, 4, ev->actor_id);
    sqlite3_bind_int64(st, 5, ev->actor_device);
    sqlite3_bind_int64(st, 6, ev->target_id);
    bind_text(st, 7, ev->cmid);
    bind_text(st, 8, ev->text);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        seq = sqlite3_column_int64(st, 0);
        rc = sqlite3_step(st);
    }
    if (rc == SQLITE_DONE && seq == 0) {
        err = FB_ENOTFOUND; /* no such room: nothing was inserted */
    } else if (rc == SQLITE_CONSTRAINT_UNIQUE) {
        /* A retried send: the unique index is the idempotency check. */
        err = FB_EEXIST;
    } else if (rc != SQLITE_DONE) {
        err = sq_fail(s, rc, "event_append");
    }
    sq_done(st);
    if (err) return err;

    if ((err = sq_room_bump(s, ev->room_id, seq))) goto fail;
    ev->seq = seq;
    return 0;

fail:
    /* Keep the gapless invariant even if the caller commits anyway. If SQLite
     * already rolled the whole transaction back there is nothing to undo. */
    if (!sqlite3_get_autocommit(s->db) && sq_stmt(s, ST_EVENT_UNDO, &st) == 0) {
        sqlite3_bind_int64(st, 1, ev->room_id);
        sqlite3_bind_int64(st, 2, seq);
        sq_write(s, ST_EVENT_UNDO, st, NULL);
    }
    return err;
}

static int sq_event_by_cmid(fb_store_t *base, int64_t device_id, const char *cmid, fb_event_t *out)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_EVENT_BY_CMID, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, device_id);
    bind_text(st, 2, cmid);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        ev_read(st, 0, out);
    else if (rc == SQLITE_DONE)
        err = FB_ENOTFOUND;
    else
        err = sq_fail(s, rc, "event_by_cmid");
    sq_done(st);
    return err;
}

/* Collects the rows of an events query (columns EV_COLS). */
static int sq_events_collect(sq_store_t *s, int id, sqlite3_stmt *st, int limit, fb_event_t **out,
                             size_t *n)
{
    fb_event_t *arr = NULL;
    size_t len = 0, cap = (size_t)FB_MIN(limit, 64);
    int rc, err = 0;
    arr = fb_malloc(cap * sizeof *arr);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        arr = grow(arr, &cap, len, sizeof *arr);
        memset(&arr[len], 0, sizeof arr[len]);
        ev_read(st, 0, &arr[len++]);
    }
    if (rc != SQLITE_DONE) {
        err = sq_fail(s, rc, stmt_name[id]);
        fb_events_free(arr, len);
        arr = NULL;
        len = 0;
    } else if (len == 0) {
        fb_free(arr);
        arr = NULL;
    }
    sq_done(st);
    *out = arr;
    *n = len;
    return err;
}

static int sq_events_after(fb_store_t *base, int64_t room_id, int64_t after, int64_t upto,
                           int limit, fb_event_t **out, size_t *n)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_EVENTS_AFTER, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, room_id);
    sqlite3_bind_int64(st, 2, after);
    sqlite3_bind_int64(st, 3, upto > 0 ? upto : INT64_MAX);
    sqlite3_bind_int(st, 4, limit);
    return sq_events_collect(s, ST_EVENTS_AFTER, st, limit, out, n);
}

static int sq_events_before(fb_store_t *base, int64_t room_id, int64_t before, int64_t floor,
                            int limit, fb_event_t **out, size_t *n)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_EVENTS_BEFORE, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, room_id);
    sqlite3_bind_int64(st, 2, before);
    sqlite3_bind_int64(st, 3, floor);
    sqlite3_bind_int(st, 4, limit);
    err = sq_events_collect(s, ST_EVENTS_BEFORE, st, limit, out, n);
    if (err) return err;
    /* Read newest first so that LIMIT keeps the newest; hand back ascending. */
    for (size_t i = 0, j = *n; i + 1 < j; i++, j--) {
        fb_event_t tmp = (*out)[i];
        (*out)[i] = (*out)[j - 1];
        (*out)[j - 1] = tmp;
    }
    return 0;
}

/* ---- members ---- */

static int sq_member_add(fb_store_t *base, int64_t room_id, int64_t user_id, int role,
                         int64_t joined)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_MEMBER_ADD, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, room_id);
    sqlite3_bind_int64(st, 2, user_id);
    sqlite3_bind_int(st, 3, role);
    sqlite3_bind_int64(st, 4, joined);
    return sq_write(s, ST_MEMBER_ADD, st, NULL);
}

/* A member-row UPDATE that only matches a current member. */
static int sq_member_update(sq_store_t *s, int id, int64_t room_id, int64_t user_id, int64_t v)
{
    sqlite3_stmt *st;
    int changes = 0;
    int err = sq_stmt(s, id, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, room_id);
    sqlite3_bind_int64(st, 2, user_id);
    sqlite3_bind_int64(st, 3, v);
    err = sq_write(s, id, st, &changes);
    if (!err && changes == 0) err = FB_ENOTFOUND;
    return err;
}

static int sq_member_remove(fb_store_t *base, int64_t room_id, int64_t user_id, int64_t left_seq)
{
    return sq_member_update(sq(base), ST_MEMBER_REMOVE, room_id, user_id, left_seq);
}

static int sq_member_set_role(fb_store_t *base, int64_t room_id, int64_t user_id, int role)
{
    return sq_member_update(sq(base), ST_MEMBER_SET_ROLE, room_id, user_id, role);
}

static int sq_member_get(fb_store_t *base, int64_t room_id, int64_t user_id, fb_member_t *out)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_MEMBER_GET, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, room_id);
    sqlite3_bind_int64(st, 2, user_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        member_read(st, 0, out);
    else if (rc == SQLITE_DONE)
        err = FB_ENOTFOUND;
    else
        err = sq_fail(s, rc, "member_get");
    sq_done(st);
    return err;
}

static int sq_members_list(fb_store_t *base, int64_t room_id, fb_member_t **out, size_t *n)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    fb_member_t *arr = NULL;
    size_t len = 0, cap = 0;
    int rc, err = sq_stmt(s, ST_MEMBERS_LIST, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, room_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        arr = grow(arr, &cap, len, sizeof *arr);
        memset(&arr[len], 0, sizeof arr[len]);
        member_read(st, 0, &arr[len++]);
    }
    if (rc != SQLITE_DONE) {
        err = sq_fail(s, rc, "members_list");
        fb_members_free(arr, len);
        arr = NULL;
        len = 0;
    }
    sq_done(st);
    *out = arr;
    *n = len;
    return err;
}

/* A cached query of (?1[, ?2]) answering one integer; FB_ENOTFOUND without a row. */
static int sq_int_of(sq_store_t *s, int id, int64_t a, int64_t b, int64_t *out)
{
    sqlite3_stmt *st;
    int err = sq_stmt(s, id, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, a);
    if (sqlite3_bind_parameter_count(st) > 1) sqlite3_bind_int64(st, 2, b);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    else if (rc == SQLITE_DONE)
        err = FB_ENOTFOUND;
    else
        err = sq_fail(s, rc, stmt_name[id]);
    sq_done(st);
    return err;
}

static int sq_read_marker_set(fb_store_t *base, int64_t room_id, int64_t user_id, int64_t seq,
                              bool *advanced)
{
    sq_store_t *s = sq(base);
    int err = sq_member_update(s, ST_READ_MARKER, room_id, user_id, seq);
    if (err != FB_ENOTFOUND) {
        *advanced = err == 0;
        return err;
    }
    /* Nothing moved: either the marker was already there, or no member. */
    int64_t now;
    return sq_int_of(s, ST_MEMBER_READ_SEQ, room_id, user_id, &now);
}

static int sq_rooms_for_user(fb_store_t *base, int64_t user_id, fb_room_summary_t **out, size_t *n)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    fb_room_summary_t *arr = NULL;
    size_t len = 0, cap = 0;
    int rc, err = sq_stmt(s, ST_ROOMS_FOR_USER, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, user_id);
    /* columns: 0-5 the room, 6-12 me (MEMBER_COLS), 13 member count,
     * 14 unread, 15-25 the last text (EV_COLS, all NULL when none) */
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        arr = grow(arr, &cap, len, sizeof *arr);
        fb_room_summary_t *r = &arr[len++];
        memset(r, 0, sizeof *r);
        r->room.id = sqlite3_column_int64(st, 0);
        r->room.kind = sqlite3_column_int(st, 1);
        r->room.name = col_str(st, 2);
        r->room.owner_id = sqlite3_column_int64(st, 3);
        r->room.last_seq = sqlite3_column_int64(st, 4);
        r->room.created_ms = sqlite3_column_int64(st, 5);
        member_read(st, 6, &r->me);
        r->member_count = sqlite3_column_int(st, 13);
        r->unread = sqlite3_column_int64(st, 14);
        r->has_last = sqlite3_column_type(st, 15) != SQLITE_NULL;
        if (r->has_last) ev_read(st, 15, &r->last);
    }
    if (rc != SQLITE_DONE) {
        err = sq_fail(s, rc, "rooms_for_user");
        fb_room_summaries_free(arr, len);
        arr = NULL;
        len = 0;
    }
    sq_done(st);
    *out = arr;
    *n = len;
    return err;
}

/* ---- sends in bulk ----
 * A run of sends as store.h defines it, item after item, but each statement
 * that the generic path runs per item is run here once per room or per
 * sender of the call: the membership row and the room's last_seq are read
 * when first needed, seqs are numbered from them in memory, and rooms.last_seq
 * and the senders' read markers are written back once at the end. An item
 * costs one one-row insert; a refused one (a retry) leaves nothing to undo,
 * so no item needs a savepoint. Nothing else writes these rows while the
 * call runs: the writer holds SQLite's only write transaction. */

static void seen_reset(sq_store_t *s, size_t n)
{
    /* at most one room entry and one sender entry per item; load <= 1/2 */
    size_t want = 8;
    while (want < 4 * n)
        want *= 2;
    if (s->cap_seen < 2 * n) {
        s->cap_seen = 2 * n;
        fb_free(s->seen);
        s->seen = fb_malloc(s->cap_seen * sizeof *s->seen);
    }
    if (s->cap_ix < want) {
        s->cap_ix = want;
        fb_free(s->seen_ix);
        s->seen_ix = fb_malloc(s->cap_ix * sizeof *s->seen_ix);
    }
    memset(s->seen_ix, 0, want * sizeof *s->seen_ix);
    s->seen_mask = want - 1;
    s->n_seen = 0;
}

/* The entry of (room, actor); a new one (*fresh) has v and v0 still to fill. */
static sq_seen_t *seen_find(sq_store_t *s, int64_t room, int64_t actor, bool *fresh)
{
    uint64_t h = (uint64_t)room * 0x9E3779B97F4A7C15u ^ (uint64_t)actor * 0xC2B2AE3D27D4EB4Fu;
    h ^= h >> 31;
    for (size_t i = h & s->seen_mask;; i = (i + 1) & s->seen_mask) {
        uint32_t k = s->seen_ix[i];
        if (k == 0) {
            sq_seen_t *e = &s->seen[s->n_seen++];
            *e = (sq_seen_t){.room = room, .actor = actor};
            s->seen_ix[i] = (uint32_t)s->n_seen;
            *fresh = true;
            return e;
        }
        sq_seen_t *e = &s->seen[k - 1];
        if (e->room == room && e->actor == actor) {
            *fresh = false;
            return e;
        }
    }
}

/* Stores it as a text event with seq; FB_EEXIST: the device already sent its cmid. */
static int sq_send_put(sq_store_t *s, const fb_send_t *it, int64_t seq)
{
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_EVENT_PUT, &st);
    if (err) return err;
    sqlite3_bind_int64(st, 1, it->room_id);
    sqlite3_bind_int64(st, 2, seq);
    sqlite3_bind_int64(st, 3, it->ts_ms);
    sqlite3_bind_int64(st, 4, it->actor_id);
    sqlite3_bind_int64(st, 5, it->actor_device);
    bind_text(st, 6, it->cmid);
    bind_text(st, 7, it->text);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_CONSTRAINT_UNIQUE)
        err = FB_EEXIST; /* the unique index on (device, cmid) is the idempotency check */
    else if (rc != SQLITE_DONE)
        err = sq_fail(s, rc, "send_many");
    sq_done(st);
    return err;
}

/* Answers a retry from its original (the one lookup by cmid the store has),
 * or refuses a non-member. */
static int sq_send_refused(sq_store_t *s, fb_send_t *it, bool member)
{
    fb_event_t old = {0};
    int err = sq_event_by_cmid(&s->base, it->actor_device, it->cmid, &old);
    if (!err) {
        it->err = FB_EEXIST;
        it->room_id = old.room_id;
        it->seq = old.seq;
        it->ts_ms = old.ts_ms;
        fb_event_clear(&old);
    } else if (err == FB_ENOTFOUND) {
        /* not a retry; a member's insert can only have failed as one */
        err = member ? FB_EINTERNAL : 0;
        if (!member) it->err = FB_ENOTMEMBER;
    }
    return err;
}

static int sq_send_one(sq_store_t *s, fb_send_t *it)
{
    bool fresh;
    int err = 0;
    sq_seen_t *me = seen_find(s, it->room_id, it->actor_id, &fresh);
    if (fresh) {
        err = sq_int_of(s, ST_MEMBER_READ_SEQ, it->room_id, it->actor_id, &me->v);
        if (err == FB_ENOTFOUND)
            me->v = -1;
        else if (err)
            return err;
        me->v0 = me->v;
    }
    bool member = me->v >= 0;
    if (member) {
        sq_seen_t *room = seen_find(s, it->room_id, 0, &fresh);
        if (fresh) {
            err = sq_int_of(s, ST_ROOM_LAST_SEQ, it->room_id, 0, &room->v);
            if (err) return err == FB_ENOTFOUND ? FB_EINTERNAL : err; /* a member's room exists */
            room->v0 = room->v;
        }
        err = sq_send_put(s, it, room->v + 1);
        if (!err) {
            it->seq = ++room->v;
            it->old_read_seq = me->v;
            me->v = FB_MAX(me->v, it->seq); /* sending marks read */
            return 0;
        }
        if (err != FB_EEXIST) return err;
    }
    return sq_send_refused(s, it, member);
}

/* Writes back what the call moved: each room's last_seq, each sender's marker. */
static int sq_send_flush(sq_store_t *s)
{
    int err = 0;
    for (size_t i = 0; i < s->n_seen && !err; i++) {
        const sq_seen_t *e = &s->seen[i];
        if (e->v == e->v0) continue;
        if (e->actor == 0)
            err = sq_room_bump(s, e->room, e->v);
        else
            err = sq_member_update(s, ST_READ_MARKER, e->room, e->actor, e->v);
        if (err == FB_ENOTFOUND) err = FB_EINTERNAL; /* the row was read by this call */
    }
    return err;
}

static int sq_send_many(fb_store_t *base, fb_send_t *items, size_t n)
{
    sq_store_t *s = sq(base);
    /* Outside a transaction the call is one, so it is stored whole or not at all. */
    bool own = sqlite3_get_autocommit(s->db);
    int err = own ? sq_exec(s, ST_BEGIN_WRITE) : 0;
    if (err) return err;
    seen_reset(s, n);
    for (size_t i = 0; i < n && !err; i++)
        err = sq_send_one(s, &items[i]);
    /* Even after a failure, write back what the stored items moved: a caller
     * that commits anyway must still find every room gapless. */
    if (!sqlite3_get_autocommit(s->db)) {
        int ferr = sq_send_flush(s);
        if (!err) err = ferr;
    }
    if (own && !sqlite3_get_autocommit(s->db)) {
        if (err)
            sq_exec(s, ST_ROLLBACK);
        else
            err = sq_exec(s, ST_COMMIT);
    }
    return err;
}

/* One seek per room: a SQLite store has a single node, so this only serves
 * a caller that treats both backends alike. A room that does not exist has
 * not moved. */
static int sq_rooms_last_seq(fb_store_t *base, fb_change_t *known, size_t n)
{
    sq_store_t *s = sq(base);
    sqlite3_stmt *st;
    int err = sq_stmt(s, ST_ROOM_LAST_SEQ, &st);
    if (err) return err;
    for (size_t i = 0; i < n && !err; i++) {
        known[i].from_seq = known[i].to_seq;
        sqlite3_bind_int64(st, 1, known[i].room_id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            known[i].to_seq = sqlite3_column_int64(st, 0);
        else if (rc != SQLITE_DONE)
            err = sq_fail(s, rc, "rooms_last_seq");
        sqlite3_reset(st);
    }
    sq_done(st);
    return err;
}

const fb_store_ops_t fb_store_sqlite_ops = {
    .kind = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .schema_version = sq_schema_version,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .savepoint = sq_savepoint,
    .release = sq_release,
    .rollback_to = sq_rollback_to,
    .user_create = sq_user_create,
    .user_by_name = sq_user_by_name,
    .user_by_id = sq_user_by_id,
    .device_create = sq_device_create,
    .device_by_token = sq_device_by_token,
    .device_revoke = sq_device_revoke,
    .devices_list = sq_devices_list,
    .room_create = sq_room_create,
    .room_by_direct_key = sq_room_by_direct_key,
    .room_get = sq_room_get,
    .room_set_name = sq_room_set_name,
    .room_set_owner = sq_room_set_owner,
    .event_append = sq_event_append,
    .event_by_cmid = sq_event_by_cmid,
    .events_after = sq_events_after,
    .events_before = sq_events_before,
    .member_add = sq_member_add,
    .member_remove = sq_member_remove,
    .member_set_role = sq_member_set_role,
    .member_get = sq_member_get,
    .members_list = sq_members_list,
    .read_marker_set = sq_read_marker_set,
    .rooms_for_user = sq_rooms_for_user,
    .send_many = sq_send_many,
    /* announce: a no-op; no feed. */
    .rooms_last_seq = sq_rooms_last_seq,
};
