/* The plain C test drivers' one assertion: counts, and says where it failed.
 * Each driver prints "N passed, N failed" at its end.  And their one source
 * of test data, deterministic so that failures reproduce. */
#ifndef MEMTAMER_TESTS_CHECK_H
#define MEMTAMER_TESTS_CHECK_H

#include <stdint.h>
#include <stdio.h>

static int passed, failed;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            passed++;                                                                              \
        }                                                                                          \
        else {                                                                                     \
            failed++;                                                                              \
            fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond);                     \
        }                                                                                          \
    } while (0)

/* xorshift64* */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static inline uint64_t
next_random(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Du;
}

#endif
