/* The fan-out hub of one io loop: which authenticated connections of this
 * loop belong to which user, and delivery of committed pushes to them. The
 * frame of a push is encoded once (by the writer) and copied into each
 * recipient's output, which is written once per loop iteration.
 * SPDX-License-Identifier: MIT */
#include "server/server.h"

void fb_hub_add(fb_conn_t *c)
{
    if (c->user_id <= 0) return;
    fb_loop_t *l = c->loop;
    fb_conn_t *head = fb_map_get(&l->users, c->user_id);
    c->user_prev = NULL;
    c->user_next = head;
    if (head) head->user_prev = c;
    fb_map_put(&l->users, c->user_id, c);
}

void fb_hub_remove(fb_conn_t *c)
{
    if (c->user_id <= 0) return;
    fb_loop_t *l = c->loop;
    if (c->user_prev) {
        c->user_prev->user_next = c->user_next;
    } else if (c->user_next) {
        fb_map_put(&l->users, c->user_id, c->user_next);
    } else {
        fb_map_del(&l->users, c->user_id);
    }
    if (c->user_next) c->user_next->user_prev = c->user_prev;
    c->user_next = c->user_prev = NULL;
    c->user_id = 0;
}

static void to_user(fb_loop_t *l, int64_t uid, const fb_push_t *p)
{
    fb_conn_t *c = fb_map_get(&l->users, uid);
    while (c) {
        fb_conn_t *next = c->user_next; /* c may close as a slow consumer */
        fb_conn_write_raw(c, p->frame.data, p->frame.len);
        atomic_fetch_add_explicit(&l->stats.pushes, 1, memory_order_relaxed);
        c = next;
    }
}

static void logout(fb_loop_t *l, const fb_push_t *p)
{
    fb_conn_t *c = fb_map_get(&l->users, p->user_id);
    while (c) {
        fb_conn_t *next = c->user_next;
        if (c->device_id == p->device_id) {
            fb_conn_send_json(c, json_pack("{s:s}", "event", "logged_out"));
            fb_hub_remove(c);
            fb_conn_ws_close(c, 4001, "logged out");
        }
        c = next;
    }
}

void fb_hub_push(fb_loop_t *l, const fb_push_t *p)
{
    if (p->type == FB_PUSH_LOGOUT) {
        logout(l, p);
        return;
    }
    if (!l->users.live) return;
    for (size_t i = 0; i < p->members->n; i++) to_user(l, p->members->ids[i], p);
    if (p->extra) to_user(l, p->extra, p);
}
