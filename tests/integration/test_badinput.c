/* Protocol tests with bad input against a real node: every malformed, oversized,
 * out-of-order or unauthorised request gets its documented error or close code,
 * nothing of it is stored, and a well-behaved pair of clients keeps chatting.
 * Also: sends and reads answered the same, byte for byte, whether the node
 * read them on its fast path or with jansson.
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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "client/client.h"
#include "common/itest.h"
#include "common/node.h"

#define PASSWORD "correct horse"
#define IO_MS 5000 /* the longest any single reply may take */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- plain TCP to the node ---- */

static int tcp_open(const char *addr, int rcvbuf)
{
    const char *colon = strrchr(addr, ':');
    if (!colon) return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Writes everything or fails (the peer may hang up: that is not a crash). */
static int write_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    int64_t deadline = mono_ms() + IO_MS;
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            s += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR) return -1;
        if (mono_ms() > deadline) return -1;
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        poll(&pf, 1, 50);
    }
    return 0;
}

/* ---- a minimal raw WebSocket client: hand-made masked frames ---- */

typedef struct {
    int fd;
    char *buf;
    size_t len, cap;
    bool eof;
    int close_code; /* of a close frame already read: >= 0; -1 before */
} raw_t;

enum { OP_CONT = 0, OP_TEXT = 1, OP_BIN = 2, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10 };
enum { RAW_TIMEOUT = -1, RAW_EOF = -2 };

/* Reads what is there (waiting until deadline for at least one byte). */
static bool raw_fill(raw_t *r, int64_t deadline)
{
    if (r->eof) return false;
    if (r->cap - r->len < 65536) {
        if (r->cap > (64u << 20)) return false; /* a test bound, never reached */
        r->cap = r->cap ? r->cap * 2 : 131072;
        r->buf = realloc(r->buf, r->cap);
        assert_non_null(r->buf);
    }
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0) return false;
        struct pollfd pf = {.fd = r->fd, .events = POLLIN};
        int pr = poll(&pf, 1, (int)FB_MIN(left, 100));
        if (pr <= 0) continue;
        ssize_t n = recv(r->fd, r->buf + r->len, r->cap - r->len, 0);
        if (n > 0) {
            r->len += (size_t)n;
            return true;
        }
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        r->eof = true;
        return false;
    }
}

static void raw_close(raw_t *r)
{
    if (r->fd >= 0) close(r->fd);
    free(r->buf);
    memset(r, 0, sizeof *r);
    r->fd = -1;
    r->close_code = -1;
}

static int raw_send_frame(raw_t *r, int opcode, const void *payload, size_t n)
{
    uint8_t head[14];
    size_t h = 0;
    head[h++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        head[h++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        head[h++] = 0x80 | 126;
        head[h++] = (uint8_t)(n >> 8);
        head[h++] = (uint8_t)n;
    } else {
        head[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            head[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    uint8_t mask[4] = {(uint8_t)rand(), (uint8_t)rand(), (uint8_t)rand(), (uint8_t)rand()};
    memcpy(head + h, mask, 4);
    h += 4;
    uint8_t *frame = malloc(h + n + 1);
    assert_non_null(frame);
    memcpy(frame, head, h);
    const uint8_t *p = payload;
    for (size_t i = 0; i < n; i++)
        frame[h + i] = p[i] ^ mask[i % 4];
    int rc = write_all(r->fd, frame, h + n);
    free(frame);
    return rc;
}

static int raw_send_text(raw_t *r, const char *s)
{
    return raw_send_frame(r, OP_TEXT, s, strlen(s));
}

/* Next whole frame from the server: its opcode, RAW_TIMEOUT or RAW_EOF.
 * *payload is malloc'd and NUL-terminated. */
static int raw_next_frame(raw_t *r, char **payload, size_t *plen, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    *payload = NULL;
    *plen = 0;
    for (;;) {
        const uint8_t *b = (const uint8_t *)r->buf;
        if (r->len >= 2) {
            size_t h = 2;
            uint64_t n = b[1] & 0x7f;
            if (n == 126 && r->len >= 4) {
                n = (uint64_t)b[2] << 8 | b[3];
                h = 4;
            } else if (n == 127 && r->len >= 10) {
                n = 0;
                for (int i = 0; i < 8; i++)
                    n = n << 8 | b[2 + i];
                h = 10;
            } else if (n >= 126) {
                h = 0; /* length bytes not all here yet */
            }
            if (h && r->len >= h + n) {
                int op = b[0] & 0x0f;
                *payload = malloc(n + 1);
                assert_non_null(*payload);
                memcpy(*payload, b + h, n);
                (*payload)[n] = 0;
                *plen = n;
                memmove(r->buf, r->buf + h + n, r->len - h - n);
                r->len -= h + n;
                return op;
            }
        }
        if (!raw_fill(r, deadline)) return r->eof ? RAW_EOF : RAW_TIMEOUT;
    }
}

/* Next text frame's bytes (malloc'd, *n long; events and replies alike);
 * NULL on close, EOF or timeout. Pings are answered. */
static char *raw_next_text(raw_t *r, size_t *n, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    for (int guard = 0; guard < 100000; guard++) {
        char *p;
        int op = raw_next_frame(r, &p, n, (int)FB_MAX(1, deadline - mono_ms()));
        if (op == OP_CLOSE) r->close_code = *n >= 2 ? ((uint8_t)p[0] << 8 | (uint8_t)p[1]) : 0;
        if (op < 0 || op == OP_CLOSE) {
            free(p);
            return NULL;
        }
        if (op == OP_TEXT) return p;
        if (op == OP_PING) raw_send_frame(r, OP_PONG, p, *n);
        free(p);
        if (mono_ms() >= deadline) return NULL;
    }
    return NULL;
}

/* Next text frame as JSON (events and replies alike); NULL on close,
 * EOF or timeout. */
static json_t *raw_next_json(raw_t *r, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    for (int guard = 0; guard < 100000; guard++) {
        size_t n;
        char *p = raw_next_text(r, &n, (int)FB_MAX(1, deadline - mono_ms()));
        if (!p) return NULL;
        json_t *j = json_loadb(p, n, 0, NULL);
        free(p);
        if (j) return j;
        if (mono_ms() >= deadline) return NULL;
    }
    return NULL;
}

/* The next reply's exact bytes (malloc'd), skipping pushed events. */
static char *raw_reply_bytes(raw_t *r, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    for (int guard = 0; guard < 100000; guard++) {
        size_t n;
        char *p = raw_next_text(r, &n, (int)FB_MAX(1, deadline - mono_ms()));
        if (!p) return NULL;
        json_t *j = json_loadb(p, n, 0, NULL);
        bool reply = json_object_get(j, "id") != NULL;
        json_decref(j);
        if (reply) return p;
        free(p);
    }
    return NULL;
}

/* Next reply (a frame with "id"), skipping pushed events. */
static json_t *raw_reply(raw_t *r, int timeout_ms)
{
    char *p = raw_reply_bytes(r, timeout_ms);
    json_t *j = p ? json_loads(p, 0, NULL) : NULL;
    free(p);
    return j;
}

/* Reads until the server closes: its close code, 0 for a hang-up without a
 * close frame (or one without a code), RAW_TIMEOUT when it stays open. */
static int raw_wait_close(raw_t *r, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    if (r->close_code >= 0) return r->close_code;
    for (int guard = 0; guard < 1000000; guard++) {
        char *p;
        size_t n;
        int op = raw_next_frame(r, &p, &n, (int)FB_MAX(1, deadline - mono_ms()));
        if (op == OP_CLOSE) {
            int code = n >= 2 ? ((uint8_t)p[0] << 8 | (uint8_t)p[1]) : 0;
            free(p);
            return code;
        }
        free(p);
        if (op == RAW_EOF) return 0;
        if (op == RAW_TIMEOUT || mono_ms() >= deadline) return RAW_TIMEOUT;
    }
    return RAW_TIMEOUT;
}

/* TCP, the upgrade and the server's hello event; no hello request yet. */
static void raw_open_buf(raw_t *r, const char *addr, int rcvbuf)
{
    memset(r, 0, sizeof *r);
    r->close_code = -1;
    r->fd = tcp_open(addr, rcvbuf);
    assert_true(r->fd >= 0);
    static const char req[] =
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n";
    assert_int_equal(write_all(r->fd, req, sizeof req - 1), 0);
    int64_t deadline = mono_ms() + IO_MS;
    char *end = NULL;
    while (!(end = memmem(r->buf ? r->buf : "", r->len, "\r\n\r\n", 4)))
        assert_true(raw_fill(r, deadline));
    assert_memory_equal(r->buf, "HTTP/1.1 101", 12);
    size_t head = (size_t)(end - r->buf) + 4;
    memmove(r->buf, r->buf + head, r->len - head);
    r->len -= head;
    json_t *hello = raw_next_json(r, IO_MS);
    assert_non_null(hello);
    assert_string_equal(json_string_value(json_object_get(hello, "event")), "hello");
    assert_int_equal(json_integer_value(json_object_get(hello, "protocol")), 1);
    json_decref(hello);
}

static void raw_open(raw_t *r, const char *addr)
{
    raw_open_buf(r, addr, 0);
}

/* ---- reply checks ---- */

static const char *err_code(json_t *reply)
{
    return json_string_value(json_object_get(json_object_get(reply, "error"), "code"));
}

/* The id a request frame should get back: its own when usable, else null. */
static json_t *expected_id(const char *frame, size_t n)
{
    json_t *o = json_loadb(frame, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
    json_t *id = json_object_get(o, "id"), *out = json_null();
    if (json_is_integer(id) && json_integer_value(id) >= 0 &&
        json_integer_value(id) <= (json_int_t)1 << 53)
        out = json_incref(id);
    else if (json_is_string(id) && json_string_length(id) <= 64)
        out = json_incref(id);
    json_decref(o);
    return out;
}

static void check_error(json_t *reply, const char *code, json_t *want_id, const char *what,
                        const char *file, int line)
{
    char *d = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
    json_t *err = json_object_get(reply, "error");
    bool ok = reply && json_is_false(json_object_get(reply, "ok")) && err_code(reply) &&
              !strcmp(err_code(reply), code) && json_is_string(json_object_get(err, "message")) &&
              json_string_length(json_object_get(err, "message")) > 0 &&
              json_is_boolean(json_object_get(err, "retryable")) &&
              json_equal(json_object_get(reply, "id"), want_id);
    if (!ok) {
        char *w = json_dumps(want_id, JSON_ENCODE_ANY);
        print_error("%s:%d: %.200s\n  expected error %s with id %s\n  got %s\n", file, line, what,
                    code, w, d ? d : "(no reply)");
        free(w);
        free(d);
        _fail(file, line);
    }
    free(d);
}

/* Sends one text frame and checks its error reply. */
#define EXPECT_ERR(r, frame, code) expect_err_(r, frame, strlen(frame), code, __FILE__, __LINE__)
static void expect_err_(raw_t *r, const char *frame, size_t n, const char *code, const char *file,
                        int line)
{
    raw_send_frame(r, OP_TEXT, frame, n);
    json_t *reply = raw_reply(r, IO_MS);
    json_t *want = expected_id(frame, n);
    check_error(reply, code, want, frame, file, line);
    json_decref(want);
    json_decref(reply);
}

/* Sends a request that must succeed; returns its reply. */
#define EXPECT_OK(r, frame) expect_ok_(r, frame, __FILE__, __LINE__)
static json_t *expect_ok_(raw_t *r, const char *frame, const char *file, int line)
{
    raw_send_text(r, frame);
    json_t *reply = raw_reply(r, IO_MS);
    if (!reply || !json_is_true(json_object_get(reply, "ok"))) {
        char *d = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
        print_error("%s:%d: %.200s\n  expected ok, got %s\n", file, line, frame,
                    d ? d : "(no reply)");
        free(d);
        _fail(file, line);
    }
    return reply;
}

/* hello, then register (or login) `user`; returns the reply (token etc). */
static json_t *raw_session(raw_t *r, const char *addr, const char *user, bool do_register)
{
    raw_open(r, addr);
    json_decref(EXPECT_OK(r, "{\"id\":1,\"op\":\"hello\",\"protocol\":1}"));
    char req[256];
    snprintf(req, sizeof req, "{\"id\":2,\"op\":\"%s\",\"user\":\"%s\",\"password\":\"%s\"}",
             do_register ? "register" : "login", user, PASSWORD);
    return EXPECT_OK(r, req);
}

/* ---- HTTP ---- */

typedef struct {
    int status;
    char *body; /* malloc'd */
} http_resp_t;

static http_resp_t http_req(const char *addr, const char *method, const char *path,
                            const char *body, size_t body_len)
{
    http_resp_t out = {0, NULL};
    int fd = tcp_open(addr, 0);
    assert_true(fd >= 0);
    char head[512];
    int h = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, body_len);
    raw_t r = {.fd = fd, .close_code = -1};
    if (write_all(fd, head, (size_t)h) == 0 && body_len) write_all(fd, body, body_len);
    int64_t deadline = mono_ms() + IO_MS;
    while (raw_fill(&r, deadline)) {
    }
    if (r.len > 12 && !strncmp(r.buf, "HTTP/1.1 ", 9)) out.status = atoi(r.buf + 9);
    char *sep = r.len ? memmem(r.buf, r.len, "\r\n\r\n", 4) : NULL;
    if (sep) {
        size_t off = (size_t)(sep - r.buf) + 4;
        out.body = strndup(r.buf + off, r.len - off);
    }
    raw_close(&r);
    return out;
}

/* A metric's value from GET /metrics, -1 when absent. */
static double metric(const char *addr, const char *name)
{
    http_resp_t m = http_req(addr, "GET", "/metrics", NULL, 0);
    double v = -1;
    size_t n = strlen(name);
    for (char *line = m.body; line && *line;) {
        if (!strncmp(line, name, n) && line[n] == ' ') {
            v = strtod(line + n + 1, NULL);
            break;
        }
        char *nl = strchr(line, '\n');
        line = nl ? nl + 1 : NULL;
    }
    free(m.body);
    return v;
}

/* ---- the fixture: a node, and alice and bob chatting in one group ---- */

typedef struct {
    fb_test_node_t node;
    uv_loop_t loop;
    fb_client_t *alice, *bob;
    int64_t room;      /* alice's and bob's group */
    int64_t room_base; /* events in it before any message */
    int good_sent;     /* "hello bob" messages alice sent into it */
    int other_sent;    /* other messages alice sent into it */
    raw_t raw[3];      /* the tests' raw connections, closed by teardown */
    bool loop_up;
    char kv[128]; /* the node's extra --set */
} fx_t;

static fb_client_t *new_user(fx_t *fx, const char *name)
{
    fb_client_t *c = NULL;
    fb_client_opts_t o = {.servers = fx->node.addr, .queue_events = true};
    assert_int_equal(fb_client_new(&fx->loop, &o, &c), 0);
    assert_int_equal(fb_client_connect_sync(c, IO_MS), 0);
    json_t *reply = NULL;
    int rc = fb_client_call_sync(
        c, json_pack("{s:s,s:s,s:s}", "op", "register", "user", name, "password", PASSWORD), &reply,
        IO_MS);
    assert_int_equal(rc, 0);
    json_decref(reply);
    assert_int_equal(fb_client_connect_sync(c, IO_MS), 0); /* READY after its first sync */
    return c;
}

static json_t *call(fb_client_t *c, json_t *req)
{
    return fb_itest_call(c, req, IO_MS);
}

/* Only the node: what can fail an assertion happens in the test, so that
 * teardown always runs. */
static int setup_with(void **state, const char *k1, const char *v1)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (!fx) return -1;
    *state = fx;
    for (size_t i = 0; i < FB_ARRAY_LEN(fx->raw); i++)
        fx->raw[i].fd = fx->raw[i].close_code = -1;
    if (k1) {
        snprintf(fx->kv, sizeof fx->kv, "%s=%s", k1, v1);
        fx->node.extra[0] = "--set";
        fx->node.extra[1] = fx->kv;
    }
    if (fb_test_node_start(&fx->node) != 0) return -1;
    uv_loop_init(&fx->loop);
    fx->loop_up = true;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, NULL, NULL);
}

static int setup_slow(void **state)
{
    return setup_with(state, "max_output_bytes", "65536");
}

static int setup_hs(void **state)
{
    return setup_with(state, "handshake_timeout_ms", "500");
}

/* alice and bob, and their group "good"; the first step of every test. */
static fx_t *begin(void **state)
{
    fx_t *fx = *state;
    fx->alice = new_user(fx, "alice");
    fx->bob = new_user(fx, "bob");
    json_t *reply = call(fx->alice, json_pack("{s:s,s:s,s:[s]}", "op", "create_group", "name",
                                              "good", "members", "bob"));
    json_t *room = json_object_get(reply, "room");
    fx->room = json_integer_value(json_object_get(room, "room"));
    fx->room_base = json_integer_value(json_object_get(room, "last_seq"));
    json_decref(reply);
    assert_true(fx->room > 0);
    return fx;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void print_log_tail(const fb_test_node_t *n)
{
    char cmd[400];
    fprintf(stderr, "--- last lines of %s\n", n->log);
    snprintf(cmd, sizeof cmd, "tail -n 40 '%s' >&2", n->log);
    if (system(cmd) != 0) fprintf(stderr, "(no log at %s)\n", n->log);
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    int rc = 0;
    if (!fx) return 0;
    for (size_t i = 0; i < FB_ARRAY_LEN(fx->raw); i++)
        raw_close(&fx->raw[i]);
    if (fx->alice) fb_client_free_sync(fx->alice);
    if (fx->bob) fb_client_free_sync(fx->bob);
    if (fx->loop_up) {
        uv_walk(&fx->loop, close_walk, NULL);
        uv_run(&fx->loop, UV_RUN_DEFAULT);
        uv_loop_close(&fx->loop);
    }
    if (fx->node.pid > 0) {
        int st = fb_test_node_stop(&fx->node, SIGTERM);
        if (st != 0) {
            fprintf(stderr, "node exited with status %d after SIGTERM; its log:\n", st);
            print_log_tail(&fx->node);
            rc = -1;
        }
    } else if (fx->node.log[0]) {
        fprintf(stderr, "the node was not running at teardown; its log:\n");
        print_log_tail(&fx->node);
        rc = -1;
    }
    fb_test_node_cleanup(&fx->node);
    free(fx);
    return rc;
}

/* The node process is still there (not crashed, not aborted by a sanitizer). */
static void assert_node_alive(fx_t *fx)
{
    int st;
    if (waitpid(fx->node.pid, &st, WNOHANG) == fx->node.pid) {
        fx->node.pid = 0;
        print_log_tail(&fx->node);
        fail_msg("the node died (status %d)", st);
    }
    http_resp_t h = http_req(fx->node.addr, "GET", "/health", NULL, 0);
    assert_int_equal(h.status, 200);
    free(h.body);
}

/* alice sends n messages; each is acked and reaches bob. */
static void good_chat(fx_t *fx, int n)
{
    char cmids[16][48];
    assert_true(n <= 16);
    for (int i = 0; i < n; i++) {
        snprintf(cmids[i], sizeof cmids[i], "good-%d", fx->good_sent + i);
        json_t *reply =
            call(fx->alice, json_pack("{s:s,s:I,s:s,s:s}", "op", "send", "room",
                                      (json_int_t)fx->room, "cmid", cmids[i], "text", "hello bob"));
        assert_false(json_is_true(json_object_get(reply, "duplicate")));
        json_decref(reply);
    }
    fx->good_sent += n;
    int seen = 0;
    int64_t deadline = mono_ms() + 10000;
    while (seen < n && mono_ms() < deadline) {
        json_t *ev = NULL;
        if (fb_client_next_event(fx->bob, &ev, (int)(deadline - mono_ms())) != 0) break;
        const char *cm = json_string_value(json_object_get(ev, "cmid"));
        for (int i = 0; cm && i < n; i++)
            if (!strcmp(cm, cmids[i])) seen++;
        json_decref(ev);
    }
    assert_int_equal(seen, n);
}

/* Every event of a room through `history`, oldest first (bounded pages). */
static json_t *all_history(fb_client_t *c, int64_t room)
{
    /* 40 events of ~1.2 KB stay under the slow-consumer test's 64 KiB output bound */
    return fb_itest_history_all(c, room, 40, IO_MS);
}

/* The good room holds exactly what alice sent, nothing more. */
static void assert_good_room_clean(fx_t *fx)
{
    json_t *evs = all_history(fx->bob, fx->room);
    assert_int_equal(json_array_size(evs),
                     (size_t)(fx->room_base + fx->good_sent + fx->other_sent));
    size_t i;
    json_t *ev;
    int good = 0;
    json_array_foreach(evs, i, ev)
    {
        assert_int_equal(json_integer_value(json_object_get(ev, "seq")), (json_int_t)i + 1);
        if (strcmp(json_string_value(json_object_get(ev, "type")), "text") == 0) {
            assert_string_equal(
                json_string_value(json_object_get(json_object_get(ev, "from"), "name")), "alice");
            good += !strcmp(json_string_value(json_object_get(ev, "text")), "hello bob");
        }
    }
    assert_int_equal(good, fx->good_sent);
    json_decref(evs);
}

static void finish(fx_t *fx)
{
    good_chat(fx, 3);
    assert_good_room_clean(fx);
    assert_node_alive(fx);
}

/* ---- tests ---- */

/* Nothing stored for r's user: it is in no room. */
static void expect_no_rooms(raw_t *r)
{
    json_t *rooms = EXPECT_OK(r, "{\"id\":3,\"op\":\"rooms\"}");
    assert_int_equal(json_array_size(json_object_get(rooms, "rooms")), 0);
    json_decref(rooms);
}

/* A new group room with only r's user in it; its id. */
static int64_t new_group(raw_t *r)
{
    json_t *g = EXPECT_OK(r, "{\"id\":3,\"op\":\"create_group\",\"name\":\"m\",\"members\":[]}");
    int64_t room = json_integer_value(json_object_get(json_object_get(g, "room"), "room"));
    json_decref(g);
    return room;
}

static void test_malformed_frames(void **state)
{
    fx_t *fx = begin(state);
    raw_t *r = &fx->raw[0];
    json_decref(raw_session(r, fx->node.addr, "mallory", true));
    good_chat(fx, 2);
    EXPECT_ERR(r, "{\"id\":1,\"op\":", "bad_request");
    EXPECT_ERR(r, "not json at all", "bad_request");
    EXPECT_ERR(r, "[1,2,3]", "bad_request");
    EXPECT_ERR(r, "[{\"id\":4,\"op\":\"ping\"}]", "bad_request");
    EXPECT_ERR(r, "42", "bad_request");
    EXPECT_ERR(r, "\"ping\"", "bad_request");
    EXPECT_ERR(r, "null", "bad_request");
    EXPECT_ERR(r, "{\"op\":\"ping\"}", "bad_request");            /* no id */
    EXPECT_ERR(r, "{\"id\":-1,\"op\":\"ping\"}", "bad_request");  /* id < 0 */
    EXPECT_ERR(r, "{\"id\":1.5,\"op\":\"ping\"}", "bad_request"); /* not an integer */
    EXPECT_ERR(r, "{\"id\":[7],\"op\":\"ping\"}", "bad_request");
    EXPECT_ERR(r, "{\"id\":9007199254740993,\"op\":\"ping\"}", "bad_request"); /* > 2^53 */
    EXPECT_ERR(r,
               "{\"id\":\"0123456789012345678901234567890123456789012345678901234567890123X\","
               "\"op\":\"ping\"}",
               "bad_request");                  /* 65-byte string id */
    EXPECT_ERR(r, "{\"id\":5}", "bad_request"); /* no op */
    EXPECT_ERR(r, "{\"id\":6,\"op\":7}", "bad_request");
    EXPECT_ERR(r, "{\"id\":7,\"op\":\"fly\"}", "unknown_op");
    EXPECT_ERR(r, "{\"id\":\"s8\",\"op\":\"PING\"}", "unknown_op");
    EXPECT_ERR(r, "{\"id\":9,\"op\":\"ping\",\"op\":\"send\"}", "bad_request"); /* dup key */
    EXPECT_ERR(r, "{\"id\":10,\"op\":\"send\",\"room\":\"12\",\"cmid\":\"a\",\"text\":\"hi\"}",
               "bad_request");
    EXPECT_ERR(r, "{\"id\":11,\"op\":\"send\",\"room\":1,\"cmid\":\"a\",\"text\":42}",
               "bad_request");
    EXPECT_ERR(r, "{\"id\":12,\"op\":\"send\",\"room\":1,\"cmid\":5,\"text\":\"hi\"}",
               "bad_request");
    EXPECT_ERR(r, "{\"id\":13,\"op\":\"send\",\"room\":1.5,\"cmid\":\"a\",\"text\":\"hi\"}",
               "bad_request");
    EXPECT_ERR(r, "{\"id\":14,\"op\":\"send\",\"cmid\":\"a\",\"text\":\"hi\"}", "bad_request");
    EXPECT_ERR(r, "{\"id\":15,\"op\":\"send\",\"room\":1,\"text\":\"hi\"}", "bad_request");
    EXPECT_ERR(r, "{\"id\":16,\"op\":\"send\",\"room\":1,\"cmid\":\"a\"}", "bad_request");
    EXPECT_ERR(r, "{\"id\":17,\"op\":\"create_group\",\"name\":\"x\",\"members\":\"bob\"}",
               "bad_request");
    EXPECT_ERR(r, "{\"id\":18,\"op\":\"history\",\"room\":null}", "bad_request");
    /* the connection survives all of it */
    json_decref(EXPECT_OK(r, "{\"id\":19,\"op\":\"ping\"}"));
    expect_no_rooms(r);
    raw_close(r);
    finish(fx);
}

static void test_handshake_order(void **state)
{
    fx_t *fx = begin(state);
    raw_t *r = &fx->raw[0];
    raw_open(r, fx->node.addr);
    EXPECT_ERR(r, "{\"id\":1,\"op\":\"ping\"}", "bad_state");
    EXPECT_ERR(r, "{\"id\":2,\"op\":\"login\",\"user\":\"alice\",\"password\":\"" PASSWORD "\"}",
               "bad_state");
    EXPECT_ERR(r, "{\"id\":3,\"op\":\"rooms\"}", "bad_state");
    EXPECT_ERR(r, "{\"id\":4,\"op\":\"hello\"}", "bad_request"); /* no protocol */
    EXPECT_ERR(r, "{\"id\":5,\"op\":\"hello\",\"protocol\":\"1\"}", "bad_request");
    json_decref(EXPECT_OK(r, "{\"id\":6,\"op\":\"hello\",\"protocol\":1}"));
    EXPECT_ERR(r, "{\"id\":7,\"op\":\"hello\",\"protocol\":1}", "bad_state"); /* repeated */
    static const char *const need_auth[] = {
        "{\"id\":8,\"op\":\"rooms\"}",
        "{\"id\":9,\"op\":\"send\",\"room\":1,\"cmid\":\"a\",\"text\":\"hi\"}",
        "{\"id\":10,\"op\":\"history\",\"room\":1}",
        "{\"id\":11,\"op\":\"sync\",\"cursors\":{}}",
        "{\"id\":12,\"op\":\"create_group\",\"name\":\"x\",\"members\":[]}",
        "{\"id\":13,\"op\":\"devices\"}",
        "{\"id\":14,\"op\":\"logout\"}",
        "{\"id\":15,\"op\":\"direct\",\"user\":\"alice\"}",
        "{\"id\":16,\"op\":\"read\",\"room\":1,\"seq\":1}",
        "{\"id\":17,\"op\":\"room\",\"room\":1}",
    };
    for (size_t i = 0; i < FB_ARRAY_LEN(need_auth); i++)
        EXPECT_ERR(r, need_auth[i], "unauthenticated");
    json_decref(EXPECT_OK(r, "{\"id\":18,\"op\":\"ping\"}"));
    json_decref(EXPECT_OK(
        r, "{\"id\":19,\"op\":\"login\",\"user\":\"alice\",\"password\":\"" PASSWORD "\"}"));
    EXPECT_ERR(r, "{\"id\":20,\"op\":\"login\",\"user\":\"alice\",\"password\":\"" PASSWORD "\"}",
               "bad_state");
    EXPECT_ERR(r, "{\"id\":21,\"op\":\"register\",\"user\":\"zed\",\"password\":\"" PASSWORD "\"}",
               "bad_state");
    raw_close(r);

    /* an unsupported protocol: the error, then close 4003 */
    static const char *const versions[] = {
        "{\"id\":1,\"op\":\"hello\",\"protocol\":2}",
        "{\"id\":1,\"op\":\"hello\",\"protocol\":0}",
    };
    for (size_t i = 0; i < FB_ARRAY_LEN(versions); i++) {
        raw_open(r, fx->node.addr);
        EXPECT_ERR(r, versions[i], "unsupported_version");
        int code = raw_wait_close(r, IO_MS);
        if (code != 4003) fail_msg("%s: expected close 4003, got %d", versions[i], code);
        raw_close(r);
    }
    /* "zed" was never registered */
    raw_open(r, fx->node.addr);
    json_decref(EXPECT_OK(r, "{\"id\":1,\"op\":\"hello\",\"protocol\":1}"));
    EXPECT_ERR(r, "{\"id\":2,\"op\":\"login\",\"user\":\"zed\",\"password\":\"" PASSWORD "\"}",
               "bad_credentials");
    raw_close(r);
    finish(fx);
}

static void test_oversize_frame(void **state)
{
    fx_t *fx = begin(state);
    raw_t *r = &fx->raw[0];
    json_decref(raw_session(r, fx->node.addr, "mallory", true));
    /* exactly max_frame_bytes is still a frame the server reads */
    size_t n = 65536;
    char *big = malloc(70001);
    assert_non_null(big);
    int head = snprintf(big, 64, "{\"id\":1,\"op\":\"ping\",\"pad\":\"");
    memset(big + head, 'x', n - (size_t)head - 2);
    memcpy(big + n - 2, "\"}", 3);
    assert_int_equal(strlen(big), n);
    json_decref(EXPECT_OK(r, big));
    good_chat(fx, 2);
    /* 70,000 bytes: close 1009 */
    n = 70000;
    head = snprintf(big, 64, "{\"id\":2,\"op\":\"send\",\"room\":1,\"cmid\":\"big\",\"text\":\"");
    memset(big + head, 'y', n - (size_t)head - 2);
    memcpy(big + n - 2, "\"}", 3);
    raw_send_frame(r, OP_TEXT, big, n);
    int code = raw_wait_close(r, IO_MS);
    if (code != 1009) fail_msg("70,000-byte frame: expected close 1009, got %d", code);
    raw_close(r);
    /* also when the frame is split over many small writes */
    json_decref(raw_session(r, fx->node.addr, "mallory", false));
    uint8_t hdr[14] = {0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70, 1, 2, 3, 4};
    write_all(r->fd, hdr, sizeof hdr); /* announces 70,000 bytes */
    for (int i = 0; i < 70 && write_all(r->fd, big, 1000) == 0; i++) {
    }
    code = raw_wait_close(r, IO_MS);
    if (code != 1009) fail_msg("announced 70,000-byte frame: expected close 1009, got %d", code);
    raw_close(r);
    free(big);
    /* nothing of it was stored: mallory is still in no room */
    json_decref(raw_session(r, fx->node.addr, "mallory", false));
    expect_no_rooms(r);
    raw_close(r);
    finish(fx);
}

static void test_text_limits(void **state)
{
    fx_t *fx = begin(state);
    raw_t *r = &fx->raw[0];
    json_decref(raw_session(r, fx->node.addr, "mallory", true));
    int64_t room = new_group(r);
    good_chat(fx, 1);

    size_t cap = 3 * 8192 + 256;
    char *req = malloc(cap);
    assert_non_null(req);
    /* 8,193 bytes of ASCII, then 8,193 bytes of 3-byte characters: too_large */
    int h =
        snprintf(req, cap, "{\"id\":4,\"op\":\"send\",\"room\":%lld,\"cmid\":\"t1\",\"text\":\"",
                 (long long)room);
    memset(req + h, 'a', 8193);
    strcpy(req + h + 8193, "\"}");
    EXPECT_ERR(r, req, "too_large");
    h = snprintf(req, cap, "{\"id\":5,\"op\":\"send\",\"room\":%lld,\"cmid\":\"t2\",\"text\":\"",
                 (long long)room);
    for (int i = 0; i < 2731; i++)
        memcpy(req + h + 3 * i, "\xea\xb0\x80", 3); /* U+AC00 */
    strcpy(req + h + 3 * 2731, "\"}");
    EXPECT_ERR(r, req, "too_large");
    /* the limits themselves are fine: 8,192 bytes, and 2,730 x 3 bytes */
    h = snprintf(req, cap, "{\"id\":6,\"op\":\"send\",\"room\":%lld,\"cmid\":\"t3\",\"text\":\"",
                 (long long)room);
    memset(req + h, 'b', 8192);
    strcpy(req + h + 8192, "\"}");
    json_t *ok = EXPECT_OK(r, req);
    assert_int_equal(json_integer_value(json_object_get(ok, "seq")), 2);
    json_decref(ok);
    h = snprintf(req, cap, "{\"id\":7,\"op\":\"send\",\"room\":%lld,\"cmid\":\"t4\",\"text\":\"",
                 (long long)room);
    for (int i = 0; i < 2730; i++)
        memcpy(req + h + 3 * i, "\xea\xb0\x80", 3);
    strcpy(req + h + 3 * 2730, "\"}");
    ok = EXPECT_OK(r, req);
    assert_int_equal(json_integer_value(json_object_get(ok, "seq")), 3);
    json_decref(ok);

    char small[512];
#define SEND_BAD(cmid_json, text_json, code)                                                       \
    do {                                                                                           \
        snprintf(small, sizeof small,                                                              \
                 "{\"id\":8,\"op\":\"send\",\"room\":%lld,\"cmid\":%s,\"text\":%s}",               \
                 (long long)room, cmid_json, text_json);                                           \
        EXPECT_ERR(r, small, code);                                                                \
    } while (0)
    SEND_BAD("\"e1\"", "\"\"", "invalid_argument"); /* empty text */
    SEND_BAD("\"\"", "\"hi\"", "invalid_argument"); /* empty cmid */
    SEND_BAD("\"a b\"", "\"hi\"", "invalid_argument");
    SEND_BAD("\"a/b\"", "\"hi\"", "invalid_argument");
    SEND_BAD("\"caf\\u00e9\"", "\"hi\"", "invalid_argument");
    SEND_BAD("\"a\\nb\"", "\"hi\"", "invalid_argument");
    SEND_BAD("\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"", "\"hi\"",
             "invalid_argument"); /* 65 bytes */
#undef SEND_BAD
    /* the longest cmid (64 bytes), with every kind of allowed character */
    free(req);
    snprintf(
        small, sizeof small,
        "{\"id\":9,\"op\":\"send\",\"room\":%lld,\"cmid\":\"AZaz09._:-%054d\",\"text\":\"ok\"}",
        (long long)room, 0);
    ok = EXPECT_OK(r, small);
    assert_int_equal(json_integer_value(json_object_get(ok, "seq")), 4);
    json_decref(ok);

    /* nothing else was stored in mallory's room */
    snprintf(small, sizeof small, "{\"id\":10,\"op\":\"history\",\"room\":%lld}", (long long)room);
    json_t *hist = EXPECT_OK(r, small);
    json_t *evs = json_object_get(hist, "events");
    assert_int_equal(json_array_size(evs), 4); /* create, t3, t4 and the long cmid */
    assert_string_equal(json_string_value(json_object_get(json_array_get(evs, 1), "cmid")), "t3");
    assert_string_equal(json_string_value(json_object_get(json_array_get(evs, 2), "cmid")), "t4");
    json_decref(hist);
    raw_close(r);
    finish(fx);
}

static void test_invalid_utf8_and_binary(void **state)
{
    fx_t *fx = begin(state);
    raw_t *r = &fx->raw[0];
    json_decref(raw_session(r, fx->node.addr, "mallory", true));
    static const char bin[] = "{\"id\":7,\"op\":\"ping\"}";
    raw_send_frame(r, OP_BIN, bin, sizeof bin - 1);
    json_t *reply = raw_reply(r, IO_MS);
    check_error(reply, "bad_request", json_null(), "binary frame", __FILE__, __LINE__);
    json_decref(reply);
    raw_send_frame(r, OP_BIN, "\x00\x01\x02\xff", 4);
    reply = raw_reply(r, IO_MS);
    check_error(reply, "bad_request", json_null(), "binary frame", __FILE__, __LINE__);
    json_decref(reply);
    /* valid UTF-8 beyond ASCII is fine, and the connection still works */
    json_decref(EXPECT_OK(r, "{\"id\":8,\"op\":\"ping\",\"x\":\"\xea\xb0\x80\xf0\x9f\x98\x80\"}"));
    static const char *const bad[] = {
        "{\"id\":1,\"op\":\"ping\",\"x\":\"\xff\"}",
        "{\"id\":2,\"op\":\"ping\",\"x\":\"\xc3\"}",             /* truncated sequence */
        "{\"id\":3,\"op\":\"ping\",\"x\":\"\xc0\xaf\"}",         /* overlong '/' */
        "{\"id\":4,\"op\":\"ping\",\"x\":\"\xed\xa0\x80\"}",     /* UTF-16 surrogate */
        "{\"id\":5,\"op\":\"ping\",\"x\":\"\xf4\x90\x80\x80\"}", /* above U+10FFFF */
        "{\"id\":6,\"op\":\"send\",\"room\":1,\"cmid\":\"u\",\"text\":\"caf\xe9\"}", /* Latin-1 */
    };
    /* RFC 6455: a text frame that is not UTF-8 fails the connection with
     * 1007 (docs/protocol.md); the node keeps serving everyone else. */
    for (size_t i = 0; i < FB_ARRAY_LEN(bad); i++) {
        raw_t bad_conn;
        json_decref(raw_session(&bad_conn, fx->node.addr, "mallory", false));
        raw_send_text(&bad_conn, bad[i]);
        int code = raw_wait_close(&bad_conn, IO_MS);
        if (code != 1007) fail_msg("invalid UTF-8 case %zu: close code %d, expected 1007", i, code);
        raw_close(&bad_conn);
    }
    expect_no_rooms(r);
    raw_close(r);
    finish(fx);
}

/* "\u0000" is valid JSON; a NUL in a field is a field out of its form. */
static void test_nul_in_strings(void **state)
{
    fx_t *fx = begin(state);
    raw_t *r = &fx->raw[0];
    json_decref(raw_session(r, fx->node.addr, "mallory", true));
    EXPECT_ERR(r, "{\"id\":1,\"op\":\"send\",\"room\":1,\"cmid\":\"x\\u0000y\",\"text\":\"hi\"}",
               "invalid_argument");
    EXPECT_ERR(r, "{\"id\":2,\"op\":\"create_group\",\"name\":\"a\\u0000b\",\"members\":[]}",
               "invalid_argument");
    expect_no_rooms(r);
    raw_close(r);
    finish(fx);
}

/* Sends frame and checks that the reply is exactly want (printf format;
 * its last argument is the reply's ts, which only the reply knows). */
#define EXPECT_ACK(r, frame, ...) expect_ack_(r, frame, __FILE__, __LINE__, __VA_ARGS__)
static void expect_ack_(raw_t *r, const char *frame, const char *file, int line,
                        const char *want_fmt, ...)
{
    raw_send_text(r, frame);
    char *got = raw_reply_bytes(r, IO_MS);
    json_t *j = got ? json_loads(got, 0, NULL) : NULL;
    int64_t ts = json_integer_value(json_object_get(j, "ts"));
    json_decref(j);
    char want[512];
    va_list ap;
    va_start(ap, want_fmt);
    vsnprintf(want, sizeof want, want_fmt, ap);
    va_end(ap);
    char *ts_at = strstr(want, "\"ts\":TS");
    if (ts_at) { /* put the reply's ts in */
        char rest[256];
        snprintf(rest, sizeof rest, "%s", ts_at + 7);
        snprintf(ts_at, sizeof want - (size_t)(ts_at - want), "\"ts\":%lld%s", (long long)ts, rest);
    }
    if (!got || strcmp(got, want) != 0) {
        print_error("%s:%d: %.200s\n  expected %s\n  got      %s\n", file, line, frame, want,
                    got ? got : "(no reply)");
        free(got);
        _fail(file, line);
    }
    free(got);
}

/* Sends and reads of the common shape take the fast path (no jansson), others
 * jansson's; the clients cannot tell: the same acks byte for byte, the same
 * errors, the same stored texts. */
static void test_fast_and_slow_paths(void **state)
{
    fx_t *fx = begin(state);
    raw_t *r = &fx->raw[0];
    json_decref(raw_session(r, fx->node.addr, "mallory", true));
    long long room = (long long)new_group(r);
    char f[512];
    double fast0 = metric(fx->node.addr, "firebreak_fast_requests_total");
    assert_true(fast0 >= 0);

    /* 1. fast: the common shape, with text beyond ASCII */
    snprintf(f, sizeof f,
             "{\"id\":101,\"op\":\"send\",\"room\":%lld,\"cmid\":\"fast-1\","
             "\"text\":\"caf\xc3\xa9 \xf0\x9f\x98\x80 / \x7f\"}",
             room);
    EXPECT_ACK(r, f,
               "{\"id\":101,\"ok\":true,\"room\":%lld,\"seq\":2,\"ts\":TS,"
               "\"duplicate\":false}",
               room);
    /* 2. jansson: escapes in the text (and keys in another order) */
    snprintf(f, sizeof f,
             "{\"op\":\"send\",\"text\":\"say \\\"hi\\\"\\n\\u00e9\",\"id\":102,"
             "\"cmid\":\"slow-1\",\"room\":%lld}",
             room);
    EXPECT_ACK(r, f,
               "{\"id\":102,\"ok\":true,\"room\":%lld,\"seq\":3,\"ts\":TS,"
               "\"duplicate\":false}",
               room);
    /* 3. jansson: a string id, echoed as one */
    snprintf(f, sizeof f,
             "{\"id\":\"s-103\",\"op\":\"send\",\"room\":%lld,\"cmid\":\"slow-2\","
             "\"text\":\"x\"}",
             room);
    EXPECT_ACK(r, f,
               "{\"id\":\"s-103\",\"ok\":true,\"room\":%lld,\"seq\":4,\"ts\":TS,"
               "\"duplicate\":false}",
               room);
    /* 4. fast: a retry of 1 answers with the original */
    snprintf(f, sizeof f,
             " { \"id\" : 104 , \"op\" : \"send\" , \"room\" : %lld , \"cmid\" : \"fast-1\" ,"
             "\n\"text\" : \"caf\xc3\xa9 \xf0\x9f\x98\x80 / \x7f\" } ",
             room);
    EXPECT_ACK(r, f,
               "{\"id\":104,\"ok\":true,\"room\":%lld,\"seq\":2,\"ts\":TS,"
               "\"duplicate\":true}",
               room);
    /* 5. fast and 6. jansson (an extra key): reads; her own sends already
     * moved mallory's marker to 4, and it never moves back */
    snprintf(f, sizeof f, "{\"id\":105,\"op\":\"read\",\"room\":%lld,\"seq\":3}", room);
    EXPECT_ACK(r, f, "{\"id\":105,\"ok\":true,\"room\":%lld,\"read_seq\":4}", room);
    snprintf(f, sizeof f, "{\"id\":106,\"op\":\"read\",\"room\":%lld,\"seq\":4,\"x\":1}", room);
    EXPECT_ACK(r, f, "{\"id\":106,\"ok\":true,\"room\":%lld,\"read_seq\":4}", room);
    /* 7, 8. fast: refused by the op's checks, then by the writer; ids kept */
    snprintf(f, sizeof f,
             "{\"id\":107,\"op\":\"send\",\"room\":%lld,\"cmid\":\"a b\",\"text\":\"x\"}", room);
    EXPECT_ERR(r, f, "invalid_argument");
    snprintf(f, sizeof f,
             "{\"id\":108,\"op\":\"send\",\"room\":%lld,\"cmid\":\"nm\",\"text\":\"x\"}",
             (long long)fx->room);
    EXPECT_ERR(r, f, "not_member");
    /* frames 1, 4, 5, 7 and 8 took the fast path; 2, 3 and 6 did not */
    assert_int_equal((int)(metric(fx->node.addr, "firebreak_fast_requests_total") - fast0), 5);

    /* what is stored is what was sent, by either path */
    snprintf(f, sizeof f, "{\"id\":109,\"op\":\"history\",\"room\":%lld}", room);
    json_t *hist = EXPECT_OK(r, f);
    json_t *evs = json_object_get(hist, "events");
    assert_int_equal(json_array_size(evs), 4); /* the create event and three messages */
    static const char *const cmids[] = {"fast-1", "slow-1", "slow-2"};
    static const char *const texts[] = {"caf\xc3\xa9 \xf0\x9f\x98\x80 / \x7f",
                                        "say \"hi\"\n\xc3\xa9", "x"};
    for (size_t i = 0; i < 3; i++) {
        json_t *ev = json_array_get(evs, i + 1);
        assert_string_equal(json_string_value(json_object_get(ev, "cmid")), cmids[i]);
        assert_string_equal(json_string_value(json_object_get(ev, "text")), texts[i]);
    }
    json_decref(hist);
    raw_close(r);
    finish(fx);
}

static void test_membership(void **state)
{
    fx_t *fx = begin(state);
    raw_t *r = &fx->raw[0];
    json_decref(raw_session(r, fx->node.addr, "mallory", true));
    int64_t mine = new_group(r);
    good_chat(fx, 2);
    long long other = (long long)fx->room, none = 987654;
    char q[256];
#define BAD(code, ...)                                                                             \
    do {                                                                                           \
        snprintf(q, sizeof q, __VA_ARGS__);                                                        \
        EXPECT_ERR(r, q, code);                                                                    \
    } while (0)
    BAD("not_member", "{\"id\":4,\"op\":\"send\",\"room\":%lld,\"cmid\":\"m1\",\"text\":\"hi\"}",
        other);
    BAD("not_member", "{\"id\":5,\"op\":\"send\",\"room\":%lld,\"cmid\":\"m2\",\"text\":\"hi\"}",
        none);
    BAD("not_member", "{\"id\":6,\"op\":\"history\",\"room\":%lld}", other);
    BAD("not_member", "{\"id\":7,\"op\":\"history\",\"room\":%lld}", none);
    BAD("not_member", "{\"id\":8,\"op\":\"room\",\"room\":%lld}", other);
    BAD("not_member", "{\"id\":9,\"op\":\"room\",\"room\":%lld}", none);
    BAD("not_member", "{\"id\":10,\"op\":\"read\",\"room\":%lld,\"seq\":1}", other);
    BAD("not_member", "{\"id\":11,\"op\":\"invite\",\"room\":%lld,\"users\":[\"mallory\"]}", other);
    BAD("not_member", "{\"id\":12,\"op\":\"rename\",\"room\":%lld,\"name\":\"pwned\"}", other);
    BAD("not_member", "{\"id\":13,\"op\":\"leave\",\"room\":%lld}", other);
    BAD("not_member", "{\"id\":14,\"op\":\"kick\",\"room\":%lld,\"user\":\"bob\"}", other);
    /* out of range */
    BAD("invalid_argument", "{\"id\":15,\"op\":\"read\",\"room\":%lld,\"seq\":2}", (long long)mine);
    BAD("invalid_argument", "{\"id\":16,\"op\":\"read\",\"room\":%lld,\"seq\":1000000}",
        (long long)mine);
    BAD("invalid_argument", "{\"id\":17,\"op\":\"read\",\"room\":%lld,\"seq\":-1}",
        (long long)mine);
    BAD("invalid_argument",
        "{\"id\":18,\"op\":\"send\",\"room\":0,\"cmid\":\"m3\",\"text\":\"hi\"}");
    BAD("invalid_argument", "{\"id\":19,\"op\":\"history\",\"room\":-4}");
    BAD("invalid_argument", "{\"id\":20,\"op\":\"direct\",\"user\":\"mallory\"}"); /* oneself */
    BAD("invalid_argument",
        "{\"id\":21,\"op\":\"create_group\",\"name\":\"a\\u0007b\",\"members\":[]}");
    BAD("not_found", "{\"id\":22,\"op\":\"direct\",\"user\":\"nobody\"}");
#undef BAD
    json_t *ok = NULL;
    snprintf(q, sizeof q, "{\"id\":23,\"op\":\"read\",\"room\":%lld,\"seq\":1}", (long long)mine);
    json_decref(EXPECT_OK(r, q));
    /* nothing stored: mallory has only her own room, still at seq 1, named "m" */
    json_t *rooms = EXPECT_OK(r, "{\"id\":24,\"op\":\"rooms\"}");
    json_t *list = json_object_get(rooms, "rooms");
    assert_int_equal(json_array_size(list), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(list, 0), "room")), mine);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(list, 0), "last_seq")), 1);
    json_decref(rooms);
    ok = call(fx->alice, json_pack("{s:s,s:I}", "op", "room", "room", (json_int_t)fx->room));
    json_t *summary = json_object_get(ok, "room");
    assert_string_equal(json_string_value(json_object_get(summary, "name")), "good");
    assert_int_equal(json_array_size(json_object_get(ok, "members")), 2);
    json_decref(ok);
    raw_close(r);
    finish(fx);
}

static void test_sync_cursors(void **state)
{
    fx_t *fx = begin(state);
    raw_t *r = &fx->raw[0];
    json_decref(raw_session(r, fx->node.addr, "mallory", true));
    EXPECT_ERR(r, "{\"id\":1,\"op\":\"sync\",\"cursors\":[1,2]}", "bad_request");
    EXPECT_ERR(r, "{\"id\":2,\"op\":\"sync\",\"cursors\":\"1:0\"}", "bad_request");
    EXPECT_ERR(r, "{\"id\":3,\"op\":\"sync\",\"cursors\":{\"abc\":1}}", "invalid_argument");
    EXPECT_ERR(r, "{\"id\":4,\"op\":\"sync\",\"cursors\":{\"0\":1}}", "invalid_argument");
    EXPECT_ERR(r, "{\"id\":5,\"op\":\"sync\",\"cursors\":{\"-3\":1}}", "invalid_argument");
    EXPECT_ERR(r, "{\"id\":6,\"op\":\"sync\",\"cursors\":{\"1\":-1}}", "invalid_argument");
    EXPECT_ERR(r, "{\"id\":7,\"op\":\"sync\",\"cursors\":{\"12x\":0}}", "invalid_argument");
    EXPECT_ERR(r, "{\"id\":8,\"op\":\"sync\",\"limit\":0}", "invalid_argument");
    EXPECT_ERR(r, "{\"id\":9,\"op\":\"sync\",\"limit\":201}", "invalid_argument");
    EXPECT_ERR(r, "{\"id\":10,\"op\":\"sync\",\"limit\":\"5\"}", "bad_request");
    EXPECT_ERR(r, "{\"id\":11,\"op\":\"history\",\"room\":1,\"limit\":0}", "invalid_argument");
    EXPECT_ERR(r, "{\"id\":12,\"op\":\"history\",\"room\":1,\"limit\":201}", "invalid_argument");
    EXPECT_ERR(r, "{\"id\":13,\"op\":\"history\",\"room\":1,\"before\":0}", "invalid_argument");
    /* a cursor value of the wrong type: either code is defensible */
    raw_send_text(r, "{\"id\":14,\"op\":\"sync\",\"cursors\":{\"1\":\"5\"}}");
    json_t *reply = raw_reply(r, IO_MS);
    assert_non_null(err_code(reply));
    assert_true(!strcmp(err_code(reply), "invalid_argument") ||
                !strcmp(err_code(reply), "bad_request"));
    json_decref(reply);
    /* naming a room one is not in (or that does not exist) reveals nothing */
    char q[160];
    snprintf(q, sizeof q, "{\"id\":15,\"op\":\"sync\",\"cursors\":{\"%lld\":0,\"987654\":0}}",
             (long long)fx->room);
    reply = EXPECT_OK(r, q);
    json_t *rooms = json_object_get(reply, "rooms");
    assert_int_equal(json_array_size(rooms), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *e = json_array_get(rooms, i);
        assert_string_equal(json_string_value(json_object_get(e, "status")), "not_member");
        assert_null(json_object_get(e, "events"));
        assert_null(json_object_get(e, "members"));
        assert_null(json_object_get(e, "name"));
    }
    assert_false(json_is_true(json_object_get(reply, "more")));
    json_decref(reply);
    raw_close(r);
    finish(fx);
}

static void set_expiry(fx_t *fx, int64_t device, int64_t expires_ms)
{
    const int64_t v[] = {expires_ms, device};
    assert_int_equal(
        fb_test_node_sql(&fx->node, "UPDATE devices SET expires_ms = $1 WHERE id = $2", v, 2), 1);
}

/* A fresh connection: hello (with a token when given), then `frame`. */
static void token_case(fx_t *fx, const char *hello_token, const char *frame, const char *code)
{
    raw_t *r = &fx->raw[1];
    raw_open(r, fx->node.addr);
    if (hello_token) {
        char q[512];
        snprintf(q, sizeof q, "{\"id\":1,\"op\":\"hello\",\"protocol\":1,\"token\":\"%s\"}",
                 hello_token);
        EXPECT_ERR(r, q, code);
    } else {
        json_decref(EXPECT_OK(r, "{\"id\":1,\"op\":\"hello\",\"protocol\":1}"));
        EXPECT_ERR(r, frame, code);
    }
    /* a refused token leaves the connection unauthenticated */
    raw_send_text(r, "{\"id\":99,\"op\":\"rooms\"}");
    json_t *reply = raw_reply(r, IO_MS);
    const char *c = err_code(reply);
    if (!c || (strcmp(c, "unauthenticated") && strcmp(c, "bad_state")))
        fail_msg("after a refused token, rooms answered %s", c ? c : "ok");
    json_decref(reply);
    raw_close(r);
}

static void test_tokens(void **state)
{
    fx_t *fx = begin(state);
    raw_t *r = &fx->raw[0];
    json_t *reg = raw_session(r, fx->node.addr, "mallory", true);
    char token[80], q[600];
    snprintf(token, sizeof token, "%s", json_string_value(json_object_get(reg, "token")));
    int64_t dev = json_integer_value(json_object_get(json_object_get(reg, "device"), "id"));
    json_decref(reg);
    raw_close(r);
    assert_int_equal(strlen(token), 64);

    char random_hex[65];
    srand(4242);
    for (int i = 0; i < 64; i++)
        random_hex[i] = "0123456789abcdef"[rand() % 16];
    random_hex[64] = 0;
    char upper[65], longtok[201];
    for (int i = 0; i < 65; i++)
        upper[i] = (char)(token[i] >= 'a' && token[i] <= 'f' ? token[i] - 32 : token[i]);
    memset(longtok, 'a', 200);
    longtok[200] = 0;
    const char *const malformed[] = {random_hex, "xyz", "", upper, token + 1 /* 63 */};
    for (size_t i = 0; i < FB_ARRAY_LEN(malformed); i++) {
        snprintf(q, sizeof q, "{\"id\":2,\"op\":\"auth\",\"token\":\"%s\"}", malformed[i]);
        token_case(fx, NULL, q, "bad_token");
        token_case(fx, malformed[i], NULL, "bad_token");
    }
    snprintf(q, sizeof q, "{\"id\":2,\"op\":\"auth\",\"token\":\"%s0\"}", token); /* 65 */
    token_case(fx, NULL, q, "bad_token");
    token_case(fx, NULL, "{\"id\":2,\"op\":\"auth\",\"token\":12345}", "bad_request");
    token_case(fx, NULL, "{\"id\":2,\"op\":\"auth\"}", "bad_request");

    /* the real token works */
    raw_open(r, fx->node.addr);
    snprintf(q, sizeof q, "{\"id\":1,\"op\":\"hello\",\"protocol\":1,\"token\":\"%s\"}", token);
    json_t *ok = EXPECT_OK(r, q);
    assert_string_equal(json_string_value(json_object_get(json_object_get(ok, "user"), "name")),
                        "mallory");
    json_decref(ok);
    raw_close(r);

    /* expired: its expiry moved into the past in the node's database */
    set_expiry(fx, dev, (int64_t)time(NULL) * 1000 - 60000);
    snprintf(q, sizeof q, "{\"id\":2,\"op\":\"auth\",\"token\":\"%s\"}", token);
    token_case(fx, NULL, q, "token_expired");
    token_case(fx, token, NULL, "token_expired");
    good_chat(fx, 1);

    /* revoked: log a second device out, then use its token */
    json_t *second = raw_session(r, fx->node.addr, "mallory", false);
    char token2[80];
    snprintf(token2, sizeof token2, "%s", json_string_value(json_object_get(second, "token")));
    json_decref(second);
    json_decref(EXPECT_OK(r, "{\"id\":3,\"op\":\"logout\"}"));
    int code = raw_wait_close(r, IO_MS);
    if (code != 4001) fail_msg("logout: expected close 4001, got %d", code);
    raw_close(r);
    snprintf(q, sizeof q, "{\"id\":2,\"op\":\"auth\",\"token\":\"%s\"}", token2);
    token_case(fx, NULL, q, "bad_token");
    token_case(fx, token2, NULL, "bad_token");
    /* a 200-character token is malformed too */
    snprintf(q, sizeof q, "{\"id\":2,\"op\":\"auth\",\"token\":\"%s\"}", longtok);
    token_case(fx, NULL, q, "bad_token");
    token_case(fx, longtok, NULL, "bad_token");
    finish(fx);
}

static void test_credentials(void **state)
{
    fx_t *fx = begin(state);
    raw_t *r = &fx->raw[0];
    raw_open(r, fx->node.addr);
    json_decref(EXPECT_OK(r, "{\"id\":1,\"op\":\"hello\",\"protocol\":1}"));
    raw_send_text(r,
                  "{\"id\":2,\"op\":\"login\",\"user\":\"alice\",\"password\":\"wrong password\"}");
    json_t *wrong = raw_reply(r, IO_MS), *two = json_integer(2);
    check_error(wrong, "bad_credentials", two, "wrong password", __FILE__, __LINE__);
    raw_send_text(r,
                  "{\"id\":2,\"op\":\"login\",\"user\":\"nobody\",\"password\":\"" PASSWORD "\"}");
    json_t *unknown = raw_reply(r, IO_MS);
    check_error(unknown, "bad_credentials", two, "unknown user", __FILE__, __LINE__);
    json_decref(two);
    /* the two are never told apart */
    assert_true(json_equal(wrong, unknown));
    json_decref(wrong);
    json_decref(unknown);
    EXPECT_ERR(
        r, "{\"id\":3,\"op\":\"register\",\"user\":\"alice\",\"password\":\"another password\"}",
        "name_taken");
    static const char *const bad_names[] = {
        "Alice",  "-x", ".x", "_x", "a b", "a/b", "", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" /* 33 */,
        "\\u00e9"};
    char q[256];
    for (size_t i = 0; i < FB_ARRAY_LEN(bad_names); i++) {
        snprintf(q, sizeof q,
                 "{\"id\":4,\"op\":\"register\",\"user\":\"%s\",\"password\":\"" PASSWORD "\"}",
                 bad_names[i]);
        EXPECT_ERR(r, q, "invalid_argument");
    }
    EXPECT_ERR(r, "{\"id\":5,\"op\":\"register\",\"user\":\"carol\",\"password\":\"1234567\"}",
               "invalid_argument");
    EXPECT_ERR(r, "{\"id\":6,\"op\":\"register\",\"user\":\"carol\",\"password\":\"\"}",
               "invalid_argument");
    EXPECT_ERR(r,
               "{\"id\":7,\"op\":\"register\",\"user\":\"carol\",\"password\":\"" PASSWORD
               "\",\"device\":\"a\\u0001b\"}",
               "invalid_argument");
    EXPECT_ERR(r, "{\"id\":8,\"op\":\"register\",\"user\":\"carol\"}", "bad_request");
    EXPECT_ERR(r, "{\"id\":9,\"op\":\"register\",\"user\":\"carol\",\"password\":12345678}",
               "bad_request");
    /* nothing was stored: carol cannot log in, and her name is still free */
    EXPECT_ERR(r, "{\"id\":10,\"op\":\"login\",\"user\":\"carol\",\"password\":\"1234567\"}",
               "invalid_argument");
    EXPECT_ERR(r, "{\"id\":11,\"op\":\"login\",\"user\":\"carol\",\"password\":\"" PASSWORD "\"}",
               "bad_credentials");
    json_t *ok = EXPECT_OK(
        r, "{\"id\":12,\"op\":\"register\",\"user\":\"carol\",\"password\":\"" PASSWORD "\"}");
    assert_int_equal(json_string_length(json_object_get(ok, "token")), 64);
    json_decref(ok);
    raw_close(r);
    /* alice can still log in with her real password */
    json_decref(raw_session(r, fx->node.addr, "alice", false));
    raw_close(r);
    finish(fx);
}

/* The documented range is 8 to 1024 bytes; beyond it is a field out of range. */
static void test_long_password(void **state)
{
    fx_t *fx = begin(state);
    raw_t *r = &fx->raw[0];
    raw_open(r, fx->node.addr);
    json_decref(EXPECT_OK(r, "{\"id\":1,\"op\":\"hello\",\"protocol\":1}"));
    char q[1200];
    int h =
        snprintf(q, sizeof q, "{\"id\":2,\"op\":\"register\",\"user\":\"dave\",\"password\":\"");
    memset(q + h, 'p', 1025);
    strcpy(q + h + 1025, "\"}");
    EXPECT_ERR(r, q, "invalid_argument");
    memset(q + h, 'p', 1024);
    strcpy(q + h + 1024, "\"}");
    json_decref(EXPECT_OK(r, q)); /* the limit itself is fine */
    raw_close(r);
    finish(fx);
}

static void expect_http(const char *addr, const char *method, const char *path, const char *body,
                        size_t n, int status, const char *code)
{
    http_resp_t h = http_req(addr, method, path, body, n);
    if (h.status != status)
        fail_msg("%s %s: expected HTTP %d, got %d (%s)", method, path, status, h.status,
                 h.body ? h.body : "");
    if (code) {
        json_t *j = h.body ? json_loads(h.body, 0, NULL) : NULL;
        const char *got = err_code(j);
        if (!got || strcmp(got, code))
            fail_msg("%s %s: expected error %s, body %s", method, path, code, h.body ? h.body : "");
        assert_true(json_string_length(json_object_get(json_object_get(j, "error"), "message")) >
                    0);
        json_decref(j);
    }
    free(h.body);
}

#define BODY(s) s, strlen(s)

static void test_http_errors(void **state)
{
    fx_t *fx = begin(state);
    const char *a = fx->node.addr;
    expect_http(a, "POST", "/login", BODY("{\"user\":"), 400, "bad_request");
    expect_http(a, "POST", "/login", BODY("[1]"), 400, "bad_request");
    expect_http(a, "POST", "/login", BODY(""), 400, "bad_request");
    expect_http(a, "POST", "/login", BODY("{\"user\":\"x\xff\"}"), 400, "invalid_utf8");
    expect_http(a, "POST", "/register",
                BODY("{\"user\":\"Bad Name\",\"password\":\"" PASSWORD "\"}"), 400,
                "invalid_argument");
    expect_http(a, "POST", "/login", BODY("{\"user\":\"alice\",\"password\":\"nope nope\"}"), 401,
                "bad_credentials");
    expect_http(a, "POST", "/register", BODY("{\"user\":\"alice\",\"password\":\"" PASSWORD "\"}"),
                409, "name_taken");
    expect_http(a, "GET", "/nope", NULL, 0, 404, NULL);
    expect_http(a, "GET", "/", NULL, 0, 404, NULL);
    expect_http(a, "POST", "/health", BODY("{}"), 405, NULL);
    expect_http(a, "GET", "/login", NULL, 0, 405, NULL);
    expect_http(a, "DELETE", "/metrics", NULL, 0, 405, NULL);
    size_t n = 70000;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, ' ', n);
    static const char creds[] = "{\"user\":\"alice\",\"password\":\"" PASSWORD "\"}";
    memcpy(big, creds, sizeof creds - 1);
    expect_http(a, "POST", "/login", big, n, 413, "too_large");
    expect_http(a, "POST", "/register", big, n, 413, "too_large");
    free(big);
    /* not HTTP at all */
    int fd = tcp_open(a, 0);
    assert_true(fd >= 0);
    raw_t *r = &fx->raw[0];
    r->fd = fd;
    r->close_code = -1;
    write_all(fd, "\x16\x03\x01garbage\r\n\r\n", 13);
    int64_t deadline = mono_ms() + IO_MS;
    while (raw_fill(r, deadline)) {
    }
    assert_true(r->eof);
    assert_true(r->len == 0 || !strncmp(r->buf, "HTTP/1.1 400", 12));
    raw_close(r);
    /* and login over HTTP still works */
    expect_http(a, "POST", "/login", BODY("{\"user\":\"alice\",\"password\":\"" PASSWORD "\"}"),
                200, NULL);
    finish(fx);
}

/* ---- a consumer that never reads ---- */

/* alice floods the room with a small window, so that her own connection and
 * bob's (both reading) never have much output waiting. */
typedef struct {
    fb_client_t *c;
    int64_t room;
    int target, sent, acked, failed;
    char text[1024];
} flood_t;

enum { FLOOD_WINDOW = 8 };

static void flood_pump(flood_t *f);

static void on_flood_ack(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    flood_t *f = ud;
    if (err) {
        f->failed++;
        fprintf(stderr, "send refused: %s\n", msg ? msg : fb_client_strerror(err));
    } else {
        f->acked++;
    }
    flood_pump(f);
}

static void flood_pump(flood_t *f)
{
    while (f->sent < f->target && f->sent - f->acked - f->failed < FLOOD_WINDOW) {
        char cmid[32];
        snprintf(cmid, sizeof cmid, "flood-%d", f->sent);
        if (fb_client_send(f->c, f->room, f->text, cmid, on_flood_ack, f) != 0) {
            f->failed++;
            return;
        }
        f->sent++;
    }
}

static bool flood_done(void *arg)
{
    flood_t *f = arg;
    return f->acked + f->failed >= f->target;
}

static void test_slow_consumer(void **state)
{
    fx_t *fx = begin(state);
    raw_t *slow = &fx->raw[0];
    raw_open_buf(slow, fx->node.addr, 4096); /* a small window: the node's output backs up */
    json_decref(EXPECT_OK(slow, "{\"id\":1,\"op\":\"hello\",\"protocol\":1}"));
    json_decref(EXPECT_OK(
        slow, "{\"id\":2,\"op\":\"register\",\"user\":\"slow\",\"password\":\"" PASSWORD "\"}"));
    json_decref(call(fx->alice, json_pack("{s:s,s:I,s:[s]}", "op", "invite", "room",
                                          (json_int_t)fx->room, "users", "slow")));
    fx->room_base++; /* the join */
    /* from here on, "slow" never reads */
    static flood_t f;
    memset(&f, 0, sizeof f);
    f.c = fx->alice;
    f.room = fx->room;
    memset(f.text, 'z', sizeof f.text - 1);
    double closes = 0, mem_max = 0;
    int64_t deadline = mono_ms() + 20000;
    int64_t t0 = mono_ms();
    while (f.target < 6000 && mono_ms() < deadline && closes < 1) {
        f.target += 100;
        flood_pump(&f);
        assert_int_equal(fb_client_run_until(fx->alice, flood_done, &f, 10000), 0);
        closes = metric(fx->node.addr, "firebreak_slow_consumer_closes_total");
        double mem = metric(fx->node.addr, "firebreak_memory_bytes");
        assert_true(mem > 0);
        mem_max = FB_MAX(mem_max, mem);
    }
    fx->other_sent += f.sent;
    print_message("slow consumer: %d messages sent in %lld ms, %d acked, closes=%.0f, "
                  "memory max %.1f MiB\n",
                  f.sent, (long long)(mono_ms() - t0), f.acked, closes, mem_max / 1048576);
    assert_int_equal(f.failed, 0);
    assert_int_equal(f.acked, f.sent);
    assert_true(closes >= 1);
    assert_true(mem_max < 64.0 * 1048576);
    /* the node hung up on it: whatever it had buffered, then a close (4002) or EOF */
    int code = raw_wait_close(slow, 10000);
    if (code != 4002 && code != 0)
        fail_msg("slow consumer: expected close 4002 or EOF, got %d", code);
    raw_close(slow);
    /* only the slow one was closed: alice and bob stayed connected */
    assert_true(closes < 2);
    finish(fx); /* every flood message is stored too */
}

/* ---- handshake timeout ---- */

/* HTTP keep-alive: a connection is closed only after handshake_timeout_ms
 * of idleness, never while it is being used (setup_hs: 500 ms). */
static void test_http_keepalive_idle(void **state)
{
    fx_t *fx = begin(state);
    int fd = tcp_open(fx->node.addr, 0);
    assert_true(fd >= 0);
    static const char req[] = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    char buf[2048];
    for (int i = 0; i < 4; i++) { /* 4 x 300 ms: longer than the timeout in all */
        assert_int_equal(write(fd, req, sizeof req - 1), (ssize_t)(sizeof req - 1));
        struct pollfd p = {fd, POLLIN, 0};
        assert_int_equal(poll(&p, 1, 2000), 1);
        ssize_t n = read(fd, buf, sizeof buf - 1);
        assert_true(n > 0);
        buf[n] = 0;
        assert_non_null(strstr(buf, "200 OK"));
        usleep(300 * 1000);
    }
    /* idle now: closed within about the timeout (sweep granularity: 1/4) */
    struct pollfd p = {fd, POLLIN, 0};
    assert_int_equal(poll(&p, 1, 2000), 1);
    assert_int_equal(read(fd, buf, sizeof buf), 0);
    close(fd);
    finish(fx);
}

static void test_handshake_timeout(void **state)
{
    fx_t *fx = begin(state);
    raw_t *quiet = &fx->raw[0], *polite = &fx->raw[1], *mute = &fx->raw[2];
    int64_t t0 = mono_ms();
    raw_open(quiet, fx->node.addr);
    raw_open(polite, fx->node.addr);
    json_decref(EXPECT_OK(polite, "{\"id\":1,\"op\":\"hello\",\"protocol\":1}"));
    int fd = tcp_open(fx->node.addr, 0); /* never says anything at all */
    assert_true(fd >= 0);
    mute->fd = fd;
    mute->close_code = -1;
    int code = raw_wait_close(quiet, 5000);
    int64_t took = mono_ms() - t0;
    print_message("no hello: closed with %d after %lld ms\n", code, (long long)took);
    if (code != 1008) fail_msg("no hello: expected close 1008, got %d", code);
    assert_true(took >= 450);
    assert_true(took < 3000);
    raw_close(quiet);
    int64_t deadline = mono_ms() + 5000;
    while (raw_fill(mute, deadline)) {
    }
    if (!mute->eof) fail_msg("a silent TCP connection was not closed within 5 s");
    raw_close(mute);
    /* the one that said hello stays */
    sleep_ms(200);
    json_decref(EXPECT_OK(polite, "{\"id\":2,\"op\":\"ping\"}"));
    raw_close(polite);
    finish(fx);
}

/* ---- garbage ---- */

static uint32_t xorshift(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static void test_garbage_frames(void **state)
{
    fx_t *fx = begin(state);
    raw_t *r = &fx->raw[0];
    json_decref(raw_session(r, fx->node.addr, "mallory", true));
    uint32_t seed = 0x5eed1234;
    srand(7);
    static const char *const toks[] = {
        "{",      "}",    "[",        "]",           ":",        ",",        "\"id\"",
        "\"op\"", "1",    "\"ping\"", "\"send\"",    "\"room\"", "\"text\"", "\"cmid\"",
        "null",   "true", "-7",       "\"\\u00e9\"", "\"x\"",    "1e999",    " "};
    int replies = 0, closes = 0, reopen = 0;
    uint8_t buf[512];
    for (int i = 0; i < 200; i++) {
        if (r->fd < 0) {
            json_decref(raw_session(r, fx->node.addr, "mallory", false));
            reopen++;
        }
        uint32_t kind = xorshift(&seed) % 6;
        size_t n = xorshift(&seed) % 300;
        for (size_t k = 0; k < n; k++)
            buf[k] = (uint8_t)xorshift(&seed);
        if (kind <= 2) { /* a well-framed text/binary/JSON-ish frame: an answer */
            int op = kind == 1 ? OP_BIN : OP_TEXT;
            if (kind == 2) {
                n = 0;
                int ntok = 1 + (int)(xorshift(&seed) % 40);
                for (int t = 0; t < ntok; t++) {
                    const char *tk = toks[xorshift(&seed) % FB_ARRAY_LEN(toks)];
                    memcpy(buf + n, tk, strlen(tk));
                    n += strlen(tk);
                }
            }
            raw_send_frame(r, op, buf, n);
            json_t *reply = raw_reply(r, IO_MS);
            if (!reply && kind == 0) {
                /* invalid UTF-8 may close the connection instead (see test_invalid_utf8_and_binary)
                 */
                int code = raw_wait_close(r, IO_MS);
                if (code == RAW_TIMEOUT) fail_msg("garbage frame %d: no answer, no close", i);
                closes++;
                raw_close(r);
                continue;
            }
            if (!reply) fail_msg("garbage frame %d (kind %u, %zu bytes): no answer", i, kind, n);
            if (kind < 2) {
                const char *c = err_code(reply);
                if (!c || (strcmp(c, "bad_request") && strcmp(c, "invalid_utf8")))
                    fail_msg("garbage frame %d: answered %s", i, c ? c : "ok");
                assert_true(json_is_null(json_object_get(reply, "id")));
            }
            json_decref(reply);
            replies++;
        } else if (kind == 3) { /* bad framing: unmasked, reserved bits, reserved opcodes */
            n %= 126;           /* no extended length: the node must not wait for more */
            uint8_t h[2] = {(uint8_t)(0x80 | (xorshift(&seed) % 2 ? 0x70 : 0x03)), (uint8_t)n};
            if (xorshift(&seed) % 2) h[0] = 0x81; /* and never masked */
            write_all(r->fd, h, 2);
            write_all(r->fd, buf, n);
            int code = raw_wait_close(r, IO_MS);
            if (code != 1002 && code != 0)
                fail_msg("bad framing %d: expected close 1002, got %d", i, code);
            closes++;
            raw_close(r);
        } else { /* raw bytes on the stream: whatever the node makes of them, it survives */
            write_all(r->fd, buf, n);
            raw_close(r);
        }
    }
    if (r->fd >= 0) raw_close(r);
    print_message("garbage: %d answers, %d protocol closes, %d reconnects\n", replies, closes,
                  reopen);
    /* mallory still has nothing stored, and everyone else is fine */
    json_decref(raw_session(r, fx->node.addr, "mallory", false));
    expect_no_rooms(r);
    raw_close(r);
    finish(fx);
}

/* A second node on the same data dir, or on a port already served, must
 * refuse to start rather than share clients with the first. */
static void test_second_node_refused(void **state)
{
    fb_test_node_t a = {0}, b = {0};
    assert_int_equal(fb_test_node_start(&a), 0);
    b = a; /* same dir, same address */
    b.pid = 0;
    assert_int_not_equal(fb_test_node_restart(&b), 0);
    fb_test_node_t c = {0};
    assert_int_equal(fb_test_tmpdir(c.dir, sizeof c.dir, "second"), 0);
    snprintf(c.addr, sizeof c.addr, "%s", a.addr); /* another dir, the same port */
    assert_int_not_equal(fb_test_node_restart(&c), 0);
    fb_test_node_cleanup(&c);
    assert_int_equal(kill(a.pid, 0), 0); /* the first one still runs */
    assert_int_equal(fb_test_node_stop(&a, SIGTERM), 0);
    fb_test_node_cleanup(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_malformed_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handshake_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversize_frame, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_utf8_and_binary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nul_in_strings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fast_and_slow_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_membership, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_cursors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_credentials, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_password, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_consumer, setup_slow, teardown),
        cmocka_unit_test_setup_teardown(test_handshake_timeout, setup_hs, teardown),
        cmocka_unit_test_setup_teardown(test_http_keepalive_idle, setup_hs, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_frames, setup, teardown),
        cmocka_unit_test(test_second_node_refused),
    };
    if (getenv("FB_TEST_FILTER")) cmocka_set_test_filter(getenv("FB_TEST_FILTER"));
    return cmocka_run_group_tests_name("badinput", tests, NULL, NULL);
}
