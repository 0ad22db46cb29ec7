/* The jansson-free path of the two hot requests, send and read.
 *
 * fb_req_parse_fast reads the common shape of their frames: one flat object
 * with exactly the op's keys (send: id, op, room, cmid, text; read: id, op,
 * room, seq) in any order, JSON whitespace between tokens, an integer id of
 * 0 to 2^53, room and seq as plain decimal integers that fit an int64, and
 * strings with no backslash, no control character and valid UTF-8. It
 * declines everything else (escapes, any other key, a duplicate, a string
 * id, a sign, a fraction or exponent, a number out of range, trailing bytes)
 * and the frame then goes to fb_req_parse (jansson) as if there were no fast
 * path. What it accepts, jansson accepts with the same values; the field
 * readers, the connection's state checks and the op's validation then run
 * the same code for both kinds of request (tests/unit/test_proto.c holds the
 * two parsers to that). It must never accept what jansson would refuse.
 *
 * The acks of both, when the id is an integer, are written here as text
 * without jansson, byte for byte what fb_conn_reply sends for them (keys in
 * fb_proto_reply's order, compact); errors and other ids take jansson.
 * SPDX-License-Identifier: MIT */
#include <string.h>

#include "proto/proto.h"
#include "proto/text.h"

enum { K_ID, K_OP, K_ROOM, K_CMID, K_TEXT, K_SEQ, K_COUNT };

static const struct {
    const char *name;
    size_t len;
} keys[K_COUNT] = {
    [K_ID] = {"id", 2},     [K_OP] = {"op", 2},     [K_ROOM] = {"room", 4},
    [K_CMID] = {"cmid", 4}, [K_TEXT] = {"text", 4}, [K_SEQ] = {"seq", 3},
};

#define BIT(k) (1u << (k))
#define SEND_KEYS (BIT(K_ID) | BIT(K_OP) | BIT(K_ROOM) | BIT(K_CMID) | BIT(K_TEXT))
#define READ_KEYS (BIT(K_ID) | BIT(K_OP) | BIT(K_ROOM) | BIT(K_SEQ))
#define STR_KEYS (BIT(K_OP) | BIT(K_CMID) | BIT(K_TEXT)) /* the others are integers */

/* JSON's whitespace, as jansson skips it. */
static char *skip_ws(char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

/* The closing quote of the string whose text starts at p; NULL when the
 * string holds a backslash, a control character (the NUL after the frame
 * included) or a byte sequence that is not UTF-8. */
static char *str_end(char *p)
{
    for (;;) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return p;
        if (c < 0x20 || c == '\\') return NULL;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t n = fb_utf8_seq(p);
        if (!n) return NULL;
        p += n;
    }
}

/* A decimal integer without sign at *pp that jansson reads as the same
 * int64: no leading zero, no overflow. A fraction or an exponent after it is
 * left for the caller, which refuses any token but ',' and '}' there. */
static bool read_uint(char **pp, int64_t *out)
{
    char *p = *pp;
    if (*p < '0' || *p > '9') return false;
    if (*p == '0' && p[1] >= '0' && p[1] <= '9') return false;
    uint64_t v = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = (int64_t)v;
    *pp = p;
    return true;
}

static int key_index(const char *k, size_t len)
{
    for (int i = 0; i < K_COUNT; i++)
        if (keys[i].len == len && memcmp(keys[i].name, k, len) == 0) return i;
    return -1;
}

/* Reads the object's members into v (by key), seen saying which; false at
 * the first thing outside the shape. */
static bool read_members(char *buf, size_t len, fb_req_field_t *v, unsigned *seen)
{
    char *p = skip_ws(buf);
    if (*p++ != '{') return false;
    for (;;) {
        p = skip_ws(p);
        if (*p++ != '"') return false;
        char *kend = str_end(p);
        if (!kend) return false;
        int k = key_index(p, (size_t)(kend - p));
        if (k < 0 || (*seen & BIT(k))) return false; /* another key, or a duplicate */
        *seen |= BIT(k);
        p = skip_ws(kend + 1);
        if (*p++ != ':') return false;
        p = skip_ws(p);
        v[k] = (fb_req_field_t){.key = keys[k].name};
        bool want_str = STR_KEYS & BIT(k);
        if ((*p == '"') != want_str) return false; /* mistyped */
        if (want_str) {
            char *end = str_end(++p);
            if (!end) return false;
            *end = 0; /* cut out in place: the value is p, NUL-terminated */
            v[k].str = p;
            v[k].len = (size_t)(end - p);
            p = end + 1;
        } else if (!read_uint(&p, &v[k].num)) {
            return false;
        }
        p = skip_ws(p);
        if (*p == '}') break;
        if (*p++ != ',') return false;
    }
    p = skip_ws(p + 1);
    return p == buf + len; /* also false at a NUL inside the frame */
}

static bool is_str(const fb_req_field_t *f, const char *s)
{
    return f->str && f->len == strlen(s) && memcmp(f->str, s, f->len) == 0;
}

bool fb_req_parse_fast(fb_req_t *req, char *buf, size_t len)
{
    fb_req_field_t v[K_COUNT];
    unsigned seen = 0;
    if (!read_members(buf, len, v, &seen) || !(seen & BIT(K_OP))) return false;
    const char *op;
    unsigned want;
    if (is_str(&v[K_OP], "send")) {
        op = "send";
        want = SEND_KEYS;
    } else if (is_str(&v[K_OP], "read")) {
        op = "read";
        want = READ_KEYS;
    } else {
        return false;
    }
    if (seen != want || v[K_ID].num > FB_ID_INT_MAX) return false;
    memset(req, 0, sizeof *req);
    req->fast = true;
    req->fast_id = v[K_ID].num;
    req->op = op;
    for (int k = 0; k < K_COUNT; k++)
        if (seen & BIT(k)) req->fast_fields[req->n_fast++] = v[k];
    return true;
}

/* ---- the acks ---- */

json_t *fb_proto_send_ack(json_t *id, int64_t room, int64_t seq, int64_t ts, bool duplicate)
{
    return fb_proto_reply(id,
                          json_pack("{s:I,s:I,s:I,s:b}", "room", (json_int_t)room, "seq",
                                    (json_int_t)seq, "ts", (json_int_t)ts, "duplicate", duplicate));
}

json_t *fb_proto_read_ack(json_t *id, int64_t room, int64_t read_seq)
{
    return fb_proto_reply(
        id, json_pack("{s:I,s:I}", "room", (json_int_t)room, "read_seq", (json_int_t)read_seq));
}

/* The part both acks begin with: {"id":ID,"ok":true,"room":ROOM */
static char *put_ok_room(char *out, int64_t id, int64_t room)
{
    char *p = fb_text_put_lit(out, "{\"id\":");
    p = fb_text_put_int(p, id);
    p = fb_text_put_lit(p, ",\"ok\":true,\"room\":");
    return fb_text_put_int(p, room);
}

/* At most 6 + 20 + 10 + 8 + 20 + 7 + 20 + 6 + 20 + 18 + 1 = 136 bytes. */
size_t fb_proto_send_ack_json(char *out, int64_t id, int64_t room, int64_t seq, int64_t ts,
                              bool duplicate)
{
    char *p = put_ok_room(out, id, room);
    p = fb_text_put_lit(p, ",\"seq\":");
    p = fb_text_put_int(p, seq);
    p = fb_text_put_lit(p, ",\"ts\":");
    p = fb_text_put_int(p, ts);
    p = fb_text_put_lit(p, duplicate ? ",\"duplicate\":true}" : ",\"duplicate\":false}");
    return (size_t)(p - out);
}

/* At most 6 + 20 + 10 + 8 + 20 + 12 + 20 + 1 = 97 bytes. */
size_t fb_proto_read_ack_json(char *out, int64_t id, int64_t room, int64_t read_seq)
{
    char *p = put_ok_room(out, id, room);
    p = fb_text_put_lit(p, ",\"read_seq\":");
    p = fb_text_put_int(p, read_seq);
    *p++ = '}';
    return (size_t)(p - out);
}
