/* Site probes of `firebreak drill`: per site one client of its own, on a
 * thread and libuv loop of its own, in a room of its own where nobody
 * writes, reading that room's history (limit 1) every --probe-interval.
 * They measure what a person opening a chat at that site sees: whether the
 * node answers reads. The readers' probes measure that too, but each reader
 * is in every drill room and shares the drill's one thread with every other
 * client: after a failover the backlog of held messages reaches all of them
 * at once, and a reader's probe reply waits behind its share of that
 * backlog on its connection and behind everyone's on the thread. Both are
 * reported (docs/drill.md).
 * A prober thread touches only its own drill_prober_t, reads d->o,
 * d->client_servers, d->t0_ns and d->password (fixed before it starts) and
 * the atomic stop flag; the main thread reads the prober after the join.
 * SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>

#include "common/fb.h"
#include "tools/drill.h"

static bool stopping(void *arg)
{
    drill_prober_t *p = arg;
    return atomic_load_explicit(&p->d->probers_stop, memory_order_acquire);
}

static bool reply_or_stop(void *arg)
{
    drill_prober_t *p = arg;
    return !p->out || stopping(p);
}

static void on_probe(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    drill_prober_t *p = ud;
    p->out = false;
    drill_probes_record(&p->probes, err, msg, drill_now(p->d));
}

/* The server's message in a refusal's error frame, else the code's. */
static const char *reply_error(const json_t *reply, int err)
{
    const char *m = json_string_value(json_object_get(json_object_get(reply, "error"), "message"));
    return m ? m : fb_client_strerror(err);
}

/* Register, create the probe room: 0 or an error (p->error says which). */
static int prober_setup(drill_prober_t *p, fb_client_t *c)
{
    const drill_t *d = p->d;
    int timeout = d->o.setup_timeout_ms;
    int err = fb_client_connect_sync(c, timeout);
    if (err) {
        snprintf(p->error, sizeof p->error, "no site answered: %s", fb_client_strerror(err));
        return err;
    }
    /* the client learns its user from any register reply (client.c reply_side_effects) */
    json_t *reply = NULL;
    err = fb_client_call_sync(c,
                              json_pack("{s:s,s:s,s:s,s:s}", "op", "register", "user", p->name,
                                        "password", d->password, "device", "drill-probe"),
                              &reply, timeout);
    if (err) snprintf(p->error, sizeof p->error, "register: %s", reply_error(reply, err));
    json_decref(reply);
    if (err) return err;
    char room[64];
    snprintf(room, sizeof room, "%s probe %d", d->o.prefix, p->site + 1);
    err = fb_client_call_sync(
        c, json_pack("{s:s,s:s,s:[]}", "op", "create_group", "name", room, "members"), &reply,
        timeout);
    if (!err) p->room = json_integer_value(json_object_get(json_object_get(reply, "room"), "room"));
    if (!err && p->room <= 0) err = FB_EBADREQ;
    if (err) snprintf(p->error, sizeof p->error, "create_group: %s", reply_error(reply, err));
    json_decref(reply);
    return err;
}

static void prober_main(void *arg)
{
    drill_prober_t *p = arg;
    const drill_t *d = p->d;
    uv_loop_t loop;
    if (uv_loop_init(&loop)) {
        snprintf(p->error, sizeof p->error, "no libuv loop");
        p->setup_err = FB_EIO;
        return;
    }
    fb_client_t *c = NULL;
    fb_client_opts_t o = {
        .servers = d->client_servers[p->site],
        .device = "drill-probe",
        .raw_events = true,
        .connect_timeout_ms = d->o.connect_timeout_ms,
        .keepalive_ms = d->o.keepalive_ms,
    };
    int err = fb_client_new(&loop, &o, &c);
    if (!err) err = prober_setup(p, c);
    if (err) {
        p->setup_err = err;
    } else {
        int64_t next = drill_now(d);
        /* set up: from now on, no answer is an outage, even if none ever comes */
        drill_gap_mark(&p->probes.gap, next);
        while (!stopping(p)) {
            int64_t now = drill_now(d);
            if (!p->out && now >= next) {
                next = FB_MAX(next + d->o.probe_ms, now);
                p->out = true;
                err = fb_client_history(c, p->room, 0, 1, on_probe, p);
                if (err) {
                    p->out = false;
                    drill_probes_record(&p->probes, err, NULL, now);
                }
            }
            /* the loop runs until the reply or the next probe is due, and
             * at most a tick: the stop flag, set by another thread, does not
             * wake this loop */
            int wait =
                p->out ? DRILL_TICK_MS : (int)FB_MIN(FB_MAX(1, next - drill_now(d)), DRILL_TICK_MS);
            fb_client_run_until(c, p->out ? reply_or_stop : stopping, p, wait);
        }
        drill_gap_close(&p->probes.gap, drill_now(d)); /* an outage still open counts to the end */
    }
    if (c) fb_client_free_sync(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
}

void drill_probers_start(drill_t *d)
{
    atomic_store(&d->probers_stop, false);
    for (size_t i = 0; i < d->o.n_sites; i++) {
        drill_prober_t *p = &d->probers[i];
        p->started = uv_thread_create(&p->thread, prober_main, p) == 0;
        if (!p->started) {
            /* the report keys on setup_err: a probe that never ran says why */
            p->setup_err = FB_EIO;
            snprintf(p->error, sizeof p->error, "cannot start a thread");
        }
    }
}

void drill_probers_stop(drill_t *d)
{
    atomic_store_explicit(&d->probers_stop, true, memory_order_release);
    for (size_t i = 0; i < d->o.n_sites; i++)
        if (d->probers[i].started) {
            uv_thread_join(&d->probers[i].thread);
            d->probers[i].started = false;
        }
}
