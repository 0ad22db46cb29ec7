/* The op table and the path of a request through an io loop: parse, check
 * the connection's state, call the op's handler; and the way back from the
 * writer: replies to the requests this loop sent, pushes to its members.
 * It never does an op's work itself.
 * SPDX-License-Identifier: MIT */
#include "server/server.h"

#include <string.h>

static int op_login(fb_conn_t *c, fb_req_t *req)
{
    return fb_ops_login(c, req, false);
}

static int op_register(fb_conn_t *c, fb_req_t *req)
{
    return fb_ops_register(c, req, false);
}

static const fb_op_t ops[] = {
    {"hello", fb_op_hello, false},
    {"register", op_register, false},
    {"login", op_login, false},
    {"auth", fb_op_auth, false},
    {"ping", fb_op_ping, false},
    {"logout", fb_op_logout, true},
    {"devices", fb_op_devices, true},
    {"direct", fb_op_direct, true},
    {"create_group", fb_op_create_group, true},
    {"invite", fb_op_invite, true},
    {"leave", fb_op_leave, true},
    {"kick", fb_op_kick, true},
    {"rename", fb_op_rename, true},
    {"rooms", fb_op_rooms, true},
    {"room", fb_op_room, true},
    {"send", fb_op_send, true},
    {"read", fb_op_read, true},
    {"sync", fb_op_sync, true},
    {"history", fb_op_history, true},
};

const fb_op_t *fb_op_find(const char *name)
{
    for (size_t i = 0; i < FB_ARRAY_LEN(ops); i++)
        if (strcmp(ops[i].name, name) == 0) return &ops[i];
    return NULL;
}

/* The common shape of send and read is read without jansson
 * (proto/fastpath.c), from a copy in which it cuts out its strings;
 * anything else, or anything it doubts, is read by jansson. Both give the
 * same fb_req_t to everything below. */
static int parse(fb_conn_t *c, fb_req_t *req, const char *data, size_t len)
{
    fb_buf_t *copy = &c->loop->frame_copy;
    fb_buf_reset(copy);
    fb_buf_reserve(copy, len + 1);
    if (len) memcpy(copy->data, data, len); /* an empty message may come as NULL */
    copy->data[len] = 0;
    if (fb_req_parse_fast(req, copy->data, len)) {
        atomic_fetch_add_explicit(&c->loop->stats.fast_requests, 1, memory_order_relaxed);
        return 0;
    }
    return fb_req_parse(req, data, len);
}

void fb_ops_dispatch(fb_conn_t *c, const char *data, size_t len)
{
    fb_req_t req;
    atomic_fetch_add_explicit(&c->loop->stats.requests, 1, memory_order_relaxed);
    int rc = parse(c, &req, data, len);
    if (rc) goto reply;
    const fb_op_t *op = fb_op_find(req.op);
    if (!op) {
        snprintf(req.msg, sizeof req.msg, "unknown operation '%.64s'", req.op);
        rc = FB_EUNKNOWNOP;
    } else if (!c->hello && op->fn != fb_op_hello) {
        snprintf(req.msg, sizeof req.msg, "the first request must be hello");
        rc = FB_ESTATE;
    } else if (op->needs_auth && c->user_id <= 0) {
        req.msg[0] = 0;
        rc = FB_EUNAUTH;
    } else {
        req.msg[0] = 0;
        rc = op->fn(c, &req);
    }
reply:
    if (rc) fb_conn_reply_error(c, fb_req_id(&req), rc, req.msg);
    fb_req_free(&req);
}

fb_pending_t *fb_ops_submit(fb_conn_t *c, fb_reqid_t id, fb_wreq_t *r, fb_done_fn done, bool http)
{
    if (c->loop->stopped_reading) {
        /* Shutting down: the writer may be gone. Retryable: nothing stored. */
        fb_pending_t refused = {.conn = c, .id = id, .http = http};
        r->err = FB_EUNAVAIL;
        snprintf(r->err_msg, sizeof r->err_msg, "the node is shutting down, retry");
        if (c->state != CONN_CLOSED) done(c, &refused, r);
        fb_reqid_release(&refused.id);
        fb_wreq_free(r);
        return NULL;
    }
    fb_pending_t *p = fb_calloc(1, sizeof *p);
    p->conn = c;
    p->id = id;
    p->done = done;
    p->http = http;
    c->refs++;
    c->pending++;
    r->ctx = p;
    r->origin = c->loop->index;
    if (!r->user_id && c->user_id > 0) {
        r->user_id = c->user_id;
        r->device_id = c->device_id;
        snprintf(r->user_name, sizeof r->user_name, "%s", c->user_name);
    }
    fb_writer_submit(c->loop->srv->writer, r);
    return p; /* the reply can only come later, on this loop */
}

bool fb_ops_failed(fb_conn_t *c, fb_pending_t *p, fb_wreq_t *r)
{
    if (!r->err) return false;
    if (p->http)
        fb_http_respond_json(c, fb_http_status_of(r->err), fb_proto_error(NULL, r->err, r->err_msg));
    else
        fb_conn_reply_error(c, fb_reqid_json(&p->id), r->err, r->err_msg);
    return true;
}

void fb_ops_done_seq(fb_conn_t *c, fb_pending_t *p, fb_wreq_t *r)
{
    if (!fb_ops_failed(c, p, r))
        fb_conn_reply(c, fb_reqid_json(&p->id), json_pack("{s:I}", "seq", (json_int_t)r->r_seq));
}

void fb_ops_loop_batch(fb_loop_t *l, fb_wbatch_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        fb_wreq_t *r = b->reqs[i];
        if (r->origin == l->index && r->ctx) {
            fb_pending_t *p = r->ctx;
            r->ctx = NULL;
            fb_conn_t *c = p->conn;
            c->pending--;
            if (c->state != CONN_CLOSED) p->done(c, p, r);
            fb_reqid_release(&p->id);
            fb_free(p);
            fb_conn_unref(c);
        }
        for (fb_push_t *p = r->pushes; p; p = p->next) fb_hub_push(l, p);
    }
    fb_wbatch_release(b);
}
