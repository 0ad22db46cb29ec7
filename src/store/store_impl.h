/* The seam between the backend-neutral store (store.c) and its backends: one
 * table of operations per backend, picked once at open. Only files under
 * src/store/ may include this; nothing above the store may learn a backend.
 * SPDX-License-Identifier: MIT */
#ifndef FB_STORE_IMPL_H
#define FB_STORE_IMPL_H

#include "store/store.h"

typedef struct fb_store_ops fb_store_ops_t;

/* Every backend's handle starts with this member, so that store.c can
 * dispatch on a handle without knowing the backend's own type. */
struct fb_store {
    const fb_store_ops_t *ops;
};

/* Likewise for a change feed (only backends shared by several nodes). */
struct fb_feed {
    const fb_store_ops_t *ops;
};

/* One entry per fb_store_* function of store.h, with the same contract.
 * store.c has already checked the arguments it can check without a backend
 * (non-NULL outputs, non-negative limits). */
struct fb_store_ops {
    const char *kind; /* matched against fb_store_config_t.kind */

    /* reader: a read-only connection (no migrations). Sets (*out)->ops. */
    int (*open)(const fb_store_config_t *cfg, bool reader, fb_store_t **out);
    void (*close)(fb_store_t *s);
    int (*schema_version)(fb_store_t *s, int *version);

    int (*begin)(fb_store_t *s);
    int (*commit)(fb_store_t *s);
    int (*rollback)(fb_store_t *s);
    int (*savepoint)(fb_store_t *s);
    int (*release)(fb_store_t *s);
    int (*rollback_to)(fb_store_t *s);

    int (*user_create)(fb_store_t *s, const char *name, const char *pwhash, int64_t now_ms,
                       int64_t *user_id);
    int (*user_by_name)(fb_store_t *s, const char *name, fb_user_t *out);
    int (*user_by_id)(fb_store_t *s, int64_t id, fb_user_t *out);
    int (*device_create)(fb_store_t *s, int64_t user_id, const char *name,
                         const uint8_t token_hash[32], int64_t now_ms, int64_t expires_ms,
                         int64_t *device_id);
    int (*device_by_token)(fb_store_t *s, const uint8_t token_hash[32], fb_device_t *out);
    int (*device_revoke)(fb_store_t *s, int64_t user_id, int64_t device_id);
    int (*devices_list)(fb_store_t *s, int64_t user_id, fb_device_t **out, size_t *n);

    int (*room_create)(fb_store_t *s, int kind, const char *name, int64_t owner_id,
                       const char *direct_key, int64_t now_ms, int64_t *room_id);
    int (*room_by_direct_key)(fb_store_t *s, const char *key, int64_t *room_id);
    int (*room_get)(fb_store_t *s, int64_t room_id, fb_room_t *out);
    int (*room_set_name)(fb_store_t *s, int64_t room_id, const char *name);
    int (*room_set_owner)(fb_store_t *s, int64_t room_id, int64_t owner_id);

    int (*event_append)(fb_store_t *s, fb_event_t *ev);
    int (*event_by_cmid)(fb_store_t *s, int64_t device_id, const char *cmid, fb_event_t *out);
    int (*events_after)(fb_store_t *s, int64_t room_id, int64_t after, int64_t upto, int limit,
                        fb_event_t **out, size_t *n);
    int (*events_before)(fb_store_t *s, int64_t room_id, int64_t before, int64_t floor, int limit,
                         fb_event_t **out, size_t *n);

    int (*member_add)(fb_store_t *s, int64_t room_id, int64_t user_id, int role, int64_t joined);
    int (*member_remove)(fb_store_t *s, int64_t room_id, int64_t user_id, int64_t left_seq);
    int (*member_set_role)(fb_store_t *s, int64_t room_id, int64_t user_id, int role);
    int (*member_get)(fb_store_t *s, int64_t room_id, int64_t user_id, fb_member_t *out);
    int (*members_list)(fb_store_t *s, int64_t room_id, fb_member_t **out, size_t *n);
    int (*read_marker_set)(fb_store_t *s, int64_t room_id, int64_t user_id, int64_t seq,
                           bool *advanced);
    int (*rooms_for_user)(fb_store_t *s, int64_t user_id, fb_room_summary_t **out, size_t *n);

    /* A run of sends as store.h defines fb_store_send_many; each backend does
     * it its own way (one round trip on PostgreSQL, one statement per room
     * and per sender on SQLite). items[i].err, seq and old_read_seq are
     * zeroed by store.c before the call. */
    int (*send_many)(fb_store_t *s, fb_send_t *items, size_t n);
    /* Optional: NULL makes announce a no-op (a store with one node only).
     * origin has been checked: 1..64 bytes, no space or control character. */
    int (*announce)(fb_store_t *s, const char *origin, const fb_change_t *changes, size_t n);
    int (*rooms_last_seq)(fb_store_t *s, fb_change_t *known, size_t n);

    /* Optional, all or none: NULL feed_open gives FB_EINVAL. */
    int (*feed_open)(const fb_store_config_t *cfg, fb_feed_t **out);
    void (*feed_close)(fb_feed_t *f);
    int (*feed_fd)(fb_feed_t *f);
    int (*feed_poll)(fb_feed_t *f, fb_feed_cb cb, void *ud, bool *reconnected);
    fb_store_t *(*feed_store)(fb_feed_t *f);
};

/* Whether a change is one fb_store_announce sends (ids > 0, seqs >= 0, a
 * range in order): what a feed reads back is held to the same rule. */
bool fb_change_valid(const fb_change_t *c);

extern const fb_store_ops_t fb_store_sqlite_ops;
extern const fb_store_ops_t fb_store_pg_ops;

#endif
