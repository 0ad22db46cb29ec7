/* Unit tests of the store contract (store.h), run once against each
 * backend: SQLite on a fresh file in its own temporary directory, and
 * PostgreSQL on a fresh database of the test run's throwaway server
 * (FIREBREAK_TEST_PG, see tests/common/pg.h). Tests of what only one
 * backend has (SQLite's file, PostgreSQL's feed, failover and synchronous
 * replication) run in that backend's group only. They must never depend on
 * each other or on anything outside their own directory or database.
 * SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/fb.h"
#include "common/pg.h"
#include "store/sqlite_vfs.h"
#include "store/store.h"

typedef struct {
    bool pg;
    char dir[64];
    char path[128];
    char conninfo[512];
    fb_store_config_t cfg;
    fb_store_t *s;
    size_t mem0;
} fx_t;

static int setup_sqlite(void **state)
{
    /* plain calloc: the fixture must not count against fb_mem_in_use */
    fx_t *fx = calloc(1, sizeof *fx);
    if (!fx) return -1;
    strcpy(fx->dir, "/tmp/fb_store_test_XXXXXX");
    if (!mkdtemp(fx->dir)) return -1;
    snprintf(fx->path, sizeof fx->path, "%s/fb.db", fx->dir);
    fx->cfg.kind = "sqlite";
    fx->cfg.path = fx->path;
    fx->mem0 = fb_mem_in_use();
    if (fb_store_open(&fx->cfg, &fx->s) != 0) return -1;
    *state = fx;
    return 0;
}

static int setup_pg(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (!fx) return -1;
    fx->pg = true;
    *state = fx;
    if (fb_test_pg_db_new(NULL, fx->conninfo, sizeof fx->conninfo) != 0) return -1;
    fx->cfg.kind = "postgres";
    fx->cfg.conninfo = fx->conninfo;
    fx->mem0 = fb_mem_in_use();
    return fb_store_open(&fx->cfg, &fx->s) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    int rc = 0;
    fb_store_close(fx->s);
    if (fb_mem_in_use() != fx->mem0) {
        fprintf(stderr, "leak: %zu bytes still in use\n", fb_mem_in_use() - fx->mem0);
        rc = -1;
    }
    if (fx->pg) {
        fb_test_pg_db_drop(fx->conninfo);
    } else {
        /* none.db exists only if test_open_errors found a reader creating files */
        const char *names[] = {"fb.db", "fb.db-wal", "fb.db-shm", "none.db"};
        char p[160];
        for (size_t i = 0; i < FB_ARRAY_LEN(names); i++) {
            snprintf(p, sizeof p, "%s/%s", fx->dir, names[i]);
            unlink(p);
        }
        rmdir(fx->dir);
    }
    free(fx);
    return rc;
}

/* ---- helpers ---- */

static void reopen(fx_t *fx)
{
    fb_store_close(fx->s);
    fx->s = NULL;
    assert_int_equal(fb_store_open(&fx->cfg, &fx->s), 0);
}

static int64_t mk_user(fb_store_t *s, const char *name)
{
    int64_t id = 0;
    assert_int_equal(fb_store_user_create(s, name, "$argon2id$fake", 1000, &id), 0);
    assert_true(id > 0);
    return id;
}

static void token(uint8_t out[32], int n)
{
    for (int i = 0; i < 32; i++)
        out[i] = (uint8_t)(n * 31 + i);
}

static int64_t mk_device(fb_store_t *s, int64_t user, int n)
{
    uint8_t t[32];
    int64_t id = 0;
    token(t, n);
    assert_int_equal(fb_store_device_create(s, user, "phone", t, 1000, 9000, &id), 0);
    assert_true(id > 0);
    return id;
}

static int64_t append(fb_store_t *s, int64_t room, int kind, int64_t actor, int64_t device,
                      int64_t target, const char *cmid, const char *text, int64_t ts)
{
    fb_event_t ev = {.room_id = room,
                     .ts_ms = ts,
                     .kind = kind,
                     .actor_id = actor,
                     .actor_device = device,
                     .target_id = target,
                     .cmid = (char *)cmid,
                     .text = (char *)text};
    assert_int_equal(fb_store_event_append(s, &ev), 0);
    assert_true(ev.seq > 0);
    return ev.seq;
}

static int64_t text(fb_store_t *s, int64_t room, int64_t actor, int64_t device, const char *cmid,
                    int64_t ts)
{
    return append(s, room, FB_EV_TEXT, actor, device, 0, cmid, cmid, ts);
}

/* A group room: create event (seq 1) with owner as member, then members joined. */
static int64_t mk_group(fb_store_t *s, int64_t owner, const char *name, int64_t ts)
{
    int64_t room = 0;
    assert_int_equal(fb_store_room_create(s, FB_ROOM_GROUP, name, owner, NULL, ts, &room), 0);
    int64_t seq = append(s, room, FB_EV_CREATE, owner, 0, 0, NULL, name, ts);
    assert_int_equal(seq, 1);
    assert_int_equal(fb_store_member_add(s, room, owner, FB_ROLE_OWNER, seq), 0);
    return room;
}

static int64_t join(fb_store_t *s, int64_t room, int64_t by, int64_t user, int64_t ts)
{
    int64_t seq = append(s, room, FB_EV_JOIN, by, 0, user, NULL, NULL, ts);
    assert_int_equal(fb_store_member_add(s, room, user, FB_ROLE_MEMBER, seq), 0);
    return seq;
}

static int64_t last_seq(fb_store_t *s, int64_t room)
{
    fb_room_t r;
    assert_int_equal(fb_store_room_get(s, room, &r), 0);
    int64_t v = r.last_seq;
    fb_room_clear(&r);
    return v;
}

static size_t count_events(fb_store_t *s, int64_t room)
{
    fb_event_t *evs;
    size_t n;
    assert_int_equal(fb_store_events_after(s, room, 0, 0, 1000000, &evs, &n), 0);
    fb_events_free(evs, n);
    return n;
}

static int64_t raw_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t v = -1;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* ---- lifetime and migrations ---- */

static void test_sqlite_migrations(void **state)
{
    fx_t *fx = *state;
    int v = 0;
    assert_int_equal(fb_store_schema_version(fx->s, &v), 0);
    assert_int_equal(v, 1);
    int64_t alice = mk_user(fx->s, "alice");

    /* Reopening an up-to-date file applies nothing: re-running migration 1
     * would fail on its CREATE TABLEs, and the data stays. */
    reopen(fx);
    assert_int_equal(fb_store_schema_version(fx->s, &v), 0);
    assert_int_equal(v, 1);
    fb_user_t u;
    assert_int_equal(fb_store_user_by_id(fx->s, alice, &u), 0);
    assert_string_equal(u.name, "alice");
    fb_user_clear(&u);

    /* The file itself: WAL and the recorded version. */
    assert_int_equal(raw_int(fx->path, "PRAGMA user_version"), 1);
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);

    /* A reader on the writer's file sees its schema and data. */
    fb_store_t *r = NULL;
    assert_int_equal(fb_store_open_reader(&fx->cfg, &r), 0);
    assert_int_equal(fb_store_schema_version(r, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(fb_store_user_by_name(r, "alice", &u), 0);
    assert_int_equal(u.id, alice);
    fb_user_clear(&u);
    /* ... and cannot write. */
    int64_t id = 0;
    assert_true(fb_store_user_create(r, "bob", "h", 1, &id) < 0);
    fb_store_close(r);
}

static void test_sqlite_open_errors(void **state)
{
    fx_t *fx = *state;
    fb_store_t *s = NULL;
    fb_store_config_t bad = {.kind = "oracle", .path = fx->path};
    assert_int_equal(fb_store_open(&bad, &s), FB_EINVAL);
    assert_null(s);

    /* A reader on a file nobody created fails instead of creating it. */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/none.db", fx->dir);
    fb_store_config_t nofile = {.kind = "sqlite", .path = missing};
    assert_true(fb_store_open_reader(&nofile, &s) < 0);
    assert_null(s);
    assert_int_equal(access(missing, F_OK), -1);

    /* A file from a newer build is refused, not downgraded. */
    fb_store_close(fx->s);
    fx->s = NULL;
    assert_int_equal(raw_int(fx->path, "PRAGMA user_version = 99"), -1);
    assert_int_equal(fb_store_open(&fx->cfg, &s), FB_ESTATE);
    assert_null(s);
    assert_int_equal(raw_int(fx->path, "PRAGMA user_version = 1"), -1);
    assert_int_equal(fb_store_open(&fx->cfg, &fx->s), 0);
}

/* ---- accounts ---- */

static void test_users(void **state)
{
    fx_t *fx = *state;
    int64_t a = 0, b = 0, dup = 0;
    assert_int_equal(fb_store_user_create(fx->s, "alice", "hash-a", 111, &a), 0);
    assert_int_equal(fb_store_user_create(fx->s, "bob", "hash-b", 222, &b), 0);
    assert_true(a > 0 && b > 0 && a != b);
    assert_int_equal(fb_store_user_create(fx->s, "alice", "other", 333, &dup), FB_ENAMETAKEN);

    fb_user_t u;
    assert_int_equal(fb_store_user_by_name(fx->s, "bob", &u), 0);
    assert_int_equal(u.id, b);
    assert_string_equal(u.name, "bob");
    assert_string_equal(u.pwhash, "hash-b");
    assert_int_equal(u.created_ms, 222);
    fb_user_clear(&u);
    assert_null(u.name);

    assert_int_equal(fb_store_user_by_id(fx->s, a, &u), 0);
    assert_string_equal(u.name, "alice");
    assert_string_equal(u.pwhash, "hash-a");
    fb_user_clear(&u);

    assert_int_equal(fb_store_user_by_name(fx->s, "carol", &u), FB_ENOTFOUND);
    assert_int_equal(fb_store_user_by_name(fx->s, "ALICE", &u), FB_ENOTFOUND);
    assert_int_equal(fb_store_user_by_id(fx->s, 9999, &u), FB_ENOTFOUND);
    fb_user_clear(&u);
}

static void test_devices(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t bob = mk_user(fx->s, "bob");
    int64_t d1 = mk_device(fx->s, alice, 1);
    int64_t d2 = mk_device(fx->s, alice, 2);
    int64_t d3 = mk_device(fx->s, bob, 3);
    assert_true(d1 != d2 && d2 != d3);

    /* one token, one device */
    uint8_t t[32];
    int64_t id = 0;
    token(t, 1);
    assert_true(fb_store_device_create(fx->s, bob, "x", t, 1, 2, &id) < 0);
    /* a device of nobody */
    token(t, 77);
    assert_int_equal(fb_store_device_create(fx->s, 4242, "x", t, 1, 2, &id), FB_ENOTFOUND);

    fb_device_t d;
    token(t, 2);
    assert_int_equal(fb_store_device_by_token(fx->s, t, &d), 0);
    assert_int_equal(d.id, d2);
    assert_int_equal(d.user_id, alice);
    assert_string_equal(d.name, "phone");
    assert_int_equal(d.created_ms, 1000);
    assert_int_equal(d.expires_ms, 9000);
    assert_false(d.revoked);
    fb_device_clear(&d);
    token(t, 99);
    assert_int_equal(fb_store_device_by_token(fx->s, t, &d), FB_ENOTFOUND);

    /* only the owner can revoke, and only once */
    assert_int_equal(fb_store_device_revoke(fx->s, bob, d1), FB_ENOTFOUND);
    assert_int_equal(fb_store_device_revoke(fx->s, alice, d3), FB_ENOTFOUND);
    assert_int_equal(fb_store_device_revoke(fx->s, alice, 9999), FB_ENOTFOUND);
    assert_int_equal(fb_store_device_revoke(fx->s, alice, d1), 0);
    assert_int_equal(fb_store_device_revoke(fx->s, alice, d1), FB_ENOTFOUND);

    /* a revoked token is still recognised, as revoked */
    token(t, 1);
    assert_int_equal(fb_store_device_by_token(fx->s, t, &d), 0);
    assert_int_equal(d.id, d1);
    assert_true(d.revoked);
    fb_device_clear(&d);

    fb_device_t *ds;
    size_t n;
    assert_int_equal(fb_store_devices_list(fx->s, alice, &ds, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ds[0].id, d2);
    assert_int_equal(ds[0].user_id, alice);
    assert_string_equal(ds[0].name, "phone");
    fb_devices_free(ds, n);
    int64_t d4 = mk_device(fx->s, alice, 4);
    assert_int_equal(fb_store_devices_list(fx->s, alice, &ds, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ds[0].id, d2);
    assert_int_equal(ds[1].id, d4);
    fb_devices_free(ds, n);
    assert_int_equal(fb_store_devices_list(fx->s, 9999, &ds, &n), 0);
    assert_int_equal(n, 0);
    assert_null(ds);
}

/* ---- rooms ---- */

static void test_rooms(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t bob = mk_user(fx->s, "bob");
    int64_t g = 0, d = 0, other = 0, found = 0;
    assert_int_equal(fb_store_room_create(fx->s, FB_ROOM_GROUP, "Club", alice, NULL, 500, &g), 0);
    assert_int_equal(fb_store_room_create(fx->s, FB_ROOM_DIRECT, "", alice, "1:2", 600, &d), 0);
    assert_true(g > 0 && d > 0 && g != d);
    /* several groups have no direct key: NULL is not a duplicate */
    assert_int_equal(fb_store_room_create(fx->s, FB_ROOM_GROUP, NULL, bob, NULL, 700, &other), 0);
    /* one direct room per key */
    assert_true(fb_store_room_create(fx->s, FB_ROOM_DIRECT, "", bob, "1:2", 800, &found) < 0);
    assert_int_equal(fb_store_room_create(fx->s, 7, "x", bob, NULL, 800, &found), FB_EINVAL);

    assert_int_equal(fb_store_room_by_direct_key(fx->s, "1:2", &found), 0);
    assert_int_equal(found, d);
    assert_int_equal(fb_store_room_by_direct_key(fx->s, "2:1", &found), FB_ENOTFOUND);

    fb_room_t r;
    assert_int_equal(fb_store_room_get(fx->s, g, &r), 0);
    assert_int_equal(r.id, g);
    assert_int_equal(r.kind, FB_ROOM_GROUP);
    assert_string_equal(r.name, "Club");
    assert_int_equal(r.owner_id, alice);
    assert_int_equal(r.last_seq, 0);
    assert_int_equal(r.created_ms, 500);
    fb_room_clear(&r);
    assert_int_equal(fb_store_room_get(fx->s, d, &r), 0);
    assert_int_equal(r.kind, FB_ROOM_DIRECT);
    assert_string_equal(r.name, "");
    fb_room_clear(&r);
    assert_int_equal(fb_store_room_get(fx->s, other, &r), 0);
    assert_string_equal(r.name, "");
    fb_room_clear(&r);

    assert_int_equal(fb_store_room_set_name(fx->s, g, "Book club"), 0);
    assert_int_equal(fb_store_room_set_owner(fx->s, g, bob), 0);
    assert_int_equal(fb_store_room_get(fx->s, g, &r), 0);
    assert_string_equal(r.name, "Book club");
    assert_int_equal(r.owner_id, bob);
    fb_room_clear(&r);
    assert_int_equal(fb_store_room_set_owner(fx->s, g, 0), 0);
    assert_int_equal(fb_store_room_get(fx->s, g, &r), 0);
    assert_int_equal(r.owner_id, 0);
    fb_room_clear(&r);

    assert_int_equal(fb_store_room_get(fx->s, 9999, &r), FB_ENOTFOUND);
    assert_int_equal(fb_store_room_set_name(fx->s, 9999, "x"), FB_ENOTFOUND);
    assert_int_equal(fb_store_room_set_owner(fx->s, 9999, alice), FB_ENOTFOUND);
}

/* ---- events ---- */

static void test_seq_gapless(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t dev = mk_device(fx->s, alice, 1);
    assert_int_equal(fb_store_begin(fx->s), 0);
    int64_t ra = mk_group(fx->s, alice, "a", 1);
    int64_t rb = mk_group(fx->s, alice, "b", 1);
    assert_int_equal(fb_store_commit(fx->s), 0);

    /* interleaved rooms in one big transaction, as a group commit does */
    char cmid[32];
    int64_t want_a = 1, want_b = 1;
    assert_int_equal(fb_store_begin(fx->s), 0);
    for (int i = 0; i < 3000; i++) {
        snprintf(cmid, sizeof cmid, "m%d", i);
        bool to_a = i % 3 != 0;
        int64_t seq = text(fx->s, to_a ? ra : rb, alice, dev, cmid, i);
        assert_int_equal(seq, to_a ? ++want_a : ++want_b);
    }
    assert_int_equal(fb_store_commit(fx->s), 0);

    /* and across many small transactions */
    for (int t = 0; t < 20; t++) {
        assert_int_equal(fb_store_begin(fx->s), 0);
        for (int i = 0; i < 5; i++) {
            snprintf(cmid, sizeof cmid, "t%d.%d", t, i);
            assert_int_equal(text(fx->s, ra, alice, dev, cmid, 5000 + t), ++want_a);
        }
        assert_int_equal(fb_store_commit(fx->s), 0);
    }
    /* and outside any transaction (autocommit) */
    assert_int_equal(text(fx->s, rb, alice, dev, "solo", 9000), ++want_b);

    assert_int_equal(last_seq(fx->s, ra), want_a);
    assert_int_equal(last_seq(fx->s, rb), want_b);
    assert_int_equal(want_a, 1 + 2000 + 100);
    assert_int_equal(want_b, 1 + 1000 + 1);

    /* what is stored is exactly 1..last_seq */
    int64_t rooms[2] = {ra, rb}, lasts[2] = {want_a, want_b};
    for (int r = 0; r < 2; r++) {
        fb_event_t *evs;
        size_t n;
        assert_int_equal(fb_store_events_after(fx->s, rooms[r], 0, 0, 100000, &evs, &n), 0);
        assert_int_equal(n, lasts[r]);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(evs[i].seq, (int64_t)i + 1);
            assert_int_equal(evs[i].room_id, rooms[r]);
        }
        fb_events_free(evs, n);
    }

    fb_event_t ev = {.room_id = 9999, .kind = FB_EV_TEXT, .actor_id = alice, .ts_ms = 1};
    assert_int_equal(fb_store_event_append(fx->s, &ev), FB_ENOTFOUND);
    assert_int_equal(ev.seq, 0);
}

static void test_cmid_idempotency(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t d1 = mk_device(fx->s, alice, 1);
    int64_t d2 = mk_device(fx->s, alice, 2);
    int64_t room = mk_group(fx->s, alice, "r", 1);
    int64_t seq = append(fx->s, room, FB_EV_TEXT, alice, d1, 0, "c-1", "hello", 1234);
    assert_int_equal(seq, 2);

    fb_event_t e;
    assert_int_equal(fb_store_event_by_cmid(fx->s, d1, "c-1", &e), 0);
    assert_int_equal(e.room_id, room);
    assert_int_equal(e.seq, 2);
    assert_int_equal(e.ts_ms, 1234);
    assert_int_equal(e.kind, FB_EV_TEXT);
    assert_int_equal(e.actor_id, alice);
    assert_int_equal(e.actor_device, d1);
    assert_int_equal(e.target_id, 0);
    assert_string_equal(e.cmid, "c-1");
    assert_string_equal(e.text, "hello");
    assert_string_equal(e.actor_name, "alice");
    assert_null(e.target_name);
    fb_event_clear(&e);
    assert_int_equal(fb_store_event_by_cmid(fx->s, d2, "c-1", &e), FB_ENOTFOUND);
    assert_int_equal(fb_store_event_by_cmid(fx->s, d1, "c-2", &e), FB_ENOTFOUND);

    /* a duplicate (device, cmid) is refused inside a transaction, and the
     * transaction goes on with no gap and nothing half done */
    assert_int_equal(fb_store_begin(fx->s), 0);
    fb_event_t dup = {.room_id = room,
                      .ts_ms = 2000,
                      .kind = FB_EV_TEXT,
                      .actor_id = alice,
                      .actor_device = d1,
                      .cmid = "c-1",
                      .text = "again"};
    assert_int_equal(fb_store_event_append(fx->s, &dup), FB_EEXIST);
    assert_int_equal(dup.seq, 0);
    assert_int_equal(last_seq(fx->s, room), 2);
    /* the same cmid from another device is another message */
    assert_int_equal(append(fx->s, room, FB_EV_TEXT, alice, d2, 0, "c-1", "other", 2001), 3);
    assert_int_equal(fb_store_commit(fx->s), 0);
    assert_int_equal(count_events(fx->s, room), 3);
    assert_int_equal(fb_store_event_by_cmid(fx->s, d1, "c-1", &e), 0);
    assert_string_equal(e.text, "hello");
    fb_event_clear(&e);

    /* non-text events carry no cmid and never collide */
    int64_t bob = mk_user(fx->s, "bob");
    join(fx->s, room, alice, bob, 3000);
    append(fx->s, room, FB_EV_RENAME, alice, 0, 0, NULL, "r2", 3001);
    assert_int_equal(last_seq(fx->s, room), 5);
}

static void test_rollback(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t dev = mk_device(fx->s, alice, 1);
    int64_t room = mk_group(fx->s, alice, "r", 1);
    assert_int_equal(text(fx->s, room, alice, dev, "keep", 2), 2);

    assert_int_equal(fb_store_begin(fx->s), 0);
    assert_int_equal(text(fx->s, room, alice, dev, "x1", 3), 3);
    assert_int_equal(text(fx->s, room, alice, dev, "x2", 4), 4);
    int64_t bob = mk_user(fx->s, "bob");
    assert_int_equal(last_seq(fx->s, room), 4);
    assert_int_equal(fb_store_rollback(fx->s), 0);

    assert_int_equal(last_seq(fx->s, room), 2);
    assert_int_equal(count_events(fx->s, room), 2);
    fb_event_t e;
    assert_int_equal(fb_store_event_by_cmid(fx->s, dev, "x1", &e), FB_ENOTFOUND);
    fb_user_t u;
    assert_int_equal(fb_store_user_by_id(fx->s, bob, &u), FB_ENOTFOUND);
    /* the next append reuses the rolled-back seq: no gap */
    assert_int_equal(text(fx->s, room, alice, dev, "x1", 5), 3);

    /* misuse is a state error, not a crash or a SQL error */
    assert_int_equal(fb_store_commit(fx->s), FB_ESTATE);
    assert_int_equal(fb_store_savepoint(fx->s), FB_ESTATE);
    assert_int_equal(fb_store_release(fx->s), FB_ESTATE);
    assert_int_equal(fb_store_rollback(fx->s), 0);
    assert_int_equal(fb_store_begin(fx->s), 0);
    assert_int_equal(fb_store_begin(fx->s), FB_ESTATE);
    assert_int_equal(fb_store_rollback_to(fx->s), FB_ESTATE);
    assert_int_equal(fb_store_commit(fx->s), 0);
}

static void test_savepoint(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t dev = mk_device(fx->s, alice, 1);
    int64_t room = mk_group(fx->s, alice, "r", 1);

    assert_int_equal(fb_store_begin(fx->s), 0);
    assert_int_equal(text(fx->s, room, alice, dev, "a", 2), 2);
    /* request 2 fails half way: undo only it */
    assert_int_equal(fb_store_savepoint(fx->s), 0);
    assert_int_equal(text(fx->s, room, alice, dev, "b", 3), 3);
    assert_int_equal(fb_store_room_set_name(fx->s, room, "bad"), 0);
    assert_int_equal(fb_store_rollback_to(fx->s), 0);
    assert_int_equal(last_seq(fx->s, room), 2);
    /* request 3 succeeds */
    assert_int_equal(fb_store_savepoint(fx->s), 0);
    assert_int_equal(text(fx->s, room, alice, dev, "c", 4), 3);
    assert_int_equal(fb_store_release(fx->s), 0);
    /* nested: the inner undo keeps the outer's work */
    assert_int_equal(fb_store_savepoint(fx->s), 0);
    assert_int_equal(text(fx->s, room, alice, dev, "d", 5), 4);
    assert_int_equal(fb_store_savepoint(fx->s), 0);
    assert_int_equal(text(fx->s, room, alice, dev, "e", 6), 5);
    assert_int_equal(fb_store_rollback_to(fx->s), 0);
    assert_int_equal(text(fx->s, room, alice, dev, "f", 7), 5);
    assert_int_equal(fb_store_release(fx->s), 0);
    assert_int_equal(fb_store_release(fx->s), FB_ESTATE);
    assert_int_equal(fb_store_commit(fx->s), 0);

    fb_event_t *evs;
    size_t n;
    assert_int_equal(fb_store_events_after(fx->s, room, 1, 0, 100, &evs, &n), 0);
    const char *want[] = {"a", "c", "d", "f"};
    assert_int_equal(n, FB_ARRAY_LEN(want));
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(evs[i].seq, (int64_t)i + 2);
        assert_string_equal(evs[i].text, want[i]);
    }
    fb_events_free(evs, n);
    fb_room_t r;
    assert_int_equal(fb_store_room_get(fx->s, room, &r), 0);
    assert_string_equal(r.name, "r");
    assert_int_equal(r.last_seq, 5);
    fb_room_clear(&r);
    fb_event_t e;
    assert_int_equal(fb_store_event_by_cmid(fx->s, dev, "b", &e), FB_ENOTFOUND);
    assert_int_equal(fb_store_event_by_cmid(fx->s, dev, "e", &e), FB_ENOTFOUND);

    /* rolling back the inner savepoint, then the outer, undoes both */
    assert_int_equal(fb_store_begin(fx->s), 0);
    assert_int_equal(fb_store_savepoint(fx->s), 0);
    assert_int_equal(text(fx->s, room, alice, dev, "h", 8), 6);
    assert_int_equal(fb_store_savepoint(fx->s), 0);
    assert_int_equal(text(fx->s, room, alice, dev, "i", 9), 7);
    assert_int_equal(fb_store_rollback_to(fx->s), 0);
    assert_int_equal(last_seq(fx->s, room), 6);
    assert_int_equal(fb_store_rollback_to(fx->s), 0);
    assert_int_equal(last_seq(fx->s, room), 5);
    assert_int_equal(fb_store_commit(fx->s), 0);
    assert_int_equal(fb_store_event_by_cmid(fx->s, dev, "h", &e), FB_ENOTFOUND);

    /* a savepoint rolled back then the whole transaction rolled back */
    assert_int_equal(fb_store_begin(fx->s), 0);
    assert_int_equal(fb_store_savepoint(fx->s), 0);
    assert_int_equal(text(fx->s, room, alice, dev, "g", 8), 6);
    assert_int_equal(fb_store_rollback(fx->s), 0);
    assert_int_equal(last_seq(fx->s, room), 5);
}

/* Savepoints with nothing in them, and savepoints around work already
 * done, in every order the writer can produce (a backend may hold control
 * statements back until the next statement: the outcome must not show it). */
static void test_savepoint_empty(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t dev = mk_device(fx->s, alice, 1);
    int64_t room = mk_group(fx->s, alice, "r", 1);
    assert_int_equal(fb_store_begin(fx->s), 0);
    assert_int_equal(fb_store_savepoint(fx->s), 0);
    assert_int_equal(fb_store_release(fx->s), 0);
    assert_int_equal(fb_store_savepoint(fx->s), 0);
    assert_int_equal(fb_store_savepoint(fx->s), 0);
    assert_int_equal(fb_store_rollback_to(fx->s), 0);
    assert_int_equal(fb_store_release(fx->s), 0);
    assert_int_equal(fb_store_release(fx->s), FB_ESTATE);
    assert_int_equal(fb_store_commit(fx->s), 0);

    assert_int_equal(fb_store_begin(fx->s), 0);
    assert_int_equal(text(fx->s, room, alice, dev, "a", 2), 2);
    assert_int_equal(fb_store_savepoint(fx->s), 0);
    assert_int_equal(text(fx->s, room, alice, dev, "b", 3), 3);
    assert_int_equal(fb_store_savepoint(fx->s), 0); /* empty, inside one with work */
    assert_int_equal(fb_store_rollback_to(fx->s), 0);
    assert_int_equal(fb_store_rollback_to(fx->s), 0); /* undoes b */
    assert_int_equal(fb_store_savepoint(fx->s), 0);
    assert_int_equal(fb_store_release(fx->s), 0);
    assert_int_equal(fb_store_savepoint(fx->s), 0);
    assert_int_equal(text(fx->s, room, alice, dev, "c", 4), 3);
    assert_int_equal(fb_store_release(fx->s), 0);
    assert_int_equal(fb_store_savepoint(fx->s), 0); /* left open at commit */
    assert_int_equal(fb_store_commit(fx->s), 0);
    fb_event_t *evs;
    size_t n;
    assert_int_equal(fb_store_events_after(fx->s, room, 1, 0, 10, &evs, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(evs[0].text, "a");
    assert_string_equal(evs[1].text, "c");
    fb_events_free(evs, n);
    /* a transaction with nothing in it rolls back cleanly too */
    assert_int_equal(fb_store_begin(fx->s), 0);
    assert_int_equal(fb_store_savepoint(fx->s), 0);
    assert_int_equal(fb_store_rollback(fx->s), 0);
    assert_int_equal(last_seq(fx->s, room), 3);
}

static void assert_seqs(fb_event_t *evs, size_t n, int64_t first, int64_t last)
{
    assert_int_equal(n, last - first + 1);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(evs[i].seq, first + (int64_t)i);
    fb_events_free(evs, n);
}

static void test_events_paging(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t bob = mk_user(fx->s, "bob");
    int64_t dev = mk_device(fx->s, alice, 1);
    int64_t room = mk_group(fx->s, alice, "r", 100); /* seq 1 */
    join(fx->s, room, alice, bob, 101);              /* seq 2 */
    char cmid[16];
    for (int i = 3; i <= 10; i++) {
        snprintf(cmid, sizeof cmid, "m%d", i);
        assert_int_equal(text(fx->s, room, alice, dev, cmid, 100 + i), i);
    }
    int64_t other = mk_group(fx->s, bob, "o", 200); /* must not leak in */
    text(fx->s, other, bob, 0, NULL, 201);

    fb_event_t *evs;
    size_t n;
    /* after */
    assert_int_equal(fb_store_events_after(fx->s, room, 0, 0, 100, &evs, &n), 0);
    assert_int_equal(n, 10);
    assert_int_equal(evs[0].kind, FB_EV_CREATE);
    assert_string_equal(evs[0].text, "r");
    assert_string_equal(evs[0].actor_name, "alice");
    assert_int_equal(evs[1].kind, FB_EV_JOIN);
    assert_int_equal(evs[1].target_id, bob);
    assert_string_equal(evs[1].target_name, "bob");
    assert_null(evs[1].cmid);
    assert_null(evs[1].text);
    assert_int_equal(evs[9].ts_ms, 110);
    assert_string_equal(evs[9].cmid, "m10");
    assert_int_equal(evs[9].actor_device, dev);
    assert_null(evs[9].target_name);
    assert_seqs(evs, n, 1, 10);
    assert_int_equal(fb_store_events_after(fx->s, room, 3, 0, 4, &evs, &n), 0);
    assert_seqs(evs, n, 4, 7);
    assert_int_equal(fb_store_events_after(fx->s, room, 3, 6, 100, &evs, &n), 0);
    assert_seqs(evs, n, 4, 6);
    assert_int_equal(fb_store_events_after(fx->s, room, 3, 6, 2, &evs, &n), 0);
    assert_seqs(evs, n, 4, 5);
    assert_int_equal(fb_store_events_after(fx->s, room, 9, 0, 100, &evs, &n), 0);
    assert_seqs(evs, n, 10, 10);
    assert_int_equal(fb_store_events_after(fx->s, room, 10, 0, 100, &evs, &n), 0);
    assert_int_equal(n, 0);
    assert_null(evs);
    assert_int_equal(fb_store_events_after(fx->s, room, 5, 5, 100, &evs, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(fb_store_events_after(fx->s, room, 0, 0, 0, &evs, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(fb_store_events_after(fx->s, room, 0, 0, -1, &evs, &n), FB_EINVAL);
    assert_int_equal(fb_store_events_after(fx->s, 9999, 0, 0, 10, &evs, &n), 0);
    assert_int_equal(n, 0);

    /* before: the newest `limit` below `before`, ascending */
    assert_int_equal(fb_store_events_before(fx->s, room, 11, 0, 3, &evs, &n), 0);
    assert_seqs(evs, n, 8, 10);
    assert_int_equal(fb_store_events_before(fx->s, room, 5, 0, 10, &evs, &n), 0);
    assert_seqs(evs, n, 1, 4);
    assert_int_equal(fb_store_events_before(fx->s, room, 11, 7, 10, &evs, &n), 0);
    assert_seqs(evs, n, 7, 10);
    assert_int_equal(fb_store_events_before(fx->s, room, 11, 7, 2, &evs, &n), 0);
    assert_seqs(evs, n, 9, 10);
    assert_int_equal(fb_store_events_before(fx->s, room, 8, 7, 5, &evs, &n), 0);
    assert_seqs(evs, n, 7, 7);
    assert_int_equal(fb_store_events_before(fx->s, room, 7, 7, 5, &evs, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(fb_store_events_before(fx->s, room, 1, 0, 5, &evs, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(fb_store_events_before(fx->s, room, INT64_MAX, 0, 1, &evs, &n), 0);
    assert_seqs(evs, n, 10, 10);
    assert_int_equal(fb_store_events_before(fx->s, room, 4, 1, 2, &evs, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(evs[0].kind, FB_EV_JOIN);
    assert_string_equal(evs[0].target_name, "bob");
    assert_string_equal(evs[1].text, "m3");
    assert_seqs(evs, n, 2, 3);
}

/* ---- members ---- */

static void test_members(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t bob = mk_user(fx->s, "bob");
    int64_t carol = mk_user(fx->s, "carol");
    int64_t dave = mk_user(fx->s, "dave");
    int64_t room = 0;
    assert_int_equal(fb_store_room_create(fx->s, FB_ROOM_GROUP, "r", alice, NULL, 1, &room), 0);
    /* order is joined_seq, then user id, whatever the insertion order */
    assert_int_equal(fb_store_member_add(fx->s, room, dave, FB_ROLE_MEMBER, 3), 0);
    assert_int_equal(fb_store_member_add(fx->s, room, carol, FB_ROLE_MEMBER, 2), 0);
    assert_int_equal(fb_store_member_add(fx->s, room, bob, FB_ROLE_MEMBER, 2), 0);
    assert_int_equal(fb_store_member_add(fx->s, room, alice, FB_ROLE_OWNER, 1), 0);
    assert_int_equal(fb_store_member_add(fx->s, room, 9999, FB_ROLE_MEMBER, 4), FB_ENOTFOUND);
    assert_int_equal(fb_store_member_add(fx->s, 9999, bob, FB_ROLE_MEMBER, 4), FB_ENOTFOUND);

    fb_member_t *ms;
    size_t n;
    assert_int_equal(fb_store_members_list(fx->s, room, &ms, &n), 0);
    assert_int_equal(n, 4);
    int64_t want[] = {alice, bob, carol, dave};
    const char *names[] = {"alice", "bob", "carol", "dave"};
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ms[i].user_id, want[i]);
        assert_string_equal(ms[i].user_name, names[i]);
        assert_int_equal(ms[i].room_id, room);
        assert_int_equal(ms[i].left_seq, 0);
        assert_int_equal(ms[i].read_seq, ms[i].joined_seq - 1);
    }
    assert_int_equal(ms[0].role, FB_ROLE_OWNER);
    assert_int_equal(ms[1].role, FB_ROLE_MEMBER);
    assert_int_equal(ms[3].joined_seq, 3);
    fb_members_free(ms, n);

    fb_member_t m;
    assert_int_equal(fb_store_member_get(fx->s, room, carol, &m), 0);
    assert_string_equal(m.user_name, "carol");
    assert_int_equal(m.joined_seq, 2);
    assert_int_equal(m.read_seq, 1);
    fb_member_clear(&m);

    /* bob reads to 6 and leaves at 7 */
    bool adv;
    assert_int_equal(fb_store_read_marker_set(fx->s, room, bob, 6, &adv), 0);
    assert_int_equal(fb_store_member_remove(fx->s, room, bob, 7), 0);
    assert_int_equal(fb_store_member_remove(fx->s, room, bob, 8), FB_ENOTFOUND);
    assert_int_equal(fb_store_member_remove(fx->s, room, 9999, 8), FB_ENOTFOUND);
    assert_int_equal(fb_store_member_get(fx->s, room, bob, &m), 0);
    assert_int_equal(m.left_seq, 7);
    assert_int_equal(m.read_seq, 6);
    fb_member_clear(&m);
    assert_int_equal(fb_store_members_list(fx->s, room, &ms, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ms[0].user_id, alice);
    assert_int_equal(ms[1].user_id, carol);
    assert_int_equal(ms[2].user_id, dave);
    fb_members_free(ms, n);
    assert_int_equal(fb_store_member_set_role(fx->s, room, bob, FB_ROLE_OWNER), FB_ENOTFOUND);

    /* re-added at 10: read_seq = max(6, 9) */
    assert_int_equal(fb_store_member_add(fx->s, room, bob, FB_ROLE_MEMBER, 10), 0);
    assert_int_equal(fb_store_member_get(fx->s, room, bob, &m), 0);
    assert_int_equal(m.joined_seq, 10);
    assert_int_equal(m.left_seq, 0);
    assert_int_equal(m.read_seq, 9);
    fb_member_clear(&m);
    /* carol reads to 20, leaves at 21, re-added at 15 (a lower join than her
     * marker cannot happen in practice, but the max must hold) */
    assert_int_equal(fb_store_read_marker_set(fx->s, room, carol, 20, &adv), 0);
    assert_int_equal(fb_store_member_remove(fx->s, room, carol, 21), 0);
    assert_int_equal(fb_store_member_add(fx->s, room, carol, FB_ROLE_OWNER, 15), 0);
    assert_int_equal(fb_store_member_get(fx->s, room, carol, &m), 0);
    assert_int_equal(m.read_seq, 20);
    assert_int_equal(m.role, FB_ROLE_OWNER);
    assert_int_equal(m.joined_seq, 15);
    fb_member_clear(&m);

    assert_int_equal(fb_store_members_list(fx->s, room, &ms, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(ms[0].user_id, alice);
    assert_int_equal(ms[1].user_id, dave);
    assert_int_equal(ms[2].user_id, bob);
    assert_int_equal(ms[3].user_id, carol);
    fb_members_free(ms, n);

    assert_int_equal(fb_store_member_set_role(fx->s, room, alice, FB_ROLE_MEMBER), 0);
    assert_int_equal(fb_store_member_get(fx->s, room, alice, &m), 0);
    assert_int_equal(m.role, FB_ROLE_MEMBER);
    fb_member_clear(&m);
    int64_t eve = mk_user(fx->s, "eve");
    assert_int_equal(fb_store_member_get(fx->s, room, eve, &m), FB_ENOTFOUND);
    assert_int_equal(fb_store_members_list(fx->s, 9999, &ms, &n), 0);
    assert_int_equal(n, 0);
}

static void test_read_marker(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t bob = mk_user(fx->s, "bob");
    int64_t room = mk_group(fx->s, alice, "r", 1);
    join(fx->s, room, alice, bob, 2); /* seq 2: bob's read_seq starts at 1 */

    bool adv = true;
    fb_member_t m;
    assert_int_equal(fb_store_read_marker_set(fx->s, room, bob, 1, &adv), 0);
    assert_false(adv);
    assert_int_equal(fb_store_read_marker_set(fx->s, room, bob, 3, &adv), 0);
    assert_true(adv);
    assert_int_equal(fb_store_read_marker_set(fx->s, room, bob, 2, &adv), 0);
    assert_false(adv);
    assert_int_equal(fb_store_read_marker_set(fx->s, room, bob, 3, &adv), 0);
    assert_false(adv);
    assert_int_equal(fb_store_member_get(fx->s, room, bob, &m), 0);
    assert_int_equal(m.read_seq, 3);
    fb_member_clear(&m);
    assert_int_equal(fb_store_read_marker_set(fx->s, room, bob, 7, &adv), 0);
    assert_true(adv);
    assert_int_equal(fb_store_member_get(fx->s, room, bob, &m), 0);
    assert_int_equal(m.read_seq, 7);
    fb_member_clear(&m);
    /* alice's marker is hers alone */
    assert_int_equal(fb_store_member_get(fx->s, room, alice, &m), 0);
    assert_int_equal(m.read_seq, 0);
    fb_member_clear(&m);

    int64_t carol = mk_user(fx->s, "carol");
    adv = true;
    assert_int_equal(fb_store_read_marker_set(fx->s, room, carol, 5, &adv), FB_ENOTFOUND);
    assert_false(adv);
    assert_int_equal(fb_store_read_marker_set(fx->s, 9999, bob, 5, &adv), FB_ENOTFOUND);
    /* a former member's marker no longer moves */
    assert_int_equal(fb_store_member_remove(fx->s, room, bob, 8), 0);
    assert_int_equal(fb_store_read_marker_set(fx->s, room, bob, 8, &adv), FB_ENOTFOUND);
    assert_int_equal(fb_store_read_marker_set(fx->s, room, bob, 2, &adv), FB_ENOTFOUND);
    assert_int_equal(fb_store_member_get(fx->s, room, bob, &m), 0);
    assert_int_equal(m.read_seq, 7);
    fb_member_clear(&m);
}

static void test_rooms_for_user(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t bob = mk_user(fx->s, "bob");
    int64_t carol = mk_user(fx->s, "carol");
    int64_t da = mk_device(fx->s, alice, 1);
    int64_t db = mk_device(fx->s, bob, 2);
    int64_t dc = mk_device(fx->s, carol, 3);

    /* r1: alice+bob, chatty, old */
    int64_t r1 = mk_group(fx->s, alice, "one", 100);
    join(fx->s, r1, alice, bob, 101);      /* 2 */
    text(fx->s, r1, alice, da, "1a", 102); /* 3 */
    text(fx->s, r1, bob, db, "1b", 103);   /* 4 */
    text(fx->s, r1, bob, db, "1c", 104);   /* 5 */
    /* r2: alice+carol, most recent text */
    int64_t r2 = mk_group(fx->s, carol, "two", 200);
    join(fx->s, r2, carol, alice, 201);                              /* 2 */
    text(fx->s, r2, carol, dc, "2a", 500);                           /* 3 */
    append(fx->s, r2, FB_EV_RENAME, carol, 0, 0, NULL, "two!", 600); /* 4: not a text */
    /* r3: alice alone, no text, created after r1's last text */
    int64_t r3 = mk_group(fx->s, alice, "three", 300);
    /* r4: alice was in it and left: not listed */
    int64_t r4 = mk_group(fx->s, bob, "four", 50);
    join(fx->s, r4, bob, alice, 51);
    text(fx->s, r4, bob, db, "4a", 9000);
    assert_int_equal(fb_store_member_remove(fx->s, r4, alice, 4), 0);
    /* r5: carol talks, then alice joins: the old text is not hers to see */
    int64_t r5 = mk_group(fx->s, carol, "five", 80);
    text(fx->s, r5, carol, dc, "5a", 8000); /* 2 */
    join(fx->s, r5, carol, alice, 81);      /* 3 */
    /* r6: same last-text time as r1's last, higher id: sorts before r1 */
    int64_t r6 = mk_group(fx->s, bob, "six", 10);
    join(fx->s, r6, bob, alice, 11);
    text(fx->s, r6, bob, db, "6a", 104);

    bool adv;
    assert_int_equal(fb_store_read_marker_set(fx->s, r1, alice, 4, &adv), 0);

    fb_room_summary_t *rs;
    size_t n;
    assert_int_equal(fb_store_rooms_for_user(fx->s, alice, &rs, &n), 0);
    /* r2 (500), r3 (created 300), r6 (104, id>r1), r1 (104), r5 (created 80) */
    assert_int_equal(n, 5);
    int64_t order[] = {r2, r3, r6, r1, r5};
    for (size_t i = 0; i < n; i++)
        assert_int_equal(rs[i].room.id, order[i]);

    fb_room_summary_t *s2 = &rs[0];
    assert_int_equal(s2->room.kind, FB_ROOM_GROUP);
    assert_string_equal(s2->room.name, "two");
    assert_int_equal(s2->room.owner_id, carol);
    assert_int_equal(s2->room.last_seq, 4);
    assert_int_equal(s2->member_count, 2);
    assert_int_equal(s2->unread, 1);
    assert_int_equal(s2->me.user_id, alice);
    assert_string_equal(s2->me.user_name, "alice");
    assert_int_equal(s2->me.joined_seq, 2);
    assert_int_equal(s2->me.read_seq, 1);
    assert_true(s2->has_last);
    assert_int_equal(s2->last.seq, 3);
    assert_int_equal(s2->last.kind, FB_EV_TEXT);
    assert_int_equal(s2->last.ts_ms, 500);
    assert_string_equal(s2->last.text, "2a");
    assert_string_equal(s2->last.actor_name, "carol");
    assert_int_equal(s2->last.actor_device, dc);

    fb_room_summary_t *s3 = &rs[1];
    assert_false(s3->has_last);
    assert_null(s3->last.text);
    assert_int_equal(s3->unread, 0);
    assert_int_equal(s3->member_count, 1);
    assert_int_equal(s3->me.role, FB_ROLE_OWNER);

    fb_room_summary_t *s1 = &rs[3];
    assert_int_equal(s1->member_count, 2);
    assert_int_equal(s1->me.read_seq, 4);
    assert_int_equal(s1->unread, 1); /* 1c; 1a is her own, 1b is read */
    assert_int_equal(s1->last.seq, 5);
    assert_string_equal(s1->last.cmid, "1c");
    assert_string_equal(s1->last.actor_name, "bob");

    fb_room_summary_t *s5 = &rs[4];
    assert_false(s5->has_last);
    assert_int_equal(s5->unread, 0);
    assert_int_equal(s5->me.joined_seq, 3);
    fb_room_summaries_free(rs, n);

    /* bob: r1 with his own texts not counted, r6, r4 (alice left it) */
    assert_int_equal(fb_store_rooms_for_user(fx->s, bob, &rs, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(rs[0].room.id, r4);
    assert_int_equal(rs[0].member_count, 1);
    assert_int_equal(rs[1].room.id, r6);
    assert_int_equal(rs[2].room.id, r1);
    assert_int_equal(rs[2].unread, 1); /* 1a only */
    fb_room_summaries_free(rs, n);

    /* a new text in r5 moves it to the top with one unread */
    text(fx->s, r5, carol, dc, "5b", 10000);
    assert_int_equal(fb_store_rooms_for_user(fx->s, alice, &rs, &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(rs[0].room.id, r5);
    assert_true(rs[0].has_last);
    assert_string_equal(rs[0].last.text, "5b");
    assert_int_equal(rs[0].unread, 1);
    fb_room_summaries_free(rs, n);

    int64_t nobody = mk_user(fx->s, "nobody");
    assert_int_equal(fb_store_rooms_for_user(fx->s, nobody, &rs, &n), 0);
    assert_int_equal(n, 0);
    assert_null(rs);
}

/* ---- readers and durability ---- */

static void test_reader_snapshot(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t dev = mk_device(fx->s, alice, 1);
    int64_t room = mk_group(fx->s, alice, "r", 1);

    fb_store_t *r = NULL;
    assert_int_equal(fb_store_open_reader(&fx->cfg, &r), 0);
    assert_int_equal(fb_store_begin(r), 0);
    /* the writer commits after the reader began: invisible to it */
    assert_int_equal(fb_store_begin(fx->s), 0);
    text(fx->s, room, alice, dev, "late", 2);
    mk_user(fx->s, "bob");
    assert_int_equal(fb_store_commit(fx->s), 0);

    assert_int_equal(last_seq(r, room), 1);
    assert_int_equal(count_events(r, room), 1);
    fb_user_t u;
    assert_int_equal(fb_store_user_by_name(r, "bob", &u), FB_ENOTFOUND);
    assert_int_equal(fb_store_commit(r), 0);

    /* a new read transaction sees it */
    assert_int_equal(fb_store_begin(r), 0);
    assert_int_equal(last_seq(r, room), 2);
    assert_int_equal(fb_store_user_by_name(r, "bob", &u), 0);
    fb_user_clear(&u);
    assert_int_equal(fb_store_rollback(r), 0);

    /* outside a transaction each read is fresh; an uncommitted write is not seen */
    assert_int_equal(fb_store_begin(fx->s), 0);
    text(fx->s, room, alice, dev, "pending", 3);
    assert_int_equal(last_seq(r, room), 2);
    assert_int_equal(fb_store_commit(fx->s), 0);
    assert_int_equal(last_seq(r, room), 3);
    fb_store_close(r);
}

static void test_durability(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t dev = mk_device(fx->s, alice, 1);
    assert_int_equal(fb_store_begin(fx->s), 0);
    int64_t room = mk_group(fx->s, alice, "kept", 1);
    text(fx->s, room, alice, dev, "m1", 2);
    text(fx->s, room, alice, dev, "m2", 3);
    assert_int_equal(fb_store_commit(fx->s), 0);
    bool adv;
    assert_int_equal(fb_store_read_marker_set(fx->s, room, alice, 3, &adv), 0);
    /* an open transaction at close is lost, not half kept */
    assert_int_equal(fb_store_begin(fx->s), 0);
    text(fx->s, room, alice, dev, "lost", 4);
    reopen(fx);

    assert_int_equal(last_seq(fx->s, room), 3);
    fb_event_t *evs;
    size_t n;
    assert_int_equal(fb_store_events_after(fx->s, room, 0, 0, 10, &evs, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(evs[1].text, "m1");
    assert_string_equal(evs[2].text, "m2");
    fb_events_free(evs, n);
    fb_member_t m;
    assert_int_equal(fb_store_member_get(fx->s, room, alice, &m), 0);
    assert_int_equal(m.read_seq, 3);
    fb_member_clear(&m);
    fb_event_t e;
    assert_int_equal(fb_store_event_by_cmid(fx->s, dev, "lost", &e), FB_ENOTFOUND);
    assert_int_equal(text(fx->s, room, alice, dev, "m3", 5), 4);

    /* and a reader opened afresh sees it all */
    fb_store_t *r = NULL;
    assert_int_equal(fb_store_open_reader(&fx->cfg, &r), 0);
    assert_int_equal(last_seq(r, room), 4);
    assert_int_equal(fb_store_event_by_cmid(r, dev, "m3", &e), 0);
    assert_int_equal(e.seq, 4);
    fb_event_clear(&e);
    fb_store_close(r);
}

/* Copies file from to file to (both whole; the test fails on error). */
static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) assert_int_equal(fwrite(buf, 1, n, out), n);
    assert_int_equal(ferror(in), 0);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

/* The WAL's appends are gathered into large writes (store/sqlite_vfs.c):
 * a transaction that dirties hundreds of pages is written in few calls, and
 * what it wrote is read back whole by a reader that was open before it, by
 * one opened after it, and from a copy of the database and its WAL as a
 * crash would leave them (no -shm: SQLite recovers the frames from disk). */
static void test_sqlite_wal_gathered(void **state)
{
    fx_t *fx = *state;
    enum { ROOMS = 60, PER_ROOM = 30 };
    int64_t alice = mk_user(fx->s, "alice");
    int64_t dev = mk_device(fx->s, alice, 1);
    int64_t rooms[ROOMS];
    assert_int_equal(fb_store_begin(fx->s), 0);
    for (int i = 0; i < ROOMS; i++) rooms[i] = mk_group(fx->s, alice, "r", 1);
    assert_int_equal(fb_store_commit(fx->s), 0);
    fb_store_t *early = NULL;
    assert_int_equal(fb_store_open_reader(&fx->cfg, &early), 0);
    assert_int_equal(last_seq(early, rooms[0]), 1);

    /* texts of 300-900 bytes, round robin over the rooms: every room's
     * pages are dirty at once, as under a real mix */
    char cmid[32], body[1024];
    uint64_t w0, p0, w1, p1;
    fb_sqlite_vfs_stats(&w0, &p0);
    assert_int_equal(fb_store_begin(fx->s), 0);
    for (int k = 0; k < PER_ROOM; k++) {
        for (int i = 0; i < ROOMS; i++) {
            snprintf(cmid, sizeof cmid, "c%d.%d", i, k);
            int len = 300 + (i * 37 + k * 11) % 600;
            for (int b = 0; b < len; b++) body[b] = (char)('a' + (i + k + b) % 26);
            body[len] = 0;
            assert_int_equal(append(fx->s, rooms[i], FB_EV_TEXT, alice, dev, 0, cmid, body, 2),
                             k + 2);
        }
    }
    assert_int_equal(fb_store_commit(fx->s), 0);
    fb_sqlite_vfs_stats(&w1, &p1);
    /* two writes per page frame (header, page); one call per ~15 frames */
    assert_true(w1 - w0 >= 2 * ROOMS);
    assert_true((p1 - p0) * 8 <= w1 - w0);
    char copy[100], from[160], to[160];
    snprintf(copy, sizeof copy, "%s/crashed.db", fx->dir);
    snprintf(from, sizeof from, "%s-wal", fx->path);
    snprintf(to, sizeof to, "%s-wal", copy);
    copy_file(fx->path, copy);
    copy_file(from, to);
    fb_store_config_t copy_cfg = {.kind = "sqlite", .path = copy};
    fb_store_t *recovered = NULL;
    assert_int_equal(fb_store_open(&copy_cfg, &recovered), 0);

    fb_store_t *late = NULL;
    assert_int_equal(fb_store_open_reader(&fx->cfg, &late), 0);
    for (int pass = 0; pass < 3; pass++) {
        fb_store_t *s = pass == 0 ? early : pass == 1 ? late : recovered;
        for (int i = 0; i < ROOMS; i++) {
            assert_int_equal(last_seq(s, rooms[i]), PER_ROOM + 1);
            fb_event_t *evs;
            size_t n;
            assert_int_equal(fb_store_events_after(s, rooms[i], 1, 0, PER_ROOM + 5, &evs, &n), 0);
            assert_int_equal(n, PER_ROOM);
            for (int k = 0; k < PER_ROOM; k++) {
                int len = 300 + (i * 37 + k * 11) % 600;
                assert_int_equal(strlen(evs[k].text), (size_t)len);
                for (int b = 0; b < len; b++)
                    assert_int_equal(evs[k].text[b], 'a' + (i + k + b) % 26);
            }
            fb_events_free(evs, n);
        }
    }
    fb_store_close(early);
    fb_store_close(late);
    fb_store_close(recovered);
}

/* Without powersafe overwrite (a psow=0 URI) SQLite writes the tail of a
 * commit's last frame after its sync and publishes the commit at once: the
 * VFS must not gather then, or a reader reads a frame not yet written. */
static void test_sqlite_wal_no_psow(void **state)
{
    fx_t *fx = *state;
    char path[200];
    snprintf(path, sizeof path, "file:%s/psow.db?psow=0", fx->dir);
    fb_store_config_t cfg = {.kind = "sqlite", .path = path};
    fb_store_t *w = NULL, *r = NULL;
    assert_int_equal(fb_store_open(&cfg, &w), 0);
    assert_int_equal(fb_store_open_reader(&cfg, &r), 0);
    int64_t alice = mk_user(w, "alice");
    int64_t dev = mk_device(w, alice, 1);
    assert_int_equal(fb_store_begin(w), 0);
    int64_t room = mk_group(w, alice, "p", 1);
    assert_int_equal(fb_store_commit(w), 0);
    char cmid[32], body[3001];
    memset(body, 'x', 3000);
    body[3000] = 0;
    uint64_t w0, p0, w1, p1;
    fb_sqlite_vfs_stats(&w0, &p0);
    for (int i = 0; i < 50; i++) {
        snprintf(cmid, sizeof cmid, "n%d", i);
        assert_int_equal(fb_store_begin(w), 0);
        assert_int_equal(append(w, room, FB_EV_TEXT, alice, dev, 0, cmid, body, 2), i + 2);
        assert_int_equal(fb_store_commit(w), 0);
        assert_int_equal(last_seq(r, room), i + 2); /* the reader sees each commit whole */
        fb_event_t e;
        assert_int_equal(fb_store_event_by_cmid(r, dev, cmid, &e), 0);
        assert_int_equal(strlen(e.text), 3000);
        fb_event_clear(&e);
    }
    fb_sqlite_vfs_stats(&w1, &p1);
    assert_true(w1 - w0 >= 100);
    assert_int_equal(p1 - p0, w1 - w0); /* nothing gathered */
    fb_store_close(r);
    fb_store_close(w);
}

/* ---- sends in bulk ---- */

static fb_send_t send_item(int64_t room, int64_t actor, int64_t device, const char *cmid,
                           int64_t ts)
{
    return (fb_send_t){.room_id = room,
                       .actor_id = actor,
                       .actor_device = device,
                       .ts_ms = ts,
                       .cmid = cmid,
                       .text = cmid};
}

static int64_t read_seq_of(fb_store_t *s, int64_t room, int64_t user)
{
    fb_member_t m;
    assert_int_equal(fb_store_member_get(s, room, user, &m), 0);
    int64_t v = m.read_seq;
    fb_member_clear(&m);
    return v;
}

static void test_send_many(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t bob = mk_user(fx->s, "bob");
    int64_t carol = mk_user(fx->s, "carol");
    int64_t da = mk_device(fx->s, alice, 1);
    int64_t db = mk_device(fx->s, bob, 2);
    int64_t dc = mk_device(fx->s, carol, 3);
    int64_t r1 = mk_group(fx->s, alice, "one", 1); /* 1: create */
    join(fx->s, r1, alice, bob, 2);                /* 2: bob joins, read_seq 1 */
    int64_t r2 = mk_group(fx->s, alice, "two", 3); /* 1: create */

    /* one run, in order: the refused items take no seq */
    fb_send_t it[] = {
        send_item(r1, alice, da, "a1", 10),   /* 0: r1 seq 3 */
        send_item(r1, bob, db, "b1", 11),     /* 1: r1 seq 4 */
        send_item(r1, carol, dc, "c1", 12),   /* 2: not a member */
        send_item(r1, alice, da, "a2", 13),   /* 3: r1 seq 5, marker raised by 0 */
        send_item(r1, alice, da, "a1", 14),   /* 4: a retry of 0 in the same run */
        send_item(r2, alice, da, "x1", 15),   /* 5: r2 seq 2 */
        send_item(r2, alice, da, "a1", 16),   /* 6: a retry of 0 naming another room */
        send_item(r2, bob, db, "b2", 17),     /* 7: bob is not in r2 */
        send_item(9999, alice, da, "z1", 18), /* 8: no such room */
        send_item(r1, alice, da, "a3", 19),   /* 9: r1 seq 6: no gap */
    };
    assert_int_equal(fb_store_begin(fx->s), 0);
    assert_int_equal(fb_store_send_many(fx->s, it, FB_ARRAY_LEN(it)), 0);
    assert_int_equal(fb_store_commit(fx->s), 0);
    const struct {
        int err;
        int64_t room, seq, ts, old_read;
    } want[] = {
        {0, r1, 3, 10, 0},
        {0, r1, 4, 11, 1},
        {FB_ENOTMEMBER, r1, 0, 12, 0},
        {0, r1, 5, 13, 3},
        {FB_EEXIST, r1, 3, 10, 0},
        {0, r2, 2, 15, 0},
        {FB_EEXIST, r1, 3, 10, 0},
        {FB_ENOTMEMBER, r2, 0, 17, 0},
        {FB_ENOTMEMBER, 9999, 0, 18, 0},
        {0, r1, 6, 19, 5},
    };
    for (size_t i = 0; i < FB_ARRAY_LEN(it); i++) {
        if (it[i].err != want[i].err || it[i].seq != want[i].seq || it[i].room_id != want[i].room ||
            it[i].ts_ms != want[i].ts ||
            (want[i].err == 0 && it[i].old_read_seq != want[i].old_read))
            fail_msg("item %zu: err %d room %lld seq %lld ts %lld old_read %lld", i, it[i].err,
                     (long long)it[i].room_id, (long long)it[i].seq, (long long)it[i].ts_ms,
                     (long long)it[i].old_read_seq);
    }
    assert_int_equal(last_seq(fx->s, r1), 6);
    assert_int_equal(last_seq(fx->s, r2), 2);
    fb_event_t *evs;
    size_t n;
    assert_int_equal(fb_store_events_after(fx->s, r1, 2, 0, 100, &evs, &n), 0);
    const char *texts[] = {"a1", "b1", "a2", "a3"};
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(evs[i].seq, (int64_t)i + 3);
        assert_int_equal(evs[i].kind, FB_EV_TEXT);
        assert_string_equal(evs[i].text, texts[i]);
        assert_string_equal(evs[i].cmid, texts[i]);
    }
    assert_int_equal(evs[1].actor_id, bob);
    assert_int_equal(evs[1].actor_device, db);
    assert_int_equal(evs[1].ts_ms, 11);
    fb_events_free(evs, n);
    /* sending marks read up to the sender's own message */
    assert_int_equal(read_seq_of(fx->s, r1, alice), 6);
    assert_int_equal(read_seq_of(fx->s, r1, bob), 4);
    assert_int_equal(read_seq_of(fx->s, r2, alice), 2);

    /* a retry of a send stored by an earlier run; a new one after it */
    fb_send_t again[] = {send_item(r1, alice, da, "a2", 30), send_item(r1, alice, da, "a4", 31)};
    assert_int_equal(fb_store_send_many(fx->s, again, 2), 0);
    assert_int_equal(again[0].err, FB_EEXIST);
    assert_int_equal(again[0].seq, 5);
    assert_int_equal(again[0].ts_ms, 13);
    assert_int_equal(again[1].err, 0);
    assert_int_equal(again[1].seq, 7);
    assert_int_equal(again[1].old_read_seq, 6);

    /* bob leaves: his retry is still answered, a new send is refused */
    assert_int_equal(fb_store_member_remove(fx->s, r1, bob, 8), 0);
    fb_send_t gone[] = {send_item(r1, bob, db, "b1", 40), send_item(r1, bob, db, "b9", 41)};
    assert_int_equal(fb_store_send_many(fx->s, gone, 2), 0);
    assert_int_equal(gone[0].err, FB_EEXIST);
    assert_int_equal(gone[0].seq, 4);
    assert_int_equal(gone[1].err, FB_ENOTMEMBER);
    assert_int_equal(gone[1].seq, 0);

    /* a rolled back run leaves no gap and no cmid behind */
    assert_int_equal(fb_store_begin(fx->s), 0);
    fb_send_t lost = send_item(r1, alice, da, "lost", 50);
    assert_int_equal(fb_store_send_many(fx->s, &lost, 1), 0);
    assert_int_equal(lost.seq, 8);
    assert_int_equal(fb_store_rollback(fx->s), 0);
    fb_send_t kept = send_item(r1, alice, da, "lost", 51);
    assert_int_equal(fb_store_send_many(fx->s, &kept, 1), 0);
    assert_int_equal(kept.err, 0);
    assert_int_equal(kept.seq, 8);
    assert_int_equal(count_events(fx->s, r1), 8);

    /* bad input is refused as a whole */
    fb_send_t bad = send_item(r1, alice, da, NULL, 60);
    assert_int_equal(fb_store_send_many(fx->s, &bad, 1), FB_EINVAL);
    assert_int_equal(fb_store_send_many(fx->s, NULL, 0), 0);
    assert_int_equal(fb_store_send_many(fx->s, NULL, 1), FB_EINVAL);
    assert_int_equal(last_seq(fx->s, r1), 8);
}

/* Texts that need quoting in an array literal survive a run intact. */
static void test_send_many_texts(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t da = mk_device(fx->s, alice, 1);
    int64_t r = mk_group(fx->s, alice, "r", 1);
    const char *texts[] = {"{a,b}", "say \"hi\"",  "back\\slash", "",
                           "NULL",  "line\nbreak", "  spaced  ",  "한국어 😀"};
    fb_send_t it[FB_ARRAY_LEN(texts)];
    char cmids[FB_ARRAY_LEN(texts)][16];
    for (size_t i = 0; i < FB_ARRAY_LEN(texts); i++) {
        snprintf(cmids[i], sizeof cmids[i], "q%zu", i);
        it[i] = send_item(r, alice, da, cmids[i], 5);
        it[i].text = texts[i];
    }
    assert_int_equal(fb_store_send_many(fx->s, it, FB_ARRAY_LEN(it)), 0);
    fb_event_t *evs;
    size_t n;
    assert_int_equal(fb_store_events_after(fx->s, r, 1, 0, 100, &evs, &n), 0);
    assert_int_equal(n, FB_ARRAY_LEN(texts));
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(it[i].err, 0);
        assert_string_equal(evs[i].text, texts[i]);
        assert_string_equal(evs[i].cmid, cmids[i]);
    }
    fb_events_free(evs, n);
}

/* Runs of sends across rooms and senders checked against a model of
 * store.h's item-after-item semantics: every item's err, room, seq, ts and
 * old read_seq; each room gapless with the stored texts in order; each
 * sender's read marker; refused items consuming no seq. The second run
 * retries sends of the first (and of itself) among new ones. */
#define MR_ROOMS 3
#define MR_USERS 4
#define MR_RUN 64
typedef struct {
    int64_t last[MR_ROOMS];           /* rooms' last_seq */
    int64_t read[MR_ROOMS][MR_USERS]; /* read_seq; -1: not a member */
    char cmid[2 * MR_RUN][32];        /* what was stored, by device */
    int64_t dev[2 * MR_RUN], room[2 * MR_RUN], seq[2 * MR_RUN], ts[2 * MR_RUN];
    size_t n;
} mr_model_t;

static void mr_apply(mr_model_t *m, const int64_t *rooms, const int64_t *devs, int r, int u,
                     const char *cmid, int64_t ts, fb_send_t *want)
{
    *want = (fb_send_t){.room_id = rooms[r], .ts_ms = ts};
    for (size_t k = 0; k < m->n; k++)
        if (m->dev[k] == devs[u] && strcmp(m->cmid[k], cmid) == 0) {
            want->err = FB_EEXIST;
            want->room_id = m->room[k];
            want->seq = m->seq[k];
            want->ts_ms = m->ts[k];
            return;
        }
    if (m->read[r][u] < 0) {
        want->err = FB_ENOTMEMBER;
        return;
    }
    want->seq = ++m->last[r];
    want->old_read_seq = m->read[r][u];
    m->read[r][u] = want->seq;
    assert_true(strlen(cmid) < sizeof m->cmid[m->n]);
    strcpy(m->cmid[m->n], cmid);
    m->dev[m->n] = devs[u];
    m->room[m->n] = rooms[r];
    m->seq[m->n] = want->seq;
    m->ts[m->n] = ts;
    m->n++;
}

static void test_send_many_rooms(void **state)
{
    fx_t *fx = *state;
    const char *names[MR_USERS] = {"u0", "u1", "u2", "u3"};
    int64_t users[MR_USERS], devs[MR_USERS], rooms[MR_ROOMS];
    for (int u = 0; u < MR_USERS; u++) {
        users[u] = mk_user(fx->s, names[u]);
        devs[u] = mk_device(fx->s, users[u], u + 1);
    }
    /* room 0: u0 u1 u2; room 1: u0 u3; room 2: u1 (u2 joined and left) */
    static const bool member[MR_ROOMS][MR_USERS] = {{1, 1, 1, 0}, {1, 0, 0, 1}, {0, 1, 0, 0}};
    mr_model_t *m = calloc(1, sizeof *m);
    assert_non_null(m);
    rooms[0] = mk_group(fx->s, users[0], "r0", 1);
    join(fx->s, rooms[0], users[0], users[1], 1);
    join(fx->s, rooms[0], users[0], users[2], 1);
    rooms[1] = mk_group(fx->s, users[0], "r1", 1);
    join(fx->s, rooms[1], users[0], users[3], 1);
    rooms[2] = mk_group(fx->s, users[1], "r2", 1);
    int64_t joined = join(fx->s, rooms[2], users[1], users[2], 1);
    assert_int_equal(fb_store_member_remove(fx->s, rooms[2], users[2], joined + 1), 0);
    append(fx->s, rooms[2], FB_EV_LEAVE, users[2], 0, 0, NULL, NULL, 1);
    text(fx->s, rooms[0], users[1], devs[1], "early", 2);
    bool advanced;
    /* u1 has read room 0 further than its join; u0 has not */
    assert_int_equal(fb_store_read_marker_set(fx->s, rooms[0], users[1], 4, &advanced), 0);
    for (int r = 0; r < MR_ROOMS; r++) {
        m->last[r] = last_seq(fx->s, rooms[r]);
        for (int u = 0; u < MR_USERS; u++)
            m->read[r][u] = member[r][u] ? read_seq_of(fx->s, rooms[r], users[u]) : -1;
    }
    m->dev[0] = devs[1];
    m->room[0] = rooms[0];
    m->seq[0] = m->last[0];
    m->ts[0] = 2;
    strcpy(m->cmid[0], "early");
    m->n = 1;

    uint32_t x = 7;
    char cmids[2][MR_RUN][32];
    int seen[3] = {0}; /* items answered 0, FB_EEXIST, FB_ENOTMEMBER */
    for (int run = 0; run < 2; run++) {
        fb_send_t it[MR_RUN], want[MR_RUN];
        for (int i = 0; i < MR_RUN; i++) {
            x = x * 1103515245u + 12345u;
            int r = (int)((x >> 8) % MR_ROOMS), u = (int)((x >> 12) % MR_USERS);
            /* one in four a retry (a real one when the device matches): of this
             * run's cmids, the last run's, or "early" */
            const char *again = NULL;
            if ((x >> 20) % 4 == 0) {
                if ((x >> 24) % 5 == 0 || (i == 0 && run == 0))
                    again = "early";
                else if (run > 0 && ((x >> 22) % 2 || i == 0))
                    again = cmids[0][(x >> 23) % MR_RUN];
                else
                    again = cmids[run][(x >> 23) % (unsigned)i];
            }
            if (again)
                strcpy(cmids[run][i], again);
            else
                snprintf(cmids[run][i], sizeof cmids[run][i], "m%d.%d", run, i);
            it[i] = send_item(rooms[r], users[u], devs[u], cmids[run][i], 100 * run + i);
            mr_apply(m, rooms, devs, r, u, cmids[run][i], 100 * run + i, &want[i]);
        }
        assert_int_equal(fb_store_begin(fx->s), 0);
        assert_int_equal(fb_store_send_many(fx->s, it, MR_RUN), 0);
        assert_int_equal(fb_store_commit(fx->s), 0);
        for (int i = 0; i < MR_RUN; i++)
            if (it[i].err != want[i].err || it[i].room_id != want[i].room_id ||
                it[i].seq != want[i].seq || it[i].ts_ms != want[i].ts_ms ||
                (want[i].err == 0 && it[i].old_read_seq != want[i].old_read_seq))
                fail_msg("run %d item %d (%s): err %d room %lld seq %lld ts %lld old_read %lld;"
                         " want err %d room %lld seq %lld ts %lld old_read %lld",
                         run, i, cmids[run][i], it[i].err, (long long)it[i].room_id,
                         (long long)it[i].seq, (long long)it[i].ts_ms,
                         (long long)it[i].old_read_seq, want[i].err, (long long)want[i].room_id,
                         (long long)want[i].seq, (long long)want[i].ts_ms,
                         (long long)want[i].old_read_seq);
        for (int i = 0; i < MR_RUN; i++)
            seen[it[i].err == 0 ? 0 : it[i].err == FB_EEXIST ? 1 : 2]++;
    }
    /* the runs exercised every answer */
    assert_true(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
    for (int r = 0; r < MR_ROOMS; r++) {
        /* gapless: seqs 1..last_seq, each send once, in the model's order */
        assert_int_equal(last_seq(fx->s, rooms[r]), m->last[r]);
        fb_event_t *evs;
        size_t n;
        assert_int_equal(fb_store_events_after(fx->s, rooms[r], 0, 0, 1000, &evs, &n), 0);
        assert_int_equal(n, (size_t)m->last[r]);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(evs[i].seq, (int64_t)i + 1);
        for (size_t k = 0; k < m->n; k++)
            if (m->room[k] == rooms[r]) {
                const fb_event_t *e = &evs[m->seq[k] - 1];
                assert_int_equal(e->kind, FB_EV_TEXT);
                assert_int_equal(e->actor_device, m->dev[k]);
                assert_int_equal(e->ts_ms, m->ts[k]);
                assert_string_equal(e->cmid, m->cmid[k]);
            }
        fb_events_free(evs, n);
        for (int u = 0; u < MR_USERS; u++)
            if (member[r][u])
                assert_int_equal(read_seq_of(fx->s, rooms[r], users[u]), m->read[r][u]);
    }
    free(m);
}

static void test_rooms_last_seq(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t bob = mk_user(fx->s, "bob");
    int64_t r1 = mk_group(fx->s, alice, "one", 1);
    join(fx->s, r1, alice, bob, 2);
    text(fx->s, r1, alice, 0, NULL, 3); /* r1 at 3 */
    int64_t r2 = mk_group(fx->s, alice, "two", 1);
    fb_change_t k[] = {{.room_id = r1, .to_seq = 1}, {.room_id = r2, .to_seq = 1},
                       {.room_id = 9999, .to_seq = 5}, {.room_id = r1, .to_seq = 3}};
    assert_int_equal(fb_store_rooms_last_seq(fx->s, k, FB_ARRAY_LEN(k)), 0);
    assert_int_equal(k[0].from_seq, 1);
    assert_int_equal(k[0].to_seq, 3);
    assert_int_equal(k[1].from_seq, 1); /* did not move */
    assert_int_equal(k[1].to_seq, 1);
    assert_int_equal(k[2].from_seq, 5); /* no such room: did not move */
    assert_int_equal(k[2].to_seq, 5);
    assert_int_equal(k[3].from_seq, 3);
    assert_int_equal(k[3].to_seq, 3);
    assert_int_equal(fb_store_rooms_last_seq(fx->s, NULL, 0), 0);
    assert_int_equal(fb_store_rooms_last_seq(fx->s, NULL, 1), FB_EINVAL);
}

/* ---- SQLite only ---- */

static void test_sqlite_no_feed(void **state)
{
    fx_t *fx = *state;
    fb_feed_t *f = (fb_feed_t *)1;
    assert_int_equal(fb_feed_open(&fx->cfg, &f), FB_EINVAL);
    assert_null(f);
    /* one node: announcing reaches nobody and is not an error */
    fb_change_t ch = {.room_id = 1, .from_seq = 1, .to_seq = 2};
    assert_int_equal(fb_store_begin(fx->s), 0);
    assert_int_equal(fb_store_announce(fx->s, "node-1", &ch, 1), 0);
    assert_int_equal(fb_store_commit(fx->s), 0);
    /* ... but bad input is still bad input */
    assert_int_equal(fb_store_announce(fx->s, "two words", &ch, 1), FB_EINVAL);
    assert_int_equal(fb_store_announce(fx->s, "", &ch, 1), FB_EINVAL);
}

/* ---- PostgreSQL only ---- */

/* A private server for the tests that restart it or need synchronous
 * replication configured: every commit of a database with
 * synchronous_commit=on waits for a standby named fb_nobody that never
 * comes; the others commit locally. Started on first use, stopped by the
 * group teardown. */
static fb_test_pg_t priv;

static const char *priv_server(void)
{
    if (!priv.conninfo[0] && fb_test_pg_start(&priv, "-c synchronous_standby_names=fb_nobody"
                                                     " -c synchronous_commit=local") != 0)
        fail_msg("cannot start a private PostgreSQL server");
    return priv.conninfo;
}

static int group_teardown_pg(void **state)
{
    if (priv.dir[0]) fb_test_pg_stop(&priv, false);
    memset(&priv, 0, sizeof priv);
    return 0;
}

/* Opens writer and reader on a fresh database of the private server. */
static void priv_db(char *conninfo, size_t n, fb_store_config_t *cfg)
{
    assert_int_equal(fb_test_pg_db_new(priv_server(), conninfo, n), 0);
    *cfg = (fb_store_config_t){.kind = "postgres", .conninfo = conninfo};
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_pg_migrations(void **state)
{
    fx_t *fx = *state;
    int v = 0;
    assert_int_equal(fb_store_schema_version(fx->s, &v), 0);
    assert_int_equal(v, 1);
    int64_t alice = mk_user(fx->s, "alice");
    /* reopening applies nothing and keeps the data */
    reopen(fx);
    assert_int_equal(fb_store_schema_version(fx->s, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(fb_test_pg_int(fx->conninfo, "SELECT version FROM fb_schema"), 1);
    assert_int_equal(fb_test_pg_int(fx->conninfo, "SELECT count(*) FROM fb_schema"), 1);

    fb_store_t *r = NULL;
    assert_int_equal(fb_store_open_reader(&fx->cfg, &r), 0);
    assert_int_equal(fb_store_schema_version(r, &v), 0);
    assert_int_equal(v, 1);
    fb_user_t u;
    assert_int_equal(fb_store_user_by_name(r, "alice", &u), 0);
    assert_int_equal(u.id, alice);
    fb_user_clear(&u);
    int64_t id = 0;
    assert_true(fb_store_user_create(r, "bob", "h", 1, &id) < 0); /* read-only */
    fb_store_close(r);
}

static void *open_writer(void *arg)
{
    const fb_store_config_t *cfg = arg;
    fb_store_t *s = NULL;
    intptr_t rc = fb_store_open(cfg, &s);
    fb_store_close(s);
    return (void *)rc;
}

/* Three nodes opening one new database at the same moment: the migration
 * lock lets exactly one apply each migration, and all three open. */
static void test_pg_concurrent_open(void **state)
{
    (void)state;
    char conninfo[512];
    assert_int_equal(fb_test_pg_db_new(NULL, conninfo, sizeof conninfo), 0);
    fb_store_config_t cfg = {.kind = "postgres", .conninfo = conninfo};
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, open_writer, &cfg), 0);
    for (int i = 0; i < 3; i++) {
        void *rc;
        pthread_join(t[i], &rc);
        assert_int_equal((intptr_t)rc, 0);
    }
    assert_int_equal(fb_test_pg_int(conninfo, "SELECT version FROM fb_schema"), 1);
    assert_int_equal(fb_test_pg_int(conninfo, "SELECT count(*) FROM fb_schema"), 1);
    fb_test_pg_db_drop(conninfo);
}

static void test_pg_open_errors(void **state)
{
    fx_t *fx = *state;
    fb_store_t *s = NULL;
    /* no connection string */
    fb_store_config_t none = {.kind = "postgres"};
    assert_int_equal(fb_store_open(&none, &s), FB_EINVAL);
    assert_null(s);
    /* a server that is not there: unavailable, not a crash or a hang */
    fb_store_config_t gone = {.kind = "postgres",
                              .conninfo = "host=127.0.0.1 port=1 connect_timeout=2"};
    assert_int_equal(fb_store_open(&gone, &s), FB_EUNAVAIL);
    assert_int_equal(fb_store_open_reader(&gone, &s), FB_EUNAVAIL);
    assert_null(s);
    /* a reader on a database no writer has opened */
    char fresh[512];
    assert_int_equal(fb_test_pg_db_new(NULL, fresh, sizeof fresh), 0);
    fb_store_config_t cfg = {.kind = "postgres", .conninfo = fresh};
    assert_int_equal(fb_store_open_reader(&cfg, &s), FB_ESTATE);
    assert_null(s);
    fb_test_pg_db_drop(fresh);
    /* a database from a newer build is refused, not downgraded */
    fb_store_close(fx->s);
    fx->s = NULL;
    assert_int_equal(fb_test_pg_exec(fx->conninfo, "UPDATE fb_schema SET version = 99"), 0);
    assert_int_equal(fb_store_open(&fx->cfg, &s), FB_ESTATE);
    assert_int_equal(fb_store_open_reader(&fx->cfg, &s), FB_ESTATE);
    assert_null(s);
    assert_int_equal(fb_test_pg_exec(fx->conninfo, "UPDATE fb_schema SET version = 1"), 0);
    assert_int_equal(fb_store_open(&fx->cfg, &fx->s), 0);
}

/* An error that aborted the transaction is never reported as committed:
 * PostgreSQL answers such a COMMIT with ROLLBACK. */
static void test_pg_aborted_commit(void **state)
{
    fx_t *fx = *state;
    int64_t id = 0;
    assert_int_equal(fb_store_begin(fx->s), 0);
    mk_user(fx->s, "alice");
    /* not UTF-8: the server refuses it and the transaction is dead */
    assert_int_equal(fb_store_user_create(fx->s, "bad\xff", "h", 1, &id), FB_EINVAL);
    assert_true(fb_store_commit(fx->s) < 0);
    fb_user_t u;
    assert_int_equal(fb_store_user_by_name(fx->s, "alice", &u), FB_ENOTFOUND);
    /* under a savepoint the same error costs only that request */
    assert_int_equal(fb_store_begin(fx->s), 0);
    mk_user(fx->s, "alice");
    assert_int_equal(fb_store_savepoint(fx->s), 0);
    assert_int_equal(fb_store_user_create(fx->s, "bad\xff", "h", 1, &id), FB_EINVAL);
    assert_int_equal(fb_store_rollback_to(fx->s), 0);
    assert_int_equal(fb_store_commit(fx->s), 0);
    assert_int_equal(fb_store_user_by_name(fx->s, "alice", &u), 0);
    fb_user_clear(&u);
}

/* ---- the change feed ---- */

typedef struct {
    char origin[80];
    fb_change_t ch[4096];
    size_t n;   /* changes received */
    int calls;  /* announcements received */
    bool mixed; /* an announcement with another origin than the first */
} heard_t;

static void on_heard(void *ud, const char *origin, const fb_change_t *changes, size_t n)
{
    heard_t *h = ud;
    if (h->calls++ == 0) snprintf(h->origin, sizeof h->origin, "%s", origin);
    if (strcmp(origin, h->origin) != 0) h->mixed = true;
    for (size_t i = 0; i < n && h->n < FB_ARRAY_LEN(h->ch); i++)
        h->ch[h->n++] = changes[i];
}

/* Polls the feed until `calls` announcements arrived or ms passed. */
static int listen_for(fb_feed_t *f, heard_t *h, int calls, int ms, bool *reconnected)
{
    uint64_t end = fb_mono_ns() + (uint64_t)ms * 1000000u;
    int rc = 0;
    do {
        int fd = fb_feed_fd(f);
        if (fd >= 0) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            poll(&p, 1, 20);
        } else {
            sleep_ms(20);
        }
        bool rec = false;
        rc = fb_feed_poll(f, on_heard, h, &rec);
        if (rec && reconnected) *reconnected = true;
    } while (h->calls < calls && fb_mono_ns() < end);
    return rc;
}

static void test_pg_feed(void **state)
{
    fx_t *fx = *state;
    fb_feed_t *f = NULL;
    assert_int_equal(fb_feed_open(&fx->cfg, &f), 0);
    assert_true(fb_feed_fd(f) >= 0);
    heard_t *h = calloc(1, sizeof *h);
    bool rec = false;
    assert_int_equal(fb_feed_poll(f, on_heard, h, &rec), 0);
    assert_false(rec);
    assert_int_equal(h->calls, 0);

    /* rolled back: never heard, even the part under a released savepoint */
    fb_change_t c1[] = {{.room_id = 5, .from_seq = 1, .to_seq = 2},
                        {.room_id = 6, .from_seq = 3, .to_seq = 4}};
    assert_int_equal(fb_store_begin(fx->s), 0);
    assert_int_equal(fb_store_savepoint(fx->s), 0);
    assert_int_equal(fb_store_announce(fx->s, "node-a", c1, 2), 0);
    assert_int_equal(fb_store_release(fx->s), 0);
    assert_int_equal(fb_store_rollback(fx->s), 0);
    /* under a savepoint rolled back: dropped; the rest of the transaction counts */
    assert_int_equal(fb_store_begin(fx->s), 0);
    assert_int_equal(fb_store_savepoint(fx->s), 0);
    assert_int_equal(fb_store_announce(fx->s, "node-x", c1, 1), 0);
    assert_int_equal(fb_store_rollback_to(fx->s), 0);
    assert_int_equal(fb_store_announce(fx->s, "node-a", c1, 2), 0);
    /* not before the commit */
    listen_for(f, h, 1, 150, NULL);
    assert_int_equal(h->calls, 0);
    assert_int_equal(fb_store_commit(fx->s), 0);
    assert_int_equal(listen_for(f, h, 1, 5000, NULL), 0);
    assert_int_equal(h->calls, 1);
    assert_string_equal(h->origin, "node-a");
    assert_int_equal(h->n, 2);
    assert_int_equal(h->ch[0].room_id, 5);
    assert_int_equal(h->ch[0].from_seq, 1);
    assert_int_equal(h->ch[0].to_seq, 2);
    assert_int_equal(h->ch[1].room_id, 6);
    assert_int_equal(h->ch[1].to_seq, 4);
    /* nothing more arrives later: the rolled back ones are gone for good */
    listen_for(f, h, 2, 150, NULL);
    assert_int_equal(h->calls, 1);

    /* a long announcement is split, every part with its origin */
    memset(h, 0, sizeof *h);
    static fb_change_t many[3000];
    for (int i = 0; i < 3000; i++)
        many[i] = (fb_change_t){.room_id = 1000000000000LL + i, .from_seq = 1000000 + i,
                                .to_seq = 2000000 + i};
    assert_int_equal(fb_store_begin(fx->s), 0);
    assert_int_equal(fb_store_announce(fx->s, "node-b", many, 3000), 0);
    assert_int_equal(fb_store_commit(fx->s), 0);
    assert_int_equal(listen_for(f, h, 100, 1500, NULL), 0);
    assert_true(h->calls > 1);
    assert_false(h->mixed);
    assert_string_equal(h->origin, "node-b");
    assert_int_equal(h->n, 3000);
    for (int i = 0; i < 3000; i++)
        if (h->ch[i].room_id != many[i].room_id || h->ch[i].from_seq != many[i].from_seq ||
            h->ch[i].to_seq != many[i].to_seq || h->ch[i].kind != FB_CHANGE_EVENTS)
            fail_msg("change %d differs", i);

    /* read markers and logouts travel beside the events */
    memset(h, 0, sizeof *h);
    fb_change_t mixed[] = {
        {.room_id = 7, .from_seq = 3, .to_seq = 4},
        {.kind = FB_CHANGE_READ, .room_id = 7, .user_id = 42, .from_seq = 4, .to_seq = 4},
        {.kind = FB_CHANGE_LOGOUT, .user_id = 42, .device_id = 9},
    };
    assert_int_equal(fb_store_begin(fx->s), 0);
    assert_int_equal(fb_store_announce(fx->s, "node-c", mixed, 3), 0);
    assert_int_equal(fb_store_commit(fx->s), 0);
    assert_int_equal(listen_for(f, h, 1, 5000, NULL), 0);
    assert_int_equal(h->n, 3);
    assert_int_equal(h->ch[0].kind, FB_CHANGE_EVENTS);
    assert_int_equal(h->ch[0].to_seq, 4);
    assert_int_equal(h->ch[1].kind, FB_CHANGE_READ);
    assert_int_equal(h->ch[1].room_id, 7);
    assert_int_equal(h->ch[1].user_id, 42);
    assert_int_equal(h->ch[1].to_seq, 4);
    assert_int_equal(h->ch[2].kind, FB_CHANGE_LOGOUT);
    assert_int_equal(h->ch[2].user_id, 42);
    assert_int_equal(h->ch[2].device_id, 9);

    /* bad announcements are refused */
    fb_change_t bad = {.room_id = 5, .from_seq = 3, .to_seq = 2};
    assert_int_equal(fb_store_announce(fx->s, "node-a", &bad, 1), FB_EINVAL);
    assert_int_equal(fb_store_announce(fx->s, "no space", c1, 1), FB_EINVAL);

    /* its connection killed: the next poll connects again, says so, and
     * announcements flow again */
    memset(h, 0, sizeof *h);
    assert_int_equal(
        fb_test_pg_int(fx->conninfo,
                       "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                       " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                       " AND query LIKE '%LISTEN%'"),
        1);
    rec = false;
    listen_for(f, h, 1, 500, &rec);
    assert_true(rec);
    assert_true(fb_feed_fd(f) >= 0);
    assert_int_equal(fb_store_announce(fx->s, "node-c", c1, 1), 0); /* autocommit */
    assert_int_equal(listen_for(f, h, 1, 5000, NULL), 0);
    assert_int_equal(h->calls, 1);
    assert_string_equal(h->origin, "node-c");
    /* the feed's handle reads the primary */
    mk_user(fx->s, "alice");
    fb_user_t u;
    assert_int_equal(fb_store_user_by_name(fb_feed_store(f), "alice", &u), 0);
    fb_user_clear(&u);

    free(h);
    fb_feed_close(f);
}

/* ---- connections lost and found ---- */

static void kill_backends(const char *conninfo, const char *what)
{
    char sql[300];
    snprintf(sql, sizeof sql,
             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
             " WHERE datname = current_database() AND pid <> pg_backend_pid() %s",
             what ? what : "");
    assert_true(fb_test_pg_int(conninfo, sql) >= 1);
}

static int64_t elapsed_ms(uint64_t t0)
{
    return (int64_t)((fb_mono_ns() - t0) / 1000000u);
}

/* A site whose packets are dropped costs a multi-host connect its whole
 * connect_timeout; while a failover is in progress the node reconnects
 * every few hundred ms, so that host is passed over for a while after it
 * timed out once. Here it is a socket on loopback that takes connections
 * and never answers: libpq waits for it as for a dropped site. */
static void test_pg_unreachable_host_passed_over(void **state)
{
    (void)state;
    char base[512], conninfo[1024];
    assert_int_equal(fb_test_pg_db_new(NULL, base, sizeof base), 0);
    int port = (int)fb_test_pg_int(base, "SELECT current_setting('port')::int");
    int hole = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(hole >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    assert_int_equal(bind(hole, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(hole, 16), 0);
    assert_int_equal(getsockname(hole, (struct sockaddr *)&a, &alen), 0);
    snprintf(conninfo, sizeof conninfo,
             "%s host=127.0.0.1,127.0.0.1 port=%d,%d connect_timeout=2"
             " target_session_attrs=read-write",
             base, ntohs(a.sin_port), port);
    fb_store_config_t cfg = {.kind = "postgres", .conninfo = conninfo};
    fb_store_t *w = NULL;
    /* the first connect tries the silent host first and waits it out */
    uint64_t t0 = fb_mono_ns();
    assert_int_equal(fb_store_open(&cfg, &w), 0);
    assert_true(elapsed_ms(t0) >= 1900);
    mk_user(w, "alice");
    /* the connection drops (noticed at the next begin, as in
     * test_pg_reconnect): the new one goes straight to the server */
    kill_backends(base, NULL);
    for (int i = 0; i < 250 && fb_test_pg_int(base, "SELECT count(*) FROM pg_stat_activity"
                                                    " WHERE datname = current_database()"
                                                    " AND pid <> pg_backend_pid()") > 0;
         i++)
        sleep_ms(20);
    t0 = fb_mono_ns();
    assert_int_equal(fb_store_begin(w), 0);
    mk_user(w, "bob");
    assert_int_equal(fb_store_commit(w), 0);
    assert_true(elapsed_ms(t0) < 1500); /* not another 2 s for the silent host */
    fb_store_close(w);
    close(hole);
    fb_test_pg_db_drop(base);
}

static void test_pg_reconnect(void **state)
{
    (void)state;
    char conninfo[512];
    fb_store_config_t cfg;
    priv_db(conninfo, sizeof conninfo, &cfg);
    size_t mem0 = fb_mem_in_use();
    fb_store_t *w = NULL, *r = NULL;
    assert_int_equal(fb_store_open(&cfg, &w), 0);
    assert_int_equal(fb_store_open_reader(&cfg, &r), 0);
    mk_user(w, "alice");

    /* a connection dropped inside a transaction: that transaction is lost,
     * and says so; the next one runs on a new connection */
    assert_int_equal(fb_store_begin(w), 0);
    mk_user(w, "bob");
    kill_backends(conninfo, NULL);
    int64_t id;
    assert_int_equal(fb_store_user_create(w, "carol", "h", 1, &id), FB_EUNAVAIL);
    assert_int_equal(fb_store_commit(w), FB_EUNAVAIL);
    assert_int_equal(fb_store_rollback(w), 0);
    assert_int_equal(fb_store_begin(w), 0);
    mk_user(w, "carol");
    assert_int_equal(fb_store_commit(w), 0);
    fb_user_t u;
    assert_int_equal(fb_store_user_by_name(r, "bob", &u), FB_ENOTFOUND);
    assert_int_equal(fb_store_user_by_name(r, "carol", &u), 0); /* reader reconnected itself */
    fb_user_clear(&u);

    /* the whole server stops: unavailable, not a hang or a crash */
    assert_int_equal(fb_test_pg_stop(&priv, true), 0);
    assert_int_equal(fb_store_begin(w), FB_EUNAVAIL);
    assert_int_equal(fb_store_begin(w), FB_EUNAVAIL);
    assert_int_equal(fb_store_user_by_name(r, "alice", &u), FB_EUNAVAIL);
    /* ... and it comes back: the next begin and the next read reconnect */
    assert_int_equal(fb_test_pg_start(&priv, "-c synchronous_standby_names=fb_nobody"
                                             " -c synchronous_commit=local"),
                     0);
    assert_int_equal(fb_store_begin(w), 0);
    mk_user(w, "dave");
    assert_int_equal(fb_store_commit(w), 0);
    assert_int_equal(fb_store_user_by_name(r, "dave", &u), 0);
    fb_user_clear(&u);
    /* an idle connection the server has closed is noticed and replaced at
     * begin, before any work is lost with it */
    kill_backends(conninfo, NULL);
    for (int i = 0; i < 250 && fb_test_pg_int(conninfo, "SELECT count(*) FROM pg_stat_activity"
                                                        " WHERE datname = current_database()"
                                                        " AND pid <> pg_backend_pid()") > 0;
         i++)
        sleep_ms(20);
    assert_int_equal(fb_store_begin(w), 0);
    mk_user(w, "erin");
    assert_int_equal(fb_store_commit(w), 0);
    assert_int_equal(fb_store_user_by_name(r, "alice", &u), 0);
    fb_user_clear(&u);
    fb_store_close(r);
    fb_store_close(w);
    assert_int_equal(fb_mem_in_use(), mem0);
    fb_test_pg_db_drop(conninfo);
}

typedef struct {
    fb_store_t *s;
    int64_t room, actor, device;
    const char *cmid; /* send this (send_many) instead of creating a user */
    int begin_rc, op_rc, commit_rc;
} committer_t;

static void *commit_in_thread(void *arg)
{
    committer_t *c = arg;
    c->begin_rc = fb_store_begin(c->s);
    if (c->cmid) {
        fb_send_t it = send_item(c->room, c->actor, c->device, c->cmid, 1);
        c->op_rc = fb_store_send_many(c->s, &it, 1);
        if (!c->op_rc) c->op_rc = it.err;
    } else {
        int64_t id;
        c->op_rc = fb_store_user_create(c->s, "waiting", "h", 1, &id);
    }
    c->commit_rc = fb_store_commit(c->s);
    return NULL;
}

/* Waits until a backend of the database waits for the synchronous standby,
 * then cancels (or terminates) it; false if none waited within 5 s. */
static bool interrupt_syncrep(const char *conninfo, const char *how)
{
    char sql[300];
    snprintf(sql, sizeof sql,
             "SELECT count(%s(pid)) FROM pg_stat_activity"
             " WHERE datname = current_database() AND wait_event = 'SyncRep'",
             how);
    for (int i = 0; i < 250; i++) {
        if (fb_test_pg_int(conninfo, sql) > 0) return true;
        sleep_ms(20);
    }
    return false;
}

/* Zero false acks: a COMMIT whose wait for the synchronous standby was
 * cancelled returns success with a warning; the store must call it a
 * failure. And a transaction whose only work found its rows already there
 * must still wait for the standby before it may ack. */
static void test_pg_commit_wait(void **state)
{
    (void)state;
    char conninfo[512];
    fb_store_config_t cfg;
    priv_db(conninfo, sizeof conninfo, &cfg);
    fb_store_t *w = NULL;
    assert_int_equal(fb_store_open(&cfg, &w), 0);
    int64_t alice = mk_user(w, "alice");
    int64_t da = mk_device(w, alice, 1);
    int64_t room = mk_group(w, alice, "r", 1);
    assert_int_equal(text(w, room, alice, da, "m1", 2), 2);
    fb_store_close(w);
    /* from now on every commit in this database waits for fb_nobody */
    char sql[200];
    snprintf(sql, sizeof sql, "ALTER DATABASE %s SET synchronous_commit = on",
             strstr(conninfo, "dbname=fbt_") + 7);
    assert_int_equal(fb_test_pg_exec(conninfo, sql), 0);
    assert_int_equal(fb_store_open(&cfg, &w), 0);

    /* a new row; the wait cancelled: committed here, but not acked */
    committer_t c = {.s = w};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, commit_in_thread, &c), 0);
    bool waited = interrupt_syncrep(conninfo, "pg_cancel_backend");
    pthread_join(t, NULL);
    assert_true(waited);
    assert_int_equal(c.begin_rc, 0);
    assert_int_equal(c.op_rc, 0);
    assert_int_equal(c.commit_rc, FB_EUNAVAIL);
    assert_int_equal(fb_test_pg_int(conninfo, "SELECT count(*) FROM users WHERE name = 'waiting'"),
                     1);

    /* only a retried send (nothing new to write): it must wait all the same */
    c = (committer_t){.s = w, .room = room, .actor = alice, .device = da, .cmid = "m1"};
    assert_int_equal(pthread_create(&t, NULL, commit_in_thread, &c), 0);
    waited = interrupt_syncrep(conninfo, "pg_cancel_backend");
    pthread_join(t, NULL);
    assert_true(waited);
    assert_int_equal(c.op_rc, FB_EEXIST);
    assert_int_equal(c.commit_rc, FB_EUNAVAIL);

    /* the backend terminated during the wait: outcome unknown, unavailable;
     * the next transaction reconnects */
    c = (committer_t){.s = w, .room = room, .actor = alice, .device = da, .cmid = "m2"};
    assert_int_equal(pthread_create(&t, NULL, commit_in_thread, &c), 0);
    waited = interrupt_syncrep(conninfo, "pg_terminate_backend");
    pthread_join(t, NULL);
    assert_true(waited);
    assert_int_equal(c.op_rc, 0);
    assert_int_equal(c.commit_rc, FB_EUNAVAIL);
    fb_store_close(w);

    /* with the standby requirement lifted the same store commits normally */
    snprintf(sql, sizeof sql,
             "SET synchronous_commit = local; ALTER DATABASE %s SET synchronous_commit = local",
             strstr(conninfo, "dbname=fbt_") + 7);
    assert_int_equal(fb_test_pg_exec(conninfo, sql), 0);
    assert_int_equal(fb_store_open(&cfg, &w), 0);
    assert_int_equal(fb_store_begin(w), 0);
    fb_send_t it = send_item(room, alice, da, "m2", 5);
    assert_int_equal(fb_store_send_many(w, &it, 1), 0);
    assert_int_equal(it.err, FB_EEXIST); /* the terminated commit had committed locally */
    assert_int_equal(it.seq, 3);
    assert_int_equal(fb_store_commit(w), 0);
    fb_store_close(w);
    fb_test_pg_db_drop(conninfo);
}

/* A standby that has not replayed a login must not call its token
 * unknown: the client would drop a valid token. */
static void test_pg_standby_token(void **state)
{
    (void)state;
    char conninfo[512], standby_info[512];
    fb_store_config_t cfg;
    priv_db(conninfo, sizeof conninfo, &cfg);
    fb_store_t *w = NULL, *r = NULL, *pr = NULL;
    assert_int_equal(fb_store_open(&cfg, &w), 0);
    int64_t alice = mk_user(w, "alice");
    int64_t dev = mk_device(w, alice, 1);

    const char *port = strstr(priv.conninfo, "port=") + 5;
    char env[16];
    snprintf(env, sizeof env, "%d", atoi(port));
    setenv("FIREBREAK_PG_STANDBY_OF", env, 1);
    fb_test_pg_t standby = {0};
    int started = fb_test_pg_start(&standby, NULL);
    unsetenv("FIREBREAK_PG_STANDBY_OF");
    assert_int_equal(started, 0);
    snprintf(standby_info, sizeof standby_info, "%s dbname=%s", standby.conninfo,
             strstr(conninfo, "dbname=fbt_") + 7);
    fb_store_config_t scfg = {
        .kind = "postgres", .conninfo = conninfo, .read_conninfo = standby_info};
    assert_int_equal(fb_store_open_reader(&scfg, &r), 0);
    assert_int_equal(fb_store_open_reader(&cfg, &pr), 0);

    uint8_t t[32];
    fb_device_t d;
    token(t, 1);
    int rc = FB_EUNAVAIL;
    for (int i = 0; i < 250 && rc == FB_EUNAVAIL; i++) {
        rc = fb_store_device_by_token(r, t, &d); /* replayed soon */
        if (rc == FB_EUNAVAIL) sleep_ms(20);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(d.id, dev);
    fb_device_clear(&d);
    token(t, 42);
    assert_int_equal(fb_store_device_by_token(r, t, &d), FB_EUNAVAIL);
    assert_int_equal(fb_store_device_by_token(pr, t, &d), FB_ENOTFOUND);
    /* and a standby is no place for the write connection */
    fb_store_config_t wrong = {.kind = "postgres", .conninfo = standby_info};
    fb_store_t *x = NULL;
    assert_int_equal(fb_store_open(&wrong, &x), FB_EUNAVAIL);
    fb_store_close(pr);
    fb_store_close(r);
    fb_store_close(w);
    fb_test_pg_stop(&standby, false);
    fb_test_pg_db_drop(conninfo);
}

/* Two nodes' writers on one database, sending runs over the same rooms in
 * opposite orders at once: the room locks order them (no deadlock, no
 * failure), and every room stays gapless with every send stored once. */
typedef struct {
    fb_store_config_t *cfg;
    int64_t rooms[2], actor, device;
    int node, failures;
} node_load_t;

#define RUNS 60
#define RUN_LEN 10

static void *node_sends(void *arg)
{
    node_load_t *l = arg;
    fb_store_t *s = NULL;
    if (fb_store_open(l->cfg, &s) != 0) {
        l->failures = -1;
        return NULL;
    }
    char cmids[RUN_LEN][32];
    for (int run = 0; run < RUNS; run++) {
        fb_send_t it[RUN_LEN];
        for (int i = 0; i < RUN_LEN; i++) {
            /* node 0 goes room A then B, node 1 B then A; the last item of
             * every run retries the first of the previous one */
            int side = (i < RUN_LEN / 2) ^ l->node;
            snprintf(cmids[i], sizeof cmids[i], "n%d.r%d.i%d", l->node, run, i);
            if (i == RUN_LEN - 1 && run > 0)
                snprintf(cmids[i], sizeof cmids[i], "n%d.r%d.i0", l->node, run - 1);
            it[i] = send_item(l->rooms[side], l->actor, l->device, cmids[i], run);
        }
        if (fb_store_begin(s) || fb_store_send_many(s, it, RUN_LEN) || fb_store_commit(s)) {
            l->failures++;
            fb_store_rollback(s);
        }
    }
    fb_store_close(s);
    return NULL;
}

static void test_pg_two_writers(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t da = mk_device(fx->s, alice, 1);
    int64_t db = mk_device(fx->s, alice, 2);
    int64_t ra = mk_group(fx->s, alice, "a", 1);
    int64_t rb = mk_group(fx->s, alice, "b", 1);
    node_load_t l[2] = {{&fx->cfg, {ra, rb}, alice, da, 0, 0},
                        {&fx->cfg, {ra, rb}, alice, db, 1, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, node_sends, &l[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(l[0].failures, 0);
    assert_int_equal(l[1].failures, 0);
    /* per node: RUNS runs of RUN_LEN items, one retry in all but the first */
    int64_t stored = 2 * (RUNS * RUN_LEN - (RUNS - 1));
    int64_t total = 0;
    int64_t rooms[2] = {ra, rb};
    for (int r = 0; r < 2; r++) {
        fb_event_t *evs;
        size_t n;
        assert_int_equal(fb_store_events_after(fx->s, rooms[r], 0, 0, 100000, &evs, &n), 0);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(evs[i].seq, (int64_t)i + 1);
        assert_int_equal(last_seq(fx->s, rooms[r]), (int64_t)n);
        total += (int64_t)n - 1; /* less the create event */
        fb_events_free(evs, n);
    }
    assert_int_equal(total, stored);
}

/* The same send reaching two nodes at once (a client that retried on
 * another site while its first attempt was still in flight), into two
 * different rooms so that no room lock orders them: the unique index makes
 * the second wait for the first; once the first commits, the second answers
 * with the original, and once it rolls back, the second stores it. */
typedef struct {
    fb_store_t *s;
    fb_send_t it;
    bool single; /* event_append instead of send_many */
    int rc, commit_rc;
} racer_t;

static void *race_send(void *arg)
{
    racer_t *r = arg;
    r->rc = fb_store_begin(r->s);
    if (!r->rc && r->single) {
        fb_event_t ev = {.room_id = r->it.room_id,
                         .ts_ms = r->it.ts_ms,
                         .kind = FB_EV_TEXT,
                         .actor_id = r->it.actor_id,
                         .actor_device = r->it.actor_device,
                         .cmid = (char *)r->it.cmid,
                         .text = (char *)r->it.text};
        r->rc = fb_store_event_append(r->s, &ev);
        r->it.seq = ev.seq;
    } else if (!r->rc) {
        r->rc = fb_store_send_many(r->s, &r->it, 1);
        if (!r->rc) r->rc = r->it.err;
    }
    r->commit_rc = fb_store_commit(r->s);
    return NULL;
}

/* Waits until a backend of the database waits for a transaction (the
 * unique index insertion of the other node's uncommitted row). */
static bool someone_waits(const char *conninfo)
{
    for (int i = 0; i < 250; i++) {
        if (fb_test_pg_int(conninfo, "SELECT count(*) FROM pg_stat_activity"
                                     " WHERE datname = current_database()"
                                     " AND wait_event = 'transactionid'") > 0)
            return true;
        sleep_ms(20);
    }
    return false;
}

static void test_pg_cmid_race(void **state)
{
    fx_t *fx = *state;
    int64_t alice = mk_user(fx->s, "alice");
    int64_t da = mk_device(fx->s, alice, 1);
    int64_t r1 = mk_group(fx->s, alice, "one", 1);
    int64_t r2 = mk_group(fx->s, alice, "two", 1);
    fb_store_t *other = NULL;
    assert_int_equal(fb_store_open(&fx->cfg, &other), 0);
    for (int round = 0; round < 4; round++) {
        bool commit_first = round % 2 == 0, single = round >= 2;
        char cmid[16];
        snprintf(cmid, sizeof cmid, "race%d", round);
        /* node 1 stores the send into r1 and holds its transaction open */
        assert_int_equal(fb_store_begin(fx->s), 0);
        fb_send_t first = send_item(r1, alice, da, cmid, 100 + round);
        assert_int_equal(fb_store_send_many(fx->s, &first, 1), 0);
        assert_int_equal(first.err, 0);
        /* node 2 gets the same send, naming r2 */
        racer_t r = {
            .s = other, .it = send_item(r2, alice, da, cmid, 200 + round), .single = single};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, race_send, &r), 0);
        bool waited = someone_waits(fx->conninfo);
        if (commit_first)
            assert_int_equal(fb_store_commit(fx->s), 0);
        else
            assert_int_equal(fb_store_rollback(fx->s), 0);
        pthread_join(t, NULL);
        assert_true(waited);
        assert_int_equal(r.commit_rc, 0);
        if (commit_first) {
            assert_int_equal(r.rc, FB_EEXIST);
            if (!single) {
                assert_int_equal(r.it.room_id, r1);
                assert_int_equal(r.it.seq, first.seq);
                assert_int_equal(r.it.ts_ms, 100 + round);
            }
        } else {
            assert_int_equal(r.rc, 0);
            assert_true(r.it.seq >= 2);
        }
    }
    fb_store_close(other);
    /* both rooms gapless, each send stored once */
    assert_int_equal(count_events(fx->s, r1), last_seq(fx->s, r1));
    assert_int_equal(count_events(fx->s, r2), last_seq(fx->s, r2));
    assert_int_equal(last_seq(fx->s, r1) + last_seq(fx->s, r2), 2 + 4);
}

#define BOTH(X)                                                                                    \
    X(test_users), X(test_devices), X(test_rooms), X(test_seq_gapless), X(test_cmid_idempotency),  \
        X(test_rollback), X(test_savepoint), X(test_savepoint_empty), X(test_events_paging),       \
        X(test_members), X(test_read_marker), X(test_rooms_for_user), X(test_reader_snapshot),     \
        X(test_durability), X(test_send_many), X(test_send_many_texts), X(test_send_many_rooms),   \
        X(test_rooms_last_seq)

int main(void)
{
#define SQ(t) cmocka_unit_test_setup_teardown(t, setup_sqlite, teardown)
#define PG(t) cmocka_unit_test_setup_teardown(t, setup_pg, teardown)
    const struct CMUnitTest sqlite_tests[] = {
        SQ(test_sqlite_migrations),
        SQ(test_sqlite_open_errors),
        SQ(test_sqlite_no_feed),
        SQ(test_sqlite_wal_gathered),
        SQ(test_sqlite_wal_no_psow),
        BOTH(SQ),
    };
    const struct CMUnitTest pg_tests[] = {
        PG(test_pg_migrations),
        cmocka_unit_test(test_pg_concurrent_open),
        PG(test_pg_open_errors),
        PG(test_pg_aborted_commit),
        PG(test_pg_feed),
        cmocka_unit_test(test_pg_reconnect),
        cmocka_unit_test(test_pg_unreachable_host_passed_over),
        cmocka_unit_test(test_pg_commit_wait),
        cmocka_unit_test(test_pg_standby_token),
        PG(test_pg_two_writers),
        PG(test_pg_cmid_race),
        BOTH(PG),
    };
    /* the tests provoke errors on purpose; FB_TEST_LOG=1 shows their log lines */
    if (!getenv("FB_TEST_LOG")) fb_log_set_level(FB_LOG_OFF);
    if (getenv("FB_TEST_FILTER")) cmocka_set_test_filter(getenv("FB_TEST_FILTER"));
    int failed = cmocka_run_group_tests_name("sqlite", sqlite_tests, NULL, NULL);
    if (fb_test_pg_server())
        failed += cmocka_run_group_tests_name("postgres", pg_tests, NULL, group_teardown_pg);
    else
        fprintf(stderr, "postgres group not run: FIREBREAK_TEST_PG is not set"
                        " (tests/run.sh starts a server and sets it)\n");
    return failed ? 1 : 0;
}
