/* One typed call per protocol operation, each a thin builder of the request
 * object over fb_client_request. No protocol logic lives here: replies and
 * their side effects are client.c's.
 * SPDX-License-Identifier: MIT */
#include "client/client_int.h"

static json_t *names_array(const char *const *names, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(names[i]));
    return a;
}

/* json_pack refuses NULL strings and invalid UTF-8: both are FB_EINVAL. */
static int submit(fb_client_t *c, json_t *req, fb_client_reply_cb cb, void *ud)
{
    if (!req) return FB_EINVAL;
    return fb_client__submit(c, req, cb, ud, NULL);
}

static int account_op(fb_client_t *c, const char *op, const char *user, const char *password,
                      const char *device, fb_client_reply_cb cb, void *ud)
{
    json_t *req = json_pack("{s:s,s:s,s:s}", "op", op, "user", user, "password", password);
    if (req && device) json_object_set_new(req, "device", json_string(device));
    return submit(c, req, cb, ud);
}

int fb_client_register(fb_client_t *c, const char *user, const char *password, const char *device,
                       fb_client_reply_cb cb, void *ud)
{
    return account_op(c, "register", user, password, device, cb, ud);
}

int fb_client_login(fb_client_t *c, const char *user, const char *password, const char *device,
                    fb_client_reply_cb cb, void *ud)
{
    return account_op(c, "login", user, password, device, cb, ud);
}

int fb_client_auth(fb_client_t *c, const char *token, fb_client_reply_cb cb, void *ud)
{
    return submit(c, json_pack("{s:s,s:s}", "op", "auth", "token", token), cb, ud);
}

int fb_client_logout(fb_client_t *c, int64_t device, fb_client_reply_cb cb, void *ud)
{
    json_t *req = json_pack("{s:s}", "op", "logout");
    if (device) json_object_set_new(req, "device", json_integer(device));
    return submit(c, req, cb, ud);
}

int fb_client_devices(fb_client_t *c, fb_client_reply_cb cb, void *ud)
{
    return submit(c, json_pack("{s:s}", "op", "devices"), cb, ud);
}

int fb_client_direct(fb_client_t *c, const char *user, fb_client_reply_cb cb, void *ud)
{
    return submit(c, json_pack("{s:s,s:s}", "op", "direct", "user", user), cb, ud);
}

int fb_client_create_group(fb_client_t *c, const char *name, const char *const *members, size_t n,
                           fb_client_reply_cb cb, void *ud)
{
    return submit(c,
                  json_pack("{s:s,s:s,s:o}", "op", "create_group", "name", name, "members",
                            names_array(members, n)),
                  cb, ud);
}

int fb_client_invite(fb_client_t *c, int64_t room, const char *const *users, size_t n,
                     fb_client_reply_cb cb, void *ud)
{
    return submit(c,
                  json_pack("{s:s,s:I,s:o}", "op", "invite", "room", (json_int_t)room, "users",
                            names_array(users, n)),
                  cb, ud);
}

int fb_client_leave(fb_client_t *c, int64_t room, fb_client_reply_cb cb, void *ud)
{
    return submit(c, json_pack("{s:s,s:I}", "op", "leave", "room", (json_int_t)room), cb, ud);
}

int fb_client_kick(fb_client_t *c, int64_t room, const char *user, fb_client_reply_cb cb, void *ud)
{
    return submit(c,
                  json_pack("{s:s,s:I,s:s}", "op", "kick", "room", (json_int_t)room, "user", user),
                  cb, ud);
}

int fb_client_rename(fb_client_t *c, int64_t room, const char *name, fb_client_reply_cb cb,
                     void *ud)
{
    return submit(
        c, json_pack("{s:s,s:I,s:s}", "op", "rename", "room", (json_int_t)room, "name", name), cb,
        ud);
}

int fb_client_rooms(fb_client_t *c, fb_client_reply_cb cb, void *ud)
{
    return submit(c, json_pack("{s:s}", "op", "rooms"), cb, ud);
}

int fb_client_room(fb_client_t *c, int64_t room, fb_client_reply_cb cb, void *ud)
{
    return submit(c, json_pack("{s:s,s:I}", "op", "room", "room", (json_int_t)room), cb, ud);
}

int fb_client_send(fb_client_t *c, int64_t room, const char *text, const char *cmid,
                   fb_client_reply_cb cb, void *ud)
{
    json_t *req = json_pack("{s:s,s:I,s:s}", "op", "send", "room", (json_int_t)room, "text", text);
    if (req && cmid) json_object_set_new(req, "cmid", json_string(cmid));
    return submit(c, req, cb, ud);
}

int fb_client_read(fb_client_t *c, int64_t room, int64_t seq, fb_client_reply_cb cb, void *ud)
{
    return submit(
        c,
        json_pack("{s:s,s:I,s:I}", "op", "read", "room", (json_int_t)room, "seq", (json_int_t)seq),
        cb, ud);
}

int fb_client_history(fb_client_t *c, int64_t room, int64_t before, int limit,
                      fb_client_reply_cb cb, void *ud)
{
    json_t *req = json_pack("{s:s,s:I}", "op", "history", "room", (json_int_t)room);
    if (before > 0) json_object_set_new(req, "before", json_integer(before));
    if (limit > 0) json_object_set_new(req, "limit", json_integer(limit));
    return submit(c, req, cb, ud);
}

int fb_client_ping(fb_client_t *c, fb_client_reply_cb cb, void *ud)
{
    return submit(c, json_pack("{s:s}", "op", "ping"), cb, ud);
}
