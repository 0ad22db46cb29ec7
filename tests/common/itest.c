/* Integration-test helpers (see itest.h).
 * SPDX-License-Identifier: MIT */
#include "common/itest.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

/* Compact JSON of j into buf (cut to fit); "" for NULL. Allocates nothing,
 * whichever allocator jansson was given. */
static const char *dump(json_t *j, char *buf, size_t n)
{
    size_t len = j ? json_dumpb(j, buf, n - 1, JSON_COMPACT) : 0;
    buf[FB_MIN(len, n - 1)] = 0;
    return buf;
}

json_t *fb_itest_call(fb_client_t *c, json_t *req, int timeout_ms)
{
    char what[512], got[512];
    dump(req, what, sizeof what);
    json_t *reply = NULL;
    int rc = fb_client_call_sync(c, req, &reply, timeout_ms);
    if (rc) print_error("request %s failed: %s %s\n", what, fb_client_strerror(rc),
                        dump(reply, got, sizeof got));
    assert_int_equal(rc, 0);
    return reply;
}

json_t *fb_itest_history_all(fb_client_t *c, int64_t room, int page, int timeout_ms)
{
    json_t *all = json_array();
    int64_t before = 0;
    for (int i = 0; i < 100000; i++) {
        json_t *req = json_pack("{s:s,s:I,s:i}", "op", "history", "room", (json_int_t)room,
                                "limit", page);
        if (before) json_object_set_new(req, "before", json_integer(before));
        json_t *reply = fb_itest_call(c, req, timeout_ms);
        json_t *evs = json_object_get(reply, "events");
        json_t *merged = json_array();
        json_array_extend(merged, evs);
        json_array_extend(merged, all);
        json_decref(all);
        all = merged;
        bool more = json_is_true(json_object_get(reply, "more"));
        size_t n = json_array_size(evs);
        if (n) before = json_integer_value(json_object_get(json_array_get(evs, 0), "seq"));
        json_decref(reply);
        if (!more || !n) break;
    }
    return all;
}
