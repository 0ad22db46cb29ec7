/* One client connection's bytes: TCP connect, the HTTP upgrade to /ws (parsed
 * with http-parser, Sec-WebSocket-Accept checked) and WebSocket framing and
 * masking by wslay. It hands whole text messages to client.c and never looks
 * inside them; it never hand-writes a WebSocket frame.
 * SPDX-License-Identifier: MIT */
#include "client/client_int.h"

#include <http_parser.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <wslay/wslay.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum { PH_CONNECTING, PH_UPGRADING, PH_OPEN };

struct fb_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    fb_client_t *c; /* NULL once detached: nothing may call into the client */
    int phase;
    char addr[300];

    http_parser hp;
    http_parser_settings hps;
    size_t http_bytes;
    bool hdr_in_value, hdr_is_accept, accept_ok, headers_done;
    fb_buf_t hdr_name, accept_val;
    char expect_accept[32];

    wslay_event_context_ptr ws;
    const uint8_t *rd; /* bytes being fed to wslay_event_recv */
    size_t rd_len;
    bool in_recv; /* flushes wait until the read callback is done */
    fb_buf_t out; /* gathered by wslay's send callback, one uv_write */
};

typedef struct {
    uv_write_t req;
    char *data;
} write_req_t;

static void conn_fail(fb_conn_t *conn, int err, int close_code);

/* ---- closing ---- */

static void on_tcp_closed(uv_handle_t *h)
{
    fb_conn_t *conn = h->data;
    if (conn->ws) wslay_event_context_free(conn->ws);
    fb_buf_free(&conn->hdr_name);
    fb_buf_free(&conn->accept_val);
    fb_buf_free(&conn->out);
    fb_free(conn);
}

void fb_conn_abort(fb_conn_t *conn)
{
    if (!conn || !conn->c) return;
    conn->c = NULL;
    uv_close((uv_handle_t *)&conn->tcp, on_tcp_closed);
}

/* The connection is of no more use: tell the client once, then close. */
static void conn_fail(fb_conn_t *conn, int err, int close_code)
{
    fb_client_t *c = conn->c;
    if (!c) return;
    fb_conn_abort(conn);
    fb_client__on_lost(c, err, close_code);
}

/* ---- writing ---- */

static void on_written(uv_write_t *req, int status)
{
    write_req_t *w = (write_req_t *)req;
    fb_conn_t *conn = req->handle->data;
    fb_free(w->data);
    fb_free(w);
    if (status < 0 && status != UV_ECANCELED) conn_fail(conn, FB_EUNAVAIL, 0);
}

static int conn_flush(fb_conn_t *conn)
{
    if (!conn->c || conn->in_recv || !conn->ws) return 0;
    if (wslay_event_send(conn->ws) != 0) return FB_EIO;
    if (!conn->out.len) return 0;
    write_req_t *w = fb_malloc(sizeof *w);
    w->data = conn->out.data;
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)conn->out.len);
    conn->out = (fb_buf_t){0};
    int rc = uv_write(&w->req, (uv_stream_t *)&conn->tcp, &buf, 1, on_written);
    if (rc < 0) {
        fb_free(w->data);
        fb_free(w);
        return FB_EIO;
    }
    return 0;
}

static void flush_or_fail(fb_conn_t *conn)
{
    if (conn_flush(conn)) conn_fail(conn, FB_EUNAVAIL, 0);
}

int fb_conn_send_text(fb_conn_t *conn, const char *data, size_t len)
{
    if (!conn || !conn->c || conn->phase != PH_OPEN) return FB_EUNAVAIL;
    struct wslay_event_msg msg = {WSLAY_TEXT_FRAME, (const uint8_t *)data, len};
    if (wslay_event_queue_msg(conn->ws, &msg) != 0) return FB_EUNAVAIL;
    /* called from the app's calls: report, never fail the connection here */
    return conn_flush(conn) ? FB_EUNAVAIL : 0;
}

int fb_conn_ping(fb_conn_t *conn)
{
    if (!conn || !conn->c || conn->phase != PH_OPEN) return FB_EUNAVAIL;
    struct wslay_event_msg msg = {WSLAY_PING, (const uint8_t *)"fb", 2};
    if (wslay_event_queue_msg(conn->ws, &msg) != 0) return FB_EUNAVAIL;
    return conn_flush(conn) ? FB_EUNAVAIL : 0;
}

/* ---- wslay callbacks ---- */

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *ud)
{
    fb_conn_t *conn = ud;
    if (!conn->rd_len) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = FB_MIN(len, conn->rd_len);
    memcpy(buf, conn->rd, n);
    conn->rd += n;
    conn->rd_len -= n;
    return (ssize_t)n;
}

/* Everything is accepted at once: the stream's own queue holds it. */
static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                          void *ud)
{
    fb_conn_t *conn = ud;
    fb_buf_append(&conn->out, data, len);
    return (ssize_t)len;
}

static int ws_genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud)
{
    randombytes_buf(buf, len);
    return 0;
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *ud)
{
    fb_conn_t *conn = ud;
    if (!conn->c) return;
    if (arg->opcode == WSLAY_TEXT_FRAME) {
        fb_client__on_text(conn->c, (const char *)arg->msg, arg->msg_length);
    } else if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        conn_fail(conn, FB_EUNAVAIL, arg->status_code);
    } else if (arg->opcode == WSLAY_BINARY_FRAME) {
        FB_WARN("client", "binary frame from %s ignored", conn->addr);
    }
    /* pongs only prove the peer is alive; client.c counts every byte read */
}

static const struct wslay_event_callbacks ws_callbacks = {
    ws_recv_cb, ws_send_cb, ws_genmask_cb, NULL, NULL, NULL, ws_msg_cb,
};

/* ---- HTTP upgrade ---- */

static void header_done(fb_conn_t *conn)
{
    if (conn->hdr_is_accept) {
        conn->accept_ok =
            conn->accept_val.len == strlen(conn->expect_accept) &&
            memcmp(conn->accept_val.data, conn->expect_accept, conn->accept_val.len) == 0;
    }
    fb_buf_reset(&conn->hdr_name);
    fb_buf_reset(&conn->accept_val);
    conn->hdr_is_accept = false;
}

static int hp_header_field(http_parser *p, const char *at, size_t len)
{
    fb_conn_t *conn = p->data;
    if (conn->hdr_in_value) header_done(conn);
    conn->hdr_in_value = false;
    fb_buf_append(&conn->hdr_name, at, len);
    return 0;
}

static int hp_header_value(http_parser *p, const char *at, size_t len)
{
    fb_conn_t *conn = p->data;
    if (!conn->hdr_in_value) {
        conn->hdr_is_accept =
            conn->hdr_name.len == strlen("sec-websocket-accept") &&
            strncasecmp(conn->hdr_name.data, "sec-websocket-accept", conn->hdr_name.len) == 0;
    }
    conn->hdr_in_value = true;
    if (conn->hdr_is_accept) fb_buf_append(&conn->accept_val, at, len);
    return 0;
}

static int hp_headers_complete(http_parser *p)
{
    fb_conn_t *conn = p->data;
    if (conn->hdr_in_value) header_done(conn);
    conn->headers_done = true;
    return 1; /* no body after a 101 */
}

static void make_key(fb_conn_t *conn, char key[32])
{
    uint8_t raw[16], digest[SHA_DIGEST_LENGTH];
    randombytes_buf(raw, sizeof raw);
    EVP_EncodeBlock((unsigned char *)key, raw, sizeof raw);
    char cat[64];
    int n = snprintf(cat, sizeof cat, "%s%s", key, WS_GUID);
    SHA1((const unsigned char *)cat, (size_t)n, digest);
    EVP_EncodeBlock((unsigned char *)conn->expect_accept, digest, sizeof digest);
}

static int send_upgrade(fb_conn_t *conn)
{
    char key[32];
    make_key(conn, key);
    fb_buf_appendf(&conn->out,
                   "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\nUser-Agent: firebreak-client/%s\r\n\r\n",
                   conn->addr, key, FB_VERSION);
    write_req_t *w = fb_malloc(sizeof *w);
    w->data = conn->out.data;
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)conn->out.len);
    conn->out = (fb_buf_t){0};
    int rc = uv_write(&w->req, (uv_stream_t *)&conn->tcp, &buf, 1, on_written);
    if (rc < 0) {
        fb_free(w->data);
        fb_free(w);
        return FB_EIO;
    }
    return 0;
}

/* Returns how many bytes the upgrade response took, or -1 on failure; the
 * rest of the chunk already belongs to the WebSocket. */
static ssize_t feed_http(fb_conn_t *conn, const char *data, size_t len)
{
    size_t n = http_parser_execute(&conn->hp, &conn->hps, data, len);
    conn->http_bytes += n;
    if (HTTP_PARSER_ERRNO(&conn->hp) != HPE_OK && !conn->headers_done) {
        FB_WARN("client", "%s: bad upgrade response (%s)", conn->addr,
                http_errno_name(HTTP_PARSER_ERRNO(&conn->hp)));
        return -1;
    }
    if (!conn->headers_done) {
        if (conn->http_bytes > FB_CLIENT_MAX_HTTP_BYTES) return -1;
        return (ssize_t)n;
    }
    if (conn->hp.status_code != 101 || !conn->accept_ok) {
        FB_WARN("client", "%s: upgrade refused (status %u%s)", conn->addr, conn->hp.status_code,
                conn->accept_ok ? "" : ", bad accept key");
        return -1;
    }
    if (wslay_event_context_client_init(&conn->ws, &ws_callbacks, conn) != 0) return -1;
    wslay_event_config_set_max_recv_msg_length(conn->ws, FB_CLIENT_MAX_REPLY_BYTES);
    conn->phase = PH_OPEN;
    return (ssize_t)n;
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    buf->base = fb_malloc(suggested);
    buf->len = suggested;
}

static void feed_ws(fb_conn_t *conn, const char *data, size_t len)
{
    conn->rd = (const uint8_t *)data;
    conn->rd_len = len;
    conn->in_recv = true;
    int rc = wslay_event_recv(conn->ws);
    conn->in_recv = false;
    if (!conn->c) return;
    if (rc != 0) {
        conn_fail(conn, FB_EUNAVAIL, 0);
        return;
    }
    flush_or_fail(conn);
    if (conn->c && !wslay_event_want_read(conn->ws) && !wslay_event_want_write(conn->ws))
        conn_fail(conn, FB_EUNAVAIL, 0);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    fb_conn_t *conn = s->data;
    if (nread < 0) {
        conn_fail(conn, FB_EUNAVAIL, 0);
        goto cleanup;
    }
    if (!conn->c || nread == 0) goto cleanup;
    conn->c->last_rx_ms = (int64_t)uv_now(conn->c->loop);
    const char *p = buf->base;
    size_t len = (size_t)nread;
    if (conn->phase == PH_UPGRADING) {
        ssize_t used = feed_http(conn, p, len);
        if (used < 0) {
            conn_fail(conn, FB_EUNAVAIL, 0);
            goto cleanup;
        }
        p += used;
        len -= (size_t)used;
        if (conn->phase != PH_OPEN) goto cleanup;
        fb_client__on_open(conn->c);
        if (!conn->c) goto cleanup;
    }
    if (len) feed_ws(conn, p, len);
cleanup:
    fb_free(buf->base);
}

/* ---- connecting ---- */

static void on_connected(uv_connect_t *req, int status)
{
    fb_conn_t *conn = req->data;
    if (!conn->c) return;
    if (status < 0) {
        FB_DEBUG("client", "%s: connect: %s", conn->addr, uv_strerror(status));
        conn_fail(conn, FB_EUNAVAIL, 0);
        return;
    }
    uv_tcp_nodelay(&conn->tcp, 1);
    conn->phase = PH_UPGRADING;
    if (send_upgrade(conn) || uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read) < 0)
        conn_fail(conn, FB_EUNAVAIL, 0);
}

/* Hostnames other than IP literals are resolved with a blocking getaddrinfo:
 * tools that care (bench) pass IP addresses. */
static int resolve(const char *addr, struct sockaddr_storage *ss)
{
    char host[256], port_s[8];
    int port;
    if (fb_client_addr_split(addr, host, sizeof host, &port)) return FB_EINVAL;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) return 0;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    snprintf(port_s, sizeof port_s, "%d", port);
    if (getaddrinfo(host, port_s, &hints, &res) != 0 || !res) return FB_EUNAVAIL;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

fb_conn_t *fb_conn_start(fb_client_t *c, const char *addr, int *err)
{
    struct sockaddr_storage ss;
    *err = resolve(addr, &ss);
    if (*err) return NULL;
    fb_conn_t *conn = fb_calloc(1, sizeof *conn);
    conn->c = c;
    conn->phase = PH_CONNECTING;
    snprintf(conn->addr, sizeof conn->addr, "%s", addr);
    http_parser_init(&conn->hp, HTTP_RESPONSE);
    conn->hp.data = conn;
    http_parser_settings_init(&conn->hps);
    conn->hps.on_header_field = hp_header_field;
    conn->hps.on_header_value = hp_header_value;
    conn->hps.on_headers_complete = hp_headers_complete;
    uv_tcp_init(c->loop, &conn->tcp);
    conn->tcp.data = conn;
    conn->connect_req.data = conn;
    int rc = uv_tcp_connect(&conn->connect_req, &conn->tcp, (struct sockaddr *)&ss, on_connected);
    if (rc < 0) {
        FB_DEBUG("client", "%s: connect: %s", addr, uv_strerror(rc));
        fb_conn_abort(conn);
        *err = FB_EUNAVAIL;
        return NULL;
    }
    return conn;
}
