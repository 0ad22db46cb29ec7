/* Room ops: direct, create_group, invite, leave, kick, rename, rooms, room.
 * Changes go to the writer; listings read this loop's read connection.
 * SPDX-License-Identifier: MIT */
#include "server/server.h"

#include <string.h>

/* The other member of a direct room, from its member rows. */
static const fb_member_t *peer_of(const fb_member_t *ms, size_t n, int64_t me)
{
    for (size_t i = 0; i < n; i++)
        if (ms[i].user_id != me) return &ms[i];
    return NULL;
}

static json_t *summary_json(fb_store_t *rd, const fb_room_summary_t *rs, int64_t me)
{
    fb_member_t *ms = NULL;
    size_t n = 0;
    const fb_member_t *peer = NULL;
    if (rs->room.kind == FB_ROOM_DIRECT && fb_store_members_list(rd, rs->room.id, &ms, &n) == 0)
        peer = peer_of(ms, n, me);
    json_t *o = fb_proto_room_summary(rs, peer);
    fb_members_free(ms, n);
    return o;
}

/* The caller's summary of one room, or FB_ENOTMEMBER. */
static int room_summary(fb_conn_t *c, int64_t room, json_t **out)
{
    fb_room_summary_t *rs;
    size_t n;
    int rc = fb_store_rooms_for_user(c->loop->reader, c->user_id, &rs, &n);
    if (rc) return rc;
    rc = FB_ENOTMEMBER;
    for (size_t i = 0; i < n; i++) {
        if (rs[i].room.id == room) {
            *out = summary_json(c->loop->reader, &rs[i], c->user_id);
            rc = 0;
            break;
        }
    }
    fb_room_summaries_free(rs, n);
    return rc;
}

static void done_room(fb_conn_t *c, fb_pending_t *p, fb_wreq_t *r)
{
    if (fb_ops_failed(c, p, r)) return;
    json_t *room;
    /* The room is committed: never answer with an error a client would
     * retry (and so make a second group). If the summary cannot be read
     * (with several sites: this site's standby has not replayed the commit
     * yet), the writer's result names the room and its last seq. */
    if (room_summary(c, r->r_room, &room) != 0) {
        room = json_pack("{s:I,s:s,s:s}", "room", (json_int_t)r->r_room, "kind",
                         r->op == FB_W_DIRECT ? "direct" : "group", "name",
                         r->op == FB_W_GROUP && r->name ? r->name : "");
        if (r->r_seq > 0) json_object_set_new(room, "last_seq", json_integer(r->r_seq));
    }
    fb_conn_reply(c, fb_reqid_json(&p->id), json_pack("{s:o}", "room", room));
}

static int name_arg(fb_req_t *req, const char *key, bool required, const char **out)
{
    int rc = fb_req_str(req, key, required, 0, FB_ROOM_NAME_MAX, out, NULL);
    if (!rc && *out && !fb_valid_label(*out, FB_ROOM_NAME_MAX)) {
        snprintf(req->msg, sizeof req->msg, "\"%s\" must not contain control characters", key);
        rc = FB_EINVAL;
    }
    return rc;
}

static int user_arg(fb_req_t *req, const char *key, const char **out)
{
    int rc = fb_req_str(req, key, true, 1, FB_NAME_MAX, out, NULL);
    if (!rc && !fb_valid_user_name(*out)) {
        snprintf(req->msg, sizeof req->msg, "\"%s\" is not a valid user name", key);
        rc = FB_EINVAL;
    }
    return rc;
}

static void take_names(fb_wreq_t *r, const char **names, size_t n)
{
    r->names = fb_calloc(n ? n : 1, sizeof *r->names);
    for (size_t i = 0; i < n; i++) r->names[i] = fb_strdup(names[i]);
    r->n_names = n;
}

int fb_op_direct(fb_conn_t *c, fb_req_t *req)
{
    const char *user;
    int rc = user_arg(req, "user", &user);
    if (rc) return rc;
    fb_wreq_t *r = fb_wreq_new(FB_W_DIRECT);
    r->name = fb_strdup(user);
    fb_ops_submit(c, fb_req_hold_id(req), r, done_room, false);
    return 0;
}

int fb_op_create_group(fb_conn_t *c, fb_req_t *req)
{
    const char *name = NULL, **names;
    size_t n;
    int64_t max = c->loop->srv->cfg.max_room_members;
    int rc = name_arg(req, "name", true, &name);
    if (!rc) rc = fb_req_names(req, "members", false, (size_t)max, &names, &n);
    if (rc) return rc;
    fb_wreq_t *r = fb_wreq_new(FB_W_GROUP);
    r->name = fb_strdup(name);
    take_names(r, names, n);
    fb_free(names);
    fb_ops_submit(c, fb_req_hold_id(req), r, done_room, false);
    return 0;
}

int fb_op_invite(fb_conn_t *c, fb_req_t *req)
{
    int64_t room;
    const char **names;
    size_t n;
    int rc = fb_req_id_field(req, "room", true, &room);
    if (!rc) rc = fb_req_names(req, "users", true, (size_t)c->loop->srv->cfg.max_room_members,
                               &names, &n);
    if (rc) return rc;
    fb_wreq_t *r = fb_wreq_new(FB_W_INVITE);
    r->room_id = room;
    take_names(r, names, n);
    fb_free(names);
    fb_ops_submit(c, fb_req_hold_id(req), r, fb_ops_done_seq, false);
    return 0;
}

int fb_op_leave(fb_conn_t *c, fb_req_t *req)
{
    int64_t room;
    int rc = fb_req_id_field(req, "room", true, &room);
    if (rc) return rc;
    fb_wreq_t *r = fb_wreq_new(FB_W_LEAVE);
    r->room_id = room;
    fb_ops_submit(c, fb_req_hold_id(req), r, fb_ops_done_seq, false);
    return 0;
}

int fb_op_kick(fb_conn_t *c, fb_req_t *req)
{
    int64_t room;
    const char *user;
    int rc = fb_req_id_field(req, "room", true, &room);
    if (!rc) rc = user_arg(req, "user", &user);
    if (rc) return rc;
    fb_wreq_t *r = fb_wreq_new(FB_W_KICK);
    r->room_id = room;
    r->name = fb_strdup(user);
    fb_ops_submit(c, fb_req_hold_id(req), r, fb_ops_done_seq, false);
    return 0;
}

int fb_op_rename(fb_conn_t *c, fb_req_t *req)
{
    int64_t room;
    const char *name;
    int rc = fb_req_id_field(req, "room", true, &room);
    if (!rc) rc = name_arg(req, "name", true, &name);
    if (rc) return rc;
    fb_wreq_t *r = fb_wreq_new(FB_W_RENAME);
    r->room_id = room;
    r->name = fb_strdup(name);
    fb_ops_submit(c, fb_req_hold_id(req), r, fb_ops_done_seq, false);
    return 0;
}

int fb_op_rooms(fb_conn_t *c, fb_req_t *req)
{
    fb_room_summary_t *rs;
    size_t n;
    int rc = fb_store_rooms_for_user(c->loop->reader, c->user_id, &rs, &n);
    if (rc) return rc;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, summary_json(c->loop->reader, &rs[i], c->user_id));
    fb_room_summaries_free(rs, n);
    fb_conn_reply(c, fb_req_id(req), json_pack("{s:o}", "rooms", arr));
    return 0;
}

int fb_op_room(fb_conn_t *c, fb_req_t *req)
{
    int64_t room;
    json_t *summary;
    int rc = fb_req_id_field(req, "room", true, &room);
    if (!rc) rc = room_summary(c, room, &summary);
    if (rc) return rc;
    fb_member_t *ms;
    size_t n;
    if ((rc = fb_store_members_list(c->loop->reader, room, &ms, &n))) {
        json_decref(summary);
        return rc;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(arr, fb_proto_member(&ms[i]));
    fb_members_free(ms, n);
    fb_conn_reply(c, fb_req_id(req), json_pack("{s:o,s:o}", "room", summary, "members", arr));
    return 0;
}
