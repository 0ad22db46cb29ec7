/* Chat protocol tests against a real node through the C client library: direct
 * and group rooms, pushes, offline catch-up, retried sends, unread counts,
 * history pages, logout and persistence across a restart. Only 127.0.0.1.
 * SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "client/client.h"
#include "common/node.h"

#define PASSWORD "correct horse"
#define IO_MS 5000     /* the longest one reply or one pushed event may take */
#define BURST_MS 30000 /* a burst of sends, every one acknowledged */
#define QUIET_MS 300   /* how long "nothing more arrives" is watched */
#define MAX_CLIENTS 12
#define MAX_SENDS 256

typedef struct {
    bool done;
    int err;
    int64_t room, seq, ts;
    bool dup;
} ack_t;

/* One node and every client of one test. Ack records live here, not on a
 * test's stack: a failing test leaves sends in flight whose callbacks run
 * when teardown closes the clients. */
typedef struct {
    fb_test_node_t node;
    uv_loop_t loop;
    fb_client_t *c[MAX_CLIENTS];
    ack_t acks[MAX_SENDS];
    char texts[MAX_SENDS][48];
} fx_t;

/* ---- small helpers ---- */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t jint(const json_t *o, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(o, key));
}

/* Never NULL, so assert_string_equal reports a missing field as a mismatch. */
static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "(missing)";
}

static const char *from_name(const json_t *ev)
{
    return jstr(json_object_get(ev, "from"), "name");
}

static int64_t from_id(const json_t *ev)
{
    return jint(json_object_get(ev, "from"), "id");
}

static void describe(const json_t *j, char *out, size_t n)
{
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    snprintf(out, n, "%s", s ? s : "(null)");
    free(s);
}

static void show(const char *what, const json_t *j)
{
    char buf[2048];
    describe(j, buf, sizeof buf);
    fprintf(stderr, "%s: %s\n", what, buf);
}

static const char *who(fb_client_t *c)
{
    return fb_client_user(c) ? fb_client_user(c) : "?";
}

/* ---- fixture: one node per test ---- */

/* The end of the node's log (its sanitizer report, if any), before the
 * folder holding it is removed. */
static void show_log(const fb_test_node_t *n)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "grep -v ' info ' '%s' | tail -n 150 >&2", n->log);
    if (system(cmd) != 0) fprintf(stderr, "(no log at %s)\n", n->log);
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (!fx) return -1;
    if (uv_loop_init(&fx->loop) != 0) {
        free(fx);
        return -1;
    }
    if (fb_test_node_start(&fx->node) != 0) {
        fb_test_node_cleanup(&fx->node);
        uv_loop_close(&fx->loop);
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    int rc = 0;
    if (!fx) return 0;
    for (int i = 0; i < MAX_CLIENTS; i++) {
        if (fx->c[i]) fb_client_free_sync(fx->c[i]);
        fx->c[i] = NULL;
    }
    uv_walk(&fx->loop, close_walk, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    uv_loop_close(&fx->loop);
    if (fx->node.pid > 0) {
        int st = fb_test_node_stop(&fx->node, SIGTERM);
        if (st != 0) {
            fprintf(stderr, "node exited with status %d after SIGTERM\n", st);
            show_log(&fx->node);
            rc = -1;
        }
    }
    fb_test_node_cleanup(&fx->node);
    free(fx);
    return rc;
}

/* ---- clients ---- */

static fb_client_t *fx_add(fx_t *fx, fb_client_opts_t o)
{
    o.servers = fx->node.addr;
    o.queue_events = true;
    fb_client_t *c = NULL;
    assert_int_equal(fb_client_new(&fx->loop, &o, &c), 0);
    for (int i = 0; i < MAX_CLIENTS; i++) {
        if (!fx->c[i]) {
            fx->c[i] = c;
            return c;
        }
    }
    fb_client_free_sync(c);
    fail_msg("more than %d clients", MAX_CLIENTS);
    return NULL;
}

static void fx_drop(fx_t *fx, fb_client_t *c)
{
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (fx->c[i] == c) fx->c[i] = NULL;
    fb_client_free_sync(c);
}

static bool is_ready(void *arg)
{
    return fb_client_state(arg) == FB_CLIENT_READY;
}

static bool is_not_ready(void *arg)
{
    return fb_client_state(arg) != FB_CLIENT_READY;
}

static bool is_stopped(void *arg)
{
    return fb_client_state(arg) == FB_CLIENT_STOPPED;
}

static bool outbox_empty(void *arg)
{
    return fb_client_outbox_count(arg) == 0;
}

static void wait_ready(fb_client_t *c, int timeout_ms)
{
    if (fb_client_run_until(c, is_ready, c, timeout_ms) != 0)
        fail_msg("%s: not ready after %d ms (state %s, stop reason %s)", who(c), timeout_ms,
                 fb_client_state_name(fb_client_state(c)),
                 fb_client_strerror(fb_client_stop_reason(c)));
}

static json_t *call_ok(fb_client_t *c, json_t *req)
{
    char what[512];
    describe(req, what, sizeof what);
    json_t *reply = NULL;
    int rc = fb_client_call_sync(c, req, &reply, IO_MS);
    if (rc) {
        char got[512];
        describe(reply, got, sizeof got);
        json_decref(reply);
        fail_msg("%s: %s -> %s (%s)", who(c), what, fb_client_strerror(rc), got);
    }
    if (!json_is_true(json_object_get(reply, "ok"))) {
        show("reply", reply);
        fail_msg("%s: %s: reply without ok:true", who(c), what);
    }
    return reply;
}

/* The request must fail with `code`, documented as not retryable. */
static void call_fails(fb_client_t *c, json_t *req, const char *code)
{
    char what[512], got[512];
    describe(req, what, sizeof what);
    json_t *reply = NULL;
    int rc = fb_client_call_sync(c, req, &reply, IO_MS);
    json_t *err = json_object_get(reply, "error");
    snprintf(got, sizeof got, "%s",
             rc == 0 ? "ok"
             : err   ? jstr(err, "code")
                     : fb_client_strerror(rc));
    bool retryable = !json_is_false(json_object_get(err, "retryable"));
    json_decref(reply);
    if (strcmp(got, code) != 0)
        fail_msg("%s: %s: expected error %s, got %s", who(c), what, code, got);
    if (retryable) fail_msg("%s: %s: error %s must say retryable:false", who(c), what, code);
}

static void call_drop(fb_client_t *c, json_t *req)
{
    json_decref(call_ok(c, req));
}

static json_t *req_send(int64_t room, const char *cmid, const char *text)
{
    return json_pack("{s:s,s:I,s:s,s:s}", "op", "send", "room", (json_int_t)room, "cmid", cmid,
                     "text", text);
}

static json_t *req_room(const char *op, int64_t room)
{
    return json_pack("{s:s,s:I}", "op", op, "room", (json_int_t)room);
}

static json_t *req_read(int64_t room, int64_t seq)
{
    return json_pack("{s:s,s:I,s:I}", "op", "read", "room", (json_int_t)room, "seq",
                     (json_int_t)seq);
}

static json_t *req_history(int64_t room, int64_t before, int limit)
{
    json_t *req = req_room("history", room);
    if (before) json_object_set_new(req, "before", json_integer((json_int_t)before));
    if (limit) json_object_set_new(req, "limit", json_integer(limit));
    return req;
}

/* Sends and checks the plain ack; returns its seq. */
static int64_t send_ok(fb_client_t *c, int64_t room, const char *cmid, const char *text)
{
    json_t *ack = call_ok(c, req_send(room, cmid, text));
    assert_int_equal(jint(ack, "room"), room);
    assert_true(json_is_false(json_object_get(ack, "duplicate")));
    int64_t seq = jint(ack, "seq");
    assert_true(seq > 0);
    json_decref(ack);
    return seq;
}

static int64_t direct_room(fb_client_t *c, const char *peer)
{
    json_t *r = call_ok(c, json_pack("{s:s,s:s}", "op", "direct", "user", peer));
    json_t *sum = json_object_get(r, "room");
    int64_t room = jint(sum, "room");
    assert_string_equal(jstr(sum, "kind"), "direct");
    assert_string_equal(jstr(json_object_get(sum, "peer"), "name"), peer);
    json_decref(r);
    return room;
}

/* The `room` op: summary and members. */
static json_t *room_info(fb_client_t *c, int64_t room)
{
    return call_ok(c, req_room("room", room));
}

static const json_t *member_of(const json_t *info, const char *name)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(info, "members"), i, m)
    {
        if (!strcmp(jstr(m, "name"), name)) return m;
    }
    return NULL;
}

static int64_t last_seq(fb_client_t *c, int64_t room)
{
    json_t *info = room_info(c, room);
    int64_t last = jint(json_object_get(info, "room"), "last_seq");
    json_decref(info);
    return last;
}

/* This room's entry of the caller's `rooms` (a new reference). */
static json_t *rooms_entry(fb_client_t *c, int64_t room)
{
    json_t *r = call_ok(c, json_pack("{s:s}", "op", "rooms"));
    size_t i;
    json_t *e, *found = NULL;
    json_array_foreach(json_object_get(r, "rooms"), i, e)
    {
        if (jint(e, "room") == room) found = json_incref(e);
    }
    json_decref(r);
    if (!found) fail_msg("%s: room %lld missing from rooms", who(c), (long long)room);
    return found;
}

/* read_seq < 0: not checked. */
static void expect_unread(fb_client_t *c, int64_t room, int64_t unread, int64_t read_seq)
{
    json_t *e = rooms_entry(c, room);
    int64_t u = jint(e, "unread"), r = jint(e, "read_seq");
    json_decref(e);
    if (u != unread || (read_seq >= 0 && r != read_seq))
        fail_msg("%s: rooms: room %lld unread %lld read_seq %lld, expected %lld and %lld", who(c),
                 (long long)room, (long long)u, (long long)r, (long long)unread,
                 (long long)read_seq);
}

/* Every event of a room visible to c, oldest first (at most 200). */
static json_t *history_all(fb_client_t *c, int64_t room)
{
    json_t *r = call_ok(c, req_history(room, 0, 200));
    assert_false(json_is_true(json_object_get(r, "more")));
    json_t *evs = json_incref(json_object_get(r, "events"));
    json_decref(r);
    return evs;
}

static const json_t *event_at(const json_t *evs, int64_t seq)
{
    size_t i;
    json_t *e;
    json_array_foreach(evs, i, e)
    {
        if (jint(e, "seq") == seq) return e;
    }
    return NULL;
}

/* ---- asynchronous sends ---- */

static void on_ack(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    ack_t *a = ud;
    a->done = true;
    a->err = err;
    if (err) {
        fprintf(stderr, "send refused: %s\n", msg ? msg : fb_client_strerror(err));
        return;
    }
    a->room = jint(reply, "room");
    a->seq = jint(reply, "seq");
    a->ts = jint(reply, "ts");
    a->dup = json_is_true(json_object_get(reply, "duplicate"));
}

typedef struct {
    const ack_t *a;
    size_t n;
} acks_t;

static bool all_acked(void *arg)
{
    const acks_t *w = arg;
    for (size_t i = 0; i < w->n; i++)
        if (!w->a[i].done) return false;
    return true;
}

/* Queues fx->texts[i] as acks[i] through the outbox (no waiting). */
static void send_async(fx_t *fx, fb_client_t *c, int64_t room, size_t i)
{
    fx->acks[i] = (ack_t){0};
    assert_int_equal(fb_client_send(c, room, fx->texts[i], NULL, on_ack, &fx->acks[i]), 0);
}

static void wait_acks(fx_t *fx, fb_client_t *c, size_t n)
{
    acks_t w = {fx->acks, n};
    if (fb_client_run_until(c, all_acked, &w, BURST_MS) != 0)
        fail_msg("not every send was acknowledged within %d ms", BURST_MS);
    for (size_t i = 0; i < n; i++) {
        if (fx->acks[i].err)
            fail_msg("send %zu refused: %s", i, fb_client_strerror(fx->acks[i].err));
        assert_false(fx->acks[i].dup);
    }
}

/* ---- events ---- */

/* The next queued event named `kind` (of `room`, unless 0), skipping others;
 * NULL when none comes within timeout_ms. */
static json_t *next_of(fb_client_t *c, const char *kind, int64_t room, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - mono_ms();
        json_t *ev = NULL;
        if (fb_client_next_event(c, &ev, left > 0 ? (int)left : 0) != 0) return NULL;
        if (!strcmp(jstr(ev, "event"), kind) && (!room || jint(ev, "room") == room)) return ev;
        json_decref(ev);
    }
}

static json_t *expect_of(fb_client_t *c, const char *kind, int64_t room)
{
    json_t *ev = next_of(c, kind, room, IO_MS);
    if (!ev)
        fail_msg("%s: no %s event for room %lld within %d ms", who(c), kind, (long long)room,
                 IO_MS);
    return ev;
}

/* The msg events of `room` that c sees next must be exactly seqs first..last,
 * in order; returns them as an array. */
static json_t *expect_msgs(fb_client_t *c, int64_t room, int64_t first, int64_t last)
{
    json_t *all = json_array();
    for (int64_t s = first; s <= last; s++) {
        json_t *ev = next_of(c, "msg", room, IO_MS);
        if (!ev) {
            json_decref(all);
            fail_msg("%s: room %lld: no event with seq %lld (expected %lld..%lld)", who(c),
                     (long long)room, (long long)s, (long long)first, (long long)last);
        }
        if (jint(ev, "seq") != s) {
            show("unexpected event", ev);
            int64_t got = jint(ev, "seq");
            json_decref(ev);
            json_decref(all);
            fail_msg("%s: room %lld: expected seq %lld, got %lld (a gap, a duplicate or disorder)",
                     who(c), (long long)room, (long long)s, (long long)got);
        }
        json_array_append_new(all, ev);
    }
    return all;
}

static void expect_msgs_drop(fb_client_t *c, int64_t room, int64_t first, int64_t last)
{
    json_decref(expect_msgs(c, room, first, last));
}

/* Skips the msg events of `room` before seq `seq`; returns the one at seq. */
static json_t *msg_at(fb_client_t *c, int64_t room, int64_t seq)
{
    for (;;) {
        json_t *ev = expect_of(c, "msg", room);
        int64_t s = jint(ev, "seq");
        if (s == seq) return ev;
        json_decref(ev);
        if (s > seq)
            fail_msg("%s: room %lld: seq %lld came while waiting for %lld", who(c), (long long)room,
                     (long long)s, (long long)seq);
    }
}

static void skip_to(fb_client_t *c, int64_t room, int64_t upto)
{
    json_decref(msg_at(c, room, upto));
}

static void expect_quiet(fb_client_t *c, int64_t room)
{
    json_t *ev = next_of(c, "msg", room, QUIET_MS);
    if (ev) {
        show("unexpected event", ev);
        int64_t s = jint(ev, "seq");
        json_decref(ev);
        fail_msg("%s: room %lld: unexpected event seq %lld", who(c), (long long)room, (long long)s);
    }
}

static void drain(fb_client_t *c)
{
    json_t *ev;
    while (fb_client_next_event(c, &ev, 0) == 0)
        json_decref(ev);
}

/* A read event for (room, user, seq) must come next among c's read events. */
static void expect_read_event(fb_client_t *c, int64_t room, int64_t user, int64_t seq)
{
    json_t *ev = expect_of(c, "read", room);
    int64_t u = fb_client_json_user_id(json_object_get(ev, "user")), s = jint(ev, "seq");
    if (u != user || s != seq) {
        show("read event", ev);
        json_decref(ev);
        fail_msg("%s: read event of user %lld seq %lld, expected user %lld seq %lld", who(c),
                 (long long)u, (long long)s, (long long)user, (long long)seq);
    }
    json_decref(ev);
}

/* A text event as documented; unread < 0: not checked. */
static void check_text(const json_t *ev, int64_t room, int64_t seq, int64_t ts, fb_client_t *from,
                       const char *cmid, const char *text, int64_t unread)
{
    if (jint(ev, "room") != room || jint(ev, "seq") != seq || (ts && jint(ev, "ts") != ts) ||
        strcmp(jstr(ev, "type"), "text") != 0 || from_id(ev) != fb_client_user_id(from) ||
        strcmp(from_name(ev), fb_client_user(from)) != 0 ||
        jint(ev, "device") != fb_client_device_id(from) ||
        (cmid && strcmp(jstr(ev, "cmid"), cmid) != 0) || strcmp(jstr(ev, "text"), text) != 0 ||
        (unread >= 0 && jint(ev, "unread") != unread)) {
        show("event", ev);
        fail_msg("expected text event room %lld seq %lld ts %lld from %s device %lld cmid %s "
                 "text \"%s\" unread %lld",
                 (long long)room, (long long)seq, (long long)ts, fb_client_user(from),
                 (long long)fb_client_device_id(from), cmid ? cmid : "*", text, (long long)unread);
    }
}

static void check_event(const json_t *ev, int64_t seq, const char *type, const char *from,
                        const char *target)
{
    if (jint(ev, "seq") != seq || strcmp(jstr(ev, "type"), type) != 0 ||
        strcmp(from_name(ev), from) != 0 ||
        (target && strcmp(jstr(json_object_get(ev, "target"), "name"), target) != 0)) {
        show("event", ev);
        fail_msg("expected seq %lld type %s from %s target %s", (long long)seq, type, from,
                 target ? target : "-");
    }
}

/* Stops the node with SIGTERM (an orderly exit: status 0) and waits until
 * every client has noticed. */
static void stop_node(fx_t *fx)
{
    int st = fb_test_node_stop(&fx->node, SIGTERM);
    if (st != 0) {
        show_log(&fx->node);
        fail_msg("node exited with status %d after SIGTERM", st);
    }
    for (int i = 0; i < MAX_CLIENTS; i++) {
        if (!fx->c[i] || fb_client_state(fx->c[i]) == FB_CLIENT_IDLE) continue;
        if (fb_client_run_until(fx->c[i], is_not_ready, fx->c[i], IO_MS) != 0)
            fail_msg("%s did not notice the node going away", who(fx->c[i]));
    }
}

static void restart_node(fx_t *fx)
{
    assert_int_equal(fb_test_node_restart(&fx->node), 0);
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (fx->c[i] && fb_client_state(fx->c[i]) != FB_CLIENT_IDLE) wait_ready(fx->c[i], 10000);
}

static fb_client_t *fx_register(fx_t *fx, const char *user, const char *device)
{
    fb_client_t *c = fx_add(fx, (fb_client_opts_t){0});
    int rc = fb_client_connect_sync(c, IO_MS);
    if (rc) fail_msg("connect to %s: %s", fx->node.addr, fb_client_strerror(rc));
    json_t *r = call_ok(c, json_pack("{s:s,s:s,s:s,s:s}", "op", "register", "user", user,
                                     "password", PASSWORD, "device", device));
    assert_string_equal(jstr(json_object_get(r, "user"), "name"), user);
    assert_true(jint(json_object_get(r, "user"), "id") > 0);
    assert_string_equal(jstr(json_object_get(r, "device"), "name"), device);
    assert_true(jint(json_object_get(r, "device"), "id") > 0);
    assert_int_equal(strlen(jstr(r, "token")), 64);
    json_decref(r);
    wait_ready(c, IO_MS);
    assert_string_equal(fb_client_user(c), user);
    return c;
}

static fb_client_t *fx_login(fx_t *fx, const char *user, const char *device, const char *state_path)
{
    fb_client_t *c = fx_add(
        fx, (fb_client_opts_t){
                .user = user, .password = PASSWORD, .device = device, .state_path = state_path});
    int rc = fb_client_connect_sync(c, IO_MS);
    if (rc) fail_msg("%s/%s: login: %s", user, device, fb_client_strerror(rc));
    assert_int_equal(fb_client_state(c), FB_CLIENT_READY);
    return c;
}

/* The msg events c sees first for a room it is in: from its own join on. */
static void skip_opening(fb_client_t *c, int64_t room, const char *name, const json_t *info)
{
    const json_t *m = member_of(info, name);
    assert_non_null(m);
    int64_t last = jint(json_object_get(info, "room"), "last_seq");
    expect_msgs_drop(c, room, jint(m, "joined_seq"), last);
}

/* ---- 1. direct rooms, acks and pushes ---- */

static void test_direct_room_and_pushes(void **state)
{
    fx_t *fx = *state;
    fb_client_t *laptop = fx_register(fx, "alice", "laptop");
    fb_client_t *bob = fx_register(fx, "bob", "pc");
    fb_client_t *phone = fx_login(fx, "alice", "phone", NULL);
    fb_client_t *all[3] = {laptop, phone, bob};
    int64_t alice_id = fb_client_user_id(laptop), bob_id = fb_client_user_id(bob);
    assert_true(alice_id > 0 && bob_id > 0 && alice_id != bob_id);
    assert_int_equal(fb_client_user_id(phone), alice_id);
    assert_true(fb_client_device_id(phone) != fb_client_device_id(laptop));

    /* one direct room per pair, whichever side asks and however often */
    json_t *r = call_ok(laptop, json_pack("{s:s,s:s}", "op", "direct", "user", "bob"));
    json_t *sum = json_object_get(r, "room");
    int64_t room = jint(sum, "room"), base = jint(sum, "last_seq");
    assert_true(room > 0);
    assert_true(base >= 1);
    assert_string_equal(jstr(sum, "kind"), "direct");
    assert_string_equal(jstr(sum, "name"), "");
    assert_int_equal(jint(json_object_get(sum, "peer"), "id"), bob_id);
    assert_string_equal(jstr(json_object_get(sum, "peer"), "name"), "bob");
    assert_int_equal(jint(sum, "member_count"), 2);
    assert_int_equal(jint(sum, "unread"), 0);
    assert_null(json_object_get(sum, "last"));
    json_decref(r);
    assert_int_equal(direct_room(bob, "alice"), room);
    assert_int_equal(direct_room(phone, "bob"), room);
    assert_int_equal(direct_room(laptop, "bob"), room);
    assert_int_equal(direct_room(bob, "alice"), room);
    call_fails(laptop, json_pack("{s:s,s:s}", "op", "direct", "user", "alice"), "invalid_argument");
    call_fails(laptop, json_pack("{s:s,s:s}", "op", "direct", "user", "nobody"), "not_found");

    json_t *info = room_info(bob, room);
    assert_int_equal(jint(json_object_get(info, "room"), "last_seq"), base);
    assert_int_equal(json_array_size(json_object_get(info, "members")), 2);
    json_t *first = history_all(laptop, room);
    assert_int_equal(json_array_size(first), base);
    check_event(json_array_get(first, 0), 1, "create", "alice", NULL);
    json_decref(first);
    for (int i = 0; i < 3; i++)
        skip_opening(all[i], room, i < 2 ? "alice" : "bob", info);
    json_decref(info);

    /* an observer without the library's cursors sees the pushes as the node sends them */
    fb_client_t *raw =
        fx_add(fx, (fb_client_opts_t){
                       .user = "bob", .password = PASSWORD, .device = "raw", .raw_events = true});
    assert_int_equal(fb_client_connect_sync(raw, IO_MS), 0);

    /* a send: the ack, then the push to every connection of both members */
    json_t *ack = call_ok(laptop, req_send(room, "a-1", "hello bob"));
    assert_int_equal(jint(ack, "room"), room);
    assert_int_equal(jint(ack, "seq"), base + 1);
    int64_t ts = jint(ack, "ts");
    if (llabs((long long)(ts - wall_ms())) > 60000)
        fail_msg("ack ts %lld is not the server time in ms (now %lld)", (long long)ts,
                 (long long)wall_ms());
    assert_true(json_is_false(json_object_get(ack, "duplicate")));
    json_decref(ack);
    for (int i = 0; i < 3; i++) {
        json_t *evs = expect_msgs(all[i], room, base + 1, base + 1);
        check_text(json_array_get(evs, 0), room, base + 1, ts, laptop, "a-1", "hello bob", 1);
        json_decref(evs);
    }

    /* three devices at once: gapless seqs, each connection's sends in order */
    enum { ROUNDS = 10, N = 3 * ROUNDS };
    for (int k = 0; k < ROUNDS; k++) {
        for (int s = 0; s < 3; s++) {
            int i = k * 3 + s;
            snprintf(fx->texts[i], sizeof fx->texts[i], "%s says %d",
                     s == 0   ? "laptop"
                     : s == 1 ? "phone"
                              : "bob",
                     k);
            send_async(fx, all[s], room, (size_t)i);
        }
    }
    wait_acks(fx, laptop, N);
    int at[N];
    for (int i = 0; i < N; i++)
        at[i] = -1;
    for (int i = 0; i < N; i++) {
        int64_t idx = fx->acks[i].seq - (base + 2);
        assert_int_equal(fx->acks[i].room, room);
        if (idx < 0 || idx >= N || at[idx] >= 0)
            fail_msg("send %d acked with seq %lld: outside %lld..%lld or twice", i,
                     (long long)fx->acks[i].seq, (long long)(base + 2), (long long)(base + 1 + N));
        at[idx] = i;
        if (i >= 3) assert_true(fx->acks[i].seq > fx->acks[i - 3].seq);
    }
    for (int d = 0; d < 3; d++) {
        json_t *evs = expect_msgs(all[d], room, base + 2, base + 1 + N);
        for (int j = 0; j < N; j++) {
            int i = at[j];
            check_text(json_array_get(evs, (size_t)j), room, base + 2 + j, fx->acks[i].ts,
                       all[i % 3], NULL, fx->texts[i], -1);
        }
        json_decref(evs);
        expect_quiet(all[d], room);
    }
    expect_msgs_drop(raw, room, base + 1, base + 1 + N); /* pushed in seq order, once each */
    expect_quiet(raw, room);
    int64_t top = base + 1 + N;
    assert_int_equal(last_seq(phone, room), top);

    /* bob leaves the 1:1 room; asking for it again adds him back with a join */
    json_t *lv = call_ok(bob, req_room("leave", room));
    assert_int_equal(jint(lv, "seq"), top + 1);
    json_decref(lv);
    for (int d = 0; d < 3; d++) {
        json_t *ev = msg_at(all[d], room, top + 1);
        check_event(ev, top + 1, "leave", "bob", NULL);
        json_decref(ev);
    }
    call_fails(bob, req_send(room, "b-gone", "am I here?"), "not_member");
    assert_int_equal(send_ok(laptop, room, "a-alone", "anyone?"), top + 2);
    assert_int_equal(direct_room(laptop, "bob"), room);
    json_t *evs = expect_msgs(laptop, room, top + 2, top + 3);
    check_event(json_array_get(evs, 1), top + 3, "join", "alice", "bob");
    json_decref(evs);
    json_t *ev = msg_at(bob, room, top + 3);
    check_event(ev, top + 3, "join", "alice", "bob");
    json_decref(ev);
    assert_int_equal(send_ok(bob, room, "b-back", "back"), top + 4);
    json_t *e = rooms_entry(bob, room);
    assert_string_equal(jstr(e, "kind"), "direct");
    assert_int_equal(jint(e, "last_seq"), top + 4);
    assert_string_equal(jstr(json_object_get(e, "last"), "text"), "back");
    json_decref(e);
}

/* ---- 2. an offline device catches up from its cursor ---- */

static void test_offline_device_catches_up(void **state)
{
    fx_t *fx = *state;
    enum { N = 50 };
    char path[400];
    snprintf(path, sizeof path, "%s/bob-tablet.json", fx->node.dir);
    fb_client_t *alice = fx_register(fx, "alice", "laptop");
    fb_client_t *pc = fx_register(fx, "bob", "pc");
    int64_t room = direct_room(alice, "bob");
    int64_t s0 = send_ok(alice, room, "pre", "before the gap");
    skip_to(pc, room, s0);

    fb_client_t *tablet = fx_login(fx, "bob", "tablet", path);
    assert_int_equal(fb_client_cursor(tablet, room), s0);
    int64_t dev = fb_client_device_id(tablet);
    char token[80];
    snprintf(token, sizeof token, "%s", fb_client_token(tablet));
    fx_drop(fx, tablet);

    for (int i = 0; i < N; i++) {
        snprintf(fx->texts[i], sizeof fx->texts[i], "missed %d", i);
        send_async(fx, alice, room, (size_t)i);
    }
    wait_acks(fx, alice, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(fx->acks[i].seq, s0 + 1 + i);
    json_t *live = expect_msgs(pc, room, s0 + 1, s0 + N);
    for (int i = 0; i < N; i++)
        check_text(json_array_get(live, (size_t)i), room, s0 + 1 + i, fx->acks[i].ts, alice, NULL,
                   fx->texts[i], 1);
    json_decref(live);

    /* the sync op pages forward from a cursor */
    int64_t cur = s0;
    int pages = 0;
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)room);
    for (;;) {
        json_t *rep = call_ok(pc, json_pack("{s:s,s:{s:I},s:i}", "op", "sync", "cursors", key,
                                            (json_int_t)cur, "limit", 20));
        json_t *entry = NULL, *e;
        size_t i;
        json_array_foreach(json_object_get(rep, "rooms"), i, e)
        {
            if (jint(e, "room") == room) entry = e;
        }
        if (!entry) {
            show("sync", rep);
            fail_msg("sync without an entry for room %lld", (long long)room);
        }
        assert_string_equal(jstr(entry, "status"), "member");
        assert_string_equal(jstr(entry, "kind"), "direct");
        assert_int_equal(jint(entry, "last_seq"), s0 + N);
        json_t *evs = json_object_get(entry, "events");
        int64_t want = FB_MIN(20, s0 + N - cur);
        assert_int_equal(json_array_size(evs), want);
        json_array_foreach(evs, i, e)
        {
            assert_int_equal(jint(e, "seq"), cur + 1 + (int64_t)i);
            assert_string_equal(jstr(e, "text"), fx->texts[cur - s0 + (int64_t)i]);
        }
        bool more = cur + want < s0 + N;
        assert_int_equal(json_is_true(json_object_get(entry, "more")), more);
        assert_int_equal(json_is_true(json_object_get(rep, "more")), more);
        json_decref(rep);
        cur += want;
        pages++;
        if (!more) break;
    }
    assert_int_equal(pages, 3);

    /* the tablet comes back with its state file: exactly the missed events */
    tablet = fx_add(fx, (fb_client_opts_t){.state_path = path});
    int rc = fb_client_connect_sync(tablet, IO_MS);
    if (rc) fail_msg("tablet reconnect: %s", fb_client_strerror(rc));
    assert_int_equal(fb_client_device_id(tablet), dev);
    assert_string_equal(fb_client_token(tablet), token);
    json_t *caught = expect_msgs(tablet, room, s0 + 1, s0 + N);
    for (int i = 0; i < N; i++)
        check_text(json_array_get(caught, (size_t)i), room, s0 + 1 + i, fx->acks[i].ts, alice, NULL,
                   fx->texts[i], -1);
    json_decref(caught);
    expect_quiet(tablet, room);
    assert_int_equal(fb_client_cursor(tablet, room), s0 + N);

    /* and is live again */
    int64_t s = send_ok(alice, room, "post", "after the gap");
    assert_int_equal(s, s0 + N + 1);
    json_t *evs = expect_msgs(tablet, room, s, s);
    check_text(json_array_get(evs, 0), room, s, 0, alice, "post", "after the gap", -1);
    json_decref(evs);
}

/* ---- 3. a retried send is stored once ---- */

static void check_duplicate(fb_client_t *c, int64_t room, const char *cmid, const char *text,
                            int64_t want_room, int64_t seq, int64_t ts)
{
    json_t *ack = call_ok(c, req_send(room, cmid, text));
    if (!json_is_true(json_object_get(ack, "duplicate")) || jint(ack, "room") != want_room ||
        jint(ack, "seq") != seq || jint(ack, "ts") != ts) {
        show("ack", ack);
        json_decref(ack);
        fail_msg("resend of %s: expected duplicate:true room %lld seq %lld ts %lld", cmid,
                 (long long)want_room, (long long)seq, (long long)ts);
    }
    json_decref(ack);
}

static int count_cmid(fb_client_t *c, int64_t room, const char *cmid)
{
    json_t *evs = history_all(c, room);
    int n = 0;
    size_t i;
    json_t *e;
    json_array_foreach(evs, i, e)
    {
        if (!strcmp(jstr(e, "cmid"), cmid)) n++;
    }
    json_decref(evs);
    return n;
}

static void test_retried_send_stored_once(void **state)
{
    fx_t *fx = *state;
    fb_client_t *alice = fx_register(fx, "alice", "laptop");
    fb_client_t *bob = fx_register(fx, "bob", "pc");
    int64_t room = direct_room(alice, "bob");
    json_t *g = call_ok(
        alice, json_pack("{s:s,s:s,s:[]}", "op", "create_group", "name", "other", "members"));
    int64_t other = jint(json_object_get(g, "room"), "room");
    json_decref(g);

    json_t *ack = call_ok(alice, req_send(room, "retry-1", "only once"));
    assert_true(json_is_false(json_object_get(ack, "duplicate")));
    int64_t seq = jint(ack, "seq"), ts = jint(ack, "ts");
    json_decref(ack);
    check_duplicate(alice, room, "retry-1", "only once", room, seq, ts);
    /* the same cmid with another text, into another room: still the original */
    check_duplicate(alice, other, "retry-1", "something else", room, seq, ts);
    assert_int_equal(last_seq(alice, other), 1);
    assert_int_equal(last_seq(alice, room), seq);
    assert_int_equal(count_cmid(bob, room, "retry-1"), 1);
    skip_to(bob, room, seq);
    expect_quiet(bob, room);
    /* another device may use the same cmid: cmids are unique per device */
    fb_client_t *phone = fx_login(fx, "alice", "phone", NULL);
    assert_int_equal(send_ok(phone, room, "retry-1", "from the phone"), seq + 1);

    /* after a restart the node still knows the cmid */
    stop_node(fx);
    restart_node(fx);
    check_duplicate(alice, room, "retry-1", "only once", room, seq, ts);
    assert_int_equal(last_seq(alice, room), seq + 1);

    /* the outbox resends after a reconnect what the node already stored */
    char path[400];
    snprintf(path, sizeof path, "%s/alice-tablet.json", fx->node.dir);
    fb_client_t *tab = fx_login(fx, "alice", "tablet", path);
    int64_t dev = fb_client_device_id(tab);
    char token[80];
    snprintf(token, sizeof token, "%s", fb_client_token(tab));
    fx_drop(fx, tab);
    tab = fx_add(fx, (fb_client_opts_t){.state_path = path}); /* not started */
    assert_int_equal(fb_client_send(tab, room, "over the wire twice", "retry-2", NULL, NULL), 0);
    assert_int_equal(fb_client_outbox_count(tab), 1);
    fx_drop(fx, tab); /* "crashed" before its send got out: it stays in the state file */
    fb_client_t *same = fx_add(fx, (fb_client_opts_t){.token = token}); /* the same device */
    assert_int_equal(fb_client_connect_sync(same, IO_MS), 0);
    assert_int_equal(fb_client_device_id(same), dev);
    int64_t seq2 = send_ok(same, room, "retry-2", "over the wire twice");
    assert_int_equal(seq2, seq + 2);
    tab = fx_add(fx, (fb_client_opts_t){.state_path = path});
    assert_int_equal(fb_client_connect_sync(tab, IO_MS), 0);
    assert_int_equal(fb_client_device_id(tab), dev);
    if (fb_client_run_until(tab, outbox_empty, tab, IO_MS) != 0)
        fail_msg("the outbox still holds %zu sends", fb_client_outbox_count(tab));
    call_drop(tab, json_pack("{s:s}", "op", "ping")); /* the resend's reply came before this */
    assert_int_equal(last_seq(alice, room), seq2);
    assert_int_equal(count_cmid(bob, room, "retry-2"), 1);
    skip_to(bob, room, seq2);
    expect_quiet(bob, room);
}

/* ---- 4. unread counts and read markers ---- */

static void test_unread_counts(void **state)
{
    fx_t *fx = *state;
    fb_client_t *laptop = fx_register(fx, "alice", "laptop");
    fb_client_t *bob = fx_register(fx, "bob", "pc");
    fb_client_t *carol = fx_register(fx, "carol", "pc");
    fb_client_t *phone = fx_login(fx, "alice", "phone", NULL);
    fb_client_t *all[4] = {laptop, phone, bob, carol};
    int64_t alice_id = fb_client_user_id(laptop), bob_id = fb_client_user_id(bob),
            carol_id = fb_client_user_id(carol);

    json_t *r = call_ok(laptop, json_pack("{s:s,s:s,s:[s,s]}", "op", "create_group", "name", "club",
                                          "members", "bob", "carol"));
    json_t *sum = json_object_get(r, "room");
    int64_t g = jint(sum, "room");
    assert_string_equal(jstr(sum, "kind"), "group");
    assert_string_equal(jstr(sum, "name"), "club");
    assert_int_equal(jint(sum, "owner"), alice_id);
    assert_int_equal(jint(sum, "member_count"), 3);
    assert_int_equal(jint(sum, "last_seq"), 3);
    assert_int_equal(jint(sum, "unread"), 0);
    json_decref(r);
    json_t *info = room_info(bob, g);
    assert_int_equal(jint(member_of(info, "alice"), "joined_seq"), 1);
    assert_string_equal(jstr(member_of(info, "alice"), "role"), "owner");
    assert_string_equal(jstr(member_of(info, "carol"), "role"), "member");
    for (int i = 0; i < 4; i++)
        skip_to(all[i], g, 3);
    json_decref(info);

    /* alice's message is unread by two */
    assert_int_equal(send_ok(laptop, g, "u4", "hi all"), 4);
    for (int i = 0; i < 4; i++) {
        json_t *evs = expect_msgs(all[i], g, 4, 4);
        check_text(json_array_get(evs, 0), g, 4, 0, laptop, "u4", "hi all", 2);
        json_decref(evs);
    }
    expect_unread(laptop, g, 0, 4); /* sending marks read */
    expect_unread(bob, g, 1, -1);
    expect_unread(carol, g, 1, -1);

    /* bob reads: every member's devices hear it; the count drops to 1 */
    for (int i = 0; i < 4; i++)
        drain(all[i]);
    json_t *rd = call_ok(bob, req_read(g, 4));
    assert_int_equal(jint(rd, "room"), g);
    assert_int_equal(jint(rd, "read_seq"), 4);
    json_decref(rd);
    for (int i = 0; i < 4; i++)
        expect_read_event(all[i], g, bob_id, 4);
    json_t *h = history_all(laptop, g);
    assert_int_equal(jint(event_at(h, 4), "unread"), 1);
    json_decref(h);
    assert_int_equal(fb_client_unread_for(phone, g, 4, alice_id), 1);
    expect_unread(bob, g, 0, 4);
    expect_unread(carol, g, 1, -1);
    info = room_info(carol, g);
    assert_int_equal(jint(member_of(info, "bob"), "read_seq"), 4);
    json_decref(info);

    /* carol reads: 0 */
    call_drop(carol, req_read(g, 4));
    for (int i = 0; i < 4; i++)
        expect_read_event(all[i], g, carol_id, 4);
    h = history_all(bob, g);
    assert_int_equal(jint(event_at(h, 4), "unread"), 0);
    json_decref(h);
    assert_int_equal(fb_client_unread_for(laptop, g, 4, alice_id), 0);
    expect_unread(carol, g, 0, 4);

    /* counts go down as each member reads */
    assert_int_equal(send_ok(laptop, g, "u5", "five"), 5);
    assert_int_equal(send_ok(laptop, g, "u6", "six"), 6);
    assert_int_equal(send_ok(laptop, g, "u7", "seven"), 7);
    for (int i = 0; i < 4; i++) {
        json_t *evs = expect_msgs(all[i], g, 5, 7);
        for (int k = 0; k < 3; k++)
            assert_int_equal(jint(json_array_get(evs, (size_t)k), "unread"), 2);
        json_decref(evs);
    }
    expect_unread(bob, g, 3, 4);
    expect_unread(carol, g, 3, 4);
    call_drop(carol, req_read(g, 5));
    expect_unread(carol, g, 2, 5);
    assert_int_equal(send_ok(bob, g, "u8", "from bob"), 8);
    for (int i = 0; i < 4; i++) {
        json_t *evs = expect_msgs(all[i], g, 8, 8);
        check_text(json_array_get(evs, 0), g, 8, 0, bob, "u8", "from bob", 2);
        json_decref(evs);
    }
    expect_unread(bob, g, 0, 8);
    expect_unread(carol, g, 3, 5);
    expect_unread(laptop, g, 1, 7);
    expect_unread(phone, g, 1, 7);

    /* alice's marker is the max over her devices */
    call_drop(laptop, req_read(g, 8));
    expect_unread(phone, g, 0, 8);
    for (int i = 0; i < 4; i++)
        drain(all[i]);
    rd = call_ok(phone, req_read(g, 5));
    assert_int_equal(jint(rd, "read_seq"), 8);
    json_decref(rd);
    expect_unread(phone, g, 0, 8);
    expect_unread(laptop, g, 0, 8);
    info = room_info(bob, g);
    assert_int_equal(jint(member_of(info, "alice"), "read_seq"), 8);
    json_decref(info);
    /* a marker that did not move is not announced: carol's read comes next */
    call_drop(carol, req_read(g, 8));
    for (;;) {
        json_t *ev = expect_of(bob, "read", g);
        int64_t u = fb_client_json_user_id(json_object_get(ev, "user")), s = jint(ev, "seq");
        json_decref(ev);
        if (u == carol_id && s == 8) break;
        if (u == alice_id && s < 8)
            fail_msg("read event of alice seq %lld: her marker did not move", (long long)s);
    }
    h = history_all(carol, g);
    assert_int_equal(jint(event_at(h, 8), "unread"), 0);
    assert_int_equal(jint(event_at(h, 5), "unread"), 0);
    json_decref(h);
    expect_unread(carol, g, 0, 8);

    /* read past the end; read in a room one is not in */
    call_fails(bob, req_read(g, 99), "invalid_argument");
    int64_t d = direct_room(laptop, "bob");
    call_fails(carol, req_read(d, 1), "not_member");
}

/* ---- 5. groups: invite, rename, kick, leave ---- */

static void test_group_membership(void **state)
{
    fx_t *fx = *state;
    fb_client_t *alice = fx_register(fx, "alice", "laptop");
    fb_client_t *bob = fx_register(fx, "bob", "pc");
    fb_client_t *carol = fx_register(fx, "carol", "pc");
    fb_client_t *dave = fx_register(fx, "dave", "pc");
    int64_t alice_id = fb_client_user_id(alice), bob_id = fb_client_user_id(bob);

    json_t *r = call_ok(alice, json_pack("{s:s,s:s,s:[s]}", "op", "create_group", "name", "team",
                                         "members", "bob"));
    int64_t g = jint(json_object_get(r, "room"), "room");
    assert_int_equal(jint(json_object_get(r, "room"), "last_seq"), 2);
    json_decref(r);
    json_t *evs = history_all(alice, g);
    assert_int_equal(json_array_size(evs), 2);
    check_event(json_array_get(evs, 0), 1, "create", "alice", NULL);
    assert_string_equal(jstr(json_array_get(evs, 0), "name"), "team");
    check_event(json_array_get(evs, 1), 2, "join", "alice", "bob");
    json_decref(evs);
    expect_msgs_drop(alice, g, 1, 2);
    skip_to(bob, g, 2);
    assert_int_equal(send_ok(alice, g, "g3", "before carol"), 3);

    /* an invited member sees the room from the join on */
    json_t *inv = call_ok(
        bob, json_pack("{s:s,s:I,s:[s]}", "op", "invite", "room", (json_int_t)g, "users", "carol"));
    assert_int_equal(jint(inv, "seq"), 4);
    json_decref(inv);
    evs = expect_msgs(carol, g, 4, 4);
    check_event(json_array_get(evs, 0), 4, "join", "bob", "carol");
    json_decref(evs);
    evs = history_all(carol, g);
    assert_int_equal(json_array_size(evs), 1);
    check_event(json_array_get(evs, 0), 4, "join", "bob", "carol");
    json_decref(evs);
    json_t *sy = call_ok(carol, json_pack("{s:s,s:{}}", "op", "sync", "cursors"));
    json_t *entry = json_array_get(json_object_get(sy, "rooms"), 0);
    assert_int_equal(json_array_size(json_object_get(sy, "rooms")), 1);
    assert_int_equal(jint(entry, "room"), g);
    assert_string_equal(jstr(entry, "status"), "member");
    assert_int_equal(json_array_size(json_object_get(entry, "events")), 1);
    assert_int_equal(jint(json_array_get(json_object_get(entry, "events"), 0), "seq"), 4);
    json_decref(sy);
    inv = call_ok(alice, json_pack("{s:s,s:I,s:[s]}", "op", "invite", "room", (json_int_t)g,
                                   "users", "carol"));
    assert_int_equal(jint(inv, "seq"), 0); /* already a member */
    json_decref(inv);
    call_fails(
        alice,
        json_pack("{s:s,s:I,s:[s]}", "op", "invite", "room", (json_int_t)g, "users", "nobody"),
        "not_found");
    assert_int_equal(send_ok(alice, g, "g5", "after carol"), 5);
    expect_msgs_drop(carol, g, 5, 5);

    /* any member renames; everyone hears it */
    json_t *rn = call_ok(carol, json_pack("{s:s,s:I,s:s}", "op", "rename", "room", (json_int_t)g,
                                          "name", "team two"));
    assert_int_equal(jint(rn, "seq"), 6);
    json_decref(rn);
    fb_client_t *members[3] = {alice, bob, carol};
    for (int i = 0; i < 3; i++) {
        if (members[i] != carol) skip_to(members[i], g, 5); /* carol took 5 above */
        evs = expect_msgs(members[i], g, 6, 6);
        check_event(json_array_get(evs, 0), 6, "rename", "carol", NULL);
        assert_string_equal(jstr(json_array_get(evs, 0), "name"), "team two");
        json_decref(evs);
    }
    json_t *e = rooms_entry(bob, g);
    assert_string_equal(jstr(e, "name"), "team two");
    json_decref(e);

    /* only the owner kicks */
    call_fails(bob,
               json_pack("{s:s,s:I,s:s}", "op", "kick", "room", (json_int_t)g, "user", "carol"),
               "forbidden");
    json_t *k = call_ok(
        alice, json_pack("{s:s,s:I,s:s}", "op", "kick", "room", (json_int_t)g, "user", "carol"));
    assert_int_equal(jint(k, "seq"), 7);
    json_decref(k);
    evs = expect_msgs(carol, g, 7, 7);
    check_event(json_array_get(evs, 0), 7, "kick", "alice", "carol");
    json_decref(evs);
    assert_int_equal(send_ok(alice, g, "g8", "after the kick"), 8);
    skip_to(bob, g, 8);
    expect_quiet(carol, g);
    call_fails(carol, req_send(g, "c1", "let me back"), "not_member");
    evs = history_all(carol, g);
    assert_int_equal(json_array_size(evs), 4);
    assert_int_equal(jint(json_array_get(evs, 0), "seq"), 4);
    check_event(json_array_get(evs, 3), 7, "kick", "alice", "carol");
    json_decref(evs);
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)g);
    sy = call_ok(carol, json_pack("{s:s,s:{s:i}}", "op", "sync", "cursors", key, 5));
    entry = json_array_get(json_object_get(sy, "rooms"), 0);
    assert_int_equal(jint(entry, "room"), g);
    assert_string_equal(jstr(entry, "status"), "left");
    evs = json_object_get(entry, "events");
    assert_int_equal(json_array_size(evs), 2);
    assert_int_equal(jint(json_array_get(evs, 1), "seq"), 7);
    json_decref(sy);

    /* a room never joined: not_member and nothing else */
    sy = call_ok(dave, json_pack("{s:s,s:{s:i}}", "op", "sync", "cursors", key, 0));
    entry = json_array_get(json_object_get(sy, "rooms"), 0);
    assert_int_equal(json_array_size(json_object_get(sy, "rooms")), 1);
    assert_int_equal(jint(entry, "room"), g);
    assert_string_equal(jstr(entry, "status"), "not_member");
    assert_int_equal(json_array_size(json_object_get(entry, "events")), 0);
    assert_false(json_is_true(json_object_get(sy, "more")));
    json_decref(sy);
    call_fails(dave, req_history(g, 0, 10), "not_member");

    /* the owner leaves: the earliest remaining member becomes owner */
    inv = call_ok(
        bob, json_pack("{s:s,s:I,s:[s]}", "op", "invite", "room", (json_int_t)g, "users", "dave"));
    assert_int_equal(jint(inv, "seq"), 9);
    json_decref(inv);
    json_t *lv = call_ok(alice, req_room("leave", g));
    assert_int_equal(jint(lv, "seq"), 10);
    json_decref(lv);
    skip_to(alice, g, 8);
    evs = expect_msgs(alice, g, 9, 10);
    check_event(json_array_get(evs, 1), 10, "leave", "alice", NULL);
    json_decref(evs);
    json_t *info = room_info(bob, g);
    json_t *sum = json_object_get(info, "room");
    assert_int_equal(jint(sum, "owner"), bob_id);
    assert_int_equal(jint(sum, "member_count"), 2);
    assert_int_equal(json_array_size(json_object_get(info, "members")), 2);
    assert_null(member_of(info, "alice"));
    assert_string_equal(jstr(member_of(info, "bob"), "role"), "owner");
    assert_string_equal(jstr(member_of(info, "dave"), "role"), "member");
    json_decref(info);
    assert_true(alice_id != bob_id);
    call_fails(alice, req_send(g, "a11", "still here?"), "not_member");
    call_fails(dave, json_pack("{s:s,s:I,s:s}", "op", "kick", "room", (json_int_t)g, "user", "bob"),
               "forbidden");
    k = call_ok(bob,
                json_pack("{s:s,s:I,s:s}", "op", "kick", "room", (json_int_t)g, "user", "dave"));
    assert_int_equal(jint(k, "seq"), 11);
    json_decref(k);

    /* 1:1 rooms are not renamed, invited into or kicked from */
    int64_t d = direct_room(alice, "bob");
    call_fails(alice,
               json_pack("{s:s,s:I,s:s}", "op", "rename", "room", (json_int_t)d, "name", "ours"),
               "forbidden");
    call_fails(
        alice,
        json_pack("{s:s,s:I,s:[s]}", "op", "invite", "room", (json_int_t)d, "users", "carol"),
        "forbidden");
    call_fails(alice,
               json_pack("{s:s,s:I,s:s}", "op", "kick", "room", (json_int_t)d, "user", "bob"),
               "forbidden");
    call_fails(alice,
               json_pack("{s:s,s:s,s:[s]}", "op", "create_group", "name", "x", "members", "nobody"),
               "not_found");
}

/* create_group: seq 1 create, then a join per member; the founding members
 * see the room from its create event on; a later invitee from its own join
 * (protocol.md, Rooms). */
static void test_group_members_see_from_their_join(void **state)
{
    fx_t *fx = *state;
    fb_client_t *alice = fx_register(fx, "alice", "laptop");
    fb_client_t *bob = fx_register(fx, "bob", "pc");
    fb_client_t *carol = fx_register(fx, "carol", "pc");
    fb_client_t *dave = fx_register(fx, "dave", "pc");
    json_t *r = call_ok(alice, json_pack("{s:s,s:s,s:[s,s]}", "op", "create_group", "name", "club",
                                         "members", "bob", "carol"));
    int64_t g = jint(json_object_get(r, "room"), "room");
    assert_int_equal(jint(json_object_get(r, "room"), "last_seq"), 3);
    json_decref(r);
    json_t *evs = history_all(alice, g);
    assert_int_equal(json_array_size(evs), 3);
    check_event(json_array_get(evs, 0), 1, "create", "alice", NULL);
    check_event(json_array_get(evs, 1), 2, "join", "alice", "bob");
    check_event(json_array_get(evs, 2), 3, "join", "alice", "carol");
    json_decref(evs);
    expect_msgs_drop(alice, g, 1, 3);
    r = call_ok(alice, json_pack("{s:s,s:I,s:[s]}", "op", "invite", "room", (json_int_t)g, "users",
                                 "dave"));
    assert_int_equal(jint(r, "seq"), 4);
    json_decref(r);

    json_t *info = room_info(alice, g);
    assert_int_equal(jint(member_of(info, "alice"), "joined_seq"), 1);
    assert_int_equal(jint(member_of(info, "bob"), "joined_seq"), 1);
    assert_int_equal(jint(member_of(info, "carol"), "joined_seq"), 1);
    assert_int_equal(jint(member_of(info, "dave"), "joined_seq"), 4);
    json_decref(info);
    evs = history_all(bob, g);
    assert_int_equal(json_array_size(evs), 4);
    assert_int_equal(jint(json_array_get(evs, 0), "seq"), 1);
    json_decref(evs);
    evs = history_all(carol, g);
    assert_int_equal(json_array_size(evs), 4);
    assert_int_equal(jint(json_array_get(evs, 0), "seq"), 1);
    json_decref(evs);
    evs = history_all(dave, g);
    assert_int_equal(json_array_size(evs), 1);
    check_event(json_array_get(evs, 0), 4, "join", "alice", "dave");
    json_decref(evs);
    expect_msgs_drop(bob, g, 1, 4);
    expect_msgs_drop(carol, g, 1, 4);
    expect_msgs_drop(dave, g, 4, 4);
}

/* ---- 6. history pages backwards ---- */

static void expect_page(fb_client_t *c, int64_t room, int64_t before, int limit, int64_t first,
                        int64_t last, bool more)
{
    json_t *r = call_ok(c, req_history(room, before, limit));
    json_t *evs = json_object_get(r, "events");
    assert_int_equal(jint(r, "room"), room);
    size_t n = json_array_size(evs);
    int64_t got_first = n ? jint(json_array_get(evs, 0), "seq") : 0;
    int64_t got_last = n ? jint(json_array_get(evs, n - 1), "seq") : 0;
    bool got_more = json_is_true(json_object_get(r, "more"));
    bool ordered = true;
    for (size_t i = 0; i < n; i++)
        if (jint(json_array_get(evs, i), "seq") != first + (int64_t)i) ordered = false;
    json_decref(r);
    if ((int64_t)n != last - first + 1 || !ordered || got_more != more)
        fail_msg("history before %lld limit %d: %zu events %lld..%lld more %d; expected "
                 "%lld..%lld more %d",
                 (long long)before, limit, n, (long long)got_first, (long long)got_last, got_more,
                 (long long)first, (long long)last, more);
}

static void test_history_pages(void **state)
{
    fx_t *fx = *state;
    enum { N = 120 };
    fb_client_t *alice = fx_register(fx, "alice", "laptop");
    fb_client_t *bob = fx_register(fx, "bob", "pc");
    json_t *r = call_ok(
        alice, json_pack("{s:s,s:s,s:[]}", "op", "create_group", "name", "hist", "members"));
    int64_t g = jint(json_object_get(r, "room"), "room");
    int64_t base = jint(json_object_get(r, "room"), "last_seq");
    assert_int_equal(base, 1);
    json_decref(r);
    for (int i = 0; i < N; i++) {
        snprintf(fx->texts[i], sizeof fx->texts[i], "page text %d", i);
        send_async(fx, alice, g, (size_t)i);
    }
    wait_acks(fx, alice, N);
    int64_t last = base + N;
    assert_int_equal(last_seq(alice, g), last);

    expect_page(alice, g, 0, 50, last - 49, last, true);
    expect_page(alice, g, last - 49, 50, last - 99, last - 50, true);
    expect_page(alice, g, last - 99, 50, 1, last - 100, false);
    expect_page(alice, g, 0, 0, last - 49, last, true); /* the default limit is 50 */
    expect_page(alice, g, 0, 200, 1, last, false);
    expect_page(alice, g, 2, 50, 1, 1, false);
    expect_page(alice, g, 41, 10, 31, 40, true);
    r = call_ok(alice, req_history(g, 0, 200));
    json_t *evs = json_object_get(r, "events");
    check_event(json_array_get(evs, 0), 1, "create", "alice", NULL);
    for (int i = 0; i < N; i++)
        check_text(json_array_get(evs, (size_t)i + 1), g, base + 1 + i, fx->acks[i].ts, alice, NULL,
                   fx->texts[i], 0);
    json_decref(r);
    call_fails(bob, req_history(g, 0, 10), "not_member");
    call_fails(bob, req_history(g + 1000, 0, 10), "not_member");
}

/* ---- 7. logout of a device ---- */

static void test_logout_device(void **state)
{
    fx_t *fx = *state;
    fb_client_t *laptop = fx_register(fx, "alice", "laptop");
    fb_client_t *bob = fx_register(fx, "bob", "pc");
    fb_client_t *phone = fx_login(fx, "alice", "phone", NULL);
    int64_t room = direct_room(laptop, "bob");
    int64_t phone_dev = fb_client_device_id(phone);
    char token[80];
    snprintf(token, sizeof token, "%s", fb_client_token(phone));

    json_t *devs = call_ok(laptop, json_pack("{s:s}", "op", "devices"));
    assert_int_equal(json_array_size(json_object_get(devs, "devices")), 2);
    json_decref(devs);

    call_drop(laptop, json_pack("{s:s,s:I}", "op", "logout", "device", (json_int_t)phone_dev));
    json_t *ev = expect_of(phone, "logged_out", 0);
    json_decref(ev);
    if (fb_client_run_until(phone, is_stopped, phone, IO_MS) != 0)
        fail_msg("the phone's connection was not closed (state %s)",
                 fb_client_state_name(fb_client_state(phone)));
    assert_int_equal(fb_client_stop_reason(phone), FB_EBADTOKEN); /* close 4001 */

    /* its token no longer works, by hello or by auth */
    fb_client_t *again = fx_add(fx, (fb_client_opts_t){.token = token});
    assert_int_equal(fb_client_connect_sync(again, IO_MS), FB_EBADTOKEN);
    fx_drop(fx, again);
    fb_client_t *anon = fx_add(fx, (fb_client_opts_t){0});
    assert_int_equal(fb_client_connect_sync(anon, IO_MS), 0);
    call_fails(anon, json_pack("{s:s,s:s}", "op", "auth", "token", token), "bad_token");

    /* the other devices go on */
    int64_t s = send_ok(laptop, room, "after-logout", "still here");
    json_t *ev2 = msg_at(bob, room, s);
    check_text(ev2, room, s, 0, laptop, "after-logout", "still here", 1);
    json_decref(ev2);
    skip_to(laptop, room, s);
    assert_int_equal(fb_client_state(laptop), FB_CLIENT_READY);
    devs = call_ok(laptop, json_pack("{s:s}", "op", "devices"));
    size_t i;
    json_t *d;
    bool current = false;
    json_array_foreach(json_object_get(devs, "devices"), i, d)
    {
        if (jint(d, "id") == fb_client_device_id(laptop))
            current = json_is_true(json_object_get(d, "current"));
    }
    json_decref(devs);
    assert_true(current);

    /* logging out this very device: logged_out, then the close */
    char bob_token[80];
    snprintf(bob_token, sizeof bob_token, "%s", fb_client_token(bob));
    assert_int_equal(fb_client_request(bob, json_pack("{s:s}", "op", "logout"), NULL, NULL), 0);
    ev = expect_of(bob, "logged_out", 0);
    json_decref(ev);
    if (fb_client_run_until(bob, is_stopped, bob, IO_MS) != 0)
        fail_msg("bob's connection was not closed after his own logout");
    assert_int_equal(fb_client_stop_reason(bob), FB_EBADTOKEN);
    again = fx_add(fx, (fb_client_opts_t){.token = bob_token});
    assert_int_equal(fb_client_connect_sync(again, IO_MS), FB_EBADTOKEN);
    assert_int_equal(send_ok(laptop, room, "after-bob", "bob is gone"), s + 1);
}

/* ---- 8. rooms, messages and markers survive a restart ---- */

/* What a user can see: rooms, and for each room its summary, members and
 * whole history. */
static json_t *snapshot(fb_client_t *c)
{
    json_t *out = json_object();
    json_t *r = call_ok(c, json_pack("{s:s}", "op", "rooms"));
    json_t *rooms = json_object_get(r, "rooms");
    json_object_set(out, "rooms", rooms);
    size_t i;
    json_t *e;
    json_array_foreach(rooms, i, e)
    {
        char key[32];
        snprintf(key, sizeof key, "%lld", (long long)jint(e, "room"));
        json_t *info = room_info(c, jint(e, "room"));
        json_object_set_new(info, "history", history_all(c, jint(e, "room")));
        json_object_del(info, "id");
        json_object_set_new(out, key, info);
    }
    json_decref(r);
    return out;
}

static void test_restart_keeps_everything(void **state)
{
    fx_t *fx = *state;
    fb_client_t *alice = fx_register(fx, "alice", "laptop");
    fb_client_t *bob = fx_register(fx, "bob", "pc");
    fb_client_t *carol = fx_register(fx, "carol", "pc");
    fb_client_t *users[3] = {alice, bob, carol};
    int64_t dev[3];
    for (int i = 0; i < 3; i++)
        dev[i] = fb_client_device_id(users[i]);

    int64_t d = direct_room(alice, "bob");
    int64_t s1 = send_ok(alice, d, "p1", "one");
    send_ok(alice, d, "p2", "two");
    int64_t s3 = send_ok(alice, d, "p3", "three");
    call_drop(bob, req_read(d, s3 - 1));
    json_t *r = call_ok(alice, json_pack("{s:s,s:s,s:[s,s]}", "op", "create_group", "name", "keep",
                                         "members", "bob", "carol"));
    int64_t g = jint(json_object_get(r, "room"), "room");
    json_decref(r);
    call_drop(bob,
              json_pack("{s:s,s:I,s:s}", "op", "rename", "room", (json_int_t)g, "name", "kept"));
    send_ok(carol, g, "c1", "carol one");
    int64_t cg = send_ok(carol, g, "c2", "carol two");
    call_drop(alice, req_read(g, cg));
    json_t *rr = call_ok(alice, json_pack("{s:s}", "op", "rooms"));
    json_t *rooms = json_object_get(rr, "rooms");
    assert_int_equal(json_array_size(rooms), 2);
    assert_int_equal(jint(json_array_get(rooms, 0), "room"), g); /* most recently active first */
    assert_int_equal(jint(json_array_get(rooms, 1), "room"), d);
    assert_string_equal(jstr(json_object_get(json_array_get(rooms, 0), "last"), "text"),
                        "carol two");
    assert_string_equal(jstr(json_array_get(rooms, 0), "name"), "kept");
    assert_string_equal(jstr(json_object_get(json_array_get(rooms, 1), "last"), "text"), "three");
    json_decref(rr);
    json_t *before[3];
    for (int i = 0; i < 3; i++)
        before[i] = snapshot(users[i]);

    stop_node(fx);
    restart_node(fx);

    for (int i = 0; i < 3; i++) {
        assert_int_equal(fb_client_device_id(users[i]), dev[i]); /* same token, same device */
        json_t *after = snapshot(users[i]);
        bool same = json_equal(before[i], after);
        if (!same) {
            show("before", before[i]);
            show("after", after);
        }
        json_decref(after);
        json_decref(before[i]);
        before[i] = NULL;
        if (!same) fail_msg("%s sees something else after the restart", who(users[i]));
    }
    expect_unread(bob, d, 1, s3 - 1);
    expect_unread(alice, g, 0, cg);
    expect_unread(carol, g, 0, cg);
    json_t *h = history_all(bob, d);
    assert_string_equal(jstr(event_at(h, s1), "text"), "one");
    json_decref(h);

    /* the sequences go on; cmids and passwords are remembered */
    assert_int_equal(send_ok(alice, d, "p4", "four"), s3 + 1);
    rr = call_ok(alice, json_pack("{s:s}", "op", "rooms"));
    assert_int_equal(jint(json_array_get(json_object_get(rr, "rooms"), 0), "room"), d);
    json_decref(rr);
    json_t *ack = call_ok(alice, req_send(d, "p1", "one"));
    assert_true(json_is_true(json_object_get(ack, "duplicate")));
    assert_int_equal(jint(ack, "seq"), s1);
    json_decref(ack);
    fb_client_t *fresh = fx_login(fx, "carol", "phone", NULL);
    assert_int_equal(fb_client_user_id(fresh), fb_client_user_id(carol));
    assert_int_equal(last_seq(fresh, g), cg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_direct_room_and_pushes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offline_device_catches_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retried_send_stored_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unread_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_membership, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_members_see_from_their_join, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logout_device, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_keeps_everything, setup, teardown),
    };
    return cmocka_run_group_tests_name("chat", tests, NULL, NULL);
}
