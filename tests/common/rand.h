/* A small deterministic PRNG for tests (xorshift64*), so that a failure
 * replays. Each test file that includes this has a state of its own, seeded
 * with FB_TEST_SEED (define it before the include for another sequence).
 * SPDX-License-Identifier: MIT */
#ifndef FB_TEST_RAND_H
#define FB_TEST_RAND_H

#include <stddef.h>
#include <stdint.h>

#ifndef FB_TEST_SEED
#define FB_TEST_SEED 0x9e3779b97f4a7c15ULL
#endif

static uint64_t rng_state = FB_TEST_SEED;

static inline uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

static inline size_t rnd_below(size_t n)
{
    return (size_t)(rnd() % n);
}

#endif
