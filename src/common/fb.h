/* Shared foundations of every Firebreak module: the error convention, the one
 * allocator, logging, clocks and a growable byte buffer. It must never depend
 * on any other Firebreak module.
 * SPDX-License-Identifier: MIT */
#ifndef FB_H
#define FB_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define FB_VERSION "0.1.0"
#define FB_PROTOCOL_VERSION 1

/* ---- errors ------------------------------------------------------------
 * Functions return 0 or a negative FB_E* code. Every code that can reach a
 * client maps to one stable protocol code and a human message here, in one
 * table. `retryable` tells a client whether sending the same request again
 * (with the same ids) may succeed. */
#define FB_ERRORS(X)                                                                     \
    X(EINVAL, 1, "invalid_argument", "invalid argument", 0)                               \
    X(EBADREQ, 2, "bad_request", "malformed request", 0)                                  \
    X(EUNKNOWNOP, 3, "unknown_op", "unknown operation", 0)                                \
    X(ETOOBIG, 4, "too_large", "too large", 0)                                            \
    X(EUTF8, 5, "invalid_utf8", "text is not valid UTF-8", 0)                              \
    X(EUNAUTH, 6, "unauthenticated", "log in first", 0)                                   \
    X(EBADTOKEN, 7, "bad_token", "unknown or revoked token", 0)                           \
    X(EEXPIRED, 8, "token_expired", "token expired, log in again", 0)                     \
    X(EBADCRED, 9, "bad_credentials", "wrong user name or password", 0)                   \
    X(ENAMETAKEN, 10, "name_taken", "that user name is taken", 0)                         \
    X(ECLOSED, 11, "registration_closed", "registration is closed on this server", 0)    \
    X(ENOTFOUND, 12, "not_found", "no such thing", 0)                                     \
    X(ENOTMEMBER, 13, "not_member", "you are not a member of this room", 0)               \
    X(EFORBIDDEN, 14, "forbidden", "not allowed", 0)                                      \
    X(EVERSION, 15, "unsupported_version", "unsupported protocol version", 0)             \
    X(EFULL, 16, "room_full", "the room has reached its member limit", 0)                 \
    X(EUNAVAIL, 17, "unavailable", "storage unavailable, retry", 1)                       \
    X(EBUSY, 18, "overloaded", "server overloaded, retry", 1)                             \
    X(EINTERNAL, 19, "internal", "internal error", 1)                                     \
    X(ESTATE, 20, "bad_state", "operation not allowed in this state", 0)                  \
    X(ENOMEM, 21, "internal", "out of memory", 1)                                         \
    X(EIO, 22, "unavailable", "i/o error", 1)                                             \
    X(EEXIST, 23, "internal", "already stored", 0) /* store-internal: never reaches a client */

enum {
    FB_OK = 0,
#define FB_X_ENUM(name, num, code, msg, retry) FB_##name = -(num),
    FB_ERRORS(FB_X_ENUM)
#undef FB_X_ENUM
};

/* Stable protocol code ("not_member"), human message, retryable flag. */
const char *fb_err_code(int err);
const char *fb_err_message(int err);
bool fb_err_retryable(int err);
/* Inverse of fb_err_code (for the client); FB_EINTERNAL when unknown. */
int fb_err_from_code(const char *code);

/* ---- memory ------------------------------------------------------------
 * One allocator: aborts on out-of-memory, counts bytes in use (relaxed
 * atomics, cheap). No NULL test before fb_free. */
void *fb_malloc(size_t n);
void *fb_calloc(size_t n, size_t size);
void *fb_realloc(void *p, size_t n);
char *fb_strdup(const char *s);
char *fb_strndup(const char *s, size_t n);
void fb_free(void *p);
size_t fb_mem_in_use(void);
/* Route jansson's (and libuv's) allocations through fb_malloc. */
void fb_mem_install_hooks(void);

/* ---- logging -----------------------------------------------------------
 * One line per record: time, level, component, message, key=value pairs.
 * Never pass a password or a token to these. */
enum { FB_LOG_DEBUG, FB_LOG_INFO, FB_LOG_WARN, FB_LOG_ERROR, FB_LOG_OFF };
void fb_log_set_level(int level);
int fb_log_level_parse(const char *s); /* -1 when unknown */
void fb_log(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define FB_DEBUG(comp, ...) fb_log(FB_LOG_DEBUG, comp, __VA_ARGS__)
#define FB_INFO(comp, ...) fb_log(FB_LOG_INFO, comp, __VA_ARGS__)
#define FB_WARN(comp, ...) fb_log(FB_LOG_WARN, comp, __VA_ARGS__)
#define FB_ERROR(comp, ...) fb_log(FB_LOG_ERROR, comp, __VA_ARGS__)

/* ---- time --------------------------------------------------------------*/
int64_t fb_now_ms(void);      /* wall clock, ms since the epoch */
uint64_t fb_mono_ns(void);    /* monotonic */

/* ---- byte buffer -------------------------------------------------------
 * Growable; `len` bytes of data from `data`. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} fb_buf_t;

void fb_buf_reserve(fb_buf_t *b, size_t extra);
void fb_buf_append(fb_buf_t *b, const void *p, size_t n);
void fb_buf_appendf(fb_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fb_buf_consume(fb_buf_t *b, size_t n); /* drop n bytes from the front */
void fb_buf_reset(fb_buf_t *b);             /* len = 0, keeps memory */
void fb_buf_free(fb_buf_t *b);

/* ---- text --------------------------------------------------------------*/
void fb_hex_encode(const uint8_t *in, size_t n, char *out /* 2n+1 */);
/* Length of the valid UTF-8 sequence at s, or 0 when it is not one. Valid as
 * jansson's utf8_check_full judges it (no overlong form, no surrogate,
 * nothing above U+10FFFF), so that a fast path that checks with this never
 * accepts what jansson refuses. Reads at most up to the first byte that is
 * not a continuation byte: a NUL after the text stops it. */
size_t fb_utf8_seq(const char *s);

#define FB_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define FB_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FB_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
