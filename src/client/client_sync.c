/* The blocking layer for tests and scripts: run the caller's loop one turn at
 * a time until a reply, an event or a state arrives, or a timeout passes.
 * Other clients on the same loop keep running; nothing here may be called
 * from inside a loop callback (libuv loops do not nest).
 * SPDX-License-Identifier: MIT */
#include "client/client_int.h"

static void on_wait_timer(uv_timer_t *t)
{
    fb_client_t *c = t->data;
    c->wait_expired = true;
}

int fb_client_run_until(fb_client_t *c, bool (*done)(void *arg), void *arg, int timeout_ms)
{
    int err = 0;
    if (done(arg)) return 0;
    c->wait_expired = false;
    if (timeout_ms >= 0 && !c->closing)
        uv_timer_start(&c->wait_timer, on_wait_timer, (uint64_t)timeout_ms, 0);
    while (!done(arg)) {
        if (c->wait_expired) {
            err = FB_CLIENT_ETIMEDOUT;
            break;
        }
        /* 0: nothing left that could ever make done() true */
        if (uv_run(c->loop, UV_RUN_ONCE) == 0 && !done(arg)) {
            err = FB_CLIENT_ETIMEDOUT;
            break;
        }
    }
    if (!c->closing) uv_timer_stop(&c->wait_timer);
    return err;
}

static bool connect_done(void *arg)
{
    fb_client_t *c = arg;
    switch (c->state) {
    case FB_CLIENT_READY:
    case FB_CLIENT_STOPPED:
    case FB_CLIENT_CLOSED:
        return true;
    case FB_CLIENT_CONNECTED:
        return !fb_client__has_credentials(c);
    default:
        return false;
    }
}

int fb_client_connect_sync(fb_client_t *c, int timeout_ms)
{
    int err = fb_client_start(c);
    if (err) return err;
    err = fb_client_run_until(c, connect_done, c, timeout_ms);
    if (c->state == FB_CLIENT_STOPPED) return c->stop_err;
    if (c->state == FB_CLIENT_CLOSED) return FB_ESTATE;
    if (err) return c->ever_connected ? FB_CLIENT_ETIMEDOUT : FB_EUNAVAIL;
    return 0;
}

typedef struct {
    bool done;
    int err;
    json_t *reply;
} call_t;

static void on_call_reply(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    call_t *call = ud;
    call->done = true;
    call->err = err;
    call->reply = reply ? json_incref(reply) : NULL;
}

static bool call_done(void *arg)
{
    return ((call_t *)arg)->done;
}

int fb_client_call_sync(fb_client_t *c, json_t *req, json_t **reply, int timeout_ms)
{
    call_t call = {0};
    uint64_t handle = 0;
    if (reply) *reply = NULL;
    int err = fb_client__submit(c, req, on_call_reply, &call, &handle);
    if (err) return err;
    err = fb_client_run_until(c, call_done, &call, timeout_ms);
    if (err) {
        /* the call's record lives on this stack frame: unhook it */
        fb_client_cancel(c, handle);
        return err;
    }
    if (reply)
        *reply = call.reply;
    else
        json_decref(call.reply);
    return call.err;
}

static bool event_ready(void *arg)
{
    return ((fb_client_t *)arg)->evq_n > 0;
}

int fb_client_next_event(fb_client_t *c, json_t **ev, int timeout_ms)
{
    *ev = NULL;
    int err = fb_client_run_until(c, event_ready, c, timeout_ms);
    if (err) return err;
    *ev = c->evq[c->evq_head];
    c->evq_head = (c->evq_head + 1) % c->evq_cap;
    c->evq_n--;
    return 0;
}

static bool closed_done(void *arg)
{
    return ((fb_client_t *)arg)->open_handles == 0;
}

void fb_client_free_sync(fb_client_t *c)
{
    if (!c) return;
    fb_client_close(c, NULL);
    while (!closed_done(c))
        uv_run(c->loop, UV_RUN_ONCE);
    fb_client_free(c);
}
