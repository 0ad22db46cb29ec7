/* Request envelopes, field validation and the encoders of replies, errors,
 * users, members, events and room summaries (docs/protocol.md). It never
 * touches a socket; WebSocket framing is delegated to wslay.
 * SPDX-License-Identifier: MIT */
#include "proto/proto.h"

#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <wslay/wslay.h>

/* ---- parsing ---- */

/* Frames are parsed with NUL allowed (so that the error can name the
 * field): every string read must then be checked for one. */
static bool has_nul(json_t *s)
{
    return strlen(json_string_value(s)) != json_string_length(s);
}

static bool id_usable(json_t *id)
{
    if (json_is_integer(id)) {
        json_int_t v = json_integer_value(id);
        return v >= 0 && v <= FB_ID_INT_MAX;
    }
    return json_is_string(id) && json_string_length(id) <= FB_ID_STR_MAX;
}

int fb_req_parse(fb_req_t *req, const char *data, size_t len)
{
    memset(req, 0, sizeof *req);
    json_error_t jerr;
    /* NUL is let through here so that fb_req_str can name the field it is in. */
    req->obj = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!req->obj) {
        bool utf8 = json_error_code(&jerr) == json_error_invalid_utf8;
        snprintf(req->msg, sizeof req->msg, "%s", utf8 ? "frame is not valid UTF-8" : jerr.text);
        return utf8 ? FB_EUTF8 : FB_EBADREQ;
    }
    if (!json_is_object(req->obj)) {
        snprintf(req->msg, sizeof req->msg, "a request must be a JSON object");
        return FB_EBADREQ;
    }
    json_t *id = json_object_get(req->obj, "id");
    if (!id || !id_usable(id)) {
        snprintf(req->msg, sizeof req->msg,
                 "\"id\" must be an integer 0..2^53 or a string of at most 64 bytes");
        return FB_EBADREQ;
    }
    req->id = id;
    json_t *op = json_object_get(req->obj, "op");
    if (!json_is_string(op) || has_nul(op)) {
        snprintf(req->msg, sizeof req->msg, "\"op\" must be a string");
        return FB_EBADREQ;
    }
    req->op = json_string_value(op);
    return 0;
}

void fb_req_free(fb_req_t *req)
{
    if (req->fast) json_decref(req->id); /* made by fb_req_id, else borrowed from obj */
    json_decref(req->obj);
    req->obj = NULL;
    req->id = NULL;
}

json_t *fb_req_id(fb_req_t *req)
{
    if (req->fast && !req->id) req->id = json_integer(req->fast_id);
    return req->id;
}

fb_reqid_t fb_req_hold_id(fb_req_t *req)
{
    if (req->fast) return (fb_reqid_t){NULL, req->fast_id};
    if (json_is_integer(req->id)) return (fb_reqid_t){NULL, json_integer_value(req->id)};
    return (fb_reqid_t){json_incref(req->id), -1};
}

json_t *fb_reqid_json(fb_reqid_t *id)
{
    if (!id->json && id->num >= 0) id->json = json_integer(id->num);
    return id->json;
}

void fb_reqid_release(fb_reqid_t *id)
{
    json_decref(id->json);
    id->json = NULL;
}

static int field_missing(fb_req_t *req, const char *key, const char *type)
{
    snprintf(req->msg, sizeof req->msg, "\"%s\" must be %s", key, type);
    return FB_EBADREQ;
}

/* A field as the readers see it, whichever parser read the frame: that is
 * what keeps one copy of every check for both. */
enum { F_ABSENT, F_INT, F_STR, F_OTHER };
typedef struct {
    int type;
    int64_t num;
    const char *str; /* NUL-terminated, and may hold NULs before len */
    size_t len;
} field_t;

static field_t field_get(fb_req_t *req, const char *key)
{
    field_t f = {F_ABSENT, 0, NULL, 0};
    if (req->fast) {
        for (int i = 0; i < req->n_fast; i++) {
            const fb_req_field_t *x = &req->fast_fields[i];
            if (strcmp(x->key, key) != 0) continue;
            if (x->str) return (field_t){F_STR, 0, x->str, x->len};
            return (field_t){F_INT, x->num, NULL, 0};
        }
        return f;
    }
    json_t *v = json_object_get(req->obj, key);
    if (json_is_integer(v))
        f = (field_t){F_INT, json_integer_value(v), NULL, 0};
    else if (json_is_string(v))
        f = (field_t){F_STR, 0, json_string_value(v), json_string_length(v)};
    else if (v)
        f.type = F_OTHER;
    return f;
}

int fb_req_int(fb_req_t *req, const char *key, bool required, int64_t min, int64_t max,
               int64_t *out)
{
    field_t v = field_get(req, key);
    if (v.type == F_ABSENT && !required) return 0;
    if (v.type != F_INT) return field_missing(req, key, "an integer");
    if (v.num < min || v.num > max) {
        snprintf(req->msg, sizeof req->msg, "\"%s\" must be between %lld and %lld", key,
                 (long long)min, (long long)max);
        return FB_EINVAL;
    }
    *out = v.num;
    return 0;
}

int fb_req_id_field(fb_req_t *req, const char *key, bool required, int64_t *out)
{
    return fb_req_int(req, key, required, 1, INT64_MAX, out);
}

int fb_req_str(fb_req_t *req, const char *key, bool required, size_t min_bytes,
               size_t max_bytes, const char **out, size_t *len)
{
    field_t v = field_get(req, key);
    if (v.type == F_ABSENT && !required) return 0;
    if (v.type != F_STR) return field_missing(req, key, "a string");
    if (v.len < min_bytes || v.len > max_bytes) {
        snprintf(req->msg, sizeof req->msg, "\"%s\" must be %zu to %zu bytes", key, min_bytes,
                 max_bytes);
        return FB_EINVAL; /* callers turn it into too_large where that is documented */
    }
    if (memchr(v.str, 0, v.len)) {
        snprintf(req->msg, sizeof req->msg, "\"%s\" must not contain NUL", key);
        return FB_EINVAL;
    }
    *out = v.str;
    if (len) *len = v.len;
    return 0;
}

int fb_req_text(fb_req_t *req, const char *key, size_t max_bytes, const char **out, size_t *len)
{
    int rc = fb_req_str(req, key, true, 1, max_bytes, out, len);
    if (rc == FB_EINVAL && field_get(req, key).len > max_bytes) rc = FB_ETOOBIG;
    return rc;
}

/* Arrays are never in a fast request: there, every array is absent. */
int fb_req_names(fb_req_t *req, const char *key, bool required, size_t max, const char ***out,
                 size_t *n)
{
    json_t *v = json_object_get(req->obj, key);
    *out = NULL;
    *n = 0;
    if (!v && !required) return 0;
    if (!json_is_array(v)) return field_missing(req, key, "an array of user names");
    size_t count = json_array_size(v);
    if (count > max) {
        snprintf(req->msg, sizeof req->msg, "\"%s\" holds more than %zu names", key, max);
        return FB_ETOOBIG;
    }
    const char **names = fb_calloc(count ? count : 1, sizeof *names);
    for (size_t i = 0; i < count; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_string(e) || has_nul(e) || !fb_valid_user_name(json_string_value(e))) {
            fb_free(names);
            snprintf(req->msg, sizeof req->msg, "\"%s\"[%zu] is not a valid user name", key, i);
            return FB_EINVAL;
        }
        names[i] = json_string_value(e);
    }
    *out = names;
    *n = count;
    return 0;
}

/* ---- validators ---- */

bool fb_valid_user_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > FB_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-'))) return false;
    }
    return true;
}

bool fb_valid_cmid(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > FB_CMID_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

/* UTF-8 validity is already enforced by jansson; this rejects C0/C1 controls
 * and DEL, which would corrupt a terminal's room list. */
bool fb_valid_label(const char *s, size_t max_bytes)
{
    size_t n = strlen(s);
    if (n > max_bytes) return false;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n; i++) {
        if (u[i] < 0x20 || u[i] == 0x7f) return false;
        if (u[i] == 0xc2 && i + 1 < n && u[i + 1] >= 0x80 && u[i + 1] < 0xa0) return false;
    }
    return true;
}

/* ---- encoders ---- */

json_t *fb_proto_ok(json_t *id)
{
    return json_pack("{s:O,s:b}", "id", id ? id : json_null(), "ok", 1);
}

json_t *fb_proto_reply(json_t *id, json_t *fields)
{
    json_t *o = fb_proto_ok(id);
    if (fields) json_object_update(o, fields);
    json_decref(fields);
    return o;
}

json_t *fb_proto_error(json_t *id, int err, const char *detail)
{
    const char *msg = detail && *detail ? detail : fb_err_message(err);
    return json_pack("{s:O,s:b,s:{s:s,s:s,s:b}}", "id", id ? id : json_null(), "ok", 0, "error",
                     "code", fb_err_code(err), "message", msg, "retryable",
                     fb_err_retryable(err));
}

json_t *fb_proto_user(int64_t id, const char *name)
{
    return json_pack("{s:I,s:s}", "id", (json_int_t)id, "name", name ? name : "");
}

const char *fb_proto_event_type(int kind)
{
    switch (kind) {
    case FB_EV_TEXT: return "text";
    case FB_EV_CREATE: return "create";
    case FB_EV_JOIN: return "join";
    case FB_EV_LEAVE: return "leave";
    case FB_EV_KICK: return "kick";
    case FB_EV_RENAME: return "rename";
    }
    return "unknown";
}

const char *fb_proto_room_kind(int kind)
{
    return kind == FB_ROOM_DIRECT ? "direct" : "group";
}

json_t *fb_proto_event(const fb_event_t *ev, int64_t unread)
{
    json_t *o = json_pack("{s:I,s:I,s:I,s:s,s:o}", "room", (json_int_t)ev->room_id, "seq",
                          (json_int_t)ev->seq, "ts", (json_int_t)ev->ts_ms, "type",
                          fb_proto_event_type(ev->kind), "from",
                          fb_proto_user(ev->actor_id, ev->actor_name));
    switch (ev->kind) {
    case FB_EV_TEXT:
        json_object_set_new(o, "device", json_integer(ev->actor_device));
        json_object_set_new(o, "cmid", json_string(ev->cmid ? ev->cmid : ""));
        json_object_set_new(o, "text", json_string(ev->text ? ev->text : ""));
        if (unread >= 0) json_object_set_new(o, "unread", json_integer(unread));
        break;
    case FB_EV_CREATE:
    case FB_EV_RENAME:
        json_object_set_new(o, "name", json_string(ev->text ? ev->text : ""));
        break;
    case FB_EV_JOIN:
    case FB_EV_KICK:
        json_object_set_new(o, "target", fb_proto_user(ev->target_id, ev->target_name));
        break;
    }
    return o;
}

json_t *fb_proto_member(const fb_member_t *m)
{
    return json_pack("{s:I,s:s,s:s,s:I,s:I}", "id", (json_int_t)m->user_id, "name",
                     m->user_name ? m->user_name : "", "role",
                     m->role == FB_ROLE_OWNER ? "owner" : "member", "joined_seq",
                     (json_int_t)m->joined_seq, "read_seq", (json_int_t)m->read_seq);
}

json_t *fb_proto_room_summary(const fb_room_summary_t *rs, const fb_member_t *peer)
{
    json_t *o = json_pack("{s:I,s:s,s:s,s:I,s:I,s:i,s:I,s:I}", "room", (json_int_t)rs->room.id,
                          "kind", fb_proto_room_kind(rs->room.kind), "name",
                          rs->room.name ? rs->room.name : "", "owner",
                          (json_int_t)rs->room.owner_id, "last_seq",
                          (json_int_t)rs->room.last_seq, "member_count", rs->member_count,
                          "read_seq", (json_int_t)rs->me.read_seq, "unread",
                          (json_int_t)rs->unread);
    if (peer) json_object_set_new(o, "peer", fb_proto_user(peer->user_id, peer->user_name));
    if (rs->has_last) json_object_set_new(o, "last", fb_proto_event(&rs->last, -1));
    return o;
}

void fb_proto_dump(json_t *obj, fb_buf_t *out)
{
    size_t n = json_dumpb(obj, NULL, 0, JSON_COMPACT);
    fb_buf_reserve(out, n);
    out->len += json_dumpb(obj, out->data + out->len, n, JSON_COMPACT);
}

/* ---- WebSocket framing (by wslay) ---- */

struct fb_ws_enc {
    wslay_frame_context_ptr ctx;
    fb_buf_t *out;    /* the buffer of the call in progress */
    fb_buf_t scratch; /* JSON text before framing; kept, so a reply allocates nothing */
};

static ssize_t frame_sink(const uint8_t *data, size_t len, int flags, void *ud)
{
    fb_ws_enc_t *e = ud;
    fb_buf_append(e->out, data, len);
    return (ssize_t)len;
}

static int no_mask(uint8_t *buf, size_t len, void *ud)
{
    return -1; /* server frames are never masked */
}

fb_ws_enc_t *fb_ws_enc_new(void)
{
    static const struct wslay_frame_callbacks cbs = {frame_sink, NULL, no_mask};
    fb_ws_enc_t *e = fb_calloc(1, sizeof *e);
    if (wslay_frame_context_init(&e->ctx, &cbs, e) != 0) abort();
    return e;
}

void fb_ws_enc_free(fb_ws_enc_t *e)
{
    if (!e) return;
    wslay_frame_context_free(e->ctx);
    fb_buf_free(&e->scratch);
    fb_free(e);
}

static void enc_frame(fb_ws_enc_t *e, fb_buf_t *out, uint8_t opcode, const char *payload,
                      size_t len)
{
    struct wslay_frame_iocb io = {.fin = 1, .opcode = opcode, .payload_length = len};
    e->out = out;
    fb_buf_reserve(out, len + 10);
    size_t done = 0;
    do {
        io.data = (const uint8_t *)payload + done;
        io.data_length = len - done;
        ssize_t r = wslay_frame_send(e->ctx, &io);
        if (r < 0) abort(); /* cannot fail: the sink takes everything */
        done += (size_t)r;
    } while (done < len);
    e->out = NULL;
}

void fb_ws_enc_text(fb_ws_enc_t *e, fb_buf_t *out, const char *payload, size_t len)
{
    enc_frame(e, out, WSLAY_TEXT_FRAME, payload, len);
}

void fb_ws_enc_close(fb_ws_enc_t *e, fb_buf_t *out, uint16_t code, const char *reason)
{
    char payload[125]; /* a control frame's payload limit */
    size_t n = FB_MIN(strlen(reason), sizeof payload - 2);
    payload[0] = (char)(code >> 8);
    payload[1] = (char)(code & 0xff);
    memcpy(payload + 2, reason, n);
    enc_frame(e, out, WSLAY_CONNECTION_CLOSE, payload, n + 2);
}

fb_buf_t *fb_ws_enc_scratch(fb_ws_enc_t *e)
{
    fb_buf_reset(&e->scratch);
    return &e->scratch;
}

void fb_ws_enc_json(fb_ws_enc_t *e, fb_buf_t *out, json_t *obj)
{
    fb_buf_reset(&e->scratch);
    fb_proto_dump(obj, &e->scratch);
    fb_ws_enc_text(e, out, e->scratch.data, e->scratch.len);
    if (e->scratch.cap > (1 << 20)) fb_buf_free(&e->scratch); /* a huge sync reply is not kept */
}
