/* The node's internals shared by the server files: the server, its io loops
 * and their connections, and the op table. Only src/server includes this.
 * SPDX-License-Identifier: MIT */
#ifndef FB_SERVER_H
#define FB_SERVER_H

#include <http_parser.h>
#include <jansson.h>
#include <stdatomic.h>
#include <uv.h>
#include <wslay/wslay.h>

#include "chat/receipts.h"
#include "chat/writer.h"
#include "common/fb.h"
#include "common/map.h"
#include "common/mpsc.h"
#include "proto/proto.h"
#include "server/config.h"
#include "store/store.h"

typedef struct fb_server fb_server_t;
typedef struct fb_loop fb_loop_t;
typedef struct fb_conn fb_conn_t;

typedef struct {
    atomic_uint_fast64_t accepted, closed, requests, errors, pushes, push_bytes, slow_closes,
        bad_frames, http_requests, logins, login_failures, fast_requests;
} fb_loop_stats_t;

struct fb_loop {
    int index;
    fb_server_t *srv;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_tcp_t listener;
    int listen_fd;
    uv_async_t inbox_async; /* the writer's batches */
    fb_mpsc_t inbox;
    uv_async_t stop_async;
    uv_check_t flush_check; /* writes what this iteration queued, one write per connection */
    uv_timer_t sweep_timer; /* closes connections stuck in the handshake */
    uv_timer_t finish_timer; /* shutdown: waits for goodbyes to be written */
    uint64_t finish_deadline;
    bool stopped_reading, finishing;
    fb_store_t *reader;
    fb_ws_enc_t *enc;
    fb_map_t users;      /* user id -> first authenticated connection (list) */
    fb_conn_t *dirty;    /* connections with output to write */
    fb_conn_t *all;      /* every open connection */
    fb_conn_t *hs_head, *hs_tail; /* connections in handshake, oldest first */
    char readbuf[65536]; /* shared by every connection of the loop */
    fb_buf_t frame_copy; /* a request being read by the fast path (ops.c): up to max_frame_bytes */
    atomic_int open_conns;
    fb_loop_stats_t stats;
};

/* ---- the relay of other nodes' commits (relay.c) ---- */
typedef struct fb_relay fb_relay_t;
typedef struct {
    atomic_uint_fast64_t announcements, events, catchups, reconnects;
} fb_relay_stats_t;
/* Starts the relay thread (stores shared by several nodes only). */
int fb_relay_start(fb_server_t *s, fb_relay_t **out);
/* Stops it; the writer and the loops must still be running. */
void fb_relay_stop(fb_relay_t *r);
const fb_relay_stats_t *fb_relay_stats(const fb_relay_t *r);

struct fb_server {
    fb_config_t cfg;
    char origin[96]; /* this node's name in change announcements: unique per run */
    fb_relay_t *relay;
    char db_path[600];
    fb_store_config_t store_cfg;
    fb_store_t *wstore;
    fb_writer_t *writer;
    fb_ws_enc_t *writer_enc; /* used by the push encoders on the writer thread */
    fb_loop_t **loops;
    int n_loops;
    int port; /* bound port */
    int64_t started_ms;
    atomic_int phase; /* 0 running, 1 no new requests, 2 writer stopped: finish */
    uv_sem_t quiet;   /* posted by each loop once it stopped reading */
};

enum { CONN_HTTP, CONN_WS, CONN_CLOSED };

struct fb_conn {
    fb_loop_t *loop;
    uv_tcp_t tcp;
    int refs; /* the handle, plus each request in flight */
    int state;
    /* HTTP (until upgraded) */
    http_parser hp;
    fb_buf_t in;   /* unparsed bytes (HTTP only) */
    fb_buf_t url;
    fb_buf_t body;
    fb_buf_t hdr_field;
    char ws_key[64];
    bool hdr_upgrade, hdr_ws_version, last_was_value, http_busy, http_done, body_too_big, in_pump;
    int hdr_which;
    /* WebSocket */
    wslay_event_context_ptr ws; /* only while bytes are being received (conn.c) */
    const uint8_t *rptr; /* the read buffer being fed to wslay */
    size_t rlen;
    uint64_t ws_pending, ws_frame_bytes; /* bytes given to wslay not yet in whole frames */
    bool ws_in_msg;                      /* a fragmented message is half received */
    bool hello;
    bool in_handshake_list;
    int64_t accepted_ms;
    fb_conn_t *hs_next, *hs_prev;
    /* the authenticated device */
    int64_t user_id, device_id;
    char user_name[40];
    fb_conn_t *user_next, *user_prev;
    fb_conn_t *all_next, *all_prev;
    /* output: `out` gathers, `wbuf` is being written */
    fb_buf_t out;
    fb_buf_t wbuf;
    uv_write_t wreq;
    bool writing, dirty, closing_after_write;
    fb_conn_t *dirty_next;
    int pending; /* requests in flight (writer or thread pool) */
};

/* ---- connections (conn.c) ---- */
void fb_conn_accept(fb_loop_t *l);
void fb_conn_close(fb_conn_t *c);
void fb_conn_unref(fb_conn_t *c);
void fb_conn_ws_close(fb_conn_t *c, int code, const char *reason); /* close frame, then close */
/* Queues bytes already framed (a shared push frame) */
void fb_conn_write_raw(fb_conn_t *c, const char *p, size_t n);
void fb_conn_send_json(fb_conn_t *c, json_t *obj);         /* steals obj; WS frame */
void fb_conn_send_json_text(fb_conn_t *c, const char *json, size_t n); /* JSON text; WS frame */
void fb_conn_reply(fb_conn_t *c, json_t *id, json_t *fields); /* ok reply; steals fields (may be NULL) */
void fb_conn_reply_error(fb_conn_t *c, json_t *id, int err, const char *detail);
void fb_conn_flush_all(fb_loop_t *l);
void fb_conn_set_user(fb_conn_t *c, int64_t user_id, int64_t device_id, const char *name);
void fb_conn_handshake_done(fb_conn_t *c);
void fb_conn_http_resume(fb_conn_t *c);
/* HTTP answers (http.c) */
void fb_http_respond(fb_conn_t *c, int status, const char *ctype, const char *body, size_t n);
void fb_http_respond_json(fb_conn_t *c, int status, json_t *obj); /* steals obj */
void fb_http_handle(fb_conn_t *c); /* a complete non-upgrade request */
int fb_http_status_of(int err);

/* ---- operations (ops_*.c) ----
 * A handler gets a parsed request on an upgraded connection and either
 * replies at once or keeps the request going (writer, thread pool) and
 * replies later; it returns 0 or an error to reply with req->msg. */
typedef int (*fb_op_fn)(fb_conn_t *c, fb_req_t *req);
typedef struct {
    const char *name;
    fb_op_fn fn;
    bool needs_auth;
} fb_op_t;

const fb_op_t *fb_op_find(const char *name);
void fb_ops_dispatch(fb_conn_t *c, const char *data, size_t len);

/* A request waiting for the writer: replies via done() on the origin loop. */
typedef struct fb_pending fb_pending_t;
typedef void (*fb_done_fn)(fb_conn_t *c, fb_pending_t *p, fb_wreq_t *r);
struct fb_pending {
    fb_conn_t *conn;
    fb_reqid_t id; /* replies take it through fb_reqid_json */
    fb_done_fn done;
    bool http; /* reply as an HTTP response instead of a frame */
    char token[72];
};

/* Fills the caller fields of r and submits it with a pending reply, which
 * takes id over; NULL when the node is shutting down (then r was answered
 * and freed). */
fb_pending_t *fb_ops_submit(fb_conn_t *c, fb_reqid_t id, fb_wreq_t *r, fb_done_fn done, bool http);
void fb_ops_loop_batch(fb_loop_t *l, fb_wbatch_t *b);
/* Account ops callable from HTTP too: body parsed as a request. */
int fb_ops_login(fb_conn_t *c, fb_req_t *req, bool http);
int fb_ops_register(fb_conn_t *c, fb_req_t *req, bool http);

/* The op families (ops_account.c, ops_room.c, ops_message.c, ops_sync.c). */
int fb_op_hello(fb_conn_t *c, fb_req_t *req);
int fb_op_auth(fb_conn_t *c, fb_req_t *req);
int fb_op_logout(fb_conn_t *c, fb_req_t *req);
int fb_op_devices(fb_conn_t *c, fb_req_t *req);
int fb_op_ping(fb_conn_t *c, fb_req_t *req);
int fb_op_direct(fb_conn_t *c, fb_req_t *req);
int fb_op_create_group(fb_conn_t *c, fb_req_t *req);
int fb_op_invite(fb_conn_t *c, fb_req_t *req);
int fb_op_leave(fb_conn_t *c, fb_req_t *req);
int fb_op_kick(fb_conn_t *c, fb_req_t *req);
int fb_op_rename(fb_conn_t *c, fb_req_t *req);
int fb_op_rooms(fb_conn_t *c, fb_req_t *req);
int fb_op_room(fb_conn_t *c, fb_req_t *req);
int fb_op_send(fb_conn_t *c, fb_req_t *req);
int fb_op_read(fb_conn_t *c, fb_req_t *req);
int fb_op_sync(fb_conn_t *c, fb_req_t *req);
int fb_op_history(fb_conn_t *c, fb_req_t *req);
/* The fields of a send and of a read, read and checked: one copy for
 * requests parsed by jansson and by the fast path (tests/unit/test_proto.c
 * compares the two through these). 0 or an error with req->msg. */
typedef struct {
    int64_t room;
    const char *cmid, *text; /* borrowed from req */
    size_t text_len;
} fb_send_args_t;
int fb_ops_send_args(fb_req_t *req, size_t max_text_bytes, fb_send_args_t *a);
int fb_ops_read_args(fb_req_t *req, int64_t *room, int64_t *seq);
/* Replies r's error, or calls nothing and returns false when r succeeded. */
bool fb_ops_failed(fb_conn_t *c, fb_pending_t *p, fb_wreq_t *r);
/* done() of the ops whose reply is just {"seq": r_seq}. */
void fb_ops_done_seq(fb_conn_t *c, fb_pending_t *p, fb_wreq_t *r);

/* ---- fan-out (hub.c) ---- */
void fb_hub_add(fb_conn_t *c);
void fb_hub_remove(fb_conn_t *c);
void fb_hub_push(fb_loop_t *l, const fb_push_t *p);

/* ---- metrics (metrics.c) ---- */
void fb_metrics_render(fb_server_t *s, fb_buf_t *out);

/* ---- the server (server.c) ---- */
int fb_server_main(int argc, char **argv);
/* Push encoders given to the writer. */
void fb_server_encode_event(void *ud, const fb_event_t *ev, int64_t unread, fb_buf_t *frame);
void fb_server_encode_read(void *ud, int64_t room, int64_t user, const char *name, int64_t seq,
                           fb_buf_t *frame);

#endif
