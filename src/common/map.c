/* Linear-probing hash map with tombstones; grows at 70% load (counting
 * tombstones) so that a probe always ends at an empty slot.
 * SPDX-License-Identifier: MIT */
#include "common/map.h"

#include <string.h>

#include "common/fb.h"

static size_t hash(int64_t k)
{
    uint64_t x = (uint64_t)k;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

void fb_map_init(fb_map_t *m)
{
    memset(m, 0, sizeof *m);
}

void fb_map_free(fb_map_t *m)
{
    fb_free(m->slots);
    memset(m, 0, sizeof *m);
}

static fb_map_slot_t *find(const fb_map_t *m, int64_t key)
{
    if (!m->cap) return NULL;
    for (size_t i = hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->slots[i].key == key) return &m->slots[i];
        if (m->slots[i].key == 0) return NULL;
    }
}

void *fb_map_get(const fb_map_t *m, int64_t key)
{
    fb_map_slot_t *s = find(m, key);
    return s ? s->val : NULL;
}

static void grow(fb_map_t *m)
{
    fb_map_slot_t *old = m->slots;
    size_t oldcap = m->cap;
    size_t cap = oldcap ? oldcap : 16;
    while ((m->live + 1) * 10 >= cap * 5) cap *= 2; /* rehash to <= 50% */
    m->slots = fb_calloc(cap, sizeof *m->slots);
    m->cap = cap;
    m->used = m->live = 0;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].key > 0) fb_map_put(m, old[i].key, old[i].val);
    fb_free(old);
}

void fb_map_put(fb_map_t *m, int64_t key, void *val)
{
    fb_map_slot_t *s = find(m, key);
    if (s) {
        s->val = val;
        return;
    }
    if ((m->used + 1) * 10 >= m->cap * 7) grow(m);
    for (size_t i = hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->slots[i].key <= 0) {
            if (m->slots[i].key == 0) m->used++;
            m->slots[i].key = key;
            m->slots[i].val = val;
            m->live++;
            return;
        }
    }
}

void *fb_map_del(fb_map_t *m, int64_t key)
{
    fb_map_slot_t *s = find(m, key);
    if (!s) return NULL;
    void *v = s->val;
    s->key = -1;
    s->val = NULL;
    m->live--;
    return v;
}
