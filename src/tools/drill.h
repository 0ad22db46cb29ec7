/* Internals shared by the files of `firebreak drill` (docs/drill.md): the
 * options, the clients with what each saw, and the figures of a run.
 * drill.c parses and reports, drill_load.c sets up and drives the load and
 * the fault commands, drill_check.c reads everything back and judges.
 * Nothing outside src/tools/drill*.c may include this.
 * SPDX-License-Identifier: MIT */
#ifndef FB_TOOLS_DRILL_H
#define FB_TOOLS_DRILL_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "client/client.h"

/* exit statuses */
enum {
    DRILL_EXIT_OK = 0,
    DRILL_EXIT_USAGE = 1,
    DRILL_EXIT_SETUP = 2,     /* could not register the users or create the rooms */
    DRILL_EXIT_VERIFY = 3,    /* no site answered the read-back: nothing proven */
    DRILL_EXIT_VIOLATION = 4, /* lost, duplicated, reordered, gaps, misplaced... */
    DRILL_EXIT_UNACKED = 5,   /* sends never acknowledged (without --expect-write-stop) */
    DRILL_EXIT_COMMAND = 6,   /* the fault or heal command failed or timed out */
};

/* Bounds: every count a flag or a server can grow is capped here. */
#define DRILL_MAX_CLIENTS 2000 /* senders + readers */
#define DRILL_MAX_ROOMS 1000
#define DRILL_MAX_SITES 64
#define DRILL_MAX_MESSAGES_CAP 5000000 /* --max-messages ceiling */
#define DRILL_CMD_OUTPUT_KEEP 8192     /* bytes of a command's output kept for JSON */
#define DRILL_PREFIX_MAX 20            /* user names are prefix + "-s1999": <= 32 */
#define DRILL_TICK_MS 10
#define DRILL_EXTRA_SLOTS 16 /* rooms a reader may see beyond the drill's */
#define DRILL_PAGE 200       /* history page (the server's default history_page_max) */

typedef struct {
    char **sites;
    size_t n_sites;
    int senders, readers, rooms;
    double rate;     /* offered messages/s over all senders; 0: as fast as acks allow */
    int window;      /* sends in flight per sender when rate is 0 */
    int max_backlog; /* unacked sends per sender before offers are skipped */
    long max_messages;
    int64_t duration_ms;
    const char *fault_cmd;
    int64_t fault_at_ms; /* from the start of the load; -1: random */
    int fault_site;      /* 1-based; 0: not given */
    int64_t cmd_timeout_ms;
    const char *heal_cmd;
    int64_t heal_at_ms; /* from the start of the load, or after the fault if relative */
    bool heal_relative;
    bool expect_write_stop;
    const char *json_path; /* NULL: none; "-": stdout */
    int64_t setup_timeout_ms, drain_timeout_ms, verify_timeout_ms;
    int probe_ms;
    int keepalive_ms, connect_timeout_ms;
    char prefix[DRILL_PREFIX_MAX + 1];
    unsigned seed;
    bool quiet;
} drill_opts_t;

/* One message a sender offered. Its cmid is "<prefix>.s<sender>.<n>". */
typedef struct {
    int64_t seq;       /* the acked seq */
    int64_t found_seq; /* where the read-back found it */
    int32_t ack_ms;    /* since the load started; -1 before the ack */
    uint16_t room_i;
    uint8_t acked, dup_ack, refused, found; /* found: copies read back (saturating) */
    uint8_t bad; /* DRILL_BAD_*: its ack or its stored copy disagrees with what was sent */
} drill_msg_t;

#define DRILL_BAD_ACK 1    /* acked with another room, or no seq */
#define DRILL_BAD_STORED 2 /* stored with another room, text or sender */

typedef struct drill drill_t;

/* The longest interval between two marks (a probe answered, a tick ran).
 * last < 0 until the first mark, which opens no gap; from is where the
 * longest began. */
typedef struct {
    int64_t last, max, from;
} drill_gap_t;

static inline void drill_gap_close(drill_gap_t *g, int64_t now) /* an open gap counts to now */
{
    if (g->last >= 0 && now - g->last > g->max) {
        g->max = now - g->last;
        g->from = g->last;
    }
}

static inline void drill_gap_mark(drill_gap_t *g, int64_t now)
{
    drill_gap_close(g, now);
    g->last = now;
}

/* What a series of read probes saw: a reader's or a site prober's. */
typedef struct {
    drill_gap_t gap; /* between answered probes */
    long ok, failed;
    char err[64]; /* the last failure's error, for the report */
    int64_t err_ms;
} drill_probes_t;

typedef struct {
    drill_t *d;
    int idx, home; /* home: 0-based site it starts at */
    char name[40];
    fb_client_t *c;
    bool registered;
    int reg_err;
    drill_msg_t *msgs;
    size_t n_msgs, cap_msgs;
    int outstanding;
    drill_gap_t acks; /* between its acks, from the load's start (last = 0) */
    int64_t first_ack_after_fault_ms;
} drill_sender_t;

typedef struct {
    uint8_t *seen; /* copies delivered per seq (saturating), index seq */
    uint32_t *fp;  /* fingerprint of the first copy (drill_event_fp), index seq */
    int64_t cap;
    int64_t high;     /* highest seq delivered */
    int64_t last_seq; /* highest last_seq a room event announced */
} drill_rseen_t;

typedef struct {
    drill_t *d;
    int idx, home;
    char name[40];
    fb_client_t *c;
    bool registered;
    int reg_err;
    drill_rseen_t *rooms; /* by slot (drill_room_slot) */
    long events, dups, reorders, out_of_range;
    /* read probes */
    bool probe_out;
    int64_t next_probe_ms;
    drill_probes_t probes; /* gap from the load's start (gap.last = 0) */
    /* the final sync */
    bool sync_out, final_ok;
    int sync_err;
} drill_reader_t;

/* A site probe (drill_probe.c): a client of its own on a thread of its own. */
typedef struct {
    drill_t *d;
    int site; /* 0-based: the site it starts at */
    char name[40];
    uv_thread_t thread;
    bool started;
    /* the prober thread's own until the join */
    int setup_err;
    char error[128];
    int64_t room;
    bool out;
    drill_probes_t probes; /* gap from the setup (gap.last = -1: setup failed) */
} drill_prober_t;

/* A fault or heal command run through /bin/sh -c. */
typedef struct {
    drill_t *d;
    const char *name; /* "fault" | "heal" */
    const char *cmd;
    int64_t at_ms; /* when it is due (from the load's start); -1 not scheduled */
    bool started, finished, timed_out;
    int64_t started_ms, finished_ms;
    int64_t exit_status;
    int term_signal;
    int spawn_err;
    uv_process_t proc;
    uv_pipe_t out;
    bool out_open, proc_open;
    char line[512];
    size_t line_len;
    char keep[DRILL_CMD_OUTPUT_KEEP];
    size_t keep_len;
} drill_cmd_t;

typedef enum { PH_SETUP, PH_LOAD, PH_DRAIN, PH_VERIFY, PH_DONE } drill_phase_t;

typedef struct {
    int64_t acked, reads_ok;
    int senders_ready, readers_ready;
} drill_second_t;

struct drill {
    drill_opts_t o;
    uv_loop_t loop;
    uv_timer_t tick;
    uv_signal_t sigint;
    int interrupts;
    uint64_t t0_ns; /* start of the load (or of the process until then) */
    drill_phase_t phase;
    int64_t load_end_ms, drain_end_ms;

    char setup_error[256];
    char password[33];
    char audit_name[40];
    char *audit_token;
    int64_t *room_ids;       /* by room index */
    int64_t *room_setup_seq; /* last_seq right after the setup */
    /* Every room a reader was told of gets a slot, drill rooms or not, even
     * before the create_group reply names it: events can come first. */
    struct drill_room_ix {
        int64_t id;
        int slot;
    } * room_ix; /* sorted by id */
    int n_slots, max_slots;

    void *regs; /* registrations in flight (drill_load.c) */
    drill_sender_t *s;
    drill_reader_t *r;
    drill_prober_t *probers; /* one per site, by site */
    atomic_bool probers_stop;
    char **client_servers; /* per home site: the sites list rotated to start there */

    /* pacing */
    double tokens;
    int next_sender;
    int64_t last_pace_ms;
    long total_msgs;
    long not_offered, send_errors;

    /* write outage: between any two acks, from the load's start (last = 0) */
    drill_gap_t acks;
    /* the drill's own loop: the longest time between two ticks, when the
     * load generator itself was too busy to probe or send (its stall) */
    drill_gap_t ticks;
    long acked, acked_dup, refused;
    int64_t first_ack_after_fault_ms;

    drill_cmd_t fault, heal;
    int64_t heal_due_ms;

    drill_second_t *secs;
    size_t n_secs;
    int64_t next_progress_ms;
    long last_progress_acked;

    /* results of the checks (drill_check.c) */
    struct {
        bool done;      /* every room was read back */
        int passes;     /* read-backs made (again while a replica catches up) */
        char site[128]; /* where */
        long events, text_events;
        long lost, duplicated, misplaced, corrupted, unexpected, store_gaps, store_dup_seqs;
        long stored_unacked, unacked, inversions;
        long reader_gaps, reader_dups, reader_reorders, reader_diverged, readers_unsynced;
        int64_t ms;
        int64_t *room_last;       /* by room index */
        drill_rseen_t *room_seqs; /* by room index: what the read-back found */
        bool *room_done;          /* by room index: read back completely */
        long unverified;          /* acked messages of rooms not read back */
        char error[256];
    } v;
};

/* time since the load started (before it: since the drill started) */
int64_t drill_now(const drill_t *d);
void drill_log(const drill_t *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The deterministic text of message n of sender i. */
void drill_msg_text(const drill_t *d, int sender, size_t n, char *out, size_t cap);
/* The slot of a room, made on first sight; -1 when the slots are used up. */
int drill_room_slot(drill_t *d, int64_t room);
int drill_room_slot_find(const drill_t *d, int64_t room); /* -1: never seen */
/* Runs the loop until done(d) or timeout_ms: true when done. */
bool drill_run_until(drill_t *d, bool (*done)(drill_t *d), int64_t timeout_ms);
void drill_sleep(drill_t *d, int64_t ms); /* the loop keeps running */
/* Records a probe's reply, or its failure to be sent (err; msg: the
 * server's text or NULL) at now: true when it was answered. */
bool drill_probes_record(drill_probes_t *pr, int err, const char *msg, int64_t now);

/* drill_load.c */
void drill_tick_start(drill_t *d); /* pacing, probes, schedule, progress: until the end */
int drill_setup(drill_t *d);
void drill_load(drill_t *d);
void drill_close_clients(drill_t *d);

/* drill_probe.c: the site probes run from start to stop, each in a thread */
void drill_probers_start(drill_t *d);
void drill_probers_stop(drill_t *d);

/* drill_check.c */
void drill_verify_store(drill_t *d);
void drill_verify_readers(drill_t *d);
void drill_reader_event(drill_reader_t *r, json_t *ev);

#endif
