/* Unit tests of the wire format (proto/proto.h): request parsing, field readers and
 * validators, the JSON encoders of errors, events and room summaries, and WebSocket
 * text framing checked byte for byte against RFC 6455.
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

#include "common/rand.h"

/* ---- helpers ---- */

static int parse(fb_req_t *req, const char *s)
{
    return fb_req_parse(req, s, strlen(s));
}

/* Parses s, which must be a valid request, for the field-reader tests. */
static void parse_ok(fb_req_t *req, const char *s)
{
    int rc = parse(req, s);
    if (rc != 0) fprintf(stderr, "parse of %s failed: %s\n", s, req->msg);
    assert_int_equal(rc, 0);
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = 0;
    return s;
}

static void assert_json_str(json_t *o, const char *key, const char *want)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v)) fail_msg("\"%s\" is not a string", key);
    assert_string_equal(json_string_value(v), want);
}

static void assert_json_int(json_t *o, const char *key, int64_t want)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) fail_msg("\"%s\" is not an integer", key);
    assert_int_equal(json_integer_value(v), want);
}

static void assert_json_user(json_t *o, const char *key, int64_t id, const char *name)
{
    json_t *u = json_object_get(o, key);
    if (!json_is_object(u)) fail_msg("\"%s\" is not an object", key);
    assert_int_equal(json_object_size(u), 2);
    assert_json_int(u, "id", id);
    assert_json_str(u, "name", name);
}

/* The object has exactly these keys (NULL-terminated). */
static void assert_keys(json_t *o, ...)
{
    va_list ap;
    size_t n = 0;
    va_start(ap, o);
    for (const char *k; (k = va_arg(ap, const char *)); n++)
        if (!json_object_get(o, k)) fail_msg("key \"%s\" missing", k);
    va_end(ap);
    if (json_object_size(o) != n) {
        char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        fprintf(stderr, "unexpected keys in %s\n", s);
        free(s);
    }
    assert_int_equal(json_object_size(o), n);
}

/* ---- fb_req_parse ---- */

static void test_parse_valid(void **state)
{
    fb_req_t req;
    assert_int_equal(parse(&req, "{\"id\":7,\"op\":\"send\",\"room\":12,\"text\":\"hello\"}"), 0);
    assert_non_null(req.obj);
    assert_true(json_is_integer(req.id));
    assert_int_equal(json_integer_value(req.id), 7);
    assert_string_equal(req.op, "send");
    fb_req_free(&req);
    assert_null(req.obj);
    assert_null(req.id);

    /* string ids, id 0 and 2^53 are all usable */
    assert_int_equal(parse(&req, "{\"id\":\"abc\",\"op\":\"ping\"}"), 0);
    assert_string_equal(json_string_value(req.id), "abc");
    fb_req_free(&req);
    assert_int_equal(parse(&req, "{\"id\":0,\"op\":\"ping\"}"), 0);
    fb_req_free(&req);
    assert_int_equal(parse(&req, "{\"id\":9007199254740992,\"op\":\"ping\"}"), 0);
    assert_int_equal(json_integer_value(req.id), (int64_t)1 << 53);
    fb_req_free(&req);
    char *id64 = repeat('x', 64), buf[200];
    snprintf(buf, sizeof buf, "{\"id\":\"%s\",\"op\":\"ping\"}", id64);
    assert_int_equal(parse(&req, buf), 0);
    assert_int_equal(json_string_length(req.id), 64);
    fb_req_free(&req);
    free(id64);

    /* Korean text and a surrogate pair escape are valid */
    assert_int_equal(parse(&req, "{\"id\":1,\"op\":\"send\",\"text\":\"안녕 \\ud83d\\ude00\"}"), 0);
    assert_string_equal(json_string_value(json_object_get(req.obj, "text")),
                        "안녕 \xf0\x9f\x98\x80");
    fb_req_free(&req);
}

static void test_parse_not_object(void **state)
{
    fb_req_t req;
    const char *bad[] = {"",
                         "hello",
                         "{\"id\":1,",
                         "{\"id\":1,\"op\":\"x\"} trailing",
                         "{'id':1}",
                         "[1,2]",
                         "[{\"id\":1,\"op\":\"ping\"}]",
                         "\"str\"",
                         "42",
                         "null"};
    for (size_t i = 0; i < FB_ARRAY_LEN(bad); i++) {
        int rc = parse(&req, bad[i]);
        if (rc != FB_EBADREQ) fail_msg("'%s' gave %d, want FB_EBADREQ", bad[i], rc);
        assert_null(req.id); /* no usable id: answered with "id": null */
        assert_true(req.msg[0] != 0);
        fb_req_free(&req);
    }
    assert_int_equal(parse(&req, "[1]"), FB_EBADREQ);
    assert_non_null(strstr(req.msg, "object"));
    fb_req_free(&req);
}

static void test_parse_bad_id(void **state)
{
    fb_req_t req;
    char *id65 = repeat('x', 65), buf[200];
    snprintf(buf, sizeof buf, "{\"id\":\"%s\",\"op\":\"ping\"}", id65);
    const char *bad[] = {
        "{\"op\":\"ping\"}",                             /* missing */
        "{\"id\":-1,\"op\":\"ping\"}",                   /* negative */
        "{\"id\":9007199254740993,\"op\":\"ping\"}",     /* 2^53 + 1 */
        "{\"id\":99999999999999999999,\"op\":\"ping\"}", /* beyond int64: jansson rejects */
        "{\"id\":1.5,\"op\":\"ping\"}",                  /* float */
        "{\"id\":1.0,\"op\":\"ping\"}",                  /* a real, even if integral */
        "{\"id\":1e3,\"op\":\"ping\"}",
        "{\"id\":null,\"op\":\"ping\"}",
        "{\"id\":true,\"op\":\"ping\"}",
        "{\"id\":[1],\"op\":\"ping\"}",
        "{\"id\":{},\"op\":\"ping\"}",
        buf, /* a 65-byte string */
    };
    for (size_t i = 0; i < FB_ARRAY_LEN(bad); i++) {
        int rc = parse(&req, bad[i]);
        if (rc != FB_EBADREQ) fail_msg("'%s' gave %d, want FB_EBADREQ", bad[i], rc);
        if (req.id) fail_msg("'%s' left an id", bad[i]);
        fb_req_free(&req);
    }
    assert_int_equal(parse(&req, "{\"id\":-5,\"op\":\"ping\"}"), FB_EBADREQ);
    assert_non_null(strstr(req.msg, "\"id\""));
    fb_req_free(&req);
    free(id65);
}

static void test_parse_bad_op(void **state)
{
    fb_req_t req;
    const char *bad[] = {"{\"id\":3}", "{\"id\":3,\"op\":5}", "{\"id\":3,\"op\":null}",
                         "{\"id\":3,\"op\":[\"send\"]}"};
    for (size_t i = 0; i < FB_ARRAY_LEN(bad); i++) {
        assert_int_equal(parse(&req, bad[i]), FB_EBADREQ);
        /* the id was usable, so the error reply can still name it */
        assert_non_null(req.id);
        assert_int_equal(json_integer_value(req.id), 3);
        assert_null(req.op);
        assert_non_null(strstr(req.msg, "\"op\""));
        fb_req_free(&req);
    }
}

static void test_parse_utf8(void **state)
{
    fb_req_t req;
    static const struct {
        const char *s;
        size_t len;
    } bad[] = {
#define B(lit) {lit, sizeof(lit) - 1}
        B("{\"id\":1,\"op\":\"send\",\"text\":\"\xff\"}"),             /* never valid */
        B("{\"id\":1,\"op\":\"send\",\"text\":\"\xc3\"}"),             /* truncated sequence */
        B("{\"id\":1,\"op\":\"send\",\"text\":\"\xc0\x80\"}"),         /* overlong NUL */
        B("{\"id\":1,\"op\":\"send\",\"text\":\"\xe0\x80\xaf\"}"),     /* overlong '/' */
        B("{\"id\":1,\"op\":\"send\",\"text\":\"\xed\xa0\x80\"}"),     /* encoded surrogate */
        B("{\"id\":1,\"op\":\"send\",\"text\":\"\xf4\x90\x80\x80\"}"), /* > U+10FFFF */
        B("{\"id\":1,\"op\":\"send\",\"text\":\"\x80\"}"),             /* lone continuation */
        B("{\"id\":1,\"op\":\"send\",\"\xfe\":1}"),                    /* in a key */
        B("{\"id\":1,\"op\":\"send\",\xff}"),                          /* outside any string */
#undef B
    };
    for (size_t i = 0; i < FB_ARRAY_LEN(bad); i++) {
        int rc = fb_req_parse(&req, bad[i].s, bad[i].len);
        if (rc != FB_EUTF8) fail_msg("case %zu gave %d, want FB_EUTF8", i, rc);
        assert_true(req.msg[0] != 0);
        fb_req_free(&req);
    }
}

static void test_parse_bad_escapes(void **state)
{
    fb_req_t req;
    /* lone surrogates: the escape names no character */
    const char *surrogates[] = {
        "{\"id\":1,\"op\":\"send\",\"text\":\"\\ud800\"}",
        "{\"id\":1,\"op\":\"send\",\"text\":\"a\\udc00b\"}",
        "{\"id\":1,\"op\":\"send\",\"text\":\"\\ud800\\u0041\"}",
    };
    for (size_t i = 0; i < FB_ARRAY_LEN(surrogates); i++) {
        int rc = parse(&req, surrogates[i]);
        if (rc != FB_EBADREQ && rc != FB_EUTF8) fail_msg("'%s' gave %d", surrogates[i], rc);
        assert_null(req.op);
        fb_req_free(&req);
    }
    /* NUL would cut every C string that holds the value: the envelope parses
     * (so the reply can name the request), the field reader refuses it */
    const char *s = NULL;
    assert_int_equal(parse(&req, "{\"id\":1,\"op\":\"send\",\"text\":\"a\\u0000b\"}"), 0);
    assert_int_equal(fb_req_str(&req, "text", true, 1, 100, &s, NULL), FB_EINVAL);
    assert_non_null(strstr(req.msg, "\"text\""));
    assert_null(s);
    fb_req_free(&req);
    assert_int_equal(parse(&req, "{\"id\":1,\"op\":\"se\\u0000nd\"}"), FB_EBADREQ);
    fb_req_free(&req);
    assert_int_equal(parse(&req, "{\"id\":1,\"op\":\"send\",\"a\\u0000\":1}"), FB_EBADREQ);
    fb_req_free(&req);
    /* a raw NUL byte inside the frame */
    static const char raw[] = "{\"id\":1,\"op\":\"se\0nd\"}";
    assert_int_equal(fb_req_parse(&req, raw, sizeof raw - 1), FB_EBADREQ);
    fb_req_free(&req);
}

static void test_parse_duplicate_keys(void **state)
{
    fb_req_t req;
    assert_int_equal(parse(&req, "{\"id\":1,\"op\":\"send\",\"room\":1,\"room\":2}"), FB_EBADREQ);
    assert_null(req.op);
    fb_req_free(&req);
    assert_int_equal(parse(&req, "{\"id\":1,\"op\":\"send\",\"op\":\"leave\"}"), FB_EBADREQ);
    fb_req_free(&req);
    assert_int_equal(parse(&req, "{\"id\":1,\"id\":2,\"op\":\"ping\"}"), FB_EBADREQ);
    fb_req_free(&req);
}

/* ---- field readers ---- */

static void test_req_int(void **state)
{
    fb_req_t req;
    parse_ok(&req, "{\"id\":1,\"op\":\"x\",\"n\":42,\"neg\":-3,\"s\":\"42\",\"f\":4.0,"
                   "\"big\":9223372036854775807,\"nul\":null}");
    int64_t v = -99;
    assert_int_equal(fb_req_int(&req, "n", true, 0, 100, &v), 0);
    assert_int_equal(v, 42);
    v = -99;
    assert_int_equal(fb_req_int(&req, "n", false, 42, 42, &v), 0); /* bounds inclusive */
    assert_int_equal(v, 42);
    assert_int_equal(fb_req_int(&req, "neg", true, -3, 0, &v), 0);
    assert_int_equal(v, -3);
    assert_int_equal(fb_req_int(&req, "big", true, 0, INT64_MAX, &v), 0);
    assert_int_equal(v, INT64_MAX);

    /* optional and absent: 0, *out untouched */
    v = 1234;
    assert_int_equal(fb_req_int(&req, "limit", false, 1, 200, &v), 0);
    assert_int_equal(v, 1234);

    /* required and absent */
    req.msg[0] = 0;
    assert_int_equal(fb_req_int(&req, "limit", true, 1, 200, &v), FB_EBADREQ);
    assert_int_equal(v, 1234);
    assert_non_null(strstr(req.msg, "\"limit\""));

    /* mistyped: a string, a real, null */
    const char *mistyped[] = {"s", "f", "nul"};
    for (size_t i = 0; i < FB_ARRAY_LEN(mistyped); i++) {
        req.msg[0] = 0;
        assert_int_equal(fb_req_int(&req, mistyped[i], false, 0, 100, &v), FB_EBADREQ);
        char want[16];
        snprintf(want, sizeof want, "\"%s\"", mistyped[i]);
        assert_non_null(strstr(req.msg, want));
        assert_int_equal(v, 1234);
    }

    /* out of range, either side */
    req.msg[0] = 0;
    assert_int_equal(fb_req_int(&req, "n", true, 43, 100, &v), FB_EINVAL);
    assert_non_null(strstr(req.msg, "\"n\""));
    assert_non_null(strstr(req.msg, "43"));
    assert_int_equal(fb_req_int(&req, "n", true, 0, 41, &v), FB_EINVAL);
    assert_int_equal(fb_req_int(&req, "neg", true, 0, 10, &v), FB_EINVAL);
    assert_int_equal(v, 1234);
    fb_req_free(&req);
}

static void test_req_id_field(void **state)
{
    fb_req_t req;
    parse_ok(&req, "{\"id\":1,\"op\":\"x\",\"room\":12,\"zero\":0,\"neg\":-4,\"s\":\"12\"}");
    int64_t v = 0;
    assert_int_equal(fb_req_id_field(&req, "room", true, &v), 0);
    assert_int_equal(v, 12);
    v = 77;
    assert_int_equal(fb_req_id_field(&req, "zero", true, &v), FB_EINVAL);
    assert_non_null(strstr(req.msg, "\"zero\""));
    assert_int_equal(fb_req_id_field(&req, "neg", false, &v), FB_EINVAL);
    assert_int_equal(fb_req_id_field(&req, "s", true, &v), FB_EBADREQ);
    assert_non_null(strstr(req.msg, "\"s\""));
    assert_int_equal(fb_req_id_field(&req, "user", true, &v), FB_EBADREQ);
    assert_non_null(strstr(req.msg, "\"user\""));
    assert_int_equal(fb_req_id_field(&req, "user", false, &v), 0);
    assert_int_equal(v, 77);
    fb_req_free(&req);
}

static void test_req_str(void **state)
{
    fb_req_t req;
    parse_ok(&req, "{\"id\":1,\"op\":\"x\",\"name\":\"Club\",\"empty\":\"\",\"n\":5,"
                   "\"ko\":\"한국\",\"arr\":[\"a\"]}");
    const char *s = NULL;
    size_t len = 99;
    assert_int_equal(fb_req_str(&req, "name", true, 1, 100, &s, &len), 0);
    assert_string_equal(s, "Club");
    assert_int_equal(len, 4);
    /* len may be NULL */
    s = NULL;
    assert_int_equal(fb_req_str(&req, "name", true, 4, 4, &s, NULL), 0);
    assert_string_equal(s, "Club");
    /* byte lengths, not characters: 2 Hangul syllables are 6 bytes */
    assert_int_equal(fb_req_str(&req, "ko", true, 6, 6, &s, &len), 0);
    assert_int_equal(len, 6);
    assert_int_equal(fb_req_str(&req, "ko", true, 1, 5, &s, &len), FB_EINVAL);
    assert_int_equal(fb_req_str(&req, "empty", true, 0, 10, &s, &len), 0);
    assert_string_equal(s, "");
    assert_int_equal(len, 0);

    /* optional absent leaves *out untouched */
    s = "untouched";
    len = 99;
    assert_int_equal(fb_req_str(&req, "device", false, 0, 64, &s, &len), 0);
    assert_string_equal(s, "untouched");
    assert_int_equal(len, 99);

    req.msg[0] = 0;
    assert_int_equal(fb_req_str(&req, "device", true, 0, 64, &s, &len), FB_EBADREQ);
    assert_non_null(strstr(req.msg, "\"device\""));
    assert_int_equal(fb_req_str(&req, "n", false, 0, 64, &s, &len), FB_EBADREQ);
    assert_non_null(strstr(req.msg, "\"n\""));
    assert_int_equal(fb_req_str(&req, "arr", true, 0, 64, &s, &len), FB_EBADREQ);

    /* too short, too long */
    req.msg[0] = 0;
    assert_int_equal(fb_req_str(&req, "empty", true, 1, 10, &s, &len), FB_EINVAL);
    assert_non_null(strstr(req.msg, "\"empty\""));
    req.msg[0] = 0;
    assert_int_equal(fb_req_str(&req, "name", true, 1, 3, &s, &len), FB_EINVAL);
    assert_non_null(strstr(req.msg, "\"name\""));
    assert_string_equal(s, "untouched");
    fb_req_free(&req);

    /* a field over its bound is invalid_argument; the send op turns that
     * into too_large for text (docs/protocol.md) */
    char *text = repeat('t', 8193), *buf = malloc(8300);
    assert_non_null(buf);
    snprintf(buf, 8300, "{\"id\":1,\"op\":\"send\",\"text\":\"%s\"}", text);
    parse_ok(&req, buf);
    assert_int_equal(fb_req_str(&req, "text", true, 1, 8192, &s, &len), FB_EINVAL);
    assert_non_null(strstr(req.msg, "\"text\""));
    assert_int_equal(fb_req_str(&req, "text", true, 1, 8193, &s, &len), 0);
    assert_int_equal(len, 8193);
    fb_req_free(&req);
    free(text);
    free(buf);
}

/* docs/protocol.md: a field out of its documented range is invalid_argument;
 * too_large is only for message text, member lists and HTTP bodies. A password
 * (8..1024 bytes) of 1025 bytes must therefore be FB_EINVAL. */
static void test_req_str_long_password_is_invalid_argument(void **state)
{
    fb_req_t req;
    char *pw = repeat('p', FB_PASSWORD_MAX + 1), *buf = malloc(1200);
    assert_non_null(buf);
    snprintf(buf, 1200, "{\"id\":1,\"op\":\"login\",\"user\":\"alice\",\"password\":\"%s\"}", pw);
    parse_ok(&req, buf);
    const char *s = NULL;
    size_t len = 0;
    int rc = fb_req_str(&req, "password", true, FB_PASSWORD_MIN, FB_PASSWORD_MAX, &s, &len);
    fb_req_free(&req);
    free(pw);
    free(buf);
    assert_string_equal(fb_err_code(rc), "invalid_argument");
}

static void test_req_names(void **state)
{
    fb_req_t req;
    parse_ok(&req, "{\"id\":1,\"op\":\"x\",\"members\":[\"bob\",\"carol\"],\"none\":[],"
                   "\"bad\":[\"bob\",\"Bob\"],\"num\":[\"bob\",5],\"str\":\"bob\"}");
    const char **names = NULL;
    size_t n = 99;
    assert_int_equal(fb_req_names(&req, "members", true, 10, &names, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(names[0], "bob");
    assert_string_equal(names[1], "carol");
    fb_free(names);

    assert_int_equal(fb_req_names(&req, "none", true, 10, &names, &n), 0);
    assert_int_equal(n, 0);
    fb_free(names);

    /* optional absent: no array, n = 0 */
    names = (const char **)&n;
    assert_int_equal(fb_req_names(&req, "users", false, 10, &names, &n), 0);
    assert_null(names);
    assert_int_equal(n, 0);

    assert_int_equal(fb_req_names(&req, "users", true, 10, &names, &n), FB_EBADREQ);
    assert_null(names);
    assert_non_null(strstr(req.msg, "\"users\""));
    assert_int_equal(fb_req_names(&req, "str", true, 10, &names, &n), FB_EBADREQ);
    assert_non_null(strstr(req.msg, "\"str\""));

    /* an invalid element names its index */
    req.msg[0] = 0;
    assert_int_equal(fb_req_names(&req, "bad", true, 10, &names, &n), FB_EINVAL);
    assert_null(names);
    assert_int_equal(n, 0);
    assert_non_null(strstr(req.msg, "\"bad\"[1]"));
    assert_int_equal(fb_req_names(&req, "num", true, 10, &names, &n), FB_EINVAL);
    assert_non_null(strstr(req.msg, "\"num\"[1]"));

    /* more than max */
    req.msg[0] = 0;
    assert_int_equal(fb_req_names(&req, "members", true, 1, &names, &n), FB_ETOOBIG);
    assert_null(names);
    assert_non_null(strstr(req.msg, "\"members\""));
    fb_req_free(&req);
}

/* ---- validators ---- */

static void test_valid_user_name(void **state)
{
    char *n32 = repeat('a', 32), *n33 = repeat('a', 33);
    const char *good[] = {"alice", "a", "0", "9lives", "a.b_c-d", "bob-", "x.", n32};
    const char *bad[] = {"",    "Alice", "aLice", ".alice",      "_a",  "-a", "a b",
                         "a/b", "a@b",   "한글",  "caf\xc3\xa9", "a\n", n33};
    for (size_t i = 0; i < FB_ARRAY_LEN(good); i++)
        if (!fb_valid_user_name(good[i])) fail_msg("'%s' rejected", good[i]);
    for (size_t i = 0; i < FB_ARRAY_LEN(bad); i++)
        if (fb_valid_user_name(bad[i])) fail_msg("'%s' accepted", bad[i]);
    free(n32);
    free(n33);
}

static void test_valid_cmid(void **state)
{
    char *c64 = repeat('Z', 64), *c65 = repeat('Z', 65);
    const char *good[] = {
        "a1b2", "A", "0", ".", "_:-", "550e8400-e29b-41d4-a716-446655440000", "dev:1.msg_2", c64};
    const char *bad[] = {"", "a b", "a/b", "a+b", "a#b", "한", "a\tb", c65};
    for (size_t i = 0; i < FB_ARRAY_LEN(good); i++)
        if (!fb_valid_cmid(good[i])) fail_msg("'%s' rejected", good[i]);
    for (size_t i = 0; i < FB_ARRAY_LEN(bad); i++)
        if (fb_valid_cmid(bad[i])) fail_msg("'%s' accepted", bad[i]);
    free(c64);
    free(c65);
}

static void test_valid_label(void **state)
{
    const char *good[] = {"",
                          "Club",
                          "우리 가족 🏠",
                          "café",
                          "a\xc2\xa0"
                          "b" /* NBSP */,
                          "tab-free ~!@#$%^&*()"};
    const char *bad[] = {
        "a\nb",     "\t",       "\x01",        "a\x1f", "DEL\x7f", "\x7f", "C1 \xc2\x85 NEL",
        "\xc2\x80", "\xc2\x9f", "x\xc2\x9b[2J"};
    for (size_t i = 0; i < FB_ARRAY_LEN(good); i++)
        if (!fb_valid_label(good[i], FB_ROOM_NAME_MAX)) fail_msg("'%s' rejected", good[i]);
    for (size_t i = 0; i < FB_ARRAY_LEN(bad); i++)
        if (fb_valid_label(bad[i], FB_ROOM_NAME_MAX)) fail_msg("case %zu accepted", i);

    /* the limit is in bytes: 33 Hangul syllables are 99 bytes, 34 are 102 */
    char ko[128] = "";
    for (int i = 0; i < 33; i++)
        strcat(ko, "가");
    assert_int_equal(strlen(ko), 99);
    assert_true(fb_valid_label(ko, FB_ROOM_NAME_MAX));
    strcat(ko, "가");
    assert_false(fb_valid_label(ko, FB_ROOM_NAME_MAX));
    char *l100 = repeat('r', 100), *l101 = repeat('r', 101);
    assert_true(fb_valid_label(l100, FB_ROOM_NAME_MAX));
    assert_false(fb_valid_label(l101, FB_ROOM_NAME_MAX));
    assert_false(fb_valid_label("abcd", 3));
    free(l100);
    free(l101);
}

/* ---- encoders ---- */

/* The error table of docs/protocol.md: code and retryable flag. */
static const struct {
    const char *code;
    bool retryable;
} doc_errors[] = {
    {"bad_request", false},         {"unknown_op", false},      {"invalid_argument", false},
    {"too_large", false},           {"invalid_utf8", false},    {"unsupported_version", false},
    {"bad_state", false},           {"unauthenticated", false}, {"bad_token", false},
    {"token_expired", false},       {"bad_credentials", false}, {"name_taken", false},
    {"registration_closed", false}, {"not_found", false},       {"not_member", false},
    {"forbidden", false},           {"room_full", false},       {"unavailable", true},
    {"overloaded", true},           {"internal", true},
};

static void test_proto_error(void **state)
{
    json_t *id = json_integer(7);
    json_t *e = fb_proto_error(id, FB_ENOTMEMBER, NULL);
    assert_keys(e, "id", "ok", "error", NULL);
    assert_json_int(e, "id", 7);
    assert_true(json_is_false(json_object_get(e, "ok")));
    json_t *err = json_object_get(e, "error");
    assert_keys(err, "code", "message", "retryable", NULL);
    assert_json_str(err, "code", "not_member");
    assert_json_str(err, "message", "you are not a member of this room");
    assert_true(json_is_false(json_object_get(err, "retryable")));
    json_decref(e);

    /* detail replaces the table's message; an empty detail does not */
    e = fb_proto_error(id, FB_EINVAL, "\"room\" must be between 1 and 9");
    err = json_object_get(e, "error");
    assert_json_str(err, "code", "invalid_argument");
    assert_json_str(err, "message", "\"room\" must be between 1 and 9");
    json_decref(e);
    e = fb_proto_error(id, FB_EUNAVAIL, "");
    err = json_object_get(e, "error");
    assert_json_str(err, "code", "unavailable");
    assert_json_str(err, "message", "storage unavailable, retry");
    assert_true(json_is_true(json_object_get(err, "retryable")));
    json_decref(e);
    json_decref(id);

    /* no usable id: "id": null */
    e = fb_proto_error(NULL, FB_EBADREQ, NULL);
    assert_true(json_is_null(json_object_get(e, "id")));
    json_decref(e);

    /* every error code of the table, against the documented code list */
    json_t *sid = json_string("req-1");
    for (int code = -1; code >= FB_EIO; code--) {
        e = fb_proto_error(sid, code, NULL);
        assert_json_str(e, "id", "req-1");
        err = json_object_get(e, "error");
        assert_json_str(err, "code", fb_err_code(code));
        assert_json_str(err, "message", fb_err_message(code));
        assert_true(json_is_boolean(json_object_get(err, "retryable")));
        bool retry = json_is_true(json_object_get(err, "retryable"));
        assert_int_equal(retry, fb_err_retryable(code));
        bool documented = false;
        for (size_t i = 0; i < FB_ARRAY_LEN(doc_errors); i++) {
            if (strcmp(doc_errors[i].code, fb_err_code(code)) != 0) continue;
            documented = true;
            if (doc_errors[i].retryable != retry)
                fail_msg("%s: retryable %d, documented %d", doc_errors[i].code, retry,
                         doc_errors[i].retryable);
        }
        if (!documented) fail_msg("error %d has undocumented code %s", code, fb_err_code(code));
        json_decref(e);
    }
    json_decref(sid);

    json_t *ok = fb_proto_ok(NULL);
    assert_keys(ok, "id", "ok", NULL);
    assert_true(json_is_null(json_object_get(ok, "id")));
    assert_true(json_is_true(json_object_get(ok, "ok")));
    json_decref(ok);
}

static fb_event_t mk_event(int kind)
{
    fb_event_t ev = {.room_id = 12,
                     .seq = 41,
                     .ts_ms = 1764060000000,
                     .kind = kind,
                     .actor_id = 5,
                     .actor_name = "alice"};
    return ev;
}

static void test_proto_event(void **state)
{
    fb_event_t ev = mk_event(FB_EV_TEXT);
    ev.actor_device = 9;
    ev.cmid = "a1b2";
    ev.text = "hello 세상";
    json_t *o = fb_proto_event(&ev, 2);
    assert_keys(o, "room", "seq", "ts", "type", "from", "device", "cmid", "text", "unread", NULL);
    assert_json_int(o, "room", 12);
    assert_json_int(o, "seq", 41);
    assert_json_int(o, "ts", 1764060000000);
    assert_json_str(o, "type", "text");
    assert_json_user(o, "from", 5, "alice");
    assert_json_int(o, "device", 9);
    assert_json_str(o, "cmid", "a1b2");
    assert_json_str(o, "text", "hello 세상");
    assert_json_int(o, "unread", 2);
    json_decref(o);
    /* unread 0 is present, negative is omitted */
    o = fb_proto_event(&ev, 0);
    assert_json_int(o, "unread", 0);
    json_decref(o);
    o = fb_proto_event(&ev, -1);
    assert_keys(o, "room", "seq", "ts", "type", "from", "device", "cmid", "text", NULL);
    json_decref(o);

    ev = mk_event(FB_EV_CREATE);
    ev.text = "Club";
    o = fb_proto_event(&ev, 3); /* unread is for text events only */
    assert_keys(o, "room", "seq", "ts", "type", "from", "name", NULL);
    assert_json_str(o, "type", "create");
    assert_json_str(o, "name", "Club");
    json_decref(o);

    ev = mk_event(FB_EV_JOIN);
    ev.target_id = 6;
    ev.target_name = "bob";
    o = fb_proto_event(&ev, -1);
    assert_keys(o, "room", "seq", "ts", "type", "from", "target", NULL);
    assert_json_str(o, "type", "join");
    assert_json_user(o, "from", 5, "alice");
    assert_json_user(o, "target", 6, "bob");
    json_decref(o);

    ev = mk_event(FB_EV_LEAVE);
    o = fb_proto_event(&ev, -1);
    assert_keys(o, "room", "seq", "ts", "type", "from", NULL);
    assert_json_str(o, "type", "leave");
    assert_json_user(o, "from", 5, "alice");
    json_decref(o);

    ev = mk_event(FB_EV_KICK);
    ev.target_id = 7;
    ev.target_name = "carol";
    o = fb_proto_event(&ev, -1);
    assert_keys(o, "room", "seq", "ts", "type", "from", "target", NULL);
    assert_json_str(o, "type", "kick");
    assert_json_user(o, "target", 7, "carol");
    json_decref(o);

    ev = mk_event(FB_EV_RENAME);
    ev.text = "새 이름";
    o = fb_proto_event(&ev, -1);
    assert_keys(o, "room", "seq", "ts", "type", "from", "name", NULL);
    assert_json_str(o, "type", "rename");
    assert_json_str(o, "name", "새 이름");
    json_decref(o);

    /* names missing from a write-side event encode as "" rather than crash */
    ev = mk_event(FB_EV_LEAVE);
    ev.actor_name = NULL;
    o = fb_proto_event(&ev, -1);
    assert_json_user(o, "from", 5, "");
    json_decref(o);

    assert_string_equal(fb_proto_event_type(FB_EV_TEXT), "text");
    assert_string_equal(fb_proto_event_type(FB_EV_RENAME), "rename");
    assert_string_equal(fb_proto_room_kind(FB_ROOM_DIRECT), "direct");
    assert_string_equal(fb_proto_room_kind(FB_ROOM_GROUP), "group");
}

static void test_proto_member(void **state)
{
    fb_member_t m = {.room_id = 12,
                     .user_id = 5,
                     .user_name = "alice",
                     .role = FB_ROLE_OWNER,
                     .joined_seq = 1,
                     .read_seq = 40};
    json_t *o = fb_proto_member(&m);
    assert_keys(o, "id", "name", "role", "joined_seq", "read_seq", NULL);
    assert_json_int(o, "id", 5);
    assert_json_str(o, "name", "alice");
    assert_json_str(o, "role", "owner");
    assert_json_int(o, "joined_seq", 1);
    assert_json_int(o, "read_seq", 40);
    json_decref(o);
    m.role = FB_ROLE_MEMBER;
    o = fb_proto_member(&m);
    assert_json_str(o, "role", "member");
    json_decref(o);
}

static void test_proto_room_summary(void **state)
{
    fb_room_summary_t rs = {0};
    rs.room = (fb_room_t){.id = 12,
                          .kind = FB_ROOM_GROUP,
                          .name = "Club",
                          .owner_id = 5,
                          .last_seq = 41,
                          .created_ms = 1};
    rs.me = (fb_member_t){.room_id = 12, .user_id = 6, .user_name = "bob", .read_seq = 40};
    rs.unread = 1;
    rs.member_count = 3;
    json_t *o = fb_proto_room_summary(&rs, NULL);
    assert_keys(o, "room", "kind", "name", "owner", "last_seq", "member_count", "read_seq",
                "unread", NULL);
    assert_json_int(o, "room", 12);
    assert_json_str(o, "kind", "group");
    assert_json_str(o, "name", "Club");
    assert_json_int(o, "owner", 5);
    assert_json_int(o, "last_seq", 41);
    assert_json_int(o, "member_count", 3);
    assert_json_int(o, "read_seq", 40);
    assert_json_int(o, "unread", 1);
    json_decref(o);

    /* a direct room with a last message */
    rs.room.kind = FB_ROOM_DIRECT;
    rs.room.name = NULL;
    rs.room.owner_id = 0;
    rs.member_count = 2;
    rs.has_last = true;
    rs.last = mk_event(FB_EV_TEXT);
    rs.last.actor_device = 9;
    rs.last.cmid = "c1";
    rs.last.text = "hi";
    fb_member_t peer = {.room_id = 12, .user_id = 5, .user_name = "alice"};
    o = fb_proto_room_summary(&rs, &peer);
    assert_keys(o, "room", "kind", "name", "owner", "last_seq", "member_count", "read_seq",
                "unread", "peer", "last", NULL);
    assert_json_str(o, "kind", "direct");
    assert_json_str(o, "name", "");
    assert_json_int(o, "owner", 0);
    assert_json_user(o, "peer", 5, "alice");
    json_t *last = json_object_get(o, "last");
    /* the summary's last event carries no unread count */
    assert_keys(last, "room", "seq", "ts", "type", "from", "device", "cmid", "text", NULL);
    assert_json_int(last, "seq", 41);
    assert_json_str(last, "text", "hi");
    json_decref(o);
}

static void test_proto_dump(void **state)
{
    json_t *o = json_pack("{s:i,s:s}", "a", 1, "b", "x");
    fb_buf_t b = {0};
    fb_buf_append(&b, "pre", 3);
    fb_proto_dump(o, &b);
    assert_int_equal(b.len, 3 + strlen("{\"a\":1,\"b\":\"x\"}"));
    assert_memory_equal(b.data, "pre{\"a\":1,\"b\":\"x\"}", b.len);
    json_decref(o);
    fb_buf_free(&b);
}

/* ---- the pushes written without jansson (push.c) ---- */

/* What the jansson path makes of a text push (server.c's fallback). */
static void text_push_oracle(const fb_event_t *ev, int64_t unread, fb_buf_t *out)
{
    json_t *o = fb_proto_event(ev, unread);
    json_object_set_new(o, "event", json_string("msg"));
    fb_proto_dump(o, out);
    json_decref(o);
}

static void read_push_oracle(int64_t room, int64_t user, const char *name, int64_t seq,
                             fb_buf_t *out)
{
    json_t *o = json_pack("{s:s,s:I,s:o,s:I}", "event", "read", "room", (json_int_t)room, "user",
                          fb_proto_user(user, name), "seq", (json_int_t)seq);
    fb_proto_dump(o, out);
    json_decref(o);
}

static bool utf8_ok(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

/* s as every string of both pushes: the same bytes as jansson's, or false
 * with the buffer's length untouched when jansson refuses s. */
static void check_push_str(const char *s)
{
    fb_event_t ev = {.room_id = 7, .seq = 123456789012LL, .ts_ms = 1700000000000LL,
                     .kind = FB_EV_TEXT, .actor_id = 42, .actor_device = 9, .cmid = "c1",
                     .text = "t", .actor_name = "n"};
    fb_buf_t got = {0}, want = {0};
    for (int field = 0; field < 3; field++) {
        fb_event_t e = ev;
        if (field == 0) e.text = (char *)s;
        if (field == 1) e.cmid = (char *)s;
        if (field == 2) e.actor_name = (char *)s;
        fb_buf_reset(&got);
        fb_buf_reset(&want);
        fb_buf_append(&got, "pre", 3);
        bool ok = fb_push_text_json(&got, &e, field == 0 ? 3 : -1);
        if (!utf8_ok(s)) {
            if (ok || got.len != 3) fail_msg("field %d: accepted a string jansson refuses", field);
            continue;
        }
        text_push_oracle(&e, field == 0 ? 3 : -1, &want);
        if (!ok || got.len != want.len + 3 || memcmp(got.data + 3, want.data, want.len) != 0)
            fail_msg("field %d: got %.*s\nwant %.*s", field, (int)got.len, got.data,
                     (int)want.len, want.data);
    }
    fb_buf_reset(&got);
    fb_buf_reset(&want);
    bool ok = fb_push_read_json(&got, 5, 6, s, 77);
    if (utf8_ok(s)) {
        read_push_oracle(5, 6, s, 77, &want);
        assert_true(ok);
        assert_int_equal(got.len, want.len);
        assert_memory_equal(got.data, want.data, got.len);
    } else {
        assert_false(ok);
        assert_int_equal(got.len, 0);
    }
    fb_buf_free(&got);
    fb_buf_free(&want);
}

/* The escapes spelled out, so that the test does not only trust jansson. */
static void test_push_escapes(void **state)
{
    fb_event_t ev = {.room_id = 1, .seq = 2, .ts_ms = 3, .kind = FB_EV_TEXT, .actor_id = -4,
                     .actor_device = 5, .cmid = "a\"b", .text = "q\\\x01\x1f\b\f\n\r\t/\x7f"
                     "\xc3\xa9\xed\x95\x9c\xf0\x9f\x98\x80", .actor_name = NULL};
    fb_buf_t b = {0};
    assert_true(fb_push_text_json(&b, &ev, 0));
    static const char want[] =
        "{\"room\":1,\"seq\":2,\"ts\":3,\"type\":\"text\",\"from\":{\"id\":-4,\"name\":\"\"},"
        "\"device\":5,\"cmid\":\"a\\\"b\",\"text\":\"q\\\\\\u0001\\u001F\\b\\f\\n\\r\\t/\x7f"
        "\xc3\xa9\xed\x95\x9c\xf0\x9f\x98\x80\",\"unread\":0,\"event\":\"msg\"}";
    assert_int_equal(b.len, sizeof want - 1);
    assert_memory_equal(b.data, want, b.len);
    fb_buf_reset(&b);
    assert_true(fb_push_read_json(&b, 8, 9, "\"bo\\b\"", INT64_MIN));
    static const char want_read[] = "{\"event\":\"read\",\"room\":8,\"user\":{\"id\":9,\"name\":"
                                    "\"\\\"bo\\\\b\\\"\"},\"seq\":-9223372036854775808}";
    assert_int_equal(b.len, sizeof want_read - 1);
    assert_memory_equal(b.data, want_read, b.len);
    fb_buf_free(&b);
}

/* Byte for byte what jansson writes, for hand-picked strings, every single
 * byte, and random byte strings heavy in UTF-8 lead and continuation bytes
 * (so that invalid sequences of every kind come up). */
static void test_push_matches_jansson(void **state)
{
    static const char *const picked[] = {
        "", "plain", "say \"hi\"", "back\\slash", "/", "\x7f", "tab\there",
        "\xc3\xa9", "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4", "\xf0\x9f\x98\x80",
        "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf",         /* U+FFFF, U+10FFFF: valid */
        "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80",     /* overlong */
        "\xf0\x80\x80\x80", "\xed\xa0\x80",         /* overlong; a surrogate */
        "\xf4\x90\x80\x80", "\xf5\x80\x80\x80",     /* above U+10FFFF */
        "\x80", "a\xc3", "\xe2\x82", "\xf0\x9f\x98", /* stray continuation; cut short */
    };
    for (size_t i = 0; i < FB_ARRAY_LEN(picked); i++) check_push_str(picked[i]);
    for (int c = 1; c < 256; c++) {
        char s[4] = {'x', (char)c, 'y', 0};
        check_push_str(s);
    }
    static const unsigned char alphabet[] = {'a', '"', '\\', '\n', 0x01, 0x1f, 0x7f, '/', 0x80,
                                             0xbf, 0xc2, 0xc3, 0xdf, 0xe0, 0xed, 0xef, 0xf0,
                                             0xf4, 0xa0, 0x9f, 0x90, 0xc0, 0xf8, 0xff};
    for (int n = 0; n < 20000; n++) {
        char s[12];
        size_t len = (size_t)(n % 11);
        for (size_t i = 0; i < len; i++) s[i] = (char)alphabet[rnd_below(sizeof alphabet)];
        s[len] = 0;
        check_push_str(s);
    }
}

/* The extremes of every integer field, and the unread count left out. */
static void test_push_integers(void **state)
{
    const int64_t vals[] = {0, 1, -1, 9, 10, 99, 100, 1234567890123LL, INT64_MAX, INT64_MIN};
    fb_buf_t got = {0}, want = {0};
    for (size_t i = 0; i < FB_ARRAY_LEN(vals); i++) {
        int64_t v = vals[i];
        fb_event_t ev = {.room_id = v, .seq = v, .ts_ms = v, .kind = FB_EV_TEXT, .actor_id = v,
                         .actor_device = v, .cmid = "c", .text = "t", .actor_name = "n"};
        for (int64_t unread = -1; unread <= 0; unread++) {
            int64_t u = unread < 0 ? -1 : (v < 0 ? 0 : v);
            fb_buf_reset(&got);
            fb_buf_reset(&want);
            assert_true(fb_push_text_json(&got, &ev, u));
            text_push_oracle(&ev, u, &want);
            assert_int_equal(got.len, want.len);
            assert_memory_equal(got.data, want.data, got.len);
        }
        fb_buf_reset(&got);
        fb_buf_reset(&want);
        assert_true(fb_push_read_json(&got, v, v, "n", v));
        read_push_oracle(v, v, "n", v, &want);
        assert_int_equal(got.len, want.len);
        assert_memory_equal(got.data, want.data, got.len);
    }
    fb_buf_free(&got);
    fb_buf_free(&want);
}

/* ---- WebSocket framing ---- */

/* One frame of payload length n; checks the RFC 6455 header and the payload. */
static void check_frame(fb_ws_enc_t *e, size_t n, const uint8_t *hdr, size_t hdr_len)
{
    char *payload = malloc(n ? n : 1);
    assert_non_null(payload);
    for (size_t i = 0; i < n; i++)
        payload[i] = (char)('a' + (i * 7 + i / 251) % 26);
    fb_buf_t out = {0};
    fb_ws_enc_text(e, &out, payload, n);
    if (out.len != hdr_len + n) fail_msg("length %zu: frame of %zu bytes", n, out.len);
    for (size_t i = 0; i < hdr_len; i++)
        if ((uint8_t)out.data[i] != hdr[i])
            fail_msg("length %zu: header byte %zu is 0x%02x, want 0x%02x", n, i,
                     (uint8_t)out.data[i], hdr[i]);
    if (n) assert_memory_equal(out.data + hdr_len, payload, n);
    fb_buf_free(&out);
    free(payload);
}

static void test_ws_frames(void **state)
{
    fb_ws_enc_t *e = fb_ws_enc_new();
    /* FIN + text opcode, then the unmasked length in its shortest encoding */
    check_frame(e, 0, (const uint8_t[]){0x81, 0x00}, 2);
    check_frame(e, 1, (const uint8_t[]){0x81, 0x01}, 2);
    check_frame(e, 125, (const uint8_t[]){0x81, 0x7d}, 2);
    check_frame(e, 126, (const uint8_t[]){0x81, 0x7e, 0x00, 0x7e}, 4);
    check_frame(e, 127, (const uint8_t[]){0x81, 0x7e, 0x00, 0x7f}, 4);
    check_frame(e, 65535, (const uint8_t[]){0x81, 0x7e, 0xff, 0xff}, 4);
    check_frame(e, 65536, (const uint8_t[]){0x81, 0x7f, 0, 0, 0, 0, 0, 0x01, 0, 0}, 10);
    check_frame(e, 1 << 20, (const uint8_t[]){0x81, 0x7f, 0, 0, 0, 0, 0, 0x10, 0, 0}, 10);
    /* the encoder is reusable after a large frame */
    check_frame(e, 5, (const uint8_t[]){0x81, 0x05}, 2);
    fb_ws_enc_free(e);
    fb_ws_enc_free(NULL);
}

/* A close frame: 0x88, payload length, the code big-endian, the reason. */
static void test_ws_close_frame(void **state)
{
    fb_ws_enc_t *e = fb_ws_enc_new();
    fb_buf_t out = {0};
    fb_ws_enc_close(e, &out, 4002, "slow consumer");
    static const unsigned char want[] = {0x88, 15, 0x0f, 0xa2, 's', 'l', 'o', 'w', ' ', 'c',
                                         'o', 'n', 's', 'u', 'm', 'e', 'r'};
    assert_int_equal(out.len, sizeof want);
    assert_memory_equal(out.data, want, sizeof want);
    fb_buf_reset(&out);
    char longer[300];
    memset(longer, 'x', sizeof longer - 1);
    longer[sizeof longer - 1] = 0;
    fb_ws_enc_close(e, &out, 1000, longer); /* cut to a control frame's 125 bytes */
    assert_int_equal(out.len, 2 + 125);
    assert_int_equal((unsigned char)out.data[1], 125);
    fb_buf_free(&out);
    fb_ws_enc_free(e);
}

static void test_ws_append(void **state)
{
    fb_ws_enc_t *e = fb_ws_enc_new();
    fb_buf_t out = {0};
    fb_buf_append(&out, "XY", 2);
    fb_ws_enc_text(e, &out, "hi", 2);
    fb_ws_enc_text(e, &out, "", 0);
    json_t *o = json_pack("{s:s}", "event", "hello");
    fb_ws_enc_json(e, &out, o);
    json_decref(o);
    static const char want[] = "XY\x81\x02hi\x81\x00\x81\x11{\"event\":\"hello\"}";
    assert_int_equal(out.len, sizeof want - 1);
    assert_memory_equal(out.data, want, out.len);
    fb_buf_free(&out);
    fb_ws_enc_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_not_object),
        cmocka_unit_test(test_parse_bad_id),
        cmocka_unit_test(test_parse_bad_op),
        cmocka_unit_test(test_parse_utf8),
        cmocka_unit_test(test_parse_bad_escapes),
        cmocka_unit_test(test_parse_duplicate_keys),
        cmocka_unit_test(test_req_int),
        cmocka_unit_test(test_req_id_field),
        cmocka_unit_test(test_req_str),
        cmocka_unit_test(test_req_str_long_password_is_invalid_argument),
        cmocka_unit_test(test_req_names),
        cmocka_unit_test(test_valid_user_name),
        cmocka_unit_test(test_valid_cmid),
        cmocka_unit_test(test_valid_label),
        cmocka_unit_test(test_proto_error),
        cmocka_unit_test(test_proto_event),
        cmocka_unit_test(test_proto_member),
        cmocka_unit_test(test_proto_room_summary),
        cmocka_unit_test(test_proto_dump),
        cmocka_unit_test(test_push_escapes),
        cmocka_unit_test(test_push_matches_jansson),
        cmocka_unit_test(test_push_integers),
        cmocka_unit_test(test_ws_frames),
        cmocka_unit_test(test_ws_close_frame),
        cmocka_unit_test(test_ws_append),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
