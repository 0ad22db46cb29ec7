/* The crash test: eight clients send into four rooms as fast as acks come
 * back, the node is killed with SIGKILL mid-flight and restarted on its data;
 * every acked message must be there exactly once at its acked seq, rooms must
 * stay gapless, and the clients' outboxes must then complete everything.
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
#include "common/itest.h"
#include "common/node.h"

#define PASSWORD "crash test password"
#define N_SENDERS 8
#define N_ROOMS 4
#define WINDOW 4 /* sends in flight per client */
#define CYCLES 3
#define MAX_RECS 200000
#define IO_MS 10000

/* One attempted message. Its cmid is "k<index>", unique over the run. */
typedef struct {
    int sender;
    int64_t room;
    char text[64];
    bool acked;         /* an ack (first or duplicate) came back */
    bool acked_pre;     /* ... before the restart of its cycle */
    bool dup;           /* the ack said duplicate */
    bool present_early; /* found by the check right after the restart */
    int64_t early_seq;  /* ... at this seq */
    int64_t seq;        /* the acked seq */
    int acks;
    int cycle;
} rec_t;

typedef struct crash crash_t;

typedef struct {
    crash_t *t;
    int idx;
    char name[16];
    fb_client_t *c;
    int inflight;
} sender_t;

struct crash {
    fb_test_node_t node;
    uv_loop_t loop;  /* the senders */
    uv_loop_t vloop; /* the checkers: runs while the senders are frozen */
    bool loops_up;
    sender_t s[N_SENDERS];
    int64_t rooms[N_ROOMS];
    rec_t *recs;
    int n_recs;
    bool sending, killed;
    int stop_signal; /* SIGKILL: a crash; SIGTERM: an orderly stop */
    int stop_status; /* what fb_test_node_stop returned */
    int cycle;
    int send_errors;
    int64_t load_started_ms;
    uv_timer_t kill_timer;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- senders ---- */

static void pump(sender_t *s);

static void on_ack(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    sender_t *s = fb_client_userdata(c);
    crash_t *t = s->t;
    rec_t *r = &t->recs[(intptr_t)ud];
    s->inflight--;
    if (err) {
        fprintf(stderr, "send k%ld refused: %s\n", (long)(intptr_t)ud, msg ? msg : "");
        t->send_errors++;
    } else {
        int64_t seq = json_integer_value(json_object_get(reply, "seq"));
        int64_t room = json_integer_value(json_object_get(reply, "room"));
        if (room != r->room || seq <= 0 || (r->acked && seq != r->seq)) {
            fprintf(stderr, "k%ld: ack room %lld seq %lld, expected room %lld%s\n",
                    (long)(intptr_t)ud, (long long)room, (long long)seq, (long long)r->room,
                    r->acked ? " and its earlier seq" : "");
            t->send_errors++;
        }
        r->acked = true;
        r->seq = seq;
        r->acks++;
        r->dup = json_is_true(json_object_get(reply, "duplicate"));
    }
    pump(s);
}

/* Keeps WINDOW sends in flight while the load runs. */
static void pump(sender_t *s)
{
    crash_t *t = s->t;
    while (t->sending && s->inflight < WINDOW && t->n_recs < MAX_RECS) {
        int i = t->n_recs;
        rec_t *r = &t->recs[i];
        memset(r, 0, sizeof *r);
        r->sender = s->idx;
        r->room = t->rooms[(s->idx + i) % N_ROOMS];
        r->cycle = t->cycle;
        snprintf(r->text, sizeof r->text, "from %s, message %d of cycle %d", s->name, i, t->cycle);
        char cmid[24];
        snprintf(cmid, sizeof cmid, "k%d", i);
        int rc = fb_client_send(s->c, r->room, r->text, cmid, on_ack, (void *)(intptr_t)i);
        if (rc) {
            fprintf(stderr, "fb_client_send: %s\n", fb_client_strerror(rc));
            t->send_errors++;
            return;
        }
        t->n_recs++;
        s->inflight++;
    }
}

static void on_kill(uv_timer_t *timer)
{
    crash_t *t = timer->data;
    t->sending = false;
    t->stop_status = fb_test_node_stop(&t->node, t->stop_signal);
    t->killed = true;
}

static bool is_killed(void *arg)
{
    return ((crash_t *)arg)->killed;
}

/* Every sender has seen its connection go: all acks the node wrote before
 * it died (still in socket buffers at the kill) have been read. */
static bool all_lost(void *arg)
{
    crash_t *t = arg;
    for (int i = 0; i < N_SENDERS; i++) {
        fb_client_state_t st = fb_client_state(t->s[i].c);
        if (st == FB_CLIENT_READY || st == FB_CLIENT_AUTHENTICATED || st == FB_CLIENT_CONNECTED)
            return false;
    }
    return true;
}

static bool all_acked(void *arg)
{
    crash_t *t = arg;
    for (int i = 0; i < N_SENDERS; i++)
        if (t->s[i].inflight || fb_client_outbox_count(t->s[i].c)) return false;
    return true;
}

/* ---- checking the store through a fresh client ---- */

static fb_client_t *fresh_client(crash_t *t, uv_loop_t *loop, const char *user, bool login)
{
    fb_client_t *c = NULL;
    fb_client_opts_t o = {.servers = t->node.addr, .no_sync = true};
    if (login) {
        o.user = user;
        o.password = PASSWORD;
        o.device = "checker";
    }
    assert_int_equal(fb_client_new(loop, &o, &c), 0);
    assert_int_equal(fb_client_connect_sync(c, IO_MS), 0);
    return c;
}

static json_t *call(fb_client_t *c, json_t *req)
{
    return fb_itest_call(c, req, IO_MS);
}

/* Every event of a room, oldest first, through history pages. */
static json_t *all_history(fb_client_t *c, int64_t room)
{
    return fb_itest_history_all(c, room, 200, IO_MS);
}

typedef struct {
    int present; /* recs found */
    int present_unacked;
    int stored; /* text events in all rooms */
} seen_t;

/* Checks every room against the records. final: everything attempted must
 * be there. Marks present_early when early. */
static seen_t verify(crash_t *t, bool final, bool early)
{
    seen_t out = {0};
    int *found = calloc((size_t)t->n_recs + 1, sizeof *found);
    int64_t *found_seq = calloc((size_t)t->n_recs + 1, sizeof *found_seq);
    assert_non_null(found);
    assert_non_null(found_seq);
    fb_client_t *c = fresh_client(t, &t->vloop, "auditor", true);
    for (int k = 0; k < N_ROOMS; k++) {
        int64_t room = t->rooms[k];
        json_t *summary = call(c, json_pack("{s:s,s:I}", "op", "room", "room", (json_int_t)room));
        int64_t last =
            json_integer_value(json_object_get(json_object_get(summary, "room"), "last_seq"));
        json_decref(summary);
        json_t *evs = all_history(c, room);
        if ((int64_t)json_array_size(evs) != last)
            fail_msg("room %lld: %zu events for last_seq %lld", (long long)room,
                     json_array_size(evs), (long long)last);
        size_t i;
        json_t *ev;
        json_array_foreach(evs, i, ev)
        {
            int64_t seq = json_integer_value(json_object_get(ev, "seq"));
            if (seq != (int64_t)i + 1)
                fail_msg("room %lld: event %zu has seq %lld (a gap or a duplicate)",
                         (long long)room, i, (long long)seq);
            if (strcmp(json_string_value(json_object_get(ev, "type")), "text")) continue;
            out.stored++;
            const char *cmid = json_string_value(json_object_get(ev, "cmid"));
            char *end = NULL;
            long ri = cmid && cmid[0] == 'k' ? strtol(cmid + 1, &end, 10) : -1;
            if (ri < 0 || ri >= t->n_recs || !end || *end)
                fail_msg("room %lld seq %lld: unknown cmid %s", (long long)room, (long long)seq,
                         cmid ? cmid : "(none)");
            rec_t *r = &t->recs[ri];
            if (found[ri]++)
                fail_msg("k%ld stored twice: seq %lld and %lld", ri, (long long)found_seq[ri],
                         (long long)seq);
            found_seq[ri] = seq;
            if (r->room != room ||
                strcmp(r->text, json_string_value(json_object_get(ev, "text"))) ||
                strcmp(t->s[r->sender].name,
                       json_string_value(json_object_get(json_object_get(ev, "from"), "name"))))
                fail_msg("k%ld at room %lld seq %lld: wrong room, text or sender", ri,
                         (long long)room, (long long)seq);
        }
        json_decref(evs);
    }
    fb_client_free_sync(c);
    for (int i = 0; i < t->n_recs; i++) {
        rec_t *r = &t->recs[i];
        if (r->acked && !found[i])
            fail_msg("k%d was acked (room %lld seq %lld, cycle %d) but is missing", i,
                     (long long)r->room, (long long)r->seq, r->cycle);
        if (r->acked && found_seq[i] != r->seq)
            fail_msg("k%d was acked at seq %lld but is stored at seq %lld", i, (long long)r->seq,
                     (long long)found_seq[i]);
        if (final && !found[i]) fail_msg("k%d was attempted but never stored", i);
        if (found[i]) out.present++;
        if (found[i] && !r->acked) out.present_unacked++;
        if (early) {
            r->present_early = found[i] > 0;
            r->early_seq = found_seq[i];
        }
    }
    /* one connection's sends into one room get increasing seqs, in send order */
    if (final) {
        for (int sdr = 0; sdr < N_SENDERS; sdr++) {
            for (int k = 0; k < N_ROOMS; k++) {
                int64_t prev = 0;
                for (int i = 0; i < t->n_recs; i++) {
                    rec_t *r = &t->recs[i];
                    if (r->sender != sdr || r->room != t->rooms[k]) continue;
                    if (r->seq <= prev)
                        fail_msg("%s: k%d got seq %lld after an earlier send got %lld",
                                 t->s[sdr].name, i, (long long)r->seq, (long long)prev);
                    prev = r->seq;
                }
            }
        }
    }
    free(found);
    free(found_seq);
    return out;
}

/* ---- setup ---- */

static int setup(void **state)
{
    crash_t *t = calloc(1, sizeof *t);
    if (!t) return -1;
    *state = t;
    t->recs = calloc(MAX_RECS, sizeof *t->recs);
    if (!t->recs) return -1;
    if (fb_test_node_start(&t->node) != 0) return -1;
    uv_loop_init(&t->loop);
    uv_loop_init(&t->vloop);
    t->loops_up = true;
    uv_timer_init(&t->loop, &t->kill_timer);
    t->kill_timer.data = t;
    return 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static int teardown(void **state)
{
    crash_t *t = *state;
    int rc = 0;
    if (!t) return 0;
    for (int i = 0; i < N_SENDERS; i++)
        if (t->s[i].c) fb_client_free_sync(t->s[i].c);
    if (t->loops_up) {
        uv_walk(&t->loop, close_walk, NULL);
        uv_run(&t->loop, UV_RUN_DEFAULT);
        uv_loop_close(&t->loop);
        uv_walk(&t->vloop, close_walk, NULL);
        uv_run(&t->vloop, UV_RUN_DEFAULT);
        uv_loop_close(&t->vloop);
    }
    if (t->node.pid > 0) {
        int st = fb_test_node_stop(&t->node, SIGTERM);
        if (st != 0) {
            fprintf(stderr, "node exited with status %d after SIGTERM; see %s\n", st, t->node.log);
            char cmd[400];
            snprintf(cmd, sizeof cmd, "tail -n 40 '%s' >&2", t->node.log);
            if (system(cmd) != 0) fprintf(stderr, "(no log)\n");
            rc = -1;
        }
    }
    fb_test_node_cleanup(&t->node);
    free(t->recs);
    free(t);
    return rc;
}

static void make_users_and_rooms(crash_t *t)
{
    /* the auditor owns the rooms; every sender is in every room */
    fb_client_t *a = fresh_client(t, &t->vloop, "auditor", false);
    json_decref(call(
        a, json_pack("{s:s,s:s,s:s}", "op", "register", "user", "auditor", "password", PASSWORD)));
    for (int i = 0; i < N_SENDERS; i++) {
        sender_t *s = &t->s[i];
        s->t = t;
        s->idx = i;
        snprintf(s->name, sizeof s->name, "sender%d", i % 1000);
        fb_client_opts_t o = {.servers = t->node.addr, .ud = s};
        assert_int_equal(fb_client_new(&t->loop, &o, &s->c), 0);
        assert_int_equal(fb_client_connect_sync(s->c, IO_MS), 0);
        json_decref(call(s->c, json_pack("{s:s,s:s,s:s}", "op", "register", "user", s->name,
                                         "password", PASSWORD)));
    }
    for (int k = 0; k < N_ROOMS; k++) {
        json_t *members = json_array();
        for (int i = 0; i < N_SENDERS; i++)
            json_array_append_new(members, json_string(t->s[i].name));
        char name[16];
        snprintf(name, sizeof name, "room%d", k);
        json_t *reply = call(
            a, json_pack("{s:s,s:s,s:o}", "op", "create_group", "name", name, "members", members));
        t->rooms[k] = json_integer_value(json_object_get(json_object_get(reply, "room"), "room"));
        json_decref(reply);
        assert_true(t->rooms[k] > 0);
    }
    fb_client_free_sync(a);
    /* every sender READY (it has synced its rooms) before the load */
    for (int i = 0; i < N_SENDERS; i++)
        assert_int_equal(fb_client_connect_sync(t->s[i].c, IO_MS), 0);
}

/* ---- the test ---- */

static unsigned seed_from_env(void)
{
    unsigned seed = (unsigned)time(NULL);
    if (getenv("FB_CRASH_SEED")) seed = (unsigned)strtoul(getenv("FB_CRASH_SEED"), NULL, 10);
    print_message("crash test seed %u (FB_CRASH_SEED=%u to repeat)\n", seed, seed);
    return seed;
}

/* One cycle: load, stop the node with `sig` `delay` ms in, restart, check,
 * let the outboxes resend, check again. Returns the unacked messages that
 * were found stored after the restart. */
static int run_cycle(crash_t *t, int sig, int delay)
{
    t->cycle++;
    int first = t->n_recs;
    t->killed = false;
    t->sending = true;
    t->stop_signal = sig;
    for (int i = 0; i < N_SENDERS; i++)
        pump(&t->s[i]);
    uv_timer_start(&t->kill_timer, on_kill, (uint64_t)delay, 0);
    assert_int_equal(fb_client_run_until(t->s[0].c, is_killed, t, delay + IO_MS), 0);
    int want = sig == SIGKILL ? 128 + SIGKILL : 0;
    if (t->stop_status != want)
        fail_msg("%s: the node's exit status was %d, expected %d (see %s)",
                 sig == SIGKILL ? "SIGKILL" : "SIGTERM", t->stop_status, want, t->node.log);
    assert_int_equal(fb_client_run_until(t->s[0].c, all_lost, t, IO_MS), 0);
    /* acks read after the kill were still sent before it */
    int attempted = t->n_recs - first, acked = 0, unacked = 0;
    for (int i = first; i < t->n_recs; i++) {
        t->recs[i].acked_pre = t->recs[i].acked;
        if (t->recs[i].acked)
            acked++;
        else
            unacked++;
    }
    size_t outboxes = 0;
    for (int i = 0; i < N_SENDERS; i++)
        outboxes += fb_client_outbox_count(t->s[i].c);
    assert_int_equal(outboxes, (size_t)unacked);

    /* restarted on the same data; the senders stay frozen while it is checked */
    assert_int_equal(fb_test_node_restart(&t->node), 0);
    seen_t early = verify(t, false, true);

    /* now the outboxes resend what was not acked */
    assert_int_equal(fb_client_run_until(t->s[0].c, all_acked, t, 30000), 0);
    assert_int_equal(t->send_errors, 0);
    int dups = 0, resent = 0;
    for (int i = first; i < t->n_recs; i++) {
        rec_t *r = &t->recs[i];
        if (r->acked_pre) continue;
        resent++;
        /* a resend of a message the crash had kept is a duplicate, else new */
        if (r->dup != r->present_early)
            fail_msg("k%d (room %lld): present after the restart %d (seq %lld), but its resend "
                     "said duplicate=%d (seq %lld, %d acks)",
                     i, (long long)r->room, r->present_early, (long long)r->early_seq, r->dup,
                     (long long)r->seq, r->acks);
        dups += r->dup;
    }
    seen_t final = verify(t, true, false);
    print_message("cycle %d (%s after %d ms): attempted %d, acked before the stop %d, unacked %d "
                  "(present after the restart %d), resent %d (duplicate acks %d); "
                  "stored %d of %d attempted\n",
                  t->cycle, sig == SIGKILL ? "SIGKILL" : "SIGTERM", delay, attempted, acked,
                  unacked, early.present_unacked, resent, dups, final.stored, t->n_recs);
    assert_int_equal(final.present, t->n_recs);
    assert_int_equal(final.stored, t->n_recs);
    return early.present_unacked;
}

static void test_crash_kill9_restart(void **state)
{
    crash_t *t = *state;
    srand(seed_from_env());
    make_users_and_rooms(t);
    int64_t started = mono_ms();
    for (int cycle = 1; cycle <= CYCLES; cycle++)
        run_cycle(t, SIGKILL, 300 + rand() % 1201);
    print_message("crash test: %d messages over %d kill/restart cycles in %lld ms\n", t->n_recs,
                  CYCLES, (long long)(mono_ms() - started));
}

/* operations.md: SIGTERM stops accepting, closes connections with 1000,
 * commits every write already queued and acknowledges it, then exits 0. */
static void test_sigterm_under_load(void **state)
{
    crash_t *t = *state;
    srand(seed_from_env() + 1);
    make_users_and_rooms(t);
    int kept_unacked = run_cycle(t, SIGTERM, 300 + rand() % 701);
    /* an orderly stop acknowledges what it committed */
    assert_int_equal(kept_unacked, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_crash_kill9_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_under_load, setup, teardown),
    };
    if (getenv("FB_TEST_FILTER")) cmocka_set_test_filter(getenv("FB_TEST_FILTER"));
    return cmocka_run_group_tests_name("crash", tests, NULL, NULL);
}
