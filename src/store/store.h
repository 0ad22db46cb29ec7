/* The one storage interface of Firebreak. Everything above it (the writer, the
 * read paths of the io loops, the admin tool) speaks only these functions and
 * never learns which backend is underneath; the backend is chosen once, at
 * open, from fb_store_config_t.kind. The store knows no protocol and no JSON.
 *
 * Connections: fb_store_open() gives the single write connection (only the
 * writer thread uses it); fb_store_open_reader() gives read-only connections,
 * one per io loop. A handle is used by one thread at a time.
 *
 * Invariants every backend keeps:
 *  - each room's events carry seq 1, 2, 3, ... with no gap: fb_store_event_append
 *    assigns last_seq + 1 and bumps rooms.last_seq in the same transaction;
 *  - (device, cmid) is unique over text events: appending a retried send
 *    stores nothing and returns FB_EEXIST (the transaction goes on); the
 *    original is then found with fb_store_event_by_cmid;
 *  - nothing is durable before fb_store_commit returns 0 (SQLite: WAL with
 *    synchronous=FULL, so the commit has been fsynced).
 * SPDX-License-Identifier: MIT */
#ifndef FB_STORE_H
#define FB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fb_store fb_store_t;

typedef struct {
    const char *kind;     /* "sqlite" | "postgres" */
    const char *path;     /* sqlite: database file */
    const char *conninfo; /* postgres: libpq string of the write connection; may name
                           * every site with target_session_attrs=read-write */
    const char *read_conninfo; /* postgres: readers (this site's server, primary or
                                * standby); NULL or "": conninfo */
    int cache_mib;        /* sqlite: page cache of each connection, MiB; 0: SQLite's 2 */
} fb_store_config_t;

enum { FB_ROOM_DIRECT = 1, FB_ROOM_GROUP = 2 };

/* Kinds of the events in a room's sequence. */
enum {
    FB_EV_TEXT = 1,   /* a message: actor sent text */
    FB_EV_CREATE = 2, /* room created by actor; text = room name (may be empty) */
    FB_EV_JOIN = 3,   /* target joined, added by actor (actor == target: joined by itself) */
    FB_EV_LEAVE = 4,  /* actor left */
    FB_EV_KICK = 5,   /* actor removed target */
    FB_EV_RENAME = 6, /* actor renamed the room to text */
};

enum { FB_ROLE_MEMBER = 0, FB_ROLE_OWNER = 1 };

typedef struct {
    int64_t id;
    char *name;
    char *pwhash; /* argon2id string from crypto_pwhash_str */
    int64_t created_ms;
} fb_user_t;

typedef struct {
    int64_t id;
    int64_t user_id;
    char *name;
    int64_t created_ms;
    int64_t expires_ms;
    bool revoked;
} fb_device_t;

typedef struct {
    int64_t id;
    int kind; /* FB_ROOM_* */
    char *name;
    int64_t owner_id; /* 0 when nobody is left */
    int64_t last_seq;
    int64_t created_ms;
} fb_room_t;

typedef struct {
    int64_t room_id;
    int64_t user_id;
    char *user_name;
    int role;           /* FB_ROLE_* */
    int64_t joined_seq; /* first seq this member may see (its join or create event) */
    int64_t left_seq;   /* 0 while a member; else the seq of its leave/kick event */
    int64_t read_seq;   /* highest seq marked read by any of the user's devices */
} fb_member_t;

typedef struct {
    int64_t room_id;
    int64_t seq;
    int64_t ts_ms;
    int kind;              /* FB_EV_* */
    int64_t actor_id;      /* sender, or who did it */
    int64_t actor_device;  /* text: the sending device; else 0 */
    int64_t target_id;     /* join / kick: whom; else 0 */
    char *cmid;            /* text: client message id; else NULL */
    char *text;            /* text: body; create / rename: room name; else NULL */
    char *actor_name;      /* filled by reads; NULL from writes */
    char *target_name;     /* filled by reads when target_id != 0 */
} fb_event_t;

typedef struct {
    fb_room_t room;
    fb_member_t me;
    int64_t unread;      /* my unread count: text events by others after me.read_seq */
    int member_count;    /* current members */
    bool has_last;
    fb_event_t last;     /* the room's last text event that I may see */
} fb_room_summary_t;

/* ---- lifetime ---- */
int fb_store_open(const fb_store_config_t *cfg, fb_store_t **out); /* creates + migrates */
int fb_store_open_reader(const fb_store_config_t *cfg, fb_store_t **out);
void fb_store_close(fb_store_t *s);
int fb_store_schema_version(fb_store_t *s, int *version);

/* ---- transactions ----
 * begin/commit/rollback; savepoints nest inside a transaction so that the
 * writer can undo one request of a group commit and keep the others. */
int fb_store_begin(fb_store_t *s);
int fb_store_commit(fb_store_t *s);
int fb_store_rollback(fb_store_t *s);
int fb_store_savepoint(fb_store_t *s);
int fb_store_release(fb_store_t *s);
int fb_store_rollback_to(fb_store_t *s);

/* ---- accounts ---- */
int fb_store_user_create(fb_store_t *s, const char *name, const char *pwhash, int64_t now_ms,
                         int64_t *user_id); /* FB_ENAMETAKEN */
int fb_store_user_by_name(fb_store_t *s, const char *name, fb_user_t *out); /* FB_ENOTFOUND */
int fb_store_user_by_id(fb_store_t *s, int64_t id, fb_user_t *out);        /* FB_ENOTFOUND */
int fb_store_device_create(fb_store_t *s, int64_t user_id, const char *name,
                           const uint8_t token_hash[32], int64_t now_ms, int64_t expires_ms,
                           int64_t *device_id);
int fb_store_device_by_token(fb_store_t *s, const uint8_t token_hash[32],
                             fb_device_t *out); /* FB_ENOTFOUND */
int fb_store_device_revoke(fb_store_t *s, int64_t user_id,
                           int64_t device_id); /* FB_ENOTFOUND unless the user's live device */
int fb_store_devices_list(fb_store_t *s, int64_t user_id, fb_device_t **out, size_t *n);

/* ---- rooms ---- */
int fb_store_room_create(fb_store_t *s, int kind, const char *name, int64_t owner_id,
                         const char *direct_key, int64_t now_ms, int64_t *room_id);
int fb_store_room_by_direct_key(fb_store_t *s, const char *key, int64_t *room_id); /* FB_ENOTFOUND */
int fb_store_room_get(fb_store_t *s, int64_t room_id, fb_room_t *out);             /* FB_ENOTFOUND */
int fb_store_room_set_name(fb_store_t *s, int64_t room_id, const char *name);
int fb_store_room_set_owner(fb_store_t *s, int64_t room_id, int64_t owner_id);

/* ---- events ---- */
/* Assigns ev->seq (last_seq + 1) and stores ev. ev->ts_ms is set by the caller.
 * FB_EEXIST: the device already sent ev->cmid; nothing was stored. */
int fb_store_event_append(fb_store_t *s, fb_event_t *ev);
/* The text event that device sent with cmid, or FB_ENOTFOUND. */
int fb_store_event_by_cmid(fb_store_t *s, int64_t device_id, const char *cmid, fb_event_t *out);
/* Events with after < seq <= upto (upto 0: no upper bound), ascending, at most limit. */
int fb_store_events_after(fb_store_t *s, int64_t room_id, int64_t after, int64_t upto,
                          int limit, fb_event_t **out, size_t *n);
/* Events with floor <= seq < before, the newest `limit` of them, returned ascending. */
int fb_store_events_before(fb_store_t *s, int64_t room_id, int64_t before, int64_t floor,
                           int limit, fb_event_t **out, size_t *n);

/* ---- members ---- */
/* Adds user, or re-adds a former member: joined_seq = joined, left_seq = 0,
 * read_seq = max(old read_seq, joined - 1). */
int fb_store_member_add(fb_store_t *s, int64_t room_id, int64_t user_id, int role, int64_t joined);
int fb_store_member_remove(fb_store_t *s, int64_t room_id, int64_t user_id, int64_t left_seq);
int fb_store_member_set_role(fb_store_t *s, int64_t room_id, int64_t user_id, int role);
/* Any membership row, current or former; FB_ENOTFOUND if never a member. */
int fb_store_member_get(fb_store_t *s, int64_t room_id, int64_t user_id, fb_member_t *out);
/* Current members (left_seq = 0) ordered by joined_seq then user id, names filled. */
int fb_store_members_list(fb_store_t *s, int64_t room_id, fb_member_t **out, size_t *n);
/* read_seq = max(read_seq, seq); *advanced tells whether it moved. */
int fb_store_read_marker_set(fb_store_t *s, int64_t room_id, int64_t user_id, int64_t seq,
                             bool *advanced);
/* Every room where user is a current member, most recently active first. */
int fb_store_rooms_for_user(fb_store_t *s, int64_t user_id, fb_room_summary_t **out, size_t *n);

/* ---- sends in bulk ----
 * One call for a run of consecutive sends of a group commit, so that a
 * networked backend carries the whole run in one round trip and an embedded
 * one writes each room's last_seq and each sender's marker once per call
 * instead of once per item. Called outside a transaction, the call is one
 * transaction of its own. For each item,
 * in order:
 *  - the device already sent cmid: err = FB_EEXIST, nothing stored, room_id /
 *    seq / ts_ms become the original's (whatever room the retry named);
 *  - else actor is not a current member of room_id (or there is no such
 *    room): err = FB_ENOTMEMBER, nothing stored;
 *  - else the text event is appended exactly as fb_store_event_append would,
 *    the actor's read marker is raised to its seq, err = 0, seq set and
 *    old_read_seq = the actor's read_seq before this item.
 * Returns 0 when every item got its err (the transaction goes on), or an
 * error of the whole call (then the transaction must be rolled back).
 * The membership check is the store's own, inside the transaction, so it is
 * authoritative even when several nodes write the same rooms. */
typedef struct {
    /* in */
    int64_t room_id, actor_id, actor_device, ts_ms;
    const char *cmid;
    const char *text;
    /* out */
    int err;
    int64_t seq;
    int64_t old_read_seq;
} fb_send_t;
int fb_store_send_many(fb_store_t *s, fb_send_t *items, size_t n);

/* ---- the change feed: several nodes on one shared store ----
 * A node announces, inside its transaction, the seq range each room got
 * (and the read markers that moved, and the devices logged out);
 * the announcement reaches the other nodes' feeds if and only if the
 * transaction commits (PostgreSQL: NOTIFY). SQLite has one node only:
 * announce is a no-op and a feed cannot be opened (FB_EINVAL). */
enum {
    FB_CHANGE_EVENTS = 0, /* room_id got the events from_seq..to_seq */
    FB_CHANGE_READ = 1,   /* user_id's read marker in room_id moved to to_seq */
    FB_CHANGE_LOGOUT = 2, /* user_id's device_id was logged out */
};
typedef struct {
    int64_t room_id, from_seq, to_seq;
    int kind; /* FB_CHANGE_*; 0 (events) when left out of an initializer */
    int64_t user_id, device_id;
} fb_change_t;
int fb_store_announce(fb_store_t *s, const char *origin, const fb_change_t *changes, size_t n);

typedef struct fb_feed fb_feed_t;
/* Opens a listening connection to the primary (cfg->conninfo). */
int fb_feed_open(const fb_store_config_t *cfg, fb_feed_t **out);
void fb_feed_close(fb_feed_t *f);
/* The socket to poll for readability; -1 while disconnected. */
int fb_feed_fd(fb_feed_t *f);
/* Reconnects if needed (0 once listening again, FB_EUNAVAIL if not yet),
 * then reads what arrived and calls cb once per announcement, the node's
 * own included (the caller filters by origin). *reconnected is set when the
 * connection was (re)made: announcements may have been missed, and the
 * caller catches up. */
typedef void (*fb_feed_cb)(void *ud, const char *origin, const fb_change_t *changes, size_t n);
int fb_feed_poll(fb_feed_t *f, fb_feed_cb cb, void *ud, bool *reconnected);
/* The feed's connection as a read handle on the primary, for the catch-up
 * and for fetching announced events (fb_store_events_after, members_list,
 * rooms_since). Owned by the feed; do not close. */
fb_store_t *fb_feed_store(fb_feed_t *f);
/* Rooms whose last_seq is above what the caller knows (events changes
 * only): for each room in
 * known[0..n) (room_id with to_seq = the highest seq this node has seen),
 * sets from_seq = known to_seq and to_seq = the store's last_seq; rooms that
 * did not move get from_seq == to_seq. */
int fb_store_rooms_last_seq(fb_store_t *s, fb_change_t *known, size_t n);

/* ---- freeing what reads return ---- */
void fb_user_clear(fb_user_t *u);
void fb_device_clear(fb_device_t *d);
void fb_room_clear(fb_room_t *r);
void fb_member_clear(fb_member_t *m);
void fb_event_clear(fb_event_t *e);
void fb_events_free(fb_event_t *evs, size_t n);
void fb_members_free(fb_member_t *ms, size_t n);
void fb_devices_free(fb_device_t *ds, size_t n);
void fb_room_summaries_free(fb_room_summary_t *rs, size_t n);

#endif
