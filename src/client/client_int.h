/* Internals shared by the client library's files: the client object, the
 * request records and the transport interface between client_conn.c (bytes,
 * HTTP upgrade, WebSocket) and client.c (protocol). Nothing outside
 * src/client may include this.
 * SPDX-License-Identifier: MIT */
#ifndef FB_CLIENT_INT_H
#define FB_CLIENT_INT_H

#include "client/client.h"
#include "client/client_state.h"

/* A request of the app (queued until the connection can carry it, then in
 * flight) or of the library itself (hello, login, sync: bound to one
 * connection, dropped with it). */
typedef struct fb_creq {
    struct fb_creq *prev, *next;
    uint64_t handle;
    uint64_t id; /* wire id once sent */
    json_t *req;
    char op[24];
    fb_client_reply_cb cb;
    void *ud;
    fb_cout_t *out; /* op "send": its outbox entry */
    bool internal;
    bool preauth; /* may go out before login (register, login, auth, ping) */
} fb_creq_t;

typedef struct {
    fb_creq_t *head, *tail;
    size_t n;
} fb_creq_list_t;

typedef struct fb_conn fb_conn_t;

/* handshake steps on one connection */
enum { HS_NONE, HS_WAIT_SERVER_HELLO, HS_HELLO_SENT, HS_LOGIN_SENT, HS_DONE };

struct fb_client {
    uv_loop_t *loop;
    fb_client_event_cb on_event;
    fb_client_state_cb on_state;
    void *ud;
    bool queue_events, raw_events, no_sync;
    int connect_timeout_ms, keepalive_ms;
    char *state_path;
    char *password;
    char *device_name;
    char **addrs;
    size_t n_addrs, addr_i;

    fb_cstate_t st;
    fb_client_state_t state;
    int stop_err;
    bool ever_connected;
    bool closing;
    fb_client_close_cb close_cb;

    fb_conn_t *conn;
    int hs;
    int failures;
    int64_t deadline_ms; /* handshake must finish by then (uv_now) */
    int64_t last_rx_ms;
    int64_t last_ping_ms;
    int max_frame_bytes, max_text_bytes;

    uv_timer_t retry_timer; /* reconnect backoff */
    uv_timer_t tick;        /* timeouts, keepalive, deferred saves, send retries */
    uv_timer_t wait_timer;  /* the blocking layer */
    int open_handles;
    bool wait_expired;

    uint64_t next_id, next_handle;
    fb_creq_list_t queue, inflight;

    bool syncing, resync;
    int64_t sync_retry_at;
    size_t sync_events;
    fb_creq_list_t sync_waiters;

    bool dirty;

    json_t **evq;
    size_t evq_head, evq_n, evq_cap;
};

/* transport (client_conn.c) */
fb_conn_t *fb_conn_start(fb_client_t *c, const char *addr, int *err);
int fb_conn_send_text(fb_conn_t *conn, const char *data, size_t len);
int fb_conn_ping(fb_conn_t *conn);
/* Detaches from the client and closes; no callback into the client after. */
void fb_conn_abort(fb_conn_t *conn);

/* transport -> client (client.c) */
void fb_client__on_open(fb_client_t *c);
void fb_client__on_text(fb_client_t *c, const char *data, size_t len);
/* close_code: the server's WebSocket close code, 0 when none */
void fb_client__on_lost(fb_client_t *c, int err, int close_code);

/* client.c, for client_ops.c and client_sync.c */
int fb_client__submit(fb_client_t *c, json_t *req, fb_client_reply_cb cb, void *ud,
                      uint64_t *handle);
bool fb_client__has_credentials(const fb_client_t *c);

#endif
