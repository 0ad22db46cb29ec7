/* The JSON text writers shared by the jansson-free encoders of src/proto
 * (push.c, fastpath.c). Each writes at p, where the caller made room, and
 * returns the end; what they write is what jansson's compact dump writes.
 * Only files of src/proto include this.
 * SPDX-License-Identifier: MIT */
#ifndef FB_PROTO_TEXT_H
#define FB_PROTO_TEXT_H

#include <stdint.h>
#include <string.h>

/* v in decimal (room for 20 bytes). */
static inline char *fb_text_put_int(char *p, int64_t v)
{
    char tmp[20];
    size_t n = 0;
    /* through the unsigned magnitude, so that INT64_MIN does not overflow */
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *p++ = '-';
    while (n)
        *p++ = tmp[--n];
    return p;
}

static inline char *fb_text_put_lit(char *p, const char *lit)
{
    size_t n = strlen(lit);
    memcpy(p, lit, n);
    return p + n;
}

#endif
