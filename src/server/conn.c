/* One client connection on an io loop: accept, HTTP parsing (http-parser),
 * the WebSocket upgrade, frames in and out (wslay), and bounded output that
 * is written once per loop iteration however many frames were queued.
 * It never decides what a request means (ops_*.c, http.c do).
 *
 * Output bound: a connection may have at most max_output_bytes waiting
 * (queued plus being written). Past that it is a slow consumer: its output
 * is dropped, it gets close code 4002 if the socket takes it at once, and
 * it is closed. Its client resyncs from its cursors on reconnect.
 *
 * Idle bound: an idle connection holds no buffer and no wslay context
 * (8.6 KiB: two 4 KiB buffers). The context is made when bytes arrive and
 * freed as soon as every byte given to wslay was part of a whole frame, no
 * fragmented message is half received and wslay has nothing to send.
 * SPDX-License-Identifier: MIT */
#include "server/server.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <string.h>
#include <strings.h>

static const http_parser_settings http_settings;

/* ---- lifetime ---- */

static void conn_free(fb_conn_t *c)
{
    fb_buf_free(&c->in);
    fb_buf_free(&c->url);
    fb_buf_free(&c->body);
    fb_buf_free(&c->hdr_field);
    fb_buf_free(&c->out);
    fb_buf_free(&c->wbuf);
    if (c->ws) wslay_event_context_free(c->ws);
    fb_free(c);
}

void fb_conn_unref(fb_conn_t *c)
{
    if (--c->refs == 0) conn_free(c);
}

static void on_closed(uv_handle_t *h)
{
    fb_conn_unref(h->data);
}

static void hs_unlink(fb_conn_t *c)
{
    if (!c->in_handshake_list) return;
    fb_loop_t *l = c->loop;
    if (c->hs_prev) c->hs_prev->hs_next = c->hs_next; else l->hs_head = c->hs_next;
    if (c->hs_next) c->hs_next->hs_prev = c->hs_prev; else l->hs_tail = c->hs_prev;
    c->in_handshake_list = false;
}

void fb_conn_close(fb_conn_t *c)
{
    if (c->state == CONN_CLOSED) return;
    fb_loop_t *l = c->loop;
    c->state = CONN_CLOSED;
    hs_unlink(c);
    fb_hub_remove(c);
    if (c->all_prev) c->all_prev->all_next = c->all_next; else l->all = c->all_next;
    if (c->all_next) c->all_next->all_prev = c->all_prev;
    fb_buf_free(&c->out);
    atomic_fetch_sub(&l->open_conns, 1);
    atomic_fetch_add(&l->stats.closed, 1);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

/* (Re)starts c's clock at the tail of the handshake list, which holds the
 * connections that have not said hello, oldest first. It doubles as the idle
 * list of plain HTTP connections: a request in progress is off it, and an
 * answered one comes back here. */
static void hs_relink(fb_conn_t *c)
{
    fb_loop_t *l = c->loop;
    hs_unlink(c);
    c->accepted_ms = (int64_t)uv_now(&l->loop);
    c->hs_next = NULL;
    c->hs_prev = l->hs_tail;
    if (l->hs_tail) l->hs_tail->hs_next = c; else l->hs_head = c;
    l->hs_tail = c;
    c->in_handshake_list = true;
}

void fb_conn_handshake_done(fb_conn_t *c)
{
    c->hello = true;
    hs_unlink(c);
}

/* ---- output ---- */

/* The dirty list holds a reference: a connection closed meanwhile is
 * freed only after the flush pass has dropped it. */
static void mark_dirty(fb_conn_t *c)
{
    if (c->dirty) return;
    c->dirty = true;
    c->refs++;
    c->dirty_next = c->loop->dirty;
    c->loop->dirty = c;
}

static bool over_bound(fb_conn_t *c, size_t extra)
{
    return c->out.len + c->wbuf.len + extra > (size_t)c->loop->srv->cfg.max_output_bytes;
}

static void slow_consumer(fb_conn_t *c)
{
    FB_WARN("conn", "closing slow consumer user=%lld device=%lld: %zu bytes waiting",
            (long long)c->user_id, (long long)c->device_id, c->out.len + c->wbuf.len);
    atomic_fetch_add(&c->loop->stats.slow_closes, 1);
    fb_buf_reset(&c->out);
    if (!c->writing && c->state == CONN_WS) {
        /* A last word if the socket takes it now; never queued. */
        fb_ws_enc_close(c->loop->enc, &c->out, 4002, "slow consumer");
        uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
    fb_conn_close(c);
}

void fb_conn_write_raw(fb_conn_t *c, const char *p, size_t n)
{
    if (c->state == CONN_CLOSED) return;
    if (over_bound(c, n)) {
        slow_consumer(c);
        return;
    }
    fb_buf_append(&c->out, p, n);
    mark_dirty(c);
}

static void on_written(uv_write_t *w, int status)
{
    fb_conn_t *c = w->data;
    c->writing = false;
    fb_buf_free(&c->wbuf); /* idle connections keep no buffer */
    if (status < 0 || c->state == CONN_CLOSED) {
        if (c->state != CONN_CLOSED) fb_conn_close(c);
    } else if (c->out.len) {
        mark_dirty(c);
    } else if (c->closing_after_write) {
        fb_conn_close(c);
    }
    fb_conn_unref(c);
}

/* One write (writev) per connection per loop iteration. */
static void flush(fb_conn_t *c)
{
    if (c->state == CONN_CLOSED || c->writing) return;
    if (!c->out.len) {
        if (c->closing_after_write) fb_conn_close(c);
        return;
    }
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)c->out.len) {
        fb_buf_reset(&c->out);
        if (c->out.cap > 65536) fb_buf_free(&c->out);
        if (c->closing_after_write) fb_conn_close(c);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        fb_conn_close(c);
        return;
    }
    if (n > 0) fb_buf_consume(&c->out, (size_t)n);
    /* The rest goes in the background; new output gathers in `out`. */
    fb_buf_t t = c->wbuf;
    c->wbuf = c->out;
    c->out = t;
    fb_buf_reset(&c->out);
    b = uv_buf_init(c->wbuf.data, (unsigned)c->wbuf.len);
    c->wreq.data = c;
    c->writing = true;
    c->refs++;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        c->writing = false;
        c->refs--;
        fb_conn_close(c);
    }
}

void fb_conn_flush_all(fb_loop_t *l)
{
    while (l->dirty) {
        fb_conn_t *c = l->dirty;
        l->dirty = c->dirty_next;
        c->dirty = false;
        flush(c);
        fb_conn_unref(c);
    }
}

/* A frame was appended to out from `before` on: keep it, or drop it and
 * close c when it crossed the output bound. */
static void frame_queued(fb_conn_t *c, size_t before)
{
    if (over_bound(c, 0)) {
        c->out.len = before;
        slow_consumer(c);
    } else {
        mark_dirty(c);
    }
}

void fb_conn_send_json(fb_conn_t *c, json_t *obj)
{
    if (c->state == CONN_WS) {
        size_t before = c->out.len;
        fb_ws_enc_json(c->loop->enc, &c->out, obj);
        frame_queued(c, before);
    }
    json_decref(obj);
}

void fb_conn_send_json_text(fb_conn_t *c, const char *json, size_t n)
{
    if (c->state != CONN_WS) return;
    size_t before = c->out.len;
    fb_ws_enc_text(c->loop->enc, &c->out, json, n);
    frame_queued(c, before);
}

void fb_conn_reply(fb_conn_t *c, json_t *id, json_t *fields)
{
    fb_conn_send_json(c, fb_proto_reply(id, fields));
}

void fb_conn_reply_error(fb_conn_t *c, json_t *id, int err, const char *detail)
{
    atomic_fetch_add(&c->loop->stats.errors, 1);
    fb_conn_send_json(c, fb_proto_error(id, err, detail));
}

/* ---- WebSocket (wslay) ---- */

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *ud)
{
    fb_conn_t *c = ud;
    if (!c->rlen) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = FB_MIN(len, c->rlen);
    memcpy(buf, c->rptr, n);
    c->rptr += n;
    c->rlen -= n;
    c->ws_pending += n;
    return (ssize_t)n;
}

/* Frame bookkeeping, so that the context is freed only between frames:
 * ws_pending counts the bytes given to wslay that are not yet part of a
 * whole frame. A client frame is its header (2 bytes, the extended length
 * wslay insists is minimal, the 4-byte mask) and its payload. */
static void ws_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *a, void *ud)
{
    fb_conn_t *c = ud;
    uint64_t ext = a->payload_length < 126 ? 0 : a->payload_length < 65536 ? 2 : 8;
    c->ws_frame_bytes = 2 + ext + 4 + a->payload_length;
    if (!wslay_is_ctrl_frame(a->opcode)) c->ws_in_msg = !a->fin;
}

static void ws_frame_end(wslay_event_context_ptr ctx, void *ud)
{
    fb_conn_t *c = ud;
    c->ws_pending -= FB_MIN(c->ws_pending, c->ws_frame_bytes);
}

/* wslay only sends control frames (pong, close) through here. */
static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    fb_conn_t *c = ud;
    fb_buf_append(&c->out, data, len);
    mark_dirty(c);
    return (ssize_t)len;
}

static void ws_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a,
                      void *ud)
{
    fb_conn_t *c = ud;
    if (c->state != CONN_WS || wslay_is_ctrl_frame(a->opcode)) return;
    if (a->opcode != WSLAY_TEXT_FRAME) {
        atomic_fetch_add(&c->loop->stats.bad_frames, 1);
        fb_conn_reply_error(c, NULL, FB_EBADREQ, "binary frames are not supported");
        return;
    }
    fb_ops_dispatch(c, (const char *)a->msg, a->msg_length);
}

static const struct wslay_event_callbacks ws_callbacks = {
    .recv_callback = ws_recv,
    .send_callback = ws_send,
    .on_frame_recv_start_callback = ws_frame_start,
    .on_frame_recv_end_callback = ws_frame_end,
    .on_msg_recv_callback = ws_on_msg,
};

static int ws_ensure(fb_conn_t *c)
{
    if (c->ws) return 0;
    if (wslay_event_context_server_init(&c->ws, &ws_callbacks, c) != 0) return FB_ENOMEM;
    wslay_event_config_set_max_recv_msg_length(c->ws, (uint64_t)c->loop->srv->cfg.max_frame_bytes);
    c->ws_pending = 0;
    c->ws_in_msg = false;
    return 0;
}

/* Between messages, with nothing queued and no close under way, the
 * context holds nothing that a new one would not: free it. */
static void ws_release_if_idle(fb_conn_t *c)
{
    if (!c->ws || c->ws_pending || c->ws_in_msg || c->closing_after_write ||
        !wslay_event_want_read(c->ws) || wslay_event_want_write(c->ws))
        return;
    wslay_event_context_free(c->ws);
    c->ws = NULL;
}

static void ws_pump(fb_conn_t *c, const char *data, size_t len)
{
    if (ws_ensure(c) != 0) {
        fb_conn_close(c);
        return;
    }
    c->rptr = (const uint8_t *)data;
    c->rlen = len;
    int rc = wslay_event_recv(c->ws);
    c->rlen = 0;
    if (c->state == CONN_CLOSED) return;
    if (rc == 0) rc = wslay_event_send(c->ws);
    if (rc != 0) {
        fb_conn_close(c);
        return;
    }
    /* After a close exchange (or a protocol error wslay answered with a
     * close frame), write what is queued and hang up. */
    if (!wslay_event_want_read(c->ws)) {
        c->closing_after_write = true;
        mark_dirty(c);
        return;
    }
    ws_release_if_idle(c);
}

void fb_conn_ws_close(fb_conn_t *c, int code, const char *reason)
{
    if (c->state != CONN_WS || ws_ensure(c) != 0) {
        fb_conn_close(c);
        return;
    }
    wslay_event_queue_close(c->ws, (uint16_t)code, (const uint8_t *)reason, strlen(reason));
    wslay_event_send(c->ws);
    c->closing_after_write = true;
    mark_dirty(c);
}

static void upgrade(fb_conn_t *c)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char keyed[128];
    unsigned char sha[SHA_DIGEST_LENGTH];
    char accept[64];
    int n = snprintf(keyed, sizeof keyed, "%s%s", c->ws_key, guid);
    SHA1((unsigned char *)keyed, (size_t)n, sha);
    EVP_EncodeBlock((unsigned char *)accept, sha, SHA_DIGEST_LENGTH);
    char resp[256];
    n = snprintf(resp, sizeof resp,
                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                 accept);
    fb_buf_append(&c->out, resp, (size_t)n);
    mark_dirty(c);
    c->state = CONN_WS; /* the wslay context comes with the first bytes */
    fb_buf_free(&c->url);
    fb_buf_free(&c->body);
    fb_buf_free(&c->hdr_field);
    const fb_config_t *cfg = &c->loop->srv->cfg;
    fb_conn_send_json(c, json_pack("{s:s,s:i,s:s,s:I,s:I}", "event", "hello", "protocol",
                                   FB_PROTOCOL_VERSION, "server", "firebreak/" FB_VERSION,
                                   "max_frame_bytes", (json_int_t)cfg->max_frame_bytes,
                                   "max_text_bytes", (json_int_t)cfg->max_text_bytes));
}

/* ---- HTTP (http-parser) ---- */

enum { H_NONE, H_UPGRADE, H_CONNECTION, H_KEY, H_VERSION };

static int on_url(http_parser *p, const char *at, size_t n)
{
    fb_conn_t *c = p->data;
    if (c->url.len + n > 2048) return 1;
    fb_buf_append(&c->url, at, n);
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    fb_conn_t *c = p->data;
    if (c->last_was_value) fb_buf_reset(&c->hdr_field);
    c->last_was_value = false;
    if (c->hdr_field.len + n > 256) return 1;
    fb_buf_append(&c->hdr_field, at, n);
    return 0;
}

static bool field_is(fb_conn_t *c, const char *name)
{
    return c->hdr_field.len == strlen(name) && strncasecmp(c->hdr_field.data, name, c->hdr_field.len) == 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    fb_conn_t *c = p->data;
    if (!c->last_was_value) {
        c->hdr_which = field_is(c, "upgrade")                 ? H_UPGRADE
                       : field_is(c, "sec-websocket-key")     ? H_KEY
                       : field_is(c, "sec-websocket-version") ? H_VERSION
                                                              : H_NONE;
    }
    c->last_was_value = true;
    if (c->hdr_which == H_UPGRADE && n == 9 && strncasecmp(at, "websocket", 9) == 0)
        c->hdr_upgrade = true;
    else if (c->hdr_which == H_VERSION && n == 2 && strncmp(at, "13", 2) == 0)
        c->hdr_ws_version = true;
    else if (c->hdr_which == H_KEY && n < sizeof c->ws_key - strlen(c->ws_key))
        strncat(c->ws_key, at, n);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    fb_conn_t *c = p->data;
    if (c->body.len + n > (size_t)c->loop->srv->cfg.max_frame_bytes) {
        c->body_too_big = true;
        return 0;
    }
    fb_buf_append(&c->body, at, n);
    return 0;
}

static int on_message_begin(http_parser *p)
{
    fb_conn_t *c = p->data;
    fb_buf_reset(&c->url);
    fb_buf_reset(&c->body);
    fb_buf_reset(&c->hdr_field);
    c->ws_key[0] = 0;
    c->hdr_upgrade = c->hdr_ws_version = c->last_was_value = c->body_too_big = false;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    fb_conn_t *c = p->data;
    c->http_done = true;
    http_parser_pause(p, 1); /* one request at a time; resumed after the answer */
    return 0;
}

static const http_parser_settings http_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static bool is_ws_path(fb_conn_t *c)
{
    return c->url.len >= 3 && strncmp(c->url.data, "/ws", 3) == 0 &&
           (c->url.len == 3 || c->url.data[3] == '?');
}

/* Parses buffered input until a request is complete, then serves it. */
static void http_pump_inner(fb_conn_t *c);

static void http_pump(fb_conn_t *c)
{
    if (c->in_pump) return; /* a synchronous answer resumes inside the loop of the caller */
    c->in_pump = true;
    c->refs++;
    http_pump_inner(c);
    c->in_pump = false;
    fb_conn_unref(c);
}

static void http_pump_inner(fb_conn_t *c)
{
    while (c->state == CONN_HTTP && !c->http_busy && c->in.len) {
        c->http_done = false;
        size_t used = http_parser_execute(&c->hp, &http_settings, c->in.data, c->in.len);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->hp);
        if (e != HPE_OK && e != HPE_PAUSED) {
            fb_http_respond(c, 400, "text/plain", "bad request\n", 12);
            c->closing_after_write = true;
            return;
        }
        if (c->hp.upgrade) used = c->in.len; /* guard: consumed through the headers below */
        if (!c->http_done) {
            fb_buf_consume(&c->in, used);
            if (c->in.len > 65536) c->closing_after_write = true;
            return;
        }
        if (e == HPE_PAUSED) http_parser_pause(&c->hp, 0);
        if (c->hp.upgrade || (c->hdr_upgrade && is_ws_path(c))) {
            if (!is_ws_path(c) || !c->hdr_upgrade || !c->hdr_ws_version || strlen(c->ws_key) != 24 ||
                c->hp.method != HTTP_GET) {
                fb_http_respond(c, 400, "text/plain", "bad websocket upgrade\n", 22);
                c->closing_after_write = true;
                return;
            }
            /* Bytes after the request head already belong to WebSocket. */
            fb_buf_t rest = c->in;
            size_t head = 0;
            const char *end = memmem(rest.data, rest.len, "\r\n\r\n", 4);
            if (end) head = (size_t)(end - rest.data) + 4;
            c->in = (fb_buf_t){0};
            upgrade(c);
            if (rest.len > head) ws_pump(c, rest.data + head, rest.len - head);
            fb_buf_free(&rest);
            return;
        }
        fb_buf_consume(&c->in, used);
        c->http_busy = true;
        hs_unlink(c); /* no idle timeout while the answer is being made */
        atomic_fetch_add(&c->loop->stats.http_requests, 1);
        fb_http_handle(c);
    }
}

void fb_conn_http_resume(fb_conn_t *c)
{
    c->http_busy = false;
    if (c->state == CONN_HTTP) hs_relink(c);
    if (!http_should_keep_alive(&c->hp)) c->closing_after_write = true;
    if (!c->closing_after_write) http_pump(c);
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    fb_conn_t *c = h->data;
    *buf = uv_buf_init(c->loop->readbuf, sizeof c->loop->readbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    fb_conn_t *c = s->data;
    if (n < 0) {
        fb_conn_close(c);
        return;
    }
    if (n == 0 || c->state == CONN_CLOSED) return;
    if (c->state == CONN_WS) {
        ws_pump(c, buf->base, (size_t)n);
        return;
    }
    if (c->in.len + (size_t)n > (size_t)c->loop->srv->cfg.max_frame_bytes + 65536) {
        fb_conn_close(c); /* a request head or body beyond any bound */
        return;
    }
    fb_buf_append(&c->in, buf->base, (size_t)n);
    http_pump(c);
}

void fb_conn_accept(fb_loop_t *l)
{
    fb_conn_t *c = fb_calloc(1, sizeof *c);
    c->loop = l;
    c->refs = 1;
    c->state = CONN_HTTP;
    uv_tcp_init(&l->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept((uv_stream_t *)&l->listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, 60);
    http_parser_init(&c->hp, HTTP_REQUEST);
    c->hp.data = c;
    c->all_next = l->all;
    if (l->all) l->all->all_prev = c;
    l->all = c;
    hs_relink(c);
    atomic_fetch_add(&l->open_conns, 1);
    atomic_fetch_add(&l->stats.accepted, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

void fb_conn_set_user(fb_conn_t *c, int64_t user_id, int64_t device_id, const char *name)
{
    fb_hub_remove(c);
    c->user_id = user_id;
    c->device_id = device_id;
    snprintf(c->user_name, sizeof c->user_name, "%s", name);
    fb_hub_add(c);
}
