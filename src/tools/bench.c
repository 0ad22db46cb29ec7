/* `firebreak bench`: the load generator (docs/benchmarks.md). This file
 * reads the flags, builds the world through the client library, runs the
 * load in this process or in --procs forked ones (each with --threads
 * loops), merges their partial results, finishes the delivery check across
 * processes, and reports for people or as JSON. It never lets a run go
 * unbounded: every phase has a time limit and the messages a count.
 * SPDX-License-Identifier: MIT */
#include "tools/bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <http_parser.h>
#include <inttypes.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/client.h"
#include "tools/tools.h"

static const char *const scenario_names[] = {"ingest", "fanout", "kakao", "connections"};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: firebreak bench SCENARIO [options]     (docs/benchmarks.md)\n"
            "       firebreak bench limits [--data-dir DIR] [--json FILE|-]\n\n"
            "scenarios:\n"
            "  ingest        S senders into R rooms of M members, durable acks\n"
            "  fanout        one room of M members; every message to every member\n"
            "  kakao         the realistic mix: small rooms and a few big ones, think\n"
            "                time, readers marking read, devices reconnecting and syncing\n"
            "  connections   N idle authenticated connections (the node's memory each)\n\n"
            "where:\n"
            "  --server A[,A..]   node address(es) (127.0.0.1:8080)\n"
            "  --bind A[,A..]     source address per process (default: none for one process,\n"
            "                     127.0.100.<p+1> for several)\n"
            "  --procs N          load processes (1); --threads N loops in each (1)\n"
            "how much:\n"
            "  --duration D       measured run (10s; connections: how long they idle)\n"
            "  --warmup D         first part left out of rates and latencies (1s)\n"
            "  --drain D          at most this long for the last acks and deliveries (10s)\n"
            "  --rate N           offered messages/s over all senders; 0: as fast as the\n"
            "                     window of unacknowledged sends allows, not for kakao\n"
            "                     (ingest: 0, fanout: 1000, kakao: 2000)\n"
            "  --window N         unacknowledged sends per sender (64)\n"
            "  --max-messages N   count bound for the whole run (20000000)\n"
            "  --size N           bytes of message text (64)\n"
            "shape:\n"
            "  --senders N        ingest: 100; fanout: 1\n"
            "  --rooms N          ingest: 100\n"
            "  --members N        ingest: 2; fanout: 1000\n"
            "  --users N          kakao: 2000; connections: users shared by the conns (100)\n"
            "  --conns N          connections: 1000\n"
            "  --read-prob F      kakao: share of users who mark read (0.5)\n"
            "  --read-delay D     kakao: mean delay before marking read (1s)\n"
            "  --reconnects N     kakao: device reconnects per second, all told (10)\n"
            "  --big-rooms N      kakao: big rooms per worker (1), --big-size MIN-MAX (100-300)\n"
            "  --slow-readers N   fanout: members that stop reading (0)\n"
            "checking and output:\n"
            "  --node-pid PID     the node's process, for its memory (RSS)\n"
            "  --full-parse       parse every frame with jansson (no fast path)\n"
            "  --json FILE|-      JSON result; --quiet: no text report\n"
            "  --password P       of the bench users; --seed N; --setup-parallel N (16)\n"
            "Durations: 500ms, 3s, 2m or plain seconds. Exit status 0 when messages were\n"
            "acked and none was lost, duplicated or refused, 1 otherwise, 2 on bad usage.\n");
}

/* ---- small helpers ---- */

int bench_parse_duration(const char *s, uint64_t *ns)
{
    char *end;
    double v = strtod(s, &end);
    double mul = 1e9;
    if (end == s || v < 0) return FB_EINVAL;
    if (!strcmp(end, "ms"))
        mul = 1e6;
    else if (!strcmp(end, "s") || !*end)
        mul = 1e9;
    else if (!strcmp(end, "m"))
        mul = 60e9;
    else
        return FB_EINVAL;
    *ns = (uint64_t)(v * mul);
    return 0;
}

static char **split(const char *s, int *n)
{
    char *copy = fb_strdup(s), *save = NULL;
    char **out = NULL;
    *n = 0;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        out = fb_realloc(out, (size_t)(*n + 1) * sizeof *out);
        out[(*n)++] = fb_strdup(t);
    }
    fb_free(copy);
    return out;
}

static void free_list(char **l, int n)
{
    for (int i = 0; i < n; i++) fb_free(l[i]);
    fb_free(l);
}

static int parse_addr(const char *s, struct sockaddr_in *a, bool need_port)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    int port = 0;
    size_t hl = colon ? (size_t)(colon - s) : strlen(s);
    if (hl >= sizeof host) return FB_EINVAL;
    memcpy(host, s, hl);
    host[hl] = 0;
    if (colon) port = atoi(colon + 1);
    if ((need_port && (port <= 0 || port > 65535)) || uv_ip4_addr(host, port, a) != 0)
        return FB_EINVAL;
    /* loopback, or the test networks (198.18.0.0/15) that deploy/local's
     * network namespaces use: a benchmark never loads anyone else's host */
    uint32_t ip = ntohl(a->sin_addr.s_addr);
    if ((ip >> 24) != 127 && (ip >> 17) != (198u << 7 | 18u >> 1)) return FB_EINVAL;
    return 0;
}

int64_t bench_node_rss_kib(int pid)
{
    if (pid <= 0) return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int64_t kib = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kib = strtoll(line + 6, NULL, 10);
    fclose(f);
    return kib;
}

/* ---- GET /metrics (blocking, bounded) ---- */

typedef struct {
    fb_buf_t body;
    bool done;
} metrics_resp_t;

static int on_mbody(http_parser *p, const char *at, size_t n)
{
    metrics_resp_t *r = p->data;
    if (r->body.len + n < (4u << 20)) fb_buf_append(&r->body, at, n);
    return 0;
}

static int on_mdone(http_parser *p)
{
    ((metrics_resp_t *)p->data)->done = true;
    return 0;
}

double bench_node_metric(const bench_opts_t *o, const char *name)
{
    struct sockaddr_in a;
    if (parse_addr(o->servers[0], &a, true)) return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    double v = -1;
    metrics_resp_t r = {0};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        char req[256];
        int n = snprintf(req, sizeof req,
                         "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                         o->servers[0]);
        if (write(fd, req, (size_t)n) == n) {
            http_parser hp;
            http_parser_settings hs;
            http_parser_init(&hp, HTTP_RESPONSE);
            http_parser_settings_init(&hs);
            hs.on_body = on_mbody;
            hs.on_message_complete = on_mdone;
            hp.data = &r;
            char buf[16384];
            ssize_t got;
            while (!r.done && (got = read(fd, buf, sizeof buf)) > 0)
                if (http_parser_execute(&hp, &hs, buf, (size_t)got) != (size_t)got) break;
            fb_buf_append(&r.body, "", 1);
            size_t nl = strlen(name);
            for (char *line = r.body.data; line && *line; line = strchr(line, '\n')) {
                if (*line == '\n') line++;
                if (!strncmp(line, name, nl) && line[nl] == ' ') {
                    v = strtod(line + nl + 1, NULL);
                    break;
                }
            }
        }
    }
    close(fd);
    fb_buf_free(&r.body);
    return v;
}

/* ---- the node's memory while a run goes on ---- */

typedef struct {
    const bench_opts_t *o;
    uv_thread_t th;
    atomic_int stop;
    bool started;
    int64_t peak_kib;
} sampler_t;

static void sampler_main(void *arg)
{
    sampler_t *s = arg;
    while (!atomic_load(&s->stop)) {
        int64_t k = bench_node_rss_kib(s->o->node_pid);
        if (k > s->peak_kib) s->peak_kib = k;
        usleep(100 * 1000);
    }
}

/* ---- one process, or several ---- */

typedef struct {
    const bench_opts_t *o;
    json_t *node; /* what was measured of the node */
    int64_t rss0;
    double mem0;
} top_t;

static uint64_t local_go(bench_proc_t *p, uint64_t connected)
{
    return bench_now_ns() + 50 * 1000000ull;
}

static void measure_node(top_t *t, uint64_t conns)
{
    const bench_opts_t *o = t->o;
    int64_t rss = bench_node_rss_kib(o->node_pid);
    double mem = bench_node_metric(o, "firebreak_memory_bytes");
    double open = bench_node_metric(o, "firebreak_connections");
    json_t *n = t->node;
    json_object_set_new(n, "rss_before_kib", json_integer(t->rss0));
    json_object_set_new(n, "rss_after_kib", json_integer(rss));
    json_object_set_new(n, "memory_bytes_before", json_real(t->mem0));
    json_object_set_new(n, "memory_bytes_after", json_real(mem));
    json_object_set_new(n, "open_connections", json_real(open));
    if (conns) {
        if (rss >= 0 && t->rss0 >= 0)
            json_object_set_new(n, "rss_per_conn_bytes",
                                json_real((double)(rss - t->rss0) * 1024.0 / (double)conns));
        if (mem >= 0 && t->mem0 >= 0)
            json_object_set_new(n, "memory_per_conn_bytes", json_real((mem - t->mem0) / (double)conns));
    }
}

static void local_hold(bench_proc_t *p)
{
    top_t *t = p->ud;
    uint64_t go = atomic_load(&p->go_ns), now = bench_now_ns();
    uint64_t until = go + p->o->duration_ns;
    if (until > now) usleep((useconds_t)((until - now) / 1000));
    uint64_t conns = 0;
    for (int i = 0; i < p->n_workers; i++) conns += (uint64_t)p->workers[i].n_ready;
    measure_node(t, conns);
}

/* child side of the pipes */
static FILE *ctl_in, *ctl_out;

static uint64_t child_go(bench_proc_t *p, uint64_t connected)
{
    unsigned long long go = 0;
    char line[128];
    fprintf(ctl_out, "ready %" PRIu64 "\n", connected);
    fflush(ctl_out);
    if (!fgets(line, sizeof line, ctl_in) || sscanf(line, "go %llu", &go) != 1) _exit(3);
    return (uint64_t)go;
}

static void child_hold(bench_proc_t *p)
{
    char line[64];
    fprintf(ctl_out, "hold\n");
    fflush(ctl_out);
    if (!fgets(line, sizeof line, ctl_in) || strncmp(line, "finish", 6) != 0) _exit(3);
}

static void proc_setup(bench_proc_t *p, const bench_opts_t *o, bench_world_t *w, int index,
                       struct sockaddr_in *targets)
{
    memset(p, 0, sizeof *p);
    p->index = index;
    p->n_procs = o->procs;
    p->o = o;
    p->world = w;
    p->n_workers_total = o->procs * o->threads;
    p->targets = targets;
    p->n_targets = o->n_servers;
    if (o->n_binds) {
        parse_addr(o->binds[index % o->n_binds], &p->source, false);
        p->source.sin_port = 0;
        p->bind_source = true;
    }
}

typedef struct {
    pid_t pid;
    FILE *in, *out; /* from the child, to the child */
} child_t;

static json_t *read_result(FILE *f)
{
    fb_buf_t b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) fb_buf_append(&b, chunk, n);
    json_error_t e;
    json_t *j = b.len ? json_loadb(b.data, b.len, 0, &e) : NULL;
    fb_buf_free(&b);
    return j;
}

static void sampler_start(sampler_t *s)
{
    if (s->o->node_pid) s->started = uv_thread_create(&s->th, sampler_main, s) == 0;
}

/* Forks first, then starts the sampler thread: a fork beside a running
 * thread can leave the child an allocator lock that nobody will release. */
static int run_children(const bench_opts_t *o, bench_world_t *w, struct sockaddr_in *targets,
                        top_t *top, json_t *parts, sampler_t *smp)
{
    child_t *ch = fb_calloc((size_t)o->procs, sizeof *ch);
    int rc = 0, started = 0;
    fflush(NULL);
    for (int p = 0; p < o->procs; p++) {
        int up[2], down[2];
        if (pipe(up) || pipe(down)) {
            rc = -1;
            break;
        }
        pid_t pid = fork();
        if (pid < 0) {
            rc = -1;
            break;
        }
        if (pid == 0) {
            close(up[0]);
            close(down[1]);
            for (int k = 0; k < started; k++) {
                fclose(ch[k].in);
                fclose(ch[k].out);
            }
            ctl_out = fdopen(up[1], "w");
            ctl_in = fdopen(down[0], "r");
            bench_proc_t bp;
            proc_setup(&bp, o, w, p, targets);
            bp.wait_go = child_go;
            bp.hold = child_hold;
            json_t *res = bench_proc_run(&bp);
            json_dumpf(res, ctl_out, JSON_COMPACT);
            fclose(ctl_out);
            _exit(0);
        }
        close(up[1]);
        close(down[0]);
        ch[p].pid = pid;
        ch[p].in = fdopen(up[0], "r");
        ch[p].out = fdopen(down[1], "w");
        started++;
    }
    sampler_start(smp);
    char line[128];
    uint64_t connected = 0;
    for (int p = 0; p < started && !rc; p++) {
        unsigned long long n;
        if (!fgets(line, sizeof line, ch[p].in) || sscanf(line, "ready %llu", &n) != 1) {
            fprintf(stderr, "bench: load process %d failed before the start\n", p);
            rc = -1;
        }
        connected += n;
    }
    if (!rc) {
        uint64_t go = bench_now_ns() + 100 * 1000000ull;
        for (int p = 0; p < started; p++) {
            fprintf(ch[p].out, "go %" PRIu64 "\n", go);
            fflush(ch[p].out);
        }
        if (o->scenario == SC_CONNECTIONS) {
            for (int p = 0; p < started; p++)
                if (!fgets(line, sizeof line, ch[p].in)) rc = -1;
            uint64_t now = bench_now_ns(), until = go + o->duration_ns;
            if (until > now) usleep((useconds_t)((until - now) / 1000));
            measure_node(top, connected);
            for (int p = 0; p < started; p++) {
                fprintf(ch[p].out, "finish\n");
                fflush(ch[p].out);
            }
        }
        for (int p = 0; p < started; p++) {
            json_t *res = read_result(ch[p].in);
            if (!res) {
                fprintf(stderr, "bench: load process %d gave no result\n", p);
                rc = -1;
            } else {
                json_array_append_new(parts, res);
            }
        }
    }
    for (int p = 0; p < started; p++) {
        if (rc) kill(ch[p].pid, SIGKILL);
        fclose(ch[p].in);
        fclose(ch[p].out);
        int st;
        while (waitpid(ch[p].pid, &st, 0) < 0 && errno == EINTR) {}
        if (!WIFEXITED(st) || WEXITSTATUS(st)) {
            if (!rc) fprintf(stderr, "bench: load process %d exited abnormally\n", p);
            rc = -1;
        }
    }
    fb_free(ch);
    return rc;
}

/* ---- merging and the report ---- */

typedef struct {
    bench_stats_t st;
    bench_verdict_t v;
    uint64_t slow_readers;
    double window_s;
} merged_t;

static void merge_parts(json_t *parts, merged_t *m)
{
    bench_stats_init(&m->st);
    memset(&m->v, 0, sizeof m->v);
    json_t *rooms = json_object(); /* room id -> summary, from every process */
    size_t i, k;
    json_t *part, *e;
    json_array_foreach(parts, i, part)
    {
        bench_stats_from_json(&m->st, json_object_get(part, "stats"));
        json_t *v = json_object_get(part, "verdict");
#define V(f) m->v.f += (uint64_t)json_integer_value(json_object_get(v, #f));
        V(receivers) V(lost) V(extra) V(dups) V(mismatch) V(unchecked)
#undef V
        m->slow_readers += (uint64_t)json_integer_value(json_object_get(part, "slow_readers"));
        m->window_s = json_real_value(json_object_get(part, "window_s"));
        json_array_foreach(json_object_get(part, "rooms"), k, e)
        {
            char key[32];
            snprintf(key, sizeof key, "%" JSON_INTEGER_FORMAT,
                     json_integer_value(json_object_get(e, "room")));
            json_object_set(rooms, key, e);
        }
    }
    json_array_foreach(parts, i, part)
    {
        json_array_foreach(json_object_get(part, "rx"), k, e)
        {
            char key[32];
            snprintf(key, sizeof key, "%" JSON_INTEGER_FORMAT,
                     json_integer_value(json_object_get(e, "room")));
            json_t *room = json_object_get(rooms, key);
            if (room) {
                bench_check_rx(room, e, &m->v);
            } else {
                m->v.receivers++;
                m->v.unchecked++;
            }
        }
    }
    json_decref(rooms);
}

static json_t *params_json(const bench_opts_t *o)
{
    json_t *servers = json_array();
    for (int i = 0; i < o->n_servers; i++) json_array_append_new(servers, json_string(o->servers[i]));
    json_t *p = json_pack("{s:o,s:i,s:i,s:f,s:f,s:f,s:i,s:i}", "servers", servers, "procs",
                          o->procs, "threads", o->threads, "duration_s", o->duration_ns / 1e9,
                          "warmup_s", o->warmup_ns / 1e9, "rate", o->rate, "window", o->window,
                          "size", o->size);
    switch (o->scenario) {
    case SC_INGEST:
        json_object_set_new(p, "senders", json_integer(o->senders));
        json_object_set_new(p, "rooms", json_integer(o->rooms));
        json_object_set_new(p, "members", json_integer(o->members));
        break;
    case SC_FANOUT:
        json_object_set_new(p, "senders", json_integer(o->senders));
        json_object_set_new(p, "members", json_integer(o->members));
        json_object_set_new(p, "slow_readers", json_integer(o->slow_readers));
        break;
    case SC_KAKAO:
        json_object_set_new(p, "users", json_integer(o->users));
        json_object_set_new(p, "read_prob", json_real(o->read_prob));
        json_object_set_new(p, "read_delay_s", json_real(o->read_delay_s));
        json_object_set_new(p, "reconnects_per_s", json_real(o->reconnects_per_s));
        json_object_set_new(p, "big_rooms_per_worker", json_integer(o->big_rooms));
        break;
    case SC_CONNECTIONS:
        json_object_set_new(p, "conns", json_integer(o->conns));
        json_object_set_new(p, "users", json_integer(FB_MIN(o->users, o->conns)));
        break;
    }
    return p;
}

static bool passed(const merged_t *m, const bench_opts_t *o)
{
    const bench_stats_t *s = &m->st;
    return s->errors == 0 && s->seq_conflicts == 0 && s->connect_failures == 0 && m->v.lost == 0 &&
           m->v.dups == 0 && m->v.extra == 0 && m->v.mismatch == 0 && m->v.unchecked == 0 &&
           (o->scenario != SC_CONNECTIONS || s->pings_ok == s->connected) &&
           (o->scenario == SC_CONNECTIONS || s->acked > 0); /* a run that sent nothing proves nothing */
}

static json_t *result_json(const bench_opts_t *o, const merged_t *m, json_t *node,
                           const bench_world_t *w)
{
    const bench_stats_t *s = &m->st;
    double win = m->window_s > 0 ? m->window_s : 1;
    json_t *r = json_pack(
        "{s:s,s:s,s:o,s:f,s:I,s:I,s:f,s:I,s:f,s:o,s:o,s:o,s:I,s:O,s:I,s:I,s:I,s:I,s:I,s:I,s:b}",
        "scenario", scenario_names[o->scenario], "command", o->cmdline, "params", params_json(o),
        "window_s", win, "sent", (json_int_t)s->sent, "acked", (json_int_t)s->acked,
        "acked_per_s", (double)s->acked_in_window / win, "deliveries", (json_int_t)s->deliveries,
        "deliveries_per_s", (double)s->deliveries_in_window / win, "send_to_ack_ms",
        bench_hist_summary(&s->ack), "send_to_delivery_ms", bench_hist_summary(&s->deliv),
        "reconnect_to_synced_ms", bench_hist_summary(&s->reconnect), "errors",
        (json_int_t)s->errors, "error_codes", s->error_codes, "lost", (json_int_t)m->v.lost,
        "duplicated", (json_int_t)m->v.dups, "extra", (json_int_t)m->v.extra, "content_mismatch",
        (json_int_t)m->v.mismatch, "unchecked", (json_int_t)m->v.unchecked, "receivers",
        (json_int_t)m->v.receivers, "passed", passed(m, o));
    json_t *c = bench_stats_json(s);
    json_object_del(c, "hist_ack");
    json_object_del(c, "hist_deliv");
    json_object_del(c, "hist_reconnect");
    json_object_del(c, "error_codes");
    json_object_set_new(c, "slow_readers", json_integer((json_int_t)m->slow_readers));
    json_object_set_new(c, "users", json_integer(w->n_users));
    json_object_set_new(c, "rooms", json_integer(w->n_rooms));
    json_object_set_new(r, "counters", c);
    json_object_set(r, "node", node);
    return r;
}

static void print_lat(FILE *f, const char *what, json_t *h)
{
    if (!json_integer_value(json_object_get(h, "n"))) return;
    fprintf(f, "  %-18s p50 %7.2f ms  p99 %7.2f ms  p99.9 %7.2f ms  max %7.2f ms  (%" JSON_INTEGER_FORMAT
           ")\n",
           what, json_real_value(json_object_get(h, "p50")),
           json_real_value(json_object_get(h, "p99")), json_real_value(json_object_get(h, "p999")),
           json_real_value(json_object_get(h, "max")), json_integer_value(json_object_get(h, "n")));
}

static void print_text(FILE *f, json_t *r)
{
    json_t *c = json_object_get(r, "counters"), *node = json_object_get(r, "node");
    fprintf(f, "firebreak bench %s: %s\n", json_string_value(json_object_get(r, "scenario")),
           json_is_true(json_object_get(r, "passed")) ? "passed" : "FAILED");
    fprintf(f, "  %s\n", json_string_value(json_object_get(r, "command")));
    fprintf(f, "  connections %" JSON_INTEGER_FORMAT " (failed %" JSON_INTEGER_FORMAT
           "), users %" JSON_INTEGER_FORMAT ", rooms %" JSON_INTEGER_FORMAT "\n",
           json_integer_value(json_object_get(c, "connected")),
           json_integer_value(json_object_get(c, "connect_failures")),
           json_integer_value(json_object_get(c, "users")),
           json_integer_value(json_object_get(c, "rooms")));
    if (json_integer_value(json_object_get(c, "sent"))) {
        fprintf(f, "  acked        %10.0f msg/s   (%" JSON_INTEGER_FORMAT " acked of %" JSON_INTEGER_FORMAT
               " sent; window %.1f s)\n",
               json_real_value(json_object_get(r, "acked_per_s")),
               json_integer_value(json_object_get(r, "acked")),
               json_integer_value(json_object_get(r, "sent")),
               json_real_value(json_object_get(r, "window_s")));
        fprintf(f, "  deliveries   %10.0f /s      (%" JSON_INTEGER_FORMAT " delivered)\n",
               json_real_value(json_object_get(r, "deliveries_per_s")),
               json_integer_value(json_object_get(r, "deliveries")));
        print_lat(f, "send -> ack", json_object_get(r, "send_to_ack_ms"));
        print_lat(f, "send -> delivery", json_object_get(r, "send_to_delivery_ms"));
        print_lat(f, "reconnect -> synced", json_object_get(r, "reconnect_to_synced_ms"));
        fprintf(f, "  check: %" JSON_INTEGER_FORMAT " receivers; lost %" JSON_INTEGER_FORMAT
               ", duplicated %" JSON_INTEGER_FORMAT ", unacked but delivered %" JSON_INTEGER_FORMAT
               ", content mismatches %" JSON_INTEGER_FORMAT ", unchecked %" JSON_INTEGER_FORMAT "\n",
               json_integer_value(json_object_get(r, "receivers")),
               json_integer_value(json_object_get(r, "lost")),
               json_integer_value(json_object_get(r, "duplicated")),
               json_integer_value(json_object_get(r, "extra")),
               json_integer_value(json_object_get(r, "content_mismatch")),
               json_integer_value(json_object_get(r, "unchecked")));
    }
    if (json_integer_value(json_object_get(c, "reconnects")) ||
        json_integer_value(json_object_get(c, "reads_sent")))
        fprintf(f, "  reconnects %" JSON_INTEGER_FORMAT ", resent %" JSON_INTEGER_FORMAT
               ", synced events %" JSON_INTEGER_FORMAT ", reads %" JSON_INTEGER_FORMAT
               " (read events received %" JSON_INTEGER_FORMAT ")\n",
               json_integer_value(json_object_get(c, "reconnects")),
               json_integer_value(json_object_get(c, "resent")),
               json_integer_value(json_object_get(c, "sync_events")),
               json_integer_value(json_object_get(c, "reads_acked")),
               json_integer_value(json_object_get(c, "read_events")));
    if (json_integer_value(json_object_get(c, "behind")))
        fprintf(f, "  behind: %" JSON_INTEGER_FORMAT " times a due send found its window full\n",
               json_integer_value(json_object_get(c, "behind")));
    if (json_integer_value(json_object_get(c, "slow_readers")))
        fprintf(f, "  slow readers %" JSON_INTEGER_FORMAT ", closed by the node %" JSON_INTEGER_FORMAT "\n",
               json_integer_value(json_object_get(c, "slow_readers")),
               json_integer_value(json_object_get(c, "slow_closed")));
    if (json_object_size(node)) {
        char *s = json_dumps(node, JSON_COMPACT | JSON_REAL_PRECISION(6));
        fprintf(f, "  node: %s\n", s);
        fb_free(s);
    }
    fprintf(f, "  errors %" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(r, "errors")));
    if (json_object_size(json_object_get(r, "error_codes"))) {
        char *s = json_dumps(json_object_get(r, "error_codes"), JSON_COMPACT);
        fprintf(f, " %s", s);
        fb_free(s);
    }
    fprintf(f, "\n");
}

/* ---- flags ---- */

enum {
    OPT_SERVER = 256, OPT_BIND, OPT_PROCS, OPT_THREADS, OPT_DURATION, OPT_WARMUP, OPT_DRAIN,
    OPT_RATE, OPT_WINDOW, OPT_MAXMSG, OPT_SIZE, OPT_SENDERS, OPT_ROOMS, OPT_MEMBERS, OPT_USERS,
    OPT_CONNS, OPT_READPROB, OPT_READDELAY, OPT_RECONNECTS, OPT_BIGROOMS, OPT_BIGSIZE, OPT_SLOW,
    OPT_NODEPID, OPT_FULL, OPT_JSON, OPT_QUIET, OPT_PASSWORD, OPT_SEED, OPT_SETUPPAR, OPT_HELP,
};

static const struct option long_opts[] = {
    {"server", required_argument, NULL, OPT_SERVER},
    {"bind", required_argument, NULL, OPT_BIND},
    {"procs", required_argument, NULL, OPT_PROCS},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"drain", required_argument, NULL, OPT_DRAIN},
    {"rate", required_argument, NULL, OPT_RATE},
    {"window", required_argument, NULL, OPT_WINDOW},
    {"max-messages", required_argument, NULL, OPT_MAXMSG},
    {"size", required_argument, NULL, OPT_SIZE},
    {"senders", required_argument, NULL, OPT_SENDERS},
    {"rooms", required_argument, NULL, OPT_ROOMS},
    {"members", required_argument, NULL, OPT_MEMBERS},
    {"users", required_argument, NULL, OPT_USERS},
    {"conns", required_argument, NULL, OPT_CONNS},
    {"read-prob", required_argument, NULL, OPT_READPROB},
    {"read-delay", required_argument, NULL, OPT_READDELAY},
    {"reconnects", required_argument, NULL, OPT_RECONNECTS},
    {"big-rooms", required_argument, NULL, OPT_BIGROOMS},
    {"big-size", required_argument, NULL, OPT_BIGSIZE},
    {"slow-readers", required_argument, NULL, OPT_SLOW},
    {"node-pid", required_argument, NULL, OPT_NODEPID},
    {"full-parse", no_argument, NULL, OPT_FULL},
    {"json", required_argument, NULL, OPT_JSON},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"password", required_argument, NULL, OPT_PASSWORD},
    {"seed", required_argument, NULL, OPT_SEED},
    {"setup-parallel", required_argument, NULL, OPT_SETUPPAR},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static int bad(const char *what, const char *v)
{
    fprintf(stderr, "firebreak bench: bad %s '%s' (firebreak bench --help)\n", what, v);
    return 2;
}

static bool int_arg(const char *v, long lo, long hi, int *out)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || end == v || x < lo || x > hi) return false;
    *out = (int)x;
    return true;
}

static void defaults(bench_opts_t *o, int sc)
{
    memset(o, 0, sizeof *o);
    o->scenario = sc;
    o->procs = o->threads = 1;
    o->duration_ns = 10ull * 1000000000;
    o->warmup_ns = 1000000000ull;
    o->drain_ns = 10ull * 1000000000;
    o->window = 64;
    o->max_messages = 20000000;
    o->size = 64;
    o->senders = sc == SC_FANOUT ? 1 : 100;
    o->rooms = 100;
    o->members = sc == SC_FANOUT ? 1000 : 2;
    o->users = sc == SC_CONNECTIONS ? 100 : 2000;
    o->conns = 1000;
    o->rate = sc == SC_FANOUT ? 1000 : sc == SC_KAKAO ? 2000 : 0;
    o->read_prob = 0.5;
    o->read_delay_s = 1.0;
    o->reconnects_per_s = 10;
    o->big_rooms = 1;
    o->big_min = 100;
    o->big_max = 300;
    o->setup_parallel = 16;
    o->text_out = true;
    randombytes_buf(&o->seed, sizeof o->seed);
}

static int parse_opts(bench_opts_t *o, int argc, char **argv, char **server_s, char **bind_s)
{
    int opt;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        const char *v = optarg;
        bool ok = true;
        int n = 0;
        switch (opt) {
        case OPT_SERVER: *server_s = optarg; break;
        case OPT_BIND: *bind_s = optarg; break;
        case OPT_PROCS: ok = int_arg(v, 1, 64, &o->procs); break;
        case OPT_THREADS: ok = int_arg(v, 1, 64, &o->threads); break;
        case OPT_DURATION: ok = !bench_parse_duration(v, &o->duration_ns) && o->duration_ns; break;
        case OPT_WARMUP: ok = !bench_parse_duration(v, &o->warmup_ns); break;
        case OPT_DRAIN: ok = !bench_parse_duration(v, &o->drain_ns); break;
        case OPT_RATE: o->rate = strtod(v, NULL); ok = o->rate >= 0 && o->rate <= 1e8; break;
        case OPT_WINDOW: ok = int_arg(v, 1, 65536, &o->window); break;
        case OPT_MAXMSG: ok = int_arg(v, 1, 2000000000, &n); o->max_messages = (uint64_t)n; break;
        case OPT_SIZE: ok = int_arg(v, 24, 4096, &o->size); break;
        case OPT_SENDERS: ok = int_arg(v, 1, 1000000, &o->senders); break;
        case OPT_ROOMS: ok = int_arg(v, 1, 1000000, &o->rooms); break;
        case OPT_MEMBERS: ok = int_arg(v, 2, 100000, &o->members); break;
        case OPT_USERS: ok = int_arg(v, 1, 1000000, &o->users); break;
        case OPT_CONNS: ok = int_arg(v, 1, 1000000, &o->conns); break;
        case OPT_READPROB: o->read_prob = strtod(v, NULL); ok = o->read_prob >= 0 && o->read_prob <= 1; break;
        case OPT_READDELAY: {
            uint64_t ns;
            ok = !bench_parse_duration(v, &ns);
            o->read_delay_s = (double)ns / 1e9;
            break;
        }
        case OPT_RECONNECTS: o->reconnects_per_s = strtod(v, NULL); ok = o->reconnects_per_s >= 0; break;
        case OPT_BIGROOMS: ok = int_arg(v, 0, 1000, &o->big_rooms); break;
        case OPT_BIGSIZE: ok = sscanf(v, "%d-%d", &o->big_min, &o->big_max) == 2 && o->big_min >= 2 &&
                               o->big_max >= o->big_min; break;
        case OPT_SLOW: ok = int_arg(v, 0, 100000, &o->slow_readers); break;
        case OPT_NODEPID: ok = int_arg(v, 1, 1 << 30, &o->node_pid); break;
        case OPT_FULL: o->full_parse = true; break;
        case OPT_JSON: o->json_path = optarg; break;
        case OPT_QUIET: o->text_out = false; break;
        case OPT_PASSWORD: o->password = optarg; ok = strlen(v) >= 8; break;
        case OPT_SEED: ok = int_arg(v, 0, 2147483647, &n); o->seed = (uint32_t)n; break;
        case OPT_SETUPPAR: ok = int_arg(v, 1, 1024, &o->setup_parallel); break;
        case OPT_HELP: usage(stdout); return 1;
        default: return bad("flag", argv[optind - 1]);
        }
        if (!ok) return bad(long_opts[opt - OPT_SERVER].name, v);
    }
    if (optind < argc) return bad("argument", argv[optind]);
    return 0;
}

static int check_opts(const bench_opts_t *o)
{
    int W = o->procs * o->threads;
    if (o->warmup_ns >= o->duration_ns && o->scenario != SC_CONNECTIONS) {
        fprintf(stderr, "firebreak bench: --warmup must be shorter than --duration\n");
        return 2;
    }
    if (o->scenario == SC_INGEST && o->senders > o->rooms * o->members) {
        fprintf(stderr, "firebreak bench: more --senders than members of all rooms\n");
        return 2;
    }
    if (o->scenario == SC_FANOUT && (o->senders - 1) * W >= o->members) {
        fprintf(stderr, "firebreak bench: fanout senders are members %d apart: too many --senders\n", W);
        return 2;
    }
    if (o->scenario == SC_KAKAO && o->rate <= 0) {
        /* its arrivals are paced: at rate 0 nothing would be sent */
        fprintf(stderr, "firebreak bench: kakao needs --rate above 0\n");
        return 2;
    }
    if (o->scenario == SC_KAKAO && o->users < 2 * W) {
        fprintf(stderr, "firebreak bench: kakao needs at least 2 --users per worker\n");
        return 2;
    }
    return 0;
}

static void build_cmdline(bench_opts_t *o, int argc, char **argv)
{
    size_t len = 0;
    len += (size_t)snprintf(o->cmdline, sizeof o->cmdline, "firebreak bench");
    for (int i = 1; i < argc && len < sizeof o->cmdline; i++) {
        bool secret = i > 1 && !strcmp(argv[i - 1], "--password");
        len += (size_t)snprintf(o->cmdline + len, sizeof o->cmdline - len, " %s",
                                secret ? "***" : argv[i]);
    }
}

static int run(bench_opts_t *o)
{
    int rc = 1;
    bench_world_t w;
    struct sockaddr_in *targets = fb_calloc((size_t)o->n_servers, sizeof *targets);
    json_t *parts = json_array(), *node = json_object();
    merged_t m = {0};
    for (int i = 0; i < o->n_servers; i++)
        if (parse_addr(o->servers[i], &targets[i], true)) {
            bad("--server (an IPv4 address in 127.0.0.0/8 or 198.18.0.0/15, with a port)", o->servers[i]);
            rc = 2;
            goto out_nomerge;
        }
    int W = o->procs * o->threads;
    bench_world_plan(&w, o, W);
    uint64_t t_setup = bench_now_ns();
    if (bench_world_setup(&w, o)) goto out_world;
    if (o->text_out)
        fprintf(stderr, "bench: set up %d users and %d rooms in %.1f s\n", w.n_users, w.n_rooms,
                (double)(bench_now_ns() - t_setup) / 1e9);
    top_t top = {.o = o, .node = node};
    top.rss0 = bench_node_rss_kib(o->node_pid);
    top.mem0 = bench_node_metric(o, "firebreak_memory_bytes");
    sampler_t smp = {.o = o, .peak_kib = -1};
    int rrc = 0;
    if (o->procs == 1) {
        sampler_start(&smp);
        bench_proc_t p;
        proc_setup(&p, o, &w, 0, targets);
        p.wait_go = local_go;
        p.hold = local_hold;
        p.ud = &top;
        json_array_append_new(parts, bench_proc_run(&p));
    } else {
        rrc = run_children(o, &w, targets, &top, parts, &smp);
    }
    if (smp.started) {
        atomic_store(&smp.stop, 1);
        uv_thread_join(&smp.th);
        json_object_set_new(node, "rss_peak_kib", json_integer(smp.peak_kib));
        if (o->scenario != SC_CONNECTIONS) {
            json_object_set_new(node, "rss_before_kib", json_integer(top.rss0));
            json_object_set_new(node, "rss_after_kib", json_integer(bench_node_rss_kib(o->node_pid)));
        }
    }
    if (rrc) goto out_world;
    merge_parts(parts, &m);
    json_t *res = result_json(o, &m, node, &w);
    if (o->text_out) print_text(o->json_path && !strcmp(o->json_path, "-") ? stderr : stdout, res);
    if (o->json_path) {
        FILE *f = strcmp(o->json_path, "-") ? fopen(o->json_path, "w") : stdout;
        if (!f) {
            fprintf(stderr, "firebreak bench: cannot write %s: %s\n", o->json_path, strerror(errno));
        } else {
            json_dumpf(res, f, JSON_INDENT(1) | JSON_REAL_PRECISION(6));
            fputc('\n', f);
            if (f != stdout) fclose(f);
            else fflush(f);
        }
    }
    rc = json_is_true(json_object_get(res, "passed")) ? 0 : 1;
    json_decref(res);
    bench_stats_free(&m.st);
out_world:
    bench_world_free(&w);
out_nomerge:
    json_decref(parts);
    json_decref(node);
    fb_free(targets);
    return rc;
}

int fb_tool_bench_main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "limits")) return bench_limits_main(argc - 1, argv + 1);
    int sc = -1;
    for (size_t i = 0; i < FB_ARRAY_LEN(scenario_names); i++)
        if (!strcmp(argv[1], scenario_names[i])) sc = (int)i;
    if (sc < 0) return bad("scenario", argv[1]);
    if (sodium_init() < 0) return 1;
    bench_opts_t o;
    defaults(&o, sc);
    char *server_s = "127.0.0.1:8080", *bind_s = NULL;
    int rc = parse_opts(&o, argc, argv, &server_s, &bind_s);
    if (rc) return rc == 1 ? 0 : rc;
    if ((rc = check_opts(&o))) return rc;
    o.servers = split(server_s, &o.n_servers);
    if (bind_s) {
        o.binds = split(bind_s, &o.n_binds);
    } else if (o.procs > 1) {
        o.binds = fb_calloc((size_t)o.procs, sizeof *o.binds);
        for (int p = 0; p < o.procs; p++) {
            o.binds[p] = fb_malloc(32);
            snprintf(o.binds[p], 32, "127.0.100.%d", p + 1);
        }
        o.n_binds = o.procs;
    }
    for (int i = 0; i < o.n_binds; i++) {
        struct sockaddr_in a;
        if (parse_addr(o.binds[i], &a, false)) {
            rc = bad("--bind (an IPv4 loopback address)", o.binds[i]);
            goto out;
        }
    }
    char password[40];
    if (!o.password) {
        uint8_t raw[12];
        randombytes_buf(raw, sizeof raw);
        fb_hex_encode(raw, sizeof raw, password);
        o.password = password;
    }
    uint8_t rid[3];
    randombytes_buf(rid, sizeof rid);
    fb_hex_encode(rid, sizeof rid, o.run_id);
    build_cmdline(&o, argc, argv);
    if (getenv("FB_LOG_LEVEL") == NULL) fb_log_set_level(FB_LOG_WARN);
    rc = run(&o);
out:
    free_list(o.servers, o.n_servers);
    free_list(o.binds, o.n_binds);
    return rc;
}
