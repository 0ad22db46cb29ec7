/* Unit tests of the real writer thread (chat/writer.h) over a SQLite store in a temporary
 * directory, with two fake sinks and fake push encoders: nothing leaves before its commit,
 * seqs are gapless, retries are idempotent, and room semantics and push recipients hold.
 * SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat/writer.h"
#include "common/fb.h"
#include "common/mpsc.h"
#include "store/store.h"

/* ---- users of every test ---- */

enum { ALICE, BOB, CAROL, DAVE, ERIN, FRANK, M01 /* m01..m10 follow */, N_USERS = M01 + 10 };
static const char *const user_names[N_USERS] = {"alice", "bob", "carol", "dave", "erin", "frank",
                                                "m01",   "m02", "m03",   "m04",  "m05",  "m06",
                                                "m07",   "m08", "m09",   "m10"};

#define MAX_MEMBERS 12 /* small, so that room_full is reachable */
#define N_SINKS 2
#define WAIT_S 20 /* a batch must arrive within this (a busy store waits 5 s) */

/* ---- what a test sees of a committed request ---- */

typedef struct {
    int type;
    char frame[160];
    int64_t to[32];
    size_t n_to;
    int64_t extra, user_id, device_id;
} cpush_t;

typedef struct {
    bool done;
    int op, err;
    char err_msg[160];
    int64_t r_user, r_device, r_room, r_seq, r_ts;
    bool r_duplicate;
    cpush_t pushes[16];
    size_t n_pushes;
    int batch_no; /* ordinal of the batch that carried it, from 1 */
    size_t pos;   /* its place in that batch */
} res_t;

typedef struct {
    fb_mpsc_t q;
    sem_t sem;
} sink_t;

typedef struct {
    char dir[64];
    char path[128];
    fb_store_config_t cfg;
    fb_store_t *store;  /* the writer's; the test uses it only while no writer runs */
    fb_store_t *reader; /* the test thread's */
    fb_store_t *probe;  /* the writer thread's, inside deliver() */
    fb_writer_t *w;
    fb_writer_opts_t opts;
    sink_t sinks[N_SINKS];
    int64_t uid[N_USERS], dev[N_USERS];
    int batches;
    pthread_t test_thread;
    atomic_int encoded_off_thread, encoded_on_test_thread;
    atomic_int acks_checked, acks_not_committed;
    size_t mem0;
} fx_t;

/* ---- fake encoders and sinks ---- */

static void note_thread(fx_t *fx)
{
    if (pthread_equal(pthread_self(), fx->test_thread))
        atomic_fetch_add(&fx->encoded_on_test_thread, 1);
    else
        atomic_fetch_add(&fx->encoded_off_thread, 1);
}

static void enc_event(void *ud, const fb_event_t *ev, int64_t unread, fb_buf_t *frame)
{
    note_thread(ud);
    fb_buf_appendf(frame, "ev:%lld:%lld:%s:%lld:%lld:%lld", (long long)ev->room_id,
                   (long long)ev->seq,
                   ev->kind == FB_EV_TEXT     ? "text"
                   : ev->kind == FB_EV_CREATE ? "create"
                   : ev->kind == FB_EV_JOIN   ? "join"
                   : ev->kind == FB_EV_LEAVE  ? "leave"
                   : ev->kind == FB_EV_KICK   ? "kick"
                   : ev->kind == FB_EV_RENAME ? "rename"
                                              : "?",
                   (long long)ev->actor_id, (long long)ev->target_id, (long long)unread);
}

static void enc_read(void *ud, int64_t room, int64_t user, const char *user_name, int64_t seq,
                     fb_buf_t *frame)
{
    note_thread(ud);
    fb_buf_appendf(frame, "read:%lld:%lld:%s:%lld", (long long)room, (long long)user, user_name,
                   (long long)seq);
}

/* Runs on the writer thread as the batch is handed out: every acked send
 * must already be readable by another connection, i.e. committed. */
static void check_acks_committed(fx_t *fx, fb_wbatch_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        fb_wreq_t *r = b->reqs[i];
        if (r->op != FB_W_SEND || r->err) continue;
        fb_event_t *evs = NULL;
        size_t n = 0;
        int rc = fb_store_events_after(fx->probe, r->r_room, r->r_seq - 1, r->r_seq, 1, &evs, &n);
        bool ok = rc == 0 && n == 1 && evs[0].cmid && strcmp(evs[0].cmid, r->cmid) == 0 &&
                  (r->r_duplicate || evs[0].actor_device == r->device_id);
        atomic_fetch_add(&fx->acks_checked, 1);
        if (!ok) atomic_fetch_add(&fx->acks_not_committed, 1);
        fb_events_free(evs, n);
    }
}

typedef struct {
    fx_t *fx;
    int index;
} sink_ud_t;

static sink_ud_t sink_uds[N_SINKS];

static void deliver(void *ud, fb_mpsc_node_t *node)
{
    sink_ud_t *s = ud;
    if (s->index == 0) check_acks_committed(s->fx, fb_wbatch_of(node, 0));
    fb_mpsc_push(&s->fx->sinks[s->index].q, node);
    sem_post(&s->fx->sinks[s->index].sem);
}

static fb_mpsc_node_t *sink_wait(sink_t *s, int seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += seconds;
    int rc;
    while ((rc = sem_timedwait(&s->sem, &ts)) != 0 && errno == EINTR) {
    }
    if (rc != 0) return NULL;
    fb_mpsc_node_t *n;
    while (!(n = fb_mpsc_pop(&s->q)))
        sched_yield(); /* the producer is between its two steps */
    return n;
}

static bool sink_idle(sink_t *s)
{
    if (sem_trywait(&s->sem) == 0) return false;
    return fb_mpsc_pop(&s->q) == NULL;
}

/* ---- fixture ---- */

static void start_writer(fx_t *fx)
{
    fb_wsink_t sinks[N_SINKS];
    for (int i = 0; i < N_SINKS; i++) {
        sink_uds[i] = (sink_ud_t){fx, i};
        sinks[i] = (fb_wsink_t){deliver, &sink_uds[i]};
    }
    assert_int_equal(fb_writer_start(fx->store, &fx->opts, sinks, N_SINKS, &fx->w), 0);
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx); /* plain calloc: not counted by fb_mem_in_use */
    if (!fx) return -1;
    fx->mem0 = fb_mem_in_use();
    fx->test_thread = pthread_self();
    strcpy(fx->dir, "/tmp/fb_writer_test_XXXXXX");
    if (!mkdtemp(fx->dir)) return -1;
    snprintf(fx->path, sizeof fx->path, "%s/fb.db", fx->dir);
    fx->cfg = (fb_store_config_t){.kind = "sqlite", .path = fx->path};
    if (fb_store_open(&fx->cfg, &fx->store) != 0) return -1;
    for (int i = 0; i < N_USERS; i++) {
        uint8_t hash[32] = {0};
        hash[0] = (uint8_t)(i + 1);
        if (fb_store_user_create(fx->store, user_names[i], "$argon2id$fake", 1000, &fx->uid[i]))
            return -1;
        if (fb_store_device_create(fx->store, fx->uid[i], "phone", hash, 1000, INT64_MAX / 2,
                                   &fx->dev[i]))
            return -1;
    }
    if (fb_store_open_reader(&fx->cfg, &fx->reader) != 0) return -1;
    if (fb_store_open_reader(&fx->cfg, &fx->probe) != 0) return -1;
    for (int i = 0; i < N_SINKS; i++) {
        fb_mpsc_init(&fx->sinks[i].q);
        sem_init(&fx->sinks[i].sem, 0, 0);
    }
    fx->opts = (fb_writer_opts_t){.max_room_members = MAX_MEMBERS,
                                  .batch_max = 4096,
                                  .encode_event = enc_event,
                                  .encode_read = enc_read,
                                  .encode_ud = fx};
    *state = fx;
    start_writer(fx);
    return 0;
}

/* Releases whatever a failed test left in the sinks. */
static void drain_sinks(fx_t *fx)
{
    for (int i = 0; i < N_SINKS; i++) {
        fb_mpsc_node_t *n;
        while (sem_trywait(&fx->sinks[i].sem) == 0)
            if ((n = fb_mpsc_pop(&fx->sinks[i].q))) fb_wbatch_release(fb_wbatch_of(n, i));
    }
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    int rc = 0;
    if (fx->w) fb_writer_stop(fx->w);
    drain_sinks(fx);
    fb_store_close(fx->probe);
    fb_store_close(fx->reader);
    fb_store_close(fx->store);
    if (atomic_load(&fx->acks_not_committed)) {
        fprintf(stderr, "%d acks left before their commit was visible\n",
                atomic_load(&fx->acks_not_committed));
        rc = -1;
    }
    if (atomic_load(&fx->encoded_on_test_thread)) {
        fprintf(stderr, "pushes were encoded on the test thread\n");
        rc = -1;
    }
    if (fb_mem_in_use() != fx->mem0) {
        fprintf(stderr, "leak: %zd bytes still in use\n", (ssize_t)(fb_mem_in_use() - fx->mem0));
        rc = -1;
    }
    for (int i = 0; i < N_SINKS; i++)
        sem_destroy(&fx->sinks[i].sem);
    const char *names[] = {"fb.db", "fb.db-wal", "fb.db-shm"};
    char p[160];
    for (size_t i = 0; i < FB_ARRAY_LEN(names); i++) {
        snprintf(p, sizeof p, "%s/%s", fx->dir, names[i]);
        unlink(p);
    }
    rmdir(fx->dir);
    free(fx);
    return rc;
}

/* ---- requests ---- */

static fb_wreq_t *rq(fx_t *fx, int op, int who)
{
    fb_wreq_t *r = fb_wreq_new(op);
    r->user_id = fx->uid[who];
    r->device_id = fx->dev[who];
    r->origin = who % N_SINKS;
    snprintf(r->user_name, sizeof r->user_name, "%s", user_names[who]);
    return r;
}

/* names: comma-separated, may be "" */
static void set_names(fb_wreq_t *r, const char *names)
{
    size_t cap = 1;
    for (const char *p = names; *p; p++)
        cap += *p == ',';
    r->names = fb_calloc(cap, sizeof *r->names);
    r->n_names = 0;
    if (!*names) return;
    const char *s = names;
    for (;;) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        r->names[r->n_names++] = fb_strndup(s, len);
        if (!e) break;
        s = e + 1;
    }
}

static fb_wreq_t *rq_send(fx_t *fx, int who, int64_t room, const char *cmid, const char *text)
{
    fb_wreq_t *r = rq(fx, FB_W_SEND, who);
    r->room_id = room;
    snprintf(r->cmid, sizeof r->cmid, "%s", cmid);
    r->text = fb_strdup(text);
    return r;
}

static fb_wreq_t *rq_group(fx_t *fx, int who, const char *name, const char *members)
{
    fb_wreq_t *r = rq(fx, FB_W_GROUP, who);
    r->name = fb_strdup(name);
    set_names(r, members);
    return r;
}

static fb_wreq_t *rq_direct(fx_t *fx, int who, const char *peer)
{
    fb_wreq_t *r = rq(fx, FB_W_DIRECT, who);
    r->name = fb_strdup(peer);
    return r;
}

static fb_wreq_t *rq_invite(fx_t *fx, int who, int64_t room, const char *names)
{
    fb_wreq_t *r = rq(fx, FB_W_INVITE, who);
    r->room_id = room;
    set_names(r, names);
    return r;
}

static fb_wreq_t *rq_room(fx_t *fx, int op, int who, int64_t room, const char *name)
{
    fb_wreq_t *r = rq(fx, op, who);
    r->room_id = room;
    if (name) r->name = fb_strdup(name);
    return r;
}

static fb_wreq_t *rq_read(fx_t *fx, int who, int64_t room, int64_t seq)
{
    fb_wreq_t *r = rq(fx, FB_W_READ, who);
    r->room_id = room;
    r->seq = seq;
    return r;
}

/* ---- submitting and collecting ---- */

static void capture(res_t *res, const fb_wreq_t *r, int batch_no, size_t pos)
{
    if (res->done) fail_msg("a request came back twice");
    res->done = true;
    res->op = r->op;
    res->err = r->err;
    snprintf(res->err_msg, sizeof res->err_msg, "%s", r->err_msg);
    res->r_user = r->r_user;
    res->r_device = r->r_device;
    res->r_room = r->r_room;
    res->r_seq = r->r_seq;
    res->r_ts = r->r_ts;
    res->r_duplicate = r->r_duplicate;
    res->batch_no = batch_no;
    res->pos = pos;
    res->n_pushes = 0;
    for (const fb_push_t *p = r->pushes; p; p = p->next) {
        assert_true(res->n_pushes < FB_ARRAY_LEN(res->pushes));
        cpush_t *c = &res->pushes[res->n_pushes++];
        memset(c, 0, sizeof *c);
        c->type = p->type;
        c->extra = p->extra;
        c->user_id = p->user_id;
        c->device_id = p->device_id;
        assert_true(p->frame.len < sizeof c->frame);
        if (p->frame.len) memcpy(c->frame, p->frame.data, p->frame.len);
        if (p->members) {
            assert_true(p->members->n <= FB_ARRAY_LEN(c->to));
            c->n_to = p->members->n;
            memcpy(c->to, p->members->ids, p->members->n * sizeof(int64_t));
            for (size_t i = 1; i < c->n_to; i++)
                assert_true(c->to[i - 1] < c->to[i]);
        }
    }
}

/* Takes batches from both sinks until n requests came back. Each batch must
 * reach both sinks, in the same order, as one object holding one reference
 * per sink. */
static void collect(fx_t *fx, size_t n)
{
    size_t got = 0;
    while (got < n) {
        fb_mpsc_node_t *n0 = sink_wait(&fx->sinks[0], WAIT_S);
        if (!n0) fail_msg("sink 0: no batch within %d s (%zu of %zu back)", WAIT_S, got, n);
        fb_mpsc_node_t *n1 = sink_wait(&fx->sinks[1], WAIT_S);
        if (!n1) fail_msg("sink 1: no batch within %d s", WAIT_S);
        fb_wbatch_t *b = fb_wbatch_of(n0, 0), *b1 = fb_wbatch_of(n1, 1);
        assert_ptr_equal(b, b1);
        assert_int_equal(atomic_load(&b->refs), N_SINKS);
        assert_true(b->n > 0);
        fx->batches++;
        for (size_t i = 0; i < b->n; i++)
            capture(b->reqs[i]->ctx, b->reqs[i], fx->batches, i);
        got += b->n;
        fb_wbatch_release(b);
        /* still alive for the second sink (ASan would catch a use after free) */
        assert_int_equal(atomic_load(&b1->refs), 1);
        for (size_t i = 0; i < b1->n; i++)
            assert_true(((res_t *)b1->reqs[i]->ctx)->done);
        fb_wbatch_release(b1);
    }
    assert_int_equal(got, n);
}

static void submit(fx_t *fx, fb_wreq_t *r, res_t *res)
{
    memset(res, 0, sizeof *res);
    r->ctx = res;
    fb_writer_submit(fx->w, r);
}

static void run(fx_t *fx, fb_wreq_t **reqs, size_t n, res_t *res)
{
    for (size_t i = 0; i < n; i++)
        submit(fx, reqs[i], &res[i]);
    collect(fx, n);
    /* one submitter: commit order is submission order */
    for (size_t i = 1; i < n; i++)
        assert_true(res[i].batch_no > res[i - 1].batch_no ||
                    (res[i].batch_no == res[i - 1].batch_no && res[i].pos > res[i - 1].pos));
}

static res_t run1(fx_t *fx, fb_wreq_t *r)
{
    res_t res;
    run(fx, &r, 1, &res);
    return res;
}

static res_t ok1(fx_t *fx, fb_wreq_t *r)
{
    res_t res = run1(fx, r);
    if (res.err)
        fail_msg("request op %d failed: %s (%s)", res.op, fb_err_code(res.err), res.err_msg);
    return res;
}

/* Holds the database's write lock from another connection, so that the
 * writer waits at BEGIN and what is submitted meanwhile forms one batch. */
static sqlite3 *lock_store(fx_t *fx)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    return db;
}

static void unlock_store(sqlite3 *db)
{
    assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* ---- assertions on results and on the store ---- */

static void assert_to(const cpush_t *p, size_t n, ...)
{
    va_list ap;
    int64_t want[32];
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        want[i] = va_arg(ap, int64_t);
    va_end(ap);
    if (p->n_to != n) fail_msg("push '%s' goes to %zu users, want %zu", p->frame, p->n_to, n);
    for (size_t i = 0; i < n; i++)
        if (p->to[i] != want[i])
            fail_msg("push '%s': recipient %zu is %lld, want %lld", p->frame, i,
                     (long long)p->to[i], (long long)want[i]);
}

static void assert_frame_ev(const cpush_t *p, int64_t room, int64_t seq, const char *kind,
                            int64_t actor, int64_t target, int64_t unread)
{
    char want[160];
    snprintf(want, sizeof want, "ev:%lld:%lld:%s:%lld:%lld:%lld", (long long)room, (long long)seq,
             kind, (long long)actor, (long long)target, (long long)unread);
    assert_int_equal(p->type, FB_PUSH_FRAME);
    assert_string_equal(p->frame, want);
}

static void assert_frame_read(const cpush_t *p, int64_t room, int64_t user, const char *name,
                              int64_t seq)
{
    char want[160];
    snprintf(want, sizeof want, "read:%lld:%lld:%s:%lld", (long long)room, (long long)user, name,
             (long long)seq);
    assert_int_equal(p->type, FB_PUSH_FRAME);
    assert_string_equal(p->frame, want);
}

static void assert_err(const res_t *r, int err)
{
    if (r->err != err)
        fail_msg("op %d: got %s (%d) '%s', want %s", r->op, fb_err_code(r->err), r->err, r->err_msg,
                 fb_err_code(err));
    assert_int_equal(r->n_pushes, 0); /* a rejected request pushes nothing */
}

/* All events of room; they must be seq 1..n without a gap. */
static fb_event_t *room_events(fx_t *fx, int64_t room, size_t *n)
{
    fb_event_t *evs = NULL;
    assert_int_equal(fb_store_events_after(fx->reader, room, 0, 0, 100000, &evs, n), 0);
    for (size_t i = 0; i < *n; i++)
        if (evs[i].seq != (int64_t)i + 1)
            fail_msg("room %lld: event %zu has seq %lld", (long long)room, i,
                     (long long)evs[i].seq);
    fb_room_t r;
    assert_int_equal(fb_store_room_get(fx->reader, room, &r), 0);
    assert_int_equal(r.last_seq, (int64_t)*n);
    fb_room_clear(&r);
    return evs;
}

static size_t count_events(fx_t *fx, int64_t room)
{
    size_t n;
    fb_event_t *evs = room_events(fx, room, &n);
    fb_events_free(evs, n);
    return n;
}

static fb_member_t member(fx_t *fx, int64_t room, int who)
{
    fb_member_t m;
    int rc = fb_store_member_get(fx->reader, room, fx->uid[who], &m);
    if (rc) fail_msg("%s has no member row in room %lld", user_names[who], (long long)room);
    return m;
}

static bool is_member(fx_t *fx, int64_t room, int who)
{
    fb_member_t m;
    if (fb_store_member_get(fx->reader, room, fx->uid[who], &m) != 0) return false;
    bool cur = m.left_seq == 0;
    fb_member_clear(&m);
    return cur;
}

static fb_room_t room_get(fx_t *fx, int64_t room)
{
    fb_room_t r;
    assert_int_equal(fb_store_room_get(fx->reader, room, &r), 0);
    return r;
}

static void assert_no_more_batches(fx_t *fx)
{
    for (int i = 0; i < N_SINKS; i++)
        assert_true(sink_idle(&fx->sinks[i]));
}

/* A group of who with members; returns its id. */
static int64_t mk_group(fx_t *fx, int who, const char *name, const char *members)
{
    res_t r = ok1(fx, rq_group(fx, who, name, members));
    assert_true(r.r_room > 0);
    return r.r_room;
}

/* ---- tests ---- */

static void test_group_create(void **state)
{
    fx_t *fx = *state;
    int64_t A = fx->uid[ALICE], B = fx->uid[BOB], C = fx->uid[CAROL];
    res_t r = ok1(fx, rq_group(fx, ALICE, "Club", "bob,carol"));
    int64_t R = r.r_room;
    assert_true(R > 0);
    /* create (seq 1) to the owner, then a join per member to the members so far */
    assert_int_equal(r.n_pushes, 3);
    assert_frame_ev(&r.pushes[0], R, 1, "create", A, 0, -1);
    assert_to(&r.pushes[0], 1, A);
    assert_frame_ev(&r.pushes[1], R, 2, "join", A, B, -1);
    assert_to(&r.pushes[1], 2, A, B);
    assert_frame_ev(&r.pushes[2], R, 3, "join", A, C, -1);
    assert_to(&r.pushes[2], 3, A, B, C);
    for (size_t i = 0; i < r.n_pushes; i++)
        assert_int_equal(r.pushes[i].extra, 0);

    size_t n;
    fb_event_t *evs = room_events(fx, R, &n);
    assert_int_equal(n, 3);
    assert_int_equal(evs[0].kind, FB_EV_CREATE);
    assert_int_equal(evs[0].actor_id, A);
    assert_string_equal(evs[0].text, "Club");
    assert_int_equal(evs[1].kind, FB_EV_JOIN);
    assert_int_equal(evs[1].actor_id, A);
    assert_int_equal(evs[1].target_id, B);
    assert_int_equal(evs[2].kind, FB_EV_JOIN);
    assert_int_equal(evs[2].target_id, C);
    fb_events_free(evs, n);

    fb_room_t room = room_get(fx, R);
    assert_int_equal(room.kind, FB_ROOM_GROUP);
    assert_string_equal(room.name, "Club");
    assert_int_equal(room.owner_id, A);
    fb_room_clear(&room);
    /* founding members see the room from its first event */
    fb_member_t ms[3] = {member(fx, R, ALICE), member(fx, R, BOB), member(fx, R, CAROL)};
    assert_int_equal(ms[0].role, FB_ROLE_OWNER);
    assert_int_equal(ms[1].role, FB_ROLE_MEMBER);
    assert_int_equal(ms[2].role, FB_ROLE_MEMBER);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ms[i].joined_seq, 1);
        assert_int_equal(ms[i].left_seq, 0);
        fb_member_clear(&ms[i]);
    }

    /* an empty group; the owner and duplicates in the list add nobody twice */
    r = ok1(fx, rq_group(fx, DAVE, "", ""));
    assert_int_equal(r.n_pushes, 1);
    assert_int_equal(count_events(fx, r.r_room), 1);
    r = ok1(fx, rq_group(fx, DAVE, "Dupes", "erin,dave,erin"));
    assert_int_equal(count_events(fx, r.r_room), 2);
    assert_int_equal(r.n_pushes, 2);
    assert_to(&r.pushes[1], 2, fx->uid[DAVE], fx->uid[ERIN]);

    /* an unknown member: nothing of the request is stored */
    size_t rooms_before;
    fb_room_summary_t *rs;
    assert_int_equal(fb_store_rooms_for_user(fx->reader, fx->uid[ERIN], &rs, &rooms_before), 0);
    fb_room_summaries_free(rs, rooms_before);
    r = run1(fx, rq_group(fx, ERIN, "Ghosts", "frank,zed"));
    assert_err(&r, FB_ENOTFOUND);
    assert_non_null(strstr(r.err_msg, "zed"));
    size_t rooms_after;
    assert_int_equal(fb_store_rooms_for_user(fx->reader, fx->uid[ERIN], &rs, &rooms_after), 0);
    fb_room_summaries_free(rs, rooms_after);
    assert_int_equal(rooms_after, rooms_before);
    assert_int_equal(fb_store_rooms_for_user(fx->reader, fx->uid[FRANK], &rs, &n), 0);
    fb_room_summaries_free(rs, n);
    assert_int_equal(n, 0);

    /* the room id that was rolled back is reused cleanly */
    r = ok1(fx, rq_group(fx, FRANK, "Next", "erin"));
    assert_int_equal(r.n_pushes, 2);
    assert_to(&r.pushes[1], 2, fx->uid[ERIN], fx->uid[FRANK]);
    assert_int_equal(count_events(fx, r.r_room), 2);
    assert_no_more_batches(fx);
}

static void test_group_limits_and_trim(void **state)
{
    fx_t *fx = *state;
    /* 1 + 12 > MAX_MEMBERS */
    res_t r = run1(fx, rq_group(fx, ALICE, "Full",
                                "bob,carol,dave,erin,frank,m01,m02,m03,m04,"
                                "m05,m06,m07"));
    assert_err(&r, FB_EFULL);

    /* create + 7 joins: 8 pushes, all kept */
    r = ok1(fx, rq_group(fx, ALICE, "Eight", "m01,m02,m03,m04,m05,m06,m07"));
    assert_int_equal(r.n_pushes, 8);
    for (size_t i = 0; i < 8; i++)
        assert_true(strncmp(r.pushes[i].frame, "ev:", 3) == 0);
    assert_int_equal(r.pushes[7].n_to, 8);

    /* create + 8 joins: only the last is pushed, to everyone */
    r = ok1(fx, rq_group(fx, ALICE, "Nine", "m01,m02,m03,m04,m05,m06,m07,m08"));
    assert_int_equal(r.n_pushes, 1);
    assert_frame_ev(&r.pushes[0], r.r_room, 9, "join", fx->uid[ALICE], fx->uid[M01 + 7], -1);
    assert_int_equal(r.pushes[0].n_to, 9);
    assert_int_equal(count_events(fx, r.r_room), 9);

    /* invite of 9 into a room of 1: one push, the last join */
    int64_t R = mk_group(fx, BOB, "Big", "");
    r = ok1(fx, rq_invite(fx, BOB, R, "m01,m02,m03,m04,m05,m06,m07,m08,m09"));
    assert_int_equal(r.r_seq, 10);
    assert_int_equal(r.n_pushes, 1);
    assert_frame_ev(&r.pushes[0], R, 10, "join", fx->uid[BOB], fx->uid[M01 + 8], -1);
    assert_int_equal(r.pushes[0].n_to, 10);

    /* 10 members; 2 more fit, the 13th does not */
    r = ok1(fx, rq_invite(fx, BOB, R, "m10,alice"));
    assert_int_equal(r.r_seq, 12);
    assert_int_equal(r.n_pushes, 2);
    assert_int_equal(r.pushes[1].n_to, MAX_MEMBERS);
    r = run1(fx, rq_invite(fx, BOB, R, "carol"));
    assert_err(&r, FB_EFULL);
    assert_false(is_member(fx, R, CAROL));
    assert_int_equal(count_events(fx, R), 12);

    /* after a leave there is room again */
    ok1(fx, rq_room(fx, FB_W_LEAVE, M01, R, NULL));
    r = ok1(fx, rq_invite(fx, BOB, R, "carol"));
    assert_int_equal(r.r_seq, 14);
    assert_int_equal(r.pushes[0].n_to, MAX_MEMBERS);
    assert_no_more_batches(fx);
}

static void test_send_gapless(void **state)
{
    fx_t *fx = *state;
    int64_t A = fx->uid[ALICE], B = fx->uid[BOB];
    int64_t R = mk_group(fx, ALICE, "Chat", "bob");
    enum { N = 40 };
    fb_wreq_t *reqs[N];
    res_t res[N];
    char cmid[32], text[64];
    for (int i = 0; i < N; i++) {
        int who = i % 3 == 2 ? BOB : ALICE;
        snprintf(cmid, sizeof cmid, "m%d", i);
        snprintf(text, sizeof text, "message %d 안녕", i);
        reqs[i] = rq_send(fx, who, R, cmid, text);
    }
    run(fx, reqs, N, res);
    int64_t last_ts = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(res[i].err, 0);
        assert_int_equal(res[i].r_room, R);
        assert_int_equal(res[i].r_seq, 3 + i); /* after create and join */
        assert_false(res[i].r_duplicate);
        assert_true(res[i].r_ts >= last_ts);
        assert_true(res[i].r_ts > 1700000000000);
        last_ts = res[i].r_ts;
        /* the message to both members, one unread (the other member) */
        assert_true(res[i].n_pushes >= 1);
        int64_t from = i % 3 == 2 ? B : A;
        assert_frame_ev(&res[i].pushes[0], R, 3 + i, "text", from, 0, 1);
        assert_to(&res[i].pushes[0], 2, A, B);
        assert_int_equal(res[i].pushes[0].extra, 0);
    }
    /* a read push only when the sender's marker jumps over others' events:
     * alice's first send passes create and join; her second follows her own */
    assert_int_equal(res[0].n_pushes, 2);
    assert_frame_read(&res[0].pushes[1], R, A, "alice", 3);
    assert_to(&res[0].pushes[1], 2, A, B);
    assert_int_equal(res[1].n_pushes, 1);
    assert_int_equal(res[2].n_pushes, 2); /* bob, first time */
    assert_frame_read(&res[2].pushes[1], R, B, "bob", 5);
    assert_int_equal(res[3].n_pushes, 2); /* alice after bob's message */
    assert_frame_read(&res[3].pushes[1], R, A, "alice", 6);
    assert_int_equal(res[4].n_pushes, 1);

    size_t n;
    fb_event_t *evs = room_events(fx, R, &n);
    assert_int_equal(n, 2 + N);
    for (int i = 0; i < N; i++) {
        fb_event_t *e = &evs[2 + i];
        int who = i % 3 == 2 ? BOB : ALICE;
        snprintf(cmid, sizeof cmid, "m%d", i);
        snprintf(text, sizeof text, "message %d 안녕", i);
        assert_int_equal(e->kind, FB_EV_TEXT);
        assert_int_equal(e->actor_id, fx->uid[who]);
        assert_int_equal(e->actor_device, fx->dev[who]);
        assert_string_equal(e->cmid, cmid);
        assert_string_equal(e->text, text);
        assert_int_equal(e->ts_ms, res[i].r_ts);
    }
    fb_events_free(evs, n);
    /* sending marks read: each sender's marker is at its newest message */
    fb_member_t ma = member(fx, R, ALICE), mb = member(fx, R, BOB);
    assert_int_equal(ma.read_seq, 2 + N);  /* the last message (i = 39) is alice's */
    assert_int_equal(mb.read_seq, 2 + 39); /* bob's last is i = 38 */
    fb_member_clear(&ma);
    fb_member_clear(&mb);
    assert_true(atomic_load(&fx->acks_checked) >= N);
    assert_int_equal(atomic_load(&fx->acks_not_committed), 0);
    assert_true(atomic_load(&fx->encoded_off_thread) > 0);
    const fb_writer_stats_t *st = fb_writer_stats(fx->w);
    assert_int_equal(atomic_load(&st->requests), N + 1);
    assert_int_equal(atomic_load(&st->events), N);
    assert_int_equal(atomic_load(&st->commit_failures), 0);
    assert_int_equal(atomic_load(&st->commits), fx->batches);
    assert_no_more_batches(fx);
}

/* ---- two submitter threads ---- */

enum { PER_THREAD = 400 };

typedef struct {
    fx_t *fx;
    int who;
    int64_t rooms[2];
    res_t *res;
    pthread_barrier_t *start;
} submitter_t;

static void *submitter_main(void *arg)
{
    submitter_t *s = arg;
    char cmid[32], text[32];
    pthread_barrier_wait(s->start);
    for (int i = 0; i < PER_THREAD; i++) {
        snprintf(cmid, sizeof cmid, "t%d-%d", s->who, i);
        snprintf(text, sizeof text, "%d", i);
        fb_wreq_t *r = rq_send(s->fx, s->who, s->rooms[i % 2], cmid, text);
        memset(&s->res[i], 0, sizeof s->res[i]);
        r->ctx = &s->res[i];
        fb_writer_submit(s->fx->w, r);
    }
    return NULL;
}

static void test_send_two_threads(void **state)
{
    fx_t *fx = *state;
    int64_t R1 = mk_group(fx, ALICE, "One", "bob"), R2 = mk_group(fx, BOB, "Two", "alice");
    int batches0 = fx->batches;
    res_t *res = calloc(2 * PER_THREAD, sizeof *res);
    assert_non_null(res);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    submitter_t subs[2] = {{fx, ALICE, {R1, R2}, res, &start},
                           {fx, BOB, {R2, R1}, res + PER_THREAD, &start}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, submitter_main, &subs[i]), 0);
    collect(fx, 2 * PER_THREAD);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);

    /* all committed, and each thread's sends into a room in its order */
    for (int t = 0; t < 2; t++) {
        int64_t last[2] = {0, 0};
        for (int i = 0; i < PER_THREAD; i++) {
            res_t *r = &subs[t].res[i];
            assert_true(r->done);
            assert_int_equal(r->err, 0);
            assert_false(r->r_duplicate);
            assert_int_equal(r->r_room, subs[t].rooms[i % 2]);
            assert_true(r->r_seq > last[i % 2]);
            last[i % 2] = r->r_seq;
        }
    }
    /* each room gapless, holding exactly the messages sent into it */
    int64_t rooms[2] = {R1, R2};
    for (int k = 0; k < 2; k++) {
        size_t n;
        fb_event_t *evs = room_events(fx, rooms[k], &n);
        assert_int_equal(n, 2 + PER_THREAD);
        bool *seen = calloc(2 * PER_THREAD, sizeof *seen);
        assert_non_null(seen);
        for (size_t i = 2; i < n; i++) {
            int t = evs[i].actor_id == fx->uid[ALICE] ? 0 : 1;
            int idx = atoi(evs[i].text);
            res_t *r = &subs[t].res[idx];
            assert_int_equal(r->r_room, rooms[k]);
            assert_int_equal(r->r_seq, evs[i].seq);
            assert_false(seen[t * PER_THREAD + idx]);
            seen[t * PER_THREAD + idx] = true;
        }
        free(seen);
        fb_events_free(evs, n);
    }
    /* group commit happened: fewer commits than requests */
    int batches = fx->batches - batches0;
    const fb_writer_stats_t *st = fb_writer_stats(fx->w);
    assert_true(batches < 2 * PER_THREAD);
    assert_true(atomic_load(&st->batch_max_seen) > 1);
    assert_int_equal(atomic_load(&st->events), 2 * PER_THREAD);
    free(res);
    assert_no_more_batches(fx);
}

static void test_send_retry(void **state)
{
    fx_t *fx = *state;
    int64_t R = mk_group(fx, ALICE, "Chat", "bob"), R2 = mk_group(fx, ALICE, "Other", "");
    res_t first = ok1(fx, rq_send(fx, ALICE, R, "c1", "hello"));
    assert_int_equal(first.r_seq, 3);
    assert_false(first.r_duplicate);

    /* the same device and cmid: the original answer, even with another text or room */
    fb_wreq_t *reqs[] = {
        rq_send(fx, ALICE, R, "c1", "hello"),
        rq_send(fx, ALICE, R, "c1", "something else"),
        rq_send(fx, ALICE, R2, "c1", "elsewhere"),
        rq_send(fx, BOB, R, "c1", "bob's own c1"), /* another device: a new message */
        rq_send(fx, ALICE, R, "c2", "two"),
        rq_send(fx, ALICE, R, "c2", "two again"), /* a retry in the same submission */
    };
    res_t res[FB_ARRAY_LEN(reqs)];
    run(fx, reqs, FB_ARRAY_LEN(reqs), res);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res[i].err, 0);
        assert_true(res[i].r_duplicate);
        assert_int_equal(res[i].r_room, R);
        assert_int_equal(res[i].r_seq, 3);
        assert_int_equal(res[i].r_ts, first.r_ts);
        assert_int_equal(res[i].n_pushes, 0); /* nothing new to push */
    }
    assert_false(res[3].r_duplicate);
    assert_int_equal(res[3].r_seq, 4);
    assert_false(res[4].r_duplicate);
    assert_int_equal(res[4].r_seq, 5);
    assert_true(res[5].r_duplicate);
    assert_int_equal(res[5].r_seq, 5);
    assert_int_equal(res[5].r_ts, res[4].r_ts);

    size_t n;
    fb_event_t *evs = room_events(fx, R, &n);
    assert_int_equal(n, 5);
    assert_string_equal(evs[2].text, "hello");
    assert_string_equal(evs[3].text, "bob's own c1");
    assert_string_equal(evs[4].text, "two");
    fb_events_free(evs, n);
    assert_int_equal(count_events(fx, R2), 1);

    /* a retry after leaving still gets its original answer */
    ok1(fx, rq_room(fx, FB_W_LEAVE, BOB, R, NULL));
    res_t again = ok1(fx, rq_send(fx, BOB, R, "c1", "bob's own c1"));
    assert_true(again.r_duplicate);
    assert_int_equal(again.r_seq, 4);
    assert_int_equal(count_events(fx, R), 6); /* 5 + the leave */
    assert_no_more_batches(fx);
}

/* stats.events is exported as firebreak_messages_stored_total, "Messages
 * committed": a retried send stores nothing and must not count. */
static void test_stats_count_stored_messages(void **state)
{
    fx_t *fx = *state;
    int64_t R = mk_group(fx, ALICE, "Chat", "");
    ok1(fx, rq_send(fx, ALICE, R, "s1", "one"));
    res_t dup = ok1(fx, rq_send(fx, ALICE, R, "s1", "one"));
    assert_true(dup.r_duplicate);
    assert_int_equal(count_events(fx, R), 2);
    const fb_writer_stats_t *st = fb_writer_stats(fx->w);
    assert_int_equal(atomic_load(&st->requests), 3);
    assert_int_equal(atomic_load(&st->events), 1);
}

static void test_send_rejects_in_batch(void **state)
{
    fx_t *fx = *state;
    int64_t A = fx->uid[ALICE], B = fx->uid[BOB];
    int64_t R = mk_group(fx, ALICE, "Chat", "bob");
    int64_t other = mk_group(fx, CAROL, "Carol's", "");

    sqlite3 *lock = lock_store(fx);
    res_t res[7];
    submit(fx, rq_send(fx, ALICE, R, "x0", "first, alone"), &res[0]);
    usleep(100 * 1000); /* the writer takes x0 and waits at BEGIN */
    fb_wreq_t *reqs[] = {
        rq_send(fx, ALICE, R, "a1", "before"),
        rq_send(fx, CAROL, R, "b1", "not a member"),
        rq_send(fx, BOB, R, "a2", "between"),
        rq_send(fx, ALICE, 99999, "b2", "no such room"),
        rq_send(fx, ALICE, other, "b3", "member of another room only"),
        rq_send(fx, ALICE, R, "a3", "after"),
    };
    for (size_t i = 0; i < FB_ARRAY_LEN(reqs); i++)
        submit(fx, reqs[i], &res[i + 1]);
    unlock_store(lock);
    collect(fx, 7);
    /* the six share one batch and one transaction */
    for (int i = 2; i <= 6; i++)
        assert_int_equal(res[i].batch_no, res[1].batch_no);

    assert_int_equal(res[0].err, 0);
    assert_int_equal(res[0].r_seq, 3);
    assert_int_equal(res[1].err, 0);
    assert_int_equal(res[1].r_seq, 4);
    assert_err(&res[2], FB_ENOTMEMBER);
    assert_int_equal(res[3].err, 0);
    assert_int_equal(res[3].r_seq, 5);
    assert_err(&res[4], FB_ENOTMEMBER);
    assert_err(&res[5], FB_ENOTMEMBER);
    assert_int_equal(res[6].err, 0);
    assert_int_equal(res[6].r_seq, 6);
    assert_frame_ev(&res[3].pushes[0], R, 5, "text", B, 0, 1);
    assert_to(&res[6].pushes[0], 2, A, B);

    size_t n;
    fb_event_t *evs = room_events(fx, R, &n);
    assert_int_equal(n, 6);
    assert_string_equal(evs[3].cmid, "a1");
    assert_string_equal(evs[4].cmid, "a2");
    assert_string_equal(evs[5].cmid, "a3");
    fb_events_free(evs, n);
    assert_int_equal(count_events(fx, other), 1);
    /* a rejected cmid was not used up */
    res_t b1 = run1(fx, rq_send(fx, CAROL, other, "b1", "now in my room"));
    assert_int_equal(b1.err, 0);
    assert_false(b1.r_duplicate);
    assert_int_equal(b1.r_seq, 2);
    assert_no_more_batches(fx);
}

/* A batch whose transaction cannot start: every request gets a retryable
 * error, nothing is pushed or stored, and a retry later succeeds. */
static void test_batch_failure(void **state)
{
    fx_t *fx = *state;
    int64_t R = mk_group(fx, ALICE, "Chat", "bob");
    ok1(fx, rq_send(fx, BOB, R, "ok0", "before"));

    sqlite3 *lock = lock_store(fx);
    fb_wreq_t *reqs[] = {
        rq_send(fx, ALICE, R, "f1", "lost?"),
        rq_group(fx, CAROL, "Never", "dave"),
        rq_read(fx, BOB, R, 3),
        rq_room(fx, FB_W_RENAME, ALICE, R, "Renamed"),
    };
    res_t res[FB_ARRAY_LEN(reqs)];
    /* the writer's BEGIN gives up after the store's busy timeout (5 s) */
    run(fx, reqs, FB_ARRAY_LEN(reqs), res);
    unlock_store(lock);
    for (size_t i = 0; i < FB_ARRAY_LEN(reqs); i++) {
        assert_err(&res[i], FB_EUNAVAIL);
        assert_true(fb_err_retryable(res[i].err));
    }
    const fb_writer_stats_t *st = fb_writer_stats(fx->w);
    assert_int_equal(atomic_load(&st->commit_failures), 1);
    assert_int_equal(count_events(fx, R), 3);
    fb_room_t room = room_get(fx, R);
    assert_string_equal(room.name, "Chat");
    fb_room_clear(&room);
    size_t n;
    fb_room_summary_t *rs;
    assert_int_equal(fb_store_rooms_for_user(fx->reader, fx->uid[CAROL], &rs, &n), 0);
    fb_room_summaries_free(rs, n);
    assert_int_equal(n, 0);

    /* the retry is a first send: same cmid, next seq, no gap */
    res_t retry = ok1(fx, rq_send(fx, ALICE, R, "f1", "lost?"));
    assert_false(retry.r_duplicate);
    assert_int_equal(retry.r_seq, 4);
    res_t rd = ok1(fx, rq_read(fx, BOB, R, 4));
    assert_int_equal(rd.r_seq, 4);
    assert_int_equal(rd.n_pushes, 1);
    assert_no_more_batches(fx);
}

static void test_direct(void **state)
{
    fx_t *fx = *state;
    int64_t A = fx->uid[ALICE], B = fx->uid[BOB];
    res_t r = ok1(fx, rq_direct(fx, ALICE, "bob"));
    int64_t D = r.r_room;
    assert_true(D > 0);
    assert_int_equal(r.n_pushes, 1);
    assert_frame_ev(&r.pushes[0], D, 1, "create", A, 0, -1);
    assert_to(&r.pushes[0], 2, A, B);
    fb_room_t room = room_get(fx, D);
    assert_int_equal(room.kind, FB_ROOM_DIRECT);
    assert_string_equal(room.name, "");
    assert_int_equal(room.owner_id, 0);
    fb_room_clear(&room);
    fb_member_t ma = member(fx, D, ALICE), mb = member(fx, D, BOB);
    assert_int_equal(ma.role, FB_ROLE_MEMBER);
    assert_int_equal(mb.role, FB_ROLE_MEMBER);
    assert_int_equal(ma.joined_seq, 1);
    assert_int_equal(mb.joined_seq, 1);
    fb_member_clear(&ma);
    fb_member_clear(&mb);

    /* either side, however often, in one batch or many: the same room */
    fb_wreq_t *reqs[] = {rq_direct(fx, BOB, "alice"),  rq_direct(fx, ALICE, "bob"),
                         rq_direct(fx, BOB, "alice"),  rq_direct(fx, CAROL, "dave"),
                         rq_direct(fx, DAVE, "carol"), rq_direct(fx, ALICE, "alice"),
                         rq_direct(fx, ALICE, "zed")};
    res_t res[FB_ARRAY_LEN(reqs)];
    run(fx, reqs, FB_ARRAY_LEN(reqs), res);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res[i].err, 0);
        assert_int_equal(res[i].r_room, D);
        assert_int_equal(res[i].n_pushes, 0);
    }
    assert_int_equal(res[3].err, 0);
    assert_int_equal(res[4].err, 0);
    assert_int_equal(res[3].r_room, res[4].r_room);
    assert_true(res[3].r_room != D);
    assert_int_equal(res[3].n_pushes, 1);
    assert_int_equal(res[4].n_pushes, 0);
    assert_err(&res[5], FB_EINVAL);
    assert_err(&res[6], FB_ENOTFOUND);
    assert_non_null(strstr(res[6].err_msg, "zed"));
    assert_int_equal(count_events(fx, D), 1);
    assert_int_equal(count_events(fx, res[3].r_room), 1);

    /* a 1:1 room cannot be renamed, invited into or kicked from */
    r = run1(fx, rq_room(fx, FB_W_RENAME, ALICE, D, "Us"));
    assert_err(&r, FB_EFORBIDDEN);
    r = run1(fx, rq_invite(fx, ALICE, D, "carol"));
    assert_err(&r, FB_EFORBIDDEN);
    r = run1(fx, rq_room(fx, FB_W_KICK, ALICE, D, "bob"));
    assert_err(&r, FB_EFORBIDDEN);
    assert_int_equal(count_events(fx, D), 1);

    /* bob leaves; asking again brings him back with a join, same room */
    r = ok1(fx, rq_room(fx, FB_W_LEAVE, BOB, D, NULL));
    assert_int_equal(r.r_seq, 2);
    assert_frame_ev(&r.pushes[0], D, 2, "leave", B, 0, -1);
    assert_to(&r.pushes[0], 1, A);
    assert_int_equal(r.pushes[0].extra, B);
    r = run1(fx, rq_send(fx, BOB, D, "gone", "x"));
    assert_err(&r, FB_ENOTMEMBER);
    r = ok1(fx, rq_direct(fx, ALICE, "bob"));
    assert_int_equal(r.r_room, D);
    assert_int_equal(r.n_pushes, 1);
    assert_frame_ev(&r.pushes[0], D, 3, "join", A, B, -1);
    assert_to(&r.pushes[0], 2, A, B);
    assert_true(is_member(fx, D, BOB));
    mb = member(fx, D, BOB);
    assert_int_equal(mb.joined_seq, 3);
    fb_member_clear(&mb);
    r = ok1(fx, rq_direct(fx, BOB, "alice"));
    assert_int_equal(r.r_room, D);
    assert_int_equal(r.n_pushes, 0);
    r = ok1(fx, rq_send(fx, BOB, D, "back", "hi"));
    assert_int_equal(r.r_seq, 4);
    assert_int_equal(count_events(fx, D), 4);

    /* both left: both come back, one join each, requester first */
    ok1(fx, rq_room(fx, FB_W_LEAVE, ALICE, D, NULL));
    ok1(fx, rq_room(fx, FB_W_LEAVE, BOB, D, NULL));
    r = ok1(fx, rq_direct(fx, BOB, "alice"));
    assert_int_equal(r.r_room, D);
    assert_int_equal(r.n_pushes, 2);
    assert_frame_ev(&r.pushes[0], D, 7, "join", B, B, -1);
    assert_frame_ev(&r.pushes[1], D, 8, "join", B, A, -1);
    assert_to(&r.pushes[1], 2, A, B);

    /* alice holds exactly one direct room with bob */
    size_t n, direct_with_bob = 0;
    fb_room_summary_t *rs;
    assert_int_equal(fb_store_rooms_for_user(fx->reader, A, &rs, &n), 0);
    for (size_t i = 0; i < n; i++)
        direct_with_bob += rs[i].room.kind == FB_ROOM_DIRECT;
    fb_room_summaries_free(rs, n);
    assert_int_equal(direct_with_bob, 1);
    assert_no_more_batches(fx);
}

static void test_invite(void **state)
{
    fx_t *fx = *state;
    int64_t A = fx->uid[ALICE], B = fx->uid[BOB], C = fx->uid[CAROL], D = fx->uid[DAVE];
    int64_t R = mk_group(fx, ALICE, "Club", "bob,carol");

    res_t r = ok1(fx, rq_invite(fx, BOB, R, "dave"));
    assert_int_equal(r.r_seq, 4);
    assert_int_equal(r.n_pushes, 1);
    assert_frame_ev(&r.pushes[0], R, 4, "join", B, D, -1);
    assert_to(&r.pushes[0], 4, A, B, C, D);
    fb_member_t md = member(fx, R, DAVE);
    assert_int_equal(md.joined_seq, 4);
    assert_int_equal(md.read_seq, 3);
    assert_int_equal(md.role, FB_ROLE_MEMBER);
    fb_member_clear(&md);

    /* everyone already in: seq 0, no event */
    r = ok1(fx, rq_invite(fx, CAROL, R, "alice,dave"));
    assert_int_equal(r.r_seq, 0);
    assert_int_equal(r.n_pushes, 0);
    assert_int_equal(count_events(fx, R), 4);

    r = run1(fx, rq_invite(fx, ERIN, R, "frank"));
    assert_err(&r, FB_ENOTMEMBER);
    r = run1(fx, rq_invite(fx, ERIN, 99999, "frank"));
    assert_err(&r, FB_ENOTMEMBER);
    /* an unknown name undoes the whole invite */
    r = run1(fx, rq_invite(fx, ALICE, R, "frank,zed"));
    assert_err(&r, FB_ENOTFOUND);
    assert_non_null(strstr(r.err_msg, "zed"));
    assert_false(is_member(fx, R, FRANK));
    assert_int_equal(count_events(fx, R), 4);
    /* and the membership the writer remembers was undone too */
    r = run1(fx, rq_send(fx, FRANK, R, "f1", "am I in?"));
    assert_err(&r, FB_ENOTMEMBER);
    r = ok1(fx, rq_invite(fx, ALICE, R, "frank"));
    assert_int_equal(r.r_seq, 5);
    r = ok1(fx, rq_send(fx, FRANK, R, "f2", "now I am"));
    assert_int_equal(r.r_seq, 6);
    assert_frame_ev(&r.pushes[0], R, 6, "text", fx->uid[FRANK], 0, 4);
    assert_no_more_batches(fx);
}

static void test_kick_and_leave(void **state)
{
    fx_t *fx = *state;
    int64_t A = fx->uid[ALICE], B = fx->uid[BOB], C = fx->uid[CAROL], D = fx->uid[DAVE];
    int64_t R = mk_group(fx, ALICE, "Club", "bob,carol,dave"); /* seqs 1..4 */

    fb_wreq_t *bad[] = {
        rq_room(fx, FB_W_KICK, BOB, R, "carol"),     /* not the owner */
        rq_room(fx, FB_W_KICK, ALICE, R, "alice"),   /* oneself */
        rq_room(fx, FB_W_KICK, ALICE, R, "erin"),    /* not a member */
        rq_room(fx, FB_W_KICK, ALICE, R, "zed"),     /* no such user */
        rq_room(fx, FB_W_KICK, ERIN, R, "bob"),      /* caller not a member */
        rq_room(fx, FB_W_LEAVE, ERIN, R, NULL),      /* not a member */
        rq_room(fx, FB_W_LEAVE, ALICE, 99999, NULL), /* no such room */
    };
    res_t res[FB_ARRAY_LEN(bad)];
    run(fx, bad, FB_ARRAY_LEN(bad), res);
    assert_err(&res[0], FB_EFORBIDDEN);
    assert_err(&res[1], FB_EINVAL);
    assert_err(&res[2], FB_ENOTFOUND);
    assert_non_null(strstr(res[2].err_msg, "erin"));
    assert_err(&res[3], FB_ENOTFOUND);
    assert_err(&res[4], FB_ENOTMEMBER);
    assert_err(&res[5], FB_ENOTMEMBER);
    assert_err(&res[6], FB_ENOTMEMBER);
    assert_int_equal(count_events(fx, R), 4);

    /* the owner kicks carol: the kick goes to the rest and to carol */
    res_t r = ok1(fx, rq_room(fx, FB_W_KICK, ALICE, R, "carol"));
    assert_int_equal(r.r_seq, 5);
    assert_int_equal(r.n_pushes, 1);
    assert_frame_ev(&r.pushes[0], R, 5, "kick", A, C, -1);
    assert_to(&r.pushes[0], 3, A, B, D);
    assert_int_equal(r.pushes[0].extra, C);
    fb_member_t mc = member(fx, R, CAROL);
    assert_int_equal(mc.left_seq, 5);
    fb_member_clear(&mc);
    r = run1(fx, rq_send(fx, CAROL, R, "c", "still here?"));
    assert_err(&r, FB_ENOTMEMBER);
    r = run1(fx, rq_room(fx, FB_W_RENAME, CAROL, R, "mine"));
    assert_err(&r, FB_ENOTMEMBER);
    r = run1(fx, rq_room(fx, FB_W_KICK, ALICE, R, "carol")); /* already out */
    assert_err(&r, FB_ENOTFOUND);

    /* the owner leaves: the earliest joined (bob, a founding member) inherits */
    r = ok1(fx, rq_room(fx, FB_W_LEAVE, ALICE, R, NULL));
    assert_int_equal(r.r_seq, 6);
    assert_frame_ev(&r.pushes[0], R, 6, "leave", A, 0, -1);
    assert_to(&r.pushes[0], 2, B, D);
    assert_int_equal(r.pushes[0].extra, A);
    fb_room_t room = room_get(fx, R);
    assert_int_equal(room.owner_id, B);
    fb_room_clear(&room);
    fb_member_t mb = member(fx, R, BOB);
    assert_int_equal(mb.role, FB_ROLE_OWNER);
    fb_member_clear(&mb);
    r = run1(fx, rq_room(fx, FB_W_LEAVE, ALICE, R, NULL));
    assert_err(&r, FB_ENOTMEMBER);
    r = run1(fx, rq_room(fx, FB_W_KICK, DAVE, R, "bob"));
    assert_err(&r, FB_EFORBIDDEN);
    r = ok1(fx, rq_room(fx, FB_W_KICK, BOB, R, "dave"));
    assert_int_equal(r.r_seq, 7);
    assert_to(&r.pushes[0], 1, B);
    assert_int_equal(r.pushes[0].extra, D);

    /* the last one out leaves the room without an owner */
    r = ok1(fx, rq_room(fx, FB_W_LEAVE, BOB, R, NULL));
    assert_int_equal(r.r_seq, 8);
    assert_int_equal(r.pushes[0].n_to, 0);
    assert_int_equal(r.pushes[0].extra, B);
    room = room_get(fx, R);
    assert_int_equal(room.owner_id, 0);
    fb_room_clear(&room);
    assert_int_equal(count_events(fx, R), 8);
    assert_no_more_batches(fx);
}

/* "When the owner leaves, the member who joined earliest becomes owner" —
 * by joining order, not by user id. */
static void test_owner_succession_order(void **state)
{
    fx_t *fx = *state;
    int64_t R = mk_group(fx, ERIN, "G", "");
    ok1(fx, rq_invite(fx, ERIN, R, "frank")); /* seq 2 */
    ok1(fx, rq_invite(fx, ERIN, R, "bob"));   /* seq 3: bob's id is lower than frank's */
    assert_true(fx->uid[BOB] < fx->uid[FRANK]);
    ok1(fx, rq_room(fx, FB_W_LEAVE, ERIN, R, NULL));
    fb_room_t room = room_get(fx, R);
    assert_int_equal(room.owner_id, fx->uid[FRANK]);
    fb_room_clear(&room);
    fb_member_t mf = member(fx, R, FRANK), mb = member(fx, R, BOB);
    assert_int_equal(mf.role, FB_ROLE_OWNER);
    assert_int_equal(mb.role, FB_ROLE_MEMBER);
    fb_member_clear(&mf);
    fb_member_clear(&mb);
    res_t r = run1(fx, rq_room(fx, FB_W_KICK, BOB, R, "frank"));
    assert_err(&r, FB_EFORBIDDEN);
    r = ok1(fx, rq_room(fx, FB_W_KICK, FRANK, R, "bob"));
    assert_int_equal(r.r_seq, 5);
    /* a former owner invited back is a plain member */
    ok1(fx, rq_invite(fx, FRANK, R, "erin"));
    fb_member_t me = member(fx, R, ERIN);
    assert_int_equal(me.role, FB_ROLE_MEMBER);
    assert_int_equal(me.joined_seq, 6);
    fb_member_clear(&me);
    r = run1(fx, rq_room(fx, FB_W_KICK, ERIN, R, "frank"));
    assert_err(&r, FB_EFORBIDDEN);
    assert_no_more_batches(fx);
}

static void test_rename(void **state)
{
    fx_t *fx = *state;
    int64_t A = fx->uid[ALICE], B = fx->uid[BOB];
    int64_t R = mk_group(fx, ALICE, "Club", "bob");
    res_t r = ok1(fx, rq_room(fx, FB_W_RENAME, BOB, R, "새 이름"));
    assert_int_equal(r.r_seq, 3);
    assert_int_equal(r.n_pushes, 1);
    assert_frame_ev(&r.pushes[0], R, 3, "rename", B, 0, -1);
    assert_to(&r.pushes[0], 2, A, B);
    fb_room_t room = room_get(fx, R);
    assert_string_equal(room.name, "새 이름");
    fb_room_clear(&room);
    size_t n;
    fb_event_t *evs = room_events(fx, R, &n);
    assert_int_equal(n, 3);
    assert_int_equal(evs[2].kind, FB_EV_RENAME);
    assert_string_equal(evs[2].text, "새 이름");
    fb_events_free(evs, n);
    r = ok1(fx, rq_room(fx, FB_W_RENAME, ALICE, R, ""));
    assert_int_equal(r.r_seq, 4);
    room = room_get(fx, R);
    assert_string_equal(room.name, "");
    fb_room_clear(&room);
    r = run1(fx, rq_room(fx, FB_W_RENAME, CAROL, R, "hijack"));
    assert_err(&r, FB_ENOTMEMBER);
    r = run1(fx, rq_room(fx, FB_W_RENAME, CAROL, 99999, "nowhere"));
    assert_err(&r, FB_ENOTMEMBER);
    assert_int_equal(count_events(fx, R), 4);
    assert_no_more_batches(fx);
}

static void test_read_marker(void **state)
{
    fx_t *fx = *state;
    int64_t A = fx->uid[ALICE], B = fx->uid[BOB];
    int64_t R = mk_group(fx, ALICE, "Chat", "bob");
    for (int i = 0; i < 3; i++) { /* seqs 3, 4, 5 */
        char cmid[16];
        snprintf(cmid, sizeof cmid, "a%d", i);
        ok1(fx, rq_send(fx, ALICE, R, cmid, "hi"));
    }
    fb_wreq_t *reqs[] = {
        rq_read(fx, BOB, R, 4),   rq_read(fx, BOB, R, 3),     rq_read(fx, BOB, R, 4),
        rq_read(fx, BOB, R, 0),   rq_read(fx, BOB, R, 5),     rq_read(fx, BOB, R, 6),
        rq_read(fx, CAROL, R, 1), rq_read(fx, BOB, 99999, 1),
    };
    res_t res[FB_ARRAY_LEN(reqs)];
    run(fx, reqs, FB_ARRAY_LEN(reqs), res);
    /* the marker only moves forward; a push only when it moved */
    assert_int_equal(res[0].err, 0);
    assert_int_equal(res[0].r_seq, 4);
    assert_int_equal(res[0].n_pushes, 1);
    assert_frame_read(&res[0].pushes[0], R, B, "bob", 4);
    assert_to(&res[0].pushes[0], 2, A, B);
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(res[i].err, 0);
        assert_int_equal(res[i].r_seq, 4);
        assert_int_equal(res[i].n_pushes, 0);
    }
    assert_int_equal(res[4].r_seq, 5);
    assert_int_equal(res[4].n_pushes, 1);
    assert_frame_read(&res[4].pushes[0], R, B, "bob", 5);
    assert_err(&res[5], FB_EINVAL); /* beyond the newest event */
    assert_err(&res[6], FB_ENOTMEMBER);
    assert_err(&res[7], FB_ENOTMEMBER);
    fb_member_t mb = member(fx, R, BOB);
    assert_int_equal(mb.read_seq, 5);
    fb_member_clear(&mb);

    /* bob has read everything: his send moves his marker by one, no read push */
    res_t r = ok1(fx, rq_send(fx, BOB, R, "b0", "caught up"));
    assert_int_equal(r.r_seq, 6);
    assert_int_equal(r.n_pushes, 1);
    assert_frame_ev(&r.pushes[0], R, 6, "text", B, 0, 1);
    /* alice had not read bob's: her send pushes her marker */
    r = ok1(fx, rq_send(fx, ALICE, R, "a9", "replying"));
    assert_int_equal(r.r_seq, 7);
    assert_int_equal(r.n_pushes, 2);
    assert_frame_read(&r.pushes[1], R, A, "alice", 7);
    /* a member who left cannot move a marker */
    ok1(fx, rq_room(fx, FB_W_LEAVE, BOB, R, NULL));
    r = run1(fx, rq_read(fx, BOB, R, 8));
    assert_err(&r, FB_ENOTMEMBER);
    mb = member(fx, R, BOB);
    assert_int_equal(mb.read_seq, 6);
    fb_member_clear(&mb);
    assert_no_more_batches(fx);
}

static void test_accounts(void **state)
{
    fx_t *fx = *state;
    uint8_t h1[32], h2[32], h3[32];
    memset(h1, 0xa1, 32);
    memset(h2, 0xa2, 32);
    memset(h3, 0xa3, 32);

    fb_wreq_t *reg = fb_wreq_new(FB_W_REGISTER);
    reg->name = fb_strdup("newbie");
    reg->pwhash = fb_strdup("$argon2id$v=19$m=8,t=1,p=1$fake");
    reg->dev_name = fb_strdup("phone");
    reg->expires_ms = 4000000000000;
    memcpy(reg->token_hash, h1, 32);
    res_t r = ok1(fx, reg);
    assert_true(r.r_user > fx->uid[N_USERS - 1]);
    assert_true(r.r_device > 0);
    assert_int_equal(r.n_pushes, 0);
    fb_user_t u;
    assert_int_equal(fb_store_user_by_name(fx->reader, "newbie", &u), 0);
    assert_int_equal(u.id, r.r_user);
    assert_string_equal(u.pwhash, "$argon2id$v=19$m=8,t=1,p=1$fake");
    fb_user_clear(&u);
    fb_device_t d;
    assert_int_equal(fb_store_device_by_token(fx->reader, h1, &d), 0);
    assert_int_equal(d.id, r.r_device);
    assert_int_equal(d.user_id, r.r_user);
    assert_string_equal(d.name, "phone");
    assert_int_equal(d.expires_ms, 4000000000000);
    assert_false(d.revoked);
    fb_device_clear(&d);

    /* a taken name stores nothing, not even the device */
    reg = fb_wreq_new(FB_W_REGISTER);
    reg->name = fb_strdup("alice");
    reg->pwhash = fb_strdup("$argon2id$x");
    reg->dev_name = fb_strdup("phone");
    memcpy(reg->token_hash, h2, 32);
    r = run1(fx, reg);
    assert_err(&r, FB_ENAMETAKEN);
    assert_non_null(strstr(r.err_msg, "alice"));
    assert_int_equal(fb_store_device_by_token(fx->reader, h2, &d), FB_ENOTFOUND);

    /* login: a new device of an existing user */
    fb_wreq_t *login = rq(fx, FB_W_LOGIN, ALICE);
    login->dev_name = fb_strdup("laptop");
    login->expires_ms = 4000000000000;
    memcpy(login->token_hash, h3, 32);
    r = ok1(fx, login);
    assert_true(r.r_device > 0);
    assert_true(r.r_device != fx->dev[ALICE]);
    assert_int_equal(fb_store_device_by_token(fx->reader, h3, &d), 0);
    assert_int_equal(d.user_id, fx->uid[ALICE]);
    assert_string_equal(d.name, "laptop");
    fb_device_clear(&d);
    int64_t laptop = r.r_device;

    /* logout: a push that closes that device's connections */
    fb_wreq_t *out = rq(fx, FB_W_LOGOUT, ALICE);
    out->arg_device = laptop;
    r = ok1(fx, out);
    assert_int_equal(r.n_pushes, 1);
    assert_int_equal(r.pushes[0].type, FB_PUSH_LOGOUT);
    assert_int_equal(r.pushes[0].user_id, fx->uid[ALICE]);
    assert_int_equal(r.pushes[0].device_id, laptop);
    assert_int_equal(r.pushes[0].n_to, 0);
    assert_int_equal(fb_store_device_by_token(fx->reader, h3, &d), 0);
    assert_true(d.revoked);
    fb_device_clear(&d);

    /* again, or another user's device: not found, nothing pushed or revoked */
    fb_wreq_t *again = rq(fx, FB_W_LOGOUT, ALICE);
    again->arg_device = laptop;
    fb_wreq_t *other = rq(fx, FB_W_LOGOUT, ALICE);
    other->arg_device = fx->dev[BOB];
    fb_wreq_t *mine = rq(fx, FB_W_LOGOUT, BOB);
    mine->arg_device = fx->dev[BOB];
    fb_wreq_t *reqs[] = {again, other, mine};
    res_t res[3];
    run(fx, reqs, 3, res);
    assert_err(&res[0], FB_ENOTFOUND);
    assert_err(&res[1], FB_ENOTFOUND);
    assert_int_equal(res[2].err, 0);
    assert_int_equal(res[2].n_pushes, 1);
    assert_int_equal(res[2].pushes[0].type, FB_PUSH_LOGOUT);
    assert_int_equal(res[2].pushes[0].user_id, fx->uid[BOB]);
    assert_int_equal(res[2].pushes[0].device_id, fx->dev[BOB]);
    fb_device_t *ds;
    size_t n;
    assert_int_equal(fb_store_devices_list(fx->reader, fx->uid[ALICE], &ds, &n), 0);
    assert_int_equal(n, 1); /* the phone from setup; the laptop is revoked */
    assert_int_equal(ds[0].id, fx->dev[ALICE]);
    fb_devices_free(ds, n);
    assert_no_more_batches(fx);
}

/* fb_writer_stop commits and hands out what was queued before it. */
static void test_stop_drains(void **state)
{
    fx_t *fx = *state;
    int64_t R = mk_group(fx, ALICE, "Chat", "");
    enum { N = 50 };
    res_t res[N];
    for (int i = 0; i < N; i++) {
        char cmid[16];
        snprintf(cmid, sizeof cmid, "s%d", i);
        submit(fx, rq_send(fx, ALICE, R, cmid, "bye"), &res[i]);
    }
    fb_writer_stop(fx->w);
    fx->w = NULL;
    collect(fx, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(res[i].err, 0);
        assert_int_equal(res[i].r_seq, 2 + i);
    }
    assert_int_equal(count_events(fx, R), N + 1);
    assert_no_more_batches(fx);
    /* a new writer picks up where the store is, with a cold membership cache */
    start_writer(fx);
    res_t r = ok1(fx, rq_send(fx, ALICE, R, "after", "hello again"));
    assert_int_equal(r.r_seq, N + 2);
    assert_frame_ev(&r.pushes[0], R, N + 2, "text", fx->uid[ALICE], 0, 0);
    r = run1(fx, rq_send(fx, BOB, R, "nope", "x"));
    assert_err(&r, FB_ENOTMEMBER);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_group_create, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_limits_and_trim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_gapless, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_two_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_count_stored_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_rejects_in_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_direct, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kick_and_leave, setup, teardown),
        cmocka_unit_test_setup_teardown(test_owner_succession_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rename, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_marker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_accounts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_drains, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
