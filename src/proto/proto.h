/* The wire format of docs/protocol.md on the server side: parsing a request
 * frame into its envelope, validating fields, and encoding replies, errors
 * and events as JSON and as WebSocket frames. It knows no sockets and no
 * threads; it never decides what an operation does.
 * SPDX-License-Identifier: MIT */
#ifndef FB_PROTO_H
#define FB_PROTO_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/fb.h"
#include "store/store.h"

#define FB_NAME_MAX 32
#define FB_PASSWORD_MIN 8
#define FB_PASSWORD_MAX 1024
#define FB_DEVICE_NAME_MAX 64
#define FB_ROOM_NAME_MAX 100
#define FB_CMID_MAX 64
#define FB_ID_STR_MAX 64
/* The largest integer id accepted (JSON numbers beyond it lose precision in
 * clients that read them as doubles); the jansson path and the fast path
 * both hold to it. */
#define FB_ID_INT_MAX ((int64_t)1 << 53)

/* A field of a frame read by fb_req_parse_fast: a string (NUL-terminated in
 * the frame's buffer) or an integer. */
typedef struct {
    const char *key; /* a static string */
    const char *str; /* NULL: the field is the integer num */
    size_t len;
    int64_t num;
} fb_req_field_t;

#define FB_REQ_FAST_MAX 5 /* fields of the largest request fb_req_parse_fast reads (send) */

/* A parsed request. From fb_req_parse: the whole object, its id (borrowed
 * from obj; NULL when unusable) and its op. From fb_req_parse_fast: no
 * object; the fields are in fast_fields and the id is the integer fast_id,
 * made a json_t only if fb_req_id is asked for it. The field readers below
 * read both kinds alike. On a parse failure, msg says why. */
typedef struct {
    json_t *obj;
    json_t *id; /* read it through fb_req_id, which works for both kinds */
    const char *op;
    bool fast;
    int64_t fast_id;
    fb_req_field_t fast_fields[FB_REQ_FAST_MAX];
    int n_fast;
    char msg[160]; /* human detail of the last validation error */
} fb_req_t;

/* Parses one text frame. Returns 0, or FB_EBADREQ / FB_EUTF8 with req->msg set
 * (req->id is still set when the frame was an object with a usable id). */
int fb_req_parse(fb_req_t *req, const char *data, size_t len);
/* Reads the common shape of a send or read frame without jansson (see
 * fastpath.c for what it accepts). true: req is filled, with values jansson
 * would give, and fb_req_free must follow; false: it declined (req untouched),
 * and fb_req_parse decides. buf holds len bytes and a NUL after them; the
 * strings are cut out of it in place, so it must outlive req. */
bool fb_req_parse_fast(fb_req_t *req, char *buf, size_t len);
void fb_req_free(fb_req_t *req);
/* The request's id for a jansson reply (NULL: none, echoed as null); for a
 * fast request it is made here and freed with req. */
json_t *fb_req_id(fb_req_t *req);

/* A request id kept until the reply (a request waiting for the writer): an
 * integer as a number, so that the common case holds no json_t, any other
 * id by a reference. */
typedef struct {
    json_t *json; /* num < 0: the id (NULL: none); else NULL, or the same id once made */
    int64_t num;  /* the integer id, or -1 */
} fb_reqid_t;

fb_reqid_t fb_req_hold_id(fb_req_t *req);
/* The id as a json_t for a jansson reply (made on first use, kept in id). */
json_t *fb_reqid_json(fb_reqid_t *id);
void fb_reqid_release(fb_reqid_t *id);

/* Field readers: 0, FB_EBADREQ (missing when required, or mistyped) or
 * FB_EINVAL (out of range), with req->msg naming the field. Optional
 * fields that are absent leave *out untouched and return 0. */
int fb_req_id_field(fb_req_t *req, const char *key, bool required, int64_t *out); /* > 0 */
int fb_req_int(fb_req_t *req, const char *key, bool required, int64_t min, int64_t max,
               int64_t *out);
int fb_req_str(fb_req_t *req, const char *key, bool required, size_t min_bytes,
               size_t max_bytes, const char **out, size_t *len);
/* A message text: 1 to max_bytes bytes; longer is FB_ETOOBIG (protocol.md). */
int fb_req_text(fb_req_t *req, const char *key, size_t max_bytes, const char **out, size_t *len);
/* An array of strings, each checked by fb_valid_user_name; at most max. */
int fb_req_names(fb_req_t *req, const char *key, bool required, size_t max, const char ***out,
                 size_t *n); /* *out is fb_malloc'd; strings borrowed */

/* Validators (true when acceptable). */
bool fb_valid_user_name(const char *s);
bool fb_valid_cmid(const char *s);
bool fb_valid_label(const char *s, size_t max_bytes); /* room / device names: no controls */

/* Encoders. All return new references. */
json_t *fb_proto_ok(json_t *id);                                /* {"id":..,"ok":true} */
/* Every ok reply: fb_proto_ok(id) updated with fields (stolen; may be NULL). */
json_t *fb_proto_reply(json_t *id, json_t *fields);
json_t *fb_proto_error(json_t *id, int err, const char *detail); /* detail may be NULL */
json_t *fb_proto_user(int64_t id, const char *name);
json_t *fb_proto_event(const fb_event_t *ev, int64_t unread); /* unread < 0: omitted */
json_t *fb_proto_member(const fb_member_t *m);
json_t *fb_proto_room_summary(const fb_room_summary_t *rs, const fb_member_t *peer);
const char *fb_proto_event_type(int kind);
const char *fb_proto_room_kind(int kind);

/* The pushes of a send (push.c), appended to out as JSON text byte for byte
 * what fb_proto_dump writes for the same object: the text event with
 * "event":"msg" (unread < 0: omitted) and the read marker. false (out->len
 * unchanged) when a string is not valid UTF-8, which jansson refuses: then
 * build the object with jansson instead, to get jansson's answer. */
bool fb_push_text_json(fb_buf_t *out, const fb_event_t *ev, int64_t unread);
bool fb_push_read_json(fb_buf_t *out, int64_t room, int64_t user, const char *name, int64_t seq);

/* The acks of a send and of a read (fastpath.c): by jansson for any id, as
 * fb_proto_reply builds them; and for an integer id as JSON text written
 * without jansson into out (FB_ACK_JSON_MAX bytes), byte for byte what
 * fb_proto_dump writes of the former. The text encoders return its length. */
#define FB_ACK_JSON_MAX 160
json_t *fb_proto_send_ack(json_t *id, int64_t room, int64_t seq, int64_t ts, bool duplicate);
json_t *fb_proto_read_ack(json_t *id, int64_t room, int64_t read_seq);
size_t fb_proto_send_ack_json(char *out, int64_t id, int64_t room, int64_t seq, int64_t ts,
                              bool duplicate);
size_t fb_proto_read_ack_json(char *out, int64_t id, int64_t room, int64_t read_seq);

/* Serialises obj compactly into out (appends). */
void fb_proto_dump(json_t *obj, fb_buf_t *out);
/* A WebSocket frame encoder (wslay underneath); one per thread. */
typedef struct fb_ws_enc fb_ws_enc_t;
fb_ws_enc_t *fb_ws_enc_new(void);
void fb_ws_enc_free(fb_ws_enc_t *e);
/* Appends one unmasked, final text frame holding payload to out. */
void fb_ws_enc_text(fb_ws_enc_t *e, fb_buf_t *out, const char *payload, size_t len);
/* Appends a close frame with code and reason (cut to fit a control frame). */
void fb_ws_enc_close(fb_ws_enc_t *e, fb_buf_t *out, uint16_t code, const char *reason);
/* Appends obj as one text frame. */
void fb_ws_enc_json(fb_ws_enc_t *e, fb_buf_t *out, json_t *obj);
/* The encoder's own buffer, emptied, for JSON text about to be framed by
 * fb_ws_enc_text (any other call on e may overwrite it). */
fb_buf_t *fb_ws_enc_scratch(fb_ws_enc_t *e);
/* The WebSocket frame of a message push ("event":"msg") and of a read-marker
 * push, appended to frame: push.c's text when it can, jansson's otherwise
 * (the same bytes either way), the JSON text held meanwhile in enc's scratch.
 * Every encoder of these pushes (the writer's, the relay's) goes through
 * here. */
void fb_push_text_frame(fb_ws_enc_t *enc, const fb_event_t *ev, int64_t unread, fb_buf_t *frame);
void fb_push_read_frame(fb_ws_enc_t *enc, int64_t room, int64_t user, const char *name, int64_t seq,
                        fb_buf_t *frame);

#endif
