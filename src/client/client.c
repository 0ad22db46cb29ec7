/* The client's protocol engine: connection lifecycle and failover, the hello /
 * auth / login handshake, request ids and replies, the outbox, cursors with
 * gap sync, and event delivery. It must never deliver a room event twice or
 * out of order, never drop an unacknowledged send, and never call the app
 * while its own lists are half updated.
 *
 * Per connection:  CONNECTING -> (upgrade, server hello, hello[+token] or
 * login) -> AUTHENTICATED -> sync until !more -> READY (queue and outbox go
 * out) ... lost -> DISCONNECTED -> backoff -> CONNECTING to the next node.
 * SPDX-License-Identifier: MIT */
#include "client/client_int.h"

#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 250
#define DEFAULT_SERVERS "127.0.0.1:8080"

static void attempt(fb_client_t *c);
static void pump_queue(fb_client_t *c);
static void outbox_pump(fb_client_t *c);
static void sync_start(fb_client_t *c);
static void sync_send(fb_client_t *c);
static void drop_and_retry(fb_client_t *c, int err);

static int64_t now_ms(const fb_client_t *c)
{
    return (int64_t)uv_now(c->loop);
}

static int64_t jint(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* ---- request lists ---- */

static void list_push(fb_creq_list_t *l, fb_creq_t *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

static void list_remove(fb_creq_list_t *l, fb_creq_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->n--;
}

/* Takes the whole list, so callbacks may add to the client's lists freely. */
static fb_creq_list_t list_take(fb_creq_list_t *l)
{
    fb_creq_list_t t = *l;
    *l = (fb_creq_list_t){0};
    return t;
}

static void creq_free(fb_creq_t *r)
{
    json_decref(r->req);
    fb_free(r);
}

static fb_creq_t *creq_new(json_t *req, fb_client_reply_cb cb, void *ud)
{
    fb_creq_t *r = fb_calloc(1, sizeof *r);
    r->req = req;
    r->cb = cb;
    r->ud = ud;
    snprintf(r->op, sizeof r->op, "%s", jstr(req, "op") ? jstr(req, "op") : "");
    return r;
}

static void free_all(fb_creq_list_t l)
{
    fb_creq_t *r = l.head;
    while (r) {
        fb_creq_t *next = r->next;
        creq_free(r);
        r = next;
    }
}

/* Completes every request of a taken list with err; internal ones vanish. */
static void fail_all(fb_client_t *c, fb_creq_list_t l, int err, const char *msg)
{
    fb_creq_t *r = l.head;
    while (r) {
        fb_creq_t *next = r->next;
        if (r->out) r->out->req_id = 0;
        if (!r->internal && !r->out && r->cb) r->cb(c, err, msg, NULL, r->ud);
        creq_free(r);
        r = next;
    }
}

/* Sends that can no longer be answered in this process keep their place in
 * the persisted outbox; only their callbacks are told. */
static void outbox_fail_callbacks(fb_client_t *c, int err, const char *msg)
{
    for (fb_cout_t *o = c->st.out_head; o; o = o->next) {
        fb_client_reply_cb cb = o->cb;
        o->cb = NULL;
        o->req_id = 0;
        if (cb) cb(c, err, msg, NULL, o->ud);
    }
}

/* ---- persistence ---- */

static void save_state(fb_client_t *c)
{
    c->dirty = false;
    if (c->state_path) fb_cstate_save(&c->st, c->state_path);
}

static void forget_token(fb_client_t *c)
{
    fb_cstate_set_str(&c->st.token, NULL);
    save_state(c);
}

/* ---- events ---- */

static void deliver(fb_client_t *c, json_t *ev)
{
    if (c->queue_events) {
        if (c->evq_n == FB_CLIENT_EVENT_QUEUE_MAX) {
            FB_WARN("client", "event queue full: dropping the oldest event");
            json_decref(c->evq[c->evq_head]);
            c->evq_head = (c->evq_head + 1) % c->evq_cap;
            c->evq_n--;
        }
        if (c->evq_n == c->evq_cap) {
            size_t cap = c->evq_cap ? c->evq_cap * 2 : 64;
            json_t **q = fb_malloc(cap * sizeof *q);
            for (size_t i = 0; i < c->evq_n; i++)
                q[i] = c->evq[(c->evq_head + i) % c->evq_cap];
            fb_free(c->evq);
            c->evq = q;
            c->evq_cap = cap;
            c->evq_head = 0;
        }
        c->evq[(c->evq_head + c->evq_n++) % c->evq_cap] = json_incref(ev);
    }
    if (c->on_event) c->on_event(c, ev, c->ud);
}

/* ---- state ---- */

static const char *cur_addr(const fb_client_t *c)
{
    return c->addrs[c->addr_i];
}

static void set_state(fb_client_t *c, fb_client_state_t s, int err)
{
    c->state = s;
    if (c->on_state) c->on_state(c, s, cur_addr(c), err, c->ud);
}

static bool conn_ready_for(const fb_client_t *c, bool preauth)
{
    if (!c->conn || c->hs != HS_DONE || c->closing) return false;
    if (c->state == FB_CLIENT_READY) return true;
    return preauth && (c->state == FB_CLIENT_CONNECTED || c->state == FB_CLIENT_AUTHENTICATED);
}

/* Tears the current connection down and fails what was in flight on it. */
static void conn_reset(fb_client_t *c, int err)
{
    if (c->conn) fb_conn_abort(c->conn);
    c->conn = NULL;
    c->hs = HS_NONE;
    c->syncing = c->resync = false;
    c->sync_retry_at = 0;
    fail_all(c, list_take(&c->inflight), FB_EUNAVAIL, "connection lost");
    fail_all(c, list_take(&c->sync_waiters), FB_EUNAVAIL, "connection lost");
}

static void stop(fb_client_t *c, int err)
{
    FB_INFO("client", "%s: giving up: %s", cur_addr(c), fb_err_message(err));
    c->stop_err = err;
    conn_reset(c, err);
    if (c->closing) return;
    fail_all(c, list_take(&c->queue), err, fb_err_message(err));
    if (c->closing) return;
    outbox_fail_callbacks(c, err, fb_err_message(err));
    if (c->closing) return;
    set_state(c, FB_CLIENT_STOPPED, err);
}

static int backoff_ms(int failures)
{
    int d = FB_CLIENT_BACKOFF_MIN_MS;
    for (int i = 1; i < failures && d < FB_CLIENT_BACKOFF_MAX_MS; i++)
        d *= 2;
    d = FB_MIN(d, FB_CLIENT_BACKOFF_MAX_MS);
    /* jitter: spread clients of a dead node over [d/2, d] */
    return d / 2 + (int)randombytes_uniform((uint32_t)(d / 2 + 1));
}

static void on_retry_timer(uv_timer_t *t)
{
    fb_client_t *c = t->data;
    if (c->closing || c->state == FB_CLIENT_STOPPED) return;
    if (c->conn) {
        /* a write failed inside a call from the app: fail it from here */
        drop_and_retry(c, FB_EUNAVAIL);
        return;
    }
    attempt(c);
}

static void drop_and_retry(fb_client_t *c, int err)
{
    conn_reset(c, err);
    if (c->closing) return;
    c->failures++;
    set_state(c, FB_CLIENT_DISCONNECTED, err);
    if (c->closing || c->state == FB_CLIENT_STOPPED) return;
    c->addr_i = (c->addr_i + 1) % c->n_addrs;
    uv_timer_start(&c->retry_timer, on_retry_timer, (uint64_t)backoff_ms(c->failures), 0);
}

/* A write from inside an app call failed: the connection is failed from the
 * loop, not under the app's feet. */
static void conn_broken(fb_client_t *c)
{
    uv_timer_start(&c->retry_timer, on_retry_timer, 0, 0);
}

void fb_client__on_lost(fb_client_t *c, int err, int close_code)
{
    c->conn = NULL;
    if (close_code) FB_INFO("client", "%s closed the connection (%d)", cur_addr(c), close_code);
    if (close_code == 4001) {
        forget_token(c);
        stop(c, FB_EBADTOKEN);
    } else if (close_code == 4003) {
        stop(c, FB_EVERSION);
    } else {
        drop_and_retry(c, err);
    }
}

static void attempt(fb_client_t *c)
{
    int err;
    c->hs = HS_NONE;
    c->deadline_ms = now_ms(c) + c->connect_timeout_ms;
    c->last_rx_ms = c->last_ping_ms = now_ms(c); /* silence is counted from here */
    set_state(c, FB_CLIENT_CONNECTING, 0);
    if (c->closing || c->state != FB_CLIENT_CONNECTING) return;
    c->conn = fb_conn_start(c, cur_addr(c), &err);
    if (!c->conn) drop_and_retry(c, err);
}

/* ---- sending on the wire ---- */

static int wire_send(fb_client_t *c, fb_creq_t *r)
{
    r->id = ++c->next_id;
    json_object_set_new(r->req, "id", json_integer((json_int_t)r->id));
    size_t len = json_dumpb(r->req, NULL, 0, JSON_COMPACT);
    if (len > (size_t)c->max_frame_bytes) return FB_ETOOBIG;
    char *buf = fb_malloc(len);
    json_dumpb(r->req, buf, len, JSON_COMPACT);
    int err = fb_conn_send_text(c->conn, buf, len);
    fb_free(buf);
    if (err) conn_broken(c);
    return err ? FB_EUNAVAIL : 0;
}

static void internal_request(fb_client_t *c, json_t *req, fb_client_reply_cb cb)
{
    fb_creq_t *r = creq_new(req, cb, NULL);
    r->internal = true;
    if (wire_send(c, r)) {
        FB_WARN("client", "%s: could not send %s", cur_addr(c), r->op);
        creq_free(r);
        return;
    }
    list_push(&c->inflight, r);
}

static bool is_preauth(const char *op)
{
    return !strcmp(op, "register") || !strcmp(op, "login") || !strcmp(op, "auth") ||
           !strcmp(op, "ping");
}

static void pump_queue(fb_client_t *c)
{
    fb_creq_t *r = c->queue.head;
    while (r) {
        fb_creq_t *next = r->next;
        if (!conn_ready_for(c, r->preauth)) {
            r = next;
            continue;
        }
        int err = wire_send(c, r);
        if (err == FB_EUNAVAIL) return; /* stays queued for the next connection */
        list_remove(&c->queue, r);
        if (err) {
            if (r->cb)
                r->cb(c, err, "request larger than the server's max_frame_bytes", NULL, r->ud);
            creq_free(r);
        } else {
            list_push(&c->inflight, r);
        }
        r = next;
    }
}

/* ---- outbox ---- */

static void outbox_pump(fb_client_t *c)
{
    if (!conn_ready_for(c, false)) return;
    int64_t now = now_ms(c);
    fb_cout_t *o = c->st.out_head;
    while (o) {
        fb_cout_t *next = o->next;
        if (o->req_id) {
            o = next;
            continue;
        }
        if (o->retry_at > now) return; /* keep the order: nothing overtakes it */
        json_t *req = json_pack("{s:s,s:I,s:s,s:s}", "op", "send", "room", (json_int_t)o->room,
                                "cmid", o->cmid, "text", o->text);
        fb_creq_t *r = creq_new(req, NULL, NULL);
        r->out = o;
        int err = wire_send(c, r);
        if (err == FB_EUNAVAIL) {
            creq_free(r);
            return;
        }
        if (err) {
            fb_client_reply_cb cb = o->cb;
            void *ud = o->ud;
            creq_free(r);
            fb_cstate_outbox_remove(&c->st, o);
            save_state(c);
            if (cb) cb(c, err, "message larger than the server's max_frame_bytes", NULL, ud);
            if (c->closing) return;
        } else {
            o->req_id = r->id;
            list_push(&c->inflight, r);
        }
        o = next;
    }
}

static void send_done(fb_client_t *c, fb_cout_t *o, int err, bool retryable, const char *msg,
                      json_t *reply)
{
    o->req_id = 0;
    if (err && retryable) {
        o->retries++;
        o->retry_at = now_ms(c) + backoff_ms(o->retries);
        FB_DEBUG("client", "send %s: %s; retrying", o->cmid, msg);
        /* A node that cannot write (it lost its store: a failover it could
         * not wait out, a partition) is left for the next site. */
        if (err == FB_EUNAVAIL && c->n_addrs > 1 && c->conn) {
            FB_INFO("client", "%s cannot take writes now: trying the next site", cur_addr(c));
            uv_timer_start(&c->retry_timer, on_retry_timer, 0, 0);
        }
        return;
    }
    fb_client_reply_cb cb = o->cb;
    void *ud = o->ud;
    fb_cstate_outbox_remove(&c->st, o);
    c->dirty = true; /* a resend after a crash only earns a duplicate ack */
    if (cb) cb(c, err, msg, reply, ud);
}

static int submit_send(fb_client_t *c, json_t *req, fb_client_reply_cb cb, void *ud,
                       uint64_t *handle)
{
    int err = FB_EINVAL;
    char cmid_buf[FB_CLIENT_CMID_LEN + 1];
    int64_t room = jint(req, "room");
    const char *text = jstr(req, "text"), *cmid = jstr(req, "cmid");
    if (room <= 0 || !text || !*text) goto fail;
    if (strlen(text) > (size_t)c->max_text_bytes) {
        err = FB_ETOOBIG;
        goto fail;
    }
    if (!cmid) {
        fb_client_gen_cmid(cmid_buf);
        cmid = cmid_buf;
    }
    if (!fb_client_cmid_valid(cmid) || fb_cstate_outbox_find(&c->st, cmid)) goto fail;
    if (c->st.n_out >= FB_CLIENT_OUTBOX_MAX) {
        err = FB_EBUSY;
        goto fail;
    }
    fb_cout_t *o = fb_cstate_outbox_add(&c->st, room, cmid, text);
    /* persisted before it can reach the wire: a crash then resends it */
    if (c->state_path && fb_cstate_save(&c->st, c->state_path)) {
        fb_cstate_outbox_remove(&c->st, o);
        err = FB_EIO;
        goto fail;
    }
    o->cb = cb;
    o->ud = ud;
    o->handle = ++c->next_handle;
    if (handle) *handle = o->handle;
    json_decref(req);
    outbox_pump(c);
    return 0;
fail:
    json_decref(req);
    return err;
}

/* ---- sync ---- */

static void became_ready(fb_client_t *c)
{
    c->failures = 0;
    set_state(c, FB_CLIENT_READY, 0);
    if (c->closing || c->state != FB_CLIENT_READY) return;
    outbox_pump(c);
    if (c->closing) return;
    pump_queue(c);
}

static void sync_finish(fb_client_t *c, int err, const char *msg)
{
    c->syncing = false;
    if (c->dirty) save_state(c);
    fb_creq_list_t waiters = list_take(&c->sync_waiters);
    json_t *summary = json_pack("{s:I}", "events", (json_int_t)c->sync_events);
    c->sync_events = 0;
    for (fb_creq_t *r = waiters.head; r; r = r->next)
        if (r->cb) r->cb(c, err, msg, err ? NULL : summary, r->ud);
    json_decref(summary);
    free_all(waiters);
    if (!c->closing && c->state == FB_CLIENT_AUTHENTICATED) became_ready(c);
}

static void sync_apply_entry(fb_client_t *c, json_t *entry)
{
    int64_t room = jint(entry, "room");
    if (room <= 0) return;
    const fb_croom_t *before = fb_cstate_room_c(&c->st, room);
    fb_client_room_status_t old_status = before ? before->r.status : FB_ROOM_UNKNOWN;
    size_t old_members = before ? before->r.n_members : 0;
    fb_cstate_apply_room_meta(&c->st, entry);
    const fb_croom_t *cr = fb_cstate_room_c(&c->st, room);
    json_t *events = json_object_get(entry, "events");
    bool changed = !before || cr->r.status != old_status || cr->r.n_members != old_members ||
                   json_array_size(events) > 0;
    if (changed) {
        json_t *ev = json_copy(entry);
        json_object_del(ev, "events");
        json_object_set_new(ev, "event", json_string("room"));
        deliver(c, ev);
        json_decref(ev);
    }
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        if (c->closing) return;
        if (!json_is_object(e)) continue;
        if (!json_object_get(e, "room")) json_object_set_new(e, "room", json_integer(room));
        if (!fb_cstate_apply_event(&c->st, e)) continue;
        c->dirty = true;
        c->sync_events++;
        json_object_set_new(e, "event", json_string("msg"));
        deliver(c, e);
    }
}

static void on_sync_reply(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    if (err) {
        if (fb_err_retryable(err)) {
            c->sync_retry_at = now_ms(c) + 500;
            return;
        }
        FB_WARN("client", "sync refused: %s", msg);
        sync_finish(c, err, msg);
        return;
    }
    size_t i;
    json_t *entry;
    json_array_foreach(json_object_get(reply, "rooms"), i, entry)
    {
        if (c->closing) return;
        sync_apply_entry(c, entry);
    }
    if (c->closing || !c->conn) return;
    if (json_is_true(json_object_get(reply, "more")) || c->resync) {
        c->resync = false;
        sync_send(c);
    } else {
        sync_finish(c, 0, NULL);
    }
}

static void sync_send(fb_client_t *c)
{
    json_t *req = json_pack("{s:s,s:o}", "op", "sync", "cursors", fb_cstate_cursors(&c->st));
    internal_request(c, req, on_sync_reply);
}

/* One sync at a time; a gap seen meanwhile asks for another pass. */
static void sync_start(fb_client_t *c)
{
    if (c->raw_events) return;
    if (c->syncing) {
        c->resync = true;
        return;
    }
    if (!c->conn || c->hs != HS_DONE ||
        (c->state != FB_CLIENT_AUTHENTICATED && c->state != FB_CLIENT_READY))
        return; /* the next connection syncs anyway */
    c->syncing = true;
    c->resync = false;
    sync_send(c);
}

/* ---- handshake ---- */

static void became_authenticated(fb_client_t *c)
{
    c->hs = HS_DONE;
    set_state(c, FB_CLIENT_AUTHENTICATED, 0);
    if (c->closing || c->state != FB_CLIENT_AUTHENTICATED) return;
    pump_queue(c); /* register/login/ping from the app need not wait for the sync */
    if (c->closing) return;
    if (c->raw_events || c->no_sync)
        became_ready(c);
    else
        sync_start(c);
}

static void take_identity(fb_client_t *c, json_t *reply)
{
    json_t *user = json_object_get(reply, "user"), *dev = json_object_get(reply, "device");
    if (jint(user, "id")) c->st.user_id = jint(user, "id");
    if (jstr(user, "name")) fb_cstate_set_str(&c->st.user, jstr(user, "name"));
    if (jint(dev, "id")) c->st.device_id = jint(dev, "id");
    if (jstr(dev, "name")) fb_cstate_set_str(&c->st.device, jstr(dev, "name"));
    if (jstr(reply, "token")) fb_cstate_set_str(&c->st.token, jstr(reply, "token"));
    save_state(c);
}

static void on_login_reply(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    if (!err) {
        take_identity(c, reply);
        became_authenticated(c);
    } else if (fb_err_retryable(err)) {
        drop_and_retry(c, err);
    } else {
        stop(c, err);
    }
}

static void send_login(fb_client_t *c)
{
    json_t *req = json_pack("{s:s,s:s,s:s,s:s}", "op", "login", "user", c->st.user, "password",
                            c->password, "device", c->device_name);
    c->hs = HS_LOGIN_SENT;
    internal_request(c, req, on_login_reply);
}

static void on_hello_reply(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    if (!err) {
        if (c->st.token) {
            take_identity(c, reply);
            became_authenticated(c);
        } else if (c->password && c->st.user) {
            send_login(c);
        } else {
            c->hs = HS_DONE;
            set_state(c, FB_CLIENT_CONNECTED, 0);
            if (!c->closing && c->state == FB_CLIENT_CONNECTED) pump_queue(c);
        }
        return;
    }
    if (c->st.token && (err == FB_EBADTOKEN || err == FB_EEXPIRED)) {
        FB_INFO("client", "token refused (%s)", fb_err_code(err));
        forget_token(c);
        if (!c->password || !c->st.user) {
            stop(c, err);
            return;
        }
        /* A fresh connection, so the login does not depend on how the server
         * treats a hello whose token it refused. Same node, no delay. */
        conn_reset(c, err);
        if (!c->closing) attempt(c);
        return;
    }
    if (fb_err_retryable(err))
        drop_and_retry(c, err);
    else
        stop(c, err);
}

static void on_server_hello(fb_client_t *c, json_t *ev)
{
    if (c->hs != HS_WAIT_SERVER_HELLO) return;
    if (jint(ev, "protocol") != FB_PROTOCOL_VERSION) {
        stop(c, FB_EVERSION);
        return;
    }
    if (jint(ev, "max_frame_bytes") > 0) c->max_frame_bytes = (int)jint(ev, "max_frame_bytes");
    if (jint(ev, "max_text_bytes") > 0) c->max_text_bytes = (int)jint(ev, "max_text_bytes");
    json_t *req = json_pack("{s:s,s:i}", "op", "hello", "protocol", FB_PROTOCOL_VERSION);
    if (c->st.token) json_object_set_new(req, "token", json_string(c->st.token));
    c->hs = HS_HELLO_SENT;
    internal_request(c, req, on_hello_reply);
}

void fb_client__on_open(fb_client_t *c)
{
    c->ever_connected = true;
    c->hs = HS_WAIT_SERVER_HELLO;
    c->last_rx_ms = c->last_ping_ms = now_ms(c);
}

/* ---- incoming frames ---- */

static void on_msg_event(fb_client_t *c, json_t *ev)
{
    if (c->raw_events) {
        deliver(c, ev);
        return;
    }
    int64_t room = jint(ev, "room"), seq = jint(ev, "seq");
    if (room <= 0 || seq <= 0) return;
    switch (fb_cstate_push_verdict(&c->st, room, seq)) {
    case FB_CSTATE_APPLY:
        fb_cstate_apply_event(&c->st, ev);
        c->dirty = true;
        deliver(c, ev);
        break;
    case FB_CSTATE_DUP:
        break;
    default:
        FB_DEBUG("client", "room %lld: gap before seq %lld; syncing", (long long)room,
                 (long long)seq);
        sync_start(c);
    }
}

static void handle_event(fb_client_t *c, json_t *ev)
{
    const char *name = jstr(ev, "event");
    if (!name) return;
    if (!strcmp(name, "hello")) {
        on_server_hello(c, ev);
    } else if (!strcmp(name, "msg")) {
        on_msg_event(c, ev);
    } else if (!strcmp(name, "read")) {
        if (!c->raw_events)
            fb_cstate_apply_read(&c->st, jint(ev, "room"),
                                 fb_client_json_user_id(json_object_get(ev, "user")),
                                 jint(ev, "seq"));
        deliver(c, ev);
    } else if (!strcmp(name, "logged_out")) {
        forget_token(c);
        deliver(c, ev);
    } else {
        deliver(c, ev);
    }
}

/* What the library learns from the app's own requests. */
static void reply_side_effects(fb_client_t *c, fb_creq_t *r, json_t *reply)
{
    const char *op = r->op;
    if (!strcmp(op, "login") || !strcmp(op, "register") || !strcmp(op, "auth")) {
        if (!strcmp(op, "auth")) fb_cstate_set_str(&c->st.token, jstr(r->req, "token"));
        take_identity(c, reply);
        if (c->state == FB_CLIENT_CONNECTED) became_authenticated(c);
    } else if (!strcmp(op, "logout")) {
        int64_t dev = jint(r->req, "device");
        if (!dev || dev == c->st.device_id) forget_token(c);
    } else if (!strcmp(op, "room")) {
        json_t *summary = json_object_get(reply, "room");
        fb_cstate_apply_summary(&c->st, summary);
        fb_cstate_set_members(&c->st, jint(summary, "room"), json_object_get(reply, "members"));
    } else if (!strcmp(op, "direct") || !strcmp(op, "create_group")) {
        fb_cstate_apply_summary(&c->st, json_object_get(reply, "room"));
    } else if (!strcmp(op, "read")) {
        fb_cstate_apply_read(&c->st, jint(reply, "room"), c->st.user_id, jint(reply, "read_seq"));
    }
}

static fb_creq_t *inflight_find(fb_client_t *c, uint64_t id)
{
    /* replies mostly come in order: the oldest is the likeliest */
    for (fb_creq_t *r = c->inflight.head; r; r = r->next)
        if (r->id == id) return r;
    return NULL;
}

static void handle_reply(fb_client_t *c, json_t *reply)
{
    json_t *jid = json_object_get(reply, "id");
    if (!json_is_integer(jid)) {
        json_t *e = json_object_get(reply, "error");
        FB_WARN("client", "%s: reply without a usable id: %s", cur_addr(c),
                jstr(e, "message") ? jstr(e, "message") : "?");
        return;
    }
    fb_creq_t *r = inflight_find(c, (uint64_t)json_integer_value(jid));
    if (!r) return;
    list_remove(&c->inflight, r);
    int err = 0;
    bool retryable = false;
    const char *msg = NULL;
    if (!json_is_true(json_object_get(reply, "ok"))) {
        json_t *e = json_object_get(reply, "error");
        const char *code = jstr(e, "code");
        err = code ? fb_err_from_code(code) : FB_EINTERNAL;
        json_t *jr = json_object_get(e, "retryable");
        retryable = json_is_boolean(jr) ? json_is_true(jr) : fb_err_retryable(err);
        msg = jstr(e, "message") ? jstr(e, "message") : fb_err_message(err);
    }
    if (r->out) {
        send_done(c, r->out, err, retryable, msg, reply);
    } else {
        if (!err && !r->internal) reply_side_effects(c, r, reply);
        if (r->cb && !c->closing) r->cb(c, err, msg, reply, r->ud);
    }
    creq_free(r);
}

void fb_client__on_text(fb_client_t *c, const char *data, size_t len)
{
    json_error_t jerr;
    json_t *j = json_loadb(data, len, 0, &jerr);
    if (!json_is_object(j)) {
        FB_WARN("client", "%s: unparsable frame: %s", cur_addr(c), jerr.text);
        json_decref(j);
        return;
    }
    if (json_object_get(j, "event"))
        handle_event(c, j);
    else
        handle_reply(c, j);
    json_decref(j);
}

/* ---- tick: timeouts, keepalive, deferred work ---- */

static void on_tick(uv_timer_t *t)
{
    fb_client_t *c = t->data;
    int64_t now = now_ms(c);
    if (c->conn && c->hs != HS_DONE && now > c->deadline_ms) {
        FB_INFO("client", "%s: handshake timed out", cur_addr(c));
        drop_and_retry(c, FB_EUNAVAIL);
        return;
    }
    /* Keepalive only watches an established connection; the handshake
     * has its own deadline above. */
    if (c->conn && c->hs == HS_DONE && c->keepalive_ms > 0) {
        int64_t idle = now - c->last_rx_ms;
        if (idle > 2 * (int64_t)c->keepalive_ms) {
            FB_INFO("client", "%s: silent for %lld ms", cur_addr(c), (long long)idle);
            drop_and_retry(c, FB_EUNAVAIL);
            return;
        }
        if (idle > c->keepalive_ms && now - c->last_ping_ms > c->keepalive_ms / 2) {
            c->last_ping_ms = now;
            if (fb_conn_ping(c->conn)) conn_broken(c);
        }
    }
    if (c->syncing && c->sync_retry_at && now >= c->sync_retry_at && c->conn) {
        c->sync_retry_at = 0;
        sync_send(c);
    }
    if (c->st.out_head) outbox_pump(c);
    if (c->dirty) save_state(c);
}

/* ---- lifetime ---- */

/* Writing to a socket the peer closed raises SIGPIPE, which kills a process
 * by default; libuv reports EPIPE instead once it is ignored. An app that
 * installed its own handler keeps it. */
static void ignore_sigpipe(void)
{
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
    }
}

int fb_client_new(uv_loop_t *loop, const fb_client_opts_t *opts, fb_client_t **out)
{
    int err;
    ignore_sigpipe();
    fb_client_t *c = fb_calloc(1, sizeof *c);
    c->loop = loop;
    fb_cstate_init(&c->st);
    err = fb_client_addrs_parse(opts->servers ? opts->servers : DEFAULT_SERVERS, &c->addrs,
                                &c->n_addrs);
    if (err) goto fail;
    if (opts->state_path) {
        c->state_path = fb_strdup(opts->state_path);
        err = fb_cstate_load(&c->st, c->state_path);
        if (err == FB_ENOTFOUND) err = 0;
        if (err) goto fail;
    }
    if (opts->user) {
        if (c->st.user && strcmp(c->st.user, opts->user) != 0) {
            FB_WARN("client", "state file %s belongs to user %s", opts->state_path, c->st.user);
            err = FB_EINVAL;
            goto fail;
        }
        fb_cstate_set_str(&c->st.user, opts->user);
    }
    if (opts->ignore_token) fb_cstate_set_str(&c->st.token, NULL);
    if (opts->token) fb_cstate_set_str(&c->st.token, opts->token);
    if (opts->password) c->password = fb_strdup(opts->password);
    c->device_name = fb_strdup(opts->device   ? opts->device
                               : c->st.device ? c->st.device
                                              : "device");
    c->on_event = opts->on_event;
    c->on_state = opts->on_state;
    c->ud = opts->ud;
    c->queue_events = opts->queue_events;
    c->raw_events = opts->raw_events;
    c->no_sync = opts->no_sync;
    c->connect_timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 5000;
    c->keepalive_ms = opts->keepalive_ms == 0 ? 15000 : opts->keepalive_ms;
    c->max_frame_bytes = 65536;
    c->max_text_bytes = 8192;
    c->state = FB_CLIENT_IDLE;
    uv_timer_t *timers[] = {&c->retry_timer, &c->tick, &c->wait_timer};
    for (size_t i = 0; i < FB_ARRAY_LEN(timers); i++) {
        uv_timer_init(loop, timers[i]);
        timers[i]->data = c;
        c->open_handles++;
    }
    *out = c;
    return 0;
fail:
    fb_client_addrs_free(c->addrs, c->n_addrs);
    fb_cstate_free(&c->st);
    fb_free(c->state_path);
    fb_free(c);
    *out = NULL;
    return err;
}

int fb_client_start(fb_client_t *c)
{
    if (c->closing) return FB_ESTATE;
    if (c->state != FB_CLIENT_IDLE) return 0;
    uv_timer_start(&c->tick, on_tick, TICK_MS, TICK_MS);
    attempt(c);
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    fb_client_t *c = h->data;
    if (--c->open_handles == 0 && c->close_cb) c->close_cb(c, c->ud);
}

void fb_client_close(fb_client_t *c, fb_client_close_cb cb)
{
    if (c->closing) return;
    c->closing = true;
    c->close_cb = cb;
    if (c->conn) fb_conn_abort(c->conn);
    c->conn = NULL;
    c->state = FB_CLIENT_CLOSED;
    save_state(c);
    fail_all(c, list_take(&c->inflight), FB_EUNAVAIL, "client closed");
    fail_all(c, list_take(&c->queue), FB_EUNAVAIL, "client closed");
    fail_all(c, list_take(&c->sync_waiters), FB_EUNAVAIL, "client closed");
    outbox_fail_callbacks(c, FB_EUNAVAIL, "client closed; the message stays in the outbox");
    uv_close((uv_handle_t *)&c->retry_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tick, on_handle_closed);
    uv_close((uv_handle_t *)&c->wait_timer, on_handle_closed);
}

void fb_client_free(fb_client_t *c)
{
    if (!c) return;
    if (c->open_handles) {
        FB_ERROR("client", "fb_client_free before its close callback: leaking it");
        return;
    }
    for (size_t i = 0; i < c->evq_n; i++)
        json_decref(c->evq[(c->evq_head + i) % c->evq_cap]);
    fb_free(c->evq);
    fb_client_addrs_free(c->addrs, c->n_addrs);
    fb_cstate_free(&c->st);
    if (c->password) sodium_memzero(c->password, strlen(c->password));
    fb_free(c->password);
    fb_free(c->device_name);
    fb_free(c->state_path);
    fb_free(c);
}

/* ---- requests ---- */

int fb_client__submit(fb_client_t *c, json_t *req, fb_client_reply_cb cb, void *ud,
                      uint64_t *handle)
{
    if (!json_is_object(req) || !jstr(req, "op")) {
        json_decref(req);
        return FB_EINVAL;
    }
    if (c->closing || c->state == FB_CLIENT_STOPPED) {
        json_decref(req);
        return FB_ESTATE;
    }
    if (!strcmp(jstr(req, "op"), "send")) return submit_send(c, req, cb, ud, handle);
    if (c->queue.n + c->inflight.n + c->sync_waiters.n >= FB_CLIENT_PENDING_MAX) {
        json_decref(req);
        return FB_EBUSY;
    }
    fb_creq_t *r = creq_new(req, cb, ud);
    r->preauth = is_preauth(r->op);
    r->handle = ++c->next_handle;
    if (handle) *handle = r->handle;
    list_push(&c->queue, r);
    pump_queue(c);
    return 0;
}

int fb_client_request(fb_client_t *c, json_t *req, fb_client_reply_cb cb, void *ud)
{
    return fb_client__submit(c, req, cb, ud, NULL);
}

int fb_client_request_h(fb_client_t *c, json_t *req, fb_client_reply_cb cb, void *ud,
                        uint64_t *handle)
{
    return fb_client__submit(c, req, cb, ud, handle);
}

void fb_client_cancel(fb_client_t *c, uint64_t handle)
{
    fb_creq_list_t *lists[] = {&c->queue, &c->inflight, &c->sync_waiters};
    for (size_t i = 0; i < FB_ARRAY_LEN(lists); i++)
        for (fb_creq_t *r = lists[i]->head; r; r = r->next)
            if (r->handle == handle) r->cb = NULL;
    for (fb_cout_t *o = c->st.out_head; o; o = o->next)
        if (o->handle == handle) o->cb = NULL;
}

int fb_client_sync(fb_client_t *c, fb_client_reply_cb cb, void *ud)
{
    if (c->closing || c->state == FB_CLIENT_STOPPED || c->raw_events) return FB_ESTATE;
    fb_creq_t *r = creq_new(json_object(), cb, ud);
    r->handle = ++c->next_handle;
    list_push(&c->sync_waiters, r);
    sync_start(c);
    return 0;
}

bool fb_client__has_credentials(const fb_client_t *c)
{
    return c->st.token || (c->st.user && c->password);
}

/* ---- what the client knows ---- */

fb_client_state_t fb_client_state(const fb_client_t *c)
{
    return c->state;
}

const char *fb_client_state_name(fb_client_state_t s)
{
    static const char *names[] = {"idle",  "connecting",   "connected", "authenticated",
                                  "ready", "disconnected", "stopped",   "closed"};
    return (unsigned)s < FB_ARRAY_LEN(names) ? names[s] : "?";
}

const char *fb_client_addr(const fb_client_t *c)
{
    return cur_addr(c);
}

int fb_client_site(const fb_client_t *c)
{
    return (int)c->addr_i + 1;
}

int fb_client_site_count(const fb_client_t *c)
{
    return (int)c->n_addrs;
}

int fb_client_stop_reason(const fb_client_t *c)
{
    return c->stop_err;
}

bool fb_client_ever_connected(const fb_client_t *c)
{
    return c->ever_connected;
}

uv_loop_t *fb_client_loop(const fb_client_t *c)
{
    return c->loop;
}

void *fb_client_userdata(const fb_client_t *c)
{
    return c->ud;
}

int64_t fb_client_user_id(const fb_client_t *c)
{
    return c->st.user_id;
}

const char *fb_client_user(const fb_client_t *c)
{
    return c->st.user;
}

int64_t fb_client_device_id(const fb_client_t *c)
{
    return c->st.device_id;
}

const char *fb_client_token(const fb_client_t *c)
{
    return c->st.token;
}

int fb_client_max_text_bytes(const fb_client_t *c)
{
    return c->max_text_bytes;
}

size_t fb_client_room_count(const fb_client_t *c)
{
    return c->st.n_rooms;
}

const fb_client_room_t *fb_client_room_at(const fb_client_t *c, size_t i)
{
    return i < c->st.n_rooms ? &c->st.rooms[i].r : NULL;
}

const fb_client_room_t *fb_client_room_get(const fb_client_t *c, int64_t room)
{
    const fb_croom_t *cr = fb_cstate_room_c(&c->st, room);
    return cr ? &cr->r : NULL;
}

int64_t fb_client_cursor(const fb_client_t *c, int64_t room)
{
    return fb_cstate_cursor(&c->st, room);
}

int fb_client_unread_for(const fb_client_t *c, int64_t room, int64_t seq, int64_t sender)
{
    return fb_cstate_unread_for(&c->st, room, seq, sender);
}

size_t fb_client_outbox_count(const fb_client_t *c)
{
    return c->st.n_out;
}

int fb_client_outbox_get(const fb_client_t *c, size_t i, int64_t *room, const char **cmid,
                         const char **text)
{
    const fb_cout_t *o = c->st.out_head;
    while (o && i--)
        o = o->next;
    if (!o) return FB_ENOTFOUND;
    if (room) *room = o->room;
    if (cmid) *cmid = o->cmid;
    if (text) *text = o->text;
    return 0;
}

void fb_client_gen_cmid(char out[FB_CLIENT_CMID_LEN + 1])
{
    uint8_t raw[FB_CLIENT_CMID_LEN / 2];
    randombytes_buf(raw, sizeof raw);
    fb_hex_encode(raw, sizeof raw, out);
}

const char *fb_client_strerror(int err)
{
    if (err == FB_CLIENT_ETIMEDOUT) return "timed out";
    return fb_err_message(err);
}
