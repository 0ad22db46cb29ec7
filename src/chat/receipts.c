/* Unread counts of messages from the members' read markers.
 * SPDX-License-Identifier: MIT */
#include "chat/receipts.h"

int64_t fb_unread_for(const fb_member_t *ms, size_t n, const fb_event_t *ev)
{
    if (ev->kind != FB_EV_TEXT) return -1;
    int64_t unread = 0;
    for (size_t i = 0; i < n; i++) {
        const fb_member_t *m = &ms[i];
        if (m->user_id != ev->actor_id && m->joined_seq <= ev->seq && m->read_seq < ev->seq)
            unread++;
    }
    return unread;
}
