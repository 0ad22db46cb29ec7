/* `firebreak drill`, the judge: what each reader was delivered, checked as it
 * comes (a seq twice is a duplicate, a seq other than the next is a
 * reordering), then the read-back from a surviving site (every acknowledged
 * message there once, with its text, at its acked seq; every room's seqs
 * 1..last with nothing missing or repeated) and each reader's final sync
 * (it holds 1..last of every room, each once). It only counts; the verdict
 * is drill.c's. It never trusts the client library's promise of in-order,
 * exactly-once delivery: that is one of the things checked.
 * SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/drill.h"

/* seqs beyond this cannot be the drill's: counted as out of range */
static int64_t seq_limit(const drill_t *d)
{
    return (int64_t)d->o.max_messages + 2 * DRILL_MAX_CLIENTS + 16;
}

static void seen_grow(drill_rseen_t *rs, int64_t seq)
{
    if (seq < rs->cap) return;
    int64_t cap = rs->cap ? rs->cap : 1024;
    while (cap <= seq)
        cap *= 2;
    rs->seen = fb_realloc(rs->seen, (size_t)cap);
    memset(rs->seen + rs->cap, 0, (size_t)(cap - rs->cap));
    rs->fp = fb_realloc(rs->fp, (size_t)cap * sizeof *rs->fp);
    memset(rs->fp + rs->cap, 0, (size_t)(cap - rs->cap) * sizeof *rs->fp);
    rs->cap = cap;
}

static uint32_t fnv(uint32_t h, const char *s)
{
    for (; s && *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return (h ^ 0xff) * 16777619u; /* a separator: ("ab","c") != ("a","bc") */
}

/* What an event is, in 32 bits: two different events at one seq (a history
 * that forked, or was rolled back and rewritten) almost surely differ. */
static uint32_t event_fp(json_t *ev)
{
    char ids[64];
    snprintf(ids, sizeof ids, "%lld/%lld",
             (long long)fb_client_json_user_id(json_object_get(ev, "from")),
             (long long)fb_client_json_user_id(json_object_get(ev, "target")));
    uint32_t h = 2166136261u;
    h = fnv(h, json_string_value(json_object_get(ev, "type")));
    h = fnv(h, json_string_value(json_object_get(ev, "cmid")));
    h = fnv(h, json_string_value(json_object_get(ev, "text")));
    h = fnv(h, ids);
    return h | 1; /* 0: no event */
}

/* ---- what readers are delivered ---- */

void drill_reader_event(drill_reader_t *r, json_t *ev)
{
    drill_t *d = r->d;
    const char *kind = json_string_value(json_object_get(ev, "event"));
    if (!kind) return;
    bool msg = !strcmp(kind, "msg");
    if (!msg && strcmp(kind, "room")) return;
    int64_t room = json_integer_value(json_object_get(ev, "room"));
    int i = drill_room_slot(d, room);
    if (i < 0) {
        r->out_of_range++;
        return;
    }
    drill_rseen_t *rs = &r->rooms[i];
    if (!msg) {
        int64_t last = json_integer_value(json_object_get(ev, "last_seq"));
        if (last > rs->last_seq && last < seq_limit(d)) rs->last_seq = last;
        return;
    }
    int64_t seq = json_integer_value(json_object_get(ev, "seq"));
    if (seq <= 0 || seq >= seq_limit(d)) {
        r->out_of_range++;
        return;
    }
    r->events++;
    seen_grow(rs, seq);
    if (rs->seen[seq]) {
        if (r->dups++ < 5)
            drill_log(d, "%s: room %lld seq %lld delivered again", r->name, (long long)room,
                      (long long)seq);
    } else if (seq != rs->high + 1) {
        if (r->reorders++ < 5)
            drill_log(d, "%s: room %lld seq %lld delivered after seq %lld", r->name,
                      (long long)room, (long long)seq, (long long)rs->high);
    }
    if (!rs->seen[seq]) rs->fp[seq] = event_fp(ev);
    if (rs->seen[seq] < 255) rs->seen[seq]++;
    if (seq > rs->high) rs->high = seq;
}

/* ---- the read-back ---- */

/* Sites to read back from: the survivors first, the fault's site last. */
static char *survivors_first(const drill_t *d)
{
    fb_buf_t b = {0};
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < d->o.n_sites; i++) {
            bool hit = (int)i + 1 == d->o.fault_site;
            if (hit != (pass == 1)) continue;
            fb_buf_appendf(&b, "%s%s", b.len ? "," : "", d->o.sites[i]);
        }
    fb_buf_append(&b, "", 1);
    return b.data;
}

static int64_t left_ms(uint64_t deadline_ns)
{
    uint64_t now = uv_hrtime();
    return now >= deadline_ns ? 0 : (int64_t)((deadline_ns - now) / 1000000);
}

/* One history page, retried through failovers until the deadline. */
static int history_page(drill_t *d, fb_client_t *c, int64_t room, int64_t before, json_t **page,
                        uint64_t deadline_ns)
{
    for (;;) {
        json_t *req = json_pack("{s:s,s:I,s:i}", "op", "history", "room", (json_int_t)room, "limit",
                                DRILL_PAGE);
        if (before > 0) json_object_set_new(req, "before", json_integer(before));
        json_t *reply = NULL;
        int err = fb_client_call_sync(c, req, &reply, (int)FB_MIN(left_ms(deadline_ns), 10000));
        if (!err) {
            *page = reply;
            return 0;
        }
        const char *m =
            json_string_value(json_object_get(json_object_get(reply, "error"), "message"));
        snprintf(d->v.error, sizeof d->v.error, "history of room %lld: %s", (long long)room,
                 m ? m : fb_client_strerror(err));
        json_decref(reply);
        if (!(fb_err_retryable(err) || err == FB_CLIENT_ETIMEDOUT) || !left_ms(deadline_ns))
            return err;
        drill_sleep(d, 200);
    }
}

/* A text event of the drill: its cmid is "<prefix>.s<sender>.<n>". */
static drill_msg_t *msg_of(drill_t *d, const char *cmid, int *sender)
{
    size_t pl = strlen(d->o.prefix);
    if (!cmid || strncmp(cmid, d->o.prefix, pl) || cmid[pl] != '.' || cmid[pl + 1] != 's')
        return NULL;
    char *end;
    long i = strtol(cmid + pl + 2, &end, 10);
    if (*end != '.' || i < 0 || i >= d->o.senders) return NULL;
    char *end2;
    unsigned long long n = strtoull(end + 1, &end2, 10);
    if (*end2 || end2 == end + 1 || n >= d->s[i].n_msgs) return NULL;
    *sender = (int)i;
    return &d->s[i].msgs[n];
}

static void check_text_event(drill_t *d, int room_i, int64_t seq, json_t *ev)
{
    const char *cmid = json_string_value(json_object_get(ev, "cmid"));
    int si = -1;
    drill_msg_t *m = msg_of(d, cmid, &si);
    d->v.text_events++;
    if (!m) {
        if (d->v.unexpected++ < 5)
            drill_log(d, "room %lld seq %lld: a message the drill did not send (cmid %s)",
                      (long long)d->room_ids[room_i], (long long)seq, cmid ? cmid : "none");
        return;
    }
    if (m->found) {
        if (d->v.duplicated++ < 5)
            drill_log(d, "%s stored twice: seq %lld and %lld", cmid, (long long)m->found_seq,
                      (long long)seq);
        if (m->found < 255) m->found++;
        return;
    }
    m->found = 1;
    m->found_seq = seq;
    char want[160];
    drill_msg_text(d, si, (size_t)(m - d->s[si].msgs), want, sizeof want);
    const char *text = json_string_value(json_object_get(ev, "text"));
    const char *from = json_string_value(json_object_get(json_object_get(ev, "from"), "name"));
    if (m->room_i != room_i || !text || strcmp(text, want) || !from ||
        strcmp(from, d->s[si].name)) {
        m->bad |= DRILL_BAD_STORED;
        if (d->v.corrupted++ < 5)
            drill_log(d, "%s at room %lld seq %lld: another room, text or sender than sent", cmid,
                      (long long)d->room_ids[room_i], (long long)seq);
    }
}

/* Every event of one room, newest page first; seqs must cover 1..last once. */
static int read_room(drill_t *d, fb_client_t *c, int k, uint64_t deadline_ns)
{
    int64_t room = d->room_ids[k], before = 0, last = 0;
    drill_rseen_t *seqs = &d->v.room_seqs[k];
    int err = 0;
    for (;;) {
        json_t *page = NULL;
        err = history_page(d, c, room, before, &page, deadline_ns);
        if (err) goto done;
        json_t *events = json_object_get(page, "events");
        size_t i;
        json_t *ev;
        int64_t lowest = 0;
        json_array_foreach(events, i, ev)
        {
            int64_t seq = json_integer_value(json_object_get(ev, "seq"));
            if (seq <= 0 || seq >= seq_limit(d)) {
                d->v.unexpected++;
                continue;
            }
            d->v.events++;
            if (seq > last) last = seq;
            if (!lowest || seq < lowest) lowest = seq;
            seen_grow(seqs, seq);
            if (seqs->seen[seq]++) {
                d->v.store_dup_seqs++;
                continue;
            }
            seqs->fp[seq] = event_fp(ev);
            const char *type = json_string_value(json_object_get(ev, "type"));
            if (type && !strcmp(type, "text")) check_text_event(d, k, seq, ev);
        }
        bool more = json_is_true(json_object_get(page, "more"));
        json_decref(page);
        if (!more || !lowest || lowest <= 1) break;
        before = lowest;
    }
    d->v.room_last[k] = last;
    d->v.room_done[k] = true;
    for (int64_t s = 1; s <= last; s++)
        if (s >= seqs->cap || !seqs->seen[s]) {
            if (d->v.store_gaps++ < 5)
                drill_log(d, "room %lld: seq %lld missing (last %lld)", (long long)room,
                          (long long)s, (long long)last);
        }
done:
    return err;
}

static void tally_messages(drill_t *d)
{
    int64_t *last = fb_calloc((size_t)d->o.rooms, sizeof *last);
    for (int i = 0; i < d->o.senders; i++) {
        drill_sender_t *s = &d->s[i];
        memset(last, 0, (size_t)d->o.rooms * sizeof *last);
        for (size_t n = 0; n < s->n_msgs; n++) {
            drill_msg_t *m = &s->msgs[n];
            if (m->bad & DRILL_BAD_ACK) d->v.misplaced++;
            if (!m->acked) {
                d->v.unacked++;
                d->v.stored_unacked += m->found > 0;
                continue;
            }
            if (!d->v.room_done[m->room_i]) {
                d->v.unverified++;
                continue;
            }
            if (!m->found) {
                if (d->v.lost++ < 10)
                    drill_log(d, "lost: %s.s%d.%zu acked at room %lld seq %lld (t=%.2f s)",
                              d->o.prefix, i, n, (long long)d->room_ids[m->room_i],
                              (long long)m->seq, (double)m->ack_ms / 1000.0);
            } else if (m->found_seq != m->seq) {
                if (d->v.misplaced++ < 10)
                    drill_log(d, "%s.s%d.%zu acked at seq %lld but stored at seq %lld", d->o.prefix,
                              i, n, (long long)m->seq, (long long)m->found_seq);
            }
            /* one device's sends into one room: increasing seqs, in order */
            if (m->seq < last[m->room_i]) d->v.inversions++;
            last[m->room_i] = FB_MAX(last[m->room_i], m->seq);
        }
    }
    fb_free(last);
}

/* Forgets what an earlier read-back pass found. */
static void reset_pass(drill_t *d)
{
    for (int i = 0; i < d->o.senders; i++)
        for (size_t n = 0; n < d->s[i].n_msgs; n++) {
            drill_msg_t *m = &d->s[i].msgs[n];
            m->found = 0;
            m->found_seq = 0;
            m->bad &= (uint8_t)~DRILL_BAD_STORED;
        }
    for (int k = 0; k < d->o.rooms; k++) {
        drill_rseen_t *rs = &d->v.room_seqs[k];
        if (rs->cap) {
            memset(rs->seen, 0, (size_t)rs->cap);
            memset(rs->fp, 0, (size_t)rs->cap * sizeof *rs->fp);
        }
        d->v.room_last[k] = 0;
        d->v.room_done[k] = false;
    }
    d->v.events = d->v.text_events = d->v.lost = d->v.duplicated = d->v.misplaced = 0;
    d->v.corrupted = d->v.unexpected = d->v.store_gaps = d->v.store_dup_seqs = 0;
    d->v.stored_unacked = d->v.unacked = d->v.inversions = d->v.unverified = 0;
}

static long pass_findings(const drill_t *d)
{
    return d->v.lost + d->v.duplicated + d->v.misplaced + d->v.corrupted + d->v.unexpected +
           d->v.store_gaps + d->v.store_dup_seqs;
}

void drill_verify_store(drill_t *d)
{
    uint64_t t0 = uv_hrtime();
    uint64_t deadline = t0 + (uint64_t)d->o.verify_timeout_ms * 1000000;
    char *servers = survivors_first(d);
    fb_client_t *c = NULL;
    fb_client_opts_t o = {
        .servers = servers,
        .user = d->audit_name,
        .password = d->password,
        .token = d->audit_token,
        .device = "drill-verify",
        .raw_events = true,
        .connect_timeout_ms = d->o.connect_timeout_ms,
        .keepalive_ms = d->o.keepalive_ms,
    };
    int err = fb_client_new(&d->loop, &o, &c);
    if (err) {
        snprintf(d->v.error, sizeof d->v.error, "cannot create the read-back client: %s",
                 fb_client_strerror(err));
        goto done;
    }
    err = fb_client_connect_sync(c, (int)left_ms(deadline));
    if (err) {
        snprintf(d->v.error, sizeof d->v.error, "no site answered the read-back (%s): %s", servers,
                 fb_client_strerror(err));
        goto done;
    }
    drill_log(d, "read-back from %s", fb_client_addr(c));
    /* A site may answer from a replica that has not replayed the newest
     * commits yet: read again while that makes the findings shrink. A real
     * loss does not shrink. */
    for (long prev = -1;;) {
        reset_pass(d);
        d->v.passes++;
        for (int k = 0; k < d->o.rooms && !err; k++)
            err = read_room(d, c, k, deadline);
        tally_messages(d);
        if (err) goto done;
        long now = pass_findings(d);
        if (!now || (prev >= 0 && now >= prev) || left_ms(deadline) < 2000) break;
        prev = now;
        drill_log(d, "read-back pass %d: %ld findings; reading again in 1 s (replicas may lag)",
                  d->v.passes, now);
        drill_sleep(d, 1000);
    }
    snprintf(d->v.site, sizeof d->v.site, "%s", fb_client_addr(c));
    d->v.error[0] = 0;
    d->v.done = true;
done:
    if (c) fb_client_free_sync(c);
    fb_free(servers);
    if (!d->v.passes) tally_messages(d);
    d->v.ms = (int64_t)((uv_hrtime() - t0) / 1000000);
    if (!d->v.done) drill_log(d, "read-back incomplete: %s", d->v.error);
}

/* ---- each reader's final sync ---- */

static void on_final_sync(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    drill_reader_t *r = ud;
    r->sync_out = false;
    r->sync_err = err;
    if (!err) r->final_ok = true;
}

static bool syncs_done(drill_t *d)
{
    for (int i = 0; i < d->o.readers; i++)
        if (d->r[i].sync_out) return false;
    return true;
}

/* The reader has everything up to what the read-back saw. */
static bool reader_caught_up(const drill_t *d, const drill_reader_t *r)
{
    for (int k = 0; k < d->o.rooms; k++) {
        int slot = drill_room_slot_find(d, d->room_ids[k]);
        int64_t high = slot < 0 ? 0 : r->rooms[slot].high;
        if (high < d->v.room_last[k]) return false;
    }
    return true;
}

void drill_verify_readers(drill_t *d)
{
    uint64_t deadline = uv_hrtime() + (uint64_t)d->o.verify_timeout_ms * 1000000;
    /* sync until each reader holds what the read-back saw: a reader's site
     * may serve from a replica that is still replaying */
    for (;;) {
        bool pending = false;
        for (int i = 0; i < d->o.readers; i++) {
            drill_reader_t *r = &d->r[i];
            if (r->final_ok && reader_caught_up(d, r)) continue;
            if (fb_client_state(r->c) == FB_CLIENT_STOPPED) continue; /* gave up for good */
            pending = true;
            r->sync_out = true;
            r->sync_err = 0;
            int err = fb_client_sync(r->c, on_final_sync, r);
            if (err) {
                r->sync_out = false;
                r->sync_err = err;
            }
        }
        if (!pending) break;
        drill_run_until(d, syncs_done, left_ms(deadline));
        if (left_ms(deadline) < 250) break;
        drill_sleep(d, 250);
    }
    for (int i = 0; i < d->o.readers; i++) {
        drill_reader_t *r = &d->r[i];
        if (!r->final_ok) {
            d->v.readers_unsynced++;
            drill_log(d, "%s: no final sync (%s)", r->name,
                      r->sync_err ? fb_client_strerror(r->sync_err) : "timed out");
        }
        d->v.reader_dups += r->dups;
        d->v.reader_reorders += r->reorders;
        d->v.unexpected += r->out_of_range;
        for (int k = 0; k < d->n_slots; k++) {
            int64_t id = d->room_ix[k].id;
            bool mine = false;
            for (int j = 0; j < d->o.rooms && !mine; j++)
                mine = d->room_ids[j] == id;
            if (!mine && r->rooms[d->room_ix[k].slot].high) {
                if (d->v.unexpected++ < 5)
                    drill_log(d, "%s: events of room %lld, not a drill room", r->name,
                              (long long)id);
            }
        }
        for (int k = 0; k < d->o.rooms; k++) {
            int slot = drill_room_slot_find(d, d->room_ids[k]);
            drill_rseen_t none = {0}, *rs = slot < 0 ? &none : &r->rooms[slot];
            int64_t last = FB_MAX(FB_MAX(d->v.room_last[k], rs->high), rs->last_seq);
            const drill_rseen_t *st = &d->v.room_seqs[k];
            long missing = 0, diverged = 0;
            int64_t first = 0, first_div = 0;
            for (int64_t s = 1; s <= last; s++) {
                if (s >= rs->cap || !rs->seen[s]) {
                    if (!first) first = s;
                    missing++;
                } else if (s < st->cap && st->fp[s] && st->fp[s] != rs->fp[s]) {
                    if (!first_div) first_div = s;
                    diverged++;
                }
            }
            if (diverged && d->v.reader_diverged < 5)
                drill_log(d, "%s: room %lld: %ld events differ from the read-back (first seq %lld)",
                          r->name, (long long)d->room_ids[k], diverged, (long long)first_div);
            d->v.reader_diverged += diverged;
            if (missing && d->v.reader_gaps < 5)
                drill_log(d, "%s: room %lld: %ld of seqs 1..%lld never delivered (first %lld)",
                          r->name, (long long)d->room_ids[k], missing, (long long)last,
                          (long long)first);
            d->v.reader_gaps += missing;
        }
    }
}
