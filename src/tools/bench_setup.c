/* The world of a bench run: which users exist, which rooms they share and
 * which worker owns each room (plan), then the same made real on the node
 * through the client library (setup): every user registered, every room
 * created by its first member. Only the measured traffic uses the lean
 * connection of bench_conn.c; everything here goes through src/client.
 * SPDX-License-Identifier: MIT */
#include "tools/bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client.h"

/* ---- the plan ---- */

typedef struct {
    uint64_t s;
} prng_t;

static uint64_t prng_next(prng_t *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int prng_below(prng_t *r, int n)
{
    return n > 0 ? (int)(prng_next(r) % (uint64_t)n) : 0;
}

static bench_room_t *add_room(bench_world_t *w, int *cap, int owner, int n_members)
{
    if (w->n_rooms == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        w->rooms = fb_realloc(w->rooms, (size_t)*cap * sizeof *w->rooms);
    }
    bench_room_t *r = &w->rooms[w->n_rooms++];
    memset(r, 0, sizeof *r);
    r->owner = owner;
    r->n_members = n_members;
    r->members = fb_calloc((size_t)FB_MAX(n_members, 1), sizeof *r->members);
    return r;
}

static bool has_member(const bench_room_t *r, int n, int u)
{
    for (int i = 0; i < n; i++)
        if (r->members[i] == u) return true;
    return false;
}

/* Kakao: each worker has a shard of users and rooms of its own, so that
 * every room's senders and receivers share one loop. Most rooms hold 2 to
 * 10 members (each user starts one), a few hold hundreds. */
static void plan_kakao(bench_world_t *w, const bench_opts_t *o, int n_workers, int *cap)
{
    prng_t rng = {o->seed};
    fb_map_t pairs; /* 1:1 rooms already planned, so `direct` never returns one twice */
    fb_map_init(&pairs);
    for (int s = 0; s < n_workers; s++) {
        int n = 0;
        for (int u = s; u < w->n_users; u += n_workers) n++;
        if (n < 2) continue;
        int *shard = fb_malloc((size_t)n * sizeof *shard);
        for (int i = 0, u = s; u < w->n_users; u += n_workers) shard[i++] = u;
        for (int i = 0; i < n; i++) {
            int pick = prng_below(&rng, 100);
            int size = pick < 55 ? 2 : pick < 80 ? 3 + prng_below(&rng, 3) : 6 + prng_below(&rng, 5);
            size = FB_MIN(size, n);
            bench_room_t *r = add_room(w, cap, s, size);
            r->members[0] = shard[i];
            int k = 1;
            for (int tries = 0; k < size && tries < 1000; tries++) {
                int u = shard[prng_below(&rng, n)];
                if (has_member(r, k, u)) continue;
                if (size == 2) {
                    int64_t key = (int64_t)FB_MIN(u, shard[i]) * w->n_users + FB_MAX(u, shard[i]) + 1;
                    if (fb_map_get(&pairs, key)) continue;
                    fb_map_put(&pairs, key, r);
                }
                r->members[k++] = u;
            }
            r->n_members = k;
            r->direct = size == 2 && k == 2;
            if (k < 2) { /* no partner left for a 1:1 room */
                fb_free(r->members);
                w->n_rooms--;
            }
        }
        for (int b = 0; b < o->big_rooms; b++) {
            int lo = FB_MIN(o->big_min, n), hi = FB_MIN(o->big_max, n);
            int size = lo + prng_below(&rng, hi - lo + 1);
            bench_room_t *r = add_room(w, cap, s, size);
            /* a random subset: a partial Fisher-Yates over a copy of the shard */
            int *copy = fb_malloc((size_t)n * sizeof *copy);
            memcpy(copy, shard, (size_t)n * sizeof *copy);
            for (int k = 0; k < size; k++) {
                int j = k + prng_below(&rng, n - k);
                int t = copy[k];
                copy[k] = copy[j];
                copy[j] = t;
                r->members[k] = copy[k];
            }
            fb_free(copy);
        }
        fb_free(shard);
    }
    fb_map_free(&pairs);
}

void bench_world_plan(bench_world_t *w, const bench_opts_t *o, int n_workers)
{
    memset(w, 0, sizeof *w);
    int cap = 0;
    switch (o->scenario) {
    case SC_INGEST: w->n_users = o->rooms * o->members; break;
    case SC_FANOUT: w->n_users = o->members; break;
    case SC_KAKAO: w->n_users = o->users; break;
    case SC_CONNECTIONS: w->n_users = FB_MIN(o->users, o->conns); break;
    }
    w->users = fb_calloc((size_t)FB_MAX(w->n_users, 1), sizeof *w->users);
    for (int u = 0; u < w->n_users; u++)
        snprintf(w->users[u].name, sizeof w->users[u].name, "b%s.u%d", o->run_id, u);
    if (o->scenario == SC_INGEST) {
        for (int r = 0; r < o->rooms; r++) {
            bench_room_t *room = add_room(w, &cap, r % n_workers, o->members);
            for (int m = 0; m < o->members; m++) room->members[m] = r * o->members + m;
        }
    } else if (o->scenario == SC_FANOUT) {
        bench_room_t *room = add_room(w, &cap, 0, o->members);
        for (int m = 0; m < o->members; m++) room->members[m] = m;
    } else if (o->scenario == SC_KAKAO) {
        plan_kakao(w, o, n_workers, &cap);
    }
    /* users -> rooms, as one flat array */
    w->user_room_off = fb_calloc((size_t)w->n_users + 1, sizeof *w->user_room_off);
    for (int r = 0; r < w->n_rooms; r++)
        for (int k = 0; k < w->rooms[r].n_members; k++) w->user_room_off[w->rooms[r].members[k] + 1]++;
    for (int u = 0; u < w->n_users; u++) w->user_room_off[u + 1] += w->user_room_off[u];
    w->user_rooms = fb_malloc((size_t)FB_MAX(w->user_room_off[w->n_users], 1) * sizeof(int));
    int *fill = fb_calloc((size_t)FB_MAX(w->n_users, 1), sizeof *fill);
    for (int r = 0; r < w->n_rooms; r++)
        for (int k = 0; k < w->rooms[r].n_members; k++) {
            int u = w->rooms[r].members[k];
            w->user_rooms[w->user_room_off[u] + fill[u]++] = r;
        }
    fb_free(fill);
}

int bench_user_rooms(const bench_world_t *w, int user, const int **rooms)
{
    *rooms = w->user_rooms + w->user_room_off[user];
    return w->user_room_off[user + 1] - w->user_room_off[user];
}

void bench_world_index(bench_world_t *w)
{
    fb_map_init(&w->room_by_id);
    for (int r = 0; r < w->n_rooms; r++) fb_map_put(&w->room_by_id, w->rooms[r].id, &w->rooms[r]);
}

void bench_world_free(bench_world_t *w)
{
    for (int r = 0; r < w->n_rooms; r++) {
        fb_free(w->rooms[r].members);
        fb_free(w->rooms[r].acked);
    }
    fb_free(w->rooms);
    fb_free(w->users);
    fb_free(w->user_room_off);
    fb_free(w->user_rooms);
    fb_map_free(&w->room_by_id);
    memset(w, 0, sizeof *w);
}

/* ---- setup through the client library ---- */

typedef struct setup setup_t;

typedef struct {
    setup_t *s;
    int index; /* user (registration) or room */
    fb_client_t *c;
} task_t;

struct setup {
    uv_loop_t loop;
    uv_timer_t deadline;
    bench_world_t *w;
    const bench_opts_t *o;
    bool rooms; /* phase: false = registering users */
    int next, total, running;
    int failed;
    char err[256];
    task_t **live;
};

static void start_next(setup_t *s);

static void fail(setup_t *s, const char *fmt, const char *a, const char *b)
{
    if (!s->failed) snprintf(s->err, sizeof s->err, fmt, a, b);
    s->failed++;
}

static void on_client_closed(fb_client_t *c, void *ud)
{
    task_t *t = ud;
    setup_t *s = t->s;
    fb_client_free(c);
    for (int i = 0; i < s->o->setup_parallel; i++)
        if (s->live[i] == t) s->live[i] = NULL;
    fb_free(t);
    s->running--;
    start_next(s);
}

static void finish_task(task_t *t)
{
    fb_client_close(t->c, on_client_closed);
}

static void on_registered(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    task_t *t = ud;
    bench_user_t *u = &t->s->w->users[t->index];
    if (err) {
        fail(t->s, "registering %s: %s", u->name, msg ? msg : fb_err_message(err));
    } else {
        u->id = (int64_t)json_integer_value(json_object_get(json_object_get(reply, "user"), "id"));
        const char *tok = json_string_value(json_object_get(reply, "token"));
        snprintf(u->token, sizeof u->token, "%s", tok ? tok : "");
        if (!u->id || !tok) fail(t->s, "registering %s: %s", u->name, "no user id or token in the reply");
    }
    finish_task(t);
}

static void on_room(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    task_t *t = ud;
    bench_room_t *r = &t->s->w->rooms[t->index];
    if (err) {
        fail(t->s, "creating a room for %s: %s", t->s->w->users[r->members[0]].name,
             msg ? msg : fb_err_message(err));
    } else {
        json_t *room = json_object_get(reply, "room");
        r->id = (int64_t)json_integer_value(json_object_get(room, "room"));
        r->base = (int64_t)json_integer_value(json_object_get(room, "last_seq"));
        if (r->id <= 0 || r->base <= 0) {
            char *text = json_dumps(reply, JSON_COMPACT);
            if (text && strlen(text) > 120) strcpy(text + 117, "...");
            fail(t->s, "creating a room for %s: no room id or last_seq in the reply %s",
                 t->s->w->users[r->members[0]].name, text ? text : "(none)");
            fb_free(text);
        }
    }
    finish_task(t);
}

static void on_state(fb_client_t *c, fb_client_state_t st, const char *addr, int err, void *ud)
{
    task_t *t = ud;
    if (st == FB_CLIENT_STOPPED) {
        fail(t->s, "setup client stopped: %s (%s)", fb_client_strerror(err), addr);
        finish_task(t);
    }
}

static void start_task(setup_t *s, int index)
{
    task_t *t = fb_calloc(1, sizeof *t);
    t->s = s;
    t->index = index;
    char servers[512] = "";
    for (int i = 0; i < s->o->n_servers; i++)
        snprintf(servers + strlen(servers), sizeof servers - strlen(servers), "%s%s", i ? "," : "",
                 s->o->servers[i]);
    fb_client_opts_t co = {.servers = servers, .device = "bench", .raw_events = true,
                           .no_sync = true, .keepalive_ms = -1, .on_state = on_state,
                           .ud = t, .connect_timeout_ms = 10000};
    bench_room_t *r = s->rooms ? &s->w->rooms[index] : NULL;
    if (r) co.token = s->w->users[r->members[0]].token;
    if (fb_client_new(&s->loop, &co, &t->c) != 0) {
        fail(s, "%s%s", "cannot create a setup client", "");
        fb_free(t);
        return;
    }
    for (int i = 0; i < s->o->setup_parallel; i++)
        if (!s->live[i]) {
            s->live[i] = t;
            break;
        }
    s->running++;
    fb_client_start(t->c);
    int rc;
    if (!r) {
        rc = fb_client_register(t->c, s->w->users[index].name, s->o->password, "bench",
                                on_registered, t);
    } else if (r->direct) {
        rc = fb_client_direct(t->c, s->w->users[r->members[1]].name, on_room, t);
    } else {
        const char **names = fb_malloc((size_t)r->n_members * sizeof *names);
        for (int k = 1; k < r->n_members; k++) names[k - 1] = s->w->users[r->members[k]].name;
        char name[64];
        snprintf(name, sizeof name, "b%s.r%d", s->o->run_id, index);
        rc = fb_client_create_group(t->c, name, names, (size_t)r->n_members - 1, on_room, t);
        fb_free(names);
    }
    if (rc) {
        fail(s, "setup request refused locally: %s%s", fb_client_strerror(rc), "");
        finish_task(t);
    }
}

static void start_next(setup_t *s)
{
    while (!s->failed && s->running < s->o->setup_parallel && s->next < s->total)
        start_task(s, s->next++);
    if (!s->running && !uv_is_closing((uv_handle_t *)&s->deadline))
        uv_close((uv_handle_t *)&s->deadline, NULL);
}

static void on_deadline(uv_timer_t *t)
{
    setup_t *s = t->data;
    fail(s, "setup did not finish in time (%s%s)", s->rooms ? "rooms" : "registrations", "");
    for (int i = 0; i < s->o->setup_parallel; i++)
        if (s->live[i] && fb_client_state(s->live[i]->c) != FB_CLIENT_CLOSED) finish_task(s->live[i]);
}

static int run_phase(setup_t *s, bool rooms, int total)
{
    s->rooms = rooms;
    s->next = 0;
    s->total = total;
    if (!total) return 0;
    uv_timer_init(&s->loop, &s->deadline);
    s->deadline.data = s;
    uv_timer_start(&s->deadline, on_deadline, 60000 + (uint64_t)total * 50, 0);
    start_next(s);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return s->failed ? -1 : 0;
}

int bench_world_setup(bench_world_t *w, const bench_opts_t *o)
{
    setup_t s = {.w = w, .o = o};
    s.live = fb_calloc((size_t)o->setup_parallel, sizeof *s.live);
    uv_loop_init(&s.loop);
    int rc = run_phase(&s, false, w->n_users);
    if (!rc) rc = run_phase(&s, true, w->n_rooms);
    if (rc) fprintf(stderr, "bench: setup failed (%d failures): %s\n", s.failed, s.err);
    uv_run(&s.loop, UV_RUN_DEFAULT);
    uv_loop_close(&s.loop);
    fb_free(s.live);
    if (!rc) bench_world_index(w);
    return rc;
}
