/* Helpers shared by the integration tests that drive a node through the
 * client library: a request that must succeed, and a room's whole history.
 * They fail the current cmocka test on error.
 * SPDX-License-Identifier: MIT */
#ifndef FB_ITEST_H
#define FB_ITEST_H

#include <jansson.h>
#include <stdint.h>

#include "client/client.h"

/* Sends req (stolen) and waits up to timeout_ms for an ok reply, which is
 * returned (json_decref it); anything else fails the test, saying why. */
json_t *fb_itest_call(fb_client_t *c, json_t *req, int timeout_ms);
/* Every visible event of room, oldest first, paging `history` backwards
 * `page` events at a time. */
json_t *fb_itest_history_all(fb_client_t *c, int64_t room, int page, int timeout_ms);

#endif
