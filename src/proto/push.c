/* The two pushes that every send makes (the text event, and the sender's
 * read marker when it moved past other messages), written straight into a
 * buffer instead of built as jansson objects and dumped: the writer thread
 * encodes one per sent message. The output must stay byte for byte what
 * fb_proto_dump writes for the same object (jansson 2.14, compact: keys in
 * insertion order, only '"', '\\' and controls escaped, \uXXXX upper case);
 * tests/unit/test_proto.c holds it to that. A string that is not valid
 * UTF-8, which jansson would refuse, makes an encoder answer false so that
 * the caller takes the jansson path and gets jansson's answer.
 * SPDX-License-Identifier: MIT */
#include <string.h>

#include "proto/proto.h"
#include "proto/text.h"

/* Writes s as a JSON string at p, which has room for 2 + 6 * strlen(s) bytes.
 * Returns the end, or NULL when s is not valid UTF-8. */
static char *put_str(char *p, const char *str)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *s = (const unsigned char *)str;
    *p++ = '"';
    while (*s) {
        unsigned char c = *s;
        if (c >= 0x80) {
            size_t n = fb_utf8_seq((const char *)s);
            if (!n) return NULL;
            memcpy(p, s, n);
            p += n;
            s += n;
            continue;
        }
        s++;
        if (c >= 0x20 && c != '"' && c != '\\') {
            *p++ = (char)c;
            continue;
        }
        *p++ = '\\';
        switch (c) {
        case '"':
            *p++ = '"';
            break;
        case '\\':
            *p++ = '\\';
            break;
        case '\b':
            *p++ = 'b';
            break;
        case '\f':
            *p++ = 'f';
            break;
        case '\n':
            *p++ = 'n';
            break;
        case '\r':
            *p++ = 'r';
            break;
        case '\t':
            *p++ = 't';
            break;
        default:
            memcpy(p, "u00", 3);
            p[3] = hex[c >> 4];
            p[4] = hex[c & 0xF];
            p += 5;
        }
    }
    *p++ = '"';
    return p;
}

/* Room for a JSON string of s. */
static size_t str_room(const char *s)
{
    return 2 + 6 * strlen(s);
}

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

bool fb_push_text_json(fb_buf_t *out, const fb_event_t *ev, int64_t unread)
{
    const char *name = or_empty(ev->actor_name), *cmid = or_empty(ev->cmid),
               *text = or_empty(ev->text);
    /* the fixed text of the object is under 128 bytes; 7 integers of at most 20 */
    fb_buf_reserve(out, 128 + 7 * 20 + str_room(name) + str_room(cmid) + str_room(text));
    char *p = out->data + out->len;
    p = fb_text_put_lit(p, "{\"room\":");
    p = fb_text_put_int(p, ev->room_id);
    p = fb_text_put_lit(p, ",\"seq\":");
    p = fb_text_put_int(p, ev->seq);
    p = fb_text_put_lit(p, ",\"ts\":");
    p = fb_text_put_int(p, ev->ts_ms);
    p = fb_text_put_lit(p, ",\"type\":\"text\",\"from\":{\"id\":");
    p = fb_text_put_int(p, ev->actor_id);
    p = fb_text_put_lit(p, ",\"name\":");
    if (!(p = put_str(p, name))) return false;
    p = fb_text_put_lit(p, "},\"device\":");
    p = fb_text_put_int(p, ev->actor_device);
    p = fb_text_put_lit(p, ",\"cmid\":");
    if (!(p = put_str(p, cmid))) return false;
    p = fb_text_put_lit(p, ",\"text\":");
    if (!(p = put_str(p, text))) return false;
    if (unread >= 0) {
        p = fb_text_put_lit(p, ",\"unread\":");
        p = fb_text_put_int(p, unread);
    }
    p = fb_text_put_lit(p, ",\"event\":\"msg\"}");
    out->len = (size_t)(p - out->data);
    return true;
}

bool fb_push_read_json(fb_buf_t *out, int64_t room, int64_t user, const char *name, int64_t seq)
{
    name = or_empty(name);
    fb_buf_reserve(out, 64 + 3 * 20 + str_room(name));
    char *p = out->data + out->len;
    p = fb_text_put_lit(p, "{\"event\":\"read\",\"room\":");
    p = fb_text_put_int(p, room);
    p = fb_text_put_lit(p, ",\"user\":{\"id\":");
    p = fb_text_put_int(p, user);
    p = fb_text_put_lit(p, ",\"name\":");
    if (!(p = put_str(p, name))) return false;
    p = fb_text_put_lit(p, "},\"seq\":");
    p = fb_text_put_int(p, seq);
    *p++ = '}';
    out->len = (size_t)(p - out->data);
    return true;
}

/* ---- the frames, with jansson where the fast path declines ---- */

void fb_push_text_frame(fb_ws_enc_t *enc, const fb_event_t *ev, int64_t unread, fb_buf_t *frame)
{
    fb_buf_t *scratch = fb_ws_enc_scratch(enc);
    if (ev->kind == FB_EV_TEXT && fb_push_text_json(scratch, ev, unread)) {
        fb_ws_enc_text(enc, frame, scratch->data, scratch->len);
        return;
    }
    json_t *o = fb_proto_event(ev, unread);
    json_object_set_new(o, "event", json_string("msg"));
    fb_ws_enc_json(enc, frame, o);
    json_decref(o);
}

void fb_push_read_frame(fb_ws_enc_t *enc, int64_t room, int64_t user, const char *name, int64_t seq,
                        fb_buf_t *frame)
{
    fb_buf_t *scratch = fb_ws_enc_scratch(enc);
    if (fb_push_read_json(scratch, room, user, name, seq)) {
        fb_ws_enc_text(enc, frame, scratch->data, scratch->len);
        return;
    }
    json_t *o = json_pack("{s:s,s:I,s:o,s:I}", "event", "read", "room", (json_int_t)room, "user",
                          fb_proto_user(user, name), "seq", (json_int_t)seq);
    fb_ws_enc_json(enc, frame, o);
    json_decref(o);
}
