/* Unit tests of the jansson-free path of send and read (proto/fastpath.c):
 * for hand-picked frames and for random ones (keys in any order, duplicate
 * and extra keys, ids, rooms, seqs and numbers of every form, strings with
 * escapes, controls, NULs and invalid UTF-8, whitespace, cut and damaged
 * frames), fb_req_parse_fast either declines or yields exactly what
 * fb_req_parse and the slow path's field reading yield; and the acks written
 * without jansson are byte for byte jansson's, for integers of every size.
 * SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fb.h"
#include "proto/proto.h"
#include "server/server.h"

#define FB_TEST_SEED 0x2545f4914f6cdd1dULL
#include "common/rand.h"

#define MAX_TEXT 48 /* max_text_bytes of these tests: long texts come up often */

static bool chance(int percent)
{
    return rnd_below(100) < (size_t)percent;
}

/* Prints a frame readably (C escapes) for a failure message. */
static void print_frame(const char *what, const char *data, size_t len)
{
    fprintf(stderr, "%s (%zu bytes): \"", what, len);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"')
            fputc(c, stderr);
        else
            fprintf(stderr, "\\x%02x", c);
    }
    fprintf(stderr, "\"\n");
}

/* ---- the comparison ---- */

typedef struct {
    size_t accepted, declined, send_ok, read_ok, args_refused;
} tally_t;

/* The fast parse of data (from a NUL-terminated copy, as ops.c makes one). */
static bool parse_fast(fb_req_t *req, const char *data, size_t len, char **copy)
{
    *copy = malloc(len + 1);
    assert_non_null(*copy);
    memcpy(*copy, data, len);
    (*copy)[len] = 0;
    return fb_req_parse_fast(req, *copy, len);
}

static void same_rc_(int a, int b, const char *msg_a, const char *msg_b, const char *what)
{
    if (a != b) fail_msg("%s: jansson path %d, fast path %d", what, a, b);
    if (a && strcmp(msg_a, msg_b) != 0)
        fail_msg("%s: messages differ: \"%s\" / \"%s\"", what, msg_a, msg_b);
}

/* What every field reader says of key, on both requests. */
static void same_field(fb_req_t *slow, fb_req_t *fast, const char *key)
{
    int64_t a = -7, b = -7;
    int ra = fb_req_int(slow, key, true, 0, INT64_MAX, &a);
    int rb = fb_req_int(fast, key, true, 0, INT64_MAX, &b);
    same_rc_(ra, rb, slow->msg, fast->msg, key);
    assert_int_equal(a, b);
    const char *sa = NULL, *sb = NULL;
    size_t la = 0, lb = 0;
    ra = fb_req_str(slow, key, false, 0, SIZE_MAX, &sa, &la);
    rb = fb_req_str(fast, key, false, 0, SIZE_MAX, &sb, &lb);
    same_rc_(ra, rb, slow->msg, fast->msg, key);
    assert_int_equal(la, lb);
    assert_true((sa == NULL) == (sb == NULL));
    if (sa) assert_memory_equal(sa, sb, la + 1); /* the terminating NUL too */
}

/* A frame the fast path accepted: jansson accepts it and everything read
 * from the two requests is the same. */
static void check_same(const char *data, size_t len, fb_req_t *fast, tally_t *t)
{
    fb_req_t slow;
    int rc = fb_req_parse(&slow, data, len);
    if (rc) {
        print_frame("fast path accepted", data, len);
        fail_msg("which jansson refuses: %s", slow.msg);
    }
    assert_string_equal(slow.op, fast->op);
    assert_true(json_equal(fb_req_id(&slow), fb_req_id(fast)));
    fb_reqid_t ia = fb_req_hold_id(&slow), ib = fb_req_hold_id(fast);
    assert_true(ia.num >= 0 && !ia.json && !ib.json);
    assert_int_equal(ia.num, ib.num);
    static const char *const keys[] = {"id", "op", "room", "cmid", "text", "seq", "x", ""};
    for (size_t i = 0; i < FB_ARRAY_LEN(keys); i++)
        same_field(&slow, fast, keys[i]);

    fb_send_args_t sa = {0}, sb = {0};
    int ra = fb_ops_send_args(&slow, MAX_TEXT, &sa), rb = fb_ops_send_args(fast, MAX_TEXT, &sb);
    same_rc_(ra, rb, slow.msg, fast->msg, "send fields");
    if (!ra) {
        assert_int_equal(sa.room, sb.room);
        assert_string_equal(sa.cmid, sb.cmid);
        assert_int_equal(sa.text_len, sb.text_len);
        assert_memory_equal(sa.text, sb.text, sa.text_len);
    }
    if (!strcmp(fast->op, "send")) ra ? t->args_refused++ : t->send_ok++;
    int64_t room_a = -7, room_b = -7, seq_a = -7, seq_b = -7;
    ra = fb_ops_read_args(&slow, &room_a, &seq_a);
    rb = fb_ops_read_args(fast, &room_b, &seq_b);
    same_rc_(ra, rb, slow.msg, fast->msg, "read fields");
    assert_int_equal(room_a, room_b);
    assert_int_equal(seq_a, seq_b);
    if (!strcmp(fast->op, "read")) ra ? t->args_refused++ : t->read_ok++;
    fb_req_free(&slow);
}

/* Runs both parsers on one frame; returns whether the fast path took it. */
static bool check_frame(const char *data, size_t len, tally_t *t)
{
    fb_req_t fast;
    char *copy;
    bool took = parse_fast(&fast, data, len, &copy);
    if (took) {
        check_same(data, len, &fast, t);
        fb_req_free(&fast);
        t->accepted++;
    } else {
        t->declined++;
    }
    free(copy);
    return took;
}

/* ---- hand-picked frames ---- */

static void expect_fast(const char *frame)
{
    tally_t t = {0};
    if (!check_frame(frame, strlen(frame), &t)) {
        print_frame("fast path declined", frame, strlen(frame));
        fail_msg("a frame of the common shape went to jansson");
    }
}

static void expect_declined(const char *frame, size_t len)
{
    tally_t t = {0};
    if (check_frame(frame, len, &t)) {
        print_frame("fast path accepted", frame, len);
        fail_msg("a frame outside the shape was read by the fast path");
    }
}

#define DECLINED(lit) expect_declined(lit, sizeof lit - 1)

static void test_fast_accepts_the_common_shape(void **state)
{
    expect_fast("{\"id\":7,\"op\":\"send\",\"room\":12,\"cmid\":\"a1b2\",\"text\":\"hello\"}");
    expect_fast("{\"text\":\"hello\",\"cmid\":\"a1b2\",\"room\":12,\"op\":\"send\",\"id\":7}");
    expect_fast("{\"op\":\"send\",\"cmid\":\"x\",\"id\":0,\"text\":\"h\",\"room\":1}");
    expect_fast(" {\r\n\t\"id\" : 9007199254740992 , \"op\" :\"send\",\"room\": "
                "9223372036854775807,\"cmid\":\"AZaz09._:-\",\"text\":\"caf\xc3\xa9 "
                "\xea\xb0\x80 \xf0\x9f\x98\x80 \x7f /\"\n}\n ");
    expect_fast("{\"id\":1,\"op\":\"read\",\"room\":3,\"seq\":0}");
    expect_fast("{\"seq\":41,\"room\":3,\"id\":2,\"op\":\"read\"}");
    /* in the shape, and refused by the same checks as through jansson */
    expect_fast("{\"id\":1,\"op\":\"send\",\"room\":0,\"cmid\":\"a\",\"text\":\"hi\"}");
    expect_fast("{\"id\":1,\"op\":\"send\",\"room\":1,\"cmid\":\"a b\",\"text\":\"hi\"}");
    expect_fast("{\"id\":1,\"op\":\"send\",\"room\":1,\"cmid\":\"\",\"text\":\"hi\"}");
    expect_fast("{\"id\":1,\"op\":\"send\",\"room\":1,\"cmid\":\"a\",\"text\":\"\"}");
    expect_fast("{\"id\":1,\"op\":\"send\",\"room\":1,\"cmid\":\"a\",\"text\":"
                "\"0123456789012345678901234567890123456789012345678\"}"); /* 49 > MAX_TEXT */
    expect_fast("{\"id\":1,\"op\":\"read\",\"room\":0,\"seq\":5}");
}

static void test_fast_declines_the_rest(void **state)
{
    DECLINED("");
    DECLINED("{}");
    DECLINED("[]");
    DECLINED("{\"id\":1,\"op\":\"ping\"}");
    /* keys missing, extra or repeated */
    DECLINED("{\"id\":1,\"op\":\"send\",\"room\":1,\"cmid\":\"a\"}");
    DECLINED("{\"id\":1,\"op\":\"read\",\"room\":1}");
    DECLINED("{\"id\":1,\"op\":\"read\",\"room\":1,\"seq\":2,\"x\":3}");
    DECLINED("{\"id\":1,\"op\":\"read\",\"room\":1,\"seq\":2,\"seq\":3}");
    DECLINED("{\"id\":1,\"op\":\"read\",\"room\":1,\"seq\":2,\"text\":\"a\"}");
    /* a string id, which the fast path leaves to jansson */
    DECLINED("{\"id\":\"s1\",\"op\":\"read\",\"room\":1,\"seq\":2}");
    /* ids out of range or not plain decimal integers */
    DECLINED("{\"id\":9007199254740993,\"op\":\"read\",\"room\":1,\"seq\":2}");
    DECLINED("{\"id\":-1,\"op\":\"read\",\"room\":1,\"seq\":2}");
    DECLINED("{\"id\":-0,\"op\":\"read\",\"room\":1,\"seq\":2}");
    DECLINED("{\"id\":01,\"op\":\"read\",\"room\":1,\"seq\":2}");
    DECLINED("{\"id\":1.0,\"op\":\"read\",\"room\":1,\"seq\":2}");
    DECLINED("{\"id\":1e2,\"op\":\"read\",\"room\":1,\"seq\":2}");
    /* above INT64_MAX: jansson refuses them */
    DECLINED("{\"id\":1,\"op\":\"read\",\"room\":9223372036854775808,\"seq\":2}");
    DECLINED("{\"id\":1,\"op\":\"read\",\"room\":99999999999999999999,\"seq\":2}");
    /* mistyped fields */
    DECLINED("{\"id\":1,\"op\":\"read\",\"room\":\"1\",\"seq\":2}");
    DECLINED("{\"id\":1,\"op\":\"read\",\"room\":1,\"seq\":null}");
    DECLINED("{\"id\":1,\"op\":\"send\",\"room\":1,\"cmid\":5,\"text\":\"a\"}");
    /* backslash escapes, in values and keys */
    DECLINED("{\"id\":1,\"op\":\"send\",\"room\":1,\"cmid\":\"a\",\"text\":\"a\\nb\"}");
    DECLINED("{\"id\":1,\"op\":\"send\",\"room\":1,\"cmid\":\"a\",\"text\":\"\\u00e9\"}");
    DECLINED("{\"id\":1,\"op\":\"s\\u0065nd\",\"room\":1,\"cmid\":\"a\",\"text\":\"a\"}");
    DECLINED("{\"\\u0069d\":1,\"op\":\"read\",\"room\":1,\"seq\":2}");
    /* raw controls, invalid UTF-8 */
    DECLINED("{\"id\":1,\"op\":\"send\",\"room\":1,\"cmid\":\"a\",\"text\":\"a\tb\"}");
    DECLINED("{\"id\":1,\"op\":\"send\",\"room\":1,\"cmid\":\"a\",\"text\":\"a\0b\"}");
    DECLINED("{\"id\":1,\"op\":\"send\",\"room\":1,\"cmid\":\"a\",\"text\":\"caf\xe9\"}");
    DECLINED("{\"id\":1,\"op\":\"send\",\"room\":1,\"cmid\":\"a\",\"text\":\"\xed\xa0\x80\"}");
    DECLINED("{\"id\":1,\"op\":\"send\",\"room\":1,\"cmid\":\"a\",\"text\":\"\xc0\xaf\"}");
    DECLINED("{\"id\":1,\"op\":\"send\",\"room\":1,\"cmid\":\"a\",\"text\":\"\xf4\x90\x80\x80\"}");
    DECLINED("{\"id\":1,\"op\":\"send\",\"room\":1,\"cmid\":\"a\",\"text\":\"\xe2\x82\"}");
    /* trailing bytes, a cut frame */
    DECLINED("{\"id\":1,\"op\":\"read\",\"room\":1,\"seq\":2} x");
    DECLINED("{\"id\":1,\"op\":\"read\",\"room\":1,\"seq\":2}\0");
    DECLINED("{\"id\":1,\"op\":\"read\",\"room\":1,\"seq\":2,}");
    DECLINED("{\"id\":1,\"op\":\"read\",\"room\":1,\"seq\":2");
    /* whitespace JSON does not know, broken structure, an unknown op */
    DECLINED("{\"id\":1,\"op\":\"read\",\"room\":1,\"seq\":2\v}");
    DECLINED("{\"id\":1,\"op\":\"read\",\"room\":1,\"seq\":2\xc2\xa0}");
    DECLINED("{\"id\":1,\"op\":\"read\",\"room\":1\"seq\":2}");
    DECLINED("{\"id\":1,\"op\":\"read\",\"room\":1,\"seq\"2}");
    DECLINED("{\"id\":1,\"op\":\"read\",\"room\":1,\"seq\":2}}");
    DECLINED("{\"id\":1,\"op\":\"READ\",\"room\":1,\"seq\":2}");
}

/* ---- random frames ---- */

static void put(fb_buf_t *b, const char *s)
{
    fb_buf_append(b, s, strlen(s));
}

static void put_ws(fb_buf_t *b)
{
    static const char *const ws[] = {" ", "\t", "\n", "\r", "  \r\n", "\v", "\f", "\xc2\xa0"};
    if (chance(12)) put(b, ws[chance(90) ? rnd_below(5) : 5 + rnd_below(3)]);
}

/* A decimal integer as written by a client, mostly in range. */
static void put_int(fb_buf_t *b, int64_t lo, int64_t hi)
{
    static const char *const odd[] = {"-1",
                                      "-0",
                                      "00",
                                      "01",
                                      "1.0",
                                      "1e3",
                                      "2E1",
                                      "1.5",
                                      "null",
                                      "true",
                                      "\"1\"",
                                      "[1]",
                                      "9223372036854775807",
                                      "9223372036854775808",
                                      "18446744073709551616",
                                      "99999999999999999999",
                                      "9007199254740993",
                                      "-9223372036854775808",
                                      "0.0",
                                      "-",
                                      "1-"};
    if (chance(12)) {
        put(b, odd[rnd_below(FB_ARRAY_LEN(odd))]);
        return;
    }
    int64_t v;
    switch (rnd_below(4)) {
    case 0:
        v = lo + (int64_t)rnd_below(3);
        break;
    case 1:
        v = hi - (int64_t)rnd_below(2);
        break;
    case 2:
        v = (int64_t)rnd_below(1000);
        break;
    default:
        v = lo + (int64_t)(rnd() % (uint64_t)(hi - lo));
        break;
    }
    fb_buf_appendf(b, "%lld", (long long)v);
}

/* A string's JSON text: pieces that are fine, escaped, controls, NULs and
 * every kind of invalid UTF-8, in random lengths around MAX_TEXT. */
static void put_str(fb_buf_t *b, bool cmid_like)
{
    static const char *const good[] = {"a",
                                       "Z",
                                       "0",
                                       ".",
                                       "_",
                                       ":",
                                       "-",
                                       "hello ",
                                       "x",
                                       "\xc3\xa9",
                                       "\xea\xb0\x80",
                                       "\xf0\x9f\x98\x80",
                                       "\xef\xbf\xbf",
                                       "\xf4\x8f\xbf\xbf",
                                       "\x7f",
                                       "/",
                                       " "};
    static const char *const bad[] = {"\\n",
                                      "\\\"",
                                      "\\\\",
                                      "\\/",
                                      "\\u00e9",
                                      "\\u0000",
                                      "\\ud83d\\ude00",
                                      "\\ud83d",
                                      "\\x",
                                      "\\",
                                      "\t",
                                      "\n",
                                      "\x01",
                                      "\x1f",
                                      "\xff",
                                      "\xc3",
                                      "\xc0\xaf",
                                      "\xed\xa0\x80",
                                      "\xf4\x90\x80\x80",
                                      "\xe2\x82",
                                      "\x80",
                                      "\xf8\x88\x80\x80\x80"};
    size_t n = chance(5)    ? 0
               : cmid_like  ? rnd_below(70)
               : chance(80) ? rnd_below(MAX_TEXT / 2)
                            : rnd_below(2 * MAX_TEXT);
    bool dirty = chance(40);
    put(b, "\"");
    for (size_t i = 0; i < n; i++) {
        if (dirty && chance(4)) {
            put(b, bad[rnd_below(FB_ARRAY_LEN(bad))]);
        } else if (dirty && chance(2)) {
            fb_buf_append(b, "", 1); /* a raw NUL */
        } else {
            size_t pool = cmid_like && chance(95) ? 7 : FB_ARRAY_LEN(good);
            put(b, good[rnd_below(pool)]);
        }
    }
    put(b, "\"");
}

static void put_value(fb_buf_t *b, const char *key, const char *op)
{
    if (!strcmp(key, "id")) {
        if (chance(5))
            put(b, chance(50) ? "\"s1\"" : "\"\"");
        else
            put_int(b, 0, (int64_t)1 << 53);
    } else if (!strcmp(key, "op")) {
        put(b, "\"");
        put(b, op);
        put(b, "\"");
    } else if (!strcmp(key, "room")) {
        put_int(b, 0, INT64_MAX);
    } else if (!strcmp(key, "seq")) {
        put_int(b, 0, INT64_MAX);
    } else if (!strcmp(key, "cmid")) {
        chance(3) ? put_int(b, 0, 100) : put_str(b, true);
    } else if (!strcmp(key, "text")) {
        chance(3) ? put_int(b, 0, 100) : put_str(b, false);
    } else {
        chance(50) ? put_int(b, 0, 100) : put_str(b, false);
    }
}

/* One random frame, mostly of the send or read shape. */
static void random_frame(fb_buf_t *b)
{
    static const char *const send_keys[] = {"id", "op", "room", "cmid", "text"};
    static const char *const read_keys[] = {"id", "op", "room", "seq"};
    static const char *const other_ops[] = {"ping", "Send", "sen", "", "reads", "history"};
    static const char *const extra[] = {"x",        "ID",        "Room",     "ids", "room ", "",
                                        "\\u0069d", "se\\u0071", "\xc3\xa9", "seq", "text",  "op"};
    const char *keys[8];
    size_t n = 0;
    bool send = chance(50);
    const char *op = chance(6) ? other_ops[rnd_below(FB_ARRAY_LEN(other_ops))]
                     : send    ? "send"
                               : "read";
    const char *const *base = send ? send_keys : read_keys;
    size_t nbase = send ? FB_ARRAY_LEN(send_keys) : FB_ARRAY_LEN(read_keys);
    for (size_t i = 0; i < nbase; i++)
        if (!chance(4)) keys[n++] = base[i];
    if (chance(5) && n) {
        keys[n] = keys[rnd_below(n)]; /* a duplicate */
        n++;
    }
    if (chance(6)) keys[n++] = extra[rnd_below(FB_ARRAY_LEN(extra))];
    if (chance(70))
        for (size_t i = n; i > 1; i--) {
            size_t j = rnd_below(i);
            const char *t = keys[i - 1];
            keys[i - 1] = keys[j];
            keys[j] = t;
        }
    put_ws(b);
    put(b, "{");
    for (size_t i = 0; i < n; i++) {
        if (i) put(b, ",");
        put_ws(b);
        fb_buf_appendf(b, "\"%s\"", keys[i]);
        put_ws(b);
        put(b, ":");
        put_ws(b);
        put_value(b, keys[i], op);
        put_ws(b);
    }
    put(b, "}");
    put_ws(b);
}

/* Damage: cut it short, add a byte, or change one. */
static void damage(fb_buf_t *b)
{
    static const char junk[] = {'x', ' ', '}', ',', '"', '\\', 0, '\x80', '1', ':'};
    if (!b->len) return;
    switch (rnd_below(3)) {
    case 0:
        b->len = rnd_below(b->len);
        break;
    case 1:
        fb_buf_append(b, &junk[rnd_below(sizeof junk)], 1);
        break;
    default:
        b->data[rnd_below(b->len)] = junk[rnd_below(sizeof junk)];
        break;
    }
}

static void test_fast_matches_jansson_random(void **state)
{
    tally_t t = {0};
    fb_buf_t b = {0};
    for (int i = 0; i < 60000; i++) {
        fb_buf_reset(&b);
        random_frame(&b);
        if (chance(10)) damage(&b);
        check_frame(b.data, b.len, &t);
    }
    fb_buf_free(&b);
    fprintf(stderr,
            "random frames: %zu fast (%zu sends and %zu reads ok, %zu refused by the "
            "op's checks), %zu declined\n",
            t.accepted, t.send_ok, t.read_ok, t.args_refused, t.declined);
    /* both sides of the recognizer, and of the checks after it, were reached */
    assert_true(t.accepted > 10000);
    assert_true(t.declined > 10000);
    assert_true(t.send_ok > 1000 && t.read_ok > 1000 && t.args_refused > 1000);
}

/* ---- the acks ---- */

/* What the jansson path sent for these acks before the fast path: the ok
 * reply updated with the op's fields, dumped compactly (as fb_conn_reply
 * and fb_ws_enc_json do). */
static char *ack_oracle(json_t *id, json_t *fields)
{
    json_t *o = fb_proto_ok(id);
    json_object_update(o, fields);
    json_decref(fields);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static void same_text(const char *what, const char *got, size_t n, const char *want)
{
    if (n != strlen(want) || memcmp(got, want, n) != 0)
        fail_msg("%s: fast \"%.*s\", jansson \"%s\"", what, (int)n, got, want);
}

/* Both acks for these values: the fast text, the jansson encoder and the
 * oracle agree, and so do the WebSocket frames made of them. */
static void check_acks(fb_ws_enc_t *enc, int64_t id, int64_t room, int64_t seq, int64_t ts,
                       bool dup)
{
    json_t *jid = json_integer(id);
    char got[FB_ACK_JSON_MAX];
    size_t n = fb_proto_send_ack_json(got, id, room, seq, ts, dup);
    char *want =
        ack_oracle(jid, json_pack("{s:I,s:I,s:I,s:b}", "room", (json_int_t)room, "seq",
                                  (json_int_t)seq, "ts", (json_int_t)ts, "duplicate", dup));
    same_text("send ack", got, n, want);
    json_t *ack = fb_proto_send_ack(jid, room, seq, ts, dup);
    fb_buf_t a = {0}, b = {0};
    fb_proto_dump(ack, &a);
    same_text("fb_proto_send_ack", a.data, a.len, want);
    fb_buf_reset(&a);
    fb_ws_enc_json(enc, &a, ack);
    fb_ws_enc_text(enc, &b, got, n);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    json_decref(ack);
    free(want);

    n = fb_proto_read_ack_json(got, id, room, seq);
    want = ack_oracle(
        jid, json_pack("{s:I,s:I}", "room", (json_int_t)room, "read_seq", (json_int_t)seq));
    same_text("read ack", got, n, want);
    ack = fb_proto_read_ack(jid, room, seq);
    fb_buf_reset(&a);
    fb_proto_dump(ack, &a);
    same_text("fb_proto_read_ack", a.data, a.len, want);
    json_decref(ack);
    free(want);
    fb_buf_free(&a);
    fb_buf_free(&b);
    json_decref(jid);
}

/* A random int64 of random magnitude and sign. */
static int64_t rnd_int(void)
{
    uint64_t u = rnd() >> rnd_below(64);
    return chance(20) ? (int64_t)(0 - u) : (int64_t)(u >> 1);
}

static void test_acks_match_jansson(void **state)
{
    char got[FB_ACK_JSON_MAX];
    size_t n = fb_proto_send_ack_json(got, 7, 12, 41, 1764060000000, false);
    same_text("protocol.md's example", got, n,
              "{\"id\":7,\"ok\":true,\"room\":12,\"seq\":41,\"ts\":1764060000000,"
              "\"duplicate\":false}");
    fb_ws_enc_t *enc = fb_ws_enc_new();
    const int64_t vals[] = {
        0, 1, -1, 9, 10, 99, 100, (int64_t)1 << 53, 1234567890123LL, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < FB_ARRAY_LEN(vals); i++)
        for (size_t j = 0; j < FB_ARRAY_LEN(vals); j++)
            for (int dup = 0; dup < 2; dup++)
                check_acks(enc, vals[i], vals[j], vals[(i + j) % FB_ARRAY_LEN(vals)],
                           vals[(i * 7 + j) % FB_ARRAY_LEN(vals)], dup);
    for (int i = 0; i < 20000; i++)
        check_acks(enc, rnd_int(), rnd_int(), rnd_int(), rnd_int(), chance(50));
    fb_ws_enc_free(enc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_accepts_the_common_shape),
        cmocka_unit_test(test_fast_declines_the_rest),
        cmocka_unit_test(test_fast_matches_jansson_random),
        cmocka_unit_test(test_acks_match_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
