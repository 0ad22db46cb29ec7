/* `firebreak bench limits`: what this machine can do at all, measured in
 * the same run as the figures they bound (docs/benchmarks.md): fsyncs per
 * second on the data disk, a minimal libuv echo and a minimal fan-out over
 * loopback TCP (one server thread, one client thread, like a node and its
 * load generator), and SQLite's batched insert rate with the node's
 * settings (WAL, synchronous=FULL). The fan-out runs twice: with `window`
 * messages per round, each receiver gets them in one write (the node under
 * load: a recipient's pending pushes go out together); with one message per
 * round, each delivery is a write of its own and a read of its own (the
 * node when every push must leave at once: the ceiling for deliveries at
 * low latency). Nothing here speaks the protocol.
 * SPDX-License-Identifier: MIT */
#include "tools/bench.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *dir;
    uint64_t duration_ns;
    int conns, members, size, window;
} limits_opts_t;

/* ---- fsync ---- */

static json_t *probe_fsync(const limits_opts_t *o)
{
    char path[600];
    snprintf(path, sizeof path, "%s/fb-limits-fsync.%d", o->dir, (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return json_pack("{s:s}", "error", strerror(errno));
    char block[4096];
    memset(block, 'w', sizeof block);
    uint64_t n = 0, t0 = bench_now_ns(), end = t0 + o->duration_ns;
    while (bench_now_ns() < end && n < 10000000) {
        if (pwrite(fd, block, sizeof block, (off_t)(n * sizeof block)) != (ssize_t)sizeof block ||
            fdatasync(fd) != 0)
            break;
        n++;
    }
    double s = (double)(bench_now_ns() - t0) / 1e9;
    close(fd);
    unlink(path);
    return json_pack("{s:s,s:f,s:I}", "what", "4 KiB append + fdatasync", "per_s", (double)n / s,
                     "n", (json_int_t)n);
}

/* ---- SQLite ---- */

static json_t *probe_sqlite(const limits_opts_t *o)
{
    char path[600];
    snprintf(path, sizeof path, "%s/fb-limits-sqlite.%d.db", o->dir, (int)getpid());
    sqlite3 *db = NULL;
    sqlite3_stmt *ins = NULL;
    json_t *out = NULL;
    const int batch = 1000, rooms = 100;
    if (sqlite3_open(path, &db) != SQLITE_OK) goto fail;
    if (sqlite3_exec(db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                     "CREATE TABLE events(room INTEGER NOT NULL, seq INTEGER NOT NULL,"
                     " ts INTEGER NOT NULL, cmid TEXT NOT NULL, text TEXT NOT NULL,"
                     " PRIMARY KEY(room, seq));",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO events VALUES(?,?,?,?,?)", -1, &ins, NULL) != SQLITE_OK)
        goto fail;
    char text[4096], cmid[64];
    memset(text, 't', sizeof text);
    int size = FB_MIN(o->size, (int)sizeof text);
    int64_t *seq = fb_calloc(rooms, sizeof *seq);
    uint64_t n = 0, commits = 0, t0 = bench_now_ns(), end = t0 + o->duration_ns;
    while (bench_now_ns() < end) {
        if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) break;
        for (int i = 0; i < batch; i++, n++) {
            int room = (int)(n % rooms);
            snprintf(cmid, sizeof cmid, "c%llu", (unsigned long long)n);
            sqlite3_bind_int(ins, 1, room + 1);
            sqlite3_bind_int64(ins, 2, ++seq[room]);
            sqlite3_bind_int64(ins, 3, fb_now_ms());
            sqlite3_bind_text(ins, 4, cmid, -1, SQLITE_STATIC);
            sqlite3_bind_text(ins, 5, text, size, SQLITE_STATIC);
            if (sqlite3_step(ins) != SQLITE_DONE) break;
            sqlite3_reset(ins);
        }
        if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) break;
        commits++;
    }
    double s = (double)(bench_now_ns() - t0) / 1e9;
    fb_free(seq);
    out = json_pack("{s:s,s:f,s:f,s:i}", "what",
                    "INSERT of (room, seq, ts, cmid, text) rows, WAL, synchronous=FULL", "rows_per_s",
                    (double)(commits * (uint64_t)batch) / s, "commits_per_s", (double)commits / s,
                    "batch", batch);
fail:
    if (!out) out = json_pack("{s:s}", "error", db ? sqlite3_errmsg(db) : "cannot open");
    sqlite3_finalize(ins);
    sqlite3_close(db);
    char wal[620];
    unlink(path);
    snprintf(wal, sizeof wal, "%s-wal", path);
    unlink(wal);
    snprintf(wal, sizeof wal, "%s-shm", path);
    unlink(wal);
    return out;
}

/* ---- loopback: a minimal server on its own loop and thread ---- */

typedef struct lsrv lsrv_t;

typedef struct lconn {
    uv_tcp_t tcp;
    void *owner;          /* lsrv_t (server side) or lcli_t (client side) */
    struct lconn **list;  /* the owner's list of connections with output */
    fb_buf_t out, wbuf;
    uv_write_t wreq;
    bool writing, dirty;
    struct lconn *dirty_next;
    uint64_t got; /* client side: bytes received */
} lconn_t;

struct lsrv {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_check_t check;
    uv_async_t stop;
    uv_thread_t th;
    bool fanout;
    lconn_t **conns; /* accepted, in order; the first is the fan-out source */
    int n;
    lconn_t *dirty;
    int port;
    char readbuf[65536];
};

static void l_mark(lconn_t *c, lconn_t **list)
{
    if (c->dirty) return;
    c->dirty = true;
    c->dirty_next = *list;
    *list = c;
}

static void l_written(uv_write_t *w, int status)
{
    lconn_t *c = w->data;
    c->writing = false;
    fb_buf_reset(&c->wbuf);
    if (c->out.len && status == 0) l_mark(c, c->list);
}

/* one write per connection per loop iteration, like the node */
static void l_flush_all(lconn_t **list)
{
    while (*list) {
        lconn_t *c = *list;
        *list = c->dirty_next;
        c->dirty = false;
        if (c->writing || !c->out.len) continue;
        uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n == (int)c->out.len) {
            fb_buf_reset(&c->out);
            continue;
        }
        if (n > 0) fb_buf_consume(&c->out, (size_t)n);
        fb_buf_t t = c->wbuf;
        c->wbuf = c->out;
        c->out = t;
        fb_buf_reset(&c->out);
        b = uv_buf_init(c->wbuf.data, (unsigned)c->wbuf.len);
        c->wreq.data = c;
        c->writing = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, l_written) == 0;
    }
}

static void l_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    lconn_t *c = h->data;
    lsrv_t *s = c->owner;
    *b = uv_buf_init(s->readbuf, sizeof s->readbuf);
}

static void l_srv_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    lconn_t *c = st->data;
    lsrv_t *s = c->owner;
    if (n <= 0) {
        if (n < 0) uv_read_stop(st);
        return;
    }
    if (!s->fanout) {
        fb_buf_append(&c->out, b->base, (size_t)n);
        l_mark(c, &s->dirty);
        return;
    }
    for (int i = 1; i < s->n; i++) { /* the source's bytes to every receiver */
        fb_buf_append(&s->conns[i]->out, b->base, (size_t)n);
        l_mark(s->conns[i], &s->dirty);
    }
}

static void l_accept(uv_stream_t *l, int status)
{
    lsrv_t *s = l->data;
    lconn_t *c = fb_calloc(1, sizeof *c);
    c->owner = s;
    c->list = &s->dirty;
    uv_tcp_init(&s->loop, &c->tcp);
    c->tcp.data = c;
    if (status < 0 || uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)fb_free);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    s->conns = fb_realloc(s->conns, (size_t)(s->n + 1) * sizeof *s->conns);
    s->conns[s->n++] = c;
    uv_read_start((uv_stream_t *)&c->tcp, l_alloc, l_srv_read);
}

static void l_check(uv_check_t *h)
{
    lsrv_t *s = h->data;
    l_flush_all(&s->dirty);
}

static void l_close_cb(uv_handle_t *h)
{
    lconn_t *c = h->data;
    fb_buf_free(&c->out);
    fb_buf_free(&c->wbuf);
    fb_free(c);
}

static void l_stop(uv_async_t *a)
{
    lsrv_t *s = a->data;
    for (int i = 0; i < s->n; i++) uv_close((uv_handle_t *)&s->conns[i]->tcp, l_close_cb);
    uv_close((uv_handle_t *)&s->listener, NULL);
    uv_close((uv_handle_t *)&s->check, NULL);
    uv_close((uv_handle_t *)&s->stop, NULL);
}

static void l_srv_main(void *arg)
{
    lsrv_t *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
}

static int lsrv_start(lsrv_t *s, bool fanout)
{
    memset(s, 0, sizeof *s);
    s->fanout = fanout;
    uv_loop_init(&s->loop);
    uv_tcp_init(&s->loop, &s->listener);
    s->listener.data = s;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    if (uv_tcp_bind(&s->listener, (struct sockaddr *)&a, 0) ||
        uv_listen((uv_stream_t *)&s->listener, 4096, l_accept))
        return -1;
    int len = sizeof a;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&a, &len);
    s->port = ntohs(a.sin_port);
    uv_check_init(&s->loop, &s->check);
    s->check.data = s;
    uv_check_start(&s->check, l_check);
    uv_async_init(&s->loop, &s->stop, l_stop);
    s->stop.data = s;
    return uv_thread_create(&s->th, l_srv_main, s);
}

static void lsrv_stop(lsrv_t *s)
{
    uv_async_send(&s->stop);
    uv_thread_join(&s->th);
    uv_loop_close(&s->loop);
    fb_free(s->conns);
}

/* ---- loopback: the client side ---- */

typedef struct {
    uv_loop_t loop;
    lconn_t **conns;
    int n, connected;
    lconn_t *dirty;
    const limits_opts_t *o;
    bool fanout;
    uint64_t t0, end, received, round_target;
    bool done;
    char *payload;
    uv_timer_t timer;
} lcli_t;

static lcli_t *cli_of(lconn_t *c)
{
    return c->owner;
}

static void cli_send(lcli_t *k, lconn_t *c, size_t bytes)
{
    while (bytes) {
        size_t n = FB_MIN(bytes, (size_t)k->o->size);
        fb_buf_append(&c->out, k->payload, n);
        bytes -= n;
    }
    l_mark(c, &k->dirty);
}

static void cli_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    lconn_t *c = st->data;
    lcli_t *k = cli_of(c);
    if (n <= 0) return;
    c->got += (uint64_t)n;
    k->received += (uint64_t)n;
    if (k->done) return;
    if (bench_now_ns() >= k->end) {
        k->done = true;
        return;
    }
    if (!k->fanout) {
        cli_send(k, c, (size_t)n); /* keep the window full */
    } else if (k->received >= k->round_target) {
        /* every receiver has the round: the source sends the next one */
        uint64_t round = (uint64_t)k->o->window * (uint64_t)k->o->size;
        k->round_target += round * (uint64_t)(k->n - 1);
        cli_send(k, k->conns[0], round);
    }
    l_flush_all(&k->dirty);
}

static void cli_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    static __thread char buf[65536];
    *b = uv_buf_init(buf, sizeof buf);
}

static void cli_connected(uv_connect_t *req, int status)
{
    lconn_t *c = req->data;
    lcli_t *k = cli_of(c);
    fb_free(req);
    if (status < 0) return;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, cli_alloc, cli_read);
    k->connected++;
}

static void cli_connect_one(lcli_t *k, int i, int port)
{
    lconn_t *c = fb_calloc(1, sizeof *c);
    c->owner = k;
    c->list = &k->dirty;
    uv_tcp_init(&k->loop, &c->tcp);
    c->tcp.data = c;
    k->conns[i] = c;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    uv_connect_t *req = fb_malloc(sizeof *req);
    req->data = c;
    uv_tcp_connect(req, &c->tcp, (struct sockaddr *)&a, cli_connected);
}

static void cli_timer(uv_timer_t *t)
{
    lcli_t *k = t->data;
    if (bench_now_ns() >= k->end + 2000000000ull || (k->done && bench_now_ns() >= k->end)) {
        k->done = true;
        uv_stop(&k->loop);
    }
}

/* Echo: conns connections, each with `window` messages of `size` bytes in
 * flight. Fan-out: one source, `members` receivers, rounds of `window`
 * messages each delivered to every receiver. */
static json_t *probe_loopback(const limits_opts_t *o, bool fanout)
{
    lsrv_t s;
    if (lsrv_start(&s, fanout)) return json_pack("{s:s}", "error", "cannot listen on 127.0.0.1");
    lcli_t k = {.o = o, .fanout = fanout};
    uv_loop_init(&k.loop);
    k.n = fanout ? o->members + 1 : o->conns;
    k.conns = fb_calloc((size_t)k.n, sizeof *k.conns);
    k.payload = fb_malloc((size_t)o->size);
    memset(k.payload, 'p', (size_t)o->size);
    /* the source first, so that the server sees it first */
    cli_connect_one(&k, 0, s.port);
    while (!k.connected) uv_run(&k.loop, UV_RUN_ONCE);
    for (int i = 1; i < k.n; i++) cli_connect_one(&k, i, s.port);
    uint64_t wait_until = bench_now_ns() + 10000000000ull;
    while (k.connected < k.n && bench_now_ns() < wait_until) uv_run(&k.loop, UV_RUN_NOWAIT);
    while (s.n < k.n && bench_now_ns() < wait_until) usleep(1000); /* all accepted */
    k.t0 = bench_now_ns();
    k.end = k.t0 + o->duration_ns;
    uint64_t round = (uint64_t)o->window * (uint64_t)o->size;
    if (fanout) {
        k.round_target = round * (uint64_t)(k.n - 1);
        cli_send(&k, k.conns[0], round);
    } else {
        for (int i = 0; i < k.n; i++) cli_send(&k, k.conns[i], round);
    }
    l_flush_all(&k.dirty);
    uv_timer_init(&k.loop, &k.timer);
    k.timer.data = &k;
    uv_timer_start(&k.timer, cli_timer, 10, 10);
    uv_run(&k.loop, UV_RUN_DEFAULT);
    double secs = (double)(bench_now_ns() - k.t0) / 1e9;
    double msgs = (double)k.received / (double)o->size;
    json_t *out = fanout ? json_pack("{s:s,s:f,s:i,s:i,s:i}", "what",
                                     o->window == 1
                                         ? "one source, one write per message per receiver"
                                         : "one source, each round written to every receiver",
                                     "deliveries_per_s", msgs / secs, "members", o->members, "size",
                                     o->size, "per_write", o->window)
                         : json_pack("{s:s,s:f,s:i,s:i,s:i}", "what", "request/response echo",
                                     "msgs_per_s", msgs / secs, "conns", o->conns, "window",
                                     o->window, "size", o->size);
    lsrv_stop(&s);
    for (int i = 0; i < k.n; i++) uv_close((uv_handle_t *)&k.conns[i]->tcp, l_close_cb);
    uv_close((uv_handle_t *)&k.timer, NULL);
    uv_run(&k.loop, UV_RUN_DEFAULT);
    uv_loop_close(&k.loop);
    fb_free(k.conns);
    fb_free(k.payload);
    return out;
}

int bench_limits_main(int argc, char **argv)
{
    limits_opts_t o = {.dir = ".", .duration_ns = 3000000000ull, .conns = 100, .members = 1000,
                       .size = 200, .window = 16};
    const char *json_path = NULL;
    static const struct option opts[] = {
        {"data-dir", required_argument, NULL, 'd'}, {"duration", required_argument, NULL, 't'},
        {"json", required_argument, NULL, 'j'},     {"conns", required_argument, NULL, 'c'},
        {"members", required_argument, NULL, 'm'},  {"size", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'd': o.dir = optarg; break;
        case 't':
            if (bench_parse_duration(optarg, &o.duration_ns) || !o.duration_ns) goto usage;
            break;
        case 'j': json_path = optarg; break;
        case 'c': o.conns = atoi(optarg); break;
        case 'm': o.members = atoi(optarg); break;
        case 's': o.size = atoi(optarg); break;
        default: goto usage;
        }
    }
    if (o.conns < 1 || o.conns > 10000 || o.members < 1 || o.members > 10000 || o.size < 1 ||
        o.size > 4096)
        goto usage;
    limits_opts_t single = o;
    single.window = 1;
    json_t *r = json_pack("{s:o,s:o,s:o,s:o,s:o}", "fsync", probe_fsync(&o), "sqlite",
                          probe_sqlite(&o), "echo", probe_loopback(&o, false), "fanout",
                          probe_loopback(&o, true), "fanout_single", probe_loopback(&single, true));
    json_t *f = json_object_get(r, "fsync"), *q = json_object_get(r, "sqlite"),
           *e = json_object_get(r, "echo"), *fo = json_object_get(r, "fanout"),
           *f1 = json_object_get(r, "fanout_single");
    if (!json_path || strcmp(json_path, "-")) {
        printf("machine limits (%s, %.1f s each):\n", o.dir, (double)o.duration_ns / 1e9);
        printf("  fsync            %10.0f /s     (4 KiB append + fdatasync)\n",
               json_real_value(json_object_get(f, "per_s")));
        printf("  sqlite insert    %10.0f rows/s (batches of 1000, WAL, synchronous=FULL)\n",
               json_real_value(json_object_get(q, "rows_per_s")));
        printf("  loopback echo    %10.0f msg/s  (%d conns x %d in flight, %d bytes)\n",
               json_real_value(json_object_get(e, "msgs_per_s")), o.conns, o.window, o.size);
        printf("  loopback fanout  %10.0f deliveries/s (1 source -> %d receivers, %d bytes, "
               "%d per write)\n",
               json_real_value(json_object_get(fo, "deliveries_per_s")), o.members, o.size,
               o.window);
        printf("  loopback fanout  %10.0f deliveries/s (the same, 1 per write)\n",
               json_real_value(json_object_get(f1, "deliveries_per_s")));
    }
    if (json_path) {
        FILE *out = strcmp(json_path, "-") ? fopen(json_path, "w") : stdout;
        if (out) {
            json_dumpf(r, out, JSON_INDENT(1) | JSON_REAL_PRECISION(6));
            fputc('\n', out);
            if (out != stdout) fclose(out);
        }
    }
    json_decref(r);
    return 0;
usage:
    fprintf(stderr, "usage: firebreak bench limits [--data-dir DIR] [--duration D] [--conns N]\n"
                    "       [--members N] [--size N] [--json FILE|-]\n");
    return 2;
}
