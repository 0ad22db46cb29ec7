/* One load connection of `firebreak bench`: TCP (from a chosen 127.x source
 * address), the HTTP upgrade (http-parser, Sec-WebSocket-Accept checked),
 * WebSocket frames by wslay's frame layer (masking included) and the hello
 * with the user's token. It is leaner than the client library on purpose:
 * no outbox, no cursors, no JSON on the way out, and whole frames are handed
 * to bench_run.c straight from wslay's buffer when they fit. It never
 * assembles a WebSocket frame header itself.
 * SPDX-License-Identifier: MIT */
#include "tools/bench.h"

#include <http_parser.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <wslay/wslay.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define BENCH_MAX_MSG (16u << 20) /* a larger message from the node: the connection is dropped */

typedef struct {
    http_parser hp;
    bool in_value, is_accept, accept_ok, headers_done, final;
    char hdr[32];
    size_t hdr_len;
    char accept[64];
    size_t accept_len;
    char expect[32];
    wslay_frame_context_ptr fr;
    const uint8_t *rd; /* bytes being fed to wslay */
    size_t rd_len;
    uint64_t frame_left; /* payload bytes of the current frame still to come */
    int msg_op;          /* opcode of the data message being received */
    int frame_op;
    bool frame_fin;
    fb_buf_t msg;        /* a data message that did not arrive in one piece */
    uint8_t ctrl[125];   /* a control frame, which may be split too */
    size_t ctrl_len;
    char why[96];        /* why the connection is going away */
} bench_tp_t;

static void drop(bench_conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bench_tp_t *tp_of(bench_conn_t *c)
{
    return c->t;
}

/* ---- writing ---- */

static void mark_dirty(bench_conn_t *c)
{
    if (c->dirty) return;
    c->dirty = true;
    c->dirty_next = c->w->dirty;
    c->w->dirty = c;
}

static void on_written(uv_write_t *req, int status)
{
    bench_conn_t *c = req->data;
    c->writing = false;
    fb_buf_reset(&c->wbuf);
    if (status < 0) {
        if (status != UV_ECANCELED) drop(c, "write: %s", uv_strerror(status));
        return;
    }
    if (c->out.len) mark_dirty(c);
}

static void flush(bench_conn_t *c)
{
    if (c->writing || !c->out.len || c->state == BC_CLOSING || c->state == BC_CLOSED ||
        c->state == BC_IDLE || c->state == BC_CONNECTING)
        return;
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)c->out.len) {
        fb_buf_reset(&c->out);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        drop(c, "write: %s", uv_strerror(n));
        return;
    }
    if (n > 0) fb_buf_consume(&c->out, (size_t)n);
    fb_buf_t t = c->wbuf;
    c->wbuf = c->out;
    c->out = t;
    fb_buf_reset(&c->out);
    b = uv_buf_init(c->wbuf.data, (unsigned)c->wbuf.len);
    c->wreq.data = c;
    c->writing = true;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc < 0) {
        c->writing = false;
        drop(c, "write: %s", uv_strerror(rc));
    }
}

void bench_conn_flush_all(bench_worker_t *w)
{
    while (w->dirty) {
        bench_conn_t *c = w->dirty;
        w->dirty = c->dirty_next;
        c->dirty = false;
        flush(c);
    }
}

static ssize_t fr_send(const uint8_t *data, size_t len, int flags, void *ud)
{
    bench_conn_t *c = ud;
    fb_buf_append(&c->out, data, len);
    return (ssize_t)len;
}

static int fr_genmask(uint8_t *buf, size_t len, void *ud)
{
    bench_conn_t *c = ud;
    uint64_t r = bench_rand(c->w);
    memcpy(buf, &r, FB_MIN(len, sizeof r));
    return 0;
}

static void send_frame(bench_conn_t *c, int opcode, const char *data, size_t len)
{
    bench_tp_t *tp = tp_of(c);
    struct wslay_frame_iocb io = {.fin = 1, .opcode = (uint8_t)opcode, .mask = 1,
                                  .payload_length = len};
    size_t done = 0;
    do {
        io.data = (const uint8_t *)data + done;
        io.data_length = len - done;
        ssize_t r = wslay_frame_send(tp->fr, &io);
        if (r < 0) {
            drop(c, "wslay_frame_send: %zd", r);
            return;
        }
        done += (size_t)r;
    } while (done < len);
    mark_dirty(c);
}

void bench_conn_send(bench_conn_t *c, const char *data, size_t len)
{
    if (c->state != BC_READY && c->state != BC_HELLO) return;
    send_frame(c, WSLAY_TEXT_FRAME, data, len);
}

/* ---- closing ---- */

static void on_closed(uv_handle_t *h)
{
    bench_conn_t *c = h->data;
    bench_tp_t *tp = tp_of(c);
    bool final = tp->final;
    char why[96];
    snprintf(why, sizeof why, "%s", tp->why);
    if (tp->fr) wslay_frame_context_free(tp->fr);
    fb_buf_free(&tp->msg);
    fb_free(tp);
    c->t = NULL;
    fb_buf_free(&c->out);
    fb_buf_free(&c->wbuf);
    c->writing = false;
    c->read_stopped = false;
    c->state = final ? BC_CLOSED : BC_IDLE;
    if (!final) bench_on_lost(c, why);
}

static void go_away(bench_conn_t *c, bool final, const char *why)
{
    if (c->state == BC_IDLE || c->state == BC_CLOSED) {
        c->state = BC_CLOSED;
        return;
    }
    bench_tp_t *tp = tp_of(c);
    if (final) tp->final = true;
    if (c->state == BC_CLOSING) return;
    snprintf(tp->why, sizeof tp->why, "%s", why);
    c->state = BC_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void drop(bench_conn_t *c, const char *fmt, ...)
{
    char why[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    go_away(c, false, why);
}

void bench_conn_drop(bench_conn_t *c)
{
    go_away(c, false, "dropped by the bench");
}

void bench_conn_close(bench_conn_t *c)
{
    go_away(c, true, "closed by the bench");
}

void bench_conn_free(bench_conn_t *c)
{
    fb_free(c->slots);
    fb_free(c->rx);
    fb_free(c);
}

/* ---- the hello ---- */

static void on_hello_frame(bench_conn_t *c, const char *data, size_t len)
{
    json_error_t jerr;
    json_t *j = json_loadb(data, len, 0, &jerr);
    const char *ev = json_string_value(json_object_get(j, "event"));
    if (ev && !strcmp(ev, "hello")) {
        char req[200];
        int n = snprintf(req, sizeof req, "{\"id\":0,\"op\":\"hello\",\"protocol\":%d,\"token\":\"%s\"}",
                         FB_PROTOCOL_VERSION, c->w->world->users[c->user].token);
        bench_conn_send(c, req, (size_t)n);
    } else if (json_is_integer(json_object_get(j, "id")) &&
               json_integer_value(json_object_get(j, "id")) == 0) {
        if (json_is_true(json_object_get(j, "ok"))) {
            c->state = BC_READY;
            json_decref(j);
            bench_on_ready(c);
            return;
        }
        const char *code =
            json_string_value(json_object_get(json_object_get(j, "error"), "code"));
        drop(c, "hello refused: %s", code ? code : "?");
    } else {
        drop(c, "unexpected frame before the hello reply");
    }
    json_decref(j);
}

/* ---- reading: frames ---- */

static ssize_t fr_recv(uint8_t *buf, size_t len, int flags, void *ud)
{
    bench_conn_t *c = ud;
    bench_tp_t *tp = tp_of(c);
    if (!tp->rd_len) return 0; /* wslay reads 0 as "nothing now" */
    size_t n = FB_MIN(len, tp->rd_len);
    memcpy(buf, tp->rd, n);
    tp->rd += n;
    tp->rd_len -= n;
    return (ssize_t)n;
}

static void deliver(bench_conn_t *c, const char *data, size_t len)
{
    if (c->state == BC_HELLO)
        on_hello_frame(c, data, len);
    else if (c->state == BC_READY)
        bench_on_text(c, data, len);
}

static void on_control(bench_conn_t *c, int op)
{
    bench_tp_t *tp = tp_of(c);
    if (op == WSLAY_CONNECTION_CLOSE) {
        c->close_code = tp->ctrl_len >= 2 ? (tp->ctrl[0] << 8) | tp->ctrl[1] : 1005;
        drop(c, "closed by the node (%d %.*s)", c->close_code,
             (int)(tp->ctrl_len > 2 ? tp->ctrl_len - 2 : 0), (const char *)tp->ctrl + 2);
    } else if (op == WSLAY_PING) {
        send_frame(c, WSLAY_PONG, (const char *)tp->ctrl, tp->ctrl_len);
    }
}

/* One chunk of a frame's payload, as wslay hands it over. */
static void on_chunk(bench_conn_t *c, const struct wslay_frame_iocb *io)
{
    bench_tp_t *tp = tp_of(c);
    if (tp->frame_left == 0) { /* a new frame */
        tp->frame_left = io->payload_length;
        tp->frame_op = io->opcode;
        tp->frame_fin = io->fin;
        tp->ctrl_len = 0;
        if (io->opcode == WSLAY_TEXT_FRAME || io->opcode == WSLAY_BINARY_FRAME) {
            tp->msg_op = io->opcode;
            fb_buf_reset(&tp->msg);
        }
    }
    tp->frame_left -= io->data_length;
    bool done = tp->frame_left == 0;
    if (wslay_is_ctrl_frame(tp->frame_op)) {
        memcpy(tp->ctrl + tp->ctrl_len, io->data, io->data_length);
        tp->ctrl_len += io->data_length;
        if (done) on_control(c, tp->frame_op);
        return;
    }
    if (tp->msg.len + io->data_length > BENCH_MAX_MSG) {
        drop(c, "message from the node larger than %u bytes", BENCH_MAX_MSG);
        return;
    }
    if (done && tp->frame_fin && !tp->msg.len) { /* the usual case: no copy */
        if (tp->msg_op == WSLAY_TEXT_FRAME) deliver(c, (const char *)io->data, io->data_length);
        return;
    }
    fb_buf_append(&tp->msg, io->data, io->data_length);
    if (done && tp->frame_fin) {
        if (tp->msg_op == WSLAY_TEXT_FRAME) deliver(c, tp->msg.data, tp->msg.len);
        fb_buf_reset(&tp->msg);
        if (tp->msg.cap > 65536) fb_buf_free(&tp->msg);
    }
}

static void feed_ws(bench_conn_t *c, const char *data, size_t len)
{
    bench_tp_t *tp = tp_of(c);
    tp->rd = (const uint8_t *)data;
    tp->rd_len = len;
    while (c->state == BC_READY || c->state == BC_HELLO) {
        struct wslay_frame_iocb io;
        memset(&io, 0, sizeof io);
        ssize_t r = wslay_frame_recv(tp->fr, &io);
        if (r == WSLAY_ERR_WANT_READ) break;
        if (r < 0 || io.mask || io.rsv) {
            drop(c, "websocket protocol error from the node (%zd)", r);
            break;
        }
        if (io.data_length == 0 && io.payload_length != 0) continue;
        on_chunk(c, &io);
    }
    tp = tp_of(c);
    if (tp) tp->rd_len = 0;
}

/* ---- reading: the upgrade ---- */

static int hp_field(http_parser *p, const char *at, size_t n)
{
    bench_conn_t *c = p->data;
    bench_tp_t *tp = tp_of(c);
    if (tp->in_value) tp->hdr_len = 0;
    tp->in_value = false;
    size_t k = FB_MIN(n, sizeof tp->hdr - 1 - tp->hdr_len);
    memcpy(tp->hdr + tp->hdr_len, at, k);
    tp->hdr_len += k;
    tp->hdr[tp->hdr_len] = 0;
    return 0;
}

static int hp_value(http_parser *p, const char *at, size_t n)
{
    bench_conn_t *c = p->data;
    bench_tp_t *tp = tp_of(c);
    if (!tp->in_value) {
        tp->is_accept = !strcasecmp(tp->hdr, "sec-websocket-accept");
        if (tp->is_accept) tp->accept_len = 0;
    }
    tp->in_value = true;
    if (tp->is_accept && tp->accept_len + n < sizeof tp->accept) {
        memcpy(tp->accept + tp->accept_len, at, n);
        tp->accept_len += n;
        tp->accept[tp->accept_len] = 0;
    }
    return 0;
}

static int hp_headers_complete(http_parser *p)
{
    bench_conn_t *c = p->data;
    bench_tp_t *tp = tp_of(c);
    tp->headers_done = true;
    tp->accept_ok = !strcmp(tp->accept, tp->expect);
    return 1; /* no body after a 101 */
}

static const http_parser_settings hp_settings = {
    .on_header_field = hp_field,
    .on_header_value = hp_value,
    .on_headers_complete = hp_headers_complete,
};

static const struct wslay_frame_callbacks fr_callbacks = {fr_send, fr_recv, fr_genmask};

static void feed_http(bench_conn_t *c, const char *data, size_t len)
{
    bench_tp_t *tp = tp_of(c);
    size_t n = http_parser_execute(&tp->hp, &hp_settings, data, len);
    if (!tp->headers_done) {
        if (HTTP_PARSER_ERRNO(&tp->hp) != HPE_OK)
            drop(c, "bad upgrade response: %s", http_errno_name(HTTP_PARSER_ERRNO(&tp->hp)));
        return;
    }
    if (tp->hp.status_code != 101 || !tp->accept_ok) {
        drop(c, "upgrade refused (status %u%s)", tp->hp.status_code,
             tp->accept_ok ? "" : ", bad accept key");
        return;
    }
    if (wslay_frame_context_init(&tp->fr, &fr_callbacks, c) != 0) {
        drop(c, "out of memory");
        return;
    }
    c->state = BC_HELLO;
    if (n < len) feed_ws(c, data + n, len - n);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    bench_conn_t *c = h->data;
    *buf = uv_buf_init(c->w->readbuf, sizeof c->w->readbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    bench_conn_t *c = s->data;
    if (n < 0) {
        drop(c, "%s", n == UV_EOF ? "closed by the node" : uv_strerror((int)n));
        return;
    }
    if (n == 0 || c->state == BC_CLOSING) return;
    if (c->state == BC_UPGRADING)
        feed_http(c, buf->base, (size_t)n);
    else
        feed_ws(c, buf->base, (size_t)n);
}

void bench_conn_resume(bench_conn_t *c)
{
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) drop(c, "read again failed");
}

/* ---- connecting ---- */

static void make_key(bench_tp_t *tp, char key[32])
{
    uint8_t raw[16], digest[SHA_DIGEST_LENGTH];
    randombytes_buf(raw, sizeof raw);
    EVP_EncodeBlock((unsigned char *)key, raw, sizeof raw);
    char cat[80];
    int n = snprintf(cat, sizeof cat, "%s%s", key, WS_GUID);
    SHA1((const unsigned char *)cat, (size_t)n, digest);
    EVP_EncodeBlock((unsigned char *)tp->expect, digest, sizeof digest);
}

static void on_connect(uv_connect_t *req, int status)
{
    bench_conn_t *c = req->data;
    if (c->state != BC_CONNECTING) return;
    if (status < 0) {
        drop(c, "connect: %s", uv_strerror(status));
        return;
    }
    bench_tp_t *tp = tp_of(c);
    uv_tcp_nodelay(&c->tcp, 1);
    c->state = BC_UPGRADING;
    char key[32];
    make_key(tp, key);
    const struct sockaddr_in *a = &c->w->proc->targets[c->idx % c->w->proc->n_targets];
    char host[INET_ADDRSTRLEN];
    uv_ip4_name(a, host, sizeof host);
    fb_buf_appendf(&c->out,
                   "GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\nUser-Agent: firebreak-bench/%s\r\n\r\n",
                   host, ntohs(a->sin_port), key, FB_VERSION);
    mark_dirty(c);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) drop(c, "read: %s", uv_strerror(rc));
}

int bench_conn_start(bench_conn_t *c)
{
    bench_proc_t *p = c->w->proc;
    bench_tp_t *tp = fb_calloc(1, sizeof *tp);
    http_parser_init(&tp->hp, HTTP_RESPONSE);
    tp->hp.data = c;
    c->t = tp;
    c->close_code = 0;
    c->gen++;
    c->started_ns = bench_now_ns();
    int rc = uv_tcp_init_ex(&c->w->loop, &c->tcp, AF_INET);
    if (rc < 0) {
        fb_free(tp);
        c->t = NULL;
        return rc;
    }
    c->tcp.data = c;
    c->state = BC_CONNECTING;
    if (p->bind_source) {
        /* The port is chosen at connect time, per destination: one source
         * address then carries more than the ephemeral range. */
        uv_os_fd_t fd;
        int one = 1;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        rc = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&p->source, 0);
    }
    if (rc == 0) {
        c->creq.data = c;
        rc = uv_tcp_connect(&c->creq, &c->tcp,
                            (const struct sockaddr *)&p->targets[c->idx % p->n_targets],
                            on_connect);
    }
    if (rc < 0) drop(c, "connect: %s", uv_strerror(rc));
    return 0;
}
