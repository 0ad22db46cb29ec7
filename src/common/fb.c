/* The error table, the counting allocator, logging, clocks, byte buffers and
 * hex encoding. Nothing here may block for long or touch the network.
 * SPDX-License-Identifier: MIT */
#include "fb.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

/* ---- errors ---- */

typedef struct {
    int err;
    const char *code;
    const char *msg;
    bool retry;
} err_row_t;

static const err_row_t err_table[] = {
#define FB_X_ROW(name, num, code, msg, retry) {FB_##name, code, msg, retry},
    FB_ERRORS(FB_X_ROW)
#undef FB_X_ROW
};

static const err_row_t *err_find(int err)
{
    for (size_t i = 0; i < FB_ARRAY_LEN(err_table); i++)
        if (err_table[i].err == err) return &err_table[i];
    return &err_table[-FB_EINTERNAL - 1];
}

const char *fb_err_code(int err)
{
    return err_find(err)->code;
}

const char *fb_err_message(int err)
{
    return err_find(err)->msg;
}

bool fb_err_retryable(int err)
{
    return err_find(err)->retry;
}

int fb_err_from_code(const char *code)
{
    for (size_t i = 0; i < FB_ARRAY_LEN(err_table); i++)
        if (strcmp(err_table[i].code, code) == 0) return err_table[i].err;
    return FB_EINTERNAL;
}

/* ---- memory ----
 * Each block carries a 16-byte header holding its size, so that fb_free can
 * keep the in-use count exact without malloc_usable_size. */

#define HDR 16

/* The count is kept in per-thread slots, summed when read: one counter
 * shared by the io loops and the writer cost them a cache-line transfer at
 * every allocation (fb_malloc and fb_free were 19% of an io loop's samples
 * in bench ingest). A thread takes a slot at its first allocation; threads
 * beyond SLOTS share (still exact: the adds are atomic). A slot may go
 * negative when a block is freed by another thread than its allocator's;
 * the sum is exact. */
#define SLOTS 32
static struct {
    _Atomic int64_t n;
    char pad[64 - sizeof(int64_t)];
} mem_slots[SLOTS];
static atomic_uint next_slot;
static _Thread_local int my_slot = -1;

static inline void mem_add(int64_t d)
{
    if (my_slot < 0) my_slot = (int)(atomic_fetch_add(&next_slot, 1) % SLOTS);
    atomic_fetch_add_explicit(&mem_slots[my_slot].n, d, memory_order_relaxed);
}

static void oom(size_t n)
{
    fprintf(stderr, "firebreak: out of memory allocating %zu bytes\n", n);
    abort();
}

void *fb_malloc(size_t n)
{
    char *p = malloc(n + HDR);
    if (!p) oom(n);
    *(size_t *)p = n;
    mem_add((int64_t)n);
    return p + HDR;
}

void *fb_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) oom(SIZE_MAX);
    void *p = fb_malloc(n * size);
    memset(p, 0, n * size);
    return p;
}

void *fb_realloc(void *p, size_t n)
{
    if (!p) return fb_malloc(n);
    char *base = (char *)p - HDR;
    size_t old = *(size_t *)base;
    char *q = realloc(base, n + HDR);
    if (!q) oom(n);
    *(size_t *)q = n;
    mem_add((int64_t)n - (int64_t)old);
    return q + HDR;
}

void fb_free(void *p)
{
    if (!p) return;
    char *base = (char *)p - HDR;
    mem_add(-(int64_t)(*(size_t *)base));
    free(base);
}

char *fb_strndup(const char *s, size_t n)
{
    char *d = fb_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *fb_strdup(const char *s)
{
    return fb_strndup(s, strlen(s));
}

size_t fb_mem_in_use(void)
{
    int64_t sum = 0;
    for (int i = 0; i < SLOTS; i++) sum += atomic_load_explicit(&mem_slots[i].n, memory_order_relaxed);
    return sum > 0 ? (size_t)sum : 0;
}

static void *uv_calloc_hook(size_t n, size_t size)
{
    return fb_calloc(n, size);
}

void fb_mem_install_hooks(void)
{
    json_set_alloc_funcs(fb_malloc, fb_free);
    uv_replace_allocator(fb_malloc, fb_realloc, uv_calloc_hook, fb_free);
}

/* ---- logging ---- */

static int log_level = FB_LOG_INFO;
static const char *level_names[] = {"debug", "info", "warn", "error", "off"};

void fb_log_set_level(int level)
{
    log_level = level;
}

int fb_log_level_parse(const char *s)
{
    for (int i = 0; i <= FB_LOG_OFF; i++)
        if (strcmp(s, level_names[i]) == 0) return i;
    return -1;
}

void fb_log(int level, const char *component, const char *fmt, ...)
{
    if (level < log_level) return;
    char line[2048];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %-7s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_names[level], component);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : FB_MIN((size_t)m, sizeof line - (size_t)n - 2));
    line[len++] = '\n';
    fwrite(line, 1, len, stderr); /* one write per record: lines never interleave */
}

/* ---- time ---- */

int64_t fb_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t fb_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- buffers ---- */

void fb_buf_reserve(fb_buf_t *b, size_t extra)
{
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    b->data = fb_realloc(b->data, cap);
    b->cap = cap;
}

void fb_buf_append(fb_buf_t *b, const void *p, size_t n)
{
    if (!n) return;
    fb_buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void fb_buf_appendf(fb_buf_t *b, const char *fmt, ...)
{
    char small[256];
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < sizeof small) {
        fb_buf_append(b, small, (size_t)n);
    } else if (n > 0) {
        fb_buf_reserve(b, (size_t)n + 1);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

void fb_buf_consume(fb_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void fb_buf_reset(fb_buf_t *b)
{
    b->len = 0;
}

void fb_buf_free(fb_buf_t *b)
{
    fb_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- text ---- */

void fb_hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = 0;
}

size_t fb_utf8_seq(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0; /* also stops at a terminating NUL */
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000)) return 0;
    return n;
}
