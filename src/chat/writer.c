/* The writer thread: group commit of every write, and the only place where a
 * message becomes durable. It must never let a reply or a push leave before
 * the transaction holding it has committed.
 *
 * A message's states, and the only transitions allowed:
 *
 *   RECEIVED --(io loop validates, submits)--> QUEUED
 *   QUEUED --(writer: append, seq = last_seq + 1)--> APPENDED
 *   QUEUED --(the store's checks refuse it: not a member)--> REJECTED (nothing appended)
 *   APPENDED --(COMMIT returned 0: WAL fsynced)--> COMMITTED
 *   APPENDED --(COMMIT failed)--> REJECTED (error reply, nothing stored)
 *   COMMITTED --(batch handed to the io loops)--> ACKED (sender) + PUSHED (members)
 *   PUSHED --(a member's read marker passes seq)--> READ
 *
 * A run of consecutive sends is appended by one fb_store_send_many, which
 * checks each send before appending it; any other request runs under a
 * savepoint of its own, rolled back when its handler fails.
 *
 * Invariants:
 *  - no reply and no push of a request is handed out before fb_store_commit of
 *    its batch returned 0; a failed commit turns every request of the batch
 *    into a retryable error and drops its pushes;
 *  - seqs come from the store inside the transaction, so a rolled back
 *    request leaves no gap;
 *  - a retried send (same device, same cmid) is answered from the stored
 *    original and appends nothing (the store's unique index refuses it);
 *  - the membership cache only changes after the store calls that justify it
 *    succeeded, and is dropped for a room whenever a request on it fails.
 * SPDX-License-Identifier: MIT */
#include "chat/writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/map.h"

#define PUSH_EVENTS_MAX 8 /* a request making more events pushes only its last */

struct fb_writer {
    fb_store_t *store;
    fb_writer_opts_t opts;
    fb_wsink_t *sinks;
    int n_sinks;
    fb_mpsc_t queue;
    uv_loop_t loop;
    uv_async_t wake;
    uv_thread_t thread;
    atomic_bool stopping;
    fb_map_t members; /* room id -> fb_snap_t* (current members) */
    fb_wreq_t **batch;
    fb_send_t *sends;     /* a run of sends of the batch, for fb_store_send_many */
    struct appended {     /* what the batch changed, for the announcement */
        int kind;         /* FB_CHANGE_*: an event, a read marker, a logout */
        int64_t room, seq, user, device;
        const fb_wreq_t *by;
    } *appended;
    size_t n_appended, cap_appended;
    fb_change_t *changes; /* what the batch committed: events per room, read markers, logouts */
    int64_t last_ts;
    fb_writer_stats_t stats;
};

/* ---- requests, pushes, batches ---- */

fb_wreq_t *fb_wreq_new(int op)
{
    fb_wreq_t *r = fb_calloc(1, sizeof *r);
    r->op = op;
    return r;
}

static void push_free(fb_push_t *p)
{
    if (p->members) fb_snap_release(p->members);
    fb_buf_free(&p->frame);
    fb_free(p);
}

static void drop_pushes(fb_wreq_t *r)
{
    while (r->pushes) {
        fb_push_t *p = r->pushes;
        r->pushes = p->next;
        push_free(p);
    }
}

void fb_wreq_free(fb_wreq_t *r)
{
    if (!r) return;
    drop_pushes(r);
    fb_free(r->name);
    fb_free(r->dev_name);
    fb_free(r->text);
    if (r->pwhash) {
        memset(r->pwhash, 0, strlen(r->pwhash));
        fb_free(r->pwhash);
    }
    for (size_t i = 0; i < r->n_names; i++) fb_free(r->names[i]);
    fb_free(r->names);
    fb_free(r);
}

fb_wbatch_t *fb_wbatch_of(fb_mpsc_node_t *node, int sink_index)
{
    return (fb_wbatch_t *)((char *)(node - sink_index) - offsetof(fb_wbatch_t, nodes));
}

void fb_wbatch_release(fb_wbatch_t *b)
{
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1) return;
    for (size_t i = 0; i < b->n; i++) fb_wreq_free(b->reqs[i]);
    fb_free(b->reqs);
    fb_free(b);
}

/* ---- membership snapshots ---- */

void fb_snap_release(fb_snap_t *s)
{
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) fb_free(s);
}

static fb_snap_t *snap_retain(fb_snap_t *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

fb_snap_t *fb_snap_alloc(size_t n)
{
    fb_snap_t *s = fb_malloc(sizeof *s + n * sizeof(int64_t));
    atomic_init(&s->refs, 1);
    s->n = n;
    return s;
}

static bool snap_has(const fb_snap_t *s, int64_t uid)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->ids[mid] == uid) return true;
        if (s->ids[mid] < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void cache_set(fb_writer_t *w, int64_t room, fb_snap_t *s)
{
    fb_snap_release(fb_map_del(&w->members, room));
    fb_map_put(&w->members, room, s);
}

static void cache_drop(fb_writer_t *w, int64_t room)
{
    if (room > 0) fb_snap_release(fb_map_del(&w->members, room));
}

static void cache_clear(fb_writer_t *w)
{
    for (size_t i = 0; i < w->members.cap; i++)
        if (w->members.slots[i].key > 0) fb_snap_release(w->members.slots[i].val);
    fb_map_free(&w->members);
    fb_map_init(&w->members);
}

/* Current members of room (cached). Empty for a room that does not exist. */
static int members_of(fb_writer_t *w, int64_t room, fb_snap_t **out)
{
    fb_snap_t *s = fb_map_get(&w->members, room);
    if (!s) {
        fb_member_t *ms;
        size_t n;
        int rc = fb_store_members_list(w->store, room, &ms, &n);
        if (rc) return rc;
        s = fb_snap_alloc(n);
        for (size_t i = 0; i < n; i++) s->ids[i] = ms[i].user_id;
        fb_members_free(ms, n);
        qsort(s->ids, s->n, sizeof s->ids[0], cmp_i64);
        fb_map_put(&w->members, room, s);
    }
    *out = s;
    return 0;
}

/* Copy-on-write: the cached snapshot of room with uid added or removed. */
static fb_snap_t *snap_change(fb_writer_t *w, int64_t room, fb_snap_t *old, int64_t uid, bool add)
{
    fb_snap_t *s = fb_snap_alloc(old->n + (add ? 1 : 0));
    size_t k = 0;
    for (size_t i = 0; i < old->n; i++)
        if (old->ids[i] != uid) s->ids[k++] = old->ids[i];
    if (add) s->ids[k++] = uid;
    s->n = k;
    qsort(s->ids, s->n, sizeof s->ids[0], cmp_i64);
    cache_set(w, room, s);
    return s;
}

/* ---- what the batch tells other nodes ---- */

static void note(fb_writer_t *w, const fb_wreq_t *r, int kind, int64_t room, int64_t seq,
                 int64_t user, int64_t device)
{
    if (w->n_appended == w->cap_appended) {
        w->cap_appended = w->cap_appended ? 2 * w->cap_appended : 256;
        w->appended = fb_realloc(w->appended, w->cap_appended * sizeof *w->appended);
        w->changes = fb_realloc(w->changes, w->cap_appended * sizeof *w->changes);
    }
    w->appended[w->n_appended++] = (struct appended){kind, room, seq, user, device, r};
}

static void note_appended(fb_writer_t *w, const fb_wreq_t *r, int64_t room, int64_t seq)
{
    note(w, r, FB_CHANGE_EVENTS, room, seq, 0, 0);
}

/* ---- pushes ---- */

static fb_push_t *push_add(fb_wreq_t *r, int type)
{
    fb_push_t *p = fb_calloc(1, sizeof *p);
    p->type = type;
    fb_push_t **tail = &r->pushes;
    while (*tail) tail = &(*tail)->next;
    *tail = p;
    return p;
}

static void push_event(fb_writer_t *w, fb_wreq_t *r, const fb_event_t *ev, fb_snap_t *to,
                       int64_t extra, int64_t unread)
{
    fb_push_t *p = push_add(r, FB_PUSH_FRAME);
    p->members = snap_retain(to);
    p->extra = extra;
    w->opts.encode_event(w->opts.encode_ud, ev, unread, &p->frame);
}

static void push_read(fb_writer_t *w, fb_wreq_t *r, int64_t room, fb_snap_t *to, int64_t seq)
{
    note(w, r, FB_CHANGE_READ, room, seq, r->user_id, 0); /* other nodes push it too */
    fb_push_t *p = push_add(r, FB_PUSH_FRAME);
    p->members = snap_retain(to);
    w->opts.encode_read(w->opts.encode_ud, room, r->user_id, r->user_name, seq, &p->frame);
}

/* Keeps only the last push of a request that made many events: members
 * see the gap and sync, instead of a fan-out of n events to n members. */
static void trim_pushes(fb_wreq_t *r)
{
    size_t n = 0;
    for (fb_push_t *p = r->pushes; p; p = p->next) n++;
    if (n <= PUSH_EVENTS_MAX) return;
    while (r->pushes->next) {
        fb_push_t *p = r->pushes;
        r->pushes = p->next;
        push_free(p);
    }
}

/* ---- helpers of the handlers ---- */

static void reject(fb_writer_t *w, fb_wreq_t *r, int err)
{
    r->err = err;
    drop_pushes(r);
    cache_drop(w, r->room_id);
    cache_drop(w, r->r_room);
}


static int fail(fb_wreq_t *r, int err, const char *fmt, const char *arg)
{
    snprintf(r->err_msg, sizeof r->err_msg, fmt, arg);
    return err;
}

static int append(fb_writer_t *w, fb_wreq_t *r, fb_event_t *ev)
{
    ev->ts_ms = w->last_ts;
    ev->actor_name = r->user_name;
    int rc = fb_store_event_append(w->store, ev);
    if (!rc) note_appended(w, r, ev->room_id, ev->seq);
    return rc;
}

static int user_named(fb_writer_t *w, fb_wreq_t *r, const char *name, fb_user_t *u)
{
    int rc = fb_store_user_by_name(w->store, name, u);
    if (rc == FB_ENOTFOUND) return fail(r, rc, "no user named '%s'", name);
    return rc;
}

/* Adds target to room with a join event pushed to the members after it. */
static int join(fb_writer_t *w, fb_wreq_t *r, int64_t room, fb_snap_t **snap, const fb_user_t *u,
                int role, int64_t joined_at)
{
    fb_event_t ev = {.room_id = room, .kind = FB_EV_JOIN, .actor_id = r->user_id,
                     .target_id = u->id, .target_name = u->name};
    int rc = append(w, r, &ev);
    if (!rc) rc = fb_store_member_add(w->store, room, u->id, role, joined_at ? joined_at : ev.seq);
    if (rc) return rc;
    if (!snap_has(*snap, u->id)) *snap = snap_change(w, room, *snap, u->id, true);
    push_event(w, r, &ev, *snap, 0, -1);
    r->r_seq = ev.seq;
    return 0;
}

static int room_for_member(fb_writer_t *w, fb_wreq_t *r, fb_room_t *room, fb_snap_t **snap)
{
    int rc = fb_store_room_get(w->store, r->room_id, room);
    if (rc == FB_ENOTFOUND) return FB_ENOTMEMBER;
    if (!rc) rc = members_of(w, r->room_id, snap);
    if (!rc && !snap_has(*snap, r->user_id)) rc = FB_ENOTMEMBER;
    return rc;
}

/* ---- handlers: each runs inside the batch transaction, under a savepoint ---- */

static int h_register(fb_writer_t *w, fb_wreq_t *r)
{
    int rc = fb_store_user_create(w->store, r->name, r->pwhash, w->last_ts, &r->r_user);
    if (rc == FB_ENAMETAKEN) return fail(r, rc, "the user name '%s' is taken", r->name);
    if (rc) return rc;
    return fb_store_device_create(w->store, r->r_user, r->dev_name, r->token_hash, w->last_ts,
                                  r->expires_ms, &r->r_device);
}

static int h_login(fb_writer_t *w, fb_wreq_t *r)
{
    return fb_store_device_create(w->store, r->user_id, r->dev_name, r->token_hash, w->last_ts,
                                  r->expires_ms, &r->r_device);
}

static int h_logout(fb_writer_t *w, fb_wreq_t *r)
{
    int rc = fb_store_device_revoke(w->store, r->user_id, r->arg_device);
    if (rc == FB_ENOTFOUND) return fail(r, rc, "%s", "no such device of yours");
    if (rc) return rc;
    fb_push_t *p = push_add(r, FB_PUSH_LOGOUT);
    p->user_id = r->user_id;
    p->device_id = r->arg_device;
    note(w, r, FB_CHANGE_LOGOUT, 0, 0, r->user_id, r->arg_device);
    return 0;
}

static int h_direct(fb_writer_t *w, fb_wreq_t *r)
{
    fb_user_t peer = {0}, me = {.id = r->user_id, .name = r->user_name};
    int rc = user_named(w, r, r->name, &peer);
    if (rc) goto cleanup;
    if (peer.id == r->user_id) {
        rc = fail(r, FB_EINVAL, "%s", "a direct room needs another user");
        goto cleanup;
    }
    char key[64];
    snprintf(key, sizeof key, "d:%lld:%lld", (long long)FB_MIN(peer.id, r->user_id),
             (long long)FB_MAX(peer.id, r->user_id));
    fb_snap_t *snap;
    rc = fb_store_room_by_direct_key(w->store, key, &r->r_room);
    if (rc == 0) {
        /* Exactly one room per pair: rejoin whoever left it. */
        if ((rc = members_of(w, r->r_room, &snap))) goto cleanup;
        const fb_user_t *both[2] = {&me, &peer};
        for (int i = 0; i < 2 && !rc; i++)
            if (!snap_has(snap, both[i]->id))
                rc = join(w, r, r->r_room, &snap, both[i], FB_ROLE_MEMBER, 0);
        goto cleanup;
    }
    if (rc != FB_ENOTFOUND) goto cleanup;
    rc = fb_store_room_create(w->store, FB_ROOM_DIRECT, "", 0, key, w->last_ts, &r->r_room);
    fb_event_t ev = {.room_id = r->r_room, .kind = FB_EV_CREATE, .actor_id = r->user_id,
                     .text = ""};
    if (!rc) rc = append(w, r, &ev);
    if (!rc) r->r_seq = ev.seq; /* the room's last seq so far (joins raise it) */
    if (!rc) rc = fb_store_member_add(w->store, r->r_room, r->user_id, FB_ROLE_MEMBER, ev.seq);
    if (!rc) rc = fb_store_member_add(w->store, r->r_room, peer.id, FB_ROLE_MEMBER, ev.seq);
    if (rc) goto cleanup;
    snap = fb_snap_alloc(2);
    snap->ids[0] = FB_MIN(peer.id, r->user_id);
    snap->ids[1] = FB_MAX(peer.id, r->user_id);
    cache_set(w, r->r_room, snap);
    push_event(w, r, &ev, snap, 0, -1);
cleanup:
    fb_user_clear(&peer);
    return rc;
}

static int h_group(fb_writer_t *w, fb_wreq_t *r)
{
    if ((int64_t)r->n_names + 1 > w->opts.max_room_members)
        return fail(r, FB_EFULL, "%s", "too many members for one room");
    int rc = fb_store_room_create(w->store, FB_ROOM_GROUP, r->name, r->user_id, NULL, w->last_ts,
                                  &r->r_room);
    fb_event_t ev = {.room_id = r->r_room, .kind = FB_EV_CREATE, .actor_id = r->user_id,
                     .text = r->name};
    if (!rc) rc = append(w, r, &ev);
    if (!rc) r->r_seq = ev.seq; /* the room's last seq so far (joins raise it) */
    if (!rc) rc = fb_store_member_add(w->store, r->r_room, r->user_id, FB_ROLE_OWNER, ev.seq);
    if (rc) return rc;
    fb_snap_t *snap = fb_snap_alloc(1);
    snap->ids[0] = r->user_id;
    cache_set(w, r->r_room, snap);
    push_event(w, r, &ev, snap, 0, -1);
    /* The founding members see the room from its first event on. */
    for (size_t i = 0; i < r->n_names && !rc; i++) {
        fb_user_t u = {0};
        rc = user_named(w, r, r->names[i], &u);
        if (!rc && !snap_has(snap, u.id)) rc = join(w, r, r->r_room, &snap, &u, FB_ROLE_MEMBER, 1);
        fb_user_clear(&u);
    }
    trim_pushes(r);
    return rc;
}

static int h_invite(fb_writer_t *w, fb_wreq_t *r)
{
    fb_room_t room = {0};
    fb_snap_t *snap;
    int rc = room_for_member(w, r, &room, &snap);
    if (!rc && room.kind == FB_ROOM_DIRECT)
        rc = fail(r, FB_EFORBIDDEN, "%s", "nobody can be invited into a 1:1 room");
    r->r_seq = 0;
    for (size_t i = 0; i < r->n_names && !rc; i++) {
        fb_user_t u = {0};
        rc = user_named(w, r, r->names[i], &u);
        if (!rc && !snap_has(snap, u.id)) {
            if ((int64_t)snap->n + 1 > w->opts.max_room_members)
                rc = fail(r, FB_EFULL, "%s", "the room has reached its member limit");
            else
                rc = join(w, r, r->room_id, &snap, &u, FB_ROLE_MEMBER, 0);
        }
        fb_user_clear(&u);
    }
    trim_pushes(r);
    fb_room_clear(&room);
    return rc;
}

/* Removes uid (who left, or was kicked by the caller) with an event of kind. */
static int remove_member(fb_writer_t *w, fb_wreq_t *r, fb_room_t *room, fb_snap_t *snap,
                         int kind, const fb_user_t *target)
{
    fb_event_t ev = {.room_id = r->room_id, .kind = kind, .actor_id = r->user_id};
    int64_t gone = r->user_id;
    if (target) {
        ev.target_id = gone = target->id;
        ev.target_name = target->name;
    }
    int rc = append(w, r, &ev);
    if (!rc) rc = fb_store_member_remove(w->store, r->room_id, gone, ev.seq);
    if (rc) return rc;
    if (room->owner_id == gone) {
        fb_member_t *ms;
        size_t n;
        if ((rc = fb_store_members_list(w->store, r->room_id, &ms, &n))) return rc;
        int64_t heir = n ? ms[0].user_id : 0; /* the earliest joined */
        fb_members_free(ms, n);
        if (room->kind == FB_ROOM_GROUP) {
            rc = fb_store_room_set_owner(w->store, r->room_id, heir);
            if (!rc && heir) rc = fb_store_member_set_role(w->store, r->room_id, heir, FB_ROLE_OWNER);
            if (rc) return rc;
        }
    }
    snap = snap_change(w, r->room_id, snap, gone, false);
    push_event(w, r, &ev, snap, gone, -1);
    r->r_seq = ev.seq;
    return 0;
}

static int h_leave(fb_writer_t *w, fb_wreq_t *r)
{
    fb_room_t room = {0};
    fb_snap_t *snap;
    int rc = room_for_member(w, r, &room, &snap);
    if (!rc) rc = remove_member(w, r, &room, snap, FB_EV_LEAVE, NULL);
    fb_room_clear(&room);
    return rc;
}

static int h_kick(fb_writer_t *w, fb_wreq_t *r)
{
    fb_room_t room = {0};
    fb_user_t u = {0};
    fb_snap_t *snap;
    int rc = room_for_member(w, r, &room, &snap);
    if (rc) goto cleanup;
    if (room.kind == FB_ROOM_DIRECT)
        rc = fail(r, FB_EFORBIDDEN, "%s", "nobody can be kicked from a 1:1 room");
    else if (room.owner_id != r->user_id)
        rc = fail(r, FB_EFORBIDDEN, "%s", "only the room's owner can kick");
    else if (!(rc = user_named(w, r, r->name, &u))) {
        if (u.id == r->user_id)
            rc = fail(r, FB_EINVAL, "%s", "use leave to leave a room");
        else if (!snap_has(snap, u.id))
            rc = fail(r, FB_ENOTFOUND, "'%s' is not a member of this room", u.name);
        else
            rc = remove_member(w, r, &room, snap, FB_EV_KICK, &u);
    }
cleanup:
    fb_user_clear(&u);
    fb_room_clear(&room);
    return rc;
}

static int h_rename(fb_writer_t *w, fb_wreq_t *r)
{
    fb_room_t room = {0};
    fb_snap_t *snap;
    int rc = room_for_member(w, r, &room, &snap);
    if (!rc && room.kind == FB_ROOM_DIRECT)
        rc = fail(r, FB_EFORBIDDEN, "%s", "a 1:1 room cannot be renamed");
    fb_event_t ev = {.room_id = r->room_id, .kind = FB_EV_RENAME, .actor_id = r->user_id,
                     .text = r->name};
    if (!rc) rc = append(w, r, &ev);
    if (!rc) rc = fb_store_room_set_name(w->store, r->room_id, r->name);
    if (!rc) {
        push_event(w, r, &ev, snap, 0, -1);
        r->r_seq = ev.seq;
    }
    fb_room_clear(&room);
    return rc;
}

/* A run of consecutive sends goes to the store in one call: the store checks
 * membership and (device, cmid) uniqueness itself, inside the transaction,
 * so that its answer holds even when other nodes write the same rooms. The
 * membership cache only chooses the recipients of the pushes. */
static int run_sends(fb_writer_t *w, fb_wreq_t **reqs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const fb_wreq_t *r = reqs[i];
        w->sends[i] = (fb_send_t){.room_id = r->room_id, .actor_id = r->user_id,
                                  .actor_device = r->device_id, .ts_ms = w->last_ts,
                                  .cmid = r->cmid, .text = r->text};
    }
    int rc = fb_store_send_many(w->store, w->sends, n);
    for (size_t i = 0; i < n && !rc; i++) {
        fb_wreq_t *r = reqs[i];
        const fb_send_t *it = &w->sends[i];
        if (it->err == FB_EEXIST) {
            /* a retry: answered from the stored original, nothing appended */
            r->r_room = it->room_id;
            r->r_seq = it->seq;
            r->r_ts = it->ts_ms;
            r->r_duplicate = true;
            continue;
        }
        if (it->err) {
            reject(w, r, it->err);
            continue;
        }
        note_appended(w, r, r->room_id, it->seq);
        r->r_room = r->room_id;
        r->r_seq = it->seq;
        r->r_ts = it->ts_ms;
        fb_snap_t *snap;
        if ((rc = members_of(w, r->room_id, &snap))) break;
        if (!snap_has(snap, r->user_id)) {
            /* the store says member: another node added them since we cached */
            cache_drop(w, r->room_id);
            if ((rc = members_of(w, r->room_id, &snap))) break;
        }
        fb_event_t ev = {.room_id = r->room_id, .seq = it->seq, .ts_ms = it->ts_ms,
                         .kind = FB_EV_TEXT, .actor_id = r->user_id, .actor_device = r->device_id,
                         .cmid = r->cmid, .text = r->text, .actor_name = r->user_name};
        /* Everyone else is a current member who joined before it. */
        push_event(w, r, &ev, snap, 0, snap->n > 0 ? (int64_t)snap->n - 1 : 0);
        /* Sending marked the room read up to the new message. */
        if (it->old_read_seq < it->seq - 1) push_read(w, r, r->room_id, snap, it->seq);
    }
    return rc;
}

static int h_read(fb_writer_t *w, fb_wreq_t *r)
{
    fb_room_t room = {0};
    fb_snap_t *snap;
    fb_member_t me = {0};
    bool advanced = false;
    int rc = room_for_member(w, r, &room, &snap);
    if (!rc && r->seq > room.last_seq)
        rc = fail(r, FB_EINVAL, "%s", "seq is beyond the room's newest event");
    if (!rc) rc = fb_store_read_marker_set(w->store, r->room_id, r->user_id, r->seq, &advanced);
    if (!rc) rc = fb_store_member_get(w->store, r->room_id, r->user_id, &me);
    if (!rc) {
        r->r_seq = me.read_seq;
        if (advanced) push_read(w, r, r->room_id, snap, me.read_seq);
    }
    fb_member_clear(&me);
    fb_room_clear(&room);
    return rc;
}

static int handle(fb_writer_t *w, fb_wreq_t *r)
{
    switch (r->op) {
    case FB_W_REGISTER: return h_register(w, r);
    case FB_W_LOGIN: return h_login(w, r);
    case FB_W_LOGOUT: return h_logout(w, r);
    case FB_W_DIRECT: return h_direct(w, r);
    case FB_W_GROUP: return h_group(w, r);
    case FB_W_INVITE: return h_invite(w, r);
    case FB_W_LEAVE: return h_leave(w, r);
    case FB_W_KICK: return h_kick(w, r);
    case FB_W_RENAME: return h_rename(w, r);
    case FB_W_READ: return h_read(w, r);
    case FB_W_SEND:   /* in runs: run_sends */
    case FB_W_FORGET: /* no store work: run_batch */
        break;
    }
    return FB_EINTERNAL;
}

/* ---- the batch ---- */

/* BEGIN, waiting out a failover: while the store is unreachable the batch
 * (and everything queued behind it) is held for up to hold_ms, so that a
 * promotion elsewhere costs clients a pause, not an error. */
static int begin_held(fb_writer_t *w)
{
    int rc = fb_store_begin(w->store);
    if (rc != FB_EUNAVAIL || w->opts.hold_ms <= 0) return rc;
    uint64_t t0 = fb_mono_ns(), deadline = t0 + (uint64_t)w->opts.hold_ms * 1000000u;
    atomic_store(&w->stats.store_down, true);
    atomic_fetch_add(&w->stats.holds, 1);
    FB_WARN("writer", "store unavailable: holding writes for up to %lld ms",
            (long long)w->opts.hold_ms);
    while (rc == FB_EUNAVAIL && fb_mono_ns() < deadline && !atomic_load(&w->stopping)) {
        uv_sleep(100);
        rc = fb_store_begin(w->store);
    }
    uint64_t held = fb_mono_ns() - t0;
    atomic_fetch_add(&w->stats.hold_ns_total, held);
    atomic_store(&w->stats.store_down, rc != 0);
    if (rc)
        FB_ERROR("writer", "store still unavailable after %llu ms: refusing the batch",
                 (unsigned long long)(held / 1000000u));
    else
        FB_INFO("writer", "store back after %llu ms", (unsigned long long)(held / 1000000u));
    return rc;
}

/* Tells the other nodes (through the store) which seqs each room got in
 * this batch, which read markers moved and which devices were logged out,
 * counting only requests that were not rolled back. A room's committed seqs
 * of one transaction are contiguous: its row stays locked. */
static int announce(fb_writer_t *w)
{
    if (!w->n_appended || !w->opts.origin) return 0; /* no origin: a node on its own */
    fb_map_t rooms; /* room -> index + 1 in w->changes */
    fb_map_init(&rooms);
    size_t n = 0;
    for (size_t i = 0; i < w->n_appended; i++) {
        const struct appended *a = &w->appended[i];
        if (a->by->err) continue;
        if (a->kind != FB_CHANGE_EVENTS) {
            w->changes[n++] = (fb_change_t){.room_id = a->room, .from_seq = a->seq,
                                            .to_seq = a->seq, .kind = a->kind,
                                            .user_id = a->user, .device_id = a->device};
            continue;
        }
        uintptr_t k = (uintptr_t)fb_map_get(&rooms, a->room);
        if (!k) {
            w->changes[n] = (fb_change_t){.room_id = a->room, .from_seq = a->seq, .to_seq = a->seq};
            fb_map_put(&rooms, a->room, (void *)(uintptr_t)++n);
            continue;
        }
        fb_change_t *c = &w->changes[k - 1];
        c->from_seq = FB_MIN(c->from_seq, a->seq);
        c->to_seq = FB_MAX(c->to_seq, a->seq);
    }
    fb_map_free(&rooms);
    return n ? fb_store_announce(w->store, w->opts.origin, w->changes, n) : 0;
}

static void run_batch(fb_writer_t *w, size_t n)
{
    uint64_t t0 = fb_mono_ns();
    int rc = begin_held(w);
    int64_t now = fb_now_ms();
    w->last_ts = FB_MAX(now, w->last_ts); /* ts never goes backwards */
    w->n_appended = 0;
    for (size_t i = 0; i < n && !rc;) {
        fb_wreq_t *r = w->batch[i];
        if (r->op == FB_W_SEND) {
            size_t j = i + 1;
            while (j < n && w->batch[j]->op == FB_W_SEND) j++;
            rc = run_sends(w, w->batch + i, j - i);
            i = j;
            continue;
        }
        i++;
        if (r->op == FB_W_FORGET) {
            cache_drop(w, r->room_id);
            continue;
        }
        if ((rc = fb_store_savepoint(w->store))) break;
        int err = handle(w, r);
        if (err) {
            reject(w, r, err);
            rc = fb_store_rollback_to(w->store);
        } else {
            rc = fb_store_release(w->store);
        }
    }
    if (!rc) rc = announce(w);
    if (!rc) rc = fb_store_commit(w->store);
    if (rc) {
        /* Nothing of this batch is durable, or we cannot know: nobody gets an
         * ack; sends are retried by their clients with the same cmid. */
        FB_ERROR("writer", "commit of %zu requests failed: %s", n, fb_err_message(rc));
        fb_store_rollback(w->store);
        for (size_t i = 0; i < n; i++) reject(w, w->batch[i], FB_EUNAVAIL);
        cache_clear(w);
        atomic_fetch_add(&w->stats.commit_failures, 1);
    } else {
        uint64_t events = 0;
        for (size_t i = 0; i < n; i++) {
            const fb_wreq_t *r = w->batch[i];
            events += r->op == FB_W_SEND && !r->err && !r->r_duplicate;
        }
        atomic_fetch_add(&w->stats.commits, 1);
        atomic_fetch_add(&w->stats.events, events);
    }
    atomic_fetch_add(&w->stats.requests, n);
    atomic_fetch_add(&w->stats.commit_ns_total, fb_mono_ns() - t0);
    if (n > atomic_load(&w->stats.batch_max_seen)) atomic_store(&w->stats.batch_max_seen, n);

    /* COMMITTED: now, and only now, results and pushes may leave. */
    fb_writer_deliver(w, w->batch, n);
}

void fb_writer_deliver(fb_writer_t *w, fb_wreq_t **reqs, size_t n)
{
    fb_wbatch_t *b = fb_malloc(sizeof *b + (size_t)w->n_sinks * sizeof(fb_mpsc_node_t));
    atomic_init(&b->refs, w->n_sinks);
    b->n = n;
    b->reqs = fb_malloc(n * sizeof *b->reqs);
    memcpy(b->reqs, reqs, n * sizeof *b->reqs);
    for (int i = 0; i < w->n_sinks; i++) w->sinks[i].deliver(w->sinks[i].ud, &b->nodes[i]);
}

static void on_wake(uv_async_t *a)
{
    fb_writer_t *w = a->data;
    for (;;) {
        size_t n = 0;
        fb_mpsc_node_t *node;
        while (n < (size_t)w->opts.batch_max && (node = fb_mpsc_pop(&w->queue)))
            w->batch[n++] = FB_CONTAINER_OF(node, fb_wreq_t, node);
        if (!n) break;
        run_batch(w, n);
    }
    if (atomic_load(&w->stopping)) uv_close((uv_handle_t *)&w->wake, NULL);
}

static void writer_main(void *arg)
{
    fb_writer_t *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

int fb_writer_start(fb_store_t *store, const fb_writer_opts_t *opts, const fb_wsink_t *sinks,
                    int n_sinks, fb_writer_t **out)
{
    fb_writer_t *w = fb_calloc(1, sizeof *w);
    w->store = store;
    w->opts = *opts;
    w->sinks = fb_malloc((size_t)n_sinks * sizeof *sinks);
    memcpy(w->sinks, sinks, (size_t)n_sinks * sizeof *sinks);
    w->n_sinks = n_sinks;
    w->batch = fb_malloc((size_t)opts->batch_max * sizeof *w->batch);
    w->sends = fb_malloc((size_t)opts->batch_max * sizeof *w->sends);
    fb_mpsc_init(&w->queue);
    fb_map_init(&w->members);
    if (uv_loop_init(&w->loop) != 0) goto fail;
    w->wake.data = w;
    if (uv_async_init(&w->loop, &w->wake, on_wake) != 0) goto fail;
    if (uv_thread_create(&w->thread, writer_main, w) != 0) goto fail;
    *out = w;
    return 0;
fail:
    FB_ERROR("writer", "cannot start the writer thread");
    fb_free(w->sends);
    fb_free(w->batch);
    fb_free(w->sinks);
    fb_free(w);
    return FB_EINTERNAL;
}

void fb_writer_submit(fb_writer_t *w, fb_wreq_t *r)
{
    fb_mpsc_push(&w->queue, &r->node);
    uv_async_send(&w->wake);
}

void fb_writer_stop(fb_writer_t *w)
{
    atomic_store(&w->stopping, true);
    uv_async_send(&w->wake);
    uv_thread_join(&w->thread);
    uv_loop_close(&w->loop);
    cache_clear(w);
    fb_map_free(&w->members);
    fb_free(w->batch);
    fb_free(w->sends);
    fb_free(w->changes);
    fb_free(w->appended);
    fb_free(w->sinks);
    fb_free(w);
}

const fb_writer_stats_t *fb_writer_stats(const fb_writer_t *w)
{
    return &w->stats;
}
