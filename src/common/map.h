/* An open-addressing hash map from int64 keys (> 0) to pointers, for the
 * indexes kept on hot paths (user -> connections, room -> members). Not
 * thread-safe: each map belongs to one thread.
 * SPDX-License-Identifier: MIT */
#ifndef FB_MAP_H
#define FB_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t key; /* 0 empty, -1 deleted */
    void *val;
} fb_map_slot_t;

typedef struct {
    fb_map_slot_t *slots;
    size_t cap; /* power of two */
    size_t used; /* live + deleted */
    size_t live;
} fb_map_t;

void fb_map_init(fb_map_t *m);
void fb_map_free(fb_map_t *m);
void *fb_map_get(const fb_map_t *m, int64_t key);
void fb_map_put(fb_map_t *m, int64_t key, void *val); /* replaces */
void *fb_map_del(fb_map_t *m, int64_t key);           /* returns the old value */
/* Iteration: for (size_t i = 0; i < m->cap; i++) if (m->slots[i].key > 0) ... */

#endif
