/* Read ops over the room sequences: sync (everything after a client's
 * cursors, from one snapshot) and history (pages backwards). They run on the
 * io loop's own read connection and never write.
 * SPDX-License-Identifier: MIT */
#include "server/server.h"

#include <stdlib.h>
#include <string.h>

#define SYNC_REPLY_BUDGET (1 << 20) /* bytes of events per sync reply, roughly */
#define SYNC_CURSORS_MAX 10000

static json_t *events_json(const fb_event_t *evs, size_t n, const fb_member_t *ms, size_t nm,
                           size_t *bytes)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(arr, fb_proto_event(&evs[i], fb_unread_for(ms, nm, &evs[i])));
        *bytes += 120 + (evs[i].text ? strlen(evs[i].text) : 0);
    }
    return arr;
}

static json_t *members_json(const fb_member_t *ms, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(arr, fb_proto_member(&ms[i]));
    return arr;
}

/* One room's sync entry: state, members and the events after `after` that
 * the caller may see (up to `upto` for a former member). */
static int sync_room(fb_store_t *rd, int64_t room_id, const fb_member_t *me, int64_t after,
                     int limit, size_t *budget_used, json_t *out_rooms, bool *more_any)
{
    fb_room_t room = {0};
    fb_member_t *ms = NULL;
    fb_event_t *evs = NULL;
    size_t nm = 0, ne = 0;
    int rc = fb_store_room_get(rd, room_id, &room);
    if (!rc) rc = fb_store_members_list(rd, room_id, &ms, &nm);
    if (rc) goto cleanup;
    after = FB_MAX(after, me->joined_seq - 1);
    int64_t upto = me->left_seq ? me->left_seq : room.last_seq;
    bool over = *budget_used >= SYNC_REPLY_BUDGET;
    if (!over && after < upto)
        rc = fb_store_events_after(rd, room_id, after, upto, limit, &evs, &ne);
    if (rc) goto cleanup;
    int64_t last_sent = ne ? evs[ne - 1].seq : after;
    bool more = last_sent < upto;
    *more_any |= more;
    json_t *o = json_pack("{s:I,s:s,s:s,s:s,s:I,s:I,s:o,s:o,s:b}", "room", (json_int_t)room_id,
                          "status", me->left_seq ? "left" : "member", "kind",
                          fb_proto_room_kind(room.kind), "name", room.name ? room.name : "",
                          "owner", (json_int_t)room.owner_id, "last_seq",
                          (json_int_t)(me->left_seq ? me->left_seq : room.last_seq), "members",
                          members_json(ms, nm), "events",
                          events_json(evs, ne, ms, nm, budget_used), "more", more);
    json_array_append_new(out_rooms, o);
cleanup:
    fb_room_clear(&room);
    fb_members_free(ms, nm);
    fb_events_free(evs, ne);
    return rc;
}

static bool named_in(fb_room_summary_t *rs, size_t n, int64_t room)
{
    for (size_t i = 0; i < n; i++)
        if (rs[i].room.id == room) return true;
    return false;
}

int fb_op_sync(fb_conn_t *c, fb_req_t *req)
{
    fb_store_t *rd = c->loop->reader;
    int64_t limit = c->loop->srv->cfg.history_page_max;
    int rc = fb_req_int(req, "limit", false, 1, limit, &limit);
    if (rc) return rc;
    json_t *cursors = json_object_get(req->obj, "cursors");
    if (cursors && !json_is_object(cursors)) {
        snprintf(req->msg, sizeof req->msg, "\"cursors\" must be an object of room id -> seq");
        return FB_EBADREQ;
    }
    if (json_object_size(cursors) > SYNC_CURSORS_MAX) {
        snprintf(req->msg, sizeof req->msg, "at most %d cursors", SYNC_CURSORS_MAX);
        return FB_ETOOBIG;
    }
    const char *key;
    json_t *val;
    json_object_foreach(cursors, key, val) {
        char *end;
        long long id = strtoll(key, &end, 10);
        if (*end || id <= 0 || !json_is_integer(val) || json_integer_value(val) < 0) {
            snprintf(req->msg, sizeof req->msg,
                     "cursors must map positive room ids to sequence numbers >= 0");
            return FB_EINVAL;
        }
    }
    fb_room_summary_t *rs = NULL;
    size_t n = 0, budget = 0;
    bool more = false;
    json_t *rooms = json_array();
    if ((rc = fb_store_begin(rd))) goto fail;
    if ((rc = fb_store_rooms_for_user(rd, c->user_id, &rs, &n))) goto fail;
    for (size_t i = 0; i < n && !rc; i++) {
        char k[24];
        snprintf(k, sizeof k, "%lld", (long long)rs[i].room.id);
        json_t *cur = json_object_get(cursors, k);
        int64_t after = cur ? json_integer_value(cur) : 0;
        rc = sync_room(rd, rs[i].room.id, &rs[i].me, after, (int)limit, &budget, rooms, &more);
    }
    /* Rooms the client knows that I am no longer (or never was) in. */
    json_object_foreach(cursors, key, val) {
        if (rc) break;
        int64_t id = strtoll(key, NULL, 10);
        if (named_in(rs, n, id)) continue;
        fb_member_t me = {0};
        rc = fb_store_member_get(rd, id, c->user_id, &me);
        if (rc == FB_ENOTFOUND) {
            json_array_append_new(rooms, json_pack("{s:I,s:s}", "room", (json_int_t)id, "status",
                                                   "not_member"));
            rc = 0;
        } else if (!rc) {
            rc = sync_room(rd, id, &me, json_integer_value(val), (int)limit, &budget, rooms, &more);
        }
        fb_member_clear(&me);
    }
fail:
    fb_store_commit(rd); /* ends the read snapshot */
    fb_room_summaries_free(rs, n);
    if (rc) {
        json_decref(rooms);
        return rc;
    }
    fb_conn_reply(c, fb_req_id(req), json_pack("{s:o,s:b}", "rooms", rooms, "more", more));
    return 0;
}

int fb_op_history(fb_conn_t *c, fb_req_t *req)
{
    fb_store_t *rd = c->loop->reader;
    int64_t room_id, before = INT64_MAX, limit = 50;
    int rc = fb_req_id_field(req, "room", true, &room_id);
    if (!rc) rc = fb_req_int(req, "before", false, 1, INT64_MAX, &before);
    if (!rc) rc = fb_req_int(req, "limit", false, 1, c->loop->srv->cfg.history_page_max, &limit);
    if (rc) return rc;
    fb_member_t me = {0}, *ms = NULL;
    fb_event_t *evs = NULL;
    size_t nm = 0, ne = 0;
    if ((rc = fb_store_begin(rd))) return rc;
    rc = fb_store_member_get(rd, room_id, c->user_id, &me);
    if (rc == FB_ENOTFOUND) rc = FB_ENOTMEMBER;
    if (rc) goto cleanup;
    if (me.left_seq) before = FB_MIN(before, me.left_seq + 1);
    if (!(rc = fb_store_members_list(rd, room_id, &ms, &nm)))
        rc = fb_store_events_before(rd, room_id, before, me.joined_seq, (int)limit, &evs, &ne);
    if (rc) goto cleanup;
    size_t bytes = 0;
    bool more = ne && evs[0].seq > me.joined_seq;
    fb_conn_reply(c, fb_req_id(req),
                  json_pack("{s:I,s:o,s:b}", "room", (json_int_t)room_id, "events",
                            events_json(evs, ne, ms, nm, &bytes), "more", more));
cleanup:
    fb_store_commit(rd);
    fb_member_clear(&me);
    fb_members_free(ms, nm);
    fb_events_free(evs, ne);
    return rc;
}
