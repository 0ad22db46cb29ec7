/* What a client remembers between events and between runs: identity, per-room
 * cursors, members and read markers, and the outbox of unacknowledged sends,
 * with its state file. Pure data: it must never touch the network or a loop,
 * so that unit tests can drive it alone.
 * SPDX-License-Identifier: MIT */
#ifndef FB_CLIENT_STATE_H
#define FB_CLIENT_STATE_H

#include "client/client.h"

typedef struct {
    fb_client_room_t r; /* r.members points into an array of cap_members */
    size_t cap_members;
} fb_croom_t;

/* An unacknowledged send. room, cmid and text are persisted; the rest lives
 * only as long as the process. */
typedef struct fb_cout {
    struct fb_cout *prev, *next;
    int64_t room;
    char *cmid;
    char *text;
    uint64_t handle;
    fb_client_reply_cb cb;
    void *ud;
    uint64_t req_id;  /* in flight on the current connection under this id; 0: not sent */
    int64_t retry_at; /* after a retryable refusal: not before this (uv_now ms) */
    int retries;
} fb_cout_t;

typedef struct {
    char *user;
    char *token;
    char *device;
    int64_t user_id;
    int64_t device_id;
    fb_croom_t *rooms; /* sorted by id */
    size_t n_rooms, cap_rooms;
    fb_cout_t *out_head, *out_tail;
    size_t n_out;
} fb_cstate_t;

/* What to do with a pushed room event. */
enum { FB_CSTATE_APPLY, FB_CSTATE_DUP, FB_CSTATE_GAP };

void fb_cstate_init(fb_cstate_t *st);
void fb_cstate_free(fb_cstate_t *st);
void fb_cstate_set_str(char **field, const char *v); /* copy or clear */

/* State file. load: 0, FB_ENOTFOUND (no file: nothing loaded), FB_EIO,
 * FB_EBADREQ (not a state file). save: temp file, fsync, rename, fsync of
 * the directory; mode 0600 (it holds the token). */
int fb_cstate_load(fb_cstate_t *st, const char *path);
int fb_cstate_save(const fb_cstate_t *st, const char *path);
json_t *fb_cstate_to_json(const fb_cstate_t *st);
int fb_cstate_from_json(fb_cstate_t *st, const json_t *j);

fb_croom_t *fb_cstate_room(fb_cstate_t *st, int64_t id, bool create);
const fb_croom_t *fb_cstate_room_c(const fb_cstate_t *st, int64_t id);
int64_t fb_cstate_cursor(const fb_cstate_t *st, int64_t room);

/* Push rule of protocol.md: seq == cursor+1 apply, seq <= cursor duplicate,
 * else a gap to sync. */
int fb_cstate_push_verdict(const fb_cstate_t *st, int64_t room, int64_t seq);
/* Applies a room event (from a push judged APPLY, or from a sync, where
 * visibility may skip seqs): moves the cursor, keeps members, owner, name
 * and my own status. false when seq <= cursor (nothing changed). */
bool fb_cstate_apply_event(fb_cstate_t *st, const json_t *ev);
/* A read marker moved (never backwards). */
void fb_cstate_apply_read(fb_cstate_t *st, int64_t room, int64_t user, int64_t seq);
/* Replaces the member list from a `room` reply or a sync entry, keeping the
 * higher of the old and new read markers. */
void fb_cstate_set_members(fb_cstate_t *st, int64_t room, const json_t *members);
/* Room metadata of a sync entry (status, kind, name, owner, last_seq,
 * members). Does not touch the cursor. */
void fb_cstate_apply_room_meta(fb_cstate_t *st, const json_t *entry);
/* Room summary of `direct`/`create_group`/`room`/`rooms` replies. */
void fb_cstate_apply_summary(fb_cstate_t *st, const json_t *summary);
int fb_cstate_unread_for(const fb_cstate_t *st, int64_t room, int64_t seq, int64_t sender);
/* {"<room>": cursor} of every room worth asking about. */
json_t *fb_cstate_cursors(const fb_cstate_t *st);

fb_cout_t *fb_cstate_outbox_add(fb_cstate_t *st, int64_t room, const char *cmid, const char *text);
fb_cout_t *fb_cstate_outbox_find(const fb_cstate_t *st, const char *cmid);
void fb_cstate_outbox_remove(fb_cstate_t *st, fb_cout_t *o);

/* "h:p,h:p" -> normalized "host:port" strings (port defaults to 8080; IPv6
 * in brackets). 0 or FB_EINVAL. */
int fb_client_addrs_parse(const char *csv, char ***out, size_t *n);
void fb_client_addrs_free(char **addrs, size_t n);
/* "host:port" -> host (brackets removed) and port. 0 or FB_EINVAL. */
int fb_client_addr_split(const char *addr, char *host, size_t hostlen, int *port);

/* Protocol forms the client checks before sending. */
bool fb_client_cmid_valid(const char *cmid);

#endif
