/* The Firebreak C client library: one asynchronous client per account and
 * device on a libuv loop the caller owns, speaking protocol.md over WebSocket,
 * with failover across nodes, cursors, an outbox of unacknowledged sends and a
 * small blocking layer for tests and scripts. It never creates threads, keeps
 * no global state and shares nothing with the server but src/common.
 * SPDX-License-Identifier: MIT */
#ifndef FB_CLIENT_H
#define FB_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/fb.h"

/* Client-local error: a blocking helper ran out of time. Never sent by a
 * server; fb_client_strerror knows it, fb_err_message does not. */
#define FB_CLIENT_ETIMEDOUT (-1000)

/* Bounds. Every buffer a server can make the client grow is capped here. */
#define FB_CLIENT_MAX_REPLY_BYTES (16u << 20) /* larger frame: connection dropped */
#define FB_CLIENT_MAX_HTTP_BYTES 16384        /* upgrade response headers */
#define FB_CLIENT_OUTBOX_MAX 10000            /* unacked sends; more: FB_EBUSY */
#define FB_CLIENT_PENDING_MAX 100000          /* other requests queued or in flight */
#define FB_CLIENT_EVENT_QUEUE_MAX 100000      /* queued events; the oldest is dropped */
#define FB_CLIENT_BACKOFF_MIN_MS 100
#define FB_CLIENT_BACKOFF_MAX_MS 2000 /* reconnect delay cap, before jitter */
#define FB_CLIENT_CMID_LEN 32         /* hex characters of a generated cmid */

typedef struct fb_client fb_client_t;

typedef enum {
    FB_CLIENT_IDLE,          /* created, fb_client_start not called yet */
    FB_CLIENT_CONNECTING,    /* TCP, upgrade and hello to `addr` in progress */
    FB_CLIENT_CONNECTED,     /* hello done, not logged in (no token, no password) */
    FB_CLIENT_AUTHENTICATED, /* logged in; syncing from the cursors */
    FB_CLIENT_READY,         /* synced; the outbox was resent; requests flow */
    FB_CLIENT_DISCONNECTED,  /* lost `addr`; will reconnect to the next after a backoff */
    FB_CLIENT_STOPPED,       /* gave up for good (err says why: bad token, logged out...) */
    FB_CLIENT_CLOSED,        /* fb_client_close was called */
} fb_client_state_t;

/* A reply or a failure. err is 0 with `reply` the whole reply frame
 * ({"id":..,"ok":true,...}), or a negative FB_E* with `msg` a human message;
 * `reply` is then the server's error frame or NULL when the failure was
 * local. `reply` is borrowed: json_incref it to keep it. Requests that were
 * in flight when a connection dropped fail with FB_EUNAVAIL (retryable);
 * sends never do: they stay in the outbox and are resent. */
typedef void (*fb_client_reply_cb)(fb_client_t *c, int err, const char *msg, json_t *reply,
                                   void *ud);

/* Every pushed or synced event, in order and exactly once per room:
 *   {"event":"msg", room event fields...}   from pushes and from sync alike
 *   {"event":"read","room","user","seq"}
 *   {"event":"room","room","status","kind","name","owner","last_seq","members"}
 *                                            room state from a sync, before its events
 *   {"event":"logged_out"}
 * `ev` is borrowed. */
typedef void (*fb_client_event_cb)(fb_client_t *c, json_t *ev, void *ud);

/* `addr` is the node concerned ("127.0.0.1:8081"); `err` why a connection
 * was lost or the client stopped (0 otherwise). */
typedef void (*fb_client_state_cb)(fb_client_t *c, fb_client_state_t state, const char *addr,
                                   int err, void *ud);

typedef void (*fb_client_close_cb)(fb_client_t *c, void *ud);

typedef struct {
    const char *servers;    /* "127.0.0.1:8080,127.0.0.1:8081" (default 127.0.0.1:8080) */
    const char *state_path; /* JSON state file; NULL keeps everything in memory */
    const char *user;       /* with password: login when there is no (valid) token */
    const char *password;   /* copied, wiped on free; never logged or persisted */
    const char *token;      /* overrides the state file's */
    bool ignore_token;      /* log in afresh with user/password (a new device) */
    const char *device;     /* device name for login/register (default "device") */
    fb_client_event_cb on_event;
    fb_client_state_cb on_state;
    void *ud;
    bool queue_events;      /* also queue events for fb_client_next_event */
    bool raw_events;        /* no cursors, no gap sync: deliver pushes as they come */
    bool no_sync;           /* do not sync on connect (cursors still kept) */
    int connect_timeout_ms; /* TCP + upgrade + hello + auth per attempt (default 5000) */
    int keepalive_ms;       /* ping when idle; dead after 2x silence (default 15000; <0 off) */
} fb_client_opts_t;

/* ---- lifetime ---- */

/* Creates a client (loading opts->state_path when it exists). Does not
 * connect: call fb_client_start. 0, FB_EINVAL (bad servers list, state file
 * of another user) or FB_EIO/FB_EBADREQ (unreadable or corrupt state file).
 * Sets SIGPIPE to ignored when it is at its default (a write to a closed
 * socket must be an error, not death). */
int fb_client_new(uv_loop_t *loop, const fb_client_opts_t *opts, fb_client_t **out);
/* Connects to the first node, then keeps a connection, failing over. */
int fb_client_start(fb_client_t *c);
/* Drops the connection, fails pending requests (FB_EUNAVAIL; sends stay in
 * the persisted outbox), saves the state, closes every handle; `cb` runs
 * once all are closed. Then fb_client_free. */
void fb_client_close(fb_client_t *c, fb_client_close_cb cb);
void fb_client_free(fb_client_t *c);

/* ---- requests (all asynchronous; cb may be NULL) ----
 * While not connected, requests are queued and go out once the client is
 * READY (or CONNECTED for register/login/auth/ping). They return 0, or an
 * error without calling cb: FB_EINVAL, FB_EBUSY (bounds), FB_ESTATE (closed
 * or stopped). */

/* Any request object with "op"; the library adds the id. Steals `req`.
 * op "send" goes through the outbox as fb_client_send does. */
int fb_client_request(fb_client_t *c, json_t *req, fb_client_reply_cb cb, void *ud);
/* Same, with a handle for fb_client_cancel. */
int fb_client_request_h(fb_client_t *c, json_t *req, fb_client_reply_cb cb, void *ud,
                        uint64_t *handle);
/* Forget the callback of a request (a send stays in the outbox). */
void fb_client_cancel(fb_client_t *c, uint64_t handle);

int fb_client_register(fb_client_t *c, const char *user, const char *password, const char *device,
                       fb_client_reply_cb cb, void *ud);
int fb_client_login(fb_client_t *c, const char *user, const char *password, const char *device,
                    fb_client_reply_cb cb, void *ud);
int fb_client_auth(fb_client_t *c, const char *token, fb_client_reply_cb cb, void *ud);
/* device 0: this device (the token is forgotten on success). */
int fb_client_logout(fb_client_t *c, int64_t device, fb_client_reply_cb cb, void *ud);
int fb_client_devices(fb_client_t *c, fb_client_reply_cb cb, void *ud);
int fb_client_direct(fb_client_t *c, const char *user, fb_client_reply_cb cb, void *ud);
int fb_client_create_group(fb_client_t *c, const char *name, const char *const *members, size_t n,
                           fb_client_reply_cb cb, void *ud);
int fb_client_invite(fb_client_t *c, int64_t room, const char *const *users, size_t n,
                     fb_client_reply_cb cb, void *ud);
int fb_client_leave(fb_client_t *c, int64_t room, fb_client_reply_cb cb, void *ud);
int fb_client_kick(fb_client_t *c, int64_t room, const char *user, fb_client_reply_cb cb, void *ud);
int fb_client_rename(fb_client_t *c, int64_t room, const char *name, fb_client_reply_cb cb,
                     void *ud);
int fb_client_rooms(fb_client_t *c, fb_client_reply_cb cb, void *ud);
/* Also refreshes the member list and read markers kept for the room. */
int fb_client_room(fb_client_t *c, int64_t room, fb_client_reply_cb cb, void *ud);
/* Puts the message in the outbox (persisted first) and sends it; cb runs on
 * the ack ({room, seq, ts, duplicate}) or a non-retryable refusal. cmid NULL:
 * a random one. Retryable refusals and lost connections resend it with the
 * same cmid, in order. */
int fb_client_send(fb_client_t *c, int64_t room, const char *text, const char *cmid,
                   fb_client_reply_cb cb, void *ud);
int fb_client_read(fb_client_t *c, int64_t room, int64_t seq, fb_client_reply_cb cb, void *ud);
/* Syncs from the kept cursors until `more` is false, delivering the events;
 * cb gets {"events": n delivered}. (A raw {"op":"sync"} request through
 * fb_client_request is passed through untouched instead.) */
int fb_client_sync(fb_client_t *c, fb_client_reply_cb cb, void *ud);
/* before 0: from the newest; limit 0: the server's default. */
int fb_client_history(fb_client_t *c, int64_t room, int64_t before, int limit,
                      fb_client_reply_cb cb, void *ud);
int fb_client_ping(fb_client_t *c, fb_client_reply_cb cb, void *ud);

/* ---- blocking layer (tests, scripts). Runs the loop with UV_RUN_ONCE until
 * done or timeout_ms passes (<0: no limit); other clients on the loop keep
 * going. Never call these from a callback. ---- */

/* Starts if needed; waits for READY (or CONNECTED when there are no
 * credentials). 0; the stop reason (FB_EBADCRED, FB_EBADTOKEN, ...);
 * FB_EUNAVAIL if no node answered in time; FB_CLIENT_ETIMEDOUT if one did
 * but the handshake or sync did not finish. */
int fb_client_connect_sync(fb_client_t *c, int timeout_ms);
/* Steals req. 0 with *reply a new reference (json_decref it); a server
 * refusal returns its FB_E* with *reply the error frame (or NULL); or
 * FB_CLIENT_ETIMEDOUT. reply may be NULL. */
int fb_client_call_sync(fb_client_t *c, json_t *req, json_t **reply, int timeout_ms);
/* Next queued event (needs opts.queue_events): 0 with *ev a new reference,
 * or FB_CLIENT_ETIMEDOUT. */
int fb_client_next_event(fb_client_t *c, json_t **ev, int timeout_ms);
/* Runs the loop until done(arg) is true: 0 or FB_CLIENT_ETIMEDOUT. */
int fb_client_run_until(fb_client_t *c, bool (*done)(void *arg), void *arg, int timeout_ms);
/* Closes, runs the loop until closed, frees. */
void fb_client_free_sync(fb_client_t *c);

/* ---- what the client knows ---- */

typedef struct {
    int64_t id;
    const char *name;
    const char *role; /* "owner" | "member" */
    int64_t joined_seq;
    int64_t read_seq;
} fb_client_member_t;

typedef enum {
    FB_ROOM_UNKNOWN,
    FB_ROOM_MEMBER,
    FB_ROOM_LEFT,
    FB_ROOM_NOT_MEMBER,
} fb_client_room_status_t;

typedef struct {
    int64_t id;
    int64_t cursor; /* highest seq applied with nothing missing below */
    int64_t last_seq;
    int64_t owner;
    const char *kind; /* "group" | "direct" | "" */
    const char *name;
    fb_client_room_status_t status;
    size_t n_members;
    const fb_client_member_t *members;
} fb_client_room_t;

fb_client_state_t fb_client_state(const fb_client_t *c);
const char *fb_client_state_name(fb_client_state_t s);
const char *fb_client_addr(const fb_client_t *c); /* current or last node */
/* Its place in opts.servers, 1-based ("site 2"), and how many there are. */
int fb_client_site(const fb_client_t *c);
int fb_client_site_count(const fb_client_t *c);
int fb_client_stop_reason(const fb_client_t *c);  /* err of FB_CLIENT_STOPPED */
bool fb_client_ever_connected(const fb_client_t *c);
uv_loop_t *fb_client_loop(const fb_client_t *c);
void *fb_client_userdata(const fb_client_t *c);
int64_t fb_client_user_id(const fb_client_t *c);
const char *fb_client_user(const fb_client_t *c);
int64_t fb_client_device_id(const fb_client_t *c);
const char *fb_client_token(const fb_client_t *c); /* NULL when none */
int fb_client_max_text_bytes(const fb_client_t *c);

/* Rooms in id order; pointers stay valid until control returns to the loop. */
size_t fb_client_room_count(const fb_client_t *c);
const fb_client_room_t *fb_client_room_at(const fb_client_t *c, size_t i);
const fb_client_room_t *fb_client_room_get(const fb_client_t *c, int64_t room);
int64_t fb_client_cursor(const fb_client_t *c, int64_t room);
/* The KakaoTalk "1": members who joined at or before `seq`, are not `sender`
 * and whose read marker is below `seq`, from the kept member list. */
int fb_client_unread_for(const fb_client_t *c, int64_t room, int64_t seq, int64_t sender);

/* Unacknowledged sends, oldest first. */
size_t fb_client_outbox_count(const fb_client_t *c);
int fb_client_outbox_get(const fb_client_t *c, size_t i, int64_t *room, const char **cmid,
                         const char **text);

/* ---- helpers ---- */
/* A user given as {"id":5,"name":..} or as a bare id (the `user` of a `read`
 * event); 0 when neither. */
int64_t fb_client_json_user_id(const json_t *v);
void fb_client_gen_cmid(char out[FB_CLIENT_CMID_LEN + 1]);
const char *fb_client_strerror(int err);

#endif
