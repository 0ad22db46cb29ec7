/* What the files of the PostgreSQL backend share (store_pg.c: connections,
 * schema, every store op; store_pg_feed.c: announcements and the change
 * feed). Only src/store/store_pg*.c may include this.
 * SPDX-License-Identifier: MIT */
#ifndef FB_STORE_PG_H
#define FB_STORE_PG_H

#include <libpq-fe.h>

#include "common/fb.h"
#include "store/store_impl.h"

/* The channel every node LISTENs on and NOTIFYs to. */
#define FB_PG_CHANNEL "firebreak"

/* Prepared statements of one connection (see store_pg.c for the SQL). */
enum {
    FB_PG_ST_SCHEMA_VERSION,
    FB_PG_ST_USER_INSERT,
    FB_PG_ST_USER_BY_NAME,
    FB_PG_ST_USER_BY_ID,
    FB_PG_ST_DEVICE_INSERT,
    FB_PG_ST_DEVICE_BY_TOKEN,
    FB_PG_ST_DEVICE_REVOKE,
    FB_PG_ST_DEVICES_LIST,
    FB_PG_ST_ROOM_INSERT,
    FB_PG_ST_ROOM_BY_DIRECT_KEY,
    FB_PG_ST_ROOM_GET,
    FB_PG_ST_ROOM_SET_NAME,
    FB_PG_ST_ROOM_SET_OWNER,
    FB_PG_ST_ROOMS_LAST_SEQ,
    FB_PG_ST_EVENT_APPEND,
    FB_PG_ST_EVENT_BY_CMID,
    FB_PG_ST_EVENTS_AFTER,
    FB_PG_ST_EVENTS_BEFORE,
    FB_PG_ST_MEMBER_ADD,
    FB_PG_ST_MEMBER_REMOVE,
    FB_PG_ST_MEMBER_SET_ROLE,
    FB_PG_ST_MEMBER_GET,
    FB_PG_ST_MEMBERS_LIST,
    FB_PG_ST_READ_MARKER,
    FB_PG_ST_ROOMS_FOR_USER,
    FB_PG_ST_SEND_MANY,
    FB_PG_ST_ANNOUNCE,
    FB_PG_ST_COUNT
};

typedef enum {
    FB_PG_WRITER, /* the write connection: migrates, never read-only */
    FB_PG_READER, /* read-only session on read_conninfo */
    FB_PG_FEED,   /* read-only session on conninfo that LISTENs */
} fb_pg_role_t;

typedef struct {
    fb_store_t base; /* first: store.c sees only this */
    PGconn *conn;    /* NULL while disconnected */
    char *conninfo;  /* never logged: it may hold a password */
    fb_pg_role_t role;
    bool broken;  /* connection lost: FB_EUNAVAIL until it is made again */
    bool in_tx;   /* between begin and commit/rollback, even if broken */
    bool tx_sent; /* the transaction's BEGIN has gone to the server */
    /* The writer's transaction control (BEGIN, SAVEPOINT, RELEASE, ROLLBACK
     * TO) waits here and goes out in one pipeline with the next statement
     * or the COMMIT: a request costs the round trips of its own statements
     * only. Our own constant SQL strings. */
    const char **pending;
    size_t n_pending, cap_pending;
    bool reconnected; /* a connection was made since the feed last looked */
    bool standby;     /* the server was in recovery when we connected */
    bool cut_off;     /* reader: its standby was not streaming at the last look */
    uint64_t looked_ms; /* reader: when the standby's replication was last looked at */
    int sp_depth;     /* open savepoints */
    bool warned;      /* a WARNING arrived since the flag was cleared */
    char warning[256];
    bool prepared[FB_PG_ST_COUNT];
    /* A conninfo naming several hosts is tried host by host (store_pg.c,
     * fb_pg_connect): one that timed out is passed over for a while. */
    int n_hosts; /* 0: not looked at yet; 1: one host, libpq alone */
    char **host, **hostaddr, **port; /* per host; NULL: the conninfo's own */
    uint64_t *skip_until_ms;
    uint32_t *pass_over_ms; /* the host's current pause; 0 once it answers */
} fb_pg_store_t;

/* Parameters of one statement: ints and strings in text format, byte
 * strings in binary. Strings are borrowed, not copied. */
#define FB_PG_PARAMS_MAX 8
typedef struct {
    int n;
    const char *v[FB_PG_PARAMS_MAX];
    int len[FB_PG_PARAMS_MAX];
    int fmt[FB_PG_PARAMS_MAX];
    char num[FB_PG_PARAMS_MAX][24];
} fb_pg_params_t;

void fb_pg_p_int(fb_pg_params_t *p, int64_t x);
void fb_pg_p_str(fb_pg_params_t *p, const char *s); /* NULL: SQL NULL */

/* Runs prepared statement id (preparing it on first use on this
 * connection). Returns its result when it succeeded; else NULL with *err
 * set and the failure logged. */
PGresult *fb_pg_run(fb_pg_store_t *s, int id, const fb_pg_params_t *p, int *err);

/* A text[] literal for an array parameter, quoting every element. */
void fb_pg_array_str(fb_buf_t *b, const char *const *vals, size_t n);

/* (Re)makes the connection, runs the session setup of its role, and sets
 * s->reconnected. FB_EUNAVAIL when the server cannot be reached. */
int fb_pg_connect(fb_pg_store_t *s);
fb_pg_store_t *fb_pg_store_new(const char *conninfo, fb_pg_role_t role);
void fb_pg_store_free(fb_pg_store_t *s);

/* store_pg_feed.c */
int fb_pg_announce(fb_store_t *s, const char *origin, const fb_change_t *changes, size_t n);
int fb_pg_feed_open(const fb_store_config_t *cfg, fb_feed_t **out);
void fb_pg_feed_close(fb_feed_t *f);
int fb_pg_feed_fd(fb_feed_t *f);
int fb_pg_feed_poll(fb_feed_t *f, fb_feed_cb cb, void *ud, bool *reconnected);
fb_store_t *fb_pg_feed_store(fb_feed_t *f);

#endif
