/* Unit tests of the store contract (store.h) against the SQLite backend, each
 * test on a fresh database in its own temporary directory. They must never
 * depend on each other or on anything outside that directory.
 * SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fb.h"
#include "store/store.h"

typedef struct {
    char dir[64];
    char path[128];
    fb_store_config_t cfg;
    fb_store_t *s;
    size_t mem0;
} fx_t;

static int setup(void **state)
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

static int teardown(void **state)
{
    fx_t *fx = *state;
    int rc = 0;
    fb_store_close(fx->s);
    if (fb_mem_in_use() != fx->mem0) {
        fprintf(stderr, "leak: %zu bytes still in use\n", fb_mem_in_use() - fx->mem0);
        rc = -1;
    }
    /* none.db exists only if test_open_errors found a reader creating files */
    const char *names[] = {"fb.db", "fb.db-wal", "fb.db-shm", "none.db"};
    char p[160];
    for (size_t i = 0; i < FB_ARRAY_LEN(names); i++) {
        snprintf(p, sizeof p, "%s/%s", fx->dir, names[i]);
        unlink(p);
    }
    rmdir(fx->dir);
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

static void test_migrations(void **state)
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

static void test_open_errors(void **state)
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_users, setup, teardown),
        cmocka_unit_test_setup_teardown(test_devices, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rooms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seq_gapless, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cmid_idempotency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_savepoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_paging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_members, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_marker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rooms_for_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durability, setup, teardown),
    };
    /* the tests provoke errors on purpose; FB_TEST_LOG=1 shows their log lines */
    if (!getenv("FB_TEST_LOG")) fb_log_set_level(FB_LOG_OFF);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
