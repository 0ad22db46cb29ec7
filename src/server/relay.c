/* The relay: how a node that shares its store with other nodes (PostgreSQL
 * across sites) learns what they committed, and pushes it to its own
 * clients. It runs on a thread of its own around the store's change feed:
 *
 *   another node commits --(NOTIFY, only if it committed)--> feed
 *   feed --(room, from..to)--> relay fetches those events from the primary
 *   relay --(pushes, no replies)--> every io loop, like a writer batch
 *
 * After the feed's connection was lost and made again (a failover), the
 * relay may have missed announcements: it asks the store how far each room
 * it has heard of got, and pushes what it missed. Such a catch-up can push
 * an event twice; clients ignore a seq they already have (protocol.md).
 * A membership change heard from elsewhere also tells the local writer to
 * forget its cached members of that room. Read markers that moved and
 * devices logged out elsewhere are pushed (a "read" event; close 4001) too.
 * SPDX-License-Identifier: MIT */
#include <poll.h>
#include <string.h>

#include "server/server.h"

#define RELAY_FETCH_MAX 500    /* events per query */
#define RELAY_CATCHUP_ROOMS 5000 /* rooms per catch-up query */
#define RELAY_RETRY_MS 250

struct fb_relay {
    fb_server_t *srv;
    fb_feed_t *feed;
    uv_thread_t thread;
    atomic_bool stop;
    fb_ws_enc_t *enc;
    fb_map_t known;   /* room -> (void *)highest seq heard of */
    fb_map_t members; /* room -> fb_snap_t * (current members) */
    fb_map_t names;   /* user -> char * (their name, for read events) */
    fb_wreq_t **out;  /* pushes to hand to the loops */
    size_t n_out, cap_out;
    fb_relay_stats_t stats;
    bool started;
};

/* ---- what the relay knows ---- */

static int64_t known_of(fb_relay_t *r, int64_t room)
{
    return (int64_t)(uintptr_t)fb_map_get(&r->known, room);
}

static void known_raise(fb_relay_t *r, int64_t room, int64_t seq)
{
    if (seq > known_of(r, room)) fb_map_put(&r->known, room, (void *)(uintptr_t)seq);
}

static void members_forget(fb_relay_t *r, int64_t room)
{
    fb_snap_release(fb_map_del(&r->members, room));
    /* the writer's cache of this room is just as stale */
    fb_wreq_t *q = fb_wreq_new(FB_W_FORGET);
    q->origin = -1;
    q->room_id = room;
    fb_writer_submit(r->srv->writer, q);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int members_of(fb_relay_t *r, fb_store_t *st, int64_t room, fb_snap_t **out)
{
    fb_snap_t *s = fb_map_get(&r->members, room);
    if (!s) {
        fb_member_t *ms;
        size_t n;
        int rc = fb_store_members_list(st, room, &ms, &n);
        if (rc) return rc;
        s = fb_snap_alloc(n);
        for (size_t i = 0; i < n; i++) s->ids[i] = ms[i].user_id;
        fb_members_free(ms, n);
        qsort(s->ids, s->n, sizeof s->ids[0], cmp_i64);
        fb_map_put(&r->members, room, s);
    }
    *out = s;
    return 0;
}

/* ---- pushes ---- */

/* A request that carries one push of another node's change, to the members
 * of `to` (which it holds a reference of; NULL for a logout). */
static fb_push_t *push_new(fb_relay_t *r, int type, fb_snap_t *to)
{
    fb_push_t *p = fb_calloc(1, sizeof *p);
    p->type = type;
    if (to) {
        atomic_fetch_add_explicit(&to->refs, 1, memory_order_relaxed);
        p->members = to;
    }
    fb_wreq_t *q = fb_wreq_new(0); /* no op: carries pushes only, nobody to reply to */
    q->origin = -1;
    q->pushes = p;
    if (r->n_out == r->cap_out) {
        r->cap_out = r->cap_out ? 2 * r->cap_out : 64;
        r->out = fb_realloc(r->out, r->cap_out * sizeof *r->out);
    }
    r->out[r->n_out++] = q;
    return p;
}

static void push(fb_relay_t *r, const fb_event_t *ev, fb_snap_t *to, int64_t extra)
{
    fb_push_t *p = push_new(r, FB_PUSH_FRAME, to);
    p->extra = extra;
    int64_t unread = ev->kind == FB_EV_TEXT && to->n > 0 ? (int64_t)to->n - 1 : -1;
    fb_push_text_frame(r->enc, ev, unread, &p->frame);
    atomic_fetch_add_explicit(&r->stats.events, 1, memory_order_relaxed);
}

static int name_of(fb_relay_t *r, fb_store_t *st, int64_t uid, const char **out)
{
    char *name = fb_map_get(&r->names, uid);
    if (!name) {
        fb_user_t u = {0};
        int rc = fb_store_user_by_id(st, uid, &u);
        if (rc) return rc;
        name = fb_strdup(u.name);
        fb_user_clear(&u);
        fb_map_put(&r->names, uid, name);
    }
    *out = name;
    return 0;
}

/* Another node's member moved their read marker: the "1"s drop here too. */
static int relay_read(fb_relay_t *r, fb_store_t *st, const fb_change_t *ch)
{
    fb_snap_t *to;
    const char *name;
    int rc = members_of(r, st, ch->room_id, &to);
    if (!rc) rc = name_of(r, st, ch->user_id, &name);
    if (rc) return rc;
    fb_push_t *p = push_new(r, FB_PUSH_FRAME, to);
    fb_push_read_frame(r->enc, ch->room_id, ch->user_id, name, ch->to_seq, &p->frame);
    return 0;
}

/* A device logged out through another node: its connections here close. */
static void relay_logout(fb_relay_t *r, const fb_change_t *ch)
{
    fb_push_t *p = push_new(r, FB_PUSH_LOGOUT, NULL);
    p->user_id = ch->user_id;
    p->device_id = ch->device_id;
}

static void flush(fb_relay_t *r)
{
    if (!r->n_out) return;
    fb_writer_deliver(r->srv->writer, r->out, r->n_out);
    r->n_out = 0;
}

/* Pushes the events after..upto of room (upto 0: to the end). */
static int relay_range(fb_relay_t *r, fb_store_t *st, int64_t room, int64_t after, int64_t upto)
{
    for (;;) {
        fb_event_t *evs;
        size_t n;
        int rc = fb_store_events_after(st, room, after, upto, RELAY_FETCH_MAX, &evs, &n);
        if (rc) return rc;
        for (size_t i = 0; i < n && !rc; i++) {
            const fb_event_t *ev = &evs[i];
            int64_t extra = 0;
            if (ev->kind == FB_EV_LEAVE) extra = ev->actor_id;
            if (ev->kind == FB_EV_KICK) extra = ev->target_id;
            if (ev->kind != FB_EV_TEXT && ev->kind != FB_EV_RENAME) members_forget(r, room);
            fb_snap_t *to;
            if (!(rc = members_of(r, st, room, &to))) push(r, ev, to, extra);
            after = ev->seq;
        }
        fb_events_free(evs, n);
        if (rc) return rc;
        known_raise(r, room, after);
        if (n < RELAY_FETCH_MAX || (upto && after >= upto)) return 0;
    }
}

static void on_announce(void *ud, const char *origin, const fb_change_t *ch, size_t n)
{
    fb_relay_t *r = ud;
    atomic_fetch_add_explicit(&r->stats.announcements, 1, memory_order_relaxed);
    bool ours = strcmp(origin, r->srv->origin) == 0;
    for (size_t i = 0; i < n; i++) {
        if (ch[i].kind == FB_CHANGE_LOGOUT) {
            if (!ours) relay_logout(r, &ch[i]);
            continue;
        }
        if (ch[i].kind == FB_CHANGE_READ) {
            int rc = ours ? 0 : relay_read(r, fb_feed_store(r->feed), &ch[i]);
            if (rc)
                FB_WARN("relay", "read marker of room %lld not relayed: %s",
                        (long long)ch[i].room_id, fb_err_message(rc));
            continue;
        }
        if (ours) {
            known_raise(r, ch[i].room_id, ch[i].to_seq); /* our own loops pushed these */
            continue;
        }
        int rc = relay_range(r, fb_feed_store(r->feed), ch[i].room_id, ch[i].from_seq - 1,
                             ch[i].to_seq);
        if (rc) /* the connection broke: the catch-up after the reconnect covers it */
            FB_WARN("relay", "room %lld seqs %lld..%lld not relayed: %s",
                    (long long)ch[i].room_id, (long long)ch[i].from_seq,
                    (long long)ch[i].to_seq, fb_err_message(rc));
    }
}

/* After a reconnect: whatever moved in a room we know of while we were away. */
static void catch_up(fb_relay_t *r)
{
    atomic_fetch_add_explicit(&r->stats.catchups, 1, memory_order_relaxed);
    fb_store_t *st = fb_feed_store(r->feed);
    fb_change_t *k = fb_malloc(RELAY_CATCHUP_ROOMS * sizeof *k);
    size_t slot = 0;
    uint64_t pushed0 = atomic_load(&r->stats.events);
    while (slot < r->known.cap) {
        size_t n = 0;
        for (; slot < r->known.cap && n < RELAY_CATCHUP_ROOMS; slot++)
            if (r->known.slots[slot].key > 0)
                k[n++] = (fb_change_t){.room_id = r->known.slots[slot].key,
                                       .to_seq = (int64_t)(uintptr_t)r->known.slots[slot].val};
        if (!n) break;
        int rc = fb_store_rooms_last_seq(st, k, n);
        for (size_t i = 0; i < n && !rc; i++)
            if (k[i].to_seq > k[i].from_seq)
                rc = relay_range(r, st, k[i].room_id, k[i].from_seq, k[i].to_seq);
        if (rc) {
            FB_WARN("relay", "catch-up interrupted: %s", fb_err_message(rc));
            break;
        }
        /* relay_range may have grown the map: rescan from the start is not
         * needed, new rooms were heard of just now and are up to date */
    }
    fb_free(k);
    FB_INFO("relay", "caught up: %llu events pushed that were committed while away",
            (unsigned long long)(atomic_load(&r->stats.events) - pushed0));
}

static void relay_main(void *arg)
{
    fb_relay_t *r = arg;
    bool listening = false;
    while (!atomic_load(&r->stop)) {
        if (!r->feed) {
            int rc = fb_feed_open(&r->srv->store_cfg, &r->feed);
            if (rc == FB_EINVAL) {
                FB_ERROR("relay", "the store has no change feed: other nodes' messages will "
                                  "reach this node's clients only through sync");
                return;
            }
            if (rc) {
                uv_sleep(RELAY_RETRY_MS);
                continue;
            }
        }
        bool reconnected = false;
        int rc = fb_feed_poll(r->feed, on_announce, r, &reconnected);
        if (reconnected) {
            atomic_fetch_add_explicit(&r->stats.reconnects, 1, memory_order_relaxed);
            FB_INFO("relay", "listening to the primary for other nodes' commits");
            catch_up(r);
        }
        flush(r);
        if (rc != 0 || fb_feed_fd(r->feed) < 0) {
            if (listening) FB_WARN("relay", "lost the primary's change feed: %s", fb_err_message(rc));
            listening = false;
            uv_sleep(RELAY_RETRY_MS);
            continue;
        }
        listening = true;
        struct pollfd pfd = {.fd = fb_feed_fd(r->feed), .events = POLLIN};
        poll(&pfd, 1, RELAY_RETRY_MS);
    }
}

int fb_relay_start(fb_server_t *s, fb_relay_t **out)
{
    fb_relay_t *r = fb_calloc(1, sizeof *r);
    r->srv = s;
    r->enc = fb_ws_enc_new();
    fb_map_init(&r->known);
    fb_map_init(&r->members);
    fb_map_init(&r->names);
    atomic_init(&r->stop, false);
    if (uv_thread_create(&r->thread, relay_main, r) != 0) {
        FB_ERROR("relay", "cannot start the relay thread");
        fb_relay_stop(r);
        return FB_EINTERNAL;
    }
    r->started = true;
    *out = r;
    return 0;
}

void fb_relay_stop(fb_relay_t *r)
{
    if (!r) return;
    if (r->started) {
        atomic_store(&r->stop, true);
        uv_thread_join(&r->thread);
    }
    for (size_t i = 0; i < r->n_out; i++) fb_wreq_free(r->out[i]);
    fb_free(r->out);
    for (size_t i = 0; i < r->members.cap; i++)
        if (r->members.slots[i].key > 0) fb_snap_release(r->members.slots[i].val);
    fb_map_free(&r->members);
    for (size_t i = 0; i < r->names.cap; i++)
        if (r->names.slots[i].key > 0) fb_free(r->names.slots[i].val);
    fb_map_free(&r->names);
    fb_map_free(&r->known);
    fb_feed_close(r->feed);
    fb_ws_enc_free(r->enc);
    fb_free(r);
}

const fb_relay_stats_t *fb_relay_stats(const fb_relay_t *r)
{
    return &r->stats;
}
