/* The backend-neutral half of the store: picks a backend once at open, checks
 * what can be checked without one, dispatches every fb_store_* call through
 * the backend's table, and frees what reads return. It must never speak SQL
 * or know any backend's types.
 * SPDX-License-Identifier: MIT */
#include <string.h>

#include "common/fb.h"
#include "store/store_impl.h"

static const fb_store_ops_t *const backends[] = {
    &fb_store_sqlite_ops,
    &fb_store_pg_ops,
};

static const fb_store_ops_t *backend_of(const fb_store_config_t *cfg)
{
    /* An unset kind means the default backend, so a config file may omit it. */
    const char *kind = cfg->kind && *cfg->kind ? cfg->kind : "sqlite";
    for (size_t i = 0; i < FB_ARRAY_LEN(backends); i++)
        if (strcmp(backends[i]->kind, kind) == 0) return backends[i];
    FB_ERROR("store", "unknown store kind=%s", kind);
    return NULL;
}

/* ---- lifetime ---- */

static int store_open(const fb_store_config_t *cfg, bool reader, fb_store_t **out)
{
    if (!out) return FB_EINVAL;
    *out = NULL;
    if (!cfg) return FB_EINVAL;
    const fb_store_ops_t *ops = backend_of(cfg);
    return ops ? ops->open(cfg, reader, out) : FB_EINVAL;
}

int fb_store_open(const fb_store_config_t *cfg, fb_store_t **out)
{
    return store_open(cfg, false, out);
}

int fb_store_open_reader(const fb_store_config_t *cfg, fb_store_t **out)
{
    return store_open(cfg, true, out);
}

void fb_store_close(fb_store_t *s)
{
    if (s) s->ops->close(s);
}

int fb_store_schema_version(fb_store_t *s, int *version)
{
    if (!version) return FB_EINVAL;
    *version = 0;
    return s->ops->schema_version(s, version);
}

/* ---- transactions ---- */

int fb_store_begin(fb_store_t *s)
{
    return s->ops->begin(s);
}

int fb_store_commit(fb_store_t *s)
{
    return s->ops->commit(s);
}

int fb_store_rollback(fb_store_t *s)
{
    return s->ops->rollback(s);
}

int fb_store_savepoint(fb_store_t *s)
{
    return s->ops->savepoint(s);
}

int fb_store_release(fb_store_t *s)
{
    return s->ops->release(s);
}

int fb_store_rollback_to(fb_store_t *s)
{
    return s->ops->rollback_to(s);
}

/* ---- accounts ---- */

int fb_store_user_create(fb_store_t *s, const char *name, const char *pwhash, int64_t now_ms,
                         int64_t *user_id)
{
    if (!name || !pwhash || !user_id) return FB_EINVAL;
    *user_id = 0;
    return s->ops->user_create(s, name, pwhash, now_ms, user_id);
}

int fb_store_user_by_name(fb_store_t *s, const char *name, fb_user_t *out)
{
    if (!name || !out) return FB_EINVAL;
    memset(out, 0, sizeof *out);
    return s->ops->user_by_name(s, name, out);
}

int fb_store_user_by_id(fb_store_t *s, int64_t id, fb_user_t *out)
{
    if (!out) return FB_EINVAL;
    memset(out, 0, sizeof *out);
    return s->ops->user_by_id(s, id, out);
}

int fb_store_device_create(fb_store_t *s, int64_t user_id, const char *name,
                           const uint8_t token_hash[32], int64_t now_ms, int64_t expires_ms,
                           int64_t *device_id)
{
    if (!name || !token_hash || !device_id) return FB_EINVAL;
    *device_id = 0;
    return s->ops->device_create(s, user_id, name, token_hash, now_ms, expires_ms, device_id);
}

int fb_store_device_by_token(fb_store_t *s, const uint8_t token_hash[32], fb_device_t *out)
{
    if (!token_hash || !out) return FB_EINVAL;
    memset(out, 0, sizeof *out);
    return s->ops->device_by_token(s, token_hash, out);
}

int fb_store_device_revoke(fb_store_t *s, int64_t user_id, int64_t device_id)
{
    return s->ops->device_revoke(s, user_id, device_id);
}

int fb_store_devices_list(fb_store_t *s, int64_t user_id, fb_device_t **out, size_t *n)
{
    if (!out || !n) return FB_EINVAL;
    *out = NULL;
    *n = 0;
    return s->ops->devices_list(s, user_id, out, n);
}

/* ---- rooms ---- */

int fb_store_room_create(fb_store_t *s, int kind, const char *name, int64_t owner_id,
                         const char *direct_key, int64_t now_ms, int64_t *room_id)
{
    if (!room_id || (kind != FB_ROOM_DIRECT && kind != FB_ROOM_GROUP)) return FB_EINVAL;
    *room_id = 0;
    return s->ops->room_create(s, kind, name ? name : "", owner_id, direct_key, now_ms, room_id);
}

int fb_store_room_by_direct_key(fb_store_t *s, const char *key, int64_t *room_id)
{
    if (!key || !room_id) return FB_EINVAL;
    *room_id = 0;
    return s->ops->room_by_direct_key(s, key, room_id);
}

int fb_store_room_get(fb_store_t *s, int64_t room_id, fb_room_t *out)
{
    if (!out) return FB_EINVAL;
    memset(out, 0, sizeof *out);
    return s->ops->room_get(s, room_id, out);
}

int fb_store_room_set_name(fb_store_t *s, int64_t room_id, const char *name)
{
    return s->ops->room_set_name(s, room_id, name ? name : "");
}

int fb_store_room_set_owner(fb_store_t *s, int64_t room_id, int64_t owner_id)
{
    return s->ops->room_set_owner(s, room_id, owner_id);
}

/* ---- events ---- */

int fb_store_event_append(fb_store_t *s, fb_event_t *ev)
{
    if (!ev) return FB_EINVAL;
    return s->ops->event_append(s, ev);
}

int fb_store_event_by_cmid(fb_store_t *s, int64_t device_id, const char *cmid, fb_event_t *out)
{
    if (!cmid || !out) return FB_EINVAL;
    memset(out, 0, sizeof *out);
    return s->ops->event_by_cmid(s, device_id, cmid, out);
}

int fb_store_events_after(fb_store_t *s, int64_t room_id, int64_t after, int64_t upto, int limit,
                          fb_event_t **out, size_t *n)
{
    if (!out || !n || limit < 0) return FB_EINVAL;
    *out = NULL;
    *n = 0;
    if (limit == 0) return 0;
    return s->ops->events_after(s, room_id, after, upto, limit, out, n);
}

int fb_store_events_before(fb_store_t *s, int64_t room_id, int64_t before, int64_t floor, int limit,
                           fb_event_t **out, size_t *n)
{
    if (!out || !n || limit < 0) return FB_EINVAL;
    *out = NULL;
    *n = 0;
    if (limit == 0) return 0;
    return s->ops->events_before(s, room_id, before, floor, limit, out, n);
}

/* ---- members ---- */

int fb_store_member_add(fb_store_t *s, int64_t room_id, int64_t user_id, int role, int64_t joined)
{
    return s->ops->member_add(s, room_id, user_id, role, joined);
}

int fb_store_member_remove(fb_store_t *s, int64_t room_id, int64_t user_id, int64_t left_seq)
{
    /* left_seq 0 means "still a member": removing with it would be a no-op lie. */
    if (left_seq <= 0) return FB_EINVAL;
    return s->ops->member_remove(s, room_id, user_id, left_seq);
}

int fb_store_member_set_role(fb_store_t *s, int64_t room_id, int64_t user_id, int role)
{
    return s->ops->member_set_role(s, room_id, user_id, role);
}

int fb_store_member_get(fb_store_t *s, int64_t room_id, int64_t user_id, fb_member_t *out)
{
    if (!out) return FB_EINVAL;
    memset(out, 0, sizeof *out);
    return s->ops->member_get(s, room_id, user_id, out);
}

int fb_store_members_list(fb_store_t *s, int64_t room_id, fb_member_t **out, size_t *n)
{
    if (!out || !n) return FB_EINVAL;
    *out = NULL;
    *n = 0;
    return s->ops->members_list(s, room_id, out, n);
}

int fb_store_read_marker_set(fb_store_t *s, int64_t room_id, int64_t user_id, int64_t seq,
                             bool *advanced)
{
    bool ignored;
    if (!advanced) advanced = &ignored;
    *advanced = false;
    return s->ops->read_marker_set(s, room_id, user_id, seq, advanced);
}

int fb_store_rooms_for_user(fb_store_t *s, int64_t user_id, fb_room_summary_t **out, size_t *n)
{
    if (!out || !n) return FB_EINVAL;
    *out = NULL;
    *n = 0;
    return s->ops->rooms_for_user(s, user_id, out, n);
}

/* ---- sends in bulk ---- */

/* Every backend treats an item as store.h says: the membership row is the
 * authority, a retry is answered from its original even after its sender
 * left the room. An error of the whole call only is returned. */
int fb_store_send_many(fb_store_t *s, fb_send_t *items, size_t n)
{
    if (n && !items) return FB_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (!items[i].cmid || !items[i].text) return FB_EINVAL;
        items[i].err = 0;
        items[i].seq = 0;
        items[i].old_read_seq = 0;
    }
    if (n == 0) return 0;
    return s->ops->send_many(s, items, n);
}

/* ---- the change feed ---- */

bool fb_change_valid(const fb_change_t *c)
{
    switch (c->kind) {
    case FB_CHANGE_EVENTS: return c->room_id > 0 && c->from_seq >= 0 && c->from_seq <= c->to_seq;
    case FB_CHANGE_READ: return c->room_id > 0 && c->user_id > 0 && c->to_seq >= 0;
    case FB_CHANGE_LOGOUT: return c->user_id > 0 && c->device_id > 0;
    default: return false;
    }
}

int fb_store_announce(fb_store_t *s, const char *origin, const fb_change_t *changes, size_t n)
{
    if (!origin || (n && !changes)) return FB_EINVAL;
    /* The origin is the first word of a notification: one word, printable. */
    size_t len = strlen(origin);
    if (len == 0 || len > 64) return FB_EINVAL;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)origin[i] <= ' ' || origin[i] == 0x7f) return FB_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!fb_change_valid(&changes[i])) return FB_EINVAL;
    if (n == 0 || !s->ops->announce) return 0;
    return s->ops->announce(s, origin, changes, n);
}

int fb_store_rooms_last_seq(fb_store_t *s, fb_change_t *known, size_t n)
{
    if (n && !known) return FB_EINVAL;
    if (n == 0) return 0;
    return s->ops->rooms_last_seq(s, known, n);
}

int fb_feed_open(const fb_store_config_t *cfg, fb_feed_t **out)
{
    if (!out) return FB_EINVAL;
    *out = NULL;
    if (!cfg) return FB_EINVAL;
    const fb_store_ops_t *ops = backend_of(cfg);
    if (!ops) return FB_EINVAL;
    if (!ops->feed_open) {
        FB_ERROR("store", "store kind=%s has one node only: it has no change feed", ops->kind);
        return FB_EINVAL;
    }
    return ops->feed_open(cfg, out);
}

void fb_feed_close(fb_feed_t *f)
{
    if (f) f->ops->feed_close(f);
}

int fb_feed_fd(fb_feed_t *f)
{
    return f->ops->feed_fd(f);
}

int fb_feed_poll(fb_feed_t *f, fb_feed_cb cb, void *ud, bool *reconnected)
{
    bool ignored;
    if (!reconnected) reconnected = &ignored;
    *reconnected = false;
    if (!cb) return FB_EINVAL;
    return f->ops->feed_poll(f, cb, ud, reconnected);
}

fb_store_t *fb_feed_store(fb_feed_t *f)
{
    return f->ops->feed_store(f);
}

/* ---- freeing what reads return ----
 * Each clear leaves a zeroed struct behind, so no freed pointer stays
 * reachable and clearing twice is harmless. */

void fb_user_clear(fb_user_t *u)
{
    if (!u) return;
    fb_free(u->name);
    fb_free(u->pwhash);
    memset(u, 0, sizeof *u);
}

void fb_device_clear(fb_device_t *d)
{
    if (!d) return;
    fb_free(d->name);
    memset(d, 0, sizeof *d);
}

void fb_room_clear(fb_room_t *r)
{
    if (!r) return;
    fb_free(r->name);
    memset(r, 0, sizeof *r);
}

void fb_member_clear(fb_member_t *m)
{
    if (!m) return;
    fb_free(m->user_name);
    memset(m, 0, sizeof *m);
}

void fb_event_clear(fb_event_t *e)
{
    if (!e) return;
    fb_free(e->cmid);
    fb_free(e->text);
    fb_free(e->actor_name);
    fb_free(e->target_name);
    memset(e, 0, sizeof *e);
}

void fb_events_free(fb_event_t *evs, size_t n)
{
    if (!evs) return;
    for (size_t i = 0; i < n; i++)
        fb_event_clear(&evs[i]);
    fb_free(evs);
}

void fb_members_free(fb_member_t *ms, size_t n)
{
    if (!ms) return;
    for (size_t i = 0; i < n; i++)
        fb_member_clear(&ms[i]);
    fb_free(ms);
}

void fb_devices_free(fb_device_t *ds, size_t n)
{
    if (!ds) return;
    for (size_t i = 0; i < n; i++)
        fb_device_clear(&ds[i]);
    fb_free(ds);
}

void fb_room_summaries_free(fb_room_summary_t *rs, size_t n)
{
    if (!rs) return;
    for (size_t i = 0; i < n; i++) {
        fb_room_clear(&rs[i].room);
        fb_member_clear(&rs[i].me);
        fb_event_clear(&rs[i].last);
    }
    fb_free(rs);
}
