/* The load of `firebreak bench`: workers, each one thread with its own libuv
 * loop and many connections, and the traffic of every scenario. A worker
 * goes through
 *
 *   CONNECT -> WAIT_GO -> RUN (duration) -> DRAIN (acks and deliveries come
 *   home) -> CLOSE                       (connections: WAIT_GO -> HOLD -> PING -> CLOSE)
 *
 * and records, per room it owns, the content of every acknowledged message,
 * and per receiving connection what it applied (bench_check.c decides). A
 * send's latency counts from its intended time, so a late sender cannot hide
 * its own lateness (no coordinated omission).
 * SPDX-License-Identifier: MIT */
#include "tools/bench.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { PH_CONNECT, PH_WAIT_GO, PH_ARMED, PH_RUN, PH_DRAIN, PH_HOLD, PH_PING, PH_CLOSE };

#define CONNECT_PARALLEL 128
#define CONNECT_ATTEMPTS 5
#define HANDSHAKE_NS (15ull * 1000000000)
#define PING_NS (10ull * 1000000000)
#define QUIET_NS (300ull * 1000000) /* drained: no delivery for this long */
#define ID_OTHER (1ull << 40)       /* ids at or above: not a send */
#define WHEEL 16384                 /* read-marker wheel: 1 ms slots */
enum { RQ_READ = 1, RQ_SYNC = 2, RQ_PING = 3 };

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t bench_rand(bench_worker_t *w)
{
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 0x2545f4914f6cdd1dull;
}

static double rand_unit(bench_worker_t *w)
{
    return (double)(bench_rand(w) >> 11) / 9007199254740992.0;
}

/* An exponential wait with the given mean (ns). */
static double rand_exp(bench_worker_t *w, double mean)
{
    return -log(1.0 - rand_unit(w)) * mean;
}

static bool in_window(const bench_worker_t *w, uint64_t t)
{
    return t >= w->t_window0 && t <= w->t_end;
}

static bool is_kakao(const bench_worker_t *w)
{
    return w->o->scenario == SC_KAKAO;
}

static void error(bench_worker_t *w, const char *code)
{
    bench_stats_error(&w->st, code);
}

/* ---- sending ---- */

static bench_slot_t *slot_of(bench_conn_t *c, uint64_t n)
{
    return &c->slots[n & c->slot_mask];
}

/* The cmid and text of message n of connection c: regenerated, identical,
 * whenever it is (re)sent. */
static size_t compose_text(bench_worker_t *w, bench_conn_t *c, uint64_t n, const bench_slot_t *s,
                           char *cmid, size_t *cmid_len, char *text)
{
    *cmid_len = (size_t)snprintf(cmid, 64, "%s.%d.%" PRIu64, w->o->run_id, c->idx, n);
    int k = snprintf(text, 32, "%" PRIu64 ":", s->t_ns);
    size_t len = (size_t)FB_MAX(w->o->size, k);
    memcpy(text + k, w->filler, len - (size_t)k);
    return len;
}

static void put_on_wire(bench_worker_t *w, bench_conn_t *c, uint64_t n)
{
    bench_slot_t *s = slot_of(c, n);
    char cmid[64], text[8192];
    size_t cmid_len, text_len = compose_text(w, c, n, s, cmid, &cmid_len, text);
    fb_buf_reset(&w->frame);
    fb_buf_appendf(&w->frame, "{\"id\":%" PRIu64 ",\"op\":\"send\",\"room\":%" PRId64
                              ",\"cmid\":\"%s\",\"text\":\"",
                   n + 1, w->world->rooms[s->room].id, cmid);
    fb_buf_append(&w->frame, text, text_len);
    fb_buf_append(&w->frame, "\"}", 2);
    bench_conn_send(c, w->frame.data, w->frame.len);
    s->state = 2;
}

/* Puts queued messages on the wire, oldest first. */
static void pump(bench_worker_t *w, bench_conn_t *c)
{
    if (c->state != BC_READY || c->syncing) return;
    while (c->out_sent < c->out_head) {
        bench_slot_t *s = slot_of(c, c->out_sent);
        if (s->state == 1) put_on_wire(w, c, c->out_sent);
        c->out_sent++;
    }
}

/* A new message of c into room, meant to leave at t_ns. */
static bool enqueue(bench_worker_t *w, bench_conn_t *c, int room, uint64_t t_ns)
{
    if (c->out_head - c->out_tail > c->slot_mask) return false;
    uint64_t n = c->out_head++;
    bench_slot_t *s = slot_of(c, n);
    s->t_ns = t_ns;
    s->room = room;
    s->state = 1;
    char cmid[64], text[8192];
    size_t cmid_len, text_len = compose_text(w, c, n, s, cmid, &cmid_len, text);
    s->h = bench_content_hash(cmid, cmid_len, text, text_len);
    w->st.sent++;
    pump(w, c);
    return true;
}

static uint64_t total_sent_cap(const bench_worker_t *w)
{
    /* the count bound, shared evenly by the workers */
    return w->o->max_messages / (uint64_t)w->proc->n_workers_total + 1;
}

/* As fast as acks allow: keep the window full until the end. */
static void refill(bench_worker_t *w, bench_conn_t *c)
{
    if (w->phase != PH_RUN || w->o->rate > 0) return;
    uint64_t now = bench_now_ns();
    if (now >= w->t_end) return;
    while (c->out_head - c->out_tail <= c->slot_mask && w->st.sent < total_sent_cap(w))
        enqueue(w, c, c->send_room, now);
}

static void record_ack(bench_worker_t *w, bench_room_t *r, int64_t seq, uint64_t h, bool dup)
{
    int64_t i = seq - r->base - 1;
    if (i < 0) {
        error(w, "ack_below_room_base");
        return;
    }
    if ((size_t)i >= r->acked_cap) {
        size_t cap = FB_MAX(r->acked_cap * 2, (size_t)i + 1024);
        r->acked = fb_realloc(r->acked, cap * sizeof *r->acked);
        memset(r->acked + r->acked_cap, 0, (cap - r->acked_cap) * sizeof *r->acked);
        r->acked_cap = cap;
    }
    if (dup) w->st.dup_acks++;
    if (r->acked[i]) {
        if (r->acked[i] != h) w->st.seq_conflicts++; /* two messages, one seq */
        return;                                        /* the same message acked again */
    }
    if (dup && !is_kakao(w)) error(w, "unexpected_duplicate_ack"); /* nothing was resent */
    r->acked[i] = h;
    r->n_acked++;
    if (seq > r->max_acked) r->max_acked = seq;
}

static void retire(bench_conn_t *c)
{
    while (c->out_tail < c->out_sent && slot_of(c, c->out_tail)->state == 3) {
        slot_of(c, c->out_tail)->state = 0;
        c->out_tail++;
    }
}

static void on_send_reply(bench_worker_t *w, bench_conn_t *c, uint64_t id, bool ok,
                          int64_t room_id, int64_t seq, bool dup, const char *code)
{
    uint64_t n = id - 1;
    if (id == 0 || n < c->out_tail || n >= c->out_sent || slot_of(c, n)->state != 2) {
        error(w, "reply_to_no_send");
        return;
    }
    bench_slot_t *s = slot_of(c, n);
    uint64_t now = bench_now_ns();
    if (!ok) {
        error(w, code ? code : "send_refused");
    } else {
        bench_room_t *r = &w->world->rooms[s->room];
        if (room_id != r->id) {
            error(w, "ack_names_another_room");
        } else {
            record_ack(w, r, seq, s->h, dup);
            w->st.acked++;
            if (in_window(w, now)) w->st.acked_in_window++;
            if (s->t_ns >= w->t_window0) bench_hist_add(&w->st.ack, now - s->t_ns);
        }
    }
    s->state = 3;
    retire(c);
    refill(w, c);
}

/* ---- receiving ---- */

static bench_rx_t *rx_of(bench_conn_t *c, int64_t room_id)
{
    for (int i = 0; i < c->n_rx; i++)
        if (c->w->world->rooms[c->rx[i].room].id == room_id) return &c->rx[i];
    return NULL;
}

static void record_gap(bench_rx_t *rx, int64_t a, int64_t b)
{
    if (rx->n_gaps == BRX_MAX_GAPS) {
        rx->gaps_overflow = true;
        return;
    }
    rx->gaps[rx->n_gaps][0] = a;
    rx->gaps[rx->n_gaps][1] = b;
    rx->n_gaps++;
}

static bool is_reader(const bench_worker_t *w, int user)
{
    uint64_t h = bench_mix(user, 0x5eed);
    return (double)(h % 10000) < w->o->read_prob * 10000.0;
}

static void schedule_read(bench_worker_t *w, bench_rx_t *rx, uint64_t now)
{
    if (rx->read_pending || w->phase != PH_RUN) return;
    double d = rand_exp(w, w->o->read_delay_s * 1e9);
    d = FB_MIN(FB_MAX(d, 1e6), 15e9);
    rx->read_pending = true;
    rx->read_due = now + (uint64_t)d;
    uint64_t slot = (rx->read_due / 1000000) % WHEEL;
    rx->read_next = w->wheel[slot];
    w->wheel[slot] = rx;
}

static void start_sync(bench_worker_t *w, bench_conn_t *c);

/* One room event for c, from a push or from a sync reply. */
static void on_room_event(bench_worker_t *w, bench_conn_t *c, int64_t room_id, int64_t seq,
                          uint64_t h, uint64_t t_send, int sender, bool via_sync)
{
    bench_rx_t *rx = rx_of(c, room_id);
    if (!rx) {
        error(w, "event_of_a_room_not_joined");
        return;
    }
    uint64_t now = bench_now_ns();
    bool kakao = is_kakao(w);
    if (!via_sync && seq <= rx->last_push) {
        rx->dups++; /* pushed twice on one connection */
        return;
    }
    if (!via_sync) rx->last_push = seq;
    if (seq < rx->next) {
        /* Below the cursor. From a sync at or below the cursor it sent: a
         * duplicate. Otherwise the overlap of a sync with the pushes that
         * came while it was in flight (kakao only: elsewhere next only
         * moves with pushes, and those were caught above). */
        if (via_sync && seq <= rx->sync_from) rx->dups++;
        return;
    }
    if (seq > rx->next) {
        if (kakao) { /* a gap: the client syncs, as protocol.md says */
            if (c->syncing) {
                c->resync = true;
            } else {
                w->st.resyncs++;
                start_sync(w, c);
            }
            return;
        }
        record_gap(rx, rx->next, seq - 1);
    }
    rx->sum += bench_mix(seq, h);
    rx->next = seq + 1;
    w->st.deliveries++;
    if (via_sync) w->st.sync_events++;
    if (in_window(w, now)) w->st.deliveries_in_window++;
    if (t_send >= w->t_window0 && t_send <= now) bench_hist_add(&w->st.deliv, now - t_send);
    w->last_delivery_ns = now;
    if (kakao && sender != c->idx && is_reader(w, c->user)) schedule_read(w, rx, now);
}

/* ---- the lean parser for the two hot frames ----
 * A push `{"room":R,"seq":S,"ts":T,"type":"text",...,"cmid":"C","text":"X",...,"event":"msg"}`
 * and a send ack `{"id":N,"ok":true,"room":R,"seq":S,"ts":T,"duplicate":B}`, in
 * the node's key order. Anything else, or any escape in a string, goes to
 * jansson: the fast path never guesses. */

static bool lit(const char **p, const char *end, const char *s, size_t n)
{
    if ((size_t)(end - *p) < n || memcmp(*p, s, n) != 0) return false;
    *p += n;
    return true;
}
#define LIT(p, end, s) lit(p, end, s, sizeof(s) - 1)

static bool num(const char **p, const char *end, int64_t *out)
{
    const char *q = *p;
    bool neg = q < end && *q == '-';
    if (neg) q++;
    int64_t v = 0;
    const char *start = q;
    while (q < end && *q >= '0' && *q <= '9' && q - start < 18) v = v * 10 + (*q++ - '0');
    if (q == start || (q < end && *q >= '0' && *q <= '9')) return false;
    *out = neg ? -v : v;
    *p = q;
    return true;
}

/* "run.idx.n" -> idx; -1 when the cmid is not one of ours. */
static int cmid_sender(const bench_worker_t *w, const char *s, size_t n)
{
    size_t rl = strlen(w->o->run_id);
    if (n <= rl + 1 || memcmp(s, w->o->run_id, rl) != 0 || s[rl] != '.') return -1;
    const char *p = s + rl + 1;
    int64_t idx;
    if (!num(&p, s + n, &idx) || p >= s + n || *p != '.') return -1;
    return (int)idx;
}

static uint64_t text_time(const char *s, size_t n)
{
    const char *p = s;
    int64_t t;
    if (!num(&p, s + n, &t) || p >= s + n || *p != ':') return 0;
    return (uint64_t)t;
}

static bool fast_push(bench_worker_t *w, bench_conn_t *c, const char *data, size_t len)
{
    const char *p = data, *end = data + len;
    int64_t room, seq, ts;
    static const char tail[] = ",\"event\":\"msg\"}";
    if (!LIT(&p, end, "{\"room\":") || !num(&p, end, &room) || !LIT(&p, end, ",\"seq\":") ||
        !num(&p, end, &seq) || !LIT(&p, end, ",\"ts\":") || !num(&p, end, &ts) ||
        !LIT(&p, end, ",\"type\":\"text\","))
        return false;
    if (len < sizeof tail || memcmp(end - (sizeof tail - 1), tail, sizeof tail - 1) != 0) return false;
    const char *cm = memmem(p, (size_t)(end - p), ",\"cmid\":\"", 9);
    if (!cm) return false;
    const char *cs = cm + 9, *ce = memchr(cs, '"', (size_t)(end - cs));
    if (!ce || memchr(cs, '\\', (size_t)(ce - cs))) return false;
    const char *tx = memmem(ce, (size_t)(end - ce), ",\"text\":\"", 9);
    if (!tx) return false;
    const char *ts0 = tx + 9, *te = memchr(ts0, '"', (size_t)(end - ts0));
    if (!te || memchr(ts0, '\\', (size_t)(te - ts0))) return false;
    uint64_t h = bench_content_hash(cs, (size_t)(ce - cs), ts0, (size_t)(te - ts0));
    on_room_event(w, c, room, seq, h, text_time(ts0, (size_t)(te - ts0)),
                  cmid_sender(w, cs, (size_t)(ce - cs)), false);
    return true;
}

static bool fast_ack(bench_worker_t *w, bench_conn_t *c, const char *data, size_t len)
{
    const char *p = data, *end = data + len;
    int64_t id, room, seq, ts;
    if (!LIT(&p, end, "{\"id\":") || !num(&p, end, &id) || id <= 0 || (uint64_t)id >= ID_OTHER ||
        !LIT(&p, end, ",\"ok\":true,\"room\":") || !num(&p, end, &room) ||
        !LIT(&p, end, ",\"seq\":") || !num(&p, end, &seq) || !LIT(&p, end, ",\"ts\":") ||
        !num(&p, end, &ts) || !LIT(&p, end, ",\"duplicate\":"))
        return false;
    bool dup;
    if (LIT(&p, end, "true}"))
        dup = true;
    else if (LIT(&p, end, "false}"))
        dup = false;
    else
        return false;
    if (p != end) return false;
    on_send_reply(w, c, (uint64_t)id, true, room, seq, dup, NULL);
    return true;
}

/* A read marker pushed to a member (`{"event":"read",...}`): only counted. */
static bool fast_read_event(bench_worker_t *w, const char *data, size_t len)
{
    const char *p = data;
    if (!LIT(&p, data + len, "{\"event\":\"read\",") || data[len - 1] != '}') return false;
    w->st.read_events++;
    return true;
}

/* ---- the full parser (jansson): everything else ---- */

static int64_t jint(json_t *o, const char *k)
{
    return (int64_t)json_integer_value(json_object_get(o, k));
}

static void event_from_json(bench_worker_t *w, bench_conn_t *c, json_t *ev, int64_t room,
                            bool via_sync)
{
    const char *cmid = json_string_value(json_object_get(ev, "cmid"));
    const char *text = json_string_value(json_object_get(ev, "text"));
    size_t cl = cmid ? json_string_length(json_object_get(ev, "cmid")) : 0;
    size_t tl = text ? json_string_length(json_object_get(ev, "text")) : 0;
    uint64_t h = bench_content_hash(cmid ? cmid : "", cl, text ? text : "", tl);
    if (!room) room = jint(ev, "room");
    on_room_event(w, c, room, jint(ev, "seq"), h, text ? text_time(text, tl) : 0,
                  cmid ? cmid_sender(w, cmid, cl) : -1, via_sync);
}

static void send_sync(bench_worker_t *w, bench_conn_t *c);

static void sync_done(bench_worker_t *w, bench_conn_t *c)
{
    c->syncing = false;
    if (c->resync) {
        start_sync(w, c);
        return;
    }
    if (c->down_ns) {
        bench_hist_add(&w->st.reconnect, bench_now_ns() - c->down_ns);
        c->down_ns = 0;
    }
    pump(w, c); /* the outbox goes out again, same cmids */
}

static void on_sync_reply(bench_worker_t *w, bench_conn_t *c, json_t *j)
{
    if (!json_is_true(json_object_get(j, "ok"))) {
        error(w, "sync_refused");
        c->syncing = false;
        return;
    }
    size_t i, k;
    json_t *entry, *ev;
    json_array_foreach(json_object_get(j, "rooms"), i, entry)
    {
        int64_t room = jint(entry, "room");
        json_array_foreach(json_object_get(entry, "events"), k, ev)
        event_from_json(w, c, ev, room, true);
    }
    if (json_is_true(json_object_get(j, "more")))
        send_sync(w, c);
    else
        sync_done(w, c);
}

static void on_other_reply(bench_worker_t *w, bench_conn_t *c, uint64_t id, json_t *j)
{
    bool ok = json_is_true(json_object_get(j, "ok"));
    const char *code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    switch ((id >> 32) & 0xff) {
    case RQ_SYNC: on_sync_reply(w, c, j); return;
    case RQ_READ:
        if (ok)
            w->st.reads_acked++;
        else
            error(w, code ? code : "read_refused");
        return;
    case RQ_PING:
        if (ok) {
            w->st.pings_ok++;
            w->n_pinged++;
        } else {
            error(w, code ? code : "ping_refused");
        }
        return;
    }
    error(w, "reply_to_nothing");
}

static void slow_frame(bench_worker_t *w, bench_conn_t *c, const char *data, size_t len)
{
    json_error_t jerr;
    json_t *j = json_loadb(data, len, 0, &jerr);
    w->st.slow_frames++;
    if (!json_is_object(j)) {
        error(w, "unparsable_frame");
        json_decref(j);
        return;
    }
    const char *ev = json_string_value(json_object_get(j, "event"));
    json_t *jid = json_object_get(j, "id");
    if (ev) {
        if (!strcmp(ev, "msg"))
            event_from_json(w, c, j, 0, false);
        else if (!strcmp(ev, "read"))
            w->st.read_events++;
        else
            error(w, "unexpected_event");
    } else if (json_is_integer(jid) && (uint64_t)json_integer_value(jid) < ID_OTHER) {
        bool ok = json_is_true(json_object_get(j, "ok"));
        on_send_reply(w, c, (uint64_t)json_integer_value(jid), ok, jint(j, "room"), jint(j, "seq"),
                      json_is_true(json_object_get(j, "duplicate")),
                      json_string_value(json_object_get(json_object_get(j, "error"), "code")));
    } else if (json_is_integer(jid)) {
        on_other_reply(w, c, (uint64_t)json_integer_value(jid), j);
    } else {
        error(w, "reply_without_id");
    }
    json_decref(j);
}

void bench_on_text(bench_conn_t *c, const char *data, size_t len)
{
    bench_worker_t *w = c->w;
    if (c->slow) return;
    if (!w->o->full_parse && len > 16) {
        bool done = data[2] == 'r' ? fast_push(w, c, data, len)
                    : data[2] == 'i' ? fast_ack(w, c, data, len)
                                     : fast_read_event(w, data, len);
        if (done) {
            w->st.fast_frames++;
            return;
        }
    }
    slow_frame(w, c, data, len);
}

/* ---- kakao: sync, reads, reconnects ---- */

static uint64_t other_id(bench_conn_t *c, int kind)
{
    return ID_OTHER | ((uint64_t)kind << 32) | (++c->req_id & 0xffffffffu);
}

static void send_sync(bench_worker_t *w, bench_conn_t *c)
{
    fb_buf_reset(&w->frame);
    fb_buf_appendf(&w->frame, "{\"id\":%" PRIu64 ",\"op\":\"sync\",\"cursors\":{",
                   other_id(c, RQ_SYNC));
    for (int i = 0; i < c->n_rx; i++) {
        c->rx[i].sync_from = c->rx[i].next - 1;
        fb_buf_appendf(&w->frame, "%s\"%" PRId64 "\":%" PRId64, i ? "," : "",
                       w->world->rooms[c->rx[i].room].id, c->rx[i].next - 1);
    }
    fb_buf_append(&w->frame, "}}", 2);
    bench_conn_send(c, w->frame.data, w->frame.len);
}

static void start_sync(bench_worker_t *w, bench_conn_t *c)
{
    if (c->state != BC_READY) return;
    c->syncing = true;
    c->resync = false;
    send_sync(w, c);
}

static void send_read(bench_worker_t *w, bench_rx_t *rx)
{
    bench_conn_t *c = rx->conn;
    if (c->state != BC_READY || c->syncing || rx->next <= w->world->rooms[rx->room].base + 1) return;
    fb_buf_reset(&w->frame);
    fb_buf_appendf(&w->frame, "{\"id\":%" PRIu64 ",\"op\":\"read\",\"room\":%" PRId64
                              ",\"seq\":%" PRId64 "}",
                   other_id(c, RQ_READ), w->world->rooms[rx->room].id, rx->next - 1);
    bench_conn_send(c, w->frame.data, w->frame.len);
    w->st.reads_sent++;
}

static void run_wheel(bench_worker_t *w, uint64_t now)
{
    uint64_t now_ms = now / 1000000;
    if (!w->wheel_pos) w->wheel_pos = now_ms;
    for (; w->wheel_pos <= now_ms; w->wheel_pos++) {
        bench_rx_t **slot = &w->wheel[w->wheel_pos % WHEEL], *rx = *slot;
        *slot = NULL;
        while (rx) {
            bench_rx_t *next = rx->read_next;
            rx->read_pending = false;
            if (w->phase == PH_RUN) send_read(w, rx);
            rx = next;
        }
    }
}

static void kakao_tick(bench_worker_t *w, uint64_t now)
{
    double per_ns = w->o->rate / (double)w->proc->n_workers_total / 1e9;
    int n = w->n_conns;
    while (per_ns > 0 && w->next_arrival <= (double)now && n) {
        bench_conn_t *c = w->conns[bench_rand(w) % (uint64_t)n];
        const int *rooms;
        int k = bench_user_rooms(w->world, c->user, &rooms);
        if (k && w->st.sent < total_sent_cap(w)) {
            if (!enqueue(w, c, rooms[bench_rand(w) % (uint64_t)k], (uint64_t)w->next_arrival))
                w->st.behind++;
        }
        w->next_arrival += rand_exp(w, 1.0 / per_ns);
    }
    double rc_ns = w->o->reconnects_per_s / (double)w->proc->n_workers_total / 1e9;
    while (rc_ns > 0 && w->next_reconnect <= (double)now && n) {
        bench_conn_t *c = w->conns[bench_rand(w) % (uint64_t)n];
        if (c->state == BC_READY && !c->syncing) {
            c->down_ns = now;
            w->st.reconnects++;
            bench_conn_drop(c);
        }
        w->next_reconnect += rand_exp(w, 1.0 / rc_ns);
    }
    run_wheel(w, now);
}

/* ---- phases ---- */

static void close_all(bench_worker_t *w)
{
    w->phase = PH_CLOSE;
    for (int i = 0; i < w->n_conns; i++) bench_conn_close(w->conns[i]);
    uv_handle_t *hs[] = {(uv_handle_t *)&w->tick, (uv_handle_t *)&w->house,
                         (uv_handle_t *)&w->check, (uv_handle_t *)&w->wake};
    for (size_t i = 0; i < FB_ARRAY_LEN(hs); i++)
        if (!uv_is_closing(hs[i])) uv_close(hs[i], NULL);
}

static void signal_proc(bench_worker_t *w, bool ready)
{
    bench_proc_t *p = w->proc;
    uv_mutex_lock(&p->mu);
    if (ready)
        p->ready++;
    else
        p->done++;
    uv_cond_broadcast(&p->cv);
    uv_mutex_unlock(&p->mu);
}

static void set_reading(bench_conn_t *c, bool on);
static void start_pings(bench_worker_t *w);

static void finish(bench_worker_t *w)
{
    signal_proc(w, false);
    if (w->o->scenario == SC_CONNECTIONS && !atomic_load(&w->proc->finish)) {
        w->phase = PH_HOLD;
        return;
    }
    close_all(w);
}

static void enter_drain(bench_worker_t *w, uint64_t now)
{
    w->phase = PH_DRAIN;
    w->phase_deadline = now + w->o->drain_ns;
    uv_timer_stop(&w->tick);
    for (int i = 0; i < w->n_conns; i++)
        if (w->conns[i]->slow) set_reading(w->conns[i], true);
}

static bool drained(bench_worker_t *w, uint64_t now)
{
    if (now - w->last_delivery_ns < QUIET_NS) return false;
    for (int i = 0; i < w->n_conns; i++) {
        bench_conn_t *c = w->conns[i];
        if (c->failed || c->slow) continue;
        if (c->out_tail != c->out_head) return false;
        if (is_kakao(w) && (c->state != BC_READY || c->syncing)) return false;
    }
    return true;
}

static void start_pings(bench_worker_t *w)
{
    w->phase = PH_PING;
    w->phase_deadline = bench_now_ns() + PING_NS;
    for (int i = 0; i < w->n_conns; i++) {
        bench_conn_t *c = w->conns[i];
        if (c->state != BC_READY) continue;
        char req[80];
        int n = snprintf(req, sizeof req, "{\"id\":%" PRIu64 ",\"op\":\"ping\"}", other_id(c, RQ_PING));
        bench_conn_send(c, req, (size_t)n);
    }
}

static void start_connecting(bench_worker_t *w, uint64_t now)
{
    while (w->n_connecting < CONNECT_PARALLEL && w->next_connect < w->n_conns) {
        bench_conn_t *c = w->conns[w->next_connect++];
        c->attempts++;
        w->n_connecting++;
        bench_conn_start(c);
    }
    for (int i = 0; i < w->next_connect && w->n_connecting < CONNECT_PARALLEL; i++) {
        bench_conn_t *c = w->conns[i];
        if (c->state == BC_IDLE && !c->failed && c->retry_at && c->retry_at <= now) {
            c->retry_at = 0;
            c->attempts++;
            w->n_connecting++;
            bench_conn_start(c);
        }
    }
}

static void check_handshakes(bench_worker_t *w, uint64_t now)
{
    for (int i = 0; i < w->n_conns; i++) {
        bench_conn_t *c = w->conns[i];
        if ((c->state == BC_CONNECTING || c->state == BC_UPGRADING || c->state == BC_HELLO) &&
            c->started_ns + HANDSHAKE_NS < now)
            bench_conn_drop(c);
    }
}

static void on_house(uv_timer_t *t)
{
    bench_worker_t *w = t->data;
    uint64_t now = bench_now_ns();
    switch (w->phase) {
    case PH_CONNECT:
        start_connecting(w, now);
        check_handshakes(w, now);
        if (w->n_ready + w->n_failed == w->n_conns) {
            w->phase = PH_WAIT_GO;
            signal_proc(w, true);
        }
        break;
    case PH_RUN:
        if (is_kakao(w)) check_handshakes(w, now);
        if (now >= w->t_end && w->o->scenario != SC_CONNECTIONS) enter_drain(w, now);
        break;
    case PH_DRAIN:
        if (is_kakao(w)) check_handshakes(w, now);
        if (drained(w, now) || now >= w->phase_deadline) finish(w);
        break;
    case PH_PING:
        if (w->n_pinged >= w->n_ready || now >= w->phase_deadline) close_all(w);
        break;
    }
}

static void on_tick(uv_timer_t *t)
{
    bench_worker_t *w = t->data;
    uint64_t now = bench_now_ns();
    if (w->phase != PH_RUN) return;
    if (now >= w->t_end) {
        enter_drain(w, now);
        return;
    }
    if (is_kakao(w)) {
        kakao_tick(w, now);
        return;
    }
    for (int i = 0; i < w->n_senders; i++) {
        bench_conn_t *c = w->senders[i];
        while (c->next_due <= now && w->st.sent < total_sent_cap(w)) {
            if (!enqueue(w, c, c->send_room, c->next_due)) {
                w->st.behind++;
                break; /* window full: it stays due, its latency keeps counting */
            }
            c->next_due += c->interval_ns;
        }
    }
}

static void on_check(uv_check_t *h)
{
    bench_conn_flush_all(h->data);
}

static void start_run(bench_worker_t *w)
{
    w->phase = PH_RUN;
    uint64_t now = bench_now_ns();
    w->last_delivery_ns = now;
    if (w->o->scenario == SC_CONNECTIONS) {
        w->phase = PH_HOLD;
        if (atomic_load(&w->proc->finish)) start_pings(w);
        return;
    }
    for (int i = 0; i < w->n_conns; i++)
        if (w->conns[i]->slow) set_reading(w->conns[i], false);
    if (is_kakao(w)) {
        w->next_arrival = (double)w->t0;
        w->next_reconnect = (double)w->t0 + 1e6;
    }
    for (int i = 0; i < w->n_senders; i++) {
        bench_conn_t *c = w->senders[i];
        if (w->o->rate > 0) {
            c->next_due = w->t0 + bench_rand(w) % FB_MAX(c->interval_ns, 1);
        } else {
            refill(w, c);
        }
    }
    if (w->o->rate > 0) uv_timer_start(&w->tick, on_tick, 1, 1);
}

static void on_go_timer(uv_timer_t *t)
{
    bench_worker_t *w = t->data;
    uv_timer_stop(t);
    start_run(w);
}

static void on_wake(uv_async_t *a)
{
    bench_worker_t *w = a->data;
    bench_proc_t *p = w->proc;
    uint64_t go = atomic_load(&p->go_ns);
    if (w->phase == PH_WAIT_GO && go) {
        w->t0 = go;
        w->t_window0 = go + w->o->warmup_ns;
        w->t_end = go + w->o->duration_ns;
        uint64_t now = bench_now_ns();
        uv_timer_start(&w->tick, on_go_timer, go > now ? (go - now) / 1000000 : 0, 0);
        w->phase = PH_ARMED;
    }
    if (atomic_load(&p->finish) && w->phase == PH_HOLD) start_pings(w);
}

/* ---- connection events ---- */

void bench_on_ready(bench_conn_t *c)
{
    bench_worker_t *w = c->w;
    c->attempts = 0;
    for (int i = 0; i < c->n_rx; i++) c->rx[i].last_push = 0;
    if (w->phase == PH_CONNECT) {
        w->n_connecting--;
        w->n_ready++;
        w->st.connected++;
        return;
    }
    /* a reconnect (kakao): catch up, then resend what was not acknowledged */
    start_sync(w, c);
}

void bench_on_lost(bench_conn_t *c, const char *why)
{
    bench_worker_t *w = c->w;
    uint64_t now = bench_now_ns();
    if (w->phase == PH_CONNECT) {
        w->n_connecting--;
        if (c->attempts >= CONNECT_ATTEMPTS) {
            c->failed = true;
            w->n_failed++;
            w->st.connect_failures++;
            error(w, "connect_failed");
            fprintf(stderr, "bench: connection %d gave up: %s\n", c->idx, why);
        } else {
            c->retry_at = now + 200000000ull * (uint64_t)c->attempts;
        }
        return;
    }
    if (w->phase == PH_CLOSE) return;
    if (c->slow) {
        w->st.slow_closed++;
        return;
    }
    if (is_kakao(w) && (w->phase == PH_ARMED || w->phase == PH_RUN || w->phase == PH_DRAIN)) {
        if (!c->down_ns) { /* not our doing */
            c->down_ns = now;
            w->st.conns_lost++;
            error(w, "connection_lost");
            fprintf(stderr, "bench: connection %d lost: %s\n", c->idx, why);
        }
        for (uint64_t n = c->out_tail; n < c->out_head; n++)
            if (slot_of(c, n)->state == 2) {
                slot_of(c, n)->state = 1;
                w->st.resent++;
            }
        c->out_sent = c->out_tail;
        c->syncing = false;
        c->attempts++;
        bench_conn_start(c); /* at once: the outage stays short */
        return;
    }
    if (c->close_code == 4002) {
        w->st.slow_closed++;
        return;
    }
    w->st.conns_lost++;
    error(w, "connection_lost");
    fprintf(stderr, "bench: connection %d lost: %s\n", c->idx, why);
}

/* ---- setup of a worker's connections ---- */

static int conn_worker(const bench_opts_t *o, const bench_world_t *wd, int i, int n_workers)
{
    switch (o->scenario) {
    case SC_INGEST: return wd->rooms[i / o->members].owner;
    case SC_KAKAO: return i % n_workers; /* the shard of user i */
    default: return i % n_workers;
    }
}

static int ring_size(int window)
{
    int n = 1;
    while (n < window) n <<= 1;
    return n;
}

static bench_conn_t *new_conn(bench_worker_t *w, int idx, int user)
{
    bench_conn_t *c = fb_calloc(1, sizeof *c);
    c->w = w;
    c->idx = idx;
    c->user = user;
    c->state = BC_IDLE;
    if (w->o->scenario != SC_CONNECTIONS) {
        const int *rooms;
        c->n_rx = bench_user_rooms(w->world, user, &rooms);
        c->rx = fb_calloc((size_t)FB_MAX(c->n_rx, 1), sizeof *c->rx);
        for (int k = 0; k < c->n_rx; k++) {
            c->rx[k].room = rooms[k];
            c->rx[k].next = w->world->rooms[rooms[k]].base + 1;
            c->rx[k].conn = c;
        }
    }
    if (is_kakao(w)) {
        int n = ring_size(w->o->window);
        c->slots = fb_calloc((size_t)n, sizeof *c->slots);
        c->slot_mask = (uint32_t)n - 1;
    }
    return c;
}

static void make_sender(bench_worker_t *w, bench_conn_t *c, int room, int n_senders)
{
    int n = ring_size(w->o->window);
    c->sender = true;
    c->send_room = room;
    c->slots = fb_calloc((size_t)n, sizeof *c->slots);
    c->slot_mask = (uint32_t)n - 1;
    if (w->o->rate > 0) c->interval_ns = (uint64_t)(1e9 * n_senders / w->o->rate);
    w->senders = fb_realloc(w->senders, (size_t)(w->n_senders + 1) * sizeof *w->senders);
    w->senders[w->n_senders++] = c;
}

static void assign(bench_proc_t *p)
{
    const bench_opts_t *o = p->o;
    bench_world_t *wd = p->world;
    int W = p->n_workers_total;
    int n = o->scenario == SC_CONNECTIONS ? o->conns : wd->n_users;
    bench_conn_t **by_user = o->scenario == SC_CONNECTIONS
                                 ? NULL
                                 : fb_calloc((size_t)FB_MAX(wd->n_users, 1), sizeof *by_user);
    for (int i = 0; i < n; i++) {
        int g = conn_worker(o, wd, i, W);
        if (g / o->threads != p->index) continue;
        bench_worker_t *w = &p->workers[g % o->threads];
        bench_conn_t *c = new_conn(w, i, o->scenario == SC_CONNECTIONS ? i % wd->n_users : i);
        w->conns = fb_realloc(w->conns, (size_t)(w->n_conns + 1) * sizeof *w->conns);
        w->conns[w->n_conns++] = c;
        if (by_user) by_user[i] = c;
    }
    if (o->scenario == SC_INGEST) {
        for (int k = 0; k < o->senders; k++) {
            int r = k % o->rooms, u = r * o->members + (k / o->rooms) % o->members;
            if (by_user[u]) make_sender(by_user[u]->w, by_user[u], r, o->senders);
        }
    } else if (o->scenario == SC_FANOUT) {
        for (int k = 0; k < o->senders; k++)
            if (by_user[k * W]) make_sender(by_user[k * W]->w, by_user[k * W], 0, o->senders);
        /* the slow readers: the last members, never senders */
        for (int k = 0; k < o->slow_readers; k++) {
            int u = o->members - 1 - k;
            if (u >= 0 && by_user[u] && !by_user[u]->sender) by_user[u]->slow = true;
        }
    }
    fb_free(by_user);
}

static void set_reading(bench_conn_t *c, bool on)
{
    /* A slow reader stops reading; the node's output for it piles up
     * until max_output_bytes, then the node closes it (4002). */
    if (c->state != BC_READY) return;
    if (!on) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->read_stopped = true;
    } else if (c->read_stopped) {
        c->read_stopped = false;
        bench_conn_resume(c);
    }
}

static void worker_main(void *arg)
{
    bench_worker_t *w = arg;
    w->phase = PH_CONNECT;
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

static void worker_init(bench_proc_t *p, bench_worker_t *w, int t)
{
    w->index = p->index * p->o->threads + t;
    w->proc = p;
    w->o = p->o;
    w->world = p->world;
    w->rng = bench_mix(w->index + 1, p->o->seed) | 1;
    bench_stats_init(&w->st);
    uv_loop_init(&w->loop);
    uv_timer_init(&w->loop, &w->tick);
    uv_timer_init(&w->loop, &w->house);
    uv_check_init(&w->loop, &w->check);
    uv_async_init(&w->loop, &w->wake, on_wake);
    w->tick.data = w->house.data = w->check.data = w->wake.data = w;
    uv_check_start(&w->check, on_check);
    uv_timer_start(&w->house, on_house, 0, 20);
    w->filler = fb_malloc((size_t)p->o->size + 1);
    for (int i = 0; i < p->o->size; i++) w->filler[i] = (char)('a' + i % 26);
    if (p->o->scenario == SC_KAKAO) w->wheel = fb_calloc(WHEEL, sizeof *w->wheel);
}

static void worker_free(bench_worker_t *w)
{
    uv_loop_close(&w->loop);
    for (int i = 0; i < w->n_conns; i++) bench_conn_free(w->conns[i]);
    fb_free(w->conns);
    fb_free(w->senders);
    fb_free(w->wheel);
    fb_free(w->filler);
    fb_buf_free(&w->frame);
    bench_stats_free(&w->st);
}

static void wait_count(bench_proc_t *p, int *what, int n)
{
    uv_mutex_lock(&p->mu);
    while (*what < n) uv_cond_wait(&p->cv, &p->mu);
    uv_mutex_unlock(&p->mu);
}

static void wake_all(bench_proc_t *p)
{
    for (int t = 0; t < p->n_workers; t++) uv_async_send(&p->workers[t].wake);
}

/* The partial result of this process: counters, the check of every
 * receiver whose room this process owns, and what other processes need to
 * check theirs (room summaries, receivers of rooms owned elsewhere). */
static json_t *partial(bench_proc_t *p)
{
    bench_world_t *wd = p->world;
    int T = p->o->threads;
    bench_stats_t st;
    bench_stats_init(&st);
    for (int t = 0; t < p->n_workers; t++) bench_stats_merge(&st, &p->workers[t].st);
    json_t **summ = fb_calloc((size_t)FB_MAX(wd->n_rooms, 1), sizeof *summ);
    json_t *rooms = json_array(), *rxs = json_array();
    bench_verdict_t v = {0};
    uint64_t slow = 0;
    for (int r = 0; r < wd->n_rooms; r++)
        if (wd->rooms[r].owner / T == p->index) summ[r] = bench_room_summary(&wd->rooms[r]);
    for (int t = 0; t < p->n_workers; t++)
        for (int i = 0; i < p->workers[t].n_conns; i++) {
            bench_conn_t *c = p->workers[t].conns[i];
            if (c->slow || c->failed) {
                slow += c->slow;
                continue;
            }
            for (int k = 0; k < c->n_rx; k++) {
                json_t *rx = bench_rx_json(wd, &c->rx[k]);
                if (summ[c->rx[k].room]) {
                    bench_check_rx(summ[c->rx[k].room], rx, &v);
                    json_decref(rx);
                } else {
                    json_array_append_new(rxs, rx);
                }
            }
        }
    /* rooms with members in other processes travel to the parent */
    for (int r = 0; r < wd->n_rooms && p->n_procs > 1; r++) {
        if (!summ[r]) continue;
        for (int k = 0; k < wd->rooms[r].n_members; k++)
            if (conn_worker(p->o, wd, wd->rooms[r].members[k], p->n_workers_total) / T != p->index) {
                json_array_append(rooms, summ[r]);
                break;
            }
    }
    for (int r = 0; r < wd->n_rooms; r++) json_decref(summ[r]);
    fb_free(summ);
    json_t *out = json_pack("{s:i,s:o,s:o,s:o,s:{s:I,s:I,s:I,s:I,s:I,s:I},s:I}", "proc", p->index,
                            "stats", bench_stats_json(&st), "rooms", rooms, "rx", rxs, "verdict",
                            "receivers", (json_int_t)v.receivers, "lost", (json_int_t)v.lost,
                            "extra", (json_int_t)v.extra, "dups", (json_int_t)v.dups, "mismatch",
                            (json_int_t)v.mismatch, "unchecked", (json_int_t)v.unchecked,
                            "slow_readers", (json_int_t)slow);
    bench_stats_free(&st);
    return out;
}

json_t *bench_proc_run(bench_proc_t *p)
{
    const bench_opts_t *o = p->o;
    p->n_workers = o->threads;
    p->workers = fb_calloc((size_t)p->n_workers, sizeof *p->workers);
    uv_mutex_init(&p->mu);
    uv_cond_init(&p->cv);
    for (int r = 0; r < p->world->n_rooms; r++) p->world->rooms[r].max_acked = p->world->rooms[r].base;
    for (int t = 0; t < p->n_workers; t++) worker_init(p, &p->workers[t], t);
    assign(p);
    for (int t = 0; t < p->n_workers; t++)
        uv_thread_create(&p->workers[t].thread, worker_main, &p->workers[t]);
    wait_count(p, &p->ready, p->n_workers);
    uint64_t connected = 0;
    for (int t = 0; t < p->n_workers; t++) connected += (uint64_t)p->workers[t].n_ready;
    atomic_store(&p->go_ns, p->wait_go(p, connected));
    wake_all(p);
    if (o->scenario == SC_CONNECTIONS) {
        p->hold(p);
        atomic_store(&p->finish, 1);
        wake_all(p);
    }
    for (int t = 0; t < p->n_workers; t++) uv_thread_join(&p->workers[t].thread);
    json_t *out = partial(p);
    json_object_set_new(out, "window_s", json_real((double)(o->duration_ns - o->warmup_ns) / 1e9));
    for (int t = 0; t < p->n_workers; t++) worker_free(&p->workers[t]);
    fb_free(p->workers);
    uv_mutex_destroy(&p->mu);
    uv_cond_destroy(&p->cv);
    return out;
}
