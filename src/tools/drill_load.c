/* `firebreak drill`, the moving part: registers the drill's users, creates its
 * rooms, then drives senders, readers and their read probes on one libuv
 * loop through every site, and runs the fault and heal commands on schedule
 * without stopping the load. It records what was acknowledged and when; it
 * judges nothing (drill_check.c does). Every count it grows is bounded.
 * SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/drill.h"

extern char **environ;

#define DRILL_MAX_REG_ATTEMPTS 5

/* ---- clients ---- */

/* Logs why the setup failed; the first reason goes into the report. */
static void __attribute__((format(printf, 2, 3))) setup_error(drill_t *d, const char *fmt, ...)
{
    char buf[sizeof d->setup_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    drill_log(d, "setup: %s", buf);
    if (!d->setup_error[0]) snprintf(d->setup_error, sizeof d->setup_error, "%s", buf);
}

static fb_client_t *new_client(drill_t *d, int home, void *ud, fb_client_event_cb on_event,
                               bool raw)
{
    fb_client_t *c = NULL;
    fb_client_opts_t o = {
        .servers = d->client_servers[home],
        .device = "drill",
        .on_event = on_event,
        .ud = ud,
        .raw_events = raw,
        .connect_timeout_ms = d->o.connect_timeout_ms,
        .keepalive_ms = d->o.keepalive_ms,
    };
    int err = fb_client_new(&d->loop, &o, &c);
    if (err) {
        setup_error(d, "cannot create a client for %s: %s", d->client_servers[home],
                    fb_client_strerror(err));
        return NULL;
    }
    fb_client_start(c);
    return c;
}

static void on_reader_event(fb_client_t *c, json_t *ev, void *ud)
{
    drill_reader_event(ud, ev);
}

/* ---- registration ---- */

typedef struct {
    drill_t *d;
    fb_client_t **c;
    const char *name;
    bool *registered;
    int *err;
    int attempts;
} reg_t;

static void reg_send(reg_t *g);

static void on_registered(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    reg_t *g = ud;
    if (!err) {
        *g->registered = true;
        return;
    }
    /* a register whose reply was lost may have been stored: log in then */
    if (err == FB_ENAMETAKEN && g->attempts > 1) {
        fb_client_login(c, g->name, g->d->password, "drill", on_registered, g);
        return;
    }
    if (fb_err_retryable(err) && g->attempts < DRILL_MAX_REG_ATTEMPTS) {
        reg_send(g);
        return;
    }
    *g->err = err;
    setup_error(g->d, "register %s: %s", g->name, msg ? msg : fb_client_strerror(err));
}

static void reg_send(reg_t *g)
{
    g->attempts++;
    int err = fb_client_register(*g->c, g->name, g->d->password, "drill", on_registered, g);
    if (err) *g->err = err;
}

static bool regs_done(drill_t *d)
{
    for (int i = 0; i < d->o.senders; i++)
        if (!d->s[i].registered && !d->s[i].reg_err) return false;
    for (int i = 0; i < d->o.readers; i++)
        if (!d->r[i].registered && !d->r[i].reg_err) return false;
    return true;
}

static bool clients_ready(drill_t *d)
{
    for (int i = 0; i < d->o.senders; i++)
        if (fb_client_state(d->s[i].c) != FB_CLIENT_READY) return false;
    for (int i = 0; i < d->o.readers; i++)
        if (fb_client_state(d->r[i].c) != FB_CLIENT_READY || d->r[i].sync_out) return false;
    return true;
}

static int64_t remaining(const drill_t *d, uint64_t deadline_ns)
{
    uint64_t now = uv_hrtime();
    return now >= deadline_ns ? 0 : (int64_t)((deadline_ns - now) / 1000000);
}

/* A blocking request of the setup, retried while the failure is retryable
 * and time is left. */
static int setup_call(drill_t *d, fb_client_t *c, json_t *req, json_t **reply, uint64_t deadline_ns)
{
    for (;;) {
        json_t *r = NULL;
        int err = fb_client_call_sync(c, json_deep_copy(req), &r, (int)remaining(d, deadline_ns));
        if (!err) {
            json_decref(req);
            *reply = r;
            return 0;
        }
        const char *m = json_string_value(json_object_get(json_object_get(r, "error"), "message"));
        bool again =
            (fb_err_retryable(err) || err == FB_CLIENT_ETIMEDOUT) && remaining(d, deadline_ns) > 0;
        if (!again)
            setup_error(d, "%s: %s", json_string_value(json_object_get(req, "op")),
                        m ? m : fb_client_strerror(err));
        json_decref(r);
        if (!again) {
            json_decref(req);
            return err;
        }
        drill_sleep(d, 200);
    }
}

static int audit_setup(drill_t *d, uint64_t deadline_ns)
{
    int home = d->o.fault_site == 1 && d->o.n_sites > 1 ? 1 : 0;
    fb_client_t *a = new_client(d, home, NULL, NULL, true);
    if (!a) return FB_EINVAL;
    json_t *reply = NULL;
    int err = fb_client_connect_sync(a, (int)remaining(d, deadline_ns));
    if (err) {
        setup_error(d, "no site answered (%s): %s", d->client_servers[home],
                    fb_client_strerror(err));
        goto done;
    }
    err = setup_call(d, a,
                     json_pack("{s:s,s:s,s:s,s:s}", "op", "register", "user", d->audit_name,
                               "password", d->password, "device", "drill"),
                     &reply, deadline_ns);
    if (err == FB_ENAMETAKEN)
        setup_error(d, "user %s exists: give another --user-prefix", d->audit_name);
    if (err) goto done;
    d->audit_token = fb_strdup(json_string_value(json_object_get(reply, "token")));
    json_decref(reply);

    /* every sender and reader is a founding member of every room */
    for (int k = 0; k < d->o.rooms; k++) {
        json_t *members = json_array();
        for (int i = 0; i < d->o.senders; i++)
            json_array_append_new(members, json_string(d->s[i].name));
        for (int i = 0; i < d->o.readers; i++)
            json_array_append_new(members, json_string(d->r[i].name));
        char name[64];
        snprintf(name, sizeof name, "%s room %d", d->o.prefix, k);
        err = setup_call(
            d, a,
            json_pack("{s:s,s:s,s:o}", "op", "create_group", "name", name, "members", members),
            &reply, deadline_ns);
        if (err) goto done;
        json_t *room = json_object_get(reply, "room");
        d->room_ids[k] = json_integer_value(json_object_get(room, "room"));
        d->room_setup_seq[k] = json_integer_value(json_object_get(room, "last_seq"));
        json_decref(reply);
        if (drill_room_slot(d, d->room_ids[k]) < 0) {
            setup_error(d, "create_group replied without a usable room id");
            err = FB_EBADREQ;
            goto done;
        }
    }
done:
    fb_client_free_sync(a);
    return err;
}

static void on_setup_sync(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    drill_reader_t *r = ud;
    r->sync_out = false;
    if (err) r->sync_err = err;
}

int drill_setup(drill_t *d)
{
    uint64_t deadline = uv_hrtime() + (uint64_t)d->o.setup_timeout_ms * 1000000;
    int n_sites = (int)d->o.n_sites;
    /* kept until the clients are closed: their callbacks may still come */
    reg_t *regs = fb_calloc((size_t)(d->o.senders + d->o.readers), sizeof *regs);
    d->regs = regs;
    int err = 0;
    drill_log(d, "setup: %d senders, %d readers, %d rooms over %d site%s; users %s-*", d->o.senders,
              d->o.readers, d->o.rooms, n_sites, n_sites == 1 ? "" : "s", d->o.prefix);
    /* client i starts at site i mod n and knows every site after it */
    for (int i = 0; i < d->o.senders; i++) {
        drill_sender_t *s = &d->s[i];
        s->c = new_client(d, s->home, s, NULL, true);
        if (!s->c) {
            err = FB_EINVAL;
            goto done;
        }
        regs[i] = (reg_t){d, &s->c, s->name, &s->registered, &s->reg_err, 0};
        reg_send(&regs[i]);
    }
    for (int i = 0; i < d->o.readers; i++) {
        drill_reader_t *r = &d->r[i];
        r->c = new_client(d, r->home, r, on_reader_event, false);
        if (!r->c) {
            err = FB_EINVAL;
            goto done;
        }
        reg_t *g = &regs[d->o.senders + i];
        *g = (reg_t){d, &r->c, r->name, &r->registered, &r->reg_err, 0};
        reg_send(g);
    }
    if (!drill_run_until(d, regs_done, remaining(d, deadline))) {
        bool any = false;
        for (int i = 0; i < d->o.senders && !any; i++)
            any = fb_client_ever_connected(d->s[i].c);
        if (any)
            setup_error(d, "registrations did not finish within --setup-timeout");
        else
            setup_error(d, "no site answered within --setup-timeout (%s)", d->client_servers[0]);
        err = FB_CLIENT_ETIMEDOUT;
        goto done;
    }
    for (int i = 0; i < d->o.senders + d->o.readers; i++)
        if (*regs[i].err) {
            err = *regs[i].err;
            goto done;
        }
    err = audit_setup(d, deadline);
    if (err) goto done;
    /* readers start from the setup's events, all of them */
    for (int i = 0; i < d->o.readers; i++) {
        d->r[i].sync_out = true;
        if (fb_client_sync(d->r[i].c, on_setup_sync, &d->r[i])) d->r[i].sync_out = false;
    }
    if (!drill_run_until(d, clients_ready, remaining(d, deadline))) {
        setup_error(d, "clients not ready within --setup-timeout");
        err = FB_CLIENT_ETIMEDOUT;
    }
done:
    return err;
}

/* ---- senders ---- */

static void pump(drill_sender_t *s);

static void sender_gap(drill_t *d, drill_sender_t *s, int64_t now)
{
    drill_gap_mark(&s->acks, now);
    drill_gap_mark(&d->acks, now);
    if (d->fault.finished && now >= d->fault.finished_ms) {
        if (d->first_ack_after_fault_ms < 0) d->first_ack_after_fault_ms = now;
        if (s->first_ack_after_fault_ms < 0) s->first_ack_after_fault_ms = now;
    }
}

static drill_second_t *second(drill_t *d, int64_t now)
{
    size_t i = now < 0 ? 0 : (size_t)(now / 1000);
    if (i >= d->n_secs) {
        size_t n = FB_MAX(i + 1, d->n_secs * 2);
        d->secs = fb_realloc(d->secs, n * sizeof *d->secs);
        memset(d->secs + d->n_secs, 0, (n - d->n_secs) * sizeof *d->secs);
        d->n_secs = n;
    }
    return &d->secs[i];
}

static void on_ack(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    drill_sender_t *s = fb_client_userdata(c);
    drill_t *d = s->d;
    drill_msg_t *m = &s->msgs[(size_t)(uintptr_t)ud];
    int64_t now = drill_now(d);
    s->outstanding--;
    if (d->phase >= PH_VERIFY) return; /* closing: it stays unacknowledged */
    if (err) {
        m->refused = 1;
        if (d->refused++ < 10)
            drill_log(d, "%s: send %zu refused: %s", s->name, (size_t)(uintptr_t)ud,
                      msg ? msg : fb_client_strerror(err));
    } else {
        int64_t room = json_integer_value(json_object_get(reply, "room"));
        m->seq = json_integer_value(json_object_get(reply, "seq"));
        m->acked = 1;
        m->dup_ack = json_is_true(json_object_get(reply, "duplicate"));
        m->ack_ms = (int32_t)now;
        if (room != d->room_ids[m->room_i] || m->seq <= 0) {
            m->bad |= DRILL_BAD_ACK;
            drill_log(d, "%s: send %zu acked with room %lld seq %lld (sent to room %lld)", s->name,
                      (size_t)(uintptr_t)ud, (long long)room, (long long)m->seq,
                      (long long)d->room_ids[m->room_i]);
        }
        d->acked++;
        d->acked_dup += m->dup_ack;
        second(d, now)->acked++;
        sender_gap(d, s, now);
    }
    if (d->phase == PH_LOAD && d->o.rate <= 0) pump(s);
}

/* Offers one message; false when the sender cannot take it. */
static bool send_one(drill_sender_t *s)
{
    drill_t *d = s->d;
    if (d->total_msgs >= d->o.max_messages || s->outstanding >= d->o.max_backlog) return false;
    if (s->n_msgs == s->cap_msgs) {
        s->cap_msgs = s->cap_msgs ? s->cap_msgs * 2 : 256;
        s->msgs = fb_realloc(s->msgs, s->cap_msgs * sizeof *s->msgs);
    }
    size_t n = s->n_msgs;
    drill_msg_t *m = &s->msgs[n];
    memset(m, 0, sizeof *m);
    m->ack_ms = -1;
    m->room_i = (uint16_t)((size_t)s->idx + n) % (uint16_t)d->o.rooms;
    char text[160], cmid[64];
    drill_msg_text(d, s->idx, n, text, sizeof text);
    snprintf(cmid, sizeof cmid, "%s.s%d.%zu", d->o.prefix, s->idx, n);
    int err =
        fb_client_send(s->c, d->room_ids[m->room_i], text, cmid, on_ack, (void *)(uintptr_t)n);
    if (err) {
        if (err != FB_EBUSY && d->send_errors++ < 10)
            drill_log(d, "%s: cannot send: %s", s->name, fb_client_strerror(err));
        return false;
    }
    s->n_msgs++;
    s->outstanding++;
    d->total_msgs++;
    return true;
}

/* rate 0: keep --window sends in flight */
static void pump(drill_sender_t *s)
{
    while (s->outstanding < s->d->o.window)
        if (!send_one(s)) return;
}

static void pace(drill_t *d, int64_t now)
{
    if (d->o.rate <= 0) {
        for (int i = 0; i < d->o.senders; i++)
            pump(&d->s[i]);
        return;
    }
    d->tokens += d->o.rate * (double)(now - d->last_pace_ms) / 1000.0;
    d->last_pace_ms = now;
    /* a stalled loop does not turn into a burst */
    double cap = FB_MAX(1.0, d->o.rate / 20.0);
    if (d->tokens > cap) d->tokens = cap;
    while (d->tokens >= 1.0) {
        bool sent = false;
        for (int k = 0; k < d->o.senders && !sent; k++) {
            drill_sender_t *s = &d->s[d->next_sender];
            d->next_sender = (d->next_sender + 1) % d->o.senders;
            sent = send_one(s);
        }
        d->tokens -= 1.0;
        if (!sent) d->not_offered++;
    }
}

/* ---- read probes ---- */

static void on_probe(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    drill_reader_t *r = ud;
    drill_t *d = r->d;
    r->probe_out = false;
    if (d->phase >= PH_VERIFY) return;
    int64_t now = drill_now(d);
    if (drill_probes_record(&r->probes, err, msg, now)) second(d, now)->reads_ok++;
}

static void probe(drill_t *d, int64_t now)
{
    for (int i = 0; i < d->o.readers; i++) {
        drill_reader_t *r = &d->r[i];
        if (r->probe_out || now < r->next_probe_ms) continue;
        r->next_probe_ms += d->o.probe_ms;
        if (r->next_probe_ms <= now) r->next_probe_ms = now + d->o.probe_ms;
        r->probe_out = true;
        int err = fb_client_history(r->c, d->room_ids[i % d->o.rooms], 0, 1, on_probe, r);
        if (err) {
            r->probe_out = false;
            drill_probes_record(&r->probes, err, NULL, now);
        }
    }
}

/* ---- fault and heal commands ---- */

static void cmd_flush_line(drill_cmd_t *k)
{
    if (!k->line_len) return;
    k->line[k->line_len] = 0;
    drill_log(k->d, "%s| %s", k->name, k->line);
    k->line_len = 0;
}

static void cmd_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char scratch[4096]; /* one loop, one reader at a time */
    buf->base = scratch;
    buf->len = sizeof scratch;
}

static void cmd_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    drill_cmd_t *k = st->data;
    if (n < 0) {
        cmd_flush_line(k);
        uv_read_stop(st);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        char ch = buf->base[i];
        if (k->keep_len < sizeof k->keep - 1) k->keep[k->keep_len++] = ch;
        if (ch == '\n')
            cmd_flush_line(k);
        else if (k->line_len < sizeof k->line - 1)
            k->line[k->line_len++] = ch;
    }
}

static void cmd_on_exit(uv_process_t *p, int64_t status, int sig)
{
    drill_cmd_t *k = p->data;
    drill_t *d = k->d;
    k->finished = true;
    k->finished_ms = drill_now(d);
    k->exit_status = status;
    k->term_signal = sig;
    cmd_flush_line(k);
    drill_log(d, "%s: command %s after %.2f s", k->name,
              k->timed_out ? "timed out (killed)"
              : sig        ? "killed by a signal"
              : status     ? "failed"
                           : "done",
              (double)(k->finished_ms - k->started_ms) / 1000.0);
    if (sig || status)
        drill_log(d, "%s: exit status %lld, signal %d", k->name, (long long)status, sig);
    uv_close((uv_handle_t *)p, NULL);
    k->proc_open = false;
    if (k == &d->fault && d->o.heal_relative && d->heal.cmd)
        d->heal.at_ms = k->finished_ms + d->o.heal_at_ms;
}

static char *env_entry(const char *key, const char *val)
{
    size_t n = strlen(key) + strlen(val) + 2;
    char *e = fb_malloc(n);
    snprintf(e, n, "%s=%s", key, val);
    return e;
}

static void cmd_start(drill_t *d, drill_cmd_t *k)
{
    k->started = true;
    k->started_ms = drill_now(d);
    drill_log(d, "%s: running /bin/sh -c '%s'", k->name, k->cmd);
    /* its stdout and stderr share one pipe, read into the drill's log */
    uv_file fds[2];
    int err = uv_pipe(fds, 0, 0);
    if (err) goto fail;
    uv_pipe_init(&d->loop, &k->out, 0);
    k->out.data = k;
    k->out_open = true;
    uv_pipe_open(&k->out, fds[0]);

    size_t n_env = 0;
    while (environ[n_env])
        n_env++;
    char **env = fb_calloc(n_env + 4, sizeof *env);
    char sites[2048] = "", fs[16];
    for (size_t i = 0; i < d->o.n_sites; i++)
        snprintf(sites + strlen(sites), sizeof sites - strlen(sites), "%s%s", i ? "," : "",
                 d->o.sites[i]);
    snprintf(fs, sizeof fs, "%d", d->o.fault_site);
    size_t e = 0;
    for (size_t i = 0; i < n_env; i++)
        if (strncmp(environ[i], "DRILL_", 6)) env[e++] = environ[i];
    char *mine[3] = {env_entry("DRILL_PHASE", k->name), env_entry("DRILL_SITES", sites),
                     env_entry("DRILL_FAULT_SITE", fs)};
    for (int i = 0; i < 3; i++)
        env[e++] = mine[i];
    char *args[] = {"/bin/sh", "-c", (char *)k->cmd, NULL};
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = fds[1]},
        {.flags = UV_INHERIT_FD, .data.fd = fds[1]},
    };
    uv_process_options_t po = {
        .exit_cb = cmd_on_exit,
        .file = "/bin/sh",
        .args = args,
        .env = env,
        .stdio_count = 3,
        .stdio = stdio,
        .flags = UV_PROCESS_DETACHED, /* its own process group: a timeout kills all of it */
    };
    k->proc.data = k;
    err = uv_spawn(&d->loop, &k->proc, &po);
    close(fds[1]);
    for (int i = 0; i < 3; i++)
        fb_free(mine[i]);
    fb_free(env);
    if (err) {
        uv_close((uv_handle_t *)&k->proc, NULL);
        goto fail;
    }
    k->proc_open = true;
    uv_read_start((uv_stream_t *)&k->out, cmd_alloc, cmd_on_read);
    return;
fail:
    k->spawn_err = err;
    k->finished = true;
    k->finished_ms = drill_now(d);
    drill_log(d, "%s: cannot run the command: %s", k->name, uv_strerror(err));
    if (k == &d->fault && d->o.heal_relative && d->heal.cmd)
        d->heal.at_ms = k->finished_ms + d->o.heal_at_ms;
}

static void commands(drill_t *d, int64_t now)
{
    drill_cmd_t *f = &d->fault, *h = &d->heal;
    if (f->cmd && !f->started && f->at_ms >= 0 && now >= f->at_ms) cmd_start(d, f);
    /* the heal never overtakes the fault */
    if (h->cmd && !h->started && h->at_ms >= 0 && now >= h->at_ms && (!f->cmd || f->finished))
        cmd_start(d, h);
    drill_cmd_t *ks[] = {f, h};
    for (int i = 0; i < 2; i++) {
        drill_cmd_t *k = ks[i];
        if (k->cmd && k->started && !k->finished && !k->timed_out &&
            now - k->started_ms > d->o.cmd_timeout_ms) {
            k->timed_out = true;
            drill_log(d, "%s: command still running after %.0f s: killing it", k->name,
                      (double)d->o.cmd_timeout_ms / 1000.0);
            uv_kill(-k->proc.pid, SIGKILL);
        }
    }
}

static bool commands_done(drill_t *d)
{
    drill_cmd_t *ks[] = {&d->fault, &d->heal};
    for (int i = 0; i < 2; i++)
        if (ks[i]->cmd && ks[i]->at_ms >= 0 && !ks[i]->finished) return false;
    return true;
}

/* ---- the tick: pacing, probes, schedule, progress ---- */

static int count_ready_senders(drill_t *d)
{
    int n = 0;
    for (int i = 0; i < d->o.senders; i++)
        n += fb_client_state(d->s[i].c) == FB_CLIENT_READY;
    return n;
}

static int count_ready_readers(drill_t *d)
{
    int n = 0;
    for (int i = 0; i < d->o.readers; i++)
        n += fb_client_state(d->r[i].c) == FB_CLIENT_READY;
    return n;
}

static long unacked_now(drill_t *d)
{
    long n = 0;
    for (int i = 0; i < d->o.senders; i++)
        n += d->s[i].outstanding;
    return n;
}

static void progress(drill_t *d, int64_t now)
{
    if (now < d->next_progress_ms) return;
    d->next_progress_ms += 1000;
    drill_second_t *sec = second(d, now);
    sec->senders_ready = count_ready_senders(d);
    sec->readers_ready = count_ready_readers(d);
    if (d->o.quiet) return;
    drill_log(d, "%s acked %ld (+%ld) unacked %ld, ready senders %d/%d readers %d/%d",
              d->phase == PH_LOAD ? "load " : "drain", d->acked, d->acked - d->last_progress_acked,
              unacked_now(d), sec->senders_ready, d->o.senders, sec->readers_ready, d->o.readers);
    d->last_progress_acked = d->acked;
}

static void end_load(drill_t *d, int64_t now)
{
    d->phase = PH_DRAIN;
    d->load_end_ms = now;
    /* a command not started yet (stopped early by ^C) will not run */
    drill_cmd_t *ks[] = {&d->fault, &d->heal};
    for (int i = 0; i < 2; i++)
        if (ks[i]->cmd && !ks[i]->started && ks[i]->at_ms > now && d->interrupts) {
            drill_log(d, "%s: not run (interrupted)", ks[i]->name);
            ks[i]->at_ms = -1;
        }
    drill_log(d, "load over after %.1f s: %ld sent, %ld acked; draining", (double)now / 1000.0,
              d->total_msgs, d->acked);
}

static void on_tick(uv_timer_t *t)
{
    drill_t *d = t->data;
    if (d->phase != PH_LOAD && d->phase != PH_DRAIN) return;
    int64_t now = drill_now(d);
    drill_gap_mark(&d->ticks, now);
    commands(d, now);
    if (d->phase == PH_LOAD) {
        pace(d, now);
        if (now >= d->o.duration_ms || d->interrupts) end_load(d, now);
    }
    probe(d, now);
    progress(d, now);
}

void drill_tick_start(drill_t *d)
{
    uv_timer_start(&d->tick, on_tick, DRILL_TICK_MS, DRILL_TICK_MS);
}

static void on_sigint(uv_signal_t *h, int sig)
{
    drill_t *d = h->data;
    d->interrupts++;
    drill_log(d, "interrupted: ending the load now (^C again to abort)");
    uv_signal_stop(h); /* the next ^C has its default effect */
}

/* ---- the run ---- */

static bool load_over(drill_t *d)
{
    return d->phase != PH_LOAD;
}

static bool drained(drill_t *d)
{
    return unacked_now(d) == 0;
}

void drill_load(drill_t *d)
{
    d->t0_ns = uv_hrtime();
    d->phase = PH_LOAD;
    drill_probers_start(d);
    d->acks.last = 0;
    d->first_ack_after_fault_ms = -1;
    for (int i = 0; i < d->o.senders; i++)
        d->s[i].first_ack_after_fault_ms = -1;
    for (int i = 0; i < d->o.readers; i++)
        d->r[i].next_probe_ms = (int64_t)i * d->o.probe_ms / FB_MAX(1, d->o.readers);
    d->fault.at_ms = d->fault.cmd ? d->o.fault_at_ms : -1;
    d->heal.at_ms = d->heal.cmd && !d->o.heal_relative ? d->o.heal_at_ms : -1;
    uv_signal_init(&d->loop, &d->sigint);
    d->sigint.data = d;
    uv_signal_start(&d->sigint, on_sigint, SIGINT);
    drill_log(d, "load: %.0f s", (double)d->o.duration_ms / 1000.0);
    if (d->fault.cmd)
        drill_log(d, "fault due at t=%.1f s%s", (double)d->fault.at_ms / 1000.0,
                  d->o.fault_site ? "" : " (no --fault-site)");
    pace(d, 0);
    drill_run_until(d, load_over, d->o.duration_ms + 60000);
    if (d->phase == PH_LOAD) end_load(d, drill_now(d));
    /* commands still due run and finish (each bounded by --cmd-timeout),
     * then every send gets its ack or --drain-timeout passes */
    drill_run_until(d, commands_done, 2 * d->o.cmd_timeout_ms + d->o.heal_at_ms + 10000);
    int64_t drain_from = drill_now(d);
    if (!drill_run_until(d, drained, d->o.drain_timeout_ms))
        drill_log(d, "drain: %ld sends still unacknowledged after %.0f s", unacked_now(d),
                  (double)d->o.drain_timeout_ms / 1000.0);
    drill_probers_stop(d);
    int64_t now = drill_now(d);
    d->drain_end_ms = now;
    d->phase = PH_VERIFY;
    /* outages still open at the end count up to it */
    if (unacked_now(d) > 0) drill_gap_close(&d->acks, now);
    for (int i = 0; i < d->o.senders; i++)
        if (d->s[i].outstanding > 0) drill_gap_close(&d->s[i].acks, now);
    for (int i = 0; i < d->o.readers; i++) {
        drill_reader_t *r = &d->r[i];
        drill_gap_close(&r->probes.gap, now);
    }
    drill_log(d, "drain over after %.1f s", (double)(now - drain_from) / 1000.0);
    uv_signal_stop(&d->sigint);
    /* no resend may land while the rooms are read back: what is still in an
     * outbox stays unacknowledged (freed in drill_close_clients) */
    for (int i = 0; i < d->o.senders; i++)
        fb_client_close(d->s[i].c, NULL);
}

/* ---- teardown ---- */

static void walk_close(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

void drill_close_clients(drill_t *d)
{
    d->phase = PH_DONE;
    for (int i = 0; i < d->o.senders; i++)
        if (d->s[i].c) fb_client_close(d->s[i].c, NULL);
    for (int i = 0; i < d->o.readers; i++)
        if (d->r[i].c) fb_client_close(d->r[i].c, NULL);
    /* the clients' timers, the tick, pipes still held open by whatever a
     * command left behind, and the process handles */
    uv_walk(&d->loop, walk_close, NULL);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < d->o.senders; i++) {
        fb_client_free(d->s[i].c);
        d->s[i].c = NULL;
    }
    for (int i = 0; i < d->o.readers; i++) {
        fb_client_free(d->r[i].c);
        d->r[i].c = NULL;
    }
    fb_free(d->regs);
    d->regs = NULL;
}
