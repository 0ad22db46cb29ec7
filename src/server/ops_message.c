/* Message ops: send and read. Both go to the writer; the reply to a send
 * leaves only with its batch, after the commit (see chat/writer.c).
 * SPDX-License-Identifier: MIT */
#include "server/server.h"

#include <string.h>

/* The acks: written without jansson for an integer id (proto/fastpath.c). */
static void done_send(fb_conn_t *c, fb_pending_t *p, fb_wreq_t *r)
{
    if (fb_ops_failed(c, p, r)) return;
    if (p->id.num >= 0) {
        char ack[FB_ACK_JSON_MAX];
        fb_conn_send_json_text(
            c, ack,
            fb_proto_send_ack_json(ack, p->id.num, r->r_room, r->r_seq, r->r_ts, r->r_duplicate));
    } else {
        fb_conn_send_json(
            c, fb_proto_send_ack(p->id.json, r->r_room, r->r_seq, r->r_ts, r->r_duplicate));
    }
}

int fb_ops_send_args(fb_req_t *req, size_t max_text_bytes, fb_send_args_t *a)
{
    int rc = fb_req_id_field(req, "room", true, &a->room);
    if (!rc) rc = fb_req_str(req, "cmid", true, 1, FB_CMID_MAX, &a->cmid, NULL);
    if (!rc && !fb_valid_cmid(a->cmid)) {
        snprintf(req->msg, sizeof req->msg, "\"cmid\" must be 1 to 64 of A-Z a-z 0-9 . _ : -");
        rc = FB_EINVAL;
    }
    if (!rc) rc = fb_req_text(req, "text", max_text_bytes, &a->text, &a->text_len);
    return rc;
}

int fb_op_send(fb_conn_t *c, fb_req_t *req)
{
    fb_send_args_t a;
    int rc = fb_ops_send_args(req, (size_t)c->loop->srv->cfg.max_text_bytes, &a);
    if (rc) return rc;
    fb_wreq_t *r = fb_wreq_new(FB_W_SEND);
    r->room_id = a.room;
    snprintf(r->cmid, sizeof r->cmid, "%s", a.cmid);
    r->text = fb_strndup(a.text, a.text_len);
    fb_ops_submit(c, fb_req_hold_id(req), r, done_send, false);
    return 0;
}

static void done_read(fb_conn_t *c, fb_pending_t *p, fb_wreq_t *r)
{
    if (fb_ops_failed(c, p, r)) return;
    if (p->id.num >= 0) {
        char ack[FB_ACK_JSON_MAX];
        fb_conn_send_json_text(c, ack,
                               fb_proto_read_ack_json(ack, p->id.num, r->room_id, r->r_seq));
    } else {
        fb_conn_send_json(c, fb_proto_read_ack(p->id.json, r->room_id, r->r_seq));
    }
}

int fb_ops_read_args(fb_req_t *req, int64_t *room, int64_t *seq)
{
    int rc = fb_req_id_field(req, "room", true, room);
    if (!rc) rc = fb_req_int(req, "seq", true, 0, INT64_MAX, seq);
    return rc;
}

int fb_op_read(fb_conn_t *c, fb_req_t *req)
{
    int64_t room, seq;
    int rc = fb_ops_read_args(req, &room, &seq);
    if (rc) return rc;
    fb_wreq_t *r = fb_wreq_new(FB_W_READ);
    r->room_id = room;
    r->seq = seq;
    fb_ops_submit(c, fb_req_hold_id(req), r, done_read, false);
    return 0;
}
