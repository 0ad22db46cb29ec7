/* The change feed of the PostgreSQL backend: a node announces, inside its
 * write transaction, the seq range each room got (NOTIFY, which PostgreSQL
 * delivers if and only if the transaction commits, after the commit and its
 * wait for the synchronous standby); every node's feed connection LISTENs,
 * reads what arrived without blocking, and reconnects after a failover. It
 * must never block on the feed socket, and never drop an announcement it
 * has read without handing it to the caller.
 *
 * Payload: "ORIGIN ROOM:FROM-TO ... r:ROOM:USER:SEQ ... x:USER:DEVICE ...":
 * event ranges, read markers, logouts; at most PAYLOAD_MAX
 * bytes (PostgreSQL's limit is 8000); a longer announcement is split into
 * several notifications, each with the origin.
 *
 * The feed's connection doubles as a read handle on the primary
 * (fb_feed_store): catch-up queries and fetching announced events go over
 * it, in a read-only session, between polls.
 * SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_pg.h"

#define PAYLOAD_MAX 7000
#define ORIGIN_MAX 64

typedef struct {
    fb_feed_t base; /* first: store.c sees only this */
    fb_pg_store_t *st;
} pg_feed_t;

static pg_feed_t *feed(fb_feed_t *f)
{
    return (pg_feed_t *)f;
}

/* ---- announcing ---- */

int fb_pg_announce(fb_store_t *base, const char *origin, const fb_change_t *changes, size_t n)
{
    fb_pg_store_t *s = (fb_pg_store_t *)base;
    size_t cap = 4, count = 0;
    char **payloads = fb_malloc(cap * sizeof *payloads);
    fb_buf_t cur = {0};
    char piece[80];
    for (size_t i = 0; i < n; i++) {
        const fb_change_t *ch = &changes[i];
        int len;
        if (ch->kind == FB_CHANGE_READ)
            len = snprintf(piece, sizeof piece, " r:%lld:%lld:%lld", (long long)ch->room_id,
                           (long long)ch->user_id, (long long)ch->to_seq);
        else if (ch->kind == FB_CHANGE_LOGOUT)
            len = snprintf(piece, sizeof piece, " x:%lld:%lld", (long long)ch->user_id,
                           (long long)ch->device_id);
        else
            len = snprintf(piece, sizeof piece, " %lld:%lld-%lld", (long long)ch->room_id,
                           (long long)ch->from_seq, (long long)ch->to_seq);
        if (cur.len && cur.len + (size_t)len > PAYLOAD_MAX) {
            if (count == cap) payloads = fb_realloc(payloads, (cap *= 2) * sizeof *payloads);
            payloads[count++] = fb_strndup(cur.data, cur.len);
            fb_buf_reset(&cur);
        }
        if (!cur.len) fb_buf_append(&cur, origin, strlen(origin));
        fb_buf_append(&cur, piece, (size_t)len);
    }
    if (count == cap) payloads = fb_realloc(payloads, (cap + 1) * sizeof *payloads);
    payloads[count++] = fb_strndup(cur.data, cur.len);
    fb_buf_free(&cur);

    fb_buf_t arr = {0};
    fb_pg_array_str(&arr, (const char *const *)payloads, count);
    for (size_t i = 0; i < count; i++)
        fb_free(payloads[i]);
    fb_free(payloads);
    fb_pg_params_t p = {0};
    fb_pg_p_str(&p, arr.data);
    int err;
    PQclear(fb_pg_run(s, FB_PG_ST_ANNOUNCE, &p, &err));
    fb_buf_free(&arr);
    return err;
}

/* ---- listening ---- */

int fb_pg_feed_open(const fb_store_config_t *cfg, fb_feed_t **out)
{
    if (!cfg->conninfo || !*cfg->conninfo) {
        FB_ERROR("store", "the change feed needs a connection string to the primary (pg_conninfo)");
        return FB_EINVAL;
    }
    pg_feed_t *f = fb_calloc(1, sizeof *f);
    f->base.ops = &fb_store_pg_ops;
    f->st = fb_pg_store_new(cfg->conninfo, FB_PG_FEED);
    int err = fb_pg_connect(f->st);
    if (err) {
        fb_pg_store_free(f->st);
        fb_free(f);
        return err;
    }
    f->st->reconnected = false; /* nothing can have been missed yet */
    *out = &f->base;
    return 0;
}

void fb_pg_feed_close(fb_feed_t *base)
{
    pg_feed_t *f = feed(base);
    fb_pg_store_free(f->st);
    fb_free(f);
}

int fb_pg_feed_fd(fb_feed_t *base)
{
    fb_pg_store_t *s = feed(base)->st;
    return s->conn && !s->broken ? PQsocket(s->conn) : -1;
}

fb_store_t *fb_pg_feed_store(fb_feed_t *base)
{
    return &feed(base)->st->base;
}

/* Parses one notification and hands it to cb; a malformed one (not from a
 * Firebreak node of this version) is logged and skipped. */
static void deliver(const char *payload, fb_feed_cb cb, void *ud)
{
    size_t olen = strcspn(payload, " ");
    if (olen == 0 || olen > ORIGIN_MAX) goto bad;
    char origin[ORIGIN_MAX + 1];
    memcpy(origin, payload, olen);
    origin[olen] = 0;
    size_t cap = 1;
    for (const char *c = payload + olen; *c; c++)
        cap += *c == ' ';
    fb_change_t *changes = fb_malloc(cap * sizeof *changes);
    size_t n = 0;
    const char *c = payload + olen;
    while (*c == ' ') {
        char *end;
        fb_change_t ch = {0};
        if (c[1] == 'r' && c[2] == ':') { /* a read marker */
            ch.kind = FB_CHANGE_READ;
            ch.room_id = strtoll(c + 3, &end, 10);
            if (*end != ':') break;
            ch.user_id = strtoll(end + 1, &end, 10);
            if (*end != ':') break;
            ch.from_seq = ch.to_seq = strtoll(end + 1, &end, 10);
        } else if (c[1] == 'x' && c[2] == ':') { /* a logout */
            ch.kind = FB_CHANGE_LOGOUT;
            ch.user_id = strtoll(c + 3, &end, 10);
            if (*end != ':') break;
            ch.device_id = strtoll(end + 1, &end, 10);
        } else {
            ch.room_id = strtoll(c + 1, &end, 10);
            if (*end != ':') break;
            ch.from_seq = strtoll(end + 1, &end, 10);
            if (*end != '-') break;
            ch.to_seq = strtoll(end + 1, &end, 10);
        }
        /* what fb_store_announce would not have sent is not taken either */
        if ((*end != ' ' && *end) || !fb_change_valid(&ch)) break;
        changes[n++] = ch;
        c = end;
    }
    if (*c) {
        fb_free(changes);
        goto bad;
    }
    cb(ud, origin, changes, n);
    fb_free(changes);
    return;
bad:
    FB_WARN("store", "skipped a malformed announcement on channel " FB_PG_CHANNEL " (%zu bytes)",
            strlen(payload));
}

static void deliver_all(fb_pg_store_t *s, fb_feed_cb cb, void *ud)
{
    PGnotify *nt;
    while ((nt = PQnotifies(s->conn))) {
        if (strcmp(nt->relname, FB_PG_CHANNEL) == 0) deliver(nt->extra, cb, ud);
        PQfreemem(nt);
    }
}

/* Never blocks: PQconsumeInput reads what the socket has. A connection
 * found dead is made again once per poll (to whichever server is the
 * primary now); the caller hears of it through *reconnected and catches up
 * with fb_store_rooms_last_seq. A read transaction open on the feed's
 * handle is never silently replaced: the poll says FB_EUNAVAIL instead. */
int fb_pg_feed_poll(fb_feed_t *base, fb_feed_cb cb, void *ud, bool *reconnected)
{
    fb_pg_store_t *s = feed(base)->st;
    int err = 0;
    if (s->conn && !s->broken && PQstatus(s->conn) == CONNECTION_OK) {
        if (!PQconsumeInput(s->conn)) {
            const char *msg = PQerrorMessage(s->conn);
            FB_WARN("store", "change feed connection lost: %.*s", (int)strcspn(msg, "\n"), msg);
            s->broken = true;
        }
        deliver_all(s, cb, ud); /* what was read before a loss still counts */
    } else {
        s->broken = true;
    }
    if (s->broken) err = s->in_tx ? FB_EUNAVAIL : fb_pg_connect(s);
    if (s->reconnected) {
        *reconnected = true;
        s->reconnected = false;
    }
    return err ? FB_EUNAVAIL : 0;
}
