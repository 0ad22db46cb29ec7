/* Per-message unread counts, KakaoTalk's "1" beside a message: how many
 * current members have not read it yet. Pure functions over member rows.
 * SPDX-License-Identifier: MIT */
#ifndef FB_RECEIPTS_H
#define FB_RECEIPTS_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* Members (current) who joined at or before ev, are not its sender, and
 * whose read marker is below it. -1 for events that are not text. */
int64_t fb_unread_for(const fb_member_t *ms, size_t n, const fb_event_t *ev);

#endif
