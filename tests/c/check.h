/* The plain C test drivers' one assertion: counts, and says where it failed.
 * Each driver prints "N passed, N failed" at its end. */
#ifndef MEMTAMER_TESTS_CHECK_H
#define MEMTAMER_TESTS_CHECK_H

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

#endif
