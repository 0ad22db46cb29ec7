/* Internals of `firebreak bench` shared by its files: options, the world the
 * setup built (users, tokens, rooms), the lean load connection, workers (one
 * libuv loop per thread), latency histograms and the delivery check. Only
 * src/tools/bench*.c include this; nothing here is part of the client library.
 *
 * bench.c        flags, processes, the report (text and --json)
 * bench_setup.c  users and rooms, made with the client library
 * bench_conn.c   one load connection: TCP, upgrade, wslay frames, hello
 * bench_run.c    workers and the scenarios' traffic
 * bench_check.c  histograms, per-room delivery records, the loss check
 * bench_limits.c the machine's own limits (fsync, loopback, SQLite)
 * SPDX-License-Identifier: MIT */
#ifndef FB_BENCH_H
#define FB_BENCH_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <uv.h>

#include "common/fb.h"
#include "common/map.h"

enum { SC_INGEST, SC_FANOUT, SC_KAKAO, SC_CONNECTIONS };

typedef struct {
    int scenario;
    char **servers; /* node addresses, "127.0.0.1:8080" */
    int n_servers;
    char **binds; /* source addresses; process p uses binds[p % n] */
    int n_binds;
    int procs, threads;
    uint64_t duration_ns, warmup_ns, drain_ns, settle_ns;
    double rate;        /* offered messages/s over all senders; 0: as fast as acks allow */
    int window;         /* unacknowledged sends per sender */
    int senders, rooms, members, users, conns;
    int size;           /* bytes of message text */
    uint64_t max_messages;
    double read_prob, read_delay_s, reconnects_per_s;
    int big_rooms, big_min, big_max;
    int slow_readers;   /* fanout: members that stop reading */
    int node_pid;       /* for the node's RSS */
    bool full_parse;    /* jansson for every frame (no fast path) */
    bool text_out;
    const char *json_path; /* "-" for stdout */
    const char *password;
    int setup_parallel;
    uint32_t seed;
    char run_id[8];
    char cmdline[1024];
} bench_opts_t;

/* ---- the world the setup made ---- */

typedef struct {
    char name[40];
    char token[72];
    int64_t id;
} bench_user_t;

typedef struct {
    int64_t id;
    int64_t base;   /* the room's last_seq once set up: bench messages come after it */
    int owner;      /* global worker that sends into it and keeps its acks */
    int n_members;
    int *members;   /* user indexes; members[0] creates the room */
    bool direct;    /* a 1:1 room (made with `direct`) */
    /* Acknowledged messages, kept by the owner only: content hash per
     * seq - base - 1 (0: not acknowledged). */
    uint64_t *acked;
    size_t acked_cap;
    int64_t max_acked;
    uint64_t n_acked;
} bench_room_t;

typedef struct {
    bench_user_t *users;
    int n_users;
    bench_room_t *rooms;
    int n_rooms;
    int *user_room_off; /* rooms of user u: user_rooms[off[u] .. off[u+1]) */
    int *user_rooms;
    fb_map_t room_by_id; /* room id -> bench_room_t* (read-only once built) */
} bench_world_t;

/* Plans the users and rooms of the scenario (no network). */
void bench_world_plan(bench_world_t *w, const bench_opts_t *o, int n_workers);
/* Registers the users and creates the rooms through the client library. */
int bench_world_setup(bench_world_t *w, const bench_opts_t *o);
void bench_world_index(bench_world_t *w);
void bench_world_free(bench_world_t *w);
int bench_user_rooms(const bench_world_t *w, int user, const int **rooms);

/* ---- latency histograms (log-linear, about 3% resolution) ---- */

#define BH_SUB 32
#define BH_EXP 40
typedef struct {
    uint64_t count[BH_EXP * BH_SUB];
    uint64_t n, max;
    double sum;
} bench_hist_t;

void bench_hist_add(bench_hist_t *h, uint64_t ns);
void bench_hist_merge(bench_hist_t *into, const bench_hist_t *h);
uint64_t bench_hist_pct(const bench_hist_t *h, double p);
json_t *bench_hist_json(const bench_hist_t *h);       /* sparse, for merging */
void bench_hist_from_json(bench_hist_t *h, json_t *j); /* adds */
json_t *bench_hist_summary(const bench_hist_t *h);    /* p50, p99, p99.9, max in ms */

/* ---- what each receiving connection saw of one room ---- */

#define BRX_MAX_GAPS 8
typedef struct bench_rx {
    int room;            /* world room index */
    int64_t next;        /* next seq expected (cursor + 1) */
    int64_t last_push;   /* highest seq pushed on the current TCP connection */
    int64_t sync_from;   /* the cursor of the sync in flight */
    uint64_t sum;        /* content checksum of what was applied */
    uint64_t dups;       /* an event received twice */
    int n_gaps;          /* ranges never received (pushes skipped seqs) */
    bool gaps_overflow;
    int64_t gaps[BRX_MAX_GAPS][2];
    /* kakao: a pending read marker */
    bool read_pending;
    uint64_t read_due;
    struct bench_rx *read_next;
    struct bench_conn *conn;
} bench_rx_t;

uint64_t bench_content_hash(const char *cmid, size_t cmid_len, const char *text, size_t text_len);
uint64_t bench_mix(int64_t seq, uint64_t h);
/* A room's acknowledged messages as a JSON summary (runs of seqs, checksum). */
json_t *bench_room_summary(const bench_room_t *r);
json_t *bench_rx_json(const bench_world_t *w, const bench_rx_t *rx);

typedef struct {
    uint64_t receivers, lost, extra, dups, mismatch, unchecked;
} bench_verdict_t;

/* Checks one receiver against its room's summary; adds to v. */
void bench_check_rx(json_t *room_summary, json_t *rx, bench_verdict_t *v);

/* ---- counters of one worker (and their sums) ---- */

typedef struct {
    uint64_t sent, acked, acked_in_window, dup_acks, resent;
    uint64_t deliveries, deliveries_in_window, sync_events;
    uint64_t reads_sent, reads_acked, read_events;
    uint64_t reconnects, resyncs, behind, fast_frames, slow_frames;
    uint64_t connected, connect_failures, conns_lost, slow_closed, pings_ok;
    uint64_t errors;
    uint64_t seq_conflicts; /* two acks naming one (room, seq) */
    bench_hist_t ack, deliv, reconnect;
    json_t *error_codes; /* {"code": count} */
} bench_stats_t;

void bench_stats_init(bench_stats_t *s);
void bench_stats_free(bench_stats_t *s);
void bench_stats_error(bench_stats_t *s, const char *code);
void bench_stats_merge(bench_stats_t *into, const bench_stats_t *s);
json_t *bench_stats_json(const bench_stats_t *s);
void bench_stats_from_json(bench_stats_t *s, json_t *j); /* adds */

/* ---- the load connection (bench_conn.c) ---- */

enum { BC_IDLE, BC_CONNECTING, BC_UPGRADING, BC_HELLO, BC_READY, BC_CLOSING, BC_CLOSED };

typedef struct bench_worker bench_worker_t;
typedef struct bench_conn bench_conn_t;

/* The outbox of a sending connection: a ring of messages by number. */
typedef struct {
    uint64_t t_ns;   /* intended send time (latency counts from here) */
    uint64_t h;      /* content hash */
    int room;        /* world room index */
    uint8_t state;   /* 0 free, 1 queued (not on the wire), 2 in flight, 3 acked */
} bench_slot_t;

struct bench_conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    bench_worker_t *w;
    int idx;   /* connection number in the run */
    int user;  /* world user index */
    int state;
    int attempts;
    uint64_t gen; /* TCP connections made so far (reconnects) */
    void *t;      /* transport internals (bench_conn.c) */
    fb_buf_t out, wbuf;
    bool writing, dirty, read_stopped;
    bench_conn_t *dirty_next;
    uint64_t down_ns;    /* when a reconnect started */
    uint64_t started_ns; /* when this TCP connection was started */
    uint64_t retry_at;   /* connecting: next attempt */
    bool failed, slow;   /* gave up connecting; a slow reader (fanout) */
    /* sending */
    bool sender;
    int send_room;           /* ingest/fanout: world room index */
    uint64_t next_due;       /* rate mode: next intended send */
    uint64_t interval_ns;
    uint64_t out_head, out_tail; /* message numbers: next new, oldest unacked */
    uint64_t out_sent;       /* next message number to put on the wire */
    bench_slot_t *slots;
    uint32_t slot_mask;
    uint64_t req_id;         /* ids of other requests */
    /* receiving */
    bench_rx_t *rx;
    int n_rx;
    bool syncing, resync;
    int close_code;
};

/* Starts (or restarts) the connection: TCP, upgrade, hello with the user's
 * token. The worker's on_ready / on_lost are called. */
int bench_conn_start(bench_conn_t *c);
/* Queues one text frame (masked by wslay); written at the next flush. */
void bench_conn_send(bench_conn_t *c, const char *data, size_t len);
/* Drops the TCP connection at once (no close frame): a network loss. */
void bench_conn_drop(bench_conn_t *c);
void bench_conn_close(bench_conn_t *c); /* for good */
void bench_conn_resume(bench_conn_t *c); /* reading again after uv_read_stop */
void bench_conn_flush_all(bench_worker_t *w);
void bench_conn_free(bench_conn_t *c);

/* ---- workers (bench_run.c) ---- */

struct bench_worker {
    int index;  /* global: proc * threads + thread */
    const bench_opts_t *o;
    bench_world_t *world;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_timer_t tick, house;
    uv_check_t check;
    uv_async_t wake;
    bench_conn_t **conns;
    int n_conns;
    int n_connecting, next_connect;
    bench_conn_t *dirty;
    bench_conn_t **senders;
    int n_senders;
    uint64_t rng;
    uint64_t t0, t_end, t_window0; /* monotonic ns */
    uint64_t last_delivery_ns, drain_deadline;
    double next_arrival, next_reconnect; /* kakao, ns */
    /* kakao read markers: a wheel of 1 ms slots */
    bench_rx_t **wheel;
    uint64_t wheel_pos;
    int phase; /* see bench_run.c */
    int n_ready, n_failed, n_pinged;
    uint64_t phase_deadline;
    fb_buf_t frame; /* scratch for composing requests */
    char *filler;   /* message text padding */
    bench_stats_t st;
    struct bench_proc *proc;
    char readbuf[65536]; /* shared by the worker's connections */
};

/* Frames of a ready connection. */
void bench_on_text(bench_conn_t *c, const char *data, size_t len);
void bench_on_ready(bench_conn_t *c);
void bench_on_lost(bench_conn_t *c, const char *why);
uint64_t bench_rand(bench_worker_t *w);

typedef struct bench_proc {
    int index, n_procs;
    const bench_opts_t *o;
    bench_world_t *world;
    int n_workers_total;
    bench_worker_t *workers;
    int n_workers;
    uv_mutex_t mu;
    uv_cond_t cv;
    int ready, done;
    struct sockaddr_in *targets; /* the node(s); connection i goes to targets[i % n] */
    int n_targets;
    struct sockaddr_in source; /* bound before connecting when bind_source */
    bool bind_source;
    /* Set by the caller: the barrier after connecting (returns the start
     * time, monotonic ns) and, for `connections`, the hold while the node
     * is measured. */
    uint64_t (*wait_go)(struct bench_proc *p, uint64_t connected);
    void (*hold)(struct bench_proc *p);
    void *ud;
    atomic_uint_fast64_t go_ns;
    atomic_int finish;
    uint64_t window_ns;
} bench_proc_t;

/* Runs one process's share (its workers) and returns its partial result. */
json_t *bench_proc_run(bench_proc_t *p);

/* ---- report and node probes (bench.c) ---- */
uint64_t bench_now_ns(void);
int64_t bench_node_rss_kib(int pid);
/* GET /metrics of the first server; the value of one metric, or -1. */
double bench_node_metric(const bench_opts_t *o, const char *name);
int bench_parse_duration(const char *s, uint64_t *ns);

/* ---- machine limits (bench_limits.c) ---- */
int bench_limits_main(int argc, char **argv);

#endif
