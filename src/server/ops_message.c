/* Message ops: send and read. Both go to the writer; the reply to a send
 * leaves only with its batch, after the commit (see chat/writer.c).
 * SPDX-License-Identifier: MIT */
#include "server/server.h"

#include <string.h>

static void done_send(fb_conn_t *c, fb_pending_t *p, fb_wreq_t *r)
{
    if (fb_ops_failed(c, p, r)) return;
    fb_conn_reply(c, fb_reqid_json(&p->id),
                  json_pack("{s:I,s:I,s:I,s:b}", "room", (json_int_t)r->r_room, "seq",
                            (json_int_t)r->r_seq, "ts", (json_int_t)r->r_ts, "duplicate",
                            r->r_duplicate));
}

int fb_op_send(fb_conn_t *c, fb_req_t *req)
{
    int64_t room;
    const char *cmid, *text;
    size_t len;
    int rc = fb_req_id_field(req, "room", true, &room);
    if (!rc) rc = fb_req_str(req, "cmid", true, 1, FB_CMID_MAX, &cmid, NULL);
    if (!rc && !fb_valid_cmid(cmid)) {
        snprintf(req->msg, sizeof req->msg, "\"cmid\" must be 1 to 64 of A-Z a-z 0-9 . _ : -");
        rc = FB_EINVAL;
    }
    if (!rc) rc = fb_req_text(req, "text", (size_t)c->loop->srv->cfg.max_text_bytes, &text, &len);
    if (rc) return rc;
    fb_wreq_t *r = fb_wreq_new(FB_W_SEND);
    r->room_id = room;
    snprintf(r->cmid, sizeof r->cmid, "%s", cmid);
    r->text = fb_strndup(text, len);
    fb_ops_submit(c, fb_req_hold_id(req), r, done_send, false);
    return 0;
}

static void done_read(fb_conn_t *c, fb_pending_t *p, fb_wreq_t *r)
{
    if (!fb_ops_failed(c, p, r))
        fb_conn_reply(c, fb_reqid_json(&p->id),
                      json_pack("{s:I,s:I}", "room", (json_int_t)r->room_id, "read_seq",
                                (json_int_t)r->r_seq));
}

int fb_op_read(fb_conn_t *c, fb_req_t *req)
{
    int64_t room, seq;
    int rc = fb_req_id_field(req, "room", true, &room);
    if (!rc) rc = fb_req_int(req, "seq", true, 0, INT64_MAX, &seq);
    if (rc) return rc;
    fb_wreq_t *r = fb_wreq_new(FB_W_READ);
    r->room_id = room;
    r->seq = seq;
    fb_ops_submit(c, fb_req_hold_id(req), r, done_read, false);
    return 0;
}
