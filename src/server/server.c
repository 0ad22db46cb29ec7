/* `firebreak serve`: builds a node from its configuration and runs it: the
 * store, the writer thread, one io loop per core (each with its own listening
 * socket on the same port, SO_REUSEPORT, and its own read connection), and
 * an orderly shutdown on SIGINT/SIGTERM that commits what was queued.
 * SPDX-License-Identifier: MIT */
#include "server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "chat/auth.h"

/* ---- push encoders (writer thread) ---- */

void fb_server_encode_event(void *ud, const fb_event_t *ev, int64_t unread, fb_buf_t *frame)
{
    fb_server_t *s = ud;
    fb_push_text_frame(s->writer_enc, ev, unread, frame);
}

void fb_server_encode_read(void *ud, int64_t room, int64_t user, const char *name, int64_t seq,
                           fb_buf_t *frame)
{
    fb_server_t *s = ud;
    fb_push_read_frame(s->writer_enc, room, user, name, seq, frame);
}

/* ---- io loops ---- */

static void loop_deliver(void *ud, fb_mpsc_node_t *node)
{
    fb_loop_t *l = ud;
    fb_mpsc_push(&l->inbox, node);
    uv_async_send(&l->inbox_async);
}

static void drain_inbox(fb_loop_t *l)
{
    fb_mpsc_node_t *node;
    while ((node = fb_mpsc_pop(&l->inbox))) fb_ops_loop_batch(l, fb_wbatch_of(node, l->index));
}

static void on_inbox(uv_async_t *a)
{
    drain_inbox(a->data);
}

static void on_check(uv_check_t *h)
{
    fb_conn_flush_all(h->data);
}

/* Closes connections that have not said hello in time: the list is in
 * accept order, so only its expired head is looked at. */
static void on_sweep(uv_timer_t *t)
{
    fb_loop_t *l = t->data;
    uint64_t now = uv_now(&l->loop);
    int64_t limit = l->srv->cfg.handshake_timeout_ms;
    while (l->hs_head && (int64_t)(now - (uint64_t)l->hs_head->accepted_ms) >= limit) {
        fb_conn_t *c = l->hs_head;
        if (c->state == CONN_WS)
            fb_conn_ws_close(c, 1008, "handshake timeout");
        else
            fb_conn_close(c);
        if (c->in_handshake_list) fb_conn_handshake_done(c);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    fb_loop_t *l = server->data;
    if (status == 0 && atomic_load(&l->srv->phase) == 0) fb_conn_accept(l);
}

static void close_handle(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Shutdown, step 1 on each loop: no new connections, no new requests; then
 * tell the main thread, which only then stops the writer (so that nothing
 * can be submitted to a writer that is gone). */
static void stop_reading(fb_loop_t *l)
{
    l->stopped_reading = true;
    if (!uv_is_closing((uv_handle_t *)&l->listener)) uv_close((uv_handle_t *)&l->listener, NULL);
    for (fb_conn_t *c = l->all; c; c = c->all_next)
        if (c->state != CONN_CLOSED) uv_read_stop((uv_stream_t *)&c->tcp);
    uv_sem_post(&l->srv->quiet);
}

static void on_finish_tick(uv_timer_t *t)
{
    fb_loop_t *l = t->data;
    if (!l->all || uv_now(&l->loop) >= l->finish_deadline) uv_stop(&l->loop);
}

/* Step 2, after the writer committed everything: deliver those acks, say
 * goodbye (1000) once each connection's output is written, and stop the
 * loop when all are closed or after a bounded wait. */
static void on_stop(uv_async_t *a)
{
    fb_loop_t *l = a->data;
    if (!l->stopped_reading) stop_reading(l);
    if (atomic_load(&l->srv->phase) < 2 || l->finishing) return;
    l->finishing = true;
    drain_inbox(l);
    for (fb_conn_t *c = l->all, *next; c; c = next) {
        next = c->all_next;
        fb_conn_ws_close(c, 1000, "server shutting down");
    }
    fb_conn_flush_all(l);
    l->finish_deadline = uv_now(&l->loop) + 2000;
    uv_timer_start(&l->finish_timer, on_finish_tick, 0, 10);
}

static void loop_main(void *arg)
{
    fb_loop_t *l = arg;
    uv_run(&l->loop, UV_RUN_DEFAULT);
}

/* A listening socket on host:port with SO_REUSEPORT, so that every loop has
 * its own and the kernel spreads connections over them. */
static int listen_socket(const char *host, int port, int *fd_out, int *bound_port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) return FB_EINVAL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) return FB_EIO;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        FB_ERROR("server", "cannot bind %s:%d: %s", host, port, strerror(errno));
        close(fd);
        return FB_EIO;
    }
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    *bound_port = ntohs(a.sin_port);
    *fd_out = fd;
    return 0;
}

/* SO_REUSEPORT would let a second node (any process of this user) join our
 * port and silently take half the connections: first make sure that nobody
 * holds the port, with a probe bound without it. */
static int port_free(const char *host, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (port == 0) return 0; /* the kernel picks a free one */
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        FB_ERROR("server", "listen address %s is not an IPv4 address", host);
        return FB_EINVAL;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) return FB_EIO;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = bind(fd, (struct sockaddr *)&a, sizeof a) == 0 ? 0 : FB_EIO;
    if (rc) FB_ERROR("server", "cannot listen on %s:%d: %s", host, port, strerror(errno));
    close(fd);
    return rc;
}

/* One node per data dir: a second one would corrupt nothing (SQLite locks)
 * but would split clients between two writers with separate caches. */
static int lock_data_dir(const char *dir, int *fd_out)
{
    char path[600];
    snprintf(path, sizeof path, "%s/LOCK", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) {
        FB_ERROR("server", "data_dir %s is in use by another node (%s)", dir, strerror(errno));
        if (fd >= 0) close(fd);
        return FB_ESTATE;
    }
    *fd_out = fd;
    return 0;
}

static int loop_init(fb_server_t *s, int index, fb_loop_t **out)
{
    fb_loop_t *l = fb_calloc(1, sizeof *l);
    l->index = index;
    l->srv = s;
    fb_mpsc_init(&l->inbox);
    fb_map_init(&l->users);
    l->enc = fb_ws_enc_new();
    uv_loop_init(&l->loop);
    *out = l; /* even half built: loop_free undoes what was done */
    int rc = fb_store_open_reader(&s->store_cfg, &l->reader);
    if (rc) goto fail;
    l->inbox_async.data = l->stop_async.data = l->flush_check.data = l->sweep_timer.data = l;
    uv_async_init(&l->loop, &l->inbox_async, on_inbox);
    uv_async_init(&l->loop, &l->stop_async, on_stop);
    uv_check_init(&l->loop, &l->flush_check);
    uv_check_start(&l->flush_check, on_check);
    uv_timer_init(&l->loop, &l->sweep_timer);
    uv_timer_init(&l->loop, &l->finish_timer);
    l->finish_timer.data = l;
    uint64_t sweep = (uint64_t)FB_MAX(100, s->cfg.handshake_timeout_ms / 4);
    uv_timer_start(&l->sweep_timer, on_sweep, sweep, sweep);
    uv_unref((uv_handle_t *)&l->sweep_timer);
    uv_tcp_init(&l->loop, &l->listener);
    l->listener.data = l;
    rc = listen_socket(s->cfg.listen_host, index == 0 ? s->cfg.listen_port : s->port, &l->listen_fd,
                       &s->port);
    if (rc) goto fail;
    if (uv_tcp_open(&l->listener, l->listen_fd) != 0 ||
        uv_listen((uv_stream_t *)&l->listener, 1024, on_connection) != 0) {
        rc = FB_EIO;
        goto fail;
    }
    return 0;
fail:
    FB_ERROR("server", "io loop %d failed to start: %s", index, fb_err_message(rc));
    return rc;
}

/* Frees a loop whose thread has ended: closes what is still open, drops the
 * references held by the dirty list, and runs the loop until every close
 * callback and thread pool job has finished. */
static void loop_free(fb_loop_t *l)
{
    for (fb_conn_t *c = l->all, *next; c; c = next) {
        next = c->all_next;
        fb_conn_close(c);
    }
    fb_conn_flush_all(l);
    uv_walk(&l->loop, close_handle, NULL);
    uv_run(&l->loop, UV_RUN_DEFAULT);
    drain_inbox(l);
    fb_conn_flush_all(l);
    uv_run(&l->loop, UV_RUN_DEFAULT);
    uv_loop_close(&l->loop);
    if (l->reader) fb_store_close(l->reader);
    fb_ws_enc_free(l->enc);
    fb_buf_free(&l->frame_copy);
    fb_map_free(&l->users);
    fb_free(l);
}

/* ---- the command ---- */

static uv_loop_t *main_loop;
static uv_signal_t sig_int, sig_term;

static void on_signal(uv_signal_t *h, int signum)
{
    FB_INFO("server", "signal %d: shutting down", signum);
    uv_signal_stop(&sig_int);
    uv_signal_stop(&sig_term);
    uv_stop(main_loop);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: firebreak serve [--config FILE] [--listen HOST:PORT] [--data-dir DIR]\n"
            "                       [--io-threads N] [--registration open|closed]\n"
            "                       [--log-level LEVEL] [--set KEY=VALUE]... [--ready-file FILE]\n"
            "       firebreak serve --print-config [...]\n"
            "Runs a node. Every key of the config file can also be given with --set.\n"
            "--ready-file writes HOST:PORT to FILE once the node listens (for scripts).\n");
}

static int parse_args(fb_config_t *cfg, int argc, char **argv, bool *print, const char **ready)
{
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'},   {"listen", required_argument, 0, 'l'},
        {"data-dir", required_argument, 0, 'd'}, {"io-threads", required_argument, 0, 't'},
        {"registration", required_argument, 0, 'r'}, {"log-level", required_argument, 0, 'v'},
        {"set", required_argument, 0, 's'},      {"ready-file", required_argument, 0, 'f'},
        {"print-config", no_argument, 0, 'p'},   {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    char err[512];
    /* The config file first, so that flags override it whatever their order. */
    for (int i = 1; i < argc - 1; i++) {
        if (strcmp(argv[i], "--config") == 0 && fb_config_load(cfg, argv[i + 1], err, sizeof err)) {
            fprintf(stderr, "firebreak serve: %s\n", err);
            return 1;
        }
    }
    optind = 1;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        const char *key = NULL;
        char *val = optarg;
        switch (o) {
        case 'c': continue;
        case 'l': key = "listen"; break;
        case 'd': key = "data_dir"; break;
        case 't': key = "io_threads"; break;
        case 'r': key = "registration"; break;
        case 'v': key = "log_level"; break;
        case 'f': *ready = optarg; continue;
        case 'p': *print = true; continue;
        case 'h': usage(stdout); exit(0);
        case 's': {
            char *eq = strchr(optarg, '=');
            if (!eq) {
                fprintf(stderr, "firebreak serve: --set wants KEY=VALUE\n");
                return 1;
            }
            *eq = 0;
            key = optarg;
            val = eq + 1;
            break;
        }
        default: usage(stderr); return 1;
        }
        if (fb_config_set(cfg, key, val, err, sizeof err)) {
            fprintf(stderr, "firebreak serve: %s\n", err);
            return 1;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 1;
    }
    return 0;
}

static void shutdown_node(fb_server_t *s)
{
    fb_relay_stop(s->relay); /* it hands pushes to the writer and the loops */
    s->relay = NULL;
    atomic_store(&s->phase, 1);
    for (int i = 0; i < s->n_loops; i++) uv_async_send(&s->loops[i]->stop_async);
    for (int i = 0; i < s->n_loops; i++) uv_sem_wait(&s->quiet);
    /* No loop submits any more: commit what is queued; the loops get the batches. */
    fb_writer_stop(s->writer);
    atomic_store(&s->phase, 2);
    for (int i = 0; i < s->n_loops; i++) {
        uv_async_send(&s->loops[i]->stop_async);
        uv_thread_join(&s->loops[i]->thread);
    }
    for (int i = 0; i < s->n_loops; i++) loop_free(s->loops[i]);
}

int fb_server_main(int argc, char **argv)
{
    fb_server_t *s = fb_calloc(1, sizeof *s);
    bool print = false;
    const char *ready = NULL;
    int rc = 1, started = 0, lock_fd = -1;
    fb_config_defaults(&s->cfg);
    if (parse_args(&s->cfg, argc, argv, &print, &ready)) goto out;
    {
        char err[200];
        if (fb_config_check(&s->cfg, err, sizeof err)) {
            fprintf(stderr, "firebreak serve: %s\n", err);
            goto out;
        }
    }
    if (print) {
        fb_config_print(&s->cfg, stdout);
        rc = 0;
        goto out;
    }
    fb_log_set_level(s->cfg.log_level);
    signal(SIGPIPE, SIG_IGN);
    if (fb_auth_init()) goto out;
    if (mkdir(s->cfg.data_dir, 0700) != 0 && errno != EEXIST) {
        FB_ERROR("server", "cannot create data_dir %s: %s", s->cfg.data_dir, strerror(errno));
        goto out;
    }
    if (lock_data_dir(s->cfg.data_dir, &lock_fd) || port_free(s->cfg.listen_host, s->cfg.listen_port))
        goto out;
    fb_config_db_path(&s->cfg, s->db_path, sizeof s->db_path);
    {
        /* one word of at most 64 bytes (fb_store_announce), unique per run */
        char rnd[9];
        uint8_t b[4];
        randombytes_buf(b, sizeof b);
        fb_hex_encode(b, sizeof b, rnd);
        snprintf(s->origin, sizeof s->origin, "%.40s:%d-%s", s->cfg.listen_host,
                 s->cfg.listen_port, rnd);
    }
    s->store_cfg.kind = s->cfg.store;
    s->store_cfg.path = s->db_path;
    s->store_cfg.conninfo = s->cfg.pg_conninfo;
    s->store_cfg.read_conninfo = s->cfg.pg_read_conninfo;
    s->store_cfg.cache_mib = (int)s->cfg.sqlite_cache_mib;
    if (fb_store_open(&s->store_cfg, &s->wstore)) {
        FB_ERROR("server", "cannot open the store at %s", s->db_path);
        goto out;
    }
    s->n_loops = s->cfg.io_threads > 0 ? s->cfg.io_threads : (int)FB_MAX(1, uv_available_parallelism());
    s->loops = fb_calloc((size_t)s->n_loops, sizeof *s->loops);
    s->started_ms = fb_now_ms();
    s->writer_enc = fb_ws_enc_new();
    uv_sem_init(&s->quiet, 0);
    for (int i = 0; i < s->n_loops; i++)
        if (loop_init(s, i, &s->loops[i])) goto out;
    fb_wsink_t *sinks = fb_calloc((size_t)s->n_loops, sizeof *sinks);
    for (int i = 0; i < s->n_loops; i++) sinks[i] = (fb_wsink_t){loop_deliver, s->loops[i]};
    fb_writer_opts_t wo = {.max_room_members = s->cfg.max_room_members,
                           .batch_max = s->cfg.writer_batch_max,
                           .encode_event = fb_server_encode_event,
                           .encode_read = fb_server_encode_read,
                           .encode_ud = s,
                           .origin = s->origin,
                           .hold_ms = s->cfg.store_hold_ms};
    rc = fb_writer_start(s->wstore, &wo, sinks, s->n_loops, &s->writer);
    fb_free(sinks);
    if (rc) {
        rc = 1;
        goto out;
    }
    /* Nodes sharing a store hear each other's commits through its feed. */
    if (strcmp(s->cfg.store, "sqlite") != 0 && fb_relay_start(s, &s->relay)) {
        rc = 1;
        goto out;
    }
    for (started = 0; started < s->n_loops; started++)
        uv_thread_create(&s->loops[started]->thread, loop_main, s->loops[started]);
    char where[600];
    if (strcmp(s->cfg.store, "sqlite") == 0)
        snprintf(where, sizeof where, "%s", s->db_path);
    else
        fb_config_redact_conninfo(s->cfg.pg_conninfo, where, sizeof where);
    FB_INFO("server", "firebreak %s listening on %s:%d (ws /ws), %d io loops, store %s at %s",
            FB_VERSION, s->cfg.listen_host, s->port, s->n_loops, s->cfg.store, where);
    if (ready) {
        FILE *f = fopen(ready, "w");
        if (f) {
            fprintf(f, "%s:%d\n", s->cfg.listen_host, s->port);
            fclose(f);
        }
    }
    main_loop = fb_malloc(sizeof *main_loop);
    uv_loop_init(main_loop);
    uv_signal_init(main_loop, &sig_int);
    uv_signal_init(main_loop, &sig_term);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_run(main_loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_run(main_loop, UV_RUN_DEFAULT);
    uv_loop_close(main_loop);
    fb_free(main_loop);
    shutdown_node(s);
    s->writer = NULL;
    s->n_loops = 0;
    rc = 0;
    FB_INFO("server", "stopped");
out:
    for (int i = 0; i < s->n_loops; i++)
        if (s->loops[i]) loop_free(s->loops[i]);
    fb_free(s->loops);
    fb_ws_enc_free(s->writer_enc);
    if (s->writer_enc) uv_sem_destroy(&s->quiet);
    if (s->wstore) fb_store_close(s->wstore);
    if (lock_fd >= 0) close(lock_fd); /* releases the data dir */
    fb_free(s);
    return rc;
}
