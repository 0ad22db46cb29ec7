/* Unit tests of the client library's parts that need no server: address
 * lists, the state file round trip, cursors and gap detection, members and
 * the unread helper, and the offline behaviour of the client object.
 * SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/client.h"
#include "client/client_state.h"

static char tmpdir[256];

static int setup_dir(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fb_test_client.XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int teardown_dir(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static json_t *ev(int64_t room, int64_t seq, const char *type, int64_t from, int64_t target)
{
    json_t *e =
        json_pack("{s:I,s:I,s:s,s:{s:I,s:s}}", "room", (json_int_t)room, "seq", (json_int_t)seq,
                  "type", type, "from", "id", (json_int_t)from, "name", "u");
    if (target)
        json_object_set_new(e, "target",
                            json_pack("{s:I,s:s}", "id", (json_int_t)target, "name", "t"));
    if (!strcmp(type, "text")) json_object_set_new(e, "text", json_string("hi"));
    return e;
}

static bool apply(fb_cstate_t *st, json_t *e)
{
    bool r = fb_cstate_apply_event(st, e);
    json_decref(e);
    return r;
}

/* ---- addresses ---- */

static void test_addrs_parse_ok(void **state)
{
    char **a;
    size_t n;
    assert_int_equal(fb_client_addrs_parse("127.0.0.1:8080, 127.0.0.1:8081 ,localhost", &a, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(a[0], "127.0.0.1:8080");
    assert_string_equal(a[1], "127.0.0.1:8081");
    assert_string_equal(a[2], "localhost:8080");
    fb_client_addrs_free(a, n);
    assert_int_equal(fb_client_addrs_parse("[::1]:9000,127.0.1.1", &a, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(a[0], "[::1]:9000");
    assert_string_equal(a[1], "127.0.1.1:8080");
    fb_client_addrs_free(a, n);
}

static void test_addrs_parse_bad(void **state)
{
    const char *bad[] = {"",       ",",    "a:0",     "a:65536", "a:x",    "a,", ",a",
                         "::1:80", "[::1", "a:80:90", "a b:80",  "[::1]x", "a:"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char **a = (char **)1;
        size_t n = 7;
        assert_int_equal(fb_client_addrs_parse(bad[i], &a, &n), FB_EINVAL);
        assert_null(a);
        assert_int_equal(n, 0);
    }
}

static void test_addr_split(void **state)
{
    char host[64];
    int port;
    assert_int_equal(fb_client_addr_split("[::1]:81", host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 81);
    assert_int_equal(fb_client_addr_split("example.org", host, sizeof host, &port), 0);
    assert_string_equal(host, "example.org");
    assert_int_equal(port, 8080);
    assert_int_equal(fb_client_addr_split("averyveryveryverylonghostname:1", host, 8, &port),
                     FB_EINVAL);
}

/* ---- state file ---- */

static void fill_state(fb_cstate_t *st)
{
    fb_cstate_set_str(&st->user, "alice");
    fb_cstate_set_str(&st->token, "00ff00ff");
    fb_cstate_set_str(&st->device, "laptop");
    st->user_id = 5;
    st->device_id = 9;
    fb_cstate_room(st, 12, true)->r.cursor = 41;
    fb_cstate_room(st, 3, true)->r.cursor = 7;
    fb_cstate_room(st, 100, true)->r.cursor = 0;
    fb_cstate_outbox_add(st, 12, "c1", "hello");
    fb_cstate_outbox_add(st, 3, "c2", "안녕하세요\nline two");
    fb_cstate_outbox_add(st, 12, "c3", "third");
}

static void test_state_round_trip(void **state)
{
    char path[300];
    snprintf(path, sizeof path, "%s/alice.json", tmpdir);
    fb_cstate_t a, b;
    fb_cstate_init(&a);
    fb_cstate_init(&b);
    fill_state(&a);
    assert_int_equal(fb_cstate_save(&a, path), 0);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    char tmp[320];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    assert_int_not_equal(access(tmp, F_OK), 0);

    assert_int_equal(fb_cstate_load(&b, path), 0);
    json_t *ja = fb_cstate_to_json(&a), *jb = fb_cstate_to_json(&b);
    assert_true(json_equal(ja, jb));
    json_decref(ja);
    json_decref(jb);
    assert_string_equal(b.user, "alice");
    assert_string_equal(b.token, "00ff00ff");
    assert_int_equal(b.device_id, 9);
    assert_int_equal(fb_cstate_cursor(&b, 12), 41);
    assert_int_equal(fb_cstate_cursor(&b, 3), 7);
    assert_non_null(fb_cstate_room_c(&b, 100));
    assert_int_equal(b.n_out, 3);
    /* order survives */
    assert_string_equal(b.out_head->cmid, "c1");
    assert_string_equal(b.out_head->next->cmid, "c2");
    assert_string_equal(b.out_head->next->text, "안녕하세요\nline two");
    assert_string_equal(b.out_tail->cmid, "c3");

    /* removing from the middle, then saving again */
    fb_cstate_outbox_remove(&b, fb_cstate_outbox_find(&b, "c2"));
    assert_int_equal(fb_cstate_save(&b, path), 0);
    fb_cstate_t c;
    fb_cstate_init(&c);
    assert_int_equal(fb_cstate_load(&c, path), 0);
    assert_int_equal(c.n_out, 2);
    assert_string_equal(c.out_head->cmid, "c1");
    assert_string_equal(c.out_head->next->cmid, "c3");
    assert_null(fb_cstate_outbox_find(&c, "c2"));
    fb_cstate_free(&a);
    fb_cstate_free(&b);
    fb_cstate_free(&c);
}

static void test_state_load_errors(void **state)
{
    char path[300];
    fb_cstate_t st;
    fb_cstate_init(&st);
    snprintf(path, sizeof path, "%s/missing.json", tmpdir);
    assert_int_equal(fb_cstate_load(&st, path), FB_ENOTFOUND);
    const char *bad[] = {
        "not json",
        "[]",
        "{\"version\":2}",
        "{\"version\":1,\"cursors\":{\"x\":1}}",
        "{\"version\":1,\"cursors\":{\"5\":\"a\"}}",
        "{\"version\":1,\"outbox\":[{\"room\":1,\"cmid\":\"bad cmid\",\"text\":\"t\"}]}",
        "{\"version\":1,\"outbox\":[{\"room\":0,\"cmid\":\"a\",\"text\":\"t\"}]}"};
    snprintf(path, sizeof path, "%s/bad.json", tmpdir);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        FILE *f = fopen(path, "w");
        fputs(bad[i], f);
        fclose(f);
        fb_cstate_t s2;
        fb_cstate_init(&s2);
        assert_int_equal(fb_cstate_load(&s2, path), FB_EBADREQ);
        fb_cstate_free(&s2);
    }
    fb_cstate_free(&st);
}

/* ---- cursors ---- */

static void test_cursor_verdicts(void **state)
{
    fb_cstate_t st;
    fb_cstate_init(&st);
    st.user_id = 5;
    assert_int_equal(fb_cstate_push_verdict(&st, 12, 1), FB_CSTATE_APPLY);
    assert_int_equal(fb_cstate_push_verdict(&st, 12, 3), FB_CSTATE_GAP);
    assert_true(apply(&st, ev(12, 1, "create", 5, 0)));
    assert_int_equal(fb_cstate_cursor(&st, 12), 1);
    assert_int_equal(fb_cstate_push_verdict(&st, 12, 1), FB_CSTATE_DUP);
    assert_int_equal(fb_cstate_push_verdict(&st, 12, 2), FB_CSTATE_APPLY);
    assert_true(apply(&st, ev(12, 2, "text", 5, 0)));
    assert_int_equal(fb_cstate_push_verdict(&st, 12, 4), FB_CSTATE_GAP);
    assert_int_equal(fb_cstate_push_verdict(&st, 12, 2), FB_CSTATE_DUP);
    /* a sync may skip invisible seqs; a replay changes nothing */
    assert_true(apply(&st, ev(12, 9, "text", 5, 0)));
    assert_int_equal(fb_cstate_cursor(&st, 12), 9);
    assert_false(apply(&st, ev(12, 9, "text", 5, 0)));
    assert_false(apply(&st, ev(12, 4, "text", 5, 0)));
    assert_int_equal(fb_cstate_cursor(&st, 12), 9);
    /* rooms are independent */
    assert_int_equal(fb_cstate_push_verdict(&st, 13, 1), FB_CSTATE_APPLY);
    assert_int_equal(fb_cstate_cursor(&st, 13), 0);
    json_t *cur = fb_cstate_cursors(&st);
    assert_int_equal(json_integer_value(json_object_get(cur, "12")), 9);
    json_decref(cur);
    fb_cstate_free(&st);
}

static void test_rooms_sorted(void **state)
{
    fb_cstate_t st;
    fb_cstate_init(&st);
    int64_t ids[] = {50, 3, 17, 99, 1, 20, 4, 8, 70, 2};
    for (size_t i = 0; i < 10; i++)
        fb_cstate_room(&st, ids[i], true)->r.cursor = ids[i] * 10;
    assert_int_equal(st.n_rooms, 10);
    for (size_t i = 1; i < st.n_rooms; i++)
        assert_true(st.rooms[i - 1].r.id < st.rooms[i].r.id);
    for (size_t i = 0; i < 10; i++)
        assert_int_equal(fb_cstate_cursor(&st, ids[i]), ids[i] * 10);
    assert_null(fb_cstate_room(&st, 0, true));
    assert_null(fb_cstate_room(&st, 5, false));
    fb_cstate_free(&st);
}

/* ---- members and unread ---- */

static void test_membership_events(void **state)
{
    fb_cstate_t st;
    fb_cstate_init(&st);
    st.user_id = 6;
    /* 5 creates, invites 6 and 7 */
    apply(&st, ev(12, 1, "create", 5, 0));
    apply(&st, ev(12, 2, "join", 5, 6));
    apply(&st, ev(12, 3, "join", 5, 7));
    const fb_croom_t *cr = fb_cstate_room_c(&st, 12);
    assert_int_equal(cr->r.n_members, 3);
    assert_int_equal(cr->r.owner, 5);
    assert_int_equal(cr->r.status, FB_ROOM_MEMBER);
    /* the owner leaves: the earliest joiner (6) owns it */
    apply(&st, ev(12, 4, "leave", 5, 0));
    cr = fb_cstate_room_c(&st, 12);
    assert_int_equal(cr->r.n_members, 2);
    assert_int_equal(cr->r.owner, 6);
    assert_string_equal(cr->r.members[0].role, "owner");
    /* 6 kicks 7 */
    apply(&st, ev(12, 5, "kick", 6, 7));
    assert_int_equal(fb_cstate_room_c(&st, 12)->r.n_members, 1);
    json_t *rn = ev(12, 6, "rename", 6, 0);
    json_object_set_new(rn, "name", json_string("Club"));
    apply(&st, rn);
    assert_string_equal(fb_cstate_room_c(&st, 12)->r.name, "Club");
    /* I am removed: status left */
    apply(&st, ev(12, 7, "join", 6, 8));
    apply(&st, ev(12, 8, "kick", 8, 6));
    assert_int_equal(fb_cstate_room_c(&st, 12)->r.status, FB_ROOM_LEFT);
    fb_cstate_free(&st);
}

static json_t *members3(void)
{
    return json_pack("[{s:i,s:s,s:s,s:i,s:i},{s:i,s:s,s:s,s:i,s:i},{s:i,s:s,s:s,s:i,s:i}]", "id", 5,
                     "name", "alice", "role", "owner", "joined_seq", 1, "read_seq", 10, "id", 6,
                     "name", "bob", "role", "member", "joined_seq", 2, "read_seq", 4, "id", 7,
                     "name", "carol", "role", "member", "joined_seq", 8, "read_seq", 8);
}

static void test_unread_for(void **state)
{
    fb_cstate_t st;
    fb_cstate_init(&st);
    json_t *m = members3();
    fb_cstate_set_members(&st, 12, m);
    json_decref(m);
    assert_int_equal(fb_cstate_room_c(&st, 12)->r.owner, 5);
    /* seq 5 by alice: bob (4 < 5) unread; carol joined at 8, after it */
    assert_int_equal(fb_cstate_unread_for(&st, 12, 5, 5), 1);
    /* seq 10 by alice: bob and carol */
    assert_int_equal(fb_cstate_unread_for(&st, 12, 10, 5), 2);
    /* seq 10 by bob: carol only (alice read 10, the sender never counts) */
    assert_int_equal(fb_cstate_unread_for(&st, 12, 10, 6), 1);
    fb_cstate_apply_read(&st, 12, 6, 10);
    assert_int_equal(fb_cstate_unread_for(&st, 12, 10, 5), 1);
    /* markers never move back */
    fb_cstate_apply_read(&st, 12, 6, 3);
    assert_int_equal(fb_cstate_unread_for(&st, 12, 10, 5), 1);
    fb_cstate_apply_read(&st, 12, 7, 11);
    assert_int_equal(fb_cstate_unread_for(&st, 12, 10, 5), 0);
    /* a new snapshot with older markers keeps the higher ones */
    m = members3();
    fb_cstate_set_members(&st, 12, m);
    json_decref(m);
    assert_int_equal(fb_cstate_unread_for(&st, 12, 10, 5), 0);
    /* a new member counts for what comes after its join only */
    apply(&st, ev(12, 12, "join", 5, 9));
    assert_int_equal(fb_cstate_unread_for(&st, 12, 11, 5), 1); /* bob read 10 */
    assert_int_equal(fb_cstate_unread_for(&st, 12, 13, 5), 3);
    /* sending marks the sender read */
    apply(&st, ev(12, 13, "text", 6, 0));
    assert_int_equal(fb_cstate_unread_for(&st, 12, 13, 5), 2);
    assert_int_equal(fb_cstate_unread_for(&st, 99, 1, 5), 0);
    fb_cstate_free(&st);
}

/* A sync entry's member list is the snapshot at last_seq; replaying the
 * membership events up to it must not undo it. */
static void test_sync_replay_idempotent(void **state)
{
    fb_cstate_t st;
    fb_cstate_init(&st);
    st.user_id = 6;
    json_t *entry = json_pack(
        "{s:i,s:s,s:s,s:s,s:i,s:i,s:[{s:i,s:s,s:s,s:i,s:i},{s:i,s:s,s:s,s:i,s:i}]}", "room", 12,
        "status", "member", "kind", "group", "name", "Club", "owner", 6, "last_seq", 6, "members",
        "id", 6, "name", "bob", "role", "owner", "joined_seq", 2, "read_seq", 6, "id", 7, "name",
        "carol", "role", "member", "joined_seq", 6, "read_seq", 0);
    fb_cstate_apply_room_meta(&st, entry);
    json_decref(entry);
    /* history: 5 creates, 6 and 7 join, 7 leaves, 5 leaves, 7 rejoins at 6 */
    apply(&st, ev(12, 2, "join", 5, 6));
    apply(&st, ev(12, 3, "join", 5, 7));
    apply(&st, ev(12, 4, "leave", 7, 0));
    apply(&st, ev(12, 5, "leave", 5, 0));
    apply(&st, ev(12, 6, "join", 6, 7));
    const fb_croom_t *cr = fb_cstate_room_c(&st, 12);
    assert_int_equal(cr->r.cursor, 6);
    assert_int_equal(cr->r.n_members, 2);
    assert_int_equal(cr->r.owner, 6);
    assert_string_equal(cr->r.kind, "group");
    assert_string_equal(cr->r.name, "Club");
    assert_int_equal(cr->r.status, FB_ROOM_MEMBER);
    fb_cstate_free(&st);
}

static void test_json_user_id(void **state)
{
    json_t *a = json_integer(7), *b = json_pack("{s:i,s:s}", "id", 8, "name", "x"),
           *c = json_string("9");
    assert_int_equal(fb_client_json_user_id(a), 7);
    assert_int_equal(fb_client_json_user_id(b), 8);
    assert_int_equal(fb_client_json_user_id(c), 0);
    assert_int_equal(fb_client_json_user_id(NULL), 0);
    json_decref(a);
    json_decref(b);
    json_decref(c);
}

static void test_cmid(void **state)
{
    char a[FB_CLIENT_CMID_LEN + 1], b[FB_CLIENT_CMID_LEN + 1];
    fb_client_gen_cmid(a);
    fb_client_gen_cmid(b);
    assert_int_equal(strlen(a), FB_CLIENT_CMID_LEN);
    assert_string_not_equal(a, b);
    assert_true(fb_client_cmid_valid(a));
    assert_true(fb_client_cmid_valid("A-z.0_9:x"));
    assert_false(fb_client_cmid_valid(""));
    assert_false(fb_client_cmid_valid("a b"));
    assert_false(fb_client_cmid_valid("é"));
    char big[66];
    memset(big, 'a', 65);
    big[65] = 0;
    assert_false(fb_client_cmid_valid(big));
    big[64] = 0;
    assert_true(fb_client_cmid_valid(big));
}

/* ---- the client object, offline ---- */

static void test_client_offline_outbox(void **state)
{
    char path[300];
    snprintf(path, sizeof path, "%s/bob.json", tmpdir);
    uv_loop_t loop;
    uv_loop_init(&loop);
    fb_client_opts_t o = {.state_path = path, .user = "bob", .servers = "127.0.0.1:1"};
    fb_client_t *c;
    assert_int_equal(fb_client_new(&loop, &o, &c), 0);
    assert_int_equal(fb_client_state(c), FB_CLIENT_IDLE);
    assert_int_equal(fb_client_send(c, 4, "first", NULL, NULL, NULL), 0);
    assert_int_equal(fb_client_send(c, 4, "second", "my-cmid", NULL, NULL), 0);
    /* one cmid, one message */
    assert_int_equal(fb_client_send(c, 4, "again", "my-cmid", NULL, NULL), FB_EINVAL);
    assert_int_equal(fb_client_send(c, 0, "no room", NULL, NULL, NULL), FB_EINVAL);
    assert_int_equal(fb_client_send(c, 4, "", NULL, NULL, NULL), FB_EINVAL);
    assert_int_equal(fb_client_send(c, 4, "x", "bad cmid", NULL, NULL), FB_EINVAL);
    char *big = malloc(9000);
    memset(big, 'a', 8999);
    big[8999] = 0;
    assert_int_equal(fb_client_send(c, 4, big, NULL, NULL, NULL), FB_ETOOBIG);
    free(big);
    assert_int_equal(fb_client_outbox_count(c), 2);
    assert_int_equal(fb_client_request(c, json_pack("{s:i}", "room", 1), NULL, NULL), FB_EINVAL);
    /* queued, not sent: the client is not started */
    assert_int_equal(fb_client_ping(c, NULL, NULL), 0);
    fb_client_free_sync(c);
    uv_run(&loop, UV_RUN_DEFAULT);

    /* a new process finds the outbox, in order */
    assert_int_equal(fb_client_new(&loop, &o, &c), 0);
    assert_int_equal(fb_client_outbox_count(c), 2);
    int64_t room;
    const char *cmid, *text;
    assert_int_equal(fb_client_outbox_get(c, 0, &room, &cmid, &text), 0);
    assert_int_equal(room, 4);
    assert_string_equal(text, "first");
    assert_int_equal(strlen(cmid), FB_CLIENT_CMID_LEN);
    assert_int_equal(fb_client_outbox_get(c, 1, &room, &cmid, &text), 0);
    assert_string_equal(cmid, "my-cmid");
    assert_int_equal(fb_client_outbox_get(c, 2, NULL, NULL, NULL), FB_ENOTFOUND);
    assert_string_equal(fb_client_user(c), "bob");
    fb_client_free_sync(c);

    /* the state file of another user is refused */
    fb_client_opts_t o2 = {.state_path = path, .user = "carol"};
    assert_int_equal(fb_client_new(&loop, &o2, &c), FB_EINVAL);
    assert_null(c);
    fb_client_opts_t o3 = {.servers = "nope:"};
    assert_int_equal(fb_client_new(&loop, &o3, &c), FB_EINVAL);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static int n_failed;
static void count_fail(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    if (err == FB_EUNAVAIL) n_failed++;
}

static void test_client_close_fails_pending(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    fb_client_opts_t o = {.servers = "127.0.0.1:1"};
    fb_client_t *c;
    assert_int_equal(fb_client_new(&loop, &o, &c), 0);
    n_failed = 0;
    assert_int_equal(fb_client_rooms(c, count_fail, NULL), 0);
    assert_int_equal(fb_client_send(c, 1, "hi", NULL, count_fail, NULL), 0);
    assert_int_equal(fb_client_sync(c, count_fail, NULL), 0);
    fb_client_free_sync(c);
    assert_int_equal(n_failed, 3);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Nothing listens on port 1: the client cycles and reports it cannot connect. */
static void test_client_unreachable(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    fb_client_opts_t o = {
        .servers = "127.0.0.1:1,127.0.0.1:2", .user = "x", .password = "12345678"};
    fb_client_t *c;
    assert_int_equal(fb_client_new(&loop, &o, &c), 0);
    assert_int_equal(fb_client_connect_sync(c, 600), FB_EUNAVAIL);
    assert_false(fb_client_ever_connected(c));
    json_t *reply = (json_t *)1;
    assert_int_equal(fb_client_call_sync(c, json_pack("{s:s}", "op", "rooms"), &reply, 50),
                     FB_CLIENT_ETIMEDOUT);
    assert_null(reply);
    json_t *e;
    assert_int_equal(fb_client_next_event(c, &e, 10), FB_CLIENT_ETIMEDOUT);
    fb_client_free_sync(c);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    fb_mem_install_hooks();
    fb_log_set_level(FB_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addrs_parse_ok),
        cmocka_unit_test(test_addrs_parse_bad),
        cmocka_unit_test(test_addr_split),
        cmocka_unit_test(test_state_round_trip),
        cmocka_unit_test(test_state_load_errors),
        cmocka_unit_test(test_cursor_verdicts),
        cmocka_unit_test(test_rooms_sorted),
        cmocka_unit_test(test_membership_events),
        cmocka_unit_test(test_unread_for),
        cmocka_unit_test(test_sync_replay_idempotent),
        cmocka_unit_test(test_json_user_id),
        cmocka_unit_test(test_cmid),
        cmocka_unit_test(test_client_offline_outbox),
        cmocka_unit_test(test_client_close_fails_pending),
        cmocka_unit_test(test_client_unreachable),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
