/* `firebreak drill`: the fault drill that proves nothing acknowledged is lost
 * when a site burns (docs/drill.md). This file owns the command line, the
 * order of the phases (setup, load with a fault, drain, read-back, readers'
 * final sync) and the verdict, printed as text and JSON. It speaks the
 * protocol only through src/client and touches a deployment only through the
 * sites' addresses and the fault and heal commands it is given.
 * SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/drill.h"
#include "tools/tools.h"

static const char usage_text[] =
    "usage: firebreak drill --sites HOST:PORT[,HOST:PORT...] [FLAGS]\n"
    "\n"
    "Runs senders and readers through every site, runs a fault command during the load,\n"
    "keeps going, then reads everything back from the survivors and checks that every\n"
    "acknowledged message is there exactly once with its text at its acked seq, that every\n"
    "room is gapless, and that every reader got each seq once, in order (docs/drill.md).\n"
    "\n"
    "load:\n"
    "  --sites LIST          the sites' client addresses (required); client i starts at\n"
    "                        site i mod n and fails over to the others in turn\n"
    "  --senders N           sending clients, one user each (default 24)\n"
    "  --readers N           reading clients, one user each (default 12)\n"
    "  --rooms N             group rooms; every drill user is in every room (default 8)\n"
    "  --rate R              messages/s offered over all senders (default 500);\n"
    "                        0: each sender keeps --window sends in flight\n"
    "  --window N            sends in flight per sender with --rate 0 (default 4)\n"
    "  --max-backlog N       unacked sends per sender before offers are skipped (default 1000)\n"
    "  --max-messages N      stop offering after N messages in all (default 1000000)\n"
    "  --duration T          how long the load runs (default 40s)\n"
    "  --probe-interval T    each site probe's and reader's read (history, limit 1) (100ms)\n"
    "\n"
    "fault:\n"
    "  --fault-cmd CMD       run by /bin/sh -c during the load, output logged, with\n"
    "                        DRILL_PHASE=fault, DRILL_SITES and DRILL_FAULT_SITE set\n"
    "  --fault-at T|random   when, from the start of the load (default 10s; random: in\n"
    "                        [duration/5, duration/2], from --seed)\n"
    "  --fault-site N        the site the fault hits (1-based): readers starting elsewhere\n"
    "                        are the survivors of the read outage; read-back tries it last\n"
    "  --heal-cmd CMD        run later (DRILL_PHASE=heal), never before the fault finished\n"
    "  --heal-at T|+T        from the start of the load, or +T after the fault finished\n"
    "                        (default +5s)\n"
    "  --cmd-timeout T       a command running longer is killed (its process group) (60s)\n"
    "  --expect-write-stop   writes may stop for good (two sites down): unacked sends at the\n"
    "                        end are no failure; nothing acked may be lost all the same\n"
    "\n"
    "run:\n"
    "  --setup-timeout T     registering users and creating rooms (default 60s)\n"
    "  --drain-timeout T     after the load, waiting for every ack (default 60s;\n"
    "                        10s with --expect-write-stop)\n"
    "  --verify-timeout T    the read-back and the readers' final syncs, each (default 60s)\n"
    "  --connect-timeout T   per connection attempt (default 2s)\n"
    "  --keepalive T         ping a silent connection after T, drop it after 2T (1500ms)\n"
    "  --user-prefix P       user names P-s0.., P-r0.., P-a (default: random, per run);\n"
    "                        registration must be open on the deployment\n"
    "  --seed N              for --fault-at random (default: from the clock)\n"
    "  --json FILE|-         the report as JSON too (-: on stdout, the text on stderr)\n"
    "  --quiet               no progress lines;  --verbose: the client library's log too\n"
    "\n"
    "T is a number of seconds, or a number with ms, s or m (1500ms, 40s, 2m).\n"
    "\n"
    "exit status: 0 every check passed; 1 usage; 2 setup failed; 3 no site answered the\n"
    "read-back (nothing proven); 4 lost, duplicated, reordered, gaps, misplaced or\n"
    "unexpected messages; 5 sends left unacknowledged (without --expect-write-stop);\n"
    "6 the fault or heal command failed or timed out.\n";

/* ---- shared helpers (drill.h) ---- */

int64_t drill_now(const drill_t *d)
{
    return (int64_t)((uv_hrtime() - d->t0_ns) / 1000000);
}

void drill_log(const drill_t *d, const char *fmt, ...)
{
    char when[32];
    double t = (double)drill_now(d) / 1000.0;
    if (d->phase == PH_SETUP)
        snprintf(when, sizeof when, "setup %6.2f", t);
    else
        snprintf(when, sizeof when, "t=%8.3f", t);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "drill [%s] ", when);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void drill_msg_text(const drill_t *d, int sender, size_t n, char *out, size_t cap)
{
    uint32_t h = (uint32_t)sender * 2654435761u ^ (uint32_t)n * 40503u ^ d->o.seed;
    snprintf(out, cap, "%s s%d m%zu 불조심 %08x", d->o.prefix, sender, n, h);
}

static size_t slot_pos(const drill_t *d, int64_t room)
{
    size_t lo = 0, hi = (size_t)d->n_slots;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (d->room_ix[mid].id < room)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int drill_room_slot_find(const drill_t *d, int64_t room)
{
    size_t i = slot_pos(d, room);
    return i < (size_t)d->n_slots && d->room_ix[i].id == room ? d->room_ix[i].slot : -1;
}

int drill_room_slot(drill_t *d, int64_t room)
{
    size_t i = slot_pos(d, room);
    if (i < (size_t)d->n_slots && d->room_ix[i].id == room) return d->room_ix[i].slot;
    if (room <= 0 || d->n_slots == d->max_slots) return -1;
    memmove(&d->room_ix[i + 1], &d->room_ix[i], ((size_t)d->n_slots - i) * sizeof *d->room_ix);
    d->room_ix[i] = (struct drill_room_ix){room, d->n_slots};
    return d->n_slots++;
}

bool drill_run_until(drill_t *d, bool (*done)(drill_t *d), int64_t timeout_ms)
{
    uint64_t deadline = uv_hrtime() + (uint64_t)FB_MAX(timeout_ms, 0) * 1000000;
    while (!done(d)) {
        if (uv_hrtime() >= deadline) return false;
        uv_run(&d->loop, UV_RUN_ONCE); /* the tick wakes it every DRILL_TICK_MS */
    }
    return true;
}

static bool never(drill_t *d)
{
    return false;
}

void drill_sleep(drill_t *d, int64_t ms)
{
    drill_run_until(d, never, ms);
}

bool drill_probes_record(drill_probes_t *pr, int err, const char *msg, int64_t now)
{
    if (err) {
        pr->failed++;
        /* fb_client_strerror: client errors (a timeout) are no FB_E* code */
        snprintf(pr->err, sizeof pr->err, "%s", msg ? msg : fb_client_strerror(err));
        pr->err_ms = now;
        return false;
    }
    pr->ok++;
    drill_gap_mark(&pr->gap, now);
    return true;
}

/* ---- the command line ---- */

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "firebreak drill: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(firebreak drill --help for usage)\n");
    return DRILL_EXIT_USAGE;
}

/* "40", "40s", "1500ms", "2m" -> ms; -1 when malformed */
static int64_t parse_time(const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v) || v < 0) return -1;
    double mul = 1000;
    if (!strcmp(end, "ms"))
        mul = 1;
    else if (!strcmp(end, "m"))
        mul = 60000;
    else if (*end && strcmp(end, "s"))
        return -1;
    v *= mul;
    return v > 1e12 ? -1 : (int64_t)v;
}

static bool parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static int parse_sites(drill_opts_t *o, const char *list)
{
    char *copy = fb_strdup(list), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(tok, ':');
        long port;
        if (!colon || colon == tok || !parse_int(colon + 1, 1, 65535, &port) ||
            o->n_sites == DRILL_MAX_SITES) {
            int rc = usage_error("bad --sites entry '%s' (HOST:PORT, at most 64)", tok);
            fb_free(copy);
            return rc;
        }
        o->sites = fb_realloc(o->sites, (o->n_sites + 1) * sizeof *o->sites);
        o->sites[o->n_sites++] = fb_strdup(tok);
    }
    fb_free(copy);
    return o->n_sites ? 0 : usage_error("%s", "--sites lists no address");
}

static bool valid_prefix(const char *p)
{
    size_t n = strlen(p);
    if (n < 1 || n > DRILL_PREFIX_MAX) return false;
    if (!((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= '0' && p[0] <= '9'))) return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyz0123456789._-", p[i])) return false;
    return true;
}

enum {
    O_SITES = 256,
    O_SENDERS,
    O_READERS,
    O_ROOMS,
    O_RATE,
    O_WINDOW,
    O_BACKLOG,
    O_MAXMSG,
    O_DURATION,
    O_PROBE,
    O_FAULT_CMD,
    O_FAULT_AT,
    O_FAULT_SITE,
    O_HEAL_CMD,
    O_HEAL_AT,
    O_CMD_TIMEOUT,
    O_EXPECT_STOP,
    O_SETUP_TO,
    O_DRAIN_TO,
    O_VERIFY_TO,
    O_CONNECT_TO,
    O_KEEPALIVE,
    O_PREFIX,
    O_SEED,
    O_JSON,
    O_QUIET,
    O_VERBOSE,
    O_HELP,
};

static const struct option long_opts[] = {
    {"sites", required_argument, NULL, O_SITES},
    {"senders", required_argument, NULL, O_SENDERS},
    {"readers", required_argument, NULL, O_READERS},
    {"rooms", required_argument, NULL, O_ROOMS},
    {"rate", required_argument, NULL, O_RATE},
    {"window", required_argument, NULL, O_WINDOW},
    {"max-backlog", required_argument, NULL, O_BACKLOG},
    {"max-messages", required_argument, NULL, O_MAXMSG},
    {"duration", required_argument, NULL, O_DURATION},
    {"probe-interval", required_argument, NULL, O_PROBE},
    {"fault-cmd", required_argument, NULL, O_FAULT_CMD},
    {"fault-at", required_argument, NULL, O_FAULT_AT},
    {"fault-site", required_argument, NULL, O_FAULT_SITE},
    {"heal-cmd", required_argument, NULL, O_HEAL_CMD},
    {"heal-at", required_argument, NULL, O_HEAL_AT},
    {"cmd-timeout", required_argument, NULL, O_CMD_TIMEOUT},
    {"expect-write-stop", no_argument, NULL, O_EXPECT_STOP},
    {"setup-timeout", required_argument, NULL, O_SETUP_TO},
    {"drain-timeout", required_argument, NULL, O_DRAIN_TO},
    {"verify-timeout", required_argument, NULL, O_VERIFY_TO},
    {"connect-timeout", required_argument, NULL, O_CONNECT_TO},
    {"keepalive", required_argument, NULL, O_KEEPALIVE},
    {"user-prefix", required_argument, NULL, O_PREFIX},
    {"seed", required_argument, NULL, O_SEED},
    {"json", required_argument, NULL, O_JSON},
    {"quiet", no_argument, NULL, O_QUIET},
    {"verbose", no_argument, NULL, O_VERBOSE},
    {"help", no_argument, NULL, O_HELP},
    {NULL, 0, NULL, 0},
};

typedef struct {
    bool help, verbose, seed_given;
    const char *fault_at, *heal_at;
    int64_t drain_timeout_ms;
} parse_extra_t;

static int parse_time_opt(const char *name, const char *arg, int64_t min_ms, int64_t *out)
{
    int64_t v = parse_time(arg);
    if (v < min_ms) {
        fprintf(stderr,
                "firebreak drill: bad --%s '%s' (a time: 40s, 1500ms, 2m; at least %lld ms)\n",
                name, arg, (long long)min_ms);
        return DRILL_EXIT_USAGE;
    }
    *out = v;
    return 0;
}

static int parse_args(drill_opts_t *o, parse_extra_t *x, int argc, char **argv)
{
    *o = (drill_opts_t){.senders = 24,
                        .readers = 12,
                        .rooms = 8,
                        .rate = 500,
                        .window = 4,
                        .max_backlog = 1000,
                        .max_messages = 1000000,
                        .duration_ms = 40000,
                        .fault_at_ms = 10000,
                        .cmd_timeout_ms = 60000,
                        .heal_at_ms = 5000,
                        .heal_relative = true,
                        .setup_timeout_ms = 60000,
                        .verify_timeout_ms = 60000,
                        .probe_ms = 100,
                        .keepalive_ms = 1500,
                        .connect_timeout_ms = 2000};
    x->drain_timeout_ms = -1;
    int opt, rc = 0;
    long v;
    int64_t t;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        const char *a = optarg;
        switch (opt) {
        case O_SITES:
            if ((rc = parse_sites(o, a))) return rc;
            break;
        case O_SENDERS:
            if (!parse_int(a, 1, DRILL_MAX_CLIENTS, &v))
                return usage_error("bad --senders '%s'", a);
            o->senders = (int)v;
            break;
        case O_READERS:
            if (!parse_int(a, 0, DRILL_MAX_CLIENTS, &v))
                return usage_error("bad --readers '%s'", a);
            o->readers = (int)v;
            break;
        case O_ROOMS:
            if (!parse_int(a, 1, DRILL_MAX_ROOMS, &v))
                return usage_error("bad --rooms '%s' (1-1000)", a);
            o->rooms = (int)v;
            break;
        case O_RATE: {
            char *end;
            errno = 0;
            o->rate = strtod(a, &end);
            if (end == a || *end || errno || !isfinite(o->rate) || o->rate < 0 || o->rate > 1e7)
                return usage_error("bad --rate '%s' (messages/s, 0: as fast as acks allow)", a);
            break;
        }
        case O_WINDOW:
            if (!parse_int(a, 1, 1000, &v)) return usage_error("bad --window '%s' (1-1000)", a);
            o->window = (int)v;
            break;
        case O_BACKLOG:
            if (!parse_int(a, 1, FB_CLIENT_OUTBOX_MAX, &v))
                return usage_error("bad --max-backlog '%s' (1-10000)", a);
            o->max_backlog = (int)v;
            break;
        case O_MAXMSG:
            if (!parse_int(a, 1, DRILL_MAX_MESSAGES_CAP, &v))
                return usage_error("bad --max-messages '%s' (1-5000000)", a);
            o->max_messages = v;
            break;
        case O_DURATION:
            if ((rc = parse_time_opt("duration", a, 100, &o->duration_ms))) return rc;
            break;
        case O_PROBE:
            if ((rc = parse_time_opt("probe-interval", a, 10, &t))) return rc;
            o->probe_ms = (int)FB_MIN(t, 60000);
            break;
        case O_FAULT_CMD:
            o->fault_cmd = a;
            break;
        case O_FAULT_AT:
            x->fault_at = a;
            break;
        case O_FAULT_SITE:
            if (!parse_int(a, 1, DRILL_MAX_SITES, &v))
                return usage_error("bad --fault-site '%s'", a);
            o->fault_site = (int)v;
            break;
        case O_HEAL_CMD:
            o->heal_cmd = a;
            break;
        case O_HEAL_AT:
            x->heal_at = a;
            break;
        case O_CMD_TIMEOUT:
            if ((rc = parse_time_opt("cmd-timeout", a, 100, &o->cmd_timeout_ms))) return rc;
            break;
        case O_EXPECT_STOP:
            o->expect_write_stop = true;
            break;
        case O_SETUP_TO:
            if ((rc = parse_time_opt("setup-timeout", a, 100, &o->setup_timeout_ms))) return rc;
            break;
        case O_DRAIN_TO:
            if ((rc = parse_time_opt("drain-timeout", a, 0, &x->drain_timeout_ms))) return rc;
            break;
        case O_VERIFY_TO:
            if ((rc = parse_time_opt("verify-timeout", a, 100, &o->verify_timeout_ms))) return rc;
            break;
        case O_CONNECT_TO:
            if ((rc = parse_time_opt("connect-timeout", a, 100, &t))) return rc;
            o->connect_timeout_ms = (int)FB_MIN(t, 600000);
            break;
        case O_KEEPALIVE:
            if ((rc = parse_time_opt("keepalive", a, 100, &t))) return rc;
            o->keepalive_ms = (int)FB_MIN(t, 600000);
            break;
        case O_PREFIX:
            if (!valid_prefix(a))
                return usage_error("bad --user-prefix '%s' (1-20 of a-z 0-9 . _ -, starting "
                                   "with a letter or digit)",
                                   a);
            snprintf(o->prefix, sizeof o->prefix, "%s", a);
            break;
        case O_SEED:
            if (!parse_int(a, 0, 4294967295L, &v)) return usage_error("bad --seed '%s'", a);
            o->seed = (unsigned)v;
            x->seed_given = true;
            break;
        case O_JSON:
            o->json_path = a;
            break;
        case O_QUIET:
            o->quiet = true;
            break;
        case O_VERBOSE:
            x->verbose = true;
            break;
        case 'h':
        case O_HELP:
            x->help = true;
            return 0;
        default:
            return usage_error("unknown or incomplete flag '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return usage_error("unexpected argument '%s'", argv[optind]);
    if (!o->n_sites) return usage_error("%s", "--sites is required");
    if (o->senders + o->readers > DRILL_MAX_CLIENTS)
        return usage_error("%s", "more than 2000 senders and readers");
    if (o->fault_site > (int)o->n_sites)
        return usage_error("--fault-site is beyond the %s listed in --sites", "sites");
    if (!x->seed_given) o->seed = (unsigned)(uv_hrtime() ^ (uint64_t)getpid());
    if (x->fault_at && !o->fault_cmd) return usage_error("%s", "--fault-at without --fault-cmd");
    if (x->heal_at && !o->heal_cmd) return usage_error("%s", "--heal-at without --heal-cmd");
    if (x->fault_at && !strcmp(x->fault_at, "random")) {
        o->fault_at_ms = -1;
    } else if (x->fault_at && (rc = parse_time_opt("fault-at", x->fault_at, 0, &o->fault_at_ms))) {
        return rc;
    }
    if (o->fault_at_ms < 0) {
        int64_t lo = o->duration_ms / 5, span = o->duration_ms / 2 - lo;
        o->fault_at_ms = lo + (int64_t)(o->seed % (unsigned)FB_MAX(span, 1));
    }
    if (o->fault_cmd && o->fault_at_ms >= o->duration_ms)
        return usage_error("%s", "--fault-at must fall within --duration");
    if (x->heal_at) {
        o->heal_relative = x->heal_at[0] == '+';
        if ((rc = parse_time_opt("heal-at", x->heal_at + o->heal_relative, 0, &o->heal_at_ms)))
            return rc;
        if (!o->heal_relative && o->fault_cmd && o->heal_at_ms <= o->fault_at_ms)
            return usage_error("%s", "--heal-at comes before --fault-at (use +T for 'after the "
                                     "fault')");
    }
    o->drain_timeout_ms = x->drain_timeout_ms >= 0 ? x->drain_timeout_ms
                          : o->expect_write_stop   ? 10000
                                                   : 60000;
    if (!o->prefix[0]) {
        static const char al[] = "abcdefghijklmnopqrstuvwxyz0123456789";
        o->prefix[0] = 'd';
        for (int i = 1; i < 8; i++)
            o->prefix[i] = al[randombytes_uniform(sizeof al - 1)];
        o->prefix[8] = 0;
    }
    return 0;
}

/* ---- the report ---- */

typedef struct {
    long lost, duplicated, reordered, gaps, misplaced, diverged, unexpected;
    long unacked, refused;
    long acked_in_load;
    double acked_per_s;
    int64_t outage_fault_senders, outage_other_senders; /* -1: none in the group */
    int64_t fault_senders_back;                         /* fault end -> last of them acked */
    int64_t read_survivors, read_all;                   /* -1: no reader in the group */
    int64_t probe_survivors, probe_all;                 /* -1: no site probe measured */
    long site_probes_ok, site_probes_failed;
    long probes_ok, probes_failed;
    bool cmd_failed;
    int exit;
    json_t *failures;
} verdict_t;

/* A command that did not run, or did not succeed: the drill proved less
 * than it was asked to. */
static bool cmd_bad(const drill_cmd_t *k)
{
    if (!k->cmd) return false;
    return !k->started || k->spawn_err || k->timed_out || k->term_signal || k->exit_status != 0 ||
           !k->finished;
}

static void verdict(drill_t *d, verdict_t *v)
{
    memset(v, 0, sizeof *v);
    v->lost = d->v.lost;
    v->duplicated = d->v.duplicated + d->v.store_dup_seqs + d->v.reader_dups;
    v->reordered = d->v.reader_reorders;
    v->gaps = d->v.store_gaps + d->v.reader_gaps;
    v->misplaced = d->v.misplaced + d->v.corrupted;
    v->diverged = d->v.reader_diverged;
    v->unexpected = d->v.unexpected;
    v->refused = d->refused;
    v->unacked = d->v.unacked;
    v->outage_fault_senders = v->outage_other_senders = v->fault_senders_back = -1;
    for (int i = 0; i < d->o.senders; i++) {
        drill_sender_t *s = &d->s[i];
        for (size_t n = 0; n < s->n_msgs; n++)
            v->acked_in_load += s->msgs[n].acked && s->msgs[n].ack_ms <= d->load_end_ms;
        int64_t *g =
            s->home + 1 == d->o.fault_site ? &v->outage_fault_senders : &v->outage_other_senders;
        *g = FB_MAX(*g, s->acks.max);
        if (s->home + 1 == d->o.fault_site && d->fault.finished) {
            int64_t back = s->first_ack_after_fault_ms < 0
                               ? d->drain_end_ms - d->fault.finished_ms
                               : s->first_ack_after_fault_ms - d->fault.finished_ms;
            v->fault_senders_back = FB_MAX(v->fault_senders_back, back);
        }
    }
    v->acked_per_s =
        d->load_end_ms > 0 ? (double)v->acked_in_load * 1000.0 / (double)d->load_end_ms : 0;
    v->read_survivors = v->read_all = -1;
    v->probe_survivors = v->probe_all = -1;
    for (size_t i = 0; i < d->o.n_sites; i++) {
        const drill_prober_t *p = &d->probers[i];
        v->site_probes_ok += p->probes.ok;
        v->site_probes_failed += p->probes.failed;
        if (p->probes.gap.last < 0) continue; /* its setup failed: its error is reported */
        v->probe_all = FB_MAX(v->probe_all, p->probes.gap.max);
        if (p->site + 1 != d->o.fault_site)
            v->probe_survivors = FB_MAX(v->probe_survivors, p->probes.gap.max);
    }
    for (int i = 0; i < d->o.readers; i++) {
        drill_reader_t *r = &d->r[i];
        v->read_all = FB_MAX(v->read_all, r->probes.gap.max);
        if (r->home + 1 != d->o.fault_site)
            v->read_survivors = FB_MAX(v->read_survivors, r->probes.gap.max);
        v->probes_ok += r->probes.ok;
        v->probes_failed += r->probes.failed;
    }
    v->cmd_failed = cmd_bad(&d->fault) || cmd_bad(&d->heal);

    v->failures = json_array();
    struct {
        const char *what;
        long n;
    } viol[] = {{"lost", v->lost},
                {"duplicated", v->duplicated},
                {"reordered", v->reordered},
                {"gaps", v->gaps},
                {"misplaced", v->misplaced},
                {"diverged", v->diverged},
                {"unexpected", v->unexpected}};
    long violations = 0;
    for (size_t i = 0; i < FB_ARRAY_LEN(viol); i++)
        if (viol[i].n) {
            char buf[64];
            snprintf(buf, sizeof buf, "%s %ld", viol[i].what, viol[i].n);
            json_array_append_new(v->failures, json_string(buf));
            violations += viol[i].n;
        }
    bool unproven = !d->v.done || d->v.readers_unsynced;
    if (!d->v.done) json_array_append_new(v->failures, json_string("read-back incomplete"));
    if (d->v.readers_unsynced)
        json_array_append_new(v->failures, json_string("readers without a final sync"));
    if (v->cmd_failed) json_array_append_new(v->failures, json_string("fault/heal command failed"));
    bool unacked = (v->unacked > 0) && !d->o.expect_write_stop;
    if (unacked) json_array_append_new(v->failures, json_string("sends left unacknowledged"));
    v->exit = violations      ? DRILL_EXIT_VIOLATION
              : unproven      ? DRILL_EXIT_VERIFY
              : v->cmd_failed ? DRILL_EXIT_COMMAND
              : unacked       ? DRILL_EXIT_UNACKED
                              : DRILL_EXIT_OK;
}

static json_t *ms_or_null(int64_t ms)
{
    return ms < 0 ? json_null() : json_integer((json_int_t)ms);
}

static json_t *cmd_json(const drill_cmd_t *k)
{
    if (!k->cmd) return json_null();
    json_t *j = json_pack("{s:s,s:b}", "cmd", k->cmd, "ran", k->started);
    if (!k->started) return j;
    json_object_set_new(j, "started_ms", json_integer(k->started_ms));
    json_object_set_new(j, "finished_ms", k->finished ? json_integer(k->finished_ms) : json_null());
    json_object_set_new(j, "exit_status", json_integer((json_int_t)k->exit_status));
    json_object_set_new(j, "signal", json_integer(k->term_signal));
    json_object_set_new(j, "timed_out", json_boolean(k->timed_out));
    if (k->spawn_err) json_object_set_new(j, "error", json_string(uv_strerror(k->spawn_err)));
    json_object_set_new(j, "output", json_stringn_nocheck(k->keep, k->keep_len));
    return j;
}

/* A reader's or a site probe's entry in read_outage; the gap is null for a
 * probe that was never set up. */
static json_t *probes_json(int site, const drill_probes_t *pr)
{
    bool measured = pr->gap.last >= 0;
    return json_pack("{s:i,s:o,s:o,s:I,s:I,s:s?,s:o}", "site", site, "max_gap_ms",
                     measured ? json_integer(pr->gap.max) : json_null(), "gap_from_ms",
                     measured ? json_integer(pr->gap.from) : json_null(), "probes_ok",
                     (json_int_t)pr->ok, "probes_failed", (json_int_t)pr->failed, "last_error",
                     pr->failed ? pr->err : NULL, "last_error_at_ms",
                     pr->failed ? json_integer(pr->err_ms) : json_null());
}

static json_t *report_json(drill_t *d, const verdict_t *v, bool setup_failed)
{
    json_t *sites = json_array();
    for (size_t i = 0; i < d->o.n_sites; i++)
        json_array_append_new(sites, json_string(d->o.sites[i]));
    json_t *timeline = json_array();
    size_t secs = d->drain_end_ms > 0 ? (size_t)(d->drain_end_ms / 1000) + 1 : 0;
    for (size_t i = 0; i < secs && i < d->n_secs; i++) {
        drill_second_t *s = &d->secs[i];
        json_array_append_new(timeline,
                              json_pack("{s:I,s:I,s:I,s:i,s:i}", "t", (json_int_t)i, "acked",
                                        (json_int_t)s->acked, "reads_ok", (json_int_t)s->reads_ok,
                                        "senders_ready", s->senders_ready, "readers_ready",
                                        s->readers_ready));
    }
    const char *result = setup_failed ? "error" : v->exit == 0 ? "pass" : "fail";
    json_t *j = json_pack("{s:s,s:i,s:O,s:{s:o,s:s,s:i,s:i,s:i,s:f,s:I,s:I,s:i,s:b,s:I}}", "result",
                          result, "exit", setup_failed ? DRILL_EXIT_SETUP : v->exit, "failures",
                          v->failures, "drill", "sites", sites, "user_prefix", d->o.prefix,
                          "senders", d->o.senders, "readers", d->o.readers, "rooms", d->o.rooms,
                          "rate", d->o.rate, "duration_ms", (json_int_t)d->o.duration_ms, "seed",
                          (json_int_t)d->o.seed, "fault_site", d->o.fault_site, "expect_write_stop",
                          d->o.expect_write_stop, "max_messages", (json_int_t)d->o.max_messages);
    json_t *params = json_object_get(j, "drill");
    json_object_set_new(params, "fault_at_ms", ms_or_null(d->o.fault_cmd ? d->o.fault_at_ms : -1));
    json_object_set_new(params, "heal_at",
                        !d->o.heal_cmd ? json_null()
                                       : json_pack("{s:I,s:b}", "ms", (json_int_t)d->o.heal_at_ms,
                                                   "after_fault", d->o.heal_relative));
    if (setup_failed) {
        json_object_set_new(j, "error", json_string(d->setup_error));
        json_decref(timeline);
        return j;
    }
    json_t *f = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
                          "sent", (json_int_t)d->total_msgs, "acked", (json_int_t)d->acked,
                          "acked_duplicate", (json_int_t)d->acked_dup, "refused",
                          (json_int_t)v->refused, "unacked_at_end", (json_int_t)v->unacked,
                          "stored_unacked", (json_int_t)d->v.stored_unacked, "not_offered",
                          (json_int_t)d->not_offered, "acked_in_load", (json_int_t)v->acked_in_load,
                          "acked_per_s", v->acked_per_s, "lost", (json_int_t)v->lost, "duplicated",
                          (json_int_t)v->duplicated, "reordered", (json_int_t)v->reordered, "gaps",
                          (json_int_t)v->gaps, "misplaced", (json_int_t)v->misplaced, "diverged",
                          (json_int_t)v->diverged, "unexpected", (json_int_t)v->unexpected);
    json_object_update(j, f);
    json_decref(f);
    json_object_set_new(j, "load_ms", json_integer(d->load_end_ms));
    json_object_set_new(j, "drain_end_ms", json_integer(d->drain_end_ms));
    json_object_set_new(
        j, "write_outage",
        json_pack("{s:I,s:I,s:o,s:o,s:o,s:o}", "ms", (json_int_t)d->acks.max, "from_ms",
                  (json_int_t)d->acks.from, "first_ack_after_fault_ms",
                  d->first_ack_after_fault_ms < 0 || !d->fault.finished
                      ? json_null()
                      : json_integer(d->first_ack_after_fault_ms - d->fault.finished_ms),
                  "fault_site_senders_ms", ms_or_null(v->outage_fault_senders),
                  "fault_site_senders_back_ms", ms_or_null(v->fault_senders_back),
                  "other_senders_ms", ms_or_null(v->outage_other_senders)));
    json_t *readers = json_array();
    for (int i = 0; i < d->o.readers; i++)
        json_array_append_new(readers, probes_json(d->r[i].home + 1, &d->r[i].probes));
    json_t *probers = json_array();
    for (size_t i = 0; i < d->o.n_sites; i++) {
        const drill_prober_t *p = &d->probers[i];
        json_t *pj = probes_json(p->site + 1, &p->probes);
        json_object_set_new(pj, "setup_error", p->setup_err ? json_string(p->error) : json_null());
        json_array_append_new(probers, pj);
    }
    json_object_set_new(
        j, "read_outage",
        json_pack("{s:o,s:o,s:I,s:I,s:o,s:o,s:o,s:I,s:I,s:o}", "survivors_ms",
                  ms_or_null(v->probe_survivors), "all_ms", ms_or_null(v->probe_all), "probes_ok",
                  (json_int_t)v->site_probes_ok, "probes_failed", (json_int_t)v->site_probes_failed,
                  "sites", probers, "readers_survivors_ms", ms_or_null(v->read_survivors),
                  "readers_all_ms", ms_or_null(v->read_all), "readers_probes_ok",
                  (json_int_t)v->probes_ok, "readers_probes_failed", (json_int_t)v->probes_failed,
                  "readers", readers));
    json_object_set_new(j, "drill_stall",
                        json_pack("{s:I,s:I}", "ms", (json_int_t)d->ticks.max, "from_ms",
                                  (json_int_t)d->ticks.from));
    json_object_set_new(
        j, "checks",
        json_pack("{s:b,s:i,s:I,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
                  "read_back_complete", d->v.done, "read_back_passes", d->v.passes,
                  "unverified_acked", (json_int_t)d->v.unverified, "read_back_site", d->v.site,
                  "error", d->v.error, "read_back_ms", (json_int_t)d->v.ms, "events",
                  (json_int_t)d->v.events, "text_events", (json_int_t)d->v.text_events,
                  "store_duplicates", (json_int_t)d->v.duplicated, "store_duplicate_seqs",
                  (json_int_t)d->v.store_dup_seqs, "store_gaps", (json_int_t)d->v.store_gaps,
                  "misplaced", (json_int_t)d->v.misplaced, "corrupted", (json_int_t)d->v.corrupted,
                  "reader_duplicates", (json_int_t)d->v.reader_dups, "reader_reordered",
                  (json_int_t)d->v.reader_reorders, "reader_gaps", (json_int_t)d->v.reader_gaps,
                  "reader_diverged", (json_int_t)d->v.reader_diverged, "readers_unsynced",
                  (json_int_t)d->v.readers_unsynced, "send_order_inversions",
                  (json_int_t)d->v.inversions));
    json_object_set_new(j, "fault", cmd_json(&d->fault));
    json_object_set_new(j, "heal", cmd_json(&d->heal));
    json_object_set_new(j, "timeline", timeline);
    return j;
}

static void print_secs(FILE *f, int64_t ms)
{
    if (ms < 0)
        fprintf(f, "n/a");
    else
        fprintf(f, "%.2f s", (double)ms / 1000.0);
}

static void print_cmd(FILE *f, const char *name, const drill_cmd_t *k)
{
    if (!k->cmd) return;
    fprintf(f, "  %-14s", name);
    if (!k->started) {
        fprintf(f, "not run: %s\n", k->cmd);
        return;
    }
    fprintf(f, "t=%.2f s, ", (double)k->started_ms / 1000.0);
    if (k->spawn_err)
        fprintf(f, "could not run: %s", uv_strerror(k->spawn_err));
    else if (!k->finished)
        fprintf(f, "still running");
    else if (k->timed_out)
        fprintf(f, "timed out after %.2f s (killed)",
                (double)(k->finished_ms - k->started_ms) / 1000.0);
    else if (k->term_signal)
        fprintf(f, "killed by signal %d", k->term_signal);
    else
        fprintf(f, "exit %lld after %.2f s", (long long)k->exit_status,
                (double)(k->finished_ms - k->started_ms) / 1000.0);
    fprintf(f, ": %s\n", k->cmd);
}

static void report_text(FILE *f, drill_t *d, const verdict_t *v)
{
    fprintf(f, "firebreak drill: %s", v->exit == 0 ? "PASS" : "FAIL");
    for (size_t i = 0; i < json_array_size(v->failures); i++)
        fprintf(f, "%s%s", i ? ", " : " (", json_string_value(json_array_get(v->failures, i)));
    fprintf(f, "%s\n", json_array_size(v->failures) ? ")" : "");
    fprintf(f, "  %-14s%zu site%s, users %s-*, %d senders, %d readers, %d rooms\n", "drill",
            d->o.n_sites, d->o.n_sites == 1 ? "" : "s", d->o.prefix, d->o.senders, d->o.readers,
            d->o.rooms);
    if (d->o.rate > 0)
        fprintf(f, "  %-14s%.1f s at %.0f msgs/s offered\n", "load",
                (double)d->load_end_ms / 1000.0, d->o.rate);
    else
        fprintf(f, "  %-14s%.1f s, %d in flight per sender\n", "load",
                (double)d->load_end_ms / 1000.0, d->o.window);
    fprintf(f, "  %-14s%ld, acked %ld (%.1f msgs/s during the load), duplicate acks %ld\n", "sent",
            d->total_msgs, d->acked, v->acked_per_s, d->acked_dup);
    fprintf(f, "  %-14s%ld unacked at the end (%ld of them stored), %ld refused, %ld not offered\n",
            "", v->unacked, d->v.stored_unacked, v->refused, d->not_offered);
    fprintf(f, "  %-14s", "write outage");
    print_secs(f, d->acks.max);
    fprintf(f, " (t=%.2f s .. %.2f s)", (double)d->acks.from / 1000.0,
            (double)(d->acks.from + d->acks.max) / 1000.0);
    if (d->fault.finished) {
        fprintf(f, "; after the fault: first ack ");
        print_secs(f, d->first_ack_after_fault_ms < 0
                          ? -1
                          : d->first_ack_after_fault_ms - d->fault.finished_ms);
    }
    fprintf(f, "\n");
    if (d->o.fault_site) {
        fprintf(f, "  %-14ssenders of site %d: ", "", d->o.fault_site);
        print_secs(f, v->outage_fault_senders);
        fprintf(f, " (all acking again ");
        print_secs(f, v->fault_senders_back);
        fprintf(f, " after the fault); other senders: ");
        print_secs(f, v->outage_other_senders);
        fprintf(f, "\n");
    }
    fprintf(f, "  %-14ssurvivors ", "read outage");
    print_secs(f, v->probe_survivors);
    fprintf(f, ", all ");
    print_secs(f, v->probe_all);
    fprintf(f, " (site probes: %ld ok, %ld failed)\n", v->site_probes_ok, v->site_probes_failed);
    for (size_t i = 0; i < d->o.n_sites; i++)
        if (d->probers[i].setup_err)
            fprintf(f, "  %-14ssite %zu's probe never ran: %s\n", "", i + 1, d->probers[i].error);
    fprintf(f, "  %-14ssurvivors ", "readers wait");
    print_secs(f, v->read_survivors);
    fprintf(f, ", all ");
    print_secs(f, v->read_all);
    fprintf(f, " (%ld probes ok, %ld failed; behind every room's pushes)\n", v->probes_ok,
            v->probes_failed);
    fprintf(f, "  %-14s%.2f s at t=%.2f s (the drill's own loop, busy: no probe or send)\n",
            "drill stall", (double)d->ticks.max / 1000.0, (double)d->ticks.from / 1000.0);
    print_cmd(f, "fault", &d->fault);
    print_cmd(f, "heal", &d->heal);
    if (d->v.done)
        fprintf(f, "  %-14sfrom %s: %d rooms, %ld events (%ld messages) in %.2f s, %d pass%s\n",
                "read back", d->v.site, d->o.rooms, d->v.events, d->v.text_events,
                (double)d->v.ms / 1000.0, d->v.passes, d->v.passes == 1 ? "" : "es");
    else
        fprintf(f, "  %-14sINCOMPLETE (%ld acked messages unchecked): %s\n", "read back",
                d->v.unverified, d->v.error);
    fprintf(f,
            "  %-14slost %ld, duplicated %ld, reordered %ld, gaps %ld, misplaced %ld, "
            "diverged %ld, unexpected %ld\n",
            "checks", v->lost, v->duplicated, v->reordered, v->gaps, v->misplaced, v->diverged,
            v->unexpected);
    fprintf(f,
            "  %-14sstore: duplicates %ld, gaps %ld; readers: duplicates %ld, reordered %ld, "
            "gaps %ld, unsynced %ld; send-order inversions %ld\n",
            "", d->v.duplicated + d->v.store_dup_seqs, d->v.store_gaps, d->v.reader_dups,
            d->v.reader_reorders, d->v.reader_gaps, d->v.readers_unsynced, d->v.inversions);
}

static int write_json(drill_t *d, json_t *j)
{
    if (!d->o.json_path) return 0;
    int flags = JSON_INDENT(2) | JSON_PRESERVE_ORDER;
    if (!strcmp(d->o.json_path, "-")) {
        json_dumpf(j, stdout, flags);
        fputc('\n', stdout);
        fflush(stdout);
        return 0;
    }
    if (json_dump_file(j, d->o.json_path, flags)) {
        fprintf(stderr, "firebreak drill: cannot write %s: %s\n", d->o.json_path, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- main ---- */

static void drill_init(drill_t *d)
{
    drill_opts_t *o = &d->o;
    randombytes_buf(d->password, 16);
    fb_hex_encode((const uint8_t *)d->password, 16, d->password); /* 32 hex characters */
    snprintf(d->audit_name, sizeof d->audit_name, "%s-a", o->prefix);
    d->room_ids = fb_calloc((size_t)o->rooms, sizeof *d->room_ids);
    d->room_setup_seq = fb_calloc((size_t)o->rooms, sizeof *d->room_setup_seq);
    d->max_slots = o->rooms + DRILL_EXTRA_SLOTS;
    d->room_ix = fb_calloc((size_t)d->max_slots, sizeof *d->room_ix);
    d->v.room_last = fb_calloc((size_t)o->rooms, sizeof *d->v.room_last);
    d->v.room_seqs = fb_calloc((size_t)o->rooms, sizeof *d->v.room_seqs);
    d->v.room_done = fb_calloc((size_t)o->rooms, sizeof *d->v.room_done);
    d->client_servers = fb_calloc(o->n_sites, sizeof *d->client_servers);
    for (size_t h = 0; h < o->n_sites; h++) {
        fb_buf_t b = {0};
        for (size_t i = 0; i < o->n_sites; i++)
            fb_buf_appendf(&b, "%s%s", i ? "," : "", o->sites[(h + i) % o->n_sites]);
        fb_buf_append(&b, "", 1);
        d->client_servers[h] = b.data;
    }
    d->s = fb_calloc((size_t)o->senders, sizeof *d->s);
    for (int i = 0; i < o->senders; i++) {
        drill_sender_t *s = &d->s[i];
        s->d = d;
        s->idx = i;
        s->home = i % (int)o->n_sites;
        snprintf(s->name, sizeof s->name, "%s-s%d", o->prefix, i);
    }
    d->r = fb_calloc((size_t)FB_MAX(o->readers, 1), sizeof *d->r);
    for (int i = 0; i < o->readers; i++) {
        drill_reader_t *r = &d->r[i];
        r->d = d;
        r->idx = i;
        r->home = i % (int)o->n_sites;
        snprintf(r->name, sizeof r->name, "%s-r%d", o->prefix, i);
        r->rooms = fb_calloc((size_t)d->max_slots, sizeof *r->rooms);
    }
    d->probers = fb_calloc(o->n_sites, sizeof *d->probers);
    for (int i = 0; i < (int)o->n_sites; i++) {
        drill_prober_t *p = &d->probers[i];
        p->d = d;
        p->site = i;
        p->probes.gap.last = -1;
        snprintf(p->name, sizeof p->name, "%s-p%d", o->prefix, i);
    }
    d->fault = (drill_cmd_t){.d = d, .name = "fault", .cmd = o->fault_cmd, .at_ms = -1};
    d->heal = (drill_cmd_t){.d = d, .name = "heal", .cmd = o->heal_cmd, .at_ms = -1};
    d->t0_ns = uv_hrtime();
    uv_loop_init(&d->loop);
    uv_timer_init(&d->loop, &d->tick);
    d->tick.data = d;
}

static void drill_free(drill_t *d)
{
    uv_loop_close(&d->loop);
    for (int i = 0; i < d->o.senders; i++)
        fb_free(d->s[i].msgs);
    for (int i = 0; i < d->o.readers; i++) {
        for (int k = 0; k < d->max_slots; k++) {
            fb_free(d->r[i].rooms[k].seen);
            fb_free(d->r[i].rooms[k].fp);
        }
        fb_free(d->r[i].rooms);
    }
    for (size_t i = 0; i < d->o.n_sites; i++) {
        fb_free(d->client_servers[i]);
        fb_free(d->o.sites[i]);
    }
    fb_free(d->client_servers);
    fb_free(d->o.sites);
    fb_free(d->s);
    fb_free(d->r);
    fb_free(d->probers);
    fb_free(d->room_ids);
    fb_free(d->room_setup_seq);
    fb_free(d->room_ix);
    fb_free(d->v.room_last);
    for (int k = 0; k < d->o.rooms; k++) {
        fb_free(d->v.room_seqs[k].seen);
        fb_free(d->v.room_seqs[k].fp);
    }
    fb_free(d->v.room_seqs);
    fb_free(d->v.room_done);
    fb_free(d->secs);
    fb_free(d->audit_token);
    sodium_memzero(d->password, sizeof d->password);
    fb_free(d);
}

int fb_tool_drill_main(int argc, char **argv)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "firebreak drill: libsodium failed to initialise\n");
        return DRILL_EXIT_SETUP;
    }
    drill_t *d = fb_calloc(1, sizeof *d);
    parse_extra_t x = {0};
    int rc = parse_args(&d->o, &x, argc, argv);
    if (rc || x.help) {
        if (x.help) fputs(usage_text, stdout);
        for (size_t i = 0; i < d->o.n_sites; i++)
            fb_free(d->o.sites[i]);
        fb_free(d->o.sites);
        fb_free(d);
        return rc;
    }
    fb_log_set_level(x.verbose ? FB_LOG_INFO : FB_LOG_WARN);
    drill_init(d);
    drill_tick_start(d);
    FILE *text = d->o.json_path && !strcmp(d->o.json_path, "-") ? stderr : stdout;
    verdict_t v = {0};
    int err = drill_setup(d);
    if (err) {
        drill_close_clients(d);
        fprintf(text, "firebreak drill: ERROR: setup failed: %s\n",
                d->setup_error[0] ? d->setup_error : fb_client_strerror(err));
        v.failures = json_pack("[s]", "setup failed");
        json_t *j = report_json(d, &v, true);
        write_json(d, j);
        json_decref(j);
        json_decref(v.failures);
        drill_free(d);
        return DRILL_EXIT_SETUP;
    }
    drill_load(d);
    drill_verify_store(d);
    drill_verify_readers(d);
    drill_close_clients(d);
    verdict(d, &v);
    report_text(text, d, &v);
    fflush(text);
    json_t *j = report_json(d, &v, false);
    if (write_json(d, j) && v.exit == 0) v.exit = DRILL_EXIT_USAGE;
    json_decref(j);
    json_decref(v.failures);
    rc = v.exit;
    drill_free(d);
    return rc;
}
