/* The writer: the one thread that owns the store's write connection. io loops
 * submit write requests (sends, room changes, read markers, accounts); the
 * writer commits whatever is queued as one transaction (group commit) and
 * only then hands every result, and the pushes it produced, back to the io
 * loops. It knows no sockets and no JSON: pushes are encoded by callbacks
 * the server supplies.
 * SPDX-License-Identifier: MIT */
#ifndef FB_WRITER_H
#define FB_WRITER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/fb.h"
#include "common/mpsc.h"
#include "store/store.h"

enum {
    FB_W_REGISTER = 1, /* name, pwhash, token_hash, dev_name -> r_user, r_device */
    FB_W_LOGIN,        /* user_id, token_hash, dev_name -> r_device */
    FB_W_LOGOUT,       /* user_id, arg_device */
    FB_W_DIRECT,       /* name (the other user) -> r_room, r_seq (its last seq; 0: unchanged) */
    FB_W_GROUP,        /* name (room), names -> r_room, r_seq (its last seq) */
    FB_W_INVITE,       /* room_id, names -> r_seq (0: nobody new) */
    FB_W_LEAVE,        /* room_id -> r_seq */
    FB_W_KICK,         /* room_id, name -> r_seq */
    FB_W_RENAME,       /* room_id, name -> r_seq */
    FB_W_SEND,         /* room_id, cmid, text -> r_room, r_seq, r_ts, r_duplicate */
    FB_W_READ,         /* room_id, seq -> r_seq (the marker now) */
    FB_W_FORGET,       /* room_id: another node changed its members; no reply */
};

/* Current members of a room, sorted by user id; shared read-only by the
 * pushes that name it, freed by the last fb_snap_release. */
typedef struct {
    atomic_int refs;
    size_t n;
    int64_t ids[];
} fb_snap_t;

/* A snapshot of n ids (to be filled, sorted), refs 1. */
fb_snap_t *fb_snap_alloc(size_t n);
void fb_snap_release(fb_snap_t *s);

enum { FB_PUSH_FRAME = 1, FB_PUSH_LOGOUT = 2 };

/* One fan-out item of a committed request. */
typedef struct fb_push {
    struct fb_push *next;
    int type;
    fb_snap_t *members; /* FRAME: recipients (all their connections) */
    int64_t extra;      /* FRAME: one more recipient (who left / was kicked), or 0 */
    fb_buf_t frame;     /* FRAME: the WebSocket frame, encoded once for everyone */
    int64_t user_id;    /* LOGOUT: close this user's connections ... */
    int64_t device_id;  /* ... of this device */
} fb_push_t;

typedef struct fb_wreq {
    fb_mpsc_node_t node;
    int op;
    int origin; /* index of the sink (io loop) that gets the reply */
    void *ctx;  /* that loop's context; the writer never touches it */
    /* the caller */
    int64_t user_id, device_id;
    char user_name[40];
    /* arguments (owned: freed with the request) */
    int64_t room_id, seq, arg_device, expires_ms;
    char *name;
    char *dev_name;
    char *text;
    char *pwhash;
    char cmid[72];
    uint8_t token_hash[32];
    char **names;
    size_t n_names;
    /* results */
    int err;
    char err_msg[160];
    int64_t r_user, r_device, r_room, r_seq, r_ts;
    bool r_duplicate;
    fb_push_t *pushes; /* in order */
} fb_wreq_t;

fb_wreq_t *fb_wreq_new(int op);
void fb_wreq_free(fb_wreq_t *r);

/* What a commit hands to every sink: all requests of the batch in commit
 * order. Each sink pops its own node, walks the batch (replying to the
 * requests it originated, fanning out every push to its own connections)
 * and releases it; the last release frees everything. */
typedef struct {
    atomic_int refs;
    size_t n;
    fb_wreq_t **reqs;
    fb_mpsc_node_t nodes[];
} fb_wbatch_t;

fb_wbatch_t *fb_wbatch_of(fb_mpsc_node_t *node, int sink_index);
void fb_wbatch_release(fb_wbatch_t *b);

typedef struct {
    /* Called on the writer thread: queue node for the sink and wake it. */
    void (*deliver)(void *ud, fb_mpsc_node_t *node);
    void *ud;
} fb_wsink_t;

typedef struct {
    int64_t max_room_members;
    int64_t batch_max;
    /* Push encoders, called on the writer thread (the server supplies them). */
    void (*encode_event)(void *ud, const fb_event_t *ev, int64_t unread, fb_buf_t *frame);
    void (*encode_read)(void *ud, int64_t room, int64_t user, const char *user_name, int64_t seq,
                        fb_buf_t *frame);
    void *encode_ud;
    /* This node's name in change announcements (fb_store_announce); NULL:
     * announce nothing (a node alone on its store). */
    const char *origin;
    /* How long a batch waits for the store to come back (a failover) before
     * its requests are refused as unavailable. 0: not at all. */
    int64_t hold_ms;
} fb_writer_opts_t;

typedef struct {
    atomic_uint_fast64_t commits, commit_failures, requests, events, batch_max_seen;
    atomic_uint_fast64_t commit_ns_total;
    atomic_uint_fast64_t holds, hold_ns_total; /* waits for the store to come back */
    atomic_bool store_down;                    /* waiting for the store right now */
} fb_writer_stats_t;

typedef struct fb_writer fb_writer_t;

int fb_writer_start(fb_store_t *store, const fb_writer_opts_t *opts, const fb_wsink_t *sinks,
                    int n_sinks, fb_writer_t **out);
/* Any thread. The request belongs to the writer until it comes back in a batch. */
void fb_writer_submit(fb_writer_t *w, fb_wreq_t *r);
/* Commits what is queued, stops the thread and frees the writer. Sinks must
 * still accept deliveries until this returns. */
void fb_writer_stop(fb_writer_t *w);
/* Any thread: hands pushes made elsewhere (another node's messages, heard
 * through the change feed) to every io loop, as a batch of requests that
 * nobody waits a reply for (origin -1). Takes the requests. */
void fb_writer_deliver(fb_writer_t *w, fb_wreq_t **reqs, size_t n);
const fb_writer_stats_t *fb_writer_stats(const fb_writer_t *w);

#endif
