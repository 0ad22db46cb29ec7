/* The node frees a connection's wslay context whenever the connection is
 * between messages (src/server/conn.c). These tests feed it the cases where
 * "between messages" is easy to get wrong: a frame one byte per read, a
 * header without its payload, a fragmented message spread over many reads
 * with a ping between its fragments, and a fragmented message that grows
 * past max_frame_bytes across pauses (it must still be refused with 1009).
 * Frames are made by hand here on purpose: this is the peer under test.
 * SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/node.h"

#define IO_MS 5000

enum { OP_CONT = 0, OP_TEXT = 1, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10 };

typedef struct {
    int fd;
    uint8_t buf[1 << 16];
    size_t len;
} peer_t;

static void pause_ms(int ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

static bool put(peer_t *p, const void *data, size_t n)
{
    return send(p->fd, data, n, MSG_NOSIGNAL) == (ssize_t)n;
}

/* A masked client frame; `pieces` writes with a pause between them. False
 * when the node hung up before it was all written. */
static bool frame(peer_t *p, int opcode, bool fin, const char *payload, size_t n, int pieces)
{
    uint8_t f[2048];
    size_t h = 0;
    assert_true(n < sizeof f - 16);
    f[h++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    if (n < 126) {
        f[h++] = (uint8_t)(0x80 | n);
    } else {
        f[h++] = 0x80 | 126;
        f[h++] = (uint8_t)(n >> 8);
        f[h++] = (uint8_t)n;
    }
    static const uint8_t mask[4] = {0x11, 0x22, 0x33, 0x44};
    memcpy(f + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < n; i++) f[h + i] = (uint8_t)payload[i] ^ mask[i % 4];
    size_t total = h + n, step = (total + (size_t)pieces - 1) / (size_t)pieces;
    for (size_t off = 0; off < total; off += step) {
        if (!put(p, f + off, step < total - off ? step : total - off)) return false;
        if (pieces > 1) pause_ms(3);
    }
    return true;
}

/* Next server frame: its opcode and payload (NUL-terminated in buf). */
static int next_frame(peer_t *p, char **payload, size_t *n)
{
    for (;;) {
        if (p->len >= 2) {
            size_t len = p->buf[1] & 0x7f, h = 2;
            if (len == 126 && p->len >= 4) {
                len = ((size_t)p->buf[2] << 8) | p->buf[3];
                h = 4;
            }
            if (len != 126 && len < 127 && p->len >= h + len) {
                static char out[1 << 16];
                int op = p->buf[0] & 0x0f;
                memcpy(out, p->buf + h, len);
                out[len] = 0;
                memmove(p->buf, p->buf + h + len, p->len - h - len);
                p->len -= h + len;
                *payload = out;
                *n = len;
                return op;
            }
        }
        struct pollfd pf = {.fd = p->fd, .events = POLLIN};
        if (poll(&pf, 1, IO_MS) <= 0) return -1;
        ssize_t r = recv(p->fd, p->buf + p->len, sizeof p->buf - p->len, 0);
        if (r <= 0) return -2;
        p->len += (size_t)r;
    }
}

static json_t *next_json(peer_t *p)
{
    char *s;
    size_t n;
    int op = next_frame(p, &s, &n);
    if (op != OP_TEXT) fail_msg("expected a text frame, got opcode %d", op);
    json_t *j = json_loadb(s, n, 0, NULL);
    assert_non_null(j);
    return j;
}

static void expect_ok(peer_t *p, int id)
{
    json_t *j = next_json(p);
    assert_int_equal(json_integer_value(json_object_get(j, "id")), id);
    assert_true(json_is_true(json_object_get(j, "ok")));
    json_decref(j);
}

static void ws_open(peer_t *p, const char *addr)
{
    memset(p, 0, sizeof *p);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    p->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(p->fd >= 0);
    int one = 1;
    setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    assert_int_equal(connect(p->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    const char req[] = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_true(put(p, req, sizeof req - 1));
    for (;;) { /* the response head, then the frames */
        uint8_t *end = memmem(p->buf, p->len, "\r\n\r\n", 4);
        if (end) {
            assert_memory_equal(p->buf, "HTTP/1.1 101", 12);
            size_t head = (size_t)(end - p->buf) + 4;
            memmove(p->buf, p->buf + head, p->len - head);
            p->len -= head;
            break;
        }
        struct pollfd pf = {.fd = p->fd, .events = POLLIN};
        assert_true(poll(&pf, 1, IO_MS) > 0);
        ssize_t r = recv(p->fd, p->buf + p->len, sizeof p->buf - p->len, 0);
        assert_true(r > 0);
        p->len += (size_t)r;
    }
    json_t *hello = next_json(p);
    assert_string_equal(json_string_value(json_object_get(hello, "event")), "hello");
    json_decref(hello);
}

static void test_split_frames_and_fragments(void **state)
{
    fb_test_node_t n = {0};
    assert_int_equal(fb_test_node_start(&n), 0);
    peer_t *p = malloc(sizeof *p);
    ws_open(p, n.addr);
    /* one byte per read: the context must survive every partial header */
    const char hello[] = "{\"id\":1,\"op\":\"hello\",\"protocol\":1}";
    assert_true(frame(p, OP_TEXT, true, hello, sizeof hello - 1, (int)sizeof hello + 6));
    expect_ok(p, 1);
    /* a header alone, the payload after a pause */
    const char ping2[] = "{\"id\":2,\"op\":\"ping\"}";
    assert_true(frame(p, OP_TEXT, true, ping2, sizeof ping2 - 1, 2));
    expect_ok(p, 2);
    /* a fragmented message over many reads, a ping between its fragments */
    const char *parts[] = {"{\"id\":3,", "\"op\":", "\"ping\"}"};
    assert_true(frame(p, OP_TEXT, false, parts[0], strlen(parts[0]), 3));
    pause_ms(20);
    assert_true(frame(p, OP_PING, true, "abc", 3, 2));
    char *s;
    size_t len;
    assert_int_equal(next_frame(p, &s, &len), OP_PONG);
    assert_string_equal(s, "abc");
    pause_ms(20);
    assert_true(frame(p, OP_CONT, false, parts[1], strlen(parts[1]), 1));
    pause_ms(20);
    assert_true(frame(p, OP_CONT, true, parts[2], strlen(parts[2]), 4));
    expect_ok(p, 3);
    /* two whole frames in one write, then idle, then more */
    uint8_t two[256];
    size_t k = 0;
    for (int id = 4; id <= 5; id++) {
        char body[64];
        int bl = snprintf(body, sizeof body, "{\"id\":%d,\"op\":\"ping\"}", id);
        two[k++] = 0x81;
        two[k++] = (uint8_t)(0x80 | bl);
        memset(two + k, 0, 4); /* a zero mask */
        k += 4;
        memcpy(two + k, body, (size_t)bl);
        k += (size_t)bl;
    }
    assert_true(put(p, two, k));
    expect_ok(p, 4);
    expect_ok(p, 5);
    pause_ms(50);
    assert_true(frame(p, OP_TEXT, true, ping2, sizeof ping2 - 1, 1));
    expect_ok(p, 2);
    close(p->fd);
    free(p);
    fb_test_node_cleanup(&n);
}

/* max_frame_bytes counts the reassembled message even when its fragments
 * come far apart: the context is never released in the middle of one. */
static void test_fragmented_message_still_bounded(void **state)
{
    fb_test_node_t n = {.extra = {"--set", "max_frame_bytes=1024", NULL}};
    assert_int_equal(fb_test_node_start(&n), 0);
    peer_t *p = malloc(sizeof *p);
    ws_open(p, n.addr);
    char chunk[600];
    memset(chunk, 'x', sizeof chunk);
    memcpy(chunk, "{\"id\":1,\"op\":\"ping\",\"pad\":\"", 27);
    assert_true(frame(p, OP_TEXT, false, chunk, sizeof chunk, 2));
    pause_ms(50);
    /* past the bound with this one: the node may hang up while it comes */
    if (frame(p, OP_CONT, false, chunk + 27, sizeof chunk - 27, 1)) {
        pause_ms(50);
        frame(p, OP_CONT, true, "\"}", 2, 1);
    }
    char *s;
    size_t len;
    int op;
    while ((op = next_frame(p, &s, &len)) == OP_TEXT) {}
    assert_int_equal(op, OP_CLOSE);
    assert_true(len >= 2);
    assert_int_equal(((uint8_t)s[0] << 8) | (uint8_t)s[1], 1009);
    close(p->fd);
    free(p);
    fb_test_node_cleanup(&n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_frames_and_fragments),
        cmocka_unit_test(test_fragmented_message_still_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
