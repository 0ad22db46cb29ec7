/* Network tests of the client library against a scripted in-process mock node
 * (libuv + wslay server side) that speaks just enough of protocol.md: login,
 * token hello, send with cmid dedupe, pushes, sync with paging, read. The mock
 * can drop connections, swallow acks, hide pushes and close with a code, so
 * failover, resend, gap sync and stop reasons are exercised without the real
 * server. It checks the client, never the protocol's server side.
 * SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "client/client.h"

/* ---- the mock node ---- */

typedef struct mock mock_t;

typedef struct mconn {
    uv_tcp_t tcp;
    mock_t *m;
    struct mconn *next;
    wslay_event_context_ptr ws;
    fb_buf_t in;
    const uint8_t *rd;
    size_t rd_len;
    fb_buf_t out;
    bool upgraded, dead, helloed;
    int64_t user; /* 0 until authenticated */
} mconn_t;

struct mock {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    mconn_t *conns;
    json_t *events; /* room 1, seq = index + 1 */
    json_t *cmids;  /* cmid -> seq */
    int64_t read_seq[2];
    int sync_limit;
    int swallow_sends; /* store, then drop the connection instead of acking */
    int hide_pushes;   /* store without pushing */
    int fail_sends;    /* answer `unavailable`, store nothing */
    int n_conns, n_sends, n_syncs, n_logins;
};

static const char *user_names[] = {"alice", "bob"};

static int64_t user_id(const char *name)
{
    for (int i = 0; i < 2; i++)
        if (!strcmp(name, user_names[i])) return 5 + i;
    return 0;
}

static void mc_closed(uv_handle_t *h)
{
    mconn_t *mc = h->data;
    if (mc->ws) wslay_event_context_free(mc->ws);
    fb_buf_free(&mc->in);
    fb_buf_free(&mc->out);
    fb_free(mc);
}

static void mc_kill(mconn_t *mc)
{
    if (mc->dead) return;
    mc->dead = true;
    mock_t *m = mc->m;
    for (mconn_t **p = &m->conns; *p; p = &(*p)->next)
        if (*p == mc) {
            *p = mc->next;
            break;
        }
    uv_close((uv_handle_t *)&mc->tcp, mc_closed);
}

typedef struct {
    uv_write_t req;
    char *data;
} mw_t;

static void mc_written(uv_write_t *req, int status)
{
    mw_t *w = (mw_t *)req;
    fb_free(w->data);
    fb_free(w);
}

static void mc_write_out(mconn_t *mc)
{
    if (!mc->out.len || mc->dead) return;
    mw_t *w = fb_malloc(sizeof *w);
    w->data = mc->out.data;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)mc->out.len);
    mc->out = (fb_buf_t){0};
    uv_write(&w->req, (uv_stream_t *)&mc->tcp, &b, 1, mc_written);
}

static void mc_flush(mconn_t *mc)
{
    if (mc->dead || !mc->ws) return;
    wslay_event_send(mc->ws);
    mc_write_out(mc);
}

static void mc_send(mconn_t *mc, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    struct wslay_event_msg msg = {WSLAY_TEXT_FRAME, (const uint8_t *)s, strlen(s)};
    wslay_event_queue_msg(mc->ws, &msg);
    void (*jfree)(void *);
    json_get_alloc_funcs(NULL, &jfree);
    jfree(s);
    json_decref(j);
    mc_flush(mc);
}

static void push_all(mock_t *m, json_t *ev)
{
    for (mconn_t *mc = m->conns; mc; mc = mc->next)
        if (mc->user) mc_send(mc, json_incref(ev));
    json_decref(ev);
}

/* Closes every client connection with a WebSocket close code (0: abruptly). */
static void mock_drop_all(mock_t *m, int code)
{
    while (m->conns) {
        mconn_t *mc = m->conns;
        if (code) {
            wslay_event_queue_close(mc->ws, (uint16_t)code, NULL, 0);
            mc_flush(mc);
        }
        mc_kill(mc);
    }
}

static json_t *reply_ok(json_t *req)
{
    return json_pack("{s:O,s:b}", "id", json_object_get(req, "id"), "ok", 1);
}

static json_t *reply_err(json_t *req, const char *code, bool retry)
{
    return json_pack("{s:O,s:b,s:{s:s,s:s,s:b}}", "id", json_object_get(req, "id"), "ok", 0,
                     "error", "code", code, "message", code, "retryable", retry);
}

static json_t *identity(json_t *r, int64_t uid)
{
    json_object_set_new(r, "user",
                        json_pack("{s:I,s:s}", "id", (json_int_t)uid, "name", user_names[uid - 5]));
    json_object_set_new(r, "device", json_pack("{s:i,s:s}", "id", 9, "name", "dev"));
    return r;
}

static json_t *members(mock_t *m)
{
    return json_pack("[{s:i,s:s,s:s,s:i,s:I},{s:i,s:s,s:s,s:i,s:I}]", "id", 5, "name", "alice",
                     "role", "owner", "joined_seq", 1, "read_seq", (json_int_t)m->read_seq[0], "id",
                     6, "name", "bob", "role", "member", "joined_seq", 1, "read_seq",
                     (json_int_t)m->read_seq[1]);
}

static int64_t append_event(mock_t *m, int64_t from, const char *cmid, const char *text)
{
    int64_t seq = (int64_t)json_array_size(m->events) + 1;
    json_array_append_new(m->events,
                          json_pack("{s:i,s:I,s:i,s:s,s:{s:I,s:s},s:i,s:s,s:s,s:i}", "room", 1,
                                    "seq", (json_int_t)seq, "ts", 1000, "type", "text", "from",
                                    "id", (json_int_t)from, "name", user_names[from - 5], "device",
                                    9, "cmid", cmid, "text", text, "unread", 1));
    m->read_seq[from - 5] = seq;
    return seq;
}

static void op_sync(mock_t *m, mconn_t *mc, json_t *req)
{
    m->n_syncs++;
    int64_t cur = json_integer_value(json_object_get(json_object_get(req, "cursors"), "1"));
    json_t *evs = json_array();
    int64_t n = (int64_t)json_array_size(m->events);
    for (int64_t s = cur + 1; s <= n && (int64_t)json_array_size(evs) < m->sync_limit; s++)
        json_array_append(evs, json_array_get(m->events, (size_t)(s - 1)));
    bool more = cur + (int64_t)json_array_size(evs) < n;
    json_t *room = json_pack("{s:i,s:s,s:s,s:s,s:i,s:I,s:o,s:o,s:b}", "room", 1, "status", "member",
                             "kind", "group", "name", "Club", "owner", 5, "last_seq", (json_int_t)n,
                             "members", members(m), "events", evs, "more", more);
    json_t *r = reply_ok(req);
    json_object_set_new(r, "rooms", json_pack("[o]", room));
    json_object_set_new(r, "more", json_boolean(more));
    mc_send(mc, r);
}

static void op_send(mock_t *m, mconn_t *mc, json_t *req)
{
    m->n_sends++;
    if (m->fail_sends > 0) {
        m->fail_sends--;
        mc_send(mc, reply_err(req, "unavailable", true));
        return;
    }
    const char *cmid = json_string_value(json_object_get(req, "cmid"));
    json_t *known = json_object_get(m->cmids, cmid);
    int64_t seq;
    bool dup = known != NULL;
    if (dup) {
        seq = json_integer_value(known);
    } else {
        seq = append_event(m, mc->user, cmid, json_string_value(json_object_get(req, "text")));
        json_object_set_new(m->cmids, cmid, json_integer(seq));
    }
    if (m->swallow_sends > 0) {
        m->swallow_sends--;
        mc_kill(mc);
        return;
    }
    json_t *r = reply_ok(req);
    json_object_set_new(r, "room", json_integer(1));
    json_object_set_new(r, "seq", json_integer(seq));
    json_object_set_new(r, "ts", json_integer(1000));
    json_object_set_new(r, "duplicate", json_boolean(dup));
    mc_send(mc, r);
    if (dup) return;
    if (m->hide_pushes > 0) {
        m->hide_pushes--;
        return;
    }
    json_t *ev = json_deep_copy(json_array_get(m->events, (size_t)(seq - 1)));
    json_object_set_new(ev, "event", json_string("msg"));
    push_all(m, ev);
}

static void mc_request(mock_t *m, mconn_t *mc, json_t *req)
{
    const char *op = json_string_value(json_object_get(req, "op"));
    if (!op) return;
    if (!strcmp(op, "hello")) {
        mc->helloed = true;
        const char *tok = json_string_value(json_object_get(req, "token"));
        if (!tok) {
            json_t *r = reply_ok(req);
            json_object_set_new(r, "protocol", json_integer(1));
            mc_send(mc, r);
        } else if (!strncmp(tok, "tok-", 4) && user_id(tok + 4)) {
            mc->user = user_id(tok + 4);
            mc_send(mc, identity(reply_ok(req), mc->user));
        } else {
            mc_send(mc, reply_err(req, "bad_token", false));
        }
    } else if (!strcmp(op, "login")) {
        m->n_logins++;
        const char *u = json_string_value(json_object_get(req, "user"));
        const char *pw = json_string_value(json_object_get(req, "password"));
        if (!u || !user_id(u) || !pw || strcmp(pw, "password1")) {
            mc_send(mc, reply_err(req, "bad_credentials", false));
            return;
        }
        mc->user = user_id(u);
        json_t *r = identity(reply_ok(req), mc->user);
        char tok[40];
        snprintf(tok, sizeof tok, "tok-%s", u);
        json_object_set_new(r, "token", json_string(tok));
        mc_send(mc, r);
    } else if (!mc->user) {
        mc_send(mc, reply_err(req, "unauthenticated", false));
    } else if (!strcmp(op, "sync")) {
        op_sync(m, mc, req);
    } else if (!strcmp(op, "send")) {
        op_send(m, mc, req);
    } else if (!strcmp(op, "read")) {
        int64_t seq = json_integer_value(json_object_get(req, "seq"));
        m->read_seq[mc->user - 5] = FB_MAX(m->read_seq[mc->user - 5], seq);
        json_t *r = reply_ok(req);
        json_object_set_new(r, "room", json_integer(1));
        json_object_set_new(r, "read_seq", json_integer(m->read_seq[mc->user - 5]));
        mc_send(mc, r);
        /* the user as an object, as the real node sends it */
        push_all(m, json_pack("{s:s,s:i,s:{s:I,s:s},s:I}", "event", "read", "room", 1, "user", "id",
                              (json_int_t)mc->user, "name", user_names[mc->user - 5], "seq",
                              (json_int_t)seq));
    } else if (!strcmp(op, "room")) {
        json_t *r = reply_ok(req);
        json_object_set_new(r, "room",
                            json_pack("{s:i,s:s,s:s}", "room", 1, "kind", "group", "name", "Club"));
        json_object_set_new(r, "members", members(m));
        mc_send(mc, r);
    } else if (!strcmp(op, "ping")) {
        json_t *r = reply_ok(req);
        json_object_set_new(r, "ts", json_integer(1000));
        mc_send(mc, r);
    } else {
        mc_send(mc, reply_err(req, "unknown_op", false));
    }
}

static ssize_t ms_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    mconn_t *mc = ud;
    if (!mc->rd_len) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = FB_MIN(len, mc->rd_len);
    memcpy(buf, mc->rd, n);
    mc->rd += n;
    mc->rd_len -= n;
    return (ssize_t)n;
}

static ssize_t ms_send(wslay_event_context_ptr ctx, const uint8_t *d, size_t len, int flags,
                       void *ud)
{
    fb_buf_append(&((mconn_t *)ud)->out, d, len);
    return (ssize_t)len;
}

static void ms_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *ud)
{
    mconn_t *mc = ud;
    if (mc->dead || arg->opcode != WSLAY_TEXT_FRAME) return;
    json_t *req = json_loadb((const char *)arg->msg, arg->msg_length, 0, NULL);
    if (req) mc_request(mc->m, mc, req);
    json_decref(req);
}

static const struct wslay_event_callbacks ms_callbacks = {ms_recv, ms_send, NULL,  NULL,
                                                          NULL,    NULL,    ms_msg};

static void mc_upgrade(mconn_t *mc)
{
    char *end = memmem(mc->in.data, mc->in.len, "\r\n\r\n", 4);
    if (!end) return;
    char *k = memmem(mc->in.data, mc->in.len, "Sec-WebSocket-Key: ", 19);
    assert_non_null(k);
    char key[64] = {0}, cat[128], acc[64];
    memcpy(key, k + 19, 24);
    snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    uint8_t dg[20];
    SHA1((uint8_t *)cat, strlen(cat), dg);
    EVP_EncodeBlock((uint8_t *)acc, dg, 20);
    fb_buf_appendf(&mc->out,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                   acc);
    mc->upgraded = true;
    wslay_event_context_server_init(&mc->ws, &ms_callbacks, mc);
    mc_send(mc, json_pack("{s:s,s:i,s:s,s:i,s:i}", "event", "hello", "protocol", 1, "server",
                          "mock", "max_frame_bytes", 65536, "max_text_bytes", 8192));
    fb_buf_consume(&mc->in, (size_t)(end + 4 - mc->in.data));
}

static void mc_alloc(uv_handle_t *h, size_t n, uv_buf_t *b)
{
    b->base = fb_malloc(n);
    b->len = n;
}

static void mc_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    mconn_t *mc = s->data;
    if (n < 0) mc_kill(mc);
    if (n > 0 && !mc->dead) {
        fb_buf_append(&mc->in, b->base, (size_t)n);
        if (!mc->upgraded) mc_upgrade(mc);
        if (mc->upgraded && mc->in.len) {
            fb_buf_t in = mc->in;
            mc->in = (fb_buf_t){0};
            mc->rd = (const uint8_t *)in.data;
            mc->rd_len = in.len;
            wslay_event_recv(mc->ws);
            fb_buf_free(&in);
            mc_flush(mc);
        }
    }
    fb_free(b->base);
}

static void on_mock_conn(uv_stream_t *l, int status)
{
    mock_t *m = l->data;
    mconn_t *mc = fb_calloc(1, sizeof *mc);
    mc->m = m;
    uv_tcp_init(m->loop, &mc->tcp);
    mc->tcp.data = mc;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&mc->tcp), 0);
    mc->next = m->conns;
    m->conns = mc;
    m->n_conns++;
    uv_read_start((uv_stream_t *)&mc->tcp, mc_alloc, mc_read);
}

static mock_t *mock_start(uv_loop_t *loop)
{
    mock_t *m = fb_calloc(1, sizeof *m);
    m->loop = loop;
    m->events = json_array();
    m->cmids = json_object();
    m->sync_limit = 200;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(loop, &m->listener);
    m->listener.data = m;
    assert_int_equal(uv_tcp_bind(&m->listener, (struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&m->listener, 64, on_mock_conn), 0);
    int len = sizeof sa;
    uv_tcp_getsockname(&m->listener, (struct sockaddr *)&sa, &len);
    m->port = ntohs(sa.sin_port);
    return m;
}

static void mock_listener_closed(uv_handle_t *h)
{
    mock_t *m = h->data;
    json_decref(m->events);
    json_decref(m->cmids);
    fb_free(m);
}

static void mock_stop(mock_t *m)
{
    mock_drop_all(m, 0);
    uv_close((uv_handle_t *)&m->listener, mock_listener_closed);
}

/* ---- helpers ---- */

static uv_loop_t loop;
static char tmpdir[128];

static int setup(void **state)
{
    uv_loop_init(&loop);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fb_test_client_net.XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static void close_any(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static int teardown(void **state)
{
    /* after a failed assertion clients may be left open: close whatever is */
    for (int i = 0; i < 10; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    uv_walk(&loop, close_any, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static fb_client_t *new_client(const char *servers, const char *user, const char *password,
                               const char *state)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, state ? state : "x");
    fb_client_opts_t o = {.servers = servers,
                          .user = user,
                          .password = password,
                          .state_path = state ? path : NULL,
                          .queue_events = true,
                          .connect_timeout_ms = 1000};
    fb_client_t *c;
    assert_int_equal(fb_client_new(&loop, &o, &c), 0);
    return c;
}

static void addr_of(mock_t *m, char *buf, size_t n)
{
    snprintf(buf, n, "127.0.0.1:%d", m->port);
}

/* Next event that is a room message; asserts its seq. */
static void expect_msg(fb_client_t *c, int64_t seq)
{
    for (;;) {
        json_t *ev;
        assert_int_equal(fb_client_next_event(c, &ev, 2000), 0);
        const char *name = json_string_value(json_object_get(ev, "event"));
        if (!strcmp(name, "msg")) {
            assert_int_equal(json_integer_value(json_object_get(ev, "seq")), seq);
            json_decref(ev);
            return;
        }
        json_decref(ev);
    }
}

static void expect_no_msg(fb_client_t *c, int ms)
{
    json_t *ev;
    while (fb_client_next_event(c, &ev, ms) == 0) {
        assert_string_not_equal(json_string_value(json_object_get(ev, "event")), "msg");
        json_decref(ev);
    }
}

static json_t *send_req(const char *text, const char *cmid)
{
    json_t *r = json_pack("{s:s,s:i,s:s}", "op", "send", "room", 1, "text", text);
    if (cmid) json_object_set_new(r, "cmid", json_string(cmid));
    return r;
}

/* ---- tests ---- */

static void test_login_send_push(void **state)
{
    mock_t *m = mock_start(&loop);
    char addr[64];
    addr_of(m, addr, sizeof addr);
    fb_client_t *c = new_client(addr, "alice", "password1", "alice.json");
    assert_int_equal(fb_client_connect_sync(c, 2000), 0);
    assert_int_equal(fb_client_state(c), FB_CLIENT_READY);
    assert_string_equal(fb_client_token(c), "tok-alice");
    assert_int_equal(fb_client_user_id(c), 5);
    assert_int_equal(m->n_logins, 1);

    json_t *reply;
    assert_int_equal(fb_client_call_sync(c, send_req("hello", "cm1"), &reply, 2000), 0);
    assert_int_equal(json_integer_value(json_object_get(reply, "seq")), 1);
    assert_false(json_is_true(json_object_get(reply, "duplicate")));
    json_decref(reply);
    expect_msg(c, 1);
    assert_int_equal(fb_client_cursor(c, 1), 1);
    assert_int_equal(fb_client_outbox_count(c), 0);

    /* unread: bob has not read seq 1 */
    assert_int_equal(
        fb_client_call_sync(c, json_pack("{s:s,s:i}", "op", "room", "room", 1), NULL, 2000), 0);
    assert_int_equal(fb_client_unread_for(c, 1, 1, 5), 1);

    assert_int_equal(fb_client_call_sync(c, json_pack("{s:s}", "op", "ping"), NULL, 2000), 0);
    assert_int_equal(fb_client_call_sync(c, json_pack("{s:s}", "op", "nope"), &reply, 2000),
                     FB_EUNKNOWNOP);
    assert_non_null(reply);
    json_decref(reply);
    fb_client_free_sync(c);

    /* a restart connects with the saved token, no login */
    c = new_client(addr, "alice", NULL, "alice.json");
    assert_int_equal(fb_client_connect_sync(c, 2000), 0);
    assert_int_equal(m->n_logins, 1);
    assert_int_equal(fb_client_cursor(c, 1), 1);
    expect_no_msg(c, 100); /* seq 1 was delivered in the previous run */
    fb_client_free_sync(c);
    mock_stop(m);
}

/* Two devices: a read by bob lowers alice's unread count live. */
static void test_two_clients_read(void **state)
{
    mock_t *m = mock_start(&loop);
    char addr[64];
    addr_of(m, addr, sizeof addr);
    fb_client_t *a = new_client(addr, "alice", "password1", NULL);
    fb_client_t *b = new_client(addr, "bob", "password1", NULL);
    assert_int_equal(fb_client_connect_sync(a, 2000), 0);
    assert_int_equal(fb_client_connect_sync(b, 2000), 0);
    assert_int_equal(fb_client_call_sync(a, send_req("hi bob", NULL), NULL, 2000), 0);
    expect_msg(a, 1);
    expect_msg(b, 1);
    assert_int_equal(fb_client_unread_for(a, 1, 1, 5), 1);
    assert_int_equal(
        fb_client_call_sync(b, json_pack("{s:s,s:i,s:i}", "op", "read", "room", 1, "seq", 1), NULL,
                            2000),
        0);
    json_t *ev;
    do {
        assert_int_equal(fb_client_next_event(a, &ev, 2000), 0);
        bool is_read = !strcmp(json_string_value(json_object_get(ev, "event")), "read");
        json_decref(ev);
        if (is_read) break;
    } while (1);
    assert_int_equal(fb_client_unread_for(a, 1, 1, 5), 0);
    fb_client_free_sync(a);
    fb_client_free_sync(b);
    mock_stop(m);
}

/* Pushes hidden from the client leave a gap; the next push triggers a sync
 * that delivers the missing events in order, each once, over several pages. */
static void test_gap_sync(void **state)
{
    mock_t *m = mock_start(&loop);
    m->sync_limit = 2;
    char addr[64];
    addr_of(m, addr, sizeof addr);
    fb_client_t *a = new_client(addr, "alice", "password1", NULL);
    fb_client_t *b = new_client(addr, "bob", "password1", NULL);
    assert_int_equal(fb_client_connect_sync(a, 2000), 0);
    assert_int_equal(fb_client_connect_sync(b, 2000), 0);
    m->hide_pushes = 4;
    for (int i = 0; i < 5; i++)
        assert_int_equal(fb_client_call_sync(a, send_req("x", NULL), NULL, 2000), 0);
    for (int64_t s = 1; s <= 5; s++)
        expect_msg(b, s);
    expect_no_msg(b, 100);
    assert_int_equal(fb_client_cursor(b, 1), 5);
    assert_true(m->n_syncs >= 2 + 3); /* 2 connects, then 3 pages */
    fb_client_free_sync(a);
    fb_client_free_sync(b);
    mock_stop(m);
}

static int n_acks;
static void on_ack(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    assert_int_equal(err, 0);
    n_acks++;
}

/* A send whose ack was lost with the connection, and sends made while
 * disconnected, are resent with their cmids after the reconnect: stored once,
 * acked, delivered once, in order. */
static void test_resend_after_drop(void **state)
{
    mock_t *m = mock_start(&loop);
    char addr[64];
    addr_of(m, addr, sizeof addr);
    fb_client_t *c = new_client(addr, "alice", "password1", "a.json");
    assert_int_equal(fb_client_connect_sync(c, 2000), 0);
    n_acks = 0;
    m->swallow_sends = 1;
    assert_int_equal(fb_client_send(c, 1, "one", "cm-1", on_ack, NULL), 0);
    assert_int_equal(fb_client_send(c, 1, "two", "cm-2", on_ack, NULL), 0);
    assert_int_equal(fb_client_send(c, 1, "three", "cm-3", on_ack, NULL), 0);
    expect_msg(c, 1);
    expect_msg(c, 2);
    expect_msg(c, 3);
    assert_int_equal(n_acks, 3);
    assert_int_equal(json_array_size(m->events), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(m->events, 1), "cmid")),
                        "cm-2");
    assert_int_equal(fb_client_outbox_count(c), 0);
    assert_true(m->n_conns >= 2);
    expect_no_msg(c, 100);
    fb_client_free_sync(c);
    mock_stop(m);
}

static void test_retryable_refusal(void **state)
{
    mock_t *m = mock_start(&loop);
    char addr[64];
    addr_of(m, addr, sizeof addr);
    fb_client_t *c = new_client(addr, "alice", "password1", NULL);
    assert_int_equal(fb_client_connect_sync(c, 2000), 0);
    m->fail_sends = 2;
    json_t *reply;
    assert_int_equal(fb_client_call_sync(c, send_req("persist", "cm-r"), &reply, 3000), 0);
    assert_int_equal(json_integer_value(json_object_get(reply, "seq")), 1);
    json_decref(reply);
    assert_int_equal(m->n_sends, 3);
    fb_client_free_sync(c);
    mock_stop(m);
}

static bool acked_once(void *arg)
{
    return n_acks == 1;
}

typedef struct {
    char log[16][80];
    int n;
} states_t;

static void on_state(fb_client_t *c, fb_client_state_t s, const char *addr, int err, void *ud)
{
    states_t *st = ud;
    if (st->n < 16) snprintf(st->log[st->n++], 80, "%s %s", fb_client_state_name(s), addr);
}

/* The first node dies: the client reports it, moves to the second, resends. */
static void test_failover(void **state)
{
    mock_t *m1 = mock_start(&loop), *m2 = mock_start(&loop);
    char servers[128], a1[64], a2[64];
    addr_of(m1, a1, sizeof a1);
    addr_of(m2, a2, sizeof a2);
    snprintf(servers, sizeof servers, "%s,%s", a1, a2);
    states_t st = {0};
    fb_client_opts_t o = {.servers = servers,
                          .user = "alice",
                          .password = "password1",
                          .queue_events = true,
                          .on_state = on_state,
                          .ud = &st};
    fb_client_t *c;
    assert_int_equal(fb_client_new(&loop, &o, &c), 0);
    assert_int_equal(fb_client_connect_sync(c, 2000), 0);
    assert_string_equal(fb_client_addr(c), a1);
    mock_stop(m1);
    n_acks = 0;
    assert_int_equal(fb_client_send(c, 1, "after failover", NULL, on_ack, NULL), 0);
    assert_int_equal(fb_client_run_until(c, acked_once, NULL, 3000), 0);
    assert_string_equal(fb_client_addr(c), a2);
    expect_msg(c, 1);
    json_t *reply;
    assert_int_equal(fb_client_call_sync(c, json_pack("{s:s}", "op", "ping"), &reply, 3000), 0);
    json_decref(reply);
    char want_disc[96], want_conn[96];
    snprintf(want_disc, sizeof want_disc, "disconnected %s", a1);
    snprintf(want_conn, sizeof want_conn, "connecting %s", a2);
    bool saw_disc = false, saw_conn2 = false;
    for (int i = 0; i < st.n; i++) {
        if (!strcmp(st.log[i], want_disc)) saw_disc = true;
        if (!strcmp(st.log[i], want_conn)) saw_conn2 = true;
    }
    assert_true(saw_disc);
    assert_true(saw_conn2);
    fb_client_free_sync(c);
    mock_stop(m2);
}

static void test_bad_credentials(void **state)
{
    mock_t *m = mock_start(&loop);
    char addr[64];
    addr_of(m, addr, sizeof addr);
    fb_client_t *c = new_client(addr, "alice", "wrong-password", NULL);
    assert_int_equal(fb_client_connect_sync(c, 2000), FB_EBADCRED);
    assert_int_equal(fb_client_state(c), FB_CLIENT_STOPPED);
    assert_int_equal(fb_client_ping(c, NULL, NULL), FB_ESTATE);
    fb_client_free_sync(c);
    mock_stop(m);
}

/* A refused token with a password at hand: log in again on a new connection. */
static void test_bad_token_relogin(void **state)
{
    mock_t *m = mock_start(&loop);
    char addr[64];
    addr_of(m, addr, sizeof addr);
    fb_client_opts_t o = {
        .servers = addr, .user = "alice", .password = "password1", .token = "revoked"};
    fb_client_t *c;
    assert_int_equal(fb_client_new(&loop, &o, &c), 0);
    assert_int_equal(fb_client_connect_sync(c, 2000), 0);
    assert_string_equal(fb_client_token(c), "tok-alice");
    fb_client_free_sync(c);

    fb_client_opts_t o2 = {.servers = addr, .token = "revoked"};
    assert_int_equal(fb_client_new(&loop, &o2, &c), 0);
    assert_int_equal(fb_client_connect_sync(c, 2000), FB_EBADTOKEN);
    fb_client_free_sync(c);
    mock_stop(m);
}

/* No credentials at all: CONNECTED, then the app logs in itself. */
static void test_app_login(void **state)
{
    mock_t *m = mock_start(&loop);
    char addr[64];
    addr_of(m, addr, sizeof addr);
    fb_client_t *c = new_client(addr, NULL, NULL, "anon.json");
    assert_int_equal(fb_client_connect_sync(c, 2000), 0);
    assert_int_equal(fb_client_state(c), FB_CLIENT_CONNECTED);
    json_t *reply;
    assert_int_equal(fb_client_call_sync(c,
                                         json_pack("{s:s,s:s,s:s}", "op", "login", "user", "bob",
                                                   "password", "password1"),
                                         &reply, 2000),
                     0);
    json_decref(reply);
    assert_string_equal(fb_client_token(c), "tok-bob");
    assert_string_equal(fb_client_user(c), "bob");
    assert_int_equal(fb_client_connect_sync(c, 2000), 0);
    assert_int_equal(fb_client_state(c), FB_CLIENT_READY);
    fb_client_free_sync(c);
    mock_stop(m);
}

static bool is_stopped(void *arg)
{
    return fb_client_state(arg) == FB_CLIENT_STOPPED;
}

/* Close 4001 (logged out): stop for good, token forgotten. */
static void test_logged_out(void **state)
{
    mock_t *m = mock_start(&loop);
    char addr[64];
    addr_of(m, addr, sizeof addr);
    fb_client_t *c = new_client(addr, "alice", "password1", "lo.json");
    assert_int_equal(fb_client_connect_sync(c, 2000), 0);
    mock_drop_all(m, 4001);
    assert_int_equal(fb_client_run_until(c, is_stopped, c, 2000), 0);
    assert_int_equal(fb_client_stop_reason(c), FB_EBADTOKEN);
    assert_null(fb_client_token(c));
    fb_client_free_sync(c);
    mock_stop(m);
}

int main(void)
{
    fb_mem_install_hooks();
    fb_log_set_level(getenv("FB_DEBUG") ? FB_LOG_DEBUG : FB_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_login_send_push, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_clients_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gap_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resend_after_drop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retryable_refusal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_credentials, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_token_relogin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_app_login, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logged_out, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
