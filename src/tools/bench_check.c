/* What `firebreak bench` counts and how it decides that nothing was lost:
 * latency histograms, the workers' counters, and the delivery check. Every
 * receiving connection keeps, per room, the next seq it expects, the ranges
 * it never got, a duplicate count and a checksum of what it applied; the
 * room's owner keeps the content hash of every acknowledged seq. A receiver
 * passes when it got exactly the acknowledged seqs, none twice, with the
 * acknowledged contents (the checksums match). Both sides travel as small
 * JSON summaries, so processes can be checked against each other.
 * SPDX-License-Identifier: MIT */
#include "tools/bench.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- histograms ----
 * Buckets 0..63 hold values 0..63 exactly; above, 32 buckets per power of
 * two (about 3% wide). Values are nanoseconds. */

static int bucket_of(uint64_t v)
{
    if (v < 2 * BH_SUB) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int e = msb - 5;
    int b = (e + 1) * BH_SUB + (int)((v >> e) - BH_SUB);
    return FB_MIN(b, BH_EXP * BH_SUB - 1);
}

static uint64_t bucket_top(int b)
{
    if (b < 2 * BH_SUB) return (uint64_t)b;
    int e = b / BH_SUB - 1;
    uint64_t m = BH_SUB + (uint64_t)(b % BH_SUB);
    return ((m + 1) << e) - 1;
}

void bench_hist_add(bench_hist_t *h, uint64_t ns)
{
    h->count[bucket_of(ns)]++;
    h->n++;
    h->sum += (double)ns;
    if (ns > h->max) h->max = ns;
}

void bench_hist_merge(bench_hist_t *into, const bench_hist_t *h)
{
    for (size_t i = 0; i < FB_ARRAY_LEN(h->count); i++) into->count[i] += h->count[i];
    into->n += h->n;
    into->sum += h->sum;
    if (h->max > into->max) into->max = h->max;
}

uint64_t bench_hist_pct(const bench_hist_t *h, double p)
{
    if (!h->n) return 0;
    uint64_t want = (uint64_t)(p * (double)h->n + 0.5), seen = 0;
    if (want < 1) want = 1;
    for (size_t i = 0; i < FB_ARRAY_LEN(h->count); i++) {
        seen += h->count[i];
        if (seen >= want) return FB_MIN(bucket_top((int)i), h->max);
    }
    return h->max;
}

json_t *bench_hist_json(const bench_hist_t *h)
{
    json_t *b = json_array();
    for (size_t i = 0; i < FB_ARRAY_LEN(h->count); i++)
        if (h->count[i])
            json_array_append_new(b, json_pack("[i,I]", (int)i, (json_int_t)h->count[i]));
    return json_pack("{s:I,s:I,s:f,s:o}", "n", (json_int_t)h->n, "max", (json_int_t)h->max,
                     "sum", h->sum, "buckets", b);
}

void bench_hist_from_json(bench_hist_t *h, json_t *j)
{
    size_t i;
    json_t *e;
    h->n += (uint64_t)json_integer_value(json_object_get(j, "n"));
    h->sum += json_real_value(json_object_get(j, "sum"));
    uint64_t max = (uint64_t)json_integer_value(json_object_get(j, "max"));
    if (max > h->max) h->max = max;
    json_array_foreach(json_object_get(j, "buckets"), i, e)
    {
        json_int_t b = json_integer_value(json_array_get(e, 0));
        if (b >= 0 && (size_t)b < FB_ARRAY_LEN(h->count))
            h->count[b] += (uint64_t)json_integer_value(json_array_get(e, 1));
    }
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

json_t *bench_hist_summary(const bench_hist_t *h)
{
    return json_pack("{s:I,s:f,s:f,s:f,s:f,s:f}", "n", (json_int_t)h->n, "mean",
                     h->n ? ms((uint64_t)(h->sum / (double)h->n)) : 0.0, "p50",
                     ms(bench_hist_pct(h, 0.50)), "p99", ms(bench_hist_pct(h, 0.99)), "p999",
                     ms(bench_hist_pct(h, 0.999)), "max", ms(h->max));
}

/* ---- content checksums ---- */

uint64_t bench_content_hash(const char *cmid, size_t cmid_len, const char *text, size_t text_len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < cmid_len; i++) h = (h ^ (uint8_t)cmid[i]) * 0x100000001b3ull;
    h = (h ^ 0xff) * 0x100000001b3ull; /* separator: ("ab","c") != ("a","bc") */
    for (size_t i = 0; i < text_len; i++) h = (h ^ (uint8_t)text[i]) * 0x100000001b3ull;
    return h | 1; /* 0 means "not acknowledged" in a room's record */
}

uint64_t bench_mix(int64_t seq, uint64_t h)
{
    uint64_t z = h ^ ((uint64_t)seq * 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static json_t *hex64(uint64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%016" PRIx64, v);
    return json_string(b);
}

static uint64_t unhex64(json_t *j)
{
    const char *s = json_string_value(j);
    return s ? strtoull(s, NULL, 16) : 0;
}

json_t *bench_room_summary(const bench_room_t *r)
{
    json_t *runs = json_array();
    uint64_t sum = 0;
    int64_t run_start = 0;
    int64_t top = r->max_acked - r->base;
    for (int64_t i = 0; i <= top; i++) {
        bool acked = i < top && r->acked[i];
        int64_t seq = r->base + 1 + i;
        if (acked) {
            sum += bench_mix(seq, r->acked[i]);
            if (!run_start) run_start = seq;
        } else if (run_start) {
            json_array_append_new(runs, json_pack("[I,I]", (json_int_t)run_start,
                                                  (json_int_t)(seq - 1)));
            run_start = 0;
        }
    }
    return json_pack("{s:I,s:I,s:I,s:o,s:o}", "room", (json_int_t)r->id, "base",
                     (json_int_t)r->base, "n", (json_int_t)r->n_acked, "sum", hex64(sum), "runs",
                     runs);
}

json_t *bench_rx_json(const bench_world_t *w, const bench_rx_t *rx)
{
    json_t *gaps = json_array();
    for (int i = 0; i < rx->n_gaps; i++)
        json_array_append_new(gaps, json_pack("[I,I]", (json_int_t)rx->gaps[i][0],
                                              (json_int_t)rx->gaps[i][1]));
    return json_pack("{s:I,s:I,s:o,s:b,s:o,s:I}", "room", (json_int_t)w->rooms[rx->room].id,
                     "next", (json_int_t)rx->next, "gaps", gaps, "overflow", rx->gaps_overflow,
                     "sum", hex64(rx->sum), "dups", (json_int_t)rx->dups);
}

static int64_t jint(json_t *o, const char *k)
{
    return (int64_t)json_integer_value(json_object_get(o, k));
}

/* |[a,b] ∩ received|, received being [lo, hi] minus the gaps. */
static int64_t overlap_received(int64_t a, int64_t b, int64_t lo, int64_t hi, json_t *gaps)
{
    a = FB_MAX(a, lo);
    b = FB_MIN(b, hi);
    if (a > b) return 0;
    int64_t n = b - a + 1;
    size_t i;
    json_t *g;
    json_array_foreach(gaps, i, g)
    {
        int64_t ga = FB_MAX(a, (int64_t)json_integer_value(json_array_get(g, 0)));
        int64_t gb = FB_MIN(b, (int64_t)json_integer_value(json_array_get(g, 1)));
        if (ga <= gb) n -= gb - ga + 1;
    }
    return n;
}

void bench_check_rx(json_t *room, json_t *rx, bench_verdict_t *v)
{
    int64_t base = jint(room, "base"), n_acked = jint(room, "n");
    int64_t lo = base + 1, hi = jint(rx, "next") - 1;
    json_t *gaps = json_object_get(rx, "gaps");
    v->receivers++;
    v->dups += (uint64_t)jint(rx, "dups");
    int64_t got_acked = 0;
    size_t i;
    json_t *run;
    json_array_foreach(json_object_get(room, "runs"), i, run)
    got_acked += overlap_received(json_integer_value(json_array_get(run, 0)),
                                  json_integer_value(json_array_get(run, 1)), lo, hi, gaps);
    int64_t received = hi >= lo ? overlap_received(lo, hi, lo, hi, gaps) : 0;
    int64_t lost = n_acked - got_acked, extra = received - got_acked;
    v->lost += (uint64_t)FB_MAX(lost, 0);
    v->extra += (uint64_t)FB_MAX(extra, 0);
    if (json_is_true(json_object_get(rx, "overflow"))) {
        v->unchecked++; /* more gaps than recorded: the counts above are a lower bound */
    } else if (lost == 0 && extra == 0 &&
               unhex64(json_object_get(rx, "sum")) != unhex64(json_object_get(room, "sum"))) {
        v->mismatch++;
    }
}

/* ---- counters ---- */

void bench_stats_init(bench_stats_t *s)
{
    memset(s, 0, sizeof *s);
    s->error_codes = json_object();
}

void bench_stats_free(bench_stats_t *s)
{
    json_decref(s->error_codes);
    s->error_codes = NULL;
}

void bench_stats_error(bench_stats_t *s, const char *code)
{
    s->errors++;
    json_t *v = json_object_get(s->error_codes, code);
    json_object_set_new(s->error_codes, code, json_integer(v ? json_integer_value(v) + 1 : 1));
}

/* The plain counters, by name and offset: one list for merging and JSON. */
#define BENCH_COUNTERS(X)                                                                    \
    X(sent) X(acked) X(acked_in_window) X(dup_acks) X(resent) X(deliveries)                \
    X(deliveries_in_window) X(sync_events) X(reads_sent) X(reads_acked) X(read_events)    \
    X(reconnects) X(resyncs) X(behind) X(fast_frames) X(slow_frames) X(connected)         \
    X(connect_failures) X(conns_lost) X(slow_closed) X(pings_ok) X(errors) X(seq_conflicts)

void bench_stats_merge(bench_stats_t *into, const bench_stats_t *s)
{
#define X(f) into->f += s->f;
    BENCH_COUNTERS(X)
#undef X
    bench_hist_merge(&into->ack, &s->ack);
    bench_hist_merge(&into->deliv, &s->deliv);
    bench_hist_merge(&into->reconnect, &s->reconnect);
    const char *k;
    json_t *v;
    json_object_foreach(s->error_codes, k, v)
    {
        json_t *have = json_object_get(into->error_codes, k);
        json_object_set_new(into->error_codes, k,
                            json_integer(json_integer_value(v) + (have ? json_integer_value(have) : 0)));
    }
}

json_t *bench_stats_json(const bench_stats_t *s)
{
    json_t *o = json_object();
#define X(f) json_object_set_new(o, #f, json_integer((json_int_t)s->f));
    BENCH_COUNTERS(X)
#undef X
    json_object_set_new(o, "hist_ack", bench_hist_json(&s->ack));
    json_object_set_new(o, "hist_deliv", bench_hist_json(&s->deliv));
    json_object_set_new(o, "hist_reconnect", bench_hist_json(&s->reconnect));
    json_object_set(o, "error_codes", s->error_codes);
    return o;
}

void bench_stats_from_json(bench_stats_t *s, json_t *j)
{
    bench_stats_t t;
    bench_stats_init(&t);
#define X(f) t.f = (uint64_t)json_integer_value(json_object_get(j, #f));
    BENCH_COUNTERS(X)
#undef X
    bench_hist_from_json(&t.ack, json_object_get(j, "hist_ack"));
    bench_hist_from_json(&t.deliv, json_object_get(j, "hist_deliv"));
    bench_hist_from_json(&t.reconnect, json_object_get(j, "hist_reconnect"));
    json_object_update(t.error_codes, json_object_get(j, "error_codes"));
    bench_stats_merge(s, &t);
    bench_stats_free(&t);
}
