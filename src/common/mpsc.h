/* A lock-free intrusive multi-producer single-consumer queue (D. Vyukov's
 * design) that carries work between threads without a lock on a message's
 * path. Producers never block; only the one consumer may pop. A node must not
 * be pushed twice before it was popped.
 * SPDX-License-Identifier: MIT */
#ifndef FB_MPSC_H
#define FB_MPSC_H

#include <stdatomic.h>
#include <stddef.h>

typedef struct fb_mpsc_node {
    _Atomic(struct fb_mpsc_node *) next;
} fb_mpsc_node_t;

typedef struct {
    _Atomic(fb_mpsc_node_t *) head; /* producers swap here */
    fb_mpsc_node_t *tail;           /* consumer only */
    fb_mpsc_node_t stub;
} fb_mpsc_t;

static inline void fb_mpsc_init(fb_mpsc_t *q)
{
    atomic_store_explicit(&q->stub.next, NULL, memory_order_relaxed);
    atomic_store_explicit(&q->head, &q->stub, memory_order_relaxed);
    q->tail = &q->stub;
}

static inline void fb_mpsc_push(fb_mpsc_t *q, fb_mpsc_node_t *n)
{
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    fb_mpsc_node_t *prev = atomic_exchange_explicit(&q->head, n, memory_order_acq_rel);
    atomic_store_explicit(&prev->next, n, memory_order_release);
}

/* Returns NULL when empty, or when a producer is between its two steps; the
 * producer always signals after pushing, so the consumer runs again. */
static inline fb_mpsc_node_t *fb_mpsc_pop(fb_mpsc_t *q)
{
    fb_mpsc_node_t *tail = q->tail;
    fb_mpsc_node_t *next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (tail == &q->stub) {
        if (!next) return NULL;
        q->tail = next;
        tail = next;
        next = atomic_load_explicit(&next->next, memory_order_acquire);
    }
    if (next) {
        q->tail = next;
        return tail;
    }
    fb_mpsc_node_t *head = atomic_load_explicit(&q->head, memory_order_acquire);
    if (tail != head) return NULL;
    fb_mpsc_push(q, &q->stub);
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next) {
        q->tail = next;
        return tail;
    }
    return NULL;
}

#define FB_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#endif
